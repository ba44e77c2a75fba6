/*
 * Session life cycle: accept, connection limits, the PROXY header, implicit
 * TLS on the client leg, hand-off to the protocol, and close.
 */
#include "switchyard/session.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/proxy_protocol.h"

const char *const sy_session_state_names[] = {"proxy-header", "tls-handshake", "protocol",
                                              "bridging", "closing"};

static _Atomic uint64_t next_session_id = 1;

void session_seed_ids(void)
{
	uint64_t seed = 0;
	if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
		seed = (uint64_t)time(NULL) << 20;
	atomic_store(&next_session_id, seed | 1);
}

void session_peer_str(const sy_session *s, char *out, size_t len)
{
	sy_sockaddr_str((const struct sockaddr *)&s->peer, out, len, true);
}

/* The listener's metrics slot: its index in the server's listener table. */
static size_t listener_slot(const sy_session *s)
{
	return s->lrt->slot;
}

/* ---- close ------------------------------------------------------------------ */

static void free_session(sy_session *s)
{
	sy_worker *w = s->w;
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->nsessions--;
	if (s->pending)
		pool_put(&w->pool, s->pending);
	if (s->proto && s->proto_release)
		s->proto_release(s);
	free(s->identifier);
	node_set_unref(s->dest_hold);
	snapshot_unref(s->snap);
	free(s);
	w->hooks->session_gone(w);
}

void session_set_dest(sy_session *s, sy_dest_rt *d, sy_node_set *hold)
{
	sy_node_set *old = s->dest_hold;
	s->dest = d;
	s->dest_hold = node_set_ref(hold);
	node_set_unref(old);
}

static void on_part_closed(sy_session *s)
{
	if (--s->closes_pending == 0)
		free_session(s);
}

static void on_client_closed(sy_stream *st)
{
	on_part_closed(st->owner);
}

static void on_backend_closed(sy_stream *st)
{
	sy_session *s = st->owner;
	free(st);
	on_part_closed(s);
}

static void on_timer_closed(uv_handle_t *h)
{
	on_part_closed(h->data);
}

static void log_closed(sy_session *s)
{
	/* Formatting the fields costs more than the line's write (a float among
	 * them): none of it when the line is not logged. */
	if (!log_enabled(SY_LOG_INFO))
		return;
	char peer[64], in[24], out[24], secs[24];
	session_peer_str(s, peer, sizeof(peer));
	/* Bytes are counted on the client leg: in = from the client, out = to it. */
	snprintf(in, sizeof(in), "%llu", (unsigned long long)s->client.bytes_in);
	snprintf(out, sizeof(out), "%llu", (unsigned long long)s->client.bytes_out);
	double elapsed = (double)(uv_now(&s->w->loop) - s->start_ms) / 1000.0;
	snprintf(secs, sizeof(secs), "%.3f", elapsed);
	sy_log(SY_LOG_INFO, "session closed", "listener", s->lcfg->name, "protocol",
	       sy_proto_name(s->lcfg->protocol), "client", peer, "destination",
	       s->dest ? s->dest->cfg->id : "-", "bytes_in", in, "bytes_out", out, "seconds", secs,
	       NULL);
}

void session_close(sy_session *s, const char *why)
{
	if (s->state == SS_CLOSING)
		return;
	if (why && log_enabled(SY_LOG_DEBUG)) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_DEBUG, "closing session", "listener", s->lcfg->name, "client", peer,
		       "stage", sy_session_state_names[s->state], "reason", why, NULL);
	}
	/* Metrics: every session's duration, accept to close (recorded before
	 * the log line, so a reader of the log finds it counted). */
	metrics_session_closed(s->lcfg->protocol,
	                       (double)(uv_now(&s->w->loop) - s->start_ms) / 1000.0);
	/* The max_connections slot is free from here, before the close is
	 * logged: a client that saw "session closed" may take the slot at once,
	 * while the handles finish closing on the next loop turn. */
	if (s->counted) {
		s->counted = false;
		atomic_fetch_sub(&s->lrt->active, 1);
	}
	if (s->state == SS_BRIDGING)
		log_closed(s);
	s->state = SS_CLOSING;
	if (s->dial) {
		dial_cancel(s->dial);
		s->dial = NULL;
	}
	s->closes_pending = 2;
	uv_close((uv_handle_t *)&s->timer, on_timer_closed);
	sy_stream_close(&s->client, on_client_closed);
	if (s->backend) {
		s->closes_pending++;
		sy_stream_close(s->backend, on_backend_closed);
	}
}

/* ---- stages ----------------------------------------------------------------- */

static void on_preauth_timeout(uv_timer_t *t)
{
	sy_session *s = t->data;
	char peer[64];
	session_peer_str(s, peer, sizeof(peer));
	sy_log(SY_LOG_INFO, "pre-authentication timeout", "listener", s->lcfg->name, "client", peer,
	       "stage", sy_session_state_names[s->state], NULL);
	session_close(s, "preauth_timeout");
}

/* The client leg is ready: hand the session to its protocol, through the
 * table the runtime installed (this layer knows no protocol module). */
static void client_ready(sy_session *s)
{
	s->state = SS_PROTOCOL;
	void (*start)(sy_session *) = s->w->hooks->start[s->lcfg->protocol];
	if (start) {
		start(s);
		return;
	}
	sy_log(SY_LOG_ERROR, "protocol not served by this build", "listener", s->lcfg->name,
	       "protocol", sy_proto_name(s->lcfg->protocol), NULL);
	session_close(s, "protocol not implemented");
}

static void on_client_handshake(sy_stream *st, int status)
{
	sy_session *s = st->owner;
	if (status != 0) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_INFO, "client TLS handshake failed", "listener", s->lcfg->name,
		       "client", peer, NULL);
		session_close(s, "tls handshake failed");
		return;
	}
	client_ready(s);
}

/* Reads while the handshake runs only matter for errors, which the handshake
 * callback reports. */
static void on_handshake_read(sy_stream *st, const char *data, ssize_t n)
{
	(void)st;
	(void)data;
	(void)n;
}

static void start_client_leg(sy_session *s)
{
	if (s->lcfg->tls != SY_TLS_IMPLICIT) {
		client_ready(s);
		return;
	}
	s->state = SS_TLS_HANDSHAKE;
	SSL *ssl = tls_server_new_ssl(s->snap->tls_server);
	if (!ssl) {
		session_close(s, "cannot create TLS session");
		return;
	}
	if (s->lcfg->protocol == SY_PROTO_HTTP)
		tls_server_set_alpn(ssl, "http/1.1");
	s->client.read_cb = on_handshake_read;
	sy_stream_start_tls(&s->client, ssl, true, on_client_handshake);
	if (s->state == SS_TLS_HANDSHAKE && s->pending_len > 0) {
		/* Ciphertext that came in the same packet as the PROXY header. */
		sy_stream_inject(&s->client, s->pending, s->pending_len);
		pool_put(&s->w->pool, s->pending);
		s->pending = NULL;
		s->pending_len = 0;
	}
}

/* ---- the PROXY header -------------------------------------------------------------- */

/*
 * With proxy_protocol = "optional" a trusted peer may or may not send a
 * header, and which it does is told by the first bytes (proxy_detect). On a
 * listener whose client speaks first (implicit TLS: the ClientHello; http)
 * those bytes always come. On one whose server speaks first (plain and
 * STARTTLS mail listeners, and the pass-through protocols, whose backend
 * greets) a client without a load balancer in front sends nothing until it
 * is greeted, so waiting for bytes would wait for the pre-auth timeout. A load
 * balancer writes its header as soon as its connection to us is established,
 * before any byte of the client's, so it is in our socket when we accept or
 * one round trip later: the session waits at most PROXY_OPTIONAL_WAIT_MS for
 * a first byte and, when none has come, goes on without a header.
 *
 * Greeting at once and looking for the header among the client's first bytes
 * instead would not do: a pass-through session dials its backend, PROXY v2
 * header with the client's address first, before the client says anything,
 * and a submission greeting without server.hostname names the address the
 * client connected to, which the header replaces.
 */
#define PROXY_OPTIONAL_WAIT_MS 200

static bool client_speaks_first(const sy_session *s)
{
	return s->lcfg->tls == SY_TLS_IMPLICIT || s->lcfg->protocol == SY_PROTO_HTTP;
}

/* Milliseconds left of the pre-authentication deadline (absolute from
 * accept). */
static uint64_t preauth_left(const sy_session *s)
{
	uint64_t now = uv_now(&s->w->loop);
	uint64_t deadline = s->start_ms + s->lcfg->preauth_timeout_ms;
	return deadline > now ? deadline - now : 0;
}

/* The header stage is over (with or without a header): what s->pending holds
 * belongs to the client leg. */
static void end_proxy_stage(sy_session *s)
{
	if (s->pending && s->pending_len == 0) {
		pool_put(&s->w->pool, s->pending);
		s->pending = NULL;
	}
	sy_stream_read_stop(&s->client);
	start_client_leg(s);
}

/* Optional mode, and the connection does not start with a header: the bytes
 * read so far (s->pending) are the client's own, and go to the TLS handshake
 * or the protocol's line reader unchanged. */
static void no_proxy_header(sy_session *s)
{
	if (log_enabled(SY_LOG_DEBUG)) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_DEBUG, "no PROXY header from a trusted peer: its own address is used",
		       "listener", s->lcfg->name, "client", peer, NULL);
	}
	end_proxy_stage(s);
}

static void on_proxy_wait_timeout(uv_timer_t *t)
{
	sy_session *s = t->data;
	if (s->state != SS_PROXY_HEADER)
		return;
	/* A loop busy for longer than the wait runs this timer before it polls
	 * the socket, where a header may already be waiting: look before
	 * concluding there is none. Unread bytes (or an EOF) mean the read
	 * callback runs in this same loop iteration and decides. */
	uv_os_fd_t fd;
	char b;
	if (uv_fileno((const uv_handle_t *)&s->client.tcp, &fd) == 0 &&
	    recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) >= 0) {
		uint64_t left = preauth_left(s);
		if (left == 0) {
			on_preauth_timeout(t);
			return;
		}
		uv_timer_start(&s->timer, on_proxy_wait_timeout,
		               left < PROXY_OPTIONAL_WAIT_MS ? left : PROXY_OPTIONAL_WAIT_MS, 0);
		return;
	}
	/* Nothing came, or only part of a signature (say a client's stray CR):
	 * not a header. */
	no_proxy_header(s);
}

static void on_proxy_header_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	if (n < 0) {
		session_close(s, "closed before the PROXY header");
		return;
	}
	if (!s->pending) {
		s->pending = pool_get(&s->w->pool);
		if (!s->pending) {
			session_close(s, "out of memory");
			return;
		}
	}
	sy_proxy_stage ps = {
	    .buf = s->pending,
	    .cap = SY_BLOCK_SIZE,
	    .len = s->pending_len,
	    .optional = s->lcfg->proxy_protocol == SY_PROXY_OPTIONAL,
	    .committed = s->proxy_header_seen,
	};
	sy_proxy_info info;
	sy_pstage r = proxy_stage_feed(&ps, data, (size_t)n, &info);
	s->pending_len = ps.len;
	if (ps.committed && !s->proxy_header_seen) {
		/* The peer has begun a header: from here on it is parsed as on a
		 * listener that requires one, within the pre-auth deadline. */
		s->proxy_header_seen = true;
		if (!client_speaks_first(s))
			uv_timer_start(&s->timer, on_preauth_timeout, preauth_left(s), 0);
	}
	switch (r) {
	case SY_PSTAGE_MORE:
		return;
	case SY_PSTAGE_NONE:
		no_proxy_header(s);
		return;
	case SY_PSTAGE_OVERFLOW:
		if (!ps.committed) {
			/* Optional mode, no header: what precedes this read is at
			 * most an 11-byte signature prefix, so only a client that
			 * sent such a prefix and then a whole block before being
			 * greeted gets here. */
			char peer[64];
			session_peer_str(s, peer, sizeof(peer));
			sy_log(SY_LOG_INFO, "too many bytes before the greeting", "listener",
			       s->lcfg->name, "client", peer, NULL);
			session_close(s, "too many bytes before the greeting");
			return;
		}
		/* A read is at most one block and the header took more of it
		 * than was held before: cannot happen. Refused as invalid. */
		/* fall through */
	case SY_PSTAGE_INVALID: {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_WARN, "invalid PROXY protocol header", "listener", s->lcfg->name,
		       "client", peer, NULL);
		metrics_conn_rejected(listener_slot(s), SY_REJECT_INVALID_PROXY);
		session_close(s, "invalid PROXY header");
		return;
	}
	case SY_PSTAGE_HEADER:
		break;
	}
	if (!info.local) {
		memcpy(&s->peer, &info.src, sizeof(info.src));
		memcpy(&s->local, &info.dst, sizeof(info.dst));
	}
	/* Whatever followed the header (s->pending) belongs to the next stage. */
	end_proxy_stage(s);
}

/* Starts the PROXY header stage for a trusted peer. */
static void start_proxy_stage(sy_session *s)
{
	sy_stream_read_start(&s->client, on_proxy_header_read);
	if (s->lcfg->proxy_protocol == SY_PROXY_OPTIONAL && !client_speaks_first(s)) {
		uint64_t left = s->lcfg->preauth_timeout_ms;
		uv_timer_start(&s->timer, on_proxy_wait_timeout,
		               left < PROXY_OPTIONAL_WAIT_MS ? left : PROXY_OPTIONAL_WAIT_MS, 0);
	}
}

/* The acceptor's listener in `snap`, by name (a reload may have moved it
 * to another index, or removed it: NULL). */
static const sy_listener_config *find_listener(sy_snapshot *snap, const sy_acceptor *a)
{
	const sy_config *cfg = snap->cfg;
	size_t i = a->listener_index;
	if (i < cfg->nlisteners && strcmp(cfg->listeners[i].name, a->rt->name) == 0)
		return &cfg->listeners[i];
	for (i = 0; i < cfg->nlisteners; i++)
		if (strcmp(cfg->listeners[i].name, a->rt->name) == 0)
			return &cfg->listeners[i];
	return NULL;
}

static void free_handle(uv_handle_t *h)
{
	free(h);
}

void session_accept(sy_worker *w, sy_acceptor *a)
{
	sy_snapshot *snap = w->hooks->snapshot(w);
	const sy_listener_config *lcfg = find_listener(snap, a);
	if (!lcfg) {
		/* A reload removed this listener and its acceptor is about to
		 * close: take the connection off the backlog and drop it. */
		snapshot_unref(snap);
		uv_tcp_t *t = malloc(sizeof(*t));
		if (!t)
			return;
		uv_tcp_init(&w->loop, t);
		uv_accept((uv_stream_t *)&a->tcp, (uv_stream_t *)t);
		uv_close((uv_handle_t *)t, free_handle);
		return;
	}
	sy_session *s = calloc(1, sizeof(*s));
	if (!s) {
		snapshot_unref(snap);
		return;
	}
	s->w = w;
	s->snap = snap;
	s->lcfg = lcfg;
	s->lrt = a->rt;
	s->id = atomic_fetch_add(&next_session_id, 1);
	s->state = SS_PROXY_HEADER;
	s->start_ms = s->last_activity_ms = uv_now(&w->loop);
	uv_timer_init(&w->loop, &s->timer);
	s->timer.data = s;
	sy_stream_init(&s->client, &w->loop, &w->pool, s);

	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;

	if (uv_accept((uv_stream_t *)&a->tcp, (uv_stream_t *)&s->client.tcp) != 0) {
		session_close(s, "accept failed");
		return;
	}
	atomic_fetch_add(&a->rt->accepted, 1);
	metrics_conn_accepted(listener_slot(s)); /* metrics */
	sy_stream_peer(&s->client, &s->peer);
	if (a->local_known)
		memcpy(&s->local, &a->local, sizeof(s->local));
	else
		sy_stream_local(&s->client, &s->local);
	uv_tcp_nodelay(&s->client.tcp, 1);

	/* Beyond max_connections: accept and close at once, so the backlog never
	 * stalls and the client sees a prompt close. */
	if (atomic_fetch_add(&a->rt->active, 1) >= s->lcfg->max_connections) {
		atomic_fetch_sub(&a->rt->active, 1);
		atomic_fetch_add(&a->rt->rejected, 1);
		metrics_conn_rejected(listener_slot(s), SY_REJECT_MAX_CONNECTIONS);
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_WARN, "connection rejected: max_connections reached", "listener",
		       s->lcfg->name, "client", peer, NULL);
		session_close(s, "max_connections");
		return;
	}
	s->counted = true;
	if (log_enabled(SY_LOG_DEBUG)) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_DEBUG, "accepted", "listener", s->lcfg->name, "client", peer, NULL);
	}
	uv_timer_start(&s->timer, on_preauth_timeout, s->lcfg->preauth_timeout_ms, 0);

	if (s->lcfg->proxy_protocol != SY_PROXY_OFF) {
		bool trusted = cidr_match_any(s->lcfg->proxy_trusted, s->lcfg->nproxy_trusted,
		                              (struct sockaddr *)&s->peer);
		if (trusted) {
			start_proxy_stage(s);
			return;
		}
		if (s->lcfg->proxy_protocol == SY_PROXY_REQUIRED) {
			char peer[64];
			session_peer_str(s, peer, sizeof(peer));
			sy_log(SY_LOG_WARN,
			       "connection rejected: PROXY header required from an "
			       "untrusted peer",
			       "listener", s->lcfg->name, "client", peer, NULL);
			metrics_conn_rejected(listener_slot(s), SY_REJECT_UNTRUSTED_PROXY);
			session_close(s, "untrusted PROXY peer");
			return;
		}
	}
	start_client_leg(s);
}

long session_kick(sy_worker *w, const char *identifier, const char *why)
{
	long n = 0;
	sy_session *next;
	for (sy_session *s = w->sessions; s; s = next) {
		/* session_close never frees synchronously: next stays valid. */
		next = s->next;
		/* Bridged mail sessions, and HTTP connections (whose identifier
		 * is their latest request's); before that, identifier is NULL. */
		if (s->state == SS_CLOSING || !s->identifier ||
		    strcmp(s->identifier, identifier) != 0)
			continue;
		session_close(s, why);
		n++;
	}
	return n;
}
