/*
 * Unit tests for src/tls: the SNI selection rule, subjects read from
 * certificates, the [tls.protocols] policy, and real handshakes between two
 * in-memory SSLs joined by a BIO pair (backend verification, pinning, mutual
 * TLS, resumption). A small PKI is generated into a temp dir once per run:
 * root CA -> intermediate -> server leaves, plus self-signed and client
 * certificates.
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

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "switchyard/tls.h"

/* ---- Test PKI ----------------------------------------------------------- */

static char tmpdir[] = "/tmp/sy-tls-test-XXXXXX";
static char *created[32];
static size_t ncreated;
static long next_serial = 1;

/* Paths, filled by the group setup. */
static char *ca_pem, *server_pem, *server_key, *other_pem, *other_key, *self_pem, *self_key;
static char *client_pem, *client_key, *cnonly_pem, *cnonly_key, *san_pem, *san_key;
static unsigned char self_pin[32], server_pin[32];

static char *tmp_path(const char *base)
{
	size_t n = strlen(tmpdir) + strlen(base) + 2;
	char *p = malloc(n);
	assert_non_null(p);
	snprintf(p, n, "%s/%s", tmpdir, base);
	assert_true(ncreated < sizeof(created) / sizeof(created[0]));
	created[ncreated++] = p;
	return p;
}

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	assert_non_null(ext);
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
}

/* A certificate for `key`, signed by issuer/issuer_key (self-signed when
 * issuer is NULL). san and eku are OpenSSL config strings or NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
                       EVP_PKEY *issuer_key, bool ca, const char *eku)
{
	X509 *x = X509_new();
	assert_non_null(x);
	assert_true(X509_set_version(x, X509_VERSION_3));
	assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), next_serial++));
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400));
	assert_true(X509_set_pubkey(x, key));
	assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                                       (const unsigned char *)cn, -1, -1, 0));
	assert_true(X509_set_issuer_name(x, X509_get_subject_name(issuer != NULL ? issuer : x)));
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	add_ext(x, &v3, NID_key_usage,
	        ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (issuer != NULL)
		add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
	if (san != NULL)
		add_ext(x, &v3, NID_subject_alt_name, san);
	if (eku != NULL)
		add_ext(x, &v3, NID_ext_key_usage, eku);
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_certs(const char *path, X509 *a, X509 *b)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(PEM_write_X509(f, a));
	if (b != NULL)
		assert_true(PEM_write_X509(f, b));
	assert_int_equal(fclose(f), 0);
}

static void write_key(const char *path, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
	assert_int_equal(fclose(f), 0);
}

static void pin_of(X509 *x, unsigned char out[32])
{
	unsigned int len = 0;
	assert_true(X509_digest(x, EVP_sha256(), out, &len));
	assert_int_equal(len, 32);
}

/* A leaf with its own key, written as cert (+ chain) and key files. */
static X509 *leaf(const char *cn, const char *san, X509 *issuer, EVP_PKEY *issuer_key, X509 *chain,
                  const char *eku, char **pem, char **keyp, const char *base)
{
	char name[64];
	EVP_PKEY *key = EVP_EC_gen("P-256");
	assert_non_null(key);
	X509 *x = make_cert(key, cn, san, issuer, issuer_key, false, eku);
	snprintf(name, sizeof(name), "%s.pem", base);
	*pem = tmp_path(name);
	write_certs(*pem, x, chain);
	snprintf(name, sizeof(name), "%s.key", base);
	*keyp = tmp_path(name);
	write_key(*keyp, key);
	EVP_PKEY_free(key);
	return x;
}

static int setup_pki(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	EVP_PKEY *ca_key = EVP_EC_gen("P-256");
	EVP_PKEY *inter_key = EVP_EC_gen("P-256");
	X509 *ca = make_cert(ca_key, "Switchyard Test Root", NULL, NULL, NULL, true, NULL);
	X509 *inter =
	    make_cert(inter_key, "Switchyard Test Intermediate", NULL, ca, ca_key, true, NULL);
	ca_pem = tmp_path("ca.pem");
	write_certs(ca_pem, ca, NULL);

	/* Server leaves come from the intermediate and their files carry it, so
	 * every verified handshake also proves the chain file is served whole. */
	X509 *x = leaf("mail.test", "DNS:mail.test,DNS:localhost,IP:127.0.0.1", inter, inter_key,
	               inter, "serverAuth", &server_pem, &server_key, "server");
	pin_of(x, server_pin);
	X509_free(x);
	X509_free(leaf("other.test", "DNS:other.test", inter, inter_key, inter, "serverAuth",
	               &other_pem, &other_key, "other"));
	x = leaf("selfsigned.test", "DNS:selfsigned.test,DNS:mail.test", NULL, NULL, NULL,
	         "serverAuth", &self_pem, &self_key, "self");
	pin_of(x, self_pin);
	X509_free(x);
	X509_free(leaf("client.test", NULL, ca, ca_key, NULL, "clientAuth", &client_pem,
	               &client_key, "client"));
	X509_free(
	    leaf("cnonly.test", NULL, NULL, NULL, NULL, NULL, &cnonly_pem, &cnonly_key, "cnonly"));
	X509_free(leaf("cn.test", "DNS:San1.Test.,DNS:*.wild.test", NULL, NULL, NULL, NULL,
	               &san_pem, &san_key, "san"));

	X509_free(inter);
	X509_free(ca);
	EVP_PKEY_free(inter_key);
	EVP_PKEY_free(ca_key);
	return 0;
}

static int teardown_pki(void **state)
{
	(void)state;
	for (size_t i = 0; i < ncreated; i++) {
		unlink(created[i]);
		free(created[i]);
	}
	ncreated = 0;
	return rmdir(tmpdir);
}

/* ---- Helpers ------------------------------------------------------------ */

typedef struct cert_spec {
	const char *name;
	const char *cert; /* NULL = server_pem */
	const char *key;  /* NULL = server_key */
	const char *subjects[4];
	bool is_default;
} cert_spec;

static sy_tls_server *make_server_policy(const cert_spec *specs, size_t n,
                                         const sy_tls_policy *policy, const char **error_r)
{
	sy_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	sy_cert_config certs[8];
	char *subjects[8][4];
	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		memset(&certs[i], 0, sizeof(certs[i]));
		certs[i].name = (char *)specs[i].name;
		certs[i].cert_path = (char *)(specs[i].cert != NULL ? specs[i].cert : server_pem);
		certs[i].key_path = (char *)(specs[i].key != NULL ? specs[i].key : server_key);
		certs[i].is_default = specs[i].is_default;
		size_t k = 0;
		while (k < 4 && specs[i].subjects[k] != NULL) {
			subjects[i][k] = (char *)specs[i].subjects[k];
			k++;
		}
		certs[i].subjects.items = subjects[i];
		certs[i].subjects.len = k;
	}
	cfg.certs = certs;
	cfg.ncerts = n;
	if (policy != NULL)
		cfg.tls_policy = *policy;
	else
		cfg.tls_policy.min_version = TLS1_2_VERSION;
	sy_tls_server *s = NULL;
	int rc = tls_server_create(&cfg, &s, error_r);
	assert_true(rc == 0 ? s != NULL : s == NULL);
	return s;
}

static sy_tls_server *make_server(const cert_spec *specs, size_t n)
{
	const char *error = NULL;
	sy_tls_server *s = make_server_policy(specs, n, NULL, &error);
	if (s == NULL)
		print_error("tls_server_create: %s\n", error);
	assert_non_null(s);
	return s;
}

static sy_destination_config dest(const char *host)
{
	sy_destination_config d;
	memset(&d, 0, sizeof(d));
	d.id = "backend";
	d.host = (char *)host;
	return d;
}

static sy_tls_client *make_client(const sy_destination_config *d, bool trust_test_ca)
{
	sy_tls_client *c = NULL;
	const char *error = NULL;
	if (tls_client_create(d, &c, &error) != 0)
		print_error("tls_client_create: %s\n", error);
	assert_non_null(c);
	if (trust_test_ca)
		assert_int_equal(tls_client_add_ca_file(c, ca_pem), 0);
	return c;
}

/* Joins the two SSLs with a BIO pair and drives both handshakes until they
 * complete or one fails, then sends a message each way: the client's read
 * picks up TLS 1.3 session tickets, and a server that rejects the client
 * after the client already finished (TLS 1.3 mutual TLS) shows up here. */
static bool handshake(SSL *cl, SSL *sv)
{
	BIO *bc = NULL, *bs = NULL;
	assert_true(BIO_new_bio_pair(&bc, 0, &bs, 0));
	SSL_set_bio(cl, bc, bc);
	SSL_set_bio(sv, bs, bs);
	bool cdone = false, sdone = false;
	for (int i = 0; i < 50 && !(cdone && sdone); i++) {
		SSL *sides[2] = {cl, sv};
		bool *done[2] = {&cdone, &sdone};
		for (int k = 0; k < 2; k++) {
			if (*done[k])
				continue;
			int r = SSL_do_handshake(sides[k]);
			if (r == 1) {
				*done[k] = true;
				continue;
			}
			int e = SSL_get_error(sides[k], r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				ERR_clear_error();
				return false;
			}
		}
	}
	if (!(cdone && sdone))
		return false;
	char buf[16];
	if (SSL_write(sv, "hello", 5) != 5 || SSL_read(cl, buf, sizeof(buf)) != 5 ||
	    memcmp(buf, "hello", 5) != 0 || SSL_write(cl, "ping", 4) != 4 ||
	    SSL_read(sv, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4) != 0) {
		ERR_clear_error();
		return false;
	}
	return true;
}

/* One connection from client context c to server s; returns the handshake
 * result and, if asked, the peer CN the client saw and the SNI the server got. */
typedef struct conn_result {
	bool ok;
	bool reused;
	char peer_cn[64];
	char sni[64];
	const char *verify_error;
} conn_result;

static conn_result connect_once(sy_tls_client *c, sy_tls_server *s, int client_max_version)
{
	conn_result r;
	memset(&r, 0, sizeof(r));
	SSL *cl = tls_client_new_ssl(c);
	SSL *sv = tls_server_new_ssl(s);
	assert_non_null(cl);
	assert_non_null(sv);
	if (client_max_version != 0)
		assert_true(SSL_set_max_proto_version(cl, client_max_version));
	r.ok = handshake(cl, sv);
	if (r.ok)
		tls_client_handshake_done(c, cl);
	r.reused = SSL_session_reused(cl) == 1;
	r.verify_error = tls_client_verify_error(cl);
	X509 *peer = SSL_get0_peer_certificate(cl);
	if (peer != NULL)
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, r.peer_cn,
		                          sizeof(r.peer_cn));
	const char *sni = SSL_get_servername(sv, TLSEXT_NAMETYPE_host_name);
	if (sni != NULL)
		snprintf(r.sni, sizeof(r.sni), "%s", sni);
	SSL_free(cl);
	SSL_free(sv);
	return r;
}

/* ---- Selection rule ----------------------------------------------------- */

static void test_select_exact(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "primary", .subjects = {"mail.example.com"}},
	    {.name = "secondary", .subjects = {"other.example.org", "Mixed.Example.NET."}},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "mail.example.com"), "primary");
	assert_string_equal(tls_server_select_name(s, "MAIL.Example.COM"), "primary");
	assert_string_equal(tls_server_select_name(s, "mail.example.com."), "primary");
	assert_string_equal(tls_server_select_name(s, "other.example.org"), "secondary");
	assert_string_equal(tls_server_select_name(s, "mixed.example.net"), "secondary");
	assert_string_equal(tls_server_select_name(s, "nomatch.test"), "self-signed");
	assert_string_equal(tls_server_select_name(s, ""), "self-signed");
	assert_string_equal(tls_server_select_name(s, NULL), "self-signed");
	tls_server_unref(s);
}

static void test_select_parent_domain(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "apex", .subjects = {"example.com"}},
	    {.name = "sub", .subjects = {"sub.example.com"}},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "example.com"), "apex");
	assert_string_equal(tls_server_select_name(s, "host.example.com"), "apex");
	assert_string_equal(tls_server_select_name(s, "HOST.Example.Com."), "apex");
	assert_string_equal(tls_server_select_name(s, "a.b.c.example.com"), "apex");
	/* Most specific parent first. */
	assert_string_equal(tls_server_select_name(s, "sub.example.com"), "sub");
	assert_string_equal(tls_server_select_name(s, "x.sub.example.com"), "sub");
	assert_string_equal(tls_server_select_name(s, "a.b.sub.example.com"), "sub");
	/* Only whole labels count. */
	assert_string_equal(tls_server_select_name(s, "notexample.com"), "self-signed");
	assert_string_equal(tls_server_select_name(s, "example.com.evil.test"), "self-signed");
	assert_string_equal(tls_server_select_name(s, "com"), "self-signed");
	tls_server_unref(s);
}

static void test_select_wildcard_one_label(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "wild", .subjects = {"*.example.com"}},
	    {.name = "unrelated", .subjects = {"example.org"}},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "a.example.com"), "wild");
	assert_string_equal(tls_server_select_name(s, "IMAP.Example.Com."), "wild");
	assert_string_equal(tls_server_select_name(s, "a.b.example.com"), "self-signed");
	assert_string_equal(tls_server_select_name(s, "example.com"), "self-signed");
	assert_string_equal(tls_server_select_name(s, "*.example.com"), "wild");
	tls_server_unref(s);

	/* A wildcard beats a parent-domain subject at the same level, since it
	 * really covers the name; deeper names fall to the parent domain. */
	cert_spec both[] = {
	    {.name = "apex", .subjects = {"example.com"}},
	    {.name = "wild", .subjects = {"*.example.com"}},
	    {.name = "subwild", .subjects = {"*.sub.example.com"}},
	};
	s = make_server(both, 3);
	assert_string_equal(tls_server_select_name(s, "a.example.com"), "wild");
	assert_string_equal(tls_server_select_name(s, "a.b.example.com"), "apex");
	assert_string_equal(tls_server_select_name(s, "x.sub.example.com"), "subwild");
	assert_string_equal(tls_server_select_name(s, "y.x.sub.example.com"), "apex");
	tls_server_unref(s);
}

static void test_select_star_entry(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "named", .subjects = {"mail.test"}},
	    {.name = "catchall", .subjects = {"*"}},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "mail.test"), "named");
	assert_string_equal(tls_server_select_name(s, "x.mail.test"), "named");
	assert_string_equal(tls_server_select_name(s, "other.test"), "catchall");
	assert_string_equal(tls_server_select_name(s, NULL), "catchall");
	tls_server_unref(s);
}

static void test_select_default_flag(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "a", .subjects = {"a.test"}},
	    {.name = "b", .subjects = {"b.test"}, .is_default = true},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "a.test"), "a");
	assert_string_equal(tls_server_select_name(s, "x.a.test"), "a");
	assert_string_equal(tls_server_select_name(s, "zzz.example"), "b");
	assert_string_equal(tls_server_select_name(s, NULL), "b");
	tls_server_unref(s);

	/* default = true is preferred over a "*" subject. */
	cert_spec order[] = {
	    {.name = "star", .subjects = {"*"}},
	    {.name = "def", .subjects = {"def.test"}, .is_default = true},
	};
	s = make_server(order, 2);
	assert_string_equal(tls_server_select_name(s, "zzz.example"), "def");
	assert_string_equal(tls_server_select_name(s, NULL), "def");
	tls_server_unref(s);
}

static void test_select_single_cert(void **state)
{
	(void)state;
	cert_spec specs[] = {{.name = "only", .subjects = {"only.test"}}};
	sy_tls_server *s = make_server(specs, 1);
	assert_string_equal(tls_server_select_name(s, "only.test"), "only");
	assert_string_equal(tls_server_select_name(s, "anything.else"), "only");
	assert_string_equal(tls_server_select_name(s, NULL), "only");
	tls_server_unref(s);
}

static void test_select_self_signed(void **state)
{
	(void)state;
	sy_tls_server *s = make_server(NULL, 0);
	assert_string_equal(tls_server_select_name(s, NULL), "self-signed");
	assert_string_equal(tls_server_select_name(s, "mail.test"), "self-signed");

	/* The generated certificate really serves: EC P-256, CN=switchyard, a
	 * non-zero serial and a year of validity. */
	sy_destination_config d = dest("mail.test");
	d.tls_allow_invalid_certs = true;
	sy_tls_client *c = make_client(&d, false);
	SSL *cl = tls_client_new_ssl(c);
	SSL *sv = tls_server_new_ssl(s);
	assert_true(handshake(cl, sv));
	X509 *peer = SSL_get0_peer_certificate(cl);
	assert_non_null(peer);
	char cn[64];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn,
	                                      sizeof(cn)) > 0);
	assert_string_equal(cn, "switchyard");
	assert_int_equal(X509_check_issued(peer, peer), X509_V_OK);
	EVP_PKEY *pk = X509_get0_pubkey(peer);
	assert_int_equal(EVP_PKEY_get_base_id(pk), EVP_PKEY_EC);
	char group[32];
	assert_true(EVP_PKEY_get_group_name(pk, group, sizeof(group), NULL));
	assert_string_equal(group, "prime256v1");
	int days = 0, secs = 0;
	assert_true(
	    ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(peer), X509_get0_notAfter(peer)));
	assert_int_equal(days, 365);
	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), NULL);
	assert_false(BN_is_zero(serial));
	BN_free(serial);
	SSL_free(cl);
	SSL_free(sv);
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_subjects_from_san(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "san", .cert = san_pem, .key = san_key},
	    {.name = "other", .subjects = {"unrelated.test"}},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "san1.test"), "san");
	assert_string_equal(tls_server_select_name(s, "x.wild.test"), "san");
	assert_string_equal(tls_server_select_name(s, "x.y.wild.test"), "self-signed");
	/* With SANs present the CN is not a subject. */
	assert_string_equal(tls_server_select_name(s, "cn.test"), "self-signed");
	tls_server_unref(s);

	/* An explicit list replaces what the certificate declares. */
	cert_spec explicit_[] = {
	    {.name = "san", .cert = san_pem, .key = san_key, .subjects = {"explicit.test"}},
	    {.name = "other", .subjects = {"unrelated.test"}},
	};
	s = make_server(explicit_, 2);
	assert_string_equal(tls_server_select_name(s, "explicit.test"), "san");
	assert_string_equal(tls_server_select_name(s, "san1.test"), "self-signed");
	tls_server_unref(s);
}

static void test_subjects_from_cn(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "cn", .cert = cnonly_pem, .key = cnonly_key},
	    {.name = "other", .subjects = {"unrelated.test"}},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_string_equal(tls_server_select_name(s, "cnonly.test"), "cn");
	assert_string_equal(tls_server_select_name(s, "CNONLY.TEST."), "cn");
	assert_string_equal(tls_server_select_name(s, "imap.cnonly.test"), "cn");
	tls_server_unref(s);
}

/* The servername callback really switches certificates mid-handshake, and the
 * chain file's intermediate reaches the client (it only trusts the root). */
static void test_sni_handshake_switches_certificate(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "mail", .cert = server_pem, .key = server_key},
	    {.name = "other", .cert = other_pem, .key = other_key},
	};
	sy_tls_server *s = make_server(specs, 2);
	sy_destination_config d = dest("other.test");
	sy_tls_client *c = make_client(&d, true);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.peer_cn, "other.test");
	assert_string_equal(r.sni, "other.test");
	assert_null(r.verify_error);
	tls_client_free(c);

	d = dest("MAIL.test");
	c = make_client(&d, true);
	r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.peer_cn, "mail.test");
	tls_client_free(c);
	tls_server_unref(s);
}

/* An SSL keeps the store alive after the caller dropped its reference, as a
 * reload does while handshakes are in flight (ASan checks the rest). */
static void test_server_ref_held_by_ssl(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "mail", .subjects = {"mail.test"}},
	    {.name = "other", .cert = other_pem, .key = other_key},
	};
	sy_tls_server *s = make_server(specs, 2);
	assert_ptr_equal(tls_server_ref(s), s);
	tls_server_unref(s);
	SSL *sv = tls_server_new_ssl(s);
	assert_non_null(sv);
	tls_server_unref(s);
	sy_destination_config d = dest("mail.test");
	sy_tls_client *c = make_client(&d, true);
	SSL *cl = tls_client_new_ssl(c);
	assert_true(handshake(cl, sv));
	SSL_free(cl);
	SSL_free(sv);
	tls_client_free(c);
	tls_server_unref(NULL);
}

/* ---- Policy ------------------------------------------------------------- */

static bool has_cipher(SSL *ssl, const char *std_name)
{
	STACK_OF(SSL_CIPHER) *sk = SSL_get_ciphers(ssl);
	for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++)
		if (strcmp(SSL_CIPHER_standard_name(sk_SSL_CIPHER_value(sk, i)), std_name) == 0)
			return true;
	return false;
}

static void test_policy_defaults(void **state)
{
	(void)state;
	cert_spec specs[] = {{.name = "only"}};
	sy_tls_server *s = make_server(specs, 1);
	SSL *ssl = tls_server_new_ssl(s);
	assert_non_null(ssl);
	assert_int_equal(SSL_get_min_proto_version(ssl), TLS1_2_VERSION);
	uint64_t opts = SSL_get_options(ssl);
	assert_true(opts & SSL_OP_NO_RENEGOTIATION);
	assert_true(opts & SSL_OP_NO_COMPRESSION);
	assert_false(opts & SSL_OP_NO_TICKET);
	assert_false(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
	assert_true(SSL_get_mode(ssl) & SSL_MODE_RELEASE_BUFFERS);
	assert_true(has_cipher(ssl, "TLS_AES_128_GCM_SHA256"));
	assert_true(has_cipher(ssl, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"));
	SSL_free(ssl);
	tls_server_unref(s);

	sy_tls_policy p = {.min_version = TLS1_2_VERSION, .ignore_client_order = true};
	const char *error = NULL;
	s = make_server_policy(specs, 1, &p, &error);
	assert_non_null(s);
	ssl = tls_server_new_ssl(s);
	assert_true(SSL_get_options(ssl) & SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_free(ssl);
	tls_server_unref(s);
}

static void test_policy_min_version_13(void **state)
{
	(void)state;
	sy_tls_policy p = {.min_version = TLS1_3_VERSION};
	const char *error = NULL;
	/* Both a configured certificate's context and the self-signed one. */
	cert_spec specs[] = {{.name = "a", .subjects = {"a.test"}},
	                     {.name = "b", .subjects = {"b.test"}}};
	sy_tls_server *s = make_server_policy(specs, 2, &p, &error);
	assert_non_null(s);
	SSL *ssl = tls_server_new_ssl(s);
	assert_int_equal(SSL_CTX_get_min_proto_version(SSL_get_SSL_CTX(ssl)), TLS1_3_VERSION);
	assert_int_equal(SSL_get_min_proto_version(ssl), TLS1_3_VERSION);
	SSL_free(ssl);

	/* A TLS 1.2-only client is refused; a TLS 1.3 one is served by "a". */
	sy_destination_config d = dest("a.test");
	d.tls_allow_invalid_certs = true;
	sy_tls_client *c = make_client(&d, false);
	assert_false(connect_once(c, s, TLS1_2_VERSION).ok);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.peer_cn, "mail.test");
	tls_client_free(c);
	tls_server_unref(s);

	p.min_version = 0x0301;
	assert_null(make_server_policy(specs, 2, &p, &error));
	assert_non_null(strstr(error, "tls.protocols.min_version"));
}

static void test_disable_cipher_suites(void **state)
{
	(void)state;
	char *disabled[] = {"TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	                    "ecdhe-ecdsa-aes256-gcm-sha384", "TLS13_CHACHA20_POLY1305_SHA256",
	                    "NOT_A_SUITE"};
	sy_tls_policy p = {.min_version = TLS1_2_VERSION,
	                   .disable_cipher_suites = {.items = disabled, .len = 5}};
	cert_spec specs[] = {{.name = "only"}};
	const char *error = NULL;
	sy_tls_server *s = make_server_policy(specs, 1, &p, &error);
	assert_non_null(s);
	SSL *ssl = tls_server_new_ssl(s);
	assert_false(has_cipher(ssl, "TLS_AES_128_GCM_SHA256"));
	assert_false(has_cipher(ssl, "TLS_CHACHA20_POLY1305_SHA256"));
	assert_false(has_cipher(ssl, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"));
	assert_false(has_cipher(ssl, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
	assert_true(has_cipher(ssl, "TLS_AES_256_GCM_SHA384"));
	assert_true(has_cipher(ssl, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"));
	assert_true(has_cipher(ssl, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
	SSL_free(ssl);

	/* A client offering only a removed suite fails; a remaining one works. */
	sy_destination_config d = dest("mail.test");
	sy_tls_client *c = make_client(&d, true);
	SSL *cl = tls_client_new_ssl(c);
	SSL *sv = tls_server_new_ssl(s);
	assert_true(SSL_set_ciphersuites(cl, "TLS_AES_128_GCM_SHA256"));
	assert_false(handshake(cl, sv));
	SSL_free(cl);
	SSL_free(sv);
	cl = tls_client_new_ssl(c);
	sv = tls_server_new_ssl(s);
	assert_true(SSL_set_ciphersuites(cl, "TLS_AES_256_GCM_SHA384"));
	assert_true(handshake(cl, sv));
	assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(sv)),
	                    "TLS_AES_256_GCM_SHA384");
	SSL_free(cl);
	SSL_free(sv);
	tls_client_free(c);
	tls_server_unref(s);
}

/* Names of every suite a default context offers, TLS 1.3 ones or the rest. */
static size_t default_suites(bool tls13, char **out, size_t max)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
	size_t n = 0;
	for (int i = 0; i < sk_SSL_CIPHER_num(sk) && n < max; i++) {
		const SSL_CIPHER *ci = sk_SSL_CIPHER_value(sk, i);
		if (((SSL_CIPHER_get_protocol_id(ci) & 0xff00) == 0x1300) == tls13)
			out[n++] = strdup(SSL_CIPHER_standard_name(ci));
	}
	SSL_CTX_free(ctx);
	return n;
}

static void test_disable_whole_versions(void **state)
{
	(void)state;
	char *names[256];
	size_t n13 = default_suites(true, names, 256);
	size_t n12 = default_suites(false, names + n13, 256 - n13);
	assert_true(n13 > 0 && n12 > 0);
	cert_spec specs[] = {{.name = "only"}};
	const char *error = NULL;

	/* Every suite: rejected, naming the key. */
	sy_tls_policy p = {.min_version = TLS1_2_VERSION,
	                   .disable_cipher_suites = {.items = names, .len = n13 + n12}};
	assert_null(make_server_policy(specs, 1, &p, &error));
	assert_non_null(strstr(error, "tls.protocols.disable_cipher_suites"));

	/* Every TLS 1.3 suite with min_version 1.3: rejected. */
	p.min_version = TLS1_3_VERSION;
	p.disable_cipher_suites.len = n13;
	assert_null(make_server_policy(specs, 1, &p, &error));
	assert_non_null(strstr(error, "tls.protocols.disable_cipher_suites"));

	/* Every TLS 1.3 suite with min 1.2: the server speaks TLS 1.2 only. */
	p.min_version = TLS1_2_VERSION;
	sy_tls_server *s = make_server_policy(specs, 1, &p, &error);
	assert_non_null(s);
	SSL *ssl = tls_server_new_ssl(s);
	assert_int_equal(SSL_get_max_proto_version(ssl), TLS1_2_VERSION);
	SSL_free(ssl);
	tls_server_unref(s);

	/* Every TLS 1.2 suite: the server speaks TLS 1.3 only. */
	p.disable_cipher_suites.items = names + n13;
	p.disable_cipher_suites.len = n12;
	s = make_server_policy(specs, 1, &p, &error);
	assert_non_null(s);
	ssl = tls_server_new_ssl(s);
	assert_int_equal(SSL_get_min_proto_version(ssl), TLS1_3_VERSION);
	SSL_free(ssl);
	tls_server_unref(s);

	for (size_t i = 0; i < n13 + n12; i++)
		free(names[i]);
}

static void test_cipher_suite_known(void **state)
{
	(void)state;
	assert_true(tls_cipher_suite_known("TLS_AES_128_GCM_SHA256"));
	assert_true(tls_cipher_suite_known("tls13_aes_256_gcm_sha384"));
	assert_true(tls_cipher_suite_known("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"));
	assert_true(tls_cipher_suite_known("ECDHE-RSA-AES128-GCM-SHA256"));
	/* Known although not in the default list. */
	assert_true(tls_cipher_suite_known("TLS_RSA_WITH_AES_128_CBC_SHA"));
	assert_false(tls_cipher_suite_known("TLS_MADE_UP_SUITE"));
	assert_false(tls_cipher_suite_known(""));
}

static void test_server_load_errors(void **state)
{
	(void)state;
	const char *error = NULL;
	char missing[256];
	snprintf(missing, sizeof(missing), "%s/missing.pem", tmpdir);

	cert_spec no_file[] = {{.name = "bad", .cert = missing}};
	assert_null(make_server_policy(no_file, 1, NULL, &error));
	assert_non_null(strstr(error, "tls.certificate.bad.cert: cannot read"));
	assert_non_null(strstr(error, "No such file"));

	cert_spec not_pem[] = {{.name = "bad", .cert = server_key}};
	assert_null(make_server_policy(not_pem, 1, NULL, &error));
	assert_non_null(strstr(error, "tls.certificate.bad.cert:"));

	cert_spec no_key[] = {{.name = "bad", .key = missing}};
	assert_null(make_server_policy(no_key, 1, NULL, &error));
	assert_non_null(strstr(error, "tls.certificate.bad.key: cannot read"));

	cert_spec wrong_key[] = {{.name = "ok", .subjects = {"ok.test"}},
	                         {.name = "bad", .key = other_key}};
	assert_null(make_server_policy(wrong_key, 2, NULL, &error));
	assert_non_null(strstr(error, "tls.certificate.bad.key:"));
	assert_non_null(strstr(error, "does not match"));
	assert_int_equal(ERR_peek_error(), 0);
}

/* ---- Backend verification ----------------------------------------------- */

static sy_tls_server *single(const char *cert, const char *key)
{
	cert_spec specs[] = {{.name = "backend", .cert = cert, .key = key}};
	return make_server(specs, 1);
}

static void test_client_verifies_ca_signed(void **state)
{
	(void)state;
	sy_tls_server *s = single(server_pem, server_key);
	sy_destination_config d = dest("mail.test");
	sy_tls_client *c = make_client(&d, true);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.sni, "mail.test");
	assert_null(r.verify_error);
	tls_client_free(c);

	/* tls_server_name wins over host, for SNI and verification alike. */
	d = dest("10.0.0.1");
	d.host_is_ip = true;
	d.tls_server_name = "mail.test";
	c = make_client(&d, true);
	r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.sni, "mail.test");
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_client_refuses_untrusted(void **state)
{
	(void)state;
	/* Self-signed, even though it names the host. */
	sy_tls_server *s = single(self_pem, self_key);
	sy_destination_config d = dest("mail.test");
	sy_tls_client *c = make_client(&d, true);
	conn_result r = connect_once(c, s, 0);
	assert_false(r.ok);
	assert_non_null(r.verify_error);
	assert_non_null(strstr(r.verify_error, "self"));
	tls_client_free(c);
	tls_server_unref(s);

	/* Signed by a CA the client does not trust. */
	s = single(server_pem, server_key);
	c = make_client(&d, false);
	r = connect_once(c, s, 0);
	assert_false(r.ok);
	assert_non_null(r.verify_error);
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_client_wrong_hostname(void **state)
{
	(void)state;
	sy_tls_server *s = single(server_pem, server_key);
	sy_destination_config d = dest("wrong.test");
	sy_tls_client *c = make_client(&d, true);
	conn_result r = connect_once(c, s, 0);
	assert_false(r.ok);
	assert_non_null(r.verify_error);
	assert_string_equal(r.verify_error, "hostname mismatch");
	tls_client_free(c);

	/* "mail.test" must not match a name that merely ends with it. */
	d = dest("xmail.test");
	c = make_client(&d, true);
	assert_false(connect_once(c, s, 0).ok);
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_client_ip_host(void **state)
{
	(void)state;
	sy_tls_server *s = single(server_pem, server_key);
	sy_destination_config d = dest("127.0.0.1");
	d.host_is_ip = true;
	sy_tls_client *c = make_client(&d, true);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.sni, ""); /* no SNI for an IP literal */
	tls_client_free(c);

	d = dest("127.0.0.2");
	d.host_is_ip = true;
	c = make_client(&d, true);
	r = connect_once(c, s, 0);
	assert_false(r.ok);
	assert_non_null(r.verify_error);
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_client_pin_match(void **state)
{
	(void)state;
	/* A self-signed backend the trust store knows nothing about. */
	sy_tls_server *s = single(self_pem, self_key);
	sy_destination_config d = dest("mail.test");
	d.has_pin = true;
	memcpy(d.tls_pinned_cert_sha256, self_pin, 32);
	sy_tls_client *c = make_client(&d, false);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_null(r.verify_error);
	tls_client_free(c);

	/* The pin replaces name checking too. */
	d.tls_server_name = "not-in-the-cert.test";
	c = make_client(&d, false);
	assert_true(connect_once(c, s, 0).ok);
	tls_client_free(c);
	tls_server_unref(s);

	/* A leaf in an untrusted chain is fine when pinned. */
	s = single(server_pem, server_key);
	d = dest("mail.test");
	d.has_pin = true;
	memcpy(d.tls_pinned_cert_sha256, server_pin, 32);
	c = make_client(&d, false);
	assert_true(connect_once(c, s, 0).ok);
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_client_pin_mismatch(void **state)
{
	(void)state;
	/* The chain is valid and trusted, but the certificate is not the pinned
	 * one: refused. tls_allow_invalid_certs does not weaken a pin. */
	sy_tls_server *s = single(server_pem, server_key);
	sy_destination_config d = dest("mail.test");
	d.has_pin = true;
	d.tls_allow_invalid_certs = true;
	memcpy(d.tls_pinned_cert_sha256, self_pin, 32);
	sy_tls_client *c = make_client(&d, true);
	conn_result r = connect_once(c, s, 0);
	assert_false(r.ok);
	assert_non_null(r.verify_error);
	assert_string_equal(r.verify_error,
	                    "certificate fingerprint does not match tls_pinned_cert_sha256");
	tls_client_free(c);
	tls_server_unref(s);
}

static void test_client_allow_invalid(void **state)
{
	(void)state;
	sy_tls_server *s = single(self_pem, self_key);
	sy_destination_config d = dest("wrong.test");
	d.tls_allow_invalid_certs = true;
	sy_tls_client *c = make_client(&d, false);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.peer_cn, "selfsigned.test");
	tls_client_free(c);
	tls_server_unref(s);
}

/* A server that demands a client certificate issued by the test CA. */
static SSL *mtls_server_ssl(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_true(SSL_CTX_use_certificate_chain_file(ctx, server_pem));
	assert_true(SSL_CTX_use_PrivateKey_file(ctx, server_key, SSL_FILETYPE_PEM));
	assert_true(SSL_CTX_load_verify_locations(ctx, ca_pem, NULL));
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL *ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	SSL_set_accept_state(ssl);
	return ssl;
}

static void test_client_mutual_tls(void **state)
{
	(void)state;
	for (int version = TLS1_2_VERSION; version <= TLS1_3_VERSION; version++) {
		sy_destination_config d = dest("mail.test");
		d.tls_client_cert = client_pem;
		d.tls_client_key = client_key;
		sy_tls_client *c = make_client(&d, true);
		SSL *cl = tls_client_new_ssl(c);
		SSL *sv = mtls_server_ssl();
		assert_true(SSL_set_max_proto_version(cl, version));
		assert_true(handshake(cl, sv));
		X509 *peer = SSL_get0_peer_certificate(sv);
		assert_non_null(peer);
		char cn[64];
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn,
		                          sizeof(cn));
		assert_string_equal(cn, "client.test");
		SSL_free(cl);
		SSL_free(sv);
		tls_client_free(c);

		d.tls_client_cert = NULL;
		d.tls_client_key = NULL;
		c = make_client(&d, true);
		cl = tls_client_new_ssl(c);
		sv = mtls_server_ssl();
		assert_true(SSL_set_max_proto_version(cl, version));
		assert_false(handshake(cl, sv));
		SSL_free(cl);
		SSL_free(sv);
		tls_client_free(c);
	}
}

static void test_client_config_errors(void **state)
{
	(void)state;
	sy_tls_client *c = NULL;
	const char *error = NULL;
	sy_destination_config d = dest("mail.test");
	d.tls_client_cert = client_pem;
	assert_int_equal(tls_client_create(&d, &c, &error), -1);
	assert_null(c);
	assert_non_null(strstr(error, "destination.backend.tls_client_key"));

	char missing[256];
	snprintf(missing, sizeof(missing), "%s/missing.pem", tmpdir);
	d.tls_client_cert = missing;
	d.tls_client_key = client_key;
	assert_int_equal(tls_client_create(&d, &c, &error), -1);
	assert_non_null(strstr(error, "destination.backend.tls_client_cert: cannot read"));

	d.tls_client_cert = client_pem;
	d.tls_client_key = server_key;
	assert_int_equal(tls_client_create(&d, &c, &error), -1);
	assert_non_null(strstr(error, "destination.backend.tls_client_key:"));
	assert_non_null(strstr(error, "does not match"));

	d = dest(NULL);
	assert_int_equal(tls_client_create(&d, &c, &error), -1);
	assert_non_null(strstr(error, "destination.backend.host"));
	assert_int_equal(ERR_peek_error(), 0);
}

/* Contexts for users other than destinations (the Redis store): ca_file is
 * the only trust, and errors name the given key. */
static void test_client_opts_ca_file(void **state)
{
	(void)state;
	sy_tls_server *s = single(server_pem, server_key);
	sy_tls_client *c = NULL;
	const char *error = NULL;
	sy_tls_client_opts o = {.key = "mapping.redis", .name = "mail.test", .ca_file = ca_pem};
	assert_int_equal(tls_client_create_opts(&o, &c, &error), 0);
	conn_result r = connect_once(c, s, 0);
	assert_true(r.ok);
	assert_string_equal(r.sni, "mail.test");
	tls_client_free(c);

	/* The expected name still has to match. */
	o.name = "other.test";
	assert_int_equal(tls_client_create_opts(&o, &c, &error), 0);
	r = connect_once(c, s, 0);
	assert_false(r.ok);
	assert_non_null(r.verify_error);
	assert_non_null(strstr(r.verify_error, "hostname mismatch"));
	tls_client_free(c);

	/* Trusting another CA (the self-signed certificate) is not trusting ours. */
	o.name = "mail.test";
	o.ca_file = self_pem;
	assert_int_equal(tls_client_create_opts(&o, &c, &error), 0);
	r = connect_once(c, s, 0);
	assert_false(r.ok);
	tls_client_free(c);
	tls_server_unref(s);

	char missing[256];
	snprintf(missing, sizeof(missing), "%s/missing.pem", tmpdir);
	o.ca_file = missing;
	assert_int_equal(tls_client_create_opts(&o, &c, &error), -1);
	assert_null(c);
	assert_non_null(strstr(error, "mapping.redis.tls_ca_file: cannot read"));
	o.ca_file = server_key;
	assert_int_equal(tls_client_create_opts(&o, &c, &error), -1);
	assert_non_null(strstr(error, "mapping.redis.tls_ca_file: "));
	o.ca_file = NULL;
	o.client_key = client_key;
	assert_int_equal(tls_client_create_opts(&o, &c, &error), -1);
	assert_non_null(
	    strstr(error, "mapping.redis.tls_client_cert: required when tls_client_key"));
	assert_int_equal(ERR_peek_error(), 0);
}

/* Second connection resumes the first one's session, through an SNI switch
 * to a non-initial certificate context. */
static void test_client_session_resumption(void **state)
{
	(void)state;
	cert_spec specs[] = {
	    {.name = "mail", .cert = server_pem, .key = server_key},
	    {.name = "other", .cert = other_pem, .key = other_key},
	};
	sy_tls_server *s = make_server(specs, 2);
	for (int version = TLS1_2_VERSION; version <= TLS1_3_VERSION; version++) {
		sy_destination_config d = dest("other.test");
		sy_tls_client *c = make_client(&d, true);
		conn_result r = connect_once(c, s, version);
		assert_true(r.ok);
		assert_false(r.reused);
		for (int i = 0; i < 3; i++) {
			r = connect_once(c, s, version);
			assert_true(r.ok);
			assert_true(r.reused);
			assert_string_equal(r.peer_cn, "other.test");
		}
		tls_client_free(c);
	}

	/* TLS 1.3 tickets (two per connection) are handed out once each; a
	 * TLS 1.2 session is offered to every new connection. */
	for (int version = TLS1_2_VERSION; version <= TLS1_3_VERSION; version++) {
		sy_destination_config d = dest("other.test");
		sy_tls_client *c = make_client(&d, true);
		assert_true(connect_once(c, s, version).ok);
		SSL *ssl[3];
		for (int i = 0; i < 3; i++)
			ssl[i] = tls_client_new_ssl(c);
		assert_non_null(SSL_get_session(ssl[0]));
		assert_non_null(SSL_get_session(ssl[1]));
		assert_ptr_not_equal(SSL_get_session(ssl[0]), SSL_get_session(ssl[1]));
		if (version == TLS1_3_VERSION)
			assert_null(SSL_get_session(ssl[2]));
		else
			assert_non_null(SSL_get_session(ssl[2]));
		for (int i = 0; i < 3; i++)
			SSL_free(ssl[i]);
		tls_client_free(c);
	}
	tls_server_unref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_select_exact),
	    cmocka_unit_test(test_select_parent_domain),
	    cmocka_unit_test(test_select_wildcard_one_label),
	    cmocka_unit_test(test_select_star_entry),
	    cmocka_unit_test(test_select_default_flag),
	    cmocka_unit_test(test_select_single_cert),
	    cmocka_unit_test(test_select_self_signed),
	    cmocka_unit_test(test_subjects_from_san),
	    cmocka_unit_test(test_subjects_from_cn),
	    cmocka_unit_test(test_sni_handshake_switches_certificate),
	    cmocka_unit_test(test_server_ref_held_by_ssl),
	    cmocka_unit_test(test_policy_defaults),
	    cmocka_unit_test(test_policy_min_version_13),
	    cmocka_unit_test(test_disable_cipher_suites),
	    cmocka_unit_test(test_disable_whole_versions),
	    cmocka_unit_test(test_cipher_suite_known),
	    cmocka_unit_test(test_server_load_errors),
	    cmocka_unit_test(test_client_verifies_ca_signed),
	    cmocka_unit_test(test_client_refuses_untrusted),
	    cmocka_unit_test(test_client_wrong_hostname),
	    cmocka_unit_test(test_client_ip_host),
	    cmocka_unit_test(test_client_pin_match),
	    cmocka_unit_test(test_client_pin_mismatch),
	    cmocka_unit_test(test_client_allow_invalid),
	    cmocka_unit_test(test_client_mutual_tls),
	    cmocka_unit_test(test_client_config_errors),
	    cmocka_unit_test(test_client_opts_ca_file),
	    cmocka_unit_test(test_client_session_resumption),
	};
	return cmocka_run_group_tests_name("tls", tests, setup_pki, teardown_pki);
}
