/*
 * test_wal2json — the wal2json decoder (plugins/decoders/wal2json.c, plugins/decoders/json_scan.c): a real
 * PostgreSQL 15 + wal2json 2.5 stream captured by tests/fixtures/capture_wal2json.sh decoded
 * against its reviewed golden (with the relation cache seeded from the catalog as the source
 * does, and unseeded), every action built by hand, relation-shape following (ALTER TABLE,
 * unchanged TOAST), the identity rules, every error path, escapes, every truncation of every
 * captured line, and the memory bound over 100k inserts.
 *
 * Run from the repository root (or with WALCAST_SOURCE_DIR set to it). With
 * WALCAST_UPDATE_GOLDEN=1 the workload test rewrites tests/fixtures/wal2json/workload.jsonl
 * instead of comparing; review that diff by hand.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "change.h"
#include "decoder.h"
#include "lsn.h"
#include "relcache.h"

#include "json_scan.h"

extern const decoder_ops wal2json_decoder_ops;

#include "heap.h"

/* --- recording sink ---------------------------------------------------------------------- */

#define REC_COLS 24
#define TEXT_MAX 160

typedef struct rec_change {
	change_action action;
	uint64_t lsn;
	bool has_txn;
	change_txn txn;
	const relation *rel;
	uint32_t rel_version;
	char replident;
	int ncols;
	char colname[REC_COLS][32];
	uint32_t coltype[REC_COLS];
	bool colkey[REC_COLS];
	bool has_new, has_old;
	uint32_t new_kind[REC_COLS], old_kind[REC_COLS];
	char new_text[REC_COLS][TEXT_MAX], old_text[REC_COLS][TEXT_MAX];
	uint32_t new_len[REC_COLS];
	bool transactional;
	char prefix[64];
	char content[TEXT_MAX];
	size_t content_len;
	bool cascade, restart_identity;
} rec_change;

typedef struct fixture {
	relcache *rc;
	decoder *dec;
	char err[DECODER_ERROR_MAX];
	rec_change last;
	int nchange, nbegin, ncommit;
	change_txn begin_txn, commit_txn;
	int begin_rc, change_rc, commit_rc;
	buf json;     /* when json_on: one change_json_write line per change */
	bool json_on;
} fixture;

static void tuple_record(const change_value *t, int ncols, uint32_t *kinds, char text[][TEXT_MAX],
                         uint32_t *lens)
{
	for (int i = 0; i < ncols && i < REC_COLS; i++) {
		kinds[i] = t[i].kind;
		text[i][0] = '\0';
		if (t[i].kind == VALUE_TEXT) {
			/* The decoder promises NUL-terminated text. */
			assert_int_equal(t[i].data[t[i].len], '\0');
			snprintf(text[i], TEXT_MAX, "%s", t[i].data);
			if (lens)
				lens[i] = t[i].len;
		}
	}
}

static int begin_cb(void *arg, const change_txn *txn)
{
	fixture *f = arg;
	f->nbegin++;
	f->begin_txn = *txn;
	return f->begin_rc;
}

static int commit_cb(void *arg, const change_txn *txn)
{
	fixture *f = arg;
	f->ncommit++;
	f->commit_txn = *txn;
	return f->commit_rc;
}

static int change_cb(void *arg, change *c)
{
	fixture *f = arg;
	rec_change *r = &f->last;
	memset(r, 0, sizeof(*r));
	f->nchange++;
	r->action = c->action;
	r->lsn = c->lsn;
	r->has_txn = c->txn != NULL;
	if (c->txn)
		r->txn = *c->txn;
	r->rel = c->rel;
	if (c->rel) {
		r->rel_version = c->rel->version;
		r->replident = c->rel->replident;
		r->ncols = c->rel->ncols;
		for (int i = 0; i < c->rel->ncols && i < REC_COLS; i++) {
			snprintf(r->colname[i], sizeof(r->colname[i]), "%s", c->rel->cols[i].name);
			r->coltype[i] = c->rel->cols[i].type_oid;
			r->colkey[i] = c->rel->cols[i].key;
		}
	}
	r->has_new = c->new_tuple != NULL;
	r->has_old = c->old_tuple != NULL;
	if (c->new_tuple)
		tuple_record(c->new_tuple, c->rel->ncols, r->new_kind, r->new_text, r->new_len);
	if (c->old_tuple)
		tuple_record(c->old_tuple, c->rel->ncols, r->old_kind, r->old_text, NULL);
	r->transactional = c->transactional;
	if (c->prefix) {
		assert_int_equal(c->prefix[strlen(c->prefix)], '\0');
		snprintf(r->prefix, sizeof(r->prefix), "%s", c->prefix);
	}
	if (c->content) {
		r->content_len = c->content_len;
		assert_int_equal(c->content[c->content_len], '\0');
		memcpy(r->content, c->content, c->content_len < TEXT_MAX - 1 ? c->content_len : TEXT_MAX - 1);
	}
	r->cascade = c->cascade;
	r->restart_identity = c->restart_identity;
	if (f->json_on) {
		assert_int_equal(change_json_write(&f->json, c, CHANGE_JSON_TYPES), 0);
		assert_int_equal(buf_putc(&f->json, '\n'), 0);
	}
	return f->change_rc;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->rc = relcache_create();
	assert_non_null(f->rc);
	decoder_params p = {
		.relations = f->rc,
		.sink = {.begin_cb = begin_cb, .change_cb = change_cb, .commit_cb = commit_cb, .arg = f},
	};
	const decoder_ops *ops = decoder_ops_find("wal2json");
	assert_non_null(ops);
	assert_int_equal(decoder_create(ops, &p, &f->dec), 0);
	buf_init(&f->json);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	decoder_destroy(f->dec);
	relcache_destroy(f->rc);
	buf_fini(&f->json);
	free(f);
	return 0;
}

/* Decodes line from an exactly-sized heap copy (no NUL after it), so that ASan catches any read
 * past the payload. */
static int dec_len(fixture *f, uint64_t lsn, const char *line, size_t len)
{
	char *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, line, len);
	f->err[0] = '\0';
	int rc = decoder_decode(f->dec, lsn, (const uint8_t *)copy, len, f->err);
	free(copy);
	if (rc == -EPROTO) {
		/* Every protocol error says what was wrong. */
		assert_true(strncmp(f->err, "wal2json: ", 10) == 0);
		assert_true(strlen(f->err) > 12);
	}
	return rc;
}

static int dec(fixture *f, uint64_t lsn, const char *line)
{
	return dec_len(f, lsn, line, strlen(line));
}

static void dec_ok(fixture *f, uint64_t lsn, const char *line)
{
	int rc = dec(f, lsn, line);
	if (rc != 0)
		fail_msg("decode failed (%d): %s\n  line: %.300s", rc, f->err, line);
}

static void dec_fails(fixture *f, const char *line, const char *msg_part)
{
	int rc = dec(f, 0x100, line);
	if (rc != -EPROTO)
		fail_msg("expected -EPROTO, got %d for: %.300s", rc, line);
	if (strstr(f->err, msg_part) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", f->err, msg_part);
}

/* --- seeding the relation cache like the source does -------------------------------------- */

typedef struct seed_col {
	const char *name;
	uint32_t type_oid;
	bool key;
} seed_col;

/* Puts a relation as the source would after reading the catalog: columns in attnum order with
 * their type OIDs, key = the primary key columns. */
static const relation *seed(relcache *rc, uint32_t oid, const char *schema, const char *table,
                            char replident, const seed_col *cols, int n)
{
	rel_column rcols[REC_COLS];
	assert_true(n <= REC_COLS);
	for (int i = 0; i < n; i++)
		rcols[i] = (rel_column){.name = (char *)cols[i].name, .type_oid = cols[i].type_oid,
		                        .typmod = -1, .key = cols[i].key};
	relation desc = {.oid = oid, .schema = (char *)schema, .name = (char *)table, .ncols = n,
	                 .cols = rcols, .replident = replident};
	const relation *out;
	assert_int_equal(relcache_put(rc, &desc, &out), 0);
	return out;
}

/* tests/fixtures/workload.sql as the catalog shows it right after it ran. */
static void seed_workload(relcache *rc)
{
	static const seed_col difftypes[] = {
		{"id", 20, true}, {"small", 21, false}, {"i", 23, false}, {"n", 1700, false},
		{"f4", 700, false}, {"f8", 701, false}, {"ok", 16, false}, {"t", 25, false},
		{"vc", 1043, false}, {"j", 3802, false}, {"js", 114, false}, {"arr", 1007, false},
		{"tarr", 1009, false}, {"ts", 1184, false}, {"d", 1082, false}, {"by", 17, false},
		{"u", 2950, false}, {"big", 25, false},
	};
	static const seed_col diffull[] = {{"id", 23, true}, {"note", 25, false}, {"big", 25, false}};
	seed(rc, 16385, "public", "difftypes", 'd', difftypes, 18);
	seed(rc, 16400, "public", "diffull", 'f', diffull, 3);
}

/* --- fixture files --------------------------------------------------------------------- */

static char *file_read(const char *rel, size_t *len)
{
	const char *root = getenv("WALCAST_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", root ? root : ".", rel);
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return NULL;
	buf b;
	buf_init(&b);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		assert_int_equal(buf_append(&b, chunk, n), 0);
	fclose(fp);
	*len = b.len;
	if (b.data == NULL)
		assert_int_equal(buf_putc(&b, '\0'), 0);
	return b.data;
}

static void file_write(const char *rel, const char *data, size_t len)
{
	const char *root = getenv("WALCAST_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", root ? root : ".", rel);
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

typedef struct msg {
	uint64_t lsn;
	const char *json;
	size_t len;
} msg;

/* Splits the capture ("LSN<TAB>json" per line) in place; returns the number of messages. */
static int msgs_load(char **text, msg **out)
{
	size_t len;
	char *t = file_read("tests/fixtures/wal2json/workload.msgs", &len);
	if (t == NULL)
		fail_msg("tests/fixtures/wal2json/workload.msgs not found (run from the repository "
		         "root or set WALCAST_SOURCE_DIR)");
	int n = 0, cap = 256;
	msg *m = malloc((size_t)cap * sizeof(*m));
	assert_non_null(m);
	char *p = t, *end = t + len;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *e = nl ? nl : end;
		char *tab = memchr(p, '\t', (size_t)(e - p));
		assert_non_null(tab);
		if (n == cap) {
			cap *= 2;
			m = realloc(m, (size_t)cap * sizeof(*m));
			assert_non_null(m);
		}
		assert_int_equal(lsn_parse(p, (size_t)(tab - p), &m[n].lsn), 0);
		m[n].json = tab + 1;
		m[n].len = (size_t)(e - tab - 1);
		n++;
		p = nl ? nl + 1 : end;
	}
	*text = t;
	*out = m;
	return n;
}

/* --- lines built by hand ------------------------------------------------------------------ */

#define TS "\"timestamp\":\"2026-11-22 00:28:12.811326+00\""
#define B7 "{\"action\":\"B\",\"xid\":7," TS ",\"lsn\":\"0/1517330\",\"nextlsn\":\"0/1517360\"}"
#define C7 "{\"action\":\"C\",\"xid\":7," TS ",\"lsn\":\"0/1517330\",\"nextlsn\":\"0/1517360\"}"
#define M7 "{\"action\":\"M\",\"xid\":7," TS ",\"lsn\":\"0/1517200\",\"transactional\":true,\"prefix\":\"p\",\"content\":\"c\"}"
#define HEAD(a) "{\"action\":\"" a "\",\"xid\":7," TS ",\"lsn\":\"0/1517138\",\"schema\":\"public\""
#define PK_ID ",\"pk\":[{\"name\":\"id\",\"typeoid\":23}]"

static const seed_col t_cols[] = {
	{"id", 23, true}, {"b", 16, false}, {"n", 1700, false}, {"j", 3802, false},
	{"by", 17, false}, {"big", 25, false},
};

/* A full row of table t. */
#define T_ROW(id, big)                                                                            \
	"\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":" id "},"                               \
	"{\"name\":\"b\",\"typeoid\":16,\"value\":true},{\"name\":\"n\",\"typeoid\":1700,\"value\":1.50},"   \
	"{\"name\":\"j\",\"typeoid\":3802,\"value\":\"{\\\"a\\\": 1}\"},"                                  \
	"{\"name\":\"by\",\"typeoid\":17,\"value\":\"0102\"}" big "]"

/* --- tests --------------------------------------------------------------------------------- */

static void test_ops(void **state)
{
	fixture *f = *state;
	assert_string_equal(decoder_name(f->dec), "wal2json");
	assert_string_equal(decoder_start_options(f->dec),
	                    "\"format-version\" '2', \"include-xids\" '1', \"include-timestamp\" '1', "
	                    "\"include-lsn\" '1', \"include-type-oids\" '1', \"include-types\" '0', "
	                    "\"include-transaction\" '1', \"include-pk\" '1'");
	assert_ptr_equal(decoder_ops_find("wal2json"), &wal2json_decoder_ops);
}

/* Server notices on the replication connection: wal2json's per-change WARNING about a table
 * without replica identity becomes one log line per table; other notices are logged as is,
 * in the log format. stderr is captured into a temporary file. */
static void test_notices(void **state)
{
	fixture *f = *state;
	FILE *cap = tmpfile();
	assert_non_null(cap);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(cap), STDERR_FILENO) >= 0);
	for (int i = 0; i < 3; i++) {
		decoder_notice_cb(f->dec, "WARNING:  no tuple identifier for UPDATE in table \"public\".\"nopk\"\n");
		decoder_notice_cb(f->dec, "WARNING:  no tuple identifier for DELETE in table \"public\".\"nopk\"\n");
	}
	decoder_notice_cb(f->dec, "WARNING:  no tuple identifier for DELETE in table \"s\".\"other\"\n");
	decoder_notice_cb(f->dec, "NOTICE:  something else\nDETAIL:  more\n");
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(cap);
	char line[1024];
	int per_table = 0, nopk = 0, other = 0, notice = 0, lines = 0;
	while (fgets(line, sizeof(line), cap) != NULL) {
		lines++;
		assert_non_null(strstr(line, "Z "));
		if (strstr(line, " WARN wal2json.no_replica_identity ") != NULL) {
			per_table++;
			nopk += strstr(line, "table=\"public\".\"nopk\":") != NULL;
			other += strstr(line, "table=\"s\".\"other\":") != NULL;
		}
		if (strstr(line, " INFO pg.notice conn=replication severity=NOTICE: something else DETAIL:  more") != NULL)
			notice++;
	}
	fclose(cap);
	assert_int_equal(lines, 3);
	assert_int_equal(per_table, 2);
	assert_int_equal(nopk, 1);
	assert_int_equal(other, 1);
	assert_int_equal(notice, 1);
}

static void workload_decode(fixture *f)
{
	char *text;
	msg *m;
	int n = msgs_load(&text, &m);
	assert_true(n > 100);
	f->json_on = true;
	for (int i = 0; i < n; i++) {
		int rc = dec_len(f, m[i].lsn, m[i].json, m[i].len);
		if (rc != 0)
			fail_msg("message %d: %s", i + 1, f->err);
	}
	assert_int_equal(f->nbegin, f->ncommit);
	free(m);
	free(text);
}

static void golden_compare(fixture *f)
{
	const char *golden = "tests/fixtures/wal2json/workload.jsonl";
	const char *update = getenv("WALCAST_UPDATE_GOLDEN");
	if (update != NULL && strcmp(update, "1") == 0) {
		file_write(golden, f->json.data, f->json.len);
		return;
	}
	size_t len;
	char *want = file_read(golden, &len);
	assert_non_null(want);
	if (len != f->json.len || memcmp(want, f->json.data, len) != 0) {
		size_t i = 0;
		while (i < len && i < f->json.len && want[i] == f->json.data[i])
			i++;
		size_t from = i > 120 ? i - 120 : 0;
		fail_msg("workload differs from the golden at byte %zu:\n  want: %.240s\n  got:  %.240s", i,
		         want + from, f->json.data + from);
	}
	free(want);
}

/* The captured stream, relations seeded from the catalog (what the source does). */
static void test_workload_seeded(void **state)
{
	fixture *f = *state;
	seed_workload(f->rc);
	workload_decode(f);
	golden_compare(f);
	assert_int_equal(relcache_count(f->rc), 2);
	/* The seeded OID survives the ALTER TABLEs the stream followed. */
	const relation *r = relcache_get_oid(f->rc, 16385);
	assert_non_null(r);
	assert_string_equal(r->name, "difftypes");
	assert_int_equal(r->ncols, 18); /* + extra, - vc */
	assert_string_equal(r->cols[17].name, "extra");
	assert_int_equal(relation_column_index(r, "vc", 2), -1);
}

/* Unseeded: every table's first change in the workload is an INSERT, which carries the whole
 * shape, so the records are the same. */
static void test_workload_unseeded(void **state)
{
	fixture *f = *state;
	workload_decode(f);
	const char *update = getenv("WALCAST_UPDATE_GOLDEN");
	if (update != NULL && strcmp(update, "1") == 0)
		return;
	golden_compare(f);
	const relation *r = relcache_get_name(f->rc, "public", 6, "diffull", 7);
	assert_non_null(r);
	assert_int_equal(r->oid, 0);
	assert_int_equal(r->replident, 'f'); /* learned from the full identity */
}

static void test_begin_commit(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x1517000, B7);
	assert_int_equal(f->nbegin, 0); /* announced with the first change */
	dec_ok(f, 0x1517200, M7);
	assert_int_equal(f->nbegin, 1);
	assert_int_equal(f->nchange, 1);
	assert_int_equal(f->begin_txn.xid, 7);
	assert_int_equal(f->begin_txn.commit_lsn, 0x1517330);
	assert_int_equal(f->begin_txn.end_lsn, 0x1517360);
	char ts[CHANGE_TIME_MAX];
	change_time_format(f->begin_txn.commit_time, ts);
	assert_string_equal(ts, "2026-11-22T00:28:12.811326Z");
	dec_ok(f, 0x1517200, M7);
	assert_int_equal(f->nbegin, 1);
	dec_ok(f, 0x1517360, C7);
	assert_int_equal(f->ncommit, 1);
	assert_int_equal(f->commit_txn.xid, 7);
	assert_int_equal(f->commit_txn.commit_lsn, 0x1517330);
	assert_int_equal(f->commit_txn.end_lsn, 0x1517360);
	assert_int_equal(f->commit_txn.commit_time, f->begin_txn.commit_time);
}

/* A transaction without changes (DDL) reaches the sink neither as begin nor as commit, as with
 * pgoutput on PostgreSQL 15+. */
static void test_empty_transaction(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x152E718, "{\"action\":\"B\",\"xid\":742," TS ",\"lsn\":\"0/152EA38\",\"nextlsn\":\"0/152EAC0\"}");
	dec_ok(f, 0x152EAC0, "{\"action\":\"C\",\"xid\":742," TS ",\"lsn\":\"0/152EA38\",\"nextlsn\":\"0/152EAC0\"}");
	assert_int_equal(f->nbegin, 0);
	assert_int_equal(f->ncommit, 0);
	/* The state machine still saw it: a second "C" has no "B". */
	dec_fails(f, C7, "without");
	/* A non-transactional message does not open one either. */
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x152E718, "{\"action\":\"M\",\"xid\":null,\"timestamp\":null,\"lsn\":\"0/152E718\","
	       "\"transactional\":false,\"prefix\":\"p\",\"content\":\"c\"}");
	dec_ok(f, 0x200, C7);
	assert_int_equal(f->nchange, 1);
	assert_int_equal(f->nbegin, 0);
	assert_int_equal(f->ncommit, 0);
}

static int64_t begin_time(fixture *f, const char *timestamp)
{
	char line[256];
	snprintf(line, sizeof(line),
	         "{\"action\":\"B\",\"xid\":9,\"timestamp\":\"%s\",\"lsn\":\"0/10\",\"nextlsn\":\"0/20\"}",
	         timestamp);
	int rc = dec(f, 0x10, line);
	if (rc == 0)
		dec_ok(f, 0x10, "{\"action\":\"M\",\"xid\":9,\"transactional\":true,\"prefix\":\"\",\"content\":\"\"}");
	decoder_reset(f->dec);
	if (rc != 0)
		return INT64_MIN;
	return f->begin_txn.commit_time;
}

static void test_timestamps(void **state)
{
	fixture *f = *state;
	const int64_t base = INT64_C(1795307292) * 1000000; /* 2026-11-22 00:28:12 UTC */
	assert_int_equal(begin_time(f, "2026-11-22 00:28:12+00"), base);
	assert_int_equal(begin_time(f, "2026-11-22 00:28:12.5+00"), base + 500000);
	assert_int_equal(begin_time(f, "2026-11-22 00:28:12.12306+00"), base + 123060);
	assert_int_equal(begin_time(f, "2026-11-22 05:58:12.000001+05:30"), base + 1);
	assert_int_equal(begin_time(f, "2026-11-21 20:58:12-03:30"), base);
	assert_int_equal(begin_time(f, "2026-11-21 16:28:12-08"), base);
	assert_int_equal(begin_time(f, "2026-11-22 00:47:44+00:19:32"), base);
	assert_int_equal(begin_time(f, "1970-01-01 00:00:00+00"), 0);
	assert_int_equal(begin_time(f, "1969-12-31 23:59:59.999999+00"), -1);
	assert_int_equal(begin_time(f, "2000-01-01 00:00:00+00"), PG_EPOCH_OFFSET_US);
	assert_int_equal(begin_time(f, "2024-02-29 00:00:00+00"), INT64_C(1709164800) * 1000000);
	assert_int_equal(begin_time(f, "10000-01-01 00:00:00+00"), INT64_C(253402300800) * 1000000);
	assert_int_equal(begin_time(f, "294000-12-31 23:59:59.999999+00"), INT64_C(9215608291199999999));
	/* Refused: BC, infinity, impossible dates, junk. */
	const char *bad[] = {
		"2020-01-01 00:00:00+00 BC", "infinity", "-infinity", "2023-02-29 00:00:00+00",
		"2026-13-01 00:00:00+00", "2026-11-22 24:00:00+00", "2026-11-22 00:28:12", "2026-11-22",
		"2026-11-22 00:28:12.+00", "2026-11-22 00:28:12.1234567+00", "2026-11-22T00:28:12+00",
		"26-11-22 00:28:12+00", "2026-11-22 00:28:12+0", "2026-11-22 00:28:12+00:", "",
		"294001-01-01 00:00:00+00", "294276-12-31 23:59:59+00", "9999999-01-01 00:00:00+00", "0000-01-01 00:00:00+00",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (begin_time(f, bad[i]) != INT64_MIN)
			fail_msg("timestamp \"%s\" was accepted", bad[i]);
		assert_non_null(strstr(f->err, "timestamp"));
	}
}

static void test_insert_values(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x1517138,
	       HEAD("I") ",\"table\":\"t\","
	       "\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},"
	       "{\"name\":\"b\",\"typeoid\":16,\"value\":true},{\"name\":\"b2\",\"typeoid\":16,\"value\":false},"
	       "{\"name\":\"n\",\"typeoid\":1700,\"value\":-1.50e+3},{\"name\":\"f\",\"typeoid\":701,\"value\":null},"
	       "{\"name\":\"j\",\"typeoid\":3802,\"value\":\"{\\\"a\\\": 1}\"},"
	       "{\"name\":\"by\",\"typeoid\":17,\"value\":\"0102\"},{\"name\":\"e\",\"typeoid\":17,\"value\":\"\"},"
	       "{\"name\":\"s\",\"typeoid\":25,\"value\":\"tab\\there\\nnl \\\"q\\\" back\\\\ \\/ \\b\\f\\r \\u00e9\\u20ac\\ud83d\\ude00 ü\"},"
	       "{\"name\":\"x\",\"typeoid\":25,\"value\":\"x\\\\u0000\"}]" PK_ID "}");
	rec_change *r = &f->last;
	assert_int_equal(f->nchange, 1);
	assert_int_equal(r->action, CHANGE_INSERT);
	assert_int_equal(r->lsn, 0x1517138);
	assert_true(r->has_txn);
	assert_int_equal(r->txn.xid, 7);
	assert_true(r->has_new);
	assert_false(r->has_old);
	assert_int_equal(r->ncols, 10);
	assert_int_equal(r->replident, '?');
	assert_true(r->colkey[0]);
	assert_false(r->colkey[1]);
	assert_int_equal(r->coltype[6], 17);
	assert_string_equal(r->new_text[0], "1");
	assert_string_equal(r->new_text[1], "t");
	assert_string_equal(r->new_text[2], "f");
	assert_string_equal(r->new_text[3], "-1.50e+3");
	assert_int_equal(r->new_kind[4], VALUE_NULL);
	assert_string_equal(r->new_text[5], "{\"a\": 1}");
	assert_string_equal(r->new_text[6], "\\x0102");
	assert_int_equal(r->new_len[6], 6);
	assert_string_equal(r->new_text[7], "\\x");
	assert_string_equal(r->new_text[8],
	                    "tab\there\nnl \"q\" back\\ / \b\f\r \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xc3\xbc");
	assert_string_equal(r->new_text[9], "x\\u0000");
	for (int i = 0; i < 10; i++)
		if (i != 4)
			assert_int_equal(r->new_kind[i], VALUE_TEXT);
}

/* An INSERT whose shape equals the cached relation reuses it; one that differs replaces it. */
static void test_insert_follows_alter(void **state)
{
	fixture *f = *state;
	const relation *seeded = seed(f->rc, 500, "public", "t", 'd', t_cols, 6);
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x200, HEAD("I") ",\"table\":\"t\"," T_ROW("1", ",{\"name\":\"big\",\"typeoid\":25,\"value\":\"B\"}") PK_ID "}");
	assert_ptr_equal(f->last.rel, seeded);
	assert_int_equal(f->last.rel_version, 1);
	/* ADD COLUMN */
	dec_ok(f, 0x300, HEAD("I") ",\"table\":\"t\"," T_ROW("2", ",{\"name\":\"big\",\"typeoid\":25,\"value\":\"B\"},{\"name\":\"extra\",\"typeoid\":23,\"value\":5}") PK_ID "}");
	assert_int_equal(f->last.ncols, 7);
	assert_int_equal(f->last.rel_version, 2);
	assert_string_equal(f->last.colname[6], "extra");
	assert_string_equal(f->last.new_text[6], "5");
	const relation *r = relcache_get_oid(f->rc, 500); /* the OID is kept */
	assert_non_null(r);
	assert_int_equal(r->ncols, 7);
	assert_int_equal(r->replident, 'd');
	/* Same shape again: no new version. */
	dec_ok(f, 0x380, HEAD("I") ",\"table\":\"t\"," T_ROW("3", ",{\"name\":\"big\",\"typeoid\":25,\"value\":\"B\"},{\"name\":\"extra\",\"typeoid\":23,\"value\":5}") PK_ID "}");
	assert_int_equal(f->last.rel_version, 2);
	/* DROP COLUMN big and ALTER TYPE of extra. */
	dec_ok(f, 0x400, HEAD("I") ",\"table\":\"t\"," T_ROW("4", ",{\"name\":\"extra\",\"typeoid\":20,\"value\":5}") PK_ID "}");
	assert_int_equal(f->last.ncols, 6);
	assert_int_equal(f->last.rel_version, 3);
	assert_string_equal(f->last.colname[5], "extra");
	assert_int_equal(f->last.coltype[5], 20);
	/* The primary key changes (ALTER TABLE ... ADD PRIMARY KEY (id, n)). */
	dec_ok(f, 0x500, HEAD("I") ",\"table\":\"t\"," T_ROW("5", ",{\"name\":\"extra\",\"typeoid\":20,\"value\":5}")
	       ",\"pk\":[{\"name\":\"id\",\"typeoid\":23},{\"name\":\"n\",\"typeoid\":1700}]}");
	assert_int_equal(f->last.rel_version, 4);
	assert_true(f->last.colkey[0]);
	assert_true(f->last.colkey[2]);
	assert_int_equal(relcache_count(f->rc), 1);
}

static void test_update_toast_seeded(void **state)
{
	fixture *f = *state;
	seed(f->rc, 500, "public", "t", 'd', t_cols, 6);
	dec_ok(f, 0x100, B7);
	/* big is left out: unchanged TOAST. identity = the unchanged key: no old tuple. */
	dec_ok(f, 0x200, HEAD("U") ",\"table\":\"t\"," T_ROW("1", "")
	       ",\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}]" PK_ID "}");
	rec_change *r = &f->last;
	assert_int_equal(r->action, CHANGE_UPDATE);
	assert_int_equal(r->ncols, 6);
	assert_int_equal(r->rel_version, 1);
	assert_int_equal(r->new_kind[5], VALUE_UNCHANGED);
	assert_int_equal(r->new_kind[4], VALUE_TEXT);
	assert_false(r->has_old);
	/* The key changed: the old key is an old tuple, the rest absent. */
	dec_ok(f, 0x300, HEAD("U") ",\"table\":\"t\"," T_ROW("2", "")
	       ",\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}]" PK_ID "}");
	assert_true(r->has_old);
	assert_int_equal(r->old_kind[0], VALUE_TEXT);
	assert_string_equal(r->old_text[0], "1");
	for (int i = 1; i < 6; i++)
		assert_int_equal(r->old_kind[i], VALUE_ABSENT);
	assert_int_equal(r->new_kind[5], VALUE_UNCHANGED);
	assert_string_equal(r->new_text[0], "2");
}

/* Without a cached relation, an update that leaves columns out can only show what it has. */
static void test_update_toast_unseeded(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x200, HEAD("U") ",\"table\":\"t\"," T_ROW("1", "")
	       ",\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}]" PK_ID "}");
	rec_change *r = &f->last;
	assert_int_equal(r->ncols, 5);
	assert_false(r->has_old);
	for (int i = 0; i < 5; i++)
		assert_int_equal(r->new_kind[i], VALUE_TEXT);
	/* A later full row teaches the whole shape. */
	dec_ok(f, 0x300, HEAD("I") ",\"table\":\"t\"," T_ROW("3", ",{\"name\":\"big\",\"typeoid\":25,\"value\":\"B\"}") PK_ID "}");
	assert_int_equal(r->ncols, 6);
	dec_ok(f, 0x400, HEAD("U") ",\"table\":\"t\"," T_ROW("3", "")
	       ",\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":3}]" PK_ID "}");
	assert_int_equal(r->ncols, 6);
	assert_int_equal(r->new_kind[5], VALUE_UNCHANGED);
}

/* A cached column an update leaves out is unchanged TOAST only when its type can be TOASTed;
 * otherwise it was dropped. A column the cache lacks is added. */
static void test_update_follows_alter(void **state)
{
	fixture *f = *state;
	static const seed_col cols[] = {{"id", 23, true}, {"gone", 20, false}, {"t", 25, false},
	                                {"big", 25, false}};
	seed(f->rc, 0, "public", "u", 'd', cols, 4);
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x200, HEAD("U") ",\"table\":\"u\",\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},"
	       "{\"name\":\"t\",\"typeoid\":25,\"value\":\"x\"},{\"name\":\"new\",\"typeoid\":23,\"value\":9}],"
	       "\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}]" PK_ID "}");
	rec_change *r = &f->last;
	assert_int_equal(r->ncols, 4);
	assert_string_equal(r->colname[0], "id");
	assert_string_equal(r->colname[1], "t");
	assert_string_equal(r->colname[2], "big");
	assert_string_equal(r->colname[3], "new");
	assert_int_equal(r->new_kind[2], VALUE_UNCHANGED);
	assert_string_equal(r->new_text[3], "9");
	assert_int_equal(r->rel_version, 2);
	/* ALTER TYPE t to varchar. */
	dec_ok(f, 0x300, HEAD("U") ",\"table\":\"u\",\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},"
	       "{\"name\":\"t\",\"typeoid\":1043,\"value\":\"x\"},{\"name\":\"new\",\"typeoid\":23,\"value\":9}],"
	       "\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}]" PK_ID "}");
	assert_int_equal(r->rel_version, 3);
	assert_int_equal(r->coltype[1], 1043);
	assert_int_equal(r->new_kind[2], VALUE_UNCHANGED);
}

/* REPLICA IDENTITY FULL: the identity is the whole old row; unchanged TOAST in the new tuple is
 * filled from it (decoder_emit_change). */
static void test_update_full_identity(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x100, B7);
	/* Unknown relation; the identity lists a column the new tuple leaves out. */
	dec_ok(f, 0x200, HEAD("U") ",\"table\":\"full\",\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},"
	       "{\"name\":\"note\",\"typeoid\":25,\"value\":\"new\"}],"
	       "\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"note\",\"typeoid\":25,\"value\":\"old\"},"
	       "{\"name\":\"big\",\"typeoid\":25,\"value\":\"BIG\"}]" PK_ID "}");
	rec_change *r = &f->last;
	assert_int_equal(r->ncols, 3);
	assert_int_equal(r->replident, 'f');
	assert_string_equal(r->colname[2], "big");
	assert_true(r->has_old);
	assert_string_equal(r->old_text[1], "old");
	assert_string_equal(r->new_text[1], "new");
	assert_int_equal(r->new_kind[2], VALUE_TEXT); /* filled from the old tuple */
	assert_string_equal(r->new_text[2], "BIG");
	/* An update that changes nothing still has its (full) old tuple, as pgoutput sends it. */
	dec_ok(f, 0x300, HEAD("U") ",\"table\":\"full\",\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},"
	       "{\"name\":\"note\",\"typeoid\":25,\"value\":\"new\"},{\"name\":\"big\",\"typeoid\":25,\"value\":\"BIG\"}],"
	       "\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"note\",\"typeoid\":25,\"value\":\"new\"},"
	       "{\"name\":\"big\",\"typeoid\":25,\"value\":\"BIG\"}]" PK_ID "}");
	assert_true(r->has_old);
	assert_int_equal(r->rel_version, 1);
	/* After DROP COLUMN note: the full identity no longer lists it, so it is gone, not TOAST. */
	dec_ok(f, 0x400, HEAD("U") ",\"table\":\"full\",\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}],"
	       "\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"big\",\"typeoid\":25,\"value\":\"BIG\"}]" PK_ID "}");
	assert_int_equal(r->ncols, 2);
	assert_string_equal(r->colname[1], "big");
	assert_string_equal(r->new_text[1], "BIG");
	/* DELETE after ADD COLUMN: the identity teaches the new column. */
	dec_ok(f, 0x500, HEAD("D") ",\"table\":\"full\","
	       "\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1},{\"name\":\"big\",\"typeoid\":25,\"value\":\"BIG\"},"
	       "{\"name\":\"added\",\"typeoid\":23,\"value\":null}]" PK_ID "}");
	assert_int_equal(r->action, CHANGE_DELETE);
	assert_int_equal(r->ncols, 3);
	assert_false(r->has_new);
	assert_int_equal(r->old_kind[2], VALUE_NULL);
}

/* REPLICA IDENTITY USING INDEX (u): the identity is u, not the primary key. */
static void test_update_index_identity(void **state)
{
	fixture *f = *state;
#define IDX_ROW(id, u) "\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":" id "},{\"name\":\"u\",\"typeoid\":23,\"value\":" u "},{\"name\":\"b\",\"typeoid\":25,\"value\":\"y\"}]"
#define IDX_ID(u) ",\"identity\":[{\"name\":\"u\",\"typeoid\":23,\"value\":" u "}]"
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x200, HEAD("U") ",\"table\":\"idx\"," IDX_ROW("1", "10") IDX_ID("10") PK_ID "}");
	assert_false(f->last.has_old);
	assert_true(f->last.colkey[0]);
	assert_false(f->last.colkey[1]);
	dec_ok(f, 0x300, HEAD("U") ",\"table\":\"idx\"," IDX_ROW("1", "11") IDX_ID("10") PK_ID "}");
	assert_true(f->last.has_old);
	assert_int_equal(f->last.old_kind[0], VALUE_ABSENT);
	assert_string_equal(f->last.old_text[1], "10");
	/* The primary key changes but the identity does not: no old tuple (as pgoutput). */
	dec_ok(f, 0x400, HEAD("U") ",\"table\":\"idx\"," IDX_ROW("2", "11") IDX_ID("11") PK_ID "}");
	assert_false(f->last.has_old);
	dec_ok(f, 0x500, HEAD("D") ",\"table\":\"idx\"" IDX_ID("11") PK_ID "}");
	assert_true(f->last.has_old);
	assert_string_equal(f->last.old_text[1], "11");
	assert_int_equal(f->last.old_kind[2], VALUE_ABSENT);
	/* An update without any identity (wal2json leaves it out when there is none). */
	dec_ok(f, 0x600, HEAD("U") ",\"table\":\"idx\"," IDX_ROW("2", "11") ",\"pk\":[]}");
	assert_false(f->last.has_old);
	assert_false(f->last.colkey[0]);
#undef IDX_ROW
#undef IDX_ID
}

static void test_delete(void **state)
{
	fixture *f = *state;
	seed(f->rc, 500, "public", "t", 'd', t_cols, 6);
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x1530AF8, HEAD("D") ",\"table\":\"t\",\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":100}]" PK_ID "}");
	rec_change *r = &f->last;
	assert_int_equal(r->action, CHANGE_DELETE);
	assert_int_equal(r->lsn, 0x1530AF8);
	assert_false(r->has_new);
	assert_true(r->has_old);
	assert_int_equal(r->ncols, 6);
	assert_int_equal(r->rel_version, 1);
	assert_string_equal(r->old_text[0], "100");
	for (int i = 1; i < 6; i++)
		assert_int_equal(r->old_kind[i], VALUE_ABSENT);
	/* Unknown relation: the identity is all there is. */
	dec_ok(f, 0x200, HEAD("D") ",\"table\":\"other\",\"identity\":[{\"name\":\"id\",\"typeoid\":23,\"value\":1}]" PK_ID "}");
	assert_int_equal(r->ncols, 1);
	assert_int_equal(r->replident, '?');
}

static void test_truncate(void **state)
{
	fixture *f = *state;
	const relation *seeded = seed(f->rc, 500, "public", "t", 'd', t_cols, 6);
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x1533200, "{\"action\":\"T\",\"xid\":7," TS ",\"lsn\":\"0/1533200\",\"schema\":\"public\",\"table\":\"t\"}");
	rec_change *r = &f->last;
	assert_int_equal(r->action, CHANGE_TRUNCATE);
	assert_ptr_equal(r->rel, seeded);
	assert_int_equal(r->lsn, 0x1533200);
	assert_true(r->has_txn);
	assert_false(r->has_new);
	assert_false(r->has_old);
	assert_false(r->cascade);
	assert_false(r->restart_identity);
	dec_ok(f, 0x1533200, "{\"action\":\"T\",\"xid\":7," TS ",\"lsn\":\"0/1533200\",\"schema\":\"s\\\"q\",\"table\":\"new\"}");
	assert_int_equal(r->ncols, 0);
	assert_non_null(relcache_get_name(f->rc, "s\"q", 3, "new", 3));
	assert_int_equal(f->nchange, 2);
}

static void test_messages(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x152E690, "{\"action\":\"M\",\"xid\":7," TS ",\"lsn\":\"0/152E690\",\"transactional\":true,"
	       "\"prefix\":\"p\\\"x\",\"content\":\"c\\u0001\\n\"}");
	rec_change *r = &f->last;
	assert_int_equal(r->action, CHANGE_MESSAGE);
	assert_true(r->transactional);
	assert_true(r->has_txn);
	assert_int_equal(r->txn.xid, 7);
	assert_null(r->rel);
	assert_string_equal(r->prefix, "p\"x");
	assert_int_equal(r->content_len, 3);
	assert_memory_equal(r->content, "c\001\n", 3);
	dec_ok(f, 0x200, C7);
	dec_ok(f, 0x152E718, "{\"action\":\"M\",\"xid\":null,\"timestamp\":null,\"lsn\":\"0/152E718\","
	       "\"transactional\":false,\"prefix\":\"walcast.test\",\"content\":\"\"}");
	assert_int_equal(r->lsn, 0x152E718);
	assert_false(r->transactional);
	assert_false(r->has_txn);
	assert_int_equal(r->content_len, 0);
	assert_string_equal(r->prefix, "walcast.test");
	assert_int_equal(f->nchange, 2);
}

/* Key order is not relied on, unknown keys (also nested ones) are skipped, whitespace is fine. */
static void test_key_order_and_unknown_keys(void **state)
{
	fixture *f = *state;
	f->json_on = true;
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x200, HEAD("I") ",\"table\":\"t\"," T_ROW("1", "") PK_ID "}");
	size_t first_len = f->json.len;
	dec_ok(f, 0x200, " { \"pk\" : [ { \"typeoid\" : 23 , \"name\" : \"id\" } ] , \"origin\" : {\"a\":[1,{\"b\":[]},\"]}\"]},"
	       "\"table\":\"t\",\"columns\":[{\"value\":1,\"typeoid\":23,\"name\":\"id\",\"position\":1},"
	       "{\"typeoid\":16,\"optional\":true,\"name\":\"b\",\"value\":true},{\"name\":\"n\",\"value\":1.50,\"typeoid\":1700},"
	       "{\"name\":\"j\",\"typeoid\":3802,\"value\":\"{\\\"a\\\": 1}\"},{\"name\":\"by\",\"typeoid\":17,\"value\":\"0102\"}],"
	       "\"schema\":\"public\",\"lsn\":\"0/1517138\",\"\\u0061ction\":\"I\",\"xid\":7," TS ",\"extra\":null}\r\n");
	assert_int_equal(f->json.len, first_len * 2);
	assert_memory_equal(f->json.data, f->json.data + first_len, first_len);
}

static void test_reset(void **state)
{
	fixture *f = *state;
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x100, M7);
	dec_fails(f, B7, "inside transaction");
	decoder_reset(f->dec);
	dec_fails(f, C7, "without");
	dec_ok(f, 0x100, B7);
	dec_ok(f, 0x100, M7);
	dec_ok(f, 0x200, C7);
	assert_int_equal(f->nbegin, 2);
	assert_int_equal(f->ncommit, 1);
}

static void test_callback_results(void **state)
{
	fixture *f = *state;
	f->begin_rc = 42;
	dec_ok(f, 0x100, B7);
	assert_int_equal(dec(f, 0x200, HEAD("I") ",\"table\":\"t\"," T_ROW("1", "") PK_ID "}"), 42);
	assert_int_equal(f->nchange, 0); /* the change is not delivered when begin fails */
	decoder_reset(f->dec);
	f->begin_rc = 0;
	f->change_rc = -7;
	dec_ok(f, 0x100, B7);
	assert_int_equal(dec(f, 0x200, HEAD("I") ",\"table\":\"t\"," T_ROW("1", "") PK_ID "}"), -7);
	f->commit_rc = 5;
	assert_int_equal(dec(f, 0x300, C7), 5);
	assert_int_equal(f->nchange, 1);
	assert_int_equal(f->nbegin, 2);
	assert_int_equal(f->ncommit, 1);
}

typedef struct bad_case {
	bool in_txn;
	const char *line;
	const char *msg;
} bad_case;

static void test_errors(void **state)
{
	fixture *f = *state;
	static const bad_case cases[] = {
		{false, "", "truncated input"},
		{false, "not json", "unexpected character"},
		{false, "[]", "not a JSON object"},
		{false, "{\"action\":\"B\"", "truncated"},
		{false, B7 "x", "trailing"},
		{false, "{\"action\":\"B\",}", "expected a string key"},
		{false, "{\"action\" \"B\"}", "expected ':'"},
		{false, "{\"action\":\"B\" \"xid\":1}", "expected ',' or '}'"},
		{false, "{\"xid\":1}", "no \"action\""},
		{false, "{\"action\":\"X\"}", "unknown action \"X\""},
		{false, "{\"action\":\"IU\"}", "unknown action"},
		{false, "{\"action\":1}", "unknown action"},
		{false, "{\"action\":\"B\",\"action\":\"B\"}", "duplicate key"},
		{false, "{\"action\":{\"a\":1}}", "unexpected object or array"},
		{false, "{\"action\":\"C\",\"xid\":7," TS ",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "\"C\" without \"B\""},
		{false, HEAD("I") ",\"table\":\"t\"," T_ROW("1", "") "}", "outside a transaction"},
		{false, HEAD("U") ",\"table\":\"t\"," T_ROW("1", "") "}", "outside a transaction"},
		{false, HEAD("D") ",\"table\":\"t\",\"identity\":[]}", "outside a transaction"},
		{false, "{\"action\":\"T\",\"xid\":7,\"schema\":\"public\",\"table\":\"t\"}", "outside a transaction"},
		{false, "{\"action\":\"M\",\"xid\":7,\"transactional\":true,\"prefix\":\"p\",\"content\":\"c\"}", "outside a transaction"},
		{false, "{\"action\":\"B\"," TS ",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "has no \"xid\""},
		{false, "{\"action\":\"B\",\"xid\":-1," TS ",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "\"xid\" must be"},
		{false, "{\"action\":\"B\",\"xid\":4294967296," TS ",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "\"xid\" must be"},
		{false, "{\"action\":\"B\",\"xid\":1.5," TS ",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "\"xid\" must be"},
		{false, "{\"action\":\"B\",\"xid\":1," TS ",\"nextlsn\":\"0/2\"}", "has no \"lsn\""},
		{false, "{\"action\":\"B\",\"xid\":1," TS ",\"lsn\":\"0/1\"}", "has no \"nextlsn\""},
		{false, "{\"action\":\"B\",\"xid\":1,\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "has no \"timestamp\""},
		{false, "{\"action\":\"B\",\"xid\":1,\"timestamp\":null,\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", "\"timestamp\" must be a string"},
		{false, "{\"action\":\"B\",\"xid\":1," TS ",\"lsn\":\"zz\",\"nextlsn\":\"0/2\"}", "bad LSN \"zz\""},
		{false, "{\"action\":\"B\",\"xid\":1," TS ",\"lsn\":\"0/1\",\"nextlsn\":\"0/123456789\"}", "bad LSN"},
		{false, "{\"action\":\"B\",\"xid\":1," TS ",\"lsn\":1,\"nextlsn\":\"0/2\"}", "\"lsn\" must be a string"},
		{true, B7, "inside transaction 7"},
		{true, "{\"action\":\"C\",\"xid\":8," TS ",\"lsn\":\"0/1517330\",\"nextlsn\":\"0/1517360\"}", "xid 8 inside transaction 7"},
		{true, "{\"action\":\"C\",\"xid\":7," TS ",\"lsn\":\"0/1517331\",\"nextlsn\":\"0/1517360\"}", "\"B\" said"},
		{true, "{\"action\":\"C\",\"xid\":7," TS ",\"nextlsn\":\"0/1517360\"}", "has no \"lsn\""},
		{true, "{\"action\":\"I\",\"xid\":8,\"schema\":\"public\",\"table\":\"t\"," T_ROW("1", "") "}", "xid 8 inside transaction 7"},
		{true, HEAD("I") "," T_ROW("1", "") "}", "has no \"table\""},
		{true, "{\"action\":\"I\",\"xid\":7,\"table\":\"t\"," T_ROW("1", "") "}", "has no \"schema\""},
		{true, HEAD("I") ",\"table\":7," T_ROW("1", "") "}", "\"table\" must be a string"},
		{true, HEAD("I") ",\"table\":\"t\"}", "has no \"columns\""},
		{true, HEAD("U") ",\"table\":\"t\"}", "has no \"columns\""},
		{true, HEAD("D") ",\"table\":\"t\"}", "has no \"identity\""},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":{}}", "must be arrays"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[1]}", "a column must be a JSON object"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"typeoid\":23,\"value\":1}]}", "has no \"name\""},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"typeoid\":23}]}", "has no \"value\""},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":1,\"value\":1}]}", "\"name\" must be a string"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"typeoid\":-23,\"value\":1}]}", "\"typeoid\" must be"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"typeoid\":\"23\",\"value\":1}]}", "\"typeoid\" must be"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":[1]}]}", "\"value\" must be a string"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":{}}]}", "\"value\" must be a string"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"name\":\"b\",\"value\":1}]}", "duplicate key in a column"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":1,\"value\":2}]}", "duplicate key in a column"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":1},{\"name\":\"a\",\"value\":2}]}", "appears twice"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":01}]}", "expected ',' or '}'"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":-}]}", "malformed number"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":1.}]}", "malformed number"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":1e}]}", "malformed number"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":tru}]}", "unexpected character"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":1},]}", "unexpected character"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"x\\u0000y\"}]}", "cannot contain NUL"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"\\q\"}]}", "invalid escape"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"\\u12G4\"}]}", "malformed \\u escape"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"\\u12\"}]}", "malformed \\u escape"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"\\ud83d\"}]}", "unpaired high surrogate"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"\\ud83d\\u0041\"}]}", "unpaired high surrogate"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"\\ude00\"}]}", "unpaired low surrogate"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":\"a\tb\"}]}", "raw control character"},
		{true, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\\u0000\",\"value\":1}]}", "cannot contain NUL"},
		{true, HEAD("I") ",\"table\":\"t\\q\",\"columns\":[]}", "invalid escape"},
		{true, HEAD("U") ",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"typeoid\":23,\"value\":1}],"
		       "\"identity\":[{\"name\":\"a\",\"typeoid\":20,\"value\":1}]}", "type 23 in \"columns\" but 20"},
		{true, HEAD("D") ",\"table\":\"t\",\"identity\":[{\"name\":\"a\",\"value\":1},{\"name\":\"a\",\"value\":1}]}", "appears twice"},
		{true, "{\"action\":\"M\",\"xid\":7,\"prefix\":\"p\",\"content\":\"c\"}", "no \"transactional\""},
		{true, "{\"action\":\"M\",\"xid\":7,\"transactional\":\"yes\",\"prefix\":\"p\",\"content\":\"c\"}", "true or false"},
		{true, "{\"action\":\"M\",\"xid\":7,\"transactional\":true,\"content\":\"c\"}", "has no \"prefix\""},
		{true, "{\"action\":\"M\",\"xid\":7,\"transactional\":true,\"prefix\":\"p\"}", "has no \"content\""},
		{true, "{\"action\":\"M\",\"xid\":7,\"transactional\":true,\"prefix\":\"p\",\"content\":\"\\u0000\"}", "cannot contain NUL"},
		{true, "{\"action\":\"T\",\"xid\":7,\"schema\":\"public\"}", "has no \"table\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		decoder_reset(f->dec);
		if (cases[i].in_txn)
			dec_ok(f, 0x100, B7);
		int before = f->nchange;
		dec_fails(f, cases[i].line, cases[i].msg);
		assert_int_equal(f->nchange, before);
	}
}

/* Nesting of skipped values is bounded; moderate nesting is skipped fine. */
static void test_nesting(void **state)
{
	fixture *f = *state;
	buf line;
	buf_init(&line);
	for (int depth = 10; depth <= 200; depth += 190) {
		buf_clear(&line);
		assert_int_equal(buf_puts(&line, "{\"deep\":"), 0);
		for (int i = 0; i < depth; i++)
			assert_int_equal(buf_puts(&line, i % 2 ? "[" : "{\"k\":"), 0);
		for (int i = depth - 1; i >= 0; i--)
			assert_int_equal(buf_putc(&line, i % 2 ? ']' : '}'), 0);
		assert_int_equal(buf_printf(&line, ",%s", &B7[1]), 0);
		if (depth == 10) {
			dec_ok(f, 0x100, line.data);
			decoder_reset(f->dec);
		} else {
			dec_fails(f, line.data, "nesting too deep");
		}
	}
	buf_fini(&line);
}

/* Every proper prefix of every captured line is refused cleanly (no JSON object is complete
 * before its last byte), and never read past. */
static void test_truncations(void **state)
{
	fixture *f = *state;
	char *text;
	msg *m;
	int n = msgs_load(&text, &m);
	seed_workload(f->rc);
	long tried = 0;
	for (int i = 0; i < n; i++) {
		bool needs_txn = strncmp(m[i].json, "{\"action\":\"B\"", 13) != 0;
		for (size_t len = 0; len < m[i].len; len++) {
			/* Long values: every prefix around the structure, a stride through the middle. */
			if (m[i].len > 4096 && len > 2048 && len < m[i].len - 2048 && len % 61 != 0)
				continue;
			decoder_reset(f->dec);
			if (needs_txn)
				dec_ok(f, 0x100, B7);
			int rc = dec_len(f, m[i].lsn, m[i].json, len);
			if (rc != -EPROTO)
				fail_msg("line %d cut at %zu of %zu: rc %d", i + 1, len, m[i].len, rc);
			tried++;
		}
	}
	assert_true(tried > 10000);
	free(m);
	free(text);
}


/* One transaction of 100k inserts (with a 4 kB value each) does not grow memory. */
static void test_memory_bounded(void **state)
{
	fixture *f = *state;
	seed(f->rc, 500, "public", "t", 'd', t_cols, 6);
	char value[4097];
	memset(value, 'x', 4096);
	value[4096] = '\0';
	buf line;
	buf_init(&line);
	dec_ok(f, 0x100, B7);
	size_t at_1k = 0;
	for (int i = 0; i < 100000; i++) {
		buf_clear(&line);
		int rc = buf_printf(&line, HEAD("I") ",\"table\":\"t\",\"columns\":[{\"name\":\"id\",\"typeoid\":23,\"value\":%d},"
		                    "{\"name\":\"b\",\"typeoid\":16,\"value\":true},{\"name\":\"n\",\"typeoid\":1700,\"value\":1.50},"
		                    "{\"name\":\"j\",\"typeoid\":3802,\"value\":\"{\\\"a\\\": 1}\"},{\"name\":\"by\",\"typeoid\":17,\"value\":\"0102\"},"
		                    "{\"name\":\"big\",\"typeoid\":25,\"value\":\"%s\\n\"}]" PK_ID "}", i, value);
		assert_int_equal(rc, 0);
		rc = decoder_decode(f->dec, 0x1000 + (uint64_t)i, (const uint8_t *)line.data, line.len, f->err);
		if (rc != 0)
			fail_msg("insert %d: %s", i, f->err);
		if (i == 1000)
			at_1k = heap_in_use();
	}
	size_t at_100k = heap_in_use();
	assert_int_equal(f->nchange, 100000);
	assert_int_equal(f->last.new_len[5], 4097);
	assert_string_equal(f->last.new_text[0], "99999");
	assert_int_equal(f->last.rel_version, 1);
	if (at_100k > at_1k + 64 * 1024)
		fail_msg("memory grew from %zu to %zu bytes over 99k inserts", at_1k, at_100k);
	dec_ok(f, 0x200, C7);
	buf_fini(&line);
}

/* --- the scanner on its own ------------------------------------------------------------------ */

/* Scans one whole value from an exactly-sized copy; returns the kind or -1. */
static int scan_one(const char *text, size_t len, json_scan_token *out)
{
	char *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, text, len);
	json_scan s;
	json_scan_token t;
	json_scan_init(&s, copy, len);
	int rc = json_scan_value(&s, &t);
	if (rc == 0)
		rc = json_scan_skip(&s, &t);
	if (rc == 0)
		rc = json_scan_finish(&s);
	if (rc == 0 && out != NULL) {
		*out = t;
		out->p = text + (t.p - copy);
	}
	free(copy);
	return rc < 0 ? -1 : (int)t.type;
}

static int scan_str(const char *text)
{
	return scan_one(text, strlen(text), NULL);
}

static void test_scan_grammar(void **state)
{
	(void)state;
	static const char *const good[] = {
		"0", "-0", "12", "-12.5", "1e5", "1E+5", "1.25e-300", "true", "false", "null", "\"\"",
		"\"a\\\"b\"", " \t\r\n{ } ", "[]", "[1,2,[3,{\"a\":[]}]]", "{\"a\":{\"b\":{\"c\":[null]}}}",
		"\"\xc3\xa9\xf0\x9f\x98\x80\"", "\"\\u0000\"", /* escapes are checked when unescaped */
	};
	static const char *const bad[] = {
		"", " ", "01", "-", "1.", ".5", "+1", "1e", "1e+", "tru", "nul", "fals", "\"abc",
		"\"a\\\"", "[1,]", "[1 2]", "{\"a\" 1}", "{\"a\":1,}", "{1:2}", "{\"a\":}", "[", "]", "{]",
		"[}", "\"a\x01\"", "\"\x1f\"", "1 2", "{}x", "'a'", "NaN", "Infinity",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (scan_str(good[i]) < 0)
			fail_msg("refused: %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (scan_str(bad[i]) >= 0)
			fail_msg("accepted: %s", bad[i]);
	json_scan_token t;
	assert_int_equal(scan_one("-12.5e3 ", 8, &t), JSON_SCAN_NUMBER);
	assert_int_equal(t.len, 7);
	uint32_t v;
	assert_int_equal(scan_one("4294967295", 10, &t), JSON_SCAN_NUMBER);
	assert_int_equal(json_scan_u32(&t, &v), 0);
	assert_int_equal(v, UINT32_MAX);
	assert_int_equal(scan_one("4294967296", 10, &t), JSON_SCAN_NUMBER);
	assert_int_equal(json_scan_u32(&t, &v), -1);
	assert_int_equal(scan_one("-1", 2, &t), JSON_SCAN_NUMBER);
	assert_int_equal(json_scan_u32(&t, &v), -1);
	assert_int_equal(scan_one("1.0", 3, &t), JSON_SCAN_NUMBER);
	assert_int_equal(json_scan_u32(&t, &v), -1);
}

/* The string scan looks at eight bytes at a time: put every stop byte at every position. */
static void test_scan_string_positions(void **state)
{
	(void)state;
	char text[64];
	for (int len = 0; len < 40; len++) {
		/* A plain body of len bytes (ASCII and high bytes, which the scan passes through), then
		 * the closing quote. */
		text[0] = '"';
		for (int i = 0; i < len; i++)
			text[1 + i] = i % 3 == 2 ? (char)(0x80 + i) : (char)('a' + i % 26);
		text[1 + len] = '"';
		json_scan_token t;
		assert_int_equal(scan_one(text, (size_t)len + 2, &t), JSON_SCAN_STRING);
		assert_int_equal(t.len, len);
		assert_false(t.escaped);
		/* Without its closing quote it is unterminated. */
		assert_int_equal(scan_one(text, (size_t)len + 1, NULL), -1);
		for (int at = 0; at < len; at++) {
			char saved = text[1 + at];
			text[1 + at] = '\x1f'; /* a raw control character anywhere is refused */
			assert_int_equal(scan_one(text, (size_t)len + 2, NULL), -1);
			text[1 + at] = '"'; /* an early quote ends the string: trailing bytes follow */
			assert_int_equal(scan_one(text, (size_t)len + 2, NULL), -1);
			text[1 + at] = saved;
		}
		for (int at = 0; at + 1 < len; at++) {
			char s0 = text[1 + at], s1 = text[2 + at];
			text[1 + at] = '\\';
			text[2 + at] = 'n';
			assert_int_equal(scan_one(text, (size_t)len + 2, &t), JSON_SCAN_STRING);
			assert_true(t.escaped);
			assert_int_equal(t.len, len);
			text[1 + at] = s0;
			text[2 + at] = s1;
		}
		/* A backslash escaping the closing quote leaves the string open. */
		if (len > 0) {
			char saved = text[len];
			text[len] = '\\';
			assert_int_equal(scan_one(text, (size_t)len + 2, NULL), -1);
			text[len] = saved;
		}
	}
}

static void unescape_is(const char *in, const char *want, size_t want_len)
{
	char out[64];
	const char *err = NULL;
	long n = json_scan_unescape(in, strlen(in), out, &err);
	if (n < 0)
		fail_msg("\"%s\": %s", in, err);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
}

static void test_scan_unescape(void **state)
{
	(void)state;
	unescape_is("plain", "plain", 5);
	unescape_is("", "", 0);
	unescape_is("\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t", 8);
	unescape_is("\\u0041\\u00e9\\u00E9\\u20ac", "A\xc3\xa9\xc3\xa9\xe2\x82\xac", 8);
	unescape_is("\\u0001\\u001f\\u007f\\u0080\\u07ff\\u0800\\uffff", "\x01\x1f\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 13);
	unescape_is("\\ud83d\\ude00x", "\xf0\x9f\x98\x80x", 5);
	unescape_is("\\ud800\\udc00\\udbff\\udfff", "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8);
	static const char *const bad[] = {
		"\\", "\\x", "\\u", "\\u12", "\\u123", "\\u12g4", "\\U0041", "\\u0000", "a\\u0000b",
		"\\ud83d", "\\ud83dx", "\\ud83d\\n", "\\ud83d\\u0041", "\\ud83d\\ud83d", "\\ude00",
		"\\udfff\\ud83d", "\\ud83d\\ude0",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char out[64];
		const char *err = NULL;
		if (json_scan_unescape(bad[i], strlen(bad[i]), out, &err) >= 0)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_workload_seeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_workload_unseeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_begin_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timestamps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_insert_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_insert_follows_alter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_toast_seeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_toast_unseeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_follows_alter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_full_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_index_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_order_and_unknown_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callback_results, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nesting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_bounded, setup, teardown),
		cmocka_unit_test(test_scan_grammar),
		cmocka_unit_test(test_scan_string_positions),
		cmocka_unit_test(test_scan_unescape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
