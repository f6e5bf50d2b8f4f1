/*
 * edge_checkpoint — an edge's view of the shared policy-state checkpoint (docs/edges.md, step 1):
 * the tables the postgres checkpoint store keeps (checkpoint_pg.h), read once, READ-ONLY, as a
 * checkpoint_store the pipeline loads its state from and never writes to.
 *
 * An edge holds no slot and must never disturb the active instance's store: no advisory lock,
 * no new generation, no write. One REPEATABLE READ READ ONLY transaction reads the position the
 * active instance confirmed ("pipeline", P), the base and the log records up to P, so that the
 * state is exactly the one as of P whatever the active instance writes meanwhile. The pipeline
 * then resumes at P: the edge reads the stream from id P-0.
 *
 * The store it returns: load(P) replays those rows (any other LSN: -ESTALE); position_get
 * ("pipeline") is P, every other name 0; append, sync, compact and position_put do nothing and
 * succeed (the edge's progress lives nowhere but in memory); log_bytes is 0.
 */
#ifndef WALCAST_EDGE_CHECKPOINT_H
#define WALCAST_EDGE_CHECKPOINT_H

#include "checkpoint.h"

/* Reads the state of slot slot_name in schema of the database conninfo names (as
 * checkpoint_pg_create takes them). 0 and *out (caller owns: checkpoint_store_destroy) with
 * *position = P; -ENOENT when the store holds no state for the slot yet (the active instance
 * has not checkpointed: start it first), -EIO (connection, SQL, damage) or -ENOMEM, with err.
 * Blocks (connect_timeout 10 s, statement_timeout 30 s). */
__attribute__((warn_unused_result)) int edge_checkpoint_read(const char *conninfo, const char *schema,
                                                             const char *slot_name, checkpoint_store **out,
                                                             uint64_t *position, char err[CHECKPOINT_ERROR_MAX]);

#endif
