/*
 * Kubernetes discovery in the runtime (src/server/discovery.c): one
 * list+watch (k8s.h) per cluster that has a [cluster.<id>.kubernetes] table,
 * on the main loop, whose members become the cluster's node set in the
 * current snapshot. Main thread only.
 */
#ifndef SWITCHYARD_DISCOVERY_RT_H
#define SWITCHYARD_DISCOVERY_RT_H

#include <stdbool.h>
#include <stddef.h>

#include "switchyard/metrics.h"
#include "switchyard/runtime.h"

/*
 * Makes the running discoveries match `snap` (about to be published, or
 * just published at startup): starts a watch for each discovered cluster it
 * has no watch for, restarts one whose settings changed, stops those whose
 * cluster is gone, and installs every discovered cluster's last known
 * members as its node set in `snap`. A cluster whose discovery cannot start
 * (a bad kubeconfig, an unreadable token) keeps readiness false, says why
 * in the log, and is retried. Never fails.
 */
void discovery_apply(sy_server *srv, sy_snapshot *snap);

/* Stops every watch (shutdown); the loop must run afterwards. */
void discovery_stop_all(sy_server *srv);

/* True when every discovered cluster has completed its first list. When
 * `detail` is not NULL, writes one line per discovered cluster:
 * "[+]discovery:<id> synced" or "[-]discovery:<id> <state>: <why>". */
bool discovery_ready(sy_server *srv, char *detail, size_t len);

/* The state word of a discovered cluster ("synced", "syncing", "degraded",
 * "failed"), or NULL when `id` is not discovered. */
const char *discovery_state(sy_server *srv, const char *id);

/* Fills up to `cap` entries for the metrics view; returns the count. The
 * cluster names are borrowed until the next main-loop turn. */
size_t discovery_metrics(sy_server *srv, sy_metrics_discovery *out, size_t cap);
size_t discovery_count(sy_server *srv);

#endif
