/*
 * test_lsn — unit tests for parsing and formatting "X/Y" log sequence numbers (src/core/lsn.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lsn.h"

#define SENTINEL UINT64_C(0xDEADBEEFCAFEF00D)

static uint64_t parse_ok(const char *s)
{
	uint64_t v = SENTINEL;
	int rc = lsn_parse(s, strlen(s), &v);
	if (rc != 0)
		fail_msg("lsn_parse(\"%s\") = %d, want 0", s, rc);
	return v;
}

/* Asserts that s[0..len) is rejected with -EINVAL and *out is left alone. */
static void parse_bad_n(const char *s, size_t len)
{
	uint64_t v = SENTINEL;
	int rc = lsn_parse(s, len, &v);
	if (rc != -EINVAL)
		fail_msg("lsn_parse(\"%.*s\", %zu) = %d, want -EINVAL", (int)len, s, len, rc);
	assert_true(v == SENTINEL);
}
static void parse_bad(const char *s)
{
	parse_bad_n(s, strlen(s));
}

static void test_parse_valid(void **state)
{
	assert_true(parse_ok("0/0") == 0);
	assert_true(parse_ok("0/1") == 1);
	assert_true(parse_ok("1/0") == UINT64_C(0x100000000));
	assert_true(parse_ok("16/B374D848") == UINT64_C(0x16B374D848));
	assert_true(parse_ok("0/16B3748") == UINT64_C(0x16B3748));
	assert_true(parse_ok("FFFFFFFF/FFFFFFFF") == UINT64_MAX);
	assert_true(parse_ok("ffffffff/ffffffff") == UINT64_MAX);
	assert_true(parse_ok("aBcDeF01/23456789") == UINT64_C(0xABCDEF0123456789));
	assert_true(parse_ok("80000000/0") == UINT64_C(0x8000000000000000));
	/* Leading zeros up to 8 digits per half are fine. */
	assert_true(parse_ok("00000001/00000002") == UINT64_C(0x100000002));
	assert_true(parse_ok("0/00000000") == 0);
}

static void test_parse_halves_independent(void **state)
{
	/* The low half is not shifted into the high half and vice versa. */
	assert_true(parse_ok("1/FFFFFFFF") == UINT64_C(0x1FFFFFFFF));
	assert_true(parse_ok("FFFFFFFF/0") == UINT64_C(0xFFFFFFFF00000000));
	assert_true(parse_ok("0/FFFFFFFF") == UINT64_C(0xFFFFFFFF));
}

static void test_parse_no_slash(void **state)
{
	parse_bad("");
	parse_bad("0");
	parse_bad("16B374D848");
	parse_bad("FFFFFFFFFFFFFFFF");
	parse_bad("16\\B374D848");
	parse_bad("16-B374D848");
}

static void test_parse_too_many_digits(void **state)
{
	parse_bad("123456789/0");
	parse_bad("0/123456789");
	parse_bad("000000000/0"); /* nine digits even if the value is small */
	parse_bad("0/000000001");
	parse_bad("FFFFFFFFF/FFFFFFFF");
	parse_bad("1FFFFFFFF/1");
}

static void test_parse_empty_halves(void **state)
{
	parse_bad("/");
	parse_bad("/0");
	parse_bad("0/");
	parse_bad("/FFFFFFFF");
	parse_bad("FFFFFFFF/");
}

static void test_parse_non_hex(void **state)
{
	parse_bad("G/0");
	parse_bad("0/g");
	parse_bad("0x1/2");
	parse_bad("1/0x2");
	parse_bad("-1/2");
	parse_bad("+1/2");
	parse_bad("1/-2");
	parse_bad(" 1/2");
	parse_bad("1 /2");
	parse_bad("1/ 2");
	parse_bad("1/2 ");
	parse_bad("1/2\n");
	parse_bad("1//2");
	parse_bad("1/2/3");
	parse_bad("1.5/2");
	parse_bad("@/0");  /* just below 'A' */
	parse_bad("0/`");  /* just below 'a' */
	parse_bad("0/:");  /* just after '9' */
	parse_bad("0/\xC2\xB9");
	parse_bad_n("1/\0" "2", 4); /* an embedded NUL inside the range */
	parse_bad_n("\0/0", 3);
}

static void test_parse_uses_only_len(void **state)
{
	/* Bytes after len are not part of the LSN. */
	uint64_t v = SENTINEL;
	assert_int_equal(lsn_parse("16/B374D848", 4, &v), 0);
	assert_true(v == UINT64_C(0x160000000B));
	assert_int_equal(lsn_parse("1/2 trailing garbage", 3, &v), 0);
	assert_true(v == UINT64_C(0x100000002));
	assert_int_equal(lsn_parse("1/2/3", 3, &v), 0);
	assert_true(v == UINT64_C(0x100000002));

	/* A len that cuts the string before the slash or right after it. */
	parse_bad_n("16/B374D848", 2);
	parse_bad_n("16/B374D848", 3);
	parse_bad_n("16/B374D848", 0);

	/* A buffer that is not NUL-terminated (ASan reports any read past it). */
	const char raw[5] = {'A', '/', 'B', 'C', 'D'};
	assert_int_equal(lsn_parse(raw, sizeof(raw), &v), 0);
	assert_true(v == UINT64_C(0xA00000BCD));
	const char noslash[4] = {'A', 'B', 'C', 'D'};
	parse_bad_n(noslash, sizeof(noslash));
}

static void test_format(void **state)
{
	char out[LSN_TEXT_MAX];
	assert_string_equal(lsn_format(0, out), "0/0");
	assert_string_equal(lsn_format(1, out), "0/1");
	assert_string_equal(lsn_format(UINT64_C(0x16B3748), out), "0/16B3748");
	assert_string_equal(lsn_format(UINT64_C(0x16B374D848), out), "16/B374D848");
	assert_string_equal(lsn_format(UINT64_C(0x100000000), out), "1/0");
	assert_string_equal(lsn_format(UINT64_C(0xFFFFFFFF), out), "0/FFFFFFFF");
	assert_string_equal(lsn_format(UINT64_MAX, out), "FFFFFFFF/FFFFFFFF");
	assert_string_equal(lsn_format(UINT64_C(0xABCDEF0000000001), out), "ABCDEF00/1");
	/* Returns its argument. */
	assert_ptr_equal(lsn_format(42, out), out);
}

static void test_format_fits_exactly_sized_buffer(void **state)
{
	/* The longest LSN fits in LSN_TEXT_MAX bytes and nothing is written beyond them: the
	 * guard bytes that follow the array in the struct stay untouched. */
	struct {
		char out[LSN_TEXT_MAX];
		char guard[8];
	} s;
	memset(&s, 'G', sizeof(s));
	lsn_format(UINT64_MAX, s.out);
	assert_string_equal(s.out, "FFFFFFFF/FFFFFFFF");
	assert_memory_equal(s.guard, "GGGGGGGG", 8);
}

static void test_round_trip(void **state)
{
	/* Deterministic pseudo-random values plus edge values: format then parse gives back the
	 * same number, and parse then format gives the canonical text. */
	uint64_t x = UINT64_C(0x9E3779B97F4A7C15);
	char out[LSN_TEXT_MAX];
	for (int i = 0; i < 20000; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		uint64_t v = x * UINT64_C(2685821657736338717);
		if (i % 4 == 1)
			v &= 0xFFFFFFFF; /* high half zero */
		else if (i % 4 == 2)
			v &= UINT64_C(0xFFFFFFFF00000000); /* low half zero */
		else if (i % 4 == 3)
			v >>= (unsigned)(i % 64);
		lsn_format(v, out);
		uint64_t back = SENTINEL;
		assert_int_equal(lsn_parse(out, strlen(out), &back), 0);
		assert_true(back == v);
	}
	/* Non-canonical input (leading zeros, lower case) formats canonically. */
	uint64_t v = parse_ok("0000000a/00000bcd");
	assert_string_equal(lsn_format(v, out), "A/BCD");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_halves_independent),
		cmocka_unit_test(test_parse_no_slash),
		cmocka_unit_test(test_parse_too_many_digits),
		cmocka_unit_test(test_parse_empty_halves),
		cmocka_unit_test(test_parse_non_hex),
		cmocka_unit_test(test_parse_uses_only_len),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_fits_exactly_sized_buffer),
		cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
