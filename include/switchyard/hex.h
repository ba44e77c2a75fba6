/*
 * Hexadecimal digits (src/core/hex.c), for the percent-decoders of URLs,
 * query strings and configuration values.
 */
#ifndef SWITCHYARD_HEX_H
#define SWITCHYARD_HEX_H

/* The value of hex digit `ch` (either case), or -1. */
int sy_hexval(int ch);

#endif
