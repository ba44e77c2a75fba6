/*
 * A test session for the interactive protocol modules (src/proto/imap.c,
 * pop3.c, sieve.c, submission.c), included by fuzz_imap.c, fuzz_pop3.c,
 * fuzz_sieve.c and fuzz_submission.c, each of which defines FUZZ_OPS (the
 * module's sy_proto_ops table) and FUZZ_PROTO (its sy_proto) first.
 *
 * The module under test is the real one, driven through its real entry
 * points: ops->init, greet, client_line (with literal continuation),
 * client_tls_done, backend_connected, backend_line, backend_tls_done,
 * tempfail, too_many_failures, shutdown_notice, timeout_notice,
 * line_too_long and release. What is replaced is the framework below it
 * (src/proto/interactive.c, which needs sockets, a libuv loop, TLS and the
 * router): this file implements the ictx_* functions the modules call, with
 * the framework's semantics but no I/O. Client and backend bytes come from
 * the fuzz input; the client reader (line splitting, literal folding,
 * seg_start, the SY_LINE_MAX cap) follows process_lines() in interactive.c,
 * the backend reader follows on_backend_read(). The credentials a module
 * decodes go through the real identifier_extract() and, on replay, through
 * the real sasl_replay_message() and sy_b64_encode().
 *
 * Input: byte 0 and byte 1 are flags (below), the rest is records, each one
 * read. A record starts with 'B' (bytes from the backend) or any other byte
 * (from the client), which is dropped, and runs up to and including a LF
 * that is followed by 'C' or 'B', or to the end of the input: so
 * "Ca1 LOGIN {1}\r\nx y\r\nB* OK\r\n" is one client read of two lines and
 * one backend read. Terminators are kept as they are (LF, CRLF, none).
 *
 * Contract checks (abort): the module never sends to the client after the
 * session became a bridge, never writes to a backend that is not connected,
 * never starts a second login while one is in progress, never reports a
 * temporary failure once bridged, gives
 * ictx_auth_failed/ictx_auth_ok complete CRLF-terminated replies, leaves the
 * client and backend output at a line end whenever it returns control
 * (nothing half-written waits for a later event), and never hands out a
 * line containing LF. ASan/UBSan find the rest; LeakSanitizer finds state
 * the module does not free in release.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/config.h"
#include "switchyard/interactive.h"
#include "switchyard/log.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/sasl.h"
#include "switchyard/snapshot.h"

/* byte 0 */
#define F_CLIENT_TLS 0x01 /* implicit TLS on the client leg */
#define F_STARTTLS   0x02 /* a starttls listener (without F_CLIENT_TLS) */
#define F_PLAIN_OK   0x04 /* allow_plain_auth_without_tls */
#define F_BTLS_SHIFT 3    /* 2 bits: backend leg 0 plain, 1 starttls, 2 implicit, 3 plain */
#define F_BPLAIN_OK  0x20 /* allow_plaintext_auth on a plain backend leg */
#define F_FWD_SHIFT  6    /* 2 bits: 0 none, 1 xclient, 2 proxy, 3 xclient */
/* byte 1 */
#define G_BTLS_FAIL   0x01 /* the backend STARTTLS handshake fails */
#define G_CTLS_FAIL   0x02 /* the client STARTTLS handshake fails */
#define G_SHUTDOWN    0x04 /* at the end: the process shuts down */
#define G_TIMEOUT     0x08 /* at the end: preauth_timeout */
#define G_IPV6        0x10 /* the client address is IPv6 */
#define G_ATTEMPTS_SH 5    /* 3 bits: max_auth_attempts - 1 */

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "contract violated: %s\n", what);
		abort();
	}
}

/* ---- the test session ------------------------------------------------------------------ */

typedef struct fuzz_session {
	uint8_t f, g;
	unsigned max_attempts;
	bool tls_pending;   /* the module asked for client STARTTLS */
	bool btls_pending;  /* the module asked for backend STARTTLS */
	bool backend_up;    /* a backend leg exists (routing done, "dialed") */
	bool login_started; /* ictx_authenticate was called: route and dial next */
	size_t out_len, bout_len;
	char out_last[2], bout_last[2];
} fuzz_session;

static fuzz_session FS;
static sy_config *CFG;
static sy_snapshot SNAP;
static sy_session SESSION;

/* FUZZ_TRACE=1 in the environment prints both legs' output (to check that a
 * seed reaches what it is meant to). */
static int trace = -1;

static void show(const char *who, const void *data, size_t len)
{
	if (trace < 0)
		trace = getenv("FUZZ_TRACE") != NULL;
	if (trace)
		fprintf(stderr, "%s %.*s%s", who, (int)len, (const char *)data,
		        len && ((const char *)data)[len - 1] == '\n' ? "" : "\n");
}

static void track_tail(char last[2], size_t *total, const void *data, size_t len)
{
	const char *d = data;
	if (len == 0)
		return;
	if (len >= 2) {
		last[0] = d[len - 2];
		last[1] = d[len - 1];
	} else {
		last[0] = last[1];
		last[1] = d[0];
	}
	*total += len;
}

static bool at_line_end(const char last[2], size_t total)
{
	return total == 0 || (last[0] == '\r' && last[1] == '\n');
}

void ictx_send(sy_ictx *c, const void *data, size_t len)
{
	check(c->state != IC_BRIDGED, "client send after the bridge started");
	show("S:", data, len);
	track_tail(FS.out_last, &FS.out_len, data, len);
}

static void vsendf(sy_ictx *c, bool backend, const char *fmt, va_list ap)
{
	char small[512];
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	check(n >= 0, "sendf format");
	char *buf = small;
	if ((size_t)n >= sizeof(small)) {
		buf = malloc((size_t)n + 1);
		check(buf != NULL, "oom");
		vsnprintf(buf, (size_t)n + 1, fmt, ap2);
	}
	va_end(ap2);
	if (backend)
		ictx_backend_send(c, buf, (size_t)n);
	else
		ictx_send(c, buf, (size_t)n);
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
	check(FS.backend_up && c->state == IC_BACKEND, "backend send without a backend");
	show("P:", data, len);
	track_tail(FS.bout_last, &FS.bout_len, data, len);
}

void ictx_backend_sendf(sy_ictx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsendf(c, true, fmt, ap);
	va_end(ap);
}

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
	size_t n = 0;
	for (size_t i = 0; i < c->caps->sasl.len; i++) {
		const char *name = c->caps->sasl.items[i];
		sy_mech m = sasl_mech_parse(name, strlen(name));
		if (m == SY_MECH_LOGIN || m == SY_MECH_UNKNOWN || seen[m])
			continue;
		if (m == SY_MECH_PLAIN && !ictx_plaintext_auth_allowed(c))
			continue;
		seen[m] = true;
		out[n++] = m;
	}
	return n;
}

bool ictx_starttls_available(const sy_ictx *c)
{
	return (FS.f & (F_CLIENT_TLS | F_STARTTLS)) == F_STARTTLS && !c->client_tls;
}

const sy_destination_config *ictx_destination(const sy_ictx *c)
{
	(void)c;
	return FS.backend_up ? &CFG->destinations[0] : NULL;
}

sy_forwarding ictx_forwarding(const sy_ictx *c)
{
	check(FS.backend_up, "forwarding asked without a backend");
	(void)c;
	static const sy_forwarding fw[4] = {SY_FWD_NONE, SY_FWD_XCLIENT, SY_FWD_PROXY,
	                                    SY_FWD_XCLIENT};
	return fw[(FS.f >> F_FWD_SHIFT) & 3];
}

sy_tls_mode ictx_backend_tls_mode(const sy_ictx *c)
{
	check(FS.backend_up, "backend TLS mode asked without a backend");
	(void)c;
	static const sy_tls_mode m[4] = {SY_TLS_PLAIN, SY_TLS_STARTTLS, SY_TLS_IMPLICIT,
	                                 SY_TLS_PLAIN};
	return m[(FS.f >> F_BTLS_SHIFT) & 3];
}

bool ictx_backend_may_send_credentials(const sy_ictx *c)
{
	if (c->backend_tls)
		return true;
	return ictx_backend_tls_mode(c) == SY_TLS_PLAIN && (FS.f & F_BPLAIN_OK);
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
	bool v6 = FS.g & G_IPV6;
	snprintf(out->client_ip, sizeof(out->client_ip), "%s", v6 ? "2001:db8::7" : "192.0.2.7");
	snprintf(out->client_port, sizeof(out->client_port), "%u", 40123u);
	sy_sockaddr_str((const struct sockaddr *)&c->s->local, out->local_ip, sizeof(out->local_ip),
	                false);
	snprintf(out->local_port, sizeof(out->local_port), "%u", 143u);
	out->client_ipv6 = v6;
	snprintf(out->session, sizeof(out->session), "%016llx", 0x1234ull);
	snprintf(out->ttl, sizeof(out->ttl), "%u", 6u);
	out->transport = c->client_tls ? "TLS" : "insecure";
}

/* ---- verdicts ---------------------------------------------------------------------------- */

static void end_login(sy_ictx *c)
{
	credentials_wipe(&c->creds);
	free(c->identifier);
	c->identifier = NULL;
	FS.backend_up = false;
	FS.login_started = false;
	FS.btls_pending = false;
	free(c->bbuf);
	c->bbuf = NULL;
	c->blen = 0;
}

static void process_lines(sy_ictx *c);

static void resume_preauth(sy_ictx *c)
{
	c->state = IC_PREAUTH;
	c->paused = false;
	if (!c->processing) {
		c->processing = true;
		process_lines(c);
		c->processing = false;
	}
}

void ictx_close_after_flush(sy_ictx *c)
{
	if (c->state == IC_BRIDGED)
		return;
	c->state = IC_CLOSING;
}

void ictx_tempfail(sy_ictx *c, const char *reason)
{
	(void)reason;
	check(c->state != IC_BRIDGED, "tempfail after the bridge started");
	if (c->state == IC_CLOSING)
		return;
	end_login(c);
	if (c->ops->tempfail(c, "Backend server unavailable, try again later.")) {
		ictx_close_after_flush(c);
		return;
	}
	resume_preauth(c);
}

bool ictx_count_failure(sy_ictx *c)
{
	c->auth_failures++;
	if (c->auth_failures < FS.max_attempts)
		return false;
	if (c->ops->too_many_failures)
		c->ops->too_many_failures(c);
	ictx_close_after_flush(c);
	return true;
}

static void check_reply(const char *reply, size_t len, const char *what)
{
	check(len >= 2 && reply[len - 2] == '\r' && reply[len - 1] == '\n', what);
}

void ictx_auth_failed(sy_ictx *c, const char *reply, size_t len, const char *generic)
{
	check(FS.backend_up && c->state == IC_BACKEND, "auth_failed outside a login");
	check_reply(reply, len, "auth_failed reply is not CRLF-terminated");
	check_reply(generic, strlen(generic), "generic failure is not CRLF-terminated");
	end_login(c);
	ictx_send(c, reply, len);
	if (ictx_count_failure(c))
		return;
	resume_preauth(c);
}

void ictx_auth_ok(sy_ictx *c, const char *reply, size_t len)
{
	check(FS.backend_up && c->state == IC_BACKEND, "auth_ok outside a login");
	check_reply(reply, len, "auth_ok reply is not CRLF-terminated");
	show("=", "bridged", 7);
	ictx_send(c, reply, len);
	end_login(c);
	c->state = IC_BRIDGED;
}

void ictx_authenticate(sy_ictx *c, sy_credentials *creds)
{
	check(c->state == IC_PREAUTH && !FS.login_started, "a second login while one runs");
	c->creds = *creds;
	memset(creds, 0, sizeof(*creds));
	c->paused = true;
	c->state = IC_ROUTING;
	FS.login_started = true;
}

void ictx_client_starttls(sy_ictx *c)
{
	check(c->state == IC_PREAUTH, "client STARTTLS outside pre-auth");
	/* Pipelined plaintext after STARTTLS is dropped, as the framework does. */
	free(c->cbuf);
	c->cbuf = NULL;
	c->clen = c->cscan = c->literal_end = c->seg_start = 0;
	c->state = IC_CLIENT_TLS;
	FS.tls_pending = true;
}

void ictx_backend_starttls(sy_ictx *c)
{
	check(FS.backend_up && c->state == IC_BACKEND, "backend STARTTLS without a backend");
	free(c->bbuf);
	c->bbuf = NULL;
	c->blen = 0;
	FS.btls_pending = true;
}

/* ---- readers ------------------------------------------------------------------------------ */

static void line_too_long(sy_ictx *c)
{
	c->ops->line_too_long(c);
	ictx_close_after_flush(c);
}

/* process_lines() of interactive.c, over a malloc'd buffer. */
static void process_lines(sy_ictx *c)
{
	while (c->state == IC_PREAUTH && !c->paused && c->cbuf) {
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
		size_t end = (size_t)(nl - c->cbuf);
		size_t linelen = end;
		if (linelen > c->seg_start && c->cbuf[linelen - 1] == '\r')
			linelen--;
		char saved = c->cbuf[linelen];
		c->cbuf[linelen] = '\0';
		show("C:", c->cbuf, linelen);
		int r = c->ops->client_line(c, c->cbuf, linelen);
		if (r < 0) {
			ictx_close_after_flush(c);
			return;
		}
		if (!c->cbuf)
			return;
		if (r > 0) {
			c->cbuf[linelen] = saved;
			size_t need = end + 1 + (size_t)(r - 1);
			if (need >= SY_LINE_MAX) {
				line_too_long(c);
				return;
			}
			c->literal_end = need;
			continue;
		}
		memmove(c->cbuf, c->cbuf + end + 1, c->clen - end - 1);
		c->clen -= end + 1;
		c->cscan = 0;
		c->seg_start = 0;
		if (c->clen == 0) {
			free(c->cbuf);
			c->cbuf = NULL;
		}
	}
}

static void client_read(sy_ictx *c, const char *data, size_t n)
{
	if (c->state != IC_PREAUTH && c->state != IC_ROUTING && c->state != IC_BACKEND)
		return;
	if (!c->cbuf) {
		c->cbuf = malloc(SY_BLOCK_SIZE);
		check(c->cbuf != NULL, "oom");
	}
	if (n > SY_LINE_MAX - c->clen) {
		line_too_long(c);
		return;
	}
	memcpy(c->cbuf + c->clen, data, n);
	c->clen += n;
	c->processing = true;
	process_lines(c);
	c->processing = false;
}

/* on_backend_read() of interactive.c. */
static void backend_read(sy_ictx *c, const char *data, size_t n)
{
	if (!FS.backend_up || c->state != IC_BACKEND || FS.btls_pending)
		return;
	if (!c->bbuf) {
		c->bbuf = malloc(SY_BLOCK_SIZE);
		check(c->bbuf != NULL, "oom");
	}
	if (c->blen + n > SY_LINE_MAX) {
		ictx_tempfail(c, "backend line too long");
		return;
	}
	memcpy(c->bbuf + c->blen, data, n);
	c->blen += n;
	while (c->state == IC_BACKEND && c->bbuf && !FS.btls_pending) {
		char *nl = memchr(c->bbuf, '\n', c->blen);
		if (!nl)
			break;
		size_t linelen = (size_t)(nl - c->bbuf);
		size_t next = linelen + 1;
		if (linelen > 0 && c->bbuf[linelen - 1] == '\r')
			linelen--;
		char *line = malloc(linelen + 1);
		check(line != NULL, "oom");
		memcpy(line, c->bbuf, linelen);
		line[linelen] = '\0';
		memmove(c->bbuf, c->bbuf + next, c->blen - next);
		c->blen -= next;
		check(memchr(line, '\n', linelen) == NULL, "backend line holds LF");
		int r = c->ops->backend_line(c, line, linelen);
		free(line);
		if (r != 0) {
			ictx_tempfail(c, "unexpected reply from backend");
			return;
		}
	}
	if (c->bbuf && c->blen == 0 && c->state == IC_BACKEND) {
		free(c->bbuf);
		c->bbuf = NULL;
	}
}

/* Runs whatever the module's last step asked for: a route and a dial, a
 * TLS handshake on either leg. */
static void settle(sy_ictx *c)
{
	for (int guard = 0; guard < 64; guard++) {
		if (c->state == IC_CLIENT_TLS && FS.tls_pending) {
			FS.tls_pending = false;
			if (FS.g & G_CTLS_FAIL) {
				ictx_close_after_flush(c);
				return;
			}
			c->client_tls = true;
			c->state = IC_PREAUTH;
			if (c->ops->client_tls_done)
				c->ops->client_tls_done(c);
			continue;
		}
		if (c->state == IC_ROUTING && FS.login_started && !FS.backend_up) {
			char *id = NULL;
			if (identifier_extract(&c->creds, CFG, &id) == SY_IDENT_INVALID) {
				ictx_tempfail(c, "identifier contains forbidden characters");
				continue;
			}
			c->identifier = id;
			c->state = IC_BACKEND;
			FS.backend_up = true;
			c->backend_tls = ictx_backend_tls_mode(c) == SY_TLS_IMPLICIT;
			FS.bout_len = 0;
			c->ops->backend_connected(c);
			continue;
		}
		if (c->state == IC_BACKEND && FS.btls_pending) {
			FS.btls_pending = false;
			if (FS.g & G_BTLS_FAIL) {
				ictx_tempfail(c, "backend STARTTLS handshake failed");
				continue;
			}
			c->backend_tls = true;
			c->ops->backend_tls_done(c);
			continue;
		}
		return;
	}
}

static void check_quiescent(const sy_ictx *c)
{
	check(at_line_end(FS.out_last, FS.out_len), "client output stops mid-line");
	if (c->state == IC_BACKEND)
		check(at_line_end(FS.bout_last, FS.bout_len), "backend output stops mid-line");
}

/* ---- the target ----------------------------------------------------------------------------- */

static const char CONFIG[] = "[listener.l]\n"
                             "protocol = \"" FUZZ_PROTO_NAME "\"\n"
                             "bind = [\"127.0.0.1:10000\"]\n"
                             "tls = \"plain\"\n"
                             "[destination.d]\n"
                             "host = \"127.0.0.1\"\n"
                             "allow_plaintext_auth = true\n"
                             "proxy_protocol = false\n"
                             "[destination.d.protocol." FUZZ_PROTO_NAME "]\n"
                             "port = 10001\n"
                             "tls = \"plain\"\n"
                             "[routing]\n"
                             "default_destination = \"d\"\n";

static void setup(void)
{
	if (CFG)
		return;
	sy_errors errs = {0};
	if (config_load_string(CONFIG, sizeof(CONFIG) - 1, "/nonexistent-fuzz-basedir", &CFG,
	                       &errs) != 0) {
		for (size_t i = 0; i < errs.len; i++)
			fprintf(stderr, "fuzz config: %s\n", errs.msgs[i]);
		abort();
	}
	log_set_level(SY_LOG_ERROR);
	SNAP.cfg = CFG;
	struct sockaddr_in *local = (struct sockaddr_in *)&SESSION.local;
	local->sin_family = AF_INET;
	local->sin_port = htons(143);
	local->sin_addr.s_addr = htonl(0x7f000001);
	SESSION.snap = &SNAP;
	SESSION.lcfg = &CFG->listeners[0];
	SESSION.id = 0x1234;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	setup();
	memset(&FS, 0, sizeof(FS));
	FS.f = data[0];
	FS.g = data[1];
	FS.max_attempts = 1u + ((FS.g >> G_ATTEMPTS_SH) & 7u);
	sy_caps_config *caps = &CFG->caps[FUZZ_PROTO];
	bool saved_plain = caps->allow_plain_auth_without_tls;
	caps->allow_plain_auth_without_tls = (FS.f & F_PLAIN_OK) != 0;

	sy_ictx *c = calloc(1, sizeof(*c));
	check(c != NULL, "oom");
	c->s = &SESSION;
	c->ops = &FUZZ_OPS;
	c->caps = caps;
	c->client_tls = (FS.f & F_CLIENT_TLS) != 0;
	c->state = IC_PREAUTH;
	check(c->ops->proto == FUZZ_PROTO, "ops table of another protocol");
	if (c->ops->init(c) != 0)
		abort();
	c->ops->greet(c);
	check_quiescent(c);

	const char *p = (const char *)data + 2, *end = (const char *)data + size;
	while (p < end && c->state != IC_CLOSING && c->state != IC_BRIDGED) {
		/* A record runs to a LF followed by 'C' or 'B' (or the end). */
		const char *stop = p;
		for (;;) {
			const char *nl = memchr(stop, '\n', (size_t)(end - stop));
			stop = nl ? nl + 1 : end;
			if (stop == end || *stop == 'C' || *stop == 'B')
				break;
		}
		bool backend = *p == 'B';
		const char *payload = p + 1;
		size_t n = (size_t)(stop - payload);
		if (backend) {
			backend_read(c, payload, n);
		} else {
			client_read(c, payload, n);
		}
		settle(c);
		check_quiescent(c);
		p = stop;
	}
	/* The end of the input: the backend goes quiet (backend_timeout), then
	 * maybe a shutdown or the pre-auth deadline. */
	if (c->state == IC_BACKEND || c->state == IC_ROUTING) {
		ictx_tempfail(c, "backend_timeout passed");
		settle(c);
		check_quiescent(c);
	}
	if (c->state == IC_PREAUTH && (FS.g & G_SHUTDOWN) && c->ops->shutdown_notice) {
		c->ops->shutdown_notice(c);
		ictx_close_after_flush(c);
	} else if (c->state == IC_PREAUTH && (FS.g & G_TIMEOUT) && c->ops->timeout_notice) {
		c->ops->timeout_notice(c);
		ictx_close_after_flush(c);
	}
	check_quiescent(c);

	credentials_wipe(&c->creds);
	free(c->identifier);
	free(c->cbuf);
	free(c->bbuf);
	if (c->ops->release)
		c->ops->release(c);
	free(c);
	caps->allow_plain_auth_without_tls = saved_plain;
	return 0;
}
