/*
 * libFuzzer target for the response framing of src/proto/http.c
 * (http_response_scan: the same http-parser callbacks the module relays
 * backend bytes with). The first input byte says what the request was (bit
 * 0: HEAD, bit 1: an upgrade); the rest is what the backend sent before
 * closing.
 *
 * Checks: the answer is one of the documented results; never more bytes
 * used than given; a completed response is a final one (>= 200), an
 * upgrade is a 101 to an upgrade request; where a completed response ends
 * does not change when more bytes follow it (an answer to HEAD, a 204 or a
 * 304 ends at its head whatever Content-Length says).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/protocols.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool head = data[0] & 1, upgrade = data[0] & 2;
	const char *d = (const char *)data + 1;
	size_t n = size - 1;
	size_t used = 0;
	int status = 0;
	int r = http_response_scan(d, n, head, upgrade, &used, &status);
	check(r >= -1 && r <= 3);
	if (r == -1 || r == 3)
		return 0;
	check(used <= n);
	if (r == 1)
		check(status >= 200 && status <= 999);
	if (r == 2)
		check(status == 101 && upgrade);
	/* Where a response ends does not depend on what follows it: a response
	 * that ended before the backend's close (or has no body by its status
	 * or the request's method) ends at the same byte when other bytes come
	 * after it. This is what keeps a 304 claiming a Content-Length from
	 * swallowing the next response. */
	if (r == 1 && (used < n || head || status == 204 || status == 304)) {
		static const char tail[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nX";
		char *buf = malloc(used + sizeof(tail));
		if (!buf)
			return 0;
		memcpy(buf, d, used);
		memcpy(buf + used, tail, sizeof(tail) - 1);
		size_t used2 = 0;
		int status2 = 0;
		int r2 = http_response_scan(buf, used + sizeof(tail) - 1, head, upgrade, &used2,
		                            &status2);
		free(buf);
		check(r2 == -1 || (r2 == 1 && used2 == used && status2 == status));
	}
	return 0;
}
