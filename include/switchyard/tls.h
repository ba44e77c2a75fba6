/*
 * TLS contexts for both legs of a proxied connection.
 *
 * The inbound side (sy_tls_server) turns the [tls.certificate.*] entries and
 * the [tls.protocols] policy into one SSL_CTX per certificate and picks one per
 * connection from the client's Server Name Indication. The outbound side
 * (sy_tls_client) holds one SSL_CTX per destination with its verification mode
 * (platform trust store and server name, a pinned leaf fingerprint, or none),
 * an optional client certificate for mutual TLS, and the sessions to resume.
 *
 * Neither side does any I/O: callers get a configured SSL and attach their own
 * BIOs (src/tls/stream.c drives it over memory BIOs on a libuv stream).
 *
 * Errors: functions that can fail return 0 or -1 and describe the failure in
 * *error_r. That text starts with the dotted config key it is about and lives
 * in a thread-local buffer that stays valid until the next tls_* call on the
 * same thread; copy it if it must survive longer.
 */
#ifndef SWITCHYARD_TLS_H
#define SWITCHYARD_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "switchyard/config.h"

/* ---- Inbound ------------------------------------------------------------ */

/*
 * Inbound certificate store and policy. Immutable after creation and shared by
 * all worker threads without locking. Reference counted so that a reload can
 * swap in a new store while handshakes in flight keep the old one alive.
 */
typedef struct sy_tls_server sy_tls_server;

/*
 * Loads every certificate entry of cfg (chain file, key, subjects from the
 * entry or else from the certificate's DNS SANs, else its CN), applies the
 * [tls.protocols] policy to each, and generates the in-memory self-signed
 * fallback when the selection rule can reach it. Reads the files named by
 * cfg as they are (config loading resolves relative paths).
 *
 * On success returns 0 and *out holds one reference (release it with
 * tls_server_unref). On failure returns -1, *out is NULL and *error_r names the
 * key at fault, e.g. "tls.certificate.primary.key: ...". Does not keep any
 * pointer into cfg.
 */
int tls_server_create(const sy_config *cfg, sy_tls_server **out, const char **error_r);

/* Takes another reference on s and returns s. Thread-safe. */
sy_tls_server *tls_server_ref(sy_tls_server *s);

/* Drops a reference; the last one frees the store. NULL is ignored. Thread-safe. */
void tls_server_unref(sy_tls_server *s);

/*
 * A new server-side SSL for one accepted connection, in accept state, with
 * SSL_MODE_RELEASE_BUFFERS and a servername callback that switches to the
 * certificate chosen by tls_server_select_name(). The SSL holds its own
 * reference on s, released by SSL_free, so the caller may unref s (e.g. on
 * reload) while the connection lives. The caller owns the SSL and attaches its
 * BIOs. Returns NULL on failure (OpenSSL error queue set).
 *
 * The caller may use SSL_set_app_data; this module keeps its state in a
 * separate ex_data index.
 */
SSL *tls_server_new_ssl(sy_tls_server *s);
/* The ALPN protocol this connection accepts ("http/1.1" for HTTP
 * listeners; static text): chosen when the client offers it, else no ALPN
 * is negotiated. Without a call, none is. */
void tls_server_set_alpn(SSL *ssl, const char *protocol);

/*
 * The selection rule, exposed for tests and logs. Returns the name of the
 * certificate entry ("primary", ...) that serves `sni`, or "self-signed" for
 * the generated one. `sni` may be NULL (client sent no SNI); it is compared
 * case-insensitively with one trailing dot ignored. Order:
 *   1. an exact subject match (first entry in config order wins ties);
 *   2. walking up the labels, most specific first: a subject "*.<parent>"
 *      serves names exactly one label below <parent> (checked first, as such
 *      a certificate really covers the name), then a subject equal to the
 *      parent domain serves every name below it;
 *   3. the first entry with default = true, else the first with subject "*";
 *   4. the only entry, when exactly one is configured;
 *   5. the generated self-signed certificate.
 * Without SNI only steps 3-5 apply. The string lives as long as s.
 */
const char *tls_server_select_name(const sy_tls_server *s, const char *sni);

/*
 * True if OpenSSL knows a cipher suite by this name: an IANA standard name
 * (TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256), the
 * rustls spelling of TLS 1.3 suites (TLS13_AES_128_GCM_SHA256) or an OpenSSL
 * name (ECDHE-RSA-AES128-GCM-SHA256). Case-insensitive. For config validation
 * of tls.protocols.disable_cipher_suites; tls_server_create itself ignores
 * unknown names, since removing a suite that does not exist changes nothing.
 */
bool tls_cipher_suite_known(const char *name);

/* ---- Outbound ----------------------------------------------------------- */

/*
 * Per-destination client context: verification, pin, mutual TLS and a small
 * cache of sessions for resumption. All functions taking it are thread-safe;
 * one instance is shared by every worker thread.
 */
typedef struct sy_tls_client sy_tls_client;

/*
 * Builds the context for destination d. Verification: the platform trust store
 * plus the expected name (tls_server_name, else host); with a pin
 * (d->has_pin), only the leaf certificate's SHA-256 over DER decides, chain and
 * name are not checked (the pin wins over tls_allow_invalid_certs); with
 * tls_allow_invalid_certs and no pin, nothing is verified. tls_client_cert and
 * tls_client_key are loaded for mutual TLS. TLS 1.2 is the minimum.
 *
 * On success returns 0 and *out is owned by the caller (tls_client_free). On
 * failure returns -1 and *error_r names the key, e.g.
 * "destination.legacy.tls_client_key: ...". Does not keep pointers into d.
 */
int tls_client_create(const sy_destination_config *d, sy_tls_client **out, const char **error_r);

/*
 * The settings of an outbound context, for users that are not a destination
 * (the Redis mapping store over rediss://). `key` is the config table they
 * come from ("destination.<id>", "mapping.redis"): error messages name
 * "<key>.<setting>". `name` is the expected server name (SNI and the
 * certificate check, as tls_client_new_ssl describes). Trust is the platform
 * store, or with `ca_file` only the CA certificates in that PEM file. The pin
 * (32 bytes, when has_pin) and allow_invalid_certs work as for destinations;
 * client_cert and client_key (both or neither) enable mutual TLS. Strings are
 * not kept.
 */
typedef struct sy_tls_client_opts {
	const char *key;
	const char *name;
	bool has_pin;
	const unsigned char *pin;
	bool allow_invalid_certs;
	const char *ca_file;
	const char *client_cert;
	const char *client_key;
} sy_tls_client_opts;

/* Builds a context from `o`; returns as tls_client_create (which is this
 * function with the destination's settings). */
int tls_client_create_opts(const sy_tls_client_opts *o, sy_tls_client **out, const char **error_r);

/*
 * Frees c. Every SSL made from it must have been freed first (they point at
 * its SSL_CTX callbacks' state). NULL is ignored.
 */
void tls_client_free(sy_tls_client *c);

/*
 * A new client SSL in connect state: SNI = tls_server_name else host (no SNI
 * when that is an IP literal), name verification against the same name
 * (SSL_set1_host, or the IP address for an IP literal), the most recent
 * resumable session of this destination, SSL_MODE_RELEASE_BUFFERS. The caller
 * owns the SSL, attaches its BIOs and frees it with SSL_free before freeing c.
 * Returns NULL on failure (OpenSSL error queue set).
 *
 * TLS 1.3 sessions are handed out once each (RFC 8446 C.4: a ticket should
 * not be reused); TLS 1.2 sessions are shared until they expire.
 */
SSL *tls_client_new_ssl(sy_tls_client *c);

/*
 * Call after a successful client handshake: remembers the TLS 1.2 session for
 * resumption (a private copy, so it stays usable however this connection
 * ends). TLS 1.3 tickets arrive after the handshake, when the caller next
 * reads, and are picked up by a callback without any further call; the caller
 * must therefore keep reading the backend leg (it does when bridging).
 */
void tls_client_handshake_done(sy_tls_client *c, SSL *ssl);

/*
 * Human-readable reason for a failed certificate verification on a client SSL
 * from this module, for logs: "certificate fingerprint does not match
 * tls_pinned_cert_sha256", or OpenSSL's text for the verify result ("hostname
 * mismatch", "self-signed certificate", ...). Returns NULL when verification
 * did not fail (the handshake failed for another reason, or did not get that
 * far). With tls_allow_invalid_certs it still reports what was wrong with a
 * certificate that was accepted anyway. The string is static.
 */
const char *tls_client_verify_error(SSL *ssl);

/*
 * TEST-ONLY: adds the CA certificates in the PEM file `path` to c's trust
 * store, so tests can verify against a private CA without touching the
 * platform store. Production code must not call it: backend trust comes from
 * the platform store or a pin. Call before any tls_client_new_ssl. Returns 0,
 * or -1 if the file cannot be loaded.
 */
int tls_client_add_ca_file(sy_tls_client *c, const char *path);

#endif
