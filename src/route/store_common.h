/*
 * What the Redis and PostgreSQL stores share: the request object (owning
 * copies of its key and value, because a request may wait for a connection
 * after the caller's strings are gone), FIFO request lists, and deferred
 * completion (store.h promises the callback never runs from inside the call
 * that issued the request, so errors found on the spot, and results, are
 * delivered from an idle callback).
 *
 * Private to src/route/store_*.c.
 */
#ifndef SWITCHYARD_STORE_COMMON_H
#define SWITCHYARD_STORE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "switchyard/store.h"

typedef enum sy_store_op { SY_STORE_OP_GET, SY_STORE_OP_PUT, SY_STORE_OP_DEL } sy_store_op;

typedef struct sy_store_req {
	struct sy_store_req *next;
	sy_store_cb cb;
	void *arg;
	sy_store_op op;
	void *owner; /* the store, for callbacks that only get the request */
	/* Outcome of a deferred completion: `text` is the value (FOUND) or the
	 * error (ERROR), owned; `static_error` when there was no memory for a
	 * copy. */
	bool have_outcome;
	sy_store_status st;
	char *text;
	const char *static_error;
	char *key; /* with the store's prefix */
	size_t keylen;
	char *value; /* "" when none */
	size_t valuelen;
	char buf[];
} sy_store_req;

/* A request for `prefix` + `key` (and `value` for a put); NULL when out of
 * memory. */
sy_store_req *store_req_new(sy_store_op op, const char *prefix, const char *key, const char *value,
                            sy_store_cb cb, void *arg, void *owner);

typedef struct sy_req_list {
	sy_store_req *head, *tail;
	size_t len;
} sy_req_list;

void req_list_push(sy_req_list *l, sy_store_req *r);
sy_store_req *req_list_pop(sy_req_list *l);

/* Sets the outcome (copying `text`) unless an error is already recorded:
 * the first error of a request is the one reported. */
void store_req_set_outcome(sy_store_req *r, sy_store_status st, const char *text);

/* Completions waiting for the loop's next idle turn. */
typedef struct sy_completions {
	sy_req_list list;
	uv_idle_t idle;
	bool closing;
	void (*closed)(void *arg);
	void *closed_arg;
} sy_completions;

int completions_init(sy_completions *q, uv_loop_t *loop);
/* Queues `r` for completion with its recorded outcome (an error "no result"
 * when none was recorded); the request is freed after its callback. */
void completions_add(sy_completions *q, sy_store_req *r);
/* Records `error` (dropping any outcome so far) and queues `r`. */
void completions_fail(sy_completions *q, sy_store_req *r, const char *error);
/* Closes the idle handle; completions still queued run before `closed`. */
void completions_close(sy_completions *q, void (*closed)(void *arg), void *arg);

#endif
