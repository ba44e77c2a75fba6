/*
 * libFuzzer target for proxy_parse().
 *
 * Build and run from the repository root:
 *   clang -std=c11 -D_GNU_SOURCE -g -fsanitize=fuzzer,address,undefined -Iinclude \
 *       src/net/proxy_protocol.c tests/fuzz/fuzz_proxy_protocol.c -o fuzz_proxy_protocol
 *   ./fuzz_proxy_protocol -max_len=4200
 *
 * Besides memory safety (the input is an exactly-sized buffer, so any read
 * beyond len trips ASan), it checks the contract the listener relies on: the
 * result is -1, 0 or a length within the input and PROXY_HEADER_MAX; every
 * strict prefix of a complete header is reported as "need more"; and parsed
 * addresses survive a proxy_v2_build round trip.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include "switchyard/proxy_protocol.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

/* Compares the parts of two INET/INET6 addresses that a header carries. */
static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port &&
		       memcmp(&x->sin_addr, &y->sin_addr, sizeof(x->sin_addr)) == 0;
	}
	const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
	const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sy_proxy_info info;
	int r = proxy_parse(data, size, &info);

	check(r >= -1);
	if (r <= 0) {
		/* "Need more" is only allowed while a header could still fit. */
		if (r == 0)
			check(size < PROXY_HEADER_MAX);
		return 0;
	}
	check((size_t)r <= size && r <= PROXY_HEADER_MAX);
	check(info.version == 1 || info.version == 2);

	/* The listener may have seen any shorter prefix on an earlier read. */
	for (size_t k = 0; k < (size_t)r; k++) {
		sy_proxy_info tmp;
		check(proxy_parse(data, k, &tmp) == 0);
	}
	check(proxy_parse(data, (size_t)r, &info) == r);

	if (info.local)
		return 0;
	check(info.src.ss_family == AF_INET || info.src.ss_family == AF_INET6);
	check(info.dst.ss_family == info.src.ss_family);

	/* Emitting and reparsing keeps the addresses, except that a v1 TCP6
	 * line may carry IPv4-mapped addresses which the builder unmaps. */
	uint8_t hdr[64];
	sy_proxy_info back;
	size_t n = proxy_v2_build(hdr, sizeof(hdr), (const struct sockaddr *)&info.src,
	                          (const struct sockaddr *)&info.dst);
	check(n == 28 || n == 52 || n == 16);
	check(proxy_parse(hdr, n, &back) == (int)n);
	if (n == 16)
		return 0; /* exactly one side was mapped: families differ */
	if (info.src.ss_family == back.src.ss_family) {
		check(same_addr(&info.src, &back.src));
		check(same_addr(&info.dst, &back.dst));
	}
	return 0;
}
