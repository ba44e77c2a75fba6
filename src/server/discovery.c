/*
 * Kubernetes discovery in the runtime (discovery_rt.h): one watch per
 * discovered cluster on the main loop, and the step that turns its members
 * into the cluster's node set in the current snapshot.
 *
 * The members a watch last reported are kept here, outside any snapshot,
 * so a reload can build the new snapshot's sets before publishing it (no
 * moment where a discovered cluster has no nodes) and a settings change can
 * keep routing on the last known members until the new watch has listed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/discovery_rt.h"
#include "switchyard/k8s.h"
#include "switchyard/log.h"

typedef struct sy_discovery {
	sy_server *srv;
	char *id;            /* the cluster id */
	char *settings;      /* the [cluster.<id>.kubernetes] settings, joined */
	k8s_watch *w;        /* NULL: the discovery could not start (see error) */
	uv_timer_t *retry;   /* while w is NULL: the next start attempt */
	k8s_members members; /* the last members reported */
	bool synced;         /* a list has completed (this watch or its predecessor) */
	char error[300];     /* why the discovery is not running or degraded */
	bool seen;           /* discovery_apply: still configured */
	struct sy_discovery *next;
} sy_discovery;

static const sy_cluster_config *cluster_cfg(const sy_snapshot *snap, const char *id)
{
	for (size_t i = 0; i < snap->cfg->nclusters; i++)
		if (strcmp(snap->cfg->clusters[i].id, id) == 0 &&
		    snap->cfg->clusters[i].has_kubernetes)
			return &snap->cfg->clusters[i];
	return NULL;
}

/* Every setting of the table, so any change restarts the watch. */
static char *settings_key(const sy_cluster_config *cl)
{
	const char *parts[] = {cl->kubernetes.service, cl->kubernetes.namespace_,
	                       cl->kubernetes.api_url, cl->kubernetes.token_file,
	                       cl->kubernetes.ca_file, cl->kubernetes.kubeconfig};
	char buf[4096];
	size_t n = 0;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s\x1f", parts[i] ? parts[i] : "");
	snprintf(buf + (n < sizeof(buf) ? n : sizeof(buf) - 1),
	         sizeof(buf) - (n < sizeof(buf) ? n : sizeof(buf) - 1), "%llu/%llu/%llu/%llu",
	         (unsigned long long)cl->kubernetes.watch_timeout_ms,
	         (unsigned long long)cl->kubernetes.backoff_initial_ms,
	         (unsigned long long)cl->kubernetes.backoff_max_ms,
	         (unsigned long long)cl->kubernetes.token_refresh_ms);
	return strdup(buf);
}

/* Makes the members the cluster's node set in `snap`. Main thread. */
static void install(sy_discovery *d, sy_snapshot *snap)
{
	sy_cluster_rt *rt = snapshot_cluster(snap, d->id);
	if (!rt || !rt->cfg->has_kubernetes)
		return;
	const k8s_members *m = &d->members;
	size_t bytes = 1;
	for (size_t i = 0; i < m->n; i++)
		bytes += strlen(m->v[i].id) + strlen(m->v[i].address) + 2;
	char *strings = malloc(bytes);
	sy_node_spec *v = calloc(m->n ? m->n : 1, sizeof(*v));
	if (!strings || !v) {
		free(strings);
		free(v);
		sy_log(SY_LOG_ERROR, "k8s discovery: out of memory; keeping the previous nodes",
		       "cluster", d->id, NULL);
		return;
	}
	char *p = strings;
	for (size_t i = 0; i < m->n; i++) {
		size_t a = strlen(m->v[i].id) + 1, b = strlen(m->v[i].address) + 1;
		memcpy(p, m->v[i].id, a);
		memcpy(p + a, m->v[i].address, b);
		v[i] = (sy_node_spec){.id = p,
		                      .host = p + a,
		                      .host_is_ip = true, /* FQDN slices are ignored */
		                      .serving = m->v[i].serving,
		                      .terminating = m->v[i].terminating};
		p += a + b;
	}
	char msg[256] = "";
	sy_node_set *set =
	    server_node_set(d->srv, snap->cfg, rt->cfg, v, m->n, strings, msg, sizeof(msg));
	free(v);
	if (!set) {
		sy_log(SY_LOG_ERROR,
		       "k8s discovery: cannot build the nodes; keeping the previous ones",
		       "cluster", d->id, "error", msg, NULL);
		return;
	}
	cluster_set_install(rt, set);
}

static void on_update(k8s_watch *w, const k8s_update *u, void *arg)
{
	(void)w;
	sy_discovery *d = arg;
	d->synced = d->synced || u->synced;
	snprintf(d->error, sizeof(d->error), "%s", u->error ? u->error : "");
	if (!u->members_changed)
		return;
	k8s_members copy = {0};
	if (k8s_members_copy(u->members, &copy) != 0) {
		sy_log(SY_LOG_ERROR, "k8s discovery: out of memory; keeping the previous nodes",
		       "cluster", d->id, NULL);
		return;
	}
	k8s_members_free(&d->members);
	d->members = copy;
	sy_snapshot *snap = server_snapshot(d->srv);
	install(d, snap);
	snapshot_unref(snap);
}

static void retry_closed(uv_handle_t *h)
{
	free(h);
}

static void stop_retry(sy_discovery *d)
{
	if (d->retry) {
		uv_close((uv_handle_t *)d->retry, retry_closed);
		d->retry = NULL;
	}
}

static void start(sy_discovery *d, const sy_cluster_config *cl);

static void on_retry(uv_timer_t *t)
{
	sy_discovery *d = t->data;
	stop_retry(d);
	sy_snapshot *snap = server_snapshot(d->srv);
	const sy_cluster_config *cl = cluster_cfg(snap, d->id);
	if (cl && !d->w)
		start(d, cl);
	snapshot_unref(snap);
}

/* Resolves the API target and starts the watch; on failure logs why,
 * keeps readiness false and tries again after backoff_max. */
static void start(sy_discovery *d, const sy_cluster_config *cl)
{
	k8s_settings s;
	k8s_settings_from_cluster(cl, &s);
	sy_k8s_target t;
	char err[256] = "";
	const char *why = NULL;
	if (k8s_target_resolve(&s, &t, err, sizeof(err)) != 0) {
		why = err;
	} else {
		sy_k8s_watch_opts o = {
		    .name = cl->id,
		    .watch_timeout_s = (unsigned)(cl->kubernetes.watch_timeout_ms / 1000),
		    .backoff_initial_ms = (unsigned)cl->kubernetes.backoff_initial_ms,
		    .backoff_max_ms = (unsigned)cl->kubernetes.backoff_max_ms,
		    .token_reread_ms = (unsigned)cl->kubernetes.token_refresh_ms,
		};
		d->w = k8s_watch_start(d->srv->main_loop, &t, cl->kubernetes.service, &o, on_update,
		                       d, &why);
		if (d->w)
			sy_log(SY_LOG_INFO, "k8s discovery started", "cluster", cl->id, "service",
			       cl->kubernetes.service, "namespace", t.namespace_, "api", t.api_url,
			       "source", t.source ? t.source : "-", NULL);
		k8s_target_free(&t);
	}
	if (d->w)
		return;
	snprintf(d->error, sizeof(d->error), "%s", why ? why : "cannot start the watch");
	sy_log(SY_LOG_ERROR, "k8s discovery cannot start; the proxy stays unready for it",
	       "cluster", cl->id, "error", d->error, NULL);
	d->retry = malloc(sizeof(*d->retry));
	if (!d->retry)
		return;
	uv_timer_init(d->srv->main_loop, d->retry);
	d->retry->data = d;
	uv_timer_start(d->retry, on_retry, cl->kubernetes.backoff_max_ms, 0);
}

static void halt(sy_discovery *d)
{
	if (d->w)
		k8s_watch_stop(d->w, NULL, NULL);
	d->w = NULL;
	stop_retry(d);
}

static void discovery_free(sy_discovery *d)
{
	halt(d);
	k8s_members_free(&d->members);
	free(d->id);
	free(d->settings);
	free(d);
}

void discovery_apply(sy_server *srv, sy_snapshot *snap)
{
	for (sy_discovery *d = srv->discovery; d; d = d->next)
		d->seen = false;
	for (size_t i = 0; i < snap->cfg->nclusters; i++) {
		const sy_cluster_config *cl = &snap->cfg->clusters[i];
		if (!cl->has_kubernetes)
			continue;
		char *key = settings_key(cl);
		sy_discovery *d = srv->discovery;
		while (d && strcmp(d->id, cl->id) != 0)
			d = d->next;
		if (!d) {
			d = calloc(1, sizeof(*d));
			if (!d || !(d->id = strdup(cl->id))) {
				free(d);
				free(key);
				sy_log(SY_LOG_ERROR, "k8s discovery: out of memory", "cluster",
				       cl->id, NULL);
				continue;
			}
			d->srv = srv;
			d->next = srv->discovery;
			srv->discovery = d;
			d->settings = key;
			start(d, cl);
		} else if (!key || !d->settings || strcmp(key, d->settings) != 0) {
			/* New settings: a new watch. The last members and the
			 * readiness they gave stay until it has listed. */
			sy_log(SY_LOG_INFO, "k8s discovery settings changed; restarting the watch",
			       "cluster", cl->id, NULL);
			halt(d);
			free(d->settings);
			d->settings = key;
			start(d, cl);
		} else {
			free(key);
		}
		d->seen = true;
		install(d, snap);
	}
	for (sy_discovery **pp = &srv->discovery; *pp;) {
		sy_discovery *d = *pp;
		if (d->seen) {
			pp = &d->next;
			continue;
		}
		sy_log(SY_LOG_INFO, "k8s discovery stopped: the cluster is no longer configured",
		       "cluster", d->id, NULL);
		*pp = d->next;
		discovery_free(d);
	}
}

void discovery_stop_all(sy_server *srv)
{
	while (srv->discovery) {
		sy_discovery *d = srv->discovery;
		srv->discovery = d->next;
		discovery_free(d);
	}
}

static const char *state_word(const sy_discovery *d)
{
	if (!d->w)
		return "failed";
	switch (k8s_watch_get_state(d->w)) {
	case K8S_WATCH_SYNCED:
		return "synced";
	case K8S_WATCH_DEGRADED:
		return "degraded";
	case K8S_WATCH_SYNCING:
		return "syncing";
	default:
		return "stopped";
	}
}

bool discovery_ready(sy_server *srv, char *detail, size_t len)
{
	bool all = true;
	size_t n = 0;
	if (detail && len)
		detail[0] = '\0';
	for (sy_discovery *d = srv->discovery; d; d = d->next) {
		all = all && d->synced;
		if (!detail || n >= len)
			continue;
		const char *word = state_word(d);
		if (d->synced && strcmp(word, "synced") == 0)
			n += (size_t)snprintf(detail + n, len - n, "[+]discovery:%s synced\n",
			                      d->id);
		else
			n += (size_t)snprintf(detail + n, len - n, "[%c]discovery:%s %s%s%s\n",
			                      d->synced ? '+' : '-', d->id, word,
			                      d->error[0] ? ": " : "", d->error);
	}
	return all;
}

const char *discovery_state(sy_server *srv, const char *id)
{
	for (sy_discovery *d = srv->discovery; d; d = d->next)
		if (strcmp(d->id, id) == 0)
			return state_word(d);
	return NULL;
}

size_t discovery_count(sy_server *srv)
{
	size_t n = 0;
	for (sy_discovery *d = srv->discovery; d; d = d->next)
		n++;
	return n;
}

size_t discovery_metrics(sy_server *srv, sy_metrics_discovery *out, size_t cap)
{
	size_t n = 0;
	for (sy_discovery *d = srv->discovery; d && n < cap; d = d->next, n++) {
		sy_metrics_discovery *m = &out[n];
		memset(m, 0, sizeof(*m));
		m->cluster = d->id;
		m->synced = d->synced;
		for (size_t i = 0; i < d->members.n; i++) {
			const k8s_member *x = &d->members.v[i];
			if (x->eligible)
				m->eligible++;
			else if (x->terminating)
				m->terminating++;
			else
				m->not_serving++;
		}
		if (d->w) {
			k8s_watch_stats st;
			k8s_watch_get_stats(d->w, &st);
			for (int r = 0; r < SY_METRICS_DISCOVERY_REASONS && r < K8S_RESTART_COUNT;
			     r++)
				m->restarts[r] = st.restarts[r];
			m->list_errors = st.list_errors;
			m->watch_errors = st.watch_errors;
			m->last_sync_ms = st.last_sync_ms;
		}
	}
	return n;
}
