/* token — HS256 JWT verification on top of libjwt. */
#include "token.h"

#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <string.h>

int token_verify(const char *secret, const char *token, int64_t now, token_claims *out,
                 char err[TOKEN_ERROR_MAX])
{
	jwt_t *jwt = NULL;
	int rc = -EACCES;
	token_claims c;
	memset(&c, 0, sizeof(c));
	if (secret == NULL || secret[0] == '\0') {
		snprintf(err, TOKEN_ERROR_MAX, "no JWT secret is configured (auth.jwt_secret)");
		goto cleanup;
	}
	if (token == NULL || strlen(token) > 8192) {
		snprintf(err, TOKEN_ERROR_MAX, "token missing or too long");
		goto cleanup;
	}
	if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 || jwt == NULL) {
		snprintf(err, TOKEN_ERROR_MAX, "token is malformed or its signature does not verify");
		goto cleanup;
	}
	if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
		snprintf(err, TOKEN_ERROR_MAX, "token algorithm %s is not accepted (HS256 only)",
		         jwt_alg_str(jwt_get_alg(jwt)));
		goto cleanup;
	}
	errno = 0;
	long exp = jwt_get_grant_int(jwt, "exp");
	if (errno == 0) {
		if (exp <= now) {
			snprintf(err, TOKEN_ERROR_MAX, "token expired");
			goto cleanup;
		}
		c.exp = exp;
	}
	errno = 0;
	long nbf = jwt_get_grant_int(jwt, "nbf");
	if (errno == 0 && nbf > now) {
		snprintf(err, TOKEN_ERROR_MAX, "token not valid yet (nbf)");
		goto cleanup;
	}
	const char *sub = jwt_get_grant(jwt, "sub");
	const char *role = jwt_get_grant(jwt, "role");
	if ((sub != NULL && strlen(sub) >= TOKEN_SUB_MAX) || (role != NULL && strlen(role) >= TOKEN_ROLE_MAX)) {
		snprintf(err, TOKEN_ERROR_MAX, "token claims too long");
		goto cleanup;
	}
	snprintf(c.sub, sizeof(c.sub), "%s", sub ? sub : "");
	snprintf(c.role, sizeof(c.role), "%s", role ? role : "");
	*out = c;
	rc = 0;
cleanup:
	jwt_free(jwt);
	return rc;
}
