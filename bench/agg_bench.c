/*
 * agg_bench — the redis sink's own cost per event (plugins/sinks/redis_agg.h), on one core, without
 * PostgreSQL or Redis: N events shaped like bench/redis_bench.sh's load (10 orgs of 100 contacts,
 * 60 % calls, random direction, status, `started_at` over 7 days and duration, 10 % without a
 * contact) are merged with redis_agg_add; every R events the batch is encoded as the EVALSHA
 * arguments of every org (redis_agg_org_command) and cleared, as a round would be. Figures: CPU
 * time of the thread per event for merging and for encoding, medians over runs. Usage:
 *
 *   agg_bench [RUNS [N [R]]]     defaults: 5 runs, 1,000,000 events, rounds of 65,536 events
 *
 * Prints "key value" lines.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "redis_agg.h"

#define NORGS 10
#define NCONTACTS 100
#define NOW_S INT64_C(1796190748)

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 5;
	long n = argc > 2 ? atol(argv[2]) : 1000000;
	long round = argc > 3 ? atol(argv[3]) : 65536;
	if (runs < 1 || n < 1 || round < 1) {
		fprintf(stderr, "usage: agg_bench [RUNS [N [R]]]\n");
		return 2;
	}
	static const char *const call_st[] = {"completed", "missed", "voicemail"};
	static const char *const sms_st[] = {"sent", "delivered", "received", "failed"};
	redis_agg_conf conf = {.prefix = "wc", .missed_statuses = "missed", .hour_window_h = 48};
	double *add = calloc((size_t)runs, sizeof(double)), *enc = calloc((size_t)runs, sizeof(double));
	redis_agg_event *evs = calloc((size_t)round, sizeof(*evs));
	buf out;
	buf_init(&out);
	size_t args = 0;
	for (int r = 0; r < runs; r++) {
		redis_agg_batch b;
		if (add == NULL || enc == NULL || evs == NULL || redis_agg_batch_init(&b) < 0)
			return 1;
		double t_add = 0, t_enc = 0;
		for (long i = 0; i < n;) {
			long m = 0;
			for (; m < round && i + m < n; m++) { /* the round's events, made outside the timing */
				uint64_t x = next();
				redis_agg_event *e = &evs[m];
				*e = (redis_agg_event){.direction = x & 1 ? "inbound" : "outbound"};
				bool call = (x >> 1) % 10 < 6;
				e->kind = call ? "call" : "sms";
				e->status = call ? call_st[(x >> 8) % 3] : sms_st[(x >> 8) % 4];
				snprintf(e->org, sizeof(e->org), "00000000-0000-4000-8000-%012d", (int)((x >> 16) % NORGS));
				if ((x >> 24) % 10 != 0)
					snprintf(e->contact, sizeof(e->contact), "aaaaaaaa-0000-4000-8000-%012d",
					         (int)((x >> 32) % NCONTACTS));
				e->started_us = (NOW_S - (int64_t)(next() % (7 * 86400))) * 1000000 + (int64_t)(next() % 1000000);
				e->has_duration = call;
				e->duration_s = call ? (int64_t)(x >> 40) % 600 : 0;
			}
			double t0 = cpu_s();
			for (long k = 0; k < m; k++, i++)
				if (redis_agg_add(&b, &conf, &evs[k], +1, (uint64_t)i + 1, NOW_S) < 0)
					return 1;
			double t1 = cpu_s();
			for (size_t o = 0; o < b.norgs; o++) {
				int ac;
				const char **av;
				size_t *al;
				if (redis_agg_org_command(&b, o, &conf, "0123456789012345678901234567890123456789", &out, &ac, &av,
				                          &al) < 0)
					return 1;
				args += (size_t)ac;
				free(av);
				free(al);
			}
			redis_agg_batch_clear(&b);
			t_enc += cpu_s() - t1;
			t_add += t1 - t0;
		}
		add[r] = t_add * 1e9 / (double)n;
		enc[r] = t_enc * 1e9 / (double)n;
		redis_agg_batch_fini(&b);
	}
	qsort(add, (size_t)runs, sizeof(double), cmp_double);
	qsort(enc, (size_t)runs, sizeof(double), cmp_double);
	printf("events %ld\nround %ld\nruns %d\nmerge_ns_per_event %.0f\nencode_ns_per_event %.0f\n"
	       "args_per_event %.2f\n",
	       n, round, runs, add[runs / 2], enc[runs / 2], (double)args / (double)n / runs);
	buf_fini(&out);
	free(add);
	free(enc);
	free(evs);
	return 0;
}
