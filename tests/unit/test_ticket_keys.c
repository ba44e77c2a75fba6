/*
 * Unit tests for TLS session ticket keys: the key file parser
 * (config_ticket_keys_read in src/config/validate.c, table-driven: both
 * encodings, comments, blanks, CR-LF, lengths, padding, bad characters,
 * duplicate names, limits, messages that never quote a key) and the inbound
 * store's ticket callback (src/tls/server.c) over in-memory handshakes: two
 * stores built from the same file resume each other's TLS 1.3 tickets, a
 * store with an older key still accepts, one without the key or without a
 * file does not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "switchyard/config.h"
#include "switchyard/errors.h"
#include "switchyard/tls.h"

static char tmpdir[] = "/tmp/sy-ticket-keys-test-XXXXXX";

static const char *path_of(const char *name)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s/%s", tmpdir, name);
	return buf;
}

static void write_file(const char *name, const char *content)
{
	FILE *f = fopen(path_of(name), "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

/* 80 bytes: i + seed, so every key (and name) differs by seed. */
static void key_bytes(unsigned char *out, int seed)
{
	for (int i = 0; i < SY_TICKET_KEY_LEN; i++)
		out[i] = (unsigned char)(i * 7 + seed * 31 + 1);
}

static char *b64_of(int seed, bool pad)
{
	static char buf[4][160];
	static int next;
	char *out = buf[next++ % 4];
	unsigned char k[SY_TICKET_KEY_LEN];
	key_bytes(k, seed);
	int n = EVP_EncodeBlock((unsigned char *)out, k, sizeof(k));
	assert_int_equal(n, 108);
	if (!pad)
		out[107] = '\0';
	return out;
}

static char *hex_of(int seed, bool upper)
{
	static char buf[4][200];
	static int next;
	char *out = buf[next++ % 4];
	unsigned char k[SY_TICKET_KEY_LEN];
	key_bytes(k, seed);
	for (int i = 0; i < SY_TICKET_KEY_LEN; i++)
		sprintf(out + 2 * i, upper ? "%02X" : "%02x", k[i]);
	return out;
}

static int read_keys(const char *content, sy_ticket_key **keys, char *why, size_t whylen)
{
	write_file("k", content);
	return config_ticket_keys_read(path_of("k"), keys, why, whylen);
}

static void free_keys(sy_ticket_key *keys, int n)
{
	if (keys != NULL) {
		OPENSSL_cleanse(keys, (size_t)n * sizeof(*keys));
		free(keys);
	}
}

static void expect_key(const sy_ticket_key *k, int seed)
{
	unsigned char want[SY_TICKET_KEY_LEN];
	key_bytes(want, seed);
	assert_memory_equal(k->name, want, 16);
	assert_memory_equal(k->hmac, want + 16, 32);
	assert_memory_equal(k->aes, want + 48, 32);
}

static void test_accepted(void **state)
{
	(void)state;
	char text[4096], why[768];
	sy_ticket_key *keys;

	/* Every accepted spelling of a key; seed order = line order. */
	snprintf(text, sizeof(text),
	         "# rotation: newest first\n"
	         "%s\n"       /* padded base64 */
	         "\n"         /* blank */
	         "  %s  \r\n" /* unpadded, blanks around, CR-LF */
	         "\t# indented comment\n"
	         "%s\n" /* lower-case hex */
	         "%s",  /* upper-case hex, no final newline */
	         b64_of(1, true), b64_of(2, false), hex_of(3, false), hex_of(4, true));
	int n = read_keys(text, &keys, why, sizeof(why));
	assert_int_equal(n, 4);
	for (int i = 0; i < 4; i++)
		expect_key(&keys[i], i + 1);
	free_keys(keys, n);

	/* The maximum number of keys. */
	size_t len = 0;
	char *big = malloc(SY_TICKET_KEYS_MAX * 110 + 1);
	assert_non_null(big);
	for (int i = 0; i < SY_TICKET_KEYS_MAX; i++)
		len += (size_t)sprintf(big + len, "%s\n", b64_of(100 + i, true));
	n = read_keys(big, &keys, why, sizeof(why));
	assert_int_equal(n, SY_TICKET_KEYS_MAX);
	expect_key(&keys[SY_TICKET_KEYS_MAX - 1], 100 + SY_TICKET_KEYS_MAX - 1);
	free_keys(keys, n);
	free(big);
}

static void test_rejected(void **state)
{
	(void)state;
	char k1[160], wrong_pad[160], bad_char[160], trailing_bits[160], short_hex[200],
	    bad_hex[200], long_b64[200];
	snprintf(k1, sizeof(k1), "%s", b64_of(1, true));
	snprintf(wrong_pad, sizeof(wrong_pad), "%.106s==", k1); /* 108 chars, 2 '=' */
	snprintf(bad_char, sizeof(bad_char), "%s", k1);
	bad_char[10] = '-'; /* base64url is not the standard alphabet */
	snprintf(trailing_bits, sizeof(trailing_bits), "%s", k1);
	/* The 107th character carries 4 bits of the 80th byte and 2 spare
	 * bits: set a spare one. */
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *at = strchr(alphabet, trailing_bits[106]);
	assert_non_null(at);
	trailing_bits[106] = alphabet[(at - alphabet) | 1];
	if (strcmp(trailing_bits, k1) == 0) /* the spare bit was set already: impossible */
		fail_msg("the encoder left a spare bit set");
	snprintf(short_hex, sizeof(short_hex), "%.158s", hex_of(1, false));
	snprintf(bad_hex, sizeof(bad_hex), "%s", hex_of(1, false));
	bad_hex[5] = 'g';
	snprintf(long_b64, sizeof(long_b64), "%sAAAA", k1);

	char dup[400];
	/* Same 16-byte name (seed 1's), different key material. */
	unsigned char a[SY_TICKET_KEY_LEN], b[SY_TICKET_KEY_LEN];
	key_bytes(a, 1);
	key_bytes(b, 2);
	memcpy(b, a, 16);
	char ea[120], eb[120];
	EVP_EncodeBlock((unsigned char *)ea, a, sizeof(a));
	EVP_EncodeBlock((unsigned char *)eb, b, sizeof(b));
	snprintf(dup, sizeof(dup), "%s\n%s\n", ea, eb);

	char two[400];
	snprintf(two, sizeof(two), "%s %s\n", b64_of(1, true), b64_of(2, true));

	const struct {
		const char *content;
		const char *want; /* in the message */
	} cases[] = {
	    {"", "holds no key"},
	    {"# only a comment\n\n   \n", "holds no key"},
	    {"hello\n", "line 1: not a ticket key (5 characters)"},
	    {wrong_pad, "line 1: not a ticket key (108 characters)"},
	    {bad_char, "line 1: not a ticket key"},
	    {trailing_bits, "line 1: not a ticket key"},
	    {short_hex, "line 1: not a ticket key (158 characters)"},
	    {bad_hex, "line 1: not a ticket key (160 characters)"},
	    {long_b64, "line 1: not a ticket key (112 characters)"},
	    {two, "line 1: not a ticket key"},
	    {dup, "line 2: the key name (its first 16 bytes) repeats"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char why[768] = "";
		sy_ticket_key *keys = (sy_ticket_key *)1;
		int n = read_keys(cases[i].content, &keys, why, sizeof(why));
		if (n != -1 || strstr(why, cases[i].want) == NULL)
			fail_msg("case %zu: n=%d why=%s", i, n, why);
		assert_null(keys);
		assert_non_null(strstr(why, path_of("k")));
		/* Never a piece of the line in the message. */
		for (size_t off = 0; off + 12 <= strlen(cases[i].content); off += 12) {
			char piece[13];
			memcpy(piece, cases[i].content + off, 12);
			piece[12] = '\0';
			if (strchr(piece, '\n') == NULL && strchr(piece, '#') == NULL &&
			    strchr(piece, ' ') == NULL)
				assert_null(strstr(why, piece));
		}
	}

	/* A raw 80-byte key (nginx's file) gets a hint. */
	char raw[SY_TICKET_KEY_LEN + 1];
	for (int i = 0; i < SY_TICKET_KEY_LEN; i++)
		raw[i] = (char)('a' + i % 26);
	raw[SY_TICKET_KEY_LEN] = '\0';
	char why[768];
	sy_ticket_key *keys;
	assert_int_equal(read_keys(raw, &keys, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "raw 80-byte key"));

	/* One key too many. */
	size_t len = 0;
	char *big = malloc((SY_TICKET_KEYS_MAX + 1) * 110 + 1);
	assert_non_null(big);
	for (int i = 0; i <= SY_TICKET_KEYS_MAX; i++)
		len += (size_t)sprintf(big + len, "%s\n", b64_of(100 + i, true));
	assert_int_equal(read_keys(big, &keys, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "more than 64 keys"));
	free(big);

	/* Too large a file (comments only, so only the size can be wrong). */
	char *huge = malloc(70 * 1024 + 1);
	assert_non_null(huge);
	memset(huge, '#', 70 * 1024);
	huge[70 * 1024] = '\0';
	assert_int_equal(read_keys(huge, &keys, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "larger than 64 KiB"));
	free(huge);

	/* A file that is not there. */
	assert_int_equal(config_ticket_keys_read(path_of("missing"), &keys, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "cannot read"));
}

/* ---- the callback, over in-memory handshakes --------------------------- */

/* A store built from a config naming `keyfile` (NULL: no ticket_key_file). */
static sy_tls_server *store(const char *keyfile)
{
	char text[1024];
	snprintf(text, sizeof(text),
	         "%s%s%s"
	         "[routing]\ndefault_destination = \"d\"\n"
	         "[destination.d]\nhost = \"backend.example.com\"\n",
	         keyfile ? "[tls]\nticket_key_file = \"" : "", keyfile ? path_of(keyfile) : "",
	         keyfile ? "\"\n" : "");
	sy_config *cfg = NULL;
	sy_errors errs = {0};
	if (config_load_string(text, strlen(text), tmpdir, &cfg, &errs) != 0)
		fail_msg("config: %s", errs.len ? errs.msgs[0] : "?");
	sy_errors_free(&errs);
	sy_tls_server *s = NULL;
	const char *err = NULL;
	if (tls_server_create(cfg, &s, &err) != 0)
		fail_msg("tls_server_create: %s", err);
	config_free(cfg);
	return s;
}

static SSL_CTX *client_ctx;

/* One TLS 1.3 connection to s, offering `offer` (may be NULL). Returns the
 * session the client holds after reading the server's first bytes (so the
 * tickets have arrived) and sets *reused. */
static SSL_SESSION *connect_once(sy_tls_server *s, SSL_SESSION *offer, bool *reused)
{
	SSL *srv = tls_server_new_ssl(s);
	SSL *cli = SSL_new(client_ctx);
	assert_non_null(srv);
	assert_non_null(cli);
	BIO *bc, *bs;
	assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
	SSL_set_bio(cli, bc, bc);
	SSL_set_bio(srv, bs, bs);
	SSL_set_connect_state(cli);
	if (offer != NULL)
		assert_int_equal(SSL_set_session(cli, offer), 1);
	bool cdone = false, sdone = false;
	for (int i = 0; i < 20 && !(cdone && sdone); i++) {
		if (!cdone)
			cdone = SSL_do_handshake(cli) == 1;
		if (!sdone)
			sdone = SSL_do_handshake(srv) == 1;
	}
	assert_true(cdone && sdone);
	assert_int_equal(SSL_version(cli), TLS1_3_VERSION);
	assert_int_equal(SSL_write(srv, "* OK\r\n", 6), 6);
	char buf[16];
	assert_int_equal(SSL_read(cli, buf, sizeof(buf)), 6);
	*reused = SSL_session_reused(cli) == 1;
	SSL_SESSION *got = SSL_get1_session(cli);
	assert_non_null(got);
	/* Freed without a shutdown, OpenSSL would mark the session not
	 * resumable (an "unclean" end), and the client would not offer it. */
	SSL_set_shutdown(cli, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(cli);
	SSL_free(srv);
	return got;
}

static bool resumes(sy_tls_server *s, SSL_SESSION *offer)
{
	bool reused;
	SSL_SESSION *after = connect_once(s, offer, &reused);
	SSL_SESSION_free(after);
	return reused;
}

static SSL_SESSION *ticket(sy_tls_server *s)
{
	bool reused;
	SSL_SESSION *got = connect_once(s, NULL, &reused);
	assert_false(reused);
	assert_true(SSL_SESSION_has_ticket(got));
	return got;
}

static void test_resumption(void **state)
{
	(void)state;
	char text[512];
	snprintf(text, sizeof(text), "%s\n", b64_of(1, true));
	write_file("k1", text);
	snprintf(text, sizeof(text), "%s\n", b64_of(2, true));
	write_file("k2", text);
	snprintf(text, sizeof(text), "%s\n%s\n", b64_of(2, true), hex_of(1, false));
	write_file("k2k1", text);

	sy_tls_server *a = store("k1"), *b = store("k1"), *rot = store("k2k1"),
	              *only2 = store("k2");
	sy_tls_server *plain1 = store(NULL), *plain2 = store(NULL);

	SSL_SESSION *t = ticket(a);
	assert_true(resumes(a, t));
	assert_true(resumes(b, t));      /* same file, another store */
	assert_true(resumes(rot, t));    /* k1 is an older key there */
	assert_false(resumes(only2, t)); /* k1 unknown */
	SSL_SESSION_free(t);

	/* The rotated store's own tickets are under its first key, k2. */
	t = ticket(rot);
	assert_true(resumes(only2, t));
	assert_false(resumes(a, t));
	SSL_SESSION_free(t);

	/* Without a key file: per-store keys. */
	t = ticket(plain1);
	assert_true(resumes(plain1, t));
	assert_false(resumes(plain2, t));
	SSL_SESSION_free(t);

	tls_server_unref(a);
	tls_server_unref(b);
	tls_server_unref(rot);
	tls_server_unref(only2);
	tls_server_unref(plain1);
	tls_server_unref(plain2);
}

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	client_ctx = SSL_CTX_new(TLS_client_method());
	if (client_ctx == NULL)
		return -1;
	SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	SSL_CTX_free(client_ctx);
	const char *names[] = {"k", "k1", "k2", "k2k1"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unlink(path_of(names[i]));
	rmdir(tmpdir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepted),
	    cmocka_unit_test(test_rejected),
	    cmocka_unit_test(test_resumption),
	};
	return cmocka_run_group_tests_name("ticket_keys", tests, setup, teardown);
}
