/*
 * token — JWT verification with keys that pin their algorithm: HS256 (the secret, or JWKS `oct`
 * keys), RS256 (JWKS RSA keys), ES256 (JWKS EC P-256 keys). OpenSSL does the signatures, jansson
 * the JSON. Order of the checks: the token's shape and header, the key (by kid), the algorithm
 * against the key's, the signature, then the claims (so that nothing about an unsigned payload
 * is reported). The refusal reasons are stable strings; docs/policies.md lists them.
 */
#include "token.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "log.h"

#define KID_MAX 128
#define JWKS_FILE_MAX (1 << 20)

typedef enum tok_alg { ALG_HS256, ALG_RS256, ALG_ES256 } tok_alg;

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

typedef struct tok_key {
	char kid[KID_MAX]; /* "" for auth.jwt_secret */
	tok_alg alg;
	unsigned char *secret; /* HS256 */
	size_t secret_len;
	EVP_PKEY *pkey; /* RS256, ES256 */
} tok_key;

struct token_keys {
	tok_key *secret; /* auth.jwt_secret, or NULL */
	tok_key *keys;   /* the JWKS's usable keys */
	size_t nkeys;
};

/* ---- helpers ---------------------------------------------------------------------------------- */

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict unpadded base64url (RFC 7515 section 2): the url alphabet only, no '=', no unused bits
 * set. Returns a malloc'd buffer (NUL-terminated for convenience) in *out, or -EINVAL/-ENOMEM. */
static int b64url_decode(const char *s, size_t len, unsigned char **out, size_t *out_len)
{
	if (len % 4 == 1)
		return -EINVAL;
	unsigned char *b = malloc(len / 4 * 3 + 3);
	if (b == NULL)
		return -ENOMEM;
	size_t n = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)s[i]);
		if (v < 0) {
			free(b);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			b[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0) { /* leftover bits must be zero: one text per byte string */
		free(b);
		return -EINVAL;
	}
	b[n] = '\0';
	*out = b;
	*out_len = n;
	return 0;
}

/* Copies an untrusted name (kid, alg) into dst for an error message: printable ASCII only,
 * shortened. */
static void safe_name(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	for (; src[n] != '\0' && n + 1 < cap && n < 40; n++)
		dst[n] = (src[n] >= 0x21 && src[n] <= 0x7e && src[n] != '\'') ? src[n] : '?';
	dst[n] = '\0';
	if (src[n] != '\0' && n >= 3)
		memcpy(dst + n - 3, "...", 3);
}

static void key_fini(tok_key *k)
{
	if (k == NULL)
		return;
	if (k->secret != NULL)
		OPENSSL_clear_free(k->secret, k->secret_len);
	EVP_PKEY_free(k->pkey);
	memset(k, 0, sizeof(*k));
}

/* ---- key set ---------------------------------------------------------------------------------- */

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	EVP_PKEY *pkey = NULL, *checked = NULL;
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY_CTX *chk = NULL;
	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto cleanup;
	chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (chk == NULL || EVP_PKEY_public_check(chk) != 1)
		goto cleanup;
	checked = pkey;
	pkey = NULL;
cleanup:
	EVP_PKEY_CTX_free(chk);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	EVP_PKEY_free(pkey);
	return checked;
}

/* Decodes the base64url member name of jwk into *out; err says which member is wrong. */
static int jwk_bytes(json_t *jwk, const char *name, const char *kid, unsigned char **out,
                     size_t *len, char err[TOKEN_ERROR_MAX])
{
	const char *v = json_string_value(json_object_get(jwk, name));
	int rc = v == NULL ? -EINVAL : b64url_decode(v, strlen(v), out, len);
	if (rc == -EINVAL || (rc == 0 && *len == 0)) {
		if (rc == 0)
			free(*out);
		snprintf(err, TOKEN_ERROR_MAX, "key '%s': '%s' is missing or not base64url", kid, name);
		return -EINVAL;
	}
	return rc;
}

static int jwk_rsa(json_t *jwk, tok_key *k, char err[TOKEN_ERROR_MAX])
{
	unsigned char *n = NULL, *e = NULL;
	size_t nlen = 0, elen = 0;
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	int rc;
	if ((rc = jwk_bytes(jwk, "n", k->kid, &n, &nlen, err)) < 0 ||
	    (rc = jwk_bytes(jwk, "e", k->kid, &e, &elen, err)) < 0)
		goto cleanup;
	rc = -ENOMEM;
	bn_n = BN_bin2bn(n, (int)nlen, NULL);
	bn_e = BN_bin2bn(e, (int)elen, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (bn_n == NULL || bn_e == NULL || bld == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
		goto cleanup;
	rc = -EINVAL;
	k->pkey = pkey_from_params("RSA", bld);
	if (k->pkey == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "key '%s': not a valid RSA public key", k->kid);
		goto cleanup;
	}
	if (EVP_PKEY_get_bits(k->pkey) < 2048) {
		snprintf(err, TOKEN_ERROR_MAX, "key '%s': an RSA key of %d bits is too short (2048 at least)",
		         k->kid, EVP_PKEY_get_bits(k->pkey));
		goto cleanup;
	}
	k->alg = ALG_RS256;
	rc = 0;
cleanup:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_e);
	BN_free(bn_n);
	free(e);
	free(n);
	return rc;
}

static int jwk_ec(json_t *jwk, tok_key *k, char err[TOKEN_ERROR_MAX])
{
	unsigned char *x = NULL, *y = NULL;
	size_t xlen = 0, ylen = 0;
	OSSL_PARAM_BLD *bld = NULL;
	unsigned char point[65];
	int rc;
	if ((rc = jwk_bytes(jwk, "x", k->kid, &x, &xlen, err)) < 0 ||
	    (rc = jwk_bytes(jwk, "y", k->kid, &y, &ylen, err)) < 0)
		goto cleanup;
	rc = -EINVAL;
	if (xlen != 32 || ylen != 32) {
		snprintf(err, TOKEN_ERROR_MAX, "key '%s': P-256 coordinates must be 32 bytes each", k->kid);
		goto cleanup;
	}
	point[0] = 0x04; /* uncompressed */
	memcpy(point + 1, x, 32);
	memcpy(point + 33, y, 32);
	rc = -ENOMEM;
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
		goto cleanup;
	rc = -EINVAL;
	k->pkey = pkey_from_params("EC", bld);
	if (k->pkey == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "key '%s': not a point of P-256", k->kid);
		goto cleanup;
	}
	k->alg = ALG_ES256;
	rc = 0;
cleanup:
	OSSL_PARAM_BLD_free(bld);
	free(y);
	free(x);
	return rc;
}

static int jwk_oct(json_t *jwk, tok_key *k, char err[TOKEN_ERROR_MAX])
{
	int rc = jwk_bytes(jwk, "k", k->kid, &k->secret, &k->secret_len, err);
	if (rc == 0)
		k->alg = ALG_HS256;
	return rc;
}

/* One entry of "keys": 0 and *k filled, 1 when skipped (logged), or -errno with err. */
static int jwk_parse(json_t *jwk, size_t i, tok_key *k, char err[TOKEN_ERROR_MAX])
{
	if (!json_is_object(jwk)) {
		snprintf(err, TOKEN_ERROR_MAX, "keys[%zu] is not an object", i);
		return -EINVAL;
	}
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *kid = json_string_value(json_object_get(jwk, "kid"));
	const char *alg = json_string_value(json_object_get(jwk, "alg"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	if (kty == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "keys[%zu] has no kty", i);
		return -EINVAL;
	}
	if (kid == NULL || kid[0] == '\0' || strlen(kid) >= KID_MAX) {
		snprintf(err, TOKEN_ERROR_MAX, "keys[%zu] has no kid (a string of 1 to %d bytes)", i,
		         KID_MAX - 1);
		return -EINVAL;
	}
	char shown[48];
	safe_name(shown, sizeof(shown), kid);
	const char *want = strcmp(kty, "RSA") == 0  ? "RS256"
	                   : strcmp(kty, "EC") == 0 ? "ES256"
	                   : strcmp(kty, "oct") == 0 ? "HS256"
	                                             : NULL;
	const char *skip = NULL;
	if (want == NULL)
		skip = "its kty is not RSA, EC or oct";
	else if (use != NULL && strcmp(use, "sig") != 0)
		skip = "its use is not sig";
	else if (alg != NULL && strcmp(alg, want) != 0)
		skip = "its alg is not one walcast verifies (RS256, ES256, HS256)";
	else if (strcmp(kty, "EC") == 0 && (crv == NULL || strcmp(crv, "P-256") != 0))
		skip = "its curve is not P-256";
	if (skip != NULL) {
		log_warn("token.jwks_key_skipped", "kid=%s: %s", shown, skip);
		return 1;
	}
	snprintf(k->kid, sizeof(k->kid), "%s", kid);
	if (strcmp(kty, "RSA") == 0)
		return jwk_rsa(jwk, k, err);
	if (strcmp(kty, "EC") == 0)
		return jwk_ec(jwk, k, err);
	return jwk_oct(jwk, k, err);
}

static int jwks_parse(token_keys *ks, const char *json, char err[TOKEN_ERROR_MAX])
{
	json_error_t jerr;
	json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	int rc = -EINVAL;
	json_t *keys = json_object_get(root, "keys");
	if (root == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "not JSON (line %d, column %d)", jerr.line, jerr.column);
		goto cleanup;
	}
	if (!json_is_array(keys)) {
		snprintf(err, TOKEN_ERROR_MAX, "not a JSON Web Key Set ({\"keys\": [...]})");
		goto cleanup;
	}
	rc = -ENOMEM;
	ks->keys = calloc(json_array_size(keys) + 1, sizeof(*ks->keys));
	if (ks->keys == NULL)
		goto cleanup;
	for (size_t i = 0; i < json_array_size(keys); i++) {
		tok_key *k = &ks->keys[ks->nkeys];
		rc = jwk_parse(json_array_get(keys, i), i, k, err);
		if (rc < 0) {
			key_fini(k);
			goto cleanup;
		}
		if (rc == 1)
			continue;
		for (size_t j = 0; j < ks->nkeys; j++) {
			if (strcmp(ks->keys[j].kid, k->kid) == 0) {
				char shown[48];
				safe_name(shown, sizeof(shown), k->kid);
				snprintf(err, TOKEN_ERROR_MAX, "key id (kid) '%s' appears twice", shown);
				key_fini(k);
				rc = -EINVAL;
				goto cleanup;
			}
		}
		ks->nkeys++;
	}
	rc = 0;
cleanup:
	json_decref(root);
	return rc;
}

void token_keys_destroy(token_keys *k)
{
	if (k == NULL)
		return;
	key_fini(k->secret);
	free(k->secret);
	for (size_t i = 0; i < k->nkeys; i++)
		key_fini(&k->keys[i]);
	free(k->keys);
	free(k);
}

int token_keys_create(const char *hs256_secret, const char *jwks_json, token_keys **out,
                      char err[TOKEN_ERROR_MAX])
{
	int rc = -ENOMEM;
	token_keys *ks = calloc(1, sizeof(*ks));
	if (ks == NULL)
		goto fail;
	if (hs256_secret != NULL && hs256_secret[0] != '\0') {
		size_t len = strlen(hs256_secret);
		ks->secret = calloc(1, sizeof(*ks->secret));
		if (ks->secret == NULL || (ks->secret->secret = OPENSSL_malloc(len)) == NULL)
			goto fail;
		memcpy(ks->secret->secret, hs256_secret, len);
		ks->secret->secret_len = len;
		ks->secret->alg = ALG_HS256;
	}
	if (jwks_json != NULL && (rc = jwks_parse(ks, jwks_json, err)) < 0) {
		if (rc == -ENOMEM)
			goto fail;
		goto fail_quiet;
	}
	*out = ks;
	return 0;
fail:
	snprintf(err, TOKEN_ERROR_MAX, "out of memory");
fail_quiet:
	token_keys_destroy(ks);
	return rc;
}

int token_keys_load(const char *hs256_secret, const char *jwks_path, token_keys **out,
                    char err[TOKEN_ERROR_MAX])
{
	if (jwks_path == NULL || jwks_path[0] == '\0')
		return token_keys_create(hs256_secret, NULL, out, err);
	char *text = NULL;
	char inner[TOKEN_ERROR_MAX];
	int rc;
	FILE *f = fopen(jwks_path, "rb");
	if (f == NULL) {
		rc = -errno;
		snprintf(err, TOKEN_ERROR_MAX, "auth.jwks_file %s: %s", jwks_path, strerror(-rc));
		goto cleanup;
	}
	rc = -ENOMEM;
	text = malloc(JWKS_FILE_MAX + 1);
	if (text == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "out of memory");
		goto cleanup;
	}
	size_t n = fread(text, 1, JWKS_FILE_MAX + 1, f);
	if (ferror(f) || n > JWKS_FILE_MAX) {
		rc = ferror(f) ? -EIO : -EFBIG;
		snprintf(err, TOKEN_ERROR_MAX, "auth.jwks_file %s: %s", jwks_path,
		         rc == -EIO ? "read error" : "larger than 1 MiB");
		goto cleanup;
	}
	text[n] = '\0';
	if (strlen(text) != n) {
		rc = -EINVAL;
		snprintf(err, TOKEN_ERROR_MAX, "auth.jwks_file %s: not JSON (a NUL byte)", jwks_path);
		goto cleanup;
	}
	rc = token_keys_create(hs256_secret, text, out, inner);
	if (rc < 0)
		snprintf(err, TOKEN_ERROR_MAX, "auth.jwks_file %s: %s", jwks_path, inner);
cleanup:
	free(text);
	if (f != NULL)
		fclose(f);
	return rc;
}

size_t token_keys_count(const token_keys *k)
{
	return k == NULL ? 0 : k->nkeys + (k->secret != NULL);
}

/* ---- verification ----------------------------------------------------------------------------- */

static bool sig_verifies(const tok_key *k, const char *input, size_t input_len,
                         const unsigned char *sig, size_t sig_len)
{
	bool ok = false;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	if (k->alg == ALG_HS256) {
		unsigned char mac[32];
		size_t mac_len = 0;
		if (sig_len != sizeof(mac) ||
		    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, k->secret, k->secret_len,
		              (const unsigned char *)input, input_len, mac, sizeof(mac), &mac_len) == NULL)
			return false;
		return mac_len == sizeof(mac) && CRYPTO_memcmp(mac, sig, sizeof(mac)) == 0;
	}
	const unsigned char *vsig = sig;
	size_t vlen = sig_len;
	if (k->alg == ALG_ES256) { /* JWS carries r||s, 32 bytes each; OpenSSL verifies DER */
		if (sig_len != 64)
			goto cleanup;
		es = ECDSA_SIG_new();
		r = BN_bin2bn(sig, 32, NULL);
		s = BN_bin2bn(sig + 32, 32, NULL);
		if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s))
			goto cleanup;
		r = s = NULL; /* owned by es */
		int dlen = i2d_ECDSA_SIG(es, &der);
		if (dlen <= 0)
			goto cleanup;
		vsig = der;
		vlen = (size_t)dlen;
	}
	md = EVP_MD_CTX_new();
	ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
	     EVP_DigestVerify(md, vsig, vlen, (const unsigned char *)input, input_len) == 1;
cleanup:
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	BN_free(s);
	BN_free(r);
	ECDSA_SIG_free(es);
	return ok;
}

/* The base64url JSON object of token[0..len), or NULL. */
static json_t *part_object(const char *s, size_t len)
{
	unsigned char *raw = NULL;
	size_t n = 0;
	if (b64url_decode(s, len, &raw, &n) < 0)
		return NULL;
	json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* A NumericDate claim: 1 and *v when present as a JSON number, 0 when absent, -1 otherwise. */
static int numeric_date(json_t *payload, const char *name, double *v)
{
	json_t *j = json_object_get(payload, name);
	if (j == NULL)
		return 0;
	if (!json_is_number(j))
		return -1;
	*v = json_number_value(j);
	return isfinite(*v) ? 1 : -1;
}

static int string_claim(json_t *payload, const char *name, char *dst, size_t cap,
                        char err[TOKEN_ERROR_MAX])
{
	json_t *j = json_object_get(payload, name);
	dst[0] = '\0';
	if (j == NULL)
		return 0;
	const char *v = json_string_value(j);
	if (v == NULL || strlen(v) != json_string_length(j)) {
		snprintf(err, TOKEN_ERROR_MAX, "Token %s claim is not a string", name);
		return -EACCES;
	}
	if (strlen(v) >= cap) {
		snprintf(err, TOKEN_ERROR_MAX, "Token %s claim is too long", name);
		return -EACCES;
	}
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

static int check_claims(json_t *payload, const token_rules *rules, int64_t now, token_claims *c,
                        char err[TOKEN_ERROR_MAX])
{
	double exp = 0, nbf = 0, leeway = rules->leeway_s > 0 ? rules->leeway_s : 0;
	int has_exp = numeric_date(payload, "exp", &exp);
	if (has_exp < 0) {
		snprintf(err, TOKEN_ERROR_MAX, "Token exp claim is not a NumericDate (a JSON number)");
		return -EACCES;
	}
	if (has_exp == 0 && rules->require_exp) {
		snprintf(err, TOKEN_ERROR_MAX, "Token has no exp claim");
		return -EACCES;
	}
	if (has_exp && (double)now >= exp + leeway) {
		snprintf(err, TOKEN_ERROR_MAX, "Token has expired %.0f seconds ago", floor((double)now - exp));
		return -EACCES;
	}
	int has_nbf = numeric_date(payload, "nbf", &nbf);
	if (has_nbf < 0) {
		snprintf(err, TOKEN_ERROR_MAX, "Token nbf claim is not a NumericDate (a JSON number)");
		return -EACCES;
	}
	if (has_nbf && (double)now + leeway < nbf) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is not valid yet (nbf is %.0f seconds ahead)",
		         ceil(nbf - (double)now));
		return -EACCES;
	}
	json_t *aud = json_object_get(payload, "aud");
	if (rules->audience != NULL && rules->audience[0] != '\0' && aud != NULL) {
		bool found = false, typed = json_is_string(aud) || json_is_array(aud);
		if (json_is_string(aud))
			found = strcmp(json_string_value(aud), rules->audience) == 0;
		for (size_t i = 0; json_is_array(aud) && i < json_array_size(aud); i++) {
			const char *a = json_string_value(json_array_get(aud, i));
			typed = typed && a != NULL;
			found = found || (a != NULL && strcmp(a, rules->audience) == 0);
		}
		if (!typed) {
			snprintf(err, TOKEN_ERROR_MAX, "Token aud claim is not a string or an array of strings");
			return -EACCES;
		}
		if (!found) {
			char shown[48];
			safe_name(shown, sizeof(shown), rules->audience);
			snprintf(err, TOKEN_ERROR_MAX, "Token audience does not include '%s'", shown);
			return -EACCES;
		}
	}
	if (string_claim(payload, "sub", c->sub, sizeof(c->sub), err) < 0 ||
	    string_claim(payload, "role", c->role, sizeof(c->role), err) < 0)
		return -EACCES;
	if (has_exp)
		c->exp = exp >= 9.2e18 ? INT64_MAX : exp <= -9.2e18 ? INT64_MIN : (int64_t)floor(exp);
	return 0;
}

int token_verify(const token_keys *keys, const token_rules *rules, const char *token, int64_t now,
                 token_claims *out, char err[TOKEN_ERROR_MAX])
{
	json_t *header = NULL, *payload = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	int rc = -EACCES;
	token_claims c;
	memset(&c, 0, sizeof(c));
	if (keys == NULL || (keys->secret == NULL && keys->nkeys == 0)) {
		snprintf(err, TOKEN_ERROR_MAX,
		         "No key is configured to verify tokens (auth.jwt_secret, auth.jwks_file)");
		goto cleanup;
	}
	size_t len = token == NULL ? 0 : strnlen(token, TOKEN_MAX_LEN + 1);
	if (len > TOKEN_MAX_LEN) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is malformed: longer than %d bytes", TOKEN_MAX_LEN);
		goto cleanup;
	}
	const char *dot1 = len ? memchr(token, '.', len) : NULL;
	const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
	if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is malformed: not three base64url parts");
		goto cleanup;
	}
	header = part_object(token, (size_t)(dot1 - token));
	if (header == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is malformed: its header is not a JSON object");
		goto cleanup;
	}
	const char *alg = json_string_value(json_object_get(header, "alg"));
	json_t *kid_j = json_object_get(header, "kid");
	const char *kid = json_string_value(kid_j);
	if (alg == NULL || (kid_j != NULL && kid == NULL)) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is malformed: its header has no alg, or a kid that is not a string");
		goto cleanup;
	}
	if (json_object_get(header, "crit") != NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is malformed: crit header parameters are not supported");
		goto cleanup;
	}
	if (strcasecmp(alg, "none") == 0) {
		snprintf(err, TOKEN_ERROR_MAX, "Token algorithm none is not accepted");
		goto cleanup;
	}
	/* The key: by kid; no kid, or an HS256 token whose kid the set does not list (Supabase's
	 * secret-signed tokens carry a kid that no published key set holds): the secret. */
	const tok_key *key = NULL;
	for (size_t i = 0; kid != NULL && i < keys->nkeys; i++)
		if (strcmp(keys->keys[i].kid, kid) == 0)
			key = &keys->keys[i];
	if (key == NULL && (kid == NULL || strcmp(alg, "HS256") == 0))
		key = keys->secret;
	char shown[48];
	if (key == NULL) {
		safe_name(shown, sizeof(shown), kid ? kid : "");
		if (kid != NULL)
			snprintf(err, TOKEN_ERROR_MAX, "Token key id (kid) '%s' is not in the key set", shown);
		else
			snprintf(err, TOKEN_ERROR_MAX, "Token has no key id (kid) and no auth.jwt_secret is configured");
		goto cleanup;
	}
	if (strcmp(alg, alg_names[key->alg]) != 0) {
		safe_name(shown, sizeof(shown), alg);
		snprintf(err, TOKEN_ERROR_MAX, "Token algorithm %s does not match its key's (%s)", shown,
		         alg_names[key->alg]);
		goto cleanup;
	}
	if (b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig, &sig_len) < 0 ||
	    !sig_verifies(key, token, (size_t)(dot2 - token), sig, sig_len)) {
		snprintf(err, TOKEN_ERROR_MAX, "Token signature does not verify");
		goto cleanup;
	}
	payload = part_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (payload == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "Token is malformed: its payload is not a JSON object");
		goto cleanup;
	}
	if (check_claims(payload, rules, now, &c, err) < 0)
		goto cleanup;
	*out = c;
	rc = 0;
cleanup:
	free(sig);
	json_decref(payload);
	json_decref(header);
	return rc;
}

int token_auth_refresh(token_auth *ta, const config *cfg, char err[TOKEN_ERROR_MAX])
{
	ta->rules = (token_rules){cfg->jwt_audience, cfg->jwt_require_exp, (double)cfg->jwt_leeway_ms / 1000.0};
	const char *secret = cfg->jwt_secret ? cfg->jwt_secret : "";
	if (ta->secret != NULL && strcmp(ta->secret, secret) == 0)
		return 0;
	char *copy = strdup(secret);
	if (copy == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	token_keys *k = NULL;
	bool any = secret[0] || (cfg->jwks_file && cfg->jwks_file[0]);
	int rc = any ? token_keys_load(secret, cfg->jwks_file, &k, err) : 0;
	if (rc < 0) {
		free(copy);
		return rc;
	}
	token_keys_destroy(ta->keys);
	ta->keys = k;
	free(ta->secret);
	ta->secret = copy;
	return 0;
}

void token_auth_fini(token_auth *ta)
{
	token_keys_destroy(ta->keys);
	free(ta->secret);
	*ta = (token_auth){0};
}
