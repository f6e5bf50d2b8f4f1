/*
 * http_static — request path to file under the static directory (http_static.h has the
 * contract). The check that matters is the last one: realpath(3) of the joined path must start
 * with root followed by '/', so "..", "%2e%2e" (lws decodes it before us) and symbolic links that
 * point outside all end as -ENOENT, however the path was spelled.
 */
#include "http_static.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const struct {
	const char *ext;
	const char *type;
} types[] = {
	{".html", "text/html; charset=utf-8"},
	{".js", "text/javascript; charset=utf-8"},
	{".css", "text/css; charset=utf-8"},
	{".svg", "image/svg+xml"},
	{".png", "image/png"},
	{".json", "application/json"},
};

const char *http_static_type(const char *name)
{
	const char *dot = strrchr(name, '.');
	if (dot == NULL || strchr(dot, '/') != NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcasecmp(dot, types[i].ext) == 0)
			return types[i].type;
	return NULL;
}

int http_static_resolve(const char *root, const char *urlpath, char **file, const char **type)
{
	char joined[PATH_MAX];
	char *real = NULL;
	int rc = -ENOENT;
	size_t n = strlen(urlpath);

	*file = NULL;
	*type = NULL;
	if (urlpath[0] != '/' || strchr(urlpath, '\\') != NULL)
		goto out;
	int w = snprintf(joined, sizeof joined, "%s%s%s", root, urlpath,
	                 urlpath[n - 1] == '/' ? "index.html" : "");
	if (w < 0 || (size_t)w >= sizeof joined)
		goto out;
	real = realpath(joined, NULL);
	if (real == NULL) {
		rc = errno == ENOMEM ? -ENOMEM : -ENOENT;
		goto out;
	}
	size_t rl = strlen(root);
	if (strncmp(real, root, rl) != 0 || real[rl] != '/')
		goto out;
	struct stat st;
	if (stat(real, &st) != 0 || !S_ISREG(st.st_mode) || (unsigned long long)st.st_size > HTTP_STATIC_MAX_BYTES)
		goto out;
	/* the type of the file actually served (a symlink's target), not of the name asked for */
	*type = http_static_type(real);
	if (*type == NULL)
		goto out;
	*file = real;
	real = NULL;
	rc = 0;
out:
	free(real);
	return rc;
}
