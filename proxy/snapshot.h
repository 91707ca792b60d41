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

struct snapshot {
    struct config *cfg;
    struct router *router;
    int refs;            /* atomic: main thread + each worker holding it */
    unsigned generation; /* 1 for the first config, +1 per reload */
};

/* Takes ownership of cfg. NULL when out of memory (cfg is then freed). */
struct snapshot *snapshot_new(struct config *cfg, unsigned generation);
void snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);

#endif
