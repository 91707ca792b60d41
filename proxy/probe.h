/*
 * probe.h - readiness probes (functions[].readiness), on the main loop.
 *
 * Every endpoint of a function with readiness that is not ready is probed
 * every interval: an HTTP/1.1 GET on path answered 2xx (plain: with
 * upstream_tls the probe is a TCP connect only), or a TCP connect when no
 * path is set. A probe that passes marks the endpoint ready (admit.h),
 * which opens its function's gate and releases the requests held in its
 * queue. Ready endpoints are not probed: a worker that finds one refusing
 * connections marks it not ready again (admit_ep_down), and probing
 * resumes.
 */
#ifndef FNPROXY_PROBE_H
#define FNPROXY_PROBE_H

#include <stdbool.h>

#include <uv.h>

#include "snapshot.h"

struct prober;

/* Told whether every function with readiness has a ready endpoint, each
 * time that may have changed (admin's /ready follows it). */
typedef void prober_ready_fn(bool all_ready, void *arg);

struct prober *prober_start(uv_loop_t *loop, prober_ready_fn *on_ready, void *arg);

/* Probes the endpoints of s from now on (the snapshot in service). */
void prober_set(struct prober *p, struct snapshot *s);

/* Stops probing; p is freed once its handles are closed. */
void prober_stop(struct prober *p);

#endif
