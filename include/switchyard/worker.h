/*
 * Worker event loops and the listening sockets they accept on: the types
 * every layer above the transport shares. A worker is one thread running one
 * libuv loop; everything a session does happens on its worker's loop.
 *
 * The runtime (src/server/) creates and runs workers; lower layers only use
 * the fields documented here and reach the runtime through the hooks it
 * installs (struct sy_worker_hooks), never by name.
 */
#ifndef SWITCHYARD_WORKER_H
#define SWITCHYARD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "switchyard/config.h"
#include "switchyard/pool.h"

typedef struct sy_worker sy_worker;
typedef struct sy_session sy_session;
typedef struct sy_snapshot sy_snapshot;
struct sy_server; /* the runtime's (runtime.h); opaque here */

/*
 * What the layers below the runtime call it for, installed by the runtime
 * in every worker before its loop starts. All run on the worker's thread.
 */
typedef struct sy_worker_hooks {
	/* A new reference to the snapshot that new connections use. */
	sy_snapshot *(*snapshot)(sy_worker *w);
	/* A session of this worker has been freed (drain bookkeeping). */
	void (*session_gone)(sy_worker *w);
	/* The protocol table: start[p] takes over a session of protocol p once
	 * its client leg is ready (PROXY header read, implicit TLS done). */
	void (*start[SY_PROTO_COUNT])(sy_session *s);
} sy_worker_hooks;

/* Counters of one listener, shared by every worker accepting on it. Entries
 * are keyed by listener name and live for the whole process: a listener a
 * reload removes keeps its entry (its sessions still count in `active`), and
 * one a reload adds gets a new entry, so pointers to entries stay valid. */
typedef struct sy_listener_rt {
	char *name;
	size_t slot;       /* index in the runtime's table, the metrics listener slot */
	sy_proto protocol; /* of the newest configuration naming it (main thread) */
	_Atomic uint32_t active;
	_Atomic uint64_t accepted, rejected;
} sy_listener_rt;

/* Capacity of the listener table (SY_METRICS_MAX_LISTENERS). */
#define SY_MAX_LISTENERS 256

/* One listening socket on one worker loop. Allocated on its own and freed
 * in its close callback, so a reload can add and remove acceptors while the
 * others keep accepting. */
typedef struct sy_acceptor {
	uv_tcp_t tcp;
	sy_worker *w;
	struct sy_acceptor *next; /* the worker's list */
	size_t listener_index;    /* hint: index in the snapshot's cfg->listeners
	                             (sessions look the listener up by name) */
	sy_listener_rt *rt;
	struct sockaddr_storage addr; /* the bind address */
	/* Every connection's local address, when the socket is bound to one
	 * address (not a wildcard): sessions then need no getsockname. */
	struct sockaddr_storage local;
	bool local_known;
	bool closed;
} sy_acceptor;

/* A task posted to worker loops (server_broadcast); internal to server.c. */
typedef struct sy_task sy_task;

struct sy_worker {
	int index;
	struct sy_server *server;     /* the runtime's; opaque below it */
	const sy_worker_hooks *hooks; /* installed by the runtime */
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t wake;
	sy_pool pool;
	sy_acceptor *acceptors; /* list of open (and closing) acceptors */
	size_t nacceptors;
	sy_session *sessions; /* intrusive list of live sessions */
	size_t nsessions;
	bool draining;
	bool stopping;
	/* Liveness for the admin port's /livez: a 1 s timer on this loop
	 * stores sy_now_ms() here; 0 once the loop has stopped for good. */
	uv_timer_t heartbeat;
	_Atomic uint64_t heartbeat_ms;
	/* Tasks from other threads (server_broadcast), run from `wake`. Once
	 * inbox_closed is set (under the mutex, before `wake` is closed) posts
	 * complete at once without running. */
	pthread_mutex_t inbox_mu;
	sy_task *inbox_head, *inbox_tail;
	bool inbox_closed;
	/* The routing context route_resolve() uses (route.h): set by
	 * router_worker_attach() (before the thread starts, then on this
	 * loop when a reload switches routers), cleared when the worker
	 * stops. */
	struct sy_route_ctx *route_ctx;
};

#endif
