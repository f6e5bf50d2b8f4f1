/*
 * test_buf — unit tests for the growable buffer and the JSON string escaper (src/core/buf.h).
 * Every escaped string is checked twice: byte for byte against the expected literal, and by
 * parsing it with jansson (which rejects invalid JSON and invalid UTF-8) and comparing the
 * decoded string with what the input should mean.
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

/* Out-of-memory paths are tested with impossible sizes; let the sanitizer's allocator answer
 * NULL as glibc does instead of aborting. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

/* ---- helpers ------------------------------------------------------------------------- */

/* The buffer invariant: data[len] is NUL whenever storage exists, and len < cap. */
static void check_invariant(const buf *b)
{
	if (b->cap == 0) {
		assert_int_equal(b->len, 0);
		return;
	}
	assert_non_null(b->data);
	assert_true(b->len < b->cap);
	assert_int_equal(b->data[b->len], '\0');
}

/* Escapes s[0..n) into a fresh buffer and asserts the exact output. */
static void expect_json(const char *s, size_t n, const char *want, size_t want_len)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_json_string(&b, s, n), 0);
	check_invariant(&b);
	assert_int_equal(b.len, want_len);
	assert_memory_equal(b.data, want, want_len);
	buf_fini(&b);
}
#define EXPECT_JSON(in, want) expect_json((in), sizeof(in) - 1, (want), sizeof(want) - 1)

/* Parses the JSON string literal in b and asserts that it decodes to want[0..want_len). */
static void expect_decodes_to(const buf *b, const char *want, size_t want_len)
{
	json_error_t err;
	json_t *j = json_loadb(b->data, b->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (j == NULL)
		fail_msg("jansson rejected escaped output: %s (at %d)", err.text, err.position);
	assert_true(json_is_string(j));
	assert_int_equal(json_string_length(j), want_len);
	assert_memory_equal(json_string_value(j), want, want_len);
	json_decref(j);
}

/* Escapes s[0..n) and checks that the result is valid JSON meaning want. */
static void expect_roundtrip(const char *s, size_t n, const char *want, size_t want_len)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_json_string(&b, s, n), 0);
	check_invariant(&b);
	expect_decodes_to(&b, want, want_len);
	buf_fini(&b);
}
#define EXPECT_ROUNDTRIP(in, want) expect_roundtrip((in), sizeof(in) - 1, (want), sizeof(want) - 1)

#define FFFD "\xEF\xBF\xBD"

/* Reference for what buf_json_string must mean: each maximal well-formed UTF-8 sequence
 * (Unicode Table 3-7) is kept, every other byte becomes U+FFFD. Written from the table, not
 * from the implementation. Appends to out (which must have room for 3 * n bytes). */
static size_t reference_decode(const unsigned char *s, size_t n, unsigned char *out)
{
	size_t o = 0;
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len = 0;
		unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
		if (c <= 0x7F)
			len = 1;
		else if (c >= 0xC2 && c <= 0xDF)
			len = 2;
		else if (c == 0xE0)
			len = 3, lo = 0xA0;
		else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
			len = 3;
		else if (c == 0xED)
			len = 3, hi = 0x9F;
		else if (c == 0xF0)
			len = 4, lo = 0x90;
		else if (c >= 0xF1 && c <= 0xF3)
			len = 4;
		else if (c == 0xF4)
			len = 4, hi = 0x8F;
		bool ok = len > 0 && i + len <= n;
		if (ok && len > 1 && (s[i + 1] < lo || s[i + 1] > hi))
			ok = false;
		for (size_t k = 2; ok && k < len; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xBF)
				ok = false;
		if (ok) {
			memcpy(out + o, s + i, len);
			o += len;
			i += len;
		} else {
			memcpy(out + o, FFFD, 3);
			o += 3;
			i++;
		}
	}
	return o;
}

/* Deterministic PRNG (xorshift64*) so failures reproduce. */
static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* ---- buffer basics --------------------------------------------------------------------- */

static void test_init_fini(void **state)
{
	buf b;
	memset(&b, 0xA5, sizeof(b));
	buf_init(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	buf_fini(&b); /* on a buffer that never allocated */
	assert_int_equal(b.len, 0);

	assert_int_equal(buf_puts(&b, "x"), 0);
	buf_fini(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	buf_fini(&b); /* twice is safe */

	/* Usable again after fini. */
	assert_int_equal(buf_puts(&b, "again"), 0);
	assert_string_equal(b.data, "again");
	buf_fini(&b);
}

/* buf_put_u64 writes the same digits as printf's %llu, at the edges of each width. */
static void test_put_u64(void **state)
{
	(void)state;
	static const uint64_t values[] = {0, 9, 10, 99, 100, 4294967295u, 4294967296u, 10000000000000000000u,
	                                  UINT64_MAX};
	buf b;
	buf_init(&b);
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		char want[32];
		snprintf(want, sizeof(want), "x%llu", (unsigned long long)values[i]);
		buf_clear(&b);
		assert_int_equal(buf_putc(&b, 'x'), 0);
		assert_int_equal(buf_put_u64(&b, values[i]), 0);
		assert_string_equal(b.data, want);
		assert_int_equal(b.len, strlen(want));
	}
	buf_fini(&b);
}

static void test_append_puts_putc(void **state)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "hello"), 0);
	assert_int_equal(b.len, 5);
	check_invariant(&b);
	assert_int_equal(buf_putc(&b, ','), 0);
	assert_int_equal(buf_append(&b, " world!!!", 6), 0); /* only n bytes */
	assert_int_equal(b.len, 12);
	assert_string_equal(b.data, "hello, world");
	check_invariant(&b);

	/* Zero-length appends change nothing but are fine. */
	assert_int_equal(buf_append(&b, "zzz", 0), 0);
	assert_int_equal(buf_puts(&b, ""), 0);
	assert_int_equal(b.len, 12);
	assert_string_equal(b.data, "hello, world");

	/* Binary data with NUL bytes is counted in len. */
	assert_int_equal(buf_append(&b, "\0a\0", 3), 0);
	assert_int_equal(buf_putc(&b, '\0'), 0);
	assert_int_equal(b.len, 16);
	assert_memory_equal(b.data + 12, "\0a\0\0", 4);
	check_invariant(&b);
	buf_fini(&b);
}

static void test_append_zero_on_empty_terminates(void **state)
{
	/* After any successful append the data is a valid C string, even for zero bytes. */
	buf b;
	buf_init(&b);
	assert_int_equal(buf_append(&b, "", 0), 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, "");
	check_invariant(&b);
	buf_fini(&b);
}

static void test_growth_putc(void **state)
{
	buf b;
	buf_init(&b);
	enum { N = 100000 };
	for (int i = 0; i < N; i++) {
		assert_int_equal(buf_putc(&b, (char)('a' + i % 26)), 0);
		if (i % 997 == 0)
			check_invariant(&b);
	}
	assert_int_equal(b.len, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(b.data[i], 'a' + i % 26);
	check_invariant(&b);
	buf_fini(&b);
}

static void test_growth_append_boundaries(void **state)
{
	/* Appends of every size across the first few capacity boundaries keep all earlier bytes. */
	for (size_t pre = 0; pre < 600; pre += 7) {
		for (size_t n = 250; n < 270; n++) {
			buf b;
			buf_init(&b);
			char *src = malloc(pre + n);
			assert_non_null(src);
			for (size_t i = 0; i < pre + n; i++)
				src[i] = (char)(33 + (i * 7) % 90);
			assert_int_equal(buf_append(&b, src, pre), 0);
			assert_int_equal(buf_append(&b, src + pre, n), 0);
			assert_int_equal(b.len, pre + n);
			assert_memory_equal(b.data, src, pre + n);
			check_invariant(&b);
			free(src);
			buf_fini(&b);
		}
	}
}

static void test_reserve(void **state)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "abc"), 0);
	assert_int_equal(buf_reserve(&b, 10000), 0);
	assert_true(b.cap - b.len > 10000); /* room for the bytes and the NUL */
	assert_string_equal(b.data, "abc");
	assert_int_equal(b.len, 3);

	/* Appending what was reserved does not move the storage. */
	char *before = b.data;
	size_t cap = b.cap;
	char chunk[1000];
	memset(chunk, 'x', sizeof(chunk));
	for (int i = 0; i < 10; i++)
		assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
	assert_ptr_equal(b.data, before);
	assert_int_equal(b.cap, cap);
	assert_int_equal(b.len, 10003);
	check_invariant(&b);

	/* Reserving 0 on an existing buffer is a no-op success. */
	assert_int_equal(buf_reserve(&b, 0), 0);
	assert_int_equal(b.len, 10003);
	buf_fini(&b);
}

static void test_reserve_impossible_leaves_buffer_unchanged(void **state)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "keep me"), 0);
	char *data = b.data;
	size_t len = b.len, cap = b.cap;

	assert_int_equal(buf_reserve(&b, SIZE_MAX), -ENOMEM);
	assert_int_equal(buf_reserve(&b, SIZE_MAX - b.len), -ENOMEM);
	/* Representable but not allocatable: realloc fails, buffer untouched. */
	assert_int_equal(buf_reserve(&b, SIZE_MAX / 4), -ENOMEM);
	assert_ptr_equal(b.data, data);
	assert_int_equal(b.len, len);
	assert_int_equal(b.cap, cap);
	assert_string_equal(b.data, "keep me");

	/* The same through the appenders (which must not read p when they fail). */
	assert_int_equal(buf_append(&b, "x", SIZE_MAX), -ENOMEM);
	assert_int_equal(b.len, len);
	assert_string_equal(b.data, "keep me");

	/* Still usable. */
	assert_int_equal(buf_puts(&b, "!"), 0);
	assert_string_equal(b.data, "keep me!");
	buf_fini(&b);

	/* And on a buffer that has never allocated. */
	buf_init(&b);
	assert_int_equal(buf_reserve(&b, SIZE_MAX), -ENOMEM);
	assert_null(b.data);
	assert_int_equal(b.cap, 0);
	assert_int_equal(b.len, 0);
	buf_fini(&b);
}

static void test_clear(void **state)
{
	buf b;
	buf_init(&b);
	buf_clear(&b); /* on a never-allocated buffer */
	assert_int_equal(b.len, 0);
	assert_null(b.data);

	assert_int_equal(buf_puts(&b, "some content that is here"), 0);
	char *data = b.data;
	size_t cap = b.cap;
	buf_clear(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	assert_ptr_equal(b.data, data); /* storage kept */
	assert_int_equal(b.cap, cap);
	assert_int_equal(buf_puts(&b, "new"), 0);
	assert_string_equal(b.data, "new");
	buf_fini(&b);
}

/* ---- buf_printf ------------------------------------------------------------------------ */

static void test_printf_basic(void **state)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_printf(&b, "%d-%s-%u", -42, "x", 7u), 0);
	assert_string_equal(b.data, "-42-x-7");
	assert_int_equal(b.len, 7);
	assert_int_equal(buf_printf(&b, "[%05.1f]", 3.14159), 0);
	assert_string_equal(b.data, "-42-x-7[003.1]");
	assert_int_equal(b.len, 14);
	check_invariant(&b);
	buf_fini(&b);

	/* Empty output on an empty buffer still leaves a valid C string. */
	buf_init(&b);
	assert_int_equal(buf_printf(&b, "%s", ""), 0);
	assert_int_equal(b.len, 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, "");
	buf_fini(&b);
}

static void test_printf_growth(void **state)
{
	/* Output that crosses capacity boundaries, after prefixes of many lengths: exact content,
	 * exact length, NUL after it (ASan checks the writes stay inside the storage). */
	char big[5000];
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (size_t pre = 0; pre < 530; pre += 3) {
		for (size_t n = 0; n < 600; n += 41) {
			buf b;
			buf_init(&b);
			for (size_t i = 0; i < pre; i++)
				assert_int_equal(buf_putc(&b, 'p'), 0);
			assert_int_equal(buf_printf(&b, "<%.*s>", (int)n, big), 0);
			assert_int_equal(b.len, pre + n + 2);
			for (size_t i = 0; i < pre; i++)
				assert_int_equal(b.data[i], 'p');
			assert_int_equal(b.data[pre], '<');
			for (size_t i = 0; i < n; i++)
				assert_int_equal(b.data[pre + 1 + i], 'z');
			assert_int_equal(b.data[pre + n + 1], '>');
			check_invariant(&b);
			buf_fini(&b);
		}
	}

	/* One large formatted write and many small ones against snprintf. */
	buf b;
	buf_init(&b);
	assert_int_equal(buf_printf(&b, "%s|%s", big, big), 0);
	assert_int_equal(b.len, 2 * (sizeof(big) - 1) + 1);
	assert_int_equal(b.data[sizeof(big) - 1], '|');
	buf_clear(&b);
	char expect[64];
	size_t total = 0;
	for (int i = 0; i < 5000; i++) {
		assert_int_equal(buf_printf(&b, "%d,", i * 7919), 0);
		int k = snprintf(expect, sizeof(expect), "%d,", i * 7919);
		assert_memory_equal(b.data + total, expect, (size_t)k);
		total += (size_t)k;
	}
	assert_int_equal(b.len, total);
	check_invariant(&b);
	buf_fini(&b);
}

/* ---- buf_json_string: exact output ----------------------------------------------------- */

static void test_json_plain(void **state)
{
	EXPECT_JSON("", "\"\"");
	EXPECT_JSON("abc", "\"abc\"");
	EXPECT_JSON("with space / slash ~", "\"with space / slash ~\"");
	EXPECT_JSON("\x7f", "\"\x7f\""); /* DEL needs no escape in JSON */
}

static void test_json_quote_backslash(void **state)
{
	EXPECT_JSON("\"", "\"\\\"\"");
	EXPECT_JSON("\\", "\"\\\\\"");
	EXPECT_JSON("a\"b\\c", "\"a\\\"b\\\\c\"");
	EXPECT_JSON("\\\"", "\"\\\\\\\"\"");
	EXPECT_ROUNDTRIP("say \"hi\" \\ bye\\", "say \"hi\" \\ bye\\");
}

static void test_json_short_escapes(void **state)
{
	EXPECT_JSON("\n", "\"\\n\"");
	EXPECT_JSON("\r", "\"\\r\"");
	EXPECT_JSON("\t", "\"\\t\"");
	EXPECT_JSON("\b", "\"\\b\"");
	EXPECT_JSON("\f", "\"\\f\"");
	EXPECT_JSON("a\r\nb", "\"a\\r\\nb\"");
}

static void test_json_all_control_chars(void **state)
{
	/* Every byte below 0x20 must be escaped (a raw one is invalid JSON) and mean itself. */
	for (int c = 0; c < 0x20; c++) {
		char in[3] = {'x', (char)c, 'y'};
		buf b;
		buf_init(&b);
		assert_int_equal(buf_json_string(&b, in, 3), 0);
		for (size_t i = 0; i < b.len; i++)
			assert_true((unsigned char)b.data[i] >= 0x20);
		if (c != '\n' && c != '\r' && c != '\t' && c != '\b' && c != '\f') {
			char want[16];
			snprintf(want, sizeof(want), "\"x\\u%04xy\"", c);
			assert_string_equal(b.data, want);
		}
		expect_decodes_to(&b, in, 3);
		buf_fini(&b);
	}
	/* NUL inside the range is data, not a terminator. */
	expect_json("a\0b", 3, "\"a\\u0000b\"", 10);
}

static void test_json_respects_length(void **state)
{
	expect_json("abcdef", 3, "\"abc\"", 5);
	expect_json("abc", 0, "\"\"", 2);
	/* Input that is not NUL-terminated (ASan reports any read past it). */
	const char raw[4] = {'w', 'x', 'y', 'z'};
	expect_json(raw, 4, "\"wxyz\"", 6);
	/* A multi-byte sequence cut by n is not read past n: the lead byte is invalid there. */
	expect_json("\xC3\xA9", 1, "\"" FFFD "\"", 5);
}

static void test_json_appends(void **state)
{
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "{\"k\":"), 0);
	assert_int_equal(buf_json_string(&b, "v\n", 2), 0);
	assert_int_equal(buf_putc(&b, ','), 0);
	assert_int_equal(buf_json_string(&b, "w", 1), 0);
	assert_string_equal(b.data, "{\"k\":\"v\\n\",\"w\"");
	assert_int_equal(b.len, strlen("{\"k\":\"v\\n\",\"w\""));
	check_invariant(&b);
	buf_fini(&b);
}

/* ---- buf_json_string: UTF-8 ------------------------------------------------------------ */

static void test_json_valid_utf8_kept(void **state)
{
	/* Boundaries of each sequence length, kept byte for byte. */
	EXPECT_JSON("\xC2\x80", "\"\xC2\x80\"");                 /* U+0080 */
	EXPECT_JSON("\xC3\xA9", "\"\xC3\xA9\"");                 /* é */
	EXPECT_JSON("\xDF\xBF", "\"\xDF\xBF\"");                 /* U+07FF */
	EXPECT_JSON("\xE0\xA0\x80", "\"\xE0\xA0\x80\"");         /* U+0800 */
	EXPECT_JSON("\xE2\x82\xAC", "\"\xE2\x82\xAC\"");         /* € */
	EXPECT_JSON("\xED\x9F\xBF", "\"\xED\x9F\xBF\"");         /* U+D7FF, last before surrogates */
	EXPECT_JSON("\xEE\x80\x80", "\"\xEE\x80\x80\"");         /* U+E000, first after */
	EXPECT_JSON("\xEF\xBF\xBD", "\"\xEF\xBF\xBD\"");         /* U+FFFD itself */
	EXPECT_JSON("\xEF\xBF\xBF", "\"\xEF\xBF\xBF\"");         /* U+FFFF */
	EXPECT_JSON("\xF0\x90\x80\x80", "\"\xF0\x90\x80\x80\""); /* U+10000 */
	EXPECT_JSON("\xF0\x9F\x98\x80", "\"\xF0\x9F\x98\x80\""); /* 😀 */
	EXPECT_JSON("\xF4\x8F\xBF\xBF", "\"\xF4\x8F\xBF\xBF\""); /* U+10FFFF */
	EXPECT_JSON("\xE2\x80\xA8", "\"\xE2\x80\xA8\"");         /* U+2028: valid raw in JSON */
	EXPECT_ROUNDTRIP("ünïcödé 😀 tab\there", "ünïcödé 😀 tab\there");
}

static void test_json_invalid_bytes_replaced(void **state)
{
	EXPECT_JSON("\x80", "\"" FFFD "\"");      /* lone continuation */
	EXPECT_JSON("\xBF", "\"" FFFD "\"");
	EXPECT_JSON("\xFE", "\"" FFFD "\"");
	EXPECT_JSON("\xFF", "\"" FFFD "\"");
	EXPECT_JSON("a\xFF" "b", "\"a" FFFD "b\"");
	EXPECT_JSON("\xC3", "\"" FFFD "\"");      /* truncated at end of input */
	EXPECT_JSON("a\xC3", "\"a" FFFD "\"");
	EXPECT_JSON("\xE2\x82", "\"" FFFD FFFD "\"");
	EXPECT_JSON("\xF0\x9F\x98", "\"" FFFD FFFD FFFD "\"");
	EXPECT_JSON("\xE2\x82x", "\"" FFFD FFFD "x\"");
	EXPECT_JSON("\xC3\xC3\xA9", "\"" FFFD "\xC3\xA9\""); /* bad lead, then a valid é */
	EXPECT_JSON("\xF8\x88\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD FFFD "\""); /* 5-byte form */
	EXPECT_JSON("\xFC\x84\x80\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\"");
}

static void test_json_invalid_lead_does_not_swallow_escapes(void **state)
{
	/* A lead byte followed by a byte that must be escaped: the escape still happens,
	 * otherwise the output would carry a raw quote or control character. */
	EXPECT_JSON("\xC3\"", "\"" FFFD "\\\"\"");
	EXPECT_JSON("\xE2\\", "\"" FFFD "\\\\\"");
	EXPECT_JSON("\xF0\n", "\"" FFFD "\\n\"");
	EXPECT_JSON("\xC3\x01", "\"" FFFD "\\u0001\"");
	EXPECT_ROUNDTRIP("\xE2\x82\"", FFFD FFFD "\"");
}

static void test_json_overlong_rejected(void **state)
{
	EXPECT_JSON("\xC0\x80", "\"" FFFD FFFD "\"");                 /* overlong NUL */
	EXPECT_JSON("\xC0\xAF", "\"" FFFD FFFD "\"");                 /* overlong '/' */
	EXPECT_JSON("\xC1\xBF", "\"" FFFD FFFD "\"");                 /* overlong U+007F */
	EXPECT_JSON("\xE0\x80\x80", "\"" FFFD FFFD FFFD "\"");         /* overlong NUL, 3 bytes */
	EXPECT_JSON("\xE0\x80\xA2", "\"" FFFD FFFD FFFD "\"");         /* overlong '"' */
	EXPECT_JSON("\xE0\x9F\xBF", "\"" FFFD FFFD FFFD "\"");         /* overlong U+07FF */
	EXPECT_JSON("\xF0\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""); /* overlong NUL, 4 bytes */
	EXPECT_JSON("\xF0\x8F\xBF\xBF", "\"" FFFD FFFD FFFD FFFD "\""); /* overlong U+FFFF */
}

static void test_json_surrogates_and_out_of_range_rejected(void **state)
{
	EXPECT_JSON("\xED\xA0\x80", "\"" FFFD FFFD FFFD "\"");         /* U+D800 */
	EXPECT_JSON("\xED\xAF\xBF", "\"" FFFD FFFD FFFD "\"");         /* U+DBFF */
	EXPECT_JSON("\xED\xB0\x80", "\"" FFFD FFFD FFFD "\"");         /* U+DC00 */
	EXPECT_JSON("\xED\xBF\xBF", "\"" FFFD FFFD FFFD "\"");         /* U+DFFF */
	/* CESU-8 style surrogate pair for U+1F600. */
	EXPECT_JSON("\xED\xA0\xBD\xED\xB8\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\"");
	EXPECT_JSON("\xF4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");  /* U+110000 */
	EXPECT_JSON("\xF5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");
	EXPECT_JSON("\xF7\xBF\xBF\xBF", "\"" FFFD FFFD FFFD FFFD "\"");
}

static void test_json_every_two_byte_pair(void **state)
{
	/* Exhaustive: every pair of bytes (plus a trailing ASCII byte) escapes to valid JSON
	 * meaning what the reference decoding says. */
	buf b;
	buf_init(&b);
	unsigned char want[64];
	for (int x = 0; x < 256; x++) {
		for (int y = 0; y < 256; y++) {
			unsigned char in[3] = {(unsigned char)x, (unsigned char)y, 'z'};
			buf_clear(&b);
			assert_int_equal(buf_json_string(&b, (const char *)in, 3), 0);
			size_t wl = reference_decode(in, 3, want);
			expect_decodes_to(&b, (const char *)want, wl);
		}
	}
	buf_fini(&b);
}

static void test_json_random_bytes(void **state)
{
	/* Random strings biased toward the interesting bytes: always valid JSON (jansson checks
	 * UTF-8) with exactly the reference meaning. */
	static const unsigned char pool[] = {
		'a', '"', '\\', '\n', 0x00, 0x1F, 0x7F, 0x80, 0xBF, 0xC0, 0xC2, 0xC3, 0xDF, 0xE0,
		0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0x82, 0x9F, 0xA0, 0x90, 0x8F, 0xAC, 0xBD,
	};
	buf b;
	buf_init(&b);
	unsigned char in[80], want[80 * 3];
	uint64_t seed = 0x9E3779B97F4A7C15ULL;
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = rng(&seed) % sizeof(in);
		for (size_t i = 0; i < n; i++)
			in[i] = (rng(&seed) & 1) ? pool[rng(&seed) % sizeof(pool)] : (unsigned char)rng(&seed);
		buf_clear(&b);
		assert_int_equal(buf_json_string(&b, (const char *)in, n), 0);
		check_invariant(&b);
		size_t wl = reference_decode(in, n, want);
		expect_decodes_to(&b, (const char *)want, wl);
	}
	buf_fini(&b);
}

/* ---- buf_json_string: sizes ------------------------------------------------------------ */

static void test_json_large_input(void **state)
{
	/* 1 MiB of a pattern covering every class of byte; exact output and a jansson parse. */
	static const char unit[] = "ab\"\\\n\x01\xC3\xA9\xF0\x9F\x98\x80\xFF\xED\xA0\x80 ";
	static const char unit_out[] =
		"ab\\\"\\\\\\n\\u0001\xC3\xA9\xF0\x9F\x98\x80" FFFD FFFD FFFD FFFD " ";
	static const char unit_meaning[] = "ab\"\\\n\x01\xC3\xA9\xF0\x9F\x98\x80" FFFD FFFD FFFD FFFD " ";
	size_t ul = sizeof(unit) - 1, uol = sizeof(unit_out) - 1, uml = sizeof(unit_meaning) - 1;
	size_t reps = (1u << 20) / ul;
	char *in = malloc(reps * ul);
	char *out = malloc(reps * uol + 2);
	char *meaning = malloc(reps * uml);
	assert_non_null(in);
	assert_non_null(out);
	assert_non_null(meaning);
	out[0] = '"';
	for (size_t r = 0; r < reps; r++) {
		memcpy(in + r * ul, unit, ul);
		memcpy(out + 1 + r * uol, unit_out, uol);
		memcpy(meaning + r * uml, unit_meaning, uml);
	}
	out[1 + reps * uol] = '"';

	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "x"), 0); /* escaping appends after existing content */
	assert_int_equal(buf_json_string(&b, in, reps * ul), 0);
	assert_int_equal(b.len, 1 + reps * uol + 2);
	assert_int_equal(b.data[0], 'x');
	assert_memory_equal(b.data + 1, out, reps * uol + 2);
	check_invariant(&b);

	buf j;
	buf_init(&j);
	assert_int_equal(buf_append(&j, b.data + 1, b.len - 1), 0);
	expect_decodes_to(&j, meaning, reps * uml);
	buf_fini(&j);
	buf_fini(&b);
	free(in);
	free(out);
	free(meaning);
}

static void test_json_worst_case_expansion(void **state)
{
	/* Every byte expands to the maximum (\u0001 = 6 bytes, U+FFFD = 3), at many lengths, after
	 * prefixes that put the output right at capacity boundaries. ASan checks the writes. */
	for (size_t n = 0; n < 300; n += 13) {
		for (size_t pre = 0; pre < 520; pre += 37) {
			char *in = malloc(n + 1);
			assert_non_null(in);
			memset(in, 0x01, n);
			buf b;
			buf_init(&b);
			for (size_t i = 0; i < pre; i++)
				assert_int_equal(buf_putc(&b, ' '), 0);
			assert_int_equal(buf_json_string(&b, in, n), 0);
			assert_int_equal(b.len, pre + 6 * n + 2);
			check_invariant(&b);
			buf_clear(&b);
			memset(in, 0xFF, n);
			assert_int_equal(buf_json_string(&b, in, n), 0);
			assert_int_equal(b.len, 3 * n + 2);
			check_invariant(&b);
			buf_fini(&b);
			free(in);
		}
	}
	/* A big worst case. */
	size_t n = 200000;
	char *in = malloc(n);
	assert_non_null(in);
	memset(in, 0x1F, n);
	buf b;
	buf_init(&b);
	assert_int_equal(buf_json_string(&b, in, n), 0);
	assert_int_equal(b.len, 6 * n + 2);
	assert_memory_equal(b.data + 1, "\\u001f\\u001f", 12);
	assert_memory_equal(b.data + b.len - 7, "\\u001f\"", 7);
	expect_decodes_to(&b, in, n);
	buf_fini(&b);
	free(in);
}

static void test_json_impossible_length(void **state)
{
	/* Lengths whose worst-case expansion does not fit size_t (or memory) fail with -ENOMEM
	 * before reading the input, and leave the buffer as it was. */
	buf b;
	buf_init(&b);
	assert_int_equal(buf_puts(&b, "pre"), 0);
	char *data = b.data;
	size_t cap = b.cap;
	assert_int_equal(buf_json_string(&b, "x", SIZE_MAX), -ENOMEM);
	assert_int_equal(buf_json_string(&b, "x", SIZE_MAX / 6 + 1), -ENOMEM);
	assert_int_equal(buf_json_string(&b, "x", SIZE_MAX / 6), -ENOMEM);
	assert_int_equal(buf_json_string(&b, "x", SIZE_MAX / 64), -ENOMEM);
	assert_ptr_equal(b.data, data);
	assert_int_equal(b.cap, cap);
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "pre");
	buf_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_fini),
		cmocka_unit_test(test_append_puts_putc),
		cmocka_unit_test(test_put_u64),
		cmocka_unit_test(test_append_zero_on_empty_terminates),
		cmocka_unit_test(test_growth_putc),
		cmocka_unit_test(test_growth_append_boundaries),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_reserve_impossible_leaves_buffer_unchanged),
		cmocka_unit_test(test_clear),
		cmocka_unit_test(test_printf_basic),
		cmocka_unit_test(test_printf_growth),
		cmocka_unit_test(test_json_plain),
		cmocka_unit_test(test_json_quote_backslash),
		cmocka_unit_test(test_json_short_escapes),
		cmocka_unit_test(test_json_all_control_chars),
		cmocka_unit_test(test_json_respects_length),
		cmocka_unit_test(test_json_appends),
		cmocka_unit_test(test_json_valid_utf8_kept),
		cmocka_unit_test(test_json_invalid_bytes_replaced),
		cmocka_unit_test(test_json_invalid_lead_does_not_swallow_escapes),
		cmocka_unit_test(test_json_overlong_rejected),
		cmocka_unit_test(test_json_surrogates_and_out_of_range_rejected),
		cmocka_unit_test(test_json_every_two_byte_pair),
		cmocka_unit_test(test_json_random_bytes),
		cmocka_unit_test(test_json_large_input),
		cmocka_unit_test(test_json_worst_case_expansion),
		cmocka_unit_test(test_json_impossible_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
