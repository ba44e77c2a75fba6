/*
 * CIDR ranges and address matching (see cidr.h).
 *
 * Parsing is deliberately stricter than inet_aton(): "10.1" or "010.0.0.1"
 * are not accepted, because an operator who writes them almost certainly
 * means something other than what the legacy BSD parser makes of them, and a
 * trust list is the wrong place to guess.
 */
#include "switchyard/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* Parses a decimal prefix length: digits only (leading zeros allowed, as
 * the reference implementation allows them), at most `max`. */
static int parse_prefix(const char *s, size_t len, unsigned max, unsigned *out)
{
	unsigned v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
		if (v > max)
			return -1;
	}
	*out = v;
	return 0;
}

/* Narrows [*s, *s + *len) to exclude surrounding blanks. Operators write
 * "10.0.0.0 / 8" now and then, and the reference accepts it. */
static void trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

/* Clears every bit after the first `prefix` bits of `addr` (len bytes). */
static void clear_host_bits(uint8_t *addr, size_t len, unsigned prefix)
{
	for (size_t i = 0; i < len; i++) {
		unsigned bit = (unsigned)i * 8;
		if (bit >= prefix)
			addr[i] = 0;
		else if (prefix - bit < 8)
			addr[i] &= (uint8_t)(0xff << (8 - (prefix - bit)));
	}
}

int cidr_parse(const char *s, sy_cidr *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash, *a, *p = NULL;
	size_t alen, plen = 0;
	unsigned prefix;
	sy_cidr c;

	if (s == NULL || out == NULL)
		return -1;
	slash = strchr(s, '/');
	a = s;
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	trim(&a, &alen);
	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, a, alen);
	buf[alen] = '\0';
	if (slash != NULL) {
		p = slash + 1;
		plen = strlen(p);
		trim(&p, &plen);
	}

	memset(&c, 0, sizeof(c));
	if (inet_pton(AF_INET, buf, c.addr) == 1) {
		c.family = AF_INET;
		prefix = 32;
	} else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
		c.family = AF_INET6;
		prefix = 128;
	} else {
		return -1;
	}
	if (slash != NULL && parse_prefix(p, plen, prefix, &prefix) != 0)
		return -1;

	c.prefix = (uint8_t)prefix;
	clear_host_bits(c.addr, c.family == AF_INET ? 4 : 16, prefix);
	*out = c;
	return 0;
}

/* Compares the first `prefix` bits of a and b. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool cidr_match(const sy_cidr *c, const struct sockaddr *sa)
{
	uint8_t addr[16];
	int family;

	if (c == NULL || sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		memcpy(addr, &in->sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		memcpy(addr, &in6->sin6_addr, 16);
		family = AF_INET6;
		/* A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d;
		 * operators write their trust lists in IPv4 notation. */
		if (c->family == AF_INET && memcmp(addr, v4mapped_prefix, 12) == 0) {
			memmove(addr, addr + 12, 4);
			family = AF_INET;
		}
	} else {
		return false;
	}

	if (c->family == AF_INET6 && family == AF_INET) {
		/* The symmetric case: an IPv6 range written over the mapped
		 * space (::ffff:10.0.0.0/104) still covers a plain IPv4 peer. */
		memmove(addr + 12, addr, 4);
		memcpy(addr, v4mapped_prefix, 12);
		family = AF_INET6;
	}
	if (family != c->family)
		return false;
	return prefix_equal(addr, c->addr, c->prefix);
}

bool cidr_match_any(const sy_cidr *c, size_t n, const struct sockaddr *sa)
{
	for (size_t i = 0; i < n; i++) {
		if (cidr_match(&c[i], sa))
			return true;
	}
	return false;
}
