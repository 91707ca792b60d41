/*
 * bench_egress.c - what an egress decision costs with 10,000 rules:
 * egress_rules_match_host() over exact hosts and over wildcards, and
 * egress_rules_match_addr() over IPv4 and IPv6 CIDRs, each for hits and
 * misses, then a mixed set. Queries cycle through 8192 precomputed ones
 * in random order, so that neither the branch predictor nor one hot cache
 * line answers for the table. Prints ns per decision; asserts nothing.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "egress_rules.h"
#include "micro.h"

#define NRULES 10000
#define NQ 8192
#define ROUNDS 2000000

static const uint16_t port443[] = {443};

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)((rng >> 16) % n);
}

struct q {
    char host[48];
    size_t len;
    int af; /* 0: a host query */
    uint8_t addr[16];
};

static struct egress_rule_spec specs[NRULES];
static char texts[NRULES][48];
static struct q qs[NQ];
static volatile int sink;

static void mask(uint8_t *a, unsigned plen, size_t nbytes)
{
    for (size_t b = 0; b < nbytes; b++) {
        unsigned keep = plen >= (b + 1) * 8 ? 8 : plen > b * 8 ? (unsigned)(plen - b * 8) : 0;
        a[b] &= (uint8_t)(0xff00u >> keep);
    }
}

/* Rule i of a kind: 'e' exact host, 'w' wildcard, '4' and '6' cidrs. */
static void make_rule(size_t i, char kind, uint8_t *net, unsigned *plen)
{
    struct egress_rule_spec *s = &specs[i];

    memset(s, 0, sizeof(*s));
    s->name = "r";
    s->ports = port443;
    s->n_ports = 1;
    if (kind == 'e') {
        snprintf(texts[i], sizeof(texts[i]), "api%zu.svc%zu.example.com", i, i % 97);
        s->host = texts[i];
    } else if (kind == 'w') {
        snprintf(texts[i], sizeof(texts[i]), "*.bucket%zu.s3.example.com", i);
        s->host = texts[i];
    } else {
        size_t nb = kind == '4' ? 4 : 16;
        for (size_t k = 0; k < nb; k++)
            net[k] = (uint8_t)rnd(256);
        if (kind == '4') {
            net[0] = 10;
            *plen = 24 + rnd(9);
        } else {
            net[0] = 0x20, net[1] = 0x01, net[2] = 0x0d, net[3] = 0xb8;
            *plen = 40 + rnd(89);
        }
        mask(net, *plen, nb);
        inet_ntop(kind == '4' ? AF_INET : AF_INET6, net, texts[i], sizeof(texts[i]));
        snprintf(texts[i] + strlen(texts[i]), 8, "/%u", *plen);
        s->cidr = texts[i];
    }
}

static uint8_t nets[NRULES][16];
static unsigned plens[NRULES];
static char kinds[NRULES];

static struct egress_rules *build(const char *mix)
{
    char err[256];
    size_t nk = strlen(mix);

    for (size_t i = 0; i < NRULES; i++) {
        kinds[i] = mix[i % nk];
        make_rule(i, kinds[i], nets[i], &plens[i]);
    }
    struct egress_rules *r = egress_rules_compile(specs, NRULES, err, sizeof(err));
    if (r == NULL) {
        fprintf(stderr, "compile: %s\n", err);
        exit(1);
    }
    return r;
}

static int decide(const struct egress_rules *r, const struct q *q)
{
    if (q->af == 0)
        return egress_rules_match_host(r, q->host, q->len, 443, CFG_M_GET, "/", 1);
    return egress_rules_match_addr(r, q->af, q->addr, 443, CFG_M_GET, "/", 1);
}

/* One query that should hit (or miss) a rule of kind; misses are checked
 * so that "miss" figures are not hits in disguise. */
static void make_query(const struct egress_rules *r, struct q *q, char kind, int hit)
{
    for (;;) {
        size_t i = rnd(NRULES);
        if (kinds[i] != kind)
            continue;
        memset(q, 0, sizeof(*q));
        if (kind == 'e') {
            snprintf(q->host, sizeof(q->host), "api%zu.svc%zu.example.com", i, hit ? i % 97 : 97);
        } else if (kind == 'w') {
            snprintf(q->host, sizeof(q->host), "%s.bucket%zu.s3.example.com",
                     rnd(2) ? "obj" : "a.b", hit ? i : i + NRULES);
        } else {
            size_t nb = kind == '4' ? 4 : 16;
            q->af = kind == '4' ? AF_INET : AF_INET6;
            memcpy(q->addr, nets[i], nb);
            /* A hit keeps the network and randomises the host part; a miss
             * is an address no rule covers inside the range the rules
             * share (10/8, 2001:db8::/32), so the walk goes deep. */
            for (unsigned b = hit ? plens[i] : nb == 4 ? 8 : 32; b < nb * 8; b++)
                if (rnd(2))
                    q->addr[b >> 3] ^= (uint8_t)(0x80u >> (b & 7));
        }
        q->len = strlen(q->host);
        if ((decide(r, q) >= 0) == hit)
            return;
    }
}

static void run(const char *label, const struct egress_rules *r, const char *kinds_q, int hit)
{
    size_t nk = strlen(kinds_q);
    unsigned found = 0;

    for (size_t i = 0; i < NQ; i++)
        make_query(r, &qs[i], kinds_q[i % nk], hit < 0 ? (int)rnd(2) : hit);
    MICRO_MEASURE(label, "decision", 1, ROUNDS, {
        for (size_t k = 0; k < ROUNDS; k++)
            found += decide(r, &qs[k & (NQ - 1)]) >= 0;
    });
    sink = (int)found;
}

int main(void)
{
    struct egress_rules *r;

    printf("egress_rules, %d rules per set, port 443, GET /\n", NRULES);
    r = build("e");
    run("exact hosts, hit", r, "e", 1);
    run("exact hosts, miss", r, "e", 0);
    egress_rules_free(r);

    r = build("w");
    run("wildcards, hit", r, "w", 1);
    run("wildcards, miss", r, "w", 0);
    egress_rules_free(r);

    r = build("4");
    run("ipv4 cidrs /24../32, hit", r, "4", 1);
    run("ipv4 cidrs /24../32, miss", r, "4", 0);
    egress_rules_free(r);

    r = build("6");
    run("ipv6 cidrs /40../128, hit", r, "6", 1);
    run("ipv6 cidrs /40../128, miss", r, "6", 0);
    egress_rules_free(r);

    r = build("ew46");
    run("mixed (2,500 of each), half hits", r, "ew46", -1);
    egress_rules_free(r);
    return 0;
}
