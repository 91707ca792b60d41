/*
 * capture.c - what a redirected connection was headed for and what it
 * speaks (capture.h). No I/O beyond one getsockopt; conn.c drives it.
 */
#include "capture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "forward.h"

/* From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>,
 * which clash with the libc headers this file needs. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

int capture_orig_dst(int fd, struct sockaddr_storage *dst)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);

    memset(dst, 0, sizeof(*dst));
    if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
        return -errno;
    len = sizeof(*dst);
    if (local.ss_family == AF_INET) {
        if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, dst, &len) < 0)
            return -errno;
    } else if (local.ss_family == AF_INET6) {
        if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, dst, &len) < 0)
            return -errno;
    } else {
        return -EAFNOSUPPORT;
    }
    if (dst->ss_family != AF_INET && dst->ss_family != AF_INET6)
        return -EAFNOSUPPORT;
    return 0;
}

uint16_t capture_dst_port(const struct sockaddr_storage *dst)
{
    return dst->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)dst)->sin_port)
                                     : ntohs(((const struct sockaddr_in6 *)dst)->sin6_port);
}

static const uint8_t *dst_addr(const struct sockaddr_storage *dst)
{
    return dst->ss_family == AF_INET
               ? (const uint8_t *)&((const struct sockaddr_in *)dst)->sin_addr
               : (const uint8_t *)&((const struct sockaddr_in6 *)dst)->sin6_addr;
}

bool capture_dst_is_own(const struct config *cfg, const struct sockaddr_storage *dst)
{
    return fwd_is_own(cfg, dst->ss_family, dst_addr(dst), capture_dst_port(dst));
}

void capture_dst_text(const struct sockaddr_storage *dst, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];

    if (inet_ntop(dst->ss_family, dst_addr(dst), ip, sizeof(ip)) == NULL)
        snprintf(ip, sizeof(ip), "?");
    snprintf(out, size, dst->ss_family == AF_INET ? "%s:%u" : "[%s]:%u", ip,
             (unsigned)capture_dst_port(dst));
}

/* An HTTP/1 request starts with a method token in capitals and a space
 * (every method a client library sends). 1: it does, 0: it cannot, -1:
 * too few bytes to tell. */
static int looks_http(const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n && i < 16; i++) {
        if (p[i] == ' ')
            return i > 0;
        if (p[i] < 'A' || p[i] > 'Z')
            return 0;
    }
    return i == 16 ? 0 : -1;
}

enum capture_kind capture_classify(const char *p, size_t n, bool final, char name[SNI_NAME_MAX + 1])
{
    name[0] = '\0';
    if (n == 0)
        return final ? CAPTURE_RAW : CAPTURE_PENDING; /* the server speaks first */
    switch (sni_parse((const unsigned char *)p, n, name)) {
    case SNI_OK:
    case SNI_NONE:
        return CAPTURE_RAW;
    case SNI_MORE:
        /* A ClientHello too large or too slow to read whole: no name. */
        return final || n >= CAPTURE_PEEK_MAX ? CAPTURE_RAW : CAPTURE_PENDING;
    case SNI_BAD:
        break;
    }
    if (p[0] == 0x16) {
        /* A TLS record that is no ClientHello fnproxy can read: the
         * address is all there is to decide on. */
        return CAPTURE_RAW;
    }
    switch (looks_http(p, n)) {
    case 1:
        return CAPTURE_HTTP;
    case 0:
        return CAPTURE_RAW;
    default:
        return final ? CAPTURE_RAW : CAPTURE_PENDING;
    }
}

size_t capture_connect_head(struct capture *cap, const char *name)
{
    char addr[INET6_ADDRSTRLEN + 8];
    int n;

    if (name[0] != '\0')
        snprintf(addr, sizeof(addr), "%u", (unsigned)capture_dst_port(&cap->dst));
    else
        capture_dst_text(&cap->dst, addr, sizeof(addr));
    /* The name is letters, digits, - _ and . only (sni.h): nothing in it can
     * end the line. */
    n = snprintf(cap->head, sizeof(cap->head), "CONNECT %s%s%s HTTP/1.1\r\nhost: %s%s%s\r\n\r\n",
                 name, name[0] != '\0' ? ":" : "", addr, name, name[0] != '\0' ? ":" : "", addr);
    return n > 0 && (size_t)n < sizeof(cap->head) ? (size_t)n : 0;
}
