/*
 * egress.c - a function's egress decision (see egress.h).
 */
#include "egress.h"

static const char *const deny_names[EGRESS_DENY__N] = {
    [EGRESS_ALLOW] = "allow",
    [EGRESS_DENY_NO_RULE] = "no_rule",
    [EGRESS_DENY_PRIVATE] = "private_address",
};

const char *egress_deny_name(enum egress_deny d)
{
    return (unsigned)d < EGRESS_DENY__N ? deny_names[d] : "unknown";
}

void egress_decide_target(const struct egress_policy *p, const struct egress_target *t,
                          unsigned method, const char *path, size_t path_len,
                          struct egress_decision *d)
{
    int rule =
        egress_rules_match_host(p->rules, t->host, t->host_len, t->port, method, path, path_len);

    if (rule < 0 && t->is_ip)
        rule =
            egress_rules_match_addr(p->rules, t->family, t->addr, t->port, method, path, path_len);
    d->rule = rule;
    d->deny = rule < 0 ? EGRESS_DENY_NO_RULE : EGRESS_ALLOW;
    d->cls = EGRESS_A_PUBLIC;
}

void egress_decide_addr(const struct egress_policy *p, const struct egress_target *t, int family,
                        const uint8_t *addr, unsigned method, const char *path, size_t path_len,
                        struct egress_decision *d)
{
    int cidr;

    if (d->deny != EGRESS_ALLOW)
        return;
    d->cls = egress_addr_classify(family, addr);
    if (!p->deny_private || !egress_addr_is_private(d->cls))
        return;
    /* Only a cidr rule names a private range: a host rule names a name,
     * and a name can be made to resolve anywhere. */
    cidr = egress_rules_match_addr(p->rules, family, addr, t->port, method, path, path_len);
    if (cidr < 0) {
        d->deny = EGRESS_DENY_PRIVATE;
        d->rule = -1;
    }
}
