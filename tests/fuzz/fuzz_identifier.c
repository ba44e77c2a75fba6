/*
 * libFuzzer target for the routing identifier: token_identifier() (sw1. and
 * JWT tokens) and identifier_extract() over decoded credentials of every
 * mechanism (see README.md for building).
 *
 * The input is split at its first NUL: before it, a bearer token (or the
 * SASL message for identifier_extract); after it, a claim name. Checks: an
 * identifier that comes back is a non-empty string; SY_IDENT_OK identifiers
 * contain none of the bytes SPEC section 2 forbids and no master-user
 * separator.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/sasl.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static void check_ident(const sy_credentials *cr)
{
	char *id = (char *)1;
	sy_ident_result r = identifier_extract(cr, NULL, &id);
	if (r != SY_IDENT_OK) {
		check(id == NULL);
		return;
	}
	check(id != NULL && id[0] != '\0');
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		check(*p >= 0x20 && *p != 0x7f && *p != ' ' && *p != '"');
	check(strchr(id, '%') == NULL); /* the default separator was cut */
	free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t tlen = nul ? (size_t)(nul - data) : size;
	char *token = malloc(tlen + 1);
	if (!token)
		return 0;
	memcpy(token, data, tlen);
	token[tlen] = '\0';
	char *claim = NULL;
	if (nul) {
		size_t clen = size - tlen - 1;
		claim = malloc(clen + 1);
		if (!claim) {
			free(token);
			return 0;
		}
		memcpy(claim, nul + 1, clen);
		claim[clen] = '\0';
	}

	char *id = token_identifier(token, claim);
	if (id) {
		check(id[0] != '\0');
		free(id);
	}

	/* The same bytes as credentials of each mechanism, as a client would
	 * have sent them. */
	for (int m = SY_MECH_PLAIN; m < SY_MECH_UNKNOWN; m++) {
		sy_credentials cr;
		const char *err;
		if (m == SY_MECH_LOGIN) {
			if (credentials_from_login(&cr, token, tlen, "pw", 2) != 0)
				continue;
		} else if (sasl_decode((sy_mech)m, data, size, &cr, &err) != 0) {
			continue;
		}
		check_ident(&cr);
		credentials_wipe(&cr);
	}
	/* A bearer credential built directly around the token. */
	sy_credentials cr = {.mech = SY_MECH_XOAUTH2, .token = token};
	check_ident(&cr);
	cr.mech = SY_MECH_OAUTHBEARER;
	cr.user = claim;
	check_ident(&cr);

	free(token);
	free(claim);
	return 0;
}
