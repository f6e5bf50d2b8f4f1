/*
 * policy_state — the in-memory mirror of the two tables the privacy decisions read, kept
 * current by applying their changes in commit order. The privacy stage keeps two mirrors: the
 * state as of the last commit, and that state plus the policy changes of the transaction being
 * judged (privacy.h); a mirror itself knows nothing of transactions.
 *
 *   membership  (org_roles):     (org, user) -> rank = coalesce(max(role_rank(role)), 0)
 *   rules       (privacy_rules): subject (contact) -> rank = coalesce(max(role_rank(min_role)), 0)
 *
 * exactly as walcast.user_rank() and walcast.contact_min_rank() compute them in
 * deploy/migrations/20261122000300_rls_policies.sql. Ranks come from a role table given at
 * creation, lowest first ({"viewer", "member", "analyst", "admin", "owner"} -> 1..5); a role
 * name not in it (or NULL) ranks 0, and rank 0 means "not a member" / "no rule".
 *
 * Both lookups are O(1) and allocation-free (uuids are parsed from their 36-character text into
 * 16-byte keys of open-addressing hash tables). Per org, the members are kept in one list per
 * rank, so "the members of org O, grouped by rank" is enumerated without scanning (and per user,
 * the orgs they belong to), and a
 * callback reports every change of a member's effective rank (added, removed, promoted,
 * demoted) so that subscriber groupings can follow incrementally.
 *
 * Rows are keyed as the tables are: a membership by (org, user) — org_roles' primary key, one
 * row per key — and a rule by its id. An insert of a key the mirror already holds replaces that
 * row (so a change applied twice, e.g. replayed after a reconnect or older than a snapshot the
 * mirror was loaded from, leaves one row), a delete removes the key whatever its role, an update
 * removes the old key and sets the new one. Several rules on one subject are counted by id, and
 * the subject's rank is the maximum over them, as the SQL max() would compute it. Rules are
 * tracked by their row id, so an update that moves a rule from one contact to another, or
 * changes its min_role, needs only the new row (and the old id).
 *
 * Memory is bounded by the rows mirrored (policy_state_footprint). Not thread-safe: a state
 * belongs to the loop thread; nothing here blocks.
 */
#ifndef WALCAST_POLICY_STATE_H
#define WALCAST_POLICY_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"

typedef struct policy_state policy_state;

/* A uuid as its 16 bytes (the order of its text form). */
typedef struct policy_state_uuid {
	uint8_t b[16];
} policy_state_uuid;

#define POLICY_STATE_ERROR_MAX 256
#define POLICY_STATE_RANKS_MAX 64  /* role names in the rank table, at most (as POLICY_RANKS_MAX) */
#define POLICY_STATE_UUID_TEXT 37  /* 36 characters and a NUL */
/* policy_state_subject_rank() of text that is not a uuid: above every rank, so a subject that
 * cannot be identified is hidden from everyone (fail closed). */
#define POLICY_STATE_RANK_UNREADABLE (1 << 30)

/* The two mirrored tables, for policy_state_load_row(). */
enum {
	POLICY_STATE_MEMBERSHIP = 1,
	POLICY_STATE_RULES = 2,
};

/* Column names; a NULL field takes the platform's name shown. */
typedef struct policy_state_columns {
	const char *org;      /* membership: "org_id" */
	const char *user;     /* membership: "user_id" */
	const char *role;     /* membership: "role" */
	const char *rule_id;  /* rules: "id" */
	const char *subject;  /* rules: "contact_id" */
	const char *min_role; /* rules: "min_role" */
} policy_state_columns;

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Creates an empty mirror. rank_names[0..nranks) are the role names lowest first (rank i + 1),
 * 1 <= nranks <= POLICY_STATE_RANKS_MAX, non-empty and distinct; they are copied. The tables are
 * named "schema.table", or "table" for schema public; NULL means "public.org_roles" and
 * "public.privacy_rules". cols may be NULL (the platform's column names). Returns 0 and stores
 * a state the caller owns (policy_state_destroy) in *out; -EINVAL for a bad argument (err, when
 * not NULL, says which) or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int policy_state_create(const char *const *rank_names, int nranks,
                                                            const char *membership_table,
                                                            const char *rules_table,
                                                            const policy_state_columns *cols,
                                                            char err[POLICY_STATE_ERROR_MAX],
                                                            policy_state **out);

/* Frees the state and everything in it; the change callback is not called. Safe on NULL. */
void policy_state_destroy(policy_state *ps);

/* Forgets every mirrored row of both tables (before reloading from a snapshot). Calls the change
 * callback with (old rank -> 0) for each member whose rank was >= 1, after the state is empty.
 * Keeps the allocations (for the reload) and the relation bindings. Does not fail. */
void policy_state_clear(policy_state *ps);

/* ---- keeping it current ----------------------------------------------------------------- */

/* Applies one change. Changes to the membership or rules table (matched by c->rel's schema and
 * name; columns bound by name, the binding cached per relation version) are mirrored: insert
 * sets the new row's key (replacing a row with that key), delete removes the old row's key,
 * update removes the old key and sets the new one, truncate empties that table's mirror. Any
 * other relation, and messages, are ignored (0). A delete or update of a key the mirror does not
 * hold is counted in missing_rows (an update then sets the new row all the same). The old row's
 * key columns suffice (REPLICA IDENTITY DEFAULT); without an old tuple, an update keeps the key.
 * A NULL org or user, as in SQL, is a row that matches nothing.
 * Returns 0; -EINVAL for a malformed change (a bound column missing from the relation or the
 * tuple, a delete without an old tuple, a uuid column whose text is not a uuid, a NULL rule id),
 * -ENOMEM; on error the mirror is unchanged and policy_state_error() says why. The change
 * callback runs before this returns, once per member whose effective rank changed, with the
 * state already updated. Keeps no pointer into c. Does not block. */
__attribute__((warn_unused_result)) int policy_state_apply(policy_state *ps, const change *c);

/* Journal callback: one row the mirror took from a change in policy_state_apply, in the form
 * policy_state_dump gives rows (table, 3 text values valid during the call; role names from the
 * rank table, "" for a rank-0 role), or with deleted true the key that is gone (membership: org,
 * user; rules: id; the other values NULL). Called after the row is applied, in the order the
 * rows change (an update that moves a key: the old key's delete, then the new row; a truncate:
 * one delete per row the table held). Replaying these rows over the previous state gives the
 * new one. It must not modify the state. */
typedef void (*policy_state_journal_cb)(void *arg, int table, const char *const *values, bool deleted);

/* Sets the journal (NULL: none); only policy_state_apply feeds it — policy_state_load_row and
 * policy_state_clear do not. arg is passed back and not owned. */
void policy_state_set_journal(policy_state *ps, policy_state_journal_cb cb, void *arg);

/* true when rel is the membership or the rules table (what policy_state_apply mirrors). */
bool policy_state_governs(const policy_state *ps, const relation *rel);

/* Adds one row of the initial state (read from the slot's exported snapshot). table is
 * POLICY_STATE_MEMBERSHIP with values {org_id, user_id, role} or POLICY_STATE_RULES with values
 * {id, contact_id, min_role}: PostgreSQL text forms, NUL-terminated, NULL for SQL NULL. The
 * same as applying an insert of that row (a key already present is replaced). Returns 0,
 * -EINVAL (bad table or value; policy_state_error() says which) or -ENOMEM; on error the state
 * is unchanged. Copies what it keeps. Does not block. */
/* Calls row_cb once per mirrored row, in the form policy_state_load_row() takes (table and
 * text values; role names from the rank table, "" for a rank-0 role; NULL for SQL NULL), so
 * that loading the rows into an empty state rebuilds this one: a checkpoint of the state. Stops
 * and returns row_cb's non-zero result; 0 when every row was visited. Does not block. */
__attribute__((warn_unused_result)) int policy_state_dump(const policy_state *ps,
                                                          int (*row_cb)(void *arg, int table,
                                                                        const char *const *values),
                                                          void *arg);

__attribute__((warn_unused_result)) int policy_state_load_row(policy_state *ps, int table,
                                                              const char *const *values);

/* Removes the row with the key in values (POLICY_STATE_MEMBERSHIP: {org_id, user_id, ...};
 * POLICY_STATE_RULES: {id, ...}; the other values are ignored), as applying a delete of it would:
 * a journal's (or a checkpoint's) deleted row replayed. A key the state does not hold counts in
 * missing_rows. 0, -EINVAL (bad table or key; policy_state_error says which) or -ENOMEM; on
 * error the state is unchanged. Does not block. */
__attribute__((warn_unused_result)) int policy_state_remove_row(policy_state *ps, int table,
                                                                const char *const *values);

/* The message of the most recent call that failed ("" when none failed yet); valid until the
 * next call on ps. Never NULL. */
const char *policy_state_error(const policy_state *ps);

/* ---- the hot path --------------------------------------------------------------------- */

/* Rank of user in org: the rank of the role of their membership row, 0 when they have none (or
 * org or user is not a uuid's text: fail closed). O(1), allocation-free, does not block. */
int policy_state_rank(const policy_state *ps, const char *org, size_t org_len, const char *user,
                      size_t user_len);

/* The same with parsed keys (parse a subscriber's user id once, then look up per change). */
int policy_state_rank_uuid(const policy_state *ps, const policy_state_uuid *org,
                           const policy_state_uuid *user);

/* Rank of the subject's (contact's) rule: the highest min_role rank of the rules on it, 0 when
 * it has none or subject is NULL (an event without a contact, as contact_min_rank(NULL));
 * POLICY_STATE_RANK_UNREADABLE when subject is not a uuid's text. O(1), allocation-free. */
int policy_state_subject_rank(const policy_state *ps, const char *subject, size_t len);

/* The same with a parsed key. */
int policy_state_subject_rank_uuid(const policy_state *ps, const policy_state_uuid *subject);

/* Rank of a role name in the rank table (1..nranks), 0 for an unknown name or NULL, as
 * walcast.role_rank(). */
int policy_state_role_rank(const policy_state *ps, const char *role, size_t len);

/* Number of role names in the rank table (the highest rank). */
int policy_state_nranks(const policy_state *ps);

/* The role name of rank 1..nranks (owned by the state), NULL outside that range. */
const char *policy_state_rank_name(const policy_state *ps, int rank);

/* ---- members per org ------------------------------------------------------------------- */

/* Enumeration callback: one member of the org and their rank (>= 1). Return 0 to go on,
 * anything else to stop. It must not modify the state. */
typedef int (*policy_state_member_cb)(void *arg, const policy_state_uuid *user, int rank);

/* Calls cb for each member of org whose rank is >= min_rank (values below 1 mean 1), grouped
 * by rank from the highest down (order within a rank is unspecified). Returns the number of
 * calls made (0 for an org without members), or -EINVAL when org is not a uuid's text.
 * Allocates nothing; does not block. */
__attribute__((warn_unused_result)) int policy_state_members(const policy_state *ps, const char *org,
                                                             size_t org_len, int min_rank,
                                                             policy_state_member_cb cb, void *arg);

/* The same with a parsed key; returns the number of calls made. */
int policy_state_members_uuid(const policy_state *ps, const policy_state_uuid *org, int min_rank,
                              policy_state_member_cb cb, void *arg);

/* Enumeration callback: one org the user is a member of and their rank there (>= 1). Return 0
 * to go on, anything else to stop. It must not modify the state. */
typedef int (*policy_state_org_cb)(void *arg, const policy_state_uuid *org, int rank);

/* Calls cb for each org in which user has rank >= 1 (order unspecified): the orgs a newly
 * subscribed user must be indexed under. Returns the number of calls made (0 for a user without
 * memberships). O(orgs of the user); allocates nothing; does not block. */
int policy_state_user_orgs(const policy_state *ps, const policy_state_uuid *user,
                           policy_state_org_cb cb, void *arg);

/* Number of members of org with exactly this rank (1..nranks); rank 0 counts all members of
 * rank >= 1. 0 for an unknown org or a rank out of range. O(1). */
size_t policy_state_member_count(const policy_state *ps, const policy_state_uuid *org, int rank);

/* Change callback: the effective rank of user in org went from old_rank to new_rank (0 = not a
 * member: 0 -> r is an addition, r -> 0 a removal). Called after the state reflects the new
 * rank; it may read the state but must not modify it (nor add or remove callbacks). */
typedef void (*policy_state_change_cb)(void *arg, const policy_state_uuid *org,
                                       const policy_state_uuid *user, int old_rank, int new_rank);

#define POLICY_STATE_CALLBACKS_MAX 4

/* Adds a change callback (called after those added before it); arg is passed back and not
 * owned. 0, -EINVAL for a NULL cb, or -ENOSPC when POLICY_STATE_CALLBACKS_MAX are set. */
__attribute__((warn_unused_result)) int policy_state_add_change_cb(policy_state *ps,
                                                                   policy_state_change_cb cb, void *arg);

/* Removes the callback added with this cb and arg (nothing when there is none). */
void policy_state_remove_change_cb(policy_state *ps, policy_state_change_cb cb, void *arg);

/* ---- accounting ------------------------------------------------------------------------ */

typedef struct policy_state_stats {
	size_t members;       /* (org, user) pairs with rank >= 1 */
	size_t member_keys;   /* (org, user) pairs with a row (rank 0 included) */
	size_t member_rows;   /* membership rows mirrored: member_keys (one row per key) */
	size_t orgs;          /* orgs with at least one row */
	size_t rules;         /* rule rows mirrored */
	size_t subjects;      /* subjects with at least one rule */
	uint64_t missing_rows; /* updates/deletes of a row the mirror did not hold (drift) */
	uint64_t replaced_rules; /* inserts of a rule id already held (replaced) */
	uint64_t replaced_members; /* inserts of an (org, user) already held (replaced) */
} policy_state_stats;

/* Fills *out with the counts above. */
void policy_state_get_stats(const policy_state *ps, policy_state_stats *out);

/* Bytes held from malloc; grows with the rows mirrored (the high-water mark of each table). */
size_t policy_state_footprint(const policy_state *ps);

/* ---- uuids ---------------------------------------------------------------------------- */

/* Parses the 36-character text form (8-4-4-4-12 hex digits, either case). 0 and *out, or
 * -EINVAL. */
__attribute__((warn_unused_result)) int policy_state_uuid_parse(const char *s, size_t len,
                                                                policy_state_uuid *out);

/* Formats u in lower case into out (36 characters and a NUL). */
void policy_state_uuid_format(const policy_state_uuid *u, char out[POLICY_STATE_UUID_TEXT]);

#endif
