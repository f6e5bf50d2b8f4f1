/*
 * tail — JSON lines out of the replication stream. See tail.h for the delivery guarantees.
 *
 * State: one output stream, the byte offset where the current transaction began (so a
 * transaction cut off by a reconnect can be cut from a file), the end LSN of the last complete
 * transaction written, and the last one made durable and confirmed.
 */
#include "tail.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "change.h"
#include "jsonl.h"
#include "log.h"
#include "loop.h"
#include "lsn.h"
#include "policy_state.h"
#include "privacy.h"
#include "relcache.h"
#include "replident.h"
#include "source.h"
#include "uuid.h"

#define TAIL_FLUSH_MS 100

typedef struct tail {
	const tail_options *opt;
	loop *loop;
	source *src;
	FILE *out;
	int out_fd;
	bool to_file;
	bool interactive;
	char *pos_path;
	buf line;
	change_json_cache *json; /* escaped names per relation, the header per transaction; may be NULL */

	int64_t offset;        /* bytes in the output file after everything written */
	int64_t txn_offset;    /* offset where the current transaction began */
	int64_t pos_offset;    /* offset recorded in FILE.pos by the last checkpoint */
	uint64_t written_end;  /* end LSN of the last complete transaction written */
	uint64_t durable_end;  /* ... and made durable and confirmed */
	uint64_t skip_before;  /* transactions committed before this were written by an earlier run */
	bool skipping;         /* the current transaction is one of those */
	const config *cfg;
	policy *pol;
	keyring *keys;
	privacy *priv;
	bool state_loaded;
	bool bypass;           /* the viewer's role bypasses the policy */
	uint64_t printed;
	bool limit_reached;    /* --max-changes printed; waiting for the commit to confirm it */
	int exit_code;
	bool done;
	int flush_timer;
} tail;

static void tail_finish(tail *t, int code)
{
	if (!t->done) {
		t->done = true;
		t->exit_code = code;
	}
	loop_stop(t->loop);
}

static int state_row_write(void *arg, int table, const char *const *v)
{
	FILE *f = arg;
	fprintf(f, "%c\t%s\t%s\t%s\n", table == POLICY_STATE_MEMBERSHIP ? 'm' : 'r', v[0] ? v[0] : "\\N",
	        v[1] ? v[1] : "\\N", v[2] ? v[2] : "\\N");
	return ferror(f) ? -EIO : 0;
}

static int org_found_cb(void *arg, const policy_state_uuid *org, int rank)
{
	(void)arg, (void)org, (void)rank;
	return 1; /* one is enough */
}

/* Once the policy state is loaded: a viewer who is a member of no org sees (almost) nothing,
 * which looks like a broken feed. Said once, at start. */
static void viewer_membership_check(const tail *t)
{
	if (t->priv == NULL || t->bypass || t->opt->viewer_uid == NULL)
		return;
	policy_state_uuid u;
	const char *uid = t->opt->viewer_uid;
	if (uuid_parse(uid, strlen(uid), u.b) < 0)
		return;
	if (policy_state_user_orgs(privacy_state(t->priv), &u, org_found_cb, NULL) == 0)
		log_warn("tail.viewer_no_membership", "user=%s: is a member of no org (no org_roles row): the "
		         "feed shows only what such a user may see, which is nothing of the org tables, until "
		         "a membership is added", uid);
}

/* Loads the state rows that follow "state=1" in a position file (jsonl_pos_read_cb). */
static int state_rows_read(void *arg, FILE *pf)
{
	tail *t = arg;
	if (t->priv == NULL)
		return 0;
	char line[512];
	if (fgets(line, sizeof(line), pf) == NULL || strcmp(line, "state=1\n") != 0)
		return 0; /* no state in this checkpoint */
	privacy_clear(t->priv);
	while (fgets(line, sizeof(line), pf) != NULL) {
		char *v[4];
		char *save = NULL;
		int n = 0;
		line[strcspn(line, "\n")] = '\0';
		for (char *tok = strtok_r(line, "\t", &save); tok != NULL && n < 4; tok = strtok_r(NULL, "\t", &save))
			v[n++] = strcmp(tok, "\\N") == 0 ? NULL : tok;
		if (n != 4 || (line[0] != 'm' && line[0] != 'r'))
			return -EINVAL;
		const char *vals[3] = {v[1], v[2], v[3]};
		if (privacy_load_row(t->priv, line[0] == 'm' ? POLICY_STATE_MEMBERSHIP : POLICY_STATE_RULES, vals) < 0)
			return -EINVAL;
	}
	t->state_loaded = true;
	return 1;
}

/* The mirrored policy state after the position lines (jsonl_pos_write's extra lines). */
static int state_rows_dump(void *arg, FILE *f)
{
	tail *t = arg;
	if (t->priv == NULL || !t->state_loaded)
		return 0;
	fputs("state=1\n", f);
	return policy_state_dump(privacy_state(t->priv), state_row_write, f) != 0 ? -EIO : 0;
}

/* Records the checkpoint atomically and durably (jsonl_pos_write: the one implementation of
 * FILE.pos, shared with the jsonl sink). With a viewer, the mirrored policy state as of lsn
 * travels with the position, so a restart judges the replayed changes exactly as the first run
 * would have. */
static int position_write(tail *t, int64_t offset, uint64_t lsn)
{
	int rc = jsonl_pos_write(t->pos_path, offset, lsn, state_rows_dump, t);
	if (rc < 0) {
		errno = -rc;
		return rc;
	}
	t->pos_offset = offset;
	return 0;
}

/* On the way out: FILE ends exactly at its checkpoint, so a reader never sees lines that the
 * next start would cut (a transaction cut off by the stop, or complete ones not yet
 * checkpointed when a viewer's mirrored state held the checkpoint back). */
static void output_trim(tail *t)
{
	if (!t->to_file || t->out == NULL || t->offset <= t->pos_offset)
		return;
	if (fflush(t->out) != 0 || ftruncate(t->out_fd, t->pos_offset) != 0) {
		log_error("tail.truncate_failed", "output=%s: %s", t->opt->output_path, strerror(errno));
		t->exit_code = 1;
		return;
	}
	log_info("tail.trimmed", "output=%s cut back to its checkpoint, offset %" PRId64 " (%" PRId64
	         " bytes past the checkpoint will be written again by the next run)",
	         t->opt->output_path, t->pos_offset, t->offset - t->pos_offset);
	t->offset = t->pos_offset;
}

/* Flushes the output and, for a file, makes it durable and records the checkpoint. Then
 * confirms the slot up to what is durable. */
static int tail_checkpoint(tail *t)
{
	if (t->written_end <= t->durable_end && !t->to_file) {
		if (fflush(t->out) != 0)
			goto write_error;
		return 0;
	}
	if (fflush(t->out) != 0)
		goto write_error;
	if (t->to_file && t->priv != NULL && t->txn_offset >= 0)
		return 0; /* the mirrored state already holds part of this transaction: wait for its end */
	if (t->to_file && t->written_end > t->durable_end) {
		if (fdatasync(t->out_fd) != 0)
			goto write_error;
		/* The checkpoint covers complete transactions only: the offset where the one in progress
		 * (if any) began. */
		if (position_write(t, t->txn_offset >= 0 ? t->txn_offset : t->offset, t->written_end) < 0)
			goto write_error;
	}
	if (t->written_end > t->durable_end) {
		t->durable_end = t->written_end;
		if (t->src != NULL)
			source_confirm(t->src, t->durable_end);
	}
	return 0;
write_error:
	if (errno == EPIPE) {
		tail_finish(t, 0); /* the reader went away: a normal end for a pipe */
		return -EPIPE;
	}
	log_error("tail.write_failed", "output=%s: %s", t->to_file ? t->opt->output_path : "stdout",
	          strerror(errno));
	tail_finish(t, 1);
	return -EIO;
}

static void flush_timer_cb(loop *l, int id, void *arg)
{
	tail *t = arg;
	t->flush_timer = 0;
	if (tail_checkpoint(t) < 0)
		return;
	int tid = loop_timer_add(l, TAIL_FLUSH_MS, flush_timer_cb, t);
	t->flush_timer = tid > 0 ? tid : 0;
}

static bool table_wanted(const tail *t, const relation *rel)
{
	if (t->opt->ntables == 0)
		return true;
	for (size_t i = 0; i < t->opt->ntables; i++) {
		const char *want = t->opt->tables[i];
		const char *dot = strchr(want, '.');
		if (dot == NULL) {
			if (strcmp(want, rel->name) == 0)
				return true;
		} else if (strlen(rel->schema) == (size_t)(dot - want) &&
		           strncmp(want, rel->schema, (size_t)(dot - want)) == 0 && strcmp(dot + 1, rel->name) == 0) {
			return true;
		}
	}
	return false;
}

/* Does c pass the --table/--action filters? Messages have no table. */
static bool change_wanted(const tail *t, const change *c)
{
	if (t->opt->actions != 0 && !(t->opt->actions & (1u << c->action)))
		return false;
	if (c->rel != NULL)
		return table_wanted(t, c->rel);
	return t->opt->ntables == 0;
}

/* Loads the policy state through an ordinary connection, in snapshot when given. Blocking: it
 * runs while the stream is held (slot creation) or before the first change is read. */
static int state_load(tail *t, const char *snapshot)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {t->cfg->conninfo, "walcast-tail-state", NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (conn != NULL)
		PQsetNoticeProcessor(conn, log_pg_notice, "state");
	char err[PRIVACY_ERROR_MAX];
	int rc = -EIO;
	if (PQstatus(conn) != CONNECTION_OK) {
		log_error("tail.state_load", "cannot connect to load the policy state: %s", PQerrorMessage(conn));
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
		log_error("tail.state_load", "cannot open the snapshot: %s", PQerrorMessage(conn));
		goto cleanup;
	}
	rc = privacy_load(t->priv, conn, err);
	if (rc < 0) {
		log_error("tail.state_load", "%s", err);
		goto cleanup;
	}
	t->state_loaded = true;
	log_info("tail.state_loaded", "policy state loaded from %s", snapshot ? "the slot's snapshot" : "the current database");
	viewer_membership_check(t);
cleanup:
	PQfinish(conn);
	if (rc < 0)
		tail_finish(t, 1);
	return rc;
}

static int snapshot_cb(void *arg, const char *snapshot, uint64_t consistent_lsn)
{
	tail *t = arg;
	if (t->priv != NULL && state_load(t, snapshot) == 0 && t->to_file &&
	    position_write(t, t->offset, consistent_lsn) < 0) {
		log_error("tail.position_write", "position file %s: %s", t->pos_path, strerror(errno));
		tail_finish(t, 1);
	}
	return 0;
}

static void streaming_cb(void *arg, uint64_t start_lsn)
{
	tail *t = arg;
	if (t->priv == NULL || t->state_loaded)
		return;
	log_warn("tail.state_current", "the slot already existed: policy state is loaded from the current "
	         "database, so changes replayed from before now are judged by today's memberships");
	(void)state_load(t, NULL);
}

static int begin_cb(void *arg, const change_txn *txn)
{
	tail *t = arg;
	t->skipping = txn->commit_lsn < t->skip_before;
	t->txn_offset = t->offset;
	if (t->priv != NULL && privacy_begin(t->priv, txn) < 0) {
		log_error("tail.privacy_failed", "xid=%u: %s", (unsigned)txn->xid, privacy_error(t->priv));
		tail_finish(t, 1);
		return 1;
	}
	return 0;
}

/* Prints c (the viewer's version, when there is a viewer). 0, or 1 to stop (finished). */
static int change_print(tail *t, const change *c)
{
	char lsn[LSN_TEXT_MAX];
	if (t->limit_reached) {
		/* More of the transaction than the limit allows: stop without confirming it, so the
		 * next run gets the whole transaction again. */
		tail_checkpoint(t);
		tail_finish(t, 0);
		return 1;
	}
	buf_clear(&t->line);
	if (change_json_write_cached(t->json, &t->line, c, t->opt->with_types ? CHANGE_JSON_TYPES : 0) < 0 ||
	    buf_putc(&t->line, '\n') < 0) {
		log_error("tail.oom", "lsn=%s: out of memory formatting the change", lsn_format(c->lsn, lsn));
		tail_finish(t, 1);
		return 1;
	}
	if (fwrite(t->line.data, 1, t->line.len, t->out) != t->line.len) {
		if (errno == EPIPE) {
			tail_finish(t, 0);
		} else {
			log_error("tail.write_failed", "output: %s", strerror(errno));
			tail_finish(t, 1);
		}
		return 1;
	}
	t->offset += (int64_t)t->line.len;
	if (c->txn == NULL) {
		/* A non-transactional message is complete on its own; its lsn is the end of its
		 * record, the position to confirm for it (source.h). */
		t->written_end = c->lsn;
		t->txn_offset = -1;
	}
	t->printed++;
	if (t->opt->max_changes != 0 && t->printed >= t->opt->max_changes) {
		t->limit_reached = true;
		if (c->txn == NULL) {
			tail_checkpoint(t);
			tail_finish(t, 0);
			return 1;
		}
		/* If the commit comes next, the transaction is complete and can be confirmed. */
	}
	return 0;
}

/* The privacy stage's judging callback: one change of a committing transaction (or a
 * non-transactional message), printed when wanted and visible to the viewer. 0, a negative
 * errno (privacy_error says why), or -ECANCELED when printing stopped the run. */
static int judged_cb(void *arg, const change *c)
{
	tail *t = arg;
	if (t->done || t->skipping || !change_wanted(t, c))
		return 0; /* already written by an earlier run, or filtered out */
	privacy_viewer v = {t->opt->viewer_uid, t->bypass};
	change seen;
	int rc = privacy_view_as(t->priv, c, &v, &seen);
	if (rc <= 0)
		return rc;
	return change_print(t, &seen) != 0 ? -ECANCELED : 0;
}

/* A privacy stage call failed: a stop already handled, or an error to report. Returns 1. */
static int privacy_failed(tail *t, int rc, uint64_t lsn)
{
	char text[LSN_TEXT_MAX];
	if (rc != -ECANCELED) {
		log_error("tail.privacy_failed", "lsn=%s: %s", lsn_format(lsn, text), privacy_error(t->priv));
		tail_finish(t, 1);
	}
	return 1;
}

static int change_cb(void *arg, change *c)
{
	tail *t = arg;
	if (t->done)
		return 0;
	if (t->priv != NULL) {
		/* Held until the commit, where the transaction is judged as a whole (a message outside
		 * any transaction is judged at once). */
		int rc = privacy_change(t->priv, c, judged_cb, t);
		return rc < 0 ? privacy_failed(t, rc, c->lsn) : 0;
	}
	if (t->skipping || !change_wanted(t, c))
		return 0;
	return change_print(t, c);
}

static int commit_cb(void *arg, const change_txn *txn)
{
	tail *t = arg;
	if (t->priv != NULL && !t->done) {
		/* The transaction's lines, in order, judged with the policy state as of its commit
		 * (new rows) and just before it (old rows). */
		int rc = privacy_commit(t->priv, txn, judged_cb, t);
		if (rc < 0)
			return privacy_failed(t, rc, txn->commit_lsn);
	}
	t->skipping = false;
	t->txn_offset = -1;
	if (txn->end_lsn > t->written_end)
		t->written_end = txn->end_lsn;
	if (t->interactive && tail_checkpoint(t) < 0)
		return 1;
	if (t->limit_reached || (t->opt->until_lsn != 0 && txn->end_lsn >= t->opt->until_lsn)) {
		tail_checkpoint(t);
		tail_finish(t, 0);
		return 1;
	}
	return 0;
}

static void abandon_cb(void *arg)
{
	tail *t = arg;
	if (t->priv != NULL)
		privacy_abort(t->priv); /* nothing of it was applied or printed */
	if (!t->to_file || t->txn_offset < 0)
		return; /* stdout cannot take back what it printed (see tail.h) */
	if (fflush(t->out) != 0 || ftruncate(t->out_fd, t->txn_offset) != 0) {
		log_error("tail.truncate_failed", "output=%s: %s", t->opt->output_path, strerror(errno));
		tail_finish(t, 1);
		return;
	}
	log_info("tail.abandoned", "output=%s cut back to offset %" PRId64 " (transaction will be resent)",
	         t->opt->output_path, t->txn_offset);
	t->offset = t->txn_offset;
	t->txn_offset = -1;
}

static void idle_cb(void *arg, uint64_t wal_end)
{
	tail *t = arg;
	tail_checkpoint(t);
	if (t->opt->until_lsn != 0 && wal_end >= t->opt->until_lsn)
		tail_finish(t, 0);
}

static void failed_cb(void *arg, const char *why)
{
	tail_finish(arg, 1);
}

static void signal_cb(loop *l, int signo, void *arg)
{
	log_info("tail.signal", "signal=%d: stopping", signo);
	tail_finish(arg, 0);
}

/* --create-publication: a missing publication is created for the tables the policy file
 * governs (its [table ...] sections), never FOR ALL TABLES. */
static int publication_from_policy(tail *t)
{
	char err[POLICY_ERROR_MAX];
	policy *own = NULL;
	const policy *p = t->pol;
	const char **schemas = NULL, **names = NULL;
	int rc = 0;
	if (p == NULL) {
		rc = policy_load_file(t->opt->policy_path, &own, err);
		if (rc < 0) {
			log_error("tail.policy", "%s", err);
			goto cleanup;
		}
		p = own;
	}
	size_t n = policy_table_count(p);
	if (n == 0) {
		log_error("tail.policy", "%s: --create-publication: the policy governs no table", t->opt->policy_path);
		rc = -EINVAL;
		goto cleanup;
	}
	schemas = calloc(n, sizeof(*schemas));
	names = calloc(n, sizeof(*names));
	if (schemas == NULL || names == NULL) {
		rc = -ENOMEM;
		goto cleanup;
	}
	for (size_t i = 0; i < n; i++) {
		schemas[i] = policy_table_schema(policy_table_at(p, i));
		names[i] = policy_table_name(policy_table_at(p, i));
	}
	rc = source_publication_tables(t->src, schemas, names, n);
cleanup:
	free(schemas);
	free(names);
	policy_destroy(own);
	return rc;
}

/* Opens the output file and recovers the checkpoint (jsonl_file_open); sets *resume to its
 * LSN. */
static int output_open(tail *t, uint64_t *resume)
{
	const char *path = t->opt->output_path;
	size_t plen = strlen(path) + 5;
	t->pos_path = malloc(plen);
	if (t->pos_path == NULL)
		return -ENOMEM;
	snprintf(t->pos_path, plen, "%s.pos", path);
	char err[SINK_ERROR_MAX];
	int fd;
	int64_t size;
	uint64_t lsn;
	int rc = jsonl_file_open(path, t->pos_path, state_rows_read, t, &fd, &size, &lsn, err);
	if (rc < 0) {
		log_error("tail.output_open", "%s", err);
		return rc;
	}
	if (t->state_loaded) {
		log_info("tail.state_loaded", "policy state loaded from the checkpoint in %s", t->pos_path);
		viewer_membership_check(t);
	}
	t->pos_offset = size;
	*resume = lsn;
	t->written_end = t->durable_end = lsn;
	t->out = fdopen(fd, "a");
	if (t->out == NULL) {
		close(fd);
		return -errno;
	}
	t->out_fd = fd;
	t->offset = size;
	return 0;
}

int tail_run(const config *cfg, const tail_options *opt)
{
	tail t = {.opt = opt, .cfg = cfg, .exit_code = 0, .txn_offset = -1, .out_fd = -1};
	tail_options denied_opt; /* opt without the viewer's uid, for a token role that is denied */
	relcache *rels = NULL;
	uint64_t resume = 0;
	int rc;
	buf_init(&t.line);
	t.json = change_json_cache_create(); /* NULL (out of memory) only costs speed */
	signal(SIGPIPE, SIG_IGN);

	t.loop = loop_create();
	rels = relcache_create();
	if (t.loop == NULL || rels == NULL) {
		t.exit_code = 1;
		goto cleanup;
	}
	if (opt->viewer) {
		char err[POLICY_ERROR_MAX > PRIVACY_ERROR_MAX ? POLICY_ERROR_MAX : PRIVACY_ERROR_MAX];
		if (policy_load_file(opt->policy_path, &t.pol, err) < 0) {
			log_error("tail.policy", "%s", err);
			t.exit_code = 1;
			goto cleanup;
		}
		/* The token's role, as PostgreSQL would grant it: --as (no role) is a member. */
		policy_role_access access =
		    opt->viewer_role == NULL ? POLICY_ROLE_MEMBER
		                             : policy_role_kind(t.pol, opt->viewer_role, strlen(opt->viewer_role));
		t.bypass = access == POLICY_ROLE_BYPASS;
		if (access == POLICY_ROLE_DENIED) {
			log_info("tail.role_denied", "role=%s: the policy's [roles] names it neither a member nor "
			         "a bypass role: this token sees nothing",
			         opt->viewer_role[0] ? opt->viewer_role : "(none)");
			denied_opt = *opt;
			denied_opt.viewer_uid = NULL; /* its sub confers nothing */
			t.opt = &denied_opt;
		}
		char kerr[KEYRING_ERROR_MAX];
		rc = cfg->keys_file[0] ? keyring_load_file(cfg->keys_file, &t.keys, kerr)
		                       : keyring_load_env("WALCAST_KEYS", &t.keys, kerr);
		if (rc < 0 && !(rc == -ENOENT && !cfg->keys_file[0])) {
			log_error("tail.keys", "%s", kerr);
			t.exit_code = 1;
			goto cleanup;
		}
		if (privacy_create(t.pol, t.keys, &t.priv, err) < 0) {
			log_error("tail.privacy", "%s", err);
			t.exit_code = 1;
			goto cleanup;
		}
		if (privacy_set_txn_buffer(t.priv, (size_t)cfg->privacy_txn_memory,
		                           cfg->privacy_spill_dir[0] ? cfg->privacy_spill_dir : NULL) < 0) {
			log_error("tail.privacy", "%s", privacy_error(t.priv));
			t.exit_code = 1;
			goto cleanup;
		}
		/* A DELETE is judged from the old row's replica identity: refuse to start when a
		 * governed table's identity lacks a column its rules read (src/policy/replident.h). */
		if (!t.bypass && replident_check_conninfo(t.pol, cfg->conninfo) < 0) {
			t.exit_code = 1;
			goto cleanup;
		}
	}
	if (opt->output_path != NULL) {
		t.to_file = true;
		if (output_open(&t, &resume) < 0) {
			t.exit_code = 1;
			goto cleanup;
		}
	} else {
		t.out = stdout;
		t.out_fd = STDOUT_FILENO;
		t.interactive = isatty(STDOUT_FILENO);
	}
	static char outbuf[1 << 16];
	setvbuf(t.out, outbuf, _IOFBF, sizeof(outbuf));
	t.skip_before = resume;

	source_events ev = {
		.sink = {begin_cb, change_cb, commit_cb, &t},
		.abandon_cb = abandon_cb,
		.snapshot_cb = snapshot_cb,
		.streaming_cb = streaming_cb,
		.idle_cb = idle_cb,
		.failed_cb = failed_cb,
		.arg = &t,
	};
	char err[256];
	rc = source_create(t.loop, cfg, rels, &ev, &t.src, err);
	if (rc < 0) {
		log_error("tail.config", "%s", err);
		t.exit_code = 1;
		goto cleanup;
	}
	if (opt->create_publication && publication_from_policy(&t) < 0) {
		t.exit_code = 1;
		goto cleanup;
	}
	if (loop_signal(t.loop, SIGINT, signal_cb, &t) < 0 || loop_signal(t.loop, SIGTERM, signal_cb, &t) < 0) {
		t.exit_code = 1;
		goto cleanup;
	}
	int tid = loop_timer_add(t.loop, TAIL_FLUSH_MS, flush_timer_cb, &t);
	t.flush_timer = tid > 0 ? tid : 0;
	if (source_start(t.src, resume) == 0 && !t.done) {
		rc = loop_run(t.loop);
		if (rc < 0) {
			log_error("tail.loop", "event loop failed: %s", strerror(-rc));
			t.exit_code = 1;
		}
	}
	if (t.exit_code == 0)
		tail_checkpoint(&t);
	else if (t.to_file)
		tail_checkpoint(&t); /* keep what is complete even when failing */
	output_trim(&t);
	source_stop(t.src);
cleanup:
	source_destroy(t.src);
	if (t.out != NULL && t.out != stdout)
		fclose(t.out);
	else if (t.out == stdout)
		fflush(stdout);
	relcache_destroy(rels);
	privacy_destroy(t.priv);
	keyring_destroy(t.keys);
	policy_destroy(t.pol);
	loop_destroy(t.loop);
	buf_fini(&t.line);
	change_json_cache_destroy(t.json);
	free(t.pos_path);
	return t.exit_code;
}
