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
#include <time.h>
#include <unistd.h>

#include "switchyard/interactive.h"
#include "switchyard/log.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/runtime.h"
#include "switchyard/session.h"

#define LISTEN_BACKLOG 511
#define POOL_MAX_FREE  64

uint64_t sy_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- snapshots ------------------------------------------------------------------ */

sy_snapshot *snapshot_ref(sy_snapshot *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void snapshot_unref(sy_snapshot *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (size_t i = 0; i < s->cfg->ndestinations; i++)
		tls_client_free(s->dests[i].tls);
	free(s->dests);
	tls_server_unref(s->tls_server);
	config_free(s->cfg);
	free(s);
}

sy_dest_rt *snapshot_dest(sy_snapshot *s, const char *id)
{
	if (!id)
		return NULL;
	for (size_t i = 0; i < s->cfg->ndestinations; i++)
		if (strcmp(s->cfg->destinations[i].id, id) == 0)
			return &s->dests[i];
	return NULL;
}

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
		if (strcmp(srv->health[i].id, d->id) == 0)
			return &srv->health[i].health;
	return NULL;
}

static bool has_tls_leg(const sy_destination_config *d)
{
	for (int p = 0; p < SY_PROTO_COUNT; p++)
		if (d->proto[p].declared && d->proto[p].tls != SY_TLS_PLAIN)
			return true;
	return false;
}

static sy_snapshot *snapshot_build(sy_server *srv, sy_config *cfg)
{
	sy_snapshot *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	s->cfg = cfg;
	const char *err = NULL;
	if (tls_server_create(cfg, &s->tls_server, &err) != 0) {
		sy_log(SY_LOG_ERROR, "cannot set up inbound TLS", "error", err ? err : "?", NULL);
		goto fail;
	}
	s->dests = calloc(cfg->ndestinations ? cfg->ndestinations : 1, sizeof(*s->dests));
	if (!s->dests)
		goto fail;
	for (size_t i = 0; i < cfg->ndestinations; i++) {
		sy_destination_config *d = &cfg->destinations[i];
		s->dests[i].cfg = d;
		s->dests[i].health = health_for(srv, d);
		if (has_tls_leg(d)) {
			if (tls_client_create(d, &s->dests[i].tls, &err) != 0) {
				sy_log(SY_LOG_ERROR, "cannot set up backend TLS", "destination",
				       d->id, "error", err ? err : "?", NULL);
				goto fail;
			}
			if (d->tls_allow_invalid_certs)
				sy_log(SY_LOG_WARN,
				       "backend certificate verification is disabled "
				       "(tls_allow_invalid_certs)",
				       "destination", d->id, NULL);
		}
	}
	return s;
fail:
	s->cfg = NULL;
	if (s->dests)
		for (size_t i = 0; i < cfg->ndestinations; i++)
			tls_client_free(s->dests[i].tls);
	free(s->dests);
	tls_server_unref(s->tls_server);
	free(s);
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

static int bind_worker(sy_server *srv, sy_worker *w, const sy_config *cfg)
{
	size_t n = 0;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		n += cfg->listeners[i].nbinds;
	w->acceptors = calloc(n ? n : 1, sizeof(*w->acceptors));
	if (!w->acceptors)
		return -1;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const sy_listener_config *l = &cfg->listeners[i];
		for (size_t j = 0; j < l->nbinds; j++) {
			const char *what = "";
			int fd = open_listener(&l->binds[j], &what);
			if (fd < 0) {
				sy_log(SY_LOG_ERROR, "cannot listen", "listener", l->name,
				       "address", l->binds[j].text, "step", what, "error",
				       strerror(-fd), NULL);
				return -1;
			}
			sy_acceptor *a = &w->acceptors[w->nacceptors++];
			a->w = w;
			a->listener_index = i;
			a->rt = &srv->listeners[i];
			uv_tcp_init(&w->loop, &a->tcp);
			a->tcp.data = a;
			if (uv_tcp_open(&a->tcp, fd) != 0 ||
			    uv_listen((uv_stream_t *)&a->tcp, LISTEN_BACKLOG, on_connection) != 0) {
				sy_log(SY_LOG_ERROR, "cannot listen", "listener", l->name,
				       "address", l->binds[j].text, NULL);
				return -1;
			}
		}
	}
	return 0;
}

/* ---- workers ----------------------------------------------------------------------- */

static void close_acceptors(sy_worker *w)
{
	for (size_t i = 0; i < w->nacceptors; i++) {
		if (!w->acceptors[i].closed) {
			w->acceptors[i].closed = true;
			uv_close((uv_handle_t *)&w->acceptors[i].tcp, NULL);
		}
	}
}

/* Ends the worker's loop once draining and no session is left. */
static void maybe_stop_worker(sy_worker *w)
{
	if (!w->draining || w->nsessions > 0 || w->stopping)
		return;
	w->stopping = true;
	uv_close((uv_handle_t *)&w->wake, NULL);
}

void worker_session_gone(sy_worker *w)
{
	maybe_stop_worker(w);
}

static void on_wake(uv_async_t *h)
{
	sy_worker *w = h->data;
	sy_server *srv = w->server;
	if (atomic_load(&srv->draining) && !w->draining) {
		w->draining = true;
		close_acceptors(w);
		sy_session *next;
		for (sy_session *s = w->sessions; s; s = next) {
			next = s->next;
			if (s->state == SS_PROTOCOL && s->proto)
				interactive_shutdown(s);
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
	uv_run(&w->loop, UV_RUN_DEFAULT);
	atomic_fetch_sub(&w->server->workers_running, 1);
	uv_async_send(&w->server->worker_done);
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

static void on_worker_done(uv_async_t *h)
{
	sy_server *srv = h->data;
	if (atomic_load(&srv->workers_running) > 0)
		return;
	uv_close((uv_handle_t *)&srv->sigterm, NULL);
	uv_close((uv_handle_t *)&srv->sigint, NULL);
	uv_close((uv_handle_t *)&srv->grace, NULL);
	uv_close((uv_handle_t *)&srv->worker_done, NULL);
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
	srv->nhealth = cfg->ndestinations;
	srv->health = calloc(cfg->ndestinations ? cfg->ndestinations : 1, sizeof(*srv->health));
	for (size_t i = 0; i < cfg->ndestinations; i++) {
		srv->health[i].id = strdup(cfg->destinations[i].id);
		health_init(&srv->health[i].health, cfg->server.host_down_threshold,
		            cfg->server.host_down_cooldown_ms);
	}
	srv->nlisteners = cfg->nlisteners;
	srv->listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*srv->listeners));
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		srv->listeners[i].name = strdup(cfg->listeners[i].name);
		srv->listeners[i].protocol = cfg->listeners[i].protocol;
	}

	sy_snapshot *snap = snapshot_build(srv, cfg);
	if (!snap) {
		config_free(cfg);
		goto out;
	}
	atomic_store(&srv->current, snap);

	uv_loop_t main_loop;
	uv_loop_init(&main_loop);
	srv->main_loop = &main_loop;
	uv_async_init(&main_loop, &srv->worker_done, on_worker_done);
	srv->worker_done.data = srv;
	uv_signal_init(&main_loop, &srv->sigterm);
	uv_signal_init(&main_loop, &srv->sigint);
	uv_timer_init(&main_loop, &srv->grace);
	srv->sigterm.data = srv->sigint.data = srv->grace.data = srv;

	srv->nworkers = worker_count(cfg);
	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	size_t inited = 0;
	bool ok = true;
	for (size_t i = 0; i < srv->nworkers && ok; i++) {
		sy_worker *w = &srv->workers[i];
		w->index = (int)i;
		w->server = srv;
		uv_loop_init(&w->loop);
		pool_init(&w->pool, POOL_MAX_FREE);
		uv_async_init(&w->loop, &w->wake, on_wake);
		w->wake.data = w;
		inited++;
		ok = bind_worker(srv, w, cfg) == 0;
	}
	if (!ok) {
		/* Startup failed before any thread ran: close everything on the
		 * loops from here. */
		for (size_t i = 0; i < inited; i++) {
			sy_worker *w = &srv->workers[i];
			close_acceptors(w);
			uv_close((uv_handle_t *)&w->wake, NULL);
			uv_run(&w->loop, UV_RUN_DEFAULT);
		}
		uv_close((uv_handle_t *)&srv->sigterm, NULL);
		uv_close((uv_handle_t *)&srv->sigint, NULL);
		uv_close((uv_handle_t *)&srv->grace, NULL);
		uv_close((uv_handle_t *)&srv->worker_done, NULL);
		uv_run(&main_loop, UV_RUN_DEFAULT);
		goto cleanup;
	}

	uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
	uv_signal_start(&srv->sigint, on_signal, SIGINT);
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
		free(w->acceptors);
	}
	uv_loop_close(&main_loop);
	free(srv->workers);
	snapshot_unref(atomic_load(&srv->current));
out:
	for (size_t i = 0; i < srv->nhealth; i++) {
		free(srv->health[i].id);
		health_destroy(&srv->health[i].health);
	}
	free(srv->health);
	for (size_t i = 0; i < srv->nlisteners; i++)
		free(srv->listeners[i].name);
	free(srv->listeners);
	free(srv);
	return rc;
}
