/* hash — the open-addressing hash index (see hash.h for its design). */
#include "hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_SLOTS 16

int hash_index_init(hash_index *hx)
{
	hx->slots = calloc(INITIAL_SLOTS, sizeof(*hx->slots));
	if (hx->slots == NULL)
		return -ENOMEM;
	hx->mask = INITIAL_SLOTS - 1;
	hx->n = 0;
	return 0;
}

void hash_index_fini(hash_index *hx)
{
	free(hx->slots);
	hx->slots = NULL;
	hx->mask = 0;
	hx->n = 0;
}

void hash_index_clear(hash_index *hx)
{
	if (hx->slots != NULL)
		memset(hx->slots, 0, (hx->mask + 1) * sizeof(*hx->slots));
	hx->n = 0;
}

int hash_index_reserve(hash_index *hx, size_t n)
{
	if (n > ((size_t)1 << 31) - hx->n)
		return -ENOMEM;
	size_t want = hx->n + n;
	size_t nslots = hx->slots != NULL ? hx->mask + 1 : 0;
	if (nslots != 0 && want * 2 <= nslots)
		return 0;
	if (nslots == 0)
		nslots = INITIAL_SLOTS;
	while (want * 2 > nslots)
		nslots *= 2;
	uint64_t *s = calloc(nslots, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	size_t mask = nslots - 1;
	for (size_t i = 0; hx->slots != NULL && i <= hx->mask; i++) {
		uint64_t v = hx->slots[i];
		if (v == 0)
			continue;
		size_t j = (uint32_t)(v >> 32) & mask;
		while (s[j] != 0)
			j = (j + 1) & mask;
		s[j] = v;
	}
	free(hx->slots);
	hx->slots = s;
	hx->mask = mask;
	return 0;
}

void hash_index_insert(hash_index *hx, uint32_t h, uint32_t id)
{
	size_t i = h & hx->mask;
	while (hx->slots[i] != 0)
		i = (i + 1) & hx->mask;
	hx->slots[i] = (uint64_t)h << 32 | (uint64_t)(id + 1);
	hx->n++;
}

/* The slot holding id (indexed under h), or (size_t)-1. */
static size_t slot_of(const hash_index *hx, uint32_t h, uint32_t id)
{
	if (hx->slots == NULL)
		return (size_t)-1;
	uint64_t want = (uint64_t)h << 32 | (uint64_t)(id + 1);
	for (size_t i = h & hx->mask;; i = (i + 1) & hx->mask) {
		uint64_t v = hx->slots[i];
		if (v == 0)
			return (size_t)-1;
		if (v == want)
			return i;
	}
}

void hash_index_remove(hash_index *hx, uint32_t h, uint32_t id)
{
	size_t i = slot_of(hx, h, id);
	if (i == (size_t)-1)
		return;
	size_t mask = hx->mask, j = i;
	for (;;) {
		j = (j + 1) & mask;
		uint64_t v = hx->slots[j];
		if (v == 0)
			break;
		size_t home = (uint32_t)(v >> 32) & mask;
		/* v may move into the hole at i unless its home lies cyclically in (i, j] */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			hx->slots[i] = v;
			i = j;
		}
	}
	hx->slots[i] = 0;
	hx->n--;
}

void hash_index_repoint(hash_index *hx, uint32_t h, uint32_t from, uint32_t to)
{
	size_t i = slot_of(hx, h, from);
	if (i != (size_t)-1)
		hx->slots[i] = (uint64_t)h << 32 | (uint64_t)(to + 1);
}

/* ---- hash_ptrs ---------------------------------------------------------------------------- */

int hash_ptrs_init(hash_ptrs *t)
{
	*t = (hash_ptrs){0};
	return hash_index_init(&t->ix);
}

void hash_ptrs_fini(hash_ptrs *t)
{
	hash_index_fini(&t->ix);
	free(t->items);
	*t = (hash_ptrs){0};
}

int hash_ptrs_reserve(hash_ptrs *t)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		void **items = realloc(t->items, cap * sizeof(*items));
		if (items == NULL)
			return -ENOMEM;
		t->items = items;
		t->cap = cap;
	}
	return hash_index_reserve(&t->ix, 1);
}

uint32_t hash_ptrs_add(hash_ptrs *t, uint32_t h, void *item)
{
	uint32_t pos = (uint32_t)t->n;
	t->items[t->n++] = item;
	hash_index_insert(&t->ix, h, pos);
	return pos;
}

void *hash_ptrs_remove(hash_ptrs *t, uint32_t h, uint32_t pos, uint32_t last_h)
{
	hash_index_remove(&t->ix, h, pos);
	uint32_t last = (uint32_t)--t->n;
	if (pos == last)
		return NULL;
	t->items[pos] = t->items[last];
	hash_index_repoint(&t->ix, last_h, last, pos);
	return t->items[pos];
}
