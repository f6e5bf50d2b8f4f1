/*
 * run_bench_sub — the subscriber side of bench/run_bench.sh: subscribes to walcast run's nng
 * sink (docs/nng.md) and counts messages, or measures commit → receipt latency.
 *
 *   run_bench_sub [--latency FILE] [--timeout S] URL PREFIX...
 *
 * Subscribes to every PREFIX. Each message is "<topic> <record>", or with the sink's coalesce
 * on several records of one topic, one per line: "<topic> <record>\n<record>..."; a record is
 * "<seq> <lsn> <payload JSON>" (docs/nng.md). A message whose topic contains "/_message/" (the
 * benchmark's end marker, pg_logical_emit_message) ends the run. --latency FILE: for every
 * other record, writes one line "MICROSECONDS" to FILE: this process's CLOCK_REALTIME at
 * receipt minus the payload's "commit_time" (PostgreSQL's commit timestamp; same machine, same
 * clock). At the end prints on stdout
 * "nng_messages=M messages=N gaps=G marker=0|1 first_us=T0 marker_us=T1" (M: nng messages, N:
 * records in them; gaps: sequence numbers skipped, summed over topics seen; T0 and T1:
 * CLOCK_REALTIME in Unix microseconds at the receipt of the first message and of the marker, 0
 * when none).
 * Exits 0, or 1 on an error or when the receive timeout (default 120 s) passed without a marker.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" to Unix microseconds; -1 when it does not parse. */
static int64_t parse_time(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	int us = 0;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
	           &tm.tm_min, &tm.tm_sec, &us) != 7)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000000 + us;
}

/* Per-topic last sequence number, a small open list (the benchmark subscribes few topics). */
typedef struct topic_seq {
	char *topic;
	uint64_t seq;
} topic_seq;

int main(int argc, char **argv)
{
	const char *latency_path = NULL;
	int timeout_s = 120;
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--latency") == 0 && i + 1 < argc)
			latency_path = argv[++i];
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			timeout_s = atoi(argv[++i]);
		else {
			fprintf(stderr, "run_bench_sub: unknown option %s\n", argv[i]);
			return 1;
		}
	}
	if (argc - i < 2) {
		fprintf(stderr, "usage: run_bench_sub [--latency FILE] [--timeout S] URL PREFIX...\n");
		return 1;
	}
	const char *url = argv[i++];
	FILE *lat = NULL;
	if (latency_path != NULL && (lat = fopen(latency_path, "w")) == NULL) {
		perror(latency_path);
		return 1;
	}
	nng_socket sock;
	int rv = nng_sub0_open(&sock);
	if (rv == 0)
		rv = nng_socket_set_int(sock, NNG_OPT_RECVBUF, 8192);
	for (; rv == 0 && i < argc; i++)
		rv = nng_socket_set(sock, NNG_OPT_SUB_SUBSCRIBE, argv[i], strlen(argv[i]));
	if (rv == 0)
		rv = nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, timeout_s * 1000);
	if (rv == 0)
		rv = nng_socket_set_ms(sock, NNG_OPT_RECONNMINT, 50);
	if (rv == 0)
		rv = nng_dial(sock, url, NULL, NNG_FLAG_NONBLOCK);
	if (rv != 0) {
		fprintf(stderr, "run_bench_sub: %s: %s\n", url, nng_strerror(rv));
		return 1;
	}
	fprintf(stderr, "run_bench_sub: subscribed\n");
	uint64_t messages = 0, gaps = 0, nng_messages = 0;
	int64_t first_us = 0, marker_us = 0;
	int marker = 0;
	topic_seq topics[64];
	size_t ntopics = 0;
	/* One aio for every receive (nng_recvmsg allocates one per call, with a getrandom) and one
	 * buffer: the subscriber receives every topic's messages (pub/sub filters here), so its
	 * per-message cost must stay well below walcast's or the marker waits in its queue. */
	nng_aio *aio = NULL;
	if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
		fprintf(stderr, "run_bench_sub: aio: %s\n", nng_strerror(rv));
		return 1;
	}
	nng_aio_set_timeout(aio, timeout_s * 1000);
	char *s = NULL;
	size_t cap = 0;
	while (!marker) {
		nng_recv_aio(sock, aio);
		nng_aio_wait(aio);
		if ((rv = nng_aio_result(aio)) != 0) {
			fprintf(stderr, "run_bench_sub: receive: %s\n", nng_strerror(rv));
			break;
		}
		nng_msg *m = nng_aio_get_msg(aio);
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
		if (first_us == 0)
			first_us = now_us;
		size_t len = nng_msg_len(m);
		if (len + 1 > cap) {
			char *s2 = realloc(s, len + 1);
			if (s2 == NULL) {
				nng_msg_free(m);
				break;
			}
			s = s2;
			cap = len + 1;
		}
		memcpy(s, nng_msg_body(m), len);
		s[len] = '\0';
		nng_msg_free(m);
		nng_messages++;
		char *sp = strchr(s, ' ');
		if (sp == NULL)
			continue;
		*sp = '\0';
		size_t t = 0;
		while (t < ntopics && strcmp(topics[t].topic, s) != 0)
			t++;
		if (strstr(s, "/_message/") != NULL) {
			marker = 1;
			marker_us = now_us;
		}
		/* every record: "<seq> <lsn> <payload>" up to a newline or the end */
		for (char *rec = sp + 1; rec != NULL;) {
			char *nl = strchr(rec, '\n');
			if (nl != NULL)
				*nl = '\0';
			uint64_t seq = strtoull(rec, NULL, 10);
			if (t == ntopics && ntopics < 64) {
				topics[ntopics].topic = strdup(s);
				topics[ntopics].seq = seq - 1;
				ntopics++;
			}
			if (t < ntopics && topics[t].topic != NULL) {
				if (seq > topics[t].seq + 1)
					gaps += seq - topics[t].seq - 1;
				topics[t].seq = seq;
			}
			if (!marker) {
				messages++;
				const char *ct = strstr(rec, "\"commit_time\":\"");
				if (lat != NULL && ct != NULL) {
					int64_t c = parse_time(ct + 15);
					if (c >= 0)
						fprintf(lat, "%" PRId64 "\n", now_us - c);
				}
			}
			rec = nl != NULL ? nl + 1 : NULL;
		}
	}
	free(s);
	nng_aio_free(aio);
	printf("nng_messages=%" PRIu64 " messages=%" PRIu64 " gaps=%" PRIu64 " marker=%d first_us=%" PRId64
	       " marker_us=%" PRId64 "\n", nng_messages, messages, gaps, marker, first_us, marker_us);
	for (size_t t = 0; t < ntopics; t++)
		free(topics[t].topic);
	if (lat != NULL)
		fclose(lat);
	nng_close(sock);
	return marker ? 0 : 1;
}
