/*
 * The metrics registry and its Prometheus text exposition (format 0.0.4).
 *
 * Layout: one `block` per worker thread plus one for the main thread, each
 * allocated on its own cache lines. Only the owning thread writes a block
 * (relaxed load + store: a plain add, see metrics.h); the scrape, on the main
 * thread, sums all blocks. Histograms keep per-bucket (non-cumulative) counts
 * and a sum in nanoseconds; the exposition accumulates them.
 */
#include "switchyard/metrics.h"

#include <math.h>
#include <openssl/opensslv.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#ifndef SWITCHYARD_VERSION
#define SWITCHYARD_VERSION "0.0.0"
#endif

typedef _Atomic uint64_t counter;

#define MAX_BUCKETS 16

typedef struct hist {
	counter buckets[MAX_BUCKETS]; /* observations <= bound[i] and > bound[i-1] */
	counter count;
	counter sum_ns;
} hist;

/* Upper bounds in seconds; +Inf is implicit (count minus the buckets). */
static const double connect_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,     10};
static const double store_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,    0.25,  0.5,    1,     2.5,  5};
static const double duration_bounds[] = {1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 86400};

#define NBOUNDS(a) (sizeof(a) / sizeof((a)[0]))

typedef struct block {
	counter accepted[SY_METRICS_MAX_LISTENERS];
	counter rejected[SY_METRICS_MAX_LISTENERS][SY_REJECT_REASON_COUNT];
	counter logins[SY_PROTO_COUNT][SY_MECH_UNKNOWN + 1][SY_LOGIN_RESULT_COUNT];
	hist connect[SY_PROTO_COUNT];
	counter connect_failures[SY_CONNFAIL_COUNT];
	hist store;
	counter store_errors;
	counter bytes[SY_PROTO_COUNT][2]; /* [0] client -> backend, [1] backend -> client */
	hist duration[SY_PROTO_COUNT];
	counter http_requests[SY_METRICS_MAX_LISTENERS][5]; /* status class 1xx..5xx */
	counter http_upgrades[SY_METRICS_MAX_LISTENERS];
} block;

static struct {
	unsigned nblocks; /* workers + 1; 0 until metrics_init */
	block **blocks;
	/* Main-thread-only state. */
	uint64_t reloads[2]; /* [0] error, [1] success */
	double last_reload_success;
	double start_time;
	uint64_t admin_auth_failures;
} M;

static const char *const result_names[] = {"ok", "failed", "tempfail"};
static const char *const reject_names[] = {"max_connections", "untrusted_proxy",
                                           "invalid_proxy_header"};
static const char *const connfail_names[] = {"refused", "timeout", "tls",  "dns",
                                             "loop",    "down",    "other"};

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int metrics_init(unsigned nworkers)
{
	if (M.blocks)
		return 0;
	unsigned n = nworkers + 1;
	block **b = calloc(n, sizeof(*b));
	if (!b)
		return -1;
	/* Round the size up so every block starts on its own cache line. */
	size_t size = (sizeof(block) + 63) & ~(size_t)63;
	for (unsigned i = 0; i < n; i++) {
		b[i] = aligned_alloc(64, size);
		if (!b[i]) {
			for (unsigned j = 0; j < i; j++)
				free(b[j]);
			free(b);
			return -1;
		}
		memset(b[i], 0, size);
	}
	M.blocks = b;
	M.nblocks = n;
	M.start_time = wall_now();
	return 0;
}

void metrics_shutdown(void)
{
	for (unsigned i = 0; i < M.nblocks; i++)
		free(M.blocks[i]);
	free(M.blocks);
	memset(&M, 0, sizeof(M));
}

/* ---- recording ------------------------------------------------------------------------ */

/* The calling thread's slot: set by metrics_thread_attach (-1: the main
 * thread's block). */
static _Thread_local int thread_slot = -1;

void metrics_thread_attach(int worker_index)
{
	thread_slot = worker_index;
}

static block *blk(void)
{
	if (!M.blocks)
		return NULL;
	unsigned main_index = M.nblocks - 1;
	if (thread_slot < 0 || (unsigned)thread_slot >= main_index)
		return M.blocks[main_index];
	return M.blocks[thread_slot];
}

/* Single-writer increment: see the file comment. */
static inline void add(counter *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static inline uint64_t get(counter *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static void observe(hist *h, const double *bounds, size_t nbounds, double seconds)
{
	if (!(seconds >= 0)) /* also catches NaN */
		seconds = 0;
	size_t i = 0;
	while (i < nbounds && seconds > bounds[i])
		i++;
	if (i < nbounds)
		add(&h->buckets[i], 1);
	add(&h->count, 1);
	double ns = seconds * 1e9;
	add(&h->sum_ns, ns < 1.8e19 ? (uint64_t)ns : UINT64_MAX / 2);
}

void metrics_conn_accepted(size_t listener)
{
	block *b = blk();
	if (b && listener < SY_METRICS_MAX_LISTENERS)
		add(&b->accepted[listener], 1);
}

void metrics_http_request(size_t listener, int status)
{
	block *b = blk();
	int k = status / 100 - 1;
	if (b && listener < SY_METRICS_MAX_LISTENERS && k >= 0 && k < 5)
		add(&b->http_requests[listener][k], 1);
}

void metrics_http_upgrade(size_t listener)
{
	block *b = blk();
	if (b && listener < SY_METRICS_MAX_LISTENERS)
		add(&b->http_upgrades[listener], 1);
}

void metrics_conn_rejected(size_t listener, sy_reject_reason why)
{
	block *b = blk();
	if (b && listener < SY_METRICS_MAX_LISTENERS && why < SY_REJECT_REASON_COUNT)
		add(&b->rejected[listener][why], 1);
}

void metrics_login(sy_proto p, sy_mech mech, sy_login_result r)
{
	block *b = blk();
	if (!b || p >= SY_PROTO_COUNT || r >= SY_LOGIN_RESULT_COUNT)
		return;
	if (mech > SY_MECH_UNKNOWN)
		mech = SY_MECH_UNKNOWN;
	add(&b->logins[p][mech][r], 1);
}

void metrics_backend_connect(sy_proto p, double seconds)
{
	block *b = blk();
	if (b && p < SY_PROTO_COUNT)
		observe(&b->connect[p], connect_bounds, NBOUNDS(connect_bounds), seconds);
}

void metrics_backend_failure(sy_connect_failure why)
{
	block *b = blk();
	if (b && why < SY_CONNFAIL_COUNT)
		add(&b->connect_failures[why], 1);
}

void metrics_store_lookup(double seconds, bool ok)
{
	block *b = blk();
	if (!b)
		return;
	observe(&b->store, store_bounds, NBOUNDS(store_bounds), seconds);
	if (!ok)
		add(&b->store_errors, 1);
}

void metrics_bridged(sy_proto p, bool from_client, size_t n)
{
	block *b = blk();
	if (b && p < SY_PROTO_COUNT)
		add(&b->bytes[p][from_client ? 0 : 1], n);
}

void metrics_session_closed(sy_proto p, double seconds)
{
	block *b = blk();
	if (b && p < SY_PROTO_COUNT)
		observe(&b->duration[p], duration_bounds, NBOUNDS(duration_bounds), seconds);
}

void metrics_config_reload(bool ok)
{
	M.reloads[ok ? 1 : 0]++;
	if (ok)
		M.last_reload_success = wall_now();
}

void metrics_admin_auth_failure(void)
{
	M.admin_auth_failures++;
}

/* ---- exposition -------------------------------------------------------------------------- */

typedef struct out {
	char *buf;
	size_t len, cap;
	bool oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out *o, const char *fmt, ...)
{
	if (o->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->oom = true;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap * 2 + (size_t)n + 1;
		char *nb = realloc(o->buf, cap);
		if (!nb) {
			o->oom = true;
			return;
		}
		o->buf = nb;
		o->cap = cap;
	}
}

/* A label value, escaped as the format requires (backslash, quote, newline). */
static void put_label(out *o, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\')
			put(o, "\\\\");
		else if (*p == '"')
			put(o, "\\\"");
		else if (*p == '\n')
			put(o, "\\n");
		else
			put(o, "%c", *p);
	}
}

static void family(out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP switchyard_%s %s\n# TYPE switchyard_%s %s\n", name, help, name, type);
}

/* A double as Prometheus reads it (integers without a fraction). */
static void put_double(out *o, double v)
{
	if (isinf(v))
		put(o, v > 0 ? "+Inf" : "-Inf");
	else if (v == (double)(int64_t)v && fabs(v) < 1e15)
		put(o, "%lld", (long long)v);
	else
		put(o, "%.9g", v);
}

typedef struct hist_sum {
	uint64_t buckets[MAX_BUCKETS];
	uint64_t count, sum_ns;
} hist_sum;

static void sum_hist(hist_sum *s, hist *(*pick)(block *, size_t), size_t arg)
{
	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < M.nblocks; i++) {
		hist *h = pick(M.blocks[i], arg);
		for (size_t k = 0; k < MAX_BUCKETS; k++)
			s->buckets[k] += get(&h->buckets[k]);
		s->count += get(&h->count);
		s->sum_ns += get(&h->sum_ns);
	}
}

/* One histogram series; `labels` is "" or `key="value",` pairs ending with
 * a comma, placed before `le`. */
static void put_hist(out *o, const char *name, const char *labels, const hist_sum *s,
                     const double *bounds, size_t nbounds)
{
	uint64_t cum = 0;
	for (size_t i = 0; i < nbounds; i++) {
		cum += s->buckets[i];
		put(o, "switchyard_%s_bucket{%sle=\"", name, labels);
		put_double(o, bounds[i]);
		put(o, "\"} %llu\n", (unsigned long long)cum);
	}
	/* The +Inf bucket is the count, so it can never read below the last
	 * finite bucket even if a scrape races an observation. */
	uint64_t count = s->count > cum ? s->count : cum;
	put(o, "switchyard_%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels,
	    (unsigned long long)count);
	size_t ll = strlen(labels);
	char trimmed[256];
	snprintf(trimmed, sizeof(trimmed), "%.*s", ll > 0 ? (int)ll - 1 : 0, labels);
	put(o, "switchyard_%s_sum%s%s%s ", name, ll ? "{" : "", trimmed, ll ? "}" : "");
	put_double(o, (double)s->sum_ns / 1e9);
	put(o, "\nswitchyard_%s_count%s%s%s %llu\n", name, ll ? "{" : "", trimmed, ll ? "}" : "",
	    (unsigned long long)count);
}

static hist *pick_connect(block *b, size_t p)
{
	return &b->connect[p];
}

static hist *pick_store(block *b, size_t p)
{
	(void)p;
	return &b->store;
}

static hist *pick_duration(block *b, size_t p)
{
	return &b->duration[p];
}

static uint64_t sum_counter(size_t offset)
{
	uint64_t t = 0;
	for (unsigned i = 0; i < M.nblocks; i++)
		t += get((counter *)((char *)M.blocks[i] + offset));
	return t;
}

#define SUM(field) sum_counter(offsetof(block, field))

char *metrics_render(const sy_metrics_view *v, size_t *len)
{
	out o = {0};
	o.cap = 16384;
	o.buf = malloc(o.cap);
	if (!o.buf)
		return NULL;
	o.buf[0] = '\0';
	if (!M.blocks) {
		/* Nothing recorded yet: only the build info. */
		metrics_init((unsigned)v->nworkers);
	}
	/* Per-protocol series are always emitted for the protocols some
	 * listener serves (at 0), so dashboards see them from the first
	 * scrape; other protocols appear once they have data. */
	const bool *used = v->protocol_in_use;

	family(&o, "build_info", "gauge",
	       "Build information: version and the OpenSSL and libuv versions in use.");
	put(&o, "switchyard_build_info{version=\"");
	put_label(&o, SWITCHYARD_VERSION);
	put(&o, "\",openssl=\"");
	put_label(&o, OPENSSL_VERSION_TEXT);
	put(&o, "\",libuv=\"");
	put_label(&o, uv_version_string());
	put(&o, "\"} 1\n");

	family(&o, "start_time_seconds", "gauge", "Process start time, seconds since the epoch.");
	put(&o, "switchyard_start_time_seconds ");
	put_double(&o, floor(M.start_time));
	put(&o, "\n");
	family(&o, "workers", "gauge", "Event-loop worker threads.");
	put(&o, "switchyard_workers %zu\n", v->nworkers);
	family(&o, "draining", "gauge", "1 while shutting down (readiness fails), else 0.");
	put(&o, "switchyard_draining %d\n", v->draining ? 1 : 0);

	/* ---- connections, per listener ---- */
	family(&o, "connections_accepted_total", "counter", "Client connections accepted.");
	for (size_t l = 0; l < v->nlisteners && l < SY_METRICS_MAX_LISTENERS; l++) {
		put(&o, "switchyard_connections_accepted_total{listener=\"");
		put_label(&o, v->listeners[l].name);
		put(&o, "\",protocol=\"%s\"} %llu\n", sy_proto_name(v->listeners[l].protocol),
		    (unsigned long long)SUM(accepted[l]));
	}
	family(
	    &o, "http_requests_total", "counter",
	    "HTTP requests answered, by listener and status class (relayed or the proxy's own).");
	for (size_t l = 0; l < v->nlisteners && l < SY_METRICS_MAX_LISTENERS; l++) {
		if (v->listeners[l].protocol != SY_PROTO_HTTP)
			continue;
		for (int k = 0; k < 5; k++) {
			put(&o, "switchyard_http_requests_total{listener=\"");
			put_label(&o, v->listeners[l].name);
			put(&o, "\",code=\"%dxx\"} %llu\n", k + 1,
			    (unsigned long long)SUM(http_requests[l][k]));
		}
	}
	family(&o, "http_upgrades_total", "counter",
	       "HTTP connections upgraded (101, e.g. WebSocket) and bridged, by listener.");
	for (size_t l = 0; l < v->nlisteners && l < SY_METRICS_MAX_LISTENERS; l++) {
		if (v->listeners[l].protocol != SY_PROTO_HTTP)
			continue;
		put(&o, "switchyard_http_upgrades_total{listener=\"");
		put_label(&o, v->listeners[l].name);
		put(&o, "\"} %llu\n", (unsigned long long)SUM(http_upgrades[l]));
	}
	family(&o, "connections_rejected_total", "counter",
	       "Client connections closed right after accept, by reason.");
	for (size_t l = 0; l < v->nlisteners && l < SY_METRICS_MAX_LISTENERS; l++)
		for (int r = 0; r < SY_REJECT_REASON_COUNT; r++) {
			put(&o, "switchyard_connections_rejected_total{listener=\"");
			put_label(&o, v->listeners[l].name);
			put(&o, "\",reason=\"%s\"} %llu\n", reject_names[r],
			    (unsigned long long)SUM(rejected[l][r]));
		}
	family(&o, "connections_active", "gauge", "Client connections open now.");
	for (size_t l = 0; l < v->nlisteners; l++) {
		put(&o, "switchyard_connections_active{listener=\"");
		put_label(&o, v->listeners[l].name);
		put(&o, "\",protocol=\"%s\"} %u\n", sy_proto_name(v->listeners[l].protocol),
		    (unsigned)v->listeners[l].active);
	}

	/* ---- logins ---- */
	family(&o, "logins_total", "counter",
	       "Logins by protocol, SASL mechanism and result (ok, failed, tempfail).");
	for (int p = 0; p < SY_PROTO_COUNT; p++)
		for (int m = 0; m <= SY_MECH_UNKNOWN; m++)
			for (int r = 0; r < SY_LOGIN_RESULT_COUNT; r++) {
				uint64_t n = SUM(logins[p][m][r]);
				/* Zero series only for the common case, so the
				 * output stays small. */
				if (n == 0 && !(used[p] && sy_proto_carries_credentials(p) &&
				                m == SY_MECH_PLAIN))
					continue;
				put(&o,
				    "switchyard_logins_total{protocol=\"%s\",mechanism=\"%s\","
				    "result=\"%s\"} %llu\n",
				    sy_proto_name(p), sasl_mech_name(m), result_names[r],
				    (unsigned long long)n);
			}

	/* ---- backends ---- */
	family(&o, "backend_connect_seconds", "histogram",
	       "Time to connect to a backend (TCP, PROXY header and implicit TLS).");
	for (int p = 0; p < SY_PROTO_COUNT; p++) {
		hist_sum s;
		sum_hist(&s, pick_connect, (size_t)p);
		if (s.count == 0 && !used[p])
			continue;
		char labels[64];
		snprintf(labels, sizeof(labels), "protocol=\"%s\",", sy_proto_name(p));
		put_hist(&o, "backend_connect_seconds", labels, &s, connect_bounds,
		         NBOUNDS(connect_bounds));
	}
	family(&o, "backend_connect_failures_total", "counter",
	       "Failed backend connections by reason class.");
	for (int r = 0; r < SY_CONNFAIL_COUNT; r++)
		put(&o, "switchyard_backend_connect_failures_total{reason=\"%s\"} %llu\n",
		    connfail_names[r], (unsigned long long)SUM(connect_failures[r]));

	family(&o, "destination_up", "gauge",
	       "1 when the destination's circuit breaker is closed, 0 while it is marked down.");
	for (size_t i = 0; i < v->ndestinations; i++) {
		put(&o, "switchyard_destination_up{destination=\"");
		put_label(&o, v->destinations[i].id);
		put(&o, "\"} %d\n", v->destinations[i].down ? 0 : 1);
	}
	family(&o, "destination_consecutive_failures", "gauge",
	       "Consecutive failed connections to the destination.");
	for (size_t i = 0; i < v->ndestinations; i++) {
		put(&o, "switchyard_destination_consecutive_failures{destination=\"");
		put_label(&o, v->destinations[i].id);
		put(&o, "\"} %u\n", v->destinations[i].consecutive_failures);
	}

	/* ---- mappings ---- */
	family(&o, "mapping_cache_hits_total", "counter", "Mapping cache lookups answered.");
	put(&o, "switchyard_mapping_cache_hits_total %llu\n", (unsigned long long)v->cache_hits);
	family(&o, "mapping_cache_misses_total", "counter",
	       "Mapping cache lookups that went to the store.");
	put(&o, "switchyard_mapping_cache_misses_total %llu\n",
	    (unsigned long long)v->cache_misses);
	family(&o, "mapping_cache_entries", "gauge", "Entries in the mapping cache.");
	put(&o, "switchyard_mapping_cache_entries %llu\n", (unsigned long long)v->cache_entries);
	{
		hist_sum s;
		sum_hist(&s, pick_store, 0);
		family(&o, "store_lookup_seconds", "histogram",
		       "Mapping store lookups (file, Redis or SQL), including errors.");
		put_hist(&o, "store_lookup_seconds", "", &s, store_bounds, NBOUNDS(store_bounds));
	}
	family(&o, "store_lookup_errors_total", "counter",
	       "Mapping store lookups that failed or timed out.");
	put(&o, "switchyard_store_lookup_errors_total %llu\n",
	    (unsigned long long)SUM(store_errors));

	/* ---- sessions ---- */
	family(&o, "bridged_bytes_total", "counter",
	       "Bytes pumped between clients and backends after login, by direction.");
	for (int p = 0; p < SY_PROTO_COUNT; p++) {
		uint64_t c2b = SUM(bytes[p][0]), b2c = SUM(bytes[p][1]);
		if (c2b == 0 && b2c == 0 && !used[p])
			continue;
		put(&o,
		    "switchyard_bridged_bytes_total{protocol=\"%s\",direction="
		    "\"client_to_backend\"} %llu\n",
		    sy_proto_name(p), (unsigned long long)c2b);
		put(&o,
		    "switchyard_bridged_bytes_total{protocol=\"%s\",direction="
		    "\"backend_to_client\"} %llu\n",
		    sy_proto_name(p), (unsigned long long)b2c);
	}
	family(&o, "session_duration_seconds", "histogram",
	       "Client session duration, from accept to close.");
	for (int p = 0; p < SY_PROTO_COUNT; p++) {
		hist_sum s;
		sum_hist(&s, pick_duration, (size_t)p);
		if (s.count == 0 && !used[p])
			continue;
		char labels[64];
		snprintf(labels, sizeof(labels), "protocol=\"%s\",", sy_proto_name(p));
		put_hist(&o, "session_duration_seconds", labels, &s, duration_bounds,
		         NBOUNDS(duration_bounds));
	}

	/* ---- configuration ---- */
	family(&o, "config_reloads_total", "counter", "Configuration reloads by result.");
	put(&o, "switchyard_config_reloads_total{result=\"success\"} %llu\n",
	    (unsigned long long)M.reloads[1]);
	put(&o, "switchyard_config_reloads_total{result=\"error\"} %llu\n",
	    (unsigned long long)M.reloads[0]);
	family(&o, "config_last_reload_success_timestamp_seconds", "gauge",
	       "Time of the last successful reload (the start time until one happens).");
	put(&o, "switchyard_config_last_reload_success_timestamp_seconds ");
	put_double(&o, floor(M.last_reload_success > 0 ? M.last_reload_success : M.start_time));
	put(&o, "\n");

	/* ---- discovery ---- */
	static const char *const restart_names[SY_METRICS_DISCOVERY_REASONS] = {
	    "expired", "gone", "unauthorized", "error"};
	family(&o, "discovery_endpoints", "gauge",
	       "Cluster nodes known from Kubernetes EndpointSlices, by state (eligible: serving "
	       "and not terminating).");
	for (size_t i = 0; i < v->ndiscovery; i++) {
		const sy_metrics_discovery *d = &v->discovery[i];
		const struct {
			const char *state;
			uint64_t n;
		} st[] = {{"eligible", d->eligible},
		          {"terminating", d->terminating},
		          {"not_serving", d->not_serving}};
		for (size_t k = 0; k < 3; k++) {
			put(&o, "switchyard_discovery_endpoints{cluster=\"");
			put_label(&o, d->cluster);
			put(&o, "\",state=\"%s\"} %llu\n", st[k].state,
			    (unsigned long long)st[k].n);
		}
	}
	family(&o, "discovery_watch_restarts_total", "counter",
	       "Restarts of the Kubernetes EndpointSlice list or watch, by reason.");
	for (size_t i = 0; i < v->ndiscovery; i++)
		for (int r = 0; r < SY_METRICS_DISCOVERY_REASONS; r++) {
			put(&o, "switchyard_discovery_watch_restarts_total{cluster=\"");
			put_label(&o, v->discovery[i].cluster);
			put(&o, "\",reason=\"%s\"} %llu\n", restart_names[r],
			    (unsigned long long)v->discovery[i].restarts[r]);
		}
	family(&o, "discovery_errors_total", "counter",
	       "Failed Kubernetes API requests, by request kind (list, watch).");
	for (size_t i = 0; i < v->ndiscovery; i++) {
		put(&o, "switchyard_discovery_errors_total{cluster=\"");
		put_label(&o, v->discovery[i].cluster);
		put(&o, "\",request=\"list\"} %llu\n",
		    (unsigned long long)v->discovery[i].list_errors);
		put(&o, "switchyard_discovery_errors_total{cluster=\"");
		put_label(&o, v->discovery[i].cluster);
		put(&o, "\",request=\"watch\"} %llu\n",
		    (unsigned long long)v->discovery[i].watch_errors);
	}
	family(&o, "discovery_synced", "gauge",
	       "1 once the cluster's first EndpointSlice list has completed.");
	for (size_t i = 0; i < v->ndiscovery; i++) {
		put(&o, "switchyard_discovery_synced{cluster=\"");
		put_label(&o, v->discovery[i].cluster);
		put(&o, "\"} %d\n", v->discovery[i].synced ? 1 : 0);
	}
	family(&o, "discovery_last_sync_timestamp_seconds", "gauge",
	       "Time of the last successful list, watch event or clean watch end (0: never).");
	for (size_t i = 0; i < v->ndiscovery; i++) {
		put(&o, "switchyard_discovery_last_sync_timestamp_seconds{cluster=\"");
		put_label(&o, v->discovery[i].cluster);
		put(&o, "\"} ");
		put_double(&o, floor((double)v->discovery[i].last_sync_ms / 1000.0));
		put(&o, "\n");
	}

	/* ---- fleet events ---- */
	static const char *const fleet_types[3] = {"invalidate", "kick", "delay"};
	family(&o, "fleet_events_published_total", "counter",
	       "Fleet events this replica published on the mapping store, by type.");
	for (int t = 0; t < 3; t++)
		put(&o, "switchyard_fleet_events_published_total{type=\"%s\"} %llu\n",
		    fleet_types[t], (unsigned long long)v->fleet.published[t]);
	family(&o, "fleet_events_received_total", "counter",
	       "Fleet events of other replicas (or of the store) applied here, by type.");
	for (int t = 0; t < 3; t++)
		put(&o, "switchyard_fleet_events_received_total{type=\"%s\"} %llu\n",
		    fleet_types[t], (unsigned long long)v->fleet.received[t]);
	family(&o, "fleet_subscription_up", "gauge",
	       "1 while the fleet events subscription is up (absent: the mapping source has "
	       "none).");
	if (v->fleet.active)
		put(&o, "switchyard_fleet_subscription_up %d\n", v->fleet.subscribed ? 1 : 0);
	family(&o, "fleet_resubscribes_total", "counter",
	       "Fleet events subscriptions restored after a loss (each clears the cache once).");
	put(&o, "switchyard_fleet_resubscribes_total %llu\n",
	    (unsigned long long)v->fleet.resubscribes);
	family(&o, "fleet_seconds_since_last_event", "gauge",
	       "Seconds since the last fleet event was applied here (absent: none yet).");
	if (v->fleet.seconds_since_event >= 0) {
		put(&o, "switchyard_fleet_seconds_since_last_event ");
		put_double(&o, v->fleet.seconds_since_event);
		put(&o, "\n");
	}

	family(&o, "admin_auth_failures_total", "counter",
	       "Management API requests refused for a missing or wrong token.");
	put(&o, "switchyard_admin_auth_failures_total %llu\n",
	    (unsigned long long)M.admin_auth_failures);

	if (o.oom) {
		free(o.buf);
		return NULL;
	}
	*len = o.len;
	return o.buf;
}
