/*
 * Cluster pinning by rendezvous (highest random weight) hashing.
 *
 * Every node gets a score for an identifier; the node with the highest score
 * owns the identifier. Adding a node moves only the identifiers the new node
 * now wins, removing one moves only that node's identifiers, and every proxy
 * replica computes the same owner without talking to the others.
 *
 * The score is a fixed function, identical on every platform and in every
 * replica: FNV-1a 64 over the bytes of the node id, one NUL byte and the
 * identifier, followed by the splitmix64 finalizer (Steele, Lea, Flood 2014)
 * to spread FNV's weak high bits. Changing it re-pins every account, so the
 * unit tests pin a few expected owners.
 */
#ifndef SWITCHYARD_CLUSTER_H
#define SWITCHYARD_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The score of `node` for `identifier`. */
uint64_t cluster_score(const char *node, const char *identifier);

/*
 * Writes the indices of nodes[0..n) into order[0..n), best first (ties, which
 * need a 64-bit collision, are broken by node id). Returns 0, or -1 on
 * allocation failure.
 */
int cluster_rank(const char *const *nodes, size_t n, const char *identifier, size_t *order);

/*
 * The node for `identifier`: the best-ranked node for which usable(arg, i) is
 * true, or the best-ranked node when none is (so the client gets the normal
 * temporary failure from the dialer). Returns its index, or -1 when n is 0
 * (or on allocation failure). `usable` may be NULL (every node is usable).
 */
long cluster_pick(const char *const *nodes, size_t n, const char *identifier,
                  bool (*usable)(void *arg, size_t i), void *arg);

#endif
