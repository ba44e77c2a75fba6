/*
 * Outbound TLS: one client context per destination.
 *
 * Verification has three modes, chosen per destination: the platform trust
 * store plus the expected server name (the default), a pin on the leaf
 * certificate's SHA-256 (for self-signed or privately issued backends), or
 * none (tls_allow_invalid_certs). The pin is enforced in a verify callback
 * that replaces OpenSSL's verdict, so a pinned backend needs neither a chain
 * to a trusted root nor a matching name, and a valid chain does not rescue a
 * certificate that differs from the pin.
 *
 * Resumption: the context keeps a few recent sessions. OpenSSL hands them over
 * through the new-session callback (with TLS 1.3 that happens when tickets
 * arrive, after the handshake), and tls_client_new_ssl offers the newest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "pem.h"
#include "switchyard/tls.h"

/* Sessions kept per destination. TLS 1.3 servers send two tickets per
 * connection and each ticket is used once, so a handful covers a burst of
 * connections without holding much memory. */
#define SESSION_SLOTS 4

struct sy_tls_client {
	SSL_CTX *ctx;
	char *name; /* expected name: tls_server_name, else host */
	char *ip;   /* the address when `name` is an IP literal, else NULL */
	bool has_pin;
	unsigned char pin[32];
	pthread_mutex_t lock;                 /* guards sessions/nsessions */
	SSL_SESSION *sessions[SESSION_SLOTS]; /* oldest first */
	size_t nsessions;
};

static const char pin_mismatch_msg[] = "certificate fingerprint does not match "
                                       "tls_pinned_cert_sha256";

static _Thread_local char errbuf[512];

/* SSL ex_data slot set (to a non-NULL marker) when the pin check failed, so
 * tls_client_verify_error can tell a pin mismatch from other failures. */
static int ssl_pin_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;
static char pin_marker;

static void init_index(void)
{
	ssl_pin_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Formats an error into the thread-local buffer, appending the root cause
 * from the OpenSSL error queue when with_ssl is true, and clears the queue. */
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

/* Returns the address text when `name` is an IPv4 or IPv6 literal (IPv6 may
 * be bracketed), else NULL. */
static char *ip_literal(const char *name)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t len = strlen(name);
	if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
		if (len - 2 >= sizeof(buf))
			return NULL;
		memcpy(buf, name + 1, len - 2);
		buf[len - 2] = '\0';
	} else {
		if (len >= sizeof(buf))
			return NULL;
		memcpy(buf, name, len + 1);
	}
	unsigned char addr[16];
	if (inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1)
		return strdup(buf);
	return NULL;
}

static bool session_usable(SSL_SESSION *s, time_t now)
{
	return SSL_SESSION_is_resumable(s) &&
	       (long)now < SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s);
}

static bool same_session(SSL_SESSION *a, SSL_SESSION *b)
{
	unsigned int alen = 0, blen = 0;
	const unsigned char *aid = SSL_SESSION_get_id(a, &alen);
	const unsigned char *bid = SSL_SESSION_get_id(b, &blen);
	return alen > 0 && alen == blen && memcmp(aid, bid, alen) == 0;
}

/*
 * Stores a private copy of sess (the caller keeps its own reference). The
 * copy matters: OpenSSL marks a connection's session not resumable when the
 * SSL is freed without a close_notify having been sent, and backend legs often
 * end that way (peer reset, client gone). RFC 5246 section 7.2.1 no longer
 * requires that, and a copy nobody is attached to stays usable.
 */
static void remember(sy_tls_client *c, SSL_SESSION *sess)
{
	if (!SSL_SESSION_is_resumable(sess))
		return;
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nsessions; i++) {
		if (same_session(c->sessions[i], sess)) {
			pthread_mutex_unlock(&c->lock);
			return;
		}
	}
	SSL_SESSION *copy = SSL_SESSION_dup(sess);
	SSL_SESSION *evicted = NULL;
	if (copy != NULL) {
		if (c->nsessions == SESSION_SLOTS) {
			evicted = c->sessions[0];
			memmove(c->sessions, c->sessions + 1,
			        (SESSION_SLOTS - 1) * sizeof(*c->sessions));
			c->nsessions--;
		}
		c->sessions[c->nsessions++] = copy;
	}
	pthread_mutex_unlock(&c->lock);
	SSL_SESSION_free(evicted);
	if (copy == NULL)
		ERR_clear_error();
}

/* Returns a session to offer, owned by the caller and attached to nothing
 * else, or NULL. Drops expired ones on the way. A TLS 1.3 session leaves the
 * cache, since its ticket is single-use; a TLS 1.2 one stays and the caller
 * gets a copy, so one connection's fate cannot spoil it for the others. */
static SSL_SESSION *take_session(sy_tls_client *c)
{
	SSL_SESSION *stale[SESSION_SLOTS];
	size_t nstale = 0;
	SSL_SESSION *pick = NULL;
	time_t now = time(NULL);
	pthread_mutex_lock(&c->lock);
	while (c->nsessions > 0 && pick == NULL) {
		SSL_SESSION *s = c->sessions[c->nsessions - 1];
		if (!session_usable(s, now)) {
			stale[nstale++] = s;
			c->nsessions--;
		} else if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
			pick = s;
			c->nsessions--;
		} else {
			pick = SSL_SESSION_dup(s);
			if (pick == NULL)
				break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < nstale; i++)
		SSL_SESSION_free(stale[i]);
	return pick;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	sy_tls_client *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	if (c != NULL)
		remember(c, sess);
	return 0; /* OpenSSL keeps (and drops) its reference; we hold a copy */
}

/*
 * Pin check. It decides on the leaf certificate (X509_STORE_CTX_get0_cert)
 * whatever depth OpenSSL is reporting, which has the effect the pin promises:
 * on a match every error anywhere in the chain (untrusted root, self-signed
 * leaf, name mismatch) is overridden and the recorded result is reset to OK;
 * on a mismatch the first call already fails. OpenSSL always ends a chain walk
 * with a call for the leaf, so a match always gets the last word.
 */
static int pin_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	sy_tls_client *c = ssl != NULL ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
	if (c == NULL || !c->has_pin)
		return ok;
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (leaf != NULL && X509_digest(leaf, EVP_sha256(), md, &len) && len == sizeof(c->pin) &&
	    CRYPTO_memcmp(md, c->pin, sizeof(c->pin)) == 0) {
		X509_STORE_CTX_set_error(xs, X509_V_OK);
		return 1;
	}
	SSL_set_ex_data(ssl, ssl_pin_idx, &pin_marker);
	X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static int load_client_cert(sy_tls_client *c, const sy_tls_client_opts *o, const char **error_r)
{
	const char *k = o->key;
	if (o->client_cert == NULL && o->client_key == NULL)
		return 0;
	if (o->client_cert == NULL || o->client_key == NULL)
		return fail(error_r, false, "%s.%s: required when %s is set", k,
		            o->client_cert == NULL ? "tls_client_cert" : "tls_client_key",
		            o->client_cert == NULL ? "tls_client_key" : "tls_client_cert");
	if (!tls_file_readable(o->client_cert))
		return fail(error_r, false, "%s.tls_client_cert: cannot read %s: %s", k,
		            o->client_cert, strerror(errno));
	if (!SSL_CTX_use_certificate_chain_file(c->ctx, o->client_cert))
		return fail(error_r, true, "%s.tls_client_cert: %s is not a PEM certificate chain",
		            k, o->client_cert);
	EVP_PKEY *key = tls_read_key(o->client_key);
	if (key == NULL && errno != 0)
		return fail(error_r, false, "%s.tls_client_key: cannot read %s: %s", k,
		            o->client_key, strerror(errno));
	if (key == NULL)
		return fail(error_r, true,
		            "%s.tls_client_key: %s holds no unencrypted PEM private key", k,
		            o->client_key);
	if (!X509_check_private_key(SSL_CTX_get0_certificate(c->ctx), key)) {
		EVP_PKEY_free(key);
		return fail(error_r, false,
		            "%s.tls_client_key: %s does not match the certificate in %s", k,
		            o->client_key, o->client_cert);
	}
	int ok = SSL_CTX_use_PrivateKey(c->ctx, key);
	EVP_PKEY_free(key);
	if (!ok)
		return fail(error_r, true, "%s.tls_client_key: cannot use %s", k, o->client_key);
	return 0;
}

/* Trust: the platform store, or only the CA certificates of `ca_file`. */
static int load_trust(sy_tls_client *c, const sy_tls_client_opts *o, const char **error_r)
{
	if (o->ca_file == NULL) {
		/* A missing platform store is not an error here: pinned and
		 * unverified destinations do not need one, and verified ones
		 * fail their handshake with a verify error that names the
		 * problem. */
		if (!SSL_CTX_set_default_verify_paths(c->ctx))
			ERR_clear_error();
		return 0;
	}
	if (!tls_file_readable(o->ca_file))
		return fail(error_r, false, "%s.tls_ca_file: cannot read %s: %s", o->key,
		            o->ca_file, strerror(errno));
	if (!SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL))
		return fail(error_r, true, "%s.tls_ca_file: %s holds no PEM CA certificate", o->key,
		            o->ca_file);
	return 0;
}

int tls_client_create(const sy_destination_config *d, sy_tls_client **out, const char **error_r)
{
	char key[300];
	snprintf(key, sizeof(key), "destination.%s", d->id != NULL ? d->id : "?");
	const sy_tls_client_opts o = {
	    .key = key,
	    .name = d->tls_server_name != NULL ? d->tls_server_name : d->host,
	    .has_pin = d->has_pin,
	    .pin = d->tls_pinned_cert_sha256,
	    .allow_invalid_certs = d->tls_allow_invalid_certs,
	    .client_cert = d->tls_client_cert,
	    .client_key = d->tls_client_key,
	};
	return tls_client_create_opts(&o, out, error_r);
}

int tls_client_create_opts(const sy_tls_client_opts *o, sy_tls_client **out, const char **error_r)
{
	*out = NULL;
	const char *id = o->key;
	pthread_once(&idx_once, init_index);
	if (ssl_pin_idx < 0)
		return fail(error_r, true, "%s: cannot allocate SSL ex_data index", id);
	const char *name = o->name;
	if (name == NULL || name[0] == '\0')
		return fail(error_r, false, "%s.host: required", id);

	sy_tls_client *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return fail(error_r, false, "%s: out of memory", id);
	if (pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c);
		return fail(error_r, false, "%s: cannot create a mutex", id);
	}
	c->name = strdup(name);
	c->ip = ip_literal(name);
	c->has_pin = o->has_pin && o->pin != NULL;
	if (c->has_pin)
		memcpy(c->pin, o->pin, sizeof(c->pin));
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->name == NULL || c->ctx == NULL) {
		fail(error_r, true, "%s: cannot create an SSL context", id);
		tls_client_free(c);
		return -1;
	}
	SSL_CTX_set_app_data(c->ctx, c);
	SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
	/* The internal store is keyed by session id, which is useless to a
	 * client; sessions live in our per-destination slots instead. */
	SSL_CTX_set_session_cache_mode(c->ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(c->ctx, new_session_cb);
	if (!SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION)) {
		fail(error_r, true, "%s: cannot set the minimum TLS version", id);
		tls_client_free(c);
		return -1;
	}
	if (load_trust(c, o, error_r) != 0) {
		tls_client_free(c);
		return -1;
	}
	if (c->has_pin)
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, pin_verify_cb);
	else if (o->allow_invalid_certs)
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
	else
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (load_client_cert(c, o, error_r) != 0) {
		tls_client_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

void tls_client_free(sy_tls_client *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nsessions; i++)
		SSL_SESSION_free(c->sessions[i]);
	SSL_CTX_free(c->ctx);
	pthread_mutex_destroy(&c->lock);
	free(c->name);
	free(c->ip);
	free(c);
}

SSL *tls_client_new_ssl(sy_tls_client *c)
{
	SSL *ssl = SSL_new(c->ctx);
	if (ssl == NULL)
		return NULL;
	int ok;
	if (c->ip != NULL) {
		/* RFC 6066 forbids IP literals in SNI; check the IP SAN instead. */
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->ip);
	} else {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		ok = SSL_set_tlsext_host_name(ssl, c->name) && SSL_set1_host(ssl, c->name);
	}
	if (!ok) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_SESSION *sess = take_session(c);
	if (sess != NULL) {
		/* A session that cannot be set only costs a full handshake. */
		if (!SSL_set_session(ssl, sess))
			ERR_clear_error();
		SSL_SESSION_free(sess);
	}
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	SSL_set_connect_state(ssl);
	return ssl;
}

void tls_client_handshake_done(sy_tls_client *c, SSL *ssl)
{
	/* A TLS 1.3 handshake's own session is either not resumable yet or the
	 * ticket just spent; the fresh tickets arrive through new_session_cb. */
	if (SSL_version(ssl) >= TLS1_3_VERSION)
		return;
	SSL_SESSION *sess = SSL_get_session(ssl);
	if (sess != NULL)
		remember(c, sess);
}

const char *tls_client_verify_error(SSL *ssl)
{
	if (ssl_pin_idx >= 0 && SSL_get_ex_data(ssl, ssl_pin_idx) != NULL)
		return pin_mismatch_msg;
	long res = SSL_get_verify_result(ssl);
	if (res == X509_V_OK)
		return NULL;
	return X509_verify_cert_error_string(res);
}

int tls_client_add_ca_file(sy_tls_client *c, const char *path)
{
	if (!SSL_CTX_load_verify_locations(c->ctx, path, NULL)) {
		ERR_clear_error();
		return -1;
	}
	return 0;
}
