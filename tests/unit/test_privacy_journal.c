/*
 * test_privacy_journal — the privacy stage's journal (privacy_set_journal, policy_state's
 * journal): the policy rows a commit applies to the committed state, as a checkpoint logs them.
 * A transaction with inserts, updates (a promotion, a seat handed over: a key change), deletes
 * of memberships and rules, a role the rank table does not know, and a row of another table
 * produces a journal that, replayed over the previous state's dump into an empty state
 * (privacy_load_row / privacy_remove_row), gives exactly the committed state (dumps compared);
 * the same for a truncate; a transaction cut off, or one without policy rows, journals nothing;
 * loads do not journal.
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

#include "buf.h"
#include "change.h"
#include "checkpoint.h"
#include "policy.h"
#include "policy_state.h"
#include "privacy.h"
#include "privacy_fixture.h"

static const char POLICY[] = POLICY_SOURCES POLICY_EVENTS;

/* One journaled row, copied. */
typedef struct jrow {
	int table;
	bool deleted;
	char *v[3];
} jrow;

typedef struct fx {
	policy *pol;
	privacy *pv;
	jrow rows[64];
	size_t nrows;
	change_txn txn;
	uint64_t lsn;
} fx;

static void journal_cb(void *arg, int table, const char *const *values, bool deleted)
{
	fx *f = arg;
	assert_true(f->nrows < 64);
	jrow *r = &f->rows[f->nrows++];
	r->table = table;
	r->deleted = deleted;
	for (int k = 0; k < 3; k++)
		r->v[k] = values[k] ? strdup(values[k]) : NULL;
}

static void journal_clear(fx *f)
{
	for (size_t i = 0; i < f->nrows; i++)
		for (int k = 0; k < 3; k++)
			free(f->rows[i].v[k]);
	f->nrows = 0;
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	char err[POLICY_ERROR_MAX];
	if (f == NULL || policy_load_string(POLICY, "test.ini", &f->pol, err) != 0)
		return -1;
	if (privacy_create(f->pol, NULL, &f->pv, err) != 0)
		return -1;
	privacy_set_journal(f->pv, journal_cb, f);
	f->txn = (change_txn){.xid = 700, .commit_lsn = 0x3000000, .end_lsn = 0x3000010};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	journal_clear(f);
	privacy_destroy(f->pv);
	policy_destroy(f->pol);
	free(f);
	return 0;
}

static int judge_cb(void *arg, const change *c)
{
	(void)arg, (void)c;
	return 0;
}

static void put(fx *f, change_action a, relation *rel, change_value *n, change_value *o)
{
	change c = {.action = a, .lsn = ++f->lsn, .txn = &f->txn, .rel = rel, .new_tuple = n, .old_tuple = o};
	assert_int_equal(privacy_change(f->pv, &c, judge_cb, f), 0);
}

static void load(fx *f, int table, const char *a, const char *b, const char *c)
{
	const char *v[3] = {a, b, c};
	assert_int_equal(privacy_load_row(f->pv, table, v), 0);
}

/* ---- dumps as sorted text ------------------------------------------------------------------ */

static int dump_row_cb(void *arg, int table, const char *const *v)
{
	buf *b = arg;
	return buf_printf(b, "%c %s %s %s\n", table == POLICY_STATE_MEMBERSHIP ? 'm' : 'r', v[0], v[1] ? v[1] : "-",
	                  v[2] ? v[2] : "-");
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The state's rows, sorted (caller frees). */
static char *dump_text(policy_state *ps)
{
	buf b, out;
	buf_init(&b);
	buf_init(&out);
	assert_int_equal(buf_puts(&b, ""), 0);
	assert_int_equal(policy_state_dump(ps, dump_row_cb, &b), 0);
	char *lines[256];
	size_t n = 0;
	char *save = NULL;
	for (char *l = strtok_r(b.data, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
		assert_true(n < 256);
		lines[n++] = l;
	}
	qsort(lines, n, sizeof(*lines), cmp_line);
	assert_int_equal(buf_puts(&out, ""), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(buf_printf(&out, "%s\n", lines[i]), 0);
	buf_fini(&b);
	return out.data;
}

static int load_into_cb(void *arg, int table, const char *const *v)
{
	return privacy_load_row(arg, table, v);
}

/* Replays the journal over the dump `before` (a fresh stage loaded with it) and checks the
 * result equals the committed state. */
static void assert_replay_gives_state(fx *f, privacy *before)
{
	privacy *pv2 = NULL;
	char err[PRIVACY_ERROR_MAX];
	assert_int_equal(privacy_create(f->pol, NULL, &pv2, err), 0);
	assert_int_equal(policy_state_dump(privacy_state(before), load_into_cb, pv2), 0);
	for (size_t i = 0; i < f->nrows; i++) {
		const char *v[3] = {f->rows[i].v[0], f->rows[i].v[1], f->rows[i].v[2]};
		int rc = f->rows[i].deleted ? privacy_remove_row(pv2, f->rows[i].table, v)
		                            : privacy_load_row(pv2, f->rows[i].table, v);
		if (rc != 0)
			fail_msg("replay row %zu: %s", i, privacy_error(pv2));
	}
	char *want = dump_text(privacy_state(f->pv));
	char *got = dump_text(privacy_state(pv2));
	assert_string_equal(got, want);
	/* the AFTER state of the replica agrees too (remove_row touches both) */
	char *got_after = dump_text(privacy_state_at(pv2, PRIVACY_AFTER));
	assert_string_equal(got_after, want);
	free(want), free(got), free(got_after);
	privacy_destroy(pv2);
}

static void start(fx *f)
{
	load(f, POLICY_STATE_MEMBERSHIP, O1, UA, "member");
	load(f, POLICY_STATE_MEMBERSHIP, O1, UB, "admin");
	load(f, POLICY_STATE_MEMBERSHIP, O1, UC, "viewer");
	load(f, POLICY_STATE_MEMBERSHIP, O2, UD, "owner");
	load(f, POLICY_STATE_MEMBERSHIP, O2, UA, "analyst");
	load(f, POLICY_STATE_RULES, R1, C1, "admin");
	load(f, POLICY_STATE_RULES, R3, C2, "member");
}

/* A copy of the current committed state (for the replay's starting point). */
static privacy *snapshot(fx *f)
{
	privacy *copy = NULL;
	char err[PRIVACY_ERROR_MAX];
	assert_int_equal(privacy_create(f->pol, NULL, &copy, err), 0);
	assert_int_equal(policy_state_dump(privacy_state(f->pv), load_into_cb, copy), 0);
	return copy;
}

static void test_loads_do_not_journal(void **state)
{
	fx *f = *state;
	start(f);
	assert_int_equal(f->nrows, 0);
	const char *key[3] = {O1, UC, NULL};
	assert_int_equal(privacy_remove_row(f->pv, POLICY_STATE_MEMBERSHIP, key), 0);
	assert_int_equal(f->nrows, 0);
	assert_int_equal(policy_state_rank(privacy_state(f->pv), O1, 36, UC, 36), 0);
	privacy_clear(f->pv);
	assert_int_equal(f->nrows, 0);
}

static void test_mixed_transaction(void **state)
{
	fx *f = *state;
	tup n, o;
	start(f);
	privacy *before = snapshot(f);
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "analyst"), NULL);             /* join */
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UA, "owner"), T3(&o, O1, UA, "member")); /* promote */
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UH, "admin"), T3(&o, O1, UB, "admin")); /* seat handover */
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&o, O1, UC, "viewer"));               /* removal */
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, C1, UA), NULL);                /* not a policy row */
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O2, UD, "guest"), NULL);                /* unknown role, no old tuple */
	put(f, CHANGE_INSERT, &rules_rel, T4(&n, R2, O1, C2, "owner"), NULL);
	put(f, CHANGE_UPDATE, &rules_rel, T4(&n, R1, O1, C2, "analyst"), T4(&o, R1, O1, C1, "admin")); /* moved */
	put(f, CHANGE_DELETE, &rules_rel, NULL, T4(&o, R3, NULL, NULL, NULL));           /* key-only old row */
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&o, O2, UA, NULL));                   /* key-only old row */
	assert_int_equal(f->nrows, 0); /* nothing before the commit */
	assert_int_equal(privacy_commit(f->pv, &f->txn, judge_cb, f), 0);
	/* one row per applied policy row, the handover as delete + insert, events absent */
	assert_int_equal(f->nrows, 10);
	assert_true(f->rows[2].deleted && strcmp(f->rows[2].v[1], UB) == 0);
	assert_true(!f->rows[3].deleted && strcmp(f->rows[3].v[1], UH) == 0);
	assert_string_equal(f->rows[5].v[2], ""); /* "guest" ranks 0: stored, as the dump shows it, "" */
	assert_replay_gives_state(f, before);
	/* the state really moved (the replay is not trivially equal) */
	assert_int_equal(policy_state_rank(privacy_state(f->pv), O1, 36, UB, 36), 0);
	assert_int_equal(policy_state_rank(privacy_state(f->pv), O1, 36, UH, 36), 4);
	assert_int_equal(policy_state_subject_rank(privacy_state(f->pv), C2, 36), 5);
	privacy_destroy(before);
}

static void test_truncate(void **state)
{
	fx *f = *state;
	tup n;
	start(f);
	privacy *before = snapshot(f);
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	change c = {.action = CHANGE_TRUNCATE, .lsn = ++f->lsn, .txn = &f->txn, .rel = &roles_rel};
	assert_int_equal(privacy_change(f->pv, &c, judge_cb, f), 0);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O2, UX, "viewer"), NULL);
	assert_int_equal(privacy_commit(f->pv, &f->txn, judge_cb, f), 0);
	assert_int_equal(f->nrows, 5 + 1);
	assert_replay_gives_state(f, before);
	privacy_destroy(before);
}

static void test_nothing_journaled(void **state)
{
	fx *f = *state;
	tup n;
	start(f);
	/* cut off */
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "analyst"), NULL);
	privacy_abort(f->pv);
	/* no policy rows */
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, C1, UA), NULL);
	assert_int_equal(privacy_commit(f->pv, &f->txn, judge_cb, f), 0);
	assert_int_equal(f->nrows, 0);
	/* a judged single change journals once (BEFORE only, not AFTER as well) */
	change c = {.action = CHANGE_INSERT, .lsn = ++f->lsn, .txn = &f->txn, .rel = &roles_rel,
	            .new_tuple = T3(&n, O1, UX, "viewer")};
	assert_int_equal(privacy_judge(f->pv, &c, judge_cb, f), 0);
	assert_int_equal(f->nrows, 1);
	/* journal off */
	privacy_set_journal(f->pv, NULL, NULL);
	c.new_tuple = T3(&n, O1, UX, "owner");
	assert_int_equal(privacy_judge(f->pv, &c, judge_cb, f), 0);
	assert_int_equal(f->nrows, 1);
}

/* The pipeline's path: journal -> batch -> store, restart, load into a fresh stage; then a
 * compaction from the stage's dump. Every load equals the committed state of its LSN. */
static void test_through_the_store(void **state)
{
	fx *f = *state;
	tup n, o;
	char dir[600], err[CHECKPOINT_ERROR_MAX] = "";
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/test_privacy_journal.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	checkpoint_store *st = NULL;
	checkpoint_batch *b = NULL;
	assert_int_equal(checkpoint_dir_create(dir, &st, err), 0);
	assert_int_equal(checkpoint_batch_create(&b), 0);
	start(f);
	/* the initial state as the first base */
	assert_int_equal(st->ops->compact(st->impl, 0x100, checkpoint_privacy_dump_cb, f->pv, err), 0);
	char *s100 = dump_text(privacy_state(f->pv));
	privacy_set_journal(f->pv, checkpoint_batch_journal_cb, b);
	/* 0x200: a seat handover and a rule moved */
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UH, "admin"), T3(&o, O1, UB, "admin"));
	put(f, CHANGE_UPDATE, &rules_rel, T4(&n, R1, O1, C2, "owner"), T4(&o, R1, O1, C1, "admin"));
	assert_int_equal(privacy_commit(f->pv, &f->txn, judge_cb, f), 0);
	assert_int_equal(checkpoint_batch_count(b), 3);
	assert_int_equal(checkpoint_batch_append(b, st, 0x200, err), 0);
	char *s200 = dump_text(privacy_state(f->pv));
	/* 0x300: no policy rows */
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, C1, UA), NULL);
	assert_int_equal(privacy_commit(f->pv, &f->txn, judge_cb, f), 0);
	assert_int_equal(checkpoint_batch_count(b), 0);
	assert_int_equal(checkpoint_batch_append(b, st, 0x300, err), 0);
	/* 0x400: a removal */
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&o, O2, UD, "owner"));
	assert_int_equal(privacy_commit(f->pv, &f->txn, judge_cb, f), 0);
	assert_int_equal(checkpoint_batch_append(b, st, 0x400, err), 0);
	char *s400 = dump_text(privacy_state(f->pv));
	assert_int_equal(st->ops->sync(st->impl, 0x400, err), 0);
	checkpoint_store_destroy(st);
	assert_int_equal(checkpoint_dir_create(dir, &st, err), 0);
	/* restart: each resume point gets its own state */
	uint64_t at[3] = {0x100, 0x3ff, 0x400};
	char *want[3] = {s100, s200, s400};
	privacy *pv2 = NULL;
	assert_int_equal(privacy_create(f->pol, NULL, &pv2, err), 0);
	for (int i = 0; i < 3; i++) {
		uint64_t lsn = 0;
		privacy_clear(pv2);
		assert_int_equal(st->ops->load(st->impl, at[i], checkpoint_privacy_row_cb, pv2, &lsn, err), 0);
		assert_int_equal(lsn, at[i]);
		char *got = dump_text(privacy_state(pv2));
		assert_string_equal(got, want[i]);
		free(got);
	}
	/* compaction up to 0x200 while the writer's state is at 0x400: rebuilt from the store */
	assert_int_equal(checkpoint_compact_at(st, f->pol, 0x200, err), 0);
	for (int i = 1; i < 3; i++) {
		uint64_t lsn = 0;
		privacy_clear(pv2);
		assert_int_equal(st->ops->load(st->impl, at[i], checkpoint_privacy_row_cb, pv2, &lsn, err), 0);
		char *got = dump_text(privacy_state(pv2));
		assert_string_equal(got, want[i]);
		free(got);
	}
	{
		uint64_t lsn = 0;
		privacy_clear(pv2);
		assert_int_equal(st->ops->load(st->impl, 0x100, checkpoint_privacy_row_cb, pv2, &lsn, err), -ESTALE);
		assert_int_equal(checkpoint_compact_at(st, f->pol, 0x900, err), -ESTALE); /* not known that far */
		privacy_clear(pv2);
		assert_int_equal(st->ops->load(st->impl, 0x400, checkpoint_privacy_row_cb, pv2, &lsn, err), 0);
	}
	/* compaction from the loaded stage (state as of 0x400), then a load gives the same */
	assert_int_equal(st->ops->compact(st->impl, 0x400, checkpoint_privacy_dump_cb, pv2, err), 0);
	assert_int_equal(st->ops->log_bytes(st->impl), 0);
	privacy_clear(pv2);
	uint64_t lsn = 0;
	assert_int_equal(st->ops->load(st->impl, 0x400, checkpoint_privacy_row_cb, pv2, &lsn, err), 0);
	char *got = dump_text(privacy_state(pv2));
	assert_string_equal(got, s400);
	free(got);
	privacy_destroy(pv2);
	checkpoint_store_destroy(st);
	checkpoint_batch_destroy(b);
	free(s100), free(s200), free(s400);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_loads_do_not_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mixed_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_journaled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_through_the_store, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
