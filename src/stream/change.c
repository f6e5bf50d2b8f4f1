/*
 * change — helpers on the normalized change record and its one JSON form, shared by
 * `walcast tail`, the differential decoder test and (later) the sinks.
 */
#include "change.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lsn.h"

enum {
	OID_BOOL = 16,
	OID_INT8 = 20,
	OID_INT2 = 21,
	OID_INT4 = 23,
	OID_OID = 26,
	OID_JSON = 114,
	OID_FLOAT4 = 700,
	OID_FLOAT8 = 701,
	OID_NUMERIC = 1700,
	OID_JSONB = 3802,
};

void change_fill_unchanged(change *c)
{
	if (c->new_tuple == NULL || c->old_tuple == NULL || c->rel == NULL)
		return;
	for (int i = 0; i < c->rel->ncols; i++) {
		change_value *nv = &c->new_tuple[i];
		const change_value *ov = &c->old_tuple[i];
		if (nv->kind == VALUE_UNCHANGED && (ov->kind == VALUE_TEXT || ov->kind == VALUE_NULL))
			*nv = *ov;
	}
}

static const char *const action_names[] = {
	[CHANGE_INSERT] = "insert",   [CHANGE_UPDATE] = "update",   [CHANGE_DELETE] = "delete",
	[CHANGE_TRUNCATE] = "truncate", [CHANGE_MESSAGE] = "message",
};

const char *change_action_name(change_action a)
{
	if (a < CHANGE_INSERT || a > CHANGE_MESSAGE)
		return "unknown";
	return action_names[a];
}

int change_action_parse(const char *s, change_action *out)
{
	for (int a = CHANGE_INSERT; a <= CHANGE_MESSAGE; a++) {
		if (strcmp(s, action_names[a]) == 0) {
			*out = (change_action)a;
			return 0;
		}
	}
	return -EINVAL;
}

void change_time_format(int64_t unix_us, char out[CHANGE_TIME_MAX])
{
	int64_t secs = unix_us / 1000000;
	int64_t us = unix_us % 1000000;
	if (us < 0) {
		us += 1000000;
		secs -= 1;
	}
	time_t t = (time_t)secs;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL) {
		snprintf(out, CHANGE_TIME_MAX, "out-of-range");
		return;
	}
	int year = tm.tm_year + 1900;
	if (year < 0 || year > 9999) {
		snprintf(out, CHANGE_TIME_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", year, tm.tm_mon + 1,
		         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us);
		return;
	}
	/* The common case by hand: it runs for every line walcast writes. */
	const int fields[] = {year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us};
	const int widths[] = {4, 2, 2, 2, 2, 2, 6};
	const char seps[] = "--T::.Z";
	char *o = out;
	for (int f = 0; f < 7; f++) {
		for (int d = widths[f] - 1, v = fields[f]; d >= 0; d--, v /= 10)
			o[d] = (char)('0' + v % 10);
		o += widths[f];
		*o++ = seps[f];
	}
	*o = '\0';
}

bool change_json_number(const char *s, size_t n)
{
	size_t i = 0;
	if (i < n && s[i] == '-')
		i++;
	if (i == n)
		return false;
	if (s[i] == '0') {
		i++;
	} else if (s[i] >= '1' && s[i] <= '9') {
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	} else {
		return false;
	}
	if (i < n && s[i] == '.') {
		i++;
		size_t d = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		size_t d = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	return i == n;
}

/* Appends json text as is, but with raw line breaks (legal between tokens of the json type,
 * never inside its strings) turned into spaces, so a record stays on one line. */
static int json_embed(buf *out, const char *s, size_t n)
{
	size_t start = out->len;
	int rc = buf_append(out, s, n);
	if (rc < 0)
		return rc;
	for (size_t i = start; i < out->len; i++)
		if (out->data[i] == '\n' || out->data[i] == '\r')
			out->data[i] = ' ';
	return 0;
}

/* Length of the prefix of s[0..n) that JSON strings carry as is: printable ASCII except '"' and
 * '\\'. Eight bytes at a time (the bit tricks are exact as "some byte is ..." tests). */
static inline __attribute__((always_inline)) size_t json_plain_prefix(const char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x;
		memcpy(&x, s + i, 8);
		uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
		uint64_t bad = (x & highs) | ((x - ones * 0x20) & ~x & highs) | ((q - ones) & ~q & highs) |
		               ((b - ones) & ~b & highs);
		if (bad != 0)
			break;
	}
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
			break;
		i++;
	}
	return i;
}

/* The rest of json_string_write once s[i] needs escaping: '"' and '\\' are escaped inline
 * between copied runs (bytea's "\\x..." needs that); a string with anything else to escape
 * (control characters, UTF-8) goes to buf_json_string whole. */
static __attribute__((noinline)) int json_string_escape_runs(buf *out, const char *s, size_t n, size_t i)
{
	if (n > (SIZE_MAX - 3) / 2)
		return buf_json_string(out, s, n);
	int rc = buf_reserve(out, 2 * n + 2);
	if (rc < 0)
		return rc;
	char *o = out->data + out->len;
	*o++ = '"';
	memcpy(o, s, i);
	o += i;
	while (i < n) {
		char c = s[i];
		if (c != '"' && c != '\\') {
			out->data[out->len] = '\0'; /* nothing written: the general escaper takes it */
			return buf_json_string(out, s, n);
		}
		*o++ = '\\';
		*o++ = c;
		i++;
		size_t run = json_plain_prefix(s + i, n - i);
		memcpy(o, s + i, run);
		o += run;
		i += run;
	}
	*o++ = '"';
	*o = '\0';
	out->len = (size_t)(o - out->data);
	return 0;
}

/* buf_json_string, byte for byte, with plain ASCII copied in runs: profiled, escaping the
 * values byte by byte was a third of walcast's instructions per row. The common case, nothing
 * to escape, is one copy. */
static int json_string_write(buf *out, const char *s, size_t n)
{
	size_t i = json_plain_prefix(s, n);
	if (i != n)
		return json_string_escape_runs(out, s, n, i);
	if (n > SIZE_MAX - 3)
		return -ENOMEM;
	int rc = buf_reserve(out, n + 2);
	if (rc < 0)
		return rc;
	char *o = out->data + out->len;
	o[0] = '"';
	memcpy(o + 1, s, n);
	o[n + 1] = '"';
	out->len += n + 2;
	out->data[out->len] = '\0';
	return 0;
}

static int value_write(buf *out, const change_value *v, uint32_t type_oid)
{
	if (v->kind == VALUE_NULL)
		return buf_append(out, "null", 4);
	switch (type_oid) {
	case OID_BOOL:
		if (v->len == 1 && (v->data[0] == 't' || v->data[0] == 'f'))
			return v->data[0] == 't' ? buf_append(out, "true", 4) : buf_append(out, "false", 5);
		break;
	case OID_INT2:
	case OID_INT4:
	case OID_OID:
	case OID_FLOAT4:
	case OID_FLOAT8:
		/* Every value of these types is exact as an IEEE double: a JSON number. */
		if (change_json_number(v->data, v->len))
			return buf_append(out, v->data, v->len);
		break;
	case OID_INT8:
	case OID_NUMERIC:
		/* Not exact as a double (beyond 2^53, or more digits): always a string, PostgreSQL's
		 * text digit for digit, so a consumer's type for the column never depends on the
		 * value (the rule Debezium uses for precise decimals). */
		break;
	case OID_JSON:
	case OID_JSONB:
		if (v->len > 0)
			return json_embed(out, v->data, v->len);
		break;
	default:
		break;
	}
	return json_string_write(out, v->data, v->len);
}

/* ---- the per-relation and per-transaction cache ------------------------------------------ */

/* What change_json_write would escape or format again on every line, kept per relation version
 * (keyed by the relation's address and its unique id) and per transaction. Profiled: escaping the
 * column names was a third of walcast's JSON-string work on a 13-column table. */
#define JC_SLOTS 16 /* direct-mapped by relation id; a collision only rebuilds an entry */

typedef struct jc_rel {
	const relation *rel; /* NULL: empty slot */
	uint64_t id;
	int ncols;
	buf text;      /* ,"schema":S,"table":T then "col":, for each column */
	uint32_t *off; /* ncols + 2: the table part is text[0..off[1]), column i text[off[i+1]..off[i+2]) */
	buf columns;   /* ,"columns":[...], built on first use (CHANGE_JSON_TYPES) */
	bool has_columns;
} jc_rel;

struct change_json_cache {
	jc_rel rel[JC_SLOTS];
	bool txn_valid;
	uint32_t xid;
	uint64_t commit_lsn;
	int64_t commit_time;
	size_t txn_len;
	char txn_text[160]; /* ","xid":N,"commit_lsn":"X/Y","commit_time":"..."" */
};

change_json_cache *change_json_cache_create(void)
{
	change_json_cache *jc = calloc(1, sizeof(*jc));
	if (jc == NULL)
		return NULL;
	for (int i = 0; i < JC_SLOTS; i++) {
		buf_init(&jc->rel[i].text);
		buf_init(&jc->rel[i].columns);
	}
	return jc;
}

void change_json_cache_destroy(change_json_cache *jc)
{
	if (jc == NULL)
		return;
	for (int i = 0; i < JC_SLOTS; i++) {
		buf_fini(&jc->rel[i].text);
		buf_fini(&jc->rel[i].columns);
		free(jc->rel[i].off);
	}
	free(jc);
}

static int columns_write(buf *out, const relation *rel);

/* The entry for rel, built when missing or stale. NULL when out of memory (the caller then
 * writes without the cache). */
static jc_rel *jc_get(change_json_cache *jc, const relation *rel)
{
	jc_rel *e = &jc->rel[rel->id % JC_SLOTS];
	if (e->rel == rel && e->id == rel->id && e->ncols == rel->ncols)
		return e;
	e->rel = NULL;
	e->has_columns = false;
	uint32_t *off = realloc(e->off, (size_t)(rel->ncols + 2) * sizeof(*off));
	if (off == NULL)
		return NULL;
	e->off = off;
	buf *t = &e->text;
	buf_clear(t);
	int rc = buf_puts(t, ",\"schema\":");
	if (rc == 0)
		rc = buf_json_string(t, rel->schema, strlen(rel->schema));
	if (rc == 0)
		rc = buf_puts(t, ",\"table\":");
	if (rc == 0)
		rc = buf_json_string(t, rel->name, strlen(rel->name));
	off[0] = 0;
	off[1] = (uint32_t)t->len;
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		rc = buf_json_string(t, rel->cols[i].name, strlen(rel->cols[i].name));
		if (rc == 0)
			rc = buf_putc(t, ':');
		off[i + 2] = (uint32_t)t->len;
	}
	if (rc < 0 || t->len > UINT32_MAX)
		return NULL;
	e->rel = rel;
	e->id = rel->id;
	e->ncols = rel->ncols;
	return e;
}

/* Column i's escaped name followed by ':' (n includes the ':'). */
static inline const char *jc_name(const jc_rel *e, int i, size_t *n)
{
	*n = e->off[i + 2] - e->off[i + 1];
	return e->text.data + e->off[i + 1];
}

/* Writes {"col":value,...} for the columns the tuple carries (skipping absent and unchanged). */
static int tuple_write(buf *out, const relation *rel, const jc_rel *e, const change_value *t)
{
	int rc = buf_putc(out, '{');
	bool first = true;
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		if (t[i].kind == VALUE_ABSENT || t[i].kind == VALUE_UNCHANGED)
			continue;
		if (!first)
			rc = buf_putc(out, ',');
		first = false;
		if (rc == 0 && e != NULL) {
			size_t n;
			const char *name = jc_name(e, i, &n);
			rc = buf_append(out, name, n);
		} else if (rc == 0) {
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
			if (rc == 0)
				rc = buf_putc(out, ':');
		}
		if (rc == 0)
			rc = value_write(out, &t[i], rel->cols[i].type_oid);
	}
	return rc == 0 ? buf_putc(out, '}') : rc;
}

static int unchanged_write(buf *out, const relation *rel, const change_value *t)
{
	int rc = 0;
	bool any = false;
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		if (t[i].kind != VALUE_UNCHANGED)
			continue;
		rc = buf_puts(out, any ? "," : ",\"unchanged\":[");
		any = true;
		if (rc == 0)
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
	}
	if (rc == 0 && any)
		rc = buf_putc(out, ']');
	return rc;
}

static int errors_write(buf *out, const relation *rel, const char *const *errors)
{
	int rc = 0;
	bool any = false;
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		if (errors[i] == NULL)
			continue;
		rc = buf_puts(out, any ? "," : ",\"errors\":{");
		any = true;
		if (rc == 0)
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
		if (rc == 0)
			rc = buf_putc(out, ':');
		if (rc == 0)
			rc = buf_json_string(out, errors[i], strlen(errors[i]));
	}
	if (rc == 0 && any)
		rc = buf_putc(out, '}');
	return rc;
}

/* ,"columns":[...] from the cache entry (built on first use), or directly without one. */
static int columns_write_cached(buf *out, const relation *rel, jc_rel *e)
{
	if (e == NULL)
		return columns_write(out, rel);
	if (!e->has_columns) {
		buf_clear(&e->columns);
		if (columns_write(&e->columns, rel) < 0)
			return columns_write(out, rel);
		e->has_columns = true;
	}
	return buf_append(out, e->columns.data, e->columns.len);
}

static int columns_write(buf *out, const relation *rel)
{
	int rc = buf_puts(out, ",\"columns\":[");
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		rc = buf_puts(out, i ? ",{\"name\":" : "{\"name\":");
		if (rc == 0)
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
		if (rc == 0)
			rc = buf_printf(out, ",\"type\":%u}", rel->cols[i].type_oid);
	}
	return rc == 0 ? buf_putc(out, ']') : rc;
}

/* The transaction part of the header: ","xid":N,"commit_lsn":"X/Y","commit_time":"T"", formatted
 * into o; returns the end. */
static char *txn_format(char *o, const change_txn *txn)
{
	char xid[16];
	size_t n = 0;
	uint32_t x = txn->xid;
	do
		xid[n++] = (char)('0' + x % 10);
	while ((x /= 10) != 0);
	o = stpcpy(o, "\",\"xid\":");
	while (n > 0)
		*o++ = xid[--n];
	o = stpcpy(o, ",\"commit_lsn\":\"");
	lsn_format(txn->commit_lsn, o);
	o += strlen(o);
	o = stpcpy(o, "\",\"commit_time\":\"");
	change_time_format(txn->commit_time, o);
	o += strlen(o);
	return stpcpy(o, "\"");
}

int change_json_write_cached(change_json_cache *jc, buf *out, const change *c, unsigned flags)
{
	/* The header is assembled by hand, not with buf_printf: it is on every line (profiled). */
	char head[256];
	char *o = head;
	o = stpcpy(o, "{\"lsn\":\"");
	lsn_format(c->lsn, o);
	o += strlen(o);
	if (c->txn != NULL && jc != NULL) {
		/* Once per transaction: its changes share xid, commit LSN and commit time. */
		const change_txn *x = c->txn;
		if (!jc->txn_valid || jc->xid != x->xid || jc->commit_lsn != x->commit_lsn ||
		    jc->commit_time != x->commit_time) {
			jc->txn_len = (size_t)(txn_format(jc->txn_text, x) - jc->txn_text);
			jc->xid = x->xid;
			jc->commit_lsn = x->commit_lsn;
			jc->commit_time = x->commit_time;
			jc->txn_valid = true;
		}
		memcpy(o, jc->txn_text, jc->txn_len);
		o += jc->txn_len;
	} else if (c->txn != NULL) {
		o = txn_format(o, c->txn);
	} else {
		o = stpcpy(o, "\",\"xid\":null,\"commit_lsn\":null,\"commit_time\":null");
	}
	o = stpcpy(o, ",\"action\":\"");
	o = stpcpy(o, change_action_name(c->action));
	o = stpcpy(o, "\"");
	int rc = buf_append(out, head, (size_t)(o - head));
	if (rc != 0)
		return rc;
	if (c->action == CHANGE_MESSAGE) {
		rc = buf_printf(out, ",\"transactional\":%s,\"prefix\":", c->transactional ? "true" : "false");
		if (rc == 0)
			rc = buf_json_string(out, c->prefix ? c->prefix : "", c->prefix ? strlen(c->prefix) : 0);
		if (rc == 0)
			rc = buf_puts(out, ",\"content\":");
		if (rc == 0)
			rc = buf_json_string(out, c->content ? c->content : "", c->content_len);
		return rc == 0 ? buf_putc(out, '}') : rc;
	}
	if (c->rel == NULL)
		return -EINVAL;
	jc_rel *e = jc != NULL && c->rel->id != 0 ? jc_get(jc, c->rel) : NULL;
	if (e != NULL) {
		rc = buf_append(out, e->text.data, e->off[1]);
	} else {
		rc = buf_puts(out, ",\"schema\":");
		if (rc == 0)
			rc = buf_json_string(out, c->rel->schema, strlen(c->rel->schema));
		if (rc == 0)
			rc = buf_puts(out, ",\"table\":");
		if (rc == 0)
			rc = buf_json_string(out, c->rel->name, strlen(c->rel->name));
	}
	if (rc == 0 && (flags & CHANGE_JSON_TYPES))
		rc = columns_write_cached(out, c->rel, e);
	if (rc == 0 && c->new_tuple != NULL) {
		rc = buf_puts(out, ",\"new\":");
		if (rc == 0)
			rc = tuple_write(out, c->rel, e, c->new_tuple);
	}
	if (rc == 0 && c->old_tuple != NULL) {
		rc = buf_puts(out, ",\"old\":");
		if (rc == 0)
			rc = tuple_write(out, c->rel, e, c->old_tuple);
	}
	if (rc == 0 && c->new_tuple != NULL)
		rc = unchanged_write(out, c->rel, c->new_tuple);
	if (rc == 0 && c->row_errors != NULL)
		rc = errors_write(out, c->rel, c->row_errors);
	return rc == 0 ? buf_putc(out, '}') : rc;
}

int change_json_write(buf *out, const change *c, unsigned flags)
{
	return change_json_write_cached(NULL, out, c, flags);
}
