/*
 * egress_addr.c - owns the canonical form of an egress destination
 * (authority text to host and port) and the classification of IP addresses
 * for deny_private. The rules and the choices behind them are in
 * egress_addr.h; this file says why each check sits where it does.
 *
 * Pure: no I/O, no allocation. The input is never read past len: every
 * libc parser gets a bounded, NUL-terminated copy.
 */
#include "egress_addr.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#define HOST_MAX 253   /* RFC 1035 2.3.4, without the trailing dot */
#define LABEL_MAX 63   /* RFC 1035 2.3.4 */
#define V6_TEXT_MAX 45 /* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" */
#define V4_TEXT_MAX 15 /* "255.255.255.255" */

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static unsigned char to_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Bytes refused anywhere in an authority, whichever part they fall in:
 * controls, space, non-ASCII, and the delimiters that would make another
 * parser see a different host ('@' userinfo, '%' escapes, '/', '\\', '#',
 * '?') or misplaced brackets. Refusing them before anything is split means
 * "user:pass@host" cannot reach the port parser in pieces. */
static bool is_never_char(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f || c == '@' || c == '%' || c == '/' || c == '\\' || c == '#' ||
           c == '?' || c == '[' || c == ']';
}

/* The bytes a host name may hold; the rest of ASCII is BAD_CHAR in a host
 * and BAD_PORT in a port. */
static bool is_host_char(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

/* Decimal 1..65535 without sign or leading zero (see the header). */
static int parse_port(const char *p, size_t n, uint16_t *port)
{
    unsigned v = 0;

    if (n == 0 || n > 5 || p[0] == '0')
        return EGRESS_T_BAD_PORT;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)p[i]))
            return EGRESS_T_BAD_PORT;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535)
        return EGRESS_T_BAD_PORT;
    *port = (uint16_t)v;
    return EGRESS_T_OK;
}

/* The port after the host: rest is what follows the host ("" or ":N"). */
static int parse_rest(const char *rest, size_t n, uint16_t default_port, uint16_t *port)
{
    if (n == 0) {
        if (default_port == 0)
            return EGRESS_T_BAD_PORT;
        *port = default_port;
        return EGRESS_T_OK;
    }
    if (rest[0] != ':')
        return EGRESS_T_BAD_PORT;
    return parse_port(rest + 1, n - 1, port);
}

/* "[v6]" and what follows; a is the whole authority, rb the index of ']'. */
static int parse_bracketed(const char *a, size_t len, size_t rb, uint16_t default_port,
                           struct egress_target *t)
{
    char text[V6_TEXT_MAX + 1];
    size_t n = rb - 1;
    int err;

    if (n == 0)
        return EGRESS_T_EMPTY;
    if (n > V6_TEXT_MAX)
        return EGRESS_T_BAD_IPV6;
    memcpy(text, a + 1, n);
    text[n] = '\0';
    /* glibc's inet_pton refuses zone ids ('%'), IPv4 tails with leading
     * zeros or short forms, and groups over four hex digits. */
    if (inet_pton(AF_INET6, text, t->addr) != 1)
        return EGRESS_T_BAD_IPV6;
    err = parse_rest(a + rb + 1, len - rb - 1, default_port, &t->port);
    if (err != EGRESS_T_OK)
        return err;
    if (!inet_ntop(AF_INET6, t->addr, t->host, sizeof(t->host)))
        return EGRESS_T_BAD_IPV6;
    t->host_len = strlen(t->host);
    t->is_ip = true;
    t->family = AF_INET6;
    return EGRESS_T_OK;
}

/* Whether the last label reads as a number to a lenient IPv4 parser:
 * it starts with a digit and holds only hex digits and 'x' ("127", "0x7f",
 * "1e100"). Such a host must then be a strict dotted quad. */
static bool looks_numeric(const char *label, size_t n)
{
    if (n == 0 || !is_digit((unsigned char)label[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)label[i];
        if (!is_hex(c) && c != 'x' && c != 'X')
            return false;
    }
    return true;
}

/* A host name or IPv4 literal, the trailing dot already dropped; every byte
 * has passed is_host_char(). */
static int parse_name(const char *h, size_t n, struct egress_target *t)
{
    size_t start = 0;

    if (n == 0)
        return EGRESS_T_EMPTY;
    if (n > HOST_MAX)
        return EGRESS_T_TOO_LONG;
    /* Labels: i == n closes the last one. */
    for (size_t i = 0; i <= n; i++) {
        if (i < n && h[i] != '.')
            continue;
        size_t ln = i - start;
        if (ln == 0)
            return EGRESS_T_BAD_LABEL;
        if (ln > LABEL_MAX)
            return EGRESS_T_TOO_LONG;
        if (h[start] == '-' || h[i - 1] == '-')
            return EGRESS_T_BAD_LABEL;
        if (i == n && looks_numeric(h + start, ln)) {
            char text[V4_TEXT_MAX + 1];

            /* inet_pton(AF_INET) takes only a full dotted quad with no
             * leading zeros: exactly the one spelling we accept. */
            if (n > V4_TEXT_MAX)
                return EGRESS_T_NUMERIC;
            memcpy(text, h, n);
            text[n] = '\0';
            if (inet_pton(AF_INET, text, t->addr) != 1)
                return EGRESS_T_NUMERIC;
            if (!inet_ntop(AF_INET, t->addr, t->host, sizeof(t->host)))
                return EGRESS_T_NUMERIC;
            t->host_len = strlen(t->host);
            t->is_ip = true;
            t->family = AF_INET;
            return EGRESS_T_OK;
        }
        start = i + 1;
    }
    for (size_t i = 0; i < n; i++)
        t->host[i] = (char)to_lower((unsigned char)h[i]);
    t->host[n] = '\0';
    t->host_len = n;
    return EGRESS_T_OK;
}

static int parse(const char *a, size_t len, uint16_t default_port, struct egress_target *t)
{
    bool bracketed = len > 0 && a[0] == '[';
    const char *rbp = bracketed ? memchr(a, ']', len) : NULL;
    size_t rb = rbp ? (size_t)(rbp - a) : len;
    size_t colons = 0, colon = len;
    bool v6ish = true; /* only hex digits, ':' and '.' */
    size_t hn;
    int err;

    if (len == 0)
        return EGRESS_T_EMPTY;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)a[i];

        if (bracketed && (i == 0 || i == rb))
            continue;
        /* A zone id inside brackets is a bad IPv6 address, not a stray
         * byte: inet_pton refuses it below. */
        if (c == '%' && bracketed && i < rb)
            continue;
        if (is_never_char(c))
            return EGRESS_T_BAD_CHAR;
        if (bracketed)
            continue;
        if (c == ':') {
            if (colons++ == 0)
                colon = i;
            continue;
        }
        if (colons == 0 && !is_host_char(c))
            return EGRESS_T_BAD_CHAR;
        if (!is_hex(c) && c != '.')
            v6ish = false;
    }
    if (bracketed) {
        if (!rbp)
            return EGRESS_T_BAD_IPV6;
        return parse_bracketed(a, len, rb, default_port, t);
    }
    if (colons >= 2 && v6ish)
        return EGRESS_T_BAD_IPV6;

    hn = colon;
    if (hn > 0 && a[hn - 1] == '.') {
        hn--;
        /* "." alone: nothing but the root was named. */
        if (hn == 0)
            return EGRESS_T_EMPTY;
        /* A second trailing dot is an empty label, not one more root. */
        if (a[hn - 1] == '.')
            return EGRESS_T_BAD_LABEL;
    }
    err = parse_name(a, hn, t);
    if (err != EGRESS_T_OK)
        return err;
    return parse_rest(a + colon, len - colon, default_port, &t->port);
}

int egress_target_parse(const char *authority, size_t len, uint16_t default_port,
                        struct egress_target *t)
{
    int err;

    memset(t, 0, sizeof(*t));
    if (!authority)
        len = 0;
    err = parse(authority, len, default_port, t);
    /* No half-filled target: a caller that ignores the error still cannot
     * dial what was refused. */
    if (err != EGRESS_T_OK)
        memset(t, 0, sizeof(*t));
    return err;
}

const char *egress_target_error_name(int e)
{
    static const char *const names[EGRESS_T__N] = {
        [EGRESS_T_OK] = "ok",
        [EGRESS_T_EMPTY] = "empty_host",
        [EGRESS_T_TOO_LONG] = "too_long",
        [EGRESS_T_BAD_CHAR] = "bad_char",
        [EGRESS_T_BAD_LABEL] = "bad_label",
        [EGRESS_T_NUMERIC] = "numeric_host",
        [EGRESS_T_BAD_PORT] = "bad_port",
        [EGRESS_T_BAD_IPV6] = "bad_ipv6",
    };

    if (e < 0 || e >= EGRESS_T__N)
        return "unknown";
    return names[e];
}

static enum egress_addr_class classify_v4(const uint8_t *a)
{
    if (a[0] == 0)
        return EGRESS_A_UNSPECIFIED;
    if (a[0] == 10)
        return EGRESS_A_PRIVATE;
    if (a[0] == 100 && (a[1] & 0xc0) == 64)
        return EGRESS_A_CGNAT;
    if (a[0] == 127)
        return EGRESS_A_LOOPBACK;
    if (a[0] == 169 && a[1] == 254)
        return EGRESS_A_LINK_LOCAL;
    if (a[0] == 172 && (a[1] & 0xf0) == 16)
        return EGRESS_A_PRIVATE;
    if (a[0] == 192 && a[1] == 168)
        return EGRESS_A_PRIVATE;
    if (a[0] == 192 && a[1] == 0 && (a[2] == 0 || a[2] == 2))
        return EGRESS_A_RESERVED;
    if (a[0] == 198 && (a[1] & 0xfe) == 18)
        return EGRESS_A_RESERVED;
    if (a[0] == 198 && a[1] == 51 && a[2] == 100)
        return EGRESS_A_RESERVED;
    if (a[0] == 203 && a[1] == 0 && a[2] == 113)
        return EGRESS_A_RESERVED;
    if ((a[0] & 0xf0) == 224)
        return EGRESS_A_MULTICAST;
    if (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255)
        return EGRESS_A_BROADCAST;
    if ((a[0] & 0xf0) == 240)
        return EGRESS_A_RESERVED;
    return EGRESS_A_PUBLIC;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* The IPv4 address at the given byte offsets of a, classified. */
static enum egress_addr_class classify_at(const uint8_t *a, int i0, int i1, int i2, int i3)
{
    const uint8_t v4[4] = {a[i0], a[i1], a[i2], a[i3]};

    return classify_v4(v4);
}

/* 64:ff9b:1::/48 (RFC 8215) leaves the prefix length to the operator, so the
 * IPv4 address may sit where RFC 6052 puts it for a /96, /64, /56 or /48
 * (byte 8, "u", is always skipped), and a translator ignores the suffix
 * bits after it. Any embedding that names a non-public address makes the
 * whole address non-public: failing closed costs a cidr rule, failing open
 * costs an SSRF. One exception keeps the plain 64:ff9b:1::/96 usable: the
 * shorter embeddings then read the prefix's zero bytes as 0.0.0.0/8, which
 * no translator forwards to, so "unspecified" from them is not a finding.
 * The first other non-public class wins; else the /96 reading decides. */
static enum egress_addr_class classify_nat64_local(const uint8_t *a)
{
    const enum egress_addr_class c[4] = {
        classify_at(a, 12, 13, 14, 15), /* /96 */
        classify_at(a, 9, 10, 11, 12),  /* /64 */
        classify_at(a, 7, 9, 10, 11),   /* /56 */
        classify_at(a, 6, 7, 9, 10),    /* /48 */
    };

    for (int i = 0; i < 4; i++)
        if (c[i] != EGRESS_A_PUBLIC && c[i] != EGRESS_A_UNSPECIFIED)
            return c[i];
    return c[0];
}

static enum egress_addr_class classify_v6(const uint8_t *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

    if (all_zero(a, 12)) {
        if (all_zero(a + 12, 3) && a[15] <= 1)
            return a[15] ? EGRESS_A_LOOPBACK : EGRESS_A_UNSPECIFIED;
        return classify_v4(a + 12); /* IPv4-compatible, deprecated but routable by some */
    }
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return classify_v4(a + 12);
    if (memcmp(a, nat64, 4) == 0 && a[4] == 0 && a[5] == 1)
        return classify_nat64_local(a);
    if (a[0] == 0x20 && a[1] == 0x02) /* 6to4: the relay forwards to the IPv4 in bytes 2..5 */
        return classify_v4(a + 2);
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) {
        /* Teredo: the client's IPv4 is stored inverted (RFC 4380 4). */
        const uint8_t v4[4] = {(uint8_t)~a[12], (uint8_t)~a[13], (uint8_t)~a[14], (uint8_t)~a[15]};
        return classify_v4(v4);
    }
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
        return EGRESS_A_RESERVED;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return EGRESS_A_LINK_LOCAL;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
        return EGRESS_A_RESERVED;
    if ((a[0] & 0xfe) == 0xfc)
        return EGRESS_A_UNIQUE_LOCAL;
    if (a[0] == 0xff)
        return EGRESS_A_MULTICAST;
    return EGRESS_A_PUBLIC;
}

enum egress_addr_class egress_addr_classify(int family, const uint8_t *addr)
{
    if (!addr)
        return EGRESS_A_RESERVED;
    if (family == AF_INET)
        return classify_v4(addr);
    if (family == AF_INET6)
        return classify_v6(addr);
    return EGRESS_A_RESERVED;
}

const char *egress_addr_class_name(enum egress_addr_class c)
{
    static const char *const names[EGRESS_A__N] = {
        [EGRESS_A_PUBLIC] = "public",           [EGRESS_A_LOOPBACK] = "loopback",
        [EGRESS_A_PRIVATE] = "private",         [EGRESS_A_CGNAT] = "cgnat",
        [EGRESS_A_LINK_LOCAL] = "link_local",   [EGRESS_A_UNIQUE_LOCAL] = "unique_local",
        [EGRESS_A_MULTICAST] = "multicast",     [EGRESS_A_BROADCAST] = "broadcast",
        [EGRESS_A_UNSPECIFIED] = "unspecified", [EGRESS_A_RESERVED] = "reserved",
    };

    if ((int)c < 0 || c >= EGRESS_A__N)
        return "unknown";
    return names[c];
}

bool egress_addr_is_private(enum egress_addr_class c)
{
    return c != EGRESS_A_PUBLIC;
}
