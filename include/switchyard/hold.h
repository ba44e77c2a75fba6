/*
 * Login holds: the admin port's POST /connections/delay makes new logins of
 * one identifier wait before routing, for at most SY_HOLD_MAX_MS. Used during
 * a mailbox move so clients that reconnect at once do not reach the old
 * backend before the mapping changes.
 *
 * A small process-wide table behind a mutex; the hot path (every login)
 * costs one relaxed atomic load while no hold exists.
 */
#ifndef SWITCHYARD_HOLD_H
#define SWITCHYARD_HOLD_H

#include <stdint.h>

#define SY_HOLD_MAX_MS  120000u
#define SY_HOLD_ENTRIES 4096

/*
 * Holds new logins of `identifier` (already normalized like a login's) for
 * `ms` milliseconds from now (capped at SY_HOLD_MAX_MS); 0 lifts the hold.
 * Replaces an existing hold of the same identifier. Thread-safe. Returns 0,
 * or -1 when the table is full of live holds.
 */
int hold_set(const char *identifier, uint64_t ms);

/* Milliseconds the identifier is still held for (0: not held). Thread-safe. */
uint64_t hold_remaining_ms(const char *identifier);

/* Lifts every hold (tests, shutdown). */
void hold_clear(void);

#endif
