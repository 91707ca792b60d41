/*
 * resolve.h - the per-worker, non-blocking name resolver (c-ares).
 *
 * One struct resolver per worker loop owns one c-ares channel. c-ares never
 * runs on its own: every socket it opens is watched by a uv_poll_t (created
 * and closed from ARES_OPT_SOCK_STATE_CB), its retransmits and timeouts by
 * one uv_timer_t armed to ares_timeout(), and ares_process_fd() is called
 * only from those two callbacks, so a lookup never blocks the loop.
 * Lookups go through ares_getaddrinfo(AF_UNSPEC) with the lookup order
 * "fb": the hosts file first, then DNS. Search domains are disabled: the
 * proxy resolves the names it is given, nothing else.
 *
 * A request (struct resolve_req) is embedded in its caller's object. Its
 * callback is called exactly once, always from the loop and never from
 * inside resolve_start (a cache hit or an answer c-ares knew at once is
 * delivered on the next loop iteration), unless the caller cancels it
 * first with resolve_cancel, after which it is never called.
 *
 * A small cache keyed by name (case-insensitive) keeps positive answers
 * for min(max(ttl, cache_min_ttl_s), cache_max_ttl_s) seconds, where ttl
 * is the smallest TTL of the answer's addresses; when full, the entry that
 * was stored first is evicted. Negative answers (no such name, timeouts,
 * errors) are not cached: a name that failed is asked again next time.
 */
#ifndef FNPROXY_RESOLVE_H
#define FNPROXY_RESOLVE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#define RESOLVE_MAX_ADDRS 8
#define RESOLVE_NAME_MAX 255 /* longest DNS name in text form */

struct resolve_opts {
    uint32_t timeout_ms;        /* one lookup overall (c-ares tries twice); 0: 5000 */
    const char *servers;        /* "127.0.0.1:5353,[::1]:53"; NULL: /etc/resolv.conf */
    const char *hosts_file;     /* NULL: /etc/hosts (see resolve_init) */
    uint32_t cache_min_ttl_s;   /* a positive answer is kept at least this long ... */
    uint32_t cache_max_ttl_s;   /* ... and at most this long; 0: no cache */
    unsigned cache_max_entries; /* 0: no cache */
};

struct resolve_addr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order: 4 bytes for AF_INET, 16 for AF_INET6 */
    uint32_t ttl;     /* seconds, as the answer gave it (0 from the hosts file) */
};

struct resolve_addrs {
    unsigned n;                               /* 1..RESOLVE_MAX_ADDRS when status is 0 */
    uint16_t port;                            /* the port resolve_start was given, host order */
    struct resolve_addr a[RESOLVE_MAX_ADDRS]; /* in the order c-ares returned them */
};

struct resolve_req;
struct resolve_query;
struct resolve_sock;
struct resolve_cache_ent;

/* status: 0 (a holds at least one address), UV_EAI_NONAME (no such name,
 * or no address for it), UV_ETIMEDOUT, UV_ECANCELED (the resolver closed),
 * or another UV_EAI_* / negative errno. a is valid during the call only
 * and is NULL unless status is 0. */
typedef void resolve_cb(struct resolve_req *q, int status, const struct resolve_addrs *a);

struct resolver {
    uv_loop_t *loop;
    void *channel;              /* ares_channel, kept opaque to includers */
    uv_timer_t timer;           /* armed to ares_timeout() */
    uv_timer_t deliver;         /* zero timer: answers known inside resolve_start */
    struct resolve_sock *socks; /* one uv_poll_t per c-ares socket */
    struct resolve_req *ready;  /* requests whose answer waits for `deliver`, FIFO */
    struct resolve_req *ready_tail;
    struct resolve_cache_ent *cache; /* cache_max_entries slots */
    uint64_t cache_seq;              /* insertion order, for eviction */
    uint64_t deliver_gen;            /* bumped by each delivery run */
    struct resolve_opts opts;        /* copied; servers and hosts_file not kept */
    bool use_env_hosts;              /* lookups pass ARES_AI_ENVHOSTS (hosts_file was set) */
    bool closing;
    unsigned n_queries; /* c-ares lookups in flight, cancelled ones included */
    unsigned n_closing; /* uv handles whose close callback is pending */
    void (*done)(struct resolver *r);
};

struct resolve_req {
    struct resolver *r;
    resolve_cb *cb;
    struct resolve_query *query; /* its c-ares lookup, NULL once answered or cancelled */
    struct resolve_req *next_ready;
    bool queued;  /* on r->ready */
    uint64_t gen; /* r->deliver_gen when parked */
    int status;   /* the answer waiting on r->ready */
    struct resolve_addrs addrs;
};

/* Creates the channel. With hosts_file set, c-ares 1.18 has no option for
 * the path: the CARES_HOSTS environment variable is set to it (process
 * wide, so meant for tests) and this resolver's lookups pass
 * ARES_AI_ENVHOSTS, the only way c-ares reads it; without hosts_file the
 * variable is ignored. Reads /etc/resolv.conf once, here. Returns 0,
 * UV_EINVAL (bad servers) or UV_ENOMEM. */
int resolve_init(struct resolver *r, uv_loop_t *loop, const struct resolve_opts *o);

/* Destroys the channel and closes every handle; done(r) is called from the
 * loop once the last one is closed, after which r may be freed. Each
 * request still pending gets its callback with UV_ECANCELED, once, before
 * done (inside this call). Not to be called from a resolve_cb. */
void resolve_close(struct resolver *r, void (*done)(struct resolver *r));

/* Starts looking name up; port is only copied into the answer. Returns 0
 * (cb will be called, from the loop, exactly once unless cancelled),
 * UV_EINVAL (empty or over-long name), UV_ECANCELED (resolver closing) or
 * UV_ENOMEM; on error cb is never called. q must not be in use. */
int resolve_start(struct resolver *r, struct resolve_req *q, const char *name, uint16_t port,
                  resolve_cb *cb);

/* The caller is going away: q's callback is never called after this, even
 * if c-ares answers later (the lookup runs on, detached from q). A no-op
 * for a request already answered. */
void resolve_cancel(struct resolve_req *q);

#endif
