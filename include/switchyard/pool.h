/*
 * A per-worker pool of fixed-size byte blocks for socket reads and queued
 * output. Blocks are borrowed only while bytes are in motion, so idle
 * sessions hold none; a bounded free list keeps the hot path free of malloc.
 * Not thread-safe: one pool per event loop.
 */
#ifndef SWITCHYARD_POOL_H
#define SWITCHYARD_POOL_H

#include <stddef.h>

#define SY_BLOCK_SIZE 32768

typedef struct sy_pool {
	void *free_list;
	size_t nfree;
	size_t max_free; /* blocks kept for reuse beyond this are freed */
	size_t outstanding;
} sy_pool;

void pool_init(sy_pool *p, size_t max_free);
/* Releases the cached blocks. Outstanding blocks must have been returned. */
void pool_destroy(sy_pool *p);
/* Returns a block of SY_BLOCK_SIZE bytes, or NULL when out of memory. */
char *pool_get(sy_pool *p);
void pool_put(sy_pool *p, char *block);

#endif
