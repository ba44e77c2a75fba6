/*
 * Unit tests for src/auth/: SASL decoding and replay (sasl.c), the strict
 * base64 codecs, bearer-token identifiers (token.c) and the routing
 * identifier rules of SPEC.md section 2 (identifier.c).
 *
 * Every decode runs on a heap copy of exactly the input's size so that
 * AddressSanitizer catches a read past the end; built with
 * -fsanitize=address, LeakSanitizer checks at exit that credentials_wipe()
 * and the error paths release everything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/sasl.h"

/* A string literal and its length, NULs included. */
#define LIT(s) s, sizeof(s) - 1

static uint8_t *heap_copy(const void *p, size_t len)
{
	uint8_t *b = malloc(len > 0 ? len : 1);
	assert_non_null(b);
	if (len > 0) {
		memcpy(b, p, len);
	}
	return b;
}

/* base64url without padding, for building tokens. */
static char *b64url(const char *s)
{
	size_t n;
	char *e = sy_b64_encode((const uint8_t *)s, strlen(s), &n);
	assert_non_null(e);
	for (size_t i = 0; i < n; i++) {
		if (e[i] == '+') {
			e[i] = '-';
		} else if (e[i] == '/') {
			e[i] = '_';
		} else if (e[i] == '=') {
			e[i] = '\0';
			break;
		}
	}
	return e;
}

/* "<header>.<payload>.sig" with an unsigned JWT header. */
static char *make_jwt(const char *payload_json)
{
	char *h = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}");
	char *p = b64url(payload_json);
	size_t n = strlen(h) + strlen(p) + 8;
	char *t = malloc(n);
	assert_non_null(t);
	snprintf(t, n, "%s.%s.sig", h, p);
	free(h);
	free(p);
	return t;
}

static char *make_sw1(const char *account)
{
	char *x = b64url(account);
	size_t n = strlen(x) + 16;
	char *t = malloc(n);
	assert_non_null(t);
	snprintf(t, n, "sw1.b3BhcXVl.%s", x);
	free(x);
	return t;
}

/* ---- mechanism names ---------------------------------------------------- */

static void test_mech_names(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		sy_mech m;
	} cases[] = {
	    {"PLAIN", SY_MECH_PLAIN},     {"plain", SY_MECH_PLAIN},
	    {"Login", SY_MECH_LOGIN},     {"OAUTHBEARER", SY_MECH_OAUTHBEARER},
	    {"xoauth2", SY_MECH_XOAUTH2}, {"XOAUTH", SY_MECH_UNKNOWN},
	    {"PLAINX", SY_MECH_UNKNOWN},  {"CRAM-MD5", SY_MECH_UNKNOWN},
	    {"", SY_MECH_UNKNOWN},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(sasl_mech_parse(cases[i].name, strlen(cases[i].name)), cases[i].m);
	}
	/* The length bounds the comparison, not a NUL. */
	assert_int_equal(sasl_mech_parse("PLAINTEXT", 5), SY_MECH_PLAIN);
	assert_string_equal(sasl_mech_name(SY_MECH_PLAIN), "PLAIN");
	assert_string_equal(sasl_mech_name(SY_MECH_LOGIN), "LOGIN");
	assert_string_equal(sasl_mech_name(SY_MECH_OAUTHBEARER), "OAUTHBEARER");
	assert_string_equal(sasl_mech_name(SY_MECH_XOAUTH2), "XOAUTH2");
}

/* ---- sasl_decode -------------------------------------------------------- */

struct decode_case {
	const char *name;
	sy_mech mech;
	const char *msg;
	size_t len;
	bool ok;
	const char *authzid; /* expected fields on success (NULL = must be NULL) */
	const char *authcid;
	const char *password;
	const char *token;
	const char *user;
	const char *error; /* expected substring of the error on failure */
};

#define OK(n, m, msg, z, c, p, t, u)                                                               \
	{                                                                                          \
		n, m, LIT(msg), true, z, c, p, t, u, NULL                                          \
	}
#define BAD(n, m, msg, err)                                                                        \
	{                                                                                          \
		n, m, LIT(msg), false, NULL, NULL, NULL, NULL, NULL, err                           \
	}

static const struct decode_case decode_cases[] = {
    /* PLAIN (RFC 4616) */
    OK("plain", SY_MECH_PLAIN, "\0alice@example.com\0secret", "", "alice@example.com", "secret",
       NULL, NULL),
    OK("plain authzid", SY_MECH_PLAIN, "bob@example.com\0admin@example.com\0pw", "bob@example.com",
       "admin@example.com", "pw", NULL, NULL),
    OK("plain utf8 password", SY_MECH_PLAIN, "\0u\0p\xc3\xa4ss w\x01rd", "", "u",
       "p\xc3\xa4ss w\x01rd", NULL, NULL),
    BAD("plain one nul", SY_MECH_PLAIN, "alice\0secret", "malformed PLAIN"),
    BAD("plain no nul", SY_MECH_PLAIN, "alice secret", "malformed PLAIN"),
    BAD("plain three nuls", SY_MECH_PLAIN, "\0alice\0secret\0", "malformed PLAIN"),
    BAD("plain three nuls mid", SY_MECH_PLAIN, "a\0b\0c\0d", "malformed PLAIN"),
    BAD("plain empty user", SY_MECH_PLAIN, "authz\0\0secret", "empty user name"),
    BAD("plain empty password", SY_MECH_PLAIN, "\0alice\0", "empty password"),
    BAD("plain only nuls", SY_MECH_PLAIN, "\0\0", "empty user name"),
    BAD("plain empty", SY_MECH_PLAIN, "", "malformed PLAIN"),

    /* OAUTHBEARER (RFC 7628) */
    OK("oauthbearer a=", SY_MECH_OAUTHBEARER,
       "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
       "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
       NULL, NULL, NULL, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", "user@example.com"),
    OK("oauthbearer no a=", SY_MECH_OAUTHBEARER,
       "n,,\x01"
       "auth=Bearer tok\x01\x01",
       NULL, NULL, NULL, "tok", NULL),
    OK("oauthbearer y flag", SY_MECH_OAUTHBEARER,
       "y,,\x01"
       "auth=Bearer tok\x01\x01",
       NULL, NULL, NULL, "tok", NULL),
    OK("oauthbearer escaped a=", SY_MECH_OAUTHBEARER,
       "n,a=we=2Cird=3Dname@example.com,\x01"
       "auth=Bearer t\x01\x01",
       NULL, NULL, NULL, "t", "we,ird=name@example.com"),
    OK("oauthbearer auth first, extensions", SY_MECH_OAUTHBEARER,
       "n,,\x01"
       "auth=bearer  abc.def-ghi_~+/=\x01"
       "mthd=POST\x01path=/\x01qs=\x01\x01",
       NULL, NULL, NULL, "abc.def-ghi_~+/=", NULL),
    BAD("oauthbearer missing auth", SY_MECH_OAUTHBEARER,
        "n,a=user@example.com,\x01host=h\x01port=143\x01\x01", "missing auth"),
    BAD("oauthbearer no pairs", SY_MECH_OAUTHBEARER, "n,,\x01\x01", "missing auth"),
    BAD("oauthbearer lone kvsep", SY_MECH_OAUTHBEARER, "\x01", "malformed OAUTHBEARER"),
    BAD("oauthbearer no gs2 header", SY_MECH_OAUTHBEARER, "auth=Bearer tok\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer bad cb flag", SY_MECH_OAUTHBEARER,
        "x,,\x01"
        "auth=Bearer t\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer channel binding", SY_MECH_OAUTHBEARER,
        "p=tls-unique,,\x01"
        "auth=Bearer t\x01\x01",
        "channel binding"),
    BAD("oauthbearer header one comma", SY_MECH_OAUTHBEARER,
        "n,\x01"
        "auth=Bearer t\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer empty a=", SY_MECH_OAUTHBEARER,
        "n,a=,\x01"
        "auth=Bearer t\x01\x01",
        "authorization identity"),
    BAD("oauthbearer bad escape", SY_MECH_OAUTHBEARER,
        "n,a=u=2Dx,\x01"
        "auth=Bearer t\x01\x01",
        "authorization identity"),
    BAD("oauthbearer lowercase escape", SY_MECH_OAUTHBEARER,
        "n,a=u=2cx,\x01"
        "auth=Bearer t\x01\x01",
        "authorization identity"),
    BAD("oauthbearer unterminated a=", SY_MECH_OAUTHBEARER, "n,a=user", "authorization identity"),
    BAD("oauthbearer header without kvsep", SY_MECH_OAUTHBEARER, "n,,auth=Bearer t\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer no final kvsep", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Bearer t\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer trailing bytes", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Bearer t\x01\x01x",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer basic scheme", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Basic dTpw\x01\x01",
        "bad auth value"),
    BAD("oauthbearer empty token", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Bearer \x01\x01",
        "bad auth value"),
    BAD("oauthbearer no space", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Bearertok\x01\x01",
        "bad auth value"),
    BAD("oauthbearer space in token", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Bearer a b\x01\x01",
        "bad auth value"),
    BAD("oauthbearer duplicate auth", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "auth=Bearer a\x01"
        "auth=Bearer b\x01\x01",
        "duplicate auth"),
    BAD("oauthbearer bad key", SY_MECH_OAUTHBEARER,
        "n,,\x01"
        "ho-st=x\x01"
        "auth=Bearer t\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer pair without =", SY_MECH_OAUTHBEARER,
        "n,,\x01host\x01"
        "auth=Bearer t\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer nul in value", SY_MECH_OAUTHBEARER,
        "n,,\x01host=a\0b\x01"
        "auth=Bearer t\x01\x01",
        "malformed OAUTHBEARER"),
    BAD("oauthbearer empty", SY_MECH_OAUTHBEARER, "", "malformed OAUTHBEARER"),

    /* XOAUTH2 */
    OK("xoauth2", SY_MECH_XOAUTH2,
       "user=someuser@example.com\x01"
       "auth=Bearer ya29.vF9dft4\x01\x01",
       NULL, NULL, NULL, "ya29.vF9dft4", "someuser@example.com"),
    BAD("xoauth2 missing user", SY_MECH_XOAUTH2, "auth=Bearer t\x01\x01", "malformed XOAUTH2"),
    BAD("xoauth2 empty user", SY_MECH_XOAUTH2,
        "user=\x01"
        "auth=Bearer t\x01\x01",
        "malformed XOAUTH2"),
    BAD("xoauth2 missing auth", SY_MECH_XOAUTH2, "user=u\x01\x01", "malformed XOAUTH2"),
    BAD("xoauth2 one final kvsep", SY_MECH_XOAUTH2,
        "user=u\x01"
        "auth=Bearer t\x01",
        "malformed XOAUTH2"),
    BAD("xoauth2 trailing", SY_MECH_XOAUTH2,
        "user=u\x01"
        "auth=Bearer t\x01\x01\x01",
        "malformed XOAUTH2"),
    BAD("xoauth2 swapped", SY_MECH_XOAUTH2, "auth=Bearer t\x01user=u\x01\x01", "malformed XOAUTH2"),
    BAD("xoauth2 not bearer", SY_MECH_XOAUTH2,
        "user=u\x01"
        "auth=Basic t\x01\x01",
        "bad auth value"),
    BAD("xoauth2 nul", SY_MECH_XOAUTH2,
        "user=u\0\x01"
        "auth=Bearer t\x01\x01",
        "malformed XOAUTH2"),

    /* Mechanisms sasl_decode does not take */
    BAD("login", SY_MECH_LOGIN, "\0u\0p", "LOGIN"),
    BAD("unknown", SY_MECH_UNKNOWN, "\0u\0p", "unsupported"),
};

static void check_str(const char *what, const char *case_name, const char *want, const char *got)
{
	if (want == NULL) {
		if (got != NULL) {
			fail_msg("%s: %s: want NULL, got \"%s\"", case_name, what, got);
		}
		return;
	}
	if (got == NULL || strcmp(want, got) != 0) {
		fail_msg("%s: %s: want \"%s\", got \"%s\"", case_name, what, want,
		         got != NULL ? got : "(null)");
	}
}

static void test_decode_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
		const struct decode_case *t = &decode_cases[i];
		uint8_t *msg = heap_copy(t->msg, t->len);
		sy_credentials c;
		memset(&c, 0xa5, sizeof(c)); /* decode must not trust what was there */
		const char *err = NULL;
		int r = sasl_decode(t->mech, msg, t->len, &c, &err);
		if (!t->ok) {
			if (r != -1) {
				fail_msg("%s: decoded, want failure", t->name);
			}
			if (err == NULL || strstr(err, t->error) == NULL) {
				fail_msg("%s: error \"%s\", want \"%s\"", t->name,
				         err != NULL ? err : "(null)", t->error);
			}
			/* A failed decode leaves nothing to free. */
			assert_null(c.authzid);
			assert_null(c.authcid);
			assert_null(c.password);
			assert_null(c.token);
			assert_null(c.user);
			assert_null(c.raw);
			assert_int_equal(c.raw_len, 0);
		} else {
			if (r != 0) {
				fail_msg("%s: failed with \"%s\"", t->name, err);
			}
			assert_int_equal(c.mech, t->mech);
			check_str("authzid", t->name, t->authzid, c.authzid);
			check_str("authcid", t->name, t->authcid, c.authcid);
			check_str("password", t->name, t->password, c.password);
			check_str("token", t->name, t->token, c.token);
			check_str("user", t->name, t->user, c.user);
			if (t->mech == SY_MECH_PLAIN) {
				assert_null(c.raw);
			} else {
				assert_int_equal(c.raw_len, t->len);
				assert_memory_equal(c.raw, t->msg, t->len);
			}
			credentials_wipe(&c);
		}
		free(msg);
	}
}

/* ---- LOGIN -------------------------------------------------------------- */

static void test_login(void **state)
{
	(void)state;
	sy_credentials c;
	assert_int_equal(credentials_from_login(&c, LIT("alice@example.com"), LIT("s3cret")), 0);
	assert_int_equal(c.mech, SY_MECH_LOGIN);
	assert_string_equal(c.authcid, "alice@example.com");
	assert_string_equal(c.password, "s3cret");
	assert_string_equal(c.authzid, "");
	assert_null(c.token);
	assert_null(c.user);
	credentials_wipe(&c);

	/* The lengths, not a NUL, delimit the inputs. */
	assert_int_equal(credentials_from_login(&c, "bobby", 3, "pwxyz", 2), 0);
	assert_string_equal(c.authcid, "bob");
	assert_string_equal(c.password, "pw");
	credentials_wipe(&c);

	static const struct {
		const char *u;
		size_t ul;
		const char *p;
		size_t pl;
	} bad[] = {
	    {LIT(""), LIT("pw")},
	    {LIT("user"), LIT("")},
	    {LIT("us\0er"), LIT("pw")},
	    {LIT("user"), LIT("p\0w")},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    credentials_from_login(&c, bad[i].u, bad[i].ul, bad[i].p, bad[i].pl), -1);
		assert_null(c.authcid);
		assert_null(c.password);
		assert_null(c.authzid);
	}
}

/* ---- replay ------------------------------------------------------------- */

static void test_replay(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		sy_mech mech;
		const char *msg;
		size_t len;
		sy_mech want_mech;
		const char *want;
		size_t want_len;
	} cases[] = {
	    {"plain", SY_MECH_PLAIN, LIT("\0alice@x.com%admin\0pw"), SY_MECH_PLAIN,
	     LIT("\0alice@x.com%admin\0pw")},
	    {"plain authzid", SY_MECH_PLAIN, LIT("z\0c\0p"), SY_MECH_PLAIN, LIT("z\0c\0p")},
	    {"oauthbearer", SY_MECH_OAUTHBEARER,
	     LIT("n,a=u@x,\x01host=h\x01port=993\x01"
	         "auth=Bearer t\x01\x01"),
	     SY_MECH_OAUTHBEARER,
	     LIT("n,a=u@x,\x01host=h\x01port=993\x01"
	         "auth=Bearer t\x01\x01")},
	    {"xoauth2", SY_MECH_XOAUTH2,
	     LIT("user=u\x01"
	         "auth=Bearer t\x01\x01"),
	     SY_MECH_XOAUTH2,
	     LIT("user=u\x01"
	         "auth=Bearer t\x01\x01")},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sy_credentials c;
		const char *err;
		assert_int_equal(sasl_decode(cases[i].mech, (const uint8_t *)cases[i].msg,
		                             cases[i].len, &c, &err),
		                 0);
		sy_mech m = SY_MECH_UNKNOWN;
		uint8_t *out;
		size_t n;
		assert_int_equal(sasl_replay_message(&c, &m, &out, &n), 0);
		assert_int_equal(m, cases[i].want_mech);
		assert_int_equal(n, cases[i].want_len);
		assert_memory_equal(out, cases[i].want, n);
		sy_secure_free(out, n);
		credentials_wipe(&c);
	}

	/* LOGIN is replayed as PLAIN with an empty authzid. */
	sy_credentials c;
	assert_int_equal(credentials_from_login(&c, LIT("alice@x.com"), LIT("pw")), 0);
	sy_mech m = SY_MECH_UNKNOWN;
	uint8_t *out;
	size_t n;
	assert_int_equal(sasl_replay_message(&c, &m, &out, &n), 0);
	assert_int_equal(m, SY_MECH_PLAIN);
	assert_int_equal(n, sizeof("\0alice@x.com\0pw") - 1);
	assert_memory_equal(out, "\0alice@x.com\0pw", n);
	sy_secure_free(out, n);
	credentials_wipe(&c);

	/* Wiped credentials have nothing to replay. */
	assert_int_equal(sasl_replay_message(&c, &m, &out, &n), -1);
	assert_null(out);
	sy_secure_free(NULL, 0);
}

/* Bearer tokens well past any line-length habit: 16 KiB and 64 KiB. */
static void test_large_tokens(void **state)
{
	(void)state;
	static const size_t sizes[] = {16 * 1024, 64 * 1024};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t tlen = sizes[s];
		char *tok = malloc(tlen + 1);
		assert_non_null(tok);
		for (size_t i = 0; i < tlen; i++) {
			tok[i] = "abcdefghijklmnopqrstuvwxyz0123456789-._~+/"[i % 42];
		}
		tok[tlen] = '\0';
		for (int mech = 0; mech < 2; mech++) {
			size_t cap = tlen + 128;
			char *msg = malloc(cap);
			assert_non_null(msg);
			int ml = mech == 0 ? snprintf(msg, cap,
			                              "n,a=big@example.com,\x01"
			                              "auth=Bearer %s\x01\x01",
			                              tok)
			                   : snprintf(msg, cap,
			                              "user=big@example.com\x01"
			                              "auth=Bearer %s\x01\x01",
			                              tok);
			/* The path a protocol takes: base64 on the wire. */
			size_t bl;
			char *b64 = sy_b64_encode((const uint8_t *)msg, (size_t)ml, &bl);
			assert_non_null(b64);
			uint8_t *dec;
			size_t dl;
			assert_int_equal(sy_b64_decode(b64, bl, &dec, &dl), 0);
			assert_int_equal(dl, (size_t)ml);
			sy_credentials c;
			const char *err;
			sy_mech m = mech == 0 ? SY_MECH_OAUTHBEARER : SY_MECH_XOAUTH2;
			assert_int_equal(sasl_decode(m, dec, dl, &c, &err), 0);
			assert_string_equal(c.token, tok);
			uint8_t *out;
			size_t n;
			sy_mech rm;
			assert_int_equal(sasl_replay_message(&c, &rm, &out, &n), 0);
			assert_int_equal(rm, m);
			assert_int_equal(n, (size_t)ml);
			assert_memory_equal(out, msg, n);
			sy_secure_free(out, n);
			credentials_wipe(&c);
			sy_secure_free(dec, dl);
			free(b64);
			free(msg);
		}
		free(tok);
	}
}

/* ---- base64 ------------------------------------------------------------- */

struct b64_case {
	const char *in;
	bool ok;
	const char *out;
	size_t out_len;
};

static void run_b64_cases(const struct b64_case *cases, size_t n, bool url)
{
	for (size_t i = 0; i < n; i++) {
		size_t inlen = strlen(cases[i].in);
		char *in = (char *)heap_copy(cases[i].in, inlen);
		uint8_t *out = (uint8_t *)"untouched";
		size_t ol = 99;
		int r = url ? sy_b64url_decode(in, inlen, &out, &ol)
		            : sy_b64_decode(in, inlen, &out, &ol);
		if (!cases[i].ok) {
			if (r != -1) {
				fail_msg("\"%s\" decoded, want failure", cases[i].in);
			}
			assert_null(out);
		} else {
			if (r != 0) {
				fail_msg("\"%s\" failed to decode", cases[i].in);
			}
			assert_int_equal(ol, cases[i].out_len);
			assert_memory_equal(out, cases[i].out, ol);
			assert_int_equal(out[ol], '\0');
			free(out);
		}
		free(in);
	}
}

static void test_b64_strict(void **state)
{
	(void)state;
	static const struct b64_case cases[] = {
	    /* RFC 4648 §10 */
	    {"", true, LIT("")},
	    {"Zg==", true, LIT("f")},
	    {"Zm8=", true, LIT("fo")},
	    {"Zm9v", true, LIT("foo")},
	    {"Zm9vYg==", true, LIT("foob")},
	    {"Zm9vYmE=", true, LIT("fooba")},
	    {"Zm9vYmFy", true, LIT("foobar")},
	    /* the SASL empty response */
	    {"=", true, LIT("")},
	    {"AGFsaWNlAHB3", true, LIT("\0alice\0pw")},
	    {"+/+/", true, LIT("\xfb\xff\xbf")},
	    /* bad padding */
	    {"==", false, NULL, 0},
	    {"====", false, NULL, 0},
	    {"Zg", false, NULL, 0},
	    {"Zg=", false, NULL, 0},
	    {"Z===", false, NULL, 0},
	    {"Zg==Zg==", false, NULL, 0},
	    {"Zg=a", false, NULL, 0},
	    {"Zm9vY", false, NULL, 0},
	    /* non-zero bits under the padding */
	    {"Zh==", false, NULL, 0},
	    {"Zm9=", false, NULL, 0},
	    /* bad characters */
	    {"Zm9v\n", false, NULL, 0},
	    {"Zm9v\r\n", false, NULL, 0},
	    {" Zm9v", false, NULL, 0},
	    {"Zm 9v", false, NULL, 0},
	    {"Zm9!", false, NULL, 0},
	    {"Zm9-", false, NULL, 0},
	    {"Zm9_", false, NULL, 0},
	    {"Zm9v\x80\x80\x80\x80", false, NULL, 0},
	};
	run_b64_cases(cases, sizeof(cases) / sizeof(cases[0]), false);

	/* An embedded NUL is a bad character, not the end of the input. */
	uint8_t *out;
	size_t ol;
	assert_int_equal(sy_b64_decode("Zg==\0\0\0\0", 8, &out, &ol), -1);
}

static void test_b64url(void **state)
{
	(void)state;
	static const struct b64_case cases[] = {
	    {"", true, LIT("")},
	    {"Zg", true, LIT("f")},
	    {"Zm8", true, LIT("fo")},
	    {"Zm9vYmFy", true, LIT("foobar")},
	    {"-_-_", true, LIT("\xfb\xff\xbf")},
	    {"-_8", true, LIT("\xfb\xff")},
	    {"Zg==", false, NULL, 0},
	    {"Zm8=", false, NULL, 0},
	    {"Z", false, NULL, 0},
	    {"Zm9vY", false, NULL, 0},
	    {"+/+/", false, NULL, 0},
	    {"Zh", false, NULL, 0},
	    {"Zm.v", false, NULL, 0},
	};
	run_b64_cases(cases, sizeof(cases) / sizeof(cases[0]), true);
}

static void test_b64_round_trip(void **state)
{
	(void)state;
	/* Every length around the 3-byte boundary, then 16 KiB of all byte
	 * values. */
	size_t lens[] = {0, 1, 2, 3, 4, 5, 6, 7, 16 * 1024, 16 * 1024 + 1, 16 * 1024 + 2};
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t n = lens[k];
		uint8_t *in = malloc(n > 0 ? n : 1);
		assert_non_null(in);
		for (size_t i = 0; i < n; i++) {
			in[i] = (uint8_t)(i * 131 + 7);
		}
		size_t el;
		char *e = sy_b64_encode(in, n, &el);
		assert_non_null(e);
		assert_int_equal(el, (n + 2) / 3 * 4);
		assert_int_equal(strlen(e), el);
		uint8_t *d;
		size_t dl;
		assert_int_equal(sy_b64_decode(e, el, &d, &dl), 0);
		assert_int_equal(dl, n);
		if (n > 0) {
			assert_memory_equal(d, in, n);
		}
		free(d);
		free(e);
		free(in);
	}
	size_t el;
	char *e = sy_b64_encode((const uint8_t *)"foobar", 6, &el);
	assert_string_equal(e, "Zm9vYmFy");
	free(e);
	e = sy_b64_encode((const uint8_t *)"\0alice\0pw", 9, NULL);
	assert_string_equal(e, "AGFsaWNlAHB3");
	free(e);
}

/* ---- token_identifier --------------------------------------------------- */

static void test_token_identifier(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		const char *kind; /* "sw1", "jwt" (payload JSON) or "raw" */
		const char *body;
		const char *claim;
		const char *want; /* NULL = no identifier */
	} cases[] = {
	    {"sw1", "sw1", "alice@example.com", NULL, "alice@example.com"},
	    /* sw1 needs no '@': the decoded text is the account */
	    {"sw1 no at", "sw1", "alice", NULL, "alice"},
	    {"sw1 utf8", "sw1", "j\xc3\xb6rg@example.com", NULL, "j\xc3\xb6rg@example.com"},
	    /* The account is the footer; the body is opaque, even when it would
	     * decode to an account of its own. */
	    {"sw1 body ignored", "raw", "sw1.b3RoZXJAZXhhbXBsZS5jb20.YWxpY2VAZXhhbXBsZS5jb20", NULL,
	     "alice@example.com"},
	    {"sw1 empty body", "raw", "sw1..YWxpY2VAZXhhbXBsZS5jb20", NULL, "alice@example.com"},
	    {"sw1 without footer", "raw", "sw1.YWxpY2VAZXhhbXBsZS5jb20", NULL, NULL},
	    {"sw1 empty footer", "raw", "sw1.YWxpY2VAZXhhbXBsZS5jb20.", NULL, NULL},
	    {"sw1 padded footer", "raw", "sw1.body.YWxpY2VAZXhhbXBsZS5jb20=", NULL, NULL},
	    {"sw1 footer with a dot", "raw", "sw1.body.YWxp.Y2U", NULL, NULL},
	    {"sw1 bad utf8", "raw", "sw1.body.gA", NULL, NULL},
	    {"sw1 nul", "raw", "sw1.body.YQBi", NULL, NULL},
	    {"sw1 not b64url", "raw", "sw1.body.a+b/", NULL, NULL},
	    {"sw1 prefix only", "raw", "sw1.", NULL, NULL},
	    {"jwt custom claim", "jwt", "{\"email\":\"e@x.com\",\"mail\":\"m@x.com\"}", "mail",
	     "m@x.com"},
	    {"jwt custom claim without @", "jwt", "{\"mail\":\"m\",\"email\":\"e@x.com\"}", "mail",
	     "e@x.com"},
	    {"jwt email default", "jwt", "{\"sub\":\"s@x.com\",\"email\":\"e@x.com\"}", NULL,
	     "e@x.com"},
	    {"jwt preferred_username", "jwt",
	     "{\"sub\":\"s@x.com\",\"preferred_username\":\"p@x.com\",\"upn\":\"u@x.com\"}", NULL,
	     "p@x.com"},
	    {"jwt upn", "jwt",
	     "{\"sub\":\"s@x.com\",\"unique_name\":\"n@x.com\",\"upn\":\"u@x.com\"}", NULL,
	     "u@x.com"},
	    {"jwt unique_name", "jwt", "{\"sub\":\"s@x.com\",\"unique_name\":\"n@x.com\"}", NULL,
	     "n@x.com"},
	    {"jwt sub", "jwt", "{\"sub\":\"s@x.com\",\"name\":\"Alice\"}", NULL, "s@x.com"},
	    {"jwt first with @ wins", "jwt",
	     "{\"email\":\"nope\",\"preferred_username\":\"alice\",\"upn\":\"u@x.com\",\"sub\":\"s@"
	     "x."
	     "com\"}",
	     NULL, "u@x.com"},
	    {"jwt non-string skipped", "jwt",
	     "{\"email\":[\"a@x.com\"],\"preferred_username\":{\"v\":\"b@x.com\"},\"upn\":42,"
	     "\"unique_name\":null,\"sub\":\"s@x.com\"}",
	     NULL, "s@x.com"},
	    {"jwt custom claim non-string", "jwt", "{\"mail\":true,\"email\":\"e@x.com\"}", "mail",
	     "e@x.com"},
	    {"jwt no @ anywhere", "jwt", "{\"sub\":\"1234567890\",\"email\":\"alice\"}", NULL,
	     NULL},
	    {"jwt not an object", "jwt", "[\"a@x.com\"]", NULL, NULL},
	    {"jwt bad json", "jwt", "{\"email\":\"a@x.com\"", NULL, NULL},
	    {"jwt duplicate claim", "jwt", "{\"email\":\"a@x.com\",\"email\":\"b@x.com\"}", NULL,
	     NULL},
	    {"jwt nul in claim", "jwt", "{\"email\":\"a\\u0000@x.com\"}", NULL, NULL},
	    {"opaque", "raw", "ya29.a0AfH6SMBx3", NULL, NULL},
	    {"opaque no dots", "raw", "2YotnFZFEjr1zCsicMWpAA", NULL, NULL},
	    {"opaque payload not json", "raw", "aaa.bbb.ccc", NULL, NULL},
	    {"empty payload", "raw", "a..c", NULL, NULL},
	    {"empty", "raw", "", NULL, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *tok;
		if (strcmp(cases[i].kind, "sw1") == 0) {
			tok = make_sw1(cases[i].body);
		} else if (strcmp(cases[i].kind, "jwt") == 0) {
			tok = make_jwt(cases[i].body);
		} else {
			tok = strdup(cases[i].body);
		}
		char *id = token_identifier(tok, cases[i].claim);
		check_str("identifier", cases[i].name, cases[i].want, id);
		free(id);
		free(tok);
	}
	assert_null(token_identifier(NULL, NULL));
}

/* ---- identifier_extract ------------------------------------------------- */

struct ident_case {
	const char *name;
	sy_mech mech;
	const char *authzid;
	const char *authcid;
	const char *user;
	const char *token; /* "sw1:<account>" / "jwt:<payload>" are built; anything else raw */
	const char *claim;
	const char *seps[4]; /* NULL-terminated; all NULL = no separators configured */
	bool lowercase;
	sy_ident_result want;
	const char *want_id;
};

#define PCT                                                                                        \
	{                                                                                          \
		"%", NULL                                                                          \
	}

static const struct ident_case ident_cases[] = {
    /* SPEC §2 rows */
    {"plain authcid", SY_MECH_PLAIN, "", "alice@example.com", NULL, NULL, NULL, PCT, false,
     SY_IDENT_OK, "alice@example.com"},
    {"plain authzid ignored", SY_MECH_PLAIN, "boss@example.com", "alice@example.com", NULL, NULL,
     NULL, PCT, false, SY_IDENT_OK, "alice@example.com"},
    {"login user", SY_MECH_LOGIN, "", "bob@example.com", NULL, NULL, NULL, PCT, false, SY_IDENT_OK,
     "bob@example.com"},
    {"plain without @", SY_MECH_PLAIN, "", "bob", NULL, NULL, NULL, PCT, false, SY_IDENT_OK, "bob"},
    {"oauthbearer a= with @", SY_MECH_OAUTHBEARER, NULL, NULL, "alice@example.com",
     "sw1:other@example.com", NULL, PCT, false, SY_IDENT_OK, "alice@example.com"},
    {"oauthbearer a= without @ -> token", SY_MECH_OAUTHBEARER, NULL, NULL, "alice",
     "sw1:alice@example.com", NULL, PCT, false, SY_IDENT_OK, "alice@example.com"},
    {"oauthbearer no a= -> token", SY_MECH_OAUTHBEARER, NULL, NULL, NULL,
     "jwt:{\"email\":\"carol@example.com\"}", NULL, PCT, false, SY_IDENT_OK, "carol@example.com"},
    {"oauthbearer a= without @, opaque token", SY_MECH_OAUTHBEARER, NULL, NULL, "alice",
     "2YotnFZFEjr1zCsicMWpAA", NULL, PCT, false, SY_IDENT_NONE, NULL},
    {"xoauth2 ignores user=", SY_MECH_XOAUTH2, NULL, NULL, "mallory@evil.com",
     "sw1:alice@example.com", NULL, PCT, false, SY_IDENT_OK, "alice@example.com"},
    {"xoauth2 opaque token ignores user=", SY_MECH_XOAUTH2, NULL, NULL, "mallory@evil.com",
     "ya29.opaque", NULL, PCT, false, SY_IDENT_NONE, NULL},
    {"xoauth2 jwt custom claim", SY_MECH_XOAUTH2, NULL, NULL, "u",
     "jwt:{\"email\":\"e@x.com\",\"mail\":\"m@x.com\"}", "mail", PCT, false, SY_IDENT_OK,
     "m@x.com"},
    {"xoauth2 jwt fallback sub", SY_MECH_XOAUTH2, NULL, NULL, "u",
     "jwt:{\"email\":\"alice\",\"sub\":\"s@x.com\"}", NULL, PCT, false, SY_IDENT_OK, "s@x.com"},
    {"xoauth2 jwt no claim", SY_MECH_XOAUTH2, NULL, NULL, "u@x.com", "jwt:{\"sub\":\"1234\"}", NULL,
     PCT, false, SY_IDENT_NONE, NULL},

    /* master-user separators */
    {"master cut", SY_MECH_PLAIN, "", "alice@x.com%admin", NULL, NULL, NULL, PCT, false,
     SY_IDENT_OK, "alice@x.com"},
    {"master cut earliest",
     SY_MECH_PLAIN,
     "",
     "alice@x.com*admin%other",
     NULL,
     NULL,
     NULL,
     {"%", "*", NULL},
     false,
     SY_IDENT_OK,
     "alice@x.com"},
    {"master cut earliest other order",
     SY_MECH_PLAIN,
     "",
     "alice@x.com%admin*other",
     NULL,
     NULL,
     NULL,
     {"*", "%", NULL},
     false,
     SY_IDENT_OK,
     "alice@x.com"},
    {"master multi-char separator",
     SY_MECH_PLAIN,
     "",
     "alice@x.com::admin",
     NULL,
     NULL,
     NULL,
     {"::", NULL},
     false,
     SY_IDENT_OK,
     "alice@x.com"},
    {"no separators configured",
     SY_MECH_PLAIN,
     "",
     "alice@x.com%admin",
     NULL,
     NULL,
     NULL,
     {NULL},
     false,
     SY_IDENT_OK,
     "alice@x.com%admin"},
    {"empty separator ignored",
     SY_MECH_PLAIN,
     "",
     "alice@x.com%admin",
     NULL,
     NULL,
     NULL,
     {"", "%", NULL},
     false,
     SY_IDENT_OK,
     "alice@x.com"},
    {"master cut on token identity", SY_MECH_XOAUTH2, NULL, NULL, NULL, "sw1:alice@x.com%admin",
     NULL, PCT, false, SY_IDENT_OK, "alice@x.com"},
    {"master cut on a=", SY_MECH_OAUTHBEARER, NULL, NULL, "alice@x.com%admin", "t", NULL, PCT,
     false, SY_IDENT_OK, "alice@x.com"},
    {"empty after cut", SY_MECH_PLAIN, "", "%admin", NULL, NULL, NULL, PCT, false, SY_IDENT_INVALID,
     NULL},

    /* normalization */
    {"lowercase", SY_MECH_PLAIN, "", "Alice@Example.COM", NULL, NULL, NULL, PCT, true, SY_IDENT_OK,
     "alice@example.com"},
    {"lowercase ascii only", SY_MECH_PLAIN, "", "J\xc3\x96RG@X.COM", NULL, NULL, NULL, PCT, true,
     SY_IDENT_OK, "j\xc3\x96rg@x.com"},
    {"normalize none", SY_MECH_PLAIN, "", "Alice@Example.COM", NULL, NULL, NULL, PCT, false,
     SY_IDENT_OK, "Alice@Example.COM"},
    {"lowercase after cut", SY_MECH_PLAIN, "", "Alice@X.com%ADMIN", NULL, NULL, NULL, PCT, true,
     SY_IDENT_OK, "alice@x.com"},

    /* forbidden bytes */
    {"space", SY_MECH_PLAIN, "", "alice @x.com", NULL, NULL, NULL, PCT, false, SY_IDENT_INVALID,
     NULL},
    {"quote", SY_MECH_PLAIN, "", "al\"ice@x.com", NULL, NULL, NULL, PCT, false, SY_IDENT_INVALID,
     NULL},
    {"del", SY_MECH_PLAIN, "", "alice\x7f@x.com", NULL, NULL, NULL, PCT, false, SY_IDENT_INVALID,
     NULL},
    {"control", SY_MECH_PLAIN, "", "alice\x01@x.com", NULL, NULL, NULL, PCT, false,
     SY_IDENT_INVALID, NULL},
    {"newline", SY_MECH_PLAIN, "", "alice@x.com\r\nA1 LOGOUT", NULL, NULL, NULL, PCT, false,
     SY_IDENT_INVALID, NULL},
    {"tab", SY_MECH_PLAIN, "", "alice\t@x.com", NULL, NULL, NULL, PCT, false, SY_IDENT_INVALID,
     NULL},
    {"forbidden only after the cut", SY_MECH_PLAIN, "", "alice@x.com%ad min", NULL, NULL, NULL, PCT,
     false, SY_IDENT_OK, "alice@x.com"},
    {"forbidden in token identity", SY_MECH_XOAUTH2, NULL, NULL, NULL,
     "jwt:{\"email\":\"a b@x.com\"}", NULL, PCT, false, SY_IDENT_INVALID, NULL},
    {"forbidden in a=", SY_MECH_OAUTHBEARER, NULL, NULL, "a\"b@x.com", "t", NULL, PCT, false,
     SY_IDENT_INVALID, NULL},
    {"utf8 allowed", SY_MECH_PLAIN, "", "j\xc3\xb6rg@x.com", NULL, NULL, NULL, PCT, false,
     SY_IDENT_OK, "j\xc3\xb6rg@x.com"},
};

static char *build_token(const char *spec)
{
	if (spec == NULL) {
		return NULL;
	}
	if (strncmp(spec, "sw1:", 4) == 0) {
		return make_sw1(spec + 4);
	}
	if (strncmp(spec, "jwt:", 4) == 0) {
		return make_jwt(spec + 4);
	}
	return strdup(spec);
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static void test_identifier_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(ident_cases) / sizeof(ident_cases[0]); i++) {
		const struct ident_case *t = &ident_cases[i];
		sy_credentials c = {0};
		c.mech = t->mech;
		c.authzid = dup_or_null(t->authzid);
		c.authcid = dup_or_null(t->authcid);
		c.password = t->authcid != NULL ? strdup("pw") : NULL;
		c.user = dup_or_null(t->user);
		c.token = build_token(t->token);

		sy_config cfg;
		memset(&cfg, 0, sizeof(cfg));
		char *seps[4];
		size_t ns = 0;
		while (ns < 4 && t->seps[ns] != NULL) {
			seps[ns] = (char *)t->seps[ns];
			ns++;
		}
		cfg.routing.master_user_separators.items = seps;
		cfg.routing.master_user_separators.len = ns;
		cfg.mapping.normalize = t->lowercase ? SY_NORMALIZE_LOWERCASE : SY_NORMALIZE_NONE;
		cfg.oauth.jwt_username_claim = (char *)(t->claim != NULL ? t->claim : "email");

		char *id = (char *)"untouched";
		sy_ident_result r = identifier_extract(&c, &cfg, &id);
		if (r != t->want) {
			fail_msg("%s: result %d, want %d", t->name, (int)r, (int)t->want);
		}
		if (r == SY_IDENT_OK) {
			check_str("identifier", t->name, t->want_id, id);
			free(id);
		} else {
			assert_null(id);
		}
		credentials_wipe(&c);
	}
}

/* With no config the SPEC defaults apply: "%" separator, no normalization,
 * claim "email". */
static void test_identifier_defaults(void **state)
{
	(void)state;
	sy_credentials c;
	assert_int_equal(credentials_from_login(&c, LIT("Alice@X.com%admin"), LIT("pw")), 0);
	char *id;
	assert_int_equal(identifier_extract(&c, NULL, &id), SY_IDENT_OK);
	assert_string_equal(id, "Alice@X.com");
	free(id);
	credentials_wipe(&c);

	/* A decoded message end to end: the routing identity is cut, the
	 * replay still carries the full login. */
	const char *err;
	assert_int_equal(
	    sasl_decode(SY_MECH_PLAIN, (const uint8_t *)LIT("\0alice@x.com%admin\0pw"), &c, &err),
	    0);
	assert_int_equal(identifier_extract(&c, NULL, &id), SY_IDENT_OK);
	assert_string_equal(id, "alice@x.com");
	free(id);
	assert_string_equal(c.authcid, "alice@x.com%admin");
	credentials_wipe(&c);
}

/* ---- credentials_wipe --------------------------------------------------- */

/*
 * Fills every field, wipes, and checks the struct is zeroed; under ASan the
 * leak checker at exit proves every allocation was released. A second wipe
 * must be harmless (callers wipe on every exit path).
 */
static void test_wipe_frees_everything(void **state)
{
	(void)state;
	sy_credentials c = {0};
	c.mech = SY_MECH_OAUTHBEARER;
	c.authzid = strdup("z");
	c.authcid = strdup("alice");
	c.password = strdup("secret");
	c.token = strdup("token");
	c.user = strdup("alice@x.com");
	c.raw_len = 32;
	c.raw = malloc(c.raw_len);
	assert_non_null(c.raw);
	memset(c.raw, 'r', c.raw_len);
	credentials_wipe(&c);
	assert_int_equal(c.mech, 0);
	assert_null(c.authzid);
	assert_null(c.authcid);
	assert_null(c.password);
	assert_null(c.token);
	assert_null(c.user);
	assert_null(c.raw);
	assert_int_equal(c.raw_len, 0);
	credentials_wipe(&c);
	credentials_wipe(NULL);

	/* And every decoder's output. */
	static const struct {
		sy_mech m;
		const char *msg;
		size_t len;
	} msgs[] = {
	    {SY_MECH_PLAIN, LIT("z\0c\0p")},
	    {SY_MECH_OAUTHBEARER, LIT("n,a=u@x,\x01"
	                              "auth=Bearer t\x01\x01")},
	    {SY_MECH_XOAUTH2, LIT("user=u\x01"
	                          "auth=Bearer t\x01\x01")},
	};
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		const char *err;
		assert_int_equal(
		    sasl_decode(msgs[i].m, (const uint8_t *)msgs[i].msg, msgs[i].len, &c, &err), 0);
		credentials_wipe(&c);
		assert_null(c.authcid);
		assert_null(c.token);
		assert_null(c.raw);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mech_names),
	    cmocka_unit_test(test_decode_table),
	    cmocka_unit_test(test_login),
	    cmocka_unit_test(test_replay),
	    cmocka_unit_test(test_large_tokens),
	    cmocka_unit_test(test_b64_strict),
	    cmocka_unit_test(test_b64url),
	    cmocka_unit_test(test_b64_round_trip),
	    cmocka_unit_test(test_token_identifier),
	    cmocka_unit_test(test_identifier_table),
	    cmocka_unit_test(test_identifier_defaults),
	    cmocka_unit_test(test_wipe_frees_everything),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
