/*
 * capture.h - the capture listener's part of a connection (DESIGN.md
 * listener kinds; README "Transparent capture"): nftables redirected a
 * function's outbound TCP connection here, and before the connection can
 * become an exchange fnproxy must know where it was going and what it
 * speaks.
 *
 *   original destination   SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST
 *                          (IPv6) on the accepted socket; a connection that
 *                          was not redirected, or was headed for one of
 *                          fnproxy's own listeners, is refused (no loops)
 *   first bytes            a TLS ClientHello (its SNI names the destination,
 *                          sni.h), an HTTP request (its Host does, on the
 *                          ordinary HTTP path of forward.c), or anything
 *                          else (no name: the original address, decided by
 *                          cidr rules)
 *
 * A ClientHello or opaque stream becomes a synthetic "CONNECT host:port"
 * exchange whose answers are a close, not HTTP (X_F_RAW): the same
 * decision, resolution, address check and tunnel as the egress listener's.
 */
#ifndef FNPROXY_CAPTURE_H
#define FNPROXY_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "sni.h"

#define CAPTURE_PEEK_MAX (16 * 1024) /* the most read before deciding what a stream is */

enum capture_kind {
    CAPTURE_NONE = 0, /* not a capture connection */
    CAPTURE_PENDING,  /* its first bytes are awaited */
    CAPTURE_HTTP,     /* plain HTTP: the Host header names the destination */
    CAPTURE_RAW,      /* TLS (named by SNI) or opaque (no name): a tunnel */
};

/* A capture connection's state, allocated for those only. */
struct capture {
    struct sockaddr_storage dst; /* the original destination */
    uint8_t kind;                /* enum capture_kind */
    bool speaking;               /* its first bytes came: the rest within header_timeout */
    /* The synthetic CONNECT head: the exchange's spans point here. */
    char head[2 * SNI_NAME_MAX + 160];
};

/* The original destination of an accepted, redirected socket. 0, or a
 * negative errno (ENOENT: not redirected, no conntrack entry). */
int capture_orig_dst(int fd, struct sockaddr_storage *dst);

/* Whether dst is one of fnproxy's own listeners or its admin address: a
 * connection that would loop. */
bool capture_dst_is_own(const struct config *cfg, const struct sockaddr_storage *dst);

/* What the first n bytes are. CAPTURE_PENDING while they cannot tell yet
 * (unless final: no more will be waited for). For CAPTURE_RAW, name is the
 * ClientHello's server name, or "" when there is none. */
enum capture_kind capture_classify(const char *p, size_t n, bool final,
                                   char name[SNI_NAME_MAX + 1]);

/* Writes "CONNECT name:port HTTP/1.1" (or the original address when name
 * is "") into cap->head; its length. */
size_t capture_connect_head(struct capture *cap, const char *name);

/* The original destination's port, and its text "ip:port" for logs. */
uint16_t capture_dst_port(const struct sockaddr_storage *dst);
void capture_dst_text(const struct sockaddr_storage *dst, char *out, size_t size);

#endif
