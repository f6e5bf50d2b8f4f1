/*
 * test_files — a helper of the unit tests that need small files in a temporary directory
 * (test_http, test_http_static). Header-only; include after <cmocka.h>.
 */
#ifndef WALCAST_TEST_FILES_H
#define WALCAST_TEST_FILES_H

#include <stdio.h>

/* Writes text to DIR/NAME (created or truncated); fails the test when it cannot. */
static inline void test_put_file(const char *dir, const char *name, const char *text)
{
	char p[4400];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

#endif
