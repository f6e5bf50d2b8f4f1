/*
 * privacy — the policy stage: mirrors the policy state (memberships, privacy rules) from the
 * stream and turns each change into what one viewer may see, masks applied and encrypted
 * columns decrypted or nulled, exactly as RLS and the masking views would show it.
 *
 * Order of judgement (DESIGN.md, "equivalent to RLS"): an INSERT or UPDATE is judged with the
 * policy state after the change itself is applied, a DELETE (or TRUNCATE) with the state before
 * it. privacy_step() does both in that order. Within one transaction that mixes policy changes
 * with data changes, each data change sees the policy changes before it in the stream.
 */
#ifndef WALCAST_PRIVACY_H
#define WALCAST_PRIVACY_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "change.h"
#include "keyring.h"
#include "policy.h"
#include "policy_state.h"

typedef struct privacy privacy;

/* The viewer: uid in canonical uuid text (policy_uuid_canonical) or NULL; bypass for roles the
 * policy lets through (service_role). */
typedef struct privacy_viewer {
	const char *uid;
	bool bypass;
} privacy_viewer;

#define PRIVACY_ERROR_MAX 512

/* Creates the stage for policy p (borrowed) and keys k (borrowed, may be NULL: encrypted
 * columns then come out as null with the marker "no_keys"). 0 and *out (caller owns), or a
 * negative errno with err. Does not block. */
__attribute__((warn_unused_result)) int privacy_create(const policy *p, keyring *k, privacy **out,
                                                       char err[PRIVACY_ERROR_MAX]);
void privacy_destroy(privacy *pv);

/* Loads memberships and privacy rules through conn (an ordinary connection, typically inside a
 * transaction that set the slot's exported snapshot). Replaces the mirrored state. 0 or -EIO
 * with err. Blocks on the query. */
__attribute__((warn_unused_result)) int privacy_load(privacy *pv, PGconn *conn, char err[PRIVACY_ERROR_MAX]);

/* Applies c to the mirrored state (and judges it for v) in the order above. Returns 1 with *out
 * set to the viewer's version of c (values valid until the next call), 0 when v may not see c,
 * or a negative errno with a message from privacy_error(). Does not block. */
__attribute__((warn_unused_result)) int privacy_step(privacy *pv, const change *c,
                                                     const privacy_viewer *v, change *out);

/* The last error message. */
const char *privacy_error(const privacy *pv);

/* ---- building blocks, for judging one change for several viewers (audience.h) ---------- */

/* Called by privacy_judge with the change, at the right moment relative to applying it. It
 * returns what privacy_judge should return (>= 0), or a negative errno. */
typedef int (*privacy_judge_cb)(void *arg, const change *c);

/* Judges c in the order above: forgets the values of the previous change (the arena), then
 * calls cb before applying c to the mirrored state (DELETE, TRUNCATE) or after it (the rest).
 * Returns cb's result, cb's negative error (c is then not applied when cb ran first), or the
 * state's error (privacy_error says why). Views made by privacy_view during cb stay valid until
 * the next privacy_judge/privacy_step. Does not block. */
__attribute__((warn_unused_result)) int privacy_judge(privacy *pv, const change *c,
                                                      privacy_judge_cb cb, void *arg);

/* The mirrored state (owned by pv): for rank lookups, member enumeration and its change
 * callback. Never NULL. */
policy_state *privacy_state(privacy *pv);

/* The policy binding for rel (cached per relation version). 0 and *out (NULL: rel's table is not
 * governed, deny it), or -EINVAL / -ENOMEM with privacy_error. *out stays valid until the next
 * privacy_bind of that table. Does not block. */
__attribute__((warn_unused_result)) int privacy_bind(privacy *pv, const relation *rel,
                                                     const policy_bound **out);

/* Fills *out for a viewer with an explicit rank (in the org of the row being judged), uid
 * (canonical text, uid_len bytes, or NULL: then the rank is forced to 0) and bypass flag, with
 * privacy rules looked up in pv's mirrored state. out borrows uid. */
void privacy_viewer_init(privacy *pv, policy_viewer *out, int rank, const char *uid, size_t uid_len,
                         bool bypass);

/* The viewer's version of c under binding b (privacy_bind of c->rel; NULL for messages,
 * truncates and ungoverned tables: only bypass viewers see those, unchanged). The row (new
 * tuple, or the old one for a DELETE) is judged and transformed for vnew; an UPDATE's old
 * tuple is included, transformed for vold, only when vold (the viewer with their rank in the
 * old row's org; NULL = leave it out) sees it too. Returns 1 and *out (values in pv's arena,
 * valid until the next privacy_judge), 0 when the row is hidden, or a negative errno with
 * privacy_error. Judges against the state as it is now: call it from a privacy_judge callback.
 * Does not block; allocates only from the arena once warm. */
__attribute__((warn_unused_result)) int privacy_view(privacy *pv, const change *c,
                                                     const policy_bound *b,
                                                     const policy_viewer *vnew,
                                                     const policy_viewer *vold, change *out);

/* As privacy_view for a privacy_viewer, whose rank is looked up per tuple (the new and the old
 * row may be in different orgs). What privacy_step does inside privacy_judge. */
__attribute__((warn_unused_result)) int privacy_view_as(privacy *pv, const change *c,
                                                        const privacy_viewer *v, change *out);

#endif
