/*
 * egress_addr.h - the pure first half of the egress guard: what a request's
 * destination is (its authority turned into one canonical host and port)
 * and what kind of address an IP is (for deny_private).
 *
 * Canonicalisation is strict on purpose. The guard decides on the text it
 * canonicalises here, but a resolver, a libc or an origin server may read
 * the same bytes differently (inet_aton takes "127.1" and "0x7f000001";
 * WHATWG URL parsers decode percent escapes; some parsers take "010" as
 * octal). Every spelling on which two readers could disagree is refused,
 * so the name that was checked is the name that is dialled.
 *
 * Choices beyond the rules on the API below:
 *  - Ports are decimal, 1..65535, without leading zeros: "08080" is
 *    refused (EGRESS_T_BAD_PORT) because a reader with strtol(..., 0)
 *    takes "010" as 8, and a canonical form has one spelling.
 *  - Host names take ASCII letters, digits, '-', '_' and '.' ('_' occurs
 *    in real DNS names and no parser reads it specially); IDNs must come
 *    punycoded ("xn--...").
 *  - A host whose last label starts with a digit and holds only hex digits
 *    and 'x' ("1e100", "0x7f", "127.1") must be a dotted-quad IPv4 that
 *    inet_pton accepts, else EGRESS_T_NUMERIC: no TLD starts with a digit,
 *    and such names are what lenient IPv4 parsers turn into addresses.
 *  - "." alone (only the root) is EGRESS_T_EMPTY; "[]" is EGRESS_T_EMPTY.
 *  - An unbracketed IPv6 literal ("::1", "fe80::1:443") is EGRESS_T_BAD_IPV6:
 *    without brackets its port cannot be told apart. "Looks like one" means
 *    two or more ':' and nothing but hex digits, ':' and '.' ("a:80:90"
 *    too); "host:80:90" is EGRESS_T_BAD_PORT.
 *  - The bytes listed under EGRESS_T_BAD_CHAR are refused wherever they
 *    are; other punctuation ('+', '*', ';' ...) is EGRESS_T_BAD_CHAR in a
 *    host name and EGRESS_T_BAD_PORT in a port.
 *  - What follows "]" must be ":port" or nothing, else EGRESS_T_BAD_PORT.
 *  - A trailing dot after an IPv4 literal is removed like any other
 *    ("127.0.0.1." is the IP 127.0.0.1, as browsers read it).
 *
 * Pure: no I/O, no allocation; inet_pton/inet_ntop are the only libc
 * parsers used, and only on bounded, NUL-terminated copies.
 */
#ifndef FNPROXY_EGRESS_ADDR_H
#define FNPROXY_EGRESS_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request's destination, canonical: what rules are matched against. */
struct egress_target {
    char host[254]; /* lower case, no trailing dot; an IP literal in canonical text form
                     * (inet_ntop), IPv6 without brackets */
    size_t host_len;
    uint16_t port;
    bool is_ip;       /* host is an IP literal */
    int family;       /* AF_INET or AF_INET6 when is_ip, else 0 */
    uint8_t addr[16]; /* the literal's address, network order (4 or 16 bytes) */
};

enum egress_target_error {
    EGRESS_T_OK = 0,
    EGRESS_T_EMPTY,     /* no host */
    EGRESS_T_TOO_LONG,  /* host over 253 bytes, or a label over 63 */
    EGRESS_T_BAD_CHAR,  /* non-ASCII, control, space, backslash, '#', '%', '?', '/', '@'
                         * (userinfo) ... */
    EGRESS_T_BAD_LABEL, /* empty label ("a..b", leading dot), label starting or ending
                         * with '-' */
    EGRESS_T_NUMERIC,   /* all-numeric or hex-looking host that inet_pton does not accept:
                         * 2130706433, 0x7f.1, 0177.0.0.1, 127.1 */
    EGRESS_T_BAD_PORT,  /* missing where required, 0, over 65535, not decimal, leading '+'
                         * or '0' etc. */
    EGRESS_T_BAD_IPV6,  /* bracketed text that is not an IPv6 address (zone ids "%eth0"
                         * refused too) */
    EGRESS_T__N
};

/* Parses an authority "host:port", "[v6]:port", or "host" (then default_port,
 * 0 meaning the port is required) into t. Returns EGRESS_T_OK or the error;
 * on error *t is zeroed. One trailing dot is removed ("example.com." ==
 * "example.com"), case is folded. No percent-decoding is ever done: '%' is
 * an error. Reads at most len bytes of authority, which need not be
 * NUL-terminated (NULL is allowed when len is 0). */
int egress_target_parse(const char *authority, size_t len, uint16_t default_port,
                        struct egress_target *t);

/* "ok", "empty_host", "too_long", "bad_char", "bad_label", "numeric_host",
 * "bad_port", "bad_ipv6"; "unknown" for anything else: a fixed set, fit for
 * a metric label. */
const char *egress_target_error_name(int e);

/* What an address is, for deny_private. IPv4 embedded in IPv6 (IPv4-mapped
 * ::ffff:0:0/96, IPv4-compatible ::/96 except :: and ::1, NAT64 64:ff9b::/96
 * and 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32 with its obfuscated
 * client address) is classified as the IPv4 address it carries (for Teredo:
 * the embedded client IPv4 = bitwise NOT of the last 32 bits). */
enum egress_addr_class {
    EGRESS_A_PUBLIC = 0,
    EGRESS_A_LOOPBACK,     /* 127/8, ::1 */
    EGRESS_A_PRIVATE,      /* 10/8, 172.16/12, 192.168/16 */
    EGRESS_A_CGNAT,        /* 100.64/10 */
    EGRESS_A_LINK_LOCAL,   /* 169.254/16 (metadata 169.254.169.254 included), fe80::/10 */
    EGRESS_A_UNIQUE_LOCAL, /* fc00::/7 */
    EGRESS_A_MULTICAST,    /* 224/4, ff00::/8 */
    EGRESS_A_BROADCAST,    /* 255.255.255.255 */
    EGRESS_A_UNSPECIFIED,  /* 0.0.0.0/8, :: */
    EGRESS_A_RESERVED,     /* 240/4 (but broadcast), 192.0.0/24, 192.0.2/24, 198.18/15,
                            * 198.51.100/24, 203.0.113/24, 2001:db8::/32, site-local
                            * fec0::/10 */
    EGRESS_A__N
};

/* Classifies a 4-byte (AF_INET) or 16-byte (AF_INET6) address in network
 * order. Within 64:ff9b:1::/48 the operator picks the prefix length, so
 * every RFC 6052 embedding a /48../96 prefix allows is checked and any
 * non-public one (but 0/8 read from the prefix's zeros) wins. An unknown
 * family or a NULL addr is EGRESS_A_RESERVED: the guard fails closed. */
enum egress_addr_class egress_addr_classify(int family, const uint8_t *addr);

/* "public", "loopback", "private", "cgnat", "link_local", "unique_local",
 * "multicast", "broadcast", "unspecified", "reserved"; "unknown" otherwise. */
const char *egress_addr_class_name(enum egress_addr_class c);

/* True for every class but PUBLIC: what deny_private refuses unless a cidr
 * rule names it. */
bool egress_addr_is_private(enum egress_addr_class c);

#endif
