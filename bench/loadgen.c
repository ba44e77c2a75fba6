/* sy-loadgen: IMAP login load generator on libuv (bench only, not installed).
 *
 * N concurrent sessions each: connect, read the greeting, "a1 LOGIN user
 * pass", read the tagged reply, "a2 LOGOUT", read until close; repeated
 * until TOTAL logins have been attempted. Prints logins/s, errors and
 * latency percentiles.
 *
 * Usage: sy-loadgen HOST PORT USER PASS CONCURRENCY TOTAL
 *
 * Plain client leg only for now: the TLS leg and source-address round robin
 * from issue 16 are not implemented yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

enum { ST_GREET, ST_LOGIN, ST_LOGOUT };

struct sess {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	int state;
	size_t fill;
	char buf[4096];
	uint64_t t0;
	int failed;
};

static struct sockaddr_storage g_addr;
static const char *g_user, *g_pass;
static long g_total, g_started, g_done, g_errors;
static uint64_t *g_lat;
static long g_nlat;
static char g_login[1024];
static const char g_logout[] = "a2 LOGOUT\r\n";

static void start_one(void);

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	(void)sz;
	struct sess *s = h->data;
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
	free(s);
	start_one();
}

static void fail(struct sess *s)
{
	s->failed = 1;
	if (!uv_is_closing((uv_handle_t *)&s->tcp))
		uv_close((uv_handle_t *)&s->tcp, close_cb);
}

static void write_cb(uv_write_t *w, int st)
{
	if (st < 0)
		fail(w->data);
}

static void send_str(struct sess *s, const char *p, size_t n)
{
	uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
	s->wreq.data = s;
	if (uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, write_cb) < 0)
		fail(s);
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

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct sess *s = st->data;
	if (n < 0) {
		if (n == UV_EOF && s->state == ST_LOGOUT)
			uv_close((uv_handle_t *)&s->tcp, close_cb);
		else
			fail(s);
		return;
	}
	s->fill += (size_t)n;
	int ok = 0;
	if (s->state == ST_GREET) {
		if (take_line(s, "* ", &ok)) {
			if (!ok)
				return fail(s);
			s->state = ST_LOGIN;
			send_str(s, g_login, strlen(g_login));
		}
	} else if (s->state == ST_LOGIN) {
		if (take_line(s, "a1 ", &ok)) {
			if (!ok)
				return fail(s);
			s->state = ST_LOGOUT;
			send_str(s, g_logout, sizeof(g_logout) - 1);
		}
	} else {
		s->fill = 0; /* discard until EOF */
	}
	if (s->fill >= sizeof(s->buf) - 1)
		fail(s);
}

static void connect_cb(uv_connect_t *c, int st)
{
	struct sess *s = c->data;
	if (st < 0)
		return fail(s);
	uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
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
	uv_tcp_init(uv_default_loop(), &s->tcp);
	s->tcp.data = s;
	s->creq.data = s;
	if (uv_tcp_connect(&s->creq, &s->tcp, (struct sockaddr *)&g_addr, connect_cb) < 0)
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

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s HOST PORT USER PASS CONCURRENCY TOTAL\n", argv[0]);
		return 2;
	}
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
	snprintf(g_login, sizeof(g_login), "a1 LOGIN %s %s\r\n", g_user, g_pass);
	g_lat = calloc((size_t)g_total, sizeof(*g_lat));
	if (!g_lat)
		return 1;
	uint64_t t0 = uv_hrtime();
	for (long i = 0; i < conc; i++)
		start_one();
	uv_run(uv_default_loop(), UV_RUN_DEFAULT);
	double secs = (double)(uv_hrtime() - t0) / 1e9;
	qsort(g_lat, (size_t)g_nlat, sizeof(*g_lat), cmp_u64);
	printf("logins=%ld errors=%ld seconds=%.3f logins_per_s=%.1f p50_us=%.0f p90_us=%.0f "
	       "p99_us=%.0f max_us=%.0f\n",
	       g_nlat, g_errors, secs, (double)g_nlat / secs, pct(0.5), pct(0.9), pct(0.99),
	       pct(1.0));
	free(g_lat);
	return g_errors ? 1 : 0;
}
