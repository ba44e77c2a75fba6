/*
 * A growable list of messages (src/core/errors.c): configuration errors
 * and warnings, each naming the key it is about, collected in full before
 * anything is reported.
 */
#ifndef SWITCHYARD_ERRORS_H
#define SWITCHYARD_ERRORS_H

#include <stddef.h>

typedef struct sy_errors {
	char **msgs;
	size_t len;
} sy_errors;

/* Appends a printf-formatted message (e may be NULL: nothing happens). */
void sy_errors_add(sy_errors *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Frees every message; the list is empty and reusable afterwards. */
void sy_errors_free(sy_errors *e);

#endif
