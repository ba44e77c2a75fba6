/*
 * PROXY protocol v1/v2 parsing and v2 emission (see proxy_protocol.h and
 * HAProxy's doc/proxy-protocol.txt).
 *
 * The parser is written for a listener that calls it after every read with
 * everything received so far, so it must decide as early as possible: a
 * client that is not a load balancer should be rejected on its first bytes,
 * and one that is should never be made to send more than a header's worth
 * before we answer. Every prefix is therefore checked for consistency with
 * some valid header, not just the complete one.
 */
#include "switchyard/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* The longest v1 line including CRLF, as computed by the spec for
 * "PROXY UNKNOWN" followed by two full IPv6 addresses and two ports. */
#define V1_LINE_MAX 107

/* The longest textual address inet_pton can accept, without the NUL. */
#define V1_ADDR4_MAX 15
#define V1_ADDR6_MAX (INET6_ADDRSTRLEN - 1)

#define V2_HDR_LEN   16
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_AF_UNSPEC 0x0
#define V2_AF_INET   0x1
#define V2_AF_INET6  0x2
#define V2_AF_UNIX   0x3
#define V2_TP_UNSPEC 0x0
#define V2_TP_STREAM 0x1
#define V2_TP_DGRAM  0x2

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN (sizeof(v1_prefix) - 1)

/* Results of checking a (possibly partial) piece of a header. */
enum check { CHECK_BAD = -1, CHECK_MORE = 0, CHECK_OK = 1 };

/* v1 address family announced after "PROXY ". */
enum v1_proto { V1_TCP4, V1_TCP6 };

/* True if s[0..n) equals the first n bytes of the NUL-terminated word. */
static bool is_prefix_of(const uint8_t *s, size_t n, const char *word)
{
	return n <= strlen(word) && memcmp(s, word, n) == 0;
}

static bool equals(const uint8_t *s, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(s, word, n) == 0;
}

static bool is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * Checks a v1 port field. A complete field must be a decimal number 0..65535
 * with no sign and no leading zero (the spec forbids them to avoid any octal
 * confusion); a partial one must be a prefix of such a number, which lets
 * "PROXY TCP4 1.2.3.4 5.6.7.8 99999" fail before its CRLF arrives.
 */
static enum check check_port(const uint8_t *s, size_t n, bool complete, uint16_t *port)
{
	uint32_t v = 0;

	if (n == 0)
		return complete ? CHECK_BAD : CHECK_MORE;
	if (n > 5 || (n > 1 && s[0] == '0'))
		return CHECK_BAD;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return CHECK_BAD;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return CHECK_BAD;
	if (!complete)
		return CHECK_MORE;
	*port = (uint16_t)v;
	return CHECK_OK;
}

/*
 * Checks a v1 address field. A partial field only has its length and
 * character set checked, because deciding whether "1.2.3" can still become a
 * valid address is what inet_pton does on the complete text. glibc's
 * inet_pton rejects leading zeros in IPv4 octets, as the spec requires.
 */
static enum check check_addr(const uint8_t *s, size_t n, bool complete, enum v1_proto proto,
                             struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];
	size_t max = proto == V1_TCP4 ? V1_ADDR4_MAX : V1_ADDR6_MAX;

	if (n > max)
		return CHECK_BAD;
	for (size_t i = 0; i < n; i++) {
		bool ok = (s[i] >= '0' && s[i] <= '9') || s[i] == '.';
		if (proto == V1_TCP6)
			ok = ok || is_hex(s[i]) || s[i] == ':';
		if (!ok)
			return CHECK_BAD;
	}
	if (!complete)
		return CHECK_MORE;

	memcpy(text, s, n);
	text[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (proto == V1_TCP4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, text, &sin->sin_addr) != 1)
			return CHECK_BAD;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, text, &sin6->sin6_addr) != 1)
			return CHECK_BAD;
	}
	return CHECK_OK;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/*
 * Checks the v1 line s[0..n), which excludes the CRLF. complete says whether
 * the CRLF has been seen; when it has not, s is everything received so far
 * and only has to be a prefix of some valid line.
 */
static enum check check_v1_line(const uint8_t *s, size_t n, bool complete, sy_proxy_info *info)
{
	if (n < V1_PREFIX_LEN) {
		if (memcmp(s, v1_prefix, n) != 0)
			return CHECK_BAD;
		return complete ? CHECK_BAD : CHECK_MORE;
	}
	if (memcmp(s, v1_prefix, V1_PREFIX_LEN) != 0)
		return CHECK_BAD;
	s += V1_PREFIX_LEN;
	n -= V1_PREFIX_LEN;

	/* The protocol word runs up to the next space or the end of the line. */
	const uint8_t *sp = memchr(s, ' ', n);
	size_t wlen = sp ? (size_t)(sp - s) : n;

	/* UNKNOWN may be followed by anything up to the CRLF, which the
	 * receiver must ignore, so the line is decided as soon as the word is. */
	if (equals(s, wlen, "UNKNOWN")) {
		if (!complete)
			return CHECK_MORE;
		memset(info, 0, sizeof(*info));
		info->local = true;
		info->version = 1;
		return CHECK_OK;
	}

	enum v1_proto proto;
	if (equals(s, wlen, "TCP4")) {
		proto = V1_TCP4;
	} else if (equals(s, wlen, "TCP6")) {
		proto = V1_TCP6;
	} else if (!sp && !complete &&
	           (is_prefix_of(s, n, "TCP4") || is_prefix_of(s, n, "TCP6") ||
	            is_prefix_of(s, n, "UNKNOWN"))) {
		return CHECK_MORE;
	} else {
		return CHECK_BAD;
	}
	if (!sp)
		return complete ? CHECK_BAD : CHECK_MORE;

	/* Exactly four fields follow, separated by exactly one space: source
	 * and destination address, source and destination port. A field
	 * followed by a space is complete even if the line is not. */
	sy_proxy_info tmp;
	uint16_t ports[2] = {0, 0};
	size_t pos = wlen + 1;

	memset(&tmp, 0, sizeof(tmp));
	for (int field = 0;; field++) {
		const uint8_t *f = s + pos;
		const uint8_t *end = memchr(f, ' ', n - pos);
		size_t flen = end ? (size_t)(end - f) : n - pos;
		bool field_done = end != NULL || complete;
		enum check r;

		if (end && (flen == 0 || field == 3))
			return CHECK_BAD; /* double space, or a fifth field */
		if (!end && complete && field != 3)
			return CHECK_BAD; /* line ended with fields missing */
		if (field == 0)
			r = check_addr(f, flen, field_done, proto, &tmp.src);
		else if (field == 1)
			r = check_addr(f, flen, field_done, proto, &tmp.dst);
		else
			r = check_port(f, flen, field_done, &ports[field - 2]);
		if (r != CHECK_OK)
			return r;
		if (!end)
			break;
		pos += flen + 1;
	}

	/* Only a complete line gets here: an incomplete last field returns
	 * CHECK_MORE from its check above. */
	set_port(&tmp.src, ports[0]);
	set_port(&tmp.dst, ports[1]);
	tmp.local = false;
	tmp.version = 1;
	*info = tmp;
	return CHECK_OK;
}

/*
 * Parses a v1 header. The line ends at the first CRLF, which must lie within
 * the first 107 bytes; a bare CR or LF anywhere before it is rejected because
 * the spec forbids tolerating a single CR or LF as a line end, and accepting
 * one in the middle would let two parsers disagree on where the line ends.
 */
static int parse_v1(const uint8_t *buf, size_t len, sy_proxy_info *out)
{
	size_t n = len < V1_LINE_MAX ? len : V1_LINE_MAX;
	size_t line_len = n;
	bool complete = false;

	for (size_t i = 0; i < n; i++) {
		if (buf[i] == '\n')
			return -1;
		if (buf[i] == '\r') {
			line_len = i;
			if (i + 1 < n) {
				if (buf[i + 1] != '\n')
					return -1;
				complete = true;
			}
			break;
		}
	}

	sy_proxy_info info;
	enum check r = check_v1_line(buf, line_len, complete, &info);
	if (r == CHECK_BAD)
		return -1;
	if (r == CHECK_MORE)
		return len >= V1_LINE_MAX ? -1 : 0;
	*out = info;
	return (int)(line_len + 2);
}

/* Address block length the spec requires for a v2 family/transport pair. */
static size_t v2_addr_len(uint8_t af, uint8_t tp)
{
	if (tp == V2_TP_UNSPEC)
		return 0;
	switch (af) {
	case V2_AF_INET:
		return 12;
	case V2_AF_INET6:
		return 36;
	case V2_AF_UNIX:
		return 216;
	default:
		return 0;
	}
}

/*
 * Parses a v2 header. The version, command and family bytes are checked as
 * soon as they arrive, and the announced length before the body does, so a
 * bogus header is refused without waiting for up to 64 KiB that never come.
 */
static int parse_v2(const uint8_t *buf, size_t len, sy_proxy_info *out)
{
	size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);

	if (memcmp(buf, v2_sig, n) != 0)
		return -1;
	if (len < 13)
		return 0;
	uint8_t ver = buf[12] >> 4, cmd = buf[12] & 0x0F;
	if (ver != 2 || (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY))
		return -1;
	if (len < 14)
		return 0;
	/* With LOCAL the spec says the family is ignored, so only PROXY has
	 * its family and transport validated. */
	uint8_t af = buf[13] >> 4, tp = buf[13] & 0x0F;
	if (cmd == V2_CMD_PROXY && (af > V2_AF_UNIX || tp > V2_TP_DGRAM))
		return -1;
	if (len < V2_HDR_LEN)
		return 0;
	size_t alen = ((size_t)buf[14] << 8) | buf[15];
	if (alen > PROXY_HEADER_MAX - V2_HDR_LEN)
		return -1;
	if (cmd == V2_CMD_PROXY && alen < v2_addr_len(af, tp))
		return -1;
	size_t total = V2_HDR_LEN + alen;
	if (len < total)
		return 0;

	/* Whatever follows the addresses (TLVs) is covered by alen and
	 * skipped: we have no use for the SSL or authority TLVs yet. */
	sy_proxy_info info;
	const uint8_t *a = buf + V2_HDR_LEN;
	memset(&info, 0, sizeof(info));
	info.version = 2;
	if (cmd == V2_CMD_PROXY && tp == V2_TP_STREAM && af == V2_AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&info.src;
		struct sockaddr_in *d = (struct sockaddr_in *)&info.dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
	} else if (cmd == V2_CMD_PROXY && tp == V2_TP_STREAM && af == V2_AF_INET6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&info.src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&info.dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
	} else {
		/* LOCAL, UNSPEC, UDP and UNIX: a mail proxy has no use for
		 * these addresses, and the spec allows falling back to the
		 * socket's own endpoints for anything not implemented. */
		info.local = true;
	}
	*out = info;
	return (int)total;
}

int proxy_parse(const uint8_t *buf, size_t len, sy_proxy_info *out)
{
	if (len == 0)
		return 0;
	/* The two signatures differ in their first byte, and neither 'P' nor
	 * CR starts any protocol we proxy, so one byte decides the version. */
	if (buf[0] == 'P')
		return parse_v1(buf, len, out);
	if (buf[0] == '\r')
		return parse_v2(buf, len, out);
	return -1;
}

int proxy_detect(const uint8_t *buf, size_t len)
{
	size_t n1 = len < V1_PREFIX_LEN ? len : V1_PREFIX_LEN;
	size_t n2 = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
	bool v1 = n1 == 0 || memcmp(buf, v1_prefix, n1) == 0;
	bool v2 = n2 == 0 || memcmp(buf, v2_sig, n2) == 0;
	if ((v1 && len >= V1_PREFIX_LEN) || (v2 && len >= sizeof(v2_sig)))
		return 1;
	return v1 || v2 ? 0 : -1;
}

/*
 * Copies an AF_INET or AF_INET6 address into *ss, turning IPv4-mapped IPv6
 * into plain AF_INET. Returns false for NULL or any other family.
 */
static bool normalize_addr(const struct sockaddr *sa, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		memcpy(ss, sa, sizeof(struct sockaddr_in));
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;

	struct sockaddr_in6 sin6;
	memcpy(&sin6, sa, sizeof(sin6));
	if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = sin6.sin6_port;
		memcpy(&sin->sin_addr, &sin6.sin6_addr.s6_addr[12], 4);
	} else {
		memcpy(ss, &sin6, sizeof(sin6));
	}
	return true;
}

size_t proxy_v2_build(uint8_t *out, size_t cap, const struct sockaddr *src,
                      const struct sockaddr *dst)
{
	struct sockaddr_storage s, d;
	bool ok_s = normalize_addr(src, &s);
	bool ok_d = normalize_addr(dst, &d);
	uint8_t hdr[V2_HDR_LEN + 36];
	size_t alen = 0;

	memcpy(hdr, v2_sig, sizeof(v2_sig));
	if (ok_s && ok_d && s.ss_family == AF_INET && d.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&s;
		const struct sockaddr_in *d4 = (const struct sockaddr_in *)&d;
		hdr[12] = 0x20 | V2_CMD_PROXY;
		hdr[13] = (V2_AF_INET << 4) | V2_TP_STREAM;
		memcpy(hdr + 16, &s4->sin_addr, 4);
		memcpy(hdr + 20, &d4->sin_addr, 4);
		memcpy(hdr + 24, &s4->sin_port, 2);
		memcpy(hdr + 26, &d4->sin_port, 2);
		alen = 12;
	} else if (ok_s && ok_d && s.ss_family == AF_INET6 && d.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&s;
		const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&d;
		hdr[12] = 0x20 | V2_CMD_PROXY;
		hdr[13] = (V2_AF_INET6 << 4) | V2_TP_STREAM;
		memcpy(hdr + 16, &s6->sin6_addr, 16);
		memcpy(hdr + 32, &d6->sin6_addr, 16);
		memcpy(hdr + 48, &s6->sin6_port, 2);
		memcpy(hdr + 50, &d6->sin6_port, 2);
		alen = 36;
	} else {
		/* A v2 header cannot describe a connection whose two ends
		 * have different families, so we say LOCAL: the backend then
		 * uses our own address, which is honest, rather than a
		 * half-true one. */
		hdr[12] = 0x20 | V2_CMD_LOCAL;
		hdr[13] = (V2_AF_UNSPEC << 4) | V2_TP_UNSPEC;
	}
	hdr[14] = (uint8_t)(alen >> 8);
	hdr[15] = (uint8_t)(alen & 0xFF);

	size_t total = V2_HDR_LEN + alen;
	if (cap < total)
		return 0;
	memcpy(out, hdr, total);
	return total;
}

void sy_sockaddr_str(const struct sockaddr *sa, char *out, size_t outlen, bool with_port)
{
	struct sockaddr_storage ss;
	char host[INET6_ADDRSTRLEN];
	unsigned port;

	if (!out || outlen == 0)
		return;
	if (!normalize_addr(sa, &ss)) {
		snprintf(out, outlen, "unknown");
		return;
	}
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
		if (with_port)
			snprintf(out, outlen, "%s:%u", host, port);
		else
			snprintf(out, outlen, "%s", host);
	} else {
		/* Brackets keep the port distinguishable from the address's
		 * own colons, as in URLs (RFC 3986). */
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
		if (with_port)
			snprintf(out, outlen, "[%s]:%u", host, port);
		else
			snprintf(out, outlen, "%s", host);
	}
}

/* Appends data[0..n) to the stage's buffer, or says it does not fit. */
static bool stage_append(sy_proxy_stage *ps, const char *data, size_t n)
{
	if (n > ps->cap - ps->len)
		return false;
	if (n > 0)
		memcpy(ps->buf + ps->len, data, n);
	ps->len += n;
	return true;
}

sy_pstage proxy_stage_feed(sy_proxy_stage *ps, const char *data, size_t n, sy_proxy_info *out)
{
	if (ps->optional && !ps->committed) {
		/* Undecided so far: buf holds a strict prefix of a signature
		 * (fewer than 12 bytes). Decide on at most 12. */
		uint8_t probe[sizeof(v2_sig)];
		size_t k = ps->len;
		size_t more = sizeof(probe) - k < n ? sizeof(probe) - k : n;
		if (k > 0)
			memcpy(probe, ps->buf, k);
		if (more > 0)
			memcpy(probe + k, data, more);
		int d = proxy_detect(probe, k + more);
		if (d <= 0) {
			/* No header (the bytes are the client's own), or still a
			 * prefix of a signature (k + n < 12). */
			if (!stage_append(ps, data, n))
				return SY_PSTAGE_OVERFLOW;
			return d < 0 ? SY_PSTAGE_NONE : SY_PSTAGE_MORE;
		}
		ps->committed = true;
	}
	/* Never more than a header's worth is parsed: the part of this read
	 * beyond PROXY_HEADER_MAX is kept aside until the header's end is
	 * known. */
	size_t room = ps->len < PROXY_HEADER_MAX ? PROXY_HEADER_MAX - ps->len : 0;
	size_t take = n < room ? n : room;
	if (!stage_append(ps, data, take))
		return SY_PSTAGE_OVERFLOW;
	int r = proxy_parse((const uint8_t *)ps->buf, ps->len, out);
	if (r == 0 && ps->len < PROXY_HEADER_MAX)
		return SY_PSTAGE_MORE;
	if (r <= 0)
		return SY_PSTAGE_INVALID;
	/* What followed the header is the next stage's: move it to the front,
	 * then the rest of this read. */
	size_t rest = ps->len - (size_t)r;
	memmove(ps->buf, ps->buf + r, rest);
	ps->len = rest;
	if (!stage_append(ps, data + take, n - take))
		return SY_PSTAGE_OVERFLOW;
	return SY_PSTAGE_HEADER;
}
