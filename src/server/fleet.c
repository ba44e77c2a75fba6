/*
 * The runtime's side of fleet events (route.h): the sink that applies a
 * received kick on every worker, and the start/stop of the subscriber
 * with the router it belongs to. Main thread.
 */
#include <stdlib.h>
#include <string.h>

#include "switchyard/fleet_rt.h"
#include "switchyard/log.h"
#include "switchyard/route.h"
#include "switchyard/session.h"

typedef struct kick_task {
	char *identifier;
} kick_task;

static long kick_on_worker(sy_worker *w, void *arg)
{
	kick_task *k = arg;
	return session_kick(w, k->identifier, "kicked by a fleet event");
}

static void kick_done(void *arg, long total)
{
	kick_task *k = arg;
	char n[24];
	snprintf(n, sizeof(n), "%ld", total);
	sy_log(SY_LOG_INFO, "fleet: sessions kicked", "identifier", k->identifier, "sessions", n,
	       NULL);
	free(k->identifier);
	free(k);
}

static void sink_kick(void *arg, const char *identifier)
{
	sy_server *srv = arg;
	kick_task *k = calloc(1, sizeof(*k));
	if (!k || !(k->identifier = strdup(identifier))) {
		free(k);
		return;
	}
	if (server_broadcast(srv, kick_on_worker, k, kick_done, k) != 0) {
		free(k->identifier);
		free(k);
	}
}

void fleet_rt_start(sy_server *srv)
{
	if (!srv->router)
		return;
	sy_fleet_sink sink = {.arg = srv, .kick = sink_kick};
	const char *err = NULL;
	if (router_fleet_start(srv->router, srv->main_loop, &sink, &err) != 0)
		sy_log(SY_LOG_ERROR, "fleet events: cannot start the subscriber", "error",
		       err ? err : "?", NULL);
}

void fleet_rt_stop(sy_server *srv)
{
	router_fleet_stop(srv->router);
}
