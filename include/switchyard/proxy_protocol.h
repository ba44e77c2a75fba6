/*
 * The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): parsing
 * the header a trusted load balancer puts in front of a client connection, and
 * building the v2 header we put in front of backend connections so that the
 * backend sees the real client address.
 *
 * The parser is incremental and allocation-free: the listener calls it on the
 * bytes received so far and either gets a complete header, a request for more
 * bytes, or a verdict that the connection does not start with a header. The
 * spec forbids guessing whether a header is present, so a listener that
 * requires the PROXY protocol must reject the connection on -1.
 *
 * A listener where the header is optional (the reference system's
 * `proxy_protocol = "optional"`, for trusted peers only) tells a header from
 * other bytes with proxy_detect(), by the signature alone: "PROXY " or the
 * 12-byte v2 signature. Neither can begin a TLS ClientHello (0x16), an HTTP
 * request or anything a mail client sends, so the guess the spec warns
 * against never has to be made on ambiguous bytes; once the signature is
 * there, the header must be valid (proxy_parse) or the connection is refused.
 */
#ifndef SWITCHYARD_PROXY_PROTOCOL_H
#define SWITCHYARD_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The most we ever buffer while waiting for a header (v2 with TLVs). A v1 line
 * is at most 107 bytes; a v2 header is 16 bytes plus its announced length,
 * which we cap so that the whole header fits in this many bytes. */
#define PROXY_HEADER_MAX 4096

typedef struct sy_proxy_info {
	bool local; /* v2 LOCAL command, v1 "UNKNOWN", or v2 AF_UNSPEC / UNIX / UDP: keep the
	               socket's own addresses */
	struct sockaddr_storage src, dst; /* valid when !local; AF_INET or AF_INET6 with ports */
	int version;                      /* 1 or 2 */
} sy_proxy_info;

/* Incrementally parses the start of a connection held in buf[0..len).
 *
 * Returns the number of bytes the header occupies (> 0: the header is complete
 * and *out is filled; the caller skips that many bytes and hands the rest to
 * the protocol), 0 if more bytes are needed (everything seen so far is a
 * consistent prefix of a valid header, and len < PROXY_HEADER_MAX), or -1 if
 * the bytes cannot start a valid v1 or v2 header: garbage, a bad signature, a
 * v1 line without CRLF in its first 107 bytes or with a bare CR or LF, bad v1
 * addresses or ports (ports are strict decimal 0..65535 without sign or
 * leading zeros), an unknown v2 version, command, family or transport, a v2
 * length beyond PROXY_HEADER_MAX - 16, or an address block shorter than the
 * family requires.
 *
 * Never reads beyond buf[len - 1]; may be called again with the same buffer
 * grown by newly received bytes. *out is written only when the return is > 0;
 * for a local result its addresses are zeroed. buf may be NULL when len is 0.
 */
int proxy_parse(const uint8_t *buf, size_t len, sy_proxy_info *out);

/*
 * Looks at the first bytes of a connection, buf[0..len), for a PROXY header
 * signature: "PROXY " (v1) or the 12-byte v2 signature. Returns 1 when buf
 * begins with one of them (the peer has committed to a header; proxy_parse
 * then says whether it is valid), 0 while every byte so far is a strict
 * prefix of one of them (including len == 0: more bytes are needed, at most
 * 12 in all), or -1 as soon as the bytes cannot begin either. Never reads
 * beyond buf[len - 1]; buf may be NULL when len is 0.
 */
int proxy_detect(const uint8_t *buf, size_t len);

/*
 * The header stage of a connection from a trusted peer, without I/O: the
 * bytes of each read are fed in turn, and the stage says when it is over and
 * what it leaves for the next stage (the TLS handshake or the protocol's line
 * reader). buf[0..cap) is the caller's (cap >= PROXY_HEADER_MAX: a pool
 * block), len the bytes it holds. `optional` is a listener where the header
 * may be absent (`proxy_protocol = "optional"`); `committed` becomes true
 * once such a connection has begun with a signature (the caller then starts
 * the pre-auth deadline), and from there the header is required.
 */
typedef struct sy_proxy_stage {
	char *buf;
	size_t cap, len;
	bool optional, committed;
} sy_proxy_stage;

typedef enum sy_pstage {
	SY_PSTAGE_MORE,     /* every byte is kept; read more */
	SY_PSTAGE_HEADER,   /* *out is the header; buf[0..len) is what followed it */
	SY_PSTAGE_NONE,     /* optional, and no signature: buf[0..len) is every byte read */
	SY_PSTAGE_INVALID,  /* not a valid header, or none within PROXY_HEADER_MAX */
	SY_PSTAGE_OVERFLOW, /* the bytes for the next stage do not fit in cap */
} sy_pstage;

/*
 * Feeds data[0..n) (one read). Until the stage ends, nothing is lost or
 * reordered: at SY_PSTAGE_HEADER buf holds exactly the bytes that followed
 * the header in everything fed, at SY_PSTAGE_NONE everything fed. Once it
 * returned anything but SY_PSTAGE_MORE, the stage is over: do not feed it
 * again.
 */
sy_pstage proxy_stage_feed(sy_proxy_stage *ps, const char *data, size_t n, sy_proxy_info *out);

/* Builds a v2 PROXY header (command PROXY, transport STREAM) describing a
 * connection from src to dst into out[0..cap). IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) are unmapped to IPv4 first, because a dual-stack listener
 * reports IPv4 clients that way and backends expect to see plain IPv4. If the
 * two families then differ, or either address is NULL or not AF_INET/AF_INET6,
 * the header carries command LOCAL and family AF_UNSPEC with no address block:
 * we never emit v1 text.
 *
 * Returns the header length (16 for LOCAL, 28 for IPv4, 52 for IPv6), or 0 if
 * cap is too small, in which case out is left untouched. The caller owns all
 * buffers; nothing is retained.
 */
size_t proxy_v2_build(uint8_t *out, size_t cap, const struct sockaddr *src,
                      const struct sockaddr *dst);

/* Formats a socket address for logs into out[0..outlen), always
 * NUL-terminated when outlen > 0 (truncated if too small): "1.2.3.4",
 * "1.2.3.4:25", "::1", "[::1]:25". IPv4-mapped IPv6 addresses are shown as the
 * IPv4 address, so one client looks the same in every log line whichever
 * listener it reached. NULL or any other family gives "unknown".
 */
void sy_sockaddr_str(const struct sockaddr *sa, char *out, size_t outlen, bool with_port);

#endif
