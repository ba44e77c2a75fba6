/*
 * Routing: identifier -> destination.
 *
 * route_resolve() is the one asynchronous call every interactive protocol
 * makes after identifier extraction. The mapping stores (file, Redis,
 * PostgreSQL) and the cache plug in behind it; until they exist every login
 * routes to routing.default_destination.
 */
#ifndef SWITCHYARD_ROUTE_H
#define SWITCHYARD_ROUTE_H

#include "switchyard/runtime.h"

typedef enum sy_route_status {
	SY_ROUTE_OK,
	SY_ROUTE_TEMPFAIL, /* store error/timeout with on_store_error = tempfail, or a
	                      destination lacking the protocol */
} sy_route_status;

typedef struct sy_route_result {
	sy_route_status status;
	sy_dest_rt *dest;       /* OK: where to connect */
	bool routed_to_default; /* no mapping for the identifier */
	const char *reason;     /* TEMPFAIL: for logs */
} sy_route_result;

typedef void (*sy_route_cb)(void *arg, const sy_route_result *r);
typedef struct sy_route_req sy_route_req;

/*
 * Resolves `identifier` (NULL: no identifier, route to the default) for
 * protocol `proto`. The callback runs exactly once unless route_cancel()
 * is called first; it may run before route_resolve returns, in which case
 * NULL is returned.
 */
sy_route_req *route_resolve(sy_worker *w, sy_snapshot *snap, const char *identifier, sy_proto proto,
                            sy_route_cb cb, void *arg);
void route_cancel(sy_route_req *req);

#endif
