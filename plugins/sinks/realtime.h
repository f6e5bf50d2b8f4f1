/*
 * realtime — the live sink that speaks the Supabase Realtime protocol (postgres_changes over
 * Phoenix channels) on the daemon's HTTP listener, so that the unmodified @supabase/realtime-js
 * client works against walcast (docs/protocol.md is the user's description, docs/sinks.md the
 * operator's).
 *
 * A [sink.NAME] type = realtime section adds a WebSocket protocol to [http] listen (the sink
 * refuses to start without it): the paths /realtime/v1/websocket and /socket/websocket, the key
 * from the apikey query parameter or the x-api-key header, vsn 1.0.0 and 2.0.0. Every joined
 * channel is one subscriber of the pipeline's audience, with the user and role of the channel's
 * token; the Supabase `data` object of a change is serialized once per audience and shared by
 * every channel that gets it; per channel only the framing (topic, ids of the matching bindings)
 * differs. Each connection has a bounded queue; the frames one transaction queues for a
 * connection are written when the transaction commits.
 *
 * Everything runs on the loop thread.
 */
#ifndef WALCAST_REALTIME_H
#define WALCAST_REALTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "sink.h"

extern const sink_ops realtime_sink_ops;

/* The sink's configuration ([sink.NAME] keys; docs/configuration.md). */
typedef struct realtime_conf {
	int64_t max_connections;      /* WebSocket connections at once; more get 429 */
	int64_t max_channels;         /* channels one connection may join */
	int64_t max_joins_per_second; /* joins one connection may send per second */
	int64_t max_queue_bytes;      /* bytes queued for one connection */
	int64_t max_queue_frames;     /* frames queued for one connection */
	char *slow_consumer;          /* "disconnect" or "drop": what a full queue does */
	int64_t max_message_bytes;    /* largest client message */
	int64_t max_record_bytes;     /* larger records get "Error 413: Payload Too Large" */
	int64_t replay_bytes;         /* the replay buffer's bound (0: no resume) */
	int64_t replay_seconds;       /* how long a transaction stays in it */
} realtime_conf;

/* Counters of an instance (the metrics say the same). */
typedef struct realtime_stats {
	size_t connections;       /* open now */
	size_t channels;          /* joined now (held joins included) */
	uint64_t messages;        /* postgres_changes frames queued */
	uint64_t frames_sent;     /* frames written to sockets */
	uint64_t writes;          /* socket writes that carried them (several frames per write) */
	uint64_t dropped;         /* frames dropped for a full queue (slow_consumer = drop) */
	uint64_t slow_disconnects; /* connections closed for a full queue */
	uint64_t refused;         /* handshakes refused (401/403/429) */
	uint64_t joins_refused;   /* phx_join answered with an error */
	uint64_t data_built;      /* data objects serialized (one per audience of a change) */
} realtime_stats;

/* Fills *out from instance impl (as created by realtime_sink_ops.create). */
void realtime_sink_get_stats(void *impl, realtime_stats *out);

/* ---- for tests: a connection without a socket ------------------------------------------ */

typedef struct rt_conn rt_conn;

/* Opens a socketless connection on instance impl with serializer vsn ("1.0.0"/"2.0.0"/NULL) and
 * handshake key apikey (may be NULL). 0 and *out, -EINVAL, -ENOMEM. Close with
 * realtime_test_close. */
__attribute__((warn_unused_result)) int realtime_test_open(void *impl, const char *vsn,
                                                           const char *apikey, rt_conn **out);

/* Hands the client text frame text[0..len) to the connection as if received. 0, or -EPIPE when
 * the connection is closing. */
__attribute__((warn_unused_result)) int realtime_test_feed(rt_conn *c, const char *text, size_t len);

/* The same for a binary frame (vsn 2.0.0 broadcast pushes). */
__attribute__((warn_unused_result)) int realtime_test_feed_binary(rt_conn *c, const void *data, size_t len);

/* Moves the oldest queued frame into out (cleared first). 1 when a frame was there, 0 when the
 * queue is empty, -ENOMEM. */
__attribute__((warn_unused_result)) int realtime_test_pop(rt_conn *c, buf *out);

/* Frames queued now, and whether the connection is closing (a full queue, an expired token). */
size_t realtime_test_queued(const rt_conn *c);
bool realtime_test_closing(const rt_conn *c);

/* Runs the periodic checks now (held joins, token expiry) as if the clock read now_s. */
void realtime_test_tick(void *impl, int64_t now_s);

/* Closes and frees a socketless connection. */
void realtime_test_close(rt_conn *c);

#endif
