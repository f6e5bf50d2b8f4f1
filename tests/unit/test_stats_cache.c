/*
 * test_stats_cache — unit tests for the stats API's answer cache (plugins/sinks/stats_cache.h):
 * get after put, replacement, invalidation of one org leaving the others, the stamp refusing a
 * read that was in flight across an invalidation or a clear, the byte bound with least recently
 * used eviction (against a model of the recency order), oversized values and keys, and the
 * counters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats_cache.h"

static const char *get(stats_cache *c, const char *key, size_t *len)
{
	return stats_cache_get(c, key, strlen(key), len);
}

static int put(stats_cache *c, const char *org, const char *key, uint64_t stamp, const char *val)
{
	return stats_cache_put(c, org, key, strlen(key), stamp, val, strlen(val));
}

static void assert_value(stats_cache *c, const char *key, const char *want)
{
	size_t len = 0;
	const char *v = get(c, key, &len);
	if (want == NULL) {
		assert_null(v);
		return;
	}
	assert_non_null(v);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(v, want, len);
}

static void test_get_put_replace(void **state)
{
	(void)state;
	stats_cache *c;
	assert_int_equal(stats_cache_create(1 << 20, &c), 0);
	assert_value(c, "o1/days", NULL);
	assert_int_equal(put(c, "o1", "o1/days", stats_cache_stamp(c), "A"), 0);
	assert_value(c, "o1/days", "A");
	assert_int_equal(put(c, "o1", "o1/days", stats_cache_stamp(c), "BB"), 0);
	assert_value(c, "o1/days", "BB");
	assert_int_equal(stats_cache_put(c, "o1", "o1/empty", 8, stats_cache_stamp(c), NULL, 0), 0);
	assert_value(c, "o1/empty", "");
	stats_cache_stats st = stats_cache_get_stats(c);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.stored, 3);
	stats_cache_destroy(c);
	stats_cache_destroy(NULL);
	assert_int_equal(stats_cache_create(10, &c), -EINVAL);
}

static void test_invalidate_one_org(void **state)
{
	(void)state;
	stats_cache *c;
	assert_int_equal(stats_cache_create(1 << 20, &c), 0);
	uint64_t s = stats_cache_stamp(c);
	assert_int_equal(put(c, "o1", "o1/days", s, "1d"), 0);
	assert_int_equal(put(c, "o1", "o1/hours", s, "1h"), 0);
	assert_int_equal(put(c, "o2", "o2/days", s, "2d"), 0);
	stats_cache_invalidate(c, "o1");
	assert_value(c, "o1/days", NULL);
	assert_value(c, "o1/hours", NULL);
	assert_value(c, "o2/days", "2d");
	assert_int_equal(stats_cache_get_stats(c).invalidated, 2);
	/* an org never seen before: nothing to drop, but its reads in flight are refused after */
	uint64_t before = stats_cache_stamp(c);
	stats_cache_invalidate(c, "o3");
	assert_int_equal(put(c, "o3", "o3/days", before, "stale"), 1);
	assert_value(c, "o3/days", NULL);
	assert_int_equal(put(c, "o3", "o3/days", stats_cache_stamp(c), "fresh"), 0);
	assert_value(c, "o3/days", "fresh");
	stats_cache_destroy(c);
}

/* A read sent before a round was accepted must not come back as a cache entry after it. */
static void test_stamp_refuses_read_in_flight(void **state)
{
	(void)state;
	stats_cache *c;
	assert_int_equal(stats_cache_create(1 << 20, &c), 0);
	assert_int_equal(put(c, "o1", "o1/days", stats_cache_stamp(c), "v0"), 0);
	uint64_t sent = stats_cache_stamp(c); /* a read of o1 and one of o2 leave */
	stats_cache_invalidate(c, "o1");      /* a round changing o1 is accepted meanwhile */
	assert_int_equal(put(c, "o1", "o1/days", sent, "v0 again"), 1);
	assert_value(c, "o1/days", NULL);
	assert_int_equal(put(c, "o2", "o2/days", sent, "2"), 0); /* o2 did not change */
	assert_value(c, "o2/days", "2");
	assert_int_equal(stats_cache_get_stats(c).refused_stale, 1);
	/* an invalidation before the read left does not refuse it */
	uint64_t later = stats_cache_stamp(c);
	assert_int_equal(put(c, "o1", "o1/days", later, "v1"), 0);
	assert_value(c, "o1/days", "v1");
	/* a clear refuses every read stamped before it, and empties the cache */
	uint64_t s2 = stats_cache_stamp(c);
	stats_cache_clear(c);
	assert_value(c, "o1/days", NULL);
	assert_value(c, "o2/days", NULL);
	assert_int_equal(put(c, "o2", "o2/days", s2, "old"), 1);
	assert_int_equal(put(c, "o2", "o2/days", stats_cache_stamp(c), "new"), 0);
	assert_value(c, "o2/days", "new");
	assert_int_equal(stats_cache_get_stats(c).entries, 1);
	stats_cache_destroy(c);
}

/* Random puts, gets and invalidations against a model: the bound always holds, and what is
 * evicted is the least recently used. */
#define NKEYS 200
static void test_lru_bound_against_model(void **state)
{
	(void)state;
	const size_t max = 16 * 1024;
	stats_cache *c;
	assert_int_equal(stats_cache_create(max, &c), 0);
	srand(7);
	/* the model: for each key, its value (or none) and when it was last used */
	char vals[NKEYS][1100];
	bool present[NKEYS] = {false};
	for (int step = 0; step < 20000; step++) {
		int k = rand() % NKEYS;
		char key[32], org[16];
		snprintf(org, sizeof(org), "org%d", k % 7);
		snprintf(key, sizeof(key), "%s/k%d", org, k);
		int op = rand() % 50;
		if (op < 25) {
			size_t len = 0;
			const char *v = get(c, key, &len);
			if (v != NULL) {
				/* whatever is there is the last value put */
				assert_true(present[k]);
				assert_int_equal(len, strlen(vals[k]));
				assert_memory_equal(v, vals[k], len);
			}
		} else if (op < 49) {
			size_t len = 1 + (size_t)(rand() % 1000);
			memset(vals[k], 'a' + step % 26, len);
			vals[k][len] = '\0';
			assert_int_equal(put(c, org, key, stats_cache_stamp(c), vals[k]), 0);
			present[k] = true;
			size_t got;
			assert_non_null(get(c, key, &got)); /* just put: there */
		} else {
			stats_cache_invalidate(c, org);
			for (int j = k % 7; j < NKEYS; j += 7) {
				char kj[32];
				snprintf(kj, sizeof(kj), "%s/k%d", org, j);
				size_t len;
				assert_null(get(c, kj, &len));
			}
		}
		stats_cache_stats st = stats_cache_get_stats(c);
		assert_true(st.bytes <= max);
	}
	assert_true(stats_cache_get_stats(c).evicted > 0);
	stats_cache_clear(c);

	/* exact order: fill with equal entries until one is evicted; touch the oldest first, so
	 * the second oldest goes */
	char big[1500];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	uint64_t evicted = stats_cache_get_stats(c).evicted;
	for (int n = 0;; n++) {
		char key[32];
		snprintf(key, sizeof(key), "o/%d", n);
		if (n == 2) {
			size_t len;
			assert_non_null(get(c, "o/0", &len)); /* o/0 is now the most recent */
		}
		assert_int_equal(put(c, "o", key, stats_cache_stamp(c), big), 0);
		if (stats_cache_get_stats(c).evicted > evicted)
			break;
	}
	size_t len;
	assert_non_null(get(c, "o/0", &len));
	assert_null(get(c, "o/1", &len));
	assert_non_null(get(c, "o/2", &len));
	assert_int_equal(stats_cache_get_stats(c).evicted, evicted + 1);
	stats_cache_destroy(c);
}

static void test_too_large(void **state)
{
	(void)state;
	stats_cache *c;
	assert_int_equal(stats_cache_create(8192, &c), 0);
	char v[2048];
	memset(v, 'v', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	assert_int_equal(put(c, "o", "o/big", stats_cache_stamp(c), v), 1); /* over max / 8 */
	assert_value(c, "o/big", NULL);
	char key[STATS_CACHE_KEY_MAX + 2];
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	assert_int_equal(put(c, "o", key, stats_cache_stamp(c), "x"), 1);
	assert_int_equal(stats_cache_get_stats(c).entries, 0);
	stats_cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_put_replace),
		cmocka_unit_test(test_invalidate_one_org),
		cmocka_unit_test(test_stamp_refuses_read_in_flight),
		cmocka_unit_test(test_lru_bound_against_model),
		cmocka_unit_test(test_too_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
