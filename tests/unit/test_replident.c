/*
 * test_replident — unit tests for the replica identity check's column logic (src/policy/replident.h)
 * on the platform's own policy (deploy/policy.ini): which columns each table's old rows must
 * carry, and which catalog states (DEFAULT, USING INDEX, FULL, NOTHING, a missing index) fall
 * short, with the table, the missing columns and the fix named. The check against a real
 * catalog is tests/integration/replident.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "policy.h"
#include "replident.h"

static int setup(void **state)
{
	policy *p = NULL;
	char err[POLICY_ERROR_MAX];
	if (policy_load_file("deploy/policy.ini", &p, err) != 0) {
		fprintf(stderr, "policy: %s\n", err);
		return -1;
	}
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	policy_destroy(*state);
	return 0;
}

static const policy_table *table(void **state, const char *name)
{
	const policy_table *t = policy_table_find(*state, "public", 6, name, strlen(name));
	assert_non_null(t);
	return t;
}

/* The needed columns of table name, comma-separated in `columns` order. */
static char *needed(void **state, const char *name)
{
	const policy_table *t = table(state, name);
	size_t n = policy_table_ncols(t);
	bool need[64];
	assert_true(n <= 64);
	memset(need, 1, sizeof(need));
	replident_needed(t, need);
	static char out[256];
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (!need[i])
			continue;
		if (out[0])
			strcat(out, ",");
		strcat(out, policy_table_column(t, i));
	}
	return out;
}

static void test_needed_columns(void **state)
{
	assert_string_equal(needed(state, "orgs"), "id");
	assert_string_equal(needed(state, "org_roles"), "org_id");
	assert_string_equal(needed(state, "contacts"), "id,org_id");            /* privacy(id) */
	assert_string_equal(needed(state, "privacy_rules"), "org_id");
	/* user_id = uid, privacy(contact_id), the body's condition and its context (id) */
	assert_string_equal(needed(state, "events"), "id,org_id,contact_id,user_id");
	assert_string_equal(needed(state, "audit_log"), "org_id");
	assert_string_equal(needed(state, "sync_health"), "org_id");
}

/* Runs replident_table_check and returns its result, the report in *out (static). */
static int judge(void **state, const char *name, char kind, const char *const *ident, size_t n,
                 const char **out)
{
	static char text[1024];
	buf report;
	buf_init(&report);
	int rc = replident_table_check(table(state, name), kind, ident, n, &report);
	snprintf(text, sizeof(text), "%s", report.data ? report.data : "");
	buf_fini(&report);
	*out = text;
	return rc;
}

static void test_table_check(void **state)
{
	const char *r;
	const char *pk_id[] = {"id"};
	const char *id_org[] = {"id", "org_id"};
	/* audit_log's old default: the primary key (id) lacks org_id */
	assert_int_equal(judge(state, "audit_log", 'd', pk_id, 1, &r), 1);
	assert_non_null(strstr(r, "public.audit_log"));
	assert_non_null(strstr(r, "does not carry org_id,"));
	assert_non_null(strstr(r, "ALTER TABLE public.audit_log REPLICA IDENTITY FULL;"));
	assert_int_equal(r[strlen(r) - 1], '\n');
	/* FULL, or an index that carries (id, org_id), suffices */
	assert_int_equal(judge(state, "audit_log", 'f', NULL, 0, &r), 0);
	assert_string_equal(r, "");
	assert_int_equal(judge(state, "audit_log", 'i', id_org, 2, &r), 0);
	/* orgs: the org column is the primary key */
	assert_int_equal(judge(state, "orgs", 'd', pk_id, 1, &r), 0);
	/* NOTHING carries nothing, whatever index there is */
	assert_int_equal(judge(state, "orgs", 'n', pk_id, 1, &r), 1);
	assert_non_null(strstr(r, "NOTHING does not carry id,"));
	/* DEFAULT without a primary key, USING INDEX whose index was dropped: nothing */
	assert_int_equal(judge(state, "sync_health", 'd', NULL, 0, &r), 1);
	assert_non_null(strstr(r, "does not carry org_id,"));
	assert_int_equal(judge(state, "sync_health", 'i', NULL, 0, &r), 1);
	/* events under its primary key: every rule column but id is missing, named in order */
	assert_int_equal(judge(state, "events", 'd', pk_id, 1, &r), 1);
	assert_non_null(strstr(r, "replica identity DEFAULT (primary key) (id) does not carry org_id, "
	                          "contact_id, user_id,"));
	/* an index on (org_id) alone lacks the context column id and the rule columns */
	const char *org_only[] = {"org_id"};
	assert_int_equal(judge(state, "events", 'i', org_only, 1, &r), 1);
	assert_non_null(strstr(r, "does not carry id, contact_id, user_id,"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_needed_columns),
		cmocka_unit_test(test_table_check),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
