/*
 * The management side port (admin.h): routing of requests to endpoints,
 * bearer-token authentication with a per-client-IP lockout, and the
 * endpoints themselves. Everything runs on the main thread's loop; work on
 * sessions goes to the workers through the host's broadcast, work on mappings
 * through a main-loop context of the current router (replaced when a reload
 * switches routers).
 *
 * Settings are read from the current snapshot at each request, so a reload
 * changes the token and the lockout policy at once; the bind address and
 * TLS mode are fixed at startup.
 */
#include "switchyard/admin.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "switchyard/clock.h"
#include "switchyard/hold.h"
#include "switchyard/http.h"
#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/proxy_protocol.h"
#include "switchyard/route.h"
#include "switchyard/sasl.h"
#include "switchyard/session.h"

/* A worker that has not ticked for this long fails /livez. */
#define LIVENESS_STALE_MS 5000
/* Client IPs whose failures are remembered at once. */
#define LOCKOUT_TABLE 1024

typedef struct lockout_entry {
	bool used;
	unsigned char ip[16]; /* IPv4 as v4-mapped IPv6 */
	uint32_t failures;
	uint64_t first_ms;     /* start of the current failure window */
	uint64_t locked_until; /* 0: not locked */
	uint64_t last_ms;
} lockout_entry;

struct sy_admin {
	sy_admin_host host; /* the runtime (admin.h) */
	sy_http_server *http;
	sy_route_ctx *route_ctx; /* NULL without a router */
	bool tls;
	/* Held by the port and by every request waiting for a store or the
	 * workers, so their completions may still read `a` after admin_stop. */
	int refs;
	bool stopped;
	lockout_entry lockout[LOCKOUT_TABLE];
};

static struct sy_admin *admin_ref(struct sy_admin *a)
{
	a->refs++;
	return a;
}

static void admin_unref(struct sy_admin *a)
{
	if (--a->refs == 0)
		free(a);
}

/* ---- small helpers ------------------------------------------------------------------------- */

static void respond_json(sy_http_req *req, int status, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	if (!text) {
		http_respond_text(req, 500, "out of memory\n");
		return;
	}
	size_t len = strlen(text);
	/* One line, newline-terminated, for curl users. */
	char *body = realloc(text, len + 2);
	if (body) {
		text = body;
		text[len++] = '\n';
		text[len] = '\0';
	}
	http_respond(req, status, "application/json", text, len, NULL);
	free(text);
}

static void respond_textf(sy_http_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void respond_textf(sy_http_req *req, int status, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	http_respond_text(req, status, buf);
}

/* A text body "<prefix><msg>\n" of any length (msg may hold several lines,
 * such as every problem of a configuration). */
static void respond_text_msg(sy_http_req *req, int status, const char *prefix, const char *msg)
{
	size_t plen = strlen(prefix), mlen = strlen(msg);
	while (mlen > 0 && msg[mlen - 1] == '\n')
		mlen--;
	char *body = malloc(plen + mlen + 2);
	if (!body) {
		http_respond_text(req, 500, "out of memory\n");
		return;
	}
	memcpy(body, prefix, plen);
	memcpy(body + plen, msg, mlen);
	body[plen + mlen] = '\n';
	body[plen + mlen + 1] = '\0';
	http_respond_text(req, status, body);
	free(body);
}

/* The routing identifier an operator means: cut at the master-user
 * separators and normalized exactly like a login's (a PLAIN login with this
 * user name). NULL when invalid. */
static char *normalize(const sy_config *cfg, const char *raw)
{
	sy_credentials c = {.mech = SY_MECH_LOGIN, .authcid = (char *)raw};
	char *id = NULL;
	if (identifier_extract(&c, cfg, &id) != SY_IDENT_OK)
		return NULL;
	return id;
}

/* ---- fleet events ------------------------------------------------------------------------- */

/*
 * Management actions that change routing or sessions act on every replica:
 * the local replica acts first, then the event is published on the shared
 * store (route.h, events.c) and the answer says so in X-Switchyard-Fleet:
 *   published; seq=N       every replica applies it (this one already did)
 *   local; reason=requested   ?scope=local
 *   local; reason=store    the mapping source carries no events (file)
 * The body stays the reference system's. When publishing fails, the local
 * action has happened but the others did not hear of it: 503, so that a
 * script retries (every one of these actions is idempotent).
 */

#define FLEET_HDR "X-Switchyard-Fleet: "

/* Reads ?scope= ("fleet", the default, or "local"). Answers 400 and returns
 * -1 for any other value. */
static int read_scope(sy_http_req *req, bool *local)
{
	bool present = false;
	char *v = http_query_param(req, "scope", &present);
	int rc = 0;
	*local = false;
	if (present && v && strcmp(v, "local") == 0)
		*local = true;
	else if (present && (!v || strcmp(v, "fleet") != 0)) {
		http_respond_text(req, 400, "scope must be fleet or local\n");
		rc = -1;
	}
	free(v);
	return rc;
}

typedef struct fleet_op {
	sy_http_req *req;
	int status;
	char *body;
	sy_fleet_type type;
	char *identifier;
} fleet_op;

static void fleet_published(void *arg, uint64_t seq, const char *error)
{
	fleet_op *op = arg;
	char hdr[96];
	if (error) {
		sy_log(SY_LOG_WARN,
		       "admin: applied on this replica, but the fleet event was not published",
		       "type", route_fleet_type_name(op->type), "identifier",
		       op->identifier ? op->identifier : "(all)", "error", error, NULL);
		snprintf(hdr, sizeof(hdr), FLEET_HDR "failed\r\n");
		char body[400];
		snprintf(body, sizeof(body),
		         "applied on this replica only: the fleet event was not published: %s\n",
		         error);
		http_respond(op->req, 503, "text/plain; charset=utf-8", body, strlen(body), hdr);
	} else {
		snprintf(hdr, sizeof(hdr), FLEET_HDR "published; seq=%llu\r\n",
		         (unsigned long long)seq);
		http_respond(op->req, op->status, "text/plain; charset=utf-8", op->body,
		             strlen(op->body), hdr);
	}
	free(op->body);
	free(op->identifier);
	free(op);
}

/* The local part of an action is done and `body` is its answer: publishes
 * the event unless `local`, then answers. `identifier` is normalized (NULL:
 * invalidate everything). */
static void fleet_finish(struct sy_admin *a, sy_http_req *req, bool local, int status,
                         const char *body, sy_fleet_type type, const char *identifier,
                         unsigned seconds)
{
	const char *why = local ? "requested" : NULL;
	if (!why && (a->stopped || !a->route_ctx || !route_fleet_available(a->route_ctx)))
		why = "store";
	if (!why) {
		fleet_op *op = calloc(1, sizeof(*op));
		if (op) {
			op->req = req;
			op->status = status;
			op->type = type;
			op->body = strdup(body);
			op->identifier = identifier ? strdup(identifier) : NULL;
		}
		if (!op || !op->body || (identifier && !op->identifier) ||
		    route_fleet_publish(a->route_ctx, type, identifier, seconds, fleet_published,
		                        op) != 0) {
			if (op) {
				free(op->body);
				free(op->identifier);
				free(op);
			}
			sy_log(SY_LOG_WARN, "admin: cannot publish the fleet event", "type",
			       route_fleet_type_name(type), NULL);
			const char *m = "applied on this replica only: the fleet event could not "
			                "be published\n";
			http_respond(req, 503, "text/plain; charset=utf-8", m, strlen(m),
			             FLEET_HDR "failed\r\n");
		}
		return;
	}
	char hdr[64];
	snprintf(hdr, sizeof(hdr), FLEET_HDR "local; reason=%s\r\n", why);
	http_respond(req, status, "text/plain; charset=utf-8", body, strlen(body), hdr);
}

/* ---- authentication and lockout ----------------------------------------------------------------
 */

static void ip_key(const struct sockaddr_storage *ss, unsigned char out[16])
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	}
}

/* The entry for an IP; with create, a free or the least recently used slot
 * (the table is bounded: an attacker spraying addresses only evicts its own
 * oldest entries). */
static lockout_entry *lockout_find(struct sy_admin *a, const unsigned char ip[16], bool create)
{
	lockout_entry *lru = NULL, *free_slot = NULL;
	for (size_t i = 0; i < LOCKOUT_TABLE; i++) {
		lockout_entry *e = &a->lockout[i];
		if (!e->used) {
			if (!free_slot)
				free_slot = e;
			continue;
		}
		if (memcmp(e->ip, ip, 16) == 0)
			return e;
		if (!lru || e->last_ms < lru->last_ms)
			lru = e;
	}
	if (!create)
		return NULL;
	lockout_entry *e = free_slot ? free_slot : lru;
	memset(e, 0, sizeof(*e));
	e->used = true;
	memcpy(e->ip, ip, 16);
	return e;
}

/* Constant-time token check: both sides are hashed first, so neither the
 * content nor the length of the token leaks through timing. */
static bool token_ok(const char *expected, const char *authorization)
{
	if (!expected || !*expected || !authorization)
		return false;
	const char *p = authorization;
	if (strncasecmp(p, "Bearer ", 7) != 0)
		return false;
	p += 7;
	while (*p == ' ')
		p++;
	size_t len = strlen(p);
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	unsigned char h1[32], h2[32];
	unsigned l1 = 0, l2 = 0;
	if (EVP_Digest(p, len, h1, &l1, EVP_sha256(), NULL) != 1 ||
	    EVP_Digest(expected, strlen(expected), h2, &l2, EVP_sha256(), NULL) != 1)
		return false;
	return CRYPTO_memcmp(h1, h2, 32) == 0;
}

/* Checks the bearer token. Answers 401/429 itself and returns false when
 * the request may not go on. */
static bool authorize(struct sy_admin *a, sy_http_req *req, const sy_config *cfg)
{
	unsigned char ip[16];
	ip_key(&req->peer, ip);
	uint64_t now = sy_now_ms();
	const sy_admin_config *ac = &cfg->admin;
	lockout_entry *e = lockout_find(a, ip, false);
	if (e) {
		e->last_ms = now;
		if (e->locked_until > now) {
			char hdr[64];
			snprintf(hdr, sizeof(hdr), "Retry-After: %llu\r\n",
			         (unsigned long long)((e->locked_until - now + 999) / 1000));
			const char *body = "too many failed attempts; try again later\n";
			http_respond(req, 429, NULL, body, strlen(body), hdr);
			return false;
		}
		if (e->locked_until) {
			/* The lockout has passed: start afresh. */
			e->locked_until = 0;
			e->failures = 0;
		}
	}
	if (token_ok(ac->token, req->authorization)) {
		if (e)
			e->used = false;
		return true;
	}
	metrics_admin_auth_failure();
	e = lockout_find(a, ip, true);
	e->last_ms = now;
	if (e->failures == 0 || now - e->first_ms > ac->lockout_duration_ms) {
		e->failures = 0;
		e->first_ms = now;
	}
	e->failures++;
	char peer[64];
	sy_sockaddr_str((const struct sockaddr *)&req->peer, peer, sizeof(peer), false);
	if (ac->lockout_threshold > 0 && e->failures >= ac->lockout_threshold) {
		e->locked_until = now + ac->lockout_duration_ms;
		sy_log(SY_LOG_WARN, "admin: client locked out after failed authentication",
		       "client", peer, "path", req->path, NULL);
	} else {
		sy_log(SY_LOG_INFO, "admin: authentication failed", "client", peer, "path",
		       req->path, req->authorization ? NULL : "reason", "no token", NULL);
	}
	const char *body = "unauthorized\n";
	http_respond(req, 401, NULL, body, strlen(body),
	             "WWW-Authenticate: Bearer realm=\"switchyard\"\r\n");
	return false;
}

/* ---- probes ------------------------------------------------------------------------------- */

static void h_livez(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	(void)snap;
	char why[160];
	if (a->host.liveness(a->host.arg, LIVENESS_STALE_MS, why, sizeof(why)) != 0) {
		respond_textf(req, 503, "%s\n", why);
		return;
	}
	http_respond_text(req, 200, "ok\n");
}

static void host_state(struct sy_admin *a, sy_admin_state *st)
{
	memset(st, 0, sizeof(*st));
	a->host.state(a->host.arg, st);
}

static void h_readyz(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	bool verbose = false;
	free(http_query_param(req, "verbose", &verbose));
	sy_admin_state st;
	host_state(a, &st);
	char disc[2048] = "";
	bool disc_ok =
	    a->host.discovery ? a->host.discovery(a->host.arg, disc, sizeof(disc)) : true;
	struct {
		const char *name;
		bool ok;
	} checks[] = {
	    {"config", snap != NULL},
	    {"listeners", st.listeners_bound},
	    {"discovery", disc_ok},
	    {"shutdown", !st.draining},
	};
	bool all = true;
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
		all = all && checks[i].ok;
	if (all && !verbose) {
		http_respond_text(req, 200, "ok\n");
		return;
	}
	char body[3072];
	size_t n = 0;
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]) && n < sizeof(body); i++) {
		/* Discovery reports one line per discovered cluster; with none
		 * there is nothing to wait for. */
		if (strcmp(checks[i].name, "discovery") == 0 && disc[0]) {
			n += (size_t)snprintf(body + n, sizeof(body) - n, "%s", disc);
			continue;
		}
		n += (size_t)snprintf(body + n, sizeof(body) - n, "[%c]%s %s\n",
		                      checks[i].ok ? '+' : '-', checks[i].name,
		                      checks[i].ok ? "ok" : "failed");
	}
	if (n < sizeof(body))
		snprintf(body + n, sizeof(body) - n, "readyz check %s\n",
		         all ? "passed" : "failed");
	http_respond_text(req, all ? 200 : 503, body);
}

static void h_metrics(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	(void)snap;
	size_t len = 0;
	char *text = a->host.metrics(a->host.arg, &len);
	if (!text) {
		http_respond_text(req, 500, "out of memory\n");
		return;
	}
	http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
	free(text);
}

/* ---- state ---------------------------------------------------------------------------------- */

static void h_stats(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	(void)snap;
	sy_route_stats st = {0};
	struct sy_router *router = a->host.router(a->host.arg);
	if (router)
		route_stats(router, &st);
	sy_admin_state hs;
	host_state(a, &hs);
	json_t *j = json_pack("{s:I,s:I,s:f,s:I,s:I,s:I,s:b}", "cache_hits", (json_int_t)st.hits,
	                      "cache_misses", (json_int_t)st.misses, "hit_rate_pct",
	                      st.hit_rate_pct, "cache_entries", (json_int_t)st.entries,
	                      "active_connections", (json_int_t)hs.active_connections, "workers",
	                      (json_int_t)hs.nworkers, "draining", hs.draining);
	/* Fleet events: an addition to the reference's fields. */
	sy_fleet_stats fs;
	route_fleet_stats(router, &fs);
	json_t *f = json_object();
	if (j && f) {
		json_object_set_new(f, "subscription",
		                    json_string(!fs.active      ? "none"
		                                : fs.subscribed ? "up"
		                                                : "down"));
		json_t *pub = json_object(), *rcv = json_object();
		for (int t = 0; t < 3; t++) {
			json_object_set_new(pub, route_fleet_type_name((sy_fleet_type)t),
			                    json_integer((json_int_t)fs.published[t]));
			json_object_set_new(rcv, route_fleet_type_name((sy_fleet_type)t),
			                    json_integer((json_int_t)fs.received[t]));
		}
		json_object_set_new(f, "published", pub);
		json_object_set_new(f, "received", rcv);
		json_object_set_new(f, "resubscribes", json_integer((json_int_t)fs.resubscribes));
		json_object_set_new(f, "seconds_since_last_event",
		                    fs.seconds_since_event < 0 ? json_null()
		                                               : json_real(fs.seconds_since_event));
		json_object_set_new(j, "fleet", f);
	} else {
		json_decref(f);
	}
	respond_json(req, 200, j);
}

static json_t *dest_json(sy_dest_rt *d, uint64_t now)
{
	sy_health_state st = d->health ? health_get(d->health, now) : (sy_health_state){0};
	return json_pack("{s:s,s:I,s:b,s:I}", "destination", d->cfg->id, "consecutive_failures",
	                 (json_int_t)st.consecutive_failures, "down", st.down, "down_for_ms",
	                 (json_int_t)st.down_for_ms);
}

static void h_destinations(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	uint64_t now = sy_now_ms();
	json_t *list = json_array();
	const sy_config *cfg = snap->cfg;
	for (size_t i = 0; i < cfg->ndestinations; i++)
		json_array_append_new(list, dest_json(&snap->dests[i], now));
	for (size_t i = 0; snap->clusters && i < cfg->nclusters; i++) {
		const sy_cluster_config *cl = &cfg->clusters[i];
		sy_node_set *set = cluster_set_acquire(&snap->clusters[i]);
		json_t *members = json_array();
		bool all_down = set && set->n > 0;
		uint64_t failures = 0;
		for (size_t k = 0; set && k < set->n; k++) {
			json_t *m = dest_json(&set->nodes[k], now);
			all_down = all_down && json_is_true(json_object_get(m, "down"));
			failures += (uint64_t)json_integer_value(
			    json_object_get(m, "consecutive_failures"));
			json_object_set_new(m, "address", json_string(set->cfgs[k].host));
			json_object_set_new(m, "serving", json_boolean(set->serving[k]));
			json_object_set_new(m, "terminating", json_boolean(set->terminating[k]));
			json_object_set_new(m, "eligible", json_boolean(set->eligible[k]));
			json_array_append_new(members, m);
		}
		node_set_unref(set);
		json_t *o =
		    json_pack("{s:s,s:b,s:s?,s:I,s:b,s:o}", "destination", cl->id, "cluster", 1,
		              "template", cl->template_dest, "consecutive_failures",
		              (json_int_t)failures, "down", all_down, "members", members);
		if (cl->has_kubernetes) {
			const char *state = a->host.cluster_state
			                        ? a->host.cluster_state(a->host.arg, cl->id)
			                        : NULL;
			json_object_set_new(o, "kubernetes_service",
			                    json_string(cl->kubernetes.service));
			json_object_set_new(o, "discovery", json_string(state ? state : "stopped"));
		}
		json_array_append_new(list, o);
	}
	/* The reference system's shape: the list under "destinations", so a
	 * script reading .destinations[] works against either. */
	respond_json(req, 200, json_pack("{s:o}", "destinations", list));
}

static void h_destinations_reset(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	(void)a;
	char *id = http_query_param(req, "destination", NULL);
	if (!id || !*id) {
		free(id);
		http_respond_text(req, 400, "missing parameter: destination\n");
		return;
	}
	sy_dest_rt *d = snapshot_dest(snap, id);
	const sy_cluster_config *cl = config_cluster(snap->cfg, id);
	if (!d && !cl) {
		respond_textf(req, 404, "unknown destination: %s\n", id);
		free(id);
		return;
	}
	if (d && d->health)
		health_reset(d->health);
	if (cl)
		for (size_t k = 0; k < cl->nodes.len; k++) {
			sy_dest_rt *n = snapshot_dest(snap, cl->nodes.items[k]);
			if (n && n->health)
				health_reset(n->health);
		}
	sy_log(SY_LOG_INFO, "admin: destination health reset", "destination", id, NULL);
	http_respond_text(req, 200, "ok\n");
	free(id);
}

/* ---- mappings ----------------------------------------------------------------------------------
 */

/* An asynchronous mapping operation: holds the request and the snapshot
 * until the router answers. */
typedef struct map_op {
	struct sy_admin *a;
	sy_http_req *req;
	sy_snapshot *snap;
	char *identifier, *destination;
	char *key;  /* normalized identifier for the fleet event (NULL: none) */
	bool local; /* ?scope=local */
} map_op;

static map_op *map_op_new(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap, char *identifier,
                          char *dest)
{
	map_op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->a = admin_ref(a);
	op->req = req;
	op->snap = snapshot_ref(snap);
	op->identifier = identifier;
	op->destination = dest;
	return op;
}

static void map_op_free(map_op *op)
{
	admin_unref(op->a);
	snapshot_unref(op->snap);
	free(op->identifier);
	free(op->destination);
	free(op->key);
	free(op);
}

/* The mapping changed (or was absent) here: every replica drops its cached
 * answer for it. */
static void map_op_finish(map_op *op, const char *body)
{
	if (op->key)
		fleet_finish(op->a, op->req, op->local, 200, body, SY_FLEET_INVALIDATE, op->key, 0);
	else
		http_respond_text(op->req, 200, body);
}

static void on_explained(void *arg, const sy_route_explain *e)
{
	map_op *op = arg;
	if (e->error) {
		json_t *j = json_pack("{s:s,s:s?,s:s}", "identifier", e->identifier, "normalized",
		                      e->normalized, "error", e->error);
		respond_json(op->req, e->normalized ? 503 : 400, j);
	} else {
		json_t *j =
		    json_pack("{s:s,s:s?,s:s?,s:b,s:b}", "identifier", e->identifier, "normalized",
		              e->normalized, "destination", e->destination, "routed_to_default",
		              e->routed_to_default, "cached", e->cached);
		if (e->node)
			json_object_set_new(j, "node", json_string(e->node));
		respond_json(op->req, 200, j);
	}
	map_op_free(op);
}

static void on_put(void *arg, sy_route_admin_status st, const char *error)
{
	map_op *op = arg;
	switch (st) {
	case SY_ROUTE_ADMIN_OK:
		sy_log(SY_LOG_INFO, "admin: mapping set", "identifier", op->identifier,
		       "destination", op->destination, NULL);
		map_op_finish(op, "ok\n");
		break;
	case SY_ROUTE_ADMIN_READONLY:
		respond_text_msg(op->req, 501, "", error ? error : "mapping store is read-only");
		break;
	case SY_ROUTE_ADMIN_UNKNOWN_DEST:
		respond_text_msg(op->req, 400, "unknown destination: ", op->destination);
		break;
	case SY_ROUTE_ADMIN_INVALID:
		respond_text_msg(op->req, 400, "", error ? error : "invalid identifier");
		break;
	default:
		sy_log(SY_LOG_WARN, "admin: mapping upsert failed", "identifier", op->identifier,
		       "error", error ? error : "?", NULL);
		respond_text_msg(op->req, 500, "upsert failed: ", error ? error : "store error");
		break;
	}
	map_op_free(op);
}

static void on_deleted(void *arg, sy_route_admin_status st, const char *error)
{
	map_op *op = arg;
	switch (st) {
	case SY_ROUTE_ADMIN_REMOVED:
		sy_log(SY_LOG_INFO, "admin: mapping removed", "identifier", op->identifier, NULL);
		map_op_finish(op, "removed\n");
		break;
	case SY_ROUTE_ADMIN_ABSENT:
		/* Another replica may still hold an answer the store no longer
		 * has (a change made straight in the store). */
		map_op_finish(op, "absent\n");
		break;
	case SY_ROUTE_ADMIN_READONLY:
		respond_text_msg(op->req, 501, "", error ? error : "mapping store is read-only");
		break;
	case SY_ROUTE_ADMIN_INVALID:
		respond_text_msg(op->req, 400, "", error ? error : "invalid identifier");
		break;
	default:
		sy_log(SY_LOG_WARN, "admin: mapping remove failed", "identifier", op->identifier,
		       "error", error ? error : "?", NULL);
		respond_text_msg(op->req, 500, "remove failed: ", error ? error : "store error");
		break;
	}
	map_op_free(op);
}

static void h_mappings(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	if (!a->route_ctx) {
		http_respond_text(req, 501, "no routing context\n");
		return;
	}
	char *id = http_query_param(req, "identifier", NULL);
	if (!id || !*id) {
		free(id);
		http_respond_text(req, 400, "missing parameter: identifier\n");
		return;
	}
	bool local = false;
	if (req->method != SY_HTTP_GET && read_scope(req, &local) != 0) {
		free(id);
		return;
	}
	char *dest = NULL;
	if (req->method == SY_HTTP_PUT) {
		dest = http_query_param(req, "destination", NULL);
		if (!dest || !*dest) {
			free(id);
			free(dest);
			http_respond_text(req, 400, "missing parameter: destination\n");
			return;
		}
	}
	map_op *op = map_op_new(a, req, snap, id, dest);
	if (!op) {
		free(id);
		free(dest);
		http_respond_text(req, 500, "out of memory\n");
		return;
	}
	op->local = local;
	if (req->method != SY_HTTP_GET)
		op->key = normalize(snap->cfg, id);
	/* The callbacks may run before these calls return. */
	if (req->method == SY_HTTP_GET)
		route_explain(a->route_ctx, op->snap, op->identifier, on_explained, op);
	else if (req->method == SY_HTTP_PUT)
		route_put(a->route_ctx, op->snap, op->identifier, op->destination, on_put, op);
	else
		route_delete(a->route_ctx, op->snap, op->identifier, on_deleted, op);
}

static const char *source_name(sy_mapping_source s)
{
	switch (s) {
	case SY_MAP_FILE:
		return "file";
	case SY_MAP_REDIS:
		return "redis";
	case SY_MAP_SQL:
		return "sql";
	default:
		return "none";
	}
}

static void h_mappings_reload(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	if (!a->host.router(a->host.arg)) {
		http_respond_text(req, 501, "no router\n");
		return;
	}
	char *err = NULL;
	if (route_reload_file(a->host.router(a->host.arg), snap, &err) != 0) {
		sy_log(SY_LOG_ERROR, "admin: mapping file reload failed: keeping the old table",
		       "error", err ? err : "?", NULL);
		respond_text_msg(req, 500, "reload failed: ", err ? err : "error");
		free(err);
		return;
	}
	/* Redis and SQL are read on every lookup: nothing to re-read, and the
	 * reference answers the same for them. */
	if (snap->cfg->mapping.source == SY_MAP_FILE)
		sy_log(SY_LOG_INFO, "admin: mapping file reloaded", NULL);
	else if (log_enabled(SY_LOG_DEBUG))
		sy_log(SY_LOG_DEBUG, "admin: mapping reload is a no-op for this source", "source",
		       source_name(snap->cfg->mapping.source), NULL);
	http_respond_text(req, 200, "reloaded\n");
}

static void h_cache_invalidate(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	if (!a->host.router(a->host.arg)) {
		http_respond_text(req, 501, "no router\n");
		return;
	}
	bool present = false, local = false;
	if (read_scope(req, &local) != 0)
		return;
	char *id = http_query_param(req, "identifier", &present);
	if (present && (!id || !*id)) {
		free(id);
		http_respond_text(req, 400, "empty parameter: identifier\n");
		return;
	}
	route_invalidate(a->host.router(a->host.arg), snap, id);
	if (log_enabled(SY_LOG_DEBUG))
		sy_log(SY_LOG_DEBUG, "admin: cache invalidated", "identifier", id ? id : "(all)",
		       NULL);
	char *key = id ? normalize(snap->cfg, id) : NULL;
	if (id && !key)
		http_respond_text(req, 200, "ok\n"); /* not routable: nothing is cached */
	else
		fleet_finish(a, req, local, 200, "ok\n", SY_FLEET_INVALIDATE, key, 0);
	free(key);
	free(id);
}

/* ---- connections -------------------------------------------------------------------------------
 */

typedef struct kick_op {
	struct sy_admin *a;
	sy_http_req *req;
	char *identifier; /* normalized */
	bool local;
} kick_op;

/* Worker side: closes the account's bridged sessions. */
static long kick_on_worker(sy_worker *w, void *arg)
{
	kick_op *op = arg;
	return session_kick(w, op->identifier, "kicked through the admin port");
}

static void kick_done(void *arg, long total)
{
	kick_op *op = arg;
	char n[24];
	snprintf(n, sizeof(n), "%ld", total);
	sy_log(SY_LOG_INFO, "admin: sessions kicked", "identifier", op->identifier, "sessions", n,
	       NULL);
	char body[48];
	snprintf(body, sizeof(body), "kicked %ld\n", total);
	fleet_finish(op->a, op->req, op->local, 200, body, SY_FLEET_KICK, op->identifier, 0);
	admin_unref(op->a);
	free(op->identifier);
	free(op);
}

static void h_kick(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	bool local = false;
	if (read_scope(req, &local) != 0)
		return;
	char *raw = http_query_param(req, "identifier", NULL);
	if (!raw || !*raw) {
		free(raw);
		http_respond_text(req, 400, "missing parameter: identifier\n");
		return;
	}
	char *id = normalize(snap->cfg, raw);
	free(raw);
	if (!id) {
		http_respond_text(req, 400, "invalid identifier\n");
		return;
	}
	kick_op *op = calloc(1, sizeof(*op));
	if (!op) {
		free(id);
		http_respond_text(req, 500, "out of memory\n");
		return;
	}
	op->a = admin_ref(a);
	op->req = req;
	op->identifier = id;
	op->local = local;
	if (a->host.broadcast(a->host.arg, kick_on_worker, op, kick_done, op) != 0) {
		admin_unref(a);
		free(id);
		free(op);
		http_respond_text(req, 503, "shutting down\n");
	}
}

static void h_delay(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	bool local = false;
	if (read_scope(req, &local) != 0)
		return;
	char *raw = http_query_param(req, "identifier", NULL);
	char *secs = http_query_param(req, "seconds", NULL);
	if (!raw || !*raw || !secs || !*secs) {
		http_respond_text(req, 400,
		                  "missing parameter: identifier and seconds are required\n");
		goto out;
	}
	char *end = NULL;
	errno = 0;
	unsigned long s = strtoul(secs, &end, 10);
	if (errno || *end || secs[0] == '-' || s > SY_HOLD_MAX_MS / 1000) {
		respond_textf(req, 400, "seconds must be an integer from 0 to %u\n",
		              SY_HOLD_MAX_MS / 1000);
		goto out;
	}
	char *id = normalize(snap->cfg, raw);
	if (!id) {
		http_respond_text(req, 400, "invalid identifier\n");
		goto out;
	}
	if (hold_set(id, (uint64_t)s * 1000) != 0) {
		http_respond_text(req, 503, "too many delayed identifiers\n");
		free(id);
		goto out;
	}
	char n[24];
	snprintf(n, sizeof(n), "%lu", s);
	sy_log(SY_LOG_INFO, "admin: logins delayed", "identifier", id, "seconds", n, NULL);
	fleet_finish(a, req, local, 200, "ok\n", SY_FLEET_DELAY, id, (unsigned)s);
	free(id);
out:
	free(raw);
	free(secs);
}

static void h_config_reload(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap)
{
	(void)snap;
	char *err = NULL;
	if (a->host.reload(a->host.arg, "api", &err) != 0) {
		/* Text, as the reference answers a failed reload. */
		sy_admin_state st;
		host_state(a, &st);
		respond_text_msg(req, st.draining ? 503 : 400,
		                 "reload failed: ", err ? err : "error");
		free(err);
		return;
	}
	sy_snapshot *now = a->host.snapshot(a->host.arg);
	respond_json(req, 200,
	             json_pack("{s:b,s:I,s:I,s:I}", "reloaded", 1, "listeners",
	                       (json_int_t)now->cfg->nlisteners, "destinations",
	                       (json_int_t)now->cfg->ndestinations, "clusters",
	                       (json_int_t)now->cfg->nclusters));
	snapshot_unref(now);
}

/* ---- the routing table --------------------------------------------------------------------------
 */

typedef void (*handler_fn)(struct sy_admin *a, sy_http_req *req, sy_snapshot *snap);

#define M_GET    (1u << SY_HTTP_GET)
#define M_HEAD   (1u << SY_HTTP_HEAD)
#define M_POST   (1u << SY_HTTP_POST)
#define M_PUT    (1u << SY_HTTP_PUT)
#define M_DELETE (1u << SY_HTTP_DELETE)

static const struct endpoint {
	const char *path;
	unsigned methods;
	bool auth;
	handler_fn fn;
	const char *allow; /* for 405 */
} endpoints[] = {
    {"/livez", M_GET | M_HEAD, false, h_livez, "GET, HEAD"},
    {"/healthz", M_GET | M_HEAD, false, h_livez, "GET, HEAD"},
    {"/readyz", M_GET | M_HEAD, false, h_readyz, "GET, HEAD"},
    {"/metrics", M_GET | M_HEAD, false, h_metrics, "GET, HEAD"},
    {"/stats", M_GET, true, h_stats, "GET"},
    {"/destinations", M_GET, true, h_destinations, "GET"},
    {"/destinations/reset", M_POST, true, h_destinations_reset, "POST"},
    {"/mappings", M_GET | M_PUT | M_DELETE, true, h_mappings, "GET, PUT, DELETE"},
    {"/mappings/reload", M_POST, true, h_mappings_reload, "POST"},
    {"/cache/invalidate", M_POST, true, h_cache_invalidate, "POST"},
    {"/connections/kick", M_POST, true, h_kick, "POST"},
    {"/connections/delay", M_POST, true, h_delay, "POST"},
    {"/config/reload", M_POST, true, h_config_reload, "POST"},
};

/* "/stats/" is "/stats" (any number of trailing slashes, as the reference
 * system treats them); "/" itself stays "/". Trims req->path in place. */
static void trim_trailing_slashes(char *path)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		path[--n] = '\0';
}

static void on_request(void *arg, sy_http_req *req)
{
	struct sy_admin *a = arg;
	const struct endpoint *ep = NULL;
	trim_trailing_slashes(req->path);
	for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
		if (strcmp(endpoints[i].path, req->path) == 0) {
			ep = &endpoints[i];
			break;
		}
	if (!ep) {
		http_respond_text(req, 404, "not found\n");
		return;
	}
	if (req->method == SY_HTTP_OTHER || !(ep->methods & (1u << req->method))) {
		char hdr[96];
		snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", ep->allow);
		const char *body = "method not allowed\n";
		http_respond(req, 405, NULL, body, strlen(body), hdr);
		return;
	}
	sy_snapshot *snap = a->host.snapshot(a->host.arg);
	if (!ep->auth || authorize(a, req, snap->cfg)) {
		if (ep->auth && log_enabled(SY_LOG_DEBUG)) {
			char peer[64];
			sy_sockaddr_str((const struct sockaddr *)&req->peer, peer, sizeof(peer),
			                false);
			sy_log(SY_LOG_DEBUG, "admin request", "client", peer, "method",
			       req->method_name, "path", req->path, NULL);
		}
		ep->fn(a, req, snap);
	}
	snapshot_unref(snap);
}

/* ---- start / stop
 * ---------------------------------------------------------------------------------- */

static SSL *new_ssl(void *arg)
{
	struct sy_admin *a = arg;
	sy_snapshot *snap = a->host.snapshot(a->host.arg);
	SSL *ssl = tls_server_new_ssl(snap->tls_server);
	snapshot_unref(snap);
	return ssl;
}

int admin_start(const sy_admin_host *host, sy_admin **out, const char **error_r)
{
	*error_r = NULL;
	*out = NULL;
	sy_snapshot *snap = host->snapshot(host->arg);
	const sy_admin_config *ac = &snap->cfg->admin;
	if (!ac->enabled) {
		snapshot_unref(snap);
		return 0;
	}
	struct sy_admin *a = calloc(1, sizeof(*a));
	if (!a) {
		snapshot_unref(snap);
		*error_r = "out of memory";
		return -1;
	}
	a->host = *host;
	a->tls = ac->tls;
	a->refs = 1;
	a->http = http_server_start(host->loop, &ac->bind, ac->tls ? new_ssl : NULL, a, on_request,
	                            a, error_r);
	if (!a->http) {
		free(a);
		snapshot_unref(snap);
		return -1;
	}
	struct sy_router *router = host->router(host->arg);
	if (router) {
		const char *err = NULL;
		a->route_ctx = router_ctx_create(router, host->loop, 1, &err);
		if (!a->route_ctx)
			sy_log(SY_LOG_WARN, "admin: no routing context; /mappings answers 501",
			       "error", err ? err : "?", NULL);
	}
	*out = a;
	sy_log(SY_LOG_INFO, "admin port listening", "address", ac->bind.text, "tls",
	       ac->tls ? "implicit" : "plain", NULL);
	snapshot_unref(snap);
	return 0;
}

void admin_route_ctx_set(sy_admin *a, sy_route_ctx *ctx)
{
	if (!a) {
		router_ctx_close(ctx);
		return;
	}
	/* Operations already running on the old context finish there. */
	router_ctx_close(a->route_ctx);
	a->route_ctx = ctx;
}

void admin_stop(sy_admin *a)
{
	if (!a)
		return;
	http_server_stop(a->http);
	router_ctx_close(a->route_ctx);
	a->route_ctx = NULL;
	a->stopped = true;
	/* Responses still pending (a store call, a broadcast) hold a reference;
	 * they answer into the void. */
	admin_unref(a);
}
