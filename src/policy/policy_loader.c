/*
 * policy_loader — the policy state read from PostgreSQL on the loop, never blocking it
 * (policy_loader.h).
 *
 * State machine, one step per statement, each driven by the socket's readiness:
 *
 *   CONNECT   PQconnectPoll until the connection is up (the socket may change on the way)
 *   BEGIN     BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY
 *   SNAPSHOT  SET TRANSACTION SNAPSHOT '<exported>'          (skipped without a snapshot)
 *   MEMBERS   privacy_load_query(membership), single-row mode: row_cb per row
 *   RULES     privacy_load_query(rules), single-row mode      (skipped without a rules table)
 *   DONE      the connection is closed (the transaction ends with it), done_cb(0)
 *
 * Rows already buffered by libpq do not make the socket readable again, so a turn that hands
 * over POLICY_LOADER_BATCH rows arms a 0 ms timer to go on with the rest after the loop has
 * served everything else.
 */
#include "policy_loader.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy_state.h"
#include "privacy.h"

enum step {
	STEP_CONNECT,
	STEP_BEGIN,
	STEP_SNAPSHOT,
	STEP_MEMBERS,
	STEP_RULES,
	STEP_DONE,
};

static const char *const step_names[] = {"connecting", "BEGIN", "SET TRANSACTION SNAPSHOT",
                                         "reading memberships", "reading privacy rules", "done"};

struct policy_loader {
	loop *loop;
	PGconn *conn;
	int sock;
	int step;
	char *conninfo;
	char *snapshot;
	const policy *pol;
	policy_loader_row_cb row_cb;
	policy_loader_done_cb done_cb;
	void *arg;
	int timeout_timer;
	int resume_timer;
	unsigned long long rows[2]; /* memberships, rules handed over */
	char err[POLICY_LOADER_ERROR_MAX];
};

static void close_conn(policy_loader *pl)
{
	if (pl->timeout_timer > 0)
		loop_timer_cancel(pl->loop, pl->timeout_timer);
	if (pl->resume_timer > 0)
		loop_timer_cancel(pl->loop, pl->resume_timer);
	pl->timeout_timer = pl->resume_timer = 0;
	if (pl->sock >= 0)
		loop_unwatch(pl->loop, pl->sock);
	pl->sock = -1;
	if (pl->conn != NULL)
		PQfinish(pl->conn);
	pl->conn = NULL;
}

/* Ends the load and reports it. The caller must not touch pl afterwards (done_cb may free it). */
static void finish(policy_loader *pl, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void finish(policy_loader *pl, int rc, const char *fmt, ...)
{
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(pl->err, sizeof(pl->err), fmt, ap);
		va_end(ap);
	}
	close_conn(pl);
	pl->step = STEP_DONE;
	if (rc == 0)
		log_info("policy_loader.done", "snapshot=%s: policy state read: %llu memberships, %llu privacy rules",
		         pl->snapshot ? pl->snapshot : "none", pl->rows[0], pl->rows[1]);
	pl->done_cb(pl->arg, rc, rc == 0 ? "" : pl->err);
}

/* The connection's error message on one line. */
static const char *conn_error(policy_loader *pl, const PGresult *res, char *out, size_t n)
{
	const char *m = res != NULL ? PQresultErrorMessage(res) : NULL;
	if (m == NULL || *m == '\0')
		m = PQerrorMessage(pl->conn);
	snprintf(out, n, "%s", m != NULL && *m ? m : "unknown error");
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = *(p + 1) ? ' ' : '\0';
	return out;
}

static void sock_cb(loop *l, int fd, unsigned events, void *arg);

static int watch(policy_loader *pl, unsigned events)
{
	int fd = PQsocket(pl->conn);
	if (fd < 0)
		return -EBADF;
	if (pl->sock >= 0 && pl->sock != fd)
		loop_unwatch(pl->loop, pl->sock);
	pl->sock = fd;
	return loop_watch(pl->loop, fd, events, sock_cb, pl);
}

/* Sends the statement of the next step (or finishes). 1 when the load ended (pl may be gone). */
static int next_step(policy_loader *pl)
{
	char msg[POLICY_LOADER_ERROR_MAX];
	char *sql = NULL;
	bool rows = false;
	for (;;) {
		pl->step++;
		if (pl->step == STEP_SNAPSHOT && pl->snapshot == NULL)
			continue;
		break;
	}
	int rc = 0;
	switch (pl->step) {
	case STEP_BEGIN:
		sql = strdup("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
		break;
	case STEP_SNAPSHOT: {
		char *lit = PQescapeLiteral(pl->conn, pl->snapshot, strlen(pl->snapshot));
		if (lit != NULL && asprintf(&sql, "SET TRANSACTION SNAPSHOT %s", lit) < 0)
			sql = NULL;
		PQfreemem(lit);
		break;
	}
	case STEP_MEMBERS:
	case STEP_RULES:
		rc = privacy_load_query(pl->pol, pl->conn, pl->step == STEP_MEMBERS ? POLICY_STATE_MEMBERSHIP
		                                                                    : POLICY_STATE_RULES, &sql);
		if (rc == -ENOENT) {
			finish(pl, 0, NULL); /* no rules table */
			return 1;
		}
		rows = true;
		break;
	default:
		finish(pl, 0, NULL);
		return 1;
	}
	if (sql == NULL) {
		finish(pl, -ENOMEM, "%s: out of memory", step_names[pl->step]);
		return 1;
	}
	int sent = PQsendQuery(pl->conn, sql);
	free(sql);
	if (!sent || (rows && !PQsetSingleRowMode(pl->conn))) {
		finish(pl, -EIO, "%s: %s", step_names[pl->step], conn_error(pl, NULL, msg, sizeof(msg)));
		return 1;
	}
	int f = PQflush(pl->conn);
	if (f < 0 || watch(pl, f == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ) < 0) {
		finish(pl, -EIO, "%s: %s", step_names[pl->step], conn_error(pl, NULL, msg, sizeof(msg)));
		return 1;
	}
	return 0;
}

static void resume_cb(loop *l, int id, void *arg);

/* Takes the results libpq has, at most POLICY_LOADER_BATCH rows. 1 when the load ended. */
static int drain(policy_loader *pl)
{
	char msg[POLICY_LOADER_ERROR_MAX];
	int batch = 0;
	while (!PQisBusy(pl->conn)) {
		PGresult *res = PQgetResult(pl->conn);
		if (res == NULL)
			return next_step(pl); /* the statement is complete */
		ExecStatusType st = PQresultStatus(res);
		if (st == PGRES_SINGLE_TUPLE) {
			int table = pl->step == STEP_MEMBERS ? POLICY_STATE_MEMBERSHIP : POLICY_STATE_RULES;
			const char *v[3] = {NULL, NULL, NULL};
			for (int j = 0; j < 3 && j < PQnfields(res); j++)
				v[j] = PQgetisnull(res, 0, j) ? NULL : PQgetvalue(res, 0, j);
			int rc = PQnfields(res) == 3 ? pl->row_cb(pl->arg, table, v) : -EPROTO;
			PQclear(res);
			if (rc < 0) {
				finish(pl, rc, "%s: row %llu refused: %s", step_names[pl->step], pl->rows[table - 1] + 1,
				       rc == -EPROTO ? "not three columns" : strerror(-rc));
				return 1;
			}
			pl->rows[table - 1]++;
			if (++batch >= POLICY_LOADER_BATCH) {
				/* the rest may already be buffered: no socket event would bring it */
				int t = loop_timer_add(pl->loop, 0, resume_cb, pl);
				if (t < 0) {
					finish(pl, t, "cannot arm a timer");
					return 1;
				}
				pl->resume_timer = t;
				return 0;
			}
			continue;
		}
		if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
			conn_error(pl, res, msg, sizeof(msg));
			PQclear(res);
			finish(pl, -EIO, "%s: %s", step_names[pl->step], msg);
			return 1;
		}
		PQclear(res);
	}
	return 0;
}

static void resume_cb(loop *l, int id, void *arg)
{
	policy_loader *pl = arg;
	(void)l, (void)id;
	pl->resume_timer = 0;
	(void)drain(pl);
}

static void sock_cb(loop *l, int fd, unsigned events, void *arg)
{
	policy_loader *pl = arg;
	char msg[POLICY_LOADER_ERROR_MAX];
	(void)l, (void)fd;
	if (pl->step == STEP_CONNECT) {
		PostgresPollingStatusType ps = PQconnectPoll(pl->conn);
		if (ps == PGRES_POLLING_FAILED) {
			finish(pl, -EIO, "cannot connect to load the policy state: %s", conn_error(pl, NULL, msg, sizeof(msg)));
			return;
		}
		if (ps == PGRES_POLLING_OK) {
			if (PQsetnonblocking(pl->conn, 1) != 0) {
				finish(pl, -EIO, "connecting: %s", conn_error(pl, NULL, msg, sizeof(msg)));
				return;
			}
			(void)next_step(pl);
			return;
		}
		if (watch(pl, ps == PGRES_POLLING_READING ? LOOP_READ : LOOP_WRITE) < 0)
			finish(pl, -EIO, "connecting: cannot watch the connection's socket");
		return;
	}
	if (events & LOOP_WRITE) {
		int f = PQflush(pl->conn);
		if (f < 0 || watch(pl, f == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ) < 0) {
			finish(pl, -EIO, "%s: %s", step_names[pl->step], conn_error(pl, NULL, msg, sizeof(msg)));
			return;
		}
	}
	if (!(events & LOOP_READ))
		return;
	if (!PQconsumeInput(pl->conn)) {
		finish(pl, -EIO, "%s: %s", step_names[pl->step], conn_error(pl, NULL, msg, sizeof(msg)));
		return;
	}
	if (pl->resume_timer == 0)
		(void)drain(pl); /* else the pending timer goes on with the buffered rows first */
}

static void timeout_cb(loop *l, int id, void *arg)
{
	policy_loader *pl = arg;
	(void)l, (void)id;
	pl->timeout_timer = 0;
	finish(pl, -ETIMEDOUT, "%s: no answer within the load's time limit", step_names[pl->step]);
}

int policy_loader_start(const policy_loader_params *p, policy_loader **out, char err[POLICY_LOADER_ERROR_MAX])
{
	if (p == NULL || p->loop == NULL || p->conninfo == NULL || p->pol == NULL || p->row_cb == NULL ||
	    p->done_cb == NULL) {
		snprintf(err, POLICY_LOADER_ERROR_MAX, "policy loader: missing parameter");
		return -EINVAL;
	}
	policy_loader *pl = calloc(1, sizeof(*pl));
	int rc = -ENOMEM;
	if (pl == NULL)
		goto fail;
	pl->sock = -1;
	pl->loop = p->loop;
	pl->pol = p->pol;
	pl->row_cb = p->row_cb;
	pl->done_cb = p->done_cb;
	pl->arg = p->arg;
	pl->step = STEP_CONNECT;
	if ((pl->conninfo = strdup(p->conninfo)) == NULL ||
	    (p->snapshot != NULL && (pl->snapshot = strdup(p->snapshot)) == NULL))
		goto fail;
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {pl->conninfo, "walcast-state-load", NULL};
	pl->conn = PQconnectStartParams(keys, vals, 1);
	if (pl->conn == NULL)
		goto fail;
	if (PQstatus(pl->conn) == CONNECTION_BAD) {
		snprintf(err, POLICY_LOADER_ERROR_MAX, "cannot connect to load the policy state: %s",
		         PQerrorMessage(pl->conn));
		rc = -EIO;
		goto cleanup;
	}
	PQsetNoticeProcessor(pl->conn, log_pg_notice, "state-load");
	if ((rc = watch(pl, LOOP_WRITE)) < 0) {
		snprintf(err, POLICY_LOADER_ERROR_MAX, "cannot watch the state load's socket: %s", strerror(-rc));
		goto cleanup;
	}
	if (p->timeout_ms > 0) {
		int t = loop_timer_add(pl->loop, p->timeout_ms, timeout_cb, pl);
		if (t < 0) {
			rc = t;
			goto fail;
		}
		pl->timeout_timer = t;
	}
	*out = pl;
	return 0;
fail:
	snprintf(err, POLICY_LOADER_ERROR_MAX, "policy loader: out of memory");
cleanup:
	policy_loader_destroy(pl);
	return rc;
}

void policy_loader_destroy(policy_loader *pl)
{
	if (pl == NULL)
		return;
	close_conn(pl);
	free(pl->conninfo);
	free(pl->snapshot);
	free(pl);
}
