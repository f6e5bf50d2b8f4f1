/*
 * test_realtime — the realtime sink (plugins/sinks/realtime.c) without sockets: socketless
 * connections (realtime_test_open) fed client frames, a real audience over a small policy
 * judging the changes, deliveries routed as the pipeline routes them (one deliver per
 * subscriber). Covers: join reply (ids in request order) then "Subscribed to PostgreSQL"; a join
 * held until the pipeline is live; pushes with the server's key set per action and typed values;
 * one data object per audience shared by every connection; bindings by event, table and filter
 * (DELETE against the old row); a per-binding column list; the 413 rule; a full queue
 * (disconnect and drop); token refresh to another user and expiry mid-stream; hostile frames.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audience.h"
#include "config.h"
#include "metrics.h"
#include "policy.h"
#include "privacy.h"
#include "realtime.h"

static const char POLICY[] =
	"[roles]\n"
	"ranks = viewer, member, analyst, admin, owner\n"
	"bypass = service_role\n"
	"[membership]\n"
	"table = public.org_roles\n"
	"org = org_id\n"
	"user = user_id\n"
	"role = role\n"
	"[privacy]\n"
	"table = public.privacy_rules\n"
	"subject = contact_id\n"
	"min_role = min_role\n"
	"[table public.org_roles]\n"
	"columns = org_id, user_id, role\n"
	"org = org_id\n"
	"read = owner\n"
	"[table public.privacy_rules]\n"
	"columns = id, org_id, contact_id, min_role\n"
	"org = org_id\n"
	"read = owner\n"
	"[table public.events]\n"
	"columns = id, org_id, user_id, phone, body, n, at\n"
	"org = org_id\n"
	"read = member or user_id = uid\n"
	"mask phone = last4 unless admin or user_id = uid\n";

#define SECRET "unit-test-secret-with-enough-length-for-hs256-0123456789"
#define ORG "0a000000-0000-4000-8000-000000000001"
#define ORG2 "0a000000-0000-4000-8000-000000000002"
#define U1 "0b000000-0000-4000-8000-000000000001" /* member */
#define U2 "0b000000-0000-4000-8000-000000000002" /* member */
#define U3 "0b000000-0000-4000-8000-000000000003" /* member of ORG2 */
#define U4 "0b000000-0000-4000-8000-000000000004" /* member, never an event's handler */

static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "role", .type_oid = 25, .typmod = -1},
};
static relation roles_rel = {.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 3,
                             .cols = roles_cols, .replident = 'f', .version = 1, .id = 1};
static rel_column events_cols[] = {
	{.name = "id", .type_oid = 25, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "user_id", .type_oid = 2950, .typmod = -1},
	{.name = "phone", .type_oid = 25, .typmod = -1},
	{.name = "body", .type_oid = 25, .typmod = -1},
	{.name = "n", .type_oid = 20, .typmod = -1},
	{.name = "at", .type_oid = 1184, .typmod = -1},
};
static relation events_rel = {.oid = 16420, .schema = "public", .name = "events", .ncols = 7,
                              .cols = events_cols, .replident = 'f', .version = 1, .id = 2};

typedef struct fx {
	policy *pol;
	privacy *pv;
	audience *aud;
	metrics_registry *reg;
	config cfg;
	sink_env env;
	void *sink;
	bool live;
	int subs;
	uint64_t lsn;
	buf frame;
} fx;

static int fake_subscribe(void *arg, void *sub_arg, const char *uid, bool bypass, bool wildcard,
                          audience_sub **out)
{
	fx *f = arg;
	assert_false(wildcard);
	int rc = audience_subscribe(f->aud, sub_arg, uid, bypass, out);
	if (rc == 0)
		f->subs++;
	return rc;
}

static void fake_unsubscribe(void *arg, audience_sub *s)
{
	fx *f = arg;
	f->subs--;
	audience_unsubscribe(f->aud, s);
}

static bool fake_live(void *arg)
{
	return ((fx *)arg)->live;
}

/* As the pipeline routes: one deliver per subscriber, inside begin/commit. */
static int deliver_cb(void *arg, const audience_delivery *d)
{
	fx *f = arg;
	for (size_t i = 0; i < d->nsubs; i++) {
		audience_delivery one = *d;
		one.subs = &d->subs[i];
		one.nsubs = 1;
		int rc = realtime_sink_ops.deliver(f->sink, d->subs[i], &one);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static change_value tv(const char *s)
{
	return (change_value){VALUE_TEXT, (uint32_t)strlen(s), s};
}

static void publish(fx *f, change_action a, const relation *rel, change_value *new_row, change_value *old_row)
{
	change_txn txn = {.xid = 7, .commit_lsn = 0x16B3700 + ++f->lsn, .end_lsn = 0x16B3800 + f->lsn,
	                  .commit_time = INT64_C(1796205600123456)}; /* 2026-12-02T10:00:00.123456Z */
	change c = {.action = a, .lsn = 0x16B3000 + f->lsn, .txn = &txn, .rel = rel, .new_tuple = new_row,
	            .old_tuple = old_row};
	assert_int_equal(realtime_sink_ops.begin(f->sink, &txn), 0);
	assert_true(audience_publish(f->aud, &c, deliver_cb, f) >= 0);
	assert_int_equal(realtime_sink_ops.commit(f->sink, &txn), 0);
}

static void member(fx *f, const char *org, const char *user, const char *role)
{
	change_value row[3] = {tv(org), tv(user), tv(role)};
	publish(f, CHANGE_INSERT, &roles_rel, row, NULL);
}

static void event(fx *f, const char *id, const char *org, const char *body)
{
	change_value row[7] = {tv(id), tv(org), tv(U2), tv("+33612345678"), tv(body), tv("42"),
	                       tv("2026-12-02 10:00:00.5+00")};
	publish(f, CHANGE_INSERT, &events_rel, row, NULL);
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (char *p = out; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

/* An HS256 token with these claims; the caller frees it. */
static char *mint(const char *claims)
{
	const char *header = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char h[128], p[1024], s[128];
	unsigned char sig[64];
	size_t n = 0;
	b64url((const unsigned char *)header, strlen(header), h);
	b64url((const unsigned char *)claims, strlen(claims), p);
	char *t = malloc(2048);
	assert_non_null(t);
	snprintf(t, 2048, "%s.%s", h, p);
	assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, SECRET, strlen(SECRET),
	                          (const unsigned char *)t, strlen(t), sig, sizeof(sig), &n));
	b64url(sig, n, s);
	strcat(t, ".");
	strcat(t, s);
	return t;
}

static char *user_token(const char *uid, int64_t exp)
{
	char claims[256];
	snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"role\":\"authenticated\",\"exp\":%lld}", uid,
	         (long long)exp);
	return mint(claims);
}

static void fx_init_conf(fx *f, realtime_conf conf)
{
	memset(f, 0, sizeof(*f));
	char perr[POLICY_ERROR_MAX], verr[PRIVACY_ERROR_MAX], err[SINK_ERROR_MAX] = "", cerr[CONFIG_ERROR_MAX];
	assert_int_equal(policy_load_string(POLICY, "test.ini", &f->pol, perr), 0);
	assert_int_equal(privacy_create(f->pol, NULL, &f->pv, verr), 0);
	assert_int_equal(audience_create(f->pv, 0, &f->aud), 0);
	assert_non_null(f->reg = metrics_registry_create());
	assert_int_equal(config_init(&f->cfg), 0);
	assert_int_equal(config_set(&f->cfg, "auth", "jwt_secret", SECRET, cerr), 0);
	assert_int_equal(config_set(&f->cfg, "auth", "jwt_leeway", "0s", cerr), 0);
	f->live = true;
	f->env = (sink_env){.name = "live", .metrics = f->reg, .pol = f->pol, .subscribe = fake_subscribe,
	                    .unsubscribe = fake_unsubscribe, .live = fake_live, .env_arg = f, .cfg = &f->cfg};
	if (realtime_sink_ops.create(&f->env, &conf, &f->sink, err) != 0)
		fail_msg("create: %s", err);
	buf_init(&f->frame);
	member(f, ORG, U1, "member");
	member(f, ORG, U2, "member");
	member(f, ORG2, U3, "member");
	member(f, ORG, U4, "member");
}

static realtime_conf default_conf(void)
{
	return (realtime_conf){.max_connections = 100, .max_channels = 10, .max_joins_per_second = 100,
	                       .max_queue_bytes = 1 << 20, .max_queue_frames = 1000,
	                       .slow_consumer = "disconnect", .max_message_bytes = 65536,
	                       .max_record_bytes = 1 << 20};
}

static void fx_init(fx *f)
{
	fx_init_conf(f, default_conf());
}

static void fx_fini(fx *f)
{
	realtime_sink_ops.destroy(f->sink);
	assert_int_equal(f->subs, 0);
	audience_destroy(f->aud);
	privacy_destroy(f->pv);
	policy_destroy(f->pol);
	metrics_registry_destroy(f->reg);
	config_fini(&f->cfg);
	buf_fini(&f->frame);
}

static void feed(rt_conn *c, const char *text)
{
	assert_int_equal(realtime_test_feed(c, text, strlen(text)), 0);
}

/* The next queued frame parsed (NULL when none). */
static json_t *next(fx *f, rt_conn *c)
{
	int rc = realtime_test_pop(c, &f->frame);
	assert_true(rc >= 0);
	if (rc == 0)
		return NULL;
	json_error_t e;
	json_t *j = json_loadb(f->frame.data, f->frame.len, 0, &e);
	if (j == NULL)
		fail_msg("frame is not JSON: %s", f->frame.data);
	return j;
}

/* v2 frame parts */
static const char *ev(json_t *fr)
{
	return json_string_value(json_array_get(fr, 3));
}

static json_t *pl(json_t *fr)
{
	return json_array_get(fr, 4);
}

/* Joins topic on c (vsn 2) with the bindings JSON and token; returns the reply frame. */
static json_t *join(fx *f, rt_conn *c, const char *topic, const char *bindings, const char *token)
{
	char msg[8192];
	snprintf(msg, sizeof(msg),
	         "[\"1\",\"1\",\"%s\",\"phx_join\",{\"config\":{\"broadcast\":{\"self\":false},\"presence\":"
	         "{\"key\":\"\",\"enabled\":false},\"postgres_changes\":%s,\"private\":false},\"access_token\":\"%s\"}]",
	         topic, bindings, token);
	feed(c, msg);
	return next(f, c);
}

static void expect_subscribed(fx *f, rt_conn *c, const char *topic, const char *bindings, const char *token)
{
	json_t *r = join(f, c, topic, bindings, token);
	assert_non_null(r);
	assert_string_equal(ev(r), "phx_reply");
	if (strcmp(json_string_value(json_object_get(pl(r), "status")), "ok") != 0)
		fail_msg("join refused: %s", f->frame.data);
	json_decref(r);
	json_t *s = next(f, c);
	assert_non_null(s);
	assert_string_equal(ev(s), "system");
	assert_string_equal(json_string_value(json_object_get(pl(s), "message")), "Subscribed to PostgreSQL");
	assert_string_equal(json_string_value(json_object_get(pl(s), "extension")), "postgres_changes");
	json_decref(s);
}

#define ALL_EVENTS "[{\"event\":\"*\",\"schema\":\"public\",\"table\":\"events\"}]"

static void test_join_and_push(void **state)
{
	(void)state;
	fx f;
	fx_init(&f);
	char *tok = user_token(U1, time(NULL) + 600);
	rt_conn *c;
	assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &c), 0);
	/* heartbeat */
	feed(c, "[null,\"1\",\"phoenix\",\"heartbeat\",{}]");
	json_t *hb = next(&f, c);
	assert_string_equal(ev(hb), "phx_reply");
	json_decref(hb);
	json_t *r = join(&f, c, "realtime:room",
	                 "[{\"event\":\"INSERT\",\"schema\":\"public\",\"table\":\"events\",\"filter\":\"body=eq.hello\"},"
	                 "{\"event\":\"*\",\"schema\":\"public\"},{\"event\":\"DELETE\",\"schema\":\"public\",\"table\":\"events\"}]",
	                 tok);
	assert_string_equal(json_string_value(json_object_get(pl(r), "status")), "ok");
	json_t *pc = json_object_get(json_object_get(pl(r), "response"), "postgres_changes");
	assert_int_equal(json_array_size(pc), 3);
	json_int_t id0 = json_integer_value(json_object_get(json_array_get(pc, 0), "id"));
	json_int_t id1 = json_integer_value(json_object_get(json_array_get(pc, 1), "id"));
	assert_true(id0 > 0 && id1 > 0 && id0 != id1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(pc, 0), "filter")), "body=eq.hello");
	json_decref(r);
	json_t *s = next(&f, c);
	assert_string_equal(json_string_value(json_object_get(pl(s), "channel")), "room");
	json_decref(s);
	/* an insert matching both first bindings; another org's insert: nothing */
	event(&f, "e1", ORG, "hello");
	event(&f, "e2", ORG2, "hello");
	json_t *p = next(&f, c);
	assert_non_null(p);
	assert_string_equal(ev(p), "postgres_changes");
	assert_true(json_is_null(json_array_get(p, 0)) && json_is_null(json_array_get(p, 1)));
	json_t *ids = json_object_get(pl(p), "ids");
	assert_int_equal(json_array_size(ids), 2);
	assert_int_equal(json_integer_value(json_array_get(ids, 0)), id0);
	assert_int_equal(json_integer_value(json_array_get(ids, 1)), id1);
	json_t *data = json_object_get(pl(p), "data");
	assert_string_equal(json_string_value(json_object_get(data, "type")), "INSERT");
	assert_string_equal(json_string_value(json_object_get(data, "commit_timestamp")), "2026-12-02T10:00:00.123Z");
	assert_string_equal(json_string_value(json_object_get(data, "schema")), "public");
	assert_string_equal(json_string_value(json_object_get(data, "table")), "events");
	assert_null(json_object_get(data, "old_record"));
	assert_true(json_is_null(json_object_get(data, "errors")));
	json_t *rec = json_object_get(data, "record");
	assert_string_equal(json_string_value(json_object_get(rec, "id")), "e1");
	assert_int_equal(json_integer_value(json_object_get(rec, "n")), 42); /* int8: a number */
	assert_string_equal(json_string_value(json_object_get(rec, "at")), "2026-12-02T10:00:00.5+00:00");
	assert_string_equal(json_string_value(json_object_get(rec, "phone")), "********5678"); /* masked */
	json_t *cols = json_object_get(data, "columns");
	assert_int_equal(json_array_size(cols), 7);
	assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 1), "type")), "uuid");
	assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 5), "type")), "int8");
	assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 6), "type")), "timestamptz");
	json_decref(p);
	assert_null(next(&f, c));
	/* an insert the filter refuses: the wildcard binding only */
	event(&f, "e3", ORG, "bye");
	p = next(&f, c);
	ids = json_object_get(pl(p), "ids");
	assert_int_equal(json_array_size(ids), 1);
	assert_int_equal(json_integer_value(json_array_get(ids, 0)), id1);
	json_decref(p);
	/* a delete: old_record, no record key, both the wildcard and the DELETE binding */
	change_value old[7] = {tv("e3"), tv(ORG), tv(U2), tv("+33612345678"), tv("bye"), tv("1"), {VALUE_NULL, 0, NULL}};
	publish(&f, CHANGE_DELETE, &events_rel, NULL, old);
	p = next(&f, c);
	data = json_object_get(pl(p), "data");
	assert_string_equal(json_string_value(json_object_get(data, "type")), "DELETE");
	assert_null(json_object_get(data, "record"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(data, "old_record"), "id")), "e3");
	assert_true(json_is_null(json_object_get(json_object_get(data, "old_record"), "at")));
	assert_int_equal(json_array_size(json_object_get(pl(p), "ids")), 2);
	json_decref(p);
	/* an update: record and old_record */
	change_value nw[7] = {tv("e1"), tv(ORG), tv(U2), tv("+33612345678"), tv("hello again"), tv("2"), tv("2026-12-02 10:00:00+00")};
	publish(&f, CHANGE_UPDATE, &events_rel, nw, old);
	p = next(&f, c);
	data = json_object_get(pl(p), "data");
	assert_string_equal(json_string_value(json_object_get(data, "type")), "UPDATE");
	assert_non_null(json_object_get(data, "record"));
	assert_non_null(json_object_get(data, "old_record"));
	json_decref(p);
	/* leave: ok, then nothing more */
	feed(c, "[\"1\",\"9\",\"realtime:room\",\"phx_leave\",{}]");
	r = next(&f, c);
	assert_string_equal(json_string_value(json_object_get(pl(r), "status")), "ok");
	json_decref(r);
	event(&f, "e4", ORG, "hello");
	assert_null(next(&f, c));
	realtime_test_close(c);
	free(tok);
	fx_fini(&f);
}

/* One data object per audience, whatever the number of connections. */
static void test_shared_payload(void **state)
{
	(void)state;
	fx f;
	fx_init(&f);
	char *t1 = user_token(U1, time(NULL) + 600), *t2 = user_token(U4, time(NULL) + 600);
	rt_conn *c[4];
	for (int i = 0; i < 4; i++) {
		assert_int_equal(realtime_test_open(f.sink, i % 2 ? "1.0.0" : "2.0.0", "key", &c[i]), 0);
		if (i % 2 == 0)
			expect_subscribed(&f, c[i], "realtime:a", ALL_EVENTS, i < 2 ? t1 : t2);
		else
			feed(c[i], "{\"topic\":\"realtime:a\",\"event\":\"phx_join\",\"payload\":{\"config\":{\"postgres_changes\":"
			           "[{\"event\":\"*\",\"schema\":\"public\",\"table\":\"events\"}]}},\"ref\":\"1\",\"join_ref\":\"1\"}");
	}
	/* c[1] and c[3] joined with the handshake key "key", not a token: refused */
	for (int i = 1; i < 4; i += 2) {
		assert_int_equal(realtime_test_pop(c[i], &f.frame), 1);
		assert_non_null(strstr(f.frame.data, "InvalidJWTToken"));
	}
	realtime_stats st0, st1;
	realtime_sink_get_stats(f.sink, &st0);
	event(&f, "e1", ORG, "x"); /* U1 and U4: members no column of the row names, one audience */
	realtime_sink_get_stats(f.sink, &st1);
	assert_int_equal(st1.data_built - st0.data_built, 1);
	assert_int_equal(st1.messages - st0.messages, 2);
	assert_int_equal(realtime_test_queued(c[0]), 1);
	assert_int_equal(realtime_test_queued(c[2]), 1);
	for (int i = 0; i < 4; i++)
		realtime_test_close(c[i]);
	free(t1);
	free(t2);
	fx_fini(&f);
}

/* select: its own column list; 413: only small values, the error in errors. */
static void test_select_and_413(void **state)
{
	(void)state;
	realtime_conf conf = default_conf();
	conf.max_record_bytes = 200;
	fx f;
	fx_init_conf(&f, conf);
	char *tok = user_token(U1, time(NULL) + 600);
	rt_conn *c;
	assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &c), 0);
	expect_subscribed(&f, c, "realtime:s",
	                  "[{\"event\":\"INSERT\",\"schema\":\"public\",\"table\":\"events\",\"select\":[\"id\",\"body\"]},"
	                  "{\"event\":\"INSERT\",\"schema\":\"public\",\"table\":\"events\"}]",
	                  tok);
	char body[300];
	memset(body, 'b', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	event(&f, "e1", ORG, "short");
	json_t *p = next(&f, c), *q = next(&f, c);
	json_t *sel = json_object_get(pl(p), "data");
	assert_int_equal(json_object_size(json_object_get(sel, "record")), 2);
	assert_int_equal(json_array_size(json_object_get(sel, "columns")), 2);
	assert_int_equal(json_object_size(json_object_get(json_object_get(pl(q), "data"), "record")), 7);
	json_decref(p);
	json_decref(q);
	event(&f, "e2", ORG, body);
	p = next(&f, c);
	json_decref(p);
	q = next(&f, c);
	json_t *data = json_object_get(pl(q), "data");
	json_t *errors = json_object_get(data, "errors");
	assert_int_equal(json_array_size(errors), 1);
	assert_string_equal(json_string_value(json_array_get(errors, 0)), "Error 413: Payload Too Large");
	assert_null(json_object_get(json_object_get(data, "record"), "body"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(data, "record"), "id")), "e2");
	json_decref(q);
	realtime_test_close(c);
	free(tok);
	fx_fini(&f);
}

static void test_slow_consumer(void **state)
{
	(void)state;
	for (int drop = 0; drop < 2; drop++) {
		realtime_conf conf = default_conf();
		conf.max_queue_frames = 16;
		conf.slow_consumer = drop ? "drop" : "disconnect";
		fx f;
		fx_init_conf(&f, conf);
		char *t1 = user_token(U1, time(NULL) + 600), *t2 = user_token(U2, time(NULL) + 600);
		rt_conn *slow, *fast;
		assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &slow), 0);
		assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &fast), 0);
		expect_subscribed(&f, slow, "realtime:a", ALL_EVENTS, t1);
		expect_subscribed(&f, fast, "realtime:a", ALL_EVENTS, t2);
		for (int i = 0; i < 40; i++) {
			char id[16];
			snprintf(id, sizeof(id), "e%d", i);
			event(&f, id, ORG, "x");
			while (realtime_test_pop(fast, &f.frame) == 1) /* the fast one reads as it goes */
				assert_non_null(strstr(f.frame.data, id));
		}
		realtime_stats st;
		realtime_sink_get_stats(f.sink, &st);
		if (drop) {
			assert_false(realtime_test_closing(slow));
			assert_int_equal(realtime_test_queued(slow), 16);
			assert_int_equal(st.dropped, 24);
		} else {
			assert_true(realtime_test_closing(slow));
			assert_int_equal(realtime_test_queued(slow), 1);
			assert_int_equal(realtime_test_pop(slow, &f.frame), 1);
			assert_non_null(strstr(f.frame.data, "SlowConsumer"));
			assert_int_equal(st.slow_disconnects, 1);
			assert_int_equal(realtime_test_feed(slow, "x", 1), -EPIPE);
		}
		realtime_test_close(slow);
		realtime_test_close(fast);
		free(t1);
		free(t2);
		fx_fini(&f);
	}
}

static void test_refresh_and_expiry(void **state)
{
	(void)state;
	fx f;
	fx_init(&f);
	int64_t now = time(NULL);
	char *t1 = user_token(U1, now + 600), *t3 = user_token(U3, now + 30);
	rt_conn *c;
	assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &c), 0);
	expect_subscribed(&f, c, "realtime:a", ALL_EVENTS, t1);
	/* refreshed with U3's token: at once U3's view (ORG2), not U1's */
	char msg[2048];
	snprintf(msg, sizeof(msg), "[\"1\",\"3\",\"realtime:a\",\"access_token\",{\"access_token\":\"%s\"}]", t3);
	feed(c, msg);
	assert_null(next(&f, c)); /* no reply */
	event(&f, "e1", ORG, "x");
	assert_null(next(&f, c));
	event(&f, "e2", ORG2, "x");
	json_t *p = next(&f, c);
	assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(pl(p), "data"), "record"), "id")), "e2");
	json_decref(p);
	/* U3's token expires: the system error, then phx_close, then nothing */
	realtime_test_tick(f.sink, now + 35);
	p = next(&f, c);
	assert_string_equal(ev(p), "system");
	assert_string_equal(json_string_value(json_object_get(pl(p), "status")), "error");
	assert_non_null(strstr(json_string_value(json_object_get(pl(p), "message")), "Token has expired 5 seconds ago"));
	json_decref(p);
	p = next(&f, c);
	assert_string_equal(ev(p), "phx_close");
	json_decref(p);
	event(&f, "e3", ORG2, "x");
	assert_null(next(&f, c));
	/* an expired token at join: refused in the server's words */
	char *old = user_token(U1, now - 100);
	json_t *r = join(&f, c, "realtime:b", ALL_EVENTS, old);
	assert_string_equal(json_string_value(json_object_get(pl(r), "status")), "error");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(pl(r), "response"), "reason")),
	                       "InvalidJWTToken: Token has expired"));
	json_decref(r);
	realtime_test_close(c);
	free(t1);
	free(t3);
	free(old);
	fx_fini(&f);
}

/* Until the pipeline is live a join is held: no reply, no subscription. */
static void test_held_join(void **state)
{
	(void)state;
	fx f;
	fx_init(&f);
	f.live = false;
	char *tok = user_token(U1, time(NULL) + 600);
	rt_conn *c;
	assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &c), 0);
	assert_null(join(&f, c, "realtime:a", ALL_EVENTS, tok));
	int subs = f.subs;
	realtime_test_tick(f.sink, time(NULL));
	assert_null(next(&f, c));
	f.live = true;
	realtime_test_tick(f.sink, time(NULL));
	assert_int_equal(f.subs, subs + 1);
	json_t *r = next(&f, c);
	assert_string_equal(ev(r), "phx_reply");
	json_decref(r);
	r = next(&f, c);
	assert_string_equal(ev(r), "system");
	json_decref(r);
	realtime_test_close(c);
	free(tok);
	fx_fini(&f);
}

static void test_hostile(void **state)
{
	(void)state;
	realtime_conf conf = default_conf();
	conf.max_channels = 2;
	conf.max_joins_per_second = 5;
	fx f;
	fx_init_conf(&f, conf);
	char *tok = user_token(U1, time(NULL) + 600);
	rt_conn *c;
	assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &c), 0);
	static const char *garbage[] = {"", "{", "[1]", "[null,null,\"t\",\"e\",5]", "\xff\xfe", "{\"topic\":1}"};
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		feed(c, garbage[i]);
		json_t *e = next(&f, c);
		assert_string_equal(ev(e), "system");
		assert_string_equal(json_string_value(json_object_get(pl(e), "status")), "error");
		json_decref(e);
	}
	feed(c, "[null,\"2\",\"realtime:none\",\"broadcast\",{}]");
	json_t *e = next(&f, c);
	assert_string_equal(json_string_value(json_object_get(json_object_get(pl(e), "response"), "reason")), "unmatched topic");
	json_decref(e);
	feed(c, "[null,\"2\",\"elsewhere\",\"phx_join\",{}]");
	e = next(&f, c);
	assert_string_equal(json_string_value(json_object_get(pl(e), "status")), "error");
	json_decref(e);
	expect_subscribed(&f, c, "realtime:a", ALL_EVENTS, tok);
	feed(c, "[\"1\",\"2\",\"realtime:a\",\"broadcast\",{\"event\":\"x\",\"payload\":{}}]");
	e = next(&f, c);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(pl(e), "response"), "reason")), "not supported"));
	json_decref(e);
	/* realtime-js's binary broadcast push (vsn 2.0.0): an error reply to its ref, not a timeout */
	const unsigned char push[] = {3, 1, 1, 10, 1, 0, 1, '1', '7', 'r', 'e', 'a', 'l', 't', 'i', 'm', 'e', ':',
	                              'a', 'e', '{', '}'};
	assert_int_equal(realtime_test_feed_binary(c, push, sizeof(push)), 0);
	e = next(&f, c);
	assert_string_equal(ev(e), "phx_reply");
	assert_string_equal(json_string_value(json_array_get(e, 1)), "7");
	assert_string_equal(json_string_value(json_object_get(pl(e), "status")), "error");
	json_decref(e);
	feed(c, "[\"1\",\"2\",\"realtime:a\",\"nonsense\",{}]");
	e = next(&f, c);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(pl(e), "response"), "reason")), "unknown event"));
	json_decref(e);
	/* a bad filter, then too many channels, then too many joins in a second */
	e = join(&f, c, "realtime:b", "[{\"event\":\"*\",\"schema\":\"public\",\"table\":\"events\",\"filter\":\"id=zz.1\"}]", tok);
	assert_string_equal(json_string_value(json_object_get(pl(e), "status")), "error");
	json_decref(e);
	expect_subscribed(&f, c, "realtime:c", ALL_EVENTS, tok);
	e = join(&f, c, "realtime:d", ALL_EVENTS, tok);
	assert_non_null(strstr(f.frame.data, "ChannelRateLimitReached"));
	json_decref(e);
	/* a flood of joins: 20 within at most two one-second windows, 5 allowed per window */
	int limited = 0;
	for (int i = 0; i < 20; i++) {
		char topic[32];
		snprintf(topic, sizeof(topic), "realtime:flood%d", i);
		e = join(&f, c, topic, ALL_EVENTS, tok);
		limited += strstr(f.frame.data, "Too many joins per second") != NULL;
		json_decref(e);
	}
	assert_true(limited >= 10);
	/* the bindings still deliver */
	event(&f, "e1", ORG, "x");
	assert_int_equal(realtime_test_queued(c), 2);
	realtime_test_close(c);
	free(tok);
	fx_fini(&f);
}

/* auth.jwt_secret is reloadable: the sink verifies with the configuration as it is now. */
static void test_secret_reload(void **state)
{
	(void)state;
	fx f;
	fx_init(&f);
	char *tok = user_token(U1, time(NULL) + 600);
	char cerr[CONFIG_ERROR_MAX];
	rt_conn *c;
	assert_int_equal(realtime_test_open(f.sink, "2.0.0", "key", &c), 0);
	assert_int_equal(config_set(&f.cfg, "auth", "jwt_secret", "a-rotated-secret-with-enough-length-for-hs256-0123", cerr), 0);
	json_t *r = join(&f, c, "realtime:a", ALL_EVENTS, tok);
	assert_string_equal(json_string_value(json_object_get(pl(r), "status")), "error");
	json_decref(r);
	assert_int_equal(config_set(&f.cfg, "auth", "jwt_secret", SECRET, cerr), 0);
	expect_subscribed(&f, c, "realtime:a", ALL_EVENTS, tok);
	realtime_test_close(c);
	free(tok);
	fx_fini(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_join_and_push),
		cmocka_unit_test(test_shared_payload),
		cmocka_unit_test(test_select_and_413),
		cmocka_unit_test(test_slow_consumer),
		cmocka_unit_test(test_refresh_and_expiry),
		cmocka_unit_test(test_held_join),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_secret_reload),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
