/*
 * test_policy — unit tests for the policy engine (src/policy/policy.h): the file parser's errors
 * (file:line: reason, unknown tables, columns and roles, bad rules, continuation lines), the
 * compiled programs, Kleene three-valued evaluation with NULLs, the implicit membership rule,
 * binding to relations (reordered, extra and missing columns) and the binding cache, column
 * actions (masks, decryption, bypass), mask_last4 and uuid canonicalization. The row-level
 * expectations of tests/integration/rls.sh are replayed here against deploy/policy.ini, so the C
 * evaluator is held to the same oracle as the database's policies.
 *
 * Run from the repository root or with WALCAST_SOURCE_DIR set to it. With WALCAST_POLICY_BENCH=1
 * it also measures decisions per second for the events read rule (build with -O2 for figures).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "change.h"
#include "policy.h"
#include "relcache.h"

/* ---- helpers ------------------------------------------------------------------------- */

#include "policy_fixture.h"
/* ROLES is lines 1-8, PRIVACY 9-12; EVENTS_HEAD after them is lines 13-15. */
#define EVENTS_HEAD                                                                            \
	"[table public.events]\n"                                                                  \
	"columns = id, org_id, contact_id, user_id, body\n"                                        \
	"org = org_id\n"

static policy *load_ok(const char *text)
{
	policy *p = NULL;
	char err[POLICY_ERROR_MAX] = "";
	int rc = policy_load_string(text, "t.ini", &p, err);
	if (rc != 0)
		fail_msg("policy_load_string: %d: %s", rc, err);
	assert_non_null(p);
	return p;
}

static void load_err(const char *text, const char *expected)
{
	policy *p = (policy *)0x1;
	char err[POLICY_ERROR_MAX] = "";
	int rc = policy_load_string(text, "t.ini", &p, err);
	if (rc != -EINVAL || strstr(err, expected) == NULL)
		fail_msg("expected -EINVAL and \"%s\", got %d \"%s\"", expected, rc, err);
	assert_ptr_equal(p, (policy *)0x1); /* untouched on failure */
}

static char *source_path(const char *rel, char *out, size_t n)
{
	const char *root = getenv("WALCAST_SOURCE_DIR");
	snprintf(out, n, "%s/%s", root ? root : ".", rel);
	return out;
}

static policy *load_platform(void)
{
	char path[4096];
	policy *p = NULL;
	char err[POLICY_ERROR_MAX] = "";
	int rc = policy_load_file(source_path("deploy/policy.ini", path, sizeof(path)), &p, err);
	if (rc != 0)
		fail_msg("%s (run from the source tree or set WALCAST_SOURCE_DIR)", err);
	return p;
}

static const change_value VNULL = {.kind = VALUE_NULL};
static const change_value VABSENT = {.kind = VALUE_ABSENT};

static change_value V(const char *s)
{
	return (change_value){.kind = VALUE_TEXT, .len = (uint32_t)strlen(s), .data = s};
}

/* A relation with the given column names (text type). */
typedef struct test_rel {
	relation rel;
	rel_column cols[32];
} test_rel;

static void mkrel(test_rel *r, const char *schema, const char *name, const char *const *cols, int n)
{
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < n; i++)
		r->cols[i] = (rel_column){.name = (char *)cols[i], .type_oid = 25, .typmod = -1};
	r->rel = (relation){.schema = (char *)schema, .name = (char *)name, .ncols = n,
	                    .cols = r->cols, .replident = 'f', .version = 1};
}

static policy_bound *bind_ok(const policy *p, const relation *rel)
{
	const policy_table *t = policy_table_find(p, rel->schema, strlen(rel->schema), rel->name,
	                                          strlen(rel->name));
	assert_non_null(t);
	policy_bound *b = NULL;
	char err[POLICY_ERROR_MAX] = "";
	int rc = policy_bind(t, rel, &b, err);
	if (rc != 0)
		fail_msg("policy_bind: %d: %s", rc, err);
	return b;
}

static const char *const EVENT_COLS[] = {"id", "org_id", "contact_id", "user_id", "kind",
                                         "direction", "status", "started_at", "duration_s",
                                         "from_number", "to_number", "body", "created_at"};
enum { E_ID, E_ORG, E_CONTACT, E_USER, E_KIND, E_DIR, E_STATUS, E_STARTED, E_DUR, E_FROM, E_TO,
       E_BODY, E_CREATED, E_NCOLS };

/* subject_rank over a fixed table of "subject:rank" pairs in arg (NULL-terminated). */
typedef struct rule_map {
	const char *subject;
	int rank;
} rule_map;

static int map_subject_rank(void *arg, const char *subject, size_t len)
{
	for (const rule_map *m = arg; m != NULL && m->subject != NULL; m++)
		if (strlen(m->subject) == len && memcmp(m->subject, subject, len) == 0)
			return m->rank;
	return 0;
}

static int failing_subject_rank(void *arg, const char *subject, size_t len)
{
	return -EIO;
}

/* ---- parser: token roles ----------------------------------------------------------------- */

static void test_member_roles(void **state)
{
	(void)state;
	policy *p = load_ok("[roles]\nranks = viewer\nbypass = service_role, ops\n"
	                    "members = authenticated, staff\n"
	                    "[membership]\ntable = m\norg = o\nuser = u\nrole = r\n"
	                    "[table s.t]\ncolumns = a\norg = a\nread = viewer\n");
	assert_int_equal(policy_member_role_count(p), 2);
	assert_string_equal(policy_member_role(p, 1), "staff");
	assert_int_equal(policy_role_kind(p, "staff", 5), POLICY_ROLE_MEMBER);
	assert_int_equal(policy_role_kind(p, "authenticated", 13), POLICY_ROLE_MEMBER);
	assert_int_equal(policy_role_kind(p, "ops", 3), POLICY_ROLE_BYPASS);
	assert_int_equal(policy_role_kind(p, "anon", 4), POLICY_ROLE_DENIED);
	assert_int_equal(policy_role_kind(p, "staffer", 5), POLICY_ROLE_MEMBER); /* len counts */
	assert_int_equal(policy_role_kind(p, "staffer", 7), POLICY_ROLE_DENIED);
	policy_destroy(p);
	p = load_ok("[roles]\nranks = viewer\nmembers = staff\n"
	            "[membership]\ntable = m\norg = o\nuser = u\nrole = r\n"
	            "[table s.t]\ncolumns = a\norg = a\nread = viewer\n");
	assert_int_equal(policy_role_kind(p, "authenticated", 13), POLICY_ROLE_DENIED);
	policy_destroy(p);
}

/* ---- parser: the platform file ----------------------------------------------------------- */

static void test_platform_file(void **state)
{
	policy *p = load_platform();
	assert_int_equal(policy_rank_count(p), 5);
	assert_string_equal(policy_rank_name(p, 1), "viewer");
	assert_string_equal(policy_rank_name(p, 5), "owner");
	assert_null(policy_rank_name(p, 0));
	assert_null(policy_rank_name(p, 6));
	assert_int_equal(policy_role_rank(p, "analyst", 7), 3);
	assert_int_equal(policy_role_rank(p, "analys", 6), 0);
	assert_int_equal(policy_role_rank(p, "service_role", 12), 0);
	assert_int_equal(policy_role_rank(p, NULL, 0), 0);
	assert_int_equal(policy_bypass_count(p), 1);
	assert_string_equal(policy_bypass_role(p, 0), "service_role");
	assert_true(policy_role_bypasses(p, "service_role", 12));
	assert_false(policy_role_bypasses(p, "authenticated", 13));
	/* token roles: authenticated is judged through org_roles, service_role bypasses, every other
	 * role (anon, unknown ones, none) is denied, as PostgreSQL grants them nothing */
	assert_int_equal(policy_member_role_count(p), 1);
	assert_string_equal(policy_member_role(p, 0), "authenticated");
	assert_null(policy_member_role(p, 1));
	assert_int_equal(policy_role_kind(p, "authenticated", 13), POLICY_ROLE_MEMBER);
	assert_int_equal(policy_role_kind(p, "service_role", 12), POLICY_ROLE_BYPASS);
	assert_int_equal(policy_role_kind(p, "anon", 4), POLICY_ROLE_DENIED);
	assert_int_equal(policy_role_kind(p, "authenticate", 12), POLICY_ROLE_DENIED);
	assert_int_equal(policy_role_kind(p, "authenticated_x", 15), POLICY_ROLE_DENIED);
	assert_int_equal(policy_role_kind(p, "member", 6), POLICY_ROLE_DENIED); /* a rank, not a token role */
	assert_int_equal(policy_role_kind(p, "", 0), POLICY_ROLE_DENIED);
	assert_int_equal(policy_role_kind(p, NULL, 0), POLICY_ROLE_DENIED);
	const policy_membership *m = policy_membership_source(p);
	assert_string_equal(m->schema, "public");
	assert_string_equal(m->table, "org_roles");
	assert_string_equal(m->org, "org_id");
	assert_string_equal(m->user, "user_id");
	assert_string_equal(m->role, "role");
	const policy_privacy *pr = policy_privacy_source(p);
	assert_non_null(pr);
	assert_string_equal(pr->table, "privacy_rules");
	assert_string_equal(pr->subject, "contact_id");
	assert_string_equal(pr->min_role, "min_role");

	static const char *const names[] = {"orgs", "org_roles", "contacts", "privacy_rules",
	                                    "events", "audit_log", "sync_health"};
	assert_int_equal(policy_table_count(p), 7);
	for (size_t i = 0; i < 7; i++) {
		const policy_table *t = policy_table_at(p, i);
		assert_string_equal(policy_table_schema(t), "public");
		assert_string_equal(policy_table_name(t), names[i]);
		assert_ptr_equal(policy_table_find(p, "public", 6, names[i], strlen(names[i])), t);
	}
	assert_null(policy_table_at(p, 7));
	assert_null(policy_table_find(p, "public", 6, "users", 5));
	assert_null(policy_table_find(p, "other", 5, "events", 6));

	const policy_table *ev = policy_table_find(p, "public", 6, "events", 6);
	assert_string_equal(policy_table_view(ev), "events_masked");
	assert_int_equal(policy_table_ncols(ev), E_NCOLS);
	for (size_t i = 0; i < E_NCOLS; i++)
		assert_string_equal(policy_table_column(ev, i), EVENT_COLS[i]); /* continuation line */
	assert_int_equal(policy_table_org(ev), E_ORG);
	size_t n;
	const policy_insn *read = policy_table_read(ev, &n);
	const policy_insn want[] = {{POLICY_OP_RANK_GE, 1}, {POLICY_OP_EQ_UID, E_USER},
	                            {POLICY_OP_PRIVACY, E_CONTACT}, {POLICY_OP_OR, 0},
	                            {POLICY_OP_AND, 0}};
	assert_int_equal(n, 5);
	assert_memory_equal(read, want, sizeof(want));
	const policy_column_rule *from = policy_table_rule(ev, E_FROM), *to = policy_table_rule(ev, E_TO);
	const policy_column_rule *body = policy_table_rule(ev, E_BODY);
	assert_int_equal(policy_table_rule(ev, E_KIND)->kind, POLICY_RULE_PLAIN);
	assert_int_equal(policy_table_rule(ev, E_KIND)->cond_id, -1);
	assert_int_equal(from->kind, POLICY_RULE_MASK_LAST4);
	assert_int_equal(from->cond_len, 1);
	assert_int_equal(from->cond[0].op, POLICY_OP_RANK_GE);
	assert_int_equal(from->cond[0].arg, 2);
	assert_int_equal(to->cond_id, from->cond_id); /* identical conditions are shared */
	assert_int_equal(body->kind, POLICY_RULE_ENCRYPTED);
	assert_int_not_equal(body->cond_id, from->cond_id);
	assert_int_equal(body->context, E_ID);
	const policy_insn bwant[] = {{POLICY_OP_RANK_GE, 3}, {POLICY_OP_EQ_UID, E_USER},
	                             {POLICY_OP_OR, 0}};
	assert_int_equal(body->cond_len, 3);
	assert_memory_equal(body->cond, bwant, sizeof(bwant));
	assert_null(policy_table_rule(ev, E_NCOLS));
	policy_destroy(p);
}

/* ---- parser: the language ---------------------------------------------------------------- */

/* Compiles `read = rule` in a small table and compares the program. */
static void check_program(const char *rule, const policy_insn *want, size_t n)
{
	char text[2048];
	snprintf(text, sizeof(text), ROLES PRIVACY EVENTS_HEAD "read = %s\n", rule);
	policy *p = load_ok(text);
	size_t got_n;
	const policy_insn *got = policy_table_read(policy_table_at(p, 0), &got_n);
	if (got_n != n || memcmp(got, want, n * sizeof(*want)) != 0) {
		char shown[512] = "";
		for (size_t i = 0; i < got_n; i++)
			snprintf(shown + strlen(shown), sizeof(shown) - strlen(shown), " %u/%u", got[i].op,
			         got[i].arg);
		fail_msg("rule \"%s\" compiled to%s", rule, shown);
	}
	policy_destroy(p);
}

static void test_precedence(void **state)
{
	enum { T = POLICY_OP_TRUE, F = POLICY_OP_FALSE, R = POLICY_OP_RANK_GE, P = POLICY_OP_PRIVACY,
	       U = POLICY_OP_EQ_UID, N = POLICY_OP_NOT, A = POLICY_OP_AND, O = POLICY_OP_OR };
	/* not binds tighter than and, and tighter than or; chains are left-associative. */
	check_program("not member or admin and owner",
	              (policy_insn[]){{R, 2}, {N, 0}, {R, 4}, {R, 5}, {A, 0}, {O, 0}}, 6);
	check_program("viewer and member and analyst",
	              (policy_insn[]){{R, 1}, {R, 2}, {A, 0}, {R, 3}, {A, 0}}, 5);
	check_program("(viewer or member) and not not true",
	              (policy_insn[]){{R, 1}, {R, 2}, {O, 0}, {T, 0}, {N, 0}, {N, 0}, {A, 0}}, 7);
	check_program("uid = user_id", (policy_insn[]){{U, 3}}, 1);
	check_program("user_id=uid", (policy_insn[]){{U, 3}}, 1);
	check_program("privacy( contact_id )or false",
	              (policy_insn[]){{P, 2}, {F, 0}, {O, 0}}, 3);
	check_program("((((owner))))", (policy_insn[]){{R, 5}}, 1);
}

static void test_file_syntax(void **state)
{
	/* Comments, blank lines, inline comments, CRLF, a byte order mark, continuation lines. */
	policy *p = load_ok("\xEF\xBB\xBF; a comment\r\n"
	                    "# another\r\n"
	                    "\r\n"
	                    "[roles]   ; inline\r\n"
	                    "ranks = low,\r\n"
	                    "   high   ; continued\r\n"
	                    "[membership]\n"
	                    "table = m\n"
	                    "org = o\n"
	                    "user = u\n"
	                    "role = r\n"
	                    "[table s.t]\n"
	                    "columns = a, b\n"
	                    "org = a\n"
	                    "read = low\n"
	                    "  and\n"
	                    "\thigh\n");
	assert_int_equal(policy_rank_count(p), 2);
	assert_string_equal(policy_rank_name(p, 2), "high");
	assert_int_equal(policy_bypass_count(p), 0);
	assert_int_equal(policy_member_role_count(p), 1); /* no members key: authenticated */
	assert_string_equal(policy_member_role(p, 0), "authenticated");
	assert_int_equal(policy_role_kind(p, "service_role", 12), POLICY_ROLE_DENIED); /* no bypass */
	assert_null(policy_privacy_source(p));
	assert_string_equal(policy_membership_source(p)->schema, "public"); /* default schema */
	const policy_table *t = policy_table_at(p, 0);
	assert_string_equal(policy_table_schema(t), "s");
	assert_string_equal(policy_table_view(t), "s_t_masked");
	size_t n;
	const policy_insn *r = policy_table_read(t, &n);
	assert_int_equal(n, 3);
	assert_int_equal(r[2].op, POLICY_OP_AND);
	policy_destroy(p);
}

typedef struct err_case {
	const char *text;
	const char *err;
} err_case;

static void test_errors(void **state)
{
	static const err_case cases[] = {
		/* rules */
		{ROLES PRIVACY EVENTS_HEAD "read = member and contact = uid\n",
		 "t.ini:16: table public.events: read: unknown column 'contact' (not in this table's columns)"},
		{ROLES PRIVACY EVENTS_HEAD "read = membr\n",
		 "t.ini:16: table public.events: read: unknown role 'membr' (roles: viewer, member, analyst, admin, owner)"},
		{ROLES PRIVACY EVENTS_HEAD "read = (member or admin\n",
		 "t.ini:16: table public.events: read: expected ')', found the end of the rule"},
		{ROLES PRIVACY EVENTS_HEAD "read = member admin\n",
		 "t.ini:16: table public.events: read: unexpected 'admin' after the rule (missing 'and' or 'or'?)"},
		{ROLES PRIVACY EVENTS_HEAD "read = member # comment\n",
		 "t.ini:16: table public.events: read: unexpected character '#'"},
		{ROLES PRIVACY EVENTS_HEAD "read = member and user_id\n",
		 "read: column 'user_id' can only be compared with uid ('user_id = uid')"},
		{ROLES PRIVACY EVENTS_HEAD "read = user_id = member\n",
		 "read: a column can only be compared with uid ('user_id = uid'), found 'member'"},
		{ROLES PRIVACY EVENTS_HEAD "read = uid = member\n",
		 "read: unknown column 'member' (not in this table's columns)"},
		{ROLES PRIVACY EVENTS_HEAD "read = uid\n", "read: expected '=' after uid (uid = column)"},
		{ROLES EVENTS_HEAD "read = privacy(contact_id)\n",
		 "t.ini:12: table public.events: read: privacy() needs a [privacy] section"},
		{ROLES PRIVACY EVENTS_HEAD "read = privacy(nope)\n", "read: unknown column 'nope'"},
		{ROLES PRIVACY EVENTS_HEAD "read = privacy contact_id\n", "read: expected '(' after privacy"},
		{ROLES PRIVACY EVENTS_HEAD "read =\n", "read: expected a rule, found the end of the rule"},
		{ROLES PRIVACY EVENTS_HEAD "read = and viewer\n", "read: expected a rule, found 'and'"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer and\n", "read: expected a rule, found the end"},
		{ROLES PRIVACY EVENTS_HEAD "read = ()\n", "read: expected a rule, found ')'"},
		{ROLES PRIVACY EVENTS_HEAD "read = Viewer\n", "read: unknown role 'Viewer'"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer \xc3\xa9\n", "read: unexpected byte 0xc3"},
		/* a continued rule reports the line of the error, not of the key */
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\n  and (member\n  or bogus)\n",
		 "t.ini:18: table public.events: read: unknown role 'bogus'"},
		/* masks and encryption */
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nmask body = last3 unless member\n",
		 "t.ini:17: table public.events: mask body: expected 'last4 unless RULE' or 'null unless RULE'"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nmask body = last4 member\n",
		 "mask body: expected 'unless RULE' after 'last4'"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nmask phone = last4 unless member\n",
		 "t.ini:17: table public.events: mask: unknown column 'phone'"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nmask body = null unless member\n"
		                           "encrypted body = admin\n",
		 "t.ini:18: table public.events: encrypted body: column 'body' already has a rule (line 17)"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nencrypted_context body = id\n",
		 "t.ini:17: table public.events: encrypted_context body: column 'body' is not encrypted"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nencrypted body = admin\nencrypted_context body = body\n",
		 "encrypted_context body: a column cannot be its own context"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nencrypted body = admin\nencrypted_context body = idx\n",
		 "t.ini:18: table public.events: encrypted_context body: unknown column 'idx'"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nhide body = admin\n",
		 "t.ini:17: [table public.events]: unknown key 'hide body'"},
		/* table keys */
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\nread = admin\n",
		 "t.ini:17: [table public.events]: duplicate key 'read' (first at line 16)"},
		{ROLES PRIVACY "[table public.events]\ncolumns = id, org_id\nread = viewer\n",
		 "t.ini:13: [table public.events]: missing key 'org'"},
		{ROLES PRIVACY "[table public.events]\norg = id\nread = viewer\n",
		 "t.ini:13: [table public.events]: missing key 'columns'"},
		{ROLES PRIVACY EVENTS_HEAD, "t.ini:13: [table public.events]: missing key 'read'"},
		{ROLES PRIVACY "[table public.events]\ncolumns = id, org_id\norg = org\nread = viewer\n",
		 "t.ini:15: table public.events: org: unknown column 'org'"},
		{ROLES PRIVACY "[table public.events]\ncolumns = id, Org_ID\norg = id\nread = viewer\n",
		 "t.ini:14: table public.events: columns: 'Org_ID' is not a valid name"},
		{ROLES PRIVACY "[table public.events]\ncolumns = id, org_id, id\norg = id\nread = viewer\n",
		 "columns: 'id' is listed twice"},
		{ROLES PRIVACY "[table public.events]\ncolumns = id,, org_id\norg = id\nread = viewer\n",
		 "columns: empty item in the list"},
		/* sections */
		{ROLES PRIVACY "[tables public.x]\ncolumns = id\norg = id\nread = viewer\n",
		 "t.ini:13: unknown section [tables public.x]"},
		{ROLES PRIVACY "[table Public.X]\ncolumns = id\norg = id\nread = viewer\n",
		 "t.ini:13: [table]: 'Public.X' is not a table name"},
		{ROLES PRIVACY EVENTS_HEAD "read = viewer\n" EVENTS_HEAD "read = viewer\n",
		 "t.ini:17: duplicate section [table public.events] (first at line 13)"},
		{ROLES PRIVACY "[table events]\ncolumns = id\norg = id\nread = viewer\n"
		               "[table public.events]\ncolumns = id\norg = id\nread = viewer\n",
		 "t.ini:17: duplicate section [table public.events] (first at line 13)"},
		{ROLES ROLES, "t.ini:9: duplicate section [roles] (first at line 1)"},
		{ROLES PRIVACY "[table public.empty]\n; nothing\n" EVENTS_HEAD "read = viewer\n",
		 "t.ini:13: section [table public.empty] is empty"},
		{"ranks = a\n" ROLES, "t.ini:1: key 'ranks' is outside any [section]"},
		{ROLES "[privacy]\ntable = x\nsubject = s\n", "t.ini:9: [privacy]: missing key 'min_role'"},
		{ROLES "[privacy]\ntable = x\nsubject = s\nmin_role = m\ncolour = red\n",
		 "t.ini:13: [privacy]: unknown key 'colour'"},
		{PRIVACY EVENTS_HEAD "read = true\n", "t.ini: missing [roles] section"},
		{"[roles]\nranks = a\n" EVENTS_HEAD "read = true\n", "t.ini: missing [membership] section"},
		{ROLES PRIVACY, "t.ini: no [table schema.name] section"},
		{ROLES PRIVACY "   [table public.x]\n", "t.ini:13: a [section] header must start at the beginning"},
		{ROLES PRIVACY "[table public.events]\ncolumns id\n", "t.ini:14: syntax error"},
		{ROLES PRIVACY "[table public.events\n", "t.ini:13: syntax error"},
		/* roles */
		{"[roles]\nranks = viewer, and\n", "t.ini:2: [roles] ranks: 'and' is a word of the rule language"},
		{"[roles]\nranks = viewer, viewer\n", "[roles] ranks: 'viewer' is listed twice"},
		{"[roles]\nranks = viewer\nbypass = viewer\n", "t.ini:3: [roles] bypass: 'viewer' is also a ranked role"},
		{"[roles]\nbypass = x\n", "t.ini:1: [roles]: missing key 'ranks'"},
		{"[roles]\nranks = viewer\nbypass = service_role\nmembers = authenticated, service_role\n",
		 "t.ini:4: [roles] members: 'service_role' is also a bypass role"},
		{"[roles]\nranks = viewer\nmembers = staff, staff\n", "[roles] members: 'staff' is listed twice"},
		{"[roles]\nranks = viewer\nmembers =\n", "t.ini:3: [roles] members"},
		{"[roles]\nranks = viewer\nmember = authenticated\n", "t.ini:3: [roles]: unknown key 'member'"},
		/* sources must name columns their tables have */
		{ROLES PRIVACY "[table public.org_roles]\ncolumns = org_id, user_id, rank\norg = org_id\nread = viewer\n",
		 "t.ini:4: [membership]: column 'role' is not in the columns of [table public.org_roles]"},
		{ROLES PRIVACY "[table public.privacy_rules]\ncolumns = org_id, subject, min_role\norg = org_id\n"
		               "read = admin\n",
		 "t.ini:9: [privacy]: column 'contact_id' is not in the columns of [table public.privacy_rules]"},
		/* views must not collide */
		{ROLES PRIVACY "[table a.b_c]\ncolumns = id\norg = id\nread = viewer\n"
		               "[table a_b.c]\ncolumns = id\norg = id\nread = viewer\n",
		 "t.ini:17: tables a.b_c and a_b.c would share the view walcast.a_b_c_masked"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		load_err(cases[i].text, cases[i].err);
}

static void test_error_limits(void **state)
{
	/* A line longer than libinih's buffer is refused, not split. */
	char text[4096];
	snprintf(text, sizeof(text), ROLES PRIVACY EVENTS_HEAD "read = viewer%0300d\n", 0);
	memset(strstr(text, "viewer0") + 6, ' ', 300);
	load_err(text, "t.ini:16: line too long (at most 197 characters)");
	/* Nesting is bounded (the evaluation stack is fixed). */
	char deep[8192] = ROLES PRIVACY EVENTS_HEAD "read = ";
	for (int i = 0; i < 40; i++)
		strcat(deep, "(\n  ");
	strcat(deep, "viewer");
	for (int i = 0; i < 40; i++)
		strcat(deep, ")");
	strcat(deep, "\n");
	load_err(deep, "read: rule nested too deeply");
	/* Long rules are bounded too. */
	char longr[16384] = ROLES PRIVACY EVENTS_HEAD "read = viewer";
	for (int i = 0; i < 200; i++)
		strcat(longr, "\n  or member");
	strcat(longr, "\n");
	load_err(longr, "read: rule too long (at most 256 operations)");
	/* Files. */
	policy *p = NULL;
	char err[POLICY_ERROR_MAX];
	assert_int_equal(policy_load_file("/nonexistent/policy.ini", &p, err), -ENOENT);
	assert_string_equal(err, "/nonexistent/policy.ini: cannot open: No such file or directory");
	assert_int_equal(policy_load_file("/", &p, err), -EINVAL);
	assert_null(p);
	char path[] = "/tmp/test_policy.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char nul[] = "[roles]\nranks = a\0b\n";
	assert_int_equal(write(fd, nul, sizeof(nul) - 1), (ssize_t)sizeof(nul) - 1);
	close(fd);
	assert_int_equal(policy_load_file(path, &p, err), -EINVAL);
	unlink(path);
	assert_non_null(strstr(err, ":2: NUL byte in the file"));
}

/* ---- programs: Kleene logic ---------------------------------------------------------------- */

/* One instruction pushing the truth value t (UNKNOWN: uid compared with a NULL column). */
static policy_insn push(int t)
{
	if (t == POLICY_TRUE)
		return (policy_insn){POLICY_OP_TRUE, 0};
	if (t == POLICY_FALSE)
		return (policy_insn){POLICY_OP_FALSE, 0};
	return (policy_insn){POLICY_OP_EQ_UID, 0};
}

static void test_three_valued_logic(void **state)
{
	const change_value tuple[] = {VNULL};
	const policy_viewer v = {.rank = 1, .uid = "u", .uid_len = 1};
	enum { F = POLICY_FALSE, U = POLICY_UNKNOWN, T = POLICY_TRUE };
	/* SQL's truth tables, rows a = F, U, T; columns b = F, U, T. */
	static const int and_table[3][3] = {{F, F, F}, {F, U, U}, {F, U, T}};
	static const int or_table[3][3] = {{F, U, T}, {U, U, T}, {T, T, T}};
	static const int not_table[3] = {T, U, F};
	for (int a = 0; a < 3; a++) {
		policy_insn notp[] = {push(a), {POLICY_OP_NOT, 0}};
		assert_int_equal(policy_program_check(notp, 2, 1, 1), 0);
		assert_int_equal(policy_program_eval(notp, 2, tuple, &v), not_table[a]);
		for (int b = 0; b < 3; b++) {
			policy_insn andp[] = {push(a), push(b), {POLICY_OP_AND, 0}};
			policy_insn orp[] = {push(a), push(b), {POLICY_OP_OR, 0}};
			assert_int_equal(policy_program_eval(andp, 3, tuple, &v), and_table[a][b]);
			assert_int_equal(policy_program_eval(orp, 3, tuple, &v), or_table[a][b]);
		}
	}
}

static void test_program_check(void **state)
{
	const policy_insn ok[] = {{POLICY_OP_RANK_GE, 2}, {POLICY_OP_PRIVACY, 1}, {POLICY_OP_AND, 0}};
	assert_int_equal(policy_program_check(ok, 3, 2, 2), 0);
	assert_int_equal(policy_program_check(ok, 3, 1, 2), -EINVAL); /* column out of range */
	assert_int_equal(policy_program_check(ok, 3, 2, 1), -EINVAL); /* rank out of range */
	assert_int_equal(policy_program_check(ok, 2, 2, 2), -EINVAL); /* two values left */
	assert_int_equal(policy_program_check(ok, 0, 2, 2), -EINVAL);
	assert_int_equal(policy_program_check(NULL, 1, 2, 2), -EINVAL);
	const policy_insn under[] = {{POLICY_OP_TRUE, 0}, {POLICY_OP_OR, 0}};
	assert_int_equal(policy_program_check(under, 2, 1, 1), -EINVAL);
	const policy_insn notempty[] = {{POLICY_OP_NOT, 0}};
	assert_int_equal(policy_program_check(notempty, 1, 1, 1), -EINVAL);
	const policy_insn badop[] = {{99, 0}};
	assert_int_equal(policy_program_check(badop, 1, 1, 1), -EINVAL);
	const policy_insn rank0[] = {{POLICY_OP_RANK_GE, 0}};
	assert_int_equal(policy_program_check(rank0, 1, 1, 1), -EINVAL);
	policy_insn deep[POLICY_STACK_MAX + 1];
	for (size_t i = 0; i < POLICY_STACK_MAX + 1; i++)
		deep[i] = (policy_insn){POLICY_OP_TRUE, 0};
	assert_int_equal(policy_program_check(deep, POLICY_STACK_MAX + 1, 1, 1), -EINVAL);
}

static void test_atoms_and_nulls(void **state)
{
	const char *uid = "00000000-0000-4000-8000-000000000001";
	const char *other = "00000000-0000-4000-8000-000000000002";
	rule_map rules[] = {{"s-admin", 4}, {"s-viewer", 1}, {NULL, 0}};
	policy_viewer v = {.rank = 2, .uid = uid, .uid_len = 36, .subject_rank = map_subject_rank,
	                   .subject_arg = rules};
	const policy_insn eq[] = {{POLICY_OP_EQ_UID, 0}};
	const policy_insn priv[] = {{POLICY_OP_PRIVACY, 0}};
	const policy_insn noteq[] = {{POLICY_OP_EQ_UID, 0}, {POLICY_OP_NOT, 0}};
	change_value t[1];

	t[0] = V(uid);
	assert_int_equal(policy_program_eval(eq, 1, t, &v), POLICY_TRUE);
	assert_int_equal(policy_program_eval(noteq, 2, t, &v), POLICY_FALSE);
	t[0] = V(other);
	assert_int_equal(policy_program_eval(eq, 1, t, &v), POLICY_FALSE);
	assert_int_equal(policy_program_eval(noteq, 2, t, &v), POLICY_TRUE);
	t[0] = V("00000000-0000-4000-8000-00000000000"); /* a prefix is not equal */
	assert_int_equal(policy_program_eval(eq, 1, t, &v), POLICY_FALSE);
	/* NULL column or no uid: UNKNOWN, and NOT keeps it UNKNOWN (SQL: not (NULL = x) is NULL). */
	t[0] = VNULL;
	assert_int_equal(policy_program_eval(eq, 1, t, &v), POLICY_UNKNOWN);
	assert_int_equal(policy_program_eval(noteq, 2, t, &v), POLICY_UNKNOWN);
	policy_viewer anon = v;
	anon.uid = NULL;
	anon.uid_len = 0;
	t[0] = V(uid);
	assert_int_equal(policy_program_eval(eq, 1, t, &anon), POLICY_UNKNOWN);
	assert_int_equal(policy_program_eval(noteq, 2, t, &anon), POLICY_UNKNOWN);

	/* privacy(col): NULL subject -> TRUE; no rule -> TRUE; rule rank <= viewer rank. */
	t[0] = VNULL;
	assert_int_equal(policy_program_eval(priv, 1, t, &v), POLICY_TRUE);
	t[0] = V("s-none");
	assert_int_equal(policy_program_eval(priv, 1, t, &v), POLICY_TRUE);
	t[0] = V("s-viewer");
	assert_int_equal(policy_program_eval(priv, 1, t, &v), POLICY_TRUE);
	t[0] = V("s-admin");
	assert_int_equal(policy_program_eval(priv, 1, t, &v), POLICY_FALSE);
	v.rank = 4;
	assert_int_equal(policy_program_eval(priv, 1, t, &v), POLICY_TRUE);
	/* Errors: missing callback, failing callback, a column the tuple does not carry. */
	policy_viewer nocb = v;
	nocb.subject_rank = NULL;
	assert_int_equal(policy_program_eval(priv, 1, t, &nocb), -EINVAL);
	policy_viewer bad = v;
	bad.subject_rank = failing_subject_rank;
	assert_int_equal(policy_program_eval(priv, 1, t, &bad), -EIO);
	t[0] = VABSENT;
	assert_int_equal(policy_program_eval(priv, 1, t, &v), -ENODATA);
	assert_int_equal(policy_program_eval(eq, 1, t, &v), -ENODATA);
	t[0] = (change_value){.kind = VALUE_UNCHANGED};
	assert_int_equal(policy_program_eval(eq, 1, t, &v), -ENODATA);
	/* ...but a missing column does not matter when no uid could ever match it. */
	assert_int_equal(policy_program_eval(eq, 1, t, &anon), POLICY_UNKNOWN);
}

/* ---- rows: visibility, NULLs, the implicit membership rule ------------------------------------ */

static void test_visibility_nulls(void **state)
{
	policy *p = load_ok(ROLES PRIVACY EVENTS_HEAD "read = not (user_id = uid)\n"
	                    "[table public.t2]\ncolumns = id, org_id\norg = org_id\nread = true\n");
	test_rel r;
	static const char *const cols[] = {"id", "org_id", "contact_id", "user_id", "body"};
	mkrel(&r, "public", "events", cols, 5);
	policy_bound *b = bind_ok(p, &r.rel);
	const char *me = "00000000-0000-4000-8000-000000000001";
	policy_viewer v = {.rank = 1, .uid = me, .uid_len = 36};
	change_value row[5] = {V("e1"), V("org"), VNULL, V(me), VNULL};
	bool vis = true;
	/* not (user_id = uid): FALSE for my own row... */
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_false(vis);
	/* ...TRUE for someone else's... */
	row[3] = V("00000000-0000-4000-8000-000000000002");
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_true(vis);
	/* ...and UNKNOWN, so invisible, when user_id is NULL: exactly what RLS does. */
	row[3] = VNULL;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_false(vis);
	/* The implicit membership rule: rank 0 sees nothing, a NULL org is nobody's. */
	row[3] = V("00000000-0000-4000-8000-000000000002");
	v.rank = 0;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_false(vis);
	v.rank = 5;
	row[1] = VNULL;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_false(vis);
	/* Bypass sees even that. */
	v.bypass = true;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_true(vis);
	v.bypass = false;
	/* A tuple without the org column cannot be judged (but rank 0 needs no judging). */
	row[1] = VABSENT;
	vis = true;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), -ENODATA);
	assert_true(vis); /* not written on error */
	v.rank = 0;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_false(vis);
	policy_bound_destroy(b);

	/* read = true: every member of the row's org, nobody else. */
	static const char *const cols2[] = {"id", "org_id"};
	mkrel(&r, "public", "t2", cols2, 2);
	b = bind_ok(p, &r.rel);
	change_value row2[2] = {V("x"), V("org")};
	v = (policy_viewer){.rank = 1, .uid = me, .uid_len = 36};
	assert_int_equal(policy_row_visible(b, row2, &v, &vis), 0);
	assert_true(vis);
	v.rank = 0;
	assert_int_equal(policy_row_visible(b, row2, &v, &vis), 0);
	assert_false(vis);
	policy_bound_destroy(b);
	policy_destroy(p);
}

/* The dataset of tests/integration/rls.sh, judged by the C evaluator against the same expected
 * rows as the database's policies. */
#define ID(x) "00000000-0000-4000-8000-000000000" x

typedef struct member_row {
	const char *org, *user;
	int rank;
} member_row;

static const member_row roster[] = {
	{ID("0a0"), ID("1a1"), 5}, {ID("0a0"), ID("1a2"), 4}, {ID("0a0"), ID("1a3"), 3},
	{ID("0a0"), ID("1a4"), 2}, {ID("0a0"), ID("1a5"), 1}, {ID("0b0"), ID("1b1"), 5},
	{ID("0b0"), ID("1a3"), 1},
};

static rule_map privacy_rules[] = {
	{ID("ca2"), 1}, {ID("ca3"), 3}, {ID("ca4"), 4}, {ID("ca5"), 5}, {ID("cb2"), 2}, {NULL, 0},
};

static int rank_of(const char *user, const change_value *org)
{
	if (org->kind != VALUE_TEXT || user == NULL)
		return 0;
	for (size_t i = 0; i < sizeof(roster) / sizeof(roster[0]); i++)
		if (strcmp(roster[i].user, user) == 0 && strcmp(roster[i].org, org->data) == 0)
			return roster[i].rank;
	return 0;
}

/* Labels (last three characters of column 0) of the rows visible to user, comma-separated. */
static void visible_labels(const policy_bound *b, change_value rows[][E_NCOLS], size_t nrows,
                           const char *user, char *out, size_t outlen)
{
	out[0] = '\0';
	int org = policy_bound_org_column(b);
	for (size_t i = 0; i < nrows; i++) {
		policy_viewer v = {.rank = rank_of(user, &rows[i][org]), .uid = user,
		                   .uid_len = user ? strlen(user) : 0, .subject_rank = map_subject_rank,
		                   .subject_arg = privacy_rules};
		bool vis;
		assert_int_equal(policy_row_visible(b, rows[i], &v, &vis), 0);
		if (vis)
			snprintf(out + strlen(out), outlen - strlen(out), "%s%s", out[0] ? "," : "",
			         rows[i][0].data + rows[i][0].len - 3);
	}
}

static void event_row(change_value *row, const char *id, const char *org, const char *contact,
                      const char *user)
{
	for (int c = 0; c < E_NCOLS; c++)
		row[c] = V("x");
	row[E_ID] = V(id);
	row[E_ORG] = V(org);
	row[E_CONTACT] = contact ? V(contact) : VNULL;
	row[E_USER] = user ? V(user) : VNULL;
}

static void test_rls_oracle_rows(void **state)
{
	policy *p = load_platform();
	test_rel r;
	mkrel(&r, "public", "events", EVENT_COLS, E_NCOLS);
	policy_bound *ev = bind_ok(p, &r.rel);
	change_value events[10][E_NCOLS];
	event_row(events[0], ID("ea1"), ID("0a0"), NULL, NULL);
	event_row(events[1], ID("ea2"), ID("0a0"), ID("ca1"), NULL);
	event_row(events[2], ID("ea3"), ID("0a0"), ID("ca2"), NULL);
	event_row(events[3], ID("ea4"), ID("0a0"), ID("ca3"), NULL);
	event_row(events[4], ID("ea5"), ID("0a0"), ID("ca4"), ID("1a5"));
	event_row(events[5], ID("ea6"), ID("0a0"), ID("ca5"), ID("1a4"));
	event_row(events[6], ID("ea7"), ID("0a0"), ID("ca5"), ID("1b1"));
	event_row(events[7], ID("ea8"), ID("0a0"), ID("ca3"), ID("1f0"));
	event_row(events[8], ID("eb1"), ID("0b0"), ID("cb1"), ID("1b1"));
	event_row(events[9], ID("eb2"), ID("0b0"), ID("cb2"), NULL);
	static const struct {
		const char *user, *events, *contacts;
	} expect[] = {
		{ID("1a1"), "ea1,ea2,ea3,ea4,ea5,ea6,ea7,ea8", "ca1,ca2,ca3,ca4,ca5"},
		{ID("1a2"), "ea1,ea2,ea3,ea4,ea5,ea8", "ca1,ca2,ca3,ca4"},
		{ID("1a3"), "ea1,ea2,ea3,ea4,ea8,eb1", "ca1,ca2,ca3,cb1"},
		{ID("1a4"), "ea1,ea2,ea3,ea6", "ca1,ca2"},
		{ID("1a5"), "ea1,ea2,ea3,ea5", "ca1,ca2"},
		{ID("1b1"), "eb1,eb2", "cb1,cb2"},
		{ID("1f0"), "", ""},
		{NULL, "", ""},
	};
	static const char *const ccols[] = {"id", "org_id", "name", "phone", "created_at", "updated_at"};
	mkrel(&r, "public", "contacts", ccols, 6);
	policy_bound *ct = bind_ok(p, &r.rel);
	change_value contacts[7][E_NCOLS];
	const char *cids[] = {ID("ca1"), ID("ca2"), ID("ca3"), ID("ca4"), ID("ca5"), ID("cb1"), ID("cb2")};
	for (int i = 0; i < 7; i++) {
		contacts[i][0] = V(cids[i]);
		contacts[i][1] = V(i < 5 ? ID("0a0") : ID("0b0"));
		for (int c = 2; c < 6; c++)
			contacts[i][c] = V("x");
	}
	for (size_t u = 0; u < sizeof(expect) / sizeof(expect[0]); u++) {
		char got[256];
		visible_labels(ev, events, 10, expect[u].user, got, sizeof(got));
		if (strcmp(got, expect[u].events) != 0)
			fail_msg("events for %s: expected [%s], got [%s]", expect[u].user, expect[u].events, got);
		visible_labels(ct, contacts, 7, expect[u].user, got, sizeof(got));
		if (strcmp(got, expect[u].contacts) != 0)
			fail_msg("contacts for %s: expected [%s], got [%s]", expect[u].user, expect[u].contacts,
			         got);
	}
	/* rls.sh's role changes: 1a3 demoted to viewer, promoted to owner, removed from A. */
	char got[256];
	policy_viewer v = {.uid = ID("1a3"), .uid_len = 36, .subject_rank = map_subject_rank,
	                   .subject_arg = privacy_rules};
	static const struct {
		int rank_a;
		const char *events;
	} changes[] = {{1, "ea1,ea2,ea3,eb1"}, {5, "ea1,ea2,ea3,ea4,ea5,ea6,ea7,ea8,eb1"}, {0, "eb1"}};
	for (size_t k = 0; k < 3; k++) {
		got[0] = '\0';
		for (int i = 0; i < 10; i++) {
			v.rank = strcmp(events[i][E_ORG].data, ID("0a0")) == 0 ? changes[k].rank_a : 1;
			bool vis;
			assert_int_equal(policy_row_visible(ev, events[i], &v, &vis), 0);
			if (vis)
				snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", got[0] ? "," : "",
				         events[i][E_ID].data + 33);
		}
		assert_string_equal(got, changes[k].events);
	}
	policy_bound_destroy(ct);
	policy_bound_destroy(ev);
	policy_destroy(p);
}

/* ---- rows: column actions -------------------------------------------------------------------- */

static void test_column_actions(void **state)
{
	policy *p = load_platform();
	test_rel r;
	mkrel(&r, "public", "events", EVENT_COLS, E_NCOLS);
	policy_bound *b = bind_ok(p, &r.rel);
	const char *handler = ID("1a5");
	change_value row[E_NCOLS];
	event_row(row, ID("ea1"), ID("0a0"), NULL, handler);
	policy_action act[E_NCOLS];
	static const struct {
		int rank;
		const char *uid;
		bool bypass;
		policy_action from, to, body;
	} cases[] = {
		{1, ID("1a9"), false, POLICY_MASK_LAST4, POLICY_MASK_LAST4, POLICY_NULL},   /* viewer */
		{1, ID("1a5"), false, POLICY_MASK_LAST4, POLICY_MASK_LAST4, POLICY_DECRYPT}, /* handler */
		{2, ID("1a9"), false, POLICY_KEEP, POLICY_KEEP, POLICY_NULL},               /* member */
		{2, NULL, false, POLICY_KEEP, POLICY_KEEP, POLICY_NULL},                    /* no uid */
		{3, ID("1a9"), false, POLICY_KEEP, POLICY_KEEP, POLICY_DECRYPT},            /* analyst */
		{5, ID("1a9"), false, POLICY_KEEP, POLICY_KEEP, POLICY_DECRYPT},            /* owner */
		{0, NULL, true, POLICY_KEEP, POLICY_KEEP, POLICY_DECRYPT},                  /* bypass */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		policy_viewer v = {.rank = cases[i].rank, .uid = cases[i].uid,
		                   .uid_len = cases[i].uid ? 36 : 0, .bypass = cases[i].bypass};
		memset(act, 0xee, sizeof(act));
		assert_int_equal(policy_row_columns(b, row, &v, act), 0);
		assert_int_equal(act[E_FROM], cases[i].from);
		assert_int_equal(act[E_TO], cases[i].to);
		assert_int_equal(act[E_BODY], cases[i].body);
		for (int c = 0; c < E_NCOLS; c++)
			if (c != E_FROM && c != E_TO && c != E_BODY)
				assert_int_equal(act[c], POLICY_KEEP);
	}
	/* The handling-user term of the body rule is UNKNOWN when user_id is NULL: no decryption. */
	row[E_USER] = VNULL;
	policy_viewer v = {.rank = 1, .uid = ID("1a5"), .uid_len = 36};
	assert_int_equal(policy_row_columns(b, row, &v, act), 0);
	assert_int_equal(act[E_BODY], POLICY_NULL);
	/* Conditions need their columns; actions are not written on error. */
	row[E_USER] = VABSENT;
	memset(act, 0xee, sizeof(act));
	assert_int_equal(policy_row_columns(b, row, &v, act), -ENODATA);
	assert_int_equal(act[0], (policy_action)0xeeeeeeee);

	/* What the audience grouping needs. */
	assert_int_equal(policy_bound_ncols(b), E_NCOLS);
	assert_int_equal(policy_bound_org_column(b), E_ORG);
	assert_ptr_equal(policy_bound_table(b), policy_table_find(p, "public", 6, "events", 6));
	assert_int_equal(policy_bound_flags(b),
	                 POLICY_READ_USES_UID | POLICY_COLUMNS_USE_UID | POLICY_USES_PRIVACY);
	const int *uc;
	assert_int_equal(policy_bound_uid_columns(b, &uc), 1);
	assert_int_equal(uc[0], E_USER);
	assert_int_equal(policy_bound_context_column(b, E_BODY), E_ID);
	assert_int_equal(policy_bound_context_column(b, E_FROM), -1);
	assert_int_equal(policy_bound_context_column(b, -1), -1);
	assert_int_equal(policy_bound_context_column(b, E_NCOLS), -1);
	policy_bound_destroy(b);

	static const char *const ocols[] = {"id", "name", "created_at"};
	mkrel(&r, "public", "orgs", ocols, 3);
	b = bind_ok(p, &r.rel);
	assert_int_equal(policy_bound_flags(b), 0);
	assert_int_equal(policy_bound_uid_columns(b, &uc), 0);
	assert_int_equal(policy_bound_org_column(b), 0);
	policy_bound_destroy(b);
	policy_destroy(p);
}

static void test_mask_null_rule(void **state)
{
	policy *p = load_ok(ROLES PRIVACY EVENTS_HEAD "read = viewer\nmask body = null unless admin\n"
	                    "mask contact_id = last4 unless false\n");
	test_rel r;
	static const char *const cols[] = {"id", "org_id", "contact_id", "user_id", "body"};
	mkrel(&r, "public", "events", cols, 5);
	policy_bound *b = bind_ok(p, &r.rel);
	change_value row[5] = {V("a"), V("o"), V("c"), VNULL, V("b")};
	policy_action act[5];
	policy_viewer v = {.rank = 4};
	assert_int_equal(policy_row_columns(b, row, &v, act), 0);
	assert_int_equal(act[4], POLICY_KEEP);
	assert_int_equal(act[2], POLICY_MASK_LAST4); /* "unless false": always masked... */
	v.rank = 3;
	assert_int_equal(policy_row_columns(b, row, &v, act), 0);
	assert_int_equal(act[4], POLICY_NULL);
	v.bypass = true;
	assert_int_equal(policy_row_columns(b, row, &v, act), 0);
	assert_int_equal(act[2], POLICY_KEEP); /* ...except for bypass roles */
	assert_int_equal(act[4], POLICY_KEEP);
	assert_int_equal(policy_bound_context_column(b, 4), -1);
	policy_bound_destroy(b);
	policy_destroy(p);
}

/* ---- binding ------------------------------------------------------------------------------- */

static void test_bind(void **state)
{
	policy *p = load_platform();
	const policy_table *t = policy_table_find(p, "public", 6, "events", 6);
	test_rel r;
	char err[POLICY_ERROR_MAX];
	policy_bound *b = NULL;
	/* Reordered columns, one the policy does not know, and an unreferenced one missing. */
	static const char *const cols[] = {"secret", "body", "user_id", "org_id", "id", "contact_id",
	                                   "from_number", "to_number", "kind"};
	mkrel(&r, "public", "events", cols, 9);
	assert_int_equal(policy_bind(t, &r.rel, &b, err), 0);
	assert_int_equal(policy_bound_org_column(b), 3);
	assert_int_equal(policy_bound_context_column(b, 1), 4);
	const int *uc;
	assert_int_equal(policy_bound_uid_columns(b, &uc), 1);
	assert_int_equal(uc[0], 2);
	change_value row[9] = {V("s"), V("\\x01"), V(ID("1a5")), V(ID("0a0")), V(ID("ea1")), VNULL,
	                       V("+1"), V("+2"), V("sms")};
	policy_action act[9];
	policy_viewer v = {.rank = 1, .uid = ID("1a5"), .uid_len = 36};
	bool vis;
	assert_int_equal(policy_row_visible(b, row, &v, &vis), 0);
	assert_true(vis);
	assert_int_equal(policy_row_columns(b, row, &v, act), 0);
	const policy_action want[9] = {POLICY_OMIT, POLICY_DECRYPT, POLICY_KEEP, POLICY_KEEP,
	                               POLICY_KEEP, POLICY_KEEP, POLICY_MASK_LAST4, POLICY_MASK_LAST4,
	                               POLICY_KEEP};
	assert_memory_equal(act, want, sizeof(want));
	v.bypass = true;
	assert_int_equal(policy_row_columns(b, row, &v, act), 0);
	assert_int_equal(act[0], POLICY_KEEP); /* bypass sees unknown columns too */
	policy_bound_destroy(b);

	/* A referenced column missing from the relation. */
	static const char *const missing[] = {"id", "org_id", "user_id", "body", "from_number",
	                                      "to_number"};
	mkrel(&r, "public", "events", missing, 6);
	b = (policy_bound *)0x1;
	assert_int_equal(policy_bind(t, &r.rel, &b, err), -EINVAL);
	assert_string_equal(err, "relation public.events: no column 'contact_id' (used by the policy)");
	assert_ptr_equal(b, (policy_bound *)0x1);
	static const char *const noctx[] = {"org_id", "contact_id", "user_id", "body", "from_number",
	                                    "to_number"};
	mkrel(&r, "public", "events", noctx, 6);
	assert_int_equal(policy_bind(t, &r.rel, &b, err), -EINVAL);
	assert_string_equal(err, "relation public.events: no column 'id' (used by the policy)");
	policy_destroy(p);
}

static void test_cache(void **state)
{
	policy *p = load_platform();
	relcache *rc = relcache_create();
	assert_non_null(rc);
	rel_column cols[E_NCOLS];
	for (int i = 0; i < E_NCOLS; i++)
		cols[i] = (rel_column){.name = (char *)EVENT_COLS[i], .type_oid = 25, .typmod = -1};
	relation desc = {.oid = 100, .schema = "public", .name = "events", .ncols = E_NCOLS,
	                 .cols = cols, .replident = 'f'};
	const relation *rel;
	assert_int_equal(relcache_put(rc, &desc, &rel), 0);
	policy_cache *c = NULL;
	assert_int_equal(policy_cache_create(p, &c), 0);
	char err[POLICY_ERROR_MAX];
	const policy_bound *b1 = NULL, *b2 = NULL;
	assert_int_equal(policy_cache_get(c, rel, &b1, err), 0);
	assert_non_null(b1);
	assert_int_equal(policy_cache_get(c, rel, &b2, err), 0);
	assert_ptr_equal(b1, b2); /* cached */
	assert_int_equal(policy_bound_org_column(b1), E_ORG);

	/* ALTER TABLE: a new version with another column order is bound again. */
	rel_column swapped[E_NCOLS];
	memcpy(swapped, cols, sizeof(cols));
	swapped[0] = cols[1];
	swapped[1] = cols[0];
	desc.cols = swapped;
	assert_int_equal(relcache_put(rc, &desc, &rel), 0);
	assert_int_equal(rel->version, 2);
	assert_int_equal(policy_cache_get(c, rel, &b2, err), 0);
	assert_non_null(b2);
	assert_int_equal(policy_bound_org_column(b2), 0);
	assert_int_equal(policy_bound_context_column(b2, E_BODY), 1);

	/* A version that cannot be bound fails, and fails the same way from the cache. */
	desc.ncols = 3;
	assert_int_equal(relcache_put(rc, &desc, &rel), 0);
	char err2[POLICY_ERROR_MAX];
	assert_int_equal(policy_cache_get(c, rel, &b2, err), -EINVAL);
	assert_int_equal(policy_cache_get(c, rel, &b2, err2), -EINVAL);
	assert_string_equal(err, err2);
	assert_string_equal(err, "relation public.events: no column 'user_id' (used by the policy)");

	/* Tables the policy does not govern: no binding (deny). */
	relation other = {.oid = 200, .schema = "public", .name = "users", .ncols = E_NCOLS,
	                  .cols = cols, .replident = 'd'};
	assert_int_equal(relcache_put(rc, &other, &rel), 0);
	b2 = (const policy_bound *)0x1;
	assert_int_equal(policy_cache_get(c, rel, &b2, err), 0);
	assert_null(b2);

	/* A relation address reused by another table with the same version is not confused. */
	test_rel r;
	mkrel(&r, "public", "events", EVENT_COLS, E_NCOLS);
	assert_int_equal(policy_cache_get(c, &r.rel, &b1, err), 0);
	assert_int_equal(policy_bound_ncols(b1), E_NCOLS);
	static const char *const ocols[] = {"id", "name", "created_at"};
	mkrel(&r, "public", "orgs", ocols, 3);
	assert_int_equal(policy_cache_get(c, &r.rel, &b2, err), 0);
	assert_ptr_equal(policy_bound_table(b2), policy_table_find(p, "public", 6, "orgs", 4));
	assert_int_equal(policy_bound_ncols(b2), 3);
	policy_cache_destroy(c);
	policy_cache_destroy(NULL);
	relcache_destroy(rc);
	policy_destroy(p);
}

/* Issue 6, item 7: a table dropped and recreated comes back to the relation cache at version 1
 * again (DROP TABLE events; ALTER TABLE tmp RENAME TO events drops the stale one, a later
 * CREATE TABLE events is new), and malloc may hand it the freed relation's address. The binding
 * made for the old relation must not be served for the new one. The address reuse is made
 * deterministic by copying each cached relation into the same storage, as malloc would. */
static void test_cache_recreated_relation(void **state)
{
	policy *p = load_platform();
	relcache *rc = relcache_create();
	assert_non_null(rc);
	rel_column cols[E_NCOLS], swapped[E_NCOLS];
	for (int i = 0; i < E_NCOLS; i++)
		cols[i] = (rel_column){.name = (char *)EVENT_COLS[i], .type_oid = 25, .typmod = -1};
	memcpy(swapped, cols, sizeof(cols));
	swapped[0] = cols[E_ORG];
	swapped[E_ORG] = cols[0];
	relation events = {.oid = 100, .schema = "public", .name = "events", .ncols = E_NCOLS,
	                   .cols = cols, .replident = 'f'};
	const relation *old = NULL, *fresh = NULL;
	assert_int_equal(relcache_put(rc, &events, &old), 0);
	relation at_x = *old; /* the address both relations occupy */
	policy_cache *c = NULL;
	assert_int_equal(policy_cache_create(p, &c), 0);
	char err[POLICY_ERROR_MAX];
	const policy_bound *b = NULL;
	assert_int_equal(policy_cache_get(c, &at_x, &b, err), 0);
	assert_int_equal(policy_bound_org_column(b), E_ORG);

	/* DROP TABLE events; ALTER TABLE tmp RENAME TO events; ALTER TABLE events RENAME TO gone;
	 * CREATE TABLE events (org_id first). */
	relation tmp = {.oid = 200, .schema = "public", .name = "tmp", .ncols = 1, .cols = cols,
	                .replident = 'd'};
	assert_int_equal(relcache_put(rc, &tmp, NULL), 0);
	tmp.name = "events";
	assert_int_equal(relcache_put(rc, &tmp, NULL), 0);
	tmp.name = "gone";
	assert_int_equal(relcache_put(rc, &tmp, NULL), 0);
	events.oid = 300;
	events.cols = swapped;
	assert_int_equal(relcache_put(rc, &events, &fresh), 0);
	assert_int_equal(fresh->version, at_x.version); /* the version alone cannot tell them apart */
	at_x = *fresh;

	assert_int_equal(policy_cache_get(c, &at_x, &b, err), 0);
	assert_int_equal(policy_bound_org_column(b), 0);
	assert_int_equal(policy_bound_context_column(b, E_BODY), E_ORG);
	policy_cache_destroy(c);
	relcache_destroy(rc);
	policy_destroy(p);
}

/* ---- values -------------------------------------------------------------------------------- */

static void check_mask(const char *in, const char *want)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "<"), 0);
	assert_int_equal(policy_mask_last4(&b, in, strlen(in)), 0);
	assert_int_equal(buf_puts(&b, ">"), 0);
	char expect[256];
	snprintf(expect, sizeof(expect), "<%s>", want);
	assert_string_equal(b.data, expect);
	buf_fini(&b);
}

static void test_mask_last4(void **state)
{
	/* The same vectors as tests/integration/policy_views.sh checks walcast.mask_last4() with. */
	check_mask("", "");
	check_mask("abcd", "abcd");
	check_mask("abcde", "*bcde");
	check_mask("+15559990001", "********0001");
	check_mask("h\xc3\xa9llo w\xc3\xb6rld", "*******\xc3\xb6rld");           /* héllo wörld */
	check_mask("\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e",
	           "*\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e\xf0\x9f\x93\x9e"); /* 5 x U+1F4DE */
	check_mask("\xc3\xb1\xc3\xa9", "\xc3\xb1\xc3\xa9");                          /* ñé */
	check_mask("t\xc3\xa9l \xe2\x98\x8e 0612", "******0612");                    /* tél ☎ 0612 */
	check_mask("42", "42");
}

static void test_uuid_canonical(void **state)
{
	char out[POLICY_UUID_TEXT_LEN + 1];
	static const char *const ok[] = {
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11",
		"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(policy_uuid_canonical(ok[i], strlen(ok[i]), out), 0);
		assert_string_equal(out, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
	}
	static const char *const bad[] = {
		"", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (policy_uuid_canonical(bad[i], strlen(bad[i]), out) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
}

/* ---- speed ------------------------------------------------------------------------------------ */

static int bench_subject_rank(void *arg, const char *subject, size_t len)
{
	return (subject[len - 1] & 7) == 0 ? 4 : 0; /* one subject in eight has an admin rule */
}

/* A realistic lookup: an open-addressing hash table of subject uuid text -> rule rank, as the
 * module mirroring privacy_rules would keep. */
#define BENCH_SLOTS 1024
typedef struct bench_rules {
	char key[BENCH_SLOTS][37];
	int rank[BENCH_SLOTS];
} bench_rules;

static uint32_t fnv1a(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

static void bench_rules_put(bench_rules *r, const char *key, int rank)
{
	uint32_t i = fnv1a(key, 36) & (BENCH_SLOTS - 1);
	while (r->key[i][0] != '\0')
		i = (i + 1) & (BENCH_SLOTS - 1);
	memcpy(r->key[i], key, 37);
	r->rank[i] = rank;
}

static int bench_hash_subject_rank(void *arg, const char *subject, size_t len)
{
	const bench_rules *r = arg;
	uint32_t i = fnv1a(subject, len) & (BENCH_SLOTS - 1);
	while (r->key[i][0] != '\0') {
		if (memcmp(r->key[i], subject, len) == 0 && r->key[i][len] == '\0')
			return r->rank[i];
		i = (i + 1) & (BENCH_SLOTS - 1);
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_bench(void **state)
{
	if (getenv("WALCAST_POLICY_BENCH") == NULL)
		skip();
	policy *p = load_platform();
	test_rel r;
	mkrel(&r, "public", "events", EVENT_COLS, E_NCOLS);
	policy_bound *b = bind_ok(p, &r.rel);
	enum { NROWS = 64, NVIEWERS = 16 };
	static char ids[NROWS][3][40];
	change_value rows[NROWS][E_NCOLS];
	for (int i = 0; i < NROWS; i++) {
		snprintf(ids[i][0], 40, "00000000-0000-4000-8000-%012d", i);
		snprintf(ids[i][1], 40, "00000000-0000-4000-8000-%012d", 1000 + i % 8);
		snprintf(ids[i][2], 40, "00000000-0000-4000-8000-%012d", 2000 + i % 16);
		event_row(rows[i], ids[i][0], ID("0a0"), i % 5 ? ids[i][1] : NULL, i % 3 ? ids[i][2] : NULL);
	}
	policy_viewer viewers[NVIEWERS];
	static char uids[NVIEWERS][40];
	for (int k = 0; k < NVIEWERS; k++) {
		snprintf(uids[k], 40, "00000000-0000-4000-8000-%012d", 2000 + k);
		viewers[k] = (policy_viewer){.rank = 1 + k % 5, .uid = uids[k], .uid_len = 36,
		                             .subject_rank = bench_subject_rank};
	}
	long n = 0, seen = 0;
	double t0 = now_s(), t1;
	do {
		for (int rep = 0; rep < 1000; rep++)
			for (int i = 0; i < NROWS; i++) {
				bool vis;
				if (policy_row_visible(b, rows[i], &viewers[(i + rep) % NVIEWERS], &vis) != 0)
					fail();
				seen += vis;
				n++;
			}
		t1 = now_s();
	} while (t1 - t0 < 1.0);
	printf("policy bench: events read rule, trivial subject_rank: %.1fM decisions/s "
	       "(%ld decisions, %ld visible)\n", n / (t1 - t0) / 1e6, n, seen);
	static bench_rules rules;
	for (int i = 0; i < 300; i++) {
		char key[40];
		snprintf(key, sizeof(key), "00000000-0000-4000-8000-%012d", 1000 + i);
		bench_rules_put(&rules, key, 1 + i % 5);
	}
	for (int k = 0; k < NVIEWERS; k++) {
		viewers[k].subject_rank = bench_hash_subject_rank;
		viewers[k].subject_arg = &rules;
	}
	n = seen = 0;
	t0 = now_s();
	do {
		for (int rep = 0; rep < 1000; rep++)
			for (int i = 0; i < NROWS; i++) {
				bool vis;
				if (policy_row_visible(b, rows[i], &viewers[(i + rep) % NVIEWERS], &vis) != 0)
					fail();
				seen += vis;
				n++;
			}
		t1 = now_s();
	} while (t1 - t0 < 1.0);
	printf("policy bench: events read rule, hash-table subject_rank: %.1fM decisions/s "
	       "(%ld decisions, %ld visible)\n", n / (t1 - t0) / 1e6, n, seen);
	policy_action act[E_NCOLS];
	n = 0;
	t0 = now_s();
	do {
		for (int rep = 0; rep < 1000; rep++)
			for (int i = 0; i < NROWS; i++) {
				if (policy_row_columns(b, rows[i], &viewers[(i + rep) % NVIEWERS], act) != 0)
					fail();
				n++;
			}
		t1 = now_s();
	} while (t1 - t0 < 1.0);
	printf("policy bench: events column actions: %.1fM rows/s\n", n / (t1 - t0) / 1e6);
	policy_bound_destroy(b);
	policy_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_platform_file),
		cmocka_unit_test(test_member_roles),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_file_syntax),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_error_limits),
		cmocka_unit_test(test_three_valued_logic),
		cmocka_unit_test(test_program_check),
		cmocka_unit_test(test_atoms_and_nulls),
		cmocka_unit_test(test_visibility_nulls),
		cmocka_unit_test(test_rls_oracle_rows),
		cmocka_unit_test(test_column_actions),
		cmocka_unit_test(test_mask_null_rule),
		cmocka_unit_test(test_bind),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_cache_recreated_relation),
		cmocka_unit_test(test_mask_last4),
		cmocka_unit_test(test_uuid_canonical),
		cmocka_unit_test(test_bench),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
