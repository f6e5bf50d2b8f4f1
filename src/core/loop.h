/*
 * loop — the one event loop thread: file-descriptor watches, timers, signals and a wakeup.
 *
 * Design: a thin layer over libuv (one uv_loop_t per loop), so that libraries that run on libuv
 * (libwebsockets through its evlib_uv plugin; hiredis) share the thread and the loop with
 * walcast's own watches: loop_uv() hands them the uv_loop_t. An fd watch is one
 * uv_poll_t, a timer one uv_timer_t, a signal one uv_signal_t (libuv's handler writes to a pipe,
 * so no walcast code runs asynchronously: the callback runs on the loop thread like any other
 * event). Everything runs on the thread that calls loop_run(); other threads may only call
 * loop_wakeup(). Callbacks may call any loop function except loop_run and loop_destroy.
 * See docs/architecture.md, "The event loop".
 */
#ifndef WALCAST_LOOP_H
#define WALCAST_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loop loop;
struct uv_loop_s; /* uv_loop_t, from <uv.h> */

enum {
	LOOP_READ = 1,
	LOOP_WRITE = 2,
};

/* events: what is ready among what is watched. An error pending on the fd (POLLERR) is reported
 * as LOOP_READ, plus LOOP_WRITE when watched, so that the next read or write returns it; a
 * hang-up makes what is watched ready (a read returns EOF, a write EPIPE). */
typedef void (*loop_fd_cb)(loop *l, int fd, unsigned events, void *arg);
typedef void (*loop_timer_cb)(loop *l, int timer_id, void *arg);
typedef void (*loop_signal_cb)(loop *l, int signo, void *arg);
typedef void (*loop_wakeup_cb)(loop *l, void *arg);

/* Returns a loop or NULL (errno set). Caller owns; loop_destroy frees it. */
loop *loop_create(void);

/* Closes every watch, timer and signal handler of l, runs the loop until libuv has released them
 * and frees l. Users of loop_uv() (an lws context, a hiredis adapter) must have been destroyed,
 * and their close callbacks run, before: if libuv still has handles of theirs open, the loop is
 * logged (loop.destroy_busy) and deliberately left allocated rather than freed under them. Loop
 * thread only; not from a callback. NULL is a no-op. */
void loop_destroy(loop *l);

/* Watches fd for events (LOOP_READ|LOOP_WRITE); replaces any earlier watch of fd (callback,
 * argument and events), also when fd was closed and its number reused. events 0 removes the
 * watch. The fd's O_NONBLOCK flag is left as it was. 0, -EBADF (fd < 0), -EINVAL (unknown
 * event bits), -EEXIST (another libuv handle on this loop polls fd), -EPERM (fd cannot be polled,
 * e.g. a regular file) or -ENOMEM. */
__attribute__((warn_unused_result)) int loop_watch(loop *l, int fd, unsigned events, loop_fd_cb cb, void *arg);

/* Removes the watch of fd if any. Call it before closing the fd: libuv must not see a watched fd
 * closed (the number may be reused by another library's socket on the same loop). */
void loop_unwatch(loop *l, int fd);

/* Arms a one-shot timer after ms milliseconds (from now; negative is 0); returns its id (> 0) or
 * a negative errno (-ENOMEM). Timers due together fire in deadline order, then in the order they
 * were added. */
__attribute__((warn_unused_result)) int loop_timer_add(loop *l, int64_t ms, loop_timer_cb cb, void *arg);

/* Cancels a pending timer; ids of fired or cancelled timers are ignored. */
void loop_timer_cancel(loop *l, int timer_id);

/* Routes signo to cb on the loop thread: installs libuv's process-wide handler for signo (it only
 * writes to a pipe; SA_RESTART), kept until loop_destroy. A signal is never lost: one that
 * arrives after loop_stop() is delivered on the next loop_run(). Several registrations of one
 * signal each get it. 0 or a negative errno (-EINVAL for a bad signo, -ENOMEM). */
__attribute__((warn_unused_result)) int loop_signal(loop *l, int signo, loop_signal_cb cb, void *arg);

/* Sets the callback that loop_wakeup() triggers (NULL clears it). Loop thread only. */
void loop_on_wakeup(loop *l, loop_wakeup_cb cb, void *arg);

/* Thread-safe and async-signal-safe: makes the wakeup callback run on the loop thread soon (or at
 * the next loop_run after a loop_stop). Calls made before it runs coalesce into one call, so the
 * callback drains whatever queue the caller filled. Never blocks. Threads that call it must be
 * stopped before loop_destroy. */
void loop_wakeup(loop *l);

/* Runs until loop_stop(); an idle loop waits, it does not return. Returns 0, or -EBUSY when
 * called from inside loop_run (not reentrant). Blocks. */
int loop_run(loop *l);

/* Makes loop_run() return after the current callback: walcast callbacks still pending in that
 * iteration (ready fds, due timers, signals, wakeups) stay pending for the next loop_run. Handles
 * of other libraries on loop_uv() may still run until the iteration ends. Outside loop_run it
 * has no effect. */
void loop_stop(loop *l);

/* The libuv loop underneath, for libraries with a libuv adapter (lws foreign_loops, hiredis'
 * redisLibuvAttach). Owned by l; valid until loop_destroy. Their handles are closed by them, not
 * by loop_destroy. Running it directly (uv_run with UV_RUN_NOWAIT, e.g. to let lws finish closing)
 * dispatches walcast callbacks as loop_run would. */
struct uv_loop_s *loop_uv(loop *l);

/* Counts the libuv handles on loop_uv(l) that are not walcast's own: open ones, and closed ones
 * whose close callback has not run yet. A library on the loop is gone when its count is: lws
 * 4.1.6 on a foreign loop frees its context only when lws_context_destroy is called a second
 * time, after its handles have closed (docs/architecture.md). Loop thread only. */
int loop_foreign_handles(loop *l);

/* Monotonic clock in milliseconds. */
int64_t loop_now_ms(void);

#endif
