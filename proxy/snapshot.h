/*
 * snapshot.h - one immutable, reference-counted config generation: the
 * parsed config and its compiled router. Reload builds a new snapshot and
 * hands it to every worker; requests in flight keep the one they started
 * with until they finish.
 */
#ifndef FNPROXY_SNAPSHOT_H
#define FNPROXY_SNAPSHOT_H

#include "config.h"
#include "router.h"

struct tls_ctx;

struct snapshot {
    struct config *cfg;
    struct router *router;
    struct tls_ctx **listener_tls; /* per listener; NULL entries: plain */
    struct tls_ctx **upstream_tls; /* per function; NULL entries: plain */
    struct tls_ctx ***egress_tls;  /* per function, per allow rule: tls: originate; else NULL */
    int refs;                      /* atomic: main thread + each worker holding it */
    unsigned generation;           /* 1 for the first config, +1 per reload */
};

/* Takes ownership of cfg and loads what it names (certificates, keys). NULL
 * with a message in err on failure; cfg is then freed. */
struct snapshot *snapshot_new(struct config *cfg, unsigned generation, char *err, size_t errlen);
void snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);

#endif
