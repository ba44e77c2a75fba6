/*
 * HTTP routing (SPEC.md section 5): one protocol module of the connection
 * core. Each request on a client connection is read and checked (HTTP/1.1
 * only, the request-smuggling rules), routed by [[http.route]] (a fixed
 * destination, or an identifier extracted from the request and resolved
 * like a mail login), rewritten toward the backend (hop-by-hop headers
 * removed, exactly one framing header, Forwarded / X-Forwarded-For per the
 * listener and destination) and sent; the response is streamed back.
 *
 * Keep-alive: the connection's first request binds it to a destination;
 * the backend connection is reused while later requests resolve to the
 * same destination (it is dialled again if the backend closed it), and a
 * request that resolves elsewhere gets 421 and the connection closes.
 * Requests are handled one at a time: pipelined bytes wait in the buffer
 * (and the client is not read) until the response before them is complete.
 *
 * Framing is http-parser's, in both directions, while the bytes themselves
 * are relayed as they arrive (never buffered to the end: Server-Sent
 * Events reach the client event by event):
 *   - the request body: a second parser fed a synthetic head with the
 *     request's framing header, then the body bytes; it stops at the
 *     body's end, so bytes after it belong to the next request;
 *   - the response: a parser per response fed the backend's bytes, told
 *     that 1xx, 204, 304 and answers to HEAD have no body whatever their
 *     headers say; interim 1xx are relayed in order; a body delimited by
 *     the backend's close ends the client connection too.
 * `101 Switching Protocols` to an upgrade request turns the connection into
 * the opaque bridge (src/session/bridge.c, spliced on plain legs). A final
 * response that arrives while the client waits for `100 Continue` ends the
 * connection after it, and body bytes sent after it never reach the
 * backend.
 *
 * Each request routes with the configuration current when its head
 * arrives (a reload's new routes apply from a kept-alive connection's next
 * request); the session keeps the snapshot that owns its destination.
 */
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "switchyard/hex.h"
#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/protocols.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/route.h"
#include "switchyard/sasl.h"
#include "switchyard/session.h"

#define MAX_HEADERS    128
#define CLOSE_GRACE_MS 2000

typedef struct hdr {
	const char *name, *value;
	size_t nlen, vlen;
} hdr;

typedef enum hstate {
	H_HEAD,     /* reading a request head */
	H_BODYWAIT, /* a body-extract route: gathering the body before routing */
	H_ROUTING,  /* resolving the destination, dialling */
	H_EXCHANGE, /* request sent (its body streaming), the response streaming back */
	H_CLOSING,  /* the last response is flushing; the connection then closes */
} hstate;

typedef struct hctx {
	sy_session *s;
	hstate st;
	unsigned nreq;      /* requests completed on this connection */
	sy_snapshot *rsnap; /* the configuration the current request routes with */
	sy_snapshot *dsnap; /* the configuration that owns s->dest */
	char *buf;          /* client bytes not consumed yet (malloc'd) */
	char *pbuf;         /* the parsed copy of the head: url and headers point here */
	size_t len, cap, head_len;
	/* the parsed head */
	http_parser parser;
	const char *url;
	size_t url_len;
	hdr h[MAX_HEADERS];
	size_t nh;
	bool in_value, too_many, done;
	const char *method;
	sy_route_req *route;
	const sy_http_route *rt;
	char *identifier;
	uint64_t t0, in0, out0; /* the request's start and the client byte counts then */
	int status;             /* the status the request was answered with */
	/* the request */
	bool upgrade;         /* Upgrade + Connection: upgrade */
	bool req_close;       /* Connection: close asked (or the last allowed request) */
	bool expect_100;      /* the client waits for 100 Continue */
	bool expect_answered; /* ... and the proxy sent it (body extraction) */
	bool head_request;
	bool body_ready; /* body extraction: the whole body is in buf */
	size_t body_len;
	http_parser bp; /* the body's framing */
	bool body_done;
	bool withheld; /* a final response came while the client waited: drop its body */
	bool client_eof;
	bool client_paused, backend_paused; /* read stopped for backpressure */
	/* the response */
	http_parser rp;
	int resp_status; /* of the last head seen */
	bool relayed;    /* some response bytes went to the client */
	bool got_100, resp_done, resp_close, resp_upgrade;
	bool resp_in_head; /* gathering a response head (rbuf) */
	bool close_told;   /* the response head said Connection: close */
	char *rbuf;        /* the backend bytes of a head not complete yet */
	size_t rlen, rcap;
	bool draining; /* shutting down: close after the current exchange */
} hctx;

/* ---- small helpers ------------------------------------------------------------------- */

static bool ieq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	return alen == blen && strncasecmp(a, b, alen) == 0;
}

static const hdr *find_hdr(const hctx *c, const char *name, size_t *count)
{
	const hdr *first = NULL;
	size_t n = 0;
	for (size_t i = 0; i < c->nh; i++)
		if (ieq(c->h[i].name, c->h[i].nlen, name)) {
			if (!first)
				first = &c->h[i];
			n++;
		}
	if (count)
		*count = n;
	return first;
}

static const char *reason_of(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 421:
		return "Misdirected Request";
	case 431:
		return "Request Header Fields Too Large";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

static size_t path_len(const hctx *c)
{
	if (!c->url)
		return 0;
	const char *q = memchr(c->url, '?', c->url_len);
	return q ? (size_t)(q - c->url) : c->url_len;
}

static void path_of(const hctx *c, char *out, size_t len)
{
	size_t n = path_len(c);
	if (n >= len)
		n = len - 1;
	memcpy(out, c->url ? c->url : "", n);
	out[n] = '\0';
}

/* One line per request: never the query string, a credential or a token. */
static void log_request(hctx *c, int status)
{
	sy_session *s = c->s;
	if (!log_enabled(SY_LOG_INFO))
		return; /* the formatting below costs more than the rest of a request */
	char path[256], st[8], dur[24], bin[24], bout[24], peer[64];
	path_of(c, path, sizeof(path));
	snprintf(st, sizeof(st), "%d", status);
	snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(uv_now(&s->w->loop) - c->t0));
	snprintf(bin, sizeof(bin), "%llu", (unsigned long long)(s->client.bytes_in - c->in0));
	snprintf(bout, sizeof(bout), "%llu", (unsigned long long)(s->client.bytes_out - c->out0));
	session_peer_str(s, peer, sizeof(peer));
	sy_log(SY_LOG_INFO, "http request", "listener", s->lcfg->name, "client", peer, "method",
	       c->method ? c->method : "-", "path", path, "status", st, "destination",
	       s->dest ? s->dest->cfg->id : "-", "bytes_in", bin, "bytes_out", bout, "ms", dur,
	       NULL);
}

/* ---- head parsing -------------------------------------------------------------------- */

static int on_url(http_parser *p, const char *at, size_t len)
{
	hctx *c = p->data;
	if (!c->url)
		c->url = at;
	c->url_len = (size_t)(at + len - c->url);
	return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
	hctx *c = p->data;
	if (c->in_value || c->nh == 0 || c->h[c->nh - 1].value) {
		if (c->nh == MAX_HEADERS) {
			c->too_many = true;
			return 1;
		}
		c->h[c->nh++] = (hdr){.name = at, .nlen = len};
		c->in_value = false;
		return 0;
	}
	c->h[c->nh - 1].nlen = (size_t)(at + len - c->h[c->nh - 1].name);
	return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
	hctx *c = p->data;
	hdr *h = &c->h[c->nh - 1];
	if (!h->value)
		h->value = at;
	h->vlen = (size_t)(at + len - h->value);
	c->in_value = true;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	hctx *c = p->data;
	c->done = true;
	return 2; /* stop: no body parsing here (the bridge relays it) */
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
};

/* Raw checks http-parser does not make: bare LF, control bytes in the head,
 * obsolete line folding. Returns 0 or 400. */
static int raw_checks(const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)b[i];
		if (ch == '\n') {
			if (i == 0 || b[i - 1] != '\r')
				return 400;
			if (i + 1 < len && (b[i + 1] == ' ' || b[i + 1] == '\t'))
				return 400; /* obs-fold */
			continue;
		}
		if (ch == '\r') {
			if (i + 1 >= len || b[i + 1] != '\n')
				return 400;
			continue;
		}
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return 400;
	}
	return 0;
}

static bool te_ends_chunked(const char *v, size_t len)
{
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	size_t start = len;
	while (start > 0 && v[start - 1] != ',')
		start--;
	while (start < len && (v[start] == ' ' || v[start] == '\t'))
		start++;
	return ieq(v + start, len - start, "chunked");
}

/* The request-smuggling rules. Returns 0 or the status to answer. */
static int check_head(hctx *c)
{
	int r = raw_checks(c->buf, c->head_len);
	if (r)
		return r;
	/* http-parser refuses any repeated Content-Length; equal repeats are
	 * allowed here (RFC 9112 6.3), so it parses a copy in which the later
	 * ones are renamed, restored afterwards (different values are refused
	 * below). */
	free(c->pbuf);
	c->pbuf = malloc(c->head_len);
	if (!c->pbuf)
		return 400;
	memcpy(c->pbuf, c->buf, c->head_len);
	char *renamed[MAX_HEADERS];
	size_t nren = 0, ncl_raw = 0;
	for (size_t i = 0; i + 16 < c->head_len; i++)
		if (c->pbuf[i] == '\n' &&
		    strncasecmp(c->pbuf + i + 1, "content-length:", 15) == 0 && ncl_raw++ > 0 &&
		    nren < MAX_HEADERS) {
			renamed[nren++] = c->pbuf + i + 1;
			c->pbuf[i + 1] = 'X';
		}
	memset(&c->parser, 0, sizeof(c->parser));
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	http_parser_execute(&c->parser, &parser_settings, c->pbuf, c->head_len);
	for (size_t i = 0; i < nren; i++)
		renamed[i][0] = 'C';
	if (c->too_many)
		return 431;
	if (!c->done)
		return 400;
	c->method = http_method_str((enum http_method)c->parser.method);
	if (c->parser.http_major != 1 || c->parser.http_minor != 1)
		return 505;
	if (c->parser.method == HTTP_CONNECT)
		return 405;
	for (size_t i = 0; i < c->nh; i++)
		if (c->h[i].nlen == 0 || !c->h[i].value)
			if (c->h[i].nlen == 0)
				return 400;
	size_t nhost, nte, ncl;
	find_hdr(c, "host", &nhost);
	if (nhost != 1)
		return 400;
	const hdr *te = find_hdr(c, "transfer-encoding", &nte);
	find_hdr(c, "content-length", &ncl);
	if (nte > 0 && ncl > 0)
		return 400;
	if (nte > 1)
		return 400;
	if (te && !te_ends_chunked(te->value ? te->value : "", te->vlen))
		return 400;
	if (ncl > 0) {
		const hdr *first = NULL;
		for (size_t i = 0; i < c->nh; i++) {
			if (!ieq(c->h[i].name, c->h[i].nlen, "content-length"))
				continue;
			const hdr *h = &c->h[i];
			if (h->vlen == 0)
				return 400;
			for (size_t k = 0; k < h->vlen; k++)
				if (!isdigit((unsigned char)h->value[k]))
					return 400;
			if (first &&
			    (first->vlen != h->vlen || memcmp(first->value, h->value, h->vlen)))
				return 400;
			first = h;
		}
	}
	if (c->url_len == 0 || c->url[0] != '/')
		return 400;
	return 0;
}

/* ---- routing -------------------------------------------------------------------------- */

/* `*` matches within one segment, `**` any number of characters including
 * '/'. */
static bool glob(const char *g, const char *p, size_t plen)
{
	if (*g == '\0')
		return plen == 0;
	if (g[0] == '*' && g[1] == '*') {
		for (size_t i = 0; i <= plen; i++)
			if (glob(g + 2, p + i, plen - i))
				return true;
		return false;
	}
	if (g[0] == '*') {
		for (size_t i = 0; i <= plen; i++) {
			if (glob(g + 1, p + i, plen - i))
				return true;
			if (i < plen && p[i] == '/')
				break;
		}
		return false;
	}
	return plen > 0 && *g == *p && glob(g + 1, p + 1, plen - 1);
}

static bool route_matches(const char *g, const char *path, size_t plen)
{
	if (glob(g, path, plen))
		return true;
	/* "/api" also matches "/api/" */
	return plen > 1 && path[plen - 1] == '/' && glob(g, path, plen - 1);
}

/* application/x-www-form-urlencoded decoding (malloc'd). */
static char *form_decode(const char *v, size_t len)
{
	char *out = malloc(len + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '+')
			*o++ = ' ';
		else if (v[i] == '%' && i + 2 < len + 0 && sy_hexval(v[i + 1]) >= 0 &&
		         sy_hexval(v[i + 2]) >= 0) {
			*o++ = (char)(sy_hexval(v[i + 1]) * 16 + sy_hexval(v[i + 2]));
			i += 2;
		} else
			*o++ = v[i];
	}
	*o = '\0';
	return out;
}

static char *query_param(const hctx *c, const char *param)
{
	const char *q = memchr(c->url, '?', c->url_len);
	if (!q || !param)
		return NULL;
	const char *end = c->url + c->url_len, *p = q + 1;
	size_t plen = strlen(param);
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(e - p));
		const char *ke = eq ? eq : e;
		if ((size_t)(ke - p) == plen && memcmp(p, param, plen) == 0)
			return eq ? form_decode(eq + 1, (size_t)(e - eq - 1)) : strdup("");
		p = e + 1;
	}
	return NULL;
}

static char *trimmed_dup(const char *v, size_t len)
{
	while (len > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	return strndup(v, len);
}

/* Capture group 1 of the route's regex over the body that came with the
 * head (body_wait gathered it), form-decoded; NULL when it does not match. */
static char *body_capture(hctx *c)
{
	if (!c->body_ready || !c->rt->regex)
		return NULL;
	regex_t re;
	if (regcomp(&re, c->rt->regex, REG_EXTENDED) != 0)
		return NULL; /* validated at load: cannot happen */
	size_t n = c->body_len;
	char *body = malloc(n + 1);
	char *out = NULL;
	if (body) {
		memcpy(body, c->buf + c->head_len, n);
		body[n] = '\0'; /* a NUL in the body ends the subject */
		regmatch_t m[2];
		if (regexec(&re, body, 2, m, 0) == 0 && m[1].rm_so >= 0)
			out = form_decode(body + m[1].rm_so, (size_t)(m[1].rm_eo - m[1].rm_so));
		OPENSSL_cleanse(body, n);
		free(body);
	}
	regfree(&re);
	return out;
}

/* Builds credentials from the request as the route says; false when there
 * is nothing to extract. */
static bool extract_creds(hctx *c, sy_credentials *cr)
{
	memset(cr, 0, sizeof(*cr));
	const sy_http_route *rt = c->rt;
	switch (rt->extract) {
	case SY_HTTP_EXTRACT_AUTHORIZATION: {
		const hdr *h = find_hdr(c, "authorization", NULL);
		if (!h || !h->value)
			return false;
		const char *v = h->value;
		size_t vl = h->vlen;
		if (vl > 6 && strncasecmp(v, "basic ", 6) == 0) {
			char *b64 = trimmed_dup(v + 6, vl - 6);
			if (!b64)
				return false;
			size_t bl = strlen(b64);
			unsigned char *dec = malloc(bl + 4);
			int dn = dec && bl % 4 == 0 && bl < 65536
			             ? EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)bl)
			             : -1;
			for (size_t k = bl; dn > 0 && k > 0 && b64[k - 1] == '='; k--)
				dn--;
			free(b64);
			if (dn < 0) {
				free(dec);
				return false;
			}
			char *colon = memchr(dec, ':', (size_t)dn);
			size_t ul = colon ? (size_t)(colon - (char *)dec) : (size_t)dn;
			char *user = trimmed_dup((char *)dec, ul);
			OPENSSL_cleanse(dec, (size_t)dn);
			free(dec);
			if (!user)
				return false;
			for (char *p = user; *p; p++)
				*p = (char)tolower((unsigned char)*p);
			cr->mech = SY_MECH_PLAIN;
			cr->authcid = user;
			return true;
		}
		if (vl > 7 && strncasecmp(v, "bearer ", 7) == 0) {
			cr->mech = SY_MECH_XOAUTH2;
			cr->token = trimmed_dup(v + 7, vl - 7);
			return cr->token != NULL;
		}
		return false;
	}
	case SY_HTTP_EXTRACT_QUERY:
		cr->authcid = query_param(c, rt->param);
		break;
	case SY_HTTP_EXTRACT_HEADER: {
		const hdr *h = rt->header ? find_hdr(c, rt->header, NULL) : NULL;
		if (h && h->value)
			cr->authcid = strndup(h->value, h->vlen);
		break;
	}
	case SY_HTTP_EXTRACT_BODY:
		cr->authcid = body_capture(c);
		break;
	default:
		return false;
	}
	cr->mech = SY_MECH_PLAIN;
	return cr->authcid != NULL && cr->authcid[0] != '\0';
}

/* ---- toward the backend ------------------------------------------------------------------ */

/* Is `name` one of the comma-separated tokens of v (a Connection value)? */
static bool token_listed(const char *v, size_t len, const char *name, size_t nlen)
{
	for (const char *end = v + len; v < end;) {
		while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
			v++;
		const char *t = v;
		while (v < end && *v != ',' && *v != ' ' && *v != '\t')
			v++;
		if ((size_t)(v - t) == nlen && strncasecmp(t, name, nlen) == 0)
			return true;
	}
	return false;
}

static bool listed_in_connection(const hctx *c, const char *name, size_t nlen)
{
	for (size_t i = 0; i < c->nh; i++)
		if (ieq(c->h[i].name, c->h[i].nlen, "connection") && c->h[i].value &&
		    token_listed(c->h[i].value, c->h[i].vlen, name, nlen))
			return true;
	return false;
}

static bool hop_by_hop(const hctx *c, const hdr *h)
{
	static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
	                                  "te",         "trailer",    "upgrade"};
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (ieq(h->name, h->nlen, hop[i]))
			return true;
	if (!c->s->lcfg->forwarded_trust &&
	    (ieq(h->name, h->nlen, "forwarded") || ieq(h->name, h->nlen, "x-forwarded-for")))
		return true;
	if (ieq(h->name, h->nlen, "transfer-encoding") || ieq(h->name, h->nlen, "content-length"))
		return false;
	return listed_in_connection(c, h->name, h->nlen);
}

typedef struct obuf {
	char *p;
	size_t len, cap;
	bool fail;
} obuf;

static void put(obuf *o, const char *d, size_t n)
{
	if (o->fail)
		return;
	if (o->len + n > o->cap) {
		size_t cap = (o->cap ? o->cap * 2 : 4096) + n;
		char *p = realloc(o->p, cap);
		if (!p) {
			o->fail = true;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, d, n);
	o->len += n;
}

static void puts_(obuf *o, const char *s)
{
	put(o, s, strlen(s));
}

static void build_head(hctx *c, obuf *o)
{
	sy_session *s = c->s;
	const char *eol = memchr(c->pbuf, '\n', c->head_len);
	put(o, c->pbuf, (size_t)(eol - c->pbuf) + 1);
	bool cl_done = false;
	for (size_t i = 0; i < c->nh; i++) {
		const hdr *h = &c->h[i];
		if (hop_by_hop(c, h))
			continue;
		if (c->expect_answered && ieq(h->name, h->nlen, "expect"))
			continue; /* the proxy answered 100 Continue itself */
		if (ieq(h->name, h->nlen, "content-length")) {
			if (cl_done)
				continue; /* equal duplicates: exactly one toward the backend */
			cl_done = true;
		}
		put(o, h->name, h->nlen);
		puts_(o, ": ");
		if (h->value)
			put(o, h->value, h->vlen);
		puts_(o, "\r\n");
	}
	if (s->dest->cfg->forwarded) {
		char ip[64];
		sy_sockaddr_str((const struct sockaddr *)&s->peer, ip, sizeof(ip), false);
		bool v6 = strchr(ip, ':') != NULL;
		puts_(o, v6 ? "Forwarded: for=\"[" : "Forwarded: for=");
		puts_(o, ip);
		puts_(o, v6 ? "]\"\r\n" : "\r\n");
		puts_(o, "X-Forwarded-For: ");
		puts_(o, ip);
		puts_(o, "\r\n");
	}
	if (c->upgrade) {
		const hdr *u = find_hdr(c, "upgrade", NULL);
		puts_(o, "Connection: upgrade\r\nUpgrade: ");
		put(o, u->value, u->vlen);
		puts_(o, "\r\n\r\n");
	} else if (c->req_close) {
		puts_(o, "Connection: close\r\n\r\n");
	} else {
		puts_(o, "\r\n"); /* HTTP/1.1: persistent by default */
	}
}

/* ---- ending the connection ------------------------------------------------------------- */

static void on_grace_timer(uv_timer_t *t)
{
	session_close(t->data, "response not acknowledged");
}

static void on_linger_drained(sy_stream *st)
{
	session_close(st->owner, "closed after the last response");
}

static void on_linger_read(sy_stream *st, const char *data, ssize_t n)
{
	(void)data;
	if (n < 0)
		session_close(st->owner, "client closed after the last response");
}

static void drop_backend(hctx *c);

/* The last response is queued: flush it, send FIN, and close once the
 * client hangs up (or after a grace period). Unread client bytes would turn
 * our close into a reset that can discard the response, so they are read
 * and dropped meanwhile. */
static void linger_close(hctx *c)
{
	sy_session *s = c->s;
	if (s->state == SS_CLOSING)
		return;
	c->st = H_CLOSING;
	uv_timer_stop(&s->timer);
	if (s->dial) {
		dial_cancel(s->dial);
		s->dial = NULL;
	}
	if (c->route) {
		route_cancel(c->route);
		c->route = NULL;
	}
	drop_backend(c);
	sy_stream_shutdown(&s->client);
	if (c->client_eof) {
		/* No EOF will come again: close once the response is out. */
		if (sy_stream_pending(&s->client) == 0) {
			session_close(s, "closed after the last response");
			return;
		}
		sy_stream_set_drain_cb(&s->client, on_linger_drained);
	} else {
		sy_stream_set_drain_cb(&s->client, NULL);
	}
	sy_stream_read_start(&s->client, on_linger_read);
	if (s->state != SS_CLOSING)
		uv_timer_start(&s->timer, on_grace_timer, CLOSE_GRACE_MS, 0);
}

/* A complete proxy-generated response, then close. */
static void respond(hctx *c, int status, const char *extra)
{
	sy_session *s = c->s;
	if (s->state == SS_CLOSING || c->st == H_CLOSING)
		return;
	c->status = status;
	char body[128], msg[512];
	int bl = snprintf(body, sizeof(body), "%d %s\n", status, reason_of(status));
	int n = snprintf(msg, sizeof(msg),
	                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
	                 "%sConnection: close\r\n\r\n%s",
	                 status, reason_of(status), bl, extra ? extra : "", body);
	metrics_http_request(s->lrt->slot, status);
	log_request(c, status);
	if (n <= 0 || (size_t)n >= sizeof(msg) ||
	    sy_stream_write(&s->client, msg, (size_t)n) != 0) {
		session_close(s, "client write failed");
		return;
	}
	linger_close(c);
}

static void on_old_backend_closed(sy_stream *st)
{
	free(st);
}

/* Closes the backend connection while the session goes on (the backend
 * closed an idle keep-alive connection, or it cannot be reused). */
static void drop_backend(hctx *c)
{
	sy_session *s = c->s;
	if (!s->backend)
		return;
	sy_stream *b = s->backend;
	s->backend = NULL;
	c->backend_paused = false;
	sy_stream_close(b, on_old_backend_closed);
}

/* ---- the request body toward the backend ------------------------------------------------- */

static int on_body_complete(http_parser *p)
{
	hctx *c = p->data;
	c->body_done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings body_settings = {
    .on_message_complete = on_body_complete,
};

/* Sets up the body's framing from the request's headers. */
static void body_start(hctx *c)
{
	const hdr *te = find_hdr(c, "transfer-encoding", NULL);
	const hdr *cl = find_hdr(c, "content-length", NULL);
	char synth[96];
	int n;
	c->body_done = false;
	if (te)
		n = snprintf(synth, sizeof(synth),
		             "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
	else if (cl && !(cl->vlen == 1 && cl->value[0] == '0'))
		n = snprintf(synth, sizeof(synth),
		             "POST / HTTP/1.1\r\nContent-Length: %.*s\r\n\r\n",
		             (int)(cl->vlen > 40 ? 40 : cl->vlen), cl->value);
	else {
		c->body_done = true; /* no body */
		return;
	}
	http_parser_init(&c->bp, HTTP_REQUEST);
	c->bp.data = c;
	http_parser_execute(&c->bp, &body_settings, synth, (size_t)n);
	if (HTTP_PARSER_ERRNO(&c->bp) != HPE_OK)
		c->body_done = true; /* a length too large for the parser: check_head refused it */
}

/* Feeds body bytes; returns how many belong to the body (the rest is the
 * next request), or -1 when the chunked framing is broken. */
static ssize_t body_feed(hctx *c, const char *d, size_t n)
{
	if (c->body_done || n == 0)
		return 0; /* (a zero length would tell the parser the stream ended) */
	size_t k = http_parser_execute(&c->bp, &body_settings, d, n);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->bp);
	if (e != HPE_OK && e != HPE_PAUSED)
		return -1;
	return (ssize_t)k;
}

/* Sends the body bytes at d toward the backend (or drops them when
 * withheld); what follows the body stays in c->buf. Returns 0 or -1 (the
 * session is closing). */
static int forward_body(hctx *c, const char *d, size_t n, size_t *used)
{
	sy_session *s = c->s;
	ssize_t k = body_feed(c, d, n);
	if (k < 0) {
		session_close(s, "malformed chunked request body");
		return -1;
	}
	*used = (size_t)k;
	if (k > 0 && !c->withheld && s->backend && sy_stream_write(s->backend, d, (size_t)k) != 0) {
		session_close(s, "backend write failed");
		return -1;
	}
	return 0;
}

/* Appends client bytes to c->buf. */
static int buf_append(hctx *c, const char *d, size_t n)
{
	if (c->len + n > c->cap) {
		size_t cap = c->cap * 2 + n;
		char *b = realloc(c->buf, cap);
		if (!b)
			return -1;
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, d, n);
	c->len += n;
	return 0;
}

/* Drops the first `n` bytes of c->buf. */
static void buf_consume(hctx *c, size_t n)
{
	if (n >= c->len) {
		c->len = 0;
		return;
	}
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* ---- the response toward the client -----------------------------------------------------------
 */

static void finish_exchange(hctx *c);
static void go_upgrade(hctx *c, const char *rest, size_t n);
static void on_client_read(sy_stream *st, const char *data, ssize_t n);
static void on_backend_read(sy_stream *st, const char *data, ssize_t n);

static int on_resp_headers(http_parser *p)
{
	hctx *c = p->data;
	int st = (int)p->status_code;
	c->resp_status = st;
	if (st < 100)
		return -1; /* "050" is three digits, not a status (RFC 9110 15): 502 */
	if (st >= 200 && c->expect_100 && !c->got_100 && !c->body_done && !c->expect_answered)
		c->withheld = true; /* "the client was told to wait": its body must not follow */
	bool no_body = st / 100 == 1 || st == 204 || st == 304 || c->head_request;
	return no_body ? 1 : 0;
}

static int on_resp_complete(http_parser *p)
{
	hctx *c = p->data;
	int st = (int)p->status_code;
	if (st == 101 && c->upgrade) {
		c->resp_upgrade = true;
	} else if (st / 100 == 1) {
		if (st == 100)
			c->got_100 = true;
	} else {
		c->resp_done = true;
		c->resp_close = !http_should_keep_alive(p);
	}
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings resp_settings = {
    .on_headers_complete = on_resp_headers,
    .on_message_complete = on_resp_complete,
};

static void resp_start(hctx *c)
{
	http_parser_init(&c->rp, HTTP_RESPONSE);
	c->rp.data = c;
	c->resp_status = 0;
	c->relayed = c->got_100 = c->resp_done = c->resp_close = c->resp_upgrade = false;
	c->resp_in_head = true;
	c->close_told = false;
	c->rlen = 0;
}

/* A response that cannot be relayed: 502 when the client has seen nothing
 * of it yet, else the connection ends (the client sees a truncated
 * response, as from the backend itself). */
static void response_failed(hctx *c, const char *why)
{
	char peer[64];
	session_peer_str(c->s, peer, sizeof(peer));
	sy_log(SY_LOG_WARN, "http: bad or broken backend response", "listener", c->s->lcfg->name,
	       "client", peer, "destination", c->s->dest ? c->s->dest->cfg->id : "-", "reason", why,
	       NULL);
	if (!c->relayed) {
		drop_backend(c);
		respond(c, 502, NULL);
	} else {
		session_close(c->s, why);
	}
}

typedef enum scan_result { SCAN_MORE, SCAN_DONE, SCAN_UPGRADE, SCAN_ERROR } scan_result;

/* Parses backend bytes (d = NULL, n = 0: the backend closed) through the
 * response parser, across interim 1xx responses, up to the end of the final
 * response or of a 101 to an upgrade. *used is the number of bytes that
 * belong to the responses (what is relayed). */
static scan_result resp_scan(hctx *c, const char *d, size_t n, size_t *used, const char **err)
{
	size_t off = 0;
	scan_result r = SCAN_MORE;
	for (;;) {
		size_t k = http_parser_execute(&c->rp, &resp_settings, d ? d + off : NULL, n - off);
		enum http_errno e = HTTP_PARSER_ERRNO(&c->rp);
		off += k;
		if (e != HPE_OK && e != HPE_PAUSED) {
			*err = http_errno_name(e);
			r = SCAN_ERROR;
			break;
		}
		if (c->resp_upgrade) {
			r = SCAN_UPGRADE;
			break;
		}
		if (e == HPE_PAUSED) {
			http_parser_pause(&c->rp, 0);
			if (c->resp_done) {
				r = SCAN_DONE;
				break;
			}
			if (off < n)
				continue; /* an interim 1xx: the next head follows */
		}
		break;
	}
	*used = off;
	return r;
}

/* End of the response head at the start of b (its length), 0 when it is
 * not complete yet. A bare-LF blank line ends it too (the parser decides
 * whether such a head is acceptable). */
static size_t head_end(const char *b, size_t len)
{
	const char *crlf = len >= 4 ? memmem(b, len, "\r\n\r\n", 4) : NULL;
	const char *lf = len >= 2 ? memmem(b, len, "\n\n", 2) : NULL;
	if (crlf && (!lf || crlf + 2 <= lf))
		return (size_t)(crlf - b) + 4;
	return lf ? (size_t)(lf - b) + 2 : 0;
}

/* Is `name` one of the response's connection-specific fields (RFC 9110
 * 7.6.1: Connection, the fields it names, Keep-Alive, Proxy-Connection,
 * TE, Upgrade), or Alt-Svc (the backend advertising its own endpoint, which
 * would send clients around the proxy)? `conn` holds the Connection
 * header values seen in the head. */
static bool resp_hop(const char *name, size_t nlen, const char *conn, size_t clen)
{
	static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
	                                  "te",         "upgrade",    "alt-svc"};
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (ieq(name, nlen, hop[i]))
			return true;
	if (ieq(name, nlen, "transfer-encoding") || ieq(name, nlen, "content-length"))
		return false; /* framing: relayed as the body is */
	return token_listed(conn, clen, name, nlen);
}

/* Sends the response head at h (hl bytes, already parsed) to the client
 * without the backend's connection-specific fields, with `Connection:
 * close` when the client connection ends after this response (and the
 * upgrade's own Connection and Upgrade for a 101). Counts a final
 * response. Returns 0, or -1 when the session is closing. */
static int send_head(hctx *c, const char *h, size_t hl, scan_result r)
{
	sy_session *s = c->s;
	bool upgrade = r == SCAN_UPGRADE;
	bool final = !upgrade && c->resp_status >= 200;
	/* The Connection values, to drop the fields they name. */
	char conn[512];
	size_t clen = 0;
	const char *eol = memchr(h, '\n', hl);
	const char *end = h + hl;
	for (const char *p = eol + 1; p < end;) {
		const char *le = memchr(p, '\n', (size_t)(end - p));
		const char *colon = memchr(p, ':', (size_t)((le ? le : end) - p));
		if (colon && ieq(p, (size_t)(colon - p), "connection")) {
			const char *v = colon + 1, *ve = le ? le : end;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == '\n'))
				ve--;
			size_t n = (size_t)(ve - v);
			if (clen + n + 1 < sizeof(conn)) {
				memcpy(conn + clen, v, n);
				clen += n;
				conn[clen++] = ',';
			}
		}
		p = le ? le + 1 : end;
	}
	obuf o = {0};
	put(&o, h, (size_t)(eol - h) + 1);
	bool drop = false;
	for (const char *p = eol + 1; p < end;) {
		const char *le = memchr(p, '\n', (size_t)(end - p));
		const char *next = le ? le + 1 : end;
		size_t ll = (size_t)(next - p);
		if (ll <= 2 && (p[0] == '\r' || p[0] == '\n'))
			break; /* the blank line */
		if (p[0] == ' ' || p[0] == '\t') {
			if (!drop) /* a folded continuation goes with its field */
				put(&o, p, ll);
		} else {
			const char *colon = memchr(p, ':', ll);
			size_t nlen = colon ? (size_t)(colon - p) : ll;
			drop = resp_hop(p, nlen, conn, clen);
			if (upgrade && (ieq(p, nlen, "connection") || ieq(p, nlen, "upgrade")))
				drop = false;
			if (!drop)
				put(&o, p, ll);
		}
		p = next;
	}
	if (final) {
		c->close_told = c->req_close || c->withheld || !c->body_done || c->draining ||
		                c->client_eof || !http_should_keep_alive(&c->rp);
		if (c->close_told)
			puts_(&o, "Connection: close\r\n");
	}
	puts_(&o, "\r\n");
	if (final)
		metrics_http_request(s->lrt->slot, c->resp_status);
	else if (upgrade) {
		metrics_http_request(s->lrt->slot, 101);
		metrics_http_upgrade(s->lrt->slot);
	}
	int rc = o.fail ? -1 : sy_stream_write(&s->client, o.p, o.len);
	free(o.p);
	if (rc != 0) {
		session_close(s, "client write failed");
		return -1;
	}
	c->relayed = true;
	return 0;
}

static int rbuf_append(hctx *c, const char *d, size_t n)
{
	if (c->rlen + n > c->rcap) {
		size_t cap = c->rcap * 2 + n + 1024;
		char *b = realloc(c->rbuf, cap);
		if (!b)
			return -1;
		c->rbuf = b;
		c->rcap = cap;
	}
	memcpy(c->rbuf + c->rlen, d, n);
	c->rlen += n;
	return 0;
}

/* Relays backend bytes (d = NULL: the backend closed): each response head
 * is gathered, parsed and sent rewritten; a final response's body is
 * relayed as it arrives, up to its end. */
static void feed_response(hctx *c, const char *d, size_t n)
{
	sy_session *s = c->s;
	bool eof = d == NULL;
	if (c->resp_in_head) {
		if (eof) {
			response_failed(c, "backend closed before the response was complete");
			return;
		}
		if (rbuf_append(c, d, n) != 0) {
			session_close(s, "out of memory");
			return;
		}
		for (;;) {
			size_t hl = head_end(c->rbuf, c->rlen);
			if (!hl) {
				if (c->rlen > c->rsnap->cfg->http.max_head_size)
					response_failed(c, "response head too large");
				return;
			}
			size_t used = 0;
			const char *err = NULL;
			scan_result r = resp_scan(c, c->rbuf, hl, &used, &err);
			if (r == SCAN_ERROR || used != hl) {
				response_failed(c, err ? err : "malformed response head");
				return;
			}
			if (send_head(c, c->rbuf, hl, r) != 0)
				return;
			size_t rest = c->rlen - hl;
			if (r == SCAN_UPGRADE) {
				go_upgrade(c, c->rbuf + hl, rest);
				return;
			}
			if (r == SCAN_DONE) {
				c->rlen = 0;
				if (rest)
					c->resp_close =
					    true; /* bytes after the response: not reusable */
				finish_exchange(c);
				return;
			}
			memmove(c->rbuf, c->rbuf + hl, rest);
			c->rlen = rest;
			if (c->resp_status / 100 == 1) {
				if (rest == 0)
					return;
				continue; /* an interim 1xx: the next head follows */
			}
			c->resp_in_head = false; /* a final response: its body follows */
			if (rest == 0)
				return;
			d = c->rbuf;
			n = rest;
			break;
		}
	}
	size_t used = 0;
	const char *err = NULL;
	scan_result r = resp_scan(c, d, n, &used, &err);
	if (r == SCAN_ERROR) {
		response_failed(c, err);
		return;
	}
	if (used > 0 && sy_stream_write(&s->client, d, used) != 0) {
		session_close(s, "client write failed");
		return;
	}
	if (d == c->rbuf)
		c->rlen = 0;
	if (r == SCAN_DONE) {
		if (used < n)
			c->resp_close = true; /* bytes after the response: not reusable */
		finish_exchange(c);
		return;
	}
	if (eof) {
		/* The backend closed: only a body delimited by the close ends
		 * well here (the parser completes it on EOF). */
		response_failed(c, "backend closed before the response was complete");
		return;
	}
	if (sy_stream_pending(&s->client) > 0 && s->backend) {
		sy_stream_read_stop(s->backend);
		c->backend_paused = true;
	}
}

/* ---- the exchange -----------------------------------------------------------------------------
 */

static void reset_request(hctx *c);
static void process_head(hctx *c);

static void on_relay_idle(uv_timer_t *t)
{
	session_close(t->data, "http relay_idle");
}

static void touch(hctx *c)
{
	uv_timer_start(&c->s->timer, on_relay_idle, c->rsnap->cfg->http.relay_idle_ms, 0);
}

static void on_client_drain(sy_stream *st)
{
	sy_session *s = st->owner;
	hctx *c = s->proto;
	if (c && c->st == H_EXCHANGE && c->backend_paused && s->backend) {
		c->backend_paused = false;
		sy_stream_read_start(s->backend, on_backend_read);
	}
}

static void on_backend_drain(sy_stream *st)
{
	sy_session *s = st->owner;
	hctx *c = s->proto;
	if (c && c->st == H_EXCHANGE && c->client_paused && !c->body_done) {
		c->client_paused = false;
		sy_stream_read_start(&s->client, on_client_read);
	}
}

/* The head (and the body bytes after it) go to the backend; the response
 * is awaited. */
static void send_request(hctx *c)
{
	sy_session *s = c->s;
	obuf o = {0};
	build_head(c, &o);
	if (o.fail || sy_stream_write(s->backend, o.p, o.len) != 0) {
		free(o.p);
		session_close(s, "backend write failed");
		return;
	}
	free(o.p);
	if (s->state == SS_CLOSING)
		return;
	c->st = H_EXCHANGE;
	free(s->identifier); /* what /connections/kick matches */
	s->identifier = c->identifier;
	c->identifier = NULL;
	body_start(c);
	size_t used = 0;
	if (forward_body(c, c->buf + c->head_len, c->len - c->head_len, &used) != 0)
		return;
	buf_consume(c, c->head_len + used);
	c->head_len = 0;
	resp_start(c);
	touch(c);
	sy_stream_set_drain_cb(&s->client, on_client_drain);
	sy_stream_set_drain_cb(s->backend, on_backend_drain);
	c->backend_paused = false;
	sy_stream_read_start(s->backend, on_backend_read);
	if (s->state == SS_CLOSING || c->st != H_EXCHANGE)
		return;
	c->client_paused = false;
	if (!c->body_done && sy_stream_pending(s->backend) == 0)
		sy_stream_read_start(&s->client, on_client_read);
	else if (!c->body_done)
		c->client_paused = true;
}

static void finish_exchange(hctx *c)
{
	sy_session *s = c->s;
	log_request(c, c->resp_status);
	c->nreq++;
	if (c->resp_close)
		drop_backend(c);
	/* Connection: close from either side (or a body the backend's close
	 * ended, which http_should_keep_alive reports the same way). */
	if (c->req_close || c->resp_close || c->close_told || c->withheld || !c->body_done ||
	    c->draining || c->client_eof || s->state == SS_CLOSING) {
		linger_close(c);
		return;
	}
	if (s->backend) {
		sy_stream_read_stop(s->backend);
		c->backend_paused = false;
		/* Idle: an EOF from the backend now just drops the connection. */
		sy_stream_read_start(s->backend, on_backend_read);
	}
	reset_request(c);
	process_head(c);
}

/* 101 to an upgrade request: the rest is the opaque bridge. */
static void go_upgrade(hctx *c, const char *rest, size_t n)
{
	sy_session *s = c->s;
	log_request(c, 101);
	if (n > 0 && sy_stream_write(&s->client, rest, n) != 0) {
		session_close(s, "client write failed");
		return;
	}
	if (c->len > 0 && sy_stream_write(s->backend, c->buf, c->len) != 0) {
		session_close(s, "backend write failed");
		return;
	}
	c->len = 0;
	c->st = H_CLOSING; /* this module is done with the connection */
	uv_timer_stop(&s->timer);
	sy_stream_read_stop(&s->client);
	sy_stream_read_stop(s->backend);
	bridge_start(s);
}

static void on_backend_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	hctx *c = s->proto;
	if (!c || s->state == SS_CLOSING)
		return;
	if (c->st != H_EXCHANGE) {
		/* Between requests: the backend closed its idle connection (or
		 * sent bytes nobody asked for). Dial again for the next one. */
		drop_backend(c);
		return;
	}
	touch(c);
	if (n > 0) {
		feed_response(c, data, (size_t)n);
		return;
	}
	if (n == UV_EOF) {
		feed_response(c, NULL, 0);
		return;
	}
	response_failed(c, "backend connection error");
}

static void on_dialed(void *arg, sy_stream *stream, int status, const char *reason)
{
	hctx *c = arg;
	sy_session *s = c->s;
	s->dial = NULL;
	if (status != 0) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_WARN, "backend connection failed", "listener", s->lcfg->name,
		       "protocol", "http", "client", peer, "destination", s->dest->cfg->id,
		       "reason", reason, NULL);
		respond(c, 502, NULL);
		return;
	}
	s->backend = stream;
	stream->owner = s;
	send_request(c);
}

/* Sends the request to `d`: over the kept-alive backend connection when it
 * is the connection's destination, else a new one; a destination other
 * than the connection's gets 421. */
static void use_dest(hctx *c, sy_dest_rt *d, sy_node_set *hold)
{
	sy_session *s = c->s;
	if (s->dest && strcmp(s->dest->cfg->id, d->cfg->id) != 0) {
		respond(c, 421, NULL);
		return;
	}
	if (s->backend) {
		send_request(c);
		return;
	}
	if (c->dsnap != c->rsnap) {
		session_set_dest(s, d, hold);
		snapshot_unref(c->dsnap);
		c->dsnap = snapshot_ref(c->rsnap);
	} else if (!s->dest) {
		session_set_dest(s, d, hold);
	}
	c->st = H_ROUTING;
	sy_dial_params p = {
	    .w = s->w,
	    .snap = c->dsnap,
	    .dest = s->dest,
	    .proto = SY_PROTO_HTTP,
	    .client = (const struct sockaddr *)&s->peer,
	    .local = (const struct sockaddr *)&s->local,
	    .proxy_header = false, /* HTTP legs never carry a PROXY header */
	    .timeout_ms = c->rsnap->cfg->server.backend_timeout_ms,
	    .stream_owner = s,
	    .cb = on_dialed,
	    .arg = c,
	};
	s->dial = dial_start(&p);
}

static sy_dest_rt *fallback_dest(hctx *c)
{
	/* "default" names the default destination unless a target is
	 * actually called that (docs/CONFIGURATION.md). */
	sy_dest_rt *d = c->rt->fallback ? snapshot_dest(c->rsnap, c->rt->fallback) : NULL;
	return d ? d : snapshot_dest(c->rsnap, c->rsnap->cfg->routing.default_destination);
}

static void on_routed(void *arg, const sy_route_result *r)
{
	hctx *c = arg;
	c->route = NULL;
	if (c->s->state == SS_CLOSING)
		return;
	if (r->status != SY_ROUTE_OK) {
		respond(c, r->status == SY_ROUTE_TEMPFAIL ? 503 : 502,
		        r->status == SY_ROUTE_TEMPFAIL ? "Retry-After: 5\r\n" : NULL);
		return;
	}
	sy_dest_rt *d = r->dest;
	sy_node_set *hold = r->hold;
	if (r->routed_to_default && c->rt->fallback && strcmp(c->rt->fallback, "default") != 0) {
		d = fallback_dest(c);
		hold = NULL;
	}
	if (!d) {
		respond(c, 502, NULL);
		return;
	}
	use_dest(c, d, hold);
}

static void on_route_timeout(uv_timer_t *t)
{
	sy_session *s = t->data;
	hctx *c = s->proto;
	if (c->route) {
		route_cancel(c->route);
		c->route = NULL;
	}
	respond(c, 502, NULL);
}

static void route_request(hctx *c)
{
	sy_session *s = c->s;
	c->st = H_ROUTING;
	uv_timer_start(&s->timer, on_route_timeout, c->rsnap->cfg->server.backend_timeout_ms, 0);
	if (c->rt->extract == SY_HTTP_EXTRACT_NONE) {
		sy_dest_rt *d = snapshot_dest(c->rsnap, c->rt->destination);
		if (!d) {
			/* a cluster target: the router picks the node (pinned by
			 * the connection's id, as an opaque login is) */
			sy_route_req *req =
			    route_resolve(s->w, c->rsnap, NULL, s->id, SY_PROTO_HTTP, on_routed, c);
			if (req)
				c->route = req;
			return;
		}
		use_dest(c, d, NULL);
		return;
	}
	sy_credentials cr;
	char *id = NULL;
	if (extract_creds(c, &cr)) {
		sy_ident_result ir = identifier_extract(&cr, c->rsnap->cfg, &id);
		if (ir != SY_IDENT_OK)
			id = NULL;
	}
	credentials_wipe(&cr);
	if (!id) {
		sy_dest_rt *d = fallback_dest(c);
		if (!d) {
			respond(c, 502, NULL);
			return;
		}
		use_dest(c, d, NULL);
		return;
	}
	free(c->identifier);
	c->identifier = id;
	sy_route_req *req = route_resolve(s->w, c->rsnap, id, s->id, SY_PROTO_HTTP, on_routed, c);
	if (req)
		c->route = req;
}

/* ---- the client leg ------------------------------------------------------------------------ */

static void on_head_timeout(uv_timer_t *t)
{
	sy_session *s = t->data;
	hctx *c = s->proto;
	if (c->nreq > 0 && c->len == 0) {
		session_close(s, "http keepalive_timeout");
		return;
	}
	respond(c, 408, NULL);
}

static void reset_request(hctx *c)
{
	sy_session *s = c->s;
	c->st = H_HEAD;
	c->head_len = 0;
	c->url = NULL;
	c->url_len = 0;
	c->nh = 0;
	c->in_value = c->too_many = c->done = false;
	c->method = NULL;
	c->rt = NULL;
	c->status = 0;
	c->upgrade = c->req_close = c->expect_100 = c->expect_answered = false;
	c->head_request = c->body_ready = c->withheld = c->client_paused = false;
	c->body_done = true;
	c->body_len = 0;
	c->t0 = uv_now(&s->w->loop);
	c->in0 = s->client.bytes_in - c->len; /* what is buffered belongs to this request */
	c->out0 = s->client.bytes_out;
	if (c->nreq > 0) {
		/* Idle: keepalive_timeout until a byte comes, then the head
		 * deadline (preauth_timeout) from that byte. */
		uv_timer_start(&s->timer, on_head_timeout,
		               c->len ? s->lcfg->preauth_timeout_ms
		                      : c->rsnap->cfg->http.keepalive_timeout_ms,
		               0);
	}
}

/* The request's head is complete and checked: route it. */
static void head_ready(hctx *c)
{
	sy_session *s = c->s;
	const sy_http_config *hc = &c->rsnap->cfg->http;
	size_t plen = path_len(c);
	for (size_t i = 0; i < hc->nroutes; i++)
		if (route_matches(hc->routes[i].match, c->url, plen)) {
			c->rt = &hc->routes[i];
			break;
		}
	if (!c->rt) {
		respond(c, 404, NULL);
		return;
	}
	size_t nu;
	const hdr *u = find_hdr(c, "upgrade", &nu);
	c->upgrade = nu == 1 && u->value && listed_in_connection(c, "upgrade", 7);
	c->req_close = listed_in_connection(c, "close", 5) || hc->keepalive_timeout_ms == 0 ||
	               (hc->max_keepalive_requests && c->nreq + 1 >= hc->max_keepalive_requests);
	const hdr *ex = find_hdr(c, "expect", NULL);
	c->expect_100 = ex && ex->value && ieq(ex->value, ex->vlen, "100-continue");
	c->head_request = c->parser.method == HTTP_HEAD;
	if (c->rt->extract == SY_HTTP_EXTRACT_BODY) {
		const hdr *cl = find_hdr(c, "content-length", NULL);
		unsigned long long n = cl ? strtoull(cl->value, NULL, 10) : 0;
		if (cl && !find_hdr(c, "transfer-encoding", NULL) && n > 0 &&
		    n <= hc->body_extract_cap) {
			c->body_len = (size_t)n;
			if (c->expect_100) {
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
				if (sy_stream_write(&s->client, cont, sizeof(cont) - 1) != 0) {
					session_close(s, "client write failed");
					return;
				}
				c->expect_answered = true;
			}
			c->st = H_BODYWAIT;
			uv_timer_start(&s->timer, on_route_timeout,
			               c->rsnap->cfg->server.backend_timeout_ms, 0);
			if (c->len - c->head_len >= c->body_len) {
				c->body_ready = true;
				route_request(c);
			} else {
				sy_stream_read_start(&s->client, on_client_read);
			}
			return;
		}
	}
	route_request(c);
}

/* Looks for a complete head at the start of c->buf. */
static void process_head(hctx *c)
{
	sy_session *s = c->s;
	uint64_t max = c->rsnap->cfg->http.max_head_size;
	char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
	if (!end) {
		/* a bare LF ending the head is malformed: look for "\n\n" too */
		if (c->len >= 2 && memmem(c->buf, c->len, "\n\n", 2)) {
			c->head_len = c->len;
			respond(c, 400, NULL);
			return;
		}
		if (c->len > max) {
			respond(c, 431, NULL);
			return;
		}
		sy_stream_read_start(&s->client, on_client_read);
		return;
	}
	c->head_len = (size_t)(end + 4 - c->buf);
	if (c->head_len > max) {
		respond(c, 431, NULL);
		return;
	}
	sy_stream_read_stop(&s->client);
	if (c->nreq > 0) {
		/* A kept-alive connection: the configuration current now. */
		sy_snapshot *now = s->w->hooks->snapshot(s->w);
		snapshot_unref(c->rsnap);
		c->rsnap = now;
	}
	int st = check_head(c);
	if (st) {
		respond(c, st, NULL);
		return;
	}
	head_ready(c);
}

static void on_client_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	hctx *c = s->proto;
	if (n < 0) {
		c->client_eof = true;
		if (c->st == H_EXCHANGE && c->body_done && n == UV_EOF) {
			/* Half-closed after a complete request: answer it, then end. */
			sy_stream_read_stop(&s->client);
			return;
		}
		session_close(s, c->st == H_HEAD && c->len == 0 ? "client closed"
		                                                : "client closed mid-request");
		return;
	}
	switch (c->st) {
	case H_HEAD: {
		bool first_byte = c->len == 0 && c->nreq > 0;
		if (buf_append(c, data, (size_t)n) != 0) {
			session_close(s, "out of memory");
			return;
		}
		if (first_byte)
			uv_timer_start(&s->timer, on_head_timeout, s->lcfg->preauth_timeout_ms, 0);
		process_head(c);
		return;
	}
	case H_BODYWAIT:
		if (buf_append(c, data, (size_t)n) != 0) {
			session_close(s, "out of memory");
			return;
		}
		if (c->len - c->head_len >= c->body_len) {
			sy_stream_read_stop(&s->client);
			c->body_ready = true;
			route_request(c);
		}
		return;
	case H_EXCHANGE: {
		touch(c);
		size_t used = 0;
		if (!c->body_done && forward_body(c, data, (size_t)n, &used) != 0)
			return;
		if (used < (size_t)n) {
			/* The next request, pipelined: it waits for this response. */
			if (buf_append(c, data + used, (size_t)n - used) != 0) {
				session_close(s, "out of memory");
				return;
			}
			sy_stream_read_stop(&s->client);
		} else if (s->backend && sy_stream_pending(s->backend) > 0) {
			sy_stream_read_stop(&s->client);
			c->client_paused = true;
		}
		if (c->body_done)
			sy_stream_read_stop(&s->client);
		return;
	}
	default:
		sy_stream_read_stop(&s->client);
		return;
	}
}

static void http_shutdown(sy_session *s)
{
	hctx *c = s->proto;
	if (!c)
		return;
	c->draining = true;
	if (c->st == H_HEAD && c->len == 0)
		session_close(s, "shutting down");
}

static void http_release(sy_session *s)
{
	hctx *c = s->proto;
	if (!c)
		return;
	if (c->route)
		route_cancel(c->route);
	if (c->rsnap)
		snapshot_unref(c->rsnap);
	if (c->dsnap)
		snapshot_unref(c->dsnap);
	free(c->buf);
	free(c->pbuf);
	free(c->rbuf);
	free(c->identifier);
	free(c);
	s->proto = NULL;
}

void http_start(sy_session *s)
{
	hctx *c = calloc(1, sizeof(*c));
	if (!c) {
		session_close(s, "out of memory");
		return;
	}
	c->s = s;
	c->cap = 4096;
	c->buf = malloc(c->cap);
	c->rsnap = snapshot_ref(s->snap);
	c->dsnap = snapshot_ref(s->snap);
	s->proto = c;
	s->proto_release = http_release;
	s->proto_shutdown = http_shutdown;
	if (!c->buf) {
		session_close(s, "out of memory");
		return;
	}
	reset_request(c);
	uint64_t deadline = s->start_ms + s->lcfg->preauth_timeout_ms;
	uint64_t now = uv_now(&s->w->loop);
	uv_timer_start(&s->timer, on_head_timeout, deadline > now ? deadline - now : 1, 0);
	if (s->pending_len > 0) {
		char *p = s->pending;
		size_t pl = s->pending_len;
		s->pending = NULL;
		s->pending_len = 0;
		int rc = buf_append(c, p, pl);
		pool_put(&s->w->pool, p);
		if (rc != 0) {
			session_close(s, "out of memory");
			return;
		}
	}
	process_head(c);
}

int http_request_head_status(const char *head, size_t len, size_t *nheaders)
{
	hctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	c->buf = (char *)head;
	c->len = c->head_len = len;
	int r = check_head(c);
	if (nheaders)
		*nheaders = c->nh;
	free(c->pbuf);
	free(c);
	return r;
}

int http_response_scan(const char *data, size_t len, bool head_request, bool upgrade, size_t *used,
                       int *status)
{
	hctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	c->head_request = head_request;
	c->upgrade = upgrade;
	resp_start(c);
	const char *err = NULL;
	scan_result r = resp_scan(c, data, len, used, &err);
	if (r == SCAN_MORE) {
		size_t none = 0;
		r = resp_scan(c, NULL, 0, &none, &err); /* then the backend closes */
	}
	*status = c->resp_status;
	free(c);
	return (int)r;
}
