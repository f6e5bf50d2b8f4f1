/*
 * The decoders' contract with each other: the same WAL, carried by pgoutput and by wal2json,
 * yields byte-identical normalized records — transaction boundaries, LSNs, commit times,
 * relations with column types, every value. The fixtures in tests/fixtures/diff/ are one run of
 * the differential workload captured through both plugins (tests/fixtures/capture_diff.sh).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "change.h"
#include "decoder.h"
#include "lsn.h"
#include "relcache.h"

#include "diff_fixture.h"

typedef struct transcript {
	buf text; /* one line per begin, change and commit */
	int changes;
} transcript;

static int t_begin(void *arg, const change_txn *txn)
{
	transcript *t = arg;
	char a[LSN_TEXT_MAX];
	return buf_printf(&t->text, "BEGIN xid=%u commit_lsn=%s time=%lld\n", txn->xid,
	                  lsn_format(txn->commit_lsn, a), (long long)txn->commit_time);
}

static int t_change(void *arg, change *c)
{
	transcript *t = arg;
	t->changes++;
	int rc = change_json_write(&t->text, c, CHANGE_JSON_TYPES);
	return rc == 0 ? buf_putc(&t->text, '\n') : rc;
}

static int t_commit(void *arg, const change_txn *txn)
{
	transcript *t = arg;
	char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
	return buf_printf(&t->text, "COMMIT xid=%u commit_lsn=%s end_lsn=%s\n", txn->xid,
	                  lsn_format(txn->commit_lsn, a), lsn_format(txn->end_lsn, b));
}

/* Decodes every "LSN<TAB>payload" line of a fixture; hex payloads are converted to bytes. */
static void decode_fixture(const char *plugin, const char *file, bool hex, relcache *rels, transcript *t)
{
	decoder_params p = {.relations = rels, .sink = {t_begin, t_change, t_commit, t}, .publication = "walcast_diff"};
	decoder *d = NULL;
	assert_int_equal(decoder_create(decoder_ops_find(plugin), &p, &d), 0);
	FILE *f = fopen(fixture_path(file), "r");
	assert_non_null(f);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint8_t *bytes = NULL;
	int lineno = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		lineno++;
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		char *tab = strchr(line, '\t');
		assert_non_null(tab);
		uint64_t lsn;
		assert_int_equal(lsn_parse(line, (size_t)(tab - line), &lsn), 0);
		const char *payload = tab + 1;
		size_t plen = strlen(payload);
		const uint8_t *data = (const uint8_t *)payload;
		if (hex) {
			bytes = realloc(bytes, plen / 2 + 1);
			for (size_t i = 0; i < plen / 2; i++)
				bytes[i] = (uint8_t)(hexval(payload[2 * i]) << 4 | hexval(payload[2 * i + 1]));
			data = bytes;
			plen /= 2;
		}
		char err[DECODER_ERROR_MAX];
		int rc = decoder_decode(d, lsn, data, plen, err);
		if (rc != 0)
			fail_msg("%s line %d: decode failed (%d): %s", file, lineno, rc, err);
	}
	free(bytes);
	free(line);
	fclose(f);
	decoder_destroy(d);
}

static void compare(bool seed)
{
	transcript p = {0}, w = {0};
	buf_init(&p.text);
	buf_init(&w.text);
	relcache *rp = relcache_create(), *rw = relcache_create();
	if (seed)
		seed_catalog(rw);
	decode_fixture("pgoutput", "pgoutput.msgs", true, rp, &p);
	decode_fixture("wal2json", "wal2json.msgs", false, rw, &w);
	assert_true(p.changes > 60);
	assert_int_equal(p.changes, w.changes);
	if (strcmp(p.text.data, w.text.data) != 0) {
		/* Point at the first differing line. */
		const char *a = p.text.data, *b = w.text.data;
		int line = 1;
		while (*a && *a == *b) {
			if (*a == '\n')
				line++;
			a++, b++;
		}
		const char *la = a, *lb = b;
		while (la > p.text.data && la[-1] != '\n')
			la--;
		while (lb > w.text.data && lb[-1] != '\n')
			lb--;
		fail_msg("line %d differs:\npgoutput: %.600s\nwal2json: %.600s", line, la, lb);
	}
	relcache_destroy(rp);
	relcache_destroy(rw);
	buf_fini(&p.text);
	buf_fini(&w.text);
}

static void test_identical_seeded(void **state)
{
	compare(true);
}

static void test_identical_unseeded(void **state)
{
	compare(false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identical_seeded),
		cmocka_unit_test(test_identical_unseeded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
