/* log — timestamped, identified log lines on stderr. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static log_level min_level = LOG_INFO; /* written once at startup, see log.h */

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

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

void log_write(log_level level, const char *id, const char *fmt, ...)
{
	if (level < min_level)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char line[2048];
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                 tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], id);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	/* One record is one line: fold any newline the message carries (server errors do). */
	for (size_t i = (size_t)n; i < len; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	while (len > (size_t)n && line[len - 1] == ' ')
		len--;
	line[len++] = '\n';
	fwrite(line, 1, len, stderr);
}
