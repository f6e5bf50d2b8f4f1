/*
 * rt_baseline — the raw-socket baseline of the realtime benchmark (bench/rt_bench.sh): the
 * physical limit of this machine for the realtime sink's write pattern. It opens N loopback TCP
 * connections; a child process drains the receiving ends (epoll, large reads, nothing parsed);
 * the parent, one thread, writes frames of S bytes round-robin over the N sending ends, K frames
 * per write() (K = 1: one write per frame, as one single-row transaction gives a connection; K =
 * 2: two frames share a write), skipping a connection whose socket buffer is full, for D
 * seconds. Prints frames/s written and the writer's CPU.
 *
 *   rt_baseline --conns N --size S [--per-write K] [--seconds D]
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "rt_baseline: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	long n = 1000, size = 700, per = 1;
	double secs = 5;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--conns"))
			n = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--size"))
			size = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--per-write"))
			per = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			secs = atof(argv[i + 1]);
		else {
			fprintf(stderr, "usage: rt_baseline --conns N --size S [--per-write K] [--seconds D]\n");
			return 2;
		}
	}
	if (n < 1 || size < 1 || per < 1 || secs <= 0) {
		fprintf(stderr, "rt_baseline: --conns, --size, --per-write and --seconds must be positive\n");
		return 2;
	}
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof a;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
		die("listen");
	/* The reader accepts and drains in a child process, so that each process holds N sockets. */
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		int ep = epoll_create1(0);
		if (ep < 0)
			die("epoll_create1");
		for (long i = 0; i < n; i++) {
			int fd = accept(lfd, NULL, NULL);
			if (fd < 0)
				die("accept");
			struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
			if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
				die("epoll_ctl");
		}
		close(lfd);
		static char sink[1 << 18];
		struct epoll_event evs[512];
		for (;;) {
			int k = epoll_wait(ep, evs, 512, -1);
			for (int i = 0; i < k; i++)
				if (read(evs[i].data.fd, sink, sizeof sink) == 0)
					_exit(0);
		}
	}
	close(lfd);
	int *w = calloc((size_t)n, sizeof *w);
	if (!w)
		die("calloc");
	for (long i = 0; i < n; i++) {
		w[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (w[i] < 0 || connect(w[i], (struct sockaddr *)&a, sizeof a) < 0)
			die("connect");
		if (fcntl(w[i], F_SETFL, O_NONBLOCK) < 0)
			die("fcntl");
	}
	size_t blen = (size_t)(size * per);
	char *frame = malloc(blen);
	if (!frame)
		die("malloc");
	memset(frame, 'x', blen);
	unsigned long long frames = 0, writes = 0, skipped = 0;
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	double t0 = now_s(), t = t0;
	while (t - t0 < secs) {
		for (long i = 0; i < n; i++) {
			ssize_t got = write(w[i], frame, blen);
			if (got == (ssize_t)blen) {
				frames += (unsigned long long)per;
				writes++;
			} else if (got < 0 && errno == EAGAIN) {
				skipped++;
			} else if (got < 0) {
				die("write");
			} else { /* a partial write: finish it so that frames stay whole */
				size_t off = (size_t)got;
				while (off < blen) {
					ssize_t more = write(w[i], frame + off, blen - off);
					if (more > 0)
						off += (size_t)more;
				}
				frames += (unsigned long long)per;
				writes++;
			}
		}
		t = now_s();
	}
	getrusage(RUSAGE_SELF, &r1);
	double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
	             (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
	for (long i = 0; i < n; i++)
		close(w[i]);
	kill(child, SIGTERM);
	waitpid(child, NULL, 0);
	printf("conns=%ld size=%ld per_write=%ld seconds=%.2f frames=%llu writes=%llu full_skips=%llu rate=%.0f writer_cpu_pct=%.0f\n",
	       n, size, per, t - t0, frames, writes, skipped, (double)frames / (t - t0), cpu * 100 / (t - t0));
	return 0;
}
