/*
 * audience — subscribers grouped by what they may see, so that the cost of a change grows with
 * the number of distinct audiences it reaches, not with the number of connections or with the
 * subscribers of other orgs (issue 3, "Audiences").
 *
 * A subscriber is an opaque pointer supplied by the caller (a WebSocket connection, an nng
 * topic...) with a user id or none and a bypass flag; several subscribers may share a user id
 * (several connections of one user). For a row of org O, the audiences are:
 *
 *   - the bypass subscribers: one audience, every row unmasked;
 *   - per rank r present among O's subscribed members: one audience of every such member whose
 *     uid is not the value of one of the table's uid columns (policy_bound_uid_columns), judged
 *     once with the uid of one of them as representative (any of them decides for all: their
 *     decisions differ only through `column = uid`, which is false for each of them alike);
 *   - each subscribed member named by a uid column (e.g. events.user_id, the handling user):
 *     one audience of their own, judged with their uid;
 *
 * and nothing at all, without any work, for subscribers who are not members of O. When an
 * UPDATE moves a row to another org, or its transaction changed the policy state, the rank
 * audiences are split further by the members' rank in the old row's org just before the
 * transaction (the old tuple is delivered only to those who saw it).
 *
 * Judged per transaction, as the privacy stage does (privacy.h): a new row version (INSERT,
 * UPDATE's new row) reaches the members of its org as of the transaction's commit, an old one
 * (DELETE, UPDATE's old row) those who could see it just before the transaction — or, for an old
 * version that an earlier change of the same transaction created (privacy_old_state), those who
 * see it as of the commit, the members who received its creation. So there are
 * two indexes org -> subscribed members by rank, one per policy state of the stage, each
 * following subscribe/unsubscribe and, through its state's change callback, every promotion,
 * demotion, removal and re-add. Each audience's view is computed once (privacy_view, the same
 * transform as `walcast tail --as`) and serialized once (change_json_write) into a
 * reference-counted payload that a sink may keep and send to every subscriber of the audience;
 * audiences of one change whose views carry the same values (ranks that see a row alike, the
 * bypass audience and a rank that masks nothing) share one payload, serialized once.
 *
 * Use: audience_begin, audience_change for each change, audience_commit (which delivers the
 * transaction's changes in order) or audience_abort (a transaction cut off). Not thread-safe:
 * the loop thread owns an audience. Nothing blocks.
 */
#ifndef WALCAST_AUDIENCE_H
#define WALCAST_AUDIENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "privacy.h"

typedef struct audience audience;
typedef struct audience_sub audience_sub;
typedef struct audience_payload audience_payload;

#define AUDIENCE_ERROR_MAX 512

/* ---- payloads ------------------------------------------------------------------------- */

/* The serialized view: change_json_write's JSON object, without a newline. Pointer and length
 * stay valid while a reference is held. */
const char *audience_payload_data(const audience_payload *p, size_t *len);

/* Takes one more reference (a sink queueing the payload for later sends). Returns p. */
audience_payload *audience_payload_ref(audience_payload *p);

/* Drops one reference; the last one returns the payload to its pool (or frees it once the
 * audience is destroyed). Payloads may outlive their audience. Safe on NULL. */
void audience_payload_unref(audience_payload *p);

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Creates an empty registry judging with pv (borrowed; it must outlive the audience; its
 * transactions are driven through the audience from now on) and serializing with
 * change_json_write flags json_flags. Adds a change callback to each of pv's two policy states
 * (policy_state_add_change_cb) to follow membership changes. Returns 0 and *out (caller owns:
 * audience_destroy), -ENOMEM, or -ENOSPC when a state has no callback slot left. Does not
 * block. */
__attribute__((warn_unused_result)) int audience_create(privacy *pv, unsigned json_flags,
                                                        audience **out);

/* Frees every subscriber handle and the indexes, and removes its state change callbacks.
 * Payloads still referenced stay valid until their last unref. Safe on NULL. */
void audience_destroy(audience *a);

/* ---- subscribers ------------------------------------------------------------------------ */

/* Registers subscriber opaque (not owned, passed back in deliveries) with user id uid (uuid
 * text; NULL = none: such a subscriber sees nothing unless bypass) and bypass flag (every row,
 * unmasked; the uid is then irrelevant). Returns 0 and a handle in *out (valid until
 * audience_unsubscribe), -EINVAL when uid is not a uuid, or -ENOMEM (nothing registered).
 * O(orgs of the user) for the first subscriber of a user. Does not block. */
__attribute__((warn_unused_result)) int audience_subscribe(audience *a, void *opaque, const char *uid,
                                                           bool bypass, audience_sub **out);

/* Registers a wildcard subscriber opaque (not owned): it is offered every audience of every
 * row, whether or not a member of the row's org is subscribed — the bypass audience; per rank of
 * the row's org, the members no uid column of the row names (judged with a uid no user has);
 * each member of the org a uid column names, on their own. For sinks that fan out by topic
 * (nng). Where a subscribed members' audience is judged the same way, the wildcards are in its
 * delivery, not offered a second one. On a split row (moved to another org, or a transaction
 * that changed the policy) the wildcards' rank audiences get no old tuple. Returns 0 and a
 * handle (audience_unsubscribe), or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int audience_subscribe_wildcard(audience *a, void *opaque,
                                                                    audience_sub **out);

/* Opts subscriber s (a user's, from audience_subscribe; nothing for bypass, wildcard or
 * uid-less ones) into left_view deliveries (on) or out of them: an UPDATE whose old row the
 * user could see (judged as the old row always is) and whose new row they may not (reassigned,
 * masked away by a rule, moved to another org) reaches s as an extra delivery with left_view set
 * whose view is a DELETE of the old row as the user saw it. Subscribers not opted in never get
 * such deliveries. Does not fail; does not block. */
void audience_sub_set_left_view(audience_sub *s, bool on);

/* Unregisters a subscriber and frees its handle. Does not fail. */
void audience_unsubscribe(audience *a, audience_sub *s);

/* ---- publishing ------------------------------------------------------------------------- */

/* One audience of one change. Everything is valid during the callback only, except the payload
 * when the callback takes a reference. */
typedef struct audience_delivery {
	const change *view;         /* the audience's version of the change */
	const change *source;       /* the change as the stream carried it, before any judgement
	                             * (unmasked, not decrypted): for sinks that republish the stream */
	audience_payload *payload;  /* view serialized once; audience_payload_ref to keep it */
	void *const *subs;          /* the audience's subscribers (their opaque pointers) */
	size_t nsubs;
	int rank;                   /* the members' rank in the row's org; 0 for the bypass audience */
	bool bypass;                /* the bypass audience */
	bool individual;            /* one user named by a uid column of the row */
	/* Who the audience is, for sinks that name it (nng topics); NULL where it does not apply
	 * (all three for the bypass audience and for messages). */
	const char *org;            /* the row's org, canonical uuid text */
	const char *role;           /* rank's role name (the members' rank, also for individual) */
	const char *uid;            /* individual: the named user's uuid text */
	/* Only for subscribers opted in with audience_sub_set_left_view: the row left the
	 * audience's view (view is the UPDATE's old row as a DELETE; org is the old row's). */
	bool left_view;
} audience_delivery;

/* Called once per audience that sees a change, changes in stream order. Return 0, or a
 * negative errno to stop. It must not call back into the audience. */
typedef int (*audience_deliver_cb)(void *arg, const audience_delivery *d);

/* A transaction begins (privacy_begin). 0 or a negative errno (audience_error). */
__attribute__((warn_unused_result)) int audience_begin(audience *a, const change_txn *txn);

/* A change in stream order: held until audience_commit (privacy_change), or, for a
 * non-transactional message (c->txn == NULL), delivered at once through cb. Returns the
 * number of audiences delivered (0 for a held change), or a negative errno (audience_error). */
__attribute__((warn_unused_result)) int audience_change(audience *a, const change *c,
                                                        audience_deliver_cb cb, void *arg);

/* The transaction commits: applies its policy changes and calls cb once per audience that sees
 * each of its changes, in order (privacy_commit). Returns the number of audiences delivered
 * (>= 0), or a negative errno: cb's, -ENOMEM, or the privacy stage's (a malformed policy
 * change, a table that cannot be bound, an unreadable spill file); the transaction then leaves
 * no trace in the policy state. An audience whose judgement fails for a reason of its own (a
 * column a rule needs missing from the WAL) is skipped and counted in stats.failed, with
 * audience_error saying why; the others are served. Allocation-free once warm (the payload
 * pool, the privacy arena and the scratch arrays are reused). Does not block. */
__attribute__((warn_unused_result)) int audience_commit(audience *a, const change_txn *txn,
                                                        audience_deliver_cb cb, void *arg);

/* The transaction in progress was cut off: nothing of it is delivered or kept. */
void audience_abort(audience *a);

/* One change as a transaction of its own (privacy_judge): applies it and calls cb once per
 * audience that sees it, as audience_commit would. For tests and one-shot use. */
__attribute__((warn_unused_result)) int audience_publish(audience *a, const change *c,
                                                         audience_deliver_cb cb, void *arg);

/* Rebuilds both org indexes from their policy states (what judging does by itself after a
 * membership change it could not follow for lack of memory). 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int audience_rebuild(audience *a);

/* The message of the last failure ("" when none). Never NULL. */
const char *audience_error(const audience *a);

/* ---- accounting ------------------------------------------------------------------------- */

typedef struct audience_stats {
	size_t subscribers;      /* registered handles */
	size_t users;            /* distinct user ids among non-bypass subscribers */
	size_t bypass;           /* bypass subscribers */
	size_t orgs;             /* orgs with at least one subscribed member (as of the last commit) */
	size_t links;            /* (org, subscribed user) pairs indexed (as of the last commit) */
	uint64_t changes;        /* changes judged */
	uint64_t evaluations;    /* privacy_view calls (audiences judged) */
	uint64_t audiences;      /* audiences delivered */
	uint64_t deliveries;     /* subscribers reached, summed over audiences */
	uint64_t serialized;     /* payloads serialized: audiences of a change whose views carry
	                          * the same values share one */
	uint64_t failed;         /* audiences skipped because their judgement failed */
	uint64_t last_evaluations; /* evaluations of the most recent publish, change or commit */
} audience_stats;

/* Fills *out. */
void audience_get_stats(const audience *a, audience_stats *out);

#endif
