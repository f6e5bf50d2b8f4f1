/*
 * config — the key table and its loaders (defaults, libinih file, environment, overrides), the
 * raw sections of plugin instances ([sink.NAME]) and the comparison behind a reload.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

extern char **environ;

#define KEY(sec, nm, ty, field, def, lo, hi, rel, hlp) \
	{sec, nm, ty, offsetof(config, field), def, lo, hi, rel, hlp}

static const config_key keys[] = {
	KEY("postgres", "conninfo", CONFIG_STRING, conninfo, "", 0, 0, false,
	    "libpq connection string; empty uses the PG* environment variables"),
	KEY("replication", "slot", CONFIG_STRING, slot, "walcast", 1, 63, false,
	    "logical replication slot name"),
	KEY("replication", "plugin", CONFIG_STRING, plugin, "pgoutput", 1, 63, false,
	    "output plugin: pgoutput or wal2json"),
	KEY("replication", "publication", CONFIG_STRING, publication, "walcast", 1, 63, false,
	    "publication read through pgoutput"),
	KEY("replication", "create_slot", CONFIG_BOOL, create_slot, "true", 0, 1, false,
	    "create the slot (and the publication) when missing"),
	KEY("replication", "temporary_slot", CONFIG_BOOL, temporary_slot, "false", 0, 1, false,
	    "use a temporary slot that disappears with the connection"),
	KEY("replication", "status_interval", CONFIG_DURATION, status_interval_ms, "10s", 100,
	    3600000, true, "how often to send a standby status update"),
	KEY("replication", "heartbeat_interval", CONFIG_DURATION, heartbeat_interval_ms, "0", 0,
	    86400000, true, "emit a logical heartbeat message this often (0 = off)"),
	KEY("replication", "reconnect_min", CONFIG_DURATION, reconnect_min_ms, "500ms", 10,
	    600000, true, "first reconnect delay"),
	KEY("replication", "reconnect_max", CONFIG_DURATION, reconnect_max_ms, "30s", 10, 3600000,
	    true, "longest reconnect delay"),
	KEY("replication", "standby_poll", CONFIG_DURATION, standby_poll_ms, "1s", 0, 60000, false,
	    "walcast run: while another process streams from the slot, wait as a standby and look "
	    "this often whether it is free (0 = no standby: a slot in use is an error)"),
	KEY("edge", "enabled", CONFIG_BOOL, edge_enabled, "false", 0, 1, false,
	    "walcast run as an edge: no slot, no checkpoint written; the policy state from the shared "
	    "checkpoint (pipeline.checkpoint_store = postgres), the changes from the stream (docs/edges.md)"),
	KEY("edge", "stream_url", CONFIG_STRING, edge_stream_url, "", 0, 0, false,
	    "an edge: the Redis holding the change stream it reads instead of a slot, "
	    "redis://[[user]:password@]host[:port][/db] or redis+sentinel://SENTINEL[,...]/MASTER[/db] (docs/edges.md)"),
	KEY("edge", "stream_key", CONFIG_STRING, edge_stream_key, "walcast:changes", 1, 0, false,
	    "an edge: the stream's key (the redis_stream sink's key)"),
	KEY("edge", "read_count", CONFIG_INT, edge_read_count, "5000", 1, 100000, false,
	    "an edge: entries one read of the stream (XRANGE, XREAD) asks for"),
	KEY("edge", "replay_from_stream", CONFIG_BOOL, edge_replay_from_stream, "true", 0, 1, false,
	    "an edge: start in the stream's window, not at the active instance's confirmed position, so "
	    "that the realtime replay buffer reaches back as far as the stream (any edge resumes any client)"),
	KEY("keys", "file", CONFIG_STRING, keys_file, "", 0, 0, false,
	    "field-encryption key file (ID HEX64 per line, mode 0600); empty: WALCAST_KEYS"),
	KEY("auth", "jwt_secret", CONFIG_STRING, jwt_secret, "", 0, 0, true,
	    "HS256 secret that signs subscriber JWTs (Supabase: the project's JWT secret)"),
	KEY("auth", "jwks_file", CONFIG_STRING, jwks_file, "", 0, 0, false,
	    "JSON Web Key Set file with the RS256/ES256 public keys that sign subscriber JWTs"),
	KEY("auth", "jwt_audience", CONFIG_STRING, jwt_audience, "authenticated", 0, 0, true,
	    "a token's aud claim, when present, must include this; empty: aud not checked"),
	KEY("auth", "jwt_require_exp", CONFIG_BOOL, jwt_require_exp, "true", 0, 1, true,
	    "refuse tokens without an exp claim"),
	KEY("auth", "jwt_leeway", CONFIG_DURATION, jwt_leeway_ms, "30s", 0, 300000, true,
	    "clock skew allowed when checking a token's exp and nbf"),
	KEY("redis", "url", CONFIG_STRING, redis_url, "redis://127.0.0.1:6379/0", 0, 0, false,
	    "redis:// URL for aggregates"),
	KEY("log", "level", CONFIG_ENUM, log_level, "info", 0, 0, true,
	    "debug|info|warn|error: the lowest level written"),
	KEY("log", "format", CONFIG_ENUM, log_format, "text", 0, 0, true,
	    "text|json: one line per event, or one JSON object per line"),
	KEY("privacy", "txn_memory", CONFIG_SIZE, privacy_txn_memory, "16MB", 4096, INT64_C(1) << 40, false,
	    "memory that may hold one transaction until its commit; the rest spills to spill_dir"),
	KEY("privacy", "spill_dir", CONFIG_STRING, privacy_spill_dir, "", 0, 0, false,
	    "directory for the spill files of large transactions; empty: $TMPDIR, else /tmp"),
	KEY("pipeline", "max_pending", CONFIG_SIZE, pipeline_max_pending, "64MB", 4096, INT64_C(1) << 40, true,
	    "bytes durable sinks may hold undelivered before reading the stream pauses (resumes below half)"),
	KEY("pipeline", "drain_timeout", CONFIG_DURATION, pipeline_drain_timeout_ms, "20s", 100, 3600000, true,
	    "on SIGTERM, how long durable sinks may take to flush before walcast exits anyway"),
	KEY("pipeline", "state_dir", CONFIG_STRING, pipeline_state_dir, "walcast-state", 1, 0, false,
	    "directory of the policy-state checkpoint and positions (walcast run)"),
	KEY("pipeline", "checkpoint_store", CONFIG_ENUM, pipeline_checkpoint_store, "dir", 0, 0, false,
	    "dir|postgres: where walcast run keeps the policy-state checkpoint and positions (postgres: "
	    "tables a standby on another host reads)"),
	KEY("pipeline", "checkpoint_conninfo", CONFIG_STRING, pipeline_checkpoint_conninfo, "", 0, 0, false,
	    "checkpoint_store = postgres: libpq connection string of its tables; empty: postgres.conninfo"),
	KEY("pipeline", "checkpoint_schema", CONFIG_STRING, pipeline_checkpoint_schema, "walcast", 1, 63, false,
	    "checkpoint_store = postgres: walcast's own schema for its tables (created on first use)"),
	KEY("http", "listen", CONFIG_STRING, http_listen, "127.0.0.1:8080", 1, 300, false,
	    "address of /healthz, /readyz and /metrics: HOST:PORT, [IPV6]:PORT or *:PORT"),
	KEY("http", "tls_cert", CONFIG_STRING, http_tls_cert, "", 0, 0, false,
	    "PEM certificate chain for HTTPS (with tls_key); empty: plain HTTP"),
	KEY("http", "tls_key", CONFIG_STRING, http_tls_key, "", 0, 0, false,
	    "PEM private key of tls_cert"),
	KEY("http", "static_dir", CONFIG_STRING, http_static_dir, "", 0, 0, false,
	    "directory whose files the listener serves (GET /FILE, \"/\" is index.html); empty: none"),
	KEY("http", "slot_status_interval", CONFIG_DURATION, http_slot_status_interval_ms, "15s", 0,
	    3600000, false, "how often /metrics' slot wal_status and safe_wal_size are queried (0 = off)"),
	KEY("audit", "enabled", CONFIG_BOOL, audit_enabled, "false", 0, 1, false,
	    "walcast run writes audit_log rows (joins, leaves, API reads) and sync_health rows"),
	KEY("audit", "conninfo", CONFIG_STRING, audit_conninfo, "", 0, 0, false,
	    "libpq connection string of the audit writer; empty: postgres.conninfo"),
	KEY("audit", "flush_interval", CONFIG_DURATION, audit_flush_interval_ms, "500ms", 1, 600000, false,
	    "longest an audit record waits before its batch is written"),
	KEY("audit", "batch_size", CONFIG_INT, audit_batch_size, "500", 1, 10000, false,
	    "audit records per INSERT; a full batch is written at once"),
	KEY("audit", "queue_max", CONFIG_INT, audit_queue_max, "100000", 1, 10000000, false,
	    "audit records held while PostgreSQL is slow or away; past this they are dropped and counted"),
	KEY("audit", "drain_timeout", CONFIG_DURATION, audit_drain_timeout_ms, "5s", 0, 3600000, false,
	    "at shutdown, how long the audit writer may take to write what is queued"),
	KEY("audit", "sync_health_interval", CONFIG_DURATION, audit_sync_health_interval_ms, "60s", 0, 86400000,
	    false, "write one sync_health row per org this often (0 = off)"),
	KEY("audit", "lagging_after", CONFIG_DURATION, audit_lagging_after_ms, "30s", 0, 86400000, false,
	    "sync_health status is 'lagging' when the stream is further behind than this"),
};

const config_key *config_keys(size_t *count)
{
	*count = sizeof(keys) / sizeof(keys[0]);
	return keys;
}

static const config_key *key_find(const char *section, const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static int parse_int(const char *v, int64_t *out)
{
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0')
		return -EINVAL;
	*out = n;
	return 0;
}

static int parse_duration(const char *v, int64_t *out)
{
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno != 0 || end == v || n < 0)
		return -EINVAL;
	int64_t mult;
	if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mult = 60000;
	else if (strcmp(end, "h") == 0)
		mult = 3600000;
	else
		return -EINVAL;
	if (n > INT64_MAX / mult)
		return -EINVAL;
	*out = n * mult;
	return 0;
}

/* Bytes: a number with an optional unit B, kB, MB or GB (powers of 1024). */
static int parse_size(const char *v, int64_t *out)
{
	static const struct { const char *unit; int64_t mult; } units[] = {
		{"", 1}, {"B", 1}, {"kB", 1024}, {"KB", 1024}, {"MB", 1 << 20}, {"GB", 1 << 30},
	};
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno != 0 || end == v || n < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (n > INT64_MAX / units[i].mult)
				return -EINVAL;
			*out = n * units[i].mult;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"true", "on", "yes", "1"};
	static const char *const no[] = {"false", "off", "no", "0"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* The length of a CONFIG_ENUM key's list of values: its help up to the first ':'. */
static size_t choices_len(const config_key *k)
{
	return k->help != NULL ? strcspn(k->help, ":") : 0;
}

/* Is value one of the '|'-separated values of k's help ("a|b|c: ...")? */
static bool choice_ok(const config_key *k, const char *value)
{
	size_t n = strlen(value), total = choices_len(k);
	for (size_t i = 0; i < total;) {
		size_t len = strcspn(k->help + i, "|:");
		if (len == n && n > 0 && strncmp(k->help + i, value, n) == 0)
			return true;
		i += len + 1;
	}
	return false;
}

/* Parses value into k's field of the struct at base. label is the section as the operator wrote
 * it ("replication", "sink.feed"); err says "label.name: why". Nothing changes on error. */
static int key_apply(void *base, const config_key *k, const char *label, const char *value,
                     char err[CONFIG_ERROR_MAX])
{
	void *field = (char *)base + k->offset;
	switch (k->type) {
	case CONFIG_STRING:
	case CONFIG_ENUM: {
		size_t len = strlen(value);
		if (k->type == CONFIG_STRING && k->max > 0 && ((int64_t)len < k->min || (int64_t)len > k->max)) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s must be %" PRId64 " to %" PRId64 " characters long",
			         label, k->name, k->min, k->max);
			return -EINVAL;
		}
		if (k->type == CONFIG_ENUM && !choice_ok(k, value)) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s: '%s' is not one of %.*s", label, k->name, value,
			         (int)choices_len(k), k->help != NULL ? k->help : "");
			return -EINVAL;
		}
		char *copy = strdup(value);
		if (copy == NULL)
			return -ENOMEM;
		free(*(char **)field);
		*(char **)field = copy;
		return 0;
	}
	case CONFIG_BOOL:
		if (parse_bool(value, (bool *)field) < 0) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s: '%s' is not a boolean (true/false)",
			         label, k->name, value);
			return -EINVAL;
		}
		return 0;
	case CONFIG_INT:
	case CONFIG_SIZE:
	case CONFIG_DURATION: {
		int64_t n;
		int rc = k->type == CONFIG_INT    ? parse_int(value, &n)
		         : k->type == CONFIG_SIZE ? parse_size(value, &n)
		                                  : parse_duration(value, &n);
		if (rc < 0) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s: '%s' is not %s", label, k->name, value,
			         k->type == CONFIG_INT    ? "an integer"
			         : k->type == CONFIG_SIZE ? "a size (e.g. 4096, 512kB, 16MB, 1GB)"
			                                  : "a duration (e.g. 500ms, 10s, 5m)");
			return -EINVAL;
		}
		if ((n < k->min || n > k->max) && !(k->type == CONFIG_DURATION && n == 0 && k->min == 0)) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s: %s is out of range (%" PRId64 "%s to %" PRId64 "%s)",
			         label, k->name, value, k->min, k->type == CONFIG_DURATION ? "ms" : "",
			         k->max, k->type == CONFIG_DURATION ? "ms" : "");
			return -EINVAL;
		}
		*(int64_t *)field = n;
		return 0;
	}
	}
	return -EINVAL;
}

/* Frees the strings of table keys in the struct at base. */
static void keys_free(const config_key *k, size_t n, void *base)
{
	for (size_t i = 0; i < n; i++) {
		if (k[i].type != CONFIG_STRING && k[i].type != CONFIG_ENUM)
			continue;
		char **field = (char **)((char *)base + k[i].offset);
		free(*field);
		*field = NULL;
	}
}

/* Do two structs hold the same value for key k? */
static bool key_equal(const config_key *k, const void *a, const void *b)
{
	const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
	switch (k->type) {
	case CONFIG_STRING:
	case CONFIG_ENUM: {
		const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
		return strcmp(sa != NULL ? sa : "", sb != NULL ? sb : "") == 0;
	}
	case CONFIG_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	case CONFIG_INT:
	case CONFIG_SIZE:
	case CONFIG_DURATION:
		return *(const int64_t *)fa == *(const int64_t *)fb;
	}
	return false;
}

int config_set(config *c, const char *section, const char *name, const char *value,
               char err[CONFIG_ERROR_MAX])
{
	const config_key *k = key_find(section, name);
	if (k == NULL) {
		snprintf(err, CONFIG_ERROR_MAX, "unknown key '%s' in section [%s]", name, section);
		return -ENOENT;
	}
	return key_apply(c, k, k->section, value, err);
}

/* ---- The raw sections of plugin instances, the path and the overrides ---- */

/* The kinds of [KIND.NAME] sections: their keys belong to a plugin type, not to the table. */
static const char *const section_kinds[] = {"sink"};

#define SECTION_NAME_MAX 63

typedef struct config_entry {
	char *key;
	char *value;
	char *origin; /* "path:line", "environment variable WALCAST_SINK_FEED_PATH", "--set sink.feed.path" */
} config_entry;

struct config_section {
	char *kind;   /* "sink" */
	char *name;   /* "feed" */
	char *full;   /* "sink.feed" */
	char *origin; /* where the section starts */
	config_entry *entries;
	size_t n, cap;
};

typedef struct config_override_rec {
	char *section;
	char *key;
	char *value;
} config_override_rec;

struct config_extra {
	char *path;                /* the file loaded, for config_reload; NULL = none */
	config_section **sections; /* in order of appearance */
	size_t nsections, cap;
	config_override_rec *overrides;
	size_t noverrides, ocap;
};

/* The kind of section "sink.feed" when it has one of ours; NULL otherwise. *name_out is then
 * the part after the dot. */
static const char *section_kind(const char *section, const char **name_out)
{
	for (size_t i = 0; i < sizeof(section_kinds) / sizeof(section_kinds[0]); i++) {
		size_t n = strlen(section_kinds[i]);
		if (strncmp(section, section_kinds[i], n) == 0 && (section[n] == '.' || section[n] == '\0')) {
			*name_out = section[n] == '.' ? section + n + 1 : section + n;
			return section_kinds[i];
		}
	}
	return NULL;
}

/* An instance name: 1 to 63 of [A-Za-z0-9_-]. 0, or -EINVAL with err. */
static int section_name_check(const char *kind, const char *name, char err[CONFIG_ERROR_MAX])
{
	size_t n = strlen(name);
	bool ok = n >= 1 && n <= SECTION_NAME_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char)name[i]) || name[i] == '_' || name[i] == '-';
	if (!ok) {
		if (n == 0)
			snprintf(err, CONFIG_ERROR_MAX, "section [%s] needs an instance name: [%s.NAME]", kind, kind);
		else
			snprintf(err, CONFIG_ERROR_MAX, "section [%s.%s]: the name must be 1 to %d letters, digits, "
			         "'_' or '-'", kind, name, SECTION_NAME_MAX);
		return -EINVAL;
	}
	return 0;
}

static struct config_extra *extra_get(config *c)
{
	if (c->extra == NULL)
		c->extra = calloc(1, sizeof(*c->extra));
	return c->extra;
}

static void section_destroy(config_section *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->entries[i].key);
		free(s->entries[i].value);
		free(s->entries[i].origin);
	}
	free(s->entries);
	free(s->kind);
	free(s->name);
	free(s->full);
	free(s->origin);
	free(s);
}

static config_section *section_lookup(const config *c, const char *kind, const char *name)
{
	if (c->extra == NULL)
		return NULL;
	for (size_t i = 0; i < c->extra->nsections; i++) {
		config_section *s = c->extra->sections[i];
		if (strcmp(s->kind, kind) == 0 && strcmp(s->name, name) == 0)
			return s;
	}
	return NULL;
}

/* The section [kind.name], created (starting at origin) when missing. 0 and *out, or -ENOMEM. */
static int section_get(config *c, const char *kind, const char *name, const char *origin, config_section **out)
{
	config_section *s = section_lookup(c, kind, name);
	if (s != NULL) {
		*out = s;
		return 0;
	}
	struct config_extra *x = extra_get(c);
	if (x == NULL)
		return -ENOMEM;
	if (x->nsections == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 4;
		config_section **p = realloc(x->sections, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		x->sections = p;
		x->cap = cap;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->kind = strdup(kind);
	s->name = strdup(name);
	s->origin = strdup(origin);
	size_t full_len = strlen(kind) + strlen(name) + 2;
	s->full = malloc(full_len);
	if (s->kind == NULL || s->name == NULL || s->origin == NULL || s->full == NULL) {
		section_destroy(s);
		return -ENOMEM;
	}
	snprintf(s->full, full_len, "%s.%s", kind, name);
	x->sections[x->nsections++] = s;
	*out = s;
	return 0;
}

static const config_entry *entry_find(const config_section *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->entries[i].key, key) == 0)
			return &s->entries[i];
	return NULL;
}

/* Sets key = value in s (a later value replaces an earlier one). 0 or -ENOMEM. */
static int section_put(config_section *s, const char *key, const char *value, const char *origin)
{
	char *v = strdup(value), *o = strdup(origin);
	if (v == NULL || o == NULL) {
		free(v);
		free(o);
		return -ENOMEM;
	}
	config_entry *e = (config_entry *)entry_find(s, key);
	if (e == NULL) {
		char *k = strdup(key);
		if (k != NULL && s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 8;
			config_entry *p = realloc(s->entries, cap * sizeof(*p));
			if (p != NULL) {
				s->entries = p;
				s->cap = cap;
			}
		}
		if (k == NULL || s->n == s->cap) {
			free(k);
			free(v);
			free(o);
			return -ENOMEM;
		}
		e = &s->entries[s->n++];
		e->key = k;
		e->value = NULL;
		e->origin = NULL;
	}
	free(e->value);
	free(e->origin);
	e->value = v;
	e->origin = o;
	return 0;
}

static void extra_destroy(struct config_extra *x)
{
	if (x == NULL)
		return;
	for (size_t i = 0; i < x->nsections; i++)
		section_destroy(x->sections[i]);
	free(x->sections);
	for (size_t i = 0; i < x->noverrides; i++) {
		free(x->overrides[i].section);
		free(x->overrides[i].key);
		free(x->overrides[i].value);
	}
	free(x->overrides);
	free(x->path);
	free(x);
}

int config_init(config *c)
{
	char err[CONFIG_ERROR_MAX];
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		int rc = key_apply(c, &keys[i], keys[i].section, keys[i].default_value, err);
		if (rc < 0) {
			config_fini(c);
			return rc;
		}
	}
	return 0;
}

void config_fini(config *c)
{
	keys_free(keys, sizeof(keys) / sizeof(keys[0]), c);
	extra_destroy(c->extra);
	c->extra = NULL;
}

/* ---- The file ---- */

typedef struct file_state {
	config *c;
	const char *path;
	FILE *f;
	int line;      /* lines read so far: the handler runs on the line just read */
	int read_errno; /* errno of a failed read, 0 = none */
	int err_line;  /* line of the first error found, 0 = none */
	char reason[CONFIG_ERROR_MAX];
	int rc;
} file_state;

static int file_error(file_state *st, int rc)
{
	if (st->err_line == 0) {
		st->err_line = st->line;
		st->rc = rc;
	}
	return 0;
}

/* A [KIND.NAME] header on the line just read: the section starts here, even when it has no key
 * (libinih calls the handler for keys only), so that "no type" can name its line. */
static void file_header(file_state *st, const char *line)
{
	while (isspace((unsigned char)*line))
		line++;
	if (*line != '[' || st->err_line != 0)
		return;
	const char *close = strchr(line, ']');
	if (close == NULL)
		return; /* libinih reports the syntax error */
	char section[128];
	snprintf(section, sizeof(section), "%.*s", (int)(close - line - 1), line + 1);
	const char *name;
	const char *kind = section_kind(section, &name);
	if (kind == NULL)
		return;
	int rc = section_name_check(kind, name, st->reason);
	if (rc == 0) {
		char origin[CONFIG_ERROR_MAX];
		config_section *s;
		snprintf(origin, sizeof(origin), "%s:%d", st->path, st->line);
		rc = section_get(st->c, kind, name, origin, &s);
		if (rc < 0)
			snprintf(st->reason, sizeof(st->reason), "out of memory");
	}
	if (rc < 0)
		file_error(st, rc);
}

static char *file_reader(char *str, int num, void *stream)
{
	file_state *st = stream;
	errno = 0;
	char *r = fgets(str, num, st->f);
	if (r != NULL) {
		st->line++;
		file_header(st, str);
	} else if (ferror(st->f)) {
		st->read_errno = errno != 0 ? errno : EIO;
	}
	return r;
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
	file_state *st = user;
	if (st->err_line != 0)
		return 0; /* report the first problem only */
	if (section[0] == '\0') {
		snprintf(st->reason, sizeof(st->reason), "key '%s' is outside any [section]", name);
		return file_error(st, -EINVAL);
	}
	const char *inst;
	const char *kind = section_kind(section, &inst);
	if (kind != NULL) {
		config_section *s = section_lookup(st->c, kind, inst);
		if (s == NULL) { /* file_header refused the name, or a header it could not see */
			if (section_name_check(kind, inst, st->reason) == 0)
				snprintf(st->reason, sizeof(st->reason), "section [%s] was not opened", section);
			return file_error(st, -EINVAL);
		}
		char origin[CONFIG_ERROR_MAX];
		snprintf(origin, sizeof(origin), "%s:%d", st->path, st->line);
		if (section_put(s, name, value, origin) < 0) {
			snprintf(st->reason, sizeof(st->reason), "out of memory");
			return file_error(st, -ENOMEM);
		}
		return 1;
	}
	int rc = config_set(st->c, section, name, value, st->reason);
	if (rc < 0)
		return file_error(st, rc == -ENOENT ? -EINVAL : rc);
	return 1;
}

int config_load_file(config *c, const char *path, char err[CONFIG_ERROR_MAX])
{
	file_state st = {.c = c, .path = path};
	st.f = fopen(path, "r");
	if (st.f == NULL) {
		int e = errno;
		snprintf(err, CONFIG_ERROR_MAX, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	struct stat sb;
	if (fstat(fileno(st.f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		fclose(st.f);
		snprintf(err, CONFIG_ERROR_MAX, "%s: is a directory, not a configuration file", path);
		return -EISDIR;
	}
	int line = ini_parse_stream(file_reader, &st, file_handler, &st);
	fclose(st.f);
	if (st.read_errno != 0) {
		snprintf(err, CONFIG_ERROR_MAX, "%s: cannot read: %s", path, strerror(st.read_errno));
		return -st.read_errno;
	}
	if (line < 0) {
		snprintf(err, CONFIG_ERROR_MAX, "%s: out of memory while parsing", path);
		return -ENOMEM;
	}
	/* libinih reports the first bad line; it is ours when we refused that line (or an earlier
	 * section header, which libinih does not see as an error). */
	if (st.err_line != 0 && (line == 0 || st.err_line <= line)) {
		snprintf(err, CONFIG_ERROR_MAX, "%s:%d: %s", path, st.err_line, st.reason);
		return st.rc;
	}
	if (line > 0) {
		snprintf(err, CONFIG_ERROR_MAX, "%s:%d: syntax error (expected [section] or key = value)", path, line);
		return -EINVAL;
	}
	struct config_extra *x = extra_get(c);
	char *copy = strdup(path);
	if (x == NULL || copy == NULL) {
		free(copy);
		snprintf(err, CONFIG_ERROR_MAX, "%s: out of memory", path);
		return -ENOMEM;
	}
	free(x->path);
	x->path = copy;
	return 0;
}

/* ---- The environment ---- */

/* Is name (of length n) a section of the key table? Case-insensitive, as variables are upper
 * case. */
static bool section_known(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strlen(keys[i].section) == n && strncasecmp(keys[i].section, name, n) == 0)
			return true;
	return false;
}

/* Refuses a WALCAST_<SECTION>_<KEY> variable whose SECTION is one of ours and KEY is not: a
 * misspelt key must not be silently ignored. Other WALCAST_ variables (WALCAST_KEYS,
 * WALCAST_CONFIG, those of the test harness) are not configuration keys and are left alone. */
static int env_unknown_check(char err[CONFIG_ERROR_MAX])
{
	static const char prefix[] = "WALCAST_";
	for (char **e = environ; e != NULL && *e != NULL; e++) {
		const char *v = *e;
		if (strncmp(v, prefix, sizeof(prefix) - 1) != 0)
			continue;
		const char *sec = v + sizeof(prefix) - 1;
		const char *eq = strchr(sec, '=');
		size_t name_len = eq != NULL ? (size_t)(eq - sec) : strlen(sec);
		bool known_key = false;
		bool in_section = false;
		for (const char *us = memchr(sec, '_', name_len); us != NULL;
		     us = memchr(us + 1, '_', name_len - (size_t)(us + 1 - sec))) {
			if (!section_known(sec, (size_t)(us - sec)))
				continue;
			in_section = true;
			const char *key = us + 1;
			size_t key_len = name_len - (size_t)(key - sec);
			for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !known_key; i++)
				known_key = strlen(keys[i].section) == (size_t)(us - sec) &&
				            strncasecmp(keys[i].section, sec, (size_t)(us - sec)) == 0 &&
				            strlen(keys[i].name) == key_len && strncasecmp(keys[i].name, key, key_len) == 0;
		}
		if (in_section && !known_key) {
			snprintf(err, CONFIG_ERROR_MAX, "environment variable %.*s%.*s: not a configuration key "
			         "(WALCAST_<SECTION>_<KEY>; see docs/configuration.md)", (int)(sizeof(prefix) - 1), v,
			         (int)name_len, sec);
			return -EINVAL;
		}
	}
	return 0;
}

/* Does the instance name, as a variable spells it (upper case, '-' as '_'), open rest? Returns
 * the length matched, 0 if not. rest is "<NAME>_<KEY>". */
static size_t env_name_match(const char *name, const char *rest, size_t rest_len)
{
	size_t n = strlen(name);
	if (n + 1 >= rest_len || rest[n] != '_')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char want = name[i] == '-' ? '_' : (char)toupper((unsigned char)name[i]);
		if (rest[i] != want)
			return 0;
	}
	return n;
}

/* The WALCAST_<KIND>_<NAME>_<KEY> variables: pass 0 creates the sections that only the
 * environment names (WALCAST_SINK_<NAME>_TYPE), pass 1 sets every key on the section whose
 * name matches longest. A variable under a kind that matches no section is refused. */
static int env_sections(config *c, int pass, char err[CONFIG_ERROR_MAX])
{
	for (char **e = environ; e != NULL && *e != NULL; e++) {
		const char *v = *e;
		if (strncmp(v, "WALCAST_", 8) != 0)
			continue;
		const char *eq = strchr(v, '=');
		if (eq == NULL)
			continue;
		for (size_t k = 0; k < sizeof(section_kinds) / sizeof(section_kinds[0]); k++) {
			const char *kind = section_kinds[k];
			size_t kl = strlen(kind);
			const char *p = v + 8;
			bool match = (size_t)(eq - p) > kl && p[kl] == '_';
			for (size_t i = 0; match && i < kl; i++)
				match = p[i] == (char)toupper((unsigned char)kind[i]);
			if (!match)
				continue;
			const char *rest = p + kl + 1;
			size_t rest_len = (size_t)(eq - rest);
			config_section *best = NULL;
			size_t best_len = 0;
			for (size_t i = 0; c->extra != NULL && i < c->extra->nsections; i++) {
				config_section *s = c->extra->sections[i];
				size_t m = strcmp(s->kind, kind) == 0 ? env_name_match(s->name, rest, rest_len) : 0;
				if (m > best_len)
					best = s, best_len = m;
			}
			char var[256], origin[300];
			snprintf(var, sizeof(var), "%.*s", (int)(eq - v), v);
			snprintf(origin, sizeof(origin), "environment variable %s", var);
			if (pass == 0) {
				if (best != NULL || rest_len <= 5 || strncmp(eq - 5, "_TYPE", 5) != 0)
					continue;
				char name[SECTION_NAME_MAX + 2];
				if (rest_len - 5 > SECTION_NAME_MAX) {
					snprintf(err, CONFIG_ERROR_MAX, "%s: the %s name is longer than %d characters", origin,
					         kind, SECTION_NAME_MAX);
					return -EINVAL;
				}
				for (size_t i = 0; i < rest_len - 5; i++)
					name[i] = (char)tolower((unsigned char)rest[i]);
				name[rest_len - 5] = '\0';
				char why[CONFIG_ERROR_MAX];
				if (section_name_check(kind, name, why) < 0) {
					snprintf(err, CONFIG_ERROR_MAX, "%s: %s", origin, why);
					return -EINVAL;
				}
				if (section_get(c, kind, name, origin, &best) < 0)
					return -ENOMEM;
				continue;
			}
			if (best == NULL) {
				char up[32];
				snprintf(up, sizeof(up), "%.*s", (int)kl, p);
				snprintf(err, CONFIG_ERROR_MAX, "%s: no [%s.NAME] section matches (WALCAST_%s_<NAME>_<KEY>: "
				         "define [%s.NAME] in the file, or set WALCAST_%s_<NAME>_TYPE; see "
				         "docs/configuration.md)", origin, kind, up, kind, up);
				return -EINVAL;
			}
			char key[128];
			size_t key_len = rest_len - best_len - 1;
			if (key_len >= sizeof(key)) {
				snprintf(err, CONFIG_ERROR_MAX, "%s: not a configuration key", origin);
				return -EINVAL;
			}
			for (size_t i = 0; i < key_len; i++)
				key[i] = (char)tolower((unsigned char)rest[best_len + 1 + i]);
			key[key_len] = '\0';
			if (section_put(best, key, eq + 1, origin) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

int config_load_env(config *c, char err[CONFIG_ERROR_MAX])
{
	int unknown = env_unknown_check(err);
	if (unknown < 0)
		return unknown;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char var[128];
		int n = snprintf(var, sizeof(var), "WALCAST_%s_%s", keys[i].section, keys[i].name);
		for (int j = 0; j < n; j++)
			var[j] = (char)toupper((unsigned char)var[j]);
		const char *v = getenv(var);
		if (v == NULL)
			continue;
		char why[CONFIG_ERROR_MAX];
		int rc = key_apply(c, &keys[i], keys[i].section, v, why);
		if (rc < 0) {
			snprintf(err, CONFIG_ERROR_MAX, "environment variable %s: %s", var, why);
			return rc;
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		int rc = env_sections(c, pass, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- Overrides (--set and the short flags) ---- */

/* Applies section.key = value from the command line; record: remember it for config_reload. */
static int override_apply(config *c, const char *section, const char *key, const char *value, bool record,
                          char err[CONFIG_ERROR_MAX])
{
	const char *inst;
	const char *kind = section_kind(section, &inst);
	int rc;
	if (kind != NULL) {
		rc = section_name_check(kind, inst, err);
		if (rc < 0)
			return rc;
		char origin[CONFIG_ERROR_MAX];
		snprintf(origin, sizeof(origin), "--set %s.%s", section, key);
		config_section *s;
		rc = section_get(c, kind, inst, origin, &s);
		if (rc == 0)
			rc = section_put(s, key, value, origin);
	} else {
		rc = config_set(c, section, key, value, err);
		if (rc < 0)
			return rc;
	}
	if (rc == 0 && record) {
		struct config_extra *x = extra_get(c);
		if (x == NULL)
			return -ENOMEM;
		if (x->noverrides == x->ocap) {
			size_t cap = x->ocap ? x->ocap * 2 : 8;
			config_override_rec *p = realloc(x->overrides, cap * sizeof(*p));
			if (p == NULL)
				return -ENOMEM;
			x->overrides = p;
			x->ocap = cap;
		}
		config_override_rec *o = &x->overrides[x->noverrides];
		o->section = strdup(section);
		o->key = strdup(key);
		o->value = strdup(value);
		if (o->section == NULL || o->key == NULL || o->value == NULL) {
			free(o->section);
			free(o->key);
			free(o->value);
			return -ENOMEM;
		}
		x->noverrides++;
	}
	if (rc == -ENOMEM)
		snprintf(err, CONFIG_ERROR_MAX, "out of memory");
	return rc;
}

int config_override(config *c, const char *section, const char *name, const char *value,
                    char err[CONFIG_ERROR_MAX])
{
	return override_apply(c, section, name, value, true, err);
}

int config_set_override(config *c, const char *assignment, char err[CONFIG_ERROR_MAX])
{
	const char *eq = strchr(assignment, '=');
	const char *dot = NULL;
	for (const char *p = assignment; eq != NULL && p < eq; p++)
		if (*p == '.')
			dot = p;
	if (eq == NULL || dot == NULL || dot == assignment || dot + 1 == eq) {
		snprintf(err, CONFIG_ERROR_MAX, "--set: '%s' is not section.key=value", assignment);
		return -EINVAL;
	}
	char section[128], key[128];
	if ((size_t)(dot - assignment) >= sizeof(section) || (size_t)(eq - dot - 1) >= sizeof(key)) {
		snprintf(err, CONFIG_ERROR_MAX, "--set: '%.*s' is too long", (int)(eq - assignment), assignment);
		return -EINVAL;
	}
	snprintf(section, sizeof(section), "%.*s", (int)(dot - assignment), assignment);
	snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1), dot + 1);
	char why[CONFIG_ERROR_MAX];
	int rc = override_apply(c, section, key, eq + 1, true, why);
	if (rc < 0)
		snprintf(err, CONFIG_ERROR_MAX, "--set: %s", why);
	return rc;
}

/* ---- Sections: the API of the layers that know the plugins ---- */

const config_section *config_section_next(const config *c, const char *kind, const config_section *prev)
{
	if (c->extra == NULL)
		return NULL;
	size_t i = 0;
	if (prev != NULL) {
		while (i < c->extra->nsections && c->extra->sections[i] != prev)
			i++;
		i++;
	}
	for (; i < c->extra->nsections; i++)
		if (strcmp(c->extra->sections[i]->kind, kind) == 0)
			return c->extra->sections[i];
	return NULL;
}

const config_section *config_section_find(const config *c, const char *kind, const char *name)
{
	return section_lookup(c, kind, name);
}

const char *config_section_name(const config_section *s)
{
	return s->name;
}

const char *config_section_type(const config_section *s)
{
	const config_entry *e = entry_find(s, "type");
	return e != NULL ? e->value : NULL;
}

int config_section_error(const config_section *s, char err[CONFIG_ERROR_MAX], const char *fmt, ...)
{
	const config_entry *e = entry_find(s, "type");
	int n = snprintf(err, CONFIG_ERROR_MAX, "%s: [%s]: ", e != NULL ? e->origin : s->origin, s->full);
	if (n >= 0 && n < CONFIG_ERROR_MAX) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err + n, CONFIG_ERROR_MAX - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

void config_section_free(const config_table *t, void *conf)
{
	keys_free(t->keys, t->nkeys, conf);
}

int config_section_apply(const config_section *s, const config_table *t, void *conf, char err[CONFIG_ERROR_MAX])
{
	char why[CONFIG_ERROR_MAX];
	int rc = 0;
	memset(conf, 0, t->conf_size);
	for (size_t i = 0; i < t->nkeys && rc == 0; i++) {
		rc = key_apply(conf, &t->keys[i], s->full, t->keys[i].default_value, why);
		if (rc < 0)
			snprintf(err, CONFIG_ERROR_MAX, "[%s]: the default of %s: %s", s->full, t->keys[i].name, why);
	}
	for (size_t i = 0; i < s->n && rc == 0; i++) {
		const config_entry *e = &s->entries[i];
		if (strcmp(e->key, "type") == 0)
			continue;
		const config_key *k = NULL;
		for (size_t j = 0; j < t->nkeys && k == NULL; j++)
			if (strcmp(t->keys[j].name, e->key) == 0)
				k = &t->keys[j];
		if (k == NULL) {
			const char *type = config_section_type(s);
			snprintf(err, CONFIG_ERROR_MAX, "%s: unknown key '%s' in section [%s] (type %s)", e->origin,
			         e->key, s->full, type != NULL ? type : "?");
			rc = -EINVAL;
			break;
		}
		rc = key_apply(conf, k, s->full, e->value, why);
		if (rc == -ENOMEM)
			snprintf(err, CONFIG_ERROR_MAX, "out of memory");
		else if (rc < 0)
			snprintf(err, CONFIG_ERROR_MAX, "%s: %s", e->origin, why);
	}
	if (rc < 0)
		config_section_free(t, conf);
	return rc;
}

/* Resolves the table of s's type through lookup; err names the section on failure. */
static int section_table(const config_section *s, config_type_lookup_fn lookup, void *arg, config_table *t,
                         char err[CONFIG_ERROR_MAX])
{
	const char *type = config_section_type(s);
	if (type == NULL)
		return config_section_error(s, err, "no type: say which %s it is (type = ...)", s->kind);
	char why[CONFIG_ERROR_MAX] = "";
	int rc = lookup(arg, s->kind, type, t, why);
	if (rc < 0) {
		if (why[0] != '\0')
			return config_section_error(s, err, "%s", why);
		return config_section_error(s, err, "unknown %s type '%s'", s->kind, type);
	}
	return 0;
}

int config_check_sections(const config *c, config_type_lookup_fn lookup, void *arg, char err[CONFIG_ERROR_MAX])
{
	for (size_t i = 0; c->extra != NULL && i < c->extra->nsections; i++) {
		const config_section *s = c->extra->sections[i];
		if (lookup == NULL) {
			if (config_section_type(s) == NULL)
				return config_section_error(s, err, "no type: say which %s it is (type = ...)", s->kind);
			continue;
		}
		config_table t;
		int rc = section_table(s, lookup, arg, &t, err);
		if (rc < 0)
			return rc;
		void *conf = calloc(1, t.conf_size > 0 ? t.conf_size : 1);
		if (conf == NULL)
			return -ENOMEM;
		rc = config_section_apply(s, &t, conf, err);
		config_section_free(&t, conf);
		free(conf);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- Reload ---- */

/* Appends an item to a space/comma separated list held in out (truncated when full). */
__attribute__((format(printf, 3, 4))) static void list_add(char *out, const char *sep, const char *fmt, ...)
{
	size_t n = strlen(out);
	if (n + 1 >= CONFIG_ERROR_MAX)
		return;
	if (n > 0)
		n += (size_t)snprintf(out + n, CONFIG_ERROR_MAX - n, "%s", sep);
	if (n + 1 >= CONFIG_ERROR_MAX)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out + n, CONFIG_ERROR_MAX - n, fmt, ap);
	va_end(ap);
}

/* Compares one section present in both configurations; adds to changed and restart. */
static int section_diff(const config_section *a, const config_section *b, config_type_lookup_fn lookup, void *arg,
                        char *changed, char *restart, char err[CONFIG_ERROR_MAX])
{
	const char *ta = config_section_type(a), *tb = config_section_type(b);
	if (strcmp(ta != NULL ? ta : "", tb != NULL ? tb : "") != 0) {
		list_add(changed, " ", "%s.type", a->full);
		list_add(restart, ", ", "%s.type", a->full);
		return 0;
	}
	if (lookup == NULL) { /* no key table: any raw difference needs a restart */
		for (int side = 0; side < 2; side++) {
			const config_section *x = side == 0 ? a : b, *y = side == 0 ? b : a;
			for (size_t i = 0; i < x->n; i++) {
				const config_entry *e = entry_find(y, x->entries[i].key);
				if ((e == NULL || strcmp(e->value, x->entries[i].value) != 0) && (side == 0 || e == NULL)) {
					list_add(changed, " ", "%s.%s", a->full, x->entries[i].key);
					list_add(restart, ", ", "%s.%s", a->full, x->entries[i].key);
				}
			}
		}
		return 0;
	}
	config_table t;
	int rc = section_table(b, lookup, arg, &t, err);
	if (rc < 0)
		return rc;
	void *ca = calloc(1, t.conf_size > 0 ? t.conf_size : 1), *cb = calloc(1, t.conf_size > 0 ? t.conf_size : 1);
	if (ca == NULL || cb == NULL) {
		rc = -ENOMEM;
		goto cleanup;
	}
	rc = config_section_apply(a, &t, ca, err);
	if (rc == 0) {
		rc = config_section_apply(b, &t, cb, err);
		if (rc < 0)
			config_section_free(&t, ca);
	}
	if (rc < 0)
		goto cleanup;
	for (size_t i = 0; i < t.nkeys; i++) {
		if (key_equal(&t.keys[i], ca, cb))
			continue;
		list_add(changed, " ", "%s.%s", a->full, t.keys[i].name);
		if (!t.keys[i].reloadable)
			list_add(restart, ", ", "%s.%s", a->full, t.keys[i].name);
	}
	config_section_free(&t, ca);
	config_section_free(&t, cb);
cleanup:
	free(ca);
	free(cb);
	return rc;
}

int config_reload(const config *running, config_type_lookup_fn lookup, void *arg, config *out,
                  char changed[CONFIG_ERROR_MAX], char err[CONFIG_ERROR_MAX])
{
	const struct config_extra *rx = running->extra;
	char chg[CONFIG_ERROR_MAX] = "", restart[CONFIG_ERROR_MAX] = "";
	config n;
	if (rx == NULL || rx->path == NULL) {
		snprintf(err, CONFIG_ERROR_MAX, "nothing to reload: walcast was started without a configuration file");
		return -ENOENT;
	}
	int rc = config_init(&n);
	if (rc < 0) {
		snprintf(err, CONFIG_ERROR_MAX, "out of memory");
		return rc;
	}
	rc = config_load_file(&n, rx->path, err);
	if (rc == 0)
		rc = config_load_env(&n, err);
	for (size_t i = 0; rc == 0 && i < rx->noverrides; i++)
		rc = override_apply(&n, rx->overrides[i].section, rx->overrides[i].key, rx->overrides[i].value, true, err);
	if (rc == 0)
		rc = config_check_sections(&n, lookup, arg, err);
	if (rc < 0)
		goto fail;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (key_equal(&keys[i], running, &n))
			continue;
		list_add(chg, " ", "%s.%s", keys[i].section, keys[i].name);
		if (!keys[i].reloadable)
			list_add(restart, ", ", "%s.%s", keys[i].section, keys[i].name);
	}
	for (size_t i = 0; i < rx->nsections; i++) {
		const config_section *a = rx->sections[i];
		const config_section *b = section_lookup(&n, a->kind, a->name);
		if (b == NULL) {
			list_add(chg, " ", "%s", a->full);
			list_add(restart, ", ", "%s (removed)", a->full);
			continue;
		}
		rc = section_diff(a, b, lookup, arg, chg, restart, err);
		if (rc < 0)
			goto fail;
	}
	for (size_t i = 0; n.extra != NULL && i < n.extra->nsections; i++) {
		const config_section *b = n.extra->sections[i];
		if (section_lookup(running, b->kind, b->name) == NULL) {
			list_add(chg, " ", "%s", b->full);
			list_add(restart, ", ", "%s (added)", b->full);
		}
	}
	if (restart[0] != '\0') {
		snprintf(err, CONFIG_ERROR_MAX, "reload refused: changed keys need a restart: %s (the running "
		         "configuration is kept)", restart);
		rc = -EPERM;
		goto fail;
	}
	if (changed != NULL)
		snprintf(changed, CONFIG_ERROR_MAX, "%s", chg);
	*out = n;
	return 0;
fail:
	config_fini(&n);
	return rc;
}

void config_reload_commit(config *running, config *fresh)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!keys[i].reloadable)
			continue;
		size_t size = keys[i].type == CONFIG_BOOL                                    ? sizeof(bool)
		              : keys[i].type == CONFIG_STRING || keys[i].type == CONFIG_ENUM ? sizeof(char *)
		                                                                             : sizeof(int64_t);
		char tmp[sizeof(int64_t) > sizeof(char *) ? sizeof(int64_t) : sizeof(char *)];
		char *a = (char *)running + keys[i].offset, *b = (char *)fresh + keys[i].offset;
		memcpy(tmp, a, size);
		memcpy(a, b, size);
		memcpy(b, tmp, size);
	}
	struct config_extra *x = running->extra;
	running->extra = fresh->extra;
	fresh->extra = x;
	config_fini(fresh);
}
