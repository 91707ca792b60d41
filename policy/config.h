/*
 * config.h - the configuration model: YAML (libyaml) parsed into plain,
 * immutable structs, validated before anything uses them.
 *
 * Every error names file:line:column and the key path, e.g.
 *   demo.yaml:14:9: functions[0].ingress.routes[2].timeout: expected a duration like 10s
 * A struct config is never modified after config_load() returns it; a reload
 * builds a new one and swaps it in.
 *
 * This module is pure: no libuv, no OpenSSL, no sockets opened.
 */
#ifndef FNPROXY_CONFIG_H
#define FNPROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "outlier.h"
#include "retry.h"

#define CFG_ERR_MAX 512 /* size callers give for error messages */

/* What fnproxy serves at most; a config beyond is refused with an error
 * naming the list (--check refuses what start would). */
#define CFG_MAX_WORKERS 64       /* worker threads */
#define CFG_MAX_LISTENERS 64     /* listeners */
#define CFG_MAX_ENDPOINTS 64     /* endpoints of one function */
#define CFG_MIN_CLIENT_RATE 1024 /* listeners' min_client_rate default, bytes a second */

/* Request methods a route can match on, as bits of cfg_route.methods. */
enum cfg_method {
    CFG_M_GET = 1u << 0,
    CFG_M_HEAD = 1u << 1,
    CFG_M_POST = 1u << 2,
    CFG_M_PUT = 1u << 3,
    CFG_M_DELETE = 1u << 4,
    CFG_M_PATCH = 1u << 5,
    CFG_M_OPTIONS = 1u << 6,
    CFG_M_TRACE = 1u << 7,
};

/* The bit of a method name (case-sensitive, as on the wire); 0 if unknown. */
unsigned cfg_method_bit(const char *name, size_t len);

enum cfg_addr_kind { CFG_ADDR_INET = 0, CFG_ADDR_UNIX };

/* A listen address or an endpoint: "127.0.0.1:8080", "[::1]:8080" or
 * "unix:/run/fn.sock". Hosts are IP literals (and "localhost", which means
 * 127.0.0.1); names are never resolved here. */
struct cfg_addr {
    enum cfg_addr_kind kind;
    struct sockaddr_storage sa; /* AF_INET/AF_INET6/AF_UNIX, ready to bind/connect */
    socklen_t sa_len;
    char text[128]; /* as written, for logs */
};

struct cfg_cert {
    char *cert; /* PEM certificate (and chain) file */
    char *key;  /* PEM private key file */
};

/* listeners[].tls: TLS termination. Files are read when the config is put in
 * service (start, SIGHUP), not here. */
struct cfg_listener_tls {
    struct cfg_cert *certificates; /* chosen by SNI; [0] is the default */
    size_t n_certificates;
    char *client_ca;               /* client certificates required and verified; NULL: none */
    int min_version;               /* 12 or 13 ("1.2", "1.3"); default 12 */
    bool sni_strict;               /* refuse names no certificate has, rather than use [0] */
    uint64_t handshake_timeout_ms; /* default 10s */
};

/* functions[].upstream_tls: TLS to the function's instances. */
struct cfg_upstream_tls {
    char *ca;          /* PEM CA bundle; NULL: the system store */
    char *server_name; /* SNI and the name checked; NULL: the endpoint's IP */
};

/* What a listener does with what it accepts (DESIGN.md: listener kinds).
 * The top-level listeners are ingress. A function's egress.listen adds an
 * egress listener to the same list, after them, named "<function>.egress"
 * (its connections_active label); capture listeners come later. */
enum cfg_listener_kind {
    CFG_LISTENER_INGRESS = 0, /* reverse proxy to the functions its routes name */
    CFG_LISTENER_EGRESS,      /* one function's forward proxy: absolute-form HTTP and CONNECT */
    CFG_LISTENER_CAPTURE,     /* one function's transparent egress: TCP redirected by nftables */
    CFG_LISTENER__N
};

struct cfg_listener {
    char *name;
    enum cfg_listener_kind kind;
    size_t function;               /* egress, capture: index of the function whose proxy it is */
    struct cfg_addr listen;        /* inet; egress listeners may be unix sockets */
    uint64_t header_timeout_ms;    /* request head must arrive within; default 10s */
    uint64_t keepalive_timeout_ms; /* idle between requests; default 60s */
    size_t max_header_bytes;       /* request line + headers; default 16 KiB */
    uint64_t min_client_rate;      /* bytes a second a client must send its body and read its
                                    * answer at, over the time fnproxy waits on it; 0: none */
    uint64_t first_bytes_timeout_ms; /* capture: the wait for the client's first bytes before
                                      * taking it for a server-speaks-first stream; default 1s */
    struct cfg_listener_tls *tls;  /* NULL: plain HTTP */
    int line, col;                 /* where the item starts in the file */
};

/* Deadlines of a route or an egress rule (README "Timeouts"). */
struct cfg_timeouts {
    uint64_t timeout_ms;         /* total: the response head within it, every attempt and
                                  * backoff included; default 15s */
    uint64_t per_try_timeout_ms; /* one attempt's response head; 0 (default): timeout only */
    uint64_t idle_timeout_ms;    /* no progress either way while bodies move; default timeout */
    uint64_t connect_timeout_ms; /* one connect; default 1s (routes), 5s (egress rules) */
};

/* fault: requests delayed or answered by fnproxy on purpose, to test how
 * functions and their callers cope. Shares are in thousandths of a percent. */
struct cfg_fault {
    uint32_t delay_share; /* of 100000 requests, how many wait delay_ms first */
    uint64_t delay_ms;
    uint32_t abort_share; /* ... and how many get abort_status without reaching the function */
    int abort_status;
};

struct cfg_route {
    char *name;
    size_t listener;   /* index into config.listeners */
    char *host;        /* lower case, no trailing dot, no port; "*.x.com" wildcard; NULL = any */
    char *path_prefix; /* default "/" */
    unsigned methods;  /* CFG_M_* bits; 0 = any method */
    struct cfg_timeouts t;
    struct retry_policy retries; /* defaults: README "Retries" */
    struct cfg_fault fault;      /* none by default */
    int line, col;
};

struct egress_rules;

/* functions[].egress.allow[]: one allow rule. Either host or cidr. */
struct cfg_egress_rule {
    char *name;      /* the route label of what it lets through */
    char *host;      /* lower case, no trailing dot; "*.x.com": names below x.com; or NULL */
    char *cidr;      /* "10.1.0.0/16", "fd00::/8"; or NULL */
    uint16_t *ports; /* at least one */
    size_t n_ports;
    unsigned methods; /* CFG_M_* bits; 0 = any (plain HTTP only) */
    char **paths;     /* path prefixes (plain HTTP only); NULL = any */
    size_t n_paths;
    bool tls_originate; /* tls: originate: plain http:// from the function leaves as TLS */
    char *ca;           /* with tls_originate: CA bundle; NULL: the system store */
    struct cfg_timeouts t;
    struct retry_policy retries;
    struct cfg_fault fault;
    int line, col;
};

enum cfg_egress_mode {
    CFG_EGRESS_ENFORCE = 0, /* deny what no rule allows */
    CFG_EGRESS_REPORT,      /* let it through, log and count it as would-deny */
};

/* functions[].egress: the function's forward proxy and its policy. */
struct cfg_egress {
    size_t listener;         /* index into config.listeners (kind CFG_LISTENER_EGRESS) */
    bool has_capture;        /* egress.capture was given ... */
    size_t capture_listener; /* ... index into config.listeners (kind CFG_LISTENER_CAPTURE) */
    enum cfg_egress_mode mode;
    bool deny_private;               /* default true */
    uint64_t tunnel_idle_timeout_ms; /* a CONNECT tunnel with no bytes either way; default 5m */
    struct cfg_egress_rule *allow;   /* config order: the first that matches wins */
    size_t n_allow;
    struct egress_rules *rules; /* allow, compiled (egress_rules.h) */
    int line, col;
};

/* dns: how egress names are resolved (resolve.h). */
struct cfg_dns {
    char *servers;            /* "127.0.0.1:53,[::1]:53"; NULL: /etc/resolv.conf */
    uint64_t timeout_ms;      /* one lookup, all its tries; default 5s */
    uint32_t cache_min_ttl_s; /* an answer is cached at least this long; default 0 */
    uint32_t cache_max_ttl_s; /* ... and at most this long; default 300; 0: no cache */
    uint32_t cache_entries;   /* per worker; default 1024; 0: no cache */
};

/* functions[].circuit_breaker: per endpoint and worker; 0: no cap. */
struct cfg_circuit_breaker {
    unsigned max_active;  /* requests in flight to one endpoint; default 1024 */
    unsigned max_pending; /* connects under way to one endpoint; default 1024 */
};

/* How a rate limit is keyed (ingress.rate_limit.per). */
enum cfg_rate_per {
    CFG_RATE_FUNCTION = 0, /* one bucket for the function */
    CFG_RATE_CLIENT_ID,    /* one per verified mTLS identity (no identity: one shared bucket) */
    CFG_RATE_CLIENT_IP,    /* one per client address */
};

/* functions[].ingress admission (README "Admission"): global across workers,
 * kept across reloads by function name. */
struct cfg_admission {
    unsigned max_concurrency;  /* requests in flight to the function at once; 0: no limit */
    unsigned queue_depth;      /* queue.depth: requests waiting beyond it; default 100 */
    uint64_t queue_timeout_ms; /* queue.timeout: the longest wait; default 5s */
    uint64_t rate_milli;       /* rate_limit.rps in thousandths; 0: no rate limit */
    unsigned burst;            /* rate_limit.burst; default rps rounded up, at least 1 */
    enum cfg_rate_per per;     /* rate_limit.per */
};

/* functions[].readiness: probe endpoints until they answer; hold requests
 * meanwhile. */
struct cfg_readiness {
    char *path;           /* GET path answering 2xx when ready; NULL: a TCP connect */
    uint64_t interval_ms; /* between probes of an endpoint not ready; default 50ms */
    uint64_t timeout_ms;  /* one probe; default 1s */
};

struct cfg_function {
    char *name;
    struct cfg_addr *endpoints;
    size_t n_endpoints;
    uint64_t max_body;      /* ingress.max_body in bytes; 0 = no limit */
    char **allowed_clients; /* ingress.allowed_clients: mTLS identities; NULL = anyone */
    size_t n_allowed_clients;
    struct cfg_upstream_tls *upstream_tls; /* NULL: plain to the instances */
    struct cfg_route *routes;              /* ingress.routes */
    size_t n_routes;
    struct cfg_egress *egress;     /* NULL: none (the function makes no outbound calls) */
    struct outlier_policy outlier; /* its endpoints' and egress destinations' ejection */
    struct cfg_circuit_breaker circuit_breaker;
    struct cfg_admission admission;
    struct cfg_readiness *readiness; /* NULL: none (requests go straight to the endpoints) */
    int line, col;
};

struct config {
    char *path;       /* file it came from */
    unsigned workers; /* 0 = auto: one per core */
    bool has_admin;
    struct cfg_addr admin_listen; /* admin.listen, inet only */
    uint64_t drain_timeout_ms;    /* on SIGTERM; default 10s */
    char *access_log;             /* "stdout" or a file path; NULL = off (the default) */
    bool metrics_off;             /* metrics: off: no per-request counting (default on) */
    bool watch_off;               /* watch: off: no reload on file change (default on) */
    struct cfg_dns dns;
    struct cfg_listener *listeners;
    size_t n_listeners;
    struct cfg_function *functions;
    size_t n_functions;
};

/* Reads and validates the file at path. On success returns 0 and *out; on
 * failure a negative errno-style code and a message of the form
 * "file:line:col: key.path: what is wrong" in err. */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/* The bytes of the file at path (at most 4 MiB), malloc'd, for a caller
 * that hashes what it parses (proxy/cfghash.h). 0, or a negative errno-style
 * code and "cannot read FILE: why" in err. */
int config_read(const char *path, char **out, size_t *len, char *err, size_t errlen);

/* The same from memory; name is used in messages as the file name. */
int config_parse(const char *name, const char *buf, size_t len, struct config **out, char *err,
                 size_t errlen);

void config_free(struct config *c);

#endif
