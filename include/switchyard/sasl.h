/*
 * SASL for the interactive protocols: decoding what the client sent, building
 * what is replayed to the backend, and extracting the routing identifier.
 *
 * The proxy understands PLAIN, LOGIN (never advertised; replayed as PLAIN),
 * OAUTHBEARER (RFC 7628) and XOAUTH2. Credentials are wiped with
 * OPENSSL_cleanse when released and must never be logged.
 */
#ifndef SWITCHYARD_SASL_H
#define SWITCHYARD_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/config.h"

typedef enum sy_mech {
	SY_MECH_PLAIN,
	SY_MECH_LOGIN,
	SY_MECH_OAUTHBEARER,
	SY_MECH_XOAUTH2,
	SY_MECH_UNKNOWN
} sy_mech;

/* Case-insensitive; returns SY_MECH_UNKNOWN for anything else. */
sy_mech sasl_mech_parse(const char *name, size_t len);
/* "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2". */
const char *sasl_mech_name(sy_mech m);

typedef struct sy_credentials {
	sy_mech mech;   /* as the client used it */
	char *authzid;  /* PLAIN: may be empty, never NULL after decode */
	char *authcid;  /* PLAIN/LOGIN user name (IMAP LOGIN, POP3 USER too) */
	char *password; /* PLAIN/LOGIN */
	char *token;    /* OAUTHBEARER/XOAUTH2 bearer token */
	char *user;     /* OAUTHBEARER a= / XOAUTH2 user= (may be NULL) */
	/* OAUTHBEARER/XOAUTH2: the client's decoded message, replayed verbatim. */
	uint8_t *raw;
	size_t raw_len;
} sy_credentials;

/* Wipes (OPENSSL_cleanse) and frees every field; leaves *c zeroed. */
void credentials_wipe(sy_credentials *c);

/* Credentials from a user name and password (IMAP LOGIN, POP3 USER/PASS,
 * SASL LOGIN). mech becomes SY_MECH_LOGIN. Copies the strings. */
int credentials_from_login(sy_credentials *c, const char *user, size_t ulen, const char *pass,
                           size_t plen);

/*
 * Decodes a client's SASL message (already base64-decoded) for PLAIN,
 * OAUTHBEARER or XOAUTH2 into *out. Returns 0, or -1 with *error_r set to a
 * short client-safe reason ("malformed PLAIN response", ...) for: PLAIN
 * without exactly two NULs, empty authcid or password; OAUTHBEARER without a
 * valid GS2 header ("n,a=user,") and "auth=Bearer <token>" field between
 * ^A separators; XOAUTH2 without "user=...^Aauth=Bearer <token>^A^A".
 */
int sasl_decode(sy_mech mech, const uint8_t *msg, size_t len, sy_credentials *out,
                const char **error_r);

/*
 * Builds the message replayed to the backend (raw bytes, before base64):
 * PLAIN and LOGIN -> "authzid\0authcid\0password" (mech PLAIN);
 * OAUTHBEARER/XOAUTH2 -> the client's message verbatim. The caller wipes and
 * frees *out with sy_secure_free(). Returns 0 or -1.
 */
int sasl_replay_message(const sy_credentials *c, sy_mech *mech_out, uint8_t **out, size_t *out_len);

/* Wipes and frees a buffer that held a secret. NULL is fine. */
void sy_secure_free(void *p, size_t len);

/* Strict base64 (RFC 4648, padding required, no whitespace). Returns 0 with a
 * malloc'd buffer (NUL-terminated for convenience; *out_len excludes it), or
 * -1 for malformed input. An empty input decodes to an empty buffer. "=" alone
 * (the SASL empty response) decodes to empty too. */
int sy_b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len);
/* Returns a malloc'd NUL-terminated encoding. */
char *sy_b64_encode(const uint8_t *in, size_t len, size_t *out_len);

/* base64url without padding (JWT, sw1. tokens); 0 or -1. */
int sy_b64url_decode(const char *in, size_t len, uint8_t **out, size_t *out_len);

typedef enum sy_ident_result {
	SY_IDENT_OK,      /* *id_out is the routing identifier */
	SY_IDENT_NONE,    /* no identifier (opaque token): default destination, not cached */
	SY_IDENT_INVALID, /* forbidden characters: the protocol's backend-unavailable reply */
} sy_ident_result;

/*
 * The routing identifier of SPEC.md section 2: PLAIN authcid / LOGIN user;
 * OAUTHBEARER a= if it contains '@', else from the token; XOAUTH2 always from
 * the token; a token "sw1.<x>.<...>" yields the base64url-decoded <x>; any
 * other token is read as a JWT (claims: cfg->oauth.jwt_username_claim, then
 * email, preferred_username, upn, unique_name, sub; first string containing
 * '@'). Then cut at the earliest master-user separator
 * (cfg->routing.master_user_separators) and normalize (cfg->mapping.normalize).
 * An identifier containing a byte < 0x20, 0x7f, a space or '"' (or empty
 * after the cut) is SY_IDENT_INVALID. *id_out is malloc'd on SY_IDENT_OK.
 */
sy_ident_result identifier_extract(const sy_credentials *c, const sy_config *cfg, char **id_out);

/* Identifier from a bearer token alone (sw1. or JWT); NULL when none. */
char *token_identifier(const char *token, const char *claim);

#endif
