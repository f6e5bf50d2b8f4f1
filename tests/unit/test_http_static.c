/*
 * test_http_static — unit tests of the static-file mount's path resolution (plugins/http/
 * http_static.h, [http] static_dir): files under the directory are served with their type;
 * traversal attempts ("..", encoded forms after lws' decoding, symlinks out, absolute joins),
 * directories, unserved types and missing files are all -ENOENT.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_static.h"
#include "test_files.h"

typedef struct fixture {
	char top[PATH_MAX];  /* a temporary directory: top/www is served, top/secret.html is not */
	char root[PATH_MAX]; /* realpath of top/www */
} fixture;

static int setup(void **state)
{
	fixture *fx = calloc(1, sizeof(*fx));
	const char *tmp = getenv("TMPDIR");
	snprintf(fx->top, sizeof fx->top, "%s/walcast-static-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(fx->top) == NULL)
		return -1;
	char www[PATH_MAX], p[PATH_MAX];
	snprintf(www, sizeof www, "%s/www", fx->top);
	mkdir(www, 0700);
	snprintf(p, sizeof p, "%s/sub", www);
	mkdir(p, 0700);
	snprintf(p, sizeof p, "%s/www2", fx->top); /* a sibling whose name starts like www */
	mkdir(p, 0700);
	test_put_file(www, "index.html", "<p>hi</p>");
	test_put_file(www, "app.js", "1");
	test_put_file(www, "x.PNG", "png");
	test_put_file(www, "notes.txt", "no");
	test_put_file(p, "leak.html", "sibling");
	snprintf(p, sizeof p, "%s/sub", www);
	test_put_file(p, "index.html", "sub");
	test_put_file(fx->top, "secret.html", "secret");
	char link[PATH_MAX], target[PATH_MAX];
	snprintf(link, sizeof link, "%s/out.html", www);
	snprintf(target, sizeof target, "%s/secret.html", fx->top);
	if (symlink(target, link) != 0)
		return -1;
	snprintf(link, sizeof link, "%s/in.html", www);
	snprintf(target, sizeof target, "%s/index.html", www);
	if (symlink(target, link) != 0)
		return -1;
	if (realpath(www, fx->root) == NULL)
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->top);
	int rc = system(cmd);
	free(fx);
	return rc == 0 ? 0 : -1;
}

/* expect: the served file's name relative to root, or NULL for -ENOENT */
static void expect(const fixture *fx, const char *url, const char *rel, const char *type_prefix)
{
	char *file = (char *)1;
	const char *type = "x";
	int rc = http_static_resolve(fx->root, url, &file, &type);
	if (rel == NULL) {
		if (rc != -ENOENT)
			fail_msg("%s: expected -ENOENT, got %d (%s)", url, rc, rc == 0 ? file : "");
		assert_null(file);
		assert_null(type);
		return;
	}
	if (rc != 0)
		fail_msg("%s: expected %s, got %d", url, rel, rc);
	char want[PATH_MAX];
	snprintf(want, sizeof want, "%s/%s", fx->root, rel);
	assert_string_equal(file, want);
	assert_true(strncmp(type, type_prefix, strlen(type_prefix)) == 0);
	free(file);
}

static void test_served(void **state)
{
	fixture *fx = *state;
	expect(fx, "/", "index.html", "text/html");
	expect(fx, "/index.html", "index.html", "text/html");
	expect(fx, "/app.js", "app.js", "text/javascript");
	expect(fx, "/x.PNG", "x.PNG", "image/png");
	expect(fx, "/sub/", "sub/index.html", "text/html");
	expect(fx, "/sub/../app.js", "app.js", "text/javascript"); /* stays inside: fine */
	expect(fx, "//app.js", "app.js", "text/javascript");
	expect(fx, "/in.html", "index.html", "text/html"); /* a symlink inside the root */
}

static void test_traversal(void **state)
{
	fixture *fx = *state;
	const char *bad[] = {
		"/../secret.html", "/../../../../../../etc/passwd", "/sub/../../secret.html",
		"/./../secret.html", "/..", "/../", "/out.html" /* symlink out */,
		"/../www2/leak.html" /* sibling with the root's name as prefix */,
		"/..\\secret.html", "\\..\\secret.html", "../secret.html", "secret.html", "",
		"/%2e%2e/secret.html" /* lws decodes; undecoded it is just a missing name */,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(fx, bad[i], NULL, NULL);
}

static void test_not_served(void **state)
{
	fixture *fx = *state;
	expect(fx, "/notes.txt", NULL, NULL); /* unserved type */
	expect(fx, "/missing.js", NULL, NULL);
	expect(fx, "/sub", NULL, NULL);       /* a directory without the slash */
	expect(fx, "/app.js/", NULL, NULL);   /* a file as a directory */
	char longpath[PATH_MAX + 64];
	memset(longpath, 'a', sizeof longpath);
	longpath[0] = '/';
	longpath[sizeof longpath - 1] = '\0';
	expect(fx, longpath, NULL, NULL);
}

static void test_types(void **state)
{
	(void)state;
	assert_string_equal(http_static_type("a.css"), "text/css; charset=utf-8");
	assert_string_equal(http_static_type("a.svg"), "image/svg+xml");
	assert_string_equal(http_static_type("a.json"), "application/json");
	assert_null(http_static_type("a"));
	assert_null(http_static_type("a.exe"));
	assert_null(http_static_type("dir.js/file"));
	assert_null(http_static_type("a.html.bak"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_served, setup, teardown),
		cmocka_unit_test_setup_teardown(test_traversal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_served, setup, teardown),
		cmocka_unit_test(test_types),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
