/*
 * test_loop — unit tests for the event loop (src/core/loop.h) on libuv: fd readiness, watch
 * replacement and removal (also of a closed-and-reused fd number), timers in order, cancellation
 * and id reuse, signals as events, loop_stop leaving the rest of an iteration pending,
 * loop_wakeup from another thread, and destroying a loop with everything still armed (the
 * sanitizer build checks that nothing leaks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "loop.h"

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct rec {
	int calls;
	int fd;
	unsigned events;
	int order[16]; /* timer ids or signal numbers in the order seen */
	int norder;
	bool stop;     /* loop_stop in the callback */
	bool drain;    /* read what is readable */
	int unwatch_fd; /* > 0: unwatch and close this fd in the callback */
} rec;

static void stop_timer_cb(loop *l, int id, void *arg)
{
	*(bool *)arg = true;
	loop_stop(l);
}

/* Runs l until something stops it, or for at most ms; returns whether the deadline stopped it. */
static bool run_for(loop *l, int64_t ms)
{
	bool timed_out = false;
	int id = loop_timer_add(l, ms, stop_timer_cb, &timed_out);
	assert_true(id > 0);
	assert_int_equal(loop_run(l), 0);
	loop_timer_cancel(l, id);
	return timed_out;
}

static void fd_cb(loop *l, int fd, unsigned events, void *arg)
{
	rec *r = arg;
	r->calls++;
	r->fd = fd;
	r->events = events;
	if (r->drain) {
		char b[256];
		while (read(fd, b, sizeof(b)) > 0) {
		}
	}
	if (r->unwatch_fd > 0) {
		loop_unwatch(l, r->unwatch_fd);
		close(r->unwatch_fd);
		r->unwatch_fd = 0;
	}
	if (r->stop)
		loop_stop(l);
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void put(int fd)
{
	assert_int_equal(write(fd, "x", 1), 1);
}

/* ---- fd watches ---------------------------------------------------------------------- */

static void test_fd_readiness(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int sv[2];
	pair(sv);
	rec r = {.stop = true, .drain = true};
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &r), 0);
	assert_true(run_for(l, 50)); /* nothing to read: only the deadline stops it */
	assert_int_equal(r.calls, 0);

	put(sv[1]);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.fd, sv[0]);
	assert_int_equal(r.events, LOOP_READ);

	/* Writable at once; READ is not reported while nothing is readable. */
	rec w = {.stop = true};
	assert_int_equal(loop_watch(l, sv[1], LOOP_WRITE, fd_cb, &w), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.events, LOOP_WRITE);

	/* Peer closed: the reader sees LOOP_READ (and then EOF). */
	loop_unwatch(l, sv[1]);
	close(sv[1]);
	r.calls = 0;
	assert_false(run_for(l, 5000));
	assert_int_equal(r.calls, 1);
	assert_true(r.events & LOOP_READ);
	char c;
	assert_int_equal(read(sv[0], &c, 1), 0);

	loop_unwatch(l, sv[0]);
	close(sv[0]);
	loop_destroy(l);
}

static void test_bad_arguments(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	rec r = {0};
	assert_int_equal(loop_watch(l, -1, LOOP_READ, fd_cb, &r), -EBADF);
	int sv[2];
	pair(sv);
	assert_int_equal(loop_watch(l, sv[0], 4, fd_cb, &r), -EINVAL);
	assert_int_equal(loop_watch(l, 1000000, LOOP_READ, fd_cb, &r), -EBADF);
	/* A regular file cannot be polled: a clear error, as epoll gave. */
	FILE *f = tmpfile();
	assert_non_null(f);
	assert_int_equal(loop_watch(l, fileno(f), LOOP_READ, fd_cb, &r), -EPERM);
	fclose(f);
	/* events 0 removes; removing what is not watched is a no-op. */
	assert_int_equal(loop_watch(l, sv[0], 0, fd_cb, &r), 0);
	loop_unwatch(l, sv[0]);
	loop_unwatch(l, -5);
	loop_unwatch(l, 99999);
	close(sv[0]);
	close(sv[1]);
	loop_timer_cancel(l, 0);
	loop_timer_cancel(l, -3);
	loop_timer_cancel(l, 12345);
	assert_true(loop_signal(l, 0, NULL, NULL) < 0);
	assert_true(loop_signal(l, SIGKILL, NULL, NULL) < 0);
	loop_destroy(l);
	loop_destroy(NULL);
}

static void test_watch_keeps_blocking_flag(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	rec r = {.stop = true, .drain = false};
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &r), 0);
	assert_false(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	put(sv[1]);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.calls, 1);
	loop_unwatch(l, sv[0]);
	/* A non-blocking fd stays non-blocking. */
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(loop_watch(l, sv[1], LOOP_READ, fd_cb, &r), 0);
	assert_true(fcntl(sv[1], F_GETFL) & O_NONBLOCK);
	loop_unwatch(l, sv[1]);
	close(sv[0]);
	close(sv[1]);
	loop_destroy(l);
}

static void test_watch_replace_and_remove(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int sv[2];
	pair(sv);
	rec first = {.stop = true, .drain = true}, second = {.stop = true, .drain = true};

	/* Replacing the callback: only the new one runs. */
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &first), 0);
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &second), 0);
	put(sv[1]);
	assert_false(run_for(l, 5000));
	assert_int_equal(first.calls, 0);
	assert_int_equal(second.calls, 1);

	/* Replacing the events: READ|WRITE fires at once as writable, READ alone does not. */
	rec rw = {.stop = true};
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ | LOOP_WRITE, fd_cb, &rw), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(rw.calls, 1);
	assert_int_equal(rw.events, LOOP_WRITE);
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &rw), 0);
	assert_true(run_for(l, 50));
	assert_int_equal(rw.calls, 1);

	/* Removed: data arrives, nobody is called. */
	loop_unwatch(l, sv[0]);
	put(sv[1]);
	assert_true(run_for(l, 50));
	assert_int_equal(rw.calls, 1);
	/* ... and watched again, the pending data is reported. */
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &rw), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(rw.calls, 2);
	assert_int_equal(rw.events, LOOP_READ);

	/* Unwatch, close, and a new socket that gets the same number is watched afresh. */
	int old = sv[0];
	loop_unwatch(l, sv[0]);
	close(sv[0]);
	close(sv[1]);
	pair(sv);
	assert_int_equal(sv[0], old);
	rec again = {.stop = true, .drain = true};
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &again), 0);
	put(sv[1]);
	assert_false(run_for(l, 5000));
	assert_int_equal(again.calls, 1);

	/* Closed without unwatching (libpq reconnecting inside PQconnectPoll does that), the number
	 * reused: replacing the watch registers the new socket. */
	old = sv[0];
	close(sv[0]);
	close(sv[1]);
	pair(sv);
	assert_int_equal(sv[0], old);
	rec reused = {.stop = true, .drain = true};
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &reused), 0);
	put(sv[1]);
	assert_false(run_for(l, 5000));
	assert_int_equal(reused.calls, 1);
	assert_int_equal(again.calls, 1);

	loop_unwatch(l, sv[0]);
	close(sv[0]);
	close(sv[1]);
	loop_destroy(l);
}

/* Two fds ready in the same iteration; whichever callback runs first unwatches and closes the
 * other, which then must not be called. */
static void test_unwatch_other_in_same_batch(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int a[2], b[2];
	pair(a);
	pair(b);
	rec ra = {.drain = true, .unwatch_fd = b[0]}, rb = {.drain = true, .unwatch_fd = a[0]};
	assert_int_equal(loop_watch(l, a[0], LOOP_READ, fd_cb, &ra), 0);
	assert_int_equal(loop_watch(l, b[0], LOOP_READ, fd_cb, &rb), 0);
	put(a[1]);
	put(b[1]);
	assert_true(run_for(l, 100));
	assert_int_equal(ra.calls + rb.calls, 1);
	loop_unwatch(l, ra.calls ? a[0] : b[0]);
	close(ra.calls ? a[0] : b[0]);
	close(a[1]);
	close(b[1]);
	loop_destroy(l);
}

/* An fd error (a refused non-blocking connect) is reported with LOOP_READ|LOOP_WRITE, and keeps
 * being reported until the callback removes the watch. */
typedef struct err_rec {
	int calls;
	unsigned events;
	int so_error;
} err_rec;

static void err_cb(loop *l, int fd, unsigned events, void *arg)
{
	err_rec *e = arg;
	e->calls++;
	e->events = events;
	if (e->calls == 2) {
		socklen_t len = sizeof(e->so_error);
		assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &e->so_error, &len), 0);
		loop_unwatch(l, fd);
		loop_stop(l);
	}
}

static void test_fd_error(void **state)
{
	/* A port nobody listens on: bind, read the port, close. */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	close(s);

	loop *l = loop_create();
	assert_non_null(l);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(c >= 0);
	int rc = connect(c, (struct sockaddr *)&sa, sizeof(sa));
	assert_true(rc == 0 || errno == EINPROGRESS || errno == ECONNREFUSED);
	err_rec e = {0};
	assert_int_equal(loop_watch(l, c, LOOP_WRITE, err_cb, &e), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(e.calls, 2);
	assert_true(e.events & LOOP_WRITE);
	assert_true(e.events & LOOP_READ);
	assert_int_equal(e.so_error, ECONNREFUSED);
	close(c);
	loop_destroy(l);
}

/* ---- timers -------------------------------------------------------------------------- */

static void order_cb(loop *l, int id, void *arg)
{
	rec *r = arg;
	r->calls++;
	if (r->norder < 16)
		r->order[r->norder++] = id;
	if (r->stop && r->calls == r->fd) /* fd doubles as "stop after this many" */
		loop_stop(l);
}

static void test_timers_in_order(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	rec r = {.stop = true, .fd = 4};
	int t30 = loop_timer_add(l, 30, order_cb, &r);
	int t10a = loop_timer_add(l, 10, order_cb, &r);
	int t20 = loop_timer_add(l, 20, order_cb, &r);
	int t10b = loop_timer_add(l, 10, order_cb, &r);
	int tcancel = loop_timer_add(l, 15, order_cb, &r);
	assert_true(t30 > 0 && t10a > 0 && t20 > 0 && t10b > 0 && tcancel > 0);
	assert_true(t30 != t10a && t10a != t20 && t20 != t10b && t10b != tcancel);
	loop_timer_cancel(l, tcancel);
	int64_t t0 = loop_now_ms();
	assert_false(run_for(l, 5000));
	assert_true(loop_now_ms() - t0 >= 29);
	assert_int_equal(r.norder, 4);
	assert_int_equal(r.order[0], t10a);
	assert_int_equal(r.order[1], t10b);
	assert_int_equal(r.order[2], t20);
	assert_int_equal(r.order[3], t30);
	/* The cancelled one never fires. */
	assert_true(run_for(l, 40));
	assert_int_equal(r.calls, 4);
	loop_destroy(l);
}

/* A fired timer's id stays dead: cancelling it does not cancel the timer that reuses its
 * storage. */
static void test_timer_ids_of_fired_ignored(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	rec r = {.stop = true, .fd = 1};
	int a = loop_timer_add(l, 0, order_cb, &r);
	assert_true(a > 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(r.calls, 1);
	int b = loop_timer_add(l, 5, order_cb, &r);
	assert_true(b > 0 && b != a);
	loop_timer_cancel(l, a);
	loop_timer_cancel(l, a);
	r.calls = 0;
	assert_false(run_for(l, 5000));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.order[1], b);
	/* A cancelled id cancelled again is ignored too, and does not touch a newer timer. */
	int c = loop_timer_add(l, 5, order_cb, &r);
	loop_timer_cancel(l, c);
	int d = loop_timer_add(l, 5, order_cb, &r);
	loop_timer_cancel(l, c);
	r.calls = 0;
	assert_false(run_for(l, 5000));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.order[2], d);
	loop_destroy(l);
}

/* "ms from now" even when the loop has not run for a while (libuv caches its clock). */
static void test_timer_measured_from_add(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	struct timespec ts = {0, 80 * 1000000};
	nanosleep(&ts, NULL);
	rec r = {.stop = true, .fd = 1};
	int64_t t0 = loop_now_ms();
	int id = loop_timer_add(l, 50, order_cb, &r);
	assert_true(id > 0);
	assert_int_equal(loop_run(l), 0);
	assert_true(loop_now_ms() - t0 >= 49);
	loop_destroy(l);
}

/* A timer callback that keeps adding 0 ms timers does not starve the fds. */
typedef struct spin {
	int ticks;
	int fd_calls;
} spin;

static void spin_timer_cb(loop *l, int id, void *arg)
{
	spin *s = arg;
	s->ticks++;
	assert_true(loop_timer_add(l, 0, spin_timer_cb, s) > 0);
}

static void spin_fd_cb(loop *l, int fd, unsigned events, void *arg)
{
	((spin *)arg)->fd_calls++;
	loop_stop(l);
}

static void test_zero_timers_do_not_starve_fds(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int sv[2];
	pair(sv);
	spin s = {0};
	assert_true(loop_timer_add(l, 0, spin_timer_cb, &s) > 0);
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, spin_fd_cb, &s), 0);
	put(sv[1]);
	assert_false(run_for(l, 5000));
	assert_int_equal(s.fd_calls, 1);
	loop_unwatch(l, sv[0]);
	close(sv[0]);
	close(sv[1]);
	loop_destroy(l); /* with a timer still armed */
}

/* ---- signals ------------------------------------------------------------------------- */

static void sig_cb(loop *l, int signo, void *arg)
{
	rec *r = arg;
	r->calls++;
	if (r->norder < 16)
		r->order[r->norder++] = signo;
	if (r->stop)
		loop_stop(l);
}

static void test_signals_as_events(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	rec a = {0}, b = {0}, h = {.stop = true};
	assert_int_equal(loop_signal(l, SIGUSR1, sig_cb, &a), 0);
	assert_int_equal(loop_signal(l, SIGUSR1, sig_cb, &b), 0); /* a second registration */
	assert_int_equal(loop_signal(l, SIGHUP, sig_cb, &h), 0);

	assert_int_equal(raise(SIGUSR1), 0); /* the process survives: the handler is libuv's */
	assert_int_equal(a.calls, 0);        /* nothing runs until the loop does */
	assert_true(run_for(l, 50));
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.order[0], SIGUSR1);
	assert_int_equal(b.calls, 1);

	assert_int_equal(raise(SIGHUP), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(h.calls, 1);
	assert_int_equal(h.order[0], SIGHUP);
	assert_int_equal(a.calls, 1);
	loop_destroy(l);
	/* loop_destroy put the default disposition back. */
	struct sigaction sa;
	assert_int_equal(sigaction(SIGUSR1, NULL, &sa), 0);
	assert_true(sa.sa_handler == SIG_DFL);
}

/* ---- loop_stop ----------------------------------------------------------------------- */

typedef struct stopper {
	int calls;
} stopper;

static void stop_fd_cb(loop *l, int fd, unsigned events, void *arg)
{
	((stopper *)arg)->calls++;
	loop_stop(l);
}

static void count_timer_cb(loop *l, int id, void *arg)
{
	(*(int *)arg)++;
}

static void count_wakeup_cb(loop *l, void *arg)
{
	(*(int *)arg)++;
}

/* loop_stop from a callback returns after that callback: three ready fds take three runs. */
static void test_stop_from_fd_callback(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int p[3][2];
	stopper s = {0};
	for (int i = 0; i < 3; i++) {
		pair(p[i]);
		put(p[i][1]);
		assert_int_equal(loop_watch(l, p[i][0], LOOP_READ, stop_fd_cb, &s), 0);
	}
	for (int run = 1; run <= 3; run++) {
		assert_int_equal(loop_run(l), 0);
		assert_int_equal(s.calls, run); /* the fds stay readable: nobody reads them */
	}
	for (int i = 0; i < 3; i++)
		loop_unwatch(l, p[i][0]);
	assert_true(run_for(l, 20));
	assert_int_equal(s.calls, 3);

	/* loop_stop outside loop_run is ignored (as before): the next run waits for its deadline. */
	loop_stop(l);
	assert_true(run_for(l, 30));
	for (int i = 0; i < 3; i++) {
		close(p[i][0]);
		close(p[i][1]);
	}
	loop_destroy(l);
}

typedef struct held {
	int timers;
	bool raise_and_wake;
} held;

/* Stops the loop; the first one also raises a signal and wakes the loop, which libuv then
 * reports later in the same iteration. */
static void stopping_timer_cb(loop *l, int id, void *arg)
{
	held *h = arg;
	h->timers++;
	if (h->raise_and_wake) {
		h->raise_and_wake = false;
		assert_int_equal(raise(SIGUSR2), 0);
		loop_wakeup(l);
	}
	loop_stop(l);
}

/* A due timer, a signal and a wakeup that come after loop_stop in the same iteration are held
 * for the next loop_run, not run and not lost. */
static void test_stop_holds_timers_signals_wakeups(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	held h = {.raise_and_wake = true};
	rec sig = {0};
	int wakeups = 0;
	assert_int_equal(loop_signal(l, SIGUSR2, sig_cb, &sig), 0);
	loop_on_wakeup(l, count_wakeup_cb, &wakeups);
	assert_true(loop_timer_add(l, 0, stopping_timer_cb, &h) > 0);
	assert_true(loop_timer_add(l, 0, stopping_timer_cb, &h) > 0);

	assert_int_equal(loop_run(l), 0);
	assert_int_equal(h.timers, 1);
	assert_int_equal(sig.calls, 0);
	assert_int_equal(wakeups, 0);

	assert_int_equal(loop_run(l), 0); /* the second timer stops this run */
	assert_int_equal(h.timers, 2);
	assert_true(run_for(l, 30));
	assert_int_equal(h.timers, 2);
	assert_int_equal(sig.calls, 1);
	assert_int_equal(sig.order[0], SIGUSR2);
	assert_int_equal(wakeups, 1);
	loop_destroy(l);
}

static void nested_cb(loop *l, int id, void *arg)
{
	*(int *)arg = loop_run(l);
	loop_stop(l);
}

static void test_run_not_reentrant(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int rc = 0;
	assert_true(loop_timer_add(l, 0, nested_cb, &rc) > 0);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(rc, -EBUSY);
	loop_destroy(l);
}

/* ---- wakeup -------------------------------------------------------------------------- */

typedef struct waker {
	loop *l;
	int n;
} waker;

static void *waker_main(void *arg)
{
	waker *w = arg;
	struct timespec ts = {0, 20 * 1000000};
	nanosleep(&ts, NULL);
	for (int i = 0; i < w->n; i++)
		loop_wakeup(w->l);
	return NULL;
}

static void stop_wakeup_cb(loop *l, void *arg)
{
	(*(int *)arg)++;
	loop_stop(l);
}

static void test_wakeup(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int calls = 0;
	/* Without a callback a wakeup is harmless. */
	loop_wakeup(l);
	assert_true(run_for(l, 20));
	loop_on_wakeup(l, stop_wakeup_cb, &calls);
	/* Several wakeups before the loop runs coalesce into one call. */
	loop_wakeup(l);
	loop_wakeup(l);
	loop_wakeup(l);
	assert_false(run_for(l, 5000));
	assert_int_equal(calls, 1);
	assert_true(run_for(l, 30));
	assert_int_equal(calls, 1);
	/* From another thread, while the loop waits. */
	waker w = {l, 100};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, waker_main, &w), 0);
	assert_false(run_for(l, 5000));
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(calls >= 2);
	loop_destroy(l);
}

/* ---- destroy ------------------------------------------------------------------------- */

/* Everything armed, some of it half-closed: loop_destroy frees it all (ASan's leak check in the
 * sanitizer build), including without ever running. */
static void test_destroy_with_everything_armed(void **state)
{
	for (int ran = 0; ran < 2; ran++) {
		loop *l = loop_create();
		assert_non_null(l);
		int sv[4][2];
		rec r = {0};
		for (int i = 0; i < 4; i++) {
			pair(sv[i]);
			assert_int_equal(loop_watch(l, sv[i][0], LOOP_READ | LOOP_WRITE, fd_cb, &r), 0);
		}
		loop_unwatch(l, sv[3][0]); /* closing, its close callback not yet run */
		int fired = 0;
		for (int i = 0; i < 10; i++)
			assert_true(loop_timer_add(l, 100000 + i, count_timer_cb, &fired) > 0);
		int gone = loop_timer_add(l, 100, count_timer_cb, &fired);
		loop_timer_cancel(l, gone); /* on the free list */
		assert_int_equal(loop_signal(l, SIGUSR1, sig_cb, &r), 0);
		int wakeups = 0;
		loop_on_wakeup(l, count_wakeup_cb, &wakeups);
		loop_wakeup(l);
		if (ran) {
			r.stop = true;
			assert_int_equal(loop_run(l), 0);
		}
		assert_non_null(loop_uv(l));
		loop_destroy(l);
		for (int i = 0; i < 4; i++) {
			/* The fds are the caller's: still open, and usable. */
			assert_int_equal(write(sv[i][1], "x", 1), 1);
			close(sv[i][0]);
			close(sv[i][1]);
		}
		assert_int_equal(fired, 0);
	}
}

static void foreign_poll_cb(uv_poll_t *h, int status, int events)
{
}

/* A libuv handle of another library left open: loop_destroy refuses to free the loop under it. */
static void test_destroy_with_foreign_handle_open(void **state)
{
	loop *l = loop_create();
	assert_non_null(l);
	int sv[2];
	pair(sv);
	rec r = {0};
	assert_int_equal(loop_watch(l, sv[0], LOOP_READ, fd_cb, &r), 0);
	assert_true(loop_timer_add(l, 1000, count_timer_cb, &r.calls) > 0);
	assert_int_equal(loop_foreign_handles(l), 0);
	uv_timer_t t;
	assert_int_equal(uv_timer_init(loop_uv(l), &t), 0);
	assert_int_equal(loop_foreign_handles(l), 1);
	/* Another library's poll on a watched fd is refused, and ours on its fd. */
	uv_poll_t p;
	assert_int_equal(uv_poll_init(loop_uv(l), &p, sv[0]), UV_EEXIST);
	assert_int_equal(uv_poll_init(loop_uv(l), &p, sv[1]), 0);
	assert_int_equal(uv_poll_start(&p, UV_READABLE, foreign_poll_cb), 0);
	assert_int_equal(loop_watch(l, sv[1], LOOP_READ, fd_cb, &r), -EEXIST);
	assert_int_equal(loop_foreign_handles(l), 2);
	uv_close((uv_handle_t *)&p, NULL);
	assert_int_equal(loop_foreign_handles(l), 2); /* closing: its callback has not run */
	assert_int_equal(uv_run(loop_uv(l), UV_RUN_NOWAIT), 1);
	assert_int_equal(loop_foreign_handles(l), 1);
	loop_unwatch(l, sv[0]);
	close(sv[0]);
	close(sv[1]);
	uv_loop_t *uv = loop_uv(l);
	loop_destroy(l); /* logs loop.destroy_busy and leaves the loop allocated */
	/* The handle is still usable; once it is closed the loop can be closed by its owner. */
	uv_close((uv_handle_t *)&t, NULL);
	assert_int_equal(uv_run(uv, UV_RUN_NOWAIT), 0);
	assert_int_equal(uv_loop_close(uv), 0);
	free(l); /* what loop_destroy left: uv is its first member */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_readiness),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_watch_keeps_blocking_flag),
		cmocka_unit_test(test_watch_replace_and_remove),
		cmocka_unit_test(test_unwatch_other_in_same_batch),
		cmocka_unit_test(test_fd_error),
		cmocka_unit_test(test_timers_in_order),
		cmocka_unit_test(test_timer_ids_of_fired_ignored),
		cmocka_unit_test(test_timer_measured_from_add),
		cmocka_unit_test(test_zero_timers_do_not_starve_fds),
		cmocka_unit_test(test_signals_as_events),
		cmocka_unit_test(test_stop_from_fd_callback),
		cmocka_unit_test(test_stop_holds_timers_signals_wakeups),
		cmocka_unit_test(test_run_not_reentrant),
		cmocka_unit_test(test_wakeup),
		cmocka_unit_test(test_destroy_with_everything_armed),
		cmocka_unit_test(test_destroy_with_foreign_handle_open),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
