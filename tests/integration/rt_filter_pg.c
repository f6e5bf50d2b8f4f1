/*
 * rt_filter_pg — the differential test of Realtime filters (plugins/sinks/rt_filter.h) against
 * PostgreSQL itself, run by tests/integration/rt_filter_pg.sh inside the harness.
 *
 * It generates (type, column value, operator, constant) triples from pools of spellings per
 * type (edge values, alternative input forms, NULLs, values that do not parse), and for each:
 *   - turns the value into the column's text the way the WAL carries it (PostgreSQL's output
 *     function, `$1::T::text`, under a rotating session TimeZone so timestamptz values come with
 *     many offsets, historic LMT ones included);
 *   - builds the filter string (`v=[not.]op.constant`, quoted as a client would) and runs
 *     rt_filter_parse, rt_filter_check and rt_filter_match on a one-column relation of type T;
 *   - asks PostgreSQL the same question with typed SQL: `$1::T < $2::T`, `= any(array[...])`,
 *     LIKE / ILIKE / ~ / ~* under the C.utf8 collation (code point order, Unicode case), IS [NOT] NULL/TRUE/FALSE/UNKNOWN,
 *     IS [NOT] DISTINCT FROM, with NOT for `not.`, NULL counting as false — and whether the
 *     constant casts to T at all (a refused cast must be a refused check, and back).
 * Every disagreement is printed; the exit status is 1 when there is one. Usage:
 *   rt_filter_pg [TRIPLES [SEED]]    (PG* from the environment; defaults 3000, a fixed seed)
 */
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_filter.h"

typedef struct tspec {
	const char *name;     /* SQL type of the constant (as the server casts it) */
	const char *col_type; /* SQL type of the column */
	bool textual;         /* like/ilike/match/imatch apply */
	bool boolean;
	const char *const *pool;
} tspec;

static const char *const p_int2[] = {"0", "1", "-1", "32767", "-32768", "42", " 42", "+42", "007",
                                     "-0", "100", "99", "12345", "32768", "4x", NULL};
static const char *const p_int4[] = {"0", "1", "-1", "2147483647", "-2147483648", "42", "+42 ",
                                     "0042", "10", "9", "100", "2147483648", "1.5", "abc", "", NULL};
static const char *const p_int8[] = {"9223372036854775807", "9223372036854775806",
                                     "-9223372036854775808", "9007199254740993", "9007199254740992",
                                     "1", "-1", "0", "42", "9223372036854775808", NULL};
static const char *const p_oid[] = {"0", "1", "4294967295", "-1", "2147483648", "42", "-2147483648",
                                    "4294967296", NULL};
static const char *const p_numeric[] = {
	"0", "0.0", "-0", "1", "1.0", "1.00", "1.5", "1.50", "-1.5", "-1.25", "1e3", "1000", "1000.0001",
	"0.001", "1e-3", ".5", "0.5", "5.", "NaN", "nan", "Infinity", "-Infinity", "inf",
	"123456789012345678901234567890.123", "123456789012345678901234567890.1229", "99.99", "100",
	"1e-20", "-1e-20", "1E+2", " 7 ", "1e2x", "--1", NULL};
static const char *const p_float4[] = {"0", "-0", "0.1", "0.100000001", "1.5", "1e10", "3.4e38",
                                       "-3.4e38", "NaN", "Infinity", "-Infinity", "1e-45", "1",
                                       "16777217", "16777216", "1e39", "x", NULL};
static const char *const p_float8[] = {"0", "-0", "0.1", "0.30000000000000004", "0.3", "1e308",
                                       "-1e308", "NaN", "Infinity", "-inf", "1", "1.0000000000000002",
                                       "5e-324", "9007199254740993", "1e400", "1e-400", NULL};
static const char *const p_bool[] = {"t", "f", "true", "false", "yes", "no", "on", "off", "1", "0",
                                     "TRUE", "y", "n", " tru ", "of", "maybe", "o", NULL};
static const char *const p_uuid[] = {
	"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
	"a0eebc999c0b4ef8bb6d6bb9bd380a11", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
	"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", "00000000-0000-0000-0000-000000000000",
	"ffffffff-ffff-ffff-ffff-ffffffffffff", "123", NULL};
static const char *const p_tstz[] = {
	"2026-12-02 10:00:00+00", "2026-12-02T10:00:00Z", "2026-12-02T15:30:00+05:30",
	"2026-12-02T05:00:00-05", "2026-12-02 10:00:00.000001+00", "2026-12-02 09:59:59.999999Z",
	"2026-12-02", "2026-12-02 10:00:00", "infinity", "-infinity", "0044-03-15 12:00:00+00 BC",
	"2024-02-29T23:00:00-01", "2026-12-02T10:00:00.5+0100", "1970-01-01T00:00:00Z", "epoch",
	"2026-12-02 10:00:00.1234567+00", "1900-01-01 00:00:00+00", "2026-12-02T10:00:00+05:53:28",
	"294276-12-31 23:59:59.999999+00", "4713-11-24 00:00:00+00 BC", "2026-13-01", "2026-02-29",
	NULL};
static const char *const p_ts[] = {"2026-12-02 10:00:00", "2026-12-02T10:00:00", "2026-12-02 10:00:00.5",
                                   "2026-12-02T10:00:00+05", "2026-12-02", "infinity",
                                   "0044-03-15 12:00:00 BC", "2026-12-02 23:59:59.999999",
                                   "2026-12-03T00:00:00Z", "294276-12-31 23:59:59.999999",
                                   "4713-11-24 BC", NULL};
static const char *const p_date[] = {"2026-12-02", "2026-12-01", "2026-12-02T23:00:00-05",
                                     "2026-12-03", "infinity", "-infinity", "0001-01-01",
                                     "0001-12-31 BC", "2024-02-29", "2023-02-29", "5874897-12-31",
                                     "4713-11-24 BC", NULL};
static const char *const p_time[] = {"10:00", "10:00:00", "10:00:00.5", "09:59:59.999999", "24:00:00",
                                     "00:00", "23:59:59", "10:00:00+05", "25:00", NULL};
static const char *const p_text[] = {"", "a", "A", "b", "ab", "abc", "a b", "hello", "Hello", "héllo",
                                     "é", "É", "z", "a,b", "(x)", "\"q\"", "back\\slash", "10", "9",
                                     "null", "NULL", " lead", "trail ", "a%b", "a_b", "{x}", "aa", "]", "a\nb", "a\n",
                                     "1.5", "a1",
                                     NULL};
static const char *const p_bpchar[] = {"ab", "ab  ", "abcd", "a", "b", " a", "", "a b", NULL};

static const char *const like_pats[] = {"%É%", "É", "%LLO", "HÉ%", "%", "a%", "%b", "_", "a_c", "%l%", "h_llo", "H%", "%é%",
                                        "\\%%", "a\\_b", "%a%b%", "___", "_é%", "", "ab", "%\\\\%",
                                        "%L%", "A%", "__", "a%b", NULL};
static const char *const re_pats[] = {"^a", "b$", "a|b", "^[a-c]+$", "l+", "^.{3}$", "H", "^$",
                                      "x?y*", "(ab)+", "[[:upper:]]", "^[^a]", "\\.", "a.c",
                                      "^(a|h)", "L", "^.$", "^h.llo$", "^[é]$", "é", "É",
                                      "^[[:alpha:]]+$", "^[^x]$", "^a+?$", "^a{2}?$",
                                      "a*?b", "^(a|b)??$", "^[]a]", "\\d", "^\\w+$", "\\s",
                                      "^a.*b$", "^(a)\\1", "a$", "^[\\d.]+$", "(?i)^H",
                                      "\\Aa", "b\\Z", NULL};

static const tspec types[] = {
	{"int2", "int2", false, false, p_int2},
	{"int4", "int4", false, false, p_int4},
	{"int8", "int8", false, false, p_int8},
	{"oid", "oid", false, false, p_oid},
	{"numeric", "numeric", false, false, p_numeric},
	{"float4", "float4", false, false, p_float4},
	{"float8", "float8", false, false, p_float8},
	{"bool", "bool", false, true, p_bool},
	{"uuid", "uuid", false, false, p_uuid},
	{"timestamptz", "timestamptz", false, false, p_tstz},
	{"timestamp", "timestamp", false, false, p_ts},
	{"date", "date", false, false, p_date},
	{"time", "time", false, false, p_time},
	{"text", "text", true, false, p_text},
	{"varchar", "varchar", true, false, p_text},
	{"name", "name", true, false, p_text},
	{"bpchar", "char(4)", true, false, p_bpchar},
};
#define NTYPES ((int)(sizeof(types) / sizeof(types[0])))

static const char *const zones[] = {"UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham",
                                    "America/New_York", "Europe/Paris", "Asia/Kathmandu"};

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static int pool_len(const char *const *p)
{
	int n = 0;
	while (p[n] != NULL)
		n++;
	return n;
}

static const char *pick(const char *const *p)
{
	return p[rnd((uint32_t)pool_len(p))];
}

/* Runs sql with params; returns the single value (malloc'ed, NULL for SQL NULL) in *out. 0, or
 * -1 when PostgreSQL raised an error (message in err). */
static int query1(PGconn *c, const char *sql, int n, const char *const *params, char **out,
                  bool *is_null, char *err, size_t errlen)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
		PQclear(r);
		if (PQstatus(c) != CONNECTION_OK) {
			fprintf(stderr, "connection lost: %s\n", err);
			exit(2);
		}
		return -1;
	}
	*is_null = PQgetisnull(r, 0, 0);
	*out = *is_null ? NULL : strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return 0;
}

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "%s: %s\n", sql, PQresultErrorMessage(r));
		exit(2);
	}
	PQclear(r);
}

/* Appends s to the filter as one value: quoted ("...", \ and " escaped) when it holds a
 * character the filter syntax reserves or space at either end. */
static void append_value(char *f, size_t cap, const char *s, bool in_list)
{
	size_t n = strlen(s);
	bool q = n == 0 ? in_list : false;
	for (size_t i = 0; i < n; i++)
		if (strchr(",()\"\\{}", s[i]) != NULL || (in_list && isspace((unsigned char)s[i])))
			q = true;
	if (n > 0 && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1])))
		q = true;
	if (in_list && strcasecmp(s, "null") == 0)
		q = true;
	size_t o = strlen(f);
	if (q && o + 1 < cap)
		f[o++] = '"';
	for (size_t i = 0; i < n && o + 2 < cap; i++) {
		if (q && (s[i] == '"' || s[i] == '\\'))
			f[o++] = '\\';
		f[o++] = s[i];
	}
	if (q && o + 1 < cap)
		f[o++] = '"';
	f[o] = '\0';
}

typedef enum { K_CMP, K_IN, K_LIKE, K_MATCH, K_IS, K_DISTINCT } kind;

static const char *const cmp_ops[] = {"eq", "neq", "lt", "lte", "gt", "gte"};
static const char *const cmp_sql[] = {"=", "<>", "<", "<=", ">", ">="};

int main(int argc, char **argv)
{
	int ntriples = argc > 1 ? atoi(argv[1]) : 3000;
	rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 0x5eed5eedULL;
	if (rng_state == 0)
		rng_state = 1;
	printf("rt_filter_pg: %d triples, seed %llu\n", ntriples, (unsigned long long)rng_state);
	PGconn *c = PQconnectdb("");
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "connect: %s\n", PQerrorMessage(c));
		return 2;
	}
	exec_ok(c, "set DateStyle = 'ISO, MDY'");
	exec_ok(c, "set extra_float_digits = 1");

	uint32_t oids[NTYPES];
	for (int t = 0; t < NTYPES; t++) {
		char sql[128], err[512], *v;
		bool isn;
		snprintf(sql, sizeof(sql), "select '%s'::regtype::oid", types[t].col_type);
		if (query1(c, sql, 0, NULL, &v, &isn, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s", err);
			return 2;
		}
		oids[t] = (uint32_t)strtoul(v, NULL, 10);
		free(v);
	}

	int mismatches = 0, done = 0, matched = 0, refused = 0, nulls = 0;
	int per_kind[6] = {0};
	for (int k = 0; k < ntriples; k++) {
		/* one triple in four on a text type, so that like/ilike/match/imatch get their share */
		const tspec *ts = rnd(4) == 0 ? &types[NTYPES - 4 + (int)rnd(4)] : &types[rnd(NTYPES)];
		int ti = (int)(ts - types);
		char err[1024], sql[1024], *out = NULL;
		bool isn;

		/* the column's value as the WAL would carry it */
		char tzset[96];
		snprintf(tzset, sizeof(tzset), "set TimeZone = '%s'", zones[rnd(sizeof(zones) / sizeof(zones[0]))]);
		exec_ok(c, tzset);
		bool vnull = rnd(10) == 0;
		char *vtext = NULL;
		if (!vnull) {
			const char *src = pick(ts->pool);
			snprintf(sql, sizeof(sql), "select $1::%s::text", ts->col_type);
			if (query1(c, sql, 1, &src, &vtext, &isn, err, sizeof(err)) < 0)
				continue; /* not a value of the column type */
		}
		exec_ok(c, "set TimeZone = 'UTC'");

		/* the condition */
		kind kd;
		uint32_t r = rnd(ts->textual ? 12 : 9);
		if (r < 5)
			kd = K_CMP;
		else if (r < 7)
			kd = K_IN;
		else if (r == 7)
			kd = K_IS;
		else if (r == 8)
			kd = K_DISTINCT;
		else if (r < 11)
			kd = K_LIKE;
		else
			kd = K_MATCH;
		bool negate = rnd(4) == 0;
		char filter[2048];
		snprintf(filter, sizeof(filter), "v=%s", negate ? "not." : "");
		const char *params[8] = {vtext};
		int nparams = 1;
		char expr[512];
		const char *lhs_coll = ts->textual ? " collate \"C.utf8\"" : "";
		const char *constant = NULL;
		int ci = 0;
		switch (kd) {
		case K_CMP:
			ci = (int)rnd(6);
			constant = pick(ts->pool);
			strcat(filter, cmp_ops[ci]);
			strcat(filter, ".");
			append_value(filter, sizeof(filter), constant, false);
			params[nparams++] = constant;
			snprintf(expr, sizeof(expr), "$1::%s%s %s $2::%s", ts->name, lhs_coll, cmp_sql[ci], ts->name);
			break;
		case K_IN: {
			int n = 1 + (int)rnd(5);
			strcat(filter, "in.(");
			char list[256] = "";
			for (int e = 0; e < n; e++) {
				if (e > 0)
					strcat(filter, ",");
				if (rnd(8) == 0) {
					strcat(filter, "null");
					params[nparams++] = NULL;
				} else {
					const char *el = pick(ts->pool);
					append_value(filter, sizeof(filter), el, true);
					params[nparams++] = el;
				}
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s$%d::%s", e ? "," : "",
				         nparams, ts->name);
			}
			strcat(filter, ")");
			snprintf(expr, sizeof(expr), "$1::%s%s = any(array[%s])", ts->name, lhs_coll, list);
			break;
		}
		case K_LIKE: {
			bool icase = rnd(2) == 0;
			constant = pick(like_pats);
			strcat(filter, icase ? "ilike." : "like.");
			append_value(filter, sizeof(filter), constant, false);
			params[nparams++] = constant;
			snprintf(expr, sizeof(expr), "$1::%s collate \"C.utf8\" %s ($2::%s)", ts->name,
			         icase ? "ilike" : "like", ts->name);
			break;
		}
		case K_MATCH: {
			bool icase = rnd(2) == 0;
			constant = pick(re_pats);
			strcat(filter, icase ? "imatch." : "match.");
			append_value(filter, sizeof(filter), constant, false);
			params[nparams++] = constant;
			snprintf(expr, sizeof(expr), "$1::%s collate \"C.utf8\" %s ($2::%s)", ts->name,
			         icase ? "~*" : "~", ts->name);
			break;
		}
		case K_IS: {
			static const char *const kws[] = {"null", "true", "false", "unknown"};
			const char *kw = ts->boolean ? kws[rnd(4)] : "null";
			strcat(filter, "is.");
			strcat(filter, kw);
			snprintf(expr, sizeof(expr), "$1::%s is %s%s", ts->name, negate ? "not " : "", kw);
			break;
		}
		case K_DISTINCT:
			constant = pick(ts->pool);
			strcat(filter, "isdistinct.");
			append_value(filter, sizeof(filter), constant, false);
			params[nparams++] = constant;
			snprintf(expr, sizeof(expr), "$1::%s is %sdistinct from $2::%s", ts->name,
			         negate ? "not " : "", ts->name);
			break;
		}
		per_kind[kd]++;

		/* PostgreSQL's answer: does every constant cast, and the truth of the condition */
		bool pg_ok = true;
		for (int p = 1; p < nparams && pg_ok; p++) {
			if (params[p] == NULL)
				continue;
			snprintf(sql, sizeof(sql), "select $1::%s", ts->name);
			if (query1(c, sql, 1, &params[p], &out, &isn, err, sizeof(err)) < 0)
				pg_ok = false;
			free(out);
			out = NULL;
		}
		bool pg_true = false;
		if (pg_ok) {
			bool wrap_not = negate && kd != K_IS && kd != K_DISTINCT;
			snprintf(sql, sizeof(sql), "select coalesce(%s(%s), false)", wrap_not ? "not " : "", expr);
			if (query1(c, sql, nparams, params, &out, &isn, err, sizeof(err)) < 0) {
				printf("MISMATCH? PostgreSQL refused %s with %s: %s", sql, filter, err);
				mismatches++;
				free(vtext);
				continue;
			}
			pg_true = strcmp(out, "t") == 0;
			free(out);
			out = NULL;
		}

		/* walcast's answer */
		char ferr[RT_FILTER_ERROR_MAX] = "";
		rt_filter *f = NULL;
		int rc = rt_filter_parse(filter, &f, ferr);
		rel_column col = {.name = "v", .type_oid = oids[ti], .typmod = -1};
		relation rel = {.schema = "public", .name = "t", .ncols = 1, .cols = &col, .version = 1,
		                .id = (uint64_t)k + 1};
		if (rc == 0)
			rc = rt_filter_check(f, &rel, ferr);
		bool ours_ok = rc == 0, ours_true = false;
		if (ours_ok) {
			change_value tv = {.kind = vnull ? VALUE_NULL : VALUE_TEXT,
			                   .len = vtext ? (uint32_t)strlen(vtext) : 0,
			                   .data = vtext};
			ours_true = rt_filter_match(f, &rel, &tv);
		}
		rt_filter_free(f);

		done++;
		nulls += vnull;
		if (!pg_ok)
			refused++;
		if (pg_true)
			matched++;
		if (ours_ok != pg_ok || ours_true != pg_true) {
			mismatches++;
			printf("MISMATCH %s: value %s%s%s: PostgreSQL %s, walcast %s%s%s\n", filter,
			       vnull ? "" : "'", vnull ? "NULL" : vtext, vnull ? "" : "'",
			       !pg_ok ? "refuses the constant" : pg_true ? "true" : "false",
			       !ours_ok ? "refuses: " : ours_true ? "true" : "false", !ours_ok ? ferr : "",
			       "");
		}
		free(vtext);
	}
	printf("rt_filter_pg: %d triples compared (%d cmp, %d in, %d like, %d match, %d is, %d "
	       "isdistinct); %d true, %d refused constants, %d NULL values; %d mismatches\n",
	       done, per_kind[K_CMP], per_kind[K_IN], per_kind[K_LIKE], per_kind[K_MATCH],
	       per_kind[K_IS], per_kind[K_DISTINCT], matched, refused, nulls, mismatches);
	PQfinish(c);
	return mismatches == 0 ? 0 : 1;
}
