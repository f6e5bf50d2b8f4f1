/*
 * json_scan — zero-copy JSON pull scanner (see json_scan.h).
 *
 * The hot loop is the string scan: it looks at eight bytes per step (SWAR bit tricks) for '"',
 * '\\' and control characters, finishes with a 256-entry class table, and copies nothing.
 * Skipping a nested value walks it with an explicit 64-bit stack (one bit per level: object or
 * array) instead of recursion, which bounds both depth and stack use.
 */
#include "json_scan.h"

#include <string.h>

#include "hex.h"

/* 1 for the bytes that end the fast path of a string body: '"', '\\' and 0x00-0x1F. */
static const unsigned char str_stop[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	['"'] = 1, ['\\'] = 1,
};

void json_scan_init(json_scan *s, const char *data, size_t len)
{
	s->start = data;
	s->p = data;
	s->end = data + len;
	s->err = NULL;
	s->err_off = 0;
}

int json_scan_fail_at(json_scan *s, const char *at, const char *msg)
{
	if (s->err == NULL) {
		s->err = msg;
		s->err_off = (size_t)(at - s->start);
	}
	return -1;
}

int json_scan_fail(json_scan *s, const char *msg)
{
	return json_scan_fail_at(s, s->p, msg);
}

static inline void skip_ws(json_scan *s)
{
	const char *p = s->p;
	while (p < s->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	s->p = p;
}

/* s->p is at the opening quote. */
static int scan_string(json_scan *s, json_scan_token *t)
{
	const unsigned char *p = (const unsigned char *)s->p + 1;
	const unsigned char *end = (const unsigned char *)s->end;
	const unsigned char *body = p;
	bool escaped = false;
	for (;;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		/* Eight bytes at a time: flag bytes equal to '"' or '\\' or below 0x20 (the lowest
		 * flagged byte is exact; flags above it may be spurious, so only the lowest is used). */
		while (end - p >= 8) {
			uint64_t v;
			memcpy(&v, p, 8);
			const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
			uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
			uint64_t hit = (((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v)) & high;
			if (hit != 0) {
				p += (unsigned)__builtin_ctzll(hit) >> 3;
				goto stop;
			}
			p += 8;
		}
#endif
		while (p < end && !str_stop[*p])
			p++;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	stop:
#endif
		if (p >= end) {
			s->p = (const char *)p;
			return json_scan_fail(s, "unterminated string");
		}
		if (*p == '"')
			break;
		if (*p == '\\') {
			escaped = true;
			if (end - p < 2) {
				s->p = (const char *)p;
				return json_scan_fail(s, "unterminated string");
			}
			p += 2;
			continue;
		}
		s->p = (const char *)p;
		return json_scan_fail(s, "raw control character in string");
	}
	t->type = JSON_SCAN_STRING;
	t->p = (const char *)body;
	t->len = (size_t)(p - body);
	t->escaped = escaped;
	s->p = (const char *)p + 1;
	return 0;
}

static inline bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int scan_number(json_scan *s, json_scan_token *t)
{
	const char *p = s->p, *end = s->end, *b = p;
	if (*p == '-')
		p++;
	if (p >= end)
		goto bad;
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		while (p < end && is_digit(*p))
			p++;
	} else {
		goto bad;
	}
	if (p < end && *p == '.') {
		const char *d = ++p;
		while (p < end && is_digit(*p))
			p++;
		if (p == d)
			goto bad;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		const char *d = p;
		while (p < end && is_digit(*p))
			p++;
		if (p == d)
			goto bad;
	}
	t->type = JSON_SCAN_NUMBER;
	t->p = b;
	t->len = (size_t)(p - b);
	t->escaped = false;
	s->p = p;
	return 0;
bad:
	s->p = p;
	return json_scan_fail(s, "malformed number");
}

static int scan_literal(json_scan *s, json_scan_token *t, const char *lit, size_t n,
                        json_scan_kind type)
{
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return json_scan_fail(s, "unexpected character");
	t->type = type;
	t->p = s->p;
	t->len = n;
	t->escaped = false;
	s->p += n;
	return 0;
}

int json_scan_value(json_scan *s, json_scan_token *t)
{
	if (s->err != NULL)
		return -1;
	skip_ws(s);
	if (s->p >= s->end)
		return json_scan_fail(s, "truncated input");
	switch (*s->p) {
	case '"':
		return scan_string(s, t);
	case '{':
	case '[':
		t->type = *s->p == '{' ? JSON_SCAN_OBJECT : JSON_SCAN_ARRAY;
		t->p = s->p;
		t->len = 1;
		t->escaped = false;
		s->p++;
		return 0;
	case 't':
		return scan_literal(s, t, "true", 4, JSON_SCAN_TRUE);
	case 'f':
		return scan_literal(s, t, "false", 5, JSON_SCAN_FALSE);
	case 'n':
		return scan_literal(s, t, "null", 4, JSON_SCAN_NULL);
	case '-':
	case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return scan_number(s, t);
	default:
		return json_scan_fail(s, "unexpected character");
	}
}

int json_scan_object_next(json_scan *s, bool *first, json_scan_token *key)
{
	if (s->err != NULL)
		return -1;
	skip_ws(s);
	if (s->p >= s->end)
		return json_scan_fail(s, "truncated input");
	if (*s->p == '}') {
		s->p++;
		return 0;
	}
	if (!*first) {
		if (*s->p != ',')
			return json_scan_fail(s, "expected ',' or '}'");
		s->p++;
		skip_ws(s);
	}
	*first = false;
	if (s->p >= s->end)
		return json_scan_fail(s, "truncated input");
	if (*s->p != '"')
		return json_scan_fail(s, "expected a string key");
	if (scan_string(s, key) < 0)
		return -1;
	skip_ws(s);
	if (s->p >= s->end)
		return json_scan_fail(s, "truncated input");
	if (*s->p != ':')
		return json_scan_fail(s, "expected ':'");
	s->p++;
	return 1;
}

int json_scan_array_next(json_scan *s, bool *first)
{
	if (s->err != NULL)
		return -1;
	skip_ws(s);
	if (s->p >= s->end)
		return json_scan_fail(s, "truncated input");
	if (*s->p == ']') {
		/* "[1,]" cannot get here: the element after ',' is read by json_scan_value. */
		s->p++;
		return 0;
	}
	if (!*first) {
		if (*s->p != ',')
			return json_scan_fail(s, "expected ',' or ']'");
		s->p++;
	}
	*first = false;
	return 1;
}

int json_scan_skip(json_scan *s, const json_scan_token *t)
{
	if (s->err != NULL)
		return -1;
	if (t->type != JSON_SCAN_OBJECT && t->type != JSON_SCAN_ARRAY)
		return 0;
	uint64_t stack = t->type == JSON_SCAN_OBJECT; /* bit 0: the innermost level is an object */
	int depth = 1;
	bool first = true;
	json_scan_token v;
	while (depth > 0) {
		bool in_object = stack & 1;
		int rc;
		if (in_object) {
			json_scan_token key;
			rc = json_scan_object_next(s, &first, &key);
		} else {
			rc = json_scan_array_next(s, &first);
		}
		if (rc < 0)
			return -1;
		if (rc == 0) {
			stack >>= 1;
			depth--;
			first = false;
			continue;
		}
		if (json_scan_value(s, &v) < 0)
			return -1;
		if (v.type == JSON_SCAN_OBJECT || v.type == JSON_SCAN_ARRAY) {
			if (depth >= JSON_SCAN_MAX_DEPTH)
				return json_scan_fail(s, "nesting too deep");
			stack = (stack << 1) | (v.type == JSON_SCAN_OBJECT);
			depth++;
			first = true;
		}
	}
	return 0;
}

int json_scan_skip_value(json_scan *s)
{
	json_scan_token t;
	if (json_scan_value(s, &t) < 0)
		return -1;
	return json_scan_skip(s, &t);
}

int json_scan_finish(json_scan *s)
{
	if (s->err != NULL)
		return -1;
	skip_ws(s);
	if (s->p != s->end)
		return json_scan_fail(s, "trailing characters after the JSON value");
	return 0;
}

/* The four hex digits of a backslash-u escape at p (at most end). 0, or -1 when they are not there. */
static int hex4(const char *p, const char *end, uint32_t *out)
{
	if (end - p < 4)
		return -1;
	return hex_parse_u32(p, 4, out) < 0 ? -1 : 0;
}

long json_scan_unescape(const char *p, size_t len, char *out, const char **err)
{
	const char *end = p + len;
	char *o = out;
	while (p < end) {
		const char *bs = memchr(p, '\\', (size_t)(end - p));
		size_t n = bs != NULL ? (size_t)(bs - p) : (size_t)(end - p);
		memcpy(o, p, n);
		o += n;
		p += n;
		if (bs == NULL)
			break;
		if (end - p < 2) {
			*err = "truncated escape sequence";
			return -1;
		}
		char c = p[1];
		p += 2;
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u': {
			uint32_t cp;
			if (hex4(p, end, &cp) < 0) {
				*err = "malformed \\u escape";
				return -1;
			}
			p += 4;
			if (cp == 0) {
				*err = "\\u0000 in a string (PostgreSQL text cannot contain NUL)";
				return -1;
			}
			if (cp >= 0xDC00 && cp <= 0xDFFF) {
				*err = "unpaired low surrogate in \\u escape";
				return -1;
			}
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				uint32_t lo;
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) < 0 ||
				    lo < 0xDC00 || lo > 0xDFFF) {
					*err = "unpaired high surrogate in \\u escape";
					return -1;
				}
				p += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			}
			if (cp < 0x80) {
				*o++ = (char)cp;
			} else if (cp < 0x800) {
				*o++ = (char)(0xC0 | (cp >> 6));
				*o++ = (char)(0x80 | (cp & 0x3F));
			} else if (cp < 0x10000) {
				*o++ = (char)(0xE0 | (cp >> 12));
				*o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*o++ = (char)(0x80 | (cp & 0x3F));
			} else {
				*o++ = (char)(0xF0 | (cp >> 18));
				*o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
				*o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*o++ = (char)(0x80 | (cp & 0x3F));
			}
			break;
		}
		default:
			*err = "invalid escape sequence";
			return -1;
		}
	}
	return (long)(o - out);
}

int json_scan_u32(const json_scan_token *t, uint32_t *out)
{
	if (t->type != JSON_SCAN_NUMBER || t->len == 0 || t->len > 10)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < t->len; i++) {
		if (!is_digit(t->p[i]))
			return -1;
		v = v * 10 + (uint64_t)(t->p[i] - '0');
	}
	if (v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}
