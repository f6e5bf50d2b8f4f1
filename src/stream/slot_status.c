/*
 * slot_status — the periodic pg_replication_slots poll behind the slot metrics (slot_status.h).
 *
 * State machine of the connection: NONE (no connection) → CONNECTING (PQconnectPoll driven by
 * the socket's readiness) → READY (idle between polls) → BUSY (a query sent, results read as the
 * socket becomes readable) → READY. Any error closes the connection (back to NONE), counts
 * walcast_slot_status_errors_total and makes the gauges unknown; the next tick reconnects.
 */
#include "slot_status.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"

typedef enum conn_state { CONN_NONE, CONN_CONNECTING, CONN_READY, CONN_BUSY } conn_state;

static const char *const wal_statuses[] = {"reserved", "extended", "unreserved", "lost"};
#define NSTATUS 4

typedef struct status_child {
	slot_status *s;
	int index;
} status_child;

struct slot_status {
	loop *loop;
	metrics_registry *r;
	char *conninfo;
	char *slot;
	int64_t interval_ms;      /* the metrics' interval, from slot_status_create */
	int64_t poll_ms;          /* the interval in force: interval_ms, or the watcher's */
	slot_status_watch_cb watch_cb;
	void *watch_arg;

	PGconn *conn;
	int sock;
	conn_state state;
	int timer;

	/* What the last poll found; known == false: left out of /metrics. */
	bool known;
	int wal_status;          /* index in wal_statuses, -1: NULL or another value */
	bool safe_known;         /* safe_wal_size not NULL */
	double safe_wal_size;
	bool retained_known;
	double retained;
	uint64_t polls;

	status_child children[NSTATUS];
	metrics_family *fam_status, *fam_safe, *fam_retained, *fam_errors;
	metrics_counter *errors;
	bool error_logged;       /* log a failing poll once until one succeeds */
};

static const char *const SLOT_SQL =
	"SELECT wal_status, safe_wal_size, "
	"CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL "
	"ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), restart_lsn) END, "
	"active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";

/* ---- metrics callbacks ------------------------------------------------------------------ */

static int status_cb(void *arg, double *value)
{
	status_child *c = arg;
	if (!c->s->known)
		return -1;
	*value = c->s->wal_status == c->index ? 1 : 0;
	return 0;
}

static int safe_cb(void *arg, double *value)
{
	slot_status *s = arg;
	if (!s->known || !s->safe_known)
		return -1;
	*value = s->safe_wal_size;
	return 0;
}

static int retained_cb(void *arg, double *value)
{
	slot_status *s = arg;
	if (!s->known || !s->retained_known)
		return -1;
	*value = s->retained;
	return 0;
}

/* ---- the connection --------------------------------------------------------------------- */

static void watch_tell(slot_status *s, bool ok, bool exists, int active_pid)
{
	slot_poll found = {.ok = ok, .exists = exists, .active_pid = active_pid};
	if (s->watch_cb != NULL)
		s->watch_cb(s->watch_arg, &found);
}

static void conn_close(slot_status *s)
{
	if (s->sock >= 0)
		loop_unwatch(s->loop, s->sock);
	s->sock = -1;
	if (s->conn)
		PQfinish(s->conn);
	s->conn = NULL;
	s->state = CONN_NONE;
}

static void poll_failed(slot_status *s, const char *why)
{
	char line[600];
	size_t n = 0;
	for (const char *p = why; *p && n < sizeof(line) - 1; p++) /* libpq's message: one line */
		if (*p != '\n' && *p != '\t')
			line[n++] = *p;
		else if (n > 0 && line[n - 1] != ' ')
			line[n++] = ' ';
	while (n > 0 && line[n - 1] == ' ')
		n--;
	line[n] = '\0';
	if (!s->error_logged)
		log_warn("slot_status.poll_failed", "slot=%s: %s (slot metrics unknown until a poll succeeds)",
		         s->slot, line);
	s->error_logged = true;
	metrics_counter_inc(s->errors);
	s->known = false;
	conn_close(s);
	watch_tell(s, false, false, 0);
}

static void conn_watch(slot_status *s, unsigned events);

static void take_result(slot_status *s, PGresult *res)
{
	if (PQntuples(res) == 0) {
		if (!s->error_logged)
			log_warn("slot_status.no_slot", "slot=%s: not in pg_replication_slots (slot metrics unknown)",
			         s->slot);
		s->error_logged = true;
		s->known = false;
		watch_tell(s, true, false, 0);
		return;
	}
	s->wal_status = -1;
	if (!PQgetisnull(res, 0, 0))
		for (int i = 0; i < NSTATUS; i++)
			if (strcmp(PQgetvalue(res, 0, 0), wal_statuses[i]) == 0)
				s->wal_status = i;
	s->safe_known = !PQgetisnull(res, 0, 1);
	s->safe_wal_size = s->safe_known ? strtod(PQgetvalue(res, 0, 1), NULL) : 0;
	s->retained_known = !PQgetisnull(res, 0, 2);
	s->retained = s->retained_known ? strtod(PQgetvalue(res, 0, 2), NULL) : 0;
	s->known = true;
	s->polls++;
	if (s->error_logged)
		log_info("slot_status.ok", "slot=%s: slot metrics known again", s->slot);
	s->error_logged = false;
	watch_tell(s, true, true, PQgetisnull(res, 0, 3) ? 0 : atoi(PQgetvalue(res, 0, 3)));
}

static void send_query(slot_status *s)
{
	const char *params[] = {s->slot};
	if (!PQsendQueryParams(s->conn, SLOT_SQL, 1, NULL, params, NULL, NULL, 0)) {
		poll_failed(s, PQerrorMessage(s->conn));
		return;
	}
	s->state = CONN_BUSY;
	int f = PQflush(s->conn);
	if (f < 0) {
		poll_failed(s, PQerrorMessage(s->conn));
		return;
	}
	conn_watch(s, f == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ);
}

static void conn_cb(loop *l, int fd, unsigned events, void *arg)
{
	slot_status *s = arg;
	if (s->state == CONN_CONNECTING) {
		PostgresPollingStatusType ps = PQconnectPoll(s->conn);
		if (ps == PGRES_POLLING_FAILED) {
			poll_failed(s, PQerrorMessage(s->conn));
			return;
		}
		if (ps == PGRES_POLLING_OK) {
			if (PQsetnonblocking(s->conn, 1) != 0) {
				poll_failed(s, PQerrorMessage(s->conn));
				return;
			}
			send_query(s);
			return;
		}
		conn_watch(s, ps == PGRES_POLLING_READING ? LOOP_READ : LOOP_WRITE);
		return;
	}
	if (s->state == CONN_BUSY && (events & LOOP_WRITE)) {
		int f = PQflush(s->conn);
		if (f < 0) {
			poll_failed(s, PQerrorMessage(s->conn));
			return;
		}
		if (f == 0)
			conn_watch(s, LOOP_READ);
	}
	if (!(events & LOOP_READ))
		return;
	if (!PQconsumeInput(s->conn)) {
		poll_failed(s, PQerrorMessage(s->conn));
		return;
	}
	while (s->state == CONN_BUSY && !PQisBusy(s->conn)) {
		PGresult *res = PQgetResult(s->conn);
		if (res == NULL) {
			s->state = CONN_READY;
			break;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			char why[600];
			snprintf(why, sizeof why, "%s", PQresultErrorMessage(res));
			PQclear(res);
			poll_failed(s, why);
			return;
		}
		take_result(s, res);
		PQclear(res);
	}
}

static void conn_watch(slot_status *s, unsigned events)
{
	int fd = PQsocket(s->conn);
	if (s->sock >= 0 && s->sock != fd)
		loop_unwatch(s->loop, s->sock);
	s->sock = fd;
	if (fd < 0 || loop_watch(s->loop, fd, events, conn_cb, s) < 0)
		poll_failed(s, "cannot watch the connection's socket");
}

static void tick_cb(loop *l, int id, void *arg)
{
	slot_status *s = arg;
	s->timer = loop_timer_add(s->loop, s->poll_ms, tick_cb, s);
	if (s->timer < 0)
		s->timer = 0; /* out of memory: polling stops; the gauges keep their last value */
	if (s->state == CONN_READY) {
		send_query(s);
	} else if (s->state == CONN_NONE) {
		const char *keys[] = {"dbname", "fallback_application_name", NULL};
		const char *vals[] = {s->conninfo, "walcast-slot-status", NULL};
		s->conn = PQconnectStartParams(keys, vals, 1);
		if (s->conn == NULL) {
			poll_failed(s, "out of memory");
			return;
		}
		if (PQstatus(s->conn) == CONNECTION_BAD) {
			poll_failed(s, PQerrorMessage(s->conn));
			return;
		}
		s->state = CONN_CONNECTING;
		conn_watch(s, LOOP_WRITE);
	}
	/* CONNECTING or BUSY: the previous poll is still under way; this one is skipped. */
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int slot_status_create(loop *l, metrics_registry *r, const char *conninfo, const char *slot,
                       int64_t interval_ms, slot_status **out, char err[SLOT_STATUS_ERROR_MAX])
{
	static const char *const status_label[] = {"status", NULL};
	int rc;
	char merr[METRICS_ERROR_MAX] = "";
	if (interval_ms <= 0) {
		snprintf(err, SLOT_STATUS_ERROR_MAX, "slot status interval must be positive");
		return -EINVAL;
	}
	slot_status *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->loop = l;
	s->r = r;
	s->sock = -1;
	s->interval_ms = s->poll_ms = interval_ms;
	s->conninfo = strdup(conninfo ? conninfo : "");
	s->slot = strdup(slot);
	if (s->conninfo == NULL || s->slot == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	metrics_desc d = {.kind = METRICS_GAUGE, .name = "walcast_slot_wal_status",
	                  .help = "The slot's wal_status: 1 for the current one, 0 for the others.",
	                  .labels = status_label};
	if ((rc = metrics_family_register(r, &d, &s->fam_status, merr)) < 0)
		goto fail;
	for (int i = 0; i < NSTATUS; i++) {
		s->children[i] = (status_child){s, i};
		const char *values[] = {wal_statuses[i], NULL};
		if ((rc = metrics_callback_register(s->fam_status, values, status_cb, &s->children[i], merr)) < 0)
			goto fail;
	}
	d = (metrics_desc){.kind = METRICS_GAUGE, .name = "walcast_slot_safe_wal_size_bytes",
	                   .help = "The slot's safe_wal_size: bytes of WAL that can still be written before "
	                           "the slot is at risk of losing what it needs."};
	if ((rc = metrics_family_register(r, &d, &s->fam_safe, merr)) < 0 ||
	    (rc = metrics_callback_register(s->fam_safe, NULL, safe_cb, s, merr)) < 0)
		goto fail;
	d = (metrics_desc){.kind = METRICS_GAUGE, .name = "walcast_slot_retained_wal_bytes",
	                   .help = "The server's WAL insert position minus the slot's restart_lsn: WAL kept for the slot, in bytes."};
	if ((rc = metrics_family_register(r, &d, &s->fam_retained, merr)) < 0 ||
	    (rc = metrics_callback_register(s->fam_retained, NULL, retained_cb, s, merr)) < 0)
		goto fail;
	d = (metrics_desc){.kind = METRICS_COUNTER, .name = "walcast_slot_status_errors_total",
	                   .help = "Polls of pg_replication_slots that failed."};
	if ((rc = metrics_family_register(r, &d, &s->fam_errors, merr)) < 0 ||
	    (rc = metrics_counter_register(s->fam_errors, NULL, &s->errors, merr)) < 0)
		goto fail;
	s->timer = loop_timer_add(l, 0, tick_cb, s);
	if (s->timer < 0) {
		rc = s->timer;
		s->timer = 0;
		goto fail;
	}
	*out = s;
	return 0;
fail:
	snprintf(err, SLOT_STATUS_ERROR_MAX, "slot status metrics: %s", rc == -ENOMEM ? "out of memory" : merr);
	slot_status_destroy(s);
	return rc;
}

void slot_status_destroy(slot_status *s)
{
	if (s == NULL)
		return;
	if (s->timer > 0)
		loop_timer_cancel(s->loop, s->timer);
	conn_close(s);
	metrics_family_remove(s->r, s->fam_status);
	metrics_family_remove(s->r, s->fam_safe);
	metrics_family_remove(s->r, s->fam_retained);
	metrics_family_remove(s->r, s->fam_errors);
	free(s->conninfo);
	free(s->slot);
	free(s);
}

void slot_status_watch(slot_status *s, int64_t interval_ms, slot_status_watch_cb cb, void *arg)
{
	s->watch_cb = cb;
	s->watch_arg = arg;
	s->poll_ms = cb != NULL && interval_ms > 0 ? interval_ms : s->interval_ms;
	if (s->timer > 0)
		loop_timer_cancel(s->loop, s->timer);
	s->timer = loop_timer_add(s->loop, cb != NULL ? 0 : s->poll_ms, tick_cb, s);
	if (s->timer < 0)
		s->timer = 0; /* out of memory: polling stops, as in tick_cb */
}

uint64_t slot_status_polls(const slot_status *s)
{
	return s->polls;
}
