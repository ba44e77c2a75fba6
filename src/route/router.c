/*
 * The router. With no mapping store wired in yet, every identifier resolves
 * to routing.default_destination, synchronously.
 */
#include "switchyard/route.h"

#include <stddef.h>

#include "switchyard/log.h"

sy_route_req *route_resolve(sy_worker *w, sy_snapshot *snap, const char *identifier, sy_proto proto,
                            sy_route_cb cb, void *arg)
{
	(void)w;
	(void)identifier;
	sy_route_result r = {.status = SY_ROUTE_OK, .routed_to_default = true};
	const char *id = snap->cfg->routing.default_destination;
	r.dest = snapshot_dest(snap, id);
	if (!r.dest || !r.dest->cfg->proto[proto].declared) {
		sy_log(SY_LOG_ERROR, "destination does not declare the protocol in use",
		       "destination", id ? id : "-", "protocol", sy_proto_name(proto), NULL);
		r.status = SY_ROUTE_TEMPFAIL;
		r.dest = NULL;
		r.reason = "destination does not declare the protocol";
	}
	cb(arg, &r);
	return NULL;
}

void route_cancel(sy_route_req *req)
{
	(void)req;
}
