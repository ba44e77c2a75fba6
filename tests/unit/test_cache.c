/* The mapping cache: TTLs (with an injected clock), the size bound and LRU
 * eviction, coalescing of concurrent lookups, delivery on the waiter's own
 * loop, invalidation. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/cache.h"

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static sy_cache *make(uint64_t max, unsigned shards)
{
	sy_cache_opts o = {.max_entries = max,
	                   .positive_ttl_ms = 1000,
	                   .negative_ttl_ms = 100,
	                   .shards = shards,
	                   .clock = fake_clock};
	fake_now = 5000;
	sy_cache *c = cache_create(&o);
	assert_non_null(c);
	return c;
}

/* A waiter that records its answer and the thread it ran on. */
typedef struct rec {
	sy_cache_waiter w;
	int calls;
	sy_cache_answer got;
	pthread_t thread;
} rec;

static void rec_cb(sy_cache_waiter *w)
{
	rec *r = (rec *)w;
	r->calls++;
	r->got = w->answer;
	r->thread = pthread_self();
}

static void rec_init(rec *r, sy_cache_inbox *ib)
{
	memset(r, 0, sizeof(*r));
	r->w.inbox = ib;
	r->w.cb = rec_cb;
}

/* Looks up a key that must be cached and returns its answer. */
static sy_cache_answer hit(sy_cache *c, const char *key)
{
	rec r;
	rec_init(&r, NULL);
	sy_cache_fetch *f = (sy_cache_fetch *)1;
	assert_int_equal(cache_lookup(c, key, &r.w, &f), SY_CACHE_HIT);
	assert_null(f);
	return r.w.answer;
}

/* Looks up a key that must miss, and completes the fetch. */
static void fill(sy_cache *c, const char *key, sy_cache_outcome o, const char *value, uint64_t ttl)
{
	rec r;
	rec_init(&r, NULL);
	sy_cache_fetch *f = NULL;
	assert_int_equal(cache_lookup(c, key, &r.w, &f), SY_CACHE_FETCH);
	assert_non_null(f);
	cache_complete(c, f, o, value, ttl);
}

static void ttl_expiry(void **state)
{
	(void)state;
	sy_cache *c = make(100, 0);
	fill(c, "alice@example.com", SY_CACHE_POSITIVE, "new", 0);
	fill(c, "bob@example.com", SY_CACHE_NEGATIVE, NULL, 0);
	fill(c, "carol@example.com", SY_CACHE_NEGATIVE, NULL, 30);

	sy_cache_answer a = hit(c, "alice@example.com");
	assert_int_equal(a.outcome, SY_CACHE_POSITIVE);
	assert_string_equal(a.value, "new");
	a = hit(c, "bob@example.com");
	assert_int_equal(a.outcome, SY_CACHE_NEGATIVE);
	assert_string_equal(a.value, "");

	/* The caller-given TTL (30 ms) is shorter than the negative one. */
	fake_now += 29;
	hit(c, "carol@example.com");
	fake_now += 1;
	fill(c, "carol@example.com", SY_CACHE_NEGATIVE, NULL, 0);

	/* Negative entries expire after negative_ttl (100 ms)... */
	fake_now = 5099;
	hit(c, "bob@example.com");
	fake_now = 5100;
	sy_cache_answer peek;
	assert_false(cache_peek(c, "bob@example.com", &peek));
	fill(c, "bob@example.com", SY_CACHE_POSITIVE, "legacy", 0);
	assert_string_equal(hit(c, "bob@example.com").value, "legacy");

	/* ...positive ones after positive_ttl (1000 ms). */
	fake_now = 5999;
	assert_true(cache_peek(c, "alice@example.com", &peek));
	assert_string_equal(peek.value, "new");
	fake_now = 6000;
	fill(c, "alice@example.com", SY_CACHE_POSITIVE, "newer", 0);
	assert_string_equal(hit(c, "alice@example.com").value, "newer");

	sy_cache_stats st;
	cache_stats(c, &st);
	assert_int_equal(st.entries, 3);
	cache_destroy(c);
}

static void get_counts_only_hits(void **state)
{
	(void)state;
	sy_cache *c = make(100, 0);
	sy_cache_answer a;
	sy_cache_stats st;
	assert_false(cache_get(c, "alice", &a));
	fill(c, "alice", SY_CACHE_POSITIVE, "new", 0);
	assert_true(cache_get(c, "alice", &a));
	assert_int_equal(a.outcome, SY_CACHE_POSITIVE);
	assert_string_equal(a.value, "new");
	fake_now += 1000;
	assert_false(cache_get(c, "alice", &a));
	cache_stats(c, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 1); /* the fill */
	cache_destroy(c);
}

static void errors_are_not_cached(void **state)
{
	(void)state;
	sy_cache *c = make(100, 0);
	fill(c, "alice@example.com", SY_CACHE_ERROR, "timeout", 0);
	fill(c, "alice@example.com", SY_CACHE_ERROR, NULL, 0);
	sy_cache_stats st;
	cache_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.hits, 0);
	cache_destroy(c);
}

static void eviction_bound_lru(void **state)
{
	(void)state;
	sy_cache *c = make(10, 1);
	char key[32];
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "user%d", i);
		fill(c, key, SY_CACHE_POSITIVE, "d", 0);
	}
	/* user0 is used again, so user1 is now the least recently used. */
	hit(c, "user0");
	fill(c, "user10", SY_CACHE_POSITIVE, "d", 0);
	sy_cache_stats st;
	cache_stats(c, &st);
	assert_int_equal(st.entries, 10);
	sy_cache_answer a;
	assert_true(cache_peek(c, "user0", &a));
	assert_false(cache_peek(c, "user1", &a));
	assert_true(cache_peek(c, "user2", &a));
	assert_true(cache_peek(c, "user10", &a));
	for (int i = 11; i < 1000; i++) {
		snprintf(key, sizeof(key), "user%d", i);
		fill(c, key, SY_CACHE_NEGATIVE, NULL, 0);
	}
	cache_stats(c, &st);
	assert_int_equal(st.entries, 10);
	assert_true(cache_peek(c, "user999", &a));
	assert_false(cache_peek(c, "user989", &a));
	cache_destroy(c);

	/* Sharded: the bound is exact, and the shards share it so that almost
	 * all of it is used (each shard fills up under a uniform load). */
	c = make(1000, 64);
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "u%d@example.com", i);
		fill(c, key, SY_CACHE_POSITIVE, "d", 0);
	}
	cache_stats(c, &st);
	assert_true(st.entries <= 1000);
	assert_true(st.entries >= 990);
	cache_destroy(c);

	/* Small bounds are exact whatever the shard count asked for: a cap of
	 * 10 holds 10 entries, not one per shard. */
	for (uint64_t cap = 1; cap <= 130; cap += 43) {
		c = make(cap, 0);
		for (int i = 0; i < 5000; i++) {
			snprintf(key, sizeof(key), "s%d@example.com", i);
			fill(c, key, SY_CACHE_POSITIVE, "d", 0);
		}
		cache_stats(c, &st);
		assert_int_equal(st.entries, cap);
		cache_destroy(c);
	}
	c = make(10, 0);
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "t%d@example.com", i);
		fill(c, key, SY_CACHE_NEGATIVE, NULL, 0);
	}
	cache_stats(c, &st);
	assert_int_equal(st.entries, 10);
	cache_destroy(c);

	/* max_entries = 0 keeps nothing. */
	c = make(0, 0);
	fill(c, "alice", SY_CACHE_POSITIVE, "d", 0);
	fill(c, "alice", SY_CACHE_POSITIVE, "d", 0);
	cache_stats(c, &st);
	assert_int_equal(st.entries, 0);
	cache_destroy(c);
}

static void coalescing(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	sy_cache_inbox *ib = cache_inbox_create(&loop);
	assert_non_null(ib);
	sy_cache *c = make(100, 0);

	rec first, waiters[3];
	rec_init(&first, ib);
	sy_cache_fetch *f = NULL, *f2 = NULL;
	assert_int_equal(cache_lookup(c, "alice", &first.w, &f), SY_CACHE_FETCH);
	assert_non_null(f);
	for (int i = 0; i < 3; i++) {
		rec_init(&waiters[i], ib);
		assert_int_equal(cache_lookup(c, "alice", &waiters[i].w, &f2), SY_CACHE_WAIT);
		assert_null(f2);
	}
	/* Another key is independent. */
	rec other;
	rec_init(&other, ib);
	assert_int_equal(cache_lookup(c, "bob", &other.w, &f2), SY_CACHE_FETCH);

	sy_cache_stats st;
	cache_stats(c, &st);
	assert_int_equal(st.misses, 5);
	assert_int_equal(st.entries, 0); /* pending entries are not counted */

	cache_complete(c, f, SY_CACHE_POSITIVE, "new", 0);
	/* Answers reach the waiters only on their loop. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(waiters[i].calls, 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(waiters[i].calls, 1);
		assert_int_equal(waiters[i].got.outcome, SY_CACHE_POSITIVE);
		assert_string_equal(waiters[i].got.value, "new");
	}
	assert_int_equal(first.calls, 0); /* the fetcher is not a waiter */
	assert_string_equal(hit(c, "alice").value, "new");

	/* An error reaches the waiters and leaves nothing cached. */
	rec w;
	rec_init(&w, ib);
	assert_int_equal(cache_lookup(c, "bob", &w.w, &f), SY_CACHE_WAIT);
	cache_complete(c, f2, SY_CACHE_ERROR, "store down", 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.got.outcome, SY_CACHE_ERROR);
	assert_string_equal(w.got.value, "store down");
	assert_int_equal(cache_lookup(c, "bob", &w.w, &f), SY_CACHE_FETCH);
	cache_complete(c, f, SY_CACHE_NEGATIVE, NULL, 0);

	cache_stats(c, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.entries, 2);

	cache_inbox_close(ib);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	cache_destroy(c);
}

/* A second loop on its own thread: its waiter runs there, not on the
 * completing thread. */
typedef struct other_loop {
	uv_loop_t loop;
	uv_async_t stop;
	sy_cache_inbox *ib;
	pthread_t thread;
} other_loop;

static void on_stop(uv_async_t *h)
{
	other_loop *o = h->data;
	cache_inbox_close(o->ib);
	uv_close((uv_handle_t *)h, NULL);
}

static void *run_other(void *arg)
{
	other_loop *o = arg;
	uv_run(&o->loop, UV_RUN_DEFAULT);
	return NULL;
}

static void delivery_on_waiters_thread(void **state)
{
	(void)state;
	other_loop o;
	uv_loop_init(&o.loop);
	uv_async_init(&o.loop, &o.stop, on_stop);
	o.stop.data = &o;
	o.ib = cache_inbox_create(&o.loop);
	sy_cache *c = make(100, 0);

	rec fetcher, w;
	rec_init(&fetcher, NULL);
	rec_init(&w, o.ib);
	sy_cache_fetch *f = NULL, *f2 = NULL;
	assert_int_equal(cache_lookup(c, "alice", &fetcher.w, &f), SY_CACHE_FETCH);
	assert_int_equal(cache_lookup(c, "alice", &w.w, &f2), SY_CACHE_WAIT);
	pthread_create(&o.thread, NULL, run_other, &o);
	cache_complete(c, f, SY_CACHE_POSITIVE, "new", 0);
	uv_async_send(&o.stop);
	pthread_join(o.thread, NULL);
	assert_int_equal(w.calls, 1);
	assert_string_equal(w.got.value, "new");
	assert_true(pthread_equal(w.thread, o.thread));
	assert_int_equal(uv_loop_close(&o.loop), 0);
	cache_destroy(c);
}

static void closed_inbox_drops(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	sy_cache_inbox *ib = cache_inbox_create(&loop);
	sy_cache *c = make(100, 0);
	rec fetcher, w;
	rec_init(&fetcher, NULL);
	rec_init(&w, ib);
	sy_cache_fetch *f = NULL, *f2 = NULL;
	assert_int_equal(cache_lookup(c, "alice", &fetcher.w, &f), SY_CACHE_FETCH);
	assert_int_equal(cache_lookup(c, "alice", &w.w, &f2), SY_CACHE_WAIT);
	cache_inbox_close(ib);
	uv_run(&loop, UV_RUN_DEFAULT); /* the handle closes; the waiter keeps the inbox */
	cache_complete(c, f, SY_CACHE_POSITIVE, "new", 0);
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.got.outcome, SY_CACHE_DROPPED);
	assert_int_equal(uv_loop_close(&loop), 0);
	cache_destroy(c);
}

static void invalidate(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_loop_init(&loop);
	sy_cache_inbox *ib = cache_inbox_create(&loop);
	sy_cache *c = make(100, 0);
	sy_cache_answer a;
	sy_cache_stats st;

	fill(c, "alice", SY_CACHE_POSITIVE, "new", 0);
	fill(c, "bob", SY_CACHE_NEGATIVE, NULL, 0);
	assert_true(cache_invalidate(c, "alice"));
	assert_false(cache_invalidate(c, "alice"));
	assert_false(cache_invalidate(c, "nobody"));
	assert_false(cache_peek(c, "alice", &a));
	assert_true(cache_peek(c, "bob", &a));
	cache_stats(c, &st);
	assert_int_equal(st.entries, 1);

	/* Invalidated while pending: the waiters get the answer, the cache
	 * does not keep it, and a new lookup fetches anew at once. */
	rec fetcher, w, later;
	rec_init(&fetcher, ib);
	rec_init(&w, ib);
	rec_init(&later, ib);
	sy_cache_fetch *f = NULL, *f2 = NULL;
	assert_int_equal(cache_lookup(c, "alice", &fetcher.w, &f), SY_CACHE_FETCH);
	assert_int_equal(cache_lookup(c, "alice", &w.w, &f2), SY_CACHE_WAIT);
	assert_true(cache_invalidate(c, "alice"));
	assert_int_equal(cache_lookup(c, "alice", &later.w, &f2), SY_CACHE_FETCH);
	cache_complete(c, f, SY_CACHE_POSITIVE, "stale", 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(w.calls, 1);
	assert_string_equal(w.got.value, "stale");
	assert_false(cache_peek(c, "alice", &a));
	cache_complete(c, f2, SY_CACHE_POSITIVE, "fresh", 0);
	assert_string_equal(hit(c, "alice").value, "fresh");

	/* invalidate_all: cached and pending alike. */
	rec_init(&w, ib);
	assert_int_equal(cache_lookup(c, "carol", &fetcher.w, &f), SY_CACHE_FETCH);
	cache_invalidate_all(c);
	cache_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_false(cache_peek(c, "bob", &a));
	cache_complete(c, f, SY_CACHE_POSITIVE, "x", 0);
	assert_false(cache_peek(c, "carol", &a));

	cache_inbox_close(ib);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	cache_destroy(c);
}

/* Threads with their own loops hammering a few shared keys: each lookup
 * hits, fetches (and completes at once) or waits on its own loop for
 * another thread's fetch; every wait is answered with the right value. */
typedef struct hammer {
	sy_cache *c;
	int id;
	long waits, bad;
} hammer;

#define HAMMER_THREADS 4
#define HAMMER_ROUNDS  20000

static void *hammer_main(void *arg)
{
	hammer *h = arg;
	uv_loop_t loop;
	uv_loop_init(&loop);
	sy_cache_inbox *ib = cache_inbox_create(&loop);
	char key[16];
	for (int i = 0; i < HAMMER_ROUNDS; i++) {
		rec r;
		rec_init(&r, ib);
		snprintf(key, sizeof(key), "k%d", (i * 7 + h->id) % 50);
		sy_cache_fetch *f = NULL;
		switch (cache_lookup(h->c, key, &r.w, &f)) {
		case SY_CACHE_HIT:
			h->bad += strcmp(r.w.answer.value, key) != 0;
			break;
		case SY_CACHE_FETCH:
			cache_complete(h->c, f, SY_CACHE_POSITIVE, key, 0);
			break;
		case SY_CACHE_WAIT:
			h->waits++;
			while (r.calls == 0)
				uv_run(&loop, UV_RUN_ONCE);
			h->bad += r.calls != 1 || strcmp(r.got.value, key) != 0;
			break;
		}
		if (i % 100 == 0)
			cache_invalidate(h->c, key);
	}
	cache_inbox_close(ib);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return NULL;
}

static void concurrent(void **state)
{
	(void)state;
	sy_cache_opts o = {.max_entries = 40, .positive_ttl_ms = 60000, .negative_ttl_ms = 1000};
	sy_cache *c = cache_create(&o);
	hammer h[HAMMER_THREADS];
	pthread_t t[HAMMER_THREADS];
	for (int i = 0; i < HAMMER_THREADS; i++) {
		h[i] = (hammer){.c = c, .id = i};
		pthread_create(&t[i], NULL, hammer_main, &h[i]);
	}
	for (int i = 0; i < HAMMER_THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(h[i].bad, 0);
	}
	sy_cache_stats st;
	cache_stats(c, &st);
	assert_int_equal(st.hits + st.misses, HAMMER_THREADS * HAMMER_ROUNDS);
	assert_true(st.entries <= 40);
	cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ttl_expiry),
	    cmocka_unit_test(get_counts_only_hits),
	    cmocka_unit_test(errors_are_not_cached),
	    cmocka_unit_test(eviction_bound_lru),
	    cmocka_unit_test(coalescing),
	    cmocka_unit_test(delivery_on_waiters_thread),
	    cmocka_unit_test(closed_inbox_drops),
	    cmocka_unit_test(invalidate),
	    cmocka_unit_test(concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
