/*
 * Mapping stores: where identifier -> destination mappings live.
 *
 * A store instance belongs to one worker loop (each worker opens its own
 * connections: pool_size is divided among the workers, at least one each),
 * and every call completes asynchronously on that loop. The file store is
 * not a sy_store: it is an in-memory table (mapfile.h) shared read-only by
 * all workers and swapped on reload.
 *
 * Keys are normalized identifiers; the store adds its own prefix (Redis
 * key_prefix). Values are destination or cluster ids.
 */
#ifndef SWITCHYARD_STORE_H
#define SWITCHYARD_STORE_H

#include <stdbool.h>
#include <uv.h>

#include "switchyard/config.h"

typedef enum sy_store_status {
	SY_STORE_FOUND,     /* get: value is set */
	SY_STORE_NOT_FOUND, /* get: no mapping; del: nothing was there */
	SY_STORE_DONE,      /* put/del succeeded (del: something was removed) */
	SY_STORE_ERROR,     /* connection, protocol or query error: `error` says which */
} sy_store_status;

/* Completion of one request. `value` and `error` are valid only during the
 * call. Never called re-entrantly from inside the request function. */
typedef void (*sy_store_cb)(void *arg, sy_store_status st, const char *value, const char *error);

typedef struct sy_store sy_store;

typedef struct sy_store_ops {
	const char *name; /* "redis", "sql" */
	/* Each returns 0 once the request is queued (the callback will run), or
	 * -1 when it cannot be (then the callback is not called). A request
	 * issued while every connection is down fails through the callback
	 * with SY_STORE_ERROR, promptly (no waiting for a reconnect). */
	int (*get)(sy_store *s, const char *key, sy_store_cb cb, void *arg);
	int (*put)(sy_store *s, const char *key, const char *value, sy_store_cb cb, void *arg);
	int (*del)(sy_store *s, const char *key, sy_store_cb cb, void *arg);
	/* Closes connections; pending requests complete with SY_STORE_ERROR
	 * before `done` is called (from the loop). Frees the store. */
	void (*close)(sy_store *s, void (*done)(void *arg), void *arg);
	/* Writable? (SQL only when both upsert_query and delete_query are set.) */
	bool (*writable)(sy_store *s);
} sy_store_ops;

struct sy_store {
	const sy_store_ops *ops;
};

/*
 * Creates a store on `loop` with `conns` connections, reconnecting with
 * backoff (starting at 100 ms, doubling to 5 s) while the server is down.
 * Returns NULL with *error_r set if the configuration cannot be used at all
 * (e.g. an unparsable URL). Connection failures are not creation errors.
 */
sy_store *store_redis_create(uv_loop_t *loop, const sy_mapping_config *cfg, unsigned conns,
                             const char **error_r);
sy_store *store_sql_create(uv_loop_t *loop, const sy_mapping_config *cfg, unsigned conns,
                           const char **error_r);

#endif
