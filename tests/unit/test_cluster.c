/* Rendezvous hashing: even spread, minimal movement when nodes come and go,
 * health fallback, and pinned expected owners (a change of the score
 * function re-pins every account, so it must be deliberate). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/cluster.h"

#define IDS 100000

/* Computed independently (Python) from the documented definition. */
#define SCORE_NODE1_ALICE 0xd8efb731c11f23d3ull
#define SCORE_NODE2_ALICE 0x6106db96f5ce8d38ull
#define SCORE_EMPTY       0x71b8262bb6e2e086ull
#define PINS                                                                                       \
	{"alice@example.com", "node1"}, {"bob@example.com", "node4"},                              \
	    {"carol@example.com", "node2"}, {"dave@example.com", "node1"},                         \
	    {"erin@example.com", "node2"},                                                         \
	{                                                                                          \
		"frank@example.org", "node2"                                                       \
	}

static const char *const NODES[] = {"node1", "node2", "node3", "node4", "node5"};

static void ident(char *buf, size_t len, int i)
{
	snprintf(buf, len, "user%d@example.com", i);
}

static void spread(size_t n)
{
	long count[5] = {0};
	char id[64];
	for (int i = 0; i < IDS; i++) {
		ident(id, sizeof(id), i);
		long p = cluster_pick(NODES, n, id, NULL, NULL);
		assert_true(p >= 0 && (size_t)p < n);
		count[p]++;
	}
	double even = (double)IDS / (double)n;
	for (size_t i = 0; i < n; i++) {
		double dev = ((double)count[i] - even) / even;
		if (dev < -0.03 || dev > 0.03)
			fail_msg("%zu nodes: node %zu got %ld of %d ids (%.2f%% off even)", n, i,
			         count[i], IDS, dev * 100);
	}
}

static void even_distribution(void **state)
{
	(void)state;
	spread(3);
	spread(4);
	spread(5);
}

static void adding_a_node_moves_a_fifth_to_it(void **state)
{
	(void)state;
	char id[64];
	long moved = 0;
	for (int i = 0; i < IDS; i++) {
		ident(id, sizeof(id), i);
		long before = cluster_pick(NODES, 4, id, NULL, NULL);
		long after = cluster_pick(NODES, 5, id, NULL, NULL);
		if (before != after) {
			/* Only ever to the new node. */
			assert_int_equal(after, 4);
			moved++;
		}
	}
	double share = (double)moved / IDS;
	if (share < 0.18 || share > 0.22)
		fail_msg("adding a 5th node moved %.2f%% of ids", share * 100);
}

static void removing_a_node_moves_only_its_ids(void **state)
{
	(void)state;
	/* node3 leaves: the others keep their ids, node3's spread over them. */
	const char *const without[] = {"node1", "node2", "node4", "node5"};
	char id[64];
	long orphans[4] = {0};
	for (int i = 0; i < IDS; i++) {
		ident(id, sizeof(id), i);
		long before = cluster_pick(NODES, 5, id, NULL, NULL);
		long after = cluster_pick(without, 4, id, NULL, NULL);
		if (before != 2) {
			assert_string_equal(NODES[before], without[after]);
		} else {
			orphans[after]++;
		}
	}
	for (int i = 0; i < 4; i++)
		assert_true(orphans[i] > 4000); /* ~5000 each */
	/* Node order in the list does not matter. */
	const char *const shuffled[] = {"node5", "node3", "node1", "node4", "node2"};
	for (int i = 0; i < 1000; i++) {
		ident(id, sizeof(id), i);
		assert_string_equal(NODES[cluster_pick(NODES, 5, id, NULL, NULL)],
		                    shuffled[cluster_pick(shuffled, 5, id, NULL, NULL)]);
	}
}

typedef struct down_set {
	bool down[5];
} down_set;

static bool up(void *arg, size_t i)
{
	return !((down_set *)arg)->down[i];
}

static void health_fallback(void **state)
{
	(void)state;
	char id[64];
	for (int i = 0; i < 2000; i++) {
		ident(id, sizeof(id), i);
		size_t order[5];
		assert_int_equal(cluster_rank(NODES, 5, id, order), 0);
		down_set ds = {{false}};
		assert_int_equal(cluster_pick(NODES, 5, id, up, &ds), (long)order[0]);
		ds.down[order[0]] = true;
		assert_int_equal(cluster_pick(NODES, 5, id, up, &ds), (long)order[1]);
		ds.down[order[1]] = true;
		assert_int_equal(cluster_pick(NODES, 5, id, up, &ds), (long)order[2]);
		/* All down: the top-ranked one, so the dialer gives the usual
		 * temporary failure. */
		for (int j = 0; j < 5; j++)
			ds.down[j] = true;
		assert_int_equal(cluster_pick(NODES, 5, id, up, &ds), (long)order[0]);
	}
	assert_int_equal(cluster_pick(NODES, 0, "x", NULL, NULL), -1);
	assert_int_equal(cluster_pick(NODES, 1, "x", NULL, NULL), 0);
}

static void large_cluster(void **state)
{
	(void)state;
	/* More nodes than the on-stack buffers hold. */
	char names[40][16];
	const char *nodes[40];
	for (int i = 0; i < 40; i++) {
		snprintf(names[i], sizeof(names[i]), "pod-%d", i);
		nodes[i] = names[i];
	}
	size_t order[40];
	assert_int_equal(cluster_rank(nodes, 40, "alice@example.com", order), 0);
	assert_int_equal(cluster_pick(nodes, 40, "alice@example.com", NULL, NULL), (long)order[0]);
	for (int i = 1; i < 40; i++)
		assert_true(cluster_score(nodes[order[i - 1]], "alice@example.com") >=
		            cluster_score(nodes[order[i]], "alice@example.com"));
}

/* FNV-1a 64 over node, NUL, identifier, then splitmix64's finalizer. These
 * values are part of the routing contract between replicas and releases. */
static void fixed_scores_and_picks(void **state)
{
	(void)state;
	assert_true(cluster_score("node1", "alice@example.com") == SCORE_NODE1_ALICE);
	assert_true(cluster_score("node2", "alice@example.com") == SCORE_NODE2_ALICE);
	assert_true(cluster_score("", "") == SCORE_EMPTY);
	static const struct {
		const char *id;
		const char *owner;
	} pins[] = {PINS};
	for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++)
		assert_string_equal(NODES[cluster_pick(NODES, 5, pins[i].id, NULL, NULL)],
		                    pins[i].owner);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(even_distribution),
	    cmocka_unit_test(adding_a_node_moves_a_fifth_to_it),
	    cmocka_unit_test(removing_a_node_moves_only_its_ids),
	    cmocka_unit_test(health_fallback),
	    cmocka_unit_test(large_cluster),
	    cmocka_unit_test(fixed_scores_and_picks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
