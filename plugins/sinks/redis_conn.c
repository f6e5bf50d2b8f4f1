/*
 * redis_conn — an asynchronous hiredis connection on walcast's loop (see redis_conn.h).
 *
 * States: idle (a retry timer pending) -> connecting (ac set, connect timer pending) -> up (ac
 * set, connected) -> down (ac gone, a retry timer pending). hiredis frees its context itself
 * after a failed connect or a disconnect; this module learns it from the connect callback (a
 * failure) or the disconnect callback, and forgets its pointer there. The event hooks hiredis
 * calls (addRead, delWrite...) keep one loop_watch of the socket with the union of what hiredis
 * waits for; the cleanup hook removes it before hiredis closes the socket.
 */
#include "redis_conn.h"

#include <errno.h>
#include <stdarg.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct redis_conn {
	loop *l;
	char *name;
	redis_url url;
	int64_t connect_timeout_ms, backoff_min_ms, backoff_max_ms, backoff_ms;
	redis_conn_cbs cbs;
	redisAsyncContext *ac;
	redis_addr addr;          /* the server ac is (being) connected to: a sentinel while asking */
	bool asking;              /* ac is a sentinel's, asked for the master */
	size_t next_sentinel;     /* the sentinel asked first next time (the last one that answered) */
	size_t asked;             /* sentinels asked in this attempt */
	redis_addr found;         /* the master a sentinel named (found_ok) */
	bool found_ok;
	bool connected;           /* ac's connect completed */
	bool ready;               /* commands may be sent: connected, set up, and (sentinels) a master */
	bool destroying;
	int fd;
	unsigned events;
	int retry_timer;
	int connect_timer;
	uint64_t attempts;
	int64_t reply_timeout_ms; /* 0: off */
	int reply_timer;
	size_t pending;           /* commands whose reply callback has not run */
	int64_t progress_ms;      /* the last reply, or the send that made pending non-zero */
};

/* "host[:port]", n bytes at p, into *a (port def when none). 0 or -EINVAL. */
static int addr_parse(const char *p, size_t n, int def, redis_addr *a)
{
	const char *colon = memchr(p, ':', n);
	size_t hl = colon != NULL ? (size_t)(colon - p) : n;
	if (hl == 0 || hl >= sizeof(a->host))
		return -EINVAL;
	memcpy(a->host, p, hl);
	a->host[hl] = '\0';
	a->port = def;
	if (colon == NULL)
		return 0;
	char num[8], *end;
	size_t pl = n - hl - 1;
	if (pl == 0 || pl >= sizeof(num))
		return -EINVAL;
	memcpy(num, colon + 1, pl);
	num[pl] = '\0';
	long v = strtol(num, &end, 10);
	if (*end != '\0' || v < 1 || v > 65535)
		return -EINVAL;
	a->port = (int)v;
	return 0;
}

int redis_url_parse(const char *url, redis_url *out, char err[REDIS_CONN_ERROR_MAX])
{
	static const char plain[] = "redis://", sentinel[] = "redis+sentinel://";
	redis_url u = {.port = 6379};
	bool sentinels = strncmp(url, sentinel, sizeof(sentinel) - 1) == 0;
	const char *p = url + (sentinels ? sizeof(sentinel) - 1 : sizeof(plain) - 1);
	if (!sentinels && strncmp(url, plain, sizeof(plain) - 1) != 0) {
		snprintf(err, REDIS_CONN_ERROR_MAX,
		         "url %s: not redis://[[user]:password@]host[:port][/db] or "
		         "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]",
		         url);
		return -EINVAL;
	}
	const char *at = strchr(p, '@');
	if (at != NULL) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		const char *pw = colon ? colon + 1 : p;
		if ((size_t)(at - pw) >= sizeof(u.password)) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url: the password is too long");
			return -EINVAL;
		}
		memcpy(u.password, pw, (size_t)(at - pw));
		p = at + 1;
	}
	/* the server, or the sentinels (comma-separated) */
	size_t al = strcspn(p, "/");
	for (const char *a = p; a < p + al;) {
		size_t n = strcspn(a, ",/");
		redis_addr *to = sentinels ? &u.sentinels[u.nsentinels] : &(redis_addr){0};
		if (sentinels && u.nsentinels == REDIS_SENTINELS_MAX) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: more than %d sentinels", url, REDIS_SENTINELS_MAX);
			return -EINVAL;
		}
		if (addr_parse(a, n, sentinels ? REDIS_SENTINEL_PORT : 6379, to) < 0 || (!sentinels && a != p)) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: bad host or port \"%.*s\"", url, (int)n, a);
			return -EINVAL;
		}
		if (sentinels)
			u.nsentinels++;
		else
			memcpy(u.host, to->host, sizeof(u.host)), u.port = to->port;
		a += n + (a[n] == ',');
	}
	if (al == 0 || p[al - 1] == ',') {
		snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: no host", url);
		return -EINVAL;
	}
	p += al;
	if (sentinels) {
		size_t ml = *p == '/' ? strcspn(p + 1, "/") : 0;
		if (ml == 0 || ml >= sizeof(u.master)) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: no master name (redis+sentinel://SENTINELS/MASTER[/db])", url);
			return -EINVAL;
		}
		memcpy(u.master, p + 1, ml);
		p += 1 + ml;
		memcpy(u.host, u.sentinels[0].host, sizeof(u.host));
		u.port = u.sentinels[0].port;
	}
	char *end;
	if (*p == '/' && p[1] != '\0') {
		long v = strtol(p + 1, &end, 10);
		if (end == p + 1 || *end != '\0' || v < 0 || v > 1000000) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: bad database number", url);
			return -EINVAL;
		}
		u.db = (int)v;
	} else if (*p != '\0' && strcmp(p, "/") != 0) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: unexpected %s", url, p);
		return -EINVAL;
	}
	*out = u;
	return 0;
}

/* A reply to SENTINEL get-master-addr-by-name: ["host", "port"] into *out. 0, or -ENOENT (nil:
 * the sentinel does not know the master) or -EPROTO. */
static int master_addr(const redisReply *r, redis_addr *out)
{
	if (r == NULL || r->type == REDIS_REPLY_NIL)
		return -ENOENT;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING)
		return -EPROTO;
	const redisReply *host = r->element[0];
	char *end;
	long port = strtol(r->element[1]->str, &end, 10);
	if (host->len == 0 || host->len >= sizeof(out->host) || *end != '\0' || port < 1 || port > 65535)
		return -EPROTO;
	memcpy(out->host, host->str, host->len + 1);
	out->port = (int)port;
	return 0;
}

/* ROLE's reply names a master. */
static bool role_is_master(const redisReply *r)
{
	return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING &&
	       strcmp(r->element[0]->str, "master") == 0;
}

/* ---- blocking ------------------------------------------------------------------------------ */

/* One blocking command on rc: its reply (freeReplyObject), or NULL with err (an error reply
 * included). */
static redisReply *blocking_cmd(redisContext *rc, const redis_addr *a, char err[REDIS_CONN_ERROR_MAX], const char *fmt,
                                ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(rc, fmt, ap);
	va_end(ap);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "redis=%s:%d: %s", a->host, a->port, r != NULL ? r->str : rc->errstr);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

static redisContext *blocking_connect(const redis_addr *a, struct timeval tv, char err[REDIS_CONN_ERROR_MAX])
{
	redisContext *rc = redisConnectWithTimeout(a->host, a->port, tv);
	if (rc == NULL || rc->err) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "redis=%s:%d: %s", a->host, a->port, rc != NULL ? rc->errstr : "out of memory");
		redisFree(rc);
		return NULL;
	}
	redisSetTimeout(rc, tv);
	return rc;
}

redisContext *redis_connect_blocking(const redis_url *url, int64_t timeout_ms, char err[REDIS_CONN_ERROR_MAX])
{
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	redis_addr a = {.port = url->port};
	memcpy(a.host, url->host, sizeof(a.host));
	int found = url->nsentinels == 0 ? 0 : -ENOENT;
	for (size_t i = 0; i < url->nsentinels && found < 0; i++) {
		redisContext *sc = blocking_connect(&url->sentinels[i], tv, err);
		redisReply *r = sc != NULL ? redisCommand(sc, "SENTINEL get-master-addr-by-name %s", url->master) : NULL;
		if (sc != NULL && (found = master_addr(r, &a)) < 0)
			snprintf(err, REDIS_CONN_ERROR_MAX, "sentinel=%s:%d: %s the master %s", url->sentinels[i].host,
			         url->sentinels[i].port, r == NULL ? sc->errstr : found == -ENOENT ? "does not know" : "no address of",
			         url->master);
		freeReplyObject(r);
		redisFree(sc);
	}
	if (found < 0)
		return NULL;
	redisContext *rc = blocking_connect(&a, tv, err);
	if (rc == NULL)
		return NULL;
	redisReply *r = NULL;
	bool ok = url->password[0] == '\0' || (r = blocking_cmd(rc, &a, err, "AUTH %s", url->password)) != NULL;
	freeReplyObject(r);
	r = NULL;
	ok = ok && (url->db == 0 || (r = blocking_cmd(rc, &a, err, "SELECT %d", url->db)) != NULL);
	freeReplyObject(r);
	if (ok && url->nsentinels > 0) {
		r = blocking_cmd(rc, &a, err, "ROLE");
		ok = r != NULL && role_is_master(r);
		if (r != NULL && !ok)
			snprintf(err, REDIS_CONN_ERROR_MAX, "redis=%s:%d: the sentinels name it the master of %s, but it is not (yet)",
			         a.host, a.port, url->master);
		freeReplyObject(r);
	}
	if (!ok) {
		redisFree(rc);
		return NULL;
	}
	return rc;
}

/* ---- the event hooks ---------------------------------------------------------------------- */

static void fd_cb(loop *l, int fd, unsigned events, void *arg)
{
	redis_conn *c = arg;
	redisAsyncContext *ac = c->ac;
	if (ac == NULL)
		return;
	if (events & LOOP_READ)
		redisAsyncHandleRead(ac);
	/* the read may have ended the context (its callbacks forgot it) */
	if (c->ac == ac && (events & LOOP_WRITE))
		redisAsyncHandleWrite(ac);
}

static void watch_set(redis_conn *c, unsigned events)
{
	if (c->fd < 0 || events == c->events)
		return;
	c->events = events;
	if (events == 0) {
		loop_unwatch(c->l, c->fd);
		return;
	}
	int rc = loop_watch(c->l, c->fd, events, fd_cb, c);
	if (rc < 0)
		log_error("redis.watch", "sink=%s fd=%d: %s", c->name, c->fd, strerror(-rc));
}

static void ev_add_read(void *p) { redis_conn *c = p; watch_set(c, c->events | LOOP_READ); }
static void ev_del_read(void *p) { redis_conn *c = p; watch_set(c, c->events & ~(unsigned)LOOP_READ); }
static void ev_add_write(void *p) { redis_conn *c = p; watch_set(c, c->events | LOOP_WRITE); }
static void ev_del_write(void *p) { redis_conn *c = p; watch_set(c, c->events & ~(unsigned)LOOP_WRITE); }

static void ev_cleanup(void *p)
{
	redis_conn *c = p;
	if (c->fd >= 0 && c->events != 0)
		loop_unwatch(c->l, c->fd);
	c->events = 0;
	c->fd = -1;
}

/* ---- connecting ----------------------------------------------------------------------------
 * An attempt: with sentinels, ask them in turn (from the last one that answered) until one names
 * the master, then connect to it; without, connect to the server. Any failure ends the attempt
 * with a retry after the back-off (a sentinel's failure moves on to the next one first). */

static void connect_to(redis_conn *c, const redis_addr *a, bool asking);
static void ask_next(redis_conn *c);

/* The connect timer bounds an attempt's step until the connection is ready (a sentinel's answer
 * and the master's ROLE included). */
static void connect_timer_stop(redis_conn *c)
{
	if (c->connect_timer != 0) {
		loop_timer_cancel(c->l, c->connect_timer);
		c->connect_timer = 0;
	}
}

static void retry_cb(loop *l, int id, void *arg)
{
	redis_conn *c = arg;
	c->retry_timer = 0;
	c->attempts++;
	c->asked = 0;
	if (c->url.nsentinels > 0) {
		ask_next(c);
		return;
	}
	redis_addr server = {.port = c->url.port};
	memcpy(server.host, c->url.host, sizeof(server.host));
	connect_to(c, &server, false);
}

static void retry_later(redis_conn *c)
{
	if (c->destroying || c->retry_timer != 0)
		return;
	int id = loop_timer_add(c->l, c->backoff_ms, retry_cb, c);
	if (id > 0)
		c->retry_timer = id;
	else
		log_error("redis.retry", "sink=%s: cannot arm the reconnect timer: %s", c->name, strerror(-id));
	c->backoff_ms = c->backoff_ms * 2 > c->backoff_max_ms ? c->backoff_max_ms : c->backoff_ms * 2;
}

/* The next step of an attempt that is asking the sentinels: to the master one named (found_ok),
 * else to the next sentinel. From a timer, never from inside hiredis: hiredis still cleans up
 * the context whose callback ended the previous step (its fd hook would hit the new socket). */
static void step_cb(loop *l, int id, void *arg)
{
	redis_conn *c = arg;
	c->retry_timer = 0;
	if (!c->found_ok) {
		ask_next(c);
		return;
	}
	c->next_sentinel = (c->next_sentinel + c->asked - 1) % c->url.nsentinels;
	redis_addr master = c->found;
	connect_to(c, &master, false);
}

static void step_soon(redis_conn *c)
{
	c->asking = false;
	int id = c->destroying || c->retry_timer != 0 ? 0 : loop_timer_add(c->l, 0, step_cb, c);
	if (id > 0)
		c->retry_timer = id;
	else if (!c->destroying)
		retry_later(c);
}

/* The connection to c->addr failed before it was ready: the next sentinel, or a retry. */
static void attempt_failed(redis_conn *c)
{
	if (c->asking)
		step_soon(c);
	else
		retry_later(c);
}

static void ask_next(redis_conn *c)
{
	if (c->asked == c->url.nsentinels) {
		log_warn("redis.no_master", "sink=%s master=%s: no sentinel named its address; asking again in %lld ms",
		         c->name, c->url.master, (long long)c->backoff_ms);
		c->asking = false;
		retry_later(c);
		return;
	}
	size_t i = (c->next_sentinel + c->asked++) % c->url.nsentinels;
	connect_to(c, &c->url.sentinels[i], true);
}

static void ready(redis_conn *c)
{
	connect_timer_stop(c);
	c->ready = true;
	c->backoff_ms = c->backoff_min_ms;
	log_info("redis.up", "sink=%s redis=%s:%d db=%d: connected%s%s", c->name, c->addr.host, c->addr.port, c->url.db,
	         c->url.nsentinels > 0 ? ", the master of " : "", c->url.master);
	if (c->cbs.up != NULL)
		c->cbs.up(c->cbs.arg);
}

static void setup_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	redis_conn *c = ac->data;
	redisReply *reply = r;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		log_error("redis.setup", "sink=%s redis=%s:%d: %s: %s", c->name, c->addr.host, c->addr.port,
		          (const char *)privdata, reply->str);
		redis_conn_reset(c, "AUTH or SELECT refused");
	}
}

static void role_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	redis_conn *c = ac->data;
	if (r == NULL || c->ac != ac || c->ready)
		return; /* gone, or reset by a refused AUTH or SELECT */
	if (role_is_master(r)) {
		ready(c);
		return;
	}
	log_warn("redis.not_master", "sink=%s redis=%s:%d: the sentinels name it the master of %s, but it is not (yet)",
	         c->name, c->addr.host, c->addr.port, c->url.master);
	redis_conn_reset(c, "not the master");
}

static void sentinel_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	redis_conn *c = ac->data;
	if (r == NULL)
		return; /* the sentinel went away: disconnect_cb asks the next one */
	int rc = master_addr(r, &c->found);
	c->found_ok = rc == 0;
	if (rc < 0)
		log_warn("redis.sentinel", "sink=%s sentinel=%s:%d: %s the master %s", c->name, c->addr.host, c->addr.port,
		         rc == -ENOENT ? "does not know" : "answered nonsense for", c->url.master);
	redisAsyncDisconnect(ac); /* disconnect_cb goes on */
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	redis_conn *c = ac->data;
	if (c == NULL)
		return;
	bool was_up = c->ready;
	c->ac = NULL;
	c->connected = c->ready = false;
	if (c->destroying)
		return;
	if (c->asking) {
		step_soon(c); /* to the master the sentinel named, or the next sentinel */
		return;
	}
	const char *why = ac->errstr[0] ? ac->errstr : "closed";
	if (was_up) {
		log_warn("redis.down", "sink=%s redis=%s:%d: %s; reconnecting", c->name, c->addr.host, c->addr.port, why);
		if (c->cbs.down != NULL)
			c->cbs.down(c->cbs.arg, why);
	}
	retry_later(c);
}

static void connect_cb(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	redis_conn *c = ac->data;
	if (status != REDIS_OK) {
		connect_timer_stop(c);
		/* hiredis frees the context after this callback */
		log_warn("redis.connect_failed", "sink=%s %s=%s:%d: %s%s", c->name, c->asking ? "sentinel" : "redis",
		         c->addr.host, c->addr.port, ac->errstr[0] ? ac->errstr : "failed",
		         c->asking ? "; asking the next sentinel" : "");
		c->ac = NULL;
		attempt_failed(c);
		return;
	}
	c->connected = true;
	if (c->asking) {
		(void)redisAsyncCommand(ac, sentinel_reply_cb, NULL, "SENTINEL get-master-addr-by-name %s", c->url.master);
		return;
	}
	if (c->url.password[0] != '\0')
		(void)redisAsyncCommand(ac, setup_reply_cb, (void *)"AUTH", "AUTH %s", c->url.password);
	if (c->url.db != 0)
		(void)redisAsyncCommand(ac, setup_reply_cb, (void *)"SELECT", "SELECT %d", c->url.db);
	if (c->url.nsentinels > 0)
		(void)redisAsyncCommand(ac, role_reply_cb, NULL, "ROLE");
	else
		ready(c);
}

static void connect_timeout_cb(loop *l, int id, void *arg)
{
	redis_conn *c = arg;
	c->connect_timer = 0;
	if (c->ac == NULL || c->ready)
		return;
	log_warn("redis.connect_timeout", "sink=%s %s=%s:%d: not %s after %lld ms", c->name, c->asking ? "sentinel" : "redis",
	         c->addr.host, c->addr.port, c->connected ? "answered" : "connected", (long long)c->connect_timeout_ms);
	redisAsyncContext *ac = c->ac;
	if (c->connected) {
		redisAsyncFree(ac); /* disconnect_cb goes on */
		return;
	}
	c->ac = NULL;
	redisAsyncFree(ac); /* not connected: no disconnect callback */
	attempt_failed(c);
}

static void connect_to(redis_conn *c, const redis_addr *a, bool asking)
{
	connect_timer_stop(c);
	c->addr = *a;
	c->asking = asking;
	c->found_ok = false;
	redisAsyncContext *ac = redisAsyncConnect(c->addr.host, c->addr.port);
	if (ac == NULL) {
		log_error("redis.connect_failed", "sink=%s: out of memory", c->name);
		attempt_failed(c);
		return;
	}
	if (ac->err) {
		log_warn("redis.connect_failed", "sink=%s redis=%s:%d: %s", c->name, c->addr.host, c->addr.port, ac->errstr);
		redisAsyncFree(ac);
		attempt_failed(c);
		return;
	}
	c->ac = ac;
	c->fd = ac->c.fd;
	c->events = 0;
	ac->data = c;
	ac->ev.data = c;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
	redisAsyncSetConnectCallback(ac, connect_cb); /* arms the write watch that completes the connect */
	int id = loop_timer_add(c->l, c->connect_timeout_ms, connect_timeout_cb, c);
	c->connect_timer = id > 0 ? id : 0;
}

int redis_conn_create(loop *l, const char *name, const redis_url *url, int64_t connect_timeout_ms,
                      int64_t backoff_min_ms, int64_t backoff_max_ms, const redis_conn_cbs *cbs, redis_conn **out)
{
	redis_conn *c = calloc(1, sizeof(*c));
	if (c == NULL || (c->name = strdup(name)) == NULL) {
		free(c);
		return -ENOMEM;
	}
	c->l = l;
	c->url = *url;
	c->connect_timeout_ms = connect_timeout_ms;
	c->backoff_min_ms = c->backoff_ms = backoff_min_ms > 0 ? backoff_min_ms : 1;
	c->backoff_max_ms = backoff_max_ms > c->backoff_min_ms ? backoff_max_ms : c->backoff_min_ms;
	c->cbs = *cbs;
	c->fd = -1;
	retry_cb(l, 0, c);
	*out = c;
	return 0;
}

void redis_conn_destroy(redis_conn *c)
{
	if (c == NULL)
		return;
	c->destroying = true;
	if (c->retry_timer != 0)
		loop_timer_cancel(c->l, c->retry_timer);
	connect_timer_stop(c);
	if (c->reply_timer > 0)
		loop_timer_cancel(c->l, c->reply_timer);
	if (c->ac != NULL && c->ready) {
		/* one last non-blocking write of what is queued (a final SET): best effort; a failed
		 * write ends the context, and disconnect_cb forgets it */
		redisAsyncHandleWrite(c->ac);
	}
	if (c->ac != NULL) {
		redisAsyncContext *ac = c->ac;
		c->ac = NULL;
		redisAsyncFree(ac);
	}
	free(c->name);
	free(c);
}

bool redis_conn_up(const redis_conn *c)
{
	return c->ac != NULL && c->ready;
}

uint64_t redis_conn_attempts(const redis_conn *c)
{
	return c->attempts;
}

typedef struct cmd_ctx {
	redis_conn *c;
	redis_conn_reply_cb cb;
	void *privdata;
} cmd_ctx;

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	cmd_ctx *x = privdata;
	redis_conn_reply_cb cb = x->cb;
	redis_conn *c = x->c;
	void *p = x->privdata;
	free(x);
	c->pending--;
	c->progress_ms = loop_now_ms();
	cb(c, reply, p);
}

int redis_conn_command(redis_conn *c, redis_conn_reply_cb cb, void *privdata, int argc, const char **argv,
                       const size_t *argvlen)
{
	if (!redis_conn_up(c))
		return -ENOTCONN;
	cmd_ctx *x = malloc(sizeof(*x));
	if (x == NULL)
		return -ENOMEM;
	*x = (cmd_ctx){.c = c, .cb = cb, .privdata = privdata};
	if (redisAsyncCommandArgv(c->ac, reply_cb, x, argc, argv, argvlen) != REDIS_OK) {
		free(x);
		return -ENOMEM; /* hiredis refuses only when out of memory or disconnecting */
	}
	if (c->pending++ == 0)
		c->progress_ms = loop_now_ms();
	return 0;
}

int redis_wait_check(const redis_wait *w, int64_t reply_timeout_ms, char err[REDIS_CONN_ERROR_MAX])
{
	if (w->replicas == 0 || reply_timeout_ms == 0 || w->timeout_ms < reply_timeout_ms)
		return 0;
	snprintf(err, REDIS_CONN_ERROR_MAX, "wait_timeout must be shorter than command_timeout (a WAIT that blocks "
	         "that long is taken for a server that stopped answering)");
	return -EINVAL;
}

int redis_wait_send(const redis_wait *w, redis_conn *c, redis_conn_reply_cb cb, void *privdata)
{
	char n[24], ms[24];
	snprintf(n, sizeof(n), "%lld", (long long)w->replicas);
	snprintf(ms, sizeof(ms), "%lld", (long long)w->timeout_ms);
	const char *argv[] = {"WAIT", n, ms};
	size_t argvlen[] = {4, strlen(n), strlen(ms)};
	return redis_conn_command(c, cb, privdata, 3, argv, argvlen);
}

int redis_wait_judge(redis_wait *w, const void *reply)
{
	const redisReply *r = reply;
	if (r == NULL || r->type != REDIS_REPLY_INTEGER)
		return -1;
	bool behind = r->integer < w->replicas;
	if (behind && !w->behind)
		log_warn("redis.replicas_behind", "sink=%s: %lld of %lld replicas acknowledged the round within %lld ms; "
		         "waiting for them, nothing is confirmed meanwhile", w->name, (long long)r->integer,
		         (long long)w->replicas, (long long)w->timeout_ms);
	else if (!behind && w->behind)
		log_info("redis.replicas_caught_up", "sink=%s: %lld replicas acknowledged the round", w->name,
		         (long long)r->integer);
	w->behind = behind;
	return behind ? 0 : 1;
}

static void reply_watch_cb(loop *l, int id, void *arg)
{
	redis_conn *c = arg;
	int64_t every = c->reply_timeout_ms / 2 < 500 ? c->reply_timeout_ms / 2 : 500;
	c->reply_timer = loop_timer_add(l, every > 10 ? every : 10, reply_watch_cb, c);
	if (c->reply_timer < 0)
		c->reply_timer = 0;
	if (c->pending > 0 && redis_conn_up(c) && loop_now_ms() - c->progress_ms > c->reply_timeout_ms) {
		char why[64];
		snprintf(why, sizeof(why), "no reply in %lld ms", (long long)c->reply_timeout_ms);
		redis_conn_reset(c, why);
	}
}

int redis_conn_set_reply_timeout(redis_conn *c, int64_t ms)
{
	c->reply_timeout_ms = ms > 0 ? ms : 0;
	if (c->reply_timer > 0) {
		loop_timer_cancel(c->l, c->reply_timer);
		c->reply_timer = 0;
	}
	if (c->reply_timeout_ms == 0)
		return 0;
	reply_watch_cb(c->l, 0, c);
	return c->reply_timer > 0 ? 0 : -ENOMEM;
}

void redis_conn_reset(redis_conn *c, const char *why)
{
	if (c->ac == NULL)
		return;
	log_warn("redis.reset", "sink=%s redis=%s:%d: %s; reconnecting", c->name, c->addr.host, c->addr.port, why);
	if (!c->connected) {
		redisAsyncContext *ac = c->ac;
		c->ac = NULL;
		redisAsyncFree(ac);
		retry_later(c);
		return;
	}
	/* pending callbacks get NULL, then disconnect_cb (deferred by hiredis when called from one of
	 * its callbacks) reports down and schedules the reconnect */
	redisAsyncFree(c->ac);
}
