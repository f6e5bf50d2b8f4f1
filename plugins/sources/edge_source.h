/*
 * edge_source — an edge's source of transactions (txn_source.h): instead of a replication slot
 * it reads the change stream that the active instance's redis_stream sink writes to a Redis
 * Stream (docs/edges.md, "How an edge's source plugs in"), and feeds each entry's wal2json line
 * to walcast's own wal2json decoder, so the pipeline after it is the one of the active instance.
 *
 * Reading. From the resume position P (an end LSN): every entry from id P-0 inclusive — XRANGE
 * in pages of [edge] read_count entries after the last id read, and once a page comes back short,
 * XREAD BLOCK after it; a full XREAD page goes back to XRANGE. Entries before the first one whose
 * index is 0 (a "B", or a message on its own) are skipped: the stream was trimmed inside a
 * transaction. A transaction whose "C" is not in the stream yet (the writer cut it between two
 * rounds) is delivered up to where it is, and the rest follows as it arrives. An entry of index
 * n > 0 must follow entry n - 1 of its transaction, else the stream lost entries (trimmed while
 * this edge was behind) and the source fails rather than deliver a transaction with changes
 * missing.
 *
 * An edge holds no slot: confirm() only records the position (confirmed_lsn), nothing is sent
 * upstream. Redis away: the source is not streaming, reconnects with back-off, and reads on
 * after the last id it delivered. pause() sends no further read, and one from inside a callback
 * leaves the rest of the page in hand undelivered: it is read again after resume().
 *
 * Loop thread only; nothing blocks. Configuration: [edge] stream_url, stream_key, read_count
 * (docs/configuration.md).
 */
#ifndef WALCAST_EDGE_SOURCE_H
#define WALCAST_EDGE_SOURCE_H

#include "txn_source.h"

/* The edge's source. create: -EINVAL with err for a bad [edge] stream_url; snapshot_done and
 * publication_tables are NULL (no slot, no publication). */
extern const txn_source_ops edge_source_ops;

#endif
