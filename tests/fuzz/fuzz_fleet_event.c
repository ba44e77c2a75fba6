/*
 * libFuzzer target for the fleet event messages replicas exchange over the
 * mapping store (src/route/events.c, fleet_event_parse: the JSON payload of
 * a Redis PUBLISH or a PostgreSQL NOTIFY, including the documented trigger's
 * events without origin).
 *
 * Checks: an accepted event has a known type, an identifier (non-empty, no
 * NUL) unless it is an invalidation, an origin of 1 to 16 characters if
 * any, seconds within the hold limit; a refused one says why; accepting
 * and refusing are stable (the same payload parsed twice gives the same
 * event); and an accepted event, written back as JSON by jansson, parses to
 * the same event.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/route/router_int.h"
#include "switchyard/hold.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static bool same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static bool same(const sy_fleet_event *a, const sy_fleet_event *b)
{
	return a->type == b->type && same_str(a->origin, b->origin) && a->has_seq == b->has_seq &&
	       a->seq == b->seq && same_str(a->identifier, b->identifier) &&
	       a->seconds == b->seconds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sy_fleet_event ev, ev2;
	json_t *j = NULL, *j2 = NULL;
	const char *why = NULL, *why2 = NULL;
	int r = fleet_event_parse((const char *)data, size, &ev, &j, &why);
	int r2 = fleet_event_parse((const char *)data, size, &ev2, &j2, &why2);
	check(r == r2);
	if (r != 0) {
		check(why != NULL && why[0] != '\0');
		json_decref(j);
		json_decref(j2);
		return 0;
	}
	check(same(&ev, &ev2));
	json_decref(j2);
	check((unsigned)ev.type <= SY_FLEET_DELAY);
	check(ev.identifier != NULL || ev.type == SY_FLEET_INVALIDATE);
	check(ev.identifier == NULL || ev.identifier[0] != '\0');
	check(ev.origin == NULL || (ev.origin[0] != '\0' && strlen(ev.origin) <= 16));
	check((uint64_t)ev.seconds * 1000 <= SY_HOLD_MAX_MS);

	/* Round trip: the fields alone, as a publisher would write them. */
	json_t *o = json_pack("{s:i,s:s}", "v", 1, "type", route_fleet_type_name(ev.type));
	check(o != NULL);
	if (ev.origin)
		json_object_set_new(o, "origin", json_string(ev.origin));
	if (ev.has_seq)
		json_object_set_new(o, "seq", json_integer((json_int_t)ev.seq));
	if (ev.identifier)
		json_object_set_new(o, "identifier", json_string(ev.identifier));
	if (ev.type == SY_FLEET_DELAY || ev.seconds)
		json_object_set_new(o, "seconds", json_integer(ev.seconds));
	char *text = json_dumps(o, JSON_COMPACT);
	check(text != NULL);
	check(fleet_event_parse(text, strlen(text), &ev2, &j2, &why2) == 0);
	check(same(&ev, &ev2));
	json_decref(j2);
	free(text);
	json_decref(o);
	json_decref(j);
	return 0;
}
