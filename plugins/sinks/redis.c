/*
 * redis — the aggregates sink (see redis.h; docs/aggregates.md for the keys and the guarantees).
 *
 * State. Two batches of merged deltas: `open` takes the transactions as they commit; `round` is
 * what has been handed to Redis and not yet accepted. One round at a time: a flush moves open
 * into round and sends one EVALSHA per org (pipelined on one connection, so a round costs one
 * round trip whatever the number of orgs); when every org's script has answered, the round is
 * accepted: position() moves to the round's end LSN, the global watermark PREFIX:wm is set, and
 * the next round leaves at once if open holds anything. A round that fails (the connection
 * drops, a reply times out, a script errs) is kept as it is and sent again after the reconnect:
 * each org's script skips a batch its watermark already covers, so the parts that had landed are
 * not counted twice. Open never merges into a round in flight: that would change the batch an
 * org's watermark vouches for.
 *
 * Replays. At start the global watermark gives position() and every org's watermark is read
 * (the orgs are listed in PREFIX:orgs): a replayed transaction is dropped for each org whose
 * watermark covers its commit LSN, before it is merged, so a batch never straddles a watermark.
 * When Redis does not answer at start, the rows offered are held as they come (held_row,
 * counted in pending_bytes) and no round leaves; once the connection is up the watermarks are
 * read on it, and the held rows go through the same filter into open.
 */
#include "redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "lsn.h"
#include "redis_agg.h"
#include "redis_api.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#define KEY(nm, ty, field, def, lo, hi, hlp) \
	{"sink", nm, ty, offsetof(redis_sink_conf, field), def, lo, hi, false, hlp}

static const config_key redis_keys[] = {
	KEY("url", CONFIG_STRING, url, "redis://127.0.0.1:6379/0", 0, 0,
	    "the Redis server: redis://[[user]:password@]host[:port][/db], or redis+sentinel://SENTINEL[,...]/MASTER[/db]"),
	KEY("cluster", CONFIG_BOOL, cluster, "off", 0, 0,
	    "on: url names nodes of a Redis Cluster (redis://HOST:PORT[,HOST:PORT...]); commands are routed by key "
	    "slot (docs/aggregates.md)"),
	KEY("prefix", CONFIG_STRING, prefix, "wc", 0, 0, "the first part of every key (PREFIX:{ORG}:...)"),
	KEY("table", CONFIG_STRING, table, "public.events", 0, 0, "the calls and SMS table (schema.table)"),
	KEY("missed_statuses", CONFIG_STRING, missed_statuses, "missed", 0, 0,
	    "comma-separated call statuses counted as missed"),
	KEY("hour_window", CONFIG_INT, hour_window, "48", 1, 24 * 366, "hours of per-hour counters kept"),
	KEY("flush_interval", CONFIG_DURATION, flush_interval_ms, "10ms", 1, 60000,
	    "a committed transaction is sent to Redis at most this long after it was taken"),
	KEY("connect_timeout", CONFIG_DURATION, connect_timeout_ms, "2s", 10, 600000,
	    "how long one connect attempt may take"),
	KEY("command_timeout", CONFIG_DURATION, command_timeout_ms, "10s", 10, 3600000,
	    "no reply for this long while commands wait drops the connection (reconnect, send again); "
	    "a round older than this makes /readyz unready"),
	KEY("reconnect_max", CONFIG_DURATION, reconnect_max_ms, "5s", 10, 600000,
	    "the longest wait between reconnect attempts (from 100ms, doubling)"),
	KEY("wait_replicas", CONFIG_INT, wait_replicas, "0", 0, 16,
	    "a round is confirmed only once this many replicas acknowledged it (WAIT); 0: once the primary did"),
	KEY("wait_timeout", CONFIG_DURATION, wait_timeout_ms, "1s", 1, 600000,
	    "how long one WAIT blocks; fewer acknowledgements: WAIT again, nothing confirmed meanwhile"),
};

#define NKEYS (sizeof(redis_keys) / sizeof(redis_keys[0]))
#define ORGS_INDEX "orgs"
#define CLUSTER_QUEUE_MAX 1000000 /* commands the cluster router holds (a round is one per org) */

typedef struct known_wm {
	char org[37];
	uint64_t wm;
} known_wm;

/* A row's contribution taken while the watermarks are not known yet (Redis was unreachable at
 * start): kept as it came, to be filtered and merged once they are. Strings in held_text. */
typedef struct held_row {
	redis_agg_event ev;     /* kind, direction, status: offsets into held_text until replayed */
	size_t kind, direction, status;
	int sign;
	uint64_t commit_lsn;
} held_row;

typedef struct rsink {
	sink_env env;
	char *prefix, *missed, *schema, *table, *url_text;
	redis_agg_conf aconf;
	redis_url url;          /* cluster = on: the first seed */
	redis_url seeds[REDIS_CLUSTER_SEEDS_MAX];
	size_t nseeds;          /* cluster = on */
	redis_conn *conn;       /* cluster = off */
	redis_cluster *cluster; /* cluster = on */
	redis_link link;        /* the one of the two */
	redis_api *api; /* the stats API on the daemon's listener (NULL without one) */
	audience_sub *sub;
	char sha[41];

	known_wm *known;
	size_t nknown, capknown;
	hash_index kidx;
	uint64_t seed;

	redis_agg_batch open, round;
	bool round_active;      /* round holds a batch not yet accepted */
	bool round_failed;      /* a reply of the round was missing or an error */
	size_t outstanding;     /* replies of the round still expected */
	int64_t round_start_ms; /* when the round was first sent */

	uint64_t position;      /* every org's script accepted up to this end LSN */
	uint64_t start_position;

	bool wm_known;          /* the watermarks were read from Redis (at start, or once it answered) */
	bool wm_loading;        /* the asynchronous read is under way */
	size_t wm_pending;      /* its replies still expected */
	uint64_t wm_global;     /* what it read as PREFIX:wm */
	held_row *held;
	size_t nheld, capheld;
	buf held_text;
	uint64_t txn_commit;
	bool txn_skip;

	redis_agg_cols cols;
	change_value *scratch;
	size_t scratch_n;
	int flush_timer;
	int64_t flush_interval_ms, command_timeout_ms;
	redis_wait wait;        /* [sink] wait_replicas, wait_timeout */
	int err;
	bool destroying;
	bool warned_truncate;
	uint64_t bad_rows;
	buf args;

	sink_metrics metrics; /* the families registered by this instance, removed with it */
	metrics_counter *m_round_trips, *m_scripts;
	metrics_histogram *m_latency;
} rsink;

/* ---- metrics -------------------------------------------------------------------------------- */

static int read_connected(void *arg, double *v)
{
	const rsink *s = arg;
	*v = redis_link_healthy(&s->link) ? 1 : 0;
	return 0;
}

static const double latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30};

static int metrics_setup(rsink *s)
{
	if (s->env.metrics == NULL)
		return 0;
	const metrics_desc descs[] = {
		{.kind = METRICS_COUNTER, .name = "walcast_redis_round_trips_total",
		 .help = "Rounds sent to Redis (one pipelined round trip each, every org of the round in it)."},
		{.kind = METRICS_COUNTER, .name = "walcast_redis_scripts_total",
		 .help = "Per-org aggregate scripts sent to Redis (a resent round counts again)."},
		{.kind = METRICS_GAUGE, .name = "walcast_redis_connected", .help = "1 while the sink is connected to Redis."},
		{.kind = METRICS_HISTOGRAM, .name = "walcast_redis_round_latency_seconds",
		 .help = "Commit of a round's first transaction to Redis accepting the round, in seconds.",
		 .buckets = latency_buckets, .nbuckets = sizeof(latency_buckets) / sizeof(latency_buckets[0])},
	};
	sink_metrics *m = &s->metrics;
	int rc = sink_metrics_add(m, &s->env, "redis.metrics", &descs[0], &s->m_round_trips, NULL, NULL, NULL);
	if (rc == 0)
		rc = sink_metrics_add(m, &s->env, "redis.metrics", &descs[1], &s->m_scripts, NULL, NULL, NULL);
	if (rc == 0)
		rc = sink_metrics_add(m, &s->env, "redis.metrics", &descs[2], NULL, NULL, read_connected, s);
	if (rc == 0)
		rc = sink_metrics_add(m, &s->env, "redis.metrics", &descs[3], NULL, &s->m_latency, NULL, NULL);
	return rc;
}

/* ---- watermarks known at start ------------------------------------------------------------ */

static uint32_t org_hash(const rsink *s, const char *org)
{
	uint64_t h = s->seed;
	for (; *org; org++)
		h = (h ^ (unsigned char)*org) * 1099511628211ULL;
	return (uint32_t)(h ^ h >> 32);
}

static known_wm *known_find(const rsink *s, const char *org)
{
	hash_probe p = hash_index_probe(&s->kidx, org_hash(s, org));
	for (uint32_t i; hash_probe_next(&s->kidx, &p, &i);)
		if (strcmp(s->known[i].org, org) == 0)
			return &s->known[i];
	return NULL;
}

static int known_set(rsink *s, const char *org, uint64_t wm)
{
	known_wm *k = known_find(s, org);
	if (k != NULL) {
		if (wm > k->wm)
			k->wm = wm;
		return 0;
	}
	if (s->nknown == s->capknown) {
		size_t cap = s->capknown ? s->capknown * 2 : 64;
		known_wm *n = realloc(s->known, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		s->known = n;
		s->capknown = cap;
	}
	if (hash_index_reserve(&s->kidx, 1) < 0)
		return -ENOMEM;
	snprintf(s->known[s->nknown].org, sizeof(s->known[0].org), "%s", org);
	s->known[s->nknown].wm = wm;
	hash_index_insert(&s->kidx, org_hash(s, org), (uint32_t)s->nknown);
	s->nknown++;
	return 0;
}

/* Reads the global watermark and every org's watermark (blocking, bounded by the connect and
 * command timeouts). 0 or a negative errno with err. */
static int watermarks_load(rsink *s, int64_t timeout_ms, char err[SINK_ERROR_MAX])
{
	char cerr[REDIS_CONN_ERROR_MAX];
	redisContext *c = redis_connect_blocking(&s->url, timeout_ms, cerr);
	redisReply *r = NULL;
	int rc = 0;
	if (c == NULL) {
		snprintf(err, SINK_ERROR_MAX, "cannot read the watermarks: %s", cerr);
		rc = -ECONNREFUSED;
		goto cleanup;
	}
#define CMD(...)                                                                                         \
	do {                                                                                                 \
		freeReplyObject(r);                                                                              \
		r = redisCommand(c, __VA_ARGS__);                                                                \
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {                                                 \
			snprintf(err, SINK_ERROR_MAX, "redis=%s:%d: cannot read the watermarks: %s", s->url.host,    \
			         s->url.port, r ? r->str : c->errstr);                                               \
			rc = -EIO;                                                                                   \
			goto cleanup;                                                                                \
		}                                                                                                \
	} while (0)
	CMD("GET %s:wm", s->prefix);
	if (r->type == REDIS_REPLY_STRING && redis_agg_lsn_parse(r->str, r->len, &s->start_position) < 0) {
		snprintf(err, SINK_ERROR_MAX, "redis key %s:wm holds %s, not a watermark", s->prefix, r->str);
		rc = -EINVAL;
		goto cleanup;
	}
	CMD("SMEMBERS %s:" ORGS_INDEX, s->prefix);
	redisReply *orgs = r;
	r = NULL;
	for (size_t i = 0; i < orgs->elements; i++)
		redisAppendCommand(c, "GET %s:{%s}:wm", s->prefix, orgs->element[i]->str);
	for (size_t i = 0; i < orgs->elements && rc == 0; i++) {
		void *v = NULL;
		if (redisGetReply(c, &v) != REDIS_OK) {
			snprintf(err, SINK_ERROR_MAX, "redis=%s:%d: cannot read the watermarks: %s", s->url.host, s->url.port,
			         c->errstr);
			rc = -EIO;
			break;
		}
		redisReply *w = v;
		uint64_t wm = 0;
		if (w->type == REDIS_REPLY_STRING && redis_agg_lsn_parse(w->str, w->len, &wm) == 0)
			rc = known_set(s, orgs->element[i]->str, wm);
		freeReplyObject(w);
	}
	freeReplyObject(orgs);
#undef CMD
cleanup:
	freeReplyObject(r);
	if (c != NULL)
		redisFree(c);
	return rc;
}

/* ---- rounds -------------------------------------------------------------------------------- */

static void round_send(rsink *s);
static void maybe_send(rsink *s);

static void fail_fatal(rsink *s, int rc, const char *why)
{
	if (s->err == 0) {
		s->err = rc;
		log_error("redis.failed", "sink=%s: %s", s->env.name, why);
	}
}

static void global_reply_cb(redis_conn *c, void *reply, void *privdata)
{
	(void)c;
	(void)reply;
	(void)privdata;
}

static void round_accept(rsink *s)
{
	for (size_t i = 0; i < s->round.norgs; i++) {
		uint64_t last;
		const char *org = redis_agg_org_id(&s->round, i, NULL, &last);
		redis_api_round_accepted(s->api, org); /* the stats API's answers of org are out of date */
		if (known_set(s, org, last) < 0) {
			fail_fatal(s, -ENOMEM, "out of memory");
			return;
		}
	}
	uint64_t end = s->round.end_lsn;
	if (s->m_latency != NULL && s->round.first_commit_us != 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
		metrics_histogram_observe(s->m_latency, (double)(now_us - s->round.first_commit_us) / 1e6);
	}
	redis_agg_batch_clear(&s->round);
	s->round_active = false;
	s->round_failed = false;
	if (end > s->position) {
		s->position = end;
		/* the restart hint: every org's script up to end has been accepted */
		char key[300], lsn[17];
		snprintf(key, sizeof(key), "%s:wm", s->prefix);
		redis_agg_lsn_text(end, lsn);
		const char *argv[] = {"SET", key, lsn};
		size_t argvlen[] = {3, strlen(key), 16};
		if (redis_link_ready(&s->link) &&
		    redis_link_command(&s->link, 0, global_reply_cb, s, 3, argv, argvlen) < 0)
			log_warn("redis.global_wm", "sink=%s: cannot queue SET %s (only the restart point stays behind)",
			         s->env.name, key);
		if (s->env.progress != NULL)
			s->env.progress(s->env.env_arg);
	}
	maybe_send(s);
}

static void script_reply_cb(redis_conn *c, void *r, void *privdata)
{
	rsink *s = privdata;
	if (s->destroying)
		return;
	redisReply *reply = r;
	if (s->outstanding > 0)
		s->outstanding--;
	if (reply == NULL) {
		s->round_failed = true;
	} else if (reply->type == REDIS_REPLY_ERROR) {
		if (strncmp(reply->str, "WALCAST_STRADDLE", 16) == 0) {
			fail_fatal(s, -EPROTO, reply->str);
		} else if (!s->round_failed) {
			log_error("redis.script_failed", "sink=%s: %s; sending the round again after a reconnect",
			          s->env.name, reply->str);
		}
		s->round_failed = true;
	}
	if (s->outstanding > 0)
		return;
	if (!s->round_failed) {
		round_accept(s);
	} else if (reply != NULL && s->err == 0) {
		/* an error reply on a live connection (OOM, NOSCRIPT after SCRIPT FLUSH): reconnect, which
		 * loads the script again, and send the round again after the back-off */
		redis_link_reset(&s->link, "a script failed");
	}
}

/* WAIT's answer after a round's scripts: the replicas that have them. Fewer than wait_replicas:
 * WAIT again — the round, and so everything after it, stays unconfirmed until they catch up (a
 * failover to a replica that lacks it would otherwise lose a round PostgreSQL was told is
 * durable). Anything else is judged as a script's reply. */
static void wait_reply_cb(redis_conn *c, void *r, void *privdata)
{
	rsink *s = privdata;
	if (!s->destroying && !s->round_failed && redis_wait_judge(&s->wait, r) == 0) {
		if (redis_wait_send(&s->wait, s->conn, wait_reply_cb, s) == 0)
			return; /* the new WAIT takes this one's place among the round's replies */
		s->round_failed = true; /* not confirmed: the round is sent again after a reconnect */
	}
	script_reply_cb(c, r, privdata);
}

static void round_send(rsink *s)
{
	if (!s->round_active || s->err != 0 || !redis_link_ready(&s->link))
		return;
	s->round_failed = false;
	s->outstanding = 0;
	if (s->round_start_ms == 0)
		s->round_start_ms = loop_now_ms();
	if (s->round.norgs == 0) {
		round_accept(s);
		return;
	}
	char idx[300];
	snprintf(idx, sizeof(idx), "%s:" ORGS_INDEX, s->prefix);
	for (size_t i = 0; i < s->round.norgs; i++) {
		const char *org = redis_agg_org_id(&s->round, i, NULL, NULL);
		int rc = 0;
		if (known_find(s, org) == NULL) {
			const char *av[] = {"SADD", idx, org};
			size_t al[] = {4, strlen(idx), strlen(org)};
			rc = redis_link_command(&s->link, REDIS_CLUSTER_DURABLE, script_reply_cb, s, 3, av, al);
			if (rc == 0)
				s->outstanding++; /* on a cluster its node may differ: the round waits for it too */
		}
		int argc;
		const char **argv = NULL;
		size_t *argvlen = NULL;
		if (rc == 0)
			rc = redis_agg_org_command(&s->round, i, &s->aconf, s->sha, &s->args, &argc, &argv, &argvlen);
		if (rc == 0)
			rc = redis_link_command(&s->link, REDIS_CLUSTER_DURABLE, script_reply_cb, s, argc, argv, argvlen);
		free(argv);
		free(argvlen);
		if (rc < 0) {
			s->round_failed = true;
			if (s->outstanding == 0)
				redis_link_reset(&s->link, "cannot queue a command");
			return;
		}
		s->outstanding++;
		if (s->m_scripts != NULL)
			metrics_counter_inc(s->m_scripts);
	}
	if (s->wait.replicas > 0 && s->conn != NULL) { /* on a cluster the router waits, node by node */
		if (redis_wait_send(&s->wait, s->conn, wait_reply_cb, s) < 0) {
			s->round_failed = true;
			return; /* the scripts' replies come, and the round fails: sent again after a reconnect */
		}
		s->outstanding++;
	}
	if (s->m_round_trips != NULL)
		metrics_counter_inc(s->m_round_trips);
}

/* Starts a round when none is in flight and something waits: transactions with deltas, or only
 * an end LSN to reach. */
static void maybe_send(rsink *s)
{
	if (s->round_active || s->err != 0 || !s->wm_known)
		return;
	if (s->open.norgs == 0 && s->open.end_lsn <= s->position)
		return;
	if (s->flush_timer != 0) {
		loop_timer_cancel(s->env.loop, s->flush_timer);
		s->flush_timer = 0;
	}
	redis_agg_batch_move(&s->round, &s->open);
	s->round_active = true;
	s->round_start_ms = 0;
	if (s->round.norgs == 0) {
		/* nothing to apply: the end LSN is reached once the rounds before it were accepted */
		s->round_start_ms = loop_now_ms();
		round_accept(s);
		return;
	}
	round_send(s);
}

static void flush_cb(loop *l, int id, void *arg)
{
	rsink *s = arg;
	s->flush_timer = 0;
	maybe_send(s);
}

static void script_load_cb(redis_conn *c, void *r, void *privdata)
{
	rsink *s = privdata;
	redisReply *reply = r;
	if (s->destroying || reply == NULL)
		return;
	if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, s->sha) != 0)
		log_error("redis.script_load", "sink=%s: SCRIPT LOAD answered %s, expected %s", s->env.name,
		          reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_ERROR ? reply->str : "?", s->sha);
}

static int merge_row(rsink *s, const redis_agg_event *ev, int sign, uint64_t commit_lsn);

/* The watermarks are known at last: the rows held meanwhile are filtered and merged. */
static void watermarks_known(rsink *s)
{
	s->wm_known = true;
	s->wm_loading = false;
	s->start_position = s->wm_global;
	size_t replayed = 0;
	for (size_t i = 0; i < s->nheld && s->err == 0; i++) {
		held_row *h = &s->held[i];
		h->ev.kind = s->held_text.data + h->kind;
		h->ev.direction = s->held_text.data + h->direction;
		h->ev.status = s->held_text.data + h->status;
		if (h->commit_lsn < s->start_position)
			continue; /* every org holds it */
		if (merge_row(s, &h->ev, h->sign, h->commit_lsn) < 0)
			return;
		replayed++;
	}
	char lsn[LSN_TEXT_MAX];
	log_info("redis.watermarks", "sink=%s position=%s orgs=%zu: watermarks read; %zu of %zu rows held meanwhile "
	         "merged", s->env.name, lsn_format(s->start_position, lsn), s->nknown, replayed, s->nheld);
	free(s->held);
	s->held = NULL;
	s->nheld = s->capheld = 0;
	buf_fini(&s->held_text);
	if (s->start_position > s->position) {
		s->position = s->start_position;
		if (s->env.progress != NULL)
			s->env.progress(s->env.env_arg);
	}
	maybe_send(s);
}

typedef struct wm_get {
	rsink *s;
	char org[37];
} wm_get;

static void wm_get_cb(redis_conn *c, void *r, void *privdata)
{
	wm_get *g = privdata;
	rsink *s = g->s;
	redisReply *reply = r;
	uint64_t wm = 0;
	bool ok = !s->destroying && s->wm_loading && reply != NULL;
	if (ok && reply->type == REDIS_REPLY_STRING && redis_agg_lsn_parse(reply->str, reply->len, &wm) == 0 &&
	    known_set(s, g->org, wm) < 0)
		fail_fatal(s, -ENOMEM, "out of memory");
	free(g);
	if (s->destroying)
		return;
	if (!ok) {
		s->wm_loading = false;
		return;
	}
	if (--s->wm_pending == 0 && s->err == 0)
		watermarks_known(s);
}

static void wm_orgs_cb(redis_conn *c, void *r, void *privdata)
{
	rsink *s = privdata;
	redisReply *reply = r;
	if (s->destroying || !s->wm_loading)
		return;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		if (reply != NULL)
			log_error("redis.watermarks", "sink=%s: SMEMBERS %s:" ORGS_INDEX " did not answer a set", s->env.name,
			          s->prefix);
		s->wm_loading = false;
		return;
	}
	s->wm_pending = 1; /* held until every GET is queued */
	for (size_t i = 0; i < reply->elements; i++) {
		wm_get *g = calloc(1, sizeof(*g));
		if (g == NULL) {
			fail_fatal(s, -ENOMEM, "out of memory");
			return;
		}
		g->s = s;
		snprintf(g->org, sizeof(g->org), "%s", reply->element[i]->str);
		char key[300];
		snprintf(key, sizeof(key), "%s:{%s}:wm", s->prefix, g->org);
		const char *argv[] = {"GET", key};
		size_t argvlen[] = {3, strlen(key)};
		if (redis_link_command(&s->link, 0, wm_get_cb, g, 2, argv, argvlen) < 0) {
			free(g);
			s->wm_loading = false;
			return;
		}
		s->wm_pending++;
	}
	if (--s->wm_pending == 0)
		watermarks_known(s);
}

static void wm_global_cb(redis_conn *c, void *r, void *privdata)
{
	rsink *s = privdata;
	redisReply *reply = r;
	if (s->destroying || !s->wm_loading)
		return;
	if (reply != NULL && reply->type == REDIS_REPLY_STRING &&
	    redis_agg_lsn_parse(reply->str, reply->len, &s->wm_global) < 0)
		fail_fatal(s, -EINVAL, "the global watermark in Redis is not a watermark");
}

/* Reads the watermarks on the live connection (Redis was unreachable at start). */
static void watermarks_read(rsink *s)
{
	char g[300], o[300];
	snprintf(g, sizeof(g), "%s:wm", s->prefix);
	snprintf(o, sizeof(o), "%s:" ORGS_INDEX, s->prefix);
	const char *av1[] = {"GET", g}, *av2[] = {"SMEMBERS", o};
	size_t al1[] = {3, strlen(g)}, al2[] = {8, strlen(o)};
	s->wm_loading = true;
	s->wm_global = 0;
	if (redis_link_command(&s->link, 0, wm_global_cb, s, 2, av1, al1) < 0 ||
	    redis_link_command(&s->link, 0, wm_orgs_cb, s, 2, av2, al2) < 0)
		s->wm_loading = false;
}

/* Loads the script on conn (the connection, or a cluster node's). false when it cannot. */
static bool script_load(rsink *s, redis_conn *conn)
{
	const char *argv[] = {"SCRIPT", "LOAD", REDIS_AGG_SCRIPT};
	size_t argvlen[] = {6, 4, strlen(REDIS_AGG_SCRIPT)};
	return redis_conn_command(conn, script_load_cb, s, 3, argv, argvlen) == 0;
}

static void node_up_cb(void *arg, redis_conn *node)
{
	(void)script_load(arg, node);
}

static void conn_up_cb(void *arg)
{
	rsink *s = arg;
	if (s->conn != NULL && !script_load(s, s->conn))
		return;
	if (!s->wm_known) {
		watermarks_read(s);
		return;
	}
	if (s->round_active)
		round_send(s);
	else
		maybe_send(s);
}

static void conn_down_cb(void *arg, const char *why)
{
	rsink *s = arg;
	/* every reply callback of the round has run with NULL: the round waits for the reconnect */
	s->outstanding = 0;
}

/* ---- the sink ------------------------------------------------------------------------------ */

static void redis_destroy(void *impl);

static int redis_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	const redis_sink_conf *c = conf;
	rsink *s = calloc(1, sizeof(*s));
	int rc = s ? 0 : -ENOMEM;
	if (rc < 0)
		goto fail;
	s->env = *env;
	buf_init(&s->args);
	buf_init(&s->held_text);
	s->seed = (uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ULL;
	if ((rc = hash_index_init(&s->kidx)) < 0 || (rc = redis_agg_batch_init(&s->open)) < 0 ||
	    (rc = redis_agg_batch_init(&s->round)) < 0)
		goto fail;
	char uerr[REDIS_CONN_ERROR_MAX];
	if ((rc = c->cluster ? redis_cluster_url_parse(c->url, s->seeds, REDIS_CLUSTER_SEEDS_MAX, &s->nseeds, uerr)
	                     : redis_url_parse(c->url, &s->url, uerr)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "%s", uerr);
		goto fail;
	}
	const char *dot = strchr(c->table, '.');
	if (dot == NULL || dot == c->table || dot[1] == '\0') {
		snprintf(err, SINK_ERROR_MAX, "table = %s: not schema.table", c->table);
		rc = -EINVAL;
		goto fail;
	}
	if (c->prefix[0] == '\0' || strpbrk(c->prefix, "{} ") != NULL) {
		snprintf(err, SINK_ERROR_MAX, "prefix = \"%s\": empty, or holds a brace or a space", c->prefix);
		rc = -EINVAL;
		goto fail;
	}
	s->schema = strndup(c->table, (size_t)(dot - c->table));
	s->table = strdup(dot + 1);
	s->prefix = strdup(c->prefix);
	s->missed = strdup(c->missed_statuses);
	if (s->schema == NULL || s->table == NULL || s->prefix == NULL || s->missed == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	s->aconf = (redis_agg_conf){.prefix = s->prefix, .missed_statuses = s->missed, .hour_window_h = c->hour_window};
	s->flush_interval_ms = c->flush_interval_ms;
	s->command_timeout_ms = c->command_timeout_ms;
	s->wait = (redis_wait){.name = env->name, .replicas = c->wait_replicas, .timeout_ms = c->wait_timeout_ms};
	if ((rc = redis_wait_check(&s->wait, c->command_timeout_ms, uerr)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "%s", uerr);
		goto fail;
	}
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)REDIS_AGG_SCRIPT, strlen(REDIS_AGG_SCRIPT), md);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(s->sha + 2 * i, 3, "%02x", md[i]);

	if (c->cluster)
		s->url = s->seeds[0];
	/* on a cluster the watermarks are read through the router once it knows the map (rows are
	 * held meanwhile, as when Redis does not answer at start) */
	rc = c->cluster ? 0 : watermarks_load(s, c->connect_timeout_ms, err);
	if (c->cluster) {
		if (env->loop == NULL) {
			snprintf(err, SINK_ERROR_MAX, "cluster = on needs the daemon's loop");
			rc = -EINVAL;
			goto fail;
		}
	} else if (rc == -ECONNREFUSED && env->loop != NULL) {
		/* Redis is not there: start anyway; nothing is confirmed until it answers and the
		 * watermarks are read (rows are held meanwhile, within pipeline.max_pending) */
		log_warn("redis.start_unreachable", "sink=%s: %s; starting without them: nothing is confirmed until "
		         "Redis answers", env->name, err);
		err[0] = '\0';
		rc = 0;
	} else if (rc < 0) {
		goto fail;
	} else {
		s->wm_known = true;
	}
	s->position = s->start_position;
	char lsn[LSN_TEXT_MAX];
	if (s->wm_known)
		log_info("redis.start", "sink=%s redis=%s:%d db=%d prefix=%s position=%s orgs=%zu", env->name, s->url.host,
		         s->url.port, s->url.db, s->prefix, lsn_format(s->position, lsn), s->nknown);

	if ((rc = metrics_setup(s)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "metrics: %s", strerror(-rc));
		goto fail;
	}
	if (env->loop != NULL) {
		if (c->cluster) {
			redis_cluster_cbs cbs = {.up = conn_up_cb, .down = conn_down_cb, .node_up = node_up_cb, .arg = s};
			redis_cluster_timing t = {.connect_timeout_ms = c->connect_timeout_ms, .backoff_min_ms = 100,
			                          .backoff_max_ms = c->reconnect_max_ms, .reply_timeout_ms = c->command_timeout_ms};
			rc = redis_cluster_create(env->loop, env->name, s->seeds, s->nseeds, &t, &s->wait, CLUSTER_QUEUE_MAX,
			                          &cbs, &s->cluster);
		} else {
			redis_conn_cbs cbs = {.up = conn_up_cb, .down = conn_down_cb, .arg = s};
			rc = redis_conn_create(env->loop, env->name, &s->url, c->connect_timeout_ms, 100, c->reconnect_max_ms,
			                       &cbs, &s->conn);
			if (rc == 0)
				rc = redis_conn_set_reply_timeout(s->conn, c->command_timeout_ms);
		}
		if (rc < 0)
			goto fail;
		s->link = (redis_link){.conn = s->conn, .cluster = s->cluster};
		if (env->http != NULL && (rc = redis_api_create(env, &s->link, s->prefix, &s->api, err)) < 0)
			goto fail;
	}
	if (env->subscribe == NULL) {
		snprintf(err, SINK_ERROR_MAX, "no audience to subscribe to");
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = env->subscribe(env->env_arg, s, NULL, true, false, &s->sub)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "cannot subscribe: %s", strerror(-rc));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	if (rc == -ENOMEM && err[0] == '\0')
		snprintf(err, SINK_ERROR_MAX, "out of memory");
	redis_destroy(s);
	return rc;
}

static void redis_destroy(void *impl)
{
	rsink *s = impl;
	if (s == NULL)
		return;
	s->destroying = true;
	if (s->sub != NULL && s->env.unsubscribe != NULL)
		s->env.unsubscribe(s->env.env_arg, s->sub);
	if (s->flush_timer > 0)
		loop_timer_cancel(s->env.loop, s->flush_timer);
	redis_conn_destroy(s->conn);
	redis_cluster_destroy(s->cluster);
	redis_api_destroy(s->api);
	sink_metrics_remove(&s->metrics, &s->env);
	redis_agg_batch_fini(&s->open);
	redis_agg_batch_fini(&s->round);
	hash_index_fini(&s->kidx);
	free(s->known);
	free(s->scratch);
	free(s->held);
	buf_fini(&s->held_text);
	buf_fini(&s->args);
	free(s->schema);
	free(s->table);
	free(s->prefix);
	free(s->missed);
	free(s);
}

static uint64_t redis_position(void *impl)
{
	return ((rsink *)impl)->position;
}

static int redis_begin(void *impl, const change_txn *txn)
{
	rsink *s = impl;
	if (s->err != 0)
		return s->err;
	/* every org holds what ends at or before the global watermark read at start */
	s->txn_skip = txn->commit_lsn < s->start_position;
	s->txn_commit = txn->commit_lsn;
	return 0;
}

/* Merges one row's contribution, unless its org already holds the transaction. */
static int merge_row(rsink *s, const redis_agg_event *ev, int sign, uint64_t commit_lsn)
{
	const known_wm *k = known_find(s, ev->org);
	if (k != NULL && commit_lsn <= k->wm)
		return 0; /* replayed: that org's script already applied this transaction */
	int rc = redis_agg_add(&s->open, &s->aconf, ev, sign, commit_lsn, (int64_t)time(NULL));
	if (rc < 0)
		fail_fatal(s, rc, "out of memory merging deltas");
	return rc;
}

/* Keeps one row's contribution until the watermarks are known. */
static int hold_row(rsink *s, const redis_agg_event *ev, int sign)
{
	if (s->nheld == s->capheld) {
		size_t cap = s->capheld ? s->capheld * 2 : 256;
		held_row *n = realloc(s->held, cap * sizeof(*n));
		if (n == NULL) {
			fail_fatal(s, -ENOMEM, "out of memory holding rows");
			return s->err;
		}
		s->held = n;
		s->capheld = cap;
	}
	held_row *h = &s->held[s->nheld];
	*h = (held_row){.ev = *ev, .sign = sign, .commit_lsn = s->txn_commit};
	h->kind = s->held_text.len;
	int rc = buf_append(&s->held_text, ev->kind, strlen(ev->kind) + 1);
	h->direction = s->held_text.len;
	if (rc == 0)
		rc = buf_append(&s->held_text, ev->direction, strlen(ev->direction) + 1);
	h->status = s->held_text.len;
	if (rc == 0)
		rc = buf_append(&s->held_text, ev->status, strlen(ev->status) + 1);
	if (rc < 0) {
		fail_fatal(s, rc, "out of memory holding rows");
		return s->err;
	}
	h->ev.kind = h->ev.direction = h->ev.status = NULL;
	s->nheld++;
	return 0;
}

/* Adds one tuple's contribution: merged, or held while the watermarks are not known. */
static int add_tuple(rsink *s, const change_value *tuple, int sign)
{
	redis_agg_event ev;
	char err[REDIS_AGG_ERROR_MAX];
	if (redis_agg_event_parse(&s->cols, tuple, &ev, err) < 0) {
		if (s->bad_rows++ % 1000 == 0)
			log_error("redis.bad_row", "sink=%s commit_lsn=%" PRIX64 ": %s; the row is left out of the aggregates "
			          "(%" PRIu64 " so far)", s->env.name, s->txn_commit, err, s->bad_rows);
		return 0;
	}
	if (!s->wm_known)
		return hold_row(s, &ev, sign);
	return merge_row(s, &ev, sign, s->txn_commit);
}

static int redis_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	rsink *s = impl;
	const change *c = d->view;
	if (s->err != 0)
		return s->err;
	if (c->txn == NULL || c->rel == NULL || s->txn_skip || !d->bypass)
		return 0;
	if (strcmp(c->rel->name, s->table) != 0 || strcmp(c->rel->schema, s->schema) != 0)
		return 0;
	if (c->action == CHANGE_TRUNCATE) {
		if (!s->warned_truncate)
			log_error("redis.truncate", "sink=%s table=%s.%s: a TRUNCATE cannot be taken back row by row; the "
			          "aggregates no longer match the table (rebuild them)", s->env.name, s->schema, s->table);
		s->warned_truncate = true;
		return 0;
	}
	char err[REDIS_AGG_ERROR_MAX];
	if (s->cols.rel_id != c->rel->id || s->cols.version != c->rel->version || s->cols.org == s->cols.contact) {
		if (redis_agg_cols_find(c->rel, &s->cols, err) < 0) {
			fail_fatal(s, -EINVAL, err);
			return s->err;
		}
	}
	if ((c->action == CHANGE_UPDATE || c->action == CHANGE_DELETE) && c->old_tuple == NULL) {
		char why[256];
		snprintf(why, sizeof(why), "table=%s.%s: an %s without the old row: the aggregates need REPLICA IDENTITY "
		         "FULL (ALTER TABLE %s.%s REPLICA IDENTITY FULL)", s->schema, s->table,
		         change_action_name(c->action), s->schema, s->table);
		fail_fatal(s, -EINVAL, why);
		return s->err;
	}
	int rc = 0;
	if (c->action == CHANGE_UPDATE || c->action == CHANGE_DELETE)
		rc = add_tuple(s, c->old_tuple, -1);
	if (rc == 0 && (c->action == CHANGE_INSERT || c->action == CHANGE_UPDATE)) {
		const change_value *nt = c->new_tuple;
		if (c->action == CHANGE_UPDATE) {
			/* an unchanged TOASTed value: the old row's (FULL identity carries it) */
			if (s->scratch_n < (size_t)c->rel->ncols) {
				change_value *n = realloc(s->scratch, (size_t)c->rel->ncols * sizeof(*n));
				if (n == NULL) {
					fail_fatal(s, -ENOMEM, "out of memory");
					return s->err;
				}
				s->scratch = n;
				s->scratch_n = (size_t)c->rel->ncols;
			}
			for (int i = 0; i < c->rel->ncols; i++)
				s->scratch[i] = nt[i].kind == VALUE_UNCHANGED ? c->old_tuple[i] : nt[i];
			nt = s->scratch;
		}
		rc = add_tuple(s, nt, +1);
	}
	return rc;
}

static int redis_commit(void *impl, const change_txn *txn)
{
	rsink *s = impl;
	if (s->err != 0)
		return s->err;
	if (s->txn_skip) {
		s->txn_skip = false;
		return 0;
	}
	if (txn->end_lsn > s->open.end_lsn)
		s->open.end_lsn = txn->end_lsn;
	if (s->open.first_commit_us == 0)
		s->open.first_commit_us = txn->commit_time;
	if (s->env.loop == NULL || s->round_active || s->flush_timer != 0)
		return 0;
	int id = loop_timer_add(s->env.loop, s->flush_interval_ms, flush_cb, s);
	if (id < 0) {
		maybe_send(s);
		return 0;
	}
	s->flush_timer = id;
	return 0;
}

static void redis_abort(void *impl)
{
	/* deltas are merged as changes are delivered, which happens only at commit */
	(void)impl;
}

static size_t redis_pending_bytes(void *impl)
{
	rsink *s = impl;
	return s->open.bytes + s->round.bytes + s->nheld * sizeof(held_row) + s->held_text.len;
}

static bool redis_healthy(void *impl)
{
	rsink *s = impl;
	if (s->err != 0 || !redis_link_healthy(&s->link) || !s->wm_known)
		return false;
	return !s->round_active || loop_now_ms() - s->round_start_ms <= s->command_timeout_ms;
}

static int redis_flush(void *impl)
{
	rsink *s = impl;
	if (s->err != 0)
		return s->err;
	maybe_send(s);
	return 0;
}

const sink_ops redis_sink_ops = {
	.name = "redis",
	.kind = SINK_DURABLE,
	.keys = redis_keys,
	.nkeys = NKEYS,
	.conf_size = sizeof(redis_sink_conf),
	.create = redis_create,
	.destroy = redis_destroy,
	.position = redis_position,
	.begin = redis_begin,
	.deliver = redis_deliver,
	.commit = redis_commit,
	.abort = redis_abort,
	.pending_bytes = redis_pending_bytes,
	.healthy = redis_healthy,
	.flush = redis_flush,
};
