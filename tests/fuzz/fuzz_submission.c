/*
 * libFuzzer target for the submission (src/proto/submission.c): EHLO/HELO, AUTH with initial
 * response and 334 continuations, STARTTLS, XCLIENT; the backend's multi-line EHLO replies,
 * STARTTLS, XCLIENT and AUTH verdicts.
 *
 * The module is driven through its sy_proto_ops table by the test session
 * in proto_driver.h (see there for the input format and the checks).
 */
#define FUZZ_OPS        sy_submission_ops
#define FUZZ_PROTO      SY_PROTO_SUBMISSION
#define FUZZ_PROTO_NAME "submission"

#include "proto_driver.h"
