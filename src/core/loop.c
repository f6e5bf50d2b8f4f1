/*
 * loop — walcast's event loop as a thin layer over libuv. See loop.h for the contract.
 *
 * Handles and their memory: libuv keeps a pointer to a handle until the handle's close callback
 * has run, so every handle lives in a heap object of its own that only its close callback frees
 * (fd watches) or that lives until loop_destroy (timers, signals). `closing` counts close
 * callbacks not yet run; loop_destroy runs the loop until it is zero. `handles` counts walcast's
 * own handles (closing ones included), so that loop_foreign_handles can tell the rest apart.
 *
 * Watches: a table indexed by fd points at the watch of that fd. Replacing a watch restarts the
 * same uv_poll_t (uv_poll_start removes the fd from epoll and adds it again, which is what makes
 * a replaced watch of a closed-and-reused fd number work).
 *
 * Timers: one-shot. A fired or cancelled timer goes to a free list and its uv_timer_t is reused by
 * the next loop_timer_add, so arming a timer allocates nothing in the steady state.
 *
 * loop_stop: uv_stop only ends uv_run after the current iteration, so the callbacks here check
 * `stopping` and leave their event pending (a ready fd stays ready: libuv's epoll is
 * level-triggered; a due timer is re-armed; signals and wakeups are re-posted on the async
 * handle), which keeps the old contract "returns after the current callback".
 */
#include "loop.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

typedef struct loop_fdw {
	uv_poll_t poll;
	loop *l;
	int fd;
	unsigned events;
	loop_fd_cb cb;
	void *arg;
} loop_fdw;

typedef struct loop_tmr {
	uv_timer_t timer;
	loop *l;
	int id; /* 0 while on the free list */
	loop_timer_cb cb;
	void *arg;
	struct loop_tmr *prev, *next; /* active list (doubly linked) or free list (next only) */
} loop_tmr;

typedef struct loop_sig {
	uv_signal_t sig;
	loop *l;
	int signo;
	loop_signal_cb cb;
	void *arg;
	unsigned pending; /* deliveries held back by loop_stop */
	struct loop_sig *next;
} loop_sig;

struct loop {
	uv_loop_t uv;
	uv_async_t async;
	loop_fdw **watches; /* indexed by fd */
	int nwatches;
	loop_tmr *timers;     /* armed */
	loop_tmr *free_timers;
	int next_timer_id;
	bool in_timer_cb;
	loop_sig *sigs;
	loop_wakeup_cb wakeup_cb;
	void *wakeup_arg;
	atomic_int wakeup_pending;
	bool running;
	bool stopping;
	int handles; /* walcast's own handles on uv, closing ones included */
	int closing;
};

int64_t loop_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct uv_loop_s *loop_uv(loop *l)
{
	return &l->uv;
}

/* ---- wakeup, and events held back by loop_stop ---- */

static void async_cb(uv_async_t *h)
{
	loop *l = h->data;
	for (loop_sig *s = l->sigs; s != NULL && !l->stopping; s = s->next) {
		while (s->pending > 0 && !l->stopping) {
			s->pending--;
			s->cb(l, s->signo, s->arg);
		}
	}
	if (!l->stopping && atomic_exchange(&l->wakeup_pending, 0) && l->wakeup_cb != NULL)
		l->wakeup_cb(l, l->wakeup_arg);
	if (l->stopping)
		uv_async_send(h); /* what is left runs at the next loop_run */
}

void loop_on_wakeup(loop *l, loop_wakeup_cb cb, void *arg)
{
	l->wakeup_cb = cb;
	l->wakeup_arg = arg;
}

void loop_wakeup(loop *l)
{
	atomic_store(&l->wakeup_pending, 1);
	uv_async_send(&l->async);
}

/* ---- lifecycle ---- */

loop *loop_create(void)
{
	loop *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	int rc = uv_loop_init(&l->uv);
	if (rc < 0)
		goto fail;
	rc = uv_async_init(&l->uv, &l->async, async_cb);
	if (rc < 0) {
		uv_loop_close(&l->uv);
		goto fail;
	}
	l->uv.data = l;
	l->async.data = l;
	l->handles = 1;
	l->next_timer_id = 1;
	atomic_init(&l->wakeup_pending, 0);
	return l;
fail:
	free(l);
	errno = -rc;
	return NULL;
}

static void closed_cb(uv_handle_t *h)
{
	loop *l = h->loop->data;
	l->closing--;
	l->handles--;
	if (h->type != UV_ASYNC)
		free(h->data); /* the loop_fdw / loop_tmr / loop_sig that embeds h */
}

static void handle_close(loop *l, uv_handle_t *h)
{
	l->closing++;
	uv_close(h, closed_cb);
}

static void count_cb(uv_handle_t *h, void *arg)
{
	(*(int *)arg)++;
}

int loop_foreign_handles(loop *l)
{
	int all = 0;
	uv_walk(&l->uv, count_cb, &all); /* libuv's internal handles are not walked */
	return all - l->handles;
}

void loop_destroy(loop *l)
{
	if (l == NULL)
		return;
	for (int fd = 0; fd < l->nwatches; fd++)
		if (l->watches[fd] != NULL)
			handle_close(l, (uv_handle_t *)&l->watches[fd]->poll);
	free(l->watches);
	l->watches = NULL;
	l->nwatches = 0;
	for (loop_tmr *t = l->timers, *next; t != NULL; t = next) {
		next = t->next;
		handle_close(l, (uv_handle_t *)&t->timer);
	}
	for (loop_tmr *t = l->free_timers, *next; t != NULL; t = next) {
		next = t->next;
		handle_close(l, (uv_handle_t *)&t->timer);
	}
	l->timers = l->free_timers = NULL;
	for (loop_sig *s = l->sigs, *next; s != NULL; s = next) {
		next = s->next;
		handle_close(l, (uv_handle_t *)&s->sig);
	}
	l->sigs = NULL;
	handle_close(l, (uv_handle_t *)&l->async);
	l->running = l->stopping = false;
	while (l->closing > 0)
		uv_run(&l->uv, UV_RUN_NOWAIT);
	if (uv_loop_close(&l->uv) == UV_EBUSY) {
		log_error("loop.destroy_busy",
		          "handles=%d: libuv handles opened through loop_uv() are still open; the loop is left "
		          "allocated for them",
		          loop_foreign_handles(l));
		return;
	}
	free(l);
}

/* ---- fd watches ---- */

static unsigned uv_events(unsigned events)
{
	return ((events & LOOP_READ) ? UV_READABLE : 0) | ((events & LOOP_WRITE) ? UV_WRITABLE : 0);
}

static void poll_cb(uv_poll_t *h, int status, int uvev)
{
	loop_fdw *w = h->data;
	loop *l = w->l;
	if (!l->stopping) {
		unsigned ev = 0;
		if (status < 0) /* POLLERR: libuv has stopped the handle */
			ev = LOOP_READ | LOOP_WRITE;
		if (uvev & (UV_READABLE | UV_DISCONNECT))
			ev |= LOOP_READ;
		if (uvev & UV_WRITABLE)
			ev |= LOOP_WRITE;
		w->cb(l, w->fd, ev & (w->events | LOOP_READ), w->arg);
	}
	/* After an error libuv stopped polling; a watch stays until it is removed (as with epoll, the
	 * error is reported again until the callback deals with it). Unless the callback replaced or
	 * removed the watch, poll again. */
	if (status < 0 && w->fd < l->nwatches && l->watches[w->fd] == w && !uv_is_active((uv_handle_t *)h) &&
	    !uv_is_closing((uv_handle_t *)h))
		(void)uv_poll_start(h, (int)uv_events(w->events), poll_cb);
}

static int watch_slot(loop *l, int fd)
{
	if (fd < l->nwatches)
		return 0;
	int n = l->nwatches ? l->nwatches : 64;
	while (n <= fd)
		n *= 2;
	loop_fdw **w = realloc(l->watches, (size_t)n * sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	memset(w + l->nwatches, 0, (size_t)(n - l->nwatches) * sizeof(*w));
	l->watches = w;
	l->nwatches = n;
	return 0;
}

/* A new uv_poll_t for fd. uv_poll_init sets O_NONBLOCK; the fd's flag is put back as it was (a
 * poll handle never reads or writes the fd itself). */
static int watch_new(loop *l, int fd, loop_fdw **out)
{
	loop_fdw *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0) {
		free(w);
		return -errno;
	}
	int rc = uv_poll_init(&l->uv, &w->poll, fd);
	if (rc < 0) {
		free(w);
		return rc;
	}
	l->handles++;
	if (!(flags & O_NONBLOCK))
		(void)fcntl(fd, F_SETFL, flags);
	w->poll.data = w;
	w->l = l;
	w->fd = fd;
	*out = w;
	return 0;
}

int loop_watch(loop *l, int fd, unsigned events, loop_fd_cb cb, void *arg)
{
	if (fd < 0)
		return -EBADF;
	if (events & ~(unsigned)(LOOP_READ | LOOP_WRITE))
		return -EINVAL;
	if (events == 0) {
		loop_unwatch(l, fd);
		return 0;
	}
	int rc = watch_slot(l, fd);
	if (rc < 0)
		return rc;
	loop_fdw *w = l->watches[fd];
	if (w == NULL) {
		rc = watch_new(l, fd, &w);
		if (rc < 0)
			return rc;
		l->watches[fd] = w;
	}
	rc = uv_poll_start(&w->poll, (int)uv_events(events), poll_cb);
	if (rc < 0) {
		loop_unwatch(l, fd);
		return rc;
	}
	w->events = events;
	w->cb = cb;
	w->arg = arg;
	return 0;
}

void loop_unwatch(loop *l, int fd)
{
	if (fd < 0 || fd >= l->nwatches || l->watches[fd] == NULL)
		return;
	loop_fdw *w = l->watches[fd];
	l->watches[fd] = NULL;
	/* uv_close stops the poll at once (the fd leaves epoll before this returns, so closing the fd
	 * next is safe); the memory goes in closed_cb. */
	handle_close(l, (uv_handle_t *)&w->poll);
}

/* ---- timers ---- */

static void timer_unlink(loop *l, loop_tmr *t)
{
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		l->timers = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	t->id = 0;
	t->prev = NULL;
	t->next = l->free_timers;
	l->free_timers = t;
}

static void timer_cb(uv_timer_t *h)
{
	loop_tmr *t = h->data;
	loop *l = t->l;
	if (l->stopping) {
		/* Fire at the next loop_run. 1 ms, not 0: libuv 1.44's uv__run_timers takes a timer due
		 * at the loop's cached time again in the same pass. */
		(void)uv_timer_start(h, timer_cb, 1, 0);
		return;
	}
	int id = t->id;
	loop_timer_cb cb = t->cb;
	void *arg = t->arg;
	timer_unlink(l, t); /* its id is dead before the callback can cancel or re-add */
	bool outer = l->in_timer_cb;
	l->in_timer_cb = true;
	cb(l, id, arg);
	l->in_timer_cb = outer;
}

int loop_timer_add(loop *l, int64_t ms, loop_timer_cb cb, void *arg)
{
	loop_tmr *t = l->free_timers;
	if (t != NULL) {
		l->free_timers = t->next;
	} else {
		t = calloc(1, sizeof(*t));
		if (t == NULL)
			return -ENOMEM;
		int rc = uv_timer_init(&l->uv, &t->timer);
		if (rc < 0) {
			free(t);
			return rc;
		}
		l->handles++;
		t->timer.data = t;
		t->l = l;
	}
	if (ms < 0)
		ms = 0;
	/* A timer added from a timer callback must not be due in the pass that is running (libuv 1.44
	 * would run it again and again without polling). */
	if (ms == 0 && l->in_timer_cb)
		ms = 1;
	t->id = l->next_timer_id++;
	if (l->next_timer_id <= 0)
		l->next_timer_id = 1;
	t->cb = cb;
	t->arg = arg;
	t->prev = NULL;
	t->next = l->timers;
	if (l->timers != NULL)
		l->timers->prev = t;
	l->timers = t;
	uv_update_time(&l->uv); /* "ms from now", not from the start of this loop iteration */
	(void)uv_timer_start(&t->timer, timer_cb, (uint64_t)ms, 0); /* fails only without a callback */
	return t->id;
}

void loop_timer_cancel(loop *l, int timer_id)
{
	if (timer_id <= 0)
		return;
	for (loop_tmr *t = l->timers; t != NULL; t = t->next) {
		if (t->id == timer_id) {
			uv_timer_stop(&t->timer);
			timer_unlink(l, t);
			return;
		}
	}
}

/* ---- signals ---- */

static void signal_cb(uv_signal_t *h, int signo)
{
	loop_sig *s = h->data;
	loop *l = s->l;
	if (l->stopping) {
		s->pending++;
		uv_async_send(&l->async);
		return;
	}
	s->cb(l, signo, s->arg);
}

int loop_signal(loop *l, int signo, loop_signal_cb cb, void *arg)
{
	loop_sig *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	int rc = uv_signal_init(&l->uv, &s->sig);
	if (rc < 0) {
		free(s);
		return rc;
	}
	l->handles++;
	s->sig.data = s;
	s->l = l;
	s->signo = signo;
	s->cb = cb;
	s->arg = arg;
	rc = uv_signal_start(&s->sig, signal_cb, signo);
	if (rc < 0) {
		handle_close(l, (uv_handle_t *)&s->sig); /* freed in closed_cb */
		return rc;
	}
	s->next = l->sigs;
	l->sigs = s;
	return 0;
}

/* ---- running ---- */

int loop_run(loop *l)
{
	if (l->running)
		return -EBUSY;
	l->running = true;
	l->stopping = false;
	/* The async handle is always active and referenced, so uv_run only returns on uv_stop. */
	uv_run(&l->uv, UV_RUN_DEFAULT);
	l->running = false;
	l->stopping = false;
	return 0;
}

void loop_stop(loop *l)
{
	if (!l->running)
		return;
	l->stopping = true;
	uv_stop(&l->uv);
}
