/* config — the key table and its loaders (defaults, libinih file, environment). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <ini.h>
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
	KEY("log", "level", CONFIG_STRING, log_level, "info", 1, 16, true,
	    "debug, info, warn or error"),
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

static int key_apply(config *c, const config_key *k, const char *value, char err[CONFIG_ERROR_MAX])
{
	void *field = (char *)c + k->offset;
	switch (k->type) {
	case CONFIG_STRING: {
		size_t len = strlen(value);
		if (k->max > 0 && ((int64_t)len < k->min || (int64_t)len > k->max)) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s must be %" PRId64 " to %" PRId64 " characters long",
			         k->section, k->name, k->min, k->max);
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
			         k->section, k->name, value);
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
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s: '%s' is not %s", k->section, k->name, value,
			         k->type == CONFIG_INT    ? "an integer"
			         : k->type == CONFIG_SIZE ? "a size (e.g. 4096, 512kB, 16MB, 1GB)"
			                                  : "a duration (e.g. 500ms, 10s, 5m)");
			return -EINVAL;
		}
		if ((n < k->min || n > k->max) && !(k->type == CONFIG_DURATION && n == 0 && k->min == 0)) {
			snprintf(err, CONFIG_ERROR_MAX, "%s.%s: %s is out of range (%" PRId64 "%s to %" PRId64 "%s)",
			         k->section, k->name, value, k->min, k->type == CONFIG_DURATION ? "ms" : "",
			         k->max, k->type == CONFIG_DURATION ? "ms" : "");
			return -EINVAL;
		}
		*(int64_t *)field = n;
		return 0;
	}
	}
	return -EINVAL;
}

int config_set(config *c, const char *section, const char *name, const char *value,
               char err[CONFIG_ERROR_MAX])
{
	const config_key *k = key_find(section, name);
	if (k == NULL) {
		snprintf(err, CONFIG_ERROR_MAX, "unknown key '%s' in section [%s]", name, section);
		return -ENOENT;
	}
	return key_apply(c, k, value, err);
}

int config_init(config *c)
{
	char err[CONFIG_ERROR_MAX];
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		int rc = key_apply(c, &keys[i], keys[i].default_value, err);
		if (rc < 0) {
			config_fini(c);
			return rc;
		}
	}
	return 0;
}

void config_fini(config *c)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (keys[i].type != CONFIG_STRING)
			continue;
		char **field = (char **)((char *)c + keys[i].offset);
		free(*field);
		*field = NULL;
	}
}

typedef struct file_state {
	config *c;
	FILE *f;
	int line;      /* lines read so far: the handler runs on the line just read */
	int read_errno; /* errno of a failed read, 0 = none */
	int err_line;  /* line of the first error the handler found, 0 = none */
	char reason[CONFIG_ERROR_MAX];
	int rc;
} file_state;

static char *file_reader(char *str, int num, void *stream)
{
	file_state *st = stream;
	errno = 0;
	char *r = fgets(str, num, st->f);
	if (r != NULL)
		st->line++;
	else if (ferror(st->f))
		st->read_errno = errno != 0 ? errno : EIO;
	return r;
}

static int file_error(file_state *st, int rc)
{
	if (st->err_line == 0) {
		st->err_line = st->line;
		st->rc = rc;
	}
	return 0;
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
	int rc = config_set(st->c, section, name, value, st->reason);
	if (rc < 0)
		return file_error(st, rc == -ENOENT ? -EINVAL : rc);
	return 1;
}

int config_load_file(config *c, const char *path, char err[CONFIG_ERROR_MAX])
{
	file_state st = {.c = c};
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
	if (line == 0)
		return 0;
	if (line < 0) {
		snprintf(err, CONFIG_ERROR_MAX, "%s: out of memory while parsing", path);
		return -ENOMEM;
	}
	/* libinih reports the first bad line; it is ours when the handler refused that line. */
	if (line == st.err_line) {
		snprintf(err, CONFIG_ERROR_MAX, "%s:%d: %s", path, line, st.reason);
		return st.rc;
	}
	snprintf(err, CONFIG_ERROR_MAX, "%s:%d: syntax error (expected [section] or key = value)", path, line);
	return -EINVAL;
}

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
		int rc = key_apply(c, &keys[i], v, why);
		if (rc < 0) {
			snprintf(err, CONFIG_ERROR_MAX, "environment variable %s: %s", var, why);
			return rc;
		}
	}
	return 0;
}
