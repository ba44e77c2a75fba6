/* Quoted strings, literals and literal announcements (IMAP, ManageSieve). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/tokens.h"

static void strings(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		bool ok;
		const char *value;
		size_t rest; /* bytes left after the token */
	} cases[] = {
	    {"\"alice\" x", true, "alice", 2},
	    {"\"a \\\"b\\\" \\\\c\"", true, "a \"b\" \\c", 0},
	    {"\"\"", true, "", 0},
	    {"\"open", false, NULL, 0},
	    {"\"bad \\x escape\"", false, NULL, 0},
	    {"\"cr\r\"", false, NULL, 0},
	    {"{5}\r\nhello rest", true, "hello", 5},
	    {"{5+}\r\nhello", true, "hello", 0},
	    {"{0}\r\n", true, "", 0},
	    {"{3}\nabc", true, "abc", 0},
	    {"{6}\r\nshort", false, NULL, 0},
	    {"{99}\r\n", false, NULL, 0},
	    {"{}\r\n", false, NULL, 0},
	    {"{5}hello", false, NULL, 0},
	    {"atom", false, NULL, 0},
	    {"", false, NULL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[64];
		size_t n = strlen(cases[i].in);
		memcpy(buf, cases[i].in, n + 1);
		sy_cursor cu = {buf, buf + n};
		char *s;
		size_t len;
		bool ok = tok_string(&cu, &s, &len, 64);
		assert_int_equal(ok, cases[i].ok);
		if (ok) {
			assert_int_equal(len, strlen(cases[i].value));
			assert_memory_equal(s, cases[i].value, len);
			assert_int_equal((size_t)(cu.end - cu.p), cases[i].rest);
		}
	}
}

static void literal_over_max_is_refused(void **state)
{
	(void)state;
	char buf[] = "{65}\r\n";
	sy_cursor cu = {buf, buf + strlen(buf)};
	char *s;
	size_t len;
	assert_false(tok_string(&cu, &s, &len, 64));
}

static void trailing_literals(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		long n;
		bool plus;
		size_t brace;
	} cases[] = {
	    {"a LOGIN {5}", 5, false, 8},
	    {"a LOGIN {12+}", 12, true, 8},
	    {"PUTSCRIPT \"x\" {0}", 0, false, 14},
	    {"a LOGIN user", -1, false, 0},
	    {"a LOGIN {}", -1, false, 0},
	    {"a LOGIN 5}", -1, false, 0},
	    {"{+}", -1, false, 0},
	    {"x {99999999999}", 1001, false, 2}, /* absurd: max + 1 */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool plus = false;
		size_t brace = 0;
		long n =
		    tok_trailing_literal(cases[i].in, strlen(cases[i].in), 1000, &plus, &brace);
		assert_int_equal(n, cases[i].n);
		if (n >= 0) {
			assert_int_equal(plus, cases[i].plus);
			assert_int_equal(brace, cases[i].brace);
		}
	}
}

static void atoms(void **state)
{
	(void)state;
	char buf[] = "CAPABILITY rest";
	sy_cursor cu = {buf, buf + strlen(buf)};
	char *s;
	size_t len;
	assert_true(tok_atom(&cu, &s, &len));
	assert_int_equal(len, 10);
	assert_true(tok_sp(&cu));
	assert_false(tok_sp(&cu));
	assert_false(tok_is_atom_char('('));
	assert_false(tok_is_atom_char(' '));
	assert_true(tok_is_atom_char('a'));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(strings),
	    cmocka_unit_test(literal_over_max_is_refused),
	    cmocka_unit_test(trailing_literals),
	    cmocka_unit_test(atoms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
