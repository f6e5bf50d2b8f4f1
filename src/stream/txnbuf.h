/*
 * txnbuf — one transaction's changes held until its commit.
 *
 * The privacy stage judges a transaction as a unit (DESIGN.md, "equivalent to RLS"): new row
 * versions with the policy state as of the commit, old ones with the state just before the
 * transaction. It cannot judge a change before it has seen the whole transaction, so it appends
 * each change here and replays them, in order, when the COMMIT arrives.
 *
 * Changes are deep-copied into a compact byte form (change records are valid only during the
 * decoder's callback, change.h). Memory is bounded: past mem_limit bytes the buffer spills to an
 * unlinked temporary file in spill_dir and reads it back on replay, so a transaction of any size
 * costs at most mem_limit bytes of changes in memory, plus, once it has spilled, a read-back
 * buffer of min(mem_limit, 64 KiB) (or of the largest single change, when larger). Relations are
 * held by reference (relation_ref, once per distinct relation), so an ALTER TABLE inside the
 * transaction cannot free a relation that earlier changes point at.
 *
 * Not thread-safe: a buffer belongs to the loop thread. Appending may write to the spill file
 * (a local, page-cached write); nothing else blocks.
 */
#ifndef WALCAST_TXNBUF_H
#define WALCAST_TXNBUF_H

#include <stddef.h>
#include <stdint.h>

#include "change.h"

typedef struct txnbuf txnbuf;

/* Creates an empty buffer that keeps at most mem_limit bytes in memory (>= 4096) and spills the
 * rest to a temporary file created in spill_dir (NULL: $TMPDIR, else /tmp) when first needed.
 * Returns 0 and *out (caller owns: txnbuf_destroy), -EINVAL or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int txnbuf_create(size_t mem_limit, const char *spill_dir,
                                                      txnbuf **out);

/* Drops everything held (relations unreferenced, spill file closed) and frees the buffer. Safe
 * on NULL. */
void txnbuf_destroy(txnbuf *tb);

/* Appends a deep copy of c (tuples, error markers, message prefix and content, truncate flags;
 * c->rel is referenced, c->txn is not kept, only whether it was NULL). Returns 0, -ENOMEM,
 * -EINVAL for a change that cannot be held (a tuple or error markers without c->rel, a value
 * kind outside value_kind, a change of 4 GiB or more), or -EIO when the spill file cannot be
 * created or written (logged as txnbuf.spill_failed). On any error the buffer holds what it
 * held before the call. */
__attribute__((warn_unused_result)) int txnbuf_append(txnbuf *tb, const change *c);

/* Calls cb once per appended change, in append order, with a change equal to the appended one
 * except that its txn is the given txn (the transaction as known at its commit; a change
 * appended with a NULL txn, a non-transactional message, keeps NULL). The change and everything
 * it points to are valid during the callback only. cb returns 0 to go on, or anything else to
 * stop: txnbuf_replay then returns that value. -EIO when the spill file cannot be read back
 * (logged as txnbuf.spill_read_failed). Does not allocate. May be called several times before
 * txnbuf_reset; cb must not call txnbuf_append or txnbuf_reset on this buffer. */
__attribute__((warn_unused_result)) int txnbuf_replay(txnbuf *tb, const change_txn *txn,
                                                      int (*cb)(void *arg, const change *c), void *arg);

/* Forgets every change (after a commit was replayed, or a transaction was cut off), releasing
 * their relations and truncating the spill file (kept open for the next spill). Keeps up to
 * mem_limit bytes, and a read-back buffer of up to 64 KiB, allocated for the next transaction.
 * Does not fail. */
void txnbuf_reset(txnbuf *tb);

/* Changes held now. */
size_t txnbuf_count(const txnbuf *tb);

typedef struct txnbuf_stats {
	size_t mem_bytes;       /* bytes held in memory now */
	uint64_t spill_bytes;   /* bytes in the spill file now */
	uint64_t spills;        /* transactions that spilled, since creation */
	uint64_t max_changes;   /* the largest transaction held, in changes */
} txnbuf_stats;

/* Fills *out. */
void txnbuf_get_stats(const txnbuf *tb, txnbuf_stats *out);

#endif
