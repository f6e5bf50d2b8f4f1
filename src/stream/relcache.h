/*
 * relcache — the relations (tables) the stream talks about: schema, name and columns.
 *
 * pgoutput announces relations by OID in Relation messages; wal2json names them on every line.
 * The cache serves both: a relation is indexed by OID (when known) and by schema-qualified
 * name. A new description of the same relation (after ALTER TABLE) replaces the old one and
 * bumps its version. Relations are owned by the cache.
 */
#ifndef WALCAST_RELCACHE_H
#define WALCAST_RELCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rel_column {
	char *name;
	uint32_t type_oid;
	int32_t typmod;  /* -1 when unknown */
	bool key;        /* part of the replica identity (pgoutput) or primary key (wal2json) */
	char *type_name; /* the type's name when the stream gave one for a type it identifies by OID
	                  * only (pgoutput's Type message: an enum's name, a domain's base type);
	                  * NULL otherwise (a builtin type: name it by type_oid) */
} rel_column;

typedef struct relation {
	uint32_t oid;      /* 0 when the decoder does not know it (wal2json) */
	char *schema;
	char *name;
	int ncols;
	rel_column *cols;
	char replident;    /* 'd' default, 'f' full, 'i' index, 'n' nothing; '?' unknown */
	uint32_t version;  /* bumped each time the relation is replaced */
	uint64_t id;       /* unique within its cache for the cache's lifetime, never reused: a
	                    * binding made for one relation (version) never matches another */
	uint32_t refs;     /* references held by relation_ref (the cache's own is not counted) */
	bool detached;     /* replaced while referenced: freed by the last relation_unref */
} relation;

typedef struct relcache relcache;

/* Returns an empty cache or NULL when out of memory. Caller owns; relcache_destroy() frees it
 * and every relation in it that is not referenced. A relation still referenced then is detached
 * like a replaced one (valid until its last relation_unref, which frees it): holders may
 * outlive the cache, and nothing leaks as long as every reference is dropped. */
relcache *relcache_create(void);
void relcache_destroy(relcache *rc);

/* Adds or replaces a relation. The cache deep-copies desc (names, columns). A relation with a
 * non-zero OID replaces the one with that OID; otherwise the one with that schema and name.
 * On success *out (if not NULL) points at the cached copy, with a fresh id, valid until the
 * same relation is replaced or the cache destroyed; pointers to a replaced relation become
 * invalid at once unless relation_ref holds it. Returns 0 or -ENOMEM (the cache is unchanged
 * then). Does not block. */
__attribute__((warn_unused_result)) int relcache_put(relcache *rc, const relation *desc,
                                                     const relation **out);

/* Lookups; NULL when absent. */
const relation *relcache_get_oid(const relcache *rc, uint32_t oid);
const relation *relcache_get_name(const relcache *rc, const char *schema, size_t schema_len,
                                  const char *name, size_t name_len);

/* Holding a relation past the next relcache_put (txnbuf, sinks): relation_ref takes a
 * reference and returns rel; relation_unref drops it. A relation replaced or dropped from the
 * cache while referenced stays valid, detached from the cache, until its last unref, which
 * frees it. Both are safe on NULL and never fail or block. rel must be writable: a relation of
 * a relcache, or a caller's own relation (never detached, so never freed by relation_unref).
 * Not thread-safe (the loop thread owns the cache). */
const relation *relation_ref(const relation *rel);
void relation_unref(const relation *rel);

/* Index of the named column in rel, or -1. */
int relation_column_index(const relation *rel, const char *name, size_t name_len);

/* Number of relations cached. */
size_t relcache_count(const relcache *rc);

#endif
