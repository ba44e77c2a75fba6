/*
 * The protocol modules' entry points. The runtime puts them in every
 * worker's protocol table (worker.h, sy_worker_hooks.start), through which
 * a session reaches its protocol once its client leg is ready; nothing below
 * the protocol layer names them.
 */
#ifndef SWITCHYARD_PROTOCOLS_H
#define SWITCHYARD_PROTOCOLS_H

#include "switchyard/session.h"

/* Starts the interactive protocol (imap, pop3, managesieve, submission) of
 * the session's listener: its pre-authentication dialogue. */
void interactive_start(sy_session *s);

/* Starts a pass-through session (smtp, lmtp): dials the pass-through
 * destination and bridges, or greets with a 421 when it cannot. */
void passthrough_start(sy_session *s);

/* Starts an HTTP session: reads and checks the request head, routes it by
 * [[http.route]] and relays it to the chosen backend (src/proto/http.c). */
void http_start(sy_session *s);

/* The request-head checks of http_start on a complete head (request line
 * through the empty line): 0 when it would be routed, else the status the
 * proxy answers (400, 405, 431, 505). For the fuzz target and unit tests. */
int http_request_head_status(const char *head, size_t len, size_t *nheaders);

/* The response framing of http_start over backend bytes, for the fuzzer
 * and tests: `data` (then the backend's close) as the answer to a request
 * (HEAD or not, an upgrade or not). Returns 0 (incomplete), 1 (the final
 * response ended; *used bytes belong to it and the interim responses
 * before it), 2 (101 to the upgrade after *used bytes), 3 (malformed), or
 * -1 (out of memory); *status is the last status seen (0: none). */
int http_response_scan(const char *data, size_t len, bool head_request, bool upgrade, size_t *used,
                       int *status);

#endif
