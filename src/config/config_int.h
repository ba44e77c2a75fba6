/*
 * Private glue between config.c (TOML tree -> sy_config) and validate.c (the
 * cross-field startup rules). Not part of the project-wide API.
 */
#ifndef SWITCHYARD_CONFIG_INT_H
#define SWITCHYARD_CONFIG_INT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/config.h"

/*
 * Allocation failures while building a configuration abort the process.
 * Configuration is built at startup and on reload, where memory exhaustion
 * leaves nothing sensible to fall back to, and a half-built config would be
 * far more dangerous than a crash that the supervisor restarts.
 */
static inline void *cfg_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL) {
		fputs("switchyard: out of memory while loading configuration\n", stderr);
		abort();
	}
	return p;
}

static inline void *cfg_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL) {
		fputs("switchyard: out of memory while loading configuration\n", stderr);
		abort();
	}
	return p;
}

static inline void *cfg_xrealloc(void *old, size_t n)
{
	void *p = realloc(old, n ? n : 1);
	if (p == NULL) {
		fputs("switchyard: out of memory while loading configuration\n", stderr);
		abort();
	}
	return p;
}

static inline char *cfg_xstrdup(const char *s)
{
	size_t n = strlen(s);
	char *p = cfg_xmalloc(n + 1);
	memcpy(p, s, n + 1);
	return p;
}

/*
 * Runs every cross-field rule against a converted configuration and appends
 * one message per problem to errs. Messages [prior_from, prior_to) of errs
 * are the ones the conversion step already produced: a rule whose key was
 * already reported there stays silent, so one mistake is not reported twice
 * (a listener whose protocol failed to parse is not also reported as "not
 * offered by the default destination").
 * Settings that are accepted but worth telling about (a key the reference
 * accepts and ignores) are appended to `warnings` (may be NULL), each naming
 * its key.
 * Returns 0 if no rule failed, -1 otherwise.
 */
int config_validate(const sy_config *cfg, sy_errors *errs, size_t prior_from, size_t prior_to,
                    sy_errors *warnings);

/* Longest dotted key the config module prints (longer ones are cut). */
#define CFG_KEYMAX 512

/*
 * Writes `name` into buf (CFG_KEYMAX bytes) as it appears inside a dotted key:
 * bare when TOML allows it, "quoted" otherwise. Returns buf. QN() is the
 * convenience form with a buffer that lives until the end of the block.
 */
const char *cfg_qname(const char *name, char *buf);
#define QN(name) cfg_qname((name), (char[CFG_KEYMAX]){0})

/* True if `host` is a literal IPv4 or IPv6 address (brackets allowed). */
bool cfg_host_is_ip(const char *host);

#endif
