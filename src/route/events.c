/*
 * Fleet events (route.h): cache invalidation, kick and delay carried to
 * every replica over the shared mapping store (Redis PUBLISH/SUBSCRIBE,
 * PostgreSQL NOTIFY/LISTEN).
 *
 * Format: one JSON object per message,
 *   {"v":1,"origin":"<16 hex>","seq":N,"type":"invalidate"|"kick"|"delay",
 *    "identifier":"<normalized>" (absent: invalidate everything),
 *    "seconds":N (delay)}
 * `origin` is a random id drawn at startup, `seq` counts the events this
 * process published (from 1). Events without an origin (the documented
 * PostgreSQL trigger) are applied as they come.
 *
 * Exactly once: the sender applies its event locally at once (so the API
 * answer can say what it did) and ignores its own echo; a receiver applies
 * an event of another origin only when its seq is above the last one seen
 * from that origin (a replay after a reconnect, or a duplicate, is dropped).
 *
 * Loss of the channel: while the subscription is down (or not up yet, or
 * refused by the server), what was published cannot be known, so every
 * cache lifetime is capped at 5 s (cache_cap_ttl); when it is back, the
 * cache is cleared once.
 */
#include <jansson.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router_int.h"
#include "switchyard/clock.h"
#include "switchyard/hold.h"
#include "switchyard/log.h"

#define DOWN_TTL_CAP_MS 5000

struct sy_fleet {
	sy_router *r;
	sy_store *sub;
	sy_fleet_sink sink;
	bool was_down; /* the subscription was up once and then lost */
	bool ever_up;  /* the first subscription has been confirmed */
	bool up;
	sy_fleet_seen seen;
};

static char self_origin[17];
static _Atomic uint64_t next_seq;
static _Atomic uint64_t n_published[3], n_received[3], n_resubscribes;
static _Atomic uint64_t last_event_ms;
static _Atomic bool g_active, g_subscribed;

static const char *const type_names[3] = {"invalidate", "kick", "delay"};

const char *route_fleet_type_name(sy_fleet_type t)
{
	return (unsigned)t < 3 ? type_names[t] : "?";
}

static const char *origin(void)
{
	if (!self_origin[0]) {
		unsigned char b[8];
		if (RAND_bytes(b, sizeof(b)) != 1) {
			uint64_t t = sy_now_ms() ^ (uint64_t)(uintptr_t)&b;
			memcpy(b, &t, sizeof(b));
		}
		for (int i = 0; i < 8; i++)
			snprintf(self_origin + 2 * i, 3, "%02x", b[i]);
	}
	return self_origin;
}

bool fleet_seen_first(sy_fleet_seen *t, const char *o, uint64_t seq)
{
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->e[i].id, o) == 0) {
			if (seq <= t->e[i].seq)
				return false;
			t->e[i].seq = seq;
			return true;
		}
	}
	size_t slot;
	if (t->n < FLEET_ORIGINS_MAX) {
		slot = t->n++;
	} else {
		slot = t->next_evict;
		t->next_evict = (t->next_evict + 1) % FLEET_ORIGINS_MAX;
	}
	snprintf(t->e[slot].id, sizeof(t->e[slot].id), "%s", o);
	t->e[slot].seq = seq;
	return true;
}

static void apply(struct sy_fleet *f, sy_fleet_type t, const char *id, unsigned seconds)
{
	sy_cache *c = router_cache(f->r);
	atomic_fetch_add(&n_received[t], 1);
	atomic_store(&last_event_ms, sy_now_ms());
	switch (t) {
	case SY_FLEET_INVALIDATE:
		if (!c)
			break;
		if (id)
			cache_invalidate(c, id);
		else
			cache_invalidate_all(c);
		break;
	case SY_FLEET_KICK:
		if (id && f->sink.kick)
			f->sink.kick(f->sink.arg, id);
		break;
	case SY_FLEET_DELAY:
		if (id)
			hold_set(id, (uint64_t)seconds * 1000);
		break;
	}
	char n[24];
	snprintf(n, sizeof(n), "%u", seconds);
	sy_log(SY_LOG_INFO, "fleet event applied", "type", type_names[t], "identifier",
	       id ? id : "(all)", t == SY_FLEET_DELAY ? "seconds" : NULL, n, NULL);
}

static void on_message(void *arg, sy_sub_kind kind, const char *payload, size_t len,
                       const char *what)
{
	struct sy_fleet *f = arg;
	if (kind == SY_SUB_KEYSPACE) {
		/* set, del, expired (and others that change the value: all of
		 * them make the cached answer doubtful). */
		char id[512];
		if (len >= sizeof(id))
			return;
		memcpy(id, payload, len);
		id[len] = '\0';
		(void)what;
		apply(f, SY_FLEET_INVALIDATE, id, 0);
		return;
	}
	sy_fleet_event ev;
	json_t *j = NULL;
	const char *why = NULL;
	if (fleet_event_parse(payload, len, &ev, &j, &why) != 0) {
		sy_log(SY_LOG_WARN, "fleet event ignored", "reason", why, NULL);
	} else if (ev.origin && strcmp(ev.origin, origin()) == 0) {
		/* Our own: applied when it was published. */
	} else if (ev.origin && ev.has_seq && !fleet_seen_first(&f->seen, ev.origin, ev.seq)) {
		if (log_enabled(SY_LOG_DEBUG))
			sy_log(SY_LOG_DEBUG, "fleet event ignored: seen before", "origin",
			       ev.origin, NULL);
	} else {
		apply(f, ev.type, ev.identifier, ev.seconds);
	}
	json_decref(j);
}

int fleet_event_parse(const char *payload, size_t len, sy_fleet_event *ev, json_t **json_out,
                      const char **why)
{
	memset(ev, 0, sizeof(*ev));
	*json_out = NULL;
	json_error_t jerr;
	json_t *j = json_loadb(payload, len, 0, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		*why = "not a JSON object";
		return -1;
	}
	*json_out = j;
	const char *type = json_string_value(json_object_get(j, "type"));
	int t = -1;
	for (int i = 0; type && i < 3; i++)
		if (strcmp(type, type_names[i]) == 0)
			t = i;
	if (t < 0) {
		*why = "no type or an unknown one";
		return -1;
	}
	ev->type = (sy_fleet_type)t;
	/* A field of the wrong type is an error, never "absent": an
	 * identifier that is not a string must not widen an invalidation to
	 * the whole cache. */
	json_t *jo = json_object_get(j, "origin"), *jseq = json_object_get(j, "seq");
	json_t *jid = json_object_get(j, "identifier"), *js = json_object_get(j, "seconds");
	if (jo && (!json_is_string(jo) || json_string_length(jo) == 0 ||
	           json_string_length(jo) > FLEET_ORIGIN_MAX)) {
		/* Longer origins could not be told apart once stored. */
		*why = "origin is not a string of 1 to 16 characters";
		return -1;
	}
	if (jseq && (!json_is_integer(jseq) || json_integer_value(jseq) < 0)) {
		*why = "seq is not a non-negative integer";
		return -1;
	}
	if (jid && (!json_is_string(jid) || json_string_length(jid) == 0 ||
	            strlen(json_string_value(jid)) != json_string_length(jid))) {
		*why = "identifier is not a non-empty string without NUL";
		return -1;
	}
	if (!jid && t != SY_FLEET_INVALIDATE) {
		*why = "kick and delay need an identifier";
		return -1;
	}
	if (js && (!json_is_integer(js) || json_integer_value(js) < 0 ||
	           json_integer_value(js) > SY_HOLD_MAX_MS / 1000)) {
		*why = "seconds is not an integer within the hold limit";
		return -1;
	}
	ev->origin = jo ? json_string_value(jo) : NULL;
	ev->has_seq = jseq != NULL;
	ev->seq = jseq ? (uint64_t)json_integer_value(jseq) : 0;
	ev->identifier = jid ? json_string_value(jid) : NULL;
	ev->seconds = js ? (unsigned)json_integer_value(js) : 0;
	return 0;
}

static void on_state(void *arg, bool up)
{
	struct sy_fleet *f = arg;
	sy_cache *c = router_cache(f->r);
	f->up = up;
	atomic_store(&g_subscribed, up);
	if (!up) {
		f->was_down = true;
		if (c)
			cache_cap_ttl(c, DOWN_TTL_CAP_MS);
		sy_log(SY_LOG_WARN,
		       "fleet events: subscription lost; cache lifetimes capped at 5s until it is "
		       "back",
		       NULL);
		return;
	}
	if (!f->was_down && !f->ever_up) {
		/* The first subscription: lift the startup cap (what was cached
		 * before it keeps its capped lifetime). */
		f->ever_up = true;
		if (c)
			cache_cap_ttl(c, 0);
		return;
	}
	if (f->was_down) {
		f->was_down = false;
		atomic_fetch_add(&n_resubscribes, 1);
		if (c) {
			cache_cap_ttl(c, 0);
			cache_invalidate_all(c);
		}
		sy_log(SY_LOG_INFO, "fleet events: resubscribed; cache cleared once", NULL);
	}
}

int router_fleet_start(sy_router *r, uv_loop_t *loop, const sy_fleet_sink *sink,
                       const char **error_r)
{
	*error_r = NULL;
	const sy_mapping_config *m = router_mapping(r);
	struct sy_fleet **slot = router_fleet_slot(r);
	if (*slot || (m->source != SY_MAP_REDIS && m->source != SY_MAP_SQL))
		return 0;
	struct sy_fleet *f = calloc(1, sizeof(*f));
	if (!f) {
		*error_r = "out of memory";
		return -1;
	}
	origin();
	f->r = r;
	if (sink)
		f->sink = *sink;
	sy_store_sub sub = {.arg = f, .message = on_message, .state = on_state};
	f->sub = m->source == SY_MAP_REDIS ? store_redis_subscribe(loop, m, &sub, error_r)
	                                   : store_sql_listen(loop, m, &sub, error_r);
	if (!f->sub) {
		free(f);
		return -1;
	}
	*slot = f;
	atomic_store(&g_active, true);
	/* Until the first subscription is confirmed nothing published can be
	 * heard either: the same cap as after a loss. */
	if (router_cache(r))
		cache_cap_ttl(router_cache(r), DOWN_TTL_CAP_MS);
	return 0;
}

static void sub_closed(void *arg)
{
	free(arg);
}

void router_fleet_stop(sy_router *r)
{
	struct sy_fleet **slot = r ? router_fleet_slot(r) : NULL;
	if (!slot || !*slot)
		return;
	struct sy_fleet *f = *slot;
	*slot = NULL;
	atomic_store(&g_active, false);
	atomic_store(&g_subscribed, false);
	f->sub->ops->close(f->sub, sub_closed, f);
}

bool route_fleet_available(sy_route_ctx *ctx)
{
	sy_store *st = route_ctx_store(ctx);
	return st && st->ops->publish;
}

typedef struct pub_op {
	sy_fleet_cb cb;
	void *arg;
	uint64_t seq;
	sy_fleet_type type;
} pub_op;

static void on_published(void *arg, sy_store_status st, const char *value, const char *error)
{
	(void)value;
	pub_op *op = arg;
	if (st != SY_STORE_ERROR)
		atomic_fetch_add(&n_published[op->type], 1);
	op->cb(op->arg, op->seq, st == SY_STORE_ERROR ? (error ? error : "store error") : NULL);
	free(op);
}

int route_fleet_publish(sy_route_ctx *ctx, sy_fleet_type type, const char *identifier,
                        unsigned seconds, sy_fleet_cb cb, void *arg)
{
	sy_store *st = route_ctx_store(ctx);
	if (!st || !st->ops->publish)
		return -1;
	pub_op *op = calloc(1, sizeof(*op));
	if (!op)
		return -1;
	op->cb = cb;
	op->arg = arg;
	op->type = type;
	op->seq = atomic_fetch_add(&next_seq, 1) + 1;
	json_t *j = json_pack("{s:i,s:s,s:I,s:s}", "v", 1, "origin", origin(), "seq",
	                      (json_int_t)op->seq, "type", type_names[type]);
	if (j && identifier)
		json_object_set_new(j, "identifier", json_string(identifier));
	if (j && type == SY_FLEET_DELAY)
		json_object_set_new(j, "seconds", json_integer(seconds));
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	int rc = text ? st->ops->publish(st, text, on_published, op) : -1;
	free(text);
	if (rc != 0)
		free(op);
	return rc;
}

void route_fleet_stats(sy_router *r, sy_fleet_stats *out)
{
	(void)r;
	memset(out, 0, sizeof(*out));
	out->active = atomic_load(&g_active);
	out->subscribed = atomic_load(&g_subscribed);
	for (int i = 0; i < 3; i++) {
		out->published[i] = atomic_load(&n_published[i]);
		out->received[i] = atomic_load(&n_received[i]);
	}
	out->resubscribes = atomic_load(&n_resubscribes);
	uint64_t last = atomic_load(&last_event_ms);
	out->seconds_since_event = last ? (double)(sy_now_ms() - last) / 1000.0 : -1.0;
}
