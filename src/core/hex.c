/* hex — hex digit values, decoding and encoding (see hex.h). */
#include "hex.h"

#include <errno.h>

#define X 0xff
#define ROW16 X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X
const uint8_t hex_values[256] = {
	ROW16, ROW16, ROW16,
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, X, X, X, X, X, X,            /* 0x30: '0'..'9' */
	X, 10, 11, 12, 13, 14, 15, X, X, X, X, X, X, X, X, X,      /* 0x40: 'A'..'F' */
	ROW16,
	X, 10, 11, 12, 13, 14, 15, X, X, X, X, X, X, X, X, X,      /* 0x60: 'a'..'f' */
	ROW16, ROW16, ROW16, ROW16, ROW16, ROW16, ROW16, ROW16, ROW16,
};
#undef ROW16
#undef X

const char hex_lower[17] = "0123456789abcdef";
const char hex_upper[17] = "0123456789ABCDEF";

int hex_decode(const char *s, size_t n, uint8_t *out)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n; i++) {
		unsigned hi = hex_values[u[2 * i]], lo = hex_values[u[2 * i + 1]];
		if ((hi | lo) > 15)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void hex_encode(const uint8_t *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t b = in[i];
		out[2 * i] = hex_lower[b >> 4];
		out[2 * i + 1] = hex_lower[b & 15];
	}
}
