/*
 * pipeline_metrics — the daemon-level metrics of the pipeline in a metrics registry (what
 * /metrics shows; docs/metrics.md lists each with its meaning and unit):
 *
 *   walcast_replication_lag_bytes      server WAL position minus the confirmed flush LSN
 *   walcast_replication_lag_seconds    now minus the commit time of the last change processed
 *   walcast_streaming, walcast_paused  0/1
 *   walcast_confirmed_lsn              the flush LSN last sent, as a number
 *   walcast_transactions_total         transactions offered to the sinks
 *   walcast_changes_total{table,action}
 *   walcast_decode_errors_total, walcast_policy_errors_total
 *   walcast_sink_position_lsn{sink}, walcast_sink_deliveries_total{sink},
 *   walcast_sink_drops_total{sink}, walcast_connections{sink}, walcast_sink_pending_bytes{sink}
 *
 * Why here (src/pipeline) and not in plugins/http: the counters are bumped by the pipeline's hot
 * path (a change counted, a decode error), and arrows point down only, so their owner must be
 * at or below the pipeline; the HTTP listener only renders the registry. The values that are
 * state rather than events (lag, streaming) are read at scrape time from a status callback
 * (pipeline_get_status in the daemon, a fake in tests), so this module needs no database.
 *
 * Not thread-safe: loop thread only. Nothing here blocks.
 */
#ifndef WALCAST_PIPELINE_METRICS_H
#define WALCAST_PIPELINE_METRICS_H

#include <stdint.h>

#include "change.h"
#include "metrics.h"
#include "pipeline.h"

typedef struct pipeline_metrics pipeline_metrics;

/* Fills *out (zeroed before the call) with the pipeline's current status. Called at scrape
 * time on the loop thread; must not block or call metrics_* functions. */
typedef void (*pipeline_metrics_status_cb)(void *arg, pipeline_status *out);

/* Per-sink handles, updated by the pipeline or the sink itself. Owned by the registry; valid
 * until pipeline_metrics_sink_remove or pipeline_metrics_destroy. NULL for a series that was not
 * asked for (pipeline_metrics_sink_add's what). */
typedef struct pipeline_metrics_sink {
	metrics_gauge_i *position;       /* walcast_sink_position_lsn: the LSN the sink has taken */
	metrics_counter *deliveries;     /* walcast_sink_deliveries_total */
	metrics_counter *drops;          /* walcast_sink_drops_total */
	metrics_gauge_i *connections;    /* walcast_connections: open client connections */
	metrics_gauge_i *pending;        /* walcast_sink_pending_bytes: held, not yet durable */
} pipeline_metrics_sink;

/* Which series of a sink to register: only those something updates (a series nobody sets would
 * show a misleading 0). */
enum {
	PIPELINE_METRICS_POSITION = 1u << 0,    /* durable sinks */
	PIPELINE_METRICS_DELIVERIES = 1u << 1,
	PIPELINE_METRICS_DROPS = 1u << 2,       /* live sinks that drop for slow consumers */
	PIPELINE_METRICS_CONNECTIONS = 1u << 3, /* sinks with client connections */
	PIPELINE_METRICS_PENDING = 1u << 4,     /* durable sinks */
};

/* Registers the families in r and their status-derived children (read through status(arg) at
 * each render). 0 and *out (caller owns; pipeline_metrics_destroy), -EINVAL with err when a
 * family is already registered in r, -ENOMEM. r is unchanged on error. */
__attribute__((warn_unused_result)) int pipeline_metrics_create(metrics_registry *r,
                                                                pipeline_metrics_status_cb status,
                                                                void *arg, pipeline_metrics **out,
                                                                char err[METRICS_ERROR_MAX]);

/* Removes the families from the registry and frees pm. Safe on NULL. */
void pipeline_metrics_destroy(pipeline_metrics *pm);

/* Counts one change of schema.table with action (CHANGE_MESSAGE is not counted). The first
 * change of a (table, action) registers its series (allocates; an allocation failure is logged
 * once and the change goes uncounted); later ones cost a hash lookup and an add. */
void pipeline_metrics_change(pipeline_metrics *pm, const char *schema, const char *table,
                             change_action action);

/* Counts a WAL message the decoder could not read / a policy evaluation error. */
void pipeline_metrics_decode_error(pipeline_metrics *pm);
void pipeline_metrics_policy_error(pipeline_metrics *pm);

/* Registers the series of sink name (label sink=NAME) that what asks for (PIPELINE_METRICS_*);
 * the others stay NULL in *out. 0 and *out, -EINVAL (a sink of that name is registered: err says
 * so), -ENOMEM; nothing is registered on error. */
__attribute__((warn_unused_result)) int pipeline_metrics_sink_add(pipeline_metrics *pm, const char *name,
                                                                  unsigned what, pipeline_metrics_sink *out,
                                                                  char err[METRICS_ERROR_MAX]);

/* A live sink's shared series (sink_env.live_metrics): registers walcast_sink_drops_total{sink=
 * name} into *drops when drops is not NULL, and walcast_connections{sink=name} read through
 * connections(arg) at render time when connections is not NULL. 0, or -EINVAL (already
 * registered for name: err says so) or -ENOMEM with nothing registered. */
__attribute__((warn_unused_result)) int pipeline_metrics_sink_live(pipeline_metrics *pm, const char *name,
                                                                   metrics_counter **drops,
                                                                   metrics_read_cb connections, void *arg,
                                                                   char err[METRICS_ERROR_MAX]);

/* Removes the series of sink name (a sink going away); its handles become invalid. */
void pipeline_metrics_sink_remove(pipeline_metrics *pm, const char *name);

#endif
