/*
 * json_scan — a small zero-copy pull scanner for one JSON document in a byte range that is not
 * NUL-terminated (a wal2json payload). It never builds a tree and never allocates: a scalar comes
 * back as a span of the input (strings still escaped, with a flag saying whether they contain
 * escapes), objects and arrays are walked with json_scan_object_next()/json_scan_array_next(),
 * and values the caller does not want are skipped without recursion.
 *
 * It accepts exactly RFC 8259 JSON (no raw control characters in strings, strict number grammar,
 * nesting at most JSON_SCAN_MAX_DEPTH deep) and never reads outside [data, data + len). On the
 * first error it records a static message and the byte offset, and every later call fails.
 * Escape sequences are validated when a string is unescaped (json_scan_unescape), so a string
 * the caller only skips is checked for structure, not for the meaning of its escapes.
 */
#ifndef WALCAST_JSON_SCAN_H
#define WALCAST_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_SCAN_MAX_DEPTH 64

typedef enum json_scan_kind {
	JSON_SCAN_NONE = 0,
	JSON_SCAN_STRING,
	JSON_SCAN_NUMBER,
	JSON_SCAN_TRUE,
	JSON_SCAN_FALSE,
	JSON_SCAN_NULL,
	JSON_SCAN_OBJECT, /* only the opening brace was consumed */
	JSON_SCAN_ARRAY,  /* only the opening bracket was consumed */
} json_scan_kind;

typedef struct json_scan_token {
	json_scan_kind type;
	const char *p; /* string: the bytes between the quotes, still escaped; number: its text */
	size_t len;
	bool escaped;  /* string: contains at least one backslash */
} json_scan_token;

/* Embedded by the caller; fields are read-only outside json_scan.c except through the API. */
typedef struct json_scan {
	const char *start;
	const char *p;
	const char *end;
	const char *err; /* static message after the first error, else NULL */
	size_t err_off;  /* byte offset of the error */
} json_scan;

/* Starts scanning data[0..len). Allocates nothing. */
void json_scan_init(json_scan *s, const char *data, size_t len);

/* Reads the next value into *t: a scalar whole, an object or array up to and including its
 * opening bracket (walk it with the _next functions or skip it with json_scan_skip).
 * Returns 0 or -1 (s->err says why). */
__attribute__((warn_unused_result)) int json_scan_value(json_scan *s, json_scan_token *t);

/* Walks the members of an object whose '{' was consumed. *first must be true before the first
 * call. Returns 1 with the key in *key (a JSON_SCAN_STRING token) and the scanner positioned at
 * the member's value, 0 after consuming the closing '}', or -1 on error. */
__attribute__((warn_unused_result)) int json_scan_object_next(json_scan *s, bool *first,
                                                              json_scan_token *key);

/* Walks the elements of an array whose '[' was consumed. *first must be true before the first
 * call. Returns 1 when an element follows (read it with json_scan_value), 0 after consuming the
 * closing ']', or -1 on error. */
__attribute__((warn_unused_result)) int json_scan_array_next(json_scan *s, bool *first);

/* Skips the rest of the value whose first token t was just read: a no-op for scalars, the whole
 * nested content for objects and arrays (depth-limited). Returns 0 or -1. */
__attribute__((warn_unused_result)) int json_scan_skip(json_scan *s, const json_scan_token *t);

/* Reads and discards one whole value. Returns 0 or -1. */
__attribute__((warn_unused_result)) int json_scan_skip_value(json_scan *s);

/* Checks that only whitespace remains. Returns 0 or -1. */
__attribute__((warn_unused_result)) int json_scan_finish(json_scan *s);

/* Records an error found by the caller (e.g. an unexpected type) at the current position, unless
 * one is already recorded; msg must be static. Returns -1 for convenience. */
int json_scan_fail(json_scan *s, const char *msg);

/* The same at position at (inside the scanned data), e.g. the start of a bad string. */
int json_scan_fail_at(json_scan *s, const char *at, const char *msg);

/* Decodes the escaped string body p[0..len) (a JSON_SCAN_STRING token's span) into out, which must
 * have room for len bytes (the decoded form is never longer). \uXXXX escapes, surrogate pairs
 * included, become UTF-8. Rejects invalid escapes, lone surrogates and \u0000 (PostgreSQL text
 * cannot contain NUL). Returns the decoded length, or -1 with *err set to a static message. Does
 * not write a terminating NUL. */
__attribute__((warn_unused_result)) long json_scan_unescape(const char *p, size_t len, char *out,
                                                              const char **err);

/* Parses a JSON_SCAN_NUMBER token as an unsigned 32-bit integer (no sign, fraction or exponent).
 * Returns 0 or -1. */
__attribute__((warn_unused_result)) int json_scan_u32(const json_scan_token *t, uint32_t *out);

#endif
