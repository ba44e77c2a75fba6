/*
 * The admin port's HTTP/1.1 server (http.h): accept, optional implicit TLS,
 * a bounded request read through http-parser, dispatch, one response,
 * close.
 *
 * Connection life: `refs` counts the network side (until the stream and
 * the timer have closed) and the handler's pending response (from dispatch
 * until http_respond). The memory goes when both are released, so a handler
 * answering after the client left, or after the server stopped, writes
 * nowhere and frees the request.
 */
#include "switchyard/http.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/hex.h"
#include "switchyard/log.h"
#include "switchyard/pool.h"
#include "switchyard/stream.h"

#define LINGER_MS     2000
#define POOL_MAX_FREE 4

typedef struct conn conn;

struct sy_http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	sy_pool pool;
	sy_http_new_ssl new_ssl;
	void *ssl_arg;
	sy_http_handler handler;
	void *handler_arg;
	conn *conns; /* connections whose network side is open */
	size_t nconns;
	bool stopping;
	bool listener_closed;
};

typedef enum conn_state {
	C_HANDSHAKE, /* implicit TLS */
	C_READING,   /* request head and body */
	C_HANDLING,  /* dispatched, waiting for http_respond */
	C_LINGER,    /* response queued, waiting for the client to close */
	C_CLOSED,    /* network side closing or closed */
} conn_state;

struct conn {
	sy_http_server *srv;
	conn *prev, *next;
	conn_state state;
	int refs;
	int closes_pending;
	sy_stream stream;
	uv_timer_t timer;
	http_parser parser;
	size_t head_bytes, head_content, body_bytes;
	bool headers_done, message_done;
	int error_status; /* set by a parser callback that refused the request */
	bool client_eof;
	/* Header collection: only Authorization is kept. */
	char field[32];
	size_t field_len;
	bool field_overflow, last_was_value;
	char *auth;
	size_t auth_len;
	char url[HTTP_URL_MAX + 1];
	size_t url_len;
	sy_http_req req;
};

static http_parser_settings settings;
static void on_read(sy_stream *st, const char *data, ssize_t n);

const char *http_status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

/* ---- life cycle ------------------------------------------------------------------------ */

static void maybe_free_server(sy_http_server *s)
{
	if (!s->stopping || !s->listener_closed || s->nconns > 0)
		return;
	pool_destroy(&s->pool);
	free(s);
}

static void conn_unref(conn *c)
{
	if (--c->refs > 0)
		return;
	free(c->req.path);
	free(c->req.query);
	free(c->req.authorization);
	free(c->auth);
	free(c);
}

static void on_part_closed(conn *c)
{
	if (--c->closes_pending > 0)
		return;
	sy_http_server *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	c->srv = NULL;
	conn_unref(c);
	maybe_free_server(s);
}

static void on_stream_closed(sy_stream *st)
{
	on_part_closed(st->owner);
}

static void on_timer_closed(uv_handle_t *h)
{
	on_part_closed(h->data);
}

static void conn_close(conn *c)
{
	if (c->state == C_CLOSED)
		return;
	c->state = C_CLOSED;
	c->closes_pending = 2;
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	sy_stream_close(&c->stream, on_stream_closed);
}

/* ---- responses ---------------------------------------------------------------------------- */

static void on_linger_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_drained_close(sy_stream *st)
{
	conn_close(st->owner);
}

/* Queues the response, then half-closes and lingers for the client's
 * close (so a request body still in flight does not turn our close into a
 * reset that could destroy the response). */
static void send_response(conn *c, int status, const char *ctype, const char *body, size_t len,
                          const char *extra)
{
	if (c->state == C_CLOSED || c->state == C_LINGER)
		return;
	char head[1024];
	int n = snprintf(head, sizeof(head),
	                 "HTTP/1.1 %d %s\r\n"
	                 "Content-Type: %s\r\n"
	                 "Content-Length: %zu\r\n"
	                 "Cache-Control: no-store\r\n"
	                 "Connection: close\r\n"
	                 "%s\r\n",
	                 status, http_status_text(status),
	                 ctype ? ctype : "text/plain; charset=utf-8", len, extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(head)) {
		conn_close(c);
		return;
	}
	c->state = C_LINGER;
	if (sy_stream_write(&c->stream, head, (size_t)n) != 0 ||
	    (len > 0 && c->req.method != SY_HTTP_HEAD && body &&
	     sy_stream_write(&c->stream, body, len) != 0)) {
		conn_close(c);
		return;
	}
	sy_stream_shutdown(&c->stream);
	uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
	if (c->client_eof) {
		/* Nothing more will come: close once the output is out. */
		sy_stream_set_drain_cb(&c->stream, on_drained_close);
		if (sy_stream_pending(&c->stream) == 0)
			conn_close(c);
		return;
	}
	if (!c->stream.reading)
		sy_stream_read_start(&c->stream, on_read);
}

void http_respond(sy_http_req *req, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers)
{
	conn *c = (conn *)((char *)req - offsetof(conn, req));
	if (c->state == C_HANDLING)
		send_response(c, status, content_type, body, len, extra_headers);
	conn_unref(c);
}

void http_respond_text(sy_http_req *req, int status, const char *text)
{
	http_respond(req, status, "text/plain; charset=utf-8", text, strlen(text), NULL);
}

/* An error answered by the server itself, before any dispatch. */
static void fail_request(conn *c, int status)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, http_status_text(status));
	send_response(c, status, NULL, body, (size_t)n, NULL);
}

/* ---- parsing ----------------------------------------------------------------------------- */

/* Counts head bytes (URL, header names and values) against HTTP_HEAD_MAX,
 * however the head was split across reads. */
static bool head_grow(conn *c, size_t len)
{
	c->head_content += len;
	if (c->head_content > HTTP_HEAD_MAX) {
		c->error_status = 431;
		return false;
	}
	return true;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	conn *c = p->data;
	if (!head_grow(c, len))
		return 1;
	if (c->url_len + len > HTTP_URL_MAX) {
		c->error_status = 414;
		return 1;
	}
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	c->url[c->url_len] = '\0';
	return 0;
}

static bool field_is_auth(const conn *c)
{
	return !c->field_overflow && c->field_len == 13 &&
	       strncasecmp(c->field, "authorization", 13) == 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	conn *c = p->data;
	if (!head_grow(c, len))
		return 1;
	if (c->last_was_value) {
		c->field_len = 0;
		c->field_overflow = false;
		c->last_was_value = false;
	}
	if (c->field_len + len >= sizeof(c->field)) {
		c->field_overflow = true;
		return 0;
	}
	memcpy(c->field + c->field_len, at, len);
	c->field_len += len;
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	conn *c = p->data;
	if (!head_grow(c, len))
		return 1;
	bool first = !c->last_was_value;
	c->last_was_value = true;
	if (!field_is_auth(c))
		return 0;
	if (first && c->auth) {
		/* A second Authorization header: ambiguous, refuse. */
		c->error_status = 400;
		return 1;
	}
	if (c->auth_len + len > HTTP_HEAD_MAX) {
		c->error_status = 431;
		return 1;
	}
	char *na = realloc(c->auth, c->auth_len + len + 1);
	if (!na) {
		c->error_status = 500;
		return 1;
	}
	c->auth = na;
	memcpy(c->auth + c->auth_len, at, len);
	c->auth_len += len;
	c->auth[c->auth_len] = '\0';
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	conn *c = p->data;
	c->headers_done = true;
	if (p->http_major != 1) {
		c->error_status = 505;
		return 2; /* skip body; the error is answered below */
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	(void)at;
	conn *c = p->data;
	c->body_bytes += len;
	if (c->body_bytes > HTTP_BODY_MAX) {
		c->error_status = 413;
		return 1;
	}
	return 0;
}

static int on_message_complete(http_parser *p)
{
	conn *c = p->data;
	c->message_done = true;
	http_parser_pause(p, 1);
	return 0;
}

/* Percent-decodes [s, s+len) into a malloc'd string; NULL for a bad escape
 * or a decoded NUL. */
static char *pct_decode(const char *s, size_t len)
{
	char *out = malloc(len + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%') {
			*o++ = s[i];
			continue;
		}
		if (i + 2 >= len) {
			free(out);
			return NULL;
		}
		int a = sy_hexval((unsigned char)s[i + 1]), b = sy_hexval((unsigned char)s[i + 2]);
		if (a < 0 || b < 0 || (a == 0 && b == 0)) {
			free(out);
			return NULL;
		}
		*o++ = (char)(a * 16 + b);
		i += 2;
	}
	*o = '\0';
	return out;
}

char *http_query_param(const sy_http_req *req, const char *name, bool *present)
{
	if (present)
		*present = false;
	if (!req->query)
		return NULL;
	size_t nlen = strlen(name);
	const char *p = req->query;
	while (*p) {
		const char *end = strchr(p, '&');
		size_t plen = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', plen);
		size_t klen = eq ? (size_t)(eq - p) : plen;
		if (klen == nlen && memcmp(p, name, nlen) == 0) {
			if (present)
				*present = true;
			if (!eq)
				return strdup("");
			return pct_decode(eq + 1, plen - klen - 1);
		}
		if (!end)
			break;
		p = end + 1;
	}
	return NULL;
}

static sy_http_method method_of(unsigned m)
{
	switch (m) {
	case HTTP_GET:
		return SY_HTTP_GET;
	case HTTP_HEAD:
		return SY_HTTP_HEAD;
	case HTTP_POST:
		return SY_HTTP_POST;
	case HTTP_PUT:
		return SY_HTTP_PUT;
	case HTTP_DELETE:
		return SY_HTTP_DELETE;
	default:
		return SY_HTTP_OTHER;
	}
}

/* The request is complete: split the URL and hand it to the handler. */
static void dispatch(conn *c)
{
	uv_timer_stop(&c->timer);
	struct http_parser_url u;
	http_parser_url_init(&u);
	if (c->url_len == 0 || c->url[0] != '/' ||
	    http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 ||
	    !(u.field_set & (1 << UF_PATH))) {
		fail_request(c, 400);
		return;
	}
	c->req.path = pct_decode(c->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
	if (!c->req.path) {
		fail_request(c, 400);
		return;
	}
	if (u.field_set & (1 << UF_QUERY)) {
		c->req.query =
		    strndup(c->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
		if (!c->req.query) {
			fail_request(c, 500);
			return;
		}
	}
	c->req.method = method_of(c->parser.method);
	c->req.method_name = http_method_str((enum http_method)c->parser.method);
	c->req.authorization = c->auth;
	c->auth = NULL;
	c->state = C_HANDLING;
	c->refs++; /* released by http_respond */
	c->srv->handler(c->srv->handler_arg, &c->req);
}

static void on_read(sy_stream *st, const char *data, ssize_t n)
{
	conn *c = st->owner;
	if (n < 0) {
		if (c->state == C_HANDLING && n == UV_EOF) {
			/* The client half-closed after its request: the response
			 * can still go out. */
			c->client_eof = true;
			sy_stream_read_stop(st);
			return;
		}
		conn_close(c);
		return;
	}
	if (c->state != C_READING)
		return; /* after the request (or while lingering): discard */
	if (!c->headers_done)
		c->head_bytes += (size_t)n;
	size_t done = http_parser_execute(&c->parser, &settings, data, (size_t)n);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
	if (c->error_status) {
		fail_request(c, c->error_status);
		return;
	}
	if (e != HPE_OK && e != HPE_PAUSED) {
		fail_request(c, e == HPE_HEADER_OVERFLOW ? 431 : 400);
		return;
	}
	(void)done;
	if (!c->headers_done && c->head_bytes > HTTP_HEAD_MAX) {
		fail_request(c, 431);
		return;
	}
	if (c->message_done)
		dispatch(c);
}

static void on_read_timeout(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->state == C_READING && c->head_bytes > 0) {
		fail_request(c, 408);
		return;
	}
	conn_close(c);
}

static void on_handshake(sy_stream *st, int status)
{
	conn *c = st->owner;
	if (status != 0) {
		conn_close(c);
		return;
	}
	c->state = C_READING;
	sy_stream_read_start(st, on_read);
}

static void on_handshake_read(sy_stream *st, const char *data, ssize_t n)
{
	(void)st;
	(void)data;
	(void)n;
}

static void on_connection(uv_stream_t *l, int status)
{
	sy_http_server *s = l->data;
	if (status < 0 || s->stopping)
		return;
	conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->srv = s;
	c->refs = 1;
	c->state = C_READING;
	sy_stream_init(&c->stream, s->loop, &s->pool, c);
	uv_timer_init(s->loop, &c->timer);
	c->timer.data = c;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	if (uv_accept(l, (uv_stream_t *)&c->stream.tcp) != 0 || s->nconns > HTTP_MAX_CONNS) {
		conn_close(c);
		return;
	}
	sy_stream_peer(&c->stream, &c->req.peer);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	uv_timer_start(&c->timer, on_read_timeout, HTTP_READ_TIMEOUT_MS, 0);
	if (s->new_ssl) {
		SSL *ssl = s->new_ssl(s->ssl_arg);
		if (!ssl) {
			conn_close(c);
			return;
		}
		c->state = C_HANDSHAKE;
		c->stream.read_cb = on_handshake_read;
		sy_stream_start_tls(&c->stream, ssl, true, on_handshake);
		return;
	}
	sy_stream_read_start(&c->stream, on_read);
}

sy_http_server *http_server_start(uv_loop_t *loop, const sy_bind_addr *bind,
                                  sy_http_new_ssl new_ssl, void *ssl_arg, sy_http_handler handler,
                                  void *handler_arg, const char **error_r)
{
	settings.on_url = on_url;
	settings.on_header_field = on_header_field;
	settings.on_header_value = on_header_value;
	settings.on_headers_complete = on_headers_complete;
	settings.on_body = on_body;
	settings.on_message_complete = on_message_complete;

	sy_http_server *s = calloc(1, sizeof(*s));
	if (!s) {
		*error_r = "out of memory";
		return NULL;
	}
	s->loop = loop;
	s->new_ssl = new_ssl;
	s->ssl_arg = ssl_arg;
	s->handler = handler;
	s->handler_arg = handler_arg;
	pool_init(&s->pool, POOL_MAX_FREE);
	uv_tcp_init(loop, &s->listener);
	s->listener.data = s;
	int r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&bind->addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, 64, on_connection);
	if (r != 0) {
		*error_r = uv_strerror(r);
		s->stopping = true;
		http_server_stop(s);
		return NULL;
	}
	return s;
}

static void on_listener_closed(uv_handle_t *h)
{
	sy_http_server *s = h->data;
	s->listener_closed = true;
	maybe_free_server(s);
}

void http_server_stop(sy_http_server *s)
{
	if (!s)
		return;
	s->stopping = true;
	if (!uv_is_closing((uv_handle_t *)&s->listener))
		uv_close((uv_handle_t *)&s->listener, on_listener_closed);
	for (conn *c = s->conns; c; c = c->next)
		conn_close(c);
}
