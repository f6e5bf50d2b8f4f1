/* Unit tests for token: HS256, RS256 and ES256 verification with keys that pin their algorithm,
 * JWKS parsing, NumericDate claims with leeway, audience, and every refusal reason asserted
 * exactly. The RSA and EC keys are generated here with OpenSSL; tokens are minted by hand. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "token.h"

#define SECRET "super-secret-jwt-token-with-at-least-32-characters-long"
#define NOW 1800000000
#define UID "6f1c1b2e-0000-4000-8000-000000000001"

typedef struct keys_fixture {
	EVP_PKEY *rsa, *rsa_other, *ec;
	char rsa_pem[1024];     /* the RSA public key, PEM: the secret of the key-confusion attack */
	char jwks[4096];        /* rsa-1 (RS256), ec-1 (ES256), hs-1 (oct) */
	token_keys *keys;       /* SECRET + jwks */
} keys_fixture;

static keys_fixture *fx;

static const token_rules RULES = {"authenticated", true, 30};

/* ---- minting ---------------------------------------------------------------------------------- */

static void b64url(const unsigned char *in, size_t len, char *out, size_t cap)
{
	assert_true(cap > (len + 2) / 3 * 4);
	int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	assert_true(n >= 0);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *p = out; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

static void bn_b64url(const BIGNUM *bn, int pad, char *out, size_t cap)
{
	unsigned char buf[512];
	int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
	assert_true(n > 0);
	b64url(buf, (size_t)n, out, cap);
}

/* The signature of input by key as JWS wants it (ES256: r||s). */
static size_t sign(const char *alg, const void *key, size_t keylen, const char *input,
                   unsigned char *sig)
{
	if (strncmp(alg, "HS", 2) == 0) {
		size_t n = 0;
		const char *md = strcmp(alg, "HS512") == 0 ? "SHA512" : "SHA256";
		assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, md, NULL, key, keylen,
		                          (const unsigned char *)input, strlen(input), sig, 64, &n));
		return n;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[600];
	size_t n = sizeof(der);
	assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, (EVP_PKEY *)key), 1);
	assert_int_equal(EVP_DigestSign(md, der, &n, (const unsigned char *)input, strlen(input)), 1);
	EVP_MD_CTX_free(md);
	if (strcmp(alg, "ES256") != 0) {
		memcpy(sig, der, n);
		return n;
	}
	const unsigned char *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
	assert_non_null(es);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
	ECDSA_SIG_free(es);
	return 64;
}

/* A token with this header and payload JSON, signed by key (HS*: keylen bytes of secret). The
 * caller frees it. */
static char *mint_raw(const char *header, const char *payload, const char *alg, const void *key,
                      size_t keylen)
{
	char *t = malloc(16384);
	char h[2048], p[4096], s[1024];
	unsigned char sig[600];
	assert_non_null(t);
	b64url((const unsigned char *)header, strlen(header), h, sizeof(h));
	b64url((const unsigned char *)payload, strlen(payload), p, sizeof(p));
	snprintf(t, 16384, "%s.%s", h, p);
	size_t n = sign(alg, key, keylen, t, sig);
	b64url(sig, n, s, sizeof(s));
	strcat(t, ".");
	strcat(t, s);
	return t;
}

/* mint(ALG, KID or NULL, PAYLOAD): signed with the fixture's key for that algorithm. */
static char *mint(const char *alg, const char *kid, const char *payload)
{
	char header[256];
	if (kid != NULL)
		snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
	else
		snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	if (strcmp(alg, "RS256") == 0)
		return mint_raw(header, payload, alg, fx->rsa, 0);
	if (strcmp(alg, "ES256") == 0)
		return mint_raw(header, payload, alg, fx->ec, 0);
	return mint_raw(header, payload, alg, SECRET, strlen(SECRET));
}

static const char *claims(const char *fmt, ...)
{
	static char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return buf;
}

/* ---- fixture ---------------------------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	fx = calloc(1, sizeof(*fx));
	fx->rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	fx->rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	fx->ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (fx->rsa == NULL || fx->rsa_other == NULL || fx->ec == NULL)
		return -1;
	BIGNUM *n = NULL, *e = NULL, *x = NULL, *y = NULL;
	char sn[600], se[16], sx[64], sy[64], sk[128];
	EVP_PKEY_get_bn_param(fx->rsa, OSSL_PKEY_PARAM_RSA_N, &n);
	EVP_PKEY_get_bn_param(fx->rsa, OSSL_PKEY_PARAM_RSA_E, &e);
	EVP_PKEY_get_bn_param(fx->ec, OSSL_PKEY_PARAM_EC_PUB_X, &x);
	EVP_PKEY_get_bn_param(fx->ec, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
	bn_b64url(n, 0, sn, sizeof(sn));
	bn_b64url(e, 0, se, sizeof(se));
	bn_b64url(x, 32, sx, sizeof(sx));
	bn_b64url(y, 32, sy, sizeof(sy));
	BN_free(n), BN_free(e), BN_free(x), BN_free(y);
	b64url((const unsigned char *)"an-oct-key-from-the-key-set-0123", 32, sk, sizeof(sk));
	snprintf(fx->jwks, sizeof(fx->jwks),
	         "{\"keys\":["
	         "{\"kty\":\"RSA\",\"kid\":\"rsa-1\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"},"
	         "{\"kty\":\"EC\",\"kid\":\"ec-1\",\"alg\":\"ES256\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
	         "{\"kty\":\"oct\",\"kid\":\"hs-1\",\"k\":\"%s\"}]}",
	         sn, se, sx, sy, sk);
	BIO *bio = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(bio, fx->rsa);
	int len = BIO_read(bio, fx->rsa_pem, sizeof(fx->rsa_pem) - 1);
	BIO_free(bio);
	if (len <= 0)
		return -1;
	fx->rsa_pem[len] = '\0';
	char err[TOKEN_ERROR_MAX];
	return token_keys_create(SECRET, fx->jwks, &fx->keys, err);
}

static int teardown(void **state)
{
	(void)state;
	token_keys_destroy(fx->keys);
	EVP_PKEY_free(fx->rsa);
	EVP_PKEY_free(fx->rsa_other);
	EVP_PKEY_free(fx->ec);
	free(fx);
	return 0;
}

/* ---- assertions ------------------------------------------------------------------------------- */

static void expect_ok_with(const token_keys *k, const token_rules *r, char *token, token_claims *c)
{
	char err[TOKEN_ERROR_MAX] = "";
	int rc = token_verify(k, r, token, NOW, c, err);
	if (rc != 0)
		fail_msg("refused: %s", err);
	free(token);
}

static void expect_ok(char *token)
{
	token_claims c;
	expect_ok_with(fx->keys, &RULES, token, &c);
}

/* token (freed) is refused by k and r with exactly reason, *out untouched, no secret in err. */
static void expect_refused_with(const token_keys *k, const token_rules *r, char *token,
                                const char *reason)
{
	token_claims c = {.sub = "untouched"};
	char err[TOKEN_ERROR_MAX] = "";
	assert_int_equal(token_verify(k, r, token, NOW, &c, err), -EACCES);
	assert_string_equal(err, reason);
	assert_string_equal(c.sub, "untouched");
	assert_null(strstr(err, SECRET));
	free(token);
}

static void expect_refused(char *token, const char *reason)
{
	expect_refused_with(fx->keys, &RULES, token, reason);
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void test_hs256_claims(void **state)
{
	(void)state;
	token_claims c;
	expect_ok_with(fx->keys, &RULES,
	               mint("HS256", NULL, claims("{\"sub\":\"%s\",\"role\":\"authenticated\",\"aud\":\"authenticated\",\"exp\":%d}", UID, NOW + 60)),
	               &c);
	assert_string_equal(c.sub, UID);
	assert_string_equal(c.role, "authenticated");
	assert_int_equal(c.exp, NOW + 60);
	/* Supabase's secret-signed tokens may name a kid that no published key set lists */
	expect_ok(mint("HS256", "legacy-secret", claims("{\"sub\":\"u\",\"exp\":%d}", NOW + 60)));
	/* an oct key of the set verifies HS256 under its kid (not the secret) */
	unsigned char k[] = "an-oct-key-from-the-key-set-0123";
	expect_ok(mint_raw("{\"alg\":\"HS256\",\"kid\":\"hs-1\"}", claims("{\"exp\":%d}", NOW + 9),
	                   "HS256", k, 32));
	expect_refused(mint("HS256", "hs-1", claims("{\"exp\":%d}", NOW + 9)), "Token signature does not verify");
}

static void test_rs256_es256(void **state)
{
	(void)state;
	token_claims c;
	expect_ok_with(fx->keys, &RULES,
	               mint("RS256", "rsa-1", claims("{\"sub\":\"%s\",\"role\":\"authenticated\",\"exp\":%d}", UID, NOW + 60)), &c);
	assert_string_equal(c.sub, UID);
	/* decimals in exp (RFC 7519 NumericDate) */
	expect_ok_with(fx->keys, &RULES,
	               mint("ES256", "ec-1", claims("{\"sub\":\"%s\",\"role\":\"anon\",\"aud\":[\"x\",\"authenticated\"],\"exp\":%d.75,\"nbf\":%d.5}", UID, NOW + 60, NOW - 1)), &c);
	assert_string_equal(c.role, "anon");
	assert_int_equal(c.exp, NOW + 60);
	expect_ok(mint("ES256", "ec-1", claims("{\"exp\":1.8e9,\"nbf\":1.0E3}")));
}

static void test_time_claims(void **state)
{
	(void)state;
	expect_refused(mint("HS256", NULL, claims("{\"exp\":%d}", NOW - 100)), "Token has expired 100 seconds ago");
	expect_refused(mint("HS256", NULL, claims("{\"exp\":%d.5}", NOW - 101)), "Token has expired 100 seconds ago");
	expect_refused(mint("HS256", NULL, claims("{\"exp\":%d}", NOW - 30)), "Token has expired 30 seconds ago");
	expect_ok(mint("HS256", NULL, claims("{\"exp\":%d}", NOW - 29))); /* within the leeway */
	token_rules strict = {"authenticated", true, 0};
	expect_refused_with(fx->keys, &strict, mint("HS256", NULL, claims("{\"exp\":%d}", NOW)),
	                    "Token has expired 0 seconds ago");
	expect_refused(mint("HS256", NULL, claims("{\"exp\":%d,\"nbf\":%d}", NOW + 600, NOW + 100)),
	               "Token is not valid yet (nbf is 100 seconds ahead)");
	expect_ok(mint("HS256", NULL, claims("{\"exp\":%d,\"nbf\":%d}", NOW + 600, NOW + 30)));
	expect_refused_with(fx->keys, &strict, mint("HS256", NULL, claims("{\"exp\":%d,\"nbf\":%d.25}", NOW + 600, NOW)),
	                    "Token is not valid yet (nbf is 1 seconds ahead)");
	/* NumericDate is a JSON number, nothing else */
	const char *bad[] = {"\"%d\"", "true", "null", "[%d]", "{\"t\":%d}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char v[64], p[128];
		snprintf(v, sizeof(v), bad[i], NOW + 60);
		snprintf(p, sizeof(p), "{\"exp\":%s}", v);
		expect_refused(mint("HS256", NULL, p), "Token exp claim is not a NumericDate (a JSON number)");
		snprintf(p, sizeof(p), "{\"exp\":%d,\"nbf\":%s}", NOW + 60, v);
		expect_refused(mint("HS256", NULL, p), "Token nbf claim is not a NumericDate (a JSON number)");
	}
	expect_refused(mint("HS256", NULL, "{\"sub\":\"u\",\"role\":\"authenticated\"}"), "Token has no exp claim");
	token_rules lax = {"authenticated", false, 30};
	token_claims c;
	expect_ok_with(fx->keys, &lax, mint("HS256", NULL, "{\"role\":\"anon\"}"), &c);
	assert_string_equal(c.sub, "");
	assert_string_equal(c.role, "anon");
	assert_int_equal(c.exp, 0);
}

static void test_audience(void **state)
{
	(void)state;
	expect_refused(mint("HS256", NULL, claims("{\"aud\":\"admin-api\",\"exp\":%d}", NOW + 60)),
	               "Token audience does not include 'authenticated'");
	expect_refused(mint("RS256", "rsa-1", claims("{\"aud\":[\"a\",\"b\"],\"exp\":%d}", NOW + 60)),
	               "Token audience does not include 'authenticated'");
	expect_refused(mint("HS256", NULL, claims("{\"aud\":[],\"exp\":%d}", NOW + 60)),
	               "Token audience does not include 'authenticated'");
	expect_refused(mint("HS256", NULL, claims("{\"aud\":5,\"exp\":%d}", NOW + 60)),
	               "Token aud claim is not a string or an array of strings");
	expect_refused(mint("HS256", NULL, claims("{\"aud\":[\"authenticated\",7],\"exp\":%d}", NOW + 60)),
	               "Token aud claim is not a string or an array of strings");
	/* no aud: accepted, as PostgREST does (Supabase's anon and service_role keys carry none) */
	expect_ok(mint("HS256", NULL, claims("{\"role\":\"service_role\",\"exp\":%d}", NOW + 60)));
	token_rules any = {"", true, 30};
	token_claims c;
	expect_ok_with(fx->keys, &any, mint("HS256", NULL, claims("{\"aud\":\"admin-api\",\"exp\":%d}", NOW + 60)), &c);
	token_rules other = {"realtime", true, 30};
	expect_ok_with(fx->keys, &other, mint("HS256", NULL, claims("{\"aud\":[\"realtime\"],\"exp\":%d}", NOW + 60)), &c);
}

static void test_algorithms(void **state)
{
	(void)state;
	const char *p = claims("{\"sub\":\"u\",\"role\":\"service_role\",\"exp\":%d}", NOW + 60);
	char payload[256];
	snprintf(payload, sizeof(payload), "%s", p);
	/* alg none, whatever the case, signed or not */
	expect_refused(strdup("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1Iiwicm9sZSI6InNlcnZpY2Vfcm9sZSJ9."),
	               "Token algorithm none is not accepted");
	expect_refused(mint_raw("{\"alg\":\"NONE\"}", payload, "HS256", SECRET, strlen(SECRET)),
	               "Token algorithm none is not accepted");
	/* the key pins the algorithm */
	expect_refused(mint("HS512", NULL, payload), "Token algorithm HS512 does not match its key's (HS256)");
	expect_refused(mint_raw("{\"alg\":\"RS256\",\"kid\":\"ec-1\"}", payload, "RS256", fx->rsa, 0),
	               "Token algorithm RS256 does not match its key's (ES256)");
	expect_refused(mint_raw("{\"alg\":\"ES256\",\"kid\":\"rsa-1\"}", payload, "ES256", fx->ec, 0),
	               "Token algorithm ES256 does not match its key's (RS256)");
	/* RS256 token without kid: the secret is its key, and the secret verifies HS256 only */
	expect_refused(mint("RS256", NULL, payload), "Token algorithm RS256 does not match its key's (HS256)");
	/* the key-confusion attack: HS256 "signed" with the RSA public key as the secret */
	expect_refused(mint_raw("{\"alg\":\"HS256\",\"kid\":\"rsa-1\"}", payload, "HS256", fx->rsa_pem,
	                        strlen(fx->rsa_pem)),
	               "Token algorithm HS256 does not match its key's (RS256)");
	expect_refused(mint_raw("{\"alg\":\"HS256\"}", payload, "HS256", fx->rsa_pem, strlen(fx->rsa_pem)),
	               "Token signature does not verify");
	token_keys *only_jwks = NULL;
	char err[TOKEN_ERROR_MAX];
	assert_int_equal(token_keys_create(NULL, fx->jwks, &only_jwks, err), 0);
	expect_refused_with(only_jwks, &RULES,
	                    mint_raw("{\"alg\":\"HS256\"}", payload, "HS256", fx->rsa_pem, strlen(fx->rsa_pem)),
	                    "Token has no key id (kid) and no auth.jwt_secret is configured");
	expect_refused_with(only_jwks, &RULES, mint("HS256", "legacy-secret", payload),
	                    "Token key id (kid) 'legacy-secret' is not in the key set");
	token_keys_destroy(only_jwks);
	/* unknown kid */
	expect_refused(mint("RS256", "rsa-2", payload), "Token key id (kid) 'rsa-2' is not in the key set");
	expect_refused(mint("ES256", "it's\\u0001-a-very-long-kid-0123456789-0123456789-0123456789", payload),
	               "Token key id (kid) 'it?s?-a-very-long-kid-0123456789-0123...' is not in the key set");
}

static void test_signatures(void **state)
{
	(void)state;
	const char *p = claims("{\"sub\":\"u\",\"exp\":%d}", NOW + 60);
	char payload[256];
	snprintf(payload, sizeof(payload), "%s", p);
	const char *other = "another-secret-of-sufficient-length-for-hs256!!";
	expect_refused(mint_raw("{\"alg\":\"HS256\"}", payload, "HS256", other, strlen(other)),
	               "Token signature does not verify");
	expect_refused(mint_raw("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", payload, "RS256", fx->rsa_other, 0),
	               "Token signature does not verify");
	/* a payload changed after signing */
	char *t = mint("ES256", "ec-1", payload);
	char *t2 = mint("ES256", "ec-1", claims("{\"sub\":\"v\",\"exp\":%d}", NOW + 60));
	char *d1 = strchr(t, '.'), *d2 = strchr(t2, '.');
	char *s1 = strchr(d1 + 1, '.');
	char forged[4096];
	snprintf(forged, sizeof(forged), "%.*s%.*s%s", (int)(d1 - t), t, (int)(strchr(d2 + 1, '.') - d2), d2, s1);
	expect_refused(strdup(forged), "Token signature does not verify");
	/* a signature cut short, or not base64url */
	size_t n = strlen(t);
	t[n - 4] = '\0';
	expect_refused(strdup(t), "Token signature does not verify");
	strcpy(forged, t2);
	strcat(forged, "=");
	expect_refused(strdup(forged), "Token signature does not verify");
	free(t);
	free(t2);
}

static void test_malformed(void **state)
{
	(void)state;
	const char *fmt3 = "Token is malformed: not three base64url parts";
	const char *hdr = "Token is malformed: its header is not a JSON object";
	expect_refused(strdup(""), fmt3);
	expect_refused(strdup("abc"), fmt3);
	expect_refused(strdup("a.b"), fmt3);
	expect_refused(strdup("a.b.c.d"), fmt3);
	expect_refused(strdup("not.a.jwt"), hdr);
	expect_refused(strdup("eyJhbGciOiJIUzI1NiJ9=.e30.x"), hdr); /* padding is not base64url */
	expect_refused(strdup("WzFd.e30.x"), hdr);                  /* [1] */
	expect_refused(strdup("eyJhbGciOiJIUzI1NiIsImFsZyI6IkhTMjU2In0.e30.x"), hdr); /* alg twice */
	expect_refused(mint_raw("{\"typ\":\"JWT\"}", "{}", "HS256", SECRET, strlen(SECRET)),
	               "Token is malformed: its header has no alg, or a kid that is not a string");
	expect_refused(mint_raw("{\"alg\":\"HS256\",\"kid\":7}", "{}", "HS256", SECRET, strlen(SECRET)),
	               "Token is malformed: its header has no alg, or a kid that is not a string");
	expect_refused(mint_raw("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", "{}", "HS256", SECRET, strlen(SECRET)),
	               "Token is malformed: crit header parameters are not supported");
	expect_refused(mint_raw("{\"alg\":\"HS256\"}", "[\"sub\"]", "HS256", SECRET, strlen(SECRET)),
	               "Token is malformed: its payload is not a JSON object");
	char *big = malloc(TOKEN_MAX_LEN + 2);
	memset(big, 'a', TOKEN_MAX_LEN + 1);
	big[TOKEN_MAX_LEN + 1] = '\0';
	expect_refused(big, "Token is malformed: longer than 8192 bytes");
	expect_refused(mint("HS256", NULL, claims("{\"sub\":42,\"exp\":%d}", NOW + 60)), "Token sub claim is not a string");
	expect_refused(mint("HS256", NULL, claims("{\"sub\":\"a\\u0000b\",\"exp\":%d}", NOW + 60)),
	               "Token is malformed: its payload is not a JSON object"); /* jansson refuses NUL */
	expect_refused(mint("HS256", NULL, claims("{\"role\":null,\"exp\":%d}", NOW + 60)), "Token role claim is not a string");
	char longrole[TOKEN_ROLE_MAX + 1];
	memset(longrole, 'r', TOKEN_ROLE_MAX);
	longrole[TOKEN_ROLE_MAX] = '\0';
	expect_refused(mint("HS256", NULL, claims("{\"role\":\"%s\",\"exp\":%d}", longrole, NOW + 60)), "Token role claim is too long");
	token_keys *none = NULL;
	char err[TOKEN_ERROR_MAX];
	assert_int_equal(token_keys_create("", NULL, &none, err), 0);
	assert_int_equal(token_keys_count(none), 0);
	expect_refused_with(none, &RULES, mint("HS256", NULL, "{}"),
	                    "No key is configured to verify tokens (auth.jwt_secret, auth.jwks_file)");
	token_keys_destroy(none);
}

static void expect_jwks_error(const char *json, const char *reason)
{
	token_keys *k = (token_keys *)&k; /* must stay untouched */
	char err[TOKEN_ERROR_MAX] = "";
	assert_int_equal(token_keys_create(SECRET, json, &k, err), -EINVAL);
	assert_ptr_equal(k, (token_keys *)&k);
	assert_string_equal(err, reason);
}

static void test_jwks(void **state)
{
	(void)state;
	assert_int_equal(token_keys_count(fx->keys), 4);
	expect_jwks_error("{\"keys\":", "not JSON (line 1, column 8)");
	expect_jwks_error("[]", "not a JSON Web Key Set ({\"keys\": [...]})");
	expect_jwks_error("{\"keys\":[7]}", "keys[0] is not an object");
	expect_jwks_error("{\"keys\":[{\"kid\":\"a\"}]}", "keys[0] has no kty");
	expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
	                  "keys[0] has no kid (a string of 1 to 127 bytes)");
	expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"e\":\"AQAB\"}]}",
	                  "key 'r': 'n' is missing or not base64url");
	/* a 1024-bit modulus */
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	BIGNUM *n = NULL;
	char sn[400], json[600];
	assert_int_equal(EVP_PKEY_get_bn_param(small, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	bn_b64url(n, 0, sn, sizeof(sn));
	BN_free(n);
	EVP_PKEY_free(small);
	snprintf(json, sizeof(json), "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"e\":\"AQAB\",\"n\":\"%s\"}]}", sn);
	expect_jwks_error(json, "key 'r': an RSA key of 1024 bits is too short (2048 at least)");
	expect_jwks_error("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
	                  "key 'e': P-256 coordinates must be 32 bytes each");
	expect_jwks_error("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\","
	                  "\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
	                  "key 'e': not a point of P-256");
	expect_jwks_error("{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"},{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"}]}",
	                  "key id (kid) 'h' appears twice");
	/* keys walcast cannot use are skipped (and logged), not fatal */
	token_keys *k = NULL;
	char err[TOKEN_ERROR_MAX];
	assert_int_equal(token_keys_create(NULL,
	                                   "{\"keys\":[{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":\"AA\"},"
	                                   "{\"kty\":\"RSA\",\"kid\":\"r384\",\"alg\":\"RS384\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
	                                   "{\"kty\":\"EC\",\"kid\":\"p384\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"},"
	                                   "{\"kty\":\"oct\",\"kid\":\"enc\",\"use\":\"enc\",\"k\":\"c2VjcmV0\"},"
	                                   "{\"kty\":\"oct\",\"kid\":\"ok\",\"k\":\"c2VjcmV0\"}]}",
	                                   &k, err),
	                 0);
	assert_int_equal(token_keys_count(k), 1);
	token_keys_destroy(k);
	/* the file loader names the file */
	k = (token_keys *)&k;
	assert_int_equal(token_keys_load(SECRET, "/nonexistent/jwks.json", &k, err), -ENOENT);
	assert_string_equal(err, "auth.jwks_file /nonexistent/jwks.json: No such file or directory");
	assert_ptr_equal(k, (token_keys *)&k);
	char path[] = "/tmp/walcast_jwks_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fputs(fx->jwks, f);
	fclose(f);
	assert_int_equal(token_keys_load(SECRET, path, &k, err), 0);
	assert_int_equal(token_keys_count(k), 4);
	token_claims c;
	expect_ok_with(k, &RULES, mint("ES256", "ec-1", claims("{\"exp\":%d}", NOW + 5)), &c);
	token_keys_destroy(k);
	f = fopen(path, "w");
	fputs("{\"keys\": 1}", f);
	fclose(f);
	assert_int_equal(token_keys_load(SECRET, path, &k, err), -EINVAL);
	char want[TOKEN_ERROR_MAX];
	snprintf(want, sizeof(want), "auth.jwks_file %s: not a JSON Web Key Set ({\"keys\": [...]})", path);
	assert_string_equal(err, want);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hs256_claims),
		cmocka_unit_test(test_rs256_es256),
		cmocka_unit_test(test_time_claims),
		cmocka_unit_test(test_audience),
		cmocka_unit_test(test_algorithms),
		cmocka_unit_test(test_signatures),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_jwks),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
