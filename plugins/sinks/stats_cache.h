/*
 * stats_cache — the stats API's answers kept in memory (docs/api.md, "Caching"): what Redis
 * answered for one read (a rendered period list, a day's contact list), by a key the caller
 * builds from the org, the path and the resolved query, served again until the redis sink
 * applies a round touching that org.
 *
 * Exactness. Every entry belongs to one org. stats_cache_invalidate(org), called when Redis
 * accepted a round that changed the org's aggregates, drops every entry of the org at once. A
 * read that was in flight meanwhile must not put back what it read before the round: a caller
 * takes a stamp (stats_cache_stamp) before sending its read and hands it to stats_cache_put,
 * which refuses the value when the org was invalidated (or the cache cleared) after the stamp.
 * So once an invalidation has returned, no lookup answers from before it.
 *
 * Memory is bounded: entries (key, value and bookkeeping) take at most max_bytes, the least
 * recently used going first; one value may take at most an eighth of it. The orgs the cache has
 * seen (one small record each, holding the last invalidation's stamp) are at most
 * STATS_CACHE_ORGS_MAX; past that the cache is cleared.
 *
 * Who may see an entry is not the cache's business: callers judge the request first and key
 * entries so that everything under one key may be shown to everyone who passed that judgement.
 *
 * Not thread-safe: the loop thread owns a cache. Nothing blocks.
 */
#ifndef WALCAST_STATS_CACHE_H
#define WALCAST_STATS_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct stats_cache stats_cache;

#define STATS_CACHE_ORGS_MAX 65536
#define STATS_CACHE_KEY_MAX 256 /* longer keys are never stored */

/* Counters, for /metrics and tests. */
typedef struct stats_cache_stats {
	uint64_t hits, misses;
	uint64_t stored;        /* values put */
	uint64_t refused_stale; /* puts refused: the org was invalidated while the read was in flight */
	uint64_t evicted;       /* entries dropped for room (least recently used) */
	uint64_t invalidated;   /* entries dropped by stats_cache_invalidate */
	size_t entries, bytes;  /* now */
} stats_cache_stats;

/* An empty cache holding at most max_bytes (>= 1024). 0 and *out (stats_cache_destroy),
 * -EINVAL, -ENOMEM. */
__attribute__((warn_unused_result)) int stats_cache_create(size_t max_bytes, stats_cache **out);

/* Frees the cache and every entry. Safe on NULL. */
void stats_cache_destroy(stats_cache *c);

/* The value stored under key (*len bytes), now the most recently used, or NULL (a miss). Both
 * are counted. The pointer is valid until the next call that changes the cache. */
const void *stats_cache_get(stats_cache *c, const char *key, size_t keylen, size_t *len);

/* The stamp of a read about to be sent, for stats_cache_put. */
uint64_t stats_cache_stamp(const stats_cache *c);

/* Stores a copy of val[0..len) under key for org (which the key should name too), replacing
 * what the key held, evicting the least recently used entries for room. 0 stored; 1 not
 * stored, and nothing lost: org was invalidated or the cache cleared after stamp, or the value
 * is too large, or the key longer than STATS_CACHE_KEY_MAX; -ENOMEM (the cache is unchanged). */
__attribute__((warn_unused_result)) int stats_cache_put(stats_cache *c, const char *org, const char *key,
                                                        size_t keylen, uint64_t stamp, const void *val, size_t len);

/* Drops every entry of org and refuses the puts of reads stamped before now. Allocates the org's
 * small record when the cache has not seen it (out of memory: the whole cache is cleared, which
 * is as exact). Does not fail. */
void stats_cache_invalidate(stats_cache *c, const char *org);

/* Drops every entry and refuses the puts of reads stamped before now. */
void stats_cache_clear(stats_cache *c);

/* The counters as they are now. */
stats_cache_stats stats_cache_get_stats(const stats_cache *c);

#endif
