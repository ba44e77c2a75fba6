/*
 * The list+watch loop over EndpointSlices (see k8s.h), on libcurl's multi
 * interface driven by one libuv loop: libcurl says which sockets it wants
 * polled (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t per socket) and when it
 * wants to be called back (CURLMOPT_TIMERFUNCTION -> one uv_timer_t), and
 * every readiness or timeout is handed back with curl_multi_socket_action.
 * Nothing here blocks: name resolution is libcurl's threaded resolver, the
 * only file reads are the small token file.
 *
 * One request is in flight at a time. The phase machine:
 *
 *   IDLE --(retry timer)--> LISTING --200--> IDLE --(0)--> WATCHING
 *   WATCHING --stream ends--> IDLE --(0)--> WATCHING        (re-watch, last version)
 *   WATCHING --410 / ERROR 410--> IDLE --(0)--> LISTING     (relist)
 *   any --401--> token re-read --> IDLE --(0 if it changed, else backoff)
 *   any --error--> IDLE --(backoff with jitter)--> LISTING or WATCHING
 *   any --k8s_watch_stop--> STOPPING --(last handle closed)--> freed
 *
 * Events are applied to the table from inside libcurl's write callback (a
 * pure operation); the application is told only after
 * curl_multi_socket_action has returned, so its callback may stop the watch
 * and never runs inside libcurl.
 */
#include "switchyard/k8s.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "switchyard/log.h"

#define ERR_BODY_MAX      (64u << 10) /* body of a non-200 answer (a Status) */
#define SHORT_WATCH_MS    500         /* an empty watch shorter than this backs off */
#define DEFAULT_WATCH_S   300
#define DEFAULT_REQ_MS    30000
#define DEFAULT_BACKOFF   500
#define DEFAULT_BACKOFF_X 30000
#define DEFAULT_TOKEN_MS  60000
#define DEFAULT_ERRLOG_MS 60000

typedef enum phase { PH_IDLE, PH_LISTING, PH_WATCHING, PH_STOPPING, PH_COUNT } phase;
static const char *const phase_names[PH_COUNT] = {"idle", "listing", "watching", "stopping"};

static const char *const state_names[K8S_WATCH_STATE_COUNT] = {
    [K8S_WATCH_SYNCING] = "SYNCING",
    [K8S_WATCH_SYNCED] = "SYNCED",
    [K8S_WATCH_DEGRADED] = "DEGRADED",
    [K8S_WATCH_STOPPED] = "STOPPED",
};

static const char *const reason_names[K8S_RESTART_COUNT] = {
    [K8S_RESTART_EXPIRED] = "expired",
    [K8S_RESTART_GONE] = "gone",
    [K8S_RESTART_UNAUTHORIZED] = "unauthorized",
    [K8S_RESTART_ERROR] = "error",
};

const char *k8s_watch_state_name(k8s_watch_state s)
{
	return s < K8S_WATCH_STATE_COUNT ? state_names[s] : "?";
}

const char *k8s_restart_reason_name(k8s_restart_reason r)
{
	return r < K8S_RESTART_COUNT ? reason_names[r] : "?";
}

typedef struct sockctx {
	uv_poll_t poll;
	curl_socket_t fd;
	struct k8s_watch *w;
	struct sockctx *next, *prev;
} sockctx;

struct k8s_watch {
	uv_loop_t *loop;
	sy_k8s_target t;
	char *service;
	char *name;
	sy_k8s_watch_opts o;
	k8s_members_cb cb;
	void *arg;

	CURLM *multi;
	CURL *easy;
	struct curl_slist *headers;
	char curl_err[CURL_ERROR_SIZE];
	uv_timer_t curl_timer; /* libcurl's timeout; then the teardown step */
	uv_timer_t retry_timer;
	sockctx *socks;
	unsigned open_handles;

	phase ph;
	k8s_watch_state state;
	bool has_synced;
	bool stopping;
	bool need_list;
	unsigned fails;       /* consecutive failures, for the backoff */
	unsigned gone_streak; /* 410s without an event in between */
	uint64_t rng;

	k8s_table *table;
	bool table_dirty;
	k8s_members members; /* as last reported */
	bool state_dirty;

	/* The request in flight. */
	char *buf; /* list body, error body, or the partial watch line */
	size_t len, cap;
	long code;        /* HTTP status once the headers are in */
	bool stream_ok;   /* a watch answered 200 */
	bool saw_event;   /* the watch applied at least one event */
	bool abort_gone;  /* an ERROR event with 410 */
	bool abort_error; /* another ERROR event, a malformed line, an overflow */
	char abort_msg[320];
	uint64_t started_ms;
	char *token_used; /* the token the request carries */

	char *token; /* the current token (static, or read from token_file) */
	uint64_t token_read_ms;

	k8s_watch_stats stats;
	char last_error[512];
	uint64_t last_err_log_ms;
	unsigned errors_suppressed;
	unsigned errors_since_ok;

	k8s_stopped_cb done;
	void *done_arg;
};

static void schedule(k8s_watch *w, uint64_t delay_ms);

static const char *wname(const k8s_watch *w)
{
	return w->name ? w->name : w->service;
}

static uint64_t wall_ms(void)
{
	uv_timeval64_t tv;
	if (uv_gettimeofday(&tv) != 0)
		return 0;
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* xorshift64*: jitter only, not security. */
static uint64_t next_rand(k8s_watch *w)
{
	uint64_t x = w->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	w->rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static char *dup_mem(const char *p, size_t n)
{
	if (!p)
		return NULL;
	char *r = malloc(n + 1);
	if (r) {
		memcpy(r, p, n);
		r[n] = '\0';
	}
	return r;
}

static int copy_target(const sy_k8s_target *s, sy_k8s_target *d)
{
	memset(d, 0, sizeof(*d));
	d->api_url = dup_or_null(s->api_url);
	d->namespace_ = dup_or_null(s->namespace_);
	d->ca_file = dup_or_null(s->ca_file);
	d->ca_pem = dup_mem(s->ca_pem, s->ca_pem_len);
	d->ca_pem_len = s->ca_pem_len;
	d->insecure = s->insecure;
	d->token_file = dup_or_null(s->token_file);
	d->token = dup_or_null(s->token);
	d->cert_file = dup_or_null(s->cert_file);
	d->cert_pem = dup_mem(s->cert_pem, s->cert_pem_len);
	d->cert_pem_len = s->cert_pem_len;
	d->key_file = dup_or_null(s->key_file);
	d->key_pem = dup_mem(s->key_pem, s->key_pem_len);
	d->key_pem_len = s->key_pem_len;
	d->source = dup_or_null(s->source);
	if (!d->api_url || !d->namespace_ || (s->ca_file && !d->ca_file) ||
	    (s->ca_pem && !d->ca_pem) || (s->token_file && !d->token_file) ||
	    (s->token && !d->token) || (s->cert_file && !d->cert_file) ||
	    (s->cert_pem && !d->cert_pem) || (s->key_file && !d->key_file) ||
	    (s->key_pem && !d->key_pem) || (s->source && !d->source)) {
		k8s_target_free(d);
		return -1;
	}
	return 0;
}

/* ---- state, logging, notification --------------------------------------- */

static void set_state(k8s_watch *w, k8s_watch_state s)
{
	if (w->state == s)
		return;
	sy_log(s == K8S_WATCH_DEGRADED ? SY_LOG_WARN : SY_LOG_INFO, "k8s discovery state",
	       "cluster", wname(w), "from", k8s_watch_state_name(w->state), "to",
	       k8s_watch_state_name(s), NULL);
	w->state = s;
	w->state_dirty = true;
}

/*
 * Records an error and logs it, at most once per error_log_interval_ms
 * (the suppressed ones are counted in the next line), so a long outage
 * gives one line a minute rather than one per retry.
 */
static void record_error(k8s_watch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void record_error(k8s_watch *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->last_error, sizeof(w->last_error), fmt, ap);
	va_end(ap);
	w->errors_since_ok++;
	uint64_t now = uv_now(w->loop);
	if (w->last_err_log_ms == 0 || now - w->last_err_log_ms >= w->o.error_log_interval_ms) {
		char sup[24], fails[24];
		snprintf(sup, sizeof(sup), "%u", w->errors_suppressed);
		snprintf(fails, sizeof(fails), "%u", w->errors_since_ok);
		sy_log(SY_LOG_WARN, "k8s discovery error", "cluster", wname(w), "service",
		       w->service, "namespace", w->t.namespace_, "error", w->last_error,
		       "consecutive", fails, "suppressed", sup, NULL);
		w->last_err_log_ms = now;
		w->errors_suppressed = 0;
	} else {
		w->errors_suppressed++;
	}
	set_state(w, K8S_WATCH_DEGRADED);
}

static void mark_healthy(k8s_watch *w)
{
	w->fails = 0;
	if (w->state == K8S_WATCH_DEGRADED || w->state == K8S_WATCH_SYNCING) {
		if (w->errors_since_ok > 0) {
			char n[24];
			snprintf(n, sizeof(n), "%u", w->errors_since_ok);
			sy_log(SY_LOG_INFO, "k8s discovery recovered", "cluster", wname(w),
			       "errors", n, NULL);
		}
		w->errors_since_ok = 0;
		w->errors_suppressed = 0;
		w->last_err_log_ms = 0;
		w->last_error[0] = '\0';
		set_state(w, K8S_WATCH_SYNCED);
	}
}

#define MEMBER_LOG_MAX 32 /* per kind of change per update; the rest is summed */

static void log_more(k8s_watch *w, const char *what, size_t n)
{
	if (n <= MEMBER_LOG_MAX)
		return;
	char c[24];
	snprintf(c, sizeof(c), "%zu", n - MEMBER_LOG_MAX);
	sy_log(SY_LOG_INFO, "k8s members: more changes not listed", "cluster", wname(w), "change",
	       what, "count", c, NULL);
}

/* One line per member that joined, left, started terminating or changed,
 * so a rollout reads as a sequence of pod events. */
static void log_members(k8s_watch *w, const k8s_members *before, const k8s_members *after)
{
	k8s_diff d;
	if (k8s_members_diff(before, after, &d) != 0)
		return;
	for (size_t i = 0; i < d.njoined && i < MEMBER_LOG_MAX; i++) {
		const k8s_member *m = &after->v[d.joined[i]];
		sy_log(SY_LOG_INFO, "k8s member joined", "cluster", wname(w), "node", m->id,
		       "address", m->address, "eligible", m->eligible ? "true" : "false", NULL);
	}
	log_more(w, "joined", d.njoined);
	for (size_t i = 0; i < d.nleft && i < MEMBER_LOG_MAX; i++) {
		const k8s_member *m = &before->v[d.left[i]];
		sy_log(SY_LOG_INFO, "k8s member left", "cluster", wname(w), "node", m->id,
		       "address", m->address, NULL);
	}
	log_more(w, "left", d.nleft);
	for (size_t i = 0; i < d.nterminating && i < MEMBER_LOG_MAX; i++) {
		const k8s_member *m = &after->v[d.terminating[i]];
		sy_log(SY_LOG_INFO, "k8s member terminating", "cluster", wname(w), "node", m->id,
		       "address", m->address, NULL);
	}
	log_more(w, "terminating", d.nterminating);
	for (size_t i = 0; i < d.nchanged && i < MEMBER_LOG_MAX; i++) {
		const k8s_member *m = &after->v[d.changed[i]];
		sy_log(SY_LOG_INFO, "k8s member changed", "cluster", wname(w), "node", m->id,
		       "address", m->address, "eligible", m->eligible ? "true" : "false", "serving",
		       m->serving ? "true" : "false", NULL);
	}
	log_more(w, "changed", d.nchanged);
	k8s_diff_free(&d);
}

/* Tells the application what changed since the last call, if anything. */
static void notify(k8s_watch *w)
{
	if (w->stopping)
		return;
	bool members_changed = false;
	if (w->table_dirty) {
		k8s_members now;
		w->table_dirty = false;
		if (k8s_table_members(w->table, &now) != 0) {
			record_error(w, "out of memory computing members");
		} else if (!k8s_members_equal(&now, &w->members)) {
			log_members(w, &w->members, &now);
			k8s_members_free(&w->members);
			w->members = now;
			members_changed = true;
		} else {
			k8s_members_free(&now);
		}
	}
	bool state_changed = w->state_dirty;
	w->state_dirty = false;
	if (!members_changed && !state_changed)
		return;
	k8s_update u = {
	    .state = w->state,
	    .state_changed = state_changed,
	    .members_changed = members_changed,
	    .members = &w->members,
	    .synced = w->has_synced,
	    .error = w->last_error[0] ? w->last_error : NULL,
	};
	if (w->cb)
		w->cb(w, &u, w->arg);
}

/* ---- token -------------------------------------------------------------- */

/* Re-reads the token file when `force` or when it is due. Returns true when
 * the token changed. A read failure keeps the old token. */
static bool refresh_token(k8s_watch *w, bool force)
{
	if (!w->t.token_file)
		return false;
	uint64_t now = uv_now(w->loop);
	if (!force && w->token && now - w->token_read_ms < w->o.token_reread_ms)
		return false;
	char *tok, err[384];
	w->token_read_ms = now;
	if (k8s_token_read(w->t.token_file, &tok, err, sizeof(err)) != 0) {
		sy_log(SY_LOG_WARN, "k8s token re-read failed; keeping the previous token",
		       "cluster", wname(w), "error", err, NULL);
		return false;
	}
	bool changed = !w->token || strcmp(tok, w->token) != 0;
	k8s_token_free(w->token);
	w->token = tok;
	if (changed && force)
		sy_log(SY_LOG_INFO, "k8s token file re-read: the token changed", "cluster",
		       wname(w), NULL);
	return changed;
}

/* ---- libcurl <-> libuv ----------------------------------------------- */

static void maybe_freed(k8s_watch *w);
static void after_action(k8s_watch *w);

static void on_sock_closed(uv_handle_t *h)
{
	sockctx *c = h->data;
	k8s_watch *w = c->w;
	free(c);
	w->open_handles--;
	maybe_freed(w);
}

static void close_sock(k8s_watch *w, sockctx *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->socks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (w->multi)
		curl_multi_assign(w->multi, c->fd, NULL);
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	sockctx *c = h->data;
	k8s_watch *w = c->w;
	int flags = 0, running = 0;
	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	if (w->stopping)
		return;
	curl_multi_socket_action(w->multi, c->fd, flags, &running);
	after_action(w);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)e;
	k8s_watch *w = userp;
	sockctx *c = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (c)
			close_sock(w, c);
		return 0;
	}
	if (w->stopping)
		return 0;
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return -1;
		if (uv_poll_init_socket(w->loop, &c->poll, s) != 0) {
			free(c);
			return -1;
		}
		c->fd = s;
		c->w = w;
		c->poll.data = c;
		c->next = w->socks;
		if (w->socks)
			w->socks->prev = c;
		w->socks = c;
		w->open_handles++;
		curl_multi_assign(w->multi, s, c);
	}
	int ev = 0;
	if (what & CURL_POLL_IN)
		ev |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		ev |= UV_WRITABLE;
	uv_poll_start(&c->poll, ev, on_poll);
	return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
	k8s_watch *w = t->data;
	int running = 0;
	if (w->stopping)
		return;
	curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	after_action(w);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	k8s_watch *w = userp;
	if (w->stopping)
		return 0;
	if (timeout_ms < 0)
		uv_timer_stop(&w->curl_timer);
	else
		uv_timer_start(&w->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- request bodies ----------------------------------------------------- */

static int buf_append(k8s_watch *w, const char *p, size_t n, size_t cap)
{
	if (w->len + n > cap)
		return -1;
	if (w->len + n + 1 > w->cap) {
		size_t nc = w->cap ? w->cap : 4096;
		while (nc < w->len + n + 1)
			nc *= 2;
		if (nc > cap + 1)
			nc = cap + 1;
		char *nb = realloc(w->buf, nc);
		if (!nb)
			return -1;
		w->buf = nb;
		w->cap = nc;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
	w->buf[w->len] = '\0';
	return 0;
}

/* Applies one complete event line; false aborts the stream. */
static bool apply_line(k8s_watch *w, const char *line, size_t n)
{
	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' '))
		n--;
	if (n == 0)
		return true;
	k8s_event_result r;
	char err[256];
	if (k8s_table_apply_event(w->table, line, n, &r, err, sizeof(err)) != 0) {
		w->abort_error = true;
		snprintf(w->abort_msg, sizeof(w->abort_msg), "malformed watch event: %s", err);
		return false;
	}
	if (r.type == K8S_EV_ERROR) {
		if (r.gone) {
			w->abort_gone = true;
		} else {
			w->abort_error = true;
			snprintf(w->abort_msg, sizeof(w->abort_msg),
			         "watch ERROR event: code %ld: %s", r.code,
			         r.message[0] ? r.message : "(no message)");
		}
		return false;
	}
	w->stats.events++;
	w->stats.last_sync_ms = wall_ms();
	w->saw_event = true;
	if (r.type != K8S_EV_BOOKMARK)
		w->table_dirty = true;
	return true;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *userp)
{
	k8s_watch *w = userp;
	size_t n = size * nmemb;
	if (n <= 2 && (n == 0 || p[0] == '\r' || p[0] == '\n')) {
		long code = 0;
		curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &code);
		w->code = code;
		if (w->ph == PH_WATCHING && code == 200)
			w->stream_ok = true;
	}
	return n;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *userp)
{
	k8s_watch *w = userp;
	size_t n = size * nmemb;
	if (w->code == 0)
		curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &w->code);
	if (w->ph == PH_LISTING || w->code != 200) {
		size_t cap = w->code == 200 ? K8S_LIST_MAX : ERR_BODY_MAX;
		if (buf_append(w, p, n, cap) != 0) {
			if (w->code == 200) {
				w->abort_error = true;
				snprintf(w->abort_msg, sizeof(w->abort_msg),
				         "list response larger than %zu bytes", cap);
				return 0;
			}
			return n; /* an error body: keep its head */
		}
		return n;
	}
	/* A watch stream: newline-delimited events, split anywhere by reads. */
	size_t off = 0;
	while (off < n) {
		const char *nl = memchr(p + off, '\n', n - off);
		size_t chunk = nl ? (size_t)(nl - (p + off)) : n - off;
		if (buf_append(w, p + off, chunk, K8S_LINE_MAX) != 0) {
			w->abort_error = true;
			snprintf(w->abort_msg, sizeof(w->abort_msg),
			         "watch event line longer than %u bytes", K8S_LINE_MAX);
			return 0;
		}
		off += chunk;
		if (!nl)
			break;
		off++; /* the newline */
		bool go_on = apply_line(w, w->buf, w->len);
		w->len = 0;
		if (!go_on)
			return 0;
	}
	return n;
}

/* ---- requests ------------------------------------------------------- */

static void wipe_headers(struct curl_slist *h)
{
	for (struct curl_slist *s = h; s; s = s->next)
		OPENSSL_cleanse(s->data, strlen(s->data));
	curl_slist_free_all(h);
}

static char *build_url(k8s_watch *w, bool watch)
{
	char *ns = curl_easy_escape(w->easy, w->t.namespace_, 0);
	char *sel_svc = curl_easy_escape(w->easy, w->service, 0);
	char *rv = watch ? curl_easy_escape(w->easy, k8s_table_version(w->table), 0) : NULL;
	char *url = NULL;
	if (ns && sel_svc && (!watch || rv)) {
		size_t l = strlen(w->t.api_url) + strlen(ns) + strlen(sel_svc) +
		           (rv ? strlen(rv) : 0) + 256;
		url = malloc(l);
		if (url) {
			int o = snprintf(url, l,
			                 "%s/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices"
			                 "?labelSelector=kubernetes.io%%2Fservice-name%%3D%s",
			                 w->t.api_url, ns, sel_svc);
			if (watch)
				snprintf(url + o, l - (size_t)o,
				         "&watch=1&allowWatchBookmarks=true&resourceVersion=%s"
				         "&timeoutSeconds=%u",
				         rv, w->o.watch_timeout_s);
		}
	}
	curl_free(ns);
	curl_free(sel_svc);
	curl_free(rv);
	return url;
}

static void set_blob(CURL *e, CURLoption opt, char *p, size_t n)
{
	struct curl_blob b = {.data = p, .len = n, .flags = CURL_BLOB_COPY};
	curl_easy_setopt(e, opt, &b);
}

/* Starts the next request; on a local failure records it and backs off. */
static void start_request(k8s_watch *w)
{
	bool watch = !w->need_list;
	refresh_token(w, false);
	w->easy = curl_easy_init();
	if (!w->easy) {
		record_error(w, "curl_easy_init failed");
		schedule(w, w->o.backoff_max_ms);
		return;
	}
	char *url = build_url(w, watch);
	w->headers = curl_slist_append(NULL, "Accept: application/json");
	if (w->token) {
		size_t l = strlen(w->token) + 32;
		char *h = malloc(l);
		if (h) {
			snprintf(h, l, "Authorization: Bearer %s", w->token);
			struct curl_slist *nh = curl_slist_append(w->headers, h);
			if (nh)
				w->headers = nh;
			OPENSSL_cleanse(h, l);
			free(h);
		}
	}
	free(w->token_used);
	w->token_used = w->token ? strdup(w->token) : NULL;
	if (!url || !w->headers) {
		free(url);
		curl_easy_cleanup(w->easy);
		w->easy = NULL;
		wipe_headers(w->headers);
		w->headers = NULL;
		record_error(w, "out of memory starting a request");
		schedule(w, w->o.backoff_max_ms);
		return;
	}
	CURL *e = w->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	free(url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, w->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "switchyard/" SWITCHYARD_VERSION);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, w->curl_err);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, w);
	curl_easy_setopt(e, CURLOPT_PRIVATE, w);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)w->o.request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
	                 watch ? (long)(w->o.watch_timeout_s + 30) * 1000L
	                       : (long)w->o.request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	if (w->t.insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (w->t.ca_pem) {
		set_blob(e, CURLOPT_CAINFO_BLOB, w->t.ca_pem, w->t.ca_pem_len);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	} else if (w->t.ca_file) {
		curl_easy_setopt(e, CURLOPT_CAINFO, w->t.ca_file);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	}
	if (w->t.cert_pem) {
		set_blob(e, CURLOPT_SSLCERT_BLOB, w->t.cert_pem, w->t.cert_pem_len);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
	} else if (w->t.cert_file) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, w->t.cert_file);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (w->t.key_pem) {
		set_blob(e, CURLOPT_SSLKEY_BLOB, w->t.key_pem, w->t.key_pem_len);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	} else if (w->t.key_file) {
		curl_easy_setopt(e, CURLOPT_SSLKEY, w->t.key_file);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	w->len = 0;
	w->code = 0;
	w->stream_ok = w->saw_event = w->abort_gone = w->abort_error = false;
	w->abort_msg[0] = '\0';
	w->curl_err[0] = '\0';
	w->started_ms = uv_now(w->loop);
	w->ph = watch ? PH_WATCHING : PH_LISTING;
	if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		w->easy = NULL;
		wipe_headers(w->headers);
		w->headers = NULL;
		w->ph = PH_IDLE;
		record_error(w, "curl_multi_add_handle failed");
		schedule(w, w->o.backoff_max_ms);
		return;
	}
	sy_log(SY_LOG_DEBUG, watch ? "k8s watch started" : "k8s list started", "cluster", wname(w),
	       "resource_version", watch ? k8s_table_version(w->table) : "", NULL);
}

static void on_retry(uv_timer_t *t)
{
	k8s_watch *w = t->data;
	if (w->stopping || w->ph != PH_IDLE)
		return;
	start_request(w);
	notify(w); /* a request that could not even start changed the state */
}

static void schedule(k8s_watch *w, uint64_t delay_ms)
{
	w->ph = PH_IDLE;
	uv_timer_start(&w->retry_timer, on_retry, delay_ms, 0);
}

/* The next backoff delay: exponential from backoff_initial_ms, capped at
 * backoff_max_ms, with the upper half jittered so replicas spread out. */
static uint64_t backoff_delay(k8s_watch *w)
{
	uint64_t d = w->o.backoff_initial_ms;
	for (unsigned i = 1; i < w->fails && d < w->o.backoff_max_ms; i++)
		d *= 2;
	if (d > w->o.backoff_max_ms)
		d = w->o.backoff_max_ms;
	w->fails++;
	uint64_t half = d / 2;
	return half + (half ? next_rand(w) % (half + 1) : 0);
}

/* The message of a Status body, if the body is one. */
static void status_message(const char *body, size_t len, char *out, size_t outlen)
{
	out[0] = '\0';
	json_t *j = json_loadb(body, len, 0, NULL);
	json_t *m = json_is_object(j) ? json_object_get(j, "message") : NULL;
	if (json_is_string(m))
		snprintf(out, outlen, ": %s", json_string_value(m));
	json_decref(j);
}

static void unauthorized(k8s_watch *w, bool was_watch)
{
	w->stats.restarts[K8S_RESTART_UNAUTHORIZED]++;
	if (was_watch)
		w->stats.watch_errors++;
	else
		w->stats.list_errors++;
	record_error(w, "%s: HTTP 401 Unauthorized (token %s)", was_watch ? "watch" : "list",
	             w->t.token_file ? "file re-read" : "is static");
	refresh_token(w, true);
	bool changed = w->token && (!w->token_used || strcmp(w->token, w->token_used) != 0);
	/* A new token is tried at once; the same one again only after a backoff. */
	schedule(w, changed ? 0 : backoff_delay(w));
}

/* A request finished (libcurl's CURLMSG_DONE). */
static void finish_request(k8s_watch *w, CURLcode rc)
{
	bool was_watch = w->ph == PH_WATCHING;
	long code = 0;
	char smsg[300];
	curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &code);
	curl_multi_remove_handle(w->multi, w->easy);
	curl_easy_cleanup(w->easy);
	w->easy = NULL;
	wipe_headers(w->headers);
	w->headers = NULL;
	w->ph = PH_IDLE;
	const char *cerr = w->curl_err[0] ? w->curl_err : curl_easy_strerror(rc);
	uint64_t took = uv_now(w->loop) - w->started_ms;
	if (w->saw_event)
		w->gone_streak = 0;

	if (!was_watch) {
		if (rc == CURLE_OK && code == 200) {
			char err[320];
			if (k8s_table_apply_list(w->table, w->buf, w->len, err, sizeof(err)) != 0) {
				w->stats.list_errors++;
				w->stats.restarts[K8S_RESTART_ERROR]++;
				record_error(w, "list: %s", err);
				schedule(w, backoff_delay(w));
				return;
			}
			w->stats.lists++;
			w->stats.last_sync_ms = wall_ms();
			w->table_dirty = true;
			w->need_list = false;
			if (!w->has_synced) {
				char n[24];
				snprintf(n, sizeof(n), "%zu", k8s_table_slice_count(w->table));
				sy_log(SY_LOG_INFO, "k8s discovery synced", "cluster", wname(w),
				       "service", w->service, "namespace", w->t.namespace_,
				       "target", w->t.source ? w->t.source : w->t.api_url, "slices",
				       n, "resource_version", k8s_table_version(w->table), NULL);
			}
			w->has_synced = true;
			mark_healthy(w);
			schedule(w, 0);
			return;
		}
		if (rc == CURLE_OK && code == 401) {
			unauthorized(w, false);
			return;
		}
		w->stats.list_errors++;
		w->stats.restarts[K8S_RESTART_ERROR]++;
		if (w->abort_error)
			record_error(w, "list: %s", w->abort_msg);
		else if (rc != CURLE_OK)
			record_error(w, "list: %s", cerr);
		else {
			status_message(w->buf, w->len, smsg, sizeof(smsg));
			record_error(w, "list: HTTP %ld%s", code, smsg);
		}
		schedule(w, backoff_delay(w));
		return;
	}

	/* A watch. */
	if (w->abort_gone || (rc == CURLE_OK && code == 410)) {
		w->stats.restarts[K8S_RESTART_GONE]++;
		sy_log(SY_LOG_INFO, "k8s watch: resource version too old (410); relisting",
		       "cluster", wname(w), "resource_version", k8s_table_version(w->table), NULL);
		w->need_list = true;
		/* Relist at once, unless the fresh list's version was refused too
		 * (a server that cannot keep up): then back off. */
		schedule(w, ++w->gone_streak > 1 ? backoff_delay(w) : 0);
		return;
	}
	if (rc == CURLE_OK && code == 401) {
		unauthorized(w, true);
		return;
	}
	if (w->abort_error) {
		/* We may have missed or misread an event: start over from a list. */
		w->stats.watch_errors++;
		w->stats.restarts[K8S_RESTART_ERROR]++;
		w->need_list = true;
		record_error(w, "watch: %s", w->abort_msg);
		schedule(w, backoff_delay(w));
		return;
	}
	if (rc == CURLE_OK && code == 200) {
		/* The stream ended (timeoutSeconds, or the server closed it): go on
		 * from the last version seen. An empty, immediate end (a server
		 * refusing to stream) backs off instead of spinning. */
		w->stats.restarts[K8S_RESTART_EXPIRED]++;
		w->stats.last_sync_ms = wall_ms();
		w->gone_streak = 0;
		mark_healthy(w);
		if (!w->saw_event && took < SHORT_WATCH_MS)
			schedule(w, w->o.backoff_initial_ms);
		else
			schedule(w, 0);
		return;
	}
	w->stats.watch_errors++;
	w->stats.restarts[K8S_RESTART_ERROR]++;
	if (rc != CURLE_OK) {
		record_error(w, "watch: %s", cerr);
	} else {
		status_message(w->buf, w->len, smsg, sizeof(smsg));
		record_error(w, "watch: HTTP %ld%s", code, smsg);
	}
	schedule(w, backoff_delay(w));
}

/* Drops a large body buffer once the request is over: an idle watch holds
 * no more than a small line buffer. */
static void trim_buffer(k8s_watch *w)
{
	if (w->ph == PH_IDLE && w->cap > 65536) {
		free(w->buf);
		w->buf = NULL;
		w->cap = w->len = 0;
	}
}

static void after_action(k8s_watch *w)
{
	CURLMsg *m;
	int left;
	if (w->stopping)
		return;
	if (w->ph == PH_WATCHING && w->stream_ok)
		mark_healthy(w); /* a watch answered after an outage */
	while (w->multi && (m = curl_multi_info_read(w->multi, &left)) != NULL) {
		if (m->msg == CURLMSG_DONE && m->easy_handle == w->easy) {
			finish_request(w, m->data.result);
			trim_buffer(w);
			break; /* `m` belongs to the handle just freed */
		}
	}
	notify(w);
}

/* ---- start, stop, accessors --------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void free_watch(k8s_watch *w)
{
	k8s_target_free(&w->t);
	free(w->service);
	free(w->name);
	k8s_table_free(w->table);
	k8s_members_free(&w->members);
	free(w->buf);
	k8s_token_free(w->token);
	k8s_token_free(w->token_used);
	free(w);
}

k8s_watch *k8s_watch_start(uv_loop_t *loop, const sy_k8s_target *t, const char *service,
                           const sy_k8s_watch_opts *o, k8s_members_cb cb, void *arg,
                           const char **error_r)
{
	static _Thread_local char msg[512];
	*error_r = NULL;
	if (!service || !*service || !t || !t->api_url || !t->namespace_) {
		*error_r = "k8s_watch_start: a service, an API URL and a namespace are required";
		return NULL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		*error_r = "libcurl initialisation failed";
		return NULL;
	}
	k8s_watch *w = calloc(1, sizeof(*w));
	if (!w) {
		*error_r = "out of memory";
		return NULL;
	}
	w->loop = loop;
	w->cb = cb;
	w->arg = arg;
	if (o)
		w->o = *o;
	w->o.name = NULL;
	if (!w->o.watch_timeout_s)
		w->o.watch_timeout_s = DEFAULT_WATCH_S;
	if (!w->o.request_timeout_ms)
		w->o.request_timeout_ms = DEFAULT_REQ_MS;
	if (!w->o.backoff_initial_ms)
		w->o.backoff_initial_ms = DEFAULT_BACKOFF;
	if (!w->o.backoff_max_ms)
		w->o.backoff_max_ms = DEFAULT_BACKOFF_X;
	if (w->o.backoff_max_ms < w->o.backoff_initial_ms)
		w->o.backoff_max_ms = w->o.backoff_initial_ms;
	if (!w->o.token_reread_ms)
		w->o.token_reread_ms = DEFAULT_TOKEN_MS;
	if (!w->o.error_log_interval_ms)
		w->o.error_log_interval_ms = DEFAULT_ERRLOG_MS;
	w->service = strdup(service);
	w->name = o && o->name ? strdup(o->name) : NULL;
	w->table = k8s_table_new();
	w->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)w) | 1;
	w->need_list = true;
	w->state = K8S_WATCH_SYNCING;
	if (!w->service || (o && o->name && !w->name) || !w->table || copy_target(t, &w->t) != 0) {
		free_watch(w);
		*error_r = "out of memory";
		return NULL;
	}
	if (w->t.token_file) {
		char err[400];
		if (k8s_token_read(w->t.token_file, &w->token, err, sizeof(err)) != 0) {
			snprintf(msg, sizeof(msg), "token_file: %s", err);
			*error_r = msg;
			free_watch(w);
			return NULL;
		}
		w->token_read_ms = uv_now(loop);
	} else if (w->t.token) {
		w->token = strdup(w->t.token);
	}
	w->multi = curl_multi_init();
	if (!w->multi) {
		*error_r = "curl_multi_init failed";
		free_watch(w);
		return NULL;
	}
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
	uv_timer_init(loop, &w->curl_timer);
	uv_timer_init(loop, &w->retry_timer);
	w->curl_timer.data = w;
	w->retry_timer.data = w;
	w->open_handles = 2;
	schedule(w, 0);
	return w;
}

static void on_timer_closed(uv_handle_t *h)
{
	k8s_watch *w = h->data;
	w->open_handles--;
	maybe_freed(w);
}

static void maybe_freed(k8s_watch *w)
{
	if (!w->stopping || w->open_handles > 0 || w->multi)
		return;
	k8s_stopped_cb done = w->done;
	void *arg = w->done_arg;
	free_watch(w);
	if (done)
		done(arg);
}

/* Runs from the curl timer after k8s_watch_stop, outside every libcurl
 * callback, so handles can be removed and the multi handle cleaned up. */
static void on_teardown(uv_timer_t *t)
{
	k8s_watch *w = t->data;
	if (w->easy) {
		curl_multi_remove_handle(w->multi, w->easy);
		curl_easy_cleanup(w->easy);
		w->easy = NULL;
	}
	wipe_headers(w->headers);
	w->headers = NULL;
	while (w->socks)
		close_sock(w, w->socks);
	CURLM *m = w->multi;
	curl_multi_cleanup(m);
	/* Sockets libcurl reported during the cleanup were closed by socket_cb;
	 * anything left is closed here (the fds themselves are libcurl's). */
	w->multi = NULL;
	while (w->socks)
		close_sock(w, w->socks);
	uv_close((uv_handle_t *)&w->curl_timer, on_timer_closed);
	uv_close((uv_handle_t *)&w->retry_timer, on_timer_closed);
}

void k8s_watch_stop(k8s_watch *w, k8s_stopped_cb done, void *arg)
{
	if (!w || w->stopping)
		return;
	w->stopping = true;
	w->ph = PH_STOPPING;
	w->state = K8S_WATCH_STOPPED;
	w->done = done;
	w->done_arg = arg;
	uv_timer_stop(&w->retry_timer);
	uv_timer_start(&w->curl_timer, on_teardown, 0, 0);
	sy_log(SY_LOG_DEBUG, "k8s discovery stopping", "cluster", wname(w), "phase",
	       phase_names[PH_STOPPING], NULL);
}

bool k8s_watch_has_synced(const k8s_watch *w)
{
	return w->has_synced;
}

k8s_watch_state k8s_watch_get_state(const k8s_watch *w)
{
	return w->state;
}

const k8s_members *k8s_watch_members(const k8s_watch *w)
{
	return &w->members;
}

void k8s_watch_get_stats(const k8s_watch *w, k8s_watch_stats *out)
{
	*out = w->stats;
}

const char *k8s_watch_last_error(const k8s_watch *w)
{
	return w->last_error[0] ? w->last_error : NULL;
}
