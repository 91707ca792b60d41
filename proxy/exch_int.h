/*
 * exch_int.h - what exch.c shares with forward.c, the egress side of an
 * exchange. Not for other modules: they go through exch.h.
 */
#ifndef FNPROXY_EXCH_INT_H
#define FNPROXY_EXCH_INT_H

#include "exch.h"

const struct cfg_listener *exch_listener(const struct exch *x);

/* x->request_id: the client's x-request-id (found by the head's check), or a new one. */
void exch_make_request_id(struct exch *x);

/* x->trace: the client's traceparent when it is valid (the head's check
 * found it), else a new trace when start is set, else none. */
void exch_take_trace(struct exch *x, bool start);

/* The routed request's deadlines and retry policy (rp NULL: no retries);
 * after x->stats is set. */
void exch_set_policy(struct exch *x, const struct cfg_timeouts *tmo, const struct retry_policy *rp,
                     const struct cfg_fault *fault);

/* x->req_head for a forwarded head of at most cap bytes (a pooled buffer
 * when it fits); 0, or -1 answered 503. */
int exch_head_buf(struct exch *x, size_t cap);

/* The first attempt, after any fault the route injects (an answer of its
 * own, or a delay first). */
void exch_first_attempt(struct exch *x);

/* Arms the current phase's deadline from now; exch_enter changes phase first. */
void exch_touch(struct exch *x);
void exch_enter(struct exch *x, enum exch_phase ph);

/* fnproxy's own answer: {"error":code,"message":message<extra>}; extra is
 * "" or more JSON members, each starting with a comma, needing no escape. */
void exch_reply(struct exch *x, int status, const char *code, const char *message);
void exch_reply_json(struct exch *x, int status, const char *code, const char *message,
                     const char *extra);
/* ... with more header lines (each ending CRLF; NULL: none). */
void exch_reply_full(struct exch *x, int status, const char *code, const char *message,
                     const char *extra, const char *headers);

/* At its circuit breaker's limits (no more requests for it now). */
bool endpoint_full(const struct endpoint *ep, const struct cfg_circuit_breaker *cb);

/* The next attempt (exch.c picks the endpoint, or forward.c for egress). */
void exch_connect(struct exch *x);
void exch_attempt_failed(struct exch *x, enum exch_failure f, int err, const char *msg);
void exch_attempt_done(struct exch *x);
void exch_connect_done(struct exch *x);

/* Sends x->resp_out to the client; with now, 1 means it all went at once. */
int exch_send(struct exch *x, bool now);

void exch_end(struct exch *x);
void exch_abort(struct exch *x);

void exch_count_uperr(struct exch *x, enum metrics_uperr reason);
void exch_count_timeout(struct exch *x, enum metrics_timeout kind);

#endif
