/*
 * test_redis_cluster — unit tests for the pure parts of the Redis Cluster router
 * (plugins/sinks/redis_cluster.h): the slot of a key (CRC16-XMODEM, the hash-tag rule, values
 * redis-cli's CLUSTER KEYSLOT gives), the key a command is routed by, the classification and
 * parsing of MOVED / ASK / retryable errors, and the slot map: read from a CLUSTER SLOTS reply,
 * replaced by a later one (failover: a replica becomes the master, the old master leaves),
 * pointed elsewhere by a MOVED, and left unchanged by a malformed reply. The cluster URL (several
 * seeds). Against a real one-node cluster: a router whose first seed is down reads the map from
 * the next one and routes commands (a restart while the node named first in url is dead); with
 * wait_replicas = 1 and no replica (as right after a failover) a durable write lands but is not
 * answered.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "redis_cluster.h"
#include "redis_test_server.h"

static uint16_t slot(const char *k)
{
	return redis_cluster_key_slot(k, strlen(k));
}

static void test_key_slot(void **state)
{
	(void)state;
	/* CLUSTER KEYSLOT of redis 7.0 */
	assert_int_equal(slot("foo"), 12182);
	assert_int_equal(slot("bar"), 5061);
	assert_int_equal(slot("123456789"), 0x31C3 & 16383); /* the CRC16-XMODEM check value */
	assert_int_equal(slot(""), 0);
	/* hash tags */
	assert_int_equal(slot("{user1000}.following"), slot("user1000"));
	assert_int_equal(slot("{user1000}.followers"), slot("{user1000}.following"));
	assert_int_equal(slot("foo{}{bar}"), redis_cluster_key_slot("foo{}{bar}", 10)); /* empty tag: the whole key */
	assert_int_not_equal(slot("foo{}{bar}"), slot("bar"));
	assert_int_equal(slot("foo{{bar}}zap"), slot("{bar"));
	assert_int_equal(slot("foo{bar}{zap}"), slot("bar"));
	assert_int_equal(slot("no{close"), redis_cluster_key_slot("no{close", 8));
	/* walcast's keys: every key of an org in one slot, the global ones elsewhere */
	const char *org = "11111111-1111-1111-1111-111111111111";
	assert_int_equal(slot("wc:{11111111-1111-1111-1111-111111111111}:wm"), slot(org));
	assert_int_equal(slot("wc:{11111111-1111-1111-1111-111111111111}:day:20261202:contacts"), slot(org));
	/* binary-safe: a NUL inside the key counts */
	assert_int_not_equal(redis_cluster_key_slot("a\0b", 3), redis_cluster_key_slot("a", 1));
}

static int key_of(int argc, const char *const *argv)
{
	size_t len[8];
	for (int i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	return redis_cluster_command_key(argc, argv, len);
}

static void test_command_key(void **state)
{
	(void)state;
	const char *get[] = {"GET", "k"};
	assert_int_equal(key_of(2, get), 1);
	const char *evalsha[] = {"evalsha", "abc", "2", "k1", "k2", "a"};
	assert_int_equal(key_of(6, evalsha), 3);
	const char *nokeys[] = {"EVAL", "return 1", "0"};
	assert_int_equal(key_of(3, nokeys), -EINVAL);
	const char *toomany[] = {"EVAL", "s", "3", "k1", "k2"};
	assert_int_equal(key_of(5, toomany), -EINVAL);
	const char *ping[] = {"PING"};
	assert_int_equal(key_of(1, ping), -EINVAL);
}

static redis_cluster_error err_of(const char *s, redis_cluster_redirect *r)
{
	return redis_cluster_error_parse(s, strlen(s), r);
}

static void test_errors(void **state)
{
	(void)state;
	redis_cluster_redirect r = {.port = -1};
	assert_int_equal(err_of("MOVED 3999 127.0.0.1:6381", &r), REDIS_CLUSTER_ERR_MOVED);
	assert_int_equal(r.slot, 3999);
	assert_string_equal(r.host, "127.0.0.1");
	assert_int_equal(r.port, 6381);
	assert_int_equal(err_of("ASK 16383 ::1:7000", &r), REDIS_CLUSTER_ERR_ASK); /* IPv6: the last colon */
	assert_int_equal(r.slot, 16383);
	assert_string_equal(r.host, "::1");
	assert_int_equal(r.port, 7000);
	assert_int_equal(err_of("CLUSTERDOWN The cluster is down", &r), REDIS_CLUSTER_ERR_RETRY);
	assert_int_equal(err_of("TRYAGAIN Multiple keys request during rehashing of slot", &r), REDIS_CLUSTER_ERR_RETRY);
	assert_int_equal(err_of("LOADING Redis is loading the dataset in memory", &r), REDIS_CLUSTER_ERR_RETRY);
	assert_int_equal(err_of("MASTERDOWN Link with MASTER is down", &r), REDIS_CLUSTER_ERR_RETRY);
	/* everything else is the caller's */
	r.port = -1;
	assert_int_equal(err_of("NOSCRIPT No matching script", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(err_of("CROSSSLOT Keys in request don't hash to the same slot", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(err_of("MOVEDX 1 h:1", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(err_of("MOVED 16384 h:1", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(err_of("MOVED 12 h", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(err_of("MOVED 12 h:0", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(err_of("MOVED x h:1", &r), REDIS_CLUSTER_ERR_OTHER);
	assert_int_equal(r.port, -1); /* untouched */
}

/* ---- CLUSTER SLOTS replies built by hand -------------------------------------------------------- */

static redisReply *r_int(long long v)
{
	redisReply *r = calloc(1, sizeof(*r));
	r->type = REDIS_REPLY_INTEGER;
	r->integer = v;
	return r;
}

static redisReply *r_str(const char *s)
{
	redisReply *r = calloc(1, sizeof(*r));
	r->type = REDIS_REPLY_STRING;
	r->str = strdup(s);
	r->len = strlen(s);
	return r;
}

static redisReply *r_arr(size_t n, redisReply **e)
{
	redisReply *r = calloc(1, sizeof(*r));
	r->type = REDIS_REPLY_ARRAY;
	r->elements = n;
	r->element = calloc(n ? n : 1, sizeof(*r->element));
	memcpy(r->element, e, n * sizeof(*e));
	return r;
}

static redisReply *rnode(const char *host, int port)
{
	return r_arr(3, (redisReply *[]){r_str(host), r_int(port), r_str("0123456789abcdef")});
}

/* [first, last, master, replica?] */
static redisReply *rrange(int first, int last, int mport, int rport)
{
	if (rport == 0)
		return r_arr(3, (redisReply *[]){r_int(first), r_int(last), rnode("127.0.0.1", mport)});
	return r_arr(4, (redisReply *[]){r_int(first), r_int(last), rnode("127.0.0.1", mport), rnode("", rport)});
}

static void test_map(void **state)
{
	(void)state;
	redis_cluster_map m;
	redis_cluster_map_init(&m);
	assert_false(redis_cluster_map_complete(&m));
	assert_int_equal(redis_cluster_map_node(&m, "127.0.0.1", 7000, false), -ENOENT);
	assert_int_equal(redis_cluster_map_node(&m, "127.0.0.1", 7000, true), 0); /* the seed */
	char err[REDIS_CONN_ERROR_MAX];

	/* three masters, each with a replica */
	redisReply *r = r_arr(3, (redisReply *[]){rrange(0, 5460, 7000, 7003), rrange(5461, 10922, 7001, 7004),
	                                         rrange(10923, 16383, 7002, 7005)});
	assert_int_equal(redis_cluster_map_apply_slots(&m, r, "127.0.0.1", err), 0);
	freeReplyObject(r);
	assert_true(redis_cluster_map_complete(&m));
	assert_int_equal(m.nnodes, 6);
	int n7000 = redis_cluster_map_node(&m, "127.0.0.1", 7000, false);
	int n7001 = redis_cluster_map_node(&m, "127.0.0.1", 7001, false);
	int n7004 = redis_cluster_map_node(&m, "127.0.0.1", 7004, false); /* "" host: the default */
	assert_int_equal(n7000, 0);
	assert_true(n7004 >= 0);
	assert_int_equal(m.slot[0], n7000);
	assert_int_equal(m.slot[5460], n7000);
	assert_int_equal(m.slot[5461], n7001);
	assert_int_equal(m.slot[slot("foo")], redis_cluster_map_node(&m, "127.0.0.1", 7002, false));
	assert_true(m.nodes[n7001].master);
	assert_int_equal(m.nodes[n7001].replicas, 1);
	assert_false(m.nodes[n7004].master);
	assert_true(m.nodes[n7004].present);

	/* a MOVED: one slot elsewhere, a new node */
	assert_int_equal(redis_cluster_map_move(&m, 100, "127.0.0.1", 7010), 0);
	int n7010 = redis_cluster_map_node(&m, "127.0.0.1", 7010, false);
	assert_int_equal(n7010, 6);
	assert_int_equal(m.slot[100], n7010);
	assert_int_equal(m.slot[99], n7000);
	assert_true(m.nodes[n7010].master && m.nodes[n7010].present);

	/* failover of 7001: 7004 serves its slots and has no replica; 7001 and 7010 are not named */
	r = r_arr(3, (redisReply *[]){rrange(0, 5460, 7000, 7003), rrange(5461, 10922, 7004, 0),
	                             rrange(10923, 16383, 7002, 7005)});
	assert_int_equal(redis_cluster_map_apply_slots(&m, r, "127.0.0.1", err), 0);
	freeReplyObject(r);
	assert_int_equal(m.slot[5461], n7004); /* indices are stable */
	assert_int_equal(m.slot[100], n7000);  /* the MOVED is overwritten by the whole map */
	assert_true(m.nodes[n7004].master);
	assert_int_equal(m.nodes[n7004].replicas, 0);
	assert_false(m.nodes[n7001].present);
	assert_false(m.nodes[n7001].master);
	assert_false(m.nodes[n7010].present);
	assert_int_equal(m.nnodes, 7);

	/* a cluster with a slot nobody serves */
	r = r_arr(1, (redisReply *[]){rrange(0, 16000, 7000, 0)});
	assert_int_equal(redis_cluster_map_apply_slots(&m, r, "127.0.0.1", err), 0);
	freeReplyObject(r);
	assert_false(redis_cluster_map_complete(&m));
	assert_int_equal(m.slot[16001], -1);

	/* malformed replies leave the map as it was */
	int32_t before[REDIS_CLUSTER_SLOTS];
	memcpy(before, m.slot, sizeof(before));
	redisReply *bad[] = {
		r_str("nope"),
		r_arr(1, (redisReply *[]){r_arr(2, (redisReply *[]){r_int(0), r_int(5)})}),
		r_arr(1, (redisReply *[]){rrange(5, 4, 7000, 0)}),
		r_arr(1, (redisReply *[]){rrange(0, 16384, 7000, 0)}),
		r_arr(1, (redisReply *[]){r_arr(3, (redisReply *[]){r_int(0), r_int(5), r_arr(1, (redisReply *[]){r_str("h")})})}),
		r_arr(1, (redisReply *[]){r_arr(3, (redisReply *[]){r_int(0), r_int(5), rnode("h", 70000)})}),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(redis_cluster_map_apply_slots(&m, bad[i], "127.0.0.1", err), -EPROTO);
		assert_true(err[0] != '\0');
		freeReplyObject(bad[i]);
	}
	assert_memory_equal(before, m.slot, sizeof(before));
	assert_int_equal(m.nnodes, 7);
	redis_cluster_map_fini(&m);
}

static void test_url(void **state)
{
	(void)state;
	redis_url u[REDIS_CLUSTER_SEEDS_MAX];
	size_t n = 0;
	char err[REDIS_CONN_ERROR_MAX];
	assert_int_equal(redis_cluster_url_parse("redis://127.0.0.1:7000", u, 4, &n, err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(u[0].port, 7000);
	assert_int_equal(redis_cluster_url_parse("redis://:pw@127.0.0.1:7000,127.0.0.1:7001,localhost/0", u, 4, &n, err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(u[1].port, 7001);
	assert_string_equal(u[2].host, "localhost");
	assert_int_equal(u[2].port, 6379);
	assert_string_equal(u[2].password, "pw");
	assert_int_equal(u[2].db, 0);
	const char *bad[] = {"redis://h:1,h:2/3", "redis://", "redis://h:1,", "redis+sentinel://h/m", "http://h",
	                     "redis://h:1,h:2,h:3,h:4,h:5"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(redis_cluster_url_parse(bad[i], u, 4, &n, err), -EINVAL);
		assert_true(err[0] != '\0');
	}
}

typedef struct rec {
	loop *l;
	int ups, replies;
	char last[64];
} rec;

static void up_cb(void *arg)
{
	rec *r = arg;
	r->ups++;
	loop_stop(r->l);
}

static void reply_cb(redis_conn *c, void *reply, void *privdata)
{
	(void)c;
	rec *r = privdata;
	redisReply *rep = reply;
	r->replies++;
	snprintf(r->last, sizeof(r->last), "%s", rep != NULL && rep->str != NULL ? rep->str : "(null)");
	loop_stop(r->l);
}

/* Runs l until a callback stops it or ms pass; true when the deadline stopped it. */
static bool run_for(loop *l, int64_t ms)
{
	int rc = redis_test_run_for(l, ms);
	assert_true(rc >= 0);
	return rc == 1;
}

/* A one-node cluster on port (every slot its own) working in dir; its pid, -1 on failure. */
/* A free loopback port whose cluster bus port (port + 10000) is valid and free too: a port
 * above 55535 has no bus port, and redis-server --cluster-enabled refuses to start on it. */
static int cluster_free_port(void)
{
	for (int i = 0; i < 100; i++) {
		int port = redis_test_free_port();
		if (port > 0 && port <= 55535 && redis_test_port_free(port + 10000))
			return port;
	}
	return 0;
}

static pid_t one_node_cluster(int port, const char *dir)
{
	char p[16], conf[600];
	snprintf(p, sizeof(p), "%d", port);
	snprintf(conf, sizeof(conf), "%s/nodes.conf", dir);
	char *argv[] = {"redis-server", "--port", p, "--bind", "127.0.0.1", "--dir", (char *)dir, "--save", "",
	                "--appendonly", "no", "--logfile", "/dev/null", "--cluster-enabled", "yes",
	                "--cluster-config-file", conf, NULL};
	pid_t pid;
	if (posix_spawnp(&pid, "redis-server", NULL, NULL, argv, environ) != 0)
		return -1;
	for (int i = 0; i < 400; i++) {
		redisContext *c = redisConnect("127.0.0.1", port);
		redisReply *r = c != NULL && !c->err ? redisCommand(c, "CLUSTER ADDSLOTSRANGE 0 16383") : NULL;
		freeReplyObject(r);
		r = c != NULL && !c->err ? redisCommand(c, "CLUSTER INFO") : NULL;
		bool ok = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok") != NULL;
		freeReplyObject(r);
		redisFree(c);
		if (ok)
			return pid;
		usleep(25000);
	}
	return pid;
}

/* The restart of integration_redis_cluster that stalled: the node url named was dead (killed
 * as a master and replaced by its replica), so a router that knew only that node never read
 * the map. With several seeds it reads it from the next one. */
static void test_first_seed_dead(void **state)
{
	pid_t *pids = *state;
	if (!redis_test_have_server())
		skip();
	char dir[] = "/tmp/test_redis_cluster.XXXXXX";
	const char *tmp = getenv("TMPDIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/test_redis_cluster.XXXXXX", tmp != NULL ? tmp : "/tmp");
	char *d = mkdtemp(tmp != NULL ? path : dir);
	assert_non_null(d);
	int live = cluster_free_port(), dead = redis_test_free_port();
	pids[0] = one_node_cluster(live, d);
	assert_true(pids[0] > 0);

	char url[128], err[REDIS_CONN_ERROR_MAX];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d,127.0.0.1:%d", dead, live);
	redis_url seeds[REDIS_CLUSTER_SEEDS_MAX];
	size_t n;
	assert_int_equal(redis_cluster_url_parse(url, seeds, REDIS_CLUSTER_SEEDS_MAX, &n, err), 0);
	loop *l = loop_create();
	rec r = {.l = l};
	redis_cluster_cbs cbs = {.up = up_cb, .arg = &r};
	redis_cluster_timing t = {.connect_timeout_ms = 500, .backoff_min_ms = 20, .backoff_max_ms = 200,
	                          .reply_timeout_ms = 5000};
	redis_wait w = {.name = "t", .replicas = 0, .timeout_ms = 1000};
	redis_cluster *rc;
	assert_int_equal(redis_cluster_create(l, "t", seeds, n, &t, &w, 100, &cbs, &rc), 0);
	assert_false(run_for(l, 10000));
	assert_int_equal(r.ups, 1);
	assert_true(redis_cluster_ready(rc));

	/* a durable write without wait_replicas: answered at once */
	const char *argv[] = {"SET", "wc:{org}:wm", "00000000000000AA"};
	size_t argvlen[] = {3, 11, 16};
	assert_int_equal(redis_cluster_command(rc, REDIS_CLUSTER_DURABLE, reply_cb, &r, 3, argv, argvlen), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.replies, 1);
	assert_string_equal(r.last, "OK");
	redisContext *c = redisConnect("127.0.0.1", live);
	redisReply *g = redisCommand(c, "GET wc:{org}:wm");
	assert_non_null(g);
	assert_string_equal(g->str, "00000000000000AA");
	freeReplyObject(g);
	redisFree(c);
	assert_true(redis_cluster_healthy(rc));
	redis_cluster_destroy(rc);

	/* wait_replicas = 1 on a master without a replica (as right after a failover): the write
	 * lands, but is not answered as done */
	w.replicas = 1;
	r = (rec){.l = l};
	assert_int_equal(redis_cluster_create(l, "t", seeds, n, &t, &w, 100, &cbs, &rc), 0);
	assert_false(run_for(l, 10000));
	const char *argv2[] = {"SET", "wc:{org}:wm", "00000000000000BB"};
	assert_int_equal(redis_cluster_command(rc, REDIS_CLUSTER_DURABLE, reply_cb, &r, 3, argv2, argvlen), 0);
	assert_true(run_for(l, 2500));
	assert_int_equal(r.replies, 0);
	c = redisConnect("127.0.0.1", live);
	g = redisCommand(c, "GET wc:{org}:wm");
	assert_non_null(g);
	assert_string_equal(g->str, "00000000000000BB");
	freeReplyObject(g);
	redisFree(c);
	redis_cluster_destroy(rc); /* answered NULL */
	assert_int_equal(r.replies, 1);
	assert_string_equal(r.last, "(null)");
	loop_destroy(l);
	char rm[600];
	snprintf(rm, sizeof(rm), "rm -rf '%s'", d);
	assert_int_equal(system(rm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_slot),
		cmocka_unit_test(test_command_key),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_map),
		cmocka_unit_test(test_url),
		cmocka_unit_test_setup_teardown(test_first_seed_dead, redis_test_pids_setup, redis_test_pids_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
