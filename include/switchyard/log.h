/*
 * Logging: one line per event on stderr, in `text` or `json` format, with
 * structured key/value fields.
 *
 *   sy_log(SY_LOG_INFO, "session closed", "protocol", "imap", "bytes_in", "123", NULL);
 *
 * Fields are given as a NULL-terminated list of (key, value) string pairs.
 * The text format prints `<RFC3339 time> <LEVEL> <message> key=value ...`,
 * quoting values that contain spaces, quotes or control characters; the json
 * format prints one object per line with "ts", "level", "msg" and the fields.
 * Never pass a password or a token as a field.
 *
 * Safe to call from any thread: each line is formatted into a local buffer and
 * written with a single write(2).
 */
#ifndef SWITCHYARD_LOG_H
#define SWITCHYARD_LOG_H

#include <stdbool.h>

typedef enum sy_log_format { SY_LOG_TEXT, SY_LOG_JSON } sy_log_format;

/* Log levels, most severe first; a configured level lets through itself and
 * everything more severe. */
typedef enum sy_log_level {
	SY_LOG_ERROR,
	SY_LOG_WARN,
	SY_LOG_INFO,
	SY_LOG_DEBUG,
	SY_LOG_TRACE
} sy_log_level;

void log_set_level(sy_log_level level);
void log_set_format(sy_log_format format);
sy_log_level log_get_level(void);

/* True if a message at `level` would be written (cheap; check before
 * building expensive fields). */
bool log_enabled(sy_log_level level);

/* Writes one event. Fields: NULL-terminated (key, value) pairs. */
void sy_log(sy_log_level level, const char *msg, ...) __attribute__((sentinel));

/* printf-style message without fields. */
void sy_logf(sy_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses "error", "warn"/"warning", "info", "debug", "trace" (any case).
 * Returns 0 or -1. */
int log_level_parse(const char *s, sy_log_level *out);

/*
 * Parses a RUST_LOG-style filter ("debug", "info,switchyard=trace",
 * "switchyard=debug"): a bare level wins; otherwise the most verbose
 * target=level entry is used. Returns 0 or -1 if no level could be read.
 */
int log_filter_parse(const char *s, sy_log_level *out);

const char *log_level_name(sy_log_level level);

/*
 * The level from the environment: PROXY_LOG, else RUST_LOG (a level or a
 * target=level list, for compatibility with the reference system). Returns 1
 * and sets *out when a variable is set and readable, 0 when neither is set,
 * -1 when the first one set cannot be read (*var_r names it).
 */
int log_level_from_env(sy_log_level *out, const char **var_r);

#endif
