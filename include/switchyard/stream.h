/*
 * sy_stream: one TCP connection on a worker's event loop, optionally with TLS,
 * presenting plaintext to its owner in both directions.
 *
 * TLS runs over a custom BIO that reads ciphertext straight from the chunk
 * libuv just delivered and writes ciphertext into the stream's output queue,
 * so a stream holds no buffer of its own while idle: read buffers come from
 * the worker's pool only while the socket is readable, output blocks only
 * while bytes are waiting for the kernel, and OpenSSL's own record buffers are
 * released between records (SSL_MODE_RELEASE_BUFFERS).
 *
 * All functions must be called on the stream's loop thread. Callbacks may
 * call any function of this API on the same stream, including
 * sy_stream_close().
 */
#ifndef SWITCHYARD_STREAM_H
#define SWITCHYARD_STREAM_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "switchyard/pool.h"

typedef struct sy_stream sy_stream;

/*
 * Plaintext arrived (n > 0; data valid only during the call), or the peer
 * finished (n == UV_EOF: orderly end, TLS close_notify or TCP FIN), or an
 * error happened (n < 0, a libuv error code; SY_ETLS for a TLS failure).
 */
typedef void (*sy_stream_read_cb)(sy_stream *s, const char *data, ssize_t n);
/* All queued output has been handed to the kernel. */
typedef void (*sy_stream_drain_cb)(sy_stream *s);
/* A TLS handshake finished: status 0, or SY_ETLS / a libuv error. */
typedef void (*sy_stream_handshake_cb)(sy_stream *s, int status);
/* The stream is fully closed; its memory may be released by the owner now. */
typedef void (*sy_stream_close_cb)(sy_stream *s);

#define SY_ETLS (-10001)

/* One block of queued output. */
typedef struct sy_outblock sy_outblock;

struct sy_stream {
	uv_tcp_t tcp; /* tcp.data points back at the stream */
	sy_pool *pool;
	void *owner; /* free for the owner's use */

	SSL *ssl;         /* NULL for a plaintext stream */
	bool tls_server;  /* accept side of the handshake */
	bool handshaking; /* handshake started and not finished */
	bool reading;     /* owner wants plaintext (read_start called) */
	bool uv_reading;  /* libuv read is active */
	bool eof_seen;    /* peer finished; reported once */
	bool closing;     /* sy_stream_close was called */
	bool shut;        /* sy_stream_shutdown was called */
	bool in_callback; /* guards against re-entrant pumping */
	bool write_failed;
	bool fin_issued;          /* uv_shutdown sent */
	uint8_t writes_in_flight; /* 0 or 1: one uv_write at a time */

	/* Ciphertext received but not yet consumed by OpenSSL (only while the
	 * owner has paused reading mid-chunk). */
	char *in_buf;
	size_t in_off, in_len;

	/* Output queue: bytes (ciphertext for TLS streams) not yet written. */
	sy_outblock *out_head, *out_tail;
	size_t out_bytes;
	size_t inflight_blocks; /* blocks at the head owned by the uv_write in flight */
	uv_write_t wreq;
	uv_shutdown_t sreq;

	/* Splice mode (sy_stream_read_start_splice): bytes read go from this
	 * socket straight to that stream's socket. NULL: off. */
	sy_stream *splice_to;

	sy_stream_read_cb read_cb;
	sy_stream_drain_cb drain_cb;
	sy_stream_handshake_cb handshake_cb;
	sy_stream_close_cb close_cb;

	uint64_t bytes_in, bytes_out; /* plaintext counters */
};

/* Initialises `s` (embedded in its owner) on `loop`. Returns 0 or a libuv
 * error. After this, the stream must be closed with sy_stream_close. */
int sy_stream_init(sy_stream *s, uv_loop_t *loop, sy_pool *pool, void *owner);

/* Starts delivering plaintext to cb. Plaintext a TLS stream already holds
 * (received while paused) is delivered before this returns, unless called
 * from inside one of this stream's own callbacks, where delivery resumes
 * when that callback returns. */
int sy_stream_read_start(sy_stream *s, sy_stream_read_cb cb);
/*
 * Like sy_stream_read_start, for two plaintext streams on Linux: bytes that
 * arrive on this stream's socket move to `to`'s socket inside the kernel
 * (splice(2) through a per-thread pipe), never through user space. cb then
 * gets data == NULL and n = the number of bytes moved (n > 0), counted in
 * both streams' byte counters; EOF and errors are reported as usual (an error
 * writing to `to` also sets to->write_failed). Bytes `to` cannot take at once
 * wait in its output queue exactly as after sy_stream_write, so
 * sy_stream_pending(to) and its drain_cb work the same. Bytes already queued
 * on `to` keep their place ahead of spliced ones. Returns UV_ENOTSUP when
 * either stream has TLS, off Linux, or when the environment variable
 * SWITCHYARD_NO_SPLICE is set (for comparisons); the caller then uses
 * sy_stream_read_start. sy_stream_read_start ends splice mode.
 */
int sy_stream_read_start_splice(sy_stream *s, sy_stream *to, sy_stream_read_cb cb);
/* Stops delivering; the kernel buffers and TCP flow control push back. */
void sy_stream_read_stop(sy_stream *s);
/*
 * Turns the socket's read watcher on before anyone reads, as if paused: for
 * a connecting backend leg, whose watcher then enters epoll together with
 * the connect's (one epoll_ctl fewer than starting it after the connect).
 * Nothing is read or delivered until sy_stream_read_start; bytes that come
 * first wait in the kernel.
 */
void sy_stream_watch(sy_stream *s);

/*
 * Queues `len` plaintext bytes (copied or written at once; the caller keeps
 * `data`). Returns 0 or a negative error. sy_stream_pending() tells whether
 * bytes are still queued; drain_cb (if set) fires when the queue empties.
 */
int sy_stream_write(sy_stream *s, const void *data, size_t len);
size_t sy_stream_pending(const sy_stream *s);
void sy_stream_set_drain_cb(sy_stream *s, sy_stream_drain_cb cb);

/*
 * Begins TLS on an established connection: `ssl` (ownership passes to the
 * stream) is driven as server (accept) or client (connect). Reading is paused
 * during the handshake; cb reports the result. Any plaintext received before
 * this call must have been discarded by the caller (STARTTLS rule).
 */
int sy_stream_start_tls(sy_stream *s, SSL *ssl, bool server, sy_stream_handshake_cb cb);

/* Feeds bytes that were read off the socket before TLS started but belong
 * to the TLS layer (e.g. a ClientHello that arrived in the same packet as a
 * PROXY header). Only valid right after sy_stream_start_tls. */
int sy_stream_inject(sy_stream *s, const char *data, size_t len);

/* Ends our sending direction once the queue is flushed: TLS close_notify, then
 * TCP FIN. Reading continues. */
void sy_stream_shutdown(sy_stream *s);

/* Closes at once (queued output is dropped). Idempotent; cb fires once, from
 * the loop, after which the owner may free the memory holding `s`. */
void sy_stream_close(sy_stream *s, sy_stream_close_cb cb);

/* Peer and local addresses of the TCP connection. Return 0 or libuv error. */
int sy_stream_peer(sy_stream *s, struct sockaddr_storage *ss);
int sy_stream_local(sy_stream *s, struct sockaddr_storage *ss);

#endif
