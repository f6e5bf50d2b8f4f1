/*
 * txnbuf_bench — the cost of holding a transaction until its commit (src/stream/txnbuf.h), on one core:
 * append + replay per change for an INSERT of a 13-column `events`-like row (uuids, text, two
 * timestamps, an integer, E.164 numbers, a bytea body of 262 hex characters on 40 % of the rows;
 * about 400 bytes of column text), measured
 *
 *   (a) in memory: a transaction of N changes under a mem_limit large enough to hold it;
 *   (b) spilled:   the same transaction under a 64 KiB mem_limit, so that nearly all of it goes
 *                  to the temporary file and is read back on replay (from the page cache: the
 *                  file is never fsynced, so this is the CPU and system-call cost, not the disk's);
 *   (c) small transactions: 10 changes each, append + replay + reset, in memory.
 *
 * Each run appends the transaction, replays it once through a callback that reads every value,
 * and resets the buffer; the figures are medians over runs, in CPU time of the thread (user and
 * system: the spill file's writes and reads count), which other work on a shared machine skews
 * less than wall time; the wall-clock total is reported beside it. Usage:
 *
 *   txnbuf_bench [RUNS [N [SPILL_DIR]]]     defaults: 7 runs, 200,000 changes, $TMPDIR or /tmp
 *
 * Prints "key value" lines.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relcache.h"
#include "txnbuf.h"

enum { E_ID, E_ORG, E_CONTACT, E_USER, E_KIND, E_DIR, E_STATUS, E_STARTED, E_DUR, E_FROM, E_TO, E_BODY,
       E_CREATED, E_NCOLS };
#define N_ROWS 1024 /* distinct rows, cycled */

static rel_column events_cols[] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "contact_id", .type_oid = 2950, .typmod = -1},
	{.name = "user_id", .type_oid = 2950, .typmod = -1},
	{.name = "kind", .type_oid = 25, .typmod = -1},
	{.name = "direction", .type_oid = 25, .typmod = -1},
	{.name = "status", .type_oid = 25, .typmod = -1},
	{.name = "started_at", .type_oid = 1184, .typmod = -1},
	{.name = "duration_s", .type_oid = 23, .typmod = -1},
	{.name = "from_number", .type_oid = 25, .typmod = -1},
	{.name = "to_number", .type_oid = 25, .typmod = -1},
	{.name = "body", .type_oid = 17, .typmod = -1},
	{.name = "created_at", .type_oid = 1184, .typmod = -1},
};

typedef struct erow {
	char cell[E_NCOLS][320];
	change_value v[E_NCOLS];
} erow;

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void uuid_of(char out[37], unsigned kind, unsigned n)
{
	snprintf(out, 37, "%02x000000-0000-4000-8000-%012x", kind, n);
}

static double clock_s(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void)
{
	return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "txnbuf_bench: %s: %d (%s)\n", what, rc, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static erow *make_rows(void)
{
	erow *rows = calloc(N_ROWS, sizeof(*rows));
	if (rows == NULL)
		die("rows", -ENOMEM);
	for (int i = 0; i < N_ROWS; i++) {
		erow *r = &rows[i];
		bool sms = rng() % 5 < 2;
		uuid_of(r->cell[E_ID], 0x0d, (unsigned)i);
		uuid_of(r->cell[E_ORG], 0x0a, (unsigned)(rng() % 100));
		if (rng() % 10 != 0)
			uuid_of(r->cell[E_CONTACT], 0x0c, (unsigned)(rng() % 50000));
		if (rng() % 5 != 0)
			uuid_of(r->cell[E_USER], 0x0b, (unsigned)(rng() % 1000));
		strcpy(r->cell[E_KIND], sms ? "sms" : "call");
		strcpy(r->cell[E_DIR], rng() % 2 ? "inbound" : "outbound");
		strcpy(r->cell[E_STATUS], "completed");
		strcpy(r->cell[E_STARTED], "2026-11-22 10:00:00.123456+00");
		snprintf(r->cell[E_DUR], 320, "%u", (unsigned)(rng() % 600));
		snprintf(r->cell[E_FROM], 320, "+1555%07u", (unsigned)(rng() % 10000000));
		snprintf(r->cell[E_TO], 320, "+1555%07u", (unsigned)(rng() % 10000000));
		if (sms) {
			/* bytea text output of a 130-byte ciphertext: "\x" and 260 hex digits */
			char *b = r->cell[E_BODY];
			b[0] = '\\';
			b[1] = 'x';
			for (int k = 0; k < 260; k++)
				b[2 + k] = "0123456789abcdef"[rng() % 16];
			b[262] = '\0';
		}
		strcpy(r->cell[E_CREATED], "2026-11-22 10:00:01.654321+00");
		for (int k = 0; k < E_NCOLS; k++) {
			bool null = r->cell[k][0] == '\0' || (k == E_DUR && sms);
			r->v[k] = null ? (change_value){VALUE_NULL, 0, NULL}
			               : (change_value){VALUE_TEXT, (uint32_t)strlen(r->cell[k]), r->cell[k]};
		}
	}
	return rows;
}

/* Reads every value, as a consumer would at least look at them. */
static int touch_cb(void *arg, const change *c)
{
	uint64_t *sum = arg;
	for (int k = 0; k < E_NCOLS; k++)
		*sum += c->new_tuple[k].len + (c->new_tuple[k].data ? (unsigned char)c->new_tuple[k].data[0] : 0);
	*sum += c->lsn;
	return 0;
}

typedef struct result {
	double append_ns, replay_ns, total_ns; /* per change, medians, CPU time */
	double wall_ns;                        /* per change, median, wall time */
	double bytes_per_change;
	uint64_t spill_bytes;
} result;

/* runs × (append n changes, replay, reset) of txn_len-change transactions. */
static result measure(const relation *rel, const erow *rows, size_t mem_limit, const char *dir, int runs,
                      size_t n, size_t txn_len, uint64_t *sink)
{
	txnbuf *tb = NULL;
	int rc = txnbuf_create(mem_limit, dir, &tb);
	if (rc < 0)
		die("txnbuf_create", rc);
	change_txn txn = {.xid = 750, .commit_lsn = 0x16B37A0};
	double *app = calloc((size_t)runs, sizeof(double)), *rep = calloc((size_t)runs, sizeof(double));
	double *tot = calloc((size_t)runs, sizeof(double)), *wall = calloc((size_t)runs, sizeof(double));
	result res = {0};
	for (int r = -1; r < runs; r++) { /* run -1 warms up (page cache, allocations) */
		/* Small transactions are timed as a whole: a clock read per transaction would cost
		 * as much as its changes. */
		bool split = txn_len >= n;
		double ta = 0, tr = 0, w0 = clock_s(CLOCK_MONOTONIC), c0 = now();
		size_t i = 0;
		while (i < n) {
			double t0 = split ? now() : 0;
			size_t end = i + txn_len < n ? i + txn_len : n;
			for (size_t j = i; j < end; j++) {
				change c = {.action = CHANGE_INSERT, .lsn = 0x1000000 + j * 8, .txn = &txn, .rel = rel,
				            .new_tuple = (change_value *)rows[j % N_ROWS].v};
				if ((rc = txnbuf_append(tb, &c)) < 0)
					die("txnbuf_append", rc);
			}
			double t1 = split ? now() : 0;
			if (r == runs - 1 && i == 0) {
				txnbuf_stats st;
				txnbuf_get_stats(tb, &st);
				res.spill_bytes = st.spill_bytes;
				res.bytes_per_change = (double)(st.spill_bytes + st.mem_bytes) / (double)(end - i);
			}
			if ((rc = txnbuf_replay(tb, &txn, touch_cb, sink)) != 0)
				die("txnbuf_replay", rc);
			txnbuf_reset(tb);
			double t2 = split ? now() : 0;
			ta += t1 - t0;
			tr += t2 - t1;
			i = end;
		}
		if (r >= 0) {
			app[r] = split ? ta * 1e9 / (double)n : 0;
			rep[r] = split ? tr * 1e9 / (double)n : 0;
			tot[r] = (split ? ta + tr : now() - c0) * 1e9 / (double)n;
			wall[r] = (clock_s(CLOCK_MONOTONIC) - w0) * 1e9 / (double)n;
		}
	}
	res.append_ns = median(app, runs);
	res.replay_ns = median(rep, runs);
	res.total_ns = median(tot, runs);
	res.wall_ns = median(wall, runs);
	free(wall);
	free(app);
	free(rep);
	free(tot);
	txnbuf_destroy(tb);
	return res;
}

static void print(const char *name, const result *r)
{
	if (r->append_ns > 0) {
		printf("%s_append_ns_per_change %.1f\n", name, r->append_ns);
		printf("%s_replay_ns_per_change %.1f\n", name, r->replay_ns);
	}
	printf("%s_total_ns_per_change %.1f\n", name, r->total_ns);
	printf("%s_wall_ns_per_change %.1f\n", name, r->wall_ns);
	printf("%s_bytes_per_change %.1f\n", name, r->bytes_per_change);
	printf("%s_spill_bytes %llu\n", name, (unsigned long long)r->spill_bytes);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 7;
	size_t n = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 200000;
	const char *dir = argc > 3 ? argv[3] : NULL;
	if (runs < 1 || n < 10)
		die("usage: txnbuf_bench [RUNS [N [SPILL_DIR]]]", -EINVAL);
	relcache *rc = relcache_create();
	if (rc == NULL)
		die("relcache", -ENOMEM);
	relation d = {.oid = 2, .schema = "public", .name = "events", .ncols = E_NCOLS, .cols = events_cols,
	              .replident = 'f'};
	const relation *rel;
	int err = relcache_put(rc, &d, &rel);
	if (err < 0)
		die("relcache_put", err);
	erow *rows = make_rows();
	size_t text = 0;
	for (int i = 0; i < N_ROWS; i++)
		for (int k = 0; k < E_NCOLS; k++)
			text += rows[i].v[k].len;
	printf("runs %d\nchanges %zu\ncolumn_text_bytes_per_row %.1f\n", runs, n, (double)text / N_ROWS);
	uint64_t sink = 0;
	result mem = measure(rel, rows, (size_t)1 << 30, dir, runs, n, n, &sink);
	print("memory", &mem);
	result sp = measure(rel, rows, 64 * 1024, dir, runs, n, n, &sink);
	print("spilled", &sp);
	result small = measure(rel, rows, 64 * 1024, dir, runs, n, 10, &sink);
	print("small_txn", &small);
	printf("checksum %llu\n", (unsigned long long)(sink & 0xffff));
	free(rows);
	relcache_destroy(rc);
	return 0;
}
