/*
 * tail — `walcast tail`: print the normalized changes of a slot as JSON lines, for operators
 * and integration tests. A thin front end on the pipeline (pipeline.h) with one jsonl sink
 * (jsonl.h): the same code as `walcast run` with a [sink.NAME] type = jsonl section.
 *
 * Two delivery modes:
 *  - to stdout: lines are flushed at least every 100 ms (at every commit on a terminal) and the
 *    slot is confirmed up to what was flushed. At-least-once: a crash or reconnect in the
 *    middle of a transaction can print part of it again. Without --slot the slot is temporary
 *    (dropped with the connection): an ad-hoc tail never leaves WAL pinned.
 *  - to a file (--output FILE): exactly-once across kill -9 and restart. The file is appended to
 *    and checkpointed (fdatasync, then FILE.pos written atomically with the byte offset and
 *    LSN of the last complete transaction); only then is the slot confirmed. A restart cuts the
 *    file back to the checkpoint and resumes from its LSN; a transaction cut off by a lost
 *    connection is cut from the file too, and every stop (signal, limit, failure) leaves FILE
 *    ending exactly at the offset in FILE.pos: readers read FILE up to that offset. FILE and
 *    FILE.pos are created 0600; the directory is fsynced after each rename of FILE.pos.
 *
 * Without a viewer, lines are written as the transaction streams. With a viewer (--as USER or
 * --jwt TOKEN), every change goes through the privacy stage first: only what that user may
 * see is printed, masks applied. The stage judges a transaction as a whole (privacy.h), so its
 * lines are printed when its commit arrives. The policy state (memberships, privacy rules) is
 * loaded from the slot's exported snapshot when the slot is created — exact — or, with
 * --output, from the checkpoint in FILE.state/ (the state as of the resume point), or from the
 * current database when the slot already exists without one (logged: replayed changes older
 * than that are judged by today's memberships).
 */
#ifndef WALCAST_TAIL_H
#define WALCAST_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct tail_options {
	const char *output_path;  /* NULL: stdout */
	const char *const *tables; /* "table" or "schema.table"; NULL/0 = all */
	size_t ntables;
	unsigned actions;         /* bit (1 << change_action) per wanted action; 0 = all */
	uint64_t until_lsn;       /* stop once the stream has passed this position; 0 = never */
	uint64_t max_changes;     /* stop after printing this many changes; 0 = never */
	bool with_types;          /* add the relation's column names and type OIDs to each line */
	/* Print only what one viewer may see (tail --as / --jwt) when viewer is set. */
	const char *policy_path;  /* the policy file (viewer, create_publication) */
	const char *viewer_uid;   /* canonical uuid text, or NULL (anonymous) */
	const char *viewer_role;  /* the token's role claim, or NULL; a bypass role sees everything */
	bool viewer;              /* filtering is on */
	/* Create a missing publication (pgoutput) for the tables of the policy file (policy_path). */
	bool create_publication;
} tail_options;

/* Runs tail until a limit is reached, SIGINT/SIGTERM arrives, or the source fails. Returns the
 * process exit status: 0 on a clean stop, 1 on failure (already logged). Blocks. */
int tail_run(const config *cfg, const tail_options *opt);

#endif
