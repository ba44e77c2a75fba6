/*
 * Quoted strings and literals, as IMAP and ManageSieve write them.
 */
#include "switchyard/tokens.h"

#include <ctype.h>
#include <string.h>

bool tok_is_atom_char(unsigned char ch)
{
	if (ch <= 0x20 || ch >= 0x7f)
		return false;
	return !strchr("(){%*\"\\]", ch);
}

bool tok_sp(sy_cursor *cu)
{
	if (cu->p < cu->end && *cu->p == ' ') {
		cu->p++;
		return true;
	}
	return false;
}

bool tok_atom(sy_cursor *cu, char **s, size_t *len)
{
	char *start = cu->p;
	while (cu->p < cu->end && tok_is_atom_char((unsigned char)*cu->p))
		cu->p++;
	*s = start;
	*len = (size_t)(cu->p - start);
	return *len > 0;
}

static bool quoted(sy_cursor *cu, char **s, size_t *len)
{
	char *out = ++cu->p, *w = out;
	while (cu->p < cu->end && *cu->p != '"') {
		if (*cu->p == '\\') {
			if (cu->p + 1 >= cu->end || (cu->p[1] != '\\' && cu->p[1] != '"'))
				return false;
			cu->p++;
		} else if (*cu->p == '\r' || *cu->p == '\n' || *cu->p == '\0') {
			return false;
		}
		*w++ = *cu->p++;
	}
	if (cu->p >= cu->end)
		return false;
	cu->p++; /* closing quote */
	*s = out;
	*len = (size_t)(w - out);
	return true;
}

static bool literal(sy_cursor *cu, char **s, size_t *len, size_t max)
{
	char *q = cu->p + 1;
	size_t n = 0;
	if (q >= cu->end || !isdigit((unsigned char)*q))
		return false;
	while (q < cu->end && isdigit((unsigned char)*q)) {
		n = n * 10 + (size_t)(*q - '0');
		if (n > max)
			return false;
		q++;
	}
	if (q < cu->end && *q == '+')
		q++;
	if (q >= cu->end || *q != '}')
		return false;
	q++;
	if (q < cu->end && *q == '\r')
		q++;
	if (q >= cu->end || *q != '\n')
		return false;
	q++;
	if ((size_t)(cu->end - q) < n)
		return false;
	*s = q;
	*len = n;
	cu->p = q + n;
	return true;
}

bool tok_string(sy_cursor *cu, char **s, size_t *len, size_t max)
{
	if (cu->p >= cu->end)
		return false;
	if (*cu->p == '"')
		return quoted(cu, s, len);
	if (*cu->p == '{')
		return literal(cu, s, len, max);
	return false;
}

long tok_trailing_literal(const char *seg, size_t len, size_t max, bool *plus, size_t *brace_at)
{
	if (len < 3 || seg[len - 1] != '}')
		return -1;
	size_t i = len - 1;
	*plus = false;
	if (seg[i - 1] == '+') {
		*plus = true;
		i--;
	}
	size_t digits_end = i;
	while (i > 0 && isdigit((unsigned char)seg[i - 1]))
		i--;
	if (i == digits_end || i == 0 || seg[i - 1] != '{')
		return -1;
	*brace_at = i - 1;
	long n = 0;
	for (size_t k = i; k < digits_end; k++) {
		n = n * 10 + (seg[k] - '0');
		if ((size_t)n > max)
			return (long)max + 1;
	}
	return n;
}
