/*
 * rt_replay — the realtime sink's replay buffer (issue 9, "Resume"; docs/protocol.md "Resume"):
 * the deliveries of the last committed transactions, bounded in bytes and in age, so that a
 * client that reconnects with the position of the last change it saw gets what it missed, judged
 * with the policy state of each change's own commit.
 *
 * What is kept. Per transaction (commit LSN, wall-clock second it was buffered): every audience
 * of every change as the pipeline's wildcard subscriber is offered it — the bypass audience, one
 * per rank of the row's org, one per member a uid column of the row names — each with its
 * payload (opaque, freed through the free callback), and the membership changes (org, user, old
 * rank, new rank) that the transaction's commit made. A resuming user's rank in an org as of an
 * old commit is the rank now, walked back through the recorded membership changes of the later
 * transactions: exact without keeping a snapshot of the policy state per transaction.
 *
 * A position is (commit LSN of the transaction, LSN of the change); positions are ordered by
 * commit LSN, then change LSN. Not thread-safe: the loop thread owns a buffer. Nothing blocks.
 */
#ifndef WALCAST_RT_REPLAY_H
#define WALCAST_RT_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_replay rt_replay;

typedef enum rt_replay_kind {
	RT_REPLAY_BYPASS = 1,     /* the bypass audience */
	RT_REPLAY_RANK = 2,       /* the members of org with rank == rank (not named by a uid column) */
	RT_REPLAY_INDIVIDUAL = 3, /* the member uid of org, named by a uid column of the row */
} rt_replay_kind;

/* One buffered audience of one change. The strings are owned by the buffer. */
typedef struct rt_replay_item {
	uint64_t lsn;        /* the change's WAL position (items of one change share it) */
	rt_replay_kind kind;
	uint8_t org[16];     /* RANK, INDIVIDUAL */
	uint8_t uid[16];     /* INDIVIDUAL */
	int rank;            /* RANK */
	unsigned action;     /* the caller's event code (INSERT/UPDATE/DELETE) */
	const char *schema;
	const char *table;
	const char *pk;      /* the row's primary key values as text ("" when unknown): erasure key */
} rt_replay_item;

/* Frees a payload the buffer held. */
typedef void (*rt_replay_free_cb)(void *payload);

/* Creates an empty buffer keeping at most max_bytes of payload (and bookkeeping) and nothing
 * older than max_age_s seconds. 0 and *out (rt_replay_destroy), -EINVAL, -ENOMEM. */
__attribute__((warn_unused_result)) int rt_replay_create(size_t max_bytes, int64_t max_age_s,
                                                         rt_replay_free_cb free_cb, rt_replay **out);

/* Frees every payload and the buffer. Safe on NULL. */
void rt_replay_destroy(rt_replay *r);

/* A transaction with commit LSN commit_lsn begins at wall-clock second now_s. 0, -ENOMEM (the
 * buffer then no longer reaches back past this transaction: resumes before it get the gap), or
 * -EALREADY when the stream went back (commit_lsn not after every transaction begun so far: a
 * replayed stream): the buffer is reset (rt_replay_reset) and this transaction is not kept. */
__attribute__((warn_unused_result)) int rt_replay_begin(rt_replay *r, uint64_t commit_lsn, int64_t now_s);

/* Drops everything: resumes from before the newest transaction begun get the gap. For what the
 * buffer cannot follow (a policy state it can no longer observe). */
void rt_replay_reset(rt_replay *r);

/* Adds one audience of a change of the open transaction. On success the buffer owns payload
 * (bytes: its size, counted against max_bytes). 0, -EINVAL (no open transaction), or -ENOMEM
 * (payload not taken; the buffer then marks a gap). */
__attribute__((warn_unused_result)) int rt_replay_add(rt_replay *r, const rt_replay_item *it, void *payload,
                                                      size_t bytes);

/* Records that the open transaction's commit changed user's rank in org from old_rank to
 * new_rank (0 = not a member). 0 or -ENOMEM (the buffer then marks a gap). */
__attribute__((warn_unused_result)) int rt_replay_rank_change(rt_replay *r, const uint8_t org[16],
                                                              const uint8_t user[16], int old_rank,
                                                              int new_rank);

/* The open transaction is complete; drops the oldest transactions past the bounds. */
void rt_replay_commit(rt_replay *r, int64_t now_s);

/* Drops the transactions older than max_age_s as of now_s. */
void rt_replay_expire(rt_replay *r, int64_t now_s);

/* Erasure: drops every buffered audience of the row (schema, table, pk) (its payloads are
 * freed). Returns how many were dropped. */
size_t rt_replay_erase(rt_replay *r, const char *schema, const char *table, const char *pk);

/* Whose resume: a bypass viewer, or a user id. rank_now returns the user's rank in org as of the
 * last commit (0: not a member). */
typedef struct rt_replay_who {
	bool bypass;
	uint8_t uid[16];
	int (*rank_now)(void *arg, const uint8_t org[16]);
	void *arg;
} rt_replay_who;

/* Called once per change the resuming viewer would have been delivered, in order: its item and
 * payload (borrowed), and the transaction's commit LSN. Return 0, or a negative errno to stop. */
typedef int (*rt_replay_cb)(void *arg, uint64_t commit_lsn, const rt_replay_item *it, void *payload);

/* Replays what who missed after position (commit_lsn, lsn): every change of the buffered
 * transactions after it, each through the audience who belonged to at that transaction's
 * commit. Returns the number of callbacks made, -ERANGE when the buffer no longer reaches back to
 * that position (or it is not one of this stream: after the newest), -ENOMEM, or cb's error. */
__attribute__((warn_unused_result)) int rt_replay_since(rt_replay *r, uint64_t commit_lsn, uint64_t lsn,
                                                        const rt_replay_who *who, rt_replay_cb cb, void *arg);

/* Bytes held now, transactions held now, and items dropped by erasure so far. */
size_t rt_replay_bytes(const rt_replay *r);
size_t rt_replay_txns(const rt_replay *r);

#endif
