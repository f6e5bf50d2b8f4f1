/*
 * token — verifies the JWTs subscribers present, as Supabase issues them, and returns the claims
 * walcast's privacy decisions need (`sub`: the user id; `role`: the database role the token
 * stands for, judged by the policy file's [roles] section).
 *
 * Keys: the project's HS256 secret (auth.jwt_secret) and the public keys of a JSON Web Key Set
 * (auth.jwks_file: RSA keys verify RS256 only, EC P-256 keys ES256 only, `oct` keys HS256 only).
 * The algorithm is pinned by the key, never chosen by the token: a token names its key with the
 * header's `kid` (no kid, or a kid the set does not list on an HS256 token: the HS256 secret,
 * as Supabase Realtime does), and its header `alg` must be the key's algorithm. `alg: none` is
 * always refused. Claims: `exp` (required unless configured otherwise) and `nbf` are RFC 7519
 * NumericDates (JSON numbers, decimals allowed) checked with a leeway; `aud`, when the token has
 * one (a string or an array of strings), must include the configured audience.
 *
 * Every refusal returns -EACCES and one stable reason (docs/policies.md, "Tokens", lists them).
 * The signature work is OpenSSL's (libjwt 1.10 takes the algorithm from the token and knows no
 * key sets); JSON is jansson's. Tokens are not the hot path.
 */
#ifndef WALCAST_TOKEN_H
#define WALCAST_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_ERROR_MAX 256
#define TOKEN_SUB_MAX 128
#define TOKEN_ROLE_MAX 64
#define TOKEN_MAX_LEN 8192 /* longer tokens are refused unread */

/* The keys that may verify a token. Immutable after creation; may be shared by threads. */
typedef struct token_keys token_keys;

/* What a token's claims must satisfy. */
typedef struct token_rules {
	const char *audience; /* a present `aud` must include it; NULL or "" = aud not checked */
	bool require_exp;     /* a token without `exp` is refused */
	double leeway_s;      /* clock skew allowed on exp and nbf, seconds (>= 0) */
} token_rules;

typedef struct token_claims {
	char sub[TOKEN_SUB_MAX];   /* "" when the token has none (anon) */
	char role[TOKEN_ROLE_MAX]; /* "" when absent */
	int64_t exp;               /* seconds (a decimal exp rounded down); 0 when absent */
} token_claims;

/* Builds a key set from the HS256 secret (NULL or "": none) and the text of a JSON Web Key Set
 * (NULL: none; {"keys": [...]}). Supported keys: kty RSA (n, e; 2048 bits or more) for RS256,
 * kty EC crv P-256 (x, y) for ES256, kty oct (k) for HS256; each needs a unique `kid`, and an
 * `alg`, when given, must be the one its type implies. Keys of other types or algorithms, or
 * with `use` other than "sig", are skipped with a warning in the log. Returns 0 and *out (free
 * with token_keys_destroy), -EINVAL with err naming the key and the reason (a malformed set, a
 * key that does not decode), or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int token_keys_create(const char *hs256_secret,
                                                          const char *jwks_json, token_keys **out,
                                                          char err[TOKEN_ERROR_MAX]);

/* token_keys_create with the key set read from the file at jwks_path (NULL or "": none); err
 * names the file. -ENOENT/-EACCES/... when it cannot be read, otherwise as token_keys_create.
 * Blocks on the file read. */
__attribute__((warn_unused_result)) int token_keys_load(const char *hs256_secret,
                                                        const char *jwks_path, token_keys **out,
                                                        char err[TOKEN_ERROR_MAX]);

/* Frees a key set; NULL is fine. */
void token_keys_destroy(token_keys *k);

/* Number of keys in the set, the HS256 secret included (for logs and tests). */
size_t token_keys_count(const token_keys *k);

/* Verifies token (at most TOKEN_MAX_LEN bytes) with keys and rules (not NULL) against the clock
 * (now: Unix seconds). Returns 0 and fills *out, or -EACCES with err holding the reason and *out untouched.
 * Never puts the token, the secret or key material in err. Does not block. */
__attribute__((warn_unused_result)) int token_verify(const token_keys *keys,
                                                     const token_rules *rules, const char *token,
                                                     int64_t now, token_claims *out,
                                                     char err[TOKEN_ERROR_MAX]);

/* ---- a verifier that follows the daemon's [auth] configuration ---------------------------- */

struct config;

/* The keys and rules of [auth] as they are now (jwt_secret, jwks_file, jwt_audience,
 * jwt_require_exp, jwt_leeway): what every token-checking front end (the realtime sink, the
 * stats API) holds. Zero it before the first refresh. */
typedef struct token_auth {
	token_keys *keys;  /* NULL: neither a secret nor a JWKS file: every token is refused */
	token_rules rules;
	char *secret;      /* the secret the keys were built from, to notice a reload */
} token_auth;

/* Takes the rules from cfg and rebuilds the keys when the secret changed (a SIGHUP reload; the
 * JWKS file is read with it). 0, or -EINVAL (err: the secret or file does not build) / -ENOMEM,
 * and then the previous keys stay. Blocks on the JWKS file read, only when rebuilding. */
__attribute__((warn_unused_result)) int token_auth_refresh(token_auth *ta, const struct config *cfg,
                                                           char err[TOKEN_ERROR_MAX]);

/* Frees the keys and the secret. */
void token_auth_fini(token_auth *ta);

#endif
