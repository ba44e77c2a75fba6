/*
 * What router.c shares with events.c (private to src/route/).
 */
#ifndef SWITCHYARD_ROUTER_INT_H
#define SWITCHYARD_ROUTER_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "switchyard/cache.h"
#include "switchyard/route.h"
#include "switchyard/store.h"

sy_cache *router_cache(sy_router *r);
const sy_mapping_config *router_mapping(sy_router *r);
sy_store *route_ctx_store(sy_route_ctx *ctx);
struct sy_fleet **router_fleet_slot(sy_router *r);

/*
 * What a mapping store's answer to a lookup of `key` means for routing:
 * FOUND with a value naming a declared destination or cluster (and short
 * enough for a cache entry) is a positive answer, any other FOUND value a
 * negative one (logged), NOT_FOUND negative, ERROR what m->on_store_error
 * says. Fills *a; returns the cache TTL to use (0 = the kind's default).
 * Exposed for tests/fuzz/fuzz_store_answer.c.
 */
uint64_t router_store_answer(const sy_mapping_config *m, const sy_config *cfg, const char *key,
                             sy_store_status st, const char *value, const char *error,
                             sy_cache_answer *a);

/* A fleet event message (events.c's format), parsed and checked. */
typedef struct sy_fleet_event {
	sy_fleet_type type;
	const char *origin; /* NULL: none (the PostgreSQL trigger's events) */
	bool has_seq;
	uint64_t seq;
	const char *identifier; /* NULL: every identifier (invalidate only) */
	unsigned seconds;       /* delay */
} sy_fleet_event;

/*
 * Parses one event payload. Returns 0 with *ev filled, its strings owned by
 * *json_out (json_decref it when done), or -1 with *why set (*json_out is
 * then NULL or still to be released: json_decref accepts both).
 * Exposed for tests/fuzz/fuzz_fleet_event.c.
 */
int fleet_event_parse(const char *payload, size_t len, sy_fleet_event *ev, json_t **json_out,
                      const char **why);

/*
 * The receivers' record of the events seen per origin: the last seq of each
 * of up to FLEET_ORIGINS_MAX origins (1 to FLEET_ORIGIN_MAX characters).
 * When it is full, the origin recorded longest ago is forgotten (a replica
 * that restarted draws a new origin, so old ones stop coming).
 */
#define FLEET_ORIGINS_MAX 256
#define FLEET_ORIGIN_MAX  16

typedef struct sy_fleet_seen {
	struct {
		char id[FLEET_ORIGIN_MAX + 1];
		uint64_t seq;
	} e[FLEET_ORIGINS_MAX];
	size_t n, next_evict;
} sy_fleet_seen;

/* True when (origin, seq) is new (seq above the last recorded from that
 * origin, or the origin is not recorded); records it. False for a replay or
 * a duplicate. Exposed for tests/fuzz/fuzz_fleet_dedup.c. */
bool fleet_seen_first(sy_fleet_seen *t, const char *origin, uint64_t seq);

#endif
