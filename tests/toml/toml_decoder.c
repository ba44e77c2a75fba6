/*
 * toml-test decoder: reads TOML on stdin and writes the tagged JSON form that
 * the toml-test suite expects on stdout. Invalid TOML makes it exit with
 * status 1 and the parser's message on stderr.
 */
#include <switchyard/toml.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_json_string(const char *s, size_t len)
{
	putchar('"');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"':
			fputs("\\\"", stdout);
			break;
		case '\\':
			fputs("\\\\", stdout);
			break;
		case '\b':
			fputs("\\b", stdout);
			break;
		case '\f':
			fputs("\\f", stdout);
			break;
		case '\n':
			fputs("\\n", stdout);
			break;
		case '\r':
			fputs("\\r", stdout);
			break;
		case '\t':
			fputs("\\t", stdout);
			break;
		default:
			/* JSON forbids raw control characters; DEL is legal
			 * but escaped too so the output stays printable. The
			 * parser guarantees valid UTF-8, so other bytes pass. */
			if (c < 0x20 || c == 0x7F)
				printf("\\u%04x", c);
			else
				putchar(c);
		}
	}
	putchar('"');
}

static void put_tagged(const char *type, const char *value, size_t len)
{
	fputs("{\"type\":", stdout);
	put_json_string(type, strlen(type));
	fputs(",\"value\":", stdout);
	put_json_string(value, len);
	putchar('}');
}

/* Prints the shortest decimal form that reads back as the same double. */
static void format_float(double d, char *buf, size_t n)
{
	if (isnan(d)) {
		snprintf(buf, n, "nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, n, d < 0 ? "-inf" : "inf");
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, n, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

/* Recursion is bounded by the parser's TOML_MAX_DEPTH limit on the tree. */
static void put_value(const toml_value *v)
{
	char buf[64];
	switch (v->type) {
	case TOML_STRING:
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		put_tagged(toml_type_name(v->type), v->u.str.ptr, v->u.str.len);
		break;
	case TOML_INTEGER:
		snprintf(buf, sizeof buf, "%" PRId64, v->u.integer);
		put_tagged("integer", buf, strlen(buf));
		break;
	case TOML_FLOAT:
		format_float(v->u.flt, buf, sizeof buf);
		put_tagged("float", buf, strlen(buf));
		break;
	case TOML_BOOL:
		put_tagged("bool", v->u.boolean ? "true" : "false", v->u.boolean ? 4 : 5);
		break;
	case TOML_ARRAY:
		putchar('[');
		for (size_t i = 0; i < v->u.arr.len; i++) {
			if (i > 0)
				putchar(',');
			put_value(v->u.arr.items[i]);
		}
		putchar(']');
		break;
	case TOML_TABLE:
		putchar('{');
		for (size_t i = 0; i < v->u.tab.len; i++) {
			if (i > 0)
				putchar(',');
			put_json_string(v->u.tab.items[i].key, v->u.tab.items[i].keylen);
			putchar(':');
			put_value(v->u.tab.items[i].value);
		}
		putchar('}');
		break;
	}
}

int main(void)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap);
	if (!buf) {
		fputs("out of memory\n", stderr);
		return 2;
	}
	for (;;) {
		if (len == cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				fputs("out of memory\n", stderr);
				return 2;
			}
			buf = nb;
			cap *= 2;
		}
		size_t n = fread(buf + len, 1, cap - len, stdin);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(stdin)) {
		free(buf);
		fputs("error reading stdin\n", stderr);
		return 2;
	}

	char err[512];
	toml_value *root = toml_parse(buf, len, err, sizeof err);
	free(buf);
	if (!root) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	put_value(root);
	putchar('\n');
	toml_free(root);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fputs("error writing stdout\n", stderr);
		return 2;
	}
	return 0;
}
