/*
 * libFuzzer target for what the router makes of a mapping store's answer
 * (router_store_answer in src/route/router.c): the value a Redis GET or a
 * PostgreSQL query returned, or the error text, turned into a cache answer
 * under a configuration with destinations and a cluster. The Redis and
 * PostgreSQL wire formats themselves are parsed by hiredis and libpq; this
 * is the part of the answer handling that is ours.
 *
 * Input: byte 0 selects the status (FOUND, NOT_FOUND, ERROR) and the
 * on_store_error policy (default or tempfail); the rest is the value or the
 * error text (NUL-terminated where the input has a NUL, as the stores hand
 * over C strings).
 *
 * Checks: a positive answer names a declared destination or cluster and
 * carries the value unchanged; every other FOUND value is negative and
 * empty; NOT_FOUND is negative; ERROR follows the policy (negative with a
 * TTL no longer than the negative TTL, or an error whose text is
 * NUL-terminated within the cache entry); the answer always fits the entry.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/route/router_int.h"
#include "switchyard/config.h"
#include "switchyard/log.h"

static const char CONFIG[] = "[listener.l]\n"
                             "protocol = \"imap\"\n"
                             "bind = [\"127.0.0.1:10000\"]\n"
                             "tls = \"plain\"\n"
                             "[destination.old]\n"
                             "host = \"127.0.0.1\"\n"
                             "allow_plaintext_auth = true\n"
                             "[destination.old.protocol.imap]\n"
                             "port = 10001\n"
                             "tls = \"plain\"\n"
                             "[destination.new-1]\n"
                             "host = \"127.0.0.2\"\n"
                             "allow_plaintext_auth = true\n"
                             "[destination.new-1.protocol.imap]\n"
                             "port = 10001\n"
                             "tls = \"plain\"\n"
                             "[cluster.pool]\n"
                             "template = \"old\"\n"
                             "nodes = [\"old\", \"new-1\"]\n"
                             "[routing]\n"
                             "default_destination = \"old\"\n"
                             "[mapping]\n"
                             "source = \"redis\"\n"
                             "negative_ttl = \"30s\"\n"
                             "[mapping.redis]\n"
                             "url = \"redis://127.0.0.1:6379\"\n";

static sy_config *CFG;

static void check(int cond)
{
	if (!cond)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!CFG) {
		sy_errors errs = {0};
		check(config_load_string(CONFIG, sizeof(CONFIG) - 1, "/nonexistent-fuzz-basedir",
		                         &CFG, &errs) == 0);
		log_set_level(SY_LOG_ERROR);
	}
	if (size < 1)
		return 0;
	static const sy_store_status sts[3] = {SY_STORE_FOUND, SY_STORE_NOT_FOUND, SY_STORE_ERROR};
	sy_store_status st = sts[(data[0] & 3) % 3];
	sy_mapping_config m = CFG->mapping;
	m.on_store_error = (data[0] & 4) ? SY_STORE_ERR_DEFAULT : SY_STORE_ERR_TEMPFAIL;
	char *text = malloc(size);
	check(text != NULL);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	bool null_text = data[0] & 8;

	sy_cache_answer a;
	memset(&a, 0x5a, sizeof(a));
	const char *value = st == SY_STORE_FOUND && !null_text ? text : NULL;
	const char *error = st == SY_STORE_ERROR && !null_text ? text : NULL;
	uint64_t ttl = router_store_answer(&m, CFG, "alice@example.com", st, value, error, &a);
	check(memchr(a.value, '\0', sizeof(a.value)) != NULL);
	switch (a.outcome) {
	case SY_CACHE_POSITIVE:
		check(st == SY_STORE_FOUND && value && strcmp(a.value, value) == 0);
		check(config_is_target(CFG, a.value));
		check(ttl == 0);
		break;
	case SY_CACHE_NEGATIVE:
		check(a.value[0] == '\0');
		check(st != SY_STORE_ERROR || m.on_store_error == SY_STORE_ERR_DEFAULT);
		check(ttl <= m.negative_ttl_ms);
		if (st == SY_STORE_FOUND && value)
			check(!config_is_target(CFG, value) || strlen(value) >= sizeof(a.value));
		break;
	case SY_CACHE_ERROR:
		check(st == SY_STORE_ERROR && m.on_store_error == SY_STORE_ERR_TEMPFAIL);
		check(strncmp(a.value, "mapping lookup failed: ", 23) == 0);
		break;
	default:
		check(0);
	}
	free(text);
	return 0;
}
