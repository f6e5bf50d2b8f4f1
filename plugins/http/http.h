/*
 * http — the daemon's one HTTP listener (libwebsockets 4.1.6 on walcast's libuv loop):
 *
 *   GET /healthz   200 "ok" — the process is alive and its loop turns (the answer comes from the
 *                  loop thread, so a stuck loop does not answer at all).
 *   GET /readyz    200 {"status":"ready"} when streaming and every durable sink healthy and the
 *                  stream not paused; else 503 {"status":"not ready","reasons":[...]} saying
 *                  why, from a status provider (http_status_provider below); a standby (`walcast run`
 *                  waiting for the slot) 503 {"status":"standby","reasons":["standby: ..."]}.
 *   GET /metrics   the Prometheus text format 0.0.4 of a metrics registry, rendered per request.
 *   GET /FILE      with static_dir: that file of the directory (the demo's dashboard page)
 *   anything else  404 with a JSON body; methods other than GET and HEAD get 405.
 *
 * Later protocols (the WebSocket sink of issue 9) share the same port and vhost: they are added
 * with http_add_protocol before http_start, each with its own lws callback and, optionally, a
 * mount point (a URL prefix routed to it); the listener's own handlers are not touched.
 *
 * Not thread-safe: the loop thread owns the listener. Nothing here blocks except http_start
 * (bind; loading a certificate) and http_destroy (runs the loop until lws has let go).
 */
#ifndef WALCAST_HTTP_H
#define WALCAST_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "loop.h"
#include "metrics.h"

struct lws_protocols;

#define HTTP_ERROR_MAX 512

/* The health of one sink, as /readyz reports it. */
typedef struct http_sink_health {
	const char *name;  /* the instance name ([sink.NAME]) */
	bool durable;      /* only durable sinks make the daemon unready */
	bool healthy;
} http_sink_health;

/* What /readyz needs to know, filled by the provider. */
typedef struct http_readiness {
	bool streaming;                  /* connected and past the initial state load */
	bool paused;                     /* held back by durable sinks' pending bytes */
	const http_sink_health *sinks;   /* borrowed: read before the provider is called again */
	size_t nsinks;
	/* Not NULL: the daemon is a standby (another process streams from the slot) and this says
	 * why; /readyz then answers 503 {"status":"standby","reasons":["standby: ..."]}. Borrowed
	 * like sinks. */
	const char *standby;
} http_readiness;

/* The listener's view of the daemon, so that it does not depend on the pipeline's internals.
 * readiness fills *out (zeroed before the call); it is called on the loop thread once per
 * /readyz request, must not block and must not call back into the listener. */
typedef struct http_status_provider {
	void (*readiness)(void *arg, http_readiness *out);
	void *arg;
} http_status_provider;

typedef struct http_params {
	loop *loop;
	/* "HOST:PORT": an IPv4 address, "[IPv6]", or "*" / empty host for every address; port 0
	 * lets the kernel pick one (http_port reads it back). NULL: "127.0.0.1:8080". */
	const char *listen;
	/* PEM certificate chain and private key: HTTPS (through lws's OpenSSL) when both are set;
	 * both NULL or empty: plain HTTP. One without the other is refused. */
	const char *tls_cert;
	const char *tls_key;
	/* /metrics renders this registry (borrowed, outlives the listener); NULL: /metrics is 404. */
	metrics_registry *metrics;
	/* /readyz asks this; readiness NULL: /readyz always answers 503 "no status provider". */
	http_status_provider status;
	/* A directory whose files GET/HEAD serve at their path ("/" is its index.html) when no
	 * handler above claims it: regular files under it only (http_static.h), .html .js .css .svg
	 * .png .json; anything else 404. Checked by http_create (-EINVAL unless a directory).
	 * NULL or empty: none. */
	const char *static_dir;
} http_params;

typedef struct http_listener http_listener;

struct lws;

/* A response in the writing (http_response_write): what to send, and how far it got. */
typedef struct http_response {
	unsigned status;
	const char *content_type;
	const char *allow; /* an Allow header (a 405); NULL: none */
	bool close;        /* Connection: close (the caller closes once it is out) */
	bool head;         /* HEAD: the headers only (Content-Length still the body's) */
	const char *body;  /* borrowed until the response is out */
	size_t len;
	bool started;      /* the headers are out */
	size_t sent;       /* of the body */
} http_response;

/* Writes what of r can go now, from out (LWS_PRE bytes of room, then size - LWS_PRE bytes for
 * the payload): the first call the headers (Cache-Control: no-store) — on HTTP/1.1 with as much of
 * the body as fits beside them in one write, so that most responses leave in one send and need no
 * writable callback; on HTTP/2 alone, as the HEADERS frame — then each call the next piece (at
 * most 16 KB on HTTP/2, one DATA frame). Returns 1 when all of r is out (the caller completes the
 * transaction, lws_http_transaction_completed, or closes), 0 when more remains (the caller asks
 * for a writable callback and calls again), -1 when lws refused a write. */
int http_response_write(struct lws *wsi, http_response *r, unsigned char *out, size_t size);

/* Checks params (the address parses, TLS files both or neither) and creates a listener that does
 * not listen yet. 0 and *out (caller owns; http_destroy frees), -EINVAL with err, -ENOMEM. Does
 * not block. */
__attribute__((warn_unused_result)) int http_create(const http_params *params, http_listener **out,
                                                    char err[HTTP_ERROR_MAX]);

/* Adds an lws protocol to the vhost (a later sink's WebSocket protocol), before http_start
 * only. *protocol is copied; its name, callback and user pointer must outlive the listener.
 * mountpoint ("/realtime/v1"), when not NULL, routes the plain HTTP requests under that URL
 * prefix to the protocol's callback (an LWSMPRO_CALLBACK mount) instead of the listener's.
 * WebSocket upgrades are chosen by lws differently: by the Sec-WebSocket-Protocol the client
 * names, and when it names none (realtime-js names none) by the vhost's default protocol: with
 * ws_default that is this protocol, for every path, so its LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION
 * must refuse (return non-zero) the paths it does not serve. Without a ws_default protocol the
 * listener refuses such upgrades. 0, -EINVAL (after start, no name or callback, the name "http",
 * a duplicate name or mount point, a mount point not starting with '/', a second ws_default),
 * -ENOMEM. */
__attribute__((warn_unused_result)) int http_add_protocol(http_listener *h,
                                                          const struct lws_protocols *protocol,
                                                          const char *mountpoint, bool ws_default);

/* Creates the lws context on the loop and binds. 0, or a negative errno with err (-EADDRINUSE
 * and the like when lws cannot listen, -EINVAL for a certificate lws refuses, -EALREADY when
 * started). Blocks briefly (bind, reading the certificate). */
__attribute__((warn_unused_result)) int http_start(http_listener *h, char err[HTTP_ERROR_MAX]);

/* The port listened on (the kernel's pick for port 0), or -1 before a successful http_start. */
int http_port(const http_listener *h);

/* Closes the listener and every connection and frees everything. lws 4.1.6 on a foreign loop
 * needs two steps: the first lws_context_destroy closes its libuv handles, the loop then runs
 * (uv_run UV_RUN_NOWAIT; walcast callbacks due meanwhile run too) until the loop's foreign
 * handles are back to what they were before http_start, and the second frees the context. So:
 * loop thread, outside loop_run (never from a callback); libraries on loop_uv() created after
 * http_start should be destroyed first. Bounded (5 s): past it, logs http.destroy_busy and
 * leaves the context allocated rather than freeing it under lws. NULL is a no-op. */
void http_destroy(http_listener *h);

#endif
