/* lsn — parse and format "X/Y" log sequence numbers. */
#include "lsn.h"

#include <errno.h>

#include "hex.h"

int lsn_parse(const char *s, size_t len, uint64_t *out)
{
	size_t slash = 0;
	while (slash < len && s[slash] != '/')
		slash++;
	if (slash == len)
		return -EINVAL;
	uint32_t hi, lo;
	if (hex_parse_u32(s, slash, &hi) < 0 || hex_parse_u32(s + slash + 1, len - slash - 1, &lo) < 0)
		return -EINVAL;
	*out = ((uint64_t)hi << 32) | lo;
	return 0;
}

/* Upper-case hex of v without leading zeros ("0" for 0); returns the end. (Kept here rather
 * than in hex.c: the zero-stripping form is the LSN's own; the digits are hex.c's.) */
static char *hex_put(char *o, uint32_t v)
{
	int shift = 28;
	while (shift > 0 && ((v >> shift) & 15) == 0)
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		*o++ = hex_upper[(v >> shift) & 15];
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
