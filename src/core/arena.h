/*
 * arena — bump allocator for memory that lives exactly as long as one unit of work (one
 * change, one transaction). Allocation is a pointer bump; arena_reset() frees everything at
 * once and keeps the first block, so a steady stream of changes allocates nothing from malloc.
 */
#ifndef WALCAST_ARENA_H
#define WALCAST_ARENA_H

#include <stddef.h>

typedef struct arena arena;

/* Returns a new arena whose blocks are at least block_size bytes, or NULL when out of memory.
 * The caller owns it and releases it with arena_destroy(). Does not block. */
arena *arena_create(size_t block_size);

/* Frees every block. Safe on NULL. */
void arena_destroy(arena *a);

/* Returns size bytes aligned for any type, valid until the next arena_reset()/arena_destroy();
 * NULL when out of memory. */
void *arena_alloc(arena *a, size_t size);

/* Copies len bytes of s and appends a NUL; returns the copy or NULL when out of memory. */
char *arena_strndup(arena *a, const char *s, size_t len);

/* Forgets every allocation; keeps one block for reuse and returns larger ones to malloc. */
void arena_reset(arena *a);

/* Bytes currently held from malloc (for tests and the memory bound). */
size_t arena_footprint(const arena *a);

#endif
