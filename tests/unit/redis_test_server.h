/*
 * redis_test_server — helpers for the redis unit tests: a free loopback port, a throwaway
 * redis-server started on it (no persistence, log to /dev/null), and running a loop for at
 * most some time. Header-only, for tests.
 */
#ifndef WALCAST_REDIS_TEST_SERVER_H
#define WALCAST_REDIS_TEST_SERVER_H

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop.h"

extern char **environ;

static inline void redis_test_stop_cb(loop *l, int id, void *arg)
{
	(void)id;
	*(bool *)arg = true;
	loop_stop(l);
}

/* Runs l until a callback stops it or ms pass; true when the deadline stopped it (-1: no timer). */
static inline int redis_test_run_for(loop *l, int64_t ms)
{
	bool timed_out = false;
	int id = loop_timer_add(l, ms, redis_test_stop_cb, &timed_out);
	if (id <= 0 || loop_run(l) != 0)
		return -1;
	loop_timer_cancel(l, id);
	return timed_out;
}

/* A loopback port nothing listens on (bound, then closed); 0 on failure. */
static inline int redis_test_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t n = sizeof(a);
	int port = 0;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &n) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* true when nothing listens on (and nothing is bound to) 127.0.0.1:port. */
static inline bool redis_test_port_free(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* true when redis-server is on PATH. */
static inline bool redis_test_have_server(void)
{
	return system("command -v redis-server >/dev/null 2>&1") == 0;
}

/* Starts redis-server on 127.0.0.1:port; its pid, or -1. It may not listen yet on return. */
static inline pid_t redis_test_server_start(int port)
{
	char p[16];
	snprintf(p, sizeof(p), "%d", port);
	char *argv[] = {"redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
	                "--logfile", "/dev/null", NULL};
	pid_t pid;
	return posix_spawnp(&pid, "redis-server", NULL, NULL, argv, environ) == 0 ? pid : -1;
}

/* Starts redis-server on 127.0.0.1:port working in dir (where a replica's full sync writes
 * dump.rdb), a replica of replicaof ("HOST PORT") unless NULL; its pid, or -1. */
static inline pid_t redis_test_server_spawn(int port, const char *dir, const char *replicaof)
{
	char p[16];
	snprintf(p, sizeof(p), "%d", port);
	char *argv[] = {"redis-server", "--port", p, "--bind", "127.0.0.1", "--dir", (char *)dir, "--save", "",
	                "--appendonly", "no", "--logfile", "/dev/null", NULL, NULL, NULL};
	if (replicaof != NULL) {
		argv[13] = "--replicaof";
		argv[14] = (char *)replicaof;
	}
	pid_t pid;
	return posix_spawnp(&pid, "redis-server", NULL, NULL, argv, environ) == 0 ? pid : -1;
}

/* true once the master on 127.0.0.1:port has a replica in sync (INFO replication), within ~10 s. */
static inline bool redis_test_replica_online(int port)
{
	for (int i = 0; i < 400; i++) {
		redisContext *c = redisConnect("127.0.0.1", port);
		redisReply *r = c != NULL && !c->err ? redisCommand(c, "INFO replication") : NULL;
		bool online = r != NULL && r->type == REDIS_REPLY_STRING && strstr(r->str, "state=online") != NULL;
		freeReplyObject(r);
		redisFree(c);
		if (online)
			return true;
		usleep(25000);
	}
	return false;
}

/* cmocka setup and teardown: two servers' pids in the test's state, killed (stopped ones too)
 * by the teardown even when the test failed half-way. */
static inline int redis_test_pids_setup(void **state)
{
	*state = calloc(2, sizeof(pid_t));
	return *state != NULL ? 0 : -1;
}

static inline int redis_test_pids_teardown(void **state)
{
	pid_t *pids = *state;
	for (int i = 0; pids != NULL && i < 2; i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGCONT);
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
	free(pids);
	return 0;
}

#endif
