/*
 * The Redis mapping store (store.h): GET/SET/DEL <key_prefix><key> over a
 * small pool of connections on the worker's libuv loop, plain (redis://) or
 * TLS (rediss://).
 *
 * I/O is the project's own: each connection is a sy_stream (stream.h), with
 * a client SSL from tls.h for rediss://. hiredis is used for the protocol
 * only: redisFormatCommandArgv builds the commands and a redisReader per
 * connection parses the replies. Debian's hiredis 0.14 has no TLS, and its
 * async context would also resolve host names synchronously and, with the
 * libuv adapter it ships, never notice a refused connect; owning the socket
 * avoids all three. The store has its own block pool for the streams (it
 * runs on worker loops and on the main loop alike), keeping at most two free
 * blocks.
 *
 * TLS follows the backend legs' rules: the server's certificate must chain
 * to the platform trust store (or to [mapping.redis] tls_ca_file) and carry
 * the expected name (tls_server_name, else the URL's host; an IP literal is
 * checked against the certificate's IP addresses), unless
 * tls_allow_invalid_certs; tls_client_cert/tls_client_key add a client
 * certificate. Sessions are resumed across reconnects.
 *
 * Connection life cycle, per pool slot:
 *   DOWN --timer--> RESOLVING (hostnames only, uv_getaddrinfo, so the loop
 *   never blocks on DNS) --> CONNECTING (TCP connect) --> HANDSHAKE
 *   (rediss:// only) --> SETUP (AUTH and SELECT when configured) --> READY
 *   --(error or EOF)--> DOWN.
 * A failed attempt tries the next resolved address at once; when none is
 * left, the slot waits (100 ms, doubling to 5 s) and starts over. The whole
 * attempt (connect, handshake, setup) is bounded by lookup_timeout (5 s when
 * that is 0). Once READY, a connection that waits STORE_ANSWER_FACTOR x
 * that for a reply is broken (store_common.h).
 *
 * Requests go round-robin to READY slots; Redis answers in order, so each
 * connection keeps the requests it sent in a FIFO and matches every reply
 * to the oldest one (pipelining). With no READY slot they fail at once,
 * except while the very first attempt of some slot is still under way: a
 * store is created just before the worker starts accepting, and failing the
 * first logins only because the connection handshake had not finished would
 * turn a normal start into temporary failures.
 *
 * Completions that happen inside our own entry points (a request with no
 * connection or whose write fails, close(), a lost connection's requests)
 * are deferred to an idle callback, because store.h promises the callback
 * never runs re-entrantly from the request function. Replies are delivered
 * straight from the stream's read callback, which runs from the loop; a
 * callback may issue requests or close the store.
 *
 * Subscriber mode (store_redis_subscribe): one connection and no requests.
 * Once READY it asks CONFIG GET notify-keyspace-events when watch_keyspace
 * is set (refusing the keyspace pattern, with an error line, when the
 * server's setting cannot deliver the events), then sends SUBSCRIBE (and
 * PSUBSCRIBE); from then on every reply is a push: confirmations and
 * messages. The state callback reports the confirmed subscription and its
 * loss.
 *
 * Closing: every connection's stream is closed (its requests fail with
 * "redis: store closed"), the timers are closed and lookups cancelled; the
 * store is freed once every handle's close callback has run.
 */
#include "switchyard/store.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <openssl/err.h>

#include "store_common.h"
#include "store_reply.h"
#include "switchyard/log.h"
#include "switchyard/pool.h"
#include "switchyard/redis_url.h"
#include "switchyard/stream.h"
#include "switchyard/tls.h"

#define BACKOFF_FIRST_MS   100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 5000 /* when lookup_timeout is 0 */
#define MAX_ADDRS          8
#define STARTUP_QUEUE_MAX  1024
#define POOL_MAX_FREE      2
/* A reply still incomplete beyond this is a protocol error: mapping values
 * are short, and nothing else we ask for is large. (The reader also refuses
 * a reply whose parsed part grows beyond it: store_redis_reader.) */
#define MAX_PARTIAL_REPLY SY_REDIS_REPLY_MAX_BYTES

typedef enum conn_state {
	CONN_DOWN,      /* waiting for the reconnect timer */
	CONN_RESOLVING, /* uv_getaddrinfo in flight */
	CONN_CONNECTING,
	CONN_HANDSHAKE, /* TLS */
	CONN_SETUP,     /* AUTH/SELECT replies awaited */
	CONN_READY,
} conn_state;

typedef struct redis_store redis_store;
typedef struct conn conn;

/* One TCP connection: heap allocated because the stream's memory may only
 * be released in its close callback, which can run after the slot has moved
 * on to a new connection. The reader lives as long as the link, so a reply
 * loop interrupted by a close never touches freed memory. */
typedef struct rlink {
	sy_stream st; /* st.owner points back at the link */
	uv_connect_t creq;
	conn *c; /* NULL once the slot dropped this link */
	redis_store *s;
	redisReader *reader;
} rlink;

struct conn {
	redis_store *s;
	conn_state state;
	rlink *ln;             /* the current connection, NULL when none */
	uv_timer_t timer;      /* reconnect delay, attempt timeout; when READY the
	                        * reply deadline or the subscriber's ping */
	uv_getaddrinfo_t *gai; /* in flight, or NULL */
	struct sockaddr_storage addrs[MAX_ADDRS]; /* the current attempt's */
	unsigned naddrs, addr_i;
	unsigned setup_pending; /* AUTH/SELECT replies still awaited */
	bool config_pending;    /* subscriber: the CONFIG GET reply is awaited */
	bool subscribing;       /* subscriber: SUBSCRIBE sent, replies are pushes */
	bool ping_pending;      /* subscriber: PING sent, its pong not seen */
	sy_req_list inflight;   /* sent requests, in the order of their replies */
	uint64_t backoff_ms;
	uint64_t refused_backoff_ms; /* subscriber: SUBSCRIBE refused, the next wait */
	bool first_attempt;          /* the slot's first attempt has not ended yet */
	bool logged_down;            /* the current outage has been logged */
};

struct redis_store {
	sy_store base;
	uv_loop_t *loop;
	sy_pool pool; /* read and output blocks of the streams */
	/* From the URL. */
	char *host; /* without brackets */
	bool host_numeric;
	int port;
	char *user; /* NULL: AUTH <password> */
	char *password;
	int db;       /* -1: no SELECT */
	char *server; /* "host:port" for log lines (never the credentials) */
	char *prefix;
	uint64_t connect_timeout_ms;
	uint64_t reply_deadline_ms; /* see STORE_ANSWER_FACTOR */
	uint64_t ping_interval_ms;
	sy_tls_client *tls; /* rediss://; NULL for redis:// */

	conn *conns;
	unsigned nconns;
	unsigned rr;        /* round-robin cursor */
	sy_store_life life; /* startup queue, completions, the close sequence */

	char *channel; /* the fleet events channel (PUBLISH, SUBSCRIBE) */
	/* Subscriber mode (store_redis_subscribe): one connection, no requests. */
	bool sub_mode;
	sy_store_sub sub;
	bool watch_keyspace;
	char *ks_pattern; /* "__keyspace@<db>__:<escaped prefix>*" */
	char *ks_channel; /* "__keyspace@<db>__:<prefix>", cut from the keys */
	bool ks_refused_logged;
	bool subscribed; /* the events channel subscription is confirmed */
};

static void start_attempt(conn *c);
static void connect_addr(conn *c);
static void sub_start(conn *c);
static void sub_lost(redis_store *s);
static void handle_reply(conn *c, redisReply *r);

/* Completes `r` with an error from the idle callback. */
static void fail_later(redis_store *s, sy_store_req *r, const char *error)
{
	completions_fail(&s->life.completions, r, error);
}

/* ---- the reply reader ---- */

/*
 * hiredis 0.14 allocates an array's element table as soon as it has read
 * the count ("*100000000" is 800 MB), and builds the elements as they come
 * while the bytes they were parsed from leave its buffer: the buffer check
 * in on_read alone bounds nothing. So the reader's object functions (its
 * own, wrapped) keep a budget per reply: SY_REDIS_REPLY_MAX_ELEMENTS
 * elements in all its arrays together and SY_REDIS_REPLY_MAX_BYTES of
 * strings. Over it, the object is not created and hiredis fails the reply
 * (as out of memory; store_redis_reader_over tells the two apart).
 */
typedef struct reply_budget {
	redisReplyObjectFunctions *base; /* hiredis's own functions */
	size_t elements, bytes;          /* of the reply being read */
	bool over;
} reply_budget;

static void *budget_string(const redisReadTask *task, char *str, size_t len)
{
	reply_budget *b = task->privdata;
	if (!task->parent)
		b->elements = b->bytes = 0; /* a new reply */
	if (len > SY_REDIS_REPLY_MAX_BYTES - b->bytes) {
		b->over = true;
		return NULL;
	}
	b->bytes += len;
	return b->base->createString(task, str, len);
}

static void *budget_array(const redisReadTask *task, int elements)
{
	reply_budget *b = task->privdata;
	if (!task->parent)
		b->elements = b->bytes = 0;
	if (elements < 0 || (size_t)elements > SY_REDIS_REPLY_MAX_ELEMENTS - b->elements) {
		b->over = true;
		return NULL;
	}
	b->elements += (size_t)elements;
	return b->base->createArray(task, elements);
}

static void *budget_integer(const redisReadTask *task, long long value)
{
	reply_budget *b = task->privdata;
	return b->base->createInteger(task, value);
}

static void *budget_nil(const redisReadTask *task)
{
	reply_budget *b = task->privdata;
	return b->base->createNil(task);
}

static redisReplyObjectFunctions budget_functions = {
    .createString = budget_string,
    .createArray = budget_array,
    .createInteger = budget_integer,
    .createNil = budget_nil,
    .freeObject = freeReplyObject,
};

redisReader *store_redis_reader(void)
{
	redisReader *r = redisReaderCreate();
	reply_budget *b = calloc(1, sizeof(*b));
	if (!r || !b || !r->fn) {
		if (r)
			redisReaderFree(r);
		free(b);
		return NULL;
	}
	b->base = r->fn;
	r->fn = &budget_functions;
	r->privdata = b;
	return r;
}

bool store_redis_reader_over(const redisReader *r)
{
	return ((const reply_budget *)r->privdata)->over;
}

void store_redis_reader_free(redisReader *r)
{
	if (!r)
		return;
	void *b = r->privdata;
	redisReaderFree(r);
	free(b);
}

/* ---- links ---- */

static void link_closed(sy_stream *st)
{
	rlink *ln = st->owner;
	redis_store *s = ln->s;
	store_redis_reader_free(ln->reader);
	free(ln);
	store_life_handle_closed(&s->life);
}

/* Lets go of the slot's connection: its stream closes, the requests it
 * carried fail (later) with `error`. Safe from inside the link's own
 * callbacks. */
static void drop_link(conn *c, const char *error)
{
	rlink *ln = c->ln;
	c->ln = NULL;
	c->setup_pending = 0;
	c->config_pending = false;
	c->subscribing = false;
	c->ping_pending = false;
	sy_store_req *r;
	while ((r = req_list_pop(&c->inflight)) != NULL)
		fail_later(c->s, r, error);
	if (ln) {
		ln->c = NULL;
		sy_stream_close(&ln->st, link_closed);
	}
}

/* Formats and queues one command on the slot's connection. */
static int send_argv(conn *c, int argc, const char **argv, const size_t *lens)
{
	char *cmd = NULL;
	if (!c->ln)
		return -1;
	int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (n < 0)
		return -1;
	int r = sy_stream_write(&c->ln->st, cmd, (size_t)n);
	redisFreeCommand(cmd);
	return r == 0 ? 0 : -1;
}

static int send2(conn *c, const char *a, const char *b)
{
	const char *argv[2] = {a, b};
	size_t lens[2] = {strlen(a), b ? strlen(b) : 0};
	return send_argv(c, b ? 2 : 1, argv, lens);
}

/* ---- connection management ---- */

static void flush_startup(redis_store *s);
static void dispatch(redis_store *s, sy_store_req *r);

static bool any_ready(const redis_store *s)
{
	for (unsigned i = 0; i < s->nconns; i++) {
		if (s->conns[i].state == CONN_READY)
			return true;
	}
	return false;
}

/* The slot's first attempt is over (either way). When every slot's is and
 * none got through, the requests parked for startup fail now. */
static void first_attempt_over(conn *c)
{
	redis_store *s = c->s;
	if (store_life_first_attempt_over(&s->life, &c->first_attempt) && !any_ready(s)) {
		sy_store_req *r;
		while ((r = req_list_pop(&s->life.startup)) != NULL)
			fail_later(s, r, "redis: not connected");
	}
}

static void on_retry_timer(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->s->life.closing)
		return;
	if (c->state == CONN_CONNECTING && !c->ln && c->addr_i < c->naddrs)
		connect_addr(c);
	else
		start_attempt(c);
}

/* The slot is down: wait (backoff), then start over. */
static void went_down(conn *c)
{
	drop_link(c, "redis: connection lost");
	c->state = CONN_DOWN;
	c->naddrs = c->addr_i = 0;
	if (c->s->life.closing)
		return;
	first_attempt_over(c);
	uv_timer_start(&c->timer, on_retry_timer,
	               store_backoff_next(&c->backoff_ms, BACKOFF_MAX_MS), 0);
}

/* A connection attempt failed: the first failure of an outage is logged as
 * a warning and the rest at debug level (a server that stays down would
 * otherwise log every five seconds per connection). */
static void attempt_failed(conn *c, const char *why)
{
	redis_store *s = c->s;
	if (!s->life.closing) {
		sy_log(c->logged_down ? SY_LOG_DEBUG : SY_LOG_WARN, "redis: cannot connect",
		       "server", s->server, "error", why, NULL);
		c->logged_down = true;
	}
	went_down(c);
}

/* This address did not work: try the next one of the same lookup at once
 * (from the timer, so we are out of the failed stream's callbacks), or give
 * up on the attempt. */
static void address_failed(conn *c, const char *why)
{
	drop_link(c, "redis: connection lost");
	if (c->s->life.closing)
		return;
	if (c->addr_i + 1 < c->naddrs) {
		sy_log(SY_LOG_DEBUG, "redis: address failed, trying the next one", "server",
		       c->s->server, "error", why, NULL);
		c->addr_i++;
		c->state = CONN_CONNECTING;
		uv_timer_start(&c->timer, on_retry_timer, 0, 0);
		return;
	}
	attempt_failed(c, why);
}

/* The connection broke: after READY that is an outage of its own (logged,
 * requests in flight fail, the subscription is lost); before, it is this
 * address failing. */
static void conn_broken(conn *c, const char *why)
{
	if (c->state != CONN_READY) {
		address_failed(c, why);
		return;
	}
	sy_log(SY_LOG_WARN, "redis: connection lost", "server", c->s->server, "error", why, NULL);
	c->logged_down = true;
	c->backoff_ms = BACKOFF_FIRST_MS;
	went_down(c);
	sub_lost(c->s);
}

/* READY and waiting for a reply: the server has reply_deadline_ms to send
 * one (each reply restarts the wait for the next). */
static void on_reply_deadline(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->state != CONN_READY || c->s->life.closing)
		return;
	char why[96];
	snprintf(why, sizeof(why), "no reply within %llu ms",
	         (unsigned long long)c->s->reply_deadline_ms);
	conn_broken(c, why);
}

static void await_reply(conn *c)
{
	uv_timer_start(&c->timer, on_reply_deadline, c->s->reply_deadline_ms, 0);
}

/* The subscriber sends nothing of its own once subscribed, so a server
 * gone silent would never be noticed: a PING (answered by a "pong" push in
 * subscribed mode) proves it is there. */
static void on_ping_timer(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->state != CONN_READY || c->s->life.closing || c->ping_pending)
		return;
	c->ping_pending = true;
	if (send2(c, "PING", NULL) != 0) {
		conn_broken(c, "write failed");
		return;
	}
	await_reply(c);
}

/* Nothing is awaited: a request slot just waits for work, the subscriber
 * for its next ping. */
static void await_nothing(conn *c)
{
	if (c->s->sub_mode && c->s->subscribed)
		uv_timer_start(&c->timer, on_ping_timer, c->s->ping_interval_ms, 0);
	else
		uv_timer_stop(&c->timer);
}

static void conn_ready(conn *c)
{
	redis_store *s = c->s;
	uv_timer_stop(&c->timer);
	c->state = CONN_READY;
	c->backoff_ms = BACKOFF_FIRST_MS;
	c->naddrs = c->addr_i = 0;
	sy_log(c->logged_down ? SY_LOG_INFO : SY_LOG_DEBUG, "redis: connected", "server", s->server,
	       "tls", s->tls ? "yes" : "no", NULL);
	c->logged_down = false;
	first_attempt_over(c);
	if (s->sub_mode)
		sub_start(c);
	else
		flush_startup(s);
}

static void on_read(sy_stream *st, const char *data, ssize_t n)
{
	rlink *ln = st->owner;
	conn *c = ln->c;
	if (!c)
		return;
	if (n < 0) {
		char why[160];
		if (n == UV_EOF)
			snprintf(why, sizeof(why), "closed by the server");
		else if (n == SY_ETLS)
			snprintf(why, sizeof(why), "TLS error");
		else
			snprintf(why, sizeof(why), "%s", uv_strerror((int)n));
		ERR_clear_error();
		conn_broken(c, why);
		return;
	}
	if (redisReaderFeed(ln->reader, data, (size_t)n) != REDIS_OK) {
		conn_broken(c, "out of memory");
		return;
	}
	/* Every reply may end with the link dropped (a refusal, a callback
	 * closing the store): stop as soon as it is no longer ours. */
	while (ln->c == c) {
		void *reply = NULL;
		if (redisReaderGetReply(ln->reader, &reply) != REDIS_OK) {
			char why[160];
			snprintf(why, sizeof(why), "protocol error: %s",
			         store_redis_reader_over(ln->reader)
			             ? "a reply larger than 1 MiB or 1024 elements"
			             : ln->reader->errstr);
			conn_broken(c, why);
			return;
		}
		if (!reply)
			break;
		handle_reply(c, reply);
		freeReplyObject(reply);
	}
	if (ln->c == c && ln->reader->len - ln->reader->pos > MAX_PARTIAL_REPLY)
		conn_broken(c, "protocol error: a reply larger than 1 MiB");
}

/* TCP (and TLS) is up: read, then AUTH and SELECT when configured. Redis
 * answers in order, so the slot becomes READY when the last one succeeds. */
static void link_up(conn *c)
{
	redis_store *s = c->s;
	if (sy_stream_read_start(&c->ln->st, on_read) != 0) {
		address_failed(c, "cannot read from the socket");
		return;
	}
	c->setup_pending = 0;
	c->state = CONN_SETUP;
	int rc = 0;
	if (s->password) {
		const char *argv[3] = {"AUTH", s->user ? s->user : s->password, s->password};
		size_t lens[3] = {4, strlen(argv[1]), strlen(s->password)};
		rc = send_argv(c, s->user ? 3 : 2, argv, lens);
		c->setup_pending++;
	}
	if (rc == 0 && s->db >= 0) {
		char db[16];
		snprintf(db, sizeof(db), "%d", s->db);
		rc = send2(c, "SELECT", db);
		c->setup_pending++;
	}
	if (rc != 0) {
		address_failed(c, "write failed");
		return;
	}
	if (c->setup_pending == 0)
		conn_ready(c);
}

static void on_handshake(sy_stream *st, int status)
{
	rlink *ln = st->owner;
	conn *c = ln->c;
	if (!c)
		return;
	if (status != 0) {
		char why[300];
		const char *verify = st->ssl ? tls_client_verify_error(st->ssl) : NULL;
		unsigned long e = ERR_peek_last_error();
		const char *reason = e ? ERR_reason_error_string(e) : NULL;
		if (verify)
			snprintf(why, sizeof(why),
			         "TLS handshake failed: certificate verification failed: %s",
			         verify);
		else
			snprintf(why, sizeof(why), "TLS handshake failed: %s",
			         reason ? reason : "handshake error or connection closed");
		ERR_clear_error();
		address_failed(c, why);
		return;
	}
	tls_client_handshake_done(c->s->tls, st->ssl);
	link_up(c);
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
	rlink *ln = req->data;
	conn *c = ln->c;
	if (!c || status == UV_ECANCELED)
		return;
	if (status < 0) {
		address_failed(c, uv_strerror(status));
		return;
	}
	redis_store *s = c->s;
	if (!s->tls) {
		link_up(c);
		return;
	}
	SSL *ssl = tls_client_new_ssl(s->tls);
	if (!ssl) {
		ERR_clear_error();
		address_failed(c, "cannot create a TLS session");
		return;
	}
	c->state = CONN_HANDSHAKE;
	/* The handshake callback may run before this returns (and drop the
	 * link); the stream stays valid until its close callback. */
	if (sy_stream_start_tls(&ln->st, ssl, false, on_handshake) != 0 && ln->c == c)
		address_failed(c, "cannot start TLS");
}

static void on_attempt_timeout(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->s->life.closing || !c->ln)
		return;
	address_failed(c, c->state == CONN_HANDSHAKE ? "TLS handshake timed out"
	                  : c->state == CONN_SETUP   ? "AUTH/SELECT timed out"
	                                             : "connect timed out");
}

static void connect_addr(conn *c)
{
	redis_store *s = c->s;
	c->state = CONN_CONNECTING;
	rlink *ln = calloc(1, sizeof(*ln));
	if (ln)
		ln->reader = store_redis_reader();
	if (!ln || !ln->reader || sy_stream_init(&ln->st, s->loop, &s->pool, ln) != 0) {
		if (ln)
			store_redis_reader_free(ln->reader);
		free(ln);
		attempt_failed(c, "out of memory");
		return;
	}
	ln->c = c;
	ln->s = s;
	ln->creq.data = ln;
	s->life.open++;
	c->ln = ln;
	uv_tcp_nodelay(&ln->st.tcp, 1);
	int r = uv_tcp_connect(&ln->creq, &ln->st.tcp,
	                       (const struct sockaddr *)&c->addrs[c->addr_i], on_tcp_connect);
	if (r != 0) {
		address_failed(c, uv_strerror(r));
		return;
	}
	uv_timer_start(&c->timer, on_attempt_timeout, s->connect_timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	conn *c = req->data;
	redis_store *s = c->s;

	free(req);
	c->gai = NULL;
	s->life.open--;
	if (s->life.closing) {
		uv_freeaddrinfo(res);
		store_life_maybe_finish(&s->life);
		return;
	}
	if (status != 0) {
		char why[160];
		snprintf(why, sizeof(why), "cannot resolve %s: %s", s->host, uv_strerror(status));
		uv_freeaddrinfo(res);
		attempt_failed(c, why);
		return;
	}
	c->naddrs = c->addr_i = 0;
	for (struct addrinfo *ai = res; ai && c->naddrs < MAX_ADDRS; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(c->addrs[0]))
			continue;
		struct sockaddr_storage *ss = &c->addrs[c->naddrs++];
		memset(ss, 0, sizeof(*ss));
		memcpy(ss, ai->ai_addr, ai->ai_addrlen);
		if (ai->ai_family == AF_INET)
			((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)s->port);
		else
			((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)s->port);
	}
	uv_freeaddrinfo(res);
	if (c->naddrs == 0) {
		attempt_failed(c, "the host name has no usable address");
		return;
	}
	connect_addr(c);
}

static void start_attempt(conn *c)
{
	redis_store *s = c->s;

	c->naddrs = c->addr_i = 0;
	if (s->host_numeric) {
		struct sockaddr_storage *ss = &c->addrs[0];
		memset(ss, 0, sizeof(*ss));
		if (uv_ip4_addr(s->host, s->port, (struct sockaddr_in *)ss) != 0 &&
		    uv_ip6_addr(s->host, s->port, (struct sockaddr_in6 *)ss) != 0) {
			attempt_failed(c, "unusable address");
			return;
		}
		c->naddrs = 1;
		connect_addr(c);
		return;
	}
	uv_getaddrinfo_t *req = calloc(1, sizeof(*req));
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	if (!req) {
		attempt_failed(c, "out of memory");
		return;
	}
	req->data = c;
	c->state = CONN_RESOLVING;
	if (uv_getaddrinfo(s->loop, req, on_resolved, s->host, NULL, &hints) != 0) {
		free(req);
		attempt_failed(c, "cannot start the host name lookup");
		return;
	}
	c->gai = req;
	s->life.open++;
}

/* Every reply, in order: the setup commands' first, then (subscriber) the
 * CONFIG GET's, then the requests', and in subscriber mode the
 * subscriptions' pushes. */
static void on_setup_reply(conn *c, redisReply *r);
static void on_config_reply(conn *c, redisReply *r);
static void on_sub_reply(conn *c, redisReply *r);
static void complete_req(redis_store *s, sy_store_req *rq, redisReply *r);

static void handle_reply(conn *c, redisReply *r)
{
	if (c->setup_pending > 0) {
		on_setup_reply(c, r);
		return;
	}
	if (c->config_pending) {
		c->config_pending = false;
		on_config_reply(c, r);
		return;
	}
	sy_store_req *rq = req_list_pop(&c->inflight);
	if (rq) {
		/* Before the callback, which may send more (or close). */
		if (c->inflight.head)
			await_reply(c);
		else
			await_nothing(c);
		complete_req(c->s, rq, r);
		return;
	}
	if (c->s->sub_mode && c->subscribing) {
		/* Any push shows the server is there, the pong included. */
		if (c->ping_pending) {
			c->ping_pending = false;
			await_nothing(c);
		}
		on_sub_reply(c, r);
		return;
	}
	conn_broken(c, "protocol error: a reply nobody asked for");
}

static void on_setup_reply(conn *c, redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR) {
		/* The server's text ("WRONGPASS ...", "invalid DB index") names
		 * the problem without echoing the password. */
		sy_log(c->logged_down ? SY_LOG_DEBUG : SY_LOG_WARN,
		       "redis: connection setup refused", "server", c->s->server, "error", r->str,
		       NULL);
		c->logged_down = true;
		address_failed(c, "connection setup refused");
		return;
	}
	if (--c->setup_pending == 0)
		conn_ready(c);
}

/* ---- requests ---- */

sy_store_status store_redis_answer(sy_store_op op, const redisReply *r, const char **value,
                                   const char **error, char *ebuf, size_t ebuf_size)
{
	sy_store_status st = SY_STORE_ERROR;
	*value = NULL;
	*error = NULL;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(ebuf, ebuf_size, "redis: %s", r->str);
		*error = ebuf;
	} else if (op == SY_STORE_OP_GET) {
		if (r->type == REDIS_REPLY_NIL) {
			st = SY_STORE_NOT_FOUND;
		} else if (r->type == REDIS_REPLY_STRING) {
			/* A destination id is text; one with a NUL in it could only
			 * be matched wrongly, so it is refused. */
			if (strlen(r->str) != r->len) {
				*error = "redis: the value contains a NUL byte";
			} else {
				st = SY_STORE_FOUND;
				*value = r->str;
			}
		} else {
			*error = "redis: unexpected reply type to GET (is the key a string?)";
		}
	} else if (op == SY_STORE_OP_PUBLISH) {
		if (r->type == REDIS_REPLY_INTEGER)
			st = SY_STORE_DONE;
		else
			*error = "redis: unexpected reply to PUBLISH";
	} else if (op == SY_STORE_OP_PUT) {
		if (r->type == REDIS_REPLY_STATUS)
			st = SY_STORE_DONE;
		else
			*error = "redis: unexpected reply to SET";
	} else {
		if (r->type == REDIS_REPLY_INTEGER)
			st = r->integer > 0 ? SY_STORE_DONE : SY_STORE_NOT_FOUND;
		else
			*error = "redis: unexpected reply to DEL";
	}
	return st;
}

static void complete_req(redis_store *s, sy_store_req *rq, redisReply *r)
{
	(void)s;
	const char *value, *error;
	char ebuf[256];
	sy_store_status st = store_redis_answer(rq->op, r, &value, &error, ebuf, sizeof(ebuf));
	rq->cb(rq->arg, st, value, error);
	free(rq);
}

/* Sends `r` on a READY slot (round-robin), parks it while the first
 * connections are still being made, or fails it. Never calls the request's
 * callback directly. */
static void dispatch(redis_store *s, sy_store_req *r)
{
	for (unsigned n = 0; n < s->nconns; n++) {
		conn *c = &s->conns[(s->rr + n) % s->nconns];
		if (c->state != CONN_READY)
			continue;
		s->rr = (s->rr + n + 1) % s->nconns;
		const char *argv[3];
		size_t lens[3];
		int argc = 0;
		switch (r->op) {
		case SY_STORE_OP_GET:
			argv[argc] = "GET";
			lens[argc++] = 3;
			break;
		case SY_STORE_OP_PUT:
			argv[argc] = "SET";
			lens[argc++] = 3;
			break;
		case SY_STORE_OP_DEL:
			argv[argc] = "DEL";
			lens[argc++] = 3;
			break;
		case SY_STORE_OP_PUBLISH:
			argv[argc] = "PUBLISH";
			lens[argc++] = 7;
			break;
		}
		argv[argc] = r->key;
		lens[argc++] = r->keylen;
		if (r->op == SY_STORE_OP_PUT || r->op == SY_STORE_OP_PUBLISH) {
			argv[argc] = r->value;
			lens[argc++] = r->valuelen;
		}
		/* Queued first: a failed write fails it with the rest of the
		 * connection's requests (deferred). */
		if (!c->inflight.head)
			await_reply(c);
		req_list_push(&c->inflight, r);
		if (send_argv(c, argc, argv, lens) != 0)
			conn_broken(c, "write failed");
		return;
	}
	if (s->life.starting > 0 && s->life.startup.len < STARTUP_QUEUE_MAX) {
		req_list_push(&s->life.startup, r);
		return;
	}
	fail_later(s, r, "redis: not connected");
}

static void flush_startup(redis_store *s)
{
	sy_req_list l = s->life.startup;
	s->life.startup = (sy_req_list){0};
	sy_store_req *r;
	while ((r = req_list_pop(&l)) != NULL)
		dispatch(s, r);
}

static int submit(sy_store *base, sy_store_op o, const char *key, const char *value, sy_store_cb cb,
                  void *arg)
{
	redis_store *s = (redis_store *)base;
	if (s->life.closing || s->sub_mode || !key || !cb ||
	    ((o == SY_STORE_OP_PUT || o == SY_STORE_OP_PUBLISH) && !value))
		return -1;
	sy_store_req *r =
	    store_req_new(o, o == SY_STORE_OP_PUBLISH ? NULL : s->prefix, key, value, cb, arg, s);
	if (!r)
		return -1;
	dispatch(s, r);
	return 0;
}

static int redis_get(sy_store *s, const char *key, sy_store_cb cb, void *arg)
{
	return submit(s, SY_STORE_OP_GET, key, NULL, cb, arg);
}

static int redis_put(sy_store *s, const char *key, const char *value, sy_store_cb cb, void *arg)
{
	return submit(s, SY_STORE_OP_PUT, key, value, cb, arg);
}

static int redis_del(sy_store *s, const char *key, sy_store_cb cb, void *arg)
{
	return submit(s, SY_STORE_OP_DEL, key, NULL, cb, arg);
}

static bool redis_writable(sy_store *s)
{
	return !((redis_store *)s)->sub_mode;
}

static int redis_publish(sy_store *base, const char *payload, sy_store_cb cb, void *arg)
{
	redis_store *s = (redis_store *)base;
	return submit(base, SY_STORE_OP_PUBLISH, s->channel, payload, cb, arg);
}

/* ---- subscriber mode ---- */

static void sub_lost(redis_store *s)
{
	if (!s->sub_mode || !s->subscribed)
		return;
	s->subscribed = false;
	if (!s->life.closing && s->sub.state)
		s->sub.state(s->sub.arg, false);
}

static bool reply_str(const redisReply *r, size_t i)
{
	return r->type == REDIS_REPLY_ARRAY && r->elements > i &&
	       (r->element[i]->type == REDIS_REPLY_STRING ||
	        r->element[i]->type == REDIS_REPLY_STATUS);
}

sy_redis_push_kind store_redis_push(const redisReply *r, const char *ks_channel, sy_redis_push *out)
{
	*out = (sy_redis_push){.kind = SY_REDIS_PUSH_OTHER};
	if (r->type == REDIS_REPLY_ERROR) {
		out->text = r->str ? r->str : "error";
		out->len = strlen(out->text);
		return out->kind = SY_REDIS_PUSH_REFUSED;
	}
	if (!reply_str(r, 0))
		return out->kind;
	const char *kind = r->element[0]->str;
	if (strcasecmp(kind, "subscribe") == 0) {
		out->kind = SY_REDIS_PUSH_SUBSCRIBED;
	} else if (strcasecmp(kind, "psubscribe") == 0) {
		out->kind = SY_REDIS_PUSH_PSUBSCRIBED;
	} else if (strcasecmp(kind, "message") == 0 && reply_str(r, 2)) {
		out->kind = SY_REDIS_PUSH_EVENT;
		out->text = r->element[2]->str;
		out->len = r->element[2]->len;
	} else if (strcasecmp(kind, "pmessage") == 0 && reply_str(r, 3)) {
		/* Only a channel under the keyspace prefix names one of our keys:
		 * anything else would have some other key's first bytes cut and
		 * invalidate an identifier nobody changed. */
		const redisReply *ch = r->element[2];
		size_t cut = ks_channel ? strlen(ks_channel) : 0;
		if (ks_channel && ch->len > cut && memcmp(ch->str, ks_channel, cut) == 0 &&
		    strlen(ch->str) == ch->len) {
			out->kind = SY_REDIS_PUSH_KEYSPACE;
			out->text = ch->str + cut;
			out->len = ch->len - cut;
			out->what = r->element[3]->str;
		}
	}
	return out->kind;
}

/* Every reply of the subscriptions: confirmations and messages. */
static void on_sub_reply(conn *c, redisReply *r)
{
	redis_store *s = c->s;
	if (s->life.closing)
		return;
	sy_redis_push p;
	switch (store_redis_push(r, s->ks_channel, &p)) {
	case SY_REDIS_PUSH_REFUSED: {
		/* e.g. NOPERM from an ACL: the subscription cannot come up, so
		 * the cache stays capped (events.c); retry with a growing wait
		 * (conn_ready resets the connection's own backoff). */
		char why[320];
		snprintf(why, sizeof(why), "SUBSCRIBE refused: %s", p.text);
		c->refused_backoff_ms = !c->refused_backoff_ms ? BACKOFF_FIRST_MS
		                        : c->refused_backoff_ms * 2 > BACKOFF_MAX_MS
		                            ? BACKOFF_MAX_MS
		                            : c->refused_backoff_ms * 2;
		c->backoff_ms = c->refused_backoff_ms;
		attempt_failed(c, why);
		return;
	}
	case SY_REDIS_PUSH_SUBSCRIBED:
		if (!s->subscribed) {
			s->subscribed = true;
			c->refused_backoff_ms = 0;
			await_nothing(c);
			sy_log(SY_LOG_INFO, "redis: subscribed to the fleet events channel",
			       "server", s->server, "channel", s->channel, NULL);
			if (s->sub.state)
				s->sub.state(s->sub.arg, true);
		}
		break;
	case SY_REDIS_PUSH_PSUBSCRIBED:
		sy_log(SY_LOG_INFO, "redis: following keyspace notifications", "server", s->server,
		       "pattern", s->ks_pattern, NULL);
		break;
	case SY_REDIS_PUSH_EVENT:
		s->sub.message(s->sub.arg, SY_SUB_EVENT, p.text, p.len, NULL);
		break;
	case SY_REDIS_PUSH_KEYSPACE:
		s->sub.message(s->sub.arg, SY_SUB_KEYSPACE, p.text, p.len, p.what);
		break;
	case SY_REDIS_PUSH_OTHER:
		break;
	}
}

static void sub_send(conn *c, bool keyspace)
{
	redis_store *s = c->s;
	c->subscribing = true;
	await_reply(c);
	if (send2(c, "SUBSCRIBE", s->channel) != 0 ||
	    (keyspace && send2(c, "PSUBSCRIBE", s->ks_pattern) != 0))
		conn_broken(c, "write failed");
}

/* Keyspace notifications for SET, DEL and expiry need K (keyspace
 * channels) and the classes $ (string commands), g (generic: DEL) and x
 * (expired), or A (every class). */
static bool keyspace_flags_ok(const char *f)
{
	if (!strchr(f, 'K'))
		return false;
	return strchr(f, 'A') || (strchr(f, '$') && strchr(f, 'g') && strchr(f, 'x'));
}

sy_redis_ks_config store_redis_keyspace_config(const redisReply *r, const char **detail)
{
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && reply_str(r, 1)) {
		*detail = r->element[1]->str;
		return keyspace_flags_ok(r->element[1]->str) ? SY_REDIS_KS_OK
		                                             : SY_REDIS_KS_INSUFFICIENT;
	}
	*detail = r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply";
	return SY_REDIS_KS_UNREADABLE;
}

static void on_config_reply(conn *c, redisReply *r)
{
	redis_store *s = c->s;
	if (s->life.closing)
		return;
	bool keyspace = true;
	const char *detail;
	switch (store_redis_keyspace_config(r, &detail)) {
	case SY_REDIS_KS_OK:
		break;
	case SY_REDIS_KS_INSUFFICIENT:
		keyspace = false;
		if (!s->ks_refused_logged)
			sy_log(SY_LOG_ERROR,
			       "redis: mapping.redis.watch_keyspace is refused: the server's "
			       "notify-keyspace-events setting does not include K with $, g "
			       "and x (or A); set it to \"K$gx\" (or \"KA\") and restart, "
			       "changes made outside the proxy are not followed meanwhile",
			       "server", s->server, "notify-keyspace-events", detail, NULL);
		s->ks_refused_logged = true;
		break;
	case SY_REDIS_KS_UNREADABLE:
		/* Managed services often disable CONFIG: subscribe anyway. */
		sy_log(SY_LOG_WARN,
		       "redis: cannot read notify-keyspace-events (CONFIG GET refused); "
		       "following keyspace notifications without checking",
		       "server", s->server, "error", detail, NULL);
		break;
	}
	sub_send(c, keyspace);
}

/* The subscriber's connection is READY: check the keyspace setting when
 * asked to follow it, then subscribe. */
static void sub_start(conn *c)
{
	redis_store *s = c->s;
	if (!s->watch_keyspace) {
		sub_send(c, false);
		return;
	}
	const char *argv[3] = {"CONFIG", "GET", "notify-keyspace-events"};
	size_t lens[3] = {6, 3, 22};
	c->config_pending = true;
	await_reply(c);
	if (send_argv(c, 3, argv, lens) != 0)
		conn_broken(c, "write failed");
}

/* ---- teardown ---- */

static void free_store(redis_store *s);

static void free_store_cb(void *s)
{
	free_store(s);
}

static void free_store(redis_store *s)
{
	free(s->conns);
	free(s->host);
	free(s->user);
	if (s->password) {
		/* Not a secret worth OPENSSL_cleanse here, but no reason to leave
		 * it in freed memory either. */
		volatile char *p = s->password;
		while (*p)
			*p++ = '\0';
	}
	free(s->password);
	free(s->server);
	free(s->prefix);
	free(s->channel);
	free(s->ks_pattern);
	free(s->ks_channel);
	/* Every stream (and so every SSL made from the context) is closed. */
	tls_client_free(s->tls);
	pool_destroy(&s->pool);
	free(s);
}

static void timer_closed(uv_handle_t *h)
{
	conn *c = h->data;
	store_life_handle_closed(&c->s->life);
}

static void redis_close(sy_store *base, void (*done)(void *arg), void *arg)
{
	redis_store *s = (redis_store *)base;
	if (!store_life_begin_close(&s->life, done, arg))
		return;
	sy_store_req *r;
	while ((r = req_list_pop(&s->life.startup)) != NULL)
		fail_later(s, r, "redis: store closed");
	for (unsigned i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		uv_close((uv_handle_t *)&c->timer, timer_closed);
		if (c->gai)
			uv_cancel((uv_req_t *)c->gai); /* on_resolved still runs */
		/* Safe from inside this connection's own read callback: the
		 * stream and its reader go away in the close callback. */
		drop_link(c, "redis: store closed");
		c->state = CONN_DOWN;
	}
	store_life_maybe_finish(&s->life);
}

static const sy_store_ops redis_ops = {
    .name = "redis",
    .get = redis_get,
    .put = redis_put,
    .del = redis_del,
    .close = redis_close,
    .writable = redis_writable,
    .publish = redis_publish,
};

/* ---- URL and TLS ---- */

/* Messages name the problem, never the URL itself: it may hold a password. */
static int parse_url(redis_store *s, const sy_mapping_config *cfg, const char **error_r)
{
	sy_redis_url u;
	if (redis_url_parse(cfg->redis.url, &u, error_r) != 0) {
		redis_url_free(&u);
		return -1;
	}
	/* The store takes the strings over. */
	s->host = u.host;
	s->user = u.user;
	s->password = u.password;
	s->port = u.port;
	s->db = u.db;
	unsigned char tmp[sizeof(struct in6_addr)];
	s->host_numeric =
	    inet_pton(AF_INET, s->host, tmp) == 1 || inet_pton(AF_INET6, s->host, tmp) == 1;
	size_t n = strlen(s->host) + 16;
	s->server = malloc(n);
	if (!s->server) {
		*error_r = "mapping.redis.url: out of memory";
		return -1;
	}
	snprintf(s->server, n, strchr(s->host, ':') ? "[%s]:%d" : "%s:%d", s->host, s->port);
	if (u.tls) {
		const sy_tls_client_opts o = {
		    .key = "mapping.redis",
		    .name = cfg->redis.tls_server_name ? cfg->redis.tls_server_name : s->host,
		    .allow_invalid_certs = cfg->redis.tls_allow_invalid_certs,
		    .ca_file = cfg->redis.tls_ca_file,
		    .client_cert = cfg->redis.tls_client_cert,
		    .client_key = cfg->redis.tls_client_key,
		};
		if (tls_client_create_opts(&o, &s->tls, error_r) != 0)
			return -1;
	}
	return 0;
}

static sy_store *create(uv_loop_t *loop, const sy_mapping_config *cfg, unsigned conns,
                        const sy_store_sub *sub, const char **error_r)
{
	redis_store *s = calloc(1, sizeof(*s));
	if (!s) {
		*error_r = "mapping.redis: out of memory";
		return NULL;
	}
	s->base.ops = &redis_ops;
	s->loop = loop;
	pool_init(&s->pool, POOL_MAX_FREE);
	if (parse_url(s, cfg, error_r) != 0) {
		free_store(s);
		return NULL;
	}
	s->prefix = strdup(cfg->redis.key_prefix ? cfg->redis.key_prefix : "");
	char chbuf[512];
	s->channel = strdup(store_events_channel(cfg, chbuf, sizeof(chbuf)));
	if (sub) {
		s->sub_mode = true;
		s->sub = *sub;
		conns = 1;
		s->watch_keyspace = cfg->redis.watch_keyspace;
		if (s->watch_keyspace && s->prefix) {
			/* Glob characters of the prefix match themselves only. */
			size_t plen = strlen(s->prefix);
			s->ks_pattern = malloc(48 + 2 * plen);
			s->ks_channel = malloc(48 + plen);
			if (s->ks_pattern && s->ks_channel) {
				int n = snprintf(s->ks_pattern, 48,
				                 "__keyspace@%d__:", s->db < 0 ? 0 : s->db);
				memcpy(s->ks_channel, s->ks_pattern, (size_t)n);
				memcpy(s->ks_channel + n, s->prefix, plen + 1);
				char *o = s->ks_pattern + n;
				for (const char *p = s->prefix; *p; p++) {
					if (strchr("*?[]\\", *p))
						*o++ = '\\';
					*o++ = *p;
				}
				*o++ = '*';
				*o = '\0';
			}
		}
	}
	s->nconns = conns ? conns : 1;
	s->conns = calloc(s->nconns, sizeof(*s->conns));
	if (!s->prefix || !s->conns || !s->channel ||
	    (s->watch_keyspace && (!s->ks_pattern || !s->ks_channel)) ||
	    store_life_init(&s->life, loop, s, free_store_cb, s->nconns) != 0) {
		*error_r = "mapping.redis: out of memory";
		free_store(s);
		return NULL;
	}
	s->connect_timeout_ms =
	    cfg->lookup_timeout_ms ? cfg->lookup_timeout_ms : CONNECT_TIMEOUT_MS;
	s->reply_deadline_ms = STORE_ANSWER_FACTOR * s->connect_timeout_ms;
	s->ping_interval_ms = STORE_PING_FACTOR * s->connect_timeout_ms;
	/* From here on the idle handle exists, so teardown goes through
	 * close(); nothing below fails. */
	for (unsigned i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		c->s = s;
		c->first_attempt = true;
		c->backoff_ms = BACKOFF_FIRST_MS;
		uv_timer_init(loop, &c->timer);
		c->timer.data = c;
		s->life.open++;
	}
	for (unsigned i = 0; i < s->nconns; i++)
		start_attempt(&s->conns[i]);
	return &s->base;
}

sy_store *store_redis_create(uv_loop_t *loop, const sy_mapping_config *cfg, unsigned conns,
                             const char **error_r)
{
	return create(loop, cfg, conns, NULL, error_r);
}

sy_store *store_redis_subscribe(uv_loop_t *loop, const sy_mapping_config *cfg,
                                const sy_store_sub *sub, const char **error_r)
{
	return create(loop, cfg, 1, sub, error_r);
}
