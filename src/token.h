/*
 * token — verifies the JWTs subscribers present (Supabase style: HS256 signed with the project's
 * JWT secret; `sub` is the user id, `role` is authenticated, anon or service_role) and returns
 * the claims walcast's privacy decisions need. libjwt does the signature work.
 */
#ifndef WALCAST_TOKEN_H
#define WALCAST_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#define TOKEN_ERROR_MAX 160
#define TOKEN_SUB_MAX 128
#define TOKEN_ROLE_MAX 64

typedef struct token_claims {
	char sub[TOKEN_SUB_MAX];   /* "" when the token has none (anon) */
	char role[TOKEN_ROLE_MAX]; /* "" when absent */
	int64_t exp;               /* 0 when absent */
} token_claims;

/* Verifies token against the HS256 secret and the clock (now: Unix seconds; exp must be later,
 * nbf not later). Returns 0 and fills *out, or -EACCES with err saying why (bad signature,
 * expired, wrong algorithm, malformed). Never logs or returns the token or the secret. Does not
 * block. */
__attribute__((warn_unused_result)) int token_verify(const char *secret, const char *token,
                                                     int64_t now, token_claims *out,
                                                     char err[TOKEN_ERROR_MAX]);

#endif
