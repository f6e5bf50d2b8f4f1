/*
 * test_redis_stream — the redis_stream sink's entry format (plugins/sinks/redis_stream.c): a
 * change written as stream entries ("B", the change lines, "C") and read back through walcast's
 * own wal2json decoder is the same change — the normalized record, byte for byte as
 * change_json_write prints it with column types, and the transaction's xid, LSNs and commit time.
 *
 * Two sources: the differential fixture (tests/fixtures/diff: a real PostgreSQL 15 stream through
 * pgoutput, every common type, NULLs, updates of unchanged TOAST values, REPLICA IDENTITY FULL
 * and default, deletes), decoded with pgoutput, written, then decoded from the entries with
 * wal2json into an empty and into a catalog-seeded relation cache; and changes built by hand
 * for the platform schema's types (deploy/migrations: uuid, text, timestamptz, integer, bigint,
 * numeric, jsonb, bytea), NaN and Infinity, unchanged TOAST, key-only old tuples, TRUNCATE and
 * logical messages.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "change.h"
#include "decoder.h"
#include "lsn.h"
#include "redis_stream.h"
#include "relcache.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>

#include "diff_fixture.h"
#include "loop.h"
#include "redis_test_server.h"

/* ---- transcripts: one line per begin, change and commit ---------------------------------- */

typedef struct transcript {
	buf text;
	int changes;
	const relation *last_rel;
} transcript;

static int t_begin(void *arg, const change_txn *txn)
{
	transcript *t = arg;
	char a[LSN_TEXT_MAX];
	return buf_printf(&t->text, "BEGIN xid=%u commit_lsn=%s time=%lld\n", txn->xid, lsn_format(txn->commit_lsn, a),
	                  (long long)txn->commit_time);
}

static int t_change(void *arg, change *c)
{
	transcript *t = arg;
	t->changes++;
	t->last_rel = c->rel;
	char l[LSN_TEXT_MAX];
	int rc = buf_printf(&t->text, "lsn=%s ", lsn_format(c->lsn, l));
	if (rc == 0)
		rc = change_json_write(&t->text, c, CHANGE_JSON_TYPES);
	return rc == 0 ? buf_putc(&t->text, '\n') : rc;
}

static int t_commit(void *arg, const change_txn *txn)
{
	transcript *t = arg;
	char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
	return buf_printf(&t->text, "COMMIT xid=%u commit_lsn=%s end_lsn=%s\n", txn->xid, lsn_format(txn->commit_lsn, a),
	                  lsn_format(txn->end_lsn, b));
}

/* ---- the writer: entries as the sink makes them ------------------------------------------ */

/* The entries of the stream: "LSN<TAB>line" per entry, the lsn field and the data field. */
typedef struct writer {
	transcript t;  /* what the source decoder produced */
	buf pending;   /* the change lines of the transaction in progress */
	buf entries;
	int nentries;
} writer;

static int w_begin(void *arg, const change_txn *txn)
{
	writer *w = arg;
	buf_clear(&w->pending);
	return t_begin(&w->t, txn);
}

static int entry_put(writer *w, uint64_t lsn, int (*write)(buf *, const void *), const void *what)
{
	char l[LSN_TEXT_MAX];
	int rc = buf_printf(&w->entries, "%s\t", lsn_format(lsn, l));
	if (rc == 0)
		rc = write(&w->entries, what);
	w->nentries++;
	return rc == 0 ? buf_putc(&w->entries, '\n') : rc;
}

static int write_change(buf *b, const void *c) { return redis_stream_change_write(b, c); }
static int write_begin(buf *b, const void *t) { return redis_stream_begin_write(b, t); }
static int write_commit(buf *b, const void *t) { return redis_stream_commit_write(b, t); }

static int w_change(void *arg, change *c)
{
	writer *w = arg;
	assert_int_equal(t_change(&w->t, c), 0);
	if (c->txn == NULL)
		return entry_put(w, c->lsn, write_change, c);
	/* the sink is offered a transaction at its commit: the lines wait for the "B" */
	char l[LSN_TEXT_MAX];
	int rc = buf_printf(&w->pending, "%s\t", lsn_format(c->lsn, l));
	if (rc == 0)
		rc = redis_stream_change_write(&w->pending, c);
	return rc == 0 ? buf_putc(&w->pending, '\n') : rc;
}

static int w_commit(void *arg, const change_txn *txn)
{
	writer *w = arg;
	assert_int_equal(t_commit(&w->t, txn), 0);
	int rc = entry_put(w, txn->commit_lsn, write_begin, txn);
	if (rc == 0)
		rc = buf_append(&w->entries, w->pending.data, w->pending.len);
	for (size_t i = 0; i < w->pending.len; i++)
		w->nentries += w->pending.data[i] == '\n';
	if (rc == 0)
		rc = entry_put(w, txn->end_lsn, write_commit, txn);
	buf_clear(&w->pending);
	return rc;
}

static void writer_init(writer *w)
{
	memset(w, 0, sizeof(*w));
	buf_init(&w->t.text);
	buf_init(&w->pending);
	buf_init(&w->entries);
}

static void writer_fini(writer *w)
{
	buf_fini(&w->t.text);
	buf_fini(&w->pending);
	buf_fini(&w->entries);
}

/* Feeds every "LSN<TAB>line" entry to a wal2json decoder on rels. */
static void read_entries(const char *entries, relcache *rels, transcript *out)
{
	decoder_params p = {.relations = rels, .sink = {t_begin, t_change, t_commit, out}};
	decoder *d = NULL;
	assert_int_equal(decoder_create(decoder_ops_find("wal2json"), &p, &d), 0);
	const char *line = entries;
	int n = 0;
	while (*line) {
		const char *tab = strchr(line, '\t'), *nl = strchr(line, '\n');
		assert_non_null(tab);
		assert_non_null(nl);
		uint64_t lsn;
		assert_int_equal(lsn_parse(line, (size_t)(tab - line), &lsn), 0);
		char err[DECODER_ERROR_MAX] = "";
		n++;
		int rc = decoder_decode(d, lsn, (const uint8_t *)tab + 1, (size_t)(nl - tab - 1), err);
		if (rc != 0)
			fail_msg("entry %d: %d %s\n%.*s", n, rc, err, (int)(nl - tab - 1), tab + 1);
		line = nl + 1;
	}
	decoder_destroy(d);
}

static void same_text(const buf *want, const buf *got)
{
	if (strcmp(want->data ? want->data : "", got->data ? got->data : "") == 0)
		return;
	const char *a = want->data, *b = got->data;
	int line = 1;
	while (*a && *a == *b) {
		if (*a == '\n')
			line++;
		a++, b++;
	}
	const char *la = a, *lb = b;
	while (la > want->data && la[-1] != '\n')
		la--;
	while (lb > got->data && lb[-1] != '\n')
		lb--;
	fail_msg("line %d differs:\nwritten: %.700s\nread:    %.700s", line, la, lb);
}

/* ---- the differential fixture ------------------------------------------------------------ */

static void pgoutput_through_writer(writer *w)
{
	relcache *rels = relcache_create();
	decoder_params p = {.relations = rels, .sink = {w_begin, w_change, w_commit, w}, .publication = "walcast_diff"};
	decoder *d = NULL;
	assert_int_equal(decoder_create(decoder_ops_find("pgoutput"), &p, &d), 0);
	FILE *f = fopen(fixture_path("pgoutput.msgs"), "r");
	assert_non_null(f);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint8_t *bytes = NULL;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		char *tab = strchr(line, '\t');
		assert_non_null(tab);
		uint64_t lsn;
		assert_int_equal(lsn_parse(line, (size_t)(tab - line), &lsn), 0);
		size_t plen = strlen(tab + 1) / 2;
		bytes = realloc(bytes, plen + 1);
		for (size_t i = 0; i < plen; i++)
			bytes[i] = (uint8_t)(hexval(tab[1 + 2 * i]) << 4 | hexval(tab[2 + 2 * i]));
		char err[DECODER_ERROR_MAX];
		assert_int_equal(decoder_decode(d, lsn, bytes, plen, err), 0);
	}
	free(bytes);
	free(line);
	fclose(f);
	decoder_destroy(d);
	relcache_destroy(rels);
}

static void fixture_round_trip(bool seed)
{
	writer w;
	writer_init(&w);
	pgoutput_through_writer(&w);
	assert_true(w.t.changes > 60);
	transcript r = {0};
	buf_init(&r.text);
	relcache *rels = relcache_create();
	if (seed)
		seed_catalog(rels);
	read_entries(w.entries.data, rels, &r);
	assert_int_equal(r.changes, w.t.changes);
	same_text(&w.t.text, &r.text);
	relcache_destroy(rels);
	buf_fini(&r.text);
	writer_fini(&w);
}

static void test_fixture_unseeded(void **state) { fixture_round_trip(false); }
static void test_fixture_seeded(void **state) { fixture_round_trip(true); }

/* ---- changes built by hand: the platform schema ------------------------------------------ */

enum { UUID = 2950, TEXT = 25, TSTZ = 1184, INT4 = 23, INT8 = 20, NUMERIC = 1700, JSONB = 3802, BYTEA = 17,
       FLOAT8 = 701, BOOL = 16 };

#define T(s) {VALUE_TEXT, sizeof(s) - 1, s}
#define NUL {VALUE_NULL, 0, NULL}
#define ABS {VALUE_ABSENT, 0, NULL}
#define UNCH {VALUE_UNCHANGED, 0, NULL}

static rel_column events_cols[] = {
	{.name = "id", .type_oid = UUID, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID, .typmod = -1},
	{.name = "kind", .type_oid = TEXT, .typmod = -1},
	{.name = "started_at", .type_oid = TSTZ, .typmod = -1},
	{.name = "duration_s", .type_oid = INT4, .typmod = -1},
	{.name = "body", .type_oid = BYTEA, .typmod = -1},
	{.name = "seq", .type_oid = INT8, .typmod = -1},
	{.name = "lag_s", .type_oid = NUMERIC, .typmod = -1},
	{.name = "detail", .type_oid = JSONB, .typmod = -1},
	{.name = "score", .type_oid = FLOAT8, .typmod = -1},
	{.name = "ok", .type_oid = BOOL, .typmod = -1},
	{.name = "note", .type_oid = TEXT, .typmod = -1},
};
#define NCOLS ((int)(sizeof(events_cols) / sizeof(events_cols[0])))

static void test_platform_types(void **state)
{
	relation rel = {.schema = "public", .name = "events", .ncols = NCOLS, .cols = events_cols, .replident = 'd'};
	change_txn txn = {.xid = 4242, .commit_lsn = 0x1000016B3748ULL, .end_lsn = 0x1000016B3790ULL,
	                  .commit_time = INT64_C(1796205600123456)};
	change_value full[NCOLS] = {
		T("7c9e6679-7425-40de-944b-e07fc1f90ae7"), T("0f8fad5b-d9cb-469f-a165-70867728950e"), T("call"),
		T("2026-12-02 10:00:00.123456+00"), T("42"), T("\\x01020a0bff"), T("9007199254740993"),
		T("12345678901234567890.000001"), T("{\"a\": [1, \"x\\\"y\"], \"\\u00e9\": null}"), T("-1.5e-07"), T("t"),
		T("line\nbreak\t\"quoted\" \\ é 😀"),
	};
	change_value nulls[NCOLS] = {
		T("7c9e6679-7425-40de-944b-e07fc1f90ae8"), T("0f8fad5b-d9cb-469f-a165-70867728950e"), T("sms"),
		T("2026-12-02 10:00:01+00"), NUL, NUL, NUL, T("NaN"), NUL, T("-Infinity"), T("f"), NUL,
	};
	change_value upd_new[NCOLS] = {
		T("7c9e6679-7425-40de-944b-e07fc1f90ae7"), T("0f8fad5b-d9cb-469f-a165-70867728950e"), T("call"),
		T("2026-12-02 10:00:00.123456+00"), T("43"), T("\\x"), T("-1"), T("Infinity"), UNCH, T("0"), T("t"), UNCH,
	};
	change_value key_only[NCOLS] = {
		T("7c9e6679-7425-40de-944b-e07fc1f90ae8"), ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS,
	};
	change_value moved_old[NCOLS] = {
		T("7c9e6679-7425-40de-944b-e07fc1f90ae6"), ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS, ABS,
	};
	change changes[] = {
		{.action = CHANGE_INSERT, .lsn = 0x1000016B3000ULL, .txn = &txn, .rel = &rel, .new_tuple = full},
		{.action = CHANGE_INSERT, .lsn = 0x1000016B3100ULL, .txn = &txn, .rel = &rel, .new_tuple = nulls},
		{.action = CHANGE_UPDATE, .lsn = 0x1000016B3200ULL, .txn = &txn, .rel = &rel, .new_tuple = upd_new},
		/* the key changed: the old key comes along */
		{.action = CHANGE_UPDATE, .lsn = 0x1000016B3250ULL, .txn = &txn, .rel = &rel, .new_tuple = full,
		 .old_tuple = moved_old},
		{.action = CHANGE_DELETE, .lsn = 0x1000016B3300ULL, .txn = &txn, .rel = &rel, .old_tuple = key_only},
		{.action = CHANGE_TRUNCATE, .lsn = 0x1000016B3400ULL, .txn = &txn, .rel = &rel},
		{.action = CHANGE_MESSAGE, .lsn = 0x1000016B3500ULL, .txn = &txn, .transactional = true,
		 .prefix = "app", .content = "{\"hello\": \"wörld\"}", .content_len = 19},
	};
	change untx = {.action = CHANGE_MESSAGE, .lsn = 0x1000016B3800ULL, .transactional = false,
	               .prefix = "walcast.test", .content = "ab\0cd", .content_len = 5};
	writer w;
	writer_init(&w);
	assert_int_equal(w_begin(&w, &txn), 0);
	for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++)
		assert_int_equal(w_change(&w, &changes[i]), 0);
	assert_int_equal(w_commit(&w, &txn), 0);
	assert_int_equal(w_change(&w, &untx), 0);

	/* the reader knows the relation, as an edge whose source seeded it from the catalog */
	relcache *rels = relcache_create();
	relation seeded = rel;
	seeded.replident = '?';
	assert_int_equal(relcache_put(rels, &seeded, NULL), 0);
	transcript r = {0};
	buf_init(&r.text);
	read_entries(w.entries.data, rels, &r);
	/* a NUL in a message's content cannot be carried: it arrives as U+FFFD */
	char *nul = strstr(w.t.text.data, "ab\\u0000cd");
	assert_non_null(nul);
	assert_non_null(strstr(r.text.data, "ab\xef\xbf\xbd" "cd"));
	buf fixed;
	buf_init(&fixed);
	assert_int_equal(buf_append(&fixed, w.t.text.data, (size_t)(nul - w.t.text.data)), 0);
	assert_int_equal(buf_puts(&fixed, "ab\xef\xbf\xbd" "cd"), 0);
	assert_int_equal(buf_puts(&fixed, nul + strlen("ab\\u0000cd")), 0);
	same_text(&fixed, &r.text);
	assert_int_equal(r.changes, (int)(sizeof(changes) / sizeof(changes[0])) + 1);
	/* the key columns come along ("pk") */
	const relation *got = relcache_get_name(rels, "public", 6, "events", 6);
	assert_non_null(got);
	for (int i = 0; i < NCOLS; i++)
		assert_int_equal(got->cols[i].key, events_cols[i].key);
	/* numbers stay numbers, NaN and Infinity strings, bytea without its \x, as wal2json writes */
	assert_non_null(strstr(w.entries.data, "\"value\":42}"));
	assert_non_null(strstr(w.entries.data, "\"value\":\"NaN\"}"));
	assert_non_null(strstr(w.entries.data, "\"value\":\"01020a0bff\"}"));
	assert_non_null(strstr(w.entries.data, "\"value\":true}"));
	assert_non_null(strstr(w.entries.data, "\"timestamp\":\"2026-12-02 10:00:00.123456+00\""));
	buf_fini(&fixed);
	buf_fini(&r.text);
	relcache_destroy(rels);
	writer_fini(&w);
}

/* A transaction's entries when the relation is new to the reader: the shape is learned from the
 * lines, as from wal2json itself (an UPDATE's unchanged TOAST needs the shape known first). */
static void test_unknown_relation(void **state)
{
	relation rel = {.schema = "public", .name = "orgs", .ncols = 3, .cols = events_cols, .replident = 'd'};
	change_txn txn = {.xid = 7, .commit_lsn = 0x20000, .end_lsn = 0x20040, .commit_time = 0};
	change_value ins[3] = {T("7c9e6679-7425-40de-944b-e07fc1f90ae7"), T("0f8fad5b-d9cb-469f-a165-70867728950e"),
	                       T("x")};
	change_value upd[3] = {T("7c9e6679-7425-40de-944b-e07fc1f90ae7"), T("0f8fad5b-d9cb-469f-a165-70867728950f"),
	                       UNCH};
	change_value del[3] = {T("7c9e6679-7425-40de-944b-e07fc1f90ae7"), ABS, ABS};
	change changes[] = {
		{.action = CHANGE_INSERT, .lsn = 0x1F000, .txn = &txn, .rel = &rel, .new_tuple = ins},
		{.action = CHANGE_UPDATE, .lsn = 0x1F100, .txn = &txn, .rel = &rel, .new_tuple = upd},
		{.action = CHANGE_DELETE, .lsn = 0x1F200, .txn = &txn, .rel = &rel, .old_tuple = del},
	};
	writer w;
	writer_init(&w);
	assert_int_equal(w_begin(&w, &txn), 0);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(w_change(&w, &changes[i]), 0);
	assert_int_equal(w_commit(&w, &txn), 0);
	assert_int_equal(w.nentries, 5);
	relcache *rels = relcache_create();
	transcript r = {0};
	buf_init(&r.text);
	read_entries(w.entries.data, rels, &r);
	same_text(&w.t.text, &r.text);
	buf_fini(&r.text);
	relcache_destroy(rels);
	writer_fini(&w);
}

/* ---- the sink against a real redis-server: a replay writes nothing twice ------------------ */

typedef struct harness {
	loop *l;
	void *impl;
	uint64_t want;
	int64_t wait_replicas; /* the sink's key (0: no WAIT) */
} harness;

static int sub_stub(void *env_arg, void *sub_arg, const char *uid, bool bypass, bool wildcard, audience_sub **out)
{
	assert_true(bypass);
	*out = (audience_sub *)env_arg;
	return 0;
}

static void unsub_stub(void *env_arg, audience_sub *s) {}

static void progress_cb(void *env_arg)
{
	harness *h = env_arg;
	if (h->impl != NULL && redis_stream_sink_ops.position(h->impl) >= h->want)
		loop_stop(h->l);
}

static void timeout_cb(loop *l, int id, void *arg)
{
	*(bool *)arg = true;
	loop_stop(l);
}

/* Runs the loop until the sink's position reaches want (true) or ms pass (false). */
static bool run_until_ms(harness *h, uint64_t want, int64_t ms)
{
	h->want = want;
	if (redis_stream_sink_ops.position(h->impl) >= want)
		return true;
	bool timed_out = false;
	int id = loop_timer_add(h->l, ms, timeout_cb, &timed_out);
	assert_true(id > 0);
	assert_int_equal(loop_run(h->l), 0);
	loop_timer_cancel(h->l, id);
	return !timed_out && redis_stream_sink_ops.position(h->impl) >= want;
}

static bool run_until(harness *h, uint64_t want)
{
	return run_until_ms(h, want, 10000);
}

static void sink_create(harness *h, const char *url)
{
	redis_stream_conf conf = {.url = (char *)url, .key = "t:changes", .window = 0, .round_bytes = 4096,
	                          .flush_interval_ms = 1, .connect_timeout_ms = 500, .command_timeout_ms = 2000,
	                          .reconnect_max_ms = 50, .wait_replicas = h->wait_replicas, .wait_timeout_ms = 200};
	sink_env env = {.name = "t", .loop = h->l, .subscribe = sub_stub, .unsubscribe = unsub_stub,
	                .progress = progress_cb, .env_arg = h};
	char err[SINK_ERROR_MAX] = "";
	if (redis_stream_sink_ops.create(&env, &conf, &h->impl, err) < 0)
		fail_msg("create: %s", err);
}

/* One transaction of one insert. */
static void txn_feed(harness *h, uint64_t commit_lsn)
{
	change_txn txn = {.xid = (uint32_t)commit_lsn, .commit_lsn = commit_lsn, .end_lsn = commit_lsn + 8,
	                  .commit_time = INT64_C(1796205600000000)};
	change_value v[3] = {T("7c9e6679-7425-40de-944b-e07fc1f90ae7"), T("0f8fad5b-d9cb-469f-a165-70867728950e"),
	                     T("x")};
	relation rel = {.schema = "public", .name = "orgs", .ncols = 3, .cols = events_cols};
	change c = {.action = CHANGE_INSERT, .lsn = commit_lsn - 4, .txn = &txn, .rel = &rel, .new_tuple = v};
	audience_delivery d = {.view = &c, .source = &c, .bypass = true};
	assert_int_equal(redis_stream_sink_ops.begin(h->impl, &txn), 0);
	assert_int_equal(redis_stream_sink_ops.deliver(h->impl, NULL, &d), 0);
	assert_int_equal(redis_stream_sink_ops.commit(h->impl, &txn), 0);
}

static void test_replay_skipped(void **state)
{
	if (!redis_test_have_server())
		skip();
	int port = redis_test_free_port();
	pid_t pid = redis_test_server_start(port);
	assert_true(pid > 0);
	redisContext *rc = NULL;
	for (int i = 0; i < 200; i++) {
		rc = redisConnect("127.0.0.1", port);
		if (rc != NULL && !rc->err)
			break;
		redisFree(rc);
		rc = NULL;
		usleep(20000);
	}
	assert_non_null(rc);
	char url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	harness h = {.l = loop_create()};
	assert_non_null(h.l);

	sink_create(&h, url);
	txn_feed(&h, 0x100);
	txn_feed(&h, 0x200);
	assert_true(run_until(&h, 0x208));
	redis_stream_sink_ops.destroy(h.impl);

	/* walcast died before PostgreSQL heard of 0x208: the next start is offered both again, before
	 * it has read the stream (position 0): the script skips their entries */
	sink_create(&h, url);
	assert_int_equal(redis_stream_sink_ops.position(h.impl), 0);
	txn_feed(&h, 0x100);
	txn_feed(&h, 0x200);
	txn_feed(&h, 0x300);
	assert_true(run_until(&h, 0x308));
	redis_stream_sink_ops.destroy(h.impl);

	redisReply *r = redisCommand(rc, "XRANGE t:changes - +");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	const char *ids[] = {"256-0", "256-1", "256-2", "512-0", "512-1", "512-2", "768-0", "768-1", "768-2"};
	assert_int_equal(r->elements, 9);
	for (size_t i = 0; i < 9; i++)
		assert_string_equal(r->element[i]->element[0]->str, ids[i]);
	freeReplyObject(r);

	/* a third start reads its position from the stream's last entry, a "C": its end LSN */
	sink_create(&h, url);
	assert_true(run_until(&h, 0x308));
	assert_int_equal(redis_stream_sink_ops.position(h.impl), 0x308);
	redis_stream_sink_ops.destroy(h.impl);

	loop_destroy(h.l);
	redisFree(rc);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* wait_replicas = 1 against a primary and its replica started here: a round is confirmed once
 * the replica has it; the replica stopped, its entries are in the stream but the position stays;
 * back, it moves. */
static void test_wait_replicas(void **state)
{
	if (!redis_test_have_server())
		skip();
	char dir[] = "/tmp/walcast-wait-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int port = redis_test_free_port(), rport = redis_test_free_port();
	while (rport == port)
		rport = redis_test_free_port();
	char replicaof[32], url[64];
	snprintf(replicaof, sizeof(replicaof), "127.0.0.1 %d", port);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	pid_t *pids = *state;
	pids[0] = redis_test_server_spawn(port, dir, NULL);
	pids[1] = redis_test_server_spawn(rport, dir, replicaof);
	assert_true(pids[0] > 0 && pids[1] > 0);
	assert_true(redis_test_replica_online(port));
	harness h = {.l = loop_create(), .wait_replicas = 1};
	sink_create(&h, url);
	txn_feed(&h, 0x100);
	assert_true(run_until(&h, 0x108));
	kill(pids[1], SIGSTOP);
	txn_feed(&h, 0x200);
	assert_false(run_until_ms(&h, 0x208, 1500));
	assert_int_equal(redis_stream_sink_ops.position(h.impl), 0x108);
	redisContext *rc = redisConnect("127.0.0.1", port);
	redisReply *r = rc != NULL && !rc->err ? redisCommand(rc, "XLEN t:changes") : NULL;
	assert_non_null(r);
	assert_int_equal(r->integer, 6); /* both transactions' B, I, C are in the stream */
	freeReplyObject(r);
	redisFree(rc);
	kill(pids[1], SIGCONT);
	assert_true(run_until(&h, 0x208));
	redis_stream_sink_ops.destroy(h.impl);
	loop_destroy(h.l);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixture_unseeded),
		cmocka_unit_test(test_fixture_seeded),
		cmocka_unit_test(test_platform_types),
		cmocka_unit_test(test_unknown_relation),
		cmocka_unit_test(test_replay_skipped),
		cmocka_unit_test_setup_teardown(test_wait_replicas, redis_test_pids_setup, redis_test_pids_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
