/*
 * jsonl — the durable JSON-lines sink (see jsonl.h for the guarantees).
 *
 * State: lines are appended to an in-memory buffer and written to FILE when it grows past
 * JSONL_WRITE_CHUNK or at a sync. Three offsets say where the bytes are:
 *
 *   pos_offset     FILE.pos's offset: durable, covered by the checkpoint (LSN durable_end)
 *   done_offset    end of the last complete transaction taken (LSN written_end)
 *   offset         end of everything taken, a transaction in progress included
 *
 * A sync writes the buffer, fdatasyncs FILE, records (done_offset, written_end) in FILE.pos and
 * moves durable_end; the pipeline then reads position(). A sync is due flush_interval after
 * the first complete transaction not yet durable (one timer), or at once past flush_bytes.
 *
 * A full file system (ENOSPC, EDQUOT) or a write that fails with EIO is transient trouble: the
 * bytes not written stay in the buffer, healthy() is false, and the sync is tried again after a
 * back-off (100 ms doubling to 5 s) — nothing else writes meanwhile; pending_bytes() keeps
 * counting what is owed, so the pipeline pauses the stream past pipeline.max_pending. An
 * fdatasync failure stays fatal: after one, Linux may have dropped the dirty pages and report a
 * later fdatasync as a success without them, so retrying could lose lines.
 */
#include "jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "lsn.h"
#include "policy.h"

#define JSONL_WRITE_CHUNK (64 * 1024) /* buffered bytes written to FILE without a sync */
#define JSONL_MAX_TABLES 64
#define JSONL_TYPE_CACHE 8 /* relations whose "columns" fragment is kept */
#define JSONL_RETRY_MIN_MS 100 /* the first retry after transient trouble, doubling */
#define JSONL_RETRY_MAX_MS 5000

#define KEY(nm, ty, field, def, lo, hi, hlp) \
	{"sink", nm, ty, offsetof(jsonl_conf, field), def, lo, hi, false, hlp}

static const config_key jsonl_keys[] = {
	KEY("path", CONFIG_STRING, path, "", 0, 0,
	    "the output file (FILE.pos beside it holds the checkpoint); \"-\" for stdout (at least once)"),
	KEY("as", CONFIG_STRING, as, "", 0, 0,
	    "write only what this user (uuid) may see; empty: every row unmasked (bypass)"),
	KEY("role", CONFIG_STRING, role, "", 0, 0,
	    "the viewer's token role ([roles] of the policy): a bypass role sees everything, a member "
	    "role is judged as `as`, any other role sees nothing; empty: member with `as`"),
	KEY("with_types", CONFIG_BOOL, with_types, "false", 0, 0,
	    "add the relation's column names and type OIDs to each row"),
	KEY("tables", CONFIG_STRING, tables, "", 0, 0,
	    "only these tables: comma-separated \"table\" or \"schema.table\"; empty: all"),
	KEY("actions", CONFIG_STRING, actions, "", 0, 0,
	    "only these actions: comma-separated insert,update,delete,truncate,message; empty: all"),
	KEY("flush_interval", CONFIG_DURATION, flush_interval_ms, "100ms", 1, 60000,
	    "a complete transaction is made durable (and confirmed) at most this long after it was taken"),
	KEY("flush_bytes", CONFIG_SIZE, flush_bytes, "1MB", 1, INT64_C(1) << 40,
	    "... or as soon as this many bytes are not durable"),
};

#define NKEYS (sizeof(jsonl_keys) / sizeof(jsonl_keys[0]))

/* The log id "<log_name>.<event>" of an instance's line (jsonl_conf.log_name). */
#define JID(j, ev) jsonl_log_id((j)->log_name, ev, (char[64]){0})
static const char *jsonl_log_id(const char *name, const char *ev, char out[64])
{
	snprintf(out, 64, "%s.%s", name, ev);
	return out;
}

typedef struct type_frag {
	uint64_t rel_id;
	uint32_t version;
	bool used;
	buf text; /* ,"columns":[...] */
} type_frag;

typedef struct jsonl {
	sink_env env;
	char *path;      /* NULL: stdout */
	char *pos_path;
	int fd;
	bool interactive;
	buf out;         /* taken, not yet written to fd */

	int64_t offset;
	int64_t txn_offset; /* where the transaction in progress began; -1: none */
	int64_t done_offset;
	int64_t pos_offset;
	uint64_t written_end;
	uint64_t durable_end;
	bool skipping;

	audience_sub *sub;
	unsigned actions;
	char *tables_text;
	const char *tables[JSONL_MAX_TABLES];
	size_t ntables;
	bool with_types;
	type_frag types[JSONL_TYPE_CACHE];
	size_t types_next;

	int64_t flush_interval_ms;
	int64_t flush_bytes;
	int timer;
	int err;         /* a failed write or sync: every later call returns it */
	int trouble;     /* transient trouble being retried (-ENOSPC...), 0 when writing works */
	int retry_timer;
	int64_t retry_ms;
	uint64_t lines;

	uint64_t max_changes, until_lsn; /* jsonl_conf's limits */
	void (*end_cb)(void *arg, int why);
	void *end_arg;
	bool limit_reached; /* max_changes lines written: the next line ends the run */
	bool ended;         /* a limit was reached: nothing more is taken */
	char log_name[24];  /* jsonl_conf.log_name */
	const bool *state_note; /* jsonl_conf.state_note */
	bool state_noted;   /* FILE.pos carries the note */
} jsonl;

void jsonl_conf_defaults(jsonl_conf *c, const char *path)
{
	*c = (jsonl_conf){
		.path = (char *)path,
		.as = (char *)"",
		.role = (char *)"",
		.tables = (char *)"",
		.actions = (char *)"",
		.flush_interval_ms = 100,
		.flush_bytes = 1024 * 1024,
	};
}

/* ---- the position file ---------------------------------------------------------------------- */

int jsonl_dir_sync(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}

int jsonl_pos_write(const char *pos_path, int64_t offset, uint64_t lsn, jsonl_pos_write_cb extra, void *arg)
{
	char tmp[4096];
	char text[LSN_TEXT_MAX];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", pos_path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(fd, "w");
	if (f == NULL) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	fprintf(f, "walcast-tail-position 1\noffset=%" PRId64 "\nlsn=%s\n", offset, lsn_format(lsn, text));
	if (extra != NULL) {
		int rc = extra(arg, f);
		if (rc < 0) {
			fclose(f);
			return rc;
		}
	}
	bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
	int rc = ok ? 0 : -errno;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, pos_path) != 0)
		rc = -errno;
	if (rc == 0)
		rc = jsonl_dir_sync(pos_path);
	return rc < 0 ? rc : 0;
}

int jsonl_file_open(const char *path, const char *pos_path, int *fd_out, int64_t *size_out, uint64_t *lsn_out,
                    char err[SINK_ERROR_MAX])
{
	int rc = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, SINK_ERROR_MAX, "output=%s: %s", path, strerror(errno));
		return rc;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		snprintf(err, SINK_ERROR_MAX, "output=%s: %s", path, strerror(errno));
		goto cleanup;
	}
	int64_t size = st.st_size;
	uint64_t lsn = 0;
	FILE *pf = fopen(pos_path, "r");
	if (pf == NULL && errno != ENOENT) {
		rc = -errno;
		snprintf(err, SINK_ERROR_MAX, "position file %s: %s", pos_path, strerror(errno));
		goto cleanup;
	}
	if (pf != NULL) {
		int64_t off = -1;
		char lsntext[64] = "";
		int n = fscanf(pf, "walcast-tail-position 1\noffset=%" SCNd64 "\nlsn=%63s\n", &off, lsntext);
		fclose(pf);
		if (n != 2 || off < 0 || lsn_parse(lsntext, strlen(lsntext), &lsn) < 0) {
			snprintf(err, SINK_ERROR_MAX, "position file %s is not a walcast position; remove it (and "
			         "the output) to start over", pos_path);
			rc = -EINVAL;
			goto cleanup;
		}
		if (off > size) {
			snprintf(err, SINK_ERROR_MAX, "output=%s is shorter (%" PRId64 " bytes) than its checkpoint "
			         "(%" PRId64 "); it was changed by something else", path, size, off);
			rc = -EINVAL;
			goto cleanup;
		}
		if (off < size) {
			if (ftruncate(fd, off) != 0) {
				rc = -errno;
				snprintf(err, SINK_ERROR_MAX, "output=%s: cannot cut back to its checkpoint: %s", path,
				         strerror(errno));
				goto cleanup;
			}
			log_info("jsonl.recovered", "output=%s cut from %" PRId64 " to checkpoint %" PRId64 " bytes",
			         path, size, off);
		}
		size = off;
	} else {
		/* No checkpoint yet: record one for what FILE holds now, before anything is written, so
		 * a crash before the first real checkpoint is cut back to here. */
		rc = jsonl_pos_write(pos_path, size, 0, NULL, NULL);
		if (rc < 0) {
			snprintf(err, SINK_ERROR_MAX, "position file %s: %s", pos_path, strerror(-rc));
			goto cleanup;
		}
	}
	*fd_out = fd;
	*size_out = size;
	*lsn_out = lsn;
	return 0;
cleanup:
	close(fd);
	return rc;
}

/* ---- writing ------------------------------------------------------------------------------- */

/* A limit was reached or the reader went away: nothing more is taken; the front end is told. */
static void jsonl_end(jsonl *j, int why)
{
	if (j->ended)
		return;
	j->ended = true;
	if (j->end_cb != NULL)
		j->end_cb(j->end_arg, why);
}

/* Sets the sticky error (the first one wins) and says it once. Returns err. */
static int jsonl_fail(jsonl *j, int err, const char *what)
{
	if (j->err == 0) {
		j->err = err;
		if (err == -EPIPE) {
			log_info(JID(j, "reader_gone"), "sink=%s output=stdout: the reader went away", j->env.name);
			jsonl_end(j, JSONL_END_READER_GONE);
		} else {
			log_error(JID(j, "write_failed"), "sink=%s output=%s: %s: %s", j->env.name,
			          j->path ? j->path : "stdout", what, strerror(-err));
		}
	}
	return j->err;
}

static bool write_transient(int err)
{
	return err == -ENOSPC || err == -EDQUOT || err == -EIO;
}

static int jsonl_sync(jsonl *j);

static void retry_cb(loop *l, int id, void *arg)
{
	jsonl *j = arg;
	(void)l, (void)id;
	j->retry_timer = 0;
	(void)jsonl_sync(j); /* trouble again: retried later; anything else is sticky */
}

/* A write or checkpoint failed with err: transient trouble (see the top of this file) is kept
 * and retried later (0); anything else is the sticky error. */
static int jsonl_stall(jsonl *j, int err, const char *what)
{
	if (j->path == NULL || !write_transient(err) || j->env.loop == NULL)
		return jsonl_fail(j, err, what);
	if (j->trouble == 0) {
		log_warn(JID(j, "write_stalled"), "sink=%s output=%s: %s: %s: keeping %" PRId64 " bytes in memory and "
		         "retrying; the stream pauses past pipeline.max_pending", j->env.name, j->path, what,
		         strerror(-err), j->offset - j->pos_offset);
		j->retry_ms = JSONL_RETRY_MIN_MS;
	} else if ((j->retry_ms *= 2) > JSONL_RETRY_MAX_MS) {
		j->retry_ms = JSONL_RETRY_MAX_MS;
	}
	j->trouble = err;
	if (j->retry_timer == 0) {
		int id = loop_timer_add(j->env.loop, j->retry_ms, retry_cb, j);
		if (id < 0)
			return jsonl_fail(j, err, what);
		j->retry_timer = id;
	}
	return 0;
}

/* A sync went through: trouble, if any, is over. */
static void jsonl_recovered(jsonl *j)
{
	if (j->trouble == 0)
		return;
	log_info(JID(j, "write_resumed"), "sink=%s output=%s: writing again (%" PRId64 " bytes not durable)",
	         j->env.name, j->path, j->offset - j->pos_offset);
	j->trouble = 0;
}

/* Writes the buffer out. 0 or a negative errno. Blocks (a write). */
static int out_write(jsonl *j)
{
	size_t done = 0;
	while (done < j->out.len) {
		ssize_t n = write(j->fd, j->out.data + done, j->out.len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int rc = -errno;
			/* Keep what was not written: the bytes stay accounted in offset. */
			memmove(j->out.data, j->out.data + done, j->out.len - done);
			j->out.len -= done;
			return rc;
		}
		done += (size_t)n;
	}
	buf_clear(&j->out);
	return 0;
}

/* jsonl_conf.state_note's line in FILE.pos. */
static int state_note_write(void *arg, FILE *f)
{
	(void)arg;
	return fputs("state=1\n", f) < 0 ? -EIO : 0;
}

/* Makes every complete transaction taken durable and records the checkpoint. 0 or the sticky
 * error. Blocks (write, fdatasync, FILE.pos). */
static int jsonl_sync(jsonl *j)
{
	if (j->err != 0)
		return j->err;
	int rc = out_write(j);
	if (rc < 0)
		return jsonl_stall(j, rc, "write");
	bool note = j->path != NULL && j->state_note != NULL && *j->state_note;
	if (j->written_end <= j->durable_end && j->done_offset == j->pos_offset && note == j->state_noted) {
		jsonl_recovered(j);
		return 0;
	}
	if (j->path != NULL) {
		if (fdatasync(j->fd) != 0)
			return jsonl_fail(j, -errno, "fdatasync");
		rc = jsonl_pos_write(j->pos_path, j->done_offset, j->written_end, note ? state_note_write : NULL, NULL);
		if (rc < 0)
			return jsonl_stall(j, rc, "checkpoint");
	}
	jsonl_recovered(j);
	j->pos_offset = j->done_offset;
	j->state_noted = note;
	bool moved = j->written_end > j->durable_end;
	j->durable_end = j->written_end;
	if (moved && j->env.progress != NULL)
		j->env.progress(j->env.env_arg);
	return 0;
}

static void timer_cb(loop *l, int id, void *arg)
{
	jsonl *j = arg;
	j->timer = 0;
	(void)jsonl_sync(j); /* a failure is sticky: the next callback returns it, healthy() says so */
}

/* A transaction (or message) is complete: sync now (terminal, flush_bytes), or within
 * flush_interval. */
static int jsonl_complete(jsonl *j, uint64_t end_lsn)
{
	if (end_lsn > j->written_end)
		j->written_end = end_lsn;
	j->done_offset = j->offset;
	j->txn_offset = -1;
	if (j->trouble != 0)
		return 0; /* the retry timer syncs everything */
	if (j->interactive || j->offset - j->pos_offset >= j->flush_bytes || j->env.loop == NULL)
		return jsonl_sync(j);
	if (j->timer == 0 && j->written_end > j->durable_end) {
		int id = loop_timer_add(j->env.loop, j->flush_interval_ms, timer_cb, j);
		if (id < 0)
			return jsonl_sync(j);
		j->timer = id;
	}
	return 0;
}

/* ---- filters and types ------------------------------------------------------------------------ */

static bool table_wanted(const jsonl *j, const relation *rel)
{
	for (size_t i = 0; i < j->ntables; i++) {
		const char *want = j->tables[i];
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

static bool change_wanted(const jsonl *j, const change *c)
{
	if (j->actions != 0 && !(j->actions & (1u << c->action)))
		return false;
	if (j->ntables == 0)
		return true;
	return c->rel != NULL && table_wanted(j, c->rel);
}

/* The ,"columns":[...] fragment of rel, built once per relation version. NULL on ENOMEM. */
static const buf *type_fragment(jsonl *j, const relation *rel)
{
	for (size_t i = 0; i < JSONL_TYPE_CACHE; i++) {
		type_frag *t = &j->types[i];
		if (t->used && t->rel_id == rel->id && t->version == rel->version)
			return &t->text;
	}
	type_frag *t = &j->types[j->types_next];
	j->types_next = (j->types_next + 1) % JSONL_TYPE_CACHE;
	buf_clear(&t->text);
	t->used = false;
	int rc = buf_puts(&t->text, ",\"columns\":[");
	for (int i = 0; rc == 0 && i < rel->ncols; i++) {
		rc = buf_puts(&t->text, i ? ",{\"name\":" : "{\"name\":");
		if (rc == 0)
			rc = buf_json_string(&t->text, rel->cols[i].name, strlen(rel->cols[i].name));
		if (rc == 0)
			rc = buf_printf(&t->text, ",\"type\":%u}", rel->cols[i].type_oid);
	}
	if (rc == 0)
		rc = buf_putc(&t->text, ']');
	if (rc < 0)
		return NULL;
	t->rel_id = rel->id;
	t->version = rel->version;
	t->used = true;
	return &t->text;
}

/* Where change_json_write puts the columns: right after the "table" member's string. 0 when
 * the payload has none (a message). */
static size_t types_at(const char *p, size_t len)
{
	static const char key[] = ",\"table\":\"";
	const char *k = memmem(p, len, key, sizeof(key) - 1);
	if (k == NULL)
		return 0;
	/* An unescaped ,"table": cannot occur inside a JSON string, so the first one is the key. */
	size_t i = (size_t)(k - p) + sizeof(key) - 1;
	while (i < len && p[i] != '"')
		i += p[i] == '\\' ? 2 : 1;
	return i < len ? i + 1 : 0;
}

/* ---- sink_ops ------------------------------------------------------------------------------ */

/* An item of a comma-separated list without the blanks around it ("a, b" is "a" and "b"). */
static char *list_item(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

static int filters_parse(jsonl *j, const jsonl_conf *c, char err[SINK_ERROR_MAX])
{
	const char *acts = c->actions ? c->actions : "";
	if (acts[0] != '\0') {
		size_t n = strlen(acts);
		if (acts[0] == ',' || acts[n - 1] == ',' || strstr(acts, ",,") != NULL) {
			snprintf(err, SINK_ERROR_MAX, "actions: '%s' has an empty action (insert, update, delete, "
			         "truncate, message, separated by commas)", acts);
			return -EINVAL;
		}
		char *copy = strdup(acts);
		if (copy == NULL)
			return -ENOMEM;
		char *save = NULL;
		int rc = 0;
		for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
			change_action a;
			tok = list_item(tok);
			if (change_action_parse(tok, &a) < 0) {
				snprintf(err, SINK_ERROR_MAX, "actions: unknown action '%s' (insert, update, delete, "
				         "truncate, message)", tok);
				rc = -EINVAL;
				break;
			}
			j->actions |= 1u << a;
		}
		free(copy);
		if (rc < 0)
			return rc;
	}
	const char *tabs = c->tables ? c->tables : "";
	if (tabs[0] == '\0')
		return 0;
	j->tables_text = strdup(tabs);
	if (j->tables_text == NULL)
		return -ENOMEM;
	char *p = j->tables_text;
	for (;;) {
		char *comma = strchr(p, ',');
		if (comma != NULL)
			*comma = '\0';
		char *next = comma != NULL ? comma + 1 : NULL;
		p = list_item(p);
		const char *dot = strchr(p, '.');
		if (p[0] == '\0' || strpbrk(p, " \t") != NULL || dot == p || (dot != NULL && (dot[1] == '\0' || strchr(dot + 1, '.') != NULL))) {
			snprintf(err, SINK_ERROR_MAX, "tables: '%s' is not a table name (\"table\" or \"schema.table\", "
			         "separated by commas)", tabs);
			return -EINVAL;
		}
		if (j->ntables == JSONL_MAX_TABLES) {
			snprintf(err, SINK_ERROR_MAX, "tables: at most %d tables", JSONL_MAX_TABLES);
			return -EINVAL;
		}
		j->tables[j->ntables++] = p;
		if (next == NULL)
			break;
		p = next;
	}
	return 0;
}

/* The subscriber: bypass (everyone), the user, or nobody (a denied role). */
static int viewer_subscribe(jsonl *j, const jsonl_conf *c, char err[SINK_ERROR_MAX])
{
	const char *as = c->as ? c->as : "";
	const char *role = c->role ? c->role : "";
	char uid[POLICY_UUID_TEXT_LEN + 1];
	if (as[0] != '\0' && policy_uuid_canonical(as, strlen(as), uid) < 0) {
		snprintf(err, SINK_ERROR_MAX, "as: '%s' is not a user id (uuid)", as);
		return -EINVAL;
	}
	bool bypass;
	const char *viewer = as[0] != '\0' ? uid : NULL;
	if (as[0] == '\0' && role[0] == '\0') {
		bypass = true; /* everyone: every row, unmasked */
	} else if (j->env.pol == NULL) {
		snprintf(err, SINK_ERROR_MAX, "%s needs a policy (the pipeline has no policy stage)",
		         as[0] != '\0' ? "as" : "role");
		return -EINVAL;
	} else {
		/* As PostgreSQL would grant the token's role; `as` alone is a member. */
		policy_role_access access = role[0] == '\0' ? POLICY_ROLE_MEMBER
		                                            : policy_role_kind(j->env.pol, role, strlen(role));
		bypass = access == POLICY_ROLE_BYPASS;
		if (access == POLICY_ROLE_DENIED) {
			log_info(JID(j, "role_denied"), "sink=%s role=%s: the policy's [roles] names it neither a member "
			         "nor a bypass role: this feed sees nothing", j->env.name, role);
			viewer = NULL; /* its uid confers nothing */
		}
	}
	if (j->env.subscribe == NULL) {
		snprintf(err, SINK_ERROR_MAX, "no audience to subscribe to");
		return -EINVAL;
	}
	int rc = j->env.subscribe(j->env.env_arg, j, viewer, bypass, false, &j->sub);
	if (rc < 0)
		snprintf(err, SINK_ERROR_MAX, "cannot subscribe: %s", strerror(-rc));
	return rc;
}

static void jsonl_destroy(void *impl);

static int jsonl_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	const jsonl_conf *c = conf;
	jsonl *j = calloc(1, sizeof(*j));
	int rc = -ENOMEM;
	err[0] = '\0';
	if (j == NULL) {
		snprintf(err, SINK_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	j->env = *env;
	j->fd = -1;
	j->txn_offset = -1;
	buf_init(&j->out);
	for (size_t i = 0; i < JSONL_TYPE_CACHE; i++)
		buf_init(&j->types[i].text);
	j->with_types = c->with_types;
	j->max_changes = c->max_changes;
	j->until_lsn = c->until_lsn;
	j->end_cb = c->end_cb;
	j->end_arg = c->end_arg;
	j->state_note = c->state_note;
	snprintf(j->log_name, sizeof(j->log_name), "%s", c->log_name && c->log_name[0] ? c->log_name : "jsonl");
	j->flush_interval_ms = c->flush_interval_ms > 0 ? c->flush_interval_ms : 100;
	j->flush_bytes = c->flush_bytes > 0 ? c->flush_bytes : 1024 * 1024;
	if (c->path == NULL || c->path[0] == '\0') {
		snprintf(err, SINK_ERROR_MAX, "path: required (a file, or \"-\" for stdout)");
		rc = -EINVAL;
		goto fail;
	}
	rc = filters_parse(j, c, err);
	if (rc < 0)
		goto fail;
	if (strcmp(c->path, "-") == 0) {
		j->fd = STDOUT_FILENO;
		j->interactive = isatty(STDOUT_FILENO);
	} else {
		j->path = strdup(c->path);
		size_t plen = strlen(c->path) + 5;
		j->pos_path = malloc(plen);
		if (j->path == NULL || j->pos_path == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		snprintf(j->pos_path, plen, "%s.pos", c->path);
		rc = jsonl_file_open(j->path, j->pos_path, &j->fd, &j->offset, &j->durable_end, err);
		if (rc < 0)
			goto fail;
		j->written_end = j->durable_end;
		j->done_offset = j->pos_offset = j->offset;
	}
	rc = viewer_subscribe(j, c, err);
	if (rc < 0)
		goto fail;
	*out = j;
	return 0;
fail:
	if (rc == -ENOMEM && err[0] == '\0')
		snprintf(err, SINK_ERROR_MAX, "out of memory");
	jsonl_destroy(j);
	return rc;
}

static void jsonl_destroy(void *impl)
{
	jsonl *j = impl;
	if (j == NULL)
		return;
	if (j->timer > 0 && j->env.loop != NULL)
		loop_timer_cancel(j->env.loop, j->timer);
	if (j->retry_timer > 0 && j->env.loop != NULL)
		loop_timer_cancel(j->env.loop, j->retry_timer);
	j->env.loop = NULL; /* the last sync below: trouble now is a failure, not retried */
	if (j->fd >= 0) {
		/* Keep what is complete, then leave FILE ending exactly at its checkpoint, so a reader
		 * never sees lines that the next start would cut. */
		(void)jsonl_sync(j);
		if (j->path != NULL) {
			buf_clear(&j->out);
			if (j->offset > j->pos_offset) {
				if (ftruncate(j->fd, j->pos_offset) != 0)
					log_error(JID(j, "truncate_failed"), "sink=%s output=%s: %s", j->env.name, j->path,
					          strerror(errno));
				else
					log_info(JID(j, "trimmed"), "sink=%s output=%s cut back to its checkpoint, offset %" PRId64
					         " (%" PRId64 " bytes past the checkpoint will be written again by the next run)",
					         j->env.name, j->path, j->pos_offset, j->offset - j->pos_offset);
			}
			close(j->fd);
		}
	}
	if (j->sub != NULL && j->env.unsubscribe != NULL)
		j->env.unsubscribe(j->env.env_arg, j->sub);
	buf_fini(&j->out);
	for (size_t i = 0; i < JSONL_TYPE_CACHE; i++)
		buf_fini(&j->types[i].text);
	free(j->tables_text);
	free(j->pos_path);
	free(j->path);
	free(j);
}

static uint64_t jsonl_position(void *impl)
{
	return ((jsonl *)impl)->durable_end;
}

static int jsonl_begin(void *impl, const change_txn *txn)
{
	jsonl *j = impl;
	if (j->err != 0)
		return j->err;
	if (j->ended)
		return 0;
	/* Offered again (a restart or reconnect resumes at the lowest position of all sinks): its
	 * lines are already in FILE. */
	j->skipping = txn->commit_lsn < j->written_end;
	j->txn_offset = j->offset;
	return 0;
}

static int jsonl_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	jsonl *j = impl;
	const change *c = d->view;
	if (j->err != 0)
		return j->err;
	if (j->ended || (c->txn == NULL ? c->lsn <= j->written_end : j->skipping))
		return 0;
	if (change_wanted(j, c)) {
		if (j->limit_reached) {
			/* More of the transaction than the limit allows: it is not kept (cut at stop,
			 * written whole by the next run). */
			jsonl_end(j, JSONL_END_LIMIT);
			return 0;
		}
		size_t len;
		const char *p = audience_payload_data(d->payload, &len);
		size_t at = j->with_types && c->rel != NULL ? types_at(p, len) : 0;
		size_t before = j->out.len;
		int rc;
		if (at > 0) {
			const buf *frag = type_fragment(j, c->rel);
			rc = frag == NULL ? -ENOMEM : buf_append(&j->out, p, at);
			if (rc == 0)
				rc = buf_append(&j->out, frag->data, frag->len);
			if (rc == 0)
				rc = buf_append(&j->out, p + at, len - at);
		} else {
			rc = buf_append(&j->out, p, len);
		}
		if (rc == 0)
			rc = buf_putc(&j->out, '\n');
		if (rc < 0) {
			j->out.len = before;
			return jsonl_fail(j, rc, "buffer");
		}
		j->offset += (int64_t)(j->out.len - before);
		j->lines++;
		if (j->max_changes != 0 && j->lines >= j->max_changes)
			j->limit_reached = true;
		if (j->trouble == 0 && j->out.len >= JSONL_WRITE_CHUNK && (rc = out_write(j)) < 0)
			return jsonl_stall(j, rc, "write");
	}
	if (c->txn != NULL)
		return 0;
	/* A non-transactional message is complete on its own; its lsn is the end of its record. */
	int rc = jsonl_complete(j, c->lsn);
	if (rc == 0 && j->limit_reached)
		jsonl_end(j, JSONL_END_LIMIT);
	return rc;
}

static int jsonl_commit(void *impl, const change_txn *txn)
{
	jsonl *j = impl;
	if (j->err != 0)
		return j->err;
	if (j->ended)
		return 0;
	if (j->skipping) {
		j->skipping = false;
		j->txn_offset = -1;
		return 0;
	}
	int rc = jsonl_complete(j, txn->end_lsn);
	if (rc == 0 && (j->limit_reached || (j->until_lsn != 0 && txn->end_lsn >= j->until_lsn)))
		jsonl_end(j, JSONL_END_LIMIT);
	return rc;
}

static void jsonl_abort(void *impl)
{
	jsonl *j = impl;
	j->skipping = false;
	if (j->txn_offset < 0 || j->offset == j->txn_offset) {
		j->txn_offset = -1;
		return;
	}
	int64_t cut = j->offset - j->txn_offset;
	if (j->path == NULL) {
		/* stdout cannot take back what it printed; what is still buffered it can. */
		if ((size_t)cut <= j->out.len)
			j->out.len -= (size_t)cut;
		j->offset = j->txn_offset;
	} else if ((size_t)cut <= j->out.len) {
		j->out.len -= (size_t)cut;
		j->offset = j->txn_offset;
	} else {
		/* all that is buffered belongs to the transaction (no need to write it, which a full
		 * disk could refuse): drop it and cut FILE back */
		buf_clear(&j->out);
		if (ftruncate(j->fd, j->txn_offset) != 0) {
			(void)jsonl_fail(j, -errno, "cut back a transaction");
			return;
		}
		j->offset = j->txn_offset;
	}
	log_info(JID(j, "abandoned"), "sink=%s output=%s cut back to offset %" PRId64 " (transaction will be resent)",
	         j->env.name, j->path ? j->path : "stdout", j->offset);
	j->txn_offset = -1;
}

static size_t jsonl_pending_bytes(void *impl)
{
	const jsonl *j = impl;
	/* once ended, the lines of a transaction cut off by the limit are never made durable */
	return (size_t)((j->ended ? j->done_offset : j->offset) - j->pos_offset);
}

static bool jsonl_healthy(void *impl)
{
	const jsonl *j = impl;
	return j->err == 0 && j->trouble == 0;
}

static int jsonl_flush(void *impl)
{
	jsonl *j = impl;
	if (j->timer > 0 && j->env.loop != NULL) {
		loop_timer_cancel(j->env.loop, j->timer);
		j->timer = 0;
	}
	if (j->trouble != 0)
		return 0; /* the retry timer is on it (a drain waits for it, within its timeout) */
	return jsonl_sync(j);
}

const sink_ops jsonl_sink_ops = {
	.name = "jsonl",
	.kind = SINK_DURABLE,
	.keys = jsonl_keys,
	.nkeys = NKEYS,
	.conf_size = sizeof(jsonl_conf),
	.create = jsonl_create,
	.destroy = jsonl_destroy,
	.position = jsonl_position,
	.begin = jsonl_begin,
	.deliver = jsonl_deliver,
	.commit = jsonl_commit,
	.abort = jsonl_abort,
	.pending_bytes = jsonl_pending_bytes,
	.healthy = jsonl_healthy,
	.flush = jsonl_flush,
};
