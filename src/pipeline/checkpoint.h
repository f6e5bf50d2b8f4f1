/*
 * checkpoint — durable state of the pipeline behind a small store interface: the policy state
 * (memberships and privacy rules, as policy_state_load_row rows) as of any LSN the pipeline may
 * resume from, and named positions (LSNs) of whoever needs one.
 *
 * The policy state is kept as a base (the whole state as of base_lsn) and a log of the policy
 * rows each later transaction changed, stamped with its commit end LSN. Writing costs
 * O(policy-table changes since the last write), never O(all memberships): a transaction that
 * touches no policy table writes nothing. load(at) rebuilds the state as of `at` (base + the
 * logged transactions that ended at or before it), so a pipeline that resumes at its confirmed
 * position gets exactly that position's state even when later transactions were logged.
 * compact(upto) folds the log up to upto into a new base (written atomically) when the log has
 * grown past the base's size.
 *
 * The pipeline appends a transaction's rows at its commit and syncs before it confirms that
 * transaction's LSN to PostgreSQL (DESIGN.md: durable state written before the position it
 * covers is confirmed).
 *
 * Implementations: a local state directory (checkpoint_dir_create, below) and tables in
 * PostgreSQL that a standby on another host reads (checkpoint_pg_create, checkpoint_pg.h).
 * Not thread-safe; the loop thread owns a store. Each op says whether it blocks.
 */
#ifndef WALCAST_CHECKPOINT_H
#define WALCAST_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHECKPOINT_ERROR_MAX 512

typedef struct checkpoint_store checkpoint_store;

/* One policy row: table is POLICY_STATE_MEMBERSHIP or POLICY_STATE_RULES; values as
 * policy_state_load_row takes them (3 text values, NULL for SQL NULL); deleted: the row with
 * that key (membership: org, user; rules: id) is gone. */
typedef struct checkpoint_row {
	int table;
	const char *const *values;
	int deleted;
} checkpoint_row;

typedef int (*checkpoint_row_cb)(void *arg, const checkpoint_row *row);

typedef struct checkpoint_store_ops {
	/* Calls row_cb for each row of the state as of LSN at (base rows, then logged changes in
	 * order, deleted ones with deleted = 1), sets *state_lsn to the LSN the rebuilt state is as
	 * of (<= at; 0 when the store holds nothing: *state_lsn = 0 and no call). *state_lsn < at
	 * means the store knows nothing past *state_lsn (no sync recorded a later LSN, or records
	 * made durable were lost): the caller must not judge changes after it with this state.
	 * -ESTALE when at is before the base (compacted past it), -EIO for damage; row_cb's
	 * non-zero result stops the load and is returned (negative) or -EIO. Blocks (reads). */
	int (*load)(void *impl, uint64_t at, checkpoint_row_cb row_cb, void *arg, uint64_t *state_lsn,
	            char err[CHECKPOINT_ERROR_MAX]);
	/* Logs the rows one transaction (commit end LSN lsn, increasing) changed. Buffered until
	 * sync; nrows == 0 writes nothing. An lsn at or below one already logged (the stream was
	 * resumed before it and sends those transactions again) drops the logged records from lsn
	 * on first. -EINVAL for lsn 0 or at or before the base, -ENOMEM. */
	int (*append)(void *impl, uint64_t lsn, const checkpoint_row *rows, size_t nrows,
	              char err[CHECKPOINT_ERROR_MAX]);
	/* Makes every append durable, and records lsn as the newest LSN the state is known at (also
	 * for transactions that changed no policy row). With nothing appended and no position
	 * changed since the last sync it writes nothing (no I/O): the known-at LSN reaches disk with
	 * the next append or position change (the pipeline puts its confirmed LSN as a position).
	 * Blocks (fdatasync; the positions file: fsync, rename, directory fsync). */
	int (*sync)(void *impl, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX]);
	/* Replaces base and log up to upto with a new base: dump_cb is called with row_cb to emit the
	 * whole state as of upto (deleted rows are ignored). Syncs pending appends first; records
	 * after upto stay in the log. Only up to an LSN the pipeline will never resume before (its
	 * confirmed LSN): a later load(at < upto) fails with -ESTALE. Blocks (writes, fsync,
	 * rename). */
	int (*compact)(void *impl, uint64_t upto,
	               int (*dump_cb)(void *arg, checkpoint_row_cb row_cb, void *row_arg), void *arg,
	               char err[CHECKPOINT_ERROR_MAX]);
	/* Bytes in the log since the base (when to compact). */
	uint64_t (*log_bytes)(void *impl);
	/* Named positions (a sink without a position of its own, the pipeline's confirmed LSN):
	 * get: 0 and *lsn (0 when never set); put: durable at the next sync; -EINVAL for an empty
	 * name, one with '=' or a newline, or longer than 63 bytes; -ENOSPC past 64 names. */
	int (*position_get)(void *impl, const char *name, uint64_t *lsn);
	int (*position_put)(void *impl, const char *name, uint64_t lsn);
	void (*destroy)(void *impl);
} checkpoint_store_ops;

struct checkpoint_store {
	const checkpoint_store_ops *ops;
	void *impl;
};

/* ---- named positions, as every store keeps them ------------------------------------------ */

#define CHECKPOINT_POSITIONS_MAX 64
#define CHECKPOINT_POSITION_NAME_MAX 64

typedef struct checkpoint_position {
	char name[CHECKPOINT_POSITION_NAME_MAX];
	uint64_t lsn;
	bool dirty; /* new or changed since the store cleared it (after writing it) */
} checkpoint_position;

typedef struct checkpoint_positions {
	checkpoint_position pos[CHECKPOINT_POSITIONS_MAX];
	size_t n;
} checkpoint_positions;

/* position_get's rule: the LSN of name, 0 when never set. */
uint64_t checkpoint_positions_get(const checkpoint_positions *ps, const char *name);

/* position_put's rule: 1 when name is new or its LSN changed (the entry marked dirty), 0 when
 * unchanged, -EINVAL for a bad name (empty, '=' or a newline, longer than 63 bytes), -ENOSPC. */
int checkpoint_positions_put(checkpoint_positions *ps, const char *name, uint64_t lsn);

/* Adds a position read back from the store (len bytes of name; not dirty). 0, -EINVAL, -ENOSPC. */
int checkpoint_positions_add(checkpoint_positions *ps, const char *name, size_t len, uint64_t lsn);

/* A store in directory dir (created 0700 when missing, with its parents; files 0600): base,
 * log, positions and a lock file (flock: -EBUSY when another process has the directory open,
 * before anything is read or logged, so a standby may try it again and again).
 * A torn or corrupt log tail is cut off here (log_warn checkpoint.log_cut). 0 and *out (caller
 * owns: checkpoint_store_destroy), or a negative errno with err. Blocks. Format and crash
 * rules: docs/architecture.md, "The policy-state checkpoint". */
__attribute__((warn_unused_result)) int checkpoint_dir_create(const char *dir, checkpoint_store **out,
                                                              char err[CHECKPOINT_ERROR_MAX]);

/* Destroys a store of any kind. Safe on NULL. */
void checkpoint_store_destroy(checkpoint_store *st);

/* ---- glue between the privacy stage and a store ------------------------------------------ */

/* The rows of one transaction, collected from the privacy stage's journal during
 * privacy_commit, then appended at once with the transaction's end LSN (a store takes one
 * append per transaction: a second append at the same LSN would replace the first). */
typedef struct checkpoint_batch checkpoint_batch;

/* 0 and *out (caller owns), or -ENOMEM. */
__attribute__((warn_unused_result)) int checkpoint_batch_create(checkpoint_batch **out);
void checkpoint_batch_destroy(checkpoint_batch *b);

/* A policy_state_journal_cb (privacy_set_journal(pv, checkpoint_batch_journal_cb, batch)):
 * copies the row into the batch. Out of memory is remembered and reported by
 * checkpoint_batch_append. */
void checkpoint_batch_journal_cb(void *batch, int table, const char *const *values, bool deleted);

/* Rows collected since the last append or clear. */
size_t checkpoint_batch_count(const checkpoint_batch *b);

/* Appends the collected rows to st as the transaction ending at lsn (nothing when there are
 * none) and empties the batch either way. 0, -ENOMEM (a row could not be collected: the
 * transaction's rows are incomplete), or the store's error with err. Does not block (append
 * buffers until sync). */
__attribute__((warn_unused_result)) int checkpoint_batch_append(checkpoint_batch *b, checkpoint_store *st,
                                                                uint64_t lsn, char err[CHECKPOINT_ERROR_MAX]);

/* Drops the collected rows (the commit failed). */
void checkpoint_batch_clear(checkpoint_batch *b);

/* A checkpoint_row_cb for load with arg a privacy stage (privacy.h): privacy_load_row, or
 * privacy_remove_row for a deleted row. Call privacy_clear first. */
int checkpoint_privacy_row_cb(void *privacy_stage, const checkpoint_row *row);

/* A dump_cb for compact with arg a privacy stage: the committed state (privacy_state). */
int checkpoint_privacy_dump_cb(void *privacy_stage, checkpoint_row_cb row_cb, void *row_arg);

struct policy;
/* Compacts st up to upto with the state as of upto rebuilt from st itself (a scratch privacy
 * stage for pol: load(upto), then compact(upto) from its dump), so the caller's own state may
 * be ahead of upto — the usual case: compact up to the confirmed LSN while later transactions
 * are already applied and logged. -ESTALE when st does not know the state as of upto (nothing
 * synced that far); otherwise load's, compact's errors or -ENOMEM, with err. Blocks; memory
 * O(state) while it runs. */
__attribute__((warn_unused_result)) int checkpoint_compact_at(checkpoint_store *st, const struct policy *pol,
                                                              uint64_t upto, char err[CHECKPOINT_ERROR_MAX]);

#endif
