/* sy-loadgen: IMAP login load generator on libuv (bench only, not installed).
 *
 * N concurrent sessions each: connect, read the greeting, "a1 LOGIN user
 * pass", read the tagged reply, "a2 LOGOUT", read until close; repeated
 * until TOTAL logins have been attempted. Prints logins/s, errors and
 * latency percentiles.
 *
 * Usage: sy-loadgen [--tls] [--resume] [--sources K] HOST PORT USER PASS CONCURRENCY TOTAL
 *
 *   --tls        implicit TLS on the connection (imaps): OpenSSL on memory
 *                BIOs, driven by the libuv reads and writes; the server's
 *                certificate is not verified (a bench, not a client).
 *   --resume     offer the last session ticket (or session) received, so
 *                handshakes resume; off by default, every handshake is full.
 *                The output then says how many were resumed.
 *   --sources K  connect from 127.0.0.2 .. 127.0.0.(K+1) in turn
 *                (IP_BIND_ADDRESS_NO_PORT: ports per 4-tuple).
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { ST_GREET, ST_LOGIN, ST_LOGOUT };

struct sess {
	uv_tcp_t tcp;
	uv_connect_t creq;
	int state;
	size_t fill;
	char buf[4096];
	uint64_t t0;
	int failed;
	SSL *ssl; /* NULL on a plain connection */
	BIO *rbio, *wbio;
};

struct wr {
	uv_write_t req;
	struct sess *s;
	char data[];
};

static struct sockaddr_storage g_addr;
static const char *g_user, *g_pass;
static long g_total, g_started, g_done, g_errors, g_resumed;
static uint64_t *g_lat;
static long g_nlat;
static char g_login[1024];
static const char g_logout[] = "a2 LOGOUT\r\n";
static SSL_CTX *g_ctx;
static SSL_SESSION *g_session; /* the last one received (--resume) */
static int g_resume, g_sources;
static char g_cbuf[65536]; /* ciphertext read buffer: consumed before the next read */

static void start_one(void);

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	(void)sz;
	struct sess *s = h->data;
	if (s->ssl) {
		b->base = g_cbuf;
		b->len = sizeof(g_cbuf);
		return;
	}
	b->base = s->buf + s->fill;
	b->len = sizeof(s->buf) - 1 - s->fill;
}

static void close_cb(uv_handle_t *h)
{
	struct sess *s = h->data;
	g_done++;
	if (s->failed)
		g_errors++;
	else
		g_lat[g_nlat++] = uv_hrtime() - s->t0;
	if (s->ssl)
		SSL_free(s->ssl); /* frees both BIOs */
	free(s);
	start_one();
}

static void finish(struct sess *s)
{
	if (!uv_is_closing((uv_handle_t *)&s->tcp))
		uv_close((uv_handle_t *)&s->tcp, close_cb);
}

/* SY_LOADGEN_VERBOSE=1 in the environment: one line per failed session. */
static int g_verbose;
#define fail(s) fail_at((s), __LINE__)
static void fail_at(struct sess *s, int line)
{
	if (!s->failed && g_verbose)
		fprintf(stderr, "session failed: state=%d line=%d buffered=%.*s\n", s->state, line,
		        (int)s->fill, s->buf);
	s->failed = 1;
	finish(s);
}

static void write_cb(uv_write_t *w, int st)
{
	struct wr *r = (struct wr *)w;
	if (st < 0)
		fail(r->s);
	free(r);
}

static void write_raw(struct sess *s, const char *p, size_t n)
{
	struct wr *r = malloc(sizeof(*r) + n);
	if (!r)
		abort();
	r->s = s;
	memcpy(r->data, p, n);
	uv_buf_t b = uv_buf_init(r->data, (unsigned)n);
	if (uv_write(&r->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb) < 0) {
		free(r);
		fail(s);
	}
}

/* Sends whatever ciphertext OpenSSL has produced, in one write. */
static void flush_tls(struct sess *s)
{
	size_t n = BIO_ctrl_pending(s->wbio);
	if (n == 0 || uv_is_closing((uv_handle_t *)&s->tcp))
		return;
	struct wr *r = malloc(sizeof(*r) + n);
	if (!r)
		abort();
	r->s = s;
	int got = BIO_read(s->wbio, r->data, (int)n);
	uv_buf_t b = uv_buf_init(r->data, got > 0 ? (unsigned)got : 0);
	if (got <= 0 || uv_write(&r->req, (uv_stream_t *)&s->tcp, &b, 1, write_cb) < 0) {
		free(r);
		fail(s);
	}
}

static void send_str(struct sess *s, const char *p, size_t n)
{
	if (!s->ssl)
		return write_raw(s, p, n);
	if (SSL_write(s->ssl, p, (int)n) != (int)n)
		return fail(s);
	flush_tls(s);
}

/* Returns 1 when a complete line ending the current step is in the buffer. */
static int take_line(struct sess *s, const char *prefix, int *ok)
{
	for (;;) {
		char *nl = memchr(s->buf, '\n', s->fill);
		if (!nl)
			return 0;
		size_t len = (size_t)(nl - s->buf) + 1;
		int match = strncmp(s->buf, prefix, strlen(prefix)) == 0;
		if (match)
			*ok = strncmp(s->buf + strlen(prefix), "OK", 2) == 0;
		memmove(s->buf, s->buf + len, s->fill - len);
		s->fill -= len;
		if (match)
			return 1;
	}
}

/* Acts on the plaintext in s->buf; returns -1 when the session is closing. */
static int process(struct sess *s)
{
	int ok = 0;
	if (s->state == ST_GREET) {
		if (take_line(s, "* ", &ok)) {
			if (!ok)
				return fail(s), -1;
			if (s->ssl && SSL_session_reused(s->ssl))
				g_resumed++;
			s->state = ST_LOGIN;
			send_str(s, g_login, strlen(g_login));
		}
	} else if (s->state == ST_LOGIN) {
		if (take_line(s, "a1 ", &ok)) {
			if (!ok)
				return fail(s), -1;
			s->state = ST_LOGOUT;
			send_str(s, g_logout, sizeof(g_logout) - 1);
		}
	} else {
		s->fill = 0; /* discard until EOF */
	}
	if (s->fill >= sizeof(s->buf) - 1)
		return fail(s), -1;
	return uv_is_closing((uv_handle_t *)&s->tcp) ? -1 : 0;
}

static void tls_input(struct sess *s, const char *p, size_t n)
{
	if (BIO_write(s->rbio, p, (int)n) != (int)n)
		return fail(s);
	for (;;) {
		int r = SSL_read(s->ssl, s->buf + s->fill, (int)(sizeof(s->buf) - 1 - s->fill));
		if (r > 0) {
			s->fill += (size_t)r;
			if (process(s) < 0)
				return;
			continue;
		}
		int e = SSL_get_error(s->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_ZERO_RETURN && s->state == ST_LOGOUT)
			return finish(s);
		ERR_clear_error();
		return fail(s);
	}
	flush_tls(s); /* handshake messages, key updates */
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct sess *s = st->data;
	if (n < 0) {
		if (n == UV_EOF && s->state == ST_LOGOUT)
			finish(s);
		else
			fail(s);
		return;
	}
	if (s->ssl)
		return tls_input(s, b->base, (size_t)n);
	s->fill += (size_t)n;
	process(s);
}

static void connect_cb(uv_connect_t *c, int st)
{
	struct sess *s = c->data;
	if (st < 0)
		return fail(s);
	if (s->ssl) {
		int r = SSL_do_handshake(s->ssl); /* the ClientHello */
		if (r <= 0 && SSL_get_error(s->ssl, r) != SSL_ERROR_WANT_READ)
			return fail(s);
		flush_tls(s);
	}
	uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	if (g_session)
		SSL_SESSION_free(g_session);
	g_session = sess;
	return 1; /* we keep the reference */
}

static int setup_tls(struct sess *s)
{
	s->ssl = SSL_new(g_ctx);
	s->rbio = BIO_new(BIO_s_mem());
	s->wbio = BIO_new(BIO_s_mem());
	if (!s->ssl || !s->rbio || !s->wbio)
		return -1;
	SSL_set_bio(s->ssl, s->rbio, s->wbio);
	SSL_set_connect_state(s->ssl);
	SSL_set_tlsext_host_name(s->ssl, "localhost");
	if (g_resume && g_session)
		SSL_set_session(s->ssl, g_session);
	return 0;
}

static int bind_source(struct sess *s)
{
	static unsigned next;
	struct sockaddr_in src = {.sin_family = AF_INET};
	src.sin_addr.s_addr = htonl(0x7f000002u + (next++ % (unsigned)g_sources));
	uv_os_fd_t fd;
	int one = 1;
	if (uv_fileno((uv_handle_t *)&s->tcp, &fd) != 0 ||
	    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) != 0)
		return -1;
	return uv_tcp_bind(&s->tcp, (struct sockaddr *)&src, 0);
}

static void start_one(void)
{
	if (g_started >= g_total)
		return;
	g_started++;
	struct sess *s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	s->t0 = uv_hrtime();
	uv_tcp_init_ex(uv_default_loop(), &s->tcp, g_sources ? AF_INET : AF_UNSPEC);
	s->tcp.data = s;
	s->creq.data = s;
	if ((g_ctx && setup_tls(s) != 0) || (g_sources && bind_source(s) != 0) ||
	    uv_tcp_connect(&s->creq, &s->tcp, (struct sockaddr *)&g_addr, connect_cb) < 0)
		fail(s);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(double p)
{
	if (g_nlat == 0)
		return 0;
	long i = (long)(p * (double)(g_nlat - 1));
	return (double)g_lat[i] / 1e3;
}

static int usage(const char *argv0)
{
	fprintf(
	    stderr,
	    "usage: %s [--tls] [--resume] [--sources K] HOST PORT USER PASS CONCURRENCY TOTAL\n",
	    argv0);
	return 2;
}

int main(int argc, char **argv)
{
	int tls = 0, i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--tls") == 0)
			tls = 1;
		else if (strcmp(argv[i], "--resume") == 0)
			g_resume = 1;
		else if (strcmp(argv[i], "--sources") == 0 && i + 1 < argc)
			g_sources = atoi(argv[++i]);
		else
			return usage(argv[0]);
	}
	if (argc - i != 6 || g_sources < 0 || g_sources > 250)
		return usage(argv[0]);
	argv += i - 1;
	int port = atoi(argv[2]);
	if (uv_ip4_addr(argv[1], port, (struct sockaddr_in *)&g_addr) != 0 &&
	    uv_ip6_addr(argv[1], port, (struct sockaddr_in6 *)&g_addr) != 0) {
		fprintf(stderr, "bad address %s\n", argv[1]);
		return 2;
	}
	g_user = argv[3];
	g_pass = argv[4];
	long conc = atol(argv[5]);
	g_total = atol(argv[6]);
	if (conc < 1 || g_total < 1)
		return 2;
	if (tls) {
		g_ctx = SSL_CTX_new(TLS_client_method());
		if (!g_ctx)
			return 1;
		SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
		if (g_resume) {
			SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_CLIENT |
			                                          SSL_SESS_CACHE_NO_INTERNAL_STORE);
			SSL_CTX_sess_set_new_cb(g_ctx, new_session_cb);
		} else {
			SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
		}
	}
	g_verbose = getenv("SY_LOADGEN_VERBOSE") != NULL;
	snprintf(g_login, sizeof(g_login), "a1 LOGIN %s %s\r\n", g_user, g_pass);
	g_lat = calloc((size_t)g_total, sizeof(*g_lat));
	if (!g_lat)
		return 1;
	uint64_t t0 = uv_hrtime();
	for (long k = 0; k < conc; k++)
		start_one();
	uv_run(uv_default_loop(), UV_RUN_DEFAULT);
	double secs = (double)(uv_hrtime() - t0) / 1e9;
	qsort(g_lat, (size_t)g_nlat, sizeof(*g_lat), cmp_u64);
	printf("logins=%ld errors=%ld seconds=%.3f logins_per_s=%.1f p50_us=%.0f p90_us=%.0f "
	       "p99_us=%.0f max_us=%.0f",
	       g_nlat, g_errors, secs, (double)g_nlat / secs, pct(0.5), pct(0.9), pct(0.99),
	       pct(1.0));
	if (tls)
		printf(" tls=1 resumed=%ld", g_resumed);
	printf("\n");
	free(g_lat);
	if (g_session)
		SSL_SESSION_free(g_session);
	SSL_CTX_free(g_ctx);
	return g_errors ? 1 : 0;
}
