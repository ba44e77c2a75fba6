/*
 * switchyard: command line, environment and startup.
 *
 *   switchyard [CONFIG]                 run the proxy
 *   switchyard --check-config [CONFIG]  validate and exit 0 (ok) or 1 (errors)
 *   switchyard --version | --help
 *
 * CONFIG defaults to $PROXY_CONFIG. The log level comes from PROXY_LOG, else
 * RUST_LOG (a level or a target=level list, for compatibility with the
 * reference system), else server.log_level.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "switchyard/config.h"
#include "switchyard/log.h"
#include "switchyard/server.h"

#ifndef SWITCHYARD_VERSION
#define SWITCHYARD_VERSION "0.0.0"
#endif

static void usage(FILE *out)
{
	fprintf(out, "usage: switchyard [--check-config] [CONFIG]\n"
	             "       switchyard --version | --help\n"
	             "\n"
	             "  CONFIG            path to the TOML configuration (default: $PROXY_CONFIG)\n"
	             "  --check-config    validate the configuration, print \"configuration ok\"\n"
	             "                    and exit 0, or print every error and exit 1\n"
	             "  --version         print the version and exit\n"
	             "  --help            print this help and exit\n"
	             "\n"
	             "environment: PROXY_CONFIG, PROXY_LOG (or RUST_LOG), PROXY_ADMIN_TOKEN\n");
}

/* Applies PROXY_LOG / RUST_LOG over the configured level. An unreadable
 * filter is reported and ignored rather than fatal: logging must not stop
 * the proxy from starting. */
static void apply_log_env(sy_config *cfg)
{
	sy_log_level lv;
	const char *var = NULL;
	int r = log_level_from_env(&lv, &var);
	if (r > 0)
		cfg->server.log_level = lv;
	else if (r < 0)
		sy_log(SY_LOG_WARN, "ignoring unreadable log filter", "variable", var, "value",
		       getenv(var), NULL);
}

/* Every session holds two descriptors (client and backend), so the usual
 * soft limit of 1024 open files would cap the proxy at about 500 sessions
 * while the hard limit (what the administrator allows) is often far higher.
 * Raise the soft limit to the hard one at startup and log the result, with a
 * warning when it is still below what the listeners' max_connections need. */
static void raise_nofile_limit(const sy_config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		sy_log(SY_LOG_WARN, "cannot read the open file limit", NULL);
		return;
	}
	char before[24], after[24];
	snprintf(before, sizeof(before), "%llu", (unsigned long long)rl.rlim_cur);
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			sy_log(SY_LOG_WARN, "cannot raise the open file limit", "soft", before,
			       NULL);
			return;
		}
	}
	snprintf(after, sizeof(after), "%llu", (unsigned long long)rl.rlim_cur);
	sy_log(SY_LOG_INFO, "open file limit", "limit", after, "was", before, NULL);
	/* Two descriptors per session plus a margin for listeners, stores and
	 * the admin port. */
	unsigned long long need = 256;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		need += 2ull * cfg->listeners[i].max_connections;
	if ((unsigned long long)rl.rlim_cur < need) {
		char needs[24];
		snprintf(needs, sizeof(needs), "%llu", need);
		sy_log(SY_LOG_WARN, "open file limit is below what max_connections needs", "limit",
		       after, "needed", needs, NULL);
	}
}

int main(int argc, char **argv)
{
	/* First thing, before the configuration (admin token, store passwords)
	 * is read: the process holds secrets, and later clients' passwords and
	 * tokens between a login and its replay. Not dumpable means no core
	 * file may contain them, no other process of the same user may ptrace
	 * it or read its memory, and its /proc/<pid> files belong to root
	 * (which is how tests/integration/test_credentials.py checks it). */
	bool dumpable_off = prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0;
	int dumpable_errno = errno;
	bool check_only = false;
	const char *path = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("switchyard %s\n", SWITCHYARD_VERSION);
			return 0;
		} else if (strcmp(a, "--check-config") == 0 || strcmp(a, "-t") == 0) {
			check_only = true;
		} else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "switchyard: unknown option %s\n", a);
			usage(stderr);
			return 2;
		} else if (!path) {
			path = a;
		} else {
			fprintf(stderr, "switchyard: more than one configuration path given\n");
			usage(stderr);
			return 2;
		}
	}
	if (!path) {
		path = getenv("PROXY_CONFIG");
		if (path && !*path)
			path = NULL;
	}
	if (!path) {
		fprintf(stderr, "switchyard: no configuration file: pass a path or set "
		                "PROXY_CONFIG\n");
		usage(stderr);
		return 2;
	}

	sy_config *cfg = NULL;
	sy_errors errs = {0};
	if (config_load_file(path, &cfg, &errs) != 0) {
		fprintf(stderr, "switchyard: %s: configuration invalid (%zu error%s)\n", path,
		        errs.len, errs.len == 1 ? "" : "s");
		for (size_t i = 0; i < errs.len; i++)
			fprintf(stderr, "  %s\n", errs.msgs[i]);
		sy_errors_free(&errs);
		return 1;
	}
	sy_errors_free(&errs);
	apply_log_env(cfg);

	if (check_only) {
		for (size_t i = 0; i < cfg->warnings.len; i++)
			fprintf(stderr, "switchyard: %s: warning: %s\n", path,
			        cfg->warnings.msgs[i]);
		printf("configuration ok\n");
		config_free(cfg);
		return 0;
	}

	log_set_level(cfg->server.log_level);
	log_set_format(cfg->server.log_format);
	if (dumpable_off)
		sy_log(SY_LOG_DEBUG, "core dumps disabled (not dumpable)", NULL);
	else
		sy_log(SY_LOG_WARN, "cannot disable core dumps", "error", strerror(dumpable_errno),
		       NULL);
	for (size_t i = 0; i < cfg->warnings.len; i++)
		sy_log(SY_LOG_WARN, "configuration warning", "detail", cfg->warnings.msgs[i], NULL);
	raise_nofile_limit(cfg);
	int rc = server_run(cfg);
	return rc == 0 ? 0 : 1;
}
