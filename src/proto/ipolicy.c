/*
 * The framework's pure ictx_* helpers (declared in interactive.h): the SASL
 * policy (which mechanisms are accepted and advertised, whether cleartext
 * authentication is allowed), the credential rule every replay goes through,
 * STARTTLS availability and the forwarding facts for XCLIENT / ID. They read
 * the session's configuration and addresses only: no sockets, no loop, so
 * the fuzz test session (tests/fuzz/proto_driver.h) runs them as they are.
 *
 * ictx_replay_b64 refuses through ictx_tempfail and asks
 * ictx_backend_may_send_credentials, which live with the dial glue in
 * interactive.c (the fuzz driver has its own).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "switchyard/config.h"
#include "switchyard/interactive.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/sasl.h"
#include "switchyard/snapshot.h"

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

/* ---- replay and forwarding ----------------------------------------------------------- */

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
