/*
 * POP3 (RFC 1939) before authentication, with CAPA (RFC 2449), STLS
 * (RFC 2595) and SASL AUTH (RFC 5034), and the backend handshake and replay.
 *
 * Client side: greeting, CAPA, STLS, USER/PASS, AUTH (with or without an
 * initial response, continuations "+ ", "*" aborts; a bare AUTH lists the
 * mechanisms, the RFC 1734 form older clients still send), QUIT. The
 * TRANSACTION-state commands (STAT, LIST, RETR, NOOP, RSET, ...) are refused
 * with -ERR until login.
 *
 * Backend side: greeting +OK (Dovecot announces "[XCLIENT]" there to trusted
 * peers); CAPA only when the handshake needs to know something (STLS for a
 * STARTTLS leg, XCLIENT when the greeting did not say); STLS, handshake;
 * XCLIENT with the client's address for xclient forwarding when advertised;
 * then AUTH <MECH> <initial response>. The backend's +OK / -ERR line goes to
 * the client verbatim (or the generic failure with hide_auth_errors).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/interactive.h"
#include "switchyard/log.h"

typedef enum pop3_cstate {
	POP3_CMD,        /* waiting for a command */
	POP3_SASL_CONT,  /* AUTH: waiting for the client's response */
	POP3_LOGIN_USER, /* AUTH LOGIN: waiting for the user name */
	POP3_LOGIN_PASS, /* AUTH LOGIN: waiting for the password */
	POP3_WAITING,    /* the login is with the backend */
} pop3_cstate;

typedef enum pop3_bstate {
	PB_GREETING,  /* waiting for "+OK" */
	PB_CAPA,      /* CAPA sent: waiting for its status line */
	PB_CAPA_LIST, /* reading capability lines up to "." */
	PB_STLS,      /* STLS sent */
	PB_XCLIENT,   /* XCLIENT sent */
	PB_AUTH,      /* AUTH sent: continuations, then +OK / -ERR */
} pop3_bstate;

static const char *const pop3_bstate_names[] = {"greeting", "capa",    "capa-list",
                                                "stls",     "xclient", "auth"};

/* The XCLIENT attributes, in the order they are sent (SPEC section 3). */
enum {
	XA_ADDR,
	XA_PORT,
	XA_DESTADDR,
	XA_DESTPORT,
	XA_SESSION,
	XA_TTL,
	XA_CLIENT_TRANSPORT,
	XA_COUNT
};
static const char *const xclient_attr_names[XA_COUNT] = {
    "ADDR", "PORT", "DESTADDR", "DESTPORT", "SESSION", "TTL", "CLIENT-TRANSPORT"};

typedef struct pop3_state {
	pop3_cstate cst;
	pop3_bstate bst;
	sy_mech mech;     /* the client's mechanism (LOGIN for USER/PASS) */
	char *user;       /* USER argument until PASS */
	char *login_user; /* AUTH LOGIN between its two steps */
	/* What the backend advertised. */
	bool b_caps_known;      /* CAPA answered since the last (re)start or TLS */
	bool b_stls;            /* CAPA lists STLS */
	bool b_xclient_greet;   /* the greeting carries [XCLIENT] */
	bool b_xclient_capa;    /* CAPA lists XCLIENT */
	unsigned b_xclient_set; /* bit per XA_*: names listed after XCLIENT (0 = all) */
	bool xclient_sent;
	sy_mech replay_mech;
	bool response_sent; /* the SASL response went out */
	char *replay_b64;   /* held until the backend's "+ " when not sent inline */
} pop3_state;

#define ST(c) ((pop3_state *)(c)->p)

/* String literals go out with their length computed by the compiler. */
#define SEND_LIT(c, s)  ictx_send((c), "" s, sizeof(s) - 1)
#define BSEND_LIT(c, s) ictx_backend_send((c), "" s, sizeof(s) - 1)

static const char GENERIC_FAIL[] = "-ERR [AUTH] Authentication failed.\r\n";
static const char PLAINTEXT_DISALLOWED[] =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n";

/* RFC 2449 section 4: a command line is at most 255 octets with its CRLF;
 * RFC 5034 section 4: an initial response that would exceed it goes in a
 * continuation instead. */
#define POP3_CMD_LINE_MAX 255

static void wipe_str(char **s)
{
	if (*s) {
		sy_secure_free(*s, strlen(*s));
		*s = NULL;
	}
}

/* ---- capabilities -------------------------------------------------------------- */

/* The advertised mechanisms, separated by `sep`, deduplicated. */
static size_t build_mechs(sy_ictx *c, char *out, size_t cap, const char *sep)
{
	sy_mech mechs[SY_MECH_UNKNOWN];
	size_t count = ictx_mechs_advertised(c, mechs), n = 0;
	out[0] = '\0';
	for (size_t i = 0; i < count; i++) {
		int w = snprintf(out + n, cap - n, "%s%s", sasl_mech_name(mechs[i]), sep);
		if (w > 0 && (size_t)w < cap - n)
			n += (size_t)w;
	}
	return n;
}

static void reply_capa(sy_ictx *c)
{
	char mechs[512];
	build_mechs(c, mechs, sizeof(mechs), " ");
	size_t ml = strlen(mechs);
	if (ml > 0)
		mechs[ml - 1] = '\0'; /* trailing separator */
	bool plain_ok = ictx_plaintext_auth_allowed(c);
	ictx_sendf(c, "+OK Capability list follows\r\n%s%s%s%s%s", plain_ok ? "USER\r\n" : "",
	           ml > 0 ? "SASL " : "", mechs, ml > 0 ? "\r\n" : "",
	           ictx_starttls_available(c) ? "STLS\r\n" : "");
	SEND_LIT(c, "TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n.\r\n");
}

static void reply_auth_list(sy_ictx *c)
{
	char mechs[512];
	build_mechs(c, mechs, sizeof(mechs), "\r\n");
	ictx_sendf(c, "+OK\r\n%s.\r\n", mechs);
}

static void pop3_greet(sy_ictx *c)
{
	const char *b = c->caps->banner ? c->caps->banner : "";
	/* A banner cannot end the line early. */
	int blen = (int)strcspn(b, "\r\n");
	if (blen > 0)
		ictx_sendf(c, "+OK %.*s\r\n", blen, b);
	else
		SEND_LIT(c, "+OK\r\n");
}

/* ---- tokenizer ---------------------------------------------------------------------- */

/* A command line: keyword, then (after exactly one space) the rest of the
 * line as its argument (USER and PASS arguments may contain spaces). */
typedef struct pop3_cmd {
	const char *kw;
	size_t kwlen;
	char *arg;
	size_t arglen;
	bool has_arg; /* a space followed the keyword */
} pop3_cmd;

static void tokenize(char *line, size_t len, pop3_cmd *out)
{
	char *sp = memchr(line, ' ', len);
	out->kw = line;
	out->kwlen = sp ? (size_t)(sp - line) : len;
	out->has_arg = sp != NULL;
	out->arg = sp ? sp + 1 : line + len;
	out->arglen = sp ? len - (size_t)(sp + 1 - line) : 0;
}

static bool kw_is(const pop3_cmd *cmd, const char *name)
{
	size_t n = strlen(name);
	if (cmd->kwlen != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (toupper((unsigned char)cmd->kw[i]) != name[i])
			return false;
	return true;
}

/* ---- commands ----------------------------------------------------------------------- */

static void start_login(sy_ictx *c, sy_credentials *cr)
{
	pop3_state *st = ST(c);
	st->mech = cr->mech;
	st->cst = POP3_WAITING;
	ictx_authenticate(c, cr);
}

/* A complete SASL response from the client (base64 text). */
static void sasl_response(sy_ictx *c, const char *b64, size_t len)
{
	pop3_state *st = ST(c);
	if (len == 1 && b64[0] == '*') {
		st->cst = POP3_CMD;
		wipe_str(&st->login_user);
		SEND_LIT(c, "-ERR Authentication aborted by client.\r\n");
		return;
	}
	uint8_t *msg = NULL;
	size_t mlen = 0;
	if (sy_b64_decode(b64, len, &msg, &mlen) != 0) {
		st->cst = POP3_CMD;
		wipe_str(&st->login_user);
		SEND_LIT(c, "-ERR Invalid base64 data in SASL response.\r\n");
		ictx_count_failure(c);
		return;
	}
	sy_credentials cr = {0};
	if (st->mech == SY_MECH_LOGIN) {
		if (st->cst == POP3_LOGIN_USER) {
			if (mlen == 0 || memchr(msg, '\0', mlen)) {
				sy_secure_free(msg, mlen);
				st->cst = POP3_CMD;
				ictx_send(c, GENERIC_FAIL, sizeof(GENERIC_FAIL) - 1);
				ictx_count_failure(c);
				return;
			}
			st->login_user = (char *)msg; /* NUL-terminated by the decoder */
			st->cst = POP3_LOGIN_PASS;
			SEND_LIT(c, "+ UGFzc3dvcmQ6\r\n"); /* "Password:" */
			return;
		}
		size_t ulen = strlen(st->login_user);
		int r = -1;
		/* A NUL inside either field would change the replayed PLAIN message. */
		if (ulen > 0 && mlen > 0 && !memchr(msg, '\0', mlen))
			r = credentials_from_login(&cr, st->login_user, ulen, (const char *)msg,
			                           mlen);
		wipe_str(&st->login_user);
		sy_secure_free(msg, mlen);
		if (r != 0) {
			credentials_wipe(&cr);
			st->cst = POP3_CMD;
			ictx_send(c, GENERIC_FAIL, sizeof(GENERIC_FAIL) - 1);
			ictx_count_failure(c);
			return;
		}
	} else {
		const char *err = NULL;
		int r = sasl_decode(st->mech, msg, mlen, &cr, &err);
		sy_secure_free(msg, mlen);
		if (r != 0) {
			credentials_wipe(&cr);
			st->cst = POP3_CMD;
			if (!err || !*err)
				err = "malformed SASL response";
			ictx_sendf(c, "-ERR [AUTH] %c%s.\r\n", toupper((unsigned char)err[0]),
			           err + 1);
			ictx_count_failure(c);
			return;
		}
	}
	start_login(c, &cr);
}

static void cmd_auth(sy_ictx *c, const pop3_cmd *cmd)
{
	pop3_state *st = ST(c);
	if (!cmd->has_arg || cmd->arglen == 0) {
		reply_auth_list(c);
		return;
	}
	char *m = cmd->arg;
	char *sp = memchr(m, ' ', cmd->arglen);
	size_t mlen = sp ? (size_t)(sp - m) : cmd->arglen;
	sy_mech mech = sasl_mech_parse(m, mlen);
	if (mech == SY_MECH_UNKNOWN || memchr(m, '\0', mlen) || !ictx_mech_accepted(c, mech)) {
		SEND_LIT(c, "-ERR Unsupported authentication mechanism.\r\n");
		return;
	}
	if ((mech == SY_MECH_PLAIN || mech == SY_MECH_LOGIN) && !ictx_plaintext_auth_allowed(c)) {
		ictx_send(c, PLAINTEXT_DISALLOWED, sizeof(PLAINTEXT_DISALLOWED) - 1);
		return;
	}
	st->mech = mech;
	st->cst = mech == SY_MECH_LOGIN ? POP3_LOGIN_USER : POP3_SASL_CONT;
	if (sp) {
		/* RFC 5034 initial response; "=" is the empty one. */
		const char *ir = sp + 1;
		size_t irlen = cmd->arglen - mlen - 1;
		if (irlen == 1 && ir[0] == '=')
			irlen = 0;
		if (mech == SY_MECH_LOGIN && irlen == 0) {
			SEND_LIT(c, "+ VXNlcm5hbWU6\r\n"); /* "Username:" */
			return;
		}
		sasl_response(c, ir, irlen);
		return;
	}
	if (mech == SY_MECH_LOGIN)
		SEND_LIT(c, "+ VXNlcm5hbWU6\r\n");
	else
		SEND_LIT(c, "+ \r\n");
}

static void cmd_user(sy_ictx *c, const pop3_cmd *cmd)
{
	pop3_state *st = ST(c);
	wipe_str(&st->user);
	if (!ictx_plaintext_auth_allowed(c)) {
		ictx_send(c, PLAINTEXT_DISALLOWED, sizeof(PLAINTEXT_DISALLOWED) - 1);
		return;
	}
	if (cmd->arglen == 0 || memchr(cmd->arg, '\0', cmd->arglen)) {
		SEND_LIT(c, "-ERR Invalid user name.\r\n");
		return;
	}
	st->user = strndup(cmd->arg, cmd->arglen);
	if (!st->user) {
		SEND_LIT(c, "-ERR [SYS/TEMP] Internal error.\r\n");
		return;
	}
	SEND_LIT(c, "+OK\r\n");
}

static void cmd_pass(sy_ictx *c, const pop3_cmd *cmd)
{
	pop3_state *st = ST(c);
	if (!ictx_plaintext_auth_allowed(c)) {
		wipe_str(&st->user);
		ictx_send(c, PLAINTEXT_DISALLOWED, sizeof(PLAINTEXT_DISALLOWED) - 1);
		return;
	}
	if (!st->user) {
		SEND_LIT(c, "-ERR No username given.\r\n");
		return;
	}
	/* RFC 1939: after PASS, success or not, a new login starts with USER. */
	char *user = st->user;
	st->user = NULL;
	if (cmd->arglen == 0 || memchr(cmd->arg, '\0', cmd->arglen)) {
		sy_secure_free(user, strlen(user));
		ictx_send(c, GENERIC_FAIL, sizeof(GENERIC_FAIL) - 1);
		ictx_count_failure(c);
		return;
	}
	sy_credentials cr = {0};
	int r = credentials_from_login(&cr, user, strlen(user), cmd->arg, cmd->arglen);
	sy_secure_free(user, strlen(user));
	if (r != 0) {
		credentials_wipe(&cr);
		SEND_LIT(c, "-ERR [SYS/TEMP] Internal error.\r\n");
		return;
	}
	start_login(c, &cr);
}

static void cmd_stls(sy_ictx *c, const pop3_cmd *cmd)
{
	pop3_state *st = ST(c);
	if (c->client_tls) {
		SEND_LIT(c, "-ERR TLS is already active.\r\n");
	} else if (!ictx_starttls_available(c)) {
		SEND_LIT(c, "-ERR STLS is not available.\r\n");
	} else if (cmd->has_arg) {
		SEND_LIT(c, "-ERR STLS takes no arguments.\r\n");
	} else {
		/* RFC 2595 section 4: the state before TLS is forgotten. */
		wipe_str(&st->user);
		SEND_LIT(c, "+OK Begin TLS negotiation now.\r\n");
		ictx_client_starttls(c);
	}
}

/* Commands of the TRANSACTION state (RFC 1939, RFC 2449). */
static bool transaction_command(const pop3_cmd *cmd)
{
	static const char *const names[] = {"STAT", "LIST", "RETR", "DELE", "NOOP",
	                                    "RSET", "TOP",  "UIDL", "LAST"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (kw_is(cmd, names[i]))
			return true;
	return false;
}

static int pop3_client_line(sy_ictx *c, char *line, size_t len)
{
	pop3_state *st = ST(c);
	switch (st->cst) {
	case POP3_SASL_CONT:
	case POP3_LOGIN_USER:
	case POP3_LOGIN_PASS:
		sasl_response(c, line, len);
		return SY_LINE_OK;
	case POP3_WAITING:
		return SY_LINE_OK; /* cannot happen: the reader is paused */
	case POP3_CMD:
		break;
	}

	pop3_cmd cmd;
	tokenize(line, len, &cmd);
	if (kw_is(&cmd, "CAPA")) {
		reply_capa(c);
	} else if (kw_is(&cmd, "USER")) {
		cmd_user(c, &cmd);
	} else if (kw_is(&cmd, "PASS")) {
		cmd_pass(c, &cmd);
	} else if (kw_is(&cmd, "AUTH")) {
		cmd_auth(c, &cmd);
	} else if (kw_is(&cmd, "STLS")) {
		cmd_stls(c, &cmd);
	} else if (kw_is(&cmd, "QUIT")) {
		wipe_str(&st->user);
		SEND_LIT(c, "+OK Logging out.\r\n");
		ictx_close_after_flush(c);
	} else if (kw_is(&cmd, "APOP")) {
		SEND_LIT(c, "-ERR APOP is not supported.\r\n");
	} else if (transaction_command(&cmd)) {
		SEND_LIT(c, "-ERR Command not permitted before authentication.\r\n");
	} else {
		SEND_LIT(c, "-ERR Unknown command.\r\n");
	}
	return SY_LINE_OK;
}

static void pop3_line_too_long(sy_ictx *c)
{
	SEND_LIT(c, "-ERR Command line too long.\r\n");
}

static bool pop3_tempfail(sy_ictx *c, const char *text)
{
	pop3_state *st = ST(c);
	st->cst = POP3_CMD;
	ictx_sendf(c, "-ERR [SYS/TEMP] %s\r\n", text);
	return false;
}

static void pop3_timeout_notice(sy_ictx *c)
{
	ictx_send_lit(c, "-ERR Disconnected for inactivity.\r\n");
}

static void pop3_shutdown_notice(sy_ictx *c)
{
	SEND_LIT(c, "-ERR [SYS/TEMP] Server shutting down.\r\n");
}

/* ---- backend ------------------------------------------------------------------------------ */

static bool starts_ci(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	return len >= n && strncasecmp(s, word, n) == 0;
}

static bool is_ok(const char *line, size_t len)
{
	return starts_ci(line, len, "+OK") && (len == 3 || line[3] == ' ');
}

static bool is_err(const char *line, size_t len)
{
	return starts_ci(line, len, "-ERR") && (len == 4 || line[4] == ' ');
}

/* "+" alone or "+ <base64>": a SASL continuation (RFC 5034). */
static bool is_continuation(const char *line, size_t len)
{
	return len >= 1 && line[0] == '+' && (len == 1 || line[1] == ' ');
}

/* Whether a space-separated word list contains `word` (case-insensitive). */
static bool has_word(const char *s, size_t len, const char *word)
{
	size_t wl = strlen(word);
	const char *p = s, *end = s + len;
	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		const char *t = p;
		while (p < end && *p != ' ')
			p++;
		if ((size_t)(p - t) == wl && strncasecmp(t, word, wl) == 0)
			return true;
	}
	return false;
}

/* The greeting's response code, "+OK [XCLIENT] ...", says XCLIENT is
 * accepted (Dovecot's extension for trusted peers). */
static bool greeting_has_xclient(const char *line, size_t len)
{
	if (len < 5 || line[4] != '[')
		return false;
	const char *open = line + 5;
	const char *close = memchr(open, ']', len - 5);
	return close && has_word(open, (size_t)(close - open), "XCLIENT");
}

static void capa_line(pop3_state *st, const char *line, size_t len)
{
	const char *sp = memchr(line, ' ', len);
	size_t kwlen = sp ? (size_t)(sp - line) : len;
	if (kwlen == 4 && strncasecmp(line, "STLS", 4) == 0) {
		st->b_stls = true;
	} else if (kwlen == 7 && strncasecmp(line, "XCLIENT", 7) == 0) {
		st->b_xclient_capa = true;
		st->b_xclient_set = 0;
		/* Attribute names after the keyword (as in SMTP's EHLO keyword)
		 * restrict what is sent; none listed means all. */
		if (sp)
			for (int i = 0; i < XA_COUNT; i++)
				if (has_word(sp + 1, len - kwlen - 1, xclient_attr_names[i]))
					st->b_xclient_set |= 1u << i;
	}
}

static void send_xclient(sy_ictx *c)
{
	pop3_state *st = ST(c);
	sy_fwd_info f;
	ictx_fwd_info(c, &f);
	const char *vals[XA_COUNT] = {f.client_ip, f.client_port, f.local_ip, f.local_port,
	                              f.session,   f.ttl,         f.transport};
	char buf[512];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "XCLIENT");
	/* Only a CAPA line with names filters; the greeting's code has none. */
	unsigned set = st->b_xclient_capa ? st->b_xclient_set : 0;
	for (int i = 0; i < XA_COUNT; i++) {
		if (set != 0 && !(set & (1u << i)))
			continue;
		if (!vals[i] || !*vals[i])
			continue;
		int w =
		    snprintf(buf + n, sizeof(buf) - n, " %s=%s", xclient_attr_names[i], vals[i]);
		if (w > 0 && (size_t)w < sizeof(buf) - n)
			n += (size_t)w;
	}
	st->xclient_sent = true;
	st->bst = PB_XCLIENT;
	ictx_backend_sendf(c, "%s\r\n", buf);
}

static void send_capa(sy_ictx *c)
{
	pop3_state *st = ST(c);
	st->b_stls = st->b_xclient_capa = false;
	st->b_xclient_set = 0;
	st->bst = PB_CAPA;
	BSEND_LIT(c, "CAPA\r\n");
}

static void send_replay(sy_ictx *c)
{
	pop3_state *st = ST(c);
	sy_mech m;
	char *b64 = NULL;
	if (ictx_replay_b64(c, &m, &b64) != 0)
		return;
	const char *name = sasl_mech_name(m);
	size_t blen = strlen(b64);
	st->replay_mech = m;
	st->bst = PB_AUTH;
	/* "AUTH " name " " response CRLF within the RFC 2449 line limit. */
	if (5 + strlen(name) + 1 + (blen ? blen : 1) + 2 <= POP3_CMD_LINE_MAX) {
		ictx_backend_sendf(c, "AUTH %s %s\r\n", name, blen ? b64 : "=");
		st->response_sent = true;
		sy_secure_free(b64, blen);
	} else {
		ictx_backend_sendf(c, "AUTH %s\r\n", name);
		st->replay_b64 = b64;
	}
}

/* Decides what the handshake does next, given what the backend advertised. */
static void next_step(sy_ictx *c)
{
	pop3_state *st = ST(c);
	if (ictx_backend_tls_mode(c) == SY_TLS_STARTTLS && !c->backend_tls) {
		if (!st->b_caps_known) {
			send_capa(c);
			return;
		}
		if (!st->b_stls) {
			ictx_tempfail(c, "backend does not advertise STLS");
			return;
		}
		st->bst = PB_STLS;
		BSEND_LIT(c, "STLS\r\n");
		return;
	}
	if (ictx_forwarding(c) == SY_FWD_XCLIENT && !st->xclient_sent) {
		if (st->b_xclient_greet || st->b_xclient_capa) {
			send_xclient(c);
			return;
		}
		if (!st->b_caps_known) {
			send_capa(c);
			return;
		}
		/* Not advertised: the login goes ahead without the address. */
	}
	send_replay(c);
}

static void pop3_backend_connected(sy_ictx *c)
{
	pop3_state *st = ST(c);
	wipe_str(&st->replay_b64);
	st->bst = PB_GREETING;
	st->b_caps_known = st->b_stls = false;
	st->b_xclient_greet = st->b_xclient_capa = false;
	st->b_xclient_set = 0;
	st->xclient_sent = false;
	st->response_sent = false;
}

/* The backend's verdict line, with CRLF, to the client. */
static void verdict(sy_ictx *c, const char *line, size_t len, bool ok)
{
	pop3_state *st = ST(c);
	wipe_str(&st->replay_b64);
	char *buf = malloc(len + 3);
	if (!buf) {
		ictx_tempfail(c, "out of memory");
		return;
	}
	memcpy(buf, line, len);
	memcpy(buf + len, "\r\n", 3);
	st->cst = POP3_CMD;
	if (ok)
		ictx_auth_ok(c, buf, len + 2);
	else
		ictx_auth_failed(c, buf, len + 2, GENERIC_FAIL);
	free(buf);
}

static int pop3_backend_line(sy_ictx *c, char *line, size_t len)
{
	pop3_state *st = ST(c);
	int r = 0;
	switch (st->bst) {
	case PB_GREETING:
		if (!is_ok(line, len)) {
			r = -1;
			break;
		}
		st->b_xclient_greet = greeting_has_xclient(line, len);
		next_step(c);
		break;
	case PB_CAPA:
		if (is_ok(line, len)) {
			st->bst = PB_CAPA_LIST;
		} else if (is_err(line, len)) {
			/* No CAPA (RFC 1939 only): nothing is advertised. */
			st->b_caps_known = true;
			next_step(c);
		} else {
			r = -1;
		}
		break;
	case PB_CAPA_LIST:
		if (len == 1 && line[0] == '.') {
			st->b_caps_known = true;
			next_step(c);
		} else if (line[0] == '.') {
			capa_line(st, line + 1, len - 1); /* dot-stuffed */
		} else {
			capa_line(st, line, len);
		}
		break;
	case PB_STLS:
		if (!is_ok(line, len)) {
			r = -1;
			break;
		}
		ictx_backend_starttls(c);
		break;
	case PB_XCLIENT:
		/* A backend that refuses XCLIENT still gets the login, just
		 * without the client's address. */
		if (!is_ok(line, len) && !is_err(line, len)) {
			r = -1;
			break;
		}
		next_step(c);
		break;
	case PB_AUTH:
		if (is_continuation(line, len)) {
			if (!st->response_sent && st->replay_b64) {
				ictx_backend_sendf(c, "%s\r\n",
				                   *st->replay_b64 ? st->replay_b64 : "=");
				wipe_str(&st->replay_b64);
				st->response_sent = true;
			} else if (st->replay_mech == SY_MECH_OAUTHBEARER ||
			           st->replay_mech == SY_MECH_XOAUTH2) {
				/* An error challenge (RFC 7628 3.2.3): the dummy
				 * response ends the exchange, the -ERR follows. */
				BSEND_LIT(c, "AQ==\r\n");
			} else {
				BSEND_LIT(c, "*\r\n");
			}
		} else if (is_ok(line, len)) {
			verdict(c, line, len, true);
		} else if (is_err(line, len)) {
			verdict(c, line, len, false);
		} else {
			r = -1;
		}
		break;
	}
	if (r != 0 && log_enabled(SY_LOG_DEBUG))
		sy_log(SY_LOG_DEBUG, "pop3 backend reply not understood", "state",
		       pop3_bstate_names[st->bst], NULL);
	return r;
}

static void pop3_backend_tls_done(sy_ictx *c)
{
	pop3_state *st = ST(c);
	/* RFC 2595 section 4: what CAPA said before TLS is forgotten. The
	 * greeting's [XCLIENT] is kept: it only decides whether the address is
	 * sent, now over TLS, and Dovecot announces it nowhere else. */
	st->b_caps_known = st->b_stls = st->b_xclient_capa = false;
	st->b_xclient_set = 0;
	next_step(c);
}

static int pop3_init(sy_ictx *c)
{
	c->p = calloc(1, sizeof(pop3_state));
	return c->p ? 0 : -1;
}

static void pop3_release(sy_ictx *c)
{
	pop3_state *st = ST(c);
	if (!st)
		return;
	wipe_str(&st->user);
	wipe_str(&st->login_user);
	wipe_str(&st->replay_b64);
	free(st);
	c->p = NULL;
}

const sy_proto_ops sy_pop3_ops = {
    .proto = SY_PROTO_POP3,
    .name = "pop3",
    .init = pop3_init,
    .release = pop3_release,
    .greet = pop3_greet,
    .client_line = pop3_client_line,
    .client_tls_done = NULL,
    .line_too_long = pop3_line_too_long,
    .backend_connected = pop3_backend_connected,
    .backend_line = pop3_backend_line,
    .backend_tls_done = pop3_backend_tls_done,
    .tempfail = pop3_tempfail,
    .too_many_failures = NULL,
    .shutdown_notice = pop3_shutdown_notice,
    .timeout_notice = pop3_timeout_notice,
};
