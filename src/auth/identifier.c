/*
 * The routing identifier of a set of credentials (SPEC.md section 2): pick
 * the source the mechanism trusts, cut the master-user suffix, normalize,
 * validate.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/sasl.h"

/* Where an identifier with neither '@' in a= nor a readable token comes from. */
static char *source_identifier(const sy_credentials *c, const char *claim)
{
	switch (c->mech) {
	case SY_MECH_PLAIN:
	case SY_MECH_LOGIN:
		/* The authzid is deliberately ignored: routing follows who
		 * authenticates, and the backend decides whether that identity
		 * may act as the authzid. */
		return c->authcid != NULL ? strdup(c->authcid) : NULL;
	case SY_MECH_OAUTHBEARER:
		if (c->user != NULL && strchr(c->user, '@') != NULL) {
			return strdup(c->user);
		}
		return token_identifier(c->token, claim);
	case SY_MECH_XOAUTH2:
		/* user= is whatever the client typed; only the token is issued
		 * by someone the backend trusts. */
		return token_identifier(c->token, claim);
	default:
		return NULL;
	}
}

/* Truncates id at the earliest occurrence of any non-empty separator. */
static void cut_master_user(char *id, const sy_strlist *seps)
{
	char *cut = NULL;
	for (size_t i = 0; i < seps->len; i++) {
		const char *s = seps->items[i];
		if (s == NULL || s[0] == '\0') {
			continue;
		}
		char *hit = strstr(id, s);
		if (hit != NULL && (cut == NULL || hit < cut)) {
			cut = hit;
		}
	}
	if (cut != NULL) {
		*cut = '\0';
	}
}

/* SPEC §2: a byte below 0x20, 0x7f, a space or '"' makes it unroutable. The
 * identifier ends up in store queries, cache keys and log lines, where such
 * bytes could change the meaning of what surrounds them. */
static bool identifier_valid(const char *id)
{
	if (id[0] == '\0') {
		return false;
	}
	for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == ' ' || *p == '"') {
			return false;
		}
	}
	return true;
}

sy_ident_result identifier_extract(const sy_credentials *c, const sy_config *cfg, char **id_out)
{
	*id_out = NULL;
	const char *claim = cfg != NULL ? cfg->oauth.jwt_username_claim : NULL;
	char *id = source_identifier(c, claim);
	if (id == NULL) {
		/* PLAIN/LOGIN always carry a user name after decoding, so
		 * "nothing" can only mean a token without an identifier (or an
		 * allocation failure, which the default destination survives). */
		return SY_IDENT_NONE;
	}
	/* Without a config, the defaults: separators ["%"], normalize none. */
	static char pct[] = "%";
	static char *pct_items[] = {pct};
	const sy_strlist default_seps = {pct_items, 1};
	cut_master_user(id, cfg != NULL ? &cfg->routing.master_user_separators : &default_seps);
	if (!identifier_valid(id)) {
		free(id);
		return SY_IDENT_INVALID;
	}
	if (cfg != NULL && cfg->mapping.normalize == SY_NORMALIZE_LOWERCASE) {
		/* ASCII only: Unicode case folding is locale- and version-
		 * dependent, and mapping stores are keyed on exact bytes. */
		for (char *p = id; *p != '\0'; p++) {
			if (*p >= 'A' && *p <= 'Z') {
				*p = (char)(*p - 'A' + 'a');
			}
		}
	}
	*id_out = id;
	return SY_IDENT_OK;
}
