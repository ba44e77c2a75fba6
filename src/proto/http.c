/*
 * HTTP routing (SPEC.md section 5): one protocol module of the connection
 * core. The client's request head is read and checked (HTTP/1.1 only, the
 * request-smuggling rules), routed by [[http.route]] (fixed destination or
 * an identifier extracted from the request and resolved like a mail login),
 * rewritten toward the backend (hop-by-hop headers removed, Forwarded /
 * X-Forwarded-For per the listener and destination) and sent; from then on
 * the connection is the opaque bridge.
 *
 * Current limit: one request per client connection. The backend is asked
 * for `Connection: close` (an `Upgrade: websocket` request keeps its
 * upgrade), so it closes after its response and the bridge closes the
 * client leg; clients open a new connection for the next request, which is
 * then routed on its own.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "switchyard/hex.h"
#include "switchyard/log.h"
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

typedef struct hctx {
	sy_session *s;
	char *buf;  /* the client bytes read so far (malloc'd) */
	char *pbuf; /* the parsed copy of the head: url and headers point here */
	size_t len, cap, head_len;
	/* parsed head */
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
	uint64_t t0;
	int status; /* proxy-generated status, or 0 when relayed */
	bool upgrade;
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

static void log_request(hctx *c, int status)
{
	sy_session *s = c->s;
	char path[256], st[8], dur[24], bin[24], bout[24], peer[64];
	path_of(c, path, sizeof(path));
	snprintf(st, sizeof(st), "%d", status);
	snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(uv_now(&s->w->loop) - c->t0));
	snprintf(bin, sizeof(bin), "%llu", (unsigned long long)s->client.bytes_in);
	snprintf(bout, sizeof(bout), "%llu", (unsigned long long)s->client.bytes_out);
	session_peer_str(s, peer, sizeof(peer));
	sy_log(SY_LOG_INFO, "http request", "listener", s->lcfg->name, "client", peer, "method",
	       c->method ? c->method : "-", "path", path, "status", st, "destination",
	       s->dest ? s->dest->cfg->id : "-", "bytes_in", bin, "bytes_out", bout, "ms", dur,
	       NULL);
}

static void on_flushed_close(sy_stream *st)
{
	session_close(st->owner, "closed after proxy response");
}

static void on_grace_timer(uv_timer_t *t)
{
	session_close(t->data, "proxy response not acknowledged");
}

static void on_drain_read(sy_stream *st, const char *data, ssize_t n)
{
	(void)data;
	if (n < 0)
		session_close(st->owner, "client closed after proxy response");
}

/* A complete proxy-generated response, then close. */
static void respond(hctx *c, int status, const char *extra)
{
	sy_session *s = c->s;
	if (s->state == SS_CLOSING)
		return;
	c->status = status;
	char body[128], msg[512];
	int bl = snprintf(body, sizeof(body), "%d %s\n", status, reason_of(status));
	int n = snprintf(msg, sizeof(msg),
	                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
	                 "%sConnection: close\r\n\r\n%s",
	                 status, reason_of(status), bl, extra ? extra : "", body);
	log_request(c, status);
	uv_timer_stop(&s->timer);
	if (s->dial) {
		dial_cancel(s->dial);
		s->dial = NULL;
	}
	if (n <= 0 || (size_t)n >= sizeof(msg) ||
	    sy_stream_write(&s->client, msg, (size_t)n) != 0) {
		session_close(s, "client write failed");
		return;
	}
	if (s->state == SS_CLOSING)
		return;
	sy_stream_shutdown(&s->client);
	/* Unread client bytes would turn our close into a reset that can
	 * discard the response: read and drop until the client hangs up. */
	sy_stream_read_start(&s->client, on_drain_read);
	if (s->state != SS_CLOSING) {
		sy_stream_set_drain_cb(&s->client, NULL);
		uv_timer_start(&s->timer, on_grace_timer, CLOSE_GRACE_MS, 0);
	}
	(void)on_flushed_close;
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
	default:
		/* body extraction: not yet implemented; the fallback applies */
		return false;
	}
	cr->mech = SY_MECH_PLAIN;
	return cr->authcid != NULL && cr->authcid[0] != '\0';
}

/* ---- toward the backend ------------------------------------------------------------------ */

static bool listed_in_connection(const hctx *c, const char *name, size_t nlen)
{
	for (size_t i = 0; i < c->nh; i++) {
		if (!ieq(c->h[i].name, c->h[i].nlen, "connection") || !c->h[i].value)
			continue;
		const char *v = c->h[i].value, *end = v + c->h[i].vlen;
		while (v < end) {
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			const char *t = v;
			while (v < end && *v != ',' && *v != ' ' && *v != '\t')
				v++;
			if ((size_t)(v - t) == nlen && strncasecmp(t, name, nlen) == 0)
				return true;
		}
	}
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
	} else {
		puts_(o, "Connection: close\r\n\r\n");
	}
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
	obuf o = {0};
	build_head(c, &o);
	/* Body bytes that came with the head. */
	put(&o, c->buf + c->head_len, c->len - c->head_len);
	if (o.fail || sy_stream_write(s->backend, o.p, o.len) != 0) {
		free(o.p);
		session_close(s, "backend write failed");
		return;
	}
	free(o.p);
	if (s->state == SS_CLOSING)
		return;
	log_request(c, 0);
	free(s->identifier);
	s->identifier = c->identifier;
	c->identifier = NULL;
	uv_timer_stop(&s->timer);
	bridge_start(s);
}

static void dial_dest(hctx *c, sy_dest_rt *d, sy_node_set *hold)
{
	sy_session *s = c->s;
	session_set_dest(s, d, hold);
	sy_dial_params p = {
	    .w = s->w,
	    .snap = s->snap,
	    .dest = d,
	    .proto = SY_PROTO_HTTP,
	    .client = (const struct sockaddr *)&s->peer,
	    .local = (const struct sockaddr *)&s->local,
	    .proxy_header = false, /* HTTP legs never carry a PROXY header */
	    .timeout_ms = s->snap->cfg->server.backend_timeout_ms,
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
	sy_dest_rt *d = c->rt->fallback ? snapshot_dest(c->s->snap, c->rt->fallback) : NULL;
	return d ? d : snapshot_dest(c->s->snap, c->s->snap->cfg->routing.default_destination);
}

static void on_routed(void *arg, const sy_route_result *r)
{
	hctx *c = arg;
	c->route = NULL;
	if (c->s->state == SS_CLOSING)
		return;
	if (r->status != SY_ROUTE_OK) {
		respond(c, 503, "Retry-After: 5\r\n");
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
	dial_dest(c, d, hold);
}

static void route_request(hctx *c)
{
	sy_session *s = c->s;
	const sy_http_config *hc = &s->snap->cfg->http;
	size_t plen = path_len(c);
	c->rt = NULL;
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
	if (c->rt->extract == SY_HTTP_EXTRACT_NONE) {
		sy_dest_rt *d = snapshot_dest(s->snap, c->rt->destination);
		if (!d) {
			/* a cluster target: resolved through the router's pinning */
			sy_route_req *req =
			    route_resolve(s->w, s->snap, NULL, s->id, SY_PROTO_HTTP, on_routed, c);
			if (req)
				c->route = req;
			return;
		}
		dial_dest(c, d, NULL);
		return;
	}
	sy_credentials cr;
	char *id = NULL;
	if (extract_creds(c, &cr)) {
		sy_ident_result ir = identifier_extract(&cr, s->snap->cfg, &id);
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
		dial_dest(c, d, NULL);
		return;
	}
	c->identifier = id;
	sy_route_req *req = route_resolve(s->w, s->snap, id, s->id, SY_PROTO_HTTP, on_routed, c);
	if (req)
		c->route = req;
}

/* ---- the client leg ------------------------------------------------------------------------ */

static void on_head_timeout(uv_timer_t *t)
{
	sy_session *s = t->data;
	respond(s->proto, 408, NULL);
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

static void on_client_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	hctx *c = s->proto;
	if (n < 0) {
		session_close(s, "client closed before a complete request head");
		return;
	}
	uint64_t max = s->snap->cfg->http.max_head_size;
	if (c->len + (size_t)n > c->cap) {
		size_t cap = c->cap * 2 + (size_t)n;
		char *b = realloc(c->buf, cap);
		if (!b) {
			session_close(s, "out of memory");
			return;
		}
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, (size_t)n);
	size_t from = c->len > 3 ? c->len - 3 : 0;
	c->len += (size_t)n;
	char *end = NULL;
	for (size_t i = from; i + 3 < c->len + 0 && i + 4 <= c->len; i++)
		if (memcmp(c->buf + i, "\r\n\r\n", 4) == 0) {
			end = c->buf + i + 4;
			break;
		}
	if (!end) {
		/* a bare LF ending the head is malformed: look for "\n\n" too */
		if (memmem(c->buf, c->len, "\n\n", 2)) {
			c->head_len = c->len;
			respond(c, 400, NULL);
			return;
		}
		if (c->len > max)
			respond(c, 431, NULL);
		return;
	}
	c->head_len = (size_t)(end - c->buf);
	if (c->head_len > max) {
		respond(c, 431, NULL);
		return;
	}
	sy_stream_read_stop(&s->client);
	int st_ = check_head(c);
	if (st_) {
		respond(c, st_, NULL);
		return;
	}
	uv_timer_start(&s->timer, on_route_timeout, s->snap->cfg->server.backend_timeout_ms, 0);
	route_request(c);
}

static void http_release(sy_session *s)
{
	hctx *c = s->proto;
	if (!c)
		return;
	if (c->route)
		route_cancel(c->route);
	free(c->buf);
	free(c->pbuf);
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
	c->t0 = uv_now(&s->w->loop);
	s->proto = c;
	s->proto_release = http_release;
	if (!c->buf) {
		session_close(s, "out of memory");
		return;
	}
	uint64_t deadline = s->start_ms + s->lcfg->preauth_timeout_ms;
	uint64_t now = uv_now(&s->w->loop);
	uv_timer_start(&s->timer, on_head_timeout, deadline > now ? deadline - now : 1, 0);
	if (s->pending_len > 0) {
		char *p = s->pending;
		size_t pl = s->pending_len;
		s->pending = NULL;
		s->pending_len = 0;
		on_client_read(&s->client, p, (ssize_t)pl);
		pool_put(&s->w->pool, p);
		if (s->state != SS_CLOSING && c->head_len == 0)
			sy_stream_read_start(&s->client, on_client_read);
		return;
	}
	sy_stream_read_start(&s->client, on_client_read);
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
