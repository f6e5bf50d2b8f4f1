/*
 * redis_agg — the aggregates of the redis sink as deltas merged in memory (docs/aggregates.md).
 *
 * An events row contributes +1 (insert, an update's new row) or -1 (delete, an update's old row)
 * to a fixed set of counters: per org per day (UTC), per org per hour, per org per day per
 * contact (a reference-counted sorted set: distinct contacts and top contacts by volume), per
 * contact totals and per contact event times (a reference-counted hash: the last event time,
 * exact under deletes). Counter updates commute, so the deltas of many transactions are merged
 * before they reach Redis: a batch holds, per org, the net deltas of every key touched (per
 * period and (kind, direction, status), per day and contact, per contact, per contact and event
 * time), and the commit LSNs of the first and last transaction of that org in the batch (the
 * watermark the org's Lua script checks and sets).
 *
 * A batch is encoded as one EVALSHA of REDIS_AGG_SCRIPT per org, whose keys all carry the org's
 * `{org}` hash tag: one slot per script, so it runs unchanged on Redis Cluster.
 *
 * Not thread-safe: one owner (the loop thread). Nothing blocks.
 */
#ifndef WALCAST_REDIS_AGG_H
#define WALCAST_REDIS_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "change.h"
#include "hash.h"

#define REDIS_AGG_ERROR_MAX 256
#define REDIS_AGG_FIELD_MAX 160 /* a hash field name ("call:inbound:completed"), longer statuses are cut */

/* One events row, parsed from its tuple. Strings point into the tuple (valid while it is). */
typedef struct redis_agg_event {
	char org[37];           /* uuid text */
	char contact[37];       /* uuid text, "" when contact_id is NULL */
	const char *kind;       /* "call" or "sms" (any text the table holds) */
	const char *direction;
	const char *status;
	int64_t started_us;     /* started_at, microseconds since the Unix epoch (UTC) */
	bool has_duration;
	int64_t duration_s;
} redis_agg_event;

/* What the aggregates are computed with. Strings are borrowed. */
typedef struct redis_agg_conf {
	const char *prefix;          /* key prefix ("wc") */
	const char *missed_statuses; /* comma-separated call statuses counted as missed ("missed") */
	int64_t hour_window_h;       /* hours of per-hour counters kept (48) */
} redis_agg_conf;

/* Column positions of the events table in a relation (-1: absent). */
typedef struct redis_agg_cols {
	uint64_t rel_id;
	uint32_t version;
	int org, contact, kind, direction, status, started_at, duration;
} redis_agg_cols;

/* Finds the columns the aggregates read in rel. 0, or -EINVAL with err naming the missing
 * column. */
__attribute__((warn_unused_result)) int redis_agg_cols_find(const relation *rel, redis_agg_cols *out,
                                                            char err[REDIS_AGG_ERROR_MAX]);

/* Parses one tuple (rel->ncols values) of the events table. 0, or -EINVAL with err saying which
 * value is unusable (absent, NULL where the schema forbids it, not a uuid, an unparseable or
 * infinite timestamp). Does not block. */
__attribute__((warn_unused_result)) int redis_agg_event_parse(const redis_agg_cols *cols, const change_value *tuple,
                                                              redis_agg_event *out, char err[REDIS_AGG_ERROR_MAX]);

/* Parses PostgreSQL's ISO text output of a timestamptz ("2026-12-02 05:52:28.123456+00", any
 * offset "+HH", "+HH:MM" or "+HH:MM:SS") into microseconds since the Unix epoch. 0 or -EINVAL
 * (other date styles, BC, infinity). */
__attribute__((warn_unused_result)) int redis_agg_parse_timestamptz(const char *s, size_t len, int64_t *out);

typedef struct redis_agg_org redis_agg_org;
typedef struct redis_agg_class redis_agg_class;

/* A set of per-org merged deltas. Embedded by its owner: init/fini. */
typedef struct redis_agg_batch {
	redis_agg_org **orgs;       /* [0, norgs): the batch's; [norgs, nalloc): emptied, kept for reuse */
	size_t norgs, nalloc, cap;
	hash_index index;
	redis_agg_org *last_org;    /* the org of the last row (rows of a transaction share it) */
	redis_agg_class *classes;   /* the (kind, direction, status) combinations of the batch */
	size_t nclasses, capclasses;
	hash_index class_index;
	uint64_t seed;
	size_t bytes;         /* an estimate of the memory the deltas hold */
	uint64_t end_lsn;     /* end LSN of the last transaction taken into the batch (0: none) */
	int64_t first_commit_us; /* commit time of its first transaction (Unix microseconds; 0: none) */
} redis_agg_batch;

/* Makes b empty. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int redis_agg_batch_init(redis_agg_batch *b);

/* Frees everything b holds; b may be zeroed. */
void redis_agg_batch_fini(redis_agg_batch *b);

/* Empties b (keeps its index). */
void redis_agg_batch_clear(redis_agg_batch *b);

/* Moves everything of src into dst (dst must be empty) and leaves src empty. */
void redis_agg_batch_move(redis_agg_batch *dst, redis_agg_batch *src);

/* Adds the contribution of ev times sign (+1 or -1) to b as the change of the transaction whose
 * commit LSN is commit_lsn (commit LSNs must not decrease from one call to the next for the same
 * org). now_s (Unix seconds) decides which hours are still inside the hour window. 0 or -ENOMEM
 * (b may hold part of the contribution then: the caller treats it as fatal). */
__attribute__((warn_unused_result)) int redis_agg_add(redis_agg_batch *b, const redis_agg_conf *conf,
                                                      const redis_agg_event *ev, int sign, uint64_t commit_lsn,
                                                      int64_t now_s);

/* The org of entry i (< b->norgs): its uuid text and the commit LSNs of its first and last
 * transaction in the batch. */
const char *redis_agg_org_id(const redis_agg_batch *b, size_t i, uint64_t *first_lsn, uint64_t *last_lsn);

/* Looks up a merged delta: the net delta of field in key (the full key name), 0 when absent. For
 * tests and diagnostics. */
int64_t redis_agg_delta(const redis_agg_batch *b, const char *key, const char *field);

/* The arguments of one EVALSHA of the script for org entry i of b: argv[0..argc) pointing into
 * out (which this call fills; valid until out changes), "EVALSHA" sha numkeys keys... args...,
 * fields whose net delta is 0 left out. The caller owns *argv and *argvlen (free()). 0 or
 * -ENOMEM. */
__attribute__((warn_unused_result)) int redis_agg_org_command(const redis_agg_batch *b, size_t i,
                                                              const redis_agg_conf *conf, const char *sha,
                                                              buf *out, int *argc, const char ***argv,
                                                              size_t **argvlen);

/* The watermark key of org ("PREFIX:{ORG}:wm") into out. */
void redis_agg_wm_key(const redis_agg_conf *conf, const char *org, char *out, size_t n);

/* A watermark as stored: the LSN as 16 upper-case hex digits (sorts like the LSN). out: 17 bytes. */
void redis_agg_lsn_text(uint64_t lsn, char out[17]);

/* Parses a stored watermark (16 hex digits, either case). 0 or -EINVAL. */
__attribute__((warn_unused_result)) int redis_agg_lsn_parse(const char *s, size_t len, uint64_t *out);

/* The Lua script applied per org (its SHA1 is what EVALSHA names). */
extern const char REDIS_AGG_SCRIPT[];

#endif
