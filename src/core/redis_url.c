/*
 * Redis URLs: redis://[[user]:password@]host[:port][/db] and rediss:// for
 * TLS. A pure parser (no I/O), so that configuration validation and the
 * Redis store read a URL the same way, and --check-config refuses exactly
 * what the store would refuse at startup.
 */
#include "switchyard/redis_url.h"
#include "switchyard/hex.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Percent-decodes [p, p+n) into a new string; NULL on a bad escape or an
 * encoded NUL (either would make the credential mean something else). */
static char *pct_decode(const char *p, size_t n)
{
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '%') {
			int hi = i + 1 < n ? sy_hexval((unsigned char)p[i + 1]) : -1;
			int lo = i + 2 < n ? sy_hexval((unsigned char)p[i + 2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(out);
				return NULL;
			}
			*o++ = (char)(hi * 16 + lo);
			i += 2;
		} else {
			*o++ = p[i];
		}
	}
	*o = '\0';
	return out;
}

/* Messages name the problem, never the URL itself: it may hold a password. */
int redis_url_parse(const char *url, sy_redis_url *u, const char **error_r)
{
	const char *p;

	memset(u, 0, sizeof(*u));
	u->db = -1;
	if (!url || !*url) {
		*error_r = "mapping.redis.url: is required";
		return -1;
	}
	if (strncasecmp(url, "rediss://", 9) == 0) {
		u->tls = true;
		p = url + 9;
	} else if (strncasecmp(url, "redis://", 8) == 0) {
		p = url + 8;
	} else {
		*error_r = "mapping.redis.url: must start with redis:// or rediss://";
		return -1;
	}
	if (strchr(p, '?') || strchr(p, '#')) {
		*error_r = "mapping.redis.url: query parameters are not supported (put the "
		           "database number in the path: redis://host:port/db)";
		return -1;
	}
	/* The user info ends at the last '@', so an unencoded '@' in a password
	 * still works; a '/' in it must be written %2F. */
	const char *at = strrchr(p, '@');
	const char *slash = strchr(at ? at : p, '/');
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (!colon) {
			*error_r = "mapping.redis.url: a user name needs a password "
			           "(redis://user:password@host or redis://:password@host)";
			return -1;
		}
		if (colon > p) {
			u->user = pct_decode(p, (size_t)(colon - p));
			if (!u->user) {
				*error_r =
				    "mapping.redis.url: bad percent-encoding in the user name";
				return -1;
			}
		}
		u->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
		if (!u->password) {
			*error_r = "mapping.redis.url: bad percent-encoding in the password";
			return -1;
		}
		if (!*u->password) {
			*error_r = "mapping.redis.url: the password is empty";
			return -1;
		}
		p = at + 1;
	}
	const char *hostend = slash ? slash : p + strlen(p);
	const char *portstr = NULL;
	size_t hostlen;
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(hostend - p));
		if (!rb) {
			*error_r = "mapping.redis.url: unterminated [IPv6 address]";
			return -1;
		}
		hostlen = (size_t)(rb - p - 1);
		u->host = strndup(p + 1, hostlen);
		if (rb + 1 < hostend) {
			if (rb[1] != ':') {
				*error_r = "mapping.redis.url: junk after the [IPv6 address]";
				return -1;
			}
			portstr = rb + 2;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(hostend - p));
		hostlen = (size_t)((colon ? colon : hostend) - p);
		u->host = strndup(p, hostlen);
		if (colon)
			portstr = colon + 1;
	}
	if (!u->host) {
		*error_r = "mapping.redis.url: out of memory";
		return -1;
	}
	if (!*u->host) {
		*error_r = "mapping.redis.url: the host is missing";
		return -1;
	}
	u->port = 6379;
	if (portstr) {
		long port = 0;
		const char *q = portstr;
		if (q == hostend) {
			*error_r = "mapping.redis.url: the port is empty";
			return -1;
		}
		for (; q < hostend; q++) {
			if (!isdigit((unsigned char)*q) ||
			    (port = port * 10 + (*q - '0')) > 65535) {
				*error_r =
				    "mapping.redis.url: the port must be a number from 1 to 65535";
				return -1;
			}
		}
		if (port == 0) {
			*error_r = "mapping.redis.url: the port must be a number from 1 to 65535";
			return -1;
		}
		u->port = (int)port;
	}
	if (slash && slash[1]) {
		long db = 0;
		for (const char *q = slash + 1; *q; q++) {
			if (!isdigit((unsigned char)*q) || (db = db * 10 + (*q - '0')) > INT_MAX) {
				*error_r = "mapping.redis.url: the path must be a database number "
				           "(redis://host:port/2)";
				return -1;
			}
		}
		u->db = (int)db;
	}
	return 0;
}

void redis_url_free(sy_redis_url *u)
{
	if (!u)
		return;
	free(u->host);
	free(u->user);
	if (u->password) {
		/* Not a secret worth OPENSSL_cleanse here, but no reason to leave
		 * it in freed memory either. */
		volatile char *q = u->password;
		while (*q)
			*q++ = '\0';
	}
	free(u->password);
	memset(u, 0, sizeof(*u));
}
