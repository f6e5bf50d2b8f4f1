/*
 * policy — parses the policy file, compiles its rules into postfix programs, binds tables to
 * relations and evaluates rows (see policy.h for the contract, docs/policies.md for the file).
 *
 * Loading has two phases. libinih splits the file into sections and `key = value` entries; a
 * line reader of ours hands it the lines, which lets us count lines, refuse over-long lines,
 * notice section headers (so that an empty or repeated section is reported), and join indented
 * continuation lines into one value while remembering where each source line starts (so that an
 * error inside a long rule names the right line). The second phase validates the sections and
 * compiles every rule with a small recursive-descent parser that emits postfix code directly:
 *
 *   rule    := and_r { "or" and_r }
 *   and_r   := not_r { "and" not_r }
 *   not_r   := "not" not_r | primary
 *   primary := "(" rule ")" | "true" | "false" | RANK | "privacy" "(" COLUMN ")"
 *            | COLUMN "=" "uid" | "uid" "=" COLUMN
 *
 * Everything a policy owns lives in one arena, freed at once by policy_destroy().
 */
#include "policy.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arena.h"
#include "uuid.h"

#define POLICY_FILE_MAX (1u << 20) /* a policy file is a few kilobytes; refuse anything huge */
#define POLICY_CONDS_MAX 32        /* distinct mask / decrypt conditions per table */
#define IDENT_MAX 63               /* PostgreSQL's NAMEDATALEN - 1 */

/* ---- the compiled policy ---------------------------------------------------------------- */

struct policy_table {
	char *schema, *name, *view;
	int line; /* of its [table] header */
	size_t ncols;
	char **cols;
	size_t org;
	policy_insn *read;
	size_t read_len;
	policy_column_rule *rules; /* ncols */
	size_t nconds;
};

struct policy {
	arena *mem;
	int nranks;
	char **ranks; /* ranks[1..nranks]; ranks[0] unused */
	size_t nbypass;
	char **bypass;
	size_t nmembers;
	char **members; /* token roles judged through the membership table */
	policy_membership membership;
	policy_privacy privacy;
	bool has_privacy;
	size_t ntables;
	policy_table *tables;
};

/* Words of the rule language; no role may be called like one. */
static const char *const reserved_words[] = {"and", "or", "not", "true", "false", "uid",
                                             "privacy", "unless", "last4", "null"};

static bool is_reserved(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(reserved_words) / sizeof(reserved_words[0]); i++)
		if (strlen(reserved_words[i]) == len && memcmp(reserved_words[i], s, len) == 0)
			return true;
	return false;
}

/* A lower-case unquoted SQL identifier: [a-z_][a-z0-9_$]*, at most 63 bytes. */
static bool ident_ok(const char *s, size_t len)
{
	if (len == 0 || len > IDENT_MAX)
		return false;
	if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$'))
			return false;
	}
	return true;
}

static bool eq(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* ---- phase 1: lines, sections and entries (libinih) ---------------------------------------- */

/* Where a source line starts inside an entry's (joined) value. */
typedef struct seg {
	size_t off;
	int line;
	struct seg *next;
} seg;

typedef struct entry {
	int section_line; /* line of its [header]; 0 = before any header */
	const char *key;
	char *value;
	size_t len;
	int line;
	seg *segs, *last_seg;
} entry;

typedef struct header {
	char *name;
	int line;
} header;

typedef struct loader {
	const char *name; /* the file name in messages */
	const char *text;
	size_t len, pos;
	int line;          /* lines handed to libinih so far */
	bool indented;     /* the line just handed over starts with a blank */
	int header_line;   /* line of the latest [header] */
	arena *tmp;
	entry *entries;
	size_t nentries, centries;
	header *headers;
	size_t nheaders, cheaders;
	int rc; /* first error: -EINVAL or -ENOMEM */
	int err_line;
	char reason[POLICY_ERROR_MAX];
} loader;

__attribute__((format(printf, 3, 4))) static int failf(loader *ld, int line, const char *fmt, ...)
{
	if (ld->rc != 0)
		return ld->rc;
	ld->rc = -EINVAL;
	ld->err_line = line;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ld->reason, sizeof(ld->reason), fmt, ap);
	va_end(ap);
	return ld->rc;
}

static int oom(loader *ld)
{
	if (ld->rc == 0) {
		ld->rc = -ENOMEM;
		snprintf(ld->reason, sizeof(ld->reason), "out of memory");
	}
	return ld->rc;
}

static int grow(loader *ld, void **arr, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 16;
	void *na = realloc(*arr, ncap * size);
	if (na == NULL)
		return oom(ld);
	*arr = na;
	*cap = ncap;
	return 0;
}

/* libinih's fgets: hands over exactly one line per call, so that its line numbers and ours
 * agree. Stops the parse (returns NULL) at the first line it refuses. */
static char *reader_cb(char *str, int num, void *stream)
{
	loader *ld = stream;
	if (ld->rc != 0 || ld->pos >= ld->len)
		return NULL;
	const char *p = ld->text + ld->pos;
	size_t rest = ld->len - ld->pos;
	const char *nl = memchr(p, '\n', rest);
	size_t n = nl != NULL ? (size_t)(nl - p) + 1 : rest;
	ld->line++;
	if (memchr(p, '\0', n) != NULL) {
		failf(ld, ld->line, "NUL byte in the file");
		return NULL;
	}
	if (n + 2 > (size_t)num) { /* libinih needs room for "\r\n\0" */
		failf(ld, ld->line, "line too long (at most %d characters); continue a long value on "
		                    "indented lines", num - 3);
		return NULL;
	}
	memcpy(str, p, n);
	str[n] = '\0';
	ld->pos += n;
	ld->indented = n > 0 && (p[0] == ' ' || p[0] == '\t');
	size_t i = 0;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < n && p[i] == '[') {
		if (ld->indented) {
			failf(ld, ld->line, "a [section] header must start at the beginning of its line");
			return NULL;
		}
		size_t end = i + 1;
		while (end < n && p[end] != ']' && p[end] != '\n')
			end++;
		if (grow(ld, (void **)&ld->headers, &ld->cheaders, ld->nheaders, sizeof(header)) < 0)
			return NULL;
		char *name = arena_strndup(ld->tmp, p + i + 1, end - i - 1);
		if (name == NULL) {
			oom(ld);
			return NULL;
		}
		ld->headers[ld->nheaders++] = (header){.name = name, .line = ld->line};
		ld->header_line = ld->line;
	}
	return str;
}

static seg *seg_new(loader *ld, size_t off, int line)
{
	seg *s = arena_alloc(ld->tmp, sizeof(*s));
	if (s == NULL)
		return NULL;
	*s = (seg){.off = off, .line = line};
	return s;
}

/* Length of value without an inline comment (a ';' after a blank) and trailing blanks.
 * libinih strips those from a first line but not from a continuation line. */
static size_t value_len(const char *value)
{
	size_t n = strlen(value);
	for (size_t i = 1; i < n; i++) {
		if (value[i] == ';' && (value[i - 1] == ' ' || value[i - 1] == '\t')) {
			n = i;
			break;
		}
	}
	while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t' || value[n - 1] == '\r'))
		n--;
	return n;
}

/* Collects entries; an indented line that libinih reports under the previous key of the same
 * section is a continuation and is joined to that value with one space. */
static int handler_cb(void *user, const char *section, const char *name, const char *value)
{
	loader *ld = user;
	if (ld->rc != 0)
		return 1;
	size_t vlen = value_len(value);
	if (ld->indented && ld->nentries > 0) {
		entry *last = &ld->entries[ld->nentries - 1];
		if (last->section_line == ld->header_line && strcmp(last->key, name) == 0) {
			char *joined = arena_alloc(ld->tmp, last->len + 1 + vlen + 1);
			seg *s = seg_new(ld, last->len + 1, ld->line);
			if (joined == NULL || s == NULL)
				return oom(ld), 1;
			memcpy(joined, last->value, last->len);
			joined[last->len] = ' ';
			memcpy(joined + last->len + 1, value, vlen);
			joined[last->len + 1 + vlen] = '\0';
			last->value = joined;
			last->len += 1 + vlen;
			last->last_seg->next = s;
			last->last_seg = s;
			return 1;
		}
	}
	if (grow(ld, (void **)&ld->entries, &ld->centries, ld->nentries, sizeof(entry)) < 0)
		return 1;
	entry *e = &ld->entries[ld->nentries];
	*e = (entry){
		.section_line = ld->header_line,
		.key = arena_strndup(ld->tmp, name, strlen(name)),
		.value = arena_strndup(ld->tmp, value, vlen),
		.len = vlen,
		.line = ld->line,
		.segs = seg_new(ld, 0, ld->line),
	};
	if (e->key == NULL || e->value == NULL || e->segs == NULL)
		return oom(ld), 1;
	e->last_seg = e->segs;
	ld->nentries++;
	return 1;
}

/* The source line of byte off of an entry's value. */
static int line_at(const entry *e, size_t off)
{
	int line = e->line;
	for (const seg *s = e->segs; s != NULL && s->off <= off; s = s->next)
		line = s->line;
	return line;
}

/* ---- phase 2: sections -------------------------------------------------------------------- */

typedef enum sec_kind { SEC_ROLES, SEC_MEMBERSHIP, SEC_PRIVACY, SEC_TABLE } sec_kind;

typedef struct section {
	sec_kind kind;
	const char *title; /* the header text, trimmed */
	int line;
	entry *e; /* its entries, contiguous */
	size_t n;
	char *schema, *table; /* SEC_TABLE */
} section;

/* Splits s[0..len) on blanks into at most max words; returns the number of words (max + 1 when
 * there are more). */
static size_t split_words(const char *s, size_t len, const char **w, size_t *wl, size_t max)
{
	size_t n = 0, i = 0;
	while (i < len) {
		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
			i++;
		if (i == len)
			break;
		size_t st = i;
		while (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			i++;
		if (n == max)
			return max + 1;
		w[n] = s + st;
		wl[n] = i - st;
		n++;
	}
	return n;
}

/* Parses "schema.name" or "name" (schema public) into arena copies. */
static int qualified_name(loader *ld, arena *a, int line, const char *what, const char *s,
                          size_t len, char **schema, char **name)
{
	const char *dot = memchr(s, '.', len);
	const char *sc = "public", *nm = s;
	size_t sclen = 6, nmlen = len;
	if (dot != NULL) {
		sc = s;
		sclen = (size_t)(dot - s);
		nm = dot + 1;
		nmlen = len - sclen - 1;
	}
	if (!ident_ok(sc, sclen) || !ident_ok(nm, nmlen))
		return failf(ld, line, "%s: '%.*s' is not a table name (schema.name, lower-case letters, "
		                       "digits and _)", what, (int)len, s);
	*schema = arena_strndup(a, sc, sclen);
	*name = arena_strndup(a, nm, nmlen);
	if (*schema == NULL || *name == NULL)
		return oom(ld);
	return 0;
}

/* Splits a comma-separated list of identifiers into an arena array. */
static int ident_list(loader *ld, arena *a, const entry *e, const char *what, char ***out,
                      size_t *count)
{
	size_t n = 1;
	for (size_t i = 0; i < e->len; i++)
		n += e->value[i] == ',';
	char **items = arena_alloc(a, n * sizeof(*items));
	if (items == NULL)
		return oom(ld);
	size_t k = 0, st = 0;
	for (size_t i = 0; i <= e->len; i++) {
		if (i < e->len && e->value[i] != ',')
			continue;
		size_t b = st, en = i;
		while (b < en && (e->value[b] == ' ' || e->value[b] == '\t'))
			b++;
		while (en > b && (e->value[en - 1] == ' ' || e->value[en - 1] == '\t'))
			en--;
		if (b == en)
			return failf(ld, line_at(e, st), "%s: empty item in the list", what);
		if (!ident_ok(e->value + b, en - b))
			return failf(ld, line_at(e, b), "%s: '%.*s' is not a valid name (lower-case letters, "
			                                "digits and _, at most %d characters)",
			             what, (int)(en - b), e->value + b, IDENT_MAX);
		for (size_t j = 0; j < k; j++)
			if (eq(e->value + b, en - b, items[j]))
				return failf(ld, line_at(e, b), "%s: '%s' is listed twice", what, items[j]);
		items[k] = arena_strndup(a, e->value + b, en - b);
		if (items[k] == NULL)
			return oom(ld);
		k++;
		st = i + 1;
	}
	*out = items;
	*count = k;
	return 0;
}

/* One identifier as a whole value. */
static int ident_value(loader *ld, arena *a, const entry *e, const char *what, char **out)
{
	const char *w[1];
	size_t wl[1];
	size_t n = split_words(e->value, e->len, w, wl, 1);
	if (n != 1 || !ident_ok(w[0], wl[0]))
		return failf(ld, e->line, "%s: expected one column name, found '%s'", what, e->value);
	*out = arena_strndup(a, w[0], wl[0]);
	return *out == NULL ? oom(ld) : 0;
}

/* Checks that a simple section's keys are among `allowed` and appear once. */
static int simple_keys(loader *ld, const section *s, const char *const *allowed, size_t nallowed)
{
	for (size_t i = 0; i < s->n; i++) {
		bool known = false;
		for (size_t j = 0; j < nallowed; j++)
			known |= strcmp(s->e[i].key, allowed[j]) == 0;
		if (!known)
			return failf(ld, s->e[i].line, "[%s]: unknown key '%s'", s->title, s->e[i].key);
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->e[j].key, s->e[i].key) == 0)
				return failf(ld, s->e[i].line, "[%s]: duplicate key '%s' (first at line %d)",
				             s->title, s->e[i].key, s->e[j].line);
	}
	return 0;
}

static const entry *find_key(const section *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->e[i].key, key) == 0)
			return &s->e[i];
	return NULL;
}

static int require_key(loader *ld, const section *s, const char *key, const entry **out)
{
	*out = find_key(s, key);
	if (*out == NULL)
		return failf(ld, s->line, "[%s]: missing key '%s'", s->title, key);
	return 0;
}

/* ---- phase 2: rules ------------------------------------------------------------------------ */

enum { T_END, T_WORD, T_LP, T_RP, T_EQ };

typedef struct tok {
	int kind;
	size_t off, len;
} tok;

typedef struct parser {
	loader *ld;
	const entry *e;
	const char *what; /* "table public.events: read" */
	const policy *p;
	char **cols;
	size_t ncols;
	size_t pos;
	tok cur;
	int depth;
	policy_insn code[POLICY_PROGRAM_MAX];
	size_t n;
} parser;

__attribute__((format(printf, 3, 4))) static int perr(parser *ps, size_t off, const char *fmt, ...)
{
	char msg[POLICY_ERROR_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return failf(ps->ld, line_at(ps->e, off), "%s: %s", ps->what, msg);
}

/* A printable rendering of the current token for messages. */
static void tok_show(const parser *ps, char out[64])
{
	if (ps->cur.kind == T_END)
		snprintf(out, 64, "the end of the rule");
	else
		snprintf(out, 64, "'%.*s'", (int)(ps->cur.len > 40 ? 40 : ps->cur.len),
		         ps->e->value + ps->cur.off);
}

static int lex(parser *ps)
{
	const char *s = ps->e->value;
	size_t i = ps->pos, n = ps->e->len;
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
		i++;
	ps->cur = (tok){.kind = T_END, .off = i, .len = 0};
	if (i < n) {
		char c = s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
			size_t st = i;
			while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			                 (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '$'))
				i++;
			ps->cur = (tok){.kind = T_WORD, .off = st, .len = i - st};
		} else if (c == '(' || c == ')' || c == '=') {
			ps->cur = (tok){.kind = c == '(' ? T_LP : c == ')' ? T_RP : T_EQ, .off = i, .len = 1};
			i++;
		} else if ((unsigned char)c >= 0x21 && (unsigned char)c < 0x7f) {
			return perr(ps, i, "unexpected character '%c'", c);
		} else {
			return perr(ps, i, "unexpected byte 0x%02x", (unsigned char)c);
		}
	}
	ps->pos = i;
	return 0;
}

static bool word_is(const parser *ps, const char *w)
{
	return ps->cur.kind == T_WORD && eq(ps->e->value + ps->cur.off, ps->cur.len, w);
}

static int emit(parser *ps, policy_opcode op, unsigned arg)
{
	if (ps->n == POLICY_PROGRAM_MAX)
		return perr(ps, ps->cur.off, "rule too long (at most %d operations)", POLICY_PROGRAM_MAX);
	ps->code[ps->n++] = (policy_insn){.op = (uint16_t)op, .arg = (uint16_t)arg};
	return 0;
}

static int column_of(parser *ps, const tok *t, size_t *slot)
{
	const char *w = ps->e->value + t->off;
	for (size_t i = 0; i < ps->ncols; i++) {
		if (eq(w, t->len, ps->cols[i])) {
			*slot = i;
			return 0;
		}
	}
	return perr(ps, t->off, "unknown column '%.*s' (not in this table's columns)", (int)t->len, w);
}

static int expect(parser *ps, int kind, const char *what)
{
	if (ps->cur.kind == kind)
		return 0;
	char shown[64];
	tok_show(ps, shown);
	return perr(ps, ps->cur.off, "expected %s, found %s", what, shown);
}

static int parse_or(parser *ps);

static int parse_primary(parser *ps)
{
	char shown[64];
	if (ps->cur.kind == T_LP) {
		int rc;
		if ((rc = lex(ps)) < 0 || (rc = parse_or(ps)) < 0 || (rc = expect(ps, T_RP, "')'")) < 0)
			return rc;
		return lex(ps);
	}
	if (ps->cur.kind != T_WORD) {
		tok_show(ps, shown);
		return perr(ps, ps->cur.off, "expected a rule, found %s", shown);
	}
	tok w = ps->cur;
	const char *ws = ps->e->value + w.off;
	int rc;
	if (word_is(ps, "true") || word_is(ps, "false")) {
		if ((rc = emit(ps, word_is(ps, "true") ? POLICY_OP_TRUE : POLICY_OP_FALSE, 0)) < 0)
			return rc;
		return lex(ps);
	}
	if (word_is(ps, "privacy")) {
		if (!ps->p->has_privacy)
			return perr(ps, w.off, "privacy() needs a [privacy] section");
		size_t slot = 0;
		if ((rc = lex(ps)) < 0 || (rc = expect(ps, T_LP, "'(' after privacy")) < 0 ||
		    (rc = lex(ps)) < 0 || (rc = expect(ps, T_WORD, "a column name")) < 0 ||
		    (rc = column_of(ps, &ps->cur, &slot)) < 0 || (rc = lex(ps)) < 0 ||
		    (rc = expect(ps, T_RP, "')' after the column")) < 0 ||
		    (rc = emit(ps, POLICY_OP_PRIVACY, (unsigned)slot)) < 0)
			return rc;
		return lex(ps);
	}
	if (word_is(ps, "uid")) {
		size_t slot = 0;
		if ((rc = lex(ps)) < 0 || (rc = expect(ps, T_EQ, "'=' after uid (uid = column)")) < 0 ||
		    (rc = lex(ps)) < 0 || (rc = expect(ps, T_WORD, "a column name after 'uid ='")) < 0 ||
		    (rc = column_of(ps, &ps->cur, &slot)) < 0 ||
		    (rc = emit(ps, POLICY_OP_EQ_UID, (unsigned)slot)) < 0)
			return rc;
		return lex(ps);
	}
	if (is_reserved(ws, w.len)) {
		tok_show(ps, shown);
		return perr(ps, w.off, "expected a rule, found %s", shown);
	}
	/* COLUMN = uid: look one token ahead. */
	size_t save_pos = ps->pos;
	if ((rc = lex(ps)) < 0)
		return rc;
	if (ps->cur.kind == T_EQ) {
		size_t slot = 0;
		if ((rc = column_of(ps, &w, &slot)) < 0 || (rc = lex(ps)) < 0)
			return rc;
		if (!word_is(ps, "uid")) {
			tok_show(ps, shown);
			return perr(ps, ps->cur.off, "a column can only be compared with uid ('%.*s = uid'), "
			                             "found %s", (int)w.len, ws, shown);
		}
		if ((rc = emit(ps, POLICY_OP_EQ_UID, (unsigned)slot)) < 0)
			return rc;
		return lex(ps);
	}
	ps->pos = save_pos;
	ps->cur = w;
	int rank = policy_role_rank(ps->p, ws, w.len);
	if (rank > 0) {
		if ((rc = emit(ps, POLICY_OP_RANK_GE, (unsigned)rank)) < 0)
			return rc;
		return lex(ps);
	}
	for (size_t i = 0; i < ps->ncols; i++)
		if (eq(ws, w.len, ps->cols[i]))
			return perr(ps, w.off, "column '%.*s' can only be compared with uid ('%.*s = uid')",
			            (int)w.len, ws, (int)w.len, ws);
	char roles[256] = "";
	size_t rl = 0;
	for (int r = 1; r <= ps->p->nranks && rl < sizeof(roles); r++)
		rl += (size_t)snprintf(roles + rl, sizeof(roles) - rl, "%s%s", r > 1 ? ", " : "",
		                       ps->p->ranks[r]);
	return perr(ps, w.off, "unknown role '%.*s' (roles: %s)", (int)w.len, ws, roles);
}

static int parse_not(parser *ps)
{
	int rc;
	if (++ps->depth > POLICY_STACK_MAX - 2)
		return perr(ps, ps->cur.off, "rule nested too deeply (at most %d levels)",
		            POLICY_STACK_MAX - 2);
	if (word_is(ps, "not")) {
		if ((rc = lex(ps)) < 0 || (rc = parse_not(ps)) < 0 || (rc = emit(ps, POLICY_OP_NOT, 0)) < 0)
			return rc;
	} else if ((rc = parse_primary(ps)) < 0) {
		return rc;
	}
	ps->depth--;
	return 0;
}

static int parse_and(parser *ps)
{
	int rc = parse_not(ps);
	while (rc == 0 && word_is(ps, "and")) {
		if ((rc = lex(ps)) < 0 || (rc = parse_not(ps)) < 0)
			break;
		rc = emit(ps, POLICY_OP_AND, 0);
	}
	return rc;
}

static int parse_or(parser *ps)
{
	int rc = parse_and(ps);
	while (rc == 0 && word_is(ps, "or")) {
		if ((rc = lex(ps)) < 0 || (rc = parse_and(ps)) < 0)
			break;
		rc = emit(ps, POLICY_OP_OR, 0);
	}
	return rc;
}

/* Parses a whole rule from the current token to the end of the value. */
static int parse_rule(parser *ps)
{
	int rc = parse_or(ps);
	if (rc < 0)
		return rc;
	if (ps->cur.kind != T_END) {
		char shown[64];
		tok_show(ps, shown);
		return perr(ps, ps->cur.off, "unexpected %s after the rule (missing 'and' or 'or'?)", shown);
	}
	if (policy_program_check(ps->code, ps->n, ps->ncols, ps->p->nranks) < 0)
		return perr(ps, 0, "rule nested too deeply");
	return 0;
}

static void parser_init(parser *ps, loader *ld, const policy *p, const entry *e, const char *what,
                        char **cols, size_t ncols)
{
	memset(ps, 0, sizeof(*ps));
	ps->ld = ld;
	ps->p = p;
	ps->e = e;
	ps->what = what;
	ps->cols = cols;
	ps->ncols = ncols;
}

static policy_insn *code_copy(arena *a, const parser *ps)
{
	policy_insn *c = arena_alloc(a, ps->n * sizeof(*c));
	if (c != NULL)
		memcpy(c, ps->code, ps->n * sizeof(*c));
	return c;
}

/* ---- phase 2: compiling sections ----------------------------------------------------------- */

static int compile_roles(loader *ld, policy *p, const section *s)
{
	static const char *const keys[] = {"ranks", "bypass", "members"};
	static char *default_members[] = {"authenticated"};
	const entry *e;
	int rc;
	if ((rc = simple_keys(ld, s, keys, 3)) < 0 || (rc = require_key(ld, s, "ranks", &e)) < 0)
		return rc;
	char **items;
	size_t n;
	if ((rc = ident_list(ld, p->mem, e, "[roles] ranks", &items, &n)) < 0)
		return rc;
	if (n > POLICY_RANKS_MAX)
		return failf(ld, e->line, "[roles] ranks: at most %d roles", POLICY_RANKS_MAX);
	for (size_t i = 0; i < n; i++)
		if (is_reserved(items[i], strlen(items[i])))
			return failf(ld, e->line, "[roles] ranks: '%s' is a word of the rule language and "
			                          "cannot name a role", items[i]);
	p->ranks = arena_alloc(p->mem, (n + 1) * sizeof(*p->ranks));
	if (p->ranks == NULL)
		return oom(ld);
	p->ranks[0] = NULL;
	memcpy(p->ranks + 1, items, n * sizeof(*items));
	p->nranks = (int)n;
	e = find_key(s, "bypass");
	if (e != NULL) {
		if ((rc = ident_list(ld, p->mem, e, "[roles] bypass", &p->bypass, &p->nbypass)) < 0)
			return rc;
		for (size_t i = 0; i < p->nbypass; i++)
			if (policy_role_rank(p, p->bypass[i], strlen(p->bypass[i])) > 0)
				return failf(ld, e->line, "[roles] bypass: '%s' is also a ranked role",
				             p->bypass[i]);
	}
	/* Token roles whose sub is judged through [membership]; any role neither here nor in
	 * bypass sees nothing. Default: Supabase's authenticated. */
	p->members = default_members;
	p->nmembers = 1;
	e = find_key(s, "members");
	if (e != NULL) {
		if ((rc = ident_list(ld, p->mem, e, "[roles] members", &p->members, &p->nmembers)) < 0)
			return rc;
		for (size_t i = 0; i < p->nmembers; i++)
			if (policy_role_bypasses(p, p->members[i], strlen(p->members[i])))
				return failf(ld, e->line, "[roles] members: '%s' is also a bypass role",
				             p->members[i]);
	}
	return 0;
}

static int compile_membership(loader *ld, policy *p, const section *s)
{
	static const char *const keys[] = {"table", "org", "user", "role"};
	const entry *t, *o, *u, *r;
	char *schema, *name, *org, *user, *role;
	int rc;
	if ((rc = simple_keys(ld, s, keys, 4)) < 0 || (rc = require_key(ld, s, "table", &t)) < 0 ||
	    (rc = require_key(ld, s, "org", &o)) < 0 || (rc = require_key(ld, s, "user", &u)) < 0 ||
	    (rc = require_key(ld, s, "role", &r)) < 0 ||
	    (rc = qualified_name(ld, p->mem, t->line, "[membership] table", t->value, t->len, &schema,
	                         &name)) < 0 ||
	    (rc = ident_value(ld, p->mem, o, "[membership] org", &org)) < 0 ||
	    (rc = ident_value(ld, p->mem, u, "[membership] user", &user)) < 0 ||
	    (rc = ident_value(ld, p->mem, r, "[membership] role", &role)) < 0)
		return rc;
	p->membership = (policy_membership){schema, name, org, user, role};
	return 0;
}

static int compile_privacy(loader *ld, policy *p, const section *s)
{
	static const char *const keys[] = {"table", "subject", "min_role"};
	const entry *t, *sub, *m;
	char *schema, *name, *subject, *min_role;
	int rc;
	if ((rc = simple_keys(ld, s, keys, 3)) < 0 || (rc = require_key(ld, s, "table", &t)) < 0 ||
	    (rc = require_key(ld, s, "subject", &sub)) < 0 ||
	    (rc = require_key(ld, s, "min_role", &m)) < 0 ||
	    (rc = qualified_name(ld, p->mem, t->line, "[privacy] table", t->value, t->len, &schema,
	                         &name)) < 0 ||
	    (rc = ident_value(ld, p->mem, sub, "[privacy] subject", &subject)) < 0 ||
	    (rc = ident_value(ld, p->mem, m, "[privacy] min_role", &min_role)) < 0)
		return rc;
	p->privacy = (policy_privacy){schema, name, subject, min_role};
	p->has_privacy = true;
	return 0;
}

static bool code_equal(const policy_insn *a, size_t an, const policy_insn *b, size_t bn)
{
	return an == bn && memcmp(a, b, an * sizeof(*a)) == 0;
}

/* Records cond (the parser's code) as the condition of rule r, sharing an identical earlier
 * condition of the same table. */
static int rule_set_cond(loader *ld, policy *p, policy_table *t, policy_column_rule *r,
                         const parser *ps, int line)
{
	for (size_t i = 0; i < t->ncols; i++) {
		const policy_column_rule *o = &t->rules[i];
		if (o->cond != NULL && code_equal(o->cond, o->cond_len, ps->code, ps->n)) {
			r->cond = o->cond;
			r->cond_len = o->cond_len;
			r->cond_id = o->cond_id;
			return 0;
		}
	}
	if (t->nconds == POLICY_CONDS_MAX)
		return failf(ld, line, "table %s.%s: at most %d distinct mask conditions", t->schema,
		             t->name, POLICY_CONDS_MAX);
	r->cond = code_copy(p->mem, ps);
	if (r->cond == NULL)
		return oom(ld);
	r->cond_len = ps->n;
	r->cond_id = (int)t->nconds++;
	return 0;
}

static int table_column(loader *ld, const policy_table *t, int line, const char *what,
                        const char *name, size_t len, size_t *slot)
{
	for (size_t i = 0; i < t->ncols; i++) {
		if (eq(name, len, t->cols[i])) {
			*slot = i;
			return 0;
		}
	}
	return failf(ld, line, "table %s.%s: %s: unknown column '%.*s' (not in this table's columns)",
	             t->schema, t->name, what, (int)len, name);
}

static int compile_table(loader *ld, policy *p, const section *s, policy_table *t)
{
	int rc;
	char what[160];
	t->schema = s->schema;
	t->name = s->table;
	t->line = s->line;
	t->org = SIZE_MAX;
	const entry *cols = NULL;
	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->e[i].key, "columns") == 0) {
			if (cols != NULL)
				return failf(ld, s->e[i].line, "[%s]: duplicate key 'columns' (first at line %d)",
				             s->title, cols->line);
			cols = &s->e[i];
		}
	}
	if (cols == NULL)
		return failf(ld, s->line, "[%s]: missing key 'columns' (the table's columns, in order)",
		             s->title);
	snprintf(what, sizeof(what), "table %s.%s: columns", t->schema, t->name);
	if ((rc = ident_list(ld, p->mem, cols, what, &t->cols, &t->ncols)) < 0)
		return rc;
	t->rules = arena_alloc(p->mem, t->ncols * sizeof(*t->rules));
	int *rule_line = arena_alloc(ld->tmp, t->ncols * sizeof(*rule_line));
	int *ctx_line = arena_alloc(ld->tmp, t->ncols * sizeof(*ctx_line));
	if (t->rules == NULL || rule_line == NULL || ctx_line == NULL)
		return oom(ld);
	for (size_t i = 0; i < t->ncols; i++) {
		t->rules[i] = (policy_column_rule){.kind = POLICY_RULE_PLAIN, .cond_id = -1, .context = -1};
		rule_line[i] = ctx_line[i] = 0;
	}
	const entry *org = NULL, *read = NULL;
	for (size_t i = 0; i < s->n; i++) {
		const entry *e = &s->e[i];
		const char *w[3];
		size_t wl[3];
		size_t nw = split_words(e->key, strlen(e->key), w, wl, 2);
		if (nw == 1 && eq(w[0], wl[0], "columns"))
			continue;
		if (nw == 1 && (eq(w[0], wl[0], "org") || eq(w[0], wl[0], "read"))) {
			const entry **slot = eq(w[0], wl[0], "org") ? &org : &read;
			if (*slot != NULL)
				return failf(ld, e->line, "[%s]: duplicate key '%s' (first at line %d)", s->title,
				             e->key, (*slot)->line);
			*slot = e;
			continue;
		}
		bool mask = nw == 2 && eq(w[0], wl[0], "mask");
		bool enc = nw == 2 && eq(w[0], wl[0], "encrypted");
		bool ctx = nw == 2 && eq(w[0], wl[0], "encrypted_context");
		if (!mask && !enc && !ctx)
			return failf(ld, e->line, "[%s]: unknown key '%s' (expected columns, org, read, "
			                          "mask COLUMN, encrypted COLUMN or encrypted_context COLUMN)",
			             s->title, e->key);
		size_t c = 0;
		snprintf(what, sizeof(what), "%.*s", (int)wl[0], w[0]);
		if ((rc = table_column(ld, t, e->line, what, w[1], wl[1], &c)) < 0)
			return rc;
		snprintf(what, sizeof(what), "table %s.%s: %s", t->schema, t->name, e->key);
		if (ctx) {
			if (ctx_line[c] != 0)
				return failf(ld, e->line, "%s: duplicate (first at line %d)", what, ctx_line[c]);
			char *name;
			size_t cc = 0;
			if ((rc = ident_value(ld, ld->tmp, e, what, &name)) < 0 ||
			    (rc = table_column(ld, t, e->line, e->key, name, strlen(name), &cc)) < 0)
				return rc;
			if (cc == c)
				return failf(ld, e->line, "%s: a column cannot be its own context", what);
			t->rules[c].context = (int)cc;
			ctx_line[c] = e->line;
			continue;
		}
		if (rule_line[c] != 0)
			return failf(ld, e->line, "%s: column '%s' already has a rule (line %d)", what,
			             t->cols[c], rule_line[c]);
		rule_line[c] = e->line;
		parser *ps = arena_alloc(ld->tmp, sizeof(*ps));
		if (ps == NULL)
			return oom(ld);
		parser_init(ps, ld, p, e, what, t->cols, t->ncols);
		if ((rc = lex(ps)) < 0)
			return rc;
		policy_rule_kind kind = POLICY_RULE_ENCRYPTED;
		if (mask) {
			if (word_is(ps, "last4"))
				kind = POLICY_RULE_MASK_LAST4;
			else if (word_is(ps, "null"))
				kind = POLICY_RULE_MASK_NULL;
			else
				return perr(ps, ps->cur.off, "expected 'last4 unless RULE' or 'null unless RULE'");
			if ((rc = lex(ps)) < 0)
				return rc;
			if (!word_is(ps, "unless"))
				return perr(ps, ps->cur.off, "expected 'unless RULE' after '%s'",
				            kind == POLICY_RULE_MASK_LAST4 ? "last4" : "null");
			if ((rc = lex(ps)) < 0)
				return rc;
		}
		if ((rc = parse_rule(ps)) < 0)
			return rc;
		t->rules[c].kind = kind;
		if ((rc = rule_set_cond(ld, p, t, &t->rules[c], ps, e->line)) < 0)
			return rc;
	}
	for (size_t c = 0; c < t->ncols; c++)
		if (ctx_line[c] != 0 && t->rules[c].kind != POLICY_RULE_ENCRYPTED)
			return failf(ld, ctx_line[c], "table %s.%s: encrypted_context %s: column '%s' is not "
			                              "encrypted (add 'encrypted %s = RULE')",
			             t->schema, t->name, t->cols[c], t->cols[c], t->cols[c]);
	if (org == NULL)
		return failf(ld, s->line, "[%s]: missing key 'org' (the column holding the row's org)",
		             s->title);
	if (read == NULL)
		return failf(ld, s->line, "[%s]: missing key 'read' (who sees a row)", s->title);
	snprintf(what, sizeof(what), "table %s.%s: org", t->schema, t->name);
	char *orgname;
	if ((rc = ident_value(ld, ld->tmp, org, what, &orgname)) < 0 ||
	    (rc = table_column(ld, t, org->line, "org", orgname, strlen(orgname), &t->org)) < 0)
		return rc;
	snprintf(what, sizeof(what), "table %s.%s: read", t->schema, t->name);
	parser *ps = arena_alloc(ld->tmp, sizeof(*ps));
	if (ps == NULL)
		return oom(ld);
	parser_init(ps, ld, p, read, what, t->cols, t->ncols);
	if ((rc = lex(ps)) < 0 || (rc = parse_rule(ps)) < 0)
		return rc;
	t->read = code_copy(p->mem, ps);
	if (t->read == NULL)
		return oom(ld);
	t->read_len = ps->n;
	/* The masking view: walcast.<table>_masked, or <schema>_<table>_masked outside public. */
	char view[128];
	if (strcmp(t->schema, "public") == 0)
		snprintf(view, sizeof(view), "%s_masked", t->name);
	else
		snprintf(view, sizeof(view), "%s_%s_masked", t->schema, t->name);
	if (strlen(view) > IDENT_MAX)
		return failf(ld, s->line, "table %s.%s: the view name %s is longer than %d characters",
		             t->schema, t->name, view, IDENT_MAX);
	t->view = arena_strndup(p->mem, view, strlen(view));
	return t->view == NULL ? oom(ld) : 0;
}

/* A source table's columns must be in its [table] section, when it has one. */
static int check_source_columns(loader *ld, const policy *p, const char *sec, const char *schema,
                                const char *table, const char *const *cols, size_t ncols,
                                int line)
{
	const policy_table *t = policy_table_find(p, schema, strlen(schema), table, strlen(table));
	if (t == NULL)
		return 0;
	for (size_t i = 0; i < ncols; i++) {
		bool found = false;
		for (size_t j = 0; j < t->ncols; j++)
			found |= strcmp(cols[i], t->cols[j]) == 0;
		if (!found)
			return failf(ld, line, "[%s]: column '%s' is not in the columns of [table %s.%s]", sec,
			             cols[i], schema, table);
	}
	return 0;
}

static int compile(loader *ld, policy *p)
{
	int rc;
	for (size_t i = 0; i < ld->nentries; i++)
		if (ld->entries[i].section_line == 0)
			return failf(ld, ld->entries[i].line, "key '%s' is outside any [section]",
			             ld->entries[i].key);
	section *secs = arena_alloc(ld->tmp, (ld->nheaders + 1) * sizeof(*secs));
	if (secs == NULL)
		return oom(ld);
	size_t next = 0, ntables = 0;
	const section *roles = NULL, *membership = NULL, *privacy = NULL;
	for (size_t h = 0; h < ld->nheaders; h++) {
		section *s = &secs[h];
		const header *hd = &ld->headers[h];
		*s = (section){.line = hd->line, .e = ld->entries + next};
		while (next < ld->nentries && ld->entries[next].section_line == hd->line) {
			next++;
			s->n++;
		}
		const char *w[3];
		size_t wl[3];
		size_t nw = split_words(hd->name, strlen(hd->name), w, wl, 2);
		char *title = arena_alloc(ld->tmp, strlen(hd->name) + 1);
		if (title == NULL)
			return oom(ld);
		title[0] = '\0';
		for (size_t k = 0; k < nw && k < 2; k++)
			snprintf(title + strlen(title), strlen(hd->name) + 1 - strlen(title), "%s%.*s",
			         k ? " " : "", (int)wl[k], w[k]);
		s->title = title;
		const section **single = NULL;
		if (nw == 1 && eq(w[0], wl[0], "roles"))
			s->kind = SEC_ROLES, single = &roles;
		else if (nw == 1 && eq(w[0], wl[0], "membership"))
			s->kind = SEC_MEMBERSHIP, single = &membership;
		else if (nw == 1 && eq(w[0], wl[0], "privacy"))
			s->kind = SEC_PRIVACY, single = &privacy;
		else if (nw == 2 && eq(w[0], wl[0], "table"))
			s->kind = SEC_TABLE;
		else
			return failf(ld, hd->line, "unknown section [%s] (expected [roles], [membership], "
			                           "[privacy] or [table schema.name])", hd->name);
		if (s->n == 0)
			return failf(ld, hd->line, "section [%s] is empty", s->title);
		if (single != NULL) {
			if (*single != NULL)
				return failf(ld, hd->line, "duplicate section [%s] (first at line %d)", s->title,
				             (*single)->line);
			*single = s;
			continue;
		}
		if ((rc = qualified_name(ld, p->mem, hd->line, "[table]", w[1], wl[1], &s->schema,
		                         &s->table)) < 0)
			return rc;
		for (size_t k = 0; k < h; k++)
			if (secs[k].kind == SEC_TABLE && strcmp(secs[k].schema, s->schema) == 0 &&
			    strcmp(secs[k].table, s->table) == 0)
				return failf(ld, hd->line, "duplicate section [table %s.%s] (first at line %d)",
				             s->schema, s->table, secs[k].line);
		ntables++;
	}
	if (roles == NULL)
		return failf(ld, 0, "missing [roles] section (ranks = lowest, ..., highest)");
	if ((rc = compile_roles(ld, p, roles)) < 0)
		return rc;
	if (membership == NULL)
		return failf(ld, 0, "missing [membership] section (where a user's role in an org comes from)");
	if ((rc = compile_membership(ld, p, membership)) < 0 ||
	    (privacy != NULL && (rc = compile_privacy(ld, p, privacy)) < 0))
		return rc;
	if (ntables == 0)
		return failf(ld, 0, "no [table schema.name] section: the policy governs nothing");
	p->tables = arena_alloc(p->mem, ntables * sizeof(*p->tables));
	if (p->tables == NULL)
		return oom(ld);
	memset(p->tables, 0, ntables * sizeof(*p->tables));
	for (size_t h = 0; h < ld->nheaders; h++) {
		if (secs[h].kind != SEC_TABLE)
			continue;
		policy_table *t = &p->tables[p->ntables];
		if ((rc = compile_table(ld, p, &secs[h], t)) < 0)
			return rc;
		for (size_t k = 0; k < p->ntables; k++)
			if (strcmp(p->tables[k].view, t->view) == 0)
				return failf(ld, t->line, "tables %s.%s and %s.%s would share the view walcast.%s",
				             p->tables[k].schema, p->tables[k].name, t->schema, t->name, t->view);
		p->ntables++;
	}
	const policy_membership *m = &p->membership;
	const char *mcols[] = {m->org, m->user, m->role};
	if ((rc = check_source_columns(ld, p, "membership", m->schema, m->table, mcols, 3,
	                               membership->line)) < 0)
		return rc;
	if (p->has_privacy) {
		const char *pcols[] = {p->privacy.subject, p->privacy.min_role};
		if ((rc = check_source_columns(ld, p, "privacy", p->privacy.schema, p->privacy.table, pcols,
		                               2, privacy->line)) < 0)
			return rc;
	}
	return 0;
}

static int load_text(const char *text, size_t len, const char *name, policy **out,
                     char err[POLICY_ERROR_MAX])
{
	loader ld = {.name = name, .text = text, .len = len};
	policy *p = NULL;
	int rc = 0;
	ld.tmp = arena_create(16384);
	p = calloc(1, sizeof(*p));
	if (ld.tmp == NULL || p == NULL || (p->mem = arena_create(8192)) == NULL) {
		rc = -ENOMEM;
		snprintf(err, POLICY_ERROR_MAX, "%s: out of memory", name);
		goto cleanup;
	}
	if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
		ld.pos = 3; /* a UTF-8 byte order mark */
	int line = ini_parse_stream(reader_cb, &ld, handler_cb, &ld);
	if (line < 0 && ld.rc == 0)
		oom(&ld);
	if (line > 0 && (ld.rc == 0 || (ld.rc == -EINVAL && line < ld.err_line))) {
		ld.rc = 0;
		failf(&ld, line, "syntax error (expected [section], key = value, or an indented "
		                 "continuation line)");
	}
	if (ld.rc == 0)
		compile(&ld, p);
	rc = ld.rc;
	if (rc < 0) {
		if (ld.err_line > 0)
			snprintf(err, POLICY_ERROR_MAX, "%s:%d: %s", name, ld.err_line, ld.reason);
		else
			snprintf(err, POLICY_ERROR_MAX, "%s: %s", name, ld.reason);
		goto cleanup;
	}
	*out = p;
	p = NULL;
cleanup:
	policy_destroy(p);
	free(ld.entries);
	free(ld.headers);
	arena_destroy(ld.tmp);
	return rc;
}

int policy_load_string(const char *text, const char *name, policy **out, char err[POLICY_ERROR_MAX])
{
	return load_text(text, strlen(text), name != NULL ? name : "<policy>", out, err);
}

int policy_load_file(const char *path, policy **out, char err[POLICY_ERROR_MAX])
{
	int rc = 0;
	char *text = NULL;
	FILE *f = fopen(path, "rb");
	struct stat st;
	if (f == NULL || fstat(fileno(f), &st) < 0) {
		rc = -errno;
		snprintf(err, POLICY_ERROR_MAX, "%s: cannot open: %s", path, strerror(errno));
		goto cleanup;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)POLICY_FILE_MAX) {
		rc = -EINVAL;
		snprintf(err, POLICY_ERROR_MAX, "%s: not a regular file of at most %u bytes", path,
		         POLICY_FILE_MAX);
		goto cleanup;
	}
	text = malloc((size_t)st.st_size + 1);
	if (text == NULL) {
		rc = -ENOMEM;
		snprintf(err, POLICY_ERROR_MAX, "%s: out of memory", path);
		goto cleanup;
	}
	size_t n = fread(text, 1, (size_t)st.st_size, f);
	if (ferror(f)) {
		rc = -EIO;
		snprintf(err, POLICY_ERROR_MAX, "%s: read error", path);
		goto cleanup;
	}
	text[n] = '\0';
	rc = load_text(text, n, path, out, err);
cleanup:
	free(text);
	if (f != NULL)
		fclose(f);
	return rc;
}

void policy_destroy(policy *p)
{
	if (p == NULL)
		return;
	arena_destroy(p->mem);
	free(p);
}

/* ---- accessors ---------------------------------------------------------------------------- */

int policy_rank_count(const policy *p) { return p->nranks; }

const char *policy_rank_name(const policy *p, int rank)
{
	return rank >= 1 && rank <= p->nranks ? p->ranks[rank] : NULL;
}

int policy_role_rank(const policy *p, const char *role, size_t len)
{
	if (role == NULL)
		return 0;
	for (int r = 1; r <= p->nranks; r++)
		if (eq(role, len, p->ranks[r]))
			return r;
	return 0;
}

size_t policy_bypass_count(const policy *p) { return p->nbypass; }

const char *policy_bypass_role(const policy *p, size_t i)
{
	return i < p->nbypass ? p->bypass[i] : NULL;
}

bool policy_role_bypasses(const policy *p, const char *role, size_t len)
{
	if (role == NULL)
		return false;
	for (size_t i = 0; i < p->nbypass; i++)
		if (eq(role, len, p->bypass[i]))
			return true;
	return false;
}

size_t policy_member_role_count(const policy *p) { return p->nmembers; }

const char *policy_member_role(const policy *p, size_t i)
{
	return i < p->nmembers ? p->members[i] : NULL;
}

policy_role_access policy_role_kind(const policy *p, const char *role, size_t len)
{
	if (role == NULL)
		return POLICY_ROLE_DENIED;
	if (policy_role_bypasses(p, role, len))
		return POLICY_ROLE_BYPASS;
	for (size_t i = 0; i < p->nmembers; i++)
		if (eq(role, len, p->members[i]))
			return POLICY_ROLE_MEMBER;
	return POLICY_ROLE_DENIED;
}

const policy_membership *policy_membership_source(const policy *p) { return &p->membership; }

const policy_privacy *policy_privacy_source(const policy *p)
{
	return p->has_privacy ? &p->privacy : NULL;
}

size_t policy_table_count(const policy *p) { return p->ntables; }

const policy_table *policy_table_at(const policy *p, size_t i)
{
	return i < p->ntables ? &p->tables[i] : NULL;
}

const policy_table *policy_table_find(const policy *p, const char *schema, size_t schema_len,
                                      const char *name, size_t name_len)
{
	for (size_t i = 0; i < p->ntables; i++)
		if (eq(name, name_len, p->tables[i].name) && eq(schema, schema_len, p->tables[i].schema))
			return &p->tables[i];
	return NULL;
}

const char *policy_table_schema(const policy_table *t) { return t->schema; }
const char *policy_table_name(const policy_table *t) { return t->name; }
const char *policy_table_view(const policy_table *t) { return t->view; }
size_t policy_table_ncols(const policy_table *t) { return t->ncols; }

const char *policy_table_column(const policy_table *t, size_t i)
{
	return i < t->ncols ? t->cols[i] : NULL;
}

size_t policy_table_org(const policy_table *t) { return t->org; }

const policy_insn *policy_table_read(const policy_table *t, size_t *len)
{
	*len = t->read_len;
	return t->read;
}

const policy_column_rule *policy_table_rule(const policy_table *t, size_t i)
{
	return i < t->ncols ? &t->rules[i] : NULL;
}

/* ---- programs ------------------------------------------------------------------------------ */

int policy_program_check(const policy_insn *prog, size_t n, size_t ncols, int nranks)
{
	if (prog == NULL || n == 0 || n > POLICY_PROGRAM_MAX)
		return -EINVAL;
	size_t sp = 0;
	for (size_t i = 0; i < n; i++) {
		switch (prog[i].op) {
		case POLICY_OP_RANK_GE:
			if (prog[i].arg < 1 || prog[i].arg > nranks)
				return -EINVAL;
			/* fall through */
		case POLICY_OP_TRUE:
		case POLICY_OP_FALSE:
			if (prog[i].op != POLICY_OP_RANK_GE && prog[i].arg != 0)
				return -EINVAL;
			if (++sp > POLICY_STACK_MAX)
				return -EINVAL;
			break;
		case POLICY_OP_PRIVACY:
		case POLICY_OP_EQ_UID:
			if (prog[i].arg >= ncols || ++sp > POLICY_STACK_MAX)
				return -EINVAL;
			break;
		case POLICY_OP_NOT:
			if (sp < 1)
				return -EINVAL;
			break;
		case POLICY_OP_AND:
		case POLICY_OP_OR:
			if (sp < 2)
				return -EINVAL;
			sp--;
			break;
		default:
			return -EINVAL;
		}
	}
	return sp == 1 ? 0 : -EINVAL;
}

int policy_program_eval(const policy_insn *prog, size_t n, const change_value *tuple,
                        const policy_viewer *v)
{
	uint8_t st[POLICY_STACK_MAX + 1];
	size_t sp = 0;
	st[0] = POLICY_FALSE;
	for (size_t i = 0; i < n; i++) {
		const policy_insn in = prog[i];
		switch (in.op) {
		case POLICY_OP_TRUE:
			st[sp++] = POLICY_TRUE;
			break;
		case POLICY_OP_FALSE:
			st[sp++] = POLICY_FALSE;
			break;
		case POLICY_OP_RANK_GE:
			st[sp++] = v->rank >= (int)in.arg ? POLICY_TRUE : POLICY_FALSE;
			break;
		case POLICY_OP_PRIVACY: {
			const change_value *c = &tuple[in.arg];
			if (c->kind == VALUE_NULL) {
				st[sp++] = POLICY_TRUE; /* no subject, no rule */
				break;
			}
			if (c->kind != VALUE_TEXT)
				return -ENODATA;
			if (v->subject_rank == NULL)
				return -EINVAL;
			int r = v->subject_rank(v->subject_arg, c->data, c->len);
			if (r < 0)
				return r;
			st[sp++] = r <= v->rank ? POLICY_TRUE : POLICY_FALSE;
			break;
		}
		case POLICY_OP_EQ_UID: {
			const change_value *c = &tuple[in.arg];
			if (v->uid == NULL || c->kind == VALUE_NULL) {
				st[sp++] = POLICY_UNKNOWN;
				break;
			}
			if (c->kind != VALUE_TEXT)
				return -ENODATA;
			st[sp++] = c->len == v->uid_len && memcmp(c->data, v->uid, c->len) == 0 ? POLICY_TRUE
			                                                                        : POLICY_FALSE;
			break;
		}
		case POLICY_OP_NOT:
			st[sp - 1] = (uint8_t)(POLICY_TRUE - st[sp - 1]);
			break;
		case POLICY_OP_AND:
			sp--;
			if (st[sp] < st[sp - 1])
				st[sp - 1] = st[sp];
			break;
		case POLICY_OP_OR:
			sp--;
			if (st[sp] > st[sp - 1])
				st[sp - 1] = st[sp];
			break;
		default:
			return -EINVAL;
		}
	}
	return st[0];
}

/* ---- bindings ------------------------------------------------------------------------------ */

#define KIND_OMIT 0xff /* bound_col.kind for a column the policy does not list */

typedef struct bound_col {
	uint8_t kind;    /* policy_rule_kind or KIND_OMIT */
	int32_t cond;    /* condition id, -1 for none */
	int32_t context; /* tuple position of the AAD context column, -1 for none */
} bound_col;

typedef struct bound_prog {
	uint32_t off, len; /* in code[] */
} bound_prog;

struct policy_bound {
	const policy_table *t;
	int ncols;
	int org;
	unsigned flags;
	policy_insn *code; /* the read rule, then each distinct condition; args are tuple positions */
	bound_prog read;
	bound_prog *conds; /* t->nconds */
	bound_col *cols;   /* ncols */
	int *uid_cols;
	size_t nuid;
};

void policy_bound_destroy(policy_bound *b)
{
	if (b == NULL)
		return;
	free(b->code);
	free(b->conds);
	free(b->cols);
	free(b->uid_cols);
	free(b);
}

/* Copies a table program to code + at with column args rewritten through map; notes uses. */
static void rebind(policy_insn *code, size_t at, const policy_insn *src, size_t n, const int *map,
                   bool *uid_used, unsigned *flags, unsigned uid_flag)
{
	for (size_t i = 0; i < n; i++) {
		policy_insn in = src[i];
		if (in.op == POLICY_OP_PRIVACY || in.op == POLICY_OP_EQ_UID) {
			if (in.op == POLICY_OP_EQ_UID) {
				uid_used[in.arg] = true;
				*flags |= uid_flag;
			} else {
				*flags |= POLICY_USES_PRIVACY;
			}
			in.arg = (uint16_t)map[in.arg];
		}
		code[at + i] = in;
	}
}

/* Marks the columns a program refers to. */
static void mark_refs(const policy_insn *prog, size_t n, bool *ref)
{
	for (size_t i = 0; i < n; i++)
		if (prog[i].op == POLICY_OP_PRIVACY || prog[i].op == POLICY_OP_EQ_UID)
			ref[prog[i].arg] = true;
}

int policy_bind(const policy_table *t, const relation *rel, policy_bound **out,
                char err[POLICY_ERROR_MAX])
{
	int rc = 0;
	policy_bound *b = NULL;
	int *map = NULL;
	bool *ref = NULL, *uid_used = NULL;
	if (rel->ncols < 0 || rel->ncols > UINT16_MAX) {
		snprintf(err, POLICY_ERROR_MAX, "relation %s.%s: %d columns is out of range", rel->schema,
		         rel->name, rel->ncols);
		return -EINVAL;
	}
	map = calloc(t->ncols + 1, sizeof(*map));
	ref = calloc(t->ncols + 1, sizeof(*ref));
	uid_used = calloc(t->ncols + 1, sizeof(*uid_used));
	b = calloc(1, sizeof(*b));
	if (map == NULL || ref == NULL || uid_used == NULL || b == NULL)
		goto nomem;
	/* Which table columns the rules need, and where they are in the tuple. */
	ref[t->org] = true;
	mark_refs(t->read, t->read_len, ref);
	for (size_t i = 0; i < t->ncols; i++) {
		const policy_column_rule *r = &t->rules[i];
		if (r->kind == POLICY_RULE_PLAIN)
			continue;
		ref[i] = true;
		mark_refs(r->cond, r->cond_len, ref);
		if (r->context >= 0)
			ref[r->context] = true;
	}
	for (size_t i = 0; i < t->ncols; i++) {
		map[i] = relation_column_index(rel, t->cols[i], strlen(t->cols[i]));
		if (map[i] < 0 && ref[i]) {
			snprintf(err, POLICY_ERROR_MAX, "relation %s.%s: no column '%s' (used by the policy)",
			         rel->schema, rel->name, t->cols[i]);
			rc = -EINVAL;
			goto cleanup;
		}
	}
	b->t = t;
	b->ncols = rel->ncols;
	b->org = map[t->org];
	size_t total = t->read_len;
	for (size_t i = 0; i < t->ncols; i++)
		if (t->rules[i].cond != NULL)
			total += t->rules[i].cond_len; /* shared conditions count more than once: harmless */
	b->code = malloc(total * sizeof(*b->code));
	b->conds = calloc(t->nconds + 1, sizeof(*b->conds));
	b->cols = malloc(((size_t)rel->ncols + 1) * sizeof(*b->cols));
	if (b->code == NULL || b->conds == NULL || b->cols == NULL)
		goto nomem;
	rebind(b->code, 0, t->read, t->read_len, map, uid_used, &b->flags, POLICY_READ_USES_UID);
	b->read = (bound_prog){0, (uint32_t)t->read_len};
	size_t at = t->read_len;
	bool *done = calloc(t->nconds + 1, sizeof(*done));
	if (done == NULL)
		goto nomem;
	for (size_t i = 0; i < t->ncols; i++) {
		const policy_column_rule *r = &t->rules[i];
		if (r->cond == NULL || done[r->cond_id])
			continue;
		done[r->cond_id] = true;
		rebind(b->code, at, r->cond, r->cond_len, map, uid_used, &b->flags, POLICY_COLUMNS_USE_UID);
		b->conds[r->cond_id] = (bound_prog){(uint32_t)at, (uint32_t)r->cond_len};
		at += r->cond_len;
	}
	free(done);
	for (int c = 0; c < rel->ncols; c++)
		b->cols[c] = (bound_col){.kind = KIND_OMIT, .cond = -1, .context = -1};
	for (size_t i = 0; i < t->ncols; i++) {
		if (map[i] < 0)
			continue;
		const policy_column_rule *r = &t->rules[i];
		b->cols[map[i]] = (bound_col){
			.kind = (uint8_t)r->kind,
			.cond = r->cond_id,
			.context = r->context >= 0 ? map[r->context] : -1,
		};
	}
	for (size_t i = 0; i < t->ncols; i++)
		b->nuid += uid_used[i];
	b->uid_cols = malloc((b->nuid + 1) * sizeof(*b->uid_cols));
	if (b->uid_cols == NULL)
		goto nomem;
	b->nuid = 0;
	for (int c = 0; c < rel->ncols; c++)
		for (size_t i = 0; i < t->ncols; i++)
			if (uid_used[i] && map[i] == c)
				b->uid_cols[b->nuid++] = c;
	*out = b;
	b = NULL;
	goto cleanup;
nomem:
	rc = -ENOMEM;
	snprintf(err, POLICY_ERROR_MAX, "relation %s.%s: out of memory", rel->schema, rel->name);
cleanup:
	policy_bound_destroy(b);
	free(uid_used);
	free(ref);
	free(map);
	return rc;
}

const policy_table *policy_bound_table(const policy_bound *b) { return b->t; }
int policy_bound_ncols(const policy_bound *b) { return b->ncols; }
int policy_bound_org_column(const policy_bound *b) { return b->org; }
unsigned policy_bound_flags(const policy_bound *b) { return b->flags; }

size_t policy_bound_uid_columns(const policy_bound *b, const int **cols)
{
	*cols = b->uid_cols;
	return b->nuid;
}

int policy_bound_context_column(const policy_bound *b, int col)
{
	if (col < 0 || col >= b->ncols || b->cols[col].kind != POLICY_RULE_ENCRYPTED)
		return -1;
	return b->cols[col].context;
}

int policy_row_visible(const policy_bound *b, const change_value *tuple, const policy_viewer *v,
                       bool *visible)
{
	if (v->bypass) {
		*visible = true;
		return 0;
	}
	const change_value *org = &tuple[b->org];
	if (org->kind == VALUE_NULL || v->rank <= 0) {
		*visible = false; /* the implicit rule: a member of the row's org */
		return 0;
	}
	if (org->kind != VALUE_TEXT)
		return -ENODATA;
	int r = policy_program_eval(b->code + b->read.off, b->read.len, tuple, v);
	if (r < 0)
		return r;
	*visible = r == POLICY_TRUE;
	return 0;
}

int policy_row_columns(const policy_bound *b, const change_value *tuple, const policy_viewer *v,
                       policy_action *actions)
{
	const policy_table *t = b->t;
	uint8_t cv[POLICY_CONDS_MAX];
	if (!v->bypass) {
		for (size_t k = 0; k < t->nconds; k++) {
			int r = policy_program_eval(b->code + b->conds[k].off, b->conds[k].len, tuple, v);
			if (r < 0)
				return r;
			cv[k] = (uint8_t)r;
		}
	}
	for (int c = 0; c < b->ncols; c++) {
		const bound_col *bc = &b->cols[c];
		bool granted = v->bypass || (bc->cond >= 0 && cv[bc->cond] == POLICY_TRUE);
		switch (bc->kind) {
		case POLICY_RULE_PLAIN:
			actions[c] = POLICY_KEEP;
			break;
		case POLICY_RULE_MASK_LAST4:
			actions[c] = granted ? POLICY_KEEP : POLICY_MASK_LAST4;
			break;
		case POLICY_RULE_MASK_NULL:
			actions[c] = granted ? POLICY_KEEP : POLICY_NULL;
			break;
		case POLICY_RULE_ENCRYPTED:
			actions[c] = granted ? POLICY_DECRYPT : POLICY_NULL;
			break;
		default:
			actions[c] = v->bypass ? POLICY_KEEP : POLICY_OMIT;
			break;
		}
	}
	return 0;
}

/* ---- the binding cache ---------------------------------------------------------------------- */

typedef struct cache_slot {
	const relation *rel; /* the relation last bound, NULL = never */
	uint64_t id;         /* its relation id: a recreated relation at a reused address differs */
	policy_bound *b;
	int rc;
	char *err;
} cache_slot;

struct policy_cache {
	const policy *p;
	cache_slot *slots; /* one per table, in policy order */
};

int policy_cache_create(const policy *p, policy_cache **out)
{
	policy_cache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->p = p;
	c->slots = calloc(p->ntables + 1, sizeof(*c->slots));
	if (c->slots == NULL) {
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void policy_cache_destroy(policy_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->p->ntables; i++) {
		policy_bound_destroy(c->slots[i].b);
		free(c->slots[i].err);
	}
	free(c->slots);
	free(c);
}

static int slot_answer(const cache_slot *s, const policy_bound **out, char err[POLICY_ERROR_MAX])
{
	if (s->rc < 0) {
		snprintf(err, POLICY_ERROR_MAX, "%s", s->err != NULL ? s->err : "cannot bind");
		return s->rc;
	}
	*out = s->b;
	return 0;
}

int policy_cache_get(policy_cache *c, const relation *rel, const policy_bound **out,
                     char err[POLICY_ERROR_MAX])
{
	const policy *p = c->p;
	/* Fast path: the same relation as last time. Its id is never reused within a relcache
	 * (versions restart for a recreated table, and addresses are reused by malloc); the names
	 * are compared too, for relations that do not come from a relcache. */
	for (size_t i = 0; i < p->ntables; i++) {
		const cache_slot *s = &c->slots[i];
		if (s->rel == rel && s->id == rel->id && strcmp(p->tables[i].name, rel->name) == 0 &&
		    strcmp(p->tables[i].schema, rel->schema) == 0)
			return slot_answer(s, out, err);
	}
	const policy_table *t = policy_table_find(p, rel->schema, strlen(rel->schema), rel->name,
	                                          strlen(rel->name));
	if (t == NULL) {
		*out = NULL;
		return 0;
	}
	cache_slot *s = &c->slots[t - p->tables];
	char msg[POLICY_ERROR_MAX];
	policy_bound *b = NULL;
	int rc = policy_bind(t, rel, &b, msg);
	if (rc == -ENOMEM) {
		snprintf(err, POLICY_ERROR_MAX, "%s", msg);
		return rc;
	}
	char *copy = NULL;
	if (rc < 0 && (copy = strdup(msg)) == NULL) {
		snprintf(err, POLICY_ERROR_MAX, "%s", msg);
		return -ENOMEM;
	}
	policy_bound_destroy(s->b);
	free(s->err);
	*s = (cache_slot){.rel = rel, .id = rel->id, .b = b, .rc = rc, .err = copy};
	return slot_answer(s, out, err);
}

/* ---- values ---------------------------------------------------------------------------------- */

int policy_mask_last4(buf *out, const char *s, size_t len)
{
	size_t chars = 0;
	for (size_t i = 0; i < len; i++)
		chars += ((unsigned char)s[i] & 0xC0) != 0x80;
	if (chars <= 4)
		return buf_append(out, s, len);
	/* The byte where the last four characters start. */
	size_t tail = len, seen = 0;
	while (tail > 0 && seen < 4) {
		tail--;
		seen += ((unsigned char)s[tail] & 0xC0) != 0x80;
	}
	int rc = buf_reserve(out, (chars - 4) + (len - tail));
	if (rc < 0)
		return rc;
	memset(out->data + out->len, '*', chars - 4);
	out->len += chars - 4;
	memcpy(out->data + out->len, s + tail, len - tail);
	out->len += len - tail;
	out->data[out->len] = '\0';
	return 0;
}

int policy_uuid_canonical(const char *in, size_t len, char out[POLICY_UUID_TEXT_LEN + 1])
{
	uint8_t b[UUID_BYTES];
	if (uuid_parse_pg(in, len, b) < 0)
		return -EINVAL;
	uuid_format(b, out);
	return 0;
}
