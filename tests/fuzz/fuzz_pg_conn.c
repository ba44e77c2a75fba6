/*
 * libFuzzer target for the PostgreSQL store's connection code
 * (src/route/store_sql.c) as the proxy runs it: a real store (libpq in
 * non-blocking mode on a libuv loop) connected over a Unix socket (a
 * socket directory as the URL's host, which the store passes to libpq as
 * it is) to a "server" that is this target. Loopback TCP costs about
 * twice as much per input in the kernel, and the store's code is the same
 * either way (only a host name is resolved differently, which no
 * server's bytes reach). After a canned startup (trust
 * authentication, parameters, ReadyForQuery) or none, the server's messages
 * are the fuzzer's. This reaches collect() and its routing of results to the
 * request in flight, the LISTEN state and its verdict, notifications
 * handed to the subscriber, results nobody asked for, errors and a server
 * closing mid-result, the queue behind the one query in flight, and the
 * close with requests pending. libpq parses the wire (it is not
 * instrumented, ASan still sees what it returns being misused).
 *
 * Input: byte 0 is the setup: bit 0 a listener (store_sql_listen) instead
 * of a request store, bits 1-3 the number of requests (GET, SET, DEL,
 * PUBLISH in turn), bit 4 no canned startup (the fuzzer's messages start
 * at the authentication), bit 7 the server closes the connection after its
 * last message. Then the server's messages: a type byte, a length byte L
 * and L payload bytes, sent framed (type, int32 length, payload); type 0 is
 * L raw bytes instead, so the framing itself can break. Type 't' is sent
 * as 'T' (a libpq leak, see below).
 *
 * Checked: every request's callback runs exactly once, and by the time the
 * store's close is done; FOUND carries a NUL-terminated value, ERROR a
 * text; a notification's payload is of the length given; the store closes
 * within a bounded number of loop turns and leaves no handle on the loop,
 * and LeakSanitizer finds nothing left allocated.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
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
static char sock_dir[64]; /* the URL's host: a directory for .s.PGSQL.5432 */
static char sock_path[128];

#define MAX_REQS 7

static struct {
	int calls[MAX_REQS];
	bool closed;
} R;

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

static void remove_socket(void)
{
	unlink(sock_path);
	rmdir(sock_dir);
}

static void setup_once(void)
{
	if (listen_fd >= 0)
		return;
	log_set_level(getenv("FUZZ_TRACE") ? SY_LOG_DEBUG : SY_LOG_ERROR);
	check(uv_loop_init(&loop) == 0, "loop");
	uv_timer_init(&loop, &tick);
	uv_unref((uv_handle_t *)&tick);
	snprintf(sock_dir, sizeof(sock_dir), "/tmp/fuzz-pg-XXXXXX");
	check(mkdtemp(sock_dir) != NULL, "socket directory");
	snprintf(sock_path, sizeof(sock_path), "%s/.s.PGSQL.5432", sock_dir);
	atexit(remove_socket);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
	check(listen_fd >= 0 && bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	          listen(listen_fd, 64) == 0,
	      "listen");
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

/* One loop turn that does not wait: what was written on the socket is
 * already readable. */
static void turn(void)
{
	uv_run(&loop, UV_RUN_NOWAIT);
}

/* True when the store has sent something. */
static bool readable(int fd)
{
	char b;
	return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Sends `len` bytes and lets the store read them: one loop turn that does
 * not wait, as the bytes are already in the store's socket. The turn's idle
 * phase runs first, so completions the previous chunk queued are delivered
 * (and their callbacks run) before this chunk is read, as they would be
 * between two reads in the proxy. What the store sends back (its queries)
 * stays queued on this side until drain() at the end: a few hundred bytes
 * per input, far below the socket's buffer. (This was a turn, a drain, the
 * send and two turns per chunk, about seven system calls; inputs of a few
 * hundred messages spent most of their time there.) */
static void server_send(int fd, const char *msg, size_t len)
{
	ssize_t w = send(fd, msg, len, MSG_NOSIGNAL);
	(void)w;
	turn();
}

/* Reads and discards what the store sent (its queries). */
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
	check(kind == SY_SUB_EVENT, "message kind");
	check(payload != NULL && strlen(payload) == len, "notification payload");
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

/* Caps what libpq allocates from the stream's announced sizes, without
 * changing what it parses. Walking the messages as libpq frames them
 * (type byte, int32 length that counts itself): a length above
 * MAX_ANNOUNCED becomes MAX_ANNOUNCED, more than any input here can
 * deliver, so libpq still waits for bytes that never come (or, above
 * 30,000 for a short message type, still calls the stream broken); and the
 * field count (int16) of a RowDescription, a DataRow or a COPY start (after
 * its format byte) keeps only its low byte, more fields than 255 payload
 * bytes can describe either way. (The COPY start's count was missed at
 * first: its 1 MB of zeroed column descriptions took half the time.)
 * Unshaped, libpq grew its buffer to a gigabyte announced and zeroed
 * room for 32,767 fields, and the shadow memory ASan poisons for those
 * took over 80 % of this target's time. A length libpq rejects (below 4,
 * or negative) ends its parsing, so the walk stops there too.
 *
 * With `startup` (no canned startup: the stream begins at the
 * authentication) libpq frames differently until it is in: it takes an
 * AuthenticationOk as its 9 bytes whatever length it announces, and any
 * other first message ends the connection, as no password is configured
 * (a password, SASL or GSS request, an error, a protocol negotiation). */
#define MAX_ANNOUNCED (1u << 15)

static void shape(uint8_t *s, size_t len, bool startup)
{
	size_t pos = 0;
	bool rows_pending = false;
	while (len - pos >= 5) {
		uint32_t l = (uint32_t)s[pos + 1] << 24 | (uint32_t)s[pos + 2] << 16 |
		             (uint32_t)s[pos + 3] << 8 | s[pos + 4];
		if (startup) {
			/* libpq takes only 8 to 2,000 for an authentication request. */
			if (s[pos] != 'R' || l < 8 || l > 2000 || len - pos < 9 ||
			    memcmp(s + pos + 5, "\0\0\0\0", 4) != 0)
				return;
			startup = false;
			pos += 9;
			continue;
		}
		if (l < 4 || l >= 0x80000000u)
			return;
		if (l > MAX_ANNOUNCED) {
			l = MAX_ANNOUNCED;
			s[pos + 1] = (uint8_t)(l >> 24);
			s[pos + 2] = (uint8_t)(l >> 16);
			s[pos + 3] = (uint8_t)(l >> 8);
			s[pos + 4] = (uint8_t)l;
		}
		bool copy_start = s[pos] == 'G' || s[pos] == 'H' || s[pos] == 'W';
		/* A COPY start too short for its format byte and column count:
		 * libpq 15's getCopyStart reads them from the bytes after the
		 * message, calls that "not enough data" and parses it again on
		 * every arrival, each time zeroing room for up to 32,767 columns
		 * (11 to 23 s for one input under ASan). It becomes a CopyData. */
		if (copy_start && l < 7) {
			s[pos] = 'd';
			copy_start = false;
		}
		if ((s[pos] == 'T' || s[pos] == 'D') && l >= 6 && len - pos > 5)
			s[pos + 5] = 0;
		else if (copy_start && l >= 7 && len - pos > 6)
			s[pos + 6] = 0;
		/* libpq 15 leaks the result a RowDescription began when a COPY
		 * start (CopyIn/Out/BothResponse) comes before the query's end:
		 * getCopyStart stores its own result over it (fe-protocol3.c, the
		 * same family as the ParameterDescription leak below). Such a
		 * COPY start becomes a CopyData, which libpq drops outside a COPY;
		 * a COPY start anywhere else still reaches the store. */
		if (s[pos] == 'T')
			rows_pending = true;
		else if (s[pos] == 'C' || s[pos] == 'E' || s[pos] == 'I')
			rows_pending = false;
		else if (rows_pending && copy_start)
			s[pos] = 'd';
		if (len - pos - 1 <= l)
			return;
		pos += 1 + l;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	setup_once();
	memset(&R, 0, sizeof(R));
	uint8_t f = data[0];
	bool sub_mode = f & 1;
	int nreq = sub_mode ? 0 : (f >> 1) & 7;

	char url[200];
	snprintf(url, sizeof(url),
	         "postgresql://sy@/routes?host=%s&port=5432&sslmode=disable&gssencmode=disable",
	         sock_dir);
	sy_mapping_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.source = SY_MAP_SQL;
	cfg.lookup_timeout_ms = 2000;
	cfg.sql.url = url;
	cfg.sql.upsert_query = "INSERT INTO routes VALUES ($1, $2)";
	cfg.sql.delete_query = "DELETE FROM routes WHERE identifier = $1";
	const char *error = NULL;
	sy_store_sub sub = {.message = on_message, .state = on_state};
	sy_store *s = sub_mode ? store_sql_listen(&loop, &cfg, &sub, &error)
	                       : store_sql_create(&loop, &cfg, 1, &error);
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

	/* The store connects (a socket directory: no lookup). */
	int fd = -1;
	for (int turns = 0; fd < 0 && turns < 40000; turns++) {
		pump(turns);
		fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	}
	check(fd >= 0, "the store never connected");

	if (!(f & 0x10)) {
		/* libpq's StartupMessage first, then what a trust login answers. */
		for (int turns = 0; turns < 1600 && !readable(fd); turns++)
			pump(turns);
		drain(fd);
		static const char startup[] = "R\0\0\0\x08\0\0\0\0"
		                              "S\0\0\0\x18server_version\0"
		                              "16.4\0"
		                              "S\0\0\0\x19"
		                              "client_encoding\0UTF8\0"
		                              "K\0\0\0\x0c\0\0\0\x2a\0\0\0\x07"
		                              "Z\0\0\0\x05I";
		server_send(fd, startup, sizeof(startup) - 1);
	}
	/* The whole stream first, then sent chunk by chunk: a message header
	 * can span two chunks, and shape() must see it whole. */
	static uint8_t stream[3 * 8192];
	static size_t ends[8192];
	size_t slen = 0, nchunks = 0;
	size_t i = 1;
	while (i + 2 <= size && slen + 5 + 255 <= sizeof(stream)) {
		uint8_t type = data[i], l = data[i + 1];
		i += 2;
		size_t n = l < size - i ? l : size - i;
		/* Never a ParameterDescription: libpq 15 (Debian 12) stores one
		 * over the result a RowDescription of the same query left, and
		 * leaks that (fe-protocol3.c getParamDescriptions; a libpq bug
		 * on a stream no server sends, as the store never Describes). */
		if (type == 't')
			type = 'T';
		if (type != 0) {
			uint32_t len = htonl((uint32_t)n + 4);
			stream[slen] = type;
			memcpy(stream + slen + 1, &len, 4);
			slen += 5;
		}
		memcpy(stream + slen, data + i, n);
		slen += n;
		i += n;
		ends[nchunks++] = slen;
	}
	shape(stream, slen, f & 0x10);
	for (size_t c = 0, from = 0; c < nchunks; from = ends[c++])
		server_send(fd, (const char *)stream + from, ends[c] - from);
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
