/*
 * test_auditlog — unit tests for the audit writer (src/pipeline/auditlog.h) without a database:
 * the writer points at a port nobody listens on, so every record stays queued. Checked:
 * recording never blocks and never fails (a full queue drops and counts, invalid records are
 * refused and counted), the queue bound holds, the drain ends within its timeout saying what is
 * left, records after the drain are dropped, the connection errors are counted and the writer
 * keeps retrying with back-off, the metrics show all of it, and the sync_health status words.
 * The writes themselves are tested against PostgreSQL in tests/integration/auditlog.sh.
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

#include "auditlog.h"
#include "buf.h"
#include "loop.h"
#include "metrics.h"

#define ORG "3b241101-e2bb-4255-8caf-4136c566a962"
#define USER "00000000-0000-4000-8000-000000000001"

typedef struct fixture {
	loop *l;
	metrics_registry *m;
	auditlog *w;
	bool drained;
	size_t remaining;
} fixture;

static void stop_cb(loop *l, int id, void *arg)
{
	(void)id, (void)arg;
	loop_stop(l);
}

static void run_for(fixture *f, int64_t ms)
{
	assert_true(loop_timer_add(f->l, ms, stop_cb, NULL) > 0);
	assert_int_equal(loop_run(f->l), 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_non_null(f->l = loop_create());
	assert_non_null(f->m = metrics_registry_create());
	auditlog_params p = {
		.loop = f->l, .metrics = f->m, .conninfo = "host=127.0.0.1 port=1 connect_timeout=1",
		.flush_interval_ms = 10, .batch_size = 4, .queue_max = 8, .reconnect_min_ms = 20, .reconnect_max_ms = 80,
	};
	char err[AUDITLOG_ERROR_MAX];
	assert_int_equal(auditlog_create(&p, &f->w, err), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	auditlog_destroy(f->w);
	metrics_registry_destroy(f->m);
	loop_destroy(f->l);
	free(f);
	return 0;
}

static void test_bad_params(void **state)
{
	fixture *f = *state;
	auditlog *w = NULL;
	char err[AUDITLOG_ERROR_MAX];
	auditlog_params p = {.loop = f->l, .conninfo = "", .flush_interval_ms = 10, .batch_size = 0, .queue_max = 8,
	                     .reconnect_min_ms = 10, .reconnect_max_ms = 10};
	assert_int_equal(auditlog_create(&p, &w, err), -EINVAL);
	p.batch_size = 4;
	p.health_interval_ms = 1000; /* without a health callback */
	assert_int_equal(auditlog_create(&p, &w, err), -EINVAL);
	assert_null(w);
	auditlog_record(NULL, ORG, NULL, "x", NULL, NULL, NULL); /* auditing off: a no-op */
}

static void test_queue_bound_and_invalid(void **state)
{
	fixture *f = *state;
	auditlog_stats st;
	for (int i = 0; i < 20; i++)
		auditlog_record(f->w, ORG, USER, "join", "events", "1", "{\"topic\": \"realtime:x\"}");
	auditlog_record(f->w, "not-a-uuid", NULL, "join", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, "nope", "join", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, NULL, "", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, NULL, NULL, NULL, NULL, NULL);
	auditlog_record(f->w, NULL, NULL, "join", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, NULL, "join", NULL, NULL, "{\"a\": ");
	auditlog_record(f->w, ORG, NULL, "join", "\xff\xfe", NULL, NULL); /* not UTF-8 */
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.recorded, 8);
	assert_int_equal(st.queued, 8);
	/* a full queue drops before looking at the record: the 7 invalid ones count as queue_full */
	assert_int_equal(st.dropped_full, 12 + 7);
	assert_int_equal(st.dropped_invalid, 0);
	assert_int_equal(st.written, 0);
}

static void test_invalid_with_room(void **state)
{
	fixture *f = *state;
	auditlog_stats st;
	auditlog_record(f->w, "not-a-uuid", NULL, "join", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, "nope", "join", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, NULL, "", NULL, NULL, NULL);
	auditlog_record(f->w, ORG, NULL, "join", NULL, NULL, "{\"a\": ");
	auditlog_record(f->w, ORG, NULL, "join", "\xff\xfe", NULL, NULL);
	auditlog_record(f->w, ORG, NULL, "join", NULL, NULL, "\"a JSON string is fine\"");
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.dropped_invalid, 5);
	assert_int_equal(st.recorded, 1);
}

/* Counted records: identical ones still queued share one row; anything different is its own. */
static void test_counted(void **state)
{
	fixture *f = *state;
	auditlog_stats st;
	const char *d = "{\"path\":\"/api/v1/stats/orgs/x/days\",\"status\":200}";
	for (int i = 0; i < 5; i++)
		auditlog_record_counted(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, d);
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.recorded, 5);
	assert_int_equal(st.queued, 1);
	auditlog_record_counted(f->w, ORG, NULL, AUDITLOG_STATS_READ, NULL, NULL, d); /* another actor */
	auditlog_record_counted(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, "{\"status\":404}");
	auditlog_record(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, d); /* not counted: its own row */
	auditlog_record_counted(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, "\"text\"");
	auditlog_record_counted(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, "\"text\""); /* no object */
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.recorded, 10);
	assert_int_equal(st.queued, 6);
	/* a detail with a count of its own would be ambiguous: refused */
	auditlog_record_counted(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, "{\"count\":3}");
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.dropped_invalid, 1);
	assert_int_equal(st.queued, 6);
	/* a full queue still counts what it holds: nothing new needs room */
	auditlog_record_counted(f->w, ORG, USER, "other", NULL, NULL, NULL);
	auditlog_record_counted(f->w, ORG, USER, "other2", NULL, NULL, NULL);
	auditlog_record_counted(f->w, ORG, USER, "other3", NULL, NULL, NULL); /* the 9th: dropped */
	auditlog_record_counted(f->w, ORG, USER, AUDITLOG_STATS_READ, NULL, NULL, d);
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.queued, 8);
	assert_int_equal(st.dropped_full, 1);
	assert_int_equal(st.recorded, 13);
}

static void retry_drained_cb(void *arg, size_t remaining)
{
	fixture *f = arg;
	f->drained = true;
	f->remaining = remaining;
	loop_stop(f->l);
}

/* The server is away: errors are counted, nothing is lost, the drain gives up on time. */
static void test_away_then_drain(void **state)
{
	fixture *f = *state;
	auditlog_stats st;
	for (int i = 0; i < 5; i++)
		auditlog_record(f->w, ORG, NULL, "leave", NULL, NULL, NULL);
	run_for(f, 400);
	auditlog_get_stats(f->w, &st);
	assert_true(st.errors >= 2); /* it kept trying */
	assert_int_equal(st.queued, 5);
	assert_false(st.connected);
	int64_t t0 = loop_now_ms();
	auditlog_drain(f->w, 200, retry_drained_cb, f);
	auditlog_record(f->w, ORG, NULL, "late", NULL, NULL, NULL);
	assert_int_equal(loop_run(f->l), 0);
	assert_true(f->drained);
	assert_int_equal(f->remaining, 5);
	assert_true(loop_now_ms() - t0 < 5000);
	auditlog_get_stats(f->w, &st);
	assert_int_equal(st.dropped_full, 1); /* recorded after the drain began */
}

/* An empty writer drains at once (from a loop callback, not from inside auditlog_drain). */
static void test_drain_empty(void **state)
{
	fixture *f = *state;
	auditlog_drain(f->w, 10000, retry_drained_cb, f);
	assert_false(f->drained);
	assert_int_equal(loop_run(f->l), 0);
	assert_true(f->drained);
	assert_int_equal(f->remaining, 0);
}

static void test_metrics(void **state)
{
	fixture *f = *state;
	auditlog_record(f->w, "x", NULL, "read", NULL, NULL, NULL);
	for (int i = 0; i < 10; i++)
		auditlog_record(f->w, ORG, NULL, "read", "stats", NULL, NULL);
	buf out;
	buf_init(&out);
	assert_int_equal(metrics_render(f->m, &out), 0);
	const char *text = out.data;
	assert_non_null(strstr(text, "walcast_audit_records_written_total 0\n"));
	assert_non_null(strstr(text, "walcast_audit_queue_records 8\n"));
	assert_non_null(strstr(text, "walcast_audit_records_dropped_total{reason=\"queue_full\"} 2\n"));
	assert_non_null(strstr(text, "walcast_audit_records_dropped_total{reason=\"invalid\"} 1\n"));
	assert_non_null(strstr(text, "walcast_audit_connected 0\n"));
	assert_non_null(strstr(text, "walcast_sync_health_rows_total 0\n"));
	buf_fini(&out);
	/* destroy removes the families: a second writer on the same registry registers again */
	auditlog_destroy(f->w);
	f->w = NULL;
	auditlog_params p = {.loop = f->l, .metrics = f->m, .conninfo = "host=127.0.0.1 port=1",
	                     .flush_interval_ms = 10, .batch_size = 4, .queue_max = 8, .reconnect_min_ms = 20,
	                     .reconnect_max_ms = 80};
	char err[AUDITLOG_ERROR_MAX];
	assert_int_equal(auditlog_create(&p, &f->w, err), 0);
}

static void test_health_status(void **state)
{
	(void)state;
	assert_string_equal(auditlog_health_status(false, 0, 30000), "ok");
	assert_string_equal(auditlog_health_status(false, 30.0, 30000), "ok");
	assert_string_equal(auditlog_health_status(false, 30.5, 30000), "lagging");
	assert_string_equal(auditlog_health_status(true, 0, 30000), "paused");
}

#define S INT64_C(1000000) /* one second in microseconds */

static void test_health_lag(void **state)
{
	(void)state;
	const int64_t now = 1800000000 * S;
	/* caught up: nothing the server reported is left, however old the last commit */
	auditlog_health h = {.known = true, .server_end = 1000, .processed = 1000, .last_commit_us = now - 3600 * S};
	assert_true(auditlog_health_lag(&h, 0, now) == 0);
	/* the server's position unknown yet */
	h = (auditlog_health){.known = true, .server_end = 0, .processed = 0};
	assert_true(auditlog_health_lag(&h, 0, now) == 0);
	/* idle for walcast for an hour while other WAL is written: behind for 5 s only */
	h = (auditlog_health){.known = true, .server_end = 2000, .processed = 1000, .last_commit_us = now - 3600 * S};
	assert_true(auditlog_health_lag(&h, now - 5 * S, now) == 5.0);
	/* a steady load, never quite caught up for 10 minutes: the last commit is 10 ms old */
	h.last_commit_us = now - 10000;
	assert_true(auditlog_health_lag(&h, now - 600 * S, now) == 0.01);
	/* a real backlog: behind for 120 s, delivering transactions committed 100 s ago */
	h.last_commit_us = now - 100 * S;
	assert_true(auditlog_health_lag(&h, now - 120 * S, now) == 100.0);
	/* behind since start, no transaction offered yet */
	h.last_commit_us = 0;
	assert_true(auditlog_health_lag(&h, now - 7 * S, now) == 7.0);
	assert_true(auditlog_health_lag(&h, 0, now) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bad_params, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_bound_and_invalid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_with_room, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_away_then_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health_lag, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
