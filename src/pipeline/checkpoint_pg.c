/*
 * checkpoint_pg — the policy-state checkpoint in PostgreSQL tables (checkpoint_pg.h).
 *
 * In memory, like the dir store: the LSNs of the logged transactions (synced ones, then the
 * buffered ones), the base LSN, the known-at LSN and the named positions; the buffered records
 * are kept as the SQL VALUES tuples sync will insert. A replay below a logged LSN drops buffered
 * tuples at once and remembers the LSN from which the table's records go at the next sync. A
 * sync's DELETE starts at the first LSN it rewrites, so a sync whose COMMIT was lost with the
 * connection (it may or may not have happened) can be sent again as it is.
 *
 * SQL values are literals ('...' with quotes doubled; standard_conforming_strings is set on the
 * session), so a sync is one simple-query message: one round trip, one implicit transaction.
 */
#include "checkpoint_pg.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "lsn.h"

#define BASE_CHUNK (256 * 1024) /* bytes of VALUES per INSERT of a base */
#define RECORD_BYTES 21         /* log_bytes: what a record costs in the dir store's format */
#define ROW_BYTES 14
/* TCP keepalives and user timeout of the store's session, on both ends (see pg_connect_lock) */
#define KEEPALIVE_IDLE "2"
#define KEEPALIVE_INTERVAL "1"
#define KEEPALIVE_COUNT "3"
#define USER_TIMEOUT_MS "5000"

typedef struct pg_entry {
	uint64_t lsn;
	uint64_t bytes;  /* log_bytes' share */
	size_t offset;   /* buffered: where its tuples start in pending */
} pg_entry;

typedef struct pg_store {
	checkpoint_store st;
	char *conninfo;
	char schema[64];
	char *slot;
	char *slot_lit;        /* the slot as an SQL literal */
	PGconn *conn;
	bool lost;             /* another instance took the store: every op fails */
	int64_t generation;    /* checkpoint_slots.generation as this instance set it */
	pg_entry *entries;     /* every logged transaction: synced, then buffered */
	size_t nentries, entries_cap, nsynced;
	buf pending;           /* the buffered records' VALUES tuples, comma separated */
	uint64_t rewind_from;  /* 0, or: the table's records from this LSN on go at the next sync */
	uint64_t bytes;        /* log_bytes */
	bool has_base;
	uint64_t base_lsn;
	uint64_t known_at;     /* newest LSN the stored state is known at (memory) */
	uint64_t known_stored; /* ... as the table has it */
	checkpoint_positions pos;
} pg_store;

/* ---- SQL text ------------------------------------------------------------------------------- */

/* Appends v as a literal ('' doubled), or NULL. */
static int sql_literal(buf *b, const char *v)
{
	if (v == NULL)
		return buf_puts(b, "NULL");
	int rc = buf_putc(b, '\'');
	for (const char *p = v; *p != '\0' && rc == 0; p++)
		rc = *p == '\'' ? buf_puts(b, "''") : buf_putc(b, *p);
	return rc == 0 ? buf_putc(b, '\'') : rc;
}

static int sql_lsn(buf *b, uint64_t lsn)
{
	char t[LSN_TEXT_MAX];
	return buf_printf(b, "'%s'::pg_lsn", lsn_format(lsn, t));
}

/* Appends one row as a tuple (slot, lsn or n, n, tbl, deleted, v0, v1, v2) of the log (lsn
 * set) or (slot, n, tbl, v0, v1, v2) of the base. */
static int sql_row(pg_store *s, buf *b, uint64_t lsn, uint64_t n, const checkpoint_row *row, bool log)
{
	int rc = buf_printf(b, "%s(%s,", b->len > 0 ? "," : "", s->slot_lit);
	if (rc == 0 && log)
		rc = sql_lsn(b, lsn);
	if (rc == 0)
		rc = buf_printf(b, "%s%" PRIu64 ",%d", log ? "," : "", n, row->table);
	if (rc == 0 && log)
		rc = buf_puts(b, row->deleted ? ",true" : ",false");
	for (int k = 0; k < 3 && rc == 0; k++) {
		rc = buf_putc(b, ',');
		if (rc == 0)
			rc = sql_literal(b, row->values != NULL ? row->values[k] : NULL);
	}
	return rc == 0 ? buf_putc(b, ')') : rc;
}

static uint64_t row_bytes(const checkpoint_row *row)
{
	uint64_t n = ROW_BYTES;
	for (int k = 0; k < 3; k++)
		if (row->values != NULL && row->values[k] != NULL)
			n += strlen(row->values[k]) + 1;
	return n;
}

/* ---- the connection ------------------------------------------------------------------------- */

static void err_set(pg_store *s, char err[CHECKPOINT_ERROR_MAX], const char *what, const char *why)
{
	size_t n = strlen(why);
	while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
		n--;
	snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint store %s.checkpoint_* slot=%s: %s: %.*s", s->schema, s->slot,
	         what, (int)n, why);
}

/* Runs sql (one or several statements). 0 and *res (caller clears; NULL for want ==
 * PGRES_COMMAND_OK) or -EIO with err: a lost connection says so (the next op reconnects). */
static int pg_run(pg_store *s, const char *sql, ExecStatusType want, PGresult **res, const char *what,
                  char err[CHECKPOINT_ERROR_MAX])
{
	PGresult *r = PQexec(s->conn, sql);
	if (r != NULL && PQresultStatus(r) == want) {
		if (res != NULL)
			*res = r;
		else
			PQclear(r);
		return 0;
	}
	if (PQstatus(s->conn) == CONNECTION_BAD) {
		char why[CHECKPOINT_ERROR_MAX];
		snprintf(why, sizeof(why), "connection to PostgreSQL lost (%s); the store reconnects before its next "
		         "operation", PQerrorMessage(s->conn));
		err_set(s, err, what, why);
	} else {
		err_set(s, err, what, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(s->conn));
		if (PQtransactionStatus(s->conn) == PQTRANS_INERROR)
			PQclear(PQexec(s->conn, "ROLLBACK"));
	}
	PQclear(r);
	return -EIO;
}

/* Connects and takes the lock: 0, -EBUSY (held by another session: err names its pid), -EIO. */
static int pg_connect_lock(pg_store *s, char err[CHECKPOINT_ERROR_MAX])
{
	/* never a replication connection, even when conninfo says so (entries after dbname win) */
	/* the client's side of the keepalives: an instance whose host is cut off finds its store
	 * gone (a sync or a check fails) as soon as the server gives its session up */
	static const char *const keys[] = {"connect_timeout", "fallback_application_name", "keepalives",
	                                   "keepalives_idle", "keepalives_interval", "keepalives_count",
	                                   "tcp_user_timeout", "dbname", "replication", NULL};
	const char *vals[] = {"10", "walcast-checkpoint", "1", KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT,
	                      USER_TIMEOUT_MS, s->conninfo, "false", NULL};
	PQfinish(s->conn);
	s->conn = PQconnectdbParams(keys, vals, 1);
	if (s->conn == NULL) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint store slot=%s: out of memory", s->slot);
		return -ENOMEM;
	}
	PQsetNoticeProcessor(s->conn, log_pg_notice, "checkpoint");
	if (PQstatus(s->conn) != CONNECTION_OK) {
		err_set(s, err, "cannot connect", PQerrorMessage(s->conn));
		return -EIO;
	}
	buf q;
	PGresult *r = NULL;
	buf_init(&q);
	/* the server's side: it drops the lock of an instance whose host was cut off within
	 * about 5 s (idle 2 s, then 3 probes 1 s apart; unacknowledged data: 5 s) */
	int rc = buf_printf(&q, "SET statement_timeout = %d; SET lock_timeout = %d; SET synchronous_commit = on; "
	                    "SET standard_conforming_strings = on; SET client_encoding = 'UTF8'; "
	                    "SET client_min_messages = warning; "
	                    "SET tcp_keepalives_idle = " KEEPALIVE_IDLE "; SET tcp_keepalives_interval = "
	                    KEEPALIVE_INTERVAL "; SET tcp_keepalives_count = " KEEPALIVE_COUNT "; "
	                    "SET tcp_user_timeout = " USER_TIMEOUT_MS "; "
	                    "SELECT pg_try_advisory_lock(k), (SELECT string_agg(pid::text, ',') FROM pg_locks "
	                    "WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND "
	                    "((classid::bigint << 32) | objid::bigint) = k) FROM hashtextextended(",
	                    CHECKPOINT_PG_TIMEOUT_MS, CHECKPOINT_PG_TIMEOUT_MS / 3);
	if (rc == 0) {
		char key[200];
		snprintf(key, sizeof(key), "%s.%s", s->schema, s->slot);
		rc = sql_literal(&q, key);
	}
	if (rc == 0)
		rc = buf_puts(&q, ", 0) AS k");
	if (rc < 0) {
		buf_fini(&q);
		return rc;
	}
	rc = pg_run(s, q.data, PGRES_TUPLES_OK, &r, "cannot take the lock", err);
	buf_fini(&q);
	if (rc < 0)
		return rc;
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		char why[128];
		snprintf(why, sizeof(why), "the advisory lock is held by backend pid %s",
		         PQgetisnull(r, 0, 1) ? "?" : PQgetvalue(r, 0, 1));
		err_set(s, err, "in use by another instance", why);
		rc = -EBUSY;
	}
	PQclear(r);
	return rc;
}

/* Before every op that reads or writes: a lost connection is made again and the lock taken
 * again; if another instance held the store meanwhile, the store is lost for good. */
static int pg_ready(pg_store *s, char err[CHECKPOINT_ERROR_MAX])
{
	if (s->lost) {
		err_set(s, err, "refused", "lost the checkpoint store to another instance");
		return -ENOLCK;
	}
	if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK)
		return 0;
	int rc = pg_connect_lock(s, err);
	if (rc == -EBUSY) {
		s->lost = true;
		log_error("checkpoint.lost", "slot=%s schema=%s: lost the checkpoint store to another instance (%s)",
		          s->slot, s->schema, err);
		err_set(s, err, "reconnected", "lost the checkpoint store to another instance");
		return -ENOLCK;
	}
	if (rc < 0)
		return rc;
	char sql[256];
	PGresult *r = NULL;
	snprintf(sql, sizeof(sql), "SELECT generation FROM %s.checkpoint_slots WHERE slot = %s", s->schema, s->slot_lit);
	if ((rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot read the slot's row", err)) < 0)
		return rc;
	bool same = PQntuples(r) == 1 && strtoll(PQgetvalue(r, 0, 0), NULL, 10) == s->generation;
	PQclear(r);
	if (!same) {
		s->lost = true;
		log_error("checkpoint.lost", "slot=%s schema=%s: lost the checkpoint store to another instance (it was "
		          "taken while this one was away)", s->slot, s->schema);
		err_set(s, err, "reconnected", "lost the checkpoint store to another instance");
		PQfinish(s->conn); /* and its lock */
		s->conn = NULL;
		return -ENOLCK;
	}
	log_info("checkpoint.reconnected", "slot=%s schema=%s: connection made again, the lock taken again", s->slot,
	         s->schema);
	return 0;
}

/* ---- ops ------------------------------------------------------------------------------------- */

static uint64_t known_at(const pg_store *s)
{
	uint64_t k = s->known_at;
	if (s->has_base && s->base_lsn > k)
		k = s->base_lsn;
	if (s->nentries > 0 && s->entries[s->nentries - 1].lsn > k)
		k = s->entries[s->nentries - 1].lsn;
	return k;
}

static bool positions_dirty(const pg_store *s)
{
	for (size_t i = 0; i < s->pos.n; i++)
		if (s->pos.pos[i].dirty)
			return true;
	return false;
}

/* Writes what is buffered, the positions that changed and the known-at LSN in one transaction
 * (nothing at all when none of them changed). */
static int pg_write(pg_store *s, char err[CHECKPOINT_ERROR_MAX])
{
	bool records = s->nentries > s->nsynced || s->rewind_from != 0;
	/* like the dir store, a known-at LSN that only went up is no reason to write: it goes with
	 * the next append or position change (the pipeline puts its confirmed LSN as a position) */
	if (!records && !positions_dirty(s) && s->known_at >= s->known_stored)
		return 0;
	int rc = pg_ready(s, err);
	if (rc < 0)
		return rc;
	buf q;
	buf_init(&q);
	if (records) {
		uint64_t from = s->rewind_from;
		if (s->nentries > s->nsynced && (from == 0 || s->entries[s->nsynced].lsn < from))
			from = s->entries[s->nsynced].lsn;
		rc = buf_printf(&q, "DELETE FROM %s.checkpoint_log WHERE slot = %s AND lsn >= ", s->schema, s->slot_lit);
		if (rc == 0 && (rc = sql_lsn(&q, from)) == 0)
			rc = buf_puts(&q, ";\n");
		if (rc == 0 && s->pending.len > 0)
			rc = buf_printf(&q, "INSERT INTO %s.checkpoint_log (slot, lsn, n, tbl, deleted, v0, v1, v2) VALUES %s;\n",
			                s->schema, s->pending.data);
	}
	if (rc == 0 && positions_dirty(s)) {
		rc = buf_printf(&q, "INSERT INTO %s.checkpoint_positions (slot, name, lsn) VALUES ", s->schema);
		bool first = true;
		for (size_t i = 0; i < s->pos.n && rc == 0; i++) {
			const checkpoint_position *p = &s->pos.pos[i];
			if (!p->dirty)
				continue;
			rc = buf_printf(&q, "%s(%s,", first ? "" : ",", s->slot_lit);
			first = false;
			if (rc == 0)
				rc = sql_literal(&q, p->name);
			if (rc == 0 && (rc = buf_putc(&q, ',')) == 0 && (rc = sql_lsn(&q, p->lsn)) == 0)
				rc = buf_putc(&q, ')');
		}
		if (rc == 0)
			rc = buf_puts(&q, " ON CONFLICT (slot, name) DO UPDATE SET lsn = excluded.lsn;\n");
	}
	if (rc == 0)
		rc = buf_printf(&q, "UPDATE %s.checkpoint_slots SET known_at = ", s->schema);
	if (rc == 0 && (rc = sql_lsn(&q, s->known_at)) == 0)
		rc = buf_printf(&q, " WHERE slot = %s", s->slot_lit);
	if (rc < 0) {
		err_set(s, err, "sync", strerror(-rc));
	} else if ((rc = pg_run(s, q.data, PGRES_COMMAND_OK, NULL, "cannot write", err)) == 0) {
		s->nsynced = s->nentries;
		s->rewind_from = 0;
		buf_clear(&s->pending);
		for (size_t i = 0; i < s->pos.n; i++)
			s->pos.pos[i].dirty = false;
		s->known_stored = s->known_at;
	}
	buf_fini(&q);
	return rc;
}

/* Streams the rows of an SQL result (tbl, deleted, v0, v1, v2) to cb. */
static int rows_emit(PGresult *r, checkpoint_row_cb cb, void *arg)
{
	for (int i = 0; i < PQntuples(r); i++) {
		const char *v[3];
		for (int k = 0; k < 3; k++)
			v[k] = PQgetisnull(r, i, 2 + k) ? NULL : PQgetvalue(r, i, 2 + k);
		checkpoint_row row = {.table = atoi(PQgetvalue(r, i, 0)), .values = v,
		                      .deleted = strcmp(PQgetvalue(r, i, 1), "t") == 0};
		int rc = cb(arg, &row);
		if (rc != 0)
			return rc < 0 ? rc : -EIO;
	}
	return 0;
}

static int pg_load(void *impl, uint64_t at, checkpoint_row_cb row_cb, void *arg, uint64_t *state_lsn,
                   char err[CHECKPOINT_ERROR_MAX])
{
	pg_store *s = impl;
	char sql[512], a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
	int rc = pg_write(s, err); /* the buffered records too, as the dir store's load sees them */
	if (rc < 0)
		return rc;
	uint64_t k = known_at(s);
	if (!s->has_base && s->nentries == 0 && k == 0) {
		*state_lsn = 0;
		return 0;
	}
	if (s->has_base && at < s->base_lsn) {
		snprintf(err, CHECKPOINT_ERROR_MAX,
		         "checkpoint store %s.checkpoint_* slot=%s: the state is kept from %s on, not as of %s (compacted "
		         "past it)", s->schema, s->slot, lsn_format(s->base_lsn, b), lsn_format(at, a));
		return -ESTALE;
	}
	if ((rc = pg_ready(s, err)) < 0)
		return rc;
	PGresult *r = NULL;
	if (s->has_base) {
		snprintf(sql, sizeof(sql), "SELECT tbl, false, v0, v1, v2 FROM %s.checkpoint_base WHERE slot = %s ORDER BY n",
		         s->schema, s->slot_lit);
		if ((rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot read the base", err)) < 0)
			return rc;
		rc = rows_emit(r, row_cb, arg);
		PQclear(r);
		if (rc != 0) {
			err_set(s, err, "load", "loading a base row failed");
			return rc;
		}
	}
	snprintf(sql, sizeof(sql), "SELECT tbl, deleted, v0, v1, v2 FROM %s.checkpoint_log WHERE slot = %s AND "
	         "lsn <= '%s' AND lsn > '%s' ORDER BY lsn, n", s->schema, s->slot_lit, lsn_format(at, a),
	         lsn_format(s->has_base ? s->base_lsn : 0, b));
	if ((rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot read the log", err)) < 0)
		return rc;
	rc = rows_emit(r, row_cb, arg);
	PQclear(r);
	if (rc != 0) {
		err_set(s, err, "load", "loading a log row failed");
		return rc;
	}
	*state_lsn = at < k ? at : k;
	return 0;
}

static int entries_push(pg_store *s, uint64_t lsn, uint64_t bytes, size_t offset)
{
	if (s->nentries == s->entries_cap) {
		size_t cap = s->entries_cap ? 2 * s->entries_cap : 64;
		pg_entry *e = realloc(s->entries, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		s->entries = e, s->entries_cap = cap;
	}
	s->entries[s->nentries++] = (pg_entry){lsn, bytes, offset};
	s->bytes += bytes;
	return 0;
}

/* Drops the logged records from index i on: buffered ones now, the table's at the next sync. */
static void log_rewind(pg_store *s, size_t i, uint64_t lsn)
{
	if (i < s->nsynced) {
		buf_clear(&s->pending);
		s->nsynced = i;
		if (s->rewind_from == 0 || lsn < s->rewind_from)
			s->rewind_from = lsn;
	} else {
		s->pending.len = s->entries[i].offset;
		if (s->pending.cap > 0)
			s->pending.data[s->pending.len] = '\0';
	}
	for (size_t j = i; j < s->nentries; j++)
		s->bytes -= s->entries[j].bytes;
	s->nentries = i;
}

static int pg_append(void *impl, uint64_t lsn, const checkpoint_row *rows, size_t nrows,
                     char err[CHECKPOINT_ERROR_MAX])
{
	pg_store *s = impl;
	char t[LSN_TEXT_MAX];
	if (nrows == 0)
		return 0;
	if (s->lost) {
		err_set(s, err, "refused", "lost the checkpoint store to another instance");
		return -ENOLCK;
	}
	if (lsn == 0 || (s->has_base && lsn <= s->base_lsn)) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint store slot=%s: append at %s: %s", s->slot, lsn_format(lsn, t),
		         lsn == 0 ? "invalid" : "at or before the base");
		return -EINVAL;
	}
	if (s->nentries > 0 && lsn <= s->entries[s->nentries - 1].lsn) {
		size_t i = s->nentries;
		while (i > 0 && s->entries[i - 1].lsn >= lsn)
			i--;
		/* the stream restarted before lsn: what the store knew past it is being redone */
		if (s->known_at >= lsn)
			s->known_at = lsn - 1;
		log_rewind(s, i, lsn);
	}
	size_t keep = s->pending.len;
	uint64_t bytes = RECORD_BYTES;
	int rc = 0;
	for (size_t i = 0; i < nrows && rc == 0; i++) {
		rc = sql_row(s, &s->pending, lsn, i, &rows[i], true);
		bytes += row_bytes(&rows[i]);
	}
	if (rc == 0)
		rc = entries_push(s, lsn, bytes, keep);
	if (rc < 0) {
		s->pending.len = keep;
		if (s->pending.cap > 0)
			s->pending.data[keep] = '\0';
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint store slot=%s: append at %s: %s", s->slot,
		         lsn_format(lsn, t), strerror(-rc));
	}
	return rc;
}

static int pg_sync(void *impl, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX])
{
	pg_store *s = impl;
	if (lsn > s->known_at)
		s->known_at = lsn;
	return pg_write(s, err);
}

typedef struct base_writer {
	pg_store *s;
	buf b;
	uint64_t n;
	int rc;
	char *err;
} base_writer;

static int base_flush(base_writer *w)
{
	if (w->b.len == 0)
		return 0;
	buf q;
	buf_init(&q);
	int rc = buf_printf(&q, "INSERT INTO %s.checkpoint_base (slot, n, tbl, v0, v1, v2) VALUES %s", w->s->schema,
	                    w->b.data);
	if (rc < 0)
		err_set(w->s, w->err, "compaction", strerror(-rc));
	else
		rc = pg_run(w->s, q.data, PGRES_COMMAND_OK, NULL, "compaction: cannot write the base", w->err);
	buf_fini(&q);
	buf_clear(&w->b);
	return rc;
}

static int base_row_cb(void *arg, const checkpoint_row *row)
{
	base_writer *w = arg;
	if (row->deleted)
		return 0; /* a dump has no deletes; ignore rather than store one */
	if ((w->rc = sql_row(w->s, &w->b, 0, w->n++, row, false)) < 0) {
		err_set(w->s, w->err, "compaction", strerror(-w->rc));
		return w->rc;
	}
	if (w->b.len >= BASE_CHUNK && (w->rc = base_flush(w)) < 0)
		return w->rc;
	return 0;
}

static int pg_compact(void *impl, uint64_t upto, int (*dump_cb)(void *arg, checkpoint_row_cb row_cb, void *row_arg),
                      void *arg, char err[CHECKPOINT_ERROR_MAX])
{
	pg_store *s = impl;
	base_writer w = {.s = s, .err = err};
	char sql[512], t[LSN_TEXT_MAX];
	int rc;
	if (s->has_base && upto < s->base_lsn) {
		err_set(s, err, "compaction", "before the base");
		return -EINVAL;
	}
	if ((rc = pg_write(s, err)) < 0 || (rc = pg_ready(s, err)) < 0)
		return rc;
	buf_init(&w.b);
	snprintf(sql, sizeof(sql), "BEGIN; DELETE FROM %s.checkpoint_base WHERE slot = %s", s->schema, s->slot_lit);
	if ((rc = pg_run(s, sql, PGRES_COMMAND_OK, NULL, "compaction", err)) < 0)
		goto cleanup;
	rc = dump_cb(arg, base_row_cb, &w);
	if (rc == 0)
		rc = w.rc = base_flush(&w);
	if (rc != 0) {
		if (w.rc == 0)
			err_set(s, err, "compaction", "the state dump failed");
		rc = rc < 0 ? rc : -EIO;
		goto rollback;
	}
	snprintf(sql, sizeof(sql), "DELETE FROM %s.checkpoint_log WHERE slot = %s AND lsn <= '%s'; "
	         "UPDATE %s.checkpoint_slots SET base_lsn = '%s' WHERE slot = %s; COMMIT", s->schema, s->slot_lit,
	         lsn_format(upto, t), s->schema, t, s->slot_lit);
	if ((rc = pg_run(s, sql, PGRES_COMMAND_OK, NULL, "compaction", err)) < 0)
		goto rollback;
	s->has_base = true;
	s->base_lsn = upto;
	size_t first = 0;
	while (first < s->nentries && s->entries[first].lsn <= upto)
		s->bytes -= s->entries[first++].bytes;
	if (first > 0) { /* entries is NULL while nothing was ever logged */
		memmove(s->entries, s->entries + first, (s->nentries - first) * sizeof(*s->entries));
		s->nentries -= first;
		s->nsynced -= first; /* pg_write synced them all */
	}
	goto cleanup;
rollback:
	if (s->conn != NULL && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
		PQclear(PQexec(s->conn, "ROLLBACK"));
cleanup:
	buf_fini(&w.b);
	return rc;
}

static uint64_t pg_log_bytes(void *impl)
{
	return ((const pg_store *)impl)->bytes;
}

static int pg_position_get(void *impl, const char *name, uint64_t *lsn)
{
	*lsn = checkpoint_positions_get(&((const pg_store *)impl)->pos, name);
	return 0;
}

static int pg_position_put(void *impl, const char *name, uint64_t lsn)
{
	int rc = checkpoint_positions_put(&((pg_store *)impl)->pos, name, lsn);
	return rc < 0 ? rc : 0;
}

static void pg_destroy(void *impl)
{
	pg_store *s = impl;
	PQfinish(s->conn);
	buf_fini(&s->pending);
	free(s->entries);
	free(s->conninfo);
	free(s->slot);
	free(s->slot_lit);
	free(s);
}

static const checkpoint_store_ops pg_ops = {
	.load = pg_load,
	.append = pg_append,
	.sync = pg_sync,
	.compact = pg_compact,
	.log_bytes = pg_log_bytes,
	.position_get = pg_position_get,
	.position_put = pg_position_put,
	.destroy = pg_destroy,
};

/* ---- create ---------------------------------------------------------------------------------- */

static bool schema_valid(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > 63 || (n[0] >= '0' && n[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_'))
			return false;
	return true;
}

/* The schema and tables, created when missing (serialized by a transaction-level advisory lock:
 * CREATE ... IF NOT EXISTS alone races with itself). */
static int schema_ensure(pg_store *s, char err[CHECKPOINT_ERROR_MAX])
{
	char sql[2048];
	PGresult *r = NULL;
	snprintf(sql, sizeof(sql), "SELECT to_regclass('%s.checkpoint_positions') IS NOT NULL", s->schema);
	int rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot look for its tables", err);
	if (rc < 0)
		return rc;
	bool present = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if (present)
		return 0;
	const char *n = s->schema;
	snprintf(sql, sizeof(sql),
	         "SELECT pg_advisory_xact_lock(hashtextextended('walcast checkpoint schema', 0));\n"
	         "CREATE SCHEMA IF NOT EXISTS %s;\n"
	         "CREATE TABLE IF NOT EXISTS %s.checkpoint_slots (slot text PRIMARY KEY, base_lsn pg_lsn, "
	         "known_at pg_lsn NOT NULL DEFAULT '0/0', generation bigint NOT NULL DEFAULT 0);\n"
	         "CREATE TABLE IF NOT EXISTS %s.checkpoint_base (slot text NOT NULL, n bigint NOT NULL, "
	         "tbl smallint NOT NULL, v0 text, v1 text, v2 text, PRIMARY KEY (slot, n));\n"
	         "CREATE TABLE IF NOT EXISTS %s.checkpoint_log (slot text NOT NULL, lsn pg_lsn NOT NULL, "
	         "n integer NOT NULL, tbl smallint NOT NULL, deleted boolean NOT NULL, v0 text, v1 text, v2 text, "
	         "PRIMARY KEY (slot, lsn, n));\n"
	         "CREATE TABLE IF NOT EXISTS %s.checkpoint_positions (slot text NOT NULL, name text NOT NULL, "
	         "lsn pg_lsn NOT NULL, PRIMARY KEY (slot, name));\n",
	         n, n, n, n, n);
	return pg_run(s, sql, PGRES_COMMAND_OK, NULL, "cannot create its schema and tables", err);
}

/* Takes the slot's row (a new generation: a reconnecting previous holder sees it changed) and
 * reads the log's index and the positions. */
static int state_read(pg_store *s, char err[CHECKPOINT_ERROR_MAX])
{
	char sql[1024];
	PGresult *r = NULL;
	snprintf(sql, sizeof(sql),
	         "INSERT INTO %s.checkpoint_slots AS c (slot) VALUES (%s) ON CONFLICT (slot) DO UPDATE "
	         "SET generation = c.generation + 1 RETURNING generation, base_lsn::text, known_at::text",
	         s->schema, s->slot_lit);
	int rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot take the slot's row", err);
	if (rc < 0)
		return rc;
	s->generation = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	s->has_base = !PQgetisnull(r, 0, 1);
	const char *b = PQgetvalue(r, 0, 1), *k = PQgetvalue(r, 0, 2);
	if ((s->has_base && lsn_parse(b, strlen(b), &s->base_lsn) < 0) || lsn_parse(k, strlen(k), &s->known_at) < 0)
		rc = -EIO;
	PQclear(r);
	s->known_stored = s->known_at;
	if (rc < 0) {
		err_set(s, err, "the slot's row", "unreadable LSNs");
		return rc;
	}
	/* records at or below the base are folded in it; compaction deletes them in its transaction */
	snprintf(sql, sizeof(sql),
	         "SELECT lsn::text, %d + sum(%d + coalesce(octet_length(v0) + 1, 0) + coalesce(octet_length(v1) + 1, 0) "
	         "+ coalesce(octet_length(v2) + 1, 0)) FROM %s.checkpoint_log WHERE slot = %s GROUP BY lsn ORDER BY lsn",
	         RECORD_BYTES, ROW_BYTES, s->schema, s->slot_lit);
	if ((rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot read the log's index", err)) < 0)
		return rc;
	for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
		uint64_t lsn;
		const char *v = PQgetvalue(r, i, 0);
		rc = lsn_parse(v, strlen(v), &lsn) < 0 ? -EIO : entries_push(s, lsn, strtoull(PQgetvalue(r, i, 1), NULL, 10), 0);
	}
	PQclear(r);
	s->nsynced = s->nentries;
	if (rc < 0) {
		err_set(s, err, "the log's index", strerror(-rc));
		return rc;
	}
	snprintf(sql, sizeof(sql), "SELECT name, lsn::text FROM %s.checkpoint_positions WHERE slot = %s ORDER BY name",
	         s->schema, s->slot_lit);
	if ((rc = pg_run(s, sql, PGRES_TUPLES_OK, &r, "cannot read the positions", err)) < 0)
		return rc;
	for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
		const char *name = PQgetvalue(r, i, 0), *v = PQgetvalue(r, i, 1);
		uint64_t lsn;
		if (lsn_parse(v, strlen(v), &lsn) < 0 || checkpoint_positions_add(&s->pos, name, strlen(name), lsn) < 0)
			rc = -EIO;
	}
	PQclear(r);
	if (rc < 0)
		err_set(s, err, "the positions", "an unreadable LSN or name, or more than 64");
	return rc;
}

int checkpoint_pg_create(const char *conninfo, const char *schema, const char *slot_name, checkpoint_store **out,
                         char err[CHECKPOINT_ERROR_MAX])
{
	if (schema == NULL)
		schema = CHECKPOINT_PG_SCHEMA;
	if (!schema_valid(schema) || slot_name == NULL || slot_name[0] == '\0' || strlen(slot_name) > 63) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint store: %s",
		         !schema_valid(schema) ? "the schema name must be [a-z_][a-z0-9_]*, at most 63 bytes"
		                               : "the slot name must be 1 to 63 bytes");
		return -EINVAL;
	}
	pg_store *s = calloc(1, sizeof(*s));
	buf lit;
	buf_init(&lit);
	if (s == NULL || (s->conninfo = strdup(conninfo != NULL ? conninfo : "")) == NULL ||
	    (s->slot = strdup(slot_name)) == NULL || sql_literal(&lit, slot_name) < 0) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint store slot=%s: out of memory", slot_name);
		buf_fini(&lit);
		if (s != NULL)
			pg_destroy(s);
		return -ENOMEM;
	}
	s->slot_lit = lit.data;
	s->st = (checkpoint_store){.ops = &pg_ops, .impl = s};
	snprintf(s->schema, sizeof(s->schema), "%s", schema);
	buf_init(&s->pending);
	int rc = pg_connect_lock(s, err);
	if (rc == 0)
		rc = schema_ensure(s, err);
	if (rc == 0)
		rc = state_read(s, err);
	if (rc < 0) {
		pg_destroy(s);
		return rc;
	}
	*out = &s->st;
	return 0;
}

/* ---- the takeover ---------------------------------------------------------------------------- */

int checkpoint_pg_check(checkpoint_store *st, char err[CHECKPOINT_ERROR_MAX])
{
	if (st == NULL || st->ops != &pg_ops)
		return 0;
	pg_store *s = st->impl;
	int rc = pg_ready(s, err);
	return rc < 0 ? rc : pg_run(s, "SELECT 1", PGRES_TUPLES_OK, NULL, "check", err);
}

int checkpoint_pg_walsender_end(const char *conninfo, const char *slot_name, int pid, char err[CHECKPOINT_ERROR_MAX])
{
	/* the application_name and role walcast's replication connection has with this conninfo */
	static const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
	const char *vals[] = {"10", "walcast", conninfo != NULL ? conninfo : "", NULL};
	char pidtext[16];
	snprintf(pidtext, sizeof(pidtext), "%d", pid);
	const char *params[] = {slot_name, pidtext};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	PGresult *r = NULL;
	int rc = -EIO;
	if (c == NULL || PQstatus(c) != CONNECTION_OK) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "cannot connect to end the walsender of slot %s: %s", slot_name,
		         c != NULL ? PQerrorMessage(c) : "out of memory");
		goto done;
	}
	/* ours: the same role and application_name as this instance's replication connection */
	r = PQexecParams(c, "SELECT r.pid IS NOT NULL, coalesce(r.application_name, '?'), coalesce(r.usename::text, '?'), "
	                 "CASE WHEN r.application_name = current_setting('application_name') AND r.usename = current_user "
	                 "THEN pg_terminate_backend(r.pid, 5000) END FROM pg_replication_slots s "
	                 "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
	                 "WHERE s.slot_name = $1 AND s.active_pid = $2::int",
	                 2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "cannot end the walsender pid %d of slot %s: %s", pid, slot_name,
		         PQresultErrorMessage(r));
	} else if (PQntuples(r) == 0) {
		rc = 1; /* gone meanwhile */
	} else if (strcmp(PQgetvalue(r, 0, 0), "t") != 0 || PQgetisnull(r, 0, 3)) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "its walsender is not walcast's (application_name=%s role=%s)",
		         PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
		rc = 0;
	} else if (strcmp(PQgetvalue(r, 0, 3), "t") != 0) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "its walsender pid %d did not exit within 5 s of its termination", pid);
	} else {
		rc = 1;
	}
done:
	PQclear(r);
	PQfinish(c);
	if (rc < 0) { /* one line: libpq's messages end with a newline */
		size_t n = strlen(err);
		while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
			err[--n] = '\0';
	}
	return rc;
}
