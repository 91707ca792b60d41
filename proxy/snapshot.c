/*
 * snapshot.c - config generations shared between threads. The reference
 * count is the only thing threads write; the config itself is read-only.
 * TLS contexts are built here, on the main thread, so that a certificate
 * that cannot be loaded refuses the whole config (and a reload keeps the
 * running one).
 */
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tls.h"

static int load_listener_tls(struct snapshot *s, char *err, size_t errlen)
{
    const struct config *cfg = s->cfg;

    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener_tls *t = cfg->listeners[i].tls;
        struct tls_cert_file certs[16];
        char why[256];

        if (t == NULL)
            continue;
        if (t->n_certificates > sizeof(certs) / sizeof(certs[0])) {
            snprintf(err, errlen, "listeners[%zu].tls: at most 16 certificates", i);
            return -1;
        }
        for (size_t c = 0; c < t->n_certificates; c++)
            certs[c] = (struct tls_cert_file){t->certificates[c].cert, t->certificates[c].key};
        struct tls_server_opts o = {
            .certificates = certs,
            .n_certificates = t->n_certificates,
            .client_ca = t->client_ca,
            .min_version = t->min_version,
            .sni_strict = t->sni_strict,
            .handshake_timeout_ms = (uint32_t)t->handshake_timeout_ms,
        };
        s->listener_tls[i] = tls_server_ctx_new(&o, why, sizeof(why));
        if (s->listener_tls[i] == NULL) {
            snprintf(err, errlen, "%s: listeners[%zu].tls (%s): %s", cfg->path, i,
                     cfg->listeners[i].name, why);
            return -1;
        }
    }
    return 0;
}

static int load_upstream_tls(struct snapshot *s, char *err, size_t errlen)
{
    const struct config *cfg = s->cfg;

    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct cfg_upstream_tls *t = cfg->functions[i].upstream_tls;
        char why[256];

        if (t == NULL)
            continue;
        struct tls_client_opts o = {.ca_file = t->ca};
        s->upstream_tls[i] = tls_client_ctx_new(&o, why, sizeof(why));
        if (s->upstream_tls[i] == NULL) {
            snprintf(err, errlen, "%s: functions[%zu].upstream_tls (%s): %s", cfg->path, i,
                     cfg->functions[i].name, why);
            return -1;
        }
    }
    return 0;
}

/* One client context per rule with tls: originate: verified against the
 * rule's ca or the system store; the name is the endpoint's. */
static int load_egress_tls(struct snapshot *s, char *err, size_t errlen)
{
    const struct config *cfg = s->cfg;

    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct cfg_egress *eg = cfg->functions[i].egress;
        char why[256];

        if (eg == NULL)
            continue;
        s->egress_tls[i] = calloc(eg->n_allow + 1, sizeof(*s->egress_tls[i]));
        if (s->egress_tls[i] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (size_t r = 0; r < eg->n_allow; r++) {
            if (!eg->allow[r].tls_originate)
                continue;
            struct tls_client_opts o = {.ca_file = eg->allow[r].ca};
            s->egress_tls[i][r] = tls_client_ctx_new(&o, why, sizeof(why));
            if (s->egress_tls[i][r] == NULL) {
                snprintf(err, errlen, "%s: functions[%zu].egress.allow[%zu] (%s): %s", cfg->path, i,
                         r, eg->allow[r].name, why);
                return -1;
            }
        }
    }
    return 0;
}

/* Admission state by function name, shared with the snapshots before and
 * after (admit.h). */
static int load_admission(struct snapshot *s, char *err, size_t errlen)
{
    const struct config *cfg = s->cfg;

    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct cfg_function *fn = &cfg->functions[i];
        const struct cfg_admission *a = &fn->admission;
        struct snap_admit *sa = &s->admit[i];

        sa->gate = a->max_concurrency != 0 || fn->readiness != NULL;
        if (!sa->gate && a->rate_milli == 0)
            continue;
        if ((sa->af = admit_fn_get(fn->name)) == NULL)
            goto oom;
        if (a->rate_milli != 0)
            ratelimit_params_init(&sa->rate, a->rate_milli, a->burst);
        if (a->rate_milli != 0 && a->per != CFG_RATE_FUNCTION &&
            (sa->clients = admit_fn_clients(sa->af)) == NULL)
            goto oom;
        if (fn->readiness == NULL)
            continue;
        if ((sa->eps = calloc(fn->n_endpoints, sizeof(*sa->eps))) == NULL)
            goto oom;
        for (size_t e = 0; e < fn->n_endpoints; e++)
            if ((sa->eps[e] = admit_ep_get(sa->af, fn->endpoints[e].text)) == NULL)
                goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

void snapshot_commit(struct snapshot *s)
{
    const struct config *cfg = s->cfg;

    for (size_t i = 0; i < cfg->n_functions; i++) {
        const struct snap_admit *sa = &s->admit[i];
        const struct cfg_function *fn = &cfg->functions[i];

        if (sa->af == NULL)
            continue;
        admit_configure(sa->af, fn->admission.max_concurrency,
                        sa->gate ? fn->admission.queue_depth : 0, fn->readiness != NULL);
        if (sa->eps != NULL)
            admit_set_ready(sa->af, sa->eps, fn->n_endpoints);
    }
}

static void snapshot_free(struct snapshot *s)
{
    if (s->listener_tls != NULL)
        for (size_t i = 0; i < s->cfg->n_listeners; i++)
            tls_ctx_unref(s->listener_tls[i]);
    if (s->upstream_tls != NULL)
        for (size_t i = 0; i < s->cfg->n_functions; i++)
            tls_ctx_unref(s->upstream_tls[i]);
    if (s->egress_tls != NULL) {
        for (size_t i = 0; i < s->cfg->n_functions; i++) {
            const struct cfg_egress *eg = s->cfg->functions[i].egress;
            for (size_t r = 0; s->egress_tls[i] != NULL && r < eg->n_allow; r++)
                tls_ctx_unref(s->egress_tls[i][r]);
            free(s->egress_tls[i]);
        }
    }
    if (s->admit != NULL) {
        for (size_t i = 0; i < s->cfg->n_functions; i++) {
            struct snap_admit *sa = &s->admit[i];
            for (size_t e = 0; sa->eps != NULL && e < s->cfg->functions[i].n_endpoints; e++)
                admit_ep_put(sa->eps[e]);
            free(sa->eps);
            admit_fn_put(sa->af);
        }
    }
    free(s->admit);
    free(s->listener_tls);
    free(s->upstream_tls);
    free(s->egress_tls);
    router_free(s->router);
    config_free(s->cfg);
    free(s);
}

struct snapshot *snapshot_new(struct config *cfg, unsigned generation, char *err, size_t errlen)
{
    struct snapshot *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        config_free(cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->refs = 1;
    s->generation = generation;
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) == 0)
        s->loaded_at_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    s->router = router_new(cfg);
    s->listener_tls = calloc(cfg->n_listeners + 1, sizeof(*s->listener_tls));
    s->upstream_tls = calloc(cfg->n_functions + 1, sizeof(*s->upstream_tls));
    s->egress_tls = calloc(cfg->n_functions + 1, sizeof(*s->egress_tls));
    s->admit = calloc(cfg->n_functions + 1, sizeof(*s->admit));
    if (s->router == NULL || s->listener_tls == NULL || s->upstream_tls == NULL ||
        s->egress_tls == NULL || s->admit == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out_free;
    }
    if (load_listener_tls(s, err, errlen) < 0 || load_upstream_tls(s, err, errlen) < 0 ||
        load_egress_tls(s, err, errlen) < 0 || load_admission(s, err, errlen) < 0)
        goto out_free;
    return s;

out_free:
    snapshot_free(s);
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
    snapshot_free(s);
}
