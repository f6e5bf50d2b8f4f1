/*
 * keyring — key loading (file, environment) and the AES-256-GCM codec for stored values.
 *
 * Design: each key gets two OpenSSL cipher contexts (encrypt, decrypt) initialised with the
 * key once, at load; a call only sets the nonce, feeds the AAD and the data, and checks or
 * produces the tag, so the per-value cost is the cipher itself and no allocation (the raw key
 * bytes are wiped as soon as the contexts hold them). The hex decrypt decodes the ciphertext
 * straight into the caller's buffer and decrypts it in place; if the tag then fails, that
 * region is wiped and the buffer's length is left as it was, so unverified plaintext is never
 * visible. Raw key bytes only ever live in memory this file wipes before freeing (the file
 * image, the pending-key array); they are never formatted into a message.
 */
#include "keyring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hex.h"

/* A key file larger than this is not a key file (65535 keys of ~80 bytes fit). */
#define KEYRING_FILE_MAX (8u << 20)
/* OpenSSL's update functions take an int length; feed larger inputs in chunks of this. */
#define KEYRING_CHUNK ((size_t)1 << 30)

typedef struct key_slot {
	uint16_t id;
	EVP_CIPHER_CTX *enc;
	EVP_CIPHER_CTX *dec;
} key_slot;

struct keyring {
	key_slot *keys; /* sorted by id */
	size_t n;
	uint16_t primary;
};

/* A key read from the file or the environment, before its contexts exist. */
typedef struct pending_key {
	uint16_t id;
	bool primary;
	unsigned where; /* line or entry number */
	uint8_t key[KEYRING_KEY_BYTES];
} pending_key;

typedef struct pending_list {
	pending_key *v;
	size_t n;
	size_t cap;
} pending_list;

static void set_err(char err[KEYRING_ERROR_MAX], const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_err(char err[KEYRING_ERROR_MAX], const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, KEYRING_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* ---- the keyring ---------------------------------------------------------------------- */

static key_slot *slot_find(const keyring *k, uint16_t id)
{
	size_t lo = 0, hi = k->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (k->keys[mid].id == id)
			return &k->keys[mid];
		if (k->keys[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

void keyring_destroy(keyring *k)
{
	if (k == NULL)
		return;
	for (size_t i = 0; i < k->n; i++) {
		/* Freeing a context cleanses its key schedule. */
		EVP_CIPHER_CTX_free(k->keys[i].enc);
		EVP_CIPHER_CTX_free(k->keys[i].dec);
	}
	free(k->keys);
	free(k);
}

uint16_t keyring_primary(const keyring *k)
{
	return k->primary;
}

size_t keyring_size(const keyring *k)
{
	return k->n;
}

int keyring_has(const keyring *k, uint16_t id)
{
	return slot_find(k, id) != NULL;
}

static int slot_cmp(const void *a, const void *b)
{
	const key_slot *x = a, *y = b;
	return (x->id > y->id) - (x->id < y->id);
}

/* Builds a keyring from checked pending keys (unique ids, one primary). 0, -ENOMEM or -EIO. */
static int keyring_build(const pending_list *pl, keyring **out)
{
	int rc = -ENOMEM;
	keyring *k = calloc(1, sizeof(*k));
	if (k == NULL)
		goto cleanup;
	k->keys = calloc(pl->n, sizeof(*k->keys));
	if (k->keys == NULL)
		goto cleanup;
	for (size_t i = 0; i < pl->n; i++) {
		key_slot *s = &k->keys[k->n];
		s->id = pl->v[i].id;
		s->enc = EVP_CIPHER_CTX_new();
		s->dec = EVP_CIPHER_CTX_new();
		k->n++;
		if (s->enc == NULL || s->dec == NULL) {
			rc = -ENOMEM;
			goto cleanup;
		}
		if (EVP_EncryptInit_ex(s->enc, EVP_aes_256_gcm(), NULL, pl->v[i].key, NULL) != 1 ||
		    EVP_DecryptInit_ex(s->dec, EVP_aes_256_gcm(), NULL, pl->v[i].key, NULL) != 1) {
			rc = -EIO;
			goto cleanup;
		}
		if (pl->v[i].primary)
			k->primary = s->id;
	}
	qsort(k->keys, k->n, sizeof(*k->keys), slot_cmp);
	*out = k;
	k = NULL;
	rc = 0;
cleanup:
	keyring_destroy(k);
	return rc;
}

/* ---- parsing keys --------------------------------------------------------------------- */

static void pending_fini(pending_list *pl)
{
	if (pl->v != NULL) {
		OPENSSL_cleanse(pl->v, pl->cap * sizeof(*pl->v));
		free(pl->v);
	}
	pl->v = NULL;
	pl->n = pl->cap = 0;
}

/* Grows by copying and wiping the old array (realloc could leave key bytes in freed memory). */
static int pending_grow(pending_list *pl)
{
	if (pl->n < pl->cap)
		return 0;
	size_t cap = pl->cap ? pl->cap * 2 : 4;
	pending_key *v = calloc(cap, sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	if (pl->v != NULL) {
		memcpy(v, pl->v, pl->n * sizeof(*v));
		OPENSSL_cleanse(pl->v, pl->cap * sizeof(*pl->v));
		free(pl->v);
	}
	pl->v = v;
	pl->cap = cap;
	return 0;
}

static bool token_is(const char *t, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(t, word, n) == 0;
}

/* Checks and adds one key. place names it in messages ("path:3", "WALCAST_KEYS entry 2");
 * where is its line or entry number and unit names what that counts ("line", "entry"). No
 * token is ever copied into err: a malformed line may hold key material in any position. */
static int pending_add(pending_list *pl, const char *place, const char *unit, unsigned where,
                       const char *idt, size_t idn, const char *hext, size_t hexn,
                       const char *flag, size_t flagn, char err[KEYRING_ERROR_MAX])
{
	unsigned long id = 0;
	bool id_ok = idn > 0 && idn <= 5;
	for (size_t i = 0; id_ok && i < idn; i++) {
		if (idt[i] < '0' || idt[i] > '9')
			id_ok = false;
		else
			id = id * 10 + (unsigned long)(idt[i] - '0');
	}
	if (!id_ok || id < 1 || id > 65535) {
		set_err(err, "%s: the key id must be a number from 1 to 65535", place);
		return -EINVAL;
	}
	if (hexn != 2 * KEYRING_KEY_BYTES) {
		set_err(err, "%s: key %lu: the key must be %d hex digits (%d bytes), not %zu characters",
		        place, id, 2 * KEYRING_KEY_BYTES, KEYRING_KEY_BYTES, hexn);
		return -EINVAL;
	}
	bool primary = false;
	if (flag != NULL) {
		if (!token_is(flag, flagn, "primary")) {
			set_err(err, "%s: key %lu: only the word 'primary' may follow the key", place, id);
			return -EINVAL;
		}
		primary = true;
	}
	for (size_t i = 0; i < pl->n; i++) {
		if (pl->v[i].id == id) {
			set_err(err, "%s: key %lu is defined twice (first on %s %u)", place, id, unit,
			        pl->v[i].where);
			return -EINVAL;
		}
		if (primary && pl->v[i].primary) {
			set_err(err, "%s: key %lu: two keys are marked primary (key %u on %s %u)", place, id,
			        (unsigned)pl->v[i].id, unit, pl->v[i].where);
			return -EINVAL;
		}
	}
	int rc = pending_grow(pl);
	if (rc < 0) {
		set_err(err, "%s: out of memory", place);
		return rc;
	}
	pending_key *p = &pl->v[pl->n];
	if (hex_decode(hext, KEYRING_KEY_BYTES, p->key) < 0) {
		OPENSSL_cleanse(p->key, sizeof(p->key));
		set_err(err, "%s: key %lu: the key must be hex digits only", place, id);
		return -EINVAL;
	}
	p->id = (uint16_t)id;
	p->primary = primary;
	p->where = where;
	pl->n++;
	return 0;
}

/* After the last key: at least one, and exactly one primary (implicit for a single key). */
static int pending_finish(pending_list *pl, const char *source, char err[KEYRING_ERROR_MAX])
{
	if (pl->n == 0) {
		set_err(err, "%s: no keys", source);
		return -EINVAL;
	}
	if (pl->n == 1) {
		pl->v[0].primary = true;
		return 0;
	}
	for (size_t i = 0; i < pl->n; i++)
		if (pl->v[i].primary)
			return 0;
	set_err(err, "%s: %zu keys and none is marked primary; mark the one to encrypt with", source,
	        pl->n);
	return -EINVAL;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Parses the key file image s[0..n) into pl. */
static int parse_file(const char *path, const char *s, size_t n, pending_list *pl,
                      char err[KEYRING_ERROR_MAX])
{
	unsigned line = 0;
	size_t pos = 0;
	while (pos < n) {
		line++;
		size_t end = pos;
		while (end < n && s[end] != '\n')
			end++;
		size_t stop = pos;
		while (stop < end && s[stop] != '#')
			stop++;
		/* Up to four tokens, so that a fourth is reported. */
		const char *tok[4];
		size_t tokn[4];
		int ntok = 0;
		size_t i = pos;
		while (i < stop) {
			while (i < stop && is_space(s[i]))
				i++;
			if (i == stop)
				break;
			size_t start = i;
			while (i < stop && !is_space(s[i]))
				i++;
			if (ntok < 4) {
				tok[ntok] = s + start;
				tokn[ntok] = i - start;
			}
			ntok++;
		}
		char place[KEYRING_ERROR_MAX];
		snprintf(place, sizeof(place), "%s:%u", path, line);
		if (ntok == 1 || ntok > 3) {
			set_err(err, "%s: expected 'ID HEX' or 'ID HEX primary'", place);
			return -EINVAL;
		}
		if (ntok >= 2) {
			int rc = pending_add(pl, place, "line", line, tok[0], tokn[0], tok[1], tokn[1],
			                     ntok == 3 ? tok[2] : NULL, ntok == 3 ? tokn[2] : 0, err);
			if (rc < 0)
				return rc;
		}
		pos = end + 1;
	}
	return pending_finish(pl, path, err);
}

/* Parses the environment value s (entries ID:HEX[:primary], separated by commas/whitespace). */
static int parse_env(const char *var, const char *s, pending_list *pl, char err[KEYRING_ERROR_MAX])
{
	unsigned entry = 0;
	size_t i = 0, n = strlen(s);
	while (i < n) {
		while (i < n && (s[i] == ',' || is_space(s[i]) || s[i] == '\n'))
			i++;
		if (i == n)
			break;
		size_t start = i;
		while (i < n && !(s[i] == ',' || is_space(s[i]) || s[i] == '\n'))
			i++;
		entry++;
		const char *part[4];
		size_t partn[4];
		int nparts = 0;
		size_t p = start;
		for (;;) {
			size_t q = p;
			while (q < i && s[q] != ':')
				q++;
			if (nparts < 4) {
				part[nparts] = s + p;
				partn[nparts] = q - p;
			}
			nparts++;
			if (q == i)
				break;
			p = q + 1;
		}
		char place[KEYRING_ERROR_MAX];
		snprintf(place, sizeof(place), "%s entry %u", var, entry);
		if (nparts < 2 || nparts > 3) {
			set_err(err, "%s: expected ID:HEX or ID:HEX:primary", place);
			return -EINVAL;
		}
		int rc = pending_add(pl, place, "entry", entry, part[0], partn[0], part[1], partn[1],
		                     nparts == 3 ? part[2] : NULL, nparts == 3 ? partn[2] : 0, err);
		if (rc < 0)
			return rc;
	}
	return pending_finish(pl, var, err);
}

/* Reads the whole file at fd into a fresh buffer (*out, *len). 0, -EFBIG or -errno. */
static int read_all(int fd, char **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	if (b == NULL)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			if (cap >= KEYRING_FILE_MAX) {
				OPENSSL_cleanse(b, n);
				free(b);
				return -EFBIG;
			}
			/* Grow by copy-and-wipe, as for the pending keys. */
			char *nb = malloc(cap * 2);
			if (nb == NULL) {
				OPENSSL_cleanse(b, n);
				free(b);
				return -ENOMEM;
			}
			memcpy(nb, b, n);
			OPENSSL_cleanse(b, n);
			free(b);
			b = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			OPENSSL_cleanse(b, n);
			free(b);
			return -e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*out = b;
	*len = n;
	return 0;
}

int keyring_load_file(const char *path, keyring **out, char err[KEYRING_ERROR_MAX])
{
	int rc;
	int fd = -1;
	char *image = NULL;
	size_t image_len = 0;
	pending_list pl = {0};
	struct stat st;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		set_err(err, "%s: cannot open the key file: %s", path, strerror(-rc));
		goto cleanup;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		set_err(err, "%s: cannot stat the key file: %s", path, strerror(-rc));
		goto cleanup;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		set_err(err, "%s: the key file is not a regular file", path);
		goto cleanup;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		rc = -EINVAL;
		set_err(err, "%s: the key file must be owned by the user walcast runs as, or by root", path);
		goto cleanup;
	}
	/* As libpq for its private keys: 0600 or stricter, or 0640 when root owns the file. */
	bool root_group_ok = st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) == 0;
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0 && !root_group_ok) {
		rc = -EINVAL;
		set_err(err, "%s: the key file has mode %04o, which lets group or others read it; "
		        "use chmod 600 (or 640 with owner root)", path, (unsigned)(st.st_mode & 07777));
		goto cleanup;
	}
	rc = read_all(fd, &image, &image_len);
	if (rc == -EFBIG) {
		rc = -EINVAL;
		set_err(err, "%s: the key file is larger than %u bytes", path, KEYRING_FILE_MAX);
		goto cleanup;
	}
	if (rc < 0) {
		set_err(err, "%s: cannot read the key file: %s", path, strerror(-rc));
		goto cleanup;
	}
	rc = parse_file(path, image, image_len, &pl, err);
	if (rc < 0)
		goto cleanup;
	rc = keyring_build(&pl, out);
	if (rc < 0)
		set_err(err, "%s: %s", path, rc == -ENOMEM ? "out of memory" : "OpenSSL refused the key");
cleanup:
	pending_fini(&pl);
	if (image != NULL) {
		OPENSSL_cleanse(image, image_len);
		free(image);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

int keyring_load_env(const char *var, keyring **out, char err[KEYRING_ERROR_MAX])
{
	int rc;
	pending_list pl = {0};
	char *env = getenv(var);
	if (env == NULL || env[0] == '\0') {
		set_err(err, "%s is not set", var);
		return -ENOENT;
	}
	/* Key material does not stay in the environment once read: the value is wiped in place
	 * (so /proc/PID/environ no longer shows it) and the variable removed. */
	size_t env_len = strlen(env);
	char *value = strdup(env);
	explicit_bzero(env, env_len);
	unsetenv(var);
	if (value == NULL) {
		set_err(err, "%s: out of memory", var);
		return -ENOMEM;
	}
	rc = parse_env(var, value, &pl, err);
	if (rc < 0)
		goto cleanup;
	rc = keyring_build(&pl, out);
	if (rc < 0)
		set_err(err, "%s: %s", var, rc == -ENOMEM ? "out of memory" : "OpenSSL refused the key");
cleanup:
	pending_fini(&pl);
	explicit_bzero(value, env_len);
	free(value);
	return rc;
}

/* ---- the codec ------------------------------------------------------------------------ */

/* Feeds AAD in int-sized chunks. 0 or -EIO. */
static int feed_aad(EVP_CIPHER_CTX *c, const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t chunk = n < KEYRING_CHUNK ? n : KEYRING_CHUNK;
		int outl;
		if (EVP_CipherUpdate(c, NULL, &outl, p, (int)chunk) != 1)
			return -EIO;
		p += chunk;
		n -= chunk;
	}
	return 0;
}

/* Runs the data through the cipher in int-sized chunks (in == o allowed). 0 or -EIO. */
static int feed_data(EVP_CIPHER_CTX *c, uint8_t *o, const uint8_t *in, size_t n)
{
	while (n > 0) {
		size_t chunk = n < KEYRING_CHUNK ? n : KEYRING_CHUNK;
		int outl;
		if (EVP_CipherUpdate(c, o, &outl, in, (int)chunk) != 1 || (size_t)outl != chunk)
			return -EIO;
		o += chunk;
		in += chunk;
		n -= chunk;
	}
	return 0;
}

/* Writes the stored value of plain[0..len) under slot s to v[0..len + KEYRING_OVERHEAD).
 * 0 or -EIO. */
static int seal(key_slot *s, const uint8_t *plain, size_t len, const void *ctx, size_t ctx_len,
                uint8_t *v)
{
	uint8_t *nonce = v + KEYRING_HEADER_BYTES;
	uint8_t *ct = nonce + KEYRING_NONCE_BYTES;
	int outl;
	v[0] = KEYRING_VERSION;
	v[1] = (uint8_t)(s->id >> 8);
	v[2] = (uint8_t)(s->id & 0xff);
	if (RAND_bytes(nonce, KEYRING_NONCE_BYTES) != 1)
		return -EIO;
	if (EVP_EncryptInit_ex(s->enc, NULL, NULL, NULL, nonce) != 1 ||
	    feed_aad(s->enc, v, KEYRING_HEADER_BYTES) < 0 || feed_aad(s->enc, ctx, ctx_len) < 0 ||
	    feed_data(s->enc, ct, plain, len) < 0 || EVP_EncryptFinal_ex(s->enc, ct + len, &outl) != 1 ||
	    outl != 0 ||
	    EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_GET_TAG, KEYRING_TAG_BYTES, ct + len) != 1)
		return -EIO;
	return 0;
}

/* Decrypts ct[0..len) to o (o == ct allowed) under slot s, verifying tag. 0, -EBADMSG, -EIO. */
static int unseal(key_slot *s, const uint8_t hdr[KEYRING_HEADER_BYTES],
                  const uint8_t nonce[KEYRING_NONCE_BYTES], const uint8_t *ct, size_t len,
                  const uint8_t tag[KEYRING_TAG_BYTES], const void *ctx, size_t ctx_len, uint8_t *o)
{
	uint8_t t[KEYRING_TAG_BYTES];
	int outl;
	memcpy(t, tag, sizeof(t));
	if (EVP_DecryptInit_ex(s->dec, NULL, NULL, NULL, nonce) != 1 ||
	    feed_aad(s->dec, hdr, KEYRING_HEADER_BYTES) < 0 || feed_aad(s->dec, ctx, ctx_len) < 0 ||
	    feed_data(s->dec, o, ct, len) < 0 ||
	    EVP_CIPHER_CTX_ctrl(s->dec, EVP_CTRL_GCM_SET_TAG, KEYRING_TAG_BYTES, t) != 1)
		return -EIO;
	if (EVP_DecryptFinal_ex(s->dec, o + len, &outl) != 1)
		return -EBADMSG;
	return 0;
}

/* Space for n more bytes and a NUL, refusing sizes whose arithmetic would overflow. */
static int reserve(buf *out, size_t n)
{
	if (n > SIZE_MAX / 4)
		return -ENOMEM;
	return buf_reserve(out, n);
}

/* Undoes a failed append: wipes what was written past out->len and restores the NUL. */
static void rollback(buf *out, size_t written)
{
	if (out->cap == 0)
		return;
	OPENSSL_cleanse(out->data + out->len, written);
	out->data[out->len] = '\0';
}

int keyring_encrypt(keyring *k, uint16_t key_id, const void *plain, size_t len, const void *ctx,
                    size_t ctx_len, buf *out)
{
	key_slot *s = slot_find(k, key_id ? key_id : k->primary);
	if (s == NULL)
		return -ENOKEY;
	if (len > SIZE_MAX / 4 - KEYRING_OVERHEAD)
		return -ENOMEM;
	size_t vlen = len + KEYRING_OVERHEAD;
	int rc = reserve(out, vlen);
	if (rc < 0)
		return rc;
	rc = seal(s, plain, len, ctx, ctx_len, (uint8_t *)out->data + out->len);
	if (rc < 0) {
		rollback(out, vlen);
		return rc;
	}
	out->len += vlen;
	out->data[out->len] = '\0';
	return 0;
}

int keyring_encrypt_hex(keyring *k, uint16_t key_id, const void *plain, size_t len, const void *ctx,
                        size_t ctx_len, buf *out)
{
	key_slot *s = slot_find(k, key_id ? key_id : k->primary);
	if (s == NULL)
		return -ENOKEY;
	if (len > SIZE_MAX / 8 - KEYRING_OVERHEAD)
		return -ENOMEM;
	size_t vlen = len + KEYRING_OVERHEAD;
	size_t tlen = 2 + 2 * vlen;
	int rc = reserve(out, tlen);
	if (rc < 0)
		return rc;
	/* Seal into the upper half of the reserved text, then expand to hex from the front: the
	 * hex of byte i ends at 2 + 2i + 1 <= 2 + vlen + i, so no byte is overwritten before it
	 * has been read. */
	char *t = out->data + out->len;
	uint8_t *v = (uint8_t *)t + 2 + vlen;
	rc = seal(s, plain, len, ctx, ctx_len, v);
	if (rc < 0) {
		rollback(out, tlen);
		return rc;
	}
	t[0] = '\\';
	t[1] = 'x';
	hex_encode(v, vlen, t + 2);
	out->len += tlen;
	out->data[out->len] = '\0';
	return 0;
}

int keyring_value_key_id(const void *data, size_t len, uint16_t *id)
{
	const uint8_t *d = data;
	if (len < KEYRING_OVERHEAD || d[0] != KEYRING_VERSION)
		return -EBADMSG;
	*id = (uint16_t)(d[1] << 8 | d[2]);
	return 0;
}

int keyring_value_key_id_hex(const char *text, size_t len, uint16_t *id)
{
	uint8_t hdr[KEYRING_HEADER_BYTES];
	if (len < 2 || text[0] != '\\' || text[1] != 'x' || (len - 2) % 2 != 0 ||
	    (len - 2) / 2 < KEYRING_OVERHEAD || hex_decode(text + 2, sizeof(hdr), hdr) < 0 ||
	    hdr[0] != KEYRING_VERSION)
		return -EBADMSG;
	*id = (uint16_t)(hdr[1] << 8 | hdr[2]);
	return 0;
}

int keyring_decrypt(keyring *k, const void *data, size_t len, const void *ctx, size_t ctx_len,
                    buf *out)
{
	const uint8_t *d = data;
	uint16_t id;
	if (keyring_value_key_id(data, len, &id) < 0)
		return -EBADMSG;
	key_slot *s = slot_find(k, id);
	if (s == NULL)
		return -ENOKEY;
	size_t plen = len - KEYRING_OVERHEAD;
	int rc = reserve(out, plen);
	if (rc < 0)
		return rc;
	uint8_t *o = (uint8_t *)out->data + out->len;
	rc = unseal(s, d, d + KEYRING_HEADER_BYTES, d + KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES,
	            plen, d + len - KEYRING_TAG_BYTES, ctx, ctx_len, o);
	if (rc < 0) {
		rollback(out, plen);
		return rc;
	}
	out->len += plen;
	out->data[out->len] = '\0';
	return 0;
}

/* Checks a bytea-text value and finds its key: 0 with *slot, *plen and the header, nonce and
 * tag decoded; -EBADMSG or -ENOKEY. */
static int hex_open(keyring *k, const char *text, size_t len, key_slot **slot, size_t *plen,
                    uint8_t head[KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES],
                    uint8_t tag[KEYRING_TAG_BYTES])
{
	uint16_t id;
	if (keyring_value_key_id_hex(text, len, &id) < 0)
		return -EBADMSG;
	size_t vlen = (len - 2) / 2;
	const char *hex = text + 2;
	if (hex_decode(hex, KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES, head) < 0 ||
	    hex_decode(hex + 2 * (vlen - KEYRING_TAG_BYTES), KEYRING_TAG_BYTES, tag) < 0)
		return -EBADMSG;
	*slot = slot_find(k, id);
	if (*slot == NULL)
		return -ENOKEY;
	*plen = vlen - KEYRING_OVERHEAD;
	return 0;
}

/* Decodes the ciphertext of text into o[0..plen) and decrypts it there. On error o[0..plen) is
 * wiped: no unverified byte stays. 0, -EBADMSG, -EIO. */
static int hex_unseal(key_slot *s, const char *text, size_t plen,
                      const uint8_t head[KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES],
                      const uint8_t tag[KEYRING_TAG_BYTES], const void *ctx, size_t ctx_len, uint8_t *o)
{
	int rc = hex_decode(text + 2 + 2 * (KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES), plen, o) < 0
	         ? -EBADMSG
	         : unseal(s, head, head + KEYRING_HEADER_BYTES, o, plen, tag, ctx, ctx_len, o);
	if (rc < 0)
		OPENSSL_cleanse(o, plen);
	return rc;
}

int keyring_decrypt_hex(keyring *k, const char *text, size_t len, const void *ctx, size_t ctx_len,
                        buf *out)
{
	uint8_t head[KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES];
	uint8_t tag[KEYRING_TAG_BYTES];
	key_slot *s;
	size_t plen;
	int rc = hex_open(k, text, len, &s, &plen, head, tag);
	if (rc < 0)
		return rc;
	rc = reserve(out, plen);
	if (rc < 0)
		return rc;
	rc = hex_unseal(s, text, plen, head, tag, ctx, ctx_len, (uint8_t *)out->data + out->len);
	if (rc < 0) {
		rollback(out, plen);
		return rc;
	}
	out->len += plen;
	out->data[out->len] = '\0';
	return 0;
}

int keyring_decrypt_hex_into(keyring *k, const char *text, size_t len, const void *ctx, size_t ctx_len,
                             void *out, size_t cap, size_t *out_len)
{
	uint8_t head[KEYRING_HEADER_BYTES + KEYRING_NONCE_BYTES];
	uint8_t tag[KEYRING_TAG_BYTES];
	key_slot *s;
	size_t plen;
	int rc = hex_open(k, text, len, &s, &plen, head, tag);
	if (rc < 0)
		return rc;
	if (plen > cap)
		return -ENOMEM;
	rc = hex_unseal(s, text, plen, head, tag, ctx, ctx_len, out);
	if (rc < 0)
		return rc;
	*out_len = plen;
	return 0;
}

const char *keyring_error_marker(int rc)
{
	switch (rc) {
	case -ENOKEY: return "unknown_key";
	case -EBADMSG: return "invalid_ciphertext";
	case -ENOMEM: return "out_of_memory";
	default: return "decrypt_failed";
	}
}
