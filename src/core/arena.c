/*
 * arena — bump allocator. Blocks form a singly linked list, newest first; reset keeps the
 * oldest (first-created, default-sized) block and frees the rest.
 */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct arena_block {
	struct arena_block *next;
	size_t size; /* usable bytes after the header */
	size_t used;
	max_align_t data[]; /* aligned storage */
} arena_block;

struct arena {
	arena_block *head;
	size_t block_size;
	size_t footprint;
};

#define ARENA_ALIGN (_Alignof(max_align_t))

static arena_block *arena_block_new(size_t size)
{
	arena_block *b = malloc(sizeof(*b) + size);
	if (b == NULL)
		return NULL;
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

arena *arena_create(size_t block_size)
{
	arena *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->block_size = block_size < 256 ? 256 : block_size;
	return a;
}

void arena_destroy(arena *a)
{
	if (a == NULL)
		return;
	arena_block *b = a->head;
	while (b != NULL) {
		arena_block *next = b->next;
		free(b);
		b = next;
	}
	free(a);
}

void *arena_alloc(arena *a, size_t size)
{
	if (size > SIZE_MAX - sizeof(arena_block) - ARENA_ALIGN)
		return NULL;
	size = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
	if (size == 0)
		size = ARENA_ALIGN;
	arena_block *b = a->head;
	if (b == NULL || b->size - b->used < size) {
		size_t want = size > a->block_size ? size : a->block_size;
		arena_block *nb = arena_block_new(want);
		if (nb == NULL)
			return NULL;
		nb->next = a->head;
		a->head = nb;
		a->footprint += want;
		b = nb;
	}
	void *p = (char *)b->data + b->used;
	b->used += size;
	return p;
}

char *arena_strndup(arena *a, const char *s, size_t len)
{
	if (len == SIZE_MAX)
		return NULL;
	char *p = arena_alloc(a, len + 1);
	if (p == NULL)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

void arena_reset(arena *a)
{
	arena_block *keep = NULL;
	arena_block *b = a->head;
	while (b != NULL) {
		arena_block *next = b->next;
		if (keep == NULL && b->size == a->block_size) {
			keep = b;
		} else {
			a->footprint -= b->size;
			free(b);
		}
		b = next;
	}
	if (keep != NULL) {
		keep->next = NULL;
		keep->used = 0;
	}
	a->head = keep;
}

size_t arena_footprint(const arena *a)
{
	return a->footprint;
}
