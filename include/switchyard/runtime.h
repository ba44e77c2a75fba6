/*
 * Runtime state shared by the worker threads.
 *
 * A snapshot binds one loaded configuration to the objects built from it (the
 * inbound certificate store, per-destination TLS client contexts). Sessions
 * hold a reference to the snapshot they started with, so a reload can swap in
 * a new one while established sessions keep using the old one until they end.
 * Destination health lives outside snapshots (keyed by destination id) so a
 * reload does not forget that a backend is down.
 */
#ifndef SWITCHYARD_RUNTIME_H
#define SWITCHYARD_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "switchyard/config.h"
#include "switchyard/health.h"
#include "switchyard/pool.h"
#include "switchyard/stream.h"
#include "switchyard/tls.h"

typedef struct sy_server sy_server;
typedef struct sy_worker sy_worker;
typedef struct sy_session sy_session;

/* One destination of a snapshot. */
typedef struct sy_dest_rt {
	const sy_destination_config *cfg;
	sy_tls_client *tls;  /* NULL when no leg uses TLS */
	sy_health *health;   /* owned by the server's health table */
	_Atomic uint32_t rr; /* source_ips round robin */
} sy_dest_rt;

typedef struct sy_snapshot {
	_Atomic int refs;
	sy_config *cfg;
	sy_tls_server *tls_server;
	sy_dest_rt *dests; /* parallel to cfg->destinations */
} sy_snapshot;

sy_snapshot *snapshot_ref(sy_snapshot *s);
void snapshot_unref(sy_snapshot *s);
/* The destination runtime for an id, or NULL. */
sy_dest_rt *snapshot_dest(sy_snapshot *s, const char *id);

/* Counters of one listener, shared by every worker accepting on it. */
typedef struct sy_listener_rt {
	char *name;
	sy_proto protocol;
	_Atomic uint32_t active;
	_Atomic uint64_t accepted, rejected;
} sy_listener_rt;

/* One listening socket on one worker loop. */
typedef struct sy_acceptor {
	uv_tcp_t tcp;
	sy_worker *w;
	size_t listener_index; /* into the snapshot's cfg->listeners */
	sy_listener_rt *rt;
	bool closed;
} sy_acceptor;

struct sy_worker {
	int index;
	sy_server *server;
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t wake;
	sy_pool pool;
	sy_acceptor *acceptors;
	size_t nacceptors;
	sy_session *sessions; /* intrusive list of live sessions */
	size_t nsessions;
	bool draining;
	bool stopping;
};

struct sy_server {
	sy_snapshot *_Atomic current;
	sy_worker *workers;
	size_t nworkers;
	sy_listener_rt *listeners; /* parallel to the startup cfg->listeners */
	size_t nlisteners;
	/* Health per destination id, for the life of the process. */
	struct {
		char *id;
		sy_health health;
	} * health;
	size_t nhealth;
	uv_loop_t *main_loop;
	uv_async_t worker_done;
	uv_signal_t sigterm, sigint;
	uv_timer_t grace;
	_Atomic bool draining;
	_Atomic bool force_close;
	_Atomic size_t workers_running;
};

/* The snapshot currently used for new connections (a new reference). */
sy_snapshot *server_snapshot(sy_server *srv);

/* A session of this worker has been freed: finishes a drain when it was the
 * last one. */
void worker_session_gone(sy_worker *w);

/* Milliseconds on a monotonic clock (for health, shared across threads). */
uint64_t sy_now_ms(void);

#endif
