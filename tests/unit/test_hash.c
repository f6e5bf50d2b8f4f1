/*
 * test_hash — unit tests for the core's open-addressing hash index (src/core/hash.h): a dense
 * slab of keys indexed by it, driven by random inserts and swap-with-last removals against a
 * plain scan, with deliberately colliding hashes (so backward-shift deletion and wrap-around
 * are exercised), growth, clear and the zeroed/finished states; hash_ptrs over it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define MAXN 4000

typedef struct table {
	hash_index ix;
	uint64_t keys[MAXN];
	size_t n;
	uint32_t (*hash)(uint64_t);
} table;

static uint32_t hash_good(uint64_t k)
{
	return (uint32_t)hash_words(42, (const uint8_t *)&k, sizeof(k));
}

/* Sixteen distinct hashes for every key: long clusters, equal tags of different keys. */
static uint32_t hash_bad(uint64_t k)
{
	return (uint32_t)(k % 16) * 0x10001u + 0xfffffff0u;
}

static long find(const table *t, uint64_t k)
{
	uint32_t h = t->hash(k);
	hash_probe p = hash_index_probe(&t->ix, h);
	for (uint32_t id; hash_probe_next(&t->ix, &p, &id);)
		if (t->keys[id] == k)
			return id;
	return -1;
}

static long scan(const table *t, uint64_t k)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->keys[i] == k)
			return (long)i;
	return -1;
}

static void add(table *t, uint64_t k)
{
	assert_int_equal(hash_index_reserve(&t->ix, 1), 0);
	t->keys[t->n] = k;
	hash_index_insert(&t->ix, t->hash(k), (uint32_t)t->n);
	t->n++;
}

static void del(table *t, size_t i)
{
	hash_index_remove(&t->ix, t->hash(t->keys[i]), (uint32_t)i);
	size_t last = --t->n;
	if (i != last) {
		t->keys[i] = t->keys[last];
		hash_index_repoint(&t->ix, t->hash(t->keys[i]), (uint32_t)last, (uint32_t)i);
	}
}

static void check_all(const table *t, unsigned *seed)
{
	assert_int_equal(t->ix.n, t->n);
	assert_true(t->ix.n * 2 <= t->ix.mask + 1);
	for (size_t i = 0; i < t->n; i++)
		assert_int_equal(find(t, t->keys[i]), (long)i);
	for (int j = 0; j < 50; j++) {
		uint64_t k = (uint64_t)rand_r(seed) % 20000;
		assert_int_equal(find(t, k), scan(t, k));
	}
}

static void run(uint32_t (*hash)(uint64_t))
{
	table *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->hash = hash;
	assert_int_equal(hash_index_init(&t->ix), 0);
	unsigned seed = 7;
	for (int step = 0; step < 20000; step++) {
		uint64_t k = (uint64_t)rand_r(&seed) % 20000;
		bool grow = t->n < 200 || (step / 5000) % 2 == 0;
		if (t->n < MAXN && grow && scan(t, k) < 0)
			add(t, k);
		else if (t->n > 0)
			del(t, (size_t)rand_r(&seed) % t->n);
		if (step % 997 == 0)
			check_all(t, &seed);
	}
	check_all(t, &seed);
	/* removing what is not there changes nothing */
	size_t n = t->ix.n;
	hash_index_remove(&t->ix, hash(123456789), MAXN + 5);
	assert_int_equal(t->ix.n, n);
	hash_index_clear(&t->ix);
	t->n = 0;
	assert_int_equal(t->ix.n, 0);
	assert_int_equal(find(t, 5), -1);
	add(t, 5);
	assert_int_equal(find(t, 5), 0);
	hash_index_fini(&t->ix);
	hash_index_fini(&t->ix); /* twice is safe */
	free(t);
}

static void test_random_good_hash(void **state)
{
	(void)state;
	run(hash_good);
}

static void test_random_colliding_hash(void **state)
{
	(void)state;
	run(hash_bad);
}

static void test_reserve(void **state)
{
	(void)state;
	hash_index ix = {0}; /* zeroed: reserve allocates, fini is safe */
	assert_int_equal(hash_index_reserve(&ix, 1000), 0);
	size_t slots = ix.mask + 1;
	assert_true(slots >= 2000);
	for (uint32_t i = 0; i < 1000; i++)
		hash_index_insert(&ix, hash_good(i), i);
	assert_int_equal(ix.mask + 1, slots); /* reserved room: no growth */
	assert_int_equal(hash_index_reserve(&ix, (size_t)1 << 40), -ENOMEM);
	assert_int_equal(ix.mask + 1, slots);
	hash_index_fini(&ix);
	hash_index_fini(&ix);
}

/* hash_ptrs: pointers found through the index after adds and swap-with-last removals, the
 * moved item reported and re-indexed under the hash given for it. */
static void test_ptrs(void **state)
{
	(void)state;
	static int vals[64];
	hash_ptrs t;
	assert_int_equal(hash_ptrs_init(&t), 0);
	for (uint32_t i = 0; i < 64; i++) {
		assert_int_equal(hash_ptrs_reserve(&t), 0);
		assert_int_equal(hash_ptrs_add(&t, hash_bad(i), &vals[i]), i);
	}
	/* remove item 5: item 63 moves into position 5 */
	assert_ptr_equal(hash_ptrs_remove(&t, hash_bad(5), 5, hash_bad(63)), &vals[63]);
	assert_int_equal(t.n, 63);
	assert_ptr_equal(t.items[5], &vals[63]);
	/* remove the last: nothing moves */
	assert_null(hash_ptrs_remove(&t, hash_bad(62), 62, hash_bad(62)));
	for (uint32_t i = 0; i < 64; i++) {
		hash_probe p = hash_index_probe(&t.ix, hash_bad(i));
		bool found = false;
		for (uint32_t id; !found && hash_probe_next(&t.ix, &p, &id);)
			found = t.items[id] == &vals[i];
		assert_int_equal(found, i != 5 && i != 62);
	}
	hash_ptrs_fini(&t);
	hash_ptrs_fini(&t);
}

static void test_hash_words(void **state)
{
	(void)state;
	/* keys that differ in one high bit of their last byte land apart in the low bits */
	uint8_t a[16] = {0}, b[16] = {0};
	b[15] = 0x80;
	assert_int_not_equal((uint32_t)hash_words(1, a, 16) & 0xffff, (uint32_t)hash_words(1, b, 16) & 0xffff);
	assert_int_not_equal(hash_words(1, a, 16), hash_words(2, a, 16)); /* the seed matters */
	assert_int_equal(hash_words(9, a, 16), hash_words(9, a, 16));
}

/* hash_bytes: any length; a zero byte at the end still changes the hash (the length is mixed
 * in), so does any byte of the tail, and only the bytes given are read. */
static void test_hash_bytes(void **state)
{
	(void)state;
	const char t[] = "walcast/v1/org/0d0e/role/viewer/public.events/\0";
	size_t n = strlen(t);
	assert_int_equal(hash_bytes(3, t, n), hash_bytes(3, t, n));
	assert_int_not_equal(hash_bytes(3, t, n), hash_bytes(3, t, n + 1));
	assert_int_not_equal(hash_bytes(3, t, n), hash_bytes(4, t, n));
	char u[sizeof(t)];
	memcpy(u, t, sizeof(t));
	u[n - 1] = 'X'; /* in the tail */
	assert_int_not_equal(hash_bytes(3, t, n), hash_bytes(3, u, n));
	u[n - 1] = t[n - 1];
	u[n] = 'Y'; /* past the end: not read */
	assert_int_equal(hash_bytes(3, t, n), hash_bytes(3, u, n));
	assert_int_equal(hash_bytes(3, t, 0), hash_bytes(3, u, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_good_hash),
		cmocka_unit_test(test_random_colliding_hash),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_ptrs),
		cmocka_unit_test(test_hash_words),
		cmocka_unit_test(test_hash_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
