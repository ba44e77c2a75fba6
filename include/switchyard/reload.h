/*
 * Config file watch (src/server/reload.c): reloads when the file's content
 * changes, noticed through a directory watch (in-place edits and the
 * Kubernetes ConfigMap `..data` symlink swap), debounced, compared by
 * SHA-256, with a periodic check as the fallback. A watch that cannot be set
 * up is logged and left to the periodic check. The mapping file of
 * [mapping] source = "file" is watched the same way and re-read all or
 * nothing when it changes. Main thread.
 */
#ifndef SWITCHYARD_RELOAD_H
#define SWITCHYARD_RELOAD_H

#include "switchyard/runtime.h"

void reload_watch_start(sy_server *srv);
void reload_watch_stop(sy_server *srv);
/* A reload succeeded: remember the file's current content as loaded (and
 * follow a new mapping file path). */
void reload_watch_loaded(sy_server *srv);
/* Starts, moves or stops the mapping file watch to match the current
 * configuration (source = "file"); the file's current content counts as
 * loaded. Called by the two above. */
void mapping_watch_sync(sy_server *srv);

#endif
