/*
 * redis_cluster — the Redis Cluster router (see redis_cluster.h).
 *
 * Every command not answered yet is in exactly one list: the router's `waiting` (no usable node:
 * the map is being read again, the node is reconnecting, a back-off runs), the router's `sent`
 * (written on a node's connection, its reply expected), or a node's `held` (a durable command
 * that succeeded, its reply copied, waiting for the node's WAIT). A zero-delay timer (the kick)
 * dispatches the waiting commands and closes the connections of nodes the map no longer names,
 * so a hiredis callback never frees a connection and never walks the waiting list it may be
 * changing. A command the caller was already told about (reset) is an orphan: whatever comes for
 * it is dropped.
 *
 * The map is read again (CLUSTER SLOTS, on the first connected node found) after a MOVED, a
 * retryable error, a lost connection or a WAIT that timed out; at most one read is in flight,
 * and reads back off from backoff_min_ms (doubling up to backoff_max_ms) until a complete map is
 * read and a command succeeds.
 */
#include "redis_cluster.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define REDIRECTS_AT_ONCE 5 /* redirections followed at once; then the command waits for the map */

/* ---- key slots --------------------------------------------------------------------------------- */

static uint16_t crc16_xmodem(const unsigned char *p, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

uint16_t redis_cluster_key_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len);
	if (open != NULL) {
		size_t rest = len - (size_t)(open + 1 - key);
		const char *close = memchr(open + 1, '}', rest);
		if (close != NULL && close > open + 1)
			return crc16_xmodem((const unsigned char *)open + 1, (size_t)(close - open - 1)) & 16383;
	}
	return crc16_xmodem((const unsigned char *)key, len) & 16383;
}

static bool word_is(const char *s, size_t len, const char *w)
{
	return len == strlen(w) && strncasecmp(s, w, len) == 0;
}

int redis_cluster_command_key(int argc, const char *const *argv, const size_t *argvlen)
{
	if (argc < 2)
		return -EINVAL;
	if (word_is(argv[0], argvlen[0], "EVAL") || word_is(argv[0], argvlen[0], "EVALSHA") ||
	    word_is(argv[0], argvlen[0], "FCALL")) {
		if (argc < 4 || argvlen[2] == 0 || argvlen[2] > 9)
			return -EINVAL;
		char n[10];
		memcpy(n, argv[2], argvlen[2]);
		n[argvlen[2]] = '\0';
		return atol(n) >= 1 && 3 + atol(n) <= argc ? 3 : -EINVAL;
	}
	return 1;
}

/* ---- redirections ------------------------------------------------------------------------------ */

static bool parse_redirect(const char *s, size_t len, redis_cluster_redirect *out)
{
	char text[REDIS_CLUSTER_HOST_MAX + 32];
	if (len >= sizeof(text))
		return false;
	memcpy(text, s, len);
	text[len] = '\0';
	const char *p = strchr(text, ' ');
	char *end;
	long slot = p ? strtol(p + 1, &end, 10) : -1;
	if (p == NULL || end == p + 1 || *end != ' ' || slot < 0 || slot >= REDIS_CLUSTER_SLOTS)
		return false;
	const char *addr = end + 1, *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof(out->host))
		return false;
	long port = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end != '\0' || port < 1 || port > 65535)
		return false;
	out->slot = (uint16_t)slot;
	memcpy(out->host, addr, (size_t)(colon - addr));
	out->host[colon - addr] = '\0';
	out->port = (int)port;
	return true;
}

static bool starts(const char *s, size_t len, const char *w)
{
	size_t n = strlen(w);
	return len >= n && memcmp(s, w, n) == 0 && (len == n || s[n] == ' ');
}

redis_cluster_error redis_cluster_error_parse(const char *s, size_t len, redis_cluster_redirect *out)
{
	redis_cluster_error k = REDIS_CLUSTER_ERR_OTHER;
	if (starts(s, len, "MOVED"))
		k = REDIS_CLUSTER_ERR_MOVED;
	else if (starts(s, len, "ASK"))
		k = REDIS_CLUSTER_ERR_ASK;
	else if (starts(s, len, "CLUSTERDOWN") || starts(s, len, "TRYAGAIN") || starts(s, len, "LOADING") ||
	         starts(s, len, "MASTERDOWN"))
		return REDIS_CLUSTER_ERR_RETRY;
	if (k == REDIS_CLUSTER_ERR_OTHER)
		return k;
	redis_cluster_redirect r = {.kind = k};
	if (!parse_redirect(s, len, &r))
		return REDIS_CLUSTER_ERR_OTHER;
	*out = r;
	return k;
}

/* ---- the URL ------------------------------------------------------------------------------------ */

int redis_cluster_url_parse(const char *url, redis_url *seeds, size_t max, size_t *n, char err[REDIS_CONN_ERROR_MAX])
{
	static const char plain[] = "redis://";
	if (strncmp(url, plain, sizeof(plain) - 1) != 0) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: a cluster's is redis://[[user]:password@]host[:port][,host[:port]...]",
		         url);
		return -EINVAL;
	}
	const char *p = url + sizeof(plain) - 1, *at = strchr(p, '@');
	const char *hosts = at != NULL ? at + 1 : p;
	size_t auth = (size_t)(hosts - p), hl = strcspn(hosts, "/");
	const char *tail = hosts + hl;
	*n = 0;
	for (const char *a = hosts; a < tail; a += strcspn(a, ",/") + (a[strcspn(a, ",/")] == ',')) {
		size_t len = strcspn(a, ",/");
		char one[1024];
		if (*n == max || snprintf(one, sizeof(one), "%s%.*s%.*s%s", plain, (int)auth, p, (int)len, a, tail) >=
		                     (int)sizeof(one)) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: more than %zu nodes, or too long", url, max);
			return -EINVAL;
		}
		if (redis_url_parse(one, &seeds[*n], err) < 0)
			return -EINVAL;
		if (seeds[*n].db != 0) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: a Redis Cluster has only database 0", url);
			return -EINVAL;
		}
		++*n;
	}
	if (*n == 0 || tail[-1] == ',') {
		snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: no host", url);
		return -EINVAL;
	}
	return 0;
}

/* ---- the map ----------------------------------------------------------------------------------- */

void redis_cluster_map_init(redis_cluster_map *m)
{
	m->nodes = NULL;
	m->nnodes = m->cap = 0;
	for (size_t i = 0; i < REDIS_CLUSTER_SLOTS; i++)
		m->slot[i] = -1;
}

void redis_cluster_map_fini(redis_cluster_map *m)
{
	free(m->nodes);
	m->nodes = NULL;
	m->nnodes = m->cap = 0;
}

int redis_cluster_map_node(redis_cluster_map *m, const char *host, int port, bool add)
{
	for (size_t i = 0; i < m->nnodes; i++)
		if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
			return (int)i;
	if (!add)
		return -ENOENT;
	if (strlen(host) >= REDIS_CLUSTER_HOST_MAX)
		return -EINVAL;
	if (m->nnodes == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 8;
		redis_cluster_node *n = realloc(m->nodes, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		m->nodes = n;
		m->cap = cap;
	}
	redis_cluster_node *n = &m->nodes[m->nnodes];
	*n = (redis_cluster_node){.port = port};
	snprintf(n->host, sizeof(n->host), "%s", host);
	return (int)m->nnodes++;
}

/* The address of a node entry of CLUSTER SLOTS ([host, port, id, ...]). */
static bool slots_addr(const redisReply *e, const char *default_host, const char **host, int *port)
{
	*host = default_host, *port = 0; /* set on every path: callers that checked the map before ignore the result */
	if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[1]->type != REDIS_REPLY_INTEGER || e->element[1]->integer < 1 || e->element[1]->integer > 65535)
		return false;
	*host = e->element[0]->len > 0 && strcmp(e->element[0]->str, "?") != 0 ? e->element[0]->str : default_host;
	*port = (int)e->element[1]->integer;
	return true;
}

int redis_cluster_map_apply_slots(redis_cluster_map *m, const struct redisReply *r, const char *default_host,
                                  char err[REDIS_CONN_ERROR_MAX])
{
	if (r->type != REDIS_REPLY_ARRAY) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "CLUSTER SLOTS did not answer an array");
		return -EPROTO;
	}
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		const char *host;
		int port;
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER || e->element[0]->integer < 0 ||
		    e->element[1]->integer >= REDIS_CLUSTER_SLOTS || e->element[0]->integer > e->element[1]->integer) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "CLUSTER SLOTS: entry %zu is not [first, last, master...]", i);
			return -EPROTO;
		}
		for (size_t j = 2; j < e->elements; j++)
			if (!slots_addr(e->element[j], default_host, &host, &port)) {
				snprintf(err, REDIS_CONN_ERROR_MAX, "CLUSTER SLOTS: entry %zu names a node without an address", i);
				return -EPROTO;
			}
	}
	/* well formed: add every address first (the only step that can fail), then rewrite */
	for (size_t i = 0; i < r->elements; i++)
		for (size_t j = 2; j < r->element[i]->elements; j++) {
			const char *host;
			int port;
			(void)slots_addr(r->element[i]->element[j], default_host, &host, &port);
			int rc = redis_cluster_map_node(m, host, port, true);
			if (rc < 0)
				return rc;
		}
	for (size_t i = 0; i < m->nnodes; i++)
		m->nodes[i].present = m->nodes[i].master = false, m->nodes[i].replicas = 0;
	for (size_t s = 0; s < REDIS_CLUSTER_SLOTS; s++)
		m->slot[s] = -1;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		int idx[64];
		size_t n = e->elements - 2 < 64 ? e->elements - 2 : 64;
		for (size_t j = 0; j < n; j++) {
			const char *host;
			int port;
			(void)slots_addr(e->element[2 + j], default_host, &host, &port);
			idx[j] = redis_cluster_map_node(m, host, port, false);
			m->nodes[idx[j]].present = true;
		}
		redis_cluster_node *master = &m->nodes[idx[0]];
		master->master = true;
		master->replicas = (int)n - 1; /* the same for each of its ranges */
		for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
			m->slot[s] = idx[0];
	}
	return 0;
}

int redis_cluster_map_move(redis_cluster_map *m, uint16_t slot, const char *host, int port)
{
	int i = redis_cluster_map_node(m, host, port, true);
	if (i < 0)
		return i;
	m->nodes[i].present = m->nodes[i].master = true;
	m->slot[slot % REDIS_CLUSTER_SLOTS] = i;
	return 0;
}

bool redis_cluster_map_complete(const redis_cluster_map *m)
{
	for (size_t s = 0; s < REDIS_CLUSTER_SLOTS; s++)
		if (m->slot[s] < 0)
			return false;
	return true;
}

/* ---- the router: state ------------------------------------------------------------------------- */

typedef struct rc_cmd rc_cmd;

typedef struct rc_list {
	rc_cmd *head, *tail;
} rc_list;

struct rc_cmd {
	rc_cmd *prev, *next;
	rc_list *list;
	redis_cluster *rc;
	redis_conn_reply_cb cb;
	void *privdata;
	unsigned flags;
	uint16_t slot;
	int ask_node;        /* -1, or the node an ASK named: sent there once, after ASKING */
	unsigned redirects;  /* redirections followed at once in a row */
	int node;            /* where it was sent last */
	bool orphan;         /* the caller has been answered (reset): drop what comes */
	redisReply *reply;   /* held: a copy of the success reply */
	int argc;
	const char **argv;   /* argv[i] and the strings in one allocation with the command */
	size_t *argvlen;
};

typedef struct rc_node {
	redis_cluster *rc;
	int index;
	redis_conn *conn;
	rc_list held;        /* durable successes waiting for WAIT */
	bool waiting_ack;    /* a WAIT is in flight */
	redis_wait wait;     /* the router's (its own "behind" state) */
} rc_node;

struct redis_cluster {
	loop *l;
	char *name;
	redis_url seed;      /* the first seed: its password and db go to every node */
	int64_t connect_timeout_ms, backoff_min_ms, backoff_max_ms, backoff_ms, reply_timeout_ms;
	redis_wait wait;     /* replicas 0: durable commands are not waited for */
	size_t queue_max, ncmds;
	redis_cluster_cbs cbs;
	redis_cluster_map map;
	rc_node **nodes;     /* parallel to map.nodes (one more for the seed before the first map) */
	size_t nnodes;
	rc_list waiting, sent;
	bool ready;          /* the map is known (and no reset is pending) */
	bool refreshing;     /* a CLUSTER SLOTS is in flight */
	bool destroying;
	int refresh_timer, kick_timer;
	int64_t last_refresh_ms;
	size_t next_node;    /* where the next map read starts looking for a connected node */
	uint64_t epoch;
};

static void list_push(rc_list *l, rc_cmd *x, bool front)
{
	x->list = l;
	x->prev = front ? NULL : l->tail;
	x->next = front ? l->head : NULL;
	if (front) {
		if (l->head != NULL)
			l->head->prev = x;
		else
			l->tail = x;
		l->head = x;
	} else {
		if (l->tail != NULL)
			l->tail->next = x;
		else
			l->head = x;
		l->tail = x;
	}
}

static void list_remove(rc_cmd *x)
{
	rc_list *l = x->list;
	if (l == NULL)
		return;
	if (x->prev != NULL)
		x->prev->next = x->next;
	else
		l->head = x->next;
	if (x->next != NULL)
		x->next->prev = x->prev;
	else
		l->tail = x->prev;
	x->prev = x->next = NULL;
	x->list = NULL;
}

static void cmd_free(rc_cmd *x)
{
	list_remove(x);
	x->rc->ncmds--;
	freeReplyObject(x->reply);
	free(x);
}

/* Answers the caller (reply may be NULL) and frees x. */
static void cmd_finish(rc_cmd *x, redis_conn *conn, void *reply)
{
	list_remove(x);
	redis_conn_reply_cb cb = x->cb;
	void *privdata = x->privdata;
	bool orphan = x->orphan;
	x->orphan = true;
	if (!orphan)
		cb(conn, reply, privdata);
	cmd_free(x);
}

/* ---- the router: the map and the kick ------------------------------------------------------------- */

static void kick(redis_cluster *rc);
static void refresh_request(redis_cluster *rc);
static void node_up_cb(void *arg);
static void node_down_cb(void *arg, const char *why);

/* The connection of node i, created when missing. */
static int node_connect(redis_cluster *rc, size_t i)
{
	while (rc->nnodes <= i) {
		rc_node **n = realloc(rc->nodes, (rc->nnodes + 1) * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		rc->nodes = n;
		if ((n[rc->nnodes] = calloc(1, sizeof(rc_node))) == NULL)
			return -ENOMEM;
		n[rc->nnodes]->rc = rc;
		n[rc->nnodes]->index = (int)rc->nnodes;
		rc->nnodes++;
	}
	rc_node *n = rc->nodes[i];
	if (n->conn != NULL)
		return 0;
	redis_url u = rc->seed;
	snprintf(u.host, sizeof(u.host), "%s", rc->map.nodes[i].host);
	u.port = rc->map.nodes[i].port;
	char name[300];
	snprintf(name, sizeof(name), "%s@%s:%d", rc->name, u.host, u.port);
	redis_conn_cbs cbs = {.up = node_up_cb, .down = node_down_cb, .arg = n};
	n->wait = rc->wait;
	int r = redis_conn_create(rc->l, name, &u, rc->connect_timeout_ms, rc->backoff_min_ms, rc->backoff_max_ms, &cbs,
	                          &n->conn);
	if (r == 0 && (r = redis_conn_set_reply_timeout(n->conn, rc->reply_timeout_ms)) < 0) {
		redis_conn_destroy(n->conn);
		n->conn = NULL;
	}
	return r;
}

static bool node_up(const redis_cluster *rc, int i)
{
	return i >= 0 && (size_t)i < rc->nnodes && rc->nodes[i]->conn != NULL && redis_conn_up(rc->nodes[i]->conn);
}

static void asking_cb(redis_conn *c, void *reply, void *privdata)
{
	(void)c, (void)reply, (void)privdata;
}

static void node_reply_cb(redis_conn *c, void *r, void *privdata);

/* Sends x to node i (after ASKING when asked to); false when it cannot go now. */
static bool cmd_send(redis_cluster *rc, rc_cmd *x, int i)
{
	redis_conn *conn = rc->nodes[i]->conn;
	if (x->ask_node >= 0) {
		const char *av[] = {"ASKING"};
		size_t al[] = {6};
		if (redis_conn_command(conn, asking_cb, NULL, 1, av, al) < 0)
			return false;
	}
	if (redis_conn_command(conn, node_reply_cb, x, x->argc, x->argv, x->argvlen) < 0)
		return false;
	x->ask_node = -1;
	x->node = i;
	list_remove(x);
	list_push(&rc->sent, x, false);
	return true;
}

/* Sends every waiting command whose node is connected. */
static void dispatch(redis_cluster *rc)
{
	bool stuck = false;
	rc_cmd *next;
	for (rc_cmd *x = rc->waiting.head; x != NULL; x = next) {
		next = x->next;
		int i = x->ask_node >= 0 ? x->ask_node : rc->map.slot[x->slot];
		if (!node_up(rc, i) || !cmd_send(rc, x, i))
			stuck = true;
	}
	if (stuck)
		refresh_request(rc); /* no master for the slot, or it is unreachable: a failover? */
}

/* Closes the connections of nodes the map does not name any more. */
static void sweep(redis_cluster *rc)
{
	for (size_t i = 0; i < rc->nnodes && i < rc->map.nnodes; i++) {
		rc_node *n = rc->nodes[i];
		if (n->conn != NULL && !rc->map.nodes[i].present) {
			redis_conn *conn = n->conn;
			n->conn = NULL;
			log_info("redis.cluster_node_gone", "sink=%s redis=%s:%d: not in the cluster map any more", rc->name,
			         rc->map.nodes[i].host, rc->map.nodes[i].port);
			redis_conn_destroy(conn); /* its commands come back (NULL) to waiting */
		}
	}
}

static void kick_cb(loop *l, int id, void *arg)
{
	redis_cluster *rc = arg;
	rc->kick_timer = 0;
	if (rc->ready)
		sweep(rc);
	dispatch(rc);
}

static void kick(redis_cluster *rc)
{
	if (rc->kick_timer != 0 || rc->destroying)
		return;
	int id = loop_timer_add(rc->l, 0, kick_cb, rc);
	rc->kick_timer = id > 0 ? id : 0;
}

static void slots_cb(redis_conn *c, void *r, void *privdata)
{
	redis_cluster *rc = privdata;
	redisReply *reply = r;
	if (rc->destroying)
		return;
	rc->refreshing = false;
	rc->last_refresh_ms = loop_now_ms();
	char err[REDIS_CONN_ERROR_MAX] = "no reply";
	int32_t before[REDIS_CLUSTER_SLOTS];
	memcpy(before, rc->map.slot, sizeof(before));
	int rc_apply = -EPROTO;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		snprintf(err, sizeof(err), "CLUSTER SLOTS: %s", reply->str);
	else if (reply != NULL)
		rc_apply = redis_cluster_map_apply_slots(&rc->map, reply, rc->seed.host, err);
	if (rc_apply < 0) {
		log_warn("redis.cluster_map", "sink=%s: cannot read the cluster map: %s", rc->name, err);
		refresh_request(rc);
		return;
	}
	for (size_t i = 0; i < rc->map.nnodes; i++)
		if (rc->map.nodes[i].present && node_connect(rc, i) < 0)
			log_error("redis.cluster_map", "sink=%s: out of memory connecting to %s:%d", rc->name,
			          rc->map.nodes[i].host, rc->map.nodes[i].port);
	if (memcmp(before, rc->map.slot, sizeof(before)) != 0)
		rc->epoch++;
	bool complete = redis_cluster_map_complete(&rc->map);
	if (complete)
		rc->backoff_ms = rc->backoff_min_ms;
	else
		refresh_request(rc); /* CLUSTERDOWN for some slots: look again later */
	kick(rc);
	if (!rc->ready) {
		rc->ready = true;
		size_t masters = 0;
		for (size_t i = 0; i < rc->map.nnodes; i++)
			masters += rc->map.nodes[i].master;
		log_info("redis.cluster_up", "sink=%s: cluster map read: %zu masters, %s", rc->name, masters,
		         complete ? "every slot served" : "some slots unserved");
		if (rc->cbs.up != NULL)
			rc->cbs.up(rc->cbs.arg);
	}
}

/* Sends CLUSTER SLOTS to a connected node; false when none is. */
static bool refresh_send(redis_cluster *rc)
{
	for (size_t k = 0; k < rc->nnodes; k++) {
		size_t i = (rc->next_node + k) % rc->nnodes;
		if (!node_up(rc, (int)i))
			continue;
		const char *av[] = {"CLUSTER", "SLOTS"};
		size_t al[] = {7, 5};
		if (redis_conn_command(rc->nodes[i]->conn, slots_cb, rc, 2, av, al) < 0)
			continue;
		rc->next_node = i + 1;
		rc->refreshing = true;
		return true;
	}
	return false;
}

static void refresh_cb(loop *l, int id, void *arg)
{
	redis_cluster *rc = arg;
	rc->refresh_timer = 0;
	if (rc->refreshing)
		return;
	if (!refresh_send(rc))
		refresh_request(rc); /* nothing connected: the node connections retry; look again */
}

/* Reads the map again: now if the last read is older than the back-off, else after it. */
static void refresh_request(redis_cluster *rc)
{
	if (rc->refreshing || rc->refresh_timer != 0 || rc->destroying)
		return;
	int64_t wait = rc->last_refresh_ms + rc->backoff_ms - loop_now_ms();
	int id = loop_timer_add(rc->l, wait > 0 ? wait : 0, refresh_cb, rc);
	rc->refresh_timer = id > 0 ? id : 0;
	if (wait > 0 || rc->last_refresh_ms != 0)
		rc->backoff_ms = rc->backoff_ms * 2 > rc->backoff_max_ms ? rc->backoff_max_ms : rc->backoff_ms * 2;
}

/* ---- the router: replies ----------------------------------------------------------------------- */

static void requeue(redis_cluster *rc, rc_cmd *x)
{
	list_remove(x);
	freeReplyObject(x->reply);
	x->reply = NULL;
	list_push(&rc->waiting, x, true);
}

static redisReply *reply_copy(const redisReply *r)
{
	redisReply *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->type = r->type;
	c->integer = r->integer;
	if (r->str != NULL) {
		if ((c->str = malloc(r->len + 1)) == NULL)
			goto fail;
		memcpy(c->str, r->str, r->len + 1);
		c->len = r->len;
	}
	if (r->element != NULL && r->elements > 0) {
		if ((c->element = calloc(r->elements, sizeof(*c->element))) == NULL)
			goto fail;
		c->elements = r->elements;
		for (size_t i = 0; i < r->elements; i++)
			if ((c->element[i] = reply_copy(r->element[i])) == NULL)
				goto fail;
	}
	return c;
fail:
	freeReplyObject(c);
	return NULL;
}

static void wait_send(rc_node *n);

/* WAIT's answer (redis_wait_judge): enough replicas release the node's held commands; too few
 * ask again (the map is read again too: a failover may be under way); no answer, or an error
 * (the node turned replica), sends them again (a repeat is harmless where they landed). */
static void wait_cb(redis_conn *c, void *r, void *privdata)
{
	rc_node *n = privdata;
	redis_cluster *rc = n->rc;
	n->waiting_ack = false;
	if (rc->destroying)
		return;
	int verdict = redis_wait_judge(&n->wait, r);
	if (verdict == 1) {
		while (n->held.head != NULL) {
			rc_cmd *x = n->held.head;
			cmd_finish(x, c, x->reply);
		}
		return;
	}
	if (verdict == 0) {
		refresh_request(rc);
		wait_send(n);
		return;
	}
	while (n->held.head != NULL)
		requeue(rc, n->held.head);
	refresh_request(rc);
	kick(rc);
}

/* WAITs for the held commands of n, for the router's number of replicas whatever the map lists
 * (CLUSTER SLOTS leaves out a replica that has not replicated anything yet, and right after a
 * failover the new master has none until one joins it: its writes then wait). */
static void wait_send(rc_node *n)
{
	if (n->waiting_ack || n->held.head == NULL)
		return;
	redis_cluster *rc = n->rc;
	if (n->wait.replicas == 0) {
		while (n->held.head != NULL)
			cmd_finish(n->held.head, n->conn, n->held.head->reply);
		return;
	}
	if (n->conn != NULL && redis_wait_send(&n->wait, n->conn, wait_cb, n) == 0) {
		n->waiting_ack = true;
		return;
	}
	while (n->held.head != NULL)
		requeue(rc, n->held.head);
	kick(rc);
}

/* A redirection or a retryable error: x waits to be sent again. */
static void redirect(redis_cluster *rc, rc_cmd *x, redis_cluster_error k, const redis_cluster_redirect *to)
{
	requeue(rc, x);
	if (k == REDIS_CLUSTER_ERR_RETRY) {
		refresh_request(rc);
		return;
	}
	int i = k == REDIS_CLUSTER_ERR_MOVED ? redis_cluster_map_move(&rc->map, to->slot, to->host, to->port)
	                                     : redis_cluster_map_node(&rc->map, to->host, to->port, true);
	if (i >= 0 && k == REDIS_CLUSTER_ERR_MOVED)
		i = rc->map.slot[to->slot];
	if (i < 0 || node_connect(rc, (size_t)i) < 0) {
		refresh_request(rc);
		return;
	}
	if (k == REDIS_CLUSTER_ERR_ASK) {
		rc->map.nodes[i].present = true;
		x->ask_node = i;
	} else {
		rc->epoch++;
		refresh_request(rc); /* one slot moved: others probably did too */
	}
	if (++x->redirects <= REDIRECTS_AT_ONCE)
		kick(rc);
}

static void node_reply_cb(redis_conn *c, void *r, void *privdata)
{
	rc_cmd *x = privdata;
	redis_cluster *rc = x->rc;
	redisReply *reply = r;
	if (x->orphan) {
		cmd_free(x);
		return;
	}
	if (rc->destroying) {
		cmd_finish(x, c, NULL);
		return;
	}
	if (reply == NULL) {
		requeue(rc, x); /* the connection dropped: node_down_cb reads the map again */
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		redis_cluster_redirect to;
		redis_cluster_error k = redis_cluster_error_parse(reply->str, reply->len, &to);
		if (k != REDIS_CLUSTER_ERR_OTHER) {
			redirect(rc, x, k, &to);
			return;
		}
		/* an error writes nothing (scripts check before they write): no WAIT */
		cmd_finish(x, c, reply);
		return;
	}
	x->redirects = 0;
	rc->backoff_ms = rc->backoff_min_ms;
	rc_node *n = rc->nodes[x->node];
	if (!(x->flags & REDIS_CLUSTER_DURABLE)) {
		cmd_finish(x, c, reply);
		return;
	}
	if ((x->reply = reply_copy(reply)) == NULL) {
		requeue(rc, x); /* out of memory: send it again later */
		kick(rc);
		return;
	}
	list_remove(x);
	list_push(&n->held, x, false);
	wait_send(n);
}

static void node_up_cb(void *arg)
{
	rc_node *n = arg;
	redis_cluster *rc = n->rc;
	rc->epoch++;
	if (rc->cbs.node_up != NULL)
		rc->cbs.node_up(rc->cbs.arg, n->conn);
	if (!rc->ready)
		refresh_request(rc);
	kick(rc);
}

static void node_down_cb(void *arg, const char *why)
{
	rc_node *n = arg;
	(void)why;
	n->rc->epoch++;
	refresh_request(n->rc); /* a failover, perhaps */
}

/* ---- the router: the interface ----------------------------------------------------------------- */

int redis_cluster_create(loop *l, const char *name, const redis_url *seeds, size_t nseeds,
                         const redis_cluster_timing *t, const redis_wait *wait, size_t queue_max,
                         const redis_cluster_cbs *cbs, redis_cluster **out)
{
	if (nseeds == 0)
		return -EINVAL;
	for (size_t k = 0; k < nseeds; k++)
		if (seeds[k].db != 0 || seeds[k].nsentinels != 0)
			return -EINVAL;
	redis_cluster *rc = calloc(1, sizeof(*rc));
	if (rc == NULL || (rc->name = strdup(name)) == NULL) {
		free(rc);
		return -ENOMEM;
	}
	rc->l = l;
	rc->seed = seeds[0];
	rc->connect_timeout_ms = t->connect_timeout_ms;
	rc->reply_timeout_ms = t->reply_timeout_ms;
	rc->backoff_min_ms = rc->backoff_ms = t->backoff_min_ms > 0 ? t->backoff_min_ms : 1;
	rc->backoff_max_ms = t->backoff_max_ms > rc->backoff_min_ms ? t->backoff_max_ms : rc->backoff_min_ms;
	rc->wait = wait != NULL ? *wait : (redis_wait){.name = rc->name};
	rc->wait.behind = false;
	rc->queue_max = queue_max;
	rc->cbs = *cbs;
	redis_cluster_map_init(&rc->map);
	/* every seed is connected: the map is read from the first that answers (one may be down) */
	for (size_t k = 0; k < nseeds; k++) {
		int i = redis_cluster_map_node(&rc->map, seeds[k].host, seeds[k].port, true);
		int rc_conn = i < 0 ? i : node_connect(rc, (size_t)i);
		if (rc_conn < 0) {
			redis_cluster_destroy(rc);
			return rc_conn;
		}
		rc->map.nodes[i].present = true; /* until the first map says otherwise */
	}
	*out = rc;
	return 0;
}

void redis_cluster_destroy(redis_cluster *rc)
{
	if (rc == NULL)
		return;
	rc->destroying = true;
	if (rc->refresh_timer != 0)
		loop_timer_cancel(rc->l, rc->refresh_timer);
	if (rc->kick_timer != 0)
		loop_timer_cancel(rc->l, rc->kick_timer);
	for (size_t i = 0; i < rc->nnodes; i++) {
		redis_conn_destroy(rc->nodes[i]->conn); /* sent commands: NULL replies */
		rc->nodes[i]->conn = NULL;
		while (rc->nodes[i]->held.head != NULL)
			cmd_finish(rc->nodes[i]->held.head, NULL, NULL);
	}
	while (rc->waiting.head != NULL)
		cmd_finish(rc->waiting.head, NULL, NULL);
	while (rc->sent.head != NULL)
		cmd_finish(rc->sent.head, NULL, NULL);
	for (size_t i = 0; i < rc->nnodes; i++)
		free(rc->nodes[i]);
	free(rc->nodes);
	redis_cluster_map_fini(&rc->map);
	free(rc->name);
	free(rc);
}

bool redis_cluster_ready(const redis_cluster *rc)
{
	return rc->ready;
}

bool redis_cluster_healthy(const redis_cluster *rc)
{
	if (!rc->ready || rc->waiting.head != NULL)
		return false;
	for (size_t s = 0; s < REDIS_CLUSTER_SLOTS; s++)
		if (!node_up(rc, rc->map.slot[s]))
			return false;
	return true;
}

uint64_t redis_cluster_epoch(const redis_cluster *rc)
{
	return rc->epoch;
}

int redis_cluster_command(redis_cluster *rc, unsigned flags, redis_conn_reply_cb cb, void *privdata, int argc,
                          const char **argv, const size_t *argvlen)
{
	if (!rc->ready)
		return -ENOTCONN;
	int k = redis_cluster_command_key(argc, argv, argvlen);
	if (k < 0)
		return k;
	if (rc->ncmds >= rc->queue_max)
		return -ENOBUFS;
	size_t bytes = sizeof(rc_cmd) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
	for (int i = 0; i < argc; i++)
		bytes += argvlen[i] + 1;
	rc_cmd *x = calloc(1, bytes);
	if (x == NULL)
		return -ENOMEM;
	x->rc = rc;
	x->cb = cb;
	x->privdata = privdata;
	x->flags = flags;
	x->ask_node = -1;
	x->argc = argc;
	x->argvlen = (size_t *)(x + 1);
	x->argv = (const char **)(x->argvlen + argc);
	char *p = (char *)(x->argv + argc);
	for (int i = 0; i < argc; i++) {
		memcpy(p, argv[i], argvlen[i]);
		p[argvlen[i]] = '\0';
		x->argv[i] = p;
		x->argvlen[i] = argvlen[i];
		p += argvlen[i] + 1;
	}
	x->slot = redis_cluster_key_slot(argv[k], argvlen[k]);
	rc->ncmds++;
	list_push(&rc->waiting, x, false);
	int i = rc->map.slot[x->slot];
	if (i >= 0 && node_up(rc, i) && rc->waiting.head == x)
		(void)cmd_send(rc, x, i); /* the usual case: straight out, nothing before it waits */
	else
		kick(rc);
	return 0;
}

void redis_cluster_reset(redis_cluster *rc, const char *why)
{
	log_warn("redis.cluster_reset", "sink=%s: %s; every node connection made again", rc->name, why);
	bool was_ready = rc->ready;
	rc->ready = false; /* what the callbacks below send is refused */
	while (rc->waiting.head != NULL)
		cmd_finish(rc->waiting.head, NULL, NULL);
	for (size_t i = 0; i < rc->nnodes; i++)
		while (rc->nodes[i]->held.head != NULL)
			cmd_finish(rc->nodes[i]->held.head, NULL, NULL);
	for (rc_cmd *x = rc->sent.head; x != NULL; x = x->next) {
		if (!x->orphan) {
			x->orphan = true;
			x->cb(NULL, NULL, x->privdata);
		}
	}
	for (size_t i = 0; i < rc->nnodes; i++)
		if (rc->nodes[i]->conn != NULL)
			redis_conn_reset(rc->nodes[i]->conn, why);
	rc->epoch++;
	if (was_ready && rc->cbs.down != NULL)
		rc->cbs.down(rc->cbs.arg, why);
	refresh_request(rc);
}

/* ---- either one -------------------------------------------------------------------------------- */

int redis_link_command(const redis_link *k, unsigned flags, redis_conn_reply_cb cb, void *privdata, int argc,
                       const char **argv, const size_t *argvlen)
{
	if (k->cluster != NULL)
		return redis_cluster_command(k->cluster, flags, cb, privdata, argc, argv, argvlen);
	return redis_conn_command(k->conn, cb, privdata, argc, argv, argvlen);
}

bool redis_link_ready(const redis_link *k)
{
	return k->cluster != NULL ? redis_cluster_ready(k->cluster) : k->conn != NULL && redis_conn_up(k->conn);
}

bool redis_link_healthy(const redis_link *k)
{
	return k->cluster != NULL ? redis_cluster_healthy(k->cluster) : k->conn != NULL && redis_conn_up(k->conn);
}

uint64_t redis_link_epoch(const redis_link *k)
{
	return k->cluster != NULL ? redis_cluster_epoch(k->cluster) : redis_conn_attempts(k->conn);
}

void redis_link_reset(const redis_link *k, const char *why)
{
	if (k->cluster != NULL)
		redis_cluster_reset(k->cluster, why);
	else if (k->conn != NULL)
		redis_conn_reset(k->conn, why);
}
