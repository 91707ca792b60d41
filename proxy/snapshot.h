/*
 * snapshot.h - one immutable, reference-counted config generation: the
 * parsed config and its compiled router. Reload builds a new snapshot and
 * hands it to every worker; requests in flight keep the one they started
 * with until they finish.
 */
#ifndef FNPROXY_SNAPSHOT_H
#define FNPROXY_SNAPSHOT_H

#include "admit.h"
#include "cfghash.h"
#include "config.h"
#include "ratelimit.h"
#include "router.h"

struct tls_ctx;

/* A function's admission as one snapshot sees it (admit.h). af is NULL
 * when the function has no max_concurrency, rate_limit or readiness. */
struct snap_admit {
    struct admit_fn *af;
    bool gate;                       /* max_concurrency or readiness: requests take a slot */
    struct admit_ep **eps;           /* readiness per endpoint, config order; NULL: none */
    struct ratelimit_params rate;    /* rate_limit; rate.interval_ns 0: none */
    struct ratelimit_table *clients; /* per: client_id / client_ip */
};

struct snapshot {
    struct config *cfg;
    struct router *router;
    struct tls_ctx **listener_tls; /* per listener; NULL entries: plain */
    struct tls_ctx **upstream_tls; /* per function; NULL entries: plain */
    struct tls_ctx ***egress_tls;  /* per function, per allow rule: tls: originate; else NULL */
    struct snap_admit *admit;      /* per function */
    int refs;                      /* atomic: main thread + each worker holding it */
    unsigned generation;           /* 1 for the first config, +1 per reload */
    int64_t loaded_at_ms;          /* wall clock (Unix ms) when it was built, for GET /config */
    struct cfghash hash;           /* of the files it came from, set by main (cfghash.h) */
};

/* Takes ownership of cfg and loads what it names (certificates, keys). NULL
 * with a message in err on failure; cfg is then freed. */
struct snapshot *snapshot_new(struct config *cfg, unsigned generation, char *err, size_t errlen);
/* s goes into service (start, a reload that passed): its admission
 * limits apply from now on. Main thread. */
void snapshot_commit(struct snapshot *s);

void snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);

#endif
