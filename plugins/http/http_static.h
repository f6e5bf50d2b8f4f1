/*
 * http_static — maps a request path onto a file under one directory, for the HTTP listener's
 * static-file mount ([http] static_dir: the demo's dashboard page). Only regular files whose real
 * path (symbolic links resolved) lies under the directory's real path are served, and only the
 * types listed in http_static_type; everything else is "not found", so a traversal attempt
 * ("/../", "%2e%2e", a symlink pointing out) looks exactly like a missing file.
 *
 * Pure functions on the file system; thread-safe; they block on the file system only.
 */
#ifndef WALCAST_HTTP_STATIC_H
#define WALCAST_HTTP_STATIC_H

#include <stddef.h>

/* The largest file served (the dashboard's bundle is well below it). */
#define HTTP_STATIC_MAX_BYTES (8u << 20)

/* The Content-Type of a file name by its extension (.html .js .css .svg .png .json, case
 * insensitive), or NULL for any other name (not served). Never blocks. */
const char *http_static_type(const char *name);

/* Resolves the request path urlpath ("/", "/app.js"; already percent-decoded by lws; "/" and a
 * path ending in '/' mean its index.html) under root, the real path of the directory
 * (realpath(3) of [http] static_dir). 0 and *file (caller frees: the file's real path) and *type
 * (static) when it is a regular file under root of a served type, at most HTTP_STATIC_MAX_BYTES;
 * -ENOENT for anything else (missing, outside root, a directory, an unserved type, too large,
 * a NUL or backslash in the path, not starting with '/'); -ENOMEM. */
__attribute__((warn_unused_result)) int http_static_resolve(const char *root, const char *urlpath,
                                                            char **file, const char **type);

#endif
