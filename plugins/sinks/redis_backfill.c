/*
 * redis_backfill — `walcast backfill` (see redis_backfill.h and docs/aggregates.md).
 *
 * Order of work, each step only after the one before succeeded: find the sink's section; check
 * the daemon's slot (refused while active); create the slot that exports the snapshot (the
 * replication connection stays open: the snapshot lives as long as it does); open the snapshot
 * on a second connection (REPEATABLE READ, SET TRANSACTION SNAPSHOT) and count the rows; delete
 * the global watermark, then every key under the prefix; apply the rows chunk by chunk (chunk k
 * is applied as "transaction" k, so each org's script takes every chunk once); set each org's
 * watermark to S - 1 (the snapshot holds every transaction whose commit LSN is below S) and the
 * global watermark to S, last.
 */
#include "redis_backfill.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "lsn.h"
#include "redis.h"
#include "redis_agg.h"
#include "redis_conn.h"

typedef struct backfill {
	const config *cfg;
	const redis_backfill_options *o;
	redis_sink_conf conf;
	config_table table;
	bool conf_set;
	const char *sink_name;
	redis_agg_conf aconf;
	redis_url url;
	char sha[41];
	PGconn *repl, *db;
	redisContext *rc;
	char slot[64];
	bool created_daemon_slot;
	uint64_t snapshot_lsn;
	char snapshot[128];
	int64_t rows_total, rows_done, rows_bad;
	redis_agg_batch batch;
	char **orgs; /* every org seen (sorted at the end) */
	size_t norgs, caporgs;
	buf args;
} backfill;

static int64_t now_ms(void)
{
	return loop_now_ms();
}

/* ---- configuration ------------------------------------------------------------------------- */

static int find_section(backfill *b)
{
	const config_section *found = NULL;
	int n = 0;
	for (const config_section *s = config_section_next(b->cfg, "sink", NULL); s != NULL;
	     s = config_section_next(b->cfg, "sink", s)) {
		if (strcmp(config_section_type(s), "redis") != 0)
			continue;
		if (b->o->sink == NULL || strcmp(config_section_name(s), b->o->sink) == 0) {
			found = s;
			n++;
		}
	}
	if (n != 1) {
		if (b->o->sink != NULL)
			log_error("backfill.config", "no [sink.%s] section of type redis", b->o->sink);
		else
			log_error("backfill.config", "%s: name the sink with --sink NAME",
			          n == 0 ? "no [sink.NAME] section of type redis" : "several redis sinks");
		return -EINVAL;
	}
	b->sink_name = config_section_name(found);
	b->table = (config_table){redis_sink_ops.keys, redis_sink_ops.nkeys, redis_sink_ops.conf_size};
	char err[CONFIG_ERROR_MAX];
	if (config_section_apply(found, &b->table, &b->conf, err) < 0) {
		log_error("backfill.config", "%s", err);
		return -EINVAL;
	}
	b->conf_set = true;
	if (b->conf.cluster) {
		log_error("backfill.config", "sink=%s: cluster = on: the backfill runs against one Redis server only "
		          "(docs/aggregates.md, \"Redis Cluster\")", b->sink_name);
		return -EINVAL;
	}
	char uerr[REDIS_CONN_ERROR_MAX];
	if (redis_url_parse(b->conf.url, &b->url, uerr) < 0) {
		log_error("backfill.config", "sink=%s: %s", b->sink_name, uerr);
		return -EINVAL;
	}
	if (b->conf.prefix[0] == '\0' || strpbrk(b->conf.prefix, "{} *?[]\\") != NULL) {
		log_error("backfill.config", "sink=%s: prefix \"%s\" is empty or holds a brace, a space or a glob "
		          "character", b->sink_name, b->conf.prefix);
		return -EINVAL;
	}
	if (strchr(b->conf.table, '.') == NULL) {
		log_error("backfill.config", "sink=%s: table = %s: not schema.table", b->sink_name, b->conf.table);
		return -EINVAL;
	}
	b->aconf = (redis_agg_conf){.prefix = b->conf.prefix, .missed_statuses = b->conf.missed_statuses,
	                            .hour_window_h = b->conf.hour_window};
	return 0;
}

/* ---- PostgreSQL ---------------------------------------------------------------------------- */

static PGconn *pg_connect(const char *conninfo, bool replication)
{
	const char *keys[] = {"dbname", "fallback_application_name", replication ? "replication" : NULL, NULL};
	const char *vals[] = {conninfo, "walcast-backfill", "database", NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if (c != NULL && PQstatus(c) != CONNECTION_OK) {
		log_error("backfill.pg", "%s connection: %s", replication ? "replication" : "database",
		          PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* Runs sql (no result rows wanted). 0 or -EIO (logged). */
static int pg_exec(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -EIO;
	if (rc < 0)
		log_error("backfill.pg", "%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	return rc;
}

static int snapshot_open(backfill *b)
{
	if ((b->db = pg_connect(b->cfg->conninfo, false)) == NULL || (b->repl = pg_connect(b->cfg->conninfo, true)) == NULL)
		return -EIO;
	const char *params[] = {b->cfg->slot};
	PGresult *r = PQexecParams(b->db, "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", 1,
	                           NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		log_error("backfill.pg", "pg_replication_slots: %s", PQerrorMessage(b->db));
		PQclear(r);
		return -EIO;
	}
	if (strspn(b->cfg->slot, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(b->cfg->slot)) {
		PQclear(r);
		log_error("backfill.slot", "slot=%s: a slot name is lower-case letters, digits and _", b->cfg->slot);
		return -EINVAL;
	}
	bool exists = PQntuples(r) == 1, active = exists && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if (active) {
		log_error("backfill.slot", "slot=%s is in use: stop walcast run first (the backfill replaces what its "
		          "redis sink wrote)", b->cfg->slot);
		return -EBUSY;
	}
	char sql[512];
	if (exists) {
		snprintf(b->slot, sizeof(b->slot), "walcast_backfill_%ld", (long)getpid());
		snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')",
		         b->slot);
	} else {
		/* slot names are [a-z0-9_] (checked by the configuration) */
		snprintf(b->slot, sizeof(b->slot), "%s", b->cfg->slot);
		snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT %s LOGICAL %s (SNAPSHOT 'export')", b->slot,
		         b->cfg->plugin);
		b->created_daemon_slot = true;
	}
	r = PQexec(b->repl, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) < 3) {
		log_error("backfill.slot", "%s: %s", sql, PQerrorMessage(b->repl));
		PQclear(r);
		b->created_daemon_slot = false;
		return -EIO;
	}
	const char *cp = PQgetvalue(r, 0, 1);
	int prc = lsn_parse(cp, strlen(cp), &b->snapshot_lsn);
	snprintf(b->snapshot, sizeof(b->snapshot), "%s", PQgetvalue(r, 0, 2));
	PQclear(r);
	if (prc < 0 || b->snapshot_lsn == 0) {
		log_error("backfill.slot", "slot=%s: unexpected consistent point '%s'", b->slot, cp);
		return -EIO;
	}
	char lsn[LSN_TEXT_MAX];
	log_info("backfill.snapshot", "slot=%s%s snapshot=%s lsn=%s", b->slot,
	         b->created_daemon_slot ? " (created for walcast run)" : " (temporary)", b->snapshot,
	         lsn_format(b->snapshot_lsn, lsn));

	snprintf(sql, sizeof(sql), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
	if (pg_exec(b->db, sql) < 0)
		return -EIO;
	char *lit = PQescapeLiteral(b->db, b->snapshot, strlen(b->snapshot));
	if (lit == NULL)
		return -ENOMEM;
	snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT %s", lit);
	PQfreemem(lit);
	if (pg_exec(b->db, sql) < 0 || pg_exec(b->db, "SET LOCAL datestyle = 'ISO, MDY'") < 0 ||
	    pg_exec(b->db, "SET LOCAL timezone = 'UTC'") < 0)
		return -EIO;

	const char *dot = strchr(b->conf.table, '.');
	char *schema = PQescapeIdentifier(b->db, b->conf.table, (size_t)(dot - b->conf.table));
	char *table = PQescapeIdentifier(b->db, dot + 1, strlen(dot + 1));
	int rc = schema && table ? 0 : -ENOMEM;
	if (rc == 0) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s.%s", schema, table);
		r = PQexec(b->db, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			b->rows_total = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		else {
			log_error("backfill.pg", "%s: %s", sql, PQerrorMessage(b->db));
			rc = -EIO;
		}
		PQclear(r);
	}
	if (rc == 0) {
		snprintf(sql, sizeof(sql), "DECLARE walcast_backfill NO SCROLL CURSOR FOR SELECT org_id, contact_id, kind, "
		         "direction, status, started_at, duration_s FROM %s.%s", schema, table);
		rc = pg_exec(b->db, sql);
	}
	PQfreemem(schema);
	PQfreemem(table);
	return rc;
}

/* ---- Redis --------------------------------------------------------------------------------- */

/* One command, its reply checked; NULL reply or an error reply: logged, -EIO. */
static int rcmd(backfill *b, redisReply **out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(b->rc, fmt, ap);
	va_end(ap);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		log_error("backfill.redis", "redis=%s:%d: %s", b->rc->tcp.host, b->rc->tcp.port, r ? r->str : b->rc->errstr);
		freeReplyObject(r);
		return -EIO;
	}
	if (out != NULL)
		*out = r;
	else
		freeReplyObject(r);
	return 0;
}

static int redis_open(backfill *b)
{
	char err[REDIS_CONN_ERROR_MAX];
	if ((b->rc = redis_connect_blocking(&b->url, b->conf.connect_timeout_ms, err)) == NULL) {
		log_error("backfill.redis", "%s", err);
		return -EIO;
	}
	struct timeval ctv = {.tv_sec = b->conf.command_timeout_ms / 1000, .tv_usec = (b->conf.command_timeout_ms % 1000) * 1000};
	redisSetTimeout(b->rc, ctv);
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)REDIS_AGG_SCRIPT, strlen(REDIS_AGG_SCRIPT), md);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(b->sha + 2 * i, 3, "%02x", md[i]);
	return rcmd(b, NULL, "SCRIPT LOAD %s", REDIS_AGG_SCRIPT);
}

/* Deletes the global watermark, then every key under the prefix. */
static int redis_wipe(backfill *b)
{
	int rc = rcmd(b, NULL, "DEL %s:wm", b->conf.prefix);
	char cursor[32] = "0";
	uint64_t deleted = 0;
	do {
		redisReply *r = NULL;
		if (rc == 0)
			rc = rcmd(b, &r, "SCAN %s MATCH %s:* COUNT 1000", cursor, b->conf.prefix);
		if (rc < 0)
			break;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			freeReplyObject(r);
			return -EIO;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		redisReply *keys = r->element[1];
		if (keys->elements > 0) {
			const char **argv = calloc(keys->elements + 1, sizeof(*argv));
			size_t *len = calloc(keys->elements + 1, sizeof(*len));
			if (argv == NULL || len == NULL)
				rc = -ENOMEM;
			for (size_t i = 0; rc == 0 && i < keys->elements; i++) {
				argv[i + 1] = keys->element[i]->str;
				len[i + 1] = keys->element[i]->len;
			}
			if (rc == 0) {
				argv[0] = "UNLINK";
				len[0] = 6;
				redisReply *u = redisCommandArgv(b->rc, (int)keys->elements + 1, argv, len);
				rc = u != NULL && u->type == REDIS_REPLY_INTEGER ? 0 : -EIO;
				if (u != NULL && u->type == REDIS_REPLY_INTEGER)
					deleted += (uint64_t)u->integer;
				freeReplyObject(u);
			}
			free(argv);
			free(len);
		}
		freeReplyObject(r);
	} while (rc == 0 && strcmp(cursor, "0") != 0);
	if (rc == 0)
		log_info("backfill.wiped", "sink=%s prefix=%s: %" PRIu64 " keys deleted", b->sink_name, b->conf.prefix,
		         deleted);
	return rc;
}

static int org_seen(backfill *b, const char *org)
{
	/* a batch lists its orgs once; the union over chunks is kept here (orgs are few) */
	for (size_t i = 0; i < b->norgs; i++)
		if (strcmp(b->orgs[i], org) == 0)
			return 0;
	if (b->norgs == b->caporgs) {
		size_t cap = b->caporgs ? b->caporgs * 2 : 64;
		char **n = realloc(b->orgs, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		b->orgs = n;
		b->caporgs = cap;
	}
	if ((b->orgs[b->norgs] = strdup(org)) == NULL)
		return -ENOMEM;
	b->norgs++;
	return 0;
}

/* Applies the batch (chunk k): every org's script pipelined, then every reply read. */
static int batch_apply(backfill *b)
{
	int rc = 0;
	size_t sent = 0;
	for (size_t i = 0; i < b->batch.norgs && rc == 0; i++) {
		int argc;
		const char **argv = NULL;
		size_t *argvlen = NULL;
		rc = redis_agg_org_command(&b->batch, i, &b->aconf, b->sha, &b->args, &argc, &argv, &argvlen);
		if (rc == 0 && redisAppendCommandArgv(b->rc, argc, argv, argvlen) != REDIS_OK)
			rc = -ENOMEM;
		if (rc == 0)
			sent++;
		free(argv);
		free(argvlen);
		if (rc == 0)
			rc = org_seen(b, redis_agg_org_id(&b->batch, i, NULL, NULL));
	}
	for (size_t i = 0; i < sent; i++) {
		void *v = NULL;
		if (redisGetReply(b->rc, &v) != REDIS_OK) {
			log_error("backfill.redis", "redis=%s:%d: %s", b->rc->tcp.host, b->rc->tcp.port, b->rc->errstr);
			return -EIO;
		}
		redisReply *r = v;
		if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
			log_error("backfill.redis", "redis=%s:%d: the script answered %s", b->rc->tcp.host, b->rc->tcp.port,
			          r->type == REDIS_REPLY_ERROR ? r->str : "that the chunk was applied already");
			rc = -EIO;
		}
		freeReplyObject(r);
	}
	redis_agg_batch_clear(&b->batch);
	return rc;
}

static void progress(backfill *b, int64_t t0, bool last)
{
	if (!b->o->progress)
		return;
	double s = (double)(now_ms() - t0) / 1000.0;
	double rate = s > 0 ? (double)b->rows_done / s : 0;
	int pct = b->rows_total > 0 ? (int)(100 * b->rows_done / b->rows_total) : 100;
	double eta = rate > 0 ? (double)(b->rows_total - b->rows_done) / rate : 0;
	fprintf(stderr, "\rbackfill: %3d%%  %" PRId64 " / %" PRId64 " rows  %.0f rows/s  %s %.0f s   ", pct, b->rows_done,
	        b->rows_total, rate, last ? "took" : "eta", last ? s : eta);
	if (last)
		fputc('\n', stderr);
	fflush(stderr);
}

static int rows_apply(backfill *b)
{
	int64_t t0 = now_ms(), last_log = t0;
	char fetch[64];
	snprintf(fetch, sizeof(fetch), "FETCH %d FROM walcast_backfill", b->o->chunk_rows > 0 ? b->o->chunk_rows : 10000);
	redis_agg_cols cols = {.org = 0, .contact = 1, .kind = 2, .direction = 3, .status = 4, .started_at = 5,
	                       .duration = 6};
	int64_t now_s = (int64_t)time(NULL);
	for (uint64_t chunk = 1;; chunk++) {
		PGresult *r = PQexec(b->db, fetch);
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			log_error("backfill.pg", "%s: %s", fetch, PQerrorMessage(b->db));
			PQclear(r);
			return -EIO;
		}
		int n = PQntuples(r);
		int rc = 0;
		for (int i = 0; i < n && rc == 0; i++) {
			change_value t[7];
			for (int f = 0; f < 7; f++)
				t[f] = PQgetisnull(r, i, f)
				           ? (change_value){VALUE_NULL, 0, NULL}
				           : (change_value){VALUE_TEXT, (uint32_t)PQgetlength(r, i, f), PQgetvalue(r, i, f)};
			redis_agg_event ev;
			char err[REDIS_AGG_ERROR_MAX];
			if (redis_agg_event_parse(&cols, t, &ev, err) < 0) {
				if (b->rows_bad++ % 1000 == 0)
					log_error("redis.bad_row", "sink=%s: %s; the row is left out of the aggregates", b->sink_name,
					          err);
				continue;
			}
			rc = redis_agg_add(&b->batch, &b->aconf, &ev, +1, chunk, now_s);
		}
		PQclear(r);
		if (rc == 0 && b->batch.norgs > 0)
			rc = batch_apply(b);
		if (rc < 0)
			return rc;
		b->rows_done += n;
		progress(b, t0, n == 0);
		if (!b->o->progress && now_ms() - last_log >= 5000) {
			last_log = now_ms();
			log_info("backfill.progress", "sink=%s rows=%" PRId64 "/%" PRId64, b->sink_name, b->rows_done,
			         b->rows_total);
		}
		if (n == 0)
			return 0;
	}
}

/* The handover: every org seen at S - 1, the global watermark at S (last). */
static int watermarks_set(backfill *b)
{
	char wm[17];
	redis_agg_lsn_text(b->snapshot_lsn - 1, wm);
	for (size_t i = 0; i < b->norgs; i++) {
		redisAppendCommand(b->rc, "SET %s:{%s}:wm %s", b->conf.prefix, b->orgs[i], wm);
		redisAppendCommand(b->rc, "SADD %s:orgs %s", b->conf.prefix, b->orgs[i]);
	}
	for (size_t i = 0; i < 2 * b->norgs; i++) {
		void *v = NULL;
		if (redisGetReply(b->rc, &v) != REDIS_OK || ((redisReply *)v)->type == REDIS_REPLY_ERROR) {
			log_error("backfill.redis", "redis=%s:%d: setting the watermarks: %s", b->rc->tcp.host, b->rc->tcp.port,
			          v ? ((redisReply *)v)->str : b->rc->errstr);
			freeReplyObject(v);
			return -EIO;
		}
		freeReplyObject(v);
	}
	redis_agg_lsn_text(b->snapshot_lsn, wm);
	return rcmd(b, NULL, "SET %s:wm %s", b->conf.prefix, wm);
}

int redis_backfill_main(const config *cfg, const redis_backfill_options *o)
{
	backfill b = {.cfg = cfg, .o = o};
	buf_init(&b.args);
	int code = 1;
	if (redis_agg_batch_init(&b.batch) < 0)
		goto cleanup;
	if (find_section(&b) < 0) {
		code = 2;
		goto cleanup;
	}
	/* Redis first: nothing is created in PostgreSQL when Redis is not there */
	if (redis_open(&b) < 0 || snapshot_open(&b) < 0 || redis_wipe(&b) < 0 || rows_apply(&b) < 0 ||
	    watermarks_set(&b) < 0 || pg_exec(b.db, "COMMIT") < 0)
		goto cleanup;
	char lsn[LSN_TEXT_MAX];
	log_info("backfill.done", "sink=%s table=%s: %" PRId64 " rows (%" PRId64 " left out), %zu orgs, as of %s; "
	         "walcast run takes over from there", b.sink_name, b.conf.table, b.rows_done - b.rows_bad, b.rows_bad,
	         b.norgs, lsn_format(b.snapshot_lsn, lsn));
	code = 0;
cleanup:
	if (code != 0 && b.created_daemon_slot && b.repl != NULL) {
		/* a first install that failed: leave no slot behind that would pin WAL */
		char sql[128];
		snprintf(sql, sizeof(sql), "DROP_REPLICATION_SLOT %s", b.slot);
		PQclear(PQexec(b.repl, sql));
	}
	if (b.db != NULL)
		PQfinish(b.db);
	if (b.repl != NULL)
		PQfinish(b.repl);
	if (b.rc != NULL)
		redisFree(b.rc);
	for (size_t i = 0; i < b.norgs; i++)
		free(b.orgs[i]);
	free(b.orgs);
	redis_agg_batch_fini(&b.batch);
	buf_fini(&b.args);
	if (b.conf_set)
		config_section_free(&b.table, &b.conf);
	return code;
}
