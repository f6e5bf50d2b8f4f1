/*
 * source — the replication client state machine.
 *
 *   CONNECTING -> IDENTIFY -> [RELATIONS (wal2json)] -> SLOT_CHECK -> [PUB_CHECK -> PUB_CREATE]
 *     -> [SLOT_CREATE] -> START -> STREAMING
 *   (PUB_CREATE only for the tables given to source_publication_tables(); never FOR ALL TABLES.
 *   IDENTIFY refuses a resume position beyond the server's WAL; a temporary slot this source made
 *   turns every would-be retry into FAILED, since the slot died with the connection.)
 *   any step --transient error--> RETRY_WAIT --backoff timer--> CONNECTING
 *   any step --permanent error--> FAILED (failed_cb, one clear message)
 *
 * Every libpq call is non-blocking; the socket is watched on the loop, and each state's query
 * result is handled when PQisBusy() says it is complete. Setup SQL runs on the walsender
 * connection itself (replication=database accepts simple-protocol SQL before START_REPLICATION),
 * so walcast needs one connection and one role. The optional heartbeat uses a second, ordinary
 * connection.
 */
#include "source.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "lsn.h"

#define HEARTBEAT_PREFIX "walcast.heartbeat"
#define SLOT_BUSY_RETRIES 5 /* ~8 s of backoff before "slot in use" is final */
#define STOP_TIMEOUT_MS 5000 /* how long a stop waits for the server to take the final feedback */
#define READ_BATCH_MS 1 /* a drained socket rests this long before the next read (stream_read_batched) */
#define READ_BATCH_BYTES (256 * 1024) /* stream messages one batch takes, at most (stream_drain) */

typedef enum source_state {
	ST_IDLE,
	ST_CONNECTING,
	ST_IDENTIFY,
	ST_RELATIONS,
	ST_SLOT_CHECK,
	ST_PUB_CHECK,
	ST_PUB_CREATE,
	ST_SLOT_CREATE,
	ST_SNAPSHOT_HOLD,
	ST_START,
	ST_STREAMING,
	ST_RETRY_WAIT,
	ST_FAILED,
	ST_STOPPED,
} source_state;

static const char *const state_names[] = {
	"idle", "connecting", "identify", "relations", "slot-check", "publication-check",
	"publication-create", "slot-create", "snapshot-hold", "start", "streaming", "retry-wait", "failed", "stopped",
};

typedef enum heartbeat_state { HB_NONE, HB_CONNECTING, HB_READY, HB_BUSY } heartbeat_state;

typedef struct source source;

struct source {
	loop *loop;
	const config *cfg;
	relcache *rels;
	txn_source_events ev;
	decoder *dec;
	const decoder_ops *ops;

	source_state state;
	PGconn *conn;
	PGresult *pending; /* first result of the setup query in progress, until it completes */
	int sock; /* the fd currently watched, or -1 */
	bool slot_exists;
	bool temp_slot_made; /* this source created its temporary slot: a lost connection loses it */
	bool stopping;       /* in source_stop: a failed send ends quietly, no retry */
	char **pub_schemas;  /* source_publication_tables(): what a missing publication is created for */
	char **pub_names;
	size_t pub_n;
	char *pub_tables;    /* their quoted list, once built */
	int attempts;      /* consecutive failed attempts */
	int busy_attempts; /* consecutive "slot active" answers */
	char last_error[512];
	int retry_timer;
	int status_timer;
	int batch_timer; /* the socket rests unwatched until it fires (stream_read_batched) */
	uint64_t rng;

	uint64_t resume_lsn;   /* where the consumer's durable state says to start */
	uint64_t server_lsn;   /* the server's WAL flush position when this connection began */
	uint64_t received_lsn; /* highest WAL position seen */
	uint64_t decode_errors; /* messages the decoder refused (each one stops the source) */
	uint64_t confirmed_lsn; /* what the consumer confirmed */
	uint64_t delivered_lsn; /* highest position handed to the consumer that it can confirm */
	uint64_t flushed_lsn;  /* what we reported as flushed */
	bool in_txn;
	bool replayed_txn; /* the open transaction was delivered before a reconnect: dropped */
	bool paused;     /* source_pause: the socket is not read (status updates go on) */
	int resume_timer; /* source_resume: drains what libpq already holds, outside the caller */

	PGconn *hb_conn;
	heartbeat_state hb_state;
	int hb_sock;
	int hb_timer;
};

static int source_fail(source *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int source_retry(source *s, const char *reason);
static int connect_failed(source *s, char *why);
static int send_start(source *s);
static void conn_cb(loop *l, int fd, unsigned events, void *arg);
static void heartbeat_schedule(source *s);
static int stream_read(source *s);
static void heartbeat_close(source *s);

/* ---- small helpers ---- */

static int64_t pg_now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - PG_EPOCH_OFFSET_US;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void set_state(source *s, source_state st)
{
	if (s->state != st)
		log_debug("source.state", "slot=%s state=%s", s->cfg->slot, state_names[st]);
	s->state = st;
}

static void conn_unwatch(source *s)
{
	if (s->sock >= 0)
		loop_unwatch(s->loop, s->sock);
	s->sock = -1;
}

static void conn_close(source *s)
{
	conn_unwatch(s);
	PQclear(s->pending);
	s->pending = NULL;
	if (s->conn != NULL)
		PQfinish(s->conn);
	s->conn = NULL;
	if (s->status_timer > 0)
		loop_timer_cancel(s->loop, s->status_timer);
	s->status_timer = 0;
	if (s->batch_timer > 0)
		loop_timer_cancel(s->loop, s->batch_timer);
	s->batch_timer = 0;
}

static int conn_watch(source *s, unsigned events)
{
	int fd = PQsocket(s->conn);
	if (fd < 0)
		return -EBADF;
	if (s->sock >= 0 && s->sock != fd)
		loop_unwatch(s->loop, s->sock);
	s->sock = fd;
	if (s->paused && s->state == ST_STREAMING)
		events &= ~(unsigned)LOOP_READ; /* paused: nothing is read until source_resume */
	if (events == 0) {
		loop_unwatch(s->loop, fd);
		return 0;
	}
	return loop_watch(s->loop, fd, events, conn_cb, s);
}

/* One-line form of a libpq error (message, plus detail and hint when present). */
static void result_error(const PGresult *res, PGconn *conn, char *out, size_t cap)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
	if (msg == NULL)
		msg = conn ? PQerrorMessage(conn) : "unknown error";
	snprintf(out, cap, "%s%s%s%s%s", msg, detail ? " DETAIL: " : "", detail ? detail : "",
	         hint ? " HINT: " : "", hint ? hint : "");
	size_t n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/* ---- feedback ---- */

static bool nothing_in_flight(const source *s)
{
	return !s->in_txn && s->confirmed_lsn >= s->delivered_lsn;
}

static int status_send(source *s, bool reply)
{
	if (s->conn == NULL || s->state != ST_STREAMING)
		return 0;
	uint64_t flush = s->confirmed_lsn > s->flushed_lsn ? s->confirmed_lsn : s->flushed_lsn;
	uint64_t write = s->received_lsn > flush ? s->received_lsn : flush;
	uint8_t msg[34];
	msg[0] = 'r';
	put_u64(msg + 1, write);
	put_u64(msg + 9, flush);
	put_u64(msg + 17, flush);
	put_u64(msg + 25, (uint64_t)pg_now_us());
	msg[33] = reply ? 1 : 0;
	if (PQputCopyData(s->conn, (const char *)msg, sizeof(msg)) <= 0 || PQflush(s->conn) < 0) {
		if (s->stopping)
			return -EIO;
		char why[600];
		snprintf(why, sizeof(why), "could not send status update: %s", PQerrorMessage(s->conn));
		source_retry(s, why);
		return -EIO;
	}
	if (flush != s->flushed_lsn) {
		char a[LSN_TEXT_MAX];
		log_debug("source.feedback", "slot=%s flush=%s", s->cfg->slot, lsn_format(flush, a));
	}
	s->flushed_lsn = flush;
	return 0;
}

static void status_timer_cb(loop *l, int id, void *arg)
{
	source *s = arg;
	s->status_timer = 0;
	if (s->state != ST_STREAMING)
		return;
	if (status_send(s, false) < 0)
		return;
	int t = loop_timer_add(l, s->cfg->status_interval_ms, status_timer_cb, s);
	s->status_timer = t > 0 ? t : 0;
}

/* ---- the sink wrapper: tracks what is in flight, drops heartbeats and replays ---- */

/* After a reconnect the server starts again at the confirmed position, which may lie behind
 * what was delivered: a transaction whose commit begins before the delivered position, or a
 * message that ends at or before it, was handed over already and is dropped (the consumer's
 * state has moved past it; judging it again would judge it by a later state). */
static int wrap_begin_cb(void *arg, const change_txn *txn)
{
	source *s = arg;
	s->in_txn = true;
	s->replayed_txn = txn->commit_lsn < s->delivered_lsn;
	return s->replayed_txn ? 0 : s->ev.sink.begin_cb(s->ev.sink.arg, txn);
}

static int wrap_change_cb(void *arg, change *c)
{
	source *s = arg;
	if (c->action == CHANGE_MESSAGE && c->prefix != NULL && strcmp(c->prefix, HEARTBEAT_PREFIX) == 0)
		return 0;
	if (c->txn != NULL ? s->replayed_txn : c->lsn <= s->delivered_lsn)
		return 0;
	if (c->txn == NULL)
		s->delivered_lsn = c->lsn; /* see source.h: the end of the message's record, not + 1 */
	return s->ev.sink.change_cb(s->ev.sink.arg, c);
}

static int wrap_commit_cb(void *arg, const change_txn *txn)
{
	source *s = arg;
	s->in_txn = false;
	if (s->replayed_txn) {
		s->replayed_txn = false;
		return 0;
	}
	if (txn->end_lsn > s->delivered_lsn)
		s->delivered_lsn = txn->end_lsn;
	return s->ev.sink.commit_cb(s->ev.sink.arg, txn);
}

/* ---- lifecycle ---- */

static void publication_tables_free(source *s)
{
	for (size_t i = 0; i < s->pub_n; i++)
		free(s->pub_schemas[i]), free(s->pub_names[i]);
	free(s->pub_schemas);
	free(s->pub_names);
	free(s->pub_tables);
	s->pub_schemas = s->pub_names = NULL;
	s->pub_tables = NULL;
	s->pub_n = 0;
}

static int source_create(loop *l, const config *cfg, relcache *rels, const txn_source_events *events,
                         void **out, char err[TXN_SOURCE_ERROR_MAX])
{
	const decoder_ops *ops = decoder_ops_find(cfg->plugin);
	if (ops == NULL) {
		char names[128];
		snprintf(err, TXN_SOURCE_ERROR_MAX, "unknown output plugin '%s' (known: %s)", cfg->plugin,
		         decoder_names(names, sizeof(names)));
		return -EINVAL;
	}
	source *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	s->loop = l;
	s->cfg = cfg;
	s->rels = rels;
	s->ev = *events;
	s->ops = ops;
	s->sock = -1;
	s->hb_sock = -1;
	s->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)pg_now_us();
	decoder_params p = {
		.relations = rels,
		.sink = {wrap_begin_cb, wrap_change_cb, wrap_commit_cb, s},
		.publication = cfg->publication,
	};
	int rc = decoder_create(ops, &p, &s->dec);
	if (rc < 0) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "cannot create the %s decoder: %s", ops->name, strerror(-rc));
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

static int source_publication_tables(void *impl, const char *const *schemas, const char *const *names,
                                     size_t n)
{
	source *s = impl;
	if (n == 0)
		return -EINVAL;
	char **sc = calloc(n, sizeof(*sc));
	char **nm = calloc(n, sizeof(*nm));
	int rc = sc && nm ? 0 : -ENOMEM;
	for (size_t i = 0; i < n && rc == 0; i++) {
		sc[i] = strdup(schemas[i]);
		nm[i] = strdup(names[i]);
		if (sc[i] == NULL || nm[i] == NULL)
			rc = -ENOMEM;
	}
	if (rc < 0) {
		for (size_t i = 0; sc && nm && i < n; i++)
			free(sc[i]), free(nm[i]);
		free(sc);
		free(nm);
		return rc;
	}
	publication_tables_free(s);
	s->pub_schemas = sc;
	s->pub_names = nm;
	s->pub_n = n;
	return 0;
}

static void source_stop(void *impl);

static void source_destroy(void *impl)
{
	source *s = impl;
	if (s == NULL)
		return;
	source_stop(s);
	if (s->resume_timer > 0)
		loop_timer_cancel(s->loop, s->resume_timer);
	publication_tables_free(s);
	decoder_destroy(s->dec);
	free(s);
}

static uint64_t source_decode_errors(const void *impl)
{
	const source *s = impl;
	return s->decode_errors;
}

static bool source_streaming(const void *impl)
{
	const source *s = impl;
	return s != NULL && s->state == ST_STREAMING;
}

static uint64_t source_received_lsn(const void *impl)
{
	const source *s = impl;
	return s->received_lsn;
}

static uint64_t source_confirmed_lsn(const void *impl)
{
	const source *s = impl;
	return s != NULL ? s->confirmed_lsn : 0;
}

static void source_snapshot_done(void *impl)
{
	source *s = impl;
	if (s->state == ST_SNAPSHOT_HOLD)
		(void)send_start(s);
}

static void resume_timer_cb(loop *l, int id, void *arg)
{
	source *s = arg;
	(void)l, (void)id;
	s->resume_timer = 0;
	if (s->paused || s->conn == NULL || s->state != ST_STREAMING)
		return;
	if (conn_watch(s, LOOP_READ) < 0) {
		(void)source_retry(s, "cannot watch the connection socket");
		return;
	}
	(void)stream_read(s); /* what libpq already buffered raises no socket event */
}

static void source_pause(void *impl)
{
	source *s = impl;
	if (s->paused)
		return;
	s->paused = true;
	if (s->resume_timer > 0)
		loop_timer_cancel(s->loop, s->resume_timer);
	s->resume_timer = 0;
	if (s->conn != NULL && s->state == ST_STREAMING && s->sock >= 0)
		(void)conn_watch(s, 0);
	log_info("source.paused", "slot=%s: reading the stream paused", s->cfg->slot);
}

static void source_resume(void *impl)
{
	source *s = impl;
	if (!s->paused)
		return;
	s->paused = false;
	log_info("source.resumed", "slot=%s: reading the stream resumed", s->cfg->slot);
	if (s->resume_timer == 0) {
		int t = loop_timer_add(s->loop, 0, resume_timer_cb, s);
		s->resume_timer = t > 0 ? t : 0;
	}
}

static void source_confirm(void *impl, uint64_t lsn)
{
	source *s = impl;
	if (lsn > s->confirmed_lsn)
		s->confirmed_lsn = lsn;
}

/* Milliseconds left until deadline_us (pg_now_us() time), at least 0. */
static int ms_left(int64_t deadline_us)
{
	int64_t left = (deadline_us - pg_now_us()) / 1000;
	return left < 0 ? 0 : (int)left;
}

/* Ends the COPY stream the way pg_recvlogical does: the final status update, then CopyDone, then
 * waits for the server's CopyDone. The server handles its client's messages in order, so its
 * CopyDone proves the status update was applied to the slot; closing the socket without waiting
 * can lose it (the server, still sending, may see the connection reset before it reads the
 * update). Bounded by STOP_TIMEOUT_MS however the network behaves: the socket stays
 * non-blocking and every wait is a poll() with the time left. True when the server confirmed. */
static bool stream_finish(source *s)
{
	int64_t deadline = pg_now_us() + (int64_t)STOP_TIMEOUT_MS * 1000;
	int fd = PQsocket(s->conn);
	if (fd < 0 || status_send(s, false) < 0 || s->conn == NULL || PQputCopyEnd(s->conn, NULL) < 0)
		return false;
	for (;;) {
		int f = PQflush(s->conn);
		if (f < 0)
			return false;
		if (f == 0)
			break;
		struct pollfd p = {.fd = fd, .events = POLLOUT | POLLIN};
		if (poll(&p, 1, ms_left(deadline)) <= 0)
			return false; /* the deadline passed (or poll failed): give up */
		if ((p.revents & POLLIN) && !PQconsumeInput(s->conn))
			return false;
	}
	for (;;) {
		char *data = NULL;
		int n = PQgetCopyData(s->conn, &data, 1);
		if (data != NULL)
			PQfreemem(data); /* more of the stream, sent before the server saw our CopyDone */
		if (n == -1)
			return true; /* the server's CopyDone */
		if (n == -2)
			return false;
		if (n > 0)
			continue;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, ms_left(deadline)) <= 0 || !PQconsumeInput(s->conn))
			return false;
	}
}

static void source_stop(void *impl)
{
	source *s = impl;
	s->stopping = true;
	if (s->state == ST_STREAMING && s->conn != NULL) {
		char a[LSN_TEXT_MAX];
		if (stream_finish(s))
			log_info("source.stopped", "slot=%s flushed=%s", s->cfg->slot, lsn_format(s->flushed_lsn, a));
		else
			log_warn("source.stop_unconfirmed", "slot=%s flush=%s: the server did not acknowledge the final "
			         "status update within %d ms; the slot may resume from an earlier position (at most "
			         "a repeat, never a loss)", s->cfg->slot, lsn_format(s->flushed_lsn, a), STOP_TIMEOUT_MS);
	}
	if (s->retry_timer > 0)
		loop_timer_cancel(s->loop, s->retry_timer);
	s->retry_timer = 0;
	conn_close(s);
	heartbeat_close(s);
	if (s->hb_timer > 0)
		loop_timer_cancel(s->loop, s->hb_timer);
	s->hb_timer = 0;
	set_state(s, ST_STOPPED);
}

/* The walsender's side of the connection: TCP keepalives and a user timeout set on its socket
 * (GUCs in the startup packet, after the conninfo's own options or PGOPTIONS), so that the
 * walsender of an instance whose host was cut off ends within about 5 s, even one blocked
 * writing to it, instead of holding the slot until wal_sender_timeout. NULL: out of memory. */
static char *walsender_options(const char *conninfo)
{
	static const char tcp[] = "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 "
	                          "-c tcp_user_timeout=5000";
	const char *own = getenv("PGOPTIONS");
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
		if (strcmp(o->keyword, "options") == 0 && o->val != NULL)
			own = o->val;
	char *out = malloc((own != NULL ? strlen(own) : 0) + sizeof(tcp) + 1);
	if (out != NULL)
		sprintf(out, "%s%s%s", own != NULL ? own : "", own != NULL && own[0] != '\0' ? " " : "", tcp);
	PQconninfoFree(opts);
	return out;
}

static void connect_begin(source *s)
{
	char *options = walsender_options(s->cfg->conninfo);
	const char *keys[] = {"dbname", "replication", "fallback_application_name", "options", NULL};
	const char *vals[] = {s->cfg->conninfo, "database", "walcast", options, NULL};
	conn_close(s);
	set_state(s, ST_CONNECTING);
	s->conn = options != NULL ? PQconnectStartParams(keys, vals, 1) : NULL;
	free(options);
	if (s->conn == NULL) {
		source_fail(s, "out of memory creating a connection");
		return;
	}
	PQsetNoticeProcessor(s->conn, decoder_notice_cb, s->dec); /* server notices: through log.c */
	if (PQstatus(s->conn) == CONNECTION_BAD) {
		/* libpq refused the conninfo itself (or the first address failed at once). */
		char why[600];
		snprintf(why, sizeof(why), "%s", PQerrorMessage(s->conn));
		(void)connect_failed(s, why);
		return;
	}
	if (conn_watch(s, LOOP_WRITE) < 0)
		source_retry(s, "cannot watch the connection socket");
}

static int source_start(void *impl, uint64_t resume_lsn)
{
	source *s = impl;
	s->resume_lsn = resume_lsn;
	if (resume_lsn > s->confirmed_lsn)
		s->confirmed_lsn = resume_lsn;
	s->delivered_lsn = s->confirmed_lsn;
	connect_begin(s);
	if (s->cfg->heartbeat_interval_ms > 0)
		heartbeat_schedule(s);
	return s->state == ST_FAILED ? -EIO : 0;
}

/* ---- failure handling ---- */

static int source_fail(source *s, const char *fmt, ...)
{
	char why[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	conn_close(s);
	heartbeat_close(s);
	set_state(s, ST_FAILED);
	log_error("source.failed", "slot=%s: %s", s->cfg->slot, why);
	s->ev.failed_cb(s->ev.arg, why);
	return -EIO;
}

static void retry_timer_cb(loop *l, int id, void *arg)
{
	source *s = arg;
	s->retry_timer = 0;
	if (s->state == ST_RETRY_WAIT)
		connect_begin(s);
}

static int source_retry(source *s, const char *reason)
{
	/* reason is often PQerrorMessage(s->conn), which conn_close frees: keep a copy. */
	char why[sizeof(s->last_error)];
	snprintf(why, sizeof(why), "%s", reason);
	if (s->temp_slot_made)
		return source_fail(s, "the connection was lost (%s) and with it the temporary slot '%s': a new slot "
		                      "would start at the present and skip whatever was committed meanwhile, so "
		                      "walcast stops here. Run it again to start from the present, or use a durable "
		                      "slot (--slot NAME, without --temporary) to survive reconnects",
		                   why, s->cfg->slot);
	bool was_streaming = s->state == ST_STREAMING;
	if (s->in_txn && !s->replayed_txn && s->ev.abandon_cb != NULL)
		s->ev.abandon_cb(s->ev.arg);
	s->in_txn = s->replayed_txn = false;
	decoder_reset(s->dec);
	conn_close(s);
	set_state(s, ST_RETRY_WAIT);
	int64_t delay = s->cfg->reconnect_min_ms;
	for (int i = 0; i < s->attempts && delay < s->cfg->reconnect_max_ms; i++)
		delay *= 2;
	if (delay > s->cfg->reconnect_max_ms)
		delay = s->cfg->reconnect_max_ms;
	s->rng ^= s->rng << 13, s->rng ^= s->rng >> 7, s->rng ^= s->rng << 17;
	delay = delay * 3 / 4 + (int64_t)(s->rng % (uint64_t)(delay / 2 + 1));
	s->attempts++;
	/* One line per distinct problem, not one per attempt. */
	if (was_streaming || strcmp(why, s->last_error) != 0) {
		log_warn("source.disconnected", "slot=%s: %s; retrying (attempt %d, next in %" PRId64 " ms)",
		         s->cfg->slot, why, s->attempts, delay);
		snprintf(s->last_error, sizeof(s->last_error), "%s", why);
	} else {
		log_debug("source.retry", "slot=%s attempt=%d next_ms=%" PRId64, s->cfg->slot, s->attempts, delay);
	}
	int t = loop_timer_add(s->loop, delay, retry_timer_cb, s);
	if (t < 0) {
		source_fail(s, "cannot arm the reconnect timer");
		return -EIO;
	}
	s->retry_timer = t;
	return -EAGAIN;
}

/* Connection-level problems that retrying cannot fix: authentication, and a conninfo that libpq
 * cannot use (its option errors start with "invalid ..."). */
static bool connect_error_permanent(const char *msg)
{
	static const char *const patterns[] = {
		"password authentication failed", "no password supplied", "must be superuser or replication role",
		"no pg_hba.conf entry", "does not exist", "authentication method", "invalid connection option",
		"invalid URI", "missing \"=\"", "for connection option", "end of string reached",
		"unterminated quoted string", "unexpected spaces found", "invalid percent-encoded token",
	};
	if (strncmp(msg, "invalid ", 8) == 0)
		return true;
	for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++)
		if (strstr(msg, patterns[i]) != NULL)
			return true;
	return false;
}

/* A connection attempt failed with why: fail when retrying cannot heal it, else retry. */
static int connect_failed(source *s, char *why)
{
	size_t n = strlen(why);
	while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
		why[--n] = '\0';
	if (connect_error_permanent(why))
		return source_fail(s, "cannot connect: %s", why);
	return source_retry(s, why);
}

/* Handles a failed query result: retry for transient classes, fail otherwise. */
static int query_failed(source *s, PGresult *res, const char *what)
{
	char why[800];
	result_error(res, s->conn, why, sizeof(why));
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state == NULL || strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
	    strcmp(state, "53300") == 0) {
		char msg[900];
		snprintf(msg, sizeof(msg), "%s: %s", what, why);
		source_retry(s, msg);
		return -EIO;
	}
	if (strcmp(state, "55006") == 0 && ++s->busy_attempts < SLOT_BUSY_RETRIES) {
		char msg[900];
		snprintf(msg, sizeof(msg), "%s: %s", what, why);
		source_retry(s, msg);
		return -EIO;
	}
	if (strcmp(state, "42704") == 0 && s->state == ST_START && s->cfg->create_slot) {
		/* The slot vanished between the check and the start: look again. */
		source_retry(s, "slot disappeared before streaming started");
		return -EIO;
	}
	if (strstr(why, "may not be used as an output plugin") != NULL) {
		source_fail(s, "%s: %s -- this PostgreSQL build accepts only the output plugins listed in "
		            "output_plugin_libraries (some Debian builds of PostgreSQL 15 have that setting; others "
		            "do not know it and refuse to start when it is set). Allow the plugin in postgresql.conf: "
		            "output_plugin_libraries = 'pgoutput, test_decoding, %s' and reload the server "
		            "(SELECT pg_reload_conf())",
		            what, why, s->cfg->plugin);
		return -EIO;
	}
	if (strcmp(state, "42501") == 0) {
		source_fail(s, "%s: %s -- the role needs REPLICATION and SELECT on the published tables "
		            "(see deploy/migrations, role walcast_replicator)", what, why);
		return -EIO;
	}
	if (strcmp(state, "55006") == 0) {
		source_fail(s, "%s: %s -- another process is streaming from slot '%s'; stop it or configure "
		            "another slot", what, why, s->cfg->slot);
		return -EIO;
	}
	if (strstr(why, "wal_level") != NULL) {
		source_fail(s, "%s: %s -- set wal_level = logical in postgresql.conf and restart PostgreSQL", what, why);
		return -EIO;
	}
	return source_fail(s, "%s: %s (SQLSTATE %s)", what, why, state);
}

/* ---- setup queries ---- */

static int query_send(source *s, source_state next, const char *sql)
{
	set_state(s, next);
	log_debug("source.query", "slot=%s sql=%s", s->cfg->slot, sql);
	if (!PQsendQuery(s->conn, sql)) {
		char why[600];
		snprintf(why, sizeof(why), "%s", PQerrorMessage(s->conn));
		source_retry(s, why);
		return -EIO;
	}
	int f = PQflush(s->conn);
	if (f < 0) {
		source_retry(s, PQerrorMessage(s->conn));
		return -EIO;
	}
	return conn_watch(s, LOOP_READ | (f == 1 ? LOOP_WRITE : 0));
}

static char *quote_ident(source *s, const char *name)
{
	return PQescapeIdentifier(s->conn, name, strlen(name));
}

static char *quote_literal(source *s, const char *v)
{
	return PQescapeLiteral(s->conn, v, strlen(v));
}

static int send_slot_check(source *s)
{
	char *lit = quote_literal(s, s->cfg->slot);
	if (lit == NULL) {
		source_fail(s, "cannot quote the slot name: %s", PQerrorMessage(s->conn));
		return -EIO;
	}
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "SELECT plugin, active_pid, confirmed_flush_lsn, wal_status, database = current_database() "
	         "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s AND slot_type = 'logical'", lit);
	PQfreemem(lit);
	return query_send(s, ST_SLOT_CHECK, sql);
}

const char source_relations_sql[] =
	"SELECT c.oid, n.nspname, c.relname, c.relreplident, a.attname, a.atttypid, a.atttypmod, "
	"coalesce(a.attnum = ANY (i.indkey::int2[]), false) "
	"FROM pg_catalog.pg_class c "
	"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
	"JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
	"LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary "
	"WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
	"AND n.nspname NOT LIKE 'pg\\_toast%' "
	"ORDER BY c.oid, a.attnum";

static int send_relations(source *s)
{
	return query_send(s, ST_RELATIONS, source_relations_sql);
}

static int send_pub_check(source *s)
{
	char *lit = quote_literal(s, s->cfg->publication);
	if (lit == NULL) {
		source_fail(s, "cannot quote the publication name");
		return -EIO;
	}
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", lit);
	PQfreemem(lit);
	return query_send(s, ST_PUB_CHECK, sql);
}

static int send_pub_create(source *s)
{
	char *id = quote_ident(s, s->cfg->publication);
	if (id == NULL) {
		source_fail(s, "cannot quote the publication name");
		return -EIO;
	}
	buf list, sql;
	buf_init(&list);
	buf_init(&sql);
	int rc = 0;
	for (size_t i = 0; i < s->pub_n && rc == 0; i++) {
		char *sch = quote_ident(s, s->pub_schemas[i]);
		char *name = quote_ident(s, s->pub_names[i]);
		rc = sch && name ? buf_printf(&list, "%s%s.%s", i ? ", " : "", sch, name) : -ENOMEM;
		PQfreemem(sch);
		PQfreemem(name);
	}
	free(s->pub_tables);
	s->pub_tables = rc == 0 ? strndup(list.data, list.len) : NULL;
	buf_fini(&list);
	if (rc == 0 && s->pub_tables == NULL)
		rc = -ENOMEM;
	if (rc == 0)
		rc = buf_printf(&sql, "CREATE PUBLICATION %s FOR TABLE %s", id, s->pub_tables);
	PQfreemem(id);
	if (rc < 0) {
		buf_fini(&sql);
		source_fail(s, "out of memory");
		return -EIO;
	}
	rc = query_send(s, ST_PUB_CREATE, sql.data);
	buf_fini(&sql);
	return rc;
}

static int send_slot_create(source *s)
{
	char *id = quote_ident(s, s->cfg->slot);
	if (id == NULL) {
		source_fail(s, "cannot quote the slot name");
		return -EIO;
	}
	char sql[512];
	snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT %s %sLOGICAL %s EXPORT_SNAPSHOT", id,
	         s->cfg->temporary_slot ? "TEMPORARY " : "", s->ops->name);
	PQfreemem(id);
	return query_send(s, ST_SLOT_CREATE, sql);
}

static int send_start(source *s)
{
	char *id = quote_ident(s, s->cfg->slot);
	if (id == NULL) {
		source_fail(s, "cannot quote the slot name");
		return -EIO;
	}
	uint64_t start = s->confirmed_lsn;
	char a[LSN_TEXT_MAX];
	buf sql;
	buf_init(&sql);
	int rc = buf_printf(&sql, "START_REPLICATION SLOT %s LOGICAL %s (%s)", id, lsn_format(start, a),
	                    decoder_start_options(s->dec));
	PQfreemem(id);
	if (rc < 0) {
		buf_fini(&sql);
		source_fail(s, "out of memory");
		return -EIO;
	}
	decoder_reset(s->dec);
	s->in_txn = s->replayed_txn = false;
	int rc2 = query_send(s, ST_START, sql.data);
	buf_fini(&sql);
	return rc2;
}

/* After the slot (and publication) are settled. */
static int setup_next_after_slot(source *s)
{
	return s->slot_exists ? send_start(s) : send_slot_create(s);
}

int source_relations_seed(relcache *rels, const PGresult *res, int *seeded)
{
	int n = PQntuples(res);
	int i = 0;
	int loaded = 0;
	rel_column *cols = NULL;
	int rc = 0;
	while (i < n) {
		int j = i;
		const char *oid = PQgetvalue(res, i, 0);
		while (j < n && strcmp(PQgetvalue(res, j, 0), oid) == 0)
			j++;
		rel_column *nc = realloc(cols, (size_t)(j - i) * sizeof(*cols));
		if (nc == NULL) {
			rc = -ENOMEM;
			goto cleanup;
		}
		cols = nc;
		for (int k = i; k < j; k++) {
			cols[k - i] = (rel_column){
				.name = PQgetvalue(res, k, 4),
				.type_oid = (uint32_t)strtoul(PQgetvalue(res, k, 5), NULL, 10),
				.typmod = (int32_t)strtol(PQgetvalue(res, k, 6), NULL, 10),
				.key = PQgetvalue(res, k, 7)[0] == 't',
			};
		}
		relation r = {
			.oid = (uint32_t)strtoul(oid, NULL, 10),
			.schema = PQgetvalue(res, i, 1),
			.name = PQgetvalue(res, i, 2),
			.ncols = j - i,
			.cols = cols,
			.replident = PQgetvalue(res, i, 3)[0],
		};
		/* The stream's own description wins: only seed relations not yet known. */
		if (relcache_get_name(rels, r.schema, strlen(r.schema), r.name, strlen(r.name)) == NULL) {
			rc = relcache_put(rels, &r, NULL);
			if (rc < 0)
				goto cleanup;
			loaded++;
		}
		i = j;
	}
	*seeded = loaded;
cleanup:
	free(cols);
	return rc;
}

static int relations_load(source *s, PGresult *res)
{
	int loaded = 0;
	int rc = source_relations_seed(s->rels, res, &loaded);
	if (rc == 0)
		log_debug("source.relations", "slot=%s loaded=%d", s->cfg->slot, loaded);
	return rc;
}

/* A setup query's complete result; res is freed by the caller. */
static int setup_result(source *s, PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);
	char a[LSN_TEXT_MAX];
	char b[LSN_TEXT_MAX];
	switch (s->state) {
	case ST_IDENTIFY:
		if (st != PGRES_TUPLES_OK)
			return query_failed(s, res, "IDENTIFY_SYSTEM");
		if (PQnfields(res) < 4 || PQntuples(res) != 1 || PQgetisnull(res, 0, 3))
			return source_fail(s, "the connection is not a logical replication connection to a database "
			                      "(set dbname in the conninfo)");
		log_debug("source.identified", "slot=%s system=%s timeline=%s xlogpos=%s db=%s", s->cfg->slot,
		          PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
		{
			const char *pos = PQgetvalue(res, 0, 2);
			if (lsn_parse(pos, strlen(pos), &s->server_lsn) < 0)
				return source_fail(s, "IDENTIFY_SYSTEM returned a bad WAL position '%s'", pos);
		}
		if (s->confirmed_lsn > s->server_lsn)
			return source_fail(s, "the position to resume from, %s, is beyond the end of this server's WAL, %s: "
			                      "it comes from another history (the cluster was restored from a backup or "
			                      "replaced, or the checkpoint belongs to another server). walcast stops "
			                      "instead of streaming from a position the server has not reached. To go on "
			                      "with this server: move the checkpoint away (for tail --output: FILE, "
			                      "FILE.pos and FILE.state/) and start again, so slot '%s' resumes from its own "
			                      "position; the "
			                      "output then restarts from there (changes of the lost history are not in "
			                      "this server)",
			                   lsn_format(s->confirmed_lsn, a), lsn_format(s->server_lsn, b), s->cfg->slot);
		if (strcmp(s->ops->name, "wal2json") == 0)
			return send_relations(s);
		return send_slot_check(s);
	case ST_RELATIONS:
		if (st != PGRES_TUPLES_OK)
			return query_failed(s, res, "loading table descriptions");
		if (relations_load(s, res) < 0)
			return source_fail(s, "out of memory loading table descriptions");
		return send_slot_check(s);
	case ST_SLOT_CHECK:
		if (st != PGRES_TUPLES_OK)
			return query_failed(s, res, "looking up the slot");
		if (PQntuples(res) == 0) {
			if (!s->cfg->create_slot && !s->cfg->temporary_slot)
				return source_fail(s, "replication slot '%s' does not exist and create_slot is off; create "
				                      "it with: SELECT pg_create_logical_replication_slot('%s', '%s')",
				                   s->cfg->slot, s->cfg->slot, s->ops->name);
			s->slot_exists = false;
		} else {
			const char *plugin = PQgetvalue(res, 0, 0);
			if (strcmp(plugin, s->ops->name) != 0)
				return source_fail(s, "replication slot '%s' uses plugin '%s' but walcast is configured for "
				                      "'%s'; use another slot name or drop the slot",
				                   s->cfg->slot, plugin, s->ops->name);
			if (strcmp(PQgetvalue(res, 0, 3), "lost") == 0)
				return source_fail(s, "replication slot '%s' was invalidated (wal_status = lost): PostgreSQL "
				                      "removed WAL it still needed (max_slot_wal_keep_size), so the changes "
				                      "committed after its confirmed position %s can no longer be decoded. To go "
				                      "on: drop the slot (SELECT pg_drop_replication_slot('%s')) and start walcast "
				                      "again; it creates a new slot at the present. What was committed between %s "
				                      "and then is never delivered: for tail --output, move FILE, FILE.pos and "
				                      "FILE.state/ away first; rebuild anything derived from the stream from the tables",
				                   s->cfg->slot, PQgetvalue(res, 0, 2), s->cfg->slot, PQgetvalue(res, 0, 2));
			if (strcmp(PQgetvalue(res, 0, 4), "t") != 0)
				return source_fail(s, "replication slot '%s' belongs to another database", s->cfg->slot);
			if (!PQgetisnull(res, 0, 1)) {
				/* Often our own previous connection, not yet gone: retry a while. */
				if (++s->busy_attempts < SLOT_BUSY_RETRIES) {
					char why[256];
					snprintf(why, sizeof(why), "slot is active for pid %s", PQgetvalue(res, 0, 1));
					return source_retry(s, why);
				}
				return source_fail(s, "replication slot '%s' is active for another process (pid %s); stop "
				                      "that consumer or configure another slot",
				                   s->cfg->slot, PQgetvalue(res, 0, 1));
			}
			uint64_t slot_flush = 0;
			const char *cf = PQgetvalue(res, 0, 2);
			if (!PQgetisnull(res, 0, 2) && lsn_parse(cf, strlen(cf), &slot_flush) == 0 &&
			    slot_flush > s->server_lsn)
				return source_fail(s, "replication slot '%s' has confirmed %s, beyond the end of this "
				                      "server's WAL, %s: the slot comes from another history (restored "
				                      "from a backup inconsistently?). Drop it (SELECT "
				                      "pg_drop_replication_slot('%s')) and start again",
				                   s->cfg->slot, cf, lsn_format(s->server_lsn, a), s->cfg->slot);
			s->slot_exists = true;
			/* streaming starts there anyway: say so to streaming_cb (the consumer's state) */
			if (slot_flush > s->confirmed_lsn)
				s->confirmed_lsn = slot_flush;
			log_info("source.slot_found", "slot=%s confirmed_flush=%s", s->cfg->slot, cf);
		}
		if (strcmp(s->ops->name, "pgoutput") == 0)
			return send_pub_check(s);
		return setup_next_after_slot(s);
	case ST_PUB_CHECK:
		if (st != PGRES_TUPLES_OK)
			return query_failed(s, res, "looking up the publication");
		if (PQntuples(res) > 0)
			return setup_next_after_slot(s);
		if (s->pub_n == 0)
			return source_fail(s, "publication '%s' does not exist. walcast does not create one by itself (a "
			                      "publication FOR ALL TABLES would make every table without a replica "
			                      "identity refuse UPDATE and DELETE). Create it for the tables to read: "
			                      "CREATE PUBLICATION %s FOR TABLE schema.table, ... -- for the platform, "
			                      "deploy/migrations/20261122000400_replication.sql creates 'walcast'; or let "
			                      "tail create it for the tables of the policy file (--create-publication)",
			                   s->cfg->publication, s->cfg->publication);
		return send_pub_create(s);
	case ST_PUB_CREATE:
		if (st != PGRES_COMMAND_OK)
			return query_failed(s, res, "creating the publication");
		log_info("source.publication_created", "publication=%s tables=%s", s->cfg->publication, s->pub_tables);
		return setup_next_after_slot(s);
	case ST_SLOT_CREATE:
		if (st != PGRES_TUPLES_OK) {
			const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			if (code != NULL && strcmp(code, "42710") == 0) /* created meanwhile by someone else */
				return send_slot_check(s);
			return query_failed(s, res, "creating the replication slot");
		}
		log_info("source.slot_created", "slot=%s plugin=%s consistent_point=%s snapshot=%s%s",
		         s->cfg->slot, s->ops->name, PQgetvalue(res, 0, 1),
		         PQgetisnull(res, 0, 2) ? "none" : PQgetvalue(res, 0, 2),
		         s->cfg->temporary_slot ? " temporary=true" : "");
		s->slot_exists = true;
		s->temp_slot_made = s->cfg->temporary_slot;
		if (s->ev.snapshot_cb != NULL && !PQgetisnull(res, 0, 2)) {
			uint64_t consistent = 0;
			const char *cp = PQgetvalue(res, 0, 1);
			if (lsn_parse(cp, strlen(cp), &consistent) < 0)
				return source_fail(s, "CREATE_REPLICATION_SLOT returned a bad consistent point '%s'", cp);
			set_state(s, ST_SNAPSHOT_HOLD);
			if (s->ev.snapshot_cb(s->ev.arg, PQgetvalue(res, 0, 2), consistent) == 1)
				return 0; /* held until snapshot_done */
		}
		return send_start(s);
	case ST_START:
		if (st != PGRES_COPY_BOTH)
			return query_failed(s, res, "starting replication");
		set_state(s, ST_STREAMING);
		s->busy_attempts = 0;
		if (s->attempts > 0)
			log_info("source.reconnected", "slot=%s after=%d attempts", s->cfg->slot, s->attempts);
		s->attempts = 0;
		s->last_error[0] = '\0';
		log_info("source.streaming", "slot=%s plugin=%s from=%s", s->cfg->slot, s->ops->name,
		         lsn_format(s->confirmed_lsn, a));
		{
			int t = loop_timer_add(s->loop, s->cfg->status_interval_ms, status_timer_cb, s);
			s->status_timer = t > 0 ? t : 0;
		}
		if (s->ev.streaming_cb != NULL)
			s->ev.streaming_cb(s->ev.arg, s->confirmed_lsn);
		return 0;
	default:
		return 0;
	}
}

/* ---- streaming ---- */

static int stream_message(source *s, const uint8_t *m, size_t n)
{
	char a[LSN_TEXT_MAX];
	if (n >= 25 && m[0] == 'w') {
		uint64_t wal_start = get_u64(m + 1);
		char err[DECODER_ERROR_MAX];
		int rc = decoder_decode(s->dec, wal_start, m + 25, n - 25, err);
		if (wal_start > s->received_lsn)
			s->received_lsn = wal_start;
		if (rc == -EPROTO)
			s->decode_errors++;
		if (rc == -EPROTO)
			return source_fail(s, "cannot decode the %s message at LSN %s: %s; walcast stops here "
			                      "without confirming it, so nothing is lost",
			                   s->ops->name, lsn_format(wal_start, a), err);
		if (rc == -ENOMEM)
			return source_fail(s, "out of memory decoding the message at LSN %s", lsn_format(wal_start, a));
		return rc; /* non-zero: the consumer stopped us (e.g. tail reached its limit) */
	}
	if (n >= 18 && m[0] == 'k') {
		uint64_t wal_end = get_u64(m + 1);
		bool reply = m[17] != 0;
		char k[LSN_TEXT_MAX];
		log_debug("source.keepalive", "slot=%s wal_end=%s reply=%d in_txn=%d", s->cfg->slot,
		          lsn_format(wal_end, k), reply, s->in_txn);
		if (wal_end > s->received_lsn)
			s->received_lsn = wal_end;
		/* Between transactions the consumer has everything the server sent: let it take stock
		 * (flush, confirm, check its limits) before deciding what to confirm. */
		if (!s->in_txn && s->ev.idle_cb != NULL)
			s->ev.idle_cb(s->ev.arg, wal_end);
		if (s->state != ST_STREAMING)
			return 0; /* the consumer stopped */
		bool moved = false;
		if (nothing_in_flight(s) && wal_end > s->confirmed_lsn) {
			s->confirmed_lsn = wal_end; /* idle: confirm the keepalive position */
			moved = true;
		}
		if (reply || moved)
			status_send(s, false);
		return 0;
	}
	return source_fail(s, "unexpected replication message type '%c' (%zu bytes) after LSN %s",
	            n > 0 && m[0] >= 32 && m[0] < 127 ? m[0] : '?', n, lsn_format(s->received_lsn, a));
}

/* The server ended the stream with an error (SQLSTATE state, may be empty): retry unless the
 * same error would come back at the same WAL position forever. */
static int stream_error(source *s, const char *state, const char *why)
{
	char a[LSN_TEXT_MAX];
	if (strcmp(state, "42704") == 0 && strstr(why, "publication") != NULL)
		/* pgoutput looks publications up as of each change: a publication created after the
		 * slot's position (or dropped and created again) does not exist for the changes before,
		 * and the slot cannot move past them. */
		return source_fail(s, "the server cannot decode the stream after LSN %s: %s -- the publication "
		                      "'%s' did not exist at that point of the WAL (it was created after the slot, or "
		                      "dropped and created again), and retrying meets the same position. Create the "
		                      "slot after the publication: drop it (SELECT pg_drop_replication_slot('%s')) and "
		                      "start again; changes before the new slot are not delivered",
		                   lsn_format(s->received_lsn, a), why, s->cfg->publication, s->cfg->slot);
	if (strcmp(state, "42704") == 0 || strcmp(state, "42501") == 0)
		return source_fail(s, "the server ended the stream after LSN %s: %s (SQLSTATE %s); retrying cannot "
		                      "fix this", lsn_format(s->received_lsn, a), why, state);
	return source_retry(s, why);
}

/* Delivers what libpq holds and what the socket holds beyond it, reading again while a read
 * brought messages, up to READ_BATCH_BYTES: with a backlog in the socket, one batch then spans
 * many transactions (a live sink writes what one connection or topic gets from them at once),
 * not only the ~32 KB that one PQconsumeInput takes. */
static int stream_drain(source *s)
{
	size_t got = 0, before = 0;
	if (!PQconsumeInput(s->conn))
		return source_retry(s, PQerrorMessage(s->conn));
	while (s->state == ST_STREAMING && !s->paused) {
		char *data = NULL;
		int n = PQgetCopyData(s->conn, &data, 1);
		if (n == 0) {
			if (got == before || got >= READ_BATCH_BYTES)
				return 0; /* the socket is empty, or the batch is full */
			before = got;
			if (!PQconsumeInput(s->conn))
				return source_retry(s, PQerrorMessage(s->conn));
			continue;
		}
		if (n == -1) {
			PGresult *res = PQgetResult(s->conn);
			char why[800];
			char state[6] = "";
			if (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR) {
				const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
				snprintf(state, sizeof(state), "%s", st ? st : "");
				PQclear(res);
				res = NULL;
			}
			result_error(res, s->conn, why, sizeof(why));
			PQclear(res);
			return stream_error(s, state, why[0] ? why : "the server ended the replication stream");
		}
		if (n == -2)
			return source_retry(s, PQerrorMessage(s->conn));
		got += (size_t)n;
		int rc = stream_message(s, (const uint8_t *)data, (size_t)n);
		PQfreemem(data);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Delivers what the socket and libpq hold, then tells the consumer the batch ended. */
static int stream_read(source *s)
{
	int rc = stream_drain(s);
	if (s->ev.batch_end_cb != NULL)
		s->ev.batch_end_cb(s->ev.arg);
	return rc;
}

static int conn_event(source *s, unsigned events);

static void batch_timer_cb(loop *l, int id, void *arg)
{
	(void)l;
	(void)id;
	source *s = arg;
	s->batch_timer = 0;
	if (s->state != ST_STREAMING || s->conn == NULL || s->sock >= 0)
		return;
	int f = PQflush(s->conn);
	if (f < 0) {
		(void)source_retry(s, PQerrorMessage(s->conn));
		return;
	}
	if (conn_watch(s, LOOP_READ | (f == 1 ? LOOP_WRITE : 0)) < 0) {
		(void)source_retry(s, "cannot watch the connection socket");
		return;
	}
	/* read what arrived while the socket rested; if nothing did, the watch wakes the next read
	 * (reading now would rest again: a 1 ms poll of an idle stream) */
	int queued = 0;
	if (ioctl(s->sock, FIONREAD, &queued) < 0 || queued > 0)
		(void)conn_event(s, LOOP_READ);
}

/* Reads what the socket holds. walcast decodes faster than one walsender writes, so reading
 * whenever the socket is readable costs a wakeup (epoll_wait, recv, an ACK) for nearly every
 * message the walsender flushes -- about three per single-row transaction, most of walcast's CPU
 * (profiled: docs/benchmarks.md, "CPU per row"). So once a read has drained the socket, the
 * socket rests unwatched for READ_BATCH_MS and the next read takes everything that arrived
 * meanwhile at once; the kernel's socket buffers hold that much, so the walsender is not held
 * back. A change waits at most ~READ_BATCH_MS longer; while more is already queued, reads follow
 * at once; when nothing arrived during the rest, the socket stays watched until something does. */
static int stream_read_batched(source *s)
{
	int rc = stream_read(s);
	if (rc != 0 || s->state != ST_STREAMING || s->conn == NULL || s->sock < 0)
		return rc;
	int queued = 0;
	if (PQflush(s->conn) != 0 || ioctl(s->sock, FIONREAD, &queued) < 0 || queued > 0)
		return 0; /* output pending, or more to read: stay watched */
	int t = loop_timer_add(s->loop, READ_BATCH_MS, batch_timer_cb, s);
	if (t <= 0)
		return 0;
	conn_unwatch(s);
	s->batch_timer = t;
	return 0;
}

static int conn_event(source *s, unsigned events)
{
	if (s->state == ST_CONNECTING) {
		PostgresPollingStatusType ps = PQconnectPoll(s->conn);
		if (ps == PGRES_POLLING_FAILED) {
			char why[600];
			snprintf(why, sizeof(why), "%s", PQerrorMessage(s->conn));
			return connect_failed(s, why);
		}
		if (ps == PGRES_POLLING_OK) {
			if (PQsetnonblocking(s->conn, 1) != 0)
				return source_retry(s, "cannot make the connection non-blocking");
			return query_send(s, ST_IDENTIFY, "IDENTIFY_SYSTEM");
		}
		if (conn_watch(s, ps == PGRES_POLLING_READING ? LOOP_READ : LOOP_WRITE) < 0)
			return source_retry(s, "cannot watch the connection socket");
		return 0;
	}
	if (s->conn == NULL)
		return 0;
	if (events & LOOP_WRITE) {
		int f = PQflush(s->conn);
		if (f < 0)
			return source_retry(s, PQerrorMessage(s->conn));
		if (conn_watch(s, LOOP_READ | (f == 1 ? LOOP_WRITE : 0)) < 0)
			return source_retry(s, "cannot watch the connection socket");
	}
	if (!(events & LOOP_READ))
		return 0;
	if (s->state == ST_STREAMING)
		return stream_read_batched(s);
	if (!PQconsumeInput(s->conn))
		return source_retry(s, PQerrorMessage(s->conn));
	/* A setup query: take results until the query completes (or COPY BOTH begins). Results can
	 * arrive over several wakeups, so the first one is kept in s->pending meanwhile. */
	while (!PQisBusy(s->conn)) {
		PGresult *res = PQgetResult(s->conn);
		if (res == NULL) {
			res = s->pending;
			s->pending = NULL;
			if (res == NULL)
				return source_fail(s, "the server answered a setup query with nothing");
			int rc = setup_result(s, res);
			PQclear(res);
			return rc;
		}
		if (PQresultStatus(res) == PGRES_COPY_BOTH) {
			PQclear(s->pending);
			s->pending = NULL;
			int rc = setup_result(s, res);
			PQclear(res);
			if (rc == 0 && s->state == ST_STREAMING)
				rc = stream_read(s);
			return rc;
		}
		if (s->pending == NULL)
			s->pending = res;
		else
			PQclear(res);
	}
	return 0;
}

static void conn_cb(loop *l, int fd, unsigned events, void *arg)
{
	(void)conn_event(arg, events);
}



/* ---- heartbeat: a logical message on an ordinary connection every heartbeat_interval ---- */

static void heartbeat_close(source *s)
{
	if (s->hb_sock >= 0)
		loop_unwatch(s->loop, s->hb_sock);
	s->hb_sock = -1;
	if (s->hb_conn != NULL)
		PQfinish(s->hb_conn);
	s->hb_conn = NULL;
	s->hb_state = HB_NONE;
}

static int heartbeat_failed(source *s, const char *why)
{
	log_warn("source.heartbeat_failed", "slot=%s: %s", s->cfg->slot, why);
	heartbeat_close(s);
	return -EIO;
}

static void heartbeat_watch(source *s, unsigned events);

static int heartbeat_event(source *s, unsigned events)
{
	if (s->hb_state == HB_CONNECTING) {
		PostgresPollingStatusType ps = PQconnectPoll(s->hb_conn);
		if (ps == PGRES_POLLING_FAILED)
			return heartbeat_failed(s, PQerrorMessage(s->hb_conn));
		if (ps == PGRES_POLLING_OK) {
			PQsetnonblocking(s->hb_conn, 1);
			s->hb_state = HB_READY;
			heartbeat_watch(s, LOOP_READ);
			return 0;
		}
		heartbeat_watch(s, ps == PGRES_POLLING_READING ? LOOP_READ : LOOP_WRITE);
		return 0;
	}
	if (!PQconsumeInput(s->hb_conn))
		return heartbeat_failed(s, PQerrorMessage(s->hb_conn));
	while (!PQisBusy(s->hb_conn)) {
		PGresult *res = PQgetResult(s->hb_conn);
		if (res == NULL) {
			s->hb_state = HB_READY;
			break;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			char why[600];
			result_error(res, s->hb_conn, why, sizeof(why));
			PQclear(res);
			return heartbeat_failed(s, why);
		}
		PQclear(res);
	}
	return 0;
}

static void heartbeat_cb(loop *l, int fd, unsigned events, void *arg)
{
	(void)heartbeat_event(arg, events);
}


static void heartbeat_watch(source *s, unsigned events)
{
	int fd = PQsocket(s->hb_conn);
	if (s->hb_sock >= 0 && s->hb_sock != fd)
		loop_unwatch(s->loop, s->hb_sock);
	s->hb_sock = fd;
	if (fd < 0 || loop_watch(s->loop, fd, events, heartbeat_cb, s) < 0)
		heartbeat_failed(s, "cannot watch the heartbeat connection");
}

static void heartbeat_timer_cb(loop *l, int id, void *arg)
{
	source *s = arg;
	s->hb_timer = 0;
	if (s->state == ST_STOPPED || s->state == ST_FAILED)
		return;
	if (s->hb_state == HB_NONE) {
		const char *keys[] = {"dbname", "fallback_application_name", NULL};
		const char *vals[] = {s->cfg->conninfo, "walcast-heartbeat", NULL};
		s->hb_conn = PQconnectStartParams(keys, vals, 1);
		if (s->hb_conn == NULL || PQstatus(s->hb_conn) == CONNECTION_BAD) {
			heartbeat_failed(s, s->hb_conn ? PQerrorMessage(s->hb_conn) : "out of memory");
		} else {
			s->hb_state = HB_CONNECTING;
			heartbeat_watch(s, LOOP_WRITE);
		}
	} else if (s->hb_state == HB_READY) {
		if (PQsendQuery(s->hb_conn, "SELECT pg_catalog.pg_logical_emit_message(false, '" HEARTBEAT_PREFIX
		                            "', pg_catalog.now()::text)")) {
			s->hb_state = HB_BUSY;
			PQflush(s->hb_conn);
		} else {
			heartbeat_failed(s, PQerrorMessage(s->hb_conn));
		}
	}
	heartbeat_schedule(s);
}

static void heartbeat_schedule(source *s)
{
	int t = loop_timer_add(s->loop, s->cfg->heartbeat_interval_ms, heartbeat_timer_cb, s);
	s->hb_timer = t > 0 ? t : 0;
}

const txn_source_ops replication_source_ops = {
	.create = source_create,
	.destroy = source_destroy,
	.start = source_start,
	.stop = source_stop,
	.confirm = source_confirm,
	.pause = source_pause,
	.resume = source_resume,
	.snapshot_done = source_snapshot_done,
	.publication_tables = source_publication_tables,
	.streaming = source_streaming,
	.decode_errors = source_decode_errors,
	.received_lsn = source_received_lsn,
	.confirmed_lsn = source_confirmed_lsn,
};
