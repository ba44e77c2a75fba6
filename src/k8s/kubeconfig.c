/*
 * Where the Kubernetes API is and how to authenticate to it: in-cluster
 * service-account defaults, or a kubeconfig file read with libyaml (see
 * k8s.h for the contract).
 *
 * A kubeconfig is loaded as a YAML document tree and navigated: the current
 * context names a cluster and a user, each found by name in the `clusters`
 * and `users` lists. With several files (a ':'-separated $KUBECONFIG) the
 * first file that sets a value or defines a name wins, as kubectl merges
 * them, and a relative path is resolved against the directory of the file
 * that holds it.
 */
#include "errf.h"
#include "switchyard/k8s.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "switchyard/sasl.h"

#define MAX_KUBECONFIGS 16

static void wipe_free(char *p, size_t len)
{
	if (p)
		sy_secure_free(p, len);
}

void k8s_target_free(sy_k8s_target *t)
{
	if (!t)
		return;
	free(t->api_url);
	free(t->namespace_);
	free(t->ca_file);
	free(t->ca_pem);
	free(t->token_file);
	wipe_free(t->token, t->token ? strlen(t->token) : 0);
	free(t->cert_file);
	free(t->cert_pem);
	free(t->key_file);
	wipe_free(t->key_pem, t->key_pem_len);
	free(t->source);
	memset(t, 0, sizeof(*t));
}

void k8s_settings_from_env(k8s_settings *s)
{
	s->env_host = getenv("KUBERNETES_SERVICE_HOST");
	s->env_port = getenv("KUBERNETES_SERVICE_PORT");
	s->env_kubeconfig = getenv("KUBECONFIG");
}

void k8s_settings_from_cluster(const sy_cluster_config *cl, k8s_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->namespace_ = cl->kubernetes.namespace_;
	s->api_url = cl->kubernetes.api_url;
	s->token_file = cl->kubernetes.token_file;
	s->ca_file = cl->kubernetes.ca_file;
	s->kubeconfig = cl->kubernetes.kubeconfig;
	k8s_settings_from_env(s);
}

/*
 * Reads a whole file of at most K8S_FILE_MAX bytes into a NUL-terminated
 * malloc'd buffer. 0 or -1 with err naming the path.
 */
static int read_file(const char *path, char **out, size_t *len_out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	int rc = 0;
	while (buf) {
		if (len + 1 >= cap) {
			if (cap > K8S_FILE_MAX) {
				errf(err, errlen, "%s is larger than %u bytes", path, K8S_FILE_MAX);
				rc = -1;
				break;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		if (n == 0) {
			if (ferror(f)) {
				errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
				rc = -1;
			}
			break;
		}
		len += n;
		if (len > K8S_FILE_MAX) {
			errf(err, errlen, "%s is larger than %u bytes", path, K8S_FILE_MAX);
			rc = -1;
			break;
		}
	}
	fclose(f);
	if (!buf) {
		errf(err, errlen, "out of memory reading %s", path);
		return -1;
	}
	if (rc != 0) {
		sy_secure_free(buf, cap);
		return -1;
	}
	buf[len] = '\0';
	*out = buf;
	if (len_out)
		*len_out = len;
	return 0;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

int k8s_token_read(const char *path, char **out, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	*out = NULL;
	if (read_file(path, &buf, &len, err, errlen) != 0)
		return -1;
	size_t start = 0;
	while (start < len && is_space(buf[start]))
		start++;
	while (len > start && is_space(buf[len - 1]))
		len--;
	if (len == start || memchr(buf + start, '\0', len - start) ||
	    memchr(buf + start, '\n', len - start)) {
		errf(err, errlen, "%s: %s", path,
		     len == start ? "the token file is empty" : "the token must be one line");
		sy_secure_free(buf, strlen(buf) + 1);
		return -1;
	}
	memmove(buf, buf + start, len - start);
	memset(buf + (len - start), 0, start + 1);
	buf[len - start] = '\0';
	*out = buf;
	return 0;
}

void k8s_token_free(char *token)
{
	if (token)
		sy_secure_free(token, strlen(token));
}

/* Joins dir and a relative path; an absolute path (or no dir) is copied. */
static char *resolve_path(const char *dir, const char *p)
{
	if (p[0] == '/' || !dir || !*dir)
		return strdup(p);
	size_t dl = strlen(dir), pl = strlen(p);
	char *r = malloc(dl + pl + 2);
	if (!r)
		return NULL;
	memcpy(r, dir, dl);
	size_t o = dl;
	if (o > 0 && r[o - 1] != '/')
		r[o++] = '/';
	memcpy(r + o, p, pl + 1);
	return r;
}

/* The directory part of a path, malloc'd ("." for a bare name). */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* ---- YAML tree helpers ------------------------------------------------- */

typedef struct kdoc {
	yaml_document_t doc;
	bool loaded;
	const char *path; /* for messages */
	const char *dir;  /* relative paths in this document resolve here */
} kdoc;

static yaml_node_t *root_of(kdoc *k)
{
	return k->loaded ? yaml_document_get_root_node(&k->doc) : NULL;
}

/* The scalar text of a node, or NULL when it is not a scalar. */
static const char *scalar(yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	return (const char *)n->data.scalar.value;
}

/* A null scalar (`key:` or `key: null` / `~`) counts as absent. */
static bool is_null(yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE)
		return false;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = scalar(n);
	return !*v || strcmp(v, "null") == 0 || strcmp(v, "~") == 0 || strcmp(v, "Null") == 0 ||
	       strcmp(v, "NULL") == 0;
}

static yaml_node_t *map_get(kdoc *k, yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		const char *kv = scalar(yaml_document_get_node(&k->doc, p->key));
		if (kv && strcmp(kv, key) == 0) {
			yaml_node_t *v = yaml_document_get_node(&k->doc, p->value);
			return is_null(v) ? NULL : v;
		}
	}
	return NULL;
}

/*
 * In list `listkey` of the document root, the item whose `name` is `name`;
 * returns its `inner` member (e.g. the `cluster` mapping of a named
 * cluster). *found tells whether the named item exists at all (an item with
 * an empty body is found but has no inner mapping).
 */
static yaml_node_t *named(kdoc *k, const char *listkey, const char *name, const char *inner,
                          bool *found)
{
	*found = false;
	yaml_node_t *list = map_get(k, root_of(k), listkey);
	if (!list || list->type != YAML_SEQUENCE_NODE)
		return NULL;
	for (yaml_node_item_t *it = list->data.sequence.items.start;
	     it < list->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(&k->doc, *it);
		const char *n = scalar(map_get(k, item, "name"));
		if (n && strcmp(n, name) == 0) {
			*found = true;
			return map_get(k, item, inner);
		}
	}
	return NULL;
}

/* YAML 1.1 booleans, as Go's YAML decoder reads them for kubeconfig. */
static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
	                                  "YES",  "on",   "On",   "ON"};
	static const char *const no[] = {"false", "False", "FALSE", "no", "No",
	                                 "NO",    "off",   "Off",   "OFF"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* Decodes `-data` (standard base64 of PEM; whitespace tolerated). */
static int decode_data(const char *b64, char **out, size_t *out_len)
{
	size_t n = strlen(b64);
	char *clean = malloc(n + 1);
	if (!clean)
		return -1;
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (!is_space(b64[i]))
			clean[m++] = b64[i];
	uint8_t *dec = NULL;
	size_t dlen = 0;
	int rc = m == 0 ? -1 : sy_b64_decode(clean, m, &dec, &dlen);
	free(clean);
	if (rc != 0 || dlen == 0) {
		free(dec);
		return -1;
	}
	*out = (char *)dec;
	*out_len = dlen;
	return 0;
}

/* A string value of `key` in `map`; -1 (with err) when present but not a
 * scalar. *out is NULL when absent. */
static int get_str(kdoc *k, yaml_node_t *map, const char *key, const char **out, const char *what,
                   char *err, size_t errlen)
{
	yaml_node_t *n = map_get(k, map, key);
	*out = NULL;
	if (!n)
		return 0;
	if (!scalar(n)) {
		errf(err, errlen, "kubeconfig %s: %s: %s must be a string", k->path, what, key);
		return -1;
	}
	*out = scalar(n);
	return 0;
}

/*
 * Fills a PEM pair of members from `<key>-data` (wins, as in client-go) or
 * `<key>` (a path resolved against the document's directory).
 */
static int get_pem(kdoc *k, yaml_node_t *map, const char *key, const char *what, char **file,
                   char **pem, size_t *pem_len, char *err, size_t errlen)
{
	char dkey[64];
	const char *data, *path;
	snprintf(dkey, sizeof(dkey), "%s-data", key);
	if (get_str(k, map, dkey, &data, what, err, errlen) != 0 ||
	    get_str(k, map, key, &path, what, err, errlen) != 0)
		return -1;
	if (data) {
		if (decode_data(data, pem, pem_len) != 0) {
			errf(err, errlen, "kubeconfig %s: %s: %s is not valid base64", k->path,
			     what, dkey);
			return -1;
		}
		return 0;
	}
	if (path && *path) {
		*file = resolve_path(k->dir, path);
		if (!*file) {
			errf(err, errlen, "out of memory");
			return -1;
		}
	}
	return 0;
}

/* An http(s) URL with a host part (so stripping trailing slashes can never
 * eat into "://"), and no whitespace or control characters. */
static bool has_url_scheme(const char *u)
{
	const char *rest = strncmp(u, "https://", 8) == 0  ? u + 8
	                   : strncmp(u, "http://", 7) == 0 ? u + 7
	                                                   : NULL;
	if (!rest || *rest == '\0' || *rest == '/')
		return false;
	for (const char *p = u; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

static char *strip_slashes(const char *u)
{
	size_t n = strlen(u);
	while (n > 0 && u[n - 1] == '/')
		n--;
	return strndup(u, n);
}

/* The kubeconfig lookup over documents docs[0..n), first one winning. */
static int from_docs(kdoc *docs, size_t n, const char *namespace_, sy_k8s_target *out, char *err,
                     size_t errlen)
{
	const char *cc = NULL;
	const char *first = n > 0 ? docs[0].path : "(none)";
	memset(out, 0, sizeof(*out));

	for (size_t i = 0; i < n && !cc; i++) {
		yaml_node_t *root = root_of(&docs[i]);
		if (root && root->type != YAML_MAPPING_NODE) {
			errf(err, errlen, "kubeconfig %s: the document is not a mapping",
			     docs[i].path);
			return -1;
		}
		if (get_str(&docs[i], root, "current-context", &cc, "top level", err, errlen) != 0)
			return -1;
		if (cc && !*cc)
			cc = NULL;
	}
	if (!cc) {
		errf(err, errlen,
		     "kubeconfig %s: no current-context; set one (kubectl config use-context NAME)",
		     first);
		return -1;
	}

	yaml_node_t *ctx = NULL;
	kdoc *ctx_doc = NULL;
	bool found = false;
	for (size_t i = 0; i < n && !found; i++) {
		ctx = named(&docs[i], "contexts", cc, "context", &found);
		ctx_doc = &docs[i];
	}
	if (!found || !ctx || ctx->type != YAML_MAPPING_NODE) {
		errf(err, errlen,
		     "kubeconfig %s: current-context \"%s\" is not defined in contexts", first, cc);
		return -1;
	}
	char what[K8S_NAME_MAX + 32];
	snprintf(what, sizeof(what), "context \"%.*s\"", (int)K8S_NAME_MAX, cc);
	const char *cluster_name, *user_name, *ctx_ns;
	if (get_str(ctx_doc, ctx, "cluster", &cluster_name, what, err, errlen) != 0 ||
	    get_str(ctx_doc, ctx, "user", &user_name, what, err, errlen) != 0 ||
	    get_str(ctx_doc, ctx, "namespace", &ctx_ns, what, err, errlen) != 0)
		return -1;
	if (!cluster_name || !*cluster_name) {
		errf(err, errlen, "kubeconfig %s: %s names no cluster", ctx_doc->path, what);
		return -1;
	}

	/* The cluster. */
	yaml_node_t *cl = NULL;
	kdoc *cl_doc = NULL;
	found = false;
	for (size_t i = 0; i < n && !found; i++) {
		cl = named(&docs[i], "clusters", cluster_name, "cluster", &found);
		cl_doc = &docs[i];
	}
	if (!found || !cl || cl->type != YAML_MAPPING_NODE) {
		errf(err, errlen,
		     "kubeconfig %s: cluster \"%s\" (of %s) is not defined in clusters", first,
		     cluster_name, what);
		return -1;
	}
	snprintf(what, sizeof(what), "cluster \"%.*s\"", (int)K8S_NAME_MAX, cluster_name);
	const char *server, *insecure;
	if (get_str(cl_doc, cl, "server", &server, what, err, errlen) != 0 ||
	    get_str(cl_doc, cl, "insecure-skip-tls-verify", &insecure, what, err, errlen) != 0)
		goto fail;
	if (!server || !has_url_scheme(server)) {
		errf(err, errlen, "kubeconfig %s: %s: server must be an http(s):// URL",
		     cl_doc->path, what);
		goto fail;
	}
	if (insecure && parse_bool(insecure, &out->insecure) != 0) {
		errf(err, errlen,
		     "kubeconfig %s: %s: insecure-skip-tls-verify must be true or false",
		     cl_doc->path, what);
		goto fail;
	}
	out->api_url = strip_slashes(server);
	if (get_pem(cl_doc, cl, "certificate-authority", what, &out->ca_file, &out->ca_pem,
	            &out->ca_pem_len, err, errlen) != 0)
		goto fail;

	/* The user (optional: a cluster may allow anonymous access). */
	if (user_name && *user_name) {
		yaml_node_t *u = NULL;
		kdoc *u_doc = NULL;
		found = false;
		for (size_t i = 0; i < n && !found; i++) {
			u = named(&docs[i], "users", user_name, "user", &found);
			u_doc = &docs[i];
		}
		if (!found) {
			errf(err, errlen,
			     "kubeconfig %s: user \"%s\" (of context \"%s\") is not defined in "
			     "users",
			     first, user_name, cc);
			goto fail;
		}
		if (u && u->type != YAML_MAPPING_NODE) {
			errf(err, errlen, "kubeconfig %s: user \"%s\" is not a mapping",
			     u_doc->path, user_name);
			goto fail;
		}
		snprintf(what, sizeof(what), "user \"%.*s\"", (int)K8S_NAME_MAX, user_name);
		if (map_get(u_doc, u, "exec") || map_get(u_doc, u, "auth-provider")) {
			errf(err, errlen,
			     "kubeconfig %s: user \"%s\" authenticates with an %s plugin, which "
			     "Switchyard does not run; give the user a token, tokenFile or "
			     "client-certificate/client-key",
			     u_doc->path, user_name,
			     map_get(u_doc, u, "exec") ? "exec" : "auth-provider");
			goto fail;
		}
		if (map_get(u_doc, u, "username") || map_get(u_doc, u, "password")) {
			errf(err, errlen,
			     "kubeconfig %s: user \"%s\" uses basic authentication, which is not "
			     "supported; use a token or a client certificate",
			     u_doc->path, user_name);
			goto fail;
		}
		const char *token, *token_file;
		if (get_str(u_doc, u, "token", &token, what, err, errlen) != 0 ||
		    get_str(u_doc, u, "tokenFile", &token_file, what, err, errlen) != 0)
			goto fail;
		if (token_file && *token_file) {
			/* As in client-go, a token file wins over a static token. */
			out->token_file = resolve_path(u_doc->dir, token_file);
		} else if (token && *token) {
			if (strlen(token) > K8S_FILE_MAX) {
				errf(err, errlen, "kubeconfig %s: %s: token is too long",
				     u_doc->path, what);
				goto fail;
			}
			out->token = strdup(token);
		}
		if (get_pem(u_doc, u, "client-certificate", what, &out->cert_file, &out->cert_pem,
		            &out->cert_pem_len, err, errlen) != 0 ||
		    get_pem(u_doc, u, "client-key", what, &out->key_file, &out->key_pem,
		            &out->key_pem_len, err, errlen) != 0)
			goto fail;
		bool has_cert = out->cert_file || out->cert_pem;
		bool has_key = out->key_file || out->key_pem;
		if (has_cert != has_key) {
			errf(
			    err, errlen,
			    "kubeconfig %s: %s: client-certificate and client-key go together; set "
			    "both or neither",
			    u_doc->path, what);
			goto fail;
		}
	}

	const char *ns =
	    namespace_ && *namespace_ ? namespace_ : (ctx_ns && *ctx_ns ? ctx_ns : "default");
	out->namespace_ = strdup(ns);
	size_t slen = strlen(first) + strlen(cc) + 32;
	out->source = malloc(slen);
	if (out->source)
		snprintf(out->source, slen, "kubeconfig %s context %s", first, cc);
	if (!out->api_url || !out->namespace_ || !out->source) {
		errf(err, errlen, "out of memory");
		goto fail;
	}
	return 0;
fail:
	k8s_target_free(out);
	return -1;
}

/* Loads one YAML document; an empty file is an empty (unloaded) document. */
static int load_doc(kdoc *k, const char *text, size_t len, char *err, size_t errlen)
{
	yaml_parser_t p;
	if (!yaml_parser_initialize(&p)) {
		errf(err, errlen, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	if (!yaml_parser_load(&p, &k->doc)) {
		errf(err, errlen, "kubeconfig %s: line %zu: %s", k->path, p.problem_mark.line + 1,
		     p.problem ? p.problem : "malformed YAML");
		yaml_parser_delete(&p);
		return -1;
	}
	yaml_parser_delete(&p);
	k->loaded = true;
	return 0;
}

int k8s_kubeconfig_parse(const char *text, size_t len, const char *path, const char *basedir,
                         const char *namespace_, sy_k8s_target *out, char *err, size_t errlen)
{
	kdoc k = {.path = path ? path : "(kubeconfig)", .dir = basedir};
	memset(out, 0, sizeof(*out));
	if (len > K8S_FILE_MAX) {
		errf(err, errlen, "kubeconfig %s is larger than %u bytes", k.path, K8S_FILE_MAX);
		return -1;
	}
	if (load_doc(&k, text, len, err, errlen) != 0)
		return -1;
	int rc = from_docs(&k, 1, namespace_, out, err, errlen);
	yaml_document_delete(&k.doc);
	return rc;
}

/* Kubeconfig mode over a ':'-separated list of files. */
static int from_kubeconfig_files(const char *list, const char *namespace_, sy_k8s_target *out,
                                 char *err, size_t errlen)
{
	kdoc docs[MAX_KUBECONFIGS];
	char *paths[MAX_KUBECONFIGS], *dirs[MAX_KUBECONFIGS];
	size_t n = 0;
	int rc = -1;
	char *copy = strdup(list), *save = NULL;
	memset(docs, 0, sizeof(docs));
	if (!copy) {
		errf(err, errlen, "out of memory");
		return -1;
	}
	for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		if (n == MAX_KUBECONFIGS) {
			errf(err, errlen, "kubeconfig: more than %d files listed", MAX_KUBECONFIGS);
			goto out;
		}
		char *text;
		size_t len;
		/* kubectl skips missing entries of a list; a single file must exist. */
		if (strchr(list, ':') && access(p, F_OK) != 0 && errno == ENOENT)
			continue;
		if (read_file(p, &text, &len, err, errlen) != 0) {
			char tmp[512];
			snprintf(tmp, sizeof(tmp), "kubeconfig: %s", err);
			errf(err, errlen, "%s", tmp);
			goto out;
		}
		paths[n] = strdup(p);
		dirs[n] = dir_of(p);
		if (!paths[n] || !dirs[n]) {
			free(paths[n]);
			free(dirs[n]);
			free(text);
			errf(err, errlen, "out of memory");
			goto out;
		}
		docs[n].path = paths[n];
		docs[n].dir = dirs[n];
		int lr = load_doc(&docs[n], text, len, err, errlen);
		free(text);
		n++;
		if (lr != 0)
			goto out;
	}
	if (n == 0) {
		errf(err, errlen, "kubeconfig: none of \"%s\" exists", list);
		goto out;
	}
	rc = from_docs(docs, n, namespace_, out, err, errlen);
out:
	for (size_t i = 0; i < n; i++) {
		if (docs[i].loaded)
			yaml_document_delete(&docs[i].doc);
		free(paths[i]);
		free(dirs[i]);
	}
	free(copy);
	return rc;
}

static char *join_sa(const char *dir, const char *name)
{
	return resolve_path(dir ? dir : K8S_DEFAULT_SA_DIR, name);
}

static int in_cluster(const k8s_settings *s, sy_k8s_target *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (s->api_url && *s->api_url) {
		if (!has_url_scheme(s->api_url)) {
			errf(err, errlen, "api_url: \"%s\" is not an http(s):// URL", s->api_url);
			return -1;
		}
		out->api_url = strip_slashes(s->api_url);
	} else {
		const char *h = s->env_host, *p = s->env_port;
		if (!h || !*h || !p || !*p) {
			errf(err, errlen,
			     "api_url: not set and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT "
			     "are not in the environment (not running in a pod); set api_url or "
			     "kubeconfig");
			return -1;
		}
		size_t l = strlen(h) + strlen(p) + 16;
		out->api_url = malloc(l);
		if (out->api_url)
			snprintf(out->api_url, l,
			         strchr(h, ':') && h[0] != '[' ? "https://[%s]:%s"
			                                       : "https://%s:%s",
			         h, p);
	}
	out->token_file = s->token_file ? strdup(s->token_file) : join_sa(s->sa_dir, "token");
	if (s->ca_file) {
		if (access(s->ca_file, R_OK) != 0) {
			errf(err, errlen, "ca_file: cannot read %s: %s", s->ca_file,
			     strerror(errno));
			goto fail;
		}
		out->ca_file = strdup(s->ca_file);
	} else {
		char *def = join_sa(s->sa_dir, "ca.crt");
		if (def && access(def, R_OK) == 0)
			out->ca_file = def;
		else
			free(def); /* the system trust store */
	}
	if (!out->api_url || !out->token_file) {
		errf(err, errlen, "out of memory");
		goto fail;
	}
	/* The token must be readable now: a discovery that cannot authenticate
	 * should say so at startup, not as a stream of 401s. */
	char *tok = NULL, terr[384];
	if (k8s_token_read(out->token_file, &tok, terr, sizeof(terr)) != 0) {
		errf(err, errlen, "token_file: %s", terr);
		goto fail;
	}
	k8s_token_free(tok);
	if (s->namespace_ && *s->namespace_) {
		out->namespace_ = strdup(s->namespace_);
	} else {
		char *nsf = join_sa(s->sa_dir, "namespace"), *ns = NULL, nerr[384];
		if (!nsf || k8s_token_read(nsf, &ns, nerr, sizeof(nerr)) != 0) {
			errf(err, errlen,
			     "namespace: not set and the pod's namespace is unknown (%s); set "
			     "namespace",
			     nsf ? nerr : "out of memory");
			free(nsf);
			goto fail;
		}
		free(nsf);
		out->namespace_ = ns;
	}
	out->source = strdup("in-cluster");
	if (!out->namespace_ || !out->source) {
		errf(err, errlen, "out of memory");
		goto fail;
	}
	return 0;
fail:
	k8s_target_free(out);
	return -1;
}

int k8s_target_resolve(const k8s_settings *s, sy_k8s_target *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (s->kubeconfig && *s->kubeconfig)
		return from_kubeconfig_files(s->kubeconfig, s->namespace_, out, err, errlen);
	if (!s->api_url && !s->token_file && !s->ca_file && s->env_kubeconfig && *s->env_kubeconfig)
		return from_kubeconfig_files(s->env_kubeconfig, s->namespace_, out, err, errlen);
	return in_cluster(s, out, err, errlen);
}
