/*
 * SASL message decoding and replay for PLAIN (RFC 4616), LOGIN, OAUTHBEARER
 * (RFC 7628) and XOAUTH2, plus the strict base64 codecs the protocols need.
 *
 * Everything decoded here is a secret or carries one, so every buffer that
 * held credential bytes is OPENSSL_cleanse()d before it is freed, including
 * the partial results of a failed decode. Error strings are fixed text and
 * never echo what the client sent: they go back to the client and into logs.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "switchyard/sasl.h"

static const char *const mech_names[] = {
    [SY_MECH_PLAIN] = "PLAIN",
    [SY_MECH_LOGIN] = "LOGIN",
    [SY_MECH_OAUTHBEARER] = "OAUTHBEARER",
    [SY_MECH_XOAUTH2] = "XOAUTH2",
};

sy_mech sasl_mech_parse(const char *name, size_t len)
{
	if (name == NULL) {
		return SY_MECH_UNKNOWN;
	}
	for (int m = SY_MECH_PLAIN; m < SY_MECH_UNKNOWN; m++) {
		if (strlen(mech_names[m]) == len && strncasecmp(name, mech_names[m], len) == 0) {
			return (sy_mech)m;
		}
	}
	return SY_MECH_UNKNOWN;
}

const char *sasl_mech_name(sy_mech m)
{
	if ((int)m < SY_MECH_PLAIN || m >= SY_MECH_UNKNOWN) {
		return "UNKNOWN";
	}
	return mech_names[m];
}

void sy_secure_free(void *p, size_t len)
{
	if (p == NULL) {
		return;
	}
	OPENSSL_cleanse(p, len);
	free(p);
}

/* Frees a NUL-terminated secret string after wiping every byte of it. */
static void secure_free_str(char *s)
{
	if (s != NULL) {
		sy_secure_free(s, strlen(s));
	}
}

void credentials_wipe(sy_credentials *c)
{
	if (c == NULL) {
		return;
	}
	secure_free_str(c->authzid);
	secure_free_str(c->authcid);
	secure_free_str(c->password);
	secure_free_str(c->token);
	secure_free_str(c->user);
	sy_secure_free(c->raw, c->raw_len);
	/* A compound literal rather than memset: "zeroed" pointers must be
	 * NULL, which all-bits-zero does not promise. */
	*c = (sy_credentials){0};
}

/* A NUL-terminated copy of len bytes (which must not contain NUL). */
static char *dup_bytes(const void *p, size_t len)
{
	char *s = malloc(len + 1);
	if (s == NULL) {
		return NULL;
	}
	if (len > 0) {
		memcpy(s, p, len);
	}
	s[len] = '\0';
	return s;
}

int credentials_from_login(sy_credentials *c, const char *user, size_t ulen, const char *pass,
                           size_t plen)
{
	*c = (sy_credentials){0};
	/* An empty user or password is a malformed login (SPEC §2), and a NUL
	 * inside either could not be replayed unambiguously as PLAIN. */
	if (user == NULL || pass == NULL || ulen == 0 || plen == 0 ||
	    memchr(user, '\0', ulen) != NULL || memchr(pass, '\0', plen) != NULL) {
		return -1;
	}
	c->mech = SY_MECH_LOGIN;
	c->authzid = dup_bytes("", 0);
	c->authcid = dup_bytes(user, ulen);
	c->password = dup_bytes(pass, plen);
	if (c->authzid == NULL || c->authcid == NULL || c->password == NULL) {
		credentials_wipe(c);
		return -1;
	}
	return 0;
}

/* ---- PLAIN ------------------------------------------------------------ */

static int decode_plain(const uint8_t *msg, size_t len, sy_credentials *out, const char **error_r)
{
	const uint8_t *nul1 = memchr(msg, '\0', len);
	const uint8_t *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', len - (nul1 + 1 - msg)) : NULL;
	if (nul1 == NULL || nul2 == NULL ||
	    memchr(nul2 + 1, '\0', len - (nul2 + 1 - msg)) != NULL) {
		*error_r = "malformed PLAIN response";
		return -1;
	}
	size_t zlen = nul1 - msg;
	size_t clen = nul2 - (nul1 + 1);
	size_t plen = len - (nul2 + 1 - msg);
	if (clen == 0) {
		*error_r = "malformed PLAIN response: empty user name";
		return -1;
	}
	if (plen == 0) {
		*error_r = "malformed PLAIN response: empty password";
		return -1;
	}
	out->mech = SY_MECH_PLAIN;
	out->authzid = dup_bytes(msg, zlen);
	out->authcid = dup_bytes(nul1 + 1, clen);
	out->password = dup_bytes(nul2 + 1, plen);
	if (out->authzid == NULL || out->authcid == NULL || out->password == NULL) {
		*error_r = "internal error";
		return -1;
	}
	return 0;
}

/* ---- OAUTHBEARER / XOAUTH2 -------------------------------------------- */

#define KVSEP 0x01

/*
 * The value of an "auth" field: "Bearer" 1*SP token (RFC 7628 §3.1 defers
 * to RFC 6750). The scheme name is case-insensitive as in HTTP. The token
 * must be visible ASCII: RFC 6750's b64token is narrower, but real issuers
 * do not all keep to it, the backend is the one that validates the token,
 * and VCHAR alone already rules out anything that could break a line.
 */
static int parse_auth_value(const uint8_t *v, size_t len, char **token_out)
{
	static const char scheme[] = "Bearer";
	const size_t slen = sizeof(scheme) - 1;
	if (len <= slen || strncasecmp((const char *)v, scheme, slen) != 0 || v[slen] != ' ') {
		return -1;
	}
	size_t i = slen;
	while (i < len && v[i] == ' ') {
		i++;
	}
	if (i == len) {
		return -1;
	}
	for (size_t j = i; j < len; j++) {
		if (v[j] < 0x21 || v[j] > 0x7e) {
			return -1;
		}
	}
	*token_out = dup_bytes(v + i, len - i);
	return *token_out == NULL ? -1 : 0;
}

/* RFC 7628 value = *(VCHAR / SP / HTAB / CR / LF). */
static bool kv_value_char(uint8_t ch)
{
	return (ch >= 0x21 && ch <= 0x7e) || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static bool is_alpha(uint8_t ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

/*
 * Parses the GS2 saslname after "a=" up to (not including) the closing ','
 * (RFC 5801: ',' and '=' appear only as "=2C" and "=3D"). On success *end is
 * the index of the ',' and *user_out the unescaped name.
 */
static int parse_saslname(const uint8_t *msg, size_t len, size_t start, size_t *end,
                          char **user_out)
{
	char *u = malloc(len - start + 1);
	if (u == NULL) {
		return -1;
	}
	size_t n = 0;
	size_t i = start;
	for (; i < len && msg[i] != ','; i++) {
		if (msg[i] == '=') {
			if (i + 2 < len && msg[i + 1] == '2' && msg[i + 2] == 'C') {
				u[n++] = ',';
			} else if (i + 2 < len && msg[i + 1] == '3' && msg[i + 2] == 'D') {
				u[n++] = '=';
			} else {
				break;
			}
			i += 2;
		} else if (msg[i] == '\0') {
			break;
		} else {
			u[n++] = (char)msg[i];
		}
	}
	if (i >= len || msg[i] != ',' || n == 0) {
		sy_secure_free(u, n);
		return -1;
	}
	u[n] = '\0';
	*end = i;
	*user_out = u;
	return 0;
}

/*
 * client-resp = gs2-header kvsep *kvpair kvsep, where
 * gs2-header = ("n" / "y") "," ["a=" saslname] "," and kvpair = key "=" value
 * kvsep. Exactly one "auth" pair is required; other keys (host, port, and
 * extensions) are checked for syntax and otherwise ignored, since the whole
 * message is replayed verbatim.
 */
static int decode_oauthbearer(const uint8_t *msg, size_t len, sy_credentials *out,
                              const char **error_r)
{
	*error_r = "malformed OAUTHBEARER response";
	if (len > 0 && msg[0] == 'p') {
		/* There is no OAUTHBEARER-PLUS, and a proxy could not pass a
		 * channel binding through anyway. */
		*error_r = "OAUTHBEARER channel binding is not supported";
		return -1;
	}
	if (len < 3 || (msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',') {
		return -1;
	}
	size_t i;
	if (msg[2] == ',') {
		i = 2;
	} else if (len > 4 && msg[2] == 'a' && msg[3] == '=') {
		if (parse_saslname(msg, len, 4, &i, &out->user) < 0) {
			*error_r = "malformed OAUTHBEARER response: bad authorization identity";
			return -1;
		}
	} else {
		return -1;
	}
	i++; /* the gs2-header's closing ',' */
	if (i >= len || msg[i] != KVSEP) {
		return -1;
	}
	i++;
	/* Now *kvpair kvsep, with the final kvsep being the last byte. */
	while (i < len && msg[i] != KVSEP) {
		size_t k = i;
		while (i < len && is_alpha(msg[i])) {
			i++;
		}
		if (i == k || i >= len || msg[i] != '=') {
			return -1;
		}
		size_t klen = i - k;
		size_t v = ++i;
		while (i < len && msg[i] != KVSEP) {
			if (!kv_value_char(msg[i])) {
				return -1;
			}
			i++;
		}
		if (i >= len) {
			return -1; /* unterminated pair */
		}
		if (klen == 4 && memcmp(msg + k, "auth", 4) == 0) {
			if (out->token != NULL) {
				*error_r = "malformed OAUTHBEARER response: duplicate auth";
				return -1;
			}
			if (parse_auth_value(msg + v, i - v, &out->token) < 0) {
				*error_r = "malformed OAUTHBEARER response: bad auth value";
				return -1;
			}
		}
		i++; /* the pair's kvsep */
	}
	if (i + 1 != len) {
		return -1; /* missing final kvsep, or bytes after it */
	}
	if (out->token == NULL) {
		*error_r = "malformed OAUTHBEARER response: missing auth=Bearer token";
		return -1;
	}
	out->mech = SY_MECH_OAUTHBEARER;
	return 0;
}

/* "user=" user ^A "auth=Bearer " token ^A ^A, nothing else, in that order. */
static int decode_xoauth2(const uint8_t *msg, size_t len, sy_credentials *out, const char **error_r)
{
	*error_r = "malformed XOAUTH2 response";
	if (len < 5 || memcmp(msg, "user=", 5) != 0 || memchr(msg, '\0', len) != NULL) {
		return -1;
	}
	const uint8_t *u = msg + 5;
	const uint8_t *sep = memchr(u, KVSEP, len - 5);
	if (sep == NULL || sep == u) {
		return -1;
	}
	const uint8_t *a = sep + 1;
	size_t rest = len - (a - msg);
	if (rest < 5 || memcmp(a, "auth=", 5) != 0) {
		return -1;
	}
	const uint8_t *v = a + 5;
	const uint8_t *vend = memchr(v, KVSEP, rest - 5);
	if (vend == NULL || (size_t)(vend - msg) + 2 != len || vend[1] != KVSEP) {
		return -1;
	}
	if (parse_auth_value(v, vend - v, &out->token) < 0) {
		*error_r = "malformed XOAUTH2 response: bad auth value";
		return -1;
	}
	out->user = dup_bytes(u, sep - u);
	if (out->user == NULL) {
		*error_r = "internal error";
		return -1;
	}
	out->mech = SY_MECH_XOAUTH2;
	return 0;
}

int sasl_decode(sy_mech mech, const uint8_t *msg, size_t len, sy_credentials *out,
                const char **error_r)
{
	const char *dummy;
	if (error_r == NULL) {
		error_r = &dummy;
	}
	static const uint8_t empty[1];
	*out = (sy_credentials){0};
	if (msg == NULL) {
		if (len > 0) {
			*error_r = "internal error";
			return -1;
		}
		msg = empty; /* memchr() and friends want a valid pointer even for 0 bytes */
	}
	int r;
	switch (mech) {
	case SY_MECH_PLAIN:
		r = decode_plain(msg, len, out, error_r);
		break;
	case SY_MECH_OAUTHBEARER:
		r = decode_oauthbearer(msg, len, out, error_r);
		break;
	case SY_MECH_XOAUTH2:
		r = decode_xoauth2(msg, len, out, error_r);
		break;
	case SY_MECH_LOGIN:
		/* LOGIN is two prompts, not one message: the protocol code
		 * collects both and calls credentials_from_login(). */
		*error_r = "LOGIN is not a single-message mechanism";
		return -1;
	default:
		*error_r = "unsupported SASL mechanism";
		return -1;
	}
	if (r == 0 && mech != SY_MECH_PLAIN) {
		/* The bearer mechanisms are replayed verbatim, so that host,
		 * port and extension fields reach the backend untouched. */
		out->raw = malloc(len > 0 ? len : 1);
		if (out->raw == NULL) {
			*error_r = "internal error";
			r = -1;
		} else {
			memcpy(out->raw, msg, len);
			out->raw_len = len;
		}
	}
	if (r < 0) {
		credentials_wipe(out);
	}
	return r;
}

int sasl_replay_message(const sy_credentials *c, sy_mech *mech_out, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	switch (c->mech) {
	case SY_MECH_PLAIN:
	case SY_MECH_LOGIN: {
		if (c->authcid == NULL || c->password == NULL) {
			return -1;
		}
		/* The full authcid goes to the backend, master-user suffix
		 * included: only the routing identifier is cut. */
		const char *z = c->authzid != NULL ? c->authzid : "";
		size_t zl = strlen(z), cl = strlen(c->authcid), pl = strlen(c->password);
		size_t n = zl + 1 + cl + 1 + pl;
		uint8_t *b = malloc(n + 1);
		if (b == NULL) {
			return -1;
		}
		memcpy(b, z, zl);
		b[zl] = '\0';
		memcpy(b + zl + 1, c->authcid, cl);
		b[zl + 1 + cl] = '\0';
		memcpy(b + zl + 1 + cl + 1, c->password, pl);
		b[n] = '\0';
		*mech_out = SY_MECH_PLAIN;
		*out = b;
		*out_len = n;
		return 0;
	}
	case SY_MECH_OAUTHBEARER:
	case SY_MECH_XOAUTH2: {
		if (c->raw == NULL || c->raw_len == 0) {
			return -1;
		}
		uint8_t *b = malloc(c->raw_len + 1);
		if (b == NULL) {
			return -1;
		}
		memcpy(b, c->raw, c->raw_len);
		b[c->raw_len] = '\0';
		*mech_out = c->mech;
		*out = b;
		*out_len = c->raw_len;
		return 0;
	}
	default:
		return -1;
	}
}

/* ---- base64 ------------------------------------------------------------ */

static const char b64_std_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of one base64 character in the chosen alphabet, or -1. */
static int b64_value(unsigned char ch, bool url)
{
	if (ch >= 'A' && ch <= 'Z') {
		return ch - 'A';
	}
	if (ch >= 'a' && ch <= 'z') {
		return ch - 'a' + 26;
	}
	if (ch >= '0' && ch <= '9') {
		return ch - '0' + 52;
	}
	if (ch == (url ? '-' : '+')) {
		return 62;
	}
	if (ch == (url ? '_' : '/')) {
		return 63;
	}
	return -1;
}

/*
 * Decodes n characters (no padding among them) whose count modulo 4 is 0, 2
 * or 3. The bits a short final group leaves over must be zero: accepting
 * them would let two different strings decode to the same bytes, which a
 * strict decoder has no reason to allow (RFC 4648 §3.5).
 */
static int b64_core(const char *in, size_t n, bool url, uint8_t **out, size_t *out_len)
{
	size_t rem = n % 4;
	if (rem == 1) {
		return -1;
	}
	size_t olen = n / 4 * 3 + (rem == 0 ? 0 : rem - 1);
	uint8_t *o = malloc(olen + 1);
	if (o == NULL) {
		return -1;
	}
	size_t j = 0;
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		uint32_t acc = 0;
		for (size_t q = 0; q < 4; q++) {
			int v = 0;
			if (q < k) {
				v = b64_value((unsigned char)in[i + q], url);
				if (v < 0) {
					sy_secure_free(o, olen + 1);
					return -1;
				}
			}
			acc = (acc << 6) | (uint32_t)v;
		}
		if ((k == 2 && (acc & 0xffff) != 0) || (k == 3 && (acc & 0xff) != 0)) {
			sy_secure_free(o, olen + 1);
			return -1;
		}
		o[j++] = (uint8_t)(acc >> 16);
		if (k > 2) {
			o[j++] = (uint8_t)(acc >> 8);
		}
		if (k > 3) {
			o[j++] = (uint8_t)acc;
		}
	}
	o[j] = '\0';
	*out = o;
	*out_len = j;
	return 0;
}

int sy_b64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	/* "=" is how SASL spells an empty initial response (RFC 4954 §4). */
	if (len == 0 || (len == 1 && in[0] == '=')) {
		return b64_core("", 0, false, out, out_len);
	}
	if (len % 4 != 0) {
		return -1;
	}
	size_t pad = 0;
	while (pad < len && in[len - 1 - pad] == '=') {
		pad++;
	}
	if (pad > 2) {
		return -1;
	}
	/* With len a multiple of 4, one or two '=' leave a final group of 3
	 * or 2 characters, which b64_core checks for stray bits. Any other
	 * '=' is not in the alphabet and fails there. */
	return b64_core(in, len - pad, false, out, out_len);
}

int sy_b64url_decode(const char *in, size_t len, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	return b64_core(in != NULL ? in : "", len, true, out, out_len);
}

char *sy_b64_encode(const uint8_t *in, size_t len, size_t *out_len)
{
	if (len > (SIZE_MAX - 1) / 4 * 3 - 3) {
		return NULL;
	}
	size_t olen = (len + 2) / 3 * 4;
	char *o = malloc(olen + 1);
	if (o == NULL) {
		return NULL;
	}
	size_t j = 0;
	for (size_t i = 0; i < len; i += 3) {
		size_t k = len - i < 3 ? len - i : 3;
		uint32_t acc = (uint32_t)in[i] << 16;
		if (k > 1) {
			acc |= (uint32_t)in[i + 1] << 8;
		}
		if (k > 2) {
			acc |= in[i + 2];
		}
		o[j++] = b64_std_alpha[(acc >> 18) & 63];
		o[j++] = b64_std_alpha[(acc >> 12) & 63];
		o[j++] = k > 1 ? b64_std_alpha[(acc >> 6) & 63] : '=';
		o[j++] = k > 2 ? b64_std_alpha[acc & 63] : '=';
	}
	o[j] = '\0';
	if (out_len != NULL) {
		*out_len = j;
	}
	return o;
}
