/*
 * Snapshot reference counting and lookups (snapshot.h). Building a snapshot
 * is the runtime's job (src/server/server.c): it needs the health table.
 */
#include "switchyard/snapshot.h"

#include <stdlib.h>
#include <string.h>

sy_node_set *node_set_new(size_t n)
{
	sy_node_set *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	size_t k = n ? n : 1;
	s->nodes = calloc(k, sizeof(*s->nodes));
	s->cfgs = calloc(k, sizeof(*s->cfgs));
	s->ids = calloc(k, sizeof(*s->ids));
	s->eligible = calloc(k, sizeof(*s->eligible));
	s->serving = calloc(k, sizeof(*s->serving));
	s->terminating = calloc(k, sizeof(*s->terminating));
	if (!s->nodes || !s->cfgs || !s->ids || !s->eligible || !s->serving || !s->terminating) {
		node_set_unref(s);
		return NULL;
	}
	return s;
}

sy_node_set *node_set_ref(sy_node_set *s)
{
	if (s)
		atomic_fetch_add(&s->refs, 1);
	return s;
}

void node_set_unref(sy_node_set *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (size_t k = 0; k < s->n; k++)
		tls_client_free(s->nodes[k].tls);
	free(s->nodes);
	free(s->cfgs);
	free(s->ids);
	free(s->eligible);
	free(s->serving);
	free(s->terminating);
	free(s->strings);
	free(s);
}

sy_node_set *cluster_set_acquire(sy_cluster_rt *cl)
{
	pthread_mutex_lock(&cl->mu);
	sy_node_set *s = node_set_ref(cl->set);
	pthread_mutex_unlock(&cl->mu);
	return s;
}

void cluster_set_install(sy_cluster_rt *cl, sy_node_set *set)
{
	pthread_mutex_lock(&cl->mu);
	sy_node_set *old = cl->set;
	cl->set = set;
	pthread_mutex_unlock(&cl->mu);
	node_set_unref(old);
}

void snapshot_clusters_free(sy_cluster_rt *cl, size_t n)
{
	if (!cl)
		return;
	for (size_t i = 0; i < n; i++) {
		node_set_unref(cl[i].set);
		if (cl[i].cfg)
			pthread_mutex_destroy(&cl[i].mu);
	}
	free(cl);
}

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
	snapshot_clusters_free(s->clusters, s->cfg->nclusters);
	tls_server_unref(s->tls_server);
	config_free(s->cfg);
	free(s);
}

void dest_rt_parse_ip(sy_dest_rt *rt)
{
	socklen_t len;
	if (!rt->cfg->host_is_ip || sy_sockaddr_parse(rt->cfg->host, true, &rt->ip, &len) != 0)
		memset(&rt->ip, 0, sizeof(rt->ip)); /* AF_UNSPEC: resolved per dial */
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

sy_cluster_rt *snapshot_cluster(sy_snapshot *s, const char *id)
{
	if (!id || !s->clusters)
		return NULL;
	for (size_t i = 0; i < s->cfg->nclusters; i++)
		if (strcmp(s->cfg->clusters[i].id, id) == 0)
			return &s->clusters[i];
	return NULL;
}

void cluster_node_config(const sy_destination_config *tmpl, const char *id, const char *host,
                         bool host_is_ip, const char *tls_server_name, sy_destination_config *out)
{
	*out = *tmpl;
	out->id = (char *)id;
	out->host = (char *)host;
	out->host_is_ip = host_is_ip;
	if (tls_server_name)
		out->tls_server_name = (char *)tls_server_name;
}
