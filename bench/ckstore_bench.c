/*
 * ckstore_bench — the cost of a checkpoint sync (checkpoint.h) in the dir store and in the
 * PostgreSQL store, in the same run: what the pipeline does at each confirm (position_put of
 * its confirmed LSN, then sync), with 0, 1 or 20 policy rows appended since the last sync. Also
 * load(at) of a state of N memberships (base + a short log), what a standby pays at takeover.
 *
 *   ckstore_bench DIR CONNINFO ITERATIONS MEMBERS
 *
 * Prints "key value" lines: for each store (dir, pg) and case (pos, rows1, rows20), the median
 * and p90 of one append+position_put+sync in microseconds of wall-clock time (the sync waits for
 * the disk or the server: CPU time would hide it), and load_ms medians over 5 loads.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "checkpoint_pg.h"
#include "policy_state.h"

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return v[(int)(p * (n - 1))];
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "ckstore_bench: %s: %s\n", what, err);
	exit(1);
}

typedef struct rows {
	checkpoint_row r[20];
	const char *v[20][3];
	char user[20][40];
} rows;

static void rows_fill(rows *x, int n, int seed)
{
	for (int i = 0; i < n; i++) {
		snprintf(x->user[i], 40, "0b000000-0000-4000-8000-%012d", seed * 20 + i);
		x->v[i][0] = "0a000000-0000-4000-8000-000000000001";
		x->v[i][1] = x->user[i];
		x->v[i][2] = (seed + i) % 2 ? "member" : "viewer";
		x->r[i] = (checkpoint_row){.table = POLICY_STATE_MEMBERSHIP, .values = x->v[i]};
	}
}

static int count_cb(void *arg, const checkpoint_row *row)
{
	(void)row;
	(*(size_t *)arg)++;
	return 0;
}

static int members_dump(void *arg, checkpoint_row_cb row_cb, void *row_arg)
{
	int n = *(int *)arg;
	for (int i = 0; i < n; i++) {
		char user[40];
		snprintf(user, sizeof(user), "0c000000-0000-4000-8000-%012d", i);
		const char *v[3] = {"0a000000-0000-4000-8000-000000000002", user, "member"};
		checkpoint_row r = {.table = POLICY_STATE_MEMBERSHIP, .values = v};
		int rc = row_cb(row_arg, &r);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* One store: the three sync cases, then the load. *lsn goes up across calls. */
static void measure(const char *name, checkpoint_store *st, int iters, int members, uint64_t *lsn)
{
	static const int cases[] = {0, 1, 20};
	static const char *const case_names[] = {"pos", "rows1", "rows20"};
	char err[CHECKPOINT_ERROR_MAX];
	double *t = malloc(sizeof(double) * (size_t)iters);
	rows x;
	for (int c = 0; c < 3; c++) {
		for (int i = -iters / 10; i < iters; i++) { /* a tenth as warm-up */
			*lsn += 0x100;
			rows_fill(&x, cases[c], i + iters * c);
			double t0 = now_us();
			if (st->ops->append(st->impl, *lsn, x.r, (size_t)cases[c], err) != 0)
				die("append", err);
			if (st->ops->position_put(st->impl, "pipeline", *lsn) != 0)
				die("position_put", name);
			if (st->ops->sync(st->impl, *lsn, err) != 0)
				die("sync", err);
			if (i >= 0)
				t[i] = now_us() - t0;
		}
		printf("%s_%s_median_us %.1f\n", name, case_names[c], pct(t, iters, 0.5));
		printf("%s_%s_p90_us %.1f\n", name, case_names[c], pct(t, iters, 0.9));
	}
	/* a standby's load at takeover: a base of `members` rows, then the log above */
	*lsn += 0x100;
	if (st->ops->compact(st->impl, *lsn, members_dump, &members, err) != 0)
		die("compact", err);
	for (int i = 0; i < 50; i++) {
		*lsn += 0x100;
		rows_fill(&x, 1, 100000 + i);
		if (st->ops->append(st->impl, *lsn, x.r, 1, err) != 0 || st->ops->sync(st->impl, *lsn, err) != 0)
			die("append", err);
	}
	double l[5];
	for (int i = 0; i < 5; i++) {
		size_t n = 0;
		uint64_t at = 0;
		double t0 = now_us();
		if (st->ops->load(st->impl, *lsn, count_cb, &n, &at, err) != 0)
			die("load", err);
		l[i] = (now_us() - t0) / 1000;
		if (n != (size_t)members + 50)
			die("load", "wrong row count");
	}
	printf("%s_load_ms %.1f\n", name, pct(l, 5, 0.5));
	free(t);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: ckstore_bench DIR CONNINFO ITERATIONS MEMBERS\n");
		return 2;
	}
	int iters = atoi(argv[3]), members = atoi(argv[4]);
	char err[CHECKPOINT_ERROR_MAX];
	checkpoint_store *dir = NULL, *pg = NULL;
	uint64_t lsn_dir = 0, lsn_pg = 0;
	if (checkpoint_dir_create(argv[1], &dir, err) != 0)
		die("dir store", err);
	if (checkpoint_pg_create(argv[2], NULL, "ckstore_bench", &pg, err) != 0)
		die("pg store", err);
	/* interleaved, so that the machine's noise falls on both */
	measure("dir", dir, iters, members, &lsn_dir);
	measure("pg", pg, iters, members, &lsn_pg);
	measure("dir2", dir, iters, members, &lsn_dir);
	measure("pg2", pg, iters, members, &lsn_pg);
	checkpoint_store_destroy(dir);
	checkpoint_store_destroy(pg);
	return 0;
}
