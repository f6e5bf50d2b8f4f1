/*
 * loop — the one event loop thread: file-descriptor watches, timers and signals.
 *
 * Design: epoll for fds; a small array of timers (walcast has a handful) scanned for the
 * nearest deadline; signals arrive through a signalfd and are dispatched as ordinary events, so
 * no handler runs asynchronously. Everything runs on the thread that calls loop_run(); other
 * threads may only call loop_wakeup().
 */
#ifndef WALCAST_LOOP_H
#define WALCAST_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loop loop;

enum {
	LOOP_READ = 1,
	LOOP_WRITE = 2,
};

typedef void (*loop_fd_cb)(loop *l, int fd, unsigned events, void *arg);
typedef void (*loop_timer_cb)(loop *l, int timer_id, void *arg);
typedef void (*loop_signal_cb)(loop *l, int signo, void *arg);

/* Returns a loop or NULL (errno set). Caller owns; loop_destroy frees it. */
loop *loop_create(void);
void loop_destroy(loop *l);

/* Watches fd for events (LOOP_READ|LOOP_WRITE); replaces any earlier watch of fd. events 0
 * removes the watch. 0 or a negative errno. */
__attribute__((warn_unused_result)) int loop_watch(loop *l, int fd, unsigned events, loop_fd_cb cb, void *arg);

/* Removes the watch of fd if any (call before closing the fd). */
void loop_unwatch(loop *l, int fd);

/* Arms a one-shot timer after ms milliseconds; returns its id (> 0) or a negative errno. */
__attribute__((warn_unused_result)) int loop_timer_add(loop *l, int64_t ms, loop_timer_cb cb, void *arg);

/* Cancels a pending timer; ids of fired or cancelled timers are ignored. */
void loop_timer_cancel(loop *l, int timer_id);

/* Routes signo (blocked for the process) to cb on the loop thread. 0 or a negative errno. */
__attribute__((warn_unused_result)) int loop_signal(loop *l, int signo, loop_signal_cb cb, void *arg);

/* Runs until loop_stop(). Returns 0, or a negative errno if the loop itself failed. Blocks. */
int loop_run(loop *l);

/* Makes loop_run() return after the current callback. */
void loop_stop(loop *l);

/* Monotonic clock in milliseconds. */
int64_t loop_now_ms(void);

#endif
