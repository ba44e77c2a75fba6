/*
 * The bridge: splices the client and backend streams.
 *
 * Backpressure: each direction has at most what one read produced waiting in
 * the destination's output queue; reading from the source stops until that
 * queue drains. A sender's EOF is passed on as a shutdown of the other
 * side's sending direction (TLS close_notify, then FIN); the session ends when
 * both directions have finished and flushed, on any error, or after
 * server.bridge_idle without traffic.
 *
 * When both legs are plaintext, a direction that has carried 64 KiB is
 * spliced from socket to socket inside the kernel from then on
 * (sy_stream_read_start_splice); the rules above are the same either way.
 */
#include <stdio.h>

#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/session.h"

#define HALF_CLOSE_LINGER_MS 5000
/* A direction moves its first bytes by read/write and switches to splice
 * once it has carried this many: for the few small messages of most
 * interactive sessions (a LOGOUT, an IDLE's updates) a read and a write cost
 * fewer system calls than splicing through the pipe (in, out, and the
 * EAGAIN probe); a large FETCH or a pass-through transfer soon switches. */
#define SPLICE_AFTER_BYTES (64u * 1024)

static void on_idle_timer(uv_timer_t *t);
static uint64_t idle_limit(const sy_session *s);

static sy_stream *other(sy_session *s, sy_stream *st)
{
	return st == &s->client ? s->backend : &s->client;
}

static bool *eof_flag(sy_session *s, sy_stream *st)
{
	return st == &s->client ? &s->client_eof : &s->backend_eof;
}

/* Once the backend has finished and everything it sent has reached the
 * client, the session is over: mail protocols have nothing to say after the
 * server hangs up, and a client that keeps its socket open must not hold the
 * session (and a shutdown drain) for bridge_idle. A client that finishes
 * first gets HALF_CLOSE_LINGER_MS for the backend's last words. */
static void maybe_finish(sy_session *s)
{
	if (s->backend_eof && sy_stream_pending(&s->client) == 0)
		session_close(s, "backend finished");
	else if (s->client_eof && s->backend_eof && sy_stream_pending(s->backend) == 0)
		session_close(s, "both sides finished");
}

static void on_bridge_read(sy_stream *st, const char *data, ssize_t n);

/* Reading from `from` toward the other side: spliced inside the kernel when
 * both legs are plaintext (see sy_stream_read_start_splice), else through a
 * pool block. */
static void start_reading(sy_session *s, sy_stream *from)
{
	if (s->splice && from->bytes_in >= SPLICE_AFTER_BYTES) {
		if (sy_stream_read_start_splice(from, other(s, from), on_bridge_read) == 0)
			return;
		s->splice = false;
	}
	sy_stream_read_start(from, on_bridge_read);
}

static void on_bridge_read(sy_stream *st, const char *data, ssize_t n)
{
	sy_session *s = st->owner;
	if (s->state != SS_BRIDGING)
		return;
	sy_stream *to = other(s, st);
	if (n > 0) {
		s->last_activity_ms = uv_now(&s->w->loop);
		metrics_bridged(s->lcfg->protocol, st == &s->client, (size_t)n);
		/* data == NULL: the bytes were spliced to `to` already. */
		if (data && sy_stream_write(to, data, (size_t)n) != 0) {
			session_close(s, "write failed");
			return;
		}
		if (sy_stream_pending(to) > 0)
			sy_stream_read_stop(st); /* the drain restarts it, spliced if due */
		else if (data && s->splice && st->bytes_in >= SPLICE_AFTER_BYTES)
			start_reading(s, st); /* large transfer: switch to splice */
		return;
	}
	if (n == UV_EOF) {
		*eof_flag(s, st) = true;
		sy_stream_read_stop(st);
		sy_stream_shutdown(to);
		s->last_activity_ms = uv_now(&s->w->loop);
		uv_timer_start(&s->timer, on_idle_timer, idle_limit(s), 0);
		maybe_finish(s);
		return;
	}
	if (to->write_failed)
		session_close(s, "write failed");
	else
		session_close(s, st == &s->client ? "client connection error"
		                                  : "backend connection error");
}

/* The queue toward `st` emptied: the opposite side may be read again. */
static void on_bridge_drain(sy_stream *st)
{
	sy_session *s = st->owner;
	if (s->state != SS_BRIDGING)
		return;
	sy_stream *from = other(s, st);
	if (!*eof_flag(s, from))
		start_reading(s, from);
	maybe_finish(s);
}

static uint64_t idle_limit(const sy_session *s)
{
	uint64_t idle = s->snap->cfg->server.bridge_idle_ms;
	if ((s->client_eof || s->backend_eof) && idle > HALF_CLOSE_LINGER_MS)
		idle = HALF_CLOSE_LINGER_MS;
	return idle;
}

static void on_idle_timer(uv_timer_t *t)
{
	sy_session *s = t->data;
	uint64_t idle = idle_limit(s);
	uint64_t quiet = uv_now(&s->w->loop) - s->last_activity_ms;
	if (quiet >= idle) {
		session_close(s, "bridge_idle");
		return;
	}
	uv_timer_start(&s->timer, on_idle_timer, idle - quiet, 0);
}

void bridge_start(sy_session *s)
{
	s->state = SS_BRIDGING;
	s->last_activity_ms = uv_now(&s->w->loop);
	uv_timer_start(&s->timer, on_idle_timer, s->snap->cfg->server.bridge_idle_ms, 0);
	s->backend->owner = s;
	sy_stream_set_drain_cb(&s->client, on_bridge_drain);
	sy_stream_set_drain_cb(s->backend, on_bridge_drain);
	s->splice = !s->client.ssl && !s->backend->ssl;
	start_reading(s, s->backend);
	if (s->state == SS_BRIDGING)
		start_reading(s, &s->client);
}
