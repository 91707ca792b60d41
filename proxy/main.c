/*
 * main.c - the command line, config loading, the listening sockets, the
 * worker threads and the signals that drive reload and shutdown.
 *
 * The main thread owns the listening sockets' lifecycle across reloads: a
 * listener whose address stays the same keeps its sockets (so no connection
 * is refused during a reload); a new address gets new sockets, bound before
 * the reload is committed, so that a config that cannot bind is refused
 * whole and the old one keeps serving.
 *
 * A reload comes from SIGHUP, or from the config file or a file it names
 * changing on disk (watch.h): the watcher reloads only when the hash of
 * what is on disk (cfghash.h) differs from the config in service and from
 * the last one refused, so a touch or an identical rewrite does nothing and
 * a broken file is refused (and logged) once.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "accesslog.h"
#include "admin.h"
#include "cfghash.h"
#include "config.h"
#include "log.h"
#include "probe.h"
#include "snapshot.h"
#include "watch.h"
#include "worker.h"

#define FNPROXY_VERSION "0.1.0"

/* The sockets of one listen address, one per worker (SO_REUSEPORT; a unix
 * socket has one, duplicated for each worker). */
struct lsock {
    struct cfg_addr addr;
    int fds[CFG_MAX_WORKERS];
};

struct server {
    const char *config_path;
    uv_loop_t *loop;
    uv_signal_t sig_hup, sig_term, sig_int, sig_usr1;
    uv_async_t workers_exited; /* a worker's loop ended: the admin closes after the last */
    struct accesslog *alog;
    struct snapshot *snap;
    unsigned n_workers;
    struct worker *workers;
    struct metrics *shards[CFG_MAX_WORKERS];
    struct admin *admin;
    struct prober *prober; /* readiness probes */
    struct lsock *lsocks;  /* by listener index of the current snapshot */
    size_t n_lsocks;
    unsigned generation;
    struct admin_reloads reloads; /* fnproxy_config_reloads_total */
    struct watch *watch;          /* NULL: watch: off (or out of memory) */
    struct cfghash refused;       /* the last config on disk refused, if has_refused */
    bool has_refused;
    bool stopping;
};

static void usage(FILE *out)
{
    fputs("usage: fnproxy -c FILE          run with the config in FILE\n"
          "       fnproxy --check -c FILE  validate FILE and exit 0 (ok) or 1\n"
          "       fnproxy --version\n"
          "\n"
          "signals: SIGHUP reloads the config and certificates (as does a change to\n"
          "their files, unless the config says watch: off); SIGUSR1 reopens the\n"
          "access log; SIGTERM or SIGINT stop accepting, finish requests in flight\n"
          "(up to drain_timeout) and exit 0.\n"
          "FNPROXY_LOG=debug logs more.\n",
          out);
}

static const char *unix_path(const struct cfg_addr *a)
{
    return ((const struct sockaddr_un *)&a->sa)->sun_path;
}

static int listen_socket(const struct cfg_addr *a, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        goto out_err;
    if (a->kind == CFG_ADDR_UNIX) {
        if (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) < 0 || listen(fd, SOMAXCONN) < 0)
            goto out_close;
        return fd;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto out_close;
    /* Accepted sockets inherit TCP_NODELAY: one setsockopt per listener
     * instead of one per connection. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        goto out_close;
    if (a->sa.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto out_close;
    if (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) < 0)
        goto out_close;
    if (listen(fd, SOMAXCONN) < 0)
        goto out_close;
    return fd;

out_close:
    close(fd);
out_err:
    snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
    return -1;
}

/* A unix socket's file outlives a process that died: a file nobody accepts
 * on is removed before the bind, one that a process accepts on is refused,
 * and anything that is not a socket is left alone. Closes fd. */
static int unix_probe(int fd, const struct cfg_addr *a, char *err, size_t errlen)
{
    struct stat st;
    int rc = 0;

    if (lstat(unix_path(a), &st) < 0) {
        close(fd);
        return 0; /* nothing there (or a bind error will say why) */
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "cannot listen on %s: the file exists and is not a socket", a->text);
        rc = -1;
    } else if (connect(fd, (const struct sockaddr *)&a->sa, a->sa_len) == 0) {
        snprintf(err, errlen, "cannot listen on %s: another process accepts on it", a->text);
        rc = -1;
    } else if (errno == ECONNREFUSED && unlink(unix_path(a)) < 0) {
        snprintf(err, errlen, "cannot listen on %s: cannot remove the stale socket: %s", a->text,
                 strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

/* SO_REUSEPORT lets any process of the same user bind a port already in
 * use, silently sharing its connections: a second fnproxy started by
 * mistake would take half the traffic. A plain bind first finds out. */
static int listen_probe(const struct cfg_addr *a, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;

    if (fd >= 0 && a->kind == CFG_ADDR_UNIX)
        return unix_probe(fd, a, err, errlen);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
        return -1;
    }
    if (a->sa.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s%s", a->text, strerror(errno),
                 errno == EADDRINUSE ? " (by another process?)" : "");
        rc = -1;
    }
    close(fd);
    return rc;
}

static void lsock_close(struct lsock *l, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (l->fds[i] >= 0)
            close(l->fds[i]);
}

/* Sockets for every listener of cfg: the current ones where the address is
 * unchanged, new ones otherwise. On failure nothing changes. */
static int lsocks_for(struct server *sv, const struct config *cfg, struct lsock **out, char *err,
                      size_t errlen)
{
    struct lsock *ls = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*ls));

    if (ls == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_addr *a = &cfg->listeners[i].listen;
        struct lsock *old = NULL;

        ls[i].addr = *a;
        for (size_t j = 0; j < sv->n_lsocks; j++)
            if (sv->lsocks[j].addr.sa_len == a->sa_len &&
                memcmp(&sv->lsocks[j].addr.sa, &a->sa, a->sa_len) == 0)
                old = &sv->lsocks[j];
        if (old != NULL) {
            memcpy(ls[i].fds, old->fds, sizeof(ls[i].fds));
            continue;
        }
        for (unsigned w = 0; w < CFG_MAX_WORKERS; w++)
            ls[i].fds[w] = -1;
        if (listen_probe(a, err, errlen) < 0)
            goto out_undo;
        for (unsigned w = 0; w < sv->n_workers; w++) {
            if (w > 0 && a->kind == CFG_ADDR_UNIX)
                ls[i].fds[w] = fcntl(ls[i].fds[0], F_DUPFD_CLOEXEC, 0);
            else
                ls[i].fds[w] = listen_socket(a, err, errlen);
            if (ls[i].fds[w] < 0) {
                if (w > 0 && a->kind == CFG_ADDR_UNIX)
                    snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
                goto out_undo;
            }
        }
    }
    *out = ls;
    return 0;

out_undo:
    /* Close only the sockets made here, not those carried over. */
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        bool carried = false;
        for (size_t j = 0; j < sv->n_lsocks; j++)
            carried |= sv->lsocks[j].fds[0] == ls[i].fds[0] && ls[i].fds[0] >= 0;
        if (carried)
            continue;
        if (ls[i].fds[0] >= 0 && ls[i].addr.kind == CFG_ADDR_UNIX)
            (void)unlink(unix_path(&ls[i].addr)); /* made here: not in use by anyone */
        lsock_close(&ls[i], sv->n_workers);
    }
    free(ls);
    return -1;
}

/* Removes the unix socket files of old listeners that keep is without
 * (all of them when keep is empty). */
static void unlink_gone(const struct lsock *old, size_t n_old, const struct lsock *keep,
                        size_t n_keep)
{
    for (size_t i = 0; i < n_old; i++) {
        bool kept = false;
        if (old[i].addr.kind != CFG_ADDR_UNIX)
            continue;
        for (size_t j = 0; j < n_keep; j++)
            kept |= keep[j].fds[0] == old[i].fds[0];
        if (!kept && unlink(unix_path(&old[i].addr)) < 0 && errno != ENOENT)
            log_warn("cannot remove %s: %s", old[i].addr.text, strerror(errno));
    }
}

static void worker_fds(const struct lsock *ls, size_t n, unsigned w, int *fds)
{
    for (size_t i = 0; i < n; i++)
        fds[i] = ls[i].fds[w];
}

/* The config file read once, parsed and hashed with the files it names:
 * what a reload puts in service and what the watcher compares. On failure
 * *cfg is NULL and err says why; *h is the identity of what is on disk
 * either way (cfghash.h). */
static int config_prepare(const char *path, struct config **cfg, struct cfghash *h, char *err,
                          size_t errlen)
{
    char *buf;
    size_t len;
    int rc, e;

    *cfg = NULL;
    rc = config_read(path, &buf, &len, err, errlen);
    if (rc < 0) {
        e = -rc;
        (void)cfghash_compute((const char *)&e, sizeof(e), NULL, h, NULL, 0);
        return rc;
    }
    rc = config_parse(path, buf, len, cfg, err, errlen);
    /* A named file that cannot be read is left to snapshot_new to refuse,
     * with its own words; its error is in the hash meanwhile. */
    (void)cfghash_compute(buf, len, *cfg, h, NULL, 0);
    free(buf);
    return rc;
}

static void on_watch(const char *dir, void *arg);

/* Watches the files of the config in service and of next, a config being
 * tried (NULL: none), so that when next is refused for want of a file (a
 * certificate not there yet) the file is noticed when it comes. */
static void watch_sync(struct server *sv, const struct config *next)
{
    const struct config *cfg = sv->snap->cfg;
    const char **a = NULL, **b = NULL, **all;
    size_t na = 0, nb = 0;
    char err[CFG_ERR_MAX];

    if (cfg->watch_off || sv->stopping) {
        watch_close(sv->watch);
        sv->watch = NULL;
        return;
    }
    if (sv->watch == NULL) {
        sv->watch = watch_new(sv->loop, WATCH_DEBOUNCE_MS, on_watch, sv);
        if (sv->watch == NULL) {
            log_error("cannot watch the config files: out of memory");
            return;
        }
    }
    if (cfghash_files(cfg, &a, &na) < 0 || (next && cfghash_files(next, &b, &nb) < 0) ||
        (all = malloc((1 + na + nb) * sizeof(*all))) == NULL) {
        log_error("cannot watch the config files: out of memory");
        goto out_free;
    }
    all[0] = sv->config_path;
    for (size_t i = 0; i < na + nb; i++) /* a or b may be NULL (none): no memcpy */
        all[1 + i] = i < na ? a[i] : b[i - na];
    if (watch_set(sv->watch, all, 1 + na + nb, err, sizeof(err)) < 0)
        log_warn("%s; its files change only on SIGHUP", err);
    free(all);
out_free:
    free(a);
    free(b);
}

static void reload_refuse(struct server *sv, const struct cfghash *h, const char *err)
{
    log_error("reload refused, keeping the running config: %s", err);
    sv->reloads.refused++;
    sv->refused = *h;
    sv->has_refused = true;
}

/* SIGHUP (dir NULL) always reloads; the watcher (dir: where the change
 * was seen) only when what is on disk is new. */
static void reload(struct server *sv, const char *dir)
{
    char err[CFG_ERR_MAX];
    struct config *cfg;
    struct snapshot *s;
    struct lsock *ls;
    struct cfghash h;
    int fds[CFG_MAX_LISTENERS];
    int rc = config_prepare(sv->config_path, &cfg, &h, err, sizeof(err));

    if (dir != NULL && cfghash_eq(&h, &sv->snap->hash)) {
        sv->has_refused = false; /* back to what serves: a refused file is new again */
        goto out_unchanged;
    }
    if (dir != NULL && sv->has_refused && cfghash_eq(&h, &sv->refused))
        goto out_unchanged;
    if (dir != NULL)
        log_info("config change detected in %s; reloading", dir);
    else
        log_info("SIGHUP: reloading %s", sv->config_path);
    if (rc < 0) {
        reload_refuse(sv, &h, err);
        watch_sync(sv, NULL);
        return;
    }
    /* Its files are watched before they are read (a change while they are
     * read is seen), and stay watched if it is refused for one of them. */
    watch_sync(sv, cfg);
    /* Certificates first, then sockets: either failing leaves all as it was. */
    s = snapshot_new(cfg, sv->generation + 1, err, sizeof(err));
    if (s == NULL) {
        reload_refuse(sv, &h, err);
        return;
    }
    s->hash = h;
    if (lsocks_for(sv, cfg, &ls, err, sizeof(err)) < 0) {
        reload_refuse(sv, &h, err);
        snapshot_unref(s);
        return;
    }
    sv->generation++;
    snapshot_commit(s);
    prober_set(sv->prober, s);
    if ((cfg->workers != 0 && cfg->workers != sv->n_workers) ||
        cfg->has_admin != sv->snap->cfg->has_admin ||
        (cfg->has_admin && strcmp(cfg->admin_listen.text, sv->snap->cfg->admin_listen.text) != 0))
        log_warn("workers and admin.listen change only on restart; keeping the running ones");
    if ((cfg->access_log == NULL) != (sv->snap->cfg->access_log == NULL) ||
        (cfg->access_log != NULL && strcmp(cfg->access_log, sv->snap->cfg->access_log) != 0))
        log_warn("access_log changes only on restart; keeping the running one");
    for (unsigned w = 0; w < sv->n_workers; w++) {
        worker_fds(ls, cfg->n_listeners, w, fds);
        worker_reload(&sv->workers[w], s, fds);
    }
    /* Workers close the sockets of listeners that are gone; their unix
     * socket files go now. */
    unlink_gone(sv->lsocks, sv->n_lsocks, ls, cfg->n_listeners);
    free(sv->lsocks);
    sv->lsocks = ls;
    sv->n_lsocks = cfg->n_listeners;
    snapshot_unref(sv->snap);
    sv->snap = s;
    admin_set_snapshot(sv->admin, s);
    sv->reloads.ok++;
    sv->has_refused = false;
    log_info("config generation %u in service", s->generation);
    watch_sync(sv, NULL);
    return;

out_unchanged:
    config_free(cfg);
    watch_sync(sv, NULL); /* a symlink may point elsewhere now */
}

static void on_watch(const char *dir, void *arg)
{
    reload(arg, dir);
}

static void on_signal_closed(uv_handle_t *h)
{
    (void)h;
}

static void shutdown_begin(struct server *sv, int signum)
{
    uint64_t drain_ms = sv->snap->cfg->drain_timeout_ms;

    if (sv->stopping)
        return;
    sv->stopping = true;
    watch_close(sv->watch);
    sv->watch = NULL;
    log_info("%s: no longer accepting; draining requests in flight (up to %llu ms)",
             signum == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)drain_ms);
    /* The admin keeps serving through the drain, /ready saying 503, and
     * closes when the last worker has exited (on_workers_exited). */
    admin_set_ready(sv->admin, false);
    for (unsigned w = 0; w < sv->n_workers; w++)
        worker_stop(&sv->workers[w], drain_ms);
    uv_close((uv_handle_t *)&sv->sig_hup, on_signal_closed);
    uv_close((uv_handle_t *)&sv->sig_term, on_signal_closed);
    uv_close((uv_handle_t *)&sv->sig_int, on_signal_closed);
    uv_close((uv_handle_t *)&sv->sig_usr1, on_signal_closed);
}

static void on_workers_exited(uv_async_t *a)
{
    struct server *sv = a->data;

    for (unsigned w = 0; w < sv->n_workers; w++)
        if (!worker_exited(&sv->workers[w]))
            return;
    /* The main loop ends once its handles are closed; main() then joins
     * the workers. */
    admin_stop(sv->admin);
    sv->admin = NULL;
    prober_stop(sv->prober);
    sv->prober = NULL;
    uv_close((uv_handle_t *)a, on_signal_closed);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *sv = h->data;

    if (signum == SIGHUP) {
        reload(sv, NULL);
    } else if (signum == SIGUSR1) {
        int rc = accesslog_reopen(sv->alog);
        if (rc < 0)
            log_error("SIGUSR1: cannot reopen the access log: %s", strerror(-rc));
        else
            log_info("SIGUSR1: access log reopened");
    } else {
        shutdown_begin(sv, signum);
    }
}

static void on_functions_ready(bool all_ready, void *arg)
{
    struct server *sv = arg;

    admin_set_functions_ready(sv->admin, all_ready);
}

static unsigned worker_count(const struct config *cfg)
{
    unsigned n = cfg->workers;

    if (n == 0) {
        n = uv_available_parallelism();
        if (n == 0)
            n = 1;
    }
    return n > CFG_MAX_WORKERS ? CFG_MAX_WORKERS : n;
}

static int run(struct server *sv)
{
    char err[CFG_ERR_MAX];
    int fds[CFG_MAX_LISTENERS];
    const struct config *cfg = sv->snap->cfg;
    unsigned started = 0;
    int rc = 1;

    sv->n_workers = worker_count(cfg);
    if (lsocks_for(sv, cfg, &sv->lsocks, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    sv->n_lsocks = cfg->n_listeners;
    sv->workers = calloc(sv->n_workers, sizeof(*sv->workers));
    if (sv->workers == NULL) {
        log_error("out of memory");
        goto out_sockets;
    }
    for (unsigned w = 0; w < sv->n_workers; w++) {
        sv->shards[w] = &sv->workers[w].metrics;
        sv->workers[w].exit_notify = &sv->workers_exited;
    }
    if (cfg->has_admin) {
        sv->admin =
            admin_start(sv->loop, &cfg->admin_listen, sv->shards, sv->n_workers, err, sizeof(err));
        if (sv->admin == NULL) {
            log_error("%s", err);
            goto out_sockets;
        }
    }
    if (uv_async_init(sv->loop, &sv->workers_exited, on_workers_exited) < 0) {
        log_error("cannot make the main loop's async handle");
        admin_stop(sv->admin);
        sv->admin = NULL;
        goto out_sockets;
    }
    sv->workers_exited.data = sv;
    sv->prober = prober_start(sv->loop, on_functions_ready, sv);
    if (sv->prober == NULL) {
        log_error("out of memory");
        admin_stop(sv->admin);
        sv->admin = NULL;
        uv_close((uv_handle_t *)&sv->workers_exited, on_signal_closed);
        goto out_sockets;
    }
    snapshot_commit(sv->snap);
    prober_set(sv->prober, sv->snap);
    admin_set_snapshot(sv->admin, sv->snap);
    admin_set_reloads(sv->admin, &sv->reloads);
    for (; started < sv->n_workers; started++) {
        worker_fds(sv->lsocks, cfg->n_listeners, started, fds);
        int wrc = worker_start(&sv->workers[started], started, sv->snap, fds, sv->alog);
        if (wrc < 0) {
            log_error("cannot start worker %u: %s", started, uv_strerror(wrc));
            /* Its sockets were closed by worker_start; the rest are closed
             * by the workers that did start, on stop. */
            for (unsigned w = started + 1; w < sv->n_workers; w++)
                for (size_t i = 0; i < cfg->n_listeners; i++)
                    close(sv->lsocks[i].fds[w]);
            break;
        }
    }
    if (started == sv->n_workers) {
        for (size_t i = 0; i < cfg->n_listeners; i++)
            log_info("listener %s on %s", cfg->listeners[i].name, cfg->listeners[i].listen.text);
        log_info("fnproxy %s serving with %u workers", FNPROXY_VERSION, sv->n_workers);
        uv_signal_init(sv->loop, &sv->sig_hup);
        uv_signal_init(sv->loop, &sv->sig_term);
        uv_signal_init(sv->loop, &sv->sig_int);
        uv_signal_init(sv->loop, &sv->sig_usr1);
        sv->sig_hup.data = sv->sig_term.data = sv->sig_int.data = sv->sig_usr1.data = sv;
        uv_signal_start(&sv->sig_usr1, on_signal, SIGUSR1);
        uv_signal_start(&sv->sig_hup, on_signal, SIGHUP);
        uv_signal_start(&sv->sig_term, on_signal, SIGTERM);
        uv_signal_start(&sv->sig_int, on_signal, SIGINT);
        watch_sync(sv, NULL);
        rc = 0;
    } else {
        for (unsigned w = 0; w < started; w++)
            worker_stop(&sv->workers[w], 0);
        admin_stop(sv->admin);
        sv->admin = NULL;
        prober_stop(sv->prober);
        sv->prober = NULL;
        uv_close((uv_handle_t *)&sv->workers_exited, on_signal_closed);
    }
    uv_run(sv->loop, UV_RUN_DEFAULT);
    for (unsigned w = 0; w < started; w++)
        worker_join(&sv->workers[w]);
    unlink_gone(sv->lsocks, sv->n_lsocks, NULL, 0);
    if (rc == 0)
        log_info("stopped");
    free(sv->workers);
    free(sv->lsocks);
    return rc;

out_sockets:
    for (size_t i = 0; i < cfg->n_listeners; i++)
        lsock_close(&sv->lsocks[i], sv->n_workers);
    unlink_gone(sv->lsocks, sv->n_lsocks, NULL, 0);
    free(sv->lsocks);
    free(sv->workers);
    uv_run(sv->loop, UV_RUN_DEFAULT); /* let closed handles finish */
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct server sv = {0};
    char err[CFG_ERR_MAX];
    struct config *cfg;
    struct cfghash hash;
    bool check = false;
    int opt, rc;
    const char *lvl = getenv("FNPROXY_LOG");

    if (lvl != NULL && strcmp(lvl, "debug") == 0)
        log_threshold = LOG_DEBUG;
    while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            sv.config_path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'V':
            printf("fnproxy %s\n", FNPROXY_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (sv.config_path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (config_prepare(sv.config_path, &cfg, &hash, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check) {
        /* Certificates and keys are part of a valid config too. */
        struct snapshot *s = snapshot_new(cfg, 0, err, sizeof(err));
        if (s == NULL) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        snapshot_unref(s);
        printf("%s: ok\n", sv.config_path);
        return 0;
    }
    /* Every connection costs a descriptor or two: take all the process may
     * have, as nginx's worker_rlimit_nofile and HAProxy do. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("cannot raise the open files limit: %s", strerror(errno));
    }
    /* A client that goes away must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    sv.snap = snapshot_new(cfg, ++sv.generation, err, sizeof(err));
    if (sv.snap == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    sv.snap->hash = hash;
    sv.alog = accesslog_open(cfg->access_log, err, sizeof(err));
    if (sv.alog == NULL) {
        log_error("%s", err);
        snapshot_unref(sv.snap);
        return 1;
    }
    sv.loop = uv_default_loop();
    rc = run(&sv);
    accesslog_close(sv.alog);
    snapshot_unref(sv.snap);
    uv_loop_close(sv.loop);
    return rc;
}
