/*
 * libFuzzer target for the Redis store's connection code
 * (src/route/store_redis.c) as the proxy runs it: a real store on a real
 * libuv loop, connected over loopback TCP to a "server" that is this target,
 * which answers with the fuzzer's bytes. Beyond the reply conversions and
 * the reader (fuzz_redis_reply), this reaches on_read's reply loop and
 * where each reply goes: the AUTH and SELECT setup, CONFIG GET
 * notify-keyspace-events, the requests in flight (in order), the
 * subscriber's confirmations and pushes, and a reply nobody asked for; the
 * link dropped in the middle of a read, the requests parked before the
 * first connect, the close with requests pending.
 *
 * Input: byte 0 is the setup: bit 0 a subscriber (store_redis_subscribe)
 * instead of a request store, bit 1 a password in the URL (AUTH), bit 2
 * database 1 (SELECT), bit 3 keyspace notifications followed (subscriber),
 * bits 4-6 the number of requests (GET, SET, DEL, PUBLISH in turn),
 * bit 7 the server closes the connection after its last byte. Then the
 * server's writes, each a length byte L and L + 1 bytes.
 *
 * Checked: every request's callback runs exactly once, and by the time the
 * store's close is done; a FOUND answer carries a NUL-terminated value; an
 * ERROR carries a text; a subscriber message's payload is NUL-free text of
 * the length given; the store closes within a bounded number of loop turns
 * and leaves no handle on the loop (uv_loop_alive), and LeakSanitizer finds
 * nothing left allocated.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "switchyard/log.h"
#include "switchyard/store.h"

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "contract violated: %s\n", what);
		abort();
	}
}

static uv_loop_t loop;
static uv_timer_t tick; /* bounds each pump: the loop never waits on the target */
static int listen_fd = -1;
static int port;

#define MAX_REQS 7

static struct {
	int calls[MAX_REQS];
	bool closed;
} R;

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

static void setup_once(void)
{
	if (listen_fd >= 0)
		return;
	log_set_level(getenv("FUZZ_TRACE") ? SY_LOG_DEBUG : SY_LOG_ERROR);
	check(uv_loop_init(&loop) == 0, "loop");
	uv_timer_init(&loop, &tick);
	uv_unref((uv_handle_t *)&tick);
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	check(listen_fd >= 0 && bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	          listen(listen_fd, 64) == 0 &&
	          getsockname(listen_fd, (struct sockaddr *)&a, &alen) == 0,
	      "listen");
	port = ntohs(a.sin_port);
}

/* The turns-th loop turn while waiting for something (libuv's thread pool,
 * a connect, a handle closing): most do not wait, every eighth waits up to
 * a millisecond, so that nothing is spun on for long and nothing quick
 * costs a millisecond. */
static void pump(int turns)
{
	if (turns % 8 != 7) {
		uv_run(&loop, UV_RUN_NOWAIT);
		return;
	}
	uv_timer_start(&tick, on_tick, 1, 0);
	uv_run(&loop, UV_RUN_ONCE);
	uv_timer_stop(&tick);
}

/* One loop turn that does not wait: what was written on loopback is
 * already readable. */
static void turn(void)
{
	uv_run(&loop, UV_RUN_NOWAIT);
}

/* Reads and discards what the store sent (its commands). */
static void drain(int fd)
{
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0) {
	}
}

static void on_req(void *arg, sy_store_status st, const char *value, const char *error)
{
	int i = (int)(intptr_t)arg;
	check(i >= 0 && i < MAX_REQS, "callback argument");
	R.calls[i]++;
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "request %d: status %d value %s error %s\n", i, (int)st,
		        value ? value : "-", error ? error : "-");
	check(R.calls[i] == 1, "a request's callback ran twice");
	check(!R.closed, "a callback after the close was done");
	if (st == SY_STORE_FOUND)
		check(value != NULL && strlen(value) < 1u << 21, "FOUND without a value");
	if (st == SY_STORE_ERROR)
		check(error != NULL && strlen(error) < 4096, "ERROR without a text");
}

static void on_message(void *arg, sy_sub_kind kind, const char *payload, size_t len,
                       const char *what)
{
	(void)arg;
	(void)what;
	check(kind == SY_SUB_EVENT || kind == SY_SUB_KEYSPACE, "message kind");
	check(len == 0 || payload != NULL, "message without a payload");
	if (kind == SY_SUB_KEYSPACE)
		check(len > 0 && memchr(payload, '\0', len) == NULL, "keyspace key");
}

static void on_state(void *arg, bool up)
{
	(void)arg;
	(void)up;
}

static void on_closed(void *arg)
{
	(void)arg;
	R.closed = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	setup_once();
	memset(&R, 0, sizeof(R));
	uint8_t f = data[0];
	bool sub_mode = f & 1;
	int nreq = sub_mode ? 0 : (f >> 4) & 7;

	char url[128];
	snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d%s", (f & 2) ? ":secret@" : "", port,
	         (f & 4) ? "/1" : "");
	sy_mapping_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.source = SY_MAP_REDIS;
	cfg.lookup_timeout_ms = 2000;
	cfg.redis.url = url;
	cfg.redis.key_prefix = "sy:";
	cfg.redis.watch_keyspace = (f & 8) != 0;
	const char *error = NULL;
	sy_store_sub sub = {.message = on_message, .state = on_state};
	sy_store *s = sub_mode ? store_redis_subscribe(&loop, &cfg, &sub, &error)
	                       : store_redis_create(&loop, &cfg, 1, &error);
	check(s != NULL, "store creation");
	for (int i = 0; i < nreq; i++) {
		void *arg = (void *)(intptr_t)i;
		int r;
		switch (i % 4) {
		case 0:
			r = s->ops->get(s, "alice", on_req, arg);
			break;
		case 1:
			r = s->ops->put(s, "bob", "node-2", on_req, arg);
			break;
		case 2:
			r = s->ops->del(s, "carol", on_req, arg);
			break;
		default:
			r = s->ops->publish(s, "{\"v\":1}", on_req, arg);
			break;
		}
		if (r != 0)
			R.calls[i] = 1; /* refused: no callback will come */
	}

	/* The store resolves (libuv's thread pool) and connects. */
	int fd = -1;
	for (int turns = 0; fd < 0 && turns < 40000; turns++) {
		pump(turns);
		fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	}
	check(fd >= 0, "the store never connected");
	/* Each write goes out at once (Nagle would hold a small one back until
	 * the store's delayed ACK). */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	size_t i = 1;
	while (i < size) {
		size_t n = (size_t)data[i++] + 1;
		if (n > size - i)
			n = size - i;
		turn();
		drain(fd);
		/* Loopback: once written, the bytes are in the store's socket. */
		ssize_t w = send(fd, data + i, n, MSG_NOSIGNAL);
		(void)w;
		i += n;
		turn();
		turn();
	}
	turn();
	drain(fd);
	if (f & 0x80) {
		close(fd);
		fd = -1;
		turn();
	}

	s->ops->close(s, on_closed, NULL);
	for (int turns = 0; !R.closed && turns < 40000; turns++)
		pump(turns);
	check(R.closed, "the store did not close");
	for (int k = 0; k < nreq; k++)
		check(R.calls[k] == 1, "a request's callback never ran");
	/* Whatever the store still had open is gone. */
	for (int turns = 0; uv_loop_alive(&loop) && turns < 800; turns++)
		pump(turns);
	check(!uv_loop_alive(&loop), "the store left a handle on the loop");

	if (fd >= 0)
		close(fd);
	/* Reconnection attempts the store made before it closed. */
	int extra;
	while ((extra = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		close(extra);
	return 0;
}
