/*
 * Interactive protocol framework: line readers, STARTTLS on both legs,
 * routing, dialing, replay verdicts and the hand-off to the bridge.
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

const char *const sy_ictx_state_names[] = {"preauth", "client-tls", "routing",
                                           "backend", "closing",    "bridged"};

static void process_client(sy_ictx *c);
static void process_lines(sy_ictx *c);
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

/* ---- policy ------------------------------------------------------------------------ */

bool ictx_plaintext_auth_allowed(const sy_ictx *c)
{
	return c->client_tls || c->caps->allow_plain_auth_without_tls;
}

bool ictx_mech_accepted(const sy_ictx *c, sy_mech m)
{
	if (m == SY_MECH_LOGIN)
		return true;
	for (size_t i = 0; i < c->caps->sasl.len; i++) {
		const char *name = c->caps->sasl.items[i];
		if (m != SY_MECH_UNKNOWN && sasl_mech_parse(name, strlen(name)) == m)
			return true;
	}
	return false;
}

size_t ictx_mechs_advertised(const sy_ictx *c, sy_mech out[SY_MECH_UNKNOWN])
{
	bool seen[SY_MECH_UNKNOWN + 1] = {false};
	bool plain_ok = ictx_plaintext_auth_allowed(c);
	size_t n = 0;
	for (size_t i = 0; i < c->caps->sasl.len; i++) {
		const char *name = c->caps->sasl.items[i];
		sy_mech m = sasl_mech_parse(name, strlen(name));
		if (m == SY_MECH_LOGIN || m == SY_MECH_UNKNOWN || seen[m])
			continue;
		if (m == SY_MECH_PLAIN && !plain_ok)
			continue;
		seen[m] = true;
		out[n++] = m;
	}
	return n;
}

bool ictx_starttls_available(const sy_ictx *c)
{
	return c->s->lcfg->tls == SY_TLS_STARTTLS && !c->client_tls;
}

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

int ictx_replay_b64(sy_ictx *c, sy_mech *mech_out, char **b64_out)
{
	*b64_out = NULL;
	if (!ictx_backend_may_send_credentials(c)) {
		ictx_tempfail(c, "refusing to send credentials over a plaintext backend leg");
		return -1;
	}
	uint8_t *msg = NULL;
	size_t len = 0;
	if (sasl_replay_message(&c->creds, mech_out, &msg, &len) == 0) {
		size_t blen = 0;
		*b64_out = sy_b64_encode(msg, len, &blen);
		sy_secure_free(msg, len);
	}
	if (!*b64_out) {
		ictx_tempfail(c, "cannot build the replayed authentication");
		return -1;
	}
	return 0;
}

void ictx_fwd_info(const sy_ictx *c, sy_fwd_info *out)
{
	memset(out, 0, sizeof(*out));
	const struct sockaddr *peer = (const struct sockaddr *)&c->s->peer;
	const struct sockaddr *local = (const struct sockaddr *)&c->s->local;
	sy_sockaddr_str(peer, out->client_ip, sizeof(out->client_ip), false);
	sy_sockaddr_str(local, out->local_ip, sizeof(out->local_ip), false);
	uint16_t pp = 0, lp = 0;
	if (peer->sa_family == AF_INET)
		pp = ntohs(((const struct sockaddr_in *)peer)->sin_port);
	else if (peer->sa_family == AF_INET6)
		pp = ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
	if (local->sa_family == AF_INET)
		lp = ntohs(((const struct sockaddr_in *)local)->sin_port);
	else if (local->sa_family == AF_INET6)
		lp = ntohs(((const struct sockaddr_in6 *)local)->sin6_port);
	snprintf(out->client_port, sizeof(out->client_port), "%u", pp);
	snprintf(out->local_port, sizeof(out->local_port), "%u", lp);
	out->client_ipv6 = strchr(out->client_ip, ':') != NULL;
	snprintf(out->session, sizeof(out->session), "%016llx", (unsigned long long)c->s->id);
	unsigned ttl = c->s->snap->cfg->server.proxy_ttl;
	snprintf(out->ttl, sizeof(out->ttl), "%u", ttl > 0 ? ttl - 1 : 0);
	out->transport = c->client_tls ? "TLS" : "insecure";
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
	if (c->bbuf) {
		pool_put(&W(c)->pool, c->bbuf);
		c->bbuf = NULL;
		c->blen = 0;
	}
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
	char peer[64];
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
	if (c->bbuf) {
		if (c->blen > 0)
			sy_stream_write(&s->client, c->bbuf, c->blen);
		pool_put(&W(c)->pool, c->bbuf);
		c->bbuf = NULL;
		c->blen = 0;
	}
	if (c->cbuf) {
		if (c->clen > 0)
			sy_stream_write(s->backend, c->cbuf, c->clen);
		pool_put(&W(c)->pool, c->cbuf);
		c->cbuf = NULL;
		c->clen = c->cscan = 0;
	}
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
	if (!c->bbuf) {
		c->bbuf = pool_get(&W(c)->pool);
		if (!c->bbuf) {
			ictx_tempfail(c, "out of memory");
			return;
		}
	}
	if (c->blen + (size_t)n > SY_LINE_MAX) {
		ictx_tempfail(c, "backend line too long");
		return;
	}
	memcpy(c->bbuf + c->blen, data, (size_t)n);
	c->blen += (size_t)n;
	/* Hand over complete lines while the login is with the backend; the
	 * module may finish it (auth_ok, failed, tempfail) at any line. */
	size_t off = 0;
	while (c->state == IC_BACKEND && c->bbuf) {
		char *nl = memchr(c->bbuf + off, '\n', c->blen - off);
		if (!nl)
			break;
		size_t linelen = (size_t)(nl - (c->bbuf + off));
		size_t next = off + linelen + 1;
		if (linelen > 0 && c->bbuf[off + linelen - 1] == '\r')
			linelen--;
		/* Consume before calling, so auth_ok forwards only what follows. */
		char line[SY_LINE_MAX + 1];
		memcpy(line, c->bbuf + off, linelen);
		line[linelen] = '\0';
		memmove(c->bbuf, c->bbuf + next, c->blen - next);
		c->blen -= next;
		off = 0;
		if (c->ops->backend_line(c, line, linelen) != 0) {
			OPENSSL_cleanse(line, linelen);
			ictx_tempfail(c, "unexpected reply from backend");
			return;
		}
		OPENSSL_cleanse(line, linelen);
	}
	if (c->bbuf && c->blen == 0 && c->state == IC_BACKEND) {
		pool_put(&W(c)->pool, c->bbuf);
		c->bbuf = NULL;
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
	if (c->bbuf) {
		/* Anything after the go-ahead is injected plaintext: discard. */
		pool_put(&W(c)->pool, c->bbuf);
		c->bbuf = NULL;
		c->blen = 0;
	}
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
	if (c->cbuf) {
		pool_put(&W(c)->pool, c->cbuf);
		c->cbuf = NULL;
		c->clen = c->cscan = c->literal_end = c->seg_start = 0;
	}
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

/* Runs complete client lines through the module while it is ready for them. */
static void process_client(sy_ictx *c)
{
	c->processing = true;
	process_lines(c);
	c->processing = false;
}

static void process_lines(sy_ictx *c)
{
	/* A closed session parses nothing more: its remaining lines could
	 * start a login (and a dial) that nothing would ever cancel. */
	while (c->state == IC_PREAUTH && !c->paused && c->cbuf && c->s->state != SS_CLOSING) {
		if (c->literal_end > 0) {
			if (c->clen < c->literal_end)
				return;
			c->cscan = c->literal_end;
			c->seg_start = c->literal_end;
			c->literal_end = 0;
		}
		char *nl = memchr(c->cbuf + c->cscan, '\n', c->clen - c->cscan);
		if (!nl) {
			c->cscan = c->clen;
			if (c->clen >= SY_LINE_MAX)
				line_too_long(c);
			return;
		}
		size_t end = (size_t)(nl - c->cbuf); /* index of '\n' */
		size_t linelen = end;
		/* A CR that is the last byte of a folded literal is literal data,
		 * not half of the line end: stripping it would hand the module a
		 * line that ends before seg_start (the modules compute len -
		 * seg_start) and cut the literal short. */
		if (linelen > c->seg_start && c->cbuf[linelen - 1] == '\r')
			linelen--;
		char saved = c->cbuf[linelen];
		c->cbuf[linelen] = '\0';
		int r = c->ops->client_line(c, c->cbuf, linelen);
		if (r < 0) {
			ictx_close_after_flush(c);
			return;
		}
		if (!c->cbuf)
			return; /* STARTTLS dropped the buffer */
		if (r > 0) {
			/* Literal: keep the line (with its CRLF) and read r raw bytes
			 * after it, then the rest of the command. */
			c->cbuf[linelen] = saved;
			size_t need = end + 1 + (size_t)(r - 1);
			if (need >= SY_LINE_MAX) {
				line_too_long(c);
				return;
			}
			c->literal_end = need;
			continue;
		}
		OPENSSL_cleanse(c->cbuf, end + 1);
		memmove(c->cbuf, c->cbuf + end + 1, c->clen - end - 1);
		c->clen -= end + 1;
		c->cscan = 0;
		c->seg_start = 0;
		if (c->clen == 0) {
			pool_put(&W(c)->pool, c->cbuf);
			c->cbuf = NULL;
		}
	}
}

static void on_client_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	sy_ictx *c = s->proto;
	if (n < 0) {
		session_close(s, n == UV_EOF ? "client closed" : "client error");
		return;
	}
	if (c->state != IC_PREAUTH && c->state != IC_ROUTING && c->state != IC_BACKEND)
		return;
	if (!c->cbuf) {
		c->cbuf = pool_get(&W(c)->pool);
		if (!c->cbuf) {
			session_close(s, "out of memory");
			return;
		}
	}
	size_t room = SY_LINE_MAX - c->clen;
	if ((size_t)n > room) {
		line_too_long(c);
		return;
	}
	memcpy(c->cbuf + c->clen, data, (size_t)n);
	c->clen += (size_t)n;
	process_client(c);
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
