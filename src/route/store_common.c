/*
 * Shared pieces of the Redis and PostgreSQL stores: requests, lists,
 * deferred completion.
 */
#include "store_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sy_store_req *store_req_new(sy_store_op op, const char *prefix, const char *key, const char *value,
                            sy_store_cb cb, void *arg, void *owner)
{
	size_t plen = prefix ? strlen(prefix) : 0, klen = strlen(key);
	size_t vlen = value ? strlen(value) : 0;
	sy_store_req *r = malloc(sizeof(*r) + plen + klen + 1 + vlen + 1);
	if (!r)
		return NULL;
	*r = (sy_store_req){.cb = cb, .arg = arg, .op = op, .owner = owner};
	r->key = r->buf;
	if (plen)
		memcpy(r->key, prefix, plen);
	memcpy(r->key + plen, key, klen + 1);
	r->keylen = plen + klen;
	r->value = r->key + r->keylen + 1;
	memcpy(r->value, value ? value : "", vlen + 1);
	r->valuelen = vlen;
	return r;
}

void req_list_push(sy_req_list *l, sy_store_req *r)
{
	r->next = NULL;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
	l->len++;
}

sy_store_req *req_list_pop(sy_req_list *l)
{
	sy_store_req *r = l->head;
	if (r) {
		l->head = r->next;
		if (!l->head)
			l->tail = NULL;
		l->len--;
		r->next = NULL;
	}
	return r;
}

void store_req_set_outcome(sy_store_req *r, sy_store_status st, const char *text)
{
	if (r->have_outcome && r->st == SY_STORE_ERROR)
		return;
	free(r->text);
	r->text = NULL;
	r->have_outcome = true;
	r->st = st;
	if (text) {
		r->text = strdup(text);
		if (!r->text) {
			r->st = SY_STORE_ERROR;
			r->static_error = "store: out of memory";
		}
	}
}

/* Runs every completion queued so far; completions queued by the callbacks
 * themselves wait for the next round, so a callback that issues a new
 * failing request cannot keep this loop going forever. */
static void drain(sy_completions *q)
{
	sy_req_list batch = q->list;
	q->list = (sy_req_list){0};
	sy_store_req *r;
	while ((r = req_list_pop(&batch)) != NULL) {
		const char *value = r->st == SY_STORE_FOUND ? r->text : NULL;
		const char *error = NULL;
		if (r->st == SY_STORE_ERROR)
			error = r->text ? r->text : r->static_error;
		r->cb(r->arg, r->st, value, error);
		free(r->text);
		free(r);
	}
}

static void on_idle(uv_idle_t *h)
{
	sy_completions *q = h->data;
	drain(q);
	if (!q->list.head)
		uv_idle_stop(&q->idle);
}

int completions_init(sy_completions *q, uv_loop_t *loop)
{
	*q = (sy_completions){0};
	if (uv_idle_init(loop, &q->idle) != 0)
		return -1;
	q->idle.data = q;
	return 0;
}

void completions_add(sy_completions *q, sy_store_req *r)
{
	if (!r->have_outcome)
		store_req_set_outcome(r, SY_STORE_ERROR, "store: no result");
	req_list_push(&q->list, r);
	if (!q->closing)
		uv_idle_start(&q->idle, on_idle);
}

void completions_fail(sy_completions *q, sy_store_req *r, const char *error)
{
	r->have_outcome = false;
	store_req_set_outcome(r, SY_STORE_ERROR, error);
	completions_add(q, r);
}

static void idle_closed(uv_handle_t *h)
{
	sy_completions *q = h->data;
	/* Completions queued by the last connections to go away. */
	while (q->list.head)
		drain(q);
	if (q->closed)
		q->closed(q->closed_arg);
}

void completions_close(sy_completions *q, void (*closed)(void *arg), void *arg)
{
	q->closing = true;
	q->closed = closed;
	q->closed_arg = arg;
	uv_close((uv_handle_t *)&q->idle, idle_closed);
}

/* ---- life cycle ---- */

int store_life_init(sy_store_life *l, uv_loop_t *loop, void *store, void (*free_store)(void *),
                    unsigned nslots)
{
	memset(l, 0, sizeof(*l));
	l->store = store;
	l->free_store = free_store;
	l->starting = nslots;
	return completions_init(&l->completions, loop);
}

bool store_life_begin_close(sy_store_life *l, void (*done)(void *arg), void *arg)
{
	if (l->closing)
		return false;
	l->closing = true;
	l->done = done;
	l->done_arg = arg;
	return true;
}

static void life_closed(void *arg)
{
	sy_store_life *l = arg;
	void (*done)(void *) = l->done;
	void *done_arg = l->done_arg;
	l->free_store(l->store); /* frees l too: it lives in the store */
	if (done)
		done(done_arg);
}

void store_life_maybe_finish(sy_store_life *l)
{
	if (!l->closing || l->finishing || l->open > 0)
		return;
	l->finishing = true;
	completions_close(&l->completions, life_closed, l);
}

void store_life_handle_closed(sy_store_life *l)
{
	l->open--;
	store_life_maybe_finish(l);
}

bool store_life_first_attempt_over(sy_store_life *l, bool *first_attempt)
{
	if (!*first_attempt)
		return false;
	*first_attempt = false;
	l->starting--;
	return l->starting == 0;
}

uint64_t store_backoff_next(uint64_t *backoff_ms, uint64_t max_ms)
{
	uint64_t now = *backoff_ms;
	*backoff_ms = now * 2 > max_ms ? max_ms : now * 2;
	return now;
}

const char *store_events_channel(const sy_mapping_config *cfg, char *buf, size_t len)
{
	if (cfg->source == SY_MAP_SQL)
		return cfg->sql.events_channel ? cfg->sql.events_channel : "switchyard_events";
	if (cfg->redis.events_channel)
		return cfg->redis.events_channel;
	snprintf(buf, len, "%sevents", cfg->redis.key_prefix ? cfg->redis.key_prefix : "");
	return buf;
}
