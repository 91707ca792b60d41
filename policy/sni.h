/*
 * sni.h - the server name a TLS client asks for, read from its ClientHello
 * (RFC 8446 section 4.1.2, RFC 6066 section 3) without terminating TLS.
 *
 * The capture listener (proxy/capture.c) peeks at the first bytes of a
 * redirected connection; when they are a ClientHello, the name in its
 * server_name extension is what the function's egress rules decide on and
 * what fnproxy resolves and dials. The parser is pure and strict: it
 * follows the handshake message across as many TLS records as it spans,
 * checks every length against what encloses it, and refuses anything
 * ambiguous (two host names, two server_name extensions) or a name that is
 * not plain ASCII letters, digits, '-', '_' and '.'.
 */
#ifndef FNPROXY_SNI_H
#define FNPROXY_SNI_H

#include <stddef.h>

#define SNI_NAME_MAX 253 /* a DNS name's longest text form */

enum sni_result {
    SNI_OK = 0, /* a whole ClientHello with one host name: in name */
    SNI_NONE,   /* a whole ClientHello without a host name */
    SNI_MORE,   /* a ClientHello so far: more bytes are needed */
    SNI_BAD,    /* not a ClientHello, malformed, or an ambiguous or odd name */
};

/* Reads the ClientHello at the start of p[0..len). With SNI_OK, name holds
 * the host name (NUL-terminated, as sent: case is the caller's concern). */
enum sni_result sni_parse(const unsigned char *p, size_t len, char name[SNI_NAME_MAX + 1]);

/* "ok", "none", "more", "bad". */
const char *sni_result_name(enum sni_result r);

#endif
