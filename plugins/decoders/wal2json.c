/*
 * wal2json — decoder for the wal2json output plugin, format version 2 (one JSON object per
 * XLogData payload), as walcast requests it (see w2j_start_options). It turns each line into the
 * normalized records of change.h, identical to what the pgoutput decoder makes of the same WAL.
 *
 * Design:
 * - Parsing is a single pass of json_scan (zero-copy, no tree, no per-line malloc): top-level
 *   scalars are kept as spans of the payload, the "columns"/"identity"/"pk" arrays are collected
 *   into reusable arrays of (name, typeoid, raw value token). Key order is never relied on.
 * - Values are converted to PostgreSQL's text output only when the tuple is built, into a
 *   per-line arena that is reset after the change has been delivered, so memory stays flat over
 *   transactions of any size.
 * - wal2json names the relation on every line but never describes it, and omits unchanged
 *   TOASTed columns from an UPDATE. The relation shape is therefore merged from what the cache
 *   knows (possibly seeded from the catalog by the source) and what the line shows, and a new
 *   shape is put into the cache when it differs (how ALTER TABLE is followed):
 *     INSERT  every column is present: the line's columns are the shape.
 *     UPDATE  cached columns missing from the line are unchanged TOAST values (VALUE_UNCHANGED),
 *             unless they cannot be (a fixed-width type, or a REPLICA IDENTITY FULL old tuple
 *             that does not list them): then the column was dropped.
 *     DELETE  the cached shape, extended by identity columns it does not know.
 *   Columns the cache does not know are added where the line places them.
 * - begin_cb comes with a transaction's first change, and a transaction without changes (a DDL
 *   transaction, which wal2json shows as "B" then "C") reaches the sink not at all, exactly as
 *   pgoutput behaves on PostgreSQL 15+, so both decoders announce the same transactions.
 * - wal2json writes "identity" for every UPDATE of a table with a key, taking the key from the
 *   new tuple when PostgreSQL logged no old tuple; pgoutput sends no old tuple then. So an UPDATE
 *   has an old tuple only when its identity is the whole row or differs from the new values.
 *
 * Known lossy spot: wal2json 2.5 writes float4/float8/numeric NaN and ±Infinity as JSON null (it
 * has no numeric-data-types-as-string option), so they arrive here as SQL NULL (VALUE_NULL);
 * pgoutput carries them as text. Nothing in the line tells them apart.
 */
#include "decoder.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "json_scan.h"
#include "log.h"
#include "lsn.h"

#define W2J_MAX_COLUMNS 1664          /* PostgreSQL's MaxTupleAttributeNumber */
#define W2J_ARENA_BLOCK (64 * 1024)

/* A decoded string: points into the payload (no escapes) or the arena; not NUL-terminated. */
typedef struct w2j_str {
	const char *p;
	size_t len;
} w2j_str;

/* One {"name":..,"typeoid":..,"value":..} element of "columns", "identity" or "pk". */
typedef struct w2j_col {
	w2j_str name;
	uint32_t type_oid;
	bool has_type;
	json_scan_token value; /* type JSON_SCAN_NONE when the element has no "value" */
} w2j_col;

typedef struct w2j_list {
	w2j_col *v;
	int n;
	int cap;
	bool present;
} w2j_list;

/* The top-level keys walcast reads; everything else is skipped. */
enum w2j_field {
	F_ACTION,
	F_XID,
	F_TIMESTAMP,
	F_LSN,
	F_NEXTLSN,
	F_SCHEMA,
	F_TABLE,
	F_TRANSACTIONAL,
	F_PREFIX,
	F_CONTENT,
	F_NSCALARS,
	F_COLUMNS = F_NSCALARS,
	F_IDENTITY,
	F_PK,
	F_UNKNOWN,
};

typedef struct w2j_line {
	json_scan_token f[F_NSCALARS]; /* type JSON_SCAN_NONE when the key is absent */
	uint32_t seen;            /* bit per field, to refuse duplicate keys */
} w2j_line;

typedef struct wal2json {
	relcache *rels; /* borrowed */
	decoder_sink sink;
	arena *arena;   /* per line: values, decoded names, shapes; reset after each line */
	bool in_txn;    /* between "B" and "C" */
	bool begun;     /* begin_cb was called for this transaction (at its first change) */
	change_txn txn;
	w2j_list columns;
	w2j_list identity;
	w2j_list pk;
	char **no_identity; /* tables already warned about ("schema"."table" as the server quotes it) */
	size_t n_no_identity;
} wal2json;

/* Where a column of a shape under construction was seen. */
enum { IN_REL = 1, IN_NEW = 2, IN_OLD = 4 };

typedef struct shape_col {
	const char *name;
	size_t name_len;
	uint32_t type_oid;
	int32_t typmod;
	bool key;
	unsigned from;
} shape_col;

typedef struct shape {
	shape_col *c;
	int n;
	int cap;
} shape;

enum {
	OID_BOOL = 16,
	OID_BYTEA = 17,
	OID_INT8 = 20,
	OID_INT2 = 21,
	OID_INT4 = 23,
	OID_OID = 26,
	OID_XID = 28,
	OID_CID = 29,
	OID_FLOAT4 = 700,
	OID_FLOAT8 = 701,
	OID_MONEY = 790,
	OID_MACADDR = 829,
	OID_INET = 869,
	OID_DATE = 1082,
	OID_TIME = 1083,
	OID_TIMESTAMP = 1114,
	OID_TIMESTAMPTZ = 1184,
	OID_INTERVAL = 1186,
	OID_TIMETZ = 1266,
	OID_UUID = 2950,
	OID_PG_LSN = 3220,
};

static const char w2j_options[] =
	"\"format-version\" '2', \"include-xids\" '1', \"include-timestamp\" '1', "
	"\"include-lsn\" '1', \"include-type-oids\" '1', \"include-types\" '0', "
	"\"include-transaction\" '1', \"include-pk\" '1'";

__attribute__((format(printf, 2, 3))) static int w2j_fail(char *err, const char *fmt, ...)
{
	int n = snprintf(err, DECODER_ERROR_MAX, "wal2json: ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err + n, DECODER_ERROR_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	return -EPROTO;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static enum w2j_field field_of(const char *k, size_t n)
{
	static const struct {
		const char *name;
		size_t len;
		enum w2j_field f;
	} keys[] = {
#define KEY(lit, f) {lit, sizeof(lit) - 1, f}
		KEY("action", F_ACTION), KEY("columns", F_COLUMNS), KEY("xid", F_XID),
		KEY("lsn", F_LSN), KEY("schema", F_SCHEMA), KEY("table", F_TABLE), KEY("pk", F_PK),
		KEY("identity", F_IDENTITY), KEY("timestamp", F_TIMESTAMP), KEY("nextlsn", F_NEXTLSN),
		KEY("transactional", F_TRANSACTIONAL), KEY("prefix", F_PREFIX),
		KEY("content", F_CONTENT),
#undef KEY
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (keys[i].len == n && memcmp(keys[i].name, k, n) == 0)
			return keys[i].f;
	return F_UNKNOWN;
}

/* The field a key names; keys written with escapes are decoded first (wal2json never does). */
static enum w2j_field key_field(const json_scan_token *key)
{
	if (!key->escaped)
		return field_of(key->p, key->len);
	char kb[32];
	const char *err;
	if (key->len > sizeof(kb))
		return F_UNKNOWN;
	long n = json_scan_unescape(key->p, key->len, kb, &err);
	return n < 0 ? F_UNKNOWN : field_of(kb, (size_t)n);
}

enum { CK_NAME, CK_TYPEOID, CK_VALUE, CK_OTHER };

/* Which key of a column element: "name", "typeoid", "value" or another. */
static int col_key(const json_scan_token *key)
{
	char kb[8];
	const char *k = key->p, *err;
	size_t n = key->len;
	if (key->escaped) {
		if (n > sizeof(kb))
			return CK_OTHER;
		long r = json_scan_unescape(key->p, key->len, kb, &err);
		if (r < 0)
			return CK_OTHER;
		k = kb;
		n = (size_t)r;
	}
	if (n == 4 && memcmp(k, "name", 4) == 0)
		return CK_NAME;
	if (n == 7 && memcmp(k, "typeoid", 7) == 0)
		return CK_TYPEOID;
	if (n == 5 && memcmp(k, "value", 5) == 0)
		return CK_VALUE;
	return CK_OTHER;
}

/* Decodes a string token: zero-copy when it has no escapes, else into the arena. */
static int str_decode(wal2json *w, json_scan *s, const json_scan_token *t, w2j_str *out)
{
	if (!t->escaped) {
		out->p = t->p;
		out->len = t->len;
		return 0;
	}
	char *d = arena_alloc(w->arena, t->len);
	if (d == NULL)
		return -ENOMEM;
	const char *err;
	long n = json_scan_unescape(t->p, t->len, d, &err);
	if (n < 0) {
		json_scan_fail_at(s, t->p, err);
		return -EPROTO;
	}
	out->p = d;
	out->len = (size_t)n;
	return 0;
}

static int list_grow(w2j_list *l)
{
	int cap = l->cap ? l->cap * 2 : 32;
	if (cap > W2J_MAX_COLUMNS)
		cap = W2J_MAX_COLUMNS;
	w2j_col *v = realloc(l->v, (size_t)cap * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	l->v = v;
	l->cap = cap;
	return 0;
}

/* Parses one element object of a column list. */
static int col_parse(wal2json *w, json_scan *s, w2j_col *c, bool want_value)
{
	json_scan_token t, key;
	if (json_scan_value(s, &t) < 0)
		return -EPROTO;
	if (t.type != JSON_SCAN_OBJECT) {
		json_scan_fail(s, "a column must be a JSON object");
		return -EPROTO;
	}
	c->name.p = NULL;
	c->name.len = 0;
	c->has_type = false;
	c->value.type = JSON_SCAN_NONE;
	bool first = true, has_name = false;
	int rc;
	while ((rc = json_scan_object_next(s, &first, &key)) == 1) {
		int k = col_key(&key);
		if (k == CK_NAME) {
			if (has_name || json_scan_value(s, &t) < 0)
				goto dup_or_bad;
			if (t.type != JSON_SCAN_STRING) {
				json_scan_fail(s, "a column \"name\" must be a string");
				return -EPROTO;
			}
			if ((rc = str_decode(w, s, &t, &c->name)) < 0)
				return rc;
			has_name = true;
		} else if (k == CK_TYPEOID) {
			if (c->has_type || json_scan_value(s, &t) < 0)
				goto dup_or_bad;
			if (json_scan_u32(&t, &c->type_oid) < 0) {
				json_scan_fail(s, "a column \"typeoid\" must be an unsigned 32-bit integer");
				return -EPROTO;
			}
			c->has_type = true;
		} else if (k == CK_VALUE) {
			if (c->value.type != JSON_SCAN_NONE || json_scan_value(s, &c->value) < 0)
				goto dup_or_bad;
			if (c->value.type == JSON_SCAN_OBJECT || c->value.type == JSON_SCAN_ARRAY) {
				json_scan_fail(s, "a column \"value\" must be a string, number, boolean or null");
				return -EPROTO;
			}
		} else if (json_scan_skip_value(s) < 0) {
			return -EPROTO;
		}
	}
	if (rc < 0)
		return -EPROTO;
	if (!has_name) {
		json_scan_fail(s, "a column has no \"name\"");
		return -EPROTO;
	}
	if (want_value && c->value.type == JSON_SCAN_NONE) {
		json_scan_fail(s, "a column has no \"value\"");
		return -EPROTO;
	}
	return 0;
dup_or_bad:
	json_scan_fail(s, "duplicate key in a column");
	return -EPROTO;
}

static int list_parse(wal2json *w, json_scan *s, w2j_list *l, bool want_value)
{
	json_scan_token t;
	if (json_scan_value(s, &t) < 0)
		return -EPROTO;
	if (t.type != JSON_SCAN_ARRAY) {
		json_scan_fail(s, "\"columns\", \"identity\" and \"pk\" must be arrays");
		return -EPROTO;
	}
	l->present = true;
	l->n = 0;
	bool first = true;
	int rc;
	while ((rc = json_scan_array_next(s, &first)) == 1) {
		if (l->n == l->cap) {
			if (l->cap >= W2J_MAX_COLUMNS) {
				json_scan_fail(s, "more columns than PostgreSQL allows");
				return -EPROTO;
			}
			if ((rc = list_grow(l)) < 0)
				return rc;
		}
		if ((rc = col_parse(w, s, &l->v[l->n], want_value)) < 0)
			return rc;
		l->n++;
	}
	return rc < 0 ? -EPROTO : 0;
}

/* Parses the whole payload into ln and the decoder's lists. 0, -EPROTO (message in s) or
 * -ENOMEM. */
static int line_parse(wal2json *w, json_scan *s, w2j_line *ln)
{
	json_scan_token t, key;
	for (int i = 0; i < F_NSCALARS; i++)
		ln->f[i].type = JSON_SCAN_NONE;
	ln->seen = 0;
	w->columns.present = w->identity.present = w->pk.present = false;
	w->columns.n = w->identity.n = w->pk.n = 0;
	if (json_scan_value(s, &t) < 0)
		return -EPROTO;
	if (t.type != JSON_SCAN_OBJECT) {
		json_scan_fail(s, "the payload is not a JSON object");
		return -EPROTO;
	}
	bool first = true;
	int rc;
	while ((rc = json_scan_object_next(s, &first, &key)) == 1) {
		enum w2j_field f = key_field(&key);
		if (f != F_UNKNOWN) {
			if (ln->seen & (1u << f)) {
				json_scan_fail(s, "duplicate key");
				return -EPROTO;
			}
			ln->seen |= 1u << f;
		}
		switch (f) {
		case F_COLUMNS:
			rc = list_parse(w, s, &w->columns, true);
			break;
		case F_IDENTITY:
			rc = list_parse(w, s, &w->identity, true);
			break;
		case F_PK:
			rc = list_parse(w, s, &w->pk, false);
			break;
		case F_UNKNOWN:
			rc = json_scan_skip_value(s) < 0 ? -EPROTO : 0;
			break;
		default:
			if (json_scan_value(s, &ln->f[f]) < 0)
				return -EPROTO;
			if (ln->f[f].type == JSON_SCAN_OBJECT || ln->f[f].type == JSON_SCAN_ARRAY) {
				json_scan_fail(s, "unexpected object or array");
				return -EPROTO;
			}
			rc = 0;
			break;
		}
		if (rc < 0)
			return rc;
	}
	if (rc < 0 || json_scan_finish(s) < 0)
		return -EPROTO;
	return 0;
}

/* ---- scalar fields ---------------------------------------------------------------------- */

static const char *const field_names[F_NSCALARS] = {
	[F_ACTION] = "action", [F_XID] = "xid", [F_TIMESTAMP] = "timestamp", [F_LSN] = "lsn",
	[F_NEXTLSN] = "nextlsn", [F_SCHEMA] = "schema", [F_TABLE] = "table",
	[F_TRANSACTIONAL] = "transactional", [F_PREFIX] = "prefix", [F_CONTENT] = "content",
};

/* The string field f, required. */
static int field_string(const w2j_line *ln, enum w2j_field f, const char *what,
                        const json_scan_token **out, char *err)
{
	const json_scan_token *t = &ln->f[f];
	if (t->type == JSON_SCAN_NONE)
		return w2j_fail(err, "%s has no \"%s\"", what, field_names[f]);
	if (t->type != JSON_SCAN_STRING)
		return w2j_fail(err, "\"%s\" must be a string", field_names[f]);
	*out = t;
	return 0;
}

static int field_lsn(const w2j_line *ln, enum w2j_field f, const char *what, uint64_t *out,
                     char *err)
{
	const json_scan_token *t = NULL;
	int rc = field_string(ln, f, what, &t, err);
	if (rc < 0)
		return rc;
	if (t->escaped || lsn_parse(t->p, t->len, out) < 0)
		return w2j_fail(err, "bad LSN \"%.*s\" in \"%s\"", (int)(t->len > 40 ? 40 : t->len), t->p,
		                field_names[f]);
	return 0;
}

static int field_xid(const w2j_line *ln, const char *what, uint32_t *out, char *err)
{
	const json_scan_token *t = &ln->f[F_XID];
	if (t->type == JSON_SCAN_NONE)
		return w2j_fail(err, "%s has no \"xid\"", what);
	if (json_scan_u32(t, out) < 0)
		return w2j_fail(err, "%s: \"xid\" must be an unsigned 32-bit integer", what);
	return 0;
}

/* A change inside a transaction: checks the state and that the line's xid (when given) is the
 * transaction's. */
static int txn_check(const wal2json *w, const w2j_line *ln, const char *what, char *err)
{
	if (!w->in_txn)
		return w2j_fail(err, "%s outside a transaction (no \"B\" before it)", what);
	if (ln->f[F_XID].type != JSON_SCAN_NONE) {
		uint32_t xid;
		int rc = field_xid(ln, what, &xid, err);
		if (rc < 0)
			return rc;
		if (xid != w->txn.xid)
			return w2j_fail(err, "%s has xid %u inside transaction %u", what, xid, w->txn.xid);
	}
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* Reads exactly n digits at s[*i]. */
static bool digits(const char *s, size_t len, size_t *i, int n, int *out)
{
	int v = 0;
	for (int k = 0; k < n; k++) {
		if (*i >= len || s[*i] < '0' || s[*i] > '9')
			return false;
		v = v * 10 + (s[(*i)++] - '0');
	}
	*out = v;
	return true;
}

static bool expect(const char *s, size_t len, size_t *i, char c)
{
	if (*i >= len || s[*i] != c)
		return false;
	(*i)++;
	return true;
}

/* Parses PostgreSQL's ISO timestamptz output, "YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]]" (or
 * a '-' offset), into microseconds since the Unix epoch. BC years and infinities are refused. */
static int timestamptz_parse(const char *s, size_t len, int64_t *out)
{
	size_t i = 0;
	int64_t year = 0;
	int nd = 0;
	while (i < len && s[i] >= '0' && s[i] <= '9' && nd < 6) {
		year = year * 10 + (s[i++] - '0');
		nd++;
	}
	int mon, day, hh, mi, ss, oh, om = 0, os = 0;
	if (nd < 4 || !expect(s, len, &i, '-') || !digits(s, len, &i, 2, &mon) ||
	    !expect(s, len, &i, '-') || !digits(s, len, &i, 2, &day) || !expect(s, len, &i, ' ') ||
	    !digits(s, len, &i, 2, &hh) || !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &mi) ||
	    !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &ss))
		return -1;
	int64_t us = 0;
	if (i < len && s[i] == '.') {
		i++;
		int n = 0;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (++n > 6)
				return -1;
			us = us * 10 + (s[i++] - '0');
		}
		if (n == 0)
			return -1;
		for (; n < 6; n++)
			us *= 10;
	}
	if (i >= len || (s[i] != '+' && s[i] != '-'))
		return -1;
	int sign = s[i++] == '-' ? -1 : 1;
	if (!digits(s, len, &i, 2, &oh))
		return -1;
	if (i < len && s[i] == ':') {
		i++;
		if (!digits(s, len, &i, 2, &om))
			return -1;
		if (i < len && s[i] == ':') {
			i++;
			if (!digits(s, len, &i, 2, &os))
				return -1;
		}
	}
	if (i != len) /* " BC" and anything else */
		return -1;
	static const unsigned char mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	/* PostgreSQL's timestamps end in 294276 AD, but as Unix-epoch microseconds only dates up
	 * to about 294247 fit in 64 bits: refuse the last few centuries rather than overflow. */
	if (year < 1 || year > 294000 || mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] ||
	    (mon == 2 && day == 29 && !leap) || hh > 23 || mi > 59 || ss > 59 || oh > 15 || om > 59 ||
	    os > 59)
		return -1;
	int64_t secs = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + hh * 3600 +
	               mi * 60 + ss - sign * (oh * 3600 + om * 60 + os);
	*out = secs * 1000000 + us;
	return 0;
}

/* ---- relations ---------------------------------------------------------------------------- */

/* Types whose values are never TOASTed: a column of such a type that an UPDATE line leaves out
 * was dropped, it cannot be an unchanged TOAST value. */
static bool type_fixed_width(uint32_t oid)
{
	switch (oid) {
	case OID_BOOL: case OID_INT8: case OID_INT2: case OID_INT4: case OID_OID: case OID_XID:
	case OID_CID: case OID_FLOAT4: case OID_FLOAT8: case OID_MONEY: case OID_MACADDR:
	case OID_DATE: case OID_TIME: case OID_TIMESTAMP: case OID_TIMESTAMPTZ: case OID_INTERVAL:
	case OID_TIMETZ: case OID_UUID: case OID_PG_LSN:
		return true;
	default:
		return false;
	}
}

static bool name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

static int shape_find(const shape *S, const w2j_str *name, int hint)
{
	if (hint >= 0 && hint < S->n && name_eq(S->c[hint].name, S->c[hint].name_len, name->p, name->len))
		return hint;
	for (int i = 0; i < S->n; i++)
		if (name_eq(S->c[i].name, S->c[i].name_len, name->p, name->len))
			return i;
	return -1;
}

/* Index of the named column in rel, trying hint first. */
static int rel_find(const relation *rel, const w2j_str *name, int hint)
{
	if (hint >= 0 && hint < rel->ncols) {
		const char *n = rel->cols[hint].name;
		if (strncmp(n, name->p, name->len) == 0 && n[name->len] == '\0')
			return hint;
	}
	return relation_column_index(rel, name->p, name->len);
}

static void shape_insert(shape *S, int at, const w2j_col *c, unsigned from)
{
	memmove(&S->c[at + 1], &S->c[at], (size_t)(S->n - at) * sizeof(shape_col));
	S->c[at] = (shape_col){
		.name = c->name.p, .name_len = c->name.len, .type_oid = c->has_type ? c->type_oid : 0,
		.typmod = -1, .key = false, .from = from,
	};
	S->n++;
}

static void shape_remove(shape *S, int at)
{
	memmove(&S->c[at], &S->c[at + 1], (size_t)(S->n - at - 1) * sizeof(shape_col));
	S->n--;
}

/* Merges the new-tuple columns M into S. New columns go to the end (ADD COLUMN appends). Returns
 * 0, 1 when the order contradicts S (the caller rebuilds from M alone), or -EPROTO. */
static int shape_merge_new(shape *S, const w2j_list *M, char *err)
{
	int cursor = 0;
	bool appended = false;
	for (int k = 0; k < M->n; k++) {
		const w2j_col *m = &M->v[k];
		int idx = shape_find(S, &m->name, cursor);
		if (idx < 0) {
			shape_insert(S, S->n, m, IN_NEW);
			appended = true;
			continue;
		}
		if (S->c[idx].from & IN_NEW)
			return w2j_fail(err, "column \"%.*s\" appears twice", (int)m->name.len, m->name.p);
		if (idx < cursor || appended)
			return 1;
		S->c[idx].from |= IN_NEW;
		if (m->has_type && S->c[idx].type_oid != m->type_oid) {
			S->c[idx].type_oid = m->type_oid;
			S->c[idx].typmod = -1;
		}
		cursor = idx + 1;
	}
	return 0;
}

/* Merges the identity columns into S; unknown ones are placed after the previous identity
 * column (both lists follow the table's column order). */
static int shape_merge_old(shape *S, const w2j_list *ID, char *err)
{
	int prev = -1;
	for (int k = 0; k < ID->n; k++) {
		const w2j_col *c = &ID->v[k];
		int idx = shape_find(S, &c->name, prev + 1);
		if (idx < 0) {
			shape_insert(S, prev + 1, c, IN_OLD);
			prev++;
			continue;
		}
		shape_col *sc = &S->c[idx];
		if (sc->from & IN_OLD)
			return w2j_fail(err, "identity column \"%.*s\" appears twice", (int)c->name.len,
			                c->name.p);
		if (c->has_type && sc->type_oid != c->type_oid) {
			if (sc->from & IN_NEW)
				return w2j_fail(err, "column \"%.*s\" has type %u in \"columns\" but %u in \"identity\"",
				                (int)c->name.len, c->name.p, sc->type_oid, c->type_oid);
			sc->type_oid = c->type_oid;
			sc->typmod = -1;
		}
		sc->from |= IN_OLD;
		if (idx > prev)
			prev = idx;
	}
	return 0;
}

/* True when l names exactly R's columns, in R's order, with R's types. */
static bool list_is_rel(const relation *R, const w2j_list *l)
{
	if (l->n != R->ncols)
		return false;
	for (int i = 0; i < l->n; i++) {
		const w2j_col *c = &l->v[i];
		const rel_column *rc = &R->cols[i];
		if ((c->has_type && c->type_oid != rc->type_oid) ||
		    strnlen(rc->name, c->name.len + 1) != c->name.len || memcmp(rc->name, c->name.p, c->name.len) != 0)
			return false;
	}
	return true;
}

/* The common line: the cached relation as it is. Every column list the line carries (M, ID)
 * is R's, column for column; "pk", when present, names exactly R's key columns (in table
 * order); and the line cannot teach anything about the replica identity. relation_resolve
 * would rebuild R's shape from such a line and find it the same; this finds that without
 * building it (profiled: the rebuild was most of wal2json's per-line cost besides parsing). */
static bool line_is_rel(const wal2json *w, const relation *R, const w2j_list *M, const w2j_list *ID)
{
	if ((M == NULL && ID == NULL) || (R->replident == '?' && ID != NULL))
		return false;
	if ((M != NULL && !list_is_rel(R, M)) || (ID != NULL && !list_is_rel(R, ID)))
		return false;
	if (!w->pk.present)
		return true;
	int k = 0;
	for (int i = 0; i < R->ncols; i++) {
		if (!R->cols[i].key)
			continue;
		if (k == w->pk.n)
			return false;
		const w2j_str *name = &w->pk.v[k++].name;
		if (strnlen(R->cols[i].name, name->len + 1) != name->len ||
		    memcmp(R->cols[i].name, name->p, name->len) != 0)
			return false;
	}
	return k == w->pk.n;
}

/* Finds or builds the relation for an insert, update or delete line and puts a changed shape
 * into the cache. Returns 0 and *out, -EPROTO or -ENOMEM. */
static int relation_resolve(wal2json *w, change_action action, const w2j_str *schema,
                            const w2j_str *table, const relation **out, char *err)
{
	const relation *R = relcache_get_name(w->rels, schema->p, schema->len, table->p, table->len);
	const w2j_list *M = action == CHANGE_DELETE ? NULL : &w->columns;
	const w2j_list *ID = action == CHANGE_INSERT || !w->identity.present ? NULL : &w->identity;
	if (R != NULL && line_is_rel(w, R, M, ID)) {
		*out = R;
		return 0;
	}
	int rn = R != NULL ? R->ncols : 0;
	shape S = {.n = 0, .cap = rn + (M ? M->n : 0) + (ID ? ID->n : 0)};
	S.c = arena_alloc(w->arena, (size_t)(S.cap > 0 ? S.cap : 1) * sizeof(shape_col));
	if (S.c == NULL)
		return -ENOMEM;
	for (int i = 0; i < rn; i++)
		S.c[S.n++] = (shape_col){
			.name = R->cols[i].name, .name_len = strlen(R->cols[i].name),
			.type_oid = R->cols[i].type_oid, .typmod = R->cols[i].typmod, .key = R->cols[i].key,
			.from = IN_REL,
		};
	int rc;
	if (M != NULL) {
		rc = shape_merge_new(&S, M, err);
		if (rc < 0)
			return rc;
		if (rc == 1) { /* the cache contradicts the line: trust the line */
			S.n = 0;
			if ((rc = shape_merge_new(&S, M, err)) != 0)
				return rc < 0 ? rc : w2j_fail(err, "inconsistent column list");
			for (int i = 0; i < S.n; i++) {
				int r = R != NULL ? relation_column_index(R, S.c[i].name, S.c[i].name_len) : -1;
				if (r >= 0 && R->cols[r].type_oid == S.c[i].type_oid) {
					S.c[i].typmod = R->cols[r].typmod;
					S.c[i].key = R->cols[r].key;
				}
			}
		}
	}
	if (ID != NULL && (rc = shape_merge_old(&S, ID, err)) < 0)
		return rc;

	/* Is the identity the whole row (REPLICA IDENTITY FULL)? Known from the cache when the
	 * source seeded it from the catalog (or an earlier update showed it); otherwise learned from
	 * an update whose identity lists every column of the new tuple and more than the primary
	 * key. A delete alone cannot tell a full identity from a wide key. */
	bool full = R != NULL && R->replident == 'f';
	bool learned = false;
	if ((R == NULL || R->replident == '?') && M != NULL && ID != NULL && ID->n > 0 &&
	    (!w->pk.present || ID->n > w->pk.n)) {
		learned = true;
		for (int i = 0; i < S.n && learned; i++)
			if ((S.c[i].from & IN_NEW) && !(S.c[i].from & IN_OLD))
				learned = false;
		full = learned;
	}
	/* Cached columns the line does not mention: dropped, or unchanged TOAST / not in the key. */
	for (int i = S.n - 1; i >= 0; i--) {
		unsigned from = S.c[i].from;
		if (from != IN_REL)
			continue;
		bool dropped = action == CHANGE_INSERT ||
		               (action == CHANGE_UPDATE && (full || type_fixed_width(S.c[i].type_oid))) ||
		               (action == CHANGE_DELETE && full);
		if (dropped)
			shape_remove(&S, i);
	}
	if (w->pk.present) {
		for (int i = 0; i < S.n; i++)
			S.c[i].key = false;
		for (int k = 0; k < w->pk.n; k++) {
			int idx = shape_find(&S, &w->pk.v[k].name, k);
			if (idx >= 0)
				S.c[idx].key = true;
		}
	}

	bool same = R != NULL && R->ncols == S.n && !learned;
	for (int i = 0; same && i < S.n; i++) {
		const rel_column *rc2 = &R->cols[i];
		same = name_eq(rc2->name, strlen(rc2->name), S.c[i].name, S.c[i].name_len) &&
		       rc2->type_oid == S.c[i].type_oid && rc2->key == S.c[i].key;
	}
	if (same) {
		*out = R;
		return 0;
	}

	relation desc = {
		.oid = R != NULL ? R->oid : 0,
		.schema = arena_strndup(w->arena, schema->p, schema->len),
		.name = arena_strndup(w->arena, table->p, table->len),
		.ncols = S.n,
		.cols = arena_alloc(w->arena, (size_t)(S.n > 0 ? S.n : 1) * sizeof(rel_column)),
		.replident = full ? 'f' : R != NULL ? R->replident : '?',
	};
	if (desc.schema == NULL || desc.name == NULL || desc.cols == NULL)
		return -ENOMEM;
	for (int i = 0; i < S.n; i++) {
		desc.cols[i] = (rel_column){
			.name = arena_strndup(w->arena, S.c[i].name, S.c[i].name_len),
			.type_oid = S.c[i].type_oid, .typmod = S.c[i].typmod, .key = S.c[i].key,
		};
		if (desc.cols[i].name == NULL)
			return -ENOMEM;
	}
	return relcache_put(w->rels, &desc, out);
}

/* ---- values and tuples -------------------------------------------------------------------- */

/* Converts a raw column value to PostgreSQL's text output in the arena. */
static int value_make(wal2json *w, const json_scan_token *t, uint32_t type_oid, change_value *out,
                      const char **why)
{
	switch (t->type) {
	case JSON_SCAN_NULL:
		*out = (change_value){.kind = VALUE_NULL};
		return 0;
	case JSON_SCAN_TRUE:
		*out = (change_value){.kind = VALUE_TEXT, .len = 1, .data = "t"};
		return 0;
	case JSON_SCAN_FALSE:
		*out = (change_value){.kind = VALUE_TEXT, .len = 1, .data = "f"};
		return 0;
	case JSON_SCAN_NUMBER: {
		char *d = arena_strndup(w->arena, t->p, t->len);
		if (d == NULL)
			return -ENOMEM;
		*out = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)t->len, .data = d};
		return 0;
	}
	case JSON_SCAN_STRING:
		break;
	default:
		*why = "unexpected JSON value";
		return -EPROTO;
	}
	if (t->len > UINT32_MAX - 3) {
		*why = "value too long";
		return -EPROTO;
	}
	/* wal2json strips bytea's "\x" prefix; put it back. */
	size_t pre = type_oid == OID_BYTEA ? 2 : 0;
	char *d = arena_alloc(w->arena, pre + t->len + 1);
	if (d == NULL)
		return -ENOMEM;
	memcpy(d, "\\x", pre);
	size_t n = t->len;
	if (t->escaped) {
		long r = json_scan_unescape(t->p, t->len, d + pre, why);
		if (r < 0)
			return -EPROTO;
		n = (size_t)r;
	} else {
		memcpy(d + pre, t->p, n);
	}
	d[pre + n] = '\0';
	*out = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)(pre + n), .data = d};
	return 0;
}

/* Builds rel->ncols values from list l; columns the list lacks get fill. */
static int tuple_build(wal2json *w, const relation *rel, const w2j_list *l, value_kind fill,
                       const char *what, change_value **out, char *err)
{
	change_value *t = arena_alloc(w->arena, (size_t)(rel->ncols > 0 ? rel->ncols : 1) * sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	for (int i = 0; i < rel->ncols; i++)
		t[i] = (change_value){.kind = fill};
	int hint = 0;
	for (int k = 0; k < l->n; k++) {
		const w2j_col *c = &l->v[k];
		int idx = rel_find(rel, &c->name, hint);
		if (idx < 0)
			return w2j_fail(err, "unknown column \"%.*s\" in \"%s\" of %s.%s", (int)c->name.len,
			                c->name.p, what, rel->schema, rel->name);
		const char *why = NULL;
		uint32_t type = c->has_type ? c->type_oid : rel->cols[idx].type_oid;
		int rc = value_make(w, &c->value, type, &t[idx], &why);
		if (rc == -EPROTO)
			return w2j_fail(err, "column \"%s\" in \"%s\": %s", rel->cols[idx].name, what, why);
		if (rc < 0)
			return rc;
		hint = idx + 1;
	}
	*out = t;
	return 0;
}

static bool value_eq(const change_value *a, const change_value *b)
{
	if (a->kind != b->kind)
		return false;
	return a->kind != VALUE_TEXT || (a->len == b->len && memcmp(a->data, b->data, a->len) == 0);
}

/* ---- actions ------------------------------------------------------------------------------ */

static int table_names(wal2json *w, json_scan *s, const w2j_line *ln, const char *what,
                       w2j_str *schema, w2j_str *table, char *err)
{
	const json_scan_token *ts = NULL, *tt = NULL;
	int rc = field_string(ln, F_SCHEMA, what, &ts, err);
	if (rc == 0)
		rc = field_string(ln, F_TABLE, what, &tt, err);
	if (rc == 0)
		rc = str_decode(w, s, ts, schema);
	if (rc == 0)
		rc = str_decode(w, s, tt, table);
	if (rc == -EPROTO && s->err != NULL)
		return w2j_fail(err, "%s: %s", what, s->err);
	return rc;
}

static int on_begin(wal2json *w, const w2j_line *ln, char *err)
{
	if (w->in_txn)
		return w2j_fail(err, "\"B\" inside transaction %u (no \"C\" before it)", w->txn.xid);
	change_txn txn;
	const json_scan_token *ts = NULL;
	int rc = field_xid(ln, "\"B\"", &txn.xid, err);
	if (rc == 0)
		rc = field_lsn(ln, F_LSN, "\"B\"", &txn.commit_lsn, err);
	if (rc == 0)
		rc = field_lsn(ln, F_NEXTLSN, "\"B\"", &txn.end_lsn, err);
	if (rc == 0)
		rc = field_string(ln, F_TIMESTAMP, "\"B\"", &ts, err);
	if (rc < 0)
		return rc;
	if (ts->escaped || timestamptz_parse(ts->p, ts->len, &txn.commit_time) < 0)
		return w2j_fail(err, "bad \"timestamp\" \"%.*s\"", (int)(ts->len > 40 ? 40 : ts->len), ts->p);
	w->txn = txn;
	w->in_txn = true;
	w->begun = false;
	return 0;
}

/* Delivers a change of the current transaction, announcing the transaction first if this is its
 * first change. Like pgoutput on PostgreSQL 15+, a transaction without changes (DDL, or changes
 * the plugin filtered) reaches the sink neither as begin nor as commit. */
static int txn_emit(wal2json *w, change *c)
{
	if (!w->begun) {
		w->begun = true;
		int rc = w->sink.begin_cb != NULL ? w->sink.begin_cb(w->sink.arg, &w->txn) : 0;
		if (rc != 0)
			return rc;
	}
	return decoder_emit_change(&w->sink, c);
}

static int on_commit(wal2json *w, const w2j_line *ln, char *err)
{
	if (!w->in_txn)
		return w2j_fail(err, "\"C\" without \"B\"");
	uint32_t xid;
	uint64_t lsn, next;
	int rc = field_xid(ln, "\"C\"", &xid, err);
	if (rc == 0)
		rc = field_lsn(ln, F_LSN, "\"C\"", &lsn, err);
	if (rc == 0)
		rc = field_lsn(ln, F_NEXTLSN, "\"C\"", &next, err);
	if (rc < 0)
		return rc;
	if (xid != w->txn.xid)
		return w2j_fail(err, "\"C\" for xid %u inside transaction %u", xid, w->txn.xid);
	if (lsn != w->txn.commit_lsn || next != w->txn.end_lsn) {
		char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
		return w2j_fail(err, "\"C\" of xid %u has lsn %s, \"B\" said %s", xid, lsn_format(lsn, a),
		                lsn_format(w->txn.commit_lsn, b));
	}
	w->txn.commit_lsn = lsn;
	w->txn.end_lsn = next;
	w->in_txn = false;
	if (!w->begun)
		return 0; /* nothing was announced: the empty transaction stays silent */
	w->begun = false;
	return w->sink.commit_cb != NULL ? w->sink.commit_cb(w->sink.arg, &w->txn) : 0;
}

static int on_row(wal2json *w, json_scan *s, const w2j_line *ln, change_action action,
                  uint64_t wal_start, char *err)
{
	const char *what = action == CHANGE_INSERT ? "\"I\"" : action == CHANGE_UPDATE ? "\"U\"" : "\"D\"";
	int rc = txn_check(w, ln, what, err);
	if (rc < 0)
		return rc;
	w2j_str schema, table;
	if ((rc = table_names(w, s, ln, what, &schema, &table, err)) < 0)
		return rc;
	if (action != CHANGE_DELETE && !w->columns.present)
		return w2j_fail(err, "%s has no \"columns\"", what);
	if (action == CHANGE_DELETE && !w->identity.present)
		return w2j_fail(err, "%s has no \"identity\"", what);

	const relation *rel;
	if ((rc = relation_resolve(w, action, &schema, &table, &rel, err)) < 0)
		return rc;
	change c = {.action = action, .lsn = wal_start, .txn = &w->txn, .rel = rel};
	if (action != CHANGE_DELETE) {
		value_kind fill = action == CHANGE_INSERT ? VALUE_ABSENT : VALUE_UNCHANGED;
		if ((rc = tuple_build(w, rel, &w->columns, fill, "columns", &c.new_tuple, err)) < 0)
			return rc;
	}
	if (w->identity.present && action != CHANGE_INSERT) {
		if ((rc = tuple_build(w, rel, &w->identity, VALUE_ABSENT, "identity", &c.old_tuple, err)) < 0)
			return rc;
		/* wal2json's identity for an UPDATE without a logged old tuple is the key taken from the
		 * new tuple; pgoutput sends no old tuple then. */
		if (action == CHANGE_UPDATE && w->identity.n < rel->ncols) {
			bool same = true;
			for (int i = 0; same && i < rel->ncols; i++) {
				const change_value *o = &c.old_tuple[i], *n = &c.new_tuple[i];
				if (o->kind != VALUE_ABSENT && n->kind != VALUE_UNCHANGED && !value_eq(o, n))
					same = false;
			}
			if (same)
				c.old_tuple = NULL;
		}
	}
	return txn_emit(w, &c);
}

static int on_truncate(wal2json *w, json_scan *s, const w2j_line *ln, uint64_t wal_start, char *err)
{
	int rc = txn_check(w, ln, "\"T\"", err);
	if (rc < 0)
		return rc;
	w2j_str schema, table;
	if ((rc = table_names(w, s, ln, "\"T\"", &schema, &table, err)) < 0)
		return rc;
	const relation *rel = relcache_get_name(w->rels, schema.p, schema.len, table.p, table.len);
	if (rel == NULL) {
		/* Never seen: a relation without columns, completed by the next insert or update. */
		relation desc = {
			.schema = arena_strndup(w->arena, schema.p, schema.len),
			.name = arena_strndup(w->arena, table.p, table.len),
			.cols = NULL, .ncols = 0, .replident = '?',
		};
		if (desc.schema == NULL || desc.name == NULL)
			return -ENOMEM;
		if ((rc = relcache_put(w->rels, &desc, &rel)) < 0)
			return rc;
	}
	/* wal2json says nothing about CASCADE or RESTART IDENTITY. */
	change c = {.action = CHANGE_TRUNCATE, .lsn = wal_start, .txn = &w->txn, .rel = rel};
	return txn_emit(w, &c);
}

static int on_message(wal2json *w, const w2j_line *ln, uint64_t wal_start, char *err)
{
	const json_scan_token *tr = &ln->f[F_TRANSACTIONAL];
	if (tr->type == JSON_SCAN_NONE)
		return w2j_fail(err, "\"M\" has no \"transactional\"");
	if (tr->type != JSON_SCAN_TRUE && tr->type != JSON_SCAN_FALSE)
		return w2j_fail(err, "\"transactional\" must be true or false");
	bool transactional = tr->type == JSON_SCAN_TRUE;
	int rc = transactional ? txn_check(w, ln, "transactional \"M\"", err) : 0;
	const json_scan_token *tp = NULL, *tc = NULL;
	if (rc == 0)
		rc = field_string(ln, F_PREFIX, "\"M\"", &tp, err);
	if (rc == 0)
		rc = field_string(ln, F_CONTENT, "\"M\"", &tc, err);
	if (rc < 0)
		return rc;
	change_value prefix, content;
	const char *why = NULL;
	rc = value_make(w, tp, 0, &prefix, &why);
	if (rc == 0)
		rc = value_make(w, tc, 0, &content, &why);
	if (rc == -EPROTO)
		return w2j_fail(err, "\"M\": %s", why);
	if (rc < 0)
		return rc;
	change c = {
		.action = CHANGE_MESSAGE, .lsn = wal_start, .txn = transactional ? &w->txn : NULL,
		.transactional = transactional, .prefix = prefix.data, .content = content.data,
		.content_len = content.len,
	};
	return transactional ? txn_emit(w, &c) : decoder_emit_change(&w->sink, &c);
}

/* ---- decoder_ops -------------------------------------------------------------------------- */

static int w2j_create(const decoder_params *p, void **out)
{
	if (p->relations == NULL || p->sink.change_cb == NULL)
		return -EINVAL;
	wal2json *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->rels = p->relations;
	w->sink = p->sink;
	w->arena = arena_create(W2J_ARENA_BLOCK);
	if (w->arena == NULL) {
		free(w);
		return -ENOMEM;
	}
	*out = w;
	return 0;
}

static void w2j_destroy(void *impl)
{
	wal2json *w = impl;
	if (w == NULL)
		return;
	free(w->columns.v);
	free(w->identity.v);
	free(w->pk.v);
	for (size_t i = 0; i < w->n_no_identity; i++)
		free(w->no_identity[i]);
	free(w->no_identity);
	arena_destroy(w->arena);
	free(w);
}

static const char *w2j_start_options(void *impl)
{
	(void)impl;
	return w2j_options;
}

static int w2j_decode(void *impl, uint64_t wal_start, const uint8_t *data, size_t len,
                      char err[DECODER_ERROR_MAX])
{
	wal2json *w = impl;
	json_scan s;
	w2j_line ln;
	json_scan_init(&s, (const char *)data, len);
	int rc = line_parse(w, &s, &ln);
	if (rc < 0) {
		if (rc == -EPROTO)
			rc = w2j_fail(err, "%s at byte %zu of %zu", s.err ? s.err : "malformed JSON", s.err_off, len);
		goto out;
	}
	const json_scan_token *a = &ln.f[F_ACTION];
	if (a->type == JSON_SCAN_NONE) {
		rc = w2j_fail(err, "no \"action\" in the payload");
		goto out;
	}
	if (a->type != JSON_SCAN_STRING || a->len != 1) {
		rc = w2j_fail(err, "unknown action \"%.*s\"", (int)(a->len > 20 ? 20 : a->len), a->p);
		goto out;
	}
	switch (a->p[0]) {
	case 'B': rc = on_begin(w, &ln, err); break;
	case 'C': rc = on_commit(w, &ln, err); break;
	case 'I': rc = on_row(w, &s, &ln, CHANGE_INSERT, wal_start, err); break;
	case 'U': rc = on_row(w, &s, &ln, CHANGE_UPDATE, wal_start, err); break;
	case 'D': rc = on_row(w, &s, &ln, CHANGE_DELETE, wal_start, err); break;
	case 'T': rc = on_truncate(w, &s, &ln, wal_start, err); break;
	case 'M': rc = on_message(w, &ln, wal_start, err); break;
	default: rc = w2j_fail(err, "unknown action \"%c\"", a->p[0]); break;
	}
out:
	arena_reset(w->arena);
	return rc;
}

/* wal2json drops an UPDATE or DELETE of a table that has no replica identity (no primary key
 * under REPLICA IDENTITY DEFAULT, or NOTHING) and says so in a WARNING per change: one log line
 * per table instead, saying what to do. Other notices are logged as they come. */
static bool w2j_notice(void *impl, const char *message)
{
	static const char marker[] = "no tuple identifier for ";
	wal2json *w = impl;
	const char *m = strstr(message, marker);
	const char *in = m != NULL ? strstr(m, " in table ") : NULL;
	if (in == NULL)
		return false;
	const char *table = in + strlen(" in table ");
	size_t len = strcspn(table, "\n");
	for (size_t i = 0; i < w->n_no_identity; i++)
		if (strlen(w->no_identity[i]) == len && memcmp(w->no_identity[i], table, len) == 0)
			return true; /* said already */
	char **grown = realloc(w->no_identity, (w->n_no_identity + 1) * sizeof(*grown));
	char *name = strndup(table, len);
	if (grown != NULL)
		w->no_identity = grown;
	if (grown == NULL || name == NULL) {
		free(name);
		return false; /* out of memory: logged as is */
	}
	w->no_identity[w->n_no_identity++] = name;
	log_warn("wal2json.no_replica_identity", "table=%s: has no replica identity, so wal2json does "
	         "not stream its UPDATE and DELETE (they are missing from the feed); give it a primary "
	         "key or ALTER TABLE ... REPLICA IDENTITY FULL (said once per table)", name);
	return true;
}

static void w2j_reset(void *impl)
{
	wal2json *w = impl;
	w->in_txn = false;
	w->begun = false;
	arena_reset(w->arena);
}

const decoder_ops wal2json_decoder_ops = {
	.name = "wal2json",
	.create = w2j_create,
	.destroy = w2j_destroy,
	.start_options = w2j_start_options,
	.decode = w2j_decode,
	.reset = w2j_reset,
	.notice = w2j_notice,
};
