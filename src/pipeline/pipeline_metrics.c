/*
 * pipeline_metrics — the daemon-level metric families (pipeline_metrics.h has the contract).
 * Status-derived values are metrics callbacks that read the status callback at render time;
 * per-table change counters are found through a small open-addressing table keyed by
 * "schema.table" (one entry holds the four action counters of a table).
 */
#include "pipeline_metrics.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"

typedef struct table_entry {
	char *name;                        /* "schema.table"; NULL: empty slot */
	uint64_t hash;
	metrics_counter *by_action[4];     /* insert, update, delete, truncate; NULL until seen */
} table_entry;

struct pipeline_metrics {
	metrics_registry *r;
	pipeline_metrics_status_cb status;
	void *arg;
	metrics_family *fam[14];
	size_t nfam;
	metrics_family *changes, *sink_position, *sink_deliveries, *sink_drops, *connections, *sink_pending;
	metrics_counter *decode_errors, *policy_errors;
	table_entry *tables;
	size_t cap, used;
	bool oom_logged;
};

/* ---- status-derived values -------------------------------------------------------------- */

static void read_status(pipeline_metrics *pm, pipeline_status *st)
{
	memset(st, 0, sizeof(*st));
	pm->status(pm->arg, st);
}

static int lag_bytes_cb(void *arg, double *value)
{
	pipeline_status st;
	read_status(arg, &st);
	if (st.server_wal_end == 0)
		return -1; /* unknown before the server reported its position */
	*value = st.server_wal_end > st.confirmed_lsn ? (double)(st.server_wal_end - st.confirmed_lsn) : 0;
	return 0;
}

static int lag_seconds_cb(void *arg, double *value)
{
	pipeline_status st;
	read_status(arg, &st);
	if (st.last_commit_time == 0)
		return -1; /* no change processed yet */
	struct timeval tv;
	gettimeofday(&tv, NULL);
	double now = (double)tv.tv_sec + tv.tv_usec / 1e6;
	double lag = now - (double)st.last_commit_time / 1e6;
	*value = lag > 0 ? lag : 0;
	return 0;
}

static int streaming_cb(void *arg, double *value)
{
	pipeline_status st;
	read_status(arg, &st);
	*value = st.streaming ? 1 : 0;
	return 0;
}

static int paused_cb(void *arg, double *value)
{
	pipeline_status st;
	read_status(arg, &st);
	*value = st.paused ? 1 : 0;
	return 0;
}

static int confirmed_cb(void *arg, double *value)
{
	pipeline_status st;
	read_status(arg, &st);
	if (st.confirmed_lsn == 0)
		return -1;
	*value = (double)st.confirmed_lsn;
	return 0;
}

static int transactions_cb(void *arg, double *value)
{
	pipeline_status st;
	read_status(arg, &st);
	*value = (double)st.transactions;
	return 0;
}

/* ---- registration ----------------------------------------------------------------------- */

static int family(pipeline_metrics *pm, metrics_kind kind, const char *name, const char *help,
                  const char *const *labels, metrics_family **out, char err[METRICS_ERROR_MAX])
{
	metrics_desc d = {.kind = kind, .name = name, .help = help, .labels = labels};
	metrics_family *f;
	int rc = metrics_family_register(pm->r, &d, &f, err);
	if (rc < 0)
		return rc;
	pm->fam[pm->nfam++] = f;
	if (out)
		*out = f;
	return 0;
}

static int gauge_cb(pipeline_metrics *pm, metrics_kind kind, const char *name, const char *help,
                    metrics_read_cb cb, char err[METRICS_ERROR_MAX])
{
	metrics_family *f;
	int rc = family(pm, kind, name, help, NULL, &f, err);
	if (rc == 0)
		rc = metrics_callback_register(f, NULL, cb, pm, err);
	return rc;
}

int pipeline_metrics_create(metrics_registry *r, pipeline_metrics_status_cb status, void *arg,
                            pipeline_metrics **out, char err[METRICS_ERROR_MAX])
{
	static const char *const table_action[] = {"table", "action", NULL};
	static const char *const sink[] = {"sink", NULL};
	int rc;
	metrics_family *f;
	pipeline_metrics *pm = calloc(1, sizeof(*pm));
	if (pm == NULL)
		return -ENOMEM;
	pm->r = r;
	pm->status = status;
	pm->arg = arg;
	if ((rc = gauge_cb(pm, METRICS_GAUGE, "walcast_replication_lag_bytes",
	                   "The server's WAL position minus the flush position walcast has confirmed, in bytes.",
	                   lag_bytes_cb, err)) < 0 ||
	    (rc = gauge_cb(pm, METRICS_GAUGE, "walcast_replication_lag_seconds",
	                   "Now minus the commit time of the last transaction processed, in seconds.",
	                   lag_seconds_cb, err)) < 0 ||
	    (rc = gauge_cb(pm, METRICS_GAUGE, "walcast_streaming",
	                   "1 while connected and past the initial state load, else 0.", streaming_cb, err)) < 0 ||
	    (rc = gauge_cb(pm, METRICS_GAUGE, "walcast_paused",
	                   "1 while the stream is paused by durable sinks' pending bytes, else 0.",
	                   paused_cb, err)) < 0 ||
	    (rc = gauge_cb(pm, METRICS_GAUGE, "walcast_confirmed_lsn",
	                   "The flush LSN last confirmed to PostgreSQL, as a number.", confirmed_cb, err)) < 0 ||
	    (rc = gauge_cb(pm, METRICS_COUNTER, "walcast_transactions_total",
	                   "Transactions offered to the sinks.", transactions_cb, err)) < 0 ||
	    (rc = family(pm, METRICS_COUNTER, "walcast_changes_total",
	                 "Changes processed, by table (schema.name) and action.", table_action,
	                 &pm->changes, err)) < 0 ||
	    (rc = family(pm, METRICS_COUNTER, "walcast_decode_errors_total",
	                 "WAL messages the decoder could not read.", NULL, &f, err)) < 0 ||
	    (rc = metrics_counter_register(f, NULL, &pm->decode_errors, err)) < 0 ||
	    (rc = family(pm, METRICS_COUNTER, "walcast_policy_errors_total",
	                 "Policy evaluation errors.", NULL, &f, err)) < 0 ||
	    (rc = metrics_counter_register(f, NULL, &pm->policy_errors, err)) < 0 ||
	    (rc = family(pm, METRICS_GAUGE_I, "walcast_sink_position_lsn",
	                 "The LSN each sink has taken, as a number.", sink, &pm->sink_position, err)) < 0 ||
	    (rc = family(pm, METRICS_COUNTER, "walcast_sink_deliveries_total",
	                 "Deliveries, by sink.", sink, &pm->sink_deliveries, err)) < 0 ||
	    (rc = family(pm, METRICS_COUNTER, "walcast_sink_drops_total",
	                 "Deliveries a sink dropped (a live sink's slow consumer), by sink.", sink,
	                 &pm->sink_drops, err)) < 0 ||
	    (rc = family(pm, METRICS_GAUGE_I, "walcast_connections",
	                 "Open client connections, by sink.", sink, &pm->connections, err)) < 0 ||
	    (rc = family(pm, METRICS_GAUGE_I, "walcast_sink_pending_bytes",
	                 "Bytes a durable sink holds that are not durable yet, by sink.", sink,
	                 &pm->sink_pending, err)) < 0)
		goto fail;
	*out = pm;
	return 0;
fail:
	pipeline_metrics_destroy(pm);
	return rc;
}

void pipeline_metrics_destroy(pipeline_metrics *pm)
{
	if (pm == NULL)
		return;
	for (size_t i = 0; i < pm->nfam; i++)
		metrics_family_remove(pm->r, pm->fam[i]);
	for (size_t i = 0; i < pm->cap; i++)
		free(pm->tables[i].name);
	free(pm->tables);
	free(pm);
}

/* ---- changes by table ------------------------------------------------------------------- */

static uint64_t hash_name(const char *schema, const char *table)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (const char *p = schema; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	h = (h ^ '.') * 1099511628211ULL;
	for (const char *p = table; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h;
}

static bool name_equal(const char *name, const char *schema, const char *table)
{
	size_t n = strlen(schema);
	return strncmp(name, schema, n) == 0 && name[n] == '.' && strcmp(name + n + 1, table) == 0;
}

static int tables_grow(pipeline_metrics *pm)
{
	size_t cap = pm->cap ? pm->cap * 2 : 64;
	table_entry *t = calloc(cap, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < pm->cap; i++) {
		if (pm->tables[i].name == NULL)
			continue;
		size_t j = pm->tables[i].hash & (cap - 1);
		while (t[j].name)
			j = (j + 1) & (cap - 1);
		t[j] = pm->tables[i];
	}
	free(pm->tables);
	pm->tables = t;
	pm->cap = cap;
	return 0;
}

static void oom(pipeline_metrics *pm, const char *what)
{
	if (!pm->oom_logged)
		log_error("metrics.oom", "metric=walcast_changes_total: cannot register %s; changes go uncounted", what);
	pm->oom_logged = true;
}

void pipeline_metrics_change(pipeline_metrics *pm, const char *schema, const char *table,
                             change_action action)
{
	if (pm == NULL || action < CHANGE_INSERT || action > CHANGE_TRUNCATE || !schema || !table)
		return;
	uint64_t h = hash_name(schema, table);
	table_entry *e = NULL;
	if (pm->cap) {
		size_t i = h & (pm->cap - 1);
		while (pm->tables[i].name) {
			if (pm->tables[i].hash == h && name_equal(pm->tables[i].name, schema, table)) {
				e = &pm->tables[i];
				break;
			}
			i = (i + 1) & (pm->cap - 1);
		}
	}
	if (e == NULL) {
		if ((pm->used + 1) * 2 > pm->cap && tables_grow(pm) < 0) {
			oom(pm, "a table");
			return;
		}
		size_t i = h & (pm->cap - 1);
		while (pm->tables[i].name)
			i = (i + 1) & (pm->cap - 1);
		e = &pm->tables[i];
		size_t n = strlen(schema) + 1 + strlen(table) + 1;
		if ((e->name = malloc(n)) == NULL) {
			oom(pm, "a table");
			return;
		}
		snprintf(e->name, n, "%s.%s", schema, table);
		e->hash = h;
		pm->used++;
	}
	metrics_counter **c = &e->by_action[action - CHANGE_INSERT];
	if (*c == NULL) {
		const char *values[] = {e->name, change_action_name(action), NULL};
		char err[METRICS_ERROR_MAX];
		if (metrics_counter_register(pm->changes, values, c, err) < 0) {
			*c = NULL;
			oom(pm, "a series");
			return;
		}
	}
	metrics_counter_inc(*c);
}

void pipeline_metrics_decode_error(pipeline_metrics *pm)
{
	if (pm)
		metrics_counter_inc(pm->decode_errors);
}

void pipeline_metrics_policy_error(pipeline_metrics *pm)
{
	if (pm)
		metrics_counter_inc(pm->policy_errors);
}

/* ---- sinks ------------------------------------------------------------------------------ */

/* Removes the child of f with values if there is one (-ENOENT otherwise: nothing to do). */
static void child_drop(metrics_family *f, const char *const *values)
{
	int rc = metrics_child_remove(f, values);
	(void)rc;
}

int pipeline_metrics_sink_add(pipeline_metrics *pm, const char *name, unsigned what,
                              pipeline_metrics_sink *out, char err[METRICS_ERROR_MAX])
{
	const char *values[] = {name, NULL};
	pipeline_metrics_sink s = {0};
	int rc = 0;
	if (((what & PIPELINE_METRICS_POSITION) &&
	     (rc = metrics_gauge_i_register(pm->sink_position, values, &s.position, err)) < 0) ||
	    ((what & PIPELINE_METRICS_DELIVERIES) &&
	     (rc = metrics_counter_register(pm->sink_deliveries, values, &s.deliveries, err)) < 0) ||
	    ((what & PIPELINE_METRICS_DROPS) &&
	     (rc = metrics_counter_register(pm->sink_drops, values, &s.drops, err)) < 0) ||
	    ((what & PIPELINE_METRICS_CONNECTIONS) &&
	     (rc = metrics_gauge_i_register(pm->connections, values, &s.connections, err)) < 0) ||
	    ((what & PIPELINE_METRICS_PENDING) &&
	     (rc = metrics_gauge_i_register(pm->sink_pending, values, &s.pending, err)) < 0)) {
		/* Undo only what this call registered (a duplicate name belongs to the other sink). */
		if (s.position)
			child_drop(pm->sink_position, values);
		if (s.deliveries)
			child_drop(pm->sink_deliveries, values);
		if (s.drops)
			child_drop(pm->sink_drops, values);
		if (s.connections)
			child_drop(pm->connections, values);
		return rc;
	}
	*out = s;
	return 0;
}

int pipeline_metrics_sink_live(pipeline_metrics *pm, const char *name, metrics_counter **drops,
                               metrics_read_cb connections, void *arg, char err[METRICS_ERROR_MAX])
{
	const char *values[] = {name, NULL};
	int rc;
	if (drops != NULL && (rc = metrics_counter_register(pm->sink_drops, values, drops, err)) < 0) {
		*drops = NULL;
		return rc;
	}
	if (connections != NULL && (rc = metrics_callback_register(pm->connections, values, connections, arg, err)) < 0) {
		if (drops != NULL) {
			child_drop(pm->sink_drops, values);
			*drops = NULL;
		}
		return rc;
	}
	return 0;
}

void pipeline_metrics_sink_remove(pipeline_metrics *pm, const char *name)
{
	const char *values[] = {name, NULL};
	metrics_family *fams[] = {pm->sink_position, pm->sink_deliveries, pm->sink_drops, pm->connections,
	                          pm->sink_pending};
	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++)
		child_drop(fams[i], values); /* what the sink did not register is not there */
}
