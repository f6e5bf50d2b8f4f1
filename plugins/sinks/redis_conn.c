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
	bool connected;
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

int redis_url_parse(const char *url, redis_url *out, char err[REDIS_CONN_ERROR_MAX])
{
	redis_url u = {.port = 6379};
	const char *p = url;
	if (strncmp(p, "redis://", 8) != 0) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: not redis://[[user]:password@]host[:port][/db]", url);
		return -EINVAL;
	}
	p += 8;
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
	size_t hl = strcspn(p, ":/");
	if (hl == 0 || hl >= sizeof(u.host)) {
		snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: no host", url);
		return -EINVAL;
	}
	memcpy(u.host, p, hl);
	p += hl;
	char *end;
	if (*p == ':') {
		long v = strtol(p + 1, &end, 10);
		if (end == p + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/')) {
			snprintf(err, REDIS_CONN_ERROR_MAX, "url %s: bad port", url);
			return -EINVAL;
		}
		u.port = (int)v;
		p = end;
	}
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

/* ---- connecting ---------------------------------------------------------------------------- */

static void connect_start(redis_conn *c);

static void retry_cb(loop *l, int id, void *arg)
{
	redis_conn *c = arg;
	c->retry_timer = 0;
	connect_start(c);
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

static void setup_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	redis_conn *c = ac->data;
	redisReply *reply = r;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		log_error("redis.setup", "sink=%s redis=%s:%d: %s: %s", c->name, c->url.host, c->url.port,
		          (const char *)privdata, reply->str);
		redis_conn_reset(c, "AUTH or SELECT refused");
	}
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	redis_conn *c = ac->data;
	if (c == NULL)
		return;
	bool was_up = c->connected;
	c->ac = NULL;
	c->connected = false;
	if (c->destroying)
		return;
	const char *why = ac->errstr[0] ? ac->errstr : "closed";
	if (was_up) {
		log_warn("redis.down", "sink=%s redis=%s:%d: %s; reconnecting", c->name, c->url.host, c->url.port, why);
		if (c->cbs.down != NULL)
			c->cbs.down(c->cbs.arg, why);
	}
	retry_later(c);
}

static void connect_cb(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	redis_conn *c = ac->data;
	if (c->connect_timer != 0) {
		loop_timer_cancel(c->l, c->connect_timer);
		c->connect_timer = 0;
	}
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback */
		log_warn("redis.connect_failed", "sink=%s redis=%s:%d: %s; retrying in %lld ms", c->name, c->url.host,
		         c->url.port, ac->errstr[0] ? ac->errstr : "failed", (long long)c->backoff_ms);
		c->ac = NULL;
		retry_later(c);
		return;
	}
	c->connected = true;
	c->backoff_ms = c->backoff_min_ms;
	if (c->url.password[0] != '\0')
		(void)redisAsyncCommand(ac, setup_reply_cb, (void *)"AUTH", "AUTH %s", c->url.password);
	if (c->url.db != 0)
		(void)redisAsyncCommand(ac, setup_reply_cb, (void *)"SELECT", "SELECT %d", c->url.db);
	log_info("redis.up", "sink=%s redis=%s:%d db=%d: connected", c->name, c->url.host, c->url.port, c->url.db);
	if (c->cbs.up != NULL)
		c->cbs.up(c->cbs.arg);
}

static void connect_timeout_cb(loop *l, int id, void *arg)
{
	redis_conn *c = arg;
	c->connect_timer = 0;
	if (c->ac != NULL && !c->connected) {
		log_warn("redis.connect_timeout", "sink=%s redis=%s:%d: no connection after %lld ms", c->name, c->url.host,
		         c->url.port, (long long)c->connect_timeout_ms);
		redisAsyncContext *ac = c->ac;
		c->ac = NULL;
		redisAsyncFree(ac); /* not connected: no disconnect callback */
		retry_later(c);
	}
}

static void connect_start(redis_conn *c)
{
	c->attempts++;
	redisAsyncContext *ac = redisAsyncConnect(c->url.host, c->url.port);
	if (ac == NULL) {
		log_error("redis.connect_failed", "sink=%s: out of memory", c->name);
		retry_later(c);
		return;
	}
	if (ac->err) {
		log_warn("redis.connect_failed", "sink=%s redis=%s:%d: %s; retrying in %lld ms", c->name, c->url.host,
		         c->url.port, ac->errstr, (long long)c->backoff_ms);
		redisAsyncFree(ac);
		retry_later(c);
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
	connect_start(c);
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
	if (c->connect_timer != 0)
		loop_timer_cancel(c->l, c->connect_timer);
	if (c->reply_timer > 0)
		loop_timer_cancel(c->l, c->reply_timer);
	if (c->ac != NULL && c->connected) {
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
	return c->ac != NULL && c->connected;
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
	log_warn("redis.reset", "sink=%s redis=%s:%d: %s; reconnecting", c->name, c->url.host, c->url.port, why);
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
