/*
 * store-driver: runs a script of mapping-store operations against a real
 * Redis or PostgreSQL, for tests/integration/test_stores.py.
 *
 *   store-driver redis url=redis://127.0.0.1:6379 [prefix=route:] [conns=N]
 *                [tls_ca_file=PEM] [tls_server_name=NAME] [tls_allow_invalid_certs=1]
 *                [tls_client_cert=PEM tls_client_key=PEM]   (for rediss://)
 *   store-driver sql url=postgresql://... [query=...] [upsert=...] [delete=...] [conns=N]
 *   common: [timeout=MS] (lookup_timeout, used as the connect timeout) [log=LEVEL]
 *
 * Operations, one per line on stdin (read as they arrive, so a test can
 * feed them through a pipe one at a time):
 *   get KEY | put KEY VALUE... | del KEY   run; the next line waits for the result
 *   &get KEY (or &put, &del)               start, and go on at once
 *   wait                                   wait for every started operation
 *   sleep MS
 *   close                                  close the store, print CLOSED when done
 * Output, one line per operation in completion order:
 *   FOUND <value> | NOT_FOUND | DONE | ERROR <message> | REJECTED (the request
 *   function returned -1) | CLOSED
 * At end of input the driver waits for outstanding operations, closes the
 * store (printing CLOSED unless a `close` line already did) and exits 0, or
 * 3 if a libuv handle was left open (the store's close contract).
 * Exit 2: the store could not be created (CREATE_ERROR <message>).
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "switchyard/log.h"
#include "switchyard/store.h"

static struct {
	uv_loop_t *loop;
	sy_store *store;
	uv_pipe_t in;
	bool in_open;
	uv_timer_t sleep_timer;
	char *buf; /* unread input */
	size_t len, cap;
	bool eof;
	bool blocked;  /* a sequential operation is in flight */
	bool sleeping; /* in `sleep` */
	bool waiting;  /* in `wait` or at end of input */
	bool closing;  /* store close in progress */
	bool finished;
	unsigned outstanding;
} D;

static void step(void);

static void on_result(void *arg, sy_store_status st, const char *value, const char *error)
{
	bool sequential = arg != NULL;
	switch (st) {
	case SY_STORE_FOUND:
		printf("FOUND %s\n", value ? value : "(null)");
		break;
	case SY_STORE_NOT_FOUND:
		printf("NOT_FOUND\n");
		break;
	case SY_STORE_DONE:
		printf("DONE\n");
		break;
	case SY_STORE_ERROR:
		printf("ERROR %s\n", error ? error : "(no message)");
		break;
	}
	fflush(stdout);
	D.outstanding--;
	if (sequential)
		D.blocked = false;
	step();
}

static void on_store_closed(void *arg)
{
	(void)arg;
	D.store = NULL;
	D.closing = false;
	printf("CLOSED\n");
	fflush(stdout);
	step();
}

static void on_sleep_done(uv_timer_t *t)
{
	(void)t;
	D.sleeping = false;
	step();
}

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

/* Runs one script line. */
static void execute(char *line)
{
	bool async = false;
	char *cmd, *key, *rest, *save = NULL;

	line[strcspn(line, "\r")] = '\0';
	while (*line == ' ' || *line == '\t')
		line++;
	if (*line == '\0' || *line == '#')
		return;
	if (*line == '&') {
		async = true;
		line++;
	}
	cmd = strtok_r(line, " \t", &save);
	if (strcmp(cmd, "sleep") == 0) {
		char *ms = strtok_r(NULL, " \t", &save);
		D.sleeping = true;
		uv_timer_start(&D.sleep_timer, on_sleep_done, ms ? strtoull(ms, NULL, 10) : 0, 0);
		return;
	}
	if (strcmp(cmd, "wait") == 0) {
		D.waiting = true;
		return;
	}
	if (strcmp(cmd, "close") == 0) {
		if (!D.store) {
			printf("REJECTED\n");
			fflush(stdout);
			return;
		}
		D.closing = true;
		D.store->ops->close(D.store, on_store_closed, NULL);
		return;
	}
	key = strtok_r(NULL, " \t", &save);
	rest = save;
	while (rest && (*rest == ' ' || *rest == '\t'))
		rest++;
	int rc = -1;
	void *arg = async ? NULL : (void *)&D; /* non-NULL marks a sequential op */
	if (!D.store || !key) {
		rc = -1;
	} else if (strcmp(cmd, "get") == 0) {
		rc = D.store->ops->get(D.store, key, on_result, arg);
	} else if (strcmp(cmd, "put") == 0 && rest && *rest) {
		rc = D.store->ops->put(D.store, key, rest, on_result, arg);
	} else if (strcmp(cmd, "del") == 0) {
		rc = D.store->ops->del(D.store, key, on_result, arg);
	} else {
		fprintf(stderr, "store-driver: bad line: %s\n", cmd);
	}
	if (rc != 0) {
		printf("REJECTED\n");
		fflush(stdout);
		return;
	}
	D.outstanding++;
	if (!async)
		D.blocked = true;
}

static void finish(void)
{
	if (D.finished)
		return;
	if (D.store) {
		D.closing = true;
		D.store->ops->close(D.store, on_store_closed, NULL);
		return; /* on_store_closed calls step() again */
	}
	D.finished = true;
	if (D.in_open) {
		D.in_open = false;
		uv_close((uv_handle_t *)&D.in, on_handle_closed);
	}
	uv_close((uv_handle_t *)&D.sleep_timer, on_handle_closed);
}

static void step(void)
{
	for (;;) {
		if (D.blocked || D.sleeping || D.closing || D.finished)
			return;
		if (D.waiting) {
			if (D.outstanding > 0)
				return;
			D.waiting = false;
		}
		char *nl = D.len ? memchr(D.buf, '\n', D.len) : NULL;
		if (!nl) {
			if (!D.eof)
				return;
			if (D.len > 0) { /* last line without a newline */
				nl = D.buf + D.len;
				if (D.len == D.cap) {
					D.buf = realloc(D.buf, D.cap + 1);
					nl = D.buf + D.len;
				}
				D.len++;
			} else {
				if (D.outstanding > 0) {
					D.waiting = true;
					return;
				}
				finish();
				return;
			}
		}
		*nl = '\0';
		size_t used = (size_t)(nl - D.buf) + 1;
		char *line = strdup(D.buf);
		memmove(D.buf, D.buf + used, D.len - used);
		D.len -= used;
		execute(line);
		free(line);
	}
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)h;
	(void)hint;
	if (D.cap - D.len < 4096) {
		D.cap = D.cap * 2 + 4096;
		D.buf = realloc(D.buf, D.cap);
	}
	*b = uv_buf_init(D.buf + D.len, (unsigned)(D.cap - D.len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)s;
	(void)b;
	if (n > 0)
		D.len += (size_t)n;
	if (n < 0) {
		D.eof = true;
		D.in_open = false;
		uv_close((uv_handle_t *)&D.in, on_handle_closed);
	}
	step();
}

/* A regular file or /dev/null on stdin cannot be polled: read it whole. */
static void slurp_stdin(void)
{
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
		if (D.cap - D.len < n) {
			D.cap = D.cap * 2 + n;
			D.buf = realloc(D.buf, D.cap);
		}
		memcpy(D.buf + D.len, chunk, n);
		D.len += n;
	}
	D.eof = true;
}

int main(int argc, char **argv)
{
	sy_mapping_config cfg;
	unsigned conns = 1;
	const char *error = NULL;

	if (argc < 2 || (strcmp(argv[1], "redis") != 0 && strcmp(argv[1], "sql") != 0)) {
		fprintf(stderr, "usage: store-driver redis|sql key=value... < script\n");
		return 64;
	}
	/* As in the server: a write to a connection the server has closed
	 * must be an error return, not a fatal signal (hiredis uses write()). */
	signal(SIGPIPE, SIG_IGN);
	memset(&cfg, 0, sizeof(cfg));
	cfg.lookup_timeout_ms = 5000;
	log_set_level(SY_LOG_WARN);
	for (int i = 2; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq) {
			fprintf(stderr, "store-driver: expected key=value, got %s\n", argv[i]);
			return 64;
		}
		*eq = '\0';
		const char *k = argv[i], *v = eq + 1;
		if (strcmp(k, "url") == 0) {
			cfg.redis.url = cfg.sql.url = (char *)v;
		} else if (strcmp(k, "prefix") == 0) {
			cfg.redis.key_prefix = (char *)v;
		} else if (strcmp(k, "query") == 0) {
			cfg.sql.query = (char *)v;
		} else if (strcmp(k, "upsert") == 0) {
			cfg.sql.upsert_query = (char *)v;
		} else if (strcmp(k, "delete") == 0) {
			cfg.sql.delete_query = (char *)v;
		} else if (strcmp(k, "tls_ca_file") == 0) {
			cfg.redis.tls_ca_file = (char *)v;
		} else if (strcmp(k, "tls_server_name") == 0) {
			cfg.redis.tls_server_name = (char *)v;
		} else if (strcmp(k, "tls_allow_invalid_certs") == 0) {
			cfg.redis.tls_allow_invalid_certs = strcmp(v, "1") == 0;
		} else if (strcmp(k, "tls_client_cert") == 0) {
			cfg.redis.tls_client_cert = (char *)v;
		} else if (strcmp(k, "tls_client_key") == 0) {
			cfg.redis.tls_client_key = (char *)v;
		} else if (strcmp(k, "conns") == 0) {
			conns = (unsigned)strtoul(v, NULL, 10);
		} else if (strcmp(k, "timeout") == 0) {
			cfg.lookup_timeout_ms = strtoull(v, NULL, 10);
		} else if (strcmp(k, "log") == 0) {
			sy_log_level lvl;
			if (log_level_parse(v, &lvl) == 0)
				log_set_level(lvl);
		} else {
			fprintf(stderr, "store-driver: unknown argument %s\n", k);
			return 64;
		}
	}

	D.loop = uv_default_loop();
	if (strcmp(argv[1], "redis") == 0) {
		cfg.source = SY_MAP_REDIS;
		D.store = store_redis_create(D.loop, &cfg, conns, &error);
	} else {
		cfg.source = SY_MAP_SQL;
		D.store = store_sql_create(D.loop, &cfg, conns, &error);
	}
	if (!D.store) {
		printf("CREATE_ERROR %s\n", error ? error : "(no message)");
		return 2;
	}
	uv_timer_init(D.loop, &D.sleep_timer);
	if (uv_guess_handle(0) == UV_NAMED_PIPE) {
		uv_pipe_init(D.loop, &D.in, 0);
		D.in_open = true;
		if (uv_pipe_open(&D.in, 0) != 0 ||
		    uv_read_start((uv_stream_t *)&D.in, on_alloc, on_read) != 0) {
			fprintf(stderr, "store-driver: cannot read stdin\n");
			return 64;
		}
	} else {
		slurp_stdin();
	}
	step();
	uv_run(D.loop, UV_RUN_DEFAULT);
	free(D.buf);
	if (uv_loop_close(D.loop) != 0) {
		fprintf(stderr, "store-driver: handles left open after close\n");
		uv_print_all_handles(D.loop, stderr);
		return 3;
	}
	return 0;
}
