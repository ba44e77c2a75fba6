/*
 * Unit tests for src/core/cidr.c: parsing (accepted forms, host bits cleared,
 * malformed text rejected) and matching of IPv4, IPv6 and IPv4-mapped peers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "switchyard/cidr.h"

/* Builds a sockaddr for a literal address (v4 or v6). */
static const struct sockaddr *sa(const char *text)
{
	static struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(12345);
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(12345);
	}
	return (const struct sockaddr *)&ss;
}

static void test_parse_valid(void **state)
{
	(void)state;
	sy_cidr c;

	assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(c.addr[0], 10);

	/* Host bits are accepted and cleared. */
	assert_int_equal(cidr_parse("10.1.2.3/8", &c), 0);
	assert_int_equal(c.addr[0], 10);
	assert_int_equal(c.addr[1], 0);
	assert_int_equal(c.addr[2], 0);
	assert_int_equal(c.addr[3], 0);
	assert_int_equal(cidr_parse("192.168.255.255/20", &c), 0);
	assert_int_equal(c.addr[2], 0xf0);
	assert_int_equal(c.addr[3], 0);

	/* A bare address is a single host. */
	assert_int_equal(cidr_parse("192.0.2.7", &c), 0);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(cidr_parse("2001:db8::1", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 128);

	assert_int_equal(cidr_parse("2001:db8:ffff::/33", &c), 0);
	assert_int_equal(c.prefix, 33);
	assert_int_equal(c.addr[4], 0x80); /* 0xff with 1 bit kept */
	assert_int_equal(c.addr[5], 0);

	assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(cidr_parse("::/0", &c), 0);
	assert_int_equal(cidr_parse("::ffff:10.0.0.0/104", &c), 0);
	assert_int_equal(c.family, AF_INET6);

	/* Surrounding blanks and leading zeros, as the reference accepts. */
	assert_int_equal(cidr_parse(" 10.0.0.0 / 08 ", &c), 0);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(cidr_parse("2001:db8::/0128", &c), 0);
	assert_int_equal(c.prefix, 128);
}

static void test_parse_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    "/8",
	    "10.0.0.0/",
	    "10.0.0.0/33",
	    "10.0.0.0/-1",
	    "10.0.0.0/+8",
	    "10.0.0.0/8/8",
	    "10.0.0.0/8 8",
	    "10.0.0. 0/8",
	    "10.0.0/8",
	    "10.0.0.256/32",
	    "010.0.0.1",
	    "10.1",
	    "::/129",
	    "2001:db8::/0129",
	    "fe80::1%eth0/64",
	    "localhost/8",
	    "10.0.0.0/abc",
	    "10.0.0.0/8x",
	    "1.2.3.4.5",
	};
	sy_cidr c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cidr_parse(bad[i], &c) == 0)
			fail_msg("CIDR \"%s\" was accepted", bad[i]);
	}
	assert_int_equal(cidr_parse(NULL, &c), -1);
}

static void test_match_v4(void **state)
{
	(void)state;
	sy_cidr c;

	assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
	assert_true(cidr_match(&c, sa("10.0.0.1")));
	assert_true(cidr_match(&c, sa("10.255.255.255")));
	assert_false(cidr_match(&c, sa("11.0.0.1")));
	assert_false(cidr_match(&c, sa("2001:db8::1")));

	assert_int_equal(cidr_parse("192.168.16.0/20", &c), 0);
	assert_true(cidr_match(&c, sa("192.168.31.255")));
	assert_false(cidr_match(&c, sa("192.168.32.0")));
	assert_false(cidr_match(&c, sa("192.168.15.255")));

	assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);
	assert_true(cidr_match(&c, sa("203.0.113.9")));

	assert_int_equal(cidr_parse("127.0.0.1", &c), 0);
	assert_true(cidr_match(&c, sa("127.0.0.1")));
	assert_false(cidr_match(&c, sa("127.0.0.2")));
}

static void test_match_v6_and_mapped(void **state)
{
	(void)state;
	sy_cidr c;

	assert_int_equal(cidr_parse("2001:db8::/32", &c), 0);
	assert_true(cidr_match(&c, sa("2001:db8:1234::1")));
	assert_false(cidr_match(&c, sa("2001:db9::1")));
	assert_false(cidr_match(&c, sa("10.0.0.1")));

	/* An IPv4 peer seen through a dual-stack socket matches IPv4 ranges. */
	assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
	assert_true(cidr_match(&c, sa("::ffff:10.1.2.3")));
	assert_false(cidr_match(&c, sa("::ffff:11.1.2.3")));
	/* ...but a v6 address that merely ends in those bytes does not. */
	assert_false(cidr_match(&c, sa("::10.1.2.3")));

	/* And a range written in mapped notation matches plain IPv4 peers. */
	assert_int_equal(cidr_parse("::ffff:10.0.0.0/104", &c), 0);
	assert_true(cidr_match(&c, sa("10.9.9.9")));
	assert_true(cidr_match(&c, sa("::ffff:10.9.9.9")));
	assert_false(cidr_match(&c, sa("11.9.9.9")));

	assert_int_equal(cidr_parse("::1", &c), 0);
	assert_true(cidr_match(&c, sa("::1")));
	assert_false(cidr_match(&c, sa("127.0.0.1")));
}

static void test_match_any(void **state)
{
	(void)state;
	sy_cidr list[3];

	assert_int_equal(cidr_parse("10.0.0.0/8", &list[0]), 0);
	assert_int_equal(cidr_parse("192.168.0.0/16", &list[1]), 0);
	assert_int_equal(cidr_parse("fd00::/8", &list[2]), 0);
	assert_true(cidr_match_any(list, 3, sa("192.168.1.1")));
	assert_true(cidr_match_any(list, 3, sa("fd12::1")));
	assert_false(cidr_match_any(list, 3, sa("172.16.0.1")));
	assert_false(cidr_match_any(list, 0, sa("10.0.0.1")));

	struct sockaddr_storage unix_like = {.ss_family = AF_UNIX};
	assert_false(cidr_match_any(list, 3, (const struct sockaddr *)&unix_like));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_valid), cmocka_unit_test(test_parse_invalid),
	    cmocka_unit_test(test_match_v4),    cmocka_unit_test(test_match_v6_and_mapped),
	    cmocka_unit_test(test_match_any),
	};
	return cmocka_run_group_tests_name("cidr", tests, NULL, NULL);
}
