/*
 * The running proxy: worker event loops, listeners, shutdown.
 */
#ifndef SWITCHYARD_SERVER_H
#define SWITCHYARD_SERVER_H

#include "switchyard/config.h"

/*
 * Runs the proxy with `cfg` (ownership passes to the server) until SIGTERM or
 * SIGINT, then drains for server.shutdown_grace and returns 0. Returns -1 if
 * startup fails (e.g. a listener cannot be bound), after logging why.
 */
int server_run(sy_config *cfg);

#endif
