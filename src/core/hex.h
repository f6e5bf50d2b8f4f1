/*
 * hex — hexadecimal digits: one table of digit values, one decoder with validation, one
 * encoder. Every module that reads or writes hex (keys and ciphertexts in the keyring, uuids,
 * LSNs, JSON \u escapes, percent-encoded nng topics) uses these.
 */
#ifndef WALCAST_HEX_H
#define WALCAST_HEX_H

#include <stddef.h>
#include <errno.h>
#include <stdint.h>

/* Digit value (0..15) of every byte; 0xff for a byte that is not a hex digit (either case). */
extern const uint8_t hex_values[256];
/* "0123456789abcdef" and "0123456789ABCDEF" (no NUL terminator needed by callers). */
extern const char hex_lower[17];
extern const char hex_upper[17];

/* The value (0..15) of the hex digit c, or -1 when c is not one. Never blocks. */
static inline int hex_digit(char c)
{
	uint8_t v = hex_values[(unsigned char)c];
	return v == 0xff ? -1 : (int)v;
}

/* Decodes n bytes from the 2n hex digits (either case) at s into out. 0, or -EINVAL at the
 * first byte that is not a hex digit (out may be partly written then). s must hold 2n bytes. */
__attribute__((warn_unused_result)) int hex_decode(const char *s, size_t n, uint8_t *out);

/* Writes the 2n lower-case hex digits of in[0..n) to out (no NUL). Front to back, one input
 * byte read before its two digits are written, so in may lie at out + n or later in the same
 * buffer (expanding in place from the front). */
void hex_encode(const uint8_t *in, size_t n, char *out);

/* Parses the whole of s[0..len) (1 to 8 hex digits, either case) as an unsigned number.
 * 0 with *out set, or -EINVAL (empty, too long, or a non-digit; *out untouched). */
__attribute__((warn_unused_result)) static inline int hex_parse_u32(const char *s, size_t len,
                                                                    uint32_t *out)
{
	if (len == 0 || len > 8)
		return -EINVAL;
	uint32_t v = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t d = hex_values[(unsigned char)s[i]];
		if (d == 0xff)
			return -EINVAL;
		v = (v << 4) | d;
	}
	*out = v;
	return 0;
}

#endif
