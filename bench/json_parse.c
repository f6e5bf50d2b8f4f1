/*
 * json_parse — how fast can walcast read wal2json lines? Parses the same file of wal2json
 * format-2 payloads (one per line, as pg_recvlogical writes them; an "LSN<TAB>" prefix is
 * skipped) three ways, each several times, and prints the median rows/s and MB/s:
 *
 *   jansson   json_loadb + json_decref per line: a generic JSON DOM (the baseline in DESIGN.md)
 *   scan      plugins/decoders/json_scan.c walking every token and unescaping every string and key
 *             (the same work as building the DOM, minus the tree)
 *   decode    the whole wal2json decoder (plugins/decoders/wal2json.c): parse, relation lookup, values
 *             to PostgreSQL text in the arena, one normalized change record per row delivered
 *             to a sink that does nothing
 *
 * rows = insert/update/delete lines; MB = payload bytes of all lines (10^6). One core, one
 * thread, the file in memory, nothing else timed.
 *
 *   json_parse FILE [RUNS [jansson|scan|decode]]
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decoder.h"
#include "json_scan.h"
#include "relcache.h"

typedef struct line {
	const char *p;
	size_t len;
} line;

typedef struct input {
	char *data;
	line *lines;
	size_t n;
	size_t rows;
	size_t bytes;
	size_t row_bytes;
} input;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int input_load(const char *path, input *in)
{
	FILE *fp = fopen(path, "rb");
	if (fp == NULL) {
		perror(path);
		return -1;
	}
	fseek(fp, 0, SEEK_END);
	long size = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	in->data = malloc((size_t)size + 1);
	if (in->data == NULL || fread(in->data, 1, (size_t)size, fp) != (size_t)size) {
		fclose(fp);
		return -1;
	}
	fclose(fp);
	size_t cap = 1024;
	in->lines = malloc(cap * sizeof(line));
	in->n = in->rows = in->bytes = in->row_bytes = 0;
	char *p = in->data, *end = in->data + size;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *e = nl ? nl : end;
		char *tab = memchr(p, '\t', (size_t)(e - p));
		if (tab != NULL && *p != '{')
			p = tab + 1;
		if (e > p) {
			if (in->n == cap) {
				cap *= 2;
				in->lines = realloc(in->lines, cap * sizeof(line));
			}
			in->lines[in->n++] = (line){p, (size_t)(e - p)};
			in->bytes += (size_t)(e - p);
			if (e - p > 13 && memcmp(p, "{\"action\":\"", 11) == 0 &&
			    (p[11] == 'I' || p[11] == 'U' || p[11] == 'D')) {
				in->rows++;
				in->row_bytes += (size_t)(e - p);
			}
		}
		p = nl ? nl + 1 : end;
	}
	return 0;
}

/* --- jansson ----------------------------------------------------------------------------- */

static int run_jansson(const input *in, uint64_t *check)
{
	for (size_t i = 0; i < in->n; i++) {
		json_error_t err;
		json_t *j = json_loadb(in->lines[i].p, in->lines[i].len, 0, &err);
		if (j == NULL) {
			fprintf(stderr, "jansson: line %zu: %s\n", i + 1, err.text);
			return -1;
		}
		*check += json_object_size(j);
		json_decref(j);
	}
	return 0;
}

/* --- json_scan: every token, every string unescaped ---------------------------------------- */

static int walk(json_scan *s, const json_scan_token *t, char *scratch, uint64_t *check, int depth)
{
	const char *err;
	json_scan_token key, v;
	bool first = true;
	int rc;
	switch (t->type) {
	case JSON_SCAN_STRING:
		if (t->escaped) {
			long n = json_scan_unescape(t->p, t->len, scratch, &err);
			if (n < 0)
				return -1;
			*check += (uint64_t)n;
		} else {
			*check += t->len;
		}
		return 0;
	case JSON_SCAN_OBJECT:
		if (depth > 32)
			return -1;
		while ((rc = json_scan_object_next(s, &first, &key)) == 1) {
			if (walk(s, &key, scratch, check, depth + 1) < 0 || json_scan_value(s, &v) < 0 ||
			    walk(s, &v, scratch, check, depth + 1) < 0)
				return -1;
		}
		return rc;
	case JSON_SCAN_ARRAY:
		if (depth > 32)
			return -1;
		while ((rc = json_scan_array_next(s, &first)) == 1) {
			if (json_scan_value(s, &v) < 0 || walk(s, &v, scratch, check, depth + 1) < 0)
				return -1;
		}
		return rc;
	default:
		*check += t->len;
		return 0;
	}
}

static int run_scan(const input *in, uint64_t *check)
{
	static char scratch[1 << 20];
	for (size_t i = 0; i < in->n; i++) {
		json_scan s;
		json_scan_token t;
		if (in->lines[i].len > sizeof(scratch))
			return -1;
		json_scan_init(&s, in->lines[i].p, in->lines[i].len);
		if (json_scan_value(&s, &t) < 0 || walk(&s, &t, scratch, check, 0) < 0 ||
		    json_scan_finish(&s) < 0) {
			fprintf(stderr, "scan: line %zu: %s at %zu\n", i + 1, s.err ? s.err : "?", s.err_off);
			return -1;
		}
	}
	return 0;
}

/* --- the decoder ------------------------------------------------------------------------------ */

static int null_change(void *arg, change *c)
{
	uint64_t *check = arg;
	*check += (uint64_t)c->action + (c->new_tuple ? (uint64_t)c->new_tuple[0].len : 0);
	return 0;
}

static int run_decode(const input *in, uint64_t *check)
{
	relcache *rc = relcache_create();
	decoder_params p = {.relations = rc, .sink = {.change_cb = null_change, .arg = check}};
	decoder *d;
	int r = decoder_create(decoder_ops_find("wal2json"), &p, &d);
	if (r < 0)
		return r;
	char err[DECODER_ERROR_MAX];
	for (size_t i = 0; i < in->n && r == 0; i++) {
		r = decoder_decode(d, 0x1000 + i, (const uint8_t *)in->lines[i].p, in->lines[i].len, err);
		if (r != 0)
			fprintf(stderr, "decode: line %zu: %s\n", i + 1, err);
	}
	decoder_destroy(d);
	relcache_destroy(rc);
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

typedef int (*run_fn)(const input *, uint64_t *);

static int measure(const char *name, run_fn fn, const input *in, int runs)
{
	double secs[64];
	uint64_t check = 0;
	for (int r = 0; r < runs; r++) {
		double t0 = now_s();
		if (fn(in, &check) < 0)
			return -1;
		secs[r] = now_s() - t0;
	}
	qsort(secs, (size_t)runs, sizeof(double), cmp_double);
	double med = runs % 2 ? secs[runs / 2] : (secs[runs / 2 - 1] + secs[runs / 2]) / 2;
	printf("%-8s  median %7.3f s  %10.0f rows/s  %10.0f lines/s  %8.1f MB/s   (best %.3f s, worst %.3f s, check %llu)\n",
	       name, med, (double)in->rows / med, (double)in->n / med, (double)in->bytes / 1e6 / med,
	       secs[0], secs[runs - 1], (unsigned long long)check);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: json_parse FILE [RUNS [jansson|scan|decode]]\n");
		return 2;
	}
	int runs = argc > 2 ? atoi(argv[2]) : 7;
	if (runs < 1 || runs > 64)
		runs = 7;
	input in;
	if (input_load(argv[1], &in) < 0)
		return 1;
	printf("%s: %zu lines, %zu rows (I/U/D lines, %.0f bytes each on average), %.1f MB; %d runs each\n",
	       argv[1], in.n, in.rows, in.rows ? (double)in.row_bytes / (double)in.rows : 0.0,
	       (double)in.bytes / 1e6, runs);
	const char *only = argc > 3 ? argv[3] : NULL;
	static const struct {
		const char *name;
		run_fn fn;
	} modes[] = {{"jansson", run_jansson}, {"scan", run_scan}, {"decode", run_decode}};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if ((only == NULL || strcmp(only, modes[i].name) == 0) &&
		    measure(modes[i].name, modes[i].fn, &in, runs) < 0)
			return 1;
	free(in.lines);
	free(in.data);
	return 0;
}
