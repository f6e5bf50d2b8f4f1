/*
 * source — the replication client, the pipeline's source of transactions on an instance that
 * holds the slot (txn_source.h: replication_source_ops): one libpq connection in
 * replication=database mode, driven non-blocking on the event loop, that finds or creates the
 * slot (and checks the publication for pgoutput), streams XLogData into a decoder, answers
 * keepalives, sends standby status updates and reconnects with backoff when PostgreSQL goes away.
 *
 * Acknowledgement: the flush position reported to PostgreSQL is only ever what the consumer
 * passed to confirm, i.e. what it has durably taken — except when nothing is in flight (no
 * transaction open, every delivered position confirmed): then a keepalive's position is
 * confirmed too, so an idle database does not pin WAL.
 *
 * Each transaction and message reaches the consumer once per source: after a reconnect the
 * server starts again at the confirmed position, and what it sends again that was delivered
 * before (a transaction whose commit begins before the last delivered position, a message
 * ending at or before it) is dropped here.
 *
 * Positions a consumer confirms (txn_source.h): a transaction's txn->end_lsn, a
 * non-transactional message's lsn itself — never more. Why exactly that: PostgreSQL gives a
 * message the END of its WAL record as its LSN, and on restart skips every transaction whose
 * COMMIT record begins before the confirmed position (and every message whose record begins
 * before it). A message written inside a transaction is
 * decoded and sent when its record is read, before that transaction (sent at its commit), and
 * the transaction's COMMIT can begin exactly where the message's record ends: confirming
 * lsn + 1 would skip that whole transaction on the next start; confirming lsn skips the message
 * (it began before) and keeps every transaction still to come (their commits begin at or after).
 */
#ifndef WALCAST_SOURCE_H
#define WALCAST_SOURCE_H

#include "txn_source.h"

/* The replication client as a txn_source. Beyond the contract:
 * - create: err explains a bad setting (e.g. an unknown plugin).
 * - publication_tables: for pgoutput, a missing publication is created FOR TABLE exactly these
 *   tables; without the call a missing publication is an error that says how to create one.
 *   walcast never creates a publication FOR ALL TABLES: it would make every table without a
 *   replica identity refuse UPDATE and DELETE.
 * - snapshot_cb: when the slot was just created.
 * - idle_cb: on a keepalive between transactions.
 * - batch_end_cb: the socket and libpq's buffer are drained, 256 KiB of messages were taken, or
 *   reading paused or stopped.
 * - pause: the socket is no longer watched for reads — also across a reconnect — while status
 *   updates go on, so the server sees a live but slow client; the messages after the callback in
 *   progress wait in libpq and the kernel. resume reads first what libpq already holds.
 * - stop: sends a final status update, ends the stream and waits for the server to acknowledge
 *   it (so the update is known to be applied), then disconnects. Blocks for at most 5 s whatever
 *   the network does; logs source.stop_unconfirmed when the server did not answer in time.
 * - streaming: false while connecting, reconnecting after a lost connection, paused before the
 *   start, stopped or failed.
 * - received_lsn: the highest WAL position the server sent. */
extern const txn_source_ops replication_source_ops;

/* The catalog query the wal2json path seeds its relation cache with (every user table's
 * columns, type OIDs, typmods and primary-key flags; read-only SQL), and the seeding from its
 * result: relations rels does not know yet are put (the stream's own description wins). 0 and
 * *seeded (how many were put), or -ENOMEM. An edge seeds its cache the same way (edge_source). */
extern const char source_relations_sql[];
struct pg_result;
__attribute__((warn_unused_result)) int source_relations_seed(relcache *rels, const struct pg_result *res,
                                                              int *seeded);

#endif
