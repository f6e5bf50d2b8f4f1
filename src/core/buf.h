/*
 * buf — a growable byte buffer for building output (JSON lines, protocol messages).
 * The struct is public so callers can embed it; its fields are read-only outside buf.c.
 */
#ifndef WALCAST_BUF_H
#define WALCAST_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct buf {
	char *data;  /* always NUL-terminated when cap > 0 */
	size_t len;
	size_t cap;
} buf;

/* Initializes an empty buffer; allocates nothing. */
void buf_init(buf *b);

/* Frees the storage and leaves an empty buffer. Safe to call twice. */
void buf_fini(buf *b);

/* Makes the buffer empty, keeping its storage. */
static inline void buf_clear(buf *b) { b->len = 0; if (b->cap) b->data[0] = '\0'; }

/* Ensures room for extra more bytes; 0 or -ENOMEM (the buffer is unchanged then). */
__attribute__((warn_unused_result)) int buf_reserve(buf *b, size_t extra);

/* Appends bytes; 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_append(buf *b, const void *p, size_t n);
__attribute__((warn_unused_result)) int buf_puts(buf *b, const char *s);

/* Appends v in decimal; 0 or -ENOMEM. A tenth of buf_printf's cost (vsnprintf), for numbers
 * written per column or per entry. */
__attribute__((warn_unused_result)) int buf_put_u64(buf *b, uint64_t v);

/* Appends one byte; 0 or -ENOMEM. Inline: serializers call it for every quote, comma and
 * colon (profiled: the out-of-line call was ~6 % of `walcast run`'s CPU). */
__attribute__((warn_unused_result)) static inline int buf_putc(buf *b, char c)
{
	if (b->cap - b->len <= 1) {
		int rc = buf_reserve(b, 1);
		if (rc < 0)
			return rc;
	}
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
	return 0;
}

__attribute__((warn_unused_result, format(printf, 2, 3))) int buf_printf(buf *b, const char *fmt, ...);

/* Appends s as a JSON string literal, quotes included, escaping what JSON requires; invalid
 * UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_json_string(buf *b, const char *s, size_t n);

#endif
