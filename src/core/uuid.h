/*
 * uuid — one parser and one formatter for uuids: the 36-character text PostgreSQL writes (and
 * the WAL carries), the looser text its uuid input accepts, and the 16 bytes in between.
 */
#ifndef WALCAST_UUID_H
#define WALCAST_UUID_H

#include <stddef.h>
#include <stdint.h>

#define UUID_BYTES 16
#define UUID_TEXT_LEN 36 /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
#define UUID_TEXT (UUID_TEXT_LEN + 1) /* with its NUL */

/* Parses the canonical text form (36 characters, hyphens at 8, 13, 18 and 23, hex digits of
 * either case) from s[0..len) into its 16 bytes at out (in text order), as PostgreSQL writes a uuid (the form the WAL carries).
 * 0, or -EINVAL for anything else, s == NULL included; out is written only on success. Fast
 * (eight digits per step where the machine allows): it runs once per policy-table row and per
 * audience decision. */
__attribute__((warn_unused_result)) int uuid_parse(const char *s, size_t len,
                                                   uint8_t out[UUID_BYTES]);

/* Parses anything PostgreSQL's uuid input accepts (string_to_uuid(): 32 hex digits of either
 * case, optionally in braces, a hyphen allowed after any group of four digits but the last).
 * 0, or -EINVAL; out is written only on success. */
__attribute__((warn_unused_result)) int uuid_parse_pg(const char *s, size_t len,
                                                      uint8_t out[UUID_BYTES]);

/* Writes the canonical text (lower case, hyphenated) of the 16 bytes at b and a NUL to out. */
void uuid_format(const uint8_t b[UUID_BYTES], char out[UUID_TEXT]);

#endif
