/*
 * What router.c shares with events.c (private to src/route/).
 */
#ifndef SWITCHYARD_ROUTER_INT_H
#define SWITCHYARD_ROUTER_INT_H

#include "switchyard/cache.h"
#include "switchyard/route.h"
#include "switchyard/store.h"

sy_cache *router_cache(sy_router *r);
const sy_mapping_config *router_mapping(sy_router *r);
sy_store *route_ctx_store(sy_route_ctx *ctx);
struct sy_fleet **router_fleet_slot(sy_router *r);

#endif
