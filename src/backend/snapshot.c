/*
 * Snapshot reference counting and lookups (snapshot.h). Building a snapshot
 * is the runtime's job (src/server/server.c): it needs the health table.
 */
#include "switchyard/snapshot.h"

#include <stdlib.h>
#include <string.h>

void snapshot_clusters_free(sy_cluster_rt *cl, size_t n)
{
	if (!cl)
		return;
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < cl[i].nnodes; k++)
			tls_client_free(cl[i].nodes[k].tls);
		free(cl[i].nodes);
		free(cl[i].node_cfgs);
		free(cl[i].ids);
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
