/*
 * log — one-line structured log records on stderr:
 *   2026-11-22T10:00:00.123Z ERROR source.plugin_refused slot=walcast: <message>
 * The identifier (second field) is stable and documented in docs/operations.md, so operators can
 * alert on it; the object the line is about (slot, LSN, subscriber) follows as key=value.
 * With log.format = json every record is one JSON object on one line instead:
 *   {"ts":"2026-11-22T10:00:00.123Z","level":"error","id":"source.plugin_refused","msg":"slot=walcast: <message>"}
 *
 * The level and the format are set by main() before the loop starts (log_configure with
 * log.level and log.format) and again by the loop thread after a SIGHUP reload; they are the one
 * piece of process-wide state outside main.c.
 */
#ifndef WALCAST_LOG_H
#define WALCAST_LOG_H

typedef enum log_level {
	LOG_DEBUG = 0,
	LOG_INFO,
	LOG_WARN,
	LOG_ERROR,
} log_level;

/* Sets the minimum level written. */
void log_level_set(log_level level);

/* Parses "debug", "info", "warn", "error"; 0 or -EINVAL. */
int log_level_parse(const char *s, log_level *out);

typedef enum log_format {
	LOG_FORMAT_TEXT = 0,
	LOG_FORMAT_JSON,
} log_format;

/* Sets the record format. */
void log_format_set(log_format format);

/* Parses "text", "json"; 0 or -EINVAL. */
int log_format_parse(const char *s, log_format *out);

/* Applies the [log] keys (log.level, log.format): at start and after a reload. Both are parsed
 * before either is set. 0, or -EINVAL and nothing changed. */
__attribute__((warn_unused_result)) int log_configure(const char *level, const char *format);

/* Writes one record if level is enabled. id is a stable dotted identifier ("source.connected");
 * fmt is the rest of the line. Never blocks on anything but stderr. */
__attribute__((format(printf, 3, 4))) void log_write(log_level level, const char *id, const char *fmt, ...);

/* A libpq notice processor (give it to PQsetNoticeProcessor with arg = a constant string naming
 * the connection, e.g. "replication"): the server's NOTICE, WARNING, LOG... messages become one
 * log record "pg.notice conn=ARG severity=SEVERITY: text", WARNING at WARN, DEBUG at DEBUG, the
 * others at INFO, instead of raw lines on stderr. */
void log_pg_notice(void *arg, const char *message);

#define log_debug(id, ...) log_write(LOG_DEBUG, id, __VA_ARGS__)
#define log_info(id, ...) log_write(LOG_INFO, id, __VA_ARGS__)
#define log_warn(id, ...) log_write(LOG_WARN, id, __VA_ARGS__)
#define log_error(id, ...) log_write(LOG_ERROR, id, __VA_ARGS__)

#endif
