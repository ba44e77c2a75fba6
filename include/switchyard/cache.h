/*
 * The mapping cache: one per process, shared by every worker thread.
 *
 * Keys are normalized identifiers; values are target ids (a destination or a
 * cluster). An entry is positive (the store named a target), negative (the
 * store has no mapping: route to the default) or pending (a store query is
 * in flight). Positive and negative entries expire after their TTL; the
 * number of cached entries is bounded by `max_entries`, enforced per shard
 * by evicting the least recently used entry.
 *
 * Coalescing: the first lookup of a key that is not cached marks it pending
 * and becomes its fetcher (SY_CACHE_FETCH); every later lookup of that key
 * registers a waiter instead of querying the store (SY_CACHE_WAIT). When the
 * fetcher calls cache_complete(), the entry is filled and each waiter is
 * handed the answer on its own event loop through its inbox (a mutex-
 * protected queue plus a uv_async_t), so waiters on other worker threads
 * never run on the fetcher's thread.
 *
 * The table is split into shards (a mutex and a chained hash table each)
 * selected by a seeded hash of the key, so threads rarely contend and an
 * attacker cannot aim identifiers at one bucket.
 */
#ifndef SWITCHYARD_CACHE_H
#define SWITCHYARD_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Longest value (target id) the cache stores, including the NUL. */
#define SY_CACHE_VALUE_MAX 256

typedef enum sy_cache_outcome {
	SY_CACHE_POSITIVE, /* `value` is the target id */
	SY_CACHE_NEGATIVE, /* no mapping: the default destination */
	SY_CACHE_ERROR,    /* the fetch failed (never cached): `value` is a short reason */
	SY_CACHE_DROPPED,  /* the waiter's inbox was closed: only release the waiter */
} sy_cache_outcome;

typedef struct sy_cache_answer {
	sy_cache_outcome outcome;
	char value[SY_CACHE_VALUE_MAX];
} sy_cache_answer;

typedef struct sy_cache sy_cache;
typedef struct sy_cache_inbox sy_cache_inbox;
typedef struct sy_cache_waiter sy_cache_waiter;
/* A pending entry handed to its fetcher: pass it to cache_complete(). */
typedef struct sy_cache_fetch sy_cache_fetch;

/*
 * A lookup in progress, owned by the caller (typically embedded in its
 * request). Set `inbox` and `cb` before cache_lookup(). After SY_CACHE_WAIT
 * the memory must stay valid until `cb` has run: on the inbox's loop with
 * answer.outcome POSITIVE, NEGATIVE or ERROR, or (once the inbox has been
 * closed) on whichever thread completes the fetch, with SY_CACHE_DROPPED,
 * where the callback must do nothing but release the waiter.
 */
struct sy_cache_waiter {
	sy_cache_waiter *next; /* private to the cache */
	sy_cache_inbox *inbox;
	void (*cb)(sy_cache_waiter *w);
	sy_cache_answer answer;
};

typedef uint64_t (*sy_cache_clock)(void *arg);

typedef struct sy_cache_opts {
	uint64_t max_entries;     /* exact bound on the entries kept; 0: nothing is kept
	                             (lookups still coalesce) */
	uint64_t positive_ttl_ms; /* default TTL of positive entries */
	uint64_t negative_ttl_ms; /* default TTL of negative entries */
	unsigned shards;          /* 0 = 64; rounded up to a power of two, and fewer when
	                             max_entries is small (each shard gets >= 64) */
	sy_cache_clock clock;     /* milliseconds; NULL = CLOCK_MONOTONIC (tests inject one) */
	void *clock_arg;
} sy_cache_opts;

typedef struct sy_cache_stats {
	uint64_t hits;    /* answered from a fresh cached entry */
	uint64_t misses;  /* everything else: fetches and coalesced waits */
	uint64_t entries; /* positive + negative entries held now (not pending ones) */
} sy_cache_stats;

/* Returns a new cache, or NULL on allocation failure. */
sy_cache *cache_create(const sy_cache_opts *opts);

/* Frees the cache. No lookup may be in progress and no fetch outstanding
 * (call after every worker thread has stopped). */
void cache_destroy(sy_cache *c);

typedef enum sy_cache_lookup_result {
	SY_CACHE_HIT,   /* w->answer holds a POSITIVE or NEGATIVE answer */
	SY_CACHE_FETCH, /* the key is now pending and the caller its fetcher: *fetch_r is
	                   set and cache_complete() must follow; `w` is not registered */
	SY_CACHE_WAIT,  /* a fetch is in flight: `w` is registered and its cb will run */
} sy_cache_lookup_result;

/* Looks `key` up (thread-safe). `w->inbox` must be set (see
 * sy_cache_waiter); the inbox is referenced until the waiter is answered. */
sy_cache_lookup_result cache_lookup(sy_cache *c, const char *key, sy_cache_waiter *w,
                                    sy_cache_fetch **fetch_r);

/*
 * Ends a fetch (thread-safe). POSITIVE (value required, shorter than
 * SY_CACHE_VALUE_MAX) and NEGATIVE answers are cached for `ttl_ms`, or the
 * default TTL of their kind when 0; ERROR answers (value: a reason, may be
 * NULL) are handed to the waiters but not cached. If the key was
 * invalidated while the fetch was in flight, the answer still goes to the
 * waiters that were registered but is not cached. `fetch` is consumed.
 */
void cache_complete(sy_cache *c, sy_cache_fetch *fetch, sy_cache_outcome outcome, const char *value,
                    uint64_t ttl_ms);

/* The hit path without a waiter: when `key` is cached and fresh, copies the
 * answer into *out, counts a hit, marks the entry used and returns true.
 * Otherwise counts nothing and returns false: follow with cache_lookup().
 * (Lets callers allocate their request only on a miss.) */
bool cache_get(sy_cache *c, const char *key, sy_cache_answer *out);

/* Copies a fresh cached answer into *out without counting a hit or touching
 * the eviction order; false when absent, expired or pending. */
bool cache_peek(sy_cache *c, const char *key, sy_cache_answer *out);

/* Drops one key (a pending key is detached: its fetch still answers its
 * waiters but is not cached, and the next lookup fetches anew). Returns
 * true when something was dropped. */
bool cache_invalidate(sy_cache *c, const char *key);

/* Drops every key, as cache_invalidate() does for each. */
void cache_invalidate_all(sy_cache *c);

/* Caps every entry's lifetime at `cap_ms` from now (entries already cached
 * are shortened, new ones get min(their TTL, cap_ms)); 0 lifts the cap for
 * new entries. Used while fleet events cannot be received (route.h).
 * Thread-safe. */
void cache_cap_ttl(sy_cache *c, uint64_t cap_ms);

void cache_stats(sy_cache *c, sy_cache_stats *out);

/*
 * An inbox delivers answers to waiters on one event loop. Create it on the
 * loop's thread, or before that loop runs. Returns NULL on failure.
 */
sy_cache_inbox *cache_inbox_create(uv_loop_t *loop);

/* Closes the inbox from its loop's thread: answers still queued, and any
 * that arrive later, are delivered as SY_CACHE_DROPPED. The memory is freed
 * once the async handle's close callback has run and no waiter refers to it.
 * The loop must run afterwards for the close to complete. */
void cache_inbox_close(sy_cache_inbox *ib);

#endif
