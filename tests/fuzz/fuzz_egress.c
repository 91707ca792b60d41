/*
 * fuzz_egress.c - libFuzzer target for the egress guard: a request target
 * canonicalised (egress_addr.h), decided against a fixed rule set with
 * deny_private on (egress.h, egress_rules.h), then each address the name
 * "resolved" to, called as proxy/forward.c calls them: CONNECT's authority
 * with no default port, an absolute-form URL's authority (after "http://",
 * up to '/' or '?'; no port: 80) with its path (up to '?', "/" when empty),
 * a path rule refusing ambiguous paths, and IP literals checked as their own
 * only address.
 *
 * Input: [flags][method][n][n bytes of target][addresses...]. flags & 1:
 * CONNECT, the target is the authority; else "http://" + target. method
 * picks a CFG_M_* bit (or 0, unknown). Each address is [family byte][4 or
 * 16 bytes]: family & 1 is IPv6; & 2 makes an IPv6 one IPv4-mapped (the
 * 4 bytes read are put after ::ffff:).
 *
 * The target abort()s when:
 *   - an address the reference check below calls private (10/8,
 *     172.16/12, 192.168/16, 127/8, 169.254/16, 0/8, 100.64/10, ::1,
 *     fc00::/7, fe80::/10, and those in ::ffff:0:0/96) is not private for
 *     egress_addr_classify;
 *   - an address private for either is allowed while no cidr rule of the
 *     fixed set covers it with the port, method and path (that coverage is
 *     computed here too, independently of egress_rules);
 *   - a canonical target does not parse back to itself ("host:port", IPv6
 *     in brackets), has upper case or a trailing dot, or is_ip disagrees
 *     with inet_pton on its host.
 *
 * With flags & 0x80 the input is instead [flags][cut][ClientHello bytes]
 * for the capture listener's SNI parser (sni.h), whose name then goes
 * through the CONNECT path above as "name:443". It abort()s when a name
 * it returns is empty, longer than SNI_NAME_MAX or has a byte other than
 * letters, digits, '-', '_' and '.'; or when a prefix of the input (cut
 * bytes shorter) answers anything but SNI_MORE or the whole input's
 * answer (with the same name).
 * `make fuzz`, and a short run in `make test`.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h" /* CFG_M_* */
#include "egress.h"
#include "sni.h"

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_egress: oracle violation: %s (%s:%d)\n", what, __FILE__,         \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const uint16_t p80[] = {80}, p443[] = {80, 443}, p8080[] = {8080}, p5432[] = {5432};
static const char *const v1[] = {"/v1/"}, *const health[] = {"/health"};

/* Host rules for names that could resolve anywhere, IP literals written as
 * host rules (a private one among them: only a cidr rule may name it), and
 * cidr rules for private and reserved ranges, some narrowed by method,
 * path or port. */
static const struct egress_rule_spec specs[] = {
    {.name = "api", .host = "api.example.com", .ports = p443, .n_ports = 2},
    {.name = "svc", .host = "*.svc.example.net", .ports = p8080, .n_ports = 1},
    {.name = "meta", .host = "metadata.example.com", .ports = p80, .n_ports = 1},
    {.name = "lit10", .host = "10.1.2.3", .ports = p80, .n_ports = 1},
    {.name = "lit6", .host = "::1", .ports = p80, .n_ports = 1},
    {.name = "docs",
     .host = "docs.example.org",
     .ports = p80,
     .n_ports = 1,
     .methods = CFG_M_GET,
     .paths = v1,
     .n_paths = 1},
    {.name = "db", .cidr = "10.20.0.0/16", .ports = p5432, .n_ports = 1},
    {.name = "ula", .cidr = "fd00:1234::/32", .ports = p443, .n_ports = 2},
    {.name = "doc", .cidr = "203.0.113.0/24", .ports = p80, .n_ports = 1},
    {.name = "lan",
     .cidr = "192.168.1.0/24",
     .ports = p8080,
     .n_ports = 1,
     .methods = CFG_M_GET,
     .paths = health,
     .n_paths = 1},
};
#define N_SPECS (sizeof(specs) / sizeof(specs[0]))

static struct egress_rules *rules;

/* ---- the reference, written apart from egress_addr.c and egress_rules.c */

static bool in_prefix(const uint8_t *a, const uint8_t *net, unsigned bits)
{
    for (unsigned i = 0; i < bits; i++) {
        unsigned m = 0x80u >> (i % 8);
        if ((a[i / 8] & m) != (net[i / 8] & m))
            return false;
    }
    return true;
}

static bool ref_private4(const uint8_t *a)
{
    return a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
           a[0] == 127 || (a[0] == 169 && a[1] == 254) || a[0] == 0 ||
           (a[0] == 100 && (a[1] & 0xc0) == 64);
}

static bool ref_private(int family, const uint8_t *a)
{
    static const uint8_t loop6[16] = {[15] = 1}, mapped[12] = {[10] = 0xff, [11] = 0xff};

    if (family == AF_INET)
        return ref_private4(a);
    if (memcmp(a, loop6, 16) == 0 || (a[0] & 0xfe) == 0xfc ||
        (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
        return true;
    return memcmp(a, mapped, 12) == 0 && ref_private4(a + 12);
}

/* Whether a cidr rule of specs covers addr (same family, or the IPv4 an
 * IPv4-mapped address carries) and allows port, method and path. */
static bool ref_cidr_allows(int family, const uint8_t *addr, uint16_t port, unsigned method,
                            const char *path, size_t path_len)
{
    static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};

    for (size_t r = 0; r < N_SPECS; r++) {
        const struct egress_rule_spec *s = &specs[r];
        char text[64];
        uint8_t net[16];
        const char *slash;
        int fam;
        bool covered = false, ok_port = false, ok_path;

        if (s->cidr == NULL)
            continue;
        slash = strchr(s->cidr, '/');
        snprintf(text, sizeof(text), "%.*s", (int)(slash - s->cidr), s->cidr);
        fam = strchr(text, ':') != NULL ? AF_INET6 : AF_INET;
        CHECK(inet_pton(fam, text, net) == 1, "a cidr of the rule set");
        if (fam == family)
            covered = in_prefix(addr, net, (unsigned)atoi(slash + 1));
        else if (fam == AF_INET && family == AF_INET6 && memcmp(addr, mapped, 12) == 0)
            covered = in_prefix(addr + 12, net, (unsigned)atoi(slash + 1));
        for (size_t i = 0; i < s->n_ports; i++)
            ok_port |= s->ports[i] == port;
        if (path == NULL) { /* CONNECT: no method or path can be seen */
            ok_path = s->methods == 0 && s->n_paths == 0;
        } else {
            ok_path = s->methods == 0 || (method & s->methods) != 0;
            if (ok_path && s->n_paths > 0) {
                bool any = false;
                for (size_t i = 0; i < s->n_paths; i++) {
                    size_t n = strlen(s->paths[i]);
                    any |= path_len >= n && memcmp(path, s->paths[i], n) == 0;
                }
                ok_path = any;
            }
        }
        if (covered && ok_port && ok_path)
            return true;
    }
    return false;
}

/* ---- the checks -------------------------------------------------------- */

static void check_canonical(const struct egress_target *t)
{
    char auth[300], tmp[64];
    uint8_t a[16];
    struct egress_target again;
    int n;

    CHECK(t->host_len > 0 && t->host_len < sizeof(t->host) && t->host[t->host_len] == '\0',
          "canonical host length");
    CHECK(t->host[t->host_len - 1] != '.', "canonical host ends in a dot");
    for (size_t i = 0; i < t->host_len; i++)
        CHECK(!(t->host[i] >= 'A' && t->host[i] <= 'Z'), "canonical host has upper case");
    bool v4 = inet_pton(AF_INET, t->host, a) == 1, v6 = inet_pton(AF_INET6, t->host, a) == 1;
    CHECK(t->is_ip == (v4 || v6), "is_ip and inet_pton disagree");
    if (t->is_ip) {
        CHECK(t->family == (v4 ? AF_INET : AF_INET6), "the family of an IP literal");
        CHECK(memcmp(a, t->addr, v4 ? 4 : 16) == 0, "the address of an IP literal");
        CHECK(inet_ntop(t->family, t->addr, tmp, sizeof(tmp)) != NULL && strcmp(tmp, t->host) == 0,
              "an IP literal not in inet_ntop form");
    }
    n = snprintf(auth, sizeof(auth), t->family == AF_INET6 ? "[%s]:%u" : "%s:%u", t->host,
                 (unsigned)t->port);
    CHECK(egress_target_parse(auth, (size_t)n, 0, &again) == EGRESS_T_OK,
          "a canonical target does not parse");
    CHECK(again.host_len == t->host_len && memcmp(again.host, t->host, t->host_len) == 0 &&
              again.port == t->port && again.is_ip == t->is_ip && again.family == t->family,
          "a canonical target parses to another");
}

static void check_addr(const struct egress_policy *pol, const struct egress_target *t,
                       const struct egress_decision *stage1, int family, const uint8_t *addr,
                       unsigned method, const char *path, size_t path_len)
{
    struct egress_decision d = *stage1;
    enum egress_addr_class cls = egress_addr_classify(family, addr);
    bool ref = ref_private(family, addr);

    CHECK(!ref || egress_addr_is_private(cls), "the classifier calls a private address public");
    egress_decide_addr(pol, t, family, addr, method, path, path_len, &d);
    if (d.deny != EGRESS_ALLOW)
        return;
    CHECK(stage1->deny == EGRESS_ALLOW, "stage 2 allowed what stage 1 denied");
    CHECK(d.rule >= 0 && (size_t)d.rule < N_SPECS, "allowed without a rule");
    if (ref || egress_addr_is_private(cls))
        CHECK(ref_cidr_allows(family, addr, t->port, method, path, path_len),
              "a private address allowed with deny_private and no cidr rule naming it");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];

    rules = egress_rules_compile(specs, N_SPECS, err, sizeof(err));
    if (rules == NULL) {
        fprintf(stderr, "fuzz_egress: %s\n", err);
        exit(1);
    }
    return 0;
}

static bool sni_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > SNI_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
              (name[i] >= '0' && name[i] <= '9') || name[i] == '-' || name[i] == '_' ||
              name[i] == '.'))
            return false;
    return true;
}

/* The capture listener's path: SNI, then the name decided as a CONNECT. */
static int fuzz_sni(const uint8_t *p, size_t n, uint8_t cut)
{
    char name[SNI_NAME_MAX + 1], pname[SNI_NAME_MAX + 1], auth[SNI_NAME_MAX + 8];
    enum sni_result r = sni_parse(p, n, name), pr;
    struct egress_policy pol = {.rules = rules, .deny_private = true};
    struct egress_target t;
    struct egress_decision d;

    if (r != SNI_OK)
        CHECK(name[0] == '\0', "a name with a result other than SNI_OK");
    if (cut > 0 && cut <= n) {
        pr = sni_parse(p, n - cut, pname);
        CHECK(pr == SNI_MORE || pr == r, "a prefix answered other than more or the whole's answer");
        if (pr == SNI_OK)
            CHECK(strcmp(pname, name) == 0, "a prefix found another name");
    }
    if (r != SNI_OK)
        return 0;
    CHECK(sni_name_ok(name), "a server name with a byte sni.h refuses, or a bad length");
    snprintf(auth, sizeof(auth), "%s:443", name);
    if (egress_target_parse(auth, strlen(auth), 0, &t) == EGRESS_T_OK)
        egress_decide_target(&pol, &t, 0, NULL, 0, &d);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned methods[] = {0,           CFG_M_GET,     CFG_M_HEAD,
                                       CFG_M_POST,  CFG_M_PUT,     CFG_M_DELETE,
                                       CFG_M_PATCH, CFG_M_OPTIONS, CFG_M_TRACE};
    struct egress_policy pol = {.rules = rules, .deny_private = true};
    struct egress_target t;
    struct egress_decision d;
    char target[7 + 256];
    const uint8_t *text;
    const char *auth, *path = NULL;
    size_t n, tlen, auth_len, path_len = 0, i;
    bool tunnel;
    unsigned method;
    int err;

    if (size >= 2 && (data[0] & 0x80))
        return fuzz_sni(data + 2, size - 2, data[1]);
    if (size < 3)
        return 0;
    tunnel = data[0] & 1;
    method = tunnel ? 0 : methods[data[1] % (sizeof(methods) / sizeof(methods[0]))];
    n = data[2];
    if (size < 3 + n)
        return 0;
    text = data + 3;
    data += 3 + n;
    size -= 3 + n;

    /* fwd_authority and fwd_path. */
    tlen = tunnel ? 0 : 7;
    memcpy(target, "http://", 7);
    memcpy(target + tlen, text, n);
    tlen += n;
    if (tunnel) {
        auth = target;
        auth_len = tlen;
    } else {
        if (memchr(target, '#', tlen) != NULL)
            return 0;
        for (i = 7; i < tlen && target[i] != '/' && target[i] != '?'; i++)
            ;
        auth = target + 7;
        auth_len = i - 7;
        for (n = 0; i + n < tlen && target[i + n] != '?'; n++)
            ;
        path = n > 0 ? target + i : "/";
        path_len = n > 0 ? n : 1;
    }

    /* fwd_begin. */
    err = egress_target_parse(auth, auth_len, 0, &t);
    if (err == EGRESS_T_BAD_PORT && !tunnel)
        err = egress_target_parse(auth, auth_len, 80, &t);
    if (err != EGRESS_T_OK)
        return 0;
    check_canonical(&t);
    /* The rule set has path rules: ambiguous paths are refused. */
    if (path != NULL && egress_path_ambiguous(path, path_len))
        return 0;
    egress_decide_target(&pol, &t, method, path, path_len, &d);

    /* Stage 2: the literal itself, then the addresses of the input, each
     * as a resolver answer for the name (the invariant holds for any). */
    if (t.is_ip)
        check_addr(&pol, &t, &d, t.family, t.addr, method, path, path_len);
    while (size > 0) {
        uint8_t a[16] = {0};
        int family = (data[0] & 1) ? AF_INET6 : AF_INET;
        size_t need = family == AF_INET6 && !(data[0] & 2) ? 16 : 4;

        if (size < 1 + need)
            break;
        if (family == AF_INET6 && need == 4) {
            a[10] = a[11] = 0xff;
            memcpy(a + 12, data + 1, 4);
        } else {
            memcpy(a, data + 1, need);
        }
        check_addr(&pol, &t, &d, family, a, method, path, path_len);
        data += 1 + need;
        size -= 1 + need;
    }
    return 0;
}
