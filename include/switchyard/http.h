/*
 * A small HTTP/1.1 server (src/net/http.c), today the admin side port's, and
 * the status texts, query decoding and response framing an HTTP module shares.
 *
 * One request per connection: the head is bounded (HTTP_HEAD_MAX), a body
 * is read and discarded (HTTP_BODY_MAX), the whole request must arrive
 * within HTTP_READ_TIMEOUT_MS, and every response carries
 * `Connection: close`. Parsing is http-parser's (strict mode). Runs on one
 * event loop (the main thread's); nothing here is thread-safe.
 *
 * A request is handed to the handler once complete; the handler answers
 * with http_respond(), at once or later (after an asynchronous store call
 * or a broadcast to the workers). The request object stays valid until
 * http_respond() is called, even if the client goes away meanwhile.
 */
#ifndef SWITCHYARD_HTTP_H
#define SWITCHYARD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include <openssl/ssl.h>

#include "switchyard/config.h"

#define HTTP_HEAD_MAX        8192
#define HTTP_BODY_MAX        65536
#define HTTP_URL_MAX         2048
#define HTTP_READ_TIMEOUT_MS 10000
#define HTTP_MAX_CONNS       64

typedef struct sy_http_server sy_http_server;

typedef enum sy_http_method {
	SY_HTTP_GET,
	SY_HTTP_HEAD,
	SY_HTTP_POST,
	SY_HTTP_PUT,
	SY_HTTP_DELETE,
	SY_HTTP_OTHER
} sy_http_method;

typedef struct sy_http_req {
	sy_http_method method;
	const char *method_name;
	char *path;          /* percent-decoded path, no query */
	char *query;         /* raw query string (no '?'), NULL when absent */
	char *authorization; /* the Authorization header, NULL when absent */
	struct sockaddr_storage peer;
	void *handler_data; /* free for the handler's use */
} sy_http_req;

/* Called once per complete request; must lead to exactly one
 * http_respond(req, ...). */
typedef void (*sy_http_handler)(void *arg, sy_http_req *req);

/* A new server-side SSL for an accepted connection, or NULL for a plain
 * connection (new_ssl itself NULL: the port is plaintext). */
typedef SSL *(*sy_http_new_ssl)(void *arg);

/*
 * Listens on `bind`; returns the server or NULL with *error_r (static text
 * or a libuv message).
 */
sy_http_server *http_server_start(uv_loop_t *loop, const sy_bind_addr *bind,
                                  sy_http_new_ssl new_ssl, void *ssl_arg, sy_http_handler handler,
                                  void *handler_arg, const char **error_r);

/* Stops listening and closes every connection; requests still waiting for
 * their response stay valid until answered (http_respond then frees them).
 * The memory goes once the loop has run the close callbacks. */
void http_server_stop(sy_http_server *s);

/*
 * Sends the response and ends the connection. `extra_headers` is NULL or
 * complete header lines, each ending in CRLF. `body` may be NULL when len is
 * 0. For HEAD requests the body is omitted (Content-Length stays).
 */
void http_respond(sy_http_req *req, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers);

/* Like http_respond with a NUL-terminated text/plain body. */
void http_respond_text(sy_http_req *req, int status, const char *text);

/*
 * The value of query parameter `name`, percent-decoded ('+' stays a plus: an
 * identifier may contain one, and none may contain a space), as a malloc'd
 * string; NULL when absent or not decodable. *present (optional) tells
 * whether the parameter appears at all, even without a value ("?verbose").
 */
char *http_query_param(const sy_http_req *req, const char *name, bool *present);

const char *http_status_text(int status);

#endif
