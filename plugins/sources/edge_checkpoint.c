/*
 * edge_checkpoint — the shared checkpoint read once, read-only (see edge_checkpoint.h).
 *
 * The rows are kept as the two SQL results (base, then log up to S, in order) until load has
 * replayed them into the pipeline's state, and released then: an edge loads once (at its start),
 * so they would only take memory for the rest of its life.
 */
#include "edge_checkpoint.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lsn.h"

typedef struct edge_ckpt {
	checkpoint_store st;
	PGresult *base, *log; /* (tbl, deleted, v0, v1, v2) rows */
	uint64_t position;    /* S: where the edge starts (the "pipeline" position it reports) */
	uint64_t known;       /* the newest LSN the stored state is known at */
	bool loaded;          /* base and log replayed and released */
} edge_ckpt;

static int ro_load(void *impl, uint64_t at, checkpoint_row_cb row_cb, void *arg, uint64_t *state_lsn,
                   char err[CHECKPOINT_ERROR_MAX])
{
	edge_ckpt *c = impl;
	if (c->loaded) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "the edge's checkpoint rows were loaded once and released");
		return -ESTALE;
	}
	if (at != c->position) {
		char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
		snprintf(err, CHECKPOINT_ERROR_MAX, "the edge read the shared checkpoint as of %s, not %s",
		         lsn_format(c->position, a), lsn_format(at, b));
		return -ESTALE;
	}
	PGresult *parts[] = {c->base, c->log};
	for (size_t p = 0; p < 2; p++) {
		for (int i = 0; parts[p] != NULL && i < PQntuples(parts[p]); i++) {
			const char *v[3];
			for (int k = 0; k < 3; k++)
				v[k] = PQgetisnull(parts[p], i, 2 + k) ? NULL : PQgetvalue(parts[p], i, 2 + k);
			checkpoint_row row = {.table = atoi(PQgetvalue(parts[p], i, 0)), .values = v,
			                      .deleted = PQgetvalue(parts[p], i, 1)[0] == 't'};
			int rc = row_cb(arg, &row);
			if (rc != 0) {
				snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint: loading a stored row failed");
				return rc < 0 ? rc : -EIO;
			}
		}
	}
	*state_lsn = at < c->known ? at : c->known;
	PQclear(c->base);
	PQclear(c->log);
	c->base = c->log = NULL;
	c->loaded = true;
	return 0;
}

/* An edge writes nothing: its progress is in memory only. */
static int ro_append(void *impl, uint64_t lsn, const checkpoint_row *rows, size_t nrows, char err[CHECKPOINT_ERROR_MAX])
{
	(void)impl, (void)lsn, (void)rows, (void)nrows, (void)err;
	return 0;
}

static int ro_sync(void *impl, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX])
{
	(void)impl, (void)lsn, (void)err;
	return 0;
}

static int ro_compact(void *impl, uint64_t upto, int (*dump_cb)(void *arg, checkpoint_row_cb row_cb, void *row_arg),
                      void *arg, char err[CHECKPOINT_ERROR_MAX])
{
	(void)impl, (void)upto, (void)dump_cb, (void)arg, (void)err;
	return 0;
}

static uint64_t ro_log_bytes(void *impl)
{
	(void)impl;
	return 0;
}

static int ro_position_get(void *impl, const char *name, uint64_t *lsn)
{
	const edge_ckpt *c = impl;
	*lsn = strcmp(name, "pipeline") == 0 ? c->position : 0;
	return 0;
}

static int ro_position_put(void *impl, const char *name, uint64_t lsn)
{
	(void)impl, (void)name, (void)lsn;
	return 0;
}

static void ro_destroy(void *impl)
{
	edge_ckpt *c = impl;
	if (c == NULL)
		return;
	PQclear(c->base);
	PQclear(c->log);
	free(c);
}

static const checkpoint_store_ops ro_ops = {
	.load = ro_load,
	.append = ro_append,
	.sync = ro_sync,
	.compact = ro_compact,
	.log_bytes = ro_log_bytes,
	.position_get = ro_position_get,
	.position_put = ro_position_put,
	.destroy = ro_destroy,
};

/* Runs one statement with the slot as $1 (and $2 when p2 is set). NULL with err on failure. */
static PGresult *query(PGconn *conn, const char *sql, const char *slot, const char *p2, const char *what,
                       char err[CHECKPOINT_ERROR_MAX])
{
	const char *params[] = {slot, p2};
	PGresult *r = PQexecParams(conn, sql, p2 != NULL ? 2 : 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		return r;
	snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint slot=%s: cannot read %s: %s", slot, what,
	         PQerrorMessage(conn));
	PQclear(r);
	return NULL;
}

/* Parses column col of row 0 of r as an LSN (NULL, or no row: 0). */
static int lsn_at(const PGresult *r, int col, uint64_t *out)
{
	*out = 0;
	if (PQntuples(r) == 0 || PQgetisnull(r, 0, col))
		return 0;
	const char *v = PQgetvalue(r, 0, col);
	return lsn_parse(v, strlen(v), out) < 0 ? -EIO : 0;
}

/* -ENOENT's message. */
static void no_state(char err[CHECKPOINT_ERROR_MAX], const char *sch, const char *slot)
{
	snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint (%s.checkpoint_*) holds no state for slot '%s' yet: "
	         "start the active instance (pipeline.checkpoint_store = postgres) first", sch, slot);
}

/* The reads, inside the caller's transaction: P, what the state is known at, base and log. */
static int state_read(PGconn *conn, const char *sch, const char *slot, uint64_t from, uint64_t *confirmed,
                      edge_ckpt *c, char err[CHECKPOINT_ERROR_MAX])
{
	char sql[512], p[LSN_TEXT_MAX];
	uint64_t base_lsn = 0, known_at = 0, log_max = 0;
	/* no tables yet: the active instance never opened the store */
	snprintf(sql, sizeof(sql), "SELECT to_regclass('%s.checkpoint_positions') IS NOT NULL, $1::text", sch);
	PGresult *r = query(conn, sql, slot, NULL, "the catalog", err);
	if (r == NULL)
		return -EIO;
	bool tables = PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!tables) {
		no_state(err, sch, slot);
		return -ENOENT;
	}
	snprintf(sql, sizeof(sql),
	         "SELECT s.base_lsn::text, s.known_at::text, (SELECT max(lsn)::text FROM %s.checkpoint_log l WHERE "
	         "l.slot = s.slot), (SELECT lsn::text FROM %s.checkpoint_positions p WHERE p.slot = s.slot AND "
	         "p.name = 'pipeline') FROM %s.checkpoint_slots s WHERE s.slot = $1", sch, sch, sch);
	r = query(conn, sql, slot, NULL, "the slot's row", err);
	if (r == NULL)
		return -EIO;
	int rc = 0;
	if (PQntuples(r) == 0) {
		rc = -ENOENT;
	} else if (lsn_at(r, 0, &base_lsn) < 0 || lsn_at(r, 1, &known_at) < 0 || lsn_at(r, 2, &log_max) < 0 ||
	           lsn_at(r, 3, &c->position) < 0) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint slot=%s: unreadable LSNs", slot);
		rc = -EIO;
	} else if (c->position == 0 || (PQgetisnull(r, 0, 0) && log_max == 0)) {
		rc = -ENOENT;
	}
	bool has_base = rc == 0 && !PQgetisnull(r, 0, 0);
	PQclear(r);
	if (rc == -ENOENT)
		no_state(err, sch, slot);
	if (rc < 0)
		return rc;
	c->known = known_at;
	if (base_lsn > c->known)
		c->known = base_lsn;
	if (log_max > c->known)
		c->known = log_max;
	if (has_base && base_lsn > c->position) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint slot=%s: its base is past its position", slot);
		return -EIO;
	}
	/* S: from, when it lies before P, but never before the base (the state is known from there on) */
	*confirmed = c->position;
	if (from != 0 && from < c->position)
		c->position = has_base && base_lsn > from ? base_lsn : from;
	lsn_format(c->position, p);
	snprintf(sql, sizeof(sql), "SELECT tbl, false, v0, v1, v2 FROM %s.checkpoint_base WHERE slot = $1 ORDER BY n",
	         sch);
	if (has_base && (c->base = query(conn, sql, slot, NULL, "the base", err)) == NULL)
		return -EIO;
	snprintf(sql, sizeof(sql),
	         "SELECT tbl, deleted, v0, v1, v2 FROM %s.checkpoint_log WHERE slot = $1 AND lsn <= $2::pg_lsn "
	         "AND lsn > coalesce((SELECT base_lsn FROM %s.checkpoint_slots WHERE slot = $1), '0/0') ORDER BY lsn, n",
	         sch, sch);
	if ((c->log = query(conn, sql, slot, p, "the log", err)) == NULL)
		return -EIO;
	return 0;
}

int edge_checkpoint_read(const char *conninfo, const char *schema, const char *slot_name, uint64_t from,
                         checkpoint_store **out, uint64_t *position, uint64_t *confirmed,
                         char err[CHECKPOINT_ERROR_MAX])
{
	/* never a replication connection, even when conninfo says so (entries after dbname win) */
	static const char *const keys[] = {"connect_timeout", "fallback_application_name", "options", "dbname",
	                                   "replication", NULL};
	const char *vals[] = {"10", "walcast-edge", "-c statement_timeout=30000", conninfo != NULL ? conninfo : "",
	                      "false", NULL};
	edge_ckpt *c = calloc(1, sizeof(*c));
	PGconn *conn = c != NULL ? PQconnectdbParams(keys, vals, 1) : NULL;
	char *sch = NULL;
	int rc = -EIO;
	if (conn == NULL) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "out of memory");
		rc = -ENOMEM;
		goto done;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint: cannot connect: %s", PQerrorMessage(conn));
		goto done;
	}
	if ((sch = PQescapeIdentifier(conn, schema, strlen(schema))) == NULL) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint: bad schema name: %s", PQerrorMessage(conn));
		goto done;
	}
	PGresult *r = PQexec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
	bool begun = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!begun) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "the shared checkpoint: BEGIN: %s", PQerrorMessage(conn));
		goto done;
	}
	rc = state_read(conn, sch, slot_name, from, confirmed, c, err);
	PQclear(PQexec(conn, rc == 0 ? "COMMIT" : "ROLLBACK"));
done:
	if (sch != NULL)
		PQfreemem(sch);
	PQfinish(conn);
	if (rc < 0) {
		ro_destroy(c);
		return rc;
	}
	c->st = (checkpoint_store){.ops = &ro_ops, .impl = c};
	*out = &c->st;
	*position = c->position;
	return 0;
}
