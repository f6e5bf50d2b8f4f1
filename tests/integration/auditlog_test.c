/*
 * auditlog_test — drives the audit writer (src/pipeline/auditlog.h) against a real PostgreSQL for
 * tests/integration/auditlog.sh: records N audit rows (all at once, or one every --every ms),
 * waits until they are written (or --timeout), drains, and prints the writer's counters and the
 * loop's lateness, the time until the queue was empty and the mean cost of one auditlog_record call
 * (record_ns) as key=value lines:
 *
 *   auditlog_test --conninfo C --org UUID --n N [--every MS] [--batch B] [--flush MS]
 *                 [--queue Q] [--timeout S] [--action A] [--invalid] [--orphan UUID]
 *
 * A 5 ms timer runs all along; max_late_ms is the longest it fired after its deadline, which a
 * blocking write (a locked table, a server away) would stretch to seconds. --invalid adds two
 * invalid records (bad uuid, detail not JSON); --orphan adds one record for an org that does
 * not exist. Record i has target_id "i" and detail {"i": i, "note": <text with quotes and SQL>}.
 * Exit 0 when everything recorded was accounted for (written or dropped), else 1.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog.h"
#include "log.h"
#include "loop.h"

typedef struct driver {
	loop *l;
	auditlog *w;
	const char *org, *orphan, *action;
	long n, every_ms, sent;
	int64_t start, deadline, tick_due, max_late;
	double record_ns; /* total time spent inside auditlog_record */
	bool invalid, drained;
} driver;

static void record_one(driver *d)
{
	char id[32], detail[160];
	snprintf(id, sizeof(id), "%ld", d->sent);
	snprintf(detail, sizeof(detail), "{\"i\": %ld, \"note\": \"it's \\\"quoted\\\"'); DROP TABLE public.orgs; --\"}",
	         d->sent);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	auditlog_record(d->w, d->org, "00000000-0000-4000-8000-000000000001", d->action, "events", id, detail);
	clock_gettime(CLOCK_MONOTONIC, &b);
	d->record_ns += (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
	d->sent++;
}

static void drained_cb(void *arg, size_t remaining)
{
	driver *d = arg;
	printf("remaining=%zu\nelapsed_ms=%lld\n", remaining, (long long)(loop_now_ms() - d->start));
	d->drained = true;
	loop_stop(d->l);
}

static void tick_cb(loop *l, int id, void *arg)
{
	driver *d = arg;
	(void)id;
	int64_t now = loop_now_ms();
	if (now - d->tick_due > d->max_late)
		d->max_late = now - d->tick_due;
	d->tick_due = now + 5;
	if (loop_timer_add(l, 5, tick_cb, d) < 0)
		loop_stop(l);
}

static void pace_cb(loop *l, int id, void *arg)
{
	driver *d = arg;
	(void)id;
	auditlog_stats st;
	if (d->sent < d->n) {
		long k = d->every_ms > 0 ? 1 : d->n;
		for (long i = 0; i < k && d->sent < d->n; i++)
			record_one(d);
	}
	auditlog_get_stats(d->w, &st);
	bool all_sent = d->sent >= d->n;
	if ((all_sent && st.queued == 0) || loop_now_ms() > d->deadline) {
		auditlog_drain(d->w, 5000, drained_cb, d);
		return;
	}
	if (loop_timer_add(l, d->every_ms > 0 && !all_sent ? d->every_ms : 20, pace_cb, d) < 0)
		loop_stop(l);
}

int main(int argc, char **argv)
{
	driver d = {.action = "test.record"};
	const char *conninfo = "";
	long batch = 500, flush = 100, queue = 100000, timeout = 60;
	static const struct option opts[] = {
		{"conninfo", required_argument, NULL, 'c'}, {"org", required_argument, NULL, 'o'},
		{"n", required_argument, NULL, 'n'},        {"every", required_argument, NULL, 'e'},
		{"batch", required_argument, NULL, 'b'},    {"flush", required_argument, NULL, 'f'},
		{"queue", required_argument, NULL, 'q'},    {"timeout", required_argument, NULL, 't'},
		{"action", required_argument, NULL, 'a'},   {"invalid", no_argument, NULL, 'i'},
		{"orphan", required_argument, NULL, 'x'},   {NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': conninfo = optarg; break;
		case 'o': d.org = optarg; break;
		case 'n': d.n = atol(optarg); break;
		case 'e': d.every_ms = atol(optarg); break;
		case 'b': batch = atol(optarg); break;
		case 'f': flush = atol(optarg); break;
		case 'q': queue = atol(optarg); break;
		case 't': timeout = atol(optarg); break;
		case 'a': d.action = optarg; break;
		case 'i': d.invalid = true; break;
		case 'x': d.orphan = optarg; break;
		default: fprintf(stderr, "usage: see the comment at the top of auditlog_test.c\n"); return 2;
		}
	}
	if (d.org == NULL || d.n < 0) {
		fprintf(stderr, "auditlog_test: --org and --n are required\n");
		return 2;
	}
	if (log_configure("info", "text") < 0)
		return 2;
	int rc = 1;
	char err[AUDITLOG_ERROR_MAX];
	if ((d.l = loop_create()) == NULL)
		return 1;
	auditlog_params p = {
		.loop = d.l, .conninfo = conninfo, .flush_interval_ms = flush, .batch_size = (size_t)batch,
		.queue_max = (size_t)queue, .reconnect_min_ms = 100, .reconnect_max_ms = 1000,
	};
	if (auditlog_create(&p, &d.w, err) < 0) {
		fprintf(stderr, "auditlog_test: %s\n", err);
		goto cleanup;
	}
	if (d.invalid) {
		auditlog_record(d.w, "not-a-uuid", NULL, d.action, NULL, NULL, NULL);
		auditlog_record(d.w, d.org, NULL, d.action, NULL, NULL, "{not json");
	}
	if (d.orphan != NULL)
		auditlog_record(d.w, d.orphan, NULL, d.action, "orphan", "x", NULL);
	d.start = loop_now_ms();
	d.deadline = d.start + timeout * 1000;
	d.tick_due = loop_now_ms() + 5;
	if (loop_timer_add(d.l, 5, tick_cb, &d) < 0 || loop_timer_add(d.l, 0, pace_cb, &d) < 0)
		goto cleanup;
	if (loop_run(d.l) < 0)
		goto cleanup;
	auditlog_stats st;
	auditlog_get_stats(d.w, &st);
	printf("recorded=%llu\nwritten=%llu\nbatches=%llu\nerrors=%llu\ndropped_full=%llu\ndropped_invalid=%llu\n"
	       "dropped_rejected=%llu\ndropped_no_org=%llu\nqueued=%zu\nmax_late_ms=%lld\nrecord_ns=%.0f\n",
	       (unsigned long long)st.recorded, (unsigned long long)st.written, (unsigned long long)st.batches,
	       (unsigned long long)st.errors, (unsigned long long)st.dropped_full,
	       (unsigned long long)st.dropped_invalid, (unsigned long long)st.dropped_rejected,
	       (unsigned long long)st.dropped_no_org, st.queued, (long long)d.max_late,
	       d.sent > 0 ? d.record_ns / (double)d.sent : 0.0);
	rc = d.drained && st.queued == 0 &&
	             st.recorded == st.written + st.dropped_rejected + st.dropped_no_org
	         ? 0
	         : 1;
cleanup:
	auditlog_destroy(d.w);
	loop_destroy(d.l);
	return rc;
}
