/*
 * Metrics: counters, gauges and histograms for the Prometheus exposition
 * at the admin port's GET /metrics.
 *
 * Every metric has a fixed schema: its labels are small enumerations
 * (listener slot, protocol, mechanism, result, reason class, direction),
 * never an account, so the number of series is bounded by the configuration.
 *
 * Hot-path recording is per worker thread: each worker (and the main thread,
 * through its own slot) owns a block of counters that only it writes; a
 * worker thread names its slot once with metrics_thread_attach(). A
 * write is a relaxed load plus a relaxed store of the same thread's slot,
 * which compiles to a plain add on the targets we build for: no lock, no
 * locked instruction, no shared cache line between workers. A scrape sums the
 * blocks with relaxed loads; it may see one worker's update a moment late,
 * never a torn or lost one.
 *
 * Gauges that mirror state owned elsewhere (active connections, destination
 * health, cache size) are gathered at scrape time by the runtime, which owns
 * that state, and handed to metrics_render() as a plain view: this module
 * knows the label sets, not the runtime.
 */
#ifndef SWITCHYARD_METRICS_H
#define SWITCHYARD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/config.h"
#include "switchyard/sasl.h"

/* Listener slots: listeners are numbered in the order they first appear
 * (startup, then reloads); a removed listener keeps its slot. */
#define SY_METRICS_MAX_LISTENERS 256

typedef enum sy_login_result {
	SY_LOGIN_OK,
	SY_LOGIN_FAILED,   /* the backend refused the credentials */
	SY_LOGIN_TEMPFAIL, /* no verdict: routing, dial or backend trouble */
	SY_LOGIN_RESULT_COUNT
} sy_login_result;

/* Why a connection was turned away right after accept. */
typedef enum sy_reject_reason {
	SY_REJECT_MAX_CONNECTIONS,
	SY_REJECT_UNTRUSTED_PROXY, /* PROXY header required, peer not trusted */
	SY_REJECT_INVALID_PROXY,   /* malformed PROXY header */
	SY_REJECT_REASON_COUNT
} sy_reject_reason;

/* Backend connection failures, by class. */
typedef enum sy_connect_failure {
	SY_CONNFAIL_REFUSED, /* connection refused */
	SY_CONNFAIL_TIMEOUT, /* backend_timeout passed, or the connect timed out */
	SY_CONNFAIL_TLS,     /* TLS handshake or certificate verification */
	SY_CONNFAIL_DNS,     /* the host name did not resolve */
	SY_CONNFAIL_LOOP,    /* the loop guard refused the endpoint */
	SY_CONNFAIL_DOWN,    /* the circuit breaker has the destination down */
	SY_CONNFAIL_OTHER,   /* reset, unreachable, local errors */
	SY_CONNFAIL_COUNT
} sy_connect_failure;

/*
 * Allocates one counter block per worker plus one for the main thread.
 * Call once before the workers start (a second call is a no-op returning
 * 0). Returns 0 or -1 (out of memory). Until it has run, every recording
 * function is a no-op, so code under unit test needs no registry.
 */
int metrics_init(unsigned nworkers);
/* Frees the blocks; call after the worker threads have been joined. */
void metrics_shutdown(void);
/* Called once on each worker thread before it records anything: its
 * recordings go to block `worker_index` (0 .. nworkers-1). Threads that
 * never call it record into the main thread's block. */
void metrics_thread_attach(int worker_index);

/* ---- recording (into the calling thread's block) ---- */

void metrics_conn_accepted(size_t listener);
void metrics_conn_rejected(size_t listener, sy_reject_reason why);
void metrics_login(sy_proto p, sy_mech mech, sy_login_result r);
/* A backend connection (TCP, PROXY header and implicit TLS) succeeded after
 * `seconds`. */
void metrics_backend_connect(sy_proto p, double seconds);
void metrics_backend_failure(sy_connect_failure why);
/* One mapping store lookup took `seconds`; ok = false for an error or a
 * timeout. Called by the router on the loop that made the lookup. */
void metrics_store_lookup(double seconds, bool ok);
/* Bytes pumped by the bridge: from_client = client -> backend. */
void metrics_bridged(sy_proto p, bool from_client, size_t n);
/* A session ended after `seconds` (accept to close). */
void metrics_session_closed(sy_proto p, double seconds);
/* One HTTP request answered (relayed or proxy-generated), by listener slot
 * and status; and an upgrade (101) that turned the connection into a
 * bridge. */
void metrics_http_request(size_t listener, int status);
void metrics_http_upgrade(size_t listener);
/* Main thread only: a configuration reload finished. */
void metrics_config_reload(bool ok);
/* Main thread only: an admin request failed authentication. */
void metrics_admin_auth_failure(void);

/* ---- exposition ---------------------------------------------------------- */

/* What the runtime gathers for a scrape: the state it owns, as plain
 * values (borrowed for the duration of metrics_render). */
typedef struct sy_metrics_listener {
	const char *name;
	sy_proto protocol;
	uint32_t active;
} sy_metrics_listener;

typedef struct sy_metrics_destination {
	const char *id;
	bool down;
	uint32_t consecutive_failures;
} sy_metrics_destination;

/* One Kubernetes-discovered cluster. restarts[] is indexed like the k8s
 * layer's restart reasons: expired, gone, unauthorized, error. */
#define SY_METRICS_DISCOVERY_REASONS 4
typedef struct sy_metrics_discovery {
	const char *cluster;
	bool synced; /* the first list has completed */
	uint64_t eligible, terminating, not_serving;
	uint64_t restarts[SY_METRICS_DISCOVERY_REASONS];
	uint64_t list_errors, watch_errors;
	uint64_t last_sync_ms; /* wall clock, ms since the epoch; 0 = never */
} sy_metrics_discovery;

/* Fleet events (route.h sy_fleet_stats), indexed by type: invalidate,
 * kick, delay. */
typedef struct sy_metrics_fleet {
	bool active;     /* the mapping source carries events (redis, sql) */
	bool subscribed; /* the subscription is up */
	uint64_t published[3], received[3], resubscribes;
	double seconds_since_event; /* -1: none yet */
} sy_metrics_fleet;

typedef struct sy_metrics_view {
	size_t nworkers;
	bool draining;
	/* In listener-slot order (slot i = listeners[i]). */
	const sy_metrics_listener *listeners;
	size_t nlisteners;
	const sy_metrics_destination *destinations;
	size_t ndestinations;
	bool protocol_in_use[SY_PROTO_COUNT]; /* some listener serves it */
	/* has_cache = false when no router is running (the cache series read 0). */
	bool has_cache;
	uint64_t cache_hits, cache_misses, cache_entries;
	const sy_metrics_discovery *discovery;
	size_t ndiscovery;
	sy_metrics_fleet fleet;
} sy_metrics_view;

/*
 * Renders every metric in the Prometheus text exposition format 0.0.4
 * (# HELP and # TYPE before each family, prefix switchyard_). Main thread.
 * Returns a malloc'd NUL-terminated text (length in *len), or NULL when out
 * of memory.
 */
char *metrics_render(const sy_metrics_view *v, size_t *len);

#endif
