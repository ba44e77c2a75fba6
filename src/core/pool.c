/*
 * Block pool: a singly linked free list threaded through the free blocks.
 */
#include "switchyard/pool.h"

#include <stdlib.h>

void pool_init(sy_pool *p, size_t max_free)
{
	p->free_list = NULL;
	p->nfree = 0;
	p->max_free = max_free;
	p->outstanding = 0;
}

void pool_destroy(sy_pool *p)
{
	while (p->free_list) {
		void *next = *(void **)p->free_list;
		free(p->free_list);
		p->free_list = next;
	}
	p->nfree = 0;
}

char *pool_get(sy_pool *p)
{
	char *b;
	if (p->free_list) {
		b = p->free_list;
		p->free_list = *(void **)b;
		p->nfree--;
	} else {
		b = malloc(SY_BLOCK_SIZE);
		if (!b)
			return NULL;
	}
	p->outstanding++;
	return b;
}

void pool_put(sy_pool *p, char *block)
{
	if (!block)
		return;
	p->outstanding--;
	if (p->nfree >= p->max_free) {
		free(block);
		return;
	}
	*(void **)block = p->free_list;
	p->free_list = block;
	p->nfree++;
}
