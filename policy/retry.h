/*
 * retry.h - whether a failed attempt is made again, and when: the pure half
 * of fnproxy's retries (DESIGN.md "Where fnproxy goes beyond them" 1-3).
 *
 * A retry is made only when every one of these holds, checked in this
 * order, and the first that fails is the reason counted in
 * fnproxy_retries_skipped_total:
 *
 *   on         the failure is one the route's retries.on names
 *              (not counted as skipped when it is not: nothing was asked)
 *   max        fewer than retries.max retries were made
 *   idempotent nothing reached the function, or the method is idempotent
 *              (GET HEAD OPTIONS TRACE PUT DELETE), or the request carries
 *              Idempotency-Key
 *   body       nothing reached the function, or the whole body is in the
 *              replay buffer
 *   deadline   the wait before it ends before the request's deadline
 *   budget     the route's retry budget has room (the last check, since
 *              it withdraws)
 *
 * The wait is exponential backoff with full jitter: uniform in
 * [0, min(backoff.max, backoff.base * 2^n)] before retry n+1, or what a
 * 503's or 429's Retry-After asks, if that is longer.
 *
 * The budget (linkerd2-proxy's and Finagle's): over the last
 * RETRY_WINDOW_S seconds, retries may be at most budget.ratio of the
 * requests plus budget.min_per_s a second, so that when everything fails
 * retries add at most that ratio of load instead of multiplying it.
 *
 * Pure: no I/O, no clock; callers pass the time.
 */
#ifndef FNPROXY_RETRY_H
#define FNPROXY_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* retries.on, as bits. */
enum retry_on {
    RETRY_ON_CONNECT_FAILURE = 1u << 0, /* the connect failed or timed out (refused too) */
    RETRY_ON_REFUSED = 1u << 1,         /* the connect was refused */
    RETRY_ON_RESET = 1u << 2,           /* the connection broke before a whole response head */
    RETRY_ON_GATEWAY_ERROR = 1u << 3,   /* 502, 503, 504 */
    RETRY_ON_5XX = 1u << 4,             /* any 5xx */
    RETRY_ON_RETRIABLE_4XX = 1u << 5,   /* 409 */
    RETRY_ON_PER_TRY_TIMEOUT = 1u << 6, /* no response head within per_try_timeout */
};

/* The bit of a retries.on name ("connect-failure", "gateway-error", ...); 0
 * if unknown (an explicit status code is not a name). */
unsigned retry_on_bit(const char *name, size_t len);

#define RETRY_MAX_STATUSES 16
#define RETRY_WINDOW_S 10

struct retry_policy {
    unsigned max;                          /* retries after the first attempt */
    unsigned on;                           /* RETRY_ON_* */
    uint16_t statuses[RETRY_MAX_STATUSES]; /* explicit codes in on */
    unsigned n_statuses;
    uint64_t backoff_base_ms;
    uint64_t backoff_max_ms;
    uint32_t budget_permille;  /* retries per 1000 requests in the window */
    uint32_t budget_min_per_s; /* ... plus this many a second */
    uint64_t replay_max;       /* request body bytes kept for a replay */
};

/* What failed. */
enum retry_cond {
    RETRY_C_CONNECT = 0,     /* a connect failed or timed out: nothing was sent */
    RETRY_C_REFUSED,         /* ... refused */
    RETRY_C_RESET,           /* the connection broke before a whole response head */
    RETRY_C_STATUS,          /* a response head with this status */
    RETRY_C_PER_TRY_TIMEOUT, /* no response head within per_try_timeout */
};

enum retry_verdict {
    RETRY_GO = 0,
    RETRY_NOT_ON,              /* the failure is not one to retry on: no retry, not "skipped" */
    RETRY_SKIP_MAX,            /* retries.max made */
    RETRY_SKIP_NON_IDEMPOTENT, /* sent, and the method is not idempotent (no Idempotency-Key) */
    RETRY_SKIP_BODY,           /* sent, and the body outgrew the replay buffer */
    RETRY_SKIP_DEADLINE,       /* the wait would end past the deadline */
    RETRY_SKIP_BUDGET,         /* the budget is spent */
    RETRY__N
};

/* The label of a skipped retry: "max", "non_idempotent", "body", "deadline",
 * "budget"; NULL for RETRY_GO and RETRY_NOT_ON. */
const char *retry_verdict_name(enum retry_verdict v);

struct retry_facts {
    enum retry_cond cond;
    int status;       /* RETRY_C_STATUS */
    bool sent;        /* bytes of the request reached the function */
    bool idempotent;  /* idempotent method, or Idempotency-Key */
    bool replayable;  /* no body, or all of it in the replay buffer */
    unsigned retries; /* retries made so far */
    uint64_t wait_ms; /* before the retry (backoff, Retry-After) */
    uint64_t left_ms; /* until the deadline */
    bool budget_ok;   /* retry_budget_allows() */
};

enum retry_verdict retry_decide(const struct retry_policy *p, const struct retry_facts *f);

/* Whether on names this status (gateway-error, 5xx, retriable-4xx, codes). */
bool retry_on_status(const struct retry_policy *p, int status);

/* The backoff before retry n+1 (n retries made), from a uniform random
 * 64-bit value: full jitter in [0, min(max, base << n)]. */
uint64_t retry_backoff_ms(const struct retry_policy *p, unsigned n, uint64_t rnd);

/* GET HEAD OPTIONS TRACE PUT DELETE (RFC 9110 section 9.2.2). */
bool retry_method_idempotent(const char *method, size_t len);

/* A Retry-After of delta-seconds in ms; -1 when absent or an HTTP-date
 * (not honoured: it needs a clock the peer and fnproxy agree on). Values
 * over a day are taken as a day. */
int64_t retry_after_ms(const char *value, size_t len);

/* The budget of one route on one worker (no atomics: one writer). */
struct retry_budget {
    uint64_t epoch_s; /* the second slot [epoch_s % WINDOW] counts */
    uint32_t requests[RETRY_WINDOW_S];
    uint32_t retries[RETRY_WINDOW_S];
};

/* A request was made (first attempts only). */
void retry_budget_request(struct retry_budget *b, uint64_t now_s);

/* Whether a retry fits: retries in the window < permille/1000 * requests
 * + min_per_s * window. */
bool retry_budget_allows(struct retry_budget *b, const struct retry_policy *p, uint64_t now_s);

/* A retry was made. */
void retry_budget_spend(struct retry_budget *b, uint64_t now_s);

#endif
