/*
 * Message lists (errors.h).
 */
#include "switchyard/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void sy_errors_add(sy_errors *e, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	if (e == NULL)
		return;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		/* Losing a message is better than losing the whole process
		 * while reporting a configuration problem. */
		return;
	}
	char **grown = realloc(e->msgs, (e->len + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(msg);
		return;
	}
	e->msgs = grown;
	e->msgs[e->len++] = msg;
}

void sy_errors_free(sy_errors *e)
{
	if (e == NULL)
		return;
	for (size_t i = 0; i < e->len; i++)
		free(e->msgs[i]);
	free(e->msgs);
	e->msgs = NULL;
	e->len = 0;
}
