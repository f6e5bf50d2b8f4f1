/*
 * source — the replication client: one libpq connection in replication=database mode, driven
 * non-blocking on the event loop, that finds or creates the slot (and checks the publication for
 * pgoutput), streams XLogData into a decoder, answers keepalives, sends standby status updates
 * and reconnects with backoff when PostgreSQL goes away.
 *
 * Acknowledgement: the flush position reported to PostgreSQL is only ever what the consumer
 * passed to source_confirm(), i.e. what it has durably taken — except when nothing is in
 * flight (no transaction open, every delivered position confirmed): then a keepalive's position
 * is confirmed too, so an idle database does not pin WAL.
 *
 * Each transaction and message reaches the consumer once per source: after a reconnect the
 * server starts again at the confirmed position, and what it sends again that was delivered
 * before (a transaction whose commit begins before the last delivered position, a message
 * ending at or before it) is dropped here.
 *
 * Positions a consumer confirms: a transaction's txn->end_lsn once it took the whole
 * transaction; a non-transactional message's lsn itself once it took the message — never more.
 * Why exactly that: PostgreSQL gives a message the END of its WAL record as its LSN, and on
 * restart skips every transaction whose COMMIT record begins before the confirmed position (and
 * every message whose record begins before it). A message written inside a transaction is
 * decoded and sent when its record is read, before that transaction (sent at its commit), and
 * the transaction's COMMIT can begin exactly where the message's record ends: confirming
 * lsn + 1 would skip that whole transaction on the next start; confirming lsn skips the message
 * (it began before) and keeps every transaction still to come (their commits begin at or after).
 */
#ifndef WALCAST_SOURCE_H
#define WALCAST_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "decoder.h"
#include "loop.h"

typedef struct source source;

typedef struct source_events {
	decoder_sink sink; /* decoded changes, in stream order */
	/* The transaction being received was cut off (connection lost): the server will send it
	 * again from its beginning, so drop whatever was kept of it. May be NULL. */
	void (*abandon_cb)(void *arg);
	/* The slot was just created; snapshot names the exported snapshot in which the database is
	 * exactly as of consistent_lsn, the point the stream starts from. Another connection can
	 * `SET TRANSACTION SNAPSHOT` to it to load initial state. The snapshot stays valid until the
	 * source sends its next command, so: return 0 to go on at once, or 1 to hold the stream
	 * until source_snapshot_done(). May be NULL. */
	int (*snapshot_cb)(void *arg, const char *snapshot, uint64_t consistent_lsn);
	/* Streaming started (or restarted) from start_lsn. May be NULL. */
	void (*streaming_cb)(void *arg, uint64_t start_lsn);
	/* A keepalive arrived between transactions: the consumer has received everything the
	 * server sent up to wal_end (it may still have to flush and confirm it). May be NULL. */
	void (*idle_cb)(void *arg, uint64_t wal_end);
	/* Everything one read of the stream brought has been delivered (the socket and libpq's
	 * buffer are drained, 256 KiB of messages were taken, or reading paused or stopped): a
	 * consumer that groups its output sends it now. Called after every read, also one that
	 * delivered nothing. May be NULL. */
	void (*batch_end_cb)(void *arg);
	/* A permanent problem: the source stopped and will not retry; why says what and how to fix
	 * it. Required. */
	void (*failed_cb)(void *arg, const char *why);
	void *arg;
} source_events;

/* Creates a source for cfg (borrowed; must outlive the source), delivering decoded changes to
 * events, with relations cached in rels (borrowed). 0 and *out (caller owns) or a negative
 * errno; err explains a bad setting (e.g. an unknown plugin). Does not connect yet. */
__attribute__((warn_unused_result)) int source_create(loop *l, const config *cfg, relcache *rels,
                                                      const source_events *events, source **out,
                                                      char err[256]);

/* Lets the source create the publication (pgoutput) when it is missing, FOR TABLE exactly these
 * tables (schemas[i].names[i]); without this call a missing publication is an error that says how
 * to create one. walcast never creates a publication FOR ALL TABLES: it would make every table
 * without a replica identity refuse UPDATE and DELETE. Copies the names. 0, -EINVAL (n == 0) or
 * -ENOMEM. Call before source_start(). */
__attribute__((warn_unused_result)) int source_publication_tables(source *s, const char *const *schemas,
                                                                  const char *const *names, size_t n);

/* Starts connecting. resume_lsn, if not 0, is where the consumer's own durable state says to
 * resume (transactions committed before it are not delivered). 0 or a negative errno. */
__attribute__((warn_unused_result)) int source_start(source *s, uint64_t resume_lsn);

/* After snapshot_cb returned 1: the snapshot was used, start streaming. */
void source_snapshot_done(source *s);

/* The consumer has durably taken everything through lsn (see above). Cheap; the next status
 * update carries it. */
void source_confirm(source *s, uint64_t lsn);

/* Stops reading the stream (a consumer over its memory bound): the socket is no longer watched
 * for reads — also across a reconnect — while status updates go on, so the server sees a live
 * but slow client. A callback in progress finishes; the messages after it wait in libpq and the
 * kernel. Idempotent. Does not block. */
void source_pause(source *s);

/* Reads the stream again, first what libpq already holds, from a timer (never from inside the
 * caller, which may be a callback of this source). Idempotent. Does not block. */
void source_resume(source *s);

/* true between source_pause and source_resume. */
bool source_paused(const source *s);

/* Sends a final status update, ends the stream and waits for the server to acknowledge it (so
 * the update is known to be applied), then disconnects. Blocks for at most 5 s whatever the
 * network does; logs source.stop_unconfirmed when the server did not answer in time. */
void source_stop(source *s);

/* Frees the source; stops it first if needed. Safe on NULL. */
void source_destroy(source *s);

/* true while the replication stream is up (connected and streaming); false while connecting,
 * reconnecting after a lost connection, paused before the start, stopped or failed. */
bool source_streaming(const source *s);

/* WAL messages the decoder could not read so far (each one stops the source: failed_cb). */
uint64_t source_decode_errors(const source *s);

/* Positions, for status and tests. source_confirmed_lsn: what the source reports to the server
 * as flushed — the consumer's source_confirm, or further: a keepalive's position between
 * transactions once everything delivered is confirmed. */
uint64_t source_received_lsn(const source *s);
uint64_t source_flushed_lsn(const source *s);
uint64_t source_confirmed_lsn(const source *s);

#endif
