/*
 * libFuzzer target for the POP3 (src/proto/pop3.c): USER/PASS, AUTH with initial response and
 * continuations, CAPA, STLS; the backend's greeting, CAPA lists, STLS, XCLIENT and +OK/-ERR
 * verdicts.
 *
 * The module is driven through its sy_proto_ops table by the test session
 * in proto_driver.h (see there for the input format and the checks).
 */
#define FUZZ_OPS        sy_pop3_ops
#define FUZZ_PROTO      SY_PROTO_POP3
#define FUZZ_PROTO_NAME "pop3"

#include "proto_driver.h"
