/*
 * keyring — the keys for field-level encryption and the AES-256-GCM codec for stored values
 * (events.body). A stored value is
 *
 *     0x01 | key id (uint16, big-endian) | nonce (12 random bytes) | ciphertext | tag (16)
 *
 * authenticated with AAD = the three header bytes followed by an optional caller context
 * (for example the row's primary key), so a changed header, a value moved to another row, a
 * flipped bit or a cut value all fail to decrypt. docs/encryption.md is the operator's view.
 *
 * A keyring is immutable once loaded (rotation = load a new one and swap), but it keeps one
 * reusable OpenSSL cipher context per key and direction so that a decrypt allocates nothing:
 * the functions taking a `keyring *` are NOT thread-safe; a keyring belongs to the loop thread
 * (or to one thread at a time). Key bytes are never logged or put in an error message; the
 * key id is what identifies a key.
 */
#ifndef WALCAST_KEYRING_H
#define WALCAST_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct keyring keyring;

#define KEYRING_ERROR_MAX 256
#define KEYRING_KEY_BYTES 32
#define KEYRING_VERSION 0x01
#define KEYRING_HEADER_BYTES 3   /* version + key id */
#define KEYRING_NONCE_BYTES 12
#define KEYRING_TAG_BYTES 16
/* Bytes a stored value adds to its plaintext: 3 + 12 + 16 = 31. */
#define KEYRING_OVERHEAD (KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES + KEYRING_TAG_BYTES)

/* ---- loading -------------------------------------------------------------------------- */

/* Loads a key file: one key per line, `ID HEX` with ID in 1..65535 and HEX 64 hex digits (32
 * bytes), optionally followed by the word `primary`; `#` starts a comment; blank lines are
 * ignored. The primary key (the one keyring_encrypt uses by default) is the line marked
 * `primary`, or the only key of a one-key file; several keys without exactly one mark are an
 * error. The file must be a regular file not accessible by group or others (mode 0600 or
 * stricter; 0640 is accepted when it is owned by root, as libpq does for its key files).
 * Returns 0 and stores a new keyring the caller owns (keyring_destroy) in *out, or -EINVAL
 * (bad content or unsafe permissions: err says "path:line: why", never key material), -errno
 * when the file cannot be read, -ENOMEM, -EIO (OpenSSL refused a context). Reads the file; does
 * not otherwise block. */
__attribute__((warn_unused_result)) int keyring_load_file(const char *path, keyring **out,
                                                          char err[KEYRING_ERROR_MAX]);

/* Loads keys from the environment variable var (e.g. "WALCAST_KEYS"): entries `ID:HEX` or
 * `ID:HEX:primary`, separated by commas or whitespace, with the same rules as the file.
 * Returns 0 and a new keyring in *out, -ENOENT when var is unset or empty, -EINVAL (err names
 * the variable and the entry number, never key material), -ENOMEM, -EIO. Does not block.
 * Once read (valid or not), var's value is overwritten in place and var is removed from the
 * environment, so the keys do not linger there (nor in /proc/PID/environ). */
__attribute__((warn_unused_result)) int keyring_load_env(const char *var, keyring **out,
                                                         char err[KEYRING_ERROR_MAX]);

/* Wipes every key (OPENSSL_cleanse) and frees the keyring. Safe on NULL. */
void keyring_destroy(keyring *k);

/* The primary key's id (1..65535). */
uint16_t keyring_primary(const keyring *k);

/* Number of keys. */
size_t keyring_size(const keyring *k);

/* 1 when the keyring holds key id, else 0. */
int keyring_has(const keyring *k, uint16_t id);

/* ---- encrypting (the demo's traffic generator and the tests) ----------------------------- */

/* Encrypts plain[0..len) with key key_id (0 = the primary key) and a fresh random nonce, bound
 * to the context ctx[0..ctx_len) (NULL/0 for none; the decrypt must pass the same bytes), and
 * appends the stored value (len + KEYRING_OVERHEAD bytes) to out. plain and ctx must not point
 * into out. Returns 0, -ENOKEY (no such key), -ENOMEM, -EIO (OpenSSL or the random generator
 * failed); on error out is unchanged. Uses the keyring's context for key_id: not thread-safe.
 * Does not block (OpenSSL's generator is seeded at first use, from getrandom). */
__attribute__((warn_unused_result)) int keyring_encrypt(keyring *k, uint16_t key_id, const void *plain,
                                                        size_t len, const void *ctx, size_t ctx_len,
                                                        buf *out);

/* As keyring_encrypt, but appends PostgreSQL's bytea text form: "\x" and lowercase hex
 * (2 + 2 * (len + KEYRING_OVERHEAD) characters), ready for a '\x...'::bytea literal. */
__attribute__((warn_unused_result)) int keyring_encrypt_hex(keyring *k, uint16_t key_id, const void *plain,
                                                            size_t len, const void *ctx, size_t ctx_len,
                                                            buf *out);

/* ---- decrypting (the policy stage, per change and audience) ------------------------------ */

/* Decrypts the stored value data[0..len) bound to ctx[0..ctx_len) and appends the plaintext
 * (len - KEYRING_OVERHEAD bytes; out stays NUL-terminated) to out. Returns 0, -ENOKEY (the
 * value names a key this keyring lacks), -EBADMSG (unknown version, too short, or the tag does
 * not verify: tampered, truncated, wrong key or wrong context), -ENOMEM, -EIO. On error out
 * holds exactly what it held before: no unverified byte is ever left visible. data and ctx
 * must not point into out. Allocates only by growing out. Not thread-safe; does not block. */
__attribute__((warn_unused_result)) int keyring_decrypt(keyring *k, const void *data, size_t len,
                                                        const void *ctx, size_t ctx_len, buf *out);

/* As keyring_decrypt, from the bytea text form as the decoders deliver it: text[0..len) must
 * be "\x" followed by an even number of hex digits (either case). Anything else (escape
 * format, odd length, a non-hex character) is -EBADMSG. Decodes straight into out: no
 * allocation beyond growing out. */
__attribute__((warn_unused_result)) int keyring_decrypt_hex(keyring *k, const char *text, size_t len,
                                                            const void *ctx, size_t ctx_len, buf *out);

/* As keyring_decrypt_hex, into the caller's memory out[0..cap): cap >= len / 2 always suffices
 * (the plaintext is shorter than the value). 0 and *out_len, or the errors of
 * keyring_decrypt_hex (-ENOMEM when cap is too small). On error out[0..*out_len would have been)
 * is wiped. Saves the copy out of a buf when the caller has its own memory (an arena). Not
 * thread-safe; does not block. */
__attribute__((warn_unused_result)) int keyring_decrypt_hex_into(keyring *k, const char *text, size_t len,
                                                                 const void *ctx, size_t ctx_len,
                                                                 void *out, size_t cap, size_t *out_len);

/* Reads the key id from a stored value without decrypting it (for log lines about a value
 * that failed). 0 and *id, or -EBADMSG when the value is too short or of another version. */
__attribute__((warn_unused_result)) int keyring_value_key_id(const void *data, size_t len, uint16_t *id);

/* The same from the bytea text form. 0 and *id, or -EBADMSG. */
__attribute__((warn_unused_result)) int keyring_value_key_id_hex(const char *text, size_t len, uint16_t *id);

/* A stable, short marker naming why a value could not be decrypted, for the error field that
 * subscribers receive beside the null value: "unknown_key" (-ENOKEY), "invalid_ciphertext"
 * (-EBADMSG), "out_of_memory" (-ENOMEM), "decrypt_failed" (anything else). Never NULL. */
const char *keyring_error_marker(int rc);

#endif
