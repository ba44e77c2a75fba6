/*
 * SMTP and LMTP pass-through: every connection is bridged as an opaque byte
 * stream to routing.smtp_passthrough_destination. Only a PROXY v2 header is
 * ever added (when the leg's forwarding resolves to "proxy"); the proxy never
 * speaks the protocol itself, so a failed backend simply closes the client.
 */
#include "switchyard/log.h"
#include "switchyard/session.h"

static void on_dialed(void *arg, sy_stream *stream, int status, const char *reason)
{
	sy_session *s = arg;
	s->dial = NULL;
	if (status != 0) {
		char peer[64];
		session_peer_str(s, peer, sizeof(peer));
		sy_log(SY_LOG_WARN, "backend connection failed", "listener", s->lcfg->name,
		       "protocol", sy_proto_name(s->lcfg->protocol), "client", peer, "destination",
		       s->dest->cfg->id, "reason", reason, NULL);
		session_close(s, "backend unavailable");
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
		session_close(s, "no pass-through destination");
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
	s->dial = dial_start(&p);
}
