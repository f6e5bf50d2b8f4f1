/*
 * edge_checkpoint — an edge's view of the shared policy-state checkpoint (docs/edges.md, step 1):
 * the tables the postgres checkpoint store keeps (checkpoint_pg.h), read once, READ-ONLY, as a
 * checkpoint_store the pipeline loads its state from and never writes to.
 *
 * An edge holds no slot and must never disturb the active instance's store: no advisory lock,
 * no new generation, no write. One REPEATABLE READ READ ONLY transaction reads the position the
 * active instance confirmed ("pipeline", P), then the base and the log records up to the edge's
 * start S, so that the state is exactly the one as of S whatever the active instance writes
 * meanwhile. S is P, or an earlier position the edge asks for (an edge that fills its replay
 * buffer from the stream's window, docs/edges.md "Step 4: resume on any edge") but never one before the
 * base: the state is known from the base on (records are stamped with their transaction's end
 * LSN, so the log up to S is every transaction that committed before S). The pipeline then
 * resumes at S: the edge reads the stream from id S-0.
 *
 * The store it returns: load(S) replays those rows, once (they are released then; a second load
 * or any other LSN: -ESTALE); position_get("pipeline") is S, every other name 0; append, sync,
 * compact and position_put do nothing and succeed (the edge's progress lives nowhere but in
 * memory); log_bytes is 0.
 */
#ifndef WALCAST_EDGE_CHECKPOINT_H
#define WALCAST_EDGE_CHECKPOINT_H

#include "checkpoint.h"

/* Reads the state of slot slot_name in schema of the database conninfo names (as
 * checkpoint_pg_create takes them), as of S = from when from is not 0 and lies before P (raised
 * to the base when it lies before that), else P. 0 and *out (caller owns:
 * checkpoint_store_destroy) with *position = S and *confirmed = P; -ENOENT when the store holds
 * no state for the slot yet (the active instance has not checkpointed: start it first), -EIO
 * (connection, SQL, damage) or -ENOMEM, with err. Blocks (connect_timeout 10 s,
 * statement_timeout 30 s). */
__attribute__((warn_unused_result)) int edge_checkpoint_read(const char *conninfo, const char *schema,
                                                             const char *slot_name, uint64_t from,
                                                             checkpoint_store **out, uint64_t *position,
                                                             uint64_t *confirmed, char err[CHECKPOINT_ERROR_MAX]);

#endif
