/*
 * txnrows — the row versions a transaction has created so far, by table and replica-identity
 * key, so that the privacy stage can tell an old row version (a DELETE's row, an UPDATE's old
 * row) that an earlier change of the same transaction created from one that existed before the
 * transaction (privacy.h: the first is judged with the state as of the commit, the second with
 * the state just before the transaction).
 *
 * Identity. A row version is identified by its table (schema and name) and the values of the
 * relation's key columns (rel_column.key: the replica identity under pgoutput, which is every
 * column under REPLICA IDENTITY FULL; the primary key under wal2json), or of every column when
 * the relation marks none. At any moment a table holds at most one row per key, so once a
 * version with key K was created in the transaction, any later old version with key K is that
 * version or a later one of the transaction (the row that had K before it was deleted, or moved
 * to another key, first); an UPDATE that changes the key records the new key, and the old key
 * may stay recorded. Not exact where keys are not unique at every moment (DEFERRABLE unique
 * constraints, tables without a key under REPLICA IDENTITY FULL holding identical rows), and a
 * key value the WAL does not carry (an unchanged out-of-line TOAST value in a key column) is not
 * recorded: such a version is then judged as one that existed before.
 *
 * Memory: one 16-byte keyed hash (SipHash-2-4, 128 bits, random key per set) per version, in an
 * open-addressing table at most 3/4 full: 21 to 43 bytes per row inserted or updated, for the
 * length of one transaction (txnrows_reset frees a large table). Collisions between distinct
 * keys: about n^2 / 2^129 for n versions, so never in practice. Not thread-safe; never blocks.
 */
#ifndef WALCAST_TXNROWS_H
#define WALCAST_TXNROWS_H

#include <stdbool.h>
#include <stddef.h>

#include "change.h"
#include "relcache.h"

typedef struct txnrows txnrows;

/* Creates an empty set. 0 and *out (caller owns: txnrows_destroy), or -ENOMEM. */
__attribute__((warn_unused_result)) int txnrows_create(txnrows **out);

/* Frees the set. Safe on NULL. */
void txnrows_destroy(txnrows *t);

/* Empties the set (the next transaction); a table grown large is freed down to its initial
 * size. Does not fail. */
void txnrows_reset(txnrows *t);

/* Records the version tuple (rel->ncols values: an INSERT's or an UPDATE's new row) of rel.
 * Returns 1 when recorded, 0 when its key cannot be read from the tuple (absent or unchanged
 * TOAST in a key column: not recorded), or -ENOMEM (the set is unchanged). */
__attribute__((warn_unused_result)) int txnrows_add(txnrows *t, const relation *rel,
                                                    const change_value *tuple);

/* true when a version of rel with tuple's key (an old row: a DELETE's, an UPDATE's) was recorded
 * since the last reset. Allocation-free. */
bool txnrows_has(txnrows *t, const relation *rel, const change_value *tuple);

/* Versions recorded since the last reset, and the bytes the table holds now. */
size_t txnrows_count(const txnrows *t);
size_t txnrows_bytes(const txnrows *t);

#endif
