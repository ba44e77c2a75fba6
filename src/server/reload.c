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

#define DEBOUNCE_MS    200
#define PERIODIC_MS    10000
#define HASH_FILE_MAX  (16u << 20)
#define CONFIGMAP_LINK "..data"

struct sy_reload_watch {
	sy_server *srv;
	uv_fs_event_t ev;
	uv_timer_t debounce;
	uv_timer_t periodic;
	bool ev_started;
	int closes_pending;
	char *dir, *base;
	unsigned char hash[32];
	bool have_hash;
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

/* Reloads when the content differs from what was last seen. */
static void check(struct sy_reload_watch *rw, const char *why)
{
	unsigned char h[32];
	if (hash_file(rw->srv->config_path, h) != 0)
		return; /* mid-replacement or gone: the next event or tick retries */
	if (rw->have_hash && memcmp(h, rw->hash, sizeof(h)) == 0)
		return;
	/* Remember it before reloading: an invalid edit is reported once,
	 * not at every tick, and the next edit is noticed again. */
	memcpy(rw->hash, h, sizeof(h));
	rw->have_hash = true;
	char *err = NULL;
	server_reload(rw->srv, why, &err);
	free(err);
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
	struct sy_reload_watch *rw = h->data;
	if (status < 0)
		return;
	if (filename && strcmp(filename, rw->base) != 0 && strcmp(filename, CONFIGMAP_LINK) != 0)
		return;
	uv_timer_start(&rw->debounce, on_debounce, DEBOUNCE_MS, 0);
}

void reload_watch_start(sy_server *srv)
{
	if (!srv->config_path || srv->watch)
		return;
	struct sy_reload_watch *rw = calloc(1, sizeof(*rw));
	if (!rw)
		return;
	rw->srv = srv;
	const char *slash = strrchr(srv->config_path, '/');
	if (slash) {
		rw->dir =
		    strndup(srv->config_path,
		            slash == srv->config_path ? 1 : (size_t)(slash - srv->config_path));
		rw->base = strdup(slash + 1);
	} else {
		rw->dir = strdup(".");
		rw->base = strdup(srv->config_path);
	}
	if (!rw->dir || !rw->base) {
		free(rw->dir);
		free(rw->base);
		free(rw);
		return;
	}
	rw->have_hash = hash_file(srv->config_path, rw->hash) == 0;
	uv_timer_init(srv->main_loop, &rw->debounce);
	uv_timer_init(srv->main_loop, &rw->periodic);
	rw->debounce.data = rw->periodic.data = rw;
	uv_timer_start(&rw->periodic, on_periodic, PERIODIC_MS, PERIODIC_MS);
	uv_fs_event_init(srv->main_loop, &rw->ev);
	rw->ev.data = rw;
	int r = uv_fs_event_start(&rw->ev, on_fs_event, rw->dir, 0);
	if (r != 0)
		sy_log(SY_LOG_WARN, "cannot watch the configuration directory; checking every 10s",
		       "directory", rw->dir, "error", uv_strerror(r), NULL);
	srv->watch = rw;
}

static void on_closed(uv_handle_t *h)
{
	struct sy_reload_watch *rw = h->data;
	if (--rw->closes_pending > 0)
		return;
	free(rw->dir);
	free(rw->base);
	free(rw);
}

void reload_watch_stop(sy_server *srv)
{
	struct sy_reload_watch *rw = srv->watch;
	if (!rw)
		return;
	srv->watch = NULL;
	rw->closes_pending = 3;
	uv_close((uv_handle_t *)&rw->ev, on_closed);
	uv_close((uv_handle_t *)&rw->debounce, on_closed);
	uv_close((uv_handle_t *)&rw->periodic, on_closed);
}

void reload_watch_loaded(sy_server *srv)
{
	struct sy_reload_watch *rw = srv->watch;
	if (rw)
		rw->have_hash = hash_file(srv->config_path, rw->hash) == 0;
}
