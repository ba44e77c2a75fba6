/*
 * The router (see route.h): identifier -> cache -> mapping source -> target
 * -> destination.
 *
 * Requests. A route_resolve() that cannot be answered at once allocates a
 * sy_route_req, which waits either as a cache waiter (a lookup of the same
 * key is already in flight, possibly on another thread) or as the
 * originator of a store query (store_op). route_cancel() only marks the
 * request: whoever holds it (the inbox delivery or the store_op) frees it
 * when the answer arrives, without calling back. Every store query has a
 * timer, so every request is answered within lookup_timeout.
 *
 * Draining. A context counts what will still call back on its loop
 * (`pending`: waiting requests and unanswered store operations, all
 * counted and released on that loop). router_ctx_close() only marks it
 * closing while anything is pending; the last release closes the store and
 * the inbox. Waiters are answered by fetches that run on contexts of the
 * same router, each bounded by its timer, so a retired context finishes
 * within lookup_timeout. The context holds a router reference until its
 * memory is released, and every fetch runs on a context, so the cache
 * outlives every lookup that uses it.
 *
 * The file source is an in-memory table shared by all threads behind a
 * rwlock: readers copy the target out under the read lock; writers (the
 * management API, serialized by write_lock) build the new table beside the
 * old one, sharing the unchanged strings, write the file, and swap.
 */
#include "switchyard/clock.h"
#include "switchyard/route.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/cache.h"
#include "switchyard/cluster.h"
#include "switchyard/log.h"
#include "switchyard/mapfile.h"
#include "switchyard/metrics.h"
#include "switchyard/sasl.h"
#include "switchyard/store.h"

#include "router_int.h"

/* on_store_error = "default": how long the fallback is cached at most. */
#define STORE_ERROR_DEFAULT_TTL_MS 5000

struct sy_router {
	_Atomic unsigned refs; /* the creator's, one per context */
	sy_snapshot *snap;     /* the configuration the router was built from (a reference) */
	const sy_mapping_config *m;
	sy_cache *cache; /* NULL when there is no [mapping] */
	unsigned nworkers;

	/* source = "file" */
	pthread_rwlock_t map_lock;  /* guards `map` for readers */
	pthread_mutex_t write_lock; /* serializes writers (put, delete, reload) */
	sy_mapfile map;

	struct sy_fleet *fleet; /* fleet events subscriber (events.c), main loop */
};

struct sy_route_ctx {
	sy_router *r; /* a reference */
	uv_loop_t *loop;
	sy_store *store;       /* redis / sql; NULL otherwise */
	sy_cache_inbox *inbox; /* NULL when there is no [mapping] */
	unsigned pending;      /* waiting requests + unanswered store ops (this loop) */
	bool closing;          /* retired: close once nothing is pending */
};

static void ctx_release(sy_route_ctx *ctx);

struct sy_route_req {
	sy_cache_waiter waiter;
	sy_route_ctx *ctx; /* set while the request waits as a cache waiter */
	sy_snapshot *snap; /* the caller's; not referenced here */
	sy_proto proto;
	sy_route_cb cb;
	void *arg;
	bool cancelled;
	char identifier[];
};

/* ---- targets -> destinations ---------------------------------------------------------------- */

typedef struct usable_ctx {
	const sy_node_set *set;
	uint64_t now;
} usable_ctx;

/* A node is usable when it may take new logins (a discovered node that is
 * terminating or not serving may not) and its circuit breaker is not open
 * and still cooling down (after the cooldown the dialer lets one probe
 * through). */
static bool node_usable(void *arg, size_t i)
{
	usable_ctx *u = arg;
	if (!u->set->eligible[i])
		return false;
	const sy_dest_rt *d = &u->set->nodes[i];
	if (!d->health)
		return true;
	sy_health_state st = health_get(d->health, u->now);
	return !st.down || st.down_for_ms == 0;
}

/* The node of cluster `cl` for `identifier` ("" for none), or NULL; *hold
 * gets a reference to the set the node belongs to (NULL with the node). */
static sy_dest_rt *cluster_node(sy_cluster_rt *cl, const char *identifier, sy_node_set **hold)
{
	sy_node_set *set = cluster_set_acquire(cl);
	usable_ctx u = {.set = set, .now = sy_now_ms()};
	long i = set ? cluster_pick(set->ids, set->n, identifier ? identifier : "", node_usable, &u)
	             : -1;
	if (i < 0) {
		node_set_unref(set);
		*hold = NULL;
		return NULL;
	}
	*hold = set;
	return &set->nodes[i];
}

/* Fills *out for target `target` (a destination or cluster id of snap). A
 * target unknown to this snapshot (a stale cache entry after a reload)
 * falls back to the default. `pick` chooses a cluster's node: the
 * identifier, or a per-connection key when there is none. */
static void resolve_target(sy_snapshot *snap, const char *target, const char *identifier,
                           const char *pick, sy_proto proto, bool is_default, sy_route_result *out)
{
	memset(out, 0, sizeof(*out));
	out->routed_to_default = is_default;
	sy_dest_rt *d = target ? snapshot_dest(snap, target) : NULL;
	sy_cluster_rt *cl = NULL;
	if (!d && target && (cl = snapshot_cluster(snap, target)) != NULL) {
		d = cluster_node(cl, pick, &out->hold);
		if (!d) {
			sy_log(SY_LOG_ERROR, "cluster has no usable node", "cluster", target, NULL);
			out->status = SY_ROUTE_TEMPFAIL;
			out->reason = "cluster has no nodes";
			return;
		}
	}
	if (!d) {
		if (!is_default) {
			sy_log(SY_LOG_WARN,
			       "mapping names a destination that is not declared; routing to the "
			       "default",
			       "identifier", identifier ? identifier : "-", "destination", target,
			       NULL);
			resolve_target(snap, snap->cfg->routing.default_destination, identifier,
			               pick, proto, true, out);
			return;
		}
		sy_log(SY_LOG_ERROR, "default destination is not declared", "destination",
		       target ? target : "-", NULL);
		out->status = SY_ROUTE_TEMPFAIL;
		out->reason = "default destination is not declared";
		return;
	}
	if (!d->cfg->proto[proto].declared) {
		sy_log(SY_LOG_ERROR, "destination does not declare the protocol in use",
		       "destination", d->cfg->id, "protocol", sy_proto_name(proto), "identifier",
		       identifier ? identifier : "-", NULL);
		node_set_unref(out->hold);
		out->hold = NULL;
		out->status = SY_ROUTE_TEMPFAIL;
		out->reason = "destination does not declare the protocol";
		return;
	}
	out->status = SY_ROUTE_OK;
	out->dest = d;
}

static void answer_result(sy_snapshot *snap, const sy_cache_answer *a, const char *identifier,
                          sy_proto proto, sy_route_result *out)
{
	switch (a->outcome) {
	case SY_CACHE_POSITIVE:
		resolve_target(snap, a->value, identifier, identifier, proto, false, out);
		return;
	case SY_CACHE_NEGATIVE:
		resolve_target(snap, snap->cfg->routing.default_destination, identifier, identifier,
		               proto, true, out);
		return;
	default:
		memset(out, 0, sizeof(*out));
		out->status = SY_ROUTE_TEMPFAIL;
		out->reason = a->value[0] ? a->value : "mapping lookup failed";
		return;
	}
}

/* ---- requests ------------------------------------------------------------------------------- */

/* Answers (unless cancelled) and frees a request; on its own loop, except
 * for SY_CACHE_DROPPED, which only frees. */
static void req_deliver(sy_route_req *req, const sy_cache_answer *a)
{
	if (!req->cancelled && a->outcome != SY_CACHE_DROPPED) {
		sy_route_result res;
		answer_result(req->snap, a, req->identifier, req->proto, &res);
		req->cb(req->arg, &res);
		node_set_unref(res.hold);
	}
	free(req);
}

static void on_waiter(sy_cache_waiter *w)
{
	sy_route_req *req = (sy_route_req *)((char *)w - offsetof(sy_route_req, waiter));
	/* DROPPED runs on whichever thread completed the fetch (the inbox was
	 * closed, which a draining context never does while a waiter is
	 * pending): only free. */
	sy_route_ctx *ctx = w->answer.outcome == SY_CACHE_DROPPED ? NULL : req->ctx;
	req_deliver(req, &w->answer);
	if (ctx)
		ctx_release(ctx);
}

void route_cancel(sy_route_req *req)
{
	if (req)
		req->cancelled = true;
}

/* ---- the file table ------------------------------------------------------------------------- */

static size_t lower_bound(const sy_mapfile *m, const char *identifier)
{
	size_t lo = 0, hi = m->len;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->entries[mid].identifier, identifier) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Copies the mapping of `key` into out[SY_CACHE_VALUE_MAX]; false if none. */
static bool file_lookup(sy_router *r, const char *key, char *out)
{
	bool found = false;
	pthread_rwlock_rdlock(&r->map_lock);
	const char *d = mapfile_lookup(&r->map, key);
	if (d && strlen(d) < SY_CACHE_VALUE_MAX) {
		strcpy(out, d);
		found = true;
	}
	pthread_rwlock_unlock(&r->map_lock);
	return found;
}

/* Installs `nm` as the table; returns the old entries array (strings not
 * freed: the caller knows which ones are no longer shared). */
static sy_mapentry *file_swap(sy_router *r, sy_mapfile nm)
{
	pthread_rwlock_wrlock(&r->map_lock);
	sy_mapentry *old = r->map.entries;
	r->map = nm;
	pthread_rwlock_unlock(&r->map_lock);
	return old;
}

static int file_put(sy_router *r, const char *key, const char *dest, const char **error_r)
{
	pthread_mutex_lock(&r->write_lock);
	/* Only writers change r->map, and this one holds write_lock. */
	const sy_mapfile *old = &r->map;
	size_t i = lower_bound(old, key);
	bool exists = i < old->len && strcmp(old->entries[i].identifier, key) == 0;
	sy_mapfile nm = {.len = old->len + (exists ? 0 : 1)};
	nm.entries = malloc(nm.len * sizeof(*nm.entries));
	char *nd = strdup(dest);
	char *nid = exists ? NULL : strdup(key);
	if (!nm.entries || !nd || (!exists && !nid)) {
		free(nm.entries);
		free(nd);
		free(nid);
		pthread_mutex_unlock(&r->write_lock);
		*error_r = "out of memory";
		return -1;
	}
	memcpy(nm.entries, old->entries, i * sizeof(*nm.entries));
	if (exists) {
		nm.entries[i].identifier = old->entries[i].identifier;
		memcpy(&nm.entries[i + 1], &old->entries[i + 1],
		       (old->len - i - 1) * sizeof(*nm.entries));
	} else {
		nm.entries[i].identifier = nid;
		memcpy(&nm.entries[i + 1], &old->entries[i], (old->len - i) * sizeof(*nm.entries));
	}
	nm.entries[i].destination = nd;
	if (mapfile_write(r->m->file.path, &nm, error_r) != 0) {
		free(nm.entries);
		free(nd);
		free(nid);
		pthread_mutex_unlock(&r->write_lock);
		return -1;
	}
	char *replaced = exists ? old->entries[i].destination : NULL;
	free(file_swap(r, nm));
	free(replaced);
	pthread_mutex_unlock(&r->write_lock);
	return 0;
}

/* Returns 1 removed, 0 absent, -1 error. */
static int file_delete(sy_router *r, const char *key, const char **error_r)
{
	pthread_mutex_lock(&r->write_lock);
	const sy_mapfile *old = &r->map;
	size_t i = lower_bound(old, key);
	if (i >= old->len || strcmp(old->entries[i].identifier, key) != 0) {
		pthread_mutex_unlock(&r->write_lock);
		return 0;
	}
	sy_mapfile nm = {.len = old->len - 1};
	nm.entries = malloc((nm.len ? nm.len : 1) * sizeof(*nm.entries));
	if (!nm.entries) {
		pthread_mutex_unlock(&r->write_lock);
		*error_r = "out of memory";
		return -1;
	}
	memcpy(nm.entries, old->entries, i * sizeof(*nm.entries));
	memcpy(&nm.entries[i], &old->entries[i + 1], (old->len - i - 1) * sizeof(*nm.entries));
	if (mapfile_write(r->m->file.path, &nm, error_r) != 0) {
		free(nm.entries);
		pthread_mutex_unlock(&r->write_lock);
		return -1;
	}
	sy_mapentry gone = old->entries[i];
	free(file_swap(r, nm));
	free(gone.identifier);
	free(gone.destination);
	pthread_mutex_unlock(&r->write_lock);
	return 1;
}

int route_reload_file(sy_router *r, sy_snapshot *snap, char **error_r)
{
	*error_r = NULL;
	if (!r || r->m->source != SY_MAP_FILE)
		return 0;
	sy_errors errs = {0};
	sy_mapfile nm = {0};
	pthread_mutex_lock(&r->write_lock);
	if (mapfile_load(r->m->file.path, r->m->normalize == SY_NORMALIZE_LOWERCASE,
	                 config_target_cb, snap->cfg, &nm, &errs) != 0) {
		pthread_mutex_unlock(&r->write_lock);
		size_t len = 1;
		for (size_t i = 0; i < errs.len; i++)
			len += strlen(errs.msgs[i]) + 1;
		char *msg = malloc(len);
		if (msg) {
			msg[0] = '\0';
			for (size_t i = 0; i < errs.len; i++) {
				if (i)
					strcat(msg, "\n");
				strcat(msg, errs.msgs[i]);
			}
		}
		*error_r = msg;
		sy_errors_free(&errs);
		return -1;
	}
	sy_mapfile old = r->map;
	file_swap(r, nm);
	pthread_mutex_unlock(&r->write_lock);
	mapfile_free(&old);
	cache_invalidate_all(r->cache);
	char n[24];
	snprintf(n, sizeof(n), "%zu", nm.len);
	sy_log(SY_LOG_INFO, "mapping file reloaded", "path", r->m->file.path, "entries", n, NULL);
	return 0;
}

/* ---- store operations -------------------------------------------------------------------------
 */

typedef enum op_kind { OP_GET, OP_PUT, OP_DEL } op_kind;
typedef struct store_op store_op;
typedef void (*op_done_fn)(store_op *op, sy_store_status st, const char *value, const char *error);

/*
 * One store request with its timeout. Freed once it has been answered (by
 * the store or the timer), the store's callback has run (the store always
 * calls back, on close at the latest) and the timer is closed. The context
 * is held (pending) only until the op is answered, so a context may close
 * while a late store answer is still due.
 */
struct store_op {
	sy_router *r;
	sy_route_ctx *ctx; /* counted in ctx->pending until answered; NULL after */
	uv_timer_t timer;
	bool answered, store_pending, timer_open;
	bool timed;              /* a lookup (GET): its time goes to metrics_store_lookup */
	uint64_t started_ns;     /* uv_hrtime() when the request was made */
	const char *start_error; /* the store refused the request: reported by the timer */
	op_done_fn done;
	sy_snapshot *snap; /* a reference for the op's life */
	/* lookups for route_resolve */
	sy_cache_fetch *fetch;
	sy_route_req *req;
	/* management */
	sy_route_explain_cb ecb;
	sy_route_admin_cb acb;
	void *arg;
	char *raw; /* explain: the identifier as given */
	char *key; /* normalized identifier */
	char *value;
};

static void op_maybe_free(store_op *op)
{
	if (!op->answered || op->store_pending || op->timer_open)
		return;
	snapshot_unref(op->snap);
	free(op->raw);
	free(op->key);
	free(op->value);
	free(op);
}

static void on_op_timer_closed(uv_handle_t *h)
{
	store_op *op = h->data;
	op->timer_open = false;
	op_maybe_free(op);
}

static void op_finish(store_op *op, sy_store_status st, const char *value, const char *error)
{
	if (op->answered)
		return;
	op->answered = true;
	/* Every lookup is timed from request to answer, a timeout or a refused
	 * request included (as an error): switchyard_store_lookup_seconds and
	 * switchyard_store_lookup_errors_total. */
	if (op->timed)
		metrics_store_lookup((double)(uv_hrtime() - op->started_ns) / 1e9,
		                     st != SY_STORE_ERROR);
	uv_timer_stop(&op->timer);
	uv_close((uv_handle_t *)&op->timer, on_op_timer_closed);
	op->done(op, st, value, error);
	/* Last: the release may close the context (and its store, which then
	 * calls back a pending request of this op at once). */
	sy_route_ctx *ctx = op->ctx;
	op->ctx = NULL;
	ctx_release(ctx);
}

static void on_store_answer(void *arg, sy_store_status st, const char *value, const char *error)
{
	store_op *op = arg;
	op->store_pending = false;
	/* A late answer (after lookup_timeout) is ignored. */
	op_finish(op, st, value, error);
	op_maybe_free(op);
}

static void on_op_timeout(uv_timer_t *t)
{
	store_op *op = t->data;
	op_finish(op, SY_STORE_ERROR, NULL,
	          op->start_error ? op->start_error : "lookup_timeout passed");
	op_maybe_free(op);
}

static store_op *op_new(sy_router *r, sy_snapshot *snap, const char *key, op_done_fn done)
{
	store_op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->key = strdup(key);
	if (!op->key) {
		free(op);
		return NULL;
	}
	op->r = r;
	op->done = done;
	op->snap = snapshot_ref(snap);
	return op;
}

/* Starts the request on ctx's store; the op's done function runs exactly
 * once, never before this returns. */
static void op_start(sy_route_ctx *ctx, store_op *op, op_kind kind)
{
	op->ctx = ctx;
	ctx->pending++;
	uv_timer_init(ctx->loop, &op->timer);
	op->timer.data = op;
	op->timer_open = true;
	op->store_pending = true;
	op->timed = kind == OP_GET;
	op->started_ns = uv_hrtime();
	sy_store *s = ctx->store;
	int rc;
	switch (kind) {
	case OP_GET:
		rc = s->ops->get(s, op->key, on_store_answer, op);
		break;
	case OP_PUT:
		rc = s->ops->put(s, op->key, op->value, on_store_answer, op);
		break;
	default:
		rc = s->ops->del(s, op->key, on_store_answer, op);
		break;
	}
	uint64_t timeout = ctx->r->m->lookup_timeout_ms;
	if (rc != 0) {
		/* Answered from the timer on the next loop iteration, so that
		 * nobody is called back from inside the call that started it. */
		op->store_pending = false;
		op->start_error = "the mapping store refused the request";
		timeout = 0;
	}
	uv_timer_start(&op->timer, on_op_timeout, timeout, 0);
}

/* A lookup in the loaded mapping file, timed like a store lookup (it
 * cannot fail: a missing entry is an answer). */
static bool file_lookup_timed(sy_router *r, const char *key, char *out)
{
	uint64_t t0 = uv_hrtime();
	bool found = file_lookup(r, key, out);
	metrics_store_lookup((double)(uv_hrtime() - t0) / 1e9, true);
	return found;
}

/* Turns a store answer into a cache answer (and its TTL, 0 = the kind's
 * default), logging what needs attention: router_int.h. */
uint64_t router_store_answer(const sy_mapping_config *m, const sy_config *cfg, const char *key,
                             sy_store_status st, const char *value, const char *error,
                             sy_cache_answer *a)
{
	a->value[0] = '\0';
	if (st == SY_STORE_FOUND && value) {
		if (strlen(value) < sizeof(a->value) && config_is_target(cfg, value)) {
			a->outcome = SY_CACHE_POSITIVE;
			strcpy(a->value, value);
			return 0;
		}
		sy_log(SY_LOG_WARN,
		       "mapping store names a destination that is not declared; routing to the "
		       "default",
		       "identifier", key, "destination", value, NULL);
		a->outcome = SY_CACHE_NEGATIVE;
		return 0;
	}
	if (st != SY_STORE_ERROR) {
		a->outcome = SY_CACHE_NEGATIVE;
		return 0;
	}
	const char *policy = m->on_store_error == SY_STORE_ERR_DEFAULT ? "default" : "tempfail";
	sy_log(SY_LOG_WARN, "mapping lookup failed", "identifier", key, "store",
	       m->source == SY_MAP_REDIS ? "redis" : "sql", "error", error ? error : "?",
	       "on_store_error", policy, NULL);
	if (m->on_store_error == SY_STORE_ERR_DEFAULT) {
		a->outcome = SY_CACHE_NEGATIVE;
		uint64_t ttl = m->negative_ttl_ms;
		return ttl < STORE_ERROR_DEFAULT_TTL_MS ? ttl : STORE_ERROR_DEFAULT_TTL_MS;
	}
	a->outcome = SY_CACHE_ERROR;
	snprintf(a->value, sizeof(a->value), "mapping lookup failed: %s", error ? error : "?");
	return 0;
}

static void fetch_done(store_op *op, sy_store_status st, const char *value, const char *error)
{
	sy_cache_answer a;
	uint64_t ttl = router_store_answer(op->r->m, op->snap->cfg, op->key, st, value, error, &a);
	cache_complete(op->r->cache, op->fetch, a.outcome, a.value, ttl);
	op->fetch = NULL;
	req_deliver(op->req, &a);
	op->req = NULL;
}

/* ---- resolve ----------------------------------------------------------------------------------
 */

/* The default destination, uncached. Without an identifier a cluster's
 * node is picked by the connection (route.h, conn_id). */
static sy_route_req *resolve_default(sy_snapshot *snap, const char *identifier, uint64_t conn_id,
                                     sy_proto proto, sy_route_cb cb, void *arg)
{
	char key[24];
	const char *pick = identifier;
	if (!pick) {
		snprintf(key, sizeof(key), "%llu", (unsigned long long)conn_id);
		pick = key;
	}
	sy_route_result res;
	resolve_target(snap, snap->cfg->routing.default_destination, identifier, pick, proto, true,
	               &res);
	cb(arg, &res);
	node_set_unref(res.hold);
	return NULL;
}

static void answer_now(sy_snapshot *snap, const sy_cache_answer *a, const char *identifier,
                       sy_proto proto, sy_route_cb cb, void *arg)
{
	sy_route_result res;
	answer_result(snap, a, identifier, proto, &res);
	cb(arg, &res);
	node_set_unref(res.hold);
}

sy_route_req *route_resolve_ctx(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                                uint64_t conn_id, sy_proto proto, sy_route_cb cb, void *arg)
{
	sy_router *r = ctx ? ctx->r : NULL;
	/* No identifier (an opaque token) goes to the default uncached. */
	if (!identifier || !r || !r->cache)
		return resolve_default(snap, identifier, conn_id, proto, cb, arg);

	/* The common case, a cached answer, needs no request. */
	sy_cache_answer hit;
	if (cache_get(r->cache, identifier, &hit)) {
		answer_now(snap, &hit, identifier, proto, cb, arg);
		return NULL;
	}

	size_t len = strlen(identifier);
	sy_route_req *req = calloc(1, sizeof(*req) + len + 1);
	if (!req) {
		sy_route_result res = {.status = SY_ROUTE_TEMPFAIL, .reason = "out of memory"};
		cb(arg, &res);
		return NULL;
	}
	memcpy(req->identifier, identifier, len + 1);
	req->snap = snap;
	req->proto = proto;
	req->cb = cb;
	req->arg = arg;
	req->waiter.inbox = ctx->inbox;
	req->waiter.cb = on_waiter;

	sy_cache_fetch *fetch = NULL;
	switch (cache_lookup(r->cache, identifier, &req->waiter, &fetch)) {
	case SY_CACHE_WAIT:
		/* Answered through the inbox, on this loop, on a later turn:
		 * the context stays open until then. */
		req->ctx = ctx;
		ctx->pending++;
		return req;
	case SY_CACHE_HIT: {
		sy_cache_answer a = req->waiter.answer;
		free(req);
		answer_now(snap, &a, identifier, proto, cb, arg);
		return NULL;
	}
	case SY_CACHE_FETCH:
		break;
	}

	if (r->m->source == SY_MAP_FILE) {
		sy_cache_answer a;
		a.outcome = file_lookup_timed(r, identifier, a.value) ? SY_CACHE_POSITIVE
		                                                      : SY_CACHE_NEGATIVE;
		if (a.outcome == SY_CACHE_NEGATIVE)
			a.value[0] = '\0';
		cache_complete(r->cache, fetch, a.outcome, a.value, 0);
		free(req);
		answer_now(snap, &a, identifier, proto, cb, arg);
		return NULL;
	}

	store_op *op = ctx->store ? op_new(r, snap, identifier, fetch_done) : NULL;
	if (!op) {
		sy_cache_answer a = {.outcome = SY_CACHE_ERROR};
		snprintf(a.value, sizeof(a.value), "%s",
		         ctx->store ? "out of memory" : "no mapping store on this loop");
		cache_complete(r->cache, fetch, SY_CACHE_ERROR, a.value, 0);
		free(req);
		answer_now(snap, &a, identifier, proto, cb, arg);
		return NULL;
	}
	op->fetch = fetch;
	op->req = req;
	op_start(ctx, op, OP_GET);
	return req;
}

sy_route_req *route_resolve(sy_worker *w, sy_snapshot *snap, const char *identifier,
                            uint64_t conn_id, sy_proto proto, sy_route_cb cb, void *arg)
{
	sy_route_ctx *ctx = w ? w->route_ctx : NULL;
	if (!ctx && identifier) {
		sy_route_result res = {.status = SY_ROUTE_TEMPFAIL,
		                       .reason = "no routing context on this worker"};
		cb(arg, &res);
		return NULL;
	}
	return route_resolve_ctx(ctx, snap, identifier, conn_id, proto, cb, arg);
}

/* ---- lifecycle --------------------------------------------------------------------------------
 */

sy_router *router_create(sy_snapshot *snap, unsigned nworkers, const char **error_r)
{
	*error_r = NULL;
	sy_router *r = calloc(1, sizeof(*r));
	if (!r) {
		*error_r = "out of memory";
		return NULL;
	}
	atomic_init(&r->refs, 1);
	r->snap = snapshot_ref(snap);
	r->m = &snap->cfg->mapping;
	r->nworkers = nworkers;
	pthread_rwlock_init(&r->map_lock, NULL);
	pthread_mutex_init(&r->write_lock, NULL);
	if (r->m->source == SY_MAP_NONE)
		return r;
	sy_cache_opts o = {
	    .max_entries = r->m->cache_max_entries,
	    .positive_ttl_ms = r->m->positive_ttl_ms,
	    .negative_ttl_ms = r->m->negative_ttl_ms,
	};
	if (!(r->cache = cache_create(&o))) {
		*error_r = "out of memory";
		router_unref(r);
		return NULL;
	}
	if (r->m->source == SY_MAP_FILE) {
		sy_errors errs = {0};
		if (mapfile_load(r->m->file.path, r->m->normalize == SY_NORMALIZE_LOWERCASE,
		                 config_target_cb, snap->cfg, &r->map, &errs) != 0) {
			for (size_t i = 0; i < errs.len; i++)
				sy_log(SY_LOG_ERROR, "invalid mapping file", "error", errs.msgs[i],
				       NULL);
			sy_errors_free(&errs);
			*error_r = "cannot load the mapping file";
			router_unref(r);
			return NULL;
		}
		char n[24];
		snprintf(n, sizeof(n), "%zu", r->map.len);
		sy_log(SY_LOG_INFO, "mapping file loaded", "path", r->m->file.path, "entries", n,
		       NULL);
	}
	return r;
}

sy_router *router_ref(sy_router *r)
{
	atomic_fetch_add(&r->refs, 1);
	return r;
}

void router_unref(sy_router *r)
{
	if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	/* Every context has closed, and with it every store op: no lookup is
	 * in progress and no fetch outstanding. */
	cache_destroy(r->cache);
	mapfile_free(&r->map);
	pthread_rwlock_destroy(&r->map_lock);
	pthread_mutex_destroy(&r->write_lock);
	snapshot_unref(r->snap);
	free(r);
}

sy_route_ctx *router_ctx_create(sy_router *r, uv_loop_t *loop, unsigned conns, const char **error_r)
{
	*error_r = NULL;
	sy_route_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		*error_r = "out of memory";
		return NULL;
	}
	ctx->loop = loop;
	if (r->m->source != SY_MAP_NONE && !(ctx->inbox = cache_inbox_create(loop))) {
		free(ctx);
		*error_r = "cannot create the routing inbox";
		return NULL;
	}
	if (r->m->source == SY_MAP_REDIS || r->m->source == SY_MAP_SQL) {
		uint32_t pool =
		    r->m->source == SY_MAP_REDIS ? r->m->redis.pool_size : r->m->sql.pool_size;
		if (conns == 0)
			conns = r->nworkers ? pool / r->nworkers : pool;
		if (conns == 0)
			conns = 1;
		ctx->store = r->m->source == SY_MAP_REDIS
		                 ? store_redis_create(loop, r->m, conns, error_r)
		                 : store_sql_create(loop, r->m, conns, error_r);
		if (!ctx->store) {
			if (!*error_r)
				*error_r = "cannot create the mapping store";
			cache_inbox_close(ctx->inbox);
			free(ctx);
			return NULL;
		}
	}
	ctx->r = router_ref(r);
	return ctx;
}

static void ctx_free(sy_route_ctx *ctx)
{
	router_unref(ctx->r);
	free(ctx);
}

static void on_store_closed(void *arg)
{
	ctx_free(arg);
}

/* Nothing is pending any more: close the inbox and the store. */
static void ctx_close_now(sy_route_ctx *ctx)
{
	if (ctx->inbox)
		cache_inbox_close(ctx->inbox);
	ctx->inbox = NULL;
	if (ctx->store) {
		sy_store *st = ctx->store;
		ctx->store = NULL;
		st->ops->close(st, on_store_closed, ctx);
	} else {
		ctx_free(ctx);
	}
}

/* Something counted in ctx->pending is over (on ctx's loop; NULL is fine). */
static void ctx_release(sy_route_ctx *ctx)
{
	if (ctx && --ctx->pending == 0 && ctx->closing)
		ctx_close_now(ctx);
}

void router_ctx_close(sy_route_ctx *ctx)
{
	if (!ctx || ctx->closing)
		return;
	ctx->closing = true;
	if (ctx->pending == 0)
		ctx_close_now(ctx);
}

int router_worker_attach(sy_router *r, sy_worker *w, const char **error_r)
{
	*error_r = NULL;
	sy_route_ctx *ctx = router_ctx_create(r, &w->loop, 0, error_r);
	if (!ctx)
		return -1;
	sy_route_ctx *prev = w->route_ctx;
	w->route_ctx = ctx;
	router_ctx_close(prev);
	return 0;
}

void router_worker_detach(sy_worker *w)
{
	sy_route_ctx *ctx = w->route_ctx;
	w->route_ctx = NULL;
	router_ctx_close(ctx);
}

/* ---- management -------------------------------------------------------------------------------
 */

/* The same cut and normalization as a login's identifier (identifier_extract
 * on a PLAIN login with this user name). Returns a malloc'd string or NULL. */
static char *normalize_identifier(const sy_config *cfg, const char *raw)
{
	sy_credentials c = {.mech = SY_MECH_PLAIN, .authcid = (char *)raw};
	char *id = NULL;
	if (!raw || identifier_extract(&c, cfg, &id) != SY_IDENT_OK)
		return NULL;
	return id;
}

static void explain_answer(sy_snapshot *snap, const char *raw, const char *key,
                           const sy_cache_answer *a, bool cached, sy_route_explain_cb cb, void *arg)
{
	sy_route_explain e = {.identifier = raw, .normalized = key, .cached = cached};
	switch (a->outcome) {
	case SY_CACHE_POSITIVE:
	case SY_CACHE_NEGATIVE:
		/* A target this configuration does not declare (a stale cache
		 * entry) routes to the default, as route_resolve does. */
		if (a->outcome == SY_CACHE_POSITIVE && config_is_target(snap->cfg, a->value)) {
			e.destination = a->value;
		} else {
			e.destination = snap->cfg->routing.default_destination;
			e.routed_to_default = true;
		}
		break;
	default:
		e.error = a->value[0] ? a->value : "mapping lookup failed";
		break;
	}
	sy_cluster_rt *cl = snapshot_cluster(snap, e.destination);
	sy_node_set *hold = NULL;
	sy_dest_rt *node = cl ? cluster_node(cl, key, &hold) : NULL;
	e.node = node ? node->cfg->id : NULL;
	cb(arg, &e);
	node_set_unref(hold);
}

static void explain_done(store_op *op, sy_store_status st, const char *value, const char *error)
{
	sy_cache_answer a;
	router_store_answer(op->r->m, op->snap->cfg, op->key, st, value, error, &a);
	explain_answer(op->snap, op->raw, op->key, &a, false, op->ecb, op->arg);
}

void route_explain(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                   sy_route_explain_cb cb, void *arg)
{
	sy_router *r = ctx->r;
	char *key = normalize_identifier(snap->cfg, identifier);
	if (!key) {
		sy_route_explain e = {.identifier = identifier,
		                      .error = "the identifier is empty or contains forbidden "
		                               "characters"};
		cb(arg, &e);
		return;
	}
	sy_cache_answer a = {.outcome = SY_CACHE_NEGATIVE};
	if (!r->cache) {
		explain_answer(snap, identifier, key, &a, false, cb, arg);
	} else if (cache_peek(r->cache, key, &a)) {
		explain_answer(snap, identifier, key, &a, true, cb, arg);
	} else if (r->m->source == SY_MAP_FILE) {
		if (file_lookup_timed(r, key, a.value))
			a.outcome = SY_CACHE_POSITIVE;
		explain_answer(snap, identifier, key, &a, false, cb, arg);
	} else {
		store_op *op = ctx->store ? op_new(r, snap, key, explain_done) : NULL;
		if (op) {
			op->raw = strdup(identifier);
			op->ecb = cb;
			op->arg = arg;
			if (op->raw) {
				op_start(ctx, op, OP_GET);
				free(key);
				return;
			}
			op->answered = true;
			op_maybe_free(op);
		}
		a.outcome = SY_CACHE_ERROR;
		snprintf(a.value, sizeof(a.value), "%s",
		         ctx->store ? "out of memory" : "no mapping store on this loop");
		explain_answer(snap, identifier, key, &a, false, cb, arg);
	}
	free(key);
}

static void admin_done(store_op *op, sy_store_status st, const char *value, const char *error)
{
	(void)value;
	sy_route_admin_status as;
	if (st == SY_STORE_ERROR) {
		sy_log(SY_LOG_WARN, "mapping store write failed", "identifier", op->key, "error",
		       error ? error : "?", NULL);
		as = SY_ROUTE_ADMIN_ERROR;
	} else {
		cache_invalidate(op->r->cache, op->key);
		if (op->value)
			as = SY_ROUTE_ADMIN_OK;
		else
			as = st == SY_STORE_NOT_FOUND ? SY_ROUTE_ADMIN_ABSENT
			                              : SY_ROUTE_ADMIN_REMOVED;
		sy_log(SY_LOG_INFO, op->value ? "mapping set" : "mapping deleted", "identifier",
		       op->key, op->value ? "destination" : NULL, op->value, NULL);
	}
	op->acb(op->arg, as, st == SY_STORE_ERROR ? (error ? error : "store error") : NULL);
}

/* Common start of put and delete: normalization, writability. Returns the
 * key, or NULL after answering. */
static char *admin_begin(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                         sy_route_admin_cb cb, void *arg)
{
	sy_router *r = ctx->r;
	char *key = normalize_identifier(snap->cfg, identifier);
	if (!key) {
		cb(arg, SY_ROUTE_ADMIN_INVALID,
		   "the identifier is empty or contains forbidden characters");
		return NULL;
	}
	bool writable =
	    r->m->source == SY_MAP_FILE || (ctx->store && ctx->store->ops->writable(ctx->store));
	if (!writable) {
		free(key);
		cb(arg, SY_ROUTE_ADMIN_READONLY,
		   r->m->source == SY_MAP_NONE
		       ? "there is no mapping store"
		       : "the mapping store is read-only (set upsert_query and delete_query)");
		return NULL;
	}
	return key;
}

static void admin_store(sy_route_ctx *ctx, sy_snapshot *snap, char *key, const char *dest,
                        sy_route_admin_cb cb, void *arg)
{
	store_op *op = op_new(ctx->r, snap, key, admin_done);
	free(key);
	if (op && dest && !(op->value = strdup(dest))) {
		op->answered = true;
		op_maybe_free(op);
		op = NULL;
	}
	if (!op) {
		cb(arg, SY_ROUTE_ADMIN_ERROR, "out of memory");
		return;
	}
	op->acb = cb;
	op->arg = arg;
	op_start(ctx, op, dest ? OP_PUT : OP_DEL);
}

void route_put(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
               const char *destination, sy_route_admin_cb cb, void *arg)
{
	if (!destination || !config_is_target(snap->cfg, destination)) {
		cb(arg, SY_ROUTE_ADMIN_UNKNOWN_DEST,
		   "the destination is not a declared destination or cluster");
		return;
	}
	char *key = admin_begin(ctx, snap, identifier, cb, arg);
	if (!key)
		return;
	sy_router *r = ctx->r;
	if (r->m->source != SY_MAP_FILE) {
		admin_store(ctx, snap, key, destination, cb, arg);
		return;
	}
	const char *err = NULL;
	if (file_put(r, key, destination, &err) != 0) {
		sy_log(SY_LOG_ERROR, "cannot write the mapping file", "path", r->m->file.path,
		       "error", err ? err : "?", NULL);
		free(key);
		cb(arg, SY_ROUTE_ADMIN_ERROR, err ? err : "cannot write the mapping file");
		return;
	}
	cache_invalidate(r->cache, key);
	sy_log(SY_LOG_INFO, "mapping set", "identifier", key, "destination", destination, NULL);
	free(key);
	cb(arg, SY_ROUTE_ADMIN_OK, NULL);
}

void route_delete(sy_route_ctx *ctx, sy_snapshot *snap, const char *identifier,
                  sy_route_admin_cb cb, void *arg)
{
	char *key = admin_begin(ctx, snap, identifier, cb, arg);
	if (!key)
		return;
	sy_router *r = ctx->r;
	if (r->m->source != SY_MAP_FILE) {
		admin_store(ctx, snap, key, NULL, cb, arg);
		return;
	}
	const char *err = NULL;
	int rc = file_delete(r, key, &err);
	if (rc < 0) {
		sy_log(SY_LOG_ERROR, "cannot write the mapping file", "path", r->m->file.path,
		       "error", err ? err : "?", NULL);
		free(key);
		cb(arg, SY_ROUTE_ADMIN_ERROR, err ? err : "cannot write the mapping file");
		return;
	}
	cache_invalidate(r->cache, key);
	if (rc > 0)
		sy_log(SY_LOG_INFO, "mapping deleted", "identifier", key, NULL);
	free(key);
	cb(arg, rc > 0 ? SY_ROUTE_ADMIN_REMOVED : SY_ROUTE_ADMIN_ABSENT, NULL);
}

void route_invalidate(sy_router *r, sy_snapshot *snap, const char *identifier)
{
	if (!r || !r->cache)
		return;
	if (!identifier) {
		cache_invalidate_all(r->cache);
		return;
	}
	char *key = normalize_identifier(snap->cfg, identifier);
	if (key)
		cache_invalidate(r->cache, key);
	free(key);
}

void route_stats(sy_router *r, sy_route_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!r || !r->cache)
		return;
	sy_cache_stats st;
	cache_stats(r->cache, &st);
	out->hits = st.hits;
	out->misses = st.misses;
	out->entries = st.entries;
	uint64_t total = st.hits + st.misses;
	out->hit_rate_pct = total ? 100.0 * (double)st.hits / (double)total : 0.0;
}

sy_cache *router_cache(sy_router *r)
{
	return r->cache;
}

const sy_mapping_config *router_mapping(sy_router *r)
{
	return r->m;
}

sy_store *route_ctx_store(sy_route_ctx *ctx)
{
	return ctx ? ctx->store : NULL;
}

struct sy_fleet **router_fleet_slot(sy_router *r)
{
	return &r->fleet;
}
