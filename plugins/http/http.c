/*
 * http — the daemon's HTTP listener: /healthz, /readyz, /metrics on libwebsockets, on walcast's
 * libuv loop (http.h has the contract).
 *
 * Design. One lws context with one vhost (the "default" one). protocols[0] is the listener's own
 * "http" protocol: lws hands it every HTTP request no mount claims. Protocols added later
 * (http_add_protocol: the WebSocket sink) follow it in the array, each optionally with an
 * LWSMPRO_CALLBACK mount that routes a URL prefix to it, and one of them possibly the vhost's
 * default for WebSocket upgrades, so a new protocol never touches the handlers here. A response is built whole in the connection's session (a buf: the body of
 * /metrics is rendered per request), the headers are written at once and the body in chunks
 * from LWS_CALLBACK_HTTP_WRITEABLE. Keep-alive works: each request starts from a cleared session.
 *
 * Teardown follows lws 4.1.6 on a foreign loop (docs/architecture.md): lws_context_destroy
 * closes lws's libuv handles, the loop runs until they are gone, a second lws_context_destroy
 * frees the context and writes NULL through info.pcontext.
 */
#include "http.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libwebsockets.h>
#include <uv.h>

#include "buf.h"
#include "http_static.h"
#include "log.h"

#define HTTP_CHUNK 16384
#define HTTP_DESTROY_MS 5000

typedef struct http_extra {
	struct lws_protocols protocol;
	char *mountpoint; /* NULL: none */
	bool ws_default;
} http_extra;

struct http_listener {
	loop *loop;
	char *host;        /* NULL: every address */
	int port;          /* as configured (0: kernel's pick) */
	bool ipv6;
	char *tls_cert;
	char *tls_key;
	metrics_registry *metrics;
	http_status_provider status;
	char *static_root; /* realpath of [http] static_dir; NULL: no static files */

	http_extra *extra;
	size_t nextra;

	struct lws_protocols *protocols; /* [0] = ours, then extra, then the terminator */
	struct lws_http_mount *mounts;   /* one per extra protocol with a mount point */
	struct lws_protocol_vhost_options pvo, pvo_default; /* marks the ws_default protocol */
	struct lws_context *ctx;         /* lws writes NULL here when it has freed it */
	int bound_port;
	int foreign_before;              /* loop_foreign_handles before http_start */
	bool started;
	bool leaked;                     /* lws did not let go: never free h */

	unsigned char chunk[LWS_PRE + HTTP_CHUNK]; /* lws_write needs LWS_PRE bytes in front */
};

/* One HTTP connection's state (lws' per-session data of protocols[0]; zeroed by lws). */
typedef struct http_session {
	buf body;
	http_response res; /* its body is body's bytes */
} http_session;

static void http_lws_log_cb(int level, const char *line)
{
	size_t n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (level & LLL_ERR)
		log_error("http.lws", "lws: %.*s", (int)n, line);
	else
		log_warn("http.lws", "lws: %.*s", (int)n, line);
}

/* ---- responses ------------------------------------------------------------------------ */

#define HTTP_H2_FRAME 16384 /* the largest DATA frame every HTTP/2 peer takes (RFC 9113 4.2) */

int http_response_write(struct lws *wsi, http_response *r, unsigned char *out, size_t size)
{
	unsigned char *start = out + LWS_PRE, *p = start, *end = out + size;
	bool h2 = lws_get_network_wsi(wsi) != wsi; /* an HTTP/2 stream (a substream of its connection) */
	size_t body = r->head ? 0 : r->len;
	if (!r->started) {
		if (lws_add_http_common_headers(wsi, r->status, r->content_type, (lws_filepos_t)r->len, &p, end) ||
		    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, (const unsigned char *)"no-store", 8,
		                                 &p, end) ||
		    (r->allow != NULL && lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
		                                                     (const unsigned char *)r->allow,
		                                                     (int)strlen(r->allow), &p, end)) ||
		    (r->close && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
		                                              &p, end)) ||
		    lws_finalize_http_header(wsi, &p, end))
			return -1;
		r->started = true;
		if (h2 || body == 0) {
			/* HTTP/2: the headers are a HEADERS frame of their own; without a body (HEAD, empty)
			 * they are the whole response (END_STREAM on HTTP/2) */
			int n = (int)(p - start);
			if (lws_write(wsi, start, (size_t)n, body == 0 ? LWS_WRITE_HTTP_HEADERS | LWS_WRITE_H2_STREAM_END
			                                                : LWS_WRITE_HTTP_HEADERS) != n)
				return -1;
			return body == 0 ? 1 : 0;
		}
	}
	size_t room = (size_t)(end - p), left = body - r->sent;
	if (h2 && room > HTTP_H2_FRAME)
		room = HTTP_H2_FRAME;
	size_t n = left < room ? left : room;
	memcpy(p, r->body + r->sent, n);
	size_t total = (size_t)(p - start) + n;
	if (lws_write(wsi, start, total, n == left ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)total)
		return -1;
	r->sent += n;
	return r->sent == body ? 1 : 0;
}

/* Writes the next part of s's response; once it is all out, the connection waits for the next
 * request (or closes after it). Returns what the lws callback returns. */
static int respond_more(struct lws *wsi, http_listener *h, http_session *s)
{
	int rc = http_response_write(wsi, &s->res, h->chunk, sizeof(h->chunk));
	if (rc == 0) {
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (rc < 0 || s->res.close)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Sends the response whose body is in s->body, from the request's own callback. */
static int respond(struct lws *wsi, http_listener *h, http_session *s, unsigned status, const char *content_type,
                   const char *allow)
{
	s->res.status = status;
	s->res.content_type = content_type;
	s->res.allow = allow;
	s->res.body = s->body.data;
	s->res.len = s->body.len;
	return respond_more(wsi, h, s);
}

/* A JSON error body {"error":"...","path":"..."}; path may be NULL. 0 or -ENOMEM. */
static int json_error(buf *b, const char *error, const char *path)
{
	int rc = buf_puts(b, "{\"error\":");
	if (rc == 0)
		rc = buf_json_string(b, error, strlen(error));
	if (rc == 0 && path) {
		rc = buf_puts(b, ",\"path\":");
		if (rc == 0)
			rc = buf_json_string(b, path, strlen(path));
	}
	if (rc == 0)
		rc = buf_puts(b, "}\n");
	return rc;
}

/* /readyz: the provider's view, judged. Returns the status code; the body in b. 0 on ENOMEM
 * (b then holds whatever fit). */
static unsigned readyz_body(const http_listener *h, buf *b)
{
	http_readiness r;
	memset(&r, 0, sizeof(r));
	if (h->status.readiness == NULL) {
		return buf_puts(b, "{\"status\":\"not ready\",\"reasons\":[\"no status provider\"]}\n") ? 0 : 503;
	}
	h->status.readiness(h->status.arg, &r);
	int rc = 0;
	if (r.standby != NULL) {
		char why[400];
		snprintf(why, sizeof why, "standby: %s", r.standby);
		rc = buf_puts(b, "{\"status\":\"standby\",\"reasons\":[");
		if (rc == 0)
			rc = buf_json_string(b, why, strlen(why));
		if (rc == 0)
			rc = buf_puts(b, "]}\n");
		return rc ? 0 : 503;
	}
	bool ready = r.streaming && !r.paused;
	for (size_t i = 0; i < r.nsinks; i++)
		if (r.sinks[i].durable && !r.sinks[i].healthy)
			ready = false;
	if (ready)
		return buf_puts(b, "{\"status\":\"ready\"}\n") ? 0 : 200;
	rc = buf_puts(b, "{\"status\":\"not ready\",\"reasons\":[");
	bool first = true;
	if (rc == 0 && !r.streaming) {
		rc = buf_puts(b, "\"not streaming\"");
		first = false;
	}
	if (rc == 0 && r.paused) {
		rc = buf_puts(b, first ? "\"paused\"" : ",\"paused\"");
		first = false;
	}
	for (size_t i = 0; rc == 0 && i < r.nsinks; i++) {
		if (!r.sinks[i].durable || r.sinks[i].healthy)
			continue;
		char why[300];
		snprintf(why, sizeof why, "sink %s unhealthy", r.sinks[i].name ? r.sinks[i].name : "?");
		rc = buf_puts(b, first ? "" : ",");
		if (rc == 0)
			rc = buf_json_string(b, why, strlen(why));
		first = false;
	}
	if (rc == 0)
		rc = buf_puts(b, "]}\n");
	return rc ? 0 : 503;
}

/* The static file of path (http_static_resolve under h->static_root) read whole into s->body.
 * 0 and *ctype; -ENOENT (not served: the caller answers 404), -ENOMEM. */
static int static_file(const http_listener *h, http_session *s, const char *path, const char **ctype)
{
	char *file = NULL;
	FILE *f = NULL;
	int rc = http_static_resolve(h->static_root, path, &file, ctype);
	if (rc < 0)
		goto out;
	f = fopen(file, "rb");
	if (f == NULL) {
		rc = -ENOENT;
		goto out;
	}
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && rc == 0) {
		rc = buf_append(&s->body, chunk, n);
		if (rc == 0 && s->body.len > HTTP_STATIC_MAX_BYTES)
			rc = -ENOENT;
	}
	if (rc == 0 && ferror(f))
		rc = -ENOENT;
	if (rc == -ENOENT) {
		log_warn("http.static", "path=%s: cannot read %s", path, file);
		buf_clear(&s->body);
	}
out:
	if (f)
		fclose(f);
	free(file);
	return rc;
}

static bool method_is(struct lws *wsi, enum lws_token_indexes t)
{
	return lws_hdr_total_length(wsi, t) > 0;
}

static int on_request(struct lws *wsi, http_listener *h, http_session *s, const char *path)
{
	buf_clear(&s->body);
	s->res = (http_response){.head = method_is(wsi, WSI_TOKEN_HEAD_URI)};
	bool get = method_is(wsi, WSI_TOKEN_GET_URI);
	const char *ctype = NULL;
	int rc;

	if (!get && !s->res.head) {
		/* The request may carry a body we do not read: close after answering. */
		s->res.close = true;
		if (json_error(&s->body, "method not allowed", NULL))
			return -1;
		return respond(wsi, h, s, HTTP_STATUS_METHOD_NOT_ALLOWED, "application/json", "GET, HEAD");
	}
	if (strcmp(path, "/healthz") == 0) {
		if (buf_puts(&s->body, "ok"))
			return -1;
		return respond(wsi, h, s, HTTP_STATUS_OK, "text/plain; charset=utf-8", NULL);
	}
	if (strcmp(path, "/readyz") == 0) {
		unsigned status = readyz_body(h, &s->body);
		if (status == 0)
			return -1;
		return respond(wsi, h, s, status, "application/json", NULL);
	}
	if (strcmp(path, "/metrics") == 0 && h->metrics) {
		rc = metrics_render(h->metrics, &s->body);
		if (rc < 0) {
			log_error("http.metrics", "path=/metrics: cannot render: %s", strerror(-rc));
			buf_clear(&s->body);
			if (json_error(&s->body, "out of memory", NULL))
				return -1;
			return respond(wsi, h, s, HTTP_STATUS_INTERNAL_SERVER_ERROR, "application/json", NULL);
		}
		return respond(wsi, h, s, HTTP_STATUS_OK, METRICS_CONTENT_TYPE, NULL);
	}
	if (h->static_root) {
		rc = static_file(h, s, path, &ctype);
		if (rc == -ENOMEM)
			return -1;
		if (rc == 0)
			return respond(wsi, h, s, HTTP_STATUS_OK, ctype, NULL);
	}
	if (json_error(&s->body, "not found", path))
		return -1;
	return respond(wsi, h, s, HTTP_STATUS_NOT_FOUND, "application/json", NULL);
}

static int http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	http_listener *h = lws_context_user(lws_get_context(wsi));
	http_session *s = user;

	switch (reason) {
	case LWS_CALLBACK_HTTP:
		if (s == NULL || in == NULL)
			return -1;
		return on_request(wsi, h, s, in);
	case LWS_CALLBACK_HTTP_BODY:
		return 0; /* a body we do not read (a 405 that closes after it) */
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return 1; /* a WebSocket upgrade no added protocol took: refused */
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (s == NULL || !s->res.started || s->res.sent >= (s->res.head ? 0 : s->res.len))
			return 0;
		return respond_more(wsi, h, s);
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
	case LWS_CALLBACK_CLOSED_HTTP:
		if (s)
			buf_fini(&s->body);
		break;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Splits "HOST:PORT" ("[v6]:PORT", "*:PORT", ":PORT"). 0 or -EINVAL with err. */
static int parse_listen(http_listener *h, const char *listen, char err[HTTP_ERROR_MAX])
{
	const char *colon = strrchr(listen, ':');
	if (colon == NULL || colon[1] == '\0') {
		snprintf(err, HTTP_ERROR_MAX, "http.listen \"%s\": expected HOST:PORT", listen);
		return -EINVAL;
	}
	char *endp;
	errno = 0;
	long port = strtol(colon + 1, &endp, 10);
	if (errno || *endp != '\0' || port < 0 || port > 65535 || colon[1] == '-' || colon[1] == '+') {
		snprintf(err, HTTP_ERROR_MAX, "http.listen \"%s\": port must be 0-65535", listen);
		return -EINVAL;
	}
	const char *host = listen;
	size_t hlen = (size_t)(colon - listen);
	if (hlen > 0 && host[0] == '[') {
		if (hlen < 3 || host[hlen - 1] != ']') {
			snprintf(err, HTTP_ERROR_MAX, "http.listen \"%s\": unbalanced [ ] around an IPv6 address",
			         listen);
			return -EINVAL;
		}
		host++;
		hlen -= 2;
		h->ipv6 = true;
	} else if (memchr(host, ':', hlen)) {
		snprintf(err, HTTP_ERROR_MAX, "http.listen \"%s\": write an IPv6 address as [ADDRESS]:PORT",
		         listen);
		return -EINVAL;
	}
	h->port = (int)port;
	if (hlen == 0 || (hlen == 1 && host[0] == '*')) {
		h->ipv6 = true; /* every address, v4 and v6 */
		return 0;
	}
	h->host = strndup(host, hlen);
	return h->host ? 0 : -ENOMEM;
}

static bool empty(const char *s) { return s == NULL || s[0] == '\0'; }

int http_create(const http_params *params, http_listener **out, char err[HTTP_ERROR_MAX])
{
	int rc;
	http_listener *h = calloc(1, sizeof(*h));
	if (h == NULL) {
		snprintf(err, HTTP_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	h->loop = params->loop;
	h->metrics = params->metrics;
	h->status = params->status;
	h->bound_port = -1;
	rc = parse_listen(h, params->listen ? params->listen : "127.0.0.1:8080", err);
	if (rc < 0)
		goto fail;
	if (empty(params->tls_cert) != empty(params->tls_key)) {
		snprintf(err, HTTP_ERROR_MAX, "http.tls_cert and http.tls_key: set both (HTTPS) or neither");
		rc = -EINVAL;
		goto fail;
	}
	if (!empty(params->static_dir)) {
		h->static_root = realpath(params->static_dir, NULL);
		struct stat st;
		if (h->static_root == NULL || stat(h->static_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
			rc = h->static_root == NULL && errno == ENOMEM ? -ENOMEM : -EINVAL;
			snprintf(err, HTTP_ERROR_MAX, "http.static_dir=%s: not a directory", params->static_dir);
			goto fail;
		}
	}
	if (!empty(params->tls_cert)) {
		h->tls_cert = strdup(params->tls_cert);
		h->tls_key = strdup(params->tls_key);
		if (h->tls_cert == NULL || h->tls_key == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	*out = h;
	return 0;
fail:
	if (rc == -ENOMEM)
		snprintf(err, HTTP_ERROR_MAX, "out of memory");
	free(h->host);
	free(h->tls_cert);
	free(h->tls_key);
	free(h->static_root);
	free(h);
	return rc;
}

int http_add_protocol(http_listener *h, const struct lws_protocols *protocol, const char *mountpoint,
                      bool ws_default)
{
	if (h->started || protocol == NULL || protocol->name == NULL || protocol->callback == NULL ||
	    strcmp(protocol->name, "http") == 0 || (mountpoint && mountpoint[0] != '/') ||
	    (mountpoint && strlen(mountpoint) > 255))
		return -EINVAL;
	for (size_t i = 0; i < h->nextra; i++) {
		if (strcmp(h->extra[i].protocol.name, protocol->name) == 0)
			return -EINVAL;
		if (mountpoint && h->extra[i].mountpoint && strcmp(h->extra[i].mountpoint, mountpoint) == 0)
			return -EINVAL;
		if (ws_default && h->extra[i].ws_default)
			return -EINVAL;
	}
	http_extra *grown = realloc(h->extra, (h->nextra + 1) * sizeof(*grown));
	if (grown == NULL)
		return -ENOMEM;
	h->extra = grown;
	http_extra *e = &h->extra[h->nextra];
	e->protocol = *protocol;
	e->mountpoint = NULL;
	e->ws_default = ws_default;
	if (mountpoint && (e->mountpoint = strdup(mountpoint)) == NULL)
		return -ENOMEM;
	h->nextra++;
	return 0;
}

/* The two steps of lws 4.1.6's teardown on a foreign loop (see the top of the file). true when
 * the context is freed (or there was none); false when lws kept handles open past the bound:
 * then the context, and h with it, are deliberately left allocated. */
static bool context_teardown(http_listener *h)
{
	if (h->ctx == NULL)
		return true;
	lws_context_destroy(h->ctx);
	int64_t deadline = loop_now_ms() + HTTP_DESTROY_MS;
	while (loop_foreign_handles(h->loop) > h->foreign_before && loop_now_ms() < deadline)
		uv_run(loop_uv(h->loop), UV_RUN_NOWAIT);
	if (loop_foreign_handles(h->loop) > h->foreign_before) {
		log_error("http.destroy_busy", "port=%d: lws still has libuv handles open after %d ms; "
		          "leaving its context allocated", h->bound_port, HTTP_DESTROY_MS);
		return false;
	}
	lws_context_destroy(h->ctx); /* frees it; writes NULL into h->ctx through info.pcontext */
	h->ctx = NULL;
	return true;
}

int http_start(http_listener *h, char err[HTTP_ERROR_MAX])
{
	if (h->started || h->leaked || h->protocols) {
		snprintf(err, HTTP_ERROR_MAX, "http listener already started");
		return -EALREADY;
	}
	/* protocols: ours, the added ones, the terminator. */
	h->protocols = calloc(h->nextra + 2, sizeof(*h->protocols));
	h->mounts = calloc(h->nextra ? h->nextra : 1, sizeof(*h->mounts));
	if (h->protocols == NULL || h->mounts == NULL) {
		snprintf(err, HTTP_ERROR_MAX, "out of memory");
		return -ENOMEM;
	}
	h->protocols[0].name = "http";
	h->protocols[0].callback = http_cb;
	h->protocols[0].per_session_data_size = sizeof(http_session);
	/* a chunk of ours in one send (lws' default cuts sends to its 4 KiB service buffer) */
	h->protocols[0].tx_packet_size = HTTP_CHUNK + 1024;
	struct lws_http_mount *mounts = NULL, *last = NULL;
	size_t nm = 0;
	const struct lws_protocol_vhost_options *pvo = NULL;
	for (size_t i = 0; i < h->nextra; i++) {
		h->protocols[i + 1] = h->extra[i].protocol;
		if (h->extra[i].ws_default) {
			/* lws' per-vhost option "default" on a protocol makes it the one that WebSocket
			 * upgrades without Sec-WebSocket-Protocol reach. */
			h->pvo_default.name = "default";
			h->pvo_default.value = "1";
			h->pvo.options = &h->pvo_default;
			h->pvo.name = h->extra[i].protocol.name;
			h->pvo.value = "";
			pvo = &h->pvo;
		}
		if (h->extra[i].mountpoint == NULL)
			continue;
		struct lws_http_mount *m = &h->mounts[nm++];
		m->mountpoint = h->extra[i].mountpoint;
		m->mountpoint_len = (unsigned char)strlen(h->extra[i].mountpoint);
		m->origin = h->extra[i].protocol.name;
		m->protocol = h->extra[i].protocol.name;
		m->origin_protocol = LWSMPRO_CALLBACK;
		if (last)
			last->mount_next = m;
		else
			mounts = m;
		last = m;
	}

	lws_set_log_level(LLL_ERR | LLL_WARN, http_lws_log_cb);
	void *foreign[1] = {loop_uv(h->loop)}; /* read only during lws_create_context */
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	/* The context first, without a vhost, then the vhost: a vhost that cannot bind fails alone
	 * and the context is taken down cleanly (lws 4.1.6 returns a half-made context when the
	 * default vhost of lws_create_context cannot bind, and crashes destroying it). */
	info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	if (h->tls_cert)
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.foreign_loops = foreign;
	info.user = h;
	info.pcontext = &h->ctx;
	h->foreign_before = loop_foreign_handles(h->loop);
	h->ctx = lws_create_context(&info);
	if (h->ctx == NULL) {
		snprintf(err, HTTP_ERROR_MAX, "http: cannot create the libwebsockets context (see the "
		         "http.lws log lines)");
		for (int i = 0; i < 10000 && loop_foreign_handles(h->loop) > h->foreign_before; i++)
			uv_run(loop_uv(h->loop), UV_RUN_NOWAIT);
		return -ENOMEM;
	}

	struct lws_context_creation_info vi;
	memset(&vi, 0, sizeof(vi));
	vi.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (!h->ipv6)
		vi.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	if (h->tls_cert) {
		vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		vi.ssl_cert_filepath = h->tls_cert;
		vi.ssl_private_key_filepath = h->tls_key;
	}
	vi.vhost_name = "default";
	vi.port = h->port; /* 0: the kernel picks */
	vi.iface = h->host;
	vi.protocols = h->protocols;
	vi.mounts = mounts;
	vi.pvo = pvo;
	vi.server_string = "walcast";
	struct lws_vhost *vh = lws_create_vhost(h->ctx, &vi);
	int port = vh ? lws_get_vhost_listen_port(vh) : -1;
	if (port <= 0) {
		/* lws has logged why (http.lws); a port in use is the usual cause. */
		snprintf(err, HTTP_ERROR_MAX, "http.listen %s:%d: cannot listen%s (see the http.lws log lines)",
		         h->host ? h->host : "*", h->port,
		         h->tls_cert ? " or cannot load the TLS certificate and key" : "");
		if (!context_teardown(h))
			h->leaked = true;
		return -EADDRNOTAVAIL;
	}
	h->started = true;
	h->bound_port = port;
	log_info("http.listen", "address=%s%s%s:%d tls=%s: listening", h->ipv6 && h->host ? "[" : "",
	         h->host ? h->host : "*", h->ipv6 && h->host ? "]" : "", h->bound_port,
	         h->tls_cert ? "on" : "off");
	return 0;
}

int http_port(const http_listener *h)
{
	return h && h->started ? h->bound_port : -1;
}

void http_destroy(http_listener *h)
{
	if (h == NULL || h->leaked)
		return; /* a leaked context may still call back into h: h stays too */
	if (!context_teardown(h))
		return;
	for (size_t i = 0; i < h->nextra; i++)
		free(h->extra[i].mountpoint);
	free(h->extra);
	free(h->protocols);
	free(h->mounts);
	free(h->host);
	free(h->tls_cert);
	free(h->tls_key);
	free(h->static_root);
	free(h);
}
