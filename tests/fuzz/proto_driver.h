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
 * line_too_long and release. The framework's readers are the real ones too:
 * client and backend bytes from the fuzz input go through
 * src/proto/ireader.c (line splitting across reads, literal folding,
 * seg_start, the SY_LINE_MAX cap, the buffers dropped at STARTTLS, the
 * backend line splitter), the very functions interactive.c calls, over a
 * block pool that frees every block it gets back (so ASan sees a block used
 * after the reader returned it). So are the pure ictx_* helpers of
 * src/proto/ipolicy.c: the SASL policy, STARTTLS availability, the replay
 * rule (ictx_replay_b64) and the forwarding facts (ictx_fwd_info, from the
 * session's addresses set below).
 *
 * What this file replaces is the rest of src/proto/interactive.c, which
 * needs sockets, a libuv loop, timers, TLS and the router: sending, the
 * verdicts, STARTTLS handshakes, routing and the dial (the destination,
 * its forwarding and TLS mode, whether credentials may go on the backend
 * leg), with the framework's semantics but no I/O. What interactive.c does
 * with a reader's result (line_too_long, close, tempfail) is restated here
 * in a few lines. The credentials a module decodes go through the real
 * identifier_extract() and, on replay, through the real
 * sasl_replay_message() and sy_b64_encode().
 *
 * The module's client_line and backend_line get each line in a malloc'd
 * copy of exactly its length plus the NUL (the reader passes a pointer
 * into its 32 KiB block, or a stack buffer of that size): a module reading
 * past the end of its line is then an ASan report. What the module writes
 * into a client line is copied back, since a line with a literal is passed
 * again from the reader's buffer.
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
 * (nothing half-written waits for a later event); the reader never hands
 * out a backend line containing LF nor a client line ending before
 * seg_start, and every pool block is back when the session ends. ASan/UBSan
 * find the rest; LeakSanitizer finds state the module does not free in
 * release.
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

#include "../../src/proto/ireader.h"

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
	/* Every byte the client reader took since it last dropped its buffer,
	 * and every byte the backend reader took since the leg came up or was
	 * last dropped: the bridge hand-off must pass on a tail of each that
	 * starts after a line end. */
	size_t crec_len, brec_len;
	bool handed_client, handed_backend;
} fuzz_session;

#define REC_MAX 65536
static char CREC[REC_MAX], BREC[REC_MAX];

static void record(char *rec, size_t *len, const char *data, size_t n)
{
	if (*len + n > REC_MAX) {
		*len = REC_MAX + 1; /* past what is checked */
		return;
	}
	memcpy(rec + *len, data, n);
	*len += n;
}

static fuzz_session FS;
static sy_config *CFG;
static sy_snapshot SNAP;
static sy_session SESSION;
static sy_listener_config LCFG; /* the listener, its TLS mode from the flags */
static sy_pool POOL;            /* keeps no free blocks: every put is a free */
static sy_proto_ops OPS;        /* FUZZ_OPS with the line entries wrapped */

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

/* ---- verdicts ---------------------------------------------------------------------------- */

static void end_login(sy_ictx *c)
{
	credentials_wipe(&c->creds);
	free(c->identifier);
	c->identifier = NULL;
	FS.backend_up = false;
	FS.login_started = false;
	FS.btls_pending = false;
	ireader_backend_drop(c, &POOL);
	FS.brec_len = 0;
}

static void process_client(sy_ictx *c);

static void resume_preauth(sy_ictx *c)
{
	c->state = IC_PREAUTH;
	c->paused = false;
	if (!c->processing)
		process_client(c);
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

/* The hand-off's sinks: the bytes are a tail of what the leg's reader
 * took, and what precedes them there ends a line (the backend's verdict,
 * the client's login command). */
static void check_tail(const char *rec, size_t rec_len, const char *data, size_t n,
                       const char *what)
{
	if (rec_len > REC_MAX)
		return;
	check(n > 0 && n < rec_len, what);
	check(memcmp(rec + rec_len - n, data, n) == 0, what);
	check(rec[rec_len - n - 1] == '\n', what);
}

static void handoff_to_client(void *arg, const char *data, size_t n)
{
	(void)arg;
	check(!FS.handed_client && !FS.handed_backend, "hand-off order");
	FS.handed_client = true;
	check_tail(BREC, FS.brec_len, data, n, "backend bytes after the verdict: wrong tail");
	show("<", data, n);
}

static void handoff_to_backend(void *arg, const char *data, size_t n)
{
	(void)arg;
	check(!FS.handed_backend, "hand-off order");
	FS.handed_backend = true;
	check_tail(CREC, FS.crec_len, data, n, "client bytes after the login: wrong tail");
	show(">", data, n);
}

void ictx_auth_ok(sy_ictx *c, const char *reply, size_t len)
{
	check(FS.backend_up && c->state == IC_BACKEND, "auth_ok outside a login");
	check_reply(reply, len, "auth_ok reply is not CRLF-terminated");
	show("=", "bridged", 7);
	ictx_send(c, reply, len);
	FS.handed_client = FS.handed_backend = false;
	ireader_handoff(c, &POOL, handoff_to_client, handoff_to_backend, NULL);
	check(!c->cbuf && !c->bbuf, "hand-off left a reader buffer");
	check(FS.crec_len == 0 || FS.handed_backend || FS.crec_len > REC_MAX ||
	          CREC[FS.crec_len - 1] == '\n',
	      "client bytes after the login not handed to the backend");
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
	ireader_client_drop(c, &POOL);
	FS.crec_len = 0;
	c->state = IC_CLIENT_TLS;
	FS.tls_pending = true;
}

void ictx_backend_starttls(sy_ictx *c)
{
	check(FS.backend_up && c->state == IC_BACKEND, "backend STARTTLS without a backend");
	ireader_backend_drop(c, &POOL);
	FS.brec_len = 0;
	FS.btls_pending = true;
}

/* ---- readers ------------------------------------------------------------------------------ */

/* The module's entries as the reader calls them: the line in a copy of its
 * own size (see the top of the file), and the reader's contract checked. */
static int fuzz_client_line(sy_ictx *c, char *line, size_t len)
{
	check(line[len] == '\0', "client line not NUL-terminated");
	check(c->seg_start <= len, "client line ends before seg_start");
	show("C:", line, len);
	char *copy = malloc(len + 1);
	check(copy != NULL, "oom");
	memcpy(copy, line, len + 1);
	char *held = c->cbuf;
	int r = FUZZ_OPS.client_line(c, copy, len);
	/* Unless STARTTLS dropped the buffer, the line may be passed again
	 * (a literal): with what the module wrote into it, as in the reader. */
	if (c->cbuf == held)
		memcpy(line, copy, len);
	free(copy);
	return r;
}

static int fuzz_backend_line(sy_ictx *c, char *line, size_t len)
{
	check(line[len] == '\0', "backend line not NUL-terminated");
	check(memchr(line, '\n', len) == NULL, "backend line holds LF");
	char *copy = malloc(len + 1);
	check(copy != NULL, "oom");
	memcpy(copy, line, len + 1);
	int r = FUZZ_OPS.backend_line(c, copy, len);
	free(copy);
	return r;
}

static void line_too_long(sy_ictx *c)
{
	c->ops->line_too_long(c);
	ictx_close_after_flush(c);
}

/* process_client() of interactive.c: the reader's verdicts. */
static void process_client(sy_ictx *c)
{
	c->processing = true;
	switch (ireader_client_lines(c, &POOL)) {
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

/* on_client_read() of interactive.c. */
static void client_read(sy_ictx *c, const char *data, size_t n)
{
	switch (ireader_client_append(c, &POOL, data, n)) {
	case SY_IREAD_OK:
		record(CREC, &FS.crec_len, data, n);
		process_client(c);
		break;
	case SY_IREAD_NOMEM:
		check(0, "oom");
		break;
	case SY_IREAD_TOO_LONG:
		line_too_long(c);
		break;
	default:
		break;
	}
}

/* on_backend_read() of interactive.c (the backend leg's reading stops at
 * its STARTTLS until the handshake is done). */
static void backend_read(sy_ictx *c, const char *data, size_t n)
{
	if (!FS.backend_up || c->state != IC_BACKEND || FS.btls_pending)
		return;
	/* Recorded first: the verdict (and the hand-off) comes from inside
	 * the reader. A read the reader refuses ends the login, which resets
	 * the record. */
	record(BREC, &FS.brec_len, data, n);
	switch (ireader_backend_read(c, &POOL, data, n)) {
	case SY_IREAD_NOMEM:
		check(0, "oom");
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
	SESSION.lcfg = &LCFG;
	SESSION.id = 0x1234;
	SESSION.state = SS_PROTOCOL;
	pool_init(&POOL, 0);
	OPS = FUZZ_OPS;
	OPS.client_line = fuzz_client_line;
	OPS.backend_line = fuzz_backend_line;
}

/* The listener's TLS mode and the client's address, from the flags. */
static void set_leg(void)
{
	LCFG = CFG->listeners[0];
	LCFG.tls = (FS.f & F_CLIENT_TLS) ? SY_TLS_IMPLICIT
	           : (FS.f & F_STARTTLS) ? SY_TLS_STARTTLS
	                                 : SY_TLS_PLAIN;
	memset(&SESSION.peer, 0, sizeof(SESSION.peer));
	if (FS.g & G_IPV6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&SESSION.peer;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(40123);
		inet_pton(AF_INET6, "2001:db8::7", &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&SESSION.peer;
		a->sin_family = AF_INET;
		a->sin_port = htons(40123);
		inet_pton(AF_INET, "192.0.2.7", &a->sin_addr);
	}
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
	set_leg();
	sy_caps_config *caps = &CFG->caps[FUZZ_PROTO];
	bool saved_plain = caps->allow_plain_auth_without_tls;
	caps->allow_plain_auth_without_tls = (FS.f & F_PLAIN_OK) != 0;

	sy_ictx *c = calloc(1, sizeof(*c));
	check(c != NULL, "oom");
	c->s = &SESSION;
	c->ops = &OPS;
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
	ireader_client_drop(c, &POOL);
	ireader_backend_drop(c, &POOL);
	check(POOL.outstanding == 0, "a pool block was not given back");
	if (c->ops->release)
		c->ops->release(c);
	free(c);
	caps->allow_plain_auth_without_tls = saved_plain;
	return 0;
}
