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

#include <pthread.h>
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
	/* cfg->host parsed once when it is a literal address (port 0), so a
	 * dial needs no resolver; ss_family AF_UNSPEC otherwise (a host name,
	 * resolved on every dial). */
	struct sockaddr_storage ip;
} sy_dest_rt;

/* Fills rt->ip from rt->cfg->host (see above). */
void dest_rt_parse_ip(sy_dest_rt *rt);

/*
 * The nodes of one cluster, as one immutable set. Each node is a complete
 * destination: the cluster's template (protocol legs, TLS, forwarding and
 * every other setting) with the node's identity (id, host, tls_server_name)
 * put in, so the dialer and the protocols see a node exactly as they see any
 * destination. A node's breaker is keyed by its id, so a static node that is
 * also routed to directly shares one health entry.
 *
 * Static clusters get one set when the snapshot is built. A discovered
 * cluster (Kubernetes) gets a new set whenever its members change, swapped
 * in whole (cluster_set_install). Sets are reference counted because a
 * session keeps using the node it was routed to after a swap: the route
 * result carries a reference (sy_route_result.hold) that the session keeps
 * for its life. A set borrows the template's strings from the snapshot's
 * configuration, so it must not outlive that snapshot: every holder of a
 * set also holds the snapshot it came from.
 */
typedef struct sy_node_set {
	_Atomic int refs;
	size_t n;
	sy_dest_rt *nodes; /* owned; each cfg points into cfgs */
	sy_destination_config *cfgs;
	const char **ids; /* the node ids, for cluster_pick */
	bool *eligible;   /* may take new logins: serving and not terminating */
	bool *serving;
	bool *terminating;
	char *strings; /* owned copies of discovered ids and hosts (NULL for
	                  static sets, which borrow the configuration's) */
} sy_node_set;

/* An empty set with room for n nodes (all arrays zeroed, refs 1); NULL when
 * out of memory. The builder fills nodes/cfgs/ids/flags and sets n. */
sy_node_set *node_set_new(size_t n);
sy_node_set *node_set_ref(sy_node_set *s);
/* Drops a reference (NULL is fine); the last frees the set and the nodes'
 * TLS client contexts. Any thread. */
void node_set_unref(sy_node_set *s);

/*
 * One cluster of a snapshot. `set` is read and swapped under `mu` (a short,
 * uncontended lock taken once per routed login to a cluster).
 */
typedef struct sy_cluster_rt {
	const sy_cluster_config *cfg;
	pthread_mutex_t mu;
	sy_node_set *set; /* never NULL once the snapshot is built */
} sy_cluster_rt;

/* A new reference to the cluster's current set. */
sy_node_set *cluster_set_acquire(sy_cluster_rt *cl);
/* Makes `set` the cluster's current set, taking over the caller's reference
 * and dropping the cluster's reference to the previous one. */
void cluster_set_install(sy_cluster_rt *cl, sy_node_set *set);

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
