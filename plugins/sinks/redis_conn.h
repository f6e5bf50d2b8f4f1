/*
 * redis_conn — one asynchronous hiredis (0.14) connection on walcast's loop, kept up.
 *
 * hiredis' own libuv adapter ignores poll errors (a refused connect never completes), so this
 * module drives hiredis through loop.h's fd watch, which reports an error on the socket as
 * readiness: hiredis then reads the error and fails the connect. Around that: a connect timeout,
 * AUTH and SELECT from the URL before anything else, reconnect with exponential back-off after
 * any failure, and callbacks when the connection comes up and when it goes down. Commands are
 * pipelined: hiredis writes them when the socket is writable and answers in order.
 *
 * With a redis+sentinel:// URL each connect first asks the sentinels for the master's address
 * (redis_url below), on the same loop: a failover is followed at the next reconnect, which the
 * old master causes itself (Sentinel closes its clients when it demotes it; writes to a replica
 * fail with READONLY, and the sinks reconnect on a failed write).
 *
 * Loop thread only (but redis_connect_blocking). Nothing blocks (the host name is resolved by
 * hiredis with getaddrinfo: use an address or localhost).
 */
#ifndef WALCAST_REDIS_CONN_H
#define WALCAST_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

struct redisAsyncContext;

#define REDIS_CONN_ERROR_MAX 256

#define REDIS_SENTINELS_MAX 8
#define REDIS_SENTINEL_PORT 26379

/* A server's address. */
typedef struct redis_addr {
	char host[256];
	int port;
} redis_addr;

/* A parsed URL, one of
 *   redis://[[user]:password@]host[:port][/db]
 *   redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
 * The second names a primary that Redis Sentinel manages: the sentinels (port 26379 unless
 * given, at most REDIS_SENTINELS_MAX) are asked in turn for MASTER's address at every connect,
 * and the server they name is used only once it says it is a master (ROLE) — after a failover
 * the sentinels may name the old one for a while. The password is the data server's; the
 * sentinels are asked without one. */
typedef struct redis_url {
	char host[256];      /* redis://: the server; redis+sentinel://: the first sentinel */
	int port;
	int db;
	char password[256];  /* "" when none */
	char master[128];    /* redis+sentinel://: the name the sentinels monitor; "" otherwise */
	redis_addr sentinels[REDIS_SENTINELS_MAX];
	size_t nsentinels;   /* 0: redis:// */
} redis_url;

/* Parses url into *out. 0, or -EINVAL with err saying what is wrong. */
__attribute__((warn_unused_result)) int redis_url_parse(const char *url, redis_url *out,
                                                        char err[REDIS_CONN_ERROR_MAX]);

struct redisContext;

/* A blocking connection to url's server (for start-up reads and the backfill, never on the
 * loop): with sentinels, asks them for the master first; then connects, AUTH, SELECT and, with
 * sentinels, checks ROLE is master; every step bounded by timeout_ms. The context (redisFree),
 * or NULL with err. */
struct redisContext *redis_connect_blocking(const redis_url *url, int64_t timeout_ms, char err[REDIS_CONN_ERROR_MAX]);

typedef struct redis_conn redis_conn;

/* Called on the loop thread when the connection is ready for commands (after AUTH and SELECT),
 * and when it went down (every pending command's callback has been called with a NULL reply
 * before). why: a short reason. They may send commands (up) and call redis_conn_reset (not
 * redis_conn_destroy). */
typedef struct redis_conn_cbs {
	void (*up)(void *arg);
	void (*down)(void *arg, const char *why);
	void *arg;
} redis_conn_cbs;

/* Creates a connection to url and starts connecting on l. connect_timeout_ms bounds one connect
 * attempt; retries wait backoff_min_ms, doubling up to backoff_max_ms. name appears in log
 * lines. 0 and *out (caller owns: redis_conn_destroy), -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int redis_conn_create(loop *l, const char *name, const redis_url *url,
                                                          int64_t connect_timeout_ms, int64_t backoff_min_ms,
                                                          int64_t backoff_max_ms, const redis_conn_cbs *cbs,
                                                          redis_conn **out);

/* Writes what is queued once more without waiting (best effort), closes the connection (pending
 * commands get a NULL reply; the down callback is not called) and frees c. Safe on NULL. Not
 * from inside a callback of c. */
void redis_conn_destroy(redis_conn *c);

/* true while commands can be sent. */
bool redis_conn_up(const redis_conn *c);

/* Connect attempts started since creation (the first included): for tests and metrics. */
uint64_t redis_conn_attempts(const redis_conn *c);

/* The reply callback: reply is a redisReply, or NULL when the connection went down before the
 * reply came. It must not call redis_conn_destroy. */
typedef void (*redis_conn_reply_cb)(redis_conn *c, void *reply, void *privdata);

/* Queues one command (argv as for redisAsyncCommandArgv; copied). 0, -ENOTCONN when the
 * connection is not up (cb is not called), or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_conn_command(redis_conn *c, redis_conn_reply_cb cb, void *privdata,
                                                           int argc, const char **argv, const size_t *argvlen);

/* A durable sink's wait for replicas (its wait_replicas and wait_timeout keys): after each
 * round it asks WAIT replicas timeout_ms and confirms the round only once that many replicas
 * have it, so that a failover to one of them loses nothing PostgreSQL was told is durable. */
typedef struct redis_wait {
	const char *name;   /* the sink's, for log lines */
	int64_t replicas;   /* 0: no WAIT */
	int64_t timeout_ms; /* how long one WAIT blocks */
	bool behind;        /* the last WAIT came back short (logged once until they catch up) */
} redis_wait;

/* Checks the keys: 0, or -EINVAL with err when a WAIT could block as long as the reply timeout
 * (redis_conn_set_reply_timeout) that takes a silent server for a dead one. */
__attribute__((warn_unused_result)) int redis_wait_check(const redis_wait *w, int64_t reply_timeout_ms,
                                                         char err[REDIS_CONN_ERROR_MAX]);

/* Queues WAIT on c; cb gets its reply, for redis_wait_judge. Returns as redis_conn_command. */
__attribute__((warn_unused_result)) int redis_wait_send(const redis_wait *w, redis_conn *c, redis_conn_reply_cb cb,
                                                        void *privdata);

/* WAIT's reply (a redisReply): 1 when enough replicas acknowledged, 0 when fewer (logged when
 * they fall behind and when they catch up: ask again), -1 when it is not WAIT's answer (NULL, an
 * error). */
int redis_wait_judge(redis_wait *w, const void *reply);

/* Drops the connection (redis_conn_reset, "no reply in ms ms") whenever commands are pending and
 * none was answered for ms — a server that stopped answering (frozen, a half-open connection)
 * is then noticed by everyone sharing the connection, and their pending commands get NULL.
 * 0 (the default) turns it off. Checked every min(ms / 2, 500) ms. 0 or -ENOMEM (the timer). */
__attribute__((warn_unused_result)) int redis_conn_set_reply_timeout(redis_conn *c, int64_t ms);

/* Drops the connection now (a command timed out, the server answered nonsense) and reconnects
 * after the back-off: pending commands get a NULL reply, then the down callback runs. */
void redis_conn_reset(redis_conn *c, const char *why);

#endif
