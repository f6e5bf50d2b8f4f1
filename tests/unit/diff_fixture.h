/*
 * diff_fixture — the differential fixture of tests/fixtures/diff/ (one run of the differential
 * workload captured through pgoutput and wal2json, with the catalog): its paths, its hex payloads
 * and the relation cache seeded from its catalog as the source does for wal2json. Header-only,
 * for the unit tests (cmocka asserts).
 */
#ifndef WALCAST_DIFF_FIXTURE_H
#define WALCAST_DIFF_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relcache.h"

static inline char *fixture_path(const char *name)
{
	static char path[1024];
	const char *root = getenv("WALCAST_SOURCE_DIR");
	snprintf(path, sizeof(path), "%s/tests/fixtures/diff/%s", root ? root : ".", name);
	return path;
}

static inline int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Seeds a relation cache the way the source does for wal2json: from the catalog. */
static inline void seed_catalog(relcache *rels)
{
	FILE *f = fopen(fixture_path("catalog.tsv"), "r");
	assert_non_null(f);
	char schema[64], table[64], prev[64] = "", col[64], key[8];
	unsigned typ;
	int typmod;
	rel_column cols[64];
	char names[64][64];
	int ncols = 0;
	for (;;) {
		int got = fscanf(f, "%63s\t%63s\t%63s\t%u\t%d\t%7s\n", schema, table, col, &typ, &typmod, key);
		if ((got != 6 || strcmp(table, prev) != 0) && ncols > 0) {
			relation r = {.schema = "public", .name = prev, .ncols = ncols, .cols = cols, .replident = '?'};
			assert_int_equal(relcache_put(rels, &r, NULL), 0);
			ncols = 0;
		}
		if (got != 6)
			break;
		snprintf(prev, sizeof(prev), "%s", table);
		snprintf(names[ncols], sizeof(names[ncols]), "%s", col);
		cols[ncols] = (rel_column){.name = names[ncols], .type_oid = typ, .typmod = typmod, .key = key[0] == 't'};
		ncols++;
	}
	fclose(f);
}

#endif
