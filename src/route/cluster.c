/*
 * Rendezvous hashing over a cluster's nodes (see cluster.h).
 */
#include "switchyard/cluster.h"

#include <stdlib.h>
#include <string.h>

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

/* splitmix64's output function: a bijection on 64 bits with full
 * avalanche, so nearby FNV states give unrelated scores. */
static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t cluster_score(const char *node, const char *identifier)
{
	static const unsigned char nul = 0;
	uint64_t h = FNV_OFFSET;
	h = fnv1a(h, (const unsigned char *)node, strlen(node));
	h = fnv1a(h, &nul, 1);
	h = fnv1a(h, (const unsigned char *)identifier, strlen(identifier));
	return mix64(h);
}

typedef struct ranked {
	uint64_t score;
	size_t index;
	const char *id;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
	const ranked *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return strcmp(x->id, y->id);
}

int cluster_rank(const char *const *nodes, size_t n, const char *identifier, size_t *order)
{
	ranked stackbuf[16];
	ranked *r = n <= 16 ? stackbuf : malloc(n * sizeof(*r));
	if (!r)
		return -1;
	for (size_t i = 0; i < n; i++) {
		r[i].score = cluster_score(nodes[i], identifier);
		r[i].index = i;
		r[i].id = nodes[i];
	}
	if (n > 1)
		qsort(r, n, sizeof(*r), cmp_ranked);
	for (size_t i = 0; i < n; i++)
		order[i] = r[i].index;
	if (r != stackbuf)
		free(r);
	return 0;
}

long cluster_pick(const char *const *nodes, size_t n, const char *identifier,
                  bool (*usable)(void *arg, size_t i), void *arg)
{
	if (n == 0)
		return -1;
	size_t stackbuf[16];
	size_t *order = n <= 16 ? stackbuf : malloc(n * sizeof(*order));
	if (!order || cluster_rank(nodes, n, identifier, order) != 0) {
		if (order != stackbuf)
			free(order);
		return -1;
	}
	long pick = (long)order[0];
	if (usable) {
		for (size_t i = 0; i < n; i++) {
			if (usable(arg, order[i])) {
				pick = (long)order[i];
				break;
			}
		}
	}
	if (order != stackbuf)
		free(order);
	return pick;
}
