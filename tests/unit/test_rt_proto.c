/*
 * test_rt_proto — unit tests for the Realtime wire format (plugins/sinks/rt_proto.h): vsn
 * parsing, client frames in both serializers (and the hostile ones), phx_join bindings, the
 * join response in request order with ids, and server frames (replies, system, pushes around
 * a shared payload) checked by parsing them back with jansson.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "rt_proto.h"

static json_t *parse(const buf *b)
{
	json_error_t e;
	json_t *j = json_loadb(b->data, b->len, 0, &e);
	if (j == NULL)
		fail_msg("not JSON: %s (%s)", b->data, e.text);
	return j;
}

static void test_vsn(void **state)
{
	(void)state;
	rt_vsn v = 0;
	assert_int_equal(rt_vsn_parse(NULL, &v), 0);
	assert_int_equal(v, RT_VSN_1);
	assert_int_equal(rt_vsn_parse("", &v), 0);
	assert_int_equal(v, RT_VSN_1);
	assert_int_equal(rt_vsn_parse("2.0.0", &v), 0);
	assert_int_equal(v, RT_VSN_2);
	assert_int_equal(rt_vsn_parse("1.0.0", &v), 0);
	assert_int_equal(v, RT_VSN_1);
	assert_int_equal(rt_vsn_parse("3.0.0", &v), -EINVAL);
	assert_int_equal(rt_vsn_parse("2", &v), -EINVAL);
}

static void test_parse_v2(void **state)
{
	(void)state;
	rt_msg m = {0};
	char err[RT_PROTO_ERROR_MAX];
	const char *f = "[\"3\",\"7\",\"realtime:room\",\"phx_join\",{\"config\":{}}]";
	assert_int_equal(rt_msg_parse(RT_VSN_2, f, strlen(f), &m, err), 0);
	assert_string_equal(m.topic, "realtime:room");
	assert_string_equal(m.event, "phx_join");
	assert_string_equal(json_string_value(m.join_ref), "3");
	assert_string_equal(json_string_value(m.ref), "7");
	assert_true(json_is_object(json_object_get(m.payload, "config")));
	rt_msg_fini(&m);
	/* null refs and a null payload */
	f = "[null,null,\"phoenix\",\"heartbeat\",null]";
	assert_int_equal(rt_msg_parse(RT_VSN_2, f, strlen(f), &m, err), 0);
	assert_null(m.join_ref);
	assert_null(m.ref);
	assert_true(json_is_object(m.payload));
	rt_msg_fini(&m);
}

static void test_parse_v1(void **state)
{
	(void)state;
	rt_msg m = {0};
	char err[RT_PROTO_ERROR_MAX];
	const char *f = "{\"topic\":\"phoenix\",\"event\":\"heartbeat\",\"payload\":{},\"ref\":\"12\"}";
	assert_int_equal(rt_msg_parse(RT_VSN_1, f, strlen(f), &m, err), 0);
	assert_string_equal(m.topic, "phoenix");
	assert_null(m.join_ref);
	assert_string_equal(json_string_value(m.ref), "12");
	buf b;
	buf_init(&b);
	assert_int_equal(rt_reply_stateless(&b, RT_VSN_1, &m), 1);
	json_t *r = parse(&b);
	assert_string_equal(json_string_value(json_object_get(r, "event")), "phx_reply");
	assert_string_equal(json_string_value(json_object_get(r, "topic")), "phoenix");
	assert_string_equal(json_string_value(json_object_get(r, "ref")), "12");
	assert_true(json_is_null(json_object_get(r, "join_ref")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(r, "payload"), "status")), "ok");
	json_decref(r);
	buf_fini(&b);
	rt_msg_fini(&m);
}

/* Every way a frame can be wrong is -EINVAL with a reason, never a crash. */
static void test_parse_hostile(void **state)
{
	(void)state;
	static const struct {
		rt_vsn vsn;
		const char *text;
	} bad[] = {
		{RT_VSN_2, ""},
		{RT_VSN_2, "{"},
		{RT_VSN_2, "[1,2,3]"},
		{RT_VSN_2, "[null,null,1,\"e\",{}]"},
		{RT_VSN_2, "[null,null,\"t\",{},{}]"},
		{RT_VSN_2, "[null,null,\"t\",\"e\",[]]"},
		{RT_VSN_2, "[null,null,\"t\",\"e\",\"payload\"]"},
		{RT_VSN_2, "[{},null,\"t\",\"e\",{}]"},
		{RT_VSN_2, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{}}"},
		{RT_VSN_1, "[null,null,\"t\",\"e\",{}]"},
		{RT_VSN_1, "{\"topic\":\"t\"}"},
		{RT_VSN_1, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"topic\":\"u\"}"},
		{RT_VSN_1, "{\"topic\":\"t\\u0000x\",\"event\":\"e\"}"},
		{RT_VSN_1, "null"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rt_msg m = {0};
		char err[RT_PROTO_ERROR_MAX] = "";
		if (rt_msg_parse(bad[i].vsn, bad[i].text, strlen(bad[i].text), &m, err) != -EINVAL)
			fail_msg("accepted: %s", bad[i].text);
		assert_true(strncmp(err, "malformed message", 17) == 0 || strstr(err, "ref") != NULL);
		assert_null(m.topic);
	}
	/* a topic longer than RT_TOPIC_MAX */
	char big[RT_TOPIC_MAX + 64];
	memset(big, 'a', sizeof(big));
	char frame[sizeof(big) + 64];
	int n = snprintf(frame, sizeof(frame), "[null,null,\"%.*s\",\"e\",{}]", (int)sizeof(big) - 1, big);
	rt_msg m = {0};
	char err[RT_PROTO_ERROR_MAX];
	assert_int_equal(rt_msg_parse(RT_VSN_2, frame, (size_t)n, &m, err), -EINVAL);
}

static void test_join(void **state)
{
	(void)state;
	json_error_t e;
	json_t *p = json_loads("{\"config\":{\"broadcast\":{\"self\":false},\"presence\":{\"key\":\"\",\"enabled\":true},"
	                       "\"postgres_changes\":[{\"event\":\"INSERT\",\"schema\":\"public\",\"table\":\"events\","
	                       "\"filter\":\"org_id=eq.1\"},{\"event\":\"*\",\"schema\":\"public\"},"
	                       "{\"event\":\"delete\",\"schema\":\"public\",\"table\":\"contacts\",\"select\":[\"id\",\"name\"]}],"
	                       "\"private\":true},\"access_token\":\"tok\"}",
	                       0, &e);
	assert_non_null(p);
	rt_join j = {0};
	char reason[RT_PROTO_ERROR_MAX];
	assert_int_equal(rt_join_parse(p, &j, reason), 0);
	assert_int_equal(j.n, 3);
	assert_string_equal(j.access_token, "tok");
	assert_true(j.presence);
	assert_true(j.is_private);
	assert_int_equal(j.bindings[0].events, RT_EV_INSERT);
	assert_string_equal(j.bindings[0].filter, "org_id=eq.1");
	assert_int_equal(j.bindings[1].events, RT_EV_INSERT | RT_EV_UPDATE | RT_EV_DELETE);
	assert_null(j.bindings[1].table);
	assert_int_equal(j.bindings[2].events, RT_EV_DELETE);
	assert_int_equal(j.bindings[2].nselect, 2);
	assert_string_equal(j.bindings[2].select[1], "name");
	/* the response: each entry as sent plus its id, in request order */
	int64_t ids[3] = {11, 12, 13};
	buf b;
	buf_init(&b);
	assert_int_equal(rt_join_response(&b, &j, ids), 0);
	json_t *r = parse(&b);
	json_t *pc = json_object_get(r, "postgres_changes");
	assert_int_equal(json_array_size(pc), 3);
	for (size_t i = 0; i < 3; i++) {
		json_t *entry = json_array_get(pc, i);
		assert_int_equal(json_integer_value(json_object_get(entry, "id")), ids[i]);
		json_t *sent = json_deep_copy(j.bindings[i].params);
		json_object_set_new(sent, "id", json_integer(ids[i]));
		assert_true(json_equal(sent, entry));
		json_decref(sent);
	}
	assert_string_equal(json_string_value(json_object_get(json_array_get(pc, 2), "event")), "delete");
	json_decref(r);
	buf_fini(&b);
	rt_join_fini(&j);
	json_decref(p);
}

/* A joined channel keeps only the bindings' strings: the payload is released, the strings stay. */
static void test_join_compact(void **state)
{
	(void)state;
	json_error_t e;
	json_t *p = json_loads("{\"config\":{\"postgres_changes\":[{\"event\":\"INSERT\",\"schema\":\"public\","
	                       "\"table\":\"events\",\"filter\":\"org_id=eq.1\"},{\"event\":\"*\"},"
	                       "{\"event\":\"delete\",\"table\":\"contacts\",\"select\":[\"id\",\"name\"]}]},"
	                       "\"access_token\":\"tok\"}",
	                       0, &e);
	assert_non_null(p);
	rt_join j = {0};
	char reason[RT_PROTO_ERROR_MAX];
	assert_int_equal(rt_join_parse(p, &j, reason), 0);
	assert_int_equal(p->refcount, 2);
	assert_int_equal(rt_join_compact(&j), 0);
	assert_int_equal(p->refcount, 1); /* the payload is the caller's alone */
	json_object_clear(p); /* what the join borrowed is gone */
	json_decref(p);
	assert_int_equal(j.n, 3);
	assert_null(j.payload);
	assert_null(j.access_token);
	assert_null(j.bindings[0].params);
	assert_string_equal(j.bindings[0].event, "INSERT");
	assert_string_equal(j.bindings[0].schema, "public");
	assert_string_equal(j.bindings[0].table, "events");
	assert_string_equal(j.bindings[0].filter, "org_id=eq.1");
	assert_int_equal(j.bindings[0].events, RT_EV_INSERT);
	assert_string_equal(j.bindings[1].event, "*");
	assert_null(j.bindings[1].schema);
	assert_null(j.bindings[1].table);
	assert_null(j.bindings[1].filter);
	assert_string_equal(j.bindings[2].table, "contacts");
	assert_int_equal(j.bindings[2].nselect, 2);
	assert_string_equal(j.bindings[2].select[0], "id");
	assert_string_equal(j.bindings[2].select[1], "name");
	assert_int_equal(rt_join_compact(&j), 0); /* again: nothing to do */
	assert_string_equal(j.bindings[2].select[1], "name");
	rt_join_fini(&j);
}

static void test_join_refused(void **state)
{
	(void)state;
	static const char *bad[] = {
		"{\"config\":[]}",
		"{\"config\":{\"postgres_changes\":{}}}",
		"{\"config\":{\"postgres_changes\":[1]}}",
		"{\"config\":{\"postgres_changes\":[{\"event\":\"TRUNCATE\",\"schema\":\"public\"}]}}",
		"{\"config\":{\"postgres_changes\":[{\"event\":\"*\",\"schema\":1}]}}",
		"{\"config\":{\"postgres_changes\":[{\"event\":\"*\",\"schema\":\"public\",\"select\":[]}]}}",
		"{\"config\":{\"postgres_changes\":[{\"event\":\"*\",\"schema\":\"public\",\"select\":[1]}]}}",
		"{\"access_token\":42}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_error_t e;
		json_t *p = json_loads(bad[i], 0, &e);
		assert_non_null(p);
		rt_join j = {0};
		char reason[RT_PROTO_ERROR_MAX] = "";
		if (rt_join_parse(p, &j, reason) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		assert_true(reason[0] != '\0');
		json_decref(p);
	}
	/* too many bindings */
	json_t *p = json_pack("{s:{s:[]}}", "config", "postgres_changes");
	json_t *list = json_object_get(json_object_get(p, "config"), "postgres_changes");
	for (int i = 0; i <= RT_JOIN_MAX_BINDINGS; i++)
		json_array_append_new(list, json_pack("{s:s,s:s}", "event", "*", "schema", "public"));
	rt_join j = {0};
	char reason[RT_PROTO_ERROR_MAX];
	assert_int_equal(rt_join_parse(p, &j, reason), -EINVAL);
	assert_non_null(strstr(reason, "too many"));
	json_decref(p);
	/* no config at all: a join without bindings */
	p = json_object();
	assert_int_equal(rt_join_parse(p, &j, reason), 0);
	assert_int_equal(j.n, 0);
	rt_join_fini(&j);
	json_decref(p);
}

static void test_frames(void **state)
{
	(void)state;
	buf b;
	buf_init(&b);
	json_t *jr = json_string("4"), *ref = json_string("5");
	/* a push around a shared payload, v2 */
	rt_head h = {RT_VSN_2, NULL, NULL, "realtime:x\"y", "postgres_changes"};
	assert_int_equal(rt_frame_write(&b, &h, "{\"a\":1}", 7), 0);
	assert_string_equal(b.data, "[null,null,\"realtime:x\\\"y\",\"postgres_changes\",{\"a\":1}]");
	/* v1 */
	buf_clear(&b);
	rt_head h1 = {RT_VSN_1, jr, ref, "realtime:x", "phx_close"};
	assert_int_equal(rt_frame_write(&b, &h1, "{}", 2), 0);
	json_t *r = parse(&b);
	assert_string_equal(json_string_value(json_object_get(r, "topic")), "realtime:x");
	assert_string_equal(json_string_value(json_object_get(r, "event")), "phx_close");
	assert_string_equal(json_string_value(json_object_get(r, "join_ref")), "4");
	assert_string_equal(json_string_value(json_object_get(r, "ref")), "5");
	assert_true(json_is_object(json_object_get(r, "payload")));
	json_decref(r);
	/* a system message with its channel */
	buf_clear(&b);
	assert_int_equal(rt_system_write(&b, RT_VSN_2, "realtime:room", "postgres_changes", "ok",
	                                 "Subscribed to PostgreSQL", "room"), 0);
	assert_string_equal(b.data, "[null,null,\"realtime:room\",\"system\",{\"extension\":\"postgres_changes\","
	                            "\"status\":\"ok\",\"message\":\"Subscribed to PostgreSQL\",\"channel\":\"room\"}]");
	/* an error reply echoes the refs */
	rt_msg m = {.join_ref = jr, .ref = ref, .topic = "realtime:room", .event = "phx_join"};
	buf_clear(&b);
	assert_int_equal(rt_reply_error(&b, RT_VSN_2, &m, "InvalidJWTToken: \"x\""), 0);
	assert_string_equal(b.data, "[\"4\",\"5\",\"realtime:room\",\"phx_reply\",{\"status\":\"error\","
	                            "\"response\":{\"reason\":\"InvalidJWTToken: \\\"x\\\"\"}}]");
	/* not a stateless message */
	buf_clear(&b);
	assert_int_equal(rt_reply_stateless(&b, RT_VSN_2, &m), 0);
	assert_int_equal(b.len, 0);
	json_decref(jr);
	json_decref(ref);
	buf_fini(&b);
}

static void test_binary(void **state)
{
	(void)state;
	/* kind 3, join_ref "1", ref "2", topic "realtime:a", event "e", no metadata, JSON encoding */
	const unsigned char ok[] = {3, 1, 1, 10, 1, 0, 1, '1', '2', 'r', 'e', 'a', 'l', 't', 'i', 'm', 'e', ':',
	                            'a', 'e', '{', '}'};
	rt_msg m = {0};
	char err[RT_PROTO_ERROR_MAX];
	assert_int_equal(rt_msg_parse_binary(ok, sizeof(ok), &m, err), 0);
	assert_string_equal(m.topic, "realtime:a");
	assert_string_equal(m.event, "broadcast");
	assert_string_equal(json_string_value(m.join_ref), "1");
	assert_string_equal(json_string_value(m.ref), "2");
	rt_msg_fini(&m);
	const unsigned char kind4[] = {4, 0, 0, 1, 0, 0, 1, 't'};
	assert_int_equal(rt_msg_parse_binary(kind4, sizeof(kind4), &m, err), -EINVAL);
	assert_int_equal(rt_msg_parse_binary(ok, 12, &m, err), -EINVAL); /* truncated */
	const unsigned char bad_utf8[] = {3, 0, 0, 2, 0, 0, 1, 0xff, 0xfe};
	assert_int_equal(rt_msg_parse_binary(bad_utf8, sizeof(bad_utf8), &m, err), -EINVAL);
	const unsigned char nul_ref[] = {3, 0, 2, 1, 0, 0, 1, 'a', 0, 't'}; /* found by fuzz_rt_proto */
	assert_int_equal(rt_msg_parse_binary(nul_ref, sizeof(nul_ref), &m, err), -EINVAL);
	assert_null(m.topic);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vsn),
		cmocka_unit_test(test_parse_v2),
		cmocka_unit_test(test_parse_v1),
		cmocka_unit_test(test_parse_hostile),
		cmocka_unit_test(test_join),
		cmocka_unit_test(test_join_compact),
		cmocka_unit_test(test_join_refused),
		cmocka_unit_test(test_frames),
		cmocka_unit_test(test_binary),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
