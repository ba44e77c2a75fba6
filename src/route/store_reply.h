/*
 * What a Redis reply or a PostgreSQL result means for the stores: pure
 * functions of one hiredis `redisReply`, libpq `PGresult` or `PGnotify`
 * (no connection, no store), used by store_redis.c and store_sql.c and
 * fuzzed by tests/fuzz/fuzz_redis_reply.c and fuzz_pg_result.c.
 *
 * The strings they hand back point into the reply (or result), into the
 * caller's buffer, or are static: valid as long as those are.
 *
 * Private to src/route/store_*.c.
 */
#ifndef SWITCHYARD_STORE_REPLY_H
#define SWITCHYARD_STORE_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "store_common.h"

struct redisReply;
struct redisReader;
struct pg_result;
struct pgNotify;

/* ---- Redis (store_redis.c) ---- */

/* The most one reply may hold: elements of all its arrays together, and
 * bytes of all its strings. The store's replies are a value, a status, an
 * integer, CONFIG GET's pair or a push of four strings. */
#define SY_REDIS_REPLY_MAX_ELEMENTS 1024
#define SY_REDIS_REPLY_MAX_BYTES    (1024 * 1024)

/*
 * A hiredis reader (RESP parser) that refuses a reply over those limits
 * before it allocates for it: redisReaderGetReply then fails and
 * store_redis_reader_over is true. NULL when out of memory. Free it with
 * store_redis_reader_free (not redisReaderFree).
 */
struct redisReader *store_redis_reader(void);
bool store_redis_reader_over(const struct redisReader *r);
void store_redis_reader_free(struct redisReader *r);

/*
 * The reply to a request's command (GET, SET, DEL, PUBLISH). FOUND (GET
 * only) sets *value to the reply's string, which holds no NUL byte;
 * ERROR sets *error, static text or "redis: <the server's error>" in
 * `ebuf`. The other pointer is NULL.
 */
sy_store_status store_redis_answer(sy_store_op op, const struct redisReply *r, const char **value,
                                   const char **error, char *ebuf, size_t ebuf_size);

/* A reply on the subscriber's connection once it has subscribed. */
typedef enum sy_redis_push_kind {
	SY_REDIS_PUSH_OTHER,       /* nothing to act on */
	SY_REDIS_PUSH_REFUSED,     /* an error reply (NOPERM from an ACL...): text */
	SY_REDIS_PUSH_SUBSCRIBED,  /* a SUBSCRIBE confirmation */
	SY_REDIS_PUSH_PSUBSCRIBED, /* a PSUBSCRIBE confirmation */
	SY_REDIS_PUSH_EVENT,       /* "message": text/len is the payload */
	SY_REDIS_PUSH_KEYSPACE,    /* "pmessage" on a channel under ks_channel:
	                            * text/len is the key past that prefix
	                            * (NUL-free), what the event */
} sy_redis_push_kind;

typedef struct sy_redis_push {
	sy_redis_push_kind kind;
	const char *text; /* NUL-terminated at text[len] */
	size_t len;
	const char *what; /* KEYSPACE: "set", "del", "expired", ... */
} sy_redis_push;

/*
 * Classifies one push. `ks_channel` is the keyspace channel prefix
 * "__keyspace@<db>__:<key_prefix>" (NULL when keyspace notifications are
 * not followed): a notification is KEYSPACE only on a channel that starts
 * with it and names a key past it. Fills *out and returns its kind.
 */
sy_redis_push_kind store_redis_push(const struct redisReply *r, const char *ks_channel,
                                    sy_redis_push *out);

typedef enum sy_redis_ks_config {
	SY_REDIS_KS_OK,           /* the setting delivers SET, DEL and expiry events */
	SY_REDIS_KS_INSUFFICIENT, /* it does not: *detail is the setting */
	SY_REDIS_KS_UNREADABLE,   /* no setting in the reply: *detail says why */
} sy_redis_ks_config;

/* The reply to CONFIG GET notify-keyspace-events. */
sy_redis_ks_config store_redis_keyspace_config(const struct redisReply *r, const char **detail);

/* ---- PostgreSQL (store_sql.c) ---- */

/*
 * One result of a request's query. FOUND (a GET whose first row and column
 * is not NULL) sets *text to that value; ERROR sets *text to static text or
 * to "sql: <first line of the server's message>" in `ebuf`; otherwise
 * *text is NULL.
 */
sy_store_status store_sql_answer(sy_store_op op, const struct pg_result *res, const char **text,
                                 char *ebuf, size_t ebuf_size);

/* A result of LISTEN: true when it succeeded, else false with
 * "LISTEN failed: <first line>" in `err`. */
bool store_sql_listen_ok(const struct pg_result *res, char *err, size_t err_size);

/* A notification's payload (NUL-terminated, *len its length), or NULL
 * when it has none. */
const char *store_sql_notify_payload(const struct pgNotify *n, size_t *len);

#endif
