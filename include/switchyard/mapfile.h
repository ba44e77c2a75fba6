/*
 * The mapping file format: one `<identifier> <destination>` per line,
 * whitespace separated, `#` starts a comment, blank lines are ignored.
 * Keys are normalized on load.
 *
 * A pure parser and writer (no knowledge of the configuration): what a
 * destination must be is the caller's question, asked through a callback,
 * so configuration validation and the file store read the file the same way.
 */
#ifndef SWITCHYARD_MAPFILE_H
#define SWITCHYARD_MAPFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "switchyard/errors.h"

typedef struct sy_mapentry {
	char *identifier; /* normalized */
	char *destination;
} sy_mapentry;

typedef struct sy_mapfile {
	sy_mapentry *entries; /* sorted by identifier, unique */
	size_t len;
} sy_mapfile;

/* Whether `destination` may appear in the file (a declared destination or
 * cluster, for the configuration that reads it). */
typedef bool (*sy_mapfile_target_fn)(void *arg, const char *destination);

/*
 * Reads and checks a mapping file. Identifiers are lowercased (ASCII) when
 * `lowercase` is set. Every destination must satisfy is_target(arg, ...)
 * (is_target NULL: any). On success returns 0 and fills *out (free with
 * mapfile_free). On failure returns -1 and adds one message per bad line to
 * errs, each naming `mapping.file.path`, the file and the line number.
 * A later duplicate of an identifier replaces the earlier one.
 */
int mapfile_load(const char *path, bool lowercase, sy_mapfile_target_fn is_target, void *arg,
                 sy_mapfile *out, sy_errors *errs);

/*
 * mapfile_load over text in memory (`len` bytes, NUL bytes allowed: they
 * end a field as in a file) named `name` in messages; same contract. The
 * fuzz target tests/fuzz/fuzz_mapfile.c drives the parser through it.
 */
int mapfile_parse(const char *data, size_t len, const char *name, bool lowercase,
                  sy_mapfile_target_fn is_target, void *arg, sy_mapfile *out, sy_errors *errs);

void mapfile_free(sy_mapfile *m);

/* Binary search; NULL if absent. `identifier` must already be normalized. */
const char *mapfile_lookup(const sy_mapfile *m, const char *identifier);

/* Inserts or replaces one entry, keeping the array sorted. `identifier` must
 * already be normalized. Returns 0, or -1 on allocation failure (m unchanged).
 * (Added by the config module for the management API's PUT /mappings.) */
int mapfile_set(sy_mapfile *m, const char *identifier, const char *destination);

/* Removes an entry; returns true if it was present. */
bool mapfile_remove(sy_mapfile *m, const char *identifier);

/* Writes the entries sorted, to a temporary file beside `path`, fsyncs and
 * renames it over `path`. Returns 0 or -1 with *error_r set. */
int mapfile_write(const char *path, const sy_mapfile *m, const char **error_r);

#endif
