/*
 * test_hex — unit tests for the one hex module (src/core/hex.h): digit values, decoding with
 * validation, encoding (in place too) and short numbers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "hex.h"

static void test_digit(void **state)
{
	(void)state;
	const char *digits = "0123456789abcdef";
	const char *upper = "0123456789ABCDEF";
	for (int i = 0; i < 16; i++) {
		assert_int_equal(hex_digit(digits[i]), i);
		assert_int_equal(hex_digit(upper[i]), i);
		assert_int_equal(hex_lower[i], digits[i]);
		assert_int_equal(hex_upper[i], upper[i]);
	}
	/* every other byte value, including the neighbours of the ranges and high bytes */
	int valid = 0;
	for (int c = 0; c < 256; c++)
		if (hex_digit((char)c) >= 0)
			valid++;
	assert_int_equal(valid, 22);
	const char bad[] = {'/', ':', '@', 'G', '`', 'g', ' ', '\0', (char)0x80, (char)0xff, (char)0xb0};
	for (size_t i = 0; i < sizeof(bad); i++)
		assert_int_equal(hex_digit(bad[i]), -1);
}

static void test_decode(void **state)
{
	(void)state;
	uint8_t out[4] = {0};
	assert_int_equal(hex_decode("00ff7Fa5", 4, out), 0);
	assert_int_equal(out[0], 0x00);
	assert_int_equal(out[1], 0xff);
	assert_int_equal(out[2], 0x7f);
	assert_int_equal(out[3], 0xa5);
	assert_int_equal(hex_decode("", 0, out), 0);
	assert_int_equal(hex_decode("0g", 1, out), -EINVAL);
	assert_int_equal(hex_decode("g0", 1, out), -EINVAL);
	assert_int_equal(hex_decode("00 1", 2, out), -EINVAL);
	assert_int_equal(hex_decode("0\x80", 1, out), -EINVAL);
	/* only 2n digits are read: what follows does not matter */
	assert_int_equal(hex_decode("12zz", 1, out), 0);
	assert_int_equal(out[0], 0x12);
}

static void test_encode(void **state)
{
	(void)state;
	const uint8_t in[] = {0x00, 0x01, 0xab, 0xff, 0x10};
	char out[11];
	hex_encode(in, sizeof(in), out);
	out[10] = '\0';
	assert_string_equal(out, "0001abff10");

	/* round trip over every byte value */
	uint8_t all[256], back[256];
	char text[512];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	hex_encode(all, 256, text);
	assert_int_equal(hex_decode(text, 256, back), 0);
	assert_memory_equal(all, back, 256);

	/* in place: the bytes in the upper half, expanded to the front (as the keyring does) */
	char buf[2 * sizeof(in)];
	memcpy(buf + sizeof(in), in, sizeof(in));
	hex_encode((const uint8_t *)buf + sizeof(in), sizeof(in), buf);
	assert_memory_equal(buf, "0001abff10", 10);
}

static void test_parse_u32(void **state)
{
	(void)state;
	uint32_t v = 7;
	assert_int_equal(hex_parse_u32("0", 1, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(hex_parse_u32("FFFFFFFF", 8, &v), 0);
	assert_int_equal(v, 0xffffffffu);
	assert_int_equal(hex_parse_u32("d83D", 4, &v), 0);
	assert_int_equal(v, 0xd83d);
	assert_int_equal(hex_parse_u32("12345678", 3, &v), 0);
	assert_int_equal(v, 0x123);
	v = 7;
	assert_int_equal(hex_parse_u32("", 0, &v), -EINVAL);
	assert_int_equal(hex_parse_u32("123456789", 9, &v), -EINVAL);
	assert_int_equal(hex_parse_u32("12x4", 4, &v), -EINVAL);
	assert_int_equal(hex_parse_u32("-1", 2, &v), -EINVAL);
	assert_int_equal(v, 7); /* untouched on failure */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digit),
		cmocka_unit_test(test_decode),
		cmocka_unit_test(test_encode),
		cmocka_unit_test(test_parse_u32),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
