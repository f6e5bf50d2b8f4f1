/* log — timestamped, identified log lines (text or JSON) on stderr. */
#include "log.h"

#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Written at startup and on a reload, by the loop thread only (see log.h). */
static log_level min_level = LOG_INFO;
static log_format out_format = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

void log_format_set(log_format format)
{
	out_format = format;
}

int log_format_parse(const char *s, log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_FORMAT_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return -EINVAL;
	return 0;
}

int log_configure(const char *level, const char *format)
{
	log_level l;
	log_format f;
	if (log_level_parse(level, &l) < 0 || log_format_parse(format, &f) < 0)
		return -EINVAL;
	min_level = l;
	out_format = f;
	return 0;
}

void log_level_set(log_level level)
{
	min_level = level;
}

int log_level_parse(const char *s, log_level *out)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, names[i]) == 0) {
			*out = (log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_pg_notice(void *arg, const char *message)
{
	const char *conn = arg != NULL ? arg : "postgres";
	/* libpq formats "SEVERITY:  primary text\n[DETAIL:  ...\n]" */
	size_t sev_len = strcspn(message, ":\n");
	const char *text = message;
	log_level level = LOG_INFO;
	if (message[sev_len] == ':' && sev_len > 0 && sev_len < 16) {
		text = message + sev_len + 1;
		while (*text == ' ')
			text++;
		if (strncmp(message, "WARNING", sev_len) == 0)
			level = LOG_WARN;
		else if (strncmp(message, "DEBUG", 5) == 0)
			level = LOG_DEBUG;
	} else {
		sev_len = 0;
	}
	log_write(level, "pg.notice", "conn=%s severity=%.*s: %s", conn, (int)sev_len,
	          sev_len ? message : "NOTICE", text);
}

/* One JSON object: {"ts":..,"level":..,"id":..,"msg":..}. -ENOMEM when it cannot be built. */
static int log_write_json(const char *ts, log_level level, const char *id, const char *msg, size_t msg_len)
{
	buf b;
	buf_init(&b);
	int rc = buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"id\":", ts, level_json[level]);
	if (rc == 0)
		rc = buf_json_string(&b, id, strlen(id));
	if (rc == 0)
		rc = buf_puts(&b, ",\"msg\":");
	if (rc == 0)
		rc = buf_json_string(&b, msg, msg_len);
	if (rc == 0)
		rc = buf_puts(&b, "}\n");
	if (rc == 0)
		fwrite(b.data, 1, b.len, stderr);
	buf_fini(&b);
	return rc;
}

void log_write(log_level level, const char *id, const char *fmt, ...)
{
	if (level < min_level)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[40];
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	char line[2048];
	int n = snprintf(line, sizeof(line), "%s %s %s ", stamp, level_names[level], id);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	/* Trailing blanks and newlines (server errors end with one) are not part of the message. */
	while (len > (size_t)n && (line[len - 1] == ' ' || line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (out_format == LOG_FORMAT_JSON && log_write_json(stamp, level, id, line + n, len - (size_t)n) == 0)
		return;
	/* One record is one line: fold any newline the message carries (server errors do). */
	for (size_t i = (size_t)n; i < len; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	while (len > (size_t)n && line[len - 1] == ' ')
		len--;
	line[len++] = '\n';
	fwrite(line, 1, len, stderr);
}
