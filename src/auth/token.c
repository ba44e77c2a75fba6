/*
 * The routing identifier carried by a bearer token (SPEC.md section 2).
 *
 * Nothing here verifies a signature: the identifier only chooses a backend,
 * and that backend validates the token itself. A token the proxy cannot read
 * is not an error, it simply has no identifier and goes to the default
 * destination.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "switchyard/sasl.h"

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. The sw1. payload is defined as UTF-8 text, and anything else is
 * more likely a token from some other issuer than an account name.
 */
static bool utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i - 1 < n) {
			return false;
		}
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80) {
				return false;
			}
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff)) {
			return false;
		}
		i += n + 1;
	}
	return true;
}

/*
 * "sw1.<body>.<footer>": the issuer (Stalwart) puts the account, base64url
 * without padding, in the footer, everything after the first '.' that follows
 * the prefix. The body is opaque to us. No footer, an empty one, or one that
 * does not decode to UTF-8 text means the token names no account.
 */
static char *sw1_identifier(const char *token)
{
	const char *dot = strchr(token + 4, '.');
	if (dot == NULL) {
		return NULL;
	}
	const char *footer = dot + 1;
	size_t flen = strlen(footer);
	uint8_t *buf;
	size_t n;
	if (flen == 0 || sy_b64url_decode(footer, flen, &buf, &n) < 0) {
		return NULL;
	}
	if (n == 0 || memchr(buf, '\0', n) != NULL || !utf8_valid(buf, n)) {
		free(buf);
		return NULL;
	}
	return (char *)buf; /* sy_b64url_decode NUL-terminates */
}

/*
 * The first claim, in the order of SPEC §2, whose value is a string
 * containing '@'. Other value types are skipped rather than rejected: issuers
 * put arrays or objects under names like "upn" often enough.
 */
static char *jwt_identifier(const char *token, const char *claim)
{
	const char *p1 = strchr(token, '.');
	if (p1 == NULL) {
		return NULL;
	}
	const char *payload = p1 + 1;
	const char *p2 = strchr(payload, '.');
	if (p2 == NULL || p2 == payload) {
		return NULL;
	}
	uint8_t *buf;
	size_t n;
	if (sy_b64url_decode(payload, (size_t)(p2 - payload), &buf, &n) < 0) {
		return NULL;
	}
	/* Duplicate claim names make "the" value ambiguous; NUL inside a
	 * string is rejected by jansson unless JSON_ALLOW_NUL is given. */
	json_t *root = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
	/* The payload is not the credential (the signature is), but it is
	 * personal data from one: do not leave it lying in the heap. */
	sy_secure_free(buf, n);
	if (root == NULL) {
		return NULL;
	}
	const char *names[] = {claim, "email", "preferred_username", "upn", "unique_name", "sub"};
	char *id = NULL;
	if (json_is_object(root)) {
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && id == NULL; i++) {
			if (names[i] == NULL || names[i][0] == '\0') {
				continue;
			}
			const char *v = json_string_value(json_object_get(root, names[i]));
			if (v != NULL && strchr(v, '@') != NULL) {
				id = strdup(v);
			}
		}
	}
	json_decref(root);
	return id;
}

char *token_identifier(const char *token, const char *claim)
{
	if (token == NULL || token[0] == '\0') {
		return NULL;
	}
	if (strncmp(token, "sw1.", 4) == 0) {
		/* An sw1. token is never read as a JWT: its issuer defines it. */
		return sw1_identifier(token);
	}
	return jwt_identifier(token, claim != NULL ? claim : "email");
}
