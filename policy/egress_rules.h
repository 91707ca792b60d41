/*
 * egress_rules.h - the compiled allow list of one function's egress policy:
 * which rule, if any, lets a request to a host (or an address) through.
 *
 * A policy is an ordered list of allow rules; anything no rule allows is
 * denied. A rule names a host (exact, or "*.suffix": any name with at least
 * one more label, ending on a label boundary) or a CIDR, the ports it
 * allows, and optionally methods and path prefixes. When several rules
 * allow a request the first in config order wins, so that the rule name
 * reported in metrics and logs is the one the operator reads first.
 *
 * Compiled once per config into hash tables and prefix trees; a decision
 * does not allocate and the compiled set is immutable, so threads share it
 * read-only. Pure: no I/O.
 */
#ifndef FNPROXY_EGRESS_RULES_H
#define FNPROXY_EGRESS_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct egress_rule_spec {
    const char *name;
    const char *host;      /* exact or "*.suffix"; NULL for a cidr rule */
    const char *cidr;      /* "a.b.c.d/n" or "v6/n"; NULL for a host rule */
    const uint16_t *ports; /* at least one */
    size_t n_ports;
    unsigned methods;         /* CFG_M_* bits; 0 = any */
    const char *const *paths; /* prefixes; NULL/0 = any */
    size_t n_paths;
};

struct egress_rules;

/*
 * Compiles n rules (the specs are copied; the caller keeps its own). On bad
 * input returns NULL with a one-line reason in err naming the rule by its
 * 0-based index, the same index the matchers return:
 * "rule 3 (db): cidr: bad prefix length 33". Hosts are folded to lower
 * case, as the matchers receive them.
 */
struct egress_rules *egress_rules_compile(const struct egress_rule_spec *rules, size_t n, char *err,
                                          size_t errlen);
void egress_rules_free(struct egress_rules *r);

/*
 * The index of the first host rule (config order) that matches the
 * canonical host[0..len) (lower case, no trailing dot, no port) and allows
 * port, method and path; -1 if none. Names are compared byte for byte, so
 * an IP literal only matches a host rule written the same way: addresses
 * go to egress_rules_match_addr().
 *
 * path == NULL means a CONNECT tunnel: neither the method nor the path of
 * what travels inside can be seen, so method is ignored and a rule that
 * restricts methods or paths never matches. Otherwise a rule with methods
 * matches only those (method 0, an unknown method, matches none of them),
 * and a rule with paths matches when one of them is a byte-for-byte
 * prefix of path[0..path_len).
 */
int egress_rules_match_host(const struct egress_rules *r, const char *host, size_t len,
                            uint16_t port, unsigned method, const char *path, size_t path_len);

/*
 * The index of the first cidr rule (config order) that covers addr (family
 * AF_INET or AF_INET6, 4 or 16 bytes in network order) and allows port,
 * method and path as above; -1 if none. An IPv4-mapped IPv6 address is
 * matched as IPv6: the caller unmaps it first if it wants the IPv4 rules.
 */
int egress_rules_match_addr(const struct egress_rules *r, int family, const uint8_t *addr,
                            uint16_t port, unsigned method, const char *path, size_t path_len);

/*
 * Whether a request path could reach the destination as another path than
 * its prefix says: a "." or ".." segment (dots percent-encoded or not, or
 * followed by ";params", which Tomcat drops), an encoded slash or
 * backslash (%2f, %5c), a backslash. A path rule cannot vouch for such a
 * path: "/v1/../admin" starts with "/v1/" and is served as "/admin".
 */
bool egress_path_ambiguous(const char *path, size_t len);

/* The name of rule idx; NULL if idx is out of range. */
const char *egress_rules_name(const struct egress_rules *r, int idx);
size_t egress_rules_count(const struct egress_rules *r);

#endif
