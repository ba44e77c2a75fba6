/*
 * Backend dialer.
 *
 * One sy_dial lives from dial_start until every libuv request and handle it
 * owns has finished: the resolver request, the connect request, the timer and
 * the stream of the current attempt. Its callback runs at most once; after
 * that (or after dial_cancel) it only winds down. The stream of a successful
 * attempt is handed to the caller and is no longer the dial's.
 *
 * Attempts: each resolved address is tried in turn; a retryable failure
 * (refused, reset, unreachable, timed out) is retried up to
 * server.backend_connect_retries times after a short delay, all inside
 * backend_timeout. The final failure counts once against the destination's
 * circuit breaker.
 */
#include "switchyard/dial.h"
#include "switchyard/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/proxy_protocol.h"

#define RETRY_DELAY_MS 100

typedef enum dial_state {
	DIAL_STARTING, /* literal address parsed, first attempt queued */
	DIAL_RESOLVING,
	DIAL_WAIT_RETRY,
	DIAL_CONNECTING,
	DIAL_TLS,
	DIAL_DONE,
} dial_state;

static const char *const dial_state_names[] = {"starting",   "resolving", "wait-retry",
                                               "connecting", "tls",       "done"};

struct sy_dial {
	sy_dial_params p;
	dial_state state;
	bool cancelled;
	bool finished; /* callback made or cancelled: only winding down */
	bool probe;    /* this dial is the breaker's probe */
	unsigned attempt;
	unsigned pending; /* outstanding requests/handles keeping this alive */

	uv_getaddrinfo_t gai;
	struct addrinfo *ai;
	struct addrinfo *next_ai;
	struct sockaddr_storage target;

	uv_connect_t creq;
	uv_timer_t deadline;
	uv_timer_t retry;
	sy_stream *stream; /* current attempt's stream, NULL between attempts */
	char reason[160];
	uint64_t started_ns; /* uv_hrtime() at dial_start, for the latency metric */
};

static void start_attempt(sy_dial *d);

static void maybe_free(sy_dial *d)
{
	if (d->pending > 0)
		return;
	if (d->ai)
		uv_freeaddrinfo(d->ai);
	free(d);
}

static void on_handle_closed(uv_handle_t *h)
{
	sy_dial *d = h->data;
	d->pending--;
	maybe_free(d);
}

static void on_stream_closed(sy_stream *s)
{
	sy_dial *d = s->owner;
	free(s);
	d->pending--;
	maybe_free(d);
}

static void drop_stream(sy_dial *d)
{
	if (d->stream) {
		sy_stream_close(d->stream, on_stream_closed);
		d->stream = NULL;
	}
}

/* Stops timers and the current attempt, then releases the dial once all of
 * it has closed. */
static void wind_down(sy_dial *d)
{
	d->state = DIAL_DONE;
	d->finished = true;
	if (!uv_is_closing((uv_handle_t *)&d->deadline))
		uv_close((uv_handle_t *)&d->deadline, on_handle_closed);
	if (!uv_is_closing((uv_handle_t *)&d->retry))
		uv_close((uv_handle_t *)&d->retry, on_handle_closed);
	drop_stream(d);
	maybe_free(d);
}

static void finish_ok(sy_dial *d)
{
	sy_stream *s = d->stream;
	d->stream = NULL;
	d->pending--; /* the stream is the caller's now */
	health_success(d->p.dest->health);
	metrics_backend_connect(d->p.proto,
	                        (double)(uv_hrtime() - d->started_ns) / 1e9); /* metrics */
	s->owner = d->p.stream_owner;
	s->read_cb = NULL;
	s->handshake_cb = NULL;
	sy_dial_cb cb = d->p.cb;
	void *arg = d->p.arg;
	wind_down(d);
	cb(arg, s, 0, NULL);
}

/* The metrics class of a dial status (a libuv error, SY_ETLS, UV_ELOOP). */
static sy_connect_failure failure_class(int status)
{
	switch (status) {
	case UV_ECONNREFUSED:
		return SY_CONNFAIL_REFUSED;
	case UV_ETIMEDOUT:
		return SY_CONNFAIL_TIMEOUT;
	case SY_ETLS:
		return SY_CONNFAIL_TLS;
	case UV_ELOOP:
		return SY_CONNFAIL_LOOP;
	case UV_EAI_ADDRFAMILY:
	case UV_EAI_AGAIN:
	case UV_EAI_BADFLAGS:
	case UV_EAI_BADHINTS:
	case UV_EAI_FAIL:
	case UV_EAI_FAMILY:
	case UV_EAI_NODATA:
	case UV_EAI_NONAME:
	case UV_EAI_OVERFLOW:
	case UV_EAI_PROTOCOL:
	case UV_EAI_SERVICE:
	case UV_EAI_SOCKTYPE:
		return SY_CONNFAIL_DNS;
	default:
		return SY_CONNFAIL_OTHER;
	}
}

/* Final failure. `count` says whether it is the backend's fault (counted by
 * the breaker) rather than ours (a loop, a bad address). */
static void finish_fail(sy_dial *d, int status, bool count)
{
	if (d->finished)
		return;
	metrics_backend_failure(failure_class(status)); /* metrics */
	if (count) {
		if (health_failure(d->p.dest->health, sy_now_ms())) {
			char n[16];
			snprintf(n, sizeof(n), "%u", d->p.dest->health->consecutive_failures);
			sy_log(SY_LOG_WARN, "destination marked down", "destination",
			       d->p.dest->cfg->id, "consecutive_failures", n, "reason", d->reason,
			       NULL);
		}
	} else if (d->probe) {
		health_abandon_probe(d->p.dest->health);
	}
	sy_dial_cb cb = d->p.cb;
	void *arg = d->p.arg;
	char reason[sizeof(d->reason)];
	memcpy(reason, d->reason, sizeof(reason));
	wind_down(d);
	cb(arg, NULL, status, reason);
}

static bool retryable(int status)
{
	switch (status) {
	case UV_ECONNREFUSED:
	case UV_ECONNRESET:
	case UV_ETIMEDOUT:
	case UV_EHOSTUNREACH:
	case UV_ENETUNREACH:
	case UV_EAI_AGAIN:
	case UV_ECONNABORTED:
	case UV_EPIPE:
	case UV_EOF:
		return true;
	default:
		return false;
	}
}

static void on_retry_timer(uv_timer_t *t)
{
	sy_dial *d = t->data;
	if (!d->finished)
		start_attempt(d);
}

/* An attempt failed: try again after a short delay if allowed. */
static void attempt_failed(sy_dial *d, int status)
{
	drop_stream(d);
	if (d->finished)
		return;
	if (retryable(status) && d->attempt <= d->p.snap->cfg->server.backend_connect_retries) {
		d->state = DIAL_WAIT_RETRY;
		uv_timer_start(&d->retry, on_retry_timer, RETRY_DELAY_MS, 0);
		return;
	}
	finish_fail(d, status, true);
}

static void on_deadline(uv_timer_t *t)
{
	sy_dial *d = t->data;
	if (d->finished)
		return;
	snprintf(d->reason, sizeof(d->reason), "backend_timeout (%llu ms) passed while %s",
	         (unsigned long long)d->p.timeout_ms, dial_state_names[d->state]);
	if (d->state == DIAL_RESOLVING)
		uv_cancel((uv_req_t *)&d->gai);
	finish_fail(d, UV_ETIMEDOUT, true);
}

static void on_tls_done(sy_stream *s, int status)
{
	sy_dial *d = s->owner;
	if (d->finished)
		return;
	if (status != 0) {
		const char *why = s->ssl ? tls_client_verify_error(s->ssl) : NULL;
		snprintf(d->reason, sizeof(d->reason), "TLS handshake with backend failed: %s",
		         why ? why : "handshake error or connection closed");
		drop_stream(d);
		finish_fail(d, SY_ETLS, true);
		return;
	}
	tls_client_handshake_done(d->p.dest->tls, s->ssl);
	finish_ok(d);
}

static void on_connect(uv_connect_t *req, int status)
{
	sy_dial *d = req->data;
	d->pending--;
	if (d->finished || status == UV_ECANCELED) {
		maybe_free(d);
		return;
	}
	if (status < 0) {
		char addr[64];
		sy_sockaddr_str((struct sockaddr *)&d->target, addr, sizeof(addr), true);
		snprintf(d->reason, sizeof(d->reason), "connect to %s failed: %s", addr,
		         uv_strerror(status));
		attempt_failed(d, status);
		return;
	}
	sy_stream *s = d->stream;
	if (d->p.proxy_header) {
		uint8_t hdr[64];
		size_t n = proxy_v2_build(hdr, sizeof(hdr), d->p.client, d->p.local);
		if (n == 0 || sy_stream_write(s, hdr, n) != 0) {
			snprintf(d->reason, sizeof(d->reason), "could not send PROXY header");
			attempt_failed(d, UV_EPIPE);
			return;
		}
	}
	const sy_endpoint_config *ep = &d->p.dest->cfg->proto[d->p.proto];
	if (ep->tls != SY_TLS_IMPLICIT) {
		finish_ok(d);
		return;
	}
	SSL *ssl = d->p.dest->tls ? tls_client_new_ssl(d->p.dest->tls) : NULL;
	if (!ssl) {
		snprintf(d->reason, sizeof(d->reason), "cannot create TLS client session");
		drop_stream(d);
		finish_fail(d, SY_ETLS, false);
		return;
	}
	d->state = DIAL_TLS;
	sy_stream_start_tls(s, ssl, false, on_tls_done);
}

static int pick_source(sy_dial *d, int family, struct sockaddr_storage *out)
{
	const sy_destination_config *c = d->p.dest->cfg;
	size_t matching = 0;
	for (size_t i = 0; i < c->nsource_ips; i++)
		if (c->source_ips[i].addr.ss_family == family)
			matching++;
	if (matching == 0)
		return -1;
	uint32_t k = atomic_fetch_add(&d->p.dest->rr, 1) % (uint32_t)matching;
	for (size_t i = 0; i < c->nsource_ips; i++) {
		if (c->source_ips[i].addr.ss_family != family)
			continue;
		if (k-- == 0) {
			memcpy(out, &c->source_ips[i].addr, c->source_ips[i].addrlen);
			return 0;
		}
	}
	return -1;
}

/*
 * Binds the attempt's socket to a source_ips address. A plain bind() to port 0
 * reserves an ephemeral port for the address alone, so one source address
 * could carry only as many connections as the ephemeral range has ports
 * (about 28,000 by default) across all destinations. IP_BIND_ADDRESS_NO_PORT
 * leaves the port to connect(), which needs it unique only per destination
 * address and port (the same thing a connection without source_ips gets).
 * The socket is therefore made here, with the option set before the bind.
 */
static int bind_source(sy_stream *s, const struct sockaddr_storage *src)
{
#ifdef IP_BIND_ADDRESS_NO_PORT
	int fd = socket(src->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return uv_translate_sys_error(errno);
	int one = 1;
	/* Without the option (an old kernel) the bind still works, as before. */
	(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	int r = uv_tcp_open(&s->tcp, fd);
	if (r != 0) {
		close(fd);
		return r;
	}
#endif
	return uv_tcp_bind(&s->tcp, (const struct sockaddr *)src, 0);
}

static void start_attempt(sy_dial *d)
{
	d->attempt++;
	if (!d->ai) { /* a literal address (dial_start): no resolution */
		memcpy(&d->target, &d->p.dest->ip, sizeof(d->target));
	} else {
		if (!d->next_ai)
			d->next_ai = d->ai;
		struct addrinfo *a = d->next_ai;
		d->next_ai = a->ai_next;
		memset(&d->target, 0, sizeof(d->target));
		memcpy(&d->target, a->ai_addr, a->ai_addrlen);
	}
	uint16_t port = d->p.dest->cfg->proto[d->p.proto].port;
	if (d->target.ss_family == AF_INET)
		((struct sockaddr_in *)&d->target)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&d->target)->sin6_port = htons(port);

	if (dial_is_own_listener(d->p.snap->cfg, (struct sockaddr *)&d->target)) {
		char addr[64];
		sy_sockaddr_str((struct sockaddr *)&d->target, addr, sizeof(addr), true);
		snprintf(d->reason, sizeof(d->reason),
		         "routing loop: %s is one of this proxy's own listeners", addr);
		finish_fail(d, UV_ELOOP, false);
		return;
	}

	sy_stream *s = malloc(sizeof(*s));
	if (!s || sy_stream_init(s, &d->p.w->loop, &d->p.w->pool, d) != 0) {
		free(s);
		snprintf(d->reason, sizeof(d->reason), "out of memory");
		finish_fail(d, UV_ENOMEM, false);
		return;
	}
	d->stream = s;
	d->pending++;
	uv_tcp_nodelay(&s->tcp, 1);

	struct sockaddr_storage src;
	if (pick_source(d, d->target.ss_family, &src) == 0) {
		int r = bind_source(s, &src);
		if (r != 0) {
			snprintf(d->reason, sizeof(d->reason), "cannot bind source address: %s",
			         uv_strerror(r));
			drop_stream(d);
			finish_fail(d, r, false);
			return;
		}
	}
	d->state = DIAL_CONNECTING;
	d->creq.data = d;
	int r = uv_tcp_connect(&d->creq, &s->tcp, (struct sockaddr *)&d->target, on_connect);
	if (r != 0) {
		snprintf(d->reason, sizeof(d->reason), "connect failed: %s", uv_strerror(r));
		attempt_failed(d, r);
		return;
	}
	d->pending++;
	sy_stream_watch(s);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	sy_dial *d = req->data;
	d->pending--;
	if (d->finished) {
		if (res)
			uv_freeaddrinfo(res);
		maybe_free(d);
		return;
	}
	if (status < 0 || !res) {
		snprintf(d->reason, sizeof(d->reason), "cannot resolve %s: %s",
		         d->p.dest->cfg->host, uv_strerror(status));
		finish_fail(d, status, true);
		return;
	}
	d->ai = res;
	d->next_ai = res;
	start_attempt(d);
}

sy_dial *dial_start(const sy_dial_params *p)
{
	sy_dial *d = calloc(1, sizeof(*d));
	if (!d) {
		p->cb(p->arg, NULL, UV_ENOMEM, "out of memory");
		return NULL;
	}
	d->p = *p;
	d->started_ns = uv_hrtime();
	/* Loop guard, second half (the first compares each endpoint with our
	 * own listeners): XCLIENT/ID forwarding hands the next hop a budget of
	 * proxy_ttl - 1. A budget of 0 means this chain of proxies is out of
	 * hops, which in practice is a cycle: refuse rather than pass it on. */
	if (p->xclient && p->snap->cfg->server.proxy_ttl <= 1) {
		metrics_backend_failure(SY_CONNFAIL_LOOP); /* metrics */
		char reason[96];
		snprintf(reason, sizeof(reason),
		         "routing loop: the forwarded time-to-live would reach 0 (server.proxy_ttl "
		         "= %u)",
		         p->snap->cfg->server.proxy_ttl);
		sy_log(SY_LOG_WARN, "routing loop refused", "destination", p->dest->cfg->id,
		       "reason", reason, NULL);
		free(d);
		p->cb(p->arg, NULL, UV_ELOOP, reason);
		return NULL;
	}
	if (!health_allow(p->dest->health, sy_now_ms(), &d->probe)) {
		metrics_backend_failure(SY_CONNFAIL_DOWN); /* metrics */
		free(d);
		p->cb(p->arg, NULL, UV_ECONNREFUSED, "destination is marked down");
		return NULL;
	}
	uv_timer_init(&p->w->loop, &d->deadline);
	uv_timer_init(&p->w->loop, &d->retry);
	d->deadline.data = d;
	d->retry.data = d;
	d->pending = 2;
	uv_timer_start(&d->deadline, on_deadline, p->timeout_ms, 0);

	/* A literal address needs no DNS: it was parsed when the snapshot was
	 * built (sy_dest_rt.ip). Asking libuv to resolve it would cost every
	 * login a round trip through libuv's thread pool (a futex wake-up, two
	 * context switches and an eventfd write), about a tenth of the proxy's
	 * CPU per plain IMAP login (bench/login_cpu.py); even
	 * getaddrinfo(AI_NUMERICHOST) in the loop's thread was about 1 %. The
	 * attempt still starts from the loop (a zero timer), never from inside
	 * dial_start, so the callback contract is unchanged. */
	if (p->dest->ip.ss_family != AF_UNSPEC) {
		d->state = DIAL_STARTING;
		uv_timer_start(&d->retry, on_retry_timer, 0, 0);
		return d;
	}
	/* Hostnames are resolved on every connection so a changed address is
	 * picked up without a restart. */
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	const char *host = p->dest->cfg->host;
	d->state = DIAL_RESOLVING;
	d->gai.data = d;
	int r = uv_getaddrinfo(&p->w->loop, &d->gai, on_resolved, host, NULL, &hints);
	if (r != 0) {
		snprintf(d->reason, sizeof(d->reason), "cannot resolve %s: %s", host,
		         uv_strerror(r));
		finish_fail(d, r, true);
		return NULL;
	}
	d->pending++;
	return d;
}

void dial_cancel(sy_dial *d)
{
	if (!d || d->finished)
		return;
	d->cancelled = true;
	if (d->probe)
		health_abandon_probe(d->p.dest->health);
	if (d->state == DIAL_RESOLVING)
		uv_cancel((uv_req_t *)&d->gai);
	wind_down(d);
}

/* Addresses of this host's interfaces, read once: a wildcard listener is
 * reachable through any of them. */
static struct ifaddrs *local_ifs;
static pthread_once_t ifs_once = PTHREAD_ONCE_INIT;

static void load_ifs(void)
{
	if (getifaddrs(&local_ifs) != 0)
		local_ifs = NULL;
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		              &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return false;
}

static bool is_local_ip(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET &&
	    (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127)
		return true;
	if (sa->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr))
		return true;
	pthread_once(&ifs_once, load_ifs);
	for (struct ifaddrs *i = local_ifs; i; i = i->ifa_next)
		if (i->ifa_addr && same_ip(i->ifa_addr, sa))
			return true;
	return false;
}

static uint16_t port_of(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

bool dial_is_own_listener(const sy_config *cfg, const struct sockaddr *sa)
{
	uint16_t port = port_of(sa);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const sy_listener_config *l = &cfg->listeners[i];
		for (size_t j = 0; j < l->nbinds; j++) {
			const struct sockaddr *b = (const struct sockaddr *)&l->binds[j].addr;
			if (port_of(b) != port)
				continue;
			if (same_ip(b, sa))
				return true;
			if (sy_sockaddr_is_wildcard(b) && is_local_ip(sa))
				return true;
		}
	}
	return false;
}
