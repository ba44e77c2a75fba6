/*
 * libFuzzer target for the fleet events' exactly-once record
 * (fleet_seen_first, src/route/events.c): which (origin, seq) pairs a
 * replica applies and which it drops as replays or duplicates.
 *
 * Input: 3 bytes per event. Byte 0 picks one of 256 origin names and the
 * low nibble of byte 1 its length (1 to 16 characters: the longest origin
 * an event may carry), so more than FLEET_ORIGINS_MAX distinct origins come
 * and the table must forget some; the high nibble of byte 1 and byte 2 are
 * the seq (0 to 4095, so replays and duplicates are frequent).
 *
 * The model keeps, per origin ever seen, the last seq recorded and when it
 * was added, and the recorded origins in the order they were added; an
 * origin is forgotten when the table is full and it is the one added
 * longest ago. Checked per event: the table answers as
 * the model does (new: not recorded, or seq above its last; otherwise a
 * replay), and origins that differ only past some length are never taken
 * for one another.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/route/router_int.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

#define NAMES (256 * 16)

static struct {
	bool recorded;
	uint64_t seq;
	uint64_t since; /* when it was (last) added to the table */
} model[NAMES];

static sy_fleet_seen table;

static void name_of(unsigned idx, unsigned len, char *out)
{
	/* Two hex digits, then a letter per position: names of one index share
	 * their prefixes ("a7", "a7c", "a7cd", ...). */
	snprintf(out, 3, "%02x", idx);
	for (unsigned i = 2; i < len; i++)
		out[i] = (char)('c' + (idx + i) % 20);
	out[len] = '\0';
	if (len == 1)
		out[1] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	memset(model, 0, sizeof(model));
	memset(&table, 0, sizeof(table));
	size_t recorded = 0, head = 0;
	uint64_t clock = 0;
	unsigned queue[FLEET_ORIGINS_MAX];
	for (size_t i = 0; i + 3 <= size; i += 3) {
		unsigned idx = data[i], len = (data[i + 1] & 15u) + 1;
		uint64_t seq = ((uint64_t)(data[i + 1] >> 4) << 8) | data[i + 2];
		char name[FLEET_ORIGIN_MAX + 1];
		name_of(idx, len, name);
		/* Names of length 1 are the first hex digit only: several
		 * indexes share them. */
		unsigned key = len == 1 ? (idx >> 4) * 16 : idx * 16 + (len - 1);
		bool want;
		if (model[key].recorded) {
			want = seq > model[key].seq;
			if (want)
				model[key].seq = seq;
		} else {
			want = true;
			if (recorded == FLEET_ORIGINS_MAX) {
				/* Entries leave only from the front: it is the
				 * one recorded longest ago. */
				unsigned oldest = queue[head];
				check(model[oldest].recorded);
				model[oldest].recorded = false;
				head = (head + 1) % FLEET_ORIGINS_MAX;
				recorded--;
			}
			model[key].recorded = true;
			model[key].seq = seq;
			model[key].since = clock++;
			queue[(head + recorded) % FLEET_ORIGINS_MAX] = key;
			recorded++;
		}
		check(fleet_seen_first(&table, name, seq) == want);
		check(table.n == recorded);
	}
	return 0;
}
