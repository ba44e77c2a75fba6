/*
 * The server: builds the runtime snapshot, binds every listener on every
 * worker loop (SO_REUSEPORT, so the kernel spreads connections evenly across
 * the workers), runs the loops on their threads, and drains on SIGTERM or
 * SIGINT.
 *
 * The main thread runs its own small loop for signals and the shutdown grace
 * timer; workers are told about shutdown through their uv_async handle and
 * report back through the server's.
 */
#include "switchyard/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "switchyard/admin.h"
#include "switchyard/clock.h"
#include "switchyard/discovery_rt.h"
#include "switchyard/fleet_rt.h"
#include "switchyard/interactive.h"
#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/protocols.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/reload.h"
#include "switchyard/route.h"
#include "switchyard/runtime.h"
#include "switchyard/session.h"

#define LISTEN_BACKLOG 511
#define POOL_MAX_FREE  64

/* ---- snapshots ------------------------------------------------------------------ */

sy_snapshot *server_snapshot(sy_server *srv)
{
	/* The current snapshot is only replaced on the main thread, which
	 * keeps its own reference until the swap; taking a reference here is
	 * therefore safe. */
	return snapshot_ref(atomic_load(&srv->current));
}

static sy_health *health_for(sy_server *srv, const sy_destination_config *d)
{
	for (size_t i = 0; i < srv->nhealth; i++)
		if (strcmp(srv->health[i]->id, d->id) == 0)
			return &srv->health[i]->health;
	return NULL;
}

/* The health entry of a destination, created on first sight (startup, or a
 * reload that adds the destination). Main thread. NULL when out of memory. */
static sy_health *health_add(sy_server *srv, const sy_config *cfg, const sy_destination_config *d)
{
	sy_health *h = health_for(srv, d);
	if (h)
		return h;
	if (srv->nhealth == srv->health_cap) {
		size_t cap = srv->health_cap ? srv->health_cap * 2 : 16;
		struct sy_health_entry **nh = realloc(srv->health, cap * sizeof(*nh));
		if (!nh)
			return NULL;
		srv->health = nh;
		srv->health_cap = cap;
	}
	struct sy_health_entry *e = calloc(1, sizeof(*e));
	if (!e || !(e->id = strdup(d->id))) {
		free(e);
		return NULL;
	}
	health_init(&e->health, cfg->server.host_down_threshold, cfg->server.host_down_cooldown_ms);
	srv->health[srv->nhealth++] = e;
	return &e->health;
}

static bool has_tls_leg(const sy_destination_config *d)
{
	for (int p = 0; p < SY_PROTO_COUNT; p++)
		if (d->proto[p].declared && d->proto[p].tls != SY_TLS_PLAIN)
			return true;
	return false;
}

sy_node_set *server_node_set(sy_server *srv, const sy_config *cfg, const sy_cluster_config *cl,
                             const sy_node_spec *v, size_t n, char *strings, char *msg,
                             size_t msglen)
{
	const sy_destination_config *tmpl = config_destination(cfg, cl->template_dest);
	sy_node_set *set = node_set_new(n);
	if (!set || !tmpl) {
		free(strings);
		node_set_unref(set);
		snprintf(msg, msglen, "%s", set ? "the template is not declared" : "out of memory");
		return NULL;
	}
	set->strings = strings;
	for (size_t k = 0; k < n; k++) {
		sy_destination_config *m = &set->cfgs[k];
		cluster_node_config(tmpl, v[k].id, v[k].host, v[k].host_is_ip, v[k].tls_server_name,
		                    m);
		set->ids[k] = m->id;
		set->nodes[k].cfg = m;
		dest_rt_parse_ip(&set->nodes[k]);
		set->serving[k] = v[k].serving;
		set->terminating[k] = v[k].terminating;
		set->eligible[k] = v[k].serving && !v[k].terminating;
		set->nodes[k].health = health_add(srv, cfg, m);
		set->n = k + 1;
		if (!set->nodes[k].health) {
			snprintf(msg, msglen, "out of memory");
			node_set_unref(set);
			return NULL;
		}
		const char *err = NULL;
		if (has_tls_leg(m) && tls_client_create(m, &set->nodes[k].tls, &err) != 0) {
			sy_log(SY_LOG_ERROR, "cannot set up backend TLS", "cluster", cl->id, "node",
			       m->id, "error", err ? err : "?", NULL);
			snprintf(msg, msglen, "%s", err ? err : "cannot set up backend TLS");
			node_set_unref(set);
			return NULL;
		}
	}
	return set;
}

/* The clusters of a snapshot. A static cluster's set is its declared nodes,
 * each the template with the node's identity; a discovered cluster starts
 * empty and discovery_apply (discovery.c) installs its members before the
 * snapshot is published. Returns 0, or -1 with msg set. */
static int clusters_build(sy_server *srv, sy_snapshot *s, char *msg, size_t msglen)
{
	const sy_config *cfg = s->cfg;
	if (cfg->nclusters == 0)
		return 0;
	s->clusters = calloc(cfg->nclusters, sizeof(*s->clusters));
	if (!s->clusters)
		return -1;
	for (size_t i = 0; i < cfg->nclusters; i++) {
		const sy_cluster_config *cl = &cfg->clusters[i];
		sy_cluster_rt *rt = &s->clusters[i];
		size_t n = cl->nodes.len;
		sy_node_spec *v = calloc(n ? n : 1, sizeof(*v));
		if (!v)
			return -1;
		for (size_t k = 0; k < n; k++) {
			const sy_destination_config *node =
			    config_destination(cfg, cl->nodes.items[k]);
			if (!node) {
				free(v);
				return -1;
			}
			v[k] = (sy_node_spec){.id = node->id,
			                      .host = node->host,
			                      .host_is_ip = node->host_is_ip,
			                      .tls_server_name = node->tls_server_name,
			                      .serving = true};
		}
		sy_node_set *set = server_node_set(srv, cfg, cl, v, n, NULL, msg, msglen);
		free(v);
		if (!set)
			return -1;
		pthread_mutex_init(&rt->mu, NULL);
		rt->cfg = cl;
		rt->set = set;
	}
	return 0;
}

/* Builds the runtime objects of a configuration (ownership of cfg passes
 * to the snapshot on success only). Creates health entries for destinations
 * seen for the first time. On failure returns NULL, after logging, with
 * *error_r a malloc'd description when error_r is not NULL. */
static sy_snapshot *snapshot_build(sy_server *srv, sy_config *cfg, char **error_r)
{
	char msg[512] = "out of memory";
	sy_snapshot *s = calloc(1, sizeof(*s));
	if (!s)
		goto fail_early;
	atomic_init(&s->refs, 1);
	s->cfg = cfg;
	const char *err = NULL;
	if (tls_server_create(cfg, &s->tls_server, &err) != 0) {
		sy_log(SY_LOG_ERROR, "cannot set up inbound TLS", "error", err ? err : "?", NULL);
		snprintf(msg, sizeof(msg), "%s", err ? err : "cannot set up inbound TLS");
		goto fail;
	}
	s->dests = calloc(cfg->ndestinations ? cfg->ndestinations : 1, sizeof(*s->dests));
	if (!s->dests)
		goto fail;
	for (size_t i = 0; i < cfg->ndestinations; i++) {
		sy_destination_config *d = &cfg->destinations[i];
		s->dests[i].cfg = d;
		dest_rt_parse_ip(&s->dests[i]);
		s->dests[i].health = health_add(srv, cfg, d);
		if (!s->dests[i].health)
			goto fail;
		if (has_tls_leg(d)) {
			if (tls_client_create(d, &s->dests[i].tls, &err) != 0) {
				sy_log(SY_LOG_ERROR, "cannot set up backend TLS", "destination",
				       d->id, "error", err ? err : "?", NULL);
				snprintf(msg, sizeof(msg), "%s",
				         err ? err : "cannot set up backend TLS");
				goto fail;
			}
			if (d->tls_allow_invalid_certs)
				sy_log(SY_LOG_WARN,
				       "backend certificate verification is disabled "
				       "(tls_allow_invalid_certs)",
				       "destination", d->id, NULL);
		}
	}
	if (clusters_build(srv, s, msg, sizeof(msg)) != 0)
		goto fail;
	return s;
fail:
	s->cfg = NULL;
	if (s->dests)
		for (size_t i = 0; i < cfg->ndestinations; i++)
			tls_client_free(s->dests[i].tls);
	free(s->dests);
	snapshot_clusters_free(s->clusters, cfg->nclusters);
	tls_server_unref(s->tls_server);
	free(s);
fail_early:
	if (error_r)
		*error_r = strdup(msg);
	return NULL;
}

/* ---- listeners ------------------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
	sy_acceptor *a = server->data;
	if (status < 0) {
		sy_log(SY_LOG_WARN, "accept failed", "listener", a->rt->name, "error",
		       uv_strerror(status), NULL);
		return;
	}
	session_accept(a->w, a);
}

/* Opens one SO_REUSEPORT listening socket. IPv6 sockets are IPv6-only so
 * "0.0.0.0:p" and "[::]:p" can both be bound, as the seeds' examples do. */
static int open_listener(const sy_bind_addr *b, const char **what)
{
	int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*what = "socket";
		return -errno;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
		*what = "SO_REUSEPORT";
		goto fail;
	}
	if (b->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&b->addr, b->addrlen) != 0) {
		*what = "bind";
		goto fail;
	}
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		*what = "listen";
		goto fail;
	}
	return fd;
fail:;
	int e = errno;
	close(fd);
	return -e;
}

/* The listener table entry for a name, created when new (main thread).
 * NULL when the table is full. */
static sy_listener_rt *listener_rt(sy_server *srv, const sy_listener_config *l)
{
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (strcmp(srv->listeners[i].name, l->name) == 0) {
			srv->listeners[i].protocol = l->protocol;
			return &srv->listeners[i];
		}
	if (srv->nlisteners >= SY_MAX_LISTENERS)
		return NULL;
	sy_listener_rt *rt = &srv->listeners[srv->nlisteners];
	if (!(rt->name = strdup(l->name)))
		return NULL;
	rt->slot = srv->nlisteners;
	rt->protocol = l->protocol;
	srv->nlisteners++;
	return rt;
}

static void on_acceptor_closed(uv_handle_t *h)
{
	sy_acceptor *a = h->data;
	sy_worker *w = a->w;
	for (sy_acceptor **pp = &w->acceptors; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	w->nacceptors--;
	free(a);
}

/* Starts accepting on a listening socket `fd` (ownership passes) on w's loop
 * (its thread, or before it runs). Returns 0 or -1 (fd closed). */
static int add_acceptor(sy_worker *w, int fd, sy_listener_rt *rt, size_t listener_index,
                        const sy_bind_addr *b, const char *lname)
{
	sy_acceptor *a = calloc(1, sizeof(*a));
	if (!a) {
		close(fd);
		return -1;
	}
	a->w = w;
	a->listener_index = listener_index;
	a->rt = rt;
	memcpy(&a->addr, &b->addr, b->addrlen);
	socklen_t llen = sizeof(a->local);
	if (getsockname(fd, (struct sockaddr *)&a->local, &llen) == 0)
		a->local_known =
		    (a->local.ss_family == AF_INET || a->local.ss_family == AF_INET6) &&
		    !sy_sockaddr_is_wildcard((const struct sockaddr *)&a->local);
	uv_tcp_init(&w->loop, &a->tcp);
	a->tcp.data = a;
	a->next = w->acceptors;
	w->acceptors = a;
	w->nacceptors++;
	int r = uv_tcp_open(&a->tcp, fd);
	if (r != 0)
		close(fd);
	if (r != 0 || (r = uv_listen((uv_stream_t *)&a->tcp, LISTEN_BACKLOG, on_connection)) != 0) {
		sy_log(SY_LOG_ERROR, "cannot listen", "listener", lname, "address", b->text,
		       "error", uv_strerror(r), NULL);
		a->closed = true;
		uv_close((uv_handle_t *)&a->tcp, on_acceptor_closed);
		return -1;
	}
	return 0;
}

static int bind_worker(sy_server *srv, sy_worker *w, const sy_config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const sy_listener_config *l = &cfg->listeners[i];
		sy_listener_rt *rt = listener_rt(srv, l);
		if (!rt)
			return -1;
		for (size_t j = 0; j < l->nbinds; j++) {
			const char *what = "";
			int fd = open_listener(&l->binds[j], &what);
			if (fd < 0) {
				sy_log(SY_LOG_ERROR, "cannot listen", "listener", l->name,
				       "address", l->binds[j].text, "step", what, "error",
				       strerror(-fd), NULL);
				return -1;
			}
			if (add_acceptor(w, fd, rt, i, &l->binds[j], l->name) != 0)
				return -1;
		}
	}
	return 0;
}

/* ---- workers ----------------------------------------------------------------------- */

static void close_acceptor(sy_acceptor *a)
{
	if (!a->closed) {
		a->closed = true;
		uv_close((uv_handle_t *)&a->tcp, on_acceptor_closed);
	}
}

static void close_acceptors(sy_worker *w)
{
	for (sy_acceptor *a = w->acceptors; a; a = a->next)
		close_acceptor(a);
}

/* ---- tasks posted to workers (server_broadcast) ---------------------------------------------- */

typedef struct sy_broadcast sy_broadcast;

struct sy_task {
	sy_task *next;
	sy_broadcast *b;
};

struct sy_broadcast {
	sy_server *srv;
	long (*fn)(sy_worker *w, void *arg);
	void *arg;
	void (*done)(void *done_arg, long total);
	void *done_arg;
	_Atomic long total;
	_Atomic size_t pending;
	sy_broadcast *next_done;
	sy_task tasks[]; /* one per worker */
};

/* One worker's part is over (ran, or skipped): the last one hands the
 * broadcast to the main loop. */
static void task_finished(sy_task *t, long result)
{
	sy_broadcast *b = t->b;
	atomic_fetch_add(&b->total, result);
	if (atomic_fetch_sub(&b->pending, 1) != 1)
		return;
	sy_server *srv = b->srv;
	pthread_mutex_lock(&srv->done_mu);
	b->next_done = srv->done_head;
	srv->done_head = b;
	/* Sent under the lock: the main loop closes worker_done only after
	 * setting main_closing under it. */
	if (!srv->main_closing)
		uv_async_send(&srv->worker_done);
	pthread_mutex_unlock(&srv->done_mu);
}

/* Runs (or, once the worker is stopping, skips) the tasks posted to w. */
static void run_inbox(sy_worker *w, bool skip)
{
	pthread_mutex_lock(&w->inbox_mu);
	sy_task *t = w->inbox_head;
	w->inbox_head = w->inbox_tail = NULL;
	pthread_mutex_unlock(&w->inbox_mu);
	while (t) {
		sy_task *next = t->next;
		/* A task may end the worker's last session during a drain,
		 * which stops the worker: the rest are then skipped. */
		long r = skip || w->stopping ? 0 : t->b->fn(w, t->b->arg);
		task_finished(t, r);
		t = next;
	}
}

int server_broadcast(sy_server *srv, long (*fn)(sy_worker *w, void *arg), void *arg,
                     void (*done)(void *done_arg, long total), void *done_arg)
{
	if (srv->main_closing)
		return -1;
	sy_broadcast *b = calloc(1, sizeof(*b) + srv->nworkers * sizeof(sy_task));
	if (!b)
		return -1;
	b->srv = srv;
	b->fn = fn;
	b->arg = arg;
	b->done = done;
	b->done_arg = done_arg;
	atomic_init(&b->total, 0);
	/* One extra count held while posting, so the broadcast cannot finish
	 * before every worker has its task. */
	atomic_init(&b->pending, srv->nworkers + 1);
	for (size_t i = 0; i < srv->nworkers; i++) {
		sy_worker *w = &srv->workers[i];
		sy_task *t = &b->tasks[i];
		t->b = b;
		pthread_mutex_lock(&w->inbox_mu);
		bool closed = w->inbox_closed;
		if (!closed) {
			if (w->inbox_tail)
				w->inbox_tail->next = t;
			else
				w->inbox_head = t;
			w->inbox_tail = t;
			uv_async_send(&w->wake);
		}
		pthread_mutex_unlock(&w->inbox_mu);
		if (closed)
			task_finished(t, 0);
	}
	sy_task self = {.b = b};
	task_finished(&self, 0);
	return 0;
}

/* Main loop: calls the done callbacks of finished broadcasts. */
static void run_finished_broadcasts(sy_server *srv)
{
	pthread_mutex_lock(&srv->done_mu);
	sy_broadcast *b = srv->done_head;
	srv->done_head = NULL;
	pthread_mutex_unlock(&srv->done_mu);
	while (b) {
		sy_broadcast *next = b->next_done;
		b->done(b->done_arg, atomic_load(&b->total));
		free(b);
		b = next;
	}
}

/* ---- liveness ---------------------------------------------------------------------------- */

static void on_heartbeat(uv_timer_t *t)
{
	sy_worker *w = t->data;
	atomic_store(&w->heartbeat_ms, sy_now_ms());
}

/* Ends the worker's loop once draining and no session is left. */
static void maybe_stop_worker(sy_worker *w)
{
	if (!w->draining || w->nsessions > 0 || w->stopping)
		return;
	w->stopping = true;
	/* Lookups of sessions that just ended (cancelled) may still be due:
	 * the context drains them, keeping the loop alive until then. */
	router_worker_detach(w);
	/* No task runs from here on: later posts complete as skipped. */
	pthread_mutex_lock(&w->inbox_mu);
	w->inbox_closed = true;
	pthread_mutex_unlock(&w->inbox_mu);
	run_inbox(w, true);
	atomic_store(&w->heartbeat_ms, 0);
	uv_close((uv_handle_t *)&w->heartbeat, NULL);
	uv_close((uv_handle_t *)&w->wake, NULL);
}

/* ---- what the layers below reach the runtime through -------------------------- */

static void hook_session_gone(sy_worker *w)
{
	maybe_stop_worker(w);
}

static sy_snapshot *hook_snapshot(sy_worker *w)
{
	return server_snapshot(w->server);
}

/* The protocol table: the one place that knows every protocol module. */
static const sy_worker_hooks worker_hooks = {
    .snapshot = hook_snapshot,
    .session_gone = hook_session_gone,
    .start =
        {
            [SY_PROTO_IMAP] = interactive_start,
            [SY_PROTO_POP3] = interactive_start,
            [SY_PROTO_MANAGESIEVE] = interactive_start,
            [SY_PROTO_SUBMISSION] = interactive_start,
            [SY_PROTO_SMTP] = passthrough_start,
            [SY_PROTO_LMTP] = passthrough_start,
            [SY_PROTO_HTTP] = http_start,
        },
};

static sy_snapshot *host_snapshot(void *arg)
{
	return server_snapshot(arg);
}

static struct sy_router *host_router(void *arg)
{
	sy_server *srv = arg;
	return srv->router;
}

static void host_state(void *arg, sy_admin_state *out)
{
	sy_server *srv = arg;
	out->listeners_bound = atomic_load(&srv->listeners_bound);
	out->draining = atomic_load(&srv->draining);
	out->nworkers = srv->nworkers;
	out->active_connections = 0;
	for (size_t i = 0; i < srv->nlisteners; i++)
		out->active_connections += atomic_load(&srv->listeners[i].active);
}

static int host_liveness(void *arg, uint64_t stale_ms, char *buf, size_t len)
{
	sy_server *srv = arg;
	uint64_t now = sy_now_ms();
	for (size_t i = 0; i < srv->nworkers; i++) {
		uint64_t hb = atomic_load(&srv->workers[i].heartbeat_ms);
		if (hb != 0 && now > hb && now - hb > stale_ms) {
			snprintf(buf, len, "worker %zu event loop unresponsive for %llu ms", i,
			         (unsigned long long)(now - hb));
			return -1;
		}
	}
	return 0;
}

/* The scrape: the state this layer owns, handed to the metrics module as
 * plain values (metrics.h, sy_metrics_view). */
static char *host_metrics(void *arg, size_t *len)
{
	sy_server *srv = arg;
	sy_snapshot *snap = server_snapshot(srv);
	const sy_config *cfg = snap->cfg;
	sy_metrics_listener *ls = calloc(srv->nlisteners ? srv->nlisteners : 1, sizeof(*ls));
	sy_metrics_destination *ds =
	    calloc(cfg->ndestinations ? cfg->ndestinations : 1, sizeof(*ds));
	char *text = NULL;
	if (ls && ds) {
		sy_metrics_view v = {
		    .nworkers = srv->nworkers,
		    .draining = atomic_load(&srv->draining),
		    .listeners = ls,
		    .nlisteners = srv->nlisteners,
		    .destinations = ds,
		    .ndestinations = cfg->ndestinations,
		};
		for (size_t i = 0; i < srv->nlisteners; i++)
			ls[i] =
			    (sy_metrics_listener){.name = srv->listeners[i].name,
			                          .protocol = srv->listeners[i].protocol,
			                          .active = atomic_load(&srv->listeners[i].active)};
		uint64_t now = sy_now_ms();
		for (size_t i = 0; i < cfg->ndestinations; i++) {
			sy_dest_rt *d = &snap->dests[i];
			sy_health_state st =
			    d->health ? health_get(d->health, now) : (sy_health_state){0};
			ds[i] = (sy_metrics_destination){.id = d->cfg->id,
			                                 .down = st.down,
			                                 .consecutive_failures =
			                                     st.consecutive_failures};
		}
		for (size_t i = 0; i < cfg->nlisteners; i++)
			v.protocol_in_use[cfg->listeners[i].protocol] = true;
		if (srv->router) {
			sy_route_stats st = {0};
			route_stats(srv->router, &st);
			v.has_cache = true;
			v.cache_hits = st.hits;
			v.cache_misses = st.misses;
			v.cache_entries = st.entries;
		}
		sy_fleet_stats fs;
		route_fleet_stats(srv->router, &fs);
		v.fleet = (sy_metrics_fleet){.active = fs.active,
		                             .subscribed = fs.subscribed,
		                             .resubscribes = fs.resubscribes,
		                             .seconds_since_event = fs.seconds_since_event};
		for (int t = 0; t < 3; t++) {
			v.fleet.published[t] = fs.published[t];
			v.fleet.received[t] = fs.received[t];
		}
		size_t nd = discovery_count(srv);
		sy_metrics_discovery *disc = nd ? calloc(nd, sizeof(*disc)) : NULL;
		if (disc) {
			v.discovery = disc;
			v.ndiscovery = discovery_metrics(srv, disc, nd);
		}
		text = metrics_render(&v, len);
		free(disc);
	}
	free(ls);
	free(ds);
	snapshot_unref(snap);
	return text;
}

static bool host_discovery(void *arg, char *detail, size_t len)
{
	return discovery_ready(arg, detail, len);
}

static const char *host_cluster_state(void *arg, const char *id)
{
	return discovery_state(arg, id);
}

static int host_broadcast(void *arg, long (*fn)(sy_worker *w, void *fn_arg), void *fn_arg,
                          void (*done)(void *done_arg, long total), void *done_arg)
{
	return server_broadcast(arg, fn, fn_arg, done, done_arg);
}

static int host_reload(void *arg, const char *trigger, char **error_r)
{
	return server_reload(arg, trigger, error_r);
}

static void on_wake(uv_async_t *h)
{
	sy_worker *w = h->data;
	sy_server *srv = w->server;
	if (!w->stopping)
		run_inbox(w, false);
	if (atomic_load(&srv->draining) && !w->draining) {
		w->draining = true;
		close_acceptors(w);
		sy_session *next;
		for (sy_session *s = w->sessions; s; s = next) {
			next = s->next;
			if (s->state == SS_PROTOCOL && s->proto_shutdown)
				s->proto_shutdown(s);
			else if (s->state < SS_PROTOCOL)
				session_close(s, "shutting down");
		}
	}
	if (atomic_load(&srv->force_close)) {
		for (sy_session *s = w->sessions; s; s = s->next)
			session_close(s, "shutdown_grace passed");
	}
	maybe_stop_worker(w);
}

static void worker_main(void *arg)
{
	sy_worker *w = arg;
	metrics_thread_attach(w->index);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	/* Under done_mu: the main loop closes worker_done only after setting
	 * main_closing under it, which it does once it has seen the count
	 * reach 0, so this send always reaches an open handle. */
	sy_server *srv = w->server;
	pthread_mutex_lock(&srv->done_mu);
	atomic_fetch_sub(&srv->workers_running, 1);
	if (!srv->main_closing)
		uv_async_send(&srv->worker_done);
	pthread_mutex_unlock(&srv->done_mu);
}

/* ---- main thread: signals and drain ---------------------------------------------------- */

static void wake_workers(sy_server *srv)
{
	for (size_t i = 0; i < srv->nworkers; i++)
		uv_async_send(&srv->workers[i].wake);
}

static void on_grace(uv_timer_t *t)
{
	sy_server *srv = t->data;
	size_t left = 0;
	for (size_t i = 0; i < srv->nworkers; i++)
		left += srv->workers[i].nsessions; /* approximate: read across threads for a log */
	char n[24];
	snprintf(n, sizeof(n), "%zu", left);
	sy_log(SY_LOG_WARN, "shutdown_grace passed: closing remaining sessions", "sessions", n,
	       NULL);
	atomic_store(&srv->force_close, true);
	wake_workers(srv);
}

static void on_signal(uv_signal_t *h, int signum)
{
	sy_server *srv = h->data;
	if (atomic_load(&srv->draining)) {
		if (signum == SIGINT) {
			atomic_store(&srv->force_close, true);
			wake_workers(srv);
		}
		return;
	}
	sy_log(SY_LOG_INFO, "shutting down: no longer accepting, draining sessions", "signal",
	       signum == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
	atomic_store(&srv->draining, true);
	sy_snapshot *snap = server_snapshot(srv);
	uv_timer_start(&srv->grace, on_grace, snap->cfg->server.shutdown_grace_ms, 0);
	snapshot_unref(snap);
	wake_workers(srv);
}

static void on_sighup(uv_signal_t *h, int signum)
{
	(void)signum;
	char *err = NULL;
	server_reload(h->data, "SIGHUP", &err);
	free(err);
}

/* Closes the main loop's handles (the loop then ends). */
static void close_main(sy_server *srv)
{
	admin_stop(srv->admin);
	srv->admin = NULL;
	reload_watch_stop(srv);
	fleet_rt_stop(srv);
	discovery_stop_all(srv);
	pthread_mutex_lock(&srv->done_mu);
	srv->main_closing = true;
	pthread_mutex_unlock(&srv->done_mu);
	run_finished_broadcasts(srv);
	uv_close((uv_handle_t *)&srv->sighup, NULL);
	uv_close((uv_handle_t *)&srv->sigterm, NULL);
	uv_close((uv_handle_t *)&srv->sigint, NULL);
	uv_close((uv_handle_t *)&srv->grace, NULL);
	uv_close((uv_handle_t *)&srv->worker_done, NULL);
}

/* A worker ended, or broadcasts finished. */
static void on_worker_done(uv_async_t *h)
{
	sy_server *srv = h->data;
	run_finished_broadcasts(srv);
	if (atomic_load(&srv->workers_running) > 0 || srv->main_closing)
		return;
	close_main(srv);
}

static unsigned worker_count(const sy_config *cfg)
{
	if (cfg->server.threads > 0)
		return cfg->server.threads;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

int server_run(sy_config *cfg)
{
	signal(SIGPIPE, SIG_IGN);
	sy_server *srv = calloc(1, sizeof(*srv));
	if (!srv) {
		config_free(cfg);
		return -1;
	}
	int rc = -1;
	session_seed_ids();
	pthread_mutex_init(&srv->done_mu, NULL);
	/* Listener entries are added by bind_worker (and reloads); health
	 * entries by snapshot_build. */
	srv->listeners = calloc(SY_MAX_LISTENERS, sizeof(*srv->listeners));
	srv->config_path = cfg->path ? strdup(cfg->path) : NULL;
	if (!srv->listeners) {
		config_free(cfg);
		goto out;
	}

	sy_snapshot *snap = snapshot_build(srv, cfg, NULL);
	if (!snap) {
		config_free(cfg);
		goto out;
	}
	atomic_store(&srv->current, snap);

	srv->nworkers = worker_count(cfg);
	if (metrics_init((unsigned)srv->nworkers) != 0) {
		snapshot_unref(snap);
		goto out;
	}
	const char *rerr = NULL;
	srv->router = router_create(snap, (unsigned)srv->nworkers, &rerr);
	if (!srv->router) {
		sy_log(SY_LOG_ERROR, "cannot set up routing", "error", rerr ? rerr : "?", NULL);
		snapshot_unref(snap);
		goto out;
	}

	uv_loop_t main_loop;
	uv_loop_init(&main_loop);
	srv->main_loop = &main_loop;
	uv_async_init(&main_loop, &srv->worker_done, on_worker_done);
	srv->worker_done.data = srv;
	uv_signal_init(&main_loop, &srv->sigterm);
	uv_signal_init(&main_loop, &srv->sigint);
	uv_signal_init(&main_loop, &srv->sighup);
	uv_timer_init(&main_loop, &srv->grace);
	srv->sigterm.data = srv->sigint.data = srv->sighup.data = srv->grace.data = srv;
	discovery_apply(srv, snap);

	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	size_t inited = 0;
	bool ok = true;
	for (size_t i = 0; i < srv->nworkers && ok; i++) {
		sy_worker *w = &srv->workers[i];
		w->index = (int)i;
		w->server = srv;
		w->hooks = &worker_hooks;
		uv_loop_init(&w->loop);
		pool_init(&w->pool, POOL_MAX_FREE);
		uv_async_init(&w->loop, &w->wake, on_wake);
		w->wake.data = w;
		pthread_mutex_init(&w->inbox_mu, NULL);
		uv_timer_init(&w->loop, &w->heartbeat);
		w->heartbeat.data = w;
		atomic_store(&w->heartbeat_ms, sy_now_ms());
		uv_timer_start(&w->heartbeat, on_heartbeat, 1000, 1000);
		inited++;
		ok = bind_worker(srv, w, cfg) == 0;
		if (ok && router_worker_attach(srv->router, w, &rerr) != 0) {
			sy_log(SY_LOG_ERROR, "cannot set up routing", "error", rerr ? rerr : "?",
			       NULL);
			ok = false;
		}
	}
	/* The side port and the config watch run on the main loop; a port
	 * that cannot be bound fails the startup like a listener. */
	const char *aerr = NULL;
	sy_admin_host host = {
	    .arg = srv,
	    .loop = srv->main_loop,
	    .snapshot = host_snapshot,
	    .router = host_router,
	    .state = host_state,
	    .liveness = host_liveness,
	    .metrics = host_metrics,
	    .broadcast = host_broadcast,
	    .reload = host_reload,
	    .discovery = host_discovery,
	    .cluster_state = host_cluster_state,
	};
	if (ok && admin_start(&host, &srv->admin, &aerr) != 0) {
		sy_log(SY_LOG_ERROR, "cannot start the admin port", "error", aerr ? aerr : "?",
		       NULL);
		ok = false;
	}
	if (!ok) {
		/* Startup failed before any thread ran: close everything on the
		 * loops from here. */
		for (size_t i = 0; i < inited; i++) {
			sy_worker *w = &srv->workers[i];
			close_acceptors(w);
			router_worker_detach(w);
			uv_close((uv_handle_t *)&w->heartbeat, NULL);
			uv_close((uv_handle_t *)&w->wake, NULL);
			uv_run(&w->loop, UV_RUN_DEFAULT);
		}
		close_main(srv);
		uv_run(&main_loop, UV_RUN_DEFAULT);
		goto cleanup;
	}
	reload_watch_start(srv);
	fleet_rt_start(srv);
	atomic_store(&srv->listeners_bound, true);

	uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
	uv_signal_start(&srv->sigint, on_signal, SIGINT);
	uv_signal_start(&srv->sighup, on_sighup, SIGHUP);
	atomic_store(&srv->workers_running, srv->nworkers);
	for (size_t i = 0; i < srv->nworkers; i++)
		uv_thread_create(&srv->workers[i].thread, worker_main, &srv->workers[i]);

	char nl[16], nw[16];
	snprintf(nl, sizeof(nl), "%zu", cfg->nlisteners);
	snprintf(nw, sizeof(nw), "%zu", srv->nworkers);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nbinds; j++)
			sy_log(SY_LOG_INFO, "listening", "listener", cfg->listeners[i].name,
			       "protocol", sy_proto_name(cfg->listeners[i].protocol), "address",
			       cfg->listeners[i].binds[j].text, "tls",
			       sy_tls_mode_name(cfg->listeners[i].tls), NULL);
	sy_log(SY_LOG_INFO, "ready", "listeners", nl, "workers", nw, NULL);

	uv_run(&main_loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < srv->nworkers; i++)
		uv_thread_join(&srv->workers[i].thread);
	sy_log(SY_LOG_INFO, "stopped", NULL);
	rc = 0;

cleanup:
	for (size_t i = 0; i < inited; i++) {
		sy_worker *w = &srv->workers[i];
		uv_run(&w->loop, UV_RUN_NOWAIT);
		uv_loop_close(&w->loop);
		pool_destroy(&w->pool);
		pthread_mutex_destroy(&w->inbox_mu);
	}
	uv_loop_close(&main_loop);
	free(srv->workers);
	/* The last reference: every context has closed with its loop. */
	router_unref(srv->router);
	snapshot_unref(atomic_load(&srv->current));
out:
	for (size_t i = 0; i < srv->nhealth; i++) {
		free(srv->health[i]->id);
		health_destroy(&srv->health[i]->health);
		free(srv->health[i]);
	}
	free(srv->health);
	free(srv->config_path);
	pthread_mutex_destroy(&srv->done_mu);
	for (size_t i = 0; i < srv->nlisteners; i++)
		free(srv->listeners[i].name);
	free(srv->listeners);
	free(srv);
	metrics_shutdown();
	return rc;
}

/* ---- reload ------------------------------------------------------------------------------- */

const char *server_config_path(sy_server *srv)
{
	return srv->config_path;
}

/* PROXY_LOG / RUST_LOG override server.log_level on reload as at startup
 * (main.c); an unreadable filter was reported at startup already. */
static void apply_log_env(sy_config *cfg)
{
	sy_log_level lv;
	const char *var = NULL;
	if (log_level_from_env(&lv, &var) > 0)
		cfg->server.log_level = lv;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Does the running router serve `b` as it serves `a`? (Everything but the
 * mapping file's content, which route_reload_file re-reads.) When not, a
 * reload builds a new router. */
static bool mapping_same(const sy_mapping_config *a, const sy_mapping_config *b)
{
	return a->source == b->source && a->normalize == b->normalize &&
	       a->positive_ttl_ms == b->positive_ttl_ms &&
	       a->negative_ttl_ms == b->negative_ttl_ms &&
	       a->cache_max_entries == b->cache_max_entries &&
	       a->lookup_timeout_ms == b->lookup_timeout_ms &&
	       a->on_store_error == b->on_store_error && str_eq(a->file.path, b->file.path) &&
	       str_eq(a->redis.url, b->redis.url) &&
	       str_eq(a->redis.key_prefix, b->redis.key_prefix) &&
	       a->redis.pool_size == b->redis.pool_size &&
	       str_eq(a->redis.events_channel, b->redis.events_channel) &&
	       a->redis.watch_keyspace == b->redis.watch_keyspace &&
	       str_eq(a->sql.events_channel, b->sql.events_channel) &&
	       str_eq(a->sql.url, b->sql.url) && str_eq(a->sql.query, b->sql.query) &&
	       str_eq(a->sql.upsert_query, b->sql.upsert_query) &&
	       str_eq(a->sql.delete_query, b->sql.delete_query) &&
	       a->sql.pool_size == b->sql.pool_size;
}

static bool same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

/* Is (listener name, address) bound under `cfg`? */
static bool cfg_binds(const sy_config *cfg, const char *name, const struct sockaddr_storage *addr)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (strcmp(cfg->listeners[i].name, name) != 0)
			continue;
		for (size_t j = 0; j < cfg->listeners[i].nbinds; j++)
			if (same_sockaddr(&cfg->listeners[i].binds[j].addr, addr))
				return true;
	}
	return false;
}

/* The listener changes of one reload, applied by every worker. */
typedef struct listener_plan {
	sy_snapshot *snap; /* the new snapshot (a reference): names, index hints */
	size_t nworkers;
	struct plan_remove {
		sy_listener_rt *rt;
		struct sockaddr_storage addr;
	} * removes;
	size_t nremoves;
	struct plan_add {
		sy_listener_rt *rt;
		size_t listener_index, bind_index;
		int *fds; /* one listening socket per worker; -1 once taken */
	} * adds;
	size_t nadds;
} listener_plan;

static void plan_free(listener_plan *p)
{
	for (size_t i = 0; i < p->nadds; i++) {
		for (size_t k = 0; p->adds[i].fds && k < p->nworkers; k++)
			if (p->adds[i].fds[k] >= 0)
				close(p->adds[i].fds[k]);
		free(p->adds[i].fds);
	}
	free(p->adds);
	free(p->removes);
	if (p->snap)
		snapshot_unref(p->snap);
	free(p);
}

/* Worker side: close removed acceptors, open added ones, refresh hints. */
static long plan_apply(sy_worker *w, void *arg)
{
	listener_plan *p = arg;
	const sy_config *cfg = p->snap->cfg;
	for (sy_acceptor *a = w->acceptors; a; a = a->next) {
		if (a->closed)
			continue;
		for (size_t i = 0; i < p->nremoves; i++)
			if (p->removes[i].rt == a->rt &&
			    same_sockaddr(&p->removes[i].addr, &a->addr))
				close_acceptor(a);
	}
	if (!w->draining) {
		for (size_t i = 0; i < p->nadds; i++) {
			struct plan_add *ad = &p->adds[i];
			int fd = ad->fds[w->index];
			ad->fds[w->index] = -1;
			const sy_listener_config *l = &cfg->listeners[ad->listener_index];
			add_acceptor(w, fd, ad->rt, ad->listener_index, &l->binds[ad->bind_index],
			             l->name);
		}
	}
	for (sy_acceptor *a = w->acceptors; a; a = a->next)
		for (size_t i = 0; i < cfg->nlisteners; i++)
			if (strcmp(cfg->listeners[i].name, a->rt->name) == 0)
				a->listener_index = i;
	return 0;
}

static void plan_done(void *arg, long total)
{
	(void)total;
	plan_free(arg);
}

/* Builds the plan for going from `old` to `ncfg`, opening the new sockets.
 * Returns NULL with *error_r (malloc'd) when a socket cannot be opened or
 * the listener table is full; nothing is left open then. */
static listener_plan *plan_build(sy_server *srv, const sy_config *old, const sy_config *ncfg,
                                 char **error_r)
{
	listener_plan *p = calloc(1, sizeof(*p));
	size_t nb_old = 0, nb_new = 0;
	for (size_t i = 0; i < old->nlisteners; i++)
		nb_old += old->listeners[i].nbinds;
	for (size_t i = 0; i < ncfg->nlisteners; i++)
		nb_new += ncfg->listeners[i].nbinds;
	if (!p || !(p->removes = calloc(nb_old + 1, sizeof(*p->removes))) ||
	    !(p->adds = calloc(nb_new + 1, sizeof(*p->adds))))
		goto oom;
	p->nworkers = srv->nworkers;
	for (size_t i = 0; i < old->nlisteners; i++) {
		const sy_listener_config *l = &old->listeners[i];
		for (size_t j = 0; j < l->nbinds; j++) {
			if (cfg_binds(ncfg, l->name, &l->binds[j].addr))
				continue;
			sy_listener_rt *rt = listener_rt(srv, l);
			if (!rt)
				goto oom;
			/* listener_rt() refreshed the protocol from the old
			 * config; the new one (if any) below wins. */
			p->removes[p->nremoves].rt = rt;
			p->removes[p->nremoves].addr = l->binds[j].addr;
			p->nremoves++;
		}
	}
	for (size_t i = 0; i < ncfg->nlisteners; i++) {
		const sy_listener_config *l = &ncfg->listeners[i];
		sy_listener_rt *rt = listener_rt(srv, l);
		if (!rt) {
			char msg[200];
			snprintf(msg, sizeof(msg),
			         "listener.%s: more than %d listener names in this process's "
			         "life; restart to add more",
			         l->name, SY_MAX_LISTENERS);
			*error_r = strdup(msg);
			plan_free(p);
			return NULL;
		}
		for (size_t j = 0; j < l->nbinds; j++) {
			if (cfg_binds(old, l->name, &l->binds[j].addr))
				continue;
			struct plan_add *ad = &p->adds[p->nadds++];
			ad->rt = rt;
			ad->listener_index = i;
			ad->bind_index = j;
			if (!(ad->fds = malloc(srv->nworkers * sizeof(int))))
				goto oom;
			for (size_t k = 0; k < srv->nworkers; k++)
				ad->fds[k] = -1;
			for (size_t k = 0; k < srv->nworkers; k++) {
				const char *what = "";
				int fd = open_listener(&l->binds[j], &what);
				if (fd < 0) {
					char msg[300];
					snprintf(msg, sizeof(msg),
					         "listener.%s.bind: cannot %s %s: %s", l->name,
					         what, l->binds[j].text, strerror(-fd));
					*error_r = strdup(msg);
					plan_free(p);
					return NULL;
				}
				ad->fds[k] = fd;
			}
		}
	}
	return p;
oom:
	if (p)
		plan_free(p);
	*error_r = strdup("out of memory");
	return NULL;
}

static const char *source_name(sy_mapping_source s)
{
	switch (s) {
	case SY_MAP_FILE:
		return "file";
	case SY_MAP_REDIS:
		return "redis";
	case SY_MAP_SQL:
		return "sql";
	default:
		return "none";
	}
}

/* Worker side of a router switch: a context of the new router becomes the
 * worker's; its previous one drains (lookups in flight finish on the old
 * router). Returns 1 when the worker could not switch. */
static long router_attach_on_worker(sy_worker *w, void *arg)
{
	const char *err = NULL;
	if (router_worker_attach(arg, w, &err) == 0)
		return 0;
	char n[16];
	snprintf(n, sizeof(n), "%d", w->index);
	sy_log(SY_LOG_ERROR,
	       "cannot switch a worker to the new mapping source; it keeps the previous one",
	       "worker", n, "error", err ? err : "?", NULL);
	return 1;
}

static void router_attach_done(void *arg, long failures)
{
	/* Failures were logged one by one. */
	if (failures == 0)
		sy_log(SY_LOG_INFO, "every worker routes through the new router", NULL);
	router_unref(arg);
}

/* Publishes router `nr` (the caller's reference moves to srv->router) and
 * its main-loop context `nmain`: the admin port switches at once, every
 * worker on its own loop; the previous router is freed once its last
 * context has drained. Main thread. */
static void switch_router(sy_server *srv, sy_router *nr, sy_route_ctx *nmain)
{
	sy_router *prev = srv->router;
	fleet_rt_stop(srv);
	srv->router = nr;
	fleet_rt_start(srv);
	admin_route_ctx_set(srv->admin, nmain);
	/* The broadcast holds its own reference until every worker has
	 * run its part (a later reload may replace nr meanwhile). */
	if (server_broadcast(srv, router_attach_on_worker, nr, router_attach_done,
	                     router_ref(nr)) != 0) {
		router_unref(nr);
		sy_log(SY_LOG_ERROR,
		       "cannot switch the workers to the new mapping source (out of memory); "
		       "they keep the previous one",
		       NULL);
	}
	router_unref(prev);
	const sy_mapping_config *m = &atomic_load(&srv->current)->cfg->mapping;
	sy_log(SY_LOG_INFO, "mapping settings changed: routing through a new router (empty cache)",
	       "source", source_name(m->source), NULL);
}

static char *join_errors(const sy_errors *errs)
{
	size_t n = 1;
	for (size_t i = 0; i < errs->len; i++)
		n += strlen(errs->msgs[i]) + 1;
	char *out = malloc(n), *p = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < errs->len; i++)
		p += sprintf(p, "%s%s", i ? "\n" : "", errs->msgs[i]);
	*p = '\0';
	return out;
}

static int reload_failed(const char *trigger, char *msg, char **error_r)
{
	if (!msg)
		msg = strdup("out of memory");
	/* One log line per problem: each names its key. */
	char *save = NULL;
	char *copy = msg ? strdup(msg) : NULL;
	for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save))
		sy_log(SY_LOG_ERROR,
		       "configuration reload failed: keeping the running configuration", "trigger",
		       trigger, "error", line, NULL);
	free(copy);
	metrics_config_reload(false);
	*error_r = msg;
	return -1;
}

int server_reload(sy_server *srv, const char *trigger, char **error_r)
{
	*error_r = NULL;
	if (atomic_load(&srv->draining)) {
		*error_r = strdup("shutting down");
		return -1;
	}
	if (!srv->config_path)
		return reload_failed(trigger, strdup("no configuration file to reload"), error_r);
	sy_config *cfg = NULL;
	sy_errors errs = {0};
	if (config_load_file(srv->config_path, &cfg, &errs) != 0) {
		char *msg = join_errors(&errs);
		sy_errors_free(&errs);
		return reload_failed(trigger, msg, error_r);
	}
	sy_errors_free(&errs);
	apply_log_env(cfg);
	for (size_t i = 0; i < cfg->warnings.len; i++)
		sy_log(SY_LOG_WARN, "configuration warning", "detail", cfg->warnings.msgs[i], NULL);

	sy_snapshot *old = server_snapshot(srv);
	const sy_config *ocfg = old->cfg;
	if (cfg->server.threads != ocfg->server.threads)
		sy_log(SY_LOG_WARN, "server.threads changed: takes effect at restart", NULL);
	if (cfg->admin.enabled != ocfg->admin.enabled || cfg->admin.tls != ocfg->admin.tls ||
	    !str_eq(cfg->admin.bind.text, ocfg->admin.bind.text))
		sy_log(SY_LOG_WARN,
		       "admin.enabled, admin.bind and admin.tls changes take effect at restart "
		       "(the token and lockout settings apply now)",
		       NULL);
	bool mapping_changed = !mapping_same(&ocfg->mapping, &cfg->mapping);

	char *msg = NULL;
	sy_snapshot *ns = snapshot_build(srv, cfg, &msg);
	if (!ns) {
		config_free(cfg);
		snapshot_unref(old);
		return reload_failed(trigger, msg, error_r);
	}
	/* New sockets before anything is swapped: a port in use fails the
	 * whole reload. */
	listener_plan *plan = plan_build(srv, ocfg, ns->cfg, &msg);
	if (!plan) {
		snapshot_unref(ns);
		snapshot_unref(old);
		return reload_failed(trigger, msg, error_r);
	}
	/* Changed [mapping] settings: a new router (its mapping file loaded,
	 * its cache empty), and its context on the main loop for the admin
	 * port, whose store is created here: a store configuration that
	 * cannot be used fails the reload before anything is published. */
	sy_router *nrouter = NULL;
	sy_route_ctx *nmain = NULL;
	if (mapping_changed) {
		const char *rerr = NULL;
		nrouter = router_create(ns, (unsigned)srv->nworkers, &rerr);
		if (nrouter)
			nmain = router_ctx_create(nrouter, srv->main_loop, 1, &rerr);
		if (!nmain) {
			router_unref(nrouter);
			plan_free(plan);
			snapshot_unref(ns);
			snapshot_unref(old);
			if (!rerr)
				rerr = "cannot set up the mapping source";
			/* Store errors name their key already. */
			char m[300];
			snprintf(m, sizeof(m), "%s%s",
			         strncmp(rerr, "mapping", 7) == 0 ? "" : "mapping: ", rerr);
			return reload_failed(trigger, strdup(m), error_r);
		}
	}
	/* Health settings apply to existing entries too. */
	for (size_t i = 0; i < ns->cfg->ndestinations; i++)
		health_configure(ns->dests[i].health, ns->cfg->server.host_down_threshold,
		                 ns->cfg->server.host_down_cooldown_ms);
	for (size_t i = 0; ns->clusters && i < ns->cfg->nclusters; i++)
		for (size_t k = 0; k < ns->clusters[i].set->n; k++)
			health_configure(ns->clusters[i].set->nodes[k].health,
			                 ns->cfg->server.host_down_threshold,
			                 ns->cfg->server.host_down_cooldown_ms);
	/* The mapping file last: it is the one step that changes state outside
	 * the snapshot, so nothing may fail after it. */
	if (!mapping_changed && ns->cfg->mapping.source == SY_MAP_FILE && srv->router &&
	    route_reload_file(srv->router, ns, &msg) != 0) {
		plan_free(plan);
		snapshot_unref(ns);
		snapshot_unref(old);
		return reload_failed(trigger, msg, error_r);
	}

	/* Discovered clusters get their last known members in the new
	 * snapshot before anyone can route through it. */
	discovery_apply(srv, ns);

	/* Publish. The main thread's reference moves to the new snapshot;
	 * sessions and in-flight accepts keep theirs to the old one. */
	sy_snapshot *prev = atomic_exchange(&srv->current, ns);
	snapshot_unref(prev);
	log_set_level(ns->cfg->server.log_level);
	log_set_format(ns->cfg->server.log_format);
	if (nrouter)
		switch_router(srv, nrouter, nmain);

	size_t added = plan->nadds, removed = plan->nremoves;
	plan->snap = snapshot_ref(ns);
	if (plan->nadds == 0 && plan->nremoves == 0) {
		/* Only index hints could change; session_accept copes by name. */
		plan_free(plan);
	} else if (server_broadcast(srv, plan_apply, plan, plan_done, plan) != 0) {
		plan_free(plan);
	}
	for (size_t i = 0; i < ns->cfg->nlisteners; i++)
		for (size_t j = 0; j < ns->cfg->listeners[i].nbinds; j++)
			if (!cfg_binds(ocfg, ns->cfg->listeners[i].name,
			               &ns->cfg->listeners[i].binds[j].addr))
				sy_log(SY_LOG_INFO, "listening", "listener",
				       ns->cfg->listeners[i].name, "protocol",
				       sy_proto_name(ns->cfg->listeners[i].protocol), "address",
				       ns->cfg->listeners[i].binds[j].text, "tls",
				       sy_tls_mode_name(ns->cfg->listeners[i].tls), NULL);
	snapshot_unref(old);

	metrics_config_reload(true);
	reload_watch_loaded(srv);
	char na[16], nr[16], nd[16];
	snprintf(na, sizeof(na), "%zu", added);
	snprintf(nr, sizeof(nr), "%zu", removed);
	snprintf(nd, sizeof(nd), "%zu", ns->cfg->ndestinations);
	sy_log(SY_LOG_INFO, "configuration reloaded", "trigger", trigger, "destinations", nd,
	       "binds_added", na, "binds_removed", nr, NULL);
	return 0;
}
