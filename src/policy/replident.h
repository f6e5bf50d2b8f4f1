/*
 * replident — checks, against PostgreSQL's catalog, that every governed table's replica
 * identity carries the columns walcast needs to judge an old row (a DELETE, an UPDATE's old
 * version): the org column, every column the read rule reads (uid comparisons, privacy
 * subjects), every column a mask or decryption condition reads, and every encryption context.
 * The WAL carries of an old row only its replica identity; a table whose identity lacks one of
 * those columns cannot be judged for deletes, and they would be dropped in silence. See
 * docs/policies.md ("Replica identity").
 *
 * The catalog facts are pg_class.relreplident ('d' primary key, 'i' USING INDEX, 'f' FULL,
 * 'n' NOTHING), and for 'd' / 'i' the columns of the primary key / pg_index.indisreplident
 * index (pg_attribute). FULL always suffices.
 */
#ifndef WALCAST_REPLIDENT_H
#define WALCAST_REPLIDENT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "policy.h"

/* Marks in need[0..policy_table_ncols(t)) (which the caller provides) the `columns` indexes of
 * t that an old row must carry: the org column, the columns of the read rule and of every
 * mask / decryption condition, and encryption context columns. Everything else is set false.
 * Does not allocate or block. */
void replident_needed(const policy_table *t, bool *need);

/* Judges one table from its catalog facts: kind is pg_class.relreplident ('d', 'i', 'f' or
 * 'n'), ident[0..nident) the names of the identity index's columns (the primary key for 'd',
 * the replica identity index for 'i'; nident = 0 when there is no such index). When the
 * identity lacks a needed column, appends one line to report naming the table, the missing
 * columns and the ALTER TABLE that fixes it, and returns 1; returns 0 when it suffices, or
 * -ENOMEM (report may hold a partial line). Does not block. */
__attribute__((warn_unused_result)) int replident_table_check(const policy_table *t, char kind,
                                                              const char *const *ident, size_t nident,
                                                              buf *report);

/* Checks every governed table of p through conn (an ordinary connection; reads pg_class,
 * pg_index, pg_attribute, which every role may read). A governed table that does not exist in
 * the database is skipped (it has no changes to judge). Returns 0 when every table suffices;
 * -EPROTO with report holding one line per table that falls short; -EIO with report holding the
 * server's error; -ENOMEM. Blocks on one query per governed table. */
__attribute__((warn_unused_result)) int replident_check(const policy *p, PGconn *conn, buf *report);

/* replident_check through a new connection to conninfo (libpq conninfo, "" = PG* environment),
 * closed before returning. Logs "replident.insufficient" (one line per table) or
 * "replident.check_failed" and returns the negative errno, or returns 0. Blocks. */
__attribute__((warn_unused_result)) int replident_check_conninfo(const policy *p, const char *conninfo);

/* Asked while replident_check_conninfo_until waits for the server: true gives up. */
typedef bool (*replident_stop_fn)(void *arg);

/* replident_check_conninfo that can be given up (a daemon told to stop while it starts): while
 * it waits for the server (connecting, each query) it calls stop(arg) at least every 100 ms and
 * returns -ECANCELED, logging nothing, once it says true. Without stop, the same as
 * replident_check_conninfo. Blocks until then. */
__attribute__((warn_unused_result)) int replident_check_conninfo_until(const policy *p, const char *conninfo,
                                                                       replident_stop_fn stop, void *arg);

#endif
