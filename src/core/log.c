/*
 * Logging to stderr, one line per event.
 *
 * Each line is formatted into a stack buffer and written with one write(2), so
 * lines from different worker threads never interleave. A line longer than the
 * buffer is truncated (and marked so) rather than split.
 */
#include "switchyard/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static _Atomic int current_level = SY_LOG_INFO;
static _Atomic int current_format = SY_LOG_TEXT;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
static const char *const level_names_lower[] = {"error", "warn", "info", "debug", "trace"};

void log_set_level(sy_log_level level)
{
	atomic_store(&current_level, (int)level);
}

void log_set_format(sy_log_format format)
{
	atomic_store(&current_format, (int)format);
}

sy_log_level log_get_level(void)
{
	return (sy_log_level)atomic_load(&current_level);
}

bool log_enabled(sy_log_level level)
{
	return (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

const char *log_level_name(sy_log_level level)
{
	if ((unsigned)level > SY_LOG_TRACE)
		return "?";
	return level_names_lower[level];
}

int log_level_parse(const char *s, sy_log_level *out)
{
	static const struct {
		const char *name;
		sy_log_level level;
	} names[] = {
	    {"error", SY_LOG_ERROR}, {"warn", SY_LOG_WARN},   {"warning", SY_LOG_WARN},
	    {"info", SY_LOG_INFO},   {"debug", SY_LOG_DEBUG}, {"trace", SY_LOG_TRACE},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -1;
}

int log_filter_parse(const char *s, sy_log_level *out)
{
	char buf[256];
	size_t n = strlen(s);
	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n + 1);

	bool have_bare = false, have_target = false;
	sy_log_level bare = SY_LOG_INFO, target = SY_LOG_ERROR;
	char *save = NULL;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (isspace((unsigned char)*tok))
			tok++;
		char *end = tok + strlen(tok);
		while (end > tok && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (*tok == '\0')
			continue;
		sy_log_level lv;
		char *eq = strchr(tok, '=');
		if (eq) {
			if (log_level_parse(eq + 1, &lv) == 0) {
				if (!have_target || lv > target)
					target = lv;
				have_target = true;
			}
		} else if (log_level_parse(tok, &lv) == 0) {
			bare = lv;
			have_bare = true;
		}
	}
	if (have_bare)
		*out = bare;
	else if (have_target)
		*out = target;
	else
		return -1;
	return 0;
}

int log_level_from_env(sy_log_level *out, const char **var_r)
{
	static const char *const vars[] = {"PROXY_LOG", "RUST_LOG"};
	for (size_t i = 0; i < 2; i++) {
		const char *v = getenv(vars[i]);
		if (!v || !*v)
			continue;
		*var_r = vars[i];
		return log_filter_parse(v, out) == 0 ? 1 : -1;
	}
	return 0;
}

/* A bounded string builder over the line buffer. Writes past the end are
 * dropped and remembered, so formatting never overruns. */
typedef struct linebuf {
	char *p;
	size_t len, cap;
	bool truncated;
} linebuf;

static void put(linebuf *b, const char *s, size_t n)
{
	if (n > b->cap - b->len) {
		n = b->cap - b->len;
		b->truncated = true;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void puts_(linebuf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void putc_(linebuf *b, char c)
{
	if (b->len < b->cap)
		b->p[b->len++] = c;
	else
		b->truncated = true;
}

static bool needs_quotes(const char *v)
{
	if (*v == '\0')
		return true;
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f || *p == '\\')
			return true;
	}
	return false;
}

/* Escapes a value for both formats: JSON string rules, which also make a
 * readable quoted value in the text format. */
static void put_escaped(linebuf *b, const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		switch (*p) {
		case '"':
			puts_(b, "\\\"");
			break;
		case '\\':
			puts_(b, "\\\\");
			break;
		case '\n':
			puts_(b, "\\n");
			break;
		case '\r':
			puts_(b, "\\r");
			break;
		case '\t':
			puts_(b, "\\t");
			break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				char esc[8];
				snprintf(esc, sizeof(esc), "\\u%04x", *p);
				puts_(b, esc);
			} else {
				putc_(b, (char)*p);
			}
		}
	}
}

static void format_time(char *out, size_t outlen)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (long)(ts.tv_nsec / 1000000) % 1000);
}

static void emit(sy_log_level level, const char *msg, va_list fields)
{
	char buf[LINE_MAX_BYTES];
	/* Keep room for the truncation marker and the newline. */
	linebuf b = {buf, 0, sizeof(buf) - 16, false};
	char ts[64];
	format_time(ts, sizeof(ts));
	bool json = atomic_load_explicit(&current_format, memory_order_relaxed) == SY_LOG_JSON;

	if (json) {
		puts_(&b, "{\"ts\":\"");
		puts_(&b, ts);
		puts_(&b, "\",\"level\":\"");
		puts_(&b, level_names_lower[level]);
		puts_(&b, "\",\"msg\":\"");
		put_escaped(&b, msg);
		putc_(&b, '"');
	} else {
		puts_(&b, ts);
		putc_(&b, ' ');
		puts_(&b, level_names[level]);
		putc_(&b, ' ');
		put_escaped(&b, msg);
	}
	for (;;) {
		const char *k = va_arg(fields, const char *);
		if (!k)
			break;
		const char *v = va_arg(fields, const char *);
		if (!v)
			v = "";
		if (json) {
			puts_(&b, ",\"");
			put_escaped(&b, k);
			puts_(&b, "\":\"");
			put_escaped(&b, v);
			putc_(&b, '"');
		} else {
			putc_(&b, ' ');
			puts_(&b, k);
			putc_(&b, '=');
			if (needs_quotes(v)) {
				putc_(&b, '"');
				put_escaped(&b, v);
				putc_(&b, '"');
			} else {
				puts_(&b, v);
			}
		}
	}
	/* The reserved tail always has room for the closing bytes. */
	b.cap = sizeof(buf);
	if (b.truncated)
		puts_(&b, json ? "\",\"truncated\":\"1" : " ...");
	if (json)
		putc_(&b, '}');
	putc_(&b, '\n');

	const char *p = buf;
	size_t left = b.len;
	while (left > 0) {
		ssize_t w = write(STDERR_FILENO, p, left);
		if (w <= 0)
			break;
		p += w;
		left -= (size_t)w;
	}
}

void sy_log(sy_log_level level, const char *msg, ...)
{
	if (!log_enabled(level))
		return;
	va_list ap;
	va_start(ap, msg);
	emit(level, msg, ap);
	va_end(ap);
}

/* Helper so sy_logf can reuse emit() with an empty field list. */
static void emit_nofields(sy_log_level level, const char *msg, ...)
{
	va_list ap;
	va_start(ap, msg);
	emit(level, msg, ap);
	va_end(ap);
}

void sy_logf(sy_log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	char msg[LINE_MAX_BYTES / 2];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit_nofields(level, msg, (const char *)NULL);
}
