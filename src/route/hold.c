/*
 * Login holds (hold.h). The table is small and short-lived: entries expire
 * after at most two minutes and are reused once expired, so a linear scan
 * under the mutex is cheaper than anything cleverer at this size.
 */
#include "switchyard/hold.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/clock.h"

typedef struct hold {
	char *id; /* NULL: free slot */
	uint64_t until_ms;
} hold;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static hold table[SY_HOLD_ENTRIES];
/* Holds set and possibly unexpired: lets logins skip the mutex when 0. */
static _Atomic unsigned live;

/* Frees expired slots. Caller holds mu. */
static void sweep(uint64_t now)
{
	for (size_t i = 0; i < SY_HOLD_ENTRIES; i++)
		if (table[i].id && table[i].until_ms <= now) {
			free(table[i].id);
			table[i].id = NULL;
			atomic_fetch_sub(&live, 1);
		}
}

int hold_set(const char *identifier, uint64_t ms)
{
	if (ms > SY_HOLD_MAX_MS)
		ms = SY_HOLD_MAX_MS;
	uint64_t now = sy_now_ms();
	int rc = 0;
	pthread_mutex_lock(&mu);
	sweep(now);
	hold *slot = NULL, *free_slot = NULL;
	for (size_t i = 0; i < SY_HOLD_ENTRIES; i++) {
		if (table[i].id && strcmp(table[i].id, identifier) == 0) {
			slot = &table[i];
			break;
		}
		if (!table[i].id && !free_slot)
			free_slot = &table[i];
	}
	if (ms == 0) {
		if (slot) {
			free(slot->id);
			slot->id = NULL;
			atomic_fetch_sub(&live, 1);
		}
	} else if (slot) {
		slot->until_ms = now + ms;
	} else if (free_slot && (free_slot->id = strdup(identifier)) != NULL) {
		free_slot->until_ms = now + ms;
		atomic_fetch_add(&live, 1);
	} else {
		rc = -1;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

uint64_t hold_remaining_ms(const char *identifier)
{
	if (atomic_load_explicit(&live, memory_order_relaxed) == 0)
		return 0;
	uint64_t now = sy_now_ms(), left = 0;
	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < SY_HOLD_ENTRIES; i++)
		if (table[i].id && strcmp(table[i].id, identifier) == 0) {
			if (table[i].until_ms > now)
				left = table[i].until_ms - now;
			break;
		}
	pthread_mutex_unlock(&mu);
	return left;
}

void hold_clear(void)
{
	pthread_mutex_lock(&mu);
	sweep(UINT64_MAX);
	pthread_mutex_unlock(&mu);
}
