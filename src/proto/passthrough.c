/*
 * SMTP and LMTP pass-through: every connection is bridged as an opaque byte
 * stream to routing.smtp_passthrough_destination. Only a PROXY v2 header is
 * ever added (when the leg's forwarding resolves to "proxy"); the proxy never
 * speaks the protocol itself, with one exception: when no backend connection
 * can be made (refused or timed out after the retries, the circuit breaker
 * has the destination down, the loop guard refuses it, a TLS failure on the
 * backend leg), the client has not heard a word yet, and the server side of
 * SMTP and LMTP opens with a greeting, so the proxy sends the greeting a
 * server that cannot serve sends (RFC 5321 3.1 and 3.8):
 *
 *   421 4.3.0 <hostname> Service not available
 *
 * and closes. A sending MTA then queues the message and retries later, as it
 * would for a busy server, instead of logging an unexplained disconnect.
 */
#include <stdio.h>
#include <string.h>

#include "switchyard/log.h"
#include "switchyard/protocols.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/session.h"

/* How long the client gets to read the 421 and hang up before we close. It
 * bounds a client that keeps its socket open (or keeps sending) after our
 * FIN; a real MTA closes at once. */
#define GOODBYE_LINGER_MS 2000

/* The longest host name in a greeting (RFC 1035 limits a domain to 255). */
#define GREETING_NAME_MAX 255

static void on_goodbye_timer(uv_timer_t *t)
{
	session_close(t->data, "421 not acknowledged in time");
}

/* Whatever the client sends after the 421 is read and dropped, so that the
 * close after its EOF is a clean FIN exchange: closing a socket that holds
 * unread bytes would send a reset, and a reset can discard the 421 from the
 * client's receive queue before the client has read it. */
static void on_goodbye_read(sy_stream *st, const char *data, ssize_t n)
{
	(void)data;
	if (n < 0)
		session_close(st->owner, "closed after 421");
}

/*
 * The name in our greeting: server.hostname, else the address literal of the
 * local socket (RFC 5321 4.1.3), as the submission module greets.
 */
static void greeting_name(const sy_session *s, char *out, size_t len)
{
	const char *h = s->snap->cfg->server.hostname;
	if (h && *h) {
		snprintf(out, len, "%.*s", GREETING_NAME_MAX, h);
		return;
	}
	char ip[64];
	sy_sockaddr_str((const struct sockaddr *)&s->local, ip, sizeof(ip), false);
	snprintf(out, len, strchr(ip, ':') ? "[IPv6:%s]" : "[%s]", ip);
}

/*
 * The destination cannot be used: greet with 421, end our sending direction
 * (TLS close_notify, then FIN, once the line is flushed) and close when the
 * client hangs up or GOODBYE_LINGER_MS passes, whichever comes first.
 */
static void refuse_with_421(sy_session *s, const char *why)
{
	char name[GREETING_NAME_MAX + 16];
	char line[GREETING_NAME_MAX + 64];
	greeting_name(s, name, sizeof(name));
	int n = snprintf(line, sizeof(line), "421 4.3.0 %s Service not available\r\n", name);
	if (n < 0 || (size_t)n >= sizeof(line) ||
	    sy_stream_write(&s->client, line, (size_t)n) != 0) {
		session_close(s, why);
		return;
	}
	sy_stream_shutdown(&s->client);
	sy_stream_read_start(&s->client, on_goodbye_read);
	if (s->state != SS_CLOSING)
		uv_timer_start(&s->timer, on_goodbye_timer, GOODBYE_LINGER_MS, 0);
}

static void on_dialed(void *arg, sy_stream *stream, int status, const char *reason)
{
	sy_session *s = arg;
	s->dial = NULL;
	if (status != 0) {
		/* The dialer has counted the failure (metrics by reason, and the
		 * breaker unless it was ours: a loop, a local error). */
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_WARN, "backend connection failed", "listener", s->lcfg->name,
		       "protocol", sy_proto_name(s->lcfg->protocol), "client", peer, "destination",
		       s->dest->cfg->id, "reason", reason, NULL);
		refuse_with_421(s, "backend unavailable");
		return;
	}
	s->backend = stream;
	if (s->pending_len > 0) {
		int r = sy_stream_write(s->backend, s->pending, s->pending_len);
		pool_put(&s->w->pool, s->pending);
		s->pending = NULL;
		s->pending_len = 0;
		if (r != 0) {
			session_close(s, "backend write failed");
			return;
		}
	}
	if (log_enabled(SY_LOG_DEBUG)) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_DEBUG, "backend connected", "listener", s->lcfg->name, "client", peer,
		       "destination", s->dest->cfg->id, NULL);
	}
	bridge_start(s);
}

void passthrough_start(sy_session *s)
{
	const sy_config *cfg = s->snap->cfg;
	sy_proto proto = s->lcfg->protocol;
	uv_timer_stop(&s->timer);
	sy_stream_read_stop(&s->client);
	s->dest = snapshot_dest(s->snap, cfg->routing.smtp_passthrough_destination);
	if (!s->dest) {
		/* Validation makes this unreachable for a loaded snapshot; should
		 * it happen, the client still hears why. */
		sy_log(SY_LOG_ERROR, "no pass-through destination", "listener", s->lcfg->name,
		       NULL);
		refuse_with_421(s, "no pass-through destination");
		return;
	}
	sy_dial_params p = {
	    .w = s->w,
	    .snap = s->snap,
	    .dest = s->dest,
	    .proto = proto,
	    .client = (const struct sockaddr *)&s->peer,
	    .local = (const struct sockaddr *)&s->local,
	    .proxy_header = sy_destination_forwarding(s->dest->cfg, proto) == SY_FWD_PROXY,
	    .timeout_ms = cfg->server.backend_timeout_ms,
	    .stream_owner = s,
	    .cb = on_dialed,
	    .arg = s,
	};
	/* A destination marked down fails inside dial_start (the callback has
	 * run when it returns NULL). */
	s->dial = dial_start(&p);
}
