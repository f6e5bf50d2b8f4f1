/*
 * slot_status — polls the replication slot's row of pg_replication_slots every few seconds on an
 * ordinary (non-replication) connection, without blocking the loop (libpq non-blocking:
 * PQconnectStartParams/PQconnectPoll and PQsendQueryParams, the socket through loop_watch), and
 * exports what it reads as metrics:
 *
 *   walcast_slot_wal_status{status="reserved|extended|unreserved|lost"}  1 for the current one
 *   walcast_slot_safe_wal_size_bytes   WAL that can still be written before the slot is at risk
 *                                      (absent when max_slot_wal_keep_size is unlimited)
 *   walcast_slot_retained_wal_bytes    the server's WAL insert position minus the slot's restart_lsn
 *   walcast_slot_status_errors_total   polls that failed (connection or query)
 *
 * While the last poll failed, or the slot does not exist, the three gauges are left out of
 * /metrics rather than showing stale values. The connection is kept between polls and opened
 * again after an error. A poll still running when the next is due makes that one skip.
 *
 * A watcher (slot_status_watch: the standby of `walcast run`) is told what each poll found,
 * including the slot's active_pid, and may poll faster meanwhile.
 *
 * Not thread-safe: loop thread only. Nothing here blocks (host-name resolution aside: libpq's
 * PQconnectStartParams resolves the host; give hostaddr or an IP address where that matters).
 */
#ifndef WALCAST_SLOT_STATUS_H
#define WALCAST_SLOT_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "metrics.h"

typedef struct slot_status slot_status;

#define SLOT_STATUS_ERROR_MAX 512

/* Registers the metrics above in r and starts polling: the first poll right away, then every
 * interval_ms (> 0). conninfo: libpq connection string ("" = PG* environment); slot: the slot
 * name. Strings are copied; l and r are borrowed and outlive the poller. 0 and *out (caller owns;
 * slot_status_destroy), -EINVAL with err (a metric already registered, a bad interval),
 * -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int slot_status_create(loop *l, metrics_registry *r,
                                                           const char *conninfo, const char *slot,
                                                           int64_t interval_ms, slot_status **out,
                                                           char err[SLOT_STATUS_ERROR_MAX]);

/* Stops polling, closes the connection (a query in flight is abandoned), removes the metrics
 * from the registry and frees s. Safe on NULL. */
void slot_status_destroy(slot_status *s);

/* What one poll found, for a watcher. */
typedef struct slot_poll {
	bool ok;        /* the poll got an answer; false: the connection or the query failed */
	bool exists;    /* the slot is in pg_replication_slots */
	int active_pid; /* the backend (walsender) streaming from it; 0: nobody */
} slot_poll;

/* Called after every poll with what it found; on the loop thread, from inside the poller: it
 * must not destroy the poller (it may call slot_status_watch and loop_stop). */
typedef void (*slot_status_watch_cb)(void *arg, const slot_poll *found);

/* cb not NULL: polls every interval_ms (> 0) from now on, the next poll right away, and calls
 * cb after each; cb NULL: back to the interval given to slot_status_create, no callback. */
void slot_status_watch(slot_status *s, int64_t interval_ms, slot_status_watch_cb cb, void *arg);

/* Number of polls completed with a result (for tests). */
uint64_t slot_status_polls(const slot_status *s);

#endif
