/* lsn — parse and format "X/Y" log sequence numbers. */
#include "lsn.h"

#include <errno.h>

static int hex_half(const char *s, size_t len, uint32_t *out)
{
	if (len == 0 || len > 8)
		return -EINVAL;
	uint32_t v = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		uint32_t d;
		if (c >= '0' && c <= '9')
			d = (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (uint32_t)(c - 'A' + 10);
		else
			return -EINVAL;
		v = (v << 4) | d;
	}
	*out = v;
	return 0;
}

int lsn_parse(const char *s, size_t len, uint64_t *out)
{
	size_t slash = 0;
	while (slash < len && s[slash] != '/')
		slash++;
	if (slash == len)
		return -EINVAL;
	uint32_t hi, lo;
	if (hex_half(s, slash, &hi) < 0 || hex_half(s + slash + 1, len - slash - 1, &lo) < 0)
		return -EINVAL;
	*out = ((uint64_t)hi << 32) | lo;
	return 0;
}

/* Upper-case hex of v without leading zeros ("0" for 0); returns the end. */
static char *hex_put(char *o, uint32_t v)
{
	static const char digits[] = "0123456789ABCDEF";
	int shift = 28;
	while (shift > 0 && ((v >> shift) & 15) == 0)
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		*o++ = digits[(v >> shift) & 15];
	return o;
}

/* Hand-written rather than snprintf: every output line carries two LSNs. */
char *lsn_format(uint64_t lsn, char out[LSN_TEXT_MAX])
{
	char *o = hex_put(out, (uint32_t)(lsn >> 32));
	*o++ = '/';
	o = hex_put(o, (uint32_t)lsn);
	*o = '\0';
	return out;
}
