/*
 * Routing: identifier -> target (destination or cluster) -> destination.
 *
 * route_resolve() is the one asynchronous call every interactive protocol
 * makes after identifier extraction. Behind it: the mapping cache (cache.h,
 * one per router), the mapping source ([mapping].source: the in-memory file
 * table, or a Redis / PostgreSQL store with one instance per event loop),
 * and cluster pinning (cluster.h).
 *
 * A router is built from one configuration's [mapping] (router_create):
 * at startup, and again by a reload that changes [mapping]. Every event loop
 * that resolves or manages mappings has a context (sy_route_ctx) of a router,
 * holding its store instance and the inbox through which coalesced lookups
 * answered on other threads reach it. A worker's current context is
 * w->route_ctx (only touched on the worker's thread, or before it runs):
 * router_worker_attach() installs a context of a router there and retires
 * the previous one; router_worker_detach() retires it when the worker stops.
 *
 * Lifetimes. A router is reference counted: its creator holds one reference
 * (router_unref drops it) and every context holds one. A retired context
 * (router_ctx_close) drains: lookups already running on it complete normally
 * (answered by its store, or by lookup_timeout), then its store and inbox
 * are closed and it releases the router, which is freed with its last
 * reference. So a reload can switch every loop to a new router while logins
 * in flight finish on the old one, and sessions never notice.
 */
#ifndef SWITCHYARD_ROUTE_H
#define SWITCHYARD_ROUTE_H

#include <stdint.h>

#include "switchyard/snapshot.h"
#include "switchyard/worker.h"

typedef enum sy_route_status {
	SY_ROUTE_OK,
	SY_ROUTE_TEMPFAIL, /* store error/timeout with on_store_error = tempfail, or a
	                      destination lacking the protocol */
} sy_route_status;

typedef struct sy_route_result {
	sy_route_status status;
	sy_dest_rt *dest;       /* OK: where to connect */
	sy_node_set *hold;      /* a cluster node: the set `dest` belongs to, valid while the
	                           callback runs; a session that keeps `dest` takes its own
	                           reference (session_set_dest) */
	bool routed_to_default; /* no mapping for the identifier */
	const char *reason;     /* TEMPFAIL: for logs */
} sy_route_result;

typedef void (*sy_route_cb)(void *arg, const sy_route_result *r);
typedef struct sy_route_req sy_route_req;
typedef struct sy_router sy_router;
typedef struct sy_route_ctx sy_route_ctx;

/*
 * Resolves `identifier` (NULL: no identifier, route to the default) for
 * protocol `proto` through the worker's current context (w->route_ctx). The
 * callback runs exactly once unless route_cancel() is called first; it may
 * run before route_resolve returns, in which case NULL is returned. `snap`
 * (the caller's) must stay referenced until the callback has run or the
 * request is cancelled. The identifier must already be normalized
 * (identifier_extract).
 *
 * `conn_id` is a per-connection value (the session id). It matters only
 * when there is no identifier (an opaque bearer token) and the default is a
 * cluster: the node is then the rendezvous winner for the connection
 * (cluster_pick over the decimal conn_id) instead of one fixed node for
 * every such login, so opaque-token logins spread over the cluster's nodes
 * (an account's connections may then reach different nodes, which a cluster
 * of nodes sharing their storage must accept anyway).
 */
sy_route_req *route_resolve(sy_worker *w, sy_snapshot *snap, const char *identifier,
                            uint64_t conn_id, sy_proto proto, sy_route_cb cb, void *arg);
/* The callback will not run. Call only on the request's loop, before its
 * callback has run. */
void route_cancel(sy_route_req *req);

/* route_resolve() on an explicit context (for loops that are not workers:
 * tests, the benchmark, the management port). */
sy_route_req *route_resolve_ctx(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                                uint64_t conn_id, sy_proto proto, sy_route_cb cb, void *arg);

/* ---- lifecycle --------------------------------------------------------------------------- */

/*
 * Creates a router for the mapping configuration of `snap` (a reference is
 * kept), loading the mapping file for source = "file". `nworkers` divides
 * each store's pool_size among the workers. The caller holds the one
 * reference. Returns NULL with *error_r (static text; file errors are
 * logged one by one) on failure.
 */
sy_router *router_create(sy_snapshot *snap, unsigned nworkers, const char **error_r);
/* Takes another reference (any thread). Returns r. */
sy_router *router_ref(sy_router *r);
/* Drops a reference (any thread; NULL is fine). The router is freed with the
 * last one, which its contexts hold until they have drained and closed. */
void router_unref(sy_router *r);

/* Creates a context of `r` on `loop` (call on that loop's thread or before
 * it runs) with a store of `conns` connections (0 = pool_size divided among
 * the workers). The context holds a reference to r. Returns NULL with
 * *error_r on failure (e.g. a store URL the store cannot use). */
sy_route_ctx *router_ctx_create(sy_router *r, uv_loop_t *loop, unsigned conns,
                                const char **error_r);
/* Retires a context, on its loop's thread (NULL is fine); the caller must
 * not use it afterwards. Requests and management operations already started
 * on it complete normally (each within lookup_timeout); then its store and
 * inbox are closed, and the memory and the router reference are released
 * from the loop's close callbacks, so the loop must keep running. May be
 * called from inside one of the context's own callbacks. */
void router_ctx_close(sy_route_ctx *ctx);

/* Creates a context of `r` on w's loop and makes it w->route_ctx, retiring
 * the previous one (router_ctx_close). Call on w's loop thread, or before
 * it runs. Returns 0, or -1 with *error_r, the previous context kept. */
int router_worker_attach(sy_router *r, sy_worker *w, const char **error_r);
/* Retires w->route_ctx (on w's thread; a no-op if there is none). */
void router_worker_detach(sy_worker *w);

/* ---- management (the admin port) ----------------------------------------------------------- */

/* The admin port calls these on the main loop with its context of the
 * current router (srv->router; a reload that switches routers hands it a
 * new one, admin_route_ctx_set) and passes srv->router where a router is
 * taken. */

typedef struct sy_route_explain {
	const char *identifier;  /* as given */
	const char *normalized;  /* NULL when the identifier is invalid */
	const char *destination; /* target: destination or cluster id (NULL on error) */
	const char *node;        /* cluster target: the node chosen now; else NULL */
	bool routed_to_default;
	bool cached;       /* answered from the cache */
	const char *error; /* non-NULL: invalid identifier, store error or timeout */
} sy_route_explain;
typedef void (*sy_route_explain_cb)(void *arg, const sy_route_explain *e);

/* Where `identifier` (raw: the master-user suffix is cut and it is
 * normalized like a login's) routes now. A cached answer is reported as
 * such; otherwise the source is asked, without filling the cache. The
 * callback runs exactly once, possibly before the call returns. */
void route_explain(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                   sy_route_explain_cb cb, void *arg);

typedef enum sy_route_admin_status {
	SY_ROUTE_ADMIN_OK,           /* put done */
	SY_ROUTE_ADMIN_REMOVED,      /* delete: there was a mapping */
	SY_ROUTE_ADMIN_ABSENT,       /* delete: there was none */
	SY_ROUTE_ADMIN_READONLY,     /* the source cannot be written (501) */
	SY_ROUTE_ADMIN_UNKNOWN_DEST, /* put: not a declared destination or cluster (400) */
	SY_ROUTE_ADMIN_INVALID,      /* the identifier is not routable (400) */
	SY_ROUTE_ADMIN_ERROR,        /* store or file error: `error` says which */
} sy_route_admin_status;
typedef void (*sy_route_admin_cb)(void *arg, sy_route_admin_status st, const char *error);

/* Maps `identifier` (normalized as in route_explain) to `destination`: the
 * file is rewritten atomically and the table swapped, or the store is
 * written; then the cache entry is invalidated. Callback as route_explain. */
void route_put(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
               const char *destination, sy_route_admin_cb cb, void *arg);
/* Removes the mapping: REMOVED or ABSENT (or an error). */
void route_delete(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                  sy_route_admin_cb cb, void *arg);

/* Re-reads the mapping file, all or nothing, checking destinations against
 * snap's configuration; on success the table is swapped and the cache
 * cleared. A no-op (0) for other sources. Returns 0, or -1 with *error_r a
 * malloc'd message (every problem, one per line) and the old table kept. */
int route_reload_file(sy_router *r, sy_snapshot *snap, char **error_r);

/* Drops one identifier (normalized as in route_explain) from the cache, or
 * every entry when identifier is NULL. */
void route_invalidate(sy_router *r, sy_snapshot *snap, const char *identifier);

typedef struct sy_route_stats {
	uint64_t hits, misses, entries;
	double hit_rate_pct; /* 0 when there was no lookup */
} sy_route_stats;
void route_stats(sy_router *r, sy_route_stats *out);

/* ---- fleet events (events.c, docs/OPERATIONS.md "Several replicas") ------------------------ */

typedef enum sy_fleet_type {
	SY_FLEET_INVALIDATE, /* identifier, or NULL: the whole cache */
	SY_FLEET_KICK,
	SY_FLEET_DELAY, /* seconds */
} sy_fleet_type;

/* What the runtime does for received kick events (invalidate and delay are
 * applied by the router itself: the cache, hold_set). Main loop. */
typedef struct sy_fleet_sink {
	void *arg;
	void (*kick)(void *arg, const char *identifier);
} sy_fleet_sink;

/*
 * Starts receiving fleet events for router r (Redis or SQL source; a no-op
 * returning 0 otherwise) on the main loop. Events whose origin is this
 * process are ignored: the sender applies its own events at once, locally,
 * before publishing them. Others are applied once each (origin + sequence
 * number). Returns 0 or -1 with *error_r.
 */
int router_fleet_start(sy_router *r, uv_loop_t *loop, const sy_fleet_sink *sink,
                       const char **error_r);
/* Stops it (main loop; a no-op when not started). */
void router_fleet_stop(sy_router *r);

/* Does ctx's source carry fleet events (redis or sql)? */
bool route_fleet_available(sy_route_ctx *ctx);

/* Publishes an event through ctx's store. cb(arg, seq, error): error NULL
 * when the store took it. Runs later, on the loop, exactly once. Returns 0,
 * or -1 (cb not called). */
typedef void (*sy_fleet_cb)(void *arg, uint64_t seq, const char *error);
int route_fleet_publish(sy_route_ctx *ctx, sy_fleet_type type, const char *identifier,
                        unsigned seconds, sy_fleet_cb cb, void *arg);

typedef struct sy_fleet_stats {
	bool active;     /* a subscriber exists */
	bool subscribed; /* its subscription is up */
	uint64_t published[3], received[3], resubscribes;
	double seconds_since_event; /* -1: none yet */
} sy_fleet_stats;
void route_fleet_stats(sy_router *r, sy_fleet_stats *out);
const char *route_fleet_type_name(sy_fleet_type t);

#endif
