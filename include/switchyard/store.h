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
	/* Publishes `payload` on the fleet events channel (Redis PUBLISH,
	 * PostgreSQL pg_notify): DONE once the server took it. Returns as
	 * get. NULL for a subscriber store. */
	int (*publish)(sy_store *s, const char *payload, sy_store_cb cb, void *arg);
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

/*
 * Subscribers: one dedicated connection that receives the fleet events
 * channel (Redis SUBSCRIBE, PostgreSQL LISTEN) and, for Redis with
 * `[mapping.redis] watch_keyspace`, the keyspace notifications of the keys
 * under key_prefix. It reconnects and resubscribes on its own like a store
 * (same backoff). Close it with ops->close (get/put/del/publish fail).
 *
 * `message` runs on the loop for every event: kind SY_SUB_EVENT with the
 * payload, or SY_SUB_KEYSPACE with the identifier (key_prefix cut) in
 * `payload` and the Redis event name ("set", "del", "expired", ...) in
 * `what`. `state` runs when the subscription is confirmed (up = true) and
 * when it is lost (up = false; not called during close).
 */
typedef enum sy_sub_kind { SY_SUB_EVENT, SY_SUB_KEYSPACE } sy_sub_kind;
typedef struct sy_store_sub {
	void *arg;
	void (*message)(void *arg, sy_sub_kind kind, const char *payload, size_t len,
	                const char *what);
	void (*state)(void *arg, bool up);
} sy_store_sub;

sy_store *store_redis_subscribe(uv_loop_t *loop, const sy_mapping_config *cfg,
                                const sy_store_sub *sub, const char **error_r);
sy_store *store_sql_listen(uv_loop_t *loop, const sy_mapping_config *cfg, const sy_store_sub *sub,
                           const char **error_r);

/* The fleet events channel of the configuration: [mapping.redis]
 * events_channel (default "<key_prefix>events") or [mapping.sql]
 * events_channel (default "switchyard_events"). Static or config storage. */
const char *store_events_channel(const sy_mapping_config *cfg, char *buf, size_t len);

#endif
