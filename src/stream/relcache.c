/*
 * relcache — relations by OID and by schema-qualified name.
 *
 * Relations live in a dense array; two open-addressing hash tables (OID, name hash) hold
 * indexes into it. Replacing a relation frees the old copy and reuses its slot, so indexes
 * stay valid and nothing is rehashed on ALTER TABLE.
 *
 * Every relation the cache makes gets the next id of a per-cache counter, so an id is never
 * reused (the version restarts at 1 for a relation new to the cache; the address of a freed
 * relation may be reused by malloc). A relation that leaves the cache (replaced, dropped as
 * stale, or the cache destroyed) while relation_ref references it is detached instead of
 * freed: the cache forgets it and its last relation_unref frees it.
 */
#include "relcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

struct relcache {
	relation **rels;
	size_t nrels;
	size_t cap;
	hash_index by_oid;  /* oid -> index in rels (relations with an oid) */
	hash_index by_name; /* schema.name -> index in rels */
	uint64_t next_id;  /* the id of the next relation made (ids start at 1) */
};

static uint32_t name_hash(const char *schema, size_t sl, const char *name, size_t nl)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < sl; i++)
		h = (h ^ (unsigned char)schema[i]) * 1099511628211ULL;
	h = (h ^ '.') * 1099511628211ULL;
	for (size_t i = 0; i < nl; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
	return (uint32_t)(h ^ (h >> 32));
}

static uint32_t oid_hash(uint32_t oid)
{
	uint64_t h = (uint64_t)oid * 0x9E3779B97F4A7C15ULL;
	return (uint32_t)(h >> 32);
}

static bool name_eq(const relation *r, const char *schema, size_t sl, const char *name, size_t nl)
{
	return strlen(r->schema) == sl && memcmp(r->schema, schema, sl) == 0 &&
	       strlen(r->name) == nl && memcmp(r->name, name, nl) == 0;
}

static void relation_free(relation *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->ncols; i++) {
		free(r->cols[i].name);
		free(r->cols[i].type_name);
	}
	free(r->cols);
	free(r->schema);
	free(r->name);
	free(r);
}

/* The cache lets go of r: freed now, or by its last relation_unref when referenced. */
static void relation_release(relation *r)
{
	if (r == NULL)
		return;
	if (r->refs > 0)
		r->detached = true;
	else
		relation_free(r);
}

static relation *relation_copy(const relation *d)
{
	relation *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->oid = d->oid;
	r->replident = d->replident;
	r->schema = strdup(d->schema);
	r->name = strdup(d->name);
	r->cols = calloc(d->ncols > 0 ? (size_t)d->ncols : 1, sizeof(rel_column));
	if (r->schema == NULL || r->name == NULL || r->cols == NULL)
		goto fail;
	for (int i = 0; i < d->ncols; i++) {
		r->cols[i] = d->cols[i];
		r->cols[i].name = strdup(d->cols[i].name);
		r->cols[i].type_name = d->cols[i].type_name != NULL ? strdup(d->cols[i].type_name) : NULL;
		if (r->cols[i].name == NULL || (d->cols[i].type_name != NULL && r->cols[i].type_name == NULL)) {
			r->ncols = i + 1;
			goto fail;
		}
	}
	r->ncols = d->ncols;
	return r;
fail:
	relation_free(r);
	return NULL;
}

relcache *relcache_create(void)
{
	relcache *rc = calloc(1, sizeof(relcache));
	if (rc == NULL || hash_index_init(&rc->by_oid) < 0 || hash_index_init(&rc->by_name) < 0) {
		relcache_destroy(rc);
		return NULL;
	}
	return rc;
}

void relcache_destroy(relcache *rc)
{
	if (rc == NULL)
		return;
	for (size_t i = 0; i < rc->nrels; i++)
		relation_release(rc->rels[i]);
	free(rc->rels);
	hash_index_fini(&rc->by_oid);
	hash_index_fini(&rc->by_name);
	free(rc);
}

/* Indexes rels[idx]; room must have been reserved. */
static void index_insert(relcache *rc, size_t idx)
{
	const relation *r = rc->rels[idx];
	if (r->oid != 0)
		hash_index_insert(&rc->by_oid, oid_hash(r->oid), (uint32_t)idx);
	hash_index_insert(&rc->by_name, name_hash(r->schema, strlen(r->schema), r->name, strlen(r->name)),
	                  (uint32_t)idx);
}

static void index_rebuild(relcache *rc)
{
	hash_index_clear(&rc->by_oid);
	hash_index_clear(&rc->by_name);
	for (size_t i = 0; i < rc->nrels; i++)
		index_insert(rc, i);
}

/* Room for one more relation in rels and both indexes. 0 or -ENOMEM. */
static int relcache_grow(relcache *rc)
{
	/* by_oid too has room for every relation: a later message may give an oid to one without */
	if (hash_index_reserve(&rc->by_oid, rc->nrels + 1 - rc->by_oid.n) < 0 ||
	    hash_index_reserve(&rc->by_name, rc->nrels + 1 - rc->by_name.n) < 0)
		return -ENOMEM;
	if (rc->nrels < rc->cap)
		return 0;
	size_t cap = rc->cap ? rc->cap * 2 : 16;
	relation **rels = realloc(rc->rels, cap * sizeof(*rels));
	if (rels == NULL)
		return -ENOMEM;
	rc->rels = rels;
	rc->cap = cap;
	return 0;
}

static long find_oid(const relcache *rc, uint32_t oid)
{
	if (oid == 0)
		return -1;
	uint32_t h = oid_hash(oid);
	hash_probe p = hash_index_probe(&rc->by_oid, h);
	for (uint32_t idx; hash_probe_next(&rc->by_oid, &p, &idx);)
		if (rc->rels[idx]->oid == oid)
			return (long)idx;
	return -1;
}

static long find_name(const relcache *rc, const char *schema, size_t sl, const char *name, size_t nl)
{
	uint32_t h = name_hash(schema, sl, name, nl);
	hash_probe p = hash_index_probe(&rc->by_name, h);
	for (uint32_t idx; hash_probe_next(&rc->by_name, &p, &idx);)
		if (name_eq(rc->rels[idx], schema, sl, name, nl))
			return (long)idx;
	return -1;
}

int relcache_put(relcache *rc, const relation *desc, const relation **out)
{
	long idx = desc->oid != 0 ? find_oid(rc, desc->oid) : -1;
	if (idx < 0)
		idx = find_name(rc, desc->schema, strlen(desc->schema), desc->name, strlen(desc->name));
	relation *copy = relation_copy(desc);
	if (copy == NULL)
		return -ENOMEM;
	if (idx >= 0) {
		relation *old = rc->rels[idx];
		copy->version = old->version + 1;
		/* A rename or a newly learned OID changes the keys: rebuild the small index. */
		bool rekey = old->oid != copy->oid || strcmp(old->schema, copy->schema) != 0 ||
		             strcmp(old->name, copy->name) != 0;
		copy->id = ++rc->next_id;
		rc->rels[idx] = copy;
		relation_release(old);
		if (rekey) {
			/* A stale relation may still hold the new name (dropped and replaced by a rename):
			 * the renamed one wins. */
			for (size_t i = 0; i < rc->nrels; i++) {
				relation *o = rc->rels[i];
				if ((long)i != idx && strcmp(o->schema, copy->schema) == 0 && strcmp(o->name, copy->name) == 0) {
					relation_release(o);
					rc->rels[i] = rc->rels[--rc->nrels];
					if ((long)rc->nrels == idx)
						idx = (long)i;
					break;
				}
			}
			index_rebuild(rc);
		}
	} else {
		if (relcache_grow(rc) < 0) {
			relation_free(copy);
			return -ENOMEM;
		}
		copy->version = 1;
		copy->id = ++rc->next_id;
		idx = (long)rc->nrels++;
		rc->rels[idx] = copy;
		index_insert(rc, (size_t)idx);
	}
	if (out != NULL)
		*out = rc->rels[idx];
	return 0;
}

const relation *relcache_get_oid(const relcache *rc, uint32_t oid)
{
	long idx = find_oid(rc, oid);
	return idx < 0 ? NULL : rc->rels[idx];
}

const relation *relcache_get_name(const relcache *rc, const char *schema, size_t schema_len,
                                  const char *name, size_t name_len)
{
	long idx = find_name(rc, schema, schema_len, name, name_len);
	return idx < 0 ? NULL : rc->rels[idx];
}

const relation *relation_ref(const relation *rel)
{
	/* The cache hands out const pointers; the reference count is the one field a holder may
	 * change, and every relation is heap-allocated by this module. */
	if (rel != NULL)
		((relation *)rel)->refs++;
	return rel;
}

void relation_unref(const relation *rel)
{
	if (rel == NULL)
		return;
	relation *r = (relation *)rel;
	if (r->refs > 0 && --r->refs == 0 && r->detached)
		relation_free(r);
}

int relation_column_index(const relation *rel, const char *name, size_t name_len)
{
	for (int i = 0; i < rel->ncols; i++) {
		const char *n = rel->cols[i].name;
		if (strlen(n) == name_len && memcmp(n, name, name_len) == 0)
			return i;
	}
	return -1;
}

size_t relcache_count(const relcache *rc)
{
	return rc->nrels;
}
