/*
 * Error text into a caller's buffer (private to src/k8s/).
 */
#ifndef SWITCHYARD_K8S_ERRF_H
#define SWITCHYARD_K8S_ERRF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats into err (NULL or errlen 0: nothing). */
static inline void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#endif
