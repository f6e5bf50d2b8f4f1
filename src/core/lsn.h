/*
 * lsn — PostgreSQL log sequence numbers: the textual "X/Y" form used by SQL, the replication
 * protocol and walcast's own output.
 */
#ifndef WALCAST_LSN_H
#define WALCAST_LSN_H

#include <stddef.h>
#include <stdint.h>

#define LSN_INVALID ((uint64_t)0)
#define LSN_TEXT_MAX 20 /* "FFFFFFFF/FFFFFFFF" plus NUL, rounded */

/* Parses "X/Y" (hex, each half at most 8 digits) from s[0..len); 0 or -EINVAL.
 * *out is written only on success. */
__attribute__((warn_unused_result)) int lsn_parse(const char *s, size_t len, uint64_t *out);

/* Writes "X/Y" into out (LSN_TEXT_MAX bytes) and returns out. */
char *lsn_format(uint64_t lsn, char out[LSN_TEXT_MAX]);

#endif
