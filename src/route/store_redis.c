/*
 * The Redis mapping store (store.h): GET/SET/DEL <key_prefix><key> over a
 * small pool of hiredis async connections driven by the worker's libuv loop.
 *
 * Why our own event adapter rather than <hiredis/adapters/libuv.h>: the one
 * shipped with hiredis 0.14 ignores a poll callback with a non-zero status,
 * and libuv reports POLLERR (which is what a refused non-blocking connect
 * produces) as exactly that, after stopping the handle. With the stock
 * adapter a connection attempt to a server that is down never completes and
 * is never retried. Ours hands such an event to hiredis as "readable and
 * writable", so hiredis reads the socket error and fails the attempt. Owning
 * the poll handle also lets close() wait for every handle's close callback
 * before reporting completion.
 *
 * Connection life cycle, per pool slot:
 *   DOWN --timer--> RESOLVING (hostnames only, uv_getaddrinfo: hiredis would
 *   resolve synchronously and block the loop) --> CONNECTING (TCP connect,
 *   then AUTH and SELECT when configured) --> READY --(error or EOF)--> DOWN.
 * A failed attempt tries the next resolved address at once; when none is
 * left, the slot waits (100 ms, doubling to 5 s) and starts over.
 *
 * Requests go round-robin to READY slots (Redis pipelines, so there is no
 * per-connection queue). With no READY slot they fail at once, except while
 * the very first attempt of some slot is still under way: a store is
 * created just before the worker starts accepting, and failing the first
 * logins only because the connection handshake had not finished would turn
 * a normal start into temporary failures.
 *
 * Completions that happen inside our own entry points (a request with no
 * connection, close()) are deferred to an idle callback, because store.h
 * promises the callback never runs re-entrantly from the request function.
 * Replies are delivered straight from hiredis's reply callback, which runs
 * from the loop.
 */
#include "switchyard/store.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "store_common.h"
#include "switchyard/log.h"
#include "switchyard/redis_url.h"

#define BACKOFF_FIRST_MS   100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 5000 /* when lookup_timeout is 0 */
#define MAX_ADDRS          8
#define STARTUP_QUEUE_MAX  1024

typedef enum conn_state {
	CONN_DOWN,      /* waiting for the reconnect timer */
	CONN_RESOLVING, /* uv_getaddrinfo in flight */
	CONN_CONNECTING,
	CONN_READY,
} conn_state;

typedef struct redis_store redis_store;
typedef struct conn conn;

/* Our hiredis event adapter: one poll handle per hiredis context, heap
 * allocated because the handle's memory may only be released in its close
 * callback, which runs after hiredis has freed the context. */
typedef struct redis_ev {
	uv_poll_t poll;
	redisAsyncContext *ac; /* NULL once hiredis has called cleanup */
	redis_store *s;
	int events;
} redis_ev;

struct conn {
	redis_store *s;
	conn_state state;
	redisAsyncContext *ac;  /* the current context, NULL when none */
	uv_timer_t timer;       /* reconnect delay, or connect timeout */
	uv_getaddrinfo_t *gai;  /* in flight, or NULL */
	char *addrs[MAX_ADDRS]; /* numeric addresses of the current attempt */
	unsigned naddrs, addr_i;
	unsigned setup_pending; /* AUTH/SELECT replies still awaited */
	bool setup_failed;      /* AUTH or SELECT was refused on this context */
	uint64_t backoff_ms;
	bool first_attempt; /* the slot's first attempt has not ended yet */
	bool logged_down;   /* the current outage has been logged */
};

struct redis_store {
	sy_store base;
	uv_loop_t *loop;
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

	conn *conns;
	unsigned nconns;
	unsigned rr;        /* round-robin cursor */
	sy_store_life life; /* startup queue, completions, the close sequence */

	char *channel; /* the fleet events channel (PUBLISH, SUBSCRIBE) */
	/* Subscriber mode (store_redis_subscribe): one connection, no requests. */
	bool sub_mode;
	sy_store_sub sub;
	bool watch_keyspace;
	char *ks_pattern;      /* "__keyspace@<db>__:<escaped prefix>*" */
	size_t ks_channel_cut; /* strlen("__keyspace@<db>__:") + strlen(prefix) */
	bool ks_refused_logged;
	bool subscribed; /* the events channel subscription is confirmed */
};

static void start_attempt(conn *c);
static void connect_addr(conn *c);
static void sub_start(conn *c);
static void sub_lost(redis_store *s);

/* Completes `r` with an error from the idle callback. */
static void fail_later(redis_store *s, sy_store_req *r, const char *error)
{
	completions_fail(&s->life.completions, r, error);
}

/* ---- the event adapter ---- */

static void ev_poll_cb(uv_poll_t *h, int status, int events)
{
	redis_ev *ev = h->data;
	/* On an error libuv has already stopped the handle and reports no
	 * events: let hiredis look at the socket for whatever it was waiting
	 * for, so it sees the error and tears the context down. */
	if (status < 0)
		events = ev->events ? ev->events : UV_READABLE;
	if (ev->ac && (events & UV_READABLE))
		redisAsyncHandleRead(ev->ac);
	/* The read may have freed the context (cleanup clears ev->ac). */
	if (ev->ac && (events & UV_WRITABLE))
		redisAsyncHandleWrite(ev->ac);
}

static void ev_update(redis_ev *ev, int add, int del)
{
	int events = (ev->events | add) & ~del;
	if (events == ev->events)
		return;
	ev->events = events;
	if (events)
		uv_poll_start(&ev->poll, events, ev_poll_cb);
	else
		uv_poll_stop(&ev->poll);
}

static void ev_add_read(void *p)
{
	ev_update(p, UV_READABLE, 0);
}

static void ev_del_read(void *p)
{
	ev_update(p, 0, UV_READABLE);
}

static void ev_add_write(void *p)
{
	ev_update(p, UV_WRITABLE, 0);
}

static void ev_del_write(void *p)
{
	ev_update(p, 0, UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
	redis_ev *ev = h->data;
	redis_store *s = ev->s;
	free(ev);
	store_life_handle_closed(&s->life);
}

/* hiredis calls this while freeing the context, before it closes the
 * socket: uv_close stops polling the descriptor first, as libuv requires. */
static void ev_cleanup(void *p)
{
	redis_ev *ev = p;
	ev->ac = NULL;
	uv_close((uv_handle_t *)&ev->poll, ev_closed);
}

static int ev_attach(redis_store *s, redisAsyncContext *ac)
{
	redis_ev *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return -1;
	if (uv_poll_init(s->loop, &ev->poll, ac->c.fd) != 0) {
		free(ev);
		return -1;
	}
	ev->poll.data = ev;
	ev->ac = ac;
	ev->s = s;
	s->life.open++;
	ac->ev.data = ev;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	return 0;
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

static void free_addrs(conn *c)
{
	for (unsigned i = 0; i < c->naddrs; i++) {
		free(c->addrs[i]);
		c->addrs[i] = NULL;
	}
	c->naddrs = 0;
	c->addr_i = 0;
}

static void on_retry_timer(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->s->life.closing)
		return;
	if (c->state == CONN_CONNECTING && c->addr_i < c->naddrs)
		connect_addr(c);
	else
		start_attempt(c);
}

/* The slot is down: wait (backoff), then start over. */
static void went_down(conn *c)
{
	c->state = CONN_DOWN;
	c->ac = NULL;
	free_addrs(c);
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
 * (from the timer, so hiredis has finished freeing the old context), or
 * give up on the attempt. */
static void address_failed(conn *c, const char *why)
{
	c->ac = NULL;
	if (c->s->life.closing)
		return;
	if (c->addr_i + 1 < c->naddrs) {
		c->addr_i++;
		c->state = CONN_CONNECTING;
		uv_timer_start(&c->timer, on_retry_timer, 0, 0);
		return;
	}
	attempt_failed(c, why);
}

static void conn_ready(conn *c)
{
	redis_store *s = c->s;
	uv_timer_stop(&c->timer);
	c->state = CONN_READY;
	c->backoff_ms = BACKOFF_FIRST_MS;
	free_addrs(c);
	sy_log(c->logged_down ? SY_LOG_INFO : SY_LOG_DEBUG, "redis: connected", "server", s->server,
	       NULL);
	c->logged_down = false;
	first_attempt_over(c);
	if (s->sub_mode)
		sub_start(c);
	else
		flush_startup(s);
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	conn *c = privdata;
	redisReply *r = reply;
	if (c->ac != ac || r == NULL)
		return; /* a context we dropped, or this one is going away */
	if (c->setup_failed)
		return; /* one refusal is enough to log */
	if (r->type == REDIS_REPLY_ERROR) {
		/* The server's text ("WRONGPASS ...", "invalid DB index") names
		 * the problem without echoing the password. */
		sy_log(c->logged_down ? SY_LOG_DEBUG : SY_LOG_WARN,
		       "redis: connection setup refused", "server", c->s->server, "error", r->str,
		       NULL);
		c->logged_down = true;
		c->setup_failed = true;
		redisAsyncDisconnect(ac); /* on_disconnect then retries later */
		return;
	}
	if (--c->setup_pending == 0)
		conn_ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	conn *c = ac->data;
	if (c->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context when this returns. */
		address_failed(c, ac->errstr[0] ? ac->errstr : "connection failed");
		return;
	}
	if (c->setup_pending == 0)
		conn_ready(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	(void)status;
	conn *c = ac->data;
	if (c->ac != ac)
		return; /* we dropped it ourselves */
	if (c->state == CONN_READY) {
		sy_log(SY_LOG_WARN, "redis: connection lost", "server", c->s->server, "error",
		       ac->errstr[0] ? ac->errstr : "closed", NULL);
		c->logged_down = true;
		c->backoff_ms = BACKOFF_FIRST_MS;
		went_down(c);
		sub_lost(c->s);
		return;
	}
	/* Lost during AUTH/SELECT. */
	address_failed(c, ac->errstr[0] ? ac->errstr : "closed during setup");
}

static void on_connect_timeout(uv_timer_t *t)
{
	conn *c = t->data;
	redisAsyncContext *ac = c->ac;
	if (c->s->life.closing || c->state != CONN_CONNECTING)
		return;
	/* Clearing c->ac first makes the callbacks redisAsyncFree runs
	 * (pending setup replies, the disconnect notice) ignore this context. */
	c->ac = NULL;
	if (ac)
		redisAsyncFree(ac);
	address_failed(c, "connect timed out");
}

static void connect_addr(conn *c)
{
	redis_store *s = c->s;
	const char *addr = c->addrs[c->addr_i];
	redisAsyncContext *ac = redisAsyncConnect(addr, s->port);

	c->state = CONN_CONNECTING;
	if (!ac) {
		attempt_failed(c, "out of memory");
		return;
	}
	if (ac->err) {
		char why[128];
		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		address_failed(c, why);
		return;
	}
	if (ev_attach(s, ac) != 0) {
		redisAsyncFree(ac);
		attempt_failed(c, "cannot poll the socket");
		return;
	}
	ac->data = c;
	c->ac = ac;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);

	/* hiredis buffers these until the connection is up, and Redis answers
	 * in order, so the slot becomes READY when the last one succeeds. */
	c->setup_pending = 0;
	c->setup_failed = false;
	if (s->password) {
		int rc;
		if (s->user)
			rc = redisAsyncCommand(ac, on_setup_reply, c, "AUTH %s %s", s->user,
			                       s->password);
		else
			rc = redisAsyncCommand(ac, on_setup_reply, c, "AUTH %s", s->password);
		if (rc == REDIS_OK)
			c->setup_pending++;
	}
	if (s->db >= 0 && redisAsyncCommand(ac, on_setup_reply, c, "SELECT %d", s->db) == REDIS_OK)
		c->setup_pending++;

	uv_timer_start(&c->timer, on_connect_timeout, s->connect_timeout_ms, 0);
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
	free_addrs(c);
	for (struct addrinfo *ai = res; ai && c->naddrs < MAX_ADDRS; ai = ai->ai_next) {
		char buf[INET6_ADDRSTRLEN];
		const void *a = ai->ai_family == AF_INET6
		                    ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
		                    : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    !inet_ntop(ai->ai_family, a, buf, sizeof(buf)))
			continue;
		char *dup = strdup(buf);
		if (dup)
			c->addrs[c->naddrs++] = dup;
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

	free_addrs(c);
	if (s->host_numeric) {
		c->addrs[0] = strdup(s->host);
		if (!c->addrs[0]) {
			attempt_failed(c, "out of memory");
			return;
		}
		c->naddrs = 1;
		connect_addr(c);
		return;
	}
	/* hiredis would call getaddrinfo() itself, blocking every session on
	 * this worker while DNS is slow; resolve on the thread pool instead. */
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

/* ---- requests ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	(void)ac;
	sy_store_req *rq = privdata;
	redis_store *s = rq->owner;
	redisReply *r = reply;

	if (r == NULL) {
		/* The context is being freed: the connection broke, or close(). */
		fail_later(s, rq,
		           s->life.closing ? "redis: store closed" : "redis: connection lost");
		return;
	}
	sy_store_status st = SY_STORE_ERROR;
	const char *value = NULL, *error = NULL;
	char ebuf[256];

	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(ebuf, sizeof(ebuf), "redis: %s", r->str);
		error = ebuf;
	} else if (rq->op == SY_STORE_OP_GET) {
		if (r->type == REDIS_REPLY_NIL) {
			st = SY_STORE_NOT_FOUND;
		} else if (r->type == REDIS_REPLY_STRING) {
			/* A destination id is text; one with a NUL in it could only
			 * be matched wrongly, so it is refused. */
			if (strlen(r->str) != r->len) {
				error = "redis: the value contains a NUL byte";
			} else {
				st = SY_STORE_FOUND;
				value = r->str;
			}
		} else {
			error = "redis: unexpected reply type to GET (is the key a string?)";
		}
	} else if (rq->op == SY_STORE_OP_PUBLISH) {
		if (r->type == REDIS_REPLY_INTEGER)
			st = SY_STORE_DONE;
		else
			error = "redis: unexpected reply to PUBLISH";
	} else if (rq->op == SY_STORE_OP_PUT) {
		if (r->type == REDIS_REPLY_STATUS)
			st = SY_STORE_DONE;
		else
			error = "redis: unexpected reply to SET";
	} else {
		if (r->type == REDIS_REPLY_INTEGER)
			st = r->integer > 0 ? SY_STORE_DONE : SY_STORE_NOT_FOUND;
		else
			error = "redis: unexpected reply to DEL";
	}
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
		if (redisAsyncCommandArgv(c->ac, on_reply, r, argc, argv, lens) != REDIS_OK)
			fail_later(s, r, "redis: connection is closing");
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

/* Every reply of the subscriptions: confirmations and messages. */
static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	conn *c = privdata;
	redis_store *s = c->s;
	redisReply *r = reply;
	if (!r || c->ac != ac || s->life.closing || !reply_str(r, 0))
		return;
	const char *kind = r->element[0]->str;
	if (strcasecmp(kind, "subscribe") == 0) {
		if (!s->subscribed) {
			s->subscribed = true;
			sy_log(SY_LOG_INFO, "redis: subscribed to the fleet events channel",
			       "server", s->server, "channel", s->channel, NULL);
			if (s->sub.state)
				s->sub.state(s->sub.arg, true);
		}
	} else if (strcasecmp(kind, "psubscribe") == 0) {
		sy_log(SY_LOG_INFO, "redis: following keyspace notifications", "server", s->server,
		       "pattern", s->ks_pattern, NULL);
	} else if (strcasecmp(kind, "message") == 0 && reply_str(r, 2)) {
		s->sub.message(s->sub.arg, SY_SUB_EVENT, r->element[2]->str, r->element[2]->len,
		               NULL);
	} else if (strcasecmp(kind, "pmessage") == 0 && reply_str(r, 3)) {
		const redisReply *ch = r->element[2];
		if (ch->len > s->ks_channel_cut && strlen(ch->str) == ch->len)
			s->sub.message(s->sub.arg, SY_SUB_KEYSPACE, ch->str + s->ks_channel_cut,
			               ch->len - s->ks_channel_cut, r->element[3]->str);
	}
}

static void sub_send(conn *c, bool keyspace)
{
	redis_store *s = c->s;
	const char *argv[2] = {"SUBSCRIBE", s->channel};
	size_t lens[2] = {9, strlen(s->channel)};
	if (redisAsyncCommandArgv(c->ac, on_sub_reply, c, 2, argv, lens) != REDIS_OK) {
		redisAsyncDisconnect(c->ac);
		return;
	}
	if (keyspace) {
		argv[0] = "PSUBSCRIBE";
		argv[1] = s->ks_pattern;
		lens[0] = 10;
		lens[1] = strlen(s->ks_pattern);
		redisAsyncCommandArgv(c->ac, on_sub_reply, c, 2, argv, lens);
	}
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

static void on_config_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	conn *c = privdata;
	redis_store *s = c->s;
	redisReply *r = reply;
	if (!r || c->ac != ac || s->life.closing)
		return;
	bool keyspace = true;
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && reply_str(r, 1)) {
		if (!keyspace_flags_ok(r->element[1]->str)) {
			keyspace = false;
			if (!s->ks_refused_logged)
				sy_log(
				    SY_LOG_ERROR,
				    "redis: mapping.redis.watch_keyspace is refused: the server's "
				    "notify-keyspace-events setting does not include K with $, g "
				    "and x (or A); set it to \"K$gx\" (or \"KA\") and restart, "
				    "changes made outside the proxy are not followed meanwhile",
				    "server", s->server, "notify-keyspace-events",
				    r->element[1]->str, NULL);
			s->ks_refused_logged = true;
		}
	} else {
		/* Managed services often disable CONFIG: subscribe anyway. */
		sy_log(SY_LOG_WARN,
		       "redis: cannot read notify-keyspace-events (CONFIG GET refused); "
		       "following keyspace notifications without checking",
		       "server", s->server, "error",
		       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", NULL);
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
	if (redisAsyncCommand(c->ac, on_config_reply, c, "CONFIG GET notify-keyspace-events") !=
	    REDIS_OK)
		redisAsyncDisconnect(c->ac);
}

/* ---- teardown ---- */

static void free_store(redis_store *s);

static void free_store_cb(void *s)
{
	free_store(s);
}

static void free_store(redis_store *s)
{
	if (s->conns) {
		for (unsigned i = 0; i < s->nconns; i++)
			free_addrs(&s->conns[i]);
	}
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
		redisAsyncContext *ac = c->ac;
		c->ac = NULL;
		c->state = CONN_DOWN;
		/* Runs the pending reply callbacks with no reply (they queue
		 * their errors) and closes the poll handle; when called from
		 * inside this context's own reply callback hiredis postpones
		 * it until the callback returns. */
		if (ac)
			redisAsyncFree(ac);
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

/* ---- URL ---- */

/* Messages name the problem, never the URL itself: it may hold a password. */
static int parse_url(redis_store *s, const char *url, const char **error_r)
{
	sy_redis_url u;
	if (redis_url_parse(url, &u, error_r) != 0) {
		redis_url_free(&u);
		return -1;
	}
	if (u.tls) {
		redis_url_free(&u);
		*error_r =
		    "mapping.redis.url: rediss:// needs hiredis with TLS support, which this "
		    "build lacks";
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
	if (parse_url(s, cfg->redis.url, error_r) != 0) {
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
			if (s->ks_pattern) {
				int n = snprintf(s->ks_pattern, 48,
				                 "__keyspace@%d__:", s->db < 0 ? 0 : s->db);
				s->ks_channel_cut = (size_t)n + plen;
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
	if (!s->prefix || !s->conns || !s->channel || (s->watch_keyspace && !s->ks_pattern) ||
	    store_life_init(&s->life, loop, s, free_store_cb, s->nconns) != 0) {
		*error_r = "mapping.redis: out of memory";
		free_store(s);
		return NULL;
	}
	s->connect_timeout_ms =
	    cfg->lookup_timeout_ms ? cfg->lookup_timeout_ms : CONNECT_TIMEOUT_MS;
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
