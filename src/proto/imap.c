/*
 * IMAP (RFC 9051 / RFC 3501) before authentication, and the backend
 * handshake and replay.
 *
 * Client side: greeting with capabilities, CAPABILITY, NOOP, LOGOUT, ID
 * (answered locally), STARTTLS, LOGIN (atoms, quoted strings, literals and
 * LITERAL+), AUTHENTICATE (SASL-IR or continuation). Everything else is
 * refused with BAD until login.
 *
 * Backend side: greeting (capabilities from it or from CAPABILITY),
 * STARTTLS when the leg requires it, ID with the client's address for
 * xclient forwarding when advertised, then AUTHENTICATE under the client's
 * own tag so the backend's tagged answer can go to the client verbatim.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/interactive.h"
#include "switchyard/tokens.h"

typedef enum imap_cstate {
	IMAP_CMD,        /* waiting for a command */
	IMAP_SASL_CONT,  /* AUTHENTICATE: waiting for the client's response */
	IMAP_LOGIN_USER, /* AUTHENTICATE LOGIN: waiting for the user name */
	IMAP_LOGIN_PASS, /* AUTHENTICATE LOGIN: waiting for the password */
	IMAP_WAITING,    /* the login is with the backend */
} imap_cstate;

typedef enum imap_bstate {
	IB_GREETING,
	IB_CAPA,
	IB_STARTTLS,
	IB_ID,
	IB_AUTH,
} imap_bstate;

typedef struct imap_state {
	imap_cstate cst;
	imap_bstate bst;
	char tag[128];
	sy_mech mech;
	char *login_user; /* AUTHENTICATE LOGIN between its two steps */
	/* What the backend advertised. */
	bool b_starttls, b_sasl_ir, b_id;
	bool id_sent;
	bool response_sent; /* the SASL response went out */
	char *replay_b64;   /* held until the backend's continuation */
} imap_state;

#define ST(c) ((imap_state *)(c)->p)

static const char GENERIC_FAIL_FMT[] = "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";

/* ---- capabilities ---------------------------------------------------------------- */

/* Appends " tok" (no space before the first) if it fits whole; keeps out
 * NUL-terminated. Plain copies: this runs for every greeting. */
static size_t caps_add(char *out, size_t n, size_t cap, const char *pre, const char *tok)
{
	size_t lp = strlen(pre), lt = strlen(tok), sp = n > 0;
	if (sp + lp + lt >= cap - n)
		return n;
	if (sp)
		out[n++] = ' ';
	memcpy(out + n, pre, lp);
	memcpy(out + n + lp, tok, lt);
	n += lp + lt;
	out[n] = '\0';
	return n;
}

static size_t build_caps(sy_ictx *c, char *out, size_t cap)
{
	size_t n = 0;
	out[0] = '\0';
	for (size_t i = 0; i < c->caps->advertise.len; i++)
		n = caps_add(out, n, cap, "", c->caps->advertise.items[i]);
	if (ictx_starttls_available(c))
		n = caps_add(out, n, cap, "", "STARTTLS");
	if (!ictx_plaintext_auth_allowed(c))
		n = caps_add(out, n, cap, "", "LOGINDISABLED");
	sy_mech mechs[SY_MECH_UNKNOWN];
	size_t nmechs = ictx_mechs_advertised(c, mechs);
	for (size_t i = 0; i < nmechs; i++)
		n = caps_add(out, n, cap, "AUTH=", sasl_mech_name(mechs[i]));
	return n;
}

static void imap_greet(sy_ictx *c)
{
	char caps[1024];
	build_caps(c, caps, sizeof(caps));
	ictx_sendf(c, "* OK [CAPABILITY %s] %s\r\n", caps, c->caps->banner);
}

/* ---- tokenizer ------------------------------------------------------------------------ */

static bool is_tag_char(unsigned char ch)
{
	return tok_is_atom_char(ch) && ch != '+';
}

/*
 * The lenient atom of a user name or password. RFC 3501 keeps the list
 * wildcards '%' and '*' (and '{' inside a word) out of atoms, but clients
 * send master-user logins such as "alice@example.com%admin" or "alice*admin"
 * unquoted (Python's imaplib does), and Dovecot and the servers this proxy
 * stands in front of accept them. Only what would make the line ambiguous
 * stays out: controls, space, 8-bit bytes, parentheses, '"' and '\'.
 */
static bool is_credential_char(unsigned char ch)
{
	return ch > 0x20 && ch < 0x7f && !strchr("()\"\\", ch);
}

/*
 * Reads the astring where a credential stands: the atom above, a quoted
 * string or a literal (the literal's bytes were folded into the line by the
 * framework: "{n}\r\n<n bytes>"), decoded in place.
 */
static bool read_credential(sy_cursor *cu, char **s, size_t *len)
{
	if (cu->p < cu->end && (*cu->p == '"' || *cu->p == '{'))
		return tok_string(cu, s, len, SY_LINE_MAX);
	char *start = cu->p;
	while (cu->p < cu->end && is_credential_char((unsigned char)*cu->p))
		cu->p++;
	*s = start;
	*len = (size_t)(cu->p - start);
	return *len > 0;
}

/* ---- commands --------------------------------------------------------------------------- */

static void reply_caps(sy_ictx *c, const char *tag)
{
	char caps[1024];
	build_caps(c, caps, sizeof(caps));
	ictx_sendf(c, "* CAPABILITY %s\r\n%s OK Capability completed.\r\n", caps, tag);
}

/* A complete SASL response from the client (base64 text). */
static void sasl_response(sy_ictx *c, const char *b64, size_t len)
{
	imap_state *st = ST(c);
	if (len == 1 && b64[0] == '*') {
		ictx_sendf(c, "%s BAD Authentication aborted by client.\r\n", st->tag);
		st->cst = IMAP_CMD;
		if (st->login_user) {
			sy_secure_free(st->login_user, strlen(st->login_user));
			st->login_user = NULL;
		}
		return;
	}
	uint8_t *msg = NULL;
	size_t mlen = 0;
	if (sy_b64_decode(b64, len, &msg, &mlen) != 0) {
		ictx_sendf(c, "%s BAD Invalid base64 data in SASL response.\r\n", st->tag);
		st->cst = IMAP_CMD;
		/* The exchange is over: a LOGIN user name from its first step
		 * would otherwise be overwritten (leaked) by the next one. */
		if (st->login_user) {
			sy_secure_free(st->login_user, strlen(st->login_user));
			st->login_user = NULL;
		}
		ictx_count_failure(c);
		return;
	}
	sy_credentials cr = {0};
	const char *err = NULL;
	if (st->mech == SY_MECH_LOGIN) {
		if (st->cst == IMAP_LOGIN_USER) {
			st->login_user = (char *)msg; /* NUL-terminated by the decoder */
			st->cst = IMAP_LOGIN_PASS;
			ictx_send(c, "+ UGFzc3dvcmQ6\r\n", 16); /* "Password:" */
			return;
		}
		int r = credentials_from_login(&cr, st->login_user, strlen(st->login_user),
		                               (const char *)msg, mlen);
		sy_secure_free(st->login_user, strlen(st->login_user));
		st->login_user = NULL;
		sy_secure_free(msg, mlen);
		if (r != 0 || !cr.authcid || !*cr.authcid || !cr.password || !*cr.password) {
			credentials_wipe(&cr);
			ictx_sendf(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
			           st->tag);
			st->cst = IMAP_CMD;
			ictx_count_failure(c);
			return;
		}
	} else {
		int r = sasl_decode(st->mech, msg, mlen, &cr, &err);
		sy_secure_free(msg, mlen);
		if (r != 0) {
			/* Well-formed base64 of a malformed message is an
			 * authentication failure, not a client bug: a client
			 * asks its user again on NO, but gives up on BAD. */
			credentials_wipe(&cr);
			if (!err || !*err)
				err = "malformed SASL response";
			ictx_sendf(c, "%s NO [AUTHENTICATIONFAILED] %c%s.\r\n", st->tag,
			           toupper((unsigned char)err[0]), err + 1);
			st->cst = IMAP_CMD;
			ictx_count_failure(c);
			return;
		}
	}
	st->cst = IMAP_WAITING;
	ictx_authenticate(c, &cr);
}

static void cmd_authenticate(sy_ictx *c, sy_cursor *cu)
{
	imap_state *st = ST(c);
	char *m;
	size_t mlen;
	tok_sp(cu);
	if (!tok_atom(cu, &m, &mlen)) {
		ictx_sendf(c, "%s BAD Missing SASL mechanism.\r\n", st->tag);
		return;
	}
	sy_mech mech = sasl_mech_parse(m, mlen);
	if (mech == SY_MECH_UNKNOWN || !ictx_mech_accepted(c, mech)) {
		ictx_sendf(c, "%s NO Unsupported authentication mechanism.\r\n", st->tag);
		return;
	}
	if ((mech == SY_MECH_PLAIN || mech == SY_MECH_LOGIN) && !ictx_plaintext_auth_allowed(c)) {
		ictx_sendf(c,
		           "%s NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
		           "non-secure connections.\r\n",
		           st->tag);
		return;
	}
	st->mech = mech;
	if (cu->p < cu->end && *cu->p == ' ') {
		cu->p++;
		char *ir = cu->p;
		size_t irlen = (size_t)(cu->end - cu->p);
		if (irlen == 1 && ir[0] == '=')
			irlen = 0;
		if (mech == SY_MECH_LOGIN) {
			st->cst = IMAP_LOGIN_USER;
			if (irlen == 0) {
				ictx_send(c, "+ VXNlcm5hbWU6\r\n", 16);
				return;
			}
		}
		sasl_response(c, ir, irlen);
		return;
	}
	if (mech == SY_MECH_LOGIN) {
		st->cst = IMAP_LOGIN_USER;
		ictx_send(c, "+ VXNlcm5hbWU6\r\n", 16); /* "Username:" */
		return;
	}
	st->cst = IMAP_SASL_CONT;
	ictx_send(c, "+ \r\n", 4);
}

static void cmd_login(sy_ictx *c, sy_cursor *cu)
{
	imap_state *st = ST(c);
	if (!ictx_plaintext_auth_allowed(c)) {
		ictx_sendf(c,
		           "%s NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
		           "non-secure connections.\r\n",
		           st->tag);
		return;
	}
	char *u, *p;
	size_t ulen, plen;
	tok_sp(cu);
	if (!read_credential(cu, &u, &ulen)) {
		ictx_sendf(c, "%s BAD Invalid LOGIN arguments.\r\n", st->tag);
		return;
	}
	if (cu->p >= cu->end || *cu->p != ' ') {
		ictx_sendf(c, "%s BAD Invalid LOGIN arguments.\r\n", st->tag);
		return;
	}
	cu->p++;
	if (!read_credential(cu, &p, &plen) || cu->p != cu->end) {
		ictx_sendf(c, "%s BAD Invalid LOGIN arguments.\r\n", st->tag);
		return;
	}
	if (ulen == 0 || plen == 0 || memchr(u, '\0', ulen) || memchr(p, '\0', plen)) {
		ictx_sendf(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", st->tag);
		ictx_count_failure(c);
		return;
	}
	sy_credentials cr = {0};
	if (credentials_from_login(&cr, u, ulen, p, plen) != 0) {
		ictx_sendf(c, "%s NO [UNAVAILABLE] Internal error.\r\n", st->tag);
		return;
	}
	st->mech = SY_MECH_LOGIN;
	st->cst = IMAP_WAITING;
	ictx_authenticate(c, &cr);
}

static int imap_client_line(sy_ictx *c, char *line, size_t len)
{
	imap_state *st = ST(c);
	if (st->cst == IMAP_SASL_CONT || st->cst == IMAP_LOGIN_USER || st->cst == IMAP_LOGIN_PASS) {
		sasl_response(c, line, len);
		return SY_LINE_OK;
	}
	if (st->cst == IMAP_WAITING)
		return SY_LINE_OK; /* cannot happen: the reader is paused */

	/* A literal announced at the end of the current segment: ask the
	 * framework for its bytes (after the go-ahead for a synchronizing one). */
	bool plus = false;
	size_t brace;
	long lit = tok_trailing_literal(line + c->seg_start, len - c->seg_start, SY_LINE_MAX, &plus,
	                                &brace);
	if (lit >= 0) {
		if ((size_t)lit + len + 2 >= SY_LINE_MAX) {
			ictx_send(c, "* BAD Literal too large.\r\n", 26);
			return -1;
		}
		if (!plus)
			ictx_send(c, "+ Ready for literal data\r\n", 26);
		return SY_LINE_LITERAL(lit);
	}

	sy_cursor cu = {line, line + len};
	char *tag = cu.p;
	while (cu.p < cu.end && is_tag_char((unsigned char)*cu.p))
		cu.p++;
	size_t taglen = (size_t)(cu.p - tag);
	if (taglen == 0 || taglen >= sizeof(st->tag) || cu.p >= cu.end || *cu.p != ' ') {
		ictx_send(c, "* BAD Invalid tag.\r\n", 20);
		return SY_LINE_OK;
	}
	memcpy(st->tag, tag, taglen);
	st->tag[taglen] = '\0';
	cu.p++;
	char *cmd;
	size_t clen;
	if (!tok_atom(&cu, &cmd, &clen)) {
		ictx_sendf(c, "%s BAD Missing command.\r\n", st->tag);
		return SY_LINE_OK;
	}
#define IS(name) (clen == sizeof(name) - 1 && strncasecmp(cmd, name, clen) == 0)
	if (IS("CAPABILITY")) {
		reply_caps(c, st->tag);
	} else if (IS("NOOP")) {
		ictx_sendf(c, "%s OK NOOP completed.\r\n", st->tag);
	} else if (IS("LOGOUT")) {
		ictx_sendf(c, "* BYE Logging out.\r\n%s OK Logout completed.\r\n", st->tag);
		ictx_close_after_flush(c);
	} else if (IS("ID")) {
		ictx_sendf(c, "* ID (\"name\" \"Switchyard\")\r\n%s OK ID completed.\r\n", st->tag);
	} else if (IS("STARTTLS")) {
		if (!ictx_starttls_available(c)) {
			ictx_sendf(c, "%s BAD STARTTLS is not available.\r\n", st->tag);
		} else if (cu.p != cu.end) {
			ictx_sendf(c, "%s BAD STARTTLS takes no arguments.\r\n", st->tag);
		} else {
			ictx_sendf(c, "%s OK Begin TLS negotiation now.\r\n", st->tag);
			ictx_client_starttls(c);
		}
	} else if (IS("LOGIN")) {
		cmd_login(c, &cu);
	} else if (IS("AUTHENTICATE")) {
		cmd_authenticate(c, &cu);
	} else {
		ictx_sendf(c, "%s BAD Command not permitted before authentication.\r\n", st->tag);
	}
#undef IS
	return SY_LINE_OK;
}

static void imap_client_tls_done(sy_ictx *c)
{
	(void)c; /* RFC 9051: the client asks for capabilities again itself. */
}

static void imap_line_too_long(sy_ictx *c)
{
	ictx_send(c, "* BAD Command line too long.\r\n", 30);
}

static bool imap_tempfail(sy_ictx *c, const char *text)
{
	imap_state *st = ST(c);
	ictx_sendf(c, "%s NO [UNAVAILABLE] %s\r\n", st->tag, text);
	st->cst = IMAP_CMD;
	return false;
}

static void imap_too_many(sy_ictx *c)
{
	ictx_send(c, "* BYE Too many invalid authentication attempts.\r\n", 49);
}

static void imap_timeout_notice(sy_ictx *c)
{
	ictx_send_lit(c, "* BYE Disconnected for inactivity.\r\n");
}

static void imap_shutdown_notice(sy_ictx *c)
{
	ictx_send(c, "* BYE Server shutting down.\r\n", 29);
}

/* ---- backend -------------------------------------------------------------------------------- */

static void parse_backend_caps(imap_state *st, const char *s, size_t len)
{
	st->b_starttls = st->b_sasl_ir = st->b_id = false;
	const char *p = s, *end = s + len;
	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		const char *t = p;
		while (p < end && *p != ' ' && *p != ']')
			p++;
		size_t n = (size_t)(p - t);
		if (n == 8 && strncasecmp(t, "STARTTLS", 8) == 0)
			st->b_starttls = true;
		else if (n == 7 && strncasecmp(t, "SASL-IR", 7) == 0)
			st->b_sasl_ir = true;
		else if (n == 2 && strncasecmp(t, "ID", 2) == 0)
			st->b_id = true;
		if (p < end && *p == ']')
			break;
	}
}

static void next_step(sy_ictx *c);

static void imap_backend_connected(sy_ictx *c)
{
	imap_state *st = ST(c);
	if (st->replay_b64) {
		sy_secure_free(st->replay_b64, strlen(st->replay_b64));
		st->replay_b64 = NULL;
	}
	st->bst = IB_GREETING;
	st->id_sent = false;
	st->response_sent = false;
}

static void send_replay(sy_ictx *c)
{
	imap_state *st = ST(c);
	sy_mech m;
	char *b64 = NULL;
	if (ictx_replay_b64(c, &m, &b64) != 0)
		return;
	st->bst = IB_AUTH;
	if (st->b_sasl_ir) {
		ictx_backend_sendf(c, "%s AUTHENTICATE %s %s\r\n", st->tag, sasl_mech_name(m),
		                   *b64 ? b64 : "=");
		st->response_sent = true;
		sy_secure_free(b64, strlen(b64));
	} else {
		ictx_backend_sendf(c, "%s AUTHENTICATE %s\r\n", st->tag, sasl_mech_name(m));
		st->replay_b64 = b64;
	}
}

static void send_id(sy_ictx *c)
{
	sy_fwd_info f;
	ictx_fwd_info(c, &f);
	ictx_backend_sendf(c,
	                   "sy4 ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%s\" "
	                   "\"x-connected-ip\" \"%s\" \"x-connected-port\" \"%s\" \"x-proxy-ttl\" "
	                   "\"%s\" \"x-session-id\" \"%s\" \"x-client-transport\" \"%s\")\r\n",
	                   f.client_ip, f.client_port, f.local_ip, f.local_port, f.ttl, f.session,
	                   f.transport);
}

/* Decides what the handshake does next, given what the backend advertised. */
static void next_step(sy_ictx *c)
{
	imap_state *st = ST(c);
	if (ictx_backend_tls_mode(c) == SY_TLS_STARTTLS && !c->backend_tls) {
		if (!st->b_starttls) {
			ictx_tempfail(c, "backend does not advertise STARTTLS");
			return;
		}
		st->bst = IB_STARTTLS;
		ictx_backend_send(c, "sy2 STARTTLS\r\n", 14);
		return;
	}
	if (ictx_forwarding(c) == SY_FWD_XCLIENT && st->b_id && !st->id_sent) {
		st->id_sent = true;
		st->bst = IB_ID;
		send_id(c);
		return;
	}
	send_replay(c);
}

static bool tagged(const char *line, size_t len, const char *tag, const char **rest)
{
	size_t t = strlen(tag);
	if (len <= t || strncmp(line, tag, t) != 0 || line[t] != ' ')
		return false;
	*rest = line + t + 1;
	return true;
}

static bool starts_ci(const char *s, const char *word)
{
	return strncasecmp(s, word, strlen(word)) == 0;
}

static int imap_backend_line(sy_ictx *c, char *line, size_t len)
{
	imap_state *st = ST(c);
	const char *rest;
	switch (st->bst) {
	case IB_GREETING: {
		if (!starts_ci(line, "* OK"))
			return -1;
		const char *cap = strstr(line, "[CAPABILITY ");
		if (cap) {
			parse_backend_caps(st, cap + 12, len - (size_t)(cap + 12 - line));
			next_step(c);
		} else {
			st->bst = IB_CAPA;
			ictx_backend_send(c, "sy1 CAPABILITY\r\n", 16);
		}
		return 0;
	}
	case IB_CAPA:
		if (starts_ci(line, "* CAPABILITY ")) {
			parse_backend_caps(st, line + 13, len - 13);
			return 0;
		}
		if (tagged(line, len, "sy1", &rest)) {
			if (!starts_ci(rest, "OK"))
				return -1;
			next_step(c);
		}
		return 0;
	case IB_STARTTLS:
		if (tagged(line, len, "sy2", &rest)) {
			if (!starts_ci(rest, "OK"))
				return -1;
			ictx_backend_starttls(c);
		}
		return 0;
	case IB_ID:
		/* Any tagged answer ends it; a backend that refuses ID still gets
		 * the login, just without the client's address. */
		if (tagged(line, len, "sy4", &rest))
			next_step(c);
		return 0;
	case IB_AUTH:
		if (line[0] == '+') {
			if (!st->response_sent && st->replay_b64) {
				ictx_backend_sendf(c, "%s\r\n",
				                   *st->replay_b64 ? st->replay_b64 : "=");
				sy_secure_free(st->replay_b64, strlen(st->replay_b64));
				st->replay_b64 = NULL;
				st->response_sent = true;
			} else if (st->mech == SY_MECH_OAUTHBEARER || st->mech == SY_MECH_XOAUTH2) {
				/* An error challenge: finish the exchange as the
				 * mechanism requires, the tagged NO follows. */
				ictx_backend_send(c, "AQ==\r\n", 6);
			} else {
				ictx_backend_send(c, "*\r\n", 3);
			}
			return 0;
		}
		if (tagged(line, len, st->tag, &rest)) {
			if (st->replay_b64) {
				sy_secure_free(st->replay_b64, strlen(st->replay_b64));
				st->replay_b64 = NULL;
			}
			char buf[SY_LINE_MAX + 3];
			memcpy(buf, line, len);
			memcpy(buf + len, "\r\n", 2);
			if (starts_ci(rest, "OK")) {
				st->cst = IMAP_CMD;
				ictx_auth_ok(c, buf, len + 2);
			} else {
				char generic[sizeof(st->tag) + 64];
				snprintf(generic, sizeof(generic), GENERIC_FAIL_FMT, st->tag);
				st->cst = IMAP_CMD;
				ictx_auth_failed(c, buf, len + 2, generic);
			}
		}
		return 0; /* untagged data during login is not the client's business */
	}
	return -1;
}

static void imap_backend_tls_done(sy_ictx *c)
{
	imap_state *st = ST(c);
	st->bst = IB_CAPA;
	ictx_backend_send(c, "sy1 CAPABILITY\r\n", 16);
}

static int imap_init(sy_ictx *c)
{
	c->p = calloc(1, sizeof(imap_state));
	return c->p ? 0 : -1;
}

static void imap_release(sy_ictx *c)
{
	imap_state *st = ST(c);
	if (!st)
		return;
	if (st->login_user)
		sy_secure_free(st->login_user, strlen(st->login_user));
	if (st->replay_b64)
		sy_secure_free(st->replay_b64, strlen(st->replay_b64));
	free(st);
	c->p = NULL;
}

const sy_proto_ops sy_imap_ops = {
    .proto = SY_PROTO_IMAP,
    .name = "imap",
    .init = imap_init,
    .release = imap_release,
    .greet = imap_greet,
    .client_line = imap_client_line,
    .client_tls_done = imap_client_tls_done,
    .line_too_long = imap_line_too_long,
    .backend_connected = imap_backend_connected,
    .backend_line = imap_backend_line,
    .backend_tls_done = imap_backend_tls_done,
    .tempfail = imap_tempfail,
    .too_many_failures = imap_too_many,
    .shutdown_notice = imap_shutdown_notice,
    .timeout_notice = imap_timeout_notice,
};
