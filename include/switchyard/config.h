/*
 * The typed configuration model.
 *
 * config_load_*() turn a TOML document into an sy_config with every default
 * applied and every startup rule checked (the rules of the reference system's
 * Configuration, Listeners, Destinations and Troubleshooting pages plus
 * SPEC.md). A configuration that loads cannot misroute or leak credentials
 * through a simple omission. An sy_config is immutable once loaded: a reload
 * builds a new one and swaps it in.
 *
 * Every error message starts with the dotted path of the key it is about
 * (e.g. "listener.imap.tls: ...") and says what to do about it.
 */
#ifndef SWITCHYARD_CONFIG_H
#define SWITCHYARD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "switchyard/cidr.h"
#include "switchyard/errors.h"
#include "switchyard/log.h"

/* Protocols, in the order used for per-protocol arrays. */
typedef enum sy_proto {
	SY_PROTO_IMAP,
	SY_PROTO_POP3,
	SY_PROTO_MANAGESIEVE,
	SY_PROTO_SUBMISSION,
	SY_PROTO_SMTP,
	SY_PROTO_LMTP,
	SY_PROTO_HTTP,
	SY_PROTO_COUNT
} sy_proto;

/* "imap", "pop3", ... ; NULL for out-of-range values. */
const char *sy_proto_name(sy_proto p);
/* Returns 0 and sets *out, or -1 if `name` is not a protocol name. */
int sy_proto_parse(const char *name, sy_proto *out);
/* imap, pop3, managesieve, submission and http carry credentials. */
bool sy_proto_carries_credentials(sy_proto p);
/* smtp and lmtp are bridged as opaque byte streams. */
bool sy_proto_is_passthrough(sy_proto p);

typedef enum sy_tls_mode { SY_TLS_IMPLICIT, SY_TLS_STARTTLS, SY_TLS_PLAIN } sy_tls_mode;
const char *sy_tls_mode_name(sy_tls_mode m);

typedef enum sy_proxy_mode { SY_PROXY_OFF, SY_PROXY_OPTIONAL, SY_PROXY_REQUIRED } sy_proxy_mode;

typedef enum sy_forwarding {
	SY_FWD_UNSET, /* only in per-protocol overrides: inherit the destination's */
	SY_FWD_PROXY,
	SY_FWD_XCLIENT,
	SY_FWD_NONE
} sy_forwarding;
const char *sy_forwarding_name(sy_forwarding f);

typedef struct sy_strlist {
	char **items;
	size_t len;
} sy_strlist;

/* [server] */
typedef struct sy_server_config {
	uint32_t threads;                 /* 0 = one per core */
	char *hostname;                   /* NULL = use the local socket address */
	uint64_t shutdown_grace_ms;       /* 30s */
	uint64_t bridge_idle_ms;          /* 1800s */
	uint64_t backend_timeout_ms;      /* 10s */
	uint32_t backend_connect_retries; /* 1 */
	uint32_t host_down_threshold;     /* 5; 0 disables the circuit breaker */
	uint64_t host_down_cooldown_ms;   /* 30s */
	uint32_t proxy_ttl;               /* 7 */
	sy_log_level log_level;           /* info (after env overrides are applied by main) */
	sy_log_format log_format;         /* text */
} sy_server_config;

/* [tls.certificate.<name>] */
typedef struct sy_cert_config {
	char *name;
	char *cert_path;
	char *key_path;
	sy_strlist subjects; /* explicit list; empty = read SANs/CN from the certificate */
	bool is_default;
} sy_cert_config;

/* [tls.protocols] */
typedef struct sy_tls_policy {
	int min_version; /* 0x0303 (TLS 1.2, default) or 0x0304 (TLS 1.3) */
	bool ignore_client_order;
	sy_strlist disable_cipher_suites;
} sy_tls_policy;

/* Keys of the [tls] table itself: session tickets (Switchyard extensions). */
typedef struct sy_tls_tickets {
	char *key_file;       /* ticket_key_file; NULL = OpenSSL's per-process keys */
	uint64_t lifetime_ms; /* ticket_lifetime; 0 = OpenSSL's default (7200 s) */
} sy_tls_tickets;

/* One key of a ticket key file: the 80 bytes in file order. */
#define SY_TICKET_KEY_LEN  80
#define SY_TICKET_KEYS_MAX 64
typedef struct sy_ticket_key {
	unsigned char name[16]; /* sent in the clear in every ticket: picks the key */
	unsigned char hmac[32]; /* HMAC-SHA256 key (ticket integrity) */
	unsigned char aes[32];  /* AES-256-CBC key (ticket confidentiality) */
} sy_ticket_key;
_Static_assert(sizeof(sy_ticket_key) == SY_TICKET_KEY_LEN, "ticket key layout");

/* One parsed `bind` entry. */
typedef struct sy_bind_addr {
	char *text; /* as written, e.g. "[::]:993" */
	struct sockaddr_storage addr;
	socklen_t addrlen;
} sy_bind_addr;

/* [listener.<name>] */
typedef struct sy_listener_config {
	char *name;
	sy_proto protocol;
	sy_bind_addr *binds;
	size_t nbinds;
	sy_tls_mode tls;
	sy_proxy_mode proxy_protocol; /* off */
	sy_cidr *proxy_trusted;
	size_t nproxy_trusted;
	uint32_t max_connections;    /* 8192 */
	uint64_t preauth_timeout_ms; /* 30s */
	uint32_t max_auth_attempts;  /* 3 */
	bool forwarded_trust;        /* forwarded = "trust" (http only); default "off" */
} sy_listener_config;

/* [destination.<id>.protocol.<proto>] */
typedef struct sy_endpoint_config {
	bool declared;
	uint16_t port;
	sy_tls_mode tls;
	sy_forwarding forwarding; /* SY_FWD_UNSET = inherit */
} sy_endpoint_config;

/* [destination.<id>] */
typedef struct sy_destination_config {
	char *id;
	char *host; /* hostname or literal IP */
	bool host_is_ip;
	char *tls_server_name;    /* NULL = use host */
	bool proxy_protocol;      /* default true */
	sy_forwarding forwarding; /* resolved: never SY_FWD_UNSET after load */
	bool has_pin;
	uint8_t tls_pinned_cert_sha256[32];
	bool tls_allow_invalid_certs;
	char *tls_client_cert;
	char *tls_client_key;
	bool allow_plaintext_auth;
	sy_bind_addr *source_ips; /* port 0 */
	size_t nsource_ips;
	bool hide_auth_errors;
	bool forwarded; /* http: append Forwarded / X-Forwarded-For */
	sy_endpoint_config proto[SY_PROTO_COUNT];
} sy_destination_config;

/* Effective forwarding for one leg: the per-protocol override, else the
 * destination's. */
sy_forwarding sy_destination_forwarding(const sy_destination_config *d, sy_proto p);

/* [routing] */
typedef struct sy_routing_config {
	char *default_destination;          /* required */
	char *smtp_passthrough_destination; /* required when an smtp/lmtp listener exists */
	sy_strlist master_user_separators;  /* default ["%"] */
} sy_routing_config;

typedef enum sy_mapping_source {
	SY_MAP_NONE, /* no [mapping] table: everything goes to the default destination */
	SY_MAP_FILE,
	SY_MAP_REDIS,
	SY_MAP_SQL
} sy_mapping_source;

typedef enum sy_normalize { SY_NORMALIZE_NONE, SY_NORMALIZE_LOWERCASE } sy_normalize;
typedef enum sy_store_error_policy {
	SY_STORE_ERR_TEMPFAIL,
	SY_STORE_ERR_DEFAULT
} sy_store_error_policy;

/* [mapping] and its store sections */
typedef struct sy_mapping_config {
	sy_mapping_source source;
	sy_normalize normalize;               /* none */
	uint64_t positive_ttl_ms;             /* 600s */
	uint64_t negative_ttl_ms;             /* 30s */
	uint64_t cache_max_entries;           /* 1000000 */
	uint64_t lookup_timeout_ms;           /* 5s */
	sy_store_error_policy on_store_error; /* tempfail */
	struct {
		char *path;
	} file;
	struct {
		char *url;
		char *key_prefix;     /* "" */
		uint32_t pool_size;   /* 16 */
		char *events_channel; /* NULL: "<key_prefix>events" */
		bool watch_keyspace;  /* follow keyspace notifications (false) */
		/* rediss:// only: verification and mutual TLS, named as on
		 * destinations (plus tls_ca_file: NULL = platform store). */
		char *tls_ca_file;
		char *tls_server_name; /* NULL = the URL's host */
		bool tls_allow_invalid_certs;
		char *tls_client_cert;
		char *tls_client_key;
	} redis;
	struct {
		char *url;
		char *query; /* default "SELECT destination FROM routes WHERE identifier = $1" */
		char *upsert_query;   /* NULL = read-only */
		char *delete_query;   /* NULL = read-only */
		uint32_t pool_size;   /* 16 */
		char *events_channel; /* NULL: "switchyard_events" */
	} sql;
} sy_mapping_config;

/* [capabilities.<proto>] (imap, pop3, submission, managesieve) */
typedef struct sy_caps_config {
	sy_strlist sasl; /* default ["PLAIN", "OAUTHBEARER", "XOAUTH2"] */
	bool allow_plain_auth_without_tls;
	char *banner;         /* protocol-specific default */
	sy_strlist advertise; /* imap only */
	sy_strlist sieve;     /* managesieve only */
	char *implementation; /* managesieve only */
	sy_strlist ehlo;      /* submission only */
} sy_caps_config;

/* [oauth] */
typedef struct sy_oauth_config {
	char *jwt_username_claim; /* "email" */
} sy_oauth_config;

typedef enum sy_http_extract {
	SY_HTTP_EXTRACT_NONE, /* fixed destination */
	SY_HTTP_EXTRACT_AUTHORIZATION,
	SY_HTTP_EXTRACT_QUERY,
	SY_HTTP_EXTRACT_HEADER,
	SY_HTTP_EXTRACT_BODY
} sy_http_extract;

/* [[http.route]] */
typedef struct sy_http_route {
	char *match;       /* glob over the request path */
	char *destination; /* fixed destination or cluster id, or NULL with extract */
	sy_http_extract extract;
	char *param;    /* query */
	char *header;   /* header */
	char *regex;    /* body: POSIX ERE, capture group 1 */
	char *fallback; /* destination when nothing is extracted; NULL = default destination */
} sy_http_route;

/* [http] */
typedef struct sy_http_config {
	sy_http_route *routes;
	size_t nroutes;
	uint64_t body_extract_cap;       /* 65536 */
	uint64_t max_head_size;          /* 65536 */
	uint64_t relay_idle_ms;          /* 60s */
	uint64_t keepalive_timeout_ms;   /* 75s */
	uint32_t max_keepalive_requests; /* 1000 */
} sy_http_config;

/* [admin] */
typedef struct sy_admin_config {
	bool enabled;      /* the [admin] table is present */
	sy_bind_addr bind; /* "127.0.0.1:9443" */
	bool tls;          /* tls = "implicit" (default) */
	bool allow_plaintext;
	char *bearer_token_file;
	char *token;            /* the effective token: PROXY_ADMIN_TOKEN, else the file's content
	                           (trimmed), else bearer_token; NULL if none */
	uint32_t min_token_len; /* 32 */
	uint32_t lockout_threshold;   /* 5 */
	uint64_t lockout_duration_ms; /* 5m */
} sy_admin_config;

/* [cluster.<id>] */
typedef struct sy_cluster_config {
	char *id;
	char *template_dest; /* a destination whose ports, TLS and forwarding nodes inherit */
	sy_strlist nodes;    /* static members: declared destination ids */
	bool has_kubernetes;
	struct {
		char *service;
		char *namespace_; /* NULL = the pod's namespace */
		char *api_url;
		char *token_file;
		char *ca_file;
		char *kubeconfig;
		uint64_t watch_timeout_ms;   /* 5m: timeoutSeconds of each watch request */
		uint64_t backoff_initial_ms; /* 500ms: first retry delay after an error */
		uint64_t backoff_max_ms;     /* 30s: retry delays double up to this */
		uint64_t token_refresh_ms;   /* 1m: how often the token file is re-read */
	} kubernetes;
} sy_cluster_config;

typedef struct sy_config {
	char *path;    /* file it was loaded from (NULL for strings) */
	char *basedir; /* directory relative paths are resolved against */
	sy_server_config server;
	sy_cert_config *certs;
	size_t ncerts;
	sy_tls_policy tls_policy;
	sy_tls_tickets tls_tickets;
	sy_listener_config *listeners;
	size_t nlisteners;
	sy_destination_config *destinations;
	size_t ndestinations;
	sy_routing_config routing;
	sy_mapping_config mapping;
	sy_caps_config caps[SY_PROTO_COUNT]; /* only imap, pop3, submission, managesieve used */
	sy_oauth_config oauth;
	sy_http_config http;
	sy_admin_config admin;
	sy_cluster_config *clusters;
	size_t nclusters;
	sy_errors warnings; /* accepted settings worth telling about, each naming its key */
} sy_config;

/*
 * Loads and fully validates a configuration file (including reading the
 * certificates, keys and the mapping file it names). On success returns 0 and
 * *out owns a new config. On failure returns -1, *out is NULL and errs holds
 * every problem found (not just the first).
 */
int config_load_file(const char *path, sy_config **out, sy_errors *errs);

/* Same from a string; relative paths resolve against `basedir` (NULL = cwd). */
int config_load_string(const char *text, size_t len, const char *basedir, sy_config **out,
                       sy_errors *errs);

void config_free(sy_config *cfg);

/* Look-ups by id/name; NULL when absent. */
const sy_destination_config *config_destination(const sy_config *cfg, const char *id);
const sy_cluster_config *config_cluster(const sy_config *cfg, const char *id);

/* True if `id` names a destination or a cluster. */
bool config_is_target(const sy_config *cfg, const char *id);
/* config_is_target in the shape of a callback (mapfile.h): arg is the
 * const sy_config *. */
bool config_target_cb(void *cfg, const char *id);

/* Does the destination or cluster `id` declare protocol p? (A cluster declares
 * what its template declares.) */
bool config_target_has_proto(const sy_config *cfg, const char *id, sy_proto p);

/*
 * The cipher configuration implied by a [tls.protocols] policy, in OpenSSL's
 * syntax: *cipher_list for SSL_CTX_set_cipher_list() (TLS 1.2 and below; NULL
 * when no such suite remains or min_version is 1.3, in which case the caller
 * must not offer TLS 1.2) and *ciphersuites for SSL_CTX_set_ciphersuites()
 * (TLS 1.3; "" when none remains). Both start from OpenSSL's defaults minus
 * disable_cipher_suites (IANA or OpenSSL names, case-insensitive). Either
 * output may be NULL when not wanted; the caller frees the strings.
 * Returns 0, or -1 with messages in errs (may be NULL) for an unknown suite
 * name or a policy that leaves no suite at all. (Added by the config module.)
 */
int config_tls_ciphers(const sy_tls_policy *p, char **cipher_list, char **ciphersuites,
                       sy_errors *errs);

/*
 * Reads a TLS session ticket key file (tls.ticket_key_file). Format: one key
 * per line, each SY_TICKET_KEY_LEN bytes written as standard base64 (108
 * characters with its one '=' of padding, or 107 without) or as hex (160
 * digits, either case); blanks around a key, a CR before the newline, empty
 * lines and lines starting with '#' are ignored. At least one key and at
 * most SY_TICKET_KEYS_MAX; no two keys may have the same 16-byte name. The
 * first key encrypts new tickets, every key decrypts.
 *
 * On success returns the number of keys and *keys_out is a malloc'd array
 * the caller must wipe with OPENSSL_cleanse before freeing it. On failure
 * returns -1, *keys_out is NULL and why (whylen bytes) says what is wrong
 * and what to do, naming the file and line but never any key material.
 * Used by validation (so --check-config refuses what startup refuses) and by
 * the inbound TLS store, which reads the file again on every reload.
 */
int config_ticket_keys_read(const char *path, sy_ticket_key **keys_out, char *why, size_t whylen);

/* Parses "<n>ms|s|m|h|d" into milliseconds; returns 0 or -1. */
int sy_duration_parse(const char *s, uint64_t *ms_out);

/* Parses "1.2.3.4:port", "[v6]:port" into a sockaddr; returns 0 or -1.
 * When allow_no_port is true, a bare address yields port 0 (for source_ips). */
int sy_sockaddr_parse(const char *s, bool allow_no_port, struct sockaddr_storage *ss,
                      socklen_t *len);

/* True for 0.0.0.0 and :: (any other family: false). */
bool sy_sockaddr_is_wildcard(const struct sockaddr *sa);

#endif
