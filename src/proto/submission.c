/*
 * Message submission (RFC 6409) before authentication, with SMTP AUTH
 * (RFC 4954) and STARTTLS (RFC 3207), and the backend handshake and replay.
 *
 * Client side: greeting, EHLO/HELO (answered by the proxy from
 * [capabilities.submission]), STARTTLS, AUTH (initial response or
 * continuations; LOGIN accepted though never advertised), RSET, NOOP, QUIT.
 * Mail transaction commands are refused with 530 until login; a BDAT chunk is
 * read and thrown away so that its bytes are never taken for commands.
 *
 * Backend side: greeting (220, possibly multi-line), EHLO with the client's
 * own EHLO name, STARTTLS when the leg requires it (then EHLO again), XCLIENT
 * with only the attributes the backend lists when forwarding is xclient (then
 * EHLO again: Postfix and Dovecot reset the session), then AUTH with the
 * replayed credentials: as an initial response when the command fits SMTP's
 * 512-octet line, else after the backend's empty challenge (RFC 4954 4; a
 * bearer token of several KiB takes that path). The backend's AUTH verdict
 * goes to the client verbatim (or the generic one with hide_auth_errors); on
 * 235 the session becomes a bridge and the client continues with MAIL FROM on
 * the backend.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/interactive.h"
#include "switchyard/log.h"
#include "switchyard/proxy_protocol.h"

typedef enum smtp_cstate {
	SMTP_CMD,        /* waiting for a command */
	SMTP_SASL_CONT,  /* AUTH: waiting for the client's response */
	SMTP_LOGIN_USER, /* AUTH LOGIN: waiting for the user name */
	SMTP_LOGIN_PASS, /* AUTH LOGIN: waiting for the password */
	SMTP_WAITING,    /* the login is with the backend */
} smtp_cstate;

static const char *const smtp_cstate_names[] = {"cmd", "sasl-cont", "login-user", "login-pass",
                                                "waiting"};

typedef enum smtp_bstate {
	SB_GREETING, /* waiting for the backend's 220 */
	SB_EHLO,     /* reading the EHLO reply */
	SB_STARTTLS, /* waiting for the STARTTLS go-ahead */
	SB_XCLIENT,  /* waiting for XCLIENT's new greeting */
	SB_AUTH,     /* waiting for the AUTH verdict */
} smtp_bstate;

static const char *const smtp_bstate_names[] = {"greeting", "ehlo", "starttls", "xclient", "auth"};

/* XCLIENT attributes, in the order they are sent (SPEC.md section 3). */
enum {
	XA_ADDR = 1 << 0,
	XA_PORT = 1 << 1,
	XA_DESTADDR = 1 << 2,
	XA_DESTPORT = 1 << 3,
	XA_SESSION = 1 << 4,
	XA_TTL = 1 << 5,
	XA_CLIENT_TRANSPORT = 1 << 6,
	XA_HELO = 1 << 7,
	XA_PROTO = 1 << 8,
};

static const struct {
	const char *name;
	unsigned bit;
} xclient_attrs[] = {
    {"ADDR", XA_ADDR},
    {"PORT", XA_PORT},
    {"DESTADDR", XA_DESTADDR},
    {"DESTPORT", XA_DESTPORT},
    {"SESSION", XA_SESSION},
    {"TTL", XA_TTL},
    {"CLIENT-TRANSPORT", XA_CLIENT_TRANSPORT},
    {"HELO", XA_HELO},
    {"PROTO", XA_PROTO},
    /* LOGIN and NAME are never sent: the backend learns the user from
     * AUTH, and a DNS name would be the proxy's guess. */
};

/* RFC 5321 4.5.3.1.2: a domain is at most 255 octets. */
#define HELO_MAX 255
/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF. */
#define SMTP_CMD_LINE_MAX 512

typedef struct smtp_state {
	smtp_cstate cst;
	smtp_bstate bst;
	/* The name this proxy greets with (server.hostname, else the address
	 * literal of the local socket). */
	char hostname[HELO_MAX + 1];
	/* The client's EHLO/HELO name since the last reset; "" = unknown. */
	char helo[HELO_MAX + 1];
	bool ehlo_done;   /* the client sent EHLO (not just HELO) since the last reset */
	sy_mech mech;     /* as the client used it */
	char *login_user; /* AUTH LOGIN between its two steps */
	size_t login_user_len;

	/* Backend. */
	int bcode;       /* code of the multi-line reply in progress, 0 = none */
	unsigned blines; /* lines of the reply in progress seen so far */
	bool b_starttls, b_auth, b_xclient;
	unsigned b_xattrs; /* XA_* the backend's XCLIENT keyword lists */
	bool xclient_sent;
	sy_mech replay_mech;
	char *replay_b64;   /* a long response held until the backend's "334 " */
	bool response_sent; /* the SASL response went out */
	char *reply;        /* the AUTH verdict being collected (complete lines with CRLF) */
	size_t reply_len;
} smtp_state;

#define ST(c) ((smtp_state *)(c)->p)

/* Sends a string literal to the client. */
#define SEND(c, lit) ictx_send((c), (lit), sizeof(lit) - 1)

static const char GENERIC_FAIL[] = "535 5.7.8 Authentication failed.\r\n";

/* ---- helpers ---------------------------------------------------------------------- */

static void set_hostname(sy_ictx *c)
{
	smtp_state *st = ST(c);
	const char *h = c->s->snap->cfg->server.hostname;
	if (h && *h) {
		snprintf(st->hostname, sizeof(st->hostname), "%s", h);
		return;
	}
	/* RFC 5321 4.1.3: without a name, the greeting and EHLO carry an
	 * address literal. */
	char ip[64];
	sy_sockaddr_str((const struct sockaddr *)&c->s->local, ip, sizeof(ip), false);
	snprintf(st->hostname, sizeof(st->hostname), strchr(ip, ':') ? "[IPv6:%s]" : "[%s]", ip);
}

static const char *backend_helo(smtp_state *st)
{
	return st->helo[0] ? st->helo : st->hostname;
}

/* An EHLO/HELO argument the proxy accepts: printable ASCII without spaces. */
static bool valid_helo(const char *s, size_t len)
{
	if (len == 0 || len > HELO_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* A name safe to repeat to the backend in EHLO and XCLIENT HELO=: a domain
 * (letters, digits, '-', '.', and '_' which Windows hosts use) or an address
 * literal (RFC 5321 4.1.3). Anything odder is accepted from the client but
 * not passed on, so that a strange name cannot make the backend refuse the
 * handshake. */
static bool forwardable_helo(const char *s, size_t len)
{
	if (s[0] == '[') {
		if (len < 3 || s[len - 1] != ']')
			return false;
		for (size_t i = 1; i + 1 < len; i++)
			if (s[i] == '[' || s[i] == ']' || s[i] == '\\')
				return false;
		return true;
	}
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("-._", s[i]))
			return false;
	return true;
}

static void forget_login_user(smtp_state *st)
{
	if (st->login_user) {
		sy_secure_free(st->login_user, st->login_user_len);
		st->login_user = NULL;
		st->login_user_len = 0;
	}
}

static void forget_reply(smtp_state *st)
{
	free(st->reply);
	st->reply = NULL;
	st->reply_len = 0;
}

static void forget_replay(smtp_state *st)
{
	if (st->replay_b64) {
		sy_secure_free(st->replay_b64, strlen(st->replay_b64));
		st->replay_b64 = NULL;
	}
}

/* ---- greeting and EHLO ------------------------------------------------------------- */

static void smtp_greet(sy_ictx *c)
{
	smtp_state *st = ST(c);
	const char *banner = c->caps->banner ? c->caps->banner : "";
	ictx_sendf(c, "220 %s%s%s\r\n", st->hostname, *banner ? " " : "", banner);
}

static bool is_keyword(const char *item, const char *kw)
{
	size_t n = strlen(kw);
	return strncasecmp(item, kw, n) == 0 && (item[n] == '\0' || item[n] == ' ');
}

static void reply_ehlo(sy_ictx *c)
{
	smtp_state *st = ST(c);
	/* Collected first so that the last line can be marked "250 ". */
	const char *lines[64];
	size_t n = 0;
	char auth[256];
	for (size_t i = 0; i < c->caps->ehlo.len && n < 60; i++) {
		const char *kw = c->caps->ehlo.items[i];
		/* AUTH and STARTTLS depend on the connection's state: they are
		 * computed below, never taken from the list. */
		if (!*kw || is_keyword(kw, "AUTH") || is_keyword(kw, "STARTTLS"))
			continue;
		lines[n++] = kw;
	}
	size_t alen = (size_t)snprintf(auth, sizeof(auth), "AUTH");
	bool any = false;
	sy_mech mechs[SY_MECH_UNKNOWN];
	size_t nmechs = ictx_mechs_advertised(c, mechs);
	for (size_t i = 0; i < nmechs; i++) {
		const char *name = sasl_mech_name(mechs[i]);
		if (alen + 1 + strlen(name) >= sizeof(auth))
			break;
		alen += (size_t)snprintf(auth + alen, sizeof(auth) - alen, " %s", name);
		any = true;
	}
	if (any)
		lines[n++] = auth;
	if (ictx_starttls_available(c))
		lines[n++] = "STARTTLS";
	ictx_sendf(c, "250%c%s\r\n", n ? '-' : ' ', st->hostname);
	for (size_t i = 0; i < n; i++)
		ictx_sendf(c, "250%c%s\r\n", i + 1 < n ? '-' : ' ', lines[i]);
}

/* ---- authentication ------------------------------------------------------------------ */

/* A complete SASL response from the client (base64 text). */
static void sasl_response(sy_ictx *c, const char *b64, size_t len)
{
	smtp_state *st = ST(c);
	if (len == 1 && b64[0] == '*') {
		/* RFC 4954 4: the client cancelled the exchange. */
		SEND(c, "501 5.7.0 Authentication aborted\r\n");
		st->cst = SMTP_CMD;
		forget_login_user(st);
		return;
	}
	uint8_t *msg = NULL;
	size_t mlen = 0;
	if (sy_b64_decode(b64, len, &msg, &mlen) != 0) {
		SEND(c, "501 5.5.2 Invalid base64 data\r\n");
		st->cst = SMTP_CMD;
		forget_login_user(st);
		ictx_count_failure(c);
		return;
	}
	sy_credentials cr = {0};
	if (st->mech == SY_MECH_LOGIN) {
		if (st->cst == SMTP_LOGIN_USER) {
			st->login_user = (char *)msg;
			st->login_user_len = mlen;
			st->cst = SMTP_LOGIN_PASS;
			SEND(c, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
			return;
		}
		int r = credentials_from_login(&cr, st->login_user, st->login_user_len,
		                               (const char *)msg, mlen);
		forget_login_user(st);
		sy_secure_free(msg, mlen);
		if (r != 0) {
			/* Empty user or password, or a NUL inside one. */
			credentials_wipe(&cr);
			ictx_send(c, GENERIC_FAIL, sizeof(GENERIC_FAIL) - 1);
			st->cst = SMTP_CMD;
			ictx_count_failure(c);
			return;
		}
	} else {
		const char *err = NULL;
		int r = sasl_decode(st->mech, msg, mlen, &cr, &err);
		sy_secure_free(msg, mlen);
		if (r != 0) {
			/* RFC 4954: 501 is for base64 that cannot be decoded;
			 * a decoded message that is not valid credentials is
			 * a failed authentication (clients ask the user again). */
			credentials_wipe(&cr);
			if (!err || !*err)
				err = "malformed SASL response";
			ictx_sendf(c, "535 5.7.8 %c%s\r\n", toupper((unsigned char)err[0]),
			           err + 1);
			st->cst = SMTP_CMD;
			ictx_count_failure(c);
			return;
		}
	}
	st->cst = SMTP_WAITING;
	ictx_authenticate(c, &cr);
}

static void cmd_auth(sy_ictx *c, char *args, size_t alen)
{
	smtp_state *st = ST(c);
	if (!st->ehlo_done) {
		/* AUTH is an ESMTP extension: it exists only after EHLO. */
		SEND(c, "503 5.5.1 EHLO first\r\n");
		return;
	}
	size_t mlen = 0;
	while (mlen < alen && args[mlen] != ' ')
		mlen++;
	if (mlen == 0) {
		SEND(c, "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
		return;
	}
	sy_mech mech = sasl_mech_parse(args, mlen);
	if (mech == SY_MECH_UNKNOWN || !ictx_mech_accepted(c, mech)) {
		SEND(c, "504 5.5.4 Unrecognized authentication type\r\n");
		return;
	}
	if ((mech == SY_MECH_PLAIN || mech == SY_MECH_LOGIN) && !ictx_plaintext_auth_allowed(c)) {
		SEND(c, "538 5.7.11 Encryption required for requested authentication "
		        "mechanism\r\n");
		return;
	}
	st->mech = mech;
	if (mlen < alen) {
		/* RFC 4954 4: an initial response; "=" is the empty one. */
		char *ir = args + mlen + 1;
		size_t irlen = alen - mlen - 1;
		if (irlen == 1 && ir[0] == '=')
			irlen = 0;
		if (mech == SY_MECH_LOGIN) {
			st->cst = SMTP_LOGIN_USER;
			if (irlen == 0) {
				SEND(c, "334 VXNlcm5hbWU6\r\n");
				return;
			}
		}
		sasl_response(c, ir, irlen);
		return;
	}
	if (mech == SY_MECH_LOGIN) {
		st->cst = SMTP_LOGIN_USER;
		SEND(c, "334 VXNlcm5hbWU6\r\n"); /* "Username:" */
		return;
	}
	st->cst = SMTP_SASL_CONT;
	SEND(c, "334 \r\n");
}

/* ---- commands ------------------------------------------------------------------------- */

static void cmd_helo(sy_ictx *c, bool ehlo, const char *args, size_t alen)
{
	smtp_state *st = ST(c);
	if (!valid_helo(args, alen)) {
		ictx_sendf(c, "501 5.5.4 Syntax: %s hostname\r\n", ehlo ? "EHLO" : "HELO");
		return;
	}
	if (forwardable_helo(args, alen)) {
		memcpy(st->helo, args, alen);
		st->helo[alen] = '\0';
	} else {
		st->helo[0] = '\0';
	}
	/* HELO starts a plain SMTP session, without extensions (RFC 5321 4.1.1.1). */
	st->ehlo_done = ehlo;
	if (ehlo)
		reply_ehlo(c);
	else
		ictx_sendf(c, "250 %s\r\n", st->hostname);
}

static void cmd_starttls(sy_ictx *c, size_t alen)
{
	smtp_state *st = ST(c);
	if (alen > 0) {
		SEND(c, "501 5.5.4 Syntax: STARTTLS\r\n");
	} else if (c->client_tls) {
		SEND(c, "503 5.5.1 TLS already active\r\n");
	} else if (!ictx_starttls_available(c)) {
		SEND(c, "502 5.5.1 STARTTLS not available\r\n");
	} else {
		SEND(c, "220 2.0.0 Ready to start TLS\r\n");
		/* RFC 3207 4.2: everything learned before TLS is forgotten; the
		 * client must EHLO again. */
		st->helo[0] = '\0';
		st->ehlo_done = false;
		ictx_client_starttls(c);
	}
}

/*
 * BDAT before login: refused like the other transaction commands, but its
 * chunk is binary data that must not be read as commands. Returns the chunk
 * size as SY_LINE_LITERAL(n) for the framework to read and skip (it then
 * calls client_line again with the chunk folded in and the next command
 * after it), 0 for none, or -1
 * when the chunk cannot be skipped within the line limit.
 */
static int cmd_bdat(sy_ictx *c, const char *args, size_t alen, size_t linelen)
{
	SEND(c, "530 5.7.0 Authentication required\r\n");
	size_t n = 0, i = 0;
	while (i < alen && isdigit((unsigned char)args[i])) {
		n = n * 10 + (size_t)(args[i] - '0');
		if (n > SY_LINE_MAX)
			return -1;
		i++;
	}
	if (i == 0 || n == 0)
		return 0;
	if (n + linelen + 2 >= SY_LINE_MAX)
		return -1;
	return SY_LINE_LITERAL(n);
}

static int smtp_client_line(sy_ictx *c, char *line, size_t len)
{
	smtp_state *st = ST(c);
	if (st->cst == SMTP_SASL_CONT || st->cst == SMTP_LOGIN_USER || st->cst == SMTP_LOGIN_PASS) {
		sasl_response(c, line, len);
		return SY_LINE_OK;
	}
	if (st->cst == SMTP_WAITING)
		return SY_LINE_OK; /* cannot happen: the reader is paused */

	/* After a skipped BDAT chunk the command starts behind it. */
	char *cmd = line + c->seg_start;
	size_t clen = len - c->seg_start;
	size_t vlen = 0;
	while (vlen < clen && isalpha((unsigned char)cmd[vlen]))
		vlen++;
	if (vlen == 0 || (vlen < clen && cmd[vlen] != ' ')) {
		SEND(c, "500 5.5.2 Syntax error, command unrecognized\r\n");
		return SY_LINE_OK;
	}
	char *args = cmd + vlen;
	size_t alen = clen - vlen;
	while (alen > 0 && *args == ' ') {
		args++;
		alen--;
	}
	while (alen > 0 && args[alen - 1] == ' ')
		alen--;
#define IS(name) (vlen == sizeof(name) - 1 && strncasecmp(cmd, name, vlen) == 0)
	if (IS("EHLO")) {
		cmd_helo(c, true, args, alen);
	} else if (IS("HELO")) {
		cmd_helo(c, false, args, alen);
	} else if (IS("AUTH")) {
		cmd_auth(c, args, alen);
	} else if (IS("STARTTLS")) {
		cmd_starttls(c, alen);
	} else if (IS("BDAT")) {
		return cmd_bdat(c, args, alen, len);
	} else if (IS("MAIL") || IS("RCPT") || IS("DATA") || IS("VRFY") || IS("EXPN") ||
	           IS("ETRN") || IS("BURL")) {
		SEND(c, "530 5.7.0 Authentication required\r\n");
	} else if (IS("RSET") || IS("NOOP")) {
		SEND(c, "250 2.0.0 OK\r\n");
	} else if (IS("QUIT")) {
		SEND(c, "221 2.0.0 Bye\r\n");
		ictx_close_after_flush(c);
	} else {
		SEND(c, "502 5.5.2 Command not recognized\r\n");
	}
#undef IS
	return SY_LINE_OK;
}

static void smtp_client_tls_done(sy_ictx *c)
{
	(void)c; /* RFC 3207: the client sends EHLO again itself. */
}

static void smtp_line_too_long(sy_ictx *c)
{
	if (ST(c)->cst == SMTP_CMD)
		SEND(c, "500 5.5.2 Line too long\r\n");
	else
		SEND(c, "500 5.5.6 Authentication Exchange line is too long\r\n"); /* RFC 4954 */
}

static bool smtp_tempfail(sy_ictx *c, const char *text)
{
	smtp_state *st = ST(c);
	/* RFC 5321 3.8: 421 closes the transmission channel. */
	ictx_sendf(c, "421 4.3.0 %s\r\n", text);
	st->cst = SMTP_CMD;
	forget_reply(st);
	forget_replay(st);
	return true;
}

static void smtp_too_many(sy_ictx *c)
{
	SEND(c, "421 4.7.0 Too many authentication failures\r\n");
}

static void smtp_timeout_notice(sy_ictx *c)
{
	ictx_send_lit(c, "421 4.4.2 Timeout exceeded, closing connection\r\n");
}

static void smtp_shutdown_notice(sy_ictx *c)
{
	SEND(c, "421 4.3.2 Service shutting down\r\n");
}

/* ---- backend ---------------------------------------------------------------------------- */

/* Splits an SMTP reply line: "NNN-text" (more lines follow), "NNN text" or
 * "NNN" (last line). */
static bool parse_reply(const char *line, size_t len, int *code, bool *last, const char **text)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]))
		return false;
	*code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (len == 3) {
		*last = true;
		*text = line + 3;
		return true;
	}
	if (line[3] != ' ' && line[3] != '-')
		return false;
	*last = line[3] == ' ';
	*text = line + 4;
	return true;
}

/* One line of the backend's EHLO reply after the first (which is its name). */
static void parse_ehlo_keyword(smtp_state *st, const char *text)
{
	if (is_keyword(text, "STARTTLS")) {
		st->b_starttls = true;
	} else if (is_keyword(text, "AUTH")) {
		/* "AUTH" with at least one mechanism: the backend takes logins
		 * now (Dovecot omits it until TLS when plaintext is disabled). */
		if (text[4] == ' ' && text[5] != '\0')
			st->b_auth = true;
	} else if (is_keyword(text, "XCLIENT")) {
		st->b_xclient = true;
		st->b_xattrs = 0;
		const char *p = text + 7;
		while (*p) {
			while (*p == ' ')
				p++;
			const char *t = p;
			while (*p && *p != ' ')
				p++;
			size_t n = (size_t)(p - t);
			for (size_t i = 0; i < sizeof(xclient_attrs) / sizeof(xclient_attrs[0]);
			     i++)
				if (strlen(xclient_attrs[i].name) == n &&
				    strncasecmp(t, xclient_attrs[i].name, n) == 0)
					st->b_xattrs |= xclient_attrs[i].bit;
		}
	}
}

static void send_ehlo(sy_ictx *c)
{
	smtp_state *st = ST(c);
	st->b_starttls = st->b_auth = st->b_xclient = false;
	st->b_xattrs = 0;
	st->bst = SB_EHLO;
	ictx_backend_sendf(c, "EHLO %s\r\n", backend_helo(st));
}

/* xtext (RFC 3461 4): '+', '=' and bytes outside 33..126 as "+HH". */
static size_t xtext(char *out, size_t cap, const char *s)
{
	size_t n = 0;
	for (; *s && n + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 33 || ch > 126 || ch == '+' || ch == '=')
			n += (size_t)snprintf(out + n, cap - n, "+%02X", ch);
		else
			out[n++] = (char)ch;
	}
	out[n] = '\0';
	return n;
}

/* Builds the XCLIENT command; returns false when no attribute the backend
 * accepts is left to send. */
static bool build_xclient(sy_ictx *c, char *out, size_t cap)
{
	smtp_state *st = ST(c);
	sy_fwd_info f;
	ictx_fwd_info(c, &f);
	f.helo = st->helo[0] ? st->helo : NULL;
	unsigned a = st->b_xattrs;
	bool local_v6 = strchr(f.local_ip, ':') != NULL;
	char helo[3 * HELO_MAX + 1];
	size_t n = (size_t)snprintf(out, cap, "XCLIENT");
	size_t start = n;
#define APPEND(...)                                                                                \
	do {                                                                                       \
		int w = snprintf(out + n, cap - n, __VA_ARGS__);                                   \
		if (w > 0 && (size_t)w < cap - n)                                                  \
			n += (size_t)w;                                                            \
	} while (0)
	if (a & XA_ADDR)
		APPEND(" ADDR=%s%s", f.client_ipv6 ? "IPV6:" : "", f.client_ip);
	if (a & XA_PORT)
		APPEND(" PORT=%s", f.client_port);
	if (a & XA_DESTADDR)
		APPEND(" DESTADDR=%s%s", local_v6 ? "IPV6:" : "", f.local_ip);
	if (a & XA_DESTPORT)
		APPEND(" DESTPORT=%s", f.local_port);
	if (a & XA_SESSION)
		APPEND(" SESSION=%s", f.session);
	if (a & XA_TTL)
		APPEND(" TTL=%s", f.ttl);
	if (a & XA_CLIENT_TRANSPORT)
		APPEND(" CLIENT-TRANSPORT=%s", f.transport);
	if ((a & XA_HELO) && f.helo) {
		xtext(helo, sizeof(helo), f.helo);
		APPEND(" HELO=%s", helo);
	}
	if (a & XA_PROTO)
		APPEND(" PROTO=ESMTP");
#undef APPEND
	if (n == start)
		return false;
	if (n + 2 < cap) {
		out[n++] = '\r';
		out[n++] = '\n';
		out[n] = '\0';
	}
	return true;
}

static void send_auth(sy_ictx *c)
{
	smtp_state *st = ST(c);
	if (!st->b_auth) {
		/* Like Dovecot's own proxy: never offer credentials to a server
		 * that does not take logins on this connection. */
		ictx_tempfail(c, "backend does not advertise AUTH");
		return;
	}
	char *b64 = NULL;
	if (ictx_replay_b64(c, &st->replay_mech, &b64) != 0)
		return;
	st->bst = SB_AUTH;
	forget_reply(st);
	const char *mech = sasl_mech_name(st->replay_mech);
	size_t blen = strlen(b64);
	if (sizeof("AUTH  \r\n") - 1 + strlen(mech) + (blen ? blen : 1) <= SMTP_CMD_LINE_MAX) {
		ictx_backend_sendf(c, "AUTH %s %s\r\n", mech, blen ? b64 : "=");
		sy_secure_free(b64, blen);
		st->response_sent = true;
		return;
	}
	/* RFC 4954 4: an initial response that would make the command line
	 * longer than SMTP allows goes after the server's empty challenge. */
	ictx_backend_sendf(c, "AUTH %s\r\n", mech);
	st->replay_b64 = b64;
	st->response_sent = false;
}

/* Decides what the handshake does next, given the last EHLO reply. */
static void next_step(sy_ictx *c)
{
	smtp_state *st = ST(c);
	if (ictx_backend_tls_mode(c) == SY_TLS_STARTTLS && !c->backend_tls) {
		if (!st->b_starttls) {
			ictx_tempfail(c, "backend does not advertise STARTTLS");
			return;
		}
		st->bst = SB_STARTTLS;
		ictx_backend_send(c, "STARTTLS\r\n", sizeof("STARTTLS\r\n") - 1);
		return;
	}
	if (ictx_forwarding(c) == SY_FWD_XCLIENT && st->b_xclient && !st->xclient_sent) {
		char cmd[1024];
		st->xclient_sent = true;
		if (build_xclient(c, cmd, sizeof(cmd))) {
			st->bst = SB_XCLIENT;
			ictx_backend_send(c, cmd, strlen(cmd));
			return;
		}
	}
	send_auth(c);
}

/* Appends one line (with CRLF) to the verdict being collected. */
static int collect_reply(smtp_state *st, const char *line, size_t len)
{
	if (st->reply_len + len + 2 > SY_LINE_MAX)
		return -1;
	char *r = realloc(st->reply, st->reply_len + len + 3);
	if (!r)
		return -1;
	st->reply = r;
	memcpy(r + st->reply_len, line, len);
	memcpy(r + st->reply_len + len, "\r\n", 3);
	st->reply_len += len + 2;
	return 0;
}

static int auth_verdict(sy_ictx *c, int code)
{
	smtp_state *st = ST(c);
	/* The verdict functions may run client lines synchronously: take the
	 * reply out of the state first. */
	forget_replay(st);
	char *reply = st->reply;
	size_t rlen = st->reply_len;
	st->reply = NULL;
	st->reply_len = 0;
	int ret = 0;
	if (code == 235) {
		st->cst = SMTP_CMD;
		ictx_auth_ok(c, reply, rlen);
	} else if (code >= 400) {
		st->cst = SMTP_CMD;
		ictx_auth_failed(c, reply, rlen, GENERIC_FAIL);
	} else {
		ret = -1; /* another 2xx or 3xx is not an answer to AUTH */
	}
	free(reply);
	return ret;
}

static void smtp_backend_connected(sy_ictx *c)
{
	smtp_state *st = ST(c);
	st->bst = SB_GREETING;
	st->bcode = 0;
	st->blines = 0;
	st->b_starttls = st->b_auth = st->b_xclient = false;
	st->b_xattrs = 0;
	st->xclient_sent = false;
	st->response_sent = false;
	forget_reply(st);
	forget_replay(st);
}

static int unexpected(sy_ictx *c, int code)
{
	if (log_enabled(SY_LOG_DEBUG)) {
		char cs[8];
		snprintf(cs, sizeof(cs), "%d", code);
		sy_log(SY_LOG_DEBUG, "unexpected submission backend reply", "state",
		       smtp_bstate_names[ST(c)->bst], "client_state", smtp_cstate_names[ST(c)->cst],
		       "code", cs, NULL);
	}
	return -1;
}

static int smtp_backend_line(sy_ictx *c, char *line, size_t len)
{
	smtp_state *st = ST(c);
	int code;
	bool last;
	const char *text;
	if (!parse_reply(line, len, &code, &last, &text))
		return unexpected(c, 0);
	if (st->bcode != 0 && code != st->bcode)
		return unexpected(c, code); /* a multi-line reply changed its code */
	st->bcode = last ? 0 : code;
	unsigned lineno = st->blines++;
	if (last)
		st->blines = 0;

	switch (st->bst) {
	case SB_GREETING:
		if (code != 220)
			return unexpected(c, code);
		if (last)
			send_ehlo(c);
		return 0;
	case SB_EHLO:
		if (code != 250)
			return unexpected(c, code);
		if (lineno > 0)
			parse_ehlo_keyword(st, text);
		if (last)
			next_step(c);
		return 0;
	case SB_STARTTLS:
		if (code != 220)
			return unexpected(c, code);
		if (last)
			ictx_backend_starttls(c);
		return 0;
	case SB_XCLIENT:
		if (!last)
			return 0;
		if (code / 100 == 2) {
			/* Postfix and Dovecot answer with a new greeting and
			 * forget the EHLO: say it again. */
			send_ehlo(c);
			return 0;
		}
		/* Refused (untrusted proxy address, say): the login still goes
		 * ahead, without the client's address, as with IMAP ID. */
		sy_log(SY_LOG_WARN, "backend refused XCLIENT", "protocol", "submission",
		       "destination", ictx_destination(c) ? ictx_destination(c)->id : "-", NULL);
		send_auth(c);
		return 0;
	case SB_AUTH:
		if (code == 334) {
			if (!last)
				return unexpected(c, code);
			if (!st->response_sent && st->replay_b64) {
				ictx_backend_sendf(c, "%s\r\n", st->replay_b64);
				forget_replay(st);
				st->response_sent = true;
			} else if (st->replay_mech == SY_MECH_OAUTHBEARER ||
			           st->replay_mech == SY_MECH_XOAUTH2) {
				/* A challenge after the complete response is an
				 * error report (RFC 7628 3.2.2): finish the
				 * exchange as the mechanism requires; the verdict
				 * follows. */
				ictx_backend_send(c, "AQ==\r\n", 6);
			} else {
				ictx_backend_send(c, "*\r\n", 3);
			}
			return 0;
		}
		if (collect_reply(st, line, len) != 0)
			return unexpected(c, code);
		if (!last)
			return 0;
		return auth_verdict(c, code);
	}
	return -1;
}

static void smtp_backend_tls_done(sy_ictx *c)
{
	smtp_state *st = ST(c);
	st->bcode = 0;
	st->blines = 0;
	/* RFC 3207 4.2: the backend forgot everything; EHLO again. */
	send_ehlo(c);
}

static int smtp_init(sy_ictx *c)
{
	c->p = calloc(1, sizeof(smtp_state));
	if (!c->p)
		return -1;
	set_hostname(c);
	return 0;
}

static void smtp_release(sy_ictx *c)
{
	smtp_state *st = ST(c);
	if (!st)
		return;
	forget_login_user(st);
	forget_reply(st);
	forget_replay(st);
	free(st);
	c->p = NULL;
}

const sy_proto_ops sy_submission_ops = {
    .proto = SY_PROTO_SUBMISSION,
    .name = "submission",
    .init = smtp_init,
    .release = smtp_release,
    .greet = smtp_greet,
    .client_line = smtp_client_line,
    .client_tls_done = smtp_client_tls_done,
    .line_too_long = smtp_line_too_long,
    .backend_connected = smtp_backend_connected,
    .backend_line = smtp_backend_line,
    .backend_tls_done = smtp_backend_tls_done,
    .tempfail = smtp_tempfail,
    .too_many_failures = smtp_too_many,
    .shutdown_notice = smtp_shutdown_notice,
    .timeout_notice = smtp_timeout_notice,
};
