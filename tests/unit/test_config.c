/*
 * Unit tests for src/config: defaults of every table, durations and socket
 * addresses, the effective forwarding rules, admin token precedence, and one
 * failing configuration per startup rule (table-driven: the TOML text and a
 * substring of the message, which always starts with the dotted key).
 *
 * Certificates, keys, mapping files and token files are written into a
 * mkdtemp() directory that is passed as the config's base directory, so the
 * configs below refer to them by relative name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "switchyard/config.h"

/* ---- Fixture files ------------------------------------------------------- */

static char tmpdir[] = "/tmp/sy-config-test-XXXXXX";
static void write_file(const char *name, const char *content)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

/* A self-signed P-256 certificate and its key. */
static void write_cert_pair(const char *cert_name, const char *key_name)
{
	char path[256];
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	assert_non_null(pk);
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
	X509_set_pubkey(x, pk);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
	                           -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);

	snprintf(path, sizeof(path), "%s/%s", tmpdir, cert_name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, key_name);
	f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	write_cert_pair("cert.pem", "key.pem");
	write_cert_pair("cert2.pem", "key2.pem");
	write_file("notpem.txt", "this is not PEM\n");
	write_file("map.tsv", "# comment\nAlice@Example.com main\n\nbob@example.com main\n");
	write_file("badmap.tsv", "alice@example.com\n");
	write_file("ghostmap.tsv", "alice@example.com ghost\n");
	write_file("popmap.tsv", "alice@example.com poponly\n");
	write_file("token.txt", "file-token-0123456789abcdef0123456789\n\n");
	write_file("short.txt", "short\n");
	unsetenv("PROXY_ADMIN_TOKEN");
	return 0;
}

static int teardown(void **state)
{
	char path[512];
	(void)state;
	/* Everything in the directory, so a failed test leaves nothing behind. */
	DIR *d = opendir(tmpdir);
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(tmpdir);
	return 0;
}

/* ---- Helpers -------------------------------------------------------------- */

static sy_config *load_ok(const char *text)
{
	sy_errors errs = {0};
	sy_config *cfg = NULL;
	int rc = config_load_string(text, strlen(text), tmpdir, &cfg, &errs);
	for (size_t i = 0; i < errs.len; i++)
		fprintf(stderr, "unexpected error: %s\n", errs.msgs[i]);
	assert_int_equal(rc, 0);
	assert_int_equal(errs.len, 0);
	assert_non_null(cfg);
	sy_errors_free(&errs);
	return cfg;
}

/* Loads `text`, expects failure, and returns the errors. */
static sy_errors load_fail(const char *text)
{
	sy_errors errs = {0};
	sy_config *cfg = (sy_config *)1;
	int rc = config_load_string(text, strlen(text), tmpdir, &cfg, &errs);
	assert_int_equal(rc, -1);
	assert_null(cfg);
	assert_true(errs.len > 0);
	return errs;
}

static bool has_msg(const sy_errors *errs, const char *needle)
{
	for (size_t i = 0; i < errs->len; i++) {
		if (strstr(errs->msgs[i], needle) != NULL)
			return true;
	}
	return false;
}

static void dump(const char *what, const sy_errors *errs)
{
	fprintf(stderr, "%s; got %zu message(s):\n", what, errs->len);
	for (size_t i = 0; i < errs->len; i++)
		fprintf(stderr, "  %s\n", errs->msgs[i]);
}

/* The smallest valid config the cases below extend. */
#define ROUTING "[routing]\ndefault_destination = \"main\"\n"
#define MAIN                                                                                       \
	"[destination.main]\nhost = \"mail.example.com\"\n"                                        \
	"[destination.main.protocol.imap]\nport = 993\ntls = \"implicit\"\n"
#define BASE ROUTING MAIN
#define IMAP_LISTENER                                                                              \
	"[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:10993\"]\ntls = \"implicit\"\n"
/* A destination that can take pass-through traffic. */
#define RELAY                                                                                      \
	"[destination.relay]\nhost = \"relay.example.com\"\n"                                      \
	"[destination.relay.protocol.smtp]\nport = 25\ntls = \"plain\"\n"
#define HTTP_MAIN                                                                                  \
	"[destination.web]\nhost = \"web.example.com\"\n"                                          \
	"[destination.web.protocol.http]\nport = 443\ntls = \"implicit\"\n"

/* ---- Defaults ------------------------------------------------------------- */

static void test_defaults(void **state)
{
	(void)state;
	sy_config *cfg = load_ok(BASE);

	/* [server] */
	assert_int_equal(cfg->server.threads, 0);
	assert_null(cfg->server.hostname);
	assert_int_equal(cfg->server.shutdown_grace_ms, 30000);
	assert_int_equal(cfg->server.bridge_idle_ms, 1800000);
	assert_int_equal(cfg->server.backend_timeout_ms, 10000);
	assert_int_equal(cfg->server.backend_connect_retries, 1);
	assert_int_equal(cfg->server.host_down_threshold, 5);
	assert_int_equal(cfg->server.host_down_cooldown_ms, 30000);
	assert_int_equal(cfg->server.proxy_ttl, 7);
	assert_int_equal(cfg->server.log_level, SY_LOG_INFO);
	assert_int_equal(cfg->server.log_format, SY_LOG_TEXT);

	/* [tls] */
	assert_int_equal(cfg->ncerts, 0);
	assert_int_equal(cfg->tls_policy.min_version, 0x0303);
	assert_false(cfg->tls_policy.ignore_client_order);
	assert_int_equal(cfg->tls_policy.disable_cipher_suites.len, 0);

	/* [destination] */
	const sy_destination_config *d = config_destination(cfg, "main");
	assert_non_null(d);
	assert_string_equal(d->host, "mail.example.com");
	assert_false(d->host_is_ip);
	assert_null(d->tls_server_name);
	assert_true(d->proxy_protocol);
	assert_int_equal(d->forwarding, SY_FWD_PROXY);
	assert_false(d->has_pin);
	assert_false(d->tls_allow_invalid_certs);
	assert_null(d->tls_client_cert);
	assert_false(d->allow_plaintext_auth);
	assert_int_equal(d->nsource_ips, 0);
	assert_false(d->hide_auth_errors);
	assert_false(d->forwarded);
	assert_true(d->proto[SY_PROTO_IMAP].declared);
	assert_int_equal(d->proto[SY_PROTO_IMAP].port, 993);
	assert_int_equal(d->proto[SY_PROTO_IMAP].tls, SY_TLS_IMPLICIT);
	assert_int_equal(d->proto[SY_PROTO_IMAP].forwarding, SY_FWD_UNSET);
	assert_false(d->proto[SY_PROTO_POP3].declared);
	assert_int_equal(sy_destination_forwarding(d, SY_PROTO_IMAP), SY_FWD_PROXY);

	/* [routing] */
	assert_string_equal(cfg->routing.default_destination, "main");
	assert_null(cfg->routing.smtp_passthrough_destination);
	assert_int_equal(cfg->routing.master_user_separators.len, 1);
	assert_string_equal(cfg->routing.master_user_separators.items[0], "%");

	/* [mapping] */
	const sy_mapping_config *m = &cfg->mapping;
	assert_int_equal(m->source, SY_MAP_NONE);
	assert_int_equal(m->normalize, SY_NORMALIZE_NONE);
	assert_int_equal(m->positive_ttl_ms, 600000);
	assert_int_equal(m->negative_ttl_ms, 30000);
	assert_int_equal(m->cache_max_entries, 1000000);
	assert_int_equal(m->lookup_timeout_ms, 5000);
	assert_int_equal(m->on_store_error, SY_STORE_ERR_TEMPFAIL);
	assert_null(m->file.path);
	assert_null(m->redis.url);
	assert_string_equal(m->redis.key_prefix, "route:");
	assert_int_equal(m->redis.pool_size, 16);
	assert_null(m->sql.url);
	assert_string_equal(m->sql.query, "SELECT destination FROM routes WHERE identifier = $1");
	assert_null(m->sql.upsert_query);
	assert_null(m->sql.delete_query);
	assert_int_equal(m->sql.pool_size, 16);
	assert_null(m->redis.events_channel);
	assert_false(m->redis.watch_keyspace);
	assert_null(m->redis.tls_ca_file);
	assert_null(m->redis.tls_server_name);
	assert_false(m->redis.tls_allow_invalid_certs);
	assert_null(m->redis.tls_client_cert);
	assert_null(m->redis.tls_client_key);
	assert_null(m->sql.events_channel);

	/* [capabilities.*] */
	static const sy_proto caps[] = {SY_PROTO_IMAP, SY_PROTO_POP3, SY_PROTO_SUBMISSION,
	                                SY_PROTO_MANAGESIEVE};
	for (size_t i = 0; i < 4; i++) {
		const sy_caps_config *c = &cfg->caps[caps[i]];
		assert_int_equal(c->sasl.len, 3);
		assert_string_equal(c->sasl.items[0], "PLAIN");
		assert_string_equal(c->sasl.items[1], "OAUTHBEARER");
		assert_string_equal(c->sasl.items[2], "XOAUTH2");
		assert_false(c->allow_plain_auth_without_tls);
		assert_non_null(c->banner);
	}
	assert_string_equal(cfg->caps[SY_PROTO_IMAP].banner, "Switchyard IMAP4rev2 ready.");
	assert_string_equal(cfg->caps[SY_PROTO_POP3].banner, "Switchyard POP3 ready.");
	assert_string_equal(cfg->caps[SY_PROTO_SUBMISSION].banner, "Switchyard ESMTP ready");
	assert_string_equal(cfg->caps[SY_PROTO_MANAGESIEVE].implementation, "Switchyard");
	assert_int_equal(cfg->caps[SY_PROTO_IMAP].advertise.len, 7);
	assert_string_equal(cfg->caps[SY_PROTO_IMAP].advertise.items[0], "IMAP4rev1");
	assert_string_equal(cfg->caps[SY_PROTO_IMAP].advertise.items[6], "IDLE");
	assert_int_equal(cfg->caps[SY_PROTO_MANAGESIEVE].sieve.len, 15);
	assert_string_equal(cfg->caps[SY_PROTO_MANAGESIEVE].sieve.items[5],
	                    "comparator-i;ascii-numeric");
	assert_int_equal(cfg->caps[SY_PROTO_SUBMISSION].ehlo.len, 5);
	assert_string_equal(cfg->caps[SY_PROTO_SUBMISSION].ehlo.items[4], "SIZE 52428800");

	/* [oauth] */
	assert_string_equal(cfg->oauth.jwt_username_claim, "email");

	/* [http] */
	assert_int_equal(cfg->http.nroutes, 0);
	assert_int_equal(cfg->http.body_extract_cap, 65536);
	assert_int_equal(cfg->http.max_head_size, 65536);
	assert_int_equal(cfg->http.relay_idle_ms, 60000);
	assert_int_equal(cfg->http.keepalive_timeout_ms, 75000);
	assert_int_equal(cfg->http.max_keepalive_requests, 1000);

	/* [admin] */
	assert_false(cfg->admin.enabled);
	assert_string_equal(cfg->admin.bind.text, "127.0.0.1:9443");
	assert_int_equal(cfg->admin.bind.addr.ss_family, AF_INET);
	assert_true(cfg->admin.tls);
	assert_false(cfg->admin.allow_plaintext);
	assert_null(cfg->admin.token);
	assert_int_equal(cfg->admin.min_token_len, 32);
	assert_int_equal(cfg->admin.lockout_threshold, 5);
	assert_int_equal(cfg->admin.lockout_duration_ms, 300000);

	assert_int_equal(cfg->nlisteners, 0);
	assert_int_equal(cfg->nclusters, 0);
	assert_null(cfg->path);
	assert_string_equal(cfg->basedir, tmpdir);
	config_free(cfg);
}

static void test_listener_and_table_defaults(void **state)
{
	(void)state;
	sy_config *cfg = load_ok(
	    BASE IMAP_LISTENER "[mapping]\nsource = \"file\"\n[mapping.file]\npath = \"map.tsv\"\n"
	                       "[destination.other]\nhost = \"other.example.com\"\n"
	                       "[destination.other.protocol.imap]\nport = 993\ntls = \"implicit\"\n"
	                       "[admin]\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n"
	                       "[destination.pod]\nhost = \"pod.invalid\"\n"
	                       "tls_server_name = \"mail.example.com\"\n"
	                       "[destination.pod.protocol.imap]\nport = 993\ntls = \"implicit\"\n"
	                       "[cluster.c]\ntemplate = \"pod\"\n[cluster.c.kubernetes]\n"
	                       "service = \"stalwart\"\n");
	const sy_listener_config *l = &cfg->listeners[0];
	assert_string_equal(l->name, "i");
	assert_int_equal(l->protocol, SY_PROTO_IMAP);
	assert_int_equal(l->tls, SY_TLS_IMPLICIT);
	assert_int_equal(l->nbinds, 1);
	assert_string_equal(l->binds[0].text, "127.0.0.1:10993");
	assert_int_equal(l->proxy_protocol, SY_PROXY_OFF);
	assert_int_equal(l->nproxy_trusted, 0);
	assert_int_equal(l->max_connections, 8192);
	assert_int_equal(l->preauth_timeout_ms, 30000);
	assert_int_equal(l->max_auth_attempts, 3);
	assert_false(l->forwarded_trust);

	/* [mapping.file]: the path resolves against the base directory. */
	char want[256];
	snprintf(want, sizeof(want), "%s/map.tsv", tmpdir);
	assert_int_equal(cfg->mapping.source, SY_MAP_FILE);
	assert_string_equal(cfg->mapping.file.path, want);

	/* [admin] present: enabled with the inline token. */
	assert_true(cfg->admin.enabled);
	assert_string_equal(cfg->admin.token, "0123456789abcdef0123456789abcdef");

	/* [cluster.c.kubernetes] */
	const sy_cluster_config *cl = config_cluster(cfg, "c");
	assert_non_null(cl);
	assert_true(cl->has_kubernetes);
	assert_string_equal(cl->kubernetes.service, "stalwart");
	assert_null(cl->kubernetes.namespace_);
	assert_null(cl->kubernetes.api_url);
	assert_null(cl->kubernetes.token_file);
	assert_int_equal(cl->kubernetes.watch_timeout_ms, 300000);
	assert_int_equal(cl->kubernetes.backoff_initial_ms, 500);
	assert_int_equal(cl->kubernetes.backoff_max_ms, 30000);
	assert_int_equal(cl->kubernetes.token_refresh_ms, 60000);
	assert_int_equal(cl->nodes.len, 0);
	assert_true(config_is_target(cfg, "c"));
	assert_true(config_target_has_proto(cfg, "c", SY_PROTO_IMAP));
	assert_false(config_target_has_proto(cfg, "c", SY_PROTO_POP3));
	assert_false(config_is_target(cfg, "nope"));
	config_free(cfg);
}

/* ---- Explicit values ----------------------------------------------------- */

static void test_explicit_values(void **state)
{
	(void)state;
	sy_config *cfg = load_ok(
	    "[server]\nthreads = 4\nhostname = \"mx.example.com\"\nshutdown_grace = \"45s\"\n"
	    "bridge_idle = \"1h\"\nbackend_timeout = \"1500ms\"\nbackend_connect_retries = 0\n"
	    "host_down_threshold = 0\nhost_down_cooldown = \"2m\"\nproxy_ttl = 3\n"
	    "log_level = \"info,switchyard=debug\"\nlog_format = \"json\"\n"
	    "[tls.certificate.a]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
	    "subjects = [\"mail.example.com\"]\ndefault = true\n"
	    "[tls.protocols]\nmin_version = \"1.3\"\nignore_client_order = true\n"
	    "disable_cipher_suites = [\"TLS_AES_128_GCM_SHA256\"]\n"
	    "[routing]\ndefault_destination = \"main\"\nsmtp_passthrough_destination = \"main\"\n"
	    "master_user_separators = [\"%\", \"*\"]\n"
	    "[destination.main]\nhost = \"[2001:db8::1]\"\ntls_server_name = \"mail.example.com\"\n"
	    "proxy_protocol = false\nforwarding = \"xclient\"\n"
	    "tls_pinned_cert_sha256 = "
	    "\"00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:AA:BB:"
	    "CC:"
	    "DD:EE:FF\"\n"
	    "tls_allow_invalid_certs = true\ntls_client_cert = \"cert.pem\"\n"
	    "tls_client_key = \"key.pem\"\nallow_plaintext_auth = true\n"
	    "source_ips = [\"10.0.2.5\", \"2001:db8::5\"]\nhide_auth_errors = true\nforwarded = "
	    "true\n"
	    "[destination.main.protocol.imap]\nport = 143\ntls = \"plain\"\nforwarding = "
	    "\"proxy\"\n"
	    "[destination.main.protocol.pop3]\nport = 995\ntls = \"implicit\"\n"
	    "[destination.main.protocol.smtp]\nport = 25\ntls = \"plain\"\n"
	    "[destination.main.protocol.http]\nport = 443\ntls = \"starttls\"\n"
	    "[listener.h]\nprotocol = \"http\"\nbind = \"127.0.0.1:8443\"\ntls = \"implicit\"\n"
	    "forwarded = \"trust\"\nproxy_protocol = \"required\"\n"
	    "proxy_trusted = [\"10.1.2.3/8\", \"::1\"]\nmax_connections = 10\n"
	    "preauth_timeout = \"5s\"\nmax_auth_attempts = 1\n"
	    "[mapping]\nsource = \"redis\"\nnormalize = \"lowercase\"\npositive_ttl = \"1d\"\n"
	    "negative_ttl = \"0s\"\ncache_max_entries = 10\nlookup_timeout = \"250ms\"\n"
	    "on_store_error = \"default\"\n"
	    "[mapping.redis]\nurl = \"redis://r.example.com:6380\"\nkey_prefix = \"\"\npool_size "
	    "= 2\n"
	    "[capabilities.imap]\nsasl = [\"plain\", \"Login\"]\nallow_plain_auth_without_tls = "
	    "true\n"
	    "banner = \"hi\"\nadvertise = [\"IMAP4rev1\"]\n"
	    "[capabilities.submission]\nehlo = [\"PIPELINING\"]\n"
	    "[capabilities.managesieve]\nsieve = [\"fileinto\"]\nimplementation = \"X\"\n"
	    "banner = \"sieve\"\n"
	    "[oauth]\njwt_username_claim = \"upn\"\n"
	    "[http]\nbody_extract_cap = 1024\nmax_head_size = 2048\nrelay_idle = \"10s\"\n"
	    "keepalive_timeout = \"0s\"\nmax_keepalive_requests = 0\n"
	    "[[http.route]]\nmatch = \"/**\"\nextract = { from = \"authorization\" }\n"
	    "fallback = \"default\"\n"
	    "[[http.route]]\nmatch = \"/q\"\nextract = { from = \"query\", param = \"u\" }\n"
	    "[[http.route]]\nmatch = \"/b\"\n"
	    "[http.route.extract]\nfrom = \"body\"\nregex = \"user=([^&]+)\"\n"
	    "[admin]\nbind = \"[::1]:9444\"\ntls = \"plain\"\nallow_plaintext = true\n"
	    "bearer_token_file = \"token.txt\"\nmin_token_len = 8\nlockout_threshold = 2\n"
	    "lockout_duration = \"1m\"\n");

	assert_int_equal(cfg->server.threads, 4);
	assert_string_equal(cfg->server.hostname, "mx.example.com");
	assert_int_equal(cfg->server.shutdown_grace_ms, 45000);
	assert_int_equal(cfg->server.bridge_idle_ms, 3600000);
	assert_int_equal(cfg->server.backend_timeout_ms, 1500);
	assert_int_equal(cfg->server.backend_connect_retries, 0);
	assert_int_equal(cfg->server.host_down_threshold, 0);
	assert_int_equal(cfg->server.host_down_cooldown_ms, 120000);
	assert_int_equal(cfg->server.proxy_ttl, 3);
	assert_int_equal(cfg->server.log_level, SY_LOG_INFO);
	assert_int_equal(cfg->server.log_format, SY_LOG_JSON);

	char want[256];
	assert_int_equal(cfg->ncerts, 1);
	assert_string_equal(cfg->certs[0].name, "a");
	snprintf(want, sizeof(want), "%s/cert.pem", tmpdir);
	assert_string_equal(cfg->certs[0].cert_path, want);
	assert_true(cfg->certs[0].is_default);
	assert_int_equal(cfg->certs[0].subjects.len, 1);
	assert_int_equal(cfg->tls_policy.min_version, 0x0304);
	assert_true(cfg->tls_policy.ignore_client_order);

	const sy_destination_config *d = config_destination(cfg, "main");
	assert_string_equal(d->host, "2001:db8::1");
	assert_true(d->host_is_ip);
	assert_int_equal(d->forwarding, SY_FWD_XCLIENT);
	assert_true(d->has_pin);
	assert_int_equal(d->tls_pinned_cert_sha256[0], 0x00);
	assert_int_equal(d->tls_pinned_cert_sha256[10], 0xaa);
	assert_int_equal(d->tls_pinned_cert_sha256[31], 0xff);
	assert_int_equal(d->nsource_ips, 2);
	assert_int_equal(d->source_ips[1].addr.ss_family, AF_INET6);
	assert_true(d->hide_auth_errors && d->forwarded && d->allow_plaintext_auth);
	assert_int_equal(sy_destination_forwarding(d, SY_PROTO_IMAP), SY_FWD_PROXY);
	assert_int_equal(sy_destination_forwarding(d, SY_PROTO_POP3), SY_FWD_XCLIENT);
	/* A destination-wide xclient never reaches a pass-through leg. */
	assert_int_equal(sy_destination_forwarding(d, SY_PROTO_SMTP), SY_FWD_NONE);
	assert_int_equal(d->proto[SY_PROTO_HTTP].tls, SY_TLS_STARTTLS);

	assert_int_equal(cfg->routing.master_user_separators.len, 2);
	const sy_listener_config *l = &cfg->listeners[0];
	assert_true(l->forwarded_trust);
	assert_int_equal(l->proxy_protocol, SY_PROXY_REQUIRED);
	assert_int_equal(l->nproxy_trusted, 2);
	assert_int_equal(l->proxy_trusted[0].addr[1], 0); /* host bits cleared */
	assert_int_equal(l->proxy_trusted[1].prefix, 128);
	assert_int_equal(l->max_connections, 10);
	assert_int_equal(l->preauth_timeout_ms, 5000);
	assert_int_equal(l->max_auth_attempts, 1);

	assert_int_equal(cfg->mapping.source, SY_MAP_REDIS);
	assert_int_equal(cfg->mapping.normalize, SY_NORMALIZE_LOWERCASE);
	assert_int_equal(cfg->mapping.positive_ttl_ms, 86400000);
	assert_int_equal(cfg->mapping.negative_ttl_ms, 0);
	assert_int_equal(cfg->mapping.on_store_error, SY_STORE_ERR_DEFAULT);
	assert_string_equal(cfg->mapping.redis.key_prefix, "");
	assert_int_equal(cfg->mapping.redis.pool_size, 2);

	const sy_caps_config *ci = &cfg->caps[SY_PROTO_IMAP];
	assert_int_equal(ci->sasl.len, 2);
	assert_string_equal(ci->sasl.items[0], "PLAIN");
	assert_string_equal(ci->sasl.items[1], "LOGIN");
	assert_true(ci->allow_plain_auth_without_tls);
	assert_string_equal(ci->banner, "hi");
	assert_string_equal(cfg->caps[SY_PROTO_MANAGESIEVE].banner, "sieve");
	assert_string_equal(cfg->caps[SY_PROTO_MANAGESIEVE].implementation, "X");
	assert_int_equal(cfg->caps[SY_PROTO_SUBMISSION].ehlo.len, 1);
	/* Untouched tables keep their defaults. */
	assert_string_equal(cfg->caps[SY_PROTO_POP3].banner, "Switchyard POP3 ready.");
	assert_string_equal(cfg->oauth.jwt_username_claim, "upn");

	assert_int_equal(cfg->http.body_extract_cap, 1024);
	assert_int_equal(cfg->http.max_keepalive_requests, 0);
	assert_int_equal(cfg->http.keepalive_timeout_ms, 0);
	assert_int_equal(cfg->http.nroutes, 3);
	assert_int_equal(cfg->http.routes[0].extract, SY_HTTP_EXTRACT_AUTHORIZATION);
	assert_null(cfg->http.routes[0].fallback); /* "default" = the default destination */
	assert_int_equal(cfg->http.routes[1].extract, SY_HTTP_EXTRACT_QUERY);
	assert_string_equal(cfg->http.routes[1].param, "u");
	assert_int_equal(cfg->http.routes[2].extract, SY_HTTP_EXTRACT_BODY);
	assert_string_equal(cfg->http.routes[2].regex, "user=([^&]+)");

	assert_false(cfg->admin.tls);
	assert_int_equal(cfg->admin.bind.addr.ss_family, AF_INET6);
	assert_string_equal(cfg->admin.token, "file-token-0123456789abcdef0123456789");
	assert_int_equal(cfg->admin.lockout_duration_ms, 60000);
	config_free(cfg);
}

static void test_forwarding_inference(void **state)
{
	(void)state;
	sy_config *cfg =
	    load_ok(BASE "[destination.a]\nhost = \"a.example.com\"\nproxy_protocol = false\n"
	                 "[destination.b]\nhost = \"b.example.com\"\nproxy_protocol = false\n"
	                 "forwarding = \"proxy\"\n"
	                 "[destination.c]\nhost = \"c.example.com\"\nforwarding = \"none\"\n"
	                 "[destination.c.protocol.pop3]\nport = 995\ntls = \"implicit\"\n"
	                 "forwarding = \"xclient\"\n");
	assert_int_equal(config_destination(cfg, "a")->forwarding, SY_FWD_NONE);
	assert_int_equal(config_destination(cfg, "b")->forwarding, SY_FWD_PROXY);
	assert_int_equal(sy_destination_forwarding(config_destination(cfg, "c"), SY_PROTO_POP3),
	                 SY_FWD_XCLIENT);
	assert_int_equal(sy_destination_forwarding(config_destination(cfg, "c"), SY_PROTO_IMAP),
	                 SY_FWD_NONE);
	config_free(cfg);
}

/* The reference accepts forwarding = "xclient" on a pass-through leg and
 * ignores it: so does this proxy, with a warning naming the key, and the
 * leg then forwards nothing (no PROXY header, and never XCLIENT). */
static void test_passthrough_xclient_is_a_warning(void **state)
{
	(void)state;
	sy_config *cfg = load_ok(
	    ROUTING
	    "smtp_passthrough_destination = \"relay\"\n" MAIN RELAY
	    "[destination.relay.protocol.lmtp]\nport = 24\ntls = \"plain\"\n"
	    "forwarding = \"xclient\"\n"
	    "[listener.l]\nprotocol = \"lmtp\"\nbind = [\"127.0.0.1:24\"]\ntls = \"plain\"\n");
	assert_int_equal(cfg->warnings.len, 1);
	assert_non_null(strstr(cfg->warnings.msgs[0],
	                       "destination.relay.protocol.lmtp.forwarding: "
	                       "\"xclient\" has no effect on a pass-through leg"));
	assert_int_not_equal(
	    sy_destination_forwarding(config_destination(cfg, "relay"), SY_PROTO_LMTP),
	    SY_FWD_PROXY);
	config_free(cfg);
	/* A configuration without such a key has no warnings. */
	cfg = load_ok(BASE);
	assert_int_equal(cfg->warnings.len, 0);
	config_free(cfg);
}

/* rediss:// with its TLS keys: paths resolve against the config directory,
 * and tls_allow_invalid_certs is accepted with a warning. */
static void test_redis_tls_keys(void **state)
{
	(void)state;
	sy_config *cfg = load_ok(BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\n"
	                              "url = \"rediss://:pw@10.0.0.5:6380/1\"\n"
	                              "tls_ca_file = \"cert.pem\"\n"
	                              "tls_server_name = \"redis.example.com\"\n"
	                              "tls_client_cert = \"cert2.pem\"\n"
	                              "tls_client_key = \"key2.pem\"\n");
	char want[300];
	const sy_mapping_config *m = &cfg->mapping;
	snprintf(want, sizeof(want), "%s/cert.pem", tmpdir);
	assert_string_equal(m->redis.tls_ca_file, want);
	assert_string_equal(m->redis.tls_server_name, "redis.example.com");
	snprintf(want, sizeof(want), "%s/cert2.pem", tmpdir);
	assert_string_equal(m->redis.tls_client_cert, want);
	snprintf(want, sizeof(want), "%s/key2.pem", tmpdir);
	assert_string_equal(m->redis.tls_client_key, want);
	assert_false(m->redis.tls_allow_invalid_certs);
	assert_int_equal(cfg->warnings.len, 0);
	config_free(cfg);

	/* A bare rediss:// URL needs nothing else (platform trust store). */
	cfg = load_ok(BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\n"
	                   "url = \"rediss://redis.example.com\"\n");
	assert_int_equal(cfg->warnings.len, 0);
	config_free(cfg);

	cfg =
	    load_ok(BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\n"
	                 "url = \"rediss://redis.example.com\"\ntls_allow_invalid_certs = true\n");
	assert_true(cfg->mapping.redis.tls_allow_invalid_certs);
	assert_int_equal(cfg->warnings.len, 1);
	assert_non_null(strstr(cfg->warnings.msgs[0], "mapping.redis.tls_allow_invalid_certs: "
	                                              "the Redis server's certificate is not "
	                                              "verified"));
	config_free(cfg);
}

/* ---- Durations, addresses, enums ----------------------------------------- */

static void test_durations(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		uint64_t ms;
	} good[] = {
	    {"0s", 0},
	    {"250ms", 250},
	    {"1s", 1000},
	    {"30s", 30000},
	    {"10m", 600000},
	    {"1h", 3600000},
	    {"2d", 172800000},
	    {"0ms", 0},
	    {"007s", 7000},
	    {"18446744073709551615ms", UINT64_MAX},
	    /* Blanks around the parts, as the reference accepts. */
	    {" 1s", 1000},
	    {"1s ", 1000},
	    {"30 s", 30000},
	    {"\t5m", 300000},
	};
	static const char *const bad[] = {
	    "",
	    "s",
	    "10",
	    "10x",
	    "-1s",
	    "1.5s",
	    "1S",
	    "1sec",
	    "1m30s",
	    "+1s",
	    "ms",
	    "1msx",
	    "1 m s",
	    "1 0s",
	    "0x10s",
	    "18446744073709551616ms", /* > 2^64-1 */
	    "213503982335d",          /* overflows when scaled to ms */
	    "5124095576030432h",
	    "99999999999999999999s",
	};
	uint64_t ms;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ms = 12345;
		assert_int_equal(sy_duration_parse(good[i].text, &ms), 0);
		assert_true(ms == good[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (sy_duration_parse(bad[i], &ms) == 0)
			fail_msg("duration \"%s\" was accepted", bad[i]);
	}
	assert_int_equal(sy_duration_parse(NULL, &ms), -1);
	/* The largest day count that still fits. */
	assert_int_equal(sy_duration_parse("213503982334d", &ms), 0);
}

static void test_sockaddr_parse(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	socklen_t len;

	assert_int_equal(sy_sockaddr_parse("127.0.0.1:993", false, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 993);

	assert_int_equal(sy_sockaddr_parse("[::]:143", false, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 143);
	assert_int_equal(sy_sockaddr_parse("[fe80::1%1]:143", false, &ss, &len), 0);
	assert_int_equal(((struct sockaddr_in6 *)&ss)->sin6_scope_id, 1);

	assert_int_equal(sy_sockaddr_parse("10.0.0.1", true, &ss, &len), 0);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 0);
	assert_int_equal(sy_sockaddr_parse("2001:db8::1", true, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(sy_sockaddr_parse("[2001:db8::1]", true, &ss, &len), 0);

	static const char *const bad[] = {
	    "10.0.0.1",  "2001:db8::1",    "[::1]",          "localhost:993",
	    "10.0.0.1:", "10.0.0.1:65536", "10.0.0.1:-1",    "10.0.0.1:9x",
	    "10.1:993",  "[::1:993",       "[::1]993",       "::1:993",
	    "",          "[]:1",           "1.2.3.4:123456", "*:993",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (sy_sockaddr_parse(bad[i], false, &ss, &len) == 0)
			fail_msg("address \"%s\" was accepted", bad[i]);
	}
	assert_int_equal(sy_sockaddr_parse("host.example.com", true, &ss, &len), -1);
	assert_int_equal(sy_sockaddr_parse("10.0.0.1:0", false, &ss, &len), 0);
}

static void test_enum_helpers(void **state)
{
	(void)state;
	sy_proto p;
	for (int i = 0; i < SY_PROTO_COUNT; i++) {
		assert_int_equal(sy_proto_parse(sy_proto_name((sy_proto)i), &p), 0);
		assert_int_equal(p, i);
	}
	assert_int_equal(sy_proto_parse("imaps", &p), -1);
	assert_null(sy_proto_name(SY_PROTO_COUNT));
	assert_string_equal(sy_proto_name(SY_PROTO_MANAGESIEVE), "managesieve");
	assert_true(sy_proto_carries_credentials(SY_PROTO_HTTP));
	assert_true(sy_proto_carries_credentials(SY_PROTO_SUBMISSION));
	assert_false(sy_proto_carries_credentials(SY_PROTO_SMTP));
	assert_true(sy_proto_is_passthrough(SY_PROTO_LMTP));
	assert_false(sy_proto_is_passthrough(SY_PROTO_IMAP));
	assert_string_equal(sy_tls_mode_name(SY_TLS_STARTTLS), "starttls");
	assert_string_equal(sy_forwarding_name(SY_FWD_XCLIENT), "xclient");
}

static void test_tls_ciphers(void **state)
{
	(void)state;
	sy_tls_policy p = {.min_version = 0x0303};
	char *list = NULL, *suites = NULL;
	char *names[] = {"TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
	                 "tls_ecdhe_ecdsa_with_aes_256_gcm_sha384"};

	p.disable_cipher_suites.items = names;
	p.disable_cipher_suites.len = 3;
	assert_int_equal(config_tls_ciphers(&p, &list, &suites, NULL), 0);
	assert_non_null(list);
	assert_non_null(suites);
	assert_null(strstr(suites, "TLS_AES_128_GCM_SHA256"));
	assert_non_null(strstr(suites, "TLS_AES_256_GCM_SHA384"));
	assert_null(strstr(list, "ECDHE-RSA-AES128-GCM-SHA256"));
	assert_null(strstr(list, "ECDHE-ECDSA-AES256-GCM-SHA384"));
	assert_non_null(strstr(list, "ECDHE-RSA-AES256-GCM-SHA384"));
	free(list);
	free(suites);

	/* TLS 1.3 only: no TLS 1.2 list at all. */
	p.min_version = 0x0304;
	p.disable_cipher_suites.len = 0;
	assert_int_equal(config_tls_ciphers(&p, &list, &suites, NULL), 0);
	assert_null(list);
	assert_non_null(strstr(suites, "TLS_CHACHA20_POLY1305_SHA256"));
	free(suites);

	char *bogus[] = {"TLS_FOO_BAR"};
	sy_errors errs = {0};
	p.disable_cipher_suites.items = bogus;
	p.disable_cipher_suites.len = 1;
	assert_int_equal(config_tls_ciphers(&p, &list, &suites, &errs), -1);
	assert_true(has_msg(&errs, "tls.protocols.disable_cipher_suites[0]: unknown cipher suite"));
	sy_errors_free(&errs);
}

/* ---- One failing config per rule ------------------------------------------ */

typedef struct bad_case {
	const char *toml;
	const char *expect; /* substring of one message; starts with the key */
} bad_case;

static const bad_case bad_cases[] = {
    /* Syntax. */
    {"[server\n", "config: line 1"},

    /* Unknown keys, anywhere. */
    {BASE "[listener.imap]\nprotocol = \"imap\"\nprotcol = \"imap\"\nbind = "
          "[\"127.0.0.1:993\"]\ntls = \"implicit\"\n",
     "listener.imap.protcol: unknown key"},
    {BASE "[frobnicate]\nx = 1\n", "frobnicate: unknown key"},
    {BASE "[server]\nthread = 1\n", "server.thread: unknown key"},
    {BASE "[tls]\ncertificates = {}\n", "tls.certificates: unknown key"},
    {BASE "[tls.protocols]\nmin = \"1.2\"\n", "tls.protocols.min: unknown key"},
    {BASE "[destination.main.protocol.imaps]\nport = 1\ntls = \"plain\"\n",
     "destination.main.protocol.imaps: unknown key"},
    {ROUTING "[destination.main]\nhost = \"m\"\n[destination.main.protocol.imap]\nport = 993\n"
             "tls = \"implicit\"\nsni = \"x\"\n",
     "destination.main.protocol.imap.sni: unknown key"},
    {BASE "[capabilities.smtp]\nbanner = \"x\"\n", "capabilities.smtp: unknown key"},
    {BASE "[capabilities.pop3]\nadvertise = []\n", "capabilities.pop3.advertise: unknown key"},
    {BASE "[mapping]\nsource = \"file\"\n[mapping.file]\npath = \"map.tsv\"\nreload = true\n",
     "mapping.file.reload: unknown key"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { frm = \"query\" }\n",
     "http.route[0].extract.frm: unknown key"},
    {BASE "[admin]\nbearer_token = \"0123456789abcdef0123456789abcdef\"\ntoken = \"x\"\n",
     "admin.token: unknown key"},
    {BASE "[cluster.c]\ntemplate = \"main\"\nnodes = [\"main\"]\nweight = 1\n",
     "cluster.c.weight: unknown key"},
    {BASE "[oauth]\nclaim = \"email\"\n", "oauth.claim: unknown key"},
    {BASE "[destination.\"a.b\"]\nhost = \"x\"\nport = 1\n",
     "destination.\"a.b\".port: unknown key"},

    /* Names that need quoting are quoted the same way in every message. */
    {BASE "[destination.\"a.b\"]\nhost = \"10.0.0.9\"\n"
          "[destination.\"a.b\".protocol.imap]\nport = 993\ntls = \"implicit\"\n",
     "destination.\"a.b\".tls_server_name: required"},
    /* Wrong types and enum values. */
    {BASE "[server]\nthreads = \"4\"\n", "server.threads: expected an integer, found a string"},
    {BASE "[server]\nhostname = 5\n", "server.hostname: expected a string, found an integer"},
    {BASE "[server]\nbridge_idle = 30\n", "server.bridge_idle: expected a duration string"},
    {BASE "[server]\nshutdown_grace = \"10x\"\n",
     "server.shutdown_grace: \"10x\" is not a duration"},
    {BASE "[server]\nhost_down_cooldown = \"1.5s\"\n", "server.host_down_cooldown: \"1.5s\""},
    {BASE "[server]\nlog_format = \"xml\"\n",
     "server.log_format: invalid value \"xml\"; allowed values: \"text\", \"json\""},
    {BASE "[server]\nlog_level = \"loud\"\n", "server.log_level: invalid value \"loud\""},
    {BASE "[destination.main.protocol.pop3]\nport = 995\ntls = \"ssl\"\n",
     "destination.main.protocol.pop3.tls: invalid value \"ssl\"; allowed values: \"implicit\", "
     "\"starttls\", \"plain\""},
    {BASE "[destination.x]\nhost = \"x\"\nforwarding = \"haproxy\"\n",
     "destination.x.forwarding: invalid value \"haproxy\"; allowed values: \"proxy\", "
     "\"xclient\", \"none\""},
    {BASE "[destination.x]\nhost = \"x\"\nproxy_protocol = \"yes\"\n",
     "destination.x.proxy_protocol: expected a boolean"},
    {BASE "[listener.i]\nprotocol = \"imap4\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n",
     "listener.i.protocol: invalid value \"imap4\"; allowed values: \"imap\", \"pop3\""},
    {BASE IMAP_LISTENER "[listener.j]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:2\"]\n"
                        "tls = \"implicit\"\nproxy_protocol = true\n",
     "listener.j.proxy_protocol: expected a string"},
    {BASE "[listener.h]\nprotocol = \"http\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "forwarded = \"yes\"\n[[http.route]]\nmatch = \"/\"\ndestination = \"main\"\n",
     "listener.h.forwarded: invalid value \"yes\""},
    {BASE "[tls.protocols]\nmin_version = \"1.1\"\n",
     "tls.protocols.min_version: invalid value \"1.1\"; allowed values: \"1.2\", \"1.3\""},
    {BASE "[tls.protocols]\nmin_version = 1.3\n", "tls.protocols.min_version: expected a string"},
    {BASE "[mapping]\nsource = \"ldap\"\n",
     "mapping.source: invalid value \"ldap\"; allowed values: \"file\", \"redis\", \"sql\""},
    {BASE "[mapping]\nsource = \"file\"\nnormalize = \"upper\"\n[mapping.file]\npath = "
          "\"map.tsv\"\n",
     "mapping.normalize: invalid value"},
    {BASE "[mapping]\nsource = \"file\"\non_store_error = \"ignore\"\n[mapping.file]\npath = "
          "\"map.tsv\"\n",
     "mapping.on_store_error: invalid value \"ignore\"; allowed values: \"tempfail\", \"default\""},
    {BASE "[admin]\ntls = \"starttls\"\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n",
     "admin.tls: invalid value \"starttls\"; allowed values: \"implicit\", \"plain\""},
    {BASE "[capabilities.imap]\nsasl = [\"PLAIN\", \"CRAM-MD5\"]\n",
     "capabilities.imap.sasl[1]: unsupported SASL mechanism \"CRAM-MD5\""},
    {BASE "[capabilities.imap]\nadvertise = [\"ID\", 5]\n",
     "capabilities.imap.advertise[1]: expected a string"},
    {BASE "[listener]\ni = 5\n", "listener.i: expected a table"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { from = \"cookie\" }\n",
     "http.route[0].extract.from: invalid value \"cookie\""},
    {BASE "[destination.\"a b\"]\nhost = \"x\"\n", "destination.\"a b\": the name contains"},
    {BASE "[server]\nhostname = \"\"\n", "server.hostname: must not be empty"},

    /* Negative and zero values. */
    {BASE "[server]\nthreads = -1\n", "server.threads: must not be negative"},
    {BASE "[server]\nhost_down_threshold = -5\n",
     "server.host_down_threshold: must not be negative"},
    {BASE "[server]\nbackend_connect_retries = -1\n",
     "server.backend_connect_retries: must not be negative"},
    {BASE "[server]\nproxy_ttl = 0\n", "server.proxy_ttl: must be greater than 0"},
    {BASE "[server]\nbackend_timeout = \"0s\"\n", "server.backend_timeout: must be longer than 0"},
    {BASE "[server]\nthreads = 5000000000\n", "server.threads: 5000000000 is too large"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "max_connections = 0\n",
     "listener.i.max_connections: must be greater than 0"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "max_auth_attempts = 0\n",
     "listener.i.max_auth_attempts: must be greater than 0"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "preauth_timeout = \"0ms\"\n",
     "listener.i.preauth_timeout: must be longer than 0"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r\"\npool_size = 0\n",
     "mapping.redis.pool_size: must be greater than 0"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"postgres://p\"\npool_size = 0\n",
     "mapping.sql.pool_size: must be greater than 0"},
    {BASE "[mapping]\nsource = \"file\"\ncache_max_entries = 0\n[mapping.file]\npath = "
          "\"map.tsv\"\n",
     "mapping.cache_max_entries: must be greater than 0"},
    {BASE "[mapping]\nsource = \"file\"\nlookup_timeout = \"0s\"\n[mapping.file]\npath = "
          "\"map.tsv\"\n",
     "mapping.lookup_timeout: must be longer than 0"},
    {BASE "[mapping]\nsource = \"file\"\ncache_max_entries = -3\n[mapping.file]\npath = "
          "\"map.tsv\"\n",
     "mapping.cache_max_entries: must not be negative"},
    {BASE "[admin]\nmin_token_len = 0\nbearer_token = \"x\"\n",
     "admin.min_token_len: must be greater than 0"},
    {BASE "[admin]\nlockout_threshold = 0\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n",
     "admin.lockout_threshold: must be greater than 0"},
    {BASE "[http]\nbody_extract_cap = 0\n", "http.body_extract_cap: must be greater than 0"},
    {BASE "[http]\nmax_head_size = 0\n", "http.max_head_size: must be greater than 0"},
    {BASE "[http]\nmax_keepalive_requests = -1\n",
     "http.max_keepalive_requests: must not be negative"},
    {ROUTING "[destination.main]\nhost = \"m\"\n[destination.main.protocol.imap]\nport = 0\n"
             "tls = \"implicit\"\n",
     "destination.main.protocol.imap.port: must be greater than 0"},
    {ROUTING "[destination.main]\nhost = \"m\"\n[destination.main.protocol.imap]\nport = 70000\n"
             "tls = \"implicit\"\n",
     "destination.main.protocol.imap.port: 70000 is too large"},

    /* Required keys. */
    {BASE "[destination.x]\ntls_server_name = \"x\"\n", "destination.x.host: missing"},
    {ROUTING "[destination.main]\nhost = \"m\"\n[destination.main.protocol.imap]\ntls = "
             "\"implicit\"\n",
     "destination.main.protocol.imap.port: missing"},
    {ROUTING "[destination.main]\nhost = \"m\"\n[destination.main.protocol.imap]\nport = 993\n",
     "destination.main.protocol.imap.tls: missing"},
    {BASE "[listener.i]\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n",
     "listener.i.protocol: missing"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\n",
     "listener.i.tls: missing"},
    {BASE "[listener.i]\nprotocol = \"imap\"\ntls = \"implicit\"\n", "listener.i.bind: missing"},
    {BASE "[tls.certificate.c]\ncert = \"cert.pem\"\n", "tls.certificate.c.key: missing"},

    /* routing.default_destination */
    {MAIN, "routing.default_destination: missing"},
    {"[routing]\ndefault_destination = \"nope\"\n" MAIN,
     "routing.default_destination: \"nope\" is not a declared destination or cluster"},

    /* Interactive listener protocols must be declared by the default. */
    {BASE "[listener.p]\nprotocol = \"pop3\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n",
     "listener.p.protocol: the default destination \"main\" does not declare pop3"},
    {"[routing]\ndefault_destination = \"c\"\n" MAIN "[destination.n1]\nhost = \"n1.example.com\"\n"
     "[cluster.c]\ntemplate = \"main\"\nnodes = [\"n1\"]\n"
     "[listener.s]\nprotocol = \"managesieve\"\nbind = [\"127.0.0.1:1\"]\ntls = \"starttls\"\n",
     "listener.s.protocol: the default destination \"c\" does not declare managesieve, and "
     "accounts without a mapping fall back to it; add [destination.main.protocol.managesieve]"},
    {BASE "[listener.h]\nprotocol = \"http\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "[[http.route]]\nmatch = \"/**\"\nextract = { from = \"authorization\" }\n",
     "listener.h.protocol: the default destination \"main\" does not declare http"},

    /* Plaintext credentials. */
    {BASE "[destination.other]\nhost = \"o.example.com\"\n"
          "[destination.other.protocol.imap]\nport = 143\ntls = \"plain\"\n",
     "destination.other.protocol.imap.tls: \"plain\" would send client credentials"},
    {BASE "[destination.other]\nhost = \"o.example.com\"\n"
          "[destination.other.protocol.http]\nport = 80\ntls = \"plain\"\n",
     "set destination.other.allow_plaintext_auth = true"},

    /* IP host with TLS and no server name. */
    {BASE "[destination.other]\nhost = \"10.0.0.1\"\n"
          "[destination.other.protocol.pop3]\nport = 995\ntls = \"implicit\"\n",
     "destination.other.tls_server_name: required because host \"10.0.0.1\" is an IP address"},
    {BASE "[destination.other]\nhost = \"[2001:db8::1]\"\n"
          "[destination.other.protocol.submission]\nport = 587\ntls = \"starttls\"\n",
     "destination.other.tls_server_name: required"},

    /* Pass-through listeners. */
    {BASE RELAY "[routing.x]\n", "routing.x: unknown key"},
    {ROUTING "smtp_passthrough_destination = \"relay\"\n" MAIN RELAY
             "[listener.s]\nprotocol = \"smtp\"\nbind = [\"127.0.0.1:25\"]\ntls = \"starttls\"\n",
     "listener.s.tls: \"starttls\" is not possible on a smtp listener"},
    {BASE "[listener.s]\nprotocol = \"smtp\"\nbind = [\"127.0.0.1:25\"]\ntls = \"plain\"\n",
     "routing.smtp_passthrough_destination: missing, but listener \"s\" accepts smtp"},
    {BASE "[listener.l]\nprotocol = \"lmtp\"\nbind = [\"127.0.0.1:24\"]\ntls = \"plain\"\n",
     "routing.smtp_passthrough_destination: missing, but listener \"l\" accepts lmtp"},
    {ROUTING "smtp_passthrough_destination = \"main\"\n" MAIN
             "[listener.s]\nprotocol = \"smtp\"\nbind = [\"127.0.0.1:25\"]\ntls = \"plain\"\n",
     "routing.smtp_passthrough_destination: destination \"main\" does not declare smtp"},
    {ROUTING "smtp_passthrough_destination = \"relay\"\n" MAIN RELAY
             "[listener.l]\nprotocol = \"lmtp\"\nbind = [\"127.0.0.1:24\"]\ntls = \"implicit\"\n",
     "routing.smtp_passthrough_destination: destination \"relay\" does not declare lmtp"},
    {ROUTING "smtp_passthrough_destination = \"ghost\"\n" MAIN,
     "routing.smtp_passthrough_destination: \"ghost\" is not a declared"},

    /* Mapping sources. */
    {BASE "[mapping]\nsource = \"file\"\n", "mapping.file: missing; source = \"file\""},
    {BASE "[mapping]\nsource = \"file\"\n[mapping.file]\n", "mapping.file.path: missing"},
    {BASE "[mapping]\nsource = \"redis\"\n", "mapping.redis: missing; source = \"redis\""},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nkey_prefix = \"r:\"\n",
     "mapping.redis.url: missing"},
    {BASE "[mapping]\nsource = \"sql\"\n", "mapping.sql: missing; source = \"sql\""},
    {BASE "[mapping]\nnormalize = \"lowercase\"\n", "mapping.source: missing"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"mysql://u@h/db\"\n",
     "mapping.sql.url: this database is not supported; PostgreSQL is the supported SQL store"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"sqlite:///tmp/x.db\"\n",
     "PostgreSQL is the supported SQL store"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"host=localhost\"\n",
     "mapping.sql.url: must be a postgres:// or postgresql:// URL"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"postgres://h/db\"\n"
          "query = \"SELECT d FROM r WHERE i = ?\"\n",
     "mapping.sql.query: does not use $1"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"http://r:6379\"\n",
     "mapping.redis.url: must start with redis:// or rediss://"},
    /* What the store would refuse at startup, --check-config refuses too. */
    /* Redis over TLS: the files load as the store loads them, and the TLS
     * keys are refused without rediss://. */
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"rediss://r:6380\"\n"
          "tls_ca_file = \"missing.pem\"\n",
     "mapping.redis.tls_ca_file: cannot read "},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"rediss://r:6380\"\n"
          "tls_ca_file = \"notpem.txt\"\n",
     "mapping.redis.tls_ca_file: "},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r:6379\"\n"
          "tls_server_name = \"redis.example.com\"\n",
     "mapping.redis.tls_server_name: only applies to Redis over TLS; use a rediss:// url"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r:6379\"\n"
          "tls_allow_invalid_certs = true\n",
     "mapping.redis.tls_allow_invalid_certs: only applies to Redis over TLS"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"rediss://r:6380\"\n"
          "tls_server_name = \"\"\n",
     "mapping.redis.tls_server_name: must not be empty"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"rediss://r:6380\"\n"
          "tls_client_cert = \"cert.pem\"\n",
     "mapping.redis.tls_client_key: missing while tls_client_cert is set"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"rediss://r:6380\"\n"
          "tls_client_cert = \"cert.pem\"\ntls_client_key = \"key2.pem\"\n",
     "mapping.redis.tls_client_key: "},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"rediss://r:6380\"\n"
          "tls_allow_invalid_certs = \"yes\"\n",
     "mapping.redis.tls_allow_invalid_certs"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://user@r:6379\"\n",
     "mapping.redis.url: a user name needs a password"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r:99999\"\n",
     "mapping.redis.url: the port must be a number from 1 to 65535"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r:6379/x\"\n",
     "mapping.redis.url: the path must be a database number"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r?db=1\"\n",
     "mapping.redis.url: query parameters are not supported"},
    /* Fleet events channels. */
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r\"\n"
          "events_channel = \"\"\n",
     "mapping.redis.events_channel: must not be empty"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r\"\n"
          "events_channel = \"a b\"\n",
     "mapping.redis.events_channel: must be 1 to 256 characters without spaces"},
    {BASE "[mapping]\nsource = \"redis\"\n[mapping.redis]\nurl = \"redis://r\"\n"
          "watch_keyspace = \"yes\"\n",
     "mapping.redis.watch_keyspace"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"postgres://h/db\"\n"
          "events_channel = \"Fleet-Events\"\n",
     "mapping.sql.events_channel: must be 1 to 63 characters from a-z, 0-9 and _"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"postgres://h/db\"\n"
          "events_channel = \""
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "\"\n",
     "mapping.sql.events_channel: must be 1 to 63 characters"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"postgres://h/db?nosuch=1\"\n",
     "mapping.sql.url: libpq cannot parse it"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"postgres://a,b,c/db?port=1,2\"\n",
     "mapping.sql.url: give one port, or one port per host"},
    {BASE "[mapping]\nsource = \"sql\"\n[mapping.sql]\n"
          "url = \"postgres://a,b/db?hostaddr=10.0.0.1,10.0.0.2,10.0.0.3\"\n",
     "mapping.sql.url: the host and hostaddr lists differ in length"},
    {BASE "[mapping]\nsource = \"file\"\n[mapping.file]\npath = \"ghostmap.tsv\"\n",
     "ghostmap.tsv:1: destination \"ghost\" is not declared"},
    {BASE "[mapping]\nsource = \"file\"\n[mapping.file]\npath = \"badmap.tsv\"\n",
     "badmap.tsv:1: expected \"<identifier> <destination>\""},
    {BASE "[mapping]\nsource = \"file\"\n[mapping.file]\npath = \"nonexistent.tsv\"\n",
     "mapping.file.path: cannot read"},
    {BASE IMAP_LISTENER "[destination.poponly]\nhost = \"p.example.com\"\n"
                        "[destination.poponly.protocol.pop3]\nport = 995\ntls = \"implicit\"\n"
                        "[mapping]\nsource = \"file\"\n[mapping.file]\npath = \"popmap.tsv\"\n",
     "mapping.file.path: destination \"poponly\" (mapped in"},

    /* Mutual TLS and pinning. */
    {BASE "[destination.other]\nhost = \"o\"\ntls_client_cert = \"cert.pem\"\n",
     "destination.other.tls_client_key: missing while tls_client_cert is set"},
    {BASE "[destination.other]\nhost = \"o\"\ntls_client_key = \"key.pem\"\n",
     "destination.other.tls_client_cert: missing while tls_client_key is set"},
    {BASE "[destination.other]\nhost = \"o\"\ntls_client_cert = \"cert.pem\"\n"
          "tls_client_key = \"key2.pem\"\n",
     "destination.other.tls_client_key:"},
    {BASE "[destination.other]\nhost = \"o\"\ntls_client_cert = \"notpem.txt\"\n"
          "tls_client_key = \"key.pem\"\n",
     "destination.other.tls_client_cert:"},
    {BASE "[destination.other]\nhost = \"o\"\ntls_pinned_cert_sha256 = \"abcd\"\n",
     "destination.other.tls_pinned_cert_sha256: not a SHA-256 fingerprint"},
    {BASE "[destination.other]\nhost = \"o\"\ntls_pinned_cert_sha256 = "
          "\"zz11223344556677889900112233445566778899001122334455667788990011\"\n",
     "destination.other.tls_pinned_cert_sha256: not a SHA-256 fingerprint"},
    {BASE "[destination.other]\nhost = \"o\"\nsource_ips = [\"10.0.0.1:80\"]\n",
     "destination.other.source_ips: \"10.0.0.1:80\" is not an IP address"},

    /* Listener addresses and PROXY protocol. */
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "proxy_protocol = \"required\"\n",
     "listener.i.proxy_trusted: required when proxy_protocol is \"required\""},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "proxy_protocol = \"optional\"\nproxy_trusted = []\n",
     "listener.i.proxy_trusted: required when proxy_protocol is \"optional\""},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n"
          "proxy_trusted = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
     "listener.i.proxy_trusted: \"10.0.0.0/33\" is not a CIDR range"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = []\ntls = \"implicit\"\n",
     "listener.i.bind: empty"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"localhost:993\"]\ntls = \"implicit\"\n",
     "listener.i.bind: \"localhost:993\" is not \"ip:port\""},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"0.0.0.0:99999\"]\ntls = \"implicit\"\n",
     "listener.i.bind: \"0.0.0.0:99999\" is not \"ip:port\""},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"0.0.0.0:0\"]\ntls = \"implicit\"\n",
     "listener.i.bind: \"0.0.0.0:0\" has port 0"},
    {BASE IMAP_LISTENER
     "[listener.j]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:10993\"]\ntls = \"starttls\"\n",
     "listener.j.bind: duplicate bind address: \"127.0.0.1:10993\" overlaps \"127.0.0.1:10993\" "
     "of listener.i.bind"},
    {BASE IMAP_LISTENER
     "[listener.j]\nprotocol = \"imap\"\nbind = [\"0.0.0.0:10993\"]\ntls = \"starttls\"\n",
     "listener.j.bind: duplicate bind address"},
    {BASE "[listener.i]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:9443\"]\ntls = \"implicit\"\n"
          "[admin]\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n",
     "admin.bind: duplicate bind address"},
    {BASE
     "[admin]\nbind = \"localhost:9443\"\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n",
     "admin.bind: \"localhost:9443\" is not \"ip:port\""},

    /* Inbound TLS. */
    {BASE "[tls.protocols]\nmin_version = \"1.3\"\ndisable_cipher_suites = "
          "[\"TLS_AES_128_GCM_SHA256\", \"TLS_AES_256_GCM_SHA384\", "
          "\"TLS_CHACHA20_POLY1305_SHA256\"]\n",
     "tls.protocols.disable_cipher_suites: removes every cipher suite available with "
     "min_version = \"1.3\""},
    {BASE "[tls.protocols]\ndisable_cipher_suites = [\"TLS_NOT_A_SUITE\"]\n",
     "tls.protocols.disable_cipher_suites[0]: unknown cipher suite \"TLS_NOT_A_SUITE\""},
    {BASE "[tls.certificate.c]\ncert = \"missing.pem\"\nkey = \"key.pem\"\n",
     "tls.certificate.c.cert: cannot read"},
    {BASE "[tls.certificate.c]\ncert = \"cert.pem\"\nkey = \"missing.pem\"\n",
     "tls.certificate.c.key: cannot read"},
    {BASE "[tls.certificate.c]\ncert = \"notpem.txt\"\nkey = \"key.pem\"\n",
     "tls.certificate.c.cert:"},
    {BASE "[tls.certificate.c]\ncert = \"cert.pem\"\nkey = \"notpem.txt\"\n",
     "tls.certificate.c.key:"},
    {BASE "[tls.certificate.c]\ncert = \"cert.pem\"\nkey = \"key2.pem\"\n",
     "does not match the certificate"},
    {BASE "[tls.certificate.a]\ncert = \"cert.pem\"\nkey = \"key.pem\"\ndefault = true\n"
          "[tls.certificate.b]\ncert = \"cert2.pem\"\nkey = \"key2.pem\"\ndefault = true\n",
     "tls.certificate.b.default: more than one certificate is marked default"},

    /* Clusters. */
    {BASE "[cluster.main]\ntemplate = \"main\"\nnodes = [\"main\"]\n",
     "cluster.main: a destination is also named \"main\""},
    {BASE "[cluster.c]\ntemplate = \"ghost\"\nnodes = [\"main\"]\n",
     "cluster.c.template: \"ghost\" is not a declared destination"},
    {BASE "[cluster.c]\nnodes = [\"main\"]\n", "cluster.c.template: missing"},
    {BASE "[cluster.c]\ntemplate = \"main\"\nnodes = [\"main\", \"ghost\"]\n",
     "cluster.c.nodes[1]: \"ghost\" is not a declared destination"},
    {BASE "[cluster.c]\ntemplate = \"main\"\n", "cluster.c.nodes: missing"},
    {BASE "[cluster.c]\ntemplate = \"main\"\nnodes = [\"main\"]\n[cluster.c.kubernetes]\n"
          "service = \"s\"\n",
     "cluster.c.nodes: set together with [cluster.c.kubernetes]"},
    {BASE "[cluster.c]\ntemplate = \"main\"\n[cluster.c.kubernetes]\nnamespace = \"mail\"\n",
     "cluster.c.kubernetes.service: missing"},
    {BASE "[destination.n1]\nhost = \"10.0.3.1\"\n"
          "[cluster.c]\ntemplate = \"main\"\nnodes = [\"n1\"]\n",
     "cluster.c.nodes[0]: node \"n1\" has the IP host \"10.0.3.1\""},
    {BASE "[cluster.c]\ntemplate = \"main\"\n[cluster.c.kubernetes]\nservice = \"s\"\n",
     "cluster.c.kubernetes: discovered nodes are pod IP addresses and the template \"main\" "
     "uses TLS; set tls_server_name"},
    {BASE "[destination.pod]\nhost = \"pod.invalid\"\ntls_server_name = \"p\"\n"
          "[destination.pod.protocol.imap]\nport = 993\ntls = \"implicit\"\n"
          "[cluster.c]\ntemplate = \"pod\"\n[cluster.c.kubernetes]\nservice = \"s\"\n"
          "backoff_initial = \"1m\"\n",
     "cluster.c.kubernetes: backoff_initial is longer than backoff_max"},
    {BASE "[destination.pod]\nhost = \"pod.invalid\"\ntls_server_name = \"p\"\n"
          "[destination.pod.protocol.imap]\nport = 993\ntls = \"implicit\"\n"
          "[cluster.c]\ntemplate = \"pod\"\n[cluster.c.kubernetes]\nservice = \"s\"\n"
          "watch_timeout = \"500ms\"\n",
     "cluster.c.kubernetes: watch_timeout is shorter than one second"},

    /* HTTP routes. */
    {BASE "[[http.route]]\ndestination = \"main\"\n", "http.route[0].match: missing"},
    {BASE HTTP_MAIN "[[http.route]]\nmatch = \"/\"\ndestination = \"web\"\n"
                    "extract = { from = \"authorization\" }\n",
     "http.route[0]: sets both destination and extract"},
    {BASE "[[http.route]]\nmatch = \"/\"\n", "http.route[0].destination: missing"},
    {BASE "[[http.route]]\nmatch = \"/\"\ndestination = \"main\"\n",
     "http.route[0].destination: \"main\" does not declare http"},
    {BASE "[[http.route]]\nmatch = \"/\"\ndestination = \"ghost\"\n",
     "http.route[0].destination: \"ghost\" is not a declared"},
    {BASE HTTP_MAIN "[[http.route]]\nmatch = \"/\"\nextract = { from = \"authorization\" }\n"
                    "fallback = \"main\"\n",
     "http.route[0].fallback: \"main\" does not declare http"},
    {BASE HTTP_MAIN "[[http.route]]\nmatch = \"/\"\ndestination = \"web\"\nfallback = \"web\"\n",
     "http.route[0].fallback: only used with extract"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { from = \"query\" }\n",
     "http.route[0].extract.param: missing"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { from = \"header\" }\n",
     "http.route[0].extract.header: missing"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { from = \"body\" }\n",
     "http.route[0].extract.regex: missing"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { from = \"body\", regex = \"user=([a-\" }\n",
     "http.route[0].extract.regex: does not compile"},
    {BASE "[[http.route]]\nmatch = \"/\"\nextract = { from = \"body\", regex = \"user=.*\" }\n",
     "http.route[0].extract.regex: has no capture group"},
    {BASE HTTP_MAIN
     "[listener.h]\nprotocol = \"http\"\nbind = [\"127.0.0.1:1\"]\ntls = \"implicit\"\n",
     "http.route: missing, but listener \"h\" accepts http"},

    /* Routing details. */
    {ROUTING "master_user_separators = [\"%\", \"\"]\n" MAIN,
     "routing.master_user_separators[1]: empty separator"},

    /* Admin. */
    {BASE "[admin]\ntls = \"plain\"\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n",
     "admin.tls: \"plain\" would expose the management token"},
    {BASE "[admin]\n", "admin.bearer_token: no management token configured"},
    {BASE "[admin]\nbearer_token = \"tooshort\"\n",
     "admin.bearer_token: the token is 8 characters, shorter than admin.min_token_len (32)"},
    {BASE "[admin]\nbearer_token_file = \"short.txt\"\n",
     "admin.bearer_token_file: the token is 5 characters"},
    {BASE "[admin]\nbearer_token_file = \"missing.token\"\n",
     "admin.bearer_token_file: cannot read"},
};

static void test_bad_configs(void **state)
{
	(void)state;
	size_t failures = 0;

	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const bad_case *c = &bad_cases[i];
		sy_errors errs = {0};
		sy_config *cfg = NULL;
		int rc = config_load_string(c->toml, strlen(c->toml), tmpdir, &cfg, &errs);
		if (rc != -1 || cfg != NULL || !has_msg(&errs, c->expect)) {
			fprintf(stderr, "case %zu: expected \"%s\" (rc=%d)\n--- config:\n%s---\n",
			        i, c->expect, rc, c->toml);
			dump("errors", &errs);
			failures++;
		}
		config_free(cfg);
		sy_errors_free(&errs);
	}
	if (failures > 0)
		fail_msg("%zu of %zu bad-config cases failed", failures,
		         sizeof(bad_cases) / sizeof(bad_cases[0]));
}

/* True if `m` starts with a dotted key (bare parts, "quoted" parts and
 * [index] suffixes) followed by ": ". */
static bool starts_with_key(const char *m)
{
	bool quoted = false;
	size_t i = 0;

	for (; m[i] != '\0'; i++) {
		char ch = m[i];
		if (ch == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted)
			continue;
		if (ch == ':')
			break;
		if (!(ch == '.' || ch == '_' || ch == '-' || ch == '[' || ch == ']' ||
		      (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9')))
			return false;
	}
	return i > 0 && m[i] == ':' && m[i + 1] == ' ';
}

/* Every message of every case starts with a dotted key and a colon (except
 * the TOML syntax error, case 0, which starts with its origin). */
static void test_messages_start_with_key(void **state)
{
	(void)state;
	for (size_t i = 1; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		sy_errors errs = {0};
		sy_config *cfg = NULL;
		config_load_string(bad_cases[i].toml, strlen(bad_cases[i].toml), tmpdir, &cfg,
		                   &errs);
		for (size_t j = 0; j < errs.len; j++) {
			if (!starts_with_key(errs.msgs[j]))
				fail_msg("case %zu: message without a leading key: %s", i,
				         errs.msgs[j]);
		}
		config_free(cfg);
		sy_errors_free(&errs);
	}
}

static void test_multiple_errors_reported(void **state)
{
	(void)state;
	sy_errors errs =
	    load_fail("[routing]\ndefault_destination = \"ghost\"\n"
	              "[server]\nthreads = -2\nlog_format = \"xml\"\nbogus = 1\n"
	              "[destination.a]\nhost = \"10.0.0.1\"\n"
	              "[destination.a.protocol.imap]\nport = 143\ntls = \"plain\"\n"
	              "[destination.a.protocol.pop3]\nport = 995\ntls = \"implicit\"\n"
	              "[listener.x]\nprotocol = \"smtp\"\nbind = [\"nope\"]\ntls = \"starttls\"\n"
	              "[mapping]\nsource = \"sql\"\n[mapping.sql]\nurl = \"mysql://x\"\n"
	              "[tls.certificate.c]\ncert = \"cert.pem\"\nkey = \"key2.pem\"\n");
	static const char *const want[] = {
	    "routing.default_destination: \"ghost\"",
	    "server.threads: must not be negative",
	    "server.log_format: invalid value",
	    "server.bogus: unknown key",
	    "destination.a.protocol.imap.tls:",
	    "destination.a.tls_server_name: required",
	    "listener.x.bind: \"nope\"",
	    "listener.x.tls: \"starttls\"",
	    "routing.smtp_passthrough_destination: missing",
	    "mapping.sql.url:",
	    "tls.certificate.c.key:",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (!has_msg(&errs, want[i])) {
			dump(want[i], &errs);
			fail_msg("missing error: %s", want[i]);
		}
	}
	assert_int_equal(errs.len, sizeof(want) / sizeof(want[0]));
	sy_errors_free(&errs);
}

/* A key that failed conversion is not reported a second time by a rule. */
static void test_no_duplicate_reports(void **state)
{
	(void)state;
	sy_errors errs = load_fail(BASE "[listener.i]\nprotocol = \"pop33\"\nbind = "
	                                "[\"127.0.0.1:1\"]\ntls = \"implicit\"\n");
	assert_int_equal(errs.len, 1);
	assert_non_null(strstr(errs.msgs[0], "listener.i.protocol: invalid value"));
	sy_errors_free(&errs);

	errs = load_fail("[routing]\ndefault_destination = 5\n" MAIN);
	assert_int_equal(errs.len, 1);
	assert_non_null(strstr(errs.msgs[0], "routing.default_destination: expected a string"));
	sy_errors_free(&errs);
}

/* ---- Admin token precedence ---------------------------------------------- */

static void test_admin_token_precedence(void **state)
{
	(void)state;
	static const char both[] = BASE "[admin]\nbearer_token_file = \"token.txt\"\n"
	                                "bearer_token = \"inline-token-0123456789abcdef0123456\"\n";
	static const char inline_only[] =
	    BASE "[admin]\nbearer_token = \"inline-token-0123456789abcdef0123456\"\n";
	sy_config *cfg;

	/* The environment wins over the file and the inline token. */
	setenv("PROXY_ADMIN_TOKEN", "env-token-0123456789abcdef0123456789ab", 1);
	cfg = load_ok(both);
	assert_string_equal(cfg->admin.token, "env-token-0123456789abcdef0123456789ab");
	config_free(cfg);

	/* A short environment token is an error naming the environment. */
	setenv("PROXY_ADMIN_TOKEN", "short-env", 1);
	sy_errors errs = load_fail(both);
	assert_true(has_msg(&errs, "PROXY_ADMIN_TOKEN (environment): the token is 9 characters"));
	sy_errors_free(&errs);

	/* The environment also satisfies an [admin] without any token. */
	setenv("PROXY_ADMIN_TOKEN", "env-token-0123456789abcdef0123456789ab", 1);
	cfg = load_ok(BASE "[admin]\n");
	assert_string_equal(cfg->admin.token, "env-token-0123456789abcdef0123456789ab");
	config_free(cfg);

	/* Without it, the file (trailing whitespace trimmed) beats inline. */
	unsetenv("PROXY_ADMIN_TOKEN");
	cfg = load_ok(both);
	assert_string_equal(cfg->admin.token, "file-token-0123456789abcdef0123456789");
	config_free(cfg);

	/* An empty variable counts as unset. */
	setenv("PROXY_ADMIN_TOKEN", "", 1);
	cfg = load_ok(inline_only);
	assert_string_equal(cfg->admin.token, "inline-token-0123456789abcdef0123456");
	config_free(cfg);
	unsetenv("PROXY_ADMIN_TOKEN");

	/* min_token_len applies to whichever source won. */
	cfg = load_ok(BASE "[admin]\nbearer_token = \"abcdef\"\nmin_token_len = 6\n");
	assert_string_equal(cfg->admin.token, "abcdef");
	config_free(cfg);
}

/* ---- Files ---------------------------------------------------------------- */

static void test_load_file(void **state)
{
	(void)state;
	char path[256];
	sy_errors errs = {0};
	sy_config *cfg = NULL;

	snprintf(path, sizeof(path), "%s/sy.toml", tmpdir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(BASE "[tls.certificate.c]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n", f);
	fclose(f);
	assert_int_equal(config_load_file(path, &cfg, &errs), 0);
	assert_string_equal(cfg->path, path);
	assert_string_equal(cfg->basedir, tmpdir);
	char want[256];
	snprintf(want, sizeof(want), "%s/cert.pem", tmpdir);
	assert_string_equal(cfg->certs[0].cert_path, want);
	config_free(cfg);
	unlink(path);

	assert_int_equal(config_load_file(path, &cfg, &errs), -1);
	assert_null(cfg);
	assert_int_equal(errs.len, 1);
	assert_non_null(strstr(errs.msgs[0], "cannot open"));
	sy_errors_free(&errs);

	/* A NULL error list is allowed. */
	assert_int_equal(config_load_string("x = ", 4, NULL, &cfg, NULL), -1);
}

/* The shipped example is complete and valid. */
static void test_example_config(void **state)
{
	(void)state;
	const char *src = getenv("SWITCHYARD_SOURCE_DIR");
	char path[1024];
	sy_errors errs = {0};
	sy_config *cfg = NULL;

	if (src == NULL) {
		if (access("examples/switchyard.toml", R_OK) == 0)
			src = ".";
		else
			skip();
	}
	snprintf(path, sizeof(path), "%s/examples/switchyard.toml", src);
	unsetenv("PROXY_ADMIN_TOKEN");
	int rc = config_load_file(path, &cfg, &errs);
	if (rc != 0)
		dump("example config", &errs);
	assert_int_equal(rc, 0);
	assert_true(cfg->admin.enabled);
	assert_non_null(cfg->admin.token);
	assert_true(cfg->nclusters >= 1);
	assert_true(cfg->nlisteners >= 7);
	assert_int_equal(cfg->mapping.source, SY_MAP_FILE);
	config_free(cfg);
	sy_errors_free(&errs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_listener_and_table_defaults),
	    cmocka_unit_test(test_explicit_values),
	    cmocka_unit_test(test_forwarding_inference),
	    cmocka_unit_test(test_passthrough_xclient_is_a_warning),
	    cmocka_unit_test(test_redis_tls_keys),
	    cmocka_unit_test(test_durations),
	    cmocka_unit_test(test_sockaddr_parse),
	    cmocka_unit_test(test_enum_helpers),
	    cmocka_unit_test(test_tls_ciphers),
	    cmocka_unit_test(test_bad_configs),
	    cmocka_unit_test(test_messages_start_with_key),
	    cmocka_unit_test(test_multiple_errors_reported),
	    cmocka_unit_test(test_no_duplicate_reports),
	    cmocka_unit_test(test_admin_token_precedence),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_example_config),
	};
	return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
