/*
 * test_change — unit tests for the normalized change record (src/stream/change.h): its one JSON form
 * (every object written is parsed back with jansson and checked field by field), typed values,
 * absent and unchanged columns, messages, the relation-shape flag, change_fill_unchanged, the
 * timestamp format and the action names.
 *
 * Needs jansson at link time (-ljansson).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "change.h"
#include "relcache.h"

/* Type OIDs (pg_type.dat). */
enum {
	T_BOOL = 16,
	T_INT8 = 20,
	T_INT2 = 21,
	T_INT4 = 23,
	T_TEXT = 25,
	T_OID = 26,
	T_JSON = 114,
	T_FLOAT4 = 700,
	T_FLOAT8 = 701,
	T_INT4ARRAY = 1007,
	T_VARCHAR = 1043,
	T_TIMESTAMPTZ = 1184,
	T_NUMERIC = 1700,
	T_UUID = 2950,
	T_JSONB = 3802,
};

/* Types whose every value is exact as an IEEE double: written as JSON numbers. */
static const int numeric_oids[] = {T_INT2, T_INT4, T_OID, T_FLOAT4, T_FLOAT8};
/* Types that are not (int8 beyond 2^53, numeric's digits): always JSON strings. */
static const int exact_oids[] = {T_INT8, T_NUMERIC};

/* ---- values --------------------------------------------------------------------------- */

static change_value TXT(const char *s)
{
	return (change_value){.kind = VALUE_TEXT, .len = (uint32_t)strlen(s), .data = s};
}
#define NUL_V ((change_value){.kind = VALUE_NULL})
#define ABSENT_V ((change_value){.kind = VALUE_ABSENT})
#define UNCH_V ((change_value){.kind = VALUE_UNCHANGED})

/* ---- output capture: each test's output buffer and parsed documents --------------------- */

typedef struct ctx {
	buf out;       /* the last object written */
	size_t jflags; /* the jansson flags it was parsed with */
	json_t *docs;  /* every parsed object, released in teardown */
} ctx;

static int setup(void **state)
{
	ctx *x = calloc(1, sizeof(*x));
	if (x == NULL)
		return -1;
	buf_init(&x->out);
	x->docs = json_array();
	if (x->docs == NULL) {
		free(x);
		return -1;
	}
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	ctx *x = *state;
	buf_fini(&x->out);
	json_decref(x->docs);
	free(x);
	return 0;
}

/* change_json_write_cached writes exactly what change_json_write wrote (x->out), building the
 * cache entries (first call) and taking them from the cache (second call); the relation gets an
 * id, as a relcache's relations have. */
static void same_when_cached(ctx *x, const change *c, unsigned flags)
{
	change_json_cache *jc = change_json_cache_create();
	assert_non_null(jc);
	relation r;
	change cc = *c;
	if (c->rel != NULL) {
		r = *c->rel;
		r.id = 77;
		cc.rel = &r;
	}
	for (int pass = 0; pass < 2; pass++) {
		buf b;
		buf_init(&b);
		assert_int_equal(buf_puts(&b, "prefix "), 0); /* appends, like change_json_write */
		assert_int_equal(change_json_write_cached(jc, &b, &cc, flags), 0);
		if (b.len != x->out.len + 7 || memcmp(b.data + 7, x->out.data, x->out.len) != 0)
			fail_msg("cached (pass %d): %s\nuncached: %s", pass, b.data + 7, x->out.data);
		buf_fini(&b);
	}
	change_json_cache_destroy(jc);
}

/* Writes c and parses the result as exactly one JSON object (no duplicate keys, nothing after
 * it); the document stays valid until the end of the test. */
static json_t *render_x(ctx *x, const change *c, unsigned flags, size_t jflags)
{
	buf_clear(&x->out);
	int rc = change_json_write(&x->out, c, flags);
	if (rc != 0)
		fail_msg("change_json_write returned %d", rc);
	assert_non_null(x->out.data);
	assert_int_equal(strlen(x->out.data), x->out.len);
	same_when_cached(x, c, flags);
	json_error_t err;
	x->jflags = jflags;
	json_t *j = json_loadb(x->out.data, x->out.len, JSON_REJECT_DUPLICATES | jflags, &err);
	if (j == NULL)
		fail_msg("invalid JSON (%s at %d): %s", err.text, err.position, x->out.data);
	assert_int_equal(json_array_append_new(x->docs, j), 0);
	assert_true(json_is_object(j));
	return j;
}

static json_t *render(ctx *x, const change *c, unsigned flags)
{
	return render_x(x, c, flags, 0);
}

static json_t *get(ctx *x, const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (v == NULL)
		fail_msg("key \"%s\" missing in %s", key, x->out.data);
	return v;
}

static void expect_absent(ctx *x, const json_t *obj, const char *key)
{
	if (json_object_get(obj, key) != NULL)
		fail_msg("key \"%s\" should be absent in %s", key, x->out.data);
}

static void expect_str(ctx *x, const json_t *obj, const char *key, const char *want)
{
	json_t *v = get(x, obj, key);
	if (!json_is_string(v))
		fail_msg("\"%s\" is not a string in %s", key, x->out.data);
	assert_string_equal(json_string_value(v), want);
}

static void expect_int(ctx *x, const json_t *obj, const char *key, json_int_t want)
{
	json_t *v = get(x, obj, key);
	if (!json_is_integer(v))
		fail_msg("\"%s\" is not an integer in %s", key, x->out.data);
	assert_true(json_integer_value(v) == want);
}

static void expect_real(ctx *x, const json_t *obj, const char *key, double want)
{
	json_t *v = get(x, obj, key);
	if (!json_is_real(v))
		fail_msg("\"%s\" is not a real in %s", key, x->out.data);
	assert_true(json_real_value(v) == want);
}

static void expect_null(ctx *x, const json_t *obj, const char *key)
{
	if (!json_is_null(get(x, obj, key)))
		fail_msg("\"%s\" is not null in %s", key, x->out.data);
}

/* obj[key] equals the JSON document text (read the way the output was). */
static void expect_json(ctx *x, const json_t *obj, const char *key, const char *text)
{
	json_t *want = json_loads(text, JSON_DECODE_ANY | x->jflags, NULL);
	assert_non_null(want);
	bool eq = json_equal(get(x, obj, key), want);
	json_decref(want);
	if (!eq)
		fail_msg("\"%s\" is not %s in %s", key, text, x->out.data);
}

/* The raw output contains needle. */
static void expect_raw(ctx *x, const char *needle)
{
	if (strstr(x->out.data, needle) == NULL)
		fail_msg("output lacks %s: %s", needle, x->out.data);
}

/* ---- fixtures ------------------------------------------------------------------------- */

static const change_txn txn750 = {
	.xid = 750,
	.commit_lsn = UINT64_C(0x16B37A0),
	.end_lsn = UINT64_C(0x16B37D0),
	.commit_time = INT64_C(1767323045123456), /* 2026-01-02T03:04:05.123456Z */
};

/* A one-column relation "public"."one" whose column is *col. */
static relation one_relation(rel_column *col)
{
	return (relation){
		.oid = 16390, .schema = "public", .name = "one", .ncols = 1, .cols = col, .replident = 'd',
	};
}

/* A single-column insert of a value of the given type; returns the parsed "new" object. */
static json_t *render_one(ctx *x, uint32_t type_oid, change_value v)
{
	rel_column col = {.name = "v", .type_oid = type_oid, .typmod = -1};
	relation rel = one_relation(&col);
	change_value nt[1] = {v};
	change c = {.action = CHANGE_INSERT, .lsn = 1, .txn = &txn750, .rel = &rel, .new_tuple = nt};
	json_t *j = render_x(x, &c, 0, JSON_DECODE_INT_AS_REAL);
	return get(x, j, "new");
}

/* ---- action names and parsing ----------------------------------------------------------- */

static void test_action_names(void **state)
{
	static const struct {
		change_action a;
		const char *name;
	} cases[] = {
		{CHANGE_INSERT, "insert"},     {CHANGE_UPDATE, "update"},   {CHANGE_DELETE, "delete"},
		{CHANGE_TRUNCATE, "truncate"}, {CHANGE_MESSAGE, "message"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_string_equal(change_action_name(cases[i].a), cases[i].name);
		change_action got = (change_action)0;
		assert_int_equal(change_action_parse(cases[i].name, &got), 0);
		assert_int_equal(got, cases[i].a);
	}
	/* Out-of-range values get a name that is not mistaken for a real action. */
	for (int bad = -1; bad <= 0; bad++) {
		const char *n = change_action_name((change_action)bad);
		assert_non_null(n);
		change_action got = CHANGE_DELETE;
		assert_int_equal(change_action_parse(n, &got), -EINVAL);
	}
	const char *n = change_action_name((change_action)(CHANGE_MESSAGE + 1));
	assert_non_null(n);
	change_action got = CHANGE_DELETE;
	assert_int_equal(change_action_parse(n, &got), -EINVAL);
}

static void test_action_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"", "INSERT", "Insert", "insert ", " insert", "ins", "inserts", "insert\n",
		"updat", "deletee", "truncated", "msg", "begin", "commit", "unknown", "0", "1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		change_action got = CHANGE_TRUNCATE;
		if (change_action_parse(bad[i], &got) != -EINVAL)
			fail_msg("change_action_parse(\"%s\") accepted", bad[i]);
		assert_int_equal(got, CHANGE_TRUNCATE); /* untouched on failure */
	}
}

/* ---- change_time_format ----------------------------------------------------------------- */

static void test_time_format(void **state)
{
	static const struct {
		int64_t us;
		const char *want;
	} cases[] = {
		{0, "1970-01-01T00:00:00.000000Z"},
		{1, "1970-01-01T00:00:00.000001Z"},
		{999999, "1970-01-01T00:00:00.999999Z"},
		{1000000, "1970-01-01T00:00:01.000000Z"},
		{INT64_C(1767323045123456), "2026-01-02T03:04:05.123456Z"},
		{INT64_C(1709251199999999), "2024-02-29T23:59:59.999999Z"},
		{PG_EPOCH_OFFSET_US, "2000-01-01T00:00:00.000000Z"},
		{INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z"},
		/* Before 1970: the microseconds still count forward within the second. */
		{-1, "1969-12-31T23:59:59.999999Z"},
		{-999999, "1969-12-31T23:59:59.000001Z"},
		{-1000000, "1969-12-31T23:59:59.000000Z"},
		{-1000001, "1969-12-31T23:59:58.999999Z"},
		{INT64_C(-14182940000000), "1969-07-20T20:17:40.000000Z"},
		{INT64_C(-14182939500000), "1969-07-20T20:17:40.500000Z"},
		{INT64_C(-2208988800000000), "1900-01-01T00:00:00.000000Z"},
		{INT64_C(-2208988799999999), "1900-01-01T00:00:00.000001Z"},
		{INT64_C(-62135596800000000), "0001-01-01T00:00:00.000000Z"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char outbuf[CHANGE_TIME_MAX];
		memset(outbuf, 'X', sizeof(outbuf));
		change_time_format(cases[i].us, outbuf);
		if (strcmp(outbuf, cases[i].want) != 0)
			fail_msg("change_time_format(%lld) = %s, want %s", (long long)cases[i].us,
			         outbuf, cases[i].want);
	}
}

static void test_time_format_pg_epoch_conversion(void **state)
{
	/* A PostgreSQL timestamp (µs since 2000-01-01) converted with PG_EPOCH_OFFSET_US. */
	char outbuf[CHANGE_TIME_MAX];
	int64_t pg_us = INT64_C(820638245123456); /* 2026-01-02 03:04:05.123456 since 2000 */
	change_time_format(pg_us + PG_EPOCH_OFFSET_US, outbuf);
	assert_string_equal(outbuf, "2026-01-02T03:04:05.123456Z");
	change_time_format(-1 + PG_EPOCH_OFFSET_US, outbuf);
	assert_string_equal(outbuf, "1999-12-31T23:59:59.999999Z");
}

static void test_time_format_extremes_terminate(void **state)
{
	/* Whatever the extremes print, it is a NUL-terminated string inside the 40 bytes. */
	const int64_t extremes[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1};
	for (size_t i = 0; i < sizeof(extremes) / sizeof(extremes[0]); i++) {
		char outbuf[CHANGE_TIME_MAX];
		memset(outbuf, 'X', sizeof(outbuf));
		change_time_format(extremes[i], outbuf);
		assert_non_null(memchr(outbuf, '\0', sizeof(outbuf)));
		assert_int_equal(outbuf[strlen(outbuf) - 1], 'Z');
	}
}

/* ---- change_json_write: the record ------------------------------------------------------ */

static rel_column difftypes_cols[] = {
	{.name = "id", .type_oid = T_INT8, .typmod = -1, .key = true},
	{.name = "small", .type_oid = T_INT2, .typmod = -1},
	{.name = "i", .type_oid = T_INT4, .typmod = -1},
	{.name = "o", .type_oid = T_OID, .typmod = -1},
	{.name = "f4", .type_oid = T_FLOAT4, .typmod = -1},
	{.name = "f8", .type_oid = T_FLOAT8, .typmod = -1},
	{.name = "n", .type_oid = T_NUMERIC, .typmod = 1310726},
	{.name = "ok", .type_oid = T_BOOL, .typmod = -1},
	{.name = "nok", .type_oid = T_BOOL, .typmod = -1},
	{.name = "t", .type_oid = T_TEXT, .typmod = -1},
	{.name = "vc", .type_oid = T_VARCHAR, .typmod = 44},
	{.name = "j", .type_oid = T_JSONB, .typmod = -1},
	{.name = "js", .type_oid = T_JSON, .typmod = -1},
	{.name = "ts", .type_oid = T_TIMESTAMPTZ, .typmod = -1},
	{.name = "arr", .type_oid = T_INT4ARRAY, .typmod = -1},
	{.name = "u", .type_oid = T_UUID, .typmod = -1},
	{.name = "nul", .type_oid = T_TEXT, .typmod = -1},
};
enum { DIFFTYPES_NCOLS = sizeof(difftypes_cols) / sizeof(difftypes_cols[0]) };
static relation difftypes = {
	.oid = 16385,
	.schema = "public",
	.name = "difftypes",
	.ncols = DIFFTYPES_NCOLS,
	.cols = difftypes_cols,
	.replident = 'd',
};

#define TRICKY_TEXT \
	"tab\there\nnewline \"quote\" back\\slash \xC3\xBCn\xC3\xAF \xF0\x9F\x98\x80 \x01"

static void test_insert_typed_values(void **state)
{
	ctx *x = *state;
	change_value nt[DIFFTYPES_NCOLS] = {
		TXT("1"),
		TXT("-32768"),
		TXT("2147483647"),
		TXT("4294967295"),
		TXT("1.5"),
		TXT("1e-300"),
		TXT("12345.678900"),
		TXT("t"),
		TXT("f"),
		TXT(TRICKY_TEXT),
		TXT("v"),
		TXT("{\"a\": [1, 2, {\"b\": null}], \"s\": \"x\\\"y\"}"),
		TXT("{\"k\" : 1}"),
		TXT("2026-01-02 03:04:05.123456+00"),
		TXT("{1,2,3}"),
		TXT("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
		NUL_V,
	};
	change c = {
		.action = CHANGE_INSERT,
		.lsn = UINT64_C(0x16B3748),
		.txn = &txn750,
		.rel = &difftypes,
		.new_tuple = nt,
	};
	json_t *j = render(x, &c, 0);
	expect_str(x, j, "lsn", "0/16B3748");
	expect_int(x, j, "xid", 750);
	expect_str(x, j, "commit_lsn", "0/16B37A0");
	expect_str(x, j, "commit_time", "2026-01-02T03:04:05.123456Z");
	expect_str(x, j, "action", "insert");
	expect_str(x, j, "schema", "public");
	expect_str(x, j, "table", "difftypes");
	expect_absent(x, j, "old");
	expect_absent(x, j, "unchanged");
	expect_absent(x, j, "columns");

	json_t *n = get(x, j, "new");
	assert_true(json_is_object(n));
	assert_int_equal(json_object_size(n), DIFFTYPES_NCOLS);
	expect_str(x, n, "id", "1"); /* int8: a string, whatever its value */
	expect_int(x, n, "small", -32768);
	expect_int(x, n, "i", 2147483647);
	expect_int(x, n, "o", INT64_C(4294967295));
	expect_real(x, n, "f4", 1.5);
	expect_real(x, n, "f8", 1e-300);
	expect_str(x, n, "n", "12345.678900"); /* numeric: the text digit for digit, not re-rounded */
	assert_true(json_is_true(get(x, n, "ok")));
	assert_true(json_is_false(get(x, n, "nok")));
	expect_str(x, n, "t", TRICKY_TEXT);
	expect_str(x, n, "vc", "v");
	expect_json(x, n, "j", "{\"a\": [1, 2, {\"b\": null}], \"s\": \"x\\\"y\"}");
	expect_json(x, n, "js", "{\"k\": 1}");
	expect_str(x, n, "ts", "2026-01-02 03:04:05.123456+00");
	expect_str(x, n, "arr", "{1,2,3}");
	expect_str(x, n, "u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
	expect_null(x, n, "nul");
}

static void test_numbers_kept_as_numbers(void **state)
{
	ctx *x = *state;
	static const char *const valid[] = {
		"0", "-0", "7", "-42", "2147483647", "-2147483648", "9223372036854775807",
		"-9223372036854775808", "1.5", "-0.000001", "12345.678900", "0.0", "1e+100", "1E-7",
		"-3.4e+38", "2.5e10", "1e-300", "3.4028235e+38",
	};
	char needle[64];
	for (size_t t = 0; t < sizeof(numeric_oids) / sizeof(numeric_oids[0]); t++) {
		for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
			json_t *n = render_one(x, (uint32_t)numeric_oids[t], TXT(valid[i]));
			if (!json_is_number(get(x, n, "v")))
				fail_msg("type %d value %s not a number: %s", numeric_oids[t], valid[i], x->out.data);
			snprintf(needle, sizeof(needle), "\"v\":%s}", valid[i]);
			expect_raw(x, needle);
		}
	}
}

static void test_non_json_numbers_become_strings(void **state)
{
	ctx *x = *state;
	/* Texts a numeric type can carry (NaN, ±Infinity) or that are not JSON numbers must be
	 * strings: written raw they would make the whole line invalid JSON. */
	static const char *const texts[] = {
		"NaN", "Infinity", "-Infinity", "inf", "+1", ".5", "1.", "01", "-01", "00", "1e", "1e+",
		"1e-", "e5", "0x10", "", "1 ", " 1", "--1", "-", "1.5.5", "1,5", "1e5x", "1..2", "-.5",
		"\xD9\xA1",
	};
	for (size_t t = 0; t < sizeof(numeric_oids) / sizeof(numeric_oids[0]); t++) {
		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
			json_t *n = render_one(x, (uint32_t)numeric_oids[t], TXT(texts[i]));
			json_t *v = get(x, n, "v");
			if (!json_is_string(v) || strcmp(json_string_value(v), texts[i]) != 0)
				fail_msg("type %d value \"%s\" not kept as a string: %s", numeric_oids[t],
				         texts[i], x->out.data);
		}
	}
}

static void test_exact_types_are_strings(void **state)
{
	ctx *x = *state;
	/* int8 and numeric travel as strings holding PostgreSQL's text: a JavaScript reader parsing
	 * a number rounds 9007199254740993 to ...992. Per type, never per value, so a consumer's
	 * type for the column does not depend on the row. */
	static const char *const texts[] = {
		"0", "-0", "7", "-42", "9007199254740991", "9007199254740992", "9007199254740993",
		"-9007199254740993", "9223372036854775807", "-9223372036854775808", "1.5", "12345.678900",
		"0.0", "NaN", "Infinity", "-Infinity", "123456789012345678901234567890",
	};
	char needle[96];
	for (size_t t = 0; t < sizeof(exact_oids) / sizeof(exact_oids[0]); t++) {
		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
			json_t *n = render_one(x, (uint32_t)exact_oids[t], TXT(texts[i]));
			json_t *v = get(x, n, "v");
			if (!json_is_string(v) || strcmp(json_string_value(v), texts[i]) != 0)
				fail_msg("type %d value %s not the exact string: %s", exact_oids[t], texts[i], x->out.data);
			snprintf(needle, sizeof(needle), "\"v\":\"%s\"}", texts[i]);
			expect_raw(x, needle);
		}
		expect_null(x, render_one(x, (uint32_t)exact_oids[t], NUL_V), "v");
	}

	/* numeric has up to 131072 digits before the point: every digit survives. */
	static char digits[1302];
	memset(digits, '9', 300);
	digits[300] = '.';
	memset(digits + 301, '1', 1000);
	digits[1301] = '\0';
	json_t *n = render_one(x, T_NUMERIC, TXT(digits));
	json_t *v = get(x, n, "v");
	assert_true(json_is_string(v));
	assert_string_equal(json_string_value(v), digits);
}

static void test_bool_values(void **state)
{
	ctx *x = *state;
	assert_true(json_is_true(get(x, render_one(x, T_BOOL, TXT("t")), "v")));
	assert_true(json_is_false(get(x, render_one(x, T_BOOL, TXT("f")), "v")));
	expect_null(x, render_one(x, T_BOOL, NUL_V), "v");
	/* Anything else PostgreSQL never sends for bool: still valid JSON, as a string. */
	expect_str(x, render_one(x, T_BOOL, TXT("true")), "v", "true");
	expect_str(x, render_one(x, T_BOOL, TXT("")), "v", "");
	expect_str(x, render_one(x, T_BOOL, TXT("tt")), "v", "tt");
	/* "t" is only a boolean for the bool type. */
	expect_str(x, render_one(x, T_TEXT, TXT("t")), "v", "t");
	expect_str(x, render_one(x, T_TEXT, TXT("f")), "v", "f");
}

static void test_json_values_embedded(void **state)
{
	ctx *x = *state;
	static const char *const docs[] = {
		"{\"a\": [1, 2, {\"b\": null}], \"s\": \"x\\\"y\"}",
		"{}",
		"[]",
		"[1, \"two\", 3.5, true, false, null]",
		"\"just a string\"",
		"42",
		"-1.5e3",
		"true",
		"{\"unicode\": \"\\u00e9 \xC3\xA9 \xF0\x9F\x98\x80\"}",
		"{\"nested\": {\"deeper\": {\"deepest\": [[[]]]}}}",
	};
	for (int t = 0; t < 2; t++) {
		uint32_t oid = t == 0 ? T_JSONB : T_JSON;
		for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
			expect_json(x, render_one(x, oid, TXT(docs[i])), "v", docs[i]);
		/* SQL NULL of a json column is JSON null. */
		expect_null(x, render_one(x, oid, NUL_V), "v");
	}
	/* json/jsonb text is only embedded for those types. */
	expect_str(x, render_one(x, T_TEXT, TXT("{\"a\":1}")), "v", "{\"a\":1}");
}

static void test_json_value_keeps_record_on_one_line(void **state)
{
	ctx *x = *state;
	/* PostgreSQL's json type keeps its input text exactly, whitespace included, so a
	 * pretty-printed document arrives with newlines between tokens. The record is "one JSON
	 * object (no newline)" — one line of `walcast tail` output (buf.h: "JSON lines") — so the
	 * embedded value must not carry raw line breaks into it.
	 * BUG: change.c value_write() appends json/jsonb text verbatim. */
	static const char *const docs[] = {
		"{\"k\":\n  [1,\n   2]\n}",
		"{\"k\":\r\n 1}",
		"[\n]",
	};
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		json_t *n = render_one(x, T_JSON, TXT(docs[i]));
		expect_json(x, n, "v", docs[i]); /* still the same value */
		if (memchr(x->out.data, '\n', x->out.len) != NULL ||
		    memchr(x->out.data, '\r', x->out.len) != NULL)
			fail_msg("record spans several lines for json value %zu: %s", i, x->out.data);
	}
}

static void test_text_escaped(void **state)
{
	ctx *x = *state;
	json_t *n = render_one(x, T_TEXT, TXT(TRICKY_TEXT));
	expect_str(x, n, "v", TRICKY_TEXT);
	assert_null(memchr(x->out.data, '\n', x->out.len));
	assert_null(memchr(x->out.data, '\t', x->out.len));

	/* Every control character, in a text column. */
	char all[33];
	for (int k = 1; k < 32; k++)
		all[k - 1] = (char)k;
	all[31] = '"';
	all[32] = '\0';
	expect_str(x, render_one(x, T_TEXT, TXT(all)), "v", all);

	/* Bytes that are not UTF-8 (a SQL_ASCII database) still give valid JSON. */
	expect_str(x, render_one(x, T_TEXT, TXT("caf\xE9")), "v", "caf\xEF\xBF\xBD");
	/* Empty text is an empty string, not null. */
	expect_str(x, render_one(x, T_TEXT, TXT("")), "v", "");
	/* The length decides, not the NUL. */
	change_value v = {.kind = VALUE_TEXT, .len = 3, .data = "abcdef"};
	expect_str(x, render_one(x, T_VARCHAR, v), "v", "abc");
}

static void test_names_escaped(void **state)
{
	ctx *x = *state;
	rel_column cols[] = {
		{.name = "col \"q\"", .type_oid = T_INT4, .typmod = -1},
		{.name = "back\\slash\nnl", .type_oid = T_TEXT, .typmod = -1},
		{.name = "\xC3\xA9t\xC3\xA9", .type_oid = T_TEXT, .typmod = -1},
	};
	relation rel = {
		.oid = 1, .schema = "Sch\xC3\xA9ma \"x\"", .name = "we\"ird\ttab", .ncols = 3, .cols = cols,
	};
	change_value nt[] = {TXT("5"), TXT("a"), TXT("b")};
	change c = {.action = CHANGE_INSERT, .lsn = 2, .txn = &txn750, .rel = &rel, .new_tuple = nt};
	json_t *j = render(x, &c, CHANGE_JSON_TYPES);
	expect_str(x, j, "schema", "Sch\xC3\xA9ma \"x\"");
	expect_str(x, j, "table", "we\"ird\ttab");
	json_t *n = get(x, j, "new");
	expect_int(x, n, "col \"q\"", 5);
	expect_str(x, n, "back\\slash\nnl", "a");
	expect_str(x, n, "\xC3\xA9t\xC3\xA9", "b");
	json_t *cs = get(x, j, "columns");
	expect_str(x, json_array_get(cs, 1), "name", "back\\slash\nnl");
}

static void test_null_and_absent(void **state)
{
	ctx *x = *state;
	rel_column cols[] = {
		{.name = "id", .type_oid = T_INT4, .typmod = -1, .key = true},
		{.name = "a", .type_oid = T_TEXT, .typmod = -1},
		{.name = "b", .type_oid = T_INT4, .typmod = -1},
		{.name = "c", .type_oid = T_BOOL, .typmod = -1},
	};
	relation rel = {.oid = 1, .schema = "public", .name = "t", .ncols = 4, .cols = cols};
	change_value nt[] = {TXT("1"), NUL_V, ABSENT_V, NUL_V};
	change c = {.action = CHANGE_INSERT, .lsn = 2, .txn = &txn750, .rel = &rel, .new_tuple = nt};
	json_t *n = get(x, render(x, &c, 0), "new");
	assert_int_equal(json_object_size(n), 3);
	expect_int(x, n, "id", 1);
	expect_null(x, n, "a"); /* NULL is present as null */
	expect_absent(x, n, "b"); /* absent is not written at all */
	expect_null(x, n, "c");

	/* A tuple where nothing is carried is an empty object. */
	change_value none[] = {ABSENT_V, ABSENT_V, ABSENT_V, ABSENT_V};
	c.new_tuple = none;
	n = get(x, render(x, &c, 0), "new");
	assert_true(json_is_object(n));
	assert_int_equal(json_object_size(n), 0);
}

static rel_column full_cols[] = {
	{.name = "id", .type_oid = T_INT4, .typmod = -1, .key = true},
	{.name = "note", .type_oid = T_TEXT, .typmod = -1},
	{.name = "big", .type_oid = T_TEXT, .typmod = -1},
	{.name = "n", .type_oid = T_INT4, .typmod = -1},
	{.name = "big2", .type_oid = T_JSONB, .typmod = -1},
};
static relation full_rel = {
	.oid = 16400,
	.schema = "public",
	.name = "diffull",
	.ncols = 5,
	.cols = full_cols,
	.replident = 'f',
};

static void test_update_with_full_old_tuple(void **state)
{
	ctx *x = *state;
	change_value nt[] = {TXT("1"), TXT("full updated"), TXT("xxx"), NUL_V, TXT("[1]")};
	change_value ot[] = {TXT("1"), TXT("full"), TXT("xxx"), TXT("3"), TXT("[1]")};
	change c = {
		.action = CHANGE_UPDATE, .lsn = 3, .txn = &txn750, .rel = &full_rel,
		.new_tuple = nt, .old_tuple = ot,
	};
	json_t *j = render(x, &c, 0);
	expect_str(x, j, "action", "update");
	json_t *n = get(x, j, "new");
	json_t *o = get(x, j, "old");
	assert_int_equal(json_object_size(n), 5);
	assert_int_equal(json_object_size(o), 5);
	expect_str(x, n, "note", "full updated");
	expect_str(x, o, "note", "full");
	expect_null(x, n, "n");
	expect_int(x, o, "n", 3);
	expect_json(x, n, "big2", "[1]");
	expect_json(x, o, "big2", "[1]");
	expect_absent(x, j, "unchanged");
}

static void test_update_with_key_only_old_tuple(void **state)
{
	ctx *x = *state;
	/* UPDATE ... SET id = 2: the old key comes as a key-only tuple. */
	change_value nt[] = {TXT("2"), TXT("n"), TXT("b"), TXT("4"), TXT("{}")};
	change_value ot[] = {TXT("1"), ABSENT_V, ABSENT_V, ABSENT_V, ABSENT_V};
	change c = {
		.action = CHANGE_UPDATE, .lsn = 3, .txn = &txn750, .rel = &full_rel,
		.new_tuple = nt, .old_tuple = ot,
	};
	json_t *j = render(x, &c, 0);
	json_t *o = get(x, j, "old");
	assert_int_equal(json_object_size(o), 1);
	expect_int(x, o, "id", 1);
	expect_int(x, get(x, j, "new"), "id", 2);

	/* No old tuple at all: no "old" key. */
	c.old_tuple = NULL;
	j = render(x, &c, 0);
	expect_absent(x, j, "old");
	assert_int_equal(json_object_size(get(x, j, "new")), 5);
}

static void test_update_unchanged_toast(void **state)
{
	ctx *x = *state;
	/* The TOASTed big and big2 did not change: they are neither in "new" nor invented, and
	 * "unchanged" names them in column order. */
	change_value nt[] = {TXT("1"), TXT("toast kept"), UNCH_V, TXT("5"), UNCH_V};
	change c = {.action = CHANGE_UPDATE, .lsn = 4, .txn = &txn750, .rel = &full_rel, .new_tuple = nt};
	json_t *j = render(x, &c, 0);
	json_t *n = get(x, j, "new");
	assert_int_equal(json_object_size(n), 3);
	expect_absent(x, n, "big");
	expect_absent(x, n, "big2");
	expect_str(x, n, "note", "toast kept");
	expect_json(x, j, "unchanged", "[\"big\", \"big2\"]");
	expect_absent(x, j, "old");

	/* Only one unchanged column, with a key-only old tuple. */
	change_value nt1[] = {TXT("1"), UNCH_V, TXT("b"), TXT("5"), TXT("{}")};
	change_value ot[] = {TXT("1"), ABSENT_V, ABSENT_V, ABSENT_V, ABSENT_V};
	c.new_tuple = nt1;
	c.old_tuple = ot;
	j = render(x, &c, 0);
	expect_json(x, j, "unchanged", "[\"note\"]");
	expect_absent(x, get(x, j, "new"), "note");
	expect_json(x, j, "old", "{\"id\": 1}");

	/* An unchanged value in the old tuple is omitted from "old" and not listed. */
	change_value ot2[] = {TXT("1"), UNCH_V, ABSENT_V, ABSENT_V, ABSENT_V};
	c.new_tuple = nt;
	c.old_tuple = ot2;
	j = render(x, &c, 0);
	expect_json(x, j, "old", "{\"id\": 1}");
	expect_json(x, j, "unchanged", "[\"big\", \"big2\"]");
}

static void test_delete(void **state)
{
	ctx *x = *state;
	change_value ot[] = {TXT("2"), ABSENT_V, ABSENT_V, ABSENT_V, ABSENT_V};
	change c = {.action = CHANGE_DELETE, .lsn = 5, .txn = &txn750, .rel = &full_rel, .old_tuple = ot};
	json_t *j = render(x, &c, 0);
	expect_str(x, j, "action", "delete");
	expect_str(x, j, "table", "diffull");
	expect_absent(x, j, "new");
	expect_absent(x, j, "unchanged");
	expect_json(x, j, "old", "{\"id\": 2}");

	/* REPLICA IDENTITY FULL delete: the whole old row. */
	change_value full[] = {TXT("2"), TXT("x"), NUL_V, TXT("-7"), TXT("{\"a\":1}")};
	c.old_tuple = full;
	j = render(x, &c, 0);
	expect_json(x, j, "old",
	            "{\"id\": 2, \"note\": \"x\", \"big\": null, \"n\": -7, \"big2\": {\"a\": 1}}");
	expect_absent(x, j, "new");
}

static void test_truncate(void **state)
{
	ctx *x = *state;
	change c = {
		.action = CHANGE_TRUNCATE, .lsn = UINT64_C(0x100000010), .txn = &txn750, .rel = &full_rel,
		.cascade = true, .restart_identity = true,
	};
	json_t *j = render(x, &c, 0);
	expect_str(x, j, "lsn", "1/10");
	expect_int(x, j, "xid", 750);
	expect_str(x, j, "commit_lsn", "0/16B37A0");
	expect_str(x, j, "action", "truncate");
	expect_str(x, j, "schema", "public");
	expect_str(x, j, "table", "diffull");
	expect_absent(x, j, "new");
	expect_absent(x, j, "old");
	expect_absent(x, j, "unchanged");
}

static void test_message_transactional(void **state)
{
	ctx *x = *state;
	const char *content = "transactional message";
	change c = {
		.action = CHANGE_MESSAGE,
		.lsn = UINT64_C(0x16B3800),
		.txn = &txn750,
		.transactional = true,
		.prefix = "walcast.test",
		.content = content,
		.content_len = strlen(content),
	};
	json_t *j = render(x, &c, CHANGE_JSON_TYPES);
	expect_str(x, j, "lsn", "0/16B3800");
	expect_int(x, j, "xid", 750);
	expect_str(x, j, "commit_lsn", "0/16B37A0");
	expect_str(x, j, "commit_time", "2026-01-02T03:04:05.123456Z");
	expect_str(x, j, "action", "message");
	assert_true(json_is_true(get(x, j, "transactional")));
	expect_str(x, j, "prefix", "walcast.test");
	expect_str(x, j, "content", "transactional message");
	expect_absent(x, j, "schema");
	expect_absent(x, j, "table");
	expect_absent(x, j, "new");
	expect_absent(x, j, "old");
	expect_absent(x, j, "columns"); /* a message has no relation shape */
}

static void test_message_non_transactional(void **state)
{
	ctx *x = *state;
	const char *content = "non-transactional message";
	change c = {
		.action = CHANGE_MESSAGE,
		.lsn = UINT64_C(0x2A00000001),
		.txn = NULL,
		.transactional = false,
		.prefix = "walcast.test",
		.content = content,
		.content_len = strlen(content),
	};
	json_t *j = render(x, &c, 0);
	expect_str(x, j, "lsn", "2A/1");
	expect_null(x, j, "xid");
	expect_null(x, j, "commit_lsn");
	expect_null(x, j, "commit_time");
	expect_str(x, j, "action", "message");
	assert_true(json_is_false(get(x, j, "transactional")));
	expect_str(x, j, "prefix", "walcast.test");
	expect_str(x, j, "content", "non-transactional message");
}

static void test_message_content_bytes(void **state)
{
	ctx *x = *state;
	/* The content is content_len bytes (pg_logical_emit_message takes bytea): NUL bytes,
	 * quotes and non-UTF-8 bytes inside, garbage after. */
	const char raw[] = "a\"b\0c\n\xFF" "GARBAGE";
	change c = {
		.action = CHANGE_MESSAGE, .lsn = 1, .txn = NULL, .prefix = "p\"x",
		.content = raw, .content_len = 7,
	};
	json_t *j = render_x(x, &c, 0, JSON_ALLOW_NUL);
	json_t *v = get(x, j, "content");
	assert_true(json_is_string(v));
	assert_int_equal(json_string_length(v), 9);
	assert_memory_equal(json_string_value(v), "a\"b\0c\n\xEF\xBF\xBD", 9);
	expect_str(x, j, "prefix", "p\"x");

	/* Empty content and a missing prefix. */
	c.content = NULL;
	c.content_len = 0;
	c.prefix = NULL;
	j = render(x, &c, 0);
	expect_str(x, j, "content", "");
	expect_str(x, j, "prefix", "");
}

static void test_types_flag_columns(void **state)
{
	ctx *x = *state;
	change_value nt[] = {TXT("1"), TXT("n"), UNCH_V, TXT("4"), TXT("{}")};
	change c = {.action = CHANGE_UPDATE, .lsn = 3, .txn = &txn750, .rel = &full_rel, .new_tuple = nt};
	json_t *j = render(x, &c, 0);
	expect_absent(x, j, "columns");

	j = render(x, &c, CHANGE_JSON_TYPES);
	expect_json(x, j, "columns",
	            "[{\"name\": \"id\", \"type\": 23}, {\"name\": \"note\", \"type\": 25},"
	            " {\"name\": \"big\", \"type\": 25}, {\"name\": \"n\", \"type\": 23},"
	            " {\"name\": \"big2\", \"type\": 3802}]");
	/* The rest of the record is unaffected by the flag. */
	assert_int_equal(json_object_size(get(x, j, "new")), 4);
	expect_json(x, j, "unchanged", "[\"big\"]");

	/* The shape is written for every relation action, including truncate and delete. */
	c.action = CHANGE_TRUNCATE;
	c.new_tuple = NULL;
	j = render(x, &c, CHANGE_JSON_TYPES);
	assert_int_equal(json_array_size(get(x, j, "columns")), 5);

	/* A relation without columns: an empty list and an empty tuple. */
	relation empty = {.oid = 3, .schema = "public", .name = "nocols", .ncols = 0, .cols = NULL};
	change e = {.action = CHANGE_INSERT, .lsn = 1, .txn = &txn750, .rel = &empty, .new_tuple = nt};
	j = render(x, &e, CHANGE_JSON_TYPES);
	expect_json(x, j, "columns", "[]");
	expect_json(x, j, "new", "{}");
}

static void test_large_type_oid_in_columns(void **state)
{
	ctx *x = *state;
	/* User-defined types have OIDs above 2^31: written unsigned. */
	rel_column col = {.name = "v", .type_oid = UINT32_MAX, .typmod = -1};
	relation rel = one_relation(&col);
	change_value nt[1] = {TXT("x")};
	change c = {.action = CHANGE_INSERT, .lsn = 1, .txn = &txn750, .rel = &rel, .new_tuple = nt};
	json_t *j = render(x, &c, CHANGE_JSON_TYPES);
	expect_int(x, json_array_get(get(x, j, "columns"), 0), "type", INT64_C(4294967295));
	expect_str(x, get(x, j, "new"), "v", "x");
}

static void test_header_extremes(void **state)
{
	ctx *x = *state;
	change_txn t = {.xid = UINT32_MAX, .commit_lsn = UINT64_MAX, .commit_time = -1};
	change_value nt[1] = {TXT("1")};
	rel_column col = {.name = "v", .type_oid = T_INT4, .typmod = -1};
	relation rel = one_relation(&col);
	change c = {.action = CHANGE_INSERT, .lsn = 0, .txn = &t, .rel = &rel, .new_tuple = nt};
	json_t *j = render(x, &c, 0);
	expect_str(x, j, "lsn", "0/0");
	expect_int(x, j, "xid", INT64_C(4294967295));
	expect_str(x, j, "commit_lsn", "FFFFFFFF/FFFFFFFF");
	expect_str(x, j, "commit_time", "1969-12-31T23:59:59.999999Z");
}

static void test_appends_to_buffer(void **state)
{
	/* The object is appended after what the buffer holds; two records separated by the
	 * caller's newline are two parseable lines. */
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "prefix:"), 0);
	change_value nt[] = {TXT("1"), TXT("a"), TXT("b"), TXT("2"), TXT("[]")};
	change c = {.action = CHANGE_INSERT, .lsn = 7, .txn = &txn750, .rel = &full_rel, .new_tuple = nt};
	assert_int_equal(change_json_write(&b, &c, 0), 0);
	assert_int_equal(buf_putc(&b, '\n'), 0);
	size_t first_end = b.len;
	c.action = CHANGE_DELETE;
	c.old_tuple = nt;
	c.new_tuple = NULL;
	assert_int_equal(change_json_write(&b, &c, 0), 0);
	assert_memory_equal(b.data, "prefix:{", 8);
	assert_int_equal(b.data[first_end - 1], '\n');

	json_t *j1 = json_loadb(b.data + 7, first_end - 8, JSON_REJECT_DUPLICATES, NULL);
	json_t *j2 = json_loadb(b.data + first_end, b.len - first_end, JSON_REJECT_DUPLICATES, NULL);
	bool ok = j1 != NULL && j2 != NULL &&
	          strcmp(json_string_value(json_object_get(j1, "action")), "insert") == 0 &&
	          strcmp(json_string_value(json_object_get(j2, "action")), "delete") == 0;
	json_decref(j1);
	json_decref(j2);
	buf_fini(&b);
	assert_true(ok);
}

static void test_wide_row(void **state)
{
	ctx *x = *state;
	/* 300 columns of 1000 bytes each: the output grows far past any initial buffer, and
	 * every value survives. */
	enum { NC = 300, VL = 1000 };
	rel_column *cols = calloc(NC, sizeof(*cols));
	change_value *nt = calloc(NC, sizeof(*nt));
	char (*names)[16] = calloc(NC, 16);
	char *vals = calloc(NC, VL + 1);
	assert_non_null(cols);
	assert_non_null(nt);
	assert_non_null(names);
	assert_non_null(vals);
	for (int i = 0; i < NC; i++) {
		snprintf(names[i], 16, "c%d", i);
		cols[i] = (rel_column){.name = names[i], .type_oid = i % 2 ? T_TEXT : T_INT4, .typmod = -1};
		char *v = vals + (size_t)i * (VL + 1);
		if (i % 2) {
			for (int k = 0; k < VL; k++)
				v[k] = (char)('a' + (i + k) % 26);
			if (i % 3 == 0)
				v[VL / 2] = '"';
		} else {
			snprintf(v, VL + 1, "%d", i * 1000003);
		}
		nt[i] = TXT(v);
	}
	relation rel = {.oid = 9, .schema = "public", .name = "wide", .ncols = NC, .cols = cols};
	change c = {.action = CHANGE_INSERT, .lsn = 1, .txn = &txn750, .rel = &rel, .new_tuple = nt};
	json_t *n = get(x, render(x, &c, CHANGE_JSON_TYPES), "new");
	assert_int_equal(json_object_size(n), NC);
	for (int i = 0; i < NC; i++) {
		if (i % 2)
			expect_str(x, n, names[i], vals + (size_t)i * (VL + 1));
		else
			expect_int(x, n, names[i], (json_int_t)i * 1000003);
	}
	free(cols);
	free(nt);
	free(names);
	free(vals);
}

/* ---- change_fill_unchanged -------------------------------------------------------------- */

static void test_fill_unchanged_from_full_old(void **state)
{
	ctx *x = *state;
	change_value nt[] = {TXT("1"), TXT("new note"), UNCH_V, UNCH_V, UNCH_V};
	change_value ot[] = {TXT("1"), TXT("old note"), TXT("BIG"), NUL_V, ABSENT_V};
	change_value ot_copy[5];
	memcpy(ot_copy, ot, sizeof(ot));
	change c = {
		.action = CHANGE_UPDATE, .lsn = 1, .txn = &txn750, .rel = &full_rel,
		.new_tuple = nt, .old_tuple = ot,
	};
	change_fill_unchanged(&c);
	/* Unchanged + old text: the old value. */
	assert_int_equal(nt[2].kind, VALUE_TEXT);
	assert_int_equal(nt[2].len, 3);
	assert_ptr_equal(nt[2].data, ot[2].data);
	/* Unchanged + old NULL: NULL. */
	assert_int_equal(nt[3].kind, VALUE_NULL);
	/* Unchanged + old absent: stays unchanged, nothing invented. */
	assert_int_equal(nt[4].kind, VALUE_UNCHANGED);
	/* Changed values are never overwritten by the old ones. */
	assert_int_equal(nt[1].kind, VALUE_TEXT);
	assert_string_equal(nt[1].data, "new note");
	assert_int_equal(nt[0].kind, VALUE_TEXT);
	/* The old tuple is not modified. */
	assert_memory_equal(ot, ot_copy, sizeof(ot));

	/* The record now shows the filled values and lists only what is still unknown. */
	json_t *j = render(x, &c, 0);
	json_t *n = get(x, j, "new");
	expect_str(x, n, "big", "BIG");
	expect_null(x, n, "n");
	expect_absent(x, n, "big2");
	expect_json(x, j, "unchanged", "[\"big2\"]");
}

static void test_fill_unchanged_old_unchanged_or_missing(void **state)
{
	/* An old tuple that is itself unchanged there gives nothing to copy. */
	change_value nt[] = {TXT("1"), UNCH_V, TXT("b"), TXT("2"), TXT("{}")};
	change_value ot[] = {TXT("1"), UNCH_V, TXT("b"), TXT("2"), TXT("{}")};
	change c = {
		.action = CHANGE_UPDATE, .lsn = 1, .txn = &txn750, .rel = &full_rel,
		.new_tuple = nt, .old_tuple = ot,
	};
	change_fill_unchanged(&c);
	assert_int_equal(nt[1].kind, VALUE_UNCHANGED);

	/* No old tuple: nothing changes. */
	c.old_tuple = NULL;
	change_fill_unchanged(&c);
	assert_int_equal(nt[1].kind, VALUE_UNCHANGED);
	assert_string_equal(nt[2].data, "b");

	/* No new tuple (delete): harmless. */
	change d = {.action = CHANGE_DELETE, .lsn = 1, .txn = &txn750, .rel = &full_rel, .old_tuple = ot};
	change_fill_unchanged(&d);
	assert_null(d.new_tuple);
	assert_int_equal(ot[1].kind, VALUE_UNCHANGED);

	/* A message has no relation: harmless. */
	change m = {.action = CHANGE_MESSAGE, .lsn = 1, .prefix = "p", .content = "c", .content_len = 1};
	change_fill_unchanged(&m);
	assert_null(m.new_tuple);
}

/* The cache never serves a replaced relation's names (a new version has a new id), and a
 * transaction's header is formatted again when the transaction changes. */
static void test_cache_follows_relation_and_txn(void **state)
{
	(void)state;
	rel_column c1[] = {{.name = "id", .type_oid = T_INT4, .typmod = -1}, {.name = "a", .type_oid = T_TEXT, .typmod = -1}};
	rel_column c2[] = {{.name = "id", .type_oid = T_INT4, .typmod = -1}, {.name = "b\"q", .type_oid = T_TEXT, .typmod = -1}};
	relation r = {.oid = 5, .schema = "s", .name = "t", .ncols = 2, .cols = c1, .id = 1};
	change_value nt[] = {TXT("1"), TXT("x")};
	change_txn t1 = {.xid = 1, .commit_lsn = 0x10, .commit_time = 0};
	change_txn t2 = {.xid = 2, .commit_lsn = 0x20, .commit_time = 1000000};
	change c = {.action = CHANGE_INSERT, .lsn = 1, .txn = &t1, .rel = &r, .new_tuple = nt};
	change_json_cache *jc = change_json_cache_create();
	assert_non_null(jc);
	buf a, b;
	buf_init(&a);
	buf_init(&b);
	for (int step = 0; step < 4; step++) {
		if (step == 1)
			c.txn = &t2;
		if (step == 2) { /* ALTER TABLE: same address, new version */
			r.cols = c2;
			r.id = 2;
		}
		if (step == 3) { /* a different relation whose id lands in the same slot */
			r.name = "u";
			r.id = 2 + 16;
		}
		buf_clear(&a);
		buf_clear(&b);
		assert_int_equal(change_json_write(&a, &c, CHANGE_JSON_TYPES), 0);
		assert_int_equal(change_json_write_cached(jc, &b, &c, CHANGE_JSON_TYPES), 0);
		assert_string_equal(b.data, a.data);
	}
	assert_non_null(strstr(b.data, "\"b\\\"q\":\"x\""));
	assert_non_null(strstr(b.data, "\"table\":\"u\""));
	assert_non_null(strstr(b.data, "\"xid\":2,"));
	buf_fini(&a);
	buf_fini(&b);
	change_json_cache_destroy(jc);
	change_json_cache_destroy(NULL);
}

/* A text value is written exactly as buf_json_string writes it, whatever the position of the
 * one byte that needs escaping (or breaks the plain-ASCII fast path) relative to 8-byte words. */
static void test_string_values_as_buf_json_string(void **state)
{
	(void)state;
	static const char *const specials[] = {"\"", "\\", "\n", "\x1f", "\x7f", "\xc3\xa9", "\xff", " ", "~"};
	rel_column col = {.name = "v", .type_oid = T_TEXT, .typmod = -1};
	relation rel = {.oid = 1, .schema = "s", .name = "t", .ncols = 1, .cols = &col};
	buf got, want;
	buf_init(&got);
	buf_init(&want);
	char v[64];
	for (size_t len = 0; len <= 24; len++) {
		for (size_t pos = 0; pos <= len; pos++) {
			for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
				size_t sl = strlen(specials[k]);
				for (size_t i = 0; i < len; i++)
					v[i] = (char)('a' + i % 26);
				size_t n = len;
				if (pos < len) {
					memcpy(v + pos, specials[k], sl);
					n = len + sl - 1 > pos + sl ? len + sl - 1 : pos + sl;
					for (size_t i = pos + sl; i < n; i++)
						v[i] = 'z';
				}
				v[n] = '\0';
				change_value nv = {.kind = VALUE_TEXT, .len = (uint32_t)n, .data = v};
				change c = {.action = CHANGE_INSERT, .lsn = 1, .txn = &txn750, .rel = &rel, .new_tuple = &nv};
				buf_clear(&got);
				buf_clear(&want);
				assert_int_equal(change_json_write(&got, &c, 0), 0);
				assert_int_equal(buf_puts(&want, "\"new\":{\"v\":"), 0);
				assert_int_equal(buf_json_string(&want, v, n), 0);
				assert_int_equal(buf_puts(&want, "}}"), 0);
				assert_true(got.len >= want.len);
				if (strcmp(got.data + got.len - want.len, want.data) != 0)
					fail_msg("len %zu pos %zu special %zu: %s, want ...%s", len, pos, k, got.data, want.data);
			}
		}
	}
	/* Several bytes to escape: quotes and backslashes handled in runs, then something else. */
	static const char *const mixed[] = {
		"\\x0100ab34cd", "a\"b\\c\"", "\\\\", "\"\n", "x\\y\xc3\xa9z", "\\abcdefghijklmnopqrstu\x01",
		"abcdefgh\"ijklmnop\\qrstuvwx\"", "\"\"\"\"\"\"\"\"\"\"",
	};
	for (size_t k = 0; k < sizeof(mixed) / sizeof(mixed[0]); k++) {
		change_value nv = {.kind = VALUE_TEXT, .len = (uint32_t)strlen(mixed[k]), .data = mixed[k]};
		change c = {.action = CHANGE_INSERT, .lsn = 1, .txn = &txn750, .rel = &rel, .new_tuple = &nv};
		buf_clear(&got);
		buf_clear(&want);
		assert_int_equal(change_json_write(&got, &c, 0), 0);
		assert_int_equal(buf_puts(&want, "\"new\":{\"v\":"), 0);
		assert_int_equal(buf_json_string(&want, mixed[k], strlen(mixed[k])), 0);
		assert_int_equal(buf_puts(&want, "}}"), 0);
		assert_int_equal(strlen(got.data), got.len);
		if (got.len < want.len || strcmp(got.data + got.len - want.len, want.data) != 0)
			fail_msg("mixed %zu: %s, want ...%s", k, got.data, want.data);
	}
	buf_fini(&got);
	buf_fini(&want);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_action_names),
		T(test_cache_follows_relation_and_txn),
		T(test_string_values_as_buf_json_string),
		T(test_action_parse_rejects),
		T(test_time_format),
		T(test_time_format_pg_epoch_conversion),
		T(test_time_format_extremes_terminate),
		T(test_insert_typed_values),
		T(test_numbers_kept_as_numbers),
		T(test_non_json_numbers_become_strings),
		T(test_exact_types_are_strings),
		T(test_bool_values),
		T(test_json_values_embedded),
		T(test_json_value_keeps_record_on_one_line),
		T(test_text_escaped),
		T(test_names_escaped),
		T(test_null_and_absent),
		T(test_update_with_full_old_tuple),
		T(test_update_with_key_only_old_tuple),
		T(test_update_unchanged_toast),
		T(test_delete),
		T(test_truncate),
		T(test_message_transactional),
		T(test_message_non_transactional),
		T(test_message_content_bytes),
		T(test_types_flag_columns),
		T(test_large_type_oid_in_columns),
		T(test_header_extremes),
		T(test_appends_to_buffer),
		T(test_wide_row),
		T(test_fill_unchanged_from_full_old),
		T(test_fill_unchanged_old_unchanged_or_missing),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
