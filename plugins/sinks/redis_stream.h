/*
 * redis_stream — the durable sink that publishes the normalized change stream to one Redis
 * Stream, for stateless edges (issue 12; docs/edges.md for the format and the guarantees).
 *
 * It subscribes as the bypass audience and takes every change of every table as the stream
 * carried it (audience_delivery.source: unmasked, encrypted columns still encrypted), policy
 * tables included, and writes each transaction as wal2json format-v2 lines — "B", one line per
 * change, "C" — one stream entry per line, so that an edge feeds the entries to walcast's own
 * wal2json decoder and runs the same pipeline on them. Entry ids derive from LSNs: the
 * transaction's commit LSN and the line's index in it ("<commit_lsn>-<n>"; a non-transactional
 * message "<lsn>-0"), so a replay after a restart writes the same ids and a Lua script skips
 * every id at or below the stream's last one: each committed change is in the stream once.
 *
 * position() is the end LSN of the last transaction whose "C" entry Redis acknowledged. Redis
 * down or slow: nothing more is confirmed, entries wait within pipeline.max_pending
 * (pending_bytes), healthy() is false, the connection is retried, and the round in flight is
 * sent again once it is back (its entries already written are skipped).
 *
 * The sink type is registered as "redis_stream" in src/pipeline/sink.c; its keys are in
 * redis_stream.c.
 */
#ifndef WALCAST_REDIS_STREAM_H
#define WALCAST_REDIS_STREAM_H

#include <stdint.h>

#include "buf.h"
#include "change.h"
#include "sink.h"

/* A [sink.NAME] type = redis_stream section, as its key table fills it. Strings are owned by the
 * configuration. */
typedef struct redis_stream_conf {
	char *url;
	char *key;
	int64_t window;            /* entries kept (XTRIM MAXLEN ~); 0: no limit */
	int64_t window_wal;        /* bytes of WAL kept behind the newest commit (XTRIM MINID ~); 0: off */
	int64_t round_bytes;       /* the most entry bytes one round (one script) carries */
	int64_t flush_interval_ms;
	int64_t connect_timeout_ms;
	int64_t command_timeout_ms;
	int64_t reconnect_max_ms;
	int64_t wait_replicas;     /* a round is confirmed once this many replicas have it (WAIT) */
	int64_t wait_timeout_ms;
} redis_stream_conf;

/* The sink type "redis_stream" (durable). */
extern const sink_ops redis_stream_sink_ops;

/* ---- the entry format (for the sink, its tests and the edge's source) --------------------- */

/* Appends txn's "B" line: {"action":"B","xid":..,"timestamp":"..","lsn":"X/Y","nextlsn":"X/Y"}
 * (timestamp: the commit time as PostgreSQL prints a timestamptz in UTC). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_stream_begin_write(buf *out, const change_txn *txn);

/* Appends txn's "C" line (the same keys as "B"). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_stream_commit_write(buf *out, const change_txn *txn);

/* Appends c as one wal2json format-v2 line as walcast's wal2json decoder reads it: "I", "U",
 * "D" with "columns" (new tuple; unchanged TOASTed values left out, as wal2json does),
 * "identity" (the old tuple's columns the WAL carried) and "pk" (the relation's key columns),
 * each column {"name","typeoid","value"}; "T"; "M" (transactional or not). Values are typed as
 * wal2json types them (numbers, true/false, bytea without its \x) except that numbers
 * PostgreSQL prints as NaN or Infinity stay strings (wal2json writes null). c must not be a view
 * (masked or decrypted). 0, -ENOMEM, or -EINVAL for a change without a relation. */
__attribute__((warn_unused_result)) int redis_stream_change_write(buf *out, const change *c);

#endif
