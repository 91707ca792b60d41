/*
 * retry.c - the retry decision, backoff and budget (see retry.h).
 */
#include "retry.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    unsigned bit;
} on_names[] = {
    {"connect-failure", RETRY_ON_CONNECT_FAILURE},
    {"refused", RETRY_ON_REFUSED},
    {"reset", RETRY_ON_RESET},
    {"gateway-error", RETRY_ON_GATEWAY_ERROR},
    {"5xx", RETRY_ON_5XX},
    {"retriable-4xx", RETRY_ON_RETRIABLE_4XX},
    {"per-try-timeout", RETRY_ON_PER_TRY_TIMEOUT},
};

unsigned retry_on_bit(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(on_names) / sizeof(on_names[0]); i++)
        if (strlen(on_names[i].name) == len && memcmp(on_names[i].name, name, len) == 0)
            return on_names[i].bit;
    return 0;
}

static const char *const verdict_names[RETRY__N] = {
    [RETRY_SKIP_MAX] = "max",       [RETRY_SKIP_NON_IDEMPOTENT] = "non_idempotent",
    [RETRY_SKIP_BODY] = "body",     [RETRY_SKIP_DEADLINE] = "deadline",
    [RETRY_SKIP_BUDGET] = "budget",
};

const char *retry_verdict_name(enum retry_verdict v)
{
    return (unsigned)v < RETRY__N ? verdict_names[v] : NULL;
}

bool retry_on_status(const struct retry_policy *p, int status)
{
    if ((p->on & RETRY_ON_5XX) && status >= 500 && status <= 599)
        return true;
    if ((p->on & RETRY_ON_GATEWAY_ERROR) && status >= 502 && status <= 504)
        return true;
    if ((p->on & RETRY_ON_RETRIABLE_4XX) && status == 409)
        return true;
    for (unsigned i = 0; i < p->n_statuses; i++)
        if (p->statuses[i] == status)
            return true;
    return false;
}

static bool cond_on(const struct retry_policy *p, const struct retry_facts *f)
{
    switch (f->cond) {
    case RETRY_C_CONNECT:
        return (p->on & RETRY_ON_CONNECT_FAILURE) != 0;
    case RETRY_C_REFUSED:
        return (p->on & (RETRY_ON_CONNECT_FAILURE | RETRY_ON_REFUSED)) != 0;
    case RETRY_C_RESET:
        return (p->on & RETRY_ON_RESET) != 0;
    case RETRY_C_STATUS:
        return retry_on_status(p, f->status);
    case RETRY_C_PER_TRY_TIMEOUT:
        return (p->on & RETRY_ON_PER_TRY_TIMEOUT) != 0;
    }
    return false;
}

enum retry_verdict retry_decide(const struct retry_policy *p, const struct retry_facts *f)
{
    if (!cond_on(p, f))
        return RETRY_NOT_ON;
    if (f->retries >= p->max)
        return RETRY_SKIP_MAX;
    if (f->sent && !f->idempotent)
        return RETRY_SKIP_NON_IDEMPOTENT;
    if (f->sent && !f->replayable)
        return RETRY_SKIP_BODY;
    if (f->wait_ms >= f->left_ms)
        return RETRY_SKIP_DEADLINE;
    if (!f->budget_ok)
        return RETRY_SKIP_BUDGET;
    return RETRY_GO;
}

uint64_t retry_backoff_ms(const struct retry_policy *p, unsigned n, uint64_t rnd)
{
    uint64_t cap = p->backoff_base_ms;

    for (unsigned i = 0; i < n && cap < p->backoff_max_ms; i++)
        cap *= 2;
    if (cap > p->backoff_max_ms)
        cap = p->backoff_max_ms;
    return cap == 0 ? 0 : rnd % (cap + 1);
}

bool retry_method_idempotent(const char *m, size_t len)
{
    static const char *const idem[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};

    for (size_t i = 0; i < sizeof(idem) / sizeof(idem[0]); i++)
        if (strlen(idem[i]) == len && memcmp(idem[i], m, len) == 0)
            return true;
    return false;
}

int64_t retry_after_ms(const char *v, size_t len)
{
    int64_t s = 0;

    if (v == NULL || len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1; /* an HTTP-date, or garbage */
        if (s < 86400)
            s = s * 10 + (v[i] - '0');
    }
    return (s > 86400 ? 86400 : s) * 1000;
}

/* Moves the window to now, clearing the seconds it skipped. */
static void budget_advance(struct retry_budget *b, uint64_t now_s)
{
    if (now_s <= b->epoch_s)
        return;
    if (now_s - b->epoch_s >= RETRY_WINDOW_S) {
        memset(b->requests, 0, sizeof(b->requests));
        memset(b->retries, 0, sizeof(b->retries));
    } else {
        for (uint64_t s = b->epoch_s + 1; s <= now_s; s++) {
            b->requests[s % RETRY_WINDOW_S] = 0;
            b->retries[s % RETRY_WINDOW_S] = 0;
        }
    }
    b->epoch_s = now_s;
}

void retry_budget_request(struct retry_budget *b, uint64_t now_s)
{
    budget_advance(b, now_s);
    b->requests[now_s % RETRY_WINDOW_S]++;
}

bool retry_budget_allows(struct retry_budget *b, const struct retry_policy *p, uint64_t now_s)
{
    uint64_t requests = 0, retries = 0;

    budget_advance(b, now_s);
    for (int i = 0; i < RETRY_WINDOW_S; i++) {
        requests += b->requests[i];
        retries += b->retries[i];
    }
    /* retries < ratio * requests + min_per_s * window, in whole permille */
    return retries * 1000 <
           requests * p->budget_permille + (uint64_t)p->budget_min_per_s * RETRY_WINDOW_S * 1000;
}

void retry_budget_spend(struct retry_budget *b, uint64_t now_s)
{
    budget_advance(b, now_s);
    b->retries[now_s % RETRY_WINDOW_S]++;
}
