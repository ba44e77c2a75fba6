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

#include "switchyard/runtime.h"

/* Starts the port when [admin] is configured (a no-op returning 0
 * otherwise). Call on the main thread before its loop runs. Returns 0, or -1
 * with *error_r (static text) when the port cannot be bound. */
int admin_start(sy_server *srv, const char **error_r);

/* Closes the port and its connections (main thread; NULL-safe). Requests
 * waiting for a store or the workers are answered into the void. The loop
 * must run afterwards to release the memory. */
void admin_stop(sy_server *srv);

struct sy_route_ctx;
/* A reload switched routers (route.h): `ctx`, a context of the new router
 * on the main loop, is owned by the port from now on and serves /mappings;
 * the previous one drains and closes. Without a port, ctx is closed. Main
 * thread. */
void admin_route_ctx_set(sy_server *srv, struct sy_route_ctx *ctx);

/* Config file watch (src/core/reload.c): reloads when the file's content
 * changes, noticed through a directory watch (in-place edits and the
 * Kubernetes ConfigMap `..data` symlink swap), debounced, compared by
 * SHA-256, with a periodic check as the fallback. A watch that cannot be set
 * up is logged and left to the periodic check. */
void reload_watch_start(sy_server *srv);
void reload_watch_stop(sy_server *srv);
/* A reload succeeded: remember the file's current content as loaded. */
void reload_watch_loaded(sy_server *srv);

#endif
