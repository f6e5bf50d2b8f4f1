/*
 * metrics — the registry behind the daemon's /metrics endpoint: counters, gauges, values read
 * by a callback at scrape time, and fixed-bucket histograms, rendered in the Prometheus text
 * exposition format 0.0.4.
 *
 * Design. Registration allocates, updating never does: a family (one metric name, its HELP
 * text, its kind and its fixed list of label names) is registered once; each child (one set of
 * label values) is registered once and returns a handle that the hot path updates with a plain
 * add to a field of the handle (no lookup, no lock, no allocation, no system call). Rendering
 * walks families and children in registration order, so the output is stable. Label sets are
 * escaped and preformatted when the child is registered, so rendering is mostly copying.
 *
 * Not thread-safe: the registry, its families and every handle belong to the loop thread (no
 * atomics, no locks). Nothing here blocks.
 *
 * Naming conventions, enforced at registration (each refusal says which rule and why), so that
 * whatever the registry accepts passes `promtool check metrics`:
 *   - a metric name matches [a-zA-Z_:][a-zA-Z0-9_:]* (the format's syntax) and is written in
 *     lower snake_case with a module prefix (walcast_...); no colons (reserved for recording
 *     rules), no upper case;
 *   - counters, and only counters, end in _total (walcast_changes_total);
 *   - values are in base units, spelled out: _seconds (never milliseconds, minutes...),
 *     _bytes (never kilobytes, bits...); no abbreviated units (_ms, _s, _kb, _b, _sec, ...);
 *     by convention (not checked) the unit is the last word before _total;
 *   - the suffixes _bucket, _count and _sum belong to histograms' own samples and are refused
 *     as family names; the name does not repeat the type (_counter, _gauge, _histogram,
 *     _summary);
 *   - label names match [a-zA-Z_][a-zA-Z0-9_]*, lower snake_case, without the __ prefix
 *     (reserved for Prometheus itself), not le or quantile (reserved for histograms and
 *     summaries), each at most once per family;
 *   - HELP text is required; HELP text and label values are UTF-8 (label values are escaped on
 *     output: backslash, double quote, newline; HELP: backslash, newline). Keep label
 *     cardinality bounded: a label value per table or per sink, never per connection or user.
 *
 * Value formatting: uint64 counters and int64 gauges print as integers; doubles print in their
 * shortest form that reads back to the same double ("0.1", "1e-07", "12345"), and as +Inf,
 * -Inf and NaN.
 */
#ifndef WALCAST_METRICS_H
#define WALCAST_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* The Content-Type of what metrics_render produces, for the HTTP listener. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Room for an error message from a registration. */
#define METRICS_ERROR_MAX 256

typedef struct metrics_registry metrics_registry;
typedef struct metrics_family metrics_family;

/* Handles of children, one type per kind so that the compiler catches a gauge updated as a
 * counter. Each points into the registry: valid until its child, its family or the registry is
 * removed. */
typedef struct metrics_counter metrics_counter;      /* METRICS_COUNTER: uint64, monotonic */
typedef struct metrics_counter_f metrics_counter_f;  /* METRICS_COUNTER_F: double, monotonic */
typedef struct metrics_gauge metrics_gauge;          /* METRICS_GAUGE: double */
typedef struct metrics_gauge_i metrics_gauge_i;      /* METRICS_GAUGE_I: int64 */
typedef struct metrics_histogram metrics_histogram;  /* METRICS_HISTOGRAM */

typedef enum metrics_kind {
	METRICS_COUNTER = 1, /* rendered as TYPE counter; uint64 values */
	METRICS_COUNTER_F,   /* rendered as TYPE counter; double values (e.g. seconds spent) */
	METRICS_GAUGE,       /* rendered as TYPE gauge; double values */
	METRICS_GAUGE_I,     /* rendered as TYPE gauge; int64 values */
	METRICS_HISTOGRAM,   /* rendered as TYPE histogram: cumulative _bucket{le=...}, _sum, _count */
} metrics_kind;

/* What a family is. Strings and arrays are copied by metrics_family_register. */
typedef struct metrics_desc {
	metrics_kind kind;
	const char *name;               /* see the conventions above */
	const char *help;               /* one line saying what is counted, and in which unit */
	const char *const *labels;      /* NULL-terminated label names; NULL for none */
	const double *buckets;          /* histograms: upper bounds (le, inclusive), finite and
	                                 * strictly increasing; +Inf is implied, do not list it */
	size_t nbuckets;                /* histograms: at least 1 */
} metrics_desc;

/* Reads a value at render time (lag computed from the source, RSS, a queue's length). Returns 0
 * and writes *value, or anything else to leave the sample out of this scrape (value unknown,
 * e.g. before the first connection). Called on the loop thread inside metrics_render; must not
 * block and must not call any metrics_* function. A uint64 counter read this way is exact up to
 * 2^53. */
typedef int (*metrics_read_cb)(void *arg, double *value);

/* Returns an empty registry, or NULL when out of memory. The caller owns it and frees it with
 * metrics_registry_destroy. */
metrics_registry *metrics_registry_create(void);

/* Frees the registry, its families and children; every handle becomes invalid. Safe on NULL. */
void metrics_registry_destroy(metrics_registry *r);

/* Registers a family. Returns 0 and *out (owned by the registry, valid until
 * metrics_family_remove or metrics_registry_destroy); -EINVAL when the description breaks a rule
 * above or the name is already registered (err says which and why: "metric walcast_lag_ms:
 * abbreviated unit \"ms\" ..."); -ENOMEM. err may be NULL. The registry is unchanged on error. */
__attribute__((warn_unused_result)) int metrics_family_register(metrics_registry *r,
                                                                const metrics_desc *desc,
                                                                metrics_family **out,
                                                                char err[METRICS_ERROR_MAX]);

/* Removes a family with all its children (a plugin going away for good); its handles become
 * invalid. Safe on NULL. */
void metrics_family_remove(metrics_registry *r, metrics_family *f);

/* Registers a child of f with the given label values: a NULL-terminated array with exactly one
 * value per label name of the family, in the family's order (NULL or an empty array for a family
 * without labels). Values are copied. The function must match the family's kind. Returns 0 and
 * *out (owned by the registry, value 0); -EINVAL when the kind does not match, the number of
 * values is wrong, a value is not UTF-8, or a child with the same values exists (err says
 * which; a child is registered once and its handle kept); -ENOMEM. err may be NULL. The family
 * is unchanged on error. Costs O(children of f) (the duplicate check): label sets are meant to
 * be bounded, tens to thousands of children per family. */
__attribute__((warn_unused_result)) int metrics_counter_register(metrics_family *f,
                                                                 const char *const *values,
                                                                 metrics_counter **out,
                                                                 char err[METRICS_ERROR_MAX]);
__attribute__((warn_unused_result)) int metrics_counter_f_register(metrics_family *f,
                                                                   const char *const *values,
                                                                   metrics_counter_f **out,
                                                                   char err[METRICS_ERROR_MAX]);
__attribute__((warn_unused_result)) int metrics_gauge_register(metrics_family *f,
                                                               const char *const *values,
                                                               metrics_gauge **out,
                                                               char err[METRICS_ERROR_MAX]);
__attribute__((warn_unused_result)) int metrics_gauge_i_register(metrics_family *f,
                                                                 const char *const *values,
                                                                 metrics_gauge_i **out,
                                                                 char err[METRICS_ERROR_MAX]);
__attribute__((warn_unused_result)) int metrics_histogram_register(metrics_family *f,
                                                                   const char *const *values,
                                                                   metrics_histogram **out,
                                                                   char err[METRICS_ERROR_MAX]);

/* Registers a child of a counter or gauge family (any kind but METRICS_HISTOGRAM) whose value is
 * read by cb(arg) at each render; arg is not owned. Same rules and errors as above; there is
 * no handle: remove it with metrics_child_remove. */
__attribute__((warn_unused_result)) int metrics_callback_register(metrics_family *f,
                                                                  const char *const *values,
                                                                  metrics_read_cb cb, void *arg,
                                                                  char err[METRICS_ERROR_MAX]);

/* Removes the child of f with these label values (a sink or a connection going away); its
 * handle becomes invalid, and registering the same values again later starts from 0 (and
 * renders last). Returns 0, or -ENOENT when there is no such child. */
__attribute__((warn_unused_result)) int metrics_child_remove(metrics_family *f,
                                                             const char *const *values);

/* Number of children of f (for tests and sanity checks). */
size_t metrics_family_size(const metrics_family *f);

/* The hot path: a few nanoseconds each, never allocate, never fail, never block. */

/* Adds 1 / n to a uint64 counter (wraps at 2^64, i.e. never in practice). */
void metrics_counter_inc(metrics_counter *c);
void metrics_counter_add(metrics_counter *c, uint64_t n);

/* Adds x to a double counter; a negative or NaN x is ignored (a counter never goes down). */
void metrics_counter_f_add(metrics_counter_f *c, double x);

/* Sets / adds to a double gauge. */
void metrics_gauge_set(metrics_gauge *g, double x);
void metrics_gauge_add(metrics_gauge *g, double x);

/* Sets / adds to an int64 gauge (add wraps like unsigned arithmetic rather than overflowing). */
void metrics_gauge_i_set(metrics_gauge_i *g, int64_t x);
void metrics_gauge_i_add(metrics_gauge_i *g, int64_t x);

/* Counts x in the first bucket whose upper bound is >= x (+Inf when none is; NaN goes to +Inf
 * and makes _sum NaN, as Prometheus' own clients do) and adds it to _sum. */
void metrics_histogram_observe(metrics_histogram *h, double x);

/* Appends the whole registry to out in the text format 0.0.4: per family (in registration
 * order) its HELP and TYPE lines, then its samples (children in registration order). A family
 * with no sample to show (no children, or every callback declined) is left out entirely.
 * Returns 0, or -ENOMEM with out truncated back to its length at the call. Calls the read
 * callbacks; does not block otherwise. */
__attribute__((warn_unused_result)) int metrics_render(const metrics_registry *r, buf *out);

#endif
