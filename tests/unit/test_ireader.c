/*
 * The interactive framework's line readers (src/proto/ireader.c): client
 * lines split across reads, literals ({n} and {n+}) folded into the logical
 * line with seg_start after each, the SY_LINE_MAX cap, the buffer dropped
 * at STARTTLS, pauses, and the backend line splitter. A scripted module
 * stands in for the protocols: it records every line and announces the
 * literals the real tokenizer finds at the end of the current segment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/interactive.h"
#include "switchyard/tokens.h"

#include "../../src/proto/ireader.h"

#define MAX_LINES 8

static struct {
	char line[MAX_LINES][256];
	size_t len[MAX_LINES], seg[MAX_LINES];
	size_t n;
	sy_pool *pool;
} rec;

static void record(const char *line, size_t len, size_t seg)
{
	assert_true(rec.n < MAX_LINES);
	/* Long lines are kept by their length and first bytes. */
	memcpy(rec.line[rec.n], line, len < sizeof(rec.line[0]) ? len : sizeof(rec.line[0]));
	rec.len[rec.n] = len;
	rec.seg[rec.n] = seg;
	rec.n++;
}

/* A client module: "STARTTLS" drops the buffer as ictx_client_starttls
 * does, "WAIT" pauses the reader (a login in progress), "QUIT" closes,
 * "HUGE" announces a literal beyond the cap; a trailing {n} / {n+} is
 * asked for. */
static int client_line(sy_ictx *c, char *line, size_t len)
{
	assert_int_equal(line[len], '\0');
	record(line, len, c->seg_start);
	const char *seg = line + c->seg_start;
	size_t slen = len - c->seg_start;
	if (slen == 8 && memcmp(seg, "STARTTLS", 8) == 0) {
		ireader_client_drop(c, rec.pool);
		c->state = IC_CLIENT_TLS;
		return SY_LINE_OK;
	}
	if (slen == 4 && memcmp(seg, "WAIT", 4) == 0) {
		c->paused = true;
		c->state = IC_ROUTING;
		return SY_LINE_OK;
	}
	if (slen == 4 && memcmp(seg, "QUIT", 4) == 0)
		return SY_LINE_CLOSE;
	if (slen == 4 && memcmp(seg, "HUGE", 4) == 0)
		return SY_LINE_LITERAL(SY_LINE_MAX);
	bool plus;
	size_t brace;
	long lit = tok_trailing_literal(seg, slen, SY_LINE_MAX, &plus, &brace);
	if (lit >= 0)
		return SY_LINE_LITERAL(lit);
	return SY_LINE_OK;
}

/* A backend module: "BAD" is refused, "DONE" ends the login (as a verdict
 * from inside backend_line would). */
static int backend_line(sy_ictx *c, char *line, size_t len)
{
	assert_int_equal(line[len], '\0');
	record(line, len, 0);
	if (len == 3 && memcmp(line, "BAD", 3) == 0)
		return -1;
	if (len == 4 && memcmp(line, "DONE", 4) == 0)
		c->state = IC_BRIDGED;
	return 0;
}

static const sy_proto_ops OPS = {
    .name = "test",
    .client_line = client_line,
    .backend_line = backend_line,
};

static sy_session SESSION;
static sy_pool POOL;

static sy_ictx *new_ictx(sy_ictx_state state)
{
	memset(&rec, 0, sizeof(rec));
	pool_init(&POOL, 0);
	rec.pool = &POOL;
	memset(&SESSION, 0, sizeof(SESSION));
	SESSION.state = SS_PROTOCOL;
	sy_ictx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->s = &SESSION;
	c->ops = &OPS;
	c->state = state;
	return c;
}

static void done(sy_ictx *c)
{
	ireader_client_drop(c, &POOL);
	ireader_backend_drop(c, &POOL);
	assert_int_equal(POOL.outstanding, 0);
	free(c);
}

static sy_iread feed(sy_ictx *c, const char *s)
{
	sy_iread r = ireader_client_append(c, &POOL, s, strlen(s));
	if (r != SY_IREAD_OK)
		return r;
	return ireader_client_lines(c, &POOL);
}

static void assert_line(size_t i, const char *want, size_t seg)
{
	assert_true(i < rec.n);
	assert_int_equal(rec.len[i], strlen(want));
	assert_memory_equal(rec.line[i], want, rec.len[i]);
	assert_int_equal(rec.seg[i], seg);
}

static void lines_split_across_reads(void **state)
{
	(void)state;
	sy_ictx *c = new_ictx(IC_PREAUTH);
	assert_int_equal(feed(c, "a1 NO"), SY_IREAD_OK);
	assert_int_equal(rec.n, 0);
	assert_int_equal(feed(c, "OP\r"), SY_IREAD_OK);
	assert_int_equal(rec.n, 0);
	assert_int_equal(feed(c, "\na2 X\r\nb"), SY_IREAD_OK);
	assert_int_equal(rec.n, 2);
	assert_line(0, "a1 NOOP", 0);
	assert_line(1, "a2 X", 0);
	assert_int_equal(c->clen, 1); /* "b" waits for its line end */
	assert_int_equal(POOL.outstanding, 1);
	assert_int_equal(feed(c, "\n\r\n"), SY_IREAD_OK); /* a bare LF ends a line too */
	assert_int_equal(rec.n, 4);
	assert_line(2, "b", 0);
	assert_line(3, "", 0);
	/* An empty buffer gives its block back. */
	assert_null(c->cbuf);
	assert_int_equal(POOL.outstanding, 0);
	done(c);
}

static void literals_are_folded(void **state)
{
	(void)state;
	sy_ictx *c = new_ictx(IC_PREAUTH);
	/* A synchronizing literal, its bytes in a later read. */
	assert_int_equal(feed(c, "a LOGIN {5}\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 1);
	assert_line(0, "a LOGIN {5}", 0);
	assert_int_equal(feed(c, "al\nce"), SY_IREAD_OK); /* a LF inside a literal is data */
	assert_int_equal(rec.n, 1);
	assert_int_equal(feed(c, " pw\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 2);
	assert_line(1, "a LOGIN {5}\r\nal\nce pw", strlen("a LOGIN {5}\r\nal\nce"));
	assert_null(c->cbuf);

	/* Two non-synchronizing literals in one read. */
	assert_int_equal(feed(c, "b LOGIN {5+}\r\nalice {2+}\r\npw\r\nc NOOP\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 6);
	assert_line(2, "b LOGIN {5+}", 0);
	assert_line(3, "b LOGIN {5+}\r\nalice {2+}", strlen("b LOGIN {5+}\r\nalice"));
	assert_line(4, "b LOGIN {5+}\r\nalice {2+}\r\npw",
	            strlen("b LOGIN {5+}\r\nalice {2+}\r\npw"));
	assert_line(5, "c NOOP", 0);

	/* A CR that is the literal's last byte stays in the line. */
	assert_int_equal(feed(c, "d X {1}\r\n\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 8);
	assert_line(7, "d X {1}\r\n\r", strlen("d X {1}\r\n\r"));
	done(c);
	/* ... and the CR of a line end after a literal does not. */
	c = new_ictx(IC_PREAUTH);
	assert_int_equal(feed(c, "e X {1}\r\n\r\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 2);
	assert_line(1, "e X {1}\r\n\r", strlen("e X {1}\r\n\r"));
	/* An empty literal. */
	assert_int_equal(feed(c, "f X {0}\r\n Y\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 4);
	assert_line(3, "f X {0}\r\n Y", strlen("f X {0}\r\n"));
	done(c);
}

static void the_line_cap(void **state)
{
	(void)state;
	char *big = malloc(SY_LINE_MAX + 1);
	assert_non_null(big);
	memset(big, 'x', SY_LINE_MAX);
	big[SY_LINE_MAX] = '\0';

	/* SY_LINE_MAX bytes without a line end. */
	sy_ictx *c = new_ictx(IC_PREAUTH);
	big[SY_LINE_MAX - 1] = '\0';
	assert_int_equal(feed(c, big), SY_IREAD_OK); /* one byte short: waits */
	assert_int_equal(feed(c, "y"), SY_IREAD_TOO_LONG);
	assert_int_equal(rec.n, 0);
	/* More than the room left is refused before it is taken. */
	assert_int_equal(ireader_client_append(c, &POOL, "z", 1), SY_IREAD_TOO_LONG);
	assert_int_equal(c->clen, SY_LINE_MAX);
	done(c);

	/* One read over the cap. */
	c = new_ictx(IC_PREAUTH);
	big[SY_LINE_MAX - 1] = 'x';
	assert_int_equal(ireader_client_append(c, &POOL, big, SY_LINE_MAX), SY_IREAD_OK);
	assert_int_equal(ireader_client_append(c, &POOL, "\n", 1), SY_IREAD_TOO_LONG);
	done(c);

	/* The longest line that fits. */
	c = new_ictx(IC_PREAUTH);
	big[SY_LINE_MAX - 1] = '\n';
	assert_int_equal(ireader_client_append(c, &POOL, big, SY_LINE_MAX), SY_IREAD_OK);
	assert_int_equal(ireader_client_lines(c, &POOL), SY_IREAD_OK);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.len[0], SY_LINE_MAX - 1);
	assert_null(c->cbuf);
	done(c);
	free(big);

	/* A literal that would pass the cap. */
	c = new_ictx(IC_PREAUTH);
	assert_int_equal(feed(c, "HUGE\r\n"), SY_IREAD_TOO_LONG);
	assert_int_equal(rec.n, 1);
	done(c);
}

static void starttls_drops_pipelined_bytes(void **state)
{
	(void)state;
	sy_ictx *c = new_ictx(IC_PREAUTH);
	assert_int_equal(feed(c, "a1 NOOP\r\nSTARTTLS\r\nb LOGIN {5+}\r\nalice pw\r\n"),
	                 SY_IREAD_OK);
	assert_int_equal(rec.n, 2);
	assert_line(1, "STARTTLS", 0);
	assert_null(c->cbuf);
	assert_int_equal(c->clen + c->cscan + c->literal_end + c->seg_start, 0);
	assert_int_equal(POOL.outstanding, 0);
	/* During the handshake the reader takes nothing. */
	assert_int_equal(ireader_client_append(c, &POOL, "x\r\n", 3), SY_IREAD_IGNORED);
	assert_null(c->cbuf);
	/* After it, lines are read again. */
	c->state = IC_PREAUTH;
	assert_int_equal(feed(c, "c NOOP\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 3);
	assert_line(2, "c NOOP", 0);
	done(c);
}

static void pause_close_and_states(void **state)
{
	(void)state;
	sy_ictx *c = new_ictx(IC_PREAUTH);
	/* A login pauses the reader; what follows is kept, also bytes read
	 * while the login is routed. */
	assert_int_equal(feed(c, "WAIT\r\nnext\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 1);
	assert_int_equal(ireader_client_append(c, &POOL, "more\r\n", 6), SY_IREAD_OK);
	assert_int_equal(ireader_client_lines(c, &POOL), SY_IREAD_OK);
	assert_int_equal(rec.n, 1);
	assert_int_equal(c->clen, strlen("next\r\nmore\r\n"));
	/* Back to pre-auth: the held lines run. */
	c->state = IC_PREAUTH;
	c->paused = false;
	assert_int_equal(ireader_client_lines(c, &POOL), SY_IREAD_OK);
	assert_int_equal(rec.n, 3);
	assert_line(1, "next", 0);
	assert_line(2, "more", 0);
	/* The module closes: the reader stops at that line. */
	assert_int_equal(feed(c, "QUIT\r\nafter\r\n"), SY_IREAD_CLOSE);
	assert_int_equal(rec.n, 4);
	/* A closing session parses nothing more. */
	SESSION.state = SS_CLOSING;
	assert_int_equal(feed(c, "x\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 4);
	done(c);
	/* Closing and bridged states take no bytes. */
	c = new_ictx(IC_CLOSING);
	assert_int_equal(ireader_client_append(c, &POOL, "x\r\n", 3), SY_IREAD_IGNORED);
	c->state = IC_BRIDGED;
	assert_int_equal(ireader_client_append(c, &POOL, "x\r\n", 3), SY_IREAD_IGNORED);
	done(c);
}

static sy_iread bfeed(sy_ictx *c, const char *s)
{
	return ireader_backend_read(c, &POOL, s, strlen(s));
}

static void backend_lines(void **state)
{
	(void)state;
	sy_ictx *c = new_ictx(IC_BACKEND);
	assert_int_equal(bfeed(c, "* OK hel"), SY_IREAD_OK);
	assert_int_equal(rec.n, 0);
	assert_int_equal(bfeed(c, "lo\r\nA1 OK\nA2"), SY_IREAD_OK);
	assert_int_equal(rec.n, 2);
	assert_line(0, "* OK hello", 0);
	assert_line(1, "A1 OK", 0);
	assert_int_equal(c->blen, 2);
	assert_int_equal(bfeed(c, " x\r\n"), SY_IREAD_OK);
	assert_line(2, "A2 x", 0);
	assert_null(c->bbuf);
	assert_int_equal(POOL.outstanding, 0);
	/* A refused line stops the reader; the rest stays. */
	assert_int_equal(bfeed(c, "BAD\r\nnext\r\n"), SY_IREAD_BAD_REPLY);
	assert_int_equal(rec.n, 4);
	assert_int_equal(c->blen, strlen("next\r\n"));
	ireader_backend_drop(c, &POOL);
	assert_null(c->bbuf);
	assert_int_equal(c->blen, 0);
	/* A verdict inside a line: what follows is kept for the bridge. */
	assert_int_equal(bfeed(c, "DONE\r\n* 1 EXISTS\r\n"), SY_IREAD_OK);
	assert_int_equal(rec.n, 5);
	assert_int_equal(c->blen, strlen("* 1 EXISTS\r\n"));
	assert_memory_equal(c->bbuf, "* 1 EXISTS\r\n", c->blen);
	/* Not with the backend: nothing taken. */
	assert_int_equal(bfeed(c, "x\r\n"), SY_IREAD_IGNORED);
	done(c);

	/* The cap. */
	c = new_ictx(IC_BACKEND);
	char *big = calloc(1, SY_LINE_MAX);
	assert_non_null(big);
	memset(big, 'x', SY_LINE_MAX);
	assert_int_equal(ireader_backend_read(c, &POOL, big, SY_LINE_MAX), SY_IREAD_OK);
	assert_int_equal(bfeed(c, "\n"), SY_IREAD_TOO_LONG);
	assert_int_equal(c->blen, SY_LINE_MAX);
	free(big);
	done(c);
}

static struct {
	char data[2][64];
	size_t len[2];
	int order[2], n;
} sink;

static void sink_add(int which, const char *data, size_t n)
{
	assert_true(n < sizeof(sink.data[0]) && sink.n < 2);
	memcpy(sink.data[which], data, n);
	sink.len[which] = n;
	sink.order[sink.n++] = which;
}

static void to_client(void *arg, const char *data, size_t n)
{
	assert_ptr_equal(arg, &sink);
	sink_add(0, data, n);
}

static void to_backend(void *arg, const char *data, size_t n)
{
	assert_ptr_equal(arg, &sink);
	sink_add(1, data, n);
}

static void bridge_handoff(void **state)
{
	(void)state;
	/* The login line pauses the reader; the client pipelines a command
	 * behind it, and the backend's verdict is followed by an untagged
	 * line. Each rest goes to the other leg, backend's first. */
	sy_ictx *c = new_ictx(IC_PREAUTH);
	memset(&sink, 0, sizeof(sink));
	assert_int_equal(feed(c, "WAIT\r\nA2 SELECT INBOX\r\nA3 NO"), SY_IREAD_OK);
	assert_int_equal(rec.n, 1);
	c->state = IC_BACKEND;
	assert_int_equal(feed(c, "OP\r\n"), SY_IREAD_OK); /* held, not parsed */
	assert_int_equal(rec.n, 1);
	assert_int_equal(bfeed(c, "DONE\r\n* 1 EXISTS\r\n"), SY_IREAD_OK);
	ireader_handoff(c, &POOL, to_client, to_backend, &sink);
	assert_int_equal(sink.n, 2);
	assert_int_equal(sink.order[0], 0);
	assert_int_equal(sink.len[0], strlen("* 1 EXISTS\r\n"));
	assert_memory_equal(sink.data[0], "* 1 EXISTS\r\n", sink.len[0]);
	assert_int_equal(sink.len[1], strlen("A2 SELECT INBOX\r\nA3 NOOP\r\n"));
	assert_memory_equal(sink.data[1], "A2 SELECT INBOX\r\nA3 NOOP\r\n", sink.len[1]);
	assert_null(c->cbuf);
	assert_null(c->bbuf);
	assert_int_equal(POOL.outstanding, 0);
	done(c);

	/* Nothing followed on either leg: neither sink is called. */
	c = new_ictx(IC_PREAUTH);
	memset(&sink, 0, sizeof(sink));
	assert_int_equal(feed(c, "WAIT\r\n"), SY_IREAD_OK);
	c->state = IC_BACKEND;
	assert_int_equal(bfeed(c, "DONE\r\n"), SY_IREAD_OK);
	ireader_handoff(c, &POOL, to_client, to_backend, &sink);
	assert_int_equal(sink.n, 0);
	done(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(lines_split_across_reads),
	    cmocka_unit_test(literals_are_folded),
	    cmocka_unit_test(the_line_cap),
	    cmocka_unit_test(starttls_drops_pipelined_bytes),
	    cmocka_unit_test(pause_close_and_states),
	    cmocka_unit_test(backend_lines),
	    cmocka_unit_test(bridge_handoff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
