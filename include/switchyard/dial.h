/*
 * The backend dialer: resolve, loop guard, source address, connect with
 * retries inside the backend timeout, PROXY v2 header, implicit TLS, and the
 * destination's circuit breaker.
 */
#ifndef SWITCHYARD_DIAL_H
#define SWITCHYARD_DIAL_H

#include <stdbool.h>
#include <sys/socket.h>

#include "switchyard/snapshot.h"
#include "switchyard/stream.h"
#include "switchyard/worker.h"

typedef struct sy_dial sy_dial;

/*
 * Completion: on success `stream` is a connected stream (TLS established for
 * an implicit leg) whose ownership passes to the callee, status is 0 and
 * `reason` is NULL. On failure stream is NULL, status is a negative code and
 * `reason` a short human-readable cause for logs. `tempfail` distinguishes
 * "backend unavailable" from a configuration problem such as a loop.
 * Called exactly once unless dial_cancel() came first.
 */
typedef void (*sy_dial_cb)(void *arg, sy_stream *stream, int status, const char *reason);

typedef struct sy_dial_params {
	sy_worker *w;
	sy_snapshot *snap; /* borrowed: the caller holds a reference for the dial's life */
	sy_dest_rt *dest;
	sy_proto proto;
	const struct sockaddr *client; /* PROXY v2 source */
	const struct sockaddr *local;  /* PROXY v2 destination */
	bool proxy_header;             /* send PROXY v2 first */
	bool xclient;                  /* the protocol will forward by XCLIENT/ID,
	                                  which carries the hop budget (TTL) */
	uint64_t timeout_ms;           /* the whole attempt incl. retries and TLS */
	void *stream_owner;            /* set as stream->owner on success */
	sy_dial_cb cb;
	void *arg;
} sy_dial_params;

/* Starts dialing. Returns the in-flight dial (for dial_cancel) or NULL when
 * it could not even start (then cb has already been called with an error). */
sy_dial *dial_start(const sy_dial_params *p);

/* Abandons an in-flight dial: no callback will be made; its resources are
 * released asynchronously. */
void dial_cancel(sy_dial *d);

/* Loop guard: true if `sa` is one of the addresses this process listens on
 * (a wildcard listener matches every local address with its port). */
bool dial_is_own_listener(const sy_config *cfg, const struct sockaddr *sa);

#endif
