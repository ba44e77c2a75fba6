/*
 * Redis URLs, parsed without I/O (src/core/redis_url.c).
 */
#ifndef SWITCHYARD_REDIS_URL_H
#define SWITCHYARD_REDIS_URL_H

#include <stdbool.h>

typedef struct sy_redis_url {
	bool tls;       /* rediss:// */
	char *host;     /* without brackets */
	int port;       /* 6379 when absent */
	char *user;     /* NULL: AUTH <password> */
	char *password; /* NULL: no AUTH */
	int db;         /* -1: no SELECT */
} sy_redis_url;

/*
 * Parses `url` into *u (owned strings, free with redis_url_free, also after
 * a failure). Returns 0, or -1 with *error_r a static message that starts
 * with "mapping.redis.url: " and never quotes the URL (it may hold a
 * password).
 */
int redis_url_parse(const char *url, sy_redis_url *u, const char **error_r);

/* Frees what redis_url_parse allocated and wipes the password. */
void redis_url_free(sy_redis_url *u);

#endif
