/*
 * edge_source — reads the change stream in Redis as a txn_source (see edge_source.h).
 *
 * State. One read in flight at a time, after the id `after` — the last entry read, or at the
 * start the id just before P-0 ("(P-1)-max"; "0-0" for P = 0), so that XRANGE's exclusive start
 * "(after" and XREAD's "after" both begin at P-0 inclusive. `tailing` says which read comes next:
 * MULTI/XRANGE/XINFO STREAM/EXEC until a page comes back short, then the wake-up XREAD COUNT 1
 * BLOCK until it answers with an entry (which the next MULTI read delivers). A reply is delivered
 * entry by entry, up to a pause, then batch_end; the next read leaves unless paused, stopped or
 * failed. A lost connection drops the read in flight (redis_conn calls
 * back with NULL); once it is up again the same read leaves again, after the same id.
 */
#include "edge_source.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lsn.h"
#include "redis_conn.h"
#include "source.h"

#define EDGE_BLOCK_MS 1000            /* XREAD BLOCK: an idle stream answers this often */
/* no answer for this long drops the connection (a silent primary, its host cut off: Sentinel
 * fails over); a blocked read answers within EDGE_BLOCK_MS */
#define EDGE_REPLY_TIMEOUT_MS (EDGE_BLOCK_MS + 2000)
#define EDGE_CONNECT_TIMEOUT_MS 2000
#define EDGE_BACKOFF_MIN_MS 100
#define EDGE_BACKOFF_MAX_MS 5000
#define EDGE_ID_MAX 48                /* "<u64>-<u64>" */

typedef struct edge {
	loop *loop;
	const config *cfg;
	relcache *rels;     /* borrowed: seeded at start */
	txn_source_events ev;
	decoder *dec;
	redis_url url;
	redis_conn *conn;
	int64_t count;      /* [edge] read_count */

	bool started, stopped, failed;
	bool paused;
	bool reading;       /* a read is in flight */
	bool tailing;       /* the next read is XREAD BLOCK (else XRANGE) */
	bool aligned;       /* an entry with index 0 was read: what follows is whole transactions */
	bool in_txn;        /* between the decoder's begin and commit */
	bool caught_up;     /* a read came back short between transactions */
	uint64_t stream_last_ms; /* the stream's last id's LSN part, as the last XINFO said */
	uint64_t entries_read;
	uint64_t seen;      /* entries the stream ever held up to the last one read (trim_check) */
	bool seen_known;
	uint64_t after_ms, after_seq; /* the last id read (see the top) */
	uint64_t start_lsn;
	uint64_t received_lsn;  /* the lsn field of the last entry read */
	uint64_t confirmed_lsn;
	uint64_t decode_errors;
	int resume_timer;
} edge;

static void read_next(edge *e);

static void edge_fail(edge *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A permanent problem: no more reads, failed_cb. */
static void edge_fail(edge *e, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	e->failed = true;
	log_error("edge.failed", "key=%s: %s", e->cfg->edge_stream_key, why);
	e->ev.failed_cb(e->ev.arg, why);
}

/* ---- the decoder's callbacks: the consumer's, with the transaction tracked ---------------- */

static int wrap_begin_cb(void *arg, const change_txn *txn)
{
	edge *e = arg;
	e->in_txn = true;
	return e->ev.sink.begin_cb(e->ev.sink.arg, txn);
}

static int wrap_change_cb(void *arg, change *c)
{
	edge *e = arg;
	return e->ev.sink.change_cb(e->ev.sink.arg, c);
}

static int wrap_commit_cb(void *arg, const change_txn *txn)
{
	edge *e = arg;
	e->in_txn = false;
	return e->ev.sink.commit_cb(e->ev.sink.arg, txn);
}

/* ---- entries ------------------------------------------------------------------------------ */

/* Parses "ms-seq". 0 or -EINVAL. */
static int id_parse(const char *s, uint64_t *ms, uint64_t *seq)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	*ms = strtoull(s, &end, 10);
	if (*end != '-' || end[1] < '0' || end[1] > '9')
		return -EINVAL;
	*seq = strtoull(end + 1, &end, 10);
	return *end == '\0' ? 0 : -EINVAL;
}

/* The value of field name in an entry's field list, or NULL. */
static const redisReply *field_get(const redisReply *fields, const char *name)
{
	for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i], *v = fields->element[i + 1];
		if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0 && v->type == REDIS_REPLY_STRING)
			return v;
	}
	return NULL;
}

/* Delivers one entry [id, [field, value, ...]]. 0; non-zero when reading stops here (the
 * source failed, or the consumer's callback stopped it). */
static int entry_take(edge *e, const redisReply *entry)
{
	uint64_t ms, seq, lsn;
	const redisReply *data = NULL, *lsn_field = NULL;
	bool ok = entry->type == REDIS_REPLY_ARRAY && entry->elements == 2 &&
	          entry->element[0]->type == REDIS_REPLY_STRING && id_parse(entry->element[0]->str, &ms, &seq) == 0;
	if (ok) {
		data = field_get(entry->element[1], "data");
		lsn_field = field_get(entry->element[1], "lsn");
	}
	if (!ok || data == NULL || lsn_field == NULL || lsn_parse(lsn_field->str, lsn_field->len, &lsn) < 0) {
		e->decode_errors++;
		edge_fail(e, "an entry after %" PRIu64 "-%" PRIu64 " is not one the redis_stream sink writes (an id, "
		          "fields lsn and data): walcast stops here", e->after_ms, e->after_seq);
		return -EPROTO;
	}
	const char *id = entry->element[0]->str;
	e->entries_read++;
	if (!e->aligned && seq != 0) {
		/* the stream was trimmed inside this transaction: its beginning is gone */
		log_debug("edge.skipped", "key=%s id=%s: the rest of a transaction whose beginning was trimmed",
		          e->cfg->edge_stream_key, id);
		e->after_ms = ms, e->after_seq = seq;
		return 0;
	}
	/* an entry of index > 0 is inside a transaction: it follows the one before it (the decoder
	 * announces a begin only with the first change, so its in_txn cannot tell) */
	if (e->aligned && seq != 0 && (ms != e->after_ms || seq != e->after_seq + 1)) {
		edge_fail(e, "entry %s follows %" PRIu64 "-%" PRIu64 " inside a transaction: entries between them are "
		          "missing (trimmed while this edge was behind?); walcast stops rather than deliver the "
		          "transaction incomplete", id, e->after_ms, e->after_seq);
		return -EPROTO;
	}
	e->aligned = true;
	char err[DECODER_ERROR_MAX] = "";
	int rc = decoder_decode(e->dec, lsn, (const uint8_t *)data->str, data->len, err);
	e->after_ms = ms, e->after_seq = seq;
	if (lsn > e->received_lsn)
		e->received_lsn = lsn;
	if (rc == -EPROTO) {
		e->decode_errors++;
		edge_fail(e, "cannot decode entry %s: %s; walcast stops here", id, err);
	} else if (rc == -ENOMEM) {
		edge_fail(e, "out of memory decoding entry %s", id);
	}
	return rc;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* The stream's state as XINFO STREAM gave it with a page (one instant: the same EXEC). */
typedef struct stream_info {
	bool known;           /* Redis 7.0 or later: entries-added and the first id are there */
	uint64_t trimmed;     /* entries-added - length: entries trimmed so far, a prefix */
	uint64_t length;
	uint64_t first_ms, first_seq; /* the first entry's id */
} stream_info;

/* XINFO STREAM's reply (an error in EXEC's array when there is no key yet: nothing known). */
static stream_info info_parse(edge *e, const redisReply *info)
{
	stream_info si = {0};
	uint64_t ms, seq;
	if (info == NULL || info->type != REDIS_REPLY_ARRAY)
		return si;
	const redisReply *last = field_get(info, "last-generated-id");
	if (last != NULL && id_parse(last->str, &ms, &seq) == 0)
		e->stream_last_ms = ms;
	const redisReply *first = field_get(info, "recorded-first-entry-id");
	long long added = -1, length = -1;
	for (size_t i = 0; i + 1 < info->elements; i += 2) {
		const redisReply *k = info->element[i], *v = info->element[i + 1];
		if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_INTEGER && strcmp(k->str, "entries-added") == 0)
			added = v->integer;
		else if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_INTEGER && strcmp(k->str, "length") == 0)
			length = v->integer;
	}
	if (first == NULL || id_parse(first->str, &si.first_ms, &si.first_seq) < 0 || added < length || length < 0)
		return si; /* Redis before 7.0: no check */
	si.known = true;
	si.trimmed = (uint64_t)(added - length);
	si.length = (uint64_t)length;
	return si;
}

/* The trim check before a page is delivered (see edge_source.h). Trimming removes a prefix, so
 * entries this edge never read are gone exactly when more entries were trimmed than it has read
 * (`seen`: how many entries the stream ever held up to the last one read, once known), or —
 * before that count is known — when anything was trimmed and the stream's first entry lies past
 * the next id this edge needs (it cannot tell whether entries lay between: it assumes so). 0, or
 * -EPIPE (failed). */
static int trim_check(edge *e, const stream_info *si)
{
	if (!si->known)
		return 0;
	/* the next id needed: right after the last one read (at the start, P-0 itself) */
	uint64_t need_ms = e->after_ms, need_seq = e->after_seq + 1;
	if (e->after_seq == UINT64_MAX)
		need_ms++, need_seq = 0;
	else if (e->entries_read == 0 && e->after_ms == 0 && e->after_seq == 0)
		need_seq = 0;
	bool lost = e->seen_known ? si->trimmed > e->seen
	                          : si->trimmed > 0 && (si->first_ms > need_ms ||
	                                                (si->first_ms == need_ms && si->first_seq > need_seq));
	if (!lost)
		return 0;
	edge_fail(e, "the stream was trimmed past what this edge had read (up to %" PRIu64 "-%" PRIu64 "; it now "
	          "starts at %" PRIu64 "-%" PRIu64 "): transactions it never read are gone, the window is shorter than "
	          "this edge is behind; walcast stops rather than deliver the stream without them", e->after_ms,
	          e->after_seq, si->first_ms, si->first_seq);
	return -EPIPE;
}

/* After a page of n entries of which taken were taken: how many entries the stream ever held up
 * to the last one taken — exact when the page began at the stream's first entry (global index
 * trimmed + 1) or ended at its end (trimmed + length), else carried on from the last count. */
static void seen_update(edge *e, const stream_info *si, bool first, bool at_end, size_t n, size_t taken)
{
	if (!si->known) {
		e->seen_known = false;
		return;
	}
	if (first)
		e->seen = si->trimmed + taken, e->seen_known = true;
	else if (at_end)
		e->seen = si->trimmed + si->length - (n - taken), e->seen_known = true;
	else if (e->seen_known)
		e->seen += taken;
}

/* The stream's end reached between transactions: caught up (idle_cb). */
static void at_end(edge *e)
{
	if (e->in_txn)
		return;
	if (!e->caught_up)
		log_info("edge.caught_up", "key=%s at=%" PRIu64 "-%" PRIu64 ": read up to the stream's end",
		         e->cfg->edge_stream_key, e->after_ms, e->after_seq);
	e->caught_up = true;
	if (e->stream_last_ms < e->after_ms)
		e->stream_last_ms = e->after_ms;
	if (e->ev.idle_cb != NULL)
		e->ev.idle_cb(e->ev.arg, e->received_lsn);
}

/* EXEC's reply: [XRANGE's entries, XINFO STREAM's fields]. */
static void read_reply_cb(redis_conn *c, void *r, void *privdata)
{
	edge *e = privdata;
	const redisReply *reply = r;
	(void)c;
	e->reading = false;
	if (reply == NULL || e->stopped || e->failed)
		return; /* the connection went down (the same read leaves again once it is up), or stopped */
	const redisReply *entries = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 ? reply->element[0] : NULL;
	if (entries == NULL || entries->type != REDIS_REPLY_ARRAY) {
		const char *why = entries != NULL && entries->type == REDIS_REPLY_ERROR ? entries->str
		                  : reply->type == REDIS_REPLY_ERROR                    ? reply->str
		                                                                        : "an unexpected reply";
		if (strncmp(why, "WRONGTYPE", 9) == 0) {
			edge_fail(e, "the key holds something else than a stream");
			return;
		}
		log_error("edge.read_failed", "key=%s: %s; reading again after a reconnect", e->cfg->edge_stream_key, why);
		redis_conn_reset(e->conn, "a read failed");
		return;
	}
	stream_info si = info_parse(e, reply->element[1]);
	if (trim_check(e, &si) < 0)
		return;
	size_t n = entries->elements, i;
	uint64_t ms = 0, seq = 0;
	bool first = n > 0 && entries->element[0]->type == REDIS_REPLY_ARRAY && entries->element[0]->elements == 2 &&
	             entries->element[0]->element[0]->type == REDIS_REPLY_STRING &&
	             id_parse(entries->element[0]->element[0]->str, &ms, &seq) == 0 && ms == si.first_ms &&
	             seq == si.first_seq;
	int rc = 0;
	/* paused from a callback: the rest of the page is read again after the resume */
	for (i = 0; i < n && rc == 0 && !e->paused; i++)
		rc = entry_take(e, entries->element[i]);
	seen_update(e, &si, first, n < (size_t)e->count, n, i);
	if (e->ev.batch_end_cb != NULL)
		e->ev.batch_end_cb(e->ev.arg);
	if (rc != 0)
		return; /* failed, or the consumer stopped reading */
	e->tailing = i == n && n < (size_t)e->count;
	if (e->tailing)
		at_end(e);
	read_next(e);
}

/* The wake-up XREAD's reply: nil after the block time (idle), or an entry after the last id read:
 * read it (and what follows) with the next MULTI read. */
static void wake_reply_cb(redis_conn *c, void *r, void *privdata)
{
	edge *e = privdata;
	const redisReply *reply = r;
	(void)c;
	e->reading = false;
	if (reply == NULL || e->stopped || e->failed)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_error("edge.read_failed", "key=%s: %s; reading again after a reconnect", e->cfg->edge_stream_key,
		          reply->str);
		redis_conn_reset(e->conn, "a read failed");
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
		e->tailing = false;
	else
		at_end(e);
	read_next(e);
}

/* A reply of MULTI or a queued command: EXEC's says how it went. */
static void queued_reply_cb(redis_conn *c, void *r, void *privdata)
{
	(void)c, (void)r, (void)privdata;
}

/* Sends the next read unless one is in flight or reading is paused, stopped or failed: while
 * behind, MULTI; XRANGE key (<after> + COUNT n; XINFO STREAM key; EXEC — the entries and the
 * trim state of one instant; at the end, XREAD COUNT 1 BLOCK, a wake-up only (XREAD cannot block
 * inside MULTI). */
static void read_next(edge *e)
{
	if (e->reading || e->paused || e->stopped || e->failed || e->conn == NULL || !redis_conn_up(e->conn))
		return;
	char count[24], after[EDGE_ID_MAX], block[24];
	snprintf(count, sizeof(count), "%" PRId64, e->count);
	snprintf(after, sizeof(after), "%s%" PRIu64 "-%" PRIu64, e->tailing ? "" : "(", e->after_ms, e->after_seq);
	snprintf(block, sizeof(block), "%d", EDGE_BLOCK_MS);
	const char *key = e->cfg->edge_stream_key;
	const char *xread[] = {"XREAD", "COUNT", "1", "BLOCK", block, "STREAMS", key, after};
	const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
	const char *xrange[] = {"XRANGE", key, after, "+", "COUNT", count};
	const char *xinfo[] = {"XINFO", "STREAM", key};
	struct {
		const char **argv;
		int argc;
		redis_conn_reply_cb cb;
	} cmds[4] = {{xread, 8, wake_reply_cb}};
	int ncmds = 1;
	if (!e->tailing) {
		cmds[0].argv = multi, cmds[0].argc = 1, cmds[0].cb = queued_reply_cb;
		cmds[1].argv = xrange, cmds[1].argc = 6, cmds[1].cb = queued_reply_cb;
		cmds[2].argv = xinfo, cmds[2].argc = 3, cmds[2].cb = queued_reply_cb;
		cmds[3].argv = exec, cmds[3].argc = 1, cmds[3].cb = read_reply_cb;
		ncmds = 4;
	}
	int rc = 0;
	for (int k = 0; k < ncmds && rc == 0; k++) {
		size_t argvlen[8];
		for (int i = 0; i < cmds[k].argc; i++)
			argvlen[i] = strlen(cmds[k].argv[i]);
		rc = redis_conn_command(e->conn, cmds[k].cb, e, cmds[k].argc, cmds[k].argv, argvlen);
	}
	if (rc == 0)
		e->reading = true;
	else if (rc != -ENOTCONN)
		redis_conn_reset(e->conn, "cannot queue a read");
}

static void conn_up_cb(void *arg)
{
	edge *e = arg;
	log_info("edge.streaming", "key=%s after=%" PRIu64 "-%" PRIu64 ": reading the change stream",
	         e->cfg->edge_stream_key, e->after_ms, e->after_seq);
	if (e->ev.streaming_cb != NULL)
		e->ev.streaming_cb(e->ev.arg, e->received_lsn > e->start_lsn ? e->received_lsn : e->start_lsn);
	read_next(e);
}

static void conn_down_cb(void *arg, const char *why)
{
	edge *e = arg;
	e->reading = false;
	log_warn("edge.disconnected", "key=%s: %s; reconnecting", e->cfg->edge_stream_key, why);
}

static void resume_timer_cb(loop *l, int id, void *arg)
{
	edge *e = arg;
	(void)l, (void)id;
	e->resume_timer = 0;
	read_next(e);
}

/* ---- txn_source_ops ----------------------------------------------------------------------- */

static void edge_destroy(void *impl);

static int edge_create(loop *l, const config *cfg, relcache *rels, const txn_source_events *events, void **out,
                       char err[TXN_SOURCE_ERROR_MAX])
{
	edge *e = calloc(1, sizeof(*e));
	int rc = e != NULL ? 0 : -ENOMEM;
	if (rc < 0)
		goto fail;
	e->loop = l;
	e->cfg = cfg;
	e->rels = rels;
	e->ev = *events;
	e->count = cfg->edge_read_count;
	char uerr[REDIS_CONN_ERROR_MAX];
	if ((rc = redis_url_parse(cfg->edge_stream_url, &e->url, uerr)) < 0) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "edge.stream_url: %s", uerr);
		goto fail;
	}
	decoder_params p = {.relations = rels, .sink = {wrap_begin_cb, wrap_change_cb, wrap_commit_cb, e}};
	if ((rc = decoder_create(decoder_ops_find("wal2json"), &p, &e->dec)) < 0) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "cannot create the wal2json decoder: %s", strerror(-rc));
		goto fail;
	}
	*out = e;
	return 0;
fail:
	if (rc == -ENOMEM)
		snprintf(err, TXN_SOURCE_ERROR_MAX, "out of memory");
	edge_destroy(e);
	return rc;
}

int edge_source_relations_seed(void *impl)
{
	edge *e = impl;
	static const char *const keys[] = {"connect_timeout", "fallback_application_name", "options", "dbname",
	                                   "replication", NULL};
	const char *vals[] = {"10", "walcast-edge", "-c statement_timeout=30000 -c default_transaction_read_only=on",
	                      e->cfg->conninfo, "false", NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	PGresult *res = NULL;
	int rc = -EIO, seeded = 0;
	if (conn == NULL) {
		rc = -ENOMEM;
	} else if (PQstatus(conn) != CONNECTION_OK) {
		log_error("edge.relations", "cannot connect to PostgreSQL for the table descriptions: %s",
		          PQerrorMessage(conn));
	} else if (PQresultStatus(res = PQexec(conn, source_relations_sql)) != PGRES_TUPLES_OK) {
		log_error("edge.relations", "cannot read the table descriptions: %s", PQerrorMessage(conn));
	} else if ((rc = source_relations_seed(e->rels, res, &seeded)) == 0) {
		log_info("edge.relations", "the relation cache seeded from the catalog: %d tables", seeded);
	}
	PQclear(res);
	PQfinish(conn);
	return rc;
}

/* XINFO STREAM's first and last ids' LSN parts; 0 when the stream is empty or missing. */
static int window_ends(redisContext *rc, const char *key, uint64_t *first, uint64_t *last,
                       char err[TXN_SOURCE_ERROR_MAX])
{
	uint64_t seq;
	*first = *last = 0;
	redisReply *r = redisCommand(rc, "XINFO STREAM %s", key);
	int ret = 0;
	if (r == NULL) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "XINFO STREAM: %s", rc->errstr);
		ret = -EIO;
	} else if (r->type == REDIS_REPLY_ERROR) {
		if (strstr(r->str, "no such key") == NULL) {
			snprintf(err, TXN_SOURCE_ERROR_MAX, "XINFO STREAM: %s", r->str);
			ret = -EIO;
		}
	} else if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i + 1 < r->elements; i += 2) {
			const redisReply *k = r->element[i], *v = r->element[i + 1];
			if (k->type != REDIS_REPLY_STRING)
				continue;
			if (strcmp(k->str, "first-entry") == 0 && v->type == REDIS_REPLY_ARRAY && v->elements == 2 &&
			    v->element[0]->type == REDIS_REPLY_STRING)
				(void)id_parse(v->element[0]->str, first, &seq);
			else if (strcmp(k->str, "last-entry") == 0 && v->type == REDIS_REPLY_ARRAY && v->elements == 2 &&
			         v->element[0]->type == REDIS_REPLY_STRING)
				(void)id_parse(v->element[0]->str, last, &seq);
		}
	}
	freeReplyObject(r);
	return ret;
}

int edge_source_window_start(const config *cfg, uint64_t *from, char err[TXN_SOURCE_ERROR_MAX])
{
	char uerr[REDIS_CONN_ERROR_MAX];
	redis_url url;
	*from = 0;
	if (redis_url_parse(cfg->edge_stream_url, &url, uerr) < 0) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "edge.stream_url: %s", uerr);
		return -EINVAL;
	}
	redisContext *rc = redis_connect_blocking(&url, EDGE_CONNECT_TIMEOUT_MS, uerr);
	if (rc == NULL) {
		snprintf(err, TXN_SOURCE_ERROR_MAX, "%s", uerr);
		return -EIO;
	}
	uint64_t first, last, seq;
	int ret = window_ends(rc, cfg->edge_stream_key, &first, &last, err);
	if (ret == 0 && last > first) {
		/* the newest three quarters: the oldest quarter may be trimmed before the first read */
		uint64_t x = first + (last - first) / 4;
		redisReply *r = redisCommand(rc, "XRANGE %s %" PRIu64 "-0 + COUNT 1", cfg->edge_stream_key, x);
		if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
			snprintf(err, TXN_SOURCE_ERROR_MAX, "XRANGE: %s",
			         r == NULL ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
			ret = -EIO;
		} else if (r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
		           r->element[0]->element[0]->type == REDIS_REPLY_STRING) {
			(void)id_parse(r->element[0]->element[0]->str, from, &seq);
		}
		freeReplyObject(r);
	}
	redisFree(rc);
	return ret;
}

static int edge_start(void *impl, uint64_t resume_lsn)
{
	edge *e = impl;
	if (e->started)
		return -EALREADY;
	e->started = true;
	e->start_lsn = resume_lsn;
	/* the id just before resume_lsn-0: every read is "after" it */
	e->after_ms = resume_lsn > 0 ? resume_lsn - 1 : 0;
	e->after_seq = resume_lsn > 0 ? UINT64_MAX : 0;
	if (resume_lsn > e->confirmed_lsn)
		e->confirmed_lsn = resume_lsn;
	redis_conn_cbs cbs = {.up = conn_up_cb, .down = conn_down_cb, .arg = e};
	int rc = redis_conn_create(e->loop, "edge", &e->url, EDGE_CONNECT_TIMEOUT_MS, EDGE_BACKOFF_MIN_MS,
	                           EDGE_BACKOFF_MAX_MS, &cbs, &e->conn);
	if (rc == 0)
		rc = redis_conn_set_reply_timeout(e->conn, EDGE_REPLY_TIMEOUT_MS);
	if (rc == 0) {
		char a[LSN_TEXT_MAX];
		log_info("edge.start", "redis=%s:%d db=%d key=%s resume=%s", e->url.host, e->url.port, e->url.db,
		         e->cfg->edge_stream_key, lsn_format(resume_lsn, a));
	}
	return rc;
}

static void edge_pause(void *impl)
{
	edge *e = impl;
	e->paused = true;
	if (e->resume_timer > 0)
		loop_timer_cancel(e->loop, e->resume_timer);
	e->resume_timer = 0;
}

static void edge_resume(void *impl)
{
	edge *e = impl;
	if (!e->paused)
		return;
	e->paused = false;
	if (e->resume_timer == 0) {
		int t = loop_timer_add(e->loop, 0, resume_timer_cb, e);
		e->resume_timer = t > 0 ? t : 0;
	}
}

/* Nothing to tell upstream: an edge holds no slot. */
static void edge_stop(void *impl)
{
	edge *e = impl;
	e->stopped = true;
	edge_pause(e);
	redis_conn_destroy(e->conn); /* the read in flight is answered with NULL */
	e->conn = NULL;
}

static void edge_destroy(void *impl)
{
	edge *e = impl;
	if (e == NULL)
		return;
	edge_stop(e);
	decoder_destroy(e->dec);
	free(e);
}

static void edge_confirm(void *impl, uint64_t lsn)
{
	edge *e = impl;
	if (lsn > e->confirmed_lsn)
		e->confirmed_lsn = lsn;
}

static bool edge_streaming(const void *impl)
{
	const edge *e = impl;
	return e->started && !e->stopped && !e->failed && e->conn != NULL && redis_conn_up(e->conn);
}

static uint64_t edge_decode_errors(const void *impl)
{
	return ((const edge *)impl)->decode_errors;
}

static uint64_t edge_received_lsn(const void *impl)
{
	return ((const edge *)impl)->received_lsn;
}

static uint64_t edge_confirmed_lsn(const void *impl)
{
	return ((const edge *)impl)->confirmed_lsn;
}

void edge_source_stats_get(const void *impl, edge_source_stats *out)
{
	const edge *e = impl;
	*out = (edge_source_stats){
		.entries_read = e->entries_read, .stream_last_lsn = e->stream_last_ms, .read_lsn = e->after_ms,
		.caught_up = e->caught_up, .streaming = edge_streaming(e),
	};
}

const txn_source_ops edge_source_ops = {
	.create = edge_create,
	.destroy = edge_destroy,
	.start = edge_start,
	.stop = edge_stop,
	.confirm = edge_confirm,
	.pause = edge_pause,
	.resume = edge_resume,
	.streaming = edge_streaming,
	.decode_errors = edge_decode_errors,
	.received_lsn = edge_received_lsn,
	.confirmed_lsn = edge_confirmed_lsn,
};
