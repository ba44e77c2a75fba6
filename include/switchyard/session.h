/*
 * A client session: everything from accept to close, on one worker loop.
 *
 * Stages, in order (each may be skipped): the PROXY header from a trusted
 * peer, the implicit TLS handshake, the protocol's own start (a pass-through
 * dial, or an interactive pre-authentication dialogue), and the bridge.
 *
 * A session is freed only after all its libuv handles have closed; it is
 * closed through session_close(), which is safe to call from any of its
 * callbacks and more than once.
 */
#ifndef SWITCHYARD_SESSION_H
#define SWITCHYARD_SESSION_H

#include "switchyard/dial.h"
#include "switchyard/snapshot.h"
#include "switchyard/stream.h"
#include "switchyard/worker.h"

typedef enum sy_session_state {
	SS_PROXY_HEADER,
	SS_TLS_HANDSHAKE,
	SS_PROTOCOL, /* the protocol module's own stages */
	SS_BRIDGING,
	SS_CLOSING,
} sy_session_state;

extern const char *const sy_session_state_names[];

struct sy_session {
	sy_session *prev, *next; /* the worker's list */
	sy_worker *w;
	sy_snapshot *snap; /* reference held for the session's life */
	const sy_listener_config *lcfg;
	sy_listener_rt *lrt;
	uint64_t id;

	sy_stream client;
	sy_stream *backend;     /* owned once dialed */
	sy_dial *dial;          /* in flight */
	sy_dest_rt *dest;       /* where the session goes */
	sy_node_set *dest_hold; /* a cluster node's set, held while dest points into it */
	uv_timer_t timer;       /* pre-auth deadline, then bridge idle checks */

	struct sockaddr_storage peer;        /* client address (from the PROXY header if any) */
	struct sockaddr_storage local;       /* address the client connected to */
	uint64_t start_ms, last_activity_ms; /* loop time */

	sy_session_state state;
	uint8_t closes_pending;
	bool client_eof, backend_eof;
	bool counted;           /* holds a slot of lrt->active */
	bool splice;            /* bridging splices (both legs plaintext; src/net/bridge.c) */
	bool proxy_header_seen; /* proxy_protocol = "optional": the peer began a header */

	/* Client bytes read ahead of the stage that consumes them (e.g. after a
	 * PROXY header). A pool block; NULL when empty. */
	char *pending;
	size_t pending_len;

	void *proto; /* protocol module state */
	/* Set by the module with `proto`: frees it when the session is freed,
	 * and (optional) tells a client still before login that the process
	 * is shutting down. This layer calls them without knowing the module. */
	void (*proto_release)(sy_session *s);
	void (*proto_shutdown)(sy_session *s);
	/* The routing identifier of the login that was bridged, or of an HTTP
	 * connection's latest request (malloc'd,
	 * set when bridging starts; NULL before, and for pass-through). The
	 * admin port's /connections/kick matches on it. */
	char *identifier;
};

/* Creates a session for a connection waiting on `server` and starts it. */
void session_accept(sy_worker *w, sy_acceptor *a);

/* Closes the session (idempotent, safe from its own callbacks). `why` is
 * logged at debug level when not NULL. */
void session_close(sy_session *s, const char *why);
/* Points the session at `d` (NULL: none), taking a reference to `hold`, the
 * cluster node set d belongs to (NULL for a plain destination), and dropping
 * the one it held before. */
void session_set_dest(sy_session *s, sy_dest_rt *d, sy_node_set *hold);

/* Closes the bridged sessions of worker `w` whose login identifier is
 * `identifier` (the admin port's and the fleet's kick; run on w's thread).
 * `why` is logged. Returns how many were closed. */
long session_kick(sy_worker *w, const char *identifier, const char *why);

/* Splices client and backend until either side ends or bridge_idle passes. */
void bridge_start(sy_session *s);

/* Starts session ids at a random value so they stay unique across restarts
 * and replicas (they reach backends as XCLIENT SESSION= / ID x-session-id). */
void session_seed_ids(void);

/* Formats the client address for logs ("1.2.3.4:5678"). */
void session_peer_str(const sy_session *s, char *out, size_t len);

#endif
