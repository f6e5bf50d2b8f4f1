/*
 * test_pipeline — unit tests for the pipeline (src/pipeline/pipeline.h) driven through its
 * source events, without PostgreSQL: deliveries routed to the subscribers' sinks, begin/commit
 * offered to every sink for every transaction, the flush LSN (the lowest durable position,
 * never more; what was offered when every sink is live), the stream paused past
 * pipeline.max_pending and resumed below half, the policy rows of a transaction appended to the
 * checkpoint store and synced before their LSN is confirmed, and a restarted pipeline judging
 * with the state of its resume point; what the pipeline tells its source (start, confirm, pause,
 * resume, stop). Test doubles: a recording source, a recording durable sink, a recording live
 * sink, an in-memory checkpoint store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "loop.h"
#include "metrics.h"
#include "pipeline.h"
#include "policy.h"
#include "txn_source.h"

static const char POLICY[] =
	"[roles]\n"
	"ranks = viewer, member, analyst, admin, owner\n"
	"bypass = service_role\n"
	"[membership]\n"
	"table = public.org_roles\n"
	"org = org_id\n"
	"user = user_id\n"
	"role = role\n"
	"[privacy]\n"
	"table = public.privacy_rules\n"
	"subject = contact_id\n"
	"min_role = min_role\n"
	"[table public.events]\n"
	"columns = id, org_id, note\n"
	"org = org_id\n"
	"read = viewer\n";

#define UUID_T 2950
#define TEXT_T 25

static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "role", .type_oid = TEXT_T, .typmod = -1},
};
static relation roles_rel = {.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 3,
                             .cols = roles_cols, .replident = 'd', .version = 1};
static rel_column rules_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "contact_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "min_role", .type_oid = TEXT_T, .typmod = -1},
};
static relation rules_rel = {.oid = 16410, .schema = "public", .name = "privacy_rules", .ncols = 3,
                             .cols = rules_cols, .replident = 'd', .version = 1};
static rel_column events_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "note", .type_oid = TEXT_T, .typmod = -1},
};
static relation events_rel = {.oid = 16420, .schema = "public", .name = "events", .ncols = 3,
                              .cols = events_cols, .replident = 'd', .version = 1};

#define ORG1 "0a000000-0000-4000-8000-000000000001"
#define ORG2 "0a000000-0000-4000-8000-000000000002"
#define USER1 "0b000000-0000-4000-8000-000000000001"
#define RULE1 "0e000000-0000-4000-8000-000000000001"
#define CONTACT1 "0c000000-0000-4000-8000-000000000001"

/* ---- the recording sinks ------------------------------------------------------------------ */

typedef struct rec_conf {
	const char *uid; /* NULL: bypass */
} rec_conf;

typedef struct rec {
	const sink_env *env;
	audience_sub *sub;
	char log[8192];      /* "B<end> ", "D<payload bytes> ", "C<end> " */
	int begins, commits, delivers;
	uint64_t committed;  /* end of the last commit taken */
	uint64_t position;   /* made durable by flush */
	size_t pending;      /* payload bytes since the last flush */
	bool stall;          /* flush does nothing (a consumer away) */
	bool ended;          /* takes nothing more (a front end's limit reached) */
	bool eager;          /* commit makes the transaction durable at once (jsonl past flush_bytes) */
	metrics_counter *drops; /* live_metrics' walcast_sink_drops_total (counted_ops) */
} rec;

/* The instances the tests look at, in creation order (the sinks' own state is theirs). */
static rec *recs[8];
static int nrecs;

static void logf_(rec *r, const char *fmt, ...)
{
	size_t have = strlen(r->log);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->log + have, sizeof(r->log) - have, fmt, ap);
	va_end(ap);
}

static int rec_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	(void)err;
	const rec_conf *c = conf;
	rec *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->env = env;
	int rc = env->subscribe(env->env_arg, r, c->uid, c->uid == NULL, false, &r->sub);
	if (rc < 0) {
		free(r);
		return rc;
	}
	recs[nrecs++] = r;
	*out = r;
	return 0;
}

static void rec_destroy(void *impl)
{
	rec *r = impl;
	if (r != NULL)
		r->env->unsubscribe(r->env->env_arg, r->sub);
	free(r);
}

static uint64_t rec_position(void *impl)
{
	return ((rec *)impl)->position;
}

static int rec_begin(void *impl, const change_txn *txn)
{
	rec *r = impl;
	r->begins++;
	logf_(r, "B%llu ", (unsigned long long)txn->end_lsn);
	return 0;
}

static int rec_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	rec *r = impl;
	assert_ptr_equal(sub_arg, r); /* the sub_arg given to subscribe */
	assert_int_equal(d->nsubs, 1);
	size_t len;
	const char *data = audience_payload_data(d->payload, &len);
	r->delivers++;
	r->pending += len;
	const char *note = strstr(data, "\"note\":\"");
	if (note != NULL)
		logf_(r, "D%.*s ", (int)strcspn(note + 8, "\""), note + 8);
	else
		logf_(r, "D ");
	return 0;
}

static int rec_flush(void *impl);

static int rec_commit(void *impl, const change_txn *txn)
{
	rec *r = impl;
	if (r->ended)
		return 0;
	r->commits++;
	r->committed = txn->end_lsn;
	logf_(r, "C%llu ", (unsigned long long)txn->end_lsn);
	return r->eager ? rec_flush(r) : 0;
}

static void rec_abort(void *impl)
{
	logf_(impl, "A ");
}

static size_t rec_pending(void *impl)
{
	return ((rec *)impl)->pending;
}

static int rec_flush(void *impl)
{
	rec *r = impl;
	if (r->stall || r->position == r->committed)
		return 0;
	r->position = r->committed;
	r->pending = 0;
	r->env->progress(r->env->env_arg);
	return 0;
}

static const sink_ops durable_ops = {
	.name = "test_durable", .kind = SINK_DURABLE, .conf_size = sizeof(rec_conf),
	.create = rec_create, .destroy = rec_destroy, .position = rec_position,
	.begin = rec_begin, .deliver = rec_deliver, .commit = rec_commit, .abort = rec_abort,
	.pending_bytes = rec_pending, .flush = rec_flush,
};

/* A live sink that registers the shared series through sink_env.live_metrics, drops every
 * delivery and has three connections. */
static int conns_cb(void *arg, double *v)
{
	(void)arg;
	*v = 3;
	return 0;
}

static int counted_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	int rc = rec_create(env, conf, out, err);
	if (rc == 0)
		rc = env->live_metrics(env->env_arg, &((rec *)*out)->drops, conns_cb, NULL);
	return rc;
}

static int counted_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	rec *r = impl;
	(void)sub_arg, (void)d;
	if (r->drops != NULL)
		metrics_counter_inc(r->drops);
	return 0;
}

static const sink_ops counted_ops = {
	.name = "test_counted", .kind = SINK_LIVE, .conf_size = sizeof(rec_conf),
	.create = counted_create, .destroy = rec_destroy,
	.begin = rec_begin, .deliver = counted_deliver, .commit = rec_commit,
};

static const sink_ops live_ops = {
	.name = "test_live", .kind = SINK_LIVE, .conf_size = sizeof(rec_conf),
	.create = rec_create, .destroy = rec_destroy,
	.begin = rec_begin, .deliver = rec_deliver, .commit = rec_commit,
};

/* ---- the in-memory checkpoint store ------------------------------------------------------- */

typedef struct mrow {
	uint64_t lsn;
	int table;
	char *v[3];
	int deleted;
} mrow;

typedef struct mstore {
	mrow rows[512];
	size_t nrows;
	size_t durable;     /* rows made durable by sync */
	uint64_t synced_lsn;
	int syncs;
	uint64_t pos;       /* the "pipeline" position, durable at sync */
	uint64_t pos_pending;
} mstore;

static int ms_load(void *impl, uint64_t at, checkpoint_row_cb row_cb, void *arg, uint64_t *state_lsn,
                   char err[CHECKPOINT_ERROR_MAX])
{
	(void)err;
	mstore *m = impl;
	*state_lsn = 0;
	for (size_t i = 0; i < m->durable; i++) {
		if (m->rows[i].lsn > at)
			break;
		checkpoint_row r = {m->rows[i].table, (const char *const *)m->rows[i].v, m->rows[i].deleted};
		int rc = row_cb(arg, &r);
		if (rc != 0)
			return rc;
	}
	/* known as of the last sync, at most at */
	if (m->durable > 0)
		*state_lsn = m->synced_lsn < at ? m->synced_lsn : at;
	return 0;
}

static int ms_add(mstore *m, uint64_t lsn, const checkpoint_row *r)
{
	if (m->nrows == 512)
		return -ENOSPC;
	mrow *x = &m->rows[m->nrows++];
	*x = (mrow){.lsn = lsn, .table = r->table, .deleted = r->deleted};
	for (int k = 0; k < 3; k++)
		x->v[k] = r->values[k] ? strdup(r->values[k]) : NULL;
	return 0;
}

static int ms_append(void *impl, uint64_t lsn, const checkpoint_row *rows, size_t n,
                     char err[CHECKPOINT_ERROR_MAX])
{
	(void)err;
	for (size_t i = 0; i < n; i++)
		if (ms_add(impl, lsn, &rows[i]) < 0)
			return -ENOSPC;
	return 0;
}

static int ms_sync(void *impl, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX])
{
	(void)err;
	mstore *m = impl;
	m->durable = m->nrows;
	m->synced_lsn = lsn;
	m->pos = m->pos_pending;
	m->syncs++;
	return 0;
}

typedef struct ms_dump {
	mstore *m;
	uint64_t lsn;
} ms_dump;

static int ms_dump_row(void *arg, const checkpoint_row *r)
{
	ms_dump *d = arg;
	return ms_add(d->m, d->lsn, r);
}

static int ms_compact(void *impl, uint64_t upto, int (*dump_cb)(void *, checkpoint_row_cb, void *), void *arg,
                      char err[CHECKPOINT_ERROR_MAX])
{
	(void)err;
	mstore *m = impl;
	for (size_t i = 0; i < m->nrows; i++)
		for (int k = 0; k < 3; k++)
			free(m->rows[i].v[k]);
	m->nrows = 0;
	ms_dump d = {m, upto};
	int rc = dump_cb(arg, ms_dump_row, &d);
	m->durable = m->nrows;
	return rc;
}

static uint64_t ms_log_bytes(void *impl)
{
	(void)impl;
	return 0;
}

static int ms_position_get(void *impl, const char *name, uint64_t *lsn)
{
	assert_string_equal(name, "pipeline");
	*lsn = ((mstore *)impl)->pos;
	return 0;
}

static int ms_position_put(void *impl, const char *name, uint64_t lsn)
{
	assert_string_equal(name, "pipeline");
	((mstore *)impl)->pos_pending = lsn;
	return 0;
}

static void ms_destroy(void *impl)
{
	mstore *m = impl;
	for (size_t i = 0; i < m->nrows; i++)
		for (int k = 0; k < 3; k++)
			free(m->rows[i].v[k]);
	m->nrows = 0;
}

static const checkpoint_store_ops mstore_ops = {
	ms_load, ms_append, ms_sync, ms_compact, ms_log_bytes, ms_position_get, ms_position_put, ms_destroy,
};

/* ---- a recording source: the pipeline's events, and what the pipeline told it ------------- */

typedef struct fsource {
	txn_source_events ev;
	uint64_t resume_lsn; /* start's */
	uint64_t confirmed;
	int starts, stops;
	bool paused;
} fsource;

static fsource *fsrc; /* the source of the pipeline created last */

static int fs_create(loop *l, const config *cfg, relcache *rels, const txn_source_events *events, void **out,
                     char err[TXN_SOURCE_ERROR_MAX])
{
	(void)l, (void)cfg, (void)rels, (void)err;
	fsource *fs = calloc(1, sizeof(*fs));
	if (fs == NULL)
		return -ENOMEM;
	fs->ev = *events;
	*out = fsrc = fs;
	return 0;
}

static void fs_destroy(void *impl)
{
	if (impl == fsrc)
		fsrc = NULL;
	free(impl);
}

static int fs_start(void *impl, uint64_t resume_lsn)
{
	fsource *fs = impl;
	fs->starts++;
	fs->resume_lsn = resume_lsn;
	return 0;
}

static void fs_stop(void *impl)
{
	((fsource *)impl)->stops++;
}

static void fs_confirm(void *impl, uint64_t lsn)
{
	fsource *fs = impl;
	assert_true(lsn >= fs->confirmed); /* never backwards */
	fs->confirmed = lsn;
}

static void fs_pause(void *impl)
{
	((fsource *)impl)->paused = true;
}

static void fs_resume(void *impl)
{
	((fsource *)impl)->paused = false;
}

static bool fs_streaming(const void *impl)
{
	(void)impl;
	return false; /* never connected: sinks see a pipeline that is not live */
}

static uint64_t fs_zero(const void *impl)
{
	(void)impl;
	return 0;
}

static uint64_t fs_confirmed_lsn(const void *impl)
{
	return ((const fsource *)impl)->confirmed;
}

/* No snapshot_done (it never calls snapshot_cb), no publication. */
static const txn_source_ops fsource_ops = {
	.create = fs_create, .destroy = fs_destroy, .start = fs_start, .stop = fs_stop, .confirm = fs_confirm,
	.pause = fs_pause, .resume = fs_resume, .streaming = fs_streaming, .decode_errors = fs_zero,
	.received_lsn = fs_zero, .confirmed_lsn = fs_confirmed_lsn,
};

/* ---- the fixture ---------------------------------------------------------------------------- */

typedef struct fx {
	loop *l;
	config cfg;
	policy *pol;
	mstore ms;
	checkpoint_store store;
	pipeline *pl;
	txn_source_events ev; /* the pipeline's, as its source got them */
	uint64_t lsn;
	int stopped;
	char events[256]; /* event_cb: "<event>:<lsn> " */
	metrics_registry *metrics; /* NULL: none */
} fx;

static void stopped_cb(void *arg, int code)
{
	fx *f = arg;
	f->stopped = code + 1;
	loop_stop(f->l);
}

static void event_cb(void *arg, pipeline_event ev, uint64_t lsn)
{
	fx *f = arg;
	size_t have = strlen(f->events);
	snprintf(f->events + have, sizeof(f->events) - have, "%d:%llu ", (int)ev, (unsigned long long)lsn);
}

static void fx_pipeline(fx *f, bool with_store)
{
	char err[PIPELINE_ERROR_MAX];
	nrecs = 0;
	pipeline_params p = {
		.loop = f->l, .cfg = &f->cfg, .source = &fsource_ops, .pol = f->pol,
		.store = with_store ? &f->store : NULL,
		.stopped_cb = stopped_cb, .event_cb = event_cb, .arg = f, .metrics = f->metrics,
	};
	int rc = pipeline_create(&p, &f->pl, err);
	if (rc != 0)
		fail_msg("pipeline_create: %s", err);
	assert_non_null(fsrc);
	f->ev = fsrc->ev;
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	char err[POLICY_ERROR_MAX];
	assert_non_null(f);
	f->l = loop_create();
	assert_int_equal(config_init(&f->cfg), 0);
	char cerr[CONFIG_ERROR_MAX];
	assert_int_equal(config_set(&f->cfg, "postgres", "conninfo", "host=/nonexistent-walcast-test port=1", cerr), 0);
	assert_int_equal(config_set(&f->cfg, "replication", "reconnect_min", "600s", cerr), 0);
	assert_int_equal(config_set(&f->cfg, "pipeline", "max_pending", "4096", cerr), 0);
	if (policy_load_string(POLICY, "test.ini", &f->pol, err) != 0)
		fail_msg("policy: %s", err);
	f->store = (checkpoint_store){&mstore_ops, &f->ms};
	f->lsn = 0x1000;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	pipeline_destroy(f->pl);
	metrics_registry_destroy(f->metrics);
	ms_destroy(&f->ms);
	policy_destroy(f->pol);
	config_fini(&f->cfg);
	loop_destroy(f->l);
	free(f);
	return 0;
}

static void add_sink(fx *f, const sink_ops *ops, const char *name, const char *uid)
{
	char err[PIPELINE_ERROR_MAX];
	rec_conf c = {uid};
	if (pipeline_add_sink(f->pl, ops, name, &c, err) != 0)
		fail_msg("add_sink: %s", err);
}

/* One transaction of n changes (rows of 3 text values) on rels; returns its end LSN. */
typedef struct row3 {
	const relation *rel;
	change_action action;
	const char *v[3];
} row3;

static uint64_t txn(fx *f, const row3 *rows, size_t n)
{
	change_txn t = {.xid = (uint32_t)f->lsn, .commit_lsn = f->lsn + 100 * n + 50, .end_lsn = f->lsn + 100 * n + 60,
	                .commit_time = 1700000000000000};
	assert_int_equal(f->ev.sink.begin_cb(f->ev.arg, &t), 0);
	for (size_t i = 0; i < n; i++) {
		change_value tup[3];
		for (int k = 0; k < 3; k++)
			tup[k] = rows[i].v[k] ? (change_value){VALUE_TEXT, (uint32_t)strlen(rows[i].v[k]), rows[i].v[k]}
			                      : (change_value){VALUE_NULL, 0, NULL};
		change c = {.action = rows[i].action, .lsn = f->lsn + 100 * (i + 1), .txn = &t, .rel = rows[i].rel};
		if (rows[i].action == CHANGE_DELETE)
			c.old_tuple = tup;
		else
			c.new_tuple = tup;
		assert_int_equal(f->ev.sink.change_cb(f->ev.arg, &c), 0);
	}
	assert_int_equal(f->ev.sink.commit_cb(f->ev.arg, &t), 0);
	f->lsn = t.end_lsn + 0x100;
	return t.end_lsn;
}

static uint64_t confirmed(fx *f)
{
	pipeline_status st;
	pipeline_get_status(f->pl, &st);
	return st.confirmed_lsn;
}

/* ---- the tests -------------------------------------------------------------------------------- */

/* Deliveries reach exactly the subscribers who may see them, each sink gets begin/commit for
 * every transaction in commit order, deliveries between them. */
static void test_routing(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);  /* bypass */
	add_sink(f, &live_ops, "user1", USER1);  /* a member of org 1 (once added) */
	rec *all = recs[0], *u1 = recs[1];

	row3 add[] = {{&roles_rel, CHANGE_INSERT, {ORG1, USER1, "viewer"}}};
	uint64_t e1 = txn(f, add, 1);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "one"}},
	             {&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000002", ORG2, "two"}}};
	uint64_t e2 = txn(f, ev, 2);
	row3 other[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000003", ORG2, "three"}}};
	uint64_t e3 = txn(f, other, 1);

	char want[256];
	snprintf(want, sizeof(want), "B%llu D C%llu B%llu Done Dtwo C%llu B%llu Dthree C%llu ",
	         (unsigned long long)e1, (unsigned long long)e1, (unsigned long long)e2, (unsigned long long)e2,
	         (unsigned long long)e3, (unsigned long long)e3);
	assert_string_equal(all->log, want);
	/* the member sees the org-1 row only, and still gets every begin/commit */
	snprintf(want, sizeof(want), "B%llu C%llu B%llu Done C%llu B%llu C%llu ", (unsigned long long)e1,
	         (unsigned long long)e1, (unsigned long long)e2, (unsigned long long)e2, (unsigned long long)e3,
	         (unsigned long long)e3);
	assert_string_equal(u1->log, want);
	assert_int_equal(u1->begins, 3);
	assert_int_equal(u1->commits, 3);
}

/* Without a policy every change reaches bypass subscribers unchanged. */
static void test_no_policy(void **state)
{
	fx *f = *state;
	policy_destroy(f->pol);
	f->pol = NULL;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	txn(f, ev, 1);
	assert_int_equal(recs[0]->delivers, 1);
}

/* The flush LSN is the lowest durable position, never more; live sinks do not hold it. */
static void test_ack_min_of_durables(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "a", NULL);
	add_sink(f, &durable_ops, "b", NULL);
	add_sink(f, &live_ops, "live", NULL);
	rec *a = recs[0], *b = recs[1];
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	uint64_t e1 = txn(f, ev, 1);
	assert_int_equal(confirmed(f), 0); /* nothing durable yet */
	assert_int_equal(fsrc->confirmed, 0);
	b->stall = true;
	assert_int_equal(rec_flush(a), 0);
	assert_int_equal(a->position, e1);
	assert_int_equal(confirmed(f), 0); /* b holds it back */
	uint64_t e2 = txn(f, ev, 1);
	assert_int_equal(rec_flush(a), 0);
	assert_int_equal(confirmed(f), 0);
	b->stall = false;
	assert_int_equal(rec_flush(b), 0);
	assert_int_equal(confirmed(f), e2);
	assert_int_equal(fsrc->confirmed, e2); /* told to the source */
	uint64_t e3 = txn(f, ev, 1);
	assert_int_equal(rec_flush(b), 0);
	assert_int_equal(confirmed(f), e2); /* a is at e2 */
	assert_int_equal(rec_flush(a), 0);
	assert_int_equal(confirmed(f), e3);
}

/* With live sinks only, what was offered is confirmed. */
static void test_ack_live_only(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &live_ops, "live", NULL);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	uint64_t e1 = txn(f, ev, 1);
	assert_int_equal(confirmed(f), e1);
	uint64_t e2 = txn(f, ev, 1);
	assert_int_equal(confirmed(f), e2);
}

/* A non-transactional message after the last transaction is confirmed once every durable sink
 * holds every transaction (no position covers a message), not before. */
static void test_ack_message(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	rec *all = recs[0];
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	uint64_t e1 = txn(f, ev, 1);
	change m = {.action = CHANGE_MESSAGE, .lsn = f->lsn + 10, .prefix = "p", .content = "c", .content_len = 1};
	assert_int_equal(f->ev.sink.change_cb(f->ev.arg, &m), 0);
	assert_int_equal(all->delivers, 2); /* the row, then the message (bypass) */
	assert_int_equal(confirmed(f), 0);
	all->position = e1; /* e1 durable, the message's bytes still pending */
	all->env->progress(all->env->env_arg);
	assert_int_equal(confirmed(f), e1);
	all->pending = 0; /* the message made durable too */
	all->env->progress(all->env->env_arg);
	assert_int_equal(confirmed(f), m.lsn);
}

/* Past max_pending the stream pauses; below half it resumes. */
static void test_pause_resume(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "slow", NULL);
	add_sink(f, &live_ops, "live", NULL);
	rec *slow = recs[0];
	slow->stall = true;
	char note[1200];
	memset(note, 'n', sizeof(note) - 1);
	note[sizeof(note) - 1] = '\0';
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, note}}};
	pipeline_status st;
	int n = 0;
	for (;;) {
		txn(f, ev, 1);
		n++;
		pipeline_get_status(f->pl, &st);
		assert_true(fsrc->paused == st.paused);
		if (st.paused)
			break;
		assert_true(slow->pending <= 4096); /* paused as soon as it went past */
	}
	assert_true(slow->pending > 4096);
	assert_true(n >= 3);
	assert_int_equal(confirmed(f), 0);
	slow->stall = false;
	assert_int_equal(rec_flush(slow), 0);
	pipeline_get_status(f->pl, &st);
	assert_false(st.paused);
	assert_false(fsrc->paused);
	assert_int_equal(confirmed(f), slow->committed);
	assert_int_equal(fsrc->confirmed, slow->committed);
}

/* A restart at lsn: a new pipeline with a live sink for user 1 (recs[0]) and a durable bypass
 * sink (recs[1]) whose position is lsn, started. */
static void restart_at(fx *f, uint64_t lsn)
{
	pipeline_destroy(f->pl);
	f->pl = NULL;
	fx_pipeline(f, true);
	add_sink(f, &live_ops, "user1", USER1);
	add_sink(f, &durable_ops, "all", NULL);
	recs[1]->position = recs[1]->committed = lsn;
	char err[PIPELINE_ERROR_MAX];
	if (pipeline_start(f->pl, err) != 0)
		fail_msg("pipeline_start: %s", err);
}

/* A transaction that changes policy rows appends them to the store, and its LSN is confirmed
 * only after a sync; a restarted pipeline judges with the state as of its resume point, not a
 * later one: a member removed after it is still a member, one removed at or before it is not. */
static void test_checkpoint(void **state)
{
	fx *f = *state;
	fx_pipeline(f, true);
	add_sink(f, &durable_ops, "all", NULL);
	rec *all = recs[0];
	row3 add[] = {{&roles_rel, CHANGE_INSERT, {ORG1, USER1, "viewer"}},
	              {&rules_rel, CHANGE_INSERT, {RULE1, CONTACT1, "admin"}}};
	uint64_t e1 = txn(f, add, 2);
	assert_int_equal(f->ms.nrows, 2); /* the membership and the rule, nothing else */
	assert_int_equal(f->ms.durable, 0);
	assert_int_equal(rec_flush(all), 0);
	assert_int_equal(confirmed(f), e1);
	assert_int_equal(f->ms.durable, 2); /* synced before e1 was confirmed */
	assert_true(f->ms.synced_lsn >= e1);

	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	txn(f, ev, 1);
	assert_int_equal(f->ms.nrows, 2); /* no policy row: nothing appended */
	row3 del[] = {{&roles_rel, CHANGE_DELETE, {ORG1, USER1, NULL}}, {&rules_rel, CHANGE_DELETE, {RULE1, NULL, NULL}}};
	uint64_t e3 = txn(f, del, 2);
	assert_int_equal(f->ms.nrows, 4);
	assert_true(f->ms.rows[2].deleted && f->ms.rows[3].deleted);
	assert_true(f->ms.rows[2].lsn == e3);
	assert_int_equal(rec_flush(all), 0);
	assert_int_equal(confirmed(f), e3);

	/* restart as of e1 (a sink whose position is e1, the store's position too: as if e3 had
	 * been logged but never confirmed): user 1 is a member again */
	f->ms.pos = e1;
	restart_at(f, e1);
	txn(f, ev, 1);
	assert_int_equal(recs[0]->delivers, 1);

	/* restart as of e3: the removal is part of the state */
	f->ms.pos = e3;
	restart_at(f, e3);
	txn(f, ev, 1);
	assert_int_equal(recs[0]->delivers, 0);
	assert_int_equal(recs[1]->delivers, 1);
}

/* A durable sink that makes a transaction durable inside its commit (and reports progress
 * there) must not get the transaction's LSN confirmed, nor recorded as the LSN the stored state
 * is known at, before the transaction's policy rows are in the store: killed right after that
 * sync, the restarted pipeline would judge with the state from before the transaction. */
static void test_checkpoint_eager_sink(void **state)
{
	fx *f = *state;
	fx_pipeline(f, true);
	add_sink(f, &durable_ops, "all", NULL);
	recs[0]->eager = true;
	row3 add[] = {{&roles_rel, CHANGE_INSERT, {ORG1, USER1, "viewer"}}};
	uint64_t e1 = txn(f, add, 1);
	assert_int_equal(recs[0]->position, e1);
	assert_int_equal(confirmed(f), e1);
	assert_true(f->ms.synced_lsn >= e1);
	assert_int_equal(f->ms.durable, 1); /* the membership was in the store when e1 was synced */

	/* killed now: nothing after that sync reaches the store */
	for (size_t i = f->ms.durable; i < f->ms.nrows; i++)
		for (int k = 0; k < 3; k++)
			free(f->ms.rows[i].v[k]);
	f->ms.nrows = f->ms.durable;
	restart_at(f, e1);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	txn(f, ev, 1);
	assert_int_equal(recs[0]->delivers, 1); /* still a member after the restart */
}

/* Resumed earlier than a durable sink's position (the sink made a transaction durable, the
 * process was killed before the store synced its policy rows): until the replay has brought the
 * stream back to the sink's position, neither the store nor PostgreSQL may be told that the state
 * is known there. Killed again in that window, the next start would load a state without the
 * transaction's rows "as of" the sink's position and never replay it. */
static void test_checkpoint_resume_earlier(void **state)
{
	fx *f = *state;
	fx_pipeline(f, true);
	add_sink(f, &durable_ops, "all", NULL);
	row3 add[] = {{&roles_rel, CHANGE_INSERT, {ORG1, USER1, "viewer"}}};
	uint64_t e1 = txn(f, add, 1);
	assert_int_equal(rec_flush(recs[0]), 0);
	assert_int_equal(f->ms.pos, e1);
	uint64_t replay_from = f->lsn;
	row3 del[] = {{&roles_rel, CHANGE_DELETE, {ORG1, USER1, NULL}}};
	uint64_t e2 = txn(f, del, 1);
	/* the sink made e2 durable; killed before the store synced the removal */
	for (size_t i = f->ms.durable; i < f->ms.nrows; i++)
		for (int k = 0; k < 3; k++)
			free(f->ms.rows[i].v[k]);
	f->ms.nrows = f->ms.durable;
	restart_at(f, e2);
	assert_int_equal(confirmed(f), e1); /* resumed where the state is known */
	assert_int_equal(fsrc->starts, 1);
	assert_int_equal(fsrc->resume_lsn, e1);
	recs[1]->env->progress(recs[1]->env->env_arg); /* the sink reports before the replay came */
	assert_int_equal(confirmed(f), e1);
	assert_true(f->ms.synced_lsn <= e1);
	assert_int_equal(f->ms.pos, e1);

	/* the replay: the removal again, then the sink's position is confirmed */
	f->lsn = replay_from;
	assert_int_equal(txn(f, del, 1), e2);
	recs[1]->env->progress(recs[1]->env->env_arg);
	assert_int_equal(confirmed(f), e2);
	assert_int_equal(f->ms.pos, e2);
	assert_int_equal(f->ms.durable, 2);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	txn(f, ev, 1);
	assert_int_equal(recs[0]->delivers, 0); /* user 1 is no member any more */
}

/* Draining with nothing durable outstanding stops at once with code 0. */
static void test_drain(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	const char *sc[] = {"public"}, *nm[] = {"events"};
	assert_int_equal(pipeline_publication_tables(f->pl, sc, nm, 1), -ENOTSUP); /* reads none */
	char err[PIPELINE_ERROR_MAX];
	assert_int_equal(pipeline_start(f->pl, err), 0);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	uint64_t e1 = txn(f, ev, 1);
	pipeline_drain(f->pl); /* flushes the durable sink, which confirms */
	assert_int_equal(confirmed(f), e1);
	assert_true(fsrc->paused); /* no more reading */
	assert_int_equal(f->stopped, 0); /* stopped_cb runs from the loop */
	assert_int_equal(loop_run(f->l), 0); /* until stopped_cb stops it */
	assert_int_equal(f->stopped, 1); /* code 0 */
	assert_int_equal(fsrc->stops, 1); /* the final feedback, once */
	assert_int_equal(fsrc->confirmed, e1);
}

/* Without a policy nothing is held until the commit: a change reaches the sinks as it arrives
 * (how `walcast tail` without a viewer writes a large transaction while it streams), and a
 * transaction cut off by a lost connection is aborted in every sink and reported once. */
static void test_no_policy_streams(void **state)
{
	fx *f = *state;
	policy_destroy(f->pol);
	f->pol = NULL;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	rec *all = recs[0];
	change_txn t = {.xid = 7, .commit_lsn = 0x2050, .end_lsn = 0x2060};
	change_value tup[3] = {{VALUE_TEXT, 36, "0d000000-0000-4000-8000-000000000001"}, {VALUE_TEXT, 36, ORG1},
	                       {VALUE_TEXT, 3, "cut"}};
	change c = {.action = CHANGE_INSERT, .lsn = 0x2010, .txn = &t, .rel = &events_rel, .new_tuple = tup};
	assert_int_equal(f->ev.sink.begin_cb(f->ev.arg, &t), 0);
	assert_int_equal(f->ev.sink.change_cb(f->ev.arg, &c), 0);
	assert_string_equal(all->log, "B8288 Dcut "); /* delivered before any commit */
	f->ev.abandon_cb(f->ev.arg);
	assert_string_equal(all->log, "B8288 Dcut A ");
	char want[64];
	snprintf(want, sizeof(want), "%d:0 ", PIPELINE_ABANDONED);
	assert_string_equal(f->events, want);
	f->ev.abandon_cb(f->ev.arg); /* between transactions: nothing to abort or report */
	assert_string_equal(f->events, want);
	/* sent again from its beginning, then committed */
	assert_int_equal(f->ev.sink.begin_cb(f->ev.arg, &t), 0);
	assert_int_equal(f->ev.sink.change_cb(f->ev.arg, &c), 0);
	assert_int_equal(f->ev.sink.commit_cb(f->ev.arg, &t), 0);
	assert_string_equal(all->log, "B8288 Dcut A B8288 Dcut C8288 ");
	assert_int_equal(all->committed, 0x2060);
	f->ev.idle_cb(f->ev.arg, 0x3000);
	snprintf(want, sizeof(want), "%d:0 %d:12288 ", PIPELINE_ABANDONED, PIPELINE_IDLE);
	assert_string_equal(f->events, want);
}

static void loop_stop_cb(loop *l, int id, void *arg)
{
	(void)id, (void)arg;
	loop_stop(l);
}

/* Without a policy a transaction larger than max_pending streams through: the pipeline does not
 * pause in its middle (its bytes become durable only at its commit, so the pause could never
 * end), and pauses at its commit until the sink flushed. */
static void test_no_policy_big_txn(void **state)
{
	fx *f = *state;
	policy_destroy(f->pol);
	f->pol = NULL;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	rec *all = recs[0];
	char err[PIPELINE_ERROR_MAX];
	assert_int_equal(pipeline_start(f->pl, err), 0);
	char note[1200];
	memset(note, 'n', sizeof(note) - 1);
	note[sizeof(note) - 1] = '\0';
	change_txn t = {.xid = 9, .commit_lsn = 0x9000, .end_lsn = 0x9010};
	change_value tup[3] = {{VALUE_TEXT, 36, "0d000000-0000-4000-8000-000000000001"}, {VALUE_TEXT, 36, ORG1},
	                       {VALUE_TEXT, (uint32_t)strlen(note), note}};
	assert_int_equal(f->ev.sink.begin_cb(f->ev.arg, &t), 0);
	for (int i = 0; i < 8; i++) {
		change c = {.action = CHANGE_INSERT, .lsn = 0x2000 + (uint64_t)i, .txn = &t, .rel = &events_rel,
		            .new_tuple = tup};
		assert_int_equal(f->ev.sink.change_cb(f->ev.arg, &c), 0);
	}
	assert_true(all->pending > 4096); /* past pipeline.max_pending */
	assert_true(loop_timer_add(f->l, 350, loop_stop_cb, NULL) > 0);
	assert_int_equal(loop_run(f->l), 0); /* a few ticks in the middle of the transaction */
	pipeline_status st;
	pipeline_get_status(f->pl, &st);
	assert_false(st.paused);
	assert_int_equal(f->ev.sink.commit_cb(f->ev.arg, &t), 0);
	pipeline_get_status(f->pl, &st);
	assert_true(st.paused); /* at the commit: until the sink flushed */
	assert_int_equal(rec_flush(all), 0);
	pipeline_get_status(f->pl, &st);
	assert_false(st.paused);
	assert_int_equal(confirmed(f), 0x9010);
}

/* With a policy a cut-off transaction reached no sink: nothing to abort, but it is reported. */
static void test_abandoned_held(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	change_txn t = {.xid = 7, .commit_lsn = 0x2050, .end_lsn = 0x2060};
	change_value tup[3] = {{VALUE_TEXT, 36, "0d000000-0000-4000-8000-000000000001"}, {VALUE_TEXT, 36, ORG1},
	                       {VALUE_TEXT, 3, "cut"}};
	change c = {.action = CHANGE_INSERT, .lsn = 0x2010, .txn = &t, .rel = &events_rel, .new_tuple = tup};
	assert_int_equal(f->ev.sink.begin_cb(f->ev.arg, &t), 0);
	assert_int_equal(f->ev.sink.change_cb(f->ev.arg, &c), 0);
	f->ev.abandon_cb(f->ev.arg);
	assert_string_equal(recs[0]->log, "");
	char want[32];
	snprintf(want, sizeof(want), "%d:0 ", PIPELINE_ABANDONED);
	assert_string_equal(f->events, want);
}

/* pipeline_finish stops once the durable sinks hold durably what they took, even when they
 * stopped taking what followed (a limit): it confirms their position, never more. */
static void test_finish(void **state)
{
	fx *f = *state;
	fx_pipeline(f, false);
	add_sink(f, &durable_ops, "all", NULL);
	rec *all = recs[0];
	char err[PIPELINE_ERROR_MAX];
	assert_int_equal(pipeline_start(f->pl, err), 0);
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}}};
	uint64_t e1 = txn(f, ev, 1);
	all->ended = true; /* the limit: the next transaction is not taken */
	txn(f, ev, 1);
	all->pending = 0;
	pipeline_finish(f->pl);
	assert_int_equal(loop_run(f->l), 0);
	assert_int_equal(f->stopped, 1); /* code 0 */
	assert_int_equal(confirmed(f), e1);
}

/* Every sink's series in /metrics, labelled by sink: a live sink's drops and connections
 * through sink_env.live_metrics, a durable sink's pending bytes. */
static void test_sink_metrics(void **state)
{
	fx *f = *state;
	assert_non_null(f->metrics = metrics_registry_create());
	fx_pipeline(f, false);
	add_sink(f, &counted_ops, "feed", NULL);
	add_sink(f, &durable_ops, "slow", NULL);
	recs[1]->stall = true;
	row3 ev[] = {{&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000001", ORG1, "x"}},
	             {&events_rel, CHANGE_INSERT, {"0d000000-0000-4000-8000-000000000002", ORG1, "y"}}};
	txn(f, ev, 2);
	buf text;
	buf_init(&text);
	assert_int_equal(metrics_render(f->metrics, &text), 0);
	assert_non_null(strstr(text.data, "\nwalcast_sink_drops_total{sink=\"feed\"} 2\n"));
	assert_non_null(strstr(text.data, "\nwalcast_connections{sink=\"feed\"} 3\n"));
	assert_null(strstr(text.data, "walcast_sink_drops_total{sink=\"slow\"}")); /* it did not ask */
	char want[128];
	snprintf(want, sizeof(want), "\nwalcast_sink_pending_bytes{sink=\"slow\"} %zu\n", recs[1]->pending);
	assert_true(recs[1]->pending > 0);
	assert_non_null(strstr(text.data, want));
	buf_fini(&text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_routing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_min_of_durables, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_live_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_eager_sink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_resume_earlier, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_policy_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_policy_big_txn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abandoned_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sink_metrics, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
