/*
 * The mapping cache (see cache.h).
 *
 * Each shard holds a chained hash table of entries and an LRU list of the
 * entries that are cached (positive or negative). Pending entries are in the
 * hash table, so later lookups find them and wait, but not in the LRU list:
 * they are never evicted, since their fetcher still refers to them. An entry
 * that is invalidated while pending is unlinked from the table ("detached")
 * and freed by cache_complete().
 *
 * Expiry is lazy: a lookup that finds an expired entry turns it back into a
 * pending one and becomes its fetcher. Expired entries that are never looked
 * up again age out through the LRU order.
 *
 * Lock order: a shard mutex, then (in inbox_push) an inbox mutex. Waiter
 * callbacks never run under a shard lock.
 */
#include "switchyard/cache.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_SHARDS 64
/* The fewest entries a shard is made for (see cache_create). */
#define MIN_SHARD_ENTRIES 64
#define INITIAL_BUCKETS   16

typedef enum entry_state { E_PENDING, E_POSITIVE, E_NEGATIVE } entry_state;

typedef struct entry {
	struct entry *chain;               /* next in the hash bucket */
	struct entry *lru_prev, *lru_next; /* cached entries only */
	uint64_t hash;
	uint64_t expires_ms;
	entry_state state;
	bool linked;              /* in the hash table (false once detached) */
	sy_cache_waiter *waiters; /* pending: who waits for the answer */
	char *value;              /* positive: the target id */
	char key[];
} entry;

typedef struct shard {
	alignas(64) pthread_mutex_t mu;
	entry **buckets;
	size_t nbuckets; /* a power of two */
	size_t linked;   /* entries in the table, pending included */
	size_t cached;   /* entries in the LRU list */
	size_t cap;      /* most cached entries this shard keeps */
	/* Counted under the shard lock, which is held anyway: a process-wide
	 * atomic would bounce one cache line between all worker cores. */
	uint64_t hits, misses;
	entry lru; /* sentinel: lru.lru_next is the most recently used */
} shard;

struct sy_cache {
	shard *shards;
	size_t nshards; /* a power of two */
	uint64_t seed;
	uint64_t positive_ttl_ms, negative_ttl_ms;
	bool keep; /* max_entries > 0 */
	sy_cache_clock clock;
	void *clock_arg;
	_Atomic uint64_t entries;
	_Atomic uint64_t ttl_cap_ms; /* 0: none (cache_cap_ttl) */
};

struct sy_cache_inbox {
	uv_async_t async;
	pthread_mutex_t mu;
	sy_cache_waiter *head, *tail; /* answered, not yet delivered */
	bool closed;
	/* One reference for the handle (dropped in its close callback) and one
	 * per registered waiter not yet delivered. */
	_Atomic unsigned refs;
};

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t monotonic_ms(void *arg)
{
	(void)arg;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Seeded FNV-1a 64 with the splitmix64 finalizer: cheap, well mixed in
 * the low bits used for shard and bucket selection, and not predictable by
 * a client choosing identifiers, because of the per-process seed. */
static uint64_t key_hash(uint64_t seed, const char *key)
{
	uint64_t h = 0xcbf29ce484222325ull ^ seed;
	for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	h += 0x9e3779b97f4a7c15ull;
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

static shard *shard_of(sy_cache *c, uint64_t hash)
{
	/* The high bits pick the shard, the low bits the bucket, so the two
	 * choices are independent. */
	return &c->shards[(hash >> 40) & (c->nshards - 1)];
}

static entry **bucket_of(shard *s, uint64_t hash)
{
	return &s->buckets[hash & (s->nbuckets - 1)];
}

static entry *find(shard *s, uint64_t hash, const char *key)
{
	for (entry *e = *bucket_of(s, hash); e; e = e->chain)
		if (e->hash == hash && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* Doubles the bucket array; on allocation failure the chains just grow. */
static void grow(shard *s)
{
	size_t n = s->nbuckets * 2;
	entry **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < s->nbuckets; i++) {
		entry *next;
		for (entry *e = s->buckets[i]; e; e = next) {
			next = e->chain;
			e->chain = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = n;
}

static void table_link(shard *s, entry *e)
{
	if (s->linked >= s->nbuckets)
		grow(s);
	entry **b = bucket_of(s, e->hash);
	e->chain = *b;
	*b = e;
	e->linked = true;
	s->linked++;
}

static void table_unlink(shard *s, entry *e)
{
	for (entry **p = bucket_of(s, e->hash); *p; p = &(*p)->chain) {
		if (*p == e) {
			*p = e->chain;
			break;
		}
	}
	e->chain = NULL;
	e->linked = false;
	s->linked--;
}

static void lru_push_front(shard *s, entry *e)
{
	e->lru_prev = &s->lru;
	e->lru_next = s->lru.lru_next;
	s->lru.lru_next->lru_prev = e;
	s->lru.lru_next = e;
}

static void lru_unlink(entry *e)
{
	e->lru_prev->lru_next = e->lru_next;
	e->lru_next->lru_prev = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

/* Removes a cached (non-pending) entry completely. */
static void drop_cached(sy_cache *c, shard *s, entry *e)
{
	table_unlink(s, e);
	lru_unlink(e);
	s->cached--;
	atomic_fetch_sub(&c->entries, 1);
	free(e->value);
	free(e);
}

static void copy_value(sy_cache_answer *a, const char *v)
{
	size_t n = v ? strlen(v) : 0;
	if (n >= sizeof(a->value))
		n = sizeof(a->value) - 1;
	if (n)
		memcpy(a->value, v, n);
	a->value[n] = '\0';
}

static void fill_answer(const entry *e, sy_cache_answer *a)
{
	a->outcome = e->state == E_POSITIVE ? SY_CACHE_POSITIVE : SY_CACHE_NEGATIVE;
	copy_value(a, e->state == E_POSITIVE ? e->value : NULL);
}

/* ---- inboxes ---------------------------------------------------------------------------- */

static void inbox_unref(sy_cache_inbox *ib)
{
	if (atomic_fetch_sub(&ib->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&ib->mu);
	free(ib);
}

static void on_inbox(uv_async_t *h)
{
	sy_cache_inbox *ib = h->data;
	pthread_mutex_lock(&ib->mu);
	sy_cache_waiter *w = ib->head;
	ib->head = ib->tail = NULL;
	pthread_mutex_unlock(&ib->mu);
	while (w) {
		/* The callback may free the waiter. The handle's reference keeps
		 * the inbox alive throughout: it is dropped in the close callback,
		 * which runs on a later loop iteration. */
		sy_cache_waiter *next = w->next;
		w->next = NULL;
		w->cb(w);
		inbox_unref(ib);
		w = next;
	}
}

/* Hands an answered waiter to its loop (any thread). */
static void inbox_push(sy_cache_waiter *w)
{
	sy_cache_inbox *ib = w->inbox;
	w->next = NULL;
	pthread_mutex_lock(&ib->mu);
	if (ib->closed) {
		pthread_mutex_unlock(&ib->mu);
		w->answer.outcome = SY_CACHE_DROPPED;
		w->cb(w);
		inbox_unref(ib);
		return;
	}
	if (ib->tail)
		ib->tail->next = w;
	else
		ib->head = w;
	ib->tail = w;
	/* Sent under the mutex so that it cannot race with cache_inbox_close()
	 * closing the handle. uv_async_send() never blocks. */
	uv_async_send(&ib->async);
	pthread_mutex_unlock(&ib->mu);
}

sy_cache_inbox *cache_inbox_create(uv_loop_t *loop)
{
	sy_cache_inbox *ib = calloc(1, sizeof(*ib));
	if (!ib)
		return NULL;
	if (pthread_mutex_init(&ib->mu, NULL) != 0) {
		free(ib);
		return NULL;
	}
	if (uv_async_init(loop, &ib->async, on_inbox) != 0) {
		pthread_mutex_destroy(&ib->mu);
		free(ib);
		return NULL;
	}
	ib->async.data = ib;
	atomic_init(&ib->refs, 1);
	return ib;
}

static void on_inbox_closed(uv_handle_t *h)
{
	inbox_unref(h->data);
}

void cache_inbox_close(sy_cache_inbox *ib)
{
	pthread_mutex_lock(&ib->mu);
	ib->closed = true;
	sy_cache_waiter *w = ib->head;
	ib->head = ib->tail = NULL;
	pthread_mutex_unlock(&ib->mu);
	while (w) {
		sy_cache_waiter *next = w->next;
		w->next = NULL;
		w->answer.outcome = SY_CACHE_DROPPED;
		w->cb(w);
		inbox_unref(ib);
		w = next;
	}
	uv_close((uv_handle_t *)&ib->async, on_inbox_closed);
}

/* ---- the cache ---------------------------------------------------------------------------- */

sy_cache *cache_create(const sy_cache_opts *o)
{
	sy_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	/* Shards: the requested number (a power of two), but never so many
	 * that a shard would hold fewer than MIN_SHARD_ENTRIES: a small cache
	 * is then one or a few true LRU lists instead of many tiny ones. */
	size_t want = o->shards ? o->shards : DEFAULT_SHARDS;
	size_t n = 1;
	while (n < want && (uint64_t)n * 2 * MIN_SHARD_ENTRIES <= o->max_entries)
		n *= 2;
	c->nshards = n;
	c->shards = aligned_alloc(64, n * sizeof(shard));
	if (!c->shards) {
		free(c);
		return NULL;
	}
	memset(c->shards, 0, n * sizeof(shard));
	if (getrandom(&c->seed, sizeof(c->seed), 0) != sizeof(c->seed))
		c->seed = monotonic_ms(NULL) * 0x9e3779b97f4a7c15ull;
	c->positive_ttl_ms = o->positive_ttl_ms;
	c->negative_ttl_ms = o->negative_ttl_ms;
	c->keep = o->max_entries > 0;
	c->clock = o->clock ? o->clock : monotonic_ms;
	c->clock_arg = o->clock_arg;
	/* max_entries is a hard bound on the total: it is split exactly, the
	 * first (max_entries % n) shards keeping one entry more than the rest. */
	uint64_t per = o->max_entries / n, extra = o->max_entries % n;
	for (size_t i = 0; i < n; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_init(&s->mu, NULL);
		s->nbuckets = INITIAL_BUCKETS;
		s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
		s->cap = (size_t)(per + (i < extra ? 1 : 0));
		s->lru.lru_next = s->lru.lru_prev = &s->lru;
		if (!s->buckets) {
			c->nshards = i + 1;
			cache_destroy(c);
			return NULL;
		}
	}
	return c;
}

void cache_destroy(sy_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		for (size_t b = 0; s->buckets && b < s->nbuckets; b++) {
			entry *next;
			for (entry *e = s->buckets[b]; e; e = next) {
				next = e->chain;
				free(e->value);
				free(e);
			}
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->mu);
	}
	free(c->shards);
	free(c);
}

sy_cache_lookup_result cache_lookup(sy_cache *c, const char *key, sy_cache_waiter *w,
                                    sy_cache_fetch **fetch_r)
{
	uint64_t h = key_hash(c->seed, key);
	shard *s = shard_of(c, h);
	*fetch_r = NULL;
	pthread_mutex_lock(&s->mu);
	entry *e = find(s, h, key);
	if (e && e->state == E_PENDING) {
		w->next = e->waiters;
		e->waiters = w;
		atomic_fetch_add(&w->inbox->refs, 1);
		s->misses++;
		pthread_mutex_unlock(&s->mu);
		return SY_CACHE_WAIT;
	}
	if (e) {
		if (c->clock(c->clock_arg) < e->expires_ms) {
			fill_answer(e, &w->answer);
			if (s->lru.lru_next != e) {
				lru_unlink(e);
				lru_push_front(s, e);
			}
			s->hits++;
			pthread_mutex_unlock(&s->mu);
			return SY_CACHE_HIT;
		}
		/* Expired: the entry becomes pending again, in place. */
		lru_unlink(e);
		s->cached--;
		atomic_fetch_sub(&c->entries, 1);
		free(e->value);
		e->value = NULL;
		e->state = E_PENDING;
	} else {
		size_t len = strlen(key);
		e = calloc(1, sizeof(*e) + len + 1);
		if (!e) {
			/* Out of memory: fetch without coalescing or caching. The
			 * detached fetch is still a valid ticket. */
			s->misses++;
			pthread_mutex_unlock(&s->mu);
			return SY_CACHE_FETCH;
		}
		memcpy(e->key, key, len + 1);
		e->hash = h;
		e->state = E_PENDING;
		table_link(s, e);
	}
	s->misses++;
	pthread_mutex_unlock(&s->mu);
	*fetch_r = (sy_cache_fetch *)e;
	return SY_CACHE_FETCH;
}

void cache_complete(sy_cache *c, sy_cache_fetch *fetch, sy_cache_outcome outcome, const char *value,
                    uint64_t ttl_ms)
{
	entry *e = (entry *)fetch;
	if (!e)
		return; /* the out-of-memory fetch of cache_lookup() */
	sy_cache_answer a;
	a.outcome = outcome;
	copy_value(&a, value);
	bool store = c->keep && (outcome == SY_CACHE_POSITIVE || outcome == SY_CACHE_NEGATIVE);
	char *v = NULL;
	if (store && outcome == SY_CACHE_POSITIVE && !(v = strdup(value ? value : "")))
		store = false;
	if (ttl_ms == 0)
		ttl_ms = outcome == SY_CACHE_POSITIVE ? c->positive_ttl_ms : c->negative_ttl_ms;
	uint64_t cap = atomic_load_explicit(&c->ttl_cap_ms, memory_order_relaxed);
	if (cap && ttl_ms > cap)
		ttl_ms = cap;

	shard *s = shard_of(c, e->hash);
	pthread_mutex_lock(&s->mu);
	sy_cache_waiter *waiters = e->waiters;
	e->waiters = NULL;
	if (store && e->linked) {
		e->state = outcome == SY_CACHE_POSITIVE ? E_POSITIVE : E_NEGATIVE;
		e->value = v;
		v = NULL;
		e->expires_ms = c->clock(c->clock_arg) + ttl_ms;
		lru_push_front(s, e);
		s->cached++;
		atomic_fetch_add(&c->entries, 1);
		while (s->cached > s->cap && s->lru.lru_prev != e)
			drop_cached(c, s, s->lru.lru_prev);
		e = NULL;
	} else if (e->linked) {
		table_unlink(s, e);
	}
	pthread_mutex_unlock(&s->mu);
	free(v);
	free(e); /* NULL when it stayed in the table */

	while (waiters) {
		sy_cache_waiter *next = waiters->next;
		waiters->answer = a;
		inbox_push(waiters);
		waiters = next;
	}
}

bool cache_get(sy_cache *c, const char *key, sy_cache_answer *out)
{
	uint64_t h = key_hash(c->seed, key);
	shard *s = shard_of(c, h);
	bool found = false;
	pthread_mutex_lock(&s->mu);
	entry *e = find(s, h, key);
	if (e && e->state != E_PENDING && c->clock(c->clock_arg) < e->expires_ms) {
		fill_answer(e, out);
		if (s->lru.lru_next != e) {
			lru_unlink(e);
			lru_push_front(s, e);
		}
		s->hits++;
		found = true;
	}
	pthread_mutex_unlock(&s->mu);
	return found;
}

bool cache_peek(sy_cache *c, const char *key, sy_cache_answer *out)
{
	uint64_t h = key_hash(c->seed, key);
	shard *s = shard_of(c, h);
	bool found = false;
	pthread_mutex_lock(&s->mu);
	entry *e = find(s, h, key);
	if (e && e->state != E_PENDING && c->clock(c->clock_arg) < e->expires_ms) {
		fill_answer(e, out);
		found = true;
	}
	pthread_mutex_unlock(&s->mu);
	return found;
}

/* Drops one linked entry (caller holds the shard lock). */
static void drop_any(sy_cache *c, shard *s, entry *e)
{
	if (e->state == E_PENDING)
		table_unlink(s, e); /* detached: cache_complete() frees it */
	else
		drop_cached(c, s, e);
}

bool cache_invalidate(sy_cache *c, const char *key)
{
	uint64_t h = key_hash(c->seed, key);
	shard *s = shard_of(c, h);
	pthread_mutex_lock(&s->mu);
	entry *e = find(s, h, key);
	if (e)
		drop_any(c, s, e);
	pthread_mutex_unlock(&s->mu);
	return e != NULL;
}

void cache_invalidate_all(sy_cache *c)
{
	for (size_t i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_lock(&s->mu);
		for (size_t b = 0; b < s->nbuckets; b++) {
			entry *next;
			for (entry *e = s->buckets[b]; e; e = next) {
				next = e->chain;
				drop_any(c, s, e);
			}
		}
		pthread_mutex_unlock(&s->mu);
	}
}

void cache_cap_ttl(sy_cache *c, uint64_t cap_ms)
{
	atomic_store(&c->ttl_cap_ms, cap_ms);
	if (cap_ms == 0)
		return;
	uint64_t limit = c->clock(c->clock_arg) + cap_ms;
	for (size_t i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_lock(&s->mu);
		for (size_t b = 0; b < s->nbuckets; b++)
			for (entry *e = s->buckets[b]; e; e = e->chain)
				if (e->state != E_PENDING && e->expires_ms > limit)
					e->expires_ms = limit;
		pthread_mutex_unlock(&s->mu);
	}
}

void cache_stats(sy_cache *c, sy_cache_stats *out)
{
	out->hits = out->misses = 0;
	for (size_t i = 0; i < c->nshards; i++) {
		shard *s = &c->shards[i];
		pthread_mutex_lock(&s->mu);
		out->hits += s->hits;
		out->misses += s->misses;
		pthread_mutex_unlock(&s->mu);
	}
	out->entries = atomic_load(&c->entries);
}
