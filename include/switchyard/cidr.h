/*
 * CIDR ranges ("10.0.0.0/8", "2001:db8::/32", or a bare address meaning a
 * single host) and matching of socket addresses against them. IPv4-mapped
 * IPv6 peers (::ffff:a.b.c.d) match IPv4 ranges.
 */
#ifndef SWITCHYARD_CIDR_H
#define SWITCHYARD_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct sy_cidr {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network address, host bits cleared */
	uint8_t prefix;   /* 0..32 or 0..128 */
} sy_cidr;

/* Parses `s`; returns 0, or -1 for malformed text, prefix out of range or set
 * host bits are accepted and cleared (operators write 10.1.2.3/8 often). */
int cidr_parse(const char *s, sy_cidr *out);

/* True if the address (AF_INET or AF_INET6 sockaddr) lies within the range. */
bool cidr_match(const sy_cidr *c, const struct sockaddr *sa);

/* True if the address lies within any of the n ranges. */
bool cidr_match_any(const sy_cidr *c, size_t n, const struct sockaddr *sa);

#endif
