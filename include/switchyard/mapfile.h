/*
 * The mapping file format: one `<identifier> <destination>` per line,
 * whitespace separated, `#` starts a comment, blank lines are ignored.
 * Keys are normalized on load.
 */
#ifndef SWITCHYARD_MAPFILE_H
#define SWITCHYARD_MAPFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "switchyard/config.h"

typedef struct sy_mapentry {
	char *identifier; /* normalized */
	char *destination;
} sy_mapentry;

typedef struct sy_mapfile {
	sy_mapentry *entries; /* sorted by identifier, unique */
	size_t len;
} sy_mapfile;

/*
 * Reads and checks a mapping file. Every destination must satisfy
 * config_is_target(cfg, ...). On success returns 0 and fills *out (free with
 * mapfile_free). On failure returns -1 and adds one message per bad line to
 * errs, each naming `mapping.file.path`, the file and the line number.
 * A later duplicate of an identifier replaces the earlier one.
 */
int mapfile_load(const char *path, sy_normalize norm, const sy_config *cfg, sy_mapfile *out,
                 sy_errors *errs);

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
