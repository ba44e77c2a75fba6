/*
 * TOML tree -> sy_config.
 *
 * This file knows the shape of the configuration: which tables exist, which
 * keys each accepts, their types and their defaults. It reports every key it
 * does not know, every wrong type and every bad enum value, each message
 * naming the full dotted key, and then hands the converted config to
 * validate.c for the rules that relate keys to one another.
 *
 * Each table is described by a `field` array; load_fields() walks the TOML
 * table once, so an unknown key can never slip through just because nobody
 * looked it up. Keys whose shape is special (sub-tables, addresses, lists
 * with their own rules) are marked F_CUSTOM and handled by the table's
 * loader right after.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_int.h"
#include "switchyard/cidr.h"
#include "switchyard/config.h"
#include "switchyard/hex.h"
#include "switchyard/log.h"
#include "switchyard/toml.h"

/* Longest dotted key we print; longer ones are cut (only messages use them). */
#define KEYMAX CFG_KEYMAX
/* Files we read whole (the config, the admin token) are bounded. */
#define CONFIG_MAX_BYTES (16u * 1024 * 1024)
#define TOKEN_MAX_BYTES  4096

/* ------------------------------------------------------------------------ */
/* Enumerations                                                             */

static const char *const proto_names[] = {"imap", "pop3", "managesieve", "submission",
                                          "smtp", "lmtp", "http",        NULL};
static const char *const tls_mode_names[] = {"implicit", "starttls", "plain", NULL};
static const char *const proxy_mode_names[] = {"off", "optional", "required", NULL};
static const char *const forwarding_names[] = {"proxy", "xclient", "none", NULL};
static const int forwarding_values[] = {SY_FWD_PROXY, SY_FWD_XCLIENT, SY_FWD_NONE};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const source_names[] = {"file", "redis", "sql", NULL};
static const int source_values[] = {SY_MAP_FILE, SY_MAP_REDIS, SY_MAP_SQL};
static const char *const normalize_names[] = {"none", "lowercase", NULL};
static const char *const store_error_names[] = {"tempfail", "default", NULL};
static const char *const extract_names[] = {"authorization", "query", "header", "body", NULL};
static const int extract_values[] = {SY_HTTP_EXTRACT_AUTHORIZATION, SY_HTTP_EXTRACT_QUERY,
                                     SY_HTTP_EXTRACT_HEADER, SY_HTTP_EXTRACT_BODY};
static const char *const admin_tls_names[] = {"implicit", "plain", NULL};
static const char *const forwarded_names[] = {"off", "trust", NULL};
static const char *const min_version_names[] = {"1.2", "1.3", NULL};

/* The enum fields below are written through an int; that is only sound if
 * the compiler gave every enum the size of an int. */
_Static_assert(sizeof(sy_proto) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_tls_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_proxy_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_forwarding) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_mapping_source) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_normalize) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_store_error_policy) == sizeof(int), "enum size");
_Static_assert(sizeof(sy_http_extract) == sizeof(int), "enum size");

const char *sy_proto_name(sy_proto p)
{
	if ((int)p < 0 || p >= SY_PROTO_COUNT)
		return NULL;
	return proto_names[p];
}

int sy_proto_parse(const char *name, sy_proto *out)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < SY_PROTO_COUNT; i++) {
		if (strcasecmp(name, proto_names[i]) == 0) {
			*out = (sy_proto)i;
			return 0;
		}
	}
	return -1;
}

bool sy_proto_carries_credentials(sy_proto p)
{
	return p == SY_PROTO_IMAP || p == SY_PROTO_POP3 || p == SY_PROTO_MANAGESIEVE ||
	       p == SY_PROTO_SUBMISSION || p == SY_PROTO_HTTP;
}

bool sy_proto_is_passthrough(sy_proto p)
{
	return p == SY_PROTO_SMTP || p == SY_PROTO_LMTP;
}

const char *sy_tls_mode_name(sy_tls_mode m)
{
	if ((int)m < 0 || m > SY_TLS_PLAIN)
		return NULL;
	return tls_mode_names[m];
}

const char *sy_forwarding_name(sy_forwarding f)
{
	switch (f) {
	case SY_FWD_UNSET:
		return "unset";
	case SY_FWD_PROXY:
		return "proxy";
	case SY_FWD_XCLIENT:
		return "xclient";
	case SY_FWD_NONE:
		return "none";
	}
	return NULL;
}

sy_forwarding sy_destination_forwarding(const sy_destination_config *d, sy_proto p)
{
	if ((int)p >= 0 && p < SY_PROTO_COUNT && d->proto[p].forwarding != SY_FWD_UNSET)
		return d->proto[p].forwarding;
	return d->forwarding;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/* ------------------------------------------------------------------------ */
/* Durations and socket addresses                                           */

int sy_duration_parse(const char *s, uint64_t *ms_out)
{
	uint64_t n = 0, mult;
	const char *p = s, *unit;
	size_t ulen;

	if (s == NULL)
		return -1;
	/* Blanks around the number and the unit are tolerated ("30 s"),
	 * as the reference implementation tolerates them. */
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	unit = p;
	while (*p >= 'a' && *p <= 'z')
		p++;
	ulen = (size_t)(p - unit);
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '\0')
		return -1;
	if (ulen == 2 && strncmp(unit, "ms", 2) == 0)
		mult = 1;
	else if (ulen == 1 && *unit == 's')
		mult = 1000;
	else if (ulen == 1 && *unit == 'm')
		mult = 60ull * 1000;
	else if (ulen == 1 && *unit == 'h')
		mult = 3600ull * 1000;
	else if (ulen == 1 && *unit == 'd')
		mult = 86400ull * 1000;
	else
		return -1;
	if (n != 0 && n > UINT64_MAX / mult)
		return -1;
	*ms_out = n * mult;
	return 0;
}

/* Parses a decimal port (no sign, no leading '+', at most 5 digits). */
static int parse_port(const char *s, uint16_t *out)
{
	unsigned long v = 0;
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		if (!isdigit((unsigned char)s[n]) || n >= 5)
			return -1;
		v = v * 10 + (unsigned long)(s[n] - '0');
	}
	if (n == 0 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* Parses an IPv6 literal with an optional %scope (name or number). */
static int parse_v6(const char *s, size_t len, struct sockaddr_in6 *sin6)
{
	char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	const char *pct;
	size_t alen;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	pct = strchr(buf, '%');
	alen = pct != NULL ? (size_t)(pct - buf) : len;
	buf[alen] = '\0';
	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
		return -1;
	if (pct != NULL) {
		const char *scope = buf + alen + 1;
		char *end;
		unsigned long idx;
		if (*scope == '\0')
			return -1;
		errno = 0;
		idx = strtoul(scope, &end, 10);
		if (*end != '\0' || errno != 0 || idx > UINT32_MAX)
			idx = if_nametoindex(scope);
		if (idx == 0)
			return -1;
		sin6->sin6_scope_id = (uint32_t)idx;
	}
	return 0;
}

bool sy_sockaddr_is_wildcard(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

int sy_sockaddr_parse(const char *s, bool allow_no_port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
	uint16_t port = 0;
	const char *colon;

	if (s == NULL || ss == NULL || len == NULL)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (close == NULL || parse_v6(s + 1, (size_t)(close - s - 1), sin6) != 0)
			return -1;
		if (close[1] == ':') {
			if (parse_port(close + 2, &port) != 0)
				return -1;
		} else if (close[1] != '\0' || !allow_no_port) {
			return -1;
		}
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return 0;
	}

	colon = strchr(s, ':');
	if (colon != NULL && strchr(colon + 1, ':') != NULL) {
		/* Several colons and no brackets: a bare IPv6 address, which
		 * cannot carry a port without brackets. */
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (!allow_no_port || parse_v6(s, strlen(s), sin6) != 0)
			return -1;
		*len = sizeof(*sin6);
		return 0;
	}

	char host[INET_ADDRSTRLEN];
	size_t hlen = colon != NULL ? (size_t)(colon - s) : strlen(s);
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (colon != NULL) {
		if (parse_port(colon + 1, &port) != 0)
			return -1;
	} else if (!allow_no_port) {
		return -1;
	}
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return -1;
	sin->sin_port = htons(port);
	*len = sizeof(*sin);
	return 0;
}

bool cfg_host_is_ip(const char *host)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (host == NULL || *host == '\0')
		return false;
	return sy_sockaddr_parse(host, true, &ss, &len) == 0 &&
	       (ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port == 0
	                                : ((struct sockaddr_in6 *)&ss)->sin6_port == 0);
}

/* ------------------------------------------------------------------------ */
/* Conversion context and key paths                                         */

typedef struct ctx {
	sy_errors *errs;
	const char *basedir; /* absolute, never NULL */
	sy_config *cfg;
} ctx;

/* Appends `key` to `prefix` as TOML would write it: bare when it can be,
 * quoted otherwise. */
static void key_join(char *out, const char *prefix, const char *key, size_t keylen)
{
	bool bare = keylen > 0;
	size_t n = 0;

	for (size_t i = 0; i < keylen && bare; i++) {
		unsigned char ch = (unsigned char)key[i];
		bare = isalnum(ch) || ch == '_' || ch == '-';
	}
	if (prefix != NULL && prefix[0] != '\0') {
		n = strlen(prefix);
		if (n > KEYMAX - 8)
			n = KEYMAX - 8;
		memcpy(out, prefix, n);
		out[n++] = '.';
	}
	if (!bare)
		out[n++] = '"';
	for (size_t i = 0; i < keylen && n < KEYMAX - 5; i++) {
		unsigned char ch = (unsigned char)key[i];
		if (!bare && (ch == '"' || ch == '\\'))
			out[n++] = '\\';
		out[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	if (!bare)
		out[n++] = '"';
	out[n] = '\0';
}

const char *cfg_qname(const char *name, char *buf)
{
	key_join(buf, NULL, name, strlen(name));
	return buf;
}

static void key_sub(char *out, const char *prefix, const char *key)
{
	key_join(out, prefix, key, strlen(key));
}

static void key_index(char *out, const char *prefix, size_t idx)
{
	snprintf(out, KEYMAX, "%.*s[%zu]", KEYMAX - 24, prefix, idx);
}

static const char *type_article(toml_type t)
{
	return (t == TOML_INTEGER || t == TOML_ARRAY) ? "an" : "a";
}

static void err_type(ctx *c, const char *key, const char *expected, const toml_value *v)
{
	sy_errors_add(c->errs, "%s: expected %s, found %s %s (line %d)", key, expected,
	              type_article(v->type), toml_type_name(v->type), v->line);
}

/* Joins a NULL-terminated name list as `"a", "b", "c"`. */
static void names_join(char *out, size_t outlen, const char *const *names)
{
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; names[i] != NULL && n < outlen; i++)
		n += (size_t)snprintf(out + n, outlen - n, "%s\"%s\"", i ? ", " : "", names[i]);
}

/*
 * The text of a TOML string value. Only this accessor is used, so that an
 * empty string is always "" whatever buffer the parser left behind, and
 * has_nul() looks only at the bytes the parser says are there.
 */
static const char *sv(const toml_value *v)
{
	return v->u.str.len == 0 ? "" : v->u.str.ptr;
}

static bool has_nul(const toml_value *v)
{
	return v->u.str.len > 0 && memchr(v->u.str.ptr, '\0', v->u.str.len) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Typed getters: each reports its own error and returns -1 on failure.     */

static int get_string(ctx *c, const toml_value *v, const char *key, bool empty_ok, char **out)
{
	if (v->type != TOML_STRING) {
		err_type(c, key, "a string", v);
		return -1;
	}
	if (has_nul(v)) {
		sy_errors_add(c->errs, "%s: contains a NUL character; remove it", key);
		return -1;
	}
	if (!empty_ok && v->u.str.len == 0) {
		sy_errors_add(c->errs, "%s: must not be empty; set a value or remove the key", key);
		return -1;
	}
	free(*out);
	*out = cfg_xstrdup(sv(v));
	return 0;
}

static int get_bool(ctx *c, const toml_value *v, const char *key, bool *out)
{
	if (v->type != TOML_BOOL) {
		err_type(c, key, "a boolean (true or false)", v);
		return -1;
	}
	*out = v->u.boolean;
	return 0;
}

static int get_uint(ctx *c, const toml_value *v, const char *key, uint64_t max, bool nonzero,
                    uint64_t *out)
{
	if (v->type != TOML_INTEGER) {
		err_type(c, key, "an integer", v);
		return -1;
	}
	if (v->u.integer < 0) {
		sy_errors_add(c->errs, "%s: must not be negative (found %lld); use a value >= %d",
		              key, (long long)v->u.integer, nonzero ? 1 : 0);
		return -1;
	}
	if ((uint64_t)v->u.integer > max) {
		sy_errors_add(c->errs, "%s: %lld is too large; the maximum is %llu", key,
		              (long long)v->u.integer, (unsigned long long)max);
		return -1;
	}
	if (nonzero && v->u.integer == 0) {
		sy_errors_add(c->errs, "%s: must be greater than 0; 0 has no meaning here", key);
		return -1;
	}
	*out = (uint64_t)v->u.integer;
	return 0;
}

static int get_duration(ctx *c, const toml_value *v, const char *key, bool nonzero, uint64_t *out)
{
	uint64_t ms;

	if (v->type != TOML_STRING) {
		err_type(c, key, "a duration string such as \"30s\"", v);
		return -1;
	}
	if (sy_duration_parse(sv(v), &ms) != 0) {
		sy_errors_add(c->errs,
		              "%s: \"%s\" is not a duration; write a whole number followed by "
		              "ms, s, m, h or d, e.g. \"30s\"",
		              key, sv(v));
		return -1;
	}
	if (nonzero && ms == 0) {
		sy_errors_add(c->errs, "%s: must be longer than 0; 0 has no meaning here", key);
		return -1;
	}
	*out = ms;
	return 0;
}

static void strlist_free(sy_strlist *l)
{
	for (size_t i = 0; i < l->len; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->len = 0;
}

static void strlist_set(sy_strlist *l, const char *const *items)
{
	size_t n = 0;

	strlist_free(l);
	while (items[n] != NULL)
		n++;
	l->items = cfg_xcalloc(n, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		l->items[i] = cfg_xstrdup(items[i]);
	l->len = n;
}

static int get_strlist(ctx *c, const toml_value *v, const char *key, sy_strlist *out)
{
	char ik[KEYMAX];
	int rc = 0;

	if (v->type != TOML_ARRAY) {
		err_type(c, key, "an array of strings", v);
		return -1;
	}
	for (size_t i = 0; i < v->u.arr.len; i++) {
		const toml_value *it = v->u.arr.items[i];
		key_index(ik, key, i);
		if (it->type != TOML_STRING) {
			err_type(c, ik, "a string", it);
			rc = -1;
		} else if (has_nul(it)) {
			sy_errors_add(c->errs, "%s: contains a NUL character; remove it", ik);
			rc = -1;
		}
	}
	if (rc != 0)
		return -1;
	strlist_free(out);
	out->items = cfg_xcalloc(v->u.arr.len, sizeof(char *));
	for (size_t i = 0; i < v->u.arr.len; i++)
		out->items[i] = cfg_xstrdup(sv(v->u.arr.items[i]));
	out->len = v->u.arr.len;
	return 0;
}

/* Matches a string against `names` (case-insensitive); *idx is its index. */
static int get_enum(ctx *c, const toml_value *v, const char *key, const char *const *names,
                    int *idx)
{
	char allowed[256];

	if (v->type != TOML_STRING) {
		names_join(allowed, sizeof(allowed), names);
		sy_errors_add(
		    c->errs, "%s: expected a string, found %s %s (line %d); allowed values: %s",
		    key, type_article(v->type), toml_type_name(v->type), v->line, allowed);
		return -1;
	}
	for (int i = 0; names[i] != NULL; i++) {
		if (strlen(names[i]) == v->u.str.len &&
		    strncasecmp(sv(v), names[i], v->u.str.len) == 0) {
			*idx = i;
			return 0;
		}
	}
	names_join(allowed, sizeof(allowed), names);
	sy_errors_add(c->errs, "%s: invalid value \"%s\"; allowed values: %s", key, sv(v), allowed);
	return -1;
}

/* Makes a relative path absolute against the config file's directory, so
 * that a config and the files it names can be moved together (and so that a
 * later chdir() cannot change what they mean). */
static char *resolve_path(ctx *c, const char *p)
{
	char *out;

	if (p[0] == '/')
		return cfg_xstrdup(p);
	if (asprintf(&out, "%s/%s", c->basedir, p) < 0) {
		fputs("switchyard: out of memory while loading configuration\n", stderr);
		abort();
	}
	return out;
}

static int get_path(ctx *c, const toml_value *v, const char *key, char **out)
{
	char *raw = NULL;

	if (get_string(c, v, key, false, &raw) != 0)
		return -1;
	free(*out);
	*out = resolve_path(c, raw);
	free(raw);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Field tables                                                             */

typedef enum ftype {
	F_STR,     /* char *                                  */
	F_PATH,    /* char *, relative -> config directory    */
	F_BOOL,    /* bool                                    */
	F_U32,     /* uint32_t                                */
	F_U64,     /* uint64_t                                */
	F_PORT,    /* uint16_t, 1..65535                      */
	F_DUR,     /* uint64_t milliseconds                   */
	F_STRLIST, /* sy_strlist                              */
	F_ENUM,    /* int-sized enum                          */
	F_CUSTOM,  /* accepted here, converted by the caller  */
} ftype;

enum {
	REQUIRED = 1 << 0, /* missing is an error */
	NONZERO = 1 << 1,  /* 0 is an error */
	EMPTY_OK = 1 << 2, /* "" is allowed for strings */
};

typedef struct field {
	const char *name;
	ftype type;
	size_t off;
	unsigned flags;
	const char *const *names; /* F_ENUM */
	const int *values;        /* F_ENUM; NULL = the index is the value */
	uint64_t max;             /* F_U32/F_U64; 0 = the type's maximum */
	const char *hint;         /* remedy when REQUIRED and missing */
} field;

#define FLD(n, t, type_, member, ...)                                                              \
	{                                                                                          \
		.name = (n), .type = (type_), .off = offsetof(t, member), __VA_ARGS__              \
	}
#define CUSTOM(n, ...)                                                                             \
	{                                                                                          \
		.name = (n), .type = F_CUSTOM, __VA_ARGS__                                         \
	}
#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static const field *find_field(const field *fs, size_t nf, const toml_kv *kv)
{
	for (size_t i = 0; i < nf; i++) {
		if (strlen(fs[i].name) == kv->keylen &&
		    memcmp(fs[i].name, kv->key, kv->keylen) == 0)
			return &fs[i];
	}
	return NULL;
}

static void load_field(ctx *c, const field *f, const toml_value *v, const char *key, void *base)
{
	/* Tables of only F_CUSTOM fields are loaded with a NULL base, and
	 * NULL + 0 is undefined behaviour (UBSan reports it). */
	char *p = base ? (char *)base + f->off : NULL;
	uint64_t u;
	int idx;

	switch (f->type) {
	case F_STR:
		get_string(c, v, key, (f->flags & EMPTY_OK) != 0, (char **)p);
		break;
	case F_PATH:
		get_path(c, v, key, (char **)p);
		break;
	case F_BOOL:
		get_bool(c, v, key, (bool *)p);
		break;
	case F_U32:
		if (get_uint(c, v, key, f->max ? f->max : UINT32_MAX, f->flags & NONZERO, &u) == 0)
			*(uint32_t *)p = (uint32_t)u;
		break;
	case F_U64:
		if (get_uint(c, v, key, f->max ? f->max : INT64_MAX, f->flags & NONZERO, &u) == 0)
			*(uint64_t *)p = u;
		break;
	case F_PORT:
		if (get_uint(c, v, key, 65535, true, &u) == 0)
			*(uint16_t *)p = (uint16_t)u;
		break;
	case F_DUR:
		get_duration(c, v, key, f->flags & NONZERO, (uint64_t *)p);
		break;
	case F_STRLIST:
		get_strlist(c, v, key, (sy_strlist *)p);
		break;
	case F_ENUM:
		if (get_enum(c, v, key, f->names, &idx) == 0)
			*(int *)p = f->values != NULL ? f->values[idx] : idx;
		break;
	case F_CUSTOM:
		break;
	}
}

/*
 * Converts every key of `tbl` described by `fs` into the struct at `base`,
 * reports unknown keys and missing required ones. F_CUSTOM keys are only
 * recognised; the caller converts them.
 */
static void load_fields(ctx *c, const toml_value *tbl, const char *path, const field *fs, size_t nf,
                        void *base)
{
	char key[KEYMAX];

	for (size_t i = 0; i < tbl->u.tab.len; i++) {
		const toml_kv *kv = &tbl->u.tab.items[i];
		const field *f = find_field(fs, nf, kv);
		key_join(key, path, kv->key, kv->keylen);
		if (f == NULL) {
			char allowed[1024];
			size_t n = 0;
			allowed[0] = '\0';
			for (size_t j = 0; j < nf && n < sizeof(allowed); j++)
				n += (size_t)snprintf(allowed + n, sizeof(allowed) - n, "%s%s",
				                      j ? ", " : "", fs[j].name);
			sy_errors_add(c->errs, "%s: unknown key (line %d); allowed here: %s", key,
			              kv->line, allowed);
			continue;
		}
		load_field(c, f, kv->value, key, base);
	}
	for (size_t i = 0; i < nf; i++) {
		if ((fs[i].flags & REQUIRED) && toml_get(tbl, fs[i].name) == NULL) {
			key_sub(key, path, fs[i].name);
			sy_errors_add(c->errs, "%s: missing; %s", key,
			              fs[i].hint ? fs[i].hint : "this key is required");
		}
	}
}

/* Checks that `v` is a table; reports it otherwise. */
static bool want_table(ctx *c, const toml_value *v, const char *key)
{
	if (v->type == TOML_TABLE)
		return true;
	err_type(c, key, "a table", v);
	return false;
}

/* Rejects names that a mapping file or a log line could not carry. */
static bool valid_id(ctx *c, const char *key, const char *name, size_t len)
{
	if (len == 0 || strlen(name) != len) {
		sy_errors_add(c->errs, "%s: the name must not be empty or contain NUL; rename it",
		              key);
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch <= 0x20 || ch == 0x7f) {
			sy_errors_add(c->errs,
			              "%s: the name contains whitespace or a control character, so "
			              "a mapping file could not refer to it; rename it",
			              key);
			return false;
		}
	}
	return true;
}

/* ------------------------------------------------------------------------ */
/* [server]                                                                 */

static const field server_fields[] = {
    FLD("threads", sy_server_config, F_U32, threads, .max = 4096),
    FLD("hostname", sy_server_config, F_STR, hostname),
    FLD("shutdown_grace", sy_server_config, F_DUR, shutdown_grace_ms),
    FLD("bridge_idle", sy_server_config, F_DUR, bridge_idle_ms, .flags = NONZERO),
    FLD("backend_timeout", sy_server_config, F_DUR, backend_timeout_ms, .flags = NONZERO),
    FLD("backend_connect_retries", sy_server_config, F_U32, backend_connect_retries, .max = 100),
    FLD("host_down_threshold", sy_server_config, F_U32, host_down_threshold),
    FLD("host_down_cooldown", sy_server_config, F_DUR, host_down_cooldown_ms),
    FLD("proxy_ttl", sy_server_config, F_U32, proxy_ttl, .flags = NONZERO, .max = 255),
    CUSTOM("log_level"),
    FLD("log_format", sy_server_config, F_ENUM, log_format, .names = log_format_names),
};

static void load_server(ctx *c, const toml_value *t)
{
	sy_server_config *s = &c->cfg->server;
	const toml_value *v;

	load_fields(c, t, "server", server_fields, NFIELDS(server_fields), s);
	if ((v = toml_get(t, "log_level")) != NULL) {
		/* The reference takes a tracing filter here ("info" or
		 * "info,proxy=debug"); accept the same and keep its level. */
		if (v->type != TOML_STRING)
			err_type(c, "server.log_level", "a string such as \"info\"", v);
		else if (log_filter_parse(sv(v), &s->log_level) != 0)
			sy_errors_add(c->errs,
			              "server.log_level: invalid value \"%s\"; allowed values: "
			              "\"error\", \"warn\", \"info\", \"debug\", \"trace\" (or a "
			              "target=level list)",
			              sv(v));
	}
}

/* ------------------------------------------------------------------------ */
/* [tls]                                                                    */

static const field cert_fields[] = {
    FLD("cert", sy_cert_config, F_PATH, cert_path, .flags = REQUIRED,
        .hint = "set it to the PEM file holding the certificate chain"),
    FLD("key", sy_cert_config, F_PATH, key_path, .flags = REQUIRED,
        .hint = "set it to the PEM file holding the private key"),
    FLD("subjects", sy_cert_config, F_STRLIST, subjects),
    FLD("default", sy_cert_config, F_BOOL, is_default),
};

static const field tls_protocols_fields[] = {
    CUSTOM("min_version"),
    FLD("ignore_client_order", sy_tls_policy, F_BOOL, ignore_client_order),
    FLD("disable_cipher_suites", sy_tls_policy, F_STRLIST, disable_cipher_suites),
};

/* ticket_key_file and ticket_lifetime are Switchyard extensions (the
 * reference has no such keys): absent, OpenSSL's defaults stay. */
static const field tls_fields[] = {
    CUSTOM("certificate"),
    CUSTOM("protocols"),
    FLD("ticket_key_file", sy_tls_tickets, F_PATH, key_file),
    FLD("ticket_lifetime", sy_tls_tickets, F_DUR, lifetime_ms, .flags = NONZERO),
};

static void load_tls(ctx *c, const toml_value *t)
{
	sy_config *cfg = c->cfg;
	const toml_value *v;
	char key[KEYMAX];

	load_fields(c, t, "tls", tls_fields, NFIELDS(tls_fields), &cfg->tls_tickets);

	if ((v = toml_get(t, "certificate")) != NULL && want_table(c, v, "tls.certificate")) {
		cfg->certs = cfg_xcalloc(v->u.tab.len, sizeof(*cfg->certs));
		for (size_t i = 0; i < v->u.tab.len; i++) {
			const toml_kv *kv = &v->u.tab.items[i];
			key_join(key, "tls.certificate", kv->key, kv->keylen);
			if (!want_table(c, kv->value, key))
				continue;
			sy_cert_config *cert = &cfg->certs[cfg->ncerts++];
			cert->name = cfg_xstrdup(kv->key);
			load_fields(c, kv->value, key, cert_fields, NFIELDS(cert_fields), cert);
		}
	}

	if ((v = toml_get(t, "protocols")) != NULL && want_table(c, v, "tls.protocols")) {
		const toml_value *mv;
		int idx;
		load_fields(c, v, "tls.protocols", tls_protocols_fields,
		            NFIELDS(tls_protocols_fields), &cfg->tls_policy);
		if ((mv = toml_get(v, "min_version")) != NULL &&
		    get_enum(c, mv, "tls.protocols.min_version", min_version_names, &idx) == 0)
			cfg->tls_policy.min_version = idx == 0 ? 0x0303 : 0x0304;
	}
}

/* ------------------------------------------------------------------------ */
/* [listener.<name>]                                                        */

static const field listener_fields[] = {
    FLD("protocol", sy_listener_config, F_ENUM, protocol, .names = proto_names, .flags = REQUIRED,
        .hint = "set it to one of \"imap\", \"pop3\", \"managesieve\", \"submission\", "
                "\"smtp\", \"lmtp\", \"http\""),
    CUSTOM("bind", .flags = REQUIRED,
           .hint = "list the addresses to listen on, e.g. bind = [\"0.0.0.0:993\", \"[::]:993\"]"),
    FLD("tls", sy_listener_config, F_ENUM, tls, .names = tls_mode_names, .flags = REQUIRED,
        .hint = "set it to \"implicit\", \"starttls\" or \"plain\""),
    FLD("proxy_protocol", sy_listener_config, F_ENUM, proxy_protocol, .names = proxy_mode_names),
    CUSTOM("proxy_trusted"),
    FLD("max_connections", sy_listener_config, F_U32, max_connections, .flags = NONZERO),
    FLD("preauth_timeout", sy_listener_config, F_DUR, preauth_timeout_ms, .flags = NONZERO),
    FLD("max_auth_attempts", sy_listener_config, F_U32, max_auth_attempts, .flags = NONZERO),
    CUSTOM("forwarded"),
};

/* Parses a list of "ip:port" strings (a single string is accepted too, as
 * Stalwart's own configuration allows). Port 0 is rejected: the proxy must
 * know the port it serves, e.g. for its loop guard. */
static void load_binds(ctx *c, const toml_value *v, const char *key, sy_bind_addr **out,
                       size_t *nout)
{
	const toml_value *single[1];
	const toml_value *const *items;
	size_t n;
	char ik[KEYMAX];

	if (v->type == TOML_STRING) {
		single[0] = v;
		items = single;
		n = 1;
	} else if (v->type == TOML_ARRAY) {
		items = (const toml_value *const *)v->u.arr.items;
		n = v->u.arr.len;
	} else {
		err_type(c, key, "an array of \"ip:port\" strings", v);
		return;
	}
	if (n == 0) {
		sy_errors_add(c->errs,
		              "%s: empty; list at least one address such as \"0.0.0.0:993\"", key);
		return;
	}
	*out = cfg_xcalloc(n, sizeof(**out));
	for (size_t i = 0; i < n; i++) {
		const toml_value *it = items[i];
		sy_bind_addr *b = &(*out)[*nout];
		key_index(ik, key, i);
		if (it->type != TOML_STRING) {
			err_type(c, ik, "an \"ip:port\" string", it);
			continue;
		}
		if (sy_sockaddr_parse(sv(it), false, &b->addr, &b->addrlen) != 0) {
			sy_errors_add(
			    c->errs,
			    "%s: \"%s\" is not \"ip:port\" or \"[ipv6]:port\" with a port "
			    "between 1 and 65535; write e.g. \"0.0.0.0:993\" or \"[::]:993\"",
			    key, sv(it));
			continue;
		}
		uint16_t port = b->addr.ss_family == AF_INET
		                    ? ntohs(((struct sockaddr_in *)&b->addr)->sin_port)
		                    : ntohs(((struct sockaddr_in6 *)&b->addr)->sin6_port);
		if (port == 0) {
			sy_errors_add(c->errs,
			              "%s: \"%s\" has port 0; use a port between 1 and 65535", key,
			              sv(it));
			continue;
		}
		b->text = cfg_xstrdup(sv(it));
		(*nout)++;
	}
}

static void load_cidrs(ctx *c, const toml_value *v, const char *key, sy_cidr **out, size_t *nout)
{
	char ik[KEYMAX];

	if (v->type != TOML_ARRAY) {
		err_type(c, key, "an array of CIDR strings", v);
		return;
	}
	*out = cfg_xcalloc(v->u.arr.len, sizeof(**out));
	for (size_t i = 0; i < v->u.arr.len; i++) {
		const toml_value *it = v->u.arr.items[i];
		key_index(ik, key, i);
		if (it->type != TOML_STRING) {
			err_type(c, ik, "a CIDR string such as \"10.0.0.0/8\"", it);
			continue;
		}
		if (cidr_parse(sv(it), &(*out)[*nout]) != 0) {
			sy_errors_add(
			    c->errs,
			    "%s: \"%s\" is not a CIDR range; write an address with an "
			    "optional prefix length, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\"",
			    key, sv(it));
			continue;
		}
		(*nout)++;
	}
}

static void load_listeners(ctx *c, const toml_value *t)
{
	sy_config *cfg = c->cfg;
	char key[KEYMAX], sub[KEYMAX];

	cfg->listeners = cfg_xcalloc(t->u.tab.len, sizeof(*cfg->listeners));
	for (size_t i = 0; i < t->u.tab.len; i++) {
		const toml_kv *kv = &t->u.tab.items[i];
		const toml_value *v;
		key_join(key, "listener", kv->key, kv->keylen);
		if (!want_table(c, kv->value, key))
			continue;
		sy_listener_config *l = &cfg->listeners[cfg->nlisteners++];
		l->name = cfg_xstrdup(kv->key);
		l->proxy_protocol = SY_PROXY_OFF;
		l->max_connections = 8192;
		l->preauth_timeout_ms = 30000;
		l->max_auth_attempts = 3;
		load_fields(c, kv->value, key, listener_fields, NFIELDS(listener_fields), l);

		if ((v = toml_get(kv->value, "bind")) != NULL) {
			key_sub(sub, key, "bind");
			load_binds(c, v, sub, &l->binds, &l->nbinds);
		}
		if ((v = toml_get(kv->value, "proxy_trusted")) != NULL) {
			key_sub(sub, key, "proxy_trusted");
			load_cidrs(c, v, sub, &l->proxy_trusted, &l->nproxy_trusted);
		}
		if ((v = toml_get(kv->value, "forwarded")) != NULL) {
			int idx;
			key_sub(sub, key, "forwarded");
			/* A boolean is accepted as well: true reads naturally
			 * as "trust the forwarded headers". */
			if (v->type == TOML_BOOL)
				l->forwarded_trust = v->u.boolean;
			else if (get_enum(c, v, sub, forwarded_names, &idx) == 0)
				l->forwarded_trust = idx == 1;
		}
	}
}

/* ------------------------------------------------------------------------ */
/* [destination.<id>]                                                       */

static const field dest_fields[] = {
    FLD("host", sy_destination_config, F_STR, host, .flags = REQUIRED,
        .hint = "set it to the backend's hostname or IP address"),
    FLD("tls_server_name", sy_destination_config, F_STR, tls_server_name),
    FLD("proxy_protocol", sy_destination_config, F_BOOL, proxy_protocol),
    FLD("forwarding", sy_destination_config, F_ENUM, forwarding, .names = forwarding_names,
        .values = forwarding_values),
    CUSTOM("tls_pinned_cert_sha256"),
    FLD("tls_allow_invalid_certs", sy_destination_config, F_BOOL, tls_allow_invalid_certs),
    FLD("tls_client_cert", sy_destination_config, F_PATH, tls_client_cert),
    FLD("tls_client_key", sy_destination_config, F_PATH, tls_client_key),
    FLD("allow_plaintext_auth", sy_destination_config, F_BOOL, allow_plaintext_auth),
    CUSTOM("source_ips"),
    FLD("hide_auth_errors", sy_destination_config, F_BOOL, hide_auth_errors),
    FLD("forwarded", sy_destination_config, F_BOOL, forwarded),
    CUSTOM("protocol"),
};

static const field endpoint_fields[] = {
    FLD("port", sy_endpoint_config, F_PORT, port, .flags = REQUIRED,
        .hint = "set the backend port for this protocol"),
    FLD("tls", sy_endpoint_config, F_ENUM, tls, .names = tls_mode_names, .flags = REQUIRED,
        .hint = "set it to \"implicit\", \"starttls\" or \"plain\""),
    FLD("forwarding", sy_endpoint_config, F_ENUM, forwarding, .names = forwarding_names,
        .values = forwarding_values),
};

static void load_pin(ctx *c, const toml_value *v, const char *key, sy_destination_config *d)
{
	uint8_t out[32];
	size_t nd = 0;
	int hi = -1;

	if (v->type != TOML_STRING) {
		err_type(c, key, "a string of 64 hexadecimal digits", v);
		return;
	}
	for (const char *p = sv(v); *p != '\0'; p++) {
		int h;
		if (*p == ':')
			continue;
		if ((h = sy_hexval((unsigned char)*p)) < 0 || nd >= 64) {
			nd = 65;
			break;
		}
		if (hi < 0) {
			hi = h;
		} else {
			out[nd / 2] = (uint8_t)(hi << 4 | h);
			hi = -1;
		}
		nd++;
	}
	if (nd != 64) {
		sy_errors_add(c->errs,
		              "%s: not a SHA-256 fingerprint; write 64 hexadecimal digits (colons "
		              "allowed), e.g. the output of `openssl x509 -noout -fingerprint "
		              "-sha256`",
		              key);
		return;
	}
	memcpy(d->tls_pinned_cert_sha256, out, sizeof(out));
	d->has_pin = true;
}

static void load_source_ips(ctx *c, const toml_value *v, const char *key, sy_destination_config *d)
{
	char ik[KEYMAX];

	if (v->type != TOML_ARRAY) {
		err_type(c, key, "an array of IP address strings", v);
		return;
	}
	d->source_ips = cfg_xcalloc(v->u.arr.len, sizeof(*d->source_ips));
	for (size_t i = 0; i < v->u.arr.len; i++) {
		const toml_value *it = v->u.arr.items[i];
		sy_bind_addr *b = &d->source_ips[d->nsource_ips];
		key_index(ik, key, i);
		if (it->type != TOML_STRING) {
			err_type(c, ik, "an IP address string", it);
			continue;
		}
		if (!cfg_host_is_ip(sv(it)) ||
		    sy_sockaddr_parse(sv(it), true, &b->addr, &b->addrlen) != 0) {
			sy_errors_add(c->errs,
			              "%s: \"%s\" is not an IP address; write a bare local address "
			              "such as \"10.0.2.5\" or \"2001:db8::5\" (no port)",
			              key, sv(it));
			continue;
		}
		b->text = cfg_xstrdup(sv(it));
		d->nsource_ips++;
	}
}

static void load_endpoints(ctx *c, const toml_value *t, const char *key, sy_destination_config *d)
{
	char pk[KEYMAX];

	for (size_t i = 0; i < t->u.tab.len; i++) {
		const toml_kv *kv = &t->u.tab.items[i];
		sy_proto p;
		key_join(pk, key, kv->key, kv->keylen);
		if (strlen(kv->key) != kv->keylen || sy_proto_parse(kv->key, &p) != 0 ||
		    strcmp(kv->key, proto_names[p]) != 0) {
			sy_errors_add(c->errs,
			              "%s: unknown key (line %d); the protocols are imap, pop3, "
			              "managesieve, submission, smtp, lmtp and http",
			              pk, kv->line);
			continue;
		}
		if (!want_table(c, kv->value, pk))
			continue;
		sy_endpoint_config *ep = &d->proto[p];
		ep->declared = true;
		ep->forwarding = SY_FWD_UNSET;
		ep->tls = SY_TLS_IMPLICIT;
		load_fields(c, kv->value, pk, endpoint_fields, NFIELDS(endpoint_fields), ep);
	}
}

static void load_destinations(ctx *c, const toml_value *t)
{
	sy_config *cfg = c->cfg;
	char key[KEYMAX], sub[KEYMAX];

	cfg->destinations = cfg_xcalloc(t->u.tab.len, sizeof(*cfg->destinations));
	for (size_t i = 0; i < t->u.tab.len; i++) {
		const toml_kv *kv = &t->u.tab.items[i];
		const toml_value *v;
		key_join(key, "destination", kv->key, kv->keylen);
		if (!want_table(c, kv->value, key) || !valid_id(c, key, kv->key, kv->keylen))
			continue;
		sy_destination_config *d = &cfg->destinations[cfg->ndestinations++];
		d->id = cfg_xstrdup(kv->key);
		d->proxy_protocol = true;
		d->forwarding = SY_FWD_UNSET;
		load_fields(c, kv->value, key, dest_fields, NFIELDS(dest_fields), d);

		if (d->host != NULL && d->host[0] == '[' && cfg_host_is_ip(d->host)) {
			/* Brackets are URL syntax; keep the bare address. */
			size_t n = strlen(d->host);
			memmove(d->host, d->host + 1, n - 2);
			d->host[n - 2] = '\0';
		}
		d->host_is_ip = cfg_host_is_ip(d->host);
		if ((v = toml_get(kv->value, "tls_pinned_cert_sha256")) != NULL) {
			key_sub(sub, key, "tls_pinned_cert_sha256");
			load_pin(c, v, sub, d);
		}
		if ((v = toml_get(kv->value, "source_ips")) != NULL) {
			key_sub(sub, key, "source_ips");
			load_source_ips(c, v, sub, d);
		}
		if ((v = toml_get(kv->value, "protocol")) != NULL) {
			key_sub(sub, key, "protocol");
			if (want_table(c, v, sub))
				load_endpoints(c, v, sub, d);
		}

		/* The reference's rule: no explicit forwarding means a PROXY
		 * header when proxy_protocol is on (the default), else none. */
		if (d->forwarding == SY_FWD_UNSET)
			d->forwarding = d->proxy_protocol ? SY_FWD_PROXY : SY_FWD_NONE;
		/* Pass-through legs are opaque byte streams: they can carry a
		 * PROXY header but never XCLIENT. A destination-wide xclient
		 * (right for its submission leg) therefore sends nothing on
		 * its smtp/lmtp legs; an explicit per-leg xclient is accepted
		 * with a warning (validate.c) and sends nothing either. */
		for (int p = SY_PROTO_SMTP; p <= SY_PROTO_LMTP; p++) {
			if (d->proto[p].declared && d->proto[p].forwarding == SY_FWD_UNSET &&
			    d->forwarding == SY_FWD_XCLIENT)
				d->proto[p].forwarding = SY_FWD_NONE;
		}
	}
}

/* ------------------------------------------------------------------------ */
/* [routing]                                                                */

static const field routing_fields[] = {
    FLD("default_destination", sy_routing_config, F_STR, default_destination),
    FLD("smtp_passthrough_destination", sy_routing_config, F_STR, smtp_passthrough_destination),
    FLD("master_user_separators", sy_routing_config, F_STRLIST, master_user_separators),
};

/* ------------------------------------------------------------------------ */
/* [mapping]                                                                */

static const field mapping_fields[] = {
    FLD("source", sy_mapping_config, F_ENUM, source, .names = source_names, .values = source_values,
        .flags = REQUIRED,
        .hint = "set source = \"file\", \"redis\" or \"sql\" (or remove [mapping] to route "
                "everything to routing.default_destination)"),
    FLD("normalize", sy_mapping_config, F_ENUM, normalize, .names = normalize_names),
    FLD("positive_ttl", sy_mapping_config, F_DUR, positive_ttl_ms),
    FLD("negative_ttl", sy_mapping_config, F_DUR, negative_ttl_ms),
    FLD("cache_max_entries", sy_mapping_config, F_U64, cache_max_entries, .flags = NONZERO),
    FLD("lookup_timeout", sy_mapping_config, F_DUR, lookup_timeout_ms, .flags = NONZERO),
    FLD("on_store_error", sy_mapping_config, F_ENUM, on_store_error, .names = store_error_names),
    CUSTOM("file"),
    CUSTOM("redis"),
    CUSTOM("sql"),
};

static const field mapping_file_fields[] = {
    FLD("path", sy_mapping_config, F_PATH, file.path, .flags = REQUIRED,
        .hint = "set it to the mapping file, one \"<identifier> <destination>\" per line"),
};

static const field mapping_redis_fields[] = {
    FLD("url", sy_mapping_config, F_STR, redis.url, .flags = REQUIRED,
        .hint = "set it to redis://host:port or rediss://host:port"),
    FLD("key_prefix", sy_mapping_config, F_STR, redis.key_prefix, .flags = EMPTY_OK),
    FLD("pool_size", sy_mapping_config, F_U32, redis.pool_size, .flags = NONZERO, .max = 1024),
    FLD("events_channel", sy_mapping_config, F_STR, redis.events_channel),
    FLD("watch_keyspace", sy_mapping_config, F_BOOL, redis.watch_keyspace),
    FLD("tls_ca_file", sy_mapping_config, F_PATH, redis.tls_ca_file),
    FLD("tls_server_name", sy_mapping_config, F_STR, redis.tls_server_name),
    FLD("tls_allow_invalid_certs", sy_mapping_config, F_BOOL, redis.tls_allow_invalid_certs),
    FLD("tls_client_cert", sy_mapping_config, F_PATH, redis.tls_client_cert),
    FLD("tls_client_key", sy_mapping_config, F_PATH, redis.tls_client_key),
};

static const field mapping_sql_fields[] = {
    FLD("url", sy_mapping_config, F_STR, sql.url, .flags = REQUIRED,
        .hint = "set it to a postgres:// or postgresql:// connection URL"),
    FLD("query", sy_mapping_config, F_STR, sql.query),
    FLD("upsert_query", sy_mapping_config, F_STR, sql.upsert_query),
    FLD("delete_query", sy_mapping_config, F_STR, sql.delete_query),
    FLD("pool_size", sy_mapping_config, F_U32, sql.pool_size, .flags = NONZERO, .max = 1024),
    FLD("events_channel", sy_mapping_config, F_STR, sql.events_channel),
};

static void load_mapping(ctx *c, const toml_value *t)
{
	sy_mapping_config *m = &c->cfg->mapping;
	const toml_value *sec[3];
	static const char *const secnames[3] = {"file", "redis", "sql"};
	static const field *const secfields[3] = {mapping_file_fields, mapping_redis_fields,
	                                          mapping_sql_fields};
	static const size_t secn[3] = {NFIELDS(mapping_file_fields), NFIELDS(mapping_redis_fields),
	                               NFIELDS(mapping_sql_fields)};
	char key[KEYMAX];

	load_fields(c, t, "mapping", mapping_fields, NFIELDS(mapping_fields), m);
	for (int i = 0; i < 3; i++) {
		sec[i] = toml_get(t, secnames[i]);
		key_sub(key, "mapping", secnames[i]);
		if (sec[i] != NULL && !want_table(c, sec[i], key)) {
			sec[i] = NULL;
			continue;
		}
		if (sec[i] != NULL)
			load_fields(c, sec[i], key, secfields[i], secn[i], m);
	}
	/* The selected store needs its section. (Sections for stores that are
	 * not selected are still checked above, so a later switch of `source`
	 * does not uncover old mistakes.) */
	if (m->source >= SY_MAP_FILE && m->source <= SY_MAP_SQL && sec[m->source - 1] == NULL) {
		const char *name = secnames[m->source - 1];
		sy_errors_add(
		    c->errs, "mapping.%s: missing; source = \"%s\" needs a [mapping.%s] table (%s)",
		    name, name, name,
		    m->source == SY_MAP_FILE    ? "with path"
		    : m->source == SY_MAP_REDIS ? "with url = \"redis://...\""
		                                : "with url = \"postgres://...\"");
	}
}

/* ------------------------------------------------------------------------ */
/* [capabilities.<proto>]                                                   */

static const field caps_imap_fields[] = {
    CUSTOM("sasl"),
    FLD("allow_plain_auth_without_tls", sy_caps_config, F_BOOL, allow_plain_auth_without_tls),
    FLD("banner", sy_caps_config, F_STR, banner, .flags = EMPTY_OK),
    FLD("advertise", sy_caps_config, F_STRLIST, advertise),
};
static const field caps_pop3_fields[] = {
    CUSTOM("sasl"),
    FLD("allow_plain_auth_without_tls", sy_caps_config, F_BOOL, allow_plain_auth_without_tls),
    FLD("banner", sy_caps_config, F_STR, banner, .flags = EMPTY_OK),
};
static const field caps_submission_fields[] = {
    CUSTOM("sasl"),
    FLD("allow_plain_auth_without_tls", sy_caps_config, F_BOOL, allow_plain_auth_without_tls),
    FLD("banner", sy_caps_config, F_STR, banner, .flags = EMPTY_OK),
    FLD("ehlo", sy_caps_config, F_STRLIST, ehlo),
};
static const field caps_sieve_fields[] = {
    CUSTOM("sasl"),
    FLD("allow_plain_auth_without_tls", sy_caps_config, F_BOOL, allow_plain_auth_without_tls),
    FLD("banner", sy_caps_config, F_STR, banner, .flags = EMPTY_OK),
    FLD("sieve", sy_caps_config, F_STRLIST, sieve),
    FLD("implementation", sy_caps_config, F_STR, implementation),
};

static const char *const sasl_mechs[] = {"PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2", NULL};

static void load_sasl(ctx *c, const toml_value *v, const char *key, sy_caps_config *caps)
{
	sy_strlist tmp = {0};
	char ik[KEYMAX], allowed[128];
	bool ok = true;

	if (get_strlist(c, v, key, &tmp) != 0)
		return;
	for (size_t i = 0; i < tmp.len; i++) {
		bool known = false;
		for (int j = 0; sasl_mechs[j] != NULL; j++) {
			if (strcasecmp(tmp.items[i], sasl_mechs[j]) == 0) {
				/* Stored uppercase: SASL mechanism names are
				 * case-insensitive but compared byte-wise later. */
				strcpy(tmp.items[i], sasl_mechs[j]);
				known = true;
			}
		}
		if (!known) {
			key_index(ik, key, i);
			names_join(allowed, sizeof(allowed), sasl_mechs);
			sy_errors_add(c->errs,
			              "%s: unsupported SASL mechanism \"%s\"; allowed values: %s",
			              ik, tmp.items[i], allowed);
			ok = false;
		}
	}
	if (ok) {
		strlist_free(&caps->sasl);
		caps->sasl = tmp;
	} else {
		strlist_free(&tmp);
	}
}

static void load_capabilities(ctx *c, const toml_value *t)
{
	static const struct {
		const char *name;
		sy_proto proto;
		const field *fs;
		size_t nf;
	} tables[] = {
	    {"imap", SY_PROTO_IMAP, caps_imap_fields, NFIELDS(caps_imap_fields)},
	    {"pop3", SY_PROTO_POP3, caps_pop3_fields, NFIELDS(caps_pop3_fields)},
	    {"submission", SY_PROTO_SUBMISSION, caps_submission_fields,
	     NFIELDS(caps_submission_fields)},
	    {"managesieve", SY_PROTO_MANAGESIEVE, caps_sieve_fields, NFIELDS(caps_sieve_fields)},
	};
	static const field known[] = {CUSTOM("imap"), CUSTOM("pop3"), CUSTOM("submission"),
	                              CUSTOM("managesieve")};
	char key[KEYMAX], sub[KEYMAX];

	load_fields(c, t, "capabilities", known, NFIELDS(known), NULL);
	for (size_t i = 0; i < NFIELDS(tables); i++) {
		const toml_value *v = toml_get(t, tables[i].name), *sv;
		sy_caps_config *caps = &c->cfg->caps[tables[i].proto];
		key_sub(key, "capabilities", tables[i].name);
		if (v == NULL || !want_table(c, v, key))
			continue;
		load_fields(c, v, key, tables[i].fs, tables[i].nf, caps);
		if ((sv = toml_get(v, "sasl")) != NULL) {
			key_sub(sub, key, "sasl");
			load_sasl(c, sv, sub, caps);
		}
	}
}

/* ------------------------------------------------------------------------ */
/* [oauth], [http], [[http.route]]                                          */

static const field oauth_fields[] = {
    FLD("jwt_username_claim", sy_oauth_config, F_STR, jwt_username_claim),
};

static const field http_fields[] = {
    CUSTOM("route"),
    FLD("body_extract_cap", sy_http_config, F_U64, body_extract_cap, .flags = NONZERO,
        .max = 1ull << 30),
    FLD("max_head_size", sy_http_config, F_U64, max_head_size, .flags = NONZERO, .max = 1ull << 30),
    FLD("relay_idle", sy_http_config, F_DUR, relay_idle_ms, .flags = NONZERO),
    FLD("keepalive_timeout", sy_http_config, F_DUR, keepalive_timeout_ms),
    FLD("max_keepalive_requests", sy_http_config, F_U32, max_keepalive_requests),
};

static const field route_fields[] = {
    FLD("match", sy_http_route, F_STR, match, .flags = REQUIRED,
        .hint = "set it to a path glob such as \"/.well-known/**\" or \"/**\""),
    FLD("destination", sy_http_route, F_STR, destination),
    CUSTOM("extract"),
    FLD("fallback", sy_http_route, F_STR, fallback),
};

static const field extract_fields[] = {
    FLD("from", sy_http_route, F_ENUM, extract, .names = extract_names, .values = extract_values,
        .flags = REQUIRED,
        .hint = "set from = \"authorization\", \"query\", \"header\" or \"body\""),
    FLD("param", sy_http_route, F_STR, param),
    FLD("header", sy_http_route, F_STR, header),
    FLD("regex", sy_http_route, F_STR, regex),
};

static void load_http(ctx *c, const toml_value *t)
{
	sy_http_config *h = &c->cfg->http;
	const toml_value *routes;
	char key[KEYMAX], sub[KEYMAX];

	load_fields(c, t, "http", http_fields, NFIELDS(http_fields), h);
	if ((routes = toml_get(t, "route")) == NULL)
		return;
	if (routes->type != TOML_ARRAY) {
		err_type(c, "http.route", "an array of tables ([[http.route]])", routes);
		return;
	}
	h->routes = cfg_xcalloc(routes->u.arr.len, sizeof(*h->routes));
	for (size_t i = 0; i < routes->u.arr.len; i++) {
		const toml_value *rv = routes->u.arr.items[i], *ev;
		sy_http_route *r = &h->routes[h->nroutes++];
		key_index(key, "http.route", i);
		if (!want_table(c, rv, key))
			continue;
		load_fields(c, rv, key, route_fields, NFIELDS(route_fields), r);
		if ((ev = toml_get(rv, "extract")) != NULL) {
			key_sub(sub, key, "extract");
			if (want_table(c, ev, sub)) {
				load_fields(c, ev, sub, extract_fields, NFIELDS(extract_fields), r);
				/* Mark the route as extracting even when `from`
				 * was bad, so validate.c does not also complain
				 * that neither destination nor extract is set. */
				if (r->extract == SY_HTTP_EXTRACT_NONE)
					r->extract = SY_HTTP_EXTRACT_AUTHORIZATION;
			}
		}
	}
}

/* ------------------------------------------------------------------------ */
/* [admin]                                                                  */

static const field admin_fields[] = {
    CUSTOM("bind"),
    CUSTOM("tls"),
    FLD("allow_plaintext", sy_admin_config, F_BOOL, allow_plaintext),
    FLD("bearer_token_file", sy_admin_config, F_PATH, bearer_token_file),
    CUSTOM("bearer_token"),
    FLD("min_token_len", sy_admin_config, F_U32, min_token_len, .flags = NONZERO),
    FLD("lockout_threshold", sy_admin_config, F_U32, lockout_threshold, .flags = NONZERO),
    FLD("lockout_duration", sy_admin_config, F_DUR, lockout_duration_ms, .flags = NONZERO),
};

/* Reads the token file; trailing whitespace (the newline editors add) is not
 * part of the token. Returns NULL and reports on failure. */
static char *read_token_file(ctx *c, const char *path)
{
	FILE *f = fopen(path, "rb");
	char buf[TOKEN_MAX_BYTES + 1];
	size_t n;

	if (f == NULL) {
		sy_errors_add(c->errs,
		              "admin.bearer_token_file: cannot read %s: %s; create it or fix the "
		              "path",
		              path, strerror(errno));
		return NULL;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (n > TOKEN_MAX_BYTES) {
		sy_errors_add(c->errs,
		              "admin.bearer_token_file: %s is larger than %u bytes; it must hold "
		              "only the token",
		              path, TOKEN_MAX_BYTES);
		return NULL;
	}
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	if (strlen(buf) != n) {
		sy_errors_add(c->errs, "admin.bearer_token_file: %s contains a NUL byte", path);
		return NULL;
	}
	char *tok = cfg_xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return tok;
}

static void load_admin(ctx *c, const toml_value *t)
{
	sy_admin_config *a = &c->cfg->admin;
	const toml_value *v;
	char *inline_token = NULL;
	const char *source = NULL;
	int idx;

	a->enabled = true;
	load_fields(c, t, "admin", admin_fields, NFIELDS(admin_fields), a);
	if ((v = toml_get(t, "bind")) != NULL) {
		if (v->type != TOML_STRING) {
			err_type(c, "admin.bind", "an \"ip:port\" string", v);
		} else if (sy_sockaddr_parse(sv(v), false, &a->bind.addr, &a->bind.addrlen) != 0) {
			sy_errors_add(
			    c->errs,
			    "admin.bind: \"%s\" is not \"ip:port\" or \"[ipv6]:port\"; write "
			    "e.g. \"127.0.0.1:9443\"",
			    sv(v));
		} else {
			free(a->bind.text);
			a->bind.text = cfg_xstrdup(sv(v));
		}
	}
	if ((v = toml_get(t, "tls")) != NULL &&
	    get_enum(c, v, "admin.tls", admin_tls_names, &idx) == 0)
		a->tls = idx == 0;
	if ((v = toml_get(t, "bearer_token")) != NULL)
		get_string(c, v, "admin.bearer_token", false, &inline_token);

	/* Precedence: the environment (a Kubernetes Secret), then the file,
	 * then the inline value. Only the winning source is read, so a stale
	 * file path does not matter while the environment overrides it. */
	const char *env = getenv("PROXY_ADMIN_TOKEN");
	if (env != NULL && env[0] != '\0') {
		a->token = cfg_xstrdup(env);
		source = "PROXY_ADMIN_TOKEN (environment)";
	} else if (a->bearer_token_file != NULL) {
		a->token = read_token_file(c, a->bearer_token_file);
		source = "admin.bearer_token_file";
		if (a->token == NULL)
			source = NULL;
	} else if (inline_token != NULL) {
		a->token = inline_token;
		inline_token = NULL;
		source = "admin.bearer_token";
	} else if (toml_get(t, "bearer_token") == NULL) {
		sy_errors_add(
		    c->errs, "admin.bearer_token: no management token configured; set "
		             "admin.bearer_token_file, admin.bearer_token or the PROXY_ADMIN_TOKEN "
		             "environment variable");
	}
	if (source != NULL && a->token != NULL && strlen(a->token) < a->min_token_len) {
		sy_errors_add(c->errs,
		              "%s: the token is %zu characters, shorter than admin.min_token_len "
		              "(%u); use a longer random token, e.g. `openssl rand -hex 32`",
		              source, strlen(a->token), a->min_token_len);
	}
	if (inline_token != NULL) {
		explicit_bzero(inline_token, strlen(inline_token));
		free(inline_token);
	}
}

/* ------------------------------------------------------------------------ */
/* [cluster.<id>]                                                           */

static const field cluster_fields[] = {
    FLD("template", sy_cluster_config, F_STR, template_dest, .flags = REQUIRED,
        .hint = "name the destination whose ports, TLS and forwarding the nodes inherit"),
    FLD("nodes", sy_cluster_config, F_STRLIST, nodes),
    CUSTOM("kubernetes"),
};

static const field k8s_fields[] = {
    FLD("service", sy_cluster_config, F_STR, kubernetes.service, .flags = REQUIRED,
        .hint = "name the Service whose EndpointSlices list the nodes"),
    FLD("namespace", sy_cluster_config, F_STR, kubernetes.namespace_),
    FLD("api_url", sy_cluster_config, F_STR, kubernetes.api_url),
    FLD("token_file", sy_cluster_config, F_PATH, kubernetes.token_file),
    FLD("ca_file", sy_cluster_config, F_PATH, kubernetes.ca_file),
    FLD("kubeconfig", sy_cluster_config, F_PATH, kubernetes.kubeconfig),
    FLD("watch_timeout", sy_cluster_config, F_DUR, kubernetes.watch_timeout_ms, .flags = NONZERO),
    FLD("backoff_initial", sy_cluster_config, F_DUR, kubernetes.backoff_initial_ms,
        .flags = NONZERO),
    FLD("backoff_max", sy_cluster_config, F_DUR, kubernetes.backoff_max_ms, .flags = NONZERO),
    FLD("token_refresh", sy_cluster_config, F_DUR, kubernetes.token_refresh_ms, .flags = NONZERO),
};

static void load_clusters(ctx *c, const toml_value *t)
{
	sy_config *cfg = c->cfg;
	char key[KEYMAX], sub[KEYMAX];

	cfg->clusters = cfg_xcalloc(t->u.tab.len, sizeof(*cfg->clusters));
	for (size_t i = 0; i < t->u.tab.len; i++) {
		const toml_kv *kv = &t->u.tab.items[i];
		const toml_value *v;
		key_join(key, "cluster", kv->key, kv->keylen);
		if (!want_table(c, kv->value, key) || !valid_id(c, key, kv->key, kv->keylen))
			continue;
		sy_cluster_config *cl = &cfg->clusters[cfg->nclusters++];
		cl->id = cfg_xstrdup(kv->key);
		load_fields(c, kv->value, key, cluster_fields, NFIELDS(cluster_fields), cl);
		if ((v = toml_get(kv->value, "kubernetes")) != NULL) {
			key_sub(sub, key, "kubernetes");
			if (want_table(c, v, sub)) {
				cl->has_kubernetes = true;
				cl->kubernetes.watch_timeout_ms = 300000;
				cl->kubernetes.backoff_initial_ms = 500;
				cl->kubernetes.backoff_max_ms = 30000;
				cl->kubernetes.token_refresh_ms = 60000;
				load_fields(c, v, sub, k8s_fields, NFIELDS(k8s_fields), cl);
			}
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Defaults and the root table                                              */

static const char *const default_sasl[] = {"PLAIN", "OAUTHBEARER", "XOAUTH2", NULL};
static const char *const default_imap_advertise[] = {
    "IMAP4rev1", "IMAP4rev2", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE", NULL};
static const char *const default_sieve[] = {
    "fileinto",   "reject", "envelope", "vacation", "imap4flags", "comparator-i;ascii-numeric",
    "relational", "regex",  "body",     "copy",     "include",    "variables",
    "date",       "index",  "mailbox",  NULL};
static const char *const default_ehlo[] = {"PIPELINING", "8BITMIME",      "ENHANCEDSTATUSCODES",
                                           "CHUNKING",   "SIZE 52428800", NULL};
static const char *const default_separators[] = {"%", NULL};

static void set_defaults(sy_config *cfg)
{
	sy_server_config *s = &cfg->server;

	s->threads = 0;
	s->shutdown_grace_ms = 30000;
	s->bridge_idle_ms = 1800000;
	s->backend_timeout_ms = 10000;
	s->backend_connect_retries = 1;
	s->host_down_threshold = 5;
	s->host_down_cooldown_ms = 30000;
	s->proxy_ttl = 7;
	s->log_level = SY_LOG_INFO;
	s->log_format = SY_LOG_TEXT;

	cfg->tls_policy.min_version = 0x0303;

	strlist_set(&cfg->routing.master_user_separators, default_separators);

	sy_mapping_config *m = &cfg->mapping;
	m->source = SY_MAP_NONE;
	m->normalize = SY_NORMALIZE_NONE;
	m->positive_ttl_ms = 600000;
	m->negative_ttl_ms = 30000;
	m->cache_max_entries = 1000000;
	m->lookup_timeout_ms = 5000;
	m->on_store_error = SY_STORE_ERR_TEMPFAIL;
	/* "route:" is the reference implementation's default, so a reference
	 * config that relies on it keeps finding its keys. */
	m->redis.key_prefix = cfg_xstrdup("route:");
	m->redis.pool_size = 16;
	m->sql.query = cfg_xstrdup("SELECT destination FROM routes WHERE identifier = $1");
	m->sql.pool_size = 16;

	static const struct {
		sy_proto p;
		const char *banner;
	} banners[] = {
	    {SY_PROTO_IMAP, "Switchyard IMAP4rev2 ready."},
	    {SY_PROTO_POP3, "Switchyard POP3 ready."},
	    {SY_PROTO_SUBMISSION, "Switchyard ESMTP ready"},
	    {SY_PROTO_MANAGESIEVE, "Switchyard ManageSieve ready."},
	};
	for (size_t i = 0; i < NFIELDS(banners); i++) {
		sy_caps_config *caps = &cfg->caps[banners[i].p];
		strlist_set(&caps->sasl, default_sasl);
		caps->banner = cfg_xstrdup(banners[i].banner);
	}
	strlist_set(&cfg->caps[SY_PROTO_IMAP].advertise, default_imap_advertise);
	strlist_set(&cfg->caps[SY_PROTO_MANAGESIEVE].sieve, default_sieve);
	cfg->caps[SY_PROTO_MANAGESIEVE].implementation = cfg_xstrdup("Switchyard");
	strlist_set(&cfg->caps[SY_PROTO_SUBMISSION].ehlo, default_ehlo);

	cfg->oauth.jwt_username_claim = cfg_xstrdup("email");

	sy_http_config *h = &cfg->http;
	h->body_extract_cap = 65536;
	h->max_head_size = 65536;
	h->relay_idle_ms = 60000;
	h->keepalive_timeout_ms = 75000;
	h->max_keepalive_requests = 1000;

	sy_admin_config *a = &cfg->admin;
	a->enabled = false;
	a->bind.text = cfg_xstrdup("127.0.0.1:9443");
	sy_sockaddr_parse(a->bind.text, false, &a->bind.addr, &a->bind.addrlen);
	a->tls = true;
	a->min_token_len = 32;
	a->lockout_threshold = 5;
	a->lockout_duration_ms = 300000;
}

static void load_root(ctx *c, const toml_value *root)
{
	static const field root_fields[] = {
	    CUSTOM("server"),  CUSTOM("tls"),     CUSTOM("listener"),     CUSTOM("destination"),
	    CUSTOM("routing"), CUSTOM("mapping"), CUSTOM("capabilities"), CUSTOM("oauth"),
	    CUSTOM("http"),    CUSTOM("admin"),   CUSTOM("cluster"),
	};
	const toml_value *v;

	load_fields(c, root, "", root_fields, NFIELDS(root_fields), NULL);

	/* Destinations and clusters first, so nothing below depends on the
	 * order the tables were written in. */
	if ((v = toml_get(root, "destination")) != NULL && want_table(c, v, "destination"))
		load_destinations(c, v);
	if ((v = toml_get(root, "cluster")) != NULL && want_table(c, v, "cluster"))
		load_clusters(c, v);
	if ((v = toml_get(root, "server")) != NULL && want_table(c, v, "server"))
		load_server(c, v);
	if ((v = toml_get(root, "tls")) != NULL && want_table(c, v, "tls"))
		load_tls(c, v);
	if ((v = toml_get(root, "listener")) != NULL && want_table(c, v, "listener"))
		load_listeners(c, v);
	if ((v = toml_get(root, "routing")) != NULL && want_table(c, v, "routing"))
		load_fields(c, v, "routing", routing_fields, NFIELDS(routing_fields),
		            &c->cfg->routing);
	if ((v = toml_get(root, "mapping")) != NULL && want_table(c, v, "mapping"))
		load_mapping(c, v);
	if ((v = toml_get(root, "capabilities")) != NULL && want_table(c, v, "capabilities"))
		load_capabilities(c, v);
	if ((v = toml_get(root, "oauth")) != NULL && want_table(c, v, "oauth"))
		load_fields(c, v, "oauth", oauth_fields, NFIELDS(oauth_fields), &c->cfg->oauth);
	if ((v = toml_get(root, "http")) != NULL && want_table(c, v, "http"))
		load_http(c, v);
	if ((v = toml_get(root, "admin")) != NULL && want_table(c, v, "admin"))
		load_admin(c, v);

	/* The reference's sample writes `fallback = "default"` meaning "the
	 * default destination" (its router ignores the value). Keep that
	 * meaning unless something is really called "default". */
	for (size_t i = 0; i < c->cfg->http.nroutes; i++) {
		sy_http_route *r = &c->cfg->http.routes[i];
		if (r->fallback != NULL && strcmp(r->fallback, "default") == 0 &&
		    !config_is_target(c->cfg, "default")) {
			free(r->fallback);
			r->fallback = NULL;
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Loading and freeing                                                      */

static char *current_dir(void)
{
	char *cwd = getcwd(NULL, 0);
	if (cwd == NULL)
		return cfg_xstrdup(".");
	return cwd;
}

static int load_text(const char *text, size_t len, const char *basedir, const char *origin,
                     sy_config **out, sy_errors *errs)
{
	sy_errors local = {0};
	char perr[512];
	size_t before;
	sy_config *cfg;
	toml_value *root;

	*out = NULL;
	if (errs == NULL)
		errs = &local;
	before = errs->len;

	root = toml_parse(text, len, perr, sizeof(perr));
	if (root == NULL) {
		sy_errors_add(errs, "%s: %s; fix the TOML syntax", origin, perr);
		sy_errors_free(&local);
		return -1;
	}

	cfg = cfg_xcalloc(1, sizeof(*cfg));
	if (basedir == NULL)
		cfg->basedir = current_dir();
	else if (basedir[0] != '/') {
		char *cwd = current_dir();
		if (asprintf(&cfg->basedir, "%s/%s", cwd, basedir) < 0)
			abort();
		free(cwd);
	} else
		cfg->basedir = cfg_xstrdup(basedir);
	set_defaults(cfg);

	ctx c = {.errs = errs, .basedir = cfg->basedir, .cfg = cfg};
	load_root(&c, root);
	toml_free(root);

	size_t conv_end = errs->len;
	config_validate(cfg, errs, before, conv_end, &cfg->warnings);

	if (errs->len > before) {
		config_free(cfg);
		sy_errors_free(&local);
		return -1;
	}
	*out = cfg;
	return 0;
}

int config_load_string(const char *text, size_t len, const char *basedir, sy_config **out,
                       sy_errors *errs)
{
	if (out == NULL || text == NULL)
		return -1;
	return load_text(text, len, basedir, "config", out, errs);
}

int config_load_file(const char *path, sy_config **out, sy_errors *errs)
{
	FILE *f;
	char *buf, *dir, *slash;
	size_t cap = 65536, len = 0;
	int rc;

	if (out == NULL)
		return -1;
	*out = NULL;
	if (path == NULL || (f = fopen(path, "rb")) == NULL) {
		sy_errors_add(errs, "%s: cannot open the configuration file: %s",
		              path ? path : "(null)", strerror(errno));
		return -1;
	}
	buf = cfg_xmalloc(cap);
	for (;;) {
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
		if (len == cap) {
			if (cap >= CONFIG_MAX_BYTES)
				break;
			cap *= 2;
			buf = cfg_xrealloc(buf, cap);
		}
	}
	if (ferror(f) || len >= CONFIG_MAX_BYTES) {
		sy_errors_add(errs, "%s: cannot read the configuration file: %s", path,
		              ferror(f) ? strerror(errno) : "larger than 16 MiB");
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);

	/* Relative paths inside the file are relative to the directory the
	 * file was named in, not to where its symlinks point: in a mounted
	 * ConfigMap the siblings live beside the name, not beside ..data/. */
	dir = cfg_xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash == NULL) {
		free(dir);
		dir = cfg_xstrdup(".");
	} else if (slash == dir) {
		dir[1] = '\0';
	} else {
		*slash = '\0';
	}
	rc = load_text(buf, len, dir, path, out, errs);
	free(dir);
	free(buf);
	if (rc == 0)
		(*out)->path = cfg_xstrdup(path);
	return rc;
}

static void bind_free(sy_bind_addr *b)
{
	free(b->text);
	b->text = NULL;
}

void config_free(sy_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->basedir);
	sy_errors_free(&cfg->warnings);
	free(cfg->server.hostname);

	for (size_t i = 0; i < cfg->ncerts; i++) {
		free(cfg->certs[i].name);
		free(cfg->certs[i].cert_path);
		free(cfg->certs[i].key_path);
		strlist_free(&cfg->certs[i].subjects);
	}
	free(cfg->certs);
	strlist_free(&cfg->tls_policy.disable_cipher_suites);
	free(cfg->tls_tickets.key_file);

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		sy_listener_config *l = &cfg->listeners[i];
		free(l->name);
		for (size_t j = 0; j < l->nbinds; j++)
			bind_free(&l->binds[j]);
		free(l->binds);
		free(l->proxy_trusted);
	}
	free(cfg->listeners);

	for (size_t i = 0; i < cfg->ndestinations; i++) {
		sy_destination_config *d = &cfg->destinations[i];
		free(d->id);
		free(d->host);
		free(d->tls_server_name);
		free(d->tls_client_cert);
		free(d->tls_client_key);
		for (size_t j = 0; j < d->nsource_ips; j++)
			bind_free(&d->source_ips[j]);
		free(d->source_ips);
	}
	free(cfg->destinations);

	free(cfg->routing.default_destination);
	free(cfg->routing.smtp_passthrough_destination);
	strlist_free(&cfg->routing.master_user_separators);

	sy_mapping_config *m = &cfg->mapping;
	free(m->file.path);
	free(m->redis.url);
	free(m->redis.key_prefix);
	free(m->redis.events_channel);
	free(m->redis.tls_ca_file);
	free(m->redis.tls_server_name);
	free(m->redis.tls_client_cert);
	free(m->redis.tls_client_key);
	free(m->sql.events_channel);
	free(m->sql.url);
	free(m->sql.query);
	free(m->sql.upsert_query);
	free(m->sql.delete_query);

	for (int p = 0; p < SY_PROTO_COUNT; p++) {
		sy_caps_config *caps = &cfg->caps[p];
		strlist_free(&caps->sasl);
		free(caps->banner);
		strlist_free(&caps->advertise);
		strlist_free(&caps->sieve);
		free(caps->implementation);
		strlist_free(&caps->ehlo);
	}
	free(cfg->oauth.jwt_username_claim);

	for (size_t i = 0; i < cfg->http.nroutes; i++) {
		sy_http_route *r = &cfg->http.routes[i];
		free(r->match);
		free(r->destination);
		free(r->param);
		free(r->header);
		free(r->regex);
		free(r->fallback);
	}
	free(cfg->http.routes);

	bind_free(&cfg->admin.bind);
	free(cfg->admin.bearer_token_file);
	if (cfg->admin.token != NULL) {
		explicit_bzero(cfg->admin.token, strlen(cfg->admin.token));
		free(cfg->admin.token);
	}

	for (size_t i = 0; i < cfg->nclusters; i++) {
		sy_cluster_config *cl = &cfg->clusters[i];
		free(cl->id);
		free(cl->template_dest);
		strlist_free(&cl->nodes);
		free(cl->kubernetes.service);
		free(cl->kubernetes.namespace_);
		free(cl->kubernetes.api_url);
		free(cl->kubernetes.token_file);
		free(cl->kubernetes.ca_file);
		free(cl->kubernetes.kubeconfig);
	}
	free(cfg->clusters);
	free(cfg);
}

/* ------------------------------------------------------------------------ */
/* Look-ups                                                                 */

const sy_destination_config *config_destination(const sy_config *cfg, const char *id)
{
	if (cfg == NULL || id == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->ndestinations; i++) {
		if (strcmp(cfg->destinations[i].id, id) == 0)
			return &cfg->destinations[i];
	}
	return NULL;
}

const sy_cluster_config *config_cluster(const sy_config *cfg, const char *id)
{
	if (cfg == NULL || id == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->nclusters; i++) {
		if (strcmp(cfg->clusters[i].id, id) == 0)
			return &cfg->clusters[i];
	}
	return NULL;
}

bool config_is_target(const sy_config *cfg, const char *id)
{
	return config_destination(cfg, id) != NULL || config_cluster(cfg, id) != NULL;
}

bool config_target_cb(void *cfg, const char *id)
{
	return config_is_target(cfg, id);
}

bool config_target_has_proto(const sy_config *cfg, const char *id, sy_proto p)
{
	const sy_destination_config *d = config_destination(cfg, id);
	const sy_cluster_config *cl;

	if ((int)p < 0 || p >= SY_PROTO_COUNT)
		return false;
	if (d == NULL && (cl = config_cluster(cfg, id)) != NULL)
		d = config_destination(cfg, cl->template_dest);
	return d != NULL && d->proto[p].declared;
}
