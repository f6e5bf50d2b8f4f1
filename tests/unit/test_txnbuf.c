/*
 * test_txnbuf — unit tests for the transaction buffer (src/stream/txnbuf.h): every action and value kind
 * survives append and replay unchanged, in memory and spilled; a transaction far larger than
 * the memory limit replays byte-identically in order while the heap stays bounded; relations
 * of earlier changes survive an ALTER TABLE (relcache_put) inside the transaction; replay can
 * be repeated and stopped; a spill failure (-EIO) leaves the buffer as it was; reset after a
 * spill reuses memory; the spill file is never visible in its directory. Run under ASan, a use
 * after free or a leak of a relation fails these tests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "heap.h"
#include "relcache.h"
#include "txnbuf.h"

/* ---- helpers ------------------------------------------------------------------------- */

/* A scratch directory for spill files, removed (it must be empty: the file is unlinked). */
static char *mkdir_tmp(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[512];
	snprintf(tmpl, sizeof(tmpl), "%s/walcast-txnbuf-test-XXXXXX", base && base[0] ? base : "/tmp");
	char *d = mkdtemp(tmpl);
	assert_non_null(d);
	return strdup(d);
}

static int dir_entries(const char *path)
{
	DIR *d = opendir(path);
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

static void rmdir_tmp(char *path)
{
	assert_int_equal(dir_entries(path), 0);
	assert_int_equal(rmdir(path), 0);
	free(path);
}

static txnbuf *mk(size_t mem_limit, const char *dir)
{
	txnbuf *tb = NULL;
	assert_int_equal(txnbuf_create(mem_limit, dir, &tb), 0);
	assert_non_null(tb);
	return tb;
}

static change_value text(const char *s)
{
	return (change_value){.kind = VALUE_TEXT, .len = (uint32_t)strlen(s), .data = s};
}

static void assert_value_equal(const change_value *got, const change_value *want)
{
	assert_int_equal(got->kind, want->kind);
	if (want->kind != VALUE_TEXT)
		return;
	assert_int_equal(got->len, want->len);
	assert_non_null(got->data);
	assert_memory_equal(got->data, want->data, want->len);
	assert_int_equal(got->data[got->len], '\0'); /* NUL-terminated, as change.h promises */
}

static void assert_opt_string_equal(const char *got, const char *want)
{
	if (want == NULL)
		assert_null(got);
	else
		assert_string_equal(got, want);
}

/* got equals want in every field, its txn being txn (NULL stays NULL). */
static void assert_change_equal(const change *got, const change *want, const change_txn *txn)
{
	assert_int_equal(got->action, want->action);
	assert_int_equal(got->lsn, want->lsn);
	assert_ptr_equal(got->txn, want->txn != NULL ? txn : NULL);
	assert_ptr_equal(got->rel, want->rel);
	assert_int_equal(got->transactional, want->transactional);
	assert_int_equal(got->cascade, want->cascade);
	assert_int_equal(got->restart_identity, want->restart_identity);
	int ncols = want->rel != NULL ? want->rel->ncols : 0;
	const change_value *gt[2] = {got->new_tuple, got->old_tuple};
	const change_value *wt[2] = {want->new_tuple, want->old_tuple};
	for (int t = 0; t < 2; t++) {
		if (wt[t] == NULL) {
			assert_null(gt[t]);
			continue;
		}
		assert_non_null(gt[t]);
		for (int i = 0; i < ncols; i++)
			assert_value_equal(&gt[t][i], &wt[t][i]);
	}
	if (want->row_errors == NULL) {
		assert_null(got->row_errors);
	} else {
		assert_non_null(got->row_errors);
		for (int i = 0; i < ncols; i++)
			assert_opt_string_equal(got->row_errors[i], want->row_errors[i]);
	}
	assert_opt_string_equal(got->prefix, want->prefix);
	if (want->content == NULL) {
		assert_null(got->content);
		assert_int_equal(got->content_len, 0);
	} else {
		assert_non_null(got->content);
		assert_int_equal(got->content_len, want->content_len);
		assert_memory_equal(got->content, want->content, want->content_len);
	}
}

/* Replay against an array of expected changes, cycled (want[i % nwant]). */
typedef struct expect {
	const change *want;
	size_t nwant;
	const change_txn *txn;
	size_t seen;
	size_t stop_at; /* return 7 at this index; SIZE_MAX = never */
} expect;

static int expect_cb(void *arg, const change *c)
{
	expect *e = arg;
	if (e->seen == e->stop_at)
		return 7;
	assert_change_equal(c, &e->want[e->seen % e->nwant], e->txn);
	e->seen++;
	return 0;
}

static void replay_expect(txnbuf *tb, const change *want, size_t nwant, size_t total)
{
	change_txn txn = {.xid = 750, .commit_lsn = 0x16B37A0, .end_lsn = 0x16B37D0, .commit_time = 123456};
	expect e = {.want = want, .nwant = nwant, .txn = &txn, .stop_at = SIZE_MAX};
	assert_int_equal(txnbuf_replay(tb, &txn, expect_cb, &e), 0);
	assert_int_equal(e.seen, total);
}

/* ---- the changes of the round trip --------------------------------------------------------- */

static rel_column cols5[] = {
	{.name = "id", .type_oid = 20, .typmod = -1, .key = true},
	{.name = "body", .type_oid = 25, .typmod = -1},
	{.name = "price", .type_oid = 1700, .typmod = 655366},
	{.name = "note", .type_oid = 25, .typmod = -1},
	{.name = "blob", .type_oid = 17, .typmod = -1},
};

static const char embedded_nul[] = {'a', 0, 'b', 0, 'c'};

typedef struct samples {
	relcache *rc;
	const relation *rel;
	change_txn txn;
	change_value nv[5], ov[5], keyonly[5];
	const char *errs[5];
	change c[12];
	size_t n;
} samples;

static void samples_init(samples *s)
{
	memset(s, 0, sizeof(*s));
	s->rc = relcache_create();
	assert_non_null(s->rc);
	relation d = {.oid = 16384, .schema = "public", .name = "t", .ncols = 5, .cols = cols5, .replident = 'f'};
	assert_int_equal(relcache_put(s->rc, &d, &s->rel), 0);
	s->txn = (change_txn){.xid = 1, .commit_lsn = 2};
	/* Every value kind, an empty string and bytes with embedded NULs. */
	s->nv[0] = text("42");
	s->nv[1] = text("");
	s->nv[2] = (change_value){.kind = VALUE_NULL};
	s->nv[3] = (change_value){.kind = VALUE_UNCHANGED};
	s->nv[4] = (change_value){.kind = VALUE_TEXT, .len = sizeof(embedded_nul), .data = embedded_nul};
	s->ov[0] = text("41");
	s->ov[1] = text("old body é");
	s->ov[2] = text("12.50");
	s->ov[3] = text("toasted");
	s->ov[4] = (change_value){.kind = VALUE_NULL};
	s->keyonly[0] = text("41");
	for (int i = 1; i < 5; i++)
		s->keyonly[i] = (change_value){.kind = VALUE_ABSENT};
	s->errs[1] = "unknown_key";
	s->errs[4] = "";
	const change_txn *t = &s->txn;
	const relation *r = s->rel;
	change *c = s->c;
	size_t n = 0;
	c[n++] = (change){.action = CHANGE_INSERT, .lsn = 0x100, .txn = t, .rel = r, .new_tuple = s->nv};
	c[n++] = (change){.action = CHANGE_UPDATE, .lsn = 0x200, .txn = t, .rel = r, .new_tuple = s->nv,
	                  .old_tuple = s->ov};
	c[n++] = (change){.action = CHANGE_UPDATE, .lsn = 0x201, .txn = t, .rel = r, .new_tuple = s->ov,
	                  .old_tuple = s->keyonly, .row_errors = s->errs};
	c[n++] = (change){.action = CHANGE_DELETE, .lsn = 0x300, .txn = t, .rel = r, .old_tuple = s->keyonly};
	c[n++] = (change){.action = CHANGE_DELETE, .lsn = 0x301, .txn = t, .rel = r, .old_tuple = s->ov,
	                  .row_errors = s->errs};
	c[n++] = (change){.action = CHANGE_TRUNCATE, .lsn = 0x400, .txn = t, .rel = r};
	c[n++] = (change){.action = CHANGE_TRUNCATE, .lsn = 0x401, .txn = t, .rel = r, .cascade = true};
	c[n++] = (change){.action = CHANGE_TRUNCATE, .lsn = UINT64_MAX, .txn = t, .rel = r,
	                  .cascade = true, .restart_identity = true};
	c[n++] = (change){.action = CHANGE_MESSAGE, .lsn = 0x500, .txn = t, .transactional = true,
	                  .prefix = "walcast", .content = embedded_nul, .content_len = sizeof(embedded_nul)};
	c[n++] = (change){.action = CHANGE_MESSAGE, .lsn = 0x501, .txn = t, .transactional = true,
	                  .prefix = "", .content = "", .content_len = 0};
	/* A non-transactional message has no transaction; it stays without one. */
	c[n++] = (change){.action = CHANGE_MESSAGE, .lsn = 0x502, .prefix = "p", .content = "x", .content_len = 1};
	c[n++] = (change){.action = CHANGE_MESSAGE, .lsn = 0, .txn = t, .prefix = "no content"};
	s->n = n;
}

static void samples_fini(samples *s)
{
	relcache_destroy(s->rc);
}

/* Appends the samples `rounds` times with mem_limit and checks the replay (twice). */
static void round_trip(size_t mem_limit, size_t rounds, bool expect_spill)
{
	samples s;
	samples_init(&s);
	char *dir = mkdir_tmp();
	txnbuf *tb = mk(mem_limit, dir);
	for (size_t k = 0; k < rounds; k++)
		for (size_t i = 0; i < s.n; i++)
			assert_int_equal(txnbuf_append(tb, &s.c[i]), 0);
	assert_int_equal(txnbuf_count(tb), rounds * s.n);
	txnbuf_stats st;
	txnbuf_get_stats(tb, &st);
	assert_int_equal(st.spill_bytes > 0, expect_spill);
	assert_int_equal(st.spills, expect_spill ? 1 : 0);
	assert_true(st.mem_bytes <= mem_limit);
	assert_int_equal(st.max_changes, rounds * s.n);
	/* The relation is referenced once, however many changes point at it. */
	assert_int_equal(s.rel->refs, 1);
	replay_expect(tb, s.c, s.n, rounds * s.n);
	replay_expect(tb, s.c, s.n, rounds * s.n);
	assert_int_equal(dir_entries(dir), 0); /* the spill file is never visible */
	txnbuf_reset(tb);
	assert_int_equal(s.rel->refs, 0);
	assert_int_equal(txnbuf_count(tb), 0);
	replay_expect(tb, s.c, s.n, 0);
	txnbuf_destroy(tb);
	rmdir_tmp(dir);
	samples_fini(&s);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_create_invalid(void **state)
{
	(void)state;
	txnbuf *tb = (txnbuf *)0x1;
	assert_int_equal(txnbuf_create(4095, NULL, &tb), -EINVAL);
	assert_int_equal(txnbuf_create(0, "/tmp", &tb), -EINVAL);
	assert_ptr_equal(tb, (txnbuf *)0x1);
	tb = mk(4096, NULL);
	assert_int_equal(txnbuf_count(tb), 0);
	txnbuf_stats st;
	txnbuf_get_stats(tb, &st);
	assert_int_equal(st.mem_bytes, 0);
	assert_int_equal(st.spill_bytes, 0);
	txnbuf_destroy(tb);
	txnbuf_destroy(NULL);
}

static void test_round_trip_in_memory(void **state)
{
	(void)state;
	round_trip(1 << 20, 1, false);
	round_trip(1 << 20, 50, false);
}

static void test_round_trip_spilled(void **state)
{
	(void)state;
	/* 4 KB of memory: most of 500 rounds of samples are read back from the file. */
	round_trip(4096, 500, true);
}

static void test_rejects_malformed_change(void **state)
{
	(void)state;
	samples s;
	samples_init(&s);
	txnbuf *tb = mk(4096, NULL);
	assert_int_equal(txnbuf_append(tb, &s.c[0]), 0);
	change bad = s.c[0];
	bad.rel = NULL; /* a tuple without its relation */
	assert_int_equal(txnbuf_append(tb, &bad), -EINVAL);
	change_value v[5];
	memcpy(v, s.nv, sizeof(v));
	v[3].kind = 9;
	bad = s.c[0];
	bad.new_tuple = v;
	assert_int_equal(txnbuf_append(tb, &bad), -EINVAL);
	assert_int_equal(txnbuf_count(tb), 1);
	replay_expect(tb, s.c, 1, 1);
	txnbuf_destroy(tb);
	assert_int_equal(s.rel->refs, 0);
	samples_fini(&s);
}

static void test_replay_stops_and_repeats(void **state)
{
	(void)state;
	samples s;
	samples_init(&s);
	txnbuf *tb = mk(4096, NULL);
	for (size_t k = 0; k < 300; k++)
		for (size_t i = 0; i < s.n; i++)
			assert_int_equal(txnbuf_append(tb, &s.c[i]), 0);
	change_txn txn = {.xid = 9};
	/* Stopping in the spilled part and in the memory tail returns the callback's value. */
	size_t total = 300 * s.n;
	size_t stops[] = {0, 5, total / 2, total - 1};
	for (size_t k = 0; k < sizeof(stops) / sizeof(stops[0]); k++) {
		expect e = {.want = s.c, .nwant = s.n, .txn = &txn, .stop_at = stops[k]};
		assert_int_equal(txnbuf_replay(tb, &txn, expect_cb, &e), 7);
		assert_int_equal(e.seen, stops[k]);
	}
	/* And a full replay afterwards still sees everything. */
	replay_expect(tb, s.c, s.n, total);
	txnbuf_destroy(tb);
	samples_fini(&s);
}

/* A change larger than the whole memory limit goes to the file directly, in order. */
static void test_change_larger_than_memory(void **state)
{
	(void)state;
	samples s;
	samples_init(&s);
	size_t big = 300000;
	char *body = malloc(big + 1);
	assert_non_null(body);
	for (size_t i = 0; i < big; i++)
		body[i] = (char)('a' + i % 26);
	body[big] = 0;
	change_value nv[5];
	memcpy(nv, s.nv, sizeof(nv));
	nv[1] = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)big, .data = body};
	change seq[4] = {s.c[0], s.c[1], s.c[0], s.c[3]};
	seq[1].new_tuple = nv;
	seq[2].lsn = 0x999;
	seq[2].new_tuple = nv;
	txnbuf *tb = mk(4096, NULL);
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < 4; i++)
			assert_int_equal(txnbuf_append(tb, &seq[i]), 0);
	replay_expect(tb, seq, 4, 12);
	replay_expect(tb, seq, 4, 12);
	txnbuf_reset(tb);
	/* The next transaction, small, stays in memory. */
	assert_int_equal(txnbuf_append(tb, &s.c[0]), 0);
	txnbuf_stats st;
	txnbuf_get_stats(tb, &st);
	assert_int_equal(st.spill_bytes, 0);
	replay_expect(tb, s.c, 1, 1);
	txnbuf_destroy(tb);
	free(body);
	samples_fini(&s);
}

/* ---- a transaction far larger than memory --------------------------------------------------- */

enum { EV_NCOLS = 13, EV_BODY = 11, BODY_LEN = 1024 };

static rel_column events_cols[EV_NCOLS] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "contact_id", .type_oid = 2950, .typmod = -1},
	{.name = "user_id", .type_oid = 2950, .typmod = -1},
	{.name = "kind", .type_oid = 25, .typmod = -1},
	{.name = "direction", .type_oid = 25, .typmod = -1},
	{.name = "status", .type_oid = 25, .typmod = -1},
	{.name = "started_at", .type_oid = 1184, .typmod = -1},
	{.name = "duration_s", .type_oid = 23, .typmod = -1},
	{.name = "from_number", .type_oid = 25, .typmod = -1},
	{.name = "to_number", .type_oid = 25, .typmod = -1},
	{.name = "body", .type_oid = 25, .typmod = -1},
	{.name = "created_at", .type_oid = 1184, .typmod = -1},
};

/* Row i of the big transaction, deterministic, into storage. */
typedef struct row {
	char text[EV_NCOLS][64];
	char body[BODY_LEN + 1];
	change_value v[EV_NCOLS];
} row;

static void row_make(row *r, size_t i)
{
	for (int k = 0; k < EV_NCOLS; k++) {
		if (k == EV_BODY) {
			for (int j = 0; j < BODY_LEN; j++)
				r->body[j] = (char)('!' + (i * 31 + (size_t)j) % 90);
			r->body[BODY_LEN] = 0;
			r->v[k] = (change_value){.kind = VALUE_TEXT, .len = BODY_LEN, .data = r->body};
		} else if (k == 8 && i % 5 == 0) {
			r->v[k] = (change_value){.kind = VALUE_NULL};
		} else {
			int n = snprintf(r->text[k], sizeof(r->text[k]), "%08zx-%04x-col%d", i, k * 7, k);
			r->v[k] = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)n, .data = r->text[k]};
		}
	}
}

typedef struct big_check {
	const relation *rel;
	size_t seen;
	row r;
} big_check;

static int big_cb(void *arg, const change *c)
{
	big_check *b = arg;
	row_make(&b->r, b->seen);
	if (c->action != CHANGE_INSERT || c->lsn != 0x1000000 + b->seen * 8 || c->rel != b->rel ||
	    c->new_tuple == NULL || c->old_tuple != NULL)
		return 1;
	for (int k = 0; k < EV_NCOLS; k++) {
		const change_value *g = &c->new_tuple[k], *w = &b->r.v[k];
		if (g->kind != w->kind || g->len != w->len ||
		    (w->kind == VALUE_TEXT && (memcmp(g->data, w->data, w->len) != 0 || g->data[g->len] != 0)))
			return 2;
	}
	b->seen++;
	return 0;
}

static void test_large_transaction_spills_bounded(void **state)
{
	(void)state;
	const size_t n = 200000, limit = 64 * 1024;
	relcache *rc = relcache_create();
	assert_non_null(rc);
	relation d = {.oid = 1, .schema = "public", .name = "events", .ncols = EV_NCOLS, .cols = events_cols,
	              .replident = 'f'};
	const relation *rel;
	assert_int_equal(relcache_put(rc, &d, &rel), 0);
	char *dir = mkdir_tmp();
	row *r = malloc(sizeof(*r));
	big_check *b = malloc(sizeof(*b));
	assert_non_null(r);
	assert_non_null(b);
	change_txn txn = {.xid = 77};

	size_t base = heap_in_use();
	txnbuf *tb = mk(limit, dir);
	size_t peak = 0;
	for (size_t i = 0; i < n; i++) {
		row_make(r, i);
		change c = {.action = CHANGE_INSERT, .lsn = 0x1000000 + i * 8, .txn = &txn, .rel = rel,
		            .new_tuple = r->v};
		assert_int_equal(txnbuf_append(tb, &c), 0);
		if (i % 1024 == 0) {
			size_t h = heap_in_use();
			peak = h > peak ? h : peak;
		}
	}
	txnbuf_stats st;
	txnbuf_get_stats(tb, &st);
	assert_int_equal(txnbuf_count(tb), n);
	assert_true(st.spill_bytes > (uint64_t)n * BODY_LEN);
	assert_true(st.mem_bytes <= limit);
	/* Bounded: 64 KB of records, a 64 KB read-back buffer, scratch; nowhere near 200 MB. */
	assert_true(peak - base < 4 * limit);
	for (int k = 0; k < 2; k++) {
		*b = (big_check){.rel = rel};
		assert_int_equal(txnbuf_replay(tb, &txn, big_cb, b), 0);
		assert_int_equal(b->seen, n);
		assert_true(heap_in_use() - base < 4 * limit);
	}
	assert_int_equal(dir_entries(dir), 0);
	txnbuf_destroy(tb);
	/* Everything returned (glibc's per-thread cache keeps a few freed small chunks counted). */
	assert_true(heap_in_use() <= base + 4096);
	free(b);
	free(r);
	rmdir_tmp(dir);
	relcache_destroy(rc);
}

/* ---- relations across ALTER TABLE --------------------------------------------------------------- */

typedef struct alter_check {
	const relation *r1, *r2;
	size_t per; /* changes per relation */
	size_t seen;
} alter_check;

static int alter_cb(void *arg, const change *c)
{
	alter_check *a = arg;
	const relation *want = a->seen < a->per ? a->r1 : a->r2;
	int ncols = a->seen < a->per ? 3 : 4;
	assert_ptr_equal(c->rel, want);
	/* Reading the relation (ASan: never freed memory) and every value it describes. */
	assert_int_equal(c->rel->ncols, ncols);
	assert_string_equal(c->rel->cols[ncols - 1].name, ncols == 3 ? "price" : "added");
	for (int i = 0; i < ncols; i++)
		assert_int_equal(c->new_tuple[i].kind, VALUE_TEXT);
	assert_string_equal(c->new_tuple[ncols - 1].data, ncols == 3 ? "p" : "new");
	a->seen++;
	return 0;
}

static void alter_during_transaction(size_t mem_limit, size_t per)
{
	rel_column cols4[4] = {cols5[0], cols5[1], cols5[2], {.name = "added", .type_oid = 25, .typmod = -1}};
	relcache *rc = relcache_create();
	assert_non_null(rc);
	relation d = {.oid = 10, .schema = "public", .name = "t", .ncols = 3, .cols = cols4, .replident = 'd'};
	const relation *r1, *r2, *r3;
	assert_int_equal(relcache_put(rc, &d, &r1), 0);
	txnbuf *tb = mk(mem_limit, NULL);
	change_txn txn = {.xid = 5};
	change_value v[4] = {text("1"), text("b"), text("p"), text("new")};
	for (size_t i = 0; i < per; i++) {
		change c = {.action = CHANGE_INSERT, .lsn = i, .txn = &txn, .rel = r1, .new_tuple = v};
		assert_int_equal(txnbuf_append(tb, &c), 0);
	}
	/* ALTER TABLE t ADD COLUMN added: the decoder replaces the relation mid-transaction. */
	d.ncols = 4;
	assert_int_equal(relcache_put(rc, &d, &r2), 0);
	assert_ptr_not_equal(r1, r2);
	assert_true(r1->detached);
	for (size_t i = 0; i < per; i++) {
		change c = {.action = CHANGE_INSERT, .lsn = per + i, .txn = &txn, .rel = r2, .new_tuple = v};
		assert_int_equal(txnbuf_append(tb, &c), 0);
	}
	/* Another ALTER with no change after it: r2 is detached too, still held. */
	d.name = "t_renamed";
	assert_int_equal(relcache_put(rc, &d, &r3), 0);
	assert_true(r2->detached);
	assert_int_equal(r2->refs, 1);
	alter_check a = {.r1 = r1, .r2 = r2, .per = per};
	assert_int_equal(txnbuf_replay(tb, &txn, alter_cb, &a), 0);
	assert_int_equal(a.seen, 2 * per);
	/* Reset drops the last references: both detached relations are freed (LSan: no leak). */
	size_t before = heap_in_use();
	txnbuf_reset(tb);
	assert_true(heap_in_use() < before);
	assert_int_equal(r3->refs, 0);
	txnbuf_destroy(tb);
	relcache_destroy(rc);
}

static void test_alter_table_during_transaction(void **state)
{
	(void)state;
	alter_during_transaction(1 << 20, 3);
	alter_during_transaction(4096, 2000); /* the first relation's changes partly spilled */
}

/* Destroying the buffer drops its references too, also when the cache went first. */
static void test_destroy_releases_relations(void **state)
{
	(void)state;
	samples s;
	samples_init(&s);
	txnbuf *tb = mk(4096, NULL);
	for (size_t i = 0; i < s.n; i++)
		assert_int_equal(txnbuf_append(tb, &s.c[i]), 0);
	relcache_destroy(s.rc); /* s.rel stays valid, detached, while the buffer holds it */
	assert_true(s.rel->detached);
	replay_expect(tb, s.c, s.n, s.n);
	txnbuf_destroy(tb); /* frees it (LSan) */
}

/* Many distinct relations, interleaved: each referenced once while held, released at reset. */
typedef struct many_check {
	const relation **rels;
	size_t nrels;
	size_t seen;
} many_check;

static int many_cb(void *arg, const change *c)
{
	many_check *m = arg;
	const relation *want = m->rels[(m->seen * 7) % m->nrels];
	assert_ptr_equal(c->rel, want);
	assert_int_equal(c->lsn, m->seen);
	assert_int_equal(c->new_tuple[0].kind, VALUE_TEXT);
	assert_string_equal(c->new_tuple[0].data, want->name);
	m->seen++;
	return 0;
}

static void test_many_relations(void **state)
{
	(void)state;
	enum { NRELS = 40, PER = 100 };
	relcache *rc = relcache_create();
	assert_non_null(rc);
	const relation *rels[NRELS];
	char names[NRELS][16];
	for (int i = 0; i < NRELS; i++) {
		snprintf(names[i], sizeof(names[i]), "t%d", i);
		relation d = {.oid = 1000 + (uint32_t)i, .schema = "public", .name = names[i], .ncols = 1 + i % 5,
		              .cols = cols5, .replident = 'd'};
		assert_int_equal(relcache_put(rc, &d, &rels[i]), 0);
	}
	txnbuf *tb = mk(4096, NULL);
	change_txn txn = {.xid = 3};
	for (size_t k = 0; k < NRELS * PER; k++) {
		const relation *r = rels[(k * 7) % NRELS];
		change_value v[5] = {text(r->name), text("a"), text("b"), text("c"), text("d")};
		change c = {.action = CHANGE_INSERT, .lsn = k, .txn = &txn, .rel = r, .new_tuple = v};
		assert_int_equal(txnbuf_append(tb, &c), 0);
	}
	for (int i = 0; i < NRELS; i++)
		assert_int_equal(rels[i]->refs, 1);
	many_check m = {.rels = rels, .nrels = NRELS};
	assert_int_equal(txnbuf_replay(tb, &txn, many_cb, &m), 0);
	assert_int_equal(m.seen, NRELS * PER);
	txnbuf_reset(tb);
	for (int i = 0; i < NRELS; i++)
		assert_int_equal(rels[i]->refs, 0);
	txnbuf_destroy(tb);
	relcache_destroy(rc);
}

/* ---- failures ------------------------------------------------------------------------------------ */

/* Appends samples until an append fails; returns the count held then, and that error. */
static size_t fill_until_error(txnbuf *tb, const samples *s, size_t max, int *err)
{
	*err = 0;
	for (size_t k = 0; k < max; k++) {
		int rc = txnbuf_append(tb, &s->c[k % s->n]);
		if (rc != 0) {
			*err = rc;
			return k;
		}
	}
	return max;
}

static void test_unwritable_spill_dir(void **state)
{
	(void)state;
	samples s;
	samples_init(&s);
	/* Runs as root in CI, where permissions do not stop a write: a missing directory does. */
	txnbuf *tb = mk(4096, "/nonexistent/walcast-spill");
	int err;
	size_t held = fill_until_error(tb, &s, 100000, &err);
	assert_int_equal(err, -EIO);
	assert_true(held > 0);
	/* Held as before the failing call, and again on a second try. */
	assert_int_equal(txnbuf_count(tb), held);
	assert_int_equal(txnbuf_append(tb, &s.c[held % s.n]), -EIO);
	assert_int_equal(txnbuf_count(tb), held);
	txnbuf_stats st;
	txnbuf_get_stats(tb, &st);
	assert_int_equal(st.spill_bytes, 0);
	assert_int_equal(st.spills, 0);
	replay_expect(tb, s.c, s.n, held);
	/* After a reset (the transaction abandoned) small transactions still work. */
	txnbuf_reset(tb);
	assert_int_equal(s.rel->refs, 0);
	assert_int_equal(txnbuf_append(tb, &s.c[1]), 0);
	replay_expect(tb, &s.c[1], 1, 1);
	txnbuf_destroy(tb);

	/* TMPDIR is the default directory. */
	char *old = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
	setenv("TMPDIR", "/nonexistent/walcast-tmpdir", 1);
	tb = mk(4096, NULL);
	held = fill_until_error(tb, &s, 100000, &err);
	assert_int_equal(err, -EIO);
	txnbuf_destroy(tb);
	if (old != NULL)
		setenv("TMPDIR", old, 1);
	else
		unsetenv("TMPDIR");
	free(old);
	samples_fini(&s);
}

/* A write that fails after the file grew (the file size limit, like a full disk): the append
 * fails with -EIO and everything held before, spilled part included, replays intact. In a
 * child: the limit is process-wide. */
static int child_write_fails(void)
{
	signal(SIGXFSZ, SIG_IGN);
	struct rlimit rl = {.rlim_cur = 200 * 1024, .rlim_max = RLIM_INFINITY};
	if (getrlimit(RLIMIT_FSIZE, &rl) == 0) {
		rl.rlim_cur = 200 * 1024;
		if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
			return 10;
	}
	samples s;
	samples_init(&s);
	char *dir = mkdir_tmp();
	txnbuf *tb = mk(8192, dir);
	int err;
	size_t held = fill_until_error(tb, &s, 1000000, &err);
	if (err != -EIO || held == 0)
		return 11;
	txnbuf_stats st;
	txnbuf_get_stats(tb, &st);
	if (st.spill_bytes == 0 || st.spill_bytes > 200 * 1024 || txnbuf_count(tb) != held)
		return 12;
	for (int k = 0; k < 3; k++)
		if (txnbuf_append(tb, &s.c[held % s.n]) != -EIO || txnbuf_count(tb) != held)
			return 13;
	replay_expect(tb, s.c, s.n, held);
	/* Reset truncates the file: the next transaction has room again. */
	txnbuf_reset(tb);
	size_t again = fill_until_error(tb, &s, held, &err);
	if (err != 0 || again != held)
		return 14;
	replay_expect(tb, s.c, s.n, held);
	txnbuf_destroy(tb);
	rmdir_tmp(dir);
	samples_fini(&s);
	return 0;
}

static void test_spill_write_failure(void **state)
{
	(void)state;
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_write_fails());
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- reuse ------------------------------------------------------------------------------------------ */

static void test_reset_after_spill_reuses_memory(void **state)
{
	(void)state;
	samples s;
	samples_init(&s);
	char *dir = mkdir_tmp();
	txnbuf *tb = mk(16384, dir);
	size_t per = 20000, after_first = 0;
	for (int t = 0; t < 4; t++) {
		for (size_t k = 0; k < per; k++)
			assert_int_equal(txnbuf_append(tb, &s.c[k % s.n]), 0);
		replay_expect(tb, s.c, s.n, per);
		txnbuf_reset(tb);
		txnbuf_stats st;
		txnbuf_get_stats(tb, &st);
		assert_int_equal(st.spill_bytes, 0);
		assert_int_equal(st.mem_bytes, 0);
		assert_int_equal(st.spills, (uint64_t)t + 1);
		assert_int_equal(st.max_changes, per);
		assert_int_equal(txnbuf_count(tb), 0);
		if (t == 0)
			after_first = heap_in_use();
		else
			assert_true(heap_in_use() <= after_first); /* nothing allocated anew */
	}
	assert_int_equal(dir_entries(dir), 0);
	txnbuf_destroy(tb);
	rmdir_tmp(dir);
	samples_fini(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_invalid),
		cmocka_unit_test(test_round_trip_in_memory),
		cmocka_unit_test(test_round_trip_spilled),
		cmocka_unit_test(test_rejects_malformed_change),
		cmocka_unit_test(test_replay_stops_and_repeats),
		cmocka_unit_test(test_change_larger_than_memory),
		cmocka_unit_test(test_large_transaction_spills_bounded),
		cmocka_unit_test(test_alter_table_during_transaction),
		cmocka_unit_test(test_destroy_releases_relations),
		cmocka_unit_test(test_many_relations),
		cmocka_unit_test(test_unwritable_spill_dir),
		cmocka_unit_test(test_spill_write_failure),
		cmocka_unit_test(test_reset_after_spill_reuses_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
