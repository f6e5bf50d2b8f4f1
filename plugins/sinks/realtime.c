/*
 * realtime — the Supabase Realtime postgres_changes sink on the daemon's HTTP listener
 * (realtime.h; docs/protocol.md).
 *
 * Design. One lws protocol, the vhost's default for WebSocket upgrades, refuses handshakes that
 * are not for its two paths or that carry no key with a plain HTTP answer and a JSON body. A
 * connection (rt_conn) holds its channels (rt_chan) and one FIFO of frames; a channel is one
 * audience subscriber with its bindings and compiled filters. A frame is its own bytes around an
 * optional shared part: the `data` object of a change, serialized once per audience (the
 * delivery's payload identifies the audience: the last one is cached with a reference held) into
 * a reference-counted rt_data. Deliveries append frames to the connections' queues and mark them
 * dirty; commit asks lws for a writable callback on each dirty connection, which frames the
 * queued messages itself (RFC 6455 headers) and writes them with one raw write (up to 64 KiB), so
 * a transaction's frames leave together. A queue over its bounds either drops (slow_consumer =
 * drop) or is emptied, given one error message and closed (disconnect).
 *
 * Joins wait for the pipeline to be live (sink_env.live): the audience subscription is made and
 * the reply sent in the same loop turn, so a client that saw SUBSCRIBED gets every change
 * committed after it. A 250 ms timer serves held joins and ends channels whose token expired.
 *
 * Resume (replay_bytes > 0; rt_replay.h). One wildcard subscriber is offered every audience of
 * every row; its deliveries (the same shared data objects, referenced) go into the replay buffer
 * with who the audience is (bypass, org + rank, named member), and a change callback on the
 * pipeline's commit state records each transaction's membership changes. A join with
 * walcast_resume_from is answered, then given what its user missed — re-matched per transaction
 * with the user's rank as of that commit — in the same loop turn, then live changes. A DELETE
 * erases the row's earlier buffered payloads and is itself kept with the row's identity only.
 */
#include "realtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libwebsockets.h>

#include "auditlog.h"
#include "http.h"
#include "log.h"
#include "policy.h"
#include "policy_state.h"
#include "rt_filter.h"
#include "rt_proto.h"
#include "rt_replay.h"
#include "token.h"

#define RT_TICK_MS 250
#define RT_REPLAY_KEY_MAX 32 /* replica identity columns kept of a buffered DELETE */
#define RT_TEXT_MAX 1024
#define RT_BIG_VALUE 64 /* with a 413, values longer than this are dropped (the server's rule) */
#define RT_WRITE_BATCH 65536 /* frames written with one write, up to this many bytes (or one frame) */
#define RT_RX_BUFFER 256     /* lws's per-connection receive buffer, held by every idle connection
                              * (lws's default is 4 KiB): heartbeats fit; a larger message (a join
                              * with its token) arrives in pieces, gathered in rt_conn.rx and
                              * released once whole. Control frames (at most 125 bytes) fit.
                              * lws would also cut every send() to this size (a 1 KB frame in four
                              * sends, four loop turns apart): .tx_packet_size lifts that. */
#define RT_TX_PACKET (RT_WRITE_BATCH + 16) /* one write of ours (frames + their headers): one send */

/* ---- shared data and frames ---------------------------------------------------------------- */

typedef struct rt_data {
	uint32_t refs;
	size_t len;
	char text[];
} rt_data;

static void data_unref(rt_data *d)
{
	if (d != NULL && --d->refs == 0)
		free(d);
}

typedef struct rt_frame {
	struct rt_frame *next;
	rt_data *shared; /* NULL or a reference: written between own[0..split) and own[split..len) */
	size_t len;
	size_t split;
	char own[];
} rt_frame;

static size_t frame_size(const rt_frame *f)
{
	return f->len + (f->shared ? f->shared->len : 0);
}

static void frame_free(rt_frame *f)
{
	if (f == NULL)
		return;
	data_unref(f->shared);
	free(f);
}

/* ---- the instance ----------------------------------------------------------------------------- */

typedef struct rt_who {
	char uid[40];  /* canonical uuid, "" = none */
	bool bypass;
	int64_t exp;   /* 0 = none */
} rt_who;

typedef struct rt_chan {
	struct rt_chan *next;
	rt_conn *c;
	char *topic;
	json_t *join_ref;
	rt_join join;
	int64_t *ids;
	rt_filter **filters;  /* one per binding; NULL = none (in the block of ids) */
	uint64_t *checked;    /* per binding: the relation id its filter was checked against (0 none)
	                       * (in the block of ids) */
	bool *broken;         /* per binding: its filter does not fit the table (never matches) (in
	                       * the block of ids) */
	audience_sub *sub;
	rt_who who;
	bool held;            /* waiting for the pipeline to be live */
	bool joined;          /* answered ok (its end is audited as a leave) */
	rt_msg held_msg;      /* the join to answer then */
	bool resume;          /* the join asked to resume after (resume_commit, resume_lsn) */
	uint64_t resume_commit, resume_lsn;
	bool stay_true;       /* walcast_view = "stay_true": rows leaving the view come as DELETEs,
	                       * view changes as a system message (docs/protocol.md) */
} rt_chan;

struct rt_conn {
	struct realtime_sink *s;
	struct lws *wsi;      /* NULL for a test connection */
	struct rt_conn **pss; /* lws's per-session pointer to this connection */
	rt_vsn vsn;
	char *apikey;
	rt_chan *chans;
	size_t nchans;
	rt_frame *qhead, *qtail;
	size_t qbytes, qframes;
	buf rx;               /* a message arriving in fragments */
	bool rx_binary;       /* ... and whether it is a binary one */
	bool closing;
	int close_code;
	bool rx_discard; /* closing: the rest of an oversized message is read and dropped first */
	bool dirty;
	struct rt_conn *dirty_next;
	struct rt_conn *prev, *next;
	int64_t join_second;
	int64_t joins;
};

typedef struct realtime_sink {
	const sink_env *env;
	char *name;
	realtime_conf conf;
	bool drop;            /* slow_consumer = drop */
	token_auth auth;      /* [auth]'s keys and rules, followed across reloads */
	struct lws_protocols proto;      /* WebSocket upgrades, and plain HTTP under /realtime/v1 */
	struct lws_protocols proto_http; /* plain HTTP under /socket */
	rt_conn *conns;
	rt_conn *dirty;
	size_t nheld;
	int timer;
	int64_t next_id;
	realtime_stats st;
	/* the data object of the last audience delivered (its payload referenced) */
	audience_payload *cache_payload;
	rt_data *cache_data;
	buf scratch;
	buf wbuf;
	char refusal[TOKEN_ERROR_MAX];
	sink_metrics metrics; /* the families registered by this instance, removed with it */
	metrics_counter *m_messages, *m_sent, *m_writes, *m_dropped, *m_slow, *m_refused;
	metrics_counter *m_sink_drops; /* walcast_sink_drops_total{sink} (sink_env.live_metrics) */
	/* resume (replay_bytes > 0): the buffer, its wildcard subscriber (sub_arg &replay_tag), and
	 * the policy state whose membership changes it records */
	rt_replay *replay;
	audience_sub *replay_sub;
	char replay_tag;
	policy_state *replay_state;
	uint64_t replay_erased; /* the DELETE whose row was erased last (once per change) */
	buf replay_key;         /* scratch: a buffered row's erasure key */
	bool rules_changed;     /* the transaction being committed changed privacy rules */
} realtime_sink;

/* ---- queues ---------------------------------------------------------------------------------- */

static void conn_mark(rt_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->s->dirty;
	c->s->dirty = c;
}

static void queue_clear(rt_conn *c)
{
	while (c->qhead != NULL) {
		rt_frame *f = c->qhead;
		c->qhead = f->next;
		frame_free(f);
	}
	c->qtail = NULL;
	c->qbytes = c->qframes = 0;
}

static int queue_push_raw(rt_conn *c, rt_frame *f)
{
	f->next = NULL;
	if (c->qtail != NULL)
		c->qtail->next = f;
	else
		c->qhead = f;
	c->qtail = f;
	c->qbytes += frame_size(f);
	c->qframes++;
	conn_mark(c);
	return 0;
}

static int conn_system_error(rt_conn *c, const char *topic, const char *message);

/* Queues f (taken in every case). A full queue drops f (slow_consumer = drop) or empties the
 * queue, queues one error message and closes the connection. */
static void queue_push(rt_conn *c, rt_frame *f)
{
	realtime_sink *s = c->s;
	if (c->closing) {
		frame_free(f);
		return;
	}
	size_t size = frame_size(f);
	if (c->qbytes + size > (size_t)s->conf.max_queue_bytes ||
	    c->qframes + 1 > (size_t)s->conf.max_queue_frames) {
		frame_free(f);
		if (s->drop) {
			s->st.dropped++;
			if (s->m_dropped)
				metrics_counter_inc(s->m_dropped);
			if (s->m_sink_drops)
				metrics_counter_inc(s->m_sink_drops);
			return;
		}
		s->st.dropped += c->qframes + 1;
		if (s->m_dropped)
			metrics_counter_add(s->m_dropped, c->qframes + 1);
		if (s->m_sink_drops)
			metrics_counter_add(s->m_sink_drops, c->qframes + 1);
		s->st.slow_disconnects++;
		if (s->m_slow)
			metrics_counter_inc(s->m_slow);
		log_warn("realtime.slow_consumer", "sink=%s: a connection's queue is full (%zu frames, %zu bytes): "
		         "disconnected", s->name, c->qframes, c->qbytes);
		queue_clear(c);
		char msg[RT_TEXT_MAX];
		snprintf(msg, sizeof(msg), "SlowConsumer: the connection fell behind (queue over %lld bytes or "
		         "%lld messages): disconnected", (long long)s->conf.max_queue_bytes,
		         (long long)s->conf.max_queue_frames);
		(void)conn_system_error(c, "phoenix", msg);
		c->closing = true;
		c->close_code = 1008;
		return;
	}
	(void)queue_push_raw(c, f);
}

/* Queues a frame of own bytes text[0..len), with shared (a new reference is taken) inserted at
 * split. 0 or -ENOMEM. */
static int queue_bytes(rt_conn *c, const char *text, size_t len, size_t split, rt_data *shared)
{
	rt_frame *f = malloc(sizeof(*f) + len);
	if (f == NULL)
		return -ENOMEM;
	memcpy(f->own, text, len);
	f->len = len;
	f->split = split;
	f->shared = shared;
	if (shared != NULL)
		shared->refs++;
	queue_push(c, f);
	return 0;
}

static int queue_buf(rt_conn *c, const buf *b)
{
	return queue_bytes(c, b->data, b->len, b->len, NULL);
}

static int conn_system_error(rt_conn *c, const char *topic, const char *message)
{
	buf *b = &c->s->scratch;
	buf_clear(b);
	int rc = rt_system_write(b, c->vsn, topic, "system", "error", message, NULL);
	return rc < 0 ? rc : queue_buf(c, b);
}

static void conn_wake(rt_conn *c)
{
	if (c->wsi != NULL)
		lws_callback_on_writable(c->wsi);
}

static void dirty_flush(realtime_sink *s)
{
	while (s->dirty != NULL) {
		rt_conn *c = s->dirty;
		s->dirty = c->dirty_next;
		c->dirty = false;
		c->dirty_next = NULL;
		conn_wake(c);
	}
}

static void dirty_remove(realtime_sink *s, rt_conn *c)
{
	if (!c->dirty)
		return;
	for (rt_conn **pp = &s->dirty; *pp != NULL; pp = &(*pp)->dirty_next) {
		if (*pp == c) {
			*pp = c->dirty_next;
			break;
		}
	}
	c->dirty = false;
}

/* ---- tokens ---------------------------------------------------------------------------------- */

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* [auth] as it is now (reloadable: a change is picked up at the next token); a secret that
 * does not build keeps the previous keys (logged). */
static void keys_refresh(realtime_sink *s)
{
	char terr[TOKEN_ERROR_MAX];
	if (s->env->cfg != NULL && token_auth_refresh(&s->auth, s->env->cfg, terr) < 0)
		log_error("realtime.keys", "sink=%s: the token keys could not be rebuilt (%s): the previous ones stay",
		          s->name, terr);
}

/* Who the token stands for: 0 and *out, -EACCES with reason (the refused join's words). */
static int who_from_token(realtime_sink *s, const char *token, int64_t now, rt_who *out,
                          char reason[RT_TEXT_MAX])
{
	token_claims cl;
	char err[TOKEN_ERROR_MAX];
	keys_refresh(s);
	if (token == NULL || token[0] == '\0') {
		snprintf(reason, RT_TEXT_MAX, "InvalidJWTToken: no access_token and no apikey");
		return -EACCES;
	}
	if (s->auth.keys == NULL) {
		snprintf(reason, RT_TEXT_MAX, "InvalidJWTToken: no key is configured to verify tokens "
		         "(auth.jwt_secret, auth.jwks_file)");
		return -EACCES;
	}
	if (token_verify(s->auth.keys, &s->auth.rules, token, now, &cl, err) < 0) {
		snprintf(reason, RT_TEXT_MAX, "InvalidJWTToken: %s", err);
		return -EACCES;
	}
	rt_who w = {.exp = cl.exp};
	const policy *pol = s->env->pol;
	policy_role_access kind = pol == NULL ? POLICY_ROLE_BYPASS : policy_role_kind(pol, cl.role, strlen(cl.role));
	if (kind == POLICY_ROLE_BYPASS) {
		w.bypass = true;
	} else if (kind == POLICY_ROLE_MEMBER && cl.sub[0] != '\0') {
		char canon[64];
		if (policy_uuid_canonical(cl.sub, strlen(cl.sub), canon) < 0) {
			snprintf(reason, RT_TEXT_MAX, "InvalidJWTToken: the sub claim is not a user id (uuid)");
			return -EACCES;
		}
		snprintf(w.uid, sizeof(w.uid), "%s", canon);
	}
	*out = w;
	return 0;
}

/* ---- auditing ------------------------------------------------------------------------------- */

typedef struct audit_ctx {
	auditlog *w;
	const char *uid;
	const char *action;
	const char *table;
	const char *detail;
} audit_ctx;

static int audit_org_cb(void *arg, const policy_state_uuid *org, int rank)
{
	const audit_ctx *a = arg;
	char text[POLICY_STATE_UUID_TEXT];
	(void)rank;
	policy_state_uuid_format(org, text);
	auditlog_record(a->w, text, a->uid, a->action, a->table, NULL, a->detail);
	return 0;
}

/* One audit_log row per org of the user (sink_env.audit; nothing for a token without a user, or
 * when auditing is off), or for only that org when only is not NULL: action with detail
 * {"topic", "reason"?} and the bindings' table when they all name one. */
static void audit_in(realtime_sink *s, const rt_who *w, const char *action, const char *topic,
                     const rt_join *j, const char *reason, const policy_state_uuid *only)
{
	if (s->env->audit == NULL || s->env->state == NULL || w == NULL || w->uid[0] == '\0')
		return;
	const policy_state *ps = s->env->state(s->env->env_arg);
	policy_state_uuid u;
	if (ps == NULL || policy_state_uuid_parse(w->uid, strlen(w->uid), &u) < 0)
		return;
	const char *table = NULL;
	for (size_t i = 0; j != NULL && i < j->n; i++) {
		const char *t = j->bindings[i].table;
		if (t == NULL || strcmp(t, "*") == 0 || (table != NULL && strcmp(table, t) != 0)) {
			table = NULL;
			break;
		}
		table = t;
	}
	json_t *d = json_pack("{s:s}", "topic", topic);
	if (d != NULL && reason != NULL)
		json_object_set_new(d, "reason", json_string(reason));
	char *detail = d != NULL ? json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	audit_ctx a = {s->env->audit, w->uid, action, table, detail};
	if (only != NULL)
		(void)audit_org_cb(&a, only, 1);
	else
		(void)policy_state_user_orgs(ps, &u, audit_org_cb, &a);
	free(detail);
}

static void audit(realtime_sink *s, const rt_who *w, const char *action, const char *topic,
                  const rt_join *j, const char *reason)
{
	audit_in(s, w, action, topic, j, reason, NULL);
}

static void view_changed(rt_chan *ch);

/* sink_env.member_watch: a joined channel's rows follow its user's memberships. A membership
 * that arrives while the channel is joined (the join was made before walcast streamed the
 * membership's commit, or the user was added later) gets a join row for that org, a removal a
 * leave row; the channel's own leave then covers the orgs still held. O(channels) per
 * membership added or removed. */
static void member_cb(void *arg, const policy_state_uuid *org, const policy_state_uuid *user, int old_rank,
                      int new_rank)
{
	realtime_sink *s = arg;
	const char *action = old_rank == 0 && new_rank > 0 ? AUDITLOG_JOIN
	                     : old_rank > 0 && new_rank == 0 ? AUDITLOG_LEAVE : NULL;
	if (s->env->audit == NULL)
		action = NULL;
	char uid[POLICY_STATE_UUID_TEXT];
	policy_state_uuid_format(user, uid);
	for (rt_conn *c = s->conns; c != NULL; c = c->next)
		for (rt_chan *ch = c->chans; ch != NULL; ch = ch->next) {
			if (!ch->joined || strcasecmp(ch->who.uid, uid) != 0)
				continue;
			if (action != NULL)
				audit_in(s, &ch->who, action, ch->topic, &ch->join, NULL, org);
			if (ch->stay_true && old_rank != new_rank)
				view_changed(ch);
		}
}

/* ---- channels -------------------------------------------------------------------------------- */

static void chan_unsubscribe(rt_chan *ch)
{
	realtime_sink *s = ch->c->s;
	if (ch->sub != NULL && s->env->unsubscribe != NULL)
		s->env->unsubscribe(s->env->env_arg, ch->sub);
	ch->sub = NULL;
}

static void chan_free(rt_chan *ch)
{
	if (ch == NULL)
		return;
	chan_unsubscribe(ch);
	if (ch->joined)
		audit(ch->c->s, &ch->who, AUDITLOG_LEAVE, ch->topic, &ch->join, NULL);
	if (ch->held && ch->c->s->nheld > 0)
		ch->c->s->nheld--;
	for (size_t i = 0; ch->filters != NULL && i < ch->join.n; i++)
		rt_filter_free(ch->filters[i]);
	free(ch->ids); /* with filters, checked and broken */
	rt_join_fini(&ch->join);
	rt_msg_fini(&ch->held_msg);
	json_decref(ch->join_ref);
	free(ch->topic);
	free(ch);
}

/* Removes ch from its connection and frees it. */
static void chan_remove(rt_chan *ch)
{
	rt_conn *c = ch->c;
	for (rt_chan **pp = &c->chans; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == ch) {
			*pp = ch->next;
			c->nchans--;
			c->s->st.channels--;
			break;
		}
	}
	chan_free(ch);
}

static rt_chan *chan_find(rt_conn *c, const char *topic)
{
	for (rt_chan *ch = c->chans; ch != NULL; ch = ch->next)
		if (strcmp(ch->topic, topic) == 0)
			return ch;
	return NULL;
}

static const char *chan_name(const rt_chan *ch)
{
	return strncmp(ch->topic, "realtime:", 9) == 0 ? ch->topic + 9 : ch->topic;
}

static int chan_subscribe(rt_chan *ch, const rt_who *w, audience_sub **out)
{
	realtime_sink *s = ch->c->s;
	*out = NULL;
	if (s->env->subscribe == NULL)
		return 0;
	int rc = s->env->subscribe(s->env->env_arg, ch, w->uid[0] ? w->uid : NULL, w->bypass, false, out);
	if (rc == 0 && ch->stay_true)
		audience_sub_set_left_view(*out, true);
	return rc;
}

/* The system message that ends a channel, then phx_close, then the channel is gone. */
static void chan_end(rt_chan *ch, const char *message)
{
	rt_conn *c = ch->c;
	buf *b = &c->s->scratch;
	buf_clear(b);
	if (rt_system_write(b, c->vsn, ch->topic, "system", "error", message, NULL) == 0)
		(void)queue_buf(c, b);
	buf_clear(b);
	rt_head h = {c->vsn, ch->join_ref, ch->join_ref, ch->topic, "phx_close"};
	if (rt_frame_write(b, &h, "{}", 2) == 0)
		(void)queue_buf(c, b);
	chan_remove(ch);
}

static void chan_resume(rt_chan *ch);

/* The join is answered: subscribed in the audience, reply ok, then the system message. */
static void chan_activate(rt_chan *ch)
{
	rt_conn *c = ch->c;
	realtime_sink *s = c->s;
	buf *b = &s->scratch;
	if (ch->held) {
		ch->held = false;
		s->nheld--;
	}
	int rc = chan_subscribe(ch, &ch->who, &ch->sub);
	buf_clear(b);
	if (rc < 0) {
		s->st.joins_refused++;
		char reason[RT_TEXT_MAX];
		snprintf(reason, sizeof(reason), "UnableToSubscribe: %s", strerror(-rc));
		if (rt_reply_error(b, c->vsn, &ch->held_msg, reason) == 0)
			(void)queue_buf(c, b);
		audit(s, &ch->who, AUDITLOG_JOIN_REFUSED, ch->topic, &ch->join, reason);
		chan_remove(ch);
		return;
	}
	ch->joined = true;
	audit(s, &ch->who, AUDITLOG_JOIN, ch->topic, &ch->join, NULL);
	buf resp;
	buf_init(&resp);
	if (rt_join_response(&resp, &ch->join, ch->ids) == 0 &&
	    rt_reply_write(b, c->vsn, &ch->held_msg, "ok", resp.data) == 0)
		(void)queue_buf(c, b);
	buf_fini(&resp);
	if (ch->join.n > 0) {
		buf_clear(b);
		if (rt_system_write(b, c->vsn, ch->topic, "postgres_changes", "ok", "Subscribed to PostgreSQL",
		                    chan_name(ch)) == 0)
			(void)queue_buf(c, b);
	}
	if (ch->resume)
		chan_resume(ch);
	rt_msg_fini(&ch->held_msg);
	/* answered: the parsed join is no longer needed whole (out of memory: it stays whole) */
	if (rt_join_compact(&ch->join) < 0)
		log_warn("realtime.memory", "sink=%s topic=%s: the join is kept whole (out of memory)", s->name,
		         ch->topic);
}

static void reply_error(rt_conn *c, const rt_msg *m, const char *reason)
{
	buf *b = &c->s->scratch;
	buf_clear(b);
	if (rt_reply_error(b, c->vsn, m, reason) == 0)
		(void)queue_buf(c, b);
}

static void reply_ok(rt_conn *c, const rt_msg *m)
{
	buf *b = &c->s->scratch;
	buf_clear(b);
	if (rt_reply_write(b, c->vsn, m, "ok", NULL) == 0)
		(void)queue_buf(c, b);
}

static int resume_parse(realtime_sink *s, const json_t *payload, rt_chan *ch, char reason[RT_TEXT_MAX]);
static int view_parse(const json_t *payload, rt_chan *ch, char reason[RT_TEXT_MAX]);

/* The per-binding arrays of ch (n > 0) in one block (an idle connection's memory is the bar):
 * ids, then filters, checked and broken. 0 or -ENOMEM. */
static int chan_alloc_bindings(rt_chan *ch, size_t n)
{
	char *block = calloc(n, sizeof(*ch->ids) + sizeof(*ch->filters) + sizeof(*ch->checked) +
	                     sizeof(*ch->broken));
	if (block == NULL)
		return -ENOMEM;
	ch->ids = (int64_t *)block;
	ch->filters = (rt_filter **)(ch->ids + n);
	ch->checked = (uint64_t *)(ch->filters + n);
	ch->broken = (bool *)(ch->checked + n);
	return 0;
}

static void handle_join(rt_conn *c, rt_msg *m)
{
	realtime_sink *s = c->s;
	char reason[RT_TEXT_MAX];
	rt_chan *old = chan_find(c, m->topic);
	if (old != NULL)
		chan_remove(old); /* a rejoin replaces the channel, as Phoenix does */
	int64_t now = now_s();
	if (c->join_second != now) {
		c->join_second = now;
		c->joins = 0;
	}
	if (++c->joins > s->conf.max_joins_per_second) {
		s->st.joins_refused++;
		reply_error(c, m, "ClientJoinRateLimitReached: Too many joins per second");
		return;
	}
	if (c->nchans >= (size_t)s->conf.max_channels) {
		s->st.joins_refused++;
		reply_error(c, m, "ChannelRateLimitReached: Too many channels");
		return;
	}
	rt_chan *ch = calloc(1, sizeof(*ch));
	if (ch == NULL || (ch->topic = strdup(m->topic)) == NULL) {
		free(ch);
		reply_error(c, m, "UnableToSubscribe: out of memory");
		return;
	}
	ch->c = c;
	ch->join_ref = m->join_ref ? json_incref(m->join_ref) : NULL;
	if (rt_join_parse(m->payload, &ch->join, reason) < 0)
		goto refuse;
	if (resume_parse(s, m->payload, ch, reason) < 0 || view_parse(m->payload, ch, reason) < 0)
		goto refuse;
	const char *token = ch->join.access_token ? ch->join.access_token : c->apikey;
	if (who_from_token(s, token, now, &ch->who, reason) < 0)
		goto refuse;
	size_t n = ch->join.n;
	if (n > 0 && chan_alloc_bindings(ch, n) < 0) {
		snprintf(reason, sizeof(reason), "UnableToSubscribe: out of memory");
		goto refuse;
	}
	for (size_t i = 0; i < n; i++) {
		const rt_binding *b = &ch->join.bindings[i];
		char ferr[RT_FILTER_ERROR_MAX];
		if (b->filter != NULL && b->filter[0] != '\0' && rt_filter_parse(b->filter, &ch->filters[i], ferr) < 0) {
			snprintf(reason, sizeof(reason),
			         "Unable to subscribe to changes with given parameters. Invalid filter \"%s\": %s",
			         b->filter, ferr);
			goto refuse;
		}
		ch->ids[i] = ++s->next_id;
	}
	ch->held_msg = *m;
	memset(m, 0, sizeof(*m));
	ch->next = c->chans;
	c->chans = ch;
	c->nchans++;
	s->st.channels++;
	if (s->env->live == NULL || s->env->live(s->env->env_arg)) {
		chan_activate(ch);
	} else {
		ch->held = true;
		s->nheld++;
	}
	return;
refuse:
	s->st.joins_refused++;
	log_info("realtime.join_refused", "sink=%s topic=%s: %s", s->name, m->topic, reason);
	audit(s, &ch->who, AUDITLOG_JOIN_REFUSED, m->topic, &ch->join, reason);
	reply_error(c, m, reason);
	chan_free(ch);
}

/* access_token: the channel continues as the new token's user, or ends. */
static void handle_access_token(rt_conn *c, rt_chan *ch, const rt_msg *m)
{
	json_t *t = json_object_get(m->payload, "access_token");
	if (!json_is_string(t))
		return; /* realtime-js sends null when it has no token: nothing changes */
	char reason[RT_TEXT_MAX];
	rt_who w;
	if (who_from_token(c->s, json_string_value(t), now_s(), &w, reason) < 0) {
		const char *msg = strncmp(reason, "InvalidJWTToken: ", 17) == 0 ? reason + 17 : reason;
		chan_end(ch, msg);
		return;
	}
	if (ch->held || (strcmp(w.uid, ch->who.uid) == 0 && w.bypass == ch->who.bypass)) {
		ch->who = w;
		return;
	}
	audience_sub *sub;
	if (chan_subscribe(ch, &w, &sub) < 0) {
		chan_end(ch, "UnableToSubscribe: out of memory");
		return;
	}
	chan_unsubscribe(ch);
	ch->sub = sub;
	ch->who = w;
}

static void handle_msg(rt_conn *c, rt_msg *m)
{
	buf *b = &c->s->scratch;
	buf_clear(b);
	int rc = rt_reply_stateless(b, c->vsn, m);
	if (rc > 0) {
		(void)queue_buf(c, b);
		return;
	}
	if (strcmp(m->event, "phx_join") == 0) {
		if (strncmp(m->topic, "realtime:", 9) != 0) {
			reply_error(c, m, "unmatched topic");
			return;
		}
		handle_join(c, m);
		return;
	}
	rt_chan *ch = chan_find(c, m->topic);
	if (ch == NULL) {
		reply_error(c, m, "unmatched topic");
		return;
	}
	if (strcmp(m->event, "phx_leave") == 0) {
		reply_ok(c, m);
		chan_remove(ch);
	} else if (strcmp(m->event, "access_token") == 0) {
		handle_access_token(c, ch, m);
	} else if (strcmp(m->event, "broadcast") == 0 || strcmp(m->event, "presence") == 0) {
		reply_error(c, m, "walcast serves postgres_changes only: broadcast and presence are not supported");
	} else {
		char reason[RT_TEXT_MAX];
		snprintf(reason, sizeof(reason), "unknown event \"%.200s\"", m->event);
		reply_error(c, m, reason);
	}
}

/* A complete client message. */
static void conn_receive(rt_conn *c, const char *text, size_t len)
{
	rt_msg m = {0};
	char err[RT_PROTO_ERROR_MAX];
	if (rt_msg_parse(c->vsn, text, len, &m, err) < 0) {
		(void)conn_system_error(c, "phoenix", err);
		return;
	}
	handle_msg(c, &m);
	rt_msg_fini(&m);
}

/* A complete binary message: realtime-js's broadcast push (vsn 2.0.0), answered with an error
 * reply so that its send() does not wait for a timeout. */
static void conn_receive_binary(rt_conn *c, const char *data, size_t len)
{
	rt_msg m = {0};
	char err[RT_PROTO_ERROR_MAX];
	if (c->vsn != RT_VSN_2 || rt_msg_parse_binary((const unsigned char *)data, len, &m, err) < 0) {
		(void)conn_system_error(c, "phoenix", c->vsn != RT_VSN_2 ? "binary frames need vsn 2.0.0" : err);
		return;
	}
	handle_msg(c, &m);
	rt_msg_fini(&m);
}

/* ---- connections ----------------------------------------------------------------------------- */

static rt_conn *conn_create(realtime_sink *s, struct lws *wsi, rt_vsn vsn, const char *apikey)
{
	rt_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->s = s;
	c->wsi = wsi;
	c->vsn = vsn;
	buf_init(&c->rx);
	if (apikey != NULL && (c->apikey = strdup(apikey)) == NULL) {
		free(c);
		return NULL;
	}
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->st.connections++;
	return c;
}

static void conn_destroy(rt_conn *c)
{
	if (c == NULL)
		return;
	realtime_sink *s = c->s;
	while (c->chans != NULL)
		chan_remove(c->chans);
	queue_clear(c);
	dirty_remove(s, c);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->st.connections--;
	buf_fini(&c->rx);
	free(c->apikey);
	free(c);
}

/* ---- periodic work --------------------------------------------------------------------------- */

static void sink_tick(realtime_sink *s, int64_t now)
{
	bool live = s->env->live == NULL || s->env->live(s->env->env_arg);
	if (s->replay != NULL)
		rt_replay_expire(s->replay, now);
	for (rt_conn *c = s->conns; c != NULL; c = c->next) {
		for (rt_chan *ch = c->chans, *next; ch != NULL; ch = next) {
			next = ch->next;
			if (ch->held && live) {
				chan_activate(ch);
				continue;
			}
			if (ch->who.exp > 0 && ch->who.exp <= now) {
				char msg[RT_TEXT_MAX];
				snprintf(msg, sizeof(msg), "Token has expired %lld seconds ago",
				         (long long)(now - ch->who.exp));
				log_info("realtime.token_expired", "sink=%s topic=%s: %s", s->name, ch->topic, msg);
				chan_end(ch, msg);
			}
		}
	}
	dirty_flush(s);
}

static void tick_cb(loop *l, int id, void *arg)
{
	realtime_sink *s = arg;
	(void)l, (void)id;
	s->timer = 0;
	sink_tick(s, now_s());
	int t = loop_timer_add(s->env->loop, RT_TICK_MS, tick_cb, s);
	s->timer = t > 0 ? t : 0;
}

/* ---- the lws protocol ------------------------------------------------------------------------ */

/* A server-to-client WebSocket frame header (RFC 6455: FIN, text, unmasked) for a payload of
 * len bytes into out (at most 10 bytes); returns its length. */
static size_t ws_header(unsigned char *out, size_t len)
{
	out[0] = 0x81;
	if (len < 126) {
		out[1] = (unsigned char)len;
		return 2;
	}
	if (len <= 0xFFFF) {
		out[1] = 126;
		out[2] = (unsigned char)(len >> 8);
		out[3] = (unsigned char)len;
		return 4;
	}
	out[1] = 127;
	for (int i = 0; i < 8; i++)
		out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

static int http_refuse(struct lws *wsi, unsigned status, const char *error)
{
	char body[RT_TEXT_MAX];
	buf b;
	buf_init(&b);
	int n = -1;
	if (buf_puts(&b, "{\"error\":") == 0 && buf_json_string(&b, error, strlen(error)) == 0 &&
	    buf_putc(&b, '}') == 0)
		n = snprintf(body, sizeof(body), "%s", b.data);
	buf_fini(&b);
	if (n < 0)
		return -1;
	unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
	if (lws_add_http_common_headers(wsi, status, "application/json", (lws_filepos_t)n, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5, &p,
	                                 end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	unsigned char out[LWS_PRE + RT_TEXT_MAX];
	memcpy(out + LWS_PRE, body, (size_t)n);
	if (lws_write(wsi, out + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_FINAL) < 0)
		return -1;
	return 0;
}

/* The handshake's path, vsn and key; 0, or the HTTP status refusing it (error filled). */
static unsigned handshake_check(realtime_sink *s, struct lws *wsi, rt_vsn *vsn, char *key, size_t keylen,
                                const char **error)
{
	char path[256] = "";
	if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0)
		path[0] = '\0';
	size_t pl = strlen(path);
	while (pl > 1 && path[pl - 1] == '/')
		path[--pl] = '\0';
	if (strcmp(path, "/realtime/v1/websocket") != 0 && strcmp(path, "/socket/websocket") != 0) {
		*error = "Not found: WebSocket paths are /realtime/v1/websocket and /socket/websocket";
		return 404;
	}
	/* lws stops at the first argument longer than the buffer: key-sized for every lookup */
	const char *vs = lws_get_urlarg_by_name(wsi, "vsn=", key, (int)keylen);
	if (rt_vsn_parse(vs, vsn) < 0) {
		*error = "Unsupported vsn: use 1.0.0 or 2.0.0";
		return 400;
	}
	key[0] = '\0';
	const char *k = lws_get_urlarg_by_name(wsi, "apikey=", key, (int)keylen);
	if (k == NULL || k[0] == '\0') {
		int n = lws_hdr_custom_copy(wsi, key, (int)keylen, "x-api-key:", 10);
		if (n <= 0)
			key[0] = '\0';
	} else if (k != key) {
		memmove(key, k, strlen(k) + 1);
	}
	if (key[0] == '\0') {
		*error = "No api key provided: apikey query parameter or x-api-key header";
		return 401;
	}
	if (s->st.connections >= (size_t)s->conf.max_connections) {
		*error = "Too many connected users";
		return 429;
	}
	/* a key that is a token must verify; other keys (publishable keys) are not judged here: each
	 * join's token is */
	keys_refresh(s);
	if (strchr(key, '.') != NULL && s->auth.keys != NULL) {
		token_claims cl;
		char err[TOKEN_ERROR_MAX];
		if (token_verify(s->auth.keys, &s->auth.rules, key, now_s(), &cl, err) < 0) {
			snprintf(s->refusal, sizeof(s->refusal), "%s", err);
			*error = s->refusal;
			return strstr(err, "expired") != NULL ? 401 : 403;
		}
	}
	return 0;
}

static int rt_lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	const struct lws_protocols *proto = lws_get_protocol(wsi);
	realtime_sink *s = proto != NULL ? proto->user : NULL;
	rt_conn **pc = user;
	if (s == NULL)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		/* a plain request under the sink's mounts: the WebSocket paths say so, the rest is 404 */
		char path[256] = "";
		if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0)
			path[0] = '\0';
		bool ws = strcmp(path, "/realtime/v1/websocket") == 0 || strcmp(path, "/socket/websocket") == 0;
		if (http_refuse(wsi, ws ? 426 : 404, ws ? "Upgrade Required: this path speaks WebSocket "
		                "(the Supabase Realtime protocol)" : "Not found") < 0)
			return -1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	}
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
		rt_vsn vsn;
		char key[TOKEN_MAX_LEN + 1];
		const char *error = NULL;
		unsigned status = handshake_check(s, wsi, &vsn, key, sizeof(key), &error);
		if (status == 0)
			return 0;
		s->st.refused++;
		if (s->m_refused)
			metrics_counter_inc(s->m_refused);
		log_info("realtime.refused", "sink=%s: handshake refused with %u: %s", s->name, status, error);
		(void)http_refuse(wsi, status, error);
		return -1;
	}
	case LWS_CALLBACK_ESTABLISHED: {
		rt_vsn vsn;
		char key[TOKEN_MAX_LEN + 1];
		const char *error = NULL;
		if (handshake_check(s, wsi, &vsn, key, sizeof(key), &error) != 0)
			return -1;
		*pc = conn_create(s, wsi, vsn, key);
		if (*pc == NULL)
			return -1;
		(*pc)->pss = pc;
		return 0;
	}
	case LWS_CALLBACK_RECEIVE: {
		rt_conn *c = pc != NULL ? *pc : NULL;
		if (c == NULL)
			return -1;
		bool whole = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
		if (c->closing) {
			if (c->rx_discard && whole) {
				c->rx_discard = false;
				conn_wake(c); /* the client has sent it all: now the close */
			}
			return 0;
		}
		if (c->rx.len == 0)
			c->rx_binary = lws_frame_is_binary(wsi);
		if (c->rx.len + len > (size_t)s->conf.max_message_bytes) {
			char msg[RT_TEXT_MAX];
			snprintf(msg, sizeof(msg), "message too large (over %lld bytes): disconnected",
			         (long long)s->conf.max_message_bytes);
			buf_fini(&c->rx);
			(void)conn_system_error(c, "phoenix", msg);
			c->closing = true;
			c->close_code = 1009;
			/* The client may still be sending the rest of the message: read it to its end and
			 * drop it before closing, or the kernel answers the unread bytes with a reset and
			 * the client loses the error and the close frame (it saw 1006). Bounded: a message
			 * that never ends gets the connection dropped after 10 s. */
			c->rx_discard = !whole;
			if (c->rx_discard)
				lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, 10);
			conn_wake(c);
			return 0;
		}
		if (whole && c->rx.len == 0) {
			(c->rx_binary ? conn_receive_binary : conn_receive)(c, in, len);
		} else {
			if (buf_append(&c->rx, in, len) < 0)
				return -1;
			if (whole) {
				(c->rx_binary ? conn_receive_binary : conn_receive)(c, c->rx.data, c->rx.len);
				buf_fini(&c->rx); /* not kept by an idle connection */
			}
		}
		dirty_flush(s);
		return 0;
	}
	case LWS_CALLBACK_SERVER_WRITEABLE: {
		rt_conn *c = pc != NULL ? *pc : NULL;
		if (c == NULL)
			return -1;
		while (c->qhead != NULL) {
			/* the queued frames (one transaction's, usually) framed here and written at once */
			buf_clear(&s->wbuf);
			size_t n = LWS_PRE, frames = 0;
			if (buf_reserve(&s->wbuf, LWS_PRE + RT_WRITE_BATCH + 16) < 0)
				return -1;
			while (c->qhead != NULL && (frames == 0 || n - LWS_PRE + frame_size(c->qhead) + 10 <= RT_WRITE_BATCH)) {
				rt_frame *f = c->qhead;
				size_t size = frame_size(f);
				if (buf_reserve(&s->wbuf, n - s->wbuf.len + size + 10) < 0)
					return -1;
				unsigned char *p = (unsigned char *)s->wbuf.data + n;
				size_t h = ws_header(p, size);
				memcpy(p + h, f->own, f->split);
				size_t off = h + f->split;
				if (f->shared != NULL) {
					memcpy(p + off, f->shared->text, f->shared->len);
					off += f->shared->len;
				}
				memcpy(p + off, f->own + f->split, f->len - f->split);
				n += off + f->len - f->split;
				s->wbuf.len = n;
				c->qhead = f->next;
				if (c->qhead == NULL)
					c->qtail = NULL;
				c->qbytes -= size;
				c->qframes--;
				frame_free(f);
				frames++;
			}
			size_t total = n - LWS_PRE;
			if (lws_write(wsi, (unsigned char *)s->wbuf.data + LWS_PRE, total, LWS_WRITE_RAW) < (int)total)
				return -1;
			s->st.frames_sent += frames;
			s->st.writes++;
			if (s->m_sent)
				metrics_counter_add(s->m_sent, frames);
			if (s->m_writes)
				metrics_counter_inc(s->m_writes);
			if (c->qhead != NULL && lws_send_pipe_choked(wsi)) {
				lws_callback_on_writable(wsi);
				return 0;
			}
		}
		if (c->closing && !c->rx_discard) {
			/* the error message must be on the wire first (lws may still hold a part of it) */
			if (lws_send_pipe_choked(wsi)) {
				lws_callback_on_writable(wsi);
				return 0;
			}
			/* a close frame with the code: lws sends it from its own writeable turn and then
			 * waits for the client's answer. Returning -1 here would drop the socket without
			 * one (the client would see 1006). */
			const char *why = c->close_code == 1009 ? "message too big" : "slow consumer";
			lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)(uintptr_t)why,
			                 strlen(why));
			lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
			return 0;
		}
		return 0;
	}
	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_WSI_DESTROY:
		if (pc != NULL && *pc != NULL) {
			conn_destroy(*pc);
			*pc = NULL;
		}
		return 0;
	default:
		return 0;
	}
}

/* ---- the data object ------------------------------------------------------------------------- */

static const char *type_name(uint32_t oid)
{
	switch (oid) {
	case 16: return "bool";
	case 17: return "bytea";
	case 18: return "char";
	case 19: return "name";
	case 20: return "int8";
	case 21: return "int2";
	case 23: return "int4";
	case 25: return "text";
	case 26: return "oid";
	case 114: return "json";
	case 142: return "xml";
	case 199: return "_json";
	case 650: return "cidr";
	case 700: return "float4";
	case 701: return "float8";
	case 790: return "money";
	case 829: return "macaddr";
	case 869: return "inet";
	case 1000: return "_bool";
	case 1005: return "_int2";
	case 1007: return "_int4";
	case 1009: return "_text";
	case 1014: return "_bpchar";
	case 1015: return "_varchar";
	case 1016: return "_int8";
	case 1021: return "_float4";
	case 1022: return "_float8";
	case 1042: return "bpchar";
	case 1043: return "varchar";
	case 1082: return "date";
	case 1083: return "time";
	case 1114: return "timestamp";
	case 1115: return "_timestamp";
	case 1182: return "_date";
	case 1184: return "timestamptz";
	case 1185: return "_timestamptz";
	case 1186: return "interval";
	case 1231: return "_numeric";
	case 1266: return "timetz";
	case 1560: return "bit";
	case 1562: return "varbit";
	case 1700: return "numeric";
	case 2950: return "uuid";
	case 2951: return "_uuid";
	case 3614: return "tsvector";
	case 3802: return "jsonb";
	case 3807: return "_jsonb";
	default: return "text"; /* a type the stream did not name (see rel_column.type_name): text */
	}
}

static bool is_number(const char *s, size_t n)
{
	size_t i = 0;
	if (i < n && s[i] == '-')
		i++;
	if (i >= n || s[i] < '0' || s[i] > '9' || (s[i] == '0' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9'))
		return false;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (i < n && s[i] == '.') {
		i++;
		if (i >= n || s[i] < '0' || s[i] > '9')
			return false;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= n || s[i] < '0' || s[i] > '9')
			return false;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	return i == n;
}

/* A timestamp's text as to_jsonb writes it: "2026-12-02T10:00:00.123+00:00". */
static int timestamp_write(buf *out, const char *s, size_t n, bool tz)
{
	char t[96];
	if (n < 19 || n > 64 || s[10] != ' ')
		return buf_json_string(out, s, n);
	memcpy(t, s, n);
	t[10] = 'T';
	size_t len = n;
	if (tz) {
		size_t i = n;
		while (i > 19 && t[i - 1] != '+' && t[i - 1] != '-')
			i--;
		if (i > 19 && n - i == 2) {
			memcpy(t + n, ":00", 3);
			len += 3;
		}
	}
	return buf_json_string(out, t, len);
}

/* One value as the server's JSON would carry it (realtime-js converts by the column type). */
static int value_write(buf *out, const change_value *v, uint32_t oid)
{
	if (v->kind == VALUE_NULL)
		return buf_append(out, "null", 4);
	switch (oid) {
	case 16:
		if (v->len == 1 && (v->data[0] == 't' || v->data[0] == 'f'))
			return buf_puts(out, v->data[0] == 't' ? "true" : "false");
		break;
	case 20: case 21: case 23: case 26: case 700: case 701: case 1700:
		if (is_number(v->data, v->len))
			return buf_append(out, v->data, v->len);
		break;
	case 114: case 3802: {
		json_error_t e;
		json_t *j = json_loadb(v->data, v->len, JSON_DECODE_ANY, &e);
		json_decref(j);
		if (j != NULL)
			return buf_append(out, v->data, v->len);
		break;
	}
	case 1114: case 1184:
		return timestamp_write(out, v->data, v->len, oid == 1184);
	default:
		break;
	}
	return buf_json_string(out, v->data, v->len);
}

static bool selected(const rt_binding *b, const char *col)
{
	if (b == NULL || b->select == NULL)
		return true;
	for (size_t i = 0; i < b->nselect; i++)
		if (strcmp(b->select[i], col) == 0)
			return true;
	return false;
}

/* {"col":value,...} of tuple; with small_only, only values of at most RT_BIG_VALUE bytes. */
static int record_write(buf *out, const relation *rel, const change_value *tuple, const rt_binding *b,
                        bool small_only)
{
	int rc = buf_putc(out, '{');
	bool first = true;
	for (int i = 0; rc == 0 && tuple != NULL && i < rel->ncols; i++) {
		const change_value *v = &tuple[i];
		if (v->kind == VALUE_ABSENT || v->kind == VALUE_UNCHANGED || !selected(b, rel->cols[i].name))
			continue;
		size_t mark = out->len;
		rc = first ? 0 : buf_putc(out, ',');
		if (rc == 0)
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
		if (rc == 0)
			rc = buf_putc(out, ':');
		size_t vstart = out->len;
		if (rc == 0)
			rc = value_write(out, v, rel->cols[i].type_oid);
		if (rc == 0 && small_only && out->len - vstart > RT_BIG_VALUE) {
			out->len = mark;
			out->data[mark] = '\0';
			continue;
		}
		first = false;
	}
	return rc == 0 ? buf_putc(out, '}') : rc;
}

/* The data object of view v for binding b (NULL: every column). */
static int data_write(buf *out, const change *v, const rt_binding *b, size_t max_record)
{
	const relation *rel = v->rel;
	const char *type = v->action == CHANGE_INSERT ? "INSERT" : v->action == CHANGE_UPDATE ? "UPDATE" : "DELETE";
	char ts[40] = "";
	int64_t us = v->txn != NULL ? v->txn->commit_time : 0;
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t k = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + k, sizeof(ts) - k, ".%03dZ", (int)((us % 1000000) / 1000));
	int rc = buf_puts(out, "{\"schema\":");
	if (rc == 0)
		rc = buf_json_string(out, rel->schema, strlen(rel->schema));
	if (rc == 0)
		rc = buf_puts(out, ",\"table\":");
	if (rc == 0)
		rc = buf_json_string(out, rel->name, strlen(rel->name));
	if (rc == 0)
		rc = buf_printf(out, ",\"commit_timestamp\":\"%s\",\"type\":\"%s\",\"columns\":[", ts, type);
	bool first = true;
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		if (!selected(b, rel->cols[i].name))
			continue;
		rc = buf_puts(out, first ? "{\"name\":" : ",{\"name\":");
		first = false;
		if (rc == 0)
			rc = buf_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name));
		/* a name from the stream may hold any character (a quoted identifier): escaped */
		const char *tn = rel->cols[i].type_name != NULL ? rel->cols[i].type_name : type_name(rel->cols[i].type_oid);
		if (rc == 0)
			rc = buf_puts(out, ",\"type\":");
		if (rc == 0)
			rc = buf_json_string(out, tn, strlen(tn));
		if (rc == 0)
			rc = buf_puts(out, "}");
	}
	if (rc == 0)
		rc = buf_putc(out, ']');
	bool big = false;
	if (rc == 0 && v->action != CHANGE_DELETE) {
		rc = buf_puts(out, ",\"record\":");
		size_t start = out->len;
		if (rc == 0)
			rc = record_write(out, rel, v->new_tuple, b, false);
		if (rc == 0 && out->len - start > max_record) {
			big = true;
			out->len = start;
			rc = record_write(out, rel, v->new_tuple, b, true);
		}
	}
	if (rc == 0 && v->action != CHANGE_INSERT) {
		rc = buf_puts(out, ",\"old_record\":");
		size_t start = out->len;
		if (rc == 0)
			rc = record_write(out, rel, v->old_tuple, b, big);
		if (rc == 0 && !big && out->len - start > max_record) {
			big = true;
			out->len = start;
			rc = record_write(out, rel, v->old_tuple, b, true);
		}
	}
	if (rc == 0)
		rc = buf_puts(out, big ? ",\"errors\":[\"Error 413: Payload Too Large\"]}" : ",\"errors\":null}");
	return rc;
}

static rt_data *data_build(realtime_sink *s, const change *v, const rt_binding *b)
{
	buf *t = &s->scratch;
	buf_clear(t);
	if (data_write(t, v, b, (size_t)s->conf.max_record_bytes) < 0)
		return NULL;
	rt_data *d = malloc(sizeof(*d) + t->len);
	if (d == NULL)
		return NULL;
	d->refs = 1;
	d->len = t->len;
	memcpy(d->text, t->data, t->len);
	s->st.data_built++;
	return d;
}

static void cache_drop(realtime_sink *s)
{
	audience_payload_unref(s->cache_payload);
	data_unref(s->cache_data);
	s->cache_payload = NULL;
	s->cache_data = NULL;
}

/* The shared data object of delivery d (one per audience), or NULL when out of memory. The
 * cache holds the reference returned. */
static rt_data *data_for(realtime_sink *s, const audience_delivery *d)
{
	if (d->payload != NULL && d->payload == s->cache_payload)
		return s->cache_data;
	cache_drop(s);
	rt_data *data = data_build(s, d->view, NULL);
	if (data == NULL)
		return NULL;
	s->cache_data = data;
	if (d->payload != NULL)
		s->cache_payload = audience_payload_ref(d->payload);
	return data;
}

/* ---- delivery -------------------------------------------------------------------------------- */

static bool name_match(const char *want, const char *have)
{
	return want == NULL || strcmp(want, "*") == 0 || strcmp(want, have) == 0;
}

static bool binding_match(realtime_sink *s, rt_chan *ch, size_t i, const change *v, unsigned ev)
{
	const rt_binding *b = &ch->join.bindings[i];
	if (!(b->events & ev) || !name_match(b->schema, v->rel->schema) || !name_match(b->table, v->rel->name))
		return false;
	rt_filter *f = ch->filters[i];
	if (f == NULL)
		return true;
	if (ch->broken[i] && ch->checked[i] == v->rel->id)
		return false;
	if (ch->checked[i] != v->rel->id) {
		char err[RT_FILTER_ERROR_MAX];
		ch->checked[i] = v->rel->id;
		ch->broken[i] = rt_filter_check(f, v->rel, err) < 0;
		if (ch->broken[i]) {
			char msg[RT_TEXT_MAX];
			snprintf(msg, sizeof(msg), "Unable to subscribe to changes with given parameters. Filter \"%s\" on "
			         "%s.%s: %s", b->filter, v->rel->schema, v->rel->name, err);
			log_info("realtime.filter", "sink=%s topic=%s: %s", s->name, ch->topic, msg);
			buf *t = &s->scratch;
			buf_clear(t);
			if (rt_system_write(t, ch->c->vsn, ch->topic, "postgres_changes", "error", msg,
			                    chan_name(ch)) == 0)
				(void)queue_buf(ch->c, t);
			return false;
		}
	}
	return rt_filter_match(f, v->rel, v->action == CHANGE_DELETE ? v->old_tuple : v->new_tuple);
}

static uint64_t pos_commit(const change *v)
{
	return v->txn != NULL ? v->txn->commit_lsn : 0;
}

/* Queues the postgres_changes frame of ids[0..n) around data (with its position when the sink
 * keeps a replay buffer). */
static int queue_change(realtime_sink *s, rt_chan *ch, const int64_t *ids, size_t n, rt_data *data,
                        uint64_t commit_lsn, uint64_t lsn)
{
	buf *t = &s->scratch;
	buf_clear(t);
	rt_head h = {ch->c->vsn, NULL, NULL, ch->topic, "postgres_changes"};
	int rc = rt_frame_open(t, &h);
	if (rc == 0)
		rc = buf_puts(t, "{");
	if (rc == 0 && s->replay != NULL)
		rc = buf_printf(t, "\"walcast_position\":\"%X/%X:%X/%X\",", (unsigned)(commit_lsn >> 32),
		                (unsigned)commit_lsn, (unsigned)(lsn >> 32), (unsigned)lsn);
	if (rc == 0)
		rc = buf_puts(t, "\"ids\":[");
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = buf_printf(t, i ? ",%lld" : "%lld", (long long)ids[i]);
	if (rc == 0)
		rc = buf_puts(t, "],\"data\":");
	size_t split = t->len;
	if (rc == 0)
		rc = buf_putc(t, '}');
	if (rc == 0)
		rc = rt_frame_close(t, &h);
	if (rc < 0)
		return rc;
	s->st.messages++;
	if (s->m_messages)
		metrics_counter_inc(s->m_messages);
	return queue_bytes(ch->c, t->data, t->len, split, data);
}

static int replay_deliver(realtime_sink *s, const audience_delivery *d);
static int chan_offer(realtime_sink *s, rt_chan *ch, const change *v, unsigned ev, const audience_delivery *d,
                      rt_data *shared);

static int rt_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	realtime_sink *s = impl;
	if (sub_arg == &s->replay_tag)
		return replay_deliver(s, d);
	rt_chan *ch = sub_arg;
	const change *v = d->view;
	if (v == NULL || v->rel == NULL || ch->held || ch->c->closing || (d->left_view && !ch->stay_true))
		return 0;
	unsigned ev = v->action == CHANGE_INSERT ? RT_EV_INSERT
	              : v->action == CHANGE_UPDATE ? RT_EV_UPDATE
	              : v->action == CHANGE_DELETE ? RT_EV_DELETE : 0;
	if (ev == 0)
		return 0;
	return chan_offer(s, ch, v, ev, d, NULL);
}

/* Queues view v (event ev) for every binding of ch it matches: the shared data object (d's,
 * through the cache, or shared when d is NULL) for those without a column list. */
static int chan_offer(realtime_sink *s, rt_chan *ch, const change *v, unsigned ev, const audience_delivery *d,
                      rt_data *shared)
{
	int64_t ids[RT_JOIN_MAX_BINDINGS];
	size_t n = 0;
	for (size_t i = 0; i < ch->join.n; i++) {
		if (!binding_match(s, ch, i, v, ev))
			continue;
		const rt_binding *b = &ch->join.bindings[i];
		if (b->select != NULL) {
			/* its own column list: a data object of its own */
			rt_data *own = data_build(s, v, b);
			if (own != NULL) {
				(void)queue_change(s, ch, &ch->ids[i], 1, own, pos_commit(v), v->lsn);
				data_unref(own);
			}
			continue;
		}
		ids[n++] = ch->ids[i];
	}
	if (n == 0)
		return 0;
	rt_data *data = d != NULL ? data_for(s, d) : shared;
	if (data == NULL)
		return 0; /* a live sink drops what it cannot take */
	(void)queue_change(s, ch, ids, n, data, pos_commit(v), v->lsn);
	return 0;
}

/* ---- resume: the replay buffer (rt_replay.h; docs/protocol.md "Resume") ------------------------ */

/* What the buffer keeps of one audience of a change: its data object and enough of the view to
 * match a channel's bindings (filters, column lists) at a resume as the live path does. */
typedef struct rt_kept {
	rt_data *data;
	const relation *rel;  /* referenced */
	change_txn txn;       /* commit_lsn, commit_time */
	change_action action;
	change_value *new_tuple, *old_tuple; /* NULL or rel->ncols values (their text in blob) */
	_Alignas(change_value) char blob[];
} rt_kept;

static void replay_payload_free(void *p)
{
	rt_kept *k = p;
	data_unref(k->data);
	relation_unref(k->rel);
	free(k);
}

static bool row_key_column(const relation *rel, int i, int id);

/* n rounded up so that the next tuple's values are aligned */
#define RT_ALIGN(n) (((n) + _Alignof(change_value) - 1) & ~(_Alignof(change_value) - 1))

/* Bytes tuple t (rel->ncols values; key_only: the identity columns only) takes in a kept blob. */
static size_t tuple_size(const relation *rel, const change_value *t, bool key_only, int id)
{
	size_t n = 0;
	for (int i = 0; t != NULL && i < rel->ncols; i++)
		if (t[i].kind == VALUE_TEXT && (!key_only || row_key_column(rel, i, id)))
			n += t[i].len + 1;
	return t != NULL ? RT_ALIGN(n) + (size_t)rel->ncols * sizeof(change_value) : 0;
}

static change_value *tuple_copy(const relation *rel, const change_value *t, bool key_only, int id, char **at)
{
	if (t == NULL)
		return NULL;
	change_value *out = (change_value *)(void *)*at;
	char *start = *at + (size_t)rel->ncols * sizeof(change_value), *text = start;
	for (int i = 0; i < rel->ncols; i++) {
		out[i] = t[i];
		if (key_only && !row_key_column(rel, i, id)) {
			out[i] = (change_value){VALUE_ABSENT, 0, NULL};
		} else if (t[i].kind == VALUE_TEXT) {
			memcpy(text, t[i].data, t[i].len);
			text[t[i].len] = '\0';
			out[i].data = text;
			text += t[i].len + 1;
		}
	}
	*at = start + RT_ALIGN((size_t)(text - start));
	return out;
}

/* A kept copy of view v around data (a reference is taken); a DELETE keeps its identity only. */
static rt_kept *kept_build(const change *v, rt_data *data, size_t *bytes)
{
	const relation *rel = v->rel;
	bool del = v->action == CHANGE_DELETE;
	int id = relation_column_index(rel, "id", 2);
	size_t n = sizeof(rt_kept) + tuple_size(rel, v->new_tuple, false, id) + tuple_size(rel, v->old_tuple, del, id);
	rt_kept *k = malloc(n);
	if (k == NULL)
		return NULL;
	char *at = k->blob;
	k->new_tuple = tuple_copy(rel, v->new_tuple, false, id, &at);
	k->old_tuple = tuple_copy(rel, v->old_tuple, del, id, &at);
	k->txn = *v->txn;
	k->action = v->action;
	k->rel = relation_ref(rel);
	k->data = data;
	data->refs++;
	*bytes = n + sizeof(*data) + data->len;
	return k;
}

/* A membership change of the commit state, recorded in the open transaction. */
static void replay_state_cb(void *arg, const policy_state_uuid *org, const policy_state_uuid *user, int old_rank,
                            int new_rank)
{
	realtime_sink *s = arg;
	int rc = rt_replay_rank_change(s->replay, org->b, user->b, old_rank, new_rank);
	if (rc == -ENOMEM)
		log_warn("realtime.replay", "sink=%s: out of memory: resumes before now get the gap signal", s->name);
}

/* Follows the pipeline's commit state (the one sink_env.state reads; the sink only observes it). */
static void replay_hook(realtime_sink *s)
{
	policy_state *ps = s->env->state != NULL ? (policy_state *)s->env->state(s->env->env_arg) : NULL;
	if (ps == s->replay_state)
		return;
	if (s->replay_state != NULL)
		policy_state_remove_change_cb(s->replay_state, replay_state_cb, s);
	s->replay_state = NULL;
	if (ps != NULL && policy_state_add_change_cb(ps, replay_state_cb, s) == 0)
		s->replay_state = ps;
	else if (ps != NULL)
		log_warn("realtime.replay", "sink=%s: cannot follow membership changes: resume is off", s->name);
}

static void replay_begin(realtime_sink *s, const change_txn *txn)
{
	replay_hook(s);
	if (s->env->state != NULL && s->env->pol != NULL && s->replay_state == NULL) {
		rt_replay_reset(s->replay); /* membership changes unknown: nothing can be replayed */
		return;
	}
	int rc = rt_replay_begin(s->replay, txn->commit_lsn, now_s());
	if (rc == -EALREADY)
		log_info("realtime.replay", "sink=%s commit_lsn=%llX: the stream went back: the replay buffer starts "
		         "again", s->name, (unsigned long long)txn->commit_lsn);
	else if (rc < 0)
		log_warn("realtime.replay", "sink=%s: out of memory: resumes before now get the gap signal", s->name);
}

/* Whether column i identifies the row: the column `id` when the table has one (under REPLICA
 * IDENTITY FULL every column is flagged key, and other values may change between an INSERT and
 * the DELETE), else every replica identity column. */
static bool row_key_column(const relation *rel, int i, int id)
{
	return id >= 0 ? i == id : rel->cols[i].key;
}

/* The row's identity values as text, comma-separated: the erasure key. */
static int row_key(buf *out, const change *v)
{
	const change_value *t = v->action == CHANGE_DELETE ? v->old_tuple : v->new_tuple;
	int id = relation_column_index(v->rel, "id", 2);
	buf_clear(out);
	int rc = buf_puts(out, "");
	for (int i = 0; rc == 0 && t != NULL && i < v->rel->ncols; i++) {
		if (!row_key_column(v->rel, i, id) || t[i].kind != VALUE_TEXT)
			continue;
		if (out->len > 0)
			rc = buf_putc(out, ',');
		if (rc == 0)
			rc = buf_json_string(out, t[i].data, t[i].len);
	}
	return rc;
}

static unsigned event_of(const change *v)
{
	return v->action == CHANGE_INSERT ? RT_EV_INSERT : v->action == CHANGE_UPDATE ? RT_EV_UPDATE
	       : v->action == CHANGE_DELETE ? RT_EV_DELETE : 0;
}

/* One audience of a change, offered to the wildcard subscriber: kept for later resumes. A DELETE
 * drops the row's earlier payloads (erasure) and is kept with its key columns only. */
static int replay_deliver(realtime_sink *s, const audience_delivery *d)
{
	const change *v = d->view;
	if (v == NULL || v->rel == NULL || v->txn == NULL || event_of(v) == 0)
		return 0;
	rt_replay_item it = {.lsn = v->lsn, .action = event_of(v), .schema = v->rel->schema, .table = v->rel->name};
	policy_state_uuid u;
	if (d->bypass) {
		it.kind = RT_REPLAY_BYPASS;
	} else {
		it.kind = d->individual ? RT_REPLAY_INDIVIDUAL : RT_REPLAY_RANK;
		it.rank = d->rank;
		if (d->org == NULL || policy_state_uuid_parse(d->org, strlen(d->org), &u) < 0)
			return 0;
		memcpy(it.org, u.b, 16);
		if (d->individual) {
			if (d->uid == NULL || policy_state_uuid_parse(d->uid, strlen(d->uid), &u) < 0)
				return 0;
			memcpy(it.uid, u.b, 16);
		}
	}
	buf *key = &s->replay_key;
	rt_data *data = NULL;
	if (row_key(key, v) < 0)
		return 0;
	it.pk = key->data;
	if (v->action == CHANGE_DELETE) {
		if (v->lsn != s->replay_erased) {
			s->replay_erased = v->lsn;
			(void)rt_replay_erase(s->replay, it.schema, it.table, it.pk);
		}
		const char *names[RT_REPLAY_KEY_MAX];
		rt_binding kb = {.select = names};
		int id = relation_column_index(v->rel, "id", 2);
		for (int i = 0; i < v->rel->ncols && kb.nselect < RT_REPLAY_KEY_MAX; i++)
			if (row_key_column(v->rel, i, id))
				names[kb.nselect++] = v->rel->cols[i].name;
		data = data_build(s, v, &kb);
	} else if ((data = data_for(s, d)) != NULL) {
		data->refs++;
	}
	size_t bytes = 0;
	rt_kept *k = data != NULL ? kept_build(v, data, &bytes) : NULL;
	data_unref(data);
	int rc = k != NULL ? rt_replay_add(s->replay, &it, k, bytes) : data != NULL ? -ENOMEM : 0;
	if (rc < 0 && k != NULL)
		replay_payload_free(k);
	if (rc == -ENOMEM) {
		log_warn("realtime.replay", "sink=%s: out of memory: resumes before now get the gap signal", s->name);
	}
	return 0;
}

typedef struct resume_ctx {
	realtime_sink *s;
	rt_chan *ch;
	policy_state_uuid uid;
} resume_ctx;

static int resume_rank_now(void *arg, const uint8_t org[16])
{
	resume_ctx *r = arg;
	policy_state_uuid o;
	memcpy(o.b, org, 16);
	const policy_state *ps = r->s->env->state != NULL ? r->s->env->state(r->s->env->env_arg) : NULL;
	return ps != NULL ? policy_state_rank_uuid(ps, &o, &r->uid) : 0;
}

/* One missed change: a frame for each binding it matches, as the live path would queue it. */
static int resume_cb(void *arg, uint64_t commit_lsn, const rt_replay_item *it, void *payload)
{
	resume_ctx *r = arg;
	rt_chan *ch = r->ch;
	rt_kept *k = payload;
	(void)commit_lsn;
	change v = {.action = k->action, .lsn = it->lsn, .txn = &k->txn, .rel = k->rel, .new_tuple = k->new_tuple,
	            .old_tuple = k->old_tuple};
	(void)chan_offer(r->s, ch, &v, it->action, NULL, k->data);
	return ch->c->closing ? -EPIPE : 0;
}

/* Right after the join's answer: what the channel missed since its resume position, then a
 * system message saying how many changes were replayed, or the gap signal. */
static void chan_resume(rt_chan *ch)
{
	rt_conn *c = ch->c;
	realtime_sink *s = c->s;
	char msg[RT_TEXT_MAX];
	const char *status = "error";
	if (s->replay == NULL) {
		snprintf(msg, sizeof(msg), "Resume is not enabled on this server (replay_bytes = 0): refetch");
	} else {
		resume_ctx r = {s, ch, {{0}}};
		rt_replay_who who = {.bypass = ch->who.bypass, .rank_now = resume_rank_now, .arg = &r};
		if (!ch->who.bypass && ch->who.uid[0] != '\0' &&
		    policy_state_uuid_parse(ch->who.uid, strlen(ch->who.uid), &r.uid) == 0)
			memcpy(who.uid, r.uid.b, 16);
		int rc = rt_replay_since(s->replay, ch->resume_commit, ch->resume_lsn, &who, resume_cb, &r);
		if (rc >= 0) {
			status = "ok";
			snprintf(msg, sizeof(msg), "Resumed: %d changes replayed", rc);
		} else if (rc == -ERANGE) {
			snprintf(msg, sizeof(msg), "Resume gap: the replay buffer no longer reaches back to that position: "
			         "refetch");
		} else {
			snprintf(msg, sizeof(msg), "Resume failed: %s: refetch", strerror(-rc));
		}
	}
	if (c->closing)
		return;
	buf *b = &s->scratch;
	buf_clear(b);
	if (rt_system_write(b, c->vsn, ch->topic, "walcast_resume", status, msg, chan_name(ch)) == 0)
		(void)queue_buf(c, b);
}

/* config.postgres_changes_options.walcast_resume_from of a join: "C/C:L/L" (a walcast_position). */
static int resume_parse(realtime_sink *s, const json_t *payload, rt_chan *ch, char reason[RT_TEXT_MAX])
{
	(void)s;
	json_t *o = json_object_get(json_object_get(json_object_get(payload, "config"), "postgres_changes_options"),
	                            "walcast_resume_from");
	if (o == NULL || json_is_null(o))
		return 0;
	unsigned ch1, cl, lh, ll;
	char end;
	if (!json_is_string(o) ||
	    sscanf(json_string_value(o), "%X/%X:%X/%X%c", &ch1, &cl, &lh, &ll, &end) != 4) {
		snprintf(reason, RT_TEXT_MAX, "Invalid walcast_resume_from: expected a walcast_position such as "
		         "\"0/16B37A0:0/16B3748\"");
		return -EINVAL;
	}
	ch->resume = true;
	ch->resume_commit = (uint64_t)ch1 << 32 | cl;
	ch->resume_lsn = (uint64_t)lh << 32 | ll;
	return 0;
}

/* ---- a view that stays true (docs/protocol.md) ------------------------------------------------ */

/* config.postgres_changes_options.walcast_view: absent or null (the server's behaviour), or
 * "stay_true". 0, or -EINVAL with the refusal's reason. */
static int view_parse(const json_t *payload, rt_chan *ch, char reason[RT_TEXT_MAX])
{
	json_t *o = json_object_get(json_object_get(json_object_get(payload, "config"), "postgres_changes_options"),
	                            "walcast_view");
	if (o == NULL || json_is_null(o))
		return 0;
	if (!json_is_string(o) || strcmp(json_string_value(o), "stay_true") != 0) {
		snprintf(reason, RT_TEXT_MAX, "Invalid walcast_view: expected \"stay_true\"");
		return -EINVAL;
	}
	ch->stay_true = true;
	return 0;
}

/* What the user of an opted-in channel may see changed (a role change, a removal, a new
 * membership): a system message so that the page refetches. */
static void view_changed(rt_chan *ch)
{
	buf *b = &ch->c->s->scratch;
	buf_clear(b);
	if (rt_system_write(b, ch->c->vsn, ch->topic, "walcast_view", "ok", "View changed: refetch", chan_name(ch)) == 0)
		(void)queue_buf(ch->c, b);
}

/* sink_env.rule_watch: a privacy rule changed in the transaction being committed. */
static void rule_cb(void *arg)
{
	((realtime_sink *)arg)->rules_changed = true;
}

/* At the commit of a transaction that changed privacy rules: every opted-in channel of a user
 * that rules apply to (not bypass) gets the walcast_view message, once. */
static void rules_changed_flush(realtime_sink *s)
{
	s->rules_changed = false;
	for (rt_conn *c = s->conns; c != NULL; c = c->next)
		for (rt_chan *ch = c->chans; ch != NULL; ch = ch->next)
			if (ch->joined && ch->stay_true && !ch->who.bypass && ch->who.uid[0])
				view_changed(ch);
}

static int metric(realtime_sink *s, metrics_kind kind, const char *name, const char *help,
                  metrics_counter **counter, metrics_read_cb cb);

static int read_replay_bytes(void *arg, double *value)
{
	const realtime_sink *s = arg;
	*value = s->replay != NULL ? (double)rt_replay_bytes(s->replay) : 0;
	return 0;
}

static int replay_init(realtime_sink *s, char err[SINK_ERROR_MAX])
{
	int rc = rt_replay_create((size_t)s->conf.replay_bytes, s->conf.replay_seconds, replay_payload_free, &s->replay);
	if (rc == 0 && s->env->metrics != NULL)
		rc = metric(s, METRICS_GAUGE_I, "walcast_realtime_replay_bytes",
		            "Bytes held by the realtime sink's replay buffer (resume)", NULL, read_replay_bytes);
	if (rc == 0 && s->env->subscribe != NULL)
		rc = s->env->subscribe(s->env->env_arg, &s->replay_tag, NULL, false, true, &s->replay_sub);
	if (rc < 0)
		snprintf(err, SINK_ERROR_MAX, "replay buffer: %s", strerror(-rc));
	return rc;
}

static void replay_fini(realtime_sink *s)
{
	if (s->replay_sub != NULL && s->env->unsubscribe != NULL)
		s->env->unsubscribe(s->env->env_arg, s->replay_sub);
	s->replay_sub = NULL;
	if (s->replay_state != NULL)
		policy_state_remove_change_cb(s->replay_state, replay_state_cb, s);
	s->replay_state = NULL;
	rt_replay_destroy(s->replay);
	s->replay = NULL;
	buf_fini(&s->replay_key);
}

static int rt_begin(void *impl, const change_txn *txn)
{
	realtime_sink *s = impl;
	if (s->replay != NULL)
		replay_begin(s, txn);
	return 0;
}

static int rt_commit(void *impl, const change_txn *txn)
{
	realtime_sink *s = impl;
	(void)txn;
	if (s->replay != NULL)
		rt_replay_commit(s->replay, now_s());
	cache_drop(s);
	if (s->rules_changed)
		rules_changed_flush(s);
	dirty_flush(s);
	return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int metric(realtime_sink *s, metrics_kind kind, const char *name, const char *help,
                  metrics_counter **counter, metrics_read_cb cb)
{
	metrics_desc d = {.kind = kind, .name = name, .help = help};
	return sink_metrics_add(&s->metrics, s->env, "realtime.metrics", &d, counter, NULL, cb, s);
}

static int read_connections(void *arg, double *value)
{
	*value = (double)((realtime_sink *)arg)->st.connections;
	return 0;
}

static int read_channels(void *arg, double *value)
{
	*value = (double)((realtime_sink *)arg)->st.channels;
	return 0;
}

static void rt_destroy(void *impl)
{
	realtime_sink *s = impl;
	if (s == NULL)
		return;
	while (s->conns != NULL) {
		rt_conn *c = s->conns;
		if (c->pss != NULL)
			*c->pss = NULL;
		conn_destroy(c);
	}
	if (s->timer > 0)
		loop_timer_cancel(s->env->loop, s->timer);
	replay_fini(s);
	cache_drop(s);
	sink_metrics_remove(&s->metrics, s->env);
	token_auth_fini(&s->auth);
	buf_fini(&s->scratch);
	buf_fini(&s->wbuf);
	free(s->name);
	free(s);
}

static int rt_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	const realtime_conf *c = conf;
	int rc = -ENOMEM;
	realtime_sink *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->env = env;
	s->conf = *c;
	buf_init(&s->scratch);
	buf_init(&s->wbuf);
	buf_init(&s->replay_key);
	if ((s->name = strdup(env->name ? env->name : "realtime")) == NULL)
		goto fail;
	s->drop = c->slow_consumer != NULL && strcmp(c->slow_consumer, "drop") == 0;
	s->conf.slow_consumer = NULL;
	if (env->cfg != NULL) {
		const config *cfg = env->cfg;
		char terr[TOKEN_ERROR_MAX];
		if ((rc = token_auth_refresh(&s->auth, cfg, terr)) < 0) {
			snprintf(err, SINK_ERROR_MAX, "%s", terr);
			goto fail;
		}
		if (s->auth.keys == NULL)
			log_warn("realtime.no_keys", "sink=%s: neither auth.jwt_secret nor auth.jwks_file is set: every "
			         "join will be refused", s->name);
	}
	s->proto = (struct lws_protocols){
		.name = "walcast-realtime", .callback = rt_lws_cb, .per_session_data_size = sizeof(rt_conn *),
		.rx_buffer_size = RT_RX_BUFFER, .user = s, .tx_packet_size = RT_TX_PACKET,
	};
	s->proto_http = s->proto;
	s->proto_http.name = "walcast-realtime-socket";
	if (env->http != NULL) {
		if ((rc = http_add_protocol(env->http, &s->proto, "/realtime/v1", true)) < 0 ||
		    (rc = http_add_protocol(env->http, &s->proto_http, "/socket", false)) < 0) {
			snprintf(err, SINK_ERROR_MAX, "cannot add the WebSocket protocol to the HTTP listener: %s",
			         strerror(-rc));
			goto fail;
		}
	} else if (env->loop != NULL) {
		snprintf(err, SINK_ERROR_MAX, "a realtime sink needs the HTTP listener: set [http] listen");
		rc = -EINVAL;
		goto fail;
	}
	if (env->metrics != NULL &&
	    ((rc = metric(s, METRICS_GAUGE_I, "walcast_realtime_connections",
	                  "WebSocket connections open on the realtime sink", NULL, read_connections)) < 0 ||
	     (rc = metric(s, METRICS_GAUGE_I, "walcast_realtime_channels",
	                  "Channels joined on the realtime sink (held joins included)", NULL, read_channels)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_realtime_messages_total",
	                  "postgres_changes messages queued for clients", &s->m_messages, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_realtime_frames_sent_total",
	                  "WebSocket frames written to clients (changes, replies, system messages)", &s->m_sent,
	                  NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_realtime_writes_total",
	                  "Socket writes carrying those frames (the frames queued together go out in one write)",
	                  &s->m_writes, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_realtime_dropped_messages_total",
	                  "Messages dropped because a client's queue was full", &s->m_dropped, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_realtime_slow_disconnects_total",
	                  "Connections closed because their queue was full", &s->m_slow, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_realtime_refused_total",
	                  "WebSocket handshakes refused (no key, bad token, too many connections)", &s->m_refused,
	                  NULL)) < 0)) {
		snprintf(err, SINK_ERROR_MAX, "metrics: %s", strerror(-rc));
		goto fail;
	}
	/* the shared series (every live sink's drops and connections, one family each) */
	if (env->live_metrics != NULL && env->live_metrics(env->env_arg, &s->m_sink_drops, read_connections, s) < 0)
		log_warn("realtime.metrics", "sink=%s: walcast_sink_drops_total and walcast_connections left out", s->name);
	if (env->rule_watch != NULL && env->rule_watch(env->env_arg, rule_cb, s) < 0)
		log_warn("realtime.view", "sink=%s: privacy-rule changes are not sent to walcast_view channels", s->name);
	if (env->member_watch != NULL && env->member_watch(env->env_arg, member_cb, s) < 0)
		log_warn("realtime.audit", "sink=%s: memberships that stream while a channel is joined are not audited, "
		         "nor sent to walcast_view channels", s->name);
	if (c->replay_bytes > 0 && (rc = replay_init(s, err)) < 0)
		goto fail;
	if (env->loop != NULL) {
		int t = loop_timer_add(env->loop, RT_TICK_MS, tick_cb, s);
		if (t < 0) {
			rc = t;
			snprintf(err, SINK_ERROR_MAX, "timer: %s", strerror(-rc));
			goto fail;
		}
		s->timer = t;
	}
	*out = s;
	return 0;
fail:
	if (err[0] == '\0')
		snprintf(err, SINK_ERROR_MAX, "%s", strerror(-rc));
	rt_destroy(s);
	return rc;
}

void realtime_sink_get_stats(void *impl, realtime_stats *out)
{
	*out = ((realtime_sink *)impl)->st;
}

/* ---- test connections ------------------------------------------------------------------------ */

int realtime_test_open(void *impl, const char *vsn, const char *apikey, rt_conn **out)
{
	rt_vsn v;
	if (rt_vsn_parse(vsn, &v) < 0)
		return -EINVAL;
	rt_conn *c = conn_create(impl, NULL, v, apikey);
	if (c == NULL)
		return -ENOMEM;
	*out = c;
	return 0;
}

int realtime_test_feed(rt_conn *c, const char *text, size_t len)
{
	if (c->closing)
		return -EPIPE;
	conn_receive(c, text, len);
	dirty_flush(c->s);
	return 0;
}

int realtime_test_feed_binary(rt_conn *c, const void *data, size_t len)
{
	if (c->closing)
		return -EPIPE;
	conn_receive_binary(c, (const char *)data, len);
	dirty_flush(c->s);
	return 0;
}

int realtime_test_pop(rt_conn *c, buf *out)
{
	buf_clear(out);
	rt_frame *f = c->qhead;
	if (f == NULL)
		return 0;
	int rc = buf_append(out, f->own, f->split);
	if (rc == 0 && f->shared != NULL)
		rc = buf_append(out, f->shared->text, f->shared->len);
	if (rc == 0)
		rc = buf_append(out, f->own + f->split, f->len - f->split);
	if (rc < 0)
		return rc;
	c->qhead = f->next;
	if (c->qhead == NULL)
		c->qtail = NULL;
	c->qbytes -= frame_size(f);
	c->qframes--;
	frame_free(f);
	return 1;
}

size_t realtime_test_queued(const rt_conn *c)
{
	return c->qframes;
}

bool realtime_test_closing(const rt_conn *c)
{
	return c->closing;
}

void realtime_test_tick(void *impl, int64_t now)
{
	sink_tick(impl, now);
}

void realtime_test_close(rt_conn *c)
{
	conn_destroy(c);
}

/* ---- configuration --------------------------------------------------------------------------- */

#define KEY(n, t, f, def, lo, hi, h) \
	{"sink", n, t, offsetof(realtime_conf, f), def, lo, hi, false, h}
static const config_key realtime_keys[] = {
	KEY("max_connections", CONFIG_INT, max_connections, "10000", 1, 1000000,
	    "WebSocket connections at once; the next handshake gets 429 Too many connected users"),
	KEY("max_channels", CONFIG_INT, max_channels, "100", 1, 10000,
	    "channels one connection may join; more are refused (ChannelRateLimitReached)"),
	KEY("max_joins_per_second", CONFIG_INT, max_joins_per_second, "100", 1, 100000,
	    "phx_join messages one connection may send per second; more are refused"),
	KEY("max_queue_bytes", CONFIG_SIZE, max_queue_bytes, "4MB", 4096, INT64_C(1) << 32,
	    "bytes queued for one connection that has not read them yet"),
	KEY("max_queue_frames", CONFIG_INT, max_queue_frames, "10000", 16, 10000000,
	    "messages queued for one connection that has not read them yet"),
	KEY("slow_consumer", CONFIG_ENUM, slow_consumer, "disconnect",
	    0, 0, "disconnect|drop: what a full queue does — send the client an error and close the "
	    "connection, or drop the new messages (counted)"),
	KEY("max_message_bytes", CONFIG_SIZE, max_message_bytes, "1MB", 1024, INT64_C(1) << 30,
	    "largest message a client may send; a larger one closes the connection (1009)"),
	KEY("max_record_bytes", CONFIG_SIZE, max_record_bytes, "1MB", 64, INT64_C(1) << 30,
	    "a record larger than this is sent with errors [\"Error 413: Payload Too Large\"] and only "
	    "its values of 64 bytes or less"),
	KEY("replay_bytes", CONFIG_SIZE, replay_bytes, "0", 0, INT64_C(1) << 34,
	    "memory of the replay buffer that lets a reconnecting client resume from its last position "
	    "(docs/protocol.md, Resume); 0 turns resume off"),
	KEY("replay_seconds", CONFIG_INT, replay_seconds, "300", 1, 86400,
	    "how long a transaction stays in the replay buffer; older positions get the gap signal"),
};
#undef KEY

const sink_ops realtime_sink_ops = {
	.name = "realtime",
	.kind = SINK_LIVE,
	.keys = realtime_keys,
	.nkeys = sizeof(realtime_keys) / sizeof(realtime_keys[0]),
	.conf_size = sizeof(realtime_conf),
	.create = rt_create,
	.destroy = rt_destroy,
	.position = NULL,
	.begin = rt_begin,
	.deliver = rt_deliver,
	.commit = rt_commit,
};
