/*
 * The cross-field startup rules.
 *
 * config.c has already checked every key's type and range; the rules here
 * relate keys to one another and to the files they name (certificates, keys,
 * the mapping file). Every rule runs even after another one failed, so an
 * operator sees the whole list of problems at once rather than fixing them
 * one restart at a time. Each message is "<dotted.key>: <what is wrong>;
 * <what to do>".
 */
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_int.h"
#include "switchyard/config.h"
#include "switchyard/hex.h"
#include "switchyard/mapfile.h"
#include "switchyard/redis_url.h"

#define KEYMAX CFG_KEYMAX

typedef struct vctx {
	const sy_config *cfg;
	sy_errors *errs;
	sy_errors *warns;            /* accepted but worth telling: kept on the config */
	size_t prior_from, prior_to; /* messages config.c already produced */
	bool failed;
	bool http_uses_default; /* some [[http.route]] resolves accounts */
} vctx;

/* True if config.c already reported `key` (or an element or sub-key of it). */
static bool already_reported(const vctx *v, const char *key)
{
	size_t kl = strlen(key);

	for (size_t i = v->prior_from; i < v->prior_to; i++) {
		const char *m = v->errs->msgs[i];
		if (strncmp(m, key, kl) == 0 && (m[kl] == ':' || m[kl] == '[' || m[kl] == '.'))
			return true;
	}
	return false;
}

static void verr(vctx *v, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void verr(vctx *v, const char *key, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	v->failed = true;
	if (already_reported(v, key))
		return;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sy_errors_add(v->errs, "%s: %s", key, msg);
	free(msg);
}

/* A setting that is accepted but has no effect, or a questionable one: the
 * configuration stays valid; the message, naming the key, is logged at
 * startup and reload and printed by --check-config. */
static void vwarn(vctx *v, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void vwarn(vctx *v, const char *key, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	if (v->warns == NULL)
		return;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sy_errors_add(v->warns, "%s: %s", key, msg);
	free(msg);
}

/* ------------------------------------------------------------------------ */
/* Files: certificates and keys                                             */

/* Never prompt on the terminal for a passphrase: an encrypted key is
 * reported as unusable instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The most useful line of OpenSSL's error queue, then clears it. */
static const char *ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static FILE *open_readable(vctx *v, const char *key, const char *path, const char *what)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		verr(v, key, "cannot read %s: %s; make the %s file readable or fix the path", path,
		     strerror(errno), what);
	return f;
}

/*
 * Checks that `cert_path` holds a PEM certificate (chain), `key_path` a PEM
 * private key, and that they belong together, exactly as the TLS code will
 * load them later. Messages name cert_key or key_key.
 */
static void check_cert_pair(vctx *v, const char *cert_key, const char *cert_path,
                            const char *key_key, const char *key_path)
{
	char why[256];
	FILE *f;
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;
	SSL_CTX *ctx = NULL;

	ERR_clear_error();
	if ((f = open_readable(v, cert_key, cert_path, "certificate")) != NULL) {
		x = PEM_read_X509(f, NULL, no_passphrase, NULL);
		fclose(f);
		if (x == NULL)
			verr(v, cert_key,
			     "%s is not a PEM certificate (%s); it must start with -----BEGIN "
			     "CERTIFICATE-----",
			     cert_path, ssl_reason(why, sizeof(why)));
	}
	if ((f = open_readable(v, key_key, key_path, "private key")) != NULL) {
		pk = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
		fclose(f);
		if (pk == NULL)
			verr(v, key_key,
			     "%s is not an unencrypted PEM private key (%s); convert it with "
			     "`openssl pkey -in <file> -out <file>`",
			     key_path, ssl_reason(why, sizeof(why)));
	}
	if (x == NULL || pk == NULL)
		goto out;

	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		verr(v, cert_key, "cannot create a TLS context (%s)", ssl_reason(why, sizeof(why)));
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
		verr(v, cert_key, "%s cannot be used (%s); check the certificate chain", cert_path,
		     ssl_reason(why, sizeof(why)));
		goto out;
	}
	if (SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		verr(v, key_key,
		     "%s does not match the certificate in %s (%s); use the key the "
		     "certificate was issued for",
		     key_path, cert_path, ssl_reason(why, sizeof(why)));
	}
out:
	SSL_CTX_free(ctx);
	EVP_PKEY_free(pk);
	X509_free(x);
	ERR_clear_error();
}

/* ------------------------------------------------------------------------ */
/* TLS session ticket keys                                                  */

#define TICKET_FILE_MAX (64 * 1024)
#define TICKET_B64_LEN  108 /* 80 bytes = 26 groups of 3 + 2: 27 groups of 4 */
#define TICKET_HEX_LEN  (2 * SY_TICKET_KEY_LEN)

static int b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Strict base64 of exactly SY_TICKET_KEY_LEN bytes: the 107 significant
 * characters, optionally the one '=' of padding, and zero in the two bits
 * the last character carries beyond the 80th byte (as every encoder writes
 * them). */
static bool decode_b64_key(const char *s, size_t len, unsigned char *out)
{
	if (len == TICKET_B64_LEN && s[len - 1] == '=')
		len--;
	if (len != TICKET_B64_LEN - 1)
		return false;
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		int d = b64val((unsigned char)s[i]);
		if (d < 0)
			return false;
		acc = (acc << 6) | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return n == SY_TICKET_KEY_LEN && acc == 0;
}

static bool decode_hex_key(const char *s, size_t len, unsigned char *out)
{
	if (len != TICKET_HEX_LEN)
		return false;
	for (size_t i = 0; i < SY_TICKET_KEY_LEN; i++) {
		int hi = sy_hexval((unsigned char)s[2 * i]);
		int lo = sy_hexval((unsigned char)s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

/* Reads at most TICKET_FILE_MAX bytes of `path` into a malloc'd,
 * NUL-terminated buffer (*len bytes before the NUL). Returns NULL with a
 * message in why. */
static char *read_key_file(const char *path, size_t *len, char *why, size_t whylen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(why, whylen, "cannot read %s: %s; make the file readable or fix the path",
		         path, strerror(errno));
		return NULL;
	}
	char *buf = malloc(TICKET_FILE_MAX + 1);
	size_t n = buf != NULL ? fread(buf, 1, TICKET_FILE_MAX + 1, f) : 0;
	bool err = buf == NULL || ferror(f);
	fclose(f);
	if (err || n > TICKET_FILE_MAX) {
		if (buf != NULL) {
			OPENSSL_cleanse(buf, n);
			free(buf);
		}
		if (err)
			snprintf(why, whylen,
			         "cannot read %s; make the file readable or fix the path", path);
		else
			snprintf(
			    why, whylen,
			    "%s is larger than %d KiB; a key file holds at most %d keys of one "
			    "line each",
			    path, TICKET_FILE_MAX / 1024, SY_TICKET_KEYS_MAX);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

int config_ticket_keys_read(const char *path, sy_ticket_key **keys_out, char *why, size_t whylen)
{
	*keys_out = NULL;
	size_t len = 0;
	char *text = read_key_file(path, &len, why, whylen);
	if (text == NULL)
		return -1;
	sy_ticket_key *keys = calloc(SY_TICKET_KEYS_MAX, sizeof(*keys));
	size_t nkeys = 0;
	int rc = 0;
	if (keys == NULL) {
		snprintf(why, whylen, "%s: out of memory", path);
		rc = -1;
	}
	unsigned lineno = 0;
	for (size_t pos = 0; rc == 0 && pos < len;) {
		size_t end = pos;
		while (end < len && text[end] != '\n')
			end++;
		lineno++;
		size_t a = pos, b = end;
		pos = end + 1;
		while (a < b && (text[a] == ' ' || text[a] == '\t'))
			a++;
		while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r'))
			b--;
		if (a == b || text[a] == '#')
			continue;
		if (nkeys == SY_TICKET_KEYS_MAX) {
			snprintf(why, whylen,
			         "%s line %u: more than %d keys; drop the oldest keys (the last "
			         "lines)",
			         path, lineno, SY_TICKET_KEYS_MAX);
			rc = -1;
			break;
		}
		unsigned char *k = (unsigned char *)&keys[nkeys];
		if (!decode_b64_key(text + a, b - a, k) && !decode_hex_key(text + a, b - a, k)) {
			/* Never quote the line: it may be a key with a typo. */
			snprintf(why, whylen,
			         "%s line %u: not a ticket key (%zu characters); each key is 80 "
			         "bytes as base64 (108 characters) or hex (160 digits) on a line "
			         "of its own, e.g. from `head -c 80 /dev/urandom | base64 -w0`%s",
			         path, lineno, b - a,
			         len == SY_TICKET_KEY_LEN
			             ? " (this file looks like a raw 80-byte key: encode it with "
			               "`base64 -w0`)"
			             : "");
			rc = -1;
			break;
		}
		for (size_t j = 0; j < nkeys; j++) {
			if (memcmp(keys[j].name, keys[nkeys].name, sizeof(keys[j].name)) == 0) {
				snprintf(why, whylen,
				         "%s line %u: the key name (its first 16 bytes) repeats an "
				         "earlier key's; every key needs its own name, generate a "
				         "new key",
				         path, lineno);
				rc = -1;
				break;
			}
		}
		nkeys++;
	}
	OPENSSL_cleanse(text, len);
	free(text);
	if (rc == 0 && nkeys == 0) {
		snprintf(why, whylen,
		         "%s holds no key; add one line, e.g. from `head -c 80 /dev/urandom | "
		         "base64 -w0`",
		         path);
		rc = -1;
	}
	if (rc != 0) {
		if (keys != NULL) {
			OPENSSL_cleanse(keys, SY_TICKET_KEYS_MAX * sizeof(*keys));
			free(keys);
		}
		return -1;
	}
	*keys_out = keys;
	return (int)nkeys;
}

/* ------------------------------------------------------------------------ */
/* Cipher suites                                                            */

static const char all_tls13_suites[] = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                       "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256:"
                                       "TLS_AES_128_CCM_8_SHA256";

static bool cipher_named(const SSL_CIPHER *c, const char *name)
{
	const char *std = SSL_CIPHER_standard_name(c);
	return strcasecmp(SSL_CIPHER_get_name(c), name) == 0 ||
	       (std != NULL && strcasecmp(std, name) == 0);
}

static bool is_tls13(const SSL_CIPHER *c)
{
	return strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") == 0;
}

/* Appends "name" to a ':'-separated list. */
static void list_append(char **list, size_t *len, const char *name)
{
	size_t n = strlen(name);
	*list = cfg_xrealloc(*list, *len + n + 2);
	if (*len > 0)
		(*list)[(*len)++] = ':';
	memcpy(*list + *len, name, n + 1);
	*len += n;
}

int config_tls_ciphers(const sy_tls_policy *p, char **cipher_list, char **ciphersuites,
                       sy_errors *errs)
{
	SSL_CTX *def = NULL, *all = NULL;
	STACK_OF(SSL_CIPHER) * dsk, *ask;
	char *l12 = NULL, *l13 = NULL;
	size_t n12 = 0, n13 = 0;
	bool only13 = p->min_version >= 0x0304;
	int rc = -1;

	if (cipher_list != NULL)
		*cipher_list = NULL;
	if (ciphersuites != NULL)
		*ciphersuites = NULL;

	def = SSL_CTX_new(TLS_server_method());
	all = SSL_CTX_new(TLS_server_method());
	if (def == NULL || all == NULL ||
	    SSL_CTX_set_cipher_list(all, "ALL:COMPLEMENTOFALL:@SECLEVEL=0") != 1 ||
	    SSL_CTX_set_ciphersuites(all, all_tls13_suites) != 1) {
		sy_errors_add(errs, "tls.protocols: cannot initialise OpenSSL's cipher tables");
		goto out;
	}
	dsk = SSL_CTX_get_ciphers(def);
	ask = SSL_CTX_get_ciphers(all);

	rc = 0;
	for (size_t i = 0; i < p->disable_cipher_suites.len; i++) {
		const char *name = p->disable_cipher_suites.items[i];
		bool known = false;
		for (int j = 0; j < sk_SSL_CIPHER_num(ask) && !known; j++)
			known = cipher_named(sk_SSL_CIPHER_value(ask, j), name);
		if (!known) {
			sy_errors_add(
			    errs,
			    "tls.protocols.disable_cipher_suites[%zu]: unknown cipher suite "
			    "\"%s\"; use a standard name such as TLS_AES_128_GCM_SHA256 or "
			    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
			    i, name);
			rc = -1;
		}
	}

	for (int j = 0; j < sk_SSL_CIPHER_num(dsk); j++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(dsk, j);
		bool disabled = false;
		for (size_t i = 0; i < p->disable_cipher_suites.len && !disabled; i++)
			disabled = cipher_named(c, p->disable_cipher_suites.items[i]);
		if (disabled)
			continue;
		if (is_tls13(c))
			list_append(&l13, &n13, SSL_CIPHER_get_name(c));
		else if (!only13)
			list_append(&l12, &n12, SSL_CIPHER_get_name(c));
	}
	if (n12 == 0 && n13 == 0) {
		sy_errors_add(errs,
		              "tls.protocols.disable_cipher_suites: removes every cipher suite "
		              "available%s; keep at least one enabled",
		              only13 ? " with min_version = \"1.3\"" : "");
		rc = -1;
	}
	if (rc == 0) {
		if (cipher_list != NULL) {
			*cipher_list = l12;
			l12 = NULL;
		}
		if (ciphersuites != NULL) {
			*ciphersuites = l13 != NULL ? l13 : cfg_xstrdup("");
			l13 = NULL;
		}
	}
out:
	free(l12);
	free(l13);
	SSL_CTX_free(def);
	SSL_CTX_free(all);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Routing targets                                                          */

/* Checks that `id` names a destination or cluster; reports under `key`. */
static bool check_target(vctx *v, const char *key, const char *id)
{
	if (config_is_target(v->cfg, id))
		return true;
	verr(v, key,
	     "\"%s\" is not a declared destination or cluster; declare [destination.%s] "
	     "or fix the name",
	     id, id);
	return false;
}

/* Names the destination a missing protocol must be added to: the target
 * itself, or a cluster's template. */
static const char *proto_owner(const sy_config *cfg, const char *id)
{
	const sy_cluster_config *cl = config_cluster(cfg, id);
	if (cl != NULL && cl->template_dest != NULL)
		return cl->template_dest;
	return id;
}

/* Does a listener of protocol p send accounts to mapped or default targets?
 * http does so only through [[http.route]] entries that extract an account. */
static bool listener_resolves_accounts(const vctx *v, sy_proto p)
{
	if (sy_proto_is_passthrough(p))
		return false;
	if (p == SY_PROTO_HTTP)
		return v->http_uses_default;
	return true;
}

static void check_routing(vctx *v)
{
	const sy_config *cfg = v->cfg;
	const char *dd = cfg->routing.default_destination;
	bool dd_ok = false;

	if (dd == NULL)
		verr(v, "routing.default_destination",
		     "missing; set it to the destination (or cluster) that accounts without a "
		     "mapping are routed to");
	else
		dd_ok = check_target(v, "routing.default_destination", dd);

	for (size_t i = 0; i < cfg->routing.master_user_separators.len; i++) {
		if (cfg->routing.master_user_separators.items[i][0] == '\0') {
			char key[KEYMAX];
			snprintf(key, sizeof(key), "routing.master_user_separators[%zu]", i);
			verr(v, key,
			     "empty separator; remove it (it would cut every login before "
			     "its first character)");
		}
	}

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const sy_listener_config *l = &cfg->listeners[i];
		char key[KEYMAX];
		if (!dd_ok || !listener_resolves_accounts(v, l->protocol) ||
		    config_target_has_proto(cfg, dd, l->protocol))
			continue;
		snprintf(key, sizeof(key), "listener.%s.protocol", QN(l->name));
		verr(v, key,
		     "the default destination \"%s\" does not declare %s, and accounts without a "
		     "mapping fall back to it; add [destination.%s.protocol.%s] with port and tls",
		     dd, sy_proto_name(l->protocol), proto_owner(cfg, dd),
		     sy_proto_name(l->protocol));
	}
}

static void check_passthrough(vctx *v)
{
	const sy_config *cfg = v->cfg;
	const char *pt = cfg->routing.smtp_passthrough_destination;
	const sy_listener_config *first = NULL, *lmtp = NULL;

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const sy_listener_config *l = &cfg->listeners[i];
		if (!sy_proto_is_passthrough(l->protocol))
			continue;
		if (first == NULL)
			first = l;
		if (l->protocol == SY_PROTO_LMTP && lmtp == NULL)
			lmtp = l;
		if (l->tls == SY_TLS_STARTTLS) {
			char key[KEYMAX];
			snprintf(key, sizeof(key), "listener.%s.tls", QN(l->name));
			verr(
			    v, key,
			    "\"starttls\" is not possible on a %s listener: the proxy bridges it "
			    "as "
			    "an opaque byte stream and cannot intercept STARTTLS; use \"plain\" or "
			    "\"implicit\"",
			    sy_proto_name(l->protocol));
		}
	}

	if (pt == NULL) {
		if (first != NULL)
			verr(
			    v, "routing.smtp_passthrough_destination",
			    "missing, but listener \"%s\" accepts %s; set it to a destination that "
			    "declares [destination.<id>.protocol.%s]",
			    first->name, sy_proto_name(first->protocol),
			    sy_proto_name(first->protocol));
		return;
	}
	if (!check_target(v, "routing.smtp_passthrough_destination", pt))
		return;
	if (!config_target_has_proto(cfg, pt, SY_PROTO_SMTP))
		verr(v, "routing.smtp_passthrough_destination",
		     "destination \"%s\" does not declare smtp; add [destination.%s.protocol.smtp]",
		     pt, proto_owner(cfg, pt));
	if (lmtp != NULL && !config_target_has_proto(cfg, pt, SY_PROTO_LMTP))
		verr(v, "routing.smtp_passthrough_destination",
		     "destination \"%s\" does not declare lmtp, which listener \"%s\" accepts; add "
		     "[destination.%s.protocol.lmtp]",
		     pt, lmtp->name, proto_owner(cfg, pt));
}

/* ------------------------------------------------------------------------ */
/* Listeners                                                                */

static uint16_t addr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static bool addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	              &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

/* Two binds collide when they share family and port and either is the
 * wildcard or both name the same address: the second bind() would fail with
 * EADDRINUSE, or with SO_REUSEPORT silently split the traffic. IPv4 and IPv6
 * do not collide (listeners set IPV6_V6ONLY, as the documented
 * ["0.0.0.0:993", "[::]:993"] pairs require). */
static bool binds_collide(const sy_bind_addr *a, const sy_bind_addr *b)
{
	if (a->addr.ss_family != b->addr.ss_family || addr_port(&a->addr) != addr_port(&b->addr))
		return false;
	return sy_sockaddr_is_wildcard((const struct sockaddr *)&a->addr) ||
	       sy_sockaddr_is_wildcard((const struct sockaddr *)&b->addr) ||
	       addr_equal(&a->addr, &b->addr);
}

typedef struct bind_ref {
	const sy_bind_addr *b;
	char owner[KEYMAX]; /* "listener.<name>.bind" or "admin.bind" */
} bind_ref;

static void check_binds(vctx *v)
{
	const sy_config *cfg = v->cfg;
	size_t total = cfg->admin.enabled ? 1 : 0, n = 0;
	bind_ref *refs;

	for (size_t i = 0; i < cfg->nlisteners; i++)
		total += cfg->listeners[i].nbinds;
	refs = cfg_xcalloc(total, sizeof(*refs));
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		for (size_t j = 0; j < cfg->listeners[i].nbinds; j++) {
			refs[n].b = &cfg->listeners[i].binds[j];
			snprintf(refs[n].owner, KEYMAX, "listener.%s.bind",
			         QN(cfg->listeners[i].name));
			n++;
		}
	}
	if (cfg->admin.enabled && cfg->admin.bind.text != NULL) {
		refs[n].b = &cfg->admin.bind;
		snprintf(refs[n].owner, KEYMAX, "admin.bind");
		n++;
	}
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < i; j++) {
			if (!binds_collide(refs[i].b, refs[j].b))
				continue;
			verr(v, refs[i].owner,
			     "duplicate bind address: \"%s\" overlaps \"%s\" of %s; each address "
			     "and port can be bound by one listener only",
			     refs[i].b->text, refs[j].b->text, refs[j].owner);
			break;
		}
	}
	free(refs);
}

static void check_listeners(vctx *v)
{
	const sy_config *cfg = v->cfg;
	char key[KEYMAX];
	const sy_listener_config *http = NULL;

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const sy_listener_config *l = &cfg->listeners[i];
		if (l->nbinds == 0) {
			snprintf(key, sizeof(key), "listener.%s.bind", QN(l->name));
			verr(v, key, "empty; list at least one address such as \"0.0.0.0:993\"");
		}
		if (l->proxy_protocol != SY_PROXY_OFF && l->nproxy_trusted == 0) {
			snprintf(key, sizeof(key), "listener.%s.proxy_trusted", QN(l->name));
			verr(v, key,
			     "required when proxy_protocol is \"%s\"; list the CIDR ranges of the "
			     "load balancers allowed to send a PROXY header, e.g. [\"10.0.0.0/8\"]",
			     l->proxy_protocol == SY_PROXY_OPTIONAL ? "optional" : "required");
		}
		if (l->protocol == SY_PROTO_HTTP && http == NULL)
			http = l;
	}
	if (http != NULL && cfg->http.nroutes == 0)
		verr(v, "http.route",
		     "missing, but listener \"%s\" accepts http; add at least one [[http.route]] "
		     "with match and destination or extract",
		     http->name);
	check_binds(v);
}

/* ------------------------------------------------------------------------ */
/* Destinations                                                             */

static void check_destinations(vctx *v)
{
	const sy_config *cfg = v->cfg;
	char key[KEYMAX];

	for (size_t i = 0; i < cfg->ndestinations; i++) {
		const sy_destination_config *d = &cfg->destinations[i];
		int tls_leg = -1;

		for (int p = 0; p < SY_PROTO_COUNT; p++) {
			const sy_endpoint_config *ep = &d->proto[p];
			if (!ep->declared)
				continue;
			if (ep->tls != SY_TLS_PLAIN && tls_leg < 0)
				tls_leg = p;
			if (sy_proto_carries_credentials((sy_proto)p) && ep->tls == SY_TLS_PLAIN &&
			    !d->allow_plaintext_auth) {
				snprintf(key, sizeof(key), "destination.%s.protocol.%s.tls",
				         QN(d->id), sy_proto_name((sy_proto)p));
				verr(v, key,
				     "\"plain\" would send client credentials to the backend "
				     "unencrypted; use \"implicit\" or \"starttls\", or set "
				     "destination.%s.allow_plaintext_auth = true if the leg is "
				     "already "
				     "protected (loopback, VPN, encrypted tunnel)",
				     d->id);
			}
			if (ep->forwarding == SY_FWD_XCLIENT && p == SY_PROTO_HTTP) {
				snprintf(key, sizeof(key), "destination.%s.protocol.%s.forwarding",
				         QN(d->id), sy_proto_name((sy_proto)p));
				verr(v, key,
				     "\"xclient\" is not possible on an http leg (http conveys the "
				     "client with destination.forwarded); use \"proxy\" or "
				     "\"none\"");
			} else if (ep->forwarding == SY_FWD_XCLIENT &&
			           sy_proto_is_passthrough((sy_proto)p)) {
				/* The reference accepts it and ignores it: a pass-through
				 * stream is relayed opaquely, so nothing can be said to
				 * the backend but a PROXY header. Accepted for
				 * compatibility, with a warning; the leg forwards nothing. */
				snprintf(key, sizeof(key), "destination.%s.protocol.%s.forwarding",
				         QN(d->id), sy_proto_name((sy_proto)p));
				vwarn(v, key,
				      "\"xclient\" has no effect on a pass-through leg (the stream "
				      "is "
				      "relayed opaquely, so no XCLIENT is sent and nothing is "
				      "forwarded); "
				      "use \"proxy\" to forward the client address, or \"none\"");
			}
		}
		if (d->host_is_ip && tls_leg >= 0 && d->tls_server_name == NULL) {
			snprintf(key, sizeof(key), "destination.%s.tls_server_name", QN(d->id));
			verr(
			    v, key,
			    "required because host \"%s\" is an IP address and the %s leg uses TLS "
			    "(an IP address cannot be matched against the certificate); set it to "
			    "a "
			    "name on the backend's certificate",
			    d->host, sy_proto_name((sy_proto)tls_leg));
		}
		if ((d->tls_client_cert == NULL) != (d->tls_client_key == NULL)) {
			snprintf(key, sizeof(key), "destination.%s.%s", QN(d->id),
			         d->tls_client_cert == NULL ? "tls_client_cert" : "tls_client_key");
			verr(v, key,
			     "missing while %s is set; mutual TLS needs both the client "
			     "certificate and its key",
			     d->tls_client_cert == NULL ? "tls_client_key" : "tls_client_cert");
		} else if (d->tls_client_cert != NULL) {
			char kk[KEYMAX];
			snprintf(key, sizeof(key), "destination.%s.tls_client_cert", QN(d->id));
			snprintf(kk, sizeof(kk), "destination.%s.tls_client_key", QN(d->id));
			check_cert_pair(v, key, d->tls_client_cert, kk, d->tls_client_key);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* TLS termination                                                          */

static void check_tls(vctx *v)
{
	const sy_config *cfg = v->cfg;
	const sy_cert_config *first_default = NULL;
	char key[KEYMAX], kk[KEYMAX];

	for (size_t i = 0; i < cfg->ncerts; i++) {
		const sy_cert_config *c = &cfg->certs[i];
		if (c->is_default) {
			if (first_default != NULL) {
				snprintf(key, sizeof(key), "tls.certificate.%s.default",
				         QN(c->name));
				verr(v, key,
				     "more than one certificate is marked default (also "
				     "tls.certificate.%s); keep default = true on one only",
				     first_default->name);
			} else {
				first_default = c;
			}
		}
		if (c->cert_path != NULL && c->key_path != NULL) {
			snprintf(key, sizeof(key), "tls.certificate.%s.cert", QN(c->name));
			snprintf(kk, sizeof(kk), "tls.certificate.%s.key", QN(c->name));
			check_cert_pair(v, key, c->cert_path, kk, c->key_path);
		}
	}

	if (cfg->tls_tickets.key_file != NULL && !already_reported(v, "tls.ticket_key_file")) {
		sy_ticket_key *keys = NULL;
		char why[768];
		int n = config_ticket_keys_read(cfg->tls_tickets.key_file, &keys, why, sizeof(why));
		if (n < 0) {
			verr(v, "tls.ticket_key_file", "%s", why);
		} else {
			OPENSSL_cleanse(keys, (size_t)n * sizeof(*keys));
			free(keys);
		}
	}
	/* Whole seconds are what OpenSSL keeps; RFC 8446 (4.6.1) caps a TLS 1.3
	 * ticket's lifetime at 7 days. */
	uint64_t life = cfg->tls_tickets.lifetime_ms;
	if (life != 0 && (life < 1000 || life > 7ull * 86400 * 1000))
		verr(v, "tls.ticket_lifetime",
		     "must be between \"1s\" and \"7d\" (TLS 1.3 tickets live at most 7 days); "
		     "set a value in that range or remove the key");

	if (cfg->tls_policy.disable_cipher_suites.len > 0 &&
	    !already_reported(v, "tls.protocols.disable_cipher_suites")) {
		size_t before = v->errs->len;
		config_tls_ciphers(&cfg->tls_policy, NULL, NULL, v->errs);
		if (v->errs->len > before)
			v->failed = true;
	}
}

/* ------------------------------------------------------------------------ */
/* Mapping                                                                  */

static bool has_prefix_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Mapped targets must offer every protocol whose listeners resolve accounts:
 * otherwise a mapped account would be accepted and then fail to connect. */
static void check_mapped_targets(vctx *v, const sy_mapfile *mf)
{
	const sy_config *cfg = v->cfg;
	const char **seen = NULL;
	size_t nseen = 0;

	for (size_t i = 0; i < mf->len; i++) {
		const char *dest = mf->entries[i].destination;
		bool dup = false;
		/* Few distinct targets, many accounts: check each target once. */
		for (size_t j = 0; j < nseen && !dup; j++)
			dup = strcmp(seen[j], dest) == 0;
		if (dup)
			continue;
		seen = cfg_xrealloc(seen, (nseen + 1) * sizeof(*seen));
		seen[nseen++] = dest;

		bool reported[SY_PROTO_COUNT] = {false};
		for (size_t k = 0; k < cfg->nlisteners; k++) {
			const sy_listener_config *l = &cfg->listeners[k];
			if (reported[l->protocol] || !listener_resolves_accounts(v, l->protocol) ||
			    config_target_has_proto(cfg, dest, l->protocol))
				continue;
			reported[l->protocol] = true;
			verr(
			    v, "mapping.file.path",
			    "destination \"%s\" (mapped in %s) does not declare %s, which listener "
			    "\"%s\" accepts; add [destination.%s.protocol.%s] or map those "
			    "accounts "
			    "elsewhere",
			    dest, cfg->mapping.file.path, sy_proto_name(l->protocol), l->name,
			    proto_owner(cfg, dest), sy_proto_name(l->protocol));
		}
	}
	free(seen);
}

/* [mapping.redis] tls_*: only meaningful with rediss://, and the files must
 * load as the store will load them. */
static void check_redis_tls(vctx *v, bool tls)
{
	const sy_mapping_config *m = &v->cfg->mapping;
	const struct {
		const char *key;
		bool set;
	} keys[] = {
	    {"mapping.redis.tls_ca_file", m->redis.tls_ca_file != NULL},
	    {"mapping.redis.tls_server_name", m->redis.tls_server_name != NULL},
	    {"mapping.redis.tls_allow_invalid_certs", m->redis.tls_allow_invalid_certs},
	    {"mapping.redis.tls_client_cert", m->redis.tls_client_cert != NULL},
	    {"mapping.redis.tls_client_key", m->redis.tls_client_key != NULL},
	};
	if (!tls) {
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			if (keys[i].set)
				verr(
				    v, keys[i].key,
				    "only applies to Redis over TLS; use a rediss:// url or remove "
				    "it");
		}
		return;
	}
	if (m->redis.tls_allow_invalid_certs)
		vwarn(v, "mapping.redis.tls_allow_invalid_certs",
		      "the Redis server's certificate is not verified: anyone on the path can "
		      "read and change the mappings; set tls_ca_file (or tls_server_name) "
		      "instead");
	if (m->redis.tls_server_name != NULL && m->redis.tls_server_name[0] == '\0')
		verr(v, "mapping.redis.tls_server_name",
		     "must not be empty; remove it to check the certificate against the url's "
		     "host");
	if (m->redis.tls_ca_file != NULL) {
		FILE *f = open_readable(v, "mapping.redis.tls_ca_file", m->redis.tls_ca_file,
		                        "CA certificate");
		if (f != NULL) {
			char why[256];
			ERR_clear_error();
			X509 *x = PEM_read_X509(f, NULL, no_passphrase, NULL);
			fclose(f);
			if (x == NULL)
				verr(v, "mapping.redis.tls_ca_file",
				     "%s is not a PEM certificate (%s); it must hold the CA "
				     "certificate(s) that issued the Redis server's certificate",
				     m->redis.tls_ca_file, ssl_reason(why, sizeof(why)));
			X509_free(x);
		}
	}
	if ((m->redis.tls_client_cert == NULL) != (m->redis.tls_client_key == NULL))
		verr(v,
		     m->redis.tls_client_cert == NULL ? "mapping.redis.tls_client_cert"
		                                      : "mapping.redis.tls_client_key",
		     "missing while %s is set; mutual TLS needs both the client certificate and "
		     "its key",
		     m->redis.tls_client_cert == NULL ? "tls_client_key" : "tls_client_cert");
	else if (m->redis.tls_client_cert != NULL)
		check_cert_pair(v, "mapping.redis.tls_client_cert", m->redis.tls_client_cert,
		                "mapping.redis.tls_client_key", m->redis.tls_client_key);
}

/* Entries of a libpq comma-separated list (0 when unset or empty). */
static unsigned pq_list_len(const PQconninfoOption *o, const char *key)
{
	for (; o->keyword; o++) {
		if (strcmp(o->keyword, key) != 0)
			continue;
		if (!o->val || !*o->val)
			return 0;
		unsigned n = 1;
		for (const char *p = o->val; (p = strchr(p, ',')) != NULL; p++)
			n++;
		return n;
	}
	return 0;
}

/* The store's rule for host lists (store_sql.c): host and hostaddr lists
 * of the same length, one port for all or one per host. */
static void check_sql_host_lists(vctx *v, const PQconninfoOption *o)
{
	unsigned nh = pq_list_len(o, "host"), na = pq_list_len(o, "hostaddr");
	unsigned np = pq_list_len(o, "port"), n = nh > na ? nh : na;
	if (nh && na && nh != na)
		verr(v, "mapping.sql.url", "the host and hostaddr lists differ in length");
	else if (np > 1 && np != (n ? n : 1))
		verr(v, "mapping.sql.url", "give one port, or one port per host");
}

static void check_mapping(vctx *v)
{
	const sy_config *cfg = v->cfg;
	const sy_mapping_config *m = &cfg->mapping;

	/* The same parser the store uses, so that --check-config refuses what
	 * the store would refuse at startup. */
	if (m->redis.url != NULL) {
		sy_redis_url u = {0};
		const char *uerr = NULL;
		if (!has_prefix_ci(m->redis.url, "redis://") &&
		    !has_prefix_ci(m->redis.url, "rediss://"))
			verr(v, "mapping.redis.url",
			     "must start with redis:// or rediss:// (TLS); write e.g. "
			     "\"redis://127.0.0.1:6379\"");
		else if (redis_url_parse(m->redis.url, &u, &uerr) != 0)
			verr(v, "mapping.redis.url", "%s",
			     uerr + (strncmp(uerr, "mapping.redis.url: ", 19) == 0 ? 19 : 0));
		else
			check_redis_tls(v, u.tls);
		redis_url_free(&u);
	}

	/* Fleet events channels (docs/CONFIGURATION.md). Redis: any channel
	 * name without spaces or control characters. PostgreSQL: LISTEN takes
	 * an identifier, which hand-written SQL (the documented trigger) folds
	 * to lower case unless quoted, so only [a-z0-9_], at most 63 bytes
	 * (NAMEDATALEN - 1). */
	if (m->redis.events_channel != NULL) {
		const char *c = m->redis.events_channel;
		size_t n = strlen(c);
		bool ok = n > 0 && n <= 256;
		for (size_t i = 0; ok && i < n; i++)
			ok = (unsigned char)c[i] > 0x20 && (unsigned char)c[i] != 0x7f;
		if (!ok)
			verr(v, "mapping.redis.events_channel",
			     "must be 1 to 256 characters without spaces or control characters "
			     "(default \"<key_prefix>events\")");
	}
	if (m->sql.events_channel != NULL) {
		const char *c = m->sql.events_channel;
		size_t n = strlen(c);
		bool ok = n > 0 && n <= 63;
		for (size_t i = 0; ok && i < n; i++)
			ok = (c[i] >= 'a' && c[i] <= 'z') || (c[i] >= '0' && c[i] <= '9') ||
			     c[i] == '_';
		if (!ok)
			verr(v, "mapping.sql.events_channel",
			     "must be 1 to 63 characters from a-z, 0-9 and _ (a PostgreSQL "
			     "channel name; default \"switchyard_events\")");
	}

	if (m->sql.url != NULL && !has_prefix_ci(m->sql.url, "postgres://") &&
	    !has_prefix_ci(m->sql.url, "postgresql://")) {
		if (has_prefix_ci(m->sql.url, "mysql:") || has_prefix_ci(m->sql.url, "mariadb:") ||
		    has_prefix_ci(m->sql.url, "sqlite:"))
			verr(v, "mapping.sql.url",
			     "this database is not supported; PostgreSQL is the supported SQL "
			     "store, "
			     "use a postgres:// or postgresql:// URL");
		else
			verr(v, "mapping.sql.url",
			     "must be a postgres:// or postgresql:// URL; PostgreSQL is the "
			     "supported "
			     "SQL store");
	}
	if (m->sql.url != NULL && (has_prefix_ci(m->sql.url, "postgres://") ||
	                           has_prefix_ci(m->sql.url, "postgresql://"))) {
		/* What the store does first at startup (a pure parse, no I/O). */
		char *perr = NULL;
		PQconninfoOption *o = PQconninfoParse(m->sql.url, &perr);
		if (o == NULL)
			/* libpq's message may quote the URL, password included. */
			verr(v, "mapping.sql.url",
			     "libpq cannot parse it (expected postgres://user@host:port/db; "
			     "percent-encode special characters in the password)");
		else
			check_sql_host_lists(v, o);
		PQconninfoFree(o);
		PQfreemem(perr);
	}
	if (m->sql.url != NULL && m->sql.query != NULL && strstr(m->sql.query, "$1") == NULL)
		verr(v, "mapping.sql.query",
		     "does not use $1; the identifier is passed as parameter $1, e.g. \"SELECT "
		     "destination FROM routes WHERE identifier = $1\"");
	if (m->sql.upsert_query != NULL && (strstr(m->sql.upsert_query, "$1") == NULL ||
	                                    strstr(m->sql.upsert_query, "$2") == NULL))
		verr(v, "mapping.sql.upsert_query",
		     "must use $1 (identifier) and $2 (destination)");
	if (m->sql.delete_query != NULL && strstr(m->sql.delete_query, "$1") == NULL)
		verr(v, "mapping.sql.delete_query", "must use $1 (identifier)");

	if (m->source == SY_MAP_FILE && m->file.path != NULL &&
	    !already_reported(v, "mapping.file.path")) {
		sy_mapfile mf = {0};
		if (mapfile_load(m->file.path, m->normalize == SY_NORMALIZE_LOWERCASE,
		                 config_target_cb, (void *)cfg, &mf, v->errs) != 0)
			v->failed = true;
		else
			check_mapped_targets(v, &mf);
		mapfile_free(&mf);
	}
}

/* ------------------------------------------------------------------------ */
/* HTTP routes                                                              */

static void check_http_target(vctx *v, const char *key, const char *id)
{
	if (!check_target(v, key, id))
		return;
	if (!config_target_has_proto(v->cfg, id, SY_PROTO_HTTP))
		verr(v, key, "\"%s\" does not declare http; add [destination.%s.protocol.http]", id,
		     proto_owner(v->cfg, id));
}

static void check_http(vctx *v)
{
	const sy_http_config *h = &v->cfg->http;
	char key[KEYMAX], sub[KEYMAX + 64];

	for (size_t i = 0; i < h->nroutes; i++) {
		const sy_http_route *r = &h->routes[i];
		snprintf(key, sizeof(key), "http.route[%zu]", i);
		if (r->destination != NULL && r->extract != SY_HTTP_EXTRACT_NONE) {
			verr(v, key,
			     "sets both destination and extract; use destination for a fixed "
			     "backend or extract to route by account, not both");
		} else if (r->destination == NULL && r->extract == SY_HTTP_EXTRACT_NONE) {
			snprintf(sub, sizeof(sub), "%s.destination", key);
			verr(v, sub,
			     "missing; set destination (a fixed backend) or extract (route by "
			     "account), e.g. extract = { from = \"authorization\" }");
		}
		if (r->destination != NULL) {
			snprintf(sub, sizeof(sub), "%s.destination", key);
			check_http_target(v, sub, r->destination);
		}
		if (r->fallback != NULL) {
			snprintf(sub, sizeof(sub), "%s.fallback", key);
			if (r->extract == SY_HTTP_EXTRACT_NONE)
				verr(v, sub, "only used with extract; remove it");
			else
				check_http_target(v, sub, r->fallback);
		}
		if (r->extract == SY_HTTP_EXTRACT_QUERY && r->param == NULL) {
			snprintf(sub, sizeof(sub), "%s.extract.param", key);
			verr(v, sub,
			     "missing; from = \"query\" needs param = \"<query parameter>\"");
		}
		if (r->extract == SY_HTTP_EXTRACT_HEADER && r->header == NULL) {
			snprintf(sub, sizeof(sub), "%s.extract.header", key);
			verr(v, sub, "missing; from = \"header\" needs header = \"<header name>\"");
		}
		if (r->extract == SY_HTTP_EXTRACT_BODY && r->regex == NULL) {
			snprintf(sub, sizeof(sub), "%s.extract.regex", key);
			verr(v, sub,
			     "missing; from = \"body\" needs regex = \"<POSIX ERE with one capture "
			     "group>\", e.g. \"username=([^&]+)\"");
		}
		if (r->regex != NULL) {
			regex_t re;
			int rc = regcomp(&re, r->regex, REG_EXTENDED);
			snprintf(sub, sizeof(sub), "%s.extract.regex", key);
			if (rc != 0) {
				char why[256];
				regerror(rc, &re, why, sizeof(why));
				verr(v, sub,
				     "does not compile as a POSIX extended regex (%s); fix it",
				     why);
			} else {
				if (re.re_nsub < 1)
					verr(v, sub,
					     "has no capture group; wrap the account part in "
					     "parentheses, e.g. \"username=([^&]+)\"");
				regfree(&re);
			}
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Clusters and admin                                                       */

static void check_clusters(vctx *v)
{
	const sy_config *cfg = v->cfg;
	char key[KEYMAX], sub[KEYMAX + 64];

	for (size_t i = 0; i < cfg->nclusters; i++) {
		const sy_cluster_config *cl = &cfg->clusters[i];
		const sy_destination_config *tmpl = NULL;
		bool tmpl_tls = false;

		snprintf(key, sizeof(key), "cluster.%s", QN(cl->id));
		if (config_destination(cfg, cl->id) != NULL)
			verr(v, key,
			     "a destination is also named \"%s\"; clusters and destinations share "
			     "one set of ids, rename one of them",
			     cl->id);
		if (cl->template_dest != NULL) {
			snprintf(sub, sizeof(sub), "%s.template", key);
			tmpl = config_destination(cfg, cl->template_dest);
			if (tmpl == NULL)
				verr(
				    v, sub,
				    "\"%s\" is not a declared destination; declare "
				    "[destination.%s] with the ports and TLS modes the nodes serve",
				    cl->template_dest, cl->template_dest);
		}
		for (int p = 0; tmpl != NULL && p < SY_PROTO_COUNT; p++)
			tmpl_tls |= tmpl->proto[p].declared && tmpl->proto[p].tls != SY_TLS_PLAIN;

		if (cl->nodes.len == 0 && !cl->has_kubernetes) {
			snprintf(sub, sizeof(sub), "%s.nodes", key);
			verr(
			    v, sub,
			    "missing; a cluster needs static nodes = [\"<destination>\", ...] or a "
			    "[cluster.%s.kubernetes] table for discovery",
			    cl->id);
		} else if (cl->nodes.len > 0 && cl->has_kubernetes) {
			snprintf(sub, sizeof(sub), "%s.nodes", key);
			verr(
			    v, sub,
			    "set together with [cluster.%s.kubernetes]; use either static nodes or "
			    "discovery, not both",
			    cl->id);
		}
		for (size_t j = 0; j < cl->nodes.len; j++) {
			const char *node = cl->nodes.items[j];
			const sy_destination_config *d = config_destination(cfg, node);
			snprintf(sub, sizeof(sub), "%s.nodes[%zu]", key, j);
			if (d == NULL) {
				verr(v, sub,
				     "\"%s\" is not a declared destination; declare "
				     "[destination.%s] "
				     "with the node's host",
				     node, node);
				continue;
			}
			if (tmpl_tls && d->host_is_ip && d->tls_server_name == NULL &&
			    tmpl->tls_server_name == NULL)
				verr(v, sub,
				     "node \"%s\" has the IP host \"%s\" and the template \"%s\" "
				     "uses "
				     "TLS; set tls_server_name on the node or on the template",
				     node, d->host, tmpl->id);
		}
		if (cl->has_kubernetes) {
			snprintf(sub, sizeof(sub), "%s.kubernetes", key);
			/* Discovered nodes are pod addresses: a TLS leg needs a
			 * name to verify the pods' certificate against. */
			if (tmpl_tls && tmpl->tls_server_name == NULL && !tmpl->has_pin &&
			    !tmpl->tls_allow_invalid_certs)
				verr(
				    v, sub,
				    "discovered nodes are pod IP addresses and the template \"%s\" "
				    "uses TLS; set tls_server_name on the template (the name in "
				    "the "
				    "pods' certificate)",
				    tmpl->id);
			if (cl->kubernetes.backoff_initial_ms > cl->kubernetes.backoff_max_ms)
				verr(v, sub, "backoff_initial is longer than backoff_max");
			if (cl->kubernetes.watch_timeout_ms < 1000)
				verr(
				    v, sub,
				    "watch_timeout is shorter than one second (the API takes whole "
				    "seconds)");
		}
	}
}

static void check_admin(vctx *v)
{
	const sy_admin_config *a = &v->cfg->admin;

	if (a->enabled && !a->tls && !a->allow_plaintext)
		verr(v, "admin.tls",
		     "\"plain\" would expose the management token in cleartext; use \"implicit\", "
		     "or set admin.allow_plaintext = true if the port is protected otherwise "
		     "(e.g. a TLS-terminating sidecar)");
}

/* ------------------------------------------------------------------------ */

int config_validate(const sy_config *cfg, sy_errors *errs, size_t prior_from, size_t prior_to,
                    sy_errors *warnings)
{
	vctx v = {.cfg = cfg,
	          .errs = errs,
	          .warns = warnings,
	          .prior_from = prior_from,
	          .prior_to = prior_to};

	/* An extracting route sends unmapped or unidentified requests to the
	 * default destination (or its fallback), so only then do http
	 * listeners need the default destination to speak http. */
	for (size_t i = 0; i < cfg->http.nroutes; i++)
		v.http_uses_default |= cfg->http.routes[i].extract != SY_HTTP_EXTRACT_NONE;

	check_routing(&v);
	check_passthrough(&v);
	check_listeners(&v);
	check_destinations(&v);
	check_tls(&v);
	check_mapping(&v);
	check_http(&v);
	check_clusters(&v);
	check_admin(&v);
	return v.failed ? -1 : 0;
}
