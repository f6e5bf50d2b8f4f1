/*
 * redis — the durable aggregates sink: call and SMS statistics kept in Redis, incrementally and
 * exactly once (docs/aggregates.md).
 *
 * It subscribes as the bypass audience (every events row, unmasked), turns each change of the
 * events table into counter deltas (redis_agg.h), merges the deltas of many transactions per key
 * in memory, and applies them with one Lua script per org that checks and sets the org's
 * watermark (the commit LSN of the last transaction of that org applied) atomically with the
 * deltas. Its position() is the end LSN up to which every org's script has been accepted; it is
 * read from Redis at start (the global watermark, written after every org of a round; 0 while
 * Redis does not answer, when nothing is confirmed until it does). Redis
 * down or slow: nothing more is confirmed, deltas keep merging within pipeline.max_pending
 * (pending_bytes), healthy() is false, the connection is retried, and what was owed is applied
 * once Redis is back: a round whose replies were lost is sent again and the watermark makes a
 * repeat a no-op.
 *
 * The sink type is registered as "redis" in src/pipeline/sink.c; its keys are in redis.c.
 */
#ifndef WALCAST_REDIS_SINK_H
#define WALCAST_REDIS_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include "sink.h"

/* A [sink.NAME] type = redis section, as its key table (redis_sink_ops.keys) fills it. Strings
 * are owned by the configuration. */
typedef struct redis_sink_conf {
	char *url;
	bool cluster;
	char *prefix;
	char *table;
	char *missed_statuses;
	int64_t hour_window;
	int64_t flush_interval_ms;
	int64_t connect_timeout_ms;
	int64_t command_timeout_ms;
	int64_t reconnect_max_ms;
	int64_t wait_replicas;
	int64_t wait_timeout_ms;
} redis_sink_conf;

/* The sink type "redis" (durable). */
extern const sink_ops redis_sink_ops;

#endif
