/*
 * policy_sql — renders a compiled policy as SQL (see policy_sql.h).
 *
 * A rule is a postfix program; rendering rebuilds its tree on the fly (each instruction's
 * subtree start is computed once) and prints it infix. Chains of the same operator are
 * flattened (`a and b and c`, no parentheses: Kleene AND and OR are associative, as SQL's are),
 * an operand that is the other operator is parenthesized, and NOT always parenthesizes its
 * operand in SQL (PostgreSQL's NOT binds more loosely than comparisons; the parentheses say what
 * is meant). Multi-line layout: every operand after the first goes on its own line, aligned
 * with the first, so the output reads like the hand-written policies it replaces and is
 * byte-for-byte stable.
 */
#include "policy_sql.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* PostgreSQL 15's keywords that cannot be a bare column name everywhere (pg_get_keywords(),
 * catcode R, T and C): quote_ident() quotes exactly these. */
static const char *const sql_keywords[] = {
	"all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
	"authorization", "between", "bigint", "binary", "bit", "boolean", "both", "case", "cast",
	"char", "character", "check", "coalesce", "collate", "collation", "column", "concurrently",
	"constraint", "create", "cross", "current_catalog", "current_date", "current_role",
	"current_schema", "current_time", "current_timestamp", "current_user", "dec", "decimal",
	"default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "exists",
	"extract", "false", "fetch", "float", "for", "foreign", "freeze", "from", "full", "grant",
	"greatest", "group", "grouping", "having", "ilike", "in", "initially", "inner", "inout", "int",
	"integer", "intersect", "interval", "into", "is", "isnull", "join", "lateral", "leading",
	"least", "left", "like", "limit", "localtime", "localtimestamp", "national", "natural",
	"nchar", "none", "normalize", "not", "notnull", "null", "nullif", "numeric", "offset", "on",
	"only", "or", "order", "out", "outer", "overlaps", "overlay", "placing", "position",
	"precision", "primary", "real", "references", "returning", "right", "row", "select",
	"session_user", "setof", "similar", "smallint", "some", "substring", "symmetric", "table",
	"tablesample", "then", "time", "timestamp", "to", "trailing", "treat", "trim", "true", "union",
	"unique", "user", "using", "values", "varchar", "variadic", "verbose", "when", "where",
	"window", "with", "xmlattributes", "xmlconcat", "xmlelement", "xmlexists", "xmlforest",
	"xmlnamespaces", "xmlparse", "xmlpi", "xmlroot", "xmlserialize", "xmltable",
};

static bool needs_quotes(const char *s)
{
	if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return true;
	for (const char *c = s; *c != '\0'; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '$'))
			return true;
	for (size_t i = 0; i < sizeof(sql_keywords) / sizeof(sql_keywords[0]); i++)
		if (strcmp(s, sql_keywords[i]) == 0)
			return true;
	return false;
}

int policy_sql_ident(buf *out, const char *ident)
{
	if (!needs_quotes(ident))
		return buf_puts(out, ident);
	int rc = buf_putc(out, '"');
	for (const char *c = ident; rc == 0 && *c != '\0'; c++)
		rc = *c == '"' ? buf_puts(out, "\"\"") : buf_putc(out, *c);
	return rc == 0 ? buf_putc(out, '"') : rc;
}

/* ---- rendering rules -------------------------------------------------------------------- */

typedef struct gen {
	buf *out;
	int rc;
	const policy *p;
	const policy_table *t;
	const policy_insn *prog;
	size_t n;
	size_t start[POLICY_PROGRAM_MAX]; /* first instruction of each instruction's subtree */
	bool sql;                         /* SQL, or the policy language on one line */
} gen;

static void put(gen *g, const char *s)
{
	if (g->rc == 0)
		g->rc = buf_puts(g->out, s);
}

__attribute__((format(printf, 2, 3))) static void putf(gen *g, const char *fmt, ...)
{
	if (g->rc != 0)
		return;
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		g->rc = -EINVAL; /* every caller formats short, bounded pieces */
		return;
	}
	g->rc = buf_append(g->out, tmp, (size_t)n);
}

static void ident(gen *g, const char *s)
{
	if (g->rc == 0)
		g->rc = policy_sql_ident(g->out, s);
}

/* Column of the end of out (bytes since the last newline; the output is ASCII). */
static size_t col_now(const buf *b)
{
	size_t i = b->len;
	while (i > 0 && b->data[i - 1] != '\n')
		i--;
	return b->len - i;
}

static void spaces(gen *g, size_t n)
{
	for (size_t i = 0; i < n && g->rc == 0; i++)
		g->rc = buf_putc(g->out, ' ');
}

static int prog_init(gen *g, const policy_table *t, const policy_insn *prog, size_t n)
{
	if (policy_program_check(prog, n, policy_table_ncols(t), policy_rank_count(g->p)) < 0)
		return -EINVAL;
	g->t = t;
	g->prog = prog;
	g->n = n;
	for (size_t i = 0; i < n; i++) {
		switch (prog[i].op) {
		case POLICY_OP_NOT:
			g->start[i] = g->start[i - 1];
			break;
		case POLICY_OP_AND:
		case POLICY_OP_OR:
			g->start[i] = g->start[g->start[i - 1] - 1];
			break;
		default:
			g->start[i] = i;
		}
	}
	return 0;
}

static size_t left_of(const gen *g, size_t node) { return g->start[node - 1] - 1; }
static size_t right_of(size_t node) { return node - 1; }

static bool is_chain(uint16_t op) { return op == POLICY_OP_AND || op == POLICY_OP_OR; }

static void org_column(gen *g)
{
	ident(g, policy_table_column(g->t, policy_table_org(g->t)));
}

static void atom(gen *g, policy_insn in)
{
	switch (in.op) {
	case POLICY_OP_TRUE:
		put(g, "true");
		break;
	case POLICY_OP_FALSE:
		put(g, "false");
		break;
	case POLICY_OP_RANK_GE:
		if (!g->sql) {
			put(g, policy_rank_name(g->p, in.arg));
			break;
		}
		put(g, "walcast.user_rank(");
		org_column(g);
		putf(g, ") >= walcast.role_rank('%s')", policy_rank_name(g->p, in.arg));
		break;
	case POLICY_OP_PRIVACY:
		if (!g->sql) {
			putf(g, "privacy(%s)", policy_table_column(g->t, in.arg));
			break;
		}
		put(g, "walcast.contact_min_rank(");
		ident(g, policy_table_column(g->t, in.arg));
		put(g, ") <= walcast.user_rank(");
		org_column(g);
		put(g, ")");
		break;
	case POLICY_OP_EQ_UID:
		if (!g->sql) {
			putf(g, "%s = uid", policy_table_column(g->t, in.arg));
			break;
		}
		ident(g, policy_table_column(g->t, in.arg));
		put(g, " = (select auth.uid())");
		break;
	default:
		g->rc = -EINVAL;
	}
}

static void node(gen *g, size_t i);

/* The separator before a chain operand other than the first. */
static void sep(gen *g, size_t col, uint16_t op)
{
	const char *word = op == POLICY_OP_AND ? "and " : "or ";
	if (g->sql) {
		put(g, "\n");
		spaces(g, col);
		put(g, word);
	} else {
		put(g, " ");
		put(g, word);
	}
}

/* Renders the operands of the op-chain rooted at i (flattening nested ops of the same kind),
 * each after a separator unless it is the first; skip_true drops constant TRUE operands. */
static void chain(gen *g, size_t i, uint16_t op, size_t col, bool *first, bool skip_true)
{
	uint16_t o = g->prog[i].op;
	if (o == op) {
		chain(g, left_of(g, i), op, col, first, skip_true);
		chain(g, right_of(i), op, col, first, skip_true);
		return;
	}
	if (skip_true && o == POLICY_OP_TRUE)
		return;
	if (!*first)
		sep(g, col, op);
	*first = false;
	if (is_chain(o)) {
		put(g, "(");
		node(g, i);
		put(g, ")");
	} else {
		node(g, i);
	}
}

static void node(gen *g, size_t i)
{
	uint16_t op = g->prog[i].op;
	if (op == POLICY_OP_NOT) {
		size_t child = right_of(i);
		bool parens = g->sql || is_chain(g->prog[child].op);
		put(g, parens ? "not (" : "not ");
		node(g, child);
		if (parens)
			put(g, ")");
	} else if (is_chain(op)) {
		size_t col = col_now(g->out);
		bool first = true;
		chain(g, i, op, col, &first, false);
	} else {
		atom(g, g->prog[i]);
	}
}

static int render(buf *out, const policy *p, const policy_table *t, const policy_insn *prog,
                  size_t n, bool sql)
{
	gen g = {.out = out, .p = p, .sql = sql};
	int rc = prog_init(&g, t, prog, n);
	if (rc < 0)
		return rc;
	node(&g, n - 1);
	return g.rc;
}

int policy_sql_rule(buf *out, const policy *p, const policy_table *t, const policy_insn *prog,
                    size_t n)
{
	return render(out, p, t, prog, n, true);
}

int policy_sql_rule_source(buf *out, const policy *p, const policy_table *t,
                           const policy_insn *prog, size_t n)
{
	return render(out, p, t, prog, n, false);
}

/* Whether the top-level conjunction of the rule rooted at i has a rank atom, which implies
 * membership of the row's org (every rank is >= 1). */
static bool implies_member(const gen *g, size_t i)
{
	uint16_t op = g->prog[i].op;
	if (op == POLICY_OP_AND)
		return implies_member(g, left_of(g, i)) || implies_member(g, right_of(i));
	return op == POLICY_OP_RANK_GE;
}

/* The USING expression of a read policy: the read rule, with the implicit "member of the row's
 * org" term in front unless a top-level rank term already implies it. */
static void read_using(gen *g, const policy_table *t)
{
	size_t n;
	const policy_insn *prog = policy_table_read(t, &n);
	if (g->rc != 0 || (g->rc = prog_init(g, t, prog, n)) < 0)
		return;
	size_t col = col_now(g->out);
	bool first = true;
	bool implied = implies_member(g, n - 1);
	if (!implied) {
		put(g, "walcast.user_rank(");
		org_column(g);
		put(g, ") > 0");
		first = false;
	}
	chain(g, n - 1, POLICY_OP_AND, col, &first, !implied);
}

/* The CASE condition of a masked column: bypass roles, or the column's rule. */
static void view_cond(gen *g, const policy_table *t, const policy_column_rule *r)
{
	if (g->rc != 0 || (g->rc = prog_init(g, t, r->cond, r->cond_len)) < 0)
		return;
	size_t col = col_now(g->out);
	bool first = false;
	put(g, "walcast.is_bypass()");
	chain(g, r->cond_len - 1, POLICY_OP_OR, col, &first, false);
}

static void rule_source(gen *g, const policy_table *t, const policy_insn *prog, size_t n)
{
	if (g->rc == 0)
		g->rc = policy_sql_rule_source(g->out, g->p, t, prog, n);
}

/* ---- the migration ------------------------------------------------------------------------- */

static void qualified(gen *g, const char *schema, const char *name)
{
	ident(g, schema);
	put(g, ".");
	ident(g, name);
}

static void table_name(gen *g, const policy_table *t)
{
	qualified(g, policy_table_schema(t), policy_table_name(t));
}

/* "--   " + items separated by ", ", wrapped before column 98, continuation lines indented. */
static void comment_list(gen *g, const char *lead, const char *const *items, size_t n,
                         const char *tail)
{
	put(g, "--   ");
	put(g, lead);
	for (size_t i = 0; i < n; i++) {
		size_t need = strlen(items[i]) + (i + 1 < n ? 1 : strlen(tail));
		if (i > 0) {
			put(g, ",");
			if (col_now(g->out) + 1 + need > 98)
				put(g, "\n--     ");
			else
				put(g, " ");
		}
		put(g, items[i]);
	}
	put(g, tail);
	put(g, "\n");
}

/* The member token roles ([roles] members, default authenticated): the SELECT policies' roles. */
static void member_roles(gen *g)
{
	for (size_t i = 0; i < policy_member_role_count(g->p); i++) {
		if (i > 0)
			put(g, ", ");
		ident(g, policy_member_role(g->p, i));
	}
}

/* The roles that may call the helpers and read the views: members, then bypass roles. */
static void api_roles(gen *g)
{
	member_roles(g);
	for (size_t i = 0; i < policy_bypass_count(g->p); i++) {
		put(g, ", ");
		ident(g, policy_bypass_role(g->p, i));
	}
}

static void header(gen *g, const char *source)
{
	const policy *p = g->p;
	putf(g, "-- GENERATED by `walcast policy sql` from %s. Do not edit by hand: change the policy\n"
	        "-- file and regenerate this migration:\n"
	        "--\n"
	        "--   walcast policy sql --policy %s > <this file>\n"
	        "--\n", source, source);
	put(g, "-- The read side of the privacy policy as PostgreSQL objects: helper functions in schema\n"
	       "-- walcast, one row-level security policy FOR SELECT TO authenticated per table, and one\n"
	       "-- masking view per table (walcast.<table>_masked: security_invoker, column masks applied).\n"
	       "-- walcast evaluates the same compiled rules per change and subscriber (src/policy/policy.c), and\n"
	       "-- its tests use these policies and views as the oracle. Write policies (INSERT, UPDATE,\n"
	       "-- DELETE) are not generated: a hand-written migration after this one holds them.\n"
	       "-- Semantics, NULLs included: docs/policies.md. Applying this file again is safe.\n"
	       "--\n");
	put(g, "-- Ranks:");
	for (int r = 1; r <= policy_rank_count(p); r++)
		putf(g, " %s %d%s", policy_rank_name(p, r), r, r < policy_rank_count(p) ? " <" : ";");
	put(g, " 0 = not a member of the org.\n");
	const policy_membership *m = policy_membership_source(p);
	putf(g, "-- A user's rank in an org comes from %s.%s (%s, %s, %s) only, never from\n"
	        "-- the token.\n", m->schema, m->table, m->org, m->user, m->role);
	const policy_privacy *pr = policy_privacy_source(p);
	if (pr != NULL)
		putf(g, "-- Privacy rules: %s.%s (%s, %s).\n", pr->schema, pr->table, pr->subject,
		     pr->min_role);
	put(g, "-- Bypass roles (every row, every value unmasked; the rows need BYPASSRLS):");
	if (policy_bypass_count(p) == 0)
		put(g, " none");
	for (size_t i = 0; i < policy_bypass_count(p); i++)
		putf(g, "%s %s", i ? "," : "", policy_bypass_role(p, i));
	put(g, ".\n--\n-- Read rules (each also requires membership of the row's org):\n");
	for (size_t i = 0; i < policy_table_count(p); i++) {
		const policy_table *t = policy_table_at(p, i);
		size_t n;
		const policy_insn *prog = policy_table_read(t, &n);
		putf(g, "--   %s.%s: ", policy_table_schema(t), policy_table_name(t));
		rule_source(g, t, prog, n);
		put(g, "\n");
	}
	put(g, "-- Column rules (for visible rows):\n");
	for (size_t i = 0; i < policy_table_count(p); i++) {
		const policy_table *t = policy_table_at(p, i);
		for (size_t c = 0; c < policy_table_ncols(t); c++) {
			const policy_column_rule *r = policy_table_rule(t, c);
			if (r->kind == POLICY_RULE_PLAIN)
				continue;
			putf(g, "--   %s.%s.%s: ", policy_table_schema(t), policy_table_name(t),
			     policy_table_column(t, c));
			if (r->kind == POLICY_RULE_ENCRYPTED) {
				put(g, "encrypted");
				if (r->context >= 0)
					putf(g, ", context %s", policy_table_column(t, (size_t)r->context));
				put(g, ": plaintext when ");
			} else {
				put(g, r->kind == POLICY_RULE_MASK_LAST4 ? "last4 unless " : "null unless ");
			}
			rule_source(g, t, r->cond, r->cond_len);
			if (r->kind == POLICY_RULE_ENCRYPTED)
				put(g, ", else null");
			put(g, "\n");
		}
	}
	/* Rollback. */
	size_t nt = policy_table_count(p);
	put(g, "--\n-- Rollback (drop the write policies of the later migration first: they call these\n"
	       "-- functions):\n");
	for (size_t i = 0; i < nt; i++)
		putf(g, "--   drop view if exists walcast.%s;\n", policy_table_view(policy_table_at(p, i)));
	for (size_t i = 0; i < nt; i++) {
		const policy_table *t = policy_table_at(p, i);
		putf(g, "--   drop policy if exists %s_select on %s.%s;\n", policy_table_name(t),
		     policy_table_schema(t), policy_table_name(t));
	}
	for (size_t i = 0; i < nt; i++) {
		const policy_table *t = policy_table_at(p, i);
		putf(g, "--   alter table %s.%s no force row level security;\n", policy_table_schema(t),
		     policy_table_name(t));
	}
	const char *fns[] = {"walcast.is_bypass()", "walcast.mask_last4(text)",
	                     "walcast.contact_min_rank(uuid)", "walcast.user_rank(uuid)",
	                     "walcast.role_rank(text)"};
	if (pr != NULL) {
		comment_list(g, "drop function if exists ", fns, 5, ";");
	} else {
		const char *fns4[] = {fns[0], fns[1], fns[3], fns[4]};
		comment_list(g, "drop function if exists ", fns4, 4, ";");
	}
	put(g, "\nbegin;\n"
	       "-- Quiet the \"already exists, skipping\" notices of a rerun; warnings and errors still show.\n"
	       "set local client_min_messages = warning;\n");
}

static void section_rule(gen *g, const char *title)
{
	size_t len = strlen(title);
	putf(g, "\n-- ---- %s ", title);
	for (size_t i = 8 + len; i < 99; i++)
		put(g, "-");
	put(g, "\n");
}

static void functions(gen *g)
{
	const policy *p = g->p;
	int n = policy_rank_count(p);
	size_t width = 0;
	for (int r = 1; r <= n; r++)
		if (strlen(policy_rank_name(p, r)) > width)
			width = strlen(policy_rank_name(p, r));
	section_rule(g, "helper functions");
	put(g, "\n-- role_rank: the [roles] ranks as numbers. IMMUTABLE so that role_rank('admin') in a policy\n"
	       "-- folds to a constant at plan time. Unknown or NULL roles rank 0.\n"
	       "create or replace function walcast.role_rank(role text) returns integer\n"
	       "  language sql immutable parallel safe\n"
	       "  set search_path = ''\n"
	       "as $$\n"
	       "  select case $1\n");
	for (int r = n; r >= 1; r--) {
		const char *name = policy_rank_name(p, r);
		putf(g, "    when '%s'", name);
		spaces(g, width - strlen(name));
		putf(g, " then %d\n", r);
	}
	put(g, "    else 0\n"
	       "  end\n"
	       "$$;\n"
	       "comment on function walcast.role_rank(text) is\n"
	       "  'Rank of an org role:");
	for (int r = n; r >= 1; r--)
		putf(g, " %s %d,", policy_rank_name(p, r), r);
	put(g, " anything else 0.';\n");

	const policy_membership *m = policy_membership_source(p);
	put(g, "\n-- user_rank: the current user's rank in an org, 0 when not a member (or no user at all).\n"
	       "-- SECURITY DEFINER so that it reads the membership table without applying that table's own\n"
	       "-- policy, which calls this function (that would recurse forever). Its owner must bypass RLS\n"
	       "-- there: the table owner does, unless RLS is FORCEd, which is why FORCE is conditional below.\n"
	       "create or replace function walcast.user_rank(org uuid) returns integer\n"
	       "  language sql stable security definer\n"
	       "  set search_path = ''\n"
	       "as $$\n"
	       "  select coalesce(max(walcast.role_rank(r.");
	ident(g, m->role);
	put(g, ")), 0)\n  from ");
	qualified(g, m->schema, m->table);
	put(g, " r\n  where r.");
	ident(g, m->org);
	put(g, " = $1\n    and r.");
	ident(g, m->user);
	put(g, " = auth.uid()\n$$;\n"
	       "comment on function walcast.user_rank(uuid) is\n");
	putf(g, "  'Rank of auth.uid() in the org (from %s.%s), 0 when not a member or no user.';\n",
	     m->schema, m->table);

	const policy_privacy *pr = policy_privacy_source(p);
	if (pr != NULL) {
		put(g, "\n-- contact_min_rank: rank of the privacy rule of a subject, 0 when it has none or the\n"
		       "-- subject is NULL. SECURITY DEFINER because only admins may read the rules directly.\n"
		       "create or replace function walcast.contact_min_rank(contact uuid) returns integer\n"
		       "  language sql stable security definer\n"
		       "  set search_path = ''\n"
		       "as $$\n"
		       "  select coalesce(max(walcast.role_rank(p.");
		ident(g, pr->min_role);
		put(g, ")), 0)\n  from ");
		qualified(g, pr->schema, pr->table);
		put(g, " p\n  where p.");
		ident(g, pr->subject);
		put(g, " = $1\n$$;\n"
		       "comment on function walcast.contact_min_rank(uuid) is\n");
		putf(g, "  'Rank of the subject''s rule (%s.%s.%s), 0 when it has none or is NULL.';\n",
		     pr->schema, pr->table, pr->min_role);
	}

	put(g, "\n-- mask_last4: every character but the last four becomes '*'; a value of four characters or\n"
	       "-- fewer, and NULL, come back unchanged. Characters, not bytes (length() on a UTF8\n"
	       "-- database counts code points): walcast's policy_mask_last4() is the same function.\n"
	       "create or replace function walcast.mask_last4(value text) returns text\n"
	       "  language sql immutable strict parallel safe\n"
	       "  set search_path = ''\n"
	       "as $$\n"
	       "  select case when length($1) <= 4 then $1\n"
	       "              else repeat('*', length($1) - 4) || right($1, 4)\n"
	       "         end\n"
	       "$$;\n"
	       "comment on function walcast.mask_last4(text) is\n"
	       "  'The value with every character but the last four replaced by *; NULL stays NULL.';\n");

	put(g, "\n-- is_bypass: whether the current role is a bypass role, which sees every row (BYPASSRLS)\n"
	       "-- and, through the masking views, every value unmasked.\n"
	       "create or replace function walcast.is_bypass() returns boolean\n"
	       "  language sql stable parallel safe\n"
	       "  set search_path = ''\n"
	       "as $$\n");
	if (policy_bypass_count(p) == 0) {
		put(g, "  select false\n");
	} else {
		put(g, "  select current_user in (");
		for (size_t i = 0; i < policy_bypass_count(p); i++)
			putf(g, "%s'%s'", i ? ", " : "", policy_bypass_role(p, i));
		put(g, ")\n");
	}
	put(g, "$$;\n"
	       "comment on function walcast.is_bypass() is\n"
	       "  'Whether current_user is a bypass role:");
	for (size_t i = 0; i < policy_bypass_count(p); i++)
		putf(g, "%s %s", i ? "," : "", policy_bypass_role(p, i));
	if (policy_bypass_count(p) == 0)
		put(g, " there are none");
	put(g, ".';\n");

	const char *sig = pr != NULL ? "walcast.role_rank(text), walcast.user_rank(uuid),\n"
	                               "  walcast.contact_min_rank(uuid), walcast.mask_last4(text), "
	                               "walcast.is_bypass()"
	                             : "walcast.role_rank(text), walcast.user_rank(uuid),\n"
	                               "  walcast.mask_last4(text), walcast.is_bypass()";
	putf(g, "\nrevoke all on function %s\n  from public, anon;\n", sig);
	putf(g, "grant execute on function %s\n  to ", sig);
	api_roles(g);
	put(g, ";\n");
}

static void policies(gen *g)
{
	const policy *p = g->p;
	section_rule(g, "read policies");
	put(g, "-- Each table: RLS on, and its read rule as the one SELECT policy of `authenticated`.\n");
	for (size_t i = 0; i < policy_table_count(p); i++) {
		const policy_table *t = policy_table_at(p, i);
		size_t n;
		const policy_insn *prog = policy_table_read(t, &n);
		putf(g, "\n-- %s.%s: read = ", policy_table_schema(t), policy_table_name(t));
		rule_source(g, t, prog, n);
		put(g, "\nalter table ");
		table_name(g, t);
		put(g, " enable row level security;\ndrop policy if exists ");
		putf(g, "%s_select", policy_table_name(t));
		put(g, " on ");
		table_name(g, t);
		put(g, ";\ncreate policy ");
		putf(g, "%s_select", policy_table_name(t));
		put(g, " on ");
		table_name(g, t);
		put(g, " for select to ");
		member_roles(g);
		put(g, "\n  using (");
		read_using(g, t);
		put(g, ");\n");
	}
}

static void views(gen *g)
{
	const policy *p = g->p;
	section_rule(g, "masking views");
	put(g, "-- walcast.<table>_masked: the rows the caller may see (security_invoker: the table's RLS\n"
	       "-- applies to the caller), every column of the policy's list, masks applied. An encrypted\n"
	       "-- column shows its ciphertext where walcast would deliver the plaintext, else NULL.\n"
	       "-- Recreated on every run (a view's columns cannot be changed in place).\n");
	for (size_t i = 0; i < policy_table_count(p); i++) {
		const policy_table *t = policy_table_at(p, i);
		put(g, "\ndrop view if exists walcast.");
		ident(g, policy_table_view(t));
		put(g, ";\ncreate view walcast.");
		ident(g, policy_table_view(t));
		put(g, " with (security_invoker = true) as\nselect ");
		for (size_t c = 0; c < policy_table_ncols(t); c++) {
			const policy_column_rule *r = policy_table_rule(t, c);
			const char *col = policy_table_column(t, c);
			if (c > 0)
				put(g, ",\n       ");
			if (r->kind == POLICY_RULE_PLAIN) {
				ident(g, col);
				continue;
			}
			put(g, "case when ");
			view_cond(g, t, r);
			put(g, "\n            then ");
			ident(g, col);
			if (r->kind == POLICY_RULE_MASK_LAST4) {
				put(g, "\n            else walcast.mask_last4(");
				ident(g, col);
				put(g, ")");
			}
			put(g, "\n       end as ");
			ident(g, col);
		}
		put(g, "\n  from ");
		table_name(g, t);
		put(g, ";\ncomment on view walcast.");
		ident(g, policy_table_view(t));
		putf(g, " is\n  'Rows of %s.%s the caller may see, with the policy''s column masks applied.';\n",
		     policy_table_schema(t), policy_table_name(t));
		put(g, "grant select on walcast.");
		ident(g, policy_table_view(t));
		put(g, " to ");
		api_roles(g);
		put(g, ";\n");
	}
}

static void force(gen *g)
{
	const policy *p = g->p;
	section_rule(g, "FORCE ROW LEVEL SECURITY");
	put(g, "-- FORCE makes the policies apply to the table owner too (a migration or backend connecting\n"
	       "-- as the owner no longer sees everything by accident). The helpers above run as their owner\n"
	       "-- (the role applying this file) and must still read the membership and privacy tables\n"
	       "-- unfiltered, which holds only if that role is a superuser or has BYPASSRLS. So: force when\n"
	       "-- it is safe, otherwise warn and leave RLS enabled but not forced.\n"
	       "do $$\n"
	       "declare\n"
	       "  t text;\n"
	       "  safe boolean;\n"
	       "begin\n"
	       "  select r.rolsuper or r.rolbypassrls into safe\n"
	       "  from pg_catalog.pg_roles r where r.rolname = current_user;\n"
	       "  if not safe then\n"
	       "    raise warning 'walcast: % neither is superuser nor has BYPASSRLS; row-level security is '\n"
	       "      'enabled but not forced (forcing it would make the policy helpers recurse)', current_user;\n"
	       "    return;\n"
	       "  end if;\n"
	       "  foreach t in array array[");
	size_t col = col_now(g->out);
	for (size_t i = 0; i < policy_table_count(p); i++) {
		const policy_table *t = policy_table_at(p, i);
		buf one;
		buf_init(&one);
		gen tmp = {.out = &one};
		put(&tmp, "'");
		table_name(&tmp, t);
		put(&tmp, "'");
		if (i + 1 < policy_table_count(p))
			put(&tmp, ",");
		if (tmp.rc != 0) {
			g->rc = tmp.rc;
		} else {
			if (i > 0) {
				if (col_now(g->out) + 1 + one.len > 96) {
					put(g, "\n");
					spaces(g, col);
				} else {
					put(g, " ");
				}
			}
			put(g, one.data);
		}
		buf_fini(&one);
	}
	put(g, "] loop\n"
	       "    execute pg_catalog.format('alter table %s force row level security', t);\n"
	       "  end loop;\n"
	       "end\n"
	       "$$;\n");
}

int policy_sql_write(buf *out, const policy *p, const char *source)
{
	gen g = {.out = out, .p = p, .sql = true};
	header(&g, source);
	functions(&g);
	policies(&g);
	views(&g);
	force(&g);
	put(&g, "\ncommit;\n");
	return g.rc;
}

int policy_sql_generate_file(const char *path, buf *out, char err[POLICY_ERROR_MAX])
{
	policy *p = NULL;
	int rc = policy_load_file(path, &p, err);
	if (rc < 0)
		return rc;
	rc = policy_sql_write(out, p, path);
	if (rc < 0)
		snprintf(err, POLICY_ERROR_MAX, "%s: cannot generate SQL: %s", path, strerror(-rc));
	policy_destroy(p);
	return rc;
}
