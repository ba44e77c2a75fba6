/*
 * Watching the configuration file (admin.h: reload_watch_*), main thread.
 *
 * The watch is on the file's directory, not the file: editors and the
 * harness replace the file by rename, and in a Kubernetes ConfigMap volume
 * the path is `<dir>/<name>` -> `..data/<name>` where the kubelet updates by
 * writing a new `..<timestamp>` directory and atomically renaming a
 * temporary symlink over `..data`. A watch on the file itself would follow
 * the old inode and miss both. Events for the file's name or for `..data`
 * (or without a name) arm a debounce timer; when it fires, the content is
 * hashed (SHA-256) and a reload runs only when the hash differs from the
 * last content seen. A periodic check does the same, for file systems
 * without inotify and for a watch that died with its directory.
 *
 * The mapping file ([mapping] source = "file") is watched the same way,
 * and a change re-reads it all or nothing (route_reload_file): an invalid
 * edit is logged and the old table kept. So a ConfigMap edit reaches every
 * replica within the debounce (plus the kubelet's sync period).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "switchyard/log.h"
#include "switchyard/reload.h"
#include "switchyard/route.h"

#define DEBOUNCE_MS    200
#define PERIODIC_MS    10000
#define HASH_FILE_MAX  (16u << 20)
#define CONFIGMAP_LINK "..data"

/* One watched file: `changed` runs (debounced) when its content differs
 * from the last content seen. */
typedef struct file_watch {
	uv_loop_t *loop;
	void (*changed)(void *arg, const char *why);
	void *arg;
	uv_fs_event_t ev;
	uv_timer_t debounce;
	uv_timer_t periodic;
	int closes_pending;
	char *path, *dir, *base;
	unsigned char hash[32];
	bool have_hash;
} file_watch;

struct sy_reload_watch {
	file_watch *config, *mapping;
};

/* SHA-256 of the file's content (following symlinks). Returns 0 or -1. */
static int hash_file(const char *path, unsigned char out[32])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = -1;
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	char buf[8192];
	size_t total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > HASH_FILE_MAX || EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			goto out;
	}
	unsigned len = 0;
	rc = EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == 32 ? 0 : -1;
out:
	EVP_MD_CTX_free(ctx);
	close(fd);
	return rc;
}

/* Runs `changed` when the content differs from what was last seen. */
static void check(file_watch *fw, const char *why)
{
	unsigned char h[32];
	if (hash_file(fw->path, h) != 0)
		return; /* mid-replacement or gone: the next event or tick retries */
	if (fw->have_hash && memcmp(h, fw->hash, sizeof(h)) == 0)
		return;
	/* Remember it before acting: an invalid edit is reported once, not at
	 * every tick, and the next edit is noticed again. */
	memcpy(fw->hash, h, sizeof(h));
	fw->have_hash = true;
	fw->changed(fw->arg, why);
}

static void on_debounce(uv_timer_t *t)
{
	check(t->data, "file change");
}

static void on_periodic(uv_timer_t *t)
{
	check(t->data, "periodic check");
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	(void)events;
	file_watch *fw = h->data;
	if (status < 0)
		return;
	if (filename && strcmp(filename, fw->base) != 0 && strcmp(filename, CONFIGMAP_LINK) != 0)
		return;
	uv_timer_start(&fw->debounce, on_debounce, DEBOUNCE_MS, 0);
}

static void fw_free(file_watch *fw)
{
	free(fw->path);
	free(fw->dir);
	free(fw->base);
	free(fw);
}

static file_watch *fw_start(uv_loop_t *loop, const char *path, const char *what,
                            void (*changed)(void *arg, const char *why), void *arg)
{
	file_watch *fw = calloc(1, sizeof(*fw));
	if (!fw)
		return NULL;
	fw->loop = loop;
	fw->changed = changed;
	fw->arg = arg;
	fw->path = strdup(path);
	const char *slash = strrchr(path, '/');
	if (slash) {
		fw->dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
		fw->base = strdup(slash + 1);
	} else {
		fw->dir = strdup(".");
		fw->base = strdup(path);
	}
	if (!fw->path || !fw->dir || !fw->base) {
		fw_free(fw);
		return NULL;
	}
	fw->have_hash = hash_file(path, fw->hash) == 0;
	uv_timer_init(loop, &fw->debounce);
	uv_timer_init(loop, &fw->periodic);
	fw->debounce.data = fw->periodic.data = fw;
	uv_timer_start(&fw->periodic, on_periodic, PERIODIC_MS, PERIODIC_MS);
	uv_fs_event_init(loop, &fw->ev);
	fw->ev.data = fw;
	int r = uv_fs_event_start(&fw->ev, on_fs_event, fw->dir, 0);
	if (r != 0)
		sy_log(SY_LOG_WARN, "cannot watch a file's directory; checking every 10s", "file",
		       what, "directory", fw->dir, "error", uv_strerror(r), NULL);
	return fw;
}

static void on_closed(uv_handle_t *h)
{
	file_watch *fw = h->data;
	if (--fw->closes_pending == 0)
		fw_free(fw);
}

static void fw_stop(file_watch *fw)
{
	if (!fw)
		return;
	fw->closes_pending = 3;
	uv_close((uv_handle_t *)&fw->ev, on_closed);
	uv_close((uv_handle_t *)&fw->debounce, on_closed);
	uv_close((uv_handle_t *)&fw->periodic, on_closed);
}

/* ---- the configuration file ---- */

static void config_changed(void *arg, const char *why)
{
	char *err = NULL;
	server_reload(arg, why, &err);
	free(err);
}

static struct sy_reload_watch *watches(sy_server *srv)
{
	if (!srv->watch)
		srv->watch = calloc(1, sizeof(*srv->watch));
	return srv->watch;
}

void reload_watch_start(sy_server *srv)
{
	struct sy_reload_watch *w = watches(srv);
	if (!w)
		return;
	if (srv->config_path && !w->config)
		w->config = fw_start(srv->main_loop, srv->config_path, "configuration",
		                     config_changed, srv);
	mapping_watch_sync(srv);
}

void reload_watch_stop(sy_server *srv)
{
	struct sy_reload_watch *w = srv->watch;
	if (!w)
		return;
	srv->watch = NULL;
	fw_stop(w->config);
	fw_stop(w->mapping);
	free(w);
}

void reload_watch_loaded(sy_server *srv)
{
	struct sy_reload_watch *w = srv->watch;
	if (w && w->config)
		w->config->have_hash = hash_file(srv->config_path, w->config->hash) == 0;
	mapping_watch_sync(srv);
}

/* ---- the mapping file ([mapping] source = "file") ---- */

static void mapping_changed(void *arg, const char *why)
{
	sy_server *srv = arg;
	sy_snapshot *snap = server_snapshot(srv);
	char *err = NULL;
	if (srv->router && route_reload_file(srv->router, snap, &err) != 0)
		sy_log(SY_LOG_ERROR, "mapping file reload failed: keeping the old table", "trigger",
		       why, "path", snap->cfg->mapping.file.path, "error", err ? err : "?", NULL);
	free(err);
	snapshot_unref(snap);
}

void mapping_watch_sync(sy_server *srv)
{
	sy_snapshot *snap = server_snapshot(srv);
	const sy_mapping_config *m = &snap->cfg->mapping;
	const char *path = m->source == SY_MAP_FILE && srv->router ? m->file.path : NULL;
	struct sy_reload_watch *w = path ? watches(srv) : srv->watch;
	if (w) {
		if (w->mapping && (!path || strcmp(w->mapping->path, path) != 0)) {
			fw_stop(w->mapping);
			w->mapping = NULL;
		}
		if (path && !w->mapping)
			w->mapping =
			    fw_start(srv->main_loop, path, "mapping", mapping_changed, srv);
		else if (w->mapping) /* the router just read it */
			w->mapping->have_hash = hash_file(path, w->mapping->hash) == 0;
	}
	snapshot_unref(snap);
}
