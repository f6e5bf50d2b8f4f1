/*
 * test_txnrows — unit tests for the set of row versions a transaction created
 * (src/policy/txnrows.h): a version is found again by its table and key, whether the old tuple
 * carries the key only (REPLICA IDENTITY DEFAULT) or every column; another table, another key,
 * NULL versus empty text are other rows; every column is the identity when the relation marks
 * no key; a key the tuple does not carry is never recorded; the table grows and is reset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "change.h"
#include "txnrows.h"

static rel_column ev_cols[] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "status", .type_oid = 25, .typmod = -1},
};
static relation ev = {.schema = "public", .name = "events", .ncols = 3, .cols = ev_cols, .replident = 'd'};
static relation ct = {.schema = "public", .name = "contacts", .ncols = 3, .cols = ev_cols, .replident = 'd'};
static rel_column nokey_cols[] = {
	{.name = "a", .type_oid = 25, .typmod = -1},
	{.name = "b", .type_oid = 25, .typmod = -1},
};
static relation nokey = {.schema = "public", .name = "log", .ncols = 2, .cols = nokey_cols, .replident = 'f'};

static change_value text(const char *s)
{
	return (change_value){VALUE_TEXT, (uint32_t)strlen(s), s};
}

static const change_value NUL = {VALUE_NULL, 0, NULL};
static const change_value ABSENT = {VALUE_ABSENT, 0, NULL};
static const change_value UNCHANGED = {VALUE_UNCHANGED, 0, NULL};

static void test_identity(void **state)
{
	(void)state;
	txnrows *t = NULL;
	assert_int_equal(txnrows_create(&t), 0);
	change_value full[3] = {text("e1"), text("o1"), text("new")};
	change_value key_only[3] = {text("e1"), ABSENT, ABSENT};
	change_value other_vals[3] = {text("e1"), text("o2"), text("answered")};
	change_value other_key[3] = {text("e2"), text("o1"), text("new")};
	assert_false(txnrows_has(t, &ev, full));
	assert_int_equal(txnrows_add(t, &ev, full), 1);
	assert_true(txnrows_has(t, &ev, full));
	assert_true(txnrows_has(t, &ev, key_only));   /* a DEFAULT identity's old tuple */
	assert_true(txnrows_has(t, &ev, other_vals)); /* the key decides, not the other columns */
	assert_false(txnrows_has(t, &ev, other_key));
	assert_false(txnrows_has(t, &ct, full)); /* the same key in another table */
	assert_int_equal(txnrows_add(t, &ev, full), 1);
	assert_int_equal(txnrows_count(t), 1);
	/* NULL and empty text are different keys */
	change_value knull[3] = {NUL, ABSENT, ABSENT}, kempty[3] = {text(""), ABSENT, ABSENT};
	assert_int_equal(txnrows_add(t, &ev, knull), 1);
	assert_true(txnrows_has(t, &ev, knull));
	assert_false(txnrows_has(t, &ev, kempty));
	/* a key the tuple does not carry: never recorded, never found */
	change_value kunch[3] = {UNCHANGED, text("o1"), text("new")};
	assert_int_equal(txnrows_add(t, &ev, kunch), 0);
	assert_false(txnrows_has(t, &ev, kunch));
	/* no key column: every column is the identity */
	change_value r1[2] = {text("x"), text("y")}, r2[2] = {text("x"), text("z")}, r3[2] = {text("xy"), text("")};
	assert_int_equal(txnrows_add(t, &nokey, r1), 1);
	assert_true(txnrows_has(t, &nokey, r1));
	assert_false(txnrows_has(t, &nokey, r2));
	assert_false(txnrows_has(t, &nokey, r3)); /* values are delimited, not concatenated */
	txnrows_reset(t);
	assert_int_equal(txnrows_count(t), 0);
	assert_false(txnrows_has(t, &ev, full));
	txnrows_destroy(t);
}

static void test_growth(void **state)
{
	(void)state;
	txnrows *t = NULL;
	assert_int_equal(txnrows_create(&t), 0);
	size_t initial = txnrows_bytes(t);
	static char ids[20000][16];
	for (int i = 0; i < 20000; i++) {
		snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
		change_value v[3] = {text(ids[i]), ABSENT, ABSENT};
		assert_int_equal(txnrows_add(t, &ev, v), 1);
	}
	assert_int_equal(txnrows_count(t), 20000);
	assert_true(txnrows_bytes(t) > initial);
	assert_true(txnrows_bytes(t) <= 20000 * 16 * 8 / 3 + 16); /* at most 3/4 full after growth, at least 3/8 */
	for (int i = 0; i < 20000; i++) {
		change_value v[3] = {text(ids[i]), ABSENT, ABSENT};
		assert_true(txnrows_has(t, &ev, v));
	}
	change_value miss[3] = {text("id-20000"), ABSENT, ABSENT};
	assert_false(txnrows_has(t, &ev, miss));
	txnrows_reset(t);
	assert_int_equal(txnrows_bytes(t), initial); /* a large table is freed at reset */
	change_value first[3] = {text(ids[0]), ABSENT, ABSENT};
	assert_false(txnrows_has(t, &ev, first));
	txnrows_destroy(t);
	txnrows_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_growth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
