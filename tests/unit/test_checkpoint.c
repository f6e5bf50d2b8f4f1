/*
 * test_checkpoint — unit tests for the directory checkpoint store (src/pipeline/checkpoint.h):
 * round trip across a reopen; load at several LSNs gives the state as of each (checked against
 * a model that applies the same rows); a torn log tail and a corrupt byte are cut at open,
 * earlier records intact; compaction keeps every loadable state; a crash between the base
 * rename and the log rewrite (and leftover temporary files) loads correctly; a replay after a
 * resume replaces the logged records from its LSN on; named positions survive; a sync with
 * nothing to say writes nothing, and an append costs the rows it carries, not the state.
 *
 * With WALCAST_TEST_CHECKPOINT_PG set (tests/integration/checkpoint_pg.sh, inside the harness),
 * the same cases that are not about files run against the PostgreSQL store (checkpoint_pg.h),
 * one slot name per test, so the two stores cannot drift apart.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "checkpoint.h"
#include "checkpoint_pg.h"
#include "policy_state.h"

/* ---- a model of the state: rows keyed as the tables are ------------------------------------ */

#define MODEL_MAX 20000

typedef struct model {
	char *key[MODEL_MAX];
	char *row[MODEL_MAX];
	size_t n;
} model;

static void key_of(const checkpoint_row *r, char *out, size_t n)
{
	if (r->table == POLICY_STATE_MEMBERSHIP)
		snprintf(out, n, "m|%s|%s", r->values[0], r->values[1]);
	else
		snprintf(out, n, "r|%s", r->values[0]);
}

static int model_apply(void *arg, const checkpoint_row *r)
{
	model *m = arg;
	char key[256], row[512];
	key_of(r, key, sizeof(key));
	snprintf(row, sizeof(row), "%c|%s|%s|%s", r->table == POLICY_STATE_MEMBERSHIP ? 'm' : 'r', r->values[0],
	         r->values[1] ? r->values[1] : "\\N", r->values[2] ? r->values[2] : "\\N");
	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->key[i], key) != 0)
			continue;
		free(m->row[i]);
		if (r->deleted) {
			free(m->key[i]);
			m->key[i] = m->key[m->n - 1], m->row[i] = m->row[m->n - 1];
			m->n--;
		} else {
			m->row[i] = strdup(row);
		}
		return 0;
	}
	if (!r->deleted) {
		assert_true(m->n < MODEL_MAX);
		m->key[m->n] = strdup(key), m->row[m->n] = strdup(row);
		m->n++;
	}
	return 0;
}

static void model_clear(model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->key[i]), free(m->row[i]);
	m->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The rows sorted, one per line (caller frees). */
static char *model_text(model *m)
{
	buf b;
	buf_init(&b);
	char **rows = malloc((m->n + 1) * sizeof(*rows));
	assert_non_null(rows);
	memcpy(rows, m->row, m->n * sizeof(*rows));
	qsort(rows, m->n, sizeof(*rows), cmp_str);
	assert_int_equal(buf_puts(&b, ""), 0);
	for (size_t i = 0; i < m->n; i++)
		assert_int_equal(buf_printf(&b, "%s\n", rows[i]), 0);
	free(rows);
	return b.data;
}

/* compact's dump: the model's rows. */
static int model_dump(void *arg, checkpoint_row_cb row_cb, void *row_arg)
{
	model *m = arg;
	for (size_t i = 0; i < m->n; i++) {
		char *copy = strdup(m->row[i]), *save = NULL;
		char *t = strtok_r(copy, "|", &save);
		const char *v[3];
		int table = t[0] == 'm' ? POLICY_STATE_MEMBERSHIP : POLICY_STATE_RULES;
		for (int k = 0; k < 3; k++) {
			char *x = strtok_r(NULL, "|", &save);
			v[k] = strcmp(x, "\\N") == 0 ? NULL : x;
		}
		checkpoint_row r = {.table = table, .values = v};
		int rc = row_cb(row_arg, &r);
		free(copy);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- the fixture ------------------------------------------------------------------------- */

typedef struct fx {
	char dir[512];
	checkpoint_store *st;
	model m;      /* the writer's current state */
	model loaded; /* what a load rebuilt */
} fx;

static void path_of(const fx *f, const char *name, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", f->dir, name);
}

static bool pg_mode(void)
{
	return getenv("WALCAST_TEST_CHECKPOINT_PG") != NULL;
}

/* The slot name of f's store in pg_mode: its directory's parent's name (test_checkpoint.XXXXXX). */
static void slot_of(const fx *f, char out[128])
{
	int end = (int)(strrchr(f->dir, '/') - f->dir), start = end;
	while (start > 0 && f->dir[start - 1] != '/')
		start--;
	snprintf(out, 128, "%.*s", end - start, f->dir + start);
}

/* The store under test: the directory, or (pg_mode) the PostgreSQL store with the directory's
 * name as its slot. A killed holder's backend lets its lock go a moment later: -EBUSY is tried
 * again for a while there. */
static int store_create(const fx *f, checkpoint_store **out, char err[CHECKPOINT_ERROR_MAX])
{
	if (!pg_mode())
		return checkpoint_dir_create(f->dir, out, err);
	char slot[128];
	slot_of(f, slot);
	int rc;
	for (int i = 0; (rc = checkpoint_pg_create(getenv("WALCAST_TEST_CHECKPOINT_PG"), NULL, slot, out, err)) == -EBUSY &&
	                i < 100;
	     i++)
		usleep(100 * 1000);
	return rc;
}

static void store_open(fx *f)
{
	char err[CHECKPOINT_ERROR_MAX] = "";
	int rc = store_create(f, &f->st, err);
	if (rc != 0)
		fprintf(stderr, "open: %s\n", err);
	assert_int_equal(rc, 0);
}

static void store_reopen(fx *f)
{
	checkpoint_store_destroy(f->st);
	f->st = NULL;
	store_open(f);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof(f->dir), "%s/test_checkpoint.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	strcat(f->dir, "/state"); /* created by the store */
	store_open(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	char cmd[1200];
	checkpoint_store_destroy(f->st);
	model_clear(&f->m);
	model_clear(&f->loaded);
	snprintf(cmd, sizeof(cmd), "rm -rf '%.*s'", (int)(strrchr(f->dir, '/') - f->dir), f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

#define O1 "0a000000-0000-4000-8000-000000000001"
#define O2 "0a000000-0000-4000-8000-000000000002"
#define R1 "0e000000-0000-4000-8000-000000000001"
#define C1 "0c000000-0000-4000-8000-000000000001"

static void user_id(int i, char out[40])
{
	snprintf(out, 40, "0b000000-0000-4000-8000-%012d", i);
}

/* A transaction: rows applied to the model and appended at lsn. */
typedef struct txn {
	checkpoint_row rows[8];
	const char *vals[8][3];
	char ids[8][40];
	size_t n;
} txn;

static void txn_member(txn *t, int user, const char *org, const char *role, bool deleted)
{
	size_t i = t->n++;
	user_id(user, t->ids[i]);
	t->vals[i][0] = org, t->vals[i][1] = t->ids[i], t->vals[i][2] = role;
	t->rows[i] = (checkpoint_row){.table = POLICY_STATE_MEMBERSHIP, .values = t->vals[i], .deleted = deleted};
}

static void txn_rule(txn *t, const char *id, const char *contact, const char *min_role, bool deleted)
{
	size_t i = t->n++;
	t->vals[i][0] = id, t->vals[i][1] = contact, t->vals[i][2] = min_role;
	t->rows[i] = (checkpoint_row){.table = POLICY_STATE_RULES, .values = t->vals[i], .deleted = deleted};
}

static void txn_commit(fx *f, txn *t, uint64_t lsn)
{
	char err[CHECKPOINT_ERROR_MAX];
	for (size_t i = 0; i < t->n; i++)
		model_apply(&f->m, &t->rows[i]);
	assert_int_equal(f->st->ops->append(f->st->impl, lsn, t->rows, t->n, err), 0);
	t->n = 0;
}

static void sync_at(fx *f, uint64_t lsn)
{
	char err[CHECKPOINT_ERROR_MAX];
	int rc = f->st->ops->sync(f->st->impl, lsn, err);
	if (rc != 0)
		fprintf(stderr, "sync: %s\n", err);
	assert_int_equal(rc, 0);
}

static void compact_at(fx *f, uint64_t upto)
{
	char err[CHECKPOINT_ERROR_MAX];
	int rc = f->st->ops->compact(f->st->impl, upto, model_dump, &f->m, err);
	if (rc != 0)
		fprintf(stderr, "compact: %s\n", err);
	assert_int_equal(rc, 0);
}

/* Loads the state as of at; returns it as text (caller frees) and *state_lsn. */
static char *load_text(fx *f, uint64_t at, uint64_t *state_lsn)
{
	char err[CHECKPOINT_ERROR_MAX] = "";
	model_clear(&f->loaded);
	int rc = f->st->ops->load(f->st->impl, at, model_apply, &f->loaded, state_lsn, err);
	if (rc != 0)
		fprintf(stderr, "load: %s\n", err);
	assert_int_equal(rc, 0);
	return model_text(&f->loaded);
}

static void assert_state(fx *f, uint64_t at, const char *want, uint64_t want_lsn)
{
	uint64_t lsn = 0;
	char *got = load_text(f, at, &lsn);
	assert_string_equal(got, want);
	assert_int_equal(lsn, want_lsn);
	free(got);
}

static off_t file_size(const fx *f, const char *name)
{
	char p[600];
	struct stat st;
	path_of(f, name, p, sizeof(p));
	return stat(p, &st) == 0 ? st.st_size : -1;
}

static void file_copy(const fx *f, const char *from, const char *to)
{
	char a[600], b[600], cmd[1400];
	path_of(f, from, a, sizeof(a));
	path_of(f, to, b, sizeof(b));
	snprintf(cmd, sizeof(cmd), "cp -p '%s' '%s'", a, b);
	assert_int_equal(system(cmd), 0);
}

/* The history every test below starts from: a base of 50 members at 0x100, then four
 * transactions. Returns the model's text after each (states[0] = the base). */
static void history(fx *f, char *states[5])
{
	txn t = {0};
	for (int i = 0; i < 50; i++) {
		txn_member(&t, i, i % 2 ? O1 : O2, i % 5 == 0 ? "admin" : "member", false);
		for (size_t k = 0; k < t.n; k++)
			model_apply(&f->m, &t.rows[k]);
		t.n = 0;
	}
	compact_at(f, 0x100);
	states[0] = model_text(&f->m);
	txn_member(&t, 1, O1, "owner", false); /* promotion */
	txn_rule(&t, R1, C1, "admin", false);
	txn_commit(f, &t, 0x200);
	states[1] = model_text(&f->m);
	txn_member(&t, 2, O2, NULL, true); /* removal */
	txn_member(&t, 100, O1, "viewer", false);
	txn_commit(f, &t, 0x300);
	states[2] = model_text(&f->m);
	txn_rule(&t, R1, C1, "analyst", false); /* the rule changes its min_role */
	txn_member(&t, 3, O1, NULL, true);       /* a seat handed over: old key gone, new key set */
	txn_member(&t, 103, O1, "member", false);
	txn_commit(f, &t, 0x400);
	states[3] = model_text(&f->m);
	txn_rule(&t, R1, NULL, NULL, true);
	txn_commit(f, &t, 0x500);
	states[4] = model_text(&f->m);
	sync_at(f, 0x500);
}

static void states_free(char *states[5])
{
	for (int i = 0; i < 5; i++)
		free(states[i]);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_empty(void **state)
{
	fx *f = *state;
	uint64_t lsn = 99;
	char *got = load_text(f, 0x1000, &lsn);
	assert_string_equal(got, "");
	assert_int_equal(lsn, 0);
	free(got);
	checkpoint_store *other = NULL;
	char err[CHECKPOINT_ERROR_MAX];
	if (pg_mode()) { /* a second store on the same slot is refused */
		char slot[128];
		slot_of(f, slot);
		assert_int_equal(checkpoint_pg_create(getenv("WALCAST_TEST_CHECKPOINT_PG"), NULL, slot, &other, err), -EBUSY);
		assert_non_null(strstr(err, "in use"));
		return;
	}
	struct stat st;
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(file_size(f, "log") > 0, 1);
	char p[600];
	path_of(f, "log", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* a second store on the same directory is refused */
	assert_int_equal(checkpoint_dir_create(f->dir, &other, err), -EBUSY);
	assert_non_null(strstr(err, "in use"));
}

static void test_round_trip_and_load_at(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	store_reopen(f);
	assert_state(f, 0x500, s[4], 0x500);
	assert_state(f, 0x100, s[0], 0x100);
	assert_state(f, 0x1ff, s[0], 0x1ff);
	assert_state(f, 0x200, s[1], 0x200);
	assert_state(f, 0x2a0, s[1], 0x2a0);
	assert_state(f, 0x300, s[2], 0x300);
	assert_state(f, 0x400, s[3], 0x400);
	/* past what the store knows: the state as of the newest LSN it knows */
	assert_state(f, 0x9000, s[4], 0x500);
	if (!pg_mode()) {
		char p[600];
		struct stat st;
		path_of(f, "base", p, sizeof(p));
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
	}
	/* before the base: refused, not a wrong state */
	uint64_t lsn;
	char err[CHECKPOINT_ERROR_MAX];
	model_clear(&f->loaded);
	assert_int_equal(f->st->ops->load(f->st->impl, 0x80, model_apply, &f->loaded, &lsn, err), -ESTALE);
	assert_non_null(strstr(err, "compacted"));
	states_free(s);
}

static void test_known_at_survives_with_positions(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	uint64_t lsn = 0;
	assert_int_equal(f->st->ops->position_put(f->st->impl, "confirmed", 0x700), 0);
	assert_int_equal(f->st->ops->position_put(f->st->impl, "sink.jsonl", 0x650), 0);
	sync_at(f, 0x700);
	store_reopen(f);
	assert_int_equal(f->st->ops->position_get(f->st->impl, "confirmed", &lsn), 0);
	assert_int_equal(lsn, 0x700);
	assert_int_equal(f->st->ops->position_get(f->st->impl, "sink.jsonl", &lsn), 0);
	assert_int_equal(lsn, 0x650);
	assert_int_equal(f->st->ops->position_get(f->st->impl, "never", &lsn), 0);
	assert_int_equal(lsn, 0);
	assert_state(f, 0x700, s[4], 0x700);
	assert_state(f, 0x800, s[4], 0x700);
	assert_int_equal(f->st->ops->position_put(f->st->impl, "bad=name", 1), -EINVAL);
	states_free(s);
}

static void test_torn_tail_cut(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	off_t size = file_size(f, "log");
	checkpoint_store_destroy(f->st);
	f->st = NULL;
	char p[600];
	path_of(f, "log", p, sizeof(p));
	/* a crash in the middle of writing the last record */
	assert_int_equal(truncate(p, size - 7), 0);
	store_open(f);
	assert_state(f, 0x500, s[3], 0x400);
	off_t cut = file_size(f, "log");
	assert_true(cut < size - 7);
	/* the store goes on after the cut: the transaction comes again */
	txn t = {0};
	txn_rule(&t, R1, NULL, NULL, true);
	txn_commit(f, &t, 0x500);
	sync_at(f, 0x500);
	store_reopen(f);
	assert_state(f, 0x500, s[4], 0x500);
	assert_state(f, 0x300, s[2], 0x300);
	states_free(s);
}

static void test_corrupt_byte_cut(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	checkpoint_store_destroy(f->st);
	f->st = NULL;
	/* flip one byte inside the third record (0x400): the first two stay, the rest is cut */
	char p[600];
	path_of(f, "log", p, sizeof(p));
	int fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	off_t size = lseek(fd, 0, SEEK_END);
	char *data = malloc((size_t)size);
	assert_int_equal(pread(fd, data, (size_t)size, 0), size);
	/* find the record of 0x400 by its lsn bytes (little endian, after the type byte) */
	off_t at = -1;
	for (off_t i = 8; i + 9 < size; i++)
		if (data[i] == 4 && (uint8_t)data[i + 1] == 0x00 && (uint8_t)data[i + 2] == 0x04 && data[i + 3] == 0)
			at = i;
	assert_true(at > 0);
	char b = (char)(data[at + 20] ^ 0x40);
	assert_int_equal(pwrite(fd, &b, 1, at + 20), 1);
	close(fd);
	free(data);
	store_open(f);
	assert_state(f, 0x500, s[2], 0x300);
	assert_state(f, 0x200, s[1], 0x200);
	states_free(s);
}

/* A record made durable (and recorded so in positions) that is gone: the store says it knows
 * the state only as far as the intact records. */
static void test_damage_below_synced_caps_known_at(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	assert_int_equal(f->st->ops->position_put(f->st->impl, "confirmed", 0x500), 0);
	sync_at(f, 0x500);
	off_t size = file_size(f, "log");
	checkpoint_store_destroy(f->st);
	f->st = NULL;
	char p[600];
	path_of(f, "log", p, sizeof(p));
	assert_int_equal(truncate(p, size - 3), 0);
	store_open(f);
	assert_state(f, 0x500, s[3], 0x400);
	states_free(s);
}

static void test_compact_keeps_states(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	uint64_t before = f->st->ops->log_bytes(f->st->impl);
	/* the writer's model is at 0x500; compaction as of 0x300 needs the state as of 0x300 */
	model m300 = {0};
	uint64_t lsn;
	char err[CHECKPOINT_ERROR_MAX];
	assert_int_equal(f->st->ops->load(f->st->impl, 0x300, model_apply, &m300, &lsn, err), 0);
	assert_int_equal(f->st->ops->compact(f->st->impl, 0x300, model_dump, &m300, err), 0);
	model_clear(&m300);
	assert_true(f->st->ops->log_bytes(f->st->impl) < before);
	assert_state(f, 0x300, s[2], 0x300);
	assert_state(f, 0x400, s[3], 0x400);
	assert_state(f, 0x500, s[4], 0x500);
	store_reopen(f);
	assert_state(f, 0x300, s[2], 0x300);
	assert_state(f, 0x400, s[3], 0x400);
	assert_state(f, 0x500, s[4], 0x500);
	/* appends go on after a compaction */
	txn t = {0};
	txn_member(&t, 200, O2, "analyst", false);
	txn_commit(f, &t, 0x600);
	sync_at(f, 0x600);
	char *s6 = model_text(&f->m);
	store_reopen(f);
	assert_state(f, 0x600, s6, 0x600);
	assert_state(f, 0x500, s[4], 0x500);
	/* everything folded: an empty log */
	compact_at(f, 0x600);
	assert_int_equal(f->st->ops->log_bytes(f->st->impl), 0);
	store_reopen(f);
	assert_state(f, 0x600, s6, 0x600);
	free(s6);
	states_free(s);
}

/* A crash during compaction leaves the files in one of these states; each loads correctly. */
static void test_compact_crash_points(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	checkpoint_store_destroy(f->st);
	f->st = NULL;
	file_copy(f, "base", "base.old");
	file_copy(f, "log", "log.old");
	store_open(f);
	/* compact as of 0x500 (the model's state) */
	compact_at(f, 0x500);
	checkpoint_store_destroy(f->st);
	f->st = NULL;
	file_copy(f, "base", "base.new");
	file_copy(f, "log", "log.new");

	/* (1) crashed while writing base.tmp: old base and log, a partial base.tmp */
	file_copy(f, "base.old", "base");
	file_copy(f, "log.old", "log");
	file_copy(f, "log.old", "base.tmp");
	store_open(f);
	assert_int_equal(file_size(f, "base.tmp"), -1);
	assert_state(f, 0x200, s[1], 0x200);
	assert_state(f, 0x500, s[4], 0x500);
	checkpoint_store_destroy(f->st);
	f->st = NULL;

	/* (2) base renamed, log not yet rewritten (a log.tmp half written) */
	file_copy(f, "base.new", "base");
	file_copy(f, "log.old", "log");
	file_copy(f, "base.new", "log.tmp");
	store_open(f);
	assert_int_equal(file_size(f, "log.tmp"), -1);
	assert_state(f, 0x500, s[4], 0x500);
	/* and appends after it still land and load */
	txn t = {0};
	txn_member(&t, 300, O1, "viewer", false);
	txn_commit(f, &t, 0x600);
	sync_at(f, 0x600);
	char *s6 = model_text(&f->m);
	store_reopen(f);
	assert_state(f, 0x600, s6, 0x600);
	assert_state(f, 0x500, s[4], 0x500);
	checkpoint_store_destroy(f->st);
	f->st = NULL;

	/* (3) both done */
	file_copy(f, "base.new", "base");
	file_copy(f, "log.new", "log");
	store_open(f);
	assert_state(f, 0x500, s[4], 0x500);
	free(s6);
	states_free(s);
}

/* After a resume at 0x300 the server sends 0x400 and 0x500 again: the logged ones are
 * replaced, not doubled, and a different replay wins. */
static void test_replay_replaces(void **state)
{
	fx *f = *state;
	char *s[5];
	history(f, s);
	store_reopen(f);
	model_clear(&f->m);
	uint64_t lsn;
	char err[CHECKPOINT_ERROR_MAX];
	assert_int_equal(f->st->ops->load(f->st->impl, 0x300, model_apply, &f->m, &lsn, err), 0);
	txn t = {0};
	txn_member(&t, 7, O1, "owner", false);
	txn_commit(f, &t, 0x380);
	sync_at(f, 0x380);
	char *s38 = model_text(&f->m);
	store_reopen(f);
	assert_state(f, 0x380, s38, 0x380);
	assert_state(f, 0x9000, s38, 0x380); /* 0x400 and 0x500 are being redone: not known past 0x380 */
	assert_state(f, 0x300, s[2], 0x300);
	free(s38);
	states_free(s);
}

/* Cost: a sync with nothing appended and no position changed writes nothing; a transaction
 * without policy rows appends nothing; an append costs its rows, not the state's size. */
static void test_bounded_cost(void **state)
{
	fx *f = *state;
	txn t = {0};
	for (int i = 0; i < 4000; i++) {
		txn_member(&t, i, i % 3 ? O1 : O2, "member", false);
		for (size_t k = 0; k < t.n; k++)
			model_apply(&f->m, &t.rows[k]);
		t.n = 0;
	}
	compact_at(f, 0x100);
	off_t base = file_size(f, "base");
	assert_true(base > 4000 * 80);
	off_t log0 = file_size(f, "log"), pos0 = file_size(f, "positions");
	char p[600];
	struct stat st0, st1;
	path_of(f, "positions", p, sizeof(p));
	assert_int_equal(stat(p, &st0), 0);
	/* transactions without policy rows */
	char err[CHECKPOINT_ERROR_MAX];
	assert_int_equal(f->st->ops->append(f->st->impl, 0x200, NULL, 0, err), 0);
	sync_at(f, 0x200);
	sync_at(f, 0x300);
	assert_int_equal(file_size(f, "log"), log0);
	assert_int_equal(stat(p, &st1), 0);
	assert_int_equal(st1.st_ino, st0.st_ino); /* not replaced */
	assert_int_equal(file_size(f, "positions"), pos0);
	/* one membership: a record of about its size */
	txn_member(&t, 5, O1, NULL, true);
	txn_commit(f, &t, 0x400);
	sync_at(f, 0x400);
	off_t grew = file_size(f, "log") - log0;
	assert_true(grew > 0 && grew < 200);
	assert_int_equal(f->st->ops->log_bytes(f->st->impl), (uint64_t)grew);
	assert_int_equal(file_size(f, "base"), base);
	char *want = model_text(&f->m);
	store_reopen(f);
	assert_state(f, 0x400, want, 0x400);
	free(want);
}

/* Transaction i of the crash test: member i joins with a role, member i - 3 leaves. */
static void crash_txn(txn *t, int i)
{
	static const char *const roles[] = {"viewer", "member", "analyst", "admin", "owner"};
	txn_member(t, i, i % 2 ? O1 : O2, roles[i % 5], false);
	if (i >= 3)
		txn_member(t, i - 3, (i - 3) % 2 ? O1 : O2, NULL, true);
}

/* kill -9 of a writer that appends and syncs in a loop (reporting each synced LSN through a
 * pipe), at several moments: the reopened store holds every synced transaction, each load
 * equals the model replayed to its LSN. */
static void test_kill_during_appends(void **state)
{
	fx *f = *state;
	checkpoint_store_destroy(f->st); /* the child opens it */
	f->st = NULL;
	for (int round = 0; round < 3; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			char err[CHECKPOINT_ERROR_MAX];
			checkpoint_store *st = NULL;
			if (store_create(f, &st, err) != 0)
				_exit(3);
			uint64_t lsn = 0;
			/* go on after what the store holds (the previous round's last transaction) */
			model m = {0};
			if (st->ops->load(st->impl, UINT64_MAX, model_apply, &m, &lsn, err) != 0)
				_exit(4);
			for (int i = (int)(lsn / 0x100) + 1;; i++) {
				txn t = {0};
				crash_txn(&t, i);
				if (st->ops->append(st->impl, (uint64_t)i * 0x100, t.rows, t.n, err) != 0 ||
				    st->ops->sync(st->impl, (uint64_t)i * 0x100, err) != 0)
					_exit(5);
				uint32_t done = (uint32_t)i;
				if (write(p[1], &done, sizeof(done)) != sizeof(done))
					_exit(6);
			}
		}
		close(p[1]);
		/* wait for the first synced transaction (fsync may be slow on a busy machine), then let
		 * the writer run on for a while before the kill */
		uint32_t last = 0, v;
		if (read(p[0], &v, sizeof(v)) == sizeof(v))
			last = v;
		struct timespec ts = {0, (20 + 30 * round) * 1000000L};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status = 0;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		while (read(p[0], &v, sizeof(v)) == sizeof(v))
			last = v;
		close(p[0]);
		assert_true(last > 0);
		store_open(f);
		/* every synced transaction is there; a transaction past them may be too (synced, not yet
		 * reported), none is half there */
		model_clear(&f->m);
		uint64_t lsn = 0;
		char *all = load_text(f, UINT64_MAX, &lsn);
		assert_true(lsn >= (uint64_t)last * 0x100);
		uint32_t top = (uint32_t)(lsn / 0x100);
		for (uint32_t i = 1; i <= top; i++) {
			txn t = {0};
			crash_txn(&t, (int)i);
			for (size_t k = 0; k < t.n; k++)
				model_apply(&f->m, &t.rows[k]);
			if (i == last) {
				uint64_t at_lsn = 0;
				char *want = model_text(&f->m);
				char *got = load_text(f, (uint64_t)i * 0x100, &at_lsn);
				assert_string_equal(got, want);
				assert_int_equal(at_lsn, (uint64_t)i * 0x100);
				free(got), free(want);
			}
		}
		char *want = model_text(&f->m);
		assert_string_equal(all, want);
		free(want);
		free(all);
		checkpoint_store_destroy(f->st);
		f->st = NULL;
	}
	store_open(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_and_load_at, setup, teardown),
		cmocka_unit_test_setup_teardown(test_known_at_survives_with_positions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_byte_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_below_synced_caps_known_at, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_keeps_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_crash_points, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounded_cost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill_during_appends, setup, teardown),
	};
	/* the PostgreSQL store: the cases that are not about the directory's files */
	const struct CMUnitTest pg_tests[] = {
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_and_load_at, setup, teardown),
		cmocka_unit_test_setup_teardown(test_known_at_survives_with_positions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact_keeps_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill_during_appends, setup, teardown),
	};
	if (pg_mode())
		return cmocka_run_group_tests_name("checkpoint_pg", pg_tests, NULL, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
