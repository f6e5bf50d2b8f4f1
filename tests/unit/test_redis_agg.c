/*
 * test_redis_agg — unit tests for the redis sink's merged deltas (plugins/sinks/redis_agg.h):
 * timestamptz parsing, the contribution of one row, merging across transactions (an insert and
 * its delete cancel out; an update moving an event to another contact, day or org takes it back
 * from the old keys and adds it to the new ones), the hour window, the per-org first and last
 * commit LSNs, and the EVALSHA arguments built from a batch; then the Lua script itself against
 * a redis-server started here (skipped without one): applied once with its watermark, a replay
 * skipped, a batch straddling the watermark refused, a key of the wrong type refused before any
 * write, counters and emptied keys removed, and last_event_us kept exact when the latest event
 * goes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>

#include "redis_agg.h"
#include "redis_test_server.h"

#define ORG_A "11111111-1111-1111-1111-111111111111"
#define ORG_B "22222222-2222-2222-2222-222222222222"
#define CT_1 "aaaaaaaa-0000-0000-0000-000000000001"
#define CT_2 "aaaaaaaa-0000-0000-0000-000000000002"
/* 2026-12-02 05:52:28.123456 UTC */
#define T0 INT64_C(1796190748123456)
#define NOW (T0 / 1000000 + 3600)

static const redis_agg_conf CONF = {.prefix = "wc", .missed_statuses = "missed, no-answer", .hour_window_h = 48};

static redis_agg_event ev(const char *org, const char *contact, const char *kind, const char *status, int64_t at,
                          int64_t dur)
{
	redis_agg_event e = {.kind = kind, .direction = "inbound", .status = status, .started_us = at,
	                     .has_duration = dur >= 0, .duration_s = dur >= 0 ? dur : 0};
	strcpy(e.org, org);
	strcpy(e.contact, contact);
	return e;
}

static void test_timestamptz(void **state)
{
	(void)state;
	int64_t t = 7;
	const char *s = "2026-12-02 05:52:28.123456+00";
	assert_int_equal(redis_agg_parse_timestamptz(s, strlen(s), &t), 0);
	assert_int_equal(t, T0);
	s = "2026-12-02 11:22:28.123456+05:30";
	assert_int_equal(redis_agg_parse_timestamptz(s, strlen(s), &t), 0);
	assert_int_equal(t, T0);
	s = "2026-12-01 21:52:28.123456-08";
	assert_int_equal(redis_agg_parse_timestamptz(s, strlen(s), &t), 0);
	assert_int_equal(t, T0);
	s = "2026-12-02 05:52:28.1+00";
	assert_int_equal(redis_agg_parse_timestamptz(s, strlen(s), &t), 0);
	assert_int_equal(t, T0 - 23456);
	s = "1970-01-01 00:00:00+00";
	assert_int_equal(redis_agg_parse_timestamptz(s, strlen(s), &t), 0);
	assert_int_equal(t, 0);
	s = "1969-12-31 23:59:59.5+00";
	assert_int_equal(redis_agg_parse_timestamptz(s, strlen(s), &t), 0);
	assert_int_equal(t, -500000);
	t = 7;
	const char *bad[] = {"infinity", "-infinity", "2026-12-02 05:52:28+00 BC", "2026-12-02T05:52:28+00",
	                     "2026-13-02 05:52:28+00", "2026-12-02 05:52:28", "2026-12-02 05:52:28.+00", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(redis_agg_parse_timestamptz(bad[i], strlen(bad[i]), &t), -EINVAL);
	assert_int_equal(t, 7);
}

static void test_one_row(void **state)
{
	(void)state;
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	redis_agg_event e = ev(ORG_A, CT_1, "call", "missed", T0, 40);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 100, NOW), 0);
	assert_int_equal(b.norgs, 1);
	const char *day = "wc:{" ORG_A "}:day:20261202";
	assert_int_equal(redis_agg_delta(&b, day, "calls"), 1);
	assert_int_equal(redis_agg_delta(&b, day, "sms"), 0);
	assert_int_equal(redis_agg_delta(&b, day, "call:inbound:missed"), 1);
	assert_int_equal(redis_agg_delta(&b, day, "missed"), 1);
	assert_int_equal(redis_agg_delta(&b, day, "call_duration_s"), 40);
	assert_int_equal(redis_agg_delta(&b, day, "calls_timed"), 1);
	const char *hour = "wc:{" ORG_A "}:hour:2026120205";
	assert_int_equal(redis_agg_delta(&b, hour, "calls"), 1);
	assert_int_equal(redis_agg_delta(&b, hour, "missed"), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:day:20261202:contacts", CT_1), 1);
	const char *ck = "wc:{" ORG_A "}:contact:" CT_1;
	assert_int_equal(redis_agg_delta(&b, ck, "events"), 1);
	assert_int_equal(redis_agg_delta(&b, ck, "calls"), 1);
	assert_int_equal(redis_agg_delta(&b, ck, "call_duration_s"), 40);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:contact:" CT_1 ":times", "1796190748123456"), 1);

	/* before 1970 and at a day's last second: the UTC day and hour of the instant */
	e = ev(ORG_B, CT_2, "sms", "sent", -500000, -1);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 99, 0), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:day:19691231", "sms"), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:hour:1969123123", "sms"), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:contact:" CT_2 ":times", "-500000"), 1);
	e = ev(ORG_B, CT_2, "sms", "sent", INT64_C(1796255999999999), -1); /* 2026-12-02 23:59:59.999999 */
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 99, NOW), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:day:20261202", "sms"), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:hour:2026120223", "sms"), 1);
	/* "no-answer" is missed too (a list with spaces); an sms never is; no duration: not timed */
	e = ev(ORG_A, "", "call", "no-answer", T0, -1);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 101, NOW), 0);
	e = ev(ORG_A, "", "sms", "missed", T0, -1);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 102, NOW), 0);
	assert_int_equal(redis_agg_delta(&b, day, "missed"), 2);
	assert_int_equal(redis_agg_delta(&b, day, "calls"), 2);
	assert_int_equal(redis_agg_delta(&b, day, "sms"), 1);
	assert_int_equal(redis_agg_delta(&b, day, "calls_timed"), 1);
	/* no contact: no contact keys */
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:day:20261202:contacts", ""), 0);
	uint64_t first, last;
	assert_int_equal(b.norgs, 2);
	assert_string_equal(redis_agg_org_id(&b, 0, &first, &last), ORG_A);
	assert_int_equal(first, 100);
	assert_int_equal(last, 102);
	redis_agg_batch_fini(&b);
}

static void test_hour_window(void **state)
{
	(void)state;
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	/* 46 hours old: kept; 49 hours old (past the window at NOW): only the day counters */
	redis_agg_event e = ev(ORG_A, CT_1, "sms", "sent", T0 - INT64_C(46) * 3600 * 1000000, -1);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 1, NOW), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:hour:2026113007", "sms"), 1);
	e = ev(ORG_A, CT_1, "sms", "sent", T0 - INT64_C(49) * 3600 * 1000000, -1);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 2, NOW), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:hour:2026113004", "sms"), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:day:20261130", "sms"), 2);
	redis_agg_batch_fini(&b);
}

/* Counts the (field, delta) pairs and checks the argument structure of an org's command. */
static size_t command_pairs(const redis_agg_batch *b, size_t org, int *nkeys)
{
	buf out;
	buf_init(&out);
	int argc;
	const char **argv;
	size_t *argvlen;
	assert_int_equal(redis_agg_org_command(b, org, &CONF, "0123456789012345678901234567890123456789", &out, &argc,
	                                       &argv, &argvlen),
	                 0);
	assert_string_equal(argv[0], "EVALSHA");
	int nk = atoi(argv[2]);
	*nkeys = nk;
	for (int i = 0; i < argc; i++)
		assert_int_equal(argvlen[i], strlen(argv[i]));
	assert_true(strstr(argv[3], ":wm") != NULL);
	int a = 3 + nk + 2;
	size_t pairs = 0;
	for (int k = 1; k < nk; k++) {
		const char *type = argv[a];
		int n = atoi(argv[a + 1]);
		if (type[0] == 't') {
			/* the contact hash named by its position in KEYS (1-based) */
			int ck = atoi(argv[a + 2]);
			assert_true(ck >= 2 && ck <= nk);
			assert_string_equal(argv[3 + ck - 1], "wc:{" ORG_A "}:contact:" CT_1);
		}
		a += 3;
		for (int i = 0; i < n; i++) {
			assert_int_not_equal(atoll(argv[a + 1]), 0);
			a += 2;
			pairs++;
		}
	}
	assert_int_equal(a, argc);
	free(argv);
	free(argvlen);
	buf_fini(&out);
	return pairs;
}

static void test_cancel_and_move(void **state)
{
	(void)state;
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	/* inserted then deleted in the same batch: every delta nets to 0 and none is sent */
	redis_agg_event e = ev(ORG_A, CT_1, "call", "completed", T0, 30);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 10, NOW), 0);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, -1, 11, NOW), 0);
	int nkeys;
	assert_int_equal(command_pairs(&b, 0, &nkeys), 0);
	assert_true(nkeys > 1); /* the keys stay (the watermark moves), with nothing to apply */

	/* an update moving the event to another contact, day and org: taken back, added there */
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 12, NOW), 0);
	redis_agg_event moved = ev(ORG_B, CT_2, "call", "completed", T0 - INT64_C(86400) * 1000000, 50);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, -1, 13, NOW), 0);
	assert_int_equal(redis_agg_add(&b, &CONF, &moved, +1, 13, NOW), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:day:20261202", "calls"), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:day:20261201", "calls"), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:day:20261201", "call_duration_s"), 50);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:day:20261201:contacts", CT_2), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_B "}:contact:" CT_2, "events"), 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:contact:" CT_1, "events"), 0);
	assert_int_equal(b.norgs, 2);
	uint64_t first, last;
	redis_agg_org_id(&b, 1, &first, &last);
	assert_int_equal(first, 13);
	assert_int_equal(last, 13);
	/* an update that only changes a status: the old status' counter down, the new one up */
	redis_agg_event before = ev(ORG_A, CT_1, "call", "in_progress", T0, -1);
	redis_agg_event after = ev(ORG_A, CT_1, "call", "completed", T0, 120);
	assert_int_equal(redis_agg_add(&b, &CONF, &before, +1, 14, NOW), 0);
	assert_int_equal(redis_agg_add(&b, &CONF, &before, -1, 15, NOW), 0);
	assert_int_equal(redis_agg_add(&b, &CONF, &after, +1, 15, NOW), 0);
	const char *day = "wc:{" ORG_A "}:day:20261202";
	assert_int_equal(redis_agg_delta(&b, day, "call:inbound:in_progress"), 0);
	assert_int_equal(redis_agg_delta(&b, day, "call:inbound:completed"), 1);
	assert_int_equal(redis_agg_delta(&b, day, "calls"), 1);
	assert_int_equal(redis_agg_delta(&b, day, "calls_timed"), 1);
	assert_true(command_pairs(&b, 0, &nkeys) > 0);
	redis_agg_org_id(&b, 0, &first, &last);
	assert_int_equal(first, 10);
	assert_int_equal(last, 15);

	/* move: the receiving batch takes everything, the source is empty and reusable */
	redis_agg_batch r;
	assert_int_equal(redis_agg_batch_init(&r), 0);
	b.end_lsn = 99;
	size_t bytes = b.bytes;
	assert_true(bytes > 0);
	redis_agg_batch_move(&r, &b);
	assert_int_equal(r.norgs, 2);
	assert_int_equal(r.end_lsn, 99);
	assert_int_equal(r.bytes, bytes);
	assert_int_equal(b.norgs, 0);
	assert_int_equal(b.bytes, 0);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 16, NOW), 0);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:contact:" CT_1, "events"), 1);
	assert_int_equal(redis_agg_delta(&r, "wc:{" ORG_B "}:contact:" CT_2, "events"), 1);
	redis_agg_batch_fini(&r);
	redis_agg_batch_fini(&b);
}

/* The per-class cells: rows of every (kind, direction, status) over a few days, added and taken
 * back in any order, give the same day counters as a plain recount; a cleared batch reuses its
 * orgs' storage and keeps nothing of the previous batch; a status past REDIS_AGG_FIELD_MAX is
 * cut in the field name and still counted. */
static void test_class_cells(void **state)
{
	(void)state;
	static const char *const kinds[] = {"call", "sms", "fax"};
	static const char *const dirs[] = {"inbound", "outbound"};
	static const char *const sts[] = {"completed", "missed", "no-answer", "sent"};
	enum { DAYS = 3, NK = 3, ND = 2, NS = 4 };
	int64_t cls[DAYS][NK][ND][NS] = {{{{0}}}}, kind_n[DAYS][NK] = {{0}}, missed[DAYS] = {0}, dur[DAYS] = {0},
	        timed[DAYS] = {0}, ct_events = 0;
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	for (int pass = 0; pass < 2; pass++) {
		uint64_t x = 12345;
		for (int i = 0; i < 3000; i++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			int d = (int)((x >> 20) % DAYS), k = (int)((x >> 24) % NK), di = (int)((x >> 28) % ND),
			    st = (int)((x >> 32) % NS);
			int64_t du = (x >> 40) % 5 == 0 ? -1 : (int64_t)((x >> 44) % 600);
			int sign = (x >> 60) % 3 == 0 ? -1 : +1;
			redis_agg_event e = ev(i % 2 ? ORG_A : ORG_B, i % 2 ? CT_1 : "", kinds[k], sts[st],
			                       T0 - (int64_t)d * 86400 * 1000000 - i, du);
			e.direction = dirs[di];
			assert_int_equal(redis_agg_add(&b, &CONF, &e, sign, (uint64_t)i + 1, NOW), 0);
			if (pass == 0 || i % 2 == 0)
				continue; /* the second pass checks org A */
			cls[d][k][di][st] += sign;
			kind_n[d][k] += sign;
			if (k == 0 && st != 0 && st != 3)
				missed[d] += sign; /* CONF: "missed, no-answer" */
			if (k == 0 && du >= 0) {
				dur[d] += sign * du;
				timed[d] += sign;
			}
			ct_events += sign;
		}
		if (pass == 0) {
			/* the first pass is thrown away: the second must not see any of it */
			assert_int_equal(b.norgs, 2);
			redis_agg_batch_clear(&b);
			assert_int_equal(b.norgs, 0);
			assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:contact:" CT_1, "events"), 0);
		}
	}
	static const char *const kind_fields[] = {"calls", "sms", "other"};
	for (int d = 0; d < DAYS; d++) {
		char day[64], field[64];
		int64_t y = 2026, mo = 12, dd = 2 - d;
		if (dd < 1) {
			mo = 11;
			dd += 30;
		}
		snprintf(day, sizeof(day), "wc:{" ORG_A "}:day:%04" PRId64 "%02" PRId64 "%02" PRId64, y, mo, dd);
		for (int k = 0; k < NK; k++) {
			assert_int_equal(redis_agg_delta(&b, day, kind_fields[k]), kind_n[d][k]);
			for (int di = 0; di < ND; di++)
				for (int st = 0; st < NS; st++) {
					snprintf(field, sizeof(field), "%s:%s:%s", kinds[k], dirs[di], sts[st]);
					assert_int_equal(redis_agg_delta(&b, day, field), cls[d][k][di][st]);
				}
		}
		assert_int_equal(redis_agg_delta(&b, day, "missed"), missed[d]);
		assert_int_equal(redis_agg_delta(&b, day, "call_duration_s"), dur[d]);
		assert_int_equal(redis_agg_delta(&b, day, "calls_timed"), timed[d]);
	}
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:contact:" CT_1, "events"), ct_events);

	/* a status longer than a field name may be: cut, and counted */
	char status[300];
	memset(status, 's', sizeof(status) - 1);
	status[sizeof(status) - 1] = '\0';
	redis_agg_event e = ev(ORG_A, "", "sms", status, T0, -1);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 5000, NOW), 0);
	assert_int_equal(redis_agg_add(&b, &CONF, &e, +1, 5001, NOW), 0);
	char field[REDIS_AGG_FIELD_MAX];
	snprintf(field, sizeof(field), "sms:inbound:%s", status);
	assert_int_equal(strlen(field), REDIS_AGG_FIELD_MAX - 1);
	assert_int_equal(redis_agg_delta(&b, "wc:{" ORG_A "}:day:20261202", field), 2);
	redis_agg_batch_fini(&b);
}

static void test_many_keys(void **state)
{
	(void)state;
	/* many contacts and days in one batch: the indexes grow, every delta is found again */
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	char contact[40];
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 500; i++) {
			snprintf(contact, sizeof(contact), "aaaaaaaa-0000-0000-0000-%012d", i);
			redis_agg_event e = ev(i % 2 ? ORG_A : ORG_B, contact, "sms", "sent",
			                       T0 - (int64_t)(i % 7) * 86400 * 1000000, -1);
			assert_int_equal(redis_agg_add(&b, &CONF, &e, round == 2 ? -1 : +1, (uint64_t)(round * 1000 + i), NOW), 0);
		}
	for (int i = 0; i < 500; i++) {
		char key[200];
		snprintf(contact, sizeof(contact), "aaaaaaaa-0000-0000-0000-%012d", i);
		snprintf(key, sizeof(key), "wc:{%s}:contact:%s", i % 2 ? ORG_A : ORG_B, contact);
		assert_int_equal(redis_agg_delta(&b, key, "events"), 1);
	}
	redis_agg_batch_fini(&b);
}

static void test_event_parse(void **state)
{
	(void)state;
	rel_column cols[] = {{.name = "id"},        {.name = "org_id"},     {.name = "contact_id"},
	                     {.name = "kind"},      {.name = "direction"},  {.name = "status"},
	                     {.name = "started_at"}, {.name = "duration_s"}};
	relation rel = {.schema = "public", .name = "events", .ncols = 8, .cols = cols, .id = 5, .version = 1};
	redis_agg_cols rc;
	char err[REDIS_AGG_ERROR_MAX];
	assert_int_equal(redis_agg_cols_find(&rel, &rc, err), 0);
	assert_int_equal(rc.org, 1);
	assert_int_equal(rc.duration, 7);
#define TXT(s) {VALUE_TEXT, sizeof(s) - 1, s}
	change_value t[] = {TXT("x"), TXT("11111111-1111-1111-1111-11111111111F"), {VALUE_NULL, 0, NULL}, TXT("call"),
	                    TXT("outbound"), TXT("completed"), TXT("2026-12-02 05:52:28.123456+00"), TXT("61")};
	redis_agg_event e;
	assert_int_equal(redis_agg_event_parse(&rc, t, &e, err), 0);
	assert_string_equal(e.org, "11111111-1111-1111-1111-11111111111f"); /* canonical */
	assert_string_equal(e.contact, "");
	assert_int_equal(e.started_us, T0);
	assert_true(e.has_duration);
	assert_int_equal(e.duration_s, 61);
	change_value absent = {VALUE_ABSENT, 0, NULL};
	t[6] = absent;
	assert_int_equal(redis_agg_event_parse(&rc, t, &e, err), -EINVAL);
	assert_non_null(strstr(err, "started_at"));
	t[6] = (change_value)TXT("infinity");
	assert_int_equal(redis_agg_event_parse(&rc, t, &e, err), -EINVAL);
	t[6] = (change_value)TXT("2026-12-02 05:52:28.123456+00");
	t[2] = (change_value)TXT("not-a-uuid");
	assert_int_equal(redis_agg_event_parse(&rc, t, &e, err), -EINVAL);
	assert_non_null(strstr(err, "contact_id"));
	cols[7].name = "duration";
	assert_int_equal(redis_agg_cols_find(&rel, &rc, err), -EINVAL);
	assert_non_null(strstr(err, "duration_s"));
#undef TXT
}

static void test_lsn_text(void **state)
{
	(void)state;
	char s[17];
	uint64_t v = 0;
	redis_agg_lsn_text(UINT64_C(0x16B37A0), s);
	assert_string_equal(s, "00000000016B37A0");
	assert_int_equal(redis_agg_lsn_parse(s, 16, &v), 0);
	assert_int_equal(v, UINT64_C(0x16B37A0));
	redis_agg_lsn_text(UINT64_C(0xFFFFFFFF00000001), s);
	assert_int_equal(redis_agg_lsn_parse(s, 16, &v), 0);
	assert_int_equal(v, UINT64_C(0xFFFFFFFF00000001));
	/* the stored text sorts like the LSN (the script compares strings) */
	char a[17], b[17];
	redis_agg_lsn_text(UINT64_C(0x9FFFFFFF), a);
	redis_agg_lsn_text(UINT64_C(0xA0000000), b);
	assert_true(strcmp(a, b) < 0);
	assert_int_equal(redis_agg_lsn_parse("0/16B37A0", 9, &v), -EINVAL);
	assert_int_equal(redis_agg_lsn_parse("00000000016b37a0", 16, &v), 0);
	assert_int_equal(redis_agg_lsn_parse("00000000016b37g0", 16, &v), -EINVAL);
}

/* ---- the script, against a real Redis -------------------------------------------------- */

typedef struct server {
	pid_t pid;
	redisContext *c;
	char sha[41];
} server;

static int server_setup(void **state)
{
	if (!redis_test_have_server()) {
		*state = NULL;
		return 0;
	}
	server *s = calloc(1, sizeof(*s));
	int port = redis_test_free_port();
	s->pid = redis_test_server_start(port);
	for (int i = 0; i < 200 && s->c == NULL; i++) {
		redisContext *c = redisConnect("127.0.0.1", port);
		if (c != NULL && !c->err)
			s->c = c;
		else {
			redisFree(c);
			usleep(25000);
		}
	}
	if (s->c == NULL)
		return -1;
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)REDIS_AGG_SCRIPT, strlen(REDIS_AGG_SCRIPT), md);
	for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
	redisReply *r = redisCommand(s->c, "SCRIPT LOAD %s", REDIS_AGG_SCRIPT);
	if (r == NULL || r->type != REDIS_REPLY_STRING || strcmp(r->str, s->sha) != 0)
		return -1;
	freeReplyObject(r);
	*state = s;
	return 0;
}

static int server_teardown(void **state)
{
	server *s = *state;
	if (s == NULL)
		return 0;
	redisFree(s->c);
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	free(s);
	return 0;
}

/* Runs org entry 0 of b through the script; the reply (caller frees). */
static redisReply *apply(server *s, const redis_agg_batch *b)
{
	buf out;
	buf_init(&out);
	int argc;
	const char **argv;
	size_t *argvlen;
	assert_int_equal(redis_agg_org_command(b, 0, &CONF, s->sha, &out, &argc, &argv, &argvlen), 0);
	redisReply *r = redisCommandArgv(s->c, argc, argv, argvlen);
	assert_non_null(r);
	free(argv);
	free(argvlen);
	buf_fini(&out);
	return r;
}

static long long hget(server *s, const char *key, const char *field)
{
	redisReply *r = redisCommand(s->c, "HGET %s %s", key, field);
	long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
	freeReplyObject(r);
	return v;
}

static long long count_keys(server *s, const char *pattern)
{
	redisReply *r = redisCommand(s->c, "KEYS %s", pattern);
	long long n = (long long)r->elements;
	freeReplyObject(r);
	return n;
}

/* One batch: the events es with sign, the org's transactions first..last. */
static void batch_of(redis_agg_batch *b, const redis_agg_event *es, const int *signs, size_t n, uint64_t first,
                     uint64_t last)
{
	redis_agg_batch_clear(b);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(redis_agg_add(b, &CONF, &es[i], signs[i], i == 0 ? first : last, NOW), 0);
}

static void test_script(void **state)
{
	server *s = *state;
	if (s == NULL)
		skip();
	redis_agg_batch b;
	assert_int_equal(redis_agg_batch_init(&b), 0);
	const char *ck = "wc:{" ORG_A "}:contact:" CT_1;
	const char *day = "wc:{" ORG_A "}:day:20261202";
	redis_agg_event e1 = ev(ORG_A, CT_1, "call", "completed", T0, 30);
	redis_agg_event e2 = ev(ORG_A, CT_1, "call", "missed", T0 + 1000000, 0);

	/* two events, transactions 0x10..0x20: applied, watermark 0x20 */
	redis_agg_event es[] = {e1, e2};
	int plus[] = {+1, +1};
	batch_of(&b, es, plus, 2, 0x10, 0x20);
	redisReply *r = apply(s, &b);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	assert_int_equal(hget(s, day, "calls"), 2);
	assert_int_equal(hget(s, day, "missed"), 1);
	assert_int_equal(hget(s, day, "call_duration_s"), 30);
	assert_int_equal(hget(s, ck, "events"), 2);
	assert_int_equal(hget(s, ck, "last_event_us"), T0 + 1000000);
	r = redisCommand(s->c, "GET wc:{" ORG_A "}:wm");
	assert_string_equal(r->str, "0000000000000020");
	freeReplyObject(r);

	/* the same batch again (a round whose reply was lost): skipped */
	r = apply(s, &b);
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);
	assert_int_equal(hget(s, day, "calls"), 2);

	/* a batch that straddles the watermark (0x18..0x30): refused, nothing written */
	batch_of(&b, es, plus, 2, 0x18, 0x30);
	r = apply(s, &b);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(r->str, "WALCAST_STRADDLE"));
	freeReplyObject(r);
	assert_int_equal(hget(s, day, "calls"), 2);

	/* the latest event deleted: last_event_us falls back to the one before */
	int minus[] = {-1};
	batch_of(&b, &e2, minus, 1, 0x30, 0x30);
	r = apply(s, &b);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	assert_int_equal(hget(s, ck, "last_event_us"), T0);
	assert_int_equal(hget(s, day, "missed"), 0);
	r = redisCommand(s->c, "HEXISTS %s missed", day);
	assert_int_equal(r->integer, 0); /* a counter back at 0 is removed */
	freeReplyObject(r);

	/* a key of the wrong type: refused before anything is written, watermark unchanged */
	freeReplyObject(redisCommand(s->c, "SET wc:{" ORG_A "}:day:20261202:contacts oops"));
	batch_of(&b, &e1, plus, 1, 0x40, 0x40);
	r = apply(s, &b);
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(r->str, "WALCAST_WRONGTYPE"));
	freeReplyObject(r);
	assert_int_equal(hget(s, day, "calls"), 1);
	assert_int_equal(hget(s, ck, "events"), 1);
	r = redisCommand(s->c, "GET wc:{" ORG_A "}:wm");
	assert_string_equal(r->str, "0000000000000030");
	freeReplyObject(r);
	freeReplyObject(redisCommand(s->c, "DEL wc:{" ORG_A "}:day:20261202:contacts"));
	freeReplyObject(redisCommand(s->c, "ZADD wc:{" ORG_A "}:day:20261202:contacts 1 " CT_1));

	/* the last event of the contact deleted (an erasure): no key of the contact is left */
	batch_of(&b, &e1, minus, 1, 0x50, 0x50);
	r = apply(s, &b);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	assert_int_equal(count_keys(s, "wc:{" ORG_A "}:contact:*"), 0);
	assert_int_equal(count_keys(s, "wc:{" ORG_A "}:day:*"), 0);
	assert_int_equal(count_keys(s, "wc:{" ORG_A "}:hour:*"), 0);
	assert_int_equal(count_keys(s, "wc:{" ORG_A "}:*"), 1); /* the watermark */
	redis_agg_batch_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timestamptz),  cmocka_unit_test(test_one_row),    cmocka_unit_test(test_hour_window),
		cmocka_unit_test(test_cancel_and_move), cmocka_unit_test(test_many_keys), cmocka_unit_test(test_event_parse),
		cmocka_unit_test(test_lsn_text),       cmocka_unit_test(test_class_cells),
		cmocka_unit_test_setup_teardown(test_script, server_setup, server_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
