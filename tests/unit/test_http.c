/*
 * test_http — the daemon's HTTP listener (plugins/http/http.h) on a real loop: bound to
 * 127.0.0.1 port 0, a fake status provider, a real metrics registry with the pipeline's metrics
 * (src/pipeline/pipeline_metrics.h) fed by a fake pipeline status. A plain socket on the same
 * loop fetches /healthz, /readyz (ready, and not ready for each reason), /metrics (checked by
 * `promtool check metrics`, Debian's prometheus package), a 404, a 405, HEAD, and keep-alive;
 * an extra lws protocol with a mount point gets its own requests; [http] static_dir serves files
 * (types, HEAD, traversal 404). Teardown is checked to leave
 * no libuv handle of lws behind (the sanitizer build checks for leaks).
 *
 * Another mode of the same binary, for tests/integration/slot_status.sh (it needs PostgreSQL):
 *   test_http slot CONNINFO SLOT POLLS   runs the slot status poller (src/stream/slot_status.h)
 *                                        every 100 ms on a loop until POLLS polls have completed
 *                                        (or, with POLLS 0, for one second), then prints the
 *                                        rendered registry; exit 1 on a timeout (10 s).
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
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "http.h"
#include "test_files.h"
#include "loop.h"
#include "metrics.h"
#include "pipeline_metrics.h"
#include "slot_status.h"

/* ---- fakes ------------------------------------------------------------------------------ */

typedef struct fake {
	http_readiness ready;
	http_sink_health sinks[2];
	pipeline_status st;
	int readiness_calls;
} fake;

static void fake_readiness(void *arg, http_readiness *out)
{
	fake *f = arg;
	f->readiness_calls++;
	*out = f->ready;
	out->sinks = f->sinks;
	out->nsinks = 2;
}

static void fake_status(void *arg, pipeline_status *out)
{
	*out = ((fake *)arg)->st;
}

/* ---- a plain HTTP client on the loop (as test_lws_uv) ------------------------------------ */

typedef struct client {
	const char *request;
	size_t sent;
	char *response;
	size_t got, cap;
	bool eof;
	int error;
	size_t stop_at; /* stop after this many bytes (keep-alive) instead of EOF; 0: EOF */
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
		if (c->cap - c->got < 4096) {
			c->cap = c->cap * 2 + 8192;
			c->response = realloc(c->response, c->cap);
			assert_non_null(c->response);
		}
		ssize_t n = recv(fd, c->response + c->got, c->cap - 1 - c->got, 0);
		if (n > 0) {
			c->got += (size_t)n;
			c->response[c->got] = '\0';
			if (c->stop_at && c->got >= c->stop_at)
				loop_stop(l);
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

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	assert_true(rc == 0 || errno == EINPROGRESS);
	return fd;
}

/* Sends request on fd and runs the loop until the server closes (or stop_at bytes came). */
static void exchange(loop *l, int fd, const char *request, client *c, size_t stop_at)
{
	free(c->response);
	memset(c, 0, sizeof(*c));
	c->request = request;
	c->stop_at = stop_at;
	assert_int_equal(loop_watch(l, fd, LOOP_WRITE, client_cb, c), 0);
	bool timed_out = false;
	int t = loop_timer_add(l, 5000, deadline_cb, &timed_out);
	assert_true(t > 0);
	assert_int_equal(loop_run(l), 0);
	loop_timer_cancel(l, t);
	loop_unwatch(l, fd);
	assert_false(timed_out);
	assert_int_equal(c->error, 0);
}

/* One request on a fresh connection closed by the server (Connection: close). */
static void http_req(loop *l, int port, const char *method, const char *path, client *c)
{
	char req[512];
	snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method, path);
	int fd = connect_to(port);
	exchange(l, fd, req, c, 0);
	close(fd);
	assert_true(c->eof);
}

static int status_of(const client *c)
{
	int code = 0;
	assert_int_equal(sscanf(c->response, "HTTP/1.1 %d ", &code), 1);
	return code;
}

/* The value of header name (case-insensitive), copied into out. */
static const char *header(const client *c, const char *name, char *out, size_t n)
{
	char key[128];
	snprintf(key, sizeof key, "\r\n%s:", name);
	const char *h = strcasestr(c->response, key);
	const char *end_headers = strstr(c->response, "\r\n\r\n");
	if (h == NULL || h > end_headers)
		return NULL;
	h += strlen(key);
	while (*h == ' ')
		h++;
	size_t len = strcspn(h, "\r");
	if (len >= n)
		len = n - 1;
	memcpy(out, h, len);
	out[len] = '\0';
	return out;
}

static const char *body_of(const client *c)
{
	const char *b = strstr(c->response, "\r\n\r\n");
	assert_non_null(b);
	return b + 4;
}

/* ---- fixture ----------------------------------------------------------------------------- */

/* An extra protocol on a mount, standing for the WebSocket sink of issue 9. */
static int extra_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	if (reason == LWS_CALLBACK_ESTABLISHED) {
		int *hits = lws_get_protocol(wsi)->user;
		*hits += 100; /* a WebSocket connection on the mount */
		return 0;
	}
	if (reason == LWS_CALLBACK_HTTP) {
		int *hits = lws_get_protocol(wsi)->user;
		(*hits)++;
		uint8_t hb[LWS_PRE + 512];
		uint8_t *start = &hb[LWS_PRE], *p = start, *end = &hb[sizeof(hb) - 1];
		if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/plain", 5, &p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return 1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (reason == LWS_CALLBACK_HTTP_WRITEABLE) {
		uint8_t wb[LWS_PRE + 8];
		memcpy(wb + LWS_PRE, "extra", 5);
		if (lws_write(wsi, wb + LWS_PRE, 5, LWS_WRITE_HTTP_FINAL) != 5)
			return 1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

typedef struct fixture {
	loop *l;
	fake f;
	metrics_registry *reg;
	pipeline_metrics *pm;
	http_listener *h;
	int port;
	int extra_hits;
	client c;
} fixture;

static int setup(void **state)
{
	fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	fx->l = loop_create();
	assert_non_null(fx->l);
	fx->f.ready.streaming = true;
	fx->f.sinks[0] = (http_sink_health){"out", true, true};
	fx->f.sinks[1] = (http_sink_health){"feed", false, true};
	fx->reg = metrics_registry_create();
	assert_non_null(fx->reg);
	char merr[METRICS_ERROR_MAX];
	assert_int_equal(pipeline_metrics_create(fx->reg, fake_status, &fx->f, &fx->pm, merr), 0);

	http_params p = {
		.loop = fx->l,
		.listen = "127.0.0.1:0",
		.metrics = fx->reg,
		.status = {fake_readiness, &fx->f},
	};
	char err[HTTP_ERROR_MAX];
	assert_int_equal(http_create(&p, &fx->h, err), 0);
	assert_int_equal(http_port(fx->h), -1);
	struct lws_protocols extra = {"extra", extra_cb, 0, 0, 0, &fx->extra_hits, 0};
	assert_int_equal(http_add_protocol(fx->h, &extra, "/extra", true), 0);
	assert_int_equal(http_add_protocol(fx->h, &extra, "/other", false), -EINVAL); /* same name */
	struct lws_protocols second = {"second", extra_cb, 0, 0, 0, &fx->extra_hits, 0};
	assert_int_equal(http_add_protocol(fx->h, &second, "/extra", false), -EINVAL); /* same mount */
	assert_int_equal(http_add_protocol(fx->h, &second, NULL, true), -EINVAL); /* two defaults */
	assert_int_equal(http_add_protocol(fx->h, &second, "nope", false), -EINVAL);
	int rc = http_start(fx->h, err);
	if (rc)
		fail_msg("http_start: %s", err);
	fx->port = http_port(fx->h);
	assert_true(fx->port > 0);
	assert_int_equal(http_add_protocol(fx->h, &second, NULL, false), -EINVAL); /* after start */
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	http_destroy(fx->h);
	assert_int_equal(loop_foreign_handles(fx->l), 0);
	pipeline_metrics_destroy(fx->pm);
	metrics_registry_destroy(fx->reg);
	free(fx->c.response);
	loop_destroy(fx->l);
	free(fx);
	return 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_healthz(void **state)
{
	fixture *fx = *state;
	char v[256];
	http_req(fx->l, fx->port, "GET", "/healthz", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	assert_string_equal(header(&fx->c, "content-length", v, sizeof v), "2");
	assert_string_equal(header(&fx->c, "content-type", v, sizeof v), "text/plain; charset=utf-8");
	assert_string_equal(header(&fx->c, "cache-control", v, sizeof v), "no-store");
	assert_string_equal(body_of(&fx->c), "ok");
}

static json_t *json_body(const client *c)
{
	json_error_t je;
	json_t *j = json_loads(body_of(c), 0, &je);
	if (j == NULL)
		fail_msg("body is not JSON (%s): %s", je.text, body_of(c));
	return j;
}

/* The reasons array of a 503 /readyz as one comma-joined string. */
static void readyz(fixture *fx, int want_status, const char *want_reasons)
{
	char v[256];
	http_req(fx->l, fx->port, "GET", "/readyz", &fx->c);
	assert_int_equal(status_of(&fx->c), want_status);
	assert_string_equal(header(&fx->c, "content-type", v, sizeof v), "application/json");
	json_t *j = json_body(&fx->c);
	if (want_status == 200) {
		assert_string_equal(json_string_value(json_object_get(j, "status")), "ready");
		assert_null(json_object_get(j, "reasons"));
	} else {
		assert_string_equal(json_string_value(json_object_get(j, "status")), "not ready");
		json_t *r = json_object_get(j, "reasons");
		assert_true(json_is_array(r));
		char got[512] = "";
		for (size_t i = 0; i < json_array_size(r); i++) {
			if (i)
				strcat(got, ",");
			strcat(got, json_string_value(json_array_get(r, i)));
		}
		assert_string_equal(got, want_reasons);
	}
	json_decref(j);
}

static void test_readyz(void **state)
{
	fixture *fx = *state;
	readyz(fx, 200, NULL);
	fx->f.ready.streaming = false;
	readyz(fx, 503, "not streaming");
	fx->f.ready.streaming = true;
	fx->f.sinks[0].healthy = false; /* the durable one */
	readyz(fx, 503, "sink out unhealthy");
	fx->f.sinks[0].healthy = true;
	fx->f.sinks[1].healthy = false; /* a live sink never makes the daemon unready */
	readyz(fx, 200, NULL);
	fx->f.ready.paused = true;
	readyz(fx, 503, "paused");
	fx->f.ready.streaming = false;
	fx->f.sinks[0].healthy = false;
	readyz(fx, 503, "not streaming,paused,sink out unhealthy");
	assert_int_equal(fx->f.readiness_calls, 6);
}

static void test_not_found_and_method(void **state)
{
	fixture *fx = *state;
	char v[256];
	http_req(fx->l, fx->port, "GET", "/nope?x=1", &fx->c);
	assert_int_equal(status_of(&fx->c), 404);
	assert_string_equal(header(&fx->c, "content-type", v, sizeof v), "application/json");
	json_t *j = json_body(&fx->c);
	assert_string_equal(json_string_value(json_object_get(j, "error")), "not found");
	assert_string_equal(json_string_value(json_object_get(j, "path")), "/nope");
	json_decref(j);

	http_req(fx->l, fx->port, "POST", "/metrics", &fx->c);
	assert_int_equal(status_of(&fx->c), 405);
	assert_string_equal(header(&fx->c, "allow", v, sizeof v), "GET, HEAD");
	j = json_body(&fx->c);
	assert_string_equal(json_string_value(json_object_get(j, "error")), "method not allowed");
	json_decref(j);
	http_req(fx->l, fx->port, "DELETE", "/healthz", &fx->c);
	assert_int_equal(status_of(&fx->c), 405);

	/* HEAD: the headers of GET, no body. */
	http_req(fx->l, fx->port, "HEAD", "/healthz", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	assert_string_equal(header(&fx->c, "content-length", v, sizeof v), "2");
	assert_string_equal(body_of(&fx->c), "");

	/* The extra protocol's mount reaches its own callback, not ours. */
	http_req(fx->l, fx->port, "GET", "/extra", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	assert_string_equal(body_of(&fx->c), "extra");
	assert_int_equal(fx->extra_hits, 1);

	/* A WebSocket upgrade on the mount (no Sec-WebSocket-Protocol, as realtime-js sends it)
	 * reaches the extra protocol: what the WebSocket sink of issue 9 relies on. */
	int fd = connect_to(fx->port);
	exchange(fx->l, fd,
	         "GET /extra/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	         "Sec-WebSocket-Version: 13\r\n\r\n", &fx->c, 12);
	while (strstr(fx->c.response, "\r\n\r\n") == NULL) {
		fx->c.stop_at = fx->c.got + 1;
		assert_int_equal(loop_watch(fx->l, fd, LOOP_READ, client_cb, &fx->c), 0);
		assert_int_equal(loop_run(fx->l), 0);
		loop_unwatch(fx->l, fd);
		assert_false(fx->c.eof);
	}
	assert_int_equal(status_of(&fx->c), 101);
	assert_non_null(strcasestr(fx->c.response, "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
	assert_int_equal(fx->extra_hits, 101);
	close(fd);
}

static void test_keep_alive(void **state)
{
	fixture *fx = *state;
	int fd = connect_to(fx->port);
	const char *req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	for (int i = 0; i < 3; i++) {
		/* Wait for the whole response: headers and the 2-byte body. */
		exchange(fx->l, fd, req, &fx->c, 1);
		while (strstr(fx->c.response, "\r\n\r\nok") == NULL) {
			fx->c.stop_at = fx->c.got + 1;
			bool timed_out = false;
			int t = loop_timer_add(fx->l, 5000, deadline_cb, &timed_out);
			assert_int_equal(loop_watch(fx->l, fd, LOOP_READ, client_cb, &fx->c), 0);
			assert_int_equal(loop_run(fx->l), 0);
			loop_timer_cancel(fx->l, t);
			loop_unwatch(fx->l, fd);
			assert_false(timed_out);
			assert_false(fx->c.eof);
		}
		assert_int_equal(status_of(&fx->c), 200);
	}
	close(fd);
}

/* Runs `promtool check metrics` on text; its exit status, output in out (NUL-terminated). */
static int promtool_check(const char *promtool, const char *text, char *out, size_t n)
{
	char path[4096];
	const char *tmp = getenv("TMPDIR");
	snprintf(path, sizeof path, "%s/walcast-http-metrics-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	char cmd[8400];
	snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s' 2>&1", promtool, path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t got = fread(out, 1, n - 1, p);
	out[got] = '\0';
	int status = pclose(p);
	unlink(path);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_metrics(void **state)
{
	fixture *fx = *state;
	char v[256];
	/* Before anything is known: lag series are left out, the rest is there. */
	http_req(fx->l, fx->port, "GET", "/metrics", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	assert_string_equal(header(&fx->c, "content-type", v, sizeof v), METRICS_CONTENT_TYPE);
	assert_null(strstr(body_of(&fx->c), "walcast_replication_lag_bytes"));
	assert_non_null(strstr(body_of(&fx->c), "\nwalcast_streaming 0\n"));

	/* A pipeline that has streamed. */
	struct timeval tv;
	gettimeofday(&tv, NULL);
	fx->f.st.streaming = true;
	fx->f.st.server_wal_end = 0x16B3748 + 1000;
	fx->f.st.confirmed_lsn = 0x16B3748;
	fx->f.st.last_commit_time = ((int64_t)tv.tv_sec - 3) * 1000000 + tv.tv_usec;
	fx->f.st.transactions = 7;
	for (int i = 0; i < 5; i++)
		pipeline_metrics_change(fx->pm, "public", "events", CHANGE_INSERT);
	pipeline_metrics_change(fx->pm, "public", "events", CHANGE_DELETE);
	pipeline_metrics_change(fx->pm, "public", "we\"ird", CHANGE_UPDATE);
	pipeline_metrics_change(fx->pm, "public", "events", CHANGE_MESSAGE); /* not counted */
	pipeline_metrics_decode_error(fx->pm);
	pipeline_metrics_policy_error(fx->pm);
	pipeline_metrics_policy_error(fx->pm);
	pipeline_metrics_sink s;
	char merr[METRICS_ERROR_MAX];
	const unsigned all = PIPELINE_METRICS_POSITION | PIPELINE_METRICS_DELIVERIES | PIPELINE_METRICS_DROPS |
	                     PIPELINE_METRICS_CONNECTIONS;
	assert_int_equal(pipeline_metrics_sink_add(fx->pm, "out", all, &s, merr), 0);
	pipeline_metrics_sink dup;
	assert_int_equal(pipeline_metrics_sink_add(fx->pm, "out", all, &dup, merr), -EINVAL);
	/* A live sink without connections: only what it asked for. */
	pipeline_metrics_sink live;
	assert_int_equal(pipeline_metrics_sink_add(fx->pm, "feed", PIPELINE_METRICS_DELIVERIES, &live, merr), 0);
	assert_null(live.position);
	assert_null(live.drops);
	assert_null(live.connections);
	metrics_counter_inc(live.deliveries);
	metrics_gauge_i_set(s.position, 0x16B3748);
	metrics_counter_add(s.deliveries, 6);
	metrics_counter_inc(s.drops);
	metrics_gauge_i_set(s.connections, 2);

	http_req(fx->l, fx->port, "GET", "/metrics", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	const char *b = body_of(&fx->c);
	assert_int_equal(atoi(header(&fx->c, "content-length", v, sizeof v)), (int)strlen(b));
	const char *want[] = {
		"# HELP walcast_replication_lag_bytes ",
		"# TYPE walcast_replication_lag_bytes gauge\nwalcast_replication_lag_bytes 1000\n",
		"# TYPE walcast_replication_lag_seconds gauge\nwalcast_replication_lag_seconds 3.",
		"\nwalcast_streaming 1\n",
		"\nwalcast_paused 0\n",
		"\nwalcast_confirmed_lsn 23803720\n",
		"# TYPE walcast_transactions_total counter\nwalcast_transactions_total 7\n",
		"walcast_changes_total{table=\"public.events\",action=\"insert\"} 5\n"
		"walcast_changes_total{table=\"public.events\",action=\"delete\"} 1\n"
		"walcast_changes_total{table=\"public.we\\\"ird\",action=\"update\"} 1\n",
		"\nwalcast_decode_errors_total 1\n",
		"\nwalcast_policy_errors_total 2\n",
		"\nwalcast_sink_position_lsn{sink=\"out\"} 23803720\n",
		"\nwalcast_sink_deliveries_total{sink=\"out\"} 6\n",
		"\nwalcast_sink_drops_total{sink=\"out\"} 1\n",
		"\nwalcast_connections{sink=\"out\"} 2\n",
		"\nwalcast_sink_deliveries_total{sink=\"feed\"} 1\n",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strstr(b, want[i]) == NULL)
			fail_msg("/metrics lacks %s in:\n%s", want[i], b);
	assert_null(strstr(b, "action=\"message\""));
	assert_null(strstr(b, "walcast_sink_position_lsn{sink=\"feed\"}"));
	assert_null(strstr(b, "walcast_connections{sink=\"feed\"}"));

	/* promtool validates the whole exposition. */
	const char *promtool = getenv("WALCAST_PROMTOOL");
	if (promtool == NULL || *promtool == '\0' || strstr(promtool, "NOTFOUND"))
		promtool = access("/usr/bin/promtool", X_OK) == 0 ? "/usr/bin/promtool" : NULL;
	if (promtool == NULL)
		fail_msg("promtool not found (Debian package prometheus, deploy/install-deps.sh)");
	char out[4096];
	int rc = promtool_check(promtool, b, out, sizeof out);
	if (rc != 0)
		fail_msg("promtool check metrics failed (%d): %s\n%s", rc, out, b);

	/* Removing the sink removes its series. */
	pipeline_metrics_sink_remove(fx->pm, "out");
	http_req(fx->l, fx->port, "GET", "/metrics", &fx->c);
	assert_null(strstr(body_of(&fx->c), "sink=\"out\""));
}

/* A large /metrics body goes out in several chunks. */
static void test_metrics_large(void **state)
{
	fixture *fx = *state;
	char name[64];
	for (int i = 0; i < 2000; i++) {
		snprintf(name, sizeof name, "table_with_a_long_name_%04d", i);
		pipeline_metrics_change(fx->pm, "public", name, CHANGE_INSERT);
	}
	http_req(fx->l, fx->port, "GET", "/metrics", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	const char *b = body_of(&fx->c);
	assert_true(strlen(b) > 100000);
	assert_non_null(strstr(b, "table=\"public.table_with_a_long_name_1999\",action=\"insert\"} 1\n"));
	char v[64];
	assert_int_equal(atoi(header(&fx->c, "content-length", v, sizeof v)), (int)strlen(b));
}

/* ---- HTTPS ----------------------------------------------------------------------------- */

typedef struct child_wait {
	pid_t pid;
	int status;
	bool done;
} child_wait;

static void child_check_cb(loop *l, int id, void *arg)
{
	child_wait *w = arg;
	if (waitpid(w->pid, &w->status, WNOHANG) == w->pid) {
		w->done = true;
		loop_stop(l);
		return;
	}
	assert_true(loop_timer_add(l, 10, child_check_cb, w) > 0);
}

/* Runs argv (curl) while the loop serves; returns its exit status. */
static int run_while_serving(loop *l, char *const argv[])
{
	child_wait w = {0};
	w.pid = fork();
	assert_true(w.pid >= 0);
	if (w.pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	bool timed_out = false;
	int t = loop_timer_add(l, 10000, deadline_cb, &timed_out);
	assert_true(loop_timer_add(l, 10, child_check_cb, &w) > 0);
	while (!w.done && !timed_out)
		assert_int_equal(loop_run(l), 0);
	loop_timer_cancel(l, t);
	assert_false(timed_out);
	assert_true(WIFEXITED(w.status));
	return WEXITSTATUS(w.status);
}

static void test_https(void **state)
{
	fixture *fx = *state;
	if (access("/usr/bin/openssl", X_OK) != 0 || access("/usr/bin/curl", X_OK) != 0)
		fail_msg("openssl and curl are needed (deploy/install-deps.sh)");
	const char *tmp = getenv("TMPDIR");
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/walcast-http-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	char cert[4200], key[4200], out[4200], cmd[13000];
	snprintf(cert, sizeof cert, "%s/cert.pem", dir);
	snprintf(key, sizeof key, "%s/key.pem", dir);
	snprintf(out, sizeof out, "%s/out", dir);
	snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
	         "-keyout '%s' -out '%s' >/dev/null 2>&1", key, cert);
	assert_int_equal(system(cmd), 0);

	http_params p = {.loop = fx->l, .listen = "127.0.0.1:0", .tls_cert = cert, .tls_key = key,
	                 .metrics = fx->reg, .status = {fake_readiness, &fx->f}};
	char err[HTTP_ERROR_MAX];
	http_listener *h;
	assert_int_equal(http_create(&p, &h, err), 0);
	int rc = http_start(h, err);
	if (rc)
		fail_msg("http_start with TLS: %s", err);
	char url[64];
	snprintf(url, sizeof url, "https://127.0.0.1:%d/healthz", http_port(h));
	char *argv[] = {"/usr/bin/curl", "-sS", "--cacert", cert, "-o", out, url, NULL};
	assert_int_equal(run_while_serving(fx->l, argv), 0);
	FILE *f = fopen(out, "r");
	assert_non_null(f);
	char body[16] = "";
	assert_non_null(fgets(body, sizeof body, f));
	fclose(f);
	assert_string_equal(body, "ok");
	/* Plain HTTP on the TLS port is not served as HTTP. */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", http_port(h));
	char *plain[] = {"/usr/bin/curl", "-s", "-o", "/dev/null", "-m", "3", url, NULL};
	assert_true(run_while_serving(fx->l, plain) != 0);
	http_destroy(h);

	/* A key that does not match is refused at start. */
	http_params bad = p;
	bad.tls_key = cert;
	assert_int_equal(http_create(&bad, &h, err), 0);
	assert_true(http_start(h, err) < 0);
	http_destroy(h);

	unlink(cert);
	unlink(key);
	unlink(out);
	rmdir(dir);
}

/* [http] static_dir through the listener: files served with their type (HEAD without a body),
 * the listener's own paths first, traversal and unserved types 404, other methods 405, a
 * missing directory refused at create. */
static void test_static(void **state)
{
	fixture *fx = *state;
	const char *tmp = getenv("TMPDIR");
	char top[4096], www[4200], cmd[8500], v[256];
	snprintf(top, sizeof top, "%s/walcast-http-static-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(top));
	snprintf(www, sizeof www, "%s/www", top);
	assert_int_equal(mkdir(www, 0700), 0);
	test_put_file(www, "index.html", "<p>demo</p>");
	test_put_file(www, "app.js", "console.log(1)");
	test_put_file(www, "notes.txt", "not served");
	test_put_file(top, "secret.html", "SECRET");

	char err[HTTP_ERROR_MAX];
	http_listener *h;
	http_params p = {.loop = fx->l, .listen = "127.0.0.1:0", .static_dir = www,
	                 .status = {fake_readiness, &fx->f}};
	assert_int_equal(http_create(&p, &h, err), 0);
	assert_int_equal(http_start(h, err), 0);
	int port = http_port(h);

	http_req(fx->l, port, "GET", "/", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	assert_string_equal(header(&fx->c, "content-type", v, sizeof v), "text/html; charset=utf-8");
	assert_string_equal(body_of(&fx->c), "<p>demo</p>");
	http_req(fx->l, port, "HEAD", "/app.js", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
	assert_string_equal(header(&fx->c, "content-type", v, sizeof v), "text/javascript; charset=utf-8");
	assert_string_equal(header(&fx->c, "content-length", v, sizeof v), "14");
	assert_string_equal(body_of(&fx->c), "");
	http_req(fx->l, port, "GET", "/healthz", &fx->c); /* the listener's own paths first */
	assert_int_equal(status_of(&fx->c), 200);
	const char *notfound[] = {"/notes.txt", "/missing.js", "/../secret.html", "/%2e%2e/secret.html",
	                          "/..%2fsecret.html", "/www/../../secret.html"};
	for (size_t i = 0; i < sizeof(notfound) / sizeof(notfound[0]); i++) {
		http_req(fx->l, port, "GET", notfound[i], &fx->c);
		if (status_of(&fx->c) == 200 || strstr(fx->c.response, "SECRET") || strstr(fx->c.response, "not served"))
			fail_msg("%s: served: %s", notfound[i], fx->c.response);
	}
	http_req(fx->l, port, "POST", "/", &fx->c);
	assert_int_equal(status_of(&fx->c), 405);
	http_destroy(h);

	/* not a directory: refused with the key's name */
	char missing[4300];
	snprintf(missing, sizeof missing, "%s/nope", top);
	p.static_dir = missing;
	assert_int_equal(http_create(&p, &h, err), -EINVAL);
	assert_non_null(strstr(err, "http.static_dir"));
	snprintf(missing, sizeof missing, "%s/secret.html", top);
	assert_int_equal(http_create(&p, &h, err), -EINVAL);

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
	assert_int_equal(system(cmd), 0);
}

/* Bad configuration is refused with a reason; a port in use is an error, not a crash. */
static void test_params(void **state)
{
	fixture *fx = *state;
	char err[HTTP_ERROR_MAX];
	http_listener *h = NULL;
	const char *bad[] = {"127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1", "::1:80",
	                     "[::1:80", "host:8x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		http_params p = {.loop = fx->l, .listen = bad[i]};
		assert_int_equal(http_create(&p, &h, err), -EINVAL);
		assert_non_null(strstr(err, "http.listen"));
	}
	http_params p = {.loop = fx->l, .listen = "127.0.0.1:0", .tls_cert = "/x.pem"};
	assert_int_equal(http_create(&p, &h, err), -EINVAL);
	assert_non_null(strstr(err, "tls_key"));

	/* The fixture's port is taken. */
	char listen[64];
	snprintf(listen, sizeof listen, "127.0.0.1:%d", fx->port);
	p = (http_params){.loop = fx->l, .listen = listen};
	assert_int_equal(http_create(&p, &h, err), 0);
	int rc = http_start(h, err);
	assert_true(rc < 0);
	assert_non_null(strstr(err, "cannot listen"));
	assert_int_equal(http_port(h), -1);
	http_destroy(h);

	/* Without a ws_default protocol a WebSocket upgrade is refused (never served as /healthz). */
	p = (http_params){.loop = fx->l, .listen = "127.0.0.1:0"};
	assert_int_equal(http_create(&p, &h, err), 0);
	assert_int_equal(http_start(h, err), 0);
	int fd = connect_to(http_port(h));
	exchange(fx->l, fd,
	         "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	         "Sec-WebSocket-Version: 13\r\n\r\n", &fx->c, 0);
	close(fd);
	assert_true(fx->c.eof);
	assert_true(fx->c.got == 0 || strncmp(fx->c.response, "HTTP/1.1 101", 12) != 0);
	http_destroy(h);

	/* The fixture still answers. */
	http_req(fx->l, fx->port, "GET", "/healthz", &fx->c);
	assert_int_equal(status_of(&fx->c), 200);
}

static void slot_deadline_cb(loop *l, int id, void *arg)
{
	*(bool *)arg = true;
	loop_stop(l);
}

typedef struct slot_wait {
	slot_status *s;
	uint64_t polls;
	int timer;
} slot_wait;

static void slot_check_cb(loop *l, int id, void *arg)
{
	slot_wait *w = arg;
	w->timer = 0;
	if (w->polls && slot_status_polls(w->s) >= w->polls) {
		loop_stop(l);
		return;
	}
	w->timer = loop_timer_add(l, 20, slot_check_cb, w);
}

static int slot_mode(const char *conninfo, const char *slot, const char *polls)
{
	loop *l = loop_create();
	metrics_registry *r = metrics_registry_create();
	slot_status *s = NULL;
	char err[SLOT_STATUS_ERROR_MAX];
	if (l == NULL || r == NULL || slot_status_create(l, r, conninfo, slot, 100, &s, err) < 0) {
		fprintf(stderr, "slot_status_create: %s\n", err);
		return 2;
	}
	slot_wait w = {s, strtoull(polls, NULL, 10), 0};
	bool timed_out = false;
	int t = loop_timer_add(l, w.polls ? 10000 : 1000, slot_deadline_cb, &timed_out);
	w.timer = loop_timer_add(l, 20, slot_check_cb, &w);
	if (t < 0 || w.timer < 0 || loop_run(l) < 0)
		return 2;
	buf out;
	buf_init(&out);
	if (metrics_render(r, &out) < 0)
		return 2;
	fwrite(out.data, 1, out.len, stdout);
	buf_fini(&out);
	slot_status_destroy(s);
	metrics_registry_destroy(r);
	loop_destroy(l);
	return w.polls && timed_out ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "slot") == 0)
		return slot_mode(argv[2], argv[3], argv[4]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readyz, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_found_and_method, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_params, setup, teardown),
		cmocka_unit_test_setup_teardown(test_https, setup, teardown),
		cmocka_unit_test_setup_teardown(test_static, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
