/*
 * Unit tests for src/core/proxy_protocol.c: table-driven parse cases (each
 * also fed byte by byte, since the listener calls the parser after every
 * read), v2 emission round trips, and the log formatter.
 *
 * Every parse is done on a heap buffer of exactly the input's size so that
 * AddressSanitizer catches any read beyond len.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "switchyard/proxy_protocol.h"

#define V2_SIG "0d0a0d0a000d0a515549540a"

enum expect { EXP_OK, EXP_MORE, EXP_BAD };

struct parse_case {
	const char *name;
	const char *text;    /* v1-style input, or NULL */
	const char *hex;     /* binary input as hex (spaces ignored), or NULL */
	size_t pad;          /* this many pad_byte bytes follow text/hex, still in the header */
	char pad_byte;       /* 0 means NUL */
	const char *trailer; /* bytes after the header (the client's first command) */
	enum expect expect;
	bool local;
	int version;
	const char *src; /* sy_sockaddr_str(..., true) of the parsed addresses */
	const char *dst;
};

/* The longest v1 line the spec allows: 107 bytes including CRLF. */
#define FFFF8 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

static const struct parse_case cases[] = {
    /* v1, valid */
    {"v1 tcp4", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", NULL, 0, 0, "", EXP_OK, false,
     1, "192.168.0.1:56324", "192.168.0.11:443"},
    {"v1 tcp4 + data", "PROXY TCP4 10.0.0.1 10.0.0.2 1 25\r\n", NULL, 0, 0, "EHLO x\r\n", EXP_OK,
     false, 1, "10.0.0.1:1", "10.0.0.2:25"},
    {"v1 tcp4 longest", "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", NULL, 0, 0,
     "", EXP_OK, false, 1, "255.255.255.255:65535", "255.255.255.255:65535"},
    {"v1 tcp4 port 0", "PROXY TCP4 0.0.0.0 1.2.3.4 0 0\r\n", NULL, 0, 0, "", EXP_OK, false, 1,
     "0.0.0.0:0", "1.2.3.4:0"},
    {"v1 tcp6", "PROXY TCP6 2001:db8::1 ::1 1234 25\r\n", NULL, 0, 0, "a001 LOGIN\r\n", EXP_OK,
     false, 1, "[2001:db8::1]:1234", "[::1]:25"},
    {"v1 tcp6 longest", "PROXY TCP6 " FFFF8 " " FFFF8 " 65535 65535\r\n", NULL, 0, 0, "", EXP_OK,
     false, 1, "[" FFFF8 "]:65535", "[" FFFF8 "]:65535"},
    {"v1 tcp6 uppercase hex", "PROXY TCP6 2001:DB8::A ::B 1 2\r\n", NULL, 0, 0, "", EXP_OK, false,
     1, "[2001:db8::a]:1", "[::b]:2"},
    {"v1 unknown short", "PROXY UNKNOWN\r\n", NULL, 0, 0, "+OK\r\n", EXP_OK, true, 1, NULL, NULL},
    {"v1 unknown longest", "PROXY UNKNOWN " FFFF8 " " FFFF8 " 65535 65535\r\n", NULL, 0, 0, "",
     EXP_OK, true, 1, NULL, NULL},
    {"v1 unknown anything", "PROXY UNKNOWN whatever\tgoes here\r\n", NULL, 0, 0, "", EXP_OK, true,
     1, NULL, NULL},

    /* v1, incomplete */
    {"empty", "", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v1 P", "P", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v1 PROXY", "PROXY", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v1 PROXY TC", "PROXY TC", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v1 partial addr", "PROXY TCP4 1.2.3", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v1 partial port", "PROXY TCP4 1.2.3.4 5.6.7.8 655", NULL, 0, 0, "", EXP_MORE, false, 0, NULL,
     NULL},
    {"v1 CR without LF yet", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", NULL, 0, 0, "", EXP_MORE, false, 0,
     NULL, NULL},
    {"v1 unknown no CRLF", "PROXY UNKNOWN 1.2.3.4", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},

    /* v1, invalid */
    {"garbage EHLO", "EHLO x\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"garbage GET", "GET / HTTP/1.1", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"garbage one byte", "a", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"garbage TLS hello", NULL, "16030100", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 lowercase", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 PROXI", "PROXI", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 PROXY CRLF", "PROXY\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 PROXY space CRLF", "PROXY \r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 TCP4 CRLF", "PROXY TCP4\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 UDP4 partial", "PROXY U", NULL, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 two spaces", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 double space fields", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD,
     false, 0, NULL, NULL},
    {"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 fifth field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 bare CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 LF in unknown", "PROXY UNKNOWN a\nb\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 port 99999 early", "PROXY TCP4 1.2.3.4 5.6.7.8 99999", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 port plus", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 port minus", "PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", NULL, 0, 0, "", EXP_BAD, false,
     0, NULL, NULL},
    {"v1 port hex", "PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 octet 256", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0,
     NULL, NULL},
    {"v1 octet leading zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false,
     0, NULL, NULL},
    {"v1 short ipv4", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 ipv6 in tcp4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 ipv4 in tcp6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v1 bad ipv6", "PROXY TCP6 1:::2 ::1 1 2\r\n", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 overlong no CRLF", "PROXY UNKNOWN ", NULL, 93, 'a', "", EXP_BAD, false, 0, NULL, NULL},
    {"v1 CRLF at 108", "PROXY UNKNOWN ", NULL, 92, 'a', "\r\n", EXP_BAD, false, 0, NULL, NULL},

    /* v2, valid */
    {"v2 tcp4", NULL, V2_SIG "21 11 000c 01020304 05060708 0019 01bb", 0, 0, "EHLO x\r\n", EXP_OK,
     false, 2, "1.2.3.4:25", "5.6.7.8:443"},
    {"v2 tcp6", NULL,
     V2_SIG "21 21 0024 20010db8000000000000000000000001 00000000000000000000000000000001"
            " 04d2 008f",
     0, 0, "", EXP_OK, false, 2, "[2001:db8::1]:1234", "[::1]:143"},
    {"v2 local", NULL, V2_SIG "20 00 0000", 0, 0, "* OK\r\n", EXP_OK, true, 2, NULL, NULL},
    {"v2 local with addresses", NULL, V2_SIG "20 11 000c 01020304 05060708 0019 01bb", 0, 0, "",
     EXP_OK, true, 2, NULL, NULL},
    {"v2 local odd family", NULL, V2_SIG "20 ff 0000", 0, 0, "", EXP_OK, true, 2, NULL, NULL},
    {"v2 proxy unspec", NULL, V2_SIG "21 00 0000", 0, 0, "", EXP_OK, true, 2, NULL, NULL},
    {"v2 udp4", NULL, V2_SIG "21 12 000c 01020304 05060708 0019 01bb", 0, 0, "", EXP_OK, true, 2,
     NULL, NULL},
    {"v2 udp6", NULL, V2_SIG "21 22 0024", 36, 0, "", EXP_OK, true, 2, NULL, NULL},
    {"v2 unix stream", NULL, V2_SIG "21 31 00d8", 216, 0, "x", EXP_OK, true, 2, NULL, NULL},
    {"v2 tcp4 with TLVs", NULL,
     V2_SIG "21 11 0017 0a000001 0a000002 3039 0019 04 0003 616263 01 0002 6832", 0, 0, "QUIT\r\n",
     EXP_OK, false, 2, "10.0.0.1:12345", "10.0.0.2:25"},
    {"v2 largest header", NULL, V2_SIG "21 11 0ff0 0a000001 0a000002 3039 0019 04 0fe1", 4065, 'z',
     "", EXP_OK, false, 2, "10.0.0.1:12345", "10.0.0.2:25"},

    /* v2, incomplete */
    {"v2 CR", NULL, "0d", 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v2 sig prefix with NUL", NULL, "0d0a0d0a00", 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v2 sig only", NULL, V2_SIG, 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v2 no length yet", NULL, V2_SIG "21 11 00", 0, 0, "", EXP_MORE, false, 0, NULL, NULL},
    {"v2 tcp4 one short", NULL, V2_SIG "21 11 000c 01020304 05060708 0019 01", 0, 0, "", EXP_MORE,
     false, 0, NULL, NULL},

    /* v2, invalid */
    {"v2 bad sig", NULL, "0d0a0d0a000d0a515549580a 21 11 0000", 0, 0, "", EXP_BAD, false, 0, NULL,
     NULL},
    {"v2 bad sig early", NULL, "0d0a58", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 CRLF only then text", "\r\nEHLO", NULL, 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 version 1", NULL, V2_SIG "11 11 000c", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 version 3", NULL, V2_SIG "31", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 command 2", NULL, V2_SIG "22", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 command f", NULL, V2_SIG "2f 11 000c", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 family 4", NULL, V2_SIG "21 41", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 transport 3", NULL, V2_SIG "21 13", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 length too large", NULL, V2_SIG "21 11 0ff1", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 length 0xffff", NULL, V2_SIG "20 00 ffff", 0, 0, "", EXP_BAD, false, 0, NULL, NULL},
    {"v2 tcp4 block short", NULL, V2_SIG "21 11 000b 01020304 05060708 0019 01", 0, 0, "", EXP_BAD,
     false, 0, NULL, NULL},
    {"v2 tcp6 block short", NULL, V2_SIG "21 21 000c 01020304 05060708 0019 01bb", 0, 0, "",
     EXP_BAD, false, 0, NULL, NULL},
    {"v2 unix block short", NULL, V2_SIG "21 31 0064", 100, 0, "", EXP_BAD, false, 0, NULL, NULL},
};

/* Decodes hex digits, ignoring spaces, into out; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;
	int hi = -1;

	for (const char *p = hex; *p; p++) {
		int v = 0;
		if (*p == ' ')
			continue;
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			v = *p - 'a' + 10;
		else
			fail_msg("bad hex digit in test vector: %c", *p);
		if (hi < 0) {
			hi = v;
		} else {
			out[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	assert_int_equal(hi, -1);
	return n;
}

/* Builds a case's input into a fresh buffer; *hdr_len is the header part. */
static uint8_t *build_input(const struct parse_case *c, size_t *len, size_t *hdr_len)
{
	size_t cap = 2 * PROXY_HEADER_MAX;
	uint8_t *buf = malloc(cap);
	size_t n;

	assert_non_null(buf);
	if (c->text) {
		n = strlen(c->text);
		memcpy(buf, c->text, n);
	} else {
		n = unhex(c->hex, buf);
	}
	memset(buf + n, c->pad_byte, c->pad);
	n += c->pad;
	*hdr_len = n;
	memcpy(buf + n, c->trailer, strlen(c->trailer));
	n += strlen(c->trailer);
	assert_true(n <= cap);
	*len = n;
	return buf;
}

/* Parses buf[0..len) from an exactly-sized heap copy so ASan sees over-reads,
 * and checks that *out is untouched unless a header was found. */
static int parse_exact(const uint8_t *buf, size_t len, sy_proxy_info *out)
{
	uint8_t *copy = malloc(len ? len : 1);
	sy_proxy_info sentinel;
	int r;

	assert_non_null(copy);
	if (len)
		memcpy(copy, buf, len);
	memset(out, 0xAB, sizeof(*out));
	memset(&sentinel, 0xAB, sizeof(sentinel));
	r = proxy_parse(len ? copy : NULL, len, out);
	free(copy);
	if (r <= 0)
		assert_memory_equal(out, &sentinel, sizeof(*out));
	return r;
}

static void check_info(const struct parse_case *c, const sy_proxy_info *info)
{
	char s[64], d[64];

	assert_int_equal(info->local, c->local);
	assert_int_equal(info->version, c->version);
	if (c->local) {
		assert_int_equal(info->src.ss_family, AF_UNSPEC);
		assert_int_equal(info->dst.ss_family, AF_UNSPEC);
		return;
	}
	sy_sockaddr_str((const struct sockaddr *)&info->src, s, sizeof(s), true);
	sy_sockaddr_str((const struct sockaddr *)&info->dst, d, sizeof(d), true);
	assert_string_equal(s, c->src);
	assert_string_equal(d, c->dst);
}

/* Whole input at once: the expected verdict and, for a header, its length
 * (not including the trailer) and addresses. */
static void test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct parse_case *c = &cases[i];
		size_t len, hdr_len;
		uint8_t *buf = build_input(c, &len, &hdr_len);
		sy_proxy_info info;
		int r = parse_exact(buf, len, &info);

		print_message("case %-28s -> %d\n", c->name, r);
		switch (c->expect) {
		case EXP_OK:
			assert_int_equal(r, (int)hdr_len);
			check_info(c, &info);
			break;
		case EXP_MORE:
			assert_int_equal(r, 0);
			break;
		case EXP_BAD:
			assert_int_equal(r, -1);
			break;
		}
		free(buf);
	}
}

/* Feeding one byte more at a time: a valid header must give 0 on every
 * strict prefix and its length once complete; an invalid input must never
 * go back from -1 to 0, since more bytes cannot repair a bad prefix. */
static void test_parse_incremental(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct parse_case *c = &cases[i];
		size_t len, hdr_len;
		uint8_t *buf = build_input(c, &len, &hdr_len);
		sy_proxy_info info;
		bool seen_bad = false;

		for (size_t k = 0; k <= len; k++) {
			int r = parse_exact(buf, k, &info);
			if (c->expect == EXP_OK) {
				if (k < hdr_len) {
					assert_int_equal(r, 0);
				} else {
					assert_int_equal(r, (int)hdr_len);
					check_info(c, &info);
				}
			} else {
				assert_true(r == 0 || r == -1);
				if (seen_bad)
					assert_int_equal(r, -1);
				seen_bad = r == -1;
			}
		}
		free(buf);
	}
}

static struct sockaddr_storage mk(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	}
	return ss;
}

struct build_case {
	const char *src_ip;
	uint16_t src_port;
	const char *dst_ip;
	uint16_t dst_port;
	size_t len; /* expected header length */
	bool local;
	const char *src; /* parsed back, with port */
	const char *dst;
};

static const struct build_case build_cases[] = {
    {"192.0.2.1", 40000, "198.51.100.2", 993, 28, false, "192.0.2.1:40000", "198.51.100.2:993"},
    {"2001:db8::5", 1, "2001:db8::25", 587, 52, false, "[2001:db8::5]:1", "[2001:db8::25]:587"},
    {"::ffff:192.0.2.1", 40000, "::ffff:198.51.100.2", 143, 28, false, "192.0.2.1:40000",
     "198.51.100.2:143"},
    {"::ffff:192.0.2.1", 40000, "198.51.100.2", 110, 28, false, "192.0.2.1:40000",
     "198.51.100.2:110"},
    {"192.0.2.1", 40000, "2001:db8::25", 25, 16, true, NULL, NULL},
    {"2001:db8::5", 40000, "::ffff:198.51.100.2", 25, 16, true, NULL, NULL},
};

/* Emit then parse: addresses survive, mapped ones come back as IPv4, mixed
 * families become LOCAL, and the exact size is both needed and enough. */
static void test_build_roundtrip(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(build_cases) / sizeof(build_cases[0]); i++) {
		const struct build_case *c = &build_cases[i];
		struct sockaddr_storage s = mk(c->src_ip, c->src_port);
		struct sockaddr_storage d = mk(c->dst_ip, c->dst_port);
		uint8_t out[64];
		char a[64], b[64];
		sy_proxy_info info;

		memset(out, 0x5A, sizeof(out));
		assert_int_equal(
		    proxy_v2_build(out, c->len - 1, (struct sockaddr *)&s, (struct sockaddr *)&d),
		    0);
		assert_int_equal(out[0], 0x5A);
		assert_int_equal(
		    proxy_v2_build(out, c->len, (struct sockaddr *)&s, (struct sockaddr *)&d),
		    c->len);
		assert_int_equal(out[12], c->local ? 0x20 : 0x21);
		assert_int_equal(parse_exact(out, c->len, &info), (int)c->len);
		assert_int_equal(info.version, 2);
		assert_int_equal(info.local, c->local);
		if (c->local) {
			assert_int_equal(out[13], 0x00);
			assert_int_equal(out[14], 0);
			assert_int_equal(out[15], 0);
			continue;
		}
		sy_sockaddr_str((struct sockaddr *)&info.src, a, sizeof(a), true);
		sy_sockaddr_str((struct sockaddr *)&info.dst, b, sizeof(b), true);
		assert_string_equal(a, c->src);
		assert_string_equal(b, c->dst);
	}
}

/* Anything but INET/INET6 on either side, or a missing address, is LOCAL. */
static void test_build_other_families(void **state)
{
	struct sockaddr_un un;
	struct sockaddr_storage v4 = mk("192.0.2.1", 25);
	uint8_t out[64];
	sy_proxy_info info;

	(void)state;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	strcpy(un.sun_path, "/run/x.sock");
	assert_int_equal(
	    proxy_v2_build(out, sizeof(out), (struct sockaddr *)&un, (struct sockaddr *)&v4), 16);
	assert_int_equal(parse_exact(out, 16, &info), 16);
	assert_true(info.local);
	assert_int_equal(proxy_v2_build(out, sizeof(out), NULL, (struct sockaddr *)&v4), 16);
	assert_int_equal(out[12], 0x20);
	assert_int_equal(proxy_v2_build(out, 15, NULL, NULL), 0);
	assert_int_equal(proxy_v2_build(out, 16, NULL, NULL), 16);
}

struct str_case {
	const char *ip; /* NULL: a NULL sockaddr */
	uint16_t port;
	const char *bare;
	const char *with_port;
};

static const struct str_case str_cases[] = {
    {"1.2.3.4", 25, "1.2.3.4", "1.2.3.4:25"},
    {"::1", 25, "::1", "[::1]:25"},
    {"2001:db8::1", 65535, "2001:db8::1", "[2001:db8::1]:65535"},
    {"::ffff:1.2.3.4", 25, "1.2.3.4", "1.2.3.4:25"},
    {"::", 0, "::", "[::]:0"},
    {NULL, 0, "unknown", "unknown"},
};

static void test_sockaddr_str(void **state)
{
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(str_cases) / sizeof(str_cases[0]); i++) {
		const struct str_case *c = &str_cases[i];
		struct sockaddr_storage ss;
		const struct sockaddr *sa = NULL;

		if (c->ip) {
			ss = mk(c->ip, c->port);
			sa = (const struct sockaddr *)&ss;
		}
		sy_sockaddr_str(sa, out, sizeof(out), false);
		assert_string_equal(out, c->bare);
		sy_sockaddr_str(sa, out, sizeof(out), true);
		assert_string_equal(out, c->with_port);
	}

	/* Truncation keeps the result NUL-terminated; outlen 0 writes nothing. */
	struct sockaddr_storage ss = mk("10.20.30.40", 25);
	sy_sockaddr_str((struct sockaddr *)&ss, out, 5, true);
	assert_string_equal(out, "10.2");
	out[0] = 'Q';
	sy_sockaddr_str((struct sockaddr *)&ss, out, 0, true);
	assert_int_equal(out[0], 'Q');

	struct sockaddr_un un;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	sy_sockaddr_str((struct sockaddr *)&un, out, sizeof(out), true);
	assert_string_equal(out, "unknown");
}

/* proxy_detect: the signature alone decides, as early as the bytes allow. */
static void test_detect(void **state)
{
	(void)state;
	static const uint8_t sig2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	static const struct {
		const char *bytes;
		size_t len;
		int want;
	} dcases[] = {
	    {"", 0, 0},
	    {"P", 1, 0},
	    {"PROXY", 5, 0},
	    {"PROXY ", 6, 1},
	    {"PROXY TCP4 1.2.3.4", 18, 1},
	    {"PROXY\r\n", 7, -1},
	    {"PROXYZ", 6, -1},
	    {"POST / HTTP/1.1", 15, -1}, /* decided at the second byte */
	    {"PO", 2, -1},
	    {"\r", 1, 0},
	    {"\r\n\r\n", 4, 0},
	    {"\r\n\r\n\0\r\nQUI", 10, 0},
	    {"\r\nQUIT", 6, -1},
	    {"\r\n", 2, 0},          /* a stray empty line: undecided until more comes */
	    {"a1 LOGIN", 8, -1},     /* IMAP */
	    {"EHLO x", 6, -1},       /* SMTP */
	    {"\x16\x03\x01", 3, -1}, /* TLS ClientHello */
	    {"\x16", 1, -1},
	};
	for (size_t i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
		int got = proxy_detect((const uint8_t *)dcases[i].bytes, dcases[i].len);
		if (got != dcases[i].want)
			fail_msg("case %zu: got %d, want %d", i, got, dcases[i].want);
	}
	assert_int_equal(proxy_detect(NULL, 0), 0);
	assert_int_equal(proxy_detect(sig2, 12), 1);
	uint8_t longer[40] = {0};
	memcpy(longer, sig2, 12);
	longer[12] = 0x21;
	assert_int_equal(proxy_detect(longer, sizeof(longer)), 1);
	/* Every strict prefix of the v2 signature is undecided. */
	for (size_t n = 0; n < 12; n++)
		assert_int_equal(proxy_detect(sig2, n), 0);
	/* One wrong byte anywhere in it decides. */
	for (size_t n = 0; n < 12; n++) {
		uint8_t bad[12];
		memcpy(bad, sig2, 12);
		bad[n] ^= 0x40;
		assert_int_equal(proxy_detect(bad, n + 1), -1);
	}
}

/* Feeds `reads` (NULL-terminated) to a fresh stage; returns the last result. */
static sy_pstage feed_all(sy_proxy_stage *ps, char *block, bool optional, const char *const *reads,
                          sy_proxy_info *info)
{
	memset(ps, 0, sizeof(*ps));
	ps->buf = block;
	ps->cap = 32768;
	ps->optional = optional;
	sy_pstage r = SY_PSTAGE_MORE;
	for (size_t i = 0; reads[i] && r == SY_PSTAGE_MORE; i++)
		r = proxy_stage_feed(ps, reads[i], strlen(reads[i]), info);
	return r;
}

static void test_stage(void **state)
{
	(void)state;
	char *block = malloc(32768);
	assert_non_null(block);
	sy_proxy_stage ps;
	sy_proxy_info info;
	char a[64];

	/* A header and the first command in one read: the command is left. */
	const char *one[] = {"PROXY TCP4 192.0.2.1 198.51.100.2 5000 143\r\na LOGIN u p\r\n", NULL};
	assert_int_equal(feed_all(&ps, block, false, one, &info), SY_PSTAGE_HEADER);
	assert_int_equal(ps.len, 13);
	assert_memory_equal(ps.buf, "a LOGIN u p\r\n", 13);
	sy_sockaddr_str((struct sockaddr *)&info.src, a, sizeof(a), true);
	assert_string_equal(a, "192.0.2.1:5000");

	/* Split anywhere, the same. */
	const char *split[] = {"PROXY TCP4 192.0.2.1 198.51", ".100.2 5000 143\r", "\na LOG", NULL};
	assert_int_equal(feed_all(&ps, block, false, split, &info), SY_PSTAGE_HEADER);
	assert_int_equal(ps.len, 5);
	assert_memory_equal(ps.buf, "a LOG", 5);

	/* Required: no header is invalid; optional: the bytes are the client's. */
	const char *none[] = {"a LOGIN u p\r\n", NULL};
	assert_int_equal(feed_all(&ps, block, false, none, &info), SY_PSTAGE_INVALID);
	assert_int_equal(feed_all(&ps, block, true, none, &info), SY_PSTAGE_NONE);
	assert_int_equal(ps.len, 13);
	assert_false(ps.committed);

	/* Optional: a signature prefix held, then decided either way. */
	const char *pre_no[] = {"PRO", "Z\r\n", NULL};
	assert_int_equal(feed_all(&ps, block, true, pre_no, &info), SY_PSTAGE_NONE);
	assert_int_equal(ps.len, 6);
	assert_memory_equal(ps.buf, "PROZ\r\n", 6);
	const char *pre_yes[] = {"PRO", "XY UNKNOWN\r\n+", NULL};
	assert_int_equal(feed_all(&ps, block, true, pre_yes, &info), SY_PSTAGE_HEADER);
	assert_true(ps.committed && info.local);
	assert_int_equal(ps.len, 1);

	/* Optional, committed: a bad header is refused, not passed on. */
	const char *bad[] = {"PROXY TCP4 1.2.3.4 5.6.7.8 0100 1\r\n", NULL};
	assert_int_equal(feed_all(&ps, block, true, bad, &info), SY_PSTAGE_INVALID);

	/* Optional, no header, more than a block with the held prefix. */
	char *big = malloc(32769);
	assert_non_null(big);
	memset(big, 'x', 32768);
	big[32768] = '\0';
	const char *over[] = {"\r\n", big, NULL};
	assert_int_equal(feed_all(&ps, block, true, over, &info), SY_PSTAGE_OVERFLOW);

	/* A header's end beyond the first PROXY_HEADER_MAX bytes of one read:
	 * the rest of the read is kept. */
	const char *hdr = "PROXY UNKNOWN\r\n";
	memcpy(big, hdr, strlen(hdr));
	big[32767] = '\0';
	const char *far[] = {big, NULL};
	assert_int_equal(feed_all(&ps, block, false, far, &info), SY_PSTAGE_HEADER);
	assert_int_equal(ps.len, 32767 - strlen(hdr));
	free(big);
	free(block);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),     cmocka_unit_test(test_parse_incremental),
	    cmocka_unit_test(test_build_roundtrip), cmocka_unit_test(test_build_other_families),
	    cmocka_unit_test(test_sockaddr_str),    cmocka_unit_test(test_detect),
	    cmocka_unit_test(test_stage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
