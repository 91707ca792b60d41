/*
 * resolve.c - c-ares driven by the worker's loop (see resolve.h).
 *
 * The request a caller embeds never reaches c-ares: each lookup gets a
 * small struct resolve_query, owned by the resolver, that c-ares calls
 * back with. The query points at the request and the request at the
 * query; resolve_cancel cuts both links, so when c-ares answers later the
 * query is simply freed. c-ares calls every outstanding callback from
 * ares_destroy, so no query outlives the channel.
 *
 * An answer c-ares gives synchronously (a hosts file hit, an error found
 * at once) and a cache hit are parked on r->ready and delivered from a
 * zero timer, so a callback never runs inside resolve_start.
 *
 * c-ares 1.18 needs no ares_library_init on Linux (it only sets up
 * Winsock), and calling it from several workers at once would race on its
 * unlocked counter, so it is not called. Two reads block, both small and
 * local, as c-ares does them: /etc/resolv.conf at init and the hosts file
 * at each lookup that is not answered from the cache.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "resolve.h"

struct resolve_query {
    struct resolver *r;
    struct resolve_req *q;          /* NULL once cancelled */
    bool in_start;                  /* inside ares_getaddrinfo: park the answer */
    char key[RESOLVE_NAME_MAX + 1]; /* the name, lower case: the cache key */
};

#define SOCK_OF(p) ((struct resolve_sock *)((char *)(p)-offsetof(struct resolve_sock, poll)))

struct resolve_sock {
    uv_poll_t poll;
    struct resolve_sock *next;
    struct resolver *r;
    ares_socket_t fd;
};

struct resolve_cache_ent {
    uint64_t seq;        /* 0: free */
    uint64_t expires_ms; /* loop time */
    char name[RESOLVE_NAME_MAX + 1];
    struct resolve_addrs addrs;
};

static ares_channel chan(struct resolver *r)
{
    return (ares_channel)r->channel;
}

static int resolve__status(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return UV_EAI_NONAME;
    case ARES_EBADNAME:
        return UV_EINVAL;
    case ARES_ETIMEOUT:
        return UV_ETIMEDOUT;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return UV_ECANCELED;
    case ARES_ENOMEM:
        return UV_ENOMEM;
    case ARES_ECONNREFUSED:
        return UV_ECONNREFUSED;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
        return UV_EAI_AGAIN;
    case ARES_EBADFAMILY:
        return UV_EAI_FAMILY;
    default:
        return UV_EAI_FAIL;
    }
}

/* --- timers and sockets ------------------------------------------------ */

static void on_timer(uv_timer_t *t);

/* Arms the timer to c-ares' next deadline; called after anything that may
 * have changed it (a lookup started, a socket or the timer processed). */
static void resolve__rearm(struct resolver *r)
{
    struct timeval tv, *tvp;
    uint64_t ms;

    if (r->closing)
        return;
    tvp = ares_timeout(chan(r), NULL, &tv);
    if (!tvp) {
        uv_timer_stop(&r->timer);
        return;
    }
    /* Round up: firing a little early would only cost a second wake-up. */
    ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct resolver *r = t->data;

    ares_process_fd(chan(r), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    resolve__rearm(r);
}

static void on_closed(uv_handle_t *h)
{
    struct resolver *r = h->data;

    if (h->type == UV_POLL)
        free(SOCK_OF(h));
    if (--r->n_closing == 0 && r->closing && r->done)
        r->done(r);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct resolve_sock *s = SOCK_OF(p);
    struct resolver *r = s->r;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

    /* On a poll error let c-ares read and write: it sees the error itself
     * and fails over or closes the socket. */
    if (status < 0 || (events & UV_READABLE))
        rfd = s->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wfd = s->fd;
    ares_process_fd(chan(r), rfd, wfd); /* may close s->poll: s stays until on_closed */
    resolve__rearm(r);
}

static void resolve__sock_close(struct resolver *r, struct resolve_sock *s)
{
    struct resolve_sock **pp;

    for (pp = &r->socks; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    r->n_closing++;
    uv_close((uv_handle_t *)&s->poll, on_closed);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares opened, changed interest in, or closed a
 * socket. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct resolver *r = data;
    struct resolve_sock *s;
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);

    for (s = r->socks; s; s = s->next)
        if (s->fd == fd)
            break;
    if (!events) {
        if (s)
            resolve__sock_close(r, s);
        return;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return; /* the lookup on it times out */
        if (uv_poll_init_socket(r->loop, &s->poll, fd) != 0) {
            free(s);
            return;
        }
        s->r = r;
        s->fd = fd;
        s->poll.data = r;
        s->next = r->socks;
        r->socks = s;
    }
    uv_poll_start(&s->poll, events, on_poll);
}

/* --- delivery ----------------------------------------------------------- */

static void on_deliver(uv_timer_t *t);

static void resolve__park(struct resolver *r, struct resolve_req *q, int status)
{
    q->status = status;
    q->queued = true;
    q->gen = r->deliver_gen;
    q->next_ready = NULL;
    if (r->ready_tail)
        r->ready_tail->next_ready = q;
    else
        r->ready = q;
    r->ready_tail = q;
    if (!r->closing)
        uv_timer_start(&r->deliver, on_deliver, 0, 0);
}

static struct resolve_req *resolve__unpark_first(struct resolver *r)
{
    struct resolve_req *q = r->ready;

    if (!q)
        return NULL;
    r->ready = q->next_ready;
    if (!r->ready)
        r->ready_tail = NULL;
    q->next_ready = NULL;
    q->queued = false;
    return q;
}

/* One request at a time off the head: a callback may cancel or start
 * others, which changes the list under us. Requests parked by these very
 * callbacks wait for the next run (the timer is restarted for them), so a
 * caller that retries from its callback cannot keep the loop here. */
static void on_deliver(uv_timer_t *t)
{
    struct resolver *r = t->data;
    uint64_t gen = r->deliver_gen++;
    struct resolve_req *q;

    while (!r->closing && r->ready && r->ready->gen == gen) {
        q = resolve__unpark_first(r);
        q->cb(q, q->status, q->status == 0 ? &q->addrs : NULL);
    }
}

/* --- cache -------------------------------------------------------------- */

static bool resolve__cache_on(const struct resolver *r)
{
    return r->cache != NULL;
}

static struct resolve_cache_ent *resolve__cache_find(struct resolver *r, const char *name)
{
    uint64_t now = uv_now(r->loop);

    for (unsigned i = 0; i < r->opts.cache_max_entries; i++) {
        struct resolve_cache_ent *e = &r->cache[i];
        if (!e->seq)
            continue;
        if (e->expires_ms <= now) {
            e->seq = 0;
            continue;
        }
        if (strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

static void resolve__cache_put(struct resolver *r, const char *name, const struct resolve_addrs *a)
{
    struct resolve_cache_ent *e, *victim = NULL;
    uint32_t ttl = UINT32_MAX;
    uint64_t now = uv_now(r->loop);

    if (!resolve__cache_on(r))
        return;
    for (unsigned i = 0; i < a->n; i++)
        if (a->a[i].ttl < ttl)
            ttl = a->a[i].ttl;
    if (ttl < r->opts.cache_min_ttl_s)
        ttl = r->opts.cache_min_ttl_s;
    if (ttl > r->opts.cache_max_ttl_s)
        ttl = r->opts.cache_max_ttl_s;
    if (ttl == 0)
        return;
    /* The same name again (two lookups raced), a free or expired slot, or
     * else the oldest entry. */
    for (unsigned i = 0; i < r->opts.cache_max_entries; i++) {
        e = &r->cache[i];
        if (e->seq && e->expires_ms > now && strcmp(e->name, name) == 0) {
            victim = e;
            break;
        }
        if (!e->seq || e->expires_ms <= now) {
            if (!victim || victim->seq)
                victim = e;
        } else if (!victim || (victim->seq && e->seq < victim->seq)) {
            victim = e;
        }
    }
    victim->seq = ++r->cache_seq;
    victim->expires_ms = now + (uint64_t)ttl * 1000;
    memcpy(victim->name, name, strlen(name) + 1);
    victim->addrs = *a;
}

/* --- lookups ------------------------------------------------------------ */

static void resolve__fill(struct resolve_addrs *out, const struct ares_addrinfo *ai)
{
    const struct ares_addrinfo_node *n;

    out->n = 0;
    for (n = ai ? ai->nodes : NULL; n && out->n < RESOLVE_MAX_ADDRS; n = n->ai_next) {
        struct resolve_addr *a = &out->a[out->n];

        memset(a, 0, sizeof(*a));
        if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof(struct sockaddr_in)) {
            memcpy(a->addr, &((const struct sockaddr_in *)n->ai_addr)->sin_addr, 4);
        } else if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            memcpy(a->addr, &((const struct sockaddr_in6 *)n->ai_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        a->family = n->ai_family;
        a->ttl = n->ai_ttl > 0 ? (uint32_t)n->ai_ttl : 0;
        out->n++;
    }
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct resolve_query *qy = arg;
    struct resolver *r = qy->r;
    struct resolve_req *q = qy->q;
    int st = resolve__status(status);

    r->n_queries--;
    if (q) {
        q->query = NULL;
        if (st == 0) {
            resolve__fill(&q->addrs, ai);
            if (q->addrs.n == 0)
                st = UV_EAI_NONAME;
            else
                resolve__cache_put(r, qy->key, &q->addrs);
        }
        if (r->closing)
            st = UV_ECANCELED;
        if (qy->in_start)
            resolve__park(r, q, st);
        else
            q->cb(q, st, st == 0 ? &q->addrs : NULL);
    }
    ares_freeaddrinfo(ai);
    free(qy);
}

int resolve_start(struct resolver *r, struct resolve_req *q, const char *name, uint16_t port,
                  resolve_cb *cb)
{
    struct ares_addrinfo_hints hints;
    struct resolve_query *qy;
    struct resolve_cache_ent *e;
    char key[RESOLVE_NAME_MAX + 1];
    size_t len = strlen(name);

    if (r->closing)
        return UV_ECANCELED;
    if (len > 0 && name[len - 1] == '.')
        len--; /* "example.com." and "example.com" are one name */
    if (len == 0 || len > RESOLVE_NAME_MAX)
        return UV_EINVAL;
    for (size_t i = 0; i < len; i++)
        key[i] = (char)tolower((unsigned char)name[i]);
    key[len] = '\0';

    memset(q, 0, sizeof(*q));
    q->r = r;
    q->cb = cb;
    q->addrs.port = port;

    if (resolve__cache_on(r) && (e = resolve__cache_find(r, key)) != NULL) {
        q->addrs = e->addrs;
        q->addrs.port = port;
        resolve__park(r, q, 0);
        return 0;
    }

    qy = calloc(1, sizeof(*qy));
    if (!qy)
        return UV_ENOMEM;
    qy->r = r;
    qy->q = q;
    qy->in_start = true;
    memcpy(qy->key, key, len + 1);
    q->query = qy;
    r->n_queries++;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_NOSORT;
    if (r->use_env_hosts)
        hints.ai_flags |= ARES_AI_ENVHOSTS;
    ares_getaddrinfo(chan(r), qy->key, NULL, &hints, on_addrinfo, qy);
    /* qy may be freed by now (answered at once); q->query tells. */
    if (q->query)
        q->query->in_start = false;
    resolve__rearm(r);
    return 0;
}

void resolve_cancel(struct resolve_req *q)
{
    struct resolver *r = q->r;

    if (!r)
        return;
    if (q->query) {
        q->query->q = NULL; /* c-ares' answer, when it comes, is dropped */
        q->query = NULL;
    }
    if (q->queued) {
        struct resolve_req **pp;

        for (pp = &r->ready; *pp; pp = &(*pp)->next_ready)
            if (*pp == q) {
                *pp = q->next_ready;
                break;
            }
        r->ready_tail = NULL;
        for (struct resolve_req *p = r->ready; p; p = p->next_ready)
            r->ready_tail = p;
        q->queued = false;
        q->next_ready = NULL;
    }
    q->cb = NULL;
}

/* --- lifecycle ---------------------------------------------------------- */

int resolve_init(struct resolver *r, uv_loop_t *loop, const struct resolve_opts *o)
{
    struct ares_options ao;
    ares_channel ch;
    char lookups[] = "fb";
    uint32_t tmo;
    int mask, rc;

    memset(r, 0, sizeof(*r));
    r->loop = loop;
    r->opts = *o;
    r->opts.servers = NULL;
    r->opts.hosts_file = NULL;
    tmo = o->timeout_ms ? o->timeout_ms : 5000;

    if (o->hosts_file) {
        if (setenv("CARES_HOSTS", o->hosts_file, 1) != 0)
            return UV_ENOMEM;
        r->use_env_hosts = true;
    }

    if (o->cache_max_entries && o->cache_max_ttl_s) {
        r->cache = calloc(o->cache_max_entries, sizeof(*r->cache));
        if (!r->cache)
            return UV_ENOMEM;
    }

    /* c-ares waits timeout, then twice that on its second try (one server;
     * it doubles per round): 3 * per-try is the whole lookup. */
    memset(&ao, 0, sizeof(ao));
    ao.timeout = (int)(tmo / 3 ? tmo / 3 : 1);
    ao.tries = 2;
    ao.sock_state_cb = on_sock_state;
    ao.sock_state_cb_data = r;
    ao.lookups = lookups;
    ao.domains = NULL;
    ao.ndomains = 0; /* no search list: names are looked up as given */
    mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS |
           ARES_OPT_DOMAINS;
    rc = ares_init_options(&ch, &ao, mask);
    if (rc != ARES_SUCCESS) {
        rc = rc == ARES_ENOMEM ? UV_ENOMEM : UV_EINVAL;
        goto out_free_cache;
    }
    if (o->servers && ares_set_servers_ports_csv(ch, o->servers) != ARES_SUCCESS) {
        rc = UV_EINVAL;
        goto out_destroy;
    }
    r->channel = ch;

    uv_timer_init(loop, &r->timer);
    uv_timer_init(loop, &r->deliver);
    r->timer.data = r;
    r->deliver.data = r;
    return 0;

out_destroy:
    ares_destroy(ch);
out_free_cache:
    free(r->cache);
    r->cache = NULL;
    return rc;
}

void resolve_close(struct resolver *r, void (*done)(struct resolver *r))
{
    struct resolve_req *q;

    r->closing = true;
    r->done = done;
    /* Parked answers were not delivered yet: the request is pending. */
    while ((q = resolve__unpark_first(r)) != NULL)
        q->cb(q, UV_ECANCELED, NULL);
    /* Calls every outstanding lookup back with ARES_EDESTRUCTION (queries
     * still attached pass UV_ECANCELED on) and closes its sockets through
     * on_sock_state. */
    ares_destroy(chan(r));
    r->channel = NULL;
    while (r->socks)
        resolve__sock_close(r, r->socks);
    free(r->cache);
    r->cache = NULL;
    r->n_closing += 2;
    uv_close((uv_handle_t *)&r->timer, on_closed);
    uv_close((uv_handle_t *)&r->deliver, on_closed);
}
