/*
 * rt_filter — the `filter` of a Supabase Realtime postgres_changes binding ("user_id=eq.42",
 * "status=in.(a,\"b,c\")", "a=gt.1,b=not.is.null"): parsed once at join, checked against the
 * table's columns, then matched against every row the binding might deliver.
 *
 * Values are compared as PostgreSQL compares them for the column's type (numbers as numbers,
 * exactly; timestamps as instants; uuids and booleans in any spelling PostgreSQL accepts; text
 * byte-wise, the C collation). docs/protocol.md "Filters" is the user's description: grammar,
 * operators, types, and where walcast deviates from the server.
 *
 * Thread-safety: a filter is immutable after rt_filter_parse except for its per-relation cache,
 * which rt_filter_match updates; use one filter from one thread (the loop thread).
 */
#ifndef WALCAST_RT_FILTER_H
#define WALCAST_RT_FILTER_H

#include <stdbool.h>

#include "change.h"
#include "relcache.h"

typedef struct rt_filter rt_filter;

#define RT_FILTER_ERROR_MAX 256

/* Parses the `filter` string of a postgres_changes binding: conditions COLUMN=[not.]OP.VALUE
 * joined by commas (AND). NULL or "" is a filter that matches everything. Returns 0 and *out
 * (owned by the caller, freed with rt_filter_free), -EINVAL with err holding the reason in the
 * server's words (the join is refused with it), or -ENOMEM. err is written only on -EINVAL.
 * Does not block. */
__attribute__((warn_unused_result)) int rt_filter_parse(const char *text, rt_filter **out,
                                                        char err[RT_FILTER_ERROR_MAX]);

/* Frees f and everything it holds (compiled regexes, per-relation cache). NULL is fine. */
void rt_filter_free(rt_filter *f);

/* Checks f against rel (from src/stream/relcache.h): every named column exists and every value
 * parses as that column's type (an int4 column compared with "abc" is an error, as
 * PostgreSQL's cast would be). Returns 0, or -EINVAL with err, or -ENOMEM. Also prepares
 * f's per-relation cache for rel, so the first rt_filter_match does not have to. Does not
 * block. */
__attribute__((warn_unused_result)) int rt_filter_check(rt_filter *f, const relation *rel,
                                                        char err[RT_FILTER_ERROR_MAX]);

/* True when tuple (rel->ncols values, change.h) satisfies every condition of f; a filter
 * without conditions matches every tuple, tuple == NULL included. A condition on a column the
 * tuple does not carry (VALUE_ABSENT, VALUE_UNCHANGED) or on a column rel lacks is false, as is
 * a comparison with NULL (except `is`/`isdistinct`, which treat NULL as PostgreSQL does); the
 * `not.` prefix negates a condition's true/false but leaves an unknown (NULL) false, as SQL's
 * NOT does (the server's realtime.is_visible_through_filters). A condition whose constant does
 * not parse as the column's type is false: rt_filter_check need not come first, but only it
 * reports why. For a DELETE pass the old tuple (the server filters deletes on the old row).
 * Binds f to each relation version (rel's address, id and version) on first use: column
 * indexes and constants parsed as the column types; after that it allocates nothing but, for
 * match/imatch, PCRE2's match block for the call. Out of memory: false. Work per call is
 * bounded (docs/protocol.md, "Bounded work per row"). Does not block. */
bool rt_filter_match(rt_filter *f, const relation *rel, const change_value *tuple);

/* Number of conditions in f (0 for the match-everything filter). */
int rt_filter_count(const rt_filter *f);

#endif
