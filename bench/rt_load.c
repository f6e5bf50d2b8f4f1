/*
 * rt_load — the realtime sink's load generator (bench/rt_bench.sh): one process, one thread,
 * epoll over non-blocking sockets. It opens one WebSocket connection per line of a tokens file
 * (HTTP upgrade written by hand, vsn=2.0.0, the token as apikey), joins one channel on each with
 * a postgres_changes binding on public.events filtered to the line's org, waits until every
 * connection has "Subscribed to PostgreSQL", then counts the postgres_changes frames it gets and
 * measures commit -> receipt latency from the row's started_at (written with clock_timestamp()
 * by the load just before its commit, microseconds) and from commit_timestamp (milliseconds).
 *
 *   rt_load --port P --tokens FILE [--clients N] [--ready FILE] [--expect FRAMES]
 *           [--idle S] [--timeout S] [--latency FILE]
 *
 * tokens FILE: lines "ORG_UUID TOKEN", used round-robin for N clients (default: one per line).
 * --ready FILE is created once every client is subscribed. The run ends when --expect frames
 * arrived, when no frame came for --idle s (default 10) after the first, or after --timeout s
 * (default 600). Prints one line of key=value on stdout (frames, bytes, rates, its own CPU,
 * latency percentiles); --latency writes every latency sample in microseconds, one per line.
 * Exit 0, or 1 when a connection failed or was closed.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_UPGRADING, ST_JOINING, ST_SUBSCRIBED };

typedef struct conn {
	int fd;
	int state;
	const char *org;
	const char *token;
	char *in;
	size_t len, cap;
	char *out; /* pending output (request or join) */
	size_t out_len, out_off;
} conn;

typedef struct run {
	int ep;
	conn *c;
	size_t n;
	size_t subscribed;
	uint16_t port;
	uint64_t frames, bytes;
	double first, last;
	int64_t *lat_us;
	size_t lat_n, lat_cap;
	int64_t *lat_ms;
	size_t latm_n, latm_cap;
	int failed;
} run;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "rt_load: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		fprintf(stderr, "rt_load: out of memory\n");
		exit(1);
	}
	return q;
}

/* "2026-12-02T10:00:00.123456+00:00" or "...123Z" -> microseconds since the epoch; -1 if bad. */
static int64_t parse_ts(const char *s)
{
	struct tm tm = {0};
	int used = 0;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
	           &tm.tm_min, &tm.tm_sec, &used) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	int64_t us = (int64_t)timegm(&tm) * 1000000;
	const char *p = s + used;
	if (*p == '.') {
		int64_t scale = 100000;
		for (p++; *p >= '0' && *p <= '9'; p++) {
			us += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == '+' || *p == '-') { /* offset hh:mm */
		int hh = 0, mm = 0;
		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) >= 1) {
			int64_t off = ((int64_t)hh * 3600 + mm * 60) * 1000000;
			us += *p == '+' ? -off : off;
		}
	}
	return us;
}

static void push(int64_t **a, size_t *n, size_t *cap, int64_t v)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 4096;
		*a = xrealloc(*a, *cap * sizeof **a);
	}
	(*a)[(*n)++] = v;
}

/* Queues a masked client text frame. */
static void queue_frame(conn *c, const char *text, size_t n)
{
	size_t need = c->out_len + n + 14;
	c->out = xrealloc(c->out, need);
	unsigned char *h = (unsigned char *)c->out + c->out_len;
	size_t k = 0;
	h[k++] = 0x81;
	if (n < 126) {
		h[k++] = (unsigned char)(0x80 | n);
	} else {
		h[k++] = 0x80 | 126;
		h[k++] = (unsigned char)(n >> 8);
		h[k++] = (unsigned char)n;
	}
	unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
	memcpy(h + k, mask, 4);
	k += 4;
	for (size_t i = 0; i < n; i++)
		h[k + i] = (unsigned char)text[i] ^ mask[i % 4];
	c->out_len += k + n;
}

static void flush_out(run *r, conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN)
				break;
			r->failed++;
			fprintf(stderr, "rt_load: send: %s\n", strerror(errno));
			return;
		}
		c->out_off += (size_t)w;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
	} else {
		ev.events |= EPOLLOUT;
	}
	epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_text(run *r, conn *c, const char *p, size_t n)
{
	if (c->state == ST_JOINING) {
		if (memmem(p, n, "Subscribed to PostgreSQL", 24)) {
			c->state = ST_SUBSCRIBED;
			r->subscribed++;
		} else if (memmem(p, n, "\"status\":\"error\"", 16)) {
			fprintf(stderr, "rt_load: join refused: %.*s\n", (int)(n > 300 ? 300 : n), p);
			r->failed++;
		}
		return;
	}
	if (!memmem(p, n, "\"postgres_changes\",{\"ids\"", 25))
		return;
	double t = now_s();
	if (!r->frames)
		r->first = t;
	r->last = t;
	r->frames++;
	r->bytes += n;
	int64_t t_us = (int64_t)(t * 1e6);
	const char *s = memmem(p, n, "\"started_at\":\"", 14);
	if (s) {
		int64_t v = parse_ts(s + 14);
		if (v > 0)
			push(&r->lat_us, &r->lat_n, &r->lat_cap, t_us - v);
	}
	s = memmem(p, n, "\"commit_timestamp\":\"", 20);
	if (s) {
		int64_t v = parse_ts(s + 20);
		if (v > 0)
			push(&r->lat_ms, &r->latm_n, &r->latm_cap, t_us - v);
	}
}

/* Consumes the complete frames in c->in. */
static void parse_frames(run *r, conn *c)
{
	size_t off = 0;
	for (;;) {
		unsigned char *b = (unsigned char *)c->in + off;
		size_t avail = c->len - off;
		if (avail < 2)
			break;
		size_t hl = 2;
		uint64_t n = b[1] & 0x7f;
		if (n == 126) {
			if (avail < 4)
				break;
			n = (uint64_t)b[2] << 8 | b[3];
			hl = 4;
		} else if (n == 127) {
			if (avail < 10)
				break;
			n = 0;
			for (int i = 0; i < 8; i++)
				n = n << 8 | b[2 + i];
			hl = 10;
		}
		if (avail < hl + n)
			break;
		int op = b[0] & 0x0f;
		if (op == 1 || op == 2)
			on_text(r, c, (const char *)b + hl, (size_t)n);
		else if (op == 8) {
			fprintf(stderr, "rt_load: connection closed by the server (%u)\n",
			        n >= 2 ? (unsigned)(b[hl] << 8 | b[hl + 1]) : 0u);
			r->failed++;
		} else if (op == 9) {
			/* pong: answered as a text-less control frame */
			unsigned char pong[2] = {0x8a, 0x80};
			c->out = xrealloc(c->out, c->out_len + 6);
			memcpy(c->out + c->out_len, pong, 2);
			memset(c->out + c->out_len + 2, 0, 4);
			c->out_len += 6;
			flush_out(r, c);
		}
		off += hl + n;
	}
	memmove(c->in, c->in + off, c->len - off);
	c->len -= off;
}

static void on_readable(run *r, conn *c)
{
	for (;;) {
		if (c->cap - c->len < 8192) {
			c->cap = c->cap * 2 > c->len + 8192 ? c->cap * 2 : c->len + 8192;
			c->in = xrealloc(c->in, c->cap);
		}
		ssize_t got = recv(c->fd, c->in + c->len, c->cap - c->len, 0);
		if (got < 0 && errno == EAGAIN)
			return;
		if (got <= 0) {
			fprintf(stderr, "rt_load: connection lost: %s\n", got ? strerror(errno) : "eof");
			r->failed++;
			epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
			return;
		}
		c->len += (size_t)got;
		if (c->state == ST_UPGRADING) {
			char *end = memmem(c->in, c->len, "\r\n\r\n", 4);
			if (!end)
				continue;
			if (c->len < 12 || memcmp(c->in + 9, "101", 3) != 0) {
				fprintf(stderr, "rt_load: handshake refused: %.*s\n", (int)(c->len > 200 ? 200 : c->len), c->in);
				r->failed++;
				return;
			}
			size_t hl = (size_t)(end + 4 - c->in);
			memmove(c->in, c->in + hl, c->len - hl);
			c->len -= hl;
			char join[2048];
			int jn = snprintf(join, sizeof join,
			                  "[\"1\",\"1\",\"realtime:bench\",\"phx_join\",{\"config\":{\"postgres_changes\":"
			                  "[{\"event\":\"*\",\"schema\":\"public\",\"table\":\"events\",\"filter\":\"org_id=eq.%s\"}],"
			                  "\"private\":false},\"access_token\":\"%s\"}]",
			                  c->org, c->token);
			c->state = ST_JOINING;
			queue_frame(c, join, (size_t)jn);
			flush_out(r, c);
		}
		if (c->state >= ST_JOINING)
			parse_frames(r, c);
	}
}

static void start_conn(run *r, conn *c)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(r->port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
		die("connect");
	char req[2048];
	int n = snprintf(req, sizeof req,
	                 "GET /realtime/v1/websocket?apikey=%s&vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
	                 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                 "Sec-WebSocket-Version: 13\r\n\r\n",
	                 c->token, (unsigned)r->port);
	c->out = xrealloc(c->out, (size_t)n);
	memcpy(c->out, req, (size_t)n);
	c->out_len = (size_t)n;
	c->state = ST_UPGRADING;
	struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
	if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl");
}

/* Waits up to timeout_ms for socket events and handles them. */
static void pump(run *r, int timeout_ms)
{
	struct epoll_event evs[512];
	int k = epoll_wait(r->ep, evs, 512, timeout_ms);
	for (int i = 0; i < k; i++) {
		conn *c = evs[i].data.ptr;
		if (evs[i].events & EPOLLOUT)
			flush_out(r, c);
		if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			on_readable(r, c);
	}
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double pct(int64_t *a, size_t n, double p)
{
	if (!n)
		return -1;
	size_t i = (size_t)(p * (double)n);
	return (double)a[i >= n ? n - 1 : i] / 1000.0;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	const char *tokens = NULL, *ready = NULL, *latf = NULL;
	size_t want = 0;
	uint64_t expect = 0;
	double idle = 10, timeout = 600;
	run r = {0};
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--port"))
			r.port = (uint16_t)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--tokens"))
			tokens = argv[i + 1];
		else if (!strcmp(argv[i], "--clients"))
			want = (size_t)strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--ready"))
			ready = argv[i + 1];
		else if (!strcmp(argv[i], "--expect"))
			expect = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--idle"))
			idle = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--timeout"))
			timeout = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--latency"))
			latf = argv[i + 1];
		else {
			fprintf(stderr, "rt_load: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (!tokens || !r.port) {
		fprintf(stderr, "usage: rt_load --port P --tokens FILE [--clients N] [--ready FILE] [--expect FRAMES] "
		                "[--idle S] [--timeout S] [--latency FILE]\n");
		return 2;
	}
	FILE *f = fopen(tokens, "r");
	if (!f)
		die(tokens);
	char **orgs = NULL, **toks = NULL;
	size_t nt = 0;
	char org[128], tok[1024];
	while (fscanf(f, "%127s %1023s", org, tok) == 2) {
		orgs = xrealloc(orgs, (nt + 1) * sizeof *orgs);
		toks = xrealloc(toks, (nt + 1) * sizeof *toks);
		orgs[nt] = strdup(org);
		toks[nt] = strdup(tok);
		nt++;
	}
	fclose(f);
	if (!nt) {
		fprintf(stderr, "rt_load: no tokens in %s\n", tokens);
		return 2;
	}
	r.n = want ? want : nt;
	r.c = calloc(r.n, sizeof *r.c);
	r.ep = epoll_create1(0);
	if (!r.c || r.ep < 0)
		die("setup");
	for (size_t i = 0; i < r.n; i++) {
		r.c[i].org = orgs[i % nt];
		r.c[i].token = toks[i % nt];
		r.c[i].fd = -1;
	}

	/* Connect: at most 200 handshakes in flight. */
	double t0 = now_s(), cpu0 = cpu_s();
	size_t started = 0;
	while (r.subscribed < r.n) {
		while (started < r.n && started - r.subscribed < 200)
			start_conn(&r, &r.c[started++]);
		pump(&r, 200);
		if (r.failed) {
			fprintf(stderr, "rt_load: %d connection(s) failed while subscribing (%zu of %zu subscribed)\n",
			        r.failed, r.subscribed, r.n);
			return 1;
		}
		if (now_s() - t0 > timeout) {
			fprintf(stderr, "rt_load: only %zu of %zu subscribed after %.0f s\n", r.subscribed, r.n, timeout);
			return 1;
		}
	}
	double t_sub = now_s();
	fprintf(stderr, "rt_load: %zu clients subscribed in %.1f s\n", r.n, t_sub - t0);
	if (ready) {
		FILE *rf = fopen(ready, "w");
		if (rf)
			fclose(rf);
	}

	/* Receive. */
	double cpu1 = cpu_s();
	for (;;) {
		pump(&r, 100);
		double t = now_s();
		if (expect && r.frames >= expect)
			break;
		if (r.frames && t - r.last > idle)
			break;
		if (t - t_sub > timeout)
			break;
		if (r.failed)
			break;
	}
	double cpu2 = cpu_s();
	double span = r.frames > 1 ? r.last - r.first : 0;
	qsort(r.lat_us, r.lat_n, sizeof *r.lat_us, cmp64);
	qsort(r.lat_ms, r.latm_n, sizeof *r.lat_ms, cmp64);
	if (latf) {
		FILE *lf = fopen(latf, "w");
		if (lf) {
			for (size_t i = 0; i < r.lat_n; i++)
				fprintf(lf, "%lld\n", (long long)r.lat_us[i]);
			fclose(lf);
		}
	}
	printf("clients=%zu subscribe_s=%.2f subscribe_cpu_s=%.2f frames=%llu bytes=%llu mean_frame=%.0f span_s=%.3f "
	       "rate=%.0f recv_cpu_s=%.2f recv_cpu_pct=%.0f lat_n=%zu p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f "
	       "commit_ts_p50_ms=%.2f commit_ts_p99_ms=%.2f failed=%d\n",
	       r.n, t_sub - t0, cpu1 - cpu0, (unsigned long long)r.frames, (unsigned long long)r.bytes,
	       r.frames ? (double)r.bytes / (double)r.frames : 0.0, span, span > 0 ? (double)r.frames / span : 0.0,
	       cpu2 - cpu1, span > 0 ? (cpu2 - cpu1) * 100 / span : 0.0, r.lat_n, pct(r.lat_us, r.lat_n, .5),
	       pct(r.lat_us, r.lat_n, .9), pct(r.lat_us, r.lat_n, .99), r.lat_n ? (double)r.lat_us[r.lat_n - 1] / 1000 : -1,
	       pct(r.lat_ms, r.latm_n, .5), pct(r.lat_ms, r.latm_n, .99), r.failed);
	return r.failed ? 1 : 0;
}
