/*
 * test_uuid — unit tests for the one uuid module (src/core/uuid.h): the strict canonical
 * parser (every byte position, every digit, bad hyphens, high bytes), PostgreSQL's looser
 * input form, and formatting round trips.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "uuid.h"

static const char canon[] = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
static const uint8_t canon_b[UUID_BYTES] = {0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                            0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11};

static void test_parse(void **state)
{
	(void)state;
	uint8_t b[UUID_BYTES];
	assert_int_equal(uuid_parse(canon, strlen(canon), b), 0);
	assert_memory_equal(b, canon_b, UUID_BYTES);
	assert_int_equal(uuid_parse("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", 36, b), 0);
	assert_memory_equal(b, canon_b, UUID_BYTES);

	/* a bad byte in any position is refused, and out is left alone */
	static const char bad_bytes[] = {'g', 'G', '/', ':', '@', '`', ' ', '-', '\0', (char)0x80, (char)0xe0};
	for (size_t pos = 0; pos < UUID_TEXT_LEN; pos++) {
		for (size_t j = 0; j < sizeof(bad_bytes); j++) {
			char t[UUID_TEXT];
			memcpy(t, canon, sizeof(t));
			t[pos] = bad_bytes[j];
			if (t[pos] == canon[pos])
				continue;
			memset(b, 0x5a, sizeof(b));
			if (uuid_parse(t, UUID_TEXT_LEN, b) != -EINVAL)
				fail_msg("accepted byte 0x%02x at %zu", (unsigned char)bad_bytes[j], pos);
			for (int k = 0; k < UUID_BYTES; k++)
				assert_int_equal(b[k], 0x5a);
		}
	}
	/* every digit value at every digit position */
	for (size_t pos = 0; pos < UUID_TEXT_LEN; pos++) {
		if (canon[pos] == '-')
			continue;
		for (const char *d = "0123456789abcdefABCDEF"; *d != '\0'; d++) {
			char t[UUID_TEXT], back[UUID_TEXT], want[UUID_TEXT];
			memcpy(t, canon, sizeof(t));
			t[pos] = *d;
			assert_int_equal(uuid_parse(t, UUID_TEXT_LEN, b), 0);
			uuid_format(b, back);
			memcpy(want, t, sizeof(want));
			if (want[pos] >= 'A' && want[pos] <= 'F')
				want[pos] = (char)(want[pos] - 'A' + 'a');
			assert_string_equal(back, want);
		}
	}
	/* wrong lengths, misplaced hyphens, NULL, the looser forms */
	assert_int_equal(uuid_parse(canon, 35, b), -EINVAL);
	assert_int_equal(uuid_parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", 37, b), -EINVAL);
	assert_int_equal(uuid_parse(NULL, 36, b), -EINVAL);
	assert_int_equal(uuid_parse("a0eebc999c0b4ef8bb6d6bb9bd380a11", 32, b), -EINVAL);
	assert_int_equal(uuid_parse("a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11", 36, b), -EINVAL);
	assert_int_equal(uuid_parse("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1}", 38, b), -EINVAL);
}

static void test_parse_pg(void **state)
{
	(void)state;
	uint8_t b[UUID_BYTES];
	static const char *const ok[] = {
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11",
		"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		memset(b, 0, sizeof(b));
		assert_int_equal(uuid_parse_pg(ok[i], strlen(ok[i]), b), 0);
		assert_memory_equal(b, canon_b, UUID_BYTES);
	}
	static const char *const bad[] = {
		"", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(b, 0x5a, sizeof(b));
		if (uuid_parse_pg(bad[i], strlen(bad[i]), b) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_int_equal(b[0], 0x5a);
	}
	assert_int_equal(uuid_parse_pg(NULL, 0, b), -EINVAL);
}

static void test_format(void **state)
{
	(void)state;
	char out[UUID_TEXT];
	uuid_format(canon_b, out);
	assert_string_equal(out, canon);
	uint8_t z[UUID_BYTES] = {0}, f[UUID_BYTES];
	uuid_format(z, out);
	assert_string_equal(out, "00000000-0000-0000-0000-000000000000");
	memset(f, 0xff, sizeof(f));
	uuid_format(f, out);
	assert_string_equal(out, "ffffffff-ffff-ffff-ffff-ffffffffffff");
	/* round trip over bytes that use every digit in every position */
	for (int v = 0; v < 256; v++) {
		uint8_t in[UUID_BYTES], back[UUID_BYTES];
		for (int k = 0; k < UUID_BYTES; k++)
			in[k] = (uint8_t)(v + 17 * k);
		uuid_format(in, out);
		assert_int_equal(strlen(out), UUID_TEXT_LEN);
		assert_int_equal(uuid_parse(out, UUID_TEXT_LEN, back), 0);
		assert_memory_equal(in, back, UUID_BYTES);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_pg),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
