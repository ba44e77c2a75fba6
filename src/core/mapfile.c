/*
 * The mapping file: "<identifier> <destination>" lines (see mapfile.h).
 *
 * The format follows the reference implementation: a line whose first
 * non-blank character is '#' is a comment, blank lines are ignored, fields
 * are separated by any whitespace, and anything after the second field is
 * ignored (so "alice@example.com new # moved" works). A '#' inside a field
 * is part of it: "a#b@example.com" is a valid address.
 */
#include "switchyard/mapfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* An entry while loading: the line number orders duplicates. */
typedef struct pending {
	char *identifier;
	char *destination;
	size_t line;
} pending;

static int cmp_pending(const void *a, const void *b)
{
	const pending *x = a, *y = b;
	int c = strcmp(x->identifier, y->identifier);
	if (c != 0)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

static int cmp_entry_ptr(const void *a, const void *b)
{
	const sy_mapentry *const *x = a, *const *y = b;
	return strcmp((*x)->identifier, (*y)->identifier);
}

/* Lowercasing is ASCII-only, byte for byte: it must agree exactly with the
 * normalization applied to identifiers at login time, and ASCII folding is
 * the one both sides can do identically without a Unicode table. */
static void normalize(char *s, bool lowercase)
{
	if (!lowercase)
		return;
	for (; *s != '\0'; s++) {
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
	}
}

/* Splits off the next whitespace-separated field; NULL at end of line. */
static char *next_field(char **p)
{
	char *s = *p, *start;

	while (*s != '\0' && isspace((unsigned char)*s))
		s++;
	if (*s == '\0') {
		*p = s;
		return NULL;
	}
	start = s;
	while (*s != '\0' && !isspace((unsigned char)*s))
		s++;
	if (*s != '\0')
		*s++ = '\0';
	*p = s;
	return start;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL) {
		fputs("switchyard: out of memory while reading the mapping file\n", stderr);
		abort();
	}
	return p;
}

/* The parser proper, over an open stream named `path` in messages; closes f. */
static int parse_stream(FILE *f, const char *path, bool lowercase, sy_mapfile_target_fn is_target,
                        void *arg, sy_mapfile *out, sy_errors *errs)
{
	char *line = NULL;
	size_t cap = 0, lineno = 0, n = 0, alloc = 0;
	pending *items = NULL;
	bool bad = false;

	while (getline(&line, &cap, f) >= 0) {
		char *p = line, *id, *dest;
		lineno++;
		if ((id = next_field(&p)) == NULL || id[0] == '#')
			continue;
		if ((dest = next_field(&p)) == NULL || dest[0] == '#') {
			sy_errors_add(errs,
			              "mapping.file.path: %s:%zu: expected \"<identifier> "
			              "<destination>\", found only \"%s\"; add the destination or "
			              "remove the line",
			              path, lineno, id);
			bad = true;
			continue;
		}
		if (is_target != NULL && !is_target(arg, dest)) {
			sy_errors_add(
			    errs,
			    "mapping.file.path: %s:%zu: destination \"%s\" is not declared; "
			    "declare [destination.%s] or fix the line",
			    path, lineno, dest, dest);
			bad = true;
			continue;
		}
		if (n == alloc) {
			alloc = alloc ? alloc * 2 : 64;
			pending *grown = realloc(items, alloc * sizeof(*items));
			if (grown == NULL) {
				fputs("switchyard: out of memory while reading the mapping file\n",
				      stderr);
				abort();
			}
			items = grown;
		}
		items[n].identifier = xstrdup(id);
		items[n].destination = xstrdup(dest);
		items[n].line = lineno;
		normalize(items[n].identifier, lowercase);
		n++;
	}
	if (ferror(f)) {
		sy_errors_add(errs, "mapping.file.path: error reading %s: %s", path,
		              strerror(errno));
		bad = true;
	}
	free(line);
	fclose(f);

	if (bad) {
		for (size_t i = 0; i < n; i++) {
			free(items[i].identifier);
			free(items[i].destination);
		}
		free(items);
		return -1;
	}

	/* Sort by identifier then line, and keep the last line of each run:
	 * a later duplicate replaces an earlier one. */
	if (n > 1)
		qsort(items, n, sizeof(*items), cmp_pending);
	out->entries = calloc(n ? n : 1, sizeof(*out->entries));
	if (out->entries == NULL) {
		fputs("switchyard: out of memory while reading the mapping file\n", stderr);
		abort();
	}
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && strcmp(items[i].identifier, items[i + 1].identifier) == 0) {
			free(items[i].identifier);
			free(items[i].destination);
			continue;
		}
		out->entries[out->len].identifier = items[i].identifier;
		out->entries[out->len].destination = items[i].destination;
		out->len++;
	}
	free(items);
	return 0;
}

int mapfile_load(const char *path, bool lowercase, sy_mapfile_target_fn is_target, void *arg,
                 sy_mapfile *out, sy_errors *errs)
{
	out->entries = NULL;
	out->len = 0;
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		sy_errors_add(errs,
		              "mapping.file.path: cannot read %s: %s; create the file (it may be "
		              "empty) or fix the path",
		              path, strerror(errno));
		return -1;
	}
	return parse_stream(f, path, lowercase, is_target, arg, out, errs);
}

int mapfile_parse(const char *data, size_t len, const char *name, bool lowercase,
                  sy_mapfile_target_fn is_target, void *arg, sy_mapfile *out, sy_errors *errs)
{
	out->entries = NULL;
	out->len = 0;
	/* fmemopen gives the same getline() path as a file; a zero-sized
	 * buffer is refused by some C libraries, and an empty text is an
	 * empty mapping. */
	static const char empty[1] = "";
	FILE *f = fmemopen(len ? (void *)data : (void *)empty, len ? len : 1, "r");
	if (f == NULL) {
		sy_errors_add(errs, "mapping.file.path: cannot read %s: %s", name, strerror(errno));
		return -1;
	}
	if (len == 0) {
		fclose(f);
		out->entries = calloc(1, sizeof(*out->entries));
		if (out->entries == NULL) {
			fputs("switchyard: out of memory while reading the mapping file\n", stderr);
			abort();
		}
		return 0;
	}
	return parse_stream(f, name, lowercase, is_target, arg, out, errs);
}

void mapfile_free(sy_mapfile *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->len; i++) {
		free(m->entries[i].identifier);
		free(m->entries[i].destination);
	}
	free(m->entries);
	m->entries = NULL;
	m->len = 0;
}

/* Index of the first entry >= identifier. */
static size_t lower_bound(const sy_mapfile *m, const char *identifier)
{
	size_t lo = 0, hi = m->len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->entries[mid].identifier, identifier) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const char *mapfile_lookup(const sy_mapfile *m, const char *identifier)
{
	size_t i;

	if (m == NULL || identifier == NULL)
		return NULL;
	i = lower_bound(m, identifier);
	if (i < m->len && strcmp(m->entries[i].identifier, identifier) == 0)
		return m->entries[i].destination;
	return NULL;
}

int mapfile_set(sy_mapfile *m, const char *identifier, const char *destination)
{
	size_t i = lower_bound(m, identifier);
	char *dest = strdup(destination);

	if (dest == NULL)
		return -1;
	if (i < m->len && strcmp(m->entries[i].identifier, identifier) == 0) {
		free(m->entries[i].destination);
		m->entries[i].destination = dest;
		return 0;
	}
	char *id = strdup(identifier);
	sy_mapentry *grown = realloc(m->entries, (m->len + 1) * sizeof(*grown));
	if (id == NULL || grown == NULL) {
		free(id);
		free(dest);
		if (grown != NULL)
			m->entries = grown;
		return -1;
	}
	m->entries = grown;
	memmove(&m->entries[i + 1], &m->entries[i], (m->len - i) * sizeof(*grown));
	m->entries[i].identifier = id;
	m->entries[i].destination = dest;
	m->len++;
	return 0;
}

bool mapfile_remove(sy_mapfile *m, const char *identifier)
{
	size_t i = lower_bound(m, identifier);

	if (i >= m->len || strcmp(m->entries[i].identifier, identifier) != 0)
		return false;
	free(m->entries[i].identifier);
	free(m->entries[i].destination);
	memmove(&m->entries[i], &m->entries[i + 1], (m->len - i - 1) * sizeof(*m->entries));
	m->len--;
	return true;
}

/* fsyncs the directory holding `path`, so the rename itself is durable. */
static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

int mapfile_write(const char *path, const sy_mapfile *m, const char **error_r)
{
	char *dir = NULL, *tmp = NULL;
	const char *base, *slash;
	const sy_mapentry **order = NULL;
	struct stat st;
	FILE *f = NULL;
	int fd = -1, saved;

	*error_r = NULL;
	slash = strrchr(path, '/');
	base = slash != NULL ? slash + 1 : path;
	if (slash == NULL)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, (size_t)(slash - path));
	/* The temporary file lives in the same directory so that rename()
	 * replaces the file atomically (no cross-filesystem copy), and it is
	 * hidden so that a directory watcher ignores it. */
	if (dir == NULL || asprintf(&tmp, "%s/.%s.tmpXXXXXX", dir, base) < 0) {
		tmp = NULL;
		*error_r = "out of memory";
		goto fail;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		*error_r = "cannot create a temporary file beside the mapping file";
		free(tmp);
		tmp = NULL;
		goto fail;
	}
	/* Keep the permissions of the file being replaced (mkstemp makes 0600). */
	if (fchmod(fd, stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644) != 0) {
		*error_r = "cannot set the temporary file's permissions";
		goto fail;
	}
	if ((f = fdopen(fd, "w")) == NULL) {
		*error_r = "cannot open the temporary file for writing";
		goto fail;
	}
	fd = -1;

	order = calloc(m->len ? m->len : 1, sizeof(*order));
	if (order == NULL) {
		*error_r = "out of memory";
		goto fail;
	}
	for (size_t i = 0; i < m->len; i++)
		order[i] = &m->entries[i];
	/* Entries are kept sorted, but a file someone diffs must be sorted
	 * whatever the caller did. */
	if (m->len > 1)
		qsort(order, m->len, sizeof(*order), cmp_entry_ptr);
	for (size_t i = 0; i < m->len; i++) {
		if (fprintf(f, "%s\t%s\n", order[i]->identifier, order[i]->destination) < 0) {
			*error_r = "cannot write the temporary file";
			goto fail;
		}
	}
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		*error_r = "cannot flush the temporary file to disk";
		goto fail;
	}
	if (fclose(f) != 0) {
		f = NULL;
		*error_r = "cannot close the temporary file";
		goto fail;
	}
	f = NULL;
	if (rename(tmp, path) != 0) {
		*error_r = "cannot rename the temporary file over the mapping file";
		goto fail;
	}
	/* The data is in place; a failed directory sync only weakens
	 * durability across a crash, so it is not reported as a failure. */
	(void)sync_dir(dir);
	free(order);
	free(tmp);
	free(dir);
	return 0;

fail:
	saved = errno;
	if (f != NULL)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (tmp != NULL)
		unlink(tmp);
	free(order);
	free(tmp);
	free(dir);
	errno = saved;
	return -1;
}
