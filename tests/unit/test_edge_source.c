/*
 * test_edge_source — the edge's source (plugins/sources/edge_source.c) against a real
 * redis-server: entries written as the redis_stream sink writes them (its own line writers, ids
 * <commit_lsn>-<index>, fields lsn and data) come out as the same transactions, in order — begin,
 * changes, commit with their LSNs — read in pages smaller than the stream; the rest of a
 * transaction whose beginning was trimmed is skipped; a transaction whose "C" is not in the
 * stream yet is delivered as far as it is and committed when the "C" arrives; a resume at P
 * starts at id P-0 inclusive; pause holds the reading (after the page in hand) until resume;
 * entries missing inside a transaction stop the source; so do whole transactions trimmed before
 * the edge read them (at its start, and after it had read to the end), while a trim of what it
 * has read does not; and a pipeline built on it offers its
 * sinks the stream's transactions and confirms to it what they took.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "buf.h"
#include "config.h"
#include "edge_source.h"
#include "loop.h"
#include "lsn.h"
#include "pipeline.h"
#include "redis_stream.h"
#include "redis_test_server.h"
#include "relcache.h"

#define KEY "t:changes"

/* ---- the consumer: a transcript of what the source delivered ------------------------------ */

typedef struct consumer {
	loop *l;
	void **src;          /* the source, for pause_at_commit */
	bool pause_at_commit; /* pause the source from inside its first commit callback */
	buf text;
	int commits, changes, failed;
	int want_commits, want_changes; /* the loop stops once both are reached */
} consumer;

/* What the source delivered so far. */
static const char *text(const consumer *c)
{
	return c->text.data != NULL ? c->text.data : "";
}

static void check_done(consumer *c)
{
	if (c->failed || (c->commits >= c->want_commits && c->changes >= c->want_changes))
		loop_stop(c->l);
}

static int c_begin(void *arg, const change_txn *txn)
{
	consumer *c = arg;
	return buf_printf(&c->text, "B%llu ", (unsigned long long)txn->commit_lsn);
}

static int c_change(void *arg, change *ch)
{
	consumer *c = arg;
	c->changes++;
	int rc = buf_printf(&c->text, "I%llu:%.*s ", (unsigned long long)ch->lsn, (int)ch->new_tuple[1].len,
	                    ch->new_tuple[1].data);
	check_done(c);
	return rc;
}

static int c_commit(void *arg, const change_txn *txn)
{
	consumer *c = arg;
	c->commits++;
	if (c->pause_at_commit && c->commits == 1)
		edge_source_ops.pause(*c->src);
	int rc = buf_printf(&c->text, "C%llu ", (unsigned long long)txn->end_lsn);
	check_done(c);
	return rc;
}

static void c_failed(void *arg, const char *why)
{
	consumer *c = arg;
	(void)why;
	c->failed++;
	check_done(c);
}

static void timeout_cb(loop *l, int id, void *arg)
{
	(void)id;
	*(bool *)arg = true;
	loop_stop(l);
}

/* Runs the loop until the consumer has commits commits and changes changes (or failed); false
 * after ms. */
static bool run_for(consumer *c, int commits, int changes, int ms)
{
	c->want_commits = commits;
	c->want_changes = changes;
	if (c->commits >= commits && c->changes >= changes)
		return true;
	bool timed_out = false;
	int id = loop_timer_add(c->l, ms, timeout_cb, &timed_out);
	assert_true(id > 0);
	assert_int_equal(loop_run(c->l), 0);
	if (!timed_out)
		loop_timer_cancel(c->l, id);
	return !timed_out;
}

static bool run_until(consumer *c, int commits, int changes)
{
	return run_for(c, commits, changes, 10000);
}

/* ---- the writer: entries as the redis_stream sink writes them ----------------------------- */

static rel_column cols[] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "name", .type_oid = 25, .typmod = -1},
};
static relation orgs = {.oid = 16400, .schema = "public", .name = "orgs", .ncols = 2, .cols = cols,
                        .replident = 'd', .version = 1};

static void xadd(redisContext *rc, const char *key, uint64_t ms, uint64_t seq, uint64_t lsn, const buf *line)
{
	char id[48], l[LSN_TEXT_MAX];
	snprintf(id, sizeof(id), "%llu-%llu", (unsigned long long)ms, (unsigned long long)seq);
	redisReply *r = redisCommand(rc, "XADD %s %s lsn %s data %b", key, id, lsn_format(lsn, l), line->data, line->len);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("XADD %s: %s", id, r->str);
	freeReplyObject(r);
}

/* Writes entries from..to-1 of the transaction committed at commit_lsn with n one-row inserts
 * named "<tag><i>": index 0 the "B", 1..n the changes (lsn commit_lsn - 16 * (n - i + 1)), n + 1
 * the "C" (end LSN commit_lsn + 8). */
static void txn_write(redisContext *rc, const char *key, uint64_t commit_lsn, int n, const char *tag, int from,
                      int to)
{
	change_txn txn = {.xid = (uint32_t)commit_lsn, .commit_lsn = commit_lsn, .end_lsn = commit_lsn + 8,
	                  .commit_time = INT64_C(1796205600000000)};
	buf line;
	buf_init(&line);
	for (int i = from; i < to; i++) {
		buf_clear(&line);
		uint64_t lsn = i == 0 ? commit_lsn : i == n + 1 ? txn.end_lsn : commit_lsn - 16 * (uint64_t)(n - i + 1);
		if (i == 0) {
			assert_int_equal(redis_stream_begin_write(&line, &txn), 0);
		} else if (i == n + 1) {
			assert_int_equal(redis_stream_commit_write(&line, &txn), 0);
		} else {
			char name[32];
			snprintf(name, sizeof(name), "%s%d", tag, i);
			change_value v[2] = {{VALUE_TEXT, 36, "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
			                     {VALUE_TEXT, (uint32_t)strlen(name), name}};
			change c = {.action = CHANGE_INSERT, .lsn = lsn, .txn = &txn, .rel = &orgs, .new_tuple = v};
			assert_int_equal(redis_stream_change_write(&line, &c), 0);
		}
		xadd(rc, key, commit_lsn, (uint64_t)i, lsn, &line);
	}
	buf_fini(&line);
}

/* ---- the fixture -------------------------------------------------------------------------- */

typedef struct fx {
	pid_t pid;
	redisContext *rc;
	config cfg;
	relcache *rels;
	consumer c;
	void *src;
} fx;

static int setup(void **state)
{
	if (!redis_test_have_server())
		skip();
	fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	int port = redis_test_free_port();
	f->pid = redis_test_server_start(port);
	assert_true(f->pid > 0);
	for (int i = 0; i < 200; i++) {
		f->rc = redisConnect("127.0.0.1", port);
		if (f->rc != NULL && !f->rc->err)
			break;
		redisFree(f->rc);
		f->rc = NULL;
		usleep(20000);
	}
	assert_non_null(f->rc);
	char url[64], cerr[CONFIG_ERROR_MAX];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	assert_int_equal(config_init(&f->cfg), 0);
	assert_int_equal(config_set(&f->cfg, "edge", "stream_url", url, cerr), 0);
	assert_int_equal(config_set(&f->cfg, "edge", "stream_key", KEY, cerr), 0);
	assert_int_equal(config_set(&f->cfg, "edge", "read_count", "2", cerr), 0); /* pages of 2 */
	assert_non_null(f->rels = relcache_create());
	assert_non_null(f->c.l = loop_create());
	f->c.src = &f->src;
	buf_init(&f->c.text);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	edge_source_ops.destroy(f->src);
	buf_fini(&f->c.text);
	loop_destroy(f->c.l);
	relcache_destroy(f->rels);
	config_fini(&f->cfg);
	redisFree(f->rc);
	kill(f->pid, SIGTERM);
	waitpid(f->pid, NULL, 0);
	free(f);
	return 0;
}

/* A new source, started at resume_lsn, with a fresh transcript. */
static void source_start(fx *f, uint64_t resume_lsn)
{
	edge_source_ops.destroy(f->src);
	f->src = NULL;
	buf_clear(&f->c.text);
	f->c.commits = f->c.changes = f->c.failed = 0;
	txn_source_events ev = {.sink = {c_begin, c_change, c_commit, &f->c}, .failed_cb = c_failed, .arg = &f->c};
	char err[TXN_SOURCE_ERROR_MAX] = "";
	if (edge_source_ops.create(f->c.l, &f->cfg, f->rels, &ev, &f->src, err) < 0)
		fail_msg("create: %s", err);
	assert_int_equal(edge_source_ops.start(f->src, resume_lsn), 0);
}

/* ---- the tests ---------------------------------------------------------------------------- */

/* The stream starts inside a transaction (its "B" trimmed), holds a whole one, and ends inside a
 * third whose "C" the writer has not written yet. */
static void test_in_order(void **state)
{
	fx *f = *state;
	txn_write(f->rc, KEY, 0x100, 2, "a", 2, 4); /* a's last change and "C": its beginning trimmed */
	txn_write(f->rc, KEY, 0x200, 3, "b", 0, 5);
	txn_write(f->rc, KEY, 0x300, 2, "c", 0, 2); /* "B" and the first change; cut between rounds */
	source_start(f, 0);
	assert_true(run_until(&f->c, 1, 4));
	assert_string_equal(text(&f->c), "B512 I464:b1 I480:b2 I496:b3 C520 B768 I736:c1 ");
	assert_int_equal(f->c.commits, 1);
	assert_true(edge_source_ops.streaming(f->src));

	/* the rest of c arrives (the writer's next round): the source was waiting for it */
	txn_write(f->rc, KEY, 0x300, 2, "c", 2, 4);
	txn_write(f->rc, KEY, 0x400, 1, "d", 0, 3);
	assert_true(run_until(&f->c, 3, 6));
	assert_string_equal(text(&f->c), "B512 I464:b1 I480:b2 I496:b3 C520 B768 I736:c1 I752:c2 C776 "
	                                    "B1024 I1008:d1 C1032 ");
	assert_int_equal(edge_source_ops.received_lsn(f->src), 1032);
	assert_int_equal(f->c.failed, 0);
	edge_source_ops.confirm(f->src, 1032);
	assert_int_equal(edge_source_ops.confirmed_lsn(f->src), 1032);
}

/* A resume at P reads from id P-0 inclusive: the transaction committed at P and after. */
static void test_resume_inclusive(void **state)
{
	fx *f = *state;
	txn_write(f->rc, KEY, 0x100, 1, "a", 0, 3);
	txn_write(f->rc, KEY, 0x200, 1, "b", 0, 3);
	txn_write(f->rc, KEY, 0x300, 1, "c", 0, 3);
	source_start(f, 0x200);
	assert_true(run_until(&f->c, 2, 2));
	assert_string_equal(text(&f->c), "B512 I496:b1 C520 B768 I752:c1 C776 ");
	source_start(f, 0x201);
	assert_true(run_until(&f->c, 1, 1));
	assert_string_equal(text(&f->c), "B768 I752:c1 C776 ");
}

/* Paused from inside a callback, the source delivers nothing more — not even the rest of the page
 * in hand, which it reads again — until resumed. */
static void test_pause(void **state)
{
	fx *f = *state;
	txn_write(f->rc, KEY, 0x200, 3, "b", 0, 5); /* pages of 2: the "C" comes with c's "B" */
	txn_write(f->rc, KEY, 0x300, 1, "c", 0, 3);
	f->c.pause_at_commit = true;
	source_start(f, 0);
	assert_false(run_for(&f->c, 2, 4, 300)); /* c is not committed while paused */
	assert_string_equal(text(&f->c), "B512 I464:b1 I480:b2 I496:b3 C520 ");
	assert_int_equal(edge_source_ops.received_lsn(f->src), 520); /* c's "B", in the same page, not taken */
	edge_source_ops.resume(f->src);
	assert_true(run_until(&f->c, 2, 4));
	assert_string_equal(text(&f->c), "B512 I464:b1 I480:b2 I496:b3 C520 B768 I752:c1 C776 ");
}

/* Entries missing inside a transaction (trimmed while the edge was behind): the source fails
 * rather than deliver the transaction without them. */
static void test_gap_fails(void **state)
{
	fx *f = *state;
	txn_write(f->rc, KEY, 0x200, 3, "b", 0, 1);
	txn_write(f->rc, KEY, 0x200, 3, "b", 2, 5); /* b1 is not in the stream */
	source_start(f, 0);
	assert_true(run_until(&f->c, 1, 3)); /* stops at the failure */
	assert_int_equal(f->c.failed, 1);
	assert_string_equal(text(&f->c), ""); /* not even b's begin */
	assert_false(edge_source_ops.streaming(f->src));
}

/* Whole transactions trimmed after the position the edge reads from (it fell behind the
 * window): XINFO STREAM's max-deleted-entry-id, read with the page, says so and the source fails
 * instead of delivering the stream without them. Trimmed before the position: nothing lost. */
static void test_trim_fails(void **state)
{
	fx *f = *state;
	txn_write(f->rc, KEY, 0x100, 1, "a", 0, 3);
	txn_write(f->rc, KEY, 0x200, 1, "b", 0, 3);
	txn_write(f->rc, KEY, 0x300, 1, "c", 0, 3);
	redisReply *r = redisCommand(f->rc, "XTRIM %s MAXLEN = 3", KEY); /* a and b gone */
	assert_non_null(r);
	assert_int_equal(r->integer, 6);
	freeReplyObject(r);
	source_start(f, 0x200); /* b was to be read first */
	assert_true(run_until(&f->c, 1, 1)); /* stops at the failure */
	assert_int_equal(f->c.failed, 1);
	assert_string_equal(text(&f->c), "");
	source_start(f, 0x300); /* what was trimmed lies before: c */
	assert_true(run_until(&f->c, 1, 1));
	assert_int_equal(f->c.failed, 0);
	assert_string_equal(text(&f->c), "B768 I752:c1 C776 ");
	edge_source_stats st;
	edge_source_stats_get(f->src, &st);
	assert_int_equal(st.stream_last_lsn, 0x300);
	assert_int_equal(st.read_lsn, 0x300);
}

/* XTRIM KEY MAXLEN = n (exact); returns how many entries went. */
static long long xtrim(redisContext *rc, int n)
{
	redisReply *r = redisCommand(rc, "XTRIM %s MAXLEN = %d", KEY, n);
	assert_non_null(r);
	long long k = r->integer;
	freeReplyObject(r);
	return k;
}

/* While the edge is paused after reading a (the stream's end then: it knows how many entries it
 * has read), b and c are written. Trimming only what it read (a) loses nothing; trimming b too
 * (never read) makes the source fail at its next read. */
static void test_trim_behind(void **state)
{
	fx *f = *state;
	for (int lose = 0; lose < 2; lose++) {
		redisReply *r = redisCommand(f->rc, "DEL %s", KEY);
		freeReplyObject(r);
		txn_write(f->rc, KEY, 0x100, 1, "a", 0, 3);
		f->c.pause_at_commit = true;
		source_start(f, 0);
		assert_false(run_for(&f->c, 2, 2, 300)); /* paused at a's commit */
		assert_string_equal(text(&f->c), "B256 I240:a1 C264 ");
		txn_write(f->rc, KEY, 0x200, 1, "b", 0, 3);
		txn_write(f->rc, KEY, 0x300, 1, "c", 0, 3);
		assert_int_equal(xtrim(f->rc, lose ? 3 : 6), lose ? 6 : 3);
		edge_source_ops.resume(f->src);
		assert_true(run_until(&f->c, 3, 3)); /* or the failure */
		assert_int_equal(f->c.failed, lose);
		assert_string_equal(text(&f->c), lose ? "B256 I240:a1 C264 " : "B256 I240:a1 C264 B512 I496:b1 C520 B768 I752:c1 C776 ");
	}
}

/* ---- the pipeline on an edge ------------------------------------------------------------- */

/* A live sink with one bypass subscriber that logs what it is offered and stops the loop at
 * its want-th commit. */
typedef struct feed {
	const sink_env *env;
	audience_sub *sub;
	buf log;
	int commits, want;
} feed;

static feed *feed_last;

static int feed_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	(void)conf, (void)err;
	feed *fd = calloc(1, sizeof(*fd));
	if (fd == NULL)
		return -ENOMEM;
	fd->env = env;
	buf_init(&fd->log);
	int rc = env->subscribe(env->env_arg, fd, NULL, true, false, &fd->sub);
	if (rc < 0) {
		free(fd);
		return rc;
	}
	*out = feed_last = fd;
	return 0;
}

static void feed_destroy(void *impl)
{
	feed *fd = impl;
	buf_fini(&fd->log);
	free(fd);
}

static int feed_begin(void *impl, const change_txn *txn)
{
	return buf_printf(&((feed *)impl)->log, "B%llu ", (unsigned long long)txn->commit_lsn);
}

static int feed_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	(void)sub_arg;
	const change *ch = d->view;
	return buf_printf(&((feed *)impl)->log, "I%llu:%.*s ", (unsigned long long)ch->lsn, (int)ch->new_tuple[1].len,
	                  ch->new_tuple[1].data);
}

static int feed_commit(void *impl, const change_txn *txn)
{
	feed *fd = impl;
	if (++fd->commits == fd->want)
		loop_stop(fd->env->loop);
	return buf_printf(&fd->log, "C%llu ", (unsigned long long)txn->end_lsn);
}

static const sink_ops feed_ops = {
	.name = "feed", .kind = SINK_LIVE, .create = feed_create, .destroy = feed_destroy,
	.begin = feed_begin, .deliver = feed_deliver, .commit = feed_commit,
};

static void pl_stopped_cb(void *arg, int code)
{
	(void)arg, (void)code;
}

/* The pipeline (without a policy: bypass only) drives the edge's source as it drives the
 * replication client: its sinks get the stream's transactions, and it confirms to the source
 * what they took. */
static void test_pipeline_on_edge(void **state)
{
	fx *f = *state;
	txn_write(f->rc, KEY, 0x200, 2, "b", 0, 4);
	txn_write(f->rc, KEY, 0x300, 1, "c", 0, 3);
	pipeline_params p = {.loop = f->c.l, .cfg = &f->cfg, .source = &edge_source_ops, .stopped_cb = pl_stopped_cb};
	pipeline *pl = NULL;
	char err[PIPELINE_ERROR_MAX];
	if (pipeline_create(&p, &pl, err) < 0 || pipeline_add_sink(pl, &feed_ops, "feed", NULL, err) < 0 ||
	    pipeline_start(pl, err) < 0)
		fail_msg("%s", err);
	feed_last->want = 2;
	bool timed_out = false;
	int id = loop_timer_add(f->c.l, 10000, timeout_cb, &timed_out);
	assert_int_equal(loop_run(f->c.l), 0);
	assert_false(timed_out);
	loop_timer_cancel(f->c.l, id);
	assert_string_equal(feed_last->log.data, "B512 I480:b1 I496:b2 C520 B768 I752:c1 C776 ");
	pipeline_status st;
	pipeline_get_status(pl, &st);
	assert_true(st.streaming);
	assert_int_equal(st.confirmed_lsn, 776); /* live sinks only: what was offered */
	assert_int_equal(st.transactions, 2);
	pipeline_destroy(pl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resume_inclusive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gap_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trim_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trim_behind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_on_edge, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
