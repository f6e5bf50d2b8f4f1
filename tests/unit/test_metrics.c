/*
 * test_metrics — unit tests for the metrics registry (src/core/metrics.h): the exact text rendered
 * for every kind (golden strings), label and HELP escaping, histogram bucketing, callbacks,
 * refused registrations with their messages, removal, no allocation on the hot path, and
 * out-of-memory at every allocation leaving the registry as it was.
 *
 * Two more modes of the same binary:
 *   test_metrics promtool   renders a registry with every kind and has `promtool check metrics`
 *                           (Debian's prometheus package) validate it, after checking that
 *                           promtool does reject a bad exposition. Registered as its own ctest
 *                           (test_metrics_promtool); exits 77 (skipped) only when promtool is
 *                           absent and CMake did not find it either.
 *   test_metrics bench      prints ns per update and the render time of 1,000 children.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "heap.h"
#include "metrics.h"

/* ---- counting (and failing) allocations ---------------------------------------------- */

/* Outside AddressSanitizer (which owns malloc) the test replaces glibc's malloc family with
 * wrappers that count calls and can fail the n-th one. */
#ifndef TEST_ASAN
#define COUNT_MALLOC 1
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);

static struct {
	bool on;             /* count (and maybe fail) while set */
	unsigned long calls; /* malloc, calloc, realloc calls while on */
	long fail_at;        /* fail the call with this index (0-based) while on; -1: never */
	long live;           /* blocks allocated minus blocks freed, always counted */
} alloc_state = {false, 0, -1, 0};

static bool alloc_fails(void)
{
	if (!alloc_state.on)
		return false;
	return (long)alloc_state.calls++ == alloc_state.fail_at;
}

void *malloc(size_t n)
{
	void *p = alloc_fails() ? NULL : __libc_malloc(n);
	alloc_state.live += p != NULL;
	return p;
}

void *calloc(size_t n, size_t m)
{
	void *p = alloc_fails() ? NULL : __libc_calloc(n, m);
	alloc_state.live += p != NULL;
	return p;
}

void *realloc(void *p, size_t n)
{
	if (p != NULL && n == 0) {
		alloc_state.live--;
		return __libc_realloc(p, n);
	}
	void *q = alloc_fails() ? NULL : __libc_realloc(p, n);
	alloc_state.live += p == NULL && q != NULL;
	return q;
}

void free(void *p)
{
	alloc_state.live -= p != NULL;
	__libc_free(p);
}

static void alloc_watch(long fail_at)
{
	alloc_state.calls = 0;
	alloc_state.fail_at = fail_at;
	alloc_state.on = true;
}

static unsigned long alloc_unwatch(void)
{
	alloc_state.on = false;
	return alloc_state.calls;
}
#endif

/* ---- helpers ------------------------------------------------------------------------- */

static const double latency_buckets[] = {0.25, 0.5, 1, 2.5};

static metrics_family *family(metrics_registry *r, metrics_kind kind, const char *name,
                              const char *help, const char *const *labels)
{
	metrics_desc d = {.kind = kind, .name = name, .help = help, .labels = labels};
	if (kind == METRICS_HISTOGRAM) {
		d.buckets = latency_buckets;
		d.nbuckets = sizeof latency_buckets / sizeof latency_buckets[0];
	}
	metrics_family *f = NULL;
	char err[METRICS_ERROR_MAX] = "";
	int rc = metrics_family_register(r, &d, &f, err);
	if (rc != 0)
		fail_msg("registering %s: %s", name, err);
	return f;
}

/* Renders r and compares with want, printing both on a mismatch. */
static void expect_render(const metrics_registry *r, const char *want)
{
	buf b;
	buf_init(&b);
	assert_int_equal(metrics_render(r, &b), 0);
	const char *got = b.len ? b.data : "";
	if (strcmp(got, want) != 0) {
		print_error("rendered:\n%s\nexpected:\n%s\n", got, want);
		fail();
	}
	buf_fini(&b);
}

/* A family registration that must be refused with -EINVAL and a message containing want. */
static void expect_refused(metrics_registry *r, const metrics_desc *d, const char *want)
{
	metrics_family *f = (metrics_family *)0x1;
	char err[METRICS_ERROR_MAX] = "";
	assert_int_equal(metrics_family_register(r, d, &f, err), -EINVAL);
	assert_ptr_equal(f, (metrics_family *)0x1); /* out untouched */
	if (strstr(err, want) == NULL)
		fail_msg("registering %s: error \"%s\" does not say \"%s\"", d->name ? d->name : "(null)",
		         err, want);
}

/* ---- rendering of each kind ---------------------------------------------------------- */

static void test_counter_with_labels(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	assert_non_null(r);
	metrics_family *f = family(r, METRICS_COUNTER, "walcast_changes_total",
	                           "Changes processed, by table and action.",
	                           (const char *[]){"table", "action", NULL});
	metrics_counter *ins, *del;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"events", "insert", NULL}, &ins,
	                                          NULL), 0);
	assert_int_equal(metrics_counter_register(f, (const char *[]){"events", "delete", NULL}, &del,
	                                          NULL), 0);
	/* A fresh child renders as 0 in registration order. */
	expect_render(r, "# HELP walcast_changes_total Changes processed, by table and action.\n"
	                 "# TYPE walcast_changes_total counter\n"
	                 "walcast_changes_total{table=\"events\",action=\"insert\"} 0\n"
	                 "walcast_changes_total{table=\"events\",action=\"delete\"} 0\n");
	for (int i = 0; i < 41; i++)
		metrics_counter_inc(ins);
	metrics_counter_add(ins, 1);
	metrics_counter_add(del, UINT64_MAX - 1); /* exact beyond 2^53 */
	expect_render(r, "# HELP walcast_changes_total Changes processed, by table and action.\n"
	                 "# TYPE walcast_changes_total counter\n"
	                 "walcast_changes_total{table=\"events\",action=\"insert\"} 42\n"
	                 "walcast_changes_total{table=\"events\",action=\"delete\"} "
	                 "18446744073709551614\n");
	assert_int_equal(metrics_family_size(f), 2);
	metrics_registry_destroy(r);
}

static void test_scalar_kinds(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *cf = family(r, METRICS_COUNTER_F, "walcast_policy_eval_seconds_total",
	                            "Time spent evaluating policies, in seconds.", NULL);
	metrics_family *gf = family(r, METRICS_GAUGE, "walcast_replication_lag_seconds",
	                            "Now minus the commit time of the last change, in seconds.", NULL);
	metrics_family *gi = family(r, METRICS_GAUGE_I, "walcast_connections",
	                            "Open connections, by sink.", (const char *[]){"sink", NULL});
	metrics_counter_f *c;
	metrics_gauge *g;
	metrics_gauge_i *ws, *nng;
	assert_int_equal(metrics_counter_f_register(cf, NULL, &c, NULL), 0);
	assert_int_equal(metrics_gauge_register(gf, (const char *[]){NULL}, &g, NULL), 0);
	assert_int_equal(metrics_gauge_i_register(gi, (const char *[]){"ws", NULL}, &ws, NULL), 0);
	assert_int_equal(metrics_gauge_i_register(gi, (const char *[]){"nng", NULL}, &nng, NULL), 0);

	metrics_counter_f_add(c, 0.25);
	metrics_counter_f_add(c, 0.5);
	metrics_counter_f_add(c, -1);  /* ignored: a counter never goes down */
	metrics_counter_f_add(c, NAN); /* ignored */
	metrics_gauge_set(g, 3);
	metrics_gauge_add(g, -0.5);
	metrics_gauge_i_set(ws, 10);
	metrics_gauge_i_add(ws, -3);
	metrics_gauge_i_set(nng, INT64_MIN);
	expect_render(r, "# HELP walcast_policy_eval_seconds_total Time spent evaluating policies, "
	                 "in seconds.\n"
	                 "# TYPE walcast_policy_eval_seconds_total counter\n"
	                 "walcast_policy_eval_seconds_total 0.75\n"
	                 "# HELP walcast_replication_lag_seconds Now minus the commit time of the last "
	                 "change, in seconds.\n"
	                 "# TYPE walcast_replication_lag_seconds gauge\n"
	                 "walcast_replication_lag_seconds 2.5\n"
	                 "# HELP walcast_connections Open connections, by sink.\n"
	                 "# TYPE walcast_connections gauge\n"
	                 "walcast_connections{sink=\"ws\"} 7\n"
	                 "walcast_connections{sink=\"nng\"} -9223372036854775808\n");
	metrics_registry_destroy(r);
}

/* Doubles print in the shortest form that reads back as the same double. */
static void test_float_format(void **state)
{
	(void)state;
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{0, "0"},
		{-0.5, "-0.5"},
		{0.1, "0.1"},
		{0.1 + 0.2, "0.30000000000000004"},
		{1.0 / 3, "0.3333333333333333"},
		{2.0 / 3, "0.6666666666666666"},
		{123456789, "123456789"},
		{9007199254740991.0, "9007199254740991"},
		{9007199254740992.0, "9007199254740992"},
		{18014398509481988.0, "18014398509481988"},
		{1e17, "1e+17"},
		{1e21, "1e+21"},
		{1e-7, "1e-07"},
		{1.5e-300, "1.5e-300"},
		{5e-324, "5e-324"},
		{2.2250738585072009e-308, "2.225073858507201e-308"},
		{1.7976931348623157e308, "1.7976931348623157e+308"},
		{INFINITY, "+Inf"},
		{-INFINITY, "-Inf"},
		{NAN, "NaN"},
	};
	metrics_registry *r = metrics_registry_create();
	metrics_family *f = family(r, METRICS_GAUGE, "walcast_test_value", "A value.",
	                           (const char *[]){"i", NULL});
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char label[8];
		snprintf(label, sizeof label, "%zu", i);
		metrics_gauge *g;
		assert_int_equal(metrics_gauge_register(f, (const char *[]){label, NULL}, &g, NULL), 0);
		metrics_gauge_set(g, cases[i].v);
	}
	buf b;
	buf_init(&b);
	assert_int_equal(metrics_render(r, &b), 0);
	const char *line = strstr(b.data, "walcast_test_value{");
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char want[96];
		snprintf(want, sizeof want, "walcast_test_value{i=\"%zu\"} %s\n", i, cases[i].text);
		assert_non_null(line);
		if (strncmp(line, want, strlen(want)) != 0)
			fail_msg("case %zu: got \"%.*s\", want \"%s\"", i, (int)strcspn(line, "\n"), line,
			         want);
		/* And it reads back as the value (the oracle is strtod, not our formatter). */
		if (!isnan(cases[i].v) && !isinf(cases[i].v))
			assert_true(strtod(strchr(line, ' ') + 1, NULL) == cases[i].v);
		line = strchr(line, '\n') + 1;
	}
	assert_int_equal(*line, '\0');
	buf_fini(&b);
	metrics_registry_destroy(r);
}

static void test_histogram(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *f = family(r, METRICS_HISTOGRAM, "walcast_delivery_latency_seconds",
	                           "Commit to delivery latency, in seconds.",
	                           (const char *[]){"sink", NULL});
	metrics_family *plain = family(r, METRICS_HISTOGRAM, "walcast_batch_size_bytes",
	                               "Batch sizes, in bytes.", NULL);
	metrics_histogram *h, *h2, *p;
	assert_int_equal(metrics_histogram_register(f, (const char *[]){"ws", NULL}, &h, NULL), 0);
	assert_int_equal(metrics_histogram_register(f, (const char *[]){"nng", NULL}, &h2, NULL), 0);
	assert_int_equal(metrics_histogram_register(plain, NULL, &p, NULL), 0);
	/* Upper bounds are inclusive: 0.25 counts in le="0.25". */
	metrics_histogram_observe(h, 0.25);
	metrics_histogram_observe(h, 0.125);
	metrics_histogram_observe(h, 0.75);
	metrics_histogram_observe(h, 2.5);
	metrics_histogram_observe(h, 3);     /* only in +Inf */
	metrics_histogram_observe(h, 1e300); /* only in +Inf */
	metrics_histogram_observe(h2, -1);   /* below every bound: first bucket */
	metrics_histogram_observe(p, INFINITY);
	expect_render(r, "# HELP walcast_delivery_latency_seconds Commit to delivery latency, in "
	                 "seconds.\n"
	                 "# TYPE walcast_delivery_latency_seconds histogram\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"ws\",le=\"0.25\"} 2\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"ws\",le=\"0.5\"} 2\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"ws\",le=\"1\"} 3\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"ws\",le=\"2.5\"} 4\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"ws\",le=\"+Inf\"} 6\n"
	                 "walcast_delivery_latency_seconds_sum{sink=\"ws\"} 1e+300\n"
	                 "walcast_delivery_latency_seconds_count{sink=\"ws\"} 6\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"nng\",le=\"0.25\"} 1\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"nng\",le=\"0.5\"} 1\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"nng\",le=\"1\"} 1\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"nng\",le=\"2.5\"} 1\n"
	                 "walcast_delivery_latency_seconds_bucket{sink=\"nng\",le=\"+Inf\"} 1\n"
	                 "walcast_delivery_latency_seconds_sum{sink=\"nng\"} -1\n"
	                 "walcast_delivery_latency_seconds_count{sink=\"nng\"} 1\n"
	                 "# HELP walcast_batch_size_bytes Batch sizes, in bytes.\n"
	                 "# TYPE walcast_batch_size_bytes histogram\n"
	                 "walcast_batch_size_bytes_bucket{le=\"0.25\"} 0\n"
	                 "walcast_batch_size_bytes_bucket{le=\"0.5\"} 0\n"
	                 "walcast_batch_size_bytes_bucket{le=\"1\"} 0\n"
	                 "walcast_batch_size_bytes_bucket{le=\"2.5\"} 0\n"
	                 "walcast_batch_size_bytes_bucket{le=\"+Inf\"} 1\n"
	                 "walcast_batch_size_bytes_sum +Inf\n"
	                 "walcast_batch_size_bytes_count 1\n");
	/* NaN lands in +Inf and poisons the sum, as in Prometheus' own clients. */
	metrics_histogram_observe(p, NAN);
	buf b;
	buf_init(&b);
	assert_int_equal(metrics_render(r, &b), 0);
	assert_non_null(strstr(b.data, "walcast_batch_size_bytes_bucket{le=\"+Inf\"} 2\n"
	                               "walcast_batch_size_bytes_sum NaN\n"
	                               "walcast_batch_size_bytes_count 2\n"));
	buf_fini(&b);
	metrics_registry_destroy(r);
}

/* Many buckets, many observations: every bucket's cumulative count equals a direct count. */
static void test_histogram_counts(void **state)
{
	(void)state;
	double bounds[20];
	for (int i = 0; i < 20; i++)
		bounds[i] = 0.001 * (1 << i);
	metrics_registry *r = metrics_registry_create();
	metrics_desc d = {.kind = METRICS_HISTOGRAM, .name = "walcast_test_seconds", .help = "h",
	                  .buckets = bounds, .nbuckets = 20};
	metrics_family *f;
	metrics_histogram *h;
	assert_int_equal(metrics_family_register(r, &d, &f, NULL), 0);
	assert_int_equal(metrics_histogram_register(f, NULL, &h, NULL), 0);
	uint64_t want[21] = {0};
	uint32_t x = 12345;
	for (int n = 0; n < 100000; n++) {
		x = x * 1103515245u + 12345u;
		double v = (double)(x >> 8) / (1 << 24) * 2000; /* 0 .. 2000 */
		metrics_histogram_observe(h, v);
		for (int i = 0; i < 20; i++)
			want[i] += v <= bounds[i];
		want[20]++;
	}
	buf b;
	buf_init(&b);
	assert_int_equal(metrics_render(r, &b), 0);
	const char *p = b.data;
	for (int i = 0; i <= 20; i++) {
		p = strstr(p, "walcast_test_seconds_bucket{le=\"");
		assert_non_null(p);
		p = strstr(p, "} ") + 2;
		assert_int_equal(strtoull(p, NULL, 10), want[i]);
	}
	assert_non_null(strstr(b.data, "walcast_test_seconds_count 100000\n"));
	buf_fini(&b);
	metrics_registry_destroy(r);
}

static void test_escaping(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *f = family(r, METRICS_COUNTER, "walcast_changes_total",
	                           "Changes with a \\ backslash,\na newline and \"quotes\".",
	                           (const char *[]){"table", NULL});
	metrics_counter *c;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"we\\ird \"t\"\nable", NULL}, &c,
	                                          NULL), 0);
	metrics_counter *u;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"caf\xc3\xa9 \xf0\x9f\x93\x9e",
	                                                              NULL}, &u, NULL), 0);
	metrics_counter *e;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"", NULL}, &e, NULL), 0);
	metrics_counter_inc(c);
	expect_render(r, "# HELP walcast_changes_total Changes with a \\\\ backslash,\\na newline and "
	                 "\"quotes\".\n"
	                 "# TYPE walcast_changes_total counter\n"
	                 "walcast_changes_total{table=\"we\\\\ird \\\"t\\\"\\nable\"} 1\n"
	                 "walcast_changes_total{table=\"caf\xc3\xa9 \xf0\x9f\x93\x9e\"} 0\n"
	                 "walcast_changes_total{table=\"\"} 0\n");
	/* Lookups use the raw values, not the escaped ones. */
	assert_int_equal(metrics_child_remove(f, (const char *[]){"we\\ird \"t\"\nable", NULL}), 0);
	assert_int_equal(metrics_child_remove(f, (const char *[]){"we\\\\ird", NULL}), -ENOENT);
	metrics_registry_destroy(r);
}

/* ---- callbacks ----------------------------------------------------------------------- */

typedef struct reading {
	double value;
	bool known;
	int calls;
} reading;

static int read_cb(void *arg, double *value)
{
	reading *rd = arg;
	rd->calls++;
	if (!rd->known)
		return -ENODATA;
	*value = rd->value;
	return 0;
}

static void test_callbacks(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *lag = family(r, METRICS_GAUGE, "walcast_replication_lag_bytes",
	                             "Server WAL position minus confirmed flush, in bytes.", NULL);
	metrics_family *pos = family(r, METRICS_GAUGE_I, "walcast_sink_position_lsn",
	                             "Last LSN each sink has taken, as a number.",
	                             (const char *[]){"sink", NULL});
	metrics_family *cnt = family(r, METRICS_COUNTER, "walcast_sink_deliveries_total",
	                             "Deliveries, by sink.", (const char *[]){"sink", NULL});
	reading lag_r = {.value = 123456, .known = false};
	reading a = {.value = 0x16B3748, .known = true}, b = {.value = 0, .known = false};
	reading d = {.value = 9007199254740992.0, .known = true};
	assert_int_equal(metrics_callback_register(lag, NULL, read_cb, &lag_r, NULL), 0);
	assert_int_equal(metrics_callback_register(pos, (const char *[]){"jsonl", NULL}, read_cb, &a,
	                                           NULL), 0);
	assert_int_equal(metrics_callback_register(pos, (const char *[]){"redis", NULL}, read_cb, &b,
	                                           NULL), 0);
	assert_int_equal(metrics_callback_register(cnt, (const char *[]){"ws", NULL}, read_cb, &d,
	                                           NULL), 0);
	/* A family whose every callback declines is left out, HELP and TYPE included. */
	expect_render(r, "# HELP walcast_sink_position_lsn Last LSN each sink has taken, as a "
	                 "number.\n"
	                 "# TYPE walcast_sink_position_lsn gauge\n"
	                 "walcast_sink_position_lsn{sink=\"jsonl\"} 23803720\n"
	                 "# HELP walcast_sink_deliveries_total Deliveries, by sink.\n"
	                 "# TYPE walcast_sink_deliveries_total counter\n"
	                 "walcast_sink_deliveries_total{sink=\"ws\"} 9007199254740992\n");
	assert_int_equal(lag_r.calls, 1);
	/* Values are read at render time, every time. */
	lag_r.known = true;
	b.known = true;
	b.value = 1.5;
	a.value = 1;
	expect_render(r, "# HELP walcast_replication_lag_bytes Server WAL position minus confirmed "
	                 "flush, in bytes.\n"
	                 "# TYPE walcast_replication_lag_bytes gauge\n"
	                 "walcast_replication_lag_bytes 123456\n"
	                 "# HELP walcast_sink_position_lsn Last LSN each sink has taken, as a "
	                 "number.\n"
	                 "# TYPE walcast_sink_position_lsn gauge\n"
	                 "walcast_sink_position_lsn{sink=\"jsonl\"} 1\n"
	                 "walcast_sink_position_lsn{sink=\"redis\"} 1.5\n"
	                 "# HELP walcast_sink_deliveries_total Deliveries, by sink.\n"
	                 "# TYPE walcast_sink_deliveries_total counter\n"
	                 "walcast_sink_deliveries_total{sink=\"ws\"} 9007199254740992\n");
	assert_int_equal(lag_r.calls, 2);
	/* A callback child cannot be registered twice, nor a histogram read by a callback. */
	char err[METRICS_ERROR_MAX] = "";
	assert_int_equal(metrics_callback_register(pos, (const char *[]){"jsonl", NULL}, read_cb, &a,
	                                           err), -EINVAL);
	assert_non_null(strstr(err, "walcast_sink_position_lsn{sink=\"jsonl\"}: already registered"));
	metrics_family *h = family(r, METRICS_HISTOGRAM, "walcast_x_seconds", "h", NULL);
	assert_int_equal(metrics_callback_register(h, NULL, read_cb, &a, err), -EINVAL);
	assert_non_null(strstr(err, "cannot be read by a callback"));
	assert_int_equal(metrics_callback_register(lag, (const char *[]){"x", NULL}, read_cb, &a, err),
	                 -EINVAL);
	assert_int_equal(metrics_callback_register(pos, (const char *[]){"y", NULL}, NULL, &a, err),
	                 -EINVAL);
	/* And removed like any child. */
	assert_int_equal(metrics_child_remove(pos, (const char *[]){"jsonl", NULL}), 0);
	assert_int_equal(metrics_child_remove(pos, (const char *[]){"jsonl", NULL}), -ENOENT);
	assert_int_equal(metrics_family_size(pos), 1);
	metrics_registry_destroy(r);
}

/* ---- refusals ------------------------------------------------------------------------ */

static void test_duplicates(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *f = family(r, METRICS_COUNTER, "walcast_sink_drops_total", "Drops, by sink.",
	                           (const char *[]){"sink", NULL});
	char err[METRICS_ERROR_MAX] = "";
	/* The same family name, even with another kind, is refused. */
	metrics_desc d = {.kind = METRICS_COUNTER, .name = "walcast_sink_drops_total", .help = "x"};
	expect_refused(r, &d, "metric walcast_sink_drops_total: already registered");
	metrics_counter *c, *c2 = (metrics_counter *)0x1;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"ws", NULL}, &c, err), 0);
	metrics_counter_add(c, 5);
	assert_int_equal(metrics_counter_register(f, (const char *[]){"ws", NULL}, &c2, err), -EINVAL);
	assert_ptr_equal(c2, (metrics_counter *)0x1);
	assert_string_equal(err, "metric walcast_sink_drops_total{sink=\"ws\"}: already registered");
	assert_int_equal(metrics_family_size(f), 1);
	/* The failed attempt left the first child alone. */
	expect_render(r, "# HELP walcast_sink_drops_total Drops, by sink.\n"
	                 "# TYPE walcast_sink_drops_total counter\n"
	                 "walcast_sink_drops_total{sink=\"ws\"} 5\n");
	metrics_registry_destroy(r);
}

static void test_bad_names(void **state)
{
	(void)state;
	static const struct {
		metrics_kind kind;
		const char *name;
		const char *labels[3];
		const char *err;
	} cases[] = {
		{METRICS_GAUGE, "", {NULL}, "metric name missing"},
		{METRICS_GAUGE, "1walcast", {NULL}, "not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"},
		{METRICS_GAUGE, "walcast-lag", {NULL}, "not a valid metric name"},
		{METRICS_GAUGE, "walcast lag", {NULL}, "not a valid metric name"},
		{METRICS_GAUGE, "walcast_l\xc3\xa4g", {NULL}, "not a valid metric name"},
		{METRICS_GAUGE, "walcast:lag", {NULL}, "colons are reserved for recording rules"},
		{METRICS_GAUGE, "walcast_replicationLag", {NULL}, "lower snake_case"},
		{METRICS_COUNTER, "walcast_changes", {NULL}, "a counter's name ends in _total"},
		{METRICS_COUNTER_F, "walcast_busy_seconds", {NULL}, "a counter's name ends in _total"},
		{METRICS_GAUGE, "walcast_changes_total", {NULL}, "only counters end in _total"},
		{METRICS_HISTOGRAM, "walcast_latency_total", {NULL}, "only counters end in _total"},
		{METRICS_GAUGE, "walcast_lag_milliseconds", {NULL},
		 "use the base unit \"seconds\", not \"milliseconds\""},
		{METRICS_GAUGE, "walcast_lag_minutes", {NULL}, "use the base unit \"seconds\", not \"minutes\""},
		{METRICS_COUNTER, "walcast_sent_kilobytes_total", {NULL},
		 "use the base unit \"bytes\", not \"kilobytes\""},
		{METRICS_COUNTER, "walcast_sent_bits_total", {NULL}, "use the base unit \"bytes\", not \"bits\""},
		{METRICS_GAUGE, "walcast_lag_ms", {NULL}, "abbreviated unit \"ms\""},
		{METRICS_GAUGE, "walcast_lag_sec", {NULL}, "abbreviated unit \"sec\""},
		{METRICS_GAUGE, "walcast_queue_kb", {NULL}, "abbreviated unit \"kb\""},
		{METRICS_GAUGE, "walcast_lag_s_now", {NULL}, "abbreviated unit \"s\""},
		{METRICS_GAUGE, "walcast_lag_gauge", {NULL}, "must not repeat the type (\"gauge\")"},
		{METRICS_COUNTER, "walcast_counter_total", {NULL}, "must not repeat the type (\"counter\")"},
		{METRICS_HISTOGRAM, "walcast_latency_histogram_seconds", {NULL},
		 "must not repeat the type (\"histogram\")"},
		{METRICS_GAUGE, "walcast_queue_count", {NULL}, "reserved for histogram samples"},
		{METRICS_HISTOGRAM, "walcast_latency_sum", {NULL}, "reserved for histogram samples"},
		{METRICS_GAUGE, "walcast_latency_bucket", {NULL}, "reserved for histogram samples"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"__sink", NULL}, "label __sink: names starting with __"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"sink-name", NULL}, "not a valid label name"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"1sink", NULL}, "not a valid label name"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"", NULL}, "empty label name"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"sinkName", NULL}, "label sinkName: write label names"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"le", NULL}, "label le is reserved"},
		{METRICS_HISTOGRAM, "walcast_lag_seconds", {"le", NULL}, "label le is reserved"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"quantile", NULL}, "label quantile is reserved"},
		{METRICS_GAUGE, "walcast_lag_bytes", {"sink", "sink", NULL}, "label sink listed twice"},
		{(metrics_kind)99, "walcast_lag_bytes", {NULL}, "unknown kind 99"},
	};
	metrics_registry *r = metrics_registry_create();
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		metrics_desc d = {.kind = cases[i].kind, .name = cases[i].name, .help = "h",
		                  .labels = cases[i].labels};
		if (cases[i].kind == METRICS_HISTOGRAM) {
			d.buckets = latency_buckets;
			d.nbuckets = 4;
		}
		expect_refused(r, &d, cases[i].err);
	}
	metrics_desc d = {.kind = METRICS_GAUGE, .name = NULL, .help = "h"};
	expect_refused(r, &d, "metric name missing");
	/* Good names that contain unit-like or type-like fragments inside a word are fine. */
	static const char *const good[] = {"walcast_slot_safe_wal_size_bytes", "walcast_thermometers",
	                                   "walcast_gauges_open", "walcast_msgs_queued", "_walcast_x",
	                                   "walcast_slot_wal_status", "walcast_sink_position_lsn"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		family(r, METRICS_GAUGE, good[i], "h", (const char *[]){"sink_2", "_x", NULL});
	/* Nothing was registered by the refused attempts. */
	metrics_desc again = {.kind = METRICS_GAUGE, .name = "walcast_lag_bytes", .help = "h"};
	metrics_family *f;
	assert_int_equal(metrics_family_register(r, &again, &f, NULL), 0);
	metrics_registry_destroy(r);
}

static void test_bad_family(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_desc d = {.kind = METRICS_GAUGE, .name = "walcast_lag_bytes", .help = NULL};
	expect_refused(r, &d, "metric walcast_lag_bytes: HELP text is required");
	d.help = "";
	expect_refused(r, &d, "HELP text is required");
	d.help = "bad \xff byte";
	expect_refused(r, &d, "HELP text is not valid UTF-8");
	d.help = "h";
	d.buckets = latency_buckets;
	d.nbuckets = 4;
	expect_refused(r, &d, "buckets are for histograms only");

	metrics_desc h = {.kind = METRICS_HISTOGRAM, .name = "walcast_latency_seconds", .help = "h"};
	expect_refused(r, &h, "a histogram needs at least one bucket bound");
	const double with_inf[] = {0.1, 1, INFINITY};
	h.buckets = with_inf;
	h.nbuckets = 3;
	expect_refused(r, &h, "bucket bound 2 is not finite (+Inf is implied");
	const double with_nan[] = {NAN};
	h.buckets = with_nan;
	h.nbuckets = 1;
	expect_refused(r, &h, "bucket bound 0 is not finite");
	const double unsorted[] = {0.1, 1, 1};
	h.buckets = unsorted;
	h.nbuckets = 3;
	expect_refused(r, &h, "bucket bounds must be strictly increasing (bound 2)");
	expect_render(r, "");
	metrics_registry_destroy(r);
}

static void test_bad_children(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *f = family(r, METRICS_COUNTER, "walcast_changes_total", "Changes.",
	                           (const char *[]){"table", "action", NULL});
	metrics_family *h = family(r, METRICS_HISTOGRAM, "walcast_latency_seconds", "Latency.", NULL);
	char err[METRICS_ERROR_MAX] = "";
	metrics_counter *c = (metrics_counter *)0x1;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"events", NULL}, &c, err), -EINVAL);
	assert_string_equal(err, "metric walcast_changes_total: 1 label values for 2 labels");
	assert_int_equal(metrics_counter_register(f, NULL, &c, err), -EINVAL);
	assert_string_equal(err, "metric walcast_changes_total: 0 label values for 2 labels");
	assert_int_equal(metrics_counter_register(f, (const char *[]){"a", "b", "c", NULL}, &c, err),
	                 -EINVAL);
	assert_int_equal(metrics_counter_register(f, (const char *[]){"ev\xc3", "insert", NULL}, &c,
	                                          err), -EINVAL);
	assert_string_equal(err, "metric walcast_changes_total: value of label table is not valid UTF-8");
	assert_int_equal(metrics_counter_register(f, (const char *[]){"ev\xed\xa0\x80", "x", NULL}, &c,
	                                          err), -EINVAL); /* a surrogate */
	assert_int_equal(metrics_counter_register(f, (const char *[]){"\xc0\xaf", "x", NULL}, &c, err),
	                 -EINVAL); /* overlong */
	assert_ptr_equal(c, (metrics_counter *)0x1);
	/* Handles of the wrong kind are refused. */
	metrics_gauge *g;
	assert_int_equal(metrics_gauge_register(f, (const char *[]){"a", "b", NULL}, &g, err), -EINVAL);
	assert_string_equal(err, "metric walcast_changes_total: is a uint64 counter, not a double gauge");
	metrics_counter_f *cf;
	assert_int_equal(metrics_counter_f_register(f, (const char *[]){"a", "b", NULL}, &cf, err),
	                 -EINVAL);
	metrics_gauge_i *gi;
	assert_int_equal(metrics_gauge_i_register(f, (const char *[]){"a", "b", NULL}, &gi, err), -EINVAL);
	metrics_histogram *hh;
	assert_int_equal(metrics_histogram_register(f, (const char *[]){"a", "b", NULL}, &hh, err),
	                 -EINVAL);
	assert_string_equal(err, "metric walcast_changes_total: is a uint64 counter, not a histogram");
	assert_int_equal(metrics_counter_register(h, NULL, &c, err), -EINVAL);
	assert_int_equal(metrics_family_size(f), 0);
	assert_int_equal(metrics_family_size(h), 0);
	expect_render(r, "");
	metrics_registry_destroy(r);
}

/* ---- removal ------------------------------------------------------------------------- */

static void test_remove(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	metrics_family *a = family(r, METRICS_GAUGE_I, "walcast_connections", "Connections.",
	                           (const char *[]){"sink", NULL});
	metrics_family *b = family(r, METRICS_COUNTER, "walcast_decode_errors_total", "Errors.", NULL);
	metrics_family *c = family(r, METRICS_COUNTER, "walcast_policy_errors_total", "Errors.", NULL);
	metrics_gauge_i *g1, *g2, *g3;
	metrics_counter *e1, *e2;
	assert_int_equal(metrics_gauge_i_register(a, (const char *[]){"one", NULL}, &g1, NULL), 0);
	assert_int_equal(metrics_gauge_i_register(a, (const char *[]){"two", NULL}, &g2, NULL), 0);
	assert_int_equal(metrics_gauge_i_register(a, (const char *[]){"three", NULL}, &g3, NULL), 0);
	assert_int_equal(metrics_counter_register(b, NULL, &e1, NULL), 0);
	assert_int_equal(metrics_counter_register(c, NULL, &e2, NULL), 0);
	metrics_gauge_i_set(g1, 1);
	metrics_gauge_i_set(g2, 2);
	metrics_gauge_i_set(g3, 3);
	metrics_counter_inc(e2);
	/* Middle, then last, then first: the list stays linked both ways. */
	assert_int_equal(metrics_child_remove(a, (const char *[]){"two", NULL}), 0);
	assert_int_equal(metrics_child_remove(a, (const char *[]){"two", NULL}), -ENOENT);
	assert_int_equal(metrics_child_remove(a, (const char *[]){"two", "x", NULL}), -ENOENT);
	assert_int_equal(metrics_child_remove(a, NULL), -ENOENT);
	assert_int_equal(metrics_gauge_i_register(a, (const char *[]){"two", NULL}, &g2, NULL), 0);
	expect_render(r, "# HELP walcast_connections Connections.\n"
	                 "# TYPE walcast_connections gauge\n"
	                 "walcast_connections{sink=\"one\"} 1\n"
	                 "walcast_connections{sink=\"three\"} 3\n"
	                 "walcast_connections{sink=\"two\"} 0\n"
	                 "# HELP walcast_decode_errors_total Errors.\n"
	                 "# TYPE walcast_decode_errors_total counter\n"
	                 "walcast_decode_errors_total 0\n"
	                 "# HELP walcast_policy_errors_total Errors.\n"
	                 "# TYPE walcast_policy_errors_total counter\n"
	                 "walcast_policy_errors_total 1\n");
	assert_int_equal(metrics_child_remove(a, (const char *[]){"two", NULL}), 0);
	assert_int_equal(metrics_child_remove(a, (const char *[]){"one", NULL}), 0);
	metrics_gauge_i_add(g3, 1);
	assert_int_equal(metrics_child_remove(b, NULL), 0);
	assert_int_equal(metrics_family_size(b), 0);
	/* A family without children is left out; a removed family is gone, and its name free. */
	metrics_family_remove(r, c);
	metrics_family_remove(r, NULL);
	expect_render(r, "# HELP walcast_connections Connections.\n"
	                 "# TYPE walcast_connections gauge\n"
	                 "walcast_connections{sink=\"three\"} 4\n");
	assert_int_equal(metrics_child_remove(a, (const char *[]){"three", NULL}), 0);
	assert_int_equal(metrics_family_size(a), 0);
	c = family(r, METRICS_GAUGE, "walcast_policy_errors", "Now a gauge.", NULL);
	metrics_gauge *g;
	assert_int_equal(metrics_gauge_register(c, NULL, &g, NULL), 0);
	metrics_gauge_set(g, 0.5);
	expect_render(r, "# HELP walcast_policy_errors Now a gauge.\n"
	                 "# TYPE walcast_policy_errors gauge\n"
	                 "walcast_policy_errors 0.5\n");
	metrics_registry_destroy(r);
	metrics_registry_destroy(NULL);
}

/* ---- memory -------------------------------------------------------------------------- */

/* Handles of a registry with a family of every kind (register_every_kind). */
typedef struct every_kind {
	metrics_counter *counter;
	metrics_counter_f *counter_f;
	metrics_gauge *gauge;
	metrics_gauge_i *gauge_i;
	metrics_histogram *histogram;
	reading cb;
} every_kind;

/* Registers a family of every kind (and a callback child, read from k->cb) into r with a child
 * or two each, filling k. Returns 0 or the first error. */
static int register_every_kind(metrics_registry *r, every_kind *k)
{
	static const double buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
	const struct {
		metrics_kind kind;
		const char *name, *help;
		const char *const *labels;
	} fams[] = {
		{METRICS_COUNTER, "walcast_changes_total", "Changes processed, by table and action.",
		 (const char *[]){"table", "action", NULL}},
		{METRICS_COUNTER_F, "walcast_policy_eval_seconds_total",
		 "Time spent in \\ policy evaluation,\nin seconds.", NULL},
		{METRICS_GAUGE, "walcast_replication_lag_seconds",
		 "Now minus the commit time of the last change processed, in seconds.", NULL},
		{METRICS_GAUGE_I, "walcast_connections", "Open connections, by sink.",
		 (const char *[]){"sink", NULL}},
		{METRICS_HISTOGRAM, "walcast_delivery_latency_seconds",
		 "Commit to delivery latency, in seconds.", (const char *[]){"sink", NULL}},
		{METRICS_GAUGE, "walcast_replication_lag_bytes",
		 "Server WAL position minus confirmed flush, in bytes.", NULL},
	};
	metrics_family *f[6];
	int rc = 0;
	for (size_t i = 0; i < 6 && rc == 0; i++) {
		metrics_desc d = {.kind = fams[i].kind, .name = fams[i].name, .help = fams[i].help,
		                  .labels = fams[i].labels};
		if (d.kind == METRICS_HISTOGRAM) {
			d.buckets = buckets;
			d.nbuckets = sizeof buckets / sizeof buckets[0];
		}
		rc = metrics_family_register(r, &d, &f[i], NULL);
	}
	if (rc == 0)
		rc = metrics_counter_register(f[0], (const char *[]){"public.events", "insert", NULL},
		                              &k->counter, NULL);
	if (rc == 0)
		rc = metrics_counter_register(f[0], (const char *[]){"we\"ird\\\ntable", "delete", NULL},
		                              &k->counter, NULL);
	if (rc == 0)
		rc = metrics_counter_f_register(f[1], NULL, &k->counter_f, NULL);
	if (rc == 0)
		rc = metrics_gauge_register(f[2], NULL, &k->gauge, NULL);
	if (rc == 0)
		rc = metrics_gauge_i_register(f[3], (const char *[]){"ws", NULL}, &k->gauge_i, NULL);
	if (rc == 0)
		rc = metrics_histogram_register(f[4], (const char *[]){"ws", NULL}, &k->histogram, NULL);
	if (rc == 0)
		rc = metrics_callback_register(f[5], NULL, read_cb, &k->cb, NULL);
	return rc;
}

static void update_every_kind(every_kind *k, int i)
{
	metrics_counter_inc(k->counter);
	metrics_counter_add(k->counter, 2);
	metrics_counter_f_add(k->counter_f, 0.001);
	metrics_gauge_set(k->gauge, i * 0.5);
	metrics_gauge_add(k->gauge, 1);
	metrics_gauge_i_set(k->gauge_i, i);
	metrics_gauge_i_add(k->gauge_i, -1);
	metrics_histogram_observe(k->histogram, (i % 100) * 0.01);
}

static void test_no_alloc_on_update(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_create();
	every_kind k = {.cb = {.value = 5, .known = true}};
#ifdef COUNT_MALLOC
	alloc_watch(-1);
#endif
	assert_int_equal(register_every_kind(r, &k), 0);
#ifdef COUNT_MALLOC
	assert_true(alloc_unwatch() > 10); /* the count is live: registering allocates */
#endif
	size_t before = heap_in_use();
#ifdef COUNT_MALLOC
	alloc_watch(-1);
#endif
	for (int i = 0; i < 1000000; i++)
		update_every_kind(&k, i);
#ifdef COUNT_MALLOC
	assert_int_equal(alloc_unwatch(), 0);
#endif
	assert_int_equal(heap_in_use(), before);
	/* Rendering into a buffer that is already big enough does not allocate either. */
	buf b;
	buf_init(&b);
	assert_int_equal(metrics_render(r, &b), 0);
	size_t len = b.len;
	buf_clear(&b);
#ifdef COUNT_MALLOC
	alloc_watch(-1);
#endif
	assert_int_equal(metrics_render(r, &b), 0);
#ifdef COUNT_MALLOC
	assert_int_equal(alloc_unwatch(), 0);
#endif
	assert_int_equal(b.len, len);
	buf_fini(&b);
	metrics_registry_destroy(r);
}

/* Every allocation of a registration and of a render fails in turn: each failure returns
 * -ENOMEM and leaves the registry rendering exactly as before; nothing leaks (ASan build). */
static void test_out_of_memory(void **state)
{
	(void)state;
#ifndef COUNT_MALLOC
	skip();
#else
	for (long fail_at = 0;; fail_at++) {
		long live = alloc_state.live;
		metrics_registry *r = metrics_registry_create();
		assert_non_null(r);
		every_kind k = {.cb = {.value = 5, .known = true}};
		alloc_watch(fail_at);
		int rc = register_every_kind(r, &k);
		unsigned long calls = alloc_unwatch();
		metrics_registry_destroy(r);
		if (alloc_state.live != live) /* the failure paths leak nothing */
			fail_msg("allocation %ld failing: %ld blocks leaked", fail_at, alloc_state.live - live);
		if ((long)calls <= fail_at) {
			assert_int_equal(rc, 0);
			assert_true(fail_at > 20); /* every allocation of the registrations failed once */
			break;
		}
		assert_int_equal(rc, -ENOMEM);
	}
	/* One registration at a time: the registry as it was. */
	metrics_registry *r = metrics_registry_create();
	metrics_family *f = family(r, METRICS_COUNTER, "walcast_changes_total", "Changes.",
	                           (const char *[]){"table", NULL});
	metrics_counter *c;
	assert_int_equal(metrics_counter_register(f, (const char *[]){"a", NULL}, &c, NULL), 0);
	buf want;
	buf_init(&want);
	assert_int_equal(metrics_render(r, &want), 0);
	for (long fail_at = 0;; fail_at++) {
		char err[METRICS_ERROR_MAX] = "";
		alloc_watch(fail_at);
		int rc = metrics_counter_register(f, (const char *[]){"b\"", NULL}, &c, err);
		unsigned long calls = alloc_unwatch();
		if ((long)calls <= fail_at) {
			assert_int_equal(rc, 0);
			break;
		}
		assert_int_equal(rc, -ENOMEM);
		assert_non_null(strstr(err, "out of memory"));
		expect_render(r, want.data);
	}
	buf_clear(&want);
	assert_int_equal(metrics_render(r, &want), 0); /* now with the child that made it */
	for (long fail_at = 0;; fail_at++) {
		metrics_desc d = {.kind = METRICS_HISTOGRAM, .name = "walcast_latency_seconds",
		                  .help = "L\\at\nency.", .labels = (const char *[]){"sink", "table", NULL},
		                  .buckets = latency_buckets, .nbuckets = 4};
		metrics_family *h;
		alloc_watch(fail_at);
		int rc = metrics_family_register(r, &d, &h, NULL);
		unsigned long calls = alloc_unwatch();
		if ((long)calls <= fail_at) {
			assert_int_equal(rc, 0);
			break;
		}
		assert_int_equal(rc, -ENOMEM);
		expect_render(r, want.data);
	}
	/* A render that runs out of memory truncates the output back to where it started. */
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "prefix\n"), 0);
	for (long fail_at = 0;; fail_at++) {
		buf tmp = {0};
		alloc_watch(fail_at);
		/* Render into a fresh buffer so that it has to grow. */
		int rc = metrics_render(r, &tmp);
		unsigned long calls = alloc_unwatch();
		if ((long)calls <= fail_at) {
			assert_int_equal(rc, 0);
			buf_fini(&tmp);
			break;
		}
		assert_int_equal(rc, -ENOMEM);
		assert_int_equal(tmp.len, 0);
		buf_fini(&tmp);
	}
	/* And appending to a non-empty buffer that must grow, failing midway. */
	size_t big = 0;
	for (int i = 0; i < 200; i++) {
		char v[16];
		snprintf(v, sizeof v, "t%d", i);
		assert_int_equal(metrics_counter_register(f, (const char *[]){v, NULL}, &c, NULL), 0);
	}
	buf full;
	buf_init(&full);
	assert_int_equal(metrics_render(r, &full), 0);
	big = full.len;
	buf_fini(&full);
	assert_true(big > 4096);
	alloc_watch(1); /* the first growth from 256 succeeds, the second fails */
	int rc = metrics_render(r, &b);
	alloc_unwatch();
	assert_int_equal(rc, -ENOMEM);
	assert_int_equal(b.len, 7);
	assert_string_equal(b.data, "prefix\n");
	buf_fini(&b);
	buf_fini(&want);
	metrics_registry_destroy(r);
#endif
}

/* ---- promtool ------------------------------------------------------------------------ */

/* Runs `promtool check metrics` on text; returns its exit status and its output in out. */
static int promtool_check(const char *promtool, const char *text, buf *out)
{
	char path[] = "/tmp/walcast-metrics-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t n = strlen(text);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
	char cmd[512];
	snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s' 2>&1", promtool, path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char chunk[256];
	size_t got;
	while ((got = fread(chunk, 1, sizeof chunk, p)) > 0)
		assert_int_equal(buf_append(out, chunk, got), 0);
	int status = pclose(p);
	unlink(path);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static const char *promtool_path;

static void test_promtool(void **state)
{
	(void)state;
	/* The check is live: promtool refuses what breaks the conventions. */
	buf out;
	buf_init(&out);
	int rc = promtool_check(promtool_path, "# HELP walcast_changes Changes.\n"
	                                       "# TYPE walcast_changes counter\n"
	                                       "walcast_changes 1\n", &out);
	if (rc == 0 || out.len == 0 || strstr(out.data, "_total") == NULL)
		fail_msg("promtool accepted a counter without _total (exit %d): %s", rc,
		         out.len ? out.data : "");
	buf_clear(&out);
	rc = promtool_check(promtool_path, "walcast_x{a=\"unterminated} 1\n", &out);
	assert_int_not_equal(rc, 0);

	/* Every kind, escaped labels and HELP, special values, callbacks. */
	metrics_registry *r = metrics_registry_create();
	every_kind k = {.cb = {.value = 123456789, .known = true}};
	assert_int_equal(register_every_kind(r, &k), 0);
	for (int i = 0; i < 1000; i++)
		update_every_kind(&k, i);
	metrics_histogram_observe(k.histogram, 7);
	metrics_histogram_observe(k.histogram, 1e-9);
	metrics_desc d = {.kind = METRICS_GAUGE, .name = "walcast_test_special_values",
	                  .help = "Special values.", .labels = (const char *[]){"v", NULL}};
	metrics_family *f;
	assert_int_equal(metrics_family_register(r, &d, &f, NULL), 0);
	const double special[] = {NAN, INFINITY, -INFINITY, 1e-300, -0.0, 0.1 + 0.2};
	for (int i = 0; i < 6; i++) {
		char v[8];
		snprintf(v, sizeof v, "%d", i);
		metrics_gauge *g;
		assert_int_equal(metrics_gauge_register(f, (const char *[]){v, NULL}, &g, NULL), 0);
		metrics_gauge_set(g, special[i]);
	}
	buf text;
	buf_init(&text);
	assert_int_equal(metrics_render(r, &text), 0);
	/* Every kind really is in the text. */
	assert_non_null(strstr(text.data, "# TYPE walcast_changes_total counter\n"));
	assert_non_null(strstr(text.data, "# TYPE walcast_policy_eval_seconds_total counter\n"));
	assert_non_null(strstr(text.data, "# TYPE walcast_connections gauge\n"));
	assert_non_null(strstr(text.data, "walcast_delivery_latency_seconds_bucket{sink=\"ws\",le=\"+Inf\"} 1002\n"));
	assert_non_null(strstr(text.data, "walcast_replication_lag_bytes 123456789\n"));
	assert_non_null(strstr(text.data, "table=\"we\\\"ird\\\\\\ntable\""));
	buf_clear(&out);
	rc = promtool_check(promtool_path, text.data, &out);
	if (rc != 0 || out.len != 0)
		fail_msg("promtool check metrics: exit %d: %s\non:\n%s", rc, out.len ? out.data : "",
		         text.data);
	buf_fini(&text);
	buf_fini(&out);
	metrics_registry_destroy(r);
}

static int run_promtool(void)
{
	/* CMake passes the promtool it found at configure time; CI installs the prometheus package
	 * before configuring, so there the test always runs. */
	const char *configured = getenv("WALCAST_PROMTOOL");
	if (configured && configured[0] && strstr(configured, "NOTFOUND") == NULL) {
		promtool_path = configured;
	} else if (access("/usr/bin/promtool", X_OK) == 0) {
		promtool_path = "/usr/bin/promtool";
	} else {
		fprintf(stderr, "test_metrics_promtool: SKIPPED: promtool not found (Debian package "
		                "prometheus, see deploy/install-deps.sh); reconfigure with cmake after "
		                "installing it\n");
		return 77;
	}
	if (access(promtool_path, X_OK) != 0) {
		fprintf(stderr, "test_metrics_promtool: %s (found at configure time) cannot be run\n",
		        promtool_path);
		return 1;
	}
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_promtool)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* ---- micro-benchmark ----------------------------------------------------------------- */

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int run_bench(void)
{
	metrics_registry *r = metrics_registry_create();
	every_kind k = {.cb = {.value = 5, .known = true}};
	if (register_every_kind(r, &k) != 0)
		return 1;
	const long n = 100000000;
	double t0 = now_ns();
	for (long i = 0; i < n; i++)
		metrics_counter_inc(k.counter);
	double t1 = now_ns();
	printf("counter_inc: %.2f ns\n", (t1 - t0) / n);
	t0 = now_ns();
	for (long i = 0; i < n; i++)
		metrics_gauge_i_add(k.gauge_i, 1);
	t1 = now_ns();
	printf("gauge_i_add: %.2f ns\n", (t1 - t0) / n);
	double v = 0;
	t0 = now_ns();
	for (long i = 0; i < n / 10; i++) {
		metrics_histogram_observe(k.histogram, v);
		v += 0.0001;
		if (v > 2)
			v = 0;
	}
	t1 = now_ns();
	printf("histogram_observe (8 buckets, values spread over all): %.2f ns\n", (t1 - t0) / (n / 10));
	metrics_registry_destroy(r);

	/* Render time of 1,000 children: 1,000 counters with two labels. */
	r = metrics_registry_create();
	metrics_desc d = {.kind = METRICS_COUNTER, .name = "walcast_changes_total", .help = "Changes.",
	                  .labels = (const char *[]){"table", "action", NULL}};
	metrics_family *f;
	if (metrics_family_register(r, &d, &f, NULL) != 0)
		return 1;
	t0 = now_ns();
	for (int i = 0; i < 1000; i++) {
		char t[32];
		snprintf(t, sizeof t, "public.table_%d", i / 3);
		const char *actions[] = {"insert", "update", "delete"};
		metrics_counter *c;
		if (metrics_counter_register(f, (const char *[]){t, actions[i % 3], NULL}, &c, NULL) != 0)
			return 1;
		metrics_counter_add(c, (uint64_t)i * 7919);
	}
	t1 = now_ns();
	printf("register 1,000 children: %.0f us\n", (t1 - t0) / 1e3);
	buf b;
	buf_init(&b);
	int rounds = 2000;
	t0 = now_ns();
	for (int i = 0; i < rounds; i++) {
		buf_clear(&b);
		if (metrics_render(r, &b) != 0)
			return 1;
	}
	t1 = now_ns();
	printf("render 1,000 counter children: %.1f us (%zu bytes)\n", (t1 - t0) / rounds / 1e3, b.len);
	metrics_registry_destroy(r);

	/* 1,000 gauge children holding fractional values (the %g path). */
	r = metrics_registry_create();
	d = (metrics_desc){.kind = METRICS_GAUGE, .name = "walcast_lag_seconds", .help = "Lag.",
	                   .labels = (const char *[]){"sink", NULL}};
	if (metrics_family_register(r, &d, &f, NULL) != 0)
		return 1;
	for (int i = 0; i < 1000; i++) {
		char s[32];
		snprintf(s, sizeof s, "sink_%d", i);
		metrics_gauge *g;
		if (metrics_gauge_register(f, (const char *[]){s, NULL}, &g, NULL) != 0)
			return 1;
		metrics_gauge_set(g, i / 7.0);
	}
	t0 = now_ns();
	for (int i = 0; i < rounds; i++) {
		buf_clear(&b);
		if (metrics_render(r, &b) != 0)
			return 1;
	}
	t1 = now_ns();
	printf("render 1,000 gauge children (fractional values): %.1f us (%zu bytes)\n",
	       (t1 - t0) / rounds / 1e3, b.len);
	metrics_registry_destroy(r);

	/* 1,000 histogram children of 8 buckets. */
	r = metrics_registry_create();
	static const double buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
	d = (metrics_desc){.kind = METRICS_HISTOGRAM, .name = "walcast_latency_seconds",
	                   .help = "Latency.", .labels = (const char *[]){"sink", NULL},
	                   .buckets = buckets, .nbuckets = 8};
	if (metrics_family_register(r, &d, &f, NULL) != 0)
		return 1;
	for (int i = 0; i < 1000; i++) {
		char s[32];
		snprintf(s, sizeof s, "sink_%d", i);
		metrics_histogram *h;
		if (metrics_histogram_register(f, (const char *[]){s, NULL}, &h, NULL) != 0)
			return 1;
		for (int j = 0; j < 10; j++)
			metrics_histogram_observe(h, j * 0.013);
	}
	t0 = now_ns();
	for (int i = 0; i < rounds / 10; i++) {
		buf_clear(&b);
		if (metrics_render(r, &b) != 0)
			return 1;
	}
	t1 = now_ns();
	printf("render 1,000 histogram children (8 buckets): %.1f us (%zu bytes)\n",
	       (t1 - t0) / (rounds / 10) / 1e3, b.len);
	buf_fini(&b);
	metrics_registry_destroy(r);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "promtool") == 0)
		return run_promtool();
	if (argc > 1 && strcmp(argv[1], "bench") == 0)
		return run_bench();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_with_labels),
		cmocka_unit_test(test_scalar_kinds),
		cmocka_unit_test(test_float_format),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_histogram_counts),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_callbacks),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_bad_family),
		cmocka_unit_test(test_bad_children),
		cmocka_unit_test(test_remove),
		cmocka_unit_test(test_no_alloc_on_update),
		cmocka_unit_test(test_out_of_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
