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

#endif
