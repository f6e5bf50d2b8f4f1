/*
 * jsonl — the durable JSON-lines sink: every change one subscriber may see, one JSON object per
 * line, appended to FILE exactly once across kill -9 and restarts (or printed to stdout, at
 * least once). `walcast tail --output FILE` and a [sink.NAME] type = jsonl section of
 * `walcast run` are the same sink. docs/sinks.md is the operator's description.
 *
 * Exactly once. Lines are appended to FILE as transactions are offered; durability is batched
 * (every flush_interval, or as soon as flush_bytes are pending): FILE is fdatasync'ed, then the
 * checkpoint FILE.pos — the byte offset where the last complete transaction ends and that
 * transaction's end LSN — is written atomically (FILE.pos.tmp written and fsync'ed, renamed over
 * FILE.pos, the directory fsync'ed), and only then does position() move (the pipeline confirms
 * the slot up to it). On create, FILE is cut back to FILE.pos's offset (whatever lies past it
 * belongs to transactions that were never confirmed and will be offered again) and
 * transactions at or before the checkpoint LSN are skipped when offered again. destroy (every
 * clean stop) leaves FILE ending exactly at the offset in FILE.pos. FILE, FILE.pos and
 * FILE.pos.tmp are created 0600. A reader reads FILE up to FILE.pos's offset.
 *
 * stdout (path "-"): lines are written and flushed every flush_interval (at every commit on a
 * terminal); position() follows what was flushed. At least once: a restart may print again what
 * was printed after the last confirmation.
 *
 * The payload written is the audience's serialization (audience_payload_data), never a
 * re-judgement or re-serialization; with_types splices the relation's column list (built once
 * per relation version) into it, byte for byte as change_json_write(CHANGE_JSON_TYPES) does.
 *
 * The FILE.pos helpers below are the one implementation of the position file.
 *
 * fdatasync and the rename run on the loop thread (as `walcast tail` always did), at most once
 * per flush_interval: that is the cost of a durable file sink without a writer thread.
 */
#ifndef WALCAST_JSONL_H
#define WALCAST_JSONL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "sink.h"

/* A [sink.NAME] type = jsonl section, as its key table (jsonl_sink_ops.keys) fills it. Strings
 * are owned by the configuration. */
typedef struct jsonl_conf {
	char *path;                /* FILE, or "-" for stdout (required) */
	char *as;                  /* the viewer's user id (uuid text); "" = none */
	char *role;                /* the viewer's token role; "" = member with `as`, bypass without */
	bool with_types;           /* add "columns":[{"name","type"}...] to each row */
	char *tables;              /* comma-separated "table" or "schema.table"; "" = all */
	char *actions;             /* comma-separated insert,update,delete,truncate,message; "" = all */
	int64_t flush_interval_ms; /* how long a complete transaction may wait to become durable */
	int64_t flush_bytes;       /* ... or how many bytes may wait */
	/* For front ends only (no configuration key): `walcast tail -n N` and `--until-lsn`. Once a
	 * limit is reached the sink takes nothing more (later transactions are neither written nor
	 * counted in position()) and calls end_cb once. max_changes: after N lines; a transaction
	 * that would go past N is not kept (its lines are cut at stop: the next run writes it whole).
	 * until_lsn: after the first transaction ending at or past it. 0: none. */
	uint64_t max_changes;
	uint64_t until_lsn;
	/* Called once, from inside a sink callback (deliver runs inside the audience's commit), when
	 * a limit is reached (JSONL_END_LIMIT) or stdout's reader went away (JSONL_END_READER_GONE:
	 * the callback then fails with -EPIPE). It must not call into the pipeline or the sink: it
	 * records the end and defers the rest (a 0 ms loop timer that calls pipeline_drain). NULL:
	 * not told. */
	void (*end_cb)(void *arg, int why);
	void *end_arg;
	/* For front ends only: the module name of the instance's log lines (NULL or "": "jsonl";
	 * `walcast tail` gives "tail", so its lines keep their ids: tail.abandoned, tail.trimmed...). */
	const char *log_name;
	/* For front ends only: while *state_note is true, FILE.pos carries a line "state=1" after the
	 * position, saying that the policy state of this checkpoint is kept (in FILE.state/, by the
	 * pipeline's checkpoint store); written at the next checkpoint after it turns true. NULL: never. */
	const bool *state_note;
} jsonl_conf;

enum { JSONL_END_LIMIT = 1, JSONL_END_READER_GONE = 2 };

/* The sink type "jsonl" (durable). */
extern const sink_ops jsonl_sink_ops;

/* Fills c with the key table's defaults, path set to path (borrowed: c's strings are only read
 * by create, which copies what it keeps). For front ends and tests that build a section by
 * hand: every string is a literal, nothing to free. */
void jsonl_conf_defaults(jsonl_conf *c, const char *path);

/* ---- the position file (FILE.pos) ----------------------------------------------------------- */

/* Writes more lines after the position (jsonl_conf.state_note's). 0 or a negative errno. */
typedef int (*jsonl_pos_write_cb)(void *arg, FILE *f);

/* Records offset and lsn in pos_path atomically and durably: pos_path.tmp (0600) written and
 * fsync'ed, renamed over pos_path, the directory fsync'ed. extra (may be NULL) adds its lines.
 * 0 or a negative errno. Blocks (fsync). */
__attribute__((warn_unused_result)) int jsonl_pos_write(const char *pos_path, int64_t offset, uint64_t lsn,
                                                        jsonl_pos_write_cb extra, void *arg);

/* Opens FILE for appending (created 0600) and recovers it from FILE.pos (pos_path): cuts FILE
 * back to the checkpoint's offset, or, when there is no FILE.pos yet, records one for what FILE
 * holds now (LSN 0). Lines after the position are ignored. Returns 0 with *fd
 * (caller owns), *size (FILE's size now) and *lsn (the checkpoint's LSN, 0 when new); or a
 * negative errno with err saying why (-EINVAL: FILE.pos unreadable, or FILE shorter than its
 * checkpoint). Blocks. */
__attribute__((warn_unused_result)) int jsonl_file_open(const char *path, const char *pos_path,
                                                        int *fd, int64_t *size, uint64_t *lsn,
                                                        char err[SINK_ERROR_MAX]);

/* fsync of the directory holding path (makes a rename in it durable). 0 or a negative errno. */
__attribute__((warn_unused_result)) int jsonl_dir_sync(const char *path);

#endif
