/*
 * egress_rules.c - owns the compiled egress allow list: the copied rules,
 * the host hash tables and the CIDR prefix trees, and the first-match
 * decision over them.
 *
 * Structures, chosen so that a decision costs one pass over the host name
 * or at most one walk down an address, whatever the number of rules:
 *
 * - Exact hosts: an open-addressing hash table (linear probing, power-of-two
 *   size, load <= 1/2). Several rules may name the same host with different
 *   ports, methods or paths, so a key holds the ascending list of its rule
 *   indices: the first that allows the request is the key's answer.
 *
 * - Wildcards "*.suffix": a second hash table keyed by the suffix, probed at
 *   every label boundary of the host. The hash (FNV-1a) is computed from the
 *   end of the name towards its start, so a single right-to-left pass yields
 *   the hash of every suffix as it goes and the whole name's hash at the end
 *   (the exact-table probe): no label is hashed twice. A bit mask of the
 *   label counts present skips probes no key can answer. This is simpler
 *   than a label trie and touches fewer cache lines (one slot per probed
 *   boundary, not a node per label plus a table per node).
 *
 * - CIDRs: a binary prefix tree per family, path-compressed: a node is a
 *   branch or holds rules, and keeps its depth and full prefix, so a walk
 *   takes one step per branch instead of one per bit (with 10,000 IPv6
 *   rules the one-bit tree had ~400,000 nodes and twice the hit cost).
 *   Rules hang on the node of their prefix. First match is by config
 *   order, not longest prefix, so every node on the address's path may
 *   hold the answer; each node keeps the lowest rule index in its subtree,
 *   and the walk stops as soon as that cannot beat the best found. A
 *   per-prefix-length hash would probe every length present, even for a
 *   miss; the tree needs no hashing and a miss ends where the tree does.
 *   It is built one bit per node first (simple to fill in rule order), then
 *   compressed.
 *
 * Across tables the lowest index wins, and candidate lists are scanned only
 * while their indices are below the best so far.
 */
#include "egress_rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum rule_kind { RULE_EXACT = 0, RULE_WILD, RULE_CIDR4, RULE_CIDR6 };

struct rule {
    char *name;
    char *host; /* lower-cased copy; for RULE_WILD without the "*." */
    size_t host_len;
    enum rule_kind kind;
    uint8_t addr[16]; /* cidr network, network order */
    unsigned plen;
    uint16_t *ports;
    size_t n_ports;
    unsigned methods;
    char **paths;
    size_t *path_lens;
    size_t n_paths;
};

struct hslot {
    uint64_t hash;
    const char *key; /* points into a rule's host */
    uint32_t len;
    uint32_t n_cand; /* 0 = empty slot */
    uint32_t cand_off;
};

struct htab {
    struct hslot *slots;
    size_t mask;
    int32_t *cand; /* rule indices, ascending per key */
};

/* While building: one node per bit of every prefix. */
struct tnode {
    int32_t child[2]; /* 0 = none: the root is never a child */
    int32_t min_idx;  /* lowest rule index in this subtree */
    uint32_t n_cand;
    uint32_t cand_off;
};

struct tbuild {
    struct tnode *nodes;
    size_t n_nodes, cap;
};

/* Once built: the same tree with its chains of one-child nodes that hold no
 * rule squeezed out, so a node is a branch or holds rules. Each node's full
 * prefix is kept in keys[] (apart, so that the nodes stay small for the
 * dense levels near the root), which a walk checks when it arrives over
 * skipped bits. */
struct cnode {
    int32_t child[2]; /* 0 = none */
    int32_t min_idx;
    uint32_t n_cand;
    uint32_t cand_off;
    uint32_t depth; /* prefix length */
};

struct trie {
    struct cnode *nodes;
    uint8_t (*keys)[16];
    size_t n_nodes, cap;
    int32_t *cand;
};

struct egress_rules {
    struct rule *rules;
    size_t n;
    struct htab exact, wild;
    uint64_t wild_labels; /* bit k: a wildcard suffix has k labels (63: 63 or more) */
    struct trie v4, v6;
};

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* FNV-1a over s[0..len) taken from the last byte to the first: the order
 * that lets the matcher hash every suffix of a name in one pass. */
static uint64_t hash_rev(const char *s, size_t len)
{
    uint64_t h = FNV_OFFSET;

    while (len-- > 0)
        h = (h ^ (uint8_t)s[len]) * FNV_PRIME;
    return h;
}

/* FNV's low bits mix poorly; fold the high half in before masking. */
static size_t hslot_start(uint64_t h, size_t mask)
{
    return (size_t)(h ^ (h >> 29) ^ (h >> 47)) & mask;
}

static unsigned label_bit(size_t labels)
{
    return labels > 63 ? 63 : (unsigned)labels;
}

/* ---- compile ---------------------------------------------------------- */

static void fail(char *err, size_t errlen, size_t i, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void fail(char *err, size_t errlen, size_t i, const char *name, const char *fmt, ...)
{
    char what[256];
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (name != NULL && name[0] != '\0')
        snprintf(err, errlen, "rule %zu (%s): %s", i, name, what);
    else
        snprintf(err, errlen, "rule %zu: %s", i, what);
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* A domain of non-empty labels: no '*', no leading, trailing or double dot.
 * Returns NULL or what is wrong. */
static const char *check_domain(const char *s, size_t len)
{
    if (len == 0)
        return "empty";
    if (s[0] == '.' || s[len - 1] == '.')
        return "empty label";
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '*')
            return "a wildcard must be of the form *.domain";
        if (s[i] == '.' && s[i + 1] == '.')
            return "empty label";
    }
    return NULL;
}

static int compile_host(struct rule *ru, const char *host, char *err, size_t errlen, size_t i)
{
    size_t len = strlen(host);
    const char *d = host, *why;

    ru->kind = RULE_EXACT;
    if (len > 0 && host[0] == '*') {
        if (len < 3 || host[1] != '.') {
            fail(err, errlen, i, ru->name, "host: a wildcard must be of the form *.domain");
            return -1;
        }
        ru->kind = RULE_WILD;
        d = host + 2;
        len -= 2;
    }
    why = check_domain(d, len);
    if (why != NULL) {
        fail(err, errlen, i, ru->name, "host: %s", why);
        return -1;
    }
    ru->host = dup_n(d, len);
    if (ru->host == NULL)
        goto out_nomem;
    for (size_t k = 0; k < len; k++)
        ru->host[k] = (char)tolower((unsigned char)ru->host[k]);
    ru->host_len = len;
    return 0;

out_nomem:
    fail(err, errlen, i, ru->name, "out of memory");
    return -1;
}

static int compile_cidr(struct rule *ru, const char *cidr, char *err, size_t errlen, size_t i)
{
    const char *slash = strchr(cidr, '/');
    char abuf[INET6_ADDRSTRLEN + 1];
    size_t alen;
    unsigned long plen = 0, max;
    int af;

    if (slash == NULL || slash[1] == '\0') {
        fail(err, errlen, i, ru->name, "cidr: expected address/prefix-length, got \"%s\"", cidr);
        return -1;
    }
    alen = (size_t)(slash - cidr);
    if (alen == 0 || alen >= sizeof(abuf)) {
        fail(err, errlen, i, ru->name, "cidr: bad address \"%.*s\"", (int)alen, cidr);
        return -1;
    }
    memcpy(abuf, cidr, alen);
    abuf[alen] = '\0';
    af = memchr(abuf, ':', alen) != NULL ? AF_INET6 : AF_INET;
    if (inet_pton(af, abuf, ru->addr) != 1) {
        fail(err, errlen, i, ru->name, "cidr: bad address \"%s\"", abuf);
        return -1;
    }
    max = af == AF_INET ? 32 : 128;
    /* Digits only, at most 3 of them: strtoul would take "+8", " 8" or "0x8". */
    const char *p = slash + 1;
    size_t nd = strlen(p);
    bool ok = nd <= 3;
    for (size_t k = 0; ok && k < nd; k++) {
        if (p[k] < '0' || p[k] > '9')
            ok = false;
        else
            plen = plen * 10 + (unsigned long)(p[k] - '0');
    }
    if (!ok || plen > max) {
        fail(err, errlen, i, ru->name, "cidr: bad prefix length %s", p);
        return -1;
    }
    ru->plen = (unsigned)plen;
    ru->kind = af == AF_INET ? RULE_CIDR4 : RULE_CIDR6;

    /* Host bits set usually mean a typo in the address or the length;
     * refusing them beats silently widening or narrowing the rule. */
    uint8_t net[16];
    size_t nbytes = af == AF_INET ? 4 : 16;
    memcpy(net, ru->addr, nbytes);
    for (size_t b = 0; b < nbytes; b++) {
        unsigned keep = plen >= (b + 1) * 8 ? 8 : plen > b * 8 ? (unsigned)(plen - b * 8) : 0;
        net[b] &= (uint8_t)(0xff00u >> keep);
    }
    if (memcmp(net, ru->addr, nbytes) != 0) {
        char nbuf[INET6_ADDRSTRLEN];
        inet_ntop(af, net, nbuf, sizeof(nbuf));
        fail(err, errlen, i, ru->name, "cidr: host bits set in %s (the network is %s/%lu)", cidr,
             nbuf, plen);
        return -1;
    }
    return 0;
}

static int compile_rule(struct rule *ru, const struct egress_rule_spec *s, char *err, size_t errlen,
                        size_t i)
{
    if (s->name == NULL || s->name[0] == '\0') {
        fail(err, errlen, i, NULL, "name: empty");
        return -1;
    }
    ru->name = strdup(s->name);
    if (ru->name == NULL)
        goto out_nomem;
    if (s->host != NULL && s->cidr != NULL) {
        fail(err, errlen, i, ru->name, "both host and cidr given");
        return -1;
    }
    if (s->host == NULL && s->cidr == NULL) {
        fail(err, errlen, i, ru->name, "neither host nor cidr given");
        return -1;
    }
    if (s->host != NULL ? compile_host(ru, s->host, err, errlen, i) < 0
                        : compile_cidr(ru, s->cidr, err, errlen, i) < 0)
        return -1;

    if (s->ports == NULL || s->n_ports == 0) {
        fail(err, errlen, i, ru->name, "ports: empty");
        return -1;
    }
    for (size_t k = 0; k < s->n_ports; k++) {
        if (s->ports[k] == 0) {
            fail(err, errlen, i, ru->name, "ports: port 0");
            return -1;
        }
    }
    ru->ports = malloc(s->n_ports * sizeof(*ru->ports));
    if (ru->ports == NULL)
        goto out_nomem;
    memcpy(ru->ports, s->ports, s->n_ports * sizeof(*ru->ports));
    ru->n_ports = s->n_ports;
    ru->methods = s->methods;

    if (s->n_paths > 0) {
        if (s->paths == NULL) {
            fail(err, errlen, i, ru->name, "paths: missing");
            return -1;
        }
        ru->paths = calloc(s->n_paths, sizeof(*ru->paths));
        ru->path_lens = calloc(s->n_paths, sizeof(*ru->path_lens));
        if (ru->paths == NULL || ru->path_lens == NULL)
            goto out_nomem;
        ru->n_paths = s->n_paths;
        for (size_t k = 0; k < s->n_paths; k++) {
            if (s->paths[k] == NULL) {
                fail(err, errlen, i, ru->name, "paths: null path %zu", k);
                return -1;
            }
            ru->paths[k] = strdup(s->paths[k]);
            if (ru->paths[k] == NULL)
                goto out_nomem;
            ru->path_lens[k] = strlen(ru->paths[k]);
        }
    }
    return 0;

out_nomem:
    fail(err, errlen, i, s->name, "out of memory");
    return -1;
}

/* The slot of key, or the empty slot where it would go. */
static struct hslot *htab_slot(const struct htab *t, uint64_t h, const char *key, size_t len)
{
    for (size_t j = hslot_start(h, t->mask);; j = (j + 1) & t->mask) {
        struct hslot *s = &t->slots[j];
        if (s->key == NULL || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

/* Builds t from the rules of one kind: count the rules per key, lay out
 * the candidate lists, then fill them in rule order (so each is ascending). */
static int htab_build(struct htab *t, const struct rule *rules, size_t n, enum rule_kind kind)
{
    size_t keys = 0, size = 8, total = 0;

    for (size_t i = 0; i < n; i++)
        keys += rules[i].kind == kind;
    if (keys == 0)
        return 0;
    while (size < keys * 2)
        size *= 2;
    t->slots = calloc(size, sizeof(*t->slots));
    t->cand = malloc(keys * sizeof(*t->cand));
    if (t->slots == NULL || t->cand == NULL)
        return -1;
    t->mask = size - 1;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (rules[i].kind != kind)
                continue;
            uint64_t h = hash_rev(rules[i].host, rules[i].host_len);
            struct hslot *s = htab_slot(t, h, rules[i].host, rules[i].host_len);
            if (s->key == NULL) {
                s->hash = h;
                s->key = rules[i].host;
                s->len = (uint32_t)rules[i].host_len;
            }
            if (pass == 1)
                t->cand[s->cand_off + s->n_cand] = (int32_t)i;
            s->n_cand++;
        }
        if (pass == 1)
            break;
        for (size_t j = 0; j < size; j++) {
            t->slots[j].cand_off = (uint32_t)total;
            total += t->slots[j].n_cand;
            t->slots[j].n_cand = 0;
        }
    }
    return 0;
}

static int32_t trie_node(struct tbuild *t)
{
    if (t->n_nodes == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct tnode *nodes = realloc(t->nodes, cap * sizeof(*nodes));
        if (nodes == NULL)
            return -1;
        t->nodes = nodes;
        t->cap = cap;
    }
    t->nodes[t->n_nodes] = (struct tnode){.min_idx = INT32_MAX};
    return (int32_t)t->n_nodes++;
}

static unsigned addr_bit(const uint8_t *a, unsigned i)
{
    return (a[i >> 3] >> (7 - (i & 7))) & 1u;
}

static void set_bit(uint8_t *a, unsigned i, unsigned b)
{
    uint8_t m = (uint8_t)(0x80u >> (i & 7));

    a[i >> 3] = (uint8_t)(b ? a[i >> 3] | m : a[i >> 3] & ~m);
}

/* Whether a and k agree on their first depth bits. */
static bool prefix_eq(const uint8_t *a, const uint8_t *k, unsigned depth)
{
    unsigned full = depth >> 3, rest = depth & 7;

    if (memcmp(a, k, full) != 0)
        return false;
    return rest == 0 || ((a[full] ^ k[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

/* Copies the subtree of src node s (at depth, its prefix in key) into t,
 * skipping chains; returns the new node's index or -1. Pre-order, so the
 * root lands at index 0. Recursion is at most 129 deep. */
static int32_t trie_compress(struct trie *t, const struct tnode *src, int32_t s, unsigned depth,
                             uint8_t *key, bool root)
{
    while (!root && src[s].n_cand == 0 && (src[s].child[0] == 0) != (src[s].child[1] == 0)) {
        unsigned b = src[s].child[1] != 0;
        set_bit(key, depth++, b);
        s = src[s].child[b];
    }
    if (t->n_nodes == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct cnode *nodes = realloc(t->nodes, cap * sizeof(*nodes));
        if (nodes == NULL)
            return -1;
        t->nodes = nodes;
        uint8_t(*keys)[16] = realloc(t->keys, cap * sizeof(*keys));
        if (keys == NULL)
            return -1;
        t->keys = keys;
        t->cap = cap;
    }
    int32_t idx = (int32_t)t->n_nodes++;
    t->nodes[idx] = (struct cnode){.min_idx = src[s].min_idx,
                                   .n_cand = src[s].n_cand,
                                   .cand_off = src[s].cand_off,
                                   .depth = depth};
    memcpy(t->keys[idx], key, 16);
    for (unsigned k = depth; k < 128; k++)
        set_bit(t->keys[idx], k, 0);
    for (unsigned b = 0; b < 2; b++) {
        if (src[s].child[b] == 0)
            continue;
        set_bit(key, depth, b);
        int32_t ci = trie_compress(t, src, src[s].child[b], depth + 1, key, false);
        if (ci < 0)
            return -1;
        t->nodes[idx].child[b] = ci;
    }
    return idx;
}

/* Builds the one-bit tree in the same two passes as htab_build (so each
 * node's rules are ascending), then compresses it into t. */
static int trie_build(struct trie *t, const struct rule *rules, size_t n, enum rule_kind kind)
{
    struct tbuild bt = {0};
    size_t count = 0, total = 0;
    uint8_t key[16] = {0};
    int rc = -1;

    for (size_t i = 0; i < n; i++)
        count += rules[i].kind == kind;
    if (count == 0)
        return 0;
    t->cand = malloc(count * sizeof(*t->cand));
    if (t->cand == NULL || trie_node(&bt) < 0)
        goto out_free_bt;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (rules[i].kind != kind)
                continue;
            int32_t cur = 0;
            for (unsigned d = 0;; d++) {
                /* Rules come in ascending order: the first to pass by is the minimum. */
                if (bt.nodes[cur].min_idx == INT32_MAX)
                    bt.nodes[cur].min_idx = (int32_t)i;
                if (d == rules[i].plen)
                    break;
                unsigned b = addr_bit(rules[i].addr, d);
                if (bt.nodes[cur].child[b] == 0) {
                    int32_t nn = trie_node(&bt);
                    if (nn < 0)
                        goto out_free_bt;
                    bt.nodes[cur].child[b] = nn;
                }
                cur = bt.nodes[cur].child[b];
            }
            if (pass == 1)
                t->cand[bt.nodes[cur].cand_off + bt.nodes[cur].n_cand] = (int32_t)i;
            bt.nodes[cur].n_cand++;
        }
        if (pass == 1)
            break;
        for (size_t j = 0; j < bt.n_nodes; j++) {
            bt.nodes[j].cand_off = (uint32_t)total;
            total += bt.nodes[j].n_cand;
            bt.nodes[j].n_cand = 0;
        }
    }
    if (trie_compress(t, bt.nodes, 0, 0, key, true) == 0)
        rc = 0;
out_free_bt:
    free(bt.nodes);
    return rc;
}

struct egress_rules *egress_rules_compile(const struct egress_rule_spec *rules, size_t n, char *err,
                                          size_t errlen)
{
    struct egress_rules *r;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (n > 0 && rules == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "no rules given");
        return NULL;
    }
    /* Indices travel as int and the tables store 32-bit offsets. */
    if (n >= INT32_MAX) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "too many rules (%zu)", n);
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto out_nomem;
    r->rules = calloc(n ? n : 1, sizeof(*r->rules));
    if (r->rules == NULL)
        goto out_nomem;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        if (compile_rule(&r->rules[i], &rules[i], err, errlen, i) < 0)
            goto out_free;
        if (r->rules[i].kind == RULE_WILD) {
            size_t labels = 1;
            for (size_t k = 0; k < r->rules[i].host_len; k++)
                labels += r->rules[i].host[k] == '.';
            r->wild_labels |= 1ull << label_bit(labels);
        }
    }
    if (htab_build(&r->exact, r->rules, n, RULE_EXACT) < 0 ||
        htab_build(&r->wild, r->rules, n, RULE_WILD) < 0 ||
        trie_build(&r->v4, r->rules, n, RULE_CIDR4) < 0 ||
        trie_build(&r->v6, r->rules, n, RULE_CIDR6) < 0)
        goto out_nomem;
    return r;

out_nomem:
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "out of memory");
out_free:
    egress_rules_free(r);
    return NULL;
}

void egress_rules_free(struct egress_rules *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; r->rules != NULL && i < r->n; i++) {
        struct rule *ru = &r->rules[i];
        free(ru->name);
        free(ru->host);
        free(ru->ports);
        for (size_t k = 0; ru->paths != NULL && k < ru->n_paths; k++)
            free(ru->paths[k]);
        free(ru->paths);
        free(ru->path_lens);
    }
    free(r->rules);
    free(r->exact.slots);
    free(r->exact.cand);
    free(r->wild.slots);
    free(r->wild.cand);
    free(r->v4.nodes);
    free(r->v4.keys);
    free(r->v4.cand);
    free(r->v6.nodes);
    free(r->v6.keys);
    free(r->v6.cand);
    free(r);
}

/* ---- match ------------------------------------------------------------ */

struct query {
    uint16_t port;
    unsigned method;
    const char *path; /* NULL: CONNECT */
    size_t path_len;
};

static bool rule_allows(const struct rule *ru, const struct query *q)
{
    bool port_ok = false;

    for (size_t k = 0; k < ru->n_ports; k++) {
        if (ru->ports[k] == q->port) {
            port_ok = true;
            break;
        }
    }
    if (!port_ok)
        return false;
    if (q->path == NULL)
        return ru->methods == 0 && ru->n_paths == 0;
    if (ru->methods != 0 && (ru->methods & q->method) == 0)
        return false;
    if (ru->n_paths == 0)
        return true;
    for (size_t k = 0; k < ru->n_paths; k++) {
        if (ru->path_lens[k] <= q->path_len && memcmp(ru->paths[k], q->path, ru->path_lens[k]) == 0)
            return true;
    }
    return false;
}

/* The first of cand[0..n) below best that allows q, else best. */
static int32_t first_allowed(const struct egress_rules *r, const int32_t *cand, uint32_t n,
                             int32_t best, const struct query *q)
{
    for (uint32_t k = 0; k < n && cand[k] < best; k++) {
        if (rule_allows(&r->rules[cand[k]], q))
            return cand[k];
    }
    return best;
}

int egress_rules_match_host(const struct egress_rules *r, const char *host, size_t len,
                            uint16_t port, unsigned method, const char *path, size_t path_len)
{
    const struct query q = {port, method, path, path_len};
    int32_t best = INT32_MAX;
    uint64_t h = FNV_OFFSET;
    size_t labels = 1;

    if (r == NULL || host == NULL || len == 0)
        return -1;
    for (size_t i = len; i-- > 0;) {
        h = (h ^ (uint8_t)host[i]) * FNV_PRIME;
        /* h now covers host[i..len). It is a wildcard's suffix when a dot
         * precedes it and at least one byte precedes the dot: "*.b.c"
         * matches "a.b.c", never "b.c" nor ".b.c". */
        if (i >= 2 && host[i - 1] == '.') {
            if (r->wild.slots != NULL && (r->wild_labels >> label_bit(labels) & 1)) {
                const struct hslot *s = htab_slot(&r->wild, h, host + i, len - i);
                if (s->key != NULL)
                    best = first_allowed(r, r->wild.cand + s->cand_off, s->n_cand, best, &q);
            }
            labels++;
        }
    }
    if (r->exact.slots != NULL) {
        const struct hslot *s = htab_slot(&r->exact, h, host, len);
        if (s->key != NULL)
            best = first_allowed(r, r->exact.cand + s->cand_off, s->n_cand, best, &q);
    }
    return best == INT32_MAX ? -1 : best;
}

int egress_rules_match_addr(const struct egress_rules *r, int family, const uint8_t *addr,
                            uint16_t port, unsigned method, const char *path, size_t path_len)
{
    const struct query q = {port, method, path, path_len};
    const struct trie *t;
    unsigned bits;
    int32_t best = INT32_MAX, cur = 0;

    if (r == NULL || addr == NULL)
        return -1;
    if (family == AF_INET) {
        t = &r->v4;
        bits = 32;
    } else if (family == AF_INET6) {
        t = &r->v6;
        bits = 128;
    } else {
        return -1;
    }
    if (t->n_nodes == 0)
        return -1;
    for (;;) {
        const struct cnode *nd = &t->nodes[cur];
        /* Nothing below here can come before what was found. */
        if (nd->min_idx >= best)
            break;
        if (nd->n_cand > 0)
            best = first_allowed(r, t->cand + nd->cand_off, nd->n_cand, best, &q);
        if (nd->depth == bits)
            break;
        cur = nd->child[addr_bit(addr, nd->depth)];
        if (cur == 0)
            break;
        /* The bits skipped on the way down must agree too; a child one bit
         * deeper skipped none, which is the common case near the root. */
        const struct cnode *c = &t->nodes[cur];
        if (c->depth > nd->depth + 1 && !prefix_eq(addr, t->keys[cur], c->depth))
            break;
    }
    return best == INT32_MAX ? -1 : best;
}

const char *egress_rules_name(const struct egress_rules *r, int idx)
{
    if (r == NULL || idx < 0 || (size_t)idx >= r->n)
        return NULL;
    return r->rules[idx].name;
}

size_t egress_rules_count(const struct egress_rules *r)
{
    return r == NULL ? 0 : r->n;
}

/* One segment, without its ";params": "." or ".." once %2e is read as '.'. */
static bool dot_segment(const char *s, size_t n)
{
    size_t dots = 0;

    for (size_t i = 0; i < n && s[i] != ';';) {
        if (s[i] == '.') {
            i++;
        } else if (s[i] == '%' && i + 2 < n && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'e') {
            i += 3;
        } else {
            return false;
        }
        dots++;
    }
    return dots == 1 || dots == 2;
}

bool egress_path_ambiguous(const char *path, size_t len)
{
    size_t start = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] == '\\')
            return true;
        if (i + 2 < len && path[i] == '%') {
            char a = path[i + 1], b = (char)(path[i + 2] | 0x20);
            if ((a == '2' && b == 'f') || (a == '5' && b == 'c'))
                return true;
        }
        if (i == len || path[i] == '/') {
            if (i > start && dot_segment(path + start, i - start))
                return true;
            start = i + 1;
        }
    }
    return false;
}
