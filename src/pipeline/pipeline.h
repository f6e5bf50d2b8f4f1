/*
 * pipeline — the one path from the WAL to every sink, shared by `walcast run` and `walcast tail`:
 *
 *   source (txn_source.h: decoded transactions; the slot's: source.h) → privacy (held per
 *   transaction, judged at its commit: DESIGN.md) → audience (one judgement and one
 *   serialization per audience) → sinks (sink.h) → acknowledgement: the flush LSN sent to
 *   PostgreSQL is the lowest position of the durable sinks and of the policy-state checkpoint,
 *   never more; with no durable sink, what the live sinks were offered.
 *
 * The policy state is applied once per change, then fanned out. Its checkpoint (checkpoint.h)
 * is written before the LSN it covers is confirmed, so a restart — even after kill -9 — resumes
 * with exactly the state of its resume point. On a fresh slot the state is loaded from the
 * slot's exported snapshot without blocking the loop.
 *
 * Not thread-safe: the loop thread owns a pipeline. Nothing here blocks except where said.
 */
#ifndef WALCAST_PIPELINE_H
#define WALCAST_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "audience.h"
#include "checkpoint.h"
#include "config.h"
#include "keyring.h"
#include "loop.h"
#include "metrics.h"
#include "policy.h"
#include "sink.h"
#include "txn_source.h"

typedef struct pipeline pipeline;

#define PIPELINE_ERROR_MAX 512

/* What a front end (`walcast tail`) may be told besides the stop (pipeline_params.event_cb). */
typedef enum pipeline_event {
	PIPELINE_STATE_CHECKPOINT = 1, /* the policy state was loaded from the checkpoint store */
	PIPELINE_STATE_SNAPSHOT,       /* ... from the new slot's exported snapshot (exact) */
	PIPELINE_STATE_CURRENT,        /* ... from the current database (an existing slot, no checkpoint) */
	PIPELINE_ABANDONED,            /* a transaction was cut off before its commit (connection lost):
	                                * it comes again from its beginning (lsn 0) */
	PIPELINE_IDLE,                 /* a keepalive between transactions: everything the server sent
	                                * up to lsn was received and offered */
} pipeline_event;

typedef struct pipeline_params {
	loop *loop;
	const config *cfg;          /* [postgres], [replication], [privacy], [pipeline] */
	/* Where the transactions come from: replication_source_ops (source.h) holds the slot.
	 * Required. */
	const txn_source_ops *source;
	const policy *pol;          /* NULL: no policy stage (every sink subscriber must be bypass) */
	keyring *keys;              /* may be NULL */
	metrics_registry *metrics;  /* may be NULL */
	/* The policy-state checkpoint; NULL: the state is not kept across restarts (it is loaded
	 * from a new slot's snapshot or, for an existing slot, from the current database: `walcast
	 * tail --as` to stdout). Without a policy, nothing is held per transaction: each change is
	 * offered to the sinks as it arrives (begin, deliver..., commit; abort when the transaction
	 * is cut off), the way `walcast tail` without a viewer always printed. */
	checkpoint_store *store;
	struct http_listener *http; /* handed to the sinks (sink_env.http); may be NULL */
	struct auditlog *audit;     /* handed to the sinks (sink_env.audit); may be NULL */
	/* Called once when the pipeline stops by itself (a permanent source error, a fatal sink
	 * error: code 1) or after pipeline_drain completed (code 0). */
	void (*stopped_cb)(void *arg, int code);
	/* Told of the events above, on the loop thread, from inside the pipeline's own callbacks:
	 * it must not call into the pipeline (defer, e.g. with a 0 ms loop timer). lsn: the state's
	 * LSN where known (0: none), the keepalive's
	 * WAL end. May be NULL. */
	void (*event_cb)(void *arg, pipeline_event ev, uint64_t lsn);
	void *arg;
} pipeline_params;

/* Creates a pipeline (nothing connects yet). 0 and *out (caller owns), or a negative errno with
 * err. Does not block. */
__attribute__((warn_unused_result)) int pipeline_create(const pipeline_params *p, pipeline **out,
                                                        char err[PIPELINE_ERROR_MAX]);

/* Adds a sink instance of type ops named name with its parsed configuration (sink.h). Before
 * pipeline_start only. 0 or a negative errno with err. May block as the sink's create does. */
__attribute__((warn_unused_result)) int pipeline_add_sink(pipeline *pl, const sink_ops *ops,
                                                          const char *name, const void *conf,
                                                          char err[PIPELINE_ERROR_MAX]);

/* Starts: reads the checkpoint and the durable sinks' positions, connects, loads the policy
 * state (from the checkpoint, or asynchronously from a new slot's snapshot), streams. 0 or a
 * negative errno with err. A permanent error the source reports itself while starting (a bad
 * conninfo: source.failed) returns 0: stopped_cb(1) follows from the loop. Does not block. */
__attribute__((warn_unused_result)) int pipeline_start(pipeline *pl, char err[PIPELINE_ERROR_MAX]);

/* SIGTERM: stop reading the stream, flush every durable sink, write the checkpoint, send the
 * final feedback, then stopped_cb(0) — within a bounded time even when the network is cut
 * (after which stopped_cb(1) says what was left unconfirmed). Does not block. */
void pipeline_drain(pipeline *pl);

/* For a front end whose sinks stop taking changes by themselves (`tail -n`, `--until-lsn`:
 * jsonl_conf's limits): stop reading the stream, flush every durable sink, confirm what they
 * hold, then stopped_cb(0) once no durable sink has bytes pending (what was offered after a
 * sink stopped taking changes is not waited for: it comes again next time). Bounded like
 * pipeline_drain. Does not block. */
void pipeline_finish(pipeline *pl);

/* Frees everything (sinks included). Safe on NULL. */
void pipeline_destroy(pipeline *pl);

/* The audience live sinks subscribe their connections in (sink_env.subscribe does it for
 * sinks). Never NULL after create with a policy. */
audience *pipeline_audience(pipeline *pl);

/* The source's publication_tables (txn_source.h), for `tail --create-publication`: before
 * pipeline_start. 0, -EINVAL, -ENOMEM, or -ENOTSUP for a source that reads no publication. */
__attribute__((warn_unused_result)) int pipeline_publication_tables(pipeline *pl, const char *const *schemas,
                                                                    const char *const *names, size_t n);

/* The source instance (pipeline_params.source's), for its own getters (an edge's figures:
 * edge_source.h); valid until pipeline_destroy. */
void *pipeline_source(pipeline *pl);

/* The committed policy state the pipeline judges with (a front end's checks, e.g. "the viewer
 * is a member of no org"); valid until pipeline_destroy. */
struct policy_state;
const struct policy_state *pipeline_policy_state(pipeline *pl);

typedef struct pipeline_status {
	bool streaming;            /* connected and past the initial state load */
	bool ready;                /* streaming and every durable sink healthy */
	bool paused;               /* held back by durable sinks' pending bytes */
	uint64_t server_wal_end;   /* the server's WAL position as last reported */
	uint64_t confirmed_lsn;    /* the flush LSN last sent */
	uint64_t last_commit_end;  /* end LSN of the last transaction offered to the sinks */
	int64_t last_commit_time;  /* its commit time, microseconds since the Unix epoch (0: none) */
	uint64_t changes;          /* changes offered to the policy stage */
	uint64_t transactions;
} pipeline_status;

/* Fills *out. */
void pipeline_get_status(const pipeline *pl, pipeline_status *out);

/* The health of the i-th sink, in the order added (for /readyz): 0 and *name (owned by the
 * pipeline, valid until pipeline_destroy), *durable and *healthy (the sink's healthy(), true when
 * it has none); -ENOENT when i is past the last sink. Calls the sink's healthy(): does not block. */
__attribute__((warn_unused_result)) int pipeline_sink_health(const pipeline *pl, size_t i, const char **name,
                                                             bool *durable, bool *healthy);

#endif
