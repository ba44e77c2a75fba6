/*
 * Per-destination health: a circuit breaker shared by all worker threads.
 *
 * Consecutive connection failures are counted; at `threshold` the destination
 * is marked down for `cooldown`, during which new connections are refused at
 * once. When the cooldown has passed exactly one connection is let through as
 * a probe: its success closes the breaker (and resets the count), its failure
 * opens it for another cooldown. A threshold of 0 disables the breaker.
 */
#ifndef SWITCHYARD_HEALTH_H
#define SWITCHYARD_HEALTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct sy_health {
	pthread_mutex_t mu;
	uint32_t consecutive_failures;
	bool down;
	bool probe_in_flight;
	uint64_t down_until_ms; /* monotonic milliseconds */
	uint32_t threshold;
	uint64_t cooldown_ms;
} sy_health;

typedef struct sy_health_state {
	uint32_t consecutive_failures;
	bool down;            /* marked down and not yet probed back to health */
	uint64_t down_for_ms; /* remaining cooldown, 0 when probing is allowed */
} sy_health_state;

void health_init(sy_health *h, uint32_t threshold, uint64_t cooldown_ms);
void health_destroy(sy_health *h);

/* May a connection be attempted now? Sets *probe when this attempt is the
 * single probe after a cooldown (its outcome must be reported). */
bool health_allow(sy_health *h, uint64_t now_ms, bool *probe);
void health_success(sy_health *h);
/* Returns true when this failure marked the destination down. */
bool health_failure(sy_health *h, uint64_t now_ms);
/* An attempt that was let through as a probe ended without a verdict (e.g.
 * the client went away): let the next connection probe instead. */
void health_abandon_probe(sy_health *h);
/* Manual reset (management API). */
void health_reset(sy_health *h);
/* New threshold and cooldown (configuration reload); the state is kept. */
void health_configure(sy_health *h, uint32_t threshold, uint64_t cooldown_ms);
sy_health_state health_get(sy_health *h, uint64_t now_ms);

#endif
