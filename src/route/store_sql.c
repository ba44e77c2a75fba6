/*
 * The PostgreSQL mapping store (store.h): libpq in non-blocking mode, its
 * socket watched by a uv_poll handle on the worker's loop.
 *
 * Each pool slot runs one query at a time (libpq's classic protocol flow)
 * and keeps a bounded FIFO of requests waiting for it. A request goes to an
 * idle READY slot if there is one, else to the READY slot with the shortest
 * queue, so one slow query delays only the requests queued behind it.
 *
 * The URL may list several hosts (`host=a,b`, `postgres://a:5432,b:5433/db`,
 * with one port for all or one per host, and optionally `hostaddr`). libpq
 * would resolve the names itself, synchronously inside PQconnectPoll, and
 * walk its list with no per-host timeout in non-blocking mode, so the store
 * walks the list itself: every libpq connection is given ONE candidate
 * (host name, numeric hostaddr, port), names being resolved on the loop
 * with uv_getaddrinfo first (numeric addresses and socket directories need
 * no lookup). Each candidate has its own timeout (lookup_timeout, else 5 s);
 * on failure or timeout the next one is tried (every address of a name, then
 * the next entry), and only when all have failed does the slot back off.
 * target_session_attrs goes to libpq with each candidate, which checks it
 * without blocking, so a read-only server fails that candidate and the walk
 * moves on; `prefer-standby` is two walks, "standby" then "any".
 *
 * Connection life cycle, per slot:
 *   DOWN --timer--> [RESOLVING (a host name, uv_getaddrinfo)]
 *   --> CONNECTING (PQconnectStartParams / PQconnectPoll) --> READY
 *   a candidate failing or timing out --> the next one (RESOLVING or
 *   CONNECTING); the last one failing --> DOWN, waiting 100 ms doubling to
 *   5 s before walking the list again from its start.
 *   READY --(error, EOF, no answer within STORE_ANSWER_FACTOR x the
 *   candidate timeout)--> DOWN, retrying after 100 ms from the start of
 *   the list, which is how a failover to a new primary is followed.
 * While connecting, libpq may close its socket and open another (SSL or GSS
 * fallback), possibly reusing the descriptor number, so the poll handle is
 * stopped around every PQconnectPoll call and replaced when PQsocket()
 * changes: libuv must never watch a descriptor that was closed behind its
 * back. A lookup that times out is abandoned (its request is freed when it
 * completes; the close sequence waits for it like for a handle).
 *
 * With no READY slot a request fails at once ("sql: not connected"),
 * except while the very first connection attempts after creation are under
 * way (the whole first walk of the list); see store_redis.c for why.
 *
 * Every completion is delivered from an idle callback, never from inside
 * libpq processing: a callback may issue requests or close the store, and
 * neither may happen while a PGconn is half-way through a result.
 *
 * Log lines name the server as host:port (never the URL: it may hold the
 * password).
 */
#include "switchyard/store.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "store_common.h"
#include "store_reply.h"
#include "switchyard/log.h"

#define BACKOFF_FIRST_MS      100
#define BACKOFF_MAX_MS        5000
#define CONNECT_TIMEOUT_MS    5000 /* when lookup_timeout is 0 */
#define QUEUE_MAX             1024 /* waiting requests per connection */
#define STARTUP_QUEUE_MAX     1024
#define MAX_ADDRS             8  /* addresses tried per host name */
#define MAX_RESULTS_PER_QUERY 16 /* see collect() */
#define DEFAULT_QUERY         "SELECT destination FROM routes WHERE identifier = $1"
#define NOTIFY_QUERY          "SELECT pg_notify($1, $2)"

typedef enum conn_state {
	CONN_DOWN, /* waiting for the reconnect timer */
	CONN_RESOLVING,
	CONN_CONNECTING,
	CONN_READY,
} conn_state;

typedef struct sql_store sql_store;
typedef struct conn conn;

/* One entry of the URL's host list: libpq's host, hostaddr and port lists
 * lined up. */
typedef struct sql_host {
	char *name;   /* host: a name, a numeric address or a socket directory;
	               * NULL = libpq's default */
	char *addr;   /* hostaddr from the URL, or NULL */
	char *port;   /* NULL = libpq's default */
	bool resolve; /* a name without hostaddr: looked up on the loop */
} sql_host;

/* A host name lookup; heap allocated because it may be abandoned (timeout,
 * close) and completes later all the same. */
typedef struct sql_gai {
	uv_getaddrinfo_t req;
	conn *c; /* NULL once abandoned */
	sql_store *s;
} sql_gai;

/* A poll handle on one socket; heap allocated because its memory may only
 * be released in the close callback, after the slot has moved on. */
typedef struct sql_poll {
	uv_poll_t h;
	conn *c; /* NULL once detached from the slot */
	sql_store *s;
	int fd;
} sql_poll;

struct conn {
	sql_store *s;
	conn_state state;
	PGconn *pg;
	sql_poll *poll;
	uv_timer_t timer; /* reconnect delay, the candidate's timeout; when READY
	                   * the answer deadline or the listener's ping */
	sql_gai *gai;
	/* The walk of the host list: entry host_i, its address addr_i of
	 * naddrs (1 when the entry needs no lookup), pass 1 = the second walk
	 * of prefer-standby. */
	unsigned host_i, addr_i, naddrs, pass;
	char addrs[MAX_ADDRS][INET6_ADDRSTRLEN]; /* of a resolved entry */
	char where[300];                         /* "host:port" being tried */
	char last_error[512];                    /* of the last failed candidate */
	sy_store_req *inflight;
	sy_req_list queue;
	bool flushing; /* PQflush has more to send: watch for writability */
	uint64_t backoff_ms;
	bool first_attempt;
	bool logged_down;
	bool listen_pending; /* listener mode: LISTEN sent, not yet complete */
	bool listen_failed;
	bool ping_pending; /* listener mode: an empty query is out */
};

struct sql_store {
	sy_store base;
	uv_loop_t *loop;
	PQconninfoOption *opts; /* the parsed URL */
	sql_host *hosts;        /* the host list, at least one entry */
	unsigned nhosts;
	bool prefer_standby; /* target_session_attrs=prefer-standby */
	char *server;        /* "host:port/db" (the lists as given) for log lines */
	char *query, *upsert, *del_query;
	uint64_t connect_timeout_ms;
	uint64_t answer_deadline_ms; /* see STORE_ANSWER_FACTOR */
	uint64_t ping_interval_ms;

	conn *conns;
	unsigned nconns;
	unsigned rr;
	sy_store_life life; /* startup queue, completions, the close sequence */

	char *channel; /* the fleet events channel (pg_notify, LISTEN) */
	/* Listener mode (store_sql_listen): one connection, no requests. */
	bool listen_mode;
	sy_store_sub sub;
	bool subscribed; /* LISTEN is in effect */
};

static void start_attempt(conn *c);
static void try_host(conn *c);
static void candidate_failed(conn *c, const char *why);
static void dispatch(sql_store *s, sy_store_req *r);
static void send_next(conn *c);
static void flush_startup(sql_store *s);

/* ---- completion ---- */

static void complete(sql_store *s, sy_store_req *r)
{
	completions_add(&s->life.completions, r);
}

static void fail(sql_store *s, sy_store_req *r, const char *error)
{
	completions_fail(&s->life.completions, r, error);
}

/* libpq messages end with a newline and may span lines; log and report
 * the first line only. */
static void first_line(char *buf, size_t size, const char *prefix, const char *msg)
{
	snprintf(buf, size, "%s%s", prefix, msg && *msg ? msg : "unknown error");
	buf[strcspn(buf, "\r\n")] = '\0';
}

/* ---- the poll handle ---- */

static void on_poll(uv_poll_t *h, int status, int events);

static void poll_closed(uv_handle_t *h)
{
	sql_poll *p = h->data;
	sql_store *s = p->s;
	free(p);
	store_life_handle_closed(&s->life);
}

/* Detaches and closes the slot's poll handle. Must run before PQfinish
 * closes the socket, so libuv stops watching the descriptor first. */
static void poll_close(conn *c)
{
	if (!c->poll)
		return;
	c->poll->c = NULL;
	uv_close((uv_handle_t *)&c->poll->h, poll_closed);
	c->poll = NULL;
}

static int poll_open(conn *c, int fd)
{
	sql_poll *p = calloc(1, sizeof(*p));
	if (!p)
		return -1;
	if (uv_poll_init(c->s->loop, &p->h, fd) != 0) {
		free(p);
		return -1;
	}
	p->h.data = p;
	p->c = c;
	p->s = c->s;
	p->fd = fd;
	c->s->life.open++;
	c->poll = p;
	return 0;
}

/* Makes the slot's poll handle watch PQsocket() for `events`, replacing
 * the handle when libpq has switched sockets. */
static int poll_watch(conn *c, int events)
{
	int fd = PQsocket(c->pg);
	if (fd < 0)
		return -1;
	if (c->poll && c->poll->fd != fd)
		poll_close(c);
	if (!c->poll && poll_open(c, fd) != 0)
		return -1;
	return uv_poll_start(&c->poll->h, events, on_poll) == 0 ? 0 : -1;
}

/* ---- connection management ---- */

static bool any_ready(const sql_store *s)
{
	for (unsigned i = 0; i < s->nconns; i++) {
		if (s->conns[i].state == CONN_READY)
			return true;
	}
	return false;
}

static void first_attempt_over(conn *c)
{
	sql_store *s = c->s;
	if (!store_life_first_attempt_over(&s->life, &c->first_attempt))
		return;
	if (any_ready(s)) {
		flush_startup(s);
		return;
	}
	sy_store_req *r;
	while ((r = req_list_pop(&s->life.startup)) != NULL)
		fail(s, r, "sql: not connected");
}

static void flush_startup(sql_store *s)
{
	sy_req_list l = s->life.startup;
	s->life.startup = (sy_req_list){0};
	sy_store_req *r;
	while ((r = req_list_pop(&l)) != NULL)
		dispatch(s, r);
}

static void drop_pg(conn *c)
{
	poll_close(c);
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	c->flushing = false;
	c->ping_pending = false;
}

static void on_retry_timer(uv_timer_t *t)
{
	conn *c = t->data;
	if (!c->s->life.closing)
		start_attempt(c);
}

static void schedule_retry(conn *c)
{
	uv_timer_start(&c->timer, on_retry_timer,
	               store_backoff_next(&c->backoff_ms, BACKOFF_MAX_MS), 0);
}

/* Every candidate of the host list failed (`why` is the last one's
 * error). The first failure of an outage is a warning, later ones (every
 * 5 s per slot while the servers stay down) are debug. */
static void attempt_failed(conn *c, const char *why)
{
	sql_store *s = c->s;
	char msg[512];

	first_line(msg, sizeof(msg), "", why);
	drop_pg(c);
	c->state = CONN_DOWN;
	if (s->life.closing)
		return;
	sy_log(c->logged_down ? SY_LOG_DEBUG : SY_LOG_WARN, "sql: cannot connect", "server",
	       s->server, "host", c->where, "error", msg, NULL);
	c->logged_down = true;
	first_attempt_over(c);
	schedule_retry(c);
}

/* An established connection broke: the query in flight fails, the queued
 * requests move to other slots (or fail when there is none). */
static void conn_lost(conn *c, const char *why)
{
	sql_store *s = c->s;
	char msg[512];

	first_line(msg, sizeof(msg), "", why);
	sy_log(SY_LOG_WARN, "sql: connection lost", "server", s->server, "host", c->where, "error",
	       msg, NULL);
	c->logged_down = true;
	drop_pg(c);
	c->state = CONN_DOWN;
	if (c->inflight) {
		char err[600];
		snprintf(err, sizeof(err), "sql: connection lost: %s", msg);
		fail(s, c->inflight, err);
		c->inflight = NULL;
	}
	sy_req_list q = c->queue;
	c->queue = (sy_req_list){0};
	sy_store_req *r;
	while ((r = req_list_pop(&q)) != NULL)
		dispatch(s, r);
	c->backoff_ms = BACKOFF_FIRST_MS;
	schedule_retry(c);
	if (s->listen_mode && s->subscribed) {
		s->subscribed = false;
		if (s->sub.state)
			s->sub.state(s->sub.arg, false);
	}
}

static void listen_start(conn *c);

/* READY and waiting for the server: it has answer_deadline_ms to finish. */
static void on_answer_deadline(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->state != CONN_READY || c->s->life.closing)
		return;
	char why[96];
	snprintf(why, sizeof(why), "no answer within %llu ms",
	         (unsigned long long)c->s->answer_deadline_ms);
	conn_lost(c, why);
}

static void await_answer(conn *c)
{
	uv_timer_start(&c->timer, on_answer_deadline, c->s->answer_deadline_ms, 0);
}

static void on_ping_timer(uv_timer_t *t);

/* READY with nothing in flight: a request slot waits for work, the
 * listener for its next ping. */
static void idle(conn *c)
{
	if (c->s->listen_mode && c->s->subscribed)
		uv_timer_start(&c->timer, on_ping_timer, c->s->ping_interval_ms, 0);
	else
		uv_timer_stop(&c->timer);
}

/* The listener's connection carries nothing of ours once LISTEN is in
 * effect, so a server gone silent would never be noticed: an empty query
 * (one EmptyQueryResponse and ReadyForQuery back) proves it is there. */
static void on_ping_timer(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->state != CONN_READY || c->s->life.closing || c->listen_pending || c->ping_pending)
		return;
	if (!PQsendQuery(c->pg, "")) {
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	c->ping_pending = true;
	int f = PQflush(c->pg);
	if (f < 0) {
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	c->flushing = f == 1;
	if (poll_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0)) != 0) {
		conn_lost(c, "cannot poll the socket");
		return;
	}
	await_answer(c);
}

static void conn_ready(conn *c)
{
	sql_store *s = c->s;
	uv_timer_stop(&c->timer);
	/* Non-blocking sends: PQsendQueryParams and PQflush never wait for
	 * the socket. */
	if (PQsetnonblocking(c->pg, 1) != 0 || poll_watch(c, UV_READABLE) != 0) {
		candidate_failed(c, "cannot switch the connection to non-blocking mode");
		return;
	}
	c->state = CONN_READY;
	c->backoff_ms = BACKOFF_FIRST_MS;
	const sql_host *h = &s->hosts[c->host_i];
	const char *addr = h->resolve ? c->addrs[c->addr_i] : h->addr;
	sy_log(SY_LOG_INFO, "sql: connected", "server", s->server, "host", c->where,
	       addr ? "address" : NULL, addr, NULL);
	c->logged_down = false;
	first_attempt_over(c);
	if (s->listen_mode) {
		listen_start(c);
		return;
	}
	flush_startup(s);
	send_next(c);
}

/* Listener mode: LISTEN "<channel>" (the channel is [a-z0-9_], checked by
 * the configuration; quoted all the same). */
static void listen_start(conn *c)
{
	char q[128];
	snprintf(q, sizeof(q), "LISTEN \"%s\"", c->s->channel);
	c->listen_failed = false;
	if (!PQsendQuery(c->pg, q)) {
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	c->listen_pending = true;
	await_answer(c);
	int f = PQflush(c->pg);
	if (f < 0) {
		conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	c->flushing = f == 1;
	if (poll_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0)) != 0)
		conn_lost(c, "cannot poll the socket");
}

/* Hands every notification libpq has read to the subscriber. */
static void deliver_notifies(conn *c)
{
	sql_store *s = c->s;
	PGnotify *n;
	while (c->pg && (n = PQnotifies(c->pg)) != NULL) {
		const char *payload;
		size_t len;
		if (s->listen_mode && s->subscribed &&
		    (payload = store_sql_notify_payload(n, &len)) != NULL)
			s->sub.message(s->sub.arg, SY_SUB_EVENT, payload, len, NULL);
		PQfreemem(n);
	}
}

static void connect_step(conn *c)
{
	/* libpq may close this socket and open another inside PQconnectPoll:
	 * stop watching it first (uv_poll_stop also drops it from epoll). */
	if (c->poll)
		uv_poll_stop(&c->poll->h);
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_OK:
		conn_ready(c);
		return;
	case PGRES_POLLING_READING:
		if (poll_watch(c, UV_READABLE) != 0)
			candidate_failed(c, "cannot poll the socket");
		return;
	case PGRES_POLLING_WRITING:
		if (poll_watch(c, UV_WRITABLE) != 0)
			candidate_failed(c, "cannot poll the socket");
		return;
	default:
		candidate_failed(c, PQerrorMessage(c->pg));
		return;
	}
}

static void on_notice(void *arg, const char *message)
{
	conn *c = arg;
	char msg[512];
	first_line(msg, sizeof(msg), "", message);
	sy_log(SY_LOG_DEBUG, "sql: server notice", "server", c->s->server, "notice", msg, NULL);
}

/* Abandons the slot's host name lookup: it completes later all the same
 * and is freed then (on_resolved). */
static void gai_abandon(conn *c)
{
	if (!c->gai)
		return;
	c->gai->c = NULL;
	uv_cancel((uv_req_t *)&c->gai->req);
	c->gai = NULL;
}

static void on_connect_timeout(uv_timer_t *t)
{
	conn *c = t->data;
	if (c->s->life.closing)
		return;
	if (c->state == CONN_CONNECTING) {
		candidate_failed(c, "connect timed out");
	} else if (c->state == CONN_RESOLVING) {
		gai_abandon(c);
		c->naddrs = 0;
		candidate_failed(c, "host name lookup timed out");
	}
}

/* "name:port" of the candidate, for log lines. */
static void set_where(conn *c, const sql_host *h, const char *addr)
{
	const char *name = h->name ? h->name : addr ? addr : "local";
	snprintf(c->where, sizeof(c->where), "%s:%s", name, h->port ? h->port : "5432");
}

/* Starts PQconnectStartParams with the parsed URL, its host, hostaddr and
 * port replaced by the one candidate's (NULL = left to libpq's default),
 * and target_session_attrs by the pass's for prefer-standby. */
static void connect_with(conn *c, const char *name, const char *addr, const char *port)
{
	sql_store *s = c->s;
	size_t n = 0;
	for (PQconninfoOption *o = s->opts; o->keyword; o++)
		n++;
	const char **keys = calloc(n + 2, sizeof(*keys));
	const char **vals = calloc(n + 2, sizeof(*vals));
	size_t k = 0;
	bool have_app = false;

	if (!keys || !vals) {
		free(keys);
		free(vals);
		candidate_failed(c, "out of memory");
		return;
	}
	for (PQconninfoOption *o = s->opts; o->keyword; o++) {
		const char *v = o->val;
		if (strcmp(o->keyword, "host") == 0)
			v = name;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			v = addr;
		else if (strcmp(o->keyword, "port") == 0)
			v = port;
		else if (strcmp(o->keyword, "target_session_attrs") == 0 && s->prefer_standby)
			v = c->pass == 0 ? "standby" : "any";
		else if (strcmp(o->keyword, "fallback_application_name") == 0 && !v)
			v = "switchyard";
		if (strcmp(o->keyword, "fallback_application_name") == 0)
			have_app = true;
		if (v) {
			keys[k] = o->keyword;
			vals[k++] = v;
		}
	}
	if (!have_app) {
		keys[k] = "fallback_application_name";
		vals[k++] = "switchyard";
	}
	c->state = CONN_CONNECTING;
	c->pg = PQconnectStartParams(keys, vals, 0);
	free(keys);
	free(vals);
	if (!c->pg) {
		candidate_failed(c, "out of memory");
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		candidate_failed(c, PQerrorMessage(c->pg));
		return;
	}
	PQsetNoticeProcessor(c->pg, on_notice, c);
	uv_timer_start(&c->timer, on_connect_timeout, s->connect_timeout_ms, 0);
	/* After PQconnectStart the documented first step is "as if
	 * PQconnectPoll returned PGRES_POLLING_WRITING". */
	if (poll_watch(c, UV_WRITABLE) != 0)
		candidate_failed(c, "cannot poll the socket");
}

/* Connects to address addr_i of entry host_i, or moves to the next entry
 * when the entry's addresses are used up. */
static void try_addr(conn *c)
{
	sql_store *s = c->s;
	if (c->addr_i >= c->naddrs) {
		c->host_i++;
		try_host(c);
		return;
	}
	const sql_host *h = &s->hosts[c->host_i];
	const char *addr = h->resolve ? c->addrs[c->addr_i] : h->addr;
	set_where(c, h, addr);
	connect_with(c, h->name, addr, h->port);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	sql_gai *g = req->data;
	conn *c = g->c;
	sql_store *s = g->s;

	free(g);
	s->life.open--;
	if (!c || s->life.closing) {
		uv_freeaddrinfo(res);
		store_life_maybe_finish(&s->life);
		return;
	}
	c->gai = NULL;
	uv_timer_stop(&c->timer);
	c->naddrs = c->addr_i = 0;
	if (status != 0) {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve %s: %s", s->hosts[c->host_i].name,
		         uv_strerror(status));
		uv_freeaddrinfo(res);
		candidate_failed(c, why);
		return;
	}
	for (struct addrinfo *ai = res; ai && c->naddrs < MAX_ADDRS; ai = ai->ai_next) {
		const void *a = ai->ai_family == AF_INET6
		                    ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
		                    : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    !inet_ntop(ai->ai_family, a, c->addrs[c->naddrs], sizeof(c->addrs[0])))
			continue;
		c->naddrs++;
	}
	uv_freeaddrinfo(res);
	if (c->naddrs == 0) {
		candidate_failed(c, "the host name has no usable address");
		return;
	}
	try_addr(c);
}

/* Tries entry host_i of the host list: looks its name up first if it needs
 * it. Past the end, the walk is over (or prefer-standby's second begins). */
static void try_host(conn *c)
{
	sql_store *s = c->s;
	if (c->host_i >= s->nhosts) {
		if (!s->prefer_standby || c->pass > 0) {
			attempt_failed(c, c->last_error);
			return;
		}
		c->pass = 1;
		c->host_i = 0;
	}
	const sql_host *h = &s->hosts[c->host_i];
	c->addr_i = 0;
	c->naddrs = 1;
	if (!h->resolve) {
		try_addr(c);
		return;
	}
	set_where(c, h, NULL);
	sql_gai *g = calloc(1, sizeof(*g));
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	if (!g) {
		c->naddrs = 0;
		candidate_failed(c, "out of memory");
		return;
	}
	g->req.data = g;
	g->c = c;
	g->s = s;
	c->state = CONN_RESOLVING;
	if (uv_getaddrinfo(s->loop, &g->req, on_resolved, h->name, NULL, &hints) != 0) {
		free(g);
		c->naddrs = 0;
		candidate_failed(c, "cannot start the host name lookup");
		return;
	}
	c->gai = g;
	s->life.open++;
	uv_timer_start(&c->timer, on_connect_timeout, s->connect_timeout_ms, 0);
}

/* One candidate (an address of an entry) failed or timed out: on to the
 * next, or the walk is over. A failure that is not the last is logged at
 * info (debug during an outage already reported), naming the host. */
static void candidate_failed(conn *c, const char *why)
{
	sql_store *s = c->s;

	first_line(c->last_error, sizeof(c->last_error), "", why);
	drop_pg(c);
	uv_timer_stop(&c->timer);
	c->state = CONN_DOWN;
	if (s->life.closing)
		return;
	bool more = c->addr_i + 1 < c->naddrs || c->host_i + 1 < s->nhosts ||
	            (s->prefer_standby && c->pass == 0);
	if (!more) {
		attempt_failed(c, c->last_error);
		return;
	}
	sy_log(c->logged_down ? SY_LOG_DEBUG : SY_LOG_INFO,
	       "sql: cannot connect, trying the next host", "server", s->server, "host", c->where,
	       "error", c->last_error, NULL);
	c->addr_i++;
	try_addr(c);
}

/* Walks the host list from its start. */
static void start_attempt(conn *c)
{
	c->host_i = 0;
	c->pass = 0;
	c->last_error[0] = '\0';
	try_host(c);
}

/* ---- queries ---- */

sy_store_status store_sql_answer(sy_store_op op, const PGresult *res, const char **text, char *ebuf,
                                 size_t ebuf_size)
{
	*text = NULL;
	switch (PQresultStatus(res)) {
	case PGRES_TUPLES_OK:
	case PGRES_SINGLE_TUPLE:
		if (op == SY_STORE_OP_GET) {
			if (PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0)) {
				*text = PQgetvalue(res, 0, 0);
				return SY_STORE_FOUND;
			}
			return SY_STORE_NOT_FOUND;
		}
		break;
	case PGRES_COMMAND_OK:
		if (op == SY_STORE_OP_GET) {
			*text = "sql: the query returned no rows (is it a SELECT?)";
			return SY_STORE_ERROR;
		}
		break;
	case PGRES_EMPTY_QUERY:
		*text = "sql: the query is empty";
		return SY_STORE_ERROR;
	default: {
		const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		first_line(ebuf, ebuf_size, "sql: ", m ? m : PQresultErrorMessage(res));
		*text = ebuf;
		return SY_STORE_ERROR;
	}
	}
	/* upsert/delete: a delete that removed nothing reports NOT_FOUND.
	 * (PQcmdTuples only reads the result; its parameter is not const.) */
	if (op == SY_STORE_OP_DEL && strcmp(PQcmdTuples((PGresult *)res), "0") == 0)
		return SY_STORE_NOT_FOUND;
	return SY_STORE_DONE;
}

bool store_sql_listen_ok(const PGresult *res, char *err, size_t err_size)
{
	if (PQresultStatus(res) == PGRES_COMMAND_OK)
		return true;
	first_line(err, err_size, "LISTEN failed: ", PQresultErrorMessage(res));
	return false;
}

const char *store_sql_notify_payload(const PGnotify *n, size_t *len)
{
	if (!n->extra)
		return NULL;
	*len = strlen(n->extra);
	return n->extra;
}

/* Folds one PGresult into the request's outcome. */
static void record(sy_store_req *r, PGresult *res)
{
	char err[512];
	const char *text;
	sy_store_status st = store_sql_answer(r->op, res, &text, err, sizeof(err));
	store_req_set_outcome(r, st, text);
}

/* Starts the next queued request if the slot is free. */
static void send_next(conn *c)
{
	sql_store *s = c->s;
	while (c->state == CONN_READY && !c->inflight && c->queue.head) {
		sy_store_req *r = req_list_pop(&c->queue);
		const char *params[2] = {r->key, r->value};
		const char *q = r->op == SY_STORE_OP_GET       ? s->query
		                : r->op == SY_STORE_OP_PUT     ? s->upsert
		                : r->op == SY_STORE_OP_PUBLISH ? NOTIFY_QUERY
		                                               : s->del_query;
		int nparams = r->op == SY_STORE_OP_PUT || r->op == SY_STORE_OP_PUBLISH ? 2 : 1;

		if (!PQsendQueryParams(c->pg, q, nparams, NULL, params, NULL, NULL, 0)) {
			char err[512];
			first_line(err, sizeof(err), "sql: ", PQerrorMessage(c->pg));
			if (PQstatus(c->pg) == CONNECTION_BAD) {
				req_list_push(&c->queue, r); /* conn_lost moves it on */
				conn_lost(c, PQerrorMessage(c->pg));
				return;
			}
			fail(s, r, err);
			continue;
		}
		c->inflight = r;
		await_answer(c);
		int f = PQflush(c->pg);
		if (f < 0) {
			conn_lost(c, PQerrorMessage(c->pg));
			return;
		}
		c->flushing = f == 1;
		if (poll_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0)) != 0) {
			conn_lost(c, "cannot poll the socket");
			return;
		}
	}
}

/* Reads whatever results are complete. Results with no request in flight
 * (there should be none) are discarded. */
static void collect(conn *c)
{
	/* Results since the last request completed. Each query the store sends
	 * has one result, then the end (NULL). A server that answers with a
	 * CopyInResponse puts libpq in COPY mode, where PQgetResult hands out a
	 * PGRES_COPY_IN result on every call until the client ends the COPY:
	 * this loop then never returned (found by tests/fuzz/fuzz_pg_conn.c).
	 * No query of the store starts a COPY, so the connection is dropped,
	 * which fails the request over as any lost connection does; so is one
	 * that yields more results than a query can have, whatever the cause. */
	unsigned results = 0;
	while (c->pg && !PQisBusy(c->pg)) {
		PGresult *res = PQgetResult(c->pg);
		if (res) {
			ExecStatusType st = PQresultStatus(res);
			const char *bad =
			    st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH
			        ? "the server started a COPY"
			    : ++results > MAX_RESULTS_PER_QUERY
			        ? "the server sent results without end"
			        : NULL;
			if (bad) {
				PQclear(res);
				conn_lost(c, bad);
				return;
			}
			char err[512];
			if (c->inflight) {
				record(c->inflight, res);
			} else if (c->listen_pending &&
			           !store_sql_listen_ok(res, err, sizeof(err))) {
				sy_log(SY_LOG_WARN,
				       "sql: cannot listen to the fleet events channel", "server",
				       c->s->server, "error", err, NULL);
				c->listen_failed = true;
			}
			PQclear(res);
			continue;
		}
		if (c->listen_pending) {
			c->listen_pending = false;
			if (c->listen_failed) {
				conn_lost(c, "LISTEN failed");
				return;
			}
			c->s->subscribed = true;
			sy_log(SY_LOG_INFO, "sql: listening to the fleet events channel", "server",
			       c->s->server, "channel", c->s->channel, NULL);
			if (c->s->sub.state)
				c->s->sub.state(c->s->sub.arg, true);
		}
		c->ping_pending = false;
		if (!c->inflight) {
			idle(c);
			break;
		}
		sy_store_req *r = c->inflight;
		c->inflight = NULL;
		results = 0;
		complete(c->s, r);
		send_next(c);
		if (!c->inflight && c->s->life.startup.head)
			flush_startup(c->s); /* this slot is free now */
		if (c->state != CONN_READY)
			break;
		if (!c->inflight) {
			idle(c);
			break;
		}
	}
}

static void io_step(conn *c, int events)
{
	if ((events & UV_WRITABLE) && c->flushing) {
		int f = PQflush(c->pg);
		if (f < 0) {
			conn_lost(c, PQerrorMessage(c->pg));
			return;
		}
		if (f == 0) {
			c->flushing = false;
			if (poll_watch(c, UV_READABLE) != 0) {
				conn_lost(c, "cannot poll the socket");
				return;
			}
		}
	}
	if (events & UV_READABLE) {
		/* Also while idle: that is how a server going away (EOF, or a
		 * FATAL notice before it) is noticed before the next request. */
		if (!PQconsumeInput(c->pg)) {
			conn_lost(c, PQerrorMessage(c->pg));
			return;
		}
		collect(c);
		deliver_notifies(c);
	}
	if (c->pg && PQstatus(c->pg) == CONNECTION_BAD)
		conn_lost(c, PQerrorMessage(c->pg));
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	sql_poll *p = h->data;
	conn *c = p->c;
	if (!c || !c->pg)
		return;
	if (status < 0) {
		/* libuv stopped the handle on POLLERR: let libpq find the error
		 * on the socket; the steps below re-arm the poll as needed. */
		events = UV_READABLE | UV_WRITABLE;
		if (c->state == CONN_READY &&
		    poll_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0)) != 0) {
			conn_lost(c, "cannot poll the socket");
			return;
		}
	}
	if (c->state == CONN_CONNECTING)
		connect_step(c);
	else if (c->state == CONN_READY)
		io_step(c, events);
}

/* Puts `r` on the least loaded READY slot, parks it while the first
 * connections are being made, or fails it. */
static void dispatch(sql_store *s, sy_store_req *r)
{
	conn *best = NULL;
	size_t best_load = 0;
	for (unsigned n = 0; n < s->nconns; n++) {
		conn *c = &s->conns[(s->rr + n) % s->nconns];
		if (c->state != CONN_READY)
			continue;
		size_t load = c->queue.len + (c->inflight ? 1 : 0);
		if (!best || load < best_load) {
			best = c;
			best_load = load;
		}
		if (load == 0)
			break;
	}
	/* While other slots are still making their first connection, wait for
	 * one of them rather than queueing behind a busy one. */
	if (best && best_load > 0 && s->life.starting > 0 &&
	    s->life.startup.len < STARTUP_QUEUE_MAX) {
		req_list_push(&s->life.startup, r);
		return;
	}
	if (best) {
		if (best->queue.len >= QUEUE_MAX) {
			fail(s, r, "sql: queue full");
			return;
		}
		s->rr = (unsigned)(best - s->conns + 1) % s->nconns;
		req_list_push(&best->queue, r);
		send_next(best);
		return;
	}
	if (s->life.starting > 0 && s->life.startup.len < STARTUP_QUEUE_MAX) {
		req_list_push(&s->life.startup, r);
		return;
	}
	fail(s, r, "sql: not connected");
}

static bool sql_writable(sy_store *base)
{
	sql_store *s = (sql_store *)base;
	return s->upsert && s->del_query;
}

static int submit(sy_store *base, sy_store_op o, const char *key, const char *value, sy_store_cb cb,
                  void *arg)
{
	sql_store *s = (sql_store *)base;
	if (s->life.closing || s->listen_mode || !key || !cb ||
	    ((o == SY_STORE_OP_PUT || o == SY_STORE_OP_PUBLISH) && !value))
		return -1;
	if ((o == SY_STORE_OP_PUT || o == SY_STORE_OP_DEL) && !sql_writable(base))
		return -1;
	sy_store_req *r = store_req_new(o, NULL, key, value, cb, arg, s);
	if (!r)
		return -1;
	dispatch(s, r);
	return 0;
}

static int sql_get(sy_store *s, const char *key, sy_store_cb cb, void *arg)
{
	return submit(s, SY_STORE_OP_GET, key, NULL, cb, arg);
}

static int sql_put(sy_store *s, const char *key, const char *value, sy_store_cb cb, void *arg)
{
	return submit(s, SY_STORE_OP_PUT, key, value, cb, arg);
}

static int sql_del(sy_store *s, const char *key, sy_store_cb cb, void *arg)
{
	return submit(s, SY_STORE_OP_DEL, key, NULL, cb, arg);
}

static int sql_publish(sy_store *base, const char *payload, sy_store_cb cb, void *arg)
{
	return submit(base, SY_STORE_OP_PUBLISH, ((sql_store *)base)->channel, payload, cb, arg);
}

/* ---- teardown ---- */

static void free_store(sql_store *s);

static void free_store_cb(void *s)
{
	free_store(s);
}

static void free_store(sql_store *s)
{
	if (s->opts)
		PQconninfoFree(s->opts); /* clears the password too */
	free(s->conns);
	for (unsigned i = 0; s->hosts && i < s->nhosts; i++) {
		free(s->hosts[i].name);
		free(s->hosts[i].addr);
		free(s->hosts[i].port);
	}
	free(s->hosts);
	free(s->server);
	free(s->query);
	free(s->upsert);
	free(s->del_query);
	free(s->channel);
	free(s);
}

static void timer_closed(uv_handle_t *h)
{
	conn *c = h->data;
	store_life_handle_closed(&c->s->life);
}

static void sql_close(sy_store *base, void (*done)(void *arg), void *arg)
{
	sql_store *s = (sql_store *)base;
	if (!store_life_begin_close(&s->life, done, arg))
		return;
	sy_store_req *r;
	while ((r = req_list_pop(&s->life.startup)) != NULL)
		fail(s, r, "sql: store closed");
	for (unsigned i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		uv_close((uv_handle_t *)&c->timer, timer_closed);
		gai_abandon(c); /* on_resolved still runs */
		if (c->inflight) {
			fail(s, c->inflight, "sql: store closed");
			c->inflight = NULL;
		}
		while ((r = req_list_pop(&c->queue)) != NULL)
			fail(s, r, "sql: store closed");
		drop_pg(c);
		c->state = CONN_DOWN;
	}
	store_life_maybe_finish(&s->life);
}

static const sy_store_ops sql_ops = {
    .name = "sql",
    .get = sql_get,
    .put = sql_put,
    .del = sql_del,
    .close = sql_close,
    .writable = sql_writable,
    .publish = sql_publish,
};

/* ---- creation ---- */

static const char *opt(const sql_store *s, const char *key)
{
	for (PQconninfoOption *o = s->opts; o->keyword; o++) {
		if (strcmp(o->keyword, key) == 0)
			return o->val && *o->val ? o->val : NULL;
	}
	return NULL;
}

static char *dup_or_null(const char *v)
{
	return v && *v ? strdup(v) : NULL;
}

/* Sets *out to a copy of entry `i` of the comma-separated list `list`
 * (libpq does not trim blanks either), or NULL when the entry is empty or
 * the list unset. Returns -1 when out of memory. */
static int list_entry(const char *list, unsigned i, char **out)
{
	*out = NULL;
	if (!list)
		return 0;
	for (; i > 0; i--) {
		list = strchr(list, ',');
		if (!list)
			return 0;
		list++;
	}
	size_t len = strcspn(list, ",");
	if (len && !(*out = strndup(list, len)))
		return -1;
	return 0;
}

static unsigned list_len(const char *list)
{
	unsigned n = 1;
	for (const char *p = list; p && (p = strchr(p, ',')) != NULL; p++)
		n++;
	return n;
}

static bool is_numeric_addr(const char *h)
{
	unsigned char tmp[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
}

/* Lines up the URL's host, hostaddr and port lists as libpq does: host and
 * hostaddr lists of the same length (either may be absent), and one port
 * for all or one per entry. */
static int parse_hosts(sql_store *s, const char **error_r)
{
	const char *host = opt(s, "host"), *hostaddr = opt(s, "hostaddr"), *port = opt(s, "port");
	unsigned nh = host ? list_len(host) : 0, na = hostaddr ? list_len(hostaddr) : 0;
	unsigned np = port ? list_len(port) : 0;

	if (nh && na && nh != na) {
		*error_r = "mapping.sql.url: the host and hostaddr lists differ in length";
		return -1;
	}
	s->nhosts = nh > na ? nh : na;
	if (s->nhosts == 0)
		s->nhosts = 1;
	if (np > 1 && np != s->nhosts) {
		*error_r = "mapping.sql.url: give one port, or one port per host";
		return -1;
	}
	s->hosts = calloc(s->nhosts, sizeof(*s->hosts));
	if (!s->hosts) {
		s->nhosts = 0;
		*error_r = "mapping.sql: out of memory";
		return -1;
	}
	for (unsigned i = 0; i < s->nhosts; i++) {
		sql_host *h = &s->hosts[i];
		if (list_entry(host, i, &h->name) != 0 || list_entry(hostaddr, i, &h->addr) != 0 ||
		    list_entry(port, np > 1 ? i : 0, &h->port) != 0) {
			*error_r = "mapping.sql: out of memory";
			return -1;
		}
		const char *name = h->name;
		h->resolve =
		    name && !h->addr && name[0] != '/' && name[0] != '@' && !is_numeric_addr(name);
	}
	return 0;
}

/* "h1:p1,h2:p2/db" for log lines: the host list lined up (never the URL:
 * it may hold the password). NULL when out of memory. */
static char *server_name(const sql_store *s)
{
	const char *db = opt(s, "dbname");
	size_t n = (db ? strlen(db) : 0) + 2;
	for (unsigned i = 0; i < s->nhosts; i++) {
		const sql_host *h = &s->hosts[i];
		const char *name = h->name ? h->name : h->addr ? h->addr : "local";
		n += strlen(name) + (h->port ? strlen(h->port) : 4) + 2;
	}
	char *out = malloc(n);
	size_t len = 0;
	if (!out)
		return NULL;
	for (unsigned i = 0; i < s->nhosts; i++) {
		const sql_host *h = &s->hosts[i];
		const char *name = h->name ? h->name : h->addr ? h->addr : "local";
		len += (size_t)snprintf(out + len, n - len, "%s%s:%s", i ? "," : "", name,
		                        h->port ? h->port : "5432");
	}
	snprintf(out + len, n - len, "/%s", db ? db : "");
	return out;
}

static sy_store *create(uv_loop_t *loop, const sy_mapping_config *cfg, unsigned conns,
                        const sy_store_sub *sub, const char **error_r)
{
	sql_store *s = calloc(1, sizeof(*s));
	char *perr = NULL;

	if (!s) {
		*error_r = "mapping.sql: out of memory";
		return NULL;
	}
	s->base.ops = &sql_ops;
	s->loop = loop;
	if (!cfg->sql.url || !*cfg->sql.url) {
		*error_r = "mapping.sql.url: is required";
		free_store(s);
		return NULL;
	}
	s->opts = PQconninfoParse(cfg->sql.url, &perr);
	if (!s->opts) {
		/* libpq's message may quote part of the URL, password included. */
		PQfreemem(perr);
		*error_r =
		    "mapping.sql.url: libpq cannot parse it (expected postgres://user@host:port/db "
		    "or key=value pairs; percent-encode special characters in the password)";
		free_store(s);
		return NULL;
	}
	s->query = strdup(cfg->sql.query && *cfg->sql.query ? cfg->sql.query : DEFAULT_QUERY);
	s->upsert = dup_or_null(cfg->sql.upsert_query);
	s->del_query = dup_or_null(cfg->sql.delete_query);

	if (parse_hosts(s, error_r) != 0) {
		free_store(s);
		return NULL;
	}
	const char *tsa = opt(s, "target_session_attrs");
	s->prefer_standby = tsa && strcmp(tsa, "prefer-standby") == 0;
	s->server = server_name(s);

	char chbuf[128];
	s->channel = strdup(store_events_channel(cfg, chbuf, sizeof(chbuf)));
	if (sub) {
		s->listen_mode = true;
		s->sub = *sub;
		conns = 1;
	}
	s->nconns = conns ? conns : 1;
	s->conns = calloc(s->nconns, sizeof(*s->conns));
	if (!s->query || !s->server || !s->conns || !s->channel ||
	    (cfg->sql.upsert_query && *cfg->sql.upsert_query && !s->upsert) ||
	    (cfg->sql.delete_query && *cfg->sql.delete_query && !s->del_query) ||
	    store_life_init(&s->life, loop, s, free_store_cb, s->nconns) != 0) {
		*error_r = "mapping.sql: out of memory";
		free_store(s);
		return NULL;
	}
	s->connect_timeout_ms =
	    cfg->lookup_timeout_ms ? cfg->lookup_timeout_ms : CONNECT_TIMEOUT_MS;
	s->answer_deadline_ms = STORE_ANSWER_FACTOR * s->connect_timeout_ms;
	s->ping_interval_ms = STORE_PING_FACTOR * s->connect_timeout_ms;
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

sy_store *store_sql_create(uv_loop_t *loop, const sy_mapping_config *cfg, unsigned conns,
                           const char **error_r)
{
	return create(loop, cfg, conns, NULL, error_r);
}

sy_store *store_sql_listen(uv_loop_t *loop, const sy_mapping_config *cfg, const sy_store_sub *sub,
                           const char **error_r)
{
	return create(loop, cfg, 1, sub, error_r);
}
