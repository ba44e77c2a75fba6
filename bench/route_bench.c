/*
 * route-bench: throughput of route_resolve().
 *
 *   route-bench [-t THREADS] [-s SECONDS] [-n KEYS] [-w WINDOW]
 *               [--redis URL] [--sql URL]
 *
 * 1. Cache hits: a file mapping of KEYS identifiers (half mapped, half not),
 *    the cache warmed, then every thread resolves identifiers in a tight
 *    loop on its own event loop and context. Reported for one thread (the
 *    per-core figure) and for THREADS threads.
 * 2. Cold lookups (with --redis / --sql): every identifier is new, so every
 *    resolve misses the cache and queries the store; WINDOW requests are
 *    kept in flight per thread. For --sql the bench creates the table
 *    `routes (identifier text primary key, destination text)` if missing.
 *
 * Nothing listens and nothing is dialed: the bench builds a configuration
 * and a snapshot in memory and drives the router directly.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "switchyard/config.h"
#include "switchyard/log.h"
#include "switchyard/route.h"
#include "switchyard/runtime.h"

typedef struct opts {
	unsigned threads;
	double seconds;
	unsigned keys;
	unsigned window;
	const char *redis_url;
	const char *sql_url;
} opts;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sy_snapshot *make_snapshot(const char *mapping, const char *dir)
{
	char *toml = NULL;
	if (asprintf(&toml,
	             "[server]\nthreads = 1\n"
	             "[routing]\ndefault_destination = \"legacy\"\n"
	             "[listener.imap]\nprotocol = \"imap\"\ntls = \"plain\"\n"
	             "bind = [\"127.0.0.1:1\"]\n"
	             "[capabilities.imap]\nallow_plain_auth_without_tls = true\n"
	             "[destination.legacy]\nhost = \"127.0.0.1\"\nallow_plaintext_auth = true\n"
	             "[destination.legacy.protocol.imap]\nport = 1\ntls = \"plain\"\n"
	             "[destination.new]\nhost = \"127.0.0.1\"\nallow_plaintext_auth = true\n"
	             "[destination.new.protocol.imap]\nport = 2\ntls = \"plain\"\n"
	             "%s",
	             mapping) < 0)
		abort();
	sy_config *cfg = NULL;
	sy_errors errs = {0};
	if (config_load_string(toml, strlen(toml), dir, &cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.len; i++)
			fprintf(stderr, "route-bench: config: %s\n", errs.msgs[i]);
		exit(1);
	}
	free(toml);
	sy_snapshot *s = calloc(1, sizeof(*s));
	s->dests = calloc(cfg->ndestinations, sizeof(*s->dests));
	if (!s || !s->dests)
		abort();
	atomic_init(&s->refs, 1);
	s->cfg = cfg;
	for (size_t i = 0; i < cfg->ndestinations; i++)
		s->dests[i].cfg = &cfg->destinations[i];
	return s;
}

/* ---- cache hits ----------------------------------------------------------------------- */

typedef struct hit_thread {
	pthread_t thread;
	sy_router *r;
	sy_snapshot *snap;
	char **keys;
	unsigned nkeys, offset;
	double seconds;
	uint64_t done, bad;
	double elapsed;
	pthread_barrier_t *start;
} hit_thread;

static void on_hit(void *arg, const sy_route_result *res)
{
	hit_thread *h = arg;
	if (res->status != SY_ROUTE_OK)
		h->bad++;
	h->done++;
}

static void *hit_main(void *arg)
{
	hit_thread *h = arg;
	uv_loop_t loop;
	uv_loop_init(&loop);
	const char *err = NULL;
	sy_route_ctx *ctx = router_ctx_create(h->r, &loop, 1, &err);
	if (!ctx) {
		fprintf(stderr, "route-bench: %s\n", err);
		exit(1);
	}
	pthread_barrier_wait(h->start);
	double t0 = now_s(), deadline = t0 + h->seconds;
	unsigned i = h->offset;
	for (;;) {
		for (int k = 0; k < 4096; k++) {
			if (route_resolve_ctx(ctx, h->snap, h->keys[i], 0, SY_PROTO_IMAP, on_hit,
			                      h))
				h->bad++; /* not answered synchronously: not a hit */
			if (++i == h->nkeys)
				i = 0;
		}
		double t = now_s();
		if (t >= deadline) {
			h->elapsed = t - t0;
			break;
		}
	}
	router_ctx_close(ctx);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return NULL;
}

static double run_hits(sy_router *r, sy_snapshot *snap, char **keys, unsigned nkeys,
                       unsigned threads, double seconds)
{
	hit_thread *h = calloc(threads, sizeof(*h));
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, threads);
	for (unsigned i = 0; i < threads; i++) {
		h[i] = (hit_thread){.r = r,
		                    .snap = snap,
		                    .keys = keys,
		                    .nkeys = nkeys,
		                    .offset = (nkeys / threads) * i,
		                    .seconds = seconds,
		                    .start = &start};
		pthread_create(&h[i].thread, NULL, hit_main, &h[i]);
	}
	double total = 0;
	uint64_t bad = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(h[i].thread, NULL);
		total += (double)h[i].done / h[i].elapsed;
		bad += h[i].bad;
	}
	pthread_barrier_destroy(&start);
	free(h);
	if (bad)
		fprintf(stderr, "route-bench: %llu resolves were not synchronous hits\n",
		        (unsigned long long)bad);
	return total;
}

/* ---- cold store lookups ------------------------------------------------------------------ */

typedef struct cold_thread {
	pthread_t thread;
	sy_router *r;
	sy_snapshot *snap;
	unsigned run, id, window;
	double seconds;
	uv_loop_t loop;
	uv_timer_t stop;
	sy_route_ctx *ctx;
	bool stopping;
	unsigned inflight;
	uint64_t next, done, tempfail;
	double t0, elapsed;
	pthread_barrier_t *start;
} cold_thread;

static void issue(cold_thread *c);

static void on_cold(void *arg, const sy_route_result *res)
{
	cold_thread *c = arg;
	c->inflight--;
	c->done++;
	if (res->status != SY_ROUTE_OK)
		c->tempfail++;
	if (!c->stopping) {
		issue(c);
		return;
	}
	if (c->inflight == 0) {
		c->elapsed = now_s() - c->t0;
		router_ctx_close(c->ctx);
	}
}

static void issue(cold_thread *c)
{
	char id[64];
	snprintf(id, sizeof(id), "cold-%u-%u-%llu@example.com", c->run, c->id,
	         (unsigned long long)c->next++);
	c->inflight++;
	route_resolve_ctx(c->ctx, c->snap, id, 0, SY_PROTO_IMAP, on_cold, c);
}

static void on_stop(uv_timer_t *t)
{
	cold_thread *c = t->data;
	c->stopping = true;
	uv_close((uv_handle_t *)t, NULL);
}

static void *cold_main(void *arg)
{
	cold_thread *c = arg;
	uv_loop_init(&c->loop);
	const char *err = NULL;
	c->ctx = router_ctx_create(c->r, &c->loop, 1, &err);
	if (!c->ctx) {
		fprintf(stderr, "route-bench: %s\n", err);
		exit(1);
	}
	/* Let the store connect before the clock starts. */
	uv_run(&c->loop, UV_RUN_NOWAIT);
	usleep(300000);
	uv_run(&c->loop, UV_RUN_NOWAIT);
	pthread_barrier_wait(c->start);
	uv_timer_init(&c->loop, &c->stop);
	c->stop.data = c;
	uv_timer_start(&c->stop, on_stop, (uint64_t)(c->seconds * 1000), 0);
	c->t0 = now_s();
	for (unsigned i = 0; i < c->window; i++)
		issue(c);
	uv_run(&c->loop, UV_RUN_DEFAULT);
	uv_loop_close(&c->loop);
	return NULL;
}

static void run_cold(const char *what, sy_router *r, sy_snapshot *snap, unsigned threads,
                     unsigned window, double seconds)
{
	static unsigned runs;
	cold_thread *c = calloc(threads, sizeof(*c));
	runs++;
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, threads);
	for (unsigned i = 0; i < threads; i++) {
		c[i].r = r;
		c[i].run = runs;
		c[i].snap = snap;
		c[i].id = i;
		c[i].window = window;
		c[i].seconds = seconds;
		c[i].start = &start;
		pthread_create(&c[i].thread, NULL, cold_main, &c[i]);
	}
	double rate = 0;
	uint64_t done = 0, fails = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(c[i].thread, NULL);
		rate += (double)c[i].done / c[i].elapsed;
		done += c[i].done;
		fails += c[i].tempfail;
	}
	printf("cold lookups, %-5s %u thread(s) x %u in flight: %10.0f lookups/s  (%llu done, "
	       "%llu tempfail)\n",
	       what, threads, window, rate, (unsigned long long)done, (unsigned long long)fails);
	pthread_barrier_destroy(&start);
	free(c);
}

static void bench_store(const opts *o, const char *what, const char *mapping)
{
	sy_snapshot *snap = make_snapshot(mapping, NULL);
	const char *err = NULL;
	sy_router *r = router_create(snap, o->threads, &err);
	if (!r) {
		fprintf(stderr, "route-bench: %s\n", err);
		exit(1);
	}
	run_cold(what, r, snap, 1, o->window, o->seconds);
	if (o->threads > 1)
		run_cold(what, r, snap, o->threads, o->window, o->seconds);
	router_unref(r);
	snapshot_unref(snap);
}

static void prepare_sql(const char *url)
{
	PGconn *pg = PQconnectdb(url);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "route-bench: %s", PQerrorMessage(pg));
		exit(1);
	}
	PGresult *res = PQexec(pg, "CREATE TABLE IF NOT EXISTS routes (identifier text PRIMARY "
	                           "KEY, destination text NOT NULL)");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fprintf(stderr, "route-bench: %s", PQerrorMessage(pg));
		exit(1);
	}
	PQclear(res);
	PQfinish(pg);
}

int main(int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	opts o = {
	    .threads = ncpu > 0 ? (unsigned)ncpu : 1, .seconds = 2, .keys = 100000, .window = 64};
	static const struct option longopts[] = {{"redis", required_argument, NULL, 'R'},
	                                         {"sql", required_argument, NULL, 'S'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	int ch;
	while ((ch = getopt_long(argc, argv, "t:s:n:w:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			o.threads = (unsigned)atoi(optarg);
			break;
		case 's':
			o.seconds = atof(optarg);
			break;
		case 'n':
			o.keys = (unsigned)atoi(optarg);
			break;
		case 'w':
			o.window = (unsigned)atoi(optarg);
			break;
		case 'R':
			o.redis_url = optarg;
			break;
		case 'S':
			o.sql_url = optarg;
			break;
		default:
			fprintf(stderr,
			        "usage: %s [-t THREADS] [-s SECONDS] [-n KEYS] [-w WINDOW] "
			        "[--redis URL] [--sql URL]\n",
			        argv[0]);
			return ch == 'h' ? 0 : 2;
		}
	}
	if (o.threads == 0 || o.keys == 0 || o.window == 0 || o.seconds <= 0) {
		fprintf(stderr, "route-bench: -t, -n, -w and -s must be positive\n");
		return 2;
	}
	log_set_level(SY_LOG_ERROR);

	/* 1. cache hits over a file mapping */
	char dir[] = "/tmp/route-bench.XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char path[64];
	snprintf(path, sizeof(path), "%s/map.tsv", dir);
	FILE *f = fopen(path, "w");
	char **keys = calloc(o.keys, sizeof(*keys));
	for (unsigned i = 0; i < o.keys; i++) {
		if (asprintf(&keys[i], "user%u@example.com", i) < 0)
			abort();
		if (i % 2 == 0)
			fprintf(f, "%s new\n", keys[i]);
	}
	fclose(f);
	char *mapping = NULL;
	if (asprintf(&mapping,
	             "[mapping]\nsource = \"file\"\ncache_max_entries = %u\n"
	             "[mapping.file]\npath = \"%s\"\n",
	             o.keys * 2, path) < 0)
		abort();
	sy_snapshot *snap = make_snapshot(mapping, dir);
	free(mapping);
	const char *err = NULL;
	sy_router *r = router_create(snap, o.threads, &err);
	if (!r) {
		fprintf(stderr, "route-bench: %s\n", err);
		return 1;
	}
	run_hits(r, snap, keys, o.keys, 1, 0.2); /* warm the cache */
	double one = run_hits(r, snap, keys, o.keys, 1, o.seconds);
	printf("cache hits,   1 thread:  %12.0f resolves/s\n", one);
	if (o.threads > 1) {
		double all = run_hits(r, snap, keys, o.keys, o.threads, o.seconds);
		printf("cache hits, %3u threads: %12.0f resolves/s  (%.0f per thread)\n", o.threads,
		       all, all / o.threads);
	}
	sy_route_stats st;
	route_stats(r, &st);
	printf("cache: %llu entries, hit rate %.2f%%\n", (unsigned long long)st.entries,
	       st.hit_rate_pct);
	router_unref(r);
	snapshot_unref(snap);
	unlink(path);
	rmdir(dir);
	for (unsigned i = 0; i < o.keys; i++)
		free(keys[i]);
	free(keys);

	/* 2. cold lookups against the stores */
	if (o.redis_url) {
		char *m = NULL;
		if (asprintf(&m,
		             "[mapping]\nsource = \"redis\"\ncache_max_entries = 100000\n"
		             "lookup_timeout = \"5s\"\n[mapping.redis]\nurl = \"%s\"\n"
		             "key_prefix = \"route-bench:\"\npool_size = %u\n",
		             o.redis_url, o.threads) < 0)
			abort();
		bench_store(&o, "redis", m);
		free(m);
	}
	if (o.sql_url) {
		prepare_sql(o.sql_url);
		char *m = NULL;
		if (asprintf(
		        &m,
		        "[mapping]\nsource = \"sql\"\ncache_max_entries = 100000\n"
		        "lookup_timeout = \"5s\"\n[mapping.sql]\nurl = \"%s\"\npool_size = %u\n",
		        o.sql_url, o.threads) < 0)
			abort();
		bench_store(&o, "sql", m);
		free(m);
	}
	return 0;
}
