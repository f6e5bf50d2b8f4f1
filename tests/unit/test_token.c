/* Unit tests for token: HS256 verification, expiry, algorithm confusion, malformed input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

#define SECRET "super-secret-jwt-token-with-at-least-32-characters-long"
#define NOW 1800000000

static char *make(const char *alg_secret, jwt_alg_t alg, const char *sub, const char *role, long exp, long nbf)
{
	jwt_t *j = NULL;
	assert_int_equal(jwt_new(&j), 0);
	if (sub)
		assert_int_equal(jwt_add_grant(j, "sub", sub), 0);
	if (role)
		assert_int_equal(jwt_add_grant(j, "role", role), 0);
	if (exp)
		assert_int_equal(jwt_add_grant_int(j, "exp", exp), 0);
	if (nbf)
		assert_int_equal(jwt_add_grant_int(j, "nbf", nbf), 0);
	assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)alg_secret, alg_secret ? (int)strlen(alg_secret) : 0), 0);
	char *s = jwt_encode_str(j);
	assert_non_null(s);
	jwt_free(j);
	return s;
}

static void test_valid(void **state)
{
	char *t = make(SECRET, JWT_ALG_HS256, "6f1c1b2e-0000-4000-8000-000000000001", "authenticated", NOW + 60, 0);
	token_claims c;
	char err[TOKEN_ERROR_MAX];
	assert_int_equal(token_verify(SECRET, t, NOW, &c, err), 0);
	assert_string_equal(c.sub, "6f1c1b2e-0000-4000-8000-000000000001");
	assert_string_equal(c.role, "authenticated");
	assert_int_equal(c.exp, NOW + 60);
	free(t);
}

static void expect_refused(const char *token, const char *fragment)
{
	token_claims c = {.sub = "untouched"};
	char err[TOKEN_ERROR_MAX] = "";
	assert_int_equal(token_verify(SECRET, token, NOW, &c, err), -EACCES);
	assert_string_equal(c.sub, "untouched");
	if (strstr(err, fragment) == NULL)
		fail_msg("error '%s' lacks '%s'", err, fragment);
	assert_null(strstr(err, SECRET));
}

static void test_refused(void **state)
{
	char *t = make("another-secret-of-sufficient-length-for-hs256!!", JWT_ALG_HS256, "u", "authenticated", NOW + 60, 0);
	expect_refused(t, "signature");
	free(t);
	t = make(SECRET, JWT_ALG_HS256, "u", "authenticated", NOW - 1, 0);
	expect_refused(t, "expired");
	free(t);
	t = make(SECRET, JWT_ALG_HS256, "u", "authenticated", NOW + 60, NOW + 30);
	expect_refused(t, "not valid yet");
	free(t);
	t = make(SECRET, JWT_ALG_HS512, "u", "authenticated", NOW + 60, 0);
	expect_refused(t, "HS256 only");
	free(t);
	/* alg "none" with no signature must never pass when a secret is configured */
	expect_refused("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1Iiwicm9sZSI6InNlcnZpY2Vfcm9sZSJ9.", "");
	expect_refused("not.a.jwt", "malformed");
	expect_refused("", "malformed");
	char big[9000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	expect_refused(big, "too long");
	token_claims c;
	char err[TOKEN_ERROR_MAX];
	assert_int_equal(token_verify("", "x.y.z", NOW, &c, err), -EACCES);
	assert_non_null(strstr(err, "auth.jwt_secret"));
}

static void test_anon_without_sub(void **state)
{
	char *t = make(SECRET, JWT_ALG_HS256, NULL, "anon", 0, 0);
	token_claims c;
	char err[TOKEN_ERROR_MAX];
	assert_int_equal(token_verify(SECRET, t, NOW, &c, err), 0);
	assert_string_equal(c.sub, "");
	assert_string_equal(c.role, "anon");
	assert_int_equal(c.exp, 0);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_anon_without_sub),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
