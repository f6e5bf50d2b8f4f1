/*
 * change — walcast's normalized change record: what both decoders produce and every later
 * stage consumes. A record says which transaction (xid, commit LSN, commit time), which
 * relation, which action, and the new and old tuples as PostgreSQL's text output of each
 * column, so the same WAL yields the same record whichever output plugin carried it.
 *
 * Memory: a change and everything it points to belong to the decoder that produced it and are
 * valid only during the callback that receives it. A stage that keeps anything copies it.
 */
#ifndef WALCAST_CHANGE_H
#define WALCAST_CHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "relcache.h"

typedef enum change_action {
	CHANGE_INSERT = 1,
	CHANGE_UPDATE,
	CHANGE_DELETE,
	CHANGE_TRUNCATE,
	CHANGE_MESSAGE,
} change_action;

typedef enum value_kind {
	VALUE_ABSENT = 0, /* the tuple does not carry this column (e.g. an old key-only tuple) */
	VALUE_NULL,
	VALUE_TEXT,       /* data/len: PostgreSQL's text output for the column type */
	VALUE_UNCHANGED,  /* an unchanged TOASTed value the WAL does not repeat; never invented */
} value_kind;

typedef struct change_value {
	uint32_t kind; /* value_kind */
	uint32_t len;
	const char *data; /* NUL-terminated for VALUE_TEXT */
} change_value;

typedef struct change_txn {
	uint32_t xid;
	uint64_t commit_lsn;   /* LSN of the commit record (pgoutput "final LSN", wal2json "lsn") */
	uint64_t end_lsn;      /* end of the commit record; known at commit (0 before for pgoutput) */
	int64_t commit_time;   /* microseconds since the Unix epoch, UTC */
} change_txn;

typedef struct change {
	change_action action;
	uint64_t lsn;            /* WAL position of this change (the XLogData start) */
	const change_txn *txn;   /* NULL only for a non-transactional message */
	const relation *rel;     /* insert, update, delete, truncate; NULL for messages */
	change_value *new_tuple; /* rel->ncols values for insert/update, else NULL */
	change_value *old_tuple; /* rel->ncols values when the WAL carries an old tuple, else NULL */
	/* messages (pg_logical_emit_message) */
	bool transactional;
	const char *prefix;
	const char *content;
	size_t content_len;
	/* truncate */
	bool cascade;
	bool restart_identity;
	/* Per-column error markers of the row delivered — the new tuple, or the old one for a
	 * delete — (rel->ncols entries, NULL = none), e.g.
	 * "unknown_key" for a value that could not be decrypted and is delivered as null. */
	const char *const *row_errors;
} change;

/* Replaces VALUE_UNCHANGED values of the new tuple with the old tuple's value for that column
 * when the old tuple carries it (REPLICA IDENTITY FULL); leaves them marked otherwise. */
void change_fill_unchanged(change *c);

/* Lower-case action name: "insert", "update", "delete", "truncate", "message". */
const char *change_action_name(change_action a);

/* Parses an action name as above; 0 or -EINVAL. */
__attribute__((warn_unused_result)) int change_action_parse(const char *s, change_action *out);

enum {
	CHANGE_JSON_TYPES = 1u << 0, /* add "columns":[{"name","type"}...] (the relation shape) */
};

/* Appends c as one JSON object (no newline) to out:
 *   {"lsn":"0/16B3748","xid":750,"commit_lsn":"0/16B37A0","commit_time":"2026-...Z",
 *    "action":"insert","schema":"public","table":"events","new":{...},"old":{...},
 *    "unchanged":["body"],"errors":{"body":"unknown_key"}}
 * Values are typed from the column type OID: int2, int4, oid and finite float4/float8 as JSON
 * numbers; int8 and numeric as JSON strings holding PostgreSQL's text (exact beyond 2^53, where
 * a JavaScript number would round); booleans as true/false, json/jsonb embedded, everything
 * else as strings.
 * Returns 0 or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int change_json_write(buf *out, const change *c, unsigned flags);

/* A cache for change_json_write_cached: per relation version (a relation's address and unique
 * id) the escaped schema, table and column names, and per transaction its formatted xid, commit
 * LSN and commit time. One cache serves the relations of one relcache (ids are unique within a
 * cache) and one thread. change_json_cache_create returns NULL when out of memory; the caller
 * owns it and frees it with change_json_cache_destroy (NULL is fine). */
typedef struct change_json_cache change_json_cache;
change_json_cache *change_json_cache_create(void);
void change_json_cache_destroy(change_json_cache *jc);

/* change_json_write, byte for byte, with what it formats per relation or per transaction taken
 * from jc (NULL: no cache). Returns 0 or -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int change_json_write_cached(change_json_cache *jc, buf *out,
                                                                 const change *c, unsigned flags);

/* True when s[0..n) is a JSON number (RFC 8259 grammar): PostgreSQL's text of a number that
 * JSON can carry verbatim. */
bool change_json_number(const char *s, size_t n);

#define CHANGE_TIME_MAX 64
/* Formats microseconds since the Unix epoch as "YYYY-MM-DDTHH:MM:SS.ffffffZ" into out. */
void change_time_format(int64_t unix_us, char out[CHANGE_TIME_MAX]);

/* PostgreSQL epoch (2000-01-01) to Unix epoch, in microseconds. */
#define PG_EPOCH_OFFSET_US INT64_C(946684800000000)

#endif
