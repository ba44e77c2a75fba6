/*
 * The management side port ([admin], SPEC.md section 6): probes, metrics
 * and the bearer-token management API, served over HTTP/1.1 on the main
 * thread's event loop.
 *
 * Unauthenticated: GET /livez, /healthz, /readyz[?verbose], /metrics.
 * Bearer token (constant-time compare, per-client-IP lockout): /stats,
 * /destinations, /destinations/reset, /mappings, /mappings/reload,
 * /cache/invalidate, /connections/kick, /connections/delay, /config/reload.
 * docs/API.md is the reference.
 */
#ifndef SWITCHYARD_ADMIN_H
#define SWITCHYARD_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "switchyard/snapshot.h"
#include "switchyard/worker.h"

struct sy_router;
struct sy_route_ctx;

/* /readyz and /stats figures the runtime owns. */
typedef struct sy_admin_state {
	bool listeners_bound; /* every listener is bound */
	bool draining;        /* shutting down */
	size_t nworkers;
	uint64_t active_connections;
} sy_admin_state;

/*
 * What the side port needs from the runtime, which fills this table in: the
 * admin layer sits below the runtime and reaches it only through these
 * functions, all called on the main loop with `arg`.
 */
typedef struct sy_admin_host {
	void *arg;
	uv_loop_t *loop; /* the main loop */
	/* A new reference to the snapshot new connections use. */
	sy_snapshot *(*snapshot)(void *arg);
	/* The current router, or NULL (no [mapping] table). */
	struct sy_router *(*router)(void *arg);
	void (*state)(void *arg, sy_admin_state *out);
	/* Liveness: 0 when every event loop ticked within stale_ms, else -1
	 * with why (a sentence) written into buf. */
	int (*liveness)(void *arg, uint64_t stale_ms, char *buf, size_t len);
	/* The Prometheus text (malloc'd, length in *len), NULL when out of
	 * memory. */
	char *(*metrics)(void *arg, size_t *len);
	/* Runs fn(w, fn_arg) on every worker loop, then done(done_arg, sum of
	 * the results) on the main loop; 0, or -1 (done is not called). */
	int (*broadcast)(void *arg, long (*fn)(sy_worker *w, void *fn_arg), void *fn_arg,
	                 void (*done)(void *done_arg, long total), void *done_arg);
	/* A configuration reload (POST /config/reload); see server_reload. */
	int (*reload)(void *arg, const char *trigger, char **error_r);
	/* Readiness of Kubernetes discovery: true when every discovered
	 * cluster has completed its first list; `detail` (may be NULL) gets
	 * one "[+]discovery:<id> ..." line per discovered cluster. */
	bool (*discovery)(void *arg, char *detail, size_t len);
	/* A discovered cluster's state word ("synced", "syncing", "degraded",
	 * "failed"), NULL for a static cluster. */
	const char *(*cluster_state)(void *arg, const char *id);
} sy_admin_host;

typedef struct sy_admin sy_admin;

/* Starts the port when [admin] is configured in the host's current snapshot
 * (*out stays NULL and 0 is returned otherwise). `host` is copied. Call on
 * the main thread before its loop runs. Returns 0, or -1 with *error_r
 * (static text) when the port cannot be bound. */
int admin_start(const sy_admin_host *host, sy_admin **out, const char **error_r);

/* Closes the port and its connections (main thread; NULL-safe). Requests
 * waiting for a store or the workers are answered into the void. The loop
 * must run afterwards to release the memory. */
void admin_stop(sy_admin *a);

/* A reload switched routers (route.h): `ctx`, a context of the new router
 * on the main loop, is owned by the port from now on and serves /mappings;
 * the previous one drains and closes. With a = NULL, ctx is closed. Main
 * thread. */
void admin_route_ctx_set(sy_admin *a, struct sy_route_ctx *ctx);

#endif
