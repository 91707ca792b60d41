/*
 * snapshot.c - config generations shared between threads. The reference
 * count is the only thing threads write; the config itself is read-only.
 */
#include "snapshot.h"

#include <stdlib.h>

struct snapshot *snapshot_new(struct config *cfg, unsigned generation)
{
    struct snapshot *s = calloc(1, sizeof(*s));

    if (s == NULL)
        goto out_free_cfg;
    s->router = router_new(cfg);
    if (s->router == NULL)
        goto out_free_snap;
    s->cfg = cfg;
    s->refs = 1;
    s->generation = generation;
    return s;

out_free_snap:
    free(s);
out_free_cfg:
    config_free(cfg);
    return NULL;
}

void snapshot_ref(struct snapshot *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void snapshot_unref(struct snapshot *s)
{
    if (s == NULL || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    router_free(s->router);
    config_free(s->cfg);
    free(s);
}
