/*
 * Time for the whole process (src/core/clock.c).
 */
#ifndef SWITCHYARD_CLOCK_H
#define SWITCHYARD_CLOCK_H

#include <stdint.h>

/* Milliseconds on a monotonic clock. Unlike uv_now() it is the same clock
 * on every thread, so deadlines kept in shared state (breakers, login
 * delays, heartbeats) compare across worker loops. */
uint64_t sy_now_ms(void);

#endif
