/*
 * test_lws_uv — libwebsockets 4.1.6 (Debian 12: no external poll; libuv through the
 * libwebsockets-evlib-uv plugin) serving HTTP on walcast's own loop (src/core/loop.h), one thread.
 *
 * An lws context is created with LWS_SERVER_OPTION_LIBUV and foreign_loops = loop_uv(l), with a
 * vhost on 127.0.0.1, port 0 (the kernel picks one; lws_get_vhost_listen_port reads it back) and
 * one plain HTTP protocol answering GET /healthz with 200 "ok". The client is a plain socket
 * driven by loop_watch on the same loop. Then the context is destroyed the way a foreign loop
 * needs it: lws_context_destroy starts closing lws's libuv handles, the loop runs until lws has
 * freed the context (it writes NULL through info.pcontext), and loop_destroy finds no handle of
 * lws left (the sanitizer build checks for leaks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <uv.h>

#include "loop.h"

/* ---- the server: one protocol, plain HTTP ---------------------------------------------- */

typedef struct server_stats {
	int requests;
} server_stats;

static int http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	uint8_t buf[LWS_PRE + 512];
	uint8_t *start = &buf[LWS_PRE], *p = start, *end = &buf[sizeof(buf) - 1];

	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		server_stats *st = lws_context_user(lws_get_context(wsi));
		st->requests++;
		if (strcmp((const char *)in, "/healthz") != 0) {
			lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
			return lws_http_transaction_completed(wsi) ? -1 : 0;
		}
		if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/plain", 2, &p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return 1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	case LWS_CALLBACK_HTTP_WRITEABLE:
		memcpy(start, "ok", 2);
		if (lws_write(wsi, start, 2, LWS_WRITE_HTTP_FINAL) != 2)
			return 1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
	{"http", http_cb, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Creates the context on l's libuv loop; *pctx is lws's to clear when it has freed it. */
static struct lws_context *server_start(loop *l, server_stats *st, struct lws_context **pctx, int *port)
{
	void *foreign[1] = {loop_uv(l)}; /* read only during lws_create_context */
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DISABLE_IPV6;
	info.foreign_loops = foreign;
	info.port = 0;
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	info.user = st;
	info.pcontext = pctx;
	struct lws_context *ctx = lws_create_context(&info);
	assert_non_null(ctx);
	*pctx = ctx;
	struct lws_vhost *vh = lws_get_vhost_by_name(ctx, "default");
	assert_non_null(vh);
	*port = lws_get_vhost_listen_port(vh);
	assert_true(*port > 0);
	return ctx;
}

/* The second half of lws 4.1.6's teardown on a foreign loop, after a first lws_context_destroy
 * has started closing its libuv handles: run the loop until they are gone (their close callbacks
 * free lws's connections), then lws_context_destroy again, which frees the context and writes
 * NULL through info.pcontext. A second call any earlier would free the context under close
 * callbacks still queued. */
static void server_finish_destroy(loop *l, struct lws_context **pctx)
{
	assert_non_null(*pctx); /* the first call alone does not free it */
	int iterations = 0;
	while (loop_foreign_handles(l) > 0 && iterations < 10000) {
		uv_run(loop_uv(l), UV_RUN_NOWAIT);
		iterations++;
	}
	assert_int_equal(loop_foreign_handles(l), 0);
	assert_true(iterations > 0);
	lws_context_destroy(*pctx);
	assert_null(*pctx);
}

static void server_destroy(loop *l, struct lws_context **pctx)
{
	lws_context_destroy(*pctx);
	server_finish_destroy(l, pctx);
}

/* ---- the client: a plain socket on the same loop ---------------------------------------- */

typedef struct client {
	const char *request;
	size_t sent;
	char response[4096];
	size_t got;
	bool eof;
	int error;
} client;

static void client_cb(loop *l, int fd, unsigned events, void *arg)
{
	client *c = arg;
	if (events & LOOP_WRITE) {
		ssize_t n = send(fd, c->request + c->sent, strlen(c->request) - c->sent, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN) {
			c->error = errno;
			loop_stop(l);
			return;
		}
		if (n > 0)
			c->sent += (size_t)n;
		if (c->sent == strlen(c->request) && loop_watch(l, fd, LOOP_READ, client_cb, c) < 0) {
			c->error = EIO;
			loop_stop(l);
		}
		return;
	}
	if (events & LOOP_READ) {
		ssize_t n = recv(fd, c->response + c->got, sizeof(c->response) - 1 - c->got, 0);
		if (n > 0) {
			c->got += (size_t)n;
			c->response[c->got] = '\0';
			return;
		}
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0)
			c->error = errno;
		c->eof = true;
		loop_stop(l);
	}
}

static void deadline_cb(loop *l, int id, void *arg)
{
	*(bool *)arg = true;
	loop_stop(l);
}

/* Sends request to 127.0.0.1:port and runs the loop until the server closes the connection. */
static void http_get(loop *l, int port, const char *request, client *c)
{
	memset(c, 0, sizeof(*c));
	c->request = request;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	assert_true(rc == 0 || errno == EINPROGRESS);
	assert_int_equal(loop_watch(l, fd, LOOP_WRITE, client_cb, c), 0);
	bool timed_out = false;
	int t = loop_timer_add(l, 5000, deadline_cb, &timed_out);
	assert_true(t > 0);
	assert_int_equal(loop_run(l), 0);
	loop_timer_cancel(l, t);
	loop_unwatch(l, fd);
	close(fd);
	assert_false(timed_out);
	assert_int_equal(c->error, 0);
	assert_true(c->eof);
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_lws_serves_on_walcast_loop(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	server_stats st = {0};
	struct lws_context *ctx = NULL;
	int port = 0;
	server_start(l, &st, &ctx, &port);
	assert_true(loop_foreign_handles(l) > 0); /* lws' listener, event pipe, idle and timer */

	client c;
	http_get(l, port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", &c);
	assert_int_equal(st.requests, 1);
	assert_true(strncmp(c.response, "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_non_null(strcasestr(c.response, "\r\ncontent-length: 2\r\n"));
	assert_non_null(strcasestr(c.response, "\r\ncontent-type: text/plain\r\n"));
	const char *body = strstr(c.response, "\r\n\r\n");
	assert_non_null(body);
	assert_string_equal(body + 4, "ok");

	/* Another path: 404, from the same callback. */
	http_get(l, port, "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", &c);
	assert_int_equal(st.requests, 2);
	assert_true(strncmp(c.response, "HTTP/1.1 404 ", 13) == 0);

	/* Idle with lws attached, the loop sleeps: no busy polling (lws' uv_idle only runs while it
	 * has work). 300 ms of waiting must cost far less than 300 ms of CPU. */
	double cpu0 = cpu_seconds();
	bool timed_out = false;
	assert_true(loop_timer_add(l, 300, deadline_cb, &timed_out) > 0);
	assert_int_equal(loop_run(l), 0);
	assert_true(timed_out);
	assert_true(cpu_seconds() - cpu0 < 0.1);

	server_destroy(l, &ctx);
	/* Everything of lws is closed: the loop's own destroy finds no foreign handle (it would log
	 * loop.destroy_busy and leak the loop, which the sanitizer build reports). */
	loop_destroy(l);
}

/* A context destroyed while a client connection is still open, from inside a loop callback (as
 * the daemon does on SIGTERM), then the loop runs until lws has finished. */
typedef struct teardown {
	struct lws_context **pctx;
	int fd;
} teardown;

static void destroy_timer_cb(loop *l, int id, void *arg)
{
	teardown *t = arg;
	lws_context_destroy(*t->pctx);
	loop_stop(l);
}

static void test_lws_destroy_with_open_connection(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	server_stats st = {0};
	struct lws_context *ctx = NULL;
	int port = 0;
	server_start(l, &st, &ctx, &port);

	/* A keep-alive client: one request answered, the connection left open. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	const char *req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	teardown t = {&ctx, fd};
	assert_true(loop_timer_add(l, 100, destroy_timer_cb, &t) > 0);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(st.requests, 1);
	server_finish_destroy(l, &ctx);
	/* The server side is closed: the client reads its response, then EOF. */
	char buf[2048];
	size_t got = 0;
	ssize_t n;
	while ((n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	assert_int_equal(n, 0);
	assert_true(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	close(fd);
	loop_destroy(l);
}

int main(void)
{
	lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lws_serves_on_walcast_loop),
		cmocka_unit_test(test_lws_destroy_with_open_connection),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
