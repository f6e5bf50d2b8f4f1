/*
 * policy_loader_test — the asynchronous policy-state load (src/policy/policy_loader.h) against
 * a real PostgreSQL, run inside the harness by tests/integration/loader.sh (PG* variables name
 * the database; the platform migrations are applied).
 *
 * A roster of 50,000 memberships and 100 privacy rules; a snapshot exported by a REPEATABLE
 * READ transaction (as a new slot exports one); then a writer changes rows after the snapshot
 * (committed before the load starts) and another process keeps writing during the load. The
 * loaded rows must equal what a query in that same snapshot returns — and differ from the
 * current data (the control) — and the loop must keep turning during the load: a 2 ms timer
 * keeps firing. A snapshot that does not exist and a database that does not answer end the load
 * with a clear error through done_cb.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "policy_loader.h"
#include "policy_state.h"

static int failures;

#define CHECK(cond, ...)                                                                       \
	do {                                                                                       \
		if (cond) {                                                                            \
			printf("ok - ");                                                                   \
		} else {                                                                               \
			printf("not ok - ");                                                               \
			failures++;                                                                        \
		}                                                                                      \
		printf(__VA_ARGS__);                                                                   \
		printf("\n");                                                                          \
		fflush(stdout);                                                                        \
	} while (0)

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "SQL failed: %s\n%s", sql, PQerrorMessage(c));
		exit(2);
	}
	PQclear(r);
}

static PGconn *connect_db(void)
{
	PGconn *c = PQconnectdb("");
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "connect: %s", PQerrorMessage(c));
		exit(2);
	}
	PQsetNoticeProcessor(c, log_pg_notice, "test");
	return c;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts the lines of b in place into a new text (caller frees). */
static char *sorted(buf *b)
{
	size_t n = 0, cap = 1024;
	char **lines = malloc(cap * sizeof(*lines));
	char *save = NULL;
	for (char *l = strtok_r(b->data ? b->data : (char[]){""}, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
		if (n == cap)
			lines = realloc(lines, (cap *= 2) * sizeof(*lines));
		lines[n++] = l;
	}
	qsort(lines, n, sizeof(*lines), cmp_line);
	buf out;
	buf_init(&out);
	if (buf_puts(&out, "") < 0)
		exit(2);
	for (size_t i = 0; i < n; i++)
		if (buf_printf(&out, "%s\n", lines[i]) < 0)
			exit(2);
	free(lines);
	return out.data;
}

/* The policy state as a query on c sees it (in c's transaction). */
static char *query_state(PGconn *c)
{
	buf b;
	buf_init(&b);
	const char *q[2] = {"SELECT 'm', org_id::text, user_id::text, role::text FROM public.org_roles",
	                    "SELECT 'r', id::text, contact_id::text, min_role::text FROM public.privacy_rules"};
	for (int t = 0; t < 2; t++) {
		PGresult *r = PQexec(c, q[t]);
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			fprintf(stderr, "query: %s", PQerrorMessage(c));
			exit(2);
		}
		for (int i = 0; i < PQntuples(r); i++)
			if (buf_printf(&b, "%s|%s|%s|%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
			               PQgetisnull(r, i, 3) ? "\\N" : PQgetvalue(r, i, 3)) < 0)
				exit(2);
		PQclear(r);
	}
	char *s = sorted(&b);
	buf_fini(&b);
	return s;
}

typedef struct run {
	loop *l;
	buf rows;
	size_t nrows;
	bool done;
	int rc;
	char err[POLICY_LOADER_ERROR_MAX];
	int ticks;
	int64_t last_tick, max_gap;
	int tick_timer;
	int guard_timer;
} run;

static int row_cb(void *arg, int table, const char *const *v)
{
	run *r = arg;
	r->nrows++;
	return buf_printf(&r->rows, "%c|%s|%s|%s\n", table == POLICY_STATE_MEMBERSHIP ? 'm' : 'r', v[0],
	                  v[1] ? v[1] : "\\N", v[2] ? v[2] : "\\N");
}

static void done_cb(void *arg, int rc, const char *err)
{
	run *r = arg;
	r->done = true;
	r->rc = rc;
	snprintf(r->err, sizeof(r->err), "%s", err);
	loop_stop(r->l);
}

static void tick_cb(loop *l, int id, void *arg)
{
	run *r = arg;
	int64_t now = loop_now_ms();
	if (r->ticks++ > 0 && now - r->last_tick > r->max_gap)
		r->max_gap = now - r->last_tick;
	r->last_tick = now;
	r->tick_timer = loop_timer_add(l, 2, tick_cb, r);
}

static void guard_cb(loop *l, int id, void *arg)
{
	run *r = arg;
	r->guard_timer = 0;
	snprintf(r->err, sizeof(r->err), "the test's own 60 s guard fired");
	loop_stop(l);
}

/* Loads through a policy_loader; returns the run (rows as sorted text in *text). */
static void load(const policy *pol, const char *conninfo, const char *snapshot, run *r, char **text)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->rows);
	r->l = loop_create();
	policy_loader *pl = NULL;
	char err[POLICY_LOADER_ERROR_MAX];
	policy_loader_params p = {.loop = r->l, .conninfo = conninfo, .snapshot = snapshot, .pol = pol,
	                          .timeout_ms = 30000, .row_cb = row_cb, .done_cb = done_cb, .arg = r};
	if (policy_loader_start(&p, &pl, err) != 0) {
		r->done = true;
		r->rc = -1;
		snprintf(r->err, sizeof(r->err), "start: %s", err);
	} else {
		r->tick_timer = loop_timer_add(r->l, 2, tick_cb, r);
		r->guard_timer = loop_timer_add(r->l, 60000, guard_cb, r);
		(void)loop_run(r->l);
	}
	policy_loader_destroy(pl);
	loop_destroy(r->l);
	*text = sorted(&r->rows);
	buf_fini(&r->rows);
}

/* A process that keeps changing the roster until killed. */
static pid_t writer_start(void)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	PGconn *c = connect_db();
	for (int i = 0;; i++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "UPDATE public.org_roles SET role = CASE role WHEN 'viewer' THEN 'member' ELSE 'viewer' END "
		         "WHERE user_id = ('0b000000-0000-4000-8000-' || lpad(%d::text, 12, '0'))::uuid",
		         1 + (i * 7919) % 50000);
		exec_ok(c, sql);
	}
}

int main(void)
{
	policy *pol = NULL;
	char perr[POLICY_ERROR_MAX];
	const char *root = getenv("WALCAST_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/deploy/policy.ini", root ? root : ".");
	if (policy_load_file(path, &pol, perr) != 0) {
		fprintf(stderr, "policy: %s\n", perr);
		return 2;
	}
	PGconn *setup = connect_db();
	exec_ok(setup, "INSERT INTO public.orgs (id, name) SELECT ('0a000000-0000-4000-8000-' || lpad(g::text, 12, "
	               "'0'))::uuid, 'org ' || g FROM generate_series(1, 100) g");
	exec_ok(setup, "INSERT INTO public.org_roles (org_id, user_id, role) SELECT ('0a000000-0000-4000-8000-' || "
	               "lpad((1 + g % 100)::text, 12, '0'))::uuid, ('0b000000-0000-4000-8000-' || lpad(g::text, 12, "
	               "'0'))::uuid, (ARRAY['viewer','member','analyst','admin','owner'])[1 + g % 5] FROM "
	               "generate_series(1, 50000) g");
	exec_ok(setup, "INSERT INTO public.contacts (id, org_id, name) SELECT ('0c000000-0000-4000-8000-' || "
	               "lpad(g::text, 12, '0'))::uuid, ('0a000000-0000-4000-8000-' || lpad((1 + g % 100)::text, 12, "
	               "'0'))::uuid, 'c' || g FROM generate_series(1, 200) g");
	exec_ok(setup, "INSERT INTO public.privacy_rules (org_id, contact_id, min_role) SELECT org_id, id, 'admin' "
	               "FROM public.contacts ORDER BY id LIMIT 100");

	/* the snapshot, held open by its transaction as a slot's is by the replication connection */
	PGconn *snap = connect_db();
	exec_ok(snap, "BEGIN ISOLATION LEVEL REPEATABLE READ");
	PGresult *r = PQexec(snap, "SELECT pg_export_snapshot()");
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		return 2;
	char snapshot[128];
	snprintf(snapshot, sizeof(snapshot), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	char *want = query_state(snap);

	/* changes after the snapshot, committed before the load starts */
	exec_ok(setup, "DELETE FROM public.org_roles WHERE user_id IN (SELECT ('0b000000-0000-4000-8000-' || "
	               "lpad(g::text, 12, '0'))::uuid FROM generate_series(1, 50000, 50) g)");
	exec_ok(setup, "UPDATE public.org_roles SET role = 'owner' WHERE role = 'viewer' AND user_id < "
	               "'0b000000-0000-4000-8000-000000005000'");
	exec_ok(setup, "INSERT INTO public.org_roles (org_id, user_id, role) SELECT "
	               "'0a000000-0000-4000-8000-000000000001', ('0b100000-0000-4000-8000-' || lpad(g::text, 12, "
	               "'0'))::uuid, 'member' FROM generate_series(1, 1000) g");
	exec_ok(setup, "DELETE FROM public.privacy_rules WHERE contact_id IN (SELECT contact_id FROM "
	               "public.privacy_rules ORDER BY contact_id LIMIT 10)");
	PGconn *now = connect_db();
	char *current = query_state(now);
	PQfinish(now);
	CHECK(strcmp(want, current) != 0, "the data changed after the snapshot");

	pid_t writer = writer_start();
	run rr;
	char *got = NULL;
	int64_t t0 = loop_now_ms();
	load(pol, "", snapshot, &rr, &got);
	int64_t took = loop_now_ms() - t0;
	kill(writer, SIGKILL);
	waitpid(writer, NULL, 0);
	CHECK(rr.done && rr.rc == 0, "the load from the snapshot succeeded (rc=%d: %s)", rr.rc, rr.err);
	CHECK(rr.nrows == 50000 + 100, "rows handed over: %zu (want 50100)", rr.nrows);
	CHECK(strcmp(got, want) == 0, "the loaded state equals the snapshot's (a query in the same snapshot)");
	CHECK(strcmp(got, current) != 0, "and not the data as it is now");
	CHECK(rr.ticks >= 5 && rr.ticks >= took / 20, "the loop kept turning: %d ticks of a 2 ms timer in %lld ms",
	      rr.ticks, (long long)took);
	CHECK(rr.max_gap < 1000, "the longest gap between ticks during the load: %lld ms", (long long)rr.max_gap);
	free(got);

	/* without a snapshot: the data as it is now (the writer has stopped) */
	now = connect_db();
	free(current);
	current = query_state(now);
	PQfinish(now);
	load(pol, "", NULL, &rr, &got);
	CHECK(rr.rc == 0 && strcmp(got, current) == 0, "without a snapshot: the current data (rc=%d: %s)", rr.rc,
	      rr.err);
	free(got);

	/* errors come back through done_cb, clearly */
	load(pol, "", "00000003-0000BEEF-1", &rr, &got);
	CHECK(rr.done && rr.rc == -EIO && strstr(rr.err, "SET TRANSACTION SNAPSHOT") != NULL,
	      "an unknown snapshot: rc=%d err=%s", rr.rc, rr.err);
	free(got);
	load(pol, "host=127.0.0.1 port=1 connect_timeout=2", snapshot, &rr, &got);
	CHECK(rr.done && rr.rc == -EIO && strstr(rr.err, "cannot connect") != NULL,
	      "a database that does not answer: rc=%d err=%s", rr.rc, rr.err);
	free(got);

	PQfinish(snap);
	exec_ok(setup, "TRUNCATE public.org_roles, public.privacy_rules, public.contacts, public.orgs CASCADE");
	PQfinish(setup);
	free(want);
	free(current);
	policy_destroy(pol);
	printf("%s\n", failures == 0 ? "PASS" : "FAIL");
	return failures == 0 ? 0 : 1;
}
