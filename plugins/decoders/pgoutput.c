/*
 * pgoutput — decoder for PostgreSQL's built-in logical replication output plugin, protocol
 * version 1 (the binary format of src/backend/replication/logical/proto.c, unchanged from
 * PostgreSQL 10 to 15 for the messages used here).
 *
 * Each XLogData payload is one message: a type byte, then big-endian fixed fields,
 * NUL-terminated strings and tuple data. The decoder is a two-state machine:
 *
 *   idle --Begin--> in transaction --Commit--> idle
 *
 * Insert, Update, Delete, Truncate and transactional Messages are only valid in a
 * transaction; non-transactional Messages, Relation, Type and Origin messages are valid in
 * either state. Relation messages feed the shared relcache (by OID); every change looks its
 * relation up there. Protocol 2 streaming and two-phase messages are refused: walcast never
 * asks for them (start_options requests proto_version 1 only).
 *
 * Memory: the change being built (tuples, NUL-terminated copies of text values) lives in an
 * arena that is reset as soon as the sink has the change, so a transaction of any size
 * decodes in constant memory. Nothing on the change path calls malloc once the arena's first
 * block exists. Input is never written and never read outside data[0..len).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "decoder.h"

/* One block holds any ordinary row; a larger value gets its own block, freed at reset. */
#define PGOUTPUT_ARENA_BLOCK (64 * 1024)

/* Bit 0 of a Relation column's flags: part of the replica identity. */
#define PGOUTPUT_COLUMN_KEY 0x01
/* Message flags: transactional. Truncate options: cascade, restart identity. */
#define PGOUTPUT_MESSAGE_TRANSACTIONAL 0x01
#define PGOUTPUT_TRUNCATE_CASCADE 0x01
#define PGOUTPUT_TRUNCATE_RESTART_IDENTITY 0x02

/* PostgreSQL's timestamp range (MIN_TIMESTAMP, 4714-11-24 BC) and the largest PostgreSQL
 * timestamp that still fits in int64 microseconds after moving to the Unix epoch. */
#define PGOUTPUT_TIME_MIN INT64_C(-211813488000000000)
#define PGOUTPUT_TIME_MAX (INT64_MAX - PG_EPOCH_OFFSET_US)

/* A non-builtin type the stream named in a Type message. */
typedef struct pgoutput_type {
	uint32_t oid;
	char *name;
} pgoutput_type;

typedef struct pgoutput {
	relcache *relations; /* borrowed */
	pgoutput_type *types; /* the Type messages seen (one entry per OID, the latest name) */
	size_t ntypes;
	decoder_sink sink;
	arena *arena;        /* the change being built; reset after each delivery */
	char *options;       /* START_REPLICATION options */
	bool in_txn;
	change_txn txn;
} pgoutput;

/* A cursor over one message; `what` names the message in errors ("insert", "relation"). */
typedef struct reader {
	const uint8_t *start;
	const uint8_t *p;
	const uint8_t *end;
	const char *what;
	char *err;
} reader;

__attribute__((format(printf, 2, 3)))
static void pgoutput_error_format(char *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, DECODER_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* Writes the message into err and evaluates to -EPROTO (a macro, so the compiler sees the
 * constant and knows that out-parameters are written whenever a reader returns 0). */
#define PGOUTPUT_FAIL(err, ...) (pgoutput_error_format((err), __VA_ARGS__), -EPROTO)

static inline size_t reader_left(const reader *r)
{
	return (size_t)(r->end - r->p);
}

/* Reports a field that does not fit; the callers return -EPROTO themselves. */
static void reader_short(const reader *r, size_t need)
{
	pgoutput_error_format(r->err, "truncated %s message: %zu bytes, field at offset %zu needs %zu",
	                      r->what, (size_t)(r->end - r->start), (size_t)(r->p - r->start), need);
}

static inline int reader_u8(reader *r, uint8_t *out)
{
	if (r->p == r->end) {
		reader_short(r, 1);
		return -EPROTO;
	}
	*out = *r->p++;
	return 0;
}

static inline int reader_u16(reader *r, uint16_t *out)
{
	if (reader_left(r) < 2) {
		reader_short(r, 2);
		return -EPROTO;
	}
	*out = (uint16_t)((unsigned)r->p[0] << 8 | r->p[1]);
	r->p += 2;
	return 0;
}

static inline int reader_u32(reader *r, uint32_t *out)
{
	if (reader_left(r) < 4) {
		reader_short(r, 4);
		return -EPROTO;
	}
	*out = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	return 0;
}

static inline int reader_u64(reader *r, uint64_t *out)
{
	if (reader_left(r) < 8) {
		reader_short(r, 8);
		return -EPROTO;
	}
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | r->p[i];
	r->p += 8;
	*out = v;
	return 0;
}

/* A NUL-terminated string: *out points into the message (terminated there), *len excludes
 * the NUL. */
static int reader_string(reader *r, const char **out, size_t *len)
{
	const uint8_t *nul = memchr(r->p, '\0', reader_left(r));
	if (nul == NULL)
		return PGOUTPUT_FAIL(r->err, "truncated %s message: string at offset %zu has no terminator",
		                     r->what, (size_t)(r->p - r->start));
	*out = (const char *)r->p;
	*len = (size_t)(nul - r->p);
	r->p = nul + 1;
	return 0;
}

/* Every message must be consumed exactly: trailing bytes mean we misread it. */
static int reader_finish(const reader *r)
{
	if (r->p != r->end)
		return PGOUTPUT_FAIL(r->err, "%s message has %zu unexpected trailing bytes", r->what,
		                     reader_left(r));
	return 0;
}

static int pgoutput_time_convert(const reader *r, int64_t pg_us, int64_t *out)
{
	if (pg_us < PGOUTPUT_TIME_MIN || pg_us > PGOUTPUT_TIME_MAX)
		return PGOUTPUT_FAIL(r->err, "%s message: commit timestamp %" PRId64 " out of range",
		                     r->what, pg_us);
	*out = pg_us + PG_EPOCH_OFFSET_US;
	return 0;
}

/* --- transactions ----------------------------------------------------------------------- */

/* Begin: final LSN (int64), commit timestamp (int64), xid (int32). */
static int pgoutput_begin_read(pgoutput *pg, reader *r)
{
	uint64_t final_lsn, ts;
	uint32_t xid;
	int64_t commit_time;
	int rc;
	if ((rc = reader_u64(r, &final_lsn)) < 0 || (rc = reader_u64(r, &ts)) < 0 ||
	    (rc = reader_u32(r, &xid)) < 0 || (rc = reader_finish(r)) < 0 ||
	    (rc = pgoutput_time_convert(r, (int64_t)ts, &commit_time)) < 0)
		return rc;
	if (pg->in_txn)
		return PGOUTPUT_FAIL(r->err, "begin of transaction %" PRIu32 " inside transaction %" PRIu32,
		                     xid, pg->txn.xid);
	if (final_lsn == 0)
		return PGOUTPUT_FAIL(r->err, "begin of transaction %" PRIu32 " without a final LSN", xid);
	pg->txn = (change_txn){
		.xid = xid, .commit_lsn = final_lsn, .end_lsn = 0, .commit_time = commit_time};
	pg->in_txn = true;
	return pg->sink.begin_cb != NULL ? pg->sink.begin_cb(pg->sink.arg, &pg->txn) : 0;
}

/* Commit: flags (int8, 0), commit LSN (int64), end LSN (int64), commit timestamp (int64). */
static int pgoutput_commit_read(pgoutput *pg, reader *r)
{
	uint8_t flags;
	uint64_t commit_lsn, end_lsn, ts;
	int rc;
	if ((rc = reader_u8(r, &flags)) < 0 || (rc = reader_u64(r, &commit_lsn)) < 0 ||
	    (rc = reader_u64(r, &end_lsn)) < 0 || (rc = reader_u64(r, &ts)) < 0 ||
	    (rc = reader_finish(r)) < 0)
		return rc;
	if (!pg->in_txn)
		return PGOUTPUT_FAIL(r->err, "commit without begin");
	if (flags != 0)
		return PGOUTPUT_FAIL(r->err, "commit of transaction %" PRIu32 ": unknown flags 0x%02x",
		                     pg->txn.xid, flags);
	if (commit_lsn != pg->txn.commit_lsn)
		return PGOUTPUT_FAIL(r->err,
		                     "commit of transaction %" PRIu32 ": commit LSN %X/%X differs from "
		                     "begin's final LSN %X/%X",
		                     pg->txn.xid, (unsigned)(commit_lsn >> 32), (unsigned)commit_lsn,
		                     (unsigned)(pg->txn.commit_lsn >> 32), (unsigned)pg->txn.commit_lsn);
	pg->txn.end_lsn = end_lsn;
	pg->in_txn = false;
	return pg->sink.commit_cb != NULL ? pg->sink.commit_cb(pg->sink.arg, &pg->txn) : 0;
}

/* --- relations -------------------------------------------------------------------------- */

/* The name a Type message gave oid, or NULL (a builtin type, or none seen). */
static const char *pgoutput_type_name(const pgoutput *pg, uint32_t oid)
{
	for (size_t i = 0; i < pg->ntypes; i++)
		if (pg->types[i].oid == oid)
			return pg->types[i].name;
	return NULL;
}

/* Relation: OID (int32), namespace (string, "" = pg_catalog), name (string), replica identity
 * (int8), ncols (int16), then per column flags (int8), name (string), type OID (int32),
 * typmod (int32). Replaces the cached description of that OID. */
static int pgoutput_relation_read(pgoutput *pg, reader *r)
{
	uint32_t oid;
	const char *nsp, *name;
	size_t nsp_len, name_len;
	uint8_t replident;
	uint16_t ncols;
	int rc;
	if ((rc = reader_u32(r, &oid)) < 0 || (rc = reader_string(r, &nsp, &nsp_len)) < 0 ||
	    (rc = reader_string(r, &name, &name_len)) < 0 || (rc = reader_u8(r, &replident)) < 0 ||
	    (rc = reader_u16(r, &ncols)) < 0)
		return rc;
	if (oid == 0)
		return PGOUTPUT_FAIL(r->err, "relation message with OID 0");
	if (replident == '\0' || strchr("dnfi", replident) == NULL)
		return PGOUTPUT_FAIL(r->err, "relation %" PRIu32 ": unknown replica identity 0x%02x", oid,
		                     replident);
	/* Each column takes at least 10 bytes: flags, an empty name, type OID, typmod. */
	if ((size_t)ncols * 10 > reader_left(r))
		return PGOUTPUT_FAIL(r->err, "relation %" PRIu32 ": %u columns do not fit in the message",
		                     oid, ncols);
	rel_column *cols = arena_alloc(pg->arena, (ncols ? ncols : 1) * sizeof(*cols));
	if (cols == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < ncols; i++) {
		uint8_t flags;
		const char *cname;
		size_t cname_len;
		uint32_t type_oid, typmod;
		if ((rc = reader_u8(r, &flags)) < 0 || (rc = reader_string(r, &cname, &cname_len)) < 0 ||
		    (rc = reader_u32(r, &type_oid)) < 0 || (rc = reader_u32(r, &typmod)) < 0)
			return rc;
		const char *tname = pgoutput_type_name(pg, type_oid);
		cols[i] = (rel_column){
			.name = arena_strndup(pg->arena, cname, cname_len),
			.type_oid = type_oid,
			.typmod = (int32_t)typmod,
			.key = (flags & PGOUTPUT_COLUMN_KEY) != 0,
			.type_name = tname != NULL ? arena_strndup(pg->arena, tname, strlen(tname)) : NULL,
		};
		if (cols[i].name == NULL || (tname != NULL && cols[i].type_name == NULL))
			return -ENOMEM;
	}
	if ((rc = reader_finish(r)) < 0)
		return rc;
	relation desc = {
		.oid = oid,
		.schema = nsp_len == 0 ? arena_strndup(pg->arena, "pg_catalog", 10)
		                       : arena_strndup(pg->arena, nsp, nsp_len),
		.name = arena_strndup(pg->arena, name, name_len),
		.ncols = ncols,
		.cols = cols,
		.replident = (char)replident,
	};
	if (desc.schema == NULL || desc.name == NULL)
		return -ENOMEM;
	return relcache_put(pg->relations, &desc, NULL);
}

/* Type: OID (int32), namespace (string), name (string). pgoutput sends one for each column of
 * a non-builtin type before the Relation that uses it (for a domain: the domain's OID with its
 * base type's name). The name is kept (the latest per OID) for the columns of later Relations;
 * values are still typed by OID. */
static int pgoutput_type_read(pgoutput *pg, reader *r)
{
	uint32_t oid;
	const char *s, *name;
	size_t n, name_len;
	int rc;
	if ((rc = reader_u32(r, &oid)) < 0 || (rc = reader_string(r, &s, &n)) < 0 ||
	    (rc = reader_string(r, &name, &name_len)) < 0 || (rc = reader_finish(r)) < 0)
		return rc;
	char *copy = strndup(name, name_len);
	if (copy == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < pg->ntypes; i++) {
		if (pg->types[i].oid == oid) {
			free(pg->types[i].name);
			pg->types[i].name = copy;
			return 0;
		}
	}
	pgoutput_type *t = realloc(pg->types, (pg->ntypes + 1) * sizeof(*t));
	if (t == NULL) {
		free(copy);
		return -ENOMEM;
	}
	pg->types = t;
	pg->types[pg->ntypes++] = (pgoutput_type){.oid = oid, .name = copy};
	return 0;
}

/* Origin: origin LSN (int64), origin name (string). Not used by walcast. */
static int pgoutput_origin_read(reader *r)
{
	uint64_t lsn;
	const char *s;
	size_t n;
	int rc;
	if ((rc = reader_u64(r, &lsn)) < 0 || (rc = reader_string(r, &s, &n)) < 0)
		return rc;
	return reader_finish(r);
}

/* --- changes ---------------------------------------------------------------------------- */

/* The relation a change names by OID. */
static int pgoutput_relation_find(pgoutput *pg, reader *r, const relation **out)
{
	uint32_t oid;
	int rc = reader_u32(r, &oid);
	if (rc < 0)
		return rc;
	const relation *rel = relcache_get_oid(pg->relations, oid);
	if (rel == NULL)
		return PGOUTPUT_FAIL(r->err, "%s for unknown relation %" PRIu32
		                     " (no relation message received for it)", r->what, oid);
	*out = rel;
	return 0;
}

/* TupleData: ncols (int16), then per column 'n' null, 'u' unchanged TOAST, 't' text (int32
 * length + bytes) or 'b' binary (refused). key_only: a 'K' old tuple, whose non-key columns
 * become VALUE_ABSENT (the server sends them as nulls). Text values are copied into the arena
 * with a terminating NUL. */
static int pgoutput_tuple_read(pgoutput *pg, reader *r, const relation *rel, bool key_only,
                               change_value **out)
{
	uint16_t ncols;
	int rc = reader_u16(r, &ncols);
	if (rc < 0)
		return rc;
	if (ncols != rel->ncols)
		return PGOUTPUT_FAIL(r->err, "%s for relation %" PRIu32 ": tuple has %u columns, "
		                     "relation has %d", r->what, rel->oid, ncols, rel->ncols);
	if (ncols > reader_left(r))
		return PGOUTPUT_FAIL(r->err, "%s for relation %" PRIu32 ": %u columns do not fit in the "
		                     "message", r->what, rel->oid, ncols);
	change_value *vals = arena_alloc(pg->arena, (ncols ? ncols : 1) * sizeof(*vals));
	if (vals == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < ncols; i++) {
		uint8_t kind;
		if ((rc = reader_u8(r, &kind)) < 0)
			return rc;
		bool absent = key_only && !rel->cols[i].key;
		switch (kind) {
		case 'n':
			vals[i] = (change_value){.kind = absent ? VALUE_ABSENT : VALUE_NULL};
			break;
		case 'u':
			vals[i] = (change_value){.kind = absent ? VALUE_ABSENT : VALUE_UNCHANGED};
			break;
		case 't': {
			uint32_t len;
			if ((rc = reader_u32(r, &len)) < 0)
				return rc;
			if (len > reader_left(r))
				return PGOUTPUT_FAIL(r->err, "%s for relation %" PRIu32 ": column %u (%s) length "
				                     "%" PRIu32 " exceeds the %zu bytes left", r->what, rel->oid,
				                     i + 1, rel->cols[i].name, len, reader_left(r));
			if (absent) {
				vals[i] = (change_value){.kind = VALUE_ABSENT};
			} else {
				char *data = arena_alloc(pg->arena, (size_t)len + 1);
				if (data == NULL)
					return -ENOMEM;
				memcpy(data, r->p, len);
				data[len] = '\0';
				vals[i] = (change_value){.kind = VALUE_TEXT, .len = len, .data = data};
			}
			r->p += len;
			break;
		}
		case 'b':
			return PGOUTPUT_FAIL(r->err, "%s for relation %" PRIu32 ": column %u (%s) is in binary "
			                     "format, which walcast does not request", r->what, rel->oid, i + 1,
			                     rel->cols[i].name);
		default:
			return PGOUTPUT_FAIL(r->err, "%s for relation %" PRIu32 ": column %u (%s) has unknown "
			                     "kind 0x%02x", r->what, rel->oid, i + 1, rel->cols[i].name, kind);
		}
	}
	*out = vals;
	return 0;
}

static int pgoutput_need_txn(const pgoutput *pg, const reader *r)
{
	if (!pg->in_txn)
		return PGOUTPUT_FAIL(r->err, "%s outside a transaction", r->what);
	return 0;
}

static int pgoutput_emit(pgoutput *pg, change *c)
{
	int rc = decoder_emit_change(&pg->sink, c);
	arena_reset(pg->arena);
	return rc;
}

/* Insert: OID (int32), 'N', TupleData. */
static int pgoutput_insert_read(pgoutput *pg, reader *r, uint64_t lsn)
{
	change c = {.action = CHANGE_INSERT, .lsn = lsn, .txn = &pg->txn};
	uint8_t tag;
	int rc;
	if ((rc = pgoutput_need_txn(pg, r)) < 0 || (rc = pgoutput_relation_find(pg, r, &c.rel)) < 0 ||
	    (rc = reader_u8(r, &tag)) < 0)
		return rc;
	if (tag != 'N')
		return PGOUTPUT_FAIL(r->err, "insert for relation %" PRIu32 ": expected 'N', got 0x%02x",
		                     c.rel->oid, tag);
	if ((rc = pgoutput_tuple_read(pg, r, c.rel, false, &c.new_tuple)) < 0 ||
	    (rc = reader_finish(r)) < 0)
		return rc;
	return pgoutput_emit(pg, &c);
}

/* Update: OID (int32), optionally 'K' or 'O' and the old TupleData, then 'N' and the new. */
static int pgoutput_update_read(pgoutput *pg, reader *r, uint64_t lsn)
{
	change c = {.action = CHANGE_UPDATE, .lsn = lsn, .txn = &pg->txn};
	uint8_t tag;
	int rc;
	if ((rc = pgoutput_need_txn(pg, r)) < 0 || (rc = pgoutput_relation_find(pg, r, &c.rel)) < 0 ||
	    (rc = reader_u8(r, &tag)) < 0)
		return rc;
	if (tag == 'K' || tag == 'O') {
		if ((rc = pgoutput_tuple_read(pg, r, c.rel, tag == 'K', &c.old_tuple)) < 0 ||
		    (rc = reader_u8(r, &tag)) < 0)
			return rc;
	}
	if (tag != 'N')
		return PGOUTPUT_FAIL(r->err, "update for relation %" PRIu32 ": expected 'K', 'O' or 'N', "
		                     "got 0x%02x", c.rel->oid, tag);
	if ((rc = pgoutput_tuple_read(pg, r, c.rel, false, &c.new_tuple)) < 0 ||
	    (rc = reader_finish(r)) < 0)
		return rc;
	return pgoutput_emit(pg, &c);
}

/* Delete: OID (int32), 'K' or 'O', the old TupleData. */
static int pgoutput_delete_read(pgoutput *pg, reader *r, uint64_t lsn)
{
	change c = {.action = CHANGE_DELETE, .lsn = lsn, .txn = &pg->txn};
	uint8_t tag;
	int rc;
	if ((rc = pgoutput_need_txn(pg, r)) < 0 || (rc = pgoutput_relation_find(pg, r, &c.rel)) < 0 ||
	    (rc = reader_u8(r, &tag)) < 0)
		return rc;
	if (tag != 'K' && tag != 'O')
		return PGOUTPUT_FAIL(r->err, "delete for relation %" PRIu32 ": expected 'K' or 'O', got "
		                     "0x%02x", c.rel->oid, tag);
	if ((rc = pgoutput_tuple_read(pg, r, c.rel, tag == 'K', &c.old_tuple)) < 0 ||
	    (rc = reader_finish(r)) < 0)
		return rc;
	return pgoutput_emit(pg, &c);
}

/* Truncate: nrelations (int32), options (int8), OIDs (int32 each). One change per relation,
 * in message order; every OID is checked before the first is delivered. */
static int pgoutput_truncate_read(pgoutput *pg, reader *r, uint64_t lsn)
{
	uint32_t nrels;
	uint8_t options;
	int rc;
	if ((rc = pgoutput_need_txn(pg, r)) < 0 || (rc = reader_u32(r, &nrels)) < 0 ||
	    (rc = reader_u8(r, &options)) < 0)
		return rc;
	if (nrels != reader_left(r) / 4 || reader_left(r) % 4 != 0)
		return PGOUTPUT_FAIL(r->err, "truncate of %" PRIu32 " relations carries %zu bytes of OIDs",
		                     nrels, reader_left(r));
	const uint8_t *oids = r->p;
	for (uint32_t i = 0; i < nrels; i++) {
		const relation *rel;
		if ((rc = pgoutput_relation_find(pg, r, &rel)) < 0)
			return rc;
	}
	r->p = oids;
	for (uint32_t i = 0; i < nrels; i++) {
		change c = {
			.action = CHANGE_TRUNCATE,
			.lsn = lsn,
			.txn = &pg->txn,
			.cascade = (options & PGOUTPUT_TRUNCATE_CASCADE) != 0,
			.restart_identity = (options & PGOUTPUT_TRUNCATE_RESTART_IDENTITY) != 0,
		};
		if ((rc = pgoutput_relation_find(pg, r, &c.rel)) < 0 || (rc = pgoutput_emit(pg, &c)) != 0)
			return rc;
	}
	return 0;
}

/* Message: flags (int8, bit 0 transactional), LSN (int64), prefix (string), content length
 * (int32), content. A non-transactional message arrives outside Begin/Commit and carries no
 * transaction. */
static int pgoutput_message_read(pgoutput *pg, reader *r, uint64_t lsn)
{
	uint8_t flags;
	uint64_t msg_lsn;
	const char *prefix;
	size_t prefix_len;
	uint32_t len;
	int rc;
	if ((rc = reader_u8(r, &flags)) < 0 || (rc = reader_u64(r, &msg_lsn)) < 0 ||
	    (rc = reader_string(r, &prefix, &prefix_len)) < 0 || (rc = reader_u32(r, &len)) < 0)
		return rc;
	if (len != reader_left(r))
		return PGOUTPUT_FAIL(r->err, "message with prefix \"%.64s\": content length %" PRIu32
		                     " but %zu bytes follow", prefix, len, reader_left(r));
	bool transactional = (flags & PGOUTPUT_MESSAGE_TRANSACTIONAL) != 0;
	if (transactional && (rc = pgoutput_need_txn(pg, r)) < 0)
		return rc;
	char *content = arena_alloc(pg->arena, (size_t)len + 1);
	if (content == NULL)
		return -ENOMEM;
	memcpy(content, r->p, len);
	content[len] = '\0';
	r->p += len;
	change c = {
		.action = CHANGE_MESSAGE,
		.lsn = lsn,
		.txn = transactional ? &pg->txn : NULL,
		.transactional = transactional,
		.prefix = prefix,
		.content = content,
		.content_len = len,
	};
	return pgoutput_emit(pg, &c);
}

/* --- decoder_ops ------------------------------------------------------------------------ */

static int pgoutput_decode(void *impl, uint64_t wal_start, const uint8_t *data, size_t len,
                           char err[DECODER_ERROR_MAX])
{
	pgoutput *pg = impl;
	if (len == 0)
		return PGOUTPUT_FAIL(err, "empty pgoutput message");
	reader r = {.start = data, .p = data + 1, .end = data + len, .err = err};
	int rc;
	switch (data[0]) {
	case 'B':
		r.what = "begin";
		rc = pgoutput_begin_read(pg, &r);
		break;
	case 'C':
		r.what = "commit";
		rc = pgoutput_commit_read(pg, &r);
		break;
	case 'I':
		r.what = "insert";
		rc = pgoutput_insert_read(pg, &r, wal_start);
		break;
	case 'U':
		r.what = "update";
		rc = pgoutput_update_read(pg, &r, wal_start);
		break;
	case 'D':
		r.what = "delete";
		rc = pgoutput_delete_read(pg, &r, wal_start);
		break;
	case 'T':
		r.what = "truncate";
		rc = pgoutput_truncate_read(pg, &r, wal_start);
		break;
	case 'M':
		r.what = "message";
		rc = pgoutput_message_read(pg, &r, wal_start);
		break;
	case 'R':
		r.what = "relation";
		rc = pgoutput_relation_read(pg, &r);
		break;
	case 'Y':
		r.what = "type";
		rc = pgoutput_type_read(pg, &r);
		break;
	case 'O':
		r.what = "origin";
		rc = pgoutput_origin_read(&r);
		break;
	case 'S': case 'E': case 'c': case 'A':
		return PGOUTPUT_FAIL(err, "streaming message '%c' (protocol version 2) is not supported",
		                     data[0]);
	case 'b': case 'P': case 'K': case 'r': case 'p':
		return PGOUTPUT_FAIL(err, "two-phase commit message '%c' is not supported", data[0]);
	default:
		return PGOUTPUT_FAIL(err, "unknown pgoutput message type 0x%02x", data[0]);
	}
	/* Relation messages and failed changes leave allocations behind; delivered changes have
	 * already reset the arena, so this is cheap. */
	arena_reset(pg->arena);
	return rc;
}

static void pgoutput_reset(void *impl)
{
	pgoutput *pg = impl;
	pg->in_txn = false;
	pg->txn = (change_txn){0};
	arena_reset(pg->arena);
}

static const char *pgoutput_start_options(void *impl)
{
	const pgoutput *pg = impl;
	return pg->options;
}

/* "proto_version '1', publication_names '\"<pub>\"', messages 'true'": the publication is a
 * double-quoted identifier (embedded '"' doubled) inside a single-quoted literal (embedded
 * '\'' doubled). Without a publication (offline decoding) the option is left out, and a
 * server would refuse START_REPLICATION with a clear error. */
static char *pgoutput_options_build(const char *publication)
{
	static const char head[] = "proto_version '1', ";
	static const char tail[] = "messages 'true'";
	size_t n = publication != NULL ? strlen(publication) : 0;
	char *s = malloc(sizeof(head) + sizeof(tail) + 2 * n + 32);
	if (s == NULL)
		return NULL;
	char *p = s;
	memcpy(p, head, sizeof(head) - 1);
	p += sizeof(head) - 1;
	if (publication != NULL) {
		p += sprintf(p, "publication_names '\"");
		for (size_t i = 0; i < n; i++) {
			if (publication[i] == '"' || publication[i] == '\'')
				*p++ = publication[i];
			*p++ = publication[i];
		}
		p += sprintf(p, "\"', ");
	}
	memcpy(p, tail, sizeof(tail));
	return s;
}

static void pgoutput_destroy(void *impl)
{
	pgoutput *pg = impl;
	if (pg == NULL)
		return;
	for (size_t i = 0; i < pg->ntypes; i++)
		free(pg->types[i].name);
	free(pg->types);
	free(pg->options);
	arena_destroy(pg->arena);
	free(pg);
}

static int pgoutput_create(const decoder_params *p, void **out)
{
	if (p == NULL || p->relations == NULL || p->sink.change_cb == NULL)
		return -EINVAL;
	pgoutput *pg = calloc(1, sizeof(*pg));
	if (pg == NULL)
		return -ENOMEM;
	pg->relations = p->relations;
	pg->sink = p->sink;
	pg->arena = arena_create(PGOUTPUT_ARENA_BLOCK);
	pg->options = pgoutput_options_build(p->publication);
	if (pg->arena == NULL || pg->options == NULL)
		goto fail;
	*out = pg;
	return 0;
fail:
	pgoutput_destroy(pg);
	return -ENOMEM;
}

const decoder_ops pgoutput_decoder_ops = {
	.name = "pgoutput",
	.create = pgoutput_create,
	.destroy = pgoutput_destroy,
	.start_options = pgoutput_start_options,
	.decode = pgoutput_decode,
	.reset = pgoutput_reset,
};
