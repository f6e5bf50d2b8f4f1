/*
 * stats_cache — the stats API's answers kept in memory (stats_cache.h).
 *
 * Two tables, each a dense array of pointers indexed by the core's hash index: entries by key,
 * orgs by id. An entry is one allocation (bookkeeping, key, value) on two intrusive lists: the
 * cache's recency list (most recent first) and its org's list, so that an org's invalidation
 * walks only its own entries. Stamps are one counter: an invalidation or a clear advances it and
 * records it (org->changed, c->cleared); a put whose stamp is older is refused.
 */
#include "stats_cache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef struct sc_org sc_org;

typedef struct sc_entry {
	struct sc_entry *newer, *older;     /* the recency list */
	struct sc_entry *org_prev, *org_next; /* the org's entries */
	sc_org *org;
	uint32_t h, pos;
	size_t keylen, len, size;
	char data[]; /* key, then the value */
} sc_entry;

struct sc_org {
	sc_entry *entries;
	uint64_t changed; /* stamp of the last invalidation */
	uint32_t h, pos;
	size_t idlen;
	char id[];
};

struct stats_cache {
	size_t max_bytes;
	uint64_t seed;
	uint64_t tick;    /* the stamp now */
	uint64_t cleared; /* stamp of the last clear */
	hash_ptrs entries, orgs; /* sc_entry, sc_org (hash.h) */
	sc_entry *newest, *oldest;
	stats_cache_stats st;
};

static sc_entry *entry_find(const stats_cache *c, const char *key, size_t keylen, uint32_t h)
{
	hash_probe p = hash_index_probe(&c->entries.ix, h);
	for (uint32_t id; hash_probe_next(&c->entries.ix, &p, &id);) {
		sc_entry *e = c->entries.items[id];
		if (e->keylen == keylen && memcmp(e->data, key, keylen) == 0)
			return e;
	}
	return NULL;
}

static sc_org *org_find(const stats_cache *c, const char *id, size_t idlen, uint32_t h)
{
	hash_probe p = hash_index_probe(&c->orgs.ix, h);
	for (uint32_t i; hash_probe_next(&c->orgs.ix, &p, &i);) {
		sc_org *o = c->orgs.items[i];
		if (o->idlen == idlen && memcmp(o->id, id, idlen) == 0)
			return o;
	}
	return NULL;
}

/* ---- entries -------------------------------------------------------------------------------- */

static void recency_unlink(stats_cache *c, sc_entry *e)
{
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void recency_push(stats_cache *c, sc_entry *e)
{
	e->newer = NULL;
	e->older = c->newest;
	if (c->newest != NULL)
		c->newest->newer = e;
	c->newest = e;
	if (c->oldest == NULL)
		c->oldest = e;
}

static void entry_drop(stats_cache *c, sc_entry *e)
{
	recency_unlink(c, e);
	if (e->org_prev != NULL)
		e->org_prev->org_next = e->org_next;
	else
		e->org->entries = e->org_next;
	if (e->org_next != NULL)
		e->org_next->org_prev = e->org_prev;
	sc_entry *last = c->entries.items[c->entries.n - 1];
	sc_entry *moved = hash_ptrs_remove(&c->entries, e->h, e->pos, last->h);
	if (moved != NULL)
		moved->pos = e->pos;
	c->st.bytes -= e->size;
	c->st.entries--;
	free(e);
}

/* ---- the cache ------------------------------------------------------------------------------ */

int stats_cache_create(size_t max_bytes, stats_cache **out)
{
	if (max_bytes < 1024)
		return -EINVAL;
	stats_cache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->max_bytes = max_bytes;
	c->seed = (uint64_t)(uintptr_t)c * 0x9E3779B97F4A7C15ULL ^ 0x5bd1e995;
	c->tick = 1;
	if (hash_ptrs_init(&c->entries) < 0 || hash_ptrs_init(&c->orgs) < 0) {
		stats_cache_destroy(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void stats_cache_clear(stats_cache *c)
{
	for (size_t i = 0; i < c->entries.n; i++)
		free(c->entries.items[i]);
	for (size_t i = 0; i < c->orgs.n; i++)
		free(c->orgs.items[i]);
	c->entries.n = c->orgs.n = 0;
	hash_index_clear(&c->entries.ix);
	hash_index_clear(&c->orgs.ix);
	c->newest = c->oldest = NULL;
	c->st.entries = c->st.bytes = 0;
	c->cleared = ++c->tick;
}

void stats_cache_destroy(stats_cache *c)
{
	if (c == NULL)
		return;
	stats_cache_clear(c);
	hash_ptrs_fini(&c->entries);
	hash_ptrs_fini(&c->orgs);
	free(c);
}

const void *stats_cache_get(stats_cache *c, const char *key, size_t keylen, size_t *len)
{
	sc_entry *e = entry_find(c, key, keylen, (uint32_t)hash_bytes(c->seed, key, keylen));
	if (e == NULL) {
		c->st.misses++;
		return NULL;
	}
	c->st.hits++;
	if (c->newest != e) {
		recency_unlink(c, e);
		recency_push(c, e);
	}
	*len = e->len;
	return e->data + e->keylen;
}

uint64_t stats_cache_stamp(const stats_cache *c)
{
	return c->tick;
}

/* The org's record, created when missing (the cache cleared first when it holds too many);
 * NULL when out of memory. */
static sc_org *org_get(stats_cache *c, const char *id)
{
	size_t idlen = strlen(id);
	uint32_t h = (uint32_t)hash_bytes(c->seed, id, idlen);
	sc_org *o = org_find(c, id, idlen, h);
	if (o != NULL)
		return o;
	if (c->orgs.n >= STATS_CACHE_ORGS_MAX)
		stats_cache_clear(c);
	if (hash_ptrs_reserve(&c->orgs) < 0 || (o = calloc(1, sizeof(*o) + idlen + 1)) == NULL)
		return NULL;
	o->h = h;
	o->idlen = idlen;
	memcpy(o->id, id, idlen + 1);
	o->pos = hash_ptrs_add(&c->orgs, h, o);
	return o;
}

int stats_cache_put(stats_cache *c, const char *org, const char *key, size_t keylen, uint64_t stamp, const void *val,
                    size_t len)
{
	size_t size = sizeof(sc_entry) + keylen + len;
	if (keylen > STATS_CACHE_KEY_MAX || size > c->max_bytes / 8 || stamp < c->cleared)
		return 1;
	size_t idlen = strlen(org);
	sc_org *o = org_find(c, org, idlen, (uint32_t)hash_bytes(c->seed, org, idlen));
	if (o != NULL && o->changed > stamp) {
		c->st.refused_stale++;
		return 1;
	}
	uint32_t h = (uint32_t)hash_bytes(c->seed, key, keylen);
	sc_entry *old = entry_find(c, key, keylen, h);
	if (old != NULL)
		entry_drop(c, old);
	if (o == NULL && (o = org_get(c, org)) == NULL)
		return -ENOMEM;
	if (stamp < c->cleared)
		return 1; /* org_get cleared the cache: too many orgs */
	if (hash_ptrs_reserve(&c->entries) < 0)
		return -ENOMEM;
	sc_entry *e = malloc(size);
	if (e == NULL)
		return -ENOMEM;
	while (c->st.bytes + size > c->max_bytes && c->oldest != NULL) {
		entry_drop(c, c->oldest);
		c->st.evicted++;
	}
	*e = (sc_entry){.org = o, .h = h, .keylen = keylen, .len = len, .size = size};
	memcpy(e->data, key, keylen);
	if (len > 0)
		memcpy(e->data + keylen, val, len);
	e->pos = hash_ptrs_add(&c->entries, h, e);
	recency_push(c, e);
	e->org_next = o->entries;
	if (o->entries != NULL)
		o->entries->org_prev = e;
	o->entries = e;
	c->st.bytes += size;
	c->st.entries++;
	c->st.stored++;
	return 0;
}

void stats_cache_invalidate(stats_cache *c, const char *org)
{
	sc_org *o = org_get(c, org);
	if (o == NULL) {
		stats_cache_clear(c);
		return;
	}
	o->changed = ++c->tick;
	while (o->entries != NULL) {
		entry_drop(c, o->entries);
		c->st.invalidated++;
	}
}

stats_cache_stats stats_cache_get_stats(const stats_cache *c)
{
	return c->st;
}
