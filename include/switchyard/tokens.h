/*
 * String tokens shared by the IMAP and ManageSieve modules, which use the
 * same quoted-string and literal syntax (RFC 9051 / RFC 5804): a cursor over
 * a line, atoms, quoted strings, literals folded into the line, and the
 * literal announcement at the end of a line.
 */
#ifndef SWITCHYARD_TOKENS_H
#define SWITCHYARD_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sy_cursor {
	char *p, *end;
} sy_cursor;

/* ATOM-CHAR of RFC 9051 (also what ManageSieve accepts in atoms). */
bool tok_is_atom_char(unsigned char ch);

/* Consumes one SP; false if there is none. */
bool tok_sp(sy_cursor *cu);

/* Reads one or more atom characters. */
bool tok_atom(sy_cursor *cu, char **s, size_t *len);

/*
 * Reads a quoted string ("...", with \" and \\ escapes; CR, LF and NUL are
 * refused) or a literal whose bytes follow "{n}\r\n" / "{n+}\r\n" in the
 * buffer (n at most `max`). Quoted strings are decoded in place; neither form
 * is NUL-terminated. False, with the cursor unspecified, when neither fits.
 */
bool tok_string(sy_cursor *cu, char **s, size_t *len, size_t max);

/*
 * If the text ends with a literal announcement "{n}" or "{n+}", returns n
 * (max + 1 for absurd sizes), sets *plus for the non-synchronizing form and
 * *brace_at to the offset of '{'; otherwise -1.
 */
long tok_trailing_literal(const char *seg, size_t len, size_t max, bool *plus, size_t *brace_at);

#endif
