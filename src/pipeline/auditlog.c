/*
 * auditlog — the batched audit_log and sync_health writer on the loop (auditlog.h).
 *
 * The queue is a ring of prepared JSON objects (one per record, built and checked when it is
 * recorded), capacity queue_max. A batch is the first n records of the ring: they stay there
 * until PostgreSQL answered, so a connection lost mid-batch loses nothing.
 *
 * State machine of the connection, each step driven by the socket's readiness:
 *
 *   NONE        no connection; the reconnect timer (back-off) leads to CONNECTING
 *   CONNECTING  PQconnectPoll until the connection is up (the socket may change on the way)
 *   READY       idle: kick() sends the next job (a due sync_health tick first, then a batch)
 *   BUSY        one statement sent, its result read as the socket becomes readable → READY
 *
 * Any connection failure closes the connection (→ NONE) and arms the reconnect timer; a batch
 * that was in flight then is "in doubt", and the first job on the new connection (CHECK_SQL) asks
 * whether it was committed before it is written again or taken off the queue; a
 * statement the server refuses for a transient reason (SQLSTATE class 08, 40, 53, 55, 57) is
 * retried after the back-off on the same connection; any other refusal drops that batch.
 */
#include "auditlog.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "uuid.h"

typedef enum conn_state { CONN_NONE, CONN_CONNECTING, CONN_READY, CONN_BUSY } conn_state;
typedef enum job { JOB_NONE, JOB_BATCH, JOB_HEALTH, JOB_CHECK } job;

/* Rows of an org that no longer exists are skipped, not refused (a foreign key violation would
 * fail the whole batch); the ordinality keeps the rows' ids in the order they were recorded. */
static const char *const BATCH_SQL =
	"INSERT INTO public.audit_log (org_id, actor_id, action, target_table, target_id, detail, created_at) "
	"SELECT r.org_id, r.actor_id, r.action, r.target_table, r.target_id, "
	"COALESCE(r.detail, '{}'::jsonb), r.created_at "
	"FROM ROWS FROM (pg_catalog.jsonb_to_recordset($1::jsonb) AS (org_id uuid, actor_id uuid, action text, "
	"target_table text, target_id text, detail jsonb, created_at timestamptz)) WITH ORDINALITY "
	"AS r(org_id, actor_id, action, target_table, target_id, detail, created_at, n) "
	"WHERE EXISTS (SELECT 1 FROM public.orgs o WHERE o.id = r.org_id) ORDER BY r.n";

static const char *const HEALTH_SQL =
	"INSERT INTO public.sync_health (org_id, source, status, lag_s) "
	"SELECT o.id, 'walcast', $1, $2::numeric FROM public.orgs o";

/* After a connection lost while a batch was in flight: did that batch commit? Its rows commit
 * together, so its first row answers for all (the org, the action, the actor, the target and the
 * microsecond it was recorded identify it; the (org_id, created_at) index finds it). */
static const char *const CHECK_SQL =
	"SELECT EXISTS (SELECT 1 FROM public.audit_log WHERE org_id = $1::uuid AND created_at = $2::timestamptz "
	"AND action = $3 AND actor_id IS NOT DISTINCT FROM $4::uuid AND target_table IS NOT DISTINCT FROM $5 "
	"AND target_id IS NOT DISTINCT FROM $6)";

static const char *const drop_reasons[] = {"queue_full", "invalid", "rejected", "no_org"};
#define NREASONS 4

typedef struct drop_child {
	auditlog *w;
	int reason;
} drop_child;

struct auditlog {
	loop *loop;
	metrics_registry *metrics;
	char *conninfo;
	int64_t flush_interval_ms, reconnect_min_ms, reconnect_max_ms, health_interval_ms, lagging_after_ms;
	size_t batch_size, queue_max;
	auditlog_health_cb health_cb;
	void *health_arg;

	json_t **ring;   /* queue_max slots */
	size_t head, count;
	json_t *counted; /* auditlog_record_counted's queued records not yet sent, by their key */
	size_t inflight; /* records of the batch being written (the first ones of the ring) */
	size_t doubt;    /* records of a batch whose answer was lost with the connection: checked first */

	PGconn *conn;
	PGresult *result; /* the statement's last result so far (results may span socket events) */
	int sock;
	conn_state state;
	job job;
	int64_t backoff_ms;
	int reconnect_timer, flush_timer, health_timer, drain_timer, done_timer, sample_timer;
	int64_t behind_since_us; /* since when the stream has been behind the server (0: it is not) */
	bool flush_due, health_due, retry_wait;

	bool draining, drained;
	auditlog_drained_cb done_cb;
	void *done_arg;

	bool dropping;        /* inside a burst of queue_full drops */
	uint64_t burst_drops;
	bool conn_error_logged;
	auditlog_stats st;

	metrics_family *fams[7];
	drop_child drops[NREASONS];
};

/* ---- metrics ------------------------------------------------------------------------------ */

static int m_written(void *a, double *v) { *v = (double)((auditlog *)a)->st.written; return 0; }
static int m_batches(void *a, double *v) { *v = (double)((auditlog *)a)->st.batches; return 0; }
static int m_errors(void *a, double *v) { *v = (double)((auditlog *)a)->st.errors; return 0; }
static int m_queued(void *a, double *v) { *v = (double)((auditlog *)a)->count; return 0; }
static int m_connected(void *a, double *v) { *v = ((auditlog *)a)->state >= CONN_READY ? 1 : 0; return 0; }
static int m_health(void *a, double *v) { *v = (double)((auditlog *)a)->st.health_rows; return 0; }

static int m_dropped(void *a, double *v)
{
	drop_child *c = a;
	const auditlog_stats *s = &c->w->st;
	uint64_t n[NREASONS] = {s->dropped_full, s->dropped_invalid, s->dropped_rejected, s->dropped_no_org};
	*v = (double)n[c->reason];
	return 0;
}

static int metrics_add(auditlog *w, char err[AUDITLOG_ERROR_MAX])
{
	static const char *const reason_label[] = {"reason", NULL};
	static const struct {
		metrics_kind kind;
		const char *name, *help;
		metrics_read_cb cb;
	} defs[] = {
		{METRICS_COUNTER, "walcast_audit_records_written_total", "audit_log rows written by walcast", m_written},
		{METRICS_COUNTER, "walcast_audit_batches_total", "audit_log INSERTs (batches) that succeeded", m_batches},
		{METRICS_COUNTER, "walcast_audit_errors_total",
		 "failed connections and statements of the audit writer (audit_log and sync_health)", m_errors},
		{METRICS_GAUGE, "walcast_audit_queue_records", "audit records waiting to be written", m_queued},
		{METRICS_GAUGE, "walcast_audit_connected", "1 while the audit writer is connected to PostgreSQL",
		 m_connected},
		{METRICS_COUNTER, "walcast_sync_health_rows_total", "sync_health rows written by walcast", m_health},
	};
	char merr[METRICS_ERROR_MAX];
	int rc = 0;
	size_t i;
	for (i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
		metrics_desc d = {.kind = defs[i].kind, .name = defs[i].name, .help = defs[i].help};
		if ((rc = metrics_family_register(w->metrics, &d, &w->fams[i], merr)) < 0 ||
		    (rc = metrics_callback_register(w->fams[i], NULL, defs[i].cb, w, merr)) < 0)
			goto fail;
	}
	metrics_desc d = {.kind = METRICS_COUNTER, .name = "walcast_audit_records_dropped_total",
	                  .help = "audit records not written, by reason (queue_full, invalid, rejected, no_org)",
	                  .labels = reason_label};
	if ((rc = metrics_family_register(w->metrics, &d, &w->fams[i], merr)) < 0)
		goto fail;
	for (int r = 0; r < NREASONS; r++) {
		const char *vals[] = {drop_reasons[r], NULL};
		w->drops[r] = (drop_child){w, r};
		if ((rc = metrics_callback_register(w->fams[i], vals, m_dropped, &w->drops[r], merr)) < 0)
			goto fail;
	}
	return 0;
fail:
	snprintf(err, AUDITLOG_ERROR_MAX, "audit metrics: %s", merr);
	return rc;
}

/* ---- the queue ------------------------------------------------------------------------------ */

static json_t *ring_at(const auditlog *w, size_t i)
{
	return w->ring[(w->head + i) % w->queue_max];
}

/* Removes the first n records. */
static void ring_pop(auditlog *w, size_t n)
{
	for (size_t i = 0; i < n && w->count > 0; i++) {
		json_decref(w->ring[w->head]);
		w->ring[w->head] = NULL;
		w->head = (w->head + 1) % w->queue_max;
		w->count--;
	}
}

/* ---- the connection ----------------------------------------------------------------------- */

static void sock_cb(loop *l, int fd, unsigned events, void *arg);
static void kick(auditlog *w);

static const char *conn_error(const auditlog *w, const PGresult *res, char *out, size_t n)
{
	const char *m = res != NULL ? PQresultErrorMessage(res) : NULL;
	if (m == NULL || *m == '\0')
		m = w->conn != NULL ? PQerrorMessage(w->conn) : NULL;
	snprintf(out, n, "%s", m != NULL && *m ? m : "unknown error");
	for (char *p = out; *p; p++)
		if (*p == '\n')
			*p = *(p + 1) ? ' ' : '\0';
	return out;
}

static int watch(auditlog *w, unsigned events)
{
	int fd = PQsocket(w->conn);
	if (fd < 0)
		return -EBADF;
	if (w->sock >= 0 && w->sock != fd)
		loop_unwatch(w->loop, w->sock);
	w->sock = fd;
	return loop_watch(w->loop, fd, events, sock_cb, w);
}

static void close_conn(auditlog *w)
{
	if (w->sock >= 0)
		loop_unwatch(w->loop, w->sock);
	w->sock = -1;
	PQclear(w->result);
	w->result = NULL;
	if (w->conn != NULL)
		PQfinish(w->conn);
	w->conn = NULL;
	w->state = CONN_NONE;
	w->job = JOB_NONE;
	w->inflight = 0;
}

static void reconnect_cb(loop *l, int id, void *arg)
{
	auditlog *w = arg;
	(void)l, (void)id;
	w->reconnect_timer = 0;
	if (w->retry_wait && w->count > 0)
		w->flush_due = true; /* the batch that failed goes again */
	w->retry_wait = false;
	if (w->state == CONN_NONE) {
		const char *keys[] = {"dbname", "replication", "fallback_application_name", NULL};
		const char *vals[] = {w->conninfo, "false", "walcast-audit", NULL};
		w->conn = PQconnectStartParams(keys, vals, 1);
		if (w->conn == NULL || PQstatus(w->conn) == CONNECTION_BAD) {
			char msg[AUDITLOG_ERROR_MAX];
			w->st.errors++;
			log_error("audit.connect", "audit writer: cannot connect: %s",
			          w->conn != NULL ? conn_error(w, NULL, msg, sizeof(msg)) : "out of memory");
			close_conn(w);
			kick(w); /* arms the next attempt */
			return;
		}
		PQsetNoticeProcessor(w->conn, log_pg_notice, "audit");
		w->state = CONN_CONNECTING;
		if (watch(w, LOOP_WRITE) < 0) {
			w->st.errors++;
			close_conn(w);
			kick(w);
		}
		return;
	}
	kick(w);
}

/* Arms the reconnect (or retry) timer with the current back-off and doubles it. */
static void backoff(auditlog *w)
{
	if (w->reconnect_timer > 0)
		return;
	int t = loop_timer_add(w->loop, w->backoff_ms, reconnect_cb, w);
	if (t > 0)
		w->reconnect_timer = t;
	w->backoff_ms = w->backoff_ms * 2 > w->reconnect_max_ms ? w->reconnect_max_ms : w->backoff_ms * 2;
}

static void conn_failed(auditlog *w, const char *what, const PGresult *res)
{
	char msg[AUDITLOG_ERROR_MAX];
	w->st.errors++;
	if (w->job == JOB_BATCH && w->inflight > 0)
		w->doubt = w->inflight; /* the server may have committed it: ask before writing it again */
	if (!w->conn_error_logged)
		log_warn("audit.disconnected", "audit writer: %s: %s; keeping %zu records, reconnecting", what,
		         conn_error(w, res, msg, sizeof(msg)), w->count);
	w->conn_error_logged = true;
	close_conn(w);
	backoff(w);
}

/* ---- jobs --------------------------------------------------------------------------------- */

static void send_job(auditlog *w, const char *sql, int nparams, const char *const *params)
{
	if (!PQsendQueryParams(w->conn, sql, nparams, NULL, params, NULL, NULL, 0)) {
		conn_failed(w, "sending", NULL);
		return;
	}
	w->state = CONN_BUSY;
	int f = PQflush(w->conn);
	if (f < 0 || watch(w, f == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ) < 0)
		conn_failed(w, "sending", NULL);
}

static void send_batch(auditlog *w)
{
	size_t n = w->count < w->batch_size ? w->count : w->batch_size;
	json_t *arr = json_array();
	char *text = NULL;
	if (arr == NULL)
		goto cleanup;
	for (size_t i = 0; i < n; i++)
		if (json_array_append(arr, ring_at(w, i)) < 0)
			goto cleanup;
	text = json_dumps(arr, JSON_COMPACT);
	if (text == NULL)
		goto cleanup;
	w->job = JOB_BATCH;
	w->inflight = n;
	json_object_clear(w->counted); /* sent records are counted no further (the rest may repeat) */
	w->flush_due = w->count > n; /* what is left waited as long: it goes right after this batch */
	const char *params[] = {text};
	send_job(w, BATCH_SQL, 1, params);
cleanup:
	if (text == NULL) { /* out of memory: try again later */
		w->st.errors++;
		backoff(w);
		w->retry_wait = true;
	}
	free(text);
	json_decref(arr);
}

static int64_t now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Reads the pipeline's health and follows since when the stream has been behind. */
static void sample(auditlog *w, auditlog_health *h, int64_t now)
{
	*h = (auditlog_health){0};
	w->health_cb(w->health_arg, h);
	if (!h->known || h->server_end == 0 || h->processed >= h->server_end)
		w->behind_since_us = 0;
	else if (w->behind_since_us == 0)
		w->behind_since_us = now;
}

static void send_health(auditlog *w)
{
	auditlog_health h;
	int64_t now = now_us();
	w->health_due = false;
	sample(w, &h, now);
	if (!h.known)
		return;
	double lag_s = auditlog_health_lag(&h, w->behind_since_us, now);
	char lag[32];
	snprintf(lag, sizeof(lag), "%.3f", lag_s);
	const char *params[] = {auditlog_health_status(h.paused, lag_s, w->lagging_after_ms), lag};
	w->job = JOB_HEALTH;
	send_job(w, HEALTH_SQL, 2, params);
}

static bool transient(const char *sqlstate)
{
	static const char *const classes[] = {"08", "40", "53", "55", "57"};
	if (sqlstate == NULL)
		return true;
	for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
		if (strncmp(sqlstate, classes[i], 2) == 0)
			return true;
	return false;
}

static void send_check(auditlog *w)
{
	const json_t *r = ring_at(w, 0);
	const char *f[] = {"org_id", "created_at", "action", "actor_id", "target_table", "target_id"};
	const char *params[6];
	for (int i = 0; i < 6; i++)
		params[i] = json_string_value(json_object_get(r, f[i])); /* NULL for JSON null: SQL NULL */
	w->job = JOB_CHECK;
	send_job(w, CHECK_SQL, 6, params);
}

/* The answer to CHECK_SQL: the batch in doubt landed (pop it) or not (write it again). */
static void check_done(auditlog *w, PGresult *res)
{
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
		bool landed = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		log_info("audit.in_doubt", "audit batch of %zu records whose answer was lost: %s", w->doubt,
		         landed ? "it was committed, not written again" : "it was not committed, writing it again");
		if (landed) {
			w->st.written += w->doubt;
			w->st.batches++;
			ring_pop(w, w->doubt);
		}
		w->doubt = 0;
		w->flush_due = w->count > 0;
		return;
	}
	char msg[AUDITLOG_ERROR_MAX];
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	w->st.errors++;
	log_warn("audit.in_doubt", "checking whether an audit batch of %zu records was committed: %s%s", w->doubt,
	         conn_error(w, res, msg, sizeof(msg)), transient(state) ? "; retrying" : "; writing it again");
	if (transient(state)) {
		w->retry_wait = true;
		backoff(w);
		return;
	}
	w->doubt = 0; /* at least once rather than lost */
	w->flush_due = w->count > 0;
}

/* The statement's result is complete: res is its (last) result. */
static void job_done(auditlog *w, PGresult *res)
{
	job j = w->job;
	size_t n = w->inflight;
	w->job = JOB_NONE;
	w->inflight = 0;
	w->state = CONN_READY;
	if (j == JOB_CHECK) {
		check_done(w, res);
		return;
	}
	if (PQresultStatus(res) == PGRES_COMMAND_OK) {
		unsigned long long rows = strtoull(PQcmdTuples(res), NULL, 10);
		w->backoff_ms = w->reconnect_min_ms;
		if (j == JOB_BATCH) {
			w->st.written += rows;
			w->st.batches++;
			if (rows < n)
				w->st.dropped_no_org += n - rows;
			ring_pop(w, n);
		} else {
			w->st.health_rows += rows;
			w->st.health_ticks++;
		}
		return;
	}
	char msg[AUDITLOG_ERROR_MAX];
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	w->st.errors++;
	conn_error(w, res, msg, sizeof(msg));
	if (j == JOB_HEALTH) {
		log_error("audit.sync_health", "sync_health: %s", msg);
		return;
	}
	if (transient(state)) {
		log_warn("audit.retry", "audit batch of %zu records: %s (SQLSTATE %s); retrying", n, msg,
		         state ? state : "none");
		w->retry_wait = true;
		backoff(w);
		return;
	}
	log_error("audit.rejected", "audit batch of %zu records refused: %s (SQLSTATE %s); dropped", n, msg,
	          state ? state : "none");
	w->st.dropped_rejected += n;
	ring_pop(w, n);
}

static void drain_finish(auditlog *w);

/* Sends the next job if the connection is idle, connects when there is none. */
static void kick(auditlog *w)
{
	if (w->drained)
		return;
	if (w->state == CONN_NONE) {
		backoff(w);
		return;
	}
	if (w->state != CONN_READY || w->retry_wait)
		return;
	if (w->doubt > 0 && w->count >= w->doubt) {
		send_check(w);
		return;
	}
	w->doubt = 0;
	if (w->health_due && !w->draining)
		send_health(w);
	if (w->state == CONN_READY && w->count > 0 &&
	    (w->flush_due || w->draining || w->count >= w->batch_size))
		send_batch(w);
	if (w->draining && w->count == 0 && w->state == CONN_READY)
		drain_finish(w);
}

static void flush_cb(loop *l, int id, void *arg)
{
	auditlog *w = arg;
	(void)l, (void)id;
	w->flush_timer = 0;
	w->flush_due = true;
	kick(w);
}

static void health_tick_cb(loop *l, int id, void *arg)
{
	auditlog *w = arg;
	(void)l, (void)id;
	int t = loop_timer_add(w->loop, w->health_interval_ms, health_tick_cb, w);
	w->health_timer = t > 0 ? t : 0;
	w->health_due = true;
	kick(w);
}

static void sample_cb(loop *l, int id, void *arg)
{
	auditlog *w = arg;
	auditlog_health h;
	(void)id;
	int t = loop_timer_add(l, AUDITLOG_SAMPLE_MS, sample_cb, w);
	w->sample_timer = t > 0 ? t : 0;
	sample(w, &h, now_us());
}

static void sock_cb(loop *l, int fd, unsigned events, void *arg)
{
	auditlog *w = arg;
	(void)l, (void)fd;
	if (w->state == CONN_CONNECTING) {
		PostgresPollingStatusType ps = PQconnectPoll(w->conn);
		if (ps == PGRES_POLLING_FAILED) {
			conn_failed(w, "connecting", NULL);
			return;
		}
		if (ps == PGRES_POLLING_OK) {
			if (PQsetnonblocking(w->conn, 1) != 0 || watch(w, LOOP_READ) < 0) {
				conn_failed(w, "connecting", NULL);
				return;
			}
			if (w->conn_error_logged)
				log_info("audit.connected", "audit writer: connected again; %zu records queued", w->count);
			w->conn_error_logged = false;
			w->state = CONN_READY;
			if (w->count > 0)
				w->flush_due = true; /* they waited for the connection already */
			kick(w);
			return;
		}
		if (watch(w, ps == PGRES_POLLING_READING ? LOOP_READ : LOOP_WRITE) < 0)
			conn_failed(w, "connecting", NULL);
		return;
	}
	if (events & LOOP_WRITE) {
		int f = PQflush(w->conn);
		if (f < 0 || watch(w, f == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ) < 0) {
			conn_failed(w, "sending", NULL);
			return;
		}
	}
	if (!(events & LOOP_READ))
		return;
	if (!PQconsumeInput(w->conn)) {
		conn_failed(w, "reading", NULL);
		return;
	}
	if (w->state != CONN_BUSY) {
		/* idle: only notices or the server going away (a notice processor took the former) */
		if (PQstatus(w->conn) == CONNECTION_BAD)
			conn_failed(w, "idle connection", NULL);
		return;
	}
	for (;;) {
		if (PQisBusy(w->conn))
			return; /* the rest comes with a later socket event */
		PGresult *res = PQgetResult(w->conn);
		if (res == NULL)
			break;
		PQclear(w->result);
		w->result = res;
	}
	PGresult *last = w->result;
	w->result = NULL;
	if (last == NULL || PQstatus(w->conn) == CONNECTION_BAD) {
		/* the connection ended before an answer: the batch stays queued */
		conn_failed(w, "waiting for the answer", last);
		PQclear(last);
		return;
	}
	job_done(w, last);
	PQclear(last);
	kick(w);
}

/* ---- the public functions ----------------------------------------------------------------- */

double auditlog_health_lag(const auditlog_health *h, int64_t behind_since_us, int64_t now)
{
	if (h->server_end == 0 || h->processed >= h->server_end)
		return 0;
	int64_t lag = -1;
	if (h->last_commit_us > 0)
		lag = now - h->last_commit_us;
	if (behind_since_us > 0 && (lag < 0 || now - behind_since_us < lag))
		lag = now - behind_since_us;
	return lag > 0 ? (double)lag / 1e6 : 0;
}

const char *auditlog_health_status(bool paused, double lag_s, int64_t lagging_after_ms)
{
	if (paused)
		return "paused";
	if (lag_s * 1000.0 > (double)lagging_after_ms)
		return "lagging";
	return "ok";
}

static bool valid_uuid(const char *s)
{
	uint8_t b[UUID_BYTES];
	return s != NULL && uuid_parse(s, strlen(s), b) == 0;
}

static void now_iso(char *out, size_t n)
{
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	char base[32];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%06ldZ", base, (long)tv.tv_usec);
}

/* The record as the batch carries it, or NULL when it is invalid (or memory ran out). */
static json_t *record_build(const char *org, const char *actor, const char *action, const char *target_table,
                            const char *target_id, const char *detail)
{
	json_t *o = NULL, *d = NULL;
	char at[48];
	if (!valid_uuid(org) || (actor != NULL && !valid_uuid(actor)) || action == NULL || action[0] == '\0')
		return NULL;
	if (detail != NULL) {
		json_error_t jerr;
		if ((d = json_loads(detail, JSON_DECODE_ANY, &jerr)) == NULL)
			return NULL;
	}
	now_iso(at, sizeof(at));
	if ((o = json_object()) == NULL) {
		json_decref(d);
		return NULL;
	}
	if (json_object_set_new(o, "detail", d ? d : json_object()) < 0 ||
	    json_object_set_new(o, "org_id", json_string(org)) < 0 ||
	    json_object_set_new(o, "actor_id", actor ? json_string(actor) : json_null()) < 0 ||
	    json_object_set_new(o, "action", json_string(action)) < 0 ||
	    json_object_set_new(o, "target_table", target_table ? json_string(target_table) : json_null()) < 0 ||
	    json_object_set_new(o, "target_id", target_id ? json_string(target_id) : json_null()) < 0 ||
	    json_object_set_new(o, "created_at", json_string(at)) < 0) {
		/* json_string refuses text that is not UTF-8; o owns d already */
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Queues rec, the record of org's action (or drops it: NULL, the queue full or draining);
 * returns whether it was queued. */
static bool enqueue(auditlog *w, json_t *rec, const char *org, const char *action);

void auditlog_record(auditlog *w, const char *org, const char *actor, const char *action,
                     const char *target_table, const char *target_id, const char *detail)
{
	if (w == NULL)
		return;
	(void)enqueue(w, record_build(org, actor, action, target_table, target_id, detail), org, action);
}

void auditlog_record_counted(auditlog *w, const char *org, const char *actor, const char *action,
                             const char *target_table, const char *target_id, const char *detail)
{
	if (w == NULL)
		return;
	/* fields joined by a byte none of them holds (uuids, names, JSON text: no raw control bytes) */
	char key[1024];
	int n = snprintf(key, sizeof(key), "%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s", org ? org : "", actor ? actor : "",
	                 action ? action : "", target_table ? target_table : "", target_id ? target_id : "",
	                 detail ? detail : "");
	bool keyed = n > 0 && (size_t)n < sizeof(key) && !w->draining;
	json_t *rec = keyed ? json_object_get(w->counted, key) : NULL;
	if (rec != NULL) {
		json_t *d = json_object_get(rec, "detail");
		json_int_t c = json_integer_value(json_object_get(d, "count"));
		if (json_object_set_new(d, "count", json_integer(c > 0 ? c + 1 : 2)) == 0) {
			w->st.recorded++;
			return;
		}
	}
	rec = record_build(org, actor, action, target_table, target_id, detail);
	if (rec != NULL && json_object_get(json_object_get(rec, "detail"), "count") != NULL) {
		json_decref(rec); /* a count of the caller's own would be ambiguous */
		rec = NULL;
	}
	json_t *queued = rec;
	if (enqueue(w, rec, org, action) && keyed && json_is_object(json_object_get(queued, "detail")))
		(void)json_object_set(w->counted, key, queued); /* out of memory: just not counted */
}

static bool enqueue(auditlog *w, json_t *rec, const char *org, const char *action)
{
	if (w->draining || w->count >= w->queue_max) {
		w->st.dropped_full++;
		w->burst_drops++;
		if (!w->dropping)
			log_warn("audit.dropping", "audit queue full (%zu records): dropping records until it drains",
			         w->queue_max);
		w->dropping = true;
		json_decref(rec);
		return false;
	}
	if (rec == NULL) {
		w->st.dropped_invalid++;
		log_warn("audit.invalid", "org=%s action=%s: audit record refused (bad uuid, empty action, detail not "
		         "JSON or text not UTF-8; or, counted, a detail holding a count of its own)", org ? org : "(null)",
		         action ? action : "(null)");
		return false;
	}
	if (w->dropping) {
		log_warn("audit.dropped", "audit queue has room again: %llu records were dropped",
		         (unsigned long long)w->burst_drops);
		w->dropping = false;
		w->burst_drops = 0;
	}
	w->ring[(w->head + w->count) % w->queue_max] = rec;
	w->count++;
	w->st.recorded++;
	if (w->count >= w->batch_size) {
		kick(w);
	} else if (w->flush_timer == 0 && !w->flush_due) {
		int t = loop_timer_add(w->loop, w->flush_interval_ms, flush_cb, w);
		if (t > 0)
			w->flush_timer = t;
		else
			w->flush_due = true;
	}
	return true;
}

int auditlog_create(const auditlog_params *p, auditlog **out, char err[AUDITLOG_ERROR_MAX])
{
	if (p == NULL || p->loop == NULL || p->flush_interval_ms < 1 || p->batch_size < 1 || p->batch_size > 10000 ||
	    p->queue_max < 1 || p->reconnect_min_ms < 1 || p->reconnect_max_ms < p->reconnect_min_ms ||
	    p->health_interval_ms < 0 || (p->health_interval_ms > 0 && p->health_cb == NULL)) {
		snprintf(err, AUDITLOG_ERROR_MAX, "audit writer: bad parameters");
		return -EINVAL;
	}
	int rc = -ENOMEM;
	auditlog *w = calloc(1, sizeof(*w));
	if (w == NULL)
		goto fail;
	w->loop = p->loop;
	w->sock = -1;
	w->flush_interval_ms = p->flush_interval_ms;
	w->reconnect_min_ms = w->backoff_ms = p->reconnect_min_ms;
	w->reconnect_max_ms = p->reconnect_max_ms;
	w->health_interval_ms = p->health_interval_ms;
	w->lagging_after_ms = p->lagging_after_ms;
	w->batch_size = p->batch_size;
	w->queue_max = p->queue_max;
	w->health_cb = p->health_cb;
	w->health_arg = p->health_arg;
	if ((w->conninfo = strdup(p->conninfo ? p->conninfo : "")) == NULL ||
	    (w->ring = calloc(p->queue_max, sizeof(*w->ring))) == NULL || (w->counted = json_object()) == NULL)
		goto fail;
	if (p->metrics != NULL) {
		w->metrics = p->metrics;
		if ((rc = metrics_add(w, err)) < 0)
			goto cleanup;
	}
	/* connect now (on the loop), so that a wrong conninfo shows at once in the log */
	int t = loop_timer_add(w->loop, 0, reconnect_cb, w);
	if (t < 0) {
		rc = t;
		goto fail;
	}
	w->reconnect_timer = t;
	if (w->health_interval_ms > 0) {
		if ((t = loop_timer_add(w->loop, w->health_interval_ms, health_tick_cb, w)) < 0) {
			rc = t;
			goto fail;
		}
		w->health_timer = t;
		if ((t = loop_timer_add(w->loop, AUDITLOG_SAMPLE_MS, sample_cb, w)) < 0) {
			rc = t;
			goto fail;
		}
		w->sample_timer = t;
	}
	*out = w;
	return 0;
fail:
	snprintf(err, AUDITLOG_ERROR_MAX, "audit writer: %s", strerror(-rc));
cleanup:
	auditlog_destroy(w);
	return rc;
}

static void done_cb(loop *l, int id, void *arg)
{
	auditlog *w = arg;
	(void)l, (void)id;
	w->done_timer = 0;
	if (w->done_cb != NULL) {
		auditlog_drained_cb cb = w->done_cb;
		w->done_cb = NULL;
		cb(w->done_arg, w->count);
	}
}

/* The drain is over (queue empty or time is up): report from a fresh loop callback. */
static void drain_finish(auditlog *w)
{
	if (w->drained)
		return;
	w->drained = true;
	if (w->drain_timer > 0)
		loop_timer_cancel(w->loop, w->drain_timer);
	w->drain_timer = 0;
	if (w->count > 0)
		log_warn("audit.drain_incomplete", "audit writer: %zu records not written at shutdown", w->count);
	int t = loop_timer_add(w->loop, 0, done_cb, w);
	if (t > 0)
		w->done_timer = t;
	else
		done_cb(w->loop, 0, w);
}

static void drain_timeout_cb(loop *l, int id, void *arg)
{
	auditlog *w = arg;
	(void)l, (void)id;
	w->drain_timer = 0;
	drain_finish(w);
}

void auditlog_drain(auditlog *w, int64_t timeout_ms, auditlog_drained_cb cb, void *arg)
{
	if (w == NULL || w->draining)
		return;
	w->draining = true;
	w->done_cb = cb;
	w->done_arg = arg;
	if (w->health_timer > 0)
		loop_timer_cancel(w->loop, w->health_timer);
	if (w->sample_timer > 0)
		loop_timer_cancel(w->loop, w->sample_timer);
	w->health_timer = w->sample_timer = 0;
	w->health_due = false;
	int t = loop_timer_add(w->loop, timeout_ms > 0 ? timeout_ms : 0, drain_timeout_cb, w);
	if (t > 0)
		w->drain_timer = t;
	if (w->count == 0 && w->state != CONN_BUSY) {
		drain_finish(w);
		return;
	}
	if (w->state == CONN_NONE && w->reconnect_timer > 0) {
		/* do not wait out a long back-off: try once more now */
		loop_timer_cancel(w->loop, w->reconnect_timer);
		w->reconnect_timer = 0;
		w->backoff_ms = w->reconnect_min_ms;
	}
	kick(w);
}

void auditlog_get_stats(const auditlog *w, auditlog_stats *out)
{
	*out = w->st;
	out->queued = w->count;
	out->connected = w->state >= CONN_READY;
}

void auditlog_destroy(auditlog *w)
{
	if (w == NULL)
		return;
	int *timers[] = {&w->reconnect_timer, &w->flush_timer, &w->health_timer, &w->drain_timer, &w->done_timer,
	                 &w->sample_timer};
	for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
		if (*timers[i] > 0)
			loop_timer_cancel(w->loop, *timers[i]);
	close_conn(w);
	if (w->ring != NULL)
		ring_pop(w, w->count);
	for (size_t i = 0; w->metrics != NULL && i < sizeof(w->fams) / sizeof(w->fams[0]); i++)
		metrics_family_remove(w->metrics, w->fams[i]);
	json_decref(w->counted);
	free(w->ring);
	free(w->conninfo);
	free(w);
}
