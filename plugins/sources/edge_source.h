/*
 * edge_source — an edge's source of transactions (txn_source.h): instead of a replication slot
 * it reads the change stream that the active instance's redis_stream sink writes to a Redis
 * Stream (docs/edges.md, "How an edge's source plugs in"), and feeds each entry's wal2json line
 * to walcast's own wal2json decoder, so the pipeline after it is the one of the active instance.
 *
 * Reading. From the resume position P (an end LSN): every entry from id P-0 inclusive — XRANGE
 * in pages of [edge] read_count entries after the last id read, each in one MULTI with XINFO
 * STREAM, and once a page comes back short, XREAD COUNT 1 BLOCK after it as a wake-up only (an
 * entry: XRANGE again; XREAD cannot block inside MULTI). The trim: XINFO's entries-added minus
 * length counts the entries ever trimmed (the oldest); more of them than this edge has read
 * means entries it never read are gone — whole transactions, which nothing else would show —
 * and the source fails (docs/edges.md, "The edge that falls behind the trim"; Redis 7.0 and
 * later, an older one has no entries-added and no check). Entries before the first one whose
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
 * Caught up: once a read comes back short (the stream's end reached) between transactions, the
 * source says so through idle_cb, and edge_source_stats' caught_up stays true from then on. The
 * stream's end is known from the XINFO STREAM of each read: its last id, whose LSN part minus the
 * last id read is the lag in bytes of WAL.
 *
 * Relations: edge_source_relations_seed seeds the relation cache from the catalog before the
 * start, read-only SQL over its own short-lived libpq connection to [postgres] conninfo, as the
 * wal2json path does (source.h: source_relations_sql), so that an update's unchanged TOASTed
 * values are known as such.
 *
 * Loop thread only; nothing blocks but edge_source_relations_seed. Configuration: [edge] stream_url, stream_key, read_count
 * (docs/configuration.md).
 */
#ifndef WALCAST_EDGE_SOURCE_H
#define WALCAST_EDGE_SOURCE_H

#include "txn_source.h"

/* The edge's source. create: -EINVAL with err for a bad [edge] stream_url; snapshot_done and
 * publication_tables are NULL (no slot, no publication). */
extern const txn_source_ops edge_source_ops;

typedef struct edge_source_stats {
	uint64_t entries_read;     /* stream entries read (skipped ones included) */
	uint64_t stream_last_lsn;  /* the LSN part of the stream's last id, from the last XINFO (0: none yet) */
	uint64_t read_lsn;         /* the LSN part of the last id read */
	bool caught_up;            /* a read came back short between transactions (see the top) */
	bool streaming;            /* connected to Redis, reading */
} edge_source_stats;

/* Seeds the relation cache the source was created with from the catalog (see the top); before
 * start. 0, -EIO (connection, SQL: logged as edge.relations) or -ENOMEM. Blocks (connect_timeout
 * 10 s, statement_timeout 30 s). */
__attribute__((warn_unused_result)) int edge_source_relations_seed(void *impl);

/* Where an edge that fills its replay buffer from the stream starts ([edge] replay_from_stream,
 * docs/edges.md "Step 4: resume on any edge"): the LSN part of the first id at or after the point a
 * quarter of the way from the stream's first entry to its last (the oldest quarter may be trimmed
 * before the first read). *from is the commit LSN of a transaction (or a message's LSN), 0 when
 * the stream is empty or missing. Blocks (a connection of its own, 2 s timeouts); 0, or -EINVAL /
 * -EIO with err. */
__attribute__((warn_unused_result)) int edge_source_window_start(const config *cfg, uint64_t *from,
                                                                 char err[TXN_SOURCE_ERROR_MAX]);

/* The source's figures, for metrics and /readyz: impl is an edge_source_ops instance. */
void edge_source_stats_get(const void *impl, edge_source_stats *out);

#endif
