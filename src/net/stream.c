/*
 * sy_stream: TCP with optional TLS over libuv.
 *
 * Reads: libuv asks for a buffer only when the socket is readable, and the
 * buffer goes back to the pool as soon as its bytes are consumed. For TLS the
 * ciphertext chunk is handed to OpenSSL through a custom BIO that reads from
 * the chunk in place; plaintext is produced into a second pooled block for the
 * duration of the owner's callback.
 *
 * Writes: plaintext streams try a synchronous write first and queue only what
 * the kernel refused. TLS streams encrypt into the output queue (the BIO's
 * write side) and flush it the same way. At most one uv_write is in flight;
 * blocks it covers are not touched until it completes.
 */
#include "switchyard/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sy_outblock {
	sy_outblock *next;
	size_t off, len;
	char data[];
};

#define OUTBLOCK_CAP   (SY_BLOCK_SIZE - sizeof(sy_outblock))
#define MAX_WRITE_BUFS 16

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void pump(sy_stream *s);
static void flush_out(sy_stream *s);
static void update_uv_read(sy_stream *s);

/* ---- output queue ---------------------------------------------------- */

static size_t nblocks(const sy_stream *s)
{
	size_t n = 0;
	for (sy_outblock *b = s->out_head; b; b = b->next)
		n++;
	return n;
}

/* The queue's tail block if it has room and no write in flight owns it,
 * else a new block appended to the queue; NULL when out of memory. */
static sy_outblock *writable_tail(sy_stream *s)
{
	sy_outblock *t = s->out_tail;
	bool tail_busy = t && s->writes_in_flight && nblocks(s) <= s->inflight_blocks;
	if (t && !tail_busy && t->off + t->len < OUTBLOCK_CAP)
		return t;
	sy_outblock *b = (sy_outblock *)pool_get(s->pool);
	if (!b)
		return NULL;
	b->next = NULL;
	b->off = 0;
	b->len = 0;
	if (t)
		t->next = b;
	else
		s->out_head = b;
	s->out_tail = b;
	return b;
}

/* Appends bytes to the queue, filling the tail block unless a write in
 * flight owns it. Returns 0 or UV_ENOMEM. */
static int append_out(sy_stream *s, const char *data, size_t len)
{
	while (len > 0) {
		sy_outblock *t = writable_tail(s);
		if (!t)
			return UV_ENOMEM;
		size_t room = OUTBLOCK_CAP - (t->off + t->len);
		size_t n = len < room ? len : room;
		memcpy(t->data + t->off + t->len, data, n);
		t->len += n;
		s->out_bytes += n;
		data += n;
		len -= n;
	}
	return 0;
}

static void pop_block(sy_stream *s)
{
	sy_outblock *b = s->out_head;
	s->out_head = b->next;
	if (!s->out_head)
		s->out_tail = NULL;
	s->out_bytes -= b->len;
	pool_put(s->pool, (char *)b);
}

static void free_out(sy_stream *s)
{
	while (s->out_head)
		pop_block(s);
	s->inflight_blocks = 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status;
}

/* Once the queue is empty after sy_stream_shutdown, send the FIN. */
static void maybe_finish_shutdown(sy_stream *s)
{
	if (!s->shut || s->closing || s->out_head || s->writes_in_flight)
		return;
	if (s->fin_issued)
		return;
	s->fin_issued = true;
	uv_shutdown(&s->sreq, (uv_stream_t *)&s->tcp, on_shutdown);
}

static void report_error(sy_stream *s, int err)
{
	if (s->closing || s->eof_seen)
		return;
	s->eof_seen = true;
	update_uv_read(s);
	if (s->read_cb)
		s->read_cb(s, NULL, err);
}

static void on_write(uv_write_t *req, int status)
{
	sy_stream *s = req->data;
	s->writes_in_flight = 0;
	while (s->inflight_blocks > 0) {
		pop_block(s);
		s->inflight_blocks--;
	}
	if (s->closing)
		return;
	if (status < 0) {
		s->write_failed = true;
		free_out(s);
		report_error(s, status);
		return;
	}
	flush_out(s);
	if (!s->out_head && !s->writes_in_flight) {
		maybe_finish_shutdown(s);
		if (s->drain_cb && !s->closing)
			s->drain_cb(s);
	}
}

/* Hands the queue to the kernel: synchronous writes while they succeed, then
 * one asynchronous uv_write for the rest. */
static void flush_out(sy_stream *s)
{
	if (s->writes_in_flight || s->closing || s->write_failed)
		return;
	while (s->out_head) {
		sy_outblock *b = s->out_head;
		uv_buf_t buf = uv_buf_init(b->data + b->off, (unsigned)b->len);
		int r = uv_try_write((uv_stream_t *)&s->tcp, &buf, 1);
		if (r == UV_EAGAIN || r == UV_ENOSYS)
			break;
		if (r < 0) {
			s->write_failed = true;
			free_out(s);
			report_error(s, r);
			return;
		}
		b->off += (size_t)r;
		b->len -= (size_t)r;
		s->out_bytes -= (size_t)r;
		if (b->len > 0)
			break;
		pop_block(s);
	}
	if (!s->out_head)
		return;

	uv_buf_t bufs[MAX_WRITE_BUFS];
	unsigned n = 0;
	for (sy_outblock *b = s->out_head; b && n < MAX_WRITE_BUFS; b = b->next)
		bufs[n++] = uv_buf_init(b->data + b->off, (unsigned)b->len);
	s->wreq.data = s;
	int r = uv_write(&s->wreq, (uv_stream_t *)&s->tcp, bufs, n, on_write);
	if (r < 0) {
		s->write_failed = true;
		free_out(s);
		report_error(s, r);
		return;
	}
	s->writes_in_flight = 1;
	s->inflight_blocks = n;
}

/* ---- the BIO between OpenSSL and the stream ---------------------------- */

static int bio_write(BIO *bio, const char *data, int len)
{
	sy_stream *s = BIO_get_data(bio);
	BIO_clear_retry_flags(bio);
	if (len <= 0)
		return 0;
	if (append_out(s, data, (size_t)len) != 0)
		return -1;
	return len;
}

static int bio_read(BIO *bio, char *out, int len)
{
	sy_stream *s = BIO_get_data(bio);
	BIO_clear_retry_flags(bio);
	size_t avail = s->in_buf ? s->in_len - s->in_off : 0;
	if (avail == 0) {
		if (s->eof_seen)
			return 0;
		BIO_set_retry_read(bio);
		return -1;
	}
	size_t n = (size_t)len < avail ? (size_t)len : avail;
	memcpy(out, s->in_buf + s->in_off, n);
	s->in_off += n;
	return (int)n;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	(void)bio;
	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	default:
		return 0;
	}
}

static int bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

static void init_bio_method(void)
{
	bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sy_stream");
	BIO_meth_set_write(bio_method, bio_write);
	BIO_meth_set_read(bio_method, bio_read);
	BIO_meth_set_ctrl(bio_method, bio_ctrl);
	BIO_meth_set_create(bio_method, bio_create);
}

/* ---- reading ------------------------------------------------------------ */

static void release_input(sy_stream *s)
{
	if (s->in_buf && s->in_off >= s->in_len) {
		pool_put(s->pool, s->in_buf);
		s->in_buf = NULL;
		s->in_off = s->in_len = 0;
	}
}

/* ---- splice mode ---------------------------------------------------------- */

/*
 * Splice mode moves a plaintext bridge's bytes from one socket to the other
 * inside the kernel (splice(2) through a pipe), so they are never copied into
 * user space and back: on loopback about 0.3 ms of CPU per MiB instead of
 * about 0.5 with read(2) + write(2) of 32 KiB blocks (bench/bridge_cpu.py).
 *
 * libuv still watches the socket: on_alloc hands libuv an empty buffer, which
 * libuv answers with read_cb(UV_ENOBUFS) without reading, and that is the
 * readiness signal splice_pump() acts on.
 *
 * One pipe per worker thread serves every session, because it is empty
 * whenever splice_pump() returns: what the destination socket does not take
 * at once is read out of the pipe into the destination's output queue, which
 * then flushes and applies backpressure exactly like sy_stream_write. Any
 * failure while the pipe holds bytes discards the pipe, so bytes of one
 * session can never reach another.
 */
#ifdef __linux__
#define SPLICE_CHUNK  (256 * 1024)
#define SPLICE_ROUNDS 4 /* per readiness event: 1 MiB, like libuv's 32 reads */

static _Thread_local int splice_pipe[2] = {-1, -1}; /* closed at process exit */

static void drop_pipe(void)
{
	if (splice_pipe[0] >= 0) {
		close(splice_pipe[0]);
		close(splice_pipe[1]);
	}
	splice_pipe[0] = splice_pipe[1] = -1;
}

static int get_pipe(void)
{
	if (splice_pipe[0] >= 0)
		return 0;
	if (pipe2(splice_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
		int e = uv_translate_sys_error(errno);
		splice_pipe[0] = splice_pipe[1] = -1;
		return e;
	}
	/* Four times the default 64 KiB: a quarter of the splice calls per
	 * megabyte. Pages are only held while bytes are in flight. If the size
	 * is refused (pipe-max-size), the default only costs more calls. */
	(void)fcntl(splice_pipe[1], F_SETPIPE_SZ, SPLICE_CHUNK);
	return 0;
}

/* Reads `len` bytes out of the pipe into `to`'s output queue. */
static int pipe_to_queue(sy_stream *to, size_t len)
{
	while (len > 0) {
		sy_outblock *t = writable_tail(to);
		if (!t)
			return UV_ENOMEM;
		size_t room = OUTBLOCK_CAP - (t->off + t->len);
		ssize_t r =
		    read(splice_pipe[0], t->data + t->off + t->len, len < room ? len : room);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? UV_EIO : uv_translate_sys_error(errno);
		t->len += (size_t)r;
		to->out_bytes += (size_t)r;
		len -= (size_t)r;
	}
	return 0;
}

/* Moves what the socket holds to `to`, in rounds, telling the owner after
 * each round how many bytes went (read_cb with data == NULL). */
static void splice_pump(sy_stream *s)
{
	sy_stream *to = s->splice_to;
	uv_os_fd_t in_fd, out_fd;
	int err = get_pipe();
	if (err == 0 && (uv_fileno((uv_handle_t *)&s->tcp, &in_fd) != 0 ||
	                 uv_fileno((uv_handle_t *)&to->tcp, &out_fd) != 0))
		err = UV_EBADF;
	for (int round = 0; err == 0 && round < SPLICE_ROUNDS; round++) {
		if (s->closing || !s->reading || s->splice_to != to || s->eof_seen)
			return;
		if (to->closing || to->write_failed || to->shut) {
			err = UV_EPIPE;
			break;
		}
		ssize_t n = splice(in_fd, NULL, splice_pipe[1], NULL, SPLICE_CHUNK,
		                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n == 0) {
			report_error(s, UV_EOF);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				err = uv_translate_sys_error(errno);
			break; /* EAGAIN: the socket is drained (the pipe was empty) */
		}
		size_t left = (size_t)n;
		/* Straight to the socket only when nothing is queued ahead. */
		while (left > 0 && !to->out_head && !to->writes_in_flight) {
			ssize_t w = splice(splice_pipe[0], NULL, out_fd, NULL, left,
			                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (w > 0) {
				left -= (size_t)w;
			} else if (w < 0 && errno == EINTR) {
				continue;
			} else if (w < 0 && errno == EAGAIN) {
				break;
			} else {
				err = w < 0 ? uv_translate_sys_error(errno) : UV_EPIPE;
				to->write_failed = true;
				break;
			}
		}
		if (err == 0 && left > 0) {
			err = pipe_to_queue(to, left);
			if (err == 0)
				flush_out(to);
		}
		if (err != 0) {
			drop_pipe(); /* may still hold this session's bytes */
			break;
		}
		s->bytes_in += (uint64_t)n;
		to->bytes_out += (uint64_t)n;
		if (s->read_cb)
			s->read_cb(s, NULL, n);
	}
	if (err != 0)
		report_error(s, err);
}

/* SWITCHYARD_NO_SPLICE, read once. Every worker thread asks, so the lazy
 * initialisation is an atomic (a plain static was a data race, found by
 * ThreadSanitizer: harmless in practice, undefined in C). */
static bool splice_disabled(void)
{
	static _Atomic int disabled = -1;
	int d = atomic_load_explicit(&disabled, memory_order_relaxed);
	if (d < 0) {
		const char *v = getenv("SWITCHYARD_NO_SPLICE");
		d = v != NULL && *v != '\0' && strcmp(v, "0") != 0;
		atomic_store_explicit(&disabled, d, memory_order_relaxed);
	}
	return d;
}
#endif

static bool want_uv_read(const sy_stream *s);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	sy_stream *s = h->data;
	/* Paused with libuv's read still on (update_uv_read): no buffer, so
	 * libuv answers read_cb(UV_ENOBUFS) without reading and the bytes stay
	 * in the kernel. */
	if (s->splice_to || !want_uv_read(s)) {
		*buf = uv_buf_init(NULL, 0); /* read_cb(UV_ENOBUFS): see splice mode */
		return;
	}
	char *b = pool_get(s->pool);
	*buf = uv_buf_init(b, b ? SY_BLOCK_SIZE : 0);
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
	sy_stream *s = h->data;
	if (nread == UV_ENOBUFS && !want_uv_read(s)) {
		/* Bytes (or the end) arrived while the owner is paused: now the
		 * read really stops, and they wait in the kernel. */
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->uv_reading = false;
		return;
	}
#ifdef __linux__
	if (nread == UV_ENOBUFS && s->splice_to) {
		splice_pump(s);
		return;
	}
#endif
	if (nread <= 0) {
		pool_put(s->pool, buf->base);
		if (nread == 0)
			return;
		if (s->ssl && s->handshaking) {
			s->eof_seen = true;
			update_uv_read(s);
			s->handshaking = false;
			if (s->handshake_cb)
				s->handshake_cb(s, SY_ETLS);
			return;
		}
		report_error(s, (int)nread);
		return;
	}
	if (!s->ssl) {
		s->bytes_in += (uint64_t)nread;
		if (s->read_cb && s->reading && !s->closing)
			s->read_cb(s, buf->base, nread);
		pool_put(s->pool, buf->base);
		return;
	}
	/* TLS: the chunk becomes the BIO's input until OpenSSL has consumed it. */
	s->in_buf = buf->base;
	s->in_off = 0;
	s->in_len = (size_t)nread;
	pump(s);
}

static bool want_uv_read(const sy_stream *s)
{
	if (s->closing || s->eof_seen)
		return false;
	if (s->in_buf && s->in_off < s->in_len)
		return false; /* unconsumed input pending: don't take more */
	return s->handshaking || s->reading;
}

/*
 * Turns libuv's read on or off as want_uv_read says, except that an owner's
 * pause (sy_stream_read_stop, nothing else in the way) leaves it on: the
 * stop happens only if something arrives before the owner reads again
 * (on_alloc, on_read). A session pauses its client around every login
 * while the backend answers, and usually nothing comes meanwhile, so the
 * pause costs no system call. A real stop and restart costs two: libuv
 * 1.44 leaves a stopped descriptor in epoll and restarts it with
 * EPOLL_CTL_ADD, which fails with EEXIST, then EPOLL_CTL_MOD.
 */
static void update_uv_read(sy_stream *s)
{
	bool want = want_uv_read(s);
	if (want == s->uv_reading)
		return;
	if (want) {
		if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
			s->uv_reading = true;
		return;
	}
	bool paused_only = !s->closing && !s->eof_seen && !(s->in_buf && s->in_off < s->in_len);
	if (!paused_only) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->uv_reading = false;
	}
}

/*
 * SSL_MODE_RELEASE_BUFFERS frees OpenSSL's 16 KiB read buffer only after
 * application data has been consumed. A record that carries no application
 * data (the server's TLS 1.3 NewSessionTicket messages, which reach a backend
 * leg right after its handshake, or a KeyUpdate) leaves the buffer allocated
 * for as long as the connection then stays quiet: 16 KiB per idle backend TLS
 * leg (bench/idle_sessions.py --mode tls2). Freeing it whenever OpenSSL holds
 * no unread bytes gives it back; the next record allocates it again, as it
 * would after application data anyway. SSL_has_pending() guards the call, so
 * buffers that still hold a partial or unread record are never touched.
 */
static void release_tls_buffers(sy_stream *s)
{
	if (s->ssl && !SSL_has_pending(s->ssl) && !SSL_free_buffers(s->ssl))
		ERR_clear_error();
}

static void handshake_step(sy_stream *s)
{
	ERR_clear_error();
	int r = SSL_do_handshake(s->ssl);
	flush_out(s);
	if (r == 1) {
		s->handshaking = false;
		if (s->handshake_cb)
			s->handshake_cb(s, 0);
		return;
	}
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	s->handshaking = false;
	if (s->handshake_cb)
		s->handshake_cb(s, SY_ETLS);
}

static void deliver_plain(sy_stream *s, const char *plain, size_t *have)
{
	size_t n = *have;
	*have = 0;
	if (n > 0 && s->read_cb)
		s->read_cb(s, plain, (ssize_t)n);
}

/* Drives OpenSSL with whatever input is available: finishes a handshake, then
 * decrypts and delivers plaintext while the owner wants it. */
static void pump(sy_stream *s)
{
	if (s->in_callback)
		return;
	s->in_callback = true;
	if (s->handshaking)
		handshake_step(s);
	/* Records are gathered into one block before the owner sees them: a
	 * bridge then writes 32 KiB per system call instead of one record's
	 * 16 KiB. What is decrypted is delivered as soon as OpenSSL has no more
	 * (WANT_READ), so nothing waits for bytes still to come. */
	char *plain = NULL;
	size_t have = 0;
	while (!s->closing && !s->handshaking && s->reading && s->ssl && !s->eof_seen) {
		if (!plain) {
			plain = pool_get(s->pool);
			if (!plain)
				break;
		}
		ERR_clear_error();
		int r = SSL_read(s->ssl, plain + have, (int)(SY_BLOCK_SIZE - have));
		if (r > 0) {
			s->bytes_in += (uint64_t)r;
			have += (size_t)r;
			if (have == SY_BLOCK_SIZE)
				deliver_plain(s, plain, &have);
			continue;
		}
		int e = SSL_get_error(s->ssl, r);
		deliver_plain(s, plain, &have);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE || s->closing)
			break;
		s->in_callback = false;
		pool_put(s->pool, plain);
		plain = NULL;
		/* close_notify is the orderly end; anything else is an error. */
		flush_out(s);
		report_error(s, e == SSL_ERROR_ZERO_RETURN ? UV_EOF : SY_ETLS);
		s->in_callback = true;
		break;
	}
	if (plain)
		pool_put(s->pool, plain);
	if (!s->closing && !s->handshaking)
		release_tls_buffers(s);
	if (!s->closing) {
		flush_out(s); /* post-handshake messages, alerts */
		release_input(s);
		update_uv_read(s);
	}
	s->in_callback = false;
}

/* ---- public API ----------------------------------------------------------- */

int sy_stream_init(sy_stream *s, uv_loop_t *loop, sy_pool *pool, void *owner)
{
	memset(s, 0, sizeof(*s));
	s->pool = pool;
	s->owner = owner;
	int r = uv_tcp_init(loop, &s->tcp);
	if (r != 0)
		return r;
	s->tcp.data = s;
	return 0;
}

int sy_stream_read_start(sy_stream *s, sy_stream_read_cb cb)
{
	if (s->closing)
		return UV_EINVAL;
	/* An error reported to a previous reader (or to none: a write failed
	 * before anyone read, e.g. the greeting to a client that reset the
	 * connection right after its TLS handshake) was not heard by this one.
	 * Watch the socket again: a dead socket is readable at once, so the
	 * EOF or the error reaches the new reader on the next loop turn,
	 * instead of the session waiting for its timeout. */
	if (s->eof_seen && cb != s->read_cb)
		s->eof_seen = false;
	s->read_cb = cb;
	s->reading = true;
	s->splice_to = NULL;
	if (s->ssl && !s->handshaking && !s->in_callback &&
	    ((s->in_buf && s->in_off < s->in_len) || SSL_has_pending(s->ssl))) {
		pump(s);
		return 0;
	}
	update_uv_read(s);
	return 0;
}

int sy_stream_read_start_splice(sy_stream *s, sy_stream *to, sy_stream_read_cb cb)
{
#ifdef __linux__
	if (s->closing || s->ssl || to->ssl || splice_disabled())
		return UV_ENOTSUP;
	int r = get_pipe();
	if (r != 0)
		return r;
	s->splice_to = to;
	s->read_cb = cb;
	s->reading = true;
	update_uv_read(s);
	return 0;
#else
	(void)s;
	(void)to;
	(void)cb;
	return UV_ENOTSUP;
#endif
}

void sy_stream_watch(sy_stream *s)
{
	if (!s->closing && !s->uv_reading &&
	    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
		s->uv_reading = true;
}

void sy_stream_read_stop(sy_stream *s)
{
	s->reading = false;
	if (!s->in_callback)
		update_uv_read(s);
}

int sy_stream_write(sy_stream *s, const void *data, size_t len)
{
	if (s->closing || s->write_failed)
		return UV_EPIPE;
	if (len == 0)
		return 0;
	s->bytes_out += len;
	if (s->ssl) {
		if (s->handshaking)
			return UV_EINVAL;
		const char *p = data;
		while (len > 0) {
			int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
			ERR_clear_error();
			int r = SSL_write(s->ssl, p, chunk);
			if (r <= 0) {
				s->write_failed = true;
				return SY_ETLS;
			}
			p += r;
			len -= (size_t)r;
		}
		flush_out(s);
		return s->write_failed ? UV_EPIPE : 0;
	}

	const char *p = data;
	if (!s->out_head && !s->writes_in_flight) {
		uv_buf_t buf = uv_buf_init((char *)p, (unsigned)len);
		int r = uv_try_write((uv_stream_t *)&s->tcp, &buf, 1);
		if (r >= 0) {
			p += r;
			len -= (size_t)r;
		} else if (r != UV_EAGAIN && r != UV_ENOSYS) {
			s->write_failed = true;
			return r;
		}
		if (len == 0)
			return 0;
	}
	int r = append_out(s, p, len);
	if (r != 0)
		return r;
	flush_out(s);
	return s->write_failed ? UV_EPIPE : 0;
}

size_t sy_stream_pending(const sy_stream *s)
{
	return s->out_bytes;
}

void sy_stream_set_drain_cb(sy_stream *s, sy_stream_drain_cb cb)
{
	s->drain_cb = cb;
}

int sy_stream_start_tls(sy_stream *s, SSL *ssl, bool server, sy_stream_handshake_cb cb)
{
	pthread_once(&bio_once, init_bio_method);
	if (s->ssl || s->closing) {
		SSL_free(ssl);
		return UV_EINVAL;
	}
	BIO *bio = BIO_new(bio_method);
	if (!bio) {
		SSL_free(ssl);
		return UV_ENOMEM;
	}
	BIO_set_data(bio, s);
	SSL_set_bio(ssl, bio, bio);
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	s->ssl = ssl;
	s->tls_server = server;
	s->handshaking = true;
	s->handshake_cb = cb;
	/* Plaintext read before this point belongs to the caller, who discards
	 * it; nothing of it may reach OpenSSL. */
	if (s->in_buf) {
		pool_put(s->pool, s->in_buf);
		s->in_buf = NULL;
		s->in_off = s->in_len = 0;
	}
	pump(s);
	if (!s->closing)
		update_uv_read(s);
	return 0;
}

int sy_stream_inject(sy_stream *s, const char *data, size_t len)
{
	if (!s->ssl || s->in_buf || s->closing)
		return UV_EINVAL;
	if (len == 0)
		return 0;
	if (len > SY_BLOCK_SIZE)
		return UV_E2BIG;
	char *b = pool_get(s->pool);
	if (!b)
		return UV_ENOMEM;
	memcpy(b, data, len);
	s->in_buf = b;
	s->in_off = 0;
	s->in_len = len;
	pump(s);
	return 0;
}

void sy_stream_shutdown(sy_stream *s)
{
	if (s->shut || s->closing)
		return;
	s->shut = true;
	if (s->ssl && !s->handshaking) {
		ERR_clear_error();
		SSL_shutdown(s->ssl);
		flush_out(s);
	}
	maybe_finish_shutdown(s);
}

static void on_close(uv_handle_t *h)
{
	sy_stream *s = h->data;
	free_out(s);
	if (s->in_buf) {
		pool_put(s->pool, s->in_buf);
		s->in_buf = NULL;
	}
	if (s->ssl) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	if (s->close_cb)
		s->close_cb(s);
}

void sy_stream_close(sy_stream *s, sy_stream_close_cb cb)
{
	if (s->closing)
		return;
	s->closing = true;
	s->close_cb = cb;
	if (s->uv_reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->uv_reading = false;
	}
	uv_close((uv_handle_t *)&s->tcp, on_close);
}

int sy_stream_peer(sy_stream *s, struct sockaddr_storage *ss)
{
	int len = sizeof(*ss);
	return uv_tcp_getpeername(&s->tcp, (struct sockaddr *)ss, &len);
}

int sy_stream_local(sy_stream *s, struct sockaddr_storage *ss)
{
	int len = sizeof(*ss);
	return uv_tcp_getsockname(&s->tcp, (struct sockaddr *)ss, &len);
}
