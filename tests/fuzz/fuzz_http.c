/*
 * libFuzzer target for the HTTP request-head checks of src/proto/http.c
 * (http_request_head_status: the raw-byte rules, http-parser, and the
 * request-smuggling rules). The input is a request head; "\r\n\r\n" is
 * appended when it lacks one and the input is cut after the first, as the module only checks
 * complete heads.
 *
 * Checks: the answer is 0 or one of the statuses the module produces; an
 * accepted head has no bare LF, no control byte but HT, no obsolete
 * folding, and exactly one Host header line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/protocols.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 4);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	/* The module's head ends at the first empty line. */
	char *end = memmem(buf, size, "\r\n\r\n", 4);
	size_t len = end ? (size_t)(end - buf) + 4 : size;
	if (!end) {
		memcpy(buf + len, "\r\n\r\n", 4);
		len += 4;
	}
	size_t nh = 0;
	int r = http_request_head_status(buf, len, &nh);
	check(r == 0 || r == 400 || r == 405 || r == 431 || r == 505 || r == -1);
	if (r == 0) {
		size_t hosts = 0;
		for (size_t i = 0; i < len; i++) {
			unsigned char ch = (unsigned char)buf[i];
			if (ch == '\n') {
				check(i > 0 && buf[i - 1] == '\r');
				check(i + 1 >= len || (buf[i + 1] != ' ' && buf[i + 1] != '\t'));
				if (i + 5 < len && strncasecmp(buf + i + 1, "host:", 5) == 0)
					hosts++;
			} else if (ch != '\r') {
				check(ch >= 0x20 || ch == '\t');
				check(ch != 0x7f);
			}
		}
		check(hosts == 1);
	}
	free(buf);
	return 0;
}
