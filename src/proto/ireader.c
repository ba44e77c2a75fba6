/*
 * The interactive framework's line readers (ireader.h): pure state machines
 * over sy_ictx's reader fields and a block pool.
 */
#include "ireader.h"

#include <openssl/crypto.h>
#include <string.h>

/* ---- the client leg ---------------------------------------------------------------------- */

sy_iread ireader_client_append(sy_ictx *c, sy_pool *pool, const char *data, size_t n)
{
	if (c->state != IC_PREAUTH && c->state != IC_ROUTING && c->state != IC_BACKEND)
		return SY_IREAD_IGNORED;
	if (!c->cbuf) {
		c->cbuf = pool_get(pool);
		if (!c->cbuf)
			return SY_IREAD_NOMEM;
	}
	size_t room = SY_LINE_MAX - c->clen;
	if (n > room)
		return SY_IREAD_TOO_LONG;
	memcpy(c->cbuf + c->clen, data, n);
	c->clen += n;
	return SY_IREAD_OK;
}

sy_iread ireader_client_lines(sy_ictx *c, sy_pool *pool)
{
	/* A closed session parses nothing more: its remaining lines could
	 * start a login (and a dial) that nothing would ever cancel. */
	while (c->state == IC_PREAUTH && !c->paused && c->cbuf && c->s->state != SS_CLOSING) {
		if (c->literal_end > 0) {
			if (c->clen < c->literal_end)
				return SY_IREAD_OK;
			c->cscan = c->literal_end;
			c->seg_start = c->literal_end;
			c->literal_end = 0;
		}
		char *nl = memchr(c->cbuf + c->cscan, '\n', c->clen - c->cscan);
		if (!nl) {
			c->cscan = c->clen;
			if (c->clen >= SY_LINE_MAX)
				return SY_IREAD_TOO_LONG;
			return SY_IREAD_OK;
		}
		size_t end = (size_t)(nl - c->cbuf); /* index of '\n' */
		size_t linelen = end;
		/* A CR that is the last byte of a folded literal is literal data,
		 * not half of the line end: stripping it would hand the module a
		 * line that ends before seg_start (the modules compute len -
		 * seg_start) and cut the literal short. */
		if (linelen > c->seg_start && c->cbuf[linelen - 1] == '\r')
			linelen--;
		char saved = c->cbuf[linelen];
		c->cbuf[linelen] = '\0';
		int r = c->ops->client_line(c, c->cbuf, linelen);
		if (r < 0)
			return SY_IREAD_CLOSE;
		if (!c->cbuf)
			return SY_IREAD_OK; /* STARTTLS dropped the buffer */
		if (r > 0) {
			/* Literal: keep the line (with its CRLF) and read r raw bytes
			 * after it, then the rest of the command. */
			c->cbuf[linelen] = saved;
			size_t need = end + 1 + (size_t)(r - 1);
			if (need >= SY_LINE_MAX)
				return SY_IREAD_TOO_LONG;
			c->literal_end = need;
			continue;
		}
		OPENSSL_cleanse(c->cbuf, end + 1);
		memmove(c->cbuf, c->cbuf + end + 1, c->clen - end - 1);
		c->clen -= end + 1;
		c->cscan = 0;
		c->seg_start = 0;
		if (c->clen == 0) {
			pool_put(pool, c->cbuf);
			c->cbuf = NULL;
		}
	}
	return SY_IREAD_OK;
}

void ireader_client_drop(sy_ictx *c, sy_pool *pool)
{
	if (c->cbuf) {
		pool_put(pool, c->cbuf);
		c->cbuf = NULL;
		c->clen = c->cscan = c->literal_end = c->seg_start = 0;
	}
}

/* ---- the backend leg --------------------------------------------------------------------- */

sy_iread ireader_backend_read(sy_ictx *c, sy_pool *pool, const char *data, size_t n)
{
	if (c->state != IC_BACKEND)
		return SY_IREAD_IGNORED;
	if (!c->bbuf) {
		c->bbuf = pool_get(pool);
		if (!c->bbuf)
			return SY_IREAD_NOMEM;
	}
	if (c->blen + n > SY_LINE_MAX)
		return SY_IREAD_TOO_LONG;
	memcpy(c->bbuf + c->blen, data, n);
	c->blen += n;
	/* Hand over complete lines while the login is with the backend; the
	 * module may finish it (auth_ok, failed, tempfail) at any line. */
	while (c->state == IC_BACKEND && c->bbuf) {
		char *nl = memchr(c->bbuf, '\n', c->blen);
		if (!nl)
			break;
		size_t linelen = (size_t)(nl - c->bbuf);
		size_t next = linelen + 1;
		if (linelen > 0 && c->bbuf[linelen - 1] == '\r')
			linelen--;
		/* Consume before calling, so auth_ok forwards only what follows. */
		char line[SY_LINE_MAX + 1];
		memcpy(line, c->bbuf, linelen);
		line[linelen] = '\0';
		memmove(c->bbuf, c->bbuf + next, c->blen - next);
		c->blen -= next;
		int r = c->ops->backend_line(c, line, linelen);
		OPENSSL_cleanse(line, linelen);
		if (r != 0)
			return SY_IREAD_BAD_REPLY;
	}
	if (c->bbuf && c->blen == 0 && c->state == IC_BACKEND) {
		pool_put(pool, c->bbuf);
		c->bbuf = NULL;
	}
	return SY_IREAD_OK;
}

void ireader_backend_drop(sy_ictx *c, sy_pool *pool)
{
	if (c->bbuf) {
		pool_put(pool, c->bbuf);
		c->bbuf = NULL;
		c->blen = 0;
	}
}

/* ---- the bridge hand-off ----------------------------------------------------------------- */

void ireader_handoff(sy_ictx *c, sy_pool *pool, sy_ireader_sink to_client,
                     sy_ireader_sink to_backend, void *arg)
{
	if (c->bbuf) {
		if (c->blen > 0)
			to_client(arg, c->bbuf, c->blen);
		ireader_backend_drop(c, pool);
	}
	if (c->cbuf) {
		if (c->clen > 0)
			to_backend(arg, c->cbuf, c->clen);
		ireader_client_drop(c, pool);
	}
}
