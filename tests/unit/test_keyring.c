/*
 * test_keyring — unit tests for field encryption (src/policy/keyring.h): known-answer vectors made
 * with an independent AES-GCM implementation (Python's `cryptography`), round trips, every
 * single-bit flip and every truncation of a stored value, malformed hex, key rotation, the key
 * file and environment loaders with their error messages (which must name the line and never
 * hold key material), and file permission checks. Every failed decrypt must leave the output
 * buffer exactly as it was.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "keyring.h"

/* Impossible sizes are tested; let the sanitizer's allocator answer NULL as glibc does. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

/* The fixture's keys (tests/fixtures/keys/test.keys): key n is sha256("walcast test key n"). */
#define KEY1 "12ab1fdee799813e80df724c1e5859fd8d2b33a8accdbdea5ccfbde58f73eb41"
#define KEY2 "0408eb50986a3c8a311470cd2ceb2ce2f3d73c45e1953b0cc07a951b33491e19"
#define KEY3 "5d7ddcd353ef0269000260796c4548852d5312269ea1ddc3d21c83e45a15cecb"

/* ---- helpers ------------------------------------------------------------------------- */

/* Writes content to a fresh temporary file with the given mode; path receives its name. */
static void write_temp(const char *content, mode_t mode, char path[64])
{
	snprintf(path, 64, "/tmp/test_keyring.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t n = strlen(content);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

/* Loads a keyring from key file text (mode 0600). */
static keyring *ring_from_text(const char *content)
{
	char path[64], err[KEYRING_ERROR_MAX] = "";
	keyring *k = NULL;
	write_temp(content, 0600, path);
	int rc = keyring_load_file(path, &k, err);
	unlink(path);
	if (rc != 0)
		fail_msg("keyring_load_file: %d: %s", rc, err);
	assert_non_null(k);
	return k;
}

static char *read_fixture(void)
{
	const char *dir = getenv("WALCAST_SOURCE_DIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/tests/fixtures/keys/test.keys", dir ? dir : ".");
	FILE *f = fopen(path, "r");
	if (f == NULL)
		fail_msg("cannot open %s (run from the source tree or set WALCAST_SOURCE_DIR)", path);
	static char text[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	return text;
}

static void hex_of(const uint8_t *p, size_t n, char *o)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		o[2 * i] = d[p[i] >> 4];
		o[2 * i + 1] = d[p[i] & 15];
	}
	o[2 * n] = '\0';
}

/* Returns a malloc'd copy of exactly n bytes (so ASan sees any read past n). */
static void *exact_copy(const void *p, size_t n)
{
	void *c = malloc(n ? n : 1);
	assert_non_null(c);
	if (n)
		memcpy(c, p, n);
	return c;
}

#define SENTINEL "previous contents"

/* A buffer holding SENTINEL, to check that failed decrypts leave it alone. */
static void sentinel_init(buf *b)
{
	buf_init(b);
	assert_int_equal(buf_puts(b, SENTINEL), 0);
}

static void sentinel_check(const buf *b)
{
	assert_int_equal(b->len, strlen(SENTINEL));
	assert_string_equal(b->data, SENTINEL);
}

/* ---- known answers ------------------------------------------------------------------- */

/* Made with Python: AESGCM(key).encrypt(nonce=00..0b, plaintext, aad=header || context). */
#define KAT1 "\\x010001000102030405060708090a0bcf48396b3876bfa18d5807be4643b201b83b49ed0ac3e72f690b13096ccc"
#define KAT1_PLAIN "hello, walcast"
#define KAT2 "\\x010002000102030405060708090a0b6453aeaead61224f7aa71664606eea32672" \
             "87ed31eedf719402902086103405fa2e3dde7ae61"
#define KAT2_PLAIN "caf\xc3\xa9 \xe2\x80\x94 call me back"
#define KAT2_CTX "6f1c0a52-3b7e-4c1d-9a0e-2f5b8c7d9e01"
#define KAT3 "\\x010001000102030405060708090a0b0dce977e2625185c45879ae653a2bf21"

static void test_known_answers(void **state)
{
	keyring *k = ring_from_text(read_fixture());
	assert_int_equal(keyring_size(k), 2);
	assert_int_equal(keyring_primary(k), 2);
	buf b;
	buf_init(&b);

	assert_int_equal(keyring_decrypt_hex(k, KAT1, strlen(KAT1), NULL, 0, &b), 0);
	assert_int_equal(b.len, strlen(KAT1_PLAIN));
	assert_string_equal(b.data, KAT1_PLAIN);

	buf_clear(&b);
	assert_int_equal(keyring_decrypt_hex(k, KAT2, strlen(KAT2), KAT2_CTX, strlen(KAT2_CTX), &b), 0);
	assert_string_equal(b.data, KAT2_PLAIN);
	/* The context is authenticated: none, another row's, or one byte less all fail. */
	buf_clear(&b);
	assert_int_equal(keyring_decrypt_hex(k, KAT2, strlen(KAT2), NULL, 0, &b), -EBADMSG);
	assert_int_equal(keyring_decrypt_hex(k, KAT2, strlen(KAT2), "6f1c0a52-3b7e-4c1d-9a0e-2f5b8c7d9e02",
	                                     strlen(KAT2_CTX), &b), -EBADMSG);
	assert_int_equal(keyring_decrypt_hex(k, KAT2, strlen(KAT2), KAT2_CTX, strlen(KAT2_CTX) - 1, &b),
	                 -EBADMSG);
	assert_int_equal(b.len, 0);

	/* An empty plaintext is a 31-byte value. */
	assert_int_equal(keyring_decrypt_hex(k, KAT3, strlen(KAT3), NULL, 0, &b), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.data[0], '\0');

	/* The raw form of the same value. */
	uint8_t raw[256];
	const char *kat1 = KAT1;
	size_t rawn = (strlen(kat1) - 2) / 2;
	for (size_t i = 0; i < rawn; i++) {
		unsigned v;
		assert_int_equal(sscanf(kat1 + 2 + 2 * i, "%2x", &v), 1);
		raw[i] = (uint8_t)v;
	}
	buf_clear(&b);
	assert_int_equal(keyring_decrypt(k, raw, rawn, NULL, 0, &b), 0);
	assert_string_equal(b.data, KAT1_PLAIN);

	uint16_t id = 0;
	assert_int_equal(keyring_value_key_id(raw, rawn, &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(keyring_value_key_id_hex(KAT2, strlen(KAT2), &id), 0);
	assert_int_equal(id, 2);

	buf_fini(&b);
	keyring_destroy(k);
}

/* ---- round trips --------------------------------------------------------------------- */

static void round_trip(keyring *k, const uint8_t *plain, size_t len, const char *ctx)
{
	size_t ctxn = ctx ? strlen(ctx) : 0;
	buf v, t, p;
	buf_init(&v);
	buf_init(&t);
	sentinel_init(&p);

	/* Raw. */
	assert_int_equal(keyring_encrypt(k, 0, plain, len, ctx, ctxn, &v), 0);
	assert_int_equal(v.len, len + KEYRING_OVERHEAD);
	assert_int_equal((uint8_t)v.data[0], KEYRING_VERSION);
	assert_int_equal(keyring_decrypt(k, v.data, v.len, ctx, ctxn, &p), 0);
	assert_int_equal(p.len, strlen(SENTINEL) + len);
	assert_memory_equal(p.data, SENTINEL, strlen(SENTINEL));
	if (len)
		assert_memory_equal(p.data + strlen(SENTINEL), plain, len);
	assert_int_equal(p.data[p.len], '\0');

	/* Hex: "\x" and lowercase hex of the stored value. */
	assert_int_equal(buf_puts(&t, "x="), 0);
	assert_int_equal(keyring_encrypt_hex(k, 0, plain, len, ctx, ctxn, &t), 0);
	const char *h = t.data + 2;
	size_t hn = t.len - 2;
	assert_int_equal(hn, 2 + 2 * (len + KEYRING_OVERHEAD));
	assert_int_equal(strlen(t.data), t.len);
	assert_memory_equal(h, "\\x", 2);
	for (size_t i = 2; i < hn; i++)
		assert_true((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'));
	buf_clear(&p);
	assert_int_equal(keyring_decrypt_hex(k, h, hn, ctx, ctxn, &p), 0);
	assert_int_equal(p.len, len);
	if (len)
		assert_memory_equal(p.data, plain, len);
	assert_int_equal(p.data[p.len], '\0');

	buf_fini(&v);
	buf_fini(&t);
	buf_fini(&p);
}

static void test_round_trip(void **state)
{
	keyring *k = ring_from_text("1 " KEY1 "\n2 " KEY2 " primary\n");
	static const char *ctxs[] = {NULL, "", "public.events.body", KAT2_CTX};
	size_t big = 1u << 20;
	uint8_t *mb = malloc(big);
	assert_non_null(mb);
	for (size_t i = 0; i < big; i++)
		mb[i] = (uint8_t)(i * 2654435761u >> 13);
	for (size_t c = 0; c < sizeof(ctxs) / sizeof(ctxs[0]); c++) {
		round_trip(k, (const uint8_t *)"", 0, ctxs[c]);
		round_trip(k, (const uint8_t *)"x", 1, ctxs[c]);
		round_trip(k, (const uint8_t *)KAT2_PLAIN, strlen(KAT2_PLAIN), ctxs[c]);
		round_trip(k, mb, 200, ctxs[c]);
	}
	round_trip(k, mb, big, NULL);
	round_trip(k, mb, big, KAT2_CTX);
	free(mb);
	keyring_destroy(k);
}

static void test_nonces_differ(void **state)
{
	keyring *k = ring_from_text("7 " KEY3 "\n");
	buf a, b, p;
	buf_init(&a);
	buf_init(&b);
	buf_init(&p);
	assert_int_equal(keyring_encrypt(k, 0, "same", 4, NULL, 0, &a), 0);
	assert_int_equal(keyring_encrypt(k, 7, "same", 4, NULL, 0, &b), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, KEYRING_HEADER_BYTES);
	assert_memory_not_equal(a.data + KEYRING_HEADER_BYTES, b.data + KEYRING_HEADER_BYTES,
	                        KEYRING_NONCE_BYTES);
	assert_memory_not_equal(a.data, b.data, a.len);
	assert_int_equal(keyring_decrypt(k, a.data, a.len, NULL, 0, &p), 0);
	assert_int_equal(keyring_decrypt(k, b.data, b.len, NULL, 0, &p), 0);
	assert_string_equal(p.data, "samesame");
	buf_fini(&a);
	buf_fini(&b);
	buf_fini(&p);
	keyring_destroy(k);
}

/* ---- failures ------------------------------------------------------------------------ */

static void test_unknown_key(void **state)
{
	keyring *all = ring_from_text("1 " KEY1 "\n2 " KEY2 "\n3 " KEY3 " primary\n");
	keyring *some = ring_from_text("1 " KEY1 "\n2 " KEY2 " primary\n");
	buf v, t, p;
	buf_init(&v);
	buf_init(&t);
	sentinel_init(&p);
	assert_int_equal(keyring_encrypt(all, 0, "secret", 6, NULL, 0, &v), 0);
	assert_int_equal(keyring_encrypt_hex(all, 3, "secret", 6, NULL, 0, &t), 0);
	assert_int_equal(keyring_decrypt(some, v.data, v.len, NULL, 0, &p), -ENOKEY);
	sentinel_check(&p);
	assert_int_equal(keyring_decrypt_hex(some, t.data, t.len, NULL, 0, &p), -ENOKEY);
	sentinel_check(&p);
	uint16_t id = 0;
	assert_int_equal(keyring_value_key_id_hex(t.data, t.len, &id), 0);
	assert_int_equal(id, 3);
	/* Encrypting with a key the ring lacks. */
	buf_clear(&v);
	assert_int_equal(keyring_encrypt(some, 3, "secret", 6, NULL, 0, &v), -ENOKEY);
	assert_int_equal(keyring_encrypt_hex(some, 65535, "secret", 6, NULL, 0, &v), -ENOKEY);
	assert_int_equal(v.len, 0);
	assert_int_equal(keyring_has(some, 2), 1);
	assert_int_equal(keyring_has(some, 3), 0);
	assert_int_equal(keyring_has(some, 0), 0);
	buf_fini(&v);
	buf_fini(&t);
	buf_fini(&p);
	keyring_destroy(all);
	keyring_destroy(some);
}

/* What a value with byte i's bit flipped must decrypt to under a ring holding keys 1 and 3. */
static int flip_expect(const keyring *k, const uint8_t *v, size_t i)
{
	if (i == 0)
		return -EBADMSG; /* version */
	if (i == 1 || i == 2) {
		uint16_t id = (uint16_t)(v[1] << 8 | v[2]);
		return keyring_has(k, id) ? -EBADMSG : -ENOKEY;
	}
	return -EBADMSG;
}

static void test_bit_flips(void **state)
{
	keyring *k = ring_from_text("1 " KEY1 " primary\n3 " KEY3 "\n");
	const char *ctx = "row-42";
	const char *plain = "call me back about the quarterly numbers!"; /* 41 bytes */
	buf v, p;
	buf_init(&v);
	sentinel_init(&p);
	assert_int_equal(keyring_encrypt(k, 1, plain, strlen(plain), ctx, strlen(ctx), &v), 0);
	size_t n = v.len;
	uint8_t *m = exact_copy(v.data, n);
	char *hex = malloc(2 + 2 * n + 1);
	assert_non_null(hex);
	int saw_swap = 0, saw_nokey = 0;
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			m[i] ^= (uint8_t)(1u << bit);
			int want = flip_expect(k, m, i);
			saw_swap += (i == 2 && want == -EBADMSG);
			saw_nokey += want == -ENOKEY;
			int rc = keyring_decrypt(k, m, n, ctx, strlen(ctx), &p);
			if (rc != want)
				fail_msg("raw: flip of byte %zu bit %d: got %d, want %d", i, bit, rc, want);
			sentinel_check(&p);
			/* A flipped tag bit leaves a correctly decrypted but unverified plaintext: it
			 * must not linger even past the buffer's length. */
			if (memmem(p.data, p.cap, "quarterly", 9) != NULL)
				fail_msg("raw: flip of byte %zu bit %d: plaintext left in the buffer", i, bit);
			hex[0] = '\\', hex[1] = 'x';
			hex_of(m, n, hex + 2);
			rc = keyring_decrypt_hex(k, hex, 2 + 2 * n, ctx, strlen(ctx), &p);
			if (rc != want)
				fail_msg("hex: flip of byte %zu bit %d: got %d, want %d", i, bit, rc, want);
			sentinel_check(&p);
			if (memmem(p.data, p.cap, "quarterly", 9) != NULL)
				fail_msg("hex: flip of byte %zu bit %d: plaintext left in the buffer", i, bit);
			m[i] ^= (uint8_t)(1u << bit);
		}
	}
	assert_true(saw_swap == 1); /* key id 1 -> 3: a header swap to a held key is caught */
	assert_true(saw_nokey == 15);
	/* Every bit of the context, too. */
	char c2[16];
	for (size_t i = 0; i < strlen(ctx); i++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(c2, ctx, strlen(ctx));
			c2[i] ^= (char)(1u << bit);
			assert_int_equal(keyring_decrypt(k, m, n, c2, strlen(ctx), &p), -EBADMSG);
			sentinel_check(&p);
		}
	}
	/* After all those failures the contexts still work. */
	assert_int_equal(keyring_decrypt(k, m, n, ctx, strlen(ctx), &p), 0);
	assert_string_equal(p.data + strlen(SENTINEL), plain);
	free(hex);
	free(m);
	buf_fini(&v);
	buf_fini(&p);
	keyring_destroy(k);
}

static void test_truncation(void **state)
{
	keyring *k = ring_from_text("1 " KEY1 "\n");
	buf v, t, p;
	buf_init(&v);
	buf_init(&t);
	sentinel_init(&p);
	assert_int_equal(keyring_encrypt(k, 0, "a short message", 15, NULL, 0, &v), 0);
	assert_int_equal(keyring_encrypt_hex(k, 0, "a short message", 15, NULL, 0, &t), 0);
	for (size_t len = 0; len < v.len; len++) {
		void *c = exact_copy(v.data, len);
		int rc = keyring_decrypt(k, c, len, NULL, 0, &p);
		if (rc != -EBADMSG)
			fail_msg("raw truncated to %zu: got %d", len, rc);
		sentinel_check(&p);
		free(c);
		/* Cut from the front as well. */
		c = exact_copy(v.data + v.len - len, len);
		rc = keyring_decrypt(k, c, len, NULL, 0, &p);
		if (rc >= 0)
			fail_msg("raw cut at the front to %zu: got %d", len, rc);
		sentinel_check(&p);
		free(c);
	}
	for (size_t len = 0; len < t.len; len++) {
		char *c = exact_copy(t.data, len);
		int rc = keyring_decrypt_hex(k, c, len, NULL, 0, &p);
		if (rc != -EBADMSG)
			fail_msg("hex truncated to %zu: got %d", len, rc);
		sentinel_check(&p);
		free(c);
	}
	/* One byte too many is no better. */
	assert_int_equal(buf_putc(&v, 0), 0);
	assert_int_equal(keyring_decrypt(k, v.data, v.len, NULL, 0, &p), -EBADMSG);
	assert_int_equal(buf_puts(&t, "00"), 0);
	assert_int_equal(keyring_decrypt_hex(k, t.data, t.len, NULL, 0, &p), -EBADMSG);
	sentinel_check(&p);
	buf_fini(&v);
	buf_fini(&t);
	buf_fini(&p);
	keyring_destroy(k);
}

static void test_bad_hex(void **state)
{
	keyring *k = ring_from_text("1 " KEY1 "\n");
	buf p;
	sentinel_init(&p);
	static const char *bad[] = {
		"", "\\", "\\x", "x0100", "\\X010001", "010001000102030405060708090a0bcf48396b3876bfa18d5807be4643b201b8",
		"\\\\x01", "\\x0", "\\x 01", "\\001\\000\\001", /* escape format */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = keyring_decrypt_hex(k, bad[i], strlen(bad[i]), NULL, 0, &p);
		if (rc != -EBADMSG)
			fail_msg("bad[%zu]: got %d", i, rc);
		sentinel_check(&p);
	}
	/* The known-answer value with one character replaced by a non-hex one, at every
	 * position; with "\X" instead of "\x"; uppercase hex is accepted; an odd length is not. */
	char *m = exact_copy(KAT1, strlen(KAT1));
	size_t n = strlen(KAT1);
	static const char junk[] = {'g', 'G', ' ', '\0', '\n', 'x', ':', '/', '@', '`', (char)0xc3};
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < sizeof(junk); j++) {
			char saved = m[i];
			if (i == 1 && junk[j] == 'x')
				continue;
			m[i] = junk[j];
			int rc = keyring_decrypt_hex(k, m, n, NULL, 0, &p);
			if (rc != -EBADMSG)
				fail_msg("char %zu replaced by 0x%02x: got %d", i, (unsigned char)junk[j], rc);
			sentinel_check(&p);
			m[i] = saved;
		}
	}
	for (size_t i = 2; i < n; i++)
		if (m[i] >= 'a' && m[i] <= 'f')
			m[i] = (char)(m[i] - 'a' + 'A');
	buf_clear(&p);
	assert_int_equal(keyring_decrypt_hex(k, m, n, NULL, 0, &p), 0);
	assert_string_equal(p.data, KAT1_PLAIN);
	m[1] = 'X';
	assert_int_equal(keyring_decrypt_hex(k, m, n, NULL, 0, &p), -EBADMSG);
	free(m);
	/* Odd length at the end of an otherwise valid value (the extra digit is valid hex). */
	char odd[sizeof(KAT1) + 1];
	snprintf(odd, sizeof(odd), "%s0", KAT1);
	assert_int_equal(keyring_decrypt_hex(k, odd, strlen(odd), NULL, 0, &p), -EBADMSG);
	uint16_t id = 0;
	assert_int_equal(keyring_value_key_id_hex(odd, strlen(odd), &id), -EBADMSG);
	assert_int_equal(keyring_value_key_id_hex("\\x020001", 8, &id), -EBADMSG);
	assert_int_equal(keyring_value_key_id("\x01\x00", 2, &id), -EBADMSG);
	assert_int_equal(id, 0);
	buf_fini(&p);
	keyring_destroy(k);
}

static void test_huge_sizes(void **state)
{
	keyring *k = ring_from_text("1 " KEY1 "\n");
	buf b;
	buf_init(&b);
	/* Sizes whose arithmetic would overflow are refused before anything is read. */
	assert_int_equal(keyring_encrypt(k, 0, "", SIZE_MAX - 3, NULL, 0, &b), -ENOMEM);
	assert_int_equal(keyring_encrypt_hex(k, 0, "", SIZE_MAX / 4, NULL, 0, &b), -ENOMEM);
	assert_int_equal(b.len, 0);
	buf_fini(&b);
	keyring_destroy(k);
}

/* ---- rotation ------------------------------------------------------------------------ */

static void test_rotation(void **state)
{
	keyring *before = ring_from_text("1 " KEY1 "\n");
	keyring *after = ring_from_text("1 " KEY1 "\n2 " KEY2 " primary\n");
	assert_int_equal(keyring_primary(before), 1);
	assert_int_equal(keyring_primary(after), 2);
	buf old, fresh, p;
	buf_init(&old);
	buf_init(&fresh);
	buf_init(&p);
	uint16_t id = 0;

	assert_int_equal(keyring_encrypt_hex(before, 0, "old body", 8, "r1", 2, &old), 0);
	assert_int_equal(keyring_value_key_id_hex(old.data, old.len, &id), 0);
	assert_int_equal(id, 1);
	/* After rotation: old values still decrypt, new ones use key 2. */
	assert_int_equal(keyring_decrypt_hex(after, old.data, old.len, "r1", 2, &p), 0);
	assert_string_equal(p.data, "old body");
	assert_int_equal(keyring_encrypt_hex(after, 0, "new body", 8, "r2", 2, &fresh), 0);
	assert_int_equal(keyring_value_key_id_hex(fresh.data, fresh.len, &id), 0);
	assert_int_equal(id, 2);
	buf_clear(&p);
	assert_int_equal(keyring_decrypt_hex(after, fresh.data, fresh.len, "r2", 2, &p), 0);
	assert_string_equal(p.data, "new body");
	/* A reader still on the old keyring reports the new key as unknown, not garbage. */
	assert_int_equal(keyring_decrypt_hex(before, fresh.data, fresh.len, "r2", 2, &p), -ENOKEY);
	/* Re-encrypting an old value under the new key (the last step of a rotation). */
	buf_clear(&fresh);
	assert_int_equal(keyring_encrypt_hex(after, 0, p.data, p.len, "r1", 2, &fresh), 0);
	keyring *only2 = ring_from_text("2 " KEY2 "\n");
	buf_clear(&p);
	assert_int_equal(keyring_decrypt_hex(only2, fresh.data, fresh.len, "r1", 2, &p), 0);
	assert_string_equal(p.data, "new body");
	assert_int_equal(keyring_decrypt_hex(only2, old.data, old.len, "r1", 2, &p), -ENOKEY);

	keyring_destroy(only2);
	buf_fini(&old);
	buf_fini(&fresh);
	buf_fini(&p);
	keyring_destroy(before);
	keyring_destroy(after);
}

/* ---- loading ------------------------------------------------------------------------- */

/* Fails when any 8-character window of a test key's hex appears in s. */
static void assert_no_key_material(const char *s)
{
	static const char *keys[] = {KEY1, KEY2, KEY3};
	for (size_t k = 0; k < 3; k++) {
		for (size_t i = 0; i + 8 <= 64; i++) {
			char w[9];
			memcpy(w, keys[k] + i, 8);
			w[8] = '\0';
			for (size_t j = 0; w[j]; j++) /* case-insensitively */
				if (w[j] >= 'a' && w[j] <= 'f')
					w[j] = (char)(w[j] - 'a' + 'A');
			if (strcasestr(s, w) != NULL)
				fail_msg("key material in message: %s", s);
		}
	}
}

static void test_file_accepts(void **state)
{
	/* Comments, blank lines, tabs, CRLF, a trailing comment, ids out of order, leading zeros. */
	keyring *k = ring_from_text("# keys\n\n  \t\r\n"
	                            "  00003\t" KEY3 "   # the old one\r\n"
	                            "1 " KEY1 " primary # current\n"
	                            "65535 " KEY2);
	assert_int_equal(keyring_size(k), 3);
	assert_int_equal(keyring_primary(k), 1);
	assert_int_equal(keyring_has(k, 3), 1);
	assert_int_equal(keyring_has(k, 65535), 1);
	/* Uppercase key hex is the same key. */
	keyring *upper = ring_from_text("1 12AB1FDEE799813E80DF724C1E5859FD8D2B33A8ACCDBDEA5CCFBDE58F73EB41\n");
	buf p;
	buf_init(&p);
	assert_int_equal(keyring_decrypt_hex(upper, KAT1, strlen(KAT1), NULL, 0, &p), 0);
	assert_string_equal(p.data, KAT1_PLAIN);
	buf_fini(&p);
	keyring_destroy(upper);
	keyring_destroy(k);
}

static void test_file_errors(void **state)
{
	static const struct {
		const char *text;
		int line;      /* 0: the message names the file only */
		const char *why;
	} cases[] = {
		{"# ok\n1 " KEY1 "\n2 " KEY2 "z\n", 3, "not 65 characters"},
		{"1 " KEY1 "\n2 12ab1fdee799813e80df724c1e5859fd8d2b33a8accdbdea5ccfbde58f73eb4g\n", 2,
		 "hex digits only"},
		{"1 12ab1fdee799813e80df724c1e5859fd8d2b33a8accdbdea5ccfbde58f73eb4\n", 1, "64 hex digits"},
		{"0 " KEY1 "\n", 1, "from 1 to 65535"},
		{"65536 " KEY1 "\n", 1, "from 1 to 65535"},
		{"-1 " KEY1 "\n", 1, "from 1 to 65535"},
		{"one " KEY1 "\n", 1, "from 1 to 65535"},
		{KEY1 " 1\n", 1, "from 1 to 65535"},          /* swapped: the key is not echoed */
		{"\n\n" KEY1 "\n", 3, "expected 'ID HEX'"},     /* id missing */
		{"1 " KEY1 "\n1 " KEY2 " primary\n", 2, "key 1 is defined twice (first on line 1)"},
		{"1 " KEY1 " primary\n2 " KEY2 " primary\n", 2, "two keys are marked primary (key 1 on line 1)"},
		{"1 " KEY1 " primry\n", 1, "only the word 'primary'"},
		{"1 " KEY1 " " KEY2 "\n", 1, "only the word 'primary'"},
		{"1 " KEY1 " primary extra\n", 1, "expected 'ID HEX'"},
		{"1 " KEY1 "\n2 " KEY2 "\n", 0, "2 keys and none is marked primary"},
		{"# nothing here\n\n", 0, "no keys"},
		{"", 0, "no keys"},
		{"1 " KEY1 "\n2 " KEY2 " primary\n3 ab" KEY3 "\n", 3, "key 3: the key must be 64 hex digits"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[64], err[KEYRING_ERROR_MAX] = "", want[128];
		keyring *k = (keyring *)&cases; /* must not be written on failure */
		write_temp(cases[i].text, 0600, path);
		int rc = keyring_load_file(path, &k, err);
		unlink(path);
		if (rc != -EINVAL)
			fail_msg("case %zu: got %d (%s)", i, rc, err);
		assert_ptr_equal(k, (keyring *)&cases);
		if (cases[i].line)
			snprintf(want, sizeof(want), "%s:%d: ", path, cases[i].line);
		else
			snprintf(want, sizeof(want), "%s: ", path);
		if (strncmp(err, want, strlen(want)) != 0 || strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: message \"%s\", want \"%s...%s\"", i, err, want, cases[i].why);
		assert_no_key_material(err);
	}
}

static void test_file_permissions(void **state)
{
	char path[64], err[KEYRING_ERROR_MAX] = "";
	keyring *k = NULL;
	static const mode_t refused[] = {0644, 0604, 0660, 0606, 0620, 0602, 0610, 0601};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		write_temp("1 " KEY1 "\n", refused[i], path);
		int rc = keyring_load_file(path, &k, err);
		unlink(path);
		assert_int_equal(rc, -EINVAL);
		assert_null(k);
		assert_non_null(strstr(err, "chmod 600"));
		assert_no_key_material(err);
	}
	/* 0400 is fine; 0640 only when root owns the file (the test may run as either). */
	write_temp("1 " KEY1 "\n", 0400, path);
	int rc = keyring_load_file(path, &k, err);
	unlink(path);
	assert_int_equal(rc, 0);
	keyring_destroy(k);
	k = NULL;
	write_temp("1 " KEY1 "\n", 0640, path);
	rc = keyring_load_file(path, &k, err);
	unlink(path);
	assert_int_equal(rc, geteuid() == 0 ? 0 : -EINVAL);
	keyring_destroy(k);
	k = NULL;

	assert_int_equal(keyring_load_file("/nonexistent/walcast.keys", &k, err), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/walcast.keys: cannot open"));
	assert_int_equal(keyring_load_file("/tmp", &k, err), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	assert_null(k);
}

static void test_env(void **state)
{
	char err[KEYRING_ERROR_MAX] = "";
	keyring *k = NULL;
	unsetenv("WALCAST_TEST_KEYS");
	assert_int_equal(keyring_load_env("WALCAST_TEST_KEYS", &k, err), -ENOENT);
	setenv("WALCAST_TEST_KEYS", "", 1);
	assert_int_equal(keyring_load_env("WALCAST_TEST_KEYS", &k, err), -ENOENT);
	assert_null(k);

	setenv("WALCAST_TEST_KEYS", "1:" KEY1 ", 2:" KEY2 ":primary\n 3:" KEY3, 1);
	char *env = getenv("WALCAST_TEST_KEYS");
	size_t env_len = strlen(env);
	assert_int_equal(keyring_load_env("WALCAST_TEST_KEYS", &k, err), 0);
	/* Read once, then gone: removed from the environment and wiped where it was. */
	assert_null(getenv("WALCAST_TEST_KEYS"));
	for (size_t i = 0; i < env_len; i++)
		assert_int_equal(env[i], 0);
	assert_int_equal(keyring_size(k), 3);
	assert_int_equal(keyring_primary(k), 2);
	buf p;
	buf_init(&p);
	assert_int_equal(keyring_decrypt_hex(k, KAT2, strlen(KAT2), KAT2_CTX, strlen(KAT2_CTX), &p), 0);
	assert_string_equal(p.data, KAT2_PLAIN);
	buf_fini(&p);
	keyring_destroy(k);
	k = NULL;

	static const struct {
		const char *value;
		const char *want;
	} cases[] = {
		{"1:" KEY1 ",2:" KEY2 "x", "WALCAST_TEST_KEYS entry 2: key 2: the key must be 64"},
		{"1:" KEY1 ",," KEY2, "WALCAST_TEST_KEYS entry 2: expected ID:HEX"},
		{"1:" KEY1 ":primary:x", "WALCAST_TEST_KEYS entry 1: expected ID:HEX"},
		{"1:" KEY1 ":" KEY2, "WALCAST_TEST_KEYS entry 1: key 1: only the word 'primary'"},
		{"1:" KEY1 " 1:" KEY2, "WALCAST_TEST_KEYS entry 2: key 1 is defined twice (first on entry 1)"},
		{KEY1 ":1", "WALCAST_TEST_KEYS entry 1: the key id must be"},
		{"1:" KEY1 ",2:" KEY2, "WALCAST_TEST_KEYS: 2 keys and none is marked primary"},
		{" , ", "WALCAST_TEST_KEYS: no keys"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv("WALCAST_TEST_KEYS", cases[i].value, 1);
		int rc = keyring_load_env("WALCAST_TEST_KEYS", &k, err);
		if (rc != -EINVAL || strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("case %zu: got %d \"%s\", want \"%s\"", i, rc, err, cases[i].want);
		assert_null(k);
		assert_no_key_material(err);
	}
	unsetenv("WALCAST_TEST_KEYS");
}

static void test_error_marker(void **state)
{
	assert_string_equal(keyring_error_marker(-ENOKEY), "unknown_key");
	assert_string_equal(keyring_error_marker(-EBADMSG), "invalid_ciphertext");
	assert_string_equal(keyring_error_marker(-ENOMEM), "out_of_memory");
	assert_string_equal(keyring_error_marker(-EIO), "decrypt_failed");
	keyring_destroy(NULL);
}

/* keyring_decrypt_hex_into: the known answers into caller memory; a wrong context or too little
 * room fails, and a failed decryption leaves no byte of unverified plaintext behind. */
static void test_decrypt_hex_into(void **state)
{
	(void)state;
	keyring *k = ring_from_text(read_fixture());
	char out[128];
	size_t n = 999;
	assert_int_equal(keyring_decrypt_hex_into(k, KAT2, strlen(KAT2), KAT2_CTX, strlen(KAT2_CTX), out,
	                                          strlen(KAT2) / 2, &n), 0);
	assert_int_equal(n, strlen(KAT2_PLAIN));
	assert_memory_equal(out, KAT2_PLAIN, n);
	assert_int_equal(keyring_decrypt_hex_into(k, KAT3, strlen(KAT3), NULL, 0, out, 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(keyring_decrypt_hex_into(k, KAT2, strlen(KAT2), KAT2_CTX, strlen(KAT2_CTX), out,
	                                          strlen(KAT2_PLAIN) - 1, &n), -ENOMEM);
	memset(out, 'Z', sizeof(out));
	assert_int_equal(keyring_decrypt_hex_into(k, KAT2, strlen(KAT2), NULL, 0, out, sizeof(out), &n), -EBADMSG);
	for (size_t i = 0; i < strlen(KAT2_PLAIN); i++)
		assert_int_equal(out[i], 0); /* wiped */
	assert_int_equal(out[strlen(KAT2_PLAIN)], 'Z');
	assert_int_equal(keyring_decrypt_hex_into(k, "\\x01", 4, NULL, 0, out, sizeof(out), &n), -EBADMSG);
	keyring_destroy(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answers),
		cmocka_unit_test(test_decrypt_hex_into),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_nonces_differ),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_bit_flips),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_bad_hex),
		cmocka_unit_test(test_huge_sizes),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_file_accepts),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_file_permissions),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_error_marker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
