/*
 * hash — one open-addressing hash index for every table in walcast. The caller keeps its
 * entries in its own dense array (a "slab") and the index maps a 32-bit hash to slab
 * positions; the caller hashes its keys and compares them, so any key type works.
 *
 * A slot is 64 bits: the hash as a tag (the probe position is taken from it too, so growing
 * never calls back into the caller) and the entry's position + 1; 0 is empty. Linear probing
 * at load <= 1/2, backward-shift deletion (no tombstones). Finding walks the slots whose tag
 * equals the hash, so a key compare happens only on a full 32-bit hash match.
 *
 *   hash_probe p = hash_index_probe(&ix, h);
 *   for (uint32_t id; hash_probe_next(&ix, &p, &id);)
 *       if (key_equals(&slab[id], key)) return id;
 */
#ifndef WALCAST_HASH_H
#define WALCAST_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hash_index {
	uint64_t *slots; /* 0 = empty; else hash << 32 | (position + 1) */
	size_t mask;     /* number of slots - 1; the number is a power of two */
	size_t n;        /* positions indexed */
} hash_index;

/* A walk over the slots that may hold a hash (see hash_probe_next). */
typedef struct hash_probe {
	size_t i;
	uint32_t h;
} hash_probe;

/* Makes hx an empty index (16 slots). 0 or -ENOMEM (hx then needs no fini). */
__attribute__((warn_unused_result)) int hash_index_init(hash_index *hx);

/* Frees the slots; hx may be zeroed or already finished. */
void hash_index_fini(hash_index *hx);

/* Empties hx, keeping its slots. */
void hash_index_clear(hash_index *hx);

/* Ensures room for n more positions at load <= 1/2. 0, or -ENOMEM (hx unchanged; also past
 * 2^31 positions). Call before hash_index_insert, which cannot fail. */
__attribute__((warn_unused_result)) int hash_index_reserve(hash_index *hx, size_t n);

/* Indexes position id (< 2^32 - 1) under hash h; room must have been reserved. */
void hash_index_insert(hash_index *hx, uint32_t h, uint32_t id);

/* Removes position id indexed under h (nothing when it is not there). */
void hash_index_remove(hash_index *hx, uint32_t h, uint32_t id);

/* The entry at position from (indexed under h) moved to position to. */
void hash_index_repoint(hash_index *hx, uint32_t h, uint32_t from, uint32_t to);

/* Starts a walk over the positions indexed under hash h. */
static inline hash_probe hash_index_probe(const hash_index *hx, uint32_t h)
{
	return (hash_probe){.i = h & hx->mask, .h = h};
}

/* The next position indexed under p's hash into *id: true, or false when there is none left.
 * Positions of other keys whose hash is equal come too: the caller compares keys. */
static inline bool hash_probe_next(const hash_index *hx, hash_probe *p, uint32_t *id)
{
	for (;;) {
		uint64_t v = hx->slots[p->i];
		if (v == 0)
			return false;
		p->i = (p->i + 1) & hx->mask;
		if ((uint32_t)(v >> 32) == p->h) {
			*id = (uint32_t)v - 1;
			return true;
		}
	}
}

/* ---- hash_ptrs: a dense array of pointers with its index ------------------------------------
 * The usual table of entries allocated one by one: items[0..n) in a dense array (removing moves
 * the last into the hole), the index maps the caller's hash of each to its position. The caller
 * owns the items; lookups are hash_index_probe / hash_probe_next over t->ix and t->items. */
typedef struct hash_ptrs {
	hash_index ix;
	void **items;
	size_t n, cap;
} hash_ptrs;

/* An empty table. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int hash_ptrs_init(hash_ptrs *t);

/* Frees the array and the index (not the items); t may be zeroed. */
void hash_ptrs_fini(hash_ptrs *t);

/* Room for one more item. 0 or -ENOMEM (t unchanged). */
__attribute__((warn_unused_result)) int hash_ptrs_reserve(hash_ptrs *t);

/* Adds item, hashed h, after hash_ptrs_reserve; returns its position. */
uint32_t hash_ptrs_add(hash_ptrs *t, uint32_t h, void *item);

/* Removes the item at pos (hashed h); the last item moves into pos and is re-indexed under
 * last_h (the caller's hash of items[n - 1]). Returns the item now at pos, NULL when pos was the
 * last. */
void *hash_ptrs_remove(hash_ptrs *t, uint32_t h, uint32_t pos, uint32_t last_h);

/* The word loop of hash_words and hash_bytes: h mixed with the n / 8 words at k. */
static inline uint64_t hash_mix_words(uint64_t h, const uint8_t *k, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t w;
		__builtin_memcpy(&w, k + i, sizeof(w));
		h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
		h ^= h >> 29;
	}
	return h;
}

/* murmur3's finalizer. */
static inline uint64_t hash_final(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* A 64-bit hash of n bytes at k, keyed by seed (a per-table random value makes chosen keys
 * unable to lengthen the probes), its 32 low bits well mixed. Reads k in 8-byte words: n must
 * be a multiple of 8. */
static inline uint64_t hash_words(uint64_t seed, const uint8_t *k, size_t n)
{
	return hash_final(hash_mix_words(seed, k, n));
}

/* hash_words for any n: the 8-byte words, then the tail (zero-padded) and the length. For byte
 * strings (nng topics); a word at a time, not a byte at a time like FNV-1a. */
static inline uint64_t hash_bytes(uint64_t seed, const void *k, size_t n)
{
	size_t whole = n & ~(size_t)7;
	uint64_t h = hash_mix_words(seed, k, whole) ^ (uint64_t)n;
	uint8_t tail[8] = {0};
	__builtin_memcpy(tail, (const uint8_t *)k + whole, n - whole);
	return hash_final(hash_mix_words(h, tail, sizeof(tail)));
}

#endif
