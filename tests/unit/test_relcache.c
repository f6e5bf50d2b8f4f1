/*
 * test_relcache — unit tests for the relation cache (src/stream/relcache.h): lookups by OID and by
 * schema-qualified name, replacement and versioning, re-keying on rename or a newly learned
 * OID, growth to many relations, column lookup, and the deep copy of descriptions; unique ids
 * (never reused, also when a dropped relation is recreated at version 1) and references
 * (relation_ref keeps a replaced, stale-dropped or orphaned relation valid; its last
 * relation_unref frees it). Run under ASan, a use after free or a leak fails these tests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "heap.h"
#include "relcache.h"

/* ---- helpers ------------------------------------------------------------------------- */

static rel_column cols3[] = {
	{.name = "id", .type_oid = 20, .typmod = -1, .key = true},
	{.name = "body", .type_oid = 25, .typmod = -1, .key = false},
	{.name = "price", .type_oid = 1700, .typmod = 655366, .key = false},
};

static relation mkrel(uint32_t oid, const char *schema, const char *name, int ncols,
                      rel_column *cols)
{
	relation r = {
		.oid = oid,
		.schema = (char *)schema,
		.name = (char *)name,
		.ncols = ncols,
		.cols = cols,
		.replident = 'd',
	};
	return r;
}

static const relation *put(relcache *rc, const relation *desc)
{
	const relation *out = NULL;
	assert_int_equal(relcache_put(rc, desc, &out), 0);
	assert_non_null(out);
	return out;
}

static const relation *by_name(const relcache *rc, const char *schema, const char *name)
{
	return relcache_get_name(rc, schema, strlen(schema), name, strlen(name));
}

/* The cached relation equals desc in every described field and owns its own strings. */
static void assert_same_shape(const relation *got, const relation *desc)
{
	assert_int_equal(got->oid, desc->oid);
	assert_string_equal(got->schema, desc->schema);
	assert_string_equal(got->name, desc->name);
	assert_ptr_not_equal(got->schema, desc->schema);
	assert_ptr_not_equal(got->name, desc->name);
	assert_int_equal(got->replident, desc->replident);
	assert_int_equal(got->ncols, desc->ncols);
	if (desc->ncols > 0)
		assert_ptr_not_equal(got->cols, desc->cols);
	for (int i = 0; i < desc->ncols; i++) {
		assert_string_equal(got->cols[i].name, desc->cols[i].name);
		assert_ptr_not_equal(got->cols[i].name, desc->cols[i].name);
		assert_int_equal(got->cols[i].type_oid, desc->cols[i].type_oid);
		assert_int_equal(got->cols[i].typmod, desc->cols[i].typmod);
		assert_int_equal(got->cols[i].key, desc->cols[i].key);
	}
}

/* Runs fn in a child process so that a crash (or a sanitizer report) fails only this test.
 * Returns true when the child exited 0. */
static bool run_in_child(int (*fn)(void))
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0)
		_exit(fn());
	int status;
	if (waitpid(pid, &status, 0) != pid)
		return false;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int setup(void **state)
{
	*state = relcache_create();
	return *state == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	relcache_destroy(*state);
	return 0;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_empty(void **state)
{
	relcache *rc = *state;
	assert_int_equal(relcache_count(rc), 0);
	assert_null(relcache_get_oid(rc, 1));
	assert_null(relcache_get_oid(rc, 0));
	assert_null(by_name(rc, "public", "events"));
	assert_null(relcache_get_name(rc, "", 0, "", 0));
}

static void test_put_and_get(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(16384, "public", "events", 3, cols3);
	d.replident = 'f';
	const relation *r = put(rc, &d);
	assert_same_shape(r, &d);
	assert_int_equal(relcache_count(rc), 1);
	assert_ptr_equal(relcache_get_oid(rc, 16384), r);
	assert_ptr_equal(by_name(rc, "public", "events"), r);

	/* Near misses find nothing. */
	assert_null(relcache_get_oid(rc, 16385));
	assert_null(relcache_get_oid(rc, 0));
	assert_null(by_name(rc, "public", "event"));
	assert_null(by_name(rc, "public", "eventss"));
	assert_null(by_name(rc, "Public", "events"));
	assert_null(by_name(rc, "publi", "cevents"));
	assert_null(by_name(rc, "", "public.events"));
	assert_null(by_name(rc, "events", "public"));
}

static void test_put_out_optional(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(5, "s", "t", 1, cols3);
	assert_int_equal(relcache_put(rc, &d, NULL), 0);
	const relation *r = relcache_get_oid(rc, 5);
	assert_non_null(r);
	assert_same_shape(r, &d);
	/* And when replacing. */
	d.replident = 'n';
	assert_int_equal(relcache_put(rc, &d, NULL), 0);
	assert_int_equal(relcache_get_oid(rc, 5)->replident, 'n');
	assert_int_equal(relcache_count(rc), 1);
}

static void test_get_name_uses_lengths(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(0, "public", "events", 3, cols3);
	const relation *r = put(rc, &d);
	/* Slices of larger strings, not NUL-terminated at len. */
	assert_ptr_equal(relcache_get_name(rc, "public.events", 6, "events_archive", 6), r);
	const char s[6] = {'p', 'u', 'b', 'l', 'i', 'c'};
	const char n[6] = {'e', 'v', 'e', 'n', 't', 's'};
	assert_ptr_equal(relcache_get_name(rc, s, sizeof(s), n, sizeof(n)), r);
	/* Lengths that make it a different name. */
	assert_null(relcache_get_name(rc, "public", 5, "events", 6));
	assert_null(relcache_get_name(rc, "public", 6, "events", 5));
	assert_null(relcache_get_name(rc, "publicx", 7, "events", 6));
	assert_null(relcache_get_name(rc, "public", 6, "eventsx", 7));
}

static void test_schema_and_name_are_separate_keys(void **state)
{
	relcache *rc = *state;
	/* "a.b"."c" and "a"."b.c" print the same when joined with a dot but are different
	 * relations; so are the same table name in two schemas. */
	relation d1 = mkrel(0, "a.b", "c", 1, cols3);
	relation d2 = mkrel(0, "a", "b.c", 2, cols3);
	relation d3 = mkrel(0, "public", "t", 3, cols3);
	relation d4 = mkrel(0, "audit", "t", 0, NULL);
	const relation *r1 = put(rc, &d1);
	const relation *r2 = put(rc, &d2);
	const relation *r3 = put(rc, &d3);
	const relation *r4 = put(rc, &d4);
	assert_int_equal(relcache_count(rc), 4);
	assert_ptr_equal(by_name(rc, "a.b", "c"), r1);
	assert_ptr_equal(by_name(rc, "a", "b.c"), r2);
	assert_ptr_equal(by_name(rc, "public", "t"), r3);
	assert_ptr_equal(by_name(rc, "audit", "t"), r4);
	assert_int_equal(r1->ncols, 1);
	assert_int_equal(r2->ncols, 2);
	assert_int_equal(r3->ncols, 3);
	assert_int_equal(r4->ncols, 0);
}

static void test_oid_zero_is_name_only(void **state)
{
	relcache *rc = *state;
	/* wal2json relations have no OID: found by name, never by OID 0, and a second
	 * description with the same name replaces the first. */
	relation d = mkrel(0, "public", "w", 2, cols3);
	const relation *r1 = put(rc, &d);
	assert_null(relcache_get_oid(rc, 0));
	uint32_t v1 = r1->version;
	d.ncols = 3;
	const relation *r2 = put(rc, &d);
	assert_int_equal(relcache_count(rc), 1);
	assert_int_equal(r2->version, v1 + 1);
	assert_int_equal(r2->ncols, 3);
	assert_ptr_equal(by_name(rc, "public", "w"), r2);
	assert_null(relcache_get_oid(rc, 0));
}

static void test_replace_by_oid_bumps_version(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(100, "public", "events", 2, cols3);
	const relation *r = put(rc, &d);
	uint32_t v = r->version;

	/* ALTER TABLE ... ADD COLUMN: a new description, same OID and name. */
	d.ncols = 3;
	const relation *r2 = put(rc, &d);
	assert_int_equal(r2->version, v + 1);
	assert_same_shape(r2, &d);
	assert_int_equal(relcache_count(rc), 1);
	/* Both keys reach the new copy. */
	assert_ptr_equal(relcache_get_oid(rc, 100), r2);
	assert_ptr_equal(by_name(rc, "public", "events"), r2);

	/* Every further replacement bumps again. */
	for (uint32_t i = 2; i < 10; i++) {
		d.ncols = (int)(i % 4);
		const relation *ri = put(rc, &d);
		assert_int_equal(ri->version, v + i);
		assert_int_equal(ri->ncols, (int)(i % 4));
		assert_ptr_equal(relcache_get_oid(rc, 100), ri);
		assert_ptr_equal(by_name(rc, "public", "events"), ri);
	}
	assert_int_equal(relcache_count(rc), 1);
}

static void test_replace_leaves_other_relations(void **state)
{
	relcache *rc = *state;
	relation a = mkrel(1, "public", "a", 1, cols3);
	relation b = mkrel(2, "public", "b", 2, cols3);
	uint32_t va = put(rc, &a)->version;
	const relation *rb = put(rc, &b);
	uint32_t vb = rb->version;
	a.ncols = 3;
	const relation *ra2 = put(rc, &a);
	assert_int_equal(ra2->version, va + 1);
	assert_int_equal(ra2->ncols, 3);
	assert_ptr_equal(relcache_get_oid(rc, 1), ra2);
	/* b is untouched: same pointer, same version. */
	assert_ptr_equal(relcache_get_oid(rc, 2), rb);
	assert_ptr_equal(by_name(rc, "public", "b"), rb);
	assert_int_equal(rb->version, vb);
	assert_int_equal(rb->ncols, 2);
	assert_int_equal(relcache_count(rc), 2);
}

static void test_rename_by_oid_reindexes(void **state)
{
	relcache *rc = *state;
	relation other = mkrel(7, "public", "other", 1, cols3);
	put(rc, &other);
	relation d = mkrel(42, "public", "old_name", 3, cols3);
	uint32_t v = put(rc, &d)->version;

	/* ALTER TABLE old_name RENAME TO new_name. */
	d.name = "new_name";
	const relation *r = put(rc, &d);
	assert_int_equal(relcache_count(rc), 2);
	assert_int_equal(r->version, v + 1);
	assert_string_equal(r->name, "new_name");
	assert_ptr_equal(relcache_get_oid(rc, 42), r);
	assert_ptr_equal(by_name(rc, "public", "new_name"), r);
	assert_null(by_name(rc, "public", "old_name"));

	/* ALTER TABLE ... SET SCHEMA. */
	d.schema = "archive";
	r = put(rc, &d);
	assert_int_equal(r->version, v + 2);
	assert_ptr_equal(relcache_get_oid(rc, 42), r);
	assert_ptr_equal(by_name(rc, "archive", "new_name"), r);
	assert_null(by_name(rc, "public", "new_name"));

	/* The old name can now be taken by a different relation. */
	relation fresh = mkrel(43, "public", "old_name", 1, cols3);
	const relation *rf = put(rc, &fresh);
	assert_int_equal(relcache_count(rc), 3);
	assert_ptr_equal(by_name(rc, "public", "old_name"), rf);
	assert_ptr_equal(relcache_get_oid(rc, 43), rf);
	assert_ptr_equal(relcache_get_oid(rc, 42), r);

	/* The unrelated relation is still reachable both ways. */
	assert_non_null(relcache_get_oid(rc, 7));
	assert_ptr_equal(by_name(rc, "public", "other"), relcache_get_oid(rc, 7));
}

static void test_newly_learned_oid(void **state)
{
	relcache *rc = *state;
	/* Known first by name only, later with its OID: one relation, now reachable by OID. */
	relation d = mkrel(0, "public", "t", 2, cols3);
	uint32_t v = put(rc, &d)->version;
	assert_null(relcache_get_oid(rc, 77));
	d.oid = 77;
	const relation *r = put(rc, &d);
	assert_int_equal(relcache_count(rc), 1);
	assert_int_equal(r->version, v + 1);
	assert_int_equal(r->oid, 77);
	assert_ptr_equal(relcache_get_oid(rc, 77), r);
	assert_ptr_equal(by_name(rc, "public", "t"), r);
}

static void test_zero_columns(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(9, "public", "empty", 0, NULL);
	const relation *r = put(rc, &d);
	assert_int_equal(r->ncols, 0);
	assert_int_equal(relation_column_index(r, "id", 2), -1);
	assert_int_equal(relation_column_index(r, "", 0), -1);
}

static void test_growth_past_16(void **state)
{
	relcache *rc = *state;
	/* The first pointer stays valid while the cache grows around it. */
	relation first = mkrel(1, "public", "t1", 3, cols3);
	const relation *r1 = put(rc, &first);
	char name[32];
	for (uint32_t i = 2; i <= 40; i++) {
		snprintf(name, sizeof(name), "t%u", i);
		relation d = mkrel(i, "public", name, (int)(i % 4), cols3);
		put(rc, &d);
		assert_int_equal(relcache_count(rc), i);
		/* Everything put so far is reachable after each insertion (and each growth). */
		for (uint32_t j = 1; j <= i; j++) {
			snprintf(name, sizeof(name), "t%u", j);
			const relation *r = relcache_get_oid(rc, j);
			assert_non_null(r);
			assert_string_equal(r->name, name);
			assert_ptr_equal(by_name(rc, "public", name), r);
		}
	}
	assert_ptr_equal(relcache_get_oid(rc, 1), r1);
	assert_string_equal(r1->name, "t1");
	assert_int_equal(r1->ncols, 3);
}

static void verify_many(const relcache *rc, int n, const uint32_t *versions, int renamed_mod)
{
	char schema[32], name[32];
	for (int i = 0; i < n; i++) {
		uint32_t oid = (uint32_t)(i + 1) * 1000003u;
		snprintf(schema, sizeof(schema), "s%d", i % 7);
		if (renamed_mod > 0 && i % renamed_mod == 0)
			snprintf(name, sizeof(name), "renamed_%d", i);
		else
			snprintf(name, sizeof(name), "rel_%d", i);
		const relation *r = relcache_get_oid(rc, oid);
		if (r == NULL)
			fail_msg("relation %d (oid %u) not found by OID", i, oid);
		assert_int_equal(r->oid, oid);
		assert_string_equal(r->schema, schema);
		assert_string_equal(r->name, name);
		assert_int_equal(r->ncols, i % 4);
		assert_int_equal(r->version, versions[i]);
		const relation *rn = by_name(rc, schema, name);
		if (rn != r)
			fail_msg("relation %d (%s.%s) not found by name", i, schema, name);
	}
}

static void test_many_relations(void **state)
{
	relcache *rc = *state;
	enum { N = 1000 };
	uint32_t versions[N];
	char schema[32], name[32];
	for (int i = 0; i < N; i++) {
		snprintf(schema, sizeof(schema), "s%d", i % 7);
		snprintf(name, sizeof(name), "rel_%d", i);
		relation d = mkrel((uint32_t)(i + 1) * 1000003u, schema, name, i % 4, cols3);
		versions[i] = put(rc, &d)->version;
	}
	assert_int_equal(relcache_count(rc), N);
	verify_many(rc, N, versions, 0);

	/* Absent keys. */
	assert_null(relcache_get_oid(rc, 1000003u * (N + 1)));
	assert_null(relcache_get_oid(rc, 1));
	assert_null(by_name(rc, "s0", "rel_1")); /* rel_1 lives in s1 */

	/* Replace every third, rename every fifth (which rebuilds the index in a big cache). */
	for (int i = 0; i < N; i++) {
		bool rename = i % 5 == 0;
		if (i % 3 != 0 && !rename)
			continue;
		snprintf(schema, sizeof(schema), "s%d", i % 7);
		snprintf(name, sizeof(name), rename ? "renamed_%d" : "rel_%d", i);
		relation d = mkrel((uint32_t)(i + 1) * 1000003u, schema, name, i % 4, cols3);
		uint32_t v = put(rc, &d)->version;
		assert_int_equal(v, versions[i] + 1);
		versions[i] = v;
	}
	assert_int_equal(relcache_count(rc), N);
	verify_many(rc, N, versions, 5);
	for (int i = 0; i < N; i += 5) {
		snprintf(schema, sizeof(schema), "s%d", i % 7);
		snprintf(name, sizeof(name), "rel_%d", i);
		assert_null(by_name(rc, schema, name));
	}
}

static void test_colliding_oids(void **state)
{
	relcache *rc = *state;
	/* OIDs that share all their low bits: correctness must not depend on a good spread. */
	enum { N = 600 };
	char name[32];
	for (uint32_t i = 1; i <= N; i++) {
		snprintf(name, sizeof(name), "c%u", i);
		relation d = mkrel(i << 20, "public", name, 1, cols3);
		put(rc, &d);
	}
	for (uint32_t i = 1; i <= N; i++) {
		snprintf(name, sizeof(name), "c%u", i);
		const relation *r = relcache_get_oid(rc, i << 20);
		assert_non_null(r);
		assert_string_equal(r->name, name);
	}
	assert_null(relcache_get_oid(rc, (N + 1) << 20));
	assert_null(relcache_get_oid(rc, 1u << 19));
}

static void test_many_oid_zero_relations(void **state)
{
	relcache *rc = *state;
	enum { N = 300 };
	char name[32];
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		relation d = mkrel(0, "public", name, 2, cols3);
		put(rc, &d);
	}
	/* Mixed with OID'd relations. */
	for (uint32_t i = 1; i <= 50; i++) {
		snprintf(name, sizeof(name), "o%u", i);
		relation d = mkrel(i, "public", name, 1, cols3);
		put(rc, &d);
	}
	assert_int_equal(relcache_count(rc), N + 50);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		const relation *r = by_name(rc, "public", name);
		assert_non_null(r);
		assert_string_equal(r->name, name);
		assert_int_equal(r->oid, 0);
	}
	for (uint32_t i = 1; i <= 50; i++) {
		snprintf(name, sizeof(name), "o%u", i);
		assert_ptr_equal(relcache_get_oid(rc, i), by_name(rc, "public", name));
	}
	assert_null(relcache_get_oid(rc, 0));
}

static void test_deep_copy(void **state)
{
	relcache *rc = *state;
	/* Every string of the description lives in memory the test then scribbles over and frees;
	 * the cache must not notice (ASan reports any use of the freed memory). */
	char *schema = strdup("public");
	char *name = strdup("events");
	rel_column *cols = calloc(2, sizeof(*cols));
	assert_non_null(schema);
	assert_non_null(name);
	assert_non_null(cols);
	cols[0] = (rel_column){.name = strdup("id"), .type_oid = 23, .typmod = -1, .key = true};
	cols[1] = (rel_column){.name = strdup("body"), .type_oid = 25, .typmod = -1, .key = false};
	assert_non_null(cols[0].name);
	assert_non_null(cols[1].name);
	relation d = mkrel(500, schema, name, 2, cols);
	const relation *r = put(rc, &d);

	memset(schema, 'X', strlen(schema));
	memset(name, 'Y', strlen(name));
	cols[0].name[0] = 'Z';
	cols[1].type_oid = 9999;
	cols[1].key = true;
	d.ncols = 1;
	d.oid = 501;
	free(cols[0].name);
	free(cols[1].name);
	free(cols);
	free(schema);
	free(name);

	assert_int_equal(r->oid, 500);
	assert_string_equal(r->schema, "public");
	assert_string_equal(r->name, "events");
	assert_int_equal(r->ncols, 2);
	assert_string_equal(r->cols[0].name, "id");
	assert_int_equal(r->cols[0].type_oid, 23);
	assert_true(r->cols[0].key);
	assert_string_equal(r->cols[1].name, "body");
	assert_int_equal(r->cols[1].type_oid, 25);
	assert_false(r->cols[1].key);
	assert_ptr_equal(by_name(rc, "public", "events"), r);
	assert_ptr_equal(relcache_get_oid(rc, 500), r);
	assert_int_equal(relation_column_index(r, "body", 4), 1);
}

static void test_column_index(void **state)
{
	relcache *rc = *state;
	rel_column cols[] = {
		{.name = "id", .type_oid = 23, .typmod = -1},
		{.name = "i", .type_oid = 23, .typmod = -1},
		{.name = "idx", .type_oid = 23, .typmod = -1},
		{.name = "Body text", .type_oid = 25, .typmod = -1},
		{.name = "\xC3\xA9t\xC3\xA9", .type_oid = 25, .typmod = -1},
	};
	relation d = mkrel(1, "public", "t", 5, cols);
	const relation *r = put(rc, &d);
	assert_int_equal(relation_column_index(r, "id", 2), 0);
	assert_int_equal(relation_column_index(r, "i", 1), 1);
	assert_int_equal(relation_column_index(r, "idx", 3), 2);
	assert_int_equal(relation_column_index(r, "Body text", 9), 3);
	assert_int_equal(relation_column_index(r, "\xC3\xA9t\xC3\xA9", 5), 4);
	/* Prefixes, extensions, case: no match. */
	assert_int_equal(relation_column_index(r, "body text", 9), -1);
	assert_int_equal(relation_column_index(r, "Body", 4), -1);
	assert_int_equal(relation_column_index(r, "idxx", 4), -1);
	assert_int_equal(relation_column_index(r, "missing", 7), -1);
	assert_int_equal(relation_column_index(r, "", 0), -1);
	/* The length decides: slices of longer strings, and buffers without a NUL. */
	assert_int_equal(relation_column_index(r, "idx", 2), 0);
	assert_int_equal(relation_column_index(r, "id_and_more", 2), 0);
	assert_int_equal(relation_column_index(r, "ix", 1), 1);
	const char raw[3] = {'i', 'd', 'x'};
	assert_int_equal(relation_column_index(r, raw, 3), 2);
	assert_int_equal(relation_column_index(r, raw, 2), 0);
}

static int child_column_index_embedded_nul(void)
{
	relcache *rc = relcache_create();
	if (rc == NULL)
		return 2;
	rel_column cols[] = {{.name = "id", .type_oid = 23, .typmod = -1}};
	relation d = mkrel(1, "public", "t", 1, cols);
	const relation *r = NULL;
	if (relcache_put(rc, &d, &r) != 0)
		return 2;
	/* "id\0xyz" (6 bytes) is not the column "id". */
	int idx = relation_column_index(r, "id\0xyz", 6);
	relcache_destroy(rc);
	return idx == -1 ? 0 : 1;
}

/* BUG (relcache.c relation_column_index): strncmp stops at the NUL inside a name that carries
 * one, so "id\0xyz" with name_len 6 compares equal to "id", and n[name_len] = n[6] is then
 * read, 3 bytes past the end of the 3-byte "id" allocation (ASan: heap-buffer-overflow;
 * without ASan a false match when that byte happens to be 0). Names come from the wire, so
 * this must give -1 without reading out of bounds. Runs in a child so a crash fails only
 * this test. */
static void test_column_index_embedded_nul(void **state)
{
	assert_true(run_in_child(child_column_index_embedded_nul));
}

/* ---- ids and references ---------------------------------------------------------------- */

static void test_ids_unique_and_never_reused(void **state)
{
	relcache *rc = *state;
	uint64_t seen[64];
	int n = 0;
	relation a = mkrel(100, "public", "t", 2, cols3);
	const relation *r = put(rc, &a);
	assert_int_not_equal(r->id, 0);
	seen[n++] = r->id;
	/* Replacements, other relations, renames: every relation made has an id not seen before. */
	for (int i = 0; i < 20; i++) {
		a.ncols = 1 + i % 3;
		seen[n++] = put(rc, &a)->id;
		relation o = mkrel(200 + (uint32_t)i, "public", i % 2 ? "x" : "y", 1, cols3);
		seen[n++] = put(rc, &o)->id;
	}
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			assert_true(seen[i] != seen[j] && seen[i] < seen[j]);
}

/* Item 7 of issue 6: the version restarts at 1 for a relation new to the cache, so a table
 * dropped and recreated under its old name can come back as (name, version 1), possibly at the
 * freed address; only the id tells the two apart. */
static void test_recreated_relation_gets_new_id(void **state)
{
	relcache *rc = *state;
	relation t = mkrel(100, "public", "t", 3, cols3);
	const relation *r1 = put(rc, &t);
	assert_int_equal(r1->version, 1);
	uint64_t id1 = r1->id;
	/* DROP TABLE t; ALTER TABLE u RENAME TO t: the stale t is dropped from the cache. */
	relation u = mkrel(200, "public", "u", 1, cols3);
	put(rc, &u);
	u.name = "t";
	put(rc, &u);
	/* ALTER TABLE t RENAME TO w; CREATE TABLE t: a new t at version 1. */
	u.name = "w";
	put(rc, &u);
	assert_null(by_name(rc, "public", "t"));
	relation t2 = mkrel(300, "public", "t", 2, cols3);
	const relation *r2 = put(rc, &t2);
	assert_int_equal(r2->version, 1);
	assert_string_equal(r2->name, "t");
	assert_true(r2->id != id1);
}

static void test_ref_keeps_replaced_relation(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(100, "public", "events", 3, cols3);
	const relation *r1 = relation_ref(put(rc, &d));
	assert_int_equal(r1->refs, 1);
	assert_false(r1->detached);
	assert_ptr_equal(relation_ref(r1), r1);
	assert_int_equal(r1->refs, 2);

	/* ALTER TABLE: the cache moves on; r1 stays as it was (ASan: no use after free). */
	d.ncols = 2;
	d.cols = &cols3[1];
	const relation *r2 = put(rc, &d);
	assert_ptr_not_equal(r2, r1);
	assert_int_equal(r2->refs, 0);
	assert_true(r2->id > r1->id);
	assert_ptr_equal(relcache_get_oid(rc, 100), r2);
	assert_true(r1->detached);
	assert_int_equal(r1->ncols, 3);
	assert_string_equal(r1->cols[0].name, "id");
	assert_string_equal(r1->cols[2].name, "price");
	assert_string_equal(r1->name, "events");

	/* The first unref keeps it; the last frees it (the heap shrinks; LSan: no leak). */
	relation_unref(r1);
	assert_int_equal(r1->refs, 1);
	assert_string_equal(r1->cols[1].name, "body");
	size_t before = heap_in_use();
	relation_unref(r1);
	assert_true(heap_in_use() < before);
	/* The cached relation is untouched. */
	assert_ptr_equal(by_name(rc, "public", "events"), r2);
	assert_string_equal(r2->cols[0].name, "body");
}

static void test_unref_of_cached_relation_keeps_it(void **state)
{
	relcache *rc = *state;
	relation d = mkrel(5, "public", "a", 3, cols3);
	const relation *r = put(rc, &d);
	for (int i = 0; i < 3; i++)
		relation_ref(r);
	for (int i = 0; i < 3; i++)
		relation_unref(r);
	assert_int_equal(r->refs, 0);
	assert_false(r->detached);
	/* Still cached and valid; teardown's relcache_destroy frees it once (ASan: no double free). */
	assert_ptr_equal(relcache_get_oid(rc, 5), r);
	assert_string_equal(r->cols[2].name, "price");
	/* NULL is a no-op both ways. */
	assert_null(relation_ref(NULL));
	relation_unref(NULL);
}

static void test_ref_keeps_stale_dropped_relation(void **state)
{
	relcache *rc = *state;
	relation t = mkrel(100, "public", "t", 3, cols3);
	const relation *old = relation_ref(put(rc, &t));
	relation u = mkrel(200, "public", "u", 1, cols3);
	put(rc, &u);
	/* u renamed to t while the cache still holds the dropped t: the stale one leaves the cache. */
	u.name = "t";
	const relation *nt = put(rc, &u);
	assert_int_equal(relcache_count(rc), 1);
	assert_ptr_equal(by_name(rc, "public", "t"), nt);
	assert_null(relcache_get_oid(rc, 100));
	assert_true(old->detached);
	assert_int_equal(old->oid, 100);
	assert_int_equal(old->ncols, 3);
	assert_string_equal(old->cols[1].name, "body");
	relation_unref(old);
}

static void test_ref_outlives_cache(void **state)
{
	(void)state;
	relcache *rc = relcache_create();
	assert_non_null(rc);
	relation a = mkrel(1, "public", "a", 3, cols3);
	relation b = mkrel(2, "public", "b", 2, cols3);
	const relation *ra = relation_ref(put(rc, &a));
	put(rc, &b);
	/* A replaced relation still referenced, and one still cached and referenced. */
	a.ncols = 1;
	const relation *ra2 = relation_ref(put(rc, &a));
	relcache_destroy(rc);
	/* Both stay valid (detached) until their last unref frees them: no leak, no use after free. */
	assert_true(ra->detached);
	assert_true(ra2->detached);
	assert_int_equal(ra->ncols, 3);
	assert_int_equal(ra2->ncols, 1);
	assert_string_equal(ra2->cols[0].name, "id");
	assert_string_equal(ra->schema, "public");
	relation_unref(ra);
	relation_unref(ra2);
}

/* A caller's own relation (not from a cache) is counted, never freed. */
static void test_ref_of_own_relation(void **state)
{
	(void)state;
	relation own = mkrel(1, "public", "own", 3, cols3);
	assert_ptr_equal(relation_ref(&own), &own);
	relation_unref(&own);
	assert_int_equal(own.refs, 0);
	assert_false(own.detached);
	/* An unbalanced unref does not wrap the count. */
	relation_unref(&own);
	assert_int_equal(own.refs, 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_empty),
		T(test_put_and_get),
		T(test_put_out_optional),
		T(test_get_name_uses_lengths),
		T(test_schema_and_name_are_separate_keys),
		T(test_oid_zero_is_name_only),
		T(test_replace_by_oid_bumps_version),
		T(test_replace_leaves_other_relations),
		T(test_rename_by_oid_reindexes),
		T(test_newly_learned_oid),
		T(test_zero_columns),
		T(test_growth_past_16),
		T(test_many_relations),
		T(test_colliding_oids),
		T(test_many_oid_zero_relations),
		T(test_deep_copy),
		T(test_column_index),
		cmocka_unit_test(test_column_index_embedded_nul),
		T(test_ids_unique_and_never_reused),
		T(test_recreated_relation_gets_new_id),
		T(test_ref_keeps_replaced_relation),
		T(test_unref_of_cached_relation_keeps_it),
		T(test_ref_keeps_stale_dropped_relation),
		cmocka_unit_test(test_ref_outlives_cache),
		cmocka_unit_test(test_ref_of_own_relation),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
