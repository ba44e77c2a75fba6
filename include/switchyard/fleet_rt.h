/*
 * Fleet events in the runtime (src/server/fleet.c): starts and stops the
 * subscriber of srv->router, with a sink that kicks on every worker.
 * Main thread.
 */
#ifndef SWITCHYARD_FLEET_RT_H
#define SWITCHYARD_FLEET_RT_H

#include <stdio.h>

#include "switchyard/runtime.h"

void fleet_rt_start(sy_server *srv);
void fleet_rt_stop(sy_server *srv);

#endif
