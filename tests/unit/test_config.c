/* Unit tests for config: defaults, file parsing with file:line errors, environment, bounds. */
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
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/walcast-test-config.XXXXXX");
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),   cmocka_unit_test(test_file_ok),
		cmocka_unit_test(test_file_errors), cmocka_unit_test(test_file_missing),
		cmocka_unit_test(test_env),        cmocka_unit_test(test_set_and_table),
		cmocka_unit_test(test_file_is_directory), cmocka_unit_test(test_env_unknown_keys),
		cmocka_unit_test(test_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
