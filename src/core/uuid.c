/* uuid — parsing and formatting uuids (see uuid.h). */
#include "uuid.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "hex.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* A specialized decoder, not hex_decode(): the canonical parse is on the policy hot path (every
 * policy-table row, every audience decision), and eight digits per register step with one
 * validity test beats eight table lookups with a branch each. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Eight hex digits (in memory order, loaded little-endian) to four bytes, eight at a time in
 * one register (SWAR). Each byte is range-checked with additions that cannot carry into the
 * next byte while the high bits are clear. 1, or 0 for any non-hex byte (out is written anyway). */
static inline unsigned hex8(uint64_t x, uint8_t out[4])
{
	uint64_t ge_0 = x + ONES * (0x80 - '0'), ge_colon = x + ONES * (0x80 - ('9' + 1));
	uint64_t lower = x | ONES * 0x20;
	uint64_t ge_a = lower + ONES * (0x80 - 'a'), ge_g = lower + ONES * (0x80 - ('f' + 1));
	uint64_t digit = ge_0 & ~ge_colon & HIGHS, alpha = ge_a & ~ge_g & HIGHS;
	/* (a byte with its high bit set may have carried into the next one: the checks above are
	 * then garbage, but such input fails the first test below anyway) */
	unsigned ok = ((x & HIGHS) == 0) & ((digit | alpha) == HIGHS);
	uint64_t v = (x & ONES * 0x0f) + (alpha >> 7) * 9;           /* nibble values */
	v = ((v << 4) | (v >> 8)) & 0x00ff00ff00ff00ffULL;           /* pairs -> bytes */
	v = (v | (v >> 8)) & 0x0000ffff0000ffffULL;
	v = (v | (v >> 16)) & 0x00000000ffffffffULL;
	uint32_t w = (uint32_t)v;
	memcpy(out, &w, 4);
	return ok;
}

/* The 32 digits of a canonical text (hyphens already checked) into out; true when all are hex
 * digits (out is written anyway). */
static inline bool digits_parse(const char *s, uint8_t out[UUID_BYTES])
{
	/* the 32 digits in four words, straight from s (no staging buffer: that would stall store
	 * forwarding): 8 | 4+4 | 4+4 | 8 around the hyphens */
	uint64_t w0, w3;
	uint32_t a, b, c, d;
	memcpy(&w0, s, 8);
	memcpy(&a, s + 9, 4);
	memcpy(&b, s + 14, 4);
	memcpy(&c, s + 19, 4);
	memcpy(&d, s + 24, 4);
	memcpy(&w3, s + 28, 8);
	return (hex8(w0, out) & hex8((uint64_t)b << 32 | a, out + 4) & hex8((uint64_t)d << 32 | c, out + 8) &
	        hex8(w3, out + 12)) != 0;
}
#else
/* Offsets of the 16 digit pairs in "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
static const uint8_t uuid_pairs[UUID_BYTES] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

/* As above, a pair at a time: an invalid digit reads as 0xff, and the OR of all is checked once. */
static inline bool digits_parse(const char *s, uint8_t out[UUID_BYTES])
{
	unsigned bad = 0;
	for (int i = 0; i < UUID_BYTES; i++) {
		uint8_t hi = hex_values[(unsigned char)s[uuid_pairs[i]]];
		uint8_t lo = hex_values[(unsigned char)s[uuid_pairs[i] + 1]];
		bad |= hi | lo;
		out[i] = (uint8_t)(hi << 4 | (lo & 0x0f));
	}
	return (bad & 0xf0) == 0;
}
#endif

int uuid_parse(const char *s, size_t len, uint8_t out[UUID_BYTES])
{
	if (s == NULL || len != UUID_TEXT_LEN || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-')
		return -EINVAL;
	uint8_t b[UUID_BYTES];
	if (!digits_parse(s, b))
		return -EINVAL;
	memcpy(out, b, UUID_BYTES);
	return 0;
}

int uuid_parse_pg(const char *s, size_t len, uint8_t out[UUID_BYTES])
{
	/* PostgreSQL's string_to_uuid(): optional braces, 16 bytes of two hex digits each, and a
	 * hyphen allowed after every second byte except the last. */
	if (s == NULL)
		return -EINVAL;
	uint8_t u[UUID_BYTES];
	size_t i = 0;
	bool braces = len > 0 && s[0] == '{';
	if (braces)
		i++;
	for (int b = 0; b < UUID_BYTES; b++) {
		if (i + 2 > len)
			return -EINVAL;
		int hi = hex_digit(s[i]), lo = hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		u[b] = (uint8_t)(hi << 4 | lo);
		i += 2;
		if (i < len && s[i] == '-' && b % 2 == 1 && b < UUID_BYTES - 1)
			i++;
	}
	if (braces) {
		if (i >= len || s[i] != '}')
			return -EINVAL;
		i++;
	}
	if (i != len)
		return -EINVAL;
	memcpy(out, u, UUID_BYTES);
	return 0;
}

void uuid_format(const uint8_t b[UUID_BYTES], char out[UUID_TEXT])
{
	size_t o = 0;
	for (int i = 0; i < UUID_BYTES; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex_lower[b[i] >> 4];
		out[o++] = hex_lower[b[i] & 0x0f];
	}
	out[o] = '\0';
}
