/*
 * checkpoint_pg — the checkpoint store (checkpoint.h) kept in PostgreSQL tables, so that a
 * standby of `walcast run` on another host reads the state the active instance wrote: the same
 * server that holds the slot, transactional, reachable by whoever can reach the slot.
 *
 * Tables in walcast's own schema (default "walcast"; created on first use with CREATE ... IF NOT
 * EXISTS; walcast never touches the application's tables or grants), every row keyed by the
 * replication slot's name, so several slots share the schema:
 *
 *   checkpoint_slots      one row per slot: base_lsn (NULL: no base), known_at, generation
 *   checkpoint_base       the whole state as of base_lsn, one row per policy row (n: its order)
 *   checkpoint_log        the policy rows each transaction changed, (lsn, n) ordered
 *   checkpoint_positions  the named positions
 *
 * Exclusivity: a session-level advisory lock keyed by schema and slot
 * (pg_try_advisory_lock(hashtextextended('SCHEMA.SLOT', 0))) on the store's own connection,
 * like the dir store's flock: -EBUSY at create when another session holds it. The lock goes with
 * the session: a killed instance's backend ends when its socket closes (a host cut off: when the
 * server's TCP keepalives and user timeout, set on the session, give up: about 5 s).
 *
 * Same semantics as the dir store, op by op. append buffers; sync writes the buffered log
 * records, the known-at LSN and the changed positions in ONE transaction (one round trip, an
 * implicit transaction of several statements); a replay (append at or below a logged LSN) drops
 * the logged records from there on in that same transaction; compact replaces base and log up to
 * upto in one transaction; load(at) rebuilds base + log <= at, -ESTALE before the base.
 *
 * Connection: its own libpq connection (never the replication one), blocking like the dir
 * store's fsyncs, with a statement timeout (CHECKPOINT_PG_TIMEOUT_MS) and synchronous_commit on.
 * A lost connection fails the op that met it with a clear error; the next op reconnects and
 * takes the lock again first. If another instance took the lock (or took the store and wrote:
 * the slot row's generation changed) meanwhile, every later op fails with "lost the checkpoint
 * store to another instance" (-ENOLCK) and nothing is written. Not thread-safe (checkpoint.h).
 */
#ifndef WALCAST_CHECKPOINT_PG_H
#define WALCAST_CHECKPOINT_PG_H

#include "checkpoint.h"

#define CHECKPOINT_PG_SCHEMA "walcast"
#define CHECKPOINT_PG_TIMEOUT_MS 30000

/* A store for slot slot_name in schema (NULL: CHECKPOINT_PG_SCHEMA; [a-z_][a-z0-9_]*, at most
 * 63 bytes) of the database conninfo names (a libpq conninfo or URI; empty: the PG* environment
 * variables). Connects, takes the lock (-EBUSY when another session holds it, before anything
 * is read or written, so a standby may try it again and again), creates the schema and tables
 * when missing, and reads the log's index and the positions. 0 and *out (caller owns:
 * checkpoint_store_destroy), -EINVAL (schema or slot name), -EIO (connection, SQL) or -ENOMEM,
 * with err. Blocks. */
__attribute__((warn_unused_result)) int checkpoint_pg_create(const char *conninfo, const char *schema,
                                                             const char *slot_name, checkpoint_store **out,
                                                             char err[CHECKPOINT_ERROR_MAX]);

/* A postgres store (any other store, or NULL: 0 at once): a round trip on its session, made again
 * first when it was lost. 0, -ENOLCK (another instance took the store), -EIO (the server does not
 * answer: with the session's TCP user timeout, within about 5 s of a network cut) with err. The
 * active instance calls it every second: one whose host is cut off finds out and stops about
 * when the server gives its lock up. Blocks. */
__attribute__((warn_unused_result)) int checkpoint_pg_check(checkpoint_store *st, char err[CHECKPOINT_ERROR_MAX]);

/* The takeover of a slot whose previous holder's store session is gone (the caller holds the
 * store's lock, the proof): ends, with pg_terminate_backend, the walsender pid that still
 * streams slot_name, only if it is walcast's own: the same role and application_name as a
 * connection made with conninfo (fallback_application_name "walcast", as the replication
 * connection's). 1 (ended, or gone meanwhile), 0 (another consumer's: err says whose), or -EIO
 * with err (connection, permission, or it did not exit within 5 s). Blocks. */
__attribute__((warn_unused_result)) int checkpoint_pg_walsender_end(const char *conninfo, const char *slot_name,
                                                                    int pid, char err[CHECKPOINT_ERROR_MAX]);

#endif
