/*
 * watch.h - notices that the config file or a file it names may have
 * changed, on the main loop, without a signal.
 *
 * It watches the directories that hold the files (the directory of each
 * path as given, not of what a symlink resolves to), because the ways
 * files are replaced in practice do not modify the file itself: an editor
 * writes a temporary file and renames it over the old one, and Kubernetes
 * updates a mounted ConfigMap or Secret by pointing the `..data` symlink
 * of the mount at a new directory (one rename), the file being a symlink
 * `NAME -> ..data/NAME`. So in each directory it reacts to events on a
 * watched file's name and on the first component of a relative symlink's
 * target (`..data`); others (an access log in the same directory) are
 * ignored. An event (re)starts a debounce timer; when it fires the
 * callback runs once, and decides whether anything really changed
 * (cfghash.h).
 */
#ifndef FNPROXY_WATCH_H
#define FNPROXY_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define WATCH_DEBOUNCE_MS 250 /* quiet time after the last event before the callback */

struct watch;

/* dir: the directory of the last event seen. */
typedef void watch_fn(const char *dir, void *arg);

/* NULL when out of memory. Watches nothing until watch_set. */
struct watch *watch_new(uv_loop_t *loop, uint64_t debounce_ms, watch_fn *fn, void *arg);

/* Watches the directories of the n paths (replacing the set watched
 * before; a directory kept keeps its watch). 0, or the first error (the
 * others are still watched; the caller logs it with the directory put in
 * err). */
int watch_set(struct watch *w, const char *const *paths, size_t n, char *err, size_t errlen);

/* Stops watching; w is freed once its handles are closed. w may be NULL. */
void watch_close(struct watch *w);

/* The entries of path's directory whose events count for path (the rule
 * above): its own name, then the first component of a relative symlink's
 * target. Returns how many (1 or 2). Exported for tests. */
int watch_names(const char *path, char names[2][256]);

#endif
