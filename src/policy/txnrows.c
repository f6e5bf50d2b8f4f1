/*
 * txnrows — the row versions a transaction created (see txnrows.h).
 *
 * Design. Each version is reduced to a 128-bit SipHash-2-4 of its identity (schema, table, and
 * per identity column: name, value kind, length, bytes), keyed with 16 random bytes per set, so
 * that keys an attacker chooses (row ids) cannot be made to collide. The hashes live in an
 * open-addressing table (linear probing, load <= 3/4; the all-zero hash marks an empty slot and
 * is never stored). The hash is computed streaming, without copying the key.
 */
#include "txnrows.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TXNROWS_INITIAL 1024 /* slots; a table above this is freed at reset */

typedef struct hash128 {
	uint64_t lo, hi;
} hash128;

struct txnrows {
	uint64_t k0, k1;
	hash128 *slots;
	size_t mask; /* slots - 1 */
	size_t n;
};

/* ---- SipHash-2-4, 128-bit output, streaming --------------------------------------------------- */

typedef struct sip {
	uint64_t v0, v1, v2, v3;
	uint64_t tail;
	unsigned ntail;
	uint64_t len;
} sip;

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void sip_round(sip *s)
{
	s->v0 += s->v1, s->v1 = ROTL(s->v1, 13), s->v1 ^= s->v0, s->v0 = ROTL(s->v0, 32);
	s->v2 += s->v3, s->v3 = ROTL(s->v3, 16), s->v3 ^= s->v2;
	s->v0 += s->v3, s->v3 = ROTL(s->v3, 21), s->v3 ^= s->v0;
	s->v2 += s->v1, s->v1 = ROTL(s->v1, 17), s->v1 ^= s->v2, s->v2 = ROTL(s->v2, 32);
}

static void sip_init(sip *s, uint64_t k0, uint64_t k1)
{
	*s = (sip){
		.v0 = 0x736f6d6570736575ULL ^ k0,
		.v1 = 0x646f72616e646f6dULL ^ k1 ^ 0xee, /* 128-bit output */
		.v2 = 0x6c7967656e657261ULL ^ k0,
		.v3 = 0x7465646279746573ULL ^ k1,
	};
}

static inline void sip_word(sip *s, uint64_t m)
{
	s->v3 ^= m;
	sip_round(s);
	sip_round(s);
	s->v0 ^= m;
}

static void sip_update(sip *s, const void *data, size_t n)
{
	const unsigned char *p = data;
	s->len += n;
	while (n > 0 && s->ntail > 0) { /* complete a pending word */
		s->tail |= (uint64_t)*p++ << (8 * s->ntail);
		n--;
		if (++s->ntail == 8) {
			sip_word(s, s->tail);
			s->tail = 0, s->ntail = 0;
		}
	}
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t m = 0;
		for (int i = 7; i >= 0; i--)
			m = (m << 8) | p[i]; /* little-endian, whatever the host */
		sip_word(s, m);
	}
	for (; n > 0; n--)
		s->tail |= (uint64_t)*p++ << (8 * s->ntail++);
}

static hash128 sip_final(sip *s)
{
	uint64_t b = (s->len << 56) | s->tail;
	s->v3 ^= b;
	sip_round(s);
	sip_round(s);
	s->v0 ^= b;
	s->v2 ^= 0xee;
	for (int i = 0; i < 4; i++)
		sip_round(s);
	hash128 h = {.lo = s->v0 ^ s->v1 ^ s->v2 ^ s->v3};
	s->v1 ^= 0xdd;
	for (int i = 0; i < 4; i++)
		sip_round(s);
	h.hi = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
	if (h.lo == 0 && h.hi == 0)
		h.lo = 1; /* the empty slot's marker */
	return h;
}

/* The identity hash of tuple's version of rel; false when a key value is not in the tuple. */
static bool identity(const txnrows *t, const relation *rel, const change_value *tuple, hash128 *out)
{
	bool any_key = false;
	for (int i = 0; i < rel->ncols && !any_key; i++)
		any_key = rel->cols[i].key;
	sip s;
	sip_init(&s, t->k0, t->k1);
	sip_update(&s, rel->schema, strlen(rel->schema) + 1);
	sip_update(&s, rel->name, strlen(rel->name) + 1);
	for (int i = 0; i < rel->ncols; i++) {
		if (any_key && !rel->cols[i].key)
			continue;
		const change_value *v = &tuple[i];
		if (v->kind != VALUE_TEXT && v->kind != VALUE_NULL)
			return false; /* absent, or unchanged TOAST: the key is unknown */
		unsigned char head[5] = {(unsigned char)v->kind, (unsigned char)(v->len >> 24), (unsigned char)(v->len >> 16),
		                         (unsigned char)(v->len >> 8), (unsigned char)v->len};
		sip_update(&s, rel->cols[i].name, strlen(rel->cols[i].name) + 1);
		sip_update(&s, head, sizeof(head));
		if (v->kind == VALUE_TEXT)
			sip_update(&s, v->data, v->len);
	}
	*out = sip_final(&s);
	return true;
}

/* ---- the table ------------------------------------------------------------------------------- */

static int table_alloc(txnrows *t, size_t nslots)
{
	hash128 *slots = calloc(nslots, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	free(t->slots);
	t->slots = slots;
	t->mask = nslots - 1;
	t->n = 0;
	return 0;
}

/* The slot of h: its own, or the empty one where it would go. */
static hash128 *probe(const txnrows *t, hash128 h)
{
	size_t i = (size_t)(h.lo ^ (h.hi >> 7)) & t->mask;
	while ((t->slots[i].lo | t->slots[i].hi) != 0 && (t->slots[i].lo != h.lo || t->slots[i].hi != h.hi))
		i = (i + 1) & t->mask;
	return &t->slots[i];
}

static int grow(txnrows *t)
{
	size_t nslots = (t->mask + 1) * 2;
	hash128 *slots = calloc(nslots, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	hash128 *old = t->slots;
	size_t oldn = t->mask + 1;
	t->slots = slots;
	t->mask = nslots - 1;
	for (size_t i = 0; i < oldn; i++)
		if ((old[i].lo | old[i].hi) != 0)
			*probe(t, old[i]) = old[i];
	free(old);
	return 0;
}

int txnrows_create(txnrows **out)
{
	txnrows *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	uint64_t key[2];
	if (getrandom(key, sizeof(key), GRND_NONBLOCK) != (ssize_t)sizeof(key)) {
		key[0] = (uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ULL; /* no entropy yet: still keyed per set */
		key[1] = ~key[0] * 0xBF58476D1CE4E5B9ULL;
	}
	t->k0 = key[0], t->k1 = key[1];
	if (table_alloc(t, TXNROWS_INITIAL) < 0) {
		free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

void txnrows_destroy(txnrows *t)
{
	if (t == NULL)
		return;
	free(t->slots);
	free(t);
}

void txnrows_reset(txnrows *t)
{
	if (t->n == 0)
		return;
	if (t->mask + 1 > TXNROWS_INITIAL && table_alloc(t, TXNROWS_INITIAL) == 0)
		return;
	memset(t->slots, 0, (t->mask + 1) * sizeof(*t->slots));
	t->n = 0;
}

int txnrows_add(txnrows *t, const relation *rel, const change_value *tuple)
{
	hash128 h;
	if (!identity(t, rel, tuple, &h))
		return 0;
	if ((t->n + 1) * 4 > (t->mask + 1) * 3 && grow(t) < 0)
		return -ENOMEM;
	hash128 *slot = probe(t, h);
	if ((slot->lo | slot->hi) == 0) {
		*slot = h;
		t->n++;
	}
	return 1;
}

bool txnrows_has(txnrows *t, const relation *rel, const change_value *tuple)
{
	hash128 h;
	if (t->n == 0 || !identity(t, rel, tuple, &h))
		return false;
	hash128 *slot = probe(t, h);
	return (slot->lo | slot->hi) != 0;
}

size_t txnrows_count(const txnrows *t)
{
	return t->n;
}

size_t txnrows_bytes(const txnrows *t)
{
	return (t->mask + 1) * sizeof(hash128);
}
