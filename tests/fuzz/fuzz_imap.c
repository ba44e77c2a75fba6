/*
 * libFuzzer target for the IMAP (src/proto/imap.c): tagged commands, quoted strings and literals
 * (synchronizing and LITERAL+), LOGIN, AUTHENTICATE with SASL-IR and continuations, STARTTLS, ID;
 * the backend's greeting, CAPABILITY, STARTTLS, ID and tagged replies.
 *
 * The module is driven through its sy_proto_ops table by the test session
 * in proto_driver.h (see there for the input format and the checks).
 */
#define FUZZ_OPS        sy_imap_ops
#define FUZZ_PROTO      SY_PROTO_IMAP
#define FUZZ_PROTO_NAME "imap"

#include "proto_driver.h"
