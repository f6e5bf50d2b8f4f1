/*
 * fuzz_rt_proto — libFuzzer target for the realtime sink's message handling
 * (plugins/sinks/rt_proto.c and the client-message half of plugins/sinks/realtime.c).
 *
 * Input: a first byte choosing the serializer (bit 0 clear: vsn 2.0.0, set: 1.0.0) and the frame
 * type (bit 1 set: every message is a binary frame, realtime-js's broadcast push), then client
 * messages separated by '\n', each handed to one socketless connection of a realtime sink in
 * order (realtime_test_feed: parse, then heartbeat, phx_join with its bindings, filters and
 * token, phx_leave, access_token, unknown events and topics); a message is also parsed alone
 * with rt_msg_parse and, when it parses, its payload read as a join (rt_join_parse and
 * rt_join_response). Every frame the sink queues in reply is taken out and must be JSON of the
 * serializer's shape; the periodic checks run after every message.
 *
 * Checks: no crash, no sanitizer report, no leak, every reply is valid JSON (an array of 5 for
 * vsn 2.0.0, an object for 1.0.0).
 *
 * Seeds: tests/fuzz/corpus/rt_proto/. Run e.g.
 *   fuzz_rt_proto -max_total_time=60 -max_len=4096 /tmp/corpus tests/fuzz/corpus/rt_proto
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "log.h"
#include "realtime.h"
#include "rt_proto.h"

static void check_frame(const buf *b, rt_vsn vsn)
{
	json_error_t e;
	json_t *j = json_loadb(b->data, b->len, 0, &e);
	if (j == NULL || (vsn == RT_VSN_2 ? !(json_is_array(j) && json_array_size(j) == 5) : !json_is_object(j))) {
		fprintf(stderr, "bad reply frame: %.*s\n", (int)b->len, b->data);
		abort();
	}
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool quiet;
	if (!quiet) {
		(void)log_configure("error", "text");
		quiet = true;
	}
	if (size < 1)
		return 0;
	rt_vsn vsn = (data[0] & 1) ? RT_VSN_1 : RT_VSN_2;
	config cfg;
	char err[CONFIG_ERROR_MAX];
	if (config_init(&cfg) < 0 ||
	    config_set(&cfg, "auth", "jwt_secret", "fuzz-secret-with-enough-length-for-hs256-0123456789", err) < 0)
		abort();
	sink_env env = {.name = "fuzz", .cfg = &cfg};
	realtime_conf conf = {.max_connections = 10, .max_channels = 8, .max_joins_per_second = 1000,
	                      .max_queue_bytes = 1 << 20, .max_queue_frames = 64, .slow_consumer = "disconnect",
	                      .max_message_bytes = 1 << 16, .max_record_bytes = 1 << 20};
	void *sink = NULL;
	char serr[SINK_ERROR_MAX] = "";
	if (realtime_sink_ops.create(&env, &conf, &sink, serr) < 0)
		abort();
	rt_conn *c = NULL;
	if (realtime_test_open(sink, vsn == RT_VSN_2 ? "2.0.0" : "1.0.0", "key", &c) < 0)
		abort();
	buf frame;
	buf_init(&frame);
	const char *p = (const char *)data + 1, *end = (const char *)data + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char *msg = malloc(len ? len : 1); /* exactly sized: ASan sees reads past the message */
		if (msg == NULL)
			abort();
		memcpy(msg, p, len);
		rt_msg m = {0};
		char perr[RT_PROTO_ERROR_MAX];
		if (rt_msg_parse(vsn, msg, len, &m, perr) == 0) {
			rt_join j = {0};
			char reason[RT_PROTO_ERROR_MAX];
			if (rt_join_parse(m.payload, &j, reason) == 0) {
				int64_t ids[RT_JOIN_MAX_BINDINGS];
				for (size_t i = 0; i < j.n; i++)
					ids[i] = (int64_t)i + 1;
				buf b;
				buf_init(&b);
				if (rt_join_response(&b, &j, ids) == 0 && rt_reply_write(&b, vsn, &m, "ok", NULL) < 0)
					abort();
				buf_fini(&b);
				rt_join_fini(&j);
			}
			rt_msg_fini(&m);
		}
		if (data[0] & 2)
			(void)realtime_test_feed_binary(c, msg, len);
		else
			(void)realtime_test_feed(c, msg, len);
		free(msg);
		realtime_test_tick(sink, 2000000000);
		while (realtime_test_pop(c, &frame) == 1)
			check_frame(&frame, vsn);
		p += len + 1;
	}
	buf_fini(&frame);
	realtime_test_close(c);
	realtime_sink_ops.destroy(sink);
	config_fini(&cfg);
	return 0;
}
