/*
 * fuzz_rt_filter — libFuzzer target for Realtime postgres_changes filters
 * (plugins/sinks/rt_filter.c): the parser, the check against a relation and the per-row match.
 *
 * Input: the filter text up to the first '\n' (from an exactly-sized heap copy, so ASan sees a
 * read past it), then one column value per line for the relation below (a line "\x01" is a
 * NULL, a line "\x02" a value the tuple does not carry; missing lines are NULL). The filter is
 * parsed, checked against two relation versions that give the same column names other types,
 * and matched against the tuple on both, twice each (the second time from the binding cache).
 *
 * Checks: no crash, no sanitizer report, parse and check return only 0, -EINVAL (with a
 * non-empty, NUL-terminated message) or -ENOMEM, and a match does not change on repetition.
 *
 * Seeds: tests/fuzz/corpus/rt_filter/. Dictionary: tests/fuzz/rt_filter.dict. Run e.g.
 *   fuzz_rt_filter -max_total_time=60 -dict=tests/fuzz/rt_filter.dict /tmp/corpus \
 *     tests/fuzz/corpus/rt_filter
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rt_filter.h"

/* Column names a..p; version 1 gives each its own type, version 2 rotates the types. */
static const uint32_t type_oids[] = {23, 21, 20, 26, 1700, 700, 701, 16,
                                     2950, 1184, 1114, 1082, 1083, 25, 1043, 1042};
#define NCOLS ((int)(sizeof(type_oids) / sizeof(type_oids[0])))

static void check_rc(int rc, const char *err)
{
	if (rc == 0 || rc == -ENOMEM)
		return;
	if (rc != -EINVAL || memchr(err, '\0', RT_FILTER_ERROR_MAX) == NULL || err[0] == '\0')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t flen = nl != NULL ? (size_t)(nl - data) : size;
	if (memchr(data, '\0', flen) != NULL)
		return 0; /* the filter arrives as a C string */
	char *text = malloc(flen + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, flen);
	text[flen] = '\0';

	/* the tuple: one exactly-sized NUL-terminated copy per value */
	change_value tuple[NCOLS];
	char *vals[NCOLS] = {0};
	const uint8_t *p = nl != NULL ? nl + 1 : data + size, *end = data + size;
	for (int i = 0; i < NCOLS; i++) {
		tuple[i] = (change_value){.kind = VALUE_NULL};
		if (p >= end)
			continue;
		const uint8_t *e = memchr(p, '\n', (size_t)(end - p));
		size_t l = e != NULL ? (size_t)(e - p) : (size_t)(end - p);
		if (l == 1 && p[0] == 1) {
			tuple[i].kind = VALUE_NULL;
		} else if (l == 1 && p[0] == 2) {
			tuple[i].kind = VALUE_ABSENT;
		} else if (memchr(p, '\0', l) == NULL && (vals[i] = malloc(l + 1)) != NULL) {
			memcpy(vals[i], p, l);
			vals[i][l] = '\0';
			tuple[i] = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)l, .data = vals[i]};
		}
		p = e != NULL ? e + 1 : end;
	}

	char names[NCOLS][2];
	rel_column c1[NCOLS], c2[NCOLS];
	for (int i = 0; i < NCOLS; i++) {
		names[i][0] = (char)('a' + i);
		names[i][1] = '\0';
		c1[i] = (rel_column){.name = names[i], .type_oid = type_oids[i], .typmod = -1};
		c2[i] = (rel_column){.name = names[i], .type_oid = type_oids[(i + 5) % NCOLS], .typmod = -1};
	}
	relation r1 = {.schema = "public", .name = "t", .ncols = NCOLS, .cols = c1, .version = 1, .id = 1};
	relation r2 = {.schema = "public", .name = "t", .ncols = NCOLS, .cols = c2, .version = 2, .id = 2};

	char err[RT_FILTER_ERROR_MAX];
	rt_filter *f = NULL;
	int rc = rt_filter_parse(text, &f, err);
	check_rc(rc, err);
	if (rc == 0) {
		check_rc(rt_filter_check(f, &r1, err), err);
		bool m1 = rt_filter_match(f, &r1, tuple);
		bool m2 = rt_filter_match(f, &r2, tuple);
		if (rt_filter_match(f, &r1, tuple) != m1 || rt_filter_match(f, &r2, tuple) != m2)
			abort();
		check_rc(rt_filter_check(f, &r2, err), err);
		rt_filter_free(f);
	}
	for (int i = 0; i < NCOLS; i++)
		free(vals[i]);
	free(text);
	return 0;
}
