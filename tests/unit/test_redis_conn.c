/*
 * test_redis_conn — unit tests for the hiredis connection on walcast's loop
 * (plugins/sinks/redis_conn.h): URL parsing; a refused connect fails at once and is retried
 * with back-off (hiredis' own libuv adapter hangs there); a connect that never completes (a
 * listener whose backlog is full) gives up after connect_timeout; against a real redis-server
 * started here: up, a command answered, the server killed (pending commands get NULL, down is
 * reported), started again (up again by itself); a server that never answers dropped after the
 * reply timeout; a master, its replica and a sentinel: the connection found through the
 * sentinel (one that does not answer passed over) and following a failover by itself, and
 * redis_connect_blocking finding the same master. Skipped (77) without redis-server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop.h"
#include "redis_conn.h"
#include "redis_test_server.h"

typedef struct rec {
	int ups, downs, replies, nulls;
	char last[64];
	bool stop_on_up, stop_on_down, stop_on_reply;
	loop *l;
} rec;

static void up_cb(void *arg)
{
	rec *r = arg;
	r->ups++;
	if (r->stop_on_up)
		loop_stop(r->l);
}

static void down_cb(void *arg, const char *why)
{
	rec *r = arg;
	r->downs++;
	if (r->stop_on_down)
		loop_stop(r->l);
}

static void reply_cb(redis_conn *c, void *reply, void *privdata)
{
	rec *r = privdata;
	redisReply *rep = reply;
	if (rep == NULL) {
		r->nulls++;
	} else {
		r->replies++;
		snprintf(r->last, sizeof(r->last), "%s", rep->str ? rep->str : "");
	}
	if (r->stop_on_reply)
		loop_stop(r->l);
}

/* Runs l until a callback stops it or ms pass; true when the deadline stopped it. */
static bool run_for(loop *l, int64_t ms)
{
	int rc = redis_test_run_for(l, ms);
	assert_true(rc >= 0);
	return rc == 1;
}

static void test_url(void **state)
{
	(void)state;
	redis_url u;
	char err[REDIS_CONN_ERROR_MAX];
	assert_int_equal(redis_url_parse("redis://127.0.0.1:6380/2", &u, err), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 2);
	assert_string_equal(u.password, "");
	assert_int_equal(redis_url_parse("redis://:s3cret@localhost", &u, err), 0);
	assert_string_equal(u.host, "localhost");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_string_equal(u.password, "s3cret");
	assert_int_equal(redis_url_parse("redis://user:pw@h:1/", &u, err), 0);
	assert_string_equal(u.password, "pw");
	/* Sentinel: the sentinels (26379 by default), the master's name, a password and db for the master */
	assert_int_equal(redis_url_parse("redis+sentinel://:pw@10.0.0.1,10.0.0.2:5000/wc/3", &u, err), 0);
	assert_int_equal(u.nsentinels, 2);
	assert_string_equal(u.sentinels[0].host, "10.0.0.1");
	assert_int_equal(u.sentinels[0].port, 26379);
	assert_string_equal(u.sentinels[1].host, "10.0.0.2");
	assert_int_equal(u.sentinels[1].port, 5000);
	assert_string_equal(u.master, "wc");
	assert_string_equal(u.password, "pw");
	assert_int_equal(u.db, 3);
	assert_int_equal(redis_url_parse("redis+sentinel://s/m", &u, err), 0);
	assert_int_equal(u.nsentinels, 1);
	assert_string_equal(u.master, "m");
	assert_int_equal(u.db, 0);
	assert_int_equal(redis_url_parse("redis://h:1", &u, err), 0);
	assert_int_equal(u.nsentinels, 0);
	assert_string_equal(u.master, "");
	const char *bad[] = {"http://h", "redis://", "redis://h:0", "redis://h:99999", "redis://h:12x", "redis://h/x",
	                     "redis://h:1/2/3", "redis://a,b", "redis+sentinel://s", "redis+sentinel://s/",
	                     "redis+sentinel://s,/m", "redis+sentinel://,s/m", "redis+sentinel://s:0/m",
	                     "redis+sentinel://s/m/x", "redis+sentinel://a,b,c,d,e,f,g,h,i/m"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(redis_url_parse(bad[i], &u, err), -EINVAL);
		assert_true(err[0] != '\0');
	}
}

static void test_refused(void **state)
{
	(void)state;
	loop *l = loop_create();
	rec r = {.l = l};
	redis_url u = {.port = redis_test_free_port()};
	strcpy(u.host, "127.0.0.1");
	redis_conn_cbs cbs = {.up = up_cb, .down = down_cb, .arg = &r};
	redis_conn *c;
	assert_int_equal(redis_conn_create(l, "t", &u, 5000, 20, 80, &cbs, &c), 0);
	assert_false(redis_conn_up(c));
	const char *argv[] = {"PING"};
	size_t argvlen[] = {4};
	assert_int_equal(redis_conn_command(c, reply_cb, &r, 1, argv, argvlen), -ENOTCONN);
	/* refused at once, retried after 20, 40, 80, 80... ms: four attempts well before the 5 s
	 * connect timeout could have ended even one of them (3 s allowed for a busy machine) */
	int64_t t0 = loop_now_ms();
	while (redis_conn_attempts(c) < 4 && loop_now_ms() - t0 < 3000)
		assert_true(run_for(l, 50));
	assert_true(redis_conn_attempts(c) >= 4);
	assert_int_equal(r.ups, 0);
	assert_int_equal(r.downs, 0);
	redis_conn_destroy(c);
	loop_destroy(l);
}

static void test_connect_timeout(void **state)
{
	(void)state;
	/* a listener that never accepts, its queue filled: further SYNs are dropped and a connect
	 * never completes */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	socklen_t n = sizeof(a);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &n), 0);
	int fill[4];
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		(void)connect(fill[i], (struct sockaddr *)&a, sizeof(a));
	}
	loop *l = loop_create();
	rec r = {.l = l};
	redis_url u = {.port = ntohs(a.sin_port)};
	strcpy(u.host, "127.0.0.1");
	redis_conn_cbs cbs = {.up = up_cb, .down = down_cb, .arg = &r};
	redis_conn *c;
	assert_int_equal(redis_conn_create(l, "t", &u, 100, 50, 50, &cbs, &c), 0);
	/* each attempt gives up after 100 ms and the next starts 50 ms later: without the timeout
	 * the first would wait forever */
	int64_t t0 = loop_now_ms();
	while (redis_conn_attempts(c) < 3 && loop_now_ms() - t0 < 10000)
		assert_true(run_for(l, 50));
	assert_true(redis_conn_attempts(c) >= 3);
	assert_int_equal(r.ups, 0);
	redis_conn_destroy(c);
	loop_destroy(l);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

/* A server that takes the connection but never answers (the kernel completes the handshake
 * of a listener nobody serves): with a reply timeout, a pending command gets NULL and the
 * connection is dropped (down) once nothing was answered for that long; without pending
 * commands it stays up however long it is idle. */
static void test_reply_timeout(void **state)
{
	(void)state;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	socklen_t n = sizeof(a);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &n), 0);
	loop *l = loop_create();
	rec r = {.l = l, .stop_on_up = true};
	redis_url u = {.port = ntohs(a.sin_port)};
	strcpy(u.host, "127.0.0.1");
	redis_conn_cbs cbs = {.up = up_cb, .down = down_cb, .arg = &r};
	redis_conn *c;
	assert_int_equal(redis_conn_create(l, "t", &u, 1000, 5000, 5000, &cbs, &c), 0);
	assert_int_equal(redis_conn_set_reply_timeout(c, 100), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.ups, 1);
	assert_true(run_for(l, 300)); /* idle: nothing pending, nothing dropped */
	assert_int_equal(r.downs, 0);
	const char *argv[] = {"PING"};
	size_t argvlen[] = {4};
	r.stop_on_down = true;
	int64_t t0 = loop_now_ms();
	assert_int_equal(redis_conn_command(c, reply_cb, &r, 1, argv, argvlen), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.nulls, 1);
	assert_int_equal(r.downs, 1);
	assert_true(loop_now_ms() - t0 >= 100);
	redis_conn_destroy(c);
	loop_destroy(l);
	close(lfd);
}

static void test_up_down_up(void **state)
{
	(void)state;
	if (!redis_test_have_server())
		skip();
	int port = redis_test_free_port();
	pid_t pid = redis_test_server_start(port);
	loop *l = loop_create();
	rec r = {.l = l, .stop_on_up = true};
	redis_url u = {.port = port};
	strcpy(u.host, "127.0.0.1");
	redis_conn_cbs cbs = {.up = up_cb, .down = down_cb, .arg = &r};
	redis_conn *c;
	/* the server may not listen yet: refused attempts until it does */
	assert_int_equal(redis_conn_create(l, "t", &u, 1000, 20, 100, &cbs, &c), 0);
	assert_false(run_for(l, 10000));
	assert_int_equal(r.ups, 1);
	assert_true(redis_conn_up(c));

	const char *argv[] = {"ECHO", "walcast"};
	size_t argvlen[] = {4, 7};
	r.stop_on_reply = true;
	assert_int_equal(redis_conn_command(c, reply_cb, &r, 2, argv, argvlen), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.replies, 1);
	assert_string_equal(r.last, "walcast");

	/* the server dies with a command pending: its callback gets NULL, then down */
	r.stop_on_reply = false;
	r.stop_on_down = true;
	kill(pid, SIGSTOP);
	assert_int_equal(redis_conn_command(c, reply_cb, &r, 2, argv, argvlen), 0);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.downs, 1);
	assert_int_equal(r.nulls, 1);
	assert_false(redis_conn_up(c));

	/* back: up again by itself */
	r.stop_on_down = false;
	pid = redis_test_server_start(port);
	assert_false(run_for(l, 10000));
	assert_int_equal(r.ups, 2);

	/* a reset (a command timed out): down, then up again */
	redis_conn_reset(c, "test");
	assert_false(redis_conn_up(c));
	assert_int_equal(r.downs, 2);
	assert_false(run_for(l, 10000));
	assert_int_equal(r.ups, 3);

	redis_conn_destroy(c);
	loop_destroy(l);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* CONFIG GET port's answer, into r->last. */
static void port_cb(redis_conn *c, void *reply, void *privdata)
{
	rec *r = privdata;
	redisReply *rep = reply;
	snprintf(r->last, sizeof(r->last), "%s",
	         rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 ? rep->element[1]->str : "?");
	loop_stop(r->l);
}

/* The port of the server c is connected to (CONFIG GET port), or 0. */
static int conn_port(loop *l, redis_conn *c, rec *r)
{
	const char *argv[] = {"CONFIG", "GET", "port"};
	size_t argvlen[] = {6, 3, 4};
	r->last[0] = '\0';
	if (redis_conn_command(c, port_cb, r, 3, argv, argvlen) < 0 || run_for(l, 5000))
		return 0;
	return atoi(r->last);
}

/* A blocking command's integer-or-array-size answer on 127.0.0.1:port; -1 when it fails. */
static long long blocking_ask(int port, const char *cmd)
{
	redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, (struct timeval){.tv_sec = 2});
	redisReply *r = rc != NULL && !rc->err ? redisCommand(rc, cmd) : NULL;
	long long v = r == NULL || r->type == REDIS_REPLY_ERROR ? -1
	              : r->type == REDIS_REPLY_ARRAY ? (long long)r->elements
	              : r->type == REDIS_REPLY_INTEGER ? r->integer
	                                               : 0;
	freeReplyObject(r);
	redisFree(rc);
	return v;
}

/* test_sentinel_failover's servers and directory, removed by its teardown even when it fails */
static pid_t sentinel_pids[3];
static char sentinel_dir[64];

static int sentinel_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 3; i++)
		if (sentinel_pids[i] > 0) {
			kill(sentinel_pids[i], SIGKILL);
			waitpid(sentinel_pids[i], NULL, 0);
			sentinel_pids[i] = 0;
		}
	if (sentinel_dir[0] != '\0') {
		char cmd[96];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", sentinel_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", sentinel_dir);
		sentinel_dir[0] = '\0';
	}
	return 0;
}

/* A master, its replica and a sentinel that monitors them, started here: the connection asks the
 * sentinel (after one that does not answer) for the master, and after a failover the sentinel
 * forces, ends up on the promoted replica by itself; redis_connect_blocking finds the same. */
static void test_sentinel_failover(void **state)
{
	(void)state;
	if (!redis_test_have_server())
		skip();
	char dir[] = "/tmp/walcast-sentinel-XXXXXX";
	assert_non_null(mkdtemp(dir));
	snprintf(sentinel_dir, sizeof(sentinel_dir), "%s", dir);
	int mport = redis_test_free_port(), rport = redis_test_free_port(), sport = redis_test_free_port();
	int dead = redis_test_free_port();
	while (rport == mport)
		rport = redis_test_free_port();
	while (sport == mport || sport == rport)
		sport = redis_test_free_port();
	char conf[256], replicaof[64], text[512];
	snprintf(conf, sizeof(conf), "%s/sentinel.conf", dir);
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	snprintf(text, sizeof(text),
	         "port %d\nbind 127.0.0.1\ndir %s\nlogfile \"\"\nsentinel monitor wc 127.0.0.1 %d 1\n"
	         "sentinel down-after-milliseconds wc 2000\nsentinel failover-timeout wc 10000\n",
	         sport, dir, mport);
	fputs(text, f);
	fclose(f);
	/* in dir: a replica's full sync (the old master's, after the failover) writes dump.rdb there */
	pid_t master = redis_test_server_spawn(mport, dir, NULL);
	snprintf(replicaof, sizeof(replicaof), "127.0.0.1 %d", mport);
	pid_t replica = redis_test_server_spawn(rport, dir, replicaof), sentinel;
	char *sargv[] = {"redis-server", conf, "--sentinel", NULL};
	int devnull = open("/dev/null", O_WRONLY);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, devnull, 1);
	assert_int_equal(posix_spawnp(&sentinel, "redis-server", &fa, NULL, sargv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(devnull);
	sentinel_pids[0] = master, sentinel_pids[1] = replica, sentinel_pids[2] = sentinel;
	/* the sentinel knows the replica (from the master's INFO) before a failover can pick it */
	bool known = false;
	for (int i = 0; i < 200 && !known; i++) {
		known = blocking_ask(sport, "SENTINEL REPLICAS wc") == 1 && blocking_ask(rport, "ROLE") > 0;
		if (!known)
			usleep(100 * 1000);
	}
	assert_true(known);

	char url[128], err[REDIS_CONN_ERROR_MAX];
	redis_url u;
	snprintf(url, sizeof(url), "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d/wc", dead, sport);
	assert_int_equal(redis_url_parse(url, &u, err), 0);
	loop *l = loop_create();
	rec r = {.l = l, .stop_on_up = true};
	redis_conn_cbs cbs = {.up = up_cb, .down = down_cb, .arg = &r};
	redis_conn *c;
	assert_int_equal(redis_conn_create(l, "t", &u, 1000, 20, 200, &cbs, &c), 0);
	assert_false(run_for(l, 10000));
	assert_int_equal(r.ups, 1);
	assert_int_equal(conn_port(l, c, &r), mport);
	redisContext *bc = redis_connect_blocking(&u, 1000, err);
	assert_non_null(bc);
	redisReply *rep = redisCommand(bc, "CONFIG GET port");
	assert_int_equal(atoi(rep->element[1]->str), mport);
	freeReplyObject(rep);
	redisFree(bc);

	/* the failover: the sentinel promotes the replica and makes the old master its replica, closing
	 * its clients; the connection comes back up on the new master by itself */
	/* refused (NOGOODSLAVE) until the sentinel has seen the replica in sync: asked again */
	bool failing_over = false;
	for (int i = 0; i < 150 && !failing_over; i++) {
		failing_over = blocking_ask(sport, "SENTINEL FAILOVER wc") != -1;
		if (!failing_over)
			usleep(100 * 1000);
	}
	assert_true(failing_over);
	r.stop_on_up = true;
	int port = mport;
	for (int i = 0; i < 20 && port != rport; i++) {
		run_for(l, 1000);
		if (redis_conn_up(c))
			port = conn_port(l, c, &r);
	}
	assert_int_equal(port, rport);
	assert_true(r.downs >= 1);
	bc = redis_connect_blocking(&u, 1000, err);
	assert_non_null(bc);
	rep = redisCommand(bc, "ROLE");
	assert_string_equal(rep->element[0]->str, "master");
	freeReplyObject(rep);
	redisFree(bc);

	/* no sentinel answers: no connection, a clear error */
	snprintf(url, sizeof(url), "redis+sentinel://127.0.0.1:%d/wc", dead);
	assert_int_equal(redis_url_parse(url, &u, err), 0);
	assert_null(redis_connect_blocking(&u, 1000, err));
	assert_non_null(strstr(err, "Connection refused"));

	redis_conn_destroy(c);
	loop_destroy(l);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_connect_timeout),
		cmocka_unit_test(test_reply_timeout),
		cmocka_unit_test(test_up_down_up),
		cmocka_unit_test_teardown(test_sentinel_failover, sentinel_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
