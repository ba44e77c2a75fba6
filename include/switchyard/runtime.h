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

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "switchyard/clock.h"
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

/*
 * One cluster of a snapshot. Its nodes are complete destinations, built once
 * when the snapshot is: each is the cluster's template (protocol legs, TLS,
 * forwarding and every other setting) with the node's identity (id, host,
 * tls_server_name) put in. The dialer and the protocols see a node exactly as
 * they see any destination. A node's breaker is keyed by its id, so a static
 * node that is also routed to directly shares one health entry.
 */
typedef struct sy_cluster_rt {
	const sy_cluster_config *cfg;
	size_t nnodes;
	sy_dest_rt *nodes;                /* owned; each cfg points into node_cfgs */
	sy_destination_config *node_cfgs; /* owned structs; their strings are borrowed
	                                     from the snapshot's configuration */
	const char **ids;                 /* owned array of borrowed ids, for cluster_pick */
} sy_cluster_rt;

typedef struct sy_snapshot {
	_Atomic int refs;
	sy_config *cfg;
	sy_tls_server *tls_server;
	sy_dest_rt *dests;       /* parallel to cfg->destinations */
	sy_cluster_rt *clusters; /* parallel to cfg->clusters */
} sy_snapshot;

sy_snapshot *snapshot_ref(sy_snapshot *s);
void snapshot_unref(sy_snapshot *s);
/* The destination runtime for an id, or NULL. */
sy_dest_rt *snapshot_dest(sy_snapshot *s, const char *id);
/* The cluster runtime for an id, or NULL. */
sy_cluster_rt *snapshot_cluster(sy_snapshot *s, const char *id);

/*
 * Fills *out with the destination a cluster node is: a copy of the template
 * `tmpl` whose identity is the node's (`id`, `host`, and `tls_server_name`
 * when not NULL, else the template's). Strings are borrowed, not copied. Used
 * for static nodes and for discovered ones, which have only an address.
 */
void cluster_node_config(const sy_destination_config *tmpl, const char *id, const char *host,
                         bool host_is_ip, const char *tls_server_name, sy_destination_config *out);

/* Counters of one listener, shared by every worker accepting on it. Entries
 * are keyed by listener name and live for the whole process: a listener a
 * reload removes keeps its entry (its sessions still count in `active`), and
 * one a reload adds gets a new entry, so pointers to entries stay valid. */
typedef struct sy_listener_rt {
	char *name;
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
	bool closed;
} sy_acceptor;

/* A task posted to worker loops (server_broadcast); internal to server.c. */
typedef struct sy_task sy_task;

struct sy_worker {
	int index;
	sy_server *server;
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

struct sy_server {
	sy_snapshot *_Atomic current;
	sy_worker *workers;
	size_t nworkers;
	sy_listener_rt *listeners; /* SY_MAX_LISTENERS entries, nlisteners used */
	size_t nlisteners;
	/* Health per destination id, for the life of the process (entries are
	 * allocated one by one so their addresses survive growth; main thread). */
	struct sy_health_entry {
		char *id;
		sy_health health;
	} * *health;
	size_t nhealth, health_cap;
	uv_loop_t *main_loop;
	uv_async_t worker_done; /* also: finished broadcasts are waiting */
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t grace;
	_Atomic bool draining;
	_Atomic bool force_close;
	_Atomic size_t workers_running;
	/* Every listener is bound (readiness). */
	_Atomic bool listeners_bound;
	/* Broadcasts whose tasks have all run, waiting for the main loop. */
	pthread_mutex_t done_mu;
	struct sy_broadcast *done_head;
	char *config_path;             /* the file the configuration comes from */
	bool main_closing;             /* the main loop is closing its handles */
	struct sy_admin *admin;        /* the side port (admin.h); NULL when disabled */
	struct sy_reload_watch *watch; /* config file watch (reload.c) */
	/* The current router (route.h): mappings, cache, clusters; main
	 * thread only (the admin port, reload). Workers reach theirs through
	 * their own route_ctx; a reload that changes [mapping] replaces it. */
	struct sy_router *router;
};

/* The snapshot currently used for new connections (a new reference). */
sy_snapshot *server_snapshot(sy_server *srv);

/* A session of this worker has been freed: finishes a drain when it was the
 * last one. */
void worker_session_gone(sy_worker *w);

/*
 * Runs fn(w, arg) once on every worker's loop thread; when all have run,
 * done(done_arg, total) runs on the main loop with the sum of fn's results.
 * A worker whose loop has stopped contributes 0 without running fn. `arg`
 * must stay valid until done runs. Main thread only. Returns 0, or -1 when
 * out of memory (done is then not called).
 */
int server_broadcast(sy_server *srv, long (*fn)(sy_worker *w, void *arg), void *arg,
                     void (*done)(void *done_arg, long total), void *done_arg);

/*
 * Reloads the configuration from the file the running one came from (main
 * thread): parse and validate in full; on success build and publish a new
 * snapshot (sessions keep theirs), add health entries for new destinations,
 * bind new listeners / close removed ones on every worker, and either
 * re-read the mapping file or, when [mapping] changed, build a new router
 * and switch the admin port and every worker to it (route.h: lookups in
 * flight finish on the old one). On failure nothing changes, the error is
 * logged and counted,
 * and *error_r (malloc'd, one problem per line) says why. `trigger` names
 * the cause for the log ("api", "SIGHUP", "file change"). Returns 0 or -1.
 */
int server_reload(sy_server *srv, const char *trigger, char **error_r);

/* The config file the process was started with. */
const char *server_config_path(sy_server *srv);

#endif
