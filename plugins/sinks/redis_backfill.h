/*
 * redis_backfill — `walcast backfill`: rebuilds the redis sink's aggregates from a consistent
 * snapshot of the events table and hands over to the stream at exactly the snapshot's LSN
 * (docs/aggregates.md, "Backfill").
 *
 * The snapshot is exported by creating a replication slot: the daemon's own slot when it does
 * not exist yet (a first install: the stream then starts exactly where the snapshot ends), else a
 * temporary one (its consistent point S is past the daemon's confirmed position, which is where
 * the stream restarts; the sink drops what commits before S). Everything under the sink's
 * prefix is deleted, the rows are read through a cursor in that snapshot and applied in chunks
 * with the sink's own per-org script, and the watermarks are set to S last: the global one
 * (PREFIX:wm = S) makes the next `walcast run` skip every transaction the snapshot holds.
 *
 * The daemon must not run meanwhile (its slot is checked: an active slot is refused). A failed
 * or interrupted backfill leaves the aggregates incomplete: run it again (it starts over).
 */
#ifndef WALCAST_REDIS_BACKFILL_H
#define WALCAST_REDIS_BACKFILL_H

#include <stdbool.h>

#include "config.h"

typedef struct redis_backfill_options {
	const char *sink;     /* the [sink.NAME] section to rebuild; NULL: the only redis sink */
	int chunk_rows;       /* rows per cursor fetch and Redis round (10000) */
	bool progress;        /* a progress line on stderr (for a terminal) */
} redis_backfill_options;

/* Runs the backfill for cfg (the configuration `walcast run` uses). Returns the process exit
 * code: 0 done, 1 failed (logged), 2 a configuration problem. Blocks (PostgreSQL and Redis
 * round trips) for as long as the table takes. */
int redis_backfill_main(const config *cfg, const redis_backfill_options *o);

#endif
