/*
 * pipeline — the one path from the WAL to every sink (see pipeline.h for the contract).
 *
 * Design. The source hands decoded changes to the audience (which drives the privacy stage):
 * they are held until their commit, where the sinks are offered the transaction — begin for
 * every sink, the audience's deliveries routed to the subscribers' sinks, commit for every sink
 * — so a durable sink can advance its position over transactions none of its subscribers sees.
 * A non-transactional message is delivered as it comes, outside begin/commit.
 *
 * Acknowledgement. After every commit, progress() of a sink and a periodic tick: the flush LSN
 * is the lowest position() of the durable sinks (with none, the end of the last transaction
 * offered), and never past what the policy-state checkpoint has synced: a transaction that
 * changed policy rows appends them to the store at its commit, and the store is synced before
 * any LSN at or past that transaction is confirmed. Nor past the last transaction judged: a
 * durable sink's position may lie ahead of it after a resume where the state is known (a kill
 * before the store synced), and until the replay reaches that position the store does not know
 * the state there. The confirmed LSN is also recorded in the store as the position "pipeline"
 * (the resume point when no durable sink is configured).
 *
 * Memory bound. When the durable sinks' pending_bytes() sum passes pipeline.max_pending, the
 * source stops reading (pause); below half of it, it reads again. Live sinks are offered
 * what is committed, so while a durable sink stalls they see nothing new either (the stream is
 * paused for everyone): docs/architecture.md, "The pipeline".
 *
 * Without a policy (`walcast tail` without a viewer, jsonl_run) there is nothing to judge at a
 * commit, so nothing is held: each change is offered to the sinks as it arrives (audience_publish:
 * the bypass audience only), between the sinks' begin and commit, and a transaction cut off by a
 * lost connection is aborted in every sink (a file sink cuts its lines back). A drain leaves a
 * transaction in progress open: destroying the sink cuts it.
 *
 * The policy rows a transaction changed come from the privacy stage's journal
 * (privacy_set_journal) while it commits, and are appended to the store with the
 * transaction's end LSN: O(policy rows changed) per transaction, nothing for the others.
 */
#include "pipeline.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lsn.h"
#include "policy_state.h"
#include "pipeline_metrics.h"
#include "policy_loader.h"
#include "privacy.h"
#include "relcache.h"
#include "txn_source.h"

#define PIPELINE_TICK_MS 100
#define PIPELINE_POSITION "pipeline"

typedef struct pl_sink pl_sink;

typedef struct pl_sub {
	pl_sink *sink;
	void *sub_arg;
	audience_sub *h;
	struct pl_sub *next;
} pl_sub;

struct pl_sink {
	pipeline *pl;
	const sink_ops *ops;
	char *name;
	void *impl;
	sink_env env;
	pl_sub *subs;
	bool has_metrics;
	pipeline_metrics_sink m;
	policy_state_change_cb watch; /* sink_env.member_watch, removed with the sink */
	void *watch_arg;
	void (*rule_cb)(void *arg);   /* sink_env.rule_watch */
	void *rule_arg;
};

/* One checkpoint row being gathered (values owned). */
typedef struct jrow {
	int table;
	char *v[3];
	int deleted;
} jrow;

struct pipeline {
	pipeline_params p;
	policy *own_pol; /* an empty policy when p.pol is NULL */
	const policy *pol;
	relcache *rels;
	const txn_source_ops *src_ops; /* where the transactions come from (txn_source.h) */
	void *src;
	privacy *pv;
	audience *aud;
	pl_sink **sinks;
	size_t nsinks, ndurable;

	bool started, stopped, draining, fatal;
	bool finishing;       /* pipeline_finish: waits for no pending bytes, not for txn_end */
	bool pass;            /* no policy: changes are offered as they arrive (see the top) */
	bool state_ready;     /* the policy state is loaded */
	bool in_txn;
	bool txn_policy;      /* the transaction touches a policy table */
	bool paused;
	int tick_timer, drain_timer, stop_timer;
	int stop_code;
	size_t max_pending;

	uint64_t resume_lsn;
	uint64_t offered_end; /* end of the last transaction (or message) offered to the sinks */
	uint64_t txn_end;     /* end of the last transaction offered */
	uint64_t judged_end;  /* end of the last transaction (or message) judged, its policy rows in
	                       * the store: the state is known there, so no confirm goes further */
	uint64_t confirmed;
	uint64_t ckpt_unsynced; /* lowest LSN appended to the store since its last sync (0: none) */
	bool ckpt_failed;
	uint64_t compact_failed_at; /* log bytes when compaction last failed (retry a MB later) */

	jrow *rows;
	size_t nrows, rows_cap;

	policy_loader *loader;  /* the new slot's snapshot being loaded */
	uint64_t snapshot_lsn;  /* its consistent point */
	pipeline_metrics *pm; /* with p.metrics */
	uint64_t decode_errors; /* the source's decode errors already counted in pm */
	pipeline_status st;
};

static void pl_stop(pipeline *pl, int code);
static void ack_update(pipeline *pl);
static void drain_check(pipeline *pl);

static void pl_event(pipeline *pl, pipeline_event ev, uint64_t lsn)
{
	if (pl->p.event_cb != NULL)
		pl->p.event_cb(pl->p.arg, ev, lsn);
}

/* begin for every sink (at the commit; without a policy, as the transaction begins). 0, or 1
 * when a sink failed (the pipeline stops). */
static int sinks_begin(pipeline *pl, const change_txn *txn);

/* ---- checkpoint rows ------------------------------------------------------------------- */

static void rows_clear(pipeline *pl)
{
	for (size_t i = 0; i < pl->nrows; i++)
		for (int k = 0; k < 3; k++)
			free(pl->rows[i].v[k]);
	pl->nrows = 0;
}

static int row_add(pipeline *pl, int table, const char *const *v, int deleted)
{
	if (pl->nrows == pl->rows_cap) {
		size_t cap = pl->rows_cap ? pl->rows_cap * 2 : 16;
		jrow *r = realloc(pl->rows, cap * sizeof(*r));
		if (r == NULL)
			return -ENOMEM;
		pl->rows = r;
		pl->rows_cap = cap;
	}
	jrow *r = &pl->rows[pl->nrows];
	*r = (jrow){.table = table, .deleted = deleted};
	for (int k = 0; k < 3; k++) {
		if (v[k] != NULL && (r->v[k] = strdup(v[k])) == NULL) {
			for (int j = 0; j < k; j++)
				free(r->v[j]);
			return -ENOMEM;
		}
	}
	pl->nrows++;
	return 0;
}

/* The privacy stage's journal: one policy row a commit applied to the committed state. */
static void journal_cb(void *arg, int table, const char *const *values, bool deleted)
{
	pipeline *pl = arg;
	if (table == POLICY_STATE_RULES)
		for (size_t i = 0; i < pl->nsinks; i++)
			if (pl->sinks[i]->rule_cb != NULL)
				pl->sinks[i]->rule_cb(pl->sinks[i]->rule_arg);
	if (row_add(pl, table, values, deleted) < 0)
		pl->ckpt_failed = true;
}

/* Appends the gathered rows of the transaction ending at lsn to the store. */
static int journal_write(pipeline *pl, uint64_t lsn)
{
	if (pl->p.store == NULL || pl->nrows == 0)
		return 0;
	checkpoint_row *cr = calloc(pl->nrows, sizeof(*cr));
	if (cr == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < pl->nrows; i++)
		cr[i] = (checkpoint_row){pl->rows[i].table, (const char *const *)pl->rows[i].v, pl->rows[i].deleted};
	char err[CHECKPOINT_ERROR_MAX] = "";
	int rc = pl->p.store->ops->append(pl->p.store->impl, lsn, cr, pl->nrows, err);
	free(cr);
	if (rc < 0) {
		char t[LSN_TEXT_MAX];
		log_error("pipeline.checkpoint_append", "lsn=%s: %s", lsn_format(lsn, t), err);
		return rc;
	}
	if (pl->ckpt_unsynced == 0)
		pl->ckpt_unsynced = lsn;
	return 0;
}

/* ---- loading the state from the store -------------------------------------------------- */

typedef struct load_ctx {
	pipeline *pl;
	size_t n;
} load_ctx;

/* Replays one stored row over the state. */
static int load_row_cb(void *arg, const checkpoint_row *row)
{
	load_ctx *x = arg;
	x->n++;
	int rc = row->deleted ? privacy_remove_row(x->pl->pv, row->table, row->values)
	                      : privacy_load_row(x->pl->pv, row->table, row->values);
	if (rc < 0)
		log_error("pipeline.checkpoint_load", "a stored policy row is unreadable: %s", privacy_error(x->pl->pv));
	return rc;
}

/* Loads the state as of at from the store: 1 loaded (*state_lsn: what it is as of, <= at), 0
 * the store holds none, or a negative errno. */
static int state_from_store(pipeline *pl, uint64_t at, uint64_t *state_lsn)
{
	load_ctx x = {pl, 0};
	char err[CHECKPOINT_ERROR_MAX] = "";
	*state_lsn = 0;
	privacy_clear(pl->pv);
	int rc = pl->p.store->ops->load(pl->p.store->impl, at, load_row_cb, &x, state_lsn, err);
	if (rc < 0) {
		log_error("pipeline.checkpoint_load", "%s", err[0] ? err : strerror(-rc));
		privacy_clear(pl->pv);
		return rc;
	}
	if (*state_lsn == 0 && x.n == 0)
		return 0;
	char a[LSN_TEXT_MAX];
	log_info("pipeline.state_loaded", "policy state loaded from the checkpoint as of %s (%zu rows)",
	         lsn_format(*state_lsn, a), x.n);
	return 1;
}

typedef struct dump_ctx {
	checkpoint_row_cb row_cb;
	void *row_arg;
} dump_ctx;

static int dump_row_cb(void *arg, int table, const char *const *values)
{
	dump_ctx *x = arg;
	checkpoint_row r = {table, values, 0};
	return x->row_cb(x->row_arg, &r);
}

/* compact's dump: the committed state, whole. */
static int state_dump_cb(void *arg, checkpoint_row_cb row_cb, void *row_arg)
{
	pipeline *pl = arg;
	dump_ctx x = {row_cb, row_arg};
	return policy_state_dump(privacy_state(pl->pv), dump_row_cb, &x);
}

/* Writes the whole state as the store's base as of lsn (after a load from the database, or to
 * fold the log); with start, lsn is also where the pipeline resumes from now on. */
static int state_base_write(pipeline *pl, uint64_t lsn, bool start)
{
	if (pl->p.store == NULL)
		return 0;
	char err[CHECKPOINT_ERROR_MAX] = "";
	int rc = pl->p.store->ops->compact(pl->p.store->impl, lsn, state_dump_cb, pl, err);
	if (rc == 0 && start && (rc = pl->p.store->ops->position_put(pl->p.store->impl, PIPELINE_POSITION, lsn)) == 0)
		rc = pl->p.store->ops->sync(pl->p.store->impl, lsn, err);
	if (rc < 0)
		log_error("pipeline.checkpoint_write", "%s", err[0] ? err : strerror(-rc));
	return rc;
}

/* Loads the policy state of the current database through an ordinary connection, blocking:
 * only for an existing slot whose checkpoint holds no state (a new slot's snapshot is loaded
 * asynchronously: snapshot_cb). */
static int state_from_db(pipeline *pl, const char *snapshot)
{
	if (pl->p.pol == NULL)
		return 0; /* no policy stage: no state to load */
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {pl->p.cfg->conninfo, "walcast-state", NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	char err[PRIVACY_ERROR_MAX];
	int rc = -EIO;
	if (conn != NULL)
		PQsetNoticeProcessor(conn, log_pg_notice, "state");
	if (PQstatus(conn) != CONNECTION_OK) {
		log_error("pipeline.state_load", "cannot connect to load the policy state: %s", PQerrorMessage(conn));
		goto cleanup;
	}
	PGresult *res = PQexec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (ok && snapshot != NULL) {
		char *lit = PQescapeLiteral(conn, snapshot, strlen(snapshot));
		char sql[256];
		snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT %s", lit ? lit : "''");
		PQfreemem(lit);
		res = PQexec(conn, sql);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
	}
	if (!ok) {
		log_error("pipeline.state_load", "cannot open the snapshot: %s", PQerrorMessage(conn));
		goto cleanup;
	}
	rc = privacy_load(pl->pv, conn, err);
	if (rc < 0) {
		log_error("pipeline.state_load", "%s", err);
		goto cleanup;
	}
	log_info("pipeline.state_loaded", "policy state loaded from %s",
	         snapshot ? "the slot's snapshot" : "the current database");
cleanup:
	PQfinish(conn);
	return rc;
}

/* ---- routing to the sinks -------------------------------------------------------------- */

static void sink_failed(pipeline *pl, const pl_sink *s, const char *what, int rc)
{
	log_error("pipeline.sink_failed", "sink=%s: %s failed: %s", s->name, what, strerror(-rc));
	pl->fatal = true;
	pl_stop(pl, 1);
}

/* The audience's delivery callback: each subscriber's sink gets it, one subscriber at a time. */
static int deliver_cb(void *arg, const audience_delivery *d)
{
	pipeline *pl = arg;
	for (size_t i = 0; i < d->nsubs; i++) {
		pl_sub *sub = d->subs[i];
		audience_delivery one = *d;
		one.subs = &sub->sub_arg;
		one.nsubs = 1;
		if (sub->sink->has_metrics)
			metrics_counter_inc(sub->sink->m.deliveries);
		int rc = sub->sink->ops->deliver(sub->sink->impl, sub->sub_arg, &one);
		if (rc < 0) {
			sink_failed(pl, sub->sink, "deliver", rc);
			return -ECANCELED;
		}
	}
	return 0;
}

static size_t pending_sum(const pipeline *pl)
{
	size_t sum = 0;
	for (size_t i = 0; i < pl->nsinks; i++) {
		const pl_sink *s = pl->sinks[i];
		if (s->ops->kind == SINK_DURABLE && s->ops->pending_bytes != NULL) {
			size_t n = s->ops->pending_bytes(s->impl);
			sum += n;
			if (s->has_metrics)
				metrics_gauge_i_set(s->m.pending, (int64_t)n);
		}
	}
	return sum;
}

/* Pauses reading above max_pending, resumes below half of it (not while draining). */
static void pressure_check(pipeline *pl)
{
	if (pl->src == NULL || pl->draining || pl->stopped)
		return;
	size_t sum = pending_sum(pl);
	/* pipeline.max_pending is reloadable: read it each time */
	if (pl->p.cfg->pipeline_max_pending > 0)
		pl->max_pending = (size_t)pl->p.cfg->pipeline_max_pending;
	/* Without a policy a transaction is offered as it streams, and its bytes become durable only
	 * at its commit: pausing in its middle could never end. Checked again at the commit. */
	if (!pl->paused && sum > pl->max_pending && !(pl->pass && pl->in_txn)) {
		pl->paused = true;
		log_warn("pipeline.paused", "pending=%zu max_pending=%zu: durable sinks are behind; reading the "
		         "stream pauses until they are below half", sum, pl->max_pending);
		pl->src_ops->pause(pl->src);
	} else if (pl->paused && sum < pl->max_pending / 2) {
		pl->paused = false;
		log_info("pipeline.resumed", "pending=%zu: reading the stream again", sum);
		pl->src_ops->resume(pl->src);
	}
	pl->st.paused = pl->paused;
}

/* ---- acknowledgement ------------------------------------------------------------------- */

/* What may be confirmed now: what every durable sink holds, never past the last transaction
 * judged (the store syncs the state as of the LSN confirmed). */
static uint64_t ack_candidate(const pipeline *pl)
{
	if (pl->ndurable == 0)
		return pl->offered_end;
	uint64_t low = UINT64_MAX;
	for (size_t i = 0; i < pl->nsinks; i++) {
		const pl_sink *s = pl->sinks[i];
		if (s->ops->kind != SINK_DURABLE)
			continue;
		uint64_t pos = s->ops->position != NULL ? s->ops->position(s->impl) : 0;
		if (pos < low)
			low = pos;
	}
	/* non-transactional messages after the last transaction: no position covers them; they
	 * are confirmed once every durable sink holds every transaction and nothing pending */
	if (low >= pl->txn_end && pl->offered_end > low && pending_sum(pl) == 0)
		return pl->offered_end;
	return low < pl->judged_end ? low : pl->judged_end;
}

static void ack_update(pipeline *pl)
{
	if (pl->src == NULL || pl->ckpt_failed)
		return;
	for (size_t i = 0; i < pl->nsinks; i++) {
		const pl_sink *s = pl->sinks[i];
		if (s->has_metrics && s->ops->kind == SINK_DURABLE && s->ops->position != NULL)
			metrics_gauge_i_set(s->m.position, (int64_t)s->ops->position(s->impl));
	}
	uint64_t ack = ack_candidate(pl);
	if (ack <= pl->confirmed)
		return;
	if (pl->p.store != NULL) {
		/* the checkpoint first: the rows of every transaction up to ack, and the position */
		char err[CHECKPOINT_ERROR_MAX] = "";
		int rc = pl->p.store->ops->position_put(pl->p.store->impl, PIPELINE_POSITION, ack);
		if (rc == 0)
			rc = pl->p.store->ops->sync(pl->p.store->impl, ack, err);
		if (rc < 0) {
			log_error("pipeline.checkpoint_sync", "%s: nothing more is confirmed",
			          err[0] ? err : strerror(-rc));
			pl->ckpt_failed = true;
			pl_stop(pl, 1);
			return;
		}
		pl->ckpt_unsynced = 0;
	}
	pl->confirmed = ack;
	pl->st.confirmed_lsn = ack;
	pl->src_ops->confirm(pl->src, ack);
}

/* After a commit, a message or a keepalive. With a checkpoint store a confirm costs a sync
 * (a rename and two fsyncs): the periodic tick and the sinks' progress() batch them, instead of
 * one per transaction or per keepalive — which at a few thousand transactions a second made the
 * loop thread wait on fsync and the feeds fall behind. Without a store a confirm is free. */
static void ack_soon(pipeline *pl)
{
	if (pl->p.store == NULL)
		ack_update(pl);
}

/* ---- the source's events --------------------------------------------------------------- */

static int begin_cb(void *arg, const change_txn *txn)
{
	pipeline *pl = arg;
	if (pl->stopped)
		return 1;
	if (pl->pass) {
		if (sinks_begin(pl, txn) != 0)
			return 1;
		pl->in_txn = true;
		return 0;
	}
	int rc = audience_begin(pl->aud, txn);
	if (rc < 0) {
		log_error("pipeline.privacy_failed", "xid=%u: %s", (unsigned)txn->xid, audience_error(pl->aud));
		pl_stop(pl, 1);
		return 1;
	}
	pl->in_txn = true;
	pl->txn_policy = false;
	return 0;
}

static int change_cb(void *arg, change *c)
{
	pipeline *pl = arg;
	if (pl->stopped)
		return 1;
	pl->st.changes++;
	if (c->rel != NULL && policy_state_governs(privacy_state(pl->pv), c->rel))
		pl->txn_policy = true;
	if (pl->pm != NULL && c->rel != NULL)
		pipeline_metrics_change(pl->pm, c->rel->schema, c->rel->name, c->action);
	int rc = pl->pass ? audience_publish(pl->aud, c, deliver_cb, pl) : audience_change(pl->aud, c, deliver_cb, pl);
	if (rc < 0) {
		if (rc != -ECANCELED) {
			char t[LSN_TEXT_MAX];
			log_error("pipeline.privacy_failed", "lsn=%s: %s", lsn_format(c->lsn, t), audience_error(pl->aud));
			pl_stop(pl, 1);
		}
		return 1;
	}
	if (c->txn == NULL) {
		/* a message outside any transaction: complete on its own */
		if (c->lsn > pl->offered_end)
			pl->offered_end = c->lsn;
		if (c->lsn > pl->judged_end)
			pl->judged_end = c->lsn;
		ack_soon(pl);
	}
	return 0;
}

/* Every sink takes back the transaction it was offered. */
static void sinks_abort(pipeline *pl)
{
	for (size_t i = 0; i < pl->nsinks; i++)
		if (pl->sinks[i]->ops->abort != NULL)
			pl->sinks[i]->ops->abort(pl->sinks[i]->impl);
}

static int sinks_begin(pipeline *pl, const change_txn *txn)
{
	for (size_t i = 0; i < pl->nsinks; i++) {
		pl_sink *s = pl->sinks[i];
		int rc = s->ops->begin(s->impl, txn);
		if (rc < 0) {
			sink_failed(pl, s, "begin", rc);
			return 1;
		}
	}
	return 0;
}

static int commit_cb(void *arg, const change_txn *txn)
{
	pipeline *pl = arg;
	if (pl->stopped)
		return 1;
	int rc = 0;
	if (!pl->pass) {
		if (sinks_begin(pl, txn) != 0) {
			audience_abort(pl->aud);
			return 1;
		}
		rows_clear(pl);
		rc = audience_commit(pl->aud, txn, deliver_cb, pl);
	}
	pl->in_txn = false;
	if (rc < 0) {
		if (rc != -ECANCELED) {
			char t[LSN_TEXT_MAX];
			log_error("pipeline.privacy_failed", "lsn=%s: %s", lsn_format(txn->commit_lsn, t),
			          audience_error(pl->aud));
			if (pl->pm != NULL)
				pipeline_metrics_policy_error(pl->pm);
			pl_stop(pl, 1);
		}
		sinks_abort(pl);
		return 1;
	}
	/* the policy rows reach the store before any sink takes the commit: a sink may make it
	 * durable at once and report progress, and the sync that confirms its LSN must hold them */
	if (pl->nrows > 0 || pl->ckpt_failed) {
		if (pl->ckpt_failed || journal_write(pl, txn->end_lsn) < 0) {
			log_error("pipeline.checkpoint_failed", "the policy rows of the transaction could not be "
			          "recorded: stopping without confirming it");
			pl->ckpt_failed = true;
			pl_stop(pl, 1);
			sinks_abort(pl);
			return 1;
		}
		rows_clear(pl);
	}
	if (txn->end_lsn > pl->judged_end)
		pl->judged_end = txn->end_lsn;
	for (size_t i = 0; i < pl->nsinks; i++) {
		pl_sink *s = pl->sinks[i];
		if ((rc = s->ops->commit(s->impl, txn)) < 0) {
			sink_failed(pl, s, "commit", rc);
			return 1;
		}
	}
	pl->txn_policy = false;
	if (txn->end_lsn > pl->offered_end)
		pl->offered_end = txn->end_lsn;
	pl->txn_end = txn->end_lsn;
	pl->st.transactions++;
	pl->st.last_commit_end = pl->offered_end;
	pl->st.last_commit_time = txn->commit_time;
	ack_soon(pl);
	pressure_check(pl);
	return 0;
}

static void abandon_cb(void *arg)
{
	pipeline *pl = arg;
	bool was = pl->in_txn;
	if (pl->pass) {
		/* its changes were offered as they came: every sink takes them back */
		if (was)
			sinks_abort(pl);
	} else {
		audience_abort(pl->aud); /* nothing of it was offered or applied */
	}
	pl->in_txn = false;
	pl->txn_policy = false;
	if (was)
		pl_event(pl, PIPELINE_ABANDONED, 0);
}

static int loader_row_cb(void *arg, int table, const char *const *values)
{
	pipeline *pl = arg;
	int rc = privacy_load_row(pl->pv, table, values);
	if (rc < 0)
		log_error("pipeline.state_load", "%s", privacy_error(pl->pv));
	return rc;
}

/* The snapshot's state is loaded (or not): it becomes the store's base, then the stream goes on. */
static void loader_done_cb(void *arg, int rc, const char *err)
{
	pipeline *pl = arg;
	policy_loader_destroy(pl->loader);
	pl->loader = NULL;
	if (rc < 0) {
		log_error("pipeline.state_load", "the policy state could not be loaded from the slot's snapshot: %s", err);
		pl_stop(pl, 1);
		return;
	}
	log_info("pipeline.state_loaded", "policy state loaded from the slot's snapshot");
	if (state_base_write(pl, pl->snapshot_lsn, true) < 0) {
		pl_stop(pl, 1);
		return;
	}
	pl->state_ready = true;
	pl_event(pl, PIPELINE_STATE_SNAPSHOT, pl->snapshot_lsn);
	if (pl->draining) {
		drain_check(pl); /* the state is stored with the slot: the next start resumes from it */
		return;
	}
	pl->src_ops->snapshot_done(pl->src);
}

/* A new slot: its exported snapshot is the state as of its consistent point, loaded without
 * blocking the loop while the stream is held (whatever the store held was for another slot). */
static int snapshot_cb(void *arg, const char *snapshot, uint64_t consistent_lsn)
{
	pipeline *pl = arg;
	if (pl->p.pol == NULL)
		return 0; /* no policy: no state to load */
	privacy_clear(pl->pv);
	pl->snapshot_lsn = consistent_lsn;
	policy_loader_params lp = {
		.loop = pl->p.loop, .conninfo = pl->p.cfg->conninfo, .snapshot = snapshot, .pol = pl->pol,
		.timeout_ms = 600000, .row_cb = loader_row_cb, .done_cb = loader_done_cb, .arg = pl,
	};
	char err[POLICY_LOADER_ERROR_MAX];
	if (policy_loader_start(&lp, &pl->loader, err) < 0) {
		log_error("pipeline.state_load", "%s", err);
		pl_stop(pl, 1);
		return 0;
	}
	return 1; /* hold the stream until loader_done_cb */
}

static void streaming_cb(void *arg, uint64_t start_lsn)
{
	pipeline *pl = arg;
	pl->st.streaming = true;
	if (pl->state_ready || pl->p.pol == NULL)
		return;
	log_warn("pipeline.state_current", "the slot already existed and the checkpoint holds no policy "
		         "state: it is loaded from the current database, so changes replayed from before now are "
		         "judged by today's memberships");
	if (state_from_db(pl, NULL) < 0 || state_base_write(pl, start_lsn, true) < 0) {
		pl_stop(pl, 1);
		return;
	}
	pl->state_ready = true;
	pl_event(pl, PIPELINE_STATE_CURRENT, start_lsn);
}

static void idle_cb(void *arg, uint64_t wal_end)
{
	pipeline *pl = arg;
	pl->st.server_wal_end = pl->src_ops->received_lsn(pl->src);
	ack_soon(pl);
	pl_event(pl, PIPELINE_IDLE, wal_end);
}

static void batch_end_cb(void *arg)
{
	pipeline *pl = arg;
	for (size_t i = 0; i < pl->nsinks; i++)
		if (pl->sinks[i]->ops->batch_end != NULL)
			pl->sinks[i]->ops->batch_end(pl->sinks[i]->impl);
}

static void failed_cb(void *arg, const char *why)
{
	pipeline *pl = arg;
	(void)why; /* the source said it, once (source.failed): one clear error, not two */
	for (uint64_t n = pl->src_ops->decode_errors(pl->src); pl->decode_errors < n; pl->decode_errors++)
		pipeline_metrics_decode_error(pl->pm);
	pl_stop(pl, 1);
}

/* ---- the sink environment -------------------------------------------------------------- */

static int env_subscribe(void *env_arg, void *sub_arg, const char *uid, bool bypass, bool wildcard,
                         audience_sub **out)
{
	pl_sink *s = env_arg;
	pl_sub *sub = calloc(1, sizeof(*sub));
	if (sub == NULL)
		return -ENOMEM;
	*sub = (pl_sub){.sink = s, .sub_arg = sub_arg};
	int rc = wildcard ? audience_subscribe_wildcard(s->pl->aud, sub, &sub->h)
	                  : audience_subscribe(s->pl->aud, sub, uid, bypass, &sub->h);
	if (rc < 0) {
		free(sub);
		return rc;
	}
	sub->next = s->subs;
	s->subs = sub;
	*out = sub->h;
	return 0;
}

static void env_unsubscribe(void *env_arg, audience_sub *h)
{
	pl_sink *s = env_arg;
	for (pl_sub **pp = &s->subs; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->h == h) {
			pl_sub *sub = *pp;
			*pp = sub->next;
			audience_unsubscribe(s->pl->aud, h);
			free(sub);
			return;
		}
	}
}

static int env_live_metrics(void *env_arg, metrics_counter **drops, metrics_read_cb connections, void *arg)
{
	pl_sink *s = env_arg;
	if (drops != NULL)
		*drops = NULL;
	if (s->pl->pm == NULL)
		return 0;
	char merr[METRICS_ERROR_MAX];
	int rc = pipeline_metrics_sink_live(s->pl->pm, s->name, drops, connections, arg, merr);
	if (rc < 0)
		log_warn("pipeline.metrics", "sink=%s: %s", s->name, merr);
	return rc;
}

static int env_member_watch(void *env_arg, policy_state_change_cb cb, void *arg)
{
	pl_sink *s = env_arg;
	if (s->pl->pv == NULL)
		return -ENOENT;
	if (s->watch != NULL)
		return -EBUSY;
	int rc = policy_state_add_change_cb(privacy_state(s->pl->pv), cb, arg);
	if (rc == 0) {
		s->watch = cb;
		s->watch_arg = arg;
	}
	return rc;
}

static int env_rule_watch(void *env_arg, void (*cb)(void *arg), void *arg)
{
	pl_sink *s = env_arg;
	if (s->pl->pv == NULL)
		return -ENOENT;
	if (s->rule_cb != NULL)
		return -EBUSY;
	s->rule_cb = cb;
	s->rule_arg = arg;
	return 0;
}

/* Removes what the sink's member_watch added. */
static void sink_unwatch(pl_sink *s)
{
	if (s->watch != NULL && s->pl->pv != NULL)
		policy_state_remove_change_cb(privacy_state(s->pl->pv), s->watch, s->watch_arg);
	s->watch = NULL;
}

static bool env_live(void *env_arg)
{
	const pipeline *pl = ((pl_sink *)env_arg)->pl;
	return pl->st.streaming && (pl->state_ready || pl->p.pol == NULL) && !pl->stopped &&
	       pl->src != NULL && pl->src_ops->streaming(pl->src);
}

static const policy_state *env_state(void *env_arg)
{
	const pipeline *pl = ((pl_sink *)env_arg)->pl;
	return pl->pv != NULL ? privacy_state(pl->pv) : NULL;
}

static void env_progress(void *env_arg)
{
	pl_sink *s = env_arg;
	pipeline *pl = s->pl;
	if (pl->stopped)
		return;
	ack_update(pl);
	pressure_check(pl);
	if (pl->draining)
		drain_check(pl);
}

/* ---- the periodic tick ----------------------------------------------------------------- */

static void sinks_flush(pipeline *pl)
{
	for (size_t i = 0; i < pl->nsinks; i++) {
		pl_sink *s = pl->sinks[i];
		if (s->ops->kind != SINK_DURABLE || s->ops->flush == NULL)
			continue;
		int rc = s->ops->flush(s->impl);
		if (rc < 0) {
			sink_failed(pl, s, "flush", rc);
			return;
		}
	}
}

static void tick_cb(loop *l, int id, void *arg)
{
	pipeline *pl = arg;
	(void)id;
	pl->tick_timer = 0;
	if (pl->stopped)
		return;
	if (!pl->in_txn)
		sinks_flush(pl);
	if (pl->stopped)
		return;
	ack_update(pl);
	pressure_check(pl);
	if (pl->draining) {
		drain_check(pl);
		if (pl->stopped)
			return;
	}
	bool ready = pl->st.streaming;
	for (size_t i = 0; i < pl->nsinks && ready; i++) {
		const pl_sink *s = pl->sinks[i];
		if (s->ops->kind == SINK_DURABLE && s->ops->healthy != NULL && !s->ops->healthy(s->impl))
			ready = false;
	}
	pl->st.ready = ready;
	if (pl->src != NULL)
		pl->st.server_wal_end = pl->src_ops->received_lsn(pl->src);
	/* fold the log into a new base once it outgrew a megabyte: up to the confirmed LSN, never
	 * further (a restart resumes there), with that LSN's state rebuilt from the store itself */
	uint64_t log_bytes = pl->p.store != NULL ? pl->p.store->ops->log_bytes(pl->p.store->impl) : 0;
	if (pl->confirmed != 0 && log_bytes > ((uint64_t)1 << 20) + pl->compact_failed_at) {
		char err[CHECKPOINT_ERROR_MAX] = "";
		int rc = checkpoint_compact_at(pl->p.store, pl->pol, pl->confirmed, err);
		pl->compact_failed_at = rc < 0 ? log_bytes : 0;
		if (rc < 0)
			log_warn("pipeline.checkpoint_compact", "%s (the log keeps growing; retried after another MB)",
			         err[0] ? err : strerror(-rc));
	}
	int t = loop_timer_add(l, PIPELINE_TICK_MS, tick_cb, pl);
	pl->tick_timer = t > 0 ? t : 0;
}

/* ---- draining and stopping ------------------------------------------------------------- */

/* The source is stopped from a timer, never from inside one of its own callbacks. */
static void stop_timer_cb(loop *l, int id, void *arg)
{
	pipeline *pl = arg;
	(void)l, (void)id;
	pl->stop_timer = 0;
	if (pl->src != NULL)
		pl->src_ops->stop(pl->src); /* the final status update (bounded) */
	if (pl->p.stopped_cb != NULL)
		pl->p.stopped_cb(pl->p.arg, pl->stop_code);
}

static void pl_stop(pipeline *pl, int code)
{
	if (pl->stopped)
		return;
	pl->stopped = true;
	pl->stop_code = code;
	if (pl->tick_timer > 0)
		loop_timer_cancel(pl->p.loop, pl->tick_timer);
	if (pl->drain_timer > 0)
		loop_timer_cancel(pl->p.loop, pl->drain_timer);
	pl->tick_timer = pl->drain_timer = 0;
	if (pl->src != NULL)
		pl->src_ops->pause(pl->src);
	pl->st.streaming = pl->st.ready = false;
	int t = loop_timer_add(pl->p.loop, 0, stop_timer_cb, pl);
	pl->stop_timer = t > 0 ? t : 0;
	if (t < 0)
		stop_timer_cb(pl->p.loop, 0, pl);
}

/* Drained when every durable sink holds everything offered durably, and a new slot's policy
 * state being loaded is loaded and stored (else the slot would exist without its state, and the
 * next start would judge by today's memberships: pipeline.state_current). */
static void drain_check(pipeline *pl)
{
	if (pl->stopped || pl->loader != NULL)
		return;
	if (pl->finishing ? pending_sum(pl) > 0 : ack_candidate(pl) < pl->txn_end)
		return;
	ack_update(pl);
	if (pl->stopped)
		return;
	char a[LSN_TEXT_MAX];
	log_info("pipeline.drained", "confirmed=%s: every durable sink flushed", lsn_format(pl->confirmed, a));
	pl_stop(pl, 0);
}

static void drain_timer_cb(loop *l, int id, void *arg)
{
	pipeline *pl = arg;
	(void)l, (void)id;
	pl->drain_timer = 0;
	if (pl->stopped)
		return;
	ack_update(pl);
	char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
	log_error("pipeline.drain_timeout", "confirmed=%s offered=%s: durable sinks did not flush in time; what "
	          "was not confirmed is sent again on the next start", lsn_format(pl->confirmed, a),
	          lsn_format(pl->offered_end, b));
	pl_stop(pl, 1);
}

void pipeline_drain(pipeline *pl)
{
	if (pl == NULL || pl->stopped || pl->draining)
		return;
	pl->draining = true;
	log_info("pipeline.draining", "stopping: no more reading, flushing the durable sinks");
	if (!pl->started) {
		pl_stop(pl, 0);
		return;
	}
	pl->src_ops->pause(pl->src);
	if (pl->in_txn) {
		/* sent again from its beginning on the next start (without a policy, the sinks hold
		 * its beginning: destroying them cuts it) */
		if (!pl->pass)
			audience_abort(pl->aud);
		pl->in_txn = false;
	}
	sinks_flush(pl);
	if (pl->stopped)
		return;
	int64_t ms = pl->p.cfg->pipeline_drain_timeout_ms > 0 ? pl->p.cfg->pipeline_drain_timeout_ms : 20000;
	int t = loop_timer_add(pl->p.loop, ms, drain_timer_cb, pl);
	pl->drain_timer = t > 0 ? t : 0;
	drain_check(pl);
}

void pipeline_finish(pipeline *pl)
{
	if (pl == NULL || pl->stopped || pl->draining)
		return;
	pl->finishing = true;
	pipeline_drain(pl);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void metrics_status_cb(void *arg, pipeline_status *out)
{
	pipeline_get_status(arg, out);
}

int pipeline_create(const pipeline_params *p, pipeline **out, char err[PIPELINE_ERROR_MAX])
{
	char perr[PRIVACY_ERROR_MAX > POLICY_ERROR_MAX ? PRIVACY_ERROR_MAX : POLICY_ERROR_MAX];
	int rc;
	pipeline *pl = calloc(1, sizeof(*pl));
	if (pl == NULL) {
		snprintf(err, PIPELINE_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	pl->p = *p;
	if (p->source == NULL) {
		rc = -EINVAL;
		snprintf(err, PIPELINE_ERROR_MAX, "no source of transactions");
		goto fail;
	}
	pl->max_pending = p->cfg->pipeline_max_pending > 0 ? (size_t)p->cfg->pipeline_max_pending : (size_t)64 << 20;
	pl->pol = p->pol;
	pl->pass = p->pol == NULL;
	if (pl->pol == NULL) {
		/* no policy: one that governs no real table (schema walcast_none), so only bypass
		 * subscribers see anything */
		static const char empty[] = "[roles]\nranks = member\n"
		                            "[membership]\ntable = walcast_none.org_roles\norg = org_id\n"
		                            "user = user_id\nrole = role\n"
		                            "[table walcast_none.none]\ncolumns = id, org_id\norg = org_id\n"
		                            "read = member\n";
		rc = policy_load_string(empty, "(no policy)", &pl->own_pol, perr);
		if (rc < 0) {
			snprintf(err, PIPELINE_ERROR_MAX, "%s", perr);
			goto fail;
		}
		pl->pol = pl->own_pol;
	}
	if ((pl->rels = relcache_create()) == NULL) {
		rc = -ENOMEM;
		snprintf(err, PIPELINE_ERROR_MAX, "out of memory");
		goto fail;
	}
	if ((rc = privacy_create(pl->pol, p->keys, &pl->pv, perr)) < 0) {
		snprintf(err, PIPELINE_ERROR_MAX, "%s", perr);
		goto fail;
	}
	if ((rc = privacy_set_txn_buffer(pl->pv, (size_t)p->cfg->privacy_txn_memory,
	                                 p->cfg->privacy_spill_dir[0] ? p->cfg->privacy_spill_dir : NULL)) < 0) {
		snprintf(err, PIPELINE_ERROR_MAX, "%s", privacy_error(pl->pv));
		goto fail;
	}
	if ((rc = audience_create(pl->pv, 0, &pl->aud)) < 0) {
		snprintf(err, PIPELINE_ERROR_MAX, "cannot create the audience: %s", strerror(-rc));
		goto fail;
	}
	privacy_set_journal(pl->pv, journal_cb, pl);
	if (p->metrics != NULL) {
		char merr[METRICS_ERROR_MAX];
		if ((rc = pipeline_metrics_create(p->metrics, metrics_status_cb, pl, &pl->pm, merr)) < 0) {
			snprintf(err, PIPELINE_ERROR_MAX, "metrics: %s", merr);
			goto fail;
		}
	}
	txn_source_events ev = {
		.sink = {begin_cb, change_cb, commit_cb, pl},
		.abandon_cb = abandon_cb,
		.snapshot_cb = snapshot_cb,
		.streaming_cb = streaming_cb,
		.idle_cb = idle_cb,
		.batch_end_cb = batch_end_cb,
		.failed_cb = failed_cb,
		.arg = pl,
	};
	char serr[TXN_SOURCE_ERROR_MAX] = "";
	pl->src_ops = p->source;
	if ((rc = pl->src_ops->create(p->loop, p->cfg, pl->rels, &ev, &pl->src, serr)) < 0) {
		snprintf(err, PIPELINE_ERROR_MAX, "%s", serr);
		goto fail;
	}
	*out = pl;
	return 0;
fail:
	pipeline_destroy(pl);
	return rc;
}

int pipeline_add_sink(pipeline *pl, const sink_ops *ops, const char *name, const void *conf,
                      char err[PIPELINE_ERROR_MAX])
{
	if (pl->started) {
		snprintf(err, PIPELINE_ERROR_MAX, "sink %s: sinks are added before the pipeline starts", name);
		return -EBUSY;
	}
	pl_sink **v = realloc(pl->sinks, (pl->nsinks + 1) * sizeof(*v));
	if (v == NULL) {
		snprintf(err, PIPELINE_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	pl->sinks = v;
	pl_sink *s = calloc(1, sizeof(*s));
	if (s == NULL || (s->name = strdup(name)) == NULL) {
		free(s);
		snprintf(err, PIPELINE_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	s->pl = pl;
	s->ops = ops;
	s->env = (sink_env){
		.name = s->name, .loop = pl->p.loop, .metrics = pl->p.metrics, .pol = pl->p.pol,
		.subscribe = env_subscribe, .unsubscribe = env_unsubscribe, .progress = env_progress, .env_arg = s,
		.live = env_live, .state = env_state, .cfg = pl->p.cfg, .http = pl->p.http,
		.audit = pl->p.audit,
		.live_metrics = env_live_metrics, .member_watch = env_member_watch,
		.rule_watch = env_rule_watch,
	};
	char serr[SINK_ERROR_MAX] = "";
	int rc = ops->create(&s->env, conf, &s->impl, serr);
	if (rc < 0) {
		snprintf(err, PIPELINE_ERROR_MAX, "sink %s (%s): %s", name, ops->name, serr[0] ? serr : strerror(-rc));
		while (s->subs != NULL)
			env_unsubscribe(s, s->subs->h);
		if (pl->pm != NULL)
			pipeline_metrics_sink_remove(pl->pm, name); /* what its live_metrics registered */
		sink_unwatch(s);
		free(s->name);
		free(s);
		return rc;
	}
	pl->sinks[pl->nsinks++] = s;
	if (pl->pm != NULL) {
		char merr[METRICS_ERROR_MAX];
		unsigned what = PIPELINE_METRICS_DELIVERIES |
		                (ops->kind == SINK_DURABLE ? PIPELINE_METRICS_POSITION | PIPELINE_METRICS_PENDING : 0);
		if (pipeline_metrics_sink_add(pl->pm, name, what, &s->m, merr) == 0)
			s->has_metrics = true;
		else
			log_warn("pipeline.metrics", "sink=%s: %s", name, merr);
	}
	if (ops->kind == SINK_DURABLE)
		pl->ndurable++;
	return 0;
}

int pipeline_start(pipeline *pl, char err[PIPELINE_ERROR_MAX])
{
	int rc;
	uint64_t resume = 0;
	if (pl->ndurable > 0) {
		resume = UINT64_MAX;
		for (size_t i = 0; i < pl->nsinks; i++) {
			const pl_sink *s = pl->sinks[i];
			if (s->ops->kind != SINK_DURABLE)
				continue;
			uint64_t pos = s->ops->position != NULL ? s->ops->position(s->impl) : 0;
			if (pos < resume)
				resume = pos;
		}
	}
	uint64_t durable_low = resume; /* what the durable sinks hold (txn_end: drain waits for no more) */
	if (pl->p.store != NULL) {
		/* the confirmed LSN recorded with the state: the slot is not behind it, so neither is the
		 * resume point (a durable sink behind it lost what it had: it gets what follows) */
		uint64_t pos = 0;
		if ((rc = pl->p.store->ops->position_get(pl->p.store->impl, PIPELINE_POSITION, &pos)) < 0) {
			snprintf(err, PIPELINE_ERROR_MAX, "cannot read the pipeline's position: %s", strerror(-rc));
			return rc;
		}
		if (pos > resume)
			resume = pos;
	}
	pl->resume_lsn = resume;
	pl->confirmed = pl->offered_end = pl->judged_end = pl->st.confirmed_lsn = resume;
	pl->txn_end = durable_low < resume ? durable_low : resume;
	if (pl->p.store != NULL && resume != 0) {
		uint64_t state_lsn = 0;
		rc = state_from_store(pl, resume, &state_lsn);
		if (rc < 0) {
			snprintf(err, PIPELINE_ERROR_MAX, "cannot load the policy state from the checkpoint (%s)",
			         strerror(-rc));
			return rc;
		}
		pl->state_ready = rc > 0;
		if (rc > 0)
			pl_event(pl, PIPELINE_STATE_CHECKPOINT, state_lsn);
		if (rc > 0 && state_lsn < resume) {
			/* the store knows the state only up to state_lsn (a durable sink went further before
			 * the last sync): stream from there, the sinks skip what they already hold */
			char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
			log_info("pipeline.resume_earlier", "resume=%s state=%s: resuming where the policy state is known",
			         lsn_format(resume, a), lsn_format(state_lsn, b));
			resume = state_lsn;
			pl->resume_lsn = resume;
			pl->confirmed = pl->offered_end = pl->judged_end = pl->st.confirmed_lsn = resume;
			if (pl->txn_end > resume)
				pl->txn_end = resume;
		}
	}
	char a[LSN_TEXT_MAX];
	log_info("pipeline.starting", "sinks=%zu durable=%zu resume=%s", pl->nsinks, pl->ndurable,
	         lsn_format(resume, a));
	int t = loop_timer_add(pl->p.loop, PIPELINE_TICK_MS, tick_cb, pl);
	pl->tick_timer = t > 0 ? t : 0;
	pl->started = true;
	if ((rc = pl->src_ops->start(pl->src, resume)) < 0) {
		if (pl->stopped)
			return 0; /* a permanent error the source said (source.failed): stopped_cb(1) follows */
		snprintf(err, PIPELINE_ERROR_MAX, "cannot start streaming: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

void pipeline_destroy(pipeline *pl)
{
	if (pl == NULL)
		return;
	if (pl->tick_timer > 0)
		loop_timer_cancel(pl->p.loop, pl->tick_timer);
	if (pl->drain_timer > 0)
		loop_timer_cancel(pl->p.loop, pl->drain_timer);
	if (pl->stop_timer > 0)
		loop_timer_cancel(pl->p.loop, pl->stop_timer);
	policy_loader_destroy(pl->loader);
	if (pl->src_ops != NULL)
		pl->src_ops->destroy(pl->src);
	for (size_t i = 0; i < pl->nsinks; i++) {
		pl_sink *s = pl->sinks[i];
		sink_unwatch(s);
		s->ops->destroy(s->impl);
		while (s->subs != NULL)
			env_unsubscribe(s, s->subs->h);
		free(s->name);
		free(s);
	}
	free(pl->sinks);
	pipeline_metrics_destroy(pl->pm);
	audience_destroy(pl->aud);
	privacy_destroy(pl->pv);
	relcache_destroy(pl->rels);
	policy_destroy(pl->own_pol);
	rows_clear(pl);
	free(pl->rows);
	free(pl);
}

audience *pipeline_audience(pipeline *pl)
{
	return pl->aud;
}

int pipeline_publication_tables(pipeline *pl, const char *const *schemas, const char *const *names, size_t n)
{
	if (pl->src_ops->publication_tables == NULL)
		return -ENOTSUP;
	return pl->src_ops->publication_tables(pl->src, schemas, names, n);
}

void *pipeline_source(pipeline *pl)
{
	return pl->src;
}

const policy_state *pipeline_policy_state(pipeline *pl)
{
	return privacy_state(pl->pv);
}

void pipeline_get_status(const pipeline *pl, pipeline_status *out)
{
	*out = pl->st;
	/* Between transactions the source confirms the server's keepalive position itself (nothing
	 * of the publication lies before it): that is what the slot holds, and what lag is from. */
	uint64_t src_confirmed = pl->src_ops->confirmed_lsn(pl->src);
	if (src_confirmed > out->confirmed_lsn)
		out->confirmed_lsn = src_confirmed;
	/* A lost connection is not streaming, while the source reconnects. */
	if (!pl->src_ops->streaming(pl->src))
		out->streaming = out->ready = false;
}

int pipeline_sink_health(const pipeline *pl, size_t i, const char **name, bool *durable, bool *healthy)
{
	if (i >= pl->nsinks)
		return -ENOENT;
	const pl_sink *s = pl->sinks[i];
	*name = s->name;
	*durable = s->ops->kind == SINK_DURABLE;
	*healthy = s->ops->healthy == NULL || s->ops->healthy(s->impl);
	return 0;
}
