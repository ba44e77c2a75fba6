/* Log level parsing and the RUST_LOG-style filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "switchyard/log.h"

static void levels(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int rc;
		sy_log_level level;
	} cases[] = {
	    {"error", 0, SY_LOG_ERROR},  {"WARN", 0, SY_LOG_WARN},
	    {"warning", 0, SY_LOG_WARN}, {"Info", 0, SY_LOG_INFO},
	    {"debug", 0, SY_LOG_DEBUG},  {"trace", 0, SY_LOG_TRACE},
	    {"verbose", -1, 0},          {"", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sy_log_level lv = SY_LOG_INFO;
		assert_int_equal(log_level_parse(cases[i].text, &lv), cases[i].rc);
		if (cases[i].rc == 0)
			assert_int_equal(lv, cases[i].level);
	}
}

static void filters(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int rc;
		sy_log_level level;
	} cases[] = {
	    {"debug", 0, SY_LOG_DEBUG},
	    {"info,switchyard=trace", 0, SY_LOG_INFO},     /* a bare level wins */
	    {"switchyard=debug", 0, SY_LOG_DEBUG},         /* else the target level */
	    {"a=warn, b=trace ,c=error", 0, SY_LOG_TRACE}, /* the most verbose target */
	    {" warn ", 0, SY_LOG_WARN},                    /* blanks are ignored */
	    {"nonsense", -1, 0},
	    {"x=nonsense", -1, 0},
	    {"", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sy_log_level lv = SY_LOG_INFO;
		assert_int_equal(log_filter_parse(cases[i].text, &lv), cases[i].rc);
		if (cases[i].rc == 0)
			assert_int_equal(lv, cases[i].level);
	}
}

static void environment_precedence(void **state)
{
	(void)state;
	sy_log_level lv;
	const char *var = NULL;
	unsetenv("PROXY_LOG");
	unsetenv("RUST_LOG");
	assert_int_equal(log_level_from_env(&lv, &var), 0);
	setenv("RUST_LOG", "debug", 1);
	assert_int_equal(log_level_from_env(&lv, &var), 1);
	assert_int_equal(lv, SY_LOG_DEBUG);
	assert_string_equal(var, "RUST_LOG");
	setenv("PROXY_LOG", "error", 1);
	assert_int_equal(log_level_from_env(&lv, &var), 1);
	assert_int_equal(lv, SY_LOG_ERROR);
	assert_string_equal(var, "PROXY_LOG");
	setenv("PROXY_LOG", "loud", 1);
	assert_int_equal(log_level_from_env(&lv, &var), -1);
	assert_string_equal(var, "PROXY_LOG");
	unsetenv("PROXY_LOG");
	unsetenv("RUST_LOG");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(levels),
	    cmocka_unit_test(filters),
	    cmocka_unit_test(environment_precedence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
