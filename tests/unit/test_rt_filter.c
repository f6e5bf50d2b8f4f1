/*
 * test_rt_filter — unit tests for Realtime postgres_changes filters (plugins/sinks/rt_filter.h):
 * the parser (the server's splitting, quoting, `not.`, `in` lists, its error texts), the check
 * against a relation (unknown columns, constants that do not parse as the column type, the
 * operator/type rules), and a table of matches per operator and type with the truth values
 * PostgreSQL gives (NULL and absent columns, three-valued `not.`). The differential test against
 * PostgreSQL itself is tests/integration/rt_filter_pg.sh.
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

#include "rt_filter.h"

static rel_column cols[] = {
	{.name = "i4", .type_oid = 23, .typmod = -1, .key = true},
	{.name = "i2", .type_oid = 21, .typmod = -1},
	{.name = "i8", .type_oid = 20, .typmod = -1},
	{.name = "o", .type_oid = 26, .typmod = -1},
	{.name = "n", .type_oid = 1700, .typmod = -1},
	{.name = "f4", .type_oid = 700, .typmod = -1},
	{.name = "f8", .type_oid = 701, .typmod = -1},
	{.name = "b", .type_oid = 16, .typmod = -1},
	{.name = "u", .type_oid = 2950, .typmod = -1},
	{.name = "tz", .type_oid = 1184, .typmod = -1},
	{.name = "ts", .type_oid = 1114, .typmod = -1},
	{.name = "d", .type_oid = 1082, .typmod = -1},
	{.name = "tm", .type_oid = 1083, .typmod = -1},
	{.name = "t", .type_oid = 25, .typmod = -1},
	{.name = "v", .type_oid = 1043, .typmod = -1},
	{.name = "c", .type_oid = 1042, .typmod = -1},
	{.name = "j", .type_oid = 3802, .typmod = -1},
	{.name = "user id", .type_oid = 25, .typmod = -1},
};
#define NCOLS ((int)(sizeof(cols) / sizeof(cols[0])))

static relation rel = {
	.oid = 16400, .schema = "public", .name = "t", .ncols = NCOLS, .cols = cols,
	.replident = 'd', .version = 1, .id = 7,
};

static int col_index(const char *name)
{
	int i = relation_column_index(&rel, name, strlen(name));
	if (i < 0)
		fail_msg("no column %s", name);
	return i;
}

#define ABSENT ((const char *)1)

/* Matches filter against a tuple carrying only column `col` with value v (NULL: SQL NULL,
 * ABSENT: not carried). */
static bool match1(const char *filter, const char *col, const char *v)
{
	char err[RT_FILTER_ERROR_MAX] = "";
	rt_filter *f = NULL;
	int rc = rt_filter_parse(filter, &f, err);
	if (rc != 0)
		fail_msg("parse %s: %d %s", filter, rc, err);
	rc = rt_filter_check(f, &rel, err);
	if (rc != 0)
		fail_msg("check %s: %d %s", filter, rc, err);
	change_value tuple[NCOLS];
	memset(tuple, 0, sizeof(tuple));
	int i = col_index(col);
	if (v == NULL)
		tuple[i].kind = VALUE_NULL;
	else if (v != ABSENT) {
		tuple[i].kind = VALUE_TEXT;
		tuple[i].data = v;
		tuple[i].len = (uint32_t)strlen(v);
	}
	bool r = rt_filter_match(f, &rel, tuple);
	rt_filter_free(f);
	return r;
}

typedef struct mcase {
	const char *col;
	const char *filter;
	const char *value;
	bool want;
} mcase;

static const mcase cases[] = {
	/* integers: numeric order, PostgreSQL's input spellings */
	{"i4", "i4=eq.42", "42", true},
	{"i4", "i4=eq.42", "420", false},
	{"i4", "i4=eq. 42 ", "42", true},
	{"i4", "i4=eq.+42", "42", true},
	{"i4", "i4=eq.-0", "0", true},
	{"i4", "i4=neq.42", "41", true},
	{"i4", "i4=neq.42", "42", false},
	{"i4", "i4=lt.10", "9", true},
	{"i4", "i4=lt.10", "10", false},
	{"i4", "i4=lt.10", "-100", true},
	{"i4", "i4=lte.10", "10", true},
	{"i4", "i4=gt.9", "10", true},
	{"i4", "i4=gt.9", "9", false},
	{"i4", "i4=gte.-2147483648", "-2147483648", true},
	{"i4", "i4=gt.2", "10", true}, /* not "10" < "2" as text */
	{"i2", "i2=lt.-32768", "-32768", false},
	{"i2", "i2=lte.32767", "32767", true},
	{"i8", "i8=eq.9223372036854775807", "9223372036854775807", true},
	{"i8", "i8=eq.9223372036854775806", "9223372036854775807", false}, /* a double would say yes */
	{"i8", "i8=gt.9007199254740992", "9007199254740993", true},
	{"i8", "i8=lt.-9223372036854775807", "-9223372036854775808", true},
	{"o", "o=eq.4294967295", "4294967295", true},
	{"o", "o=eq.-1", "4294967295", true},
	{"o", "o=gt.2147483647", "2147483648", true},
	/* numeric: exact decimals, NaN above everything */
	{"n", "n=eq.1.50", "1.5", true},
	{"n", "n=eq.1.5", "1.500000000000000000000000000001", false},
	{"n", "n=lt.1.500000000000000000000000000001", "1.5", true},
	{"n", "n=eq.1e3", "1000", true},
	{"n", "n=eq.1000e-3", "1", true},
	{"n", "n=eq..5", "0.5", true},
	{"n", "n=eq.-0.0", "0", true},
	{"n", "n=gt.-1", "0", true},
	{"n", "n=gt.-1.5", "-1.25", true},
	{"n", "n=lt.-1.5", "-1.25", false},
	{"n", "n=gt.99", "100", true},
	{"n", "n=gt.0.099", "0.1", true},
	{"n", "n=lt.0.0099", "0.01", false},
	{"n", "n=gt.12345678901234567890.1", "12345678901234567890.11", true},
	{"n", "n=eq.NaN", "NaN", true},
	{"n", "n=gt.1e300", "NaN", true},
	{"n", "n=gt.Infinity", "NaN", true},
	{"n", "n=lt.-Infinity", "-1e300", false},
	{"n", "n=gt.-Infinity", "-1e300", true},
	{"n", "n=eq.infinity", "Infinity", true},
	/* floats: PostgreSQL's NaN order, float4 rounding */
	{"f8", "f8=eq.0.1", "0.1", true},
	{"f8", "f8=gt.1e308", "Infinity", true},
	{"f8", "f8=gt.Infinity", "NaN", true},
	{"f8", "f8=eq.NaN", "NaN", true},
	{"f8", "f8=lt.NaN", "1", true},
	{"f8", "f8=eq.-0", "0", true},
	{"f8", "f8=gte.1.5", "1.5", true},
	{"f8", "f8=eq.1e2", "100", true},
	{"f4", "f4=eq.0.1", "0.1", true},
	{"f4", "f4=eq.0.100000001", "0.1", true}, /* the same float4 */
	{"f4", "f4=lt.0.2", "0.1", true},
	{"f4", "f4=gt.-inf", "-3.4028235e+38", true},
	/* booleans in every spelling */
	{"b", "b=eq.true", "t", true},
	{"b", "b=eq.yes", "t", true},
	{"b", "b=eq.ON", "t", true},
	{"b", "b=eq.1", "t", true},
	{"b", "b=eq.tr", "t", true},
	{"b", "b=eq.off", "f", true},
	{"b", "b=eq.n", "f", true},
	{"b", "b=eq.0", "t", false},
	{"b", "b=lt.true", "f", true},
	{"b", "b=is.true", "t", true},
	{"b", "b=is.true", "f", false},
	{"b", "b=is.true", NULL, false},
	{"b", "b=is.false", "f", true},
	{"b", "b=is.unknown", NULL, true},
	{"b", "b=not.is.true", NULL, true},
	{"b", "b=not.is.false", "t", true},
	/* uuids: any case, with or without hyphens, braces */
	{"u", "u=eq.A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true},
	{"u", "u=eq.a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true},
	{"u", "u=eq.{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true},
	{"u", "u=neq.a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true},
	{"u", "u=lt.b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true},
	{"u", "u=in.(00000000-0000-0000-0000-000000000000,A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11)",
	 "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", true},
	/* timestamptz: instants, whatever the offset */
	{"tz", "tz=eq.2026-12-02T10:00:00Z", "2026-12-02 10:00:00+00", true},
	{"tz", "tz=eq.2026-12-02T10:00:00.123Z", "2026-12-02 10:00:00.123+00", true},
	{"tz", "tz=eq.2026-12-02T15:30:00+05:30", "2026-12-02 10:00:00+00", true},
	{"tz", "tz=eq.2026-12-02 07:00:00-0300", "2026-12-02 10:00:00+00", true},
	{"tz", "tz=eq.2026-12-02T10:00:00Z", "2026-12-02 11:00:00+01", true},
	{"tz", "tz=eq.2026-12-02 10:00:00", "2026-12-02 10:00:00+00", true}, /* no zone: UTC */
	{"tz", "tz=eq.2026-12-02", "2026-12-02 00:00:00+00", true},
	{"tz", "tz=lt.2026-12-02T10:00:00Z", "2026-12-02 10:00:00.000001+00", false},
	{"tz", "tz=gt.2026-12-02T10:00:00Z", "2026-12-02 10:00:00.000001+00", true},
	{"tz", "tz=gt.2026-12-02T10:00:00Z", "2026-12-02 09:00:00.5-01", true},
	{"tz", "tz=lt.infinity", "294276-12-31 23:59:59.999999+00", true},
	{"tz", "tz=eq.infinity", "infinity", true},
	{"tz", "tz=gt.294276-12-31T23:00:00Z", "294277-01-01 05:29:59.999999+05:30", true},
	{"tz", "tz=lt.0001-01-01", "4714-11-23 19:00:00-05 BC", true},
	{"tz", "tz=gt.-infinity", "0044-03-15 12:00:00+00 BC", true},
	{"tz", "tz=lt.0001-01-01T00:00:00Z", "0044-03-15 12:00:00+00 BC", true},
	{"tz", "tz=eq.2026-12-02T10:00:00.1234567Z", "2026-12-02 10:00:00.123457+00", true},
	{"tz", "tz=eq.epoch", "1970-01-01 00:00:00+00", true},
	{"tz", "tz=gt.2024-02-29T00:00:00Z", "2024-03-01 00:00:00+00", true},
	/* timestamp without time zone ignores a given offset, as PostgreSQL does */
	{"ts", "ts=eq.2026-12-02T10:00:00", "2026-12-02 10:00:00", true},
	{"ts", "ts=eq.2026-12-02T10:00:00+05", "2026-12-02 10:00:00", true},
	{"ts", "ts=lt.2026-12-02 10:00:00.5", "2026-12-02 10:00:00.25", true},
	{"d", "d=eq.2026-12-02", "2026-12-02", true},
	{"d", "d=eq.2026-12-02T23:59:59-12", "2026-12-02", true},
	{"d", "d=gt.2026-11-30", "2026-12-01", true},
	{"d", "d=lt.2026-12-01", "2026-11-30 BC", true},
	{"tm", "tm=eq.10:00", "10:00:00", true},
	{"tm", "tm=lt.10:00:00.5", "10:00:00.25", true},
	{"tm", "tm=gt.09:59", "10:00:00", true},
	/* text: byte-wise, the C collation */
	{"t", "t=eq.hello", "hello", true},
	{"t", "t=eq.Hello", "hello", false},
	{"t", "t=eq.hello ", "hello", true}, /* the segment is trimmed, as the server does */
	{"t", "t=eq.\"hello \"", "hello", false},
	{"t", "t=lt.b", "a", true},
	{"t", "t=lt.a", "B", true}, /* C order: upper case first */
	{"t", "t=lt.ab", "a", true},
	{"t", "t=gt.10", "9", true}, /* text, not numbers */
	{"t", "t=eq.\"a,b\"", "a,b", true},
	{"t", "t=eq.\"a\\\"b\"", "a\"b", true},
	{"t", "t=eq.\"a\"b\"", "\"a\"b\"", true}, /* not one quoted string: kept as written */
	{"t", "t=eq.a.b", "a.b", true},
	{"t", "t=eq.", "", true},
	{"t", "t=eq.é", "é", true},
	{"v", "v=eq.x", "x", true},
	{"c", "c=eq.ab", "ab   ", true}, /* character(n): trailing spaces do not count */
	{"c", "c=eq.ab  ", "ab", true},
	{"c", "c=lt.ab", "ab   ", false},
	{"j", "j=eq.{\"a\":1}", "{\"a\": 1}", false}, /* other types compare as text */
	{"j", "j=eq.{\"a\": 1}", "{\"a\": 1}", true},
	{"user id", "user id=eq.1", "1", true},
	/* in */
	{"t", "t=in.(a,b,c)", "b", true},
	{"t", "t=in.(a,b,c)", "d", false},
	{"t", "t=in.( a , b )", "b", true},
	{"t", "t=in.(a,\"b,c\")", "b,c", true},
	{"t", "t=in.(a,\"b,c\")", "b", false},
	{"t", "t=in.(\" a \")", " a ", true},
	{"t", "t=in.(a\\,b)", "a,b", true},
	{"t", "t=in.(\"\")", "", true},
	{"t", "t=in.()", "a", false},
	{"t", "t=not.in.()", "a", true},
	{"t", "t=in.(a,null)", "a", true},
	{"t", "t=in.(a,NULL)", "b", false},
	{"t", "t=not.in.(a,null)", "b", false}, /* NOT (b = ANY('{a,NULL}')) is NULL */
	{"t", "t=in.(a,\"null\")", "null", true},
	{"i4", "i4=in.(1,2,3)", "2", true},
	{"i4", "i4=in.(1, 02 ,3)", "2", true},
	{"i4", "i4=not.in.(1,2,3)", "4", true},
	{"i4", "i4=not.in.(1,2,3)", "3", false},
	{"n", "n=in.(1.0,2.50)", "2.5", true},
	{"tz", "tz=in.(2026-12-02T10:00:00Z)", "2026-12-02 11:00:00+01", true},
	/* like / ilike: %, _, escapes, UTF-8 characters */
	{"t", "t=like.he%", "hello", true},
	{"t", "t=like.%llo", "hello", true},
	{"t", "t=like.%l%", "hello", true},
	{"t", "t=like.h_llo", "hello", true},
	{"t", "t=like.h_llo", "hllo", false},
	{"t", "t=like.h__", "hé!", true}, /* _ is one character, é is two bytes */
	{"t", "t=like.___", "héé", true},
	{"t", "t=like.____", "héé", false},
	{"t", "t=like.%", "", true},
	{"t", "t=like._", "", false},
	{"t", "t=like.HE%", "hello", false},
	{"t", "t=like.a\\%b", "a%b", true},
	{"t", "t=like.a\\%b", "axb", false},
	{"t", "t=like.a\\_b", "a_b", true},
	{"t", "t=like.a\\\\b", "a\\b", true},
	{"t", "t=like.%a%b%c%", "xxaxxbxxcxx", true},
	{"t", "t=like.%a%b%c%", "xxaxxcxxbxx", false},
	{"t", "t=like.%aab", "aaab", true},
	{"t", "t=ilike.HE%", "hello", true},
	{"t", "t=ilike.%É%", "é", true}, /* folded as under a UTF-8 collation */
	{"t", "t=ilike.ÀB_", "àbç", true},
	{"t", "t=ilike.ß", "SS", false}, /* character by character: no full case folding */
	{"t", "t=ilike.%é%", "Xé", true},
	{"t", "t=not.like.he%", "hello", false},
	{"t", "t=not.like.he%", NULL, false},
	{"v", "v=like.a%", "abc", true},
	/* match / imatch: POSIX regular expressions */
	{"t", "t=match.^post-[0-9]+$", "post-42", true},
	{"t", "t=match.^post-[0-9]+$", "post-4x", false},
	{"t", "t=match.ell", "hello", true},
	{"t", "t=match.ELL", "hello", false},
	{"t", "t=imatch.ELL", "hello", true},
	{"t", "t=match.a|b", "xbx", true},
	{"t", "t=not.match.a|b", "xcx", true},
	{"t", "t=match.\"x{2,3}\"", "axxb", true}, /* a comma outside quotes would split */
	{"t", "t=match.\"x{2,3}\"", "axb", false},
	{"t", "t=match.^.$", "é", true}, /* characters, not bytes */
	{"t", "t=match.^h.llo$", "héllo", true},
	{"t", "t=imatch.^É", "été", true},
	{"t", "t=match.^[[:alpha:]]+$", "été", true},
	{"t", "t=match.^a*?b+?$", "aab", true}, /* PostgreSQL's lazy quantifiers */
	{"t", "t=match.^a+?$", "", false},      /* not POSIX's (a+)? */
	{"t", "t=match.^a{2}?$", "", false},
	{"t", "t=match.^a{2}?$", "aa", true},
	{"t", "t=match.^a??$", "", true},
	{"t", "t=match.^(a)\\1$", "aa", true}, /* back-references, as in PostgreSQL */
	{"t", "t=match.^\\d+$", "42", true},
	{"t", "t=imatch.^[[:upper:]]+$", "abC", true}, /* PostgreSQL: any letter under ~* */
	{"t", "t=match.^[[:upper:]]+$", "abC", false},
	{"t", "t=match.^a.b$", "a\nb", true}, /* '.' matches a newline, as in PostgreSQL */
	{"t", "t=match.^a$", "a\n", false},   /* '$' only at the very end */
	{"t", "t=match.^[]a]+$", "]a]", true},
	{"t", "t=match.^[^]]$", "x", true},
	/* is null on any type, isdistinct */
	{"t", "t=is.null", NULL, true},
	{"t", "t=is.null", "", false},
	{"t", "t=not.is.null", "x", true},
	{"i4", "i4=is.null", NULL, true},
	{"i4", "i4=isdistinct.5", NULL, true},
	{"i4", "i4=isdistinct.5", "5", false},
	{"i4", "i4=isdistinct.5", "6", true},
	{"i4", "i4=not.isdistinct.5", "5", true},
	{"i4", "i4=not.isdistinct.5", NULL, false},
	{"n", "n=isdistinct.1.0", "1", false},
	/* NULL: every comparison unknown, so false, and still false under not. */
	{"i4", "i4=eq.1", NULL, false},
	{"i4", "i4=neq.1", NULL, false},
	{"i4", "i4=not.eq.1", NULL, false},
	{"i4", "i4=not.eq.1", "2", true},
	{"i4", "i4=not.eq.1", "1", false},
	{"i4", "i4=not.lt.5", "5", true},
	{"t", "t=in.(a)", NULL, false},
	{"t", "t=like.%", NULL, false},
	/* a column the tuple does not carry fails, also negated */
	{"i4", "i4=eq.1", ABSENT, false},
	{"i4", "i4=not.eq.1", ABSENT, false},
	{"i4", "i4=is.null", ABSENT, false},
	{"i4", "i4=not.is.null", ABSENT, false},
	{"i4", "i4=isdistinct.1", ABSENT, false},
};

static void test_match_table(void **state)
{
	(void)state;
	int failures = 0;
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const mcase *c = &cases[k];
		bool got = match1(c->filter, c->col, c->value);
		if (got != c->want) {
			print_error("case %zu: %s on %s: got %d, want %d\n", k, c->filter,
			            c->value == NULL ? "NULL" : c->value == ABSENT ? "(absent)" : c->value, got,
			            c->want);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

/* Several conditions: AND; a NULL or absent column in one fails the whole filter. */
static void test_and(void **state)
{
	(void)state;
	char err[RT_FILTER_ERROR_MAX];
	rt_filter *f = NULL;
	assert_int_equal(rt_filter_parse("i4=gt.0, i4=lt.100 ,t=in.(x,\"y,z\"),b=not.is.false", &f, err), 0);
	assert_int_equal(rt_filter_count(f), 4);
	assert_int_equal(rt_filter_check(f, &rel, err), 0);
	change_value tuple[NCOLS];
	memset(tuple, 0, sizeof(tuple));
	tuple[col_index("i4")] = (change_value){VALUE_TEXT, 2, "50"};
	tuple[col_index("t")] = (change_value){VALUE_TEXT, 3, "y,z"};
	tuple[col_index("b")] = (change_value){VALUE_TEXT, 1, "t"};
	assert_true(rt_filter_match(f, &rel, tuple));
	tuple[col_index("b")] = (change_value){VALUE_NULL, 0, NULL};
	assert_true(rt_filter_match(f, &rel, tuple)); /* NULL IS NOT FALSE */
	tuple[col_index("b")] = (change_value){VALUE_TEXT, 1, "f"};
	assert_false(rt_filter_match(f, &rel, tuple));
	tuple[col_index("b")] = (change_value){VALUE_TEXT, 1, "t"};
	tuple[col_index("i4")] = (change_value){VALUE_TEXT, 3, "100"};
	assert_false(rt_filter_match(f, &rel, tuple));
	tuple[col_index("i4")] = (change_value){VALUE_TEXT, 2, "99"};
	tuple[col_index("t")] = (change_value){VALUE_UNCHANGED, 0, NULL};
	assert_false(rt_filter_match(f, &rel, tuple));
	assert_false(rt_filter_match(f, &rel, NULL));
	rt_filter_free(f);

	/* the empty filter matches everything, NULL tuples included */
	for (const char *empty[] = {NULL, "", "   "}, **e = empty; e < empty + 3; e++) {
		assert_int_equal(rt_filter_parse(*e, &f, err), 0);
		assert_int_equal(rt_filter_count(f), 0);
		assert_int_equal(rt_filter_check(f, &rel, err), 0);
		assert_true(rt_filter_match(f, &rel, NULL));
		assert_true(rt_filter_match(f, &rel, tuple));
		rt_filter_free(f);
	}
}

typedef struct ecase {
	const char *filter;
	const char *err; /* expected error text, exactly */
} ecase;

/* Refused at parse, with the server's words. */
static const ecase parse_errors[] = {
	{"subject=foo.hey", "Error parsing `filter` params: [\"foo\", \"hey\"]"},
	{"undefined", "Error parsing `filter` params: [\"undefined\"]"},
	{"a=eq", "Error parsing `filter` params: [\"eq\"]"},
	{"a=not.eq", "Error parsing `filter` params: [\"eq\"]"},
	{"a=EQ.1", "Error parsing `filter` params: [\"EQ\", \"1\"]"},
	{"a=x\"y.1", "Error parsing `filter` params: [\"x\\\"y\", \"1\"]"},
	{"a=eq.1,", "Error parsing `filter` params: filter must not contain empty segments (check for "
	            "extra commas)"},
	{"a=eq.1,,b=eq.2", "Error parsing `filter` params: filter must not contain empty segments "
	                   "(check for extra commas)"},
	{",a=eq.1", "Error parsing `filter` params: filter must not contain empty segments (check for "
	            "extra commas)"},
	{"a=in.1,2", "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"},
	{"a=in.(1,2", "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"},
	{"a=is.NULL", "invalid value for is filter: must be null, true, false, or unknown"},
	{"a=is.maybe", "invalid value for is filter: must be null, true, false, or unknown"},
	{"a=in.(1,,2)", "malformed array literal: \"{1,,2}\""},
	{"a=in.(\"1)", "malformed array literal: \"{\"1}\""},
	{"a=in.({1})", "malformed array literal: \"{{1}}\""},
	{"a=like.ab\\", "LIKE pattern must not end with escape character"},
	{"a=match.(ab", NULL}, /* regcomp's words follow the prefix */
	{"a=match.a{256}", "invalid regular expression for match filter: invalid regular expression: "
	                   "invalid repetition count(s)"},
	{"a=match.a++", "invalid regular expression for match filter: invalid regular expression: "
	                "quantifier operand invalid"},
	{"a=match.a{2}{3}", "invalid regular expression for match filter: invalid regular expression: "
	                    "quantifier operand invalid"},
	{"a=match.\"((a{200}){200}){200}\"", "invalid regular expression for match filter: regular "
	                                      "expression is too complex"},
	{"a=match.((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))",
	 "invalid regular expression for match filter: regular expression is too complex"},
	{"a=eq.\xff", "invalid byte sequence for encoding \"UTF8\": 0xff"},
	{"a=eq.\xc3", "invalid byte sequence for encoding \"UTF8\": 0xc3"},
	{"a=eq.\xed\xa0\x80", "invalid byte sequence for encoding \"UTF8\": 0xed"},
};

static void test_parse_errors(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(parse_errors) / sizeof(parse_errors[0]); k++) {
		char err[RT_FILTER_ERROR_MAX] = "";
		rt_filter *f = (rt_filter *)&err; /* must stay untouched */
		int rc = rt_filter_parse(parse_errors[k].filter, &f, err);
		if (rc != -EINVAL)
			fail_msg("%s: rc %d, want -EINVAL", parse_errors[k].filter, rc);
		assert_ptr_equal(f, (rt_filter *)&err);
		if (parse_errors[k].err != NULL && strcmp(err, parse_errors[k].err) != 0)
			fail_msg("%s: error '%s', want '%s'", parse_errors[k].filter, err, parse_errors[k].err);
		static const char re_prefix[] =
			"invalid regular expression for match filter: invalid regular expression: ";
		if (parse_errors[k].err == NULL && strncmp(err, re_prefix, strlen(re_prefix)) != 0)
			fail_msg("%s: error '%s'", parse_errors[k].filter, err);
	}
	/* 100 `in` values are fine, 101 are not */
	char big[1024] = "i4=in.(";
	for (int k = 0; k < 100; k++)
		snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s%d", k ? "," : "", k);
	strcat(big, ")");
	char err[RT_FILTER_ERROR_MAX];
	rt_filter *f = NULL;
	assert_int_equal(rt_filter_parse(big, &f, err), 0);
	rt_filter_free(f);
	big[strlen(big) - 1] = '\0';
	strcat(big, ",100)");
	assert_int_equal(rt_filter_parse(big, &f, err), -EINVAL);
	assert_string_equal(err, "too many values for `in` filter. Maximum 100");
	/* a quoted comma inside a value and a quote that does not open one */
	assert_int_equal(rt_filter_parse("t=eq.\"a,b\",i4=eq.1", &f, err), 0);
	assert_int_equal(rt_filter_count(f), 2);
	rt_filter_free(f);
	assert_int_equal(rt_filter_parse("t=eq.x\"a,i4=eq.1", &f, err), 0);
	assert_int_equal(rt_filter_count(f), 2); /* the quote after x opens nothing */
	rt_filter_free(f);
	assert_int_equal(rt_filter_parse("t=in.(a,b),i4=eq.(1,2)", &f, err), 0);
	assert_int_equal(rt_filter_count(f), 2);
	rt_filter_free(f);
}

/* Refused by the check against the relation, with PostgreSQL's / the server's words. */
static const ecase check_errors[] = {
	{"nope=eq.1", "invalid column for filter nope"},
	{"I4=eq.1", "invalid column for filter I4"},
	{"i4 =eq.1", "invalid column for filter i4 "},
	{"=eq.1", "invalid column for filter "},
	{"i4=eq.abc", "invalid input syntax for type integer: \"abc\""},
	{"i4=eq.1.5", "invalid input syntax for type integer: \"1.5\""},
	{"i4=eq.", "invalid input syntax for type integer: \"\""},
	{"i4=eq.2147483648", "value \"2147483648\" is out of range for type integer"},
	{"i2=gt.40000", "value \"40000\" is out of range for type smallint"},
	{"i8=eq.9223372036854775808", "value \"9223372036854775808\" is out of range for type bigint"},
	{"i4=in.(1,x)", "invalid input syntax for type integer: \"x\""},
	{"n=eq.1..2", "invalid input syntax for type numeric: \"1..2\""},
	{"n=eq.1e", "invalid input syntax for type numeric: \"1e\""},
	{"f8=eq.1e400", "\"1e400\" is out of range for type double precision"},
	{"f4=eq.1e39", "\"1e39\" is out of range for type real"},
	{"f8=eq.x", "invalid input syntax for type double precision: \"x\""},
	{"b=eq.maybe", "invalid input syntax for type boolean: \"maybe\""},
	{"b=eq.o", "invalid input syntax for type boolean: \"o\""},
	{"u=eq.123", "invalid input syntax for type uuid: \"123\""},
	{"tz=eq.yesterday", "invalid input syntax for type timestamp with time zone: \"yesterday\""},
	{"tz=eq.2026-13-01", "date/time field value out of range: \"2026-13-01\""},
	{"tz=eq.2026-02-29", "date/time field value out of range: \"2026-02-29\""},
	{"d=eq.26-12-01", "invalid input syntax for type date: \"26-12-01\""},
	{"tm=eq.25:00", "date/time field value out of range: \"25:00\""},
	{"i4=is.true", "is true filter requires a boolean column, got integer"},
	{"t=is.false", "is false filter requires a boolean column, got text"},
	{"i4=like.1%", "operator like requires a text-compatible column type, got integer"},
	{"u=ilike.a%", "operator ilike requires a text-compatible column type, got uuid"},
	{"tz=match.2026", "operator match requires a text-compatible column type, got timestamp with "
	                  "time zone"},
	{"j=imatch.a", "operator imatch requires a text-compatible column type, got jsonb"},
	{"i4=eq.1,nope=eq.1", "invalid column for filter nope"},
};

static void test_check_errors(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(check_errors) / sizeof(check_errors[0]); k++) {
		char err[RT_FILTER_ERROR_MAX] = "";
		rt_filter *f = NULL;
		if (rt_filter_parse(check_errors[k].filter, &f, err) != 0)
			fail_msg("%s: parse: %s", check_errors[k].filter, err);
		int rc = rt_filter_check(f, &rel, err);
		if (rc != -EINVAL)
			fail_msg("%s: rc %d, want -EINVAL", check_errors[k].filter, rc);
		if (strcmp(err, check_errors[k].err) != 0)
			fail_msg("%s: error '%s', want '%s'", check_errors[k].filter, err, check_errors[k].err);
		/* matching without the check: the bad condition is false, never a crash */
		change_value tuple[NCOLS];
		for (int i = 0; i < NCOLS; i++)
			tuple[i] = (change_value){VALUE_TEXT, 1, "1"};
		assert_false(rt_filter_match(f, &rel, tuple));
		rt_filter_free(f);
	}
}

/* One filter across relation versions: a new version (ALTER TABLE) is bound afresh, the column
 * index and type follow it, and many relations do not exhaust the cache. */
static void test_relation_versions(void **state)
{
	(void)state;
	char err[RT_FILTER_ERROR_MAX];
	rt_filter *f = NULL;
	assert_int_equal(rt_filter_parse("x=gt.9", &f, err), 0);
	rel_column c1[] = {{.name = "x", .type_oid = 25}};
	rel_column c2[] = {{.name = "y", .type_oid = 25}, {.name = "x", .type_oid = 23}};
	relation r1 = {.schema = "s", .name = "t", .ncols = 1, .cols = c1, .version = 1, .id = 1};
	relation r2 = {.schema = "s", .name = "t", .ncols = 2, .cols = c2, .version = 2, .id = 2};
	change_value t1[] = {{VALUE_TEXT, 2, "10"}};
	change_value t2[] = {{VALUE_NULL, 0, NULL}, {VALUE_TEXT, 2, "10"}};
	assert_false(rt_filter_match(f, &r1, t1)); /* text: "10" < "9" */
	assert_true(rt_filter_match(f, &r2, t2));  /* int4: 10 > 9 */
	for (int round = 0; round < 3; round++) {
		for (uint64_t id = 100; id < 200; id++) {
			relation rn = r2;
			rn.id = id;
			assert_true(rt_filter_match(f, &rn, t2));
		}
		assert_false(rt_filter_match(f, &r1, t1));
	}
	rt_filter_free(f);
}

/* Work per row is bounded: patterns that make a backtracking matcher run away on a 1 MiB
 * value end (as no match) instead of stalling the loop; ordinary patterns still find what a
 * long value holds. Without the bounds this test takes seconds (like) to an hour (regex). */
static void test_bounded_work(void **state)
{
	(void)state;
	size_t n = 1 << 20;
	char *v = malloc(n + 8);
	assert_non_null(v);
	memset(v, 'a', n);
	strcpy(v + n, "!");
	char *pat = malloc(2100);
	assert_non_null(pat);
	strcpy(pat, "t=like.%");
	memset(pat + 8, 'a', 2000);
	strcpy(pat + 2008, "b");
	const struct {
		const char *filter;
		bool want;
	} c[] = {
		{"t=match.^(a+)+$", false},
		{"t=match.\"(a|aa)*b\"", false},
		{"t=imatch.\"((a{1,10}){1,10}){1,10}z\"", false},
		{pat, false},
		{"t=like.%a%a%a%a%a%a%a%a%b", false},
		{"t=like.%aaaa!", true},
		{"t=match.a!$", true},
		{"t=ilike.A%A!", true},
	};
	for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++)
		if (match1(c[k].filter, "t", v) != c[k].want)
			fail_msg("%.40s on 1 MiB: want %d", c[k].filter, c[k].want);
	free(pat);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_table),
		cmocka_unit_test(test_and),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_check_errors),
		cmocka_unit_test(test_relation_versions),
		cmocka_unit_test(test_bounded_work),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
