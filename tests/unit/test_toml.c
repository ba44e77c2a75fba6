/*
 * Unit tests for the TOML parser. The exhaustive conformance check is the
 * toml-test suite (tests/toml); these tests cover what that suite cannot see:
 * error positions and messages, the lookup API, source positions of values,
 * the depth limit and memory hygiene (run them under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <switchyard/toml.h>

#define ERRLEN 256

/* Parses a NUL-terminated document, failing the test if it is rejected. */
static toml_value *parse_ok(const char *src)
{
	char err[ERRLEN];
	toml_value *root = toml_parse(src, strlen(src), err, sizeof err);
	if (!root)
		fail_msg("unexpected parse error: %s\n--- input ---\n%s", err, src);
	return root;
}

/* Follows a path of keys given as separate arguments, ending with NULL. */
static const toml_value *get_path(const toml_value *v, ...)
{
	va_list ap;
	va_start(ap, v);
	for (const char *k = va_arg(ap, const char *); k && v; k = va_arg(ap, const char *))
		v = toml_get(v, k);
	va_end(ap);
	return v;
}

/* ---- Error positions ---- */

struct error_case {
	const char *src;
	const char *prefix; /* "line L, column C: " */
	const char *needle; /* must occur in the message */
};

static const struct error_case error_cases[] = {
    {"a = 1\nb = \n", "line 2, column 5: ", "expected a value"},
    {"a = 1\na = 2\n", "line 2, column 1: ", "duplicate key 'a'"},
    {"x = \"abc", "line 1, column 5: ", "unterminated string"},
    {"[a]\n[a]\n", "line 2, column 2: ", "already defined"},
    {"s = \"\\q\"", "line 1, column 6: ", "invalid escape"},
    {"a = 01", "line 1, column 5: ", "leading zeros"},
    {"a = [1 2]", "line 1, column 8: ", "expected ',' or ']'"},
    {"a = {b = 1,}", "line 1, column 12: ", "trailing comma"},
    {"a = {b = 1\n}", "line 1, column 11: ", "expected ',' or '}'"},
    {"\tkey = tru\n", "line 1, column 8: ", "strings must be quoted"},
    {"a = 1 b", "line 1, column 7: ", "expected a newline or comment"},
    {"a = 1\r\nb = 2\r\nc = \r\n", "line 3, column 5: ", "expected a value"},
    {"a = 1\rb = 2", "line 1, column 6: ", "carriage return"},
    {"k = 1979-02-29", "line 1, column 13: ", "day is out of range"},
    {"k = 2000-13-01", "line 1, column 10: ", "month"},
    {"k = 12:60:00", "line 1, column 8: ", "minute"},
    {"k = 1e", "line 1, column 7: ", "exponent"},
    {"k = 1__0", "line 1, column 6: ", "underscores"},
    {"k = 9223372036854775808", "line 1, column 5: ", "64 bits"},
    {"k = -0x1", "line 1, column 5: ", "signs are not allowed"},
    {"s = \"\\uD800\"", "line 1, column 6: ", "not a Unicode scalar value"},
    {"s = \"\\U00110000\"", "line 1, column 6: ", "not a Unicode scalar value"},
    {"# ok\n\x01", "line 2, column 1: ", "U+0001"},
    {"# bad \x7f\n", "line 1, column 7: ", "control character U+007F"},
    /* Columns count characters, not bytes: "é" is one column. */
    {"s = \"\xc3\xa9\" x", "line 1, column 9: ", "unexpected 'x'"},
    {"s = \"\xc3\xa9\x7f\"", "line 1, column 7: ", "control character U+007F"},
    {"a = \"\xff\"", "line 1, column 6: ", "UTF-8"},
    {"a = \"\xed\xa0\x80\"", "line 1, column 6: ", "surrogate"},
    {"a = \"\xc0\xaf\"", "line 1, column 6: ", "overlong"},
    /* A leading byte order mark does not count as a column. */
    {"\xef\xbb\xbf"
     "a = ?",
     "line 1, column 5: ", "expected a value"},
    {"[[a]]\n[a]\n", "line 2, column 2: ", "array of tables"},
    {"a = []\n[[a]]\n", "line 2, column 3: ", "static array"},
    {"a = {b = 1}\na.c = 2\n", "line 2, column 1: ", "inline table 'a'"},
    {"[a.b]\n[a]\nb.c = 1\n", "line 3, column 1: ", "defined by a [header]"},
    {"a = 1\na.b = 2\n", "line 2, column 1: ", "already an integer"},
    {"[a]\nb = 1\n[a.b]\n", "line 3, column 4: ", "already an integer"},
    {"s = \"\"\"a\\ b\"\"\"", "line 1, column 9: ", "line-ending backslash"},
    {"s = '''\n\n\nabc", "line 1, column 5: ", "unterminated string"},
    {"\"\"\"k\"\"\" = 1", "line 1, column 1: ", "multi-line strings cannot be used as keys"},
    {"[a]]\n", "line 1, column 4: ", "unexpected ']'"},
    {"[[a]\n", "line 1, column 4: ", "']]'"},
    {"= 1", "line 1, column 1: ", "expected a key"},
    {"a.b.c = 1\na.b = 2\n", "line 2, column 3: ", "duplicate key 'a.b'"},
};

static void test_error_positions(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
		const struct error_case *c = &error_cases[i];
		char err[ERRLEN];
		toml_value *root = toml_parse(c->src, strlen(c->src), err, sizeof err);
		if (root) {
			toml_free(root);
			fail_msg("case %zu was accepted: %s", i, c->src);
		}
		if (strncmp(err, c->prefix, strlen(c->prefix)) != 0 || !strstr(err, c->needle))
			fail_msg("case %zu: got \"%s\", want prefix \"%s\" containing \"%s\"", i,
			         err, c->prefix, c->needle);
	}
}

/* ---- Invalid documents ---- */

/* Sized with sizeof so that cases may contain NUL bytes. */
#define DOC(s)                                                                                     \
	{                                                                                          \
		s, sizeof(s) - 1                                                                   \
	}

static const struct {
	const char *src;
	size_t len;
} invalid_docs[] = {
    DOC("a = 1\n[a]\n"),
    DOC("a = {}\n[a.b]\n"),
    DOC("a = { b = 1, b.c = 2 }\n"),
    DOC("[fruit]\napple.color = 'red'\n[fruit.apple]\n"),
    DOC("[tbl]\n[[tbl]]\n"),
    DOC("a = [{}]\n[[a]]\n"),
    DOC("a = \"\"\"\"\"\"\"\"\"\n"), /* "\"\"\"" then six quotes */
    DOC("a = 1.\n"),
    DOC("a = .1\n"),
    DOC("a = 0b2\n"),
    DOC("a = 0O7\n"),
    DOC("a = +0x1\n"),
    DOC("a = 1979-05-27T07:32\n"),
    DOC("a = 1979-05-27T07:32:00+24:00\n"),
    DOC("a = 1979-05-27 07:32:61\n"),
    DOC("a = \"\\x41\"\n"),
    DOC("a = \"\\e\"\n"),
    DOC("a = { b = 1\n, c = 2 }\n"),
    DOC("a = [1,,2]\n"),
    DOC("a = [,]\n"),
    DOC("a.\"b\" .  = 1\n"),
    DOC("a = 1 = 2\n"),
    DOC("a = \"x\" \"y\"\n"),
    DOC("a = 'x\x00'\n"),
    DOC("a = 1\x00"),
    DOC("\xef\xbb\xbf\xef\xbb\xbf"
        "a = 1\n"),
    DOC("[]\n"),
    DOC("[a.]\n"),
    DOC("a = inf_\n"),
    DOC("a = 1e400\n"),
};

static void test_invalid_documents(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof invalid_docs / sizeof invalid_docs[0]; i++) {
		char err[ERRLEN];
		toml_value *root =
		    toml_parse(invalid_docs[i].src, invalid_docs[i].len, err, sizeof err);
		if (root) {
			toml_free(root);
			fail_msg("invalid case %zu was accepted: %s", i, invalid_docs[i].src);
		}
		assert_true(strncmp(err, "line ", 5) == 0);
	}
}

/* ---- Values, lookup and positions ---- */

static void test_scalars(void **state)
{
	(void)state;
	toml_value *root = parse_ok("s = \"tab\\there \\u00e9 \\U0001F600\"\n"
	                            "lit = 'C:\\path'\n"
	                            "h = 0xdead_BEEF\n"
	                            "o = 0o755\n"
	                            "b = 0b1010\n"
	                            "min = -9_223_372_036_854_775_808\n"
	                            "f = 6.626e-34\n"
	                            "ninf = -inf\n"
	                            "n = nan\n"
	                            "t = true\n"
	                            "odt = 1979-05-27 07:32:00.999z\n"
	                            "ldt = 1979-05-27t07:32:00\n"
	                            "ld = 2024-02-29\n"
	                            "lt = 23:59:60\n"
	                            "ml = \"\"\"\r\nline1\r\nline2 \\\r\n    joined\"\"\"\n"
	                            "nul = \"a\\u0000b\"\n");
	const toml_value *v;

	v = toml_get(root, "s");
	assert_non_null(v);
	assert_int_equal(v->type, TOML_STRING);
	assert_string_equal(v->u.str.ptr, "tab\there \xc3\xa9 \xf0\x9f\x98\x80");
	assert_string_equal(toml_get(root, "lit")->u.str.ptr, "C:\\path");

	assert_int_equal(toml_get(root, "h")->u.integer, 0xdeadbeef);
	assert_int_equal(toml_get(root, "o")->u.integer, 0755);
	assert_int_equal(toml_get(root, "b")->u.integer, 10);
	assert_true(toml_get(root, "min")->u.integer == INT64_MIN);

	v = toml_get(root, "f");
	assert_int_equal(v->type, TOML_FLOAT);
	assert_true(v->u.flt == 6.626e-34);
	assert_true(isinf(toml_get(root, "ninf")->u.flt) && toml_get(root, "ninf")->u.flt < 0);
	assert_true(isnan(toml_get(root, "n")->u.flt));

	v = toml_get(root, "t");
	assert_int_equal(v->type, TOML_BOOL);
	assert_true(v->u.boolean);

	/* Date/times keep their text, with 'T' and 'Z' normalised. */
	v = toml_get(root, "odt");
	assert_int_equal(v->type, TOML_DATETIME);
	assert_string_equal(v->u.str.ptr, "1979-05-27T07:32:00.999Z");
	v = toml_get(root, "ldt");
	assert_int_equal(v->type, TOML_DATETIME_LOCAL);
	assert_string_equal(v->u.str.ptr, "1979-05-27T07:32:00");
	assert_int_equal(toml_get(root, "ld")->type, TOML_DATE_LOCAL);
	assert_int_equal(toml_get(root, "lt")->type, TOML_TIME_LOCAL);

	/* CRLF becomes LF; the first newline and a line-ending backslash
	 * with the whitespace after it are trimmed. */
	assert_string_equal(toml_get(root, "ml")->u.str.ptr, "line1\nline2 joined");

	v = toml_get(root, "nul");
	assert_int_equal(v->u.str.len, 3);
	assert_memory_equal(v->u.str.ptr, "a\0b", 4);

	toml_free(root);
}

static void test_nested_tables_and_positions(void **state)
{
	(void)state;
	toml_value *root = parse_ok("title = \"proxy\"\n"
	                            "\n"
	                            "[server.tls]\n"
	                            "cert = \"/etc/cert.pem\"\n"
	                            "\n"
	                            "[server]\n"
	                            "listen.addr = \"0.0.0.0\"\n"
	                            "listen.port = 25\n"
	                            "\"quoted.key\" = { a = [1, 2], 'b' = {} }\n");
	const toml_value *server = toml_get(root, "server");
	assert_non_null(server);
	assert_int_equal(server->type, TOML_TABLE);
	/* [server] was created implicitly by [server.tls], then defined by
	 * its own header, which is where it now points. */
	assert_int_equal(server->line, 6);
	assert_int_equal(server->col, 1);

	const toml_value *tls = toml_get(server, "tls");
	assert_int_equal(tls->line, 3);
	assert_string_equal(toml_get(tls, "cert")->u.str.ptr, "/etc/cert.pem");

	const toml_value *port = get_path(root, "server", "listen", "port", NULL);
	assert_non_null(port);
	assert_int_equal(port->u.integer, 25);
	assert_int_equal(port->line, 8);
	assert_int_equal(port->col, 15);

	/* Keys remember where they were written, in definition order. */
	const toml_value *listen = toml_get(server, "listen");
	assert_int_equal(listen->u.tab.len, 2);
	assert_string_equal(listen->u.tab.items[0].key, "addr");
	assert_int_equal(listen->u.tab.items[1].line, 8);
	assert_int_equal(listen->u.tab.items[1].col, 8);

	const toml_value *q = toml_get(server, "quoted.key");
	assert_non_null(q);
	assert_int_equal(q->col, 16);
	const toml_value *arr = toml_get(q, "a");
	assert_int_equal(arr->type, TOML_ARRAY);
	assert_int_equal(arr->u.arr.len, 2);
	assert_int_equal(arr->u.arr.items[1]->u.integer, 2);
	assert_int_equal(arr->u.arr.items[1]->col, 26);
	assert_int_equal(toml_get(q, "b")->type, TOML_TABLE);

	/* Lookups that must fail. */
	assert_null(toml_get(root, "missing"));
	assert_null(toml_get(root, "server.tls"));
	assert_null(toml_get(toml_get(root, "title"), "x"));
	assert_null(toml_get(NULL, "x"));
	assert_null(get_path(root, "server", "listen", "port", "deeper", NULL));

	toml_free(root);
}

static void test_array_of_tables(void **state)
{
	(void)state;
	toml_value *root = parse_ok("[[backend]]\n"
	                            "name = \"a\"\n"
	                            "[backend.opts]\n"
	                            "weight = 1\n"
	                            "[[backend.alias]]\n"
	                            "n = 1\n"
	                            "[[backend.alias]]\n"
	                            "n = 2\n"
	                            "\n"
	                            "[[backend]]\n"
	                            "name = \"b\"\n"
	                            "\n"
	                            "[[backend]]\n");
	const toml_value *be = toml_get(root, "backend");
	assert_non_null(be);
	assert_int_equal(be->type, TOML_ARRAY);
	assert_int_equal(be->u.arr.len, 3);

	const toml_value *first = be->u.arr.items[0];
	assert_string_equal(toml_get(first, "name")->u.str.ptr, "a");
	assert_int_equal(get_path(first, "opts", "weight", NULL)->u.integer, 1);
	const toml_value *alias = toml_get(first, "alias");
	assert_int_equal(alias->u.arr.len, 2);
	assert_int_equal(toml_get(alias->u.arr.items[1], "n")->u.integer, 2);

	assert_string_equal(toml_get(be->u.arr.items[1], "name")->u.str.ptr, "b");
	assert_int_equal(be->u.arr.items[1]->line, 10);
	assert_int_equal(be->u.arr.items[2]->type, TOML_TABLE);
	assert_int_equal(be->u.arr.items[2]->u.tab.len, 0);
	assert_int_equal(be->u.arr.items[2]->line, 13);
	toml_free(root);
}

/* ---- Depth limit ---- */

static char *repeat3(const char *head, const char *unit, int n, const char *mid, const char *tail,
                     int m)
{
	size_t len =
	    strlen(head) + strlen(unit) * (size_t)n + strlen(mid) + strlen(tail) * (size_t)m + 1;
	char *s = malloc(len);
	assert_non_null(s);
	strcpy(s, head);
	for (int i = 0; i < n; i++)
		strcat(s, unit);
	strcat(s, mid);
	for (int i = 0; i < m; i++)
		strcat(s, tail);
	return s;
}

struct depth_case {
	const char *head, *unit, *mid, *tail;
	int n, tails; /* tails < 0 means "same as n" */
	bool ok;
};

static const struct depth_case depth_cases[] = {
    /* The outermost array is a's value, at depth 1. */
    {"a = ", "[", "", "]", TOML_MAX_DEPTH, -1, true},
    {"a = ", "[", "", "]", TOML_MAX_DEPTH + 1, -1, false},
    /* Here the innermost value 1 sits one level below the last table. */
    {"a = ", "{b = ", "1", "}", TOML_MAX_DEPTH - 1, -1, true},
    {"a = ", "{b = ", "1", "}", TOML_MAX_DEPTH, -1, false},
    /* Unterminated nesting far past the limit must fail cleanly. */
    {"a = ", "[", "", "", 100000, 0, false},
    {"a = ", "{b=", "", "", 100000, 0, false},
    /* Dotted keys and headers count too. */
    {"", "a.", "a = 1", "", TOML_MAX_DEPTH - 1, 0, true},
    {"", "a.", "a = 1", "", TOML_MAX_DEPTH, 0, false},
    {"[", "a.", "a]", "", TOML_MAX_DEPTH - 1, 0, true},
    {"[", "a.", "a]", "", TOML_MAX_DEPTH, 0, false},
    {"[[", "a.", "a]]", "", TOML_MAX_DEPTH - 2, 0, true},
    {"[[", "a.", "a]]", "", TOML_MAX_DEPTH - 1, 0, false},
    {"", "a.", "a = 1", "", 100000, 0, false},
};

static void test_depth_limit(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof depth_cases / sizeof depth_cases[0]; i++) {
		const struct depth_case *c = &depth_cases[i];
		char *src = repeat3(c->head, c->unit, c->n, c->mid, c->tail,
		                    c->tails < 0 ? c->n : c->tails);
		char err[ERRLEN];
		toml_value *root = toml_parse(src, strlen(src), err, sizeof err);
		if (c->ok && !root)
			fail_msg("depth case %zu rejected: %s", i, err);
		if (!c->ok && root)
			fail_msg("depth case %zu accepted", i);
		if (!c->ok && c->n < 1000 && !strstr(err, "deeper") && !strstr(err, "parts"))
			fail_msg("depth case %zu: unexpected message %s", i, err);
		toml_free(root);
		free(src);
	}
}

/* ---- API edge cases and memory ---- */

static void test_error_buffer(void **state)
{
	(void)state;
	char small[8];
	memset(small, 'x', sizeof small);
	assert_null(toml_parse("a = ", 4, small, sizeof small));
	assert_int_equal(strlen(small), sizeof small - 1);
	assert_memory_equal(small, "line 1,", 7);

	/* No buffer at all is fine too. */
	assert_null(toml_parse("a = ", 4, NULL, 0));

	/* An empty document is an empty table, even without a pointer. */
	char err[ERRLEN];
	toml_value *root = toml_parse(NULL, 0, err, sizeof err);
	assert_non_null(root);
	assert_int_equal(root->type, TOML_TABLE);
	assert_int_equal(root->u.tab.len, 0);
	assert_string_equal(err, "");
	toml_free(root);

	/* The length is honoured: nothing after it is read. */
	root = toml_parse("a = 1garbage", 5, err, sizeof err);
	assert_non_null(root);
	assert_int_equal(toml_get(root, "a")->u.integer, 1);
	toml_free(root);

	toml_free(NULL);
}

static void test_many_keys(void **state)
{
	(void)state;
	enum { N = 5000 };
	size_t cap = N * 32, len = 0;
	char *src = malloc(cap);
	assert_non_null(src);
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(src + len, cap - len, "k%d = %d\n", i, i);
	char err[ERRLEN];
	toml_value *root = toml_parse(src, len, err, sizeof err);
	assert_non_null(root);
	assert_int_equal(root->u.tab.len, N);
	for (int i = 0; i < N; i += 7) {
		char key[16];
		snprintf(key, sizeof key, "k%d", i);
		const toml_value *v = toml_get(root, key);
		assert_non_null(v);
		assert_int_equal(v->u.integer, i);
	}
	assert_null(toml_get(root, "k5000"));
	toml_free(root);

	/* A duplicate among many keys is still found. */
	len += (size_t)snprintf(src + len, cap - len, "k1234 = 0\n");
	assert_null(toml_parse(src, len, err, sizeof err));
	assert_non_null(strstr(err, "line 5001, column 1: duplicate key 'k1234'"));
	free(src);
}

static void test_type_names(void **state)
{
	(void)state;
	static const struct {
		toml_type t;
		const char *name;
	} names[] = {
	    {TOML_STRING, "string"},         {TOML_INTEGER, "integer"},
	    {TOML_FLOAT, "float"},           {TOML_BOOL, "boolean"},
	    {TOML_DATETIME, "datetime"},     {TOML_DATETIME_LOCAL, "datetime-local"},
	    {TOML_DATE_LOCAL, "date-local"}, {TOML_TIME_LOCAL, "time-local"},
	    {TOML_ARRAY, "array"},           {TOML_TABLE, "table"},
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		assert_string_equal(toml_type_name(names[i].t), names[i].name);
}

/* Builds and frees a tree using every kind of node; ASan checks the rest. */
static void test_free_is_clean(void **state)
{
	(void)state;
	static const char doc[] = "a = [1, 'x', [2.5, {b = {c = [true]}}], 1979-05-27]\n"
	                          "t = {x.y.z = 1, w = []}\n"
	                          "[p.q]\n"
	                          "r.s = 07:32:00\n"
	                          "[[p.arr]]\n"
	                          "[[p.arr]]\n"
	                          "u = 1979-05-27T00:00:00\n";
	for (int i = 0; i < 3; i++)
		toml_free(parse_ok(doc));

	/* Failing part-way must free what was built so far. */
	static const char bad[] = "a = [1, 'x', [2.5, {b = {c = [true]}}]]\n"
	                          "[p.q]\n"
	                          "r.s = 1\n"
	                          "[[p.arr]]\n"
	                          "x = [1, {y = 2}, 3,, ]\n";
	char err[ERRLEN];
	assert_null(toml_parse(bad, sizeof bad - 1, err, sizeof err));
	assert_non_null(strstr(err, "line 5, column 20:"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_error_positions),
	    cmocka_unit_test(test_invalid_documents),
	    cmocka_unit_test(test_scalars),
	    cmocka_unit_test(test_nested_tables_and_positions),
	    cmocka_unit_test(test_array_of_tables),
	    cmocka_unit_test(test_depth_limit),
	    cmocka_unit_test(test_error_buffer),
	    cmocka_unit_test(test_many_keys),
	    cmocka_unit_test(test_type_names),
	    cmocka_unit_test(test_free_is_clean),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
