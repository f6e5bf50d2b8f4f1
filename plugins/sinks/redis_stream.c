/*
 * redis_stream — the change stream published to a Redis Stream (see redis_stream.h; docs/edges.md).
 *
 * State. Entries are appended to one queue as the transactions are offered: a header (the id
 * ms-seq, the lsn field, for a "C" entry the transaction's end LSN) and the wal2json line.
 * Three offsets say where they are:
 *
 *   head        the first entry Redis has not acknowledged
 *   round_end   the end of the round in flight (one EVAL of the script below)
 *   committed   the end of the complete transactions (and non-transactional messages) taken;
 *               what follows is the transaction being offered (cut back by abort())
 *
 * One round at a time, as the aggregates sink does: a round takes the committed entries from
 * head, at most round_bytes of them (a large transaction spans several rounds), and sends them
 * in one script; when it answers, head moves to round_end, position() to the end LSN of the last
 * "C" entry of the round, and the next round leaves at once if anything is committed. A round
 * whose reply is lost (the connection dropped, no answer within command_timeout, an error) is
 * sent again after the reconnect, unchanged: the script skips every id at or below the stream's
 * last id, so what had landed is not written twice, and since rounds leave in order and a
 * script stops at its first failing XADD, the stream never has a gap below its last id.
 *
 * Start. position() is 0 until Redis answers; on the first connection the stream's last entry
 * is read: a "C" entry gives its transaction's end LSN, any other (a transaction cut short by a
 * crash between two rounds, a message) its id's LSN, which makes the pipeline stream that
 * transaction again (the script skips its entries already written).
 */
#include "redis_stream.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "lsn.h"
#include "redis_conn.h"

#define KEY(nm, ty, field, def, lo, hi, hlp) \
	{"sink", nm, ty, offsetof(redis_stream_conf, field), def, lo, hi, false, hlp}

static const config_key stream_keys[] = {
	KEY("url", CONFIG_STRING, url, "redis://127.0.0.1:6379/0", 0, 0,
	    "the Redis server: redis://[[user]:password@]host[:port][/db], or redis+sentinel://SENTINEL[,...]/MASTER[/db]"),
	KEY("key", CONFIG_STRING, key, "walcast:changes", 0, 0, "the stream's key"),
	KEY("window", CONFIG_INT, window, "100000", 0, INT64_C(1) << 40,
	    "entries kept in the stream (XTRIM MAXLEN ~, after every round); 0: no limit"),
	KEY("window_wal", CONFIG_SIZE, window_wal, "0", 0, INT64_C(1) << 50,
	    "entries kept by LSN: those whose commit LSN is at most this many bytes of WAL behind the "
	    "newest commit (XTRIM MINID ~); 0: off"),
	KEY("round_bytes", CONFIG_SIZE, round_bytes, "1MB", 4096, INT64_C(1) << 30,
	    "the most entry bytes one round (one script call) carries"),
	KEY("flush_interval", CONFIG_DURATION, flush_interval_ms, "1ms", 1, 60000,
	    "a committed transaction is sent to Redis at most this long after it was taken"),
	KEY("connect_timeout", CONFIG_DURATION, connect_timeout_ms, "2s", 10, 600000,
	    "how long one connect attempt may take"),
	KEY("command_timeout", CONFIG_DURATION, command_timeout_ms, "10s", 10, 3600000,
	    "no reply for this long while commands wait drops the connection (reconnect, send again); "
	    "a round older than this makes /readyz unready"),
	KEY("reconnect_max", CONFIG_DURATION, reconnect_max_ms, "5s", 10, 600000,
	    "the longest wait between reconnect attempts (from 100ms, doubling)"),
	KEY("wait_replicas", CONFIG_INT, wait_replicas, "0", 0, 16,
	    "a round is confirmed only once this many replicas acknowledged it (WAIT); 0: once the primary did"),
	KEY("wait_timeout", CONFIG_DURATION, wait_timeout_ms, "1s", 1, 600000,
	    "how long one WAIT blocks; fewer acknowledgements: WAIT again, nothing confirmed meanwhile"),
};

#define NKEYS (sizeof(stream_keys) / sizeof(stream_keys[0]))
#define ROUND_MAX_ENTRIES 10000

/* KEYS[1] the stream; ARGV: maxlen (0: none), minid ("": none), then (id, lsn, line) per entry.
 * An id at or below the stream's last id is skipped (a replay); any other error stops the
 * script there and is returned. Answers {added, skipped}. */
static const char stream_script[] =
	"local added, skipped = 0, 0\n"
	"for i = 3, #ARGV, 3 do\n"
	"  local r = redis.pcall('XADD', KEYS[1], ARGV[i], 'lsn', ARGV[i + 1], 'data', ARGV[i + 2])\n"
	"  if type(r) == 'table' and r.err then\n"
	"    if not string.find(r.err, 'equal or smaller', 1, true) then return r end\n"
	"    skipped = skipped + 1\n"
	"  else\n"
	"    added = added + 1\n"
	"  end\n"
	"end\n"
	"if ARGV[1] ~= '0' then redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1]) end\n"
	"if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2]) end\n"
	"return {added, skipped}\n";

/* ---- the entry format ------------------------------------------------------------------- */

enum {
	OID_BOOL = 16,
	OID_BYTEA = 17,
	OID_INT8 = 20,
	OID_INT2 = 21,
	OID_INT4 = 23,
	OID_OID = 26,
	OID_FLOAT4 = 700,
	OID_FLOAT8 = 701,
	OID_NUMERIC = 1700,
};

/* One value as wal2json types it (see redis_stream_change_write). */
static int value_write(buf *out, uint32_t type, const change_value *v)
{
	if (v->kind != VALUE_TEXT)
		return buf_puts(out, "null");
	switch (type) {
	case OID_BOOL:
		if (v->len == 1 && (v->data[0] == 't' || v->data[0] == 'f'))
			return buf_puts(out, v->data[0] == 't' ? "true" : "false");
		break;
	case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID: case OID_FLOAT4: case OID_FLOAT8:
	case OID_NUMERIC:
		if (change_json_number(v->data, v->len))
			return buf_append(out, v->data, v->len);
		break; /* NaN, Infinity: a string, which the decoder takes as the text it is */
	case OID_BYTEA:
		/* wal2json leaves out the \x of the hex output; the decoder puts it back */
		if (v->len >= 2 && v->data[0] == '\\' && v->data[1] == 'x')
			return buf_json_string(out, v->data + 2, v->len - 2);
		break;
	default:
		break;
	}
	return buf_json_string(out, v->data, v->len);
}

/* ,"KEY":[{"name":..,"typeoid":..[,"value":..]}...] for the columns of t that it carries (every
 * key column of rel when t is NULL). */
static int columns_write(buf *out, const char *key, const relation *rel, const change_value *t)
{
	int rc = buf_printf(out, ",\"%s\":[", key);
	bool any = false;
	for (int i = 0; i < rel->ncols && rc == 0; i++) {
		if (t == NULL ? !rel->cols[i].key : (t[i].kind == VALUE_ABSENT || t[i].kind == VALUE_UNCHANGED))
			continue;
		rc = buf_puts(out, any ? ",{\"name\":" : "{\"name\":");
		if (rc == 0)
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
		if (rc == 0)
			rc = buf_puts(out, ",\"typeoid\":");
		if (rc == 0)
			rc = buf_put_u64(out, rel->cols[i].type_oid);
		if (rc == 0 && t != NULL) {
			rc = buf_puts(out, ",\"value\":");
			if (rc == 0)
				rc = value_write(out, rel->cols[i].type_oid, &t[i]);
		}
		if (rc == 0)
			rc = buf_putc(out, '}');
		any = true;
	}
	return rc == 0 ? buf_putc(out, ']') : rc;
}

/* PostgreSQL's timestamptz output in UTC with microseconds: "2026-12-02 10:00:00.123456+00". */
static int timestamp_write(buf *out, int64_t unix_us)
{
	int64_t secs = unix_us / 1000000, us = unix_us % 1000000;
	if (us < 0) {
		us += 1000000;
		secs--;
	}
	time_t t = (time_t)secs;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL)
		return -EINVAL;
	return buf_printf(out, "\"%04d-%02d-%02d %02d:%02d:%02d.%06d+00\"", tm.tm_year + 1900, tm.tm_mon + 1,
	                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us);
}

static int txn_line_write(buf *out, char action, const change_txn *txn)
{
	char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
	int rc = buf_printf(out, "{\"action\":\"%c\",\"xid\":%" PRIu32 ",\"timestamp\":", action, txn->xid);
	if (rc == 0)
		rc = timestamp_write(out, txn->commit_time);
	if (rc == 0)
		rc = buf_printf(out, ",\"lsn\":\"%s\",\"nextlsn\":\"%s\"}", lsn_format(txn->commit_lsn, a),
		                lsn_format(txn->end_lsn, b));
	return rc;
}

int redis_stream_begin_write(buf *out, const change_txn *txn)
{
	return txn_line_write(out, 'B', txn);
}

int redis_stream_commit_write(buf *out, const change_txn *txn)
{
	return txn_line_write(out, 'C', txn);
}

/* A message's bytes as a JSON string the decoder accepts: NUL (which PostgreSQL text cannot
 * hold) becomes U+FFFD, as buf_json_string does with bytes that are not UTF-8. */
static int content_write(buf *out, const char *s, size_t n)
{
	if (memchr(s, '\0', n) == NULL)
		return buf_json_string(out, s, n);
	char *copy = malloc(n ? n : 1);
	if (copy == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		copy[i] = s[i] == '\0' ? (char)0xFF : s[i]; /* not UTF-8: written as U+FFFD */
	int rc = buf_json_string(out, copy, n);
	free(copy);
	return rc;
}

int redis_stream_change_write(buf *out, const change *c)
{
	static const char actions[] = {[CHANGE_INSERT] = 'I', [CHANGE_UPDATE] = 'U', [CHANGE_DELETE] = 'D',
	                               [CHANGE_TRUNCATE] = 'T', [CHANGE_MESSAGE] = 'M'};
	if (c->action < CHANGE_INSERT || c->action > CHANGE_MESSAGE)
		return -EINVAL;
	if (c->action != CHANGE_MESSAGE && c->rel == NULL)
		return -EINVAL;
	char lsn[LSN_TEXT_MAX];
	int rc = buf_puts(out, "{\"action\":\"");
	if (rc == 0)
		rc = buf_putc(out, actions[c->action]);
	if (rc == 0)
		rc = buf_putc(out, '"');
	if (rc == 0 && c->txn != NULL)
		rc = buf_puts(out, ",\"xid\":");
	if (rc == 0 && c->txn != NULL)
		rc = buf_put_u64(out, c->txn->xid);
	if (rc == 0)
		rc = buf_printf(out, ",\"lsn\":\"%s\"", lsn_format(c->lsn, lsn));
	if (rc == 0 && c->action == CHANGE_MESSAGE) {
		rc = buf_printf(out, ",\"transactional\":%s,\"prefix\":", c->transactional ? "true" : "false");
		if (rc == 0)
			rc = content_write(out, c->prefix ? c->prefix : "", c->prefix ? strlen(c->prefix) : 0);
		if (rc == 0)
			rc = buf_puts(out, ",\"content\":");
		if (rc == 0)
			rc = content_write(out, c->content ? c->content : "", c->content ? c->content_len : 0);
		return rc == 0 ? buf_putc(out, '}') : rc;
	}
	if (rc == 0)
		rc = buf_puts(out, ",\"schema\":");
	if (rc == 0)
		rc = buf_json_string(out, c->rel->schema, strlen(c->rel->schema));
	if (rc == 0)
		rc = buf_puts(out, ",\"table\":");
	if (rc == 0)
		rc = buf_json_string(out, c->rel->name, strlen(c->rel->name));
	if (rc == 0 && c->action != CHANGE_TRUNCATE) {
		if (c->action != CHANGE_DELETE && c->new_tuple != NULL)
			rc = columns_write(out, "columns", c->rel, c->new_tuple);
		if (rc == 0 && c->action == CHANGE_DELETE && c->old_tuple == NULL)
			rc = buf_puts(out, ",\"identity\":[]");
		else if (rc == 0 && c->action != CHANGE_INSERT && c->old_tuple != NULL)
			rc = columns_write(out, "identity", c->rel, c->old_tuple);
		if (rc == 0)
			rc = columns_write(out, "pk", c->rel, NULL);
	}
	return rc == 0 ? buf_putc(out, '}') : rc;
}

/* ---- the sink --------------------------------------------------------------------------- */

/* An entry in the queue, followed by its len bytes of line. */
typedef struct entry_hdr {
	uint64_t ms, seq;  /* the id */
	uint64_t lsn;      /* the lsn field */
	uint64_t end_lsn;  /* a "C" entry: its transaction's end LSN; else 0 */
	uint64_t len;
} entry_hdr;

typedef struct rstream {
	sink_env env;
	char *key;
	redis_url url;
	redis_conn *conn;
	audience_sub *sub;
	int64_t window, window_wal, round_bytes, flush_interval_ms, command_timeout_ms;

	buf q;              /* the entries (entry_hdr + line), oldest first */
	size_t head, round_end, committed;
	size_t round_n;     /* entries in the round */
	uint64_t round_commit_end, round_commit_lsn; /* its last "C": end LSN, commit LSN */
	bool round_active;  /* [head, round_end) is a round not yet accepted */
	bool outstanding;   /* its reply (the script's, then WAIT's) is awaited */
	redis_wait wait;    /* wait_replicas, wait_timeout */
	int64_t round_start_ms;

	uint64_t position;
	bool top_known;     /* the stream's last entry was read */
	bool txn_skip;      /* the transaction offered is in the stream already (position) */
	const change_txn *txn;
	uint64_t seq;       /* the transaction's next entry number */
	size_t txn_at;      /* where its "B" entry is in the queue */
	uint64_t txn_end;   /* the end LSN its "B" line says */

	int flush_timer;
	int err;
	bool destroying;
	buf args;
	const char **argv;
	size_t *argvlen;
	size_t argcap;

	sink_metrics metrics;
	metrics_counter *m_entries, *m_skipped, *m_rounds;
} rstream;

static void maybe_send(rstream *s);

static void fail_fatal(rstream *s, int rc, const char *why)
{
	if (s->err == 0) {
		s->err = rc;
		log_error("redis_stream.failed", "sink=%s key=%s: %s", s->env.name, s->key, why);
	}
}

static entry_hdr entry_at(const rstream *s, size_t off)
{
	entry_hdr h;
	memcpy(&h, s->q.data + off, sizeof(h));
	return h;
}

/* Appends one entry: txn's "B" (kind 'B') or "C" ('C'), or change c ('X'). 0, or a fatal error
 * (the queue is unchanged). */
static int entry_add(rstream *s, char kind, uint64_t ms, uint64_t seq, uint64_t lsn, const change_txn *txn,
                     const change *c)
{
	size_t at = s->q.len;
	entry_hdr h = {.ms = ms, .seq = seq, .lsn = lsn, .end_lsn = kind == 'C' ? txn->end_lsn : 0};
	int rc = buf_append(&s->q, &h, sizeof(h));
	if (rc == 0)
		rc = kind == 'X' ? redis_stream_change_write(&s->q, c)
		                 : kind == 'C' ? redis_stream_commit_write(&s->q, txn) : redis_stream_begin_write(&s->q, txn);
	if (rc < 0) {
		s->q.len = at;
		char why[128];
		snprintf(why, sizeof(why), "cannot write an entry: %s", strerror(-rc));
		fail_fatal(s, rc, why);
		return s->err;
	}
	h.len = s->q.len - at - sizeof(h);
	memcpy(s->q.data + at, &h, sizeof(h));
	return 0;
}

/* ---- rounds ----------------------------------------------------------------------------- */

static void round_reply_cb(redis_conn *c, void *r, void *privdata);

static int args_reserve(rstream *s, size_t n)
{
	if (n <= s->argcap)
		return 0;
	const char **a = realloc(s->argv, n * sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	s->argv = a;
	size_t *l = realloc(s->argvlen, n * sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	s->argvlen = l;
	s->argcap = n;
	return 0;
}

static void round_send(rstream *s)
{
	if (!s->round_active || s->outstanding || s->err != 0 || s->conn == NULL || !redis_conn_up(s->conn))
		return;
	size_t argc = 6 + 3 * s->round_n;
	int rc = args_reserve(s, argc);
	if (rc < 0) {
		fail_fatal(s, rc, "out of memory");
		return;
	}
	/* the ids, lsn fields, maxlen and minid as text first (s->args may move), then the pointers */
	buf_clear(&s->args);
	rc = buf_printf(&s->args, "%" PRId64 "%c", s->window, '\0');
	size_t minid_at = s->args.len;
	if (rc == 0 && s->window_wal > 0 && s->round_commit_lsn > (uint64_t)s->window_wal)
		rc = buf_printf(&s->args, "%" PRIu64 "-0", s->round_commit_lsn - (uint64_t)s->window_wal);
	if (rc == 0)
		rc = buf_putc(&s->args, '\0');
	for (size_t off = s->head; off < s->round_end && rc == 0;) {
		entry_hdr h = entry_at(s, off);
		char l[LSN_TEXT_MAX];
		const char *lsn = lsn_format(h.lsn, l);
		rc = buf_put_u64(&s->args, h.ms);
		if (rc == 0)
			rc = buf_putc(&s->args, '-');
		if (rc == 0)
			rc = buf_put_u64(&s->args, h.seq);
		if (rc == 0)
			rc = buf_putc(&s->args, '\0');
		if (rc == 0)
			rc = buf_append(&s->args, lsn, strlen(lsn) + 1); /* with its NUL */
		off += sizeof(h) + h.len;
	}
	if (rc < 0) {
		fail_fatal(s, rc, "out of memory");
		return;
	}
	const char *t = s->args.data;
	s->argv[0] = "EVAL", s->argvlen[0] = 4;
	s->argv[1] = stream_script, s->argvlen[1] = sizeof(stream_script) - 1;
	s->argv[2] = "1", s->argvlen[2] = 1;
	s->argv[3] = s->key, s->argvlen[3] = strlen(s->key);
	s->argv[4] = t, s->argvlen[4] = strlen(t);
	s->argv[5] = s->args.data + minid_at, s->argvlen[5] = strlen(s->argv[5]);
	t = s->args.data + minid_at + s->argvlen[5] + 1;
	size_t i = 6;
	for (size_t off = s->head; off < s->round_end; i += 3) {
		entry_hdr h = entry_at(s, off);
		s->argv[i] = t, s->argvlen[i] = strlen(t);
		t += s->argvlen[i] + 1;
		s->argv[i + 1] = t, s->argvlen[i + 1] = strlen(t);
		t += s->argvlen[i + 1] + 1;
		s->argv[i + 2] = s->q.data + off + sizeof(h), s->argvlen[i + 2] = (size_t)h.len;
		off += sizeof(h) + h.len;
	}
	rc = redis_conn_command(s->conn, round_reply_cb, s, (int)argc, s->argv, s->argvlen);
	if (rc < 0) {
		redis_conn_reset(s->conn, "cannot queue a round");
		return;
	}
	s->outstanding = true;
	if (s->m_rounds != NULL)
		metrics_counter_inc(s->m_rounds);
}

/* Drops what Redis holds from the queue's front once it is a large part of it. */
static void queue_compact(rstream *s)
{
	if (s->head == s->q.len) {
		s->q.len = s->head = s->round_end = s->committed = 0;
		return;
	}
	if (s->head < 1024 * 1024 || s->head < s->q.len / 2)
		return;
	memmove(s->q.data, s->q.data + s->head, s->q.len - s->head);
	s->q.len -= s->head;
	s->round_end -= s->head;
	s->committed -= s->head;
	s->head = 0;
}

static void round_accept(rstream *s)
{
	s->head = s->round_end;
	s->round_active = false;
	queue_compact(s);
	if (s->round_commit_end > s->position) {
		s->position = s->round_commit_end;
		if (s->env.progress != NULL)
			s->env.progress(s->env.env_arg);
	}
	maybe_send(s);
}

/* WAIT's answer after the round's script: accepted once enough replicas have it, else WAIT
 * again (nothing confirmed meanwhile); a lost connection sends the round again once it is back
 * (its entries are skipped then, and WAIT follows). */
static void wait_reply_cb(redis_conn *c, void *r, void *privdata)
{
	rstream *s = privdata;
	(void)c;
	if (s->destroying)
		return;
	s->outstanding = false;
	if (r == NULL)
		return;
	int ok = redis_wait_judge(&s->wait, r);
	if (ok == 1) {
		round_accept(s);
	} else if (ok < 0 || redis_wait_send(&s->wait, s->conn, wait_reply_cb, s) < 0) {
		redis_conn_reset(s->conn, ok < 0 ? "WAIT failed" : "cannot queue WAIT");
	} else {
		s->outstanding = true;
	}
}

static void round_reply_cb(redis_conn *c, void *r, void *privdata)
{
	rstream *s = privdata;
	redisReply *reply = r;
	if (s->destroying)
		return;
	s->outstanding = false;
	if (reply == NULL)
		return; /* the connection went down: sent again once it is back */
	if (reply->type == REDIS_REPLY_ERROR) {
		if (strncmp(reply->str, "WRONGTYPE", 9) == 0) {
			fail_fatal(s, -EINVAL, "the key holds something else than a stream");
			return;
		}
		log_error("redis_stream.round_failed", "sink=%s key=%s: %s; sending the round again after a reconnect",
		          s->env.name, s->key, reply->str);
		redis_conn_reset(s->conn, "a round failed");
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
		if (s->m_entries != NULL)
			metrics_counter_add(s->m_entries, (uint64_t)reply->element[0]->integer);
		if (s->m_skipped != NULL)
			metrics_counter_add(s->m_skipped, (uint64_t)reply->element[1]->integer);
		if (reply->element[1]->integer > 0)
			log_info("redis_stream.replayed", "sink=%s key=%s: %lld entries of the round were in the stream already "
			         "(skipped), %lld added", s->env.name, s->key, (long long)reply->element[1]->integer,
			         (long long)reply->element[0]->integer);
	}
	if (s->wait.replicas > 0) {
		/* confirmed once the replicas have it too */
		if (redis_wait_send(&s->wait, s->conn, wait_reply_cb, s) < 0) {
			redis_conn_reset(s->conn, "cannot queue WAIT");
			return;
		}
		s->outstanding = true;
		return;
	}
	round_accept(s);
}

/* Starts a round when none is in flight and committed entries wait. */
static void maybe_send(rstream *s)
{
	if (s->round_active || s->err != 0 || s->committed == s->head)
		return;
	if (s->flush_timer != 0) {
		loop_timer_cancel(s->env.loop, s->flush_timer);
		s->flush_timer = 0;
	}
	size_t off = s->head, n = 0;
	s->round_commit_end = 0;
	while (off < s->committed && n < ROUND_MAX_ENTRIES) {
		entry_hdr h = entry_at(s, off);
		size_t size = sizeof(h) + h.len;
		if (n > 0 && off + size - s->head > (size_t)s->round_bytes)
			break;
		if (h.end_lsn != 0) {
			s->round_commit_end = h.end_lsn;
			s->round_commit_lsn = h.ms;
		}
		off += size;
		n++;
	}
	s->round_end = off;
	s->round_n = n;
	s->round_active = true;
	s->round_start_ms = loop_now_ms();
	round_send(s);
}

static void flush_cb(loop *l, int id, void *arg)
{
	rstream *s = arg;
	s->flush_timer = 0;
	maybe_send(s);
}

/* Sends what was committed soon (flush_interval), or at once without a loop. */
static void send_soon(rstream *s)
{
	if (s->env.loop == NULL || s->round_active || s->flush_timer != 0)
		return;
	int id = loop_timer_add(s->env.loop, s->flush_interval_ms, flush_cb, s);
	if (id < 0) {
		maybe_send(s);
		return;
	}
	s->flush_timer = id;
}

/* ---- the connection --------------------------------------------------------------------- */

/* The position the stream's last entry vouches for (see the file comment). */
static uint64_t top_position(const redisReply *e)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING)
		return 0;
	uint64_t ms = strtoull(e->element[0]->str, NULL, 10);
	const redisReply *f = e->element[1];
	for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
		const redisReply *k = f->element[i], *v = f->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || strcmp(k->str, "data") != 0 || v->type != REDIS_REPLY_STRING)
			continue;
		static const char commit[] = "{\"action\":\"C\"", next[] = "\"nextlsn\":\"";
		const char *p = strncmp(v->str, commit, sizeof(commit) - 1) == 0 ? strstr(v->str, next) : NULL;
		uint64_t end;
		if (p != NULL) {
			p += sizeof(next) - 1;
			const char *q = strchr(p, '"');
			if (q != NULL && lsn_parse(p, (size_t)(q - p), &end) == 0)
				return end;
		}
	}
	return ms;
}

static void top_reply_cb(redis_conn *c, void *r, void *privdata)
{
	rstream *s = privdata;
	redisReply *reply = r;
	if (s->destroying || reply == NULL || s->top_known)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (strncmp(reply->str, "WRONGTYPE", 9) == 0)
			fail_fatal(s, -EINVAL, "the key holds something else than a stream");
		return;
	}
	s->top_known = true;
	uint64_t top = reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 ? top_position(reply->element[0]) : 0;
	char lsn[LSN_TEXT_MAX];
	log_info("redis_stream.start", "sink=%s key=%s position=%s: the stream's last entry read", s->env.name, s->key,
	         lsn_format(top, lsn));
	if (top > s->position) {
		s->position = top;
		if (s->env.progress != NULL)
			s->env.progress(s->env.env_arg);
	}
}

static void conn_up_cb(void *arg)
{
	rstream *s = arg;
	if (!s->top_known) {
		const char *argv[] = {"XREVRANGE", s->key, "+", "-", "COUNT", "1"};
		size_t argvlen[] = {9, strlen(s->key), 1, 1, 5, 1};
		if (redis_conn_command(s->conn, top_reply_cb, s, 6, argv, argvlen) < 0)
			return;
	}
	if (s->round_active)
		round_send(s);
	else
		maybe_send(s);
}

static void conn_down_cb(void *arg, const char *why)
{
	rstream *s = arg;
	s->outstanding = false; /* the round's reply callback ran with NULL: it waits for the reconnect */
}

/* ---- metrics ---------------------------------------------------------------------------- */

static int read_connected(void *arg, double *v)
{
	const rstream *s = arg;
	*v = s->conn != NULL && redis_conn_up(s->conn) ? 1 : 0;
	return 0;
}

static int metrics_setup(rstream *s)
{
	if (s->env.metrics == NULL)
		return 0;
	const metrics_desc descs[] = {
		{.kind = METRICS_COUNTER, .name = "walcast_redis_stream_entries_total",
		 .help = "Entries written to the stream (one per wal2json line)."},
		{.kind = METRICS_COUNTER, .name = "walcast_redis_stream_skipped_total",
		 .help = "Entries not written because the stream held their id already (replays after a restart)."},
		{.kind = METRICS_COUNTER, .name = "walcast_redis_stream_rounds_total",
		 .help = "Rounds sent to Redis (one script call each; a round sent again counts again)."},
		{.kind = METRICS_GAUGE, .name = "walcast_redis_stream_connected",
		 .help = "1 while the sink is connected to Redis."},
	};
	const char *id = "redis_stream.metrics";
	int rc = sink_metrics_add(&s->metrics, &s->env, id, &descs[0], &s->m_entries, NULL, NULL, NULL);
	if (rc == 0)
		rc = sink_metrics_add(&s->metrics, &s->env, id, &descs[1], &s->m_skipped, NULL, NULL, NULL);
	if (rc == 0)
		rc = sink_metrics_add(&s->metrics, &s->env, id, &descs[2], &s->m_rounds, NULL, NULL, NULL);
	if (rc == 0)
		rc = sink_metrics_add(&s->metrics, &s->env, id, &descs[3], NULL, NULL, read_connected, s);
	return rc;
}

/* ---- sink_ops ----------------------------------------------------------------------------- */

static void stream_destroy(void *impl);

static int stream_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	const redis_stream_conf *c = conf;
	rstream *s = calloc(1, sizeof(*s));
	int rc = s ? 0 : -ENOMEM;
	if (rc < 0)
		goto fail;
	s->env = *env;
	buf_init(&s->q);
	buf_init(&s->args);
	char uerr[REDIS_CONN_ERROR_MAX];
	if ((rc = redis_url_parse(c->url, &s->url, uerr)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "%s", uerr);
		goto fail;
	}
	if (c->key[0] == '\0') {
		snprintf(err, SINK_ERROR_MAX, "key is empty");
		rc = -EINVAL;
		goto fail;
	}
	if ((s->key = strdup(c->key)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	s->window = c->window;
	s->window_wal = c->window_wal;
	s->round_bytes = c->round_bytes;
	s->flush_interval_ms = c->flush_interval_ms;
	s->command_timeout_ms = c->command_timeout_ms;
	s->wait = (redis_wait){.name = env->name, .replicas = c->wait_replicas, .timeout_ms = c->wait_timeout_ms};
	if ((rc = redis_wait_check(&s->wait, c->command_timeout_ms, uerr)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "%s", uerr);
		goto fail;
	}
	if ((rc = metrics_setup(s)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "metrics: %s", strerror(-rc));
		goto fail;
	}
	if (env->loop != NULL) {
		redis_conn_cbs cbs = {.up = conn_up_cb, .down = conn_down_cb, .arg = s};
		if ((rc = redis_conn_create(env->loop, env->name, &s->url, c->connect_timeout_ms, 100, c->reconnect_max_ms,
		                            &cbs, &s->conn)) < 0)
			goto fail;
		if ((rc = redis_conn_set_reply_timeout(s->conn, c->command_timeout_ms)) < 0)
			goto fail;
	}
	if (env->subscribe == NULL) {
		snprintf(err, SINK_ERROR_MAX, "no audience to subscribe to");
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = env->subscribe(env->env_arg, s, NULL, true, false, &s->sub)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "cannot subscribe: %s", strerror(-rc));
		goto fail;
	}
	log_info("redis_stream.create", "sink=%s redis=%s:%d db=%d key=%s window=%" PRId64, env->name, s->url.host,
	         s->url.port, s->url.db, s->key, s->window);
	*out = s;
	return 0;
fail:
	if (rc == -ENOMEM && err[0] == '\0')
		snprintf(err, SINK_ERROR_MAX, "out of memory");
	stream_destroy(s);
	return rc;
}

static void stream_destroy(void *impl)
{
	rstream *s = impl;
	if (s == NULL)
		return;
	s->destroying = true;
	if (s->sub != NULL && s->env.unsubscribe != NULL)
		s->env.unsubscribe(s->env.env_arg, s->sub);
	if (s->flush_timer > 0)
		loop_timer_cancel(s->env.loop, s->flush_timer);
	redis_conn_destroy(s->conn);
	sink_metrics_remove(&s->metrics, &s->env);
	buf_fini(&s->q);
	buf_fini(&s->args);
	free(s->argv);
	free(s->argvlen);
	free(s->key);
	free(s);
}

/* Writes the "B" entry again with the end LSN known at the commit (pgoutput announces it only
 * there, and without a policy the sink is offered the transaction as it streams). */
static int begin_rewrite(rstream *s, const change_txn *txn)
{
	buf_clear(&s->args);
	entry_hdr h = entry_at(s, s->txn_at);
	int rc = redis_stream_begin_write(&s->args, txn);
	if (rc == 0 && s->args.len > h.len)
		rc = buf_reserve(&s->q, s->args.len - (size_t)h.len);
	if (rc < 0) {
		fail_fatal(s, rc, "out of memory");
		return s->err;
	}
	char *line = s->q.data + s->txn_at + sizeof(h);
	size_t tail = s->q.len - (s->txn_at + sizeof(h) + (size_t)h.len);
	memmove(line + s->args.len, line + h.len, tail);
	memcpy(line, s->args.data, s->args.len);
	s->q.len = s->q.len - (size_t)h.len + s->args.len;
	h.len = s->args.len;
	memcpy(s->q.data + s->txn_at, &h, sizeof(h));
	s->txn_end = txn->end_lsn;
	return 0;
}

static uint64_t stream_position(void *impl)
{
	return ((rstream *)impl)->position;
}

static int stream_begin(void *impl, const change_txn *txn)
{
	rstream *s = impl;
	if (s->err != 0)
		return s->err;
	s->q.len = s->committed; /* a transaction cut off without abort() (none expected) */
	s->txn = txn;
	s->seq = 0;
	/* in the stream already: a transaction committed before the position (the end LSN of a
	 * "C" entry, or the commit LSN of a transaction to take again); pgoutput's end LSN is not
	 * known yet at a begin without a policy */
	s->txn_skip = txn->commit_lsn < s->position;
	if (s->txn_skip)
		return 0;
	s->txn_at = s->q.len;
	s->txn_end = txn->end_lsn;
	return entry_add(s, 'B', txn->commit_lsn, s->seq++, txn->commit_lsn, txn, NULL);
}

static int stream_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	rstream *s = impl;
	const change *c = d->source != NULL ? d->source : d->view;
	if (s->err != 0)
		return s->err;
	if (!d->bypass || d->left_view)
		return 0;
	if (c->txn == NULL) {
		/* a non-transactional message, between transactions: an entry of its own */
		int rc = entry_add(s, 'X', c->lsn, 0, c->lsn, NULL, c);
		if (rc == 0) {
			s->committed = s->q.len;
			send_soon(s);
		}
		return rc;
	}
	if (s->txn_skip)
		return 0;
	return entry_add(s, 'X', c->txn->commit_lsn, s->seq++, c->lsn, c->txn, c);
}

static int stream_commit(void *impl, const change_txn *txn)
{
	rstream *s = impl;
	if (s->err != 0)
		return s->err;
	s->txn = NULL;
	if (s->txn_skip) {
		s->txn_skip = false;
		return 0;
	}
	int rc = txn->end_lsn != s->txn_end ? begin_rewrite(s, txn) : 0;
	if (rc == 0)
		rc = entry_add(s, 'C', txn->commit_lsn, s->seq++, txn->end_lsn, txn, NULL);
	if (rc < 0)
		return rc;
	s->committed = s->q.len;
	send_soon(s);
	return 0;
}

static void stream_abort(void *impl)
{
	rstream *s = impl;
	s->q.len = s->committed;
	s->txn = NULL;
	s->txn_skip = false;
}

static size_t stream_pending_bytes(void *impl)
{
	const rstream *s = impl;
	return s->q.len - s->head;
}

static bool stream_healthy(void *impl)
{
	const rstream *s = impl;
	if (s->err != 0 || s->conn == NULL || !redis_conn_up(s->conn))
		return false;
	return !s->round_active || loop_now_ms() - s->round_start_ms <= s->command_timeout_ms;
}

static int stream_flush(void *impl)
{
	rstream *s = impl;
	if (s->err != 0)
		return s->err;
	maybe_send(s);
	return 0;
}

const sink_ops redis_stream_sink_ops = {
	.name = "redis_stream",
	.kind = SINK_DURABLE,
	.keys = stream_keys,
	.nkeys = NKEYS,
	.conf_size = sizeof(redis_stream_conf),
	.create = stream_create,
	.destroy = stream_destroy,
	.position = stream_position,
	.begin = stream_begin,
	.deliver = stream_deliver,
	.commit = stream_commit,
	.abort = stream_abort,
	.pending_bytes = stream_pending_bytes,
	.healthy = stream_healthy,
	.flush = stream_flush,
};
