/*
 * metrics — the registry behind /metrics (metrics.h has the contract and the naming rules).
 *
 * A registry is an array of families in registration order; a family is a doubly linked list of
 * children in registration order. A child carries its value (a union over the kinds), its label
 * values (for lookups) and its label set already escaped and joined (`a="x",b="y"`), so the hot
 * path is one add to the child and rendering is mostly memcpy. A histogram child carries its
 * per-bucket counts (not cumulative: observe touches one counter; render accumulates) in the
 * same allocation, and a pointer to its family's bounds. The handle types of metrics.h are the
 * child itself, wrapped in a struct per kind so that a handle converts to its child without
 * breaking aliasing rules.
 */
#include "metrics.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct child {
	union {
		uint64_t u;  /* METRICS_COUNTER */
		double d;    /* METRICS_COUNTER_F, METRICS_GAUGE */
		int64_t i;   /* METRICS_GAUGE_I */
	} v;
	double sum;              /* histograms */
	uint64_t *counts;        /* histograms: nbounds + 1 (the last is +Inf), in this block */
	const double *bounds;    /* histograms: the family's */
	size_t nbounds;
	metrics_read_cb cb;      /* a callback child: read at render time */
	void *cb_arg;
	struct child *prev, *next;
	char **values;           /* nlabels copies, for lookups */
	char *labels;            /* `a="x",b="y"`, escaped; "" without labels */
	size_t labels_len;
} child;

struct metrics_counter { child c; };
struct metrics_counter_f { child c; };
struct metrics_gauge { child c; };
struct metrics_gauge_i { child c; };
struct metrics_histogram { child c; };

struct metrics_family {
	metrics_kind kind;
	char *name;
	size_t name_len;
	char *help;              /* escaped */
	char **labels;
	size_t nlabels;
	double *bounds;
	char **le;               /* bounds formatted for the le label */
	size_t nbounds;
	child *head, *tail;
	size_t nchildren;
};

struct metrics_registry {
	metrics_family **fams;
	size_t n, cap;
};

/* ---- errors, names ------------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static void set_err(char *err, const char *fmt, ...)
{
	if (err == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, METRICS_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* Whether s[0..n) is valid UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF). */
static bool utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0)
			len = 2, min = 0x80, cp = c & 0x1F;
		else if ((c & 0xF0) == 0xE0)
			len = 3, min = 0x800, cp = c & 0x0F;
		else if ((c & 0xF8) == 0xF0)
			len = 4, min = 0x10000, cp = c & 0x07;
		else
			return false;
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

static bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* The words between underscores of a name that promtool's linter reads as units or types. */
static const char *const type_words[] = {"counter", "gauge", "histogram", "summary", NULL};
static const char *const unit_abbreviations[] = {"s",  "ms", "us", "ns", "sec", "b", "kb", "mb",
                                                 "gb", "tb", "pb", "m",  "h",   "d", NULL};
static const char *const unit_prefixes[] = {"", "pico", "nano", "micro", "milli", "centi",
                                            "deci", "deca", "hecto", "kilo", "kibi", "mega",
                                            "mibi", "giga", "gibi", "tera", "tebi", "peta",
                                            "pebi", NULL};
static const struct {
	const char *unit, *base;
} units[] = {
	{"amperes", "amperes"}, {"bytes", "bytes"}, {"celsius", "celsius"}, {"grams", "grams"},
	{"joules", "joules"}, {"kelvin", "kelvin"}, {"meters", "meters"}, {"metres", "metres"},
	{"seconds", "seconds"}, {"volts", "volts"}, {"minutes", "seconds"}, {"hours", "seconds"},
	{"days", "seconds"}, {"weeks", "seconds"}, {"kelvins", "kelvin"},
	{"fahrenheit", "celsius"}, {"rankine", "celsius"}, {"inches", "meters"},
	{"yards", "meters"}, {"miles", "meters"}, {"bits", "bytes"}, {"calories", "joules"},
	{"pounds", "grams"}, {"ounces", "grams"},
};

/* Whether the word w[0..n) equals prefix followed by unit. */
static bool word_is(const char *w, size_t n, const char *prefix, const char *unit)
{
	size_t p = strlen(prefix), u = strlen(unit);
	return n == p + u && memcmp(w, prefix, p) == 0 && memcmp(w + p, unit, u) == 0;
}

/* Checks one word of a metric name against the unit and type conventions. */
static int check_word(const char *name, const char *w, size_t n, char *err)
{
	for (size_t i = 0; type_words[i]; i++) {
		if (word_is(w, n, "", type_words[i])) {
			set_err(err, "metric %s: the name must not repeat the type (\"%s\"); TYPE says it",
			        name, type_words[i]);
			return -EINVAL;
		}
	}
	for (size_t i = 0; unit_abbreviations[i]; i++) {
		if (word_is(w, n, "", unit_abbreviations[i])) {
			set_err(err, "metric %s: abbreviated unit \"%s\"; spell out the base unit "
			        "(_seconds, _bytes)", name, unit_abbreviations[i]);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		for (size_t p = 0; unit_prefixes[p]; p++) {
			if (!word_is(w, n, unit_prefixes[p], units[i].unit))
				continue;
			if (unit_prefixes[p][0] == '\0' && strcmp(units[i].unit, units[i].base) == 0)
				return 0;
			set_err(err, "metric %s: use the base unit \"%s\", not \"%.*s\"", name,
			        units[i].base, (int)n, w);
			return -EINVAL;
		}
	}
	return 0;
}

static int check_metric_name(metrics_kind kind, const char *name, char *err)
{
	if (name == NULL || name[0] == '\0') {
		set_err(err, "metric name missing");
		return -EINVAL;
	}
	for (size_t i = 0; name[i]; i++) {
		char c = name[i];
		if (!(is_lower(c) || is_upper(c) || c == '_' || c == ':' || (i > 0 && is_digit(c)))) {
			set_err(err, "metric \"%.100s\": not a valid metric name "
			        "([a-zA-Z_:][a-zA-Z0-9_:]*)", name);
			return -EINVAL;
		}
	}
	if (strchr(name, ':')) {
		set_err(err, "metric %s: colons are reserved for recording rules", name);
		return -EINVAL;
	}
	for (size_t i = 0; name[i]; i++) {
		if (is_upper(name[i])) {
			set_err(err, "metric %s: write metric names in lower snake_case", name);
			return -EINVAL;
		}
	}
	for (const char *w = name; *w;) {
		size_t n = strcspn(w, "_");
		int rc = check_word(name, w, n, err);
		if (rc < 0)
			return rc;
		w += n;
		if (*w == '_')
			w++;
	}
	bool counter = kind == METRICS_COUNTER || kind == METRICS_COUNTER_F;
	if (counter && !has_suffix(name, "_total")) {
		set_err(err, "metric %s: a counter's name ends in _total", name);
		return -EINVAL;
	}
	if (!counter && has_suffix(name, "_total")) {
		set_err(err, "metric %s: only counters end in _total", name);
		return -EINVAL;
	}
	if (has_suffix(name, "_bucket") || has_suffix(name, "_count") || has_suffix(name, "_sum")) {
		set_err(err, "metric %s: the suffixes _bucket, _count and _sum are reserved for "
		        "histogram samples", name);
		return -EINVAL;
	}
	return 0;
}

static int check_label_name(const char *metric, const char *const *labels, size_t idx, char *err)
{
	const char *l = labels[idx];
	if (l[0] == '\0') {
		set_err(err, "metric %s: empty label name", metric);
		return -EINVAL;
	}
	for (size_t i = 0; l[i]; i++) {
		char c = l[i];
		if (!(is_lower(c) || is_upper(c) || c == '_' || (i > 0 && is_digit(c)))) {
			set_err(err, "metric %s: label \"%.100s\": not a valid label name "
			        "([a-zA-Z_][a-zA-Z0-9_]*)", metric, l);
			return -EINVAL;
		}
		if (is_upper(c)) {
			set_err(err, "metric %s: label %s: write label names in lower snake_case", metric, l);
			return -EINVAL;
		}
	}
	if (l[0] == '_' && l[1] == '_') {
		set_err(err, "metric %s: label %s: names starting with __ are reserved for Prometheus",
		        metric, l);
		return -EINVAL;
	}
	if (strcmp(l, "le") == 0 || strcmp(l, "quantile") == 0) {
		set_err(err, "metric %s: label %s is reserved for histograms and summaries", metric, l);
		return -EINVAL;
	}
	for (size_t i = 0; i < idx; i++) {
		if (strcmp(labels[i], l) == 0) {
			set_err(err, "metric %s: label %s listed twice", metric, l);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- number formatting --------------------------------------------------------------- */

/* Writes n in decimal to out (room for 21 bytes); returns the length. */
static size_t fmt_u64(char *out, uint64_t n)
{
	char tmp[24];
	size_t len = 0;
	do {
		tmp[len++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	for (size_t i = 0; i < len; i++)
		out[i] = tmp[len - 1 - i];
	out[len] = '\0';
	return len;
}

static size_t fmt_i64(char *out, int64_t n)
{
	if (n >= 0)
		return fmt_u64(out, (uint64_t)n);
	out[0] = '-';
	return 1 + fmt_u64(out + 1, -(uint64_t)n);
}

/* Writes v as Prometheus reads it (room for 32 bytes): +Inf, -Inf, NaN, integers below 2^53
 * without a fraction, anything else in the shortest %g form that reads back as v. Assumes the C
 * locale for LC_NUMERIC (walcast never changes it). Returns the length. */
static size_t fmt_double(char *out, double v)
{
	if (isnan(v) || isinf(v)) {
		const char *s = isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
		size_t n = strlen(s);
		memcpy(out, s, n + 1);
		return n;
	}
	if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(int64_t)v)
		return fmt_i64(out, (int64_t)v);
	/* Any decimal of up to 15 significant digits survives a trip through a normal double
	 * (DBL_DIG), so when the shortest form has at most 15 digits, %.15g (which drops trailing
	 * zeros) prints exactly it; otherwise 16 or 17 digits are needed. Subnormals carry fewer
	 * bits, so for them the search starts at one digit. */
	int n = 0;
	bool subnormal = v > -DBL_MIN && v < DBL_MIN;
	for (int prec = subnormal ? 1 : 15; prec <= 17; prec++) {
		n = snprintf(out, 32, "%.*g", prec, v);
		if (prec == 17 || strtod(out, NULL) == v)
			break;
	}
	return (size_t)n;
}

/* ---- registry ------------------------------------------------------------------------ */

metrics_registry *metrics_registry_create(void)
{
	return calloc(1, sizeof(metrics_registry));
}

static void child_free(child *c, size_t nlabels)
{
	if (c == NULL)
		return;
	if (c->values) {
		for (size_t i = 0; i < nlabels; i++)
			free(c->values[i]);
		free(c->values);
	}
	free(c->labels);
	free(c);
}

static void family_free(metrics_family *f)
{
	if (f == NULL)
		return;
	child *c = f->head;
	while (c) {
		child *next = c->next;
		child_free(c, f->nlabels);
		c = next;
	}
	if (f->labels) {
		for (size_t i = 0; i < f->nlabels; i++)
			free(f->labels[i]);
		free(f->labels);
	}
	if (f->le) {
		for (size_t i = 0; i < f->nbounds; i++)
			free(f->le[i]);
		free(f->le);
	}
	free(f->bounds);
	free(f->help);
	free(f->name);
	free(f);
}

void metrics_registry_destroy(metrics_registry *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n; i++)
		family_free(r->fams[i]);
	free(r->fams);
	free(r);
}

/* Returns a copy of help with backslash and newline escaped, or NULL when out of memory. */
static char *escape_help(const char *help)
{
	size_t n = strlen(help), extra = 0;
	for (size_t i = 0; i < n; i++)
		extra += help[i] == '\\' || help[i] == '\n';
	char *out = malloc(n + extra + 1);
	if (out == NULL)
		return NULL;
	char *p = out;
	for (size_t i = 0; i < n; i++) {
		if (help[i] == '\\') {
			*p++ = '\\';
			*p++ = '\\';
		} else if (help[i] == '\n') {
			*p++ = '\\';
			*p++ = 'n';
		} else {
			*p++ = help[i];
		}
	}
	*p = '\0';
	return out;
}

static int check_desc(const metrics_registry *r, const metrics_desc *d, char *err)
{
	if (d->kind < METRICS_COUNTER || d->kind > METRICS_HISTOGRAM) {
		set_err(err, "metric %.100s: unknown kind %d", d->name ? d->name : "(null)", (int)d->kind);
		return -EINVAL;
	}
	int rc = check_metric_name(d->kind, d->name, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->fams[i]->name, d->name) == 0) {
			set_err(err, "metric %s: already registered", d->name);
			return -EINVAL;
		}
	}
	if (d->help == NULL || d->help[0] == '\0') {
		set_err(err, "metric %s: HELP text is required (what is counted, in which unit)", d->name);
		return -EINVAL;
	}
	if (!utf8_valid(d->help, strlen(d->help))) {
		set_err(err, "metric %s: HELP text is not valid UTF-8", d->name);
		return -EINVAL;
	}
	for (size_t i = 0; d->labels && d->labels[i]; i++) {
		rc = check_label_name(d->name, d->labels, i, err);
		if (rc < 0)
			return rc;
	}
	if (d->kind != METRICS_HISTOGRAM) {
		if (d->buckets || d->nbuckets) {
			set_err(err, "metric %s: buckets are for histograms only", d->name);
			return -EINVAL;
		}
		return 0;
	}
	if (d->buckets == NULL || d->nbuckets == 0) {
		set_err(err, "metric %s: a histogram needs at least one bucket bound", d->name);
		return -EINVAL;
	}
	for (size_t i = 0; i < d->nbuckets; i++) {
		if (!isfinite(d->buckets[i])) {
			set_err(err, "metric %s: bucket bound %zu is not finite (+Inf is implied; do not "
			        "list it)", d->name, i);
			return -EINVAL;
		}
		if (i > 0 && !(d->buckets[i] > d->buckets[i - 1])) {
			set_err(err, "metric %s: bucket bounds must be strictly increasing (bound %zu)",
			        d->name, i);
			return -EINVAL;
		}
	}
	return 0;
}

int metrics_family_register(metrics_registry *r, const metrics_desc *desc, metrics_family **out,
                            char err[METRICS_ERROR_MAX])
{
	metrics_family *f = NULL;
	int rc = check_desc(r, desc, err);
	if (rc < 0)
		goto fail;
	rc = -ENOMEM;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		metrics_family **fams = realloc(r->fams, cap * sizeof *fams);
		if (fams == NULL)
			goto fail;
		r->fams = fams;
		r->cap = cap;
	}
	f = calloc(1, sizeof *f);
	if (f == NULL)
		goto fail;
	f->kind = desc->kind;
	f->name = strdup(desc->name);
	f->help = escape_help(desc->help);
	if (f->name == NULL || f->help == NULL)
		goto fail;
	f->name_len = strlen(f->name);
	size_t nlabels = 0;
	while (desc->labels && desc->labels[nlabels])
		nlabels++;
	if (nlabels) {
		f->labels = calloc(nlabels, sizeof *f->labels);
		if (f->labels == NULL)
			goto fail;
		f->nlabels = nlabels;
		for (size_t i = 0; i < nlabels; i++) {
			f->labels[i] = strdup(desc->labels[i]);
			if (f->labels[i] == NULL)
				goto fail;
		}
	}
	if (desc->kind == METRICS_HISTOGRAM) {
		f->bounds = malloc(desc->nbuckets * sizeof *f->bounds);
		f->le = calloc(desc->nbuckets, sizeof *f->le);
		if (f->bounds == NULL || f->le == NULL)
			goto fail;
		f->nbounds = desc->nbuckets;
		for (size_t i = 0; i < desc->nbuckets; i++) {
			char tmp[32];
			f->bounds[i] = desc->buckets[i];
			fmt_double(tmp, desc->buckets[i]);
			f->le[i] = strdup(tmp);
			if (f->le[i] == NULL)
				goto fail;
		}
	}
	r->fams[r->n++] = f;
	*out = f;
	return 0;
fail:
	if (rc == -ENOMEM)
		set_err(err, "metric %s: out of memory", desc->name);
	family_free(f);
	return rc;
}

void metrics_family_remove(metrics_registry *r, metrics_family *f)
{
	if (r == NULL || f == NULL)
		return;
	for (size_t i = 0; i < r->n; i++) {
		if (r->fams[i] != f)
			continue;
		memmove(&r->fams[i], &r->fams[i + 1], (r->n - i - 1) * sizeof *r->fams);
		r->n--;
		break;
	}
	family_free(f);
}

/* ---- children ------------------------------------------------------------------------ */

/* Appends value to b with backslash, double quote and newline escaped. */
static int put_label_value(buf *b, const char *v)
{
	for (const char *p = v; *p; p++) {
		int rc;
		if (*p == '\\')
			rc = buf_append(b, "\\\\", 2);
		else if (*p == '"')
			rc = buf_append(b, "\\\"", 2);
		else if (*p == '\n')
			rc = buf_append(b, "\\n", 2);
		else
			rc = buf_putc(b, *p);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Builds `a="x",b="y"` for the family's labels and these values; 0 or -ENOMEM. */
static int build_labels(const metrics_family *f, const char *const *values, buf *b)
{
	for (size_t i = 0; i < f->nlabels; i++) {
		int rc = 0;
		if (i > 0)
			rc = buf_putc(b, ',');
		if (rc == 0)
			rc = buf_puts(b, f->labels[i]);
		if (rc == 0)
			rc = buf_append(b, "=\"", 2);
		if (rc == 0)
			rc = put_label_value(b, values[i]);
		if (rc == 0)
			rc = buf_putc(b, '"');
		if (rc < 0)
			return rc;
	}
	return 0;
}

static child *child_find(const metrics_family *f, const char *const *values)
{
	for (child *c = f->head; c; c = c->next) {
		size_t i = 0;
		while (i < f->nlabels && strcmp(c->values[i], values[i]) == 0)
			i++;
		if (i == f->nlabels)
			return c;
	}
	return NULL;
}

static const char *kind_name(metrics_kind k)
{
	switch (k) {
	case METRICS_COUNTER: return "uint64 counter";
	case METRICS_COUNTER_F: return "double counter";
	case METRICS_GAUGE: return "double gauge";
	case METRICS_GAUGE_I: return "int64 gauge";
	case METRICS_HISTOGRAM: return "histogram";
	}
	return "?";
}

/* Registers a child of f; want is the kind the caller's function serves (0: a callback, any
 * kind but histogram). */
static int child_add(metrics_family *f, metrics_kind want, const char *const *values,
                     child **out, char *err)
{
	static const char *const none[] = {NULL};
	child *c = NULL;
	buf labels;
	buf_init(&labels);
	int rc = -EINVAL;
	if (values == NULL)
		values = none;
	if (want == 0 && f->kind == METRICS_HISTOGRAM) {
		set_err(err, "metric %s: a histogram cannot be read by a callback", f->name);
		goto fail;
	}
	if (want != 0 && want != f->kind) {
		set_err(err, "metric %s: is a %s, not a %s", f->name, kind_name(f->kind), kind_name(want));
		goto fail;
	}
	size_t n = 0;
	while (values[n])
		n++;
	if (n != f->nlabels) {
		set_err(err, "metric %s: %zu label values for %zu labels", f->name, n, f->nlabels);
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		if (!utf8_valid(values[i], strlen(values[i]))) {
			set_err(err, "metric %s: value of label %s is not valid UTF-8", f->name, f->labels[i]);
			goto fail;
		}
	}
	rc = build_labels(f, values, &labels);
	if (rc < 0)
		goto fail;
	rc = -EINVAL;
	if (child_find(f, values)) {
		set_err(err, "metric %s{%s}: already registered", f->name, labels.len ? labels.data : "");
		goto fail;
	}
	rc = -ENOMEM;
	size_t ncounts = f->kind == METRICS_HISTOGRAM ? f->nbounds + 1 : 0;
	c = calloc(1, sizeof *c + ncounts * sizeof(uint64_t));
	if (c == NULL)
		goto fail;
	/* An exact-size copy: a buf keeps at least 256 bytes, too much for each of many children. */
	c->labels = malloc(labels.len + 1);
	if (c->labels == NULL)
		goto fail;
	if (labels.len)
		memcpy(c->labels, labels.data, labels.len);
	c->labels[labels.len] = '\0';
	c->labels_len = labels.len;
	if (n) {
		c->values = calloc(n, sizeof *c->values);
		if (c->values == NULL)
			goto fail;
		for (size_t i = 0; i < n; i++) {
			c->values[i] = strdup(values[i]);
			if (c->values[i] == NULL)
				goto fail;
		}
	}
	if (ncounts) {
		c->counts = (uint64_t *)(c + 1);
		c->bounds = f->bounds;
		c->nbounds = f->nbounds;
	}
	buf_fini(&labels);
	c->prev = f->tail;
	if (f->tail)
		f->tail->next = c;
	else
		f->head = c;
	f->tail = c;
	f->nchildren++;
	*out = c;
	return 0;
fail:
	if (rc == -ENOMEM)
		set_err(err, "metric %s: out of memory", f->name);
	child_free(c, f->nlabels);
	buf_fini(&labels);
	return rc;
}

int metrics_counter_register(metrics_family *f, const char *const *values, metrics_counter **out,
                             char err[METRICS_ERROR_MAX])
{
	child *c;
	int rc = child_add(f, METRICS_COUNTER, values, &c, err);
	if (rc == 0)
		*out = (metrics_counter *)c;
	return rc;
}

int metrics_counter_f_register(metrics_family *f, const char *const *values,
                               metrics_counter_f **out, char err[METRICS_ERROR_MAX])
{
	child *c;
	int rc = child_add(f, METRICS_COUNTER_F, values, &c, err);
	if (rc == 0)
		*out = (metrics_counter_f *)c;
	return rc;
}

int metrics_gauge_register(metrics_family *f, const char *const *values, metrics_gauge **out,
                           char err[METRICS_ERROR_MAX])
{
	child *c;
	int rc = child_add(f, METRICS_GAUGE, values, &c, err);
	if (rc == 0)
		*out = (metrics_gauge *)c;
	return rc;
}

int metrics_gauge_i_register(metrics_family *f, const char *const *values, metrics_gauge_i **out,
                             char err[METRICS_ERROR_MAX])
{
	child *c;
	int rc = child_add(f, METRICS_GAUGE_I, values, &c, err);
	if (rc == 0)
		*out = (metrics_gauge_i *)c;
	return rc;
}

int metrics_histogram_register(metrics_family *f, const char *const *values,
                               metrics_histogram **out, char err[METRICS_ERROR_MAX])
{
	child *c;
	int rc = child_add(f, METRICS_HISTOGRAM, values, &c, err);
	if (rc == 0)
		*out = (metrics_histogram *)c;
	return rc;
}

int metrics_callback_register(metrics_family *f, const char *const *values, metrics_read_cb cb,
                              void *arg, char err[METRICS_ERROR_MAX])
{
	if (cb == NULL) {
		set_err(err, "metric %s: callback missing", f->name);
		return -EINVAL;
	}
	child *c;
	int rc = child_add(f, 0, values, &c, err);
	if (rc == 0) {
		c->cb = cb;
		c->cb_arg = arg;
	}
	return rc;
}

int metrics_child_remove(metrics_family *f, const char *const *values)
{
	static const char *const none[] = {NULL};
	if (values == NULL)
		values = none;
	size_t n = 0;
	while (values[n])
		n++;
	if (n != f->nlabels)
		return -ENOENT;
	child *c = child_find(f, values);
	if (c == NULL)
		return -ENOENT;
	if (c->prev)
		c->prev->next = c->next;
	else
		f->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		f->tail = c->prev;
	f->nchildren--;
	child_free(c, f->nlabels);
	return 0;
}

size_t metrics_family_size(const metrics_family *f)
{
	return f->nchildren;
}

/* ---- hot path ------------------------------------------------------------------------ */

void metrics_counter_inc(metrics_counter *c)
{
	c->c.v.u++;
}

void metrics_counter_add(metrics_counter *c, uint64_t n)
{
	c->c.v.u += n;
}

void metrics_counter_f_add(metrics_counter_f *c, double x)
{
	if (x >= 0)
		c->c.v.d += x;
}

void metrics_gauge_set(metrics_gauge *g, double x)
{
	g->c.v.d = x;
}

void metrics_gauge_add(metrics_gauge *g, double x)
{
	g->c.v.d += x;
}

void metrics_gauge_i_set(metrics_gauge_i *g, int64_t x)
{
	g->c.v.i = x;
}

void metrics_gauge_i_add(metrics_gauge_i *g, int64_t x)
{
	g->c.v.i = (int64_t)((uint64_t)g->c.v.i + (uint64_t)x);
}

void metrics_histogram_observe(metrics_histogram *h, double x)
{
	child *c = &h->c;
	size_t i = 0;
	while (i < c->nbounds && !(x <= c->bounds[i]))
		i++;
	c->counts[i]++;
	c->sum += x;
}

/* ---- rendering ----------------------------------------------------------------------- */

/* Appends `name[suffix]{labels[,extra]} value\n`; labels and extra may be empty. */
static int put_sample(buf *b, const metrics_family *f, const char *suffix, const child *c,
                      const char *le, const char *value, size_t value_len)
{
	size_t suffix_len = strlen(suffix);
	size_t le_len = le ? strlen(le) : 0;
	int rc = buf_reserve(b, f->name_len + suffix_len + c->labels_len + le_len + value_len + 16);
	if (rc < 0)
		return rc;
	/* Room reserved: the appends below cannot fail. */
	rc = buf_append(b, f->name, f->name_len);
	rc |= buf_append(b, suffix, suffix_len);
	if (c->labels_len || le) {
		rc |= buf_putc(b, '{');
		rc |= buf_append(b, c->labels, c->labels_len);
		if (le) {
			if (c->labels_len)
				rc |= buf_putc(b, ',');
			rc |= buf_append(b, "le=\"", 4);
			rc |= buf_append(b, le, le_len);
			rc |= buf_putc(b, '"');
		}
		rc |= buf_putc(b, '}');
	}
	rc |= buf_putc(b, ' ');
	rc |= buf_append(b, value, value_len);
	rc |= buf_putc(b, '\n');
	return rc ? -ENOMEM : 0;
}

static int put_header(buf *b, const metrics_family *f)
{
	static const char *const types[] = {
		[METRICS_COUNTER] = "counter", [METRICS_COUNTER_F] = "counter",
		[METRICS_GAUGE] = "gauge", [METRICS_GAUGE_I] = "gauge",
		[METRICS_HISTOGRAM] = "histogram",
	};
	return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
	                  types[f->kind]);
}

static int render_histogram(buf *b, const metrics_family *f, const child *c)
{
	char num[32];
	uint64_t cum = 0;
	for (size_t i = 0; i <= c->nbounds; i++) {
		cum += c->counts[i];
		size_t n = fmt_u64(num, cum);
		int rc = put_sample(b, f, "_bucket", c, i < c->nbounds ? f->le[i] : "+Inf", num, n);
		if (rc < 0)
			return rc;
	}
	size_t n = fmt_double(num, c->sum);
	int rc = put_sample(b, f, "_sum", c, NULL, num, n);
	if (rc < 0)
		return rc;
	n = fmt_u64(num, cum);
	return put_sample(b, f, "_count", c, NULL, num, n);
}

static int render_family(buf *b, const metrics_family *f)
{
	bool header = false;
	for (const child *c = f->head; c; c = c->next) {
		char num[32];
		size_t n;
		if (c->cb) {
			double v;
			if (c->cb(c->cb_arg, &v) != 0)
				continue;
			n = fmt_double(num, v);
		} else if (f->kind == METRICS_COUNTER) {
			n = fmt_u64(num, c->v.u);
		} else if (f->kind == METRICS_GAUGE_I) {
			n = fmt_i64(num, c->v.i);
		} else {
			n = fmt_double(num, c->v.d);  /* histograms ignore it */
		}
		int rc = 0;
		if (!header)
			rc = put_header(b, f);
		header = true;
		if (rc == 0)
			rc = f->kind == METRICS_HISTOGRAM ? render_histogram(b, f, c)
			                                  : put_sample(b, f, "", c, NULL, num, n);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int metrics_render(const metrics_registry *r, buf *out)
{
	size_t start = out->len;
	for (size_t i = 0; i < r->n; i++) {
		int rc = render_family(out, r->fams[i]);
		if (rc < 0) {
			out->len = start;
			if (out->cap)
				out->data[start] = '\0';
			return rc;
		}
	}
	return 0;
}
