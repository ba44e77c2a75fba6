/*
 * Inbound TLS: the certificate store, SNI selection and handshake policy.
 *
 * Every [tls.certificate.<name>] entry gets its own SSL_CTX carrying the same
 * policy. A connection starts on the "fallback" context (what a client without
 * SNI gets) and the servername callback moves it to the context the selection
 * rule picks. Starting every connection on the same context matters: OpenSSL
 * takes session-ticket keys and the session cache from the SSL's initial
 * context, so resumption works whichever certificate the connection ends on.
 *
 * Session tickets: without tls.ticket_key_file OpenSSL's per-process keys
 * stay. With it, every context gets a ticket key callback over the keys of
 * that file (the first encrypts, all decrypt), so every replica started from
 * the same file accepts the others' tickets. The keys belong to the store, so
 * a reload (a new store, the file read again) changes them for new
 * handshakes only; a connection keeps the store it started with.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "pem.h"
#include "switchyard/tls.h"

/* The same on every context, so a session made on one certificate's context
 * is acceptable on another's after the SNI switch. */
static const unsigned char sid_ctx[] = "switchyard";

#define SELF_SIGNED_NAME "self-signed"
#define MAX_DNS_NAME     253

typedef struct cert_entry {
	char *name;
	SSL_CTX *ctx;
	char **subjects; /* lowercased, trailing dot removed */
	size_t nsubjects;
	bool is_default;
} cert_entry;

struct sy_tls_server {
	atomic_uint refs;
	cert_entry *entries;
	size_t nentries;
	/* Index of the entry serving unmatched names and connections without
	 * SNI (selection steps 3-4), or -1 for the self-signed context. */
	long fallback;
	SSL_CTX *self_signed; /* NULL unless the fallback can reach it */
	/* Ticket keys from tls.ticket_key_file (ntkeys = 0: OpenSSL's own),
	 * with what the callback needs prepared once per key set: the cipher,
	 * and per key the HMAC parameters (3 OSSL_PARAMs: key, digest, end). */
	sy_ticket_key *tkeys;
	size_t ntkeys;
	EVP_CIPHER *tcipher;
	OSSL_PARAM *tparams;
};

/* OSSL_PARAM wants a writable pointer; the HMAC only reads it. */
static char ticket_digest[] = "SHA256";

static _Thread_local char errbuf[512];

/* Index of the SSL ex_data slot that holds the connection's server
 * reference; its free callback drops the reference when the SSL is freed. */
static int ssl_server_idx = -1;
static int ssl_alpn_idx = -1; /* the one ALPN protocol a listener offers (static text) */
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void ssl_server_ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                                void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	tls_server_unref(ptr);
}

static void init_index(void)
{
	ssl_server_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, ssl_server_ref_free);
	ssl_alpn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* ALPN: the listener's protocol when the client offers it; otherwise no
 * ALPN at all (the client then speaks its default, HTTP/1.1 for HTTP; mail
 * clients rarely offer any). Never h2: the proxy speaks HTTP/1.1 only. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)arg;
	const char *want = ssl_alpn_idx >= 0 ? SSL_get_ex_data(ssl, ssl_alpn_idx) : NULL;
	if (!want)
		return SSL_TLSEXT_ERR_NOACK;
	size_t wl = strlen(want);
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == wl && memcmp(in + i + 1, want, wl) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)l;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

void tls_server_set_alpn(SSL *ssl, const char *protocol)
{
	if (ssl_alpn_idx >= 0)
		SSL_set_ex_data(ssl, ssl_alpn_idx, (void *)protocol);
}

/* Formats an error into the thread-local buffer. When with_ssl is true the
 * root cause from the OpenSSL error queue is appended. The queue is cleared in
 * every case so stale entries cannot be blamed on a later, unrelated call. */
__attribute__((format(printf, 3, 4))) static int fail(const char **error_r, bool with_ssl,
                                                      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	unsigned long e = ERR_peek_error();
	if (with_ssl && e != 0 && n >= 0 && (size_t)n < sizeof(errbuf)) {
		const char *reason = ERR_reason_error_string(e);
		if (reason != NULL)
			snprintf(errbuf + n, sizeof(errbuf) - (size_t)n, ": %s", reason);
	}
	ERR_clear_error();
	if (error_r != NULL)
		*error_r = errbuf;
	return -1;
}

/* Lowercases `in` into out[MAX_DNS_NAME + 1] and drops one trailing dot.
 * Returns false for names that are empty or too long to be DNS names, which
 * then match no subject. */
static bool normalize_name(const char *in, char *out)
{
	size_t len = strlen(in);
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > MAX_DNS_NAME)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = in[i];
		out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
	}
	out[len] = '\0';
	return true;
}

static int add_subject(cert_entry *e, const char *raw, size_t rawlen)
{
	char tmp[MAX_DNS_NAME + 2];
	char norm[MAX_DNS_NAME + 1];
	/* An embedded NUL or an oversized name cannot match any SNI. */
	if (rawlen > MAX_DNS_NAME + 1 || memchr(raw, '\0', rawlen) != NULL)
		return 0;
	memcpy(tmp, raw, rawlen);
	tmp[rawlen] = '\0';
	if (!normalize_name(tmp, norm))
		return 0;
	char **grown = realloc(e->subjects, (e->nsubjects + 1) * sizeof(*grown));
	if (grown == NULL)
		return -1;
	e->subjects = grown;
	e->subjects[e->nsubjects] = strdup(norm);
	if (e->subjects[e->nsubjects] == NULL)
		return -1;
	e->nsubjects++;
	return 0;
}

/* Subjects from the certificate: its DNS SANs, or its CN when it has none
 * (the same preference RFC 6125 gives clients). */
static int subjects_from_cert(cert_entry *e, X509 *x)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool any_dns = false;
	int rc = 0;
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type != GEN_DNS)
			continue;
		any_dns = true;
		const ASN1_IA5STRING *s = gn->d.dNSName;
		rc = add_subject(e, (const char *)ASN1_STRING_get0_data(s),
		                 (size_t)ASN1_STRING_length(s));
	}
	GENERAL_NAMES_free(sans);
	if (rc != 0 || any_dns)
		return rc;

	const X509_NAME *subj = X509_get_subject_name(x);
	int pos = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (pos < 0)
		return 0;
	unsigned char *utf8 = NULL;
	int len =
	    ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, pos)));
	if (len < 0)
		return 0;
	rc = add_subject(e, (const char *)utf8, (size_t)len);
	OPENSSL_free(utf8);
	return rc;
}

static bool cipher_name_eq(const char *configured, const SSL_CIPHER *c)
{
	const char *std = SSL_CIPHER_standard_name(c);
	const char *ossl = SSL_CIPHER_get_name(c);
	if ((std != NULL && strcasecmp(configured, std) == 0) ||
	    (ossl != NULL && strcasecmp(configured, ossl) == 0))
		return true;
	/* rustls, and so configs written for the reference system, spell the
	 * TLS 1.3 suites TLS13_AES_128_GCM_SHA256. */
	if (std != NULL && strncasecmp(configured, "TLS13_", 6) == 0 &&
	    strncasecmp(std, "TLS_", 4) == 0 && strcasecmp(configured + 6, std + 4) == 0)
		return true;
	return false;
}

static bool cipher_disabled(const sy_strlist *disabled, const SSL_CIPHER *c)
{
	for (size_t i = 0; i < disabled->len; i++)
		if (cipher_name_eq(disabled->items[i], c))
			return true;
	return false;
}

/* TLS 1.3 suites are exactly the IANA code points 0x13xx, and they are
 * configured separately from the older ones in OpenSSL. */
static bool is_tls13(const SSL_CIPHER *c)
{
	return (SSL_CIPHER_get_protocol_id(c) & 0xff00) == 0x1300;
}

static bool append_name(char **list, size_t *len, const char *name)
{
	size_t n = strlen(name);
	char *grown = realloc(*list, *len + n + 2);
	if (grown == NULL)
		return false;
	if (*len > 0)
		grown[(*len)++] = ':';
	memcpy(grown + *len, name, n + 1);
	*len += n;
	*list = grown;
	return true;
}

/* Removes the disabled suites from both lists by enumerating what the context
 * offers and keeping the rest in OpenSSL's order. A version left without any
 * suite is switched off rather than left to fail every handshake. */
static int apply_ciphers(SSL_CTX *ctx, const sy_tls_policy *p, int min_version,
                         const char **error_r)
{
	if (p->disable_cipher_suites.len == 0)
		return 0;
	STACK_OF(SSL_CIPHER) *all = SSL_CTX_get_ciphers(ctx);
	char *tls12 = NULL, *tls13 = NULL;
	size_t len12 = 0, len13 = 0;
	for (int i = 0; i < sk_SSL_CIPHER_num(all); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(all, i);
		if (cipher_disabled(&p->disable_cipher_suites, c))
			continue;
		bool is13 = is_tls13(c);
		if (!append_name(is13 ? &tls13 : &tls12, is13 ? &len13 : &len12,
		                 SSL_CIPHER_get_name(c))) {
			free(tls12);
			free(tls13);
			return fail(error_r, false, "tls.protocols: out of memory");
		}
	}
	int rc = 0;
	if (len12 == 0 && len13 == 0) {
		rc = fail(error_r, false,
		          "tls.protocols.disable_cipher_suites: removes every cipher suite; "
		          "keep at least one");
	} else if (len13 == 0 && min_version >= TLS1_3_VERSION) {
		rc = fail(error_r, false,
		          "tls.protocols.disable_cipher_suites: removes every TLS 1.3 suite "
		          "but tls.protocols.min_version is \"1.3\"");
	} else if (!SSL_CTX_set_ciphersuites(ctx, tls13 != NULL ? tls13 : "")) {
		rc = fail(error_r, true, "tls.protocols.disable_cipher_suites: cannot apply");
	} else if (len12 > 0 && !SSL_CTX_set_cipher_list(ctx, tls12)) {
		rc = fail(error_r, true, "tls.protocols.disable_cipher_suites: cannot apply");
	} else if (len12 == 0 && !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)) {
		/* OpenSSL refuses an empty TLS 1.2 list, so TLS 1.2 is switched
		 * off through the version range instead. */
		rc = fail(error_r, true, "tls.protocols.disable_cipher_suites: cannot apply");
	} else if (len13 == 0 && !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION)) {
		rc = fail(error_r, true, "tls.protocols.disable_cipher_suites: cannot apply");
	}
	free(tls12);
	free(tls13);
	return rc;
}

static int servername_cb(SSL *ssl, int *alert, void *arg);

/* A context with the [tls.protocols] policy and no certificate yet. */
static SSL_CTX *new_policy_ctx(const sy_tls_policy *p, const char **error_r)
{
	int min_version = p->min_version == 0 ? TLS1_2_VERSION : p->min_version;
	if (min_version != TLS1_2_VERSION && min_version != TLS1_3_VERSION) {
		fail(
		    error_r, false,
		    "tls.protocols.min_version: unsupported version 0x%04x; use \"1.2\" or \"1.3\"",
		    (unsigned)p->min_version);
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		fail(error_r, true, "tls: cannot create an SSL context");
		return NULL;
	}
	/* Renegotiation is never needed by mail clients and has a history of
	 * attacks; compression enables CRIME. Tickets stay on (the default;
	 * tls.ticket_key_file only changes their keys, see apply_tickets). */
	uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
	if (p->ignore_client_order)
		opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
	SSL_CTX_set_options(ctx, opts);
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	/* Idle sessions then hold no record buffers (DESIGN.md convention 8). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (!SSL_CTX_set_min_proto_version(ctx, min_version) ||
	    !SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1)) {
		fail(error_r, true, "tls.protocols: cannot apply the policy");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (apply_ciphers(ctx, p, min_version, error_r) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	return ctx;
}

static int load_entry(cert_entry *e, const sy_cert_config *cc, const sy_tls_policy *p,
                      const char **error_r)
{
	e->name = strdup(cc->name);
	e->is_default = cc->is_default;
	if (e->name == NULL)
		return fail(error_r, false, "tls.certificate.%s: out of memory", cc->name);
	e->ctx = new_policy_ctx(p, error_r);
	if (e->ctx == NULL)
		return -1;
	if (cc->cert_path == NULL || cc->key_path == NULL)
		return fail(error_r, false, "tls.certificate.%s.%s: required", cc->name,
		            cc->cert_path == NULL ? "cert" : "key");
	if (!tls_file_readable(cc->cert_path))
		return fail(error_r, false, "tls.certificate.%s.cert: cannot read %s: %s", cc->name,
		            cc->cert_path, strerror(errno));
	if (!SSL_CTX_use_certificate_chain_file(e->ctx, cc->cert_path))
		return fail(error_r, true,
		            "tls.certificate.%s.cert: %s is not a PEM certificate chain", cc->name,
		            cc->cert_path);
	EVP_PKEY *key = tls_read_key(cc->key_path);
	if (key == NULL && errno != 0)
		return fail(error_r, false, "tls.certificate.%s.key: cannot read %s: %s", cc->name,
		            cc->key_path, strerror(errno));
	if (key == NULL)
		return fail(error_r, true,
		            "tls.certificate.%s.key: %s holds no unencrypted PEM private key",
		            cc->name, cc->key_path);
	if (!X509_check_private_key(SSL_CTX_get0_certificate(e->ctx), key)) {
		EVP_PKEY_free(key);
		return fail(error_r, false,
		            "tls.certificate.%s.key: %s does not match the certificate in %s",
		            cc->name, cc->key_path, cc->cert_path);
	}
	int ok = SSL_CTX_use_PrivateKey(e->ctx, key);
	EVP_PKEY_free(key);
	if (!ok)
		return fail(error_r, true, "tls.certificate.%s.key: cannot use %s", cc->name,
		            cc->key_path);

	int rc = 0;
	if (cc->subjects.len > 0) {
		for (size_t i = 0; i < cc->subjects.len && rc == 0; i++)
			rc = add_subject(e, cc->subjects.items[i], strlen(cc->subjects.items[i]));
	} else {
		rc = subjects_from_cert(e, SSL_CTX_get0_certificate(e->ctx));
	}
	if (rc != 0)
		return fail(error_r, false, "tls.certificate.%s: out of memory", cc->name);
	return 0;
}

/* The fallback certificate: EC P-256, CN=switchyard, random serial, valid for
 * a year. It lets handshakes complete when nothing is configured to match, and
 * is deliberately untrusted by clients. */
static int make_self_signed(SSL_CTX *ctx, const char **error_r)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	BIGNUM *serial = BN_new();
	unsigned char rnd[16];
	int ok = pkey != NULL && x != NULL && serial != NULL && RAND_bytes(rnd, sizeof(rnd)) == 1;
	if (ok) {
		rnd[0] &= 0x7f; /* serials must be positive */
		ok = BN_bin2bn(rnd, sizeof(rnd), serial) != NULL &&
		     BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL &&
		     X509_set_version(x, X509_VERSION_3) &&
		     X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL &&
		     X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600) != NULL &&
		     X509_set_pubkey(x, pkey) &&
		     X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
		                                (const unsigned char *)"switchyard", -1, -1, 0) &&
		     X509_set_issuer_name(x, X509_get_subject_name(x)) &&
		     X509_sign(x, pkey, EVP_sha256()) > 0 && SSL_CTX_use_certificate(ctx, x) &&
		     SSL_CTX_use_PrivateKey(ctx, pkey);
	}
	BN_free(serial);
	X509_free(x);
	EVP_PKEY_free(pkey);
	if (!ok)
		return fail(error_r, true, "tls: cannot generate the self-signed certificate");
	return 0;
}

/* The ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb). OpenSSL
 * hands in the cipher and MAC contexts of one ticket; this only picks the
 * key and initialises them. enc = 1: a new ticket, under the first key with
 * a random IV. enc = 0: the ticket's key name picks a key; 1 = use it, 2 =
 * use it and issue a fresh ticket under the first key, 0 = unknown name (a
 * full handshake, as for an expired key). Every failure returns 0 too: no
 * ticket, or no resumption, rather than a failed handshake.
 *
 * Renewal: always under TLS 1.3, where OpenSSL's own keys renew every
 * resumed session (one new ticket; RFC 8446 C.4 asks clients to use a ticket
 * once, and OpenSSL clients drop a ticket they resumed with), so the number
 * of tickets sent stays what it was without a key file. Under TLS 1.2 only
 * for an older key, so its tickets move to the first key. */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	const sy_tls_server *s = ssl_server_idx >= 0 ? SSL_get_ex_data(ssl, ssl_server_idx) : NULL;
	if (s == NULL || s->ntkeys == 0)
		return 0;
	if (enc) {
		const sy_ticket_key *k = &s->tkeys[0];
		int ivlen = EVP_CIPHER_get_iv_length(s->tcipher);
		if (ivlen <= 0 || RAND_bytes(iv, ivlen) != 1 ||
		    !EVP_EncryptInit_ex2(cctx, s->tcipher, k->aes, iv, NULL) ||
		    !EVP_MAC_CTX_set_params(hctx, &s->tparams[0])) {
			ERR_clear_error();
			return 0;
		}
		memcpy(key_name, k->name, sizeof(k->name));
		return 1;
	}
	for (size_t i = 0; i < s->ntkeys; i++) {
		const sy_ticket_key *k = &s->tkeys[i];
		if (memcmp(key_name, k->name, sizeof(k->name)) != 0)
			continue;
		if (!EVP_MAC_CTX_set_params(hctx, &s->tparams[3 * i]) ||
		    !EVP_DecryptInit_ex2(cctx, s->tcipher, k->aes, iv, NULL)) {
			ERR_clear_error();
			return 0;
		}
		return (i == 0 && SSL_version(ssl) < TLS1_3_VERSION) ? 1 : 2;
	}
	return 0;
}

/* Reads tls.ticket_key_file into s and prepares the callback's state. */
static int load_ticket_keys(sy_tls_server *s, const char *path, const char **error_r)
{
	char why[768];
	int n = config_ticket_keys_read(path, &s->tkeys, why, sizeof(why));
	if (n < 0)
		return fail(error_r, false, "tls.ticket_key_file: %s", why);
	s->ntkeys = (size_t)n;
	s->tcipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	if (s->tcipher == NULL)
		return fail(error_r, true, "tls.ticket_key_file: AES-256-CBC is not available");
	s->tparams = calloc(3 * s->ntkeys, sizeof(*s->tparams));
	if (s->tparams == NULL)
		return fail(error_r, false, "tls.ticket_key_file: out of memory");
	for (size_t i = 0; i < s->ntkeys; i++) {
		OSSL_PARAM *p = &s->tparams[3 * i];
		p[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, s->tkeys[i].hmac,
		                                         sizeof(s->tkeys[i].hmac));
		p[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, ticket_digest, 0);
		p[2] = OSSL_PARAM_construct_end();
	}
	return 0;
}

/* The ticket settings of cfg on one context. OpenSSL takes the ticket keys
 * and the lifetime from a connection's initial context, but every context
 * gets them so no context can serve a ticket under other keys. */
static int apply_tickets(const sy_tls_server *s, const sy_tls_tickets *t, SSL_CTX *ctx,
                         const char **error_r)
{
	if (s->ntkeys > 0 && !SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb))
		return fail(error_r, true, "tls.ticket_key_file: cannot install the ticket keys");
	if (t->lifetime_ms != 0)
		SSL_CTX_set_timeout(ctx, (long)(t->lifetime_ms / 1000));
	return 0;
}

static void free_server(sy_tls_server *s)
{
	for (size_t i = 0; i < s->nentries; i++) {
		cert_entry *e = &s->entries[i];
		free(e->name);
		SSL_CTX_free(e->ctx);
		for (size_t j = 0; j < e->nsubjects; j++)
			free(e->subjects[j]);
		free(e->subjects);
	}
	free(s->entries);
	SSL_CTX_free(s->self_signed);
	if (s->tkeys != NULL) {
		OPENSSL_cleanse(s->tkeys, s->ntkeys * sizeof(*s->tkeys));
		free(s->tkeys);
	}
	free(s->tparams);
	EVP_CIPHER_free(s->tcipher);
	free(s);
}

static long compute_fallback(const sy_tls_server *s)
{
	for (size_t i = 0; i < s->nentries; i++)
		if (s->entries[i].is_default)
			return (long)i;
	for (size_t i = 0; i < s->nentries; i++)
		for (size_t j = 0; j < s->entries[i].nsubjects; j++)
			if (strcmp(s->entries[i].subjects[j], "*") == 0)
				return (long)i;
	if (s->nentries == 1)
		return 0;
	return -1;
}

int tls_server_create(const sy_config *cfg, sy_tls_server **out, const char **error_r)
{
	*out = NULL;
	pthread_once(&idx_once, init_index);
	if (ssl_server_idx < 0)
		return fail(error_r, true, "tls: cannot allocate SSL ex_data index");

	sy_tls_server *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return fail(error_r, false, "tls: out of memory");
	atomic_init(&s->refs, 1);
	if (cfg->ncerts > 0) {
		s->entries = calloc(cfg->ncerts, sizeof(*s->entries));
		if (s->entries == NULL) {
			free(s);
			return fail(error_r, false, "tls: out of memory");
		}
	}
	for (size_t i = 0; i < cfg->ncerts; i++) {
		/* Count the entry before loading so a partial one is freed. */
		s->nentries++;
		if (load_entry(&s->entries[i], &cfg->certs[i], &cfg->tls_policy, error_r) != 0) {
			free_server(s);
			return -1;
		}
	}
	s->fallback = compute_fallback(s);
	if (s->fallback < 0) {
		s->self_signed = new_policy_ctx(&cfg->tls_policy, error_r);
		if (s->self_signed == NULL || make_self_signed(s->self_signed, error_r) != 0) {
			free_server(s);
			return -1;
		}
	}
	if (cfg->tls_tickets.key_file != NULL &&
	    load_ticket_keys(s, cfg->tls_tickets.key_file, error_r) != 0) {
		free_server(s);
		return -1;
	}
	for (size_t i = 0; i <= s->nentries; i++) {
		SSL_CTX *ctx = i < s->nentries ? s->entries[i].ctx : s->self_signed;
		if (ctx != NULL && apply_tickets(s, &cfg->tls_tickets, ctx, error_r) != 0) {
			free_server(s);
			return -1;
		}
	}
	*out = s;
	return 0;
}

sy_tls_server *tls_server_ref(sy_tls_server *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void tls_server_unref(sy_tls_server *s)
{
	if (s == NULL)
		return;
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		free_server(s);
}

static bool subject_eq(const cert_entry *e, const char *name)
{
	for (size_t j = 0; j < e->nsubjects; j++)
		if (e->subjects[j][0] != '*' && strcmp(e->subjects[j], name) == 0)
			return true;
	return false;
}

static bool wildcard_eq(const cert_entry *e, const char *parent)
{
	for (size_t j = 0; j < e->nsubjects; j++) {
		const char *subj = e->subjects[j];
		if (subj[0] == '*' && subj[1] == '.' && strcmp(subj + 2, parent) == 0)
			return true;
	}
	return false;
}

/* The selection rule (see tls_server_select_name); -1 = self-signed. */
static long select_entry(const sy_tls_server *s, const char *sni)
{
	char name[MAX_DNS_NAME + 1];
	if (sni == NULL || !normalize_name(sni, name))
		return s->fallback;
	for (size_t i = 0; i < s->nentries; i++)
		if (subject_eq(&s->entries[i], name))
			return (long)i;
	bool first = true;
	for (const char *dot = strchr(name, '.'); dot != NULL && dot[1] != '\0';
	     dot = strchr(dot + 1, '.')) {
		const char *parent = dot + 1;
		if (first)
			for (size_t i = 0; i < s->nentries; i++)
				if (wildcard_eq(&s->entries[i], parent))
					return (long)i;
		for (size_t i = 0; i < s->nentries; i++)
			if (subject_eq(&s->entries[i], parent))
				return (long)i;
		first = false;
	}
	return s->fallback;
}

static SSL_CTX *ctx_of(const sy_tls_server *s, long idx)
{
	return idx < 0 ? s->self_signed : s->entries[idx].ctx;
}

const char *tls_server_select_name(const sy_tls_server *s, const char *sni)
{
	long idx = select_entry(s, sni);
	return idx < 0 ? SELF_SIGNED_NAME : s->entries[idx].name;
}

/* Runs once per handshake after the ClientHello extensions are parsed, also
 * when the client sent no SNI (then the initial context is already right). */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	(void)arg;
	const sy_tls_server *s = SSL_get_ex_data(ssl, ssl_server_idx);
	if (s == NULL)
		return SSL_TLSEXT_ERR_OK;
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	SSL_CTX *want = ctx_of(s, select_entry(s, sni));
	if (want != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, want) == NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

SSL *tls_server_new_ssl(sy_tls_server *s)
{
	SSL *ssl = SSL_new(ctx_of(s, s->fallback));
	if (ssl == NULL)
		return NULL;
	if (!SSL_set_ex_data(ssl, ssl_server_idx, tls_server_ref(s))) {
		tls_server_unref(s);
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	SSL_set_accept_state(ssl);
	return ssl;
}

bool tls_cipher_suite_known(const char *name)
{
	/* Ask a throwaway context with every suite OpenSSL implements enabled,
	 * not just the default list, so disabling a non-default suite is valid. */
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (ctx == NULL) {
		ERR_clear_error();
		return false;
	}
	bool known = false;
	if (SSL_CTX_set_cipher_list(ctx, "ALL:COMPLEMENTOFALL:@SECLEVEL=0") &&
	    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
	                                  "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256:"
	                                  "TLS_AES_128_CCM_8_SHA256")) {
		STACK_OF(SSL_CIPHER) *all = SSL_CTX_get_ciphers(ctx);
		for (int i = 0; i < sk_SSL_CIPHER_num(all) && !known; i++)
			known = cipher_name_eq(name, sk_SSL_CIPHER_value(all, i));
	}
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return known;
}
