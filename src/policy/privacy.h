/*
 * privacy — the policy stage: mirrors the policy state (memberships, privacy rules) from the
 * stream and turns each change into what one viewer may see, masks applied and encrypted
 * columns decrypted or nulled, exactly as RLS and the masking views would show it.
 *
 * Judged per transaction (DESIGN.md, "equivalent to RLS"): every new row version (an INSERT, an
 * UPDATE's new row) with the policy state as of the transaction's commit, every old row version
 * (a DELETE, an UPDATE's old row) with the state just before the transaction, whatever the
 * position of the policy changes inside it. The stage therefore keeps two states —
 * PRIVACY_BEFORE, as of the last commit, and PRIVACY_AFTER, that plus the policy changes of the
 * transaction being committed — and holds each transaction's changes (txnbuf: in memory up to
 * a limit, then spilled to a file) until its COMMIT:
 *
 *   privacy_begin(txn)       a transaction starts
 *   privacy_change(c, ...)   c is held (a non-transactional message is judged at once)
 *   privacy_commit(txn, ...) the policy changes are applied, and every held change is handed,
 *                            in order, to a judging callback that calls privacy_view_as (one
 *                            viewer) or privacy_view (explicit viewers, audience.h)
 *   privacy_abort()          the transaction was cut off (reconnect): it leaves no trace
 *
 * Between transactions the two states are equal; only transactions that change a policy table
 * cost more than one pass over their changes. TRUNCATE and messages reach bypass viewers only.
 */
#ifndef WALCAST_PRIVACY_H
#define WALCAST_PRIVACY_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "change.h"
#include "keyring.h"
#include "policy.h"
#include "policy_state.h"
#include "txnbuf.h"

typedef struct privacy privacy;

/* The two policy states: as of the last commit, and as of the commit being judged. */
typedef enum privacy_when {
	PRIVACY_BEFORE = 0,
	PRIVACY_AFTER = 1,
} privacy_when;

/* Bytes of a transaction held in memory before the rest spills to a file, unless
 * privacy_set_txn_buffer says otherwise (config privacy.txn_memory). */
#define PRIVACY_TXN_MEMORY_DEFAULT ((size_t)16 << 20)

/* The viewer: uid in canonical uuid text (policy_uuid_canonical) or NULL; bypass for roles the
 * policy lets through (service_role). */
typedef struct privacy_viewer {
	const char *uid;
	bool bypass;
} privacy_viewer;

#define PRIVACY_ERROR_MAX 512

/* Creates the stage for policy p (borrowed) and keys k (borrowed, may be NULL: encrypted
 * columns then come out as null with the marker "no_keys"), with empty policy states and a
 * transaction buffer of PRIVACY_TXN_MEMORY_DEFAULT spilling to $TMPDIR. 0 and *out (caller
 * owns), or a negative errno with err. Does not block. */
__attribute__((warn_unused_result)) int privacy_create(const policy *p, keyring *k, privacy **out,
                                                       char err[PRIVACY_ERROR_MAX]);
void privacy_destroy(privacy *pv);

/* Replaces the transaction buffer: at most mem_limit bytes (>= 4096) of a transaction in
 * memory, the rest in an unlinked file in spill_dir (NULL: $TMPDIR, else /tmp). Only between
 * transactions. 0, -EBUSY inside a transaction, -EINVAL or -ENOMEM (privacy_error says why; the
 * old buffer stays). Does not block. */
__attribute__((warn_unused_result)) int privacy_set_txn_buffer(privacy *pv, size_t mem_limit,
                                                               const char *spill_dir);

/* Loads memberships and privacy rules through conn (an ordinary connection, typically inside a
 * transaction that set the slot's exported snapshot). Replaces the mirrored state (both states;
 * a transaction in progress is dropped). 0 or -EIO with err. Blocks on the query. */
__attribute__((warn_unused_result)) int privacy_load(privacy *pv, PGconn *conn, char err[PRIVACY_ERROR_MAX]);

/* The query that reads one table of p's policy state (POLICY_STATE_MEMBERSHIP or
 * POLICY_STATE_RULES), three text columns in policy_state_load_row's order, identifiers quoted
 * through conn (connected). What privacy_load and policy_loader run. 0 and *sql (caller frees
 * with free()), -ENOENT when p has no rules table, -EINVAL for another table, -ENOMEM. Does not
 * block. */
__attribute__((warn_unused_result)) int privacy_load_query(const policy *p, PGconn *conn, int table,
                                                           char **sql);

/* Empties both states and drops a transaction in progress (before loading a checkpoint with
 * privacy_load_row). Does not fail. */
void privacy_clear(privacy *pv);

/* Adds one row of a committed state (policy_state_load_row's table and values, e.g. from a
 * checkpoint written with policy_state_dump(privacy_state(pv), ...)) to both states. Only
 * between transactions. 0, -EINVAL or -ENOMEM (privacy_error says why). Does not block. */
__attribute__((warn_unused_result)) int privacy_load_row(privacy *pv, int table, const char *const *values);

/* Removes one row of a committed state by its key (policy_state_remove_row's table and
 * values: a checkpoint's deleted row) from both states. Only between transactions. 0, -EINVAL
 * or -ENOMEM (privacy_error says why). Does not block. */
__attribute__((warn_unused_result)) int privacy_remove_row(privacy *pv, int table, const char *const *values);

/* ---- the transactional path ------------------------------------------------------------ */

/* Called by the stage with each change to judge: during privacy_commit once per held change in
 * order, or from privacy_change/privacy_judge for a change judged at once. The states are set
 * up for privacy_view_as / privacy_view (new rows: AFTER, old rows: BEFORE). Returns >= 0 to go
 * on, or a negative errno to stop: the caller of the stage gets it back. It must not call
 * privacy_begin/change/commit/abort. Views it makes stay valid until it returns. */
typedef int (*privacy_judge_cb)(void *arg, const change *c);

/* A transaction begins (txn as the decoder's begin callback gives it). A transaction still
 * open is dropped as if privacy_abort had been called. 0, or -EIO when an earlier failure left
 * the state unusable (privacy_error). Does not block. */
__attribute__((warn_unused_result)) int privacy_begin(privacy *pv, const change_txn *txn);

/* A change in stream order. Inside a transaction (c->txn != NULL) it is held until
 * privacy_commit (deep-copied: c need not outlive the call) and cb is not called: 0, -EINVAL
 * outside privacy_begin, -ENOMEM, or -EIO when the spill file cannot be written. A
 * non-transactional message (c->txn == NULL) is judged at once through cb, as privacy_judge
 * does: cb's result. Does not block (the spill file is a local, page-cached write). */
__attribute__((warn_unused_result)) int privacy_change(privacy *pv, const change *c,
                                                       privacy_judge_cb cb, void *arg);

/* The transaction's commit (txn with its end LSN): applies its policy changes to the AFTER
 * state, calls cb once per held change in order, then applies them to BEFORE. Returns 0, cb's
 * negative result (it stopped the replay), a policy change's error (-EINVAL for a malformed
 * row, -ENOMEM), or -EIO (spill file unreadable); privacy_error says why. On any error the
 * transaction leaves no trace in the states (both as before privacy_begin). Either way the
 * transaction is over. Does not block. */
__attribute__((warn_unused_result)) int privacy_commit(privacy *pv, const change_txn *txn,
                                                       privacy_judge_cb cb, void *arg);

/* The transaction in progress was cut off (a lost connection; the server sends it again from
 * its beginning): drops what was held. The states are untouched (nothing of a transaction is
 * applied before its commit). Safe outside a transaction. */
void privacy_abort(privacy *pv);

/* The transaction buffer's accounting (memory, spill, the largest transaction). */
void privacy_get_txn_stats(const privacy *pv, txnbuf_stats *out);

/* One change as a transaction of its own, judged through cb with the states set up as in
 * privacy_commit: for unit tests and one-shot use. Returns cb's result (>= 0) or a negative
 * errno (cb's, or a policy change's; the states are then unchanged). Views made by cb stay
 * valid until the next call into the stage. Does not block. */
__attribute__((warn_unused_result)) int privacy_judge(privacy *pv, const change *c,
                                                      privacy_judge_cb cb, void *arg);

/* privacy_judge for one viewer: returns 1 with *out set to the viewer's version of c (values
 * valid until the next call), 0 when v may not see c, or a negative errno with a message from
 * privacy_error(). Does not block. */
__attribute__((warn_unused_result)) int privacy_step(privacy *pv, const change *c,
                                                     const privacy_viewer *v, change *out);

/* The last error message. */
const char *privacy_error(const privacy *pv);

/* The journal of the committed state (policy_state_set_journal on PRIVACY_BEFORE): cb gets
 * every policy row a commit (privacy_commit, privacy_judge/privacy_step) applies to the
 * committed state, in order, during that call — what a checkpoint appends for the
 * transaction. privacy_load, privacy_load_row and privacy_clear do not journal. When the commit
 * returns an error, the rows journaled during it do not describe the state: drop them (and
 * reload the state). NULL cb: none. Does not block. */
void privacy_set_journal(privacy *pv, policy_state_journal_cb cb, void *arg);

/* ---- building blocks, for judging one change for several viewers (audience.h) ---------- */

/* The committed state, as of the last commit (owned by pv; read it, add change callbacks, dump
 * it for a checkpoint; change it only through privacy_load/privacy_load_row). Never NULL. */
policy_state *privacy_state(privacy *pv);

/* The state of when. Inside a judging callback of a transaction that changed policy tables,
 * PRIVACY_AFTER includes its policy changes; otherwise both are equal. Never NULL. */
policy_state *privacy_state_at(privacy *pv, privacy_when when);

/* true inside a judging callback of a transaction that changed policy tables (the two states
 * may differ); false between transactions. */
bool privacy_pending(const privacy *pv);

/* The policy binding for rel (cached per relation version). 0 and *out (NULL: rel's table is not
 * governed, deny it), or -EINVAL / -ENOMEM with privacy_error. *out stays valid until the next
 * privacy_bind of that table. Does not block. */
__attribute__((warn_unused_result)) int privacy_bind(privacy *pv, const relation *rel,
                                                     const policy_bound **out);

/* Fills *out for a viewer with an explicit rank (in the org of the row being judged, in the
 * state of when), uid (canonical text, uid_len bytes, or NULL: then the rank is forced to 0) and
 * bypass flag, with privacy rules looked up in the state of when: PRIVACY_AFTER for a new row
 * version, PRIVACY_BEFORE for an old one (a DELETE's row, an UPDATE's old row). out borrows
 * uid. */
void privacy_viewer_init(privacy *pv, policy_viewer *out, privacy_when when, int rank, const char *uid,
                         size_t uid_len, bool bypass);

/* The viewer's version of c under binding b (privacy_bind of c->rel; NULL for messages,
 * truncates and ungoverned tables: only bypass viewers see those, unchanged). The row (new
 * tuple, or the old one for a DELETE) is judged and transformed for vnew (made for
 * PRIVACY_AFTER, or PRIVACY_BEFORE for a DELETE); an UPDATE's old tuple is included,
 * transformed for vold, only when vold (the viewer with their rank in the old row's org as of
 * PRIVACY_BEFORE; NULL = leave it out) sees it too — otherwise the view has no old tuple at
 * all. Returns 1 and *out (values in pv's arena, valid until the judging callback returns), 0
 * when the row is hidden, or a negative errno with privacy_error. Call it from a judging
 * callback. Does not block; allocates only from the arena once warm. */
__attribute__((warn_unused_result)) int privacy_view(privacy *pv, const change *c,
                                                     const policy_bound *b,
                                                     const policy_viewer *vnew,
                                                     const policy_viewer *vold, change *out);

/* As privacy_view for a privacy_viewer, whose rank is looked up per tuple (the new and the old
 * row may be in different orgs): new row versions in PRIVACY_AFTER, old ones in
 * PRIVACY_BEFORE. What `walcast tail --as` calls from its judging callback. */
__attribute__((warn_unused_result)) int privacy_view_as(privacy *pv, const change *c,
                                                        const privacy_viewer *v, change *out);

#endif
