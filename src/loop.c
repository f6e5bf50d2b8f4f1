/* loop — epoll + timer array + signalfd. See loop.h for the design. */
#include "loop.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_TIMERS 64
#define LOOP_MAX_SIGNALS 8

typedef struct loop_watch_entry {
	int fd;
	loop_fd_cb cb;
	void *arg;
	unsigned events;
} loop_watch_entry;

typedef struct loop_timer {
	int id; /* 0 = free */
	int64_t deadline;
	loop_timer_cb cb;
	void *arg;
} loop_timer;

typedef struct loop_sig {
	int signo;
	loop_signal_cb cb;
	void *arg;
} loop_sig;

struct loop {
	int epfd;
	int sigfd;
	sigset_t sigmask;
	loop_watch_entry *watches; /* indexed by fd */
	int nwatches;
	loop_timer timers[LOOP_MAX_TIMERS];
	int next_timer_id;
	loop_sig sigs[LOOP_MAX_SIGNALS];
	int nsigs;
	bool stop;
};

int64_t loop_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

loop *loop_create(void)
{
	loop *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->sigfd = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	sigemptyset(&l->sigmask);
	l->next_timer_id = 1;
	return l;
}

void loop_destroy(loop *l)
{
	if (l == NULL)
		return;
	if (l->sigfd >= 0)
		close(l->sigfd);
	close(l->epfd);
	free(l->watches);
	free(l);
}

static int watch_slot(loop *l, int fd)
{
	if (fd < l->nwatches)
		return 0;
	int n = l->nwatches ? l->nwatches : 64;
	while (n <= fd)
		n *= 2;
	loop_watch_entry *w = realloc(l->watches, (size_t)n * sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	memset(w + l->nwatches, 0, (size_t)(n - l->nwatches) * sizeof(*w));
	l->watches = w;
	l->nwatches = n;
	return 0;
}

int loop_watch(loop *l, int fd, unsigned events, loop_fd_cb cb, void *arg)
{
	if (fd < 0)
		return -EBADF;
	if (events == 0) {
		loop_unwatch(l, fd);
		return 0;
	}
	int rc = watch_slot(l, fd);
	if (rc < 0)
		return rc;
	loop_watch_entry *w = &l->watches[fd];
	struct epoll_event ev = {0};
	ev.events = ((events & LOOP_READ) ? EPOLLIN : 0) | ((events & LOOP_WRITE) ? EPOLLOUT : 0);
	ev.data.fd = fd;
	int op = w->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(l->epfd, op, fd, &ev) < 0) {
		if (op == EPOLL_CTL_MOD && errno == ENOENT)
			op = EPOLL_CTL_ADD;
		else if (op == EPOLL_CTL_ADD && errno == EEXIST)
			op = EPOLL_CTL_MOD;
		else
			return -errno;
		if (epoll_ctl(l->epfd, op, fd, &ev) < 0)
			return -errno;
	}
	w->fd = fd;
	w->cb = cb;
	w->arg = arg;
	w->events = events;
	return 0;
}

void loop_unwatch(loop *l, int fd)
{
	if (fd < 0 || fd >= l->nwatches || l->watches[fd].events == 0)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	memset(&l->watches[fd], 0, sizeof(l->watches[fd]));
}

int loop_timer_add(loop *l, int64_t ms, loop_timer_cb cb, void *arg)
{
	for (int i = 0; i < LOOP_MAX_TIMERS; i++) {
		loop_timer *t = &l->timers[i];
		if (t->id != 0)
			continue;
		t->id = l->next_timer_id++;
		if (l->next_timer_id <= 0)
			l->next_timer_id = 1;
		t->deadline = loop_now_ms() + (ms < 0 ? 0 : ms);
		t->cb = cb;
		t->arg = arg;
		return t->id;
	}
	return -ENOSPC;
}

void loop_timer_cancel(loop *l, int timer_id)
{
	if (timer_id <= 0)
		return;
	for (int i = 0; i < LOOP_MAX_TIMERS; i++)
		if (l->timers[i].id == timer_id)
			l->timers[i].id = 0;
}

static void signals_dispatch(loop *l, int fd, unsigned events, void *arg)
{
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		for (int i = 0; i < l->nsigs; i++)
			if (l->sigs[i].signo == (int)si.ssi_signo)
				l->sigs[i].cb(l, l->sigs[i].signo, l->sigs[i].arg);
	}
}

int loop_signal(loop *l, int signo, loop_signal_cb cb, void *arg)
{
	if (l->nsigs == LOOP_MAX_SIGNALS)
		return -ENOSPC;
	sigaddset(&l->sigmask, signo);
	if (sigprocmask(SIG_BLOCK, &l->sigmask, NULL) < 0)
		return -errno;
	int fd = signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (l->sigfd < 0) {
		l->sigfd = fd;
		int rc = loop_watch(l, fd, LOOP_READ, signals_dispatch, NULL);
		if (rc < 0)
			return rc;
	}
	l->sigs[l->nsigs++] = (loop_sig){signo, cb, arg};
	return 0;
}

/* Milliseconds until the nearest timer, or -1 when none is armed. */
static int next_timeout(const loop *l)
{
	int64_t best = -1;
	int64_t now = loop_now_ms();
	for (int i = 0; i < LOOP_MAX_TIMERS; i++) {
		if (l->timers[i].id == 0)
			continue;
		int64_t d = l->timers[i].deadline - now;
		if (d < 0)
			d = 0;
		if (best < 0 || d < best)
			best = d;
	}
	return best > 60000 ? 60000 : (int)best;
}

static void timers_fire(loop *l)
{
	int64_t now = loop_now_ms();
	for (int i = 0; i < LOOP_MAX_TIMERS && !l->stop; i++) {
		loop_timer *t = &l->timers[i];
		if (t->id == 0 || t->deadline > now)
			continue;
		int id = t->id;
		loop_timer_cb cb = t->cb;
		void *arg = t->arg;
		t->id = 0;
		cb(l, id, arg);
	}
}

int loop_run(loop *l)
{
	struct epoll_event evs[32];
	l->stop = false;
	while (!l->stop) {
		int n = epoll_wait(l->epfd, evs, 32, next_timeout(l));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !l->stop; i++) {
			int fd = evs[i].data.fd;
			if (fd >= l->nwatches || l->watches[fd].events == 0)
				continue; /* unwatched by an earlier callback in this batch */
			unsigned ev = 0;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				ev |= LOOP_READ;
			if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				ev |= LOOP_WRITE;
			loop_watch_entry w = l->watches[fd];
			w.cb(l, fd, ev & (w.events | LOOP_READ), w.arg);
		}
		timers_fire(l);
	}
	return 0;
}

void loop_stop(loop *l)
{
	l->stop = true;
}
