/* buf — growable byte buffer and the JSON string escaper every writer uses. */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"

void buf_init(buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void buf_fini(buf *b)
{
	free(b->data);
	buf_init(b);
}

int buf_reserve(buf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len <= extra) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	char *p = realloc(b->data, cap);
	if (p == NULL)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int buf_append(buf *b, const void *p, size_t n)
{
	int rc = buf_reserve(b, n);
	if (rc < 0)
		return rc;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_puts(buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_put_u64(buf *b, uint64_t v)
{
	char digits[20];
	size_t n = 0;
	do {
		digits[sizeof(digits) - ++n] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	return buf_append(b, digits + sizeof(digits) - n, n);
}

int buf_printf(buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	int rc = buf_reserve(b, (size_t)n + 1);
	if (rc < 0)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t min;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) {
		len = 2, min = 0x80, cp = c & 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		len = 3, min = 0x800, cp = c & 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		len = 4, min = 0x10000, cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

int buf_json_string(buf *b, const char *s, size_t n)
{
	/* Worst case: every byte becomes \u00XX (6) or U+FFFD (3). */
	if (n > (SIZE_MAX - 3) / 6)
		return -ENOMEM;
	int rc = buf_reserve(b, n * 6 + 3);
	if (rc < 0)
		return rc;
	const unsigned char *p = (const unsigned char *)s;
	char *o = b->data + b->len;
	*o++ = '"';
	size_t i = 0;
	while (i < n) {
		unsigned char c = p[i];
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			*o++ = (char)c;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t l = utf8_seq_len(p + i, n - i);
			if (l == 0) {
				*o++ = (char)0xEF, *o++ = (char)0xBF, *o++ = (char)0xBD;
				i++;
			} else {
				memcpy(o, p + i, l);
				o += l;
				i += l;
			}
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '\n': *o++ = 'n'; break;
		case '\r': *o++ = 'r'; break;
		case '\t': *o++ = 't'; break;
		case '\b': *o++ = 'b'; break;
		case '\f': *o++ = 'f'; break;
		default:
			*o++ = 'u', *o++ = '0', *o++ = '0';
			*o++ = hex_lower[c >> 4];
			*o++ = hex_lower[c & 15];
		}
		i++;
	}
	*o++ = '"';
	*o = '\0';
	b->len = (size_t)(o - b->data);
	return 0;
}
