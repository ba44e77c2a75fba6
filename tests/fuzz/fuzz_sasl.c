/*
 * libFuzzer target for the SASL decoders: sy_b64_decode(), sy_b64url_decode()
 * and sasl_decode() for every mechanism (see README.md for building).
 *
 * The input is used three ways: as base64 text (standard and url-safe), as
 * an already-decoded SASL message whose first byte picks the mechanism, and,
 * when it is valid base64, its decoding is fed to sasl_decode too, which is
 * the path a client's AUTHENTICATE takes. Checks: a successful decode
 * re-encodes to the same text (the decoder is strict, so the encoding is
 * unique); decoded credentials replay to a message the decoder accepts
 * again; LOGIN is refused as a single message.
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

static void decode_and_replay(sy_mech mech, const uint8_t *msg, size_t len)
{
	sy_credentials cr;
	const char *err = NULL;
	int r = sasl_decode(mech, msg, len, &cr, &err);
	if (mech == SY_MECH_LOGIN || mech == SY_MECH_UNKNOWN)
		check(r != 0);
	if (r != 0) {
		check(err != NULL && *err != '\0');
		check(cr.authcid == NULL && cr.token == NULL && cr.raw == NULL);
		return;
	}
	sy_mech rm;
	uint8_t *out = NULL;
	size_t olen = 0;
	check(sasl_replay_message(&cr, &rm, &out, &olen) == 0);
	sy_credentials again;
	check(sasl_decode(rm, out, olen, &again, &err) == 0);
	if (mech == SY_MECH_PLAIN)
		check(strcmp(again.authcid, cr.authcid) == 0 &&
		      strcmp(again.password, cr.password) == 0);
	else
		check(olen == len && memcmp(out, msg, len) == 0);
	credentials_wipe(&again);
	sy_secure_free(out, olen);
	credentials_wipe(&cr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	uint8_t *dec = NULL;
	size_t dlen = 0;

	if (sy_b64_decode(text, size, &dec, &dlen) == 0) {
		check(dec != NULL && dec[dlen] == '\0');
		size_t elen = 0;
		char *enc = sy_b64_encode(dec, dlen, &elen);
		check(enc != NULL);
		/* "=" is the SASL empty response, which encodes as "". */
		if (!(size == 1 && text[0] == '='))
			check(elen == size && memcmp(enc, text, size) == 0);
		free(enc);
		for (int m = SY_MECH_PLAIN; m <= SY_MECH_UNKNOWN; m++)
			decode_and_replay((sy_mech)m, dec, dlen);
		sy_secure_free(dec, dlen);
	} else {
		check(dec == NULL);
	}

	dec = NULL;
	if (sy_b64url_decode(text, size, &dec, &dlen) == 0) {
		check(dec != NULL && dec[dlen] == '\0');
		sy_secure_free(dec, dlen);
	}

	if (size > 0)
		decode_and_replay((sy_mech)(data[0] % (SY_MECH_UNKNOWN + 1)), data + 1, size - 1);
	return 0;
}
