/*
 * watch.c - uv_fs_event_t watchers on directories, and one debounce timer
 * (the rules are in watch.h). Main loop only.
 */
#include "watch.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct watch_dir {
    struct watch_dir *next;
    struct watch *w;
    uv_fs_event_t ev;
    char *dir;
    char **names; /* entries of dir whose events count */
    size_t n_names, cap_names;
};

struct watch {
    uv_timer_t timer; /* the debounce */
    uint64_t debounce_ms;
    watch_fn *fn;
    void *arg;
    struct watch_dir *dirs;
    unsigned n_open; /* handles not yet closed: the timer and each directory's */
    bool closing;
    char last_dir[PATH_MAX]; /* where the last event that counted happened */
};

static void watch_release(struct watch *w)
{
    if (--w->n_open == 0)
        free(w);
}

static void on_timer_closed(uv_handle_t *h)
{
    watch_release(h->data);
}

static void dir_free(struct watch_dir *d)
{
    for (size_t i = 0; i < d->n_names; i++)
        free(d->names[i]);
    free(d->names);
    d->names = NULL;
    d->n_names = d->cap_names = 0;
}

static void on_dir_closed(uv_handle_t *h)
{
    struct watch_dir *d = h->data;
    struct watch *w = d->w;

    dir_free(d);
    free(d->dir);
    free(d);
    watch_release(w);
}

static void dir_close(struct watch_dir *d)
{
    uv_close((uv_handle_t *)&d->ev, on_dir_closed);
}

static void on_timer(uv_timer_t *t)
{
    struct watch *w = t->data;

    w->fn(w->last_dir, w->arg);
}

static void on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct watch_dir *d = h->data;
    struct watch *w = d->w;
    bool cares = filename == NULL; /* no name (the kernel's queue overflowed): maybe ours */

    (void)events;
    if (status < 0) {
        log_warn("watching %s: %s", d->dir, uv_strerror(status));
        return;
    }
    for (size_t i = 0; i < d->n_names && !cares; i++)
        cares = strcmp(d->names[i], filename) == 0;
    if (!cares)
        return;
    snprintf(w->last_dir, sizeof(w->last_dir), "%s", d->dir);
    (void)uv_timer_start(&w->timer, on_timer, w->debounce_ms, 0); /* restarts it */
}

struct watch *watch_new(uv_loop_t *loop, uint64_t debounce_ms, watch_fn *fn, void *arg)
{
    struct watch *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    if (uv_timer_init(loop, &w->timer) < 0) {
        free(w);
        return NULL;
    }
    w->timer.data = w;
    w->n_open = 1;
    w->debounce_ms = debounce_ms;
    w->fn = fn;
    w->arg = arg;
    return w;
}

/* The directory part of path as given ("." for a bare name). */
static void split_dir(const char *path, char *dir, size_t len)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        snprintf(dir, len, ".");
    else if (slash == path)
        snprintf(dir, len, "/");
    else
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

int watch_names(const char *path, char names[2][256])
{
    const char *slash = strrchr(path, '/');
    char target[PATH_MAX];
    ssize_t n;
    int k = 0;

    snprintf(names[k++], 256, "%s", slash ? slash + 1 : path);
    /* NAME -> ..data/NAME: the swap renames ..data, not NAME. */
    n = readlink(path, target, sizeof(target) - 1);
    if (n > 0 && target[0] != '/') {
        target[n] = '\0';
        snprintf(names[k++], 256, "%.*s", (int)strcspn(target, "/"), target);
    }
    return k;
}

static int dir_add_name(struct watch_dir *d, const char *name)
{
    char **bigger;

    for (size_t i = 0; i < d->n_names; i++)
        if (strcmp(d->names[i], name) == 0)
            return 0;
    if (d->n_names == d->cap_names) {
        size_t cap = d->cap_names ? d->cap_names * 2 : 4;
        bigger = realloc(d->names, cap * sizeof(*bigger));
        if (bigger == NULL)
            return -ENOMEM;
        d->names = bigger;
        d->cap_names = cap;
    }
    d->names[d->n_names] = strdup(name);
    if (d->names[d->n_names] == NULL)
        return -ENOMEM;
    d->n_names++;
    return 0;
}

static struct watch_dir *dir_take(struct watch_dir **list, const char *dir)
{
    for (struct watch_dir **p = list; *p != NULL; p = &(*p)->next)
        if (strcmp((*p)->dir, dir) == 0) {
            struct watch_dir *d = *p;
            *p = d->next;
            d->next = NULL;
            return d;
        }
    return NULL;
}

static struct watch_dir *dir_start(struct watch *w, const char *dir, int *rc)
{
    struct watch_dir *d = calloc(1, sizeof(*d));

    *rc = -ENOMEM;
    if (d == NULL)
        return NULL;
    d->dir = strdup(dir);
    if (d->dir == NULL || (*rc = uv_fs_event_init(w->timer.loop, &d->ev)) < 0) {
        free(d->dir);
        free(d);
        return NULL;
    }
    d->w = w;
    d->ev.data = d;
    w->n_open++;
    *rc = uv_fs_event_start(&d->ev, on_event, dir, 0);
    if (*rc < 0) {
        dir_close(d);
        return NULL;
    }
    return d;
}

int watch_set(struct watch *w, const char *const *paths, size_t n, char *err, size_t errlen)
{
    struct watch_dir *old = w->dirs, *now = NULL, *d;
    char dir[PATH_MAX], names[2][256];
    int rc = 0, drc;

    for (size_t i = 0; i < n; i++) {
        split_dir(paths[i], dir, sizeof(dir));
        d = dir_take(&now, dir);
        if (d == NULL) {
            d = dir_take(&old, dir);
            if (d != NULL)
                dir_free(d); /* its names are recomputed below */
            else
                d = dir_start(w, dir, &drc);
        }
        if (d == NULL) {
            if (rc == 0)
                snprintf(err, errlen, "cannot watch %s: %s", dir, uv_strerror(drc));
            rc = rc ? rc : drc;
            continue;
        }
        d->next = now;
        now = d;
        for (int k = watch_names(paths[i], names) - 1; k >= 0; k--)
            if ((drc = dir_add_name(d, names[k])) < 0 && rc == 0) {
                snprintf(err, errlen, "cannot watch %s: out of memory", dir);
                rc = drc;
            }
    }
    while (old != NULL) {
        d = old;
        old = d->next;
        dir_close(d);
    }
    w->dirs = now;
    return rc;
}

void watch_close(struct watch *w)
{
    struct watch_dir *d;

    if (w == NULL || w->closing)
        return;
    w->closing = true;
    while ((d = w->dirs) != NULL) {
        w->dirs = d->next;
        dir_close(d);
    }
    uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}
