/*
 * rt_filter — Supabase Realtime postgres_changes filters (see rt_filter.h and docs/protocol.md
 * "Filters").
 *
 * Design. rt_filter_parse splits the filter the way the server does (top-level commas outside
 * parentheses and quotes), keeps each condition's column, operator, `not.` flag and unquoted
 * value (an `in` list already split into its elements with PostgreSQL's array-literal rules), and
 * compiles match/imatch patterns once. Types are not known at parse time: rt_filter_check and
 * rt_filter_match bind the filter to a relation version — each condition's column index, the
 * column's type class and the constants parsed as that type — and keep the binding in a small
 * per-filter cache keyed by the relation's address, id and version, so that the per-row path
 * only parses the row's own value (no allocation) and compares.
 *
 * Truth follows the server's SQL (realtime.check_equality_op / is_visible_through_filters):
 * every condition is three-valued; NULL operands give unknown, `not.` leaves unknown unknown,
 * and the row passes only when every condition is true. A column the tuple does not carry
 * fails the filter.
 */
#include "rt_filter.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "uuid.h"

#define RT_FILTER_TEXT_MAX 65536 /* longest filter accepted */
#define RT_FILTER_IN_MAX 100     /* the server's limit on `in` values */
#define RT_FILTER_REGEX_MAX 1024 /* longest match/imatch pattern */
#define RT_FILTER_REGEX_DUP_MAX 255 /* PostgreSQL's regex repetition bound (DUPMAX) */
#define RT_FILTER_CACHE_MAX 32   /* relation versions bound at once per filter */

typedef enum rt_op {
	OP_EQ,
	OP_NEQ,
	OP_LT,
	OP_LTE,
	OP_GT,
	OP_GTE,
	OP_IN,
	OP_LIKE,
	OP_ILIKE,
	OP_IS,
	OP_MATCH,
	OP_IMATCH,
	OP_ISDISTINCT,
} rt_op;

static const char *const op_names[] = {"eq",   "neq",   "lt", "lte",   "gt",     "gte",       "in",
                                       "like", "ilike", "is", "match", "imatch", "isdistinct"};

typedef enum is_kw { IS_NULL, IS_TRUE, IS_FALSE, IS_UNKNOWN } is_kw;

/* How a column's values are compared. */
typedef enum tclass {
	T_TEXT,     /* byte-wise (text, varchar, name, and every type not listed below) */
	T_BPCHAR,   /* byte-wise without trailing spaces (character(n)) */
	T_INT2,
	T_INT4,
	T_INT8,
	T_OID,
	T_NUMERIC,
	T_FLOAT4,
	T_FLOAT8,
	T_BOOL,
	T_UUID,
	T_TSTZ,     /* instants, microseconds since 2000-01-01 00:00 UTC (PostgreSQL's epoch) */
	T_TS,       /* timestamp without time zone: the same scale, offsets ignored */
	T_DATE,     /* days since 2000-01-01 */
	T_TIME,     /* microseconds since midnight */
} tclass;

/* A decimal number as digits of its text: value = 0.D1D2D3... * 10^pos, D1 != 0 (or no digit:
 * zero). The digits are the int part ip[0..il) followed by the fraction fp[0..fl). */
enum { DEC_FINITE, DEC_NAN, DEC_PINF, DEC_NINF };
typedef struct dec {
	uint8_t kind;
	bool neg;
	const char *ip, *fp;
	uint32_t il, fl;
	int64_t pos;
} dec;

typedef struct tval {
	union {
		int64_t i; /* integers, oid, timestamps, dates, times */
		double d;
		float f;
		bool b;
		uint8_t u[UUID_BYTES];
		struct {
			const char *p;
			size_t len;
		} s;
		dec n;
	};
} tval;

typedef struct cond {
	char *column;
	rt_op op;
	bool negate;
	char *value;   /* unquoted value (every operator but `in`, whose text stays here too) */
	int nin;       /* `in`: number of elements */
	char **in;     /* `in`: elements, NULL for a NULL element */
	is_kw is;
	pcre2_code *re; /* match/imatch */
} cond;

/* A condition bound to one relation version. */
typedef struct bound {
	int col;        /* index in the relation, -1 when absent (the condition is false) */
	tclass t;
	bool bad;       /* the constant does not parse as the column type: false */
	tval c;         /* the constant */
	tval *in;       /* `in`: parsed elements (NULL elements skipped) */
	int nin;
	bool in_null;   /* `in`: the list holds a NULL */
} bound;

typedef struct binding {
	const relation *rel; /* identity only, never dereferenced after binding */
	uint64_t rel_id;
	uint32_t rel_version;
	bound *b;            /* ncond entries, then the storage of every bound's in[] (one block) */
} binding;

struct rt_filter {
	int ncond;
	cond *c;
	locale_t utf8;  /* C.UTF-8 for ilike's case folding ((locale_t)0: ASCII only) */
	pcre2_match_context *re_ctx; /* match/imatch: the work limits */
	binding *cache;      /* grows to RT_FILTER_CACHE_MAX, then replaced round-robin */
	int ncache, cache_cap;
	int next_evict;
};

/* ---------------------------------------------------------------- errors */

static void err_set(char err[RT_FILTER_ERROR_MAX], const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void err_set(char err[RT_FILTER_ERROR_MAX], const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, RT_FILTER_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* Appends s[0..len) as an Elixir string literal ("...", with " and \ escaped, control bytes
 * as \xNN) to out at *o, truncating at the buffer's end. */
static void err_inspect_str(char *out, size_t cap, size_t *o, const char *s, size_t len)
{
	char tmp[8];
	if (*o + 1 < cap)
		out[(*o)++] = '"';
	for (size_t i = 0; i < len && *o + 1 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			snprintf(tmp, sizeof(tmp), "\\%c", ch);
		else if (ch == '\n')
			snprintf(tmp, sizeof(tmp), "\\n");
		else if (ch == '\t')
			snprintf(tmp, sizeof(tmp), "\\t");
		else if (ch < 0x20 || ch == 0x7f)
			snprintf(tmp, sizeof(tmp), "\\x%02X", ch);
		else
			snprintf(tmp, sizeof(tmp), "%c", ch);
		for (const char *t = tmp; *t != '\0' && *o + 1 < cap; t++)
			out[(*o)++] = *t;
	}
	if (*o + 1 < cap)
		out[(*o)++] = '"';
	out[*o] = '\0';
}

/* The server's parse error: "Error parsing `filter` params: [\"a\", \"b\"]" (Elixir's inspect
 * of the parts it could split). */
static void err_parts(char err[RT_FILTER_ERROR_MAX], const char *a, size_t alen, const char *b,
                      size_t blen, int nparts)
{
	size_t o = (size_t)snprintf(err, RT_FILTER_ERROR_MAX, "Error parsing `filter` params: [");
	err_inspect_str(err, RT_FILTER_ERROR_MAX, &o, a, alen);
	if (nparts == 2) {
		if (o + 3 < RT_FILTER_ERROR_MAX) {
			err[o++] = ',';
			err[o++] = ' ';
		}
		err_inspect_str(err, RT_FILTER_ERROR_MAX, &o, b, blen);
	}
	if (o + 1 < RT_FILTER_ERROR_MAX) {
		err[o++] = ']';
		err[o] = '\0';
	}
}

/* ---------------------------------------------------------------- text helpers */

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static void trim(const char **s, size_t *len)
{
	while (*len > 0 && is_space((*s)[0])) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && is_space((*s)[*len - 1]))
		(*len)--;
}

static char *dup_range(const char *s, size_t len)
{
	char *p = malloc(len + 1);
	if (p == NULL)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

static bool eq_nocase(const char *s, size_t len, const char *lit)
{
	size_t n = strlen(lit);
	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char a = s[i];
		if (a >= 'A' && a <= 'Z')
			a = (char)(a - 'A' + 'a');
		if (a != lit[i])
			return false;
	}
	return true;
}

/* ---------------------------------------------------------------- typed values */

static tclass tclass_of(uint32_t oid)
{
	switch (oid) {
	case 16: return T_BOOL;
	case 20: return T_INT8;
	case 21: return T_INT2;
	case 23: return T_INT4;
	case 26: return T_OID;
	case 700: return T_FLOAT4;
	case 701: return T_FLOAT8;
	case 1042: return T_BPCHAR;
	case 1082: return T_DATE;
	case 1083: return T_TIME;
	case 1114: return T_TS;
	case 1184: return T_TSTZ;
	case 1700: return T_NUMERIC;
	case 2950: return T_UUID;
	default: return T_TEXT;
	}
}

/* PostgreSQL's name for a type (regtype's output), for error messages. */
static const char *type_name(uint32_t oid, char nbuf[32])
{
	switch (oid) {
	case 16: return "boolean";
	case 17: return "bytea";
	case 18: return "\"char\"";
	case 19: return "name";
	case 20: return "bigint";
	case 21: return "smallint";
	case 23: return "integer";
	case 25: return "text";
	case 26: return "oid";
	case 114: return "json";
	case 700: return "real";
	case 701: return "double precision";
	case 1042: return "character";
	case 1043: return "character varying";
	case 1082: return "date";
	case 1083: return "time without time zone";
	case 1114: return "timestamp without time zone";
	case 1184: return "timestamp with time zone";
	case 1700: return "numeric";
	case 2950: return "uuid";
	case 3802: return "jsonb";
	default: snprintf(nbuf, 32, "type %u", oid); return nbuf;
	}
}

/* Types whose values like/ilike/match/imatch apply to: the text types, and a type the decoder
 * could not name (OID 0). */
static bool type_is_textual(uint32_t oid)
{
	return oid == 0 || oid == 19 || oid == 25 || oid == 1042 || oid == 1043;
}

/* int2/int4/int8 input (pg_strtoint*): optional spaces, a sign, decimal digits, spaces. Too
 * many digits for the type is -ERANGE whatever follows (PostgreSQL stops there too). */
static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	while (is_space(*s))
		s++;
	bool neg = false;
	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (*s < '0' || *s > '9')
		return -EINVAL;
	/* accumulate negatively so that INT64_MIN fits */
	int64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		int d = *s - '0';
		if (v < (INT64_MIN + d) / 10)
			return -ERANGE;
		v = v * 10 - d;
	}
	if (!neg) {
		if (v == INT64_MIN)
			return -ERANGE;
		v = -v;
	}
	if (v < min || v > max)
		return -ERANGE;
	while (is_space(*s))
		s++;
	if (*s != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

/* numeric input: spaces, NaN / [+-]Infinity / [+-]inf, or [+-]digits[.digits][e[+-]digits]
 * with at least one digit, spaces. */
static int parse_numeric(const char *s, dec *out)
{
	while (is_space(*s))
		s++;
	const char *e = s + strlen(s);
	while (e > s && is_space(e[-1]))
		e--;
	size_t len = (size_t)(e - s);
	dec d = {.kind = DEC_FINITE};
	if (eq_nocase(s, len, "nan")) {
		d.kind = DEC_NAN;
		*out = d;
		return 0;
	}
	if (eq_nocase(s, len, "infinity") || eq_nocase(s, len, "+infinity") || eq_nocase(s, len, "inf") ||
	    eq_nocase(s, len, "+inf")) {
		d.kind = DEC_PINF;
		*out = d;
		return 0;
	}
	if (eq_nocase(s, len, "-infinity") || eq_nocase(s, len, "-inf")) {
		d.kind = DEC_NINF;
		*out = d;
		return 0;
	}
	const char *p = s;
	if (p < e && (*p == '+' || *p == '-'))
		d.neg = *p++ == '-';
	d.ip = p;
	while (p < e && *p >= '0' && *p <= '9')
		p++;
	d.il = (uint32_t)(p - d.ip);
	d.fp = p;
	if (p < e && *p == '.') {
		d.fp = ++p;
		while (p < e && *p >= '0' && *p <= '9')
			p++;
		d.fl = (uint32_t)(p - d.fp);
	}
	if (d.il + d.fl == 0)
		return -EINVAL;
	int64_t exp = 0;
	if (p < e && (*p == 'e' || *p == 'E')) {
		p++;
		bool eneg = false;
		if (p < e && (*p == '+' || *p == '-'))
			eneg = *p++ == '-';
		if (p >= e || *p < '0' || *p > '9')
			return -EINVAL;
		for (; p < e && *p >= '0' && *p <= '9'; p++) {
			exp = exp * 10 + (*p - '0');
			if (exp > 1000) /* PostgreSQL refuses exponents beyond NUMERIC_MAX_PRECISION */
				return -EINVAL;
		}
		if (eneg)
			exp = -exp;
	}
	if (p != e)
		return -EINVAL;
	/* normalize: no leading zeros, no trailing zeros in the fraction */
	while (d.il > 0 && d.ip[0] == '0') {
		d.ip++;
		d.il--;
	}
	while (d.fl > 0 && d.fp[d.fl - 1] == '0')
		d.fl--;
	if (d.il > 0) {
		d.pos = (int64_t)d.il + exp;
	} else {
		uint32_t z = 0;
		while (z < d.fl && d.fp[z] == '0')
			z++;
		d.fp += z;
		d.fl -= z;
		d.pos = -(int64_t)z + exp;
	}
	if (d.il + d.fl == 0) {
		d.neg = false;
		d.pos = 0;
	}
	*out = d;
	return 0;
}

static char dec_digit(const dec *d, uint32_t k)
{
	if (k < d->il)
		return d->ip[k];
	if (k - d->il < d->fl)
		return d->fp[k - d->il];
	return '0';
}

static int cmp_dec(const dec *a, const dec *b)
{
	/* NaN above +Infinity above every finite value above -Infinity; NaN equals NaN */
	static const int rank[] = {[DEC_NINF] = 0, [DEC_FINITE] = 1, [DEC_PINF] = 2, [DEC_NAN] = 3};
	if (a->kind != DEC_FINITE || b->kind != DEC_FINITE)
		return (rank[a->kind] > rank[b->kind]) - (rank[a->kind] < rank[b->kind]);
	bool az = a->il + a->fl == 0, bz = b->il + b->fl == 0;
	int as = az ? 0 : a->neg ? -1 : 1, bs = bz ? 0 : b->neg ? -1 : 1;
	if (as != bs)
		return (as > bs) - (as < bs);
	if (as == 0)
		return 0;
	int mag;
	if (a->pos != b->pos) {
		mag = a->pos > b->pos ? 1 : -1;
	} else {
		mag = 0;
		uint32_t n = a->il + a->fl > b->il + b->fl ? a->il + a->fl : b->il + b->fl;
		for (uint32_t k = 0; k < n && mag == 0; k++) {
			char x = dec_digit(a, k), y = dec_digit(b, k);
			mag = (x > y) - (x < y);
		}
	}
	return as * mag;
}

/* float4/float8 input: spaces, strtod/strtof (which take NaN, [+-]Infinity, [+-]inf), spaces;
 * out of range (overflow, or underflow to zero) is an error as in PostgreSQL. */
static int parse_float(const char *s, bool single, tval *out)
{
	while (is_space(*s))
		s++;
	if (*s == '\0')
		return -EINVAL;
	char *end;
	errno = 0;
	double d = 0;
	float f = 0;
	if (single)
		f = strtof(s, &end);
	else
		d = strtod(s, &end);
	if (end == s)
		return -EINVAL;
	if (errno == ERANGE) {
		bool zero_or_inf = single ? (f == 0 || isinf(f)) : (d == 0 || isinf(d));
		if (zero_or_inf)
			return -ERANGE;
	}
	while (is_space(*end))
		end++;
	if (*end != '\0')
		return -EINVAL;
	if (single)
		out->f = f;
	else
		out->d = d;
	return 0;
}

static int cmp_double(double a, double b)
{
	if (isnan(a))
		return isnan(b) ? 0 : 1;
	if (isnan(b))
		return -1;
	return (a > b) - (a < b);
}

/* boolean input (parse_bool_with_len): spaces around t/tr/tru/true, y/ye/yes, on, 1, and
 * f/fa/fal/fals/false, n/no, of/off, 0, in any case. */
static int parse_bool(const char *s, bool *out)
{
	size_t len = strlen(s);
	trim(&s, &len);
	if (len == 0)
		return -EINVAL;
	static const struct {
		const char *word;
		size_t min;
		bool value;
	} words[] = {{"true", 1, true}, {"yes", 1, true},   {"on", 2, true},  {"1", 1, true},
	             {"false", 1, false}, {"no", 1, false}, {"off", 2, false}, {"0", 1, false}};
	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
		size_t n = strlen(words[w].word);
		if (len < words[w].min || len > n)
			continue;
		bool ok = true;
		for (size_t i = 0; i < len && ok; i++) {
			char ch = s[i];
			if (ch >= 'A' && ch <= 'Z')
				ch = (char)(ch - 'A' + 'a');
			ok = ch == words[w].word[i];
		}
		if (ok) {
			*out = words[w].value;
			return 0;
		}
	}
	return -EINVAL;
}

/* Days from 1970-01-01 to the proleptic Gregorian y-m-d (y astronomical: 0 = 1 BC). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
	static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dm[m - 1];
}

#define US_PER_DAY INT64_C(86400000000)

/* Reads 1..max digits at *p; -1 when there is none. */
static int64_t read_digits(const char **p, int max, int *ndigits)
{
	int64_t v = 0;
	int n = 0;
	while (n < max && **p >= '0' && **p <= '9') {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	if (ndigits != NULL)
		*ndigits = n;
	return n == 0 ? -1 : v;
}

/* HH:MM[:SS[.frac]] at *p into microseconds (24:00:00 allowed); the fraction rounds to the
 * microsecond as PostgreSQL does (rint of the fraction as a double times 10^6). */
static int parse_clock(const char **p, int64_t *us)
{
	int n;
	int64_t hh = read_digits(p, 2, &n);
	if (hh < 0 || **p != ':')
		return -EINVAL;
	(*p)++;
	int64_t mi = read_digits(p, 2, &n);
	if (mi < 0 || n != 2)
		return -EINVAL;
	int64_t ss = 0, frac = 0;
	if (**p == ':') {
		(*p)++;
		ss = read_digits(p, 2, &n);
		if (ss < 0 || n != 2)
			return -EINVAL;
		if (**p == '.') {
			const char *f = *p;
			(*p)++;
			int nd = 0;
			while (**p >= '0' && **p <= '9') {
				if (nd < 6)
					frac = frac * 10 + (**p - '0');
				nd++;
				(*p)++;
			}
			if (nd <= 6) { /* exact: what PostgreSQL writes */
				for (int k = nd; k < 6; k++)
					frac *= 10;
			} else { /* more digits: rounded as PostgreSQL rounds them */
				char fbuf[64];
				size_t fl = (size_t)(*p - f);
				if (fl >= sizeof(fbuf))
					fl = sizeof(fbuf) - 1;
				memcpy(fbuf, f, fl);
				fbuf[fl] = '\0';
				frac = (int64_t)rint(strtod(fbuf, NULL) * 1000000.0);
			}
		}
	}
	if (hh > 24 || mi > 59 || ss > 60 || (hh == 24 && (mi > 0 || ss > 0 || frac > 0)))
		return -ERANGE;
	*us = ((hh * 60 + mi) * 60 + ss) * 1000000 + frac;
	return 0;
}

/* A zone at *p: Z, UTC, GMT, or +-HH[[:]MM[[:]SS]]; seconds east of UTC. */
static int parse_zone(const char **p, int64_t *east)
{
	const char *s = *p;
	if (*s == 'Z' || *s == 'z') {
		*p = s + 1;
		*east = 0;
		return 0;
	}
	if ((strncmp(s, "UTC", 3) == 0 || strncmp(s, "GMT", 3) == 0 || strncmp(s, "utc", 3) == 0 ||
	     strncmp(s, "gmt", 3) == 0)) {
		*p = s + 3;
		*east = 0;
		return 0;
	}
	if (*s != '+' && *s != '-')
		return -EINVAL;
	int sign = *s == '-' ? -1 : 1;
	s++;
	int n;
	int64_t hh = read_digits(&s, 2, &n), mm = 0, ss = 0;
	if (hh < 0)
		return -EINVAL;
	if (n == 2 && *s >= '0' && *s <= '9') { /* +HHMM */
		mm = read_digits(&s, 2, &n);
		if (n != 2)
			return -EINVAL;
	} else if (*s == ':') {
		s++;
		mm = read_digits(&s, 2, &n);
		if (mm < 0 || n != 2)
			return -EINVAL;
		if (*s == ':') {
			s++;
			ss = read_digits(&s, 2, &n);
			if (ss < 0 || n != 2)
				return -EINVAL;
		}
	}
	if (hh > 15 || mm > 59 || ss > 59)
		return -ERANGE;
	*east = sign * (hh * 3600 + mm * 60 + ss);
	*p = s;
	return 0;
}

/* timestamptz / timestamp / date input, the ISO forms: [+-]infinity, epoch, or
 * YYYY-MM-DD[( |T)HH:MM[:SS[.frac]]][ ][zone][ BC|AD]. For T_TSTZ a value without a zone is UTC
 * and the zone shifts the instant; T_TS and T_DATE ignore the zone (PostgreSQL does) and
 * T_DATE the clock too. Output: microseconds (days for T_DATE) since 2000-01-01, with
 * INT64_MIN/INT64_MAX for -infinity/infinity. */
static int parse_datetime(const char *s, tclass t, int64_t *out)
{
	size_t len = strlen(s);
	trim(&s, &len);
	if (eq_nocase(s, len, "infinity") || eq_nocase(s, len, "+infinity")) {
		*out = INT64_MAX;
		return 0;
	}
	if (eq_nocase(s, len, "-infinity")) {
		*out = INT64_MIN;
		return 0;
	}
	if (eq_nocase(s, len, "epoch")) { /* 1970-01-01 00:00 UTC */
		*out = t == T_DATE ? -10957 : -10957 * US_PER_DAY;
		return 0;
	}
	const char *p = s, *e = s + len;
	int n;
	int64_t y = read_digits(&p, 7, &n);
	if (y < 0 || n < 4 || *p != '-')
		return -EINVAL;
	p++;
	int64_t mo = read_digits(&p, 2, &n);
	if (mo < 0 || *p != '-')
		return -EINVAL;
	p++;
	int64_t d = read_digits(&p, 2, &n);
	if (d < 0)
		return -EINVAL;
	int64_t clock = 0, east = 0;
	if (p < e && (*p == 'T' || *p == 't' || *p == ' ')) {
		const char *q = p + 1;
		while (*q == ' ')
			q++;
		if (*q >= '0' && *q <= '9') {
			int rc = parse_clock(&q, &clock);
			if (rc < 0)
				return rc;
			p = q;
			while (*p == ' ')
				p++;
			if (*p == 'Z' || *p == 'z' || *p == '+' || *p == '-' || *p == 'U' || *p == 'u' ||
			    *p == 'G' || *p == 'g') {
				rc = parse_zone(&p, &east);
				if (rc < 0)
					return rc;
			}
		}
	}
	while (p < e && *p == ' ')
		p++;
	bool bc = false;
	if (e - p == 2 && (eq_nocase(p, 2, "bc") || eq_nocase(p, 2, "ad"))) {
		bc = eq_nocase(p, 2, "bc");
		p += 2;
	}
	if (p != e)
		return -EINVAL;
	if (y == 0)
		return -ERANGE;
	if (bc)
		y = 1 - y;
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, (int)mo))
		return -ERANGE;
	/* PostgreSQL's range: from 4714-11-24 BC (UTC) to 5874897 AD for dates, to the end of
	 * 294276 AD for timestamps (a local time may lie a few hours outside it) */
	if (y < -4714 || y > (t == T_DATE ? 5874897 : 294277))
		return -ERANGE;
	/* counted from 2000-01-01, PostgreSQL's epoch: its whole timestamp range fits int64 */
	int64_t days = days_from_civil(y, (int)mo, (int)d) - 10957;
	const int64_t min_day = -2451545;      /* 4714-11-24 BC */
	const int64_t end_day = 106751983;     /* 294277-01-01 */
	if (t == T_DATE) {
		if (days < min_day)
			return -ERANGE;
		*out = days;
		return 0;
	}
	if (days < min_day - 1 || days > end_day)
		return -ERANGE;
	int64_t us = days * US_PER_DAY + clock;
	if (t == T_TSTZ)
		us -= east * 1000000;
	if (us < min_day * US_PER_DAY || us >= end_day * US_PER_DAY)
		return -ERANGE;
	*out = us;
	return 0;
}

/* time input: HH:MM[:SS[.frac]], an optional zone (ignored, as PostgreSQL does). */
static int parse_time(const char *s, int64_t *out)
{
	size_t len = strlen(s);
	trim(&s, &len);
	const char *p = s, *e = s + len;
	int64_t us, east;
	int rc = parse_clock(&p, &us);
	if (rc < 0)
		return rc;
	while (p < e && *p == ' ')
		p++;
	if (p < e) {
		rc = parse_zone(&p, &east);
		if (rc < 0)
			return rc;
	}
	if (p != e)
		return -EINVAL;
	*out = us;
	return 0;
}

/* Parses s (NUL-terminated) as a value of class t. 0, -EINVAL (syntax) or -ERANGE. The value
 * may point into s (text, numeric): s must outlive it. */
static int parse_typed(tclass t, const char *s, size_t len, tval *out)
{
	switch (t) {
	case T_INT2: return parse_int(s, INT16_MIN, INT16_MAX, &out->i);
	case T_INT4: return parse_int(s, INT32_MIN, INT32_MAX, &out->i);
	case T_INT8: return parse_int(s, INT64_MIN, INT64_MAX, &out->i);
	case T_OID: {
		int rc = parse_int(s, INT32_MIN, UINT32_MAX, &out->i);
		if (rc == 0 && out->i < 0)
			out->i += INT64_C(4294967296);
		return rc;
	}
	case T_NUMERIC: return parse_numeric(s, &out->n);
	case T_FLOAT4: return parse_float(s, true, out);
	case T_FLOAT8: return parse_float(s, false, out);
	case T_BOOL: return parse_bool(s, &out->b);
	case T_UUID: return uuid_parse_pg(s, len, out->u);
	case T_TSTZ:
	case T_TS:
	case T_DATE: return parse_datetime(s, t, &out->i);
	case T_TIME: return parse_time(s, &out->i);
	case T_BPCHAR:
		while (len > 0 && s[len - 1] == ' ')
			len--;
		/* fall through */
	case T_TEXT:
		out->s.p = s;
		out->s.len = len;
		return 0;
	}
	return -EINVAL;
}

static int cmp_typed(tclass t, const tval *a, const tval *b)
{
	switch (t) {
	case T_INT2:
	case T_INT4:
	case T_INT8:
	case T_OID:
	case T_TSTZ:
	case T_TS:
	case T_DATE:
	case T_TIME: return (a->i > b->i) - (a->i < b->i);
	case T_NUMERIC: return cmp_dec(&a->n, &b->n);
	case T_FLOAT4: return cmp_double(a->f, b->f);
	case T_FLOAT8: return cmp_double(a->d, b->d);
	case T_BOOL: return (a->b > b->b) - (a->b < b->b);
	case T_UUID: return memcmp(a->u, b->u, UUID_BYTES);
	case T_BPCHAR:
	case T_TEXT: {
		size_t n = a->s.len < b->s.len ? a->s.len : b->s.len;
		int c = memcmp(a->s.p, b->s.p, n);
		if (c != 0)
			return c < 0 ? -1 : 1;
		return (a->s.len > b->s.len) - (a->s.len < b->s.len);
	}
	}
	return 0;
}

/* PostgreSQL's message for a constant that does not parse as the column's type. */
static void err_input(char err[RT_FILTER_ERROR_MAX], int rc, uint32_t oid, tclass t, const char *v)
{
	char nb[32];
	const char *tn = type_name(oid, nb);
	if (rc == -ERANGE && (t == T_TSTZ || t == T_TS || t == T_DATE || t == T_TIME))
		err_set(err, "date/time field value out of range: \"%s\"", v);
	else if (rc == -ERANGE && (t == T_FLOAT4 || t == T_FLOAT8))
		err_set(err, "\"%s\" is out of range for type %s", v, tn);
	else if (rc == -ERANGE)
		err_set(err, "value \"%s\" is out of range for type %s", v, tn);
	else
		err_set(err, "invalid input syntax for type %s: \"%s\"", tn, v);
}

/* ---------------------------------------------------------------- like and regex */

static size_t utf8_len(unsigned char lead)
{
	if (lead < 0x80)
		return 1;
	if ((lead & 0xe0) == 0xc0)
		return 2;
	if ((lead & 0xf0) == 0xe0)
		return 3;
	if ((lead & 0xf8) == 0xf0)
		return 4;
	return 1;
}

/* Decodes the UTF-8 character at s[0..n) into *cp; returns its length (1 for a byte that does
 * not start a complete character, which then stands for itself). */
static size_t utf8_decode(const char *s, size_t n, uint32_t *cp)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len = utf8_len(u[0]);
	if (len == 1 || len > n) {
		*cp = u[0];
		return 1;
	}
	uint32_t v = u[0] & (0xff >> (len + 1));
	for (size_t k = 1; k < len; k++) {
		if ((u[k] & 0xc0) != 0x80) {
			*cp = u[0];
			return 1;
		}
		v = v << 6 | (u[k] & 0x3f);
	}
	*cp = v;
	return len;
}

/* Compares one pattern character p[0..pn) with the text at s[0..sn); on a match returns the
 * text's character length, else 0. icase folds with towlower in loc (C.UTF-8), or ASCII
 * letters only without it. */
static size_t like_char_eq(const char *p, size_t pn, const char *s, size_t sn, bool icase,
                           locale_t loc)
{
	unsigned char pa = (unsigned char)p[0], sb = (unsigned char)s[0];
	if (pa < 0x80 && sb < 0x80) {
		if (pa == sb)
			return 1;
		if (icase && pa >= 'A' && pa <= 'Z')
			pa = (unsigned char)(pa - 'A' + 'a');
		if (icase && sb >= 'A' && sb <= 'Z')
			sb = (unsigned char)(sb - 'A' + 'a');
		return icase && pa == sb ? 1 : 0;
	}
	uint32_t a, b;
	size_t al = utf8_decode(p, pn, &a), bl = utf8_decode(s, sn, &b);
	if (a == b && al == bl && memcmp(p, s, al) == 0)
		return bl;
	if (!icase)
		return 0;
	if (loc != (locale_t)0 && (a >= 0x80 || b >= 0x80))
		return towlower_l((wint_t)a, loc) == towlower_l((wint_t)b, loc) ? bl : 0;
	if (a >= 'A' && a <= 'Z')
		a += 'a' - 'A';
	if (b >= 'A' && b <= 'Z')
		b += 'a' - 'A';
	return a == b ? bl : 0;
}

#define LIKE_STEP_MAX (UINT64_C(1) << 25) /* character steps per row (tens of ms at most) */

/* LIKE: % any run of characters, _ one (UTF-8) character, \ makes the next character literal.
 * icase: ILIKE, both sides lower-cased character by character as PostgreSQL does under a
 * UTF-8 collation. Greedy with one backtrack point (the last %): O(len(s) * len(p)), no
 * recursion, no allocation; beyond LIKE_STEP_MAX steps (a long repetitive pattern on a value of
 * megabytes) it gives up and answers false. */
static bool like_match(const char *s, size_t sl, const char *p, size_t pl, bool icase, locale_t loc)
{
	size_t si = 0, pi = 0, star_p = SIZE_MAX, star_s = 0;
	uint64_t steps = 0;
	while (si < sl) {
		if (++steps > LIKE_STEP_MAX)
			return false; /* a hostile pattern on a huge value: bounded, counted as no match */
		if (pi < pl && p[pi] == '%') {
			while (pi < pl && p[pi] == '%')
				pi++;
			if (pi == pl)
				return true;
			star_p = pi;
			star_s = si;
			continue;
		}
		if (pi < pl && p[pi] == '_') {
			si += utf8_len((unsigned char)s[si]);
			if (si > sl)
				si = sl;
			pi++;
			continue;
		}
		if (pi < pl) {
			size_t q = pi;
			if (p[q] == '\\' && q + 1 < pl)
				q++;
			uint32_t cp;
			size_t cl = utf8_decode(p + q, pl - q, &cp);
			size_t tl = like_char_eq(p + q, pl - q, s + si, sl - si, icase, loc);
			if (tl > 0) {
				si += tl;
				pi = q + cl;
				continue;
			}
		}
		if (star_p == SIZE_MAX)
			return false;
		star_s += utf8_len((unsigned char)s[star_s]);
		if (star_s > sl)
			return false;
		si = star_s;
		pi = star_p;
	}
	while (pi < pl && p[pi] == '%')
		pi++;
	return pi == pl;
}

/* A pre-pass over a match/imatch pattern, before pcre2_compile: it refuses what PCRE2 would
 * read differently from PostgreSQL or what would make a pattern needlessly large: repetition
 * counts above 255 (PostgreSQL's DUPMAX), a quantifier on a quantifier (PostgreSQL: "quantifier
 * operand invalid"; PCRE2 would read "a++" as possessive; one lazy '?' is fine in both),
 * nesting deeper than RE_DEPTH_MAX, and patterns whose repetitions would expand beyond
 * RE_SIZE_MAX nodes. */
#define RE_DEPTH_MAX 32
#define RE_SIZE_MAX 20000.0
#define RE_MATCH_LIMIT 1000000 /* PCRE2 steps per row (a few ms at most) */
#define RE_HEAP_LIMIT 4096     /* KiB of backtracking memory per row */

typedef struct re_scan {
	const char *p, *e, *start;
	char *out;  /* the pattern for pcre2_compile: a copy of start, rewritten in place */
	bool icase; /* imatch: [:upper:] and [:lower:] become [:alpha:], as in PostgreSQL */
	int depth;
	const char *why; /* the refusal, NULL while fine */
} re_scan;

static double re_alt(re_scan *r);

/* Skips a bracket expression at r->p (just past '['): "]" first is literal, [:class:] and
 * [=x=] / [.x.] are skipped whole. */
static void re_bracket(re_scan *r)
{
	if (r->p < r->e && *r->p == '^')
		r->p++;
	if (r->p < r->e && *r->p == ']')
		r->p++;
	while (r->p < r->e && *r->p != ']') {
		if (*r->p == '\\' && r->p + 1 < r->e) {
			r->p += 2;
			continue;
		}
		if (*r->p == '[' && r->p + 1 < r->e && strchr(":=.", r->p[1]) != NULL) {
			char close = r->p[1];
			if (r->icase && r->e - r->p >= 9 &&
			    (memcmp(r->p, "[:upper:]", 9) == 0 || memcmp(r->p, "[:lower:]", 9) == 0))
				memcpy(r->out + (r->p - r->start), "[:alpha:]", 9);
			r->p += 2;
			while (r->p + 1 < r->e && !(r->p[0] == close && r->p[1] == ']'))
				r->p++;
			r->p += r->p + 1 < r->e ? 2 : 1;
			continue;
		}
		r->p++;
	}
	if (r->p < r->e)
		r->p++;
}

/* One atom and its quantifiers; returns its expanded size. */
static double re_piece(re_scan *r)
{
	double size = 1;
	char ch = *r->p;
	if (ch == '(') {
		r->p++;
		if (++r->depth > RE_DEPTH_MAX) {
			r->why = "regular expression is too complex";
			return 0;
		}
		size = re_alt(r) + 1;
		r->depth--;
		if (r->p < r->e && *r->p == ')')
			r->p++;
	} else if (ch == '[') {
		r->p++;
		re_bracket(r);
	} else if (ch == '\\' && r->p + 1 < r->e) {
		r->p += 2;
	} else {
		r->p += utf8_len((unsigned char)ch);
		if (r->p > r->e)
			r->p = r->e;
	}
	int quantifiers = 0;
	while (r->p < r->e && r->why == NULL) {
		char q = *r->p;
		double times;
		if (q == '*' || q == '?') {
			times = 1;
			r->p++;
		} else if (q == '+') {
			times = 2;
			r->p++;
		} else if (q == '{' && r->p + 1 < r->e && r->p[1] >= '0' && r->p[1] <= '9') {
			long lo = 0, hi = -1;
			r->p++;
			while (r->p < r->e && *r->p >= '0' && *r->p <= '9' && lo <= RT_FILTER_REGEX_DUP_MAX)
				lo = lo * 10 + (*r->p++ - '0');
			if (r->p < r->e && *r->p == ',') {
				r->p++;
				if (r->p < r->e && *r->p >= '0' && *r->p <= '9') {
					hi = 0;
					while (r->p < r->e && *r->p >= '0' && *r->p <= '9' &&
					       hi <= RT_FILTER_REGEX_DUP_MAX)
						hi = hi * 10 + (*r->p++ - '0');
				}
			} else {
				hi = lo;
			}
			if (lo > RT_FILTER_REGEX_DUP_MAX || hi > RT_FILTER_REGEX_DUP_MAX) {
				r->why = "invalid regular expression: invalid repetition count(s)";
				return 0;
			}
			while (r->p < r->e && *r->p != '}')
				r->p++;
			if (r->p < r->e)
				r->p++;
			times = (double)(hi < 0 ? lo + 1 : hi > lo ? hi : lo) + 1;
		} else {
			break;
		}
		/* "x+?" is the lazy form in PostgreSQL and PCRE2 alike: one '?' after a quantifier */
		if (quantifiers++ > 0) {
			if (q != '?' || quantifiers != 2) {
				r->why = "invalid regular expression: quantifier operand invalid";
				return 0;
			}
			continue;
		}
		size *= times;
	}
	return size;
}

static double re_alt(re_scan *r)
{
	double total = 0;
	while (r->p < r->e && *r->p != ')' && r->why == NULL) {
		if (*r->p == '|') {
			r->p++;
			continue;
		}
		total += re_piece(r);
		if (total > RE_SIZE_MAX && r->why == NULL)
			r->why = "regular expression is too complex";
	}
	return total;
}

/* Screens re (see above); 0 and *out (the pattern to compile, owned by the caller), -EINVAL
 * with err, or -ENOMEM. */
static int regex_screen(const char *re, bool icase, char **out, char err[RT_FILTER_ERROR_MAX],
                        const char *opname)
{
	size_t len = strlen(re);
	if (len > RT_FILTER_REGEX_MAX) {
		err_set(err, "invalid regular expression for %s filter: pattern longer than %d bytes",
		        opname, RT_FILTER_REGEX_MAX);
		return -EINVAL;
	}
	re_scan r = {.p = re, .e = re + len, .start = re, .out = dup_range(re, len), .icase = icase};
	if (r.out == NULL)
		return -ENOMEM;
	while (r.p < r.e && r.why == NULL) {
		re_alt(&r);
		if (r.p < r.e && *r.p == ')')
			r.p++; /* unbalanced: pcre2_compile reports it */
	}
	if (r.why != NULL) {
		err_set(err, "invalid regular expression for %s filter: %s", opname, r.why);
		free(r.out);
		return -EINVAL;
	}
	*out = r.out;
	return 0;
}

/* Offset of the first byte of s[0..len) that is not part of well-formed UTF-8 (no overlong
 * forms, no surrogates, nothing above U+10FFFF), or len. */
static size_t utf8_invalid_at(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		unsigned char c = u[i];
		size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
		         : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		if (n == 0 || i + n > len)
			return i;
		for (size_t k = 1; k < n; k++)
			if ((u[i + k] & 0xc0) != 0x80)
				return i;
		if ((c == 0xe0 && u[i + 1] < 0xa0) || (c == 0xed && u[i + 1] > 0x9f) ||
		    (c == 0xf0 && u[i + 1] < 0x90) || (c == 0xf4 && u[i + 1] > 0x8f))
			return i;
		i += n;
	}
	return len;
}

/* ---------------------------------------------------------------- parsing */

/* Splits an `in` list's inside (between the parentheses) with PostgreSQL's array-literal rules:
 * elements separated by commas, spaces around them dropped, "..." quoting, backslash escapes,
 * an unquoted NULL (any case) is a NULL element; "" (nothing between the parentheses) is the
 * empty list. Fills c->in / c->nin. */
static int parse_in_list(cond *c, const char *s, size_t len, char err[RT_FILTER_ERROR_MAX])
{
	const char *arr = s;
	size_t arr_len = len;
	trim(&s, &len);
	if (len == 0)
		return 0;
	char *el = malloc(len + 1);
	int rc = 0;
	if (el == NULL)
		return -ENOMEM;
	size_t i = 0;
	for (;;) {
		if (c->nin == RT_FILTER_IN_MAX) {
			err_set(err, "too many values for `in` filter. Maximum %d", RT_FILTER_IN_MAX);
			rc = -EINVAL;
			goto out;
		}
		while (i < len && is_space(s[i]))
			i++;
		size_t o = 0, last_sig = 0;
		bool quoted_any = false, any = false;
		while (i < len && s[i] != ',') {
			char ch = s[i];
			if (ch == '"') {
				quoted_any = any = true;
				i++;
				while (i < len && s[i] != '"') {
					if (s[i] == '\\' && i + 1 < len)
						i++;
					el[o++] = s[i++];
				}
				if (i >= len)
					goto malformed;
				i++;
				last_sig = o;
			} else if (ch == '\\') {
				if (i + 1 >= len)
					goto malformed;
				el[o++] = s[i + 1];
				i += 2;
				last_sig = o;
				any = true;
			} else if (ch == '{' || ch == '}') {
				goto malformed;
			} else if (is_space(ch)) {
				el[o++] = ch;
				i++;
			} else {
				el[o++] = ch;
				i++;
				last_sig = o;
				any = true;
			}
		}
		if (!any)
			goto malformed;
		o = last_sig; /* trailing unquoted spaces do not belong to the element */
		char **grown = realloc(c->in, sizeof(*c->in) * (size_t)(c->nin + 1));
		if (grown == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		c->in = grown;
		if (!quoted_any && eq_nocase(el, o, "null")) {
			c->in[c->nin++] = NULL;
		} else {
			c->in[c->nin] = dup_range(el, o);
			if (c->in[c->nin] == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			c->nin++;
		}
		if (i >= len)
			break;
		i++; /* the comma */
	}
	goto out;
malformed:
	err_set(err, "malformed array literal: \"{%.*s}\"", (int)(arr_len > 200 ? 200 : arr_len), arr);
	rc = -EINVAL;
out:
	free(el);
	return rc;
}

/* The server's unquote_value: a value that is exactly one "..." (backslash escaping the next
 * byte) loses its quotes; anything else is kept as written. */
static char *unquote_value(const char *v, size_t len)
{
	if (len >= 2 && v[0] == '"') {
		char *out = malloc(len);
		if (out == NULL)
			return NULL;
		size_t o = 0, i = 1;
		while (i < len) {
			if (v[i] == '"') {
				if (i == len - 1) {
					out[o] = '\0';
					return out;
				}
				break; /* a quote before the end: keep the original */
			}
			if (v[i] == '\\' && i + 1 < len)
				i++;
			out[o++] = v[i++];
		}
		free(out);
	}
	return dup_range(v, len);
}

static int parse_segment(rt_filter *f, cond *c, const char *s, size_t len,
                         char err[RT_FILTER_ERROR_MAX])
{
	trim(&s, &len);
	if (len == 0) {
		err_set(err, "Error parsing `filter` params: filter must not contain empty segments (check "
		             "for extra commas)");
		return -EINVAL;
	}
	const char *eq = memchr(s, '=', len);
	if (eq == NULL) {
		err_parts(err, s, len, NULL, 0, 1);
		return -EINVAL;
	}
	const char *rest = eq + 1;
	size_t rest_len = len - (size_t)(rest - s);
	bool negate = rest_len >= 4 && memcmp(rest, "not.", 4) == 0;
	if (negate) {
		rest += 4;
		rest_len -= 4;
	}
	const char *dot = memchr(rest, '.', rest_len);
	if (dot == NULL) {
		err_parts(err, rest, rest_len, NULL, 0, 1);
		return -EINVAL;
	}
	size_t op_len = (size_t)(dot - rest);
	const char *value = dot + 1;
	size_t value_len = rest_len - op_len - 1;
	int op = -1;
	for (int k = 0; k < (int)(sizeof(op_names) / sizeof(op_names[0])); k++)
		if (strlen(op_names[k]) == op_len && memcmp(op_names[k], rest, op_len) == 0)
			op = k;
	if (op < 0) {
		err_parts(err, rest, op_len, value, value_len, 2);
		return -EINVAL;
	}
	c->op = (rt_op)op;
	c->negate = negate;
	c->column = dup_range(s, (size_t)(eq - s));
	if (c->column == NULL)
		return -ENOMEM;
	if (c->op == OP_IN) {
		if (value_len < 2 || value[0] != '(' || value[value_len - 1] != ')') {
			err_set(err, "Error parsing `filter` params: `in` filter value must be wrapped by "
			             "parentheses");
			return -EINVAL;
		}
		c->value = dup_range(value, value_len);
		if (c->value == NULL)
			return -ENOMEM;
		return parse_in_list(c, value + 1, value_len - 2, err);
	}
	c->value = unquote_value(value, value_len);
	if (c->value == NULL)
		return -ENOMEM;
	switch (c->op) {
	case OP_IS:
		if (strcmp(c->value, "null") == 0)
			c->is = IS_NULL;
		else if (strcmp(c->value, "true") == 0)
			c->is = IS_TRUE;
		else if (strcmp(c->value, "false") == 0)
			c->is = IS_FALSE;
		else if (strcmp(c->value, "unknown") == 0)
			c->is = IS_UNKNOWN;
		else {
			err_set(err, "invalid value for is filter: must be null, true, false, or unknown");
			return -EINVAL;
		}
		break;
	case OP_LIKE:
	case OP_ILIKE: {
		if (c->op == OP_ILIKE && f->utf8 == (locale_t)0)
			f->utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
		/* PostgreSQL: a pattern ending in a lone escape is an error (at match time) */
		size_t vl = strlen(c->value), k = 0;
		while (k < vl) {
			if (c->value[k] == '\\') {
				if (k + 1 == vl) {
					err_set(err, "LIKE pattern must not end with escape character");
					return -EINVAL;
				}
				k += 2;
			} else {
				k++;
			}
		}
		break;
	}
	case OP_MATCH:
	case OP_IMATCH: {
		const char *on = op_names[c->op];
		char *pattern = NULL;
		int rc = regex_screen(c->value, c->op == OP_IMATCH, &pattern, err, on);
		if (rc < 0)
			return rc;
		/* PostgreSQL's ARE in its default mode: '.' and [^x] match a newline, '$' only at the
		 * very end; characters are UTF-8, classes and case Unicode (a UTF-8 collation) */
		uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY |
		                PCRE2_NEVER_BACKSLASH_C | (c->op == OP_IMATCH ? PCRE2_CASELESS : 0);
		int code;
		PCRE2_SIZE off;
		c->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
		free(pattern);
		if (c->re == NULL) {
			if (code == PCRE2_ERROR_NOMEMORY)
				return -ENOMEM;
			PCRE2_UCHAR msg[160];
			if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
				snprintf((char *)msg, sizeof(msg), "error %d", code);
			err_set(err, "invalid regular expression for %s filter: invalid regular expression: %s",
			        on, (const char *)msg);
			return -EINVAL;
		}
		if (f->re_ctx == NULL) {
			f->re_ctx = pcre2_match_context_create(NULL);
			if (f->re_ctx == NULL)
				return -ENOMEM;
			pcre2_set_match_limit(f->re_ctx, RE_MATCH_LIMIT);
			pcre2_set_heap_limit(f->re_ctx, RE_HEAP_LIMIT);
		}
		break;
	}
	default: break;
	}
	return 0;
}

static void cond_fini(cond *c)
{
	free(c->column);
	free(c->value);
	for (int k = 0; k < c->nin; k++)
		free(c->in[k]);
	free(c->in);
	pcre2_code_free(c->re);
}

void rt_filter_free(rt_filter *f)
{
	if (f == NULL)
		return;
	for (int i = 0; i < f->ncache; i++)
		free(f->cache[i].b);
	free(f->cache);
	for (int i = 0; i < f->ncond; i++)
		cond_fini(&f->c[i]);
	free(f->c);
	if (f->utf8 != (locale_t)0)
		freelocale(f->utf8);
	pcre2_match_context_free(f->re_ctx);
	free(f);
}

int rt_filter_parse(const char *text, rt_filter **out, char err[RT_FILTER_ERROR_MAX])
{
	int rc = 0;
	rt_filter *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	const char *s = text != NULL ? text : "";
	size_t len = strlen(s);
	if (len > RT_FILTER_TEXT_MAX) {
		err_set(err, "Error parsing `filter` params: filter longer than %d bytes", RT_FILTER_TEXT_MAX);
		rc = -EINVAL;
		goto fail;
	}
	size_t bad = utf8_invalid_at(s, len);
	if (bad < len) {
		err_set(err, "invalid byte sequence for encoding \"UTF8\": 0x%02x", (unsigned char)s[bad]);
		rc = -EINVAL;
		goto fail;
	}
	trim(&s, &len);
	/* the server's split_top_level: commas outside parentheses and quotes separate conditions;
	 * a quote opens only after '.', '(' or ',' and a backslash escapes inside quotes */
	size_t start = 0, i = 0;
	int depth = 0;
	bool quoted = false;
	char prev = 0;
	while (len > 0) {
		bool end = i == len;
		if (!end) {
			char ch = s[i];
			if (quoted) {
				if (ch == '\\' && i + 1 < len) {
					prev = s[i + 1];
					i += 2;
					continue;
				}
				if (ch == '"')
					quoted = false;
				prev = ch;
				i++;
				continue;
			}
			if (ch == '"' && (prev == '.' || prev == '(' || prev == ',')) {
				quoted = true;
			} else if (ch == '(') {
				depth++;
			} else if (ch == ')') {
				if (depth > 0)
					depth--;
			} else if (ch == ',' && depth == 0) {
				end = true;
			}
			if (!end) {
				prev = ch;
				i++;
				continue;
			}
		}
		cond *grown = realloc(f->c, sizeof(*f->c) * (size_t)(f->ncond + 1));
		if (grown == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
		f->c = grown;
		memset(&f->c[f->ncond], 0, sizeof(cond));
		f->ncond++;
		rc = parse_segment(f, &f->c[f->ncond - 1], s + start, i - start, err);
		if (rc < 0)
			goto fail;
		if (i == len)
			break;
		i++;
		start = i;
		prev = 0;
	}
	*out = f;
	return 0;
fail:
	rt_filter_free(f);
	return rc;
}

int rt_filter_count(const rt_filter *f)
{
	return f->ncond;
}

/* ---------------------------------------------------------------- binding to a relation */

/* Binds f to rel into bd (fresh). With err != NULL the first problem is reported (-EINVAL);
 * without, problems make the condition false. -ENOMEM. */
static int bind(const rt_filter *f, const relation *rel, binding *bd, char err[RT_FILTER_ERROR_MAX])
{
	int rc = 0, nvals = 0;
	memset(bd, 0, sizeof(*bd));
	for (int i = 0; i < f->ncond; i++)
		nvals += f->c[i].nin;
	bd->b = calloc(1, sizeof(*bd->b) * (size_t)f->ncond + sizeof(tval) * (size_t)nvals + 1);
	if (bd->b == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	tval *vals = (tval *)(bd->b + f->ncond);
	for (int i = 0; i < f->ncond; i++) {
		const cond *c = &f->c[i];
		bound *b = &bd->b[i];
		b->col = relation_column_index(rel, c->column, strlen(c->column));
		if (b->col < 0) {
			if (err != NULL) {
				err_set(err, "invalid column for filter %s", c->column);
				rc = -EINVAL;
				goto fail;
			}
			continue;
		}
		uint32_t oid = rel->cols[b->col].type_oid;
		b->t = tclass_of(oid);
		char nb[32];
		int prc = 0;
		switch (c->op) {
		case OP_IS:
			if (c->is != IS_NULL && oid != 16 && err != NULL) {
				err_set(err, "is %s filter requires a boolean column, got %s", c->value,
				        type_name(oid, nb));
				rc = -EINVAL;
				goto fail;
			}
			b->bad = c->is != IS_NULL && oid != 16;
			break;
		case OP_LIKE:
		case OP_ILIKE:
		case OP_MATCH:
		case OP_IMATCH:
			if (!type_is_textual(oid)) {
				if (err != NULL) {
					err_set(err, "operator %s requires a text-compatible column type, got %s",
					        op_names[c->op], type_name(oid, nb));
					rc = -EINVAL;
					goto fail;
				}
				b->bad = true;
			}
			break;
		case OP_IN:
			b->in = vals;
			for (int k = 0; k < c->nin; k++) {
				if (c->in[k] == NULL) {
					b->in_null = true;
					continue;
				}
				prc = parse_typed(b->t, c->in[k], strlen(c->in[k]), &b->in[b->nin]);
				if (prc < 0) {
					if (err != NULL) {
						err_input(err, prc, oid, b->t, c->in[k]);
						rc = -EINVAL;
						goto fail;
					}
					b->bad = true;
					break;
				}
				b->nin++;
			}
			vals += c->nin;
			break;
		default: /* eq, neq, lt, lte, gt, gte, isdistinct */
			prc = parse_typed(b->t, c->value, strlen(c->value), &b->c);
			if (prc < 0) {
				if (err != NULL) {
					err_input(err, prc, oid, b->t, c->value);
					rc = -EINVAL;
					goto fail;
				}
				b->bad = true;
			}
			break;
		}
	}
	bd->rel = rel;
	bd->rel_id = rel->id;
	bd->rel_version = rel->version;
	return 0;
fail:
	free(bd->b);
	memset(bd, 0, sizeof(*bd));
	return rc;
}

/* The cached binding of f for rel, or NULL. */
static const binding *cache_find(const rt_filter *f, const relation *rel)
{
	for (int i = 0; i < f->ncache; i++) {
		const binding *bd = &f->cache[i];
		if (bd->rel == rel && bd->rel_id == rel->id && bd->rel_version == rel->version)
			return bd;
	}
	return NULL;
}

/* Keeps fresh in f's cache (which then owns it); NULL (fresh freed) when out of memory. */
static const binding *cache_add(rt_filter *f, binding fresh)
{
	if (f->ncache == f->cache_cap && f->cache_cap < RT_FILTER_CACHE_MAX) {
		int cap = f->cache_cap == 0 ? 1 : f->cache_cap * 2;
		binding *grown = realloc(f->cache, sizeof(*grown) * (size_t)cap);
		if (grown == NULL) {
			free(fresh.b);
			return NULL;
		}
		f->cache = grown;
		f->cache_cap = cap;
	}
	int slot;
	if (f->ncache < f->cache_cap) {
		slot = f->ncache++;
	} else {
		slot = f->next_evict;
		f->next_evict = (f->next_evict + 1) % f->cache_cap;
		free(f->cache[slot].b);
	}
	f->cache[slot] = fresh;
	return &f->cache[slot];
}

/* The binding of f for rel, made on first use; NULL when out of memory. */
static const binding *binding_get(rt_filter *f, const relation *rel)
{
	const binding *bd = cache_find(f, rel);
	if (bd != NULL)
		return bd;
	binding fresh;
	if (bind(f, rel, &fresh, NULL) < 0)
		return NULL;
	return cache_add(f, fresh);
}

int rt_filter_check(rt_filter *f, const relation *rel, char err[RT_FILTER_ERROR_MAX])
{
	binding fresh;
	int rc = bind(f, rel, &fresh, err);
	if (rc < 0)
		return rc;
	if (cache_find(f, rel) != NULL) {
		free(fresh.b); /* bound already: the same binding */
		return 0;
	}
	return cache_add(f, fresh) != NULL ? 0 : -ENOMEM;
}

/* ---------------------------------------------------------------- matching */

enum { R_FALSE = 0, R_TRUE = 1, R_UNKNOWN = 2 };

static int eval(const rt_filter *f, const cond *c, const bound *b, const change_value *v)
{
	if (c->op == OP_IS) {
		bool r;
		if (b->bad)
			return R_UNKNOWN;
		if (c->is == IS_NULL || c->is == IS_UNKNOWN) {
			r = v->kind == VALUE_NULL;
		} else {
			bool bv;
			if (v->kind == VALUE_NULL)
				r = false;
			else if (parse_bool(v->data, &bv) < 0)
				return R_UNKNOWN;
			else
				r = bv == (c->is == IS_TRUE);
		}
		return r != c->negate ? R_TRUE : R_FALSE;
	}
	if (b->bad)
		return R_UNKNOWN;
	tval x;
	if (c->op == OP_ISDISTINCT) {
		bool distinct;
		if (v->kind == VALUE_NULL)
			distinct = true;
		else if (parse_typed(b->t, v->data, v->len, &x) < 0)
			return R_UNKNOWN;
		else
			distinct = cmp_typed(b->t, &x, &b->c) != 0;
		return distinct != c->negate ? R_TRUE : R_FALSE;
	}
	if (v->kind == VALUE_NULL)
		return R_UNKNOWN;
	bool r = false;
	switch (c->op) {
	case OP_LIKE:
	case OP_ILIKE:
		r = like_match(v->data, v->len, c->value, strlen(c->value), c->op == OP_ILIKE, f->utf8);
		break;
	case OP_MATCH:
	case OP_IMATCH: {
		/* The match block lives for the call only: PCRE2 keeps 20 KiB of backtracking frames in
		 * it after a match, too much to hold per subscriber. No match, a value that is not
		 * UTF-8, the work limit reached, or no memory: false. */
		pcre2_match_data *md = pcre2_match_data_create(1, NULL);
		if (md == NULL)
			return R_UNKNOWN;
		r = pcre2_match(c->re, (PCRE2_SPTR)v->data, v->len, 0, 0, md, f->re_ctx) >= 0;
		pcre2_match_data_free(md);
		break;
	}
	case OP_IN: {
		if (parse_typed(b->t, v->data, v->len, &x) < 0)
			return R_UNKNOWN;
		for (int k = 0; k < b->nin && !r; k++)
			r = cmp_typed(b->t, &x, &b->in[k]) == 0;
		if (!r && b->in_null)
			return R_UNKNOWN;
		break;
	}
	default: {
		if (parse_typed(b->t, v->data, v->len, &x) < 0)
			return R_UNKNOWN;
		int k = cmp_typed(b->t, &x, &b->c);
		switch (c->op) {
		case OP_EQ: r = k == 0; break;
		case OP_NEQ: r = k != 0; break;
		case OP_LT: r = k < 0; break;
		case OP_LTE: r = k <= 0; break;
		case OP_GT: r = k > 0; break;
		case OP_GTE: r = k >= 0; break;
		default: break;
		}
		break;
	}
	}
	return r != c->negate ? R_TRUE : R_FALSE;
}

bool rt_filter_match(rt_filter *f, const relation *rel, const change_value *tuple)
{
	if (f->ncond == 0)
		return true;
	if (tuple == NULL || rel == NULL)
		return false;
	const binding *bd = binding_get(f, rel);
	if (bd == NULL)
		return false;
	for (int i = 0; i < f->ncond; i++) {
		const bound *b = &bd->b[i];
		if (b->col < 0)
			return false;
		const change_value *v = &tuple[b->col];
		if (v->kind != VALUE_NULL && v->kind != VALUE_TEXT)
			return false; /* absent or unchanged: the server's join finds no column */
		if (eval(f, &f->c[i], b, v) != R_TRUE)
			return false;
	}
	return true;
}
