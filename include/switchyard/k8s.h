/*
 * Kubernetes discovery (src/k8s/): where the API server is and how to talk
 * to it (kubeconfig.c), what the EndpointSlices of one Service say about its
 * pods (endpointslice.c), and a list+watch loop that keeps that picture
 * current (watch.c).
 *
 * The first two parts are pure: they parse bytes and files and never touch a
 * socket or an event loop, so the unit tests and the fuzz targets drive them
 * directly. The watch runs on one libuv loop and calls back on that loop's
 * thread only; none of its functions may be called from another thread.
 *
 * Errors: functions return 0 or -1 and write a message into a caller buffer
 * (`err`, `errlen`; always NUL-terminated when errlen > 0), or, for the
 * watch's start, through `const char **error_r` pointing into the watch's
 * own static storage (valid until the next k8s_watch_start call on the same
 * thread). Messages never contain a token or key material.
 */
#ifndef SWITCHYARD_K8S_H
#define SWITCHYARD_K8S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "switchyard/config.h"

/* Caps that bound every buffer the module holds (DESIGN.md convention 3). */
#define K8S_FILE_MAX       (1u << 20)  /* a kubeconfig, a token, a namespace file */
#define K8S_LINE_MAX       (1u << 20)  /* one watch event line */
#define K8S_LIST_MAX       (16u << 20) /* one list response body */
#define K8S_SLICES_MAX     10000u      /* slices kept per Service */
#define K8S_ENDPOINTS_MAX  1000u       /* endpoints per slice (the API's own maximum) */
#define K8S_NAME_MAX       253u        /* DNS subdomain: slice names, pod names, FQDNs */
#define K8S_VERSION_MAX    128u        /* resourceVersion strings */
#define K8S_DEFAULT_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* ------------------------------------------------------------------------ */
/* Target: the API server, its trust, and our credentials (kubeconfig.c)    */
/* ------------------------------------------------------------------------ */

/*
 * One resolved connection target. Every string is malloc'd and owned by the
 * struct (k8s_target_free). PEM material is either a path (read by libcurl
 * when a request is made) or the decoded bytes (from a kubeconfig's `-data`
 * keys), never both; both NULL means "not configured".
 */
typedef struct sy_k8s_target {
	char *api_url;    /* "https://host:port" (IPv6 hosts in brackets), no trailing '/' */
	char *namespace_; /* never NULL after a successful resolve */
	char *ca_file;    /* CA bundle path; NULL with ca_pem NULL = the system trust store */
	char *ca_pem;
	size_t ca_pem_len;
	bool insecure;    /* insecure-skip-tls-verify: no certificate or host name check */
	char *token_file; /* re-read periodically and after a 401 */
	char *token;      /* a static token (kubeconfig `token`); wiped on free */
	char *cert_file;  /* client certificate for mutual TLS */
	char *cert_pem;
	size_t cert_pem_len;
	char *key_file; /* its private key */
	char *key_pem;  /* wiped on free */
	size_t key_pem_len;
	char *source; /* for log lines: "in-cluster" or "kubeconfig <path> context <name>" */
} sy_k8s_target;

/*
 * What the `[cluster.<id>.kubernetes]` table says, plus the environment. All
 * pointers are borrowed for the duration of k8s_target_resolve. Paths from
 * the configuration are expected to be absolute already (config.c resolves
 * them against the configuration file's directory).
 */
typedef struct k8s_settings {
	const char *namespace_; /* NULL = the context's, the pod's, or "default" */
	const char *api_url;
	const char *token_file;
	const char *ca_file;
	const char *kubeconfig; /* a path, or a ':'-separated list like $KUBECONFIG */
	/* The environment, normally filled by k8s_settings_from_env. */
	const char *env_host;       /* $KUBERNETES_SERVICE_HOST */
	const char *env_port;       /* $KUBERNETES_SERVICE_PORT */
	const char *env_kubeconfig; /* $KUBECONFIG */
	/* The service-account directory; NULL = K8S_DEFAULT_SA_DIR (tests point
	 * it at a temp dir). */
	const char *sa_dir;
} k8s_settings;

/* Fills the env_* members from getenv(); the strings stay owned by the
 * environment. The other members are left alone. */
void k8s_settings_from_env(k8s_settings *s);

/* Zeroes *s and fills it from a cluster's `[cluster.<id>.kubernetes]` table
 * (borrowing its strings, so the configuration must outlive the resolve)
 * and from the environment. sa_dir stays NULL (the default). */
void k8s_settings_from_cluster(const sy_cluster_config *cl, k8s_settings *s);

/*
 * Resolves the target. Mode: `kubeconfig` when s->kubeconfig is set, or when
 * s->env_kubeconfig is set and none of api_url/token_file/ca_file/kubeconfig
 * is; in-cluster otherwise (each of api_url, token_file, ca_file overriding
 * its default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
 * <sa_dir>/token, <sa_dir>/ca.crt, namespace from <sa_dir>/namespace).
 *
 * In-cluster checks: the token file must be readable, an explicit ca_file
 * must exist; a missing default ca.crt means the system trust store. The
 * namespace file is read only when s->namespace_ is NULL.
 *
 * On success *out is filled (the caller frees it with k8s_target_free) and 0
 * returned; on failure *out is zeroed, -1 returned and err says why, naming
 * the setting or the kubeconfig path (and user, for an `exec` or
 * `auth-provider` user, which are not supported).
 */
int k8s_target_resolve(const k8s_settings *s, sy_k8s_target *out, char *err, size_t errlen);

/*
 * Kubeconfig mode on text already in memory (the file-reading half of
 * k8s_target_resolve calls this; so does the fuzz target). `path` names the
 * file in messages and `basedir` (may be NULL = the current directory)
 * resolves relative file references. `namespace_` (may be NULL) overrides
 * the context's namespace. Reads no files. Same result contract as
 * k8s_target_resolve.
 */
int k8s_kubeconfig_parse(const char *text, size_t len, const char *path, const char *basedir,
                         const char *namespace_, sy_k8s_target *out, char *err, size_t errlen);

/* Frees what a target owns (wiping secrets) and zeroes it. NULL is fine. */
void k8s_target_free(sy_k8s_target *t);

/*
 * Reads a token file: at most K8S_FILE_MAX bytes, surrounding whitespace
 * (the trailing newline projected tokens do not have but hand-made files
 * do) trimmed; an empty token is an error. *out is malloc'd; free it with
 * sy_secure_free(*out, strlen(*out)) or k8s_token_free. 0 or -1 with err.
 */
int k8s_token_read(const char *path, char **out, char *err, size_t errlen);
void k8s_token_free(char *token);

/* ------------------------------------------------------------------------ */
/* Membership: EndpointSlices of one Service (endpointslice.c)             */
/* ------------------------------------------------------------------------ */

/*
 * One pod (or other endpoint) of the Service. `id` is targetRef.name when
 * the endpoint has one, else its first address; `address` is the first of
 * `addresses`. eligible = serving (or `ready` when `serving` is absent; an
 * absent `ready` counts as ready) and not terminating.
 */
typedef struct k8s_member {
	char *id;
	char *address;
	bool eligible;
	bool serving;
	bool terminating;
} k8s_member;

/* A sorted (by id, byte order) array of members with unique ids. */
typedef struct k8s_members {
	k8s_member *v;
	size_t n;
} k8s_members;

void k8s_members_free(k8s_members *m);
/* True when both lists hold the same ids with the same address and flags. */
bool k8s_members_equal(const k8s_members *a, const k8s_members *b);
/* A deep copy; 0 or -1 (allocation). */
int k8s_members_copy(const k8s_members *src, k8s_members *dst);

/* What changed between two member lists, for log lines. Arrays of indices:
 * joined[] and changed[] index `after`, left[] indexes `before`. */
typedef struct k8s_diff {
	size_t *joined, njoined;           /* ids new in `after` */
	size_t *left, nleft;               /* ids gone from `after` */
	size_t *terminating, nterminating; /* in both, terminating only in `after` */
	size_t *changed, nchanged;         /* in both, anything else different */
} k8s_diff;

/* Computes the diff of two sorted lists; 0 or -1 (allocation). */
int k8s_members_diff(const k8s_members *before, const k8s_members *after, k8s_diff *out);
void k8s_diff_free(k8s_diff *d);

/* The membership table: every slice of the Service by name. */
typedef struct k8s_table k8s_table;

k8s_table *k8s_table_new(void);
void k8s_table_free(k8s_table *t);

/*
 * Replaces the whole table with an EndpointSliceList (the list response:
 * apiVersion, kind "EndpointSliceList", metadata.resourceVersion, items).
 * On error the table is left as it was. 0 or -1 with err.
 */
int k8s_table_apply_list(k8s_table *t, const char *json, size_t len, char *err, size_t errlen);

typedef enum k8s_event_type {
	K8S_EV_ADDED,
	K8S_EV_MODIFIED,
	K8S_EV_DELETED,
	K8S_EV_BOOKMARK,
	K8S_EV_ERROR,
	K8S_EV_COUNT
} k8s_event_type;
const char *k8s_event_type_name(k8s_event_type t);

/* What one watch event line did. */
typedef struct k8s_event_result {
	k8s_event_type type;
	bool gone;         /* an ERROR event with a Status of code 410: relist */
	long code;         /* the Status code of an ERROR event (0 when absent) */
	char message[256]; /* the Status message of an ERROR event, truncated */
} k8s_event_result;

/*
 * Applies one watch event line (`{"type":...,"object":{...}}`, without the
 * newline). ADDED and MODIFIED store the slice under its name, DELETED drops
 * it, BOOKMARK only records the version; every type but ERROR records the
 * object's metadata.resourceVersion as the table's version. An ERROR event
 * returns 0 with res->type K8S_EV_ERROR (and res->gone for 410): the stream
 * is over and the caller decides. A malformed line or object returns -1 and
 * leaves the table as it was.
 */
int k8s_table_apply_event(k8s_table *t, const char *line, size_t len, k8s_event_result *res,
                          char *err, size_t errlen);

/* The resourceVersion of the last list or event applied ("" before any). */
const char *k8s_table_version(const k8s_table *t);
size_t k8s_table_slice_count(const k8s_table *t);

/*
 * The current members: the union over all slices, one per id. When one id
 * appears more than once (a dual-stack pod in an IPv4 and an IPv6 slice, a
 * slice being replaced), the entry kept is the eligible one, then the one
 * from an IPv4 slice, then the one from the slice whose name sorts first, so
 * every replica of the proxy picks the same address. FQDN slices are
 * ignored. *out is the caller's (k8s_members_free). 0 or -1 (allocation).
 */
int k8s_table_members(const k8s_table *t, k8s_members *out);

/* ------------------------------------------------------------------------ */
/* The list+watch loop (watch.c)                                           */
/* ------------------------------------------------------------------------ */

/* What the application sees. */
typedef enum k8s_watch_state {
	K8S_WATCH_SYNCING,  /* the first list has not completed yet */
	K8S_WATCH_SYNCED,   /* members are current; the watch is streaming */
	K8S_WATCH_DEGRADED, /* the API failed; retrying with backoff, last members kept (also
	                       before the first list: see k8s_watch_has_synced) */
	K8S_WATCH_STOPPED,  /* k8s_watch_stop was called */
	K8S_WATCH_STATE_COUNT
} k8s_watch_state;
const char *k8s_watch_state_name(k8s_watch_state s);

/* Why a list or watch was started again (metrics label values). */
typedef enum k8s_restart_reason {
	K8S_RESTART_EXPIRED,      /* the watch stream ended (timeoutSeconds, server close) */
	K8S_RESTART_GONE,         /* 410: the version is too old, relisted */
	K8S_RESTART_UNAUTHORIZED, /* 401: token re-read */
	K8S_RESTART_ERROR,        /* network, TLS, HTTP status, malformed data */
	K8S_RESTART_COUNT
} k8s_restart_reason;
const char *k8s_restart_reason_name(k8s_restart_reason r);

typedef struct k8s_watch_stats {
	uint64_t restarts[K8S_RESTART_COUNT];
	uint64_t list_errors;  /* failed list requests */
	uint64_t watch_errors; /* failed watch requests or streams */
	uint64_t events;       /* watch events applied */
	uint64_t lists;        /* successful lists */
	uint64_t last_sync_ms; /* wall clock (ms since the epoch) of the last list,
	                          event or clean watch end; 0 = never */
} k8s_watch_stats;

typedef struct sy_k8s_watch_opts {
	const char *name;               /* for log lines (the cluster id); NULL = the service */
	unsigned watch_timeout_s;       /* timeoutSeconds of each watch; 0 = 300 */
	unsigned request_timeout_ms;    /* list requests and connects; 0 = 30000 */
	unsigned backoff_initial_ms;    /* 0 = 500 */
	unsigned backoff_max_ms;        /* 0 = 30000 */
	unsigned token_reread_ms;       /* 0 = 60000 */
	unsigned error_log_interval_ms; /* repeated error lines at most this often; 0 = 60000 */
} sy_k8s_watch_opts;

/* One notification. Everything is borrowed for the duration of the call. */
typedef struct k8s_update {
	k8s_watch_state state;
	bool state_changed;
	bool members_changed;
	const k8s_members *members; /* the full current list (possibly empty) */
	bool synced;                /* a list has completed at least once (readiness) */
	const char *error;          /* the last error (DEGRADED), else NULL */
} k8s_update;

typedef struct k8s_watch k8s_watch;

/*
 * Called on the loop thread after a change of members or of state (several
 * events read together are reported once). It may call k8s_watch_stop, and
 * k8s_watch_members/stats/state; after k8s_watch_stop it is not called again.
 */
typedef void (*k8s_members_cb)(k8s_watch *w, const k8s_update *u, void *arg);
typedef void (*k8s_stopped_cb)(void *arg);

/*
 * Starts listing and watching the EndpointSlices labelled
 * kubernetes.io/service-name=<service> in t->namespace_. The target is
 * copied (the caller keeps and frees its own); `o` may be NULL (defaults)
 * and is copied; `service` is copied. The first request starts from a
 * zero timer, so no callback runs before this returns. Returns NULL with
 * *error_r set when the arguments are unusable (no service, a token file
 * that cannot be read, libcurl setup failing).
 */
k8s_watch *k8s_watch_start(uv_loop_t *loop, const sy_k8s_target *t, const char *service,
                           const sy_k8s_watch_opts *o, k8s_members_cb cb, void *arg,
                           const char **error_r);

/*
 * Stops: aborts any request and closes every handle asynchronously. Safe to
 * call from inside the members callback. `done` (may be NULL) runs on the
 * loop once the last handle is closed, and the watch's memory is freed
 * right before it runs: treat the pointer as gone once this returns (only
 * a second k8s_watch_stop from inside the members callback that is running
 * now is tolerated, as a no-op).
 */
void k8s_watch_stop(k8s_watch *w, k8s_stopped_cb done, void *arg);

k8s_watch_state k8s_watch_get_state(const k8s_watch *w);
/* True once a list has completed: the readiness condition. It stays true
 * through later errors (the last members are kept and routed on). */
bool k8s_watch_has_synced(const k8s_watch *w);
/* The current members (owned by the watch; valid until control returns to
 * the loop or the next callback). */
const k8s_members *k8s_watch_members(const k8s_watch *w);
void k8s_watch_get_stats(const k8s_watch *w, k8s_watch_stats *out);
/* The last error text, or NULL. Owned by the watch, as for members. */
const char *k8s_watch_last_error(const k8s_watch *w);

#endif
