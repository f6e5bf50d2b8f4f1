/*
 * fuzz_wal2json — libFuzzer target for the wal2json decoder (plugins/decoders/wal2json.c,
 * plugins/decoders/json_scan.c).
 *
 * Input: lines separated by '\n', each one XLogData payload (the last line may lack its '\n').
 * A first line "#seed" puts the differential workload's relations into the cache first, as the
 * source does from the catalog, so both the seeded and the unseeded paths are explored. Every
 * line goes through one decoder, in order, from an exactly-sized heap copy (so ASan sees any
 * read past the payload), with a sink that checks the records and serializes each change with
 * change_json_write. A decode error resets the decoder, as the source does on reconnect, and
 * decoding goes on.
 *
 * Checks: no crash, no sanitizer report, -EPROTO always comes with a message, no other negative
 * result but -ENOMEM, begin/commit alternate, text values are NUL-terminated, every change has
 * the transaction and relation it must have.
 *
 * Seeds: tests/fuzz/corpus/wal2json/ (one captured transaction per file, from
 * tests/fixtures/wal2json/workload.msgs, written by tests/fixtures/capture_wal2json.sh).
 * Dictionary: tests/fuzz/wal2json.dict. Run e.g.
 *   fuzz_wal2json -max_total_time=60 -max_len=16384 -dict=tests/fuzz/wal2json.dict \
 *     /tmp/corpus tests/fuzz/corpus/wal2json
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "change.h"
#include "decoder.h"
#include "relcache.h"

typedef struct fuzz_sink {
	buf out;
	int depth; /* 1 inside begin/commit */
} fuzz_sink;

static int fuzz_begin_cb(void *arg, const change_txn *txn)
{
	fuzz_sink *s = arg;
	if (s->depth != 0)
		abort(); /* a Begin inside a transaction got through */
	s->depth = 1;
	(void)txn;
	return 0;
}

static int fuzz_commit_cb(void *arg, const change_txn *txn)
{
	fuzz_sink *s = arg;
	if (s->depth != 1)
		abort();
	s->depth = 0;
	(void)txn;
	return 0;
}

static void tuple_check(const relation *rel, const change_value *t)
{
	for (int i = 0; i < rel->ncols; i++) {
		if (t[i].kind > VALUE_UNCHANGED)
			abort();
		if (t[i].kind == VALUE_TEXT && (t[i].data == NULL || t[i].data[t[i].len] != '\0'))
			abort();
	}
}

static int fuzz_change_cb(void *arg, change *c)
{
	fuzz_sink *s = arg;
	if (c->txn == NULL && !(c->action == CHANGE_MESSAGE && !c->transactional))
		abort(); /* only non-transactional messages may come without a transaction */
	if (c->txn != NULL && s->depth != 1)
		abort();
	if (c->action == CHANGE_MESSAGE) {
		if (c->prefix == NULL || c->content == NULL || c->content[c->content_len] != '\0')
			abort();
	} else {
		if (c->rel == NULL)
			abort();
		if ((c->action == CHANGE_INSERT || c->action == CHANGE_UPDATE) != (c->new_tuple != NULL))
			abort();
		if (c->action == CHANGE_DELETE && c->old_tuple == NULL)
			abort();
		if (c->new_tuple)
			tuple_check(c->rel, c->new_tuple);
		if (c->old_tuple)
			tuple_check(c->rel, c->old_tuple);
	}
	buf_clear(&s->out);
	int rc = change_json_write(&s->out, c, CHANGE_JSON_TYPES);
	return rc == -ENOMEM ? rc : 0;
}

static void seed_put(relcache *rc, const char *table, char replident, const char *const *names,
                     const uint32_t *types, int n)
{
	rel_column cols[32];
	for (int i = 0; i < n; i++)
		cols[i] = (rel_column){.name = (char *)names[i], .type_oid = types[i], .typmod = -1,
		                       .key = i == 0};
	relation desc = {.schema = "public", .name = (char *)table, .ncols = n, .cols = cols,
	                 .replident = replident};
	if (relcache_put(rc, &desc, NULL) < 0)
		abort();
}

static void seed_workload(relcache *rc)
{
	static const char *const dn[] = {"id", "small", "i", "n", "f4", "f8", "ok", "t", "vc",
	                                 "j", "js", "arr", "tarr", "ts", "d", "by", "u", "big"};
	static const uint32_t dt[] = {20, 21, 23, 1700, 700, 701, 16, 25, 1043,
	                              3802, 114, 1007, 1009, 1184, 1082, 17, 2950, 25};
	static const char *const fn[] = {"id", "note", "big"};
	static const uint32_t ft[] = {23, 25, 25};
	seed_put(rc, "difftypes", 'd', dn, dt, 18);
	seed_put(rc, "diffull", 'f', fn, ft, 3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_sink sink = {.depth = 0};
	buf_init(&sink.out);
	relcache *rc = relcache_create();
	if (rc == NULL)
		abort();
	decoder_params p = {
		.relations = rc,
		.sink = {.begin_cb = fuzz_begin_cb, .change_cb = fuzz_change_cb,
		         .commit_cb = fuzz_commit_cb, .arg = &sink},
	};
	decoder *d;
	if (decoder_create(decoder_ops_find("wal2json"), &p, &d) < 0)
		abort();
	size_t pos = 0;
	if (size >= 6 && memcmp(data, "#seed\n", 6) == 0) {
		seed_workload(rc);
		pos = 6;
	}
	uint64_t lsn = 0x1000000;
	while (pos <= size) {
		const uint8_t *nl = memchr(data + pos, '\n', size - pos);
		size_t len = nl ? (size_t)(nl - data) - pos : size - pos;
		uint8_t *line = malloc(len ? len : 1);
		if (line == NULL)
			abort();
		memcpy(line, data + pos, len);
		char err[DECODER_ERROR_MAX];
		int r = decoder_decode(d, lsn, line, len, err);
		free(line);
		if (r == -EPROTO) {
			if (err[0] == '\0')
				abort(); /* an error without a message */
			decoder_reset(d);
			sink.depth = 0;
		} else if (r < 0 && r != -ENOMEM) {
			abort();
		}
		lsn += 0x40;
		if (nl == NULL)
			break;
		pos += len + 1;
	}
	decoder_destroy(d);
	relcache_destroy(rc);
	buf_fini(&sink.out);
	return 0;
}
