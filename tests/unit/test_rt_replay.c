/*
 * test_rt_replay — unit tests for the realtime sink's replay buffer (plugins/sinks/rt_replay.h):
 * a resume gets the changes after its position through the audience the user belonged to at
 * each commit (bypass, rank, individual), with ranks as of old commits rebuilt from the recorded
 * membership changes; the byte bound and the age limit drop the oldest transactions and move the
 * gap; erasure drops a row's payloads; positions from before the buffer or not of this stream get
 * -ERANGE; a stream that goes back resets the buffer.
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

#include "rt_replay.h"

static const uint8_t ORG[16] = {1};
static const uint8_t ALICE[16] = {0xa};
static const uint8_t BOB[16] = {0xb};

static int freed;

static void payload_free(void *p)
{
	freed++;
	free(p);
}

/* A payload: its text, for the assertions. */
static void *pl(const char *text)
{
	char *p = strdup(text);
	assert_non_null(p);
	return p;
}

static void add(rt_replay *r, uint64_t lsn, rt_replay_kind kind, const uint8_t *org, int rank, const uint8_t *uid,
                const char *pk, const char *text)
{
	rt_replay_item it = {.lsn = lsn, .kind = kind, .rank = rank, .action = 1, .schema = "public",
	                     .table = "events", .pk = pk};
	if (org != NULL)
		memcpy(it.org, org, 16);
	if (uid != NULL)
		memcpy(it.uid, uid, 16);
	assert_int_equal(rt_replay_add(r, &it, pl(text), strlen(text)), 0);
}

/* One change of row pk in ORG: bypass sees "B<pk>", rank 1 "R1<pk>", rank 2 "R2<pk>". */
static void change(rt_replay *r, uint64_t lsn, const char *pk)
{
	char t[64];
	snprintf(t, sizeof(t), "B%s", pk);
	add(r, lsn, RT_REPLAY_BYPASS, NULL, 0, NULL, pk, t);
	snprintf(t, sizeof(t), "R1%s", pk);
	add(r, lsn, RT_REPLAY_RANK, ORG, 1, NULL, pk, t);
	snprintf(t, sizeof(t), "R2%s", pk);
	add(r, lsn, RT_REPLAY_RANK, ORG, 2, NULL, pk, t);
}

typedef struct got {
	char text[1024];
	int n;
} got;

static int collect(void *arg, uint64_t commit_lsn, const rt_replay_item *it, void *payload)
{
	got *g = arg;
	(void)commit_lsn, (void)it;
	size_t l = strlen(g->text);
	snprintf(g->text + l, sizeof(g->text) - l, "%s%s", l ? " " : "", (const char *)payload);
	g->n++;
	return 0;
}

typedef struct world {
	int alice_rank; /* Alice's rank in ORG now */
} world;

static int rank_now(void *arg, const uint8_t org[16])
{
	const world *w = arg;
	return memcmp(org, ORG, 16) == 0 ? w->alice_rank : 0;
}

static void since(rt_replay *r, uint64_t c, uint64_t l, const rt_replay_who *who, int want_rc, const char *want)
{
	got g = {"", 0};
	int rc = rt_replay_since(r, c, l, who, collect, &g);
	assert_int_equal(rc, want_rc);
	if (want != NULL)
		assert_string_equal(g.text, want);
}

static void test_ranks_as_of_each_commit(void **state)
{
	(void)state;
	rt_replay *r;
	freed = 0;
	assert_int_equal(rt_replay_create(1 << 20, 3600, payload_free, &r), 0);
	/* txn 100: row a; txn 200: Alice promoted 1 -> 2, row b; txn 300: row c (Bob named); txn 400:
	 * Alice removed, row d */
	assert_int_equal(rt_replay_begin(r, 100, 0), 0);
	change(r, 10, "a");
	rt_replay_commit(r, 0);
	assert_int_equal(rt_replay_begin(r, 200, 0), 0);
	assert_int_equal(rt_replay_rank_change(r, ORG, ALICE, 1, 2), 0);
	assert_int_equal(rt_replay_rank_change(r, ORG, BOB, 0, 1), 0);
	change(r, 20, "b");
	change(r, 21, "b2");
	rt_replay_commit(r, 0);
	assert_int_equal(rt_replay_begin(r, 300, 0), 0);
	change(r, 30, "c");
	add(r, 30, RT_REPLAY_INDIVIDUAL, ORG, 1, BOB, "c", "Ic");
	rt_replay_commit(r, 0);
	assert_int_equal(rt_replay_begin(r, 400, 0), 0);
	assert_int_equal(rt_replay_rank_change(r, ORG, ALICE, 2, 0), 0);
	change(r, 40, "d");
	rt_replay_commit(r, 0);

	world w = {0};
	rt_replay_who alice = {.bypass = false, .rank_now = rank_now, .arg = &w};
	memcpy(alice.uid, ALICE, 16);
	world wb = {1};
	rt_replay_who bob = {.bypass = false, .rank_now = rank_now, .arg = &wb};
	memcpy(bob.uid, BOB, 16);
	rt_replay_who admin = {.bypass = true};

	/* Alice, removed now: rank 1 at 100, 2 at 200 and 300, nothing at 400 */
	since(r, 100, 0, &alice, 4, "R1a R2b R2b2 R2c");
	since(r, 100, 10, &alice, 3, "R2b R2b2 R2c");
	since(r, 200, 20, &alice, 2, "R2b2 R2c");
	since(r, 400, 40, &alice, 0, "");
	/* Bob: named by a uid column at 300 gets his own audience, not the rank one */
	since(r, 100, 10, &bob, 4, "R1b R1b2 Ic R1d");
	since(r, 300, 0, &admin, 2, "Bc Bd");
	/* not of this stream, or before the buffer */
	since(r, 401, 0, &admin, -ERANGE, NULL);
	since(r, 99, 0, &admin, -ERANGE, NULL);
	rt_replay_destroy(r);
	assert_int_equal(freed, 5 * 3 + 1);
}

static void test_bounds_and_age(void **state)
{
	(void)state;
	rt_replay *r;
	freed = 0;
	rt_replay_who admin = {.bypass = true};
	assert_int_equal(rt_replay_create(4096, 10, payload_free, &r), 0);
	char big[1024];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (uint64_t t = 1; t <= 20; t++) {
		assert_int_equal(rt_replay_begin(r, t * 100, (int64_t)t), 0);
		add(r, t * 100 - 1, RT_REPLAY_BYPASS, NULL, 0, NULL, "k", big);
		rt_replay_commit(r, (int64_t)t);
		assert_true(rt_replay_bytes(r) <= 4096);
	}
	size_t kept = rt_replay_txns(r);
	assert_true(kept >= 1 && kept < 4);
	/* the newest still replay; an evicted position is a gap */
	since(r, 2000 - 100 * (uint64_t)kept, UINT64_MAX, &admin, (int)kept, NULL);
	since(r, 2000 - 100 * (uint64_t)kept, 0, &admin, -ERANGE, NULL);
	since(r, 100, 0, &admin, -ERANGE, NULL);
	/* up to date: nothing to replay, no gap */
	since(r, 2000, 1999, &admin, 0, "");
	/* ageing: 11 seconds after the last commit everything is gone; the last position is the floor */
	rt_replay_expire(r, 20 + 11);
	assert_int_equal(rt_replay_txns(r), 0);
	since(r, 2000, 1999, &admin, -ERANGE, NULL);
	since(r, 2000, UINT64_MAX, &admin, 0, "");
	rt_replay_destroy(r);
	assert_int_equal(freed, 20);
}

static void test_erasure(void **state)
{
	(void)state;
	rt_replay *r;
	freed = 0;
	rt_replay_who admin = {.bypass = true};
	assert_int_equal(rt_replay_create(1 << 20, 3600, payload_free, &r), 0);
	assert_int_equal(rt_replay_begin(r, 100, 0), 0);
	change(r, 10, "c1");
	change(r, 11, "c2");
	rt_replay_commit(r, 0);
	assert_int_equal(rt_replay_begin(r, 200, 0), 0);
	change(r, 20, "c1");
	rt_replay_commit(r, 0);
	size_t before = rt_replay_bytes(r);
	assert_int_equal(rt_replay_erase(r, "public", "events", "c1"), 6);
	assert_int_equal(rt_replay_erase(r, "public", "other", "c2"), 0);
	assert_true(rt_replay_bytes(r) < before);
	assert_int_equal(freed, 6);
	since(r, 100, 0, &admin, 1, "Bc2");
	rt_replay_destroy(r);
	assert_int_equal(freed, 9);
}

static void test_stream_goes_back(void **state)
{
	(void)state;
	rt_replay *r;
	freed = 0;
	rt_replay_who admin = {.bypass = true};
	assert_int_equal(rt_replay_create(1 << 20, 3600, payload_free, &r), 0);
	assert_int_equal(rt_replay_begin(r, 100, 0), 0);
	change(r, 10, "a");
	rt_replay_commit(r, 0);
	assert_int_equal(rt_replay_begin(r, 200, 0), 0);
	change(r, 20, "b");
	rt_replay_commit(r, 0);
	/* the same transaction again (a reconnected stream): reset, not kept, resumes before it are a gap */
	assert_int_equal(rt_replay_begin(r, 200, 0), -EALREADY);
	rt_replay_item it = {.lsn = 20, .kind = RT_REPLAY_BYPASS};
	assert_int_equal(rt_replay_add(r, &it, NULL, 0), -EINVAL);
	rt_replay_commit(r, 0);
	assert_int_equal(rt_replay_txns(r), 0);
	since(r, 100, 10, &admin, -ERANGE, NULL);
	assert_int_equal(rt_replay_begin(r, 300, 0), 0);
	change(r, 30, "c");
	rt_replay_commit(r, 0);
	since(r, 200, UINT64_MAX, &admin, 1, "Bc");
	rt_replay_destroy(r);
	assert_int_equal(freed, 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranks_as_of_each_commit),
		cmocka_unit_test(test_bounds_and_age),
		cmocka_unit_test(test_erasure),
		cmocka_unit_test(test_stream_goes_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
