/*
 * txn_source — the contract between the pipeline and where its transactions come from: a
 * txn_source_ops and an opaque instance, as the sinks have theirs (src/pipeline/sink.h). The
 * pipeline drives a source through these and nothing else, so it does not know whether the
 * transactions come from a replication slot (source.h: replication_source_ops) or from another
 * walcast's change stream (an edge: docs/edges.md).
 *
 * What a source delivers, through txn_source_events, on the loop thread: decoded transactions
 * in commit order (begin, changes, commit) and non-transactional messages, each once per
 * source, from where start() says to resume.
 *
 * Positions the consumer confirms: a transaction's end_lsn once it took the whole transaction;
 * a non-transactional message's lsn once it took the message — never more (source.h says why
 * for PostgreSQL).
 */
#ifndef WALCAST_TXN_SOURCE_H
#define WALCAST_TXN_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "decoder.h"
#include "loop.h"
#include "relcache.h"

#define TXN_SOURCE_ERROR_MAX 256

/* The consumer's callbacks, on the loop thread from inside the source: they may call confirm,
 * pause, resume and the getters below, never stop or destroy (stop from a timer). */
typedef struct txn_source_events {
	decoder_sink sink; /* decoded changes, in stream order */
	/* The transaction being received was cut off (connection lost): the source will deliver it
	 * again from its beginning, so drop whatever was kept of it. May be NULL. */
	void (*abandon_cb)(void *arg);
	/* The slot was just created; snapshot names the exported snapshot in which the database is
	 * exactly as of consistent_lsn, the point the stream starts from. Another connection can
	 * `SET TRANSACTION SNAPSHOT` to it to load initial state. The snapshot stays valid until the
	 * source sends its next command, so: return 0 to go on at once, or 1 to hold the stream
	 * until snapshot_done(). May be NULL. */
	int (*snapshot_cb)(void *arg, const char *snapshot, uint64_t consistent_lsn);
	/* Streaming started (or restarted) from start_lsn. May be NULL. */
	void (*streaming_cb)(void *arg, uint64_t start_lsn);
	/* The source is idle between transactions: the consumer has received everything up to
	 * wal_end (it may still have to flush and confirm it). May be NULL. */
	void (*idle_cb)(void *arg, uint64_t wal_end);
	/* Everything one read brought has been delivered: a consumer that groups its output sends
	 * it now. Called after every read, also one that delivered nothing. May be NULL. */
	void (*batch_end_cb)(void *arg);
	/* A permanent problem: the source stopped and will not retry; why says what and how to fix
	 * it (the source logged it already). Required. */
	void (*failed_cb)(void *arg, const char *why);
	void *arg;
} txn_source_events;

typedef struct txn_source_ops {
	/* Creates a source for cfg (borrowed; must outlive the source), delivering into events
	 * (copied), with relations cached in rels (borrowed). Does not connect yet. 0 and *out
	 * (destroy frees it), or a negative errno with err. Does not block. */
	int (*create)(loop *l, const config *cfg, relcache *rels, const txn_source_events *events,
	              void **out, char err[TXN_SOURCE_ERROR_MAX]);
	/* Frees the source; stops it first if needed. Safe on NULL. */
	void (*destroy)(void *impl);
	/* Starts connecting. resume_lsn, if not 0, is where the consumer's own durable state says to
	 * resume (transactions committed before it are not delivered). 0 or a negative errno (a
	 * permanent error may also come through failed_cb first). Does not block. */
	int (*start)(void *impl, uint64_t resume_lsn);
	/* Tells the upstream what was confirmed, one last time, and disconnects. May block for a
	 * bounded time (the source says how long). */
	void (*stop)(void *impl);
	/* The consumer has durably taken everything through lsn (see above). Cheap. */
	void (*confirm)(void *impl, uint64_t lsn);
	/* Stops delivering (a consumer over its memory bound) until resume; a callback in progress
	 * finishes. Idempotent. Does not block. */
	void (*pause)(void *impl);
	/* Delivers again, from a timer (never from inside the caller, which may be one of this
	 * source's callbacks). Idempotent. Does not block. */
	void (*resume)(void *impl);
	/* After snapshot_cb returned 1: the snapshot was used, go on. NULL for a source that never
	 * calls snapshot_cb. */
	void (*snapshot_done)(void *impl);
	/* Lets the source create the publication it reads, FOR TABLE exactly schemas[i].names[i]
	 * (copied); before start. 0, -EINVAL (n == 0) or -ENOMEM. NULL for a source that reads no
	 * publication. */
	int (*publication_tables)(void *impl, const char *const *schemas, const char *const *names, size_t n);
	/* true while delivering is possible (connected and streaming). */
	bool (*streaming)(const void *impl);
	/* Messages the source could not decode so far (each one stops it: failed_cb). */
	uint64_t (*decode_errors)(const void *impl);
	/* The highest position received from upstream, for status. */
	uint64_t (*received_lsn)(const void *impl);
	/* What the source told upstream as confirmed: the consumer's confirm, or further where the
	 * source knows nothing of interest lies before (a keepalive between transactions). */
	uint64_t (*confirmed_lsn)(const void *impl);
} txn_source_ops;

#endif
