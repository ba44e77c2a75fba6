/*
 * k8s-driver: runs one Kubernetes discovery watch (src/k8s/) on a libuv
 * loop and prints what it reports, for tests/integration/test_k8s_discovery.py.
 *
 *   k8s-driver service=NAME [namespace=NS]
 *              [api_url=URL] [token_file=PATH] [ca_file=PATH] [sa_dir=DIR]
 *              [kubeconfig=PATH]            (else $KUBECONFIG / in-cluster rules)
 *              [watch_timeout=S] [backoff=MS] [backoff_max=MS] [token_reread=MS]
 *              [request_timeout=MS] [log=LEVEL]
 *
 * Output, one line per event, flushed at once:
 *   TARGET <api_url> ns=<namespace> source=<...>        once, after resolving
 *   STATE <SYNCING|SYNCED|DEGRADED> synced=<0|1> [error=<text>]   on a state change
 *   MEMBERS [<id>=<address>:<eligible|terminating|notserving> ...]  on a member change,
 *                                                       sorted by id
 *   STATS k=v ...                                       answer to a `stats` line
 *   STOPPED                                             the watch closed every handle
 * Input lines: `stats`, `members` (print the current list again).
 * End of input or SIGTERM stops the watch; the exit status is then 0, or 3
 * if a libuv handle was left open (the watch's close contract).
 * Exit 2: RESOLVE_ERROR <message> or START_ERROR <message>.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "switchyard/k8s.h"
#include "switchyard/log.h"

static struct {
	uv_loop_t *loop;
	k8s_watch *w;
	uv_pipe_t in;
	bool in_open;
	uv_signal_t sigterm;
	char buf[4096];
	size_t len;
	bool stopping;
} D;

static void print_members(const k8s_members *m)
{
	printf("MEMBERS");
	for (size_t i = 0; i < m->n; i++) {
		const k8s_member *x = &m->v[i];
		printf(" %s=%s:%s", x->id, x->address,
		       x->eligible      ? "eligible"
		       : x->terminating ? "terminating"
		                        : "notserving");
	}
	printf("\n");
	fflush(stdout);
}

static void on_update(k8s_watch *w, const k8s_update *u, void *arg)
{
	(void)w;
	(void)arg;
	if (u->state_changed) {
		printf("STATE %s synced=%d", k8s_watch_state_name(u->state), u->synced ? 1 : 0);
		if (u->state == K8S_WATCH_DEGRADED && u->error)
			printf(" error=%s", u->error);
		printf("\n");
		fflush(stdout);
	}
	if (u->members_changed)
		print_members(u->members);
}

static void on_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_stopped(void *arg)
{
	(void)arg;
	D.w = NULL;
	printf("STOPPED\n");
	fflush(stdout);
	if (D.in_open) {
		D.in_open = false;
		uv_close((uv_handle_t *)&D.in, on_closed);
	}
	uv_close((uv_handle_t *)&D.sigterm, on_closed);
}

static void stop(void)
{
	if (D.stopping)
		return;
	D.stopping = true;
	k8s_watch_stop(D.w, on_stopped, NULL);
}

static void print_stats(void)
{
	k8s_watch_stats s;
	k8s_watch_get_stats(D.w, &s);
	printf("STATS");
	for (int r = 0; r < K8S_RESTART_COUNT; r++)
		printf(" restarts_%s=%llu", k8s_restart_reason_name((k8s_restart_reason)r),
		       (unsigned long long)s.restarts[r]);
	printf(" list_errors=%llu watch_errors=%llu events=%llu lists=%llu last_sync_ms=%llu "
	       "state=%s synced=%d\n",
	       (unsigned long long)s.list_errors, (unsigned long long)s.watch_errors,
	       (unsigned long long)s.events, (unsigned long long)s.lists,
	       (unsigned long long)s.last_sync_ms, k8s_watch_state_name(k8s_watch_get_state(D.w)),
	       k8s_watch_has_synced(D.w) ? 1 : 0);
	fflush(stdout);
}

static void command(char *line)
{
	line[strcspn(line, "\r")] = '\0';
	if (D.stopping || !D.w)
		return;
	if (strcmp(line, "stats") == 0)
		print_stats();
	else if (strcmp(line, "members") == 0)
		print_members(k8s_watch_members(D.w));
	else if (*line)
		fprintf(stderr, "k8s-driver: unknown command %s\n", line);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)h;
	(void)hint;
	*b = uv_buf_init(D.buf + D.len, (unsigned)(sizeof(D.buf) - D.len - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)s;
	(void)b;
	if (n < 0) {
		D.in_open = false;
		uv_close((uv_handle_t *)&D.in, on_closed);
		stop();
		return;
	}
	D.len += (size_t)n;
	char *nl;
	while ((nl = memchr(D.buf, '\n', D.len)) != NULL) {
		*nl = '\0';
		command(D.buf);
		size_t used = (size_t)(nl - D.buf) + 1;
		memmove(D.buf, D.buf + used, D.len - used);
		D.len -= used;
	}
	if (D.len == sizeof(D.buf) - 1)
		D.len = 0; /* an absurd line: drop it */
}

static void on_sigterm(uv_signal_t *s, int sig)
{
	(void)s;
	(void)sig;
	stop();
}

int main(int argc, char **argv)
{
	k8s_settings st;
	sy_k8s_watch_opts o;
	const char *service = NULL;
	memset(&st, 0, sizeof(st));
	memset(&o, 0, sizeof(o));
	k8s_settings_from_env(&st);
	signal(SIGPIPE, SIG_IGN);
	log_set_level(SY_LOG_INFO);
	for (int i = 1; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq) {
			fprintf(stderr, "k8s-driver: expected key=value, got %s\n", argv[i]);
			return 64;
		}
		*eq = '\0';
		const char *k = argv[i], *v = eq + 1;
		if (strcmp(k, "service") == 0)
			service = v;
		else if (strcmp(k, "namespace") == 0)
			st.namespace_ = v;
		else if (strcmp(k, "api_url") == 0)
			st.api_url = v;
		else if (strcmp(k, "token_file") == 0)
			st.token_file = v;
		else if (strcmp(k, "ca_file") == 0)
			st.ca_file = v;
		else if (strcmp(k, "kubeconfig") == 0)
			st.kubeconfig = v;
		else if (strcmp(k, "sa_dir") == 0)
			st.sa_dir = v;
		else if (strcmp(k, "watch_timeout") == 0)
			o.watch_timeout_s = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(k, "backoff") == 0)
			o.backoff_initial_ms = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(k, "backoff_max") == 0)
			o.backoff_max_ms = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(k, "token_reread") == 0)
			o.token_reread_ms = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(k, "request_timeout") == 0)
			o.request_timeout_ms = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(k, "log") == 0) {
			sy_log_level lvl;
			if (log_level_parse(v, &lvl) == 0)
				log_set_level(lvl);
		} else {
			fprintf(stderr, "k8s-driver: unknown argument %s\n", k);
			return 64;
		}
	}
	if (!service) {
		fprintf(stderr, "k8s-driver: service= is required\n");
		return 64;
	}
	o.name = service;

	sy_k8s_target t;
	char err[512];
	if (k8s_target_resolve(&st, &t, err, sizeof(err)) != 0) {
		printf("RESOLVE_ERROR %s\n", err);
		return 2;
	}
	printf("TARGET %s ns=%s source=%s\n", t.api_url, t.namespace_, t.source ? t.source : "");
	fflush(stdout);

	D.loop = uv_default_loop();
	const char *error = NULL;
	D.w = k8s_watch_start(D.loop, &t, service, &o, on_update, NULL, &error);
	k8s_target_free(&t);
	if (!D.w) {
		printf("START_ERROR %s\n", error ? error : "(no message)");
		uv_loop_close(D.loop);
		return 2;
	}
	uv_signal_init(D.loop, &D.sigterm);
	uv_signal_start(&D.sigterm, on_sigterm, SIGTERM);
	if (uv_guess_handle(0) == UV_NAMED_PIPE) {
		uv_pipe_init(D.loop, &D.in, 0);
		D.in_open = true;
		if (uv_pipe_open(&D.in, 0) != 0 ||
		    uv_read_start((uv_stream_t *)&D.in, on_alloc, on_read) != 0) {
			fprintf(stderr, "k8s-driver: cannot read stdin\n");
			return 64;
		}
	}
	uv_run(D.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(D.loop) != 0) {
		fprintf(stderr, "k8s-driver: handles left open after stop\n");
		uv_print_all_handles(D.loop, stderr);
		return 3;
	}
	return 0;
}
