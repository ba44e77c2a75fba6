/*
 * libFuzzer target for the ManageSieve (src/proto/sieve.c): AUTHENTICATE with quoted strings and
 * literals, continuations, STARTTLS, CAPABILITY, NOOP; the backend's capability blocks, literals in
 * its replies, OK/NO/BYE with response codes, XCLIENT.
 *
 * The module is driven through its sy_proto_ops table by the test session
 * in proto_driver.h (see there for the input format and the checks).
 */
#define FUZZ_OPS        sy_sieve_ops
#define FUZZ_PROTO      SY_PROTO_MANAGESIEVE
#define FUZZ_PROTO_NAME "managesieve"

#include "proto_driver.h"
