/*
 * redis_cluster — walcast's own Redis Cluster router (Debian 12's hiredis 0.14 knows no cluster):
 * commands routed by the slot of their key, over one redis_conn per cluster node.
 *
 * The slot map comes from CLUSTER SLOTS (asked of any connected node). A command goes to the
 * master of its key's slot. MOVED: the slot is pointed at the node named, the whole map is read
 * again, and the command is sent there. ASK: ASKING and the command go to the node named, once,
 * and the map is left alone. CLUSTERDOWN, TRYAGAIN, LOADING, MASTERDOWN, or a connection that
 * drops before the reply: the command waits (queued, bounded) and is sent again after the map was
 * read again (with back-off). A command is therefore sent at least once; callers make a repeat
 * harmless (the aggregates' watermarks: docs/aggregates.md, "Redis Cluster").
 *
 * A REDIS_CLUSTER_DURABLE command's success is only reported once the node's replicas hold it:
 * its reply is kept, and a WAIT on the same connection (one for every reply that came before;
 * the sink's redis_wait: wait_replicas, wait_timeout) releases it; a connection lost before that
 * sends the command again (to the replica promoted meanwhile, say). As with Sentinel, a master
 * with fewer replicas (right after a failover, until one joins it) holds its durable writes
 * unanswered. Without wait_replicas, durable is the same as not.
 *
 * The router starts from one or more seed nodes (any of them may be down: the map is read from
 * the first that answers); once it has the map it knows every node, and forgets the seeds the map
 * does not name.
 *
 * Not supported: commands without a key, multi-key commands across slots (Redis answers
 * CROSSSLOT), order between commands in flight (a resent command may overtake a later one:
 * callers that need order wait for the reply first), pub/sub, transactions.
 *
 * The pure parts (key slots, redirections, the map) are exported for tests. Loop thread only;
 * nothing blocks.
 */
#ifndef WALCAST_REDIS_CLUSTER_H
#define WALCAST_REDIS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "redis_conn.h"

struct redisReply;

#define REDIS_CLUSTER_SLOTS 16384
#define REDIS_CLUSTER_HOST_MAX 256

/* ---- the pure parts --------------------------------------------------------------------------- */

/* The slot of a key: CRC16-XMODEM of the key, or of its hash tag (the bytes between the first
 * '{' and the next '}', when not empty), mod 16384. */
uint16_t redis_cluster_key_slot(const char *key, size_t len);

/* The index in argv of the key a command is routed by: argv[3] for EVAL/EVALSHA/FCALL with at
 * least one key, else argv[1]. -EINVAL when the command has no key. */
__attribute__((warn_unused_result)) int redis_cluster_command_key(int argc, const char *const *argv,
                                                                  const size_t *argvlen);

typedef enum redis_cluster_error {
	REDIS_CLUSTER_ERR_OTHER,   /* an answer for the caller */
	REDIS_CLUSTER_ERR_MOVED,   /* MOVED slot host:port */
	REDIS_CLUSTER_ERR_ASK,     /* ASK slot host:port */
	REDIS_CLUSTER_ERR_RETRY,   /* CLUSTERDOWN, TRYAGAIN, LOADING, MASTERDOWN: later, elsewhere */
} redis_cluster_error;

typedef struct redis_cluster_redirect {
	redis_cluster_error kind;
	uint16_t slot;
	char host[REDIS_CLUSTER_HOST_MAX];
	int port;
} redis_cluster_redirect;

/* Classifies an error reply (its text, len bytes); for MOVED and ASK parses the slot and the
 * address. A MOVED or ASK that does not parse is REDIS_CLUSTER_ERR_OTHER. */
redis_cluster_error redis_cluster_error_parse(const char *s, size_t len, redis_cluster_redirect *out);

/* A node of the map: addresses are only appended, so an index stays valid. */
typedef struct redis_cluster_node {
	char host[REDIS_CLUSTER_HOST_MAX];
	int port;
	bool present;  /* named by the last CLUSTER SLOTS (or a redirection since) */
	bool master;   /* serves at least one slot */
	int replicas;  /* live replicas the map lists for it */
} redis_cluster_node;

/* The slot map: slot -> master node. Embedded: init/fini. */
typedef struct redis_cluster_map {
	redis_cluster_node *nodes;
	size_t nnodes, cap;
	int32_t slot[REDIS_CLUSTER_SLOTS]; /* index in nodes, -1: served by nobody known */
} redis_cluster_map;

void redis_cluster_map_init(redis_cluster_map *m);
void redis_cluster_map_fini(redis_cluster_map *m);

/* The index of host:port in m, appended (not present, not master) when add and absent. The
 * index, -ENOENT (absent, !add) or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_cluster_map_node(redis_cluster_map *m, const char *host, int port,
                                                               bool add);

/* Replaces m's slots, masters and replicas with what a CLUSTER SLOTS reply says (a node with
 * an empty host name is at default_host). Nodes not named are kept, not present. m is left as it
 * was on a failure. 0, -EPROTO (not a CLUSTER SLOTS reply; err says why) or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_cluster_map_apply_slots(redis_cluster_map *m,
                                                                      const struct redisReply *r,
                                                                      const char *default_host,
                                                                      char err[REDIS_CONN_ERROR_MAX]);

/* A MOVED: slot is now served by host:port (a master from now on). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_cluster_map_move(redis_cluster_map *m, uint16_t slot, const char *host,
                                                               int port);

/* true when every slot has a master. */
bool redis_cluster_map_complete(const redis_cluster_map *m);

/* ---- the router ------------------------------------------------------------------------------ */

typedef struct redis_cluster redis_cluster;

/* Called on the loop thread. up: the router accepts commands (the map was read: at start, or
 * after redis_cluster_reset). down: after redis_cluster_reset, once every command not answered
 * got its NULL reply. node_up: the connection to a node came up; commands sent on node here (a
 * SCRIPT LOAD) go before anything the router sends on it. They may send commands and call
 * redis_cluster_reset (not redis_cluster_destroy). */
typedef struct redis_cluster_cbs {
	void (*up)(void *arg);
	void (*down)(void *arg, const char *why);
	void (*node_up)(void *arg, redis_conn *node);
	void *arg;
} redis_cluster_cbs;

/* A router's connection timings: as redis_conn_create; the map is read again at most every
 * backoff_min_ms while something is wrong, backing off to backoff_max_ms; reply_timeout_ms as
 * redis_conn_set_reply_timeout for every node's connection (0: off). */
typedef struct redis_cluster_timing {
	int64_t connect_timeout_ms, backoff_min_ms, backoff_max_ms, reply_timeout_ms;
} redis_cluster_timing;

#define REDIS_CLUSTER_SEEDS_MAX 16

/* Parses a cluster URL: redis://[[user]:password@]host[:port][,host[:port]...][/0] into at most
 * max seeds (each a redis_url with the same password). 0 and *n, or -EINVAL with err. */
__attribute__((warn_unused_result)) int redis_cluster_url_parse(const char *url, redis_url *seeds, size_t max,
                                                                size_t *n, char err[REDIS_CONN_ERROR_MAX]);

/* Creates a router that learns the cluster from seeds[0..nseeds) (the first one's password goes
 * to every node; db must be 0, no sentinels) and starts connecting to every seed on l. wait:
 * how durable commands are waited for (NULL: not at all; copied). queue_max bounds the commands
 * not answered yet. 0 and *out (redis_cluster_destroy), -EINVAL (no seed, a db, sentinels),
 * -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int redis_cluster_create(loop *l, const char *name, const redis_url *seeds,
                                                             size_t nseeds, const redis_cluster_timing *t,
                                                             const redis_wait *wait, size_t queue_max,
                                                             const redis_cluster_cbs *cbs, redis_cluster **out);

/* Closes every connection (commands not answered get a NULL reply; down is not called) and
 * frees c. Safe on NULL. Not from inside a callback of c. */
void redis_cluster_destroy(redis_cluster *c);

/* true while commands are accepted (the map is known). */
bool redis_cluster_ready(const redis_cluster *c);

/* true when every slot's master is connected and no command waits for a redirection, a
 * failover or a reconnect. */
bool redis_cluster_healthy(const redis_cluster *c);

/* A number that changes whenever a node's connection goes up or down or a slot changes master
 * (what was read before may predate what Redis lost or was given since). */
uint64_t redis_cluster_epoch(const redis_cluster *c);

#define REDIS_CLUSTER_DURABLE 1u /* report success once the replicas hold the write (WAIT) */

/* Routes one command by its key (redis_cluster_command_key; argv copied). cb gets the node's
 * connection (or NULL) and the final reply: never a MOVED, ASK or retryable error; NULL only
 * after redis_cluster_reset or redis_cluster_destroy. 0, -ENOTCONN (not ready: cb is not called),
 * -EINVAL (no key), -ENOBUFS (queue_max commands not answered yet) or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_cluster_command(redis_cluster *c, unsigned flags, redis_conn_reply_cb cb,
                                                              void *privdata, int argc, const char **argv,
                                                              const size_t *argvlen);

/* Starts over: every command not answered gets a NULL reply now (a late answer is dropped),
 * every node connection is dropped and made again (node_up runs again), down is called, and up
 * once the map was read again. */
void redis_cluster_reset(redis_cluster *c, const char *why);

/* ---- either one -------------------------------------------------------------------------------- */

/* What the redis sink and the stats API talk to: one plain connection, or the router (exactly
 * one of the two is set). The functions forward to the one set; for a plain connection, ready
 * and healthy are redis_conn_up, epoch is redis_conn_attempts, flags are ignored. */
typedef struct redis_link {
	redis_conn *conn;
	redis_cluster *cluster;
} redis_link;

__attribute__((warn_unused_result)) int redis_link_command(const redis_link *k, unsigned flags, redis_conn_reply_cb cb,
                                                           void *privdata, int argc, const char **argv,
                                                           const size_t *argvlen);
bool redis_link_ready(const redis_link *k);
bool redis_link_healthy(const redis_link *k);
uint64_t redis_link_epoch(const redis_link *k);
void redis_link_reset(const redis_link *k, const char *why);

#endif
