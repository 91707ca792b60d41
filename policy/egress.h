/*
 * egress.h - a function's egress decision, as a pure function of its
 * compiled policy and the facts of one request (DESIGN.md: "Egress
 * decisions"): no I/O, so it is unit-tested, fuzzed and benchmarked alone.
 *
 * A decision has two stages, because the name is known before the
 * addresses are:
 *
 *   1. egress_decide_target: the canonical target (egress_addr.h) must be
 *      allowed by a rule: a host rule for a name (or an IP literal written
 *      as a host rule), or a cidr rule for an IP literal;
 *   2. egress_decide_addr, for each address the name resolved to (or the
 *      literal itself): with deny_private, an address that is not public
 *      (loopback, RFC 1918, CGNAT, link-local, unique-local, multicast,
 *      broadcast, unspecified, reserved, IPv4 embedded in IPv6 as what it
 *      carries) passes only if a cidr rule of the same function covers it
 *      and the port. The address that passed is the one to dial: the
 *      caller never resolves twice for one decision.
 *
 * mode: report is the caller's: it lets a denied request through and
 * counts it as would-deny; the decision itself is the same.
 */
#ifndef FNPROXY_EGRESS_H
#define FNPROXY_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "egress_addr.h"
#include "egress_rules.h"

struct egress_policy {
    const struct egress_rules *rules;
    bool deny_private;
};

/* Why a request is denied: a fixed set, fit for the reason label of
 * fnproxy_policy_denials_total{direction="egress"}. */
enum egress_deny {
    EGRESS_ALLOW = 0,
    EGRESS_DENY_NO_RULE, /* no rule allows this host, port, method and path */
    EGRESS_DENY_PRIVATE, /* an address deny_private refuses and no cidr rule names */
    EGRESS_DENY__N
};

struct egress_decision {
    enum egress_deny deny;
    int rule;                   /* the rule that allowed it (the route label); -1 if denied */
    enum egress_addr_class cls; /* stage 2: what the address is */
};

void egress_decide_target(const struct egress_policy *p, const struct egress_target *t,
                          unsigned method, const char *path, size_t path_len,
                          struct egress_decision *d);

/* Stage 2 for one address of a target stage 1 allowed (d as it left it). */
void egress_decide_addr(const struct egress_policy *p, const struct egress_target *t, int family,
                        const uint8_t *addr, unsigned method, const char *path, size_t path_len,
                        struct egress_decision *d);

const char *egress_deny_name(enum egress_deny d); /* "allow", "no_rule", "private_address" */

#endif
