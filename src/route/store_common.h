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
#include <stdint.h>
#include <uv.h>

#include "switchyard/store.h"

typedef enum sy_store_op {
	SY_STORE_OP_GET,
	SY_STORE_OP_PUT,
	SY_STORE_OP_DEL,
	SY_STORE_OP_PUBLISH /* value: the payload */
} sy_store_op;

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

/*
 * The life cycle both stores share: a pool of connection slots that start
 * together, back off alike, and close in one sequence. close() marks the
 * store closing, fails what waits, and closes every handle; each close
 * callback calls store_life_handle_closed(); once the last handle is gone
 * the completions still queued run, then free_store(store) and done(done_arg).
 */
typedef struct sy_store_life {
	void *store;
	void (*free_store)(void *store);
	sy_completions completions;
	sy_req_list startup; /* requests waiting for the first connection */
	unsigned starting;   /* slots whose first attempt is under way */
	bool closing;
	bool finishing;
	unsigned open; /* timers, polls, getaddrinfo requests still open */
	void (*done)(void *arg);
	void *done_arg;
} sy_store_life;

/* Initialises `l` for `store` with `nslots` slots starting. Returns 0 or -1. */
int store_life_init(sy_store_life *l, uv_loop_t *loop, void *store, void (*free_store)(void *),
                    unsigned nslots);
/* Starts the close sequence; false when it had already started (then
 * nothing changes). */
bool store_life_begin_close(sy_store_life *l, void (*done)(void *arg), void *arg);
/* Finishes the close once nothing is open any more (safe to call often). */
void store_life_maybe_finish(sy_store_life *l);
/* One handle's close callback ran. */
void store_life_handle_closed(sy_store_life *l);
/*
 * A slot's first connection attempt is over, one way or the other. Returns
 * true when it was the last one to end; the caller then dispatches the
 * requests parked in `startup` if some slot is up, or fails them.
 */
bool store_life_first_attempt_over(sy_store_life *l, bool *first_attempt);
/* The next reconnect delay: doubles *backoff_ms up to max_ms and returns the
 * delay to wait now. */
uint64_t store_backoff_next(uint64_t *backoff_ms, uint64_t max_ms);

/*
 * A server that stops answering without closing (a hung process, a
 * middlebox that black-holes the flow) would hold an established
 * connection until TCP keepalive gives up, hours later, while every lookup
 * on it fails at lookup_timeout. So a READY connection that waits longer
 * than STORE_ANSWER_FACTOR x lookup_timeout for an answer is dropped and
 * reconnected; a subscriber connection, which sends nothing of its own
 * once subscribed, asks for one (PING, an empty query) after
 * STORE_PING_FACTOR x lookup_timeout without one.
 */
#define STORE_ANSWER_FACTOR 2
#define STORE_PING_FACTOR   3

#endif
