/* Circuit breaker: threshold, cooldown, single probe, reset, disabled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "switchyard/health.h"

static void opens_after_threshold(void **state)
{
	(void)state;
	sy_health h;
	bool probe;
	health_init(&h, 3, 1000);
	assert_true(health_allow(&h, 0, &probe));
	assert_false(health_failure(&h, 10));
	assert_false(health_failure(&h, 20));
	assert_true(health_allow(&h, 25, &probe));
	assert_true(health_failure(&h, 30)); /* third failure marks it down */
	assert_false(health_allow(&h, 31, &probe));
	assert_false(health_allow(&h, 1029, &probe));
	sy_health_state st = health_get(&h, 500);
	assert_true(st.down);
	assert_int_equal(st.consecutive_failures, 3);
	assert_int_equal(st.down_for_ms, 530);
	health_destroy(&h);
}

static void one_probe_after_cooldown(void **state)
{
	(void)state;
	sy_health h;
	bool probe;
	health_init(&h, 1, 100);
	assert_true(health_failure(&h, 0));
	assert_true(health_allow(&h, 100, &probe));
	assert_true(probe);
	/* While the probe is out, everyone else is still refused. */
	assert_false(health_allow(&h, 101, &probe));
	/* The probe fails: a full cooldown again. */
	assert_false(health_failure(&h, 150));
	assert_false(health_allow(&h, 249, &probe));
	assert_true(health_allow(&h, 250, &probe));
	assert_true(probe);
	health_success(&h);
	assert_true(health_allow(&h, 251, &probe));
	assert_false(probe);
	assert_int_equal(health_get(&h, 251).consecutive_failures, 0);
	health_destroy(&h);
}

static void success_resets_count(void **state)
{
	(void)state;
	sy_health h;
	bool probe;
	health_init(&h, 2, 100);
	health_failure(&h, 0);
	health_success(&h);
	assert_false(health_failure(&h, 1));
	assert_true(health_allow(&h, 2, &probe));
	health_destroy(&h);
}

static void abandoned_probe_lets_next_probe(void **state)
{
	(void)state;
	sy_health h;
	bool probe;
	health_init(&h, 1, 10);
	health_failure(&h, 0);
	assert_true(health_allow(&h, 10, &probe));
	assert_true(probe);
	health_abandon_probe(&h);
	assert_true(health_allow(&h, 11, &probe));
	assert_true(probe);
	health_destroy(&h);
}

static void zero_threshold_disables(void **state)
{
	(void)state;
	sy_health h;
	bool probe;
	health_init(&h, 0, 100);
	for (int i = 0; i < 100; i++)
		assert_false(health_failure(&h, (uint64_t)i));
	assert_true(health_allow(&h, 100, &probe));
	assert_false(probe);
	assert_false(health_get(&h, 100).down);
	health_destroy(&h);
}

static void manual_reset(void **state)
{
	(void)state;
	sy_health h;
	bool probe;
	health_init(&h, 1, 100000);
	health_failure(&h, 0);
	assert_false(health_allow(&h, 1, &probe));
	health_reset(&h);
	assert_true(health_allow(&h, 2, &probe));
	assert_false(probe);
	health_destroy(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(opens_after_threshold),
	    cmocka_unit_test(one_probe_after_cooldown),
	    cmocka_unit_test(success_resets_count),
	    cmocka_unit_test(abandoned_probe_lets_next_probe),
	    cmocka_unit_test(zero_threshold_disables),
	    cmocka_unit_test(manual_reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
