/*
 * admin.h - the admin endpoint: a small plain-HTTP server on the main
 * thread's loop, away from the workers' hot path. GET /healthz, /ready,
 * /metrics, /stats (?history=1: history.h), /dashboard (dashboard.h), /config.
 */
#ifndef FNPROXY_ADMIN_H
#define FNPROXY_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "metrics.h"

struct admin;

/* Listens on addr; shards are the workers' metrics, read on each scrape. */
struct admin *admin_start(uv_loop_t *loop, const struct cfg_addr *addr,
                          struct metrics *const *shards, size_t n_shards, char *err, size_t errlen);

/* /ready answers 503 from now on (draining). */
void admin_set_ready(struct admin *a, bool ready);

/* /ready answers 503 while a function with readiness has no ready
 * endpoint (probe.h). */
void admin_set_functions_ready(struct admin *a, bool ready);

struct snapshot;

/* The config generation in service, for GET /config: a holds a reference
 * to s (dropping the one it held) until the next call or admin_stop. */
void admin_set_snapshot(struct admin *a, struct snapshot *s);

/* The main thread's reload counts (fnproxy_config_reloads_total), read on
 * each scrape; r outlives a. */
struct admin_reloads {
    uint64_t ok;      /* SIGHUP or file change, put in service */
    uint64_t refused; /* ... refused, the running config kept */
};
void admin_set_reloads(struct admin *a, const struct admin_reloads *r);

/* Closes the listener and any open admin connections; frees a when done. */
void admin_stop(struct admin *a);

#endif
