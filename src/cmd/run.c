/*
 * run — `walcast run`: the daemon (see run.h). Builds, in order: the policy and the keyring, the
 * checkpoint store (pipeline.checkpoint_store), the metrics registry, the audit writer ([audit], when
 * enabled: handed to the sinks, and sync_health's ticks), the pipeline and its sinks (one per
 * [sink.NAME] section, type resolved in the sink registry), the HTTP listener ([http]); then
 * runs the loop until the pipeline stops and the audit writer has drained. Signals: SIGHUP
 * reloads the configuration (config_reload: a refused reload keeps the running one and says
 * why); SIGTERM and SIGINT drain (pipeline_drain, then auditlog_drain); a second one exits at
 * once, unconfirmed work being sent again next time.
 * The loop and its signal handlers come first, before anything that can wait: a SIGTERM while
 * starting (checks, the replica-identity check's connection) stops there with exit 0, one after
 * pipeline_start is a drain like any other (the pipeline also drains a state load in progress).
 *
 * Standby (replication.standby_poll > 0): before it takes the state directory's lock or opens a
 * sink, run polls the slot's row of pg_replication_slots (slot_status_watch). While another
 * backend streams from the slot (active_pid), or another process holds the state directory,
 * this instance is a standby: it holds nothing, /readyz answers 503 "standby", walcast_role
 * says so, and it looks again every standby_poll. Once the slot is free (its holder gone: a
 * killed walcast's walsender exits when its socket closes) and the lock is taken, it goes on
 * exactly as a fresh start: the checkpoint and every durable sink's position are read then, so
 * it resumes where the previous holder's durable state ends. PostgreSQL decides who streams (one
 * walsender per slot); the flock makes the takeover of the state directory exclusive on this
 * host. The standby's own listener serves only /healthz, /readyz and /metrics; it is closed and
 * the daemon's listener (with the sinks' protocols) opened at the takeover.
 *
 * Edge ([edge] enabled; docs/edges.md): no slot, no standby, no checkpoint of its own. The
 * policy state is read once, read-only, from the shared postgres checkpoint store at the position
 * P the active instance confirmed (edge_checkpoint.h: no lock, no write); the relation cache is
 * seeded from the catalog; the source is edge_source_ops, reading the active instance's change
 * stream from id P-0. Only live sinks run on an edge (a durable one is refused: nothing would
 * confirm it). /readyz is 200 once the source has read to the stream's end; walcast_role says
 * "edge"; walcast_edge_* report what it read and how far behind the stream's end it is.
 *
 * With the checkpoint store in PostgreSQL the slot may be held by a walsender whose instance is
 * gone (its host cut off, the walsender's own TCP timeouts not yet run out): a standby that
 * finds the store's advisory lock free takes the store and ends that walsender if it is
 * walcast's own (slot_take); the active instance checks its store every standby_poll and stops
 * at once when it is gone (store_check_cb), so a cut-off instance never writes after a takeover.
 */
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "auditlog.h"
#include "checkpoint.h"
#include "checkpoint_pg.h"
#include "config.h"
#include "edge_checkpoint.h"
#include "edge_source.h"
#include "http.h"
#include "keyring.h"
#include "log.h"
#include "loop.h"
#include "lsn.h"
#include "metrics.h"
#include "pipeline.h"
#include "policy.h"
#include "realtime.h"
#include "replident.h"
#include "sink.h"
#include "slot_status.h"
#include "source.h"

typedef struct run_sink_conf {
	const sink_ops *ops;
	config_table table;
	void *conf;
} run_sink_conf;

typedef enum run_role { ROLE_STARTING, ROLE_STANDBY, ROLE_ACTIVE, ROLE_EDGE } run_role;

#define ROLES 3 /* walcast_role's values */

typedef struct daemon {
	config *cfg;
	loop *loop;
	pipeline *pl;
	http_listener *http;
	auditlog *audit;              /* [audit] enabled: audit_log and sync_health rows; else NULL */
	slot_status *slots;           /* the slot gauges of /metrics */
	http_sink_health *health;     /* /readyz's view of the sinks, one per sink */
	size_t nhealth;
	bool stopping;
	bool running;                 /* pipeline_start done: a stop is a drain */
	bool waiting;                 /* in the standby loop: a stop ends it */
	run_role role;                /* walcast_role */
	char standby_why[256];        /* /readyz's reason while a standby */
	checkpoint_store *store;      /* taken at the takeover (or at once without standby) */
	const http_params *standby_hp; /* the standby's listener: how to open it (NULL: no http) */
	http_listener *standby_http;  /* ... once open */
	int check_timer;              /* postgres store, while active: store_check_cb */
	int signals;
	int code;
	bool done;
} daemon_t;

/* config_type_lookup_fn over the sink registry. */
static int sink_lookup(void *arg, const char *kind, const char *type, config_table *out, char err[CONFIG_ERROR_MAX])
{
	(void)arg;
	const sink_ops *ops = strcmp(kind, "sink") == 0 ? sink_ops_find(type) : NULL;
	if (ops == NULL) {
		char names[256];
		snprintf(err, CONFIG_ERROR_MAX, "unknown %s type '%s' (known: %s)", kind, type,
		         sink_names(names, sizeof(names)));
		return -ENOENT;
	}
	*out = (config_table){ops->keys, ops->nkeys, ops->conf_size};
	return 0;
}

static void audit_drained_cb(void *arg, size_t remaining)
{
	daemon_t *d = arg;
	(void)remaining; /* logged by the writer */
	loop_stop(d->loop);
}

static void stopped_cb(void *arg, int code)
{
	daemon_t *d = arg;
	d->code = code;
	d->done = true;
	if (d->audit != NULL) /* the pipeline is done: write the queued audit rows, then stop */
		auditlog_drain(d->audit, d->cfg->audit_drain_timeout_ms, audit_drained_cb, d);
	else
		loop_stop(d->loop);
}

/* sync_health's view of the pipeline (auditlog_health): paused when not streaming or held back. */
static void audit_health_cb(void *arg, auditlog_health *out)
{
	daemon_t *d = arg;
	pipeline_status st;
	if (d->pl == NULL)
		return; /* still starting (*out stays unknown) */
	pipeline_get_status(d->pl, &st);
	*out = (auditlog_health){
		.known = true, .paused = !st.streaming || st.paused, .server_end = st.server_wal_end,
		.processed = st.last_commit_end > st.confirmed_lsn ? st.last_commit_end : st.confirmed_lsn,
		.last_commit_us = st.last_commit_time,
	};
}

static void term_cb(loop *l, int signo, void *arg)
{
	daemon_t *d = arg;
	(void)l;
	if (!d->running) {
		/* still starting: nothing was streamed, nothing needs a drain; startup_stop() sees it */
		if (!d->stopping)
			log_info("run.signal", "signal=%d while %s: stopping before streaming", signo,
			         d->role == ROLE_STANDBY ? "a standby" : "starting");
		d->stopping = true;
		d->code = 0;
		if (d->waiting)
			loop_stop(d->loop);
		return;
	}
	if (d->stopping) {
		log_warn("run.signal", "signal=%d again: exiting now without waiting for the drain", signo);
		d->code = 1;
		d->done = true;
		loop_stop(d->loop);
		return;
	}
	d->stopping = true;
	log_info("run.signal", "signal=%d: draining", signo);
	pipeline_drain(d->pl);
}

/* SIGHUP: the configuration built again and compared; the reloadable keys take effect in the
 * running configuration (the pipeline and the source read them from it), nothing else. */
static void hup_cb(loop *l, int signo, void *arg)
{
	daemon_t *d = arg;
	(void)l, (void)signo;
	config fresh;
	char changed[CONFIG_ERROR_MAX] = "", err[CONFIG_ERROR_MAX] = "";
	int rc = config_reload(d->cfg, sink_lookup, NULL, &fresh, changed, err);
	if (rc < 0) {
		log_error("config.reload_refused", "%s", err[0] ? err : strerror(-rc));
		return;
	}
	/* only reloadable keys may differ: take the new values of those, field by field, so that
	 * nothing holding a pointer into the running configuration sees it move */
	size_t n;
	const config_key *keys = config_keys(&n);
	for (size_t i = 0; i < n; i++) {
		if (!keys[i].reloadable)
			continue;
		char *dst = (char *)d->cfg + keys[i].offset, *src = (char *)&fresh + keys[i].offset;
		if (keys[i].type == CONFIG_STRING || keys[i].type == CONFIG_ENUM) {
			char *tmp = *(char **)dst;
			*(char **)dst = *(char **)src;
			*(char **)src = tmp;
		} else if (keys[i].type == CONFIG_BOOL) {
			memcpy(dst, src, sizeof(bool));
		} else {
			memcpy(dst, src, sizeof(int64_t));
		}
	}
	config_fini(&fresh);
	if (log_configure(d->cfg->log_level, d->cfg->log_format) < 0)
		log_error("config.reload_log", "log.level or log.format not applied");
	log_info("config.reloaded", "changed: %s", changed[0] ? changed : "(nothing)");
}

static void readiness_cb(void *arg, http_readiness *out)
{
	daemon_t *d = arg;
	pipeline_status st;
	if (d->pl == NULL) { /* a standby, or still starting */
		out->standby = d->role == ROLE_STANDBY ? d->standby_why : NULL;
		return;
	}
	pipeline_get_status(d->pl, &st);
	out->streaming = st.streaming;
	out->paused = st.paused;
	if (d->role == ROLE_EDGE) { /* an edge is ready once it has read to the stream's end */
		edge_source_stats es;
		edge_source_stats_get(pipeline_source(d->pl), &es);
		out->streaming = out->streaming && es.caught_up;
	}
	size_t n = 0;
	while (n < d->nhealth && pipeline_sink_health(d->pl, n, &d->health[n].name, &d->health[n].durable,
	                                              &d->health[n].healthy) == 0)
		n++;
	out->sinks = d->health;
	out->nsinks = n;
}

void run_signals_hold(bool hold)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	(void)pthread_sigmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/* Between the startup phases, and while one waits for the server: runs the signal callbacks
 * that are due (without waiting) and says whether a stop was asked for. */
static bool startup_stop(void *arg)
{
	daemon_t *d = arg;
	(void)uv_run(loop_uv(d->loop), UV_RUN_NOWAIT);
	return d->stopping;
}

/* ---- standby ---------------------------------------------------------------------------- */

/* The checkpoint store pipeline.checkpoint_store names: a state directory (flock), or tables in
 * PostgreSQL (an advisory lock) that a standby on another host reads. 0, -EBUSY (another
 * instance holds it) or an error with err; *where says which store, for log lines. Blocks. */
static int store_open(const config *cfg, checkpoint_store **out, char where[300], char err[CHECKPOINT_ERROR_MAX])
{
	if (strcmp(cfg->pipeline_checkpoint_store, "postgres") == 0) {
		snprintf(where, 300, "pipeline.checkpoint_store=postgres schema=%s slot=%s", cfg->pipeline_checkpoint_schema,
		         cfg->slot);
		return checkpoint_pg_create(cfg->pipeline_checkpoint_conninfo[0] ? cfg->pipeline_checkpoint_conninfo
		                                                                  : cfg->conninfo,
		                            cfg->pipeline_checkpoint_schema, cfg->slot, out, err);
	}
	snprintf(where, 300, "pipeline.state_dir=%s", cfg->pipeline_state_dir);
	return checkpoint_dir_create(cfg->pipeline_state_dir, out, err);
}

typedef struct role_child {
	daemon_t *d;
	run_role role;
} role_child;

static int role_cb(void *arg, double *value)
{
	const role_child *c = arg;
	*value = c->d->role == c->role ? 1 : 0;
	return 0;
}

/* walcast_role{role="active"|"standby"|"edge"}: 1 for this instance's role (all 0 while
 * starting). */
static int role_metric_register(daemon_t *d, metrics_registry *r, role_child children[ROLES])
{
	static const char *const label[] = {"role", NULL};
	static const char *const names[ROLES] = {"active", "standby", "edge"};
	static const run_role roles[ROLES] = {ROLE_ACTIVE, ROLE_STANDBY, ROLE_EDGE};
	metrics_desc desc = {.kind = METRICS_GAUGE, .name = "walcast_role", .labels = label,
	                     .help = "This instance's role: 1 for the current one (active: streams from the slot; "
	                             "standby: waits for it; edge: reads the change stream in Redis)."};
	metrics_family *f = NULL;
	char merr[METRICS_ERROR_MAX] = "";
	int rc = metrics_family_register(r, &desc, &f, merr);
	for (int i = 0; rc == 0 && i < ROLES; i++) {
		children[i] = (role_child){d, roles[i]};
		const char *values[] = {names[i], NULL};
		rc = metrics_callback_register(f, values, role_cb, &children[i], merr);
	}
	if (rc < 0)
		log_error("run.metrics", "walcast_role: %s", rc == -ENOMEM ? "out of memory" : merr);
	return rc;
}

/* Ends the standby loop: taking over (role active), or an error. */
static void standby_end(daemon_t *d)
{
	d->waiting = false;
	loop_stop(d->loop);
}

/* This instance waits: one log line when it becomes a standby, why kept for /readyz. Opens the
 * standby's own listener the first time (/readyz, /metrics while waiting). */
static void standby_enter(daemon_t *d, const char *why)
{
	snprintf(d->standby_why, sizeof(d->standby_why), "%s", why);
	if (d->role == ROLE_STANDBY)
		return;
	d->role = ROLE_STANDBY;
	char herr[HTTP_ERROR_MAX];
	if (d->standby_hp != NULL && d->standby_http == NULL &&
	    (http_create(d->standby_hp, &d->standby_http, herr) < 0 || http_start(d->standby_http, herr) < 0)) {
		log_error("run.http", "http.listen=%s: %s", d->cfg->http_listen, herr);
		standby_end(d); /* not active: run stops, exit 1 */
		return;
	}
	log_info("run.standby", "slot=%s: %s; waiting as a standby, looking again every %lld ms", d->cfg->slot, why,
	         (long long)d->cfg->standby_poll_ms);
}

static bool store_is_pg(const config *cfg)
{
	return strcmp(cfg->pipeline_checkpoint_store, "postgres") == 0;
}

static void take_over(daemon_t *d, const char *how)
{
	if (d->role == ROLE_STANDBY)
		log_info("run.takeover", "slot=%s: %s: taking over", d->cfg->slot, how);
	d->role = ROLE_ACTIVE;
	standby_end(d);
}

/* The slot is active but the checkpoint store is in PostgreSQL: if its lock is free, the session
 * of the instance that held it is gone (killed, or its host cut off: the server gives it up
 * within ~5 s), and this one takes the store (a new generation: the old holder, if it comes
 * back, finds it lost and writes nothing) and ends the walsender the old holder left, which
 * would otherwise keep the slot until wal_sender_timeout — only walcast's own walsender, never
 * another consumer's. 1: taken (d->store), 0: a standby (why says), -1: an error (logged). */
static int slot_take(daemon_t *d, int pid, char why[256])
{
	char cerr[CHECKPOINT_ERROR_MAX], where[300];
	int rc = store_open(d->cfg, &d->store, where, cerr);
	if (rc == -EBUSY) {
		snprintf(why, 256, "slot '%s' is active for pid %d and %s is locked by another process", d->cfg->slot, pid,
		         where);
		return 0;
	}
	if (rc < 0) {
		log_error("run.state_dir", "%s: %s", where, cerr);
		return -1;
	}
	rc = checkpoint_pg_walsender_end(d->cfg->conninfo, d->cfg->slot, pid, cerr);
	if (rc > 0) {
		log_warn("run.walsender_ended", "slot=%s pid=%d: %s was free (its holder's session is gone); the walsender "
		         "it left streaming was ended", d->cfg->slot, pid, where);
		return 1;
	}
	if (rc < 0) /* permission, connection, or it did not exit: the next poll tries again */
		log_warn("run.walsender_end_failed", "slot=%s pid=%d: %s", d->cfg->slot, pid, cerr);
	checkpoint_store_destroy(d->store); /* and its lock: the slot is not ours to take */
	d->store = NULL;
	snprintf(why, 256, "slot '%s' is active for pid %d: %s", d->cfg->slot, pid, cerr);
	return 0;
}

/* After each poll of the slot: a standby while another backend streams from it (a postgres
 * store: unless slot_take finds its holder gone); else the state
 * directory's lock decides (another walcast on this host may be taking over too). A poll that
 * failed (PostgreSQL down) does not make a standby: the lock decides, and the source then
 * retries the server as usual. */
static void standby_poll_cb(void *arg, const slot_poll *found)
{
	daemon_t *d = arg;
	char why[256];
	if (!d->waiting || d->stopping)
		return;
	char cerr[CHECKPOINT_ERROR_MAX], where[300];
	if (found->ok && found->exists && found->active_pid != 0) {
		int taken = store_is_pg(d->cfg) ? slot_take(d, found->active_pid, why) : 0;
		if (taken == 0) {
			if (!store_is_pg(d->cfg))
				snprintf(why, sizeof(why), "slot '%s' is active for pid %d", d->cfg->slot, found->active_pid);
			standby_enter(d, why);
		} else if (taken < 0) {
			standby_end(d); /* not active: run stops, exit 1 */
		} else {
			take_over(d, "the store's lock was free and the previous holder's walsender ended");
		}
		return;
	}
	int rc = store_open(d->cfg, &d->store, where, cerr);
	if (rc == -EBUSY) {
		snprintf(why, sizeof(why), "%s is locked by another process", where);
		standby_enter(d, why);
		return;
	}
	if (rc < 0) {
		log_error("run.state_dir", "%s: %s", where, cerr);
		standby_end(d); /* not active: run stops, exit 1 */
		return;
	}
	char how[400];
	snprintf(how, sizeof(how), "the slot is free and %s ours", where);
	take_over(d, how);
}

/* While active with a postgres store, every standby_poll: a round trip on the store's session.
 * One that fails (the host cut off: within ~5 s, about when the server gives the lock up; or
 * the store taken by another instance) stops this instance at once, without a drain, before its
 * network may come back: a standby takes over from the checkpoint, so nothing is lost, and
 * nothing more is written from here. */
static void store_check_cb(loop *l, int timer_id, void *arg)
{
	daemon_t *d = arg;
	char err[CHECKPOINT_ERROR_MAX] = "";
	(void)timer_id;
	d->check_timer = 0;
	if (d->done)
		return;
	if (checkpoint_pg_check(d->store, err) < 0) {
		log_error("run.store_lost", "%s: stopping now, without a drain (a standby takes over from the checkpoint)",
		          err);
		d->code = 1;
		d->done = true;
		loop_stop(l);
		return;
	}
	int id = loop_timer_add(l, d->cfg->standby_poll_ms, store_check_cb, d);
	d->check_timer = id > 0 ? id : 0;
}

/* Waits as a standby until this instance may stream (d->store locked, 0), or a stop (-1).
 * Once a standby, its own listener (hp; NULL: none) answers /readyz and /metrics; the slot
 * poller stays afterwards for the slot metrics when they are on (d->slots), else it goes. */
static int standby_wait(daemon_t *d, metrics_registry *metrics, const http_params *hp)
{
	const config *cfg = d->cfg;
	char err[CHECKPOINT_ERROR_MAX > SLOT_STATUS_ERROR_MAX ? CHECKPOINT_ERROR_MAX : SLOT_STATUS_ERROR_MAX];
	char where[300];
	if (cfg->standby_poll_ms == 0) { /* no standby: the checkpoint store now, or an error */
		if (store_open(cfg, &d->store, where, err) < 0) {
			log_error("run.state_dir", "%s: %s", where, err);
			return -1;
		}
		d->role = ROLE_ACTIVE;
		return 0;
	}
	int64_t metrics_ms = cfg->http_slot_status_interval_ms > 0 ? cfg->http_slot_status_interval_ms : cfg->standby_poll_ms;
	if (slot_status_create(d->loop, metrics, cfg->conninfo, cfg->slot, metrics_ms, &d->slots, err) < 0) {
		log_error("run.slot_status", "%s", err);
		return -1;
	}
	d->standby_hp = hp;
	slot_status_watch(d->slots, cfg->standby_poll_ms, standby_poll_cb, d);
	d->waiting = true;
	int rc = loop_run(d->loop);
	d->waiting = false;
	slot_status_watch(d->slots, 0, NULL, NULL);
	http_destroy(d->standby_http); /* the daemon's listener takes the port over */
	d->standby_http = NULL;
	if (hp == NULL || cfg->http_slot_status_interval_ms == 0) {
		slot_status_destroy(d->slots);
		d->slots = NULL;
	}
	if (rc < 0)
		log_error("run.loop", "event loop failed: %s", strerror(-rc));
	return rc == 0 && d->role == ROLE_ACTIVE && !d->stopping ? 0 : -1;
}

/* ---- edge ------------------------------------------------------------------------------- */

/* An edge's keys, checked before anything connects: 0, or -1 with err. */
static int edge_config_check(const config *cfg, char err[CONFIG_ERROR_MAX])
{
	if (cfg->edge_stream_url[0] == '\0')
		snprintf(err, CONFIG_ERROR_MAX, "edge.enabled: set edge.stream_url, the Redis of the active instance's "
		         "redis_stream sink (docs/edges.md)");
	else if (strcmp(cfg->pipeline_checkpoint_store, "postgres") != 0)
		snprintf(err, CONFIG_ERROR_MAX, "edge.enabled: an edge reads the policy state from the active instance's "
		         "checkpoint: set pipeline.checkpoint_store = postgres (and its checkpoint_conninfo, "
		         "checkpoint_schema) as the active instance has them");
	else
		return 0;
	return -1;
}

/* Whether a sink keeps a replay buffer (a realtime sink with replay_bytes): only then is the
 * stream's history worth reading at an edge's start. */
static bool sinks_replay(const run_sink_conf *sinks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sinks[i].ops == &realtime_sink_ops && ((const realtime_conf *)sinks[i].conf)->replay_bytes > 0)
			return true;
	return false;
}

/* The edge's policy state: the shared checkpoint read once, read-only (d->store), as of where
 * the edge starts: in the stream's window (edge.replay_from_stream, when a sink replays) or at
 * the confirmed position. 0 or -1. */
static int edge_open(daemon_t *d, bool history)
{
	const config *cfg = d->cfg;
	char err[CHECKPOINT_ERROR_MAX], a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
	uint64_t from = 0, s = 0, p = 0;
	if (history && cfg->edge_replay_from_stream && edge_source_window_start(cfg, &from, err) < 0) {
		log_warn("run.edge", "cannot read the stream's window (%s): starting at the confirmed position, so a "
		         "resume from before this edge's start gets the gap", err);
		from = 0;
	}
	int rc = edge_checkpoint_read(cfg->pipeline_checkpoint_conninfo[0] ? cfg->pipeline_checkpoint_conninfo
	                                                                  : cfg->conninfo,
	                              cfg->pipeline_checkpoint_schema, cfg->slot, from, &d->store, &s, &p, err);
	if (rc < 0) {
		log_error("run.edge", "%s", err);
		return -1;
	}
	log_info("run.edge", "slot=%s: an edge; the policy state as of %s read from the shared checkpoint (%s), "
	         "which the active instance confirmed up to %s; reading key %s from id %" PRIu64 "-0%s", cfg->slot,
	         lsn_format(s, a), cfg->pipeline_checkpoint_schema, lsn_format(p, b), cfg->edge_stream_key, s,
	         s < p ? " (the stream's window: the replay buffer reaches back to there)" : "");
	d->role = ROLE_EDGE;
	return 0;
}

static void edge_stats(const daemon_t *d, edge_source_stats *es)
{
	*es = (edge_source_stats){0};
	if (d->pl != NULL)
		edge_source_stats_get(pipeline_source(d->pl), es);
}

static int edge_entries_cb(void *arg, double *value)
{
	edge_source_stats es;
	edge_stats(arg, &es);
	*value = (double)es.entries_read;
	return 0;
}

static int edge_lag_cb(void *arg, double *value)
{
	edge_source_stats es;
	edge_stats(arg, &es);
	*value = es.stream_last_lsn > es.read_lsn ? (double)(es.stream_last_lsn - es.read_lsn) : 0;
	return 0;
}

static int edge_caught_up_cb(void *arg, double *value)
{
	edge_source_stats es;
	edge_stats(arg, &es);
	*value = es.caught_up ? 1 : 0;
	return 0;
}

/* walcast_edge_entries_read_total, walcast_edge_stream_lag_bytes, walcast_edge_caught_up. */
static int edge_metrics_register(daemon_t *d, metrics_registry *r)
{
	static const struct {
		metrics_kind kind;
		const char *name, *help;
		metrics_read_cb cb;
	} figures[] = {
		{METRICS_COUNTER, "walcast_edge_entries_read_total", "Entries of the change stream this edge read.",
		 edge_entries_cb},
		{METRICS_GAUGE, "walcast_edge_stream_lag_bytes",
		 "Bytes of WAL between the stream's last entry (XINFO STREAM, at most 1 s old) and the last one this "
		 "edge read (their ids' commit LSNs).", edge_lag_cb},
		{METRICS_GAUGE, "walcast_edge_caught_up", "1 once this edge has read to the stream's end (/readyz 200).",
		 edge_caught_up_cb},
	};
	char merr[METRICS_ERROR_MAX] = "";
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < sizeof(figures) / sizeof(figures[0]); i++) {
		metrics_desc desc = {.kind = figures[i].kind, .name = figures[i].name, .help = figures[i].help};
		metrics_family *f = NULL;
		rc = metrics_family_register(r, &desc, &f, merr);
		if (rc == 0)
			rc = metrics_callback_register(f, NULL, figures[i].cb, d, merr);
	}
	if (rc < 0)
		log_error("run.metrics", "walcast_edge_*: %s", rc == -ENOMEM ? "out of memory" : merr);
	return rc;
}

int run_main(config *cfg, const run_options *o)
{
	daemon_t d = {.cfg = cfg, .code = 1};
	policy *pol = NULL;
	keyring *keys = NULL;
	metrics_registry *metrics = NULL;
	run_sink_conf *sinks = NULL;
	size_t nsinks = 0;
	role_child roles[ROLES];
	char err[CONFIG_ERROR_MAX > PIPELINE_ERROR_MAX ? CONFIG_ERROR_MAX : PIPELINE_ERROR_MAX];
	int rc;
	signal(SIGPIPE, SIG_IGN);

	/* the loop and the signal handlers before anything that can wait (main held the signals) */
	if ((d.loop = loop_create()) == NULL || loop_signal(d.loop, SIGTERM, term_cb, &d) < 0 ||
	    loop_signal(d.loop, SIGINT, term_cb, &d) < 0 || loop_signal(d.loop, SIGHUP, hup_cb, &d) < 0) {
		log_error("run.loop", "cannot set up the event loop and its signal handlers");
		goto cleanup;
	}
	run_signals_hold(false);

	/* everything that can be refused is checked before anything connects */
	if (config_check_sections(cfg, sink_lookup, NULL, err) < 0) {
		log_error("run.config", "%s", err);
		d.code = 2;
		goto cleanup;
	}
	for (const config_section *s = config_section_next(cfg, "sink", NULL); s != NULL;
	     s = config_section_next(cfg, "sink", s))
		nsinks++;
	if (nsinks == 0) {
		log_error("run.config", "no sink configured: add a [sink.NAME] section with a type (%s)",
		          sink_names(err, sizeof(err)));
		d.code = 2;
		goto cleanup;
	}
	if (cfg->edge_enabled && edge_config_check(cfg, err) < 0) {
		log_error("run.config", "%s", err);
		d.code = 2;
		goto cleanup;
	}
	sinks = calloc(nsinks, sizeof(*sinks));
	if (sinks == NULL)
		goto cleanup;
	size_t k = 0;
	for (const config_section *s = config_section_next(cfg, "sink", NULL); s != NULL;
	     s = config_section_next(cfg, "sink", s), k++) {
		run_sink_conf *sc = &sinks[k];
		sc->ops = sink_ops_find(config_section_type(s));
		if (cfg->edge_enabled && sc->ops->kind == SINK_DURABLE) {
			log_error("run.config", "sink %s (type %s) is durable: an edge holds no slot and confirms nothing, so "
			          "only live sinks (realtime, nng) run on an edge; the durable sinks belong to the active "
			          "instance", config_section_name(s), sc->ops->name);
			d.code = 2;
			goto cleanup;
		}
		sc->table = (config_table){sc->ops->keys, sc->ops->nkeys, sc->ops->conf_size};
		sc->conf = calloc(1, sc->ops->conf_size ? sc->ops->conf_size : 1);
		if (sc->conf == NULL || config_section_apply(s, &sc->table, sc->conf, err) < 0) {
			log_error("run.config", "%s", sc->conf == NULL ? "out of memory" : err);
			d.code = 2;
			goto cleanup;
		}
	}
	char perr[POLICY_ERROR_MAX];
	if (policy_load_file(o->policy_path, &pol, perr) < 0) {
		log_error("run.policy", "%s", perr);
		d.code = 2;
		goto cleanup;
	}
	char kerr[KEYRING_ERROR_MAX];
	rc = cfg->keys_file[0] ? keyring_load_file(cfg->keys_file, &keys, kerr)
	                       : keyring_load_env("WALCAST_KEYS", &keys, kerr);
	if (rc < 0 && !(rc == -ENOENT && !cfg->keys_file[0])) {
		log_error("run.keys", "%s", kerr);
		d.code = 2;
		goto cleanup;
	}
	/* A DELETE is judged from the old row's replica identity (src/policy/replident.h). */
	if (startup_stop(&d) || replident_check_conninfo_until(pol, cfg->conninfo, startup_stop, &d) < 0)
		goto cleanup;
	if ((metrics = metrics_registry_create()) == NULL || role_metric_register(&d, metrics, roles) < 0 ||
	    (cfg->edge_enabled && edge_metrics_register(&d, metrics) < 0))
		goto cleanup;
	http_params hp = {
		.loop = d.loop, .listen = cfg->http_listen, .tls_cert = cfg->http_tls_cert,
		.tls_key = cfg->http_tls_key, .metrics = metrics, .status = {readiness_cb, &d},
		.static_dir = cfg->http_static_dir,
	};
	/* an edge: the shared checkpoint read; else the slot free and the state directory ours, or a
	 * standby until they are */
	if ((cfg->edge_enabled ? edge_open(&d, sinks_replay(sinks, nsinks)) : standby_wait(&d, metrics, cfg->http_listen[0] != '\0' ? &hp : NULL)) < 0)
		goto cleanup;
	/* the listener exists before the sinks (a WebSocket sink adds its protocol); it listens
	 * once they are all added */
	char herr[HTTP_ERROR_MAX];
	if (cfg->http_listen[0] != '\0') {
		if (http_create(&hp, &d.http, herr) < 0) {
			log_error("run.http", "http.listen=%s: %s", cfg->http_listen, herr);
			goto cleanup;
		}
	}
	if (cfg->audit_enabled) {
		auditlog_params ap = {
			.loop = d.loop, .metrics = metrics,
			.conninfo = cfg->audit_conninfo[0] ? cfg->audit_conninfo : cfg->conninfo,
			.flush_interval_ms = cfg->audit_flush_interval_ms, .batch_size = (size_t)cfg->audit_batch_size,
			.queue_max = (size_t)cfg->audit_queue_max, .reconnect_min_ms = cfg->reconnect_min_ms,
			.reconnect_max_ms = cfg->reconnect_max_ms, .health_interval_ms = cfg->audit_sync_health_interval_ms,
			.lagging_after_ms = cfg->audit_lagging_after_ms, .health_cb = audit_health_cb, .health_arg = &d,
		};
		char aerr[AUDITLOG_ERROR_MAX];
		if (auditlog_create(&ap, &d.audit, aerr) < 0) {
			log_error("run.audit", "%s", aerr);
			goto cleanup;
		}
	}
	pipeline_params pp = {
		.loop = d.loop, .cfg = cfg,
		.source = cfg->edge_enabled ? &edge_source_ops : &replication_source_ops, .pol = pol, .keys = keys,
		.metrics = metrics, .store = d.store, .http = d.http, .audit = d.audit, .stopped_cb = stopped_cb, .arg = &d,
	};
	if (pipeline_create(&pp, &d.pl, err) < 0) {
		log_error("run.pipeline", "%s", err);
		goto cleanup;
	}
	k = 0;
	for (const config_section *s = config_section_next(cfg, "sink", NULL); s != NULL;
	     s = config_section_next(cfg, "sink", s), k++) {
		if (pipeline_add_sink(d.pl, sinks[k].ops, config_section_name(s), sinks[k].conf, err) < 0) {
			log_error("run.sink", "%s", err);
			goto cleanup;
		}
	}
	if (d.http != NULL) {
		if ((d.health = calloc(nsinks, sizeof(*d.health))) == NULL)
			goto cleanup;
		d.nhealth = nsinks;
		if (http_start(d.http, herr) < 0) {
			log_error("run.http", "http.listen=%s: %s", cfg->http_listen, herr);
			goto cleanup;
		}
		char serr[SLOT_STATUS_ERROR_MAX];
		if (cfg->http_slot_status_interval_ms > 0 && d.slots == NULL && !cfg->edge_enabled &&
		    slot_status_create(d.loop, metrics, cfg->conninfo, cfg->slot, cfg->http_slot_status_interval_ms,
		                       &d.slots, serr) < 0) {
			log_error("run.slot_status", "%s", serr);
			goto cleanup;
		}
	}
	if (startup_stop(&d) || (cfg->edge_enabled && edge_source_relations_seed(pipeline_source(d.pl)) < 0))
		goto cleanup;
	if (pipeline_start(d.pl, err) < 0) {
		log_error("run.start", "%s", err);
		goto cleanup;
	}
	d.running = true;
	if (d.role == ROLE_ACTIVE && store_is_pg(cfg) && cfg->standby_poll_ms > 0) { /* an edge holds no store */
		int id = loop_timer_add(d.loop, cfg->standby_poll_ms, store_check_cb, &d);
		d.check_timer = id > 0 ? id : 0;
	}
	log_info("run.started", "sinks=%zu state_dir=%s", nsinks, cfg->pipeline_state_dir);
	rc = loop_run(d.loop);
	if (rc < 0) {
		log_error("run.loop", "event loop failed: %s", strerror(-rc));
		d.code = 1;
	}
cleanup:
	if (d.check_timer > 0)
		loop_timer_cancel(d.loop, d.check_timer);
	if (!d.running && d.stopping)
		log_info("run.stopped", "exit=%d: stopped while starting, before streaming", d.code);
	else if (d.running)
		log_info("run.stopped", "exit=%d", d.code);
	http_destroy(d.http);
	slot_status_destroy(d.slots);
	free(d.health);
	pipeline_destroy(d.pl);
	auditlog_destroy(d.audit);
	for (size_t i = 0; sinks != NULL && i < nsinks; i++) {
		if (sinks[i].conf != NULL && sinks[i].ops != NULL)
			config_section_free(&sinks[i].table, sinks[i].conf);
		free(sinks[i].conf);
	}
	free(sinks);
	checkpoint_store_destroy(d.store);
	metrics_registry_destroy(metrics);
	keyring_destroy(keys);
	policy_destroy(pol);
	loop_destroy(d.loop);
	return d.code;
}
