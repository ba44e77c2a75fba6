/*
 * Interactive protocol framework: the I/O around the line readers (the
 * readers themselves are ireader.c, the pure policy helpers ipolicy.c),
 * STARTTLS on both legs, routing, dialing, replay verdicts and the hand-off
 * to the bridge.
 *
 * Timers: the session's single timer serves the pre-auth deadline (absolute,
 * from accept) while the client talks to us, and backend_timeout while a
 * login is with the backend; after a failed login the pre-auth deadline is
 * armed again with whatever time it has left.
 */
#include "switchyard/interactive.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/hold.h"
#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/protocols.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/route.h"

#include "ireader.h"

const char *const sy_ictx_state_names[] = {"preauth", "client-tls", "routing",
                                           "backend", "closing",    "bridged"};

static void process_client(sy_ictx *c);
static void on_client_read(sy_stream *st, const char *data, ssize_t n);

static const sy_proto_ops *ops_for(sy_proto p)
{
	switch (p) {
	case SY_PROTO_IMAP:
		return &sy_imap_ops;
	case SY_PROTO_POP3:
		return &sy_pop3_ops;
	case SY_PROTO_MANAGESIEVE:
		return &sy_sieve_ops;
	case SY_PROTO_SUBMISSION:
		return &sy_submission_ops;
	default:
		return NULL;
	}
}

static sy_worker *W(sy_ictx *c)
{
	return c->s->w;
}

/* ---- output --------------------------------------------------------------------- */

void ictx_send(sy_ictx *c, const void *data, size_t len)
{
	if (c->s->state == SS_CLOSING)
		return;
	sy_stream_write(&c->s->client, data, len);
}

static void vsendf(sy_ictx *c, bool backend, const char *fmt, va_list ap)
{
	char small[1024];
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	char *buf = small;
	if (n < 0) {
		va_end(ap2);
		return;
	}
	if ((size_t)n >= sizeof(small)) {
		buf = malloc((size_t)n + 1);
		if (!buf) {
			va_end(ap2);
			return;
		}
		vsnprintf(buf, (size_t)n + 1, fmt, ap2);
	}
	va_end(ap2);
	if (backend)
		ictx_backend_send(c, buf, (size_t)n);
	else
		ictx_send(c, buf, (size_t)n);
	/* Formatted lines may carry credentials on the backend leg. */
	OPENSSL_cleanse(buf, (size_t)n);
	if (buf != small)
		free(buf);
}

void ictx_sendf(sy_ictx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsendf(c, false, fmt, ap);
	va_end(ap);
}

void ictx_backend_send(sy_ictx *c, const void *data, size_t len)
{
	if (c->s->backend && c->s->state != SS_CLOSING)
		sy_stream_write(c->s->backend, data, len);
}

void ictx_backend_sendf(sy_ictx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsendf(c, true, fmt, ap);
	va_end(ap);
}

/* ---- the destination (set by routing and the dial) --------------------------------------- */

/* The pure policy helpers (SASL mechanisms, cleartext, the replay rule,
 * forwarding facts) are in ipolicy.c. */

const sy_destination_config *ictx_destination(const sy_ictx *c)
{
	return c->s->dest ? c->s->dest->cfg : NULL;
}

sy_forwarding ictx_forwarding(const sy_ictx *c)
{
	return sy_destination_forwarding(c->s->dest->cfg, c->ops->proto);
}

sy_tls_mode ictx_backend_tls_mode(const sy_ictx *c)
{
	return c->s->dest->cfg->proto[c->ops->proto].tls;
}

bool ictx_backend_may_send_credentials(const sy_ictx *c)
{
	if (c->s->backend && c->s->backend->ssl && !c->s->backend->handshaking)
		return true;
	return ictx_backend_tls_mode(c) == SY_TLS_PLAIN && c->s->dest->cfg->allow_plaintext_auth;
}

/* ---- timers --------------------------------------------------------------------------- */

static void on_ictx_timer(uv_timer_t *t);

#define FINAL_REPLY_GRACE_MS 1000

static void arm_preauth(sy_ictx *c)
{
	uint64_t now = uv_now(&W(c)->loop);
	uint64_t left = c->preauth_deadline > now ? c->preauth_deadline - now : 0;
	uv_timer_start(&c->s->timer, on_ictx_timer, left, 0);
}

static void on_ictx_timer(uv_timer_t *t)
{
	sy_session *s = t->data;
	sy_ictx *c = s->proto;
	char peer[64];
	session_peer_str(s, peer, sizeof(peer));
	if (c->state == IC_ROUTING || c->state == IC_BACKEND) {
		ictx_tempfail(c, "backend_timeout passed during backend connection or login");
		return;
	}
	if (c->state == IC_CLOSING) {
		/* The goodbye below was not read in time: stop waiting. */
		session_close(s, "final reply not taken");
		return;
	}
	sy_log(SY_LOG_INFO, "pre-authentication timeout", "listener", s->lcfg->name, "protocol",
	       c->ops->name, "client", peer, NULL);
	if (c->state != IC_PREAUTH || !c->ops->timeout_notice) {
		session_close(s, "preauth_timeout");
		return;
	}
	/* Say goodbye the protocol's way, but give a client that does not
	 * read at most FINAL_REPLY_GRACE_MS to take it. */
	c->ops->timeout_notice(c);
	ictx_close_after_flush(c);
	if (s->state != SS_CLOSING)
		uv_timer_start(&s->timer, on_ictx_timer, FINAL_REPLY_GRACE_MS, 0);
}

/* ---- closing -------------------------------------------------------------------------- */

static void on_flushed_close(sy_stream *st)
{
	sy_session *s = st->owner;
	session_close(s, "closed after final reply");
}

void ictx_close_after_flush(sy_ictx *c)
{
	if (c->s->state == SS_CLOSING)
		return;
	c->state = IC_CLOSING;
	sy_stream_read_stop(&c->s->client);
	if (sy_stream_pending(&c->s->client) == 0) {
		session_close(c->s, "closed after final reply");
		return;
	}
	sy_stream_set_drain_cb(&c->s->client, on_flushed_close);
}

/* ---- the backend leg -------------------------------------------------------------------- */

static void free_stream(sy_stream *st)
{
	free(st);
}

static void drop_backend(sy_ictx *c)
{
	sy_session *s = c->s;
	if (s->dial) {
		dial_cancel(s->dial);
		s->dial = NULL;
	}
	if (s->backend) {
		sy_stream *b = s->backend;
		s->backend = NULL;
		/* The session may be freed before this close completes only if
		 * the stream is not embedded in it, which it is not. */
		b->owner = NULL;
		sy_stream_close(b, free_stream);
	}
	ireader_backend_drop(c, &W(c)->pool);
}

static void end_login(sy_ictx *c)
{
	route_cancel(c->route);
	c->route = NULL;
	credentials_wipe(&c->creds);
	free(c->identifier);
	c->identifier = NULL;
	drop_backend(c);
	session_set_dest(c->s, NULL, NULL);
}

/* Back to reading client commands after a verdict. */
static void resume_preauth(sy_ictx *c)
{
	c->state = IC_PREAUTH;
	c->paused = false;
	arm_preauth(c);
	sy_stream_read_start(&c->s->client, on_client_read);
	/* When the verdict came synchronously from inside client_line, the
	 * running process_client() picks up the remaining lines itself. */
	if (!c->processing)
		process_client(c);
}

static void log_login(sy_ictx *c, const char *result, const char *reason)
{
	char peer[64] = "";
	if (log_enabled(SY_LOG_INFO))
		session_peer_str(c->s, peer, sizeof(peer));
	sy_log(SY_LOG_INFO, "login", "listener", c->s->lcfg->name, "protocol", c->ops->name,
	       "client", peer, "identifier", c->identifier ? c->identifier : "-", "mechanism",
	       sasl_mech_name(c->creds.mech), "destination", c->s->dest ? c->s->dest->cfg->id : "-",
	       "result", result, reason ? "reason" : NULL, reason, NULL);
	/* Metrics: logins by protocol, mechanism and result. */
	sy_login_result r = strcmp(result, "ok") == 0       ? SY_LOGIN_OK
	                    : strcmp(result, "failed") == 0 ? SY_LOGIN_FAILED
	                                                    : SY_LOGIN_TEMPFAIL;
	metrics_login(c->ops->proto, c->creds.mech, r);
}

void ictx_tempfail(sy_ictx *c, const char *reason)
{
	if (c->state == IC_CLOSING || c->s->state == SS_CLOSING)
		return;
	log_login(c, "tempfail", reason);
	end_login(c);
	bool close = c->ops->tempfail(c, "Backend server unavailable, try again later.");
	if (close) {
		ictx_close_after_flush(c);
		return;
	}
	resume_preauth(c);
}

void ictx_auth_failed(sy_ictx *c, const char *reply, size_t len, const char *generic)
{
	log_login(c, "failed", NULL);
	bool hide = c->s->dest && c->s->dest->cfg->hide_auth_errors;
	end_login(c);
	if (hide)
		ictx_send(c, generic, strlen(generic));
	else
		ictx_send(c, reply, len);
	if (ictx_count_failure(c))
		return;
	resume_preauth(c);
}

bool ictx_count_failure(sy_ictx *c)
{
	c->auth_failures++;
	if (c->auth_failures < c->s->lcfg->max_auth_attempts)
		return false;
	char peer[64];
	session_peer_str(c->s, peer, sizeof(peer));
	sy_log(SY_LOG_INFO, "too many authentication failures", "listener", c->s->lcfg->name,
	       "client", peer, NULL);
	if (c->ops->too_many_failures)
		c->ops->too_many_failures(c);
	ictx_close_after_flush(c);
	return true;
}

static void handoff_to_client(void *arg, const char *data, size_t n)
{
	sy_session *s = arg;
	sy_stream_write(&s->client, data, n);
}

static void handoff_to_backend(void *arg, const char *data, size_t n)
{
	sy_session *s = arg;
	sy_stream_write(s->backend, data, n);
}

void ictx_auth_ok(sy_ictx *c, const char *reply, size_t len)
{
	sy_session *s = c->s;
	log_login(c, "ok", NULL);
	credentials_wipe(&c->creds);
	/* The bridged session keeps the identifier: the admin port's
	 * /connections/kick finds the account's sessions by it. */
	free(s->identifier);
	s->identifier = c->identifier;
	c->identifier = NULL;
	ictx_send(c, reply, len);
	/* Whatever followed in either direction belongs to the bridged session. */
	ireader_handoff(c, &W(c)->pool, handoff_to_client, handoff_to_backend, s);
	/* A failed write above may already have closed the session (the
	 * stream reports the error synchronously): nothing to bridge then. */
	if (s->state == SS_CLOSING)
		return;
	c->state = IC_BRIDGED;
	uv_timer_stop(&s->timer);
	bridge_start(s);
}

static void on_backend_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_ictx *c = st->owner ? ((sy_session *)st->owner)->proto : NULL;
	if (!c || c->state != IC_BACKEND)
		return;
	if (n < 0) {
		ictx_tempfail(c, "backend closed the connection during login");
		return;
	}
	switch (ireader_backend_read(c, &W(c)->pool, data, (size_t)n)) {
	case SY_IREAD_NOMEM:
		ictx_tempfail(c, "out of memory");
		break;
	case SY_IREAD_TOO_LONG:
		ictx_tempfail(c, "backend line too long");
		break;
	case SY_IREAD_BAD_REPLY:
		ictx_tempfail(c, "unexpected reply from backend");
		break;
	default:
		break;
	}
}

static void on_backend_tls(sy_stream *st, int status)
{
	sy_ictx *c = ((sy_session *)st->owner)->proto;
	if (status != 0) {
		const char *why = st->ssl ? tls_client_verify_error(st->ssl) : NULL;
		char reason[200];
		snprintf(reason, sizeof(reason), "backend STARTTLS handshake failed: %s",
		         why ? why : "handshake error");
		ictx_tempfail(c, reason);
		return;
	}
	tls_client_handshake_done(c->s->dest->tls, st->ssl);
	c->backend_tls = true;
	sy_stream_read_start(st, on_backend_read);
	c->ops->backend_tls_done(c);
}

void ictx_backend_starttls(sy_ictx *c)
{
	sy_session *s = c->s;
	/* Anything after the go-ahead is injected plaintext: discard. */
	ireader_backend_drop(c, &W(c)->pool);
	SSL *ssl = s->dest->tls ? tls_client_new_ssl(s->dest->tls) : NULL;
	if (!ssl) {
		ictx_tempfail(c, "cannot create TLS client session");
		return;
	}
	sy_stream_read_stop(s->backend);
	sy_stream_start_tls(s->backend, ssl, false, on_backend_tls);
}

static void on_dialed(void *arg, sy_stream *stream, int status, const char *reason)
{
	sy_ictx *c = arg;
	c->s->dial = NULL;
	if (status != 0) {
		ictx_tempfail(c, reason);
		return;
	}
	c->s->backend = stream;
	c->backend_tls = stream->ssl != NULL;
	sy_stream_read_start(stream, on_backend_read);
	c->ops->backend_connected(c);
}

static void on_routed(void *arg, const sy_route_result *r)
{
	sy_ictx *c = arg;
	c->route = NULL;
	/* A session closed while its login was being routed (the client went
	 * away mid-command) must not start a dial: session_close() has already
	 * run, so nothing would cancel it, and its callback would find the
	 * session freed. */
	if (c->state != IC_ROUTING || c->s->state == SS_CLOSING)
		return;
	if (r->status != SY_ROUTE_OK) {
		ictx_tempfail(c, r->reason);
		return;
	}
	sy_session *s = c->s;
	session_set_dest(s, r->dest, r->hold);
	c->state = IC_BACKEND;
	if (log_enabled(SY_LOG_DEBUG))
		sy_log(SY_LOG_DEBUG, "route", "identifier", c->identifier ? c->identifier : "-",
		       "destination", r->dest->cfg->id, "routed_to_default",
		       r->routed_to_default ? "true" : "false", NULL);
	sy_dial_params p = {
	    .w = s->w,
	    .snap = s->snap,
	    .dest = s->dest,
	    .proto = c->ops->proto,
	    .client = (const struct sockaddr *)&s->peer,
	    .local = (const struct sockaddr *)&s->local,
	    .proxy_header = ictx_forwarding(c) == SY_FWD_PROXY,
	    .xclient = ictx_forwarding(c) == SY_FWD_XCLIENT,
	    .timeout_ms = s->snap->cfg->server.backend_timeout_ms,
	    .stream_owner = s,
	    .cb = on_dialed,
	    .arg = c,
	};
	s->dial = dial_start(&p);
}

/* Resolves the login's identifier (NULL: the default destination). */
static void start_routing(sy_ictx *c)
{
	sy_session *s = c->s;
	/* NULL when on_routed already ran (the answer was at hand): then the
	 * session may be gone, so c is only touched when it has not. */
	sy_route_req *req =
	    route_resolve(s->w, s->snap, c->identifier, s->id, c->ops->proto, on_routed, c);
	if (req)
		c->route = req;
}

/* A login held by the admin port's /connections/delay may go on: the
 * backend_timeout starts now. */
static void on_hold_done(uv_timer_t *t)
{
	sy_session *s = t->data;
	sy_ictx *c = s->proto;
	if (!c || c->state != IC_ROUTING)
		return;
	uv_timer_start(&s->timer, on_ictx_timer, s->snap->cfg->server.backend_timeout_ms, 0);
	start_routing(c);
}

void ictx_authenticate(sy_ictx *c, sy_credentials *creds)
{
	sy_session *s = c->s;
	c->creds = *creds;
	memset(creds, 0, sizeof(*creds));
	c->paused = true;
	c->state = IC_ROUTING;
	sy_stream_read_stop(&s->client);
	uv_timer_start(&s->timer, on_ictx_timer, s->snap->cfg->server.backend_timeout_ms, 0);

	char *id = NULL;
	sy_ident_result ir = identifier_extract(&c->creds, s->snap->cfg, &id);
	if (ir == SY_IDENT_INVALID) {
		ictx_tempfail(c, "identifier contains forbidden characters");
		return;
	}
	c->identifier = id; /* NULL unless SY_IDENT_OK */
	/* Admin /connections/delay: new logins of a held identifier wait
	 * before routing (e.g. while its mailbox moves). */
	uint64_t hold = id ? hold_remaining_ms(id) : 0;
	if (hold > 0) {
		if (log_enabled(SY_LOG_DEBUG)) {
			char ms[24];
			snprintf(ms, sizeof(ms), "%llu", (unsigned long long)hold);
			sy_log(SY_LOG_DEBUG, "login held", "identifier", id, "ms", ms, NULL);
		}
		uv_timer_start(&s->timer, on_hold_done, hold, 0);
		return;
	}
	start_routing(c);
}

/* ---- the client leg ------------------------------------------------------------------------ */

static void on_client_tls(sy_stream *st, int status)
{
	sy_session *s = st->owner;
	sy_ictx *c = s->proto;
	if (status != 0) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_INFO, "client STARTTLS handshake failed", "listener", s->lcfg->name,
		       "client", peer, NULL);
		session_close(s, "starttls failed");
		return;
	}
	c->client_tls = true;
	c->state = IC_PREAUTH;
	if (c->ops->client_tls_done)
		c->ops->client_tls_done(c);
	sy_stream_read_start(&s->client, on_client_read);
}

void ictx_client_starttls(sy_ictx *c)
{
	sy_session *s = c->s;
	/* Pipelined plaintext after STARTTLS is an injection attempt: drop it. */
	ireader_client_drop(c, &W(c)->pool);
	SSL *ssl = tls_server_new_ssl(s->snap->tls_server);
	if (!ssl) {
		ictx_close_after_flush(c);
		return;
	}
	c->state = IC_CLIENT_TLS;
	sy_stream_start_tls(&s->client, ssl, true, on_client_tls);
}

static void line_too_long(sy_ictx *c)
{
	char peer[64];
	session_peer_str(c->s, peer, sizeof(peer));
	sy_log(SY_LOG_INFO, "client line too long", "listener", c->s->lcfg->name, "protocol",
	       c->ops->name, "client", peer, NULL);
	c->ops->line_too_long(c);
	ictx_close_after_flush(c);
}

/* Runs complete client lines through the module while it is ready for them
 * (the reader is ireader.c; this is what its verdicts mean here). */
static void process_client(sy_ictx *c)
{
	c->processing = true;
	switch (ireader_client_lines(c, &W(c)->pool)) {
	case SY_IREAD_TOO_LONG:
		line_too_long(c);
		break;
	case SY_IREAD_CLOSE:
		ictx_close_after_flush(c);
		break;
	default:
		break;
	}
	c->processing = false;
}

static void on_client_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	sy_ictx *c = s->proto;
	if (n < 0) {
		session_close(s, n == UV_EOF ? "client closed" : "client error");
		return;
	}
	switch (ireader_client_append(c, &W(c)->pool, data, (size_t)n)) {
	case SY_IREAD_OK:
		process_client(c);
		break;
	case SY_IREAD_NOMEM:
		session_close(s, "out of memory");
		break;
	case SY_IREAD_TOO_LONG:
		line_too_long(c);
		break;
	default:
		break;
	}
}

void interactive_start(sy_session *s)
{
	const sy_proto_ops *ops = ops_for(s->lcfg->protocol);
	sy_ictx *c = calloc(1, sizeof(*c));
	if (!c || !ops) {
		free(c);
		session_close(s, "protocol not available");
		return;
	}
	c->s = s;
	c->ops = ops;
	c->caps = &s->snap->cfg->caps[ops->proto];
	c->client_tls = s->client.ssl != NULL;
	c->state = IC_PREAUTH;
	c->preauth_deadline = s->start_ms + s->lcfg->preauth_timeout_ms;
	s->proto = c;
	s->proto_release = interactive_release;
	s->proto_shutdown = interactive_shutdown;
	if (ops->init(c) != 0) {
		session_close(s, "out of memory");
		return;
	}
	/* The session's timer now follows this module's states. */
	arm_preauth(c);
	ops->greet(c);
	if (s->pending_len > 0) {
		/* Client bytes that followed a PROXY header on a plain listener. */
		c->cbuf = s->pending;
		c->clen = s->pending_len;
		s->pending = NULL;
		s->pending_len = 0;
	}
	sy_stream_read_start(&s->client, on_client_read);
	process_client(c);
}

void interactive_shutdown(sy_session *s)
{
	sy_ictx *c = s->proto;
	if (!c || c->state != IC_PREAUTH || s->state == SS_CLOSING)
		return;
	if (c->ops->shutdown_notice)
		c->ops->shutdown_notice(c);
	ictx_close_after_flush(c);
}

void interactive_release(sy_session *s)
{
	sy_ictx *c = s->proto;
	if (!c)
		return;
	route_cancel(c->route);
	c->route = NULL;
	credentials_wipe(&c->creds);
	free(c->identifier);
	if (c->cbuf) {
		OPENSSL_cleanse(c->cbuf, c->clen);
		pool_put(&s->w->pool, c->cbuf);
	}
	if (c->bbuf)
		pool_put(&s->w->pool, c->bbuf);
	if (c->ops->release)
		c->ops->release(c);
	free(c);
	s->proto = NULL;
}
