/*
 * forward.h - the egress side of an exchange: a function's forward proxy
 * (DESIGN.md "Egress decisions").
 *
 * A request on an egress listener comes from the function that listener
 * belongs to. Its target is canonicalised (egress_addr.h), decided on by
 * the function's compiled rules (egress.h), its name resolved once without
 * blocking (resolve.h), every address checked, and only an address that
 * passed is dialled:
 *
 *   GET http://host[:port]/path   forwarded in origin-form, Host from the
 *                                 target, Proxy-* and hop-by-hop headers
 *                                 dropped, pooled to the destination; with
 *                                 tls: originate, over TLS (port 443 when
 *                                 the URL names none)
 *   CONNECT host:port             "200 Connection established", then an
 *                                 opaque tunnel on a connection of its own
 *
 * Answers of its own: 400 bad_target / proxy_request_expected, 403
 * egress_denied (a JSON body naming the function, host, port and reason),
 * 502 dns_failed, 502 upstream_unreachable, 504 connect_timeout. With mode:
 * report, what would be denied goes through and is counted as would-deny;
 * fnproxy's own listeners are refused in either mode.
 */
#ifndef FNPROXY_FORWARD_H
#define FNPROXY_FORWARD_H

#include <stddef.h>

#include "exch.h"
#include "pool.h"

/* What the egress policy said of a request (the access log's "verdict"). */
enum fwd_verdict {
    FWD_NONE = 0,   /* not an egress request, or refused before a decision (400) */
    FWD_ALLOW,      /* a rule allows it */
    FWD_DENY,       /* refused */
    FWD_WOULD_DENY, /* mode: report let through what enforce would refuse */
};

/* The head of a request on an egress listener was parsed and checked. */
void fwd_begin(struct exch *x);

/* The next address to dial and its endpoint (referenced by the exchange):
 * an untried one, then any but the last; an ejected one only when no other
 * is left. NULL when there is none, with *full set when it is at its
 * circuit breaker limits. *tls is the rule's context for tls: originate. */
struct endpoint *fwd_next_endpoint(struct exch *x, size_t *idx, struct tls_ctx **tls, bool *full);

/* Every address failed: 504 when the last one timed out, else 502. */
void fwd_unreachable(struct exch *x);

/* The RESOLVE phase's deadline passed (the resolver did not answer). */
void fwd_resolve_timeout(struct exch *x);

/* A tunnel: the pool's callbacks for its destination connection, and what
 * the client side tells it (bytes read, a send done, a half-close). */
extern const struct pool_owner_ops fwd_tunnel_pool_ops;
void fwd_tunnel_input(struct exch *x);
void fwd_tunnel_sent(struct exch *x);
void fwd_tunnel_client_eof(struct exch *x);

/* Whether addr:port is one of fnproxy's own listeners or its admin. */
bool fwd_is_own(const struct config *cfg, int family, const uint8_t *addr, uint16_t port);

/* "allow", "deny", "would_deny"; "" before a decision. */
const char *fwd_verdict_name(const struct exch *x);

#endif
