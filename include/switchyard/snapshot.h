/*
 * Snapshots: one loaded configuration bound to the objects built from it
 * (the inbound certificate store, per-destination TLS client contexts, the
 * clusters' node destinations).
 *
 * Sessions hold a reference to the snapshot they started with, so a reload
 * can swap in a new one while established sessions keep using the old one
 * until they end. Destination health lives outside snapshots (keyed by
 * destination id, owned by the runtime) so a reload does not forget that a
 * backend is down. Snapshots are built by the runtime (src/server/); this
 * layer holds their types, their reference counting and their lookups
 * (src/backend/snapshot.c).
 */
#ifndef SWITCHYARD_SNAPSHOT_H
#define SWITCHYARD_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "switchyard/config.h"
#include "switchyard/health.h"
#include "switchyard/tls.h"

/* One destination of a snapshot. */
typedef struct sy_dest_rt {
	const sy_destination_config *cfg;
	sy_tls_client *tls;  /* NULL when no leg uses TLS */
	sy_health *health;   /* owned by the server's health table */
	_Atomic uint32_t rr; /* source_ips round robin */
} sy_dest_rt;

/*
 * One cluster of a snapshot. Its nodes are complete destinations, built once
 * when the snapshot is: each is the cluster's template (protocol legs, TLS,
 * forwarding and every other setting) with the node's identity (id, host,
 * tls_server_name) put in. The dialer and the protocols see a node exactly as
 * they see any destination. A node's breaker is keyed by its id, so a static
 * node that is also routed to directly shares one health entry.
 */
typedef struct sy_cluster_rt {
	const sy_cluster_config *cfg;
	size_t nnodes;
	sy_dest_rt *nodes;                /* owned; each cfg points into node_cfgs */
	sy_destination_config *node_cfgs; /* owned structs; their strings are borrowed
	                                     from the snapshot's configuration */
	const char **ids;                 /* owned array of borrowed ids, for cluster_pick */
} sy_cluster_rt;

typedef struct sy_snapshot {
	_Atomic int refs;
	sy_config *cfg;
	sy_tls_server *tls_server;
	sy_dest_rt *dests;       /* parallel to cfg->destinations */
	sy_cluster_rt *clusters; /* parallel to cfg->clusters */
} sy_snapshot;

sy_snapshot *snapshot_ref(sy_snapshot *s);
void snapshot_unref(sy_snapshot *s);
/* The destination runtime for an id, or NULL. */
sy_dest_rt *snapshot_dest(sy_snapshot *s, const char *id);
/* The cluster runtime for an id, or NULL. */
sy_cluster_rt *snapshot_cluster(sy_snapshot *s, const char *id);

/*
 * Fills *out with the destination a cluster node is: a copy of the template
 * `tmpl` whose identity is the node's (`id`, `host`, and `tls_server_name`
 * when not NULL, else the template's). Strings are borrowed, not copied. Used
 * for static nodes and for discovered ones, which have only an address.
 */
void cluster_node_config(const sy_destination_config *tmpl, const char *id, const char *host,
                         bool host_is_ip, const char *tls_server_name, sy_destination_config *out);

/* Frees the cluster runtimes of a snapshot under construction or teardown. */
void snapshot_clusters_free(sy_cluster_rt *clusters, size_t n);

#endif
