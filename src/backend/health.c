/*
 * Circuit breaker. A mutex keeps the transitions simple and exact; it is
 * taken once per backend connection attempt, never per byte.
 */
#include "switchyard/health.h"

void health_init(sy_health *h, uint32_t threshold, uint64_t cooldown_ms)
{
	pthread_mutex_init(&h->mu, NULL);
	h->consecutive_failures = 0;
	h->down = false;
	h->probe_in_flight = false;
	h->down_until_ms = 0;
	h->threshold = threshold;
	h->cooldown_ms = cooldown_ms;
}

void health_destroy(sy_health *h)
{
	pthread_mutex_destroy(&h->mu);
}

bool health_allow(sy_health *h, uint64_t now_ms, bool *probe)
{
	bool ok = true;
	*probe = false;
	if (h->threshold == 0)
		return true;
	pthread_mutex_lock(&h->mu);
	if (h->down) {
		if (now_ms < h->down_until_ms || h->probe_in_flight) {
			ok = false;
		} else {
			h->probe_in_flight = true;
			*probe = true;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return ok;
}

void health_success(sy_health *h)
{
	pthread_mutex_lock(&h->mu);
	h->consecutive_failures = 0;
	h->down = false;
	h->probe_in_flight = false;
	pthread_mutex_unlock(&h->mu);
}

bool health_failure(sy_health *h, uint64_t now_ms)
{
	bool marked = false;
	pthread_mutex_lock(&h->mu);
	if (h->consecutive_failures < UINT32_MAX)
		h->consecutive_failures++;
	if (h->threshold > 0) {
		if (h->down) {
			/* A failed probe re-opens the breaker for a full cooldown. */
			h->probe_in_flight = false;
			h->down_until_ms = now_ms + h->cooldown_ms;
		} else if (h->consecutive_failures >= h->threshold) {
			h->down = true;
			h->down_until_ms = now_ms + h->cooldown_ms;
			marked = true;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return marked;
}

void health_abandon_probe(sy_health *h)
{
	pthread_mutex_lock(&h->mu);
	h->probe_in_flight = false;
	pthread_mutex_unlock(&h->mu);
}

void health_reset(sy_health *h)
{
	health_success(h);
}

void health_configure(sy_health *h, uint32_t threshold, uint64_t cooldown_ms)
{
	pthread_mutex_lock(&h->mu);
	h->threshold = threshold;
	h->cooldown_ms = cooldown_ms;
	if (threshold == 0)
		h->down = false;
	pthread_mutex_unlock(&h->mu);
}

sy_health_state health_get(sy_health *h, uint64_t now_ms)
{
	sy_health_state st;
	pthread_mutex_lock(&h->mu);
	st.consecutive_failures = h->consecutive_failures;
	st.down = h->down;
	st.down_for_ms = (h->down && now_ms < h->down_until_ms) ? h->down_until_ms - now_ms : 0;
	pthread_mutex_unlock(&h->mu);
	return st;
}
