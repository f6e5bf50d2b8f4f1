/*
 * auditlog — walcast's own writes to the platform database, off the hot path: audit_log rows
 * (a feed join, a refused join, a leave, a stats API read) and, periodically, one sync_health
 * row per org saying how ingestion is doing.
 *
 * auditlog_record() only queues: it never blocks, never touches the network and never fails
 * the caller's work. The queue is bounded (queue_max records): past the bound a record is
 * dropped and counted, and one log line per burst of drops says so. Queued records are written
 * in batches — one INSERT per batch, the whole batch one bound parameter (a JSON array read by
 * jsonb_to_recordset), so no value ever becomes SQL text — when batch_size records are queued
 * or flush_interval_ms after the first of them, on one ordinary (non-replication) libpq
 * connection in non-blocking mode driven by the loop. When PostgreSQL is away the writer
 * reconnects with back-off (reconnect_min_ms doubling up to reconnect_max_ms) and keeps the
 * queue; a batch leaves the queue only once PostgreSQL has answered it.
 *
 * Exactly once: when the connection breaks while a batch is in flight, the server may have
 * committed it before its answer was lost; after reconnecting the writer first asks whether the
 * batch's first row is there (its org, action, actor, target and recording microsecond) and
 * writes the batch again only when it is not. (At least once in two corner cases: that first
 * row's org was deleted meanwhile, or the server refuses the question for good.) A batch the
 * server refuses for its content (not for being away) is dropped and counted.
 * Rows of an org that no longer exists are skipped (counted as dropped, reason no_org), so one
 * deleted org never blocks the others.
 *
 * Nothing loops: the rows written here come back through the WAL as ordinary audit_log and
 * sync_health inserts and reach their readers like any other row; nothing in walcast records
 * an audit row because of a delivered change (sinks record for requests and connections only).
 *
 * Not thread-safe: the loop thread owns a writer. Nothing here blocks.
 */
#ifndef WALCAST_AUDITLOG_H
#define WALCAST_AUDITLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "metrics.h"

typedef struct auditlog auditlog;

/* The actions walcast's sinks record, one vocabulary for every sink. One row per org concerned
 * (audit_log.org_id is required: an access that concerns no known org is not audited). */
#define AUDITLOG_JOIN "realtime.join"                 /* a channel joined: target_table, detail.topic */
#define AUDITLOG_JOIN_REFUSED "realtime.join_refused" /* detail.reason: the error sent to the client */
#define AUDITLOG_LEAVE "realtime.leave"               /* a channel left or closed */
#define AUDITLOG_STATS_READ "stats.read"              /* a stats API request: detail.path, detail.range */

#define AUDITLOG_ERROR_MAX 512

/* What the pipeline says about ingestion, for sync_health: known false leaves the tick out. */
typedef struct auditlog_health {
	bool known;
	bool paused;            /* not streaming, or held back by durable sinks */
	uint64_t server_end;    /* the server's WAL end as last reported (0: unknown) */
	uint64_t processed;     /* how far the stream has been taken: the end of the last transaction
	                         * offered or the position confirmed, the higher */
	int64_t last_commit_us; /* commit time of the last transaction offered, microseconds since
	                         * the Unix epoch (0: none yet) */
} auditlog_health;

/* Fills *out; called on the loop thread every AUDITLOG_SAMPLE_MS (to know since when the stream
 * has been behind the server) and at each sync_health tick. Must not block. */
typedef void (*auditlog_health_cb)(void *arg, auditlog_health *out);

#define AUDITLOG_SAMPLE_MS 1000

typedef struct auditlog_params {
	loop *loop;
	metrics_registry *metrics;  /* may be NULL: no metrics registered */
	const char *conninfo;       /* libpq conninfo or URI ("" = PG* variables); never replication */
	int64_t flush_interval_ms;  /* longest a record waits for its batch (>= 1) */
	size_t batch_size;          /* records per INSERT (1..10000) */
	size_t queue_max;           /* records held at most; past it records are dropped (>= 1) */
	int64_t reconnect_min_ms;   /* first reconnect delay */
	int64_t reconnect_max_ms;   /* longest reconnect delay */
	int64_t health_interval_ms; /* sync_health tick; 0 = no sync_health rows */
	int64_t lagging_after_ms;   /* lag above this is status 'lagging' */
	auditlog_health_cb health_cb; /* required when health_interval_ms > 0 */
	void *health_arg;
} auditlog_params;

/* Counters, for tests and the metrics. */
typedef struct auditlog_stats {
	uint64_t recorded;        /* records accepted into the queue */
	uint64_t written;         /* audit_log rows PostgreSQL inserted */
	uint64_t dropped_full;    /* refused: the queue was full */
	uint64_t dropped_invalid; /* refused: bad uuid, empty action, detail not JSON, not UTF-8 */
	uint64_t dropped_rejected;/* in a batch PostgreSQL refused for its content */
	uint64_t dropped_no_org;  /* skipped: their org does not exist */
	uint64_t batches;         /* INSERTs that succeeded */
	uint64_t errors;          /* failed connections and statements */
	uint64_t health_rows;     /* sync_health rows inserted */
	uint64_t health_ticks;    /* sync_health INSERTs that succeeded */
	size_t queued;            /* records waiting now (the in-flight batch included) */
	bool connected;
} auditlog_stats;

/* Creates a writer and starts connecting (on the loop). 0 and *out (caller owns:
 * auditlog_destroy), or a negative errno with err (-EINVAL for bad parameters, -ENOMEM, or the
 * metrics registration's error). Strings are copied. Does not block. */
__attribute__((warn_unused_result)) int auditlog_create(const auditlog_params *p, auditlog **out,
                                                        char err[AUDITLOG_ERROR_MAX]);

/* Queues one audit_log row: org (uuid text, required), actor (uuid text or NULL), action
 * (non-empty), target_table and target_id (NULL for none), detail (JSON text or NULL for {}).
 * Everything is copied. Never blocks, never fails the caller: a record that is invalid, comes
 * while the queue is full or after auditlog_drain is dropped and counted. w NULL is a no-op
 * (auditing off). */
void auditlog_record(auditlog *w, const char *org, const char *actor, const char *action,
                     const char *target_table, const char *target_id, const char *detail);

/* auditlog_record for events that may repeat many times a second (a stats API read): a record
 * identical to one still queued and not yet sent (same org, actor, action, targets and detail
 * text) is not queued again but counted in that one's detail.count (absent: 1). So a row stands
 * for every identical event from its created_at until its batch left, at most flush_interval_ms
 * later: who did what to which org, and how often, without one row (and one WAL record decoded
 * back) per event. */
void auditlog_record_counted(auditlog *w, const char *org, const char *actor, const char *action,
                             const char *target_table, const char *target_id, const char *detail);

/* Called once by auditlog_drain: remaining is the number of records not written (0: all). */
typedef void (*auditlog_drained_cb)(void *arg, size_t remaining);

/* Shutdown: stops the sync_health ticks and refuses new records, writes what is queued as fast
 * as the server takes it, then calls done_cb — when the queue is empty, or after timeout_ms
 * with what is left. done_cb runs from a loop callback, once; it may destroy the writer. Does
 * not block. */
void auditlog_drain(auditlog *w, int64_t timeout_ms, auditlog_drained_cb done_cb, void *arg);

/* Fills *out. */
void auditlog_get_stats(const auditlog *w, auditlog_stats *out);

/* sync_health's lag in seconds: 0 when the stream has taken everything the server reported;
 * else the smaller of the age of the last transaction offered (now_us - last_commit_us) and the
 * time the stream has been behind without a break (now_us - behind_since_us; 0: unknown). The
 * first alone grows on a database idle for walcast while other WAL is written; the second alone
 * grows under a steady load that is never quite caught up; each bounds the true lag from
 * above. Times in microseconds since the Unix epoch. */
double auditlog_health_lag(const auditlog_health *h, int64_t behind_since_us, int64_t now_us);

/* The sync_health status word: "paused", "lagging" (lag_s above lagging_after_ms) or "ok". */
const char *auditlog_health_status(bool paused, double lag_s, int64_t lagging_after_ms);

/* Closes the connection, frees the queue (unwritten records are lost: drain first) and removes
 * the writer's metrics. Safe on NULL. Does not block. */
void auditlog_destroy(auditlog *w);

#endif
