/*
 * fuzz_pgoutput — libFuzzer target for the pgoutput decoder (plugins/decoders/pgoutput.c).
 *
 * Input: a sequence of messages, each a big-endian uint16 length and that many bytes (a short
 * last chunk is decoded as it is). Every message goes through one decoder, in order, with a
 * sink that serializes each change with change_json_write, so the whole path from wire bytes
 * to JSON is exercised. A decode error resets the decoder, as the source does on reconnect,
 * and decoding goes on. Checks: no crash, no sanitizer report, -EPROTO always comes with an
 * error message, and no other negative result but -ENOMEM.
 *
 * Seeds: tests/fuzz/corpus/pgoutput/ (written by tests/fixtures/capture_pgoutput.sh from a
 * real stream).
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
	int depth; /* 1 inside begin/commit, as the callbacks see it */
} fuzz_sink;

static int fuzz_begin_cb(void *arg, const change_txn *txn)
{
	fuzz_sink *s = arg;
	if (s->depth != 0)
		abort(); /* the decoder let a Begin in inside a transaction */
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

static int fuzz_change_cb(void *arg, change *c)
{
	fuzz_sink *s = arg;
	if (c->txn == NULL && !(c->action == CHANGE_MESSAGE && !c->transactional))
		abort(); /* only non-transactional messages may come without a transaction */
	if (c->action != CHANGE_MESSAGE && c->rel == NULL)
		abort();
	buf_clear(&s->out);
	int rc = change_json_write(&s->out, c, CHANGE_JSON_TYPES);
	return rc == -ENOMEM ? rc : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	relcache *rc = relcache_create();
	fuzz_sink sink = {.depth = 0};
	buf_init(&sink.out);
	decoder *dec = NULL;
	decoder_params p = {
		.relations = rc,
		.sink = {.begin_cb = fuzz_begin_cb, .change_cb = fuzz_change_cb,
		         .commit_cb = fuzz_commit_cb, .arg = &sink},
		.publication = "walcast_diff",
	};
	if (rc == NULL || decoder_create(decoder_ops_find("pgoutput"), &p, &dec) != 0)
		goto out;
	char err[DECODER_ERROR_MAX];
	uint64_t lsn = 0x1000000;
	size_t off = 0;
	while (off < size) {
		size_t len = size - off < 2 ? 0 : (size_t)data[off] << 8 | data[off + 1];
		off += size - off < 2 ? size - off : 2;
		if (len > size - off)
			len = size - off;
		/* An exact-size copy, so ASan catches any read past the message. */
		uint8_t *msg = malloc(len ? len : 1);
		if (msg == NULL)
			break;
		memcpy(msg, data + off, len);
		off += len;
		int r = decoder_decode(dec, lsn, msg, len, err);
		free(msg);
		lsn += 0x40;
		if (r == -EPROTO) {
			if (err[0] == '\0' || memchr(err, '\0', DECODER_ERROR_MAX) == NULL)
				abort();
			decoder_reset(dec);
			sink.depth = 0;
		} else if (r != 0 && r != -ENOMEM) {
			abort();
		}
	}
out:
	decoder_destroy(dec);
	relcache_destroy(rc);
	buf_fini(&sink.out);
	return 0;
}
