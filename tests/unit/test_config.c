/* Unit tests for config: defaults, file parsing with file:line errors, environment, bounds,
 * [sink.NAME] sections applied through a plugin's key table, --set overrides, reload, the docs
 * and the sample deploy/walcast.conf. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char *write_temp(const char *content)
{
	static char path[512];
	const char *tmp = getenv("TMPDIR");
	snprintf(path, sizeof(path), "%s/walcast-test-config.XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return path;
}

static void test_defaults(void **state)
{
	config c;
	assert_int_equal(config_init(&c), 0);
	assert_string_equal(c.slot, "walcast");
	assert_string_equal(c.plugin, "pgoutput");
	assert_true(c.create_slot);
	assert_false(c.temporary_slot);
	assert_int_equal(c.status_interval_ms, 10000);
	assert_int_equal(c.heartbeat_interval_ms, 0);
	assert_int_equal(c.reconnect_min_ms, 500);
	assert_string_equal(c.jwks_file, "");
	assert_string_equal(c.jwt_audience, "authenticated");
	assert_true(c.jwt_require_exp);
	assert_int_equal(c.jwt_leeway_ms, 30000);
	assert_int_equal(c.privacy_txn_memory, 16 << 20);
	assert_string_equal(c.privacy_spill_dir, "");
	config_fini(&c);
}

/* Sizes: bytes, or kB/MB/GB (powers of 1024), within the key's bounds. */
static void test_sizes(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	const struct { const char *text; int64_t bytes; } ok[] = {
		{"4096", 4096}, {"8192B", 8192}, {"512kB", 512 * 1024}, {"64MB", 64 << 20}, {"2GB", INT64_C(2) << 30},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(config_set(&c, "privacy", "txn_memory", ok[i].text, err), 0);
		assert_int_equal(c.privacy_txn_memory, ok[i].bytes);
	}
	const char *bad[] = {"16 MB", "16mb", "-1", "MB", "1TB", "99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(config_set(&c, "privacy", "txn_memory", bad[i], err), -EINVAL);
		assert_non_null(strstr(err, "is not a size"));
	}
	assert_int_equal(config_set(&c, "privacy", "txn_memory", "1kB", err), -EINVAL);
	assert_non_null(strstr(err, "out of range"));
	assert_int_equal(c.privacy_txn_memory, INT64_C(2) << 30); /* unchanged by the refusals */
	config_fini(&c);
}

static void test_file_ok(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp("; comment\n[replication]\nslot = feeds\nplugin = wal2json\n"
	                     "status_interval = 250ms\nheartbeat_interval = 2m\ncreate_slot = off\n"
	                     "[postgres]\nconninfo = host=db port=5433\n");
	assert_int_equal(config_load_file(&c, p, err), 0);
	assert_string_equal(c.slot, "feeds");
	assert_string_equal(c.plugin, "wal2json");
	assert_int_equal(c.status_interval_ms, 250);
	assert_int_equal(c.heartbeat_interval_ms, 120000);
	assert_false(c.create_slot);
	assert_string_equal(c.conninfo, "host=db port=5433");
	unlink(p);
	config_fini(&c);
}

static void expect_file_error(const char *content, const char *fragment)
{
	config c;
	char err[CONFIG_ERROR_MAX] = "";
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp(content);
	assert_int_equal(config_load_file(&c, p, err), -EINVAL);
	if (strstr(err, fragment) == NULL)
		fail_msg("error '%s' lacks '%s'", err, fragment);
	assert_non_null(strstr(err, p)); /* names the file */
	unlink(p);
	config_fini(&c);
}

static void test_file_errors(void **state)
{
	expect_file_error("[replication]\nslot = a\nslott = b\n", ":3: unknown key 'slott' in section [replication]");
	expect_file_error("[nosuch]\nslot = a\n", ":2: unknown key 'slot' in section [nosuch]");
	expect_file_error("slot = a\n", ":1: key 'slot' is outside any [section]");
	expect_file_error("[replication]\nstatus_interval = 5 minutes\n", ":2: replication.status_interval: '5 minutes' is not a duration");
	expect_file_error("[replication]\nstatus_interval = 1ms\n", ":2: replication.status_interval: 1ms is out of range");
	expect_file_error("[replication]\ncreate_slot = perhaps\n", ":2: replication.create_slot: 'perhaps' is not a boolean");
	expect_file_error("[replication]\nslot = \n", ":2: replication.slot must be 1 to 63 characters");
	expect_file_error("[replication\nslot = a\n", ":1: syntax error");
	expect_file_error("[auth]\njwt_leeway = 10m\n", ":2: auth.jwt_leeway: 10m is out of range");
}

static void test_file_missing(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	assert_int_equal(config_load_file(&c, "/nonexistent/walcast.conf", err), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/walcast.conf: cannot open"));
	config_fini(&c);
}

static void test_file_is_directory(void **state)
{
	/* fopen() opens a directory for reading and every read fails: that was an empty config. */
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	assert_int_equal(config_load_file(&c, "/tmp", err), -EISDIR);
	assert_non_null(strstr(err, "/tmp: is a directory"));
	config_fini(&c);
}

static void test_env_unknown_keys(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	/* Not configuration keys: variables of walcast itself and of the tools around it. */
	static const char *const others[] = {
		"WALCAST_KEYS", "WALCAST_CONFIG", "WALCAST_BIN", "WALCAST_SOURCE_DIR", "WALCAST_SEED",
		"WALCAST_HARNESS_DIR", "WALCAST_PG_BIN", "WALCAST_PGDATA", "WALCAST_REPL_CONNINFO",
		"WALCAST_UPDATE_GOLDEN", "WALCAST_", "WALCAST_REPLICATIONX",
	};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		setenv(others[i], "x", 1);
	setenv("WALCAST_KEYS_FILE", "", 1);
	setenv("WALCAST_AUTH_JWT_SECRET", "s", 1);
	if (config_load_env(&c, err) != 0)
		fail_msg("refused: %s", err);
	/* A misspelt key under one of our sections is refused, naming the variable. */
	static const char *const typos[] = {
		"WALCAST_REPLICATION_SLOTT", "WALCAST_REPLICATION_", "WALCAST_LOG_LEVL", "WALCAST_KEYS_FILES",
		"WALCAST_POSTGRES_CONNINFO_X", "WALCAST_REDIS_URI", "WALCAST_AUTH_SECRET",
	};
	for (size_t i = 0; i < sizeof(typos) / sizeof(typos[0]); i++) {
		setenv(typos[i], "x", 1);
		int rc = config_load_env(&c, err);
		unsetenv(typos[i]);
		if (rc != -EINVAL || strstr(err, typos[i]) == NULL || strstr(err, "not a configuration key") == NULL)
			fail_msg("%s: got %d \"%s\"", typos[i], rc, err);
	}
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		unsetenv(others[i]);
	unsetenv("WALCAST_KEYS_FILE");
	unsetenv("WALCAST_AUTH_JWT_SECRET");
	config_fini(&c);
}

static void test_env(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	setenv("WALCAST_REPLICATION_SLOT", "from_env", 1);
	setenv("WALCAST_REPLICATION_RECONNECT_MAX", "90", 1);
	assert_int_equal(config_load_env(&c, err), 0);
	assert_string_equal(c.slot, "from_env");
	assert_int_equal(c.reconnect_max_ms, 90000);
	setenv("WALCAST_REPLICATION_TEMPORARY_SLOT", "sometimes", 1);
	assert_int_equal(config_load_env(&c, err), -EINVAL);
	assert_non_null(strstr(err, "WALCAST_REPLICATION_TEMPORARY_SLOT"));
	unsetenv("WALCAST_REPLICATION_SLOT");
	unsetenv("WALCAST_REPLICATION_RECONNECT_MAX");
	unsetenv("WALCAST_REPLICATION_TEMPORARY_SLOT");
	config_fini(&c);
}

static void test_set_and_table(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	assert_int_equal(config_set(&c, "log", "level", "debug", err), 0);
	assert_string_equal(c.log_level, "debug");
	assert_int_equal(config_set(&c, "log", "nope", "x", err), -ENOENT);
	size_t n;
	const config_key *keys = config_keys(&n);
	assert_true(n >= 10);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(keys[i].help);
		/* every default is itself a valid value */
		assert_int_equal(config_set(&c, keys[i].section, keys[i].name, keys[i].default_value, err), 0);
	}
	config_fini(&c);
	config_fini(&c); /* idempotent */
}


/* ---- [sink.NAME] sections, with two plugin key tables as a sink type would declare them ---- */

typedef struct fake_jsonl {
	char *path;
	bool fsync;
	int64_t max_pending;
	char *format;
} fake_jsonl;

static const config_key jsonl_keys[] = {
	{.section = "sink", .name = "path", .type = CONFIG_STRING, .offset = offsetof(fake_jsonl, path),
	 .default_value = "out.jsonl", .min = 1, .max = 4096, .reloadable = false, .help = "file"},
	{.section = "sink", .name = "fsync", .type = CONFIG_BOOL, .offset = offsetof(fake_jsonl, fsync),
	 .default_value = "true", .min = 0, .max = 1, .reloadable = true, .help = "fsync"},
	{.section = "sink", .name = "max_pending", .type = CONFIG_SIZE, .offset = offsetof(fake_jsonl, max_pending),
	 .default_value = "1MB", .min = 4096, .max = INT64_C(1) << 30, .reloadable = true, .help = "bound"},
	{.section = "sink", .name = "format", .type = CONFIG_ENUM, .offset = offsetof(fake_jsonl, format),
	 .default_value = "compact", .reloadable = true, .help = "compact|pretty: layout"},
};

typedef struct fake_nng {
	char *url;
} fake_nng;

static const config_key nng_keys[] = {
	{.section = "sink", .name = "url", .type = CONFIG_STRING, .offset = offsetof(fake_nng, url),
	 .default_value = "tcp://127.0.0.1:5560", .min = 1, .max = 1024, .reloadable = false, .help = "url"},
};

static const config_table jsonl_table = {jsonl_keys, sizeof(jsonl_keys) / sizeof(jsonl_keys[0]), sizeof(fake_jsonl)};
static const config_table nng_table = {nng_keys, 1, sizeof(fake_nng)};

static int lookup(void *arg, const char *kind, const char *type, config_table *out, char err[CONFIG_ERROR_MAX])
{
	(void)arg;
	assert_string_equal(kind, "sink");
	if (strcmp(type, "jsonl") == 0)
		*out = jsonl_table;
	else if (strcmp(type, "nng") == 0)
		*out = nng_table;
	else {
		snprintf(err, CONFIG_ERROR_MAX, "unknown sink type '%s' (known: jsonl nng)", type);
		return -ENOENT;
	}
	return 0;
}

static void test_sink_sections(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp("[replication]\nslot = s\n"
	                     "[sink.feed]\ntype = jsonl\npath = /var/lib/walcast/feed.jsonl\nfsync = off\n"
	                     "[sink.backend]\ntype = nng\nurl = tcp://0.0.0.0:5560\n"
	                     "[sink.audit-2]\ntype = jsonl\npath = audit.jsonl\nmax_pending = 64MB\nformat = pretty\n"
	                     "[sink.empty]\n");
	assert_int_equal(config_load_file(&c, p, err), 0);
	assert_string_equal(c.slot, "s");
	/* file order, one kind */
	const char *names[] = {"feed", "backend", "audit-2", "empty"};
	const char *types[] = {"jsonl", "nng", "jsonl", NULL};
	size_t i = 0;
	for (const config_section *s = config_section_next(&c, "sink", NULL); s != NULL;
	     s = config_section_next(&c, "sink", s), i++) {
		assert_true(i < 4);
		assert_string_equal(config_section_name(s), names[i]);
		if (types[i] == NULL)
			assert_null(config_section_type(s));
		else
			assert_string_equal(config_section_type(s), types[i]);
	}
	assert_int_equal(i, 4);
	assert_null(config_section_next(&c, "source", NULL));
	/* two instances of one type, each with its own values */
	fake_jsonl a, b;
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "feed"), &jsonl_table, &a, err), 0);
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "audit-2"), &jsonl_table, &b, err), 0);
	assert_string_equal(a.path, "/var/lib/walcast/feed.jsonl");
	assert_false(a.fsync);
	assert_int_equal(a.max_pending, 1 << 20); /* default */
	assert_string_equal(a.format, "compact");
	assert_string_equal(b.path, "audit.jsonl");
	assert_true(b.fsync);
	assert_int_equal(b.max_pending, 64 << 20);
	assert_string_equal(b.format, "pretty");
	config_section_free(&jsonl_table, &a);
	config_section_free(&jsonl_table, &b);
	config_section_free(&jsonl_table, &b); /* safe twice */
	fake_nng n;
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "backend"), &nng_table, &n, err), 0);
	assert_string_equal(n.url, "tcp://0.0.0.0:5560");
	config_section_free(&nng_table, &n);
	/* the empty section has no type: named with the line of its header */
	assert_int_equal(config_check_sections(&c, lookup, NULL, err), -EINVAL);
	if (strstr(err, ":15: [sink.empty]: no type") == NULL)
		fail_msg("%s", err);
	assert_non_null(strstr(err, p));
	unlink(p);
	config_fini(&c);
}

/* A file whose sink sections parse, then fail the check through the lookup with fragment. */
static void expect_sink_error(const char *content, const char *fragment)
{
	config c;
	char err[CONFIG_ERROR_MAX] = "";
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp(content);
	int rc = config_load_file(&c, p, err);
	if (rc == 0)
		rc = config_check_sections(&c, lookup, NULL, err);
	if (rc != -EINVAL || strstr(err, fragment) == NULL || strstr(err, p) == NULL)
		fail_msg("rc %d, error '%s' lacks '%s'", rc, err, fragment);
	unlink(p);
	config_fini(&c);
}

static void test_sink_errors(void **state)
{
	expect_sink_error("[log]\nlevel = info\n[sink.feed]\npath = x\n", ":3: [sink.feed]: no type");
	expect_sink_error("[sink.feed]\n\ntype = kafka\n", ":3: [sink.feed]: unknown sink type 'kafka' (known: jsonl nng)");
	expect_sink_error("[sink.feed]\ntype = jsonl\npath = x\npaht = y\n",
	                  ":4: unknown key 'paht' in section [sink.feed] (type jsonl)");
	expect_sink_error("[sink.feed]\ntype = jsonl\nfsync = sometimes\n",
	                  ":3: sink.feed.fsync: 'sometimes' is not a boolean");
	expect_sink_error("[sink.feed]\ntype = jsonl\nmax_pending = 1kB\n", ":3: sink.feed.max_pending: 1kB is out of range");
	expect_sink_error("[sink.feed]\ntype = jsonl\nformat = fancy\n",
	                  ":3: sink.feed.format: 'fancy' is not one of compact|pretty");
	expect_sink_error("[sink.b]\ntype = nng\nurl = \n", ":3: sink.b.url must be 1 to 1024 characters long");
	/* names: refused where the header is */
	expect_file_error("[replication]\nslot = a\n[sink.my feed]\ntype = jsonl\n", ":3: section [sink.my feed]: the name must be");
	expect_file_error("[sink]\ntype = jsonl\n", ":1: section [sink] needs an instance name: [sink.NAME]");
	expect_file_error("[sink.]\n", ":1: section [sink] needs an instance name");
	expect_file_error("[sinks.feed]\ntype = jsonl\n", ":2: unknown key 'type' in section [sinks.feed]");

	/* the caller's own message through the helper names where the type was set */
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp("[sink.feed]\n\ntype = kafka\n");
	assert_int_equal(config_load_file(&c, p, err), 0);
	const config_section *s = config_section_find(&c, "sink", "feed");
	assert_int_equal(config_section_error(s, err, "unknown sink type '%s'", config_section_type(s)), -EINVAL);
	char want[600];
	snprintf(want, sizeof(want), "%s:3: [sink.feed]: unknown sink type 'kafka'", p);
	assert_string_equal(err, want);
	unlink(p);
	config_fini(&c);
}

static void test_sink_env(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp("[sink.audit]\ntype = jsonl\npath = a\n[sink.audit-log]\ntype = jsonl\npath = b\n"
	                     "[sink.feed]\ntype = jsonl\npath = f\n");
	assert_int_equal(config_load_file(&c, p, err), 0);
	setenv("WALCAST_SINK_AUDIT_PATH", "/env/a", 1);
	setenv("WALCAST_SINK_AUDIT_LOG_PATH", "/env/b", 1); /* longest match: [sink.audit-log] */
	setenv("WALCAST_SINK_AUDIT_LOG_FSYNC", "no", 1);
	setenv("WALCAST_SINK_BACK_END_TYPE", "nng", 1);   /* creates [sink.back_end] */
	setenv("WALCAST_SINK_BACK_END_URL", "tcp://h:1", 1);
	if (config_load_env(&c, err) != 0)
		fail_msg("%s", err);
	fake_jsonl a, b;
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "audit"), &jsonl_table, &a, err), 0);
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "audit-log"), &jsonl_table, &b, err), 0);
	assert_string_equal(a.path, "/env/a");
	assert_true(a.fsync);
	assert_string_equal(b.path, "/env/b");
	assert_false(b.fsync);
	config_section_free(&jsonl_table, &a);
	config_section_free(&jsonl_table, &b);
	const config_section *be = config_section_find(&c, "sink", "back_end");
	assert_non_null(be);
	assert_string_equal(config_section_type(be), "nng");
	fake_nng n;
	assert_int_equal(config_section_apply(be, &nng_table, &n, err), 0);
	assert_string_equal(n.url, "tcp://h:1");
	config_section_free(&nng_table, &n);
	assert_int_equal(config_check_sections(&c, lookup, NULL, err), 0);

	/* an unknown key through the environment: refused once the type is known, naming the variable */
	setenv("WALCAST_SINK_FEED_PAHT", "x", 1);
	assert_int_equal(config_load_env(&c, err), 0);
	assert_int_equal(config_check_sections(&c, lookup, NULL, err), -EINVAL);
	assert_non_null(strstr(err, "environment variable WALCAST_SINK_FEED_PAHT: unknown key 'paht' in section [sink.feed]"));
	unsetenv("WALCAST_SINK_FEED_PAHT");
	/* a bad value through the environment names the variable */
	config c2;
	assert_int_equal(config_init(&c2), 0);
	assert_int_equal(config_load_file(&c2, p, err), 0);
	setenv("WALCAST_SINK_FEED_FSYNC", "maybe", 1);
	assert_int_equal(config_load_env(&c2, err), 0);
	assert_int_equal(config_check_sections(&c2, lookup, NULL, err), -EINVAL);
	config_fini(&c2);
	assert_non_null(strstr(err, "environment variable WALCAST_SINK_FEED_FSYNC: sink.feed.fsync: 'maybe' is not a boolean"));
	unsetenv("WALCAST_SINK_FEED_FSYNC");
	/* a variable under SINK that matches no section is refused (as WALCAST_REPLICATION_SLOTT is) */
	setenv("WALCAST_SINK_NOPE_PATH", "x", 1);
	assert_int_equal(config_load_env(&c, err), -EINVAL);
	assert_non_null(strstr(err, "WALCAST_SINK_NOPE_PATH: no [sink.NAME] section matches"));
	unsetenv("WALCAST_SINK_NOPE_PATH");
	setenv("WALCAST_SINK_", "x", 1);
	assert_int_equal(config_load_env(&c, err), -EINVAL);
	unsetenv("WALCAST_SINK_");
	unsetenv("WALCAST_SINK_AUDIT_PATH");
	unsetenv("WALCAST_SINK_AUDIT_LOG_PATH");
	unsetenv("WALCAST_SINK_AUDIT_LOG_FSYNC");
	unsetenv("WALCAST_SINK_BACK_END_TYPE");
	unsetenv("WALCAST_SINK_BACK_END_URL");
	unlink(p);
	config_fini(&c);
}

/* defaults < file < environment < --set, for table keys and sink keys alike */
static void test_overrides(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(&c), 0);
	char *p = write_temp("[replication]\nslot = file\nplugin = wal2json\npublication = pubfile\n"
	                     "[sink.audit]\ntype = jsonl\npath = /file\nfsync = on\n");
	assert_int_equal(config_load_file(&c, p, err), 0);
	setenv("WALCAST_REPLICATION_SLOT", "env", 1);
	setenv("WALCAST_REPLICATION_PLUGIN", "pgoutput", 1);
	setenv("WALCAST_SINK_AUDIT_PATH", "/env", 1);
	setenv("WALCAST_SINK_AUDIT_FSYNC", "off", 1);
	assert_int_equal(config_load_env(&c, err), 0);
	assert_int_equal(config_set_override(&c, "replication.slot=set", err), 0);
	assert_int_equal(config_set_override(&c, "sink.audit.path=/x", err), 0);
	assert_int_equal(config_set_override(&c, "sink.audit.path=/y=z", err), 0); /* later wins; '=' in value */
	assert_int_equal(config_set_override(&c, "sink.extra.type=nng", err), 0);   /* creates a section */
	assert_int_equal(config_override(&c, "log", "level", "debug", err), 0);
	assert_string_equal(c.slot, "set");
	assert_string_equal(c.plugin, "pgoutput");
	assert_string_equal(c.publication, "pubfile");
	assert_string_equal(c.log_level, "debug");
	fake_jsonl a;
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "audit"), &jsonl_table, &a, err), 0);
	assert_string_equal(a.path, "/y=z");
	assert_false(a.fsync);
	config_section_free(&jsonl_table, &a);
	assert_string_equal(config_section_type(config_section_find(&c, "sink", "extra")), "nng");
	/* a bad --set value of a sink key names the flag */
	assert_int_equal(config_set_override(&c, "sink.audit.fsync=perhaps", err), 0);
	assert_int_equal(config_check_sections(&c, lookup, NULL, err), -EINVAL);
	assert_non_null(strstr(err, "--set sink.audit.fsync: sink.audit.fsync: 'perhaps' is not a boolean"));
	/* refusals */
	const struct { const char *arg; int rc; const char *frag; } bad[] = {
		{"slot=x", -EINVAL, "--set: 'slot=x' is not section.key=value"},
		{"replication.slot", -EINVAL, "is not section.key=value"},
		{".slot=x", -EINVAL, "is not section.key=value"},
		{"replication.=x", -EINVAL, "is not section.key=value"},
		{"replication.slott=x", -ENOENT, "--set: unknown key 'slott' in section [replication]"},
		{"replication.status_interval=soon", -EINVAL, "--set: replication.status_interval: 'soon' is not a duration"},
		{"sink.a b.path=x", -EINVAL, "the name must be"},
		{"sink.path=x", -EINVAL, "needs an instance name"},
		{"log.format=xml", -EINVAL, "log.format: 'xml' is not one of text|json"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = config_set_override(&c, bad[i].arg, err);
		if (rc != bad[i].rc || strstr(err, bad[i].frag) == NULL)
			fail_msg("%s: %d '%s'", bad[i].arg, rc, err);
	}
	unsetenv("WALCAST_REPLICATION_SLOT");
	unsetenv("WALCAST_REPLICATION_PLUGIN");
	unsetenv("WALCAST_SINK_AUDIT_PATH");
	unsetenv("WALCAST_SINK_AUDIT_FSYNC");
	unlink(p);
	config_fini(&c);
}

/* ---- reload ---- */

static void rewrite(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(content, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Loads content as walcast starts (file, environment, one --set). */
static char *start(config *c, const char *content)
{
	char err[CONFIG_ERROR_MAX];
	assert_int_equal(config_init(c), 0);
	char *p = write_temp(content);
	assert_int_equal(config_load_file(c, p, err), 0);
	assert_int_equal(config_load_env(c, err), 0);
	assert_int_equal(config_set_override(c, "replication.publication=fromflag", err), 0);
	if (config_check_sections(c, lookup, NULL, err) != 0)
		fail_msg("%s", err);
	return p;
}

static const char base_conf[] = "[replication]\nslot = s1\nstatus_interval = 10s\n[log]\nlevel = info\n"
                                "[sink.feed]\ntype = jsonl\npath = /a\nfsync = on\n";

static void test_reload_good(void **state)
{
	config c, n;
	char err[CONFIG_ERROR_MAX] = "", changed[CONFIG_ERROR_MAX];
	char *p = start(&c, base_conf);
	/* nothing changed */
	assert_int_equal(config_reload(&c, lookup, NULL, &n, changed, err), 0);
	assert_string_equal(changed, "");
	assert_string_equal(n.publication, "fromflag"); /* the override applies again */
	config_fini(&n);
	/* reloadable keys changed: status_interval, log.level, log.format, sink.feed.fsync ("on" and
	 * "true" are one value: no change) */
	rewrite(p, "[replication]\nslot = s1\nstatus_interval = 2s\n[log]\nlevel = debug\nformat = json\n"
	           "[sink.feed]\ntype = jsonl\npath = /a\nfsync = off\nformat = compact\n");
	memset(&n, 0xA5, sizeof(n));
	if (config_reload(&c, lookup, NULL, &n, changed, err) != 0)
		fail_msg("%s", err);
	assert_string_equal(changed, "replication.status_interval log.level log.format sink.feed.fsync");
	assert_int_equal(n.status_interval_ms, 2000);
	assert_string_equal(n.log_level, "debug");
	assert_string_equal(n.publication, "fromflag");
	assert_int_equal(c.status_interval_ms, 10000); /* running untouched */
	/* committed in place: reloadable values move in, the strings of the others stay put */
	const char *slot_before = c.slot;
	config_reload_commit(&c, &n);
	assert_ptr_equal(c.slot, slot_before);
	assert_string_equal(c.slot, "s1");
	assert_int_equal(c.status_interval_ms, 2000);
	assert_string_equal(c.log_level, "debug");
	assert_string_equal(c.log_format, "json");
	fake_jsonl f;
	assert_int_equal(config_section_apply(config_section_find(&c, "sink", "feed"), &jsonl_table, &f, err), 0);
	assert_false(f.fsync);
	config_section_free(&jsonl_table, &f);
	/* the committed one can be reloaded in turn (it remembers file and overrides) */
	rewrite(p, base_conf);
	assert_int_equal(config_reload(&c, lookup, NULL, &n, changed, err), 0);
	assert_int_equal(n.status_interval_ms, 10000);
	assert_string_equal(n.publication, "fromflag");
	config_fini(&n);
	unlink(p);
	config_fini(&c);
}

static void test_reload_broken(void **state)
{
	config c, n;
	char err[CONFIG_ERROR_MAX] = "", changed[CONFIG_ERROR_MAX];
	char *p = start(&c, base_conf);
	struct {
		const char *content;
		const char *frag;
	} bad[] = {
		{"[replication]\nslot = s1\nstatus_interval = soon\n", ":3: replication.status_interval: 'soon' is not a duration"},
		{"[replication]\nslot = s1\n[log\n", ":3: syntax error"},
		{"[log]\nlevel = loud\n", ":2: log.level: 'loud' is not one of debug|info|warn|error"},
		{"[sink.feed]\ntype = jsonl\npath = /a\nfsink = on\n", ":4: unknown key 'fsink' in section [sink.feed]"},
		{"[sink.feed]\ntype = kafka\n", ":2: [sink.feed]: unknown sink type 'kafka'"},
		{"[sink.feed]\npath = /a\n", ":1: [sink.feed]: no type"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rewrite(p, bad[i].content);
		memset(&n, 0xA5, sizeof(n));
		config before = n;
		int rc = config_reload(&c, lookup, NULL, &n, changed, err);
		if (rc != -EINVAL || strstr(err, bad[i].frag) == NULL || strstr(err, p) == NULL)
			fail_msg("case %zu: %d '%s'", i, rc, err);
		assert_memory_equal(&n, &before, sizeof(n)); /* out untouched */
	}
	/* the running configuration is whole */
	assert_string_equal(c.slot, "s1");
	assert_int_equal(c.status_interval_ms, 10000);
	assert_non_null(config_section_find(&c, "sink", "feed"));
	/* a file gone */
	unlink(p);
	assert_int_equal(config_reload(&c, lookup, NULL, &n, changed, err), -ENOENT);
	assert_non_null(strstr(err, "cannot open"));
	config_fini(&c);
	/* started without a file: nothing to reload */
	assert_int_equal(config_init(&c), 0);
	assert_int_equal(config_reload(&c, lookup, NULL, &n, changed, err), -ENOENT);
	assert_non_null(strstr(err, "without a configuration file"));
	config_fini(&c);
}

static void test_reload_refused(void **state)
{
	config c, n;
	char err[CONFIG_ERROR_MAX] = "", changed[CONFIG_ERROR_MAX];
	char *p = start(&c, base_conf);
	struct {
		const char *content;
		const char *needs;
	} cases[] = {
		{"[replication]\nslot = s2\nstatus_interval = 2s\n[log]\nlevel = info\n[sink.feed]\ntype = jsonl\npath = /a\n",
		 "need a restart: replication.slot (the running"},
		{"[replication]\nslot = s1\n[privacy]\ntxn_memory = 1MB\n[sink.feed]\ntype = jsonl\npath = /b\n",
		 "need a restart: privacy.txn_memory, sink.feed.path (the running"},
		{"[replication]\nslot = s1\n[sink.feed]\ntype = jsonl\npath = /a\n[sink.more]\ntype = nng\n",
		 "need a restart: sink.more (added)"},
		{"[replication]\nslot = s1\n", "need a restart: sink.feed (removed)"},
		{"[replication]\nslot = s1\n[sink.feed]\ntype = nng\n", "need a restart: sink.feed.type"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rewrite(p, cases[i].content);
		int rc = config_reload(&c, lookup, NULL, &n, changed, err);
		if (rc != -EPERM || strstr(err, "reload refused") == NULL || strstr(err, cases[i].needs) == NULL)
			fail_msg("case %zu: %d '%s'", i, rc, err);
	}
	assert_string_equal(c.slot, "s1");
	/* without a lookup, any change of a sink section needs a restart */
	rewrite(p, "[replication]\nslot = s1\n[sink.feed]\ntype = jsonl\npath = /a\nfsync = off\n");
	assert_int_equal(config_reload(&c, NULL, NULL, &n, changed, err), -EPERM);
	assert_non_null(strstr(err, "sink.feed.fsync"));
	/* with it, fsync is reloadable */
	assert_int_equal(config_reload(&c, lookup, NULL, &n, changed, err), 0);
	assert_string_equal(changed, "sink.feed.fsync");
	config_fini(&n);
	unlink(p);
	config_fini(&c);
}

/* ---- the documentation and the sample ---- */

static char *slurp(const char *rel)
{
	const char *dir = getenv("WALCAST_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir != NULL ? dir : ".", rel);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		fail_msg("cannot open %s", path);
	char *text = malloc(1 << 18);
	assert_non_null(text);
	size_t n = fread(text, 1, (1 << 18) - 1, f);
	fclose(f);
	text[n] = '\0';
	return text;
}

/* Every key of the table is a row of docs/configuration.md: "| section | key | type | default |". */
static void test_docs_every_key(void **state)
{
	char *doc = slurp("docs/configuration.md");
	size_t n;
	const config_key *keys = config_keys(&n);
	for (size_t i = 0; i < n; i++) {
		char row[256];
		snprintf(row, sizeof(row), "\n| %s | %s | ", keys[i].section, keys[i].name);
		const char *r = strstr(doc, row);
		if (r == NULL)
			fail_msg("docs/configuration.md has no row for %s.%s", keys[i].section, keys[i].name);
		/* the default is in the row (empty shown as "(empty)") */
		const char *end = strchr(r + 1, '\n');
		char def[128];
		snprintf(def, sizeof(def), "| %s", keys[i].default_value[0] ? keys[i].default_value : "(empty)");
		const char *d = strstr(r, def);
		if (d == NULL || d > end)
			fail_msg("docs/configuration.md: the row of %s.%s does not show its default '%s'", keys[i].section,
			         keys[i].name, keys[i].default_value);
	}
	free(doc);
}

/* deploy/walcast.conf loads, has every key of the table under its section (commented lines show
 * the default), and its sink sections are there raw. */
static void test_sample_config(void **state)
{
	config c;
	char err[CONFIG_ERROR_MAX];
	const char *dir = getenv("WALCAST_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/deploy/walcast.conf", dir != NULL ? dir : ".");
	assert_int_equal(config_init(&c), 0);
	if (config_load_file(&c, path, err) != 0)
		fail_msg("%s", err);
	assert_int_equal(config_check_sections(&c, NULL, NULL, err), 0);
	const config_section *feed = config_section_find(&c, "sink", "feed");
	const config_section *backend = config_section_find(&c, "sink", "backend");
	assert_non_null(feed);
	assert_non_null(backend);
	assert_string_equal(config_section_type(feed), "jsonl");
	assert_string_equal(config_section_type(backend), "nng");
	config_fini(&c);

	char *text = slurp("deploy/walcast.conf");
	size_t n;
	const config_key *keys = config_keys(&n);
	for (size_t i = 0; i < n; i++) {
		char header[64];
		snprintf(header, sizeof(header), "\n[%s]\n", keys[i].section);
		const char *sec = strstr(text, header);
		if (sec == NULL) {
			fail_msg("deploy/walcast.conf has no [%s]", keys[i].section);
			return;
		}
		const char *next = strstr(sec + 1, "\n[");
		bool found = false;
		for (const char *l = sec + 1; l != NULL && (next == NULL || l < next) && !found; l = strchr(l, '\n')) {
			l++;
			bool commented = l[0] == ';' || l[0] == '#';
			const char *k = commented ? l + 1 + (l[1] == ' ') : l;
			size_t kl = strlen(keys[i].name);
			if (strncmp(k, keys[i].name, kl) != 0 || strncmp(k + kl, " =", 2) != 0)
				continue;
			found = true;
			if (commented) {
				const char *v = k + kl + 2;
				while (*v == ' ')
					v++;
				size_t vl = strcspn(v, "\n");
				if (vl != strlen(keys[i].default_value) || strncmp(v, keys[i].default_value, vl) != 0)
					fail_msg("deploy/walcast.conf: commented %s.%s shows '%.*s', the default is '%s'",
					         keys[i].section, keys[i].name, (int)vl, v, keys[i].default_value);
			}
		}
		if (!found)
			fail_msg("deploy/walcast.conf lacks %s.%s", keys[i].section, keys[i].name);
	}
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),   cmocka_unit_test(test_file_ok),
		cmocka_unit_test(test_file_errors), cmocka_unit_test(test_file_missing),
		cmocka_unit_test(test_env),        cmocka_unit_test(test_set_and_table),
		cmocka_unit_test(test_file_is_directory), cmocka_unit_test(test_env_unknown_keys),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_sink_sections), cmocka_unit_test(test_sink_errors),
		cmocka_unit_test(test_sink_env), cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_reload_good), cmocka_unit_test(test_reload_broken),
		cmocka_unit_test(test_reload_refused), cmocka_unit_test(test_docs_every_key),
		cmocka_unit_test(test_sample_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
