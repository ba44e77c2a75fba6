/*
 * ManageSieve (RFC 5804) before authentication, and the backend handshake
 * and replay.
 *
 * Client side: the capability block as greeting (and again after STARTTLS,
 * RFC 5804 section 2.2), CAPABILITY, NOOP (with the optional TAG echo),
 * LOGOUT, STARTTLS and AUTHENTICATE with or without an initial response;
 * continuations are strings both ways (the server sends a quoted base64
 * challenge, the client answers with a quoted string or a literal, "*"
 * aborts). Arguments are quoted strings or literals, {n+} or {n}: RFC 5804
 * defines no continuation for a synchronizing literal, so both forms are read
 * the same way, without a go-ahead (which is also what Dovecot does).
 * Everything else is refused with NO until login.
 *
 * Backend side: the capability block up to its OK line, STARTTLS when the leg
 * requires it (the backend re-sends its capabilities unsolicited after the
 * handshake), XCLIENT with the client's address for xclient forwarding when
 * the block lists it (ManageSieve's XCLIENT capability names no attributes,
 * so all of ADDR PORT DESTADDR DESTPORT SESSION TTL CLIENT-TRANSPORT go; a
 * refusal is logged and the login goes on without them), then AUTHENTICATE "<MECH>" "<b64>" (a
 * literal when the response is longer than the 1024 octets a quoted string may hold). The backend's
 * OK or NO goes to the client verbatim: both sides speak the same protocol and ManageSieve replies
 * carry no tag.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/interactive.h"
#include "switchyard/log.h"
#include "switchyard/tokens.h"

typedef enum sieve_cstate {
	SV_CMD,        /* waiting for a command */
	SV_SASL_CONT,  /* AUTHENTICATE: waiting for the client's response */
	SV_LOGIN_USER, /* AUTHENTICATE "LOGIN": waiting for the user name */
	SV_LOGIN_PASS, /* AUTHENTICATE "LOGIN": waiting for the password */
	SV_WAITING,    /* the login is with the backend */
} sieve_cstate;

static const char *const sieve_cstate_names[] = {"command", "sasl-continuation", "login-user",
                                                 "login-password", "waiting"};

typedef enum sieve_bstate {
	SB_GREETING, /* reading the capability block up to its OK */
	SB_STARTTLS, /* STARTTLS sent, waiting for OK */
	SB_TLS_CAPA, /* reading the capability block re-sent after TLS */
	SB_XCLIENT,  /* XCLIENT sent, waiting for its answer */
	SB_AUTH,     /* AUTHENTICATE sent */
} sieve_bstate;

static const char *const sieve_bstate_names[] = {"greeting", "starttls", "tls-capabilities",
                                                 "xclient", "auth"};

typedef struct sieve_state {
	sieve_cstate cst;
	sieve_bstate bst;
	sy_mech mech;        /* as the client chose it */
	sy_mech replay_mech; /* as replayed to the backend */
	char *login_user;    /* AUTHENTICATE "LOGIN" between its two steps */
	/* What the backend advertised in its last capability block. */
	bool b_starttls, b_xclient;
	bool xclient_sent;
	unsigned challenges; /* backend challenges answered during replay */
	/* A backend response being assembled because it carries a literal
	 * (the framework hands over lines; a literal may span several). */
	char *resp;
	size_t resp_len;
	size_t lit_left; /* literal bytes still to come */
	bool in_literal;
} sieve_state;

#define ST(c) ((sieve_state *)(c)->p)

/* RFC 5804 section 4: a quoted string holds at most 1024 octets. */
#define QUOTED_MAX 1024

static const char GENERIC_FAIL[] = "NO \"Authentication failed.\"\r\n";
static const char ENCRYPT_NEEDED[] =
    "NO (ENCRYPT-NEEDED) \"Plaintext authentication disallowed on non-secure connections.\"\r\n";
static const char TOO_MANY[] = "BYE \"Too many invalid authentication attempts.\"\r\n";

/* ---- output ---------------------------------------------------------------------- */

/* A growable buffer for replies whose size depends on the configuration. */
typedef struct strbuf {
	char *p;
	size_t len, cap;
	bool oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_adds(strbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* Appends a ManageSieve string: quoted (with \ escapes) when it fits the
 * quoted form, else a server-to-client literal {n}. */
static void sb_string(strbuf *b, const char *s, size_t n)
{
	bool quotable = n <= QUOTED_MAX;
	for (size_t i = 0; i < n && quotable; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			quotable = false;
	if (!quotable) {
		char hdr[32];
		int w = snprintf(hdr, sizeof(hdr), "{%zu}\r\n", n);
		sb_add(b, hdr, (size_t)w);
		sb_add(b, s, n);
		return;
	}
	sb_add(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			sb_add(b, "\\", 1);
		sb_add(b, s + i, 1);
	}
	sb_add(b, "\"", 1);
}

static void sb_send(sy_ictx *c, strbuf *b)
{
	if (!b->oom && b->len > 0)
		ictx_send(c, b->p, b->len);
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Sends `<word> "<text>"` (text quoted as a string). */
static void reply(sy_ictx *c, const char *word, const char *text)
{
	strbuf b = {0};
	sb_adds(&b, word);
	sb_add(&b, " ", 1);
	sb_string(&b, text, strlen(text));
	sb_add(&b, "\r\n", 2);
	sb_send(c, &b);
}

/* ---- capabilities ---------------------------------------------------------------- */

static void build_caps(sy_ictx *c, strbuf *b)
{
	const sy_caps_config *caps = c->caps;
	const char *impl = caps->implementation ? caps->implementation : "Switchyard";
	sb_adds(b, "\"IMPLEMENTATION\" ");
	sb_string(b, impl, strlen(impl));
	sb_add(b, "\r\n", 2);

	strbuf list = {0};
	sb_add(&list, "", 0);
	for (size_t i = 0; i < caps->sieve.len; i++) {
		if (i > 0)
			sb_add(&list, " ", 1);
		sb_adds(&list, caps->sieve.items[i]);
	}
	sb_adds(b, "\"SIEVE\" ");
	sb_string(b, list.p ? list.p : "", list.len);
	sb_add(b, "\r\n", 2);

	/* LOGIN is accepted but never advertised; PLAIN only where cleartext
	 * authentication is allowed. With nothing left the list is "". */
	list.len = 0;
	sy_mech mechs[SY_MECH_UNKNOWN];
	size_t nmechs = ictx_mechs_advertised(c, mechs);
	for (size_t i = 0; i < nmechs; i++) {
		if (list.len > 0)
			sb_add(&list, " ", 1);
		sb_adds(&list, sasl_mech_name(mechs[i]));
	}
	sb_adds(b, "\"SASL\" ");
	sb_string(b, list.p ? list.p : "", list.len);
	sb_add(b, "\r\n", 2);
	free(list.p);
	if (list.oom)
		b->oom = true;

	if (ictx_starttls_available(c))
		sb_adds(b, "\"STARTTLS\"\r\n");
	sb_adds(b, "\"VERSION\" \"1.0\"\r\n");
}

/* The capability block followed by OK with `text`. */
static void send_caps_ok(sy_ictx *c, const char *text)
{
	strbuf b = {0};
	build_caps(c, &b);
	if (text && *text) {
		sb_adds(&b, "OK ");
		sb_string(&b, text, strlen(text));
		sb_add(&b, "\r\n", 2);
	} else {
		sb_adds(&b, "OK\r\n");
	}
	sb_send(c, &b);
}

static void sieve_greet(sy_ictx *c)
{
	send_caps_ok(c, c->caps->banner ? c->caps->banner : "Switchyard ManageSieve ready.");
}

/* ---- tokenizer -------------------------------------------------------------------------- */

static bool at_end(const sy_cursor *cu)
{
	return cu->p >= cu->end;
}

/* A quoted string or a literal (folded into the buffer by the framework on
 * the client leg, assembled by this module on the backend leg). */
static bool read_string(sy_cursor *cu, char **s, size_t *len)
{
	return tok_string(cu, s, len, SY_LINE_MAX);
}

/* ---- commands ---------------------------------------------------------------------------- */

static void drop_login_user(sieve_state *st)
{
	if (st->login_user) {
		sy_secure_free(st->login_user, strlen(st->login_user));
		st->login_user = NULL;
	}
}

/* A refused SASL exchange: the NO, back to commands, counted. */
static void sasl_refused(sy_ictx *c, const char *text)
{
	sieve_state *st = ST(c);
	drop_login_user(st);
	st->cst = SV_CMD;
	reply(c, "NO", text);
	ictx_count_failure(c);
}

/* A complete SASL response from the client (base64 text, already unquoted). */
static void sasl_response(sy_ictx *c, const char *b64, size_t len)
{
	sieve_state *st = ST(c);
	uint8_t *msg = NULL;
	size_t mlen = 0;
	if (sy_b64_decode(b64, len, &msg, &mlen) != 0) {
		sasl_refused(c, "Invalid base64 data in SASL response.");
		return;
	}
	sy_credentials cr = {0};
	const char *err = NULL;
	if (st->mech == SY_MECH_LOGIN) {
		if (memchr(msg, '\0', mlen)) {
			sy_secure_free(msg, mlen);
			sasl_refused(c, "Authentication failed.");
			return;
		}
		if (st->cst == SV_LOGIN_USER) {
			drop_login_user(st);
			st->login_user = (char *)msg; /* NUL-terminated by the decoder */
			st->cst = SV_LOGIN_PASS;
			ictx_send(c, "\"UGFzc3dvcmQ6\"\r\n", 16); /* "Password:" */
			return;
		}
		int r = credentials_from_login(&cr, st->login_user, strlen(st->login_user),
		                               (const char *)msg, mlen);
		drop_login_user(st);
		sy_secure_free(msg, mlen);
		if (r != 0 || !cr.authcid || !*cr.authcid || !cr.password || !*cr.password) {
			credentials_wipe(&cr);
			sasl_refused(c, "Authentication failed.");
			return;
		}
	} else {
		int r = sasl_decode(st->mech, msg, mlen, &cr, &err);
		sy_secure_free(msg, mlen);
		if (r != 0) {
			credentials_wipe(&cr);
			char text[128];
			snprintf(text, sizeof(text), "%s.", err ? err : "Malformed SASL response");
			if (text[0] >= 'a' && text[0] <= 'z')
				text[0] = (char)(text[0] - 'a' + 'A');
			sasl_refused(c, text);
			return;
		}
	}
	st->cst = SV_WAITING;
	ictx_authenticate(c, &cr);
}

/* The client's answer to a challenge: a string, "*" to abort. */
static void sasl_continuation(sy_ictx *c, char *line, size_t len)
{
	sieve_state *st = ST(c);
	sy_cursor cu = {line, line + len};
	char *s;
	size_t slen;
	if (!read_string(&cu, &s, &slen) || !at_end(&cu)) {
		sasl_refused(c, "Invalid SASL response.");
		return;
	}
	if (slen == 1 && s[0] == '*') {
		drop_login_user(st);
		st->cst = SV_CMD;
		reply(c, "NO", "Authentication aborted.");
		return;
	}
	sasl_response(c, s, slen);
}

static void cmd_authenticate(sy_ictx *c, sy_cursor *cu)
{
	sieve_state *st = ST(c);
	char *m, *ir = NULL;
	size_t mlen, irlen = 0;
	/* The mechanism is a string; a bare atom is tolerated. */
	if (!tok_sp(cu) || !(read_string(cu, &m, &mlen) || tok_atom(cu, &m, &mlen))) {
		reply(c, "NO", "Missing SASL mechanism.");
		return;
	}
	bool has_ir = false;
	if (tok_sp(cu)) {
		if (!read_string(cu, &ir, &irlen)) {
			reply(c, "NO", "Invalid AUTHENTICATE arguments.");
			return;
		}
		has_ir = true;
	}
	if (!at_end(cu)) {
		reply(c, "NO", "Invalid AUTHENTICATE arguments.");
		return;
	}
	sy_mech mech = sasl_mech_parse(m, mlen);
	if (mech == SY_MECH_UNKNOWN || !ictx_mech_accepted(c, mech)) {
		reply(c, "NO", "Unsupported authentication mechanism.");
		return;
	}
	if ((mech == SY_MECH_PLAIN || mech == SY_MECH_LOGIN) && !ictx_plaintext_auth_allowed(c)) {
		ictx_send(c, ENCRYPT_NEEDED, sizeof(ENCRYPT_NEEDED) - 1);
		return;
	}
	st->mech = mech;
	if (mech == SY_MECH_LOGIN) {
		st->cst = SV_LOGIN_USER;
		if (!has_ir || irlen == 0) {
			ictx_send(c, "\"VXNlcm5hbWU6\"\r\n", 16); /* "Username:" */
			return;
		}
		sasl_response(c, ir, irlen);
		return;
	}
	if (has_ir) {
		st->cst = SV_SASL_CONT;
		sasl_response(c, ir, irlen);
		return;
	}
	st->cst = SV_SASL_CONT;
	ictx_send(c, "\"\"\r\n", 4); /* an empty challenge */
}

static void cmd_noop(sy_ictx *c, sy_cursor *cu)
{
	/* RFC 5804 section 2.13: an optional tag string is echoed back. */
	if (at_end(cu)) {
		reply(c, "OK", "NOOP completed.");
		return;
	}
	char *tag;
	size_t tlen;
	if (!tok_sp(cu) || !read_string(cu, &tag, &tlen) || !at_end(cu) ||
	    memchr(tag, '\0', tlen)) {
		reply(c, "NO", "Invalid NOOP arguments.");
		return;
	}
	strbuf b = {0};
	sb_adds(&b, "OK (TAG ");
	sb_string(&b, tag, tlen);
	sb_adds(&b, ") \"NOOP completed.\"\r\n");
	sb_send(c, &b);
}

static void run_command(sy_ictx *c, char *line, size_t len)
{
	sy_cursor cu = {line, line + len};
	char *cmd;
	size_t clen;
	if (!tok_atom(&cu, &cmd, &clen)) {
		reply(c, "NO", "Authenticate first.");
		return;
	}
#define IS(name) (clen == sizeof(name) - 1 && strncasecmp(cmd, name, clen) == 0)
	if (IS("CAPABILITY")) {
		if (!at_end(&cu))
			reply(c, "NO", "CAPABILITY takes no arguments.");
		else
			send_caps_ok(c, "Capability completed.");
	} else if (IS("NOOP")) {
		cmd_noop(c, &cu);
	} else if (IS("LOGOUT")) {
		reply(c, "OK", "Logout completed.");
		ictx_close_after_flush(c);
	} else if (IS("STARTTLS")) {
		if (!ictx_starttls_available(c)) {
			reply(c, "NO", "STARTTLS is not available.");
		} else if (!at_end(&cu)) {
			reply(c, "NO", "STARTTLS takes no arguments.");
		} else {
			reply(c, "OK", "Begin TLS negotiation now.");
			ictx_client_starttls(c);
		}
	} else if (IS("AUTHENTICATE")) {
		cmd_authenticate(c, &cu);
	} else {
		reply(c, "NO", "Authenticate first.");
	}
#undef IS
}

/* One complete client command or continuation answer. */
static void dispatch_client(sy_ictx *c, char *line, size_t len)
{
	sieve_state *st = ST(c);
	if (st->cst == SV_SASL_CONT || st->cst == SV_LOGIN_USER || st->cst == SV_LOGIN_PASS)
		sasl_continuation(c, line, len);
	else
		run_command(c, line, len);
}

static int sieve_client_line(sy_ictx *c, char *line, size_t len)
{
	sieve_state *st = ST(c);
	if (st->cst == SV_WAITING)
		return SY_LINE_OK; /* cannot happen: the reader is paused */

	/* A literal announced at the end of the current segment: ask the
	 * framework for its bytes. No go-ahead: ManageSieve has none. */
	bool plus;
	size_t brace;
	long lit = tok_trailing_literal(line + c->seg_start, len - c->seg_start, SY_LINE_MAX, &plus,
	                                &brace);
	if (lit >= 0) {
		if ((size_t)lit + len + 2 >= SY_LINE_MAX) {
			reply(c, "BYE", "Literal too large.");
			return -1;
		}
		return SY_LINE_LITERAL(lit);
	}
	dispatch_client(c, line, len);
	return SY_LINE_OK;
}

static void sieve_client_tls_done(sy_ictx *c)
{
	/* RFC 5804 section 2.2: after the handshake the server re-sends its
	 * capabilities (now without STARTTLS), as if the client had asked. */
	send_caps_ok(c, "TLS negotiation successful.");
}

static void sieve_line_too_long(sy_ictx *c)
{
	reply(c, "BYE", "Command line too long.");
}

static bool sieve_tempfail(sy_ictx *c, const char *text)
{
	sieve_state *st = ST(c);
	drop_login_user(st);
	st->cst = SV_CMD;
	reply(c, "NO (TRYLATER)", text);
	return false;
}

static void sieve_too_many(sy_ictx *c)
{
	ictx_send(c, TOO_MANY, sizeof(TOO_MANY) - 1);
}

static void sieve_timeout_notice(sy_ictx *c)
{
	ictx_send_lit(c, "BYE \"Disconnected for inactivity.\"\r\n");
}

static void sieve_shutdown_notice(sy_ictx *c)
{
	reply(c, "BYE", "Server shutting down.");
}

/* ---- backend -------------------------------------------------------------------------------- */

typedef enum resp_kind {
	RESP_OK,
	RESP_NO,
	RESP_BYE,
	RESP_STRING, /* a capability line or a SASL challenge */
	RESP_OTHER,
} resp_kind;

static resp_kind classify(const char *r, size_t n)
{
	if (n > 0 && (r[0] == '"' || r[0] == '{'))
		return RESP_STRING;
	size_t w = 0;
	while (w < n && r[w] != ' ')
		w++;
	if (w == 2 && strncasecmp(r, "OK", 2) == 0)
		return RESP_OK;
	if (w == 2 && strncasecmp(r, "NO", 2) == 0)
		return RESP_NO;
	if (w == 3 && strncasecmp(r, "BYE", 3) == 0)
		return RESP_BYE;
	return RESP_OTHER;
}

static bool word_is(const char *s, size_t n, const char *word)
{
	return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

/* One capability line: "NAME" [SP "value"]. Decoded in place. */
static bool parse_capability(sieve_state *st, char *r, size_t n)
{
	sy_cursor cu = {r, r + n};
	char *name, *value;
	size_t nlen, vlen;
	if (!read_string(&cu, &name, &nlen))
		return false;
	if (tok_sp(&cu) && !read_string(&cu, &value, &vlen))
		return false;
	if (!at_end(&cu))
		return false;
	if (word_is(name, nlen, "STARTTLS"))
		st->b_starttls = true;
	else if (word_is(name, nlen, "XCLIENT"))
		st->b_xclient = true;
	return true;
}

static void send_xclient(sy_ictx *c)
{
	sy_fwd_info f;
	ictx_fwd_info(c, &f);
	ictx_backend_sendf(c,
	                   "XCLIENT ADDR=%s PORT=%s DESTADDR=%s DESTPORT=%s SESSION=%s TTL=%s "
	                   "CLIENT-TRANSPORT=%s\r\n",
	                   f.client_ip, f.client_port, f.local_ip, f.local_port, f.session, f.ttl,
	                   f.transport);
}

static void send_replay(sy_ictx *c)
{
	sieve_state *st = ST(c);
	sy_mech m;
	char *b64 = NULL;
	if (ictx_replay_b64(c, &m, &b64) != 0)
		return;
	st->bst = SB_AUTH;
	st->replay_mech = m;
	st->challenges = 0;
	size_t blen = strlen(b64);
	/* Base64 needs no escaping; past the quoted limit it goes as a literal. */
	if (blen <= QUOTED_MAX)
		ictx_backend_sendf(c, "AUTHENTICATE \"%s\" \"%s\"\r\n", sasl_mech_name(m), b64);
	else
		ictx_backend_sendf(c, "AUTHENTICATE \"%s\" {%zu+}\r\n%s\r\n", sasl_mech_name(m),
		                   blen, b64);
	sy_secure_free(b64, blen);
}

/* Decides what the handshake does next, given what the backend advertised. */
static void next_step(sy_ictx *c)
{
	sieve_state *st = ST(c);
	if (ictx_backend_tls_mode(c) == SY_TLS_STARTTLS && !c->backend_tls) {
		if (!st->b_starttls) {
			ictx_tempfail(c, "backend does not advertise STARTTLS");
			return;
		}
		st->bst = SB_STARTTLS;
		ictx_backend_send(c, "STARTTLS\r\n", 10);
		return;
	}
	if (ictx_forwarding(c) == SY_FWD_XCLIENT && st->b_xclient && !st->xclient_sent) {
		st->xclient_sent = true;
		st->bst = SB_XCLIENT;
		send_xclient(c);
		return;
	}
	send_replay(c);
}

/* The backend's final answer with CRLF, for the client. */
static void final_reply(sy_ictx *c, const char *r, size_t n, bool ok)
{
	sieve_state *st = ST(c);
	char *buf = malloc(n + 3);
	if (!buf) {
		ictx_tempfail(c, "out of memory");
		return;
	}
	memcpy(buf, r, n);
	memcpy(buf + n, "\r\n", 3);
	st->cst = SV_CMD;
	if (ok)
		ictx_auth_ok(c, buf, n + 2);
	else
		ictx_auth_failed(c, buf, n + 2, GENERIC_FAIL);
	free(buf);
}

/* One complete backend response (literals included). */
static int backend_response(sy_ictx *c, char *r, size_t n)
{
	sieve_state *st = ST(c);
	resp_kind k = classify(r, n);
	switch (st->bst) {
	case SB_GREETING:
	case SB_TLS_CAPA:
		if (k == RESP_STRING)
			return parse_capability(st, r, n) ? 0 : -1;
		if (k != RESP_OK)
			return -1;
		next_step(c);
		return 0;
	case SB_STARTTLS:
		if (k != RESP_OK)
			return -1;
		ictx_backend_starttls(c);
		return 0;
	case SB_XCLIENT:
		if (k == RESP_NO) {
			/* A backend that refuses XCLIENT still gets the login,
			 * just without the client's address. */
			sy_log(SY_LOG_WARN, "backend refused XCLIENT", "protocol", "managesieve",
			       "destination", ictx_destination(c) ? ictx_destination(c)->id : "-",
			       NULL);
			next_step(c);
			return 0;
		}
		if (k != RESP_OK)
			return -1;
		next_step(c);
		return 0;
	case SB_AUTH:
		if (k == RESP_STRING) {
			/* A challenge after the full response is an error
			 * challenge: finish the exchange as the mechanism
			 * requires; the NO follows. */
			if (++st->challenges > 3)
				return -1;
			if (st->replay_mech == SY_MECH_OAUTHBEARER ||
			    st->replay_mech == SY_MECH_XOAUTH2)
				ictx_backend_send(c, "\"AQ==\"\r\n", 8);
			else
				ictx_backend_send(c, "\"*\"\r\n", 5);
			return 0;
		}
		if (k == RESP_OK || k == RESP_NO) {
			final_reply(c, r, n, k == RESP_OK);
			return 0;
		}
		return -1;
	}
	return -1;
}

static void drop_resp(sieve_state *st)
{
	free(st->resp);
	st->resp = NULL;
	st->resp_len = st->lit_left = 0;
	st->in_literal = false;
}

static bool resp_add(sieve_state *st, const char *s, size_t n)
{
	if (st->resp_len + n + 2 > SY_LINE_MAX)
		return false;
	memcpy(st->resp + st->resp_len, s, n);
	st->resp_len += n;
	return true;
}

/*
 * The assembler: a response whose line ends with a literal announcement
 * continues with that many raw bytes, which the framework hands over as
 * further lines (CRLF removed, counted back here), and then with the rest of
 * the response up to its CRLF.
 */
static int sieve_backend_line(sy_ictx *c, char *line, size_t len)
{
	sieve_state *st = ST(c);
	char *seg = line;
	size_t seglen = len;
	if (st->in_literal) {
		if (len < st->lit_left) {
			/* The literal goes on past this line. */
			if (!resp_add(st, line, len) || !resp_add(st, "\r\n", 2))
				goto bad;
			st->lit_left = st->lit_left > len + 2 ? st->lit_left - len - 2 : 0;
			return 0;
		}
		if (!resp_add(st, line, st->lit_left))
			goto bad;
		seg = line + st->lit_left;
		seglen = len - st->lit_left;
		if (!resp_add(st, seg, seglen))
			goto bad;
		st->in_literal = false;
		st->lit_left = 0;
	}
	bool plus;
	size_t brace;
	long lit = tok_trailing_literal(seg, seglen, SY_LINE_MAX, &plus, &brace);
	if (lit >= 0) {
		if (lit > SY_LINE_MAX)
			goto bad;
		if (!st->resp) {
			st->resp = malloc(SY_LINE_MAX + 1);
			if (!st->resp)
				goto bad;
			st->resp_len = 0;
			if (!resp_add(st, line, len))
				goto bad;
		}
		if (!resp_add(st, "\r\n", 2))
			goto bad;
		st->in_literal = true;
		st->lit_left = (size_t)lit;
		return 0;
	}
	if (!st->resp)
		return backend_response(c, line, len);
	char *r = st->resp;
	size_t n = st->resp_len;
	st->resp = NULL;
	drop_resp(st);
	int rc = backend_response(c, r, n);
	free(r);
	return rc;
bad:
	drop_resp(st);
	return -1;
}

static int sieve_backend_line_logged(sy_ictx *c, char *line, size_t len)
{
	int rc = sieve_backend_line(c, line, len);
	if (rc != 0 && log_enabled(SY_LOG_DEBUG)) {
		sieve_state *st = ST(c);
		sy_log(SY_LOG_DEBUG, "unexpected reply from managesieve backend", "backend_state",
		       sieve_bstate_names[st->bst], "client_state", sieve_cstate_names[st->cst],
		       NULL);
	}
	return rc;
}

static void sieve_backend_connected(sy_ictx *c)
{
	sieve_state *st = ST(c);
	drop_resp(st);
	st->bst = SB_GREETING;
	st->b_starttls = st->b_xclient = false;
	st->xclient_sent = false;
	st->challenges = 0;
}

static void sieve_backend_tls_done(sy_ictx *c)
{
	sieve_state *st = ST(c);
	/* RFC 5804 section 2.2: the server sends its capabilities again,
	 * unsolicited; they replace what was seen in cleartext. */
	drop_resp(st);
	st->bst = SB_TLS_CAPA;
	st->b_starttls = st->b_xclient = false;
}

static int sieve_init(sy_ictx *c)
{
	c->p = calloc(1, sizeof(sieve_state));
	return c->p ? 0 : -1;
}

static void sieve_release(sy_ictx *c)
{
	sieve_state *st = ST(c);
	if (!st)
		return;
	drop_login_user(st);
	drop_resp(st);
	free(st);
	c->p = NULL;
}

const sy_proto_ops sy_sieve_ops = {
    .proto = SY_PROTO_MANAGESIEVE,
    .name = "managesieve",
    .init = sieve_init,
    .release = sieve_release,
    .greet = sieve_greet,
    .client_line = sieve_client_line,
    .client_tls_done = sieve_client_tls_done,
    .line_too_long = sieve_line_too_long,
    .backend_connected = sieve_backend_connected,
    .backend_line = sieve_backend_line_logged,
    .backend_tls_done = sieve_backend_tls_done,
    .tempfail = sieve_tempfail,
    .too_many_failures = sieve_too_many,
    .shutdown_notice = sieve_shutdown_notice,
    .timeout_notice = sieve_timeout_notice,
};
