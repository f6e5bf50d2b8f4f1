/*
 * redis_test_server — helpers for the redis unit tests: a free loopback port, and a throwaway
 * redis-server started on it (no persistence, log to /dev/null). Header-only, for tests.
 */
#ifndef WALCAST_REDIS_TEST_SERVER_H
#define WALCAST_REDIS_TEST_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

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

#endif
