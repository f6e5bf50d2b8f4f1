/*
 * policy_loader — reads the policy state (memberships and privacy rules) from PostgreSQL without
 * blocking the loop thread: the initial load from a new slot's exported snapshot (DESIGN.md:
 * libpq only in non-blocking mode on the loop).
 *
 * It opens its own ordinary connection (PQconnectStartParams), starts a REPEATABLE READ, READ
 * ONLY transaction, sets the exported snapshot, and runs the queries privacy_load runs
 * (privacy_load_query) in single-row mode, handing each row to a callback as it arrives; then
 * one done callback says whether the whole state was read. Every step is driven by loop watches
 * on the connection's socket; at most POLICY_LOADER_BATCH rows are handed over per loop turn, so
 * timers and other sockets keep being served while a large roster loads.
 *
 * Use with txn_source.h's snapshot_cb: return 1 (hold the stream), start a loader with the
 * snapshot, and call the source's snapshot_done from done_cb. Not thread-safe: the loop thread
 * owns a loader.
 */
#ifndef WALCAST_POLICY_LOADER_H
#define WALCAST_POLICY_LOADER_H

#include "loop.h"
#include "policy.h"

typedef struct policy_loader policy_loader;

#define POLICY_LOADER_ERROR_MAX 512
#define POLICY_LOADER_BATCH 1000 /* rows handed over per loop turn, at most */

/* One row: table is POLICY_STATE_MEMBERSHIP or POLICY_STATE_RULES, values the three text
 * columns as policy_state_load_row takes them (NULL for SQL NULL), valid during the call.
 * Returns 0 to go on, or a negative errno to stop the load (done_cb then gets it, with err
 * saying which row). It must not destroy the loader. */
typedef int (*policy_loader_row_cb)(void *arg, int table, const char *const *values);

/* The load is over: rc 0 when every row of both tables was handed over, else a negative errno
 * (-EIO: connection or query failure, -ETIMEDOUT, or row_cb's result) and err says what
 * happened. Called once, from a loop callback, after the loader has closed its connection; it
 * may destroy the loader. */
typedef void (*policy_loader_done_cb)(void *arg, int rc, const char *err);

typedef struct policy_loader_params {
	loop *loop;
	const char *conninfo;  /* libpq conninfo or URI of the database (PG* variables apply) */
	const char *snapshot;  /* exported snapshot name; NULL: the database as it is now */
	const policy *pol;     /* which tables and columns (borrowed; must outlive the loader) */
	int timeout_ms;        /* the whole load, 0: none */
	policy_loader_row_cb row_cb;
	policy_loader_done_cb done_cb;
	void *arg;
} policy_loader_params;

/* Starts a load (the strings are copied). 0 and *out (caller owns: policy_loader_destroy, which
 * may be called from done_cb), or a negative errno with err (nothing started; done_cb is not
 * called). Does not block: connecting starts, the rest happens on the loop. */
__attribute__((warn_unused_result)) int policy_loader_start(const policy_loader_params *p, policy_loader **out,
                                                            char err[POLICY_LOADER_ERROR_MAX]);

/* Cancels a load in progress (done_cb is not called) and frees the loader. Safe on NULL and
 * from done_cb. Does not block. */
void policy_loader_destroy(policy_loader *pl);

#endif
