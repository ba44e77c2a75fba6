/*
 * The runtime's own state (src/server/): the server with its workers,
 * listeners, health table, router and side port. Only the top layer includes
 * this header; the layers below see the runtime through worker.h's hooks and
 * admin.h's host table.
 */
#ifndef SWITCHYARD_RUNTIME_H
#define SWITCHYARD_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "switchyard/health.h"
#include "switchyard/snapshot.h"
#include "switchyard/worker.h"

typedef struct sy_server sy_server;

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
	/* Kubernetes discovery, one entry per discovered cluster (discovery.c;
	 * main thread). */
	struct sy_discovery *discovery;
};

/* One node of a cluster set being built: borrowed strings. */
typedef struct sy_node_spec {
	const char *id, *host;
	bool host_is_ip;
	const char *tls_server_name; /* NULL: the template's */
	bool serving, terminating;
} sy_node_spec;

/*
 * Builds the node set of cluster `cl` of configuration `cfg` (whose snapshot
 * the set will belong to): each node the cluster's template with the spec's
 * identity, its health entry (created on first sight of its id) and its
 * backend TLS context. `strings` (may be NULL) is the malloc'd block the
 * specs' strings live in; the set owns it from now on, even on failure.
 * Main thread. NULL with msg set on failure.
 */
sy_node_set *server_node_set(sy_server *srv, const sy_config *cfg, const sy_cluster_config *cl,
                             const sy_node_spec *nodes, size_t n, char *strings, char *msg,
                             size_t msglen);

/* The snapshot currently used for new connections (a new reference). */
sy_snapshot *server_snapshot(sy_server *srv);

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
