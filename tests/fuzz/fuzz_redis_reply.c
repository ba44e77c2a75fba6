/*
 * libFuzzer target for what the Redis store makes of a server's replies
 * (src/route/store_redis.c, store_reply.h): the answer to a GET, SET, DEL
 * or PUBLISH (store_redis_answer), the subscriber's pushes (confirmations,
 * fleet event messages, keyspace notifications, refusals such as NOPERM:
 * store_redis_push) and the reply to CONFIG GET notify-keyspace-events
 * (store_redis_keyspace_config). The bytes go through the store's own
 * reader (store_redis_reader: hiredis's RESP parser with the store's
 * limits on one reply), and every complete reply is converted, as on_read
 * does.
 *
 * Input: byte 0 chooses the conversion (value % 6: GET, SET, DEL, PUBLISH,
 * push, CONFIG GET) and, for pushes, the subscriber's setup (value / 6:
 * database 0-2, key_prefix "switchyard:", "" or one made of glob
 * characters, keyspace notifications followed or not); the rest is what
 * the server sent.
 *
 * Checks: a reply the reader delivers is within its limits (elements,
 * string bytes) and its strings are NUL-terminated; an error reply never yields a value (and a push
 * error is a refusal); a FOUND value is the reply's string, NUL-terminated and of the length the
 * reply claims; an error text is NUL-terminated within its buffer; a fleet event's payload has the
 * length claimed; a keyspace notification is reported only while keyspace notifications are
 * followed, only for a channel under "__keyspace@<db>__:<key_prefix>", with that prefix cut, a
 * non-empty NUL-free key and an event name; the CONFIG GET verdict matches the flags.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include "../../src/route/store_reply.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

/* Elements and string bytes of a reply, as the reader's budget counts them. */
static void measure(const redisReply *r, size_t *elements, size_t *bytes)
{
	if (r->type == REDIS_REPLY_ARRAY) {
		*elements += r->elements;
		for (size_t i = 0; i < r->elements; i++)
			measure(r->element[i], elements, bytes);
	} else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
	           r->type == REDIS_REPLY_ERROR) {
		*bytes += r->len;
		check(r->str[r->len] == '\0');
	}
}

static void check_answer(sy_store_op op, const redisReply *r)
{
	const char *value = (const char *)1, *error = (const char *)1;
	char ebuf[64];
	sy_store_status st = store_redis_answer(op, r, &value, &error, ebuf, sizeof(ebuf));
	if (r->type == REDIS_REPLY_ERROR) {
		check(st == SY_STORE_ERROR);
		check(error == ebuf && strncmp(error, "redis: ", 7) == 0);
	}
	switch (st) {
	case SY_STORE_FOUND:
		check(op == SY_STORE_OP_GET && r->type == REDIS_REPLY_STRING);
		check(value == r->str && error == NULL);
		check(strlen(value) == r->len);
		break;
	case SY_STORE_NOT_FOUND:
		check(value == NULL && error == NULL);
		check((op == SY_STORE_OP_GET && r->type == REDIS_REPLY_NIL) ||
		      (op == SY_STORE_OP_DEL && r->type == REDIS_REPLY_INTEGER && r->integer <= 0));
		break;
	case SY_STORE_DONE:
		check(value == NULL && error == NULL && op != SY_STORE_OP_GET);
		break;
	case SY_STORE_ERROR:
		check(value == NULL && error != NULL);
		check(error != ebuf || memchr(ebuf, '\0', sizeof(ebuf)) != NULL);
		(void)strlen(error);
		/* A string without NUL bytes is always a value. */
		check(!(op == SY_STORE_OP_GET && r->type == REDIS_REPLY_STRING &&
		        strlen(r->str) == r->len));
		break;
	default:
		check(0);
	}
}

static void check_push(const redisReply *r, const char *ks_channel)
{
	sy_redis_push p;
	sy_redis_push_kind k = store_redis_push(r, ks_channel, &p);
	check(k == p.kind);
	check((k == SY_REDIS_PUSH_REFUSED) == (r->type == REDIS_REPLY_ERROR));
	if (r->type != REDIS_REPLY_ARRAY)
		check(k == SY_REDIS_PUSH_OTHER || k == SY_REDIS_PUSH_REFUSED);
	switch (k) {
	case SY_REDIS_PUSH_REFUSED:
		check(p.text != NULL && strlen(p.text) == p.len);
		break;
	case SY_REDIS_PUSH_EVENT:
		check(r->elements >= 3 && p.text == r->element[2]->str);
		check(p.len == r->element[2]->len && p.text[p.len] == '\0');
		break;
	case SY_REDIS_PUSH_KEYSPACE: {
		check(ks_channel != NULL && r->elements >= 4);
		const redisReply *ch = r->element[2];
		size_t cut = strlen(ks_channel);
		check(ch->len > cut && memcmp(ch->str, ks_channel, cut) == 0);
		check(p.text == ch->str + cut && p.len == ch->len - cut);
		check(p.len > 0 && strlen(p.text) == p.len);
		check(p.what != NULL && p.what == r->element[3]->str);
		break;
	}
	case SY_REDIS_PUSH_OTHER:
	case SY_REDIS_PUSH_SUBSCRIBED:
	case SY_REDIS_PUSH_PSUBSCRIBED:
		break;
	default:
		check(0);
	}
}

static void check_config(const redisReply *r)
{
	const char *detail = NULL;
	sy_redis_ks_config v = store_redis_keyspace_config(r, &detail);
	check(detail != NULL);
	(void)strlen(detail);
	switch (v) {
	case SY_REDIS_KS_OK:
	case SY_REDIS_KS_INSUFFICIENT: {
		check(r->type == REDIS_REPLY_ARRAY && r->elements >= 2);
		check(detail == r->element[1]->str);
		bool ok = strchr(detail, 'K') &&
		          (strchr(detail, 'A') ||
		           (strchr(detail, '$') && strchr(detail, 'g') && strchr(detail, 'x')));
		check(ok == (v == SY_REDIS_KS_OK));
		break;
	}
	case SY_REDIS_KS_UNREADABLE:
		break;
	default:
		check(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const char *const prefixes[3] = {"switchyard:", "", "a*[b]?\\"};
	unsigned conv = data[0] % 6, param = data[0] / 6;
	char ks_buf[64];
	const char *ks_channel = NULL;
	if ((param / 9) % 2 == 0) {
		snprintf(ks_buf, sizeof(ks_buf), "__keyspace@%u__:%s", param % 3,
		         prefixes[(param / 3) % 3]);
		ks_channel = ks_buf;
	}

	redisReader *reader = store_redis_reader();
	check(reader != NULL);
	if (redisReaderFeed(reader, (const char *)data + 1, size - 1) != REDIS_OK) {
		store_redis_reader_free(reader);
		return 0;
	}
	for (;;) {
		void *reply = NULL;
		if (redisReaderGetReply(reader, &reply) != REDIS_OK || !reply)
			break;
		const redisReply *r = reply;
		size_t elements = 0, bytes = 0;
		measure(r, &elements, &bytes);
		check(elements <= SY_REDIS_REPLY_MAX_ELEMENTS && bytes <= SY_REDIS_REPLY_MAX_BYTES);
		if (conv < 4)
			check_answer((sy_store_op[]){SY_STORE_OP_GET, SY_STORE_OP_PUT,
			                             SY_STORE_OP_DEL, SY_STORE_OP_PUBLISH}[conv],
			             r);
		else if (conv == 4)
			check_push(r, ks_channel);
		else
			check_config(r);
		freeReplyObject(reply);
	}
	store_redis_reader_free(reader);
	return 0;
}
