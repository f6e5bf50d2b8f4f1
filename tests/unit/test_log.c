/* Unit tests for log: the text and JSON record formats (stderr captured), escaping, levels,
 * log_configure. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef struct capture {
	int saved;
	int fd;
	char path[512];
} capture;

/* Sends stderr to a temporary file until capture_end. */
static void capture_begin(capture *c)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(c->path, sizeof(c->path), "%s/walcast-test-log.XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
	c->fd = mkstemp(c->path);
	assert_true(c->fd >= 0);
	fflush(stderr);
	c->saved = dup(2);
	assert_true(c->saved >= 0);
	assert_int_equal(dup2(c->fd, 2), 2);
}

/* Restores stderr; returns what was written (caller frees). */
static char *capture_end(capture *c)
{
	fflush(stderr);
	assert_int_equal(dup2(c->saved, 2), 2);
	close(c->saved);
	off_t n = lseek(c->fd, 0, SEEK_END);
	assert_true(n >= 0);
	char *out = calloc(1, (size_t)n + 1);
	assert_non_null(out);
	assert_int_equal(pread(c->fd, out, (size_t)n, 0), n);
	close(c->fd);
	unlink(c->path);
	return out;
}

static int setup(void **state)
{
	(void)state;
	log_level_set(LOG_INFO);
	log_format_set(LOG_FORMAT_TEXT);
	return 0;
}

static void test_text(void **state)
{
	capture c;
	capture_begin(&c);
	log_info("source.streaming", "slot=%s: streaming from %s", "walcast", "0/16B3748");
	log_debug("source.debug", "not written at info");
	log_error("pg.error", "conn=replication: ERROR:  bad\nDETAIL:  more\n");
	char *out = capture_end(&c);
	char *second = strchr(out, '\n');
	assert_non_null(second);
	/* 2026-11-22T10:00:00.123Z INFO source.streaming slot=walcast: ... */
	assert_int_equal(strlen("2026-11-22T10:00:00.123Z"), (size_t)(strchr(out, ' ') - out));
	assert_true(out[4] == '-' && out[10] == 'T' && out[23] == 'Z');
	assert_non_null(strstr(out, "Z INFO source.streaming slot=walcast: streaming from 0/16B3748\n"));
	assert_null(strstr(out, "source.debug"));
	/* one record, one line: the newlines of a server message are folded, the last dropped */
	assert_non_null(strstr(second + 1, "Z ERROR pg.error conn=replication: ERROR:  bad DETAIL:  more\n"));
	assert_null(strchr(strchr(second + 1, '\n') + 1, '\n'));
	free(out);
}

static void test_json(void **state)
{
	log_format_set(LOG_FORMAT_JSON);
	const char nasty[] = "quote\" backslash\\ newline\n tab\t ctl\x01 bad\xff utf8 \xc3\xa9";
	capture c;
	capture_begin(&c);
	log_warn("sink.stalled", "sink=audit: %s", nasty);
	log_info("source.streaming", "slot=walcast: streaming\n");
	log_debug("source.debug", "not written at info");
	char *out = capture_end(&c);
	/* every line is one JSON object */
	int lines = 0;
	char *save = NULL;
	for (char *l = strtok_r(out, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save), lines++) {
		json_error_t jerr;
		json_t *o = json_loads(l, 0, &jerr);
		if (o == NULL)
			fail_msg("not JSON: %s (%s)", l, jerr.text);
		assert_int_equal(json_object_size(o), 4);
		const char *ts = json_string_value(json_object_get(o, "ts"));
		assert_non_null(ts);
		assert_int_equal(strlen(ts), 24);
		assert_true(ts[10] == 'T' && ts[23] == 'Z');
		const char *level = json_string_value(json_object_get(o, "level"));
		const char *id = json_string_value(json_object_get(o, "id"));
		const char *msg = json_string_value(json_object_get(o, "msg"));
		assert_non_null(level);
		assert_non_null(id);
		assert_non_null(msg);
		if (lines == 0) {
			assert_string_equal(level, "warn");
			assert_string_equal(id, "sink.stalled");
			/* the message survives escaping exactly, the invalid byte as U+FFFD */
			assert_string_equal(msg, "sink=audit: quote\" backslash\\ newline\n tab\t ctl\x01 bad\xef\xbf\xbd utf8 \xc3\xa9");
		} else {
			assert_string_equal(level, "info");
			assert_string_equal(id, "source.streaming");
			assert_string_equal(msg, "slot=walcast: streaming"); /* trailing newline dropped */
		}
		json_decref(o);
	}
	assert_int_equal(lines, 2);
	free(out);
}

static void test_configure(void **state)
{
	assert_int_equal(log_configure("warn", "json"), 0);
	capture c;
	capture_begin(&c);
	log_info("a.info", "hidden");
	log_warn("a.warn", "shown");
	char *out = capture_end(&c);
	assert_null(strstr(out, "a.info"));
	assert_non_null(strstr(out, "\"level\":\"warn\",\"id\":\"a.warn\",\"msg\":\"shown\"}\n"));
	free(out);
	/* a bad value changes nothing (neither half) */
	assert_int_equal(log_configure("debug", "xml"), -EINVAL);
	assert_int_equal(log_configure("loud", "text"), -EINVAL);
	capture_begin(&c);
	log_info("b.info", "hidden");
	log_warn("b.warn", "still json");
	out = capture_end(&c);
	assert_null(strstr(out, "b.info"));
	assert_non_null(strstr(out, "{\"ts\":"));
	free(out);
	/* back to text at debug, as a reload does */
	assert_int_equal(log_configure("debug", "text"), 0);
	capture_begin(&c);
	log_debug("c.debug", "x=1: shown");
	out = capture_end(&c);
	assert_non_null(strstr(out, "Z DEBUG c.debug x=1: shown\n"));
	free(out);
	log_format parsed;
	assert_int_equal(log_format_parse("json", &parsed), 0);
	assert_int_equal(parsed, LOG_FORMAT_JSON);
	assert_int_equal(log_format_parse("JSON ", &parsed), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_text, setup),
		cmocka_unit_test_setup(test_json, setup),
		cmocka_unit_test_setup(test_configure, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
