/*
 * test_redis_sink — the redis sink driven directly (begin / deliver / commit, as the pipeline
 * does) against a redis-server started here, for the exactly-once cases a random kill only
 * hits by chance: a crash after org A's script of a round landed and before org B's. The
 * restarted sink replays both orgs' transactions in a round batched differently, and must skip
 * A's, apply B's and count everything once. Also: a start while Redis is down holds the rows and
 * applies them once Redis is there. Skipped (77-style skip) without redis-server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "loop.h"
#include "redis.h"
#include "redis_agg.h"
#include "redis_test_server.h"

#define ORG_A "11111111-1111-1111-1111-111111111111"
#define ORG_B "22222222-2222-2222-2222-222222222222"
#define CT "aaaaaaaa-0000-0000-0000-000000000001"

typedef struct harness {
	int port;
	pid_t pid;
	char url[64];
	loop *l;
	uint64_t want;   /* stop the loop once the sink's position reaches this */
	void *impl;
	int progress;
	int64_t wait_replicas, wait_timeout_ms; /* the sink's keys (0: no WAIT) */
} harness;

static int sub_stub(void *env_arg, void *sub_arg, const char *uid, bool bypass, bool wildcard, audience_sub **out)
{
	assert_true(bypass);
	*out = (audience_sub *)env_arg; /* any non-NULL handle */
	return 0;
}

static void unsub_stub(void *env_arg, audience_sub *s) {}

static void progress_cb(void *env_arg)
{
	harness *h = env_arg;
	h->progress++;
	if (h->impl != NULL && redis_sink_ops.position(h->impl) >= h->want)
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
	if (redis_sink_ops.position(h->impl) >= want)
		return true;
	bool timed_out = false;
	int id = loop_timer_add(h->l, ms, timeout_cb, &timed_out);
	assert_true(id > 0);
	assert_int_equal(loop_run(h->l), 0);
	loop_timer_cancel(h->l, id);
	return !timed_out && redis_sink_ops.position(h->impl) >= want;
}

static bool run_until(harness *h, uint64_t want)
{
	return run_until_ms(h, want, 10000);
}

static void *sink_create(harness *h)
{
	redis_sink_conf conf = {.url = h->url, .prefix = "wc", .table = "public.events", .missed_statuses = "missed",
	                        .hour_window = 48, .flush_interval_ms = 1, .connect_timeout_ms = 500,
	                        .command_timeout_ms = 2000, .reconnect_max_ms = 50, .wait_replicas = h->wait_replicas,
	                        .wait_timeout_ms = h->wait_timeout_ms > 0 ? h->wait_timeout_ms : 1000};
	sink_env env = {.name = "t", .loop = h->l, .subscribe = sub_stub, .unsubscribe = unsub_stub,
	                .progress = progress_cb, .env_arg = h};
	char err[SINK_ERROR_MAX] = "";
	void *impl = NULL;
	int rc = redis_sink_ops.create(&env, &conf, &impl, err);
	if (rc < 0)
		fail_msg("create: %s", err);
	h->impl = impl;
	return impl;
}

static void sink_destroy(harness *h)
{
	redis_sink_ops.destroy(h->impl);
	h->impl = NULL;
}

static rel_column cols[] = {{.name = "id"},        {.name = "org_id"},      {.name = "contact_id"},
                            {.name = "kind"},      {.name = "direction"},   {.name = "status"},
                            {.name = "started_at"}, {.name = "duration_s"}};
static relation rel = {.schema = "public", .name = "events", .ncols = 8, .cols = cols, .id = 7, .version = 1};

#define TXT(s) {VALUE_TEXT, sizeof(s) - 1, s}

/* One transaction inserting one call per org in orgs (NULL-terminated). */
static void txn_insert(harness *h, uint64_t commit_lsn, const char *const *orgs)
{
	change_txn txn = {.xid = (uint32_t)commit_lsn, .commit_lsn = commit_lsn, .end_lsn = commit_lsn + 8,
	                  .commit_time = 1796190748000000};
	assert_int_equal(redis_sink_ops.begin(h->impl, &txn), 0);
	for (const char *const *o = orgs; *o != NULL; o++) {
		change_value v[8] = {TXT("x"), {VALUE_TEXT, 36, *o}, TXT(CT), TXT("call"), TXT("inbound"), TXT("completed"),
		                     TXT("2026-12-02 05:52:28+00"), TXT("60")};
		change c = {.action = CHANGE_INSERT, .lsn = commit_lsn - 4, .txn = &txn, .rel = &rel, .new_tuple = v};
		audience_delivery d = {.view = &c, .bypass = true};
		assert_int_equal(redis_sink_ops.deliver(h->impl, NULL, &d), 0);
	}
	assert_int_equal(redis_sink_ops.commit(h->impl, &txn), 0);
}

static long long calls(redisContext *c, const char *org)
{
	redisReply *r = redisCommand(c, "HGET wc:{%s}:day:20261202 calls", org);
	long long v = r != NULL && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
	freeReplyObject(r);
	return v;
}

static redisContext *connect_retry(int port)
{
	for (int i = 0; i < 400; i++) {
		redisContext *c = redisConnect("127.0.0.1", port);
		if (c != NULL && !c->err)
			return c;
		redisFree(c);
		usleep(25000);
	}
	return NULL;
}

/* The server's pid lives in the test's state, so that the teardown kills it even when an
 * assertion failed half-way. */
static int server_slot(void **state)
{
	*state = calloc(1, sizeof(pid_t));
	return *state != NULL ? 0 : -1;
}

static int kill_server(void **state)
{
	pid_t *pid = *state;
	if (pid != NULL && *pid > 0) {
		kill(*pid, SIGKILL);
		waitpid(*pid, NULL, 0);
		*pid = 0;
	}
	return 0;
}

static int server_slot_free(void **state)
{
	kill_server(state);
	free(*state);
	return 0;
}

static void test_crash_between_orgs(void **state)
{
	pid_t *server_pid = *state;
	if (!redis_test_have_server())
		skip();
	harness h = {.port = redis_test_free_port()};
	snprintf(h.url, sizeof(h.url), "redis://127.0.0.1:%d/0", h.port);
	/* a server that can be shut down and started again with its data (an RDB file in TMPDIR) */
	const char *dir = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
	char port[16], dbfile[64];
	snprintf(port, sizeof(port), "%d", h.port);
	snprintf(dbfile, sizeof(dbfile), "walcast-test-%d.rdb", h.port);
	char *av[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", (char *)dir, "--dbfilename",
	              dbfile, "--save", "", "--appendonly", "no", "--logfile", "/dev/null", NULL};
	assert_int_equal(posix_spawnp(&h.pid, "redis-server", NULL, NULL, av, environ), 0);
	*server_pid = h.pid;
	redisContext *rc = connect_retry(h.port);
	assert_non_null(rc);
	h.l = loop_create();

	/* round 1: transaction 0x100 (A and B), accepted everywhere */
	const char *both[] = {ORG_A, ORG_B, NULL};
	sink_create(&h);
	txn_insert(&h, 0x100, both);
	assert_true(run_until(&h, 0x108));
	sink_destroy(&h);
	assert_int_equal(calls(rc, ORG_A), 1);
	assert_int_equal(calls(rc, ORG_B), 1);
	/* the global watermark, queued when the round was accepted, is written out at destroy */
	bool set = false;
	for (int i = 0; i < 200 && !set; i++) {
		redisReply *g = redisCommand(rc, "GET wc:wm");
		set = g != NULL && g->type == REDIS_REPLY_STRING && strcmp(g->str, "0000000000000108") == 0;
		freeReplyObject(g);
		if (!set)
			usleep(10000);
	}
	assert_true(set);

	/* round 2 (transaction 0x200) reached Redis for A only, then walcast died: A's script ran
	 * (done here by hand with the sink's own script), B's did not, the global watermark stayed */
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	redis_agg_event e = {.kind = "call", .direction = "inbound", .status = "completed",
	                     .started_us = INT64_C(1796190748000000), .has_duration = true, .duration_s = 60};
	strcpy(e.org, ORG_A);
	strcpy(e.contact, CT);
	redis_agg_conf ac = {.prefix = "wc", .missed_statuses = "missed", .hour_window_h = 48};
	assert_int_equal(redis_agg_add(&b, &ac, &e, +1, 0x200, 1796190748), 0);
	buf out;
	buf_init(&out);
	int argc;
	const char **argv;
	size_t *argvlen;
	redisReply *r = redisCommand(rc, "SCRIPT LOAD %s", REDIS_AGG_SCRIPT);
	char sha[41];
	snprintf(sha, sizeof(sha), "%s", r->str);
	freeReplyObject(r);
	assert_int_equal(redis_agg_org_command(&b, 0, &ac, sha, &out, &argc, &argv, &argvlen), 0);
	r = redisCommandArgv(rc, argc, argv, argvlen);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	free(argv);
	free(argvlen);
	buf_fini(&out);
	redis_agg_batch_fini(&b);
	assert_int_equal(calls(rc, ORG_A), 2);
	assert_int_equal(calls(rc, ORG_B), 1);

	/* restart: the stream resumes after 0x108 and offers 0x200 again, then 0x300, merged into
	 * one round: A must take 0x300 only, B both */
	sink_create(&h);
	assert_int_equal(redis_sink_ops.position(h.impl), 0x108);
	txn_insert(&h, 0x200, both);
	txn_insert(&h, 0x300, both);
	assert_true(run_until(&h, 0x308));
	assert_true(redis_sink_ops.healthy(h.impl));
	sink_destroy(&h);
	assert_int_equal(calls(rc, ORG_A), 3);
	assert_int_equal(calls(rc, ORG_B), 3);
	set = false;
	for (int i = 0; i < 200 && !set; i++) {
		redisReply *g = redisCommand(rc, "GET wc:wm");
		set = g != NULL && g->type == REDIS_REPLY_STRING && strcmp(g->str, "0000000000000308") == 0;
		freeReplyObject(g);
		if (!set)
			usleep(10000);
	}
	assert_true(set);

	/* a start while Redis is down: the sink starts, holds what it is offered, confirms
	 * nothing, and applies it once Redis is back (with its data: SHUTDOWN SAVE, then start) */
	freeReplyObject(redisCommand(rc, "SHUTDOWN SAVE"));
	redisFree(rc);
	waitpid(h.pid, NULL, 0);
	*server_pid = 0;
	sink_create(&h);
	assert_int_equal(redis_sink_ops.position(h.impl), 0);
	assert_false(redis_sink_ops.healthy(h.impl));
	txn_insert(&h, 0x300, both); /* offered again: every org holds it */
	txn_insert(&h, 0x400, both);
	assert_true(redis_sink_ops.pending_bytes(h.impl) > 0);
	assert_int_equal(posix_spawnp(&h.pid, "redis-server", NULL, NULL, av, environ), 0);
	*server_pid = h.pid;
	assert_true(run_until(&h, 0x408));
	sink_destroy(&h);
	rc = connect_retry(h.port);
	assert_non_null(rc);
	assert_int_equal(calls(rc, ORG_A), 4);
	assert_int_equal(calls(rc, ORG_B), 4);

	redisFree(rc);
	loop_destroy(h.l);
	kill_server(state);
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, dbfile);
	unlink(path);
}

/* wait_replicas = 1, against a primary and its replica started here: a round is confirmed once
 * the replica has it; with the replica stopped (SIGSTOP) the round lands on the primary but the
 * position does not move; the replica back, it does. A wait_timeout as long as command_timeout
 * is refused. */
static void test_wait_replicas(void **state)
{
	pid_t *pids = *state;
	if (!redis_test_have_server())
		skip();
	char dir[] = "/tmp/walcast-wait-XXXXXX";
	assert_non_null(mkdtemp(dir));
	harness h = {.port = redis_test_free_port(), .wait_replicas = 1, .wait_timeout_ms = 200};
	int rport = redis_test_free_port();
	while (rport == h.port)
		rport = redis_test_free_port();
	snprintf(h.url, sizeof(h.url), "redis://127.0.0.1:%d/0", h.port);
	char replicaof[32];
	snprintf(replicaof, sizeof(replicaof), "127.0.0.1 %d", h.port);
	pids[0] = h.pid = redis_test_server_spawn(h.port, dir, NULL);
	pids[1] = redis_test_server_spawn(rport, dir, replicaof);
	assert_true(pids[0] > 0 && pids[1] > 0);
	redisContext *rc = connect_retry(h.port);
	assert_non_null(rc);
	assert_true(redis_test_replica_online(h.port));
	h.l = loop_create();
	const char *one[] = {ORG_A, NULL};

	sink_create(&h);
	txn_insert(&h, 0x100, one);
	assert_true(run_until(&h, 0x108));
	/* the replica stopped: the round is on the primary, the position stays */
	kill(pids[1], SIGSTOP);
	txn_insert(&h, 0x200, one);
	assert_false(run_until_ms(&h, 0x208, 1500));
	assert_int_equal(redis_sink_ops.position(h.impl), 0x108);
	assert_int_equal(calls(rc, ORG_A), 2);
	/* the replica back: confirmed, counted once */
	kill(pids[1], SIGCONT);
	assert_true(run_until(&h, 0x208));
	assert_int_equal(calls(rc, ORG_A), 2);
	sink_destroy(&h);

	/* a WAIT as long as the reply timeout would be taken for a dead server: refused */
	redis_sink_conf conf = {.url = h.url, .prefix = "wc", .table = "public.events", .missed_statuses = "missed",
	                        .hour_window = 48, .flush_interval_ms = 1, .connect_timeout_ms = 500,
	                        .command_timeout_ms = 2000, .reconnect_max_ms = 50, .wait_replicas = 1,
	                        .wait_timeout_ms = 2000};
	sink_env env = {.name = "t", .loop = h.l, .subscribe = sub_stub, .unsubscribe = unsub_stub,
	                .progress = progress_cb, .env_arg = &h};
	char err[SINK_ERROR_MAX] = "";
	void *impl = NULL;
	assert_int_equal(redis_sink_ops.create(&env, &conf, &impl, err), -EINVAL);
	assert_non_null(strstr(err, "wait_timeout"));

	redisFree(rc);
	loop_destroy(h.l);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* Runs the sink's script on c for one call of org in a batch of the transaction at lsn, as a
 * round does; its integer reply (1: applied, 0: the watermark covered it). */
static long long script_once(redisContext *c, const char *org, uint64_t lsn, bool load)
{
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	redis_agg_event e = {.kind = "call", .direction = "inbound", .status = "completed",
	                     .started_us = INT64_C(1796190748000000), .has_duration = true, .duration_s = 60};
	strcpy(e.org, org);
	strcpy(e.contact, CT);
	redis_agg_conf ac = {.prefix = "wc", .missed_statuses = "missed", .hour_window_h = 48};
	assert_int_equal(redis_agg_add(&b, &ac, &e, +1, lsn, 1796190748), 0);
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)REDIS_AGG_SCRIPT, strlen(REDIS_AGG_SCRIPT), md);
	char sha[41];
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(sha + 2 * i, 3, "%02x", md[i]);
	redisReply *r;
	if (load) {
		r = redisCommand(c, "SCRIPT LOAD %s", REDIS_AGG_SCRIPT);
		assert_non_null(r);
		assert_string_equal(r->str, sha);
		freeReplyObject(r);
	}
	buf out;
	buf_init(&out);
	int argc;
	const char **argv;
	size_t *argvlen;
	assert_int_equal(redis_agg_org_command(&b, 0, &ac, sha, &out, &argc, &argv, &argvlen), 0);
	r = redisCommandArgv(c, argc, argv, argvlen);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	long long v = r->integer;
	freeReplyObject(r);
	free(argv);
	free(argvlen);
	buf_fini(&out);
	redis_agg_batch_fini(&b);
	return v;
}

/* The primary's replication offset (INFO replication's master_repl_offset), -1 if unreadable. */
static long long repl_offset(redisContext *c)
{
	redisReply *r = redisCommand(c, "INFO replication");
	const char *at = r != NULL && r->type == REDIS_REPLY_STRING ? strstr(r->str, "master_repl_offset:") : NULL;
	long long v = at != NULL ? atoll(at + strlen("master_repl_offset:")) : -1;
	freeReplyObject(r);
	return v;
}

/* The WAIT gap: a round's script ran, its reply was lost, and the round was sent again on a new
 * connection, where the script found its watermark and skipped. A WAIT after the repeat must
 * still wait for the replicas to hold the first try (a failover before then loses it): the
 * repeat writes the watermark again, so WAIT covers it. With the replica stopped, WAIT 1 after
 * the repeat answers 0 (on Redis versions where a connection that wrote nothing waits for
 * nothing it would answer 1 at once; 7.0.15 makes any WAIT cover every earlier write, so there
 * the rewrite itself is what is checked: the repeat moves the replication offset). */
static void test_repeat_waits(void **state)
{
	pid_t *pids = *state;
	if (!redis_test_have_server())
		skip();
	char dir[] = "/tmp/walcast-repeat-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int port = redis_test_free_port(), rport = redis_test_free_port();
	while (rport == port)
		rport = redis_test_free_port();
	char replicaof[32];
	snprintf(replicaof, sizeof(replicaof), "127.0.0.1 %d", port);
	pids[0] = redis_test_server_spawn(port, dir, NULL);
	pids[1] = redis_test_server_spawn(rport, dir, replicaof);
	assert_true(pids[0] > 0 && pids[1] > 0);
	redisContext *first = connect_retry(port);
	assert_non_null(first);
	assert_true(redis_test_replica_online(port));

	kill(pids[1], SIGSTOP);
	assert_int_equal(script_once(first, ORG_A, 0x200, true), 1);
	redisFree(first); /* the reply "lost": the connection is gone */
	redisContext *again = connect_retry(port);
	assert_non_null(again);
	long long before = repl_offset(again);
	assert_true(before > 0);
	assert_int_equal(script_once(again, ORG_A, 0x200, false), 0);
	assert_true(repl_offset(again) > before); /* the skipped repeat wrote its watermark again */
	redisReply *w = redisCommand(again, "WAIT 1 300");
	assert_non_null(w);
	assert_int_equal(w->type, REDIS_REPLY_INTEGER);
	assert_int_equal(w->integer, 0); /* the replica does not have the first try yet */
	freeReplyObject(w);
	kill(pids[1], SIGCONT);
	w = redisCommand(again, "WAIT 1 5000");
	assert_non_null(w);
	assert_int_equal(w->integer, 1);
	freeReplyObject(w);
	assert_int_equal(calls(again, ORG_A), 1);

	redisFree(again);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_crash_between_orgs, server_slot, server_slot_free),
		cmocka_unit_test_setup_teardown(test_wait_replicas, redis_test_pids_setup, redis_test_pids_teardown),
		cmocka_unit_test_setup_teardown(test_repeat_waits, redis_test_pids_setup, redis_test_pids_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
