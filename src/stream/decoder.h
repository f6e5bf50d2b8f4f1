/*
 * decoder — the interface between the replication source and the output-plugin decoders in
 * plugins/. A decoder turns the payload of each XLogData message into normalized records
 * (change.h) and calls the sink's callbacks, in stream order:
 *   begin_cb(txn), change_cb(change)..., commit_cb(txn)   for each transaction,
 *   change_cb(change) with change->txn == NULL             for a non-transactional message.
 * A callback returning non-zero stops decoding of that payload; decoder_decode() returns it.
 *
 * A new decoder is one file in plugins/ that defines a decoder_ops and one line in decoder.c.
 */
#ifndef WALCAST_DECODER_H
#define WALCAST_DECODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "relcache.h"

typedef struct decoder_sink {
	int (*begin_cb)(void *arg, const change_txn *txn);
	int (*change_cb)(void *arg, change *c);
	int (*commit_cb)(void *arg, const change_txn *txn);
	void *arg;
} decoder_sink;

typedef struct decoder_params {
	relcache *relations;     /* borrowed: the decoder adds and looks up relations here */
	decoder_sink sink;
	const char *publication; /* pgoutput: publication name */
} decoder_params;

#define DECODER_ERROR_MAX 256

typedef struct decoder_ops {
	const char *name; /* the output plugin name given to CREATE_REPLICATION_SLOT */
	/* Returns 0 and *out, or a negative errno. */
	int (*create)(const decoder_params *p, void **out);
	void (*destroy)(void *impl);
	/* The option list for START_REPLICATION ... LOGICAL x/y (<this>), e.g.
	 * "proto_version '1', publication_names '\"walcast\"'". Owned by the decoder. */
	const char *(*start_options)(void *impl);
	/* Decodes one XLogData payload that starts at WAL position wal_start. Returns 0, a
	 * callback's non-zero result, -EPROTO for malformed or unexpected input (with a message in
	 * err naming what was wrong), or -ENOMEM. Never reads outside data[0..len). */
	int (*decode)(void *impl, uint64_t wal_start, const uint8_t *data, size_t len,
	              char err[DECODER_ERROR_MAX]);
	/* Forgets any transaction in progress (after a reconnect). */
	void (*reset)(void *impl);
	/* Optional: a notice the server sent on the replication connection (libpq's text,
	 * "WARNING:  ..."). Returns true when the decoder has dealt with it (logged or
	 * deliberately silenced), false to have it logged as is. */
	bool (*notice)(void *impl, const char *message);
} decoder_ops;

typedef struct decoder decoder;

/* The registered decoder named name ("pgoutput", "wal2json"), or NULL. */
const decoder_ops *decoder_ops_find(const char *name);

/* Writes the space-separated names of the registered decoders into out (for help and errors)
 * and returns out. */
const char *decoder_names(char *out, size_t n);

/* Creates a decoder of the given kind; 0 and *out (caller owns, decoder_destroy frees) or a
 * negative errno. */
__attribute__((warn_unused_result)) int decoder_create(const decoder_ops *ops,
                                                       const decoder_params *p, decoder **out);
void decoder_destroy(decoder *d);
const char *decoder_name(const decoder *d);
const char *decoder_start_options(decoder *d);
/* See decoder_ops.decode; err receives a message when the result is -EPROTO. */
__attribute__((warn_unused_result)) int decoder_decode(decoder *d, uint64_t wal_start,
                                                       const uint8_t *data, size_t len,
                                                       char err[DECODER_ERROR_MAX]);
void decoder_reset(decoder *d);

/* A libpq notice processor for the replication connection, arg = the decoder: the server's
 * notices go to the decoder's notice op first, then to log_pg_notice. Never blocks. */
void decoder_notice_cb(void *arg, const char *message);

/* For decoders: completes a change (fills unchanged TOAST values from the old tuple) and hands
 * it to the sink. Every decoder delivers changes through this. */
int decoder_emit_change(const decoder_sink *sink, change *c);

#endif
