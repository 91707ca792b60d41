/*
 * connect-load.c - load generator for a forward proxy's CONNECT tunnels;
 * built by bench/bench.py into build/bench/connect-load (cc -O2, no
 * library but libc). wrk cannot open a tunnel, and Python is far too slow
 * to load a C proxy, so this is a small epoll loop in one thread.
 *
 *   connect-load --server 127.0.0.1:PORT [--tunnel HOST:PORT] --path PATH
 *                --mode new|bulk --conns N --duration SECONDS [--timeout S]
 *
 * --server is where it connects (the proxy, or the backend itself for the
 * `direct` row). With --tunnel, every connection first sends
 *     CONNECT HOST:PORT HTTP/1.1\r\nHost: HOST:PORT\r\n\r\n
 * and needs a 2xx answer before it sends anything else; without it the
 * connection goes straight to the HTTP request.
 *
 * --mode new: each of the N connection slots repeats, for the duration:
 *     connect, (CONNECT, read the 200), GET PATH, read the whole response,
 *     close.
 *   One request per connection (and per tunnel); the client closes, as a
 *   client without a connection pool does after its answer. Latency: from
 *   connect() to the last byte of the response.
 * --mode bulk: each slot connects (and opens its tunnel) once and then
 *   sends GET PATH over and over, keep-alive, one at a time, reading every
 *   response to its end. Latency: from the request to the last byte of its
 *   response. A connection that closes is opened again (counted).
 *
 * Responses need a Content-Length (the bench backends send one); chunked
 * responses and anything else unexpected count as read errors. A slot
 * with no progress for --timeout seconds (default 5) is counted as a
 * timeout, closed and restarted. Responses (and tunnels) still in flight
 * when the duration ends are not counted.
 *
 * At the end it prints one line in report.lua's format (which bench.py
 * parses), plus a few fields of its own:
 *   BENCH requests=N duration_us=N bytes=N err_connect=N err_read=N
 *         err_write=N err_status=N err_timeout=N p50_us=N p90_us=N
 *         p99_us=N p999_us=N max_us=N mean_us=X body_bytes=N tunnels=N
 *         tunnel_p50_us=N tunnel_p99_us=N reconnects=N
 * requests: complete 2xx responses; bytes: every byte read (heads and
 * bodies, the proxy's CONNECT answers too); body_bytes: response body bytes;
 * tunnels: 2xx answers to CONNECT; tunnel_p*: connect() to that answer.
 * Latency percentiles come from a log-linear histogram (under 0.2% error).
 *
 * Bounded: an alarm ends the process duration + timeout + 10 s after it
 * starts whatever happens. Exit status 0 if it ran (errors are counted and
 * printed, not fatal), 2 on bad arguments or set-up failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 8192          /* a response head (or CONNECT answer) must fit */
#define READ_CHUNK (256 << 10) /* one read(): big, so bulk bodies cost few calls */
#define MAX_CONNS 10000

enum phase {
    P_IDLE,       /* not started (or between connections) */
    P_CONNECTING, /* non-blocking connect() under way */
    P_SEND,       /* writing out[opos..olen) */
    P_TUNNEL,     /* reading the proxy's answer to CONNECT */
    P_HEAD,       /* reading the response head */
    P_BODY,       /* reading the response body */
};

struct slot {
    int fd;
    uint32_t gen;    /* bumped per connection: stale epoll events are told apart */
    int close_after; /* bulk: the response said Connection: close */
    uint64_t served; /* responses on this connection */
    enum phase phase;
    int tunneled;  /* this connection's tunnel is open (or none is needed) */
    char out[512]; /* the request being sent */
    size_t olen, opos;
    char head[HEAD_MAX]; /* head bytes so far */
    size_t hlen;
    uint64_t body_left;  /* bytes of the current body still to come */
    uint64_t t_conn;     /* ns: connect() of this connection */
    uint64_t t_req;      /* ns: start of the current request (new: = t_conn; bulk: the GET) */
    uint64_t t_progress; /* ns: last byte moved either way */
};

/* Log-linear latency histogram, microseconds: exact below 1024, then 512
 * sub-buckets per power of two up to 2^41 us. */
#define H_SUB 512
#define H_N (1024 + 32 * H_SUB)
struct hist {
    uint64_t n[H_N];
    uint64_t count, max, sum;
};

static unsigned h_index(uint64_t v)
{
    if (v < 1024)
        return (unsigned)v;
    int e = 63 - __builtin_clzll(v); /* >= 10 */
    if (e > 41)
        return H_N - 1;
    return 1024 + (unsigned)(e - 10) * H_SUB + (unsigned)((v >> (e - 9)) & (H_SUB - 1));
}

static uint64_t h_value(unsigned i)
{
    if (i < 1024)
        return i;
    unsigned e = (i - 1024) / H_SUB + 10, sub = (i - 1024) % H_SUB;
    /* the middle of the bucket */
    return ((uint64_t)(H_SUB + sub) << (e - 9)) + ((uint64_t)1 << (e - 9)) / 2;
}

static void h_add(struct hist *h, uint64_t v)
{
    h->n[h_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static uint64_t h_pct(const struct hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->count + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (unsigned i = 0; i < H_N; i++) {
        seen += h->n[i];
        if (seen >= want)
            return h_value(i) < h->max ? h_value(i) : h->max;
    }
    return h->max;
}

static struct {
    struct sockaddr_in server;
    const char *tunnel; /* HOST:PORT or NULL */
    const char *path;
    int bulk;
    int conns;
    double duration_s, timeout_s;
} opt = {.path = "/", .conns = 50, .duration_s = 5, .timeout_s = 5};

static struct {
    uint64_t requests, bytes, body_bytes, tunnels, reconnects;
    uint64_t err_connect, err_read, err_write, err_status, err_timeout;
} st;

static struct hist lat, tun;
static struct slot *slots;
static int ep;
static int running = 1;
static char scratch[READ_CHUNK];
static int warned_chunked, warned_proto;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void);

static void slot_close(struct slot *s)
{
    if (s->fd >= 0) {
        close(s->fd); /* also drops it from the epoll set */
        s->fd = -1;
    }
    s->phase = P_IDLE;
}

static void set_request(struct slot *s)
{
    const char *host = opt.tunnel ? opt.tunnel : NULL;
    char hostbuf[64];

    if (host == NULL) {
        inet_ntop(AF_INET, &opt.server.sin_addr, hostbuf, sizeof hostbuf);
        snprintf(hostbuf + strlen(hostbuf), sizeof hostbuf - strlen(hostbuf), ":%u",
                 ntohs(opt.server.sin_port));
        host = hostbuf;
    }
    if (!s->tunneled)
        s->olen = (size_t)snprintf(s->out, sizeof s->out, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                                   host, host);
    else {
        if (opt.bulk)
            s->t_req = now_ns();
        s->olen = (size_t)snprintf(s->out, sizeof s->out,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: connect-load\r\n"
                                   "Accept: */*\r\n\r\n",
                                   opt.path, host);
    }
    s->opos = 0;
    s->hlen = 0;
    s->phase = P_SEND;
}

static void slot_start(struct slot *s, uint64_t now);

/* A failure on slot s: counted, the connection closed and a new one
 * started (while running). */
static void slot_fail(struct slot *s, uint64_t *counter, uint64_t now)
{
    (*counter)++;
    slot_close(s);
    if (running)
        slot_start(s, now);
}

static void slot_start(struct slot *s, uint64_t now)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        st.err_connect++;
        s->phase = P_IDLE; /* retried by the timer scan */
        s->t_progress = now;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->fd = fd;
    s->gen++;
    s->close_after = 0;
    s->served = 0;
    s->tunneled = opt.tunnel == NULL;
    s->t_conn = s->t_req = s->t_progress = now;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.u64 = (uint64_t)(s - slots) | (uint64_t)s->gen << 32};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("connect-load: epoll_ctl");
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&opt.server, sizeof opt.server) != 0 &&
        errno != EINPROGRESS) {
        slot_fail(s, &st.err_connect, now);
        return;
    }
    s->phase = P_CONNECTING; /* EPOLLOUT says when (at once if already connected) */
}

/* Parses the head in s->head[0..end) (end just past the blank line): the
 * status, and for a response the body length. Returns 0 or -1 (protocol
 * error: counted by the caller). */
static int parse_head(struct slot *s, size_t end, int *status, uint64_t *clen)
{
    s->close_after = 0;
    const char *h = s->head;
    if (end < 12 || strncmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ')
        return -1;
    *status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    *clen = UINT64_MAX;
    const char *p = memchr(h, '\n', end);
    while (p && (size_t)(p + 1 - h) < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', end - (size_t)(line - h));
        if (!eol)
            break;
        size_t n = (size_t)(eol - line);
        if (n >= 15 && strncasecmp(line, "content-length:", 15) == 0)
            *clen = strtoull(line + 15, NULL, 10);
        else if (n >= 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
            if (!warned_chunked++)
                fprintf(stderr, "connect-load: a response has Transfer-Encoding (not "
                                "supported): counted as a read error\n");
            return -1;
        } else if (n >= 11 && strncasecmp(line, "connection:", 11) == 0 &&
                   memmem(line, n, "close", 5) != NULL)
            s->close_after = 1;
        p = eol;
    }
    return 0;
}

/* The current response is complete. */
static void response_done(struct slot *s, uint64_t now)
{
    st.requests++;
    s->served++;
    h_add(&lat, (now - s->t_req) / 1000);
    if (!opt.bulk || s->close_after) {
        if (opt.bulk)
            st.reconnects++;
        slot_close(s);
        if (running)
            slot_start(s, now);
        return;
    }
    set_request(s);
}

/* Moves slot s as far as it goes without blocking. */
static void slot_run(struct slot *s, uint32_t events)
{
    uint64_t now = now_ns();

    if (s->phase == P_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            slot_fail(s, &st.err_connect, now);
            return;
        }
        set_request(s);
    }
    for (;;) {
        if (s->phase == P_SEND) {
            while (s->opos < s->olen) {
                ssize_t n = write(s->fd, s->out + s->opos, s->olen - s->opos);
                if (n < 0) {
                    if (errno == EAGAIN)
                        return; /* EPOLLOUT (edge) brings us back */
                    if (errno == EINTR)
                        continue;
                    slot_fail(s, &st.err_write, now);
                    return;
                }
                s->opos += (size_t)n;
                s->t_progress = now;
            }
            s->phase = s->tunneled ? P_HEAD : P_TUNNEL;
        }
        /* P_TUNNEL, P_HEAD or P_BODY: read. */
        ssize_t n = read(s->fd, scratch, sizeof scratch);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            slot_fail(s, &st.err_read, now);
            return;
        }
        if (n == 0) {
            /* Closed by the other side: in bulk mode, a keep-alive
             * connection closed before any byte of the next response is
             * opened again (counted as a reconnect; that request is not
             * counted); anything else is an error. */
            if (opt.bulk && s->phase == P_HEAD && s->hlen == 0 && s->served > 0) {
                slot_fail(s, &st.reconnects, now);
                return;
            }
            slot_fail(s, &st.err_read, now);
            return;
        }
        now = now_ns(); /* a bulk body takes many reads: time its end, not our wake-up */
        st.bytes += (uint64_t)n;
        s->t_progress = now;
        size_t off = 0, got = (size_t)n;
        while (off < got) {
            if (s->phase == P_BODY) {
                size_t take = got - off;
                if (take > s->body_left)
                    take = (size_t)s->body_left;
                s->body_left -= take;
                st.body_bytes += take;
                off += take;
                if (s->body_left == 0) {
                    if (off != got) { /* bytes nobody asked for */
                        if (!warned_proto++)
                            fprintf(stderr, "connect-load: bytes after a complete response\n");
                        slot_fail(s, &st.err_read, now);
                        return;
                    }
                    response_done(s, now);
                    if (s->phase != P_SEND)
                        return; /* a new connection: it starts from its own events */
                    goto next;  /* bulk: send the next request on this one */
                }
                continue;
            }
            /* P_TUNNEL or P_HEAD: collect the head. */
            size_t take = got - off;
            if (take > HEAD_MAX - s->hlen)
                take = HEAD_MAX - s->hlen;
            memcpy(s->head + s->hlen, scratch + off, take);
            size_t from = s->hlen >= 3 ? s->hlen - 3 : 0;
            s->hlen += take;
            char *e = memmem(s->head + from, s->hlen - from, "\r\n\r\n", 4);
            if (!e) {
                if (s->hlen == HEAD_MAX) {
                    if (!warned_proto++)
                        fprintf(stderr, "connect-load: a head over %d bytes\n", HEAD_MAX);
                    slot_fail(s, &st.err_read, now);
                    return;
                }
                off += take;
                continue;
            }
            size_t end = (size_t)(e + 4 - s->head);
            off += take - (s->hlen - end); /* the rest of scratch is after the head */
            int status;
            uint64_t clen;
            if (parse_head(s, end, &status, &clen) != 0) {
                if (!warned_proto++)
                    fprintf(stderr, "connect-load: bad head: %.60s\n", s->head);
                slot_fail(s, &st.err_read, now);
                return;
            }
            if (status < 200 || status > 299) {
                if (!warned_proto++)
                    fprintf(stderr, "connect-load: %s answered: %.60s\n",
                            s->phase == P_TUNNEL ? "CONNECT" : "GET", s->head);
                slot_fail(s, &st.err_status, now);
                return;
            }
            if (s->phase == P_TUNNEL) {
                if (off != got) { /* nothing may come before our request */
                    if (!warned_proto++)
                        fprintf(stderr, "connect-load: bytes after the CONNECT answer\n");
                    slot_fail(s, &st.err_read, now);
                    return;
                }
                st.tunnels++;
                h_add(&tun, (now - s->t_conn) / 1000);
                s->tunneled = 1;
                set_request(s);
                goto next;
            }
            if (clen == UINT64_MAX) {
                if (!warned_proto++)
                    fprintf(stderr, "connect-load: a response without Content-Length\n");
                slot_fail(s, &st.err_read, now);
                return;
            }
            s->body_left = clen;
            s->phase = P_BODY;
            if (clen == 0) {
                if (off != got) {
                    slot_fail(s, &st.err_read, now);
                    return;
                }
                response_done(s, now);
                if (s->phase != P_SEND)
                    return;
                goto next;
            }
        }
        continue;
    next:;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: connect-load --server IP:PORT [--tunnel HOST:PORT] [--path PATH]\n"
                    "                    [--mode new|bulk] [--conns N] [--duration S] "
                    "[--timeout S]\n");
    exit(2);
}

static int parse_ipport(const char *s, struct sockaddr_in *a)
{
    char ip[64];
    const char *c = strrchr(s, ':');
    if (!c || (size_t)(c - s) >= sizeof ip)
        return -1;
    memcpy(ip, s, (size_t)(c - s));
    ip[c - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    long port = strtol(c + 1, NULL, 10);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, ip, &a->sin_addr) != 1)
        return -1;
    a->sin_port = htons((uint16_t)port);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"server", 1, 0, 's'}, {"tunnel", 1, 0, 't'},   {"path", 1, 0, 'p'},    {"mode", 1, 0, 'm'},
        {"conns", 1, 0, 'c'},  {"duration", 1, 0, 'd'}, {"timeout", 1, 0, 'T'}, {0, 0, 0, 0},
    };
    int have_server = 0, c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_ipport(optarg, &opt.server) != 0)
                usage();
            have_server = 1;
            break;
        case 't':
            opt.tunnel = optarg;
            break;
        case 'p':
            opt.path = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "new") == 0)
                opt.bulk = 0;
            else if (strcmp(optarg, "bulk") == 0)
                opt.bulk = 1;
            else
                usage();
            break;
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'd':
            opt.duration_s = atof(optarg);
            break;
        case 'T':
            opt.timeout_s = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (!have_server || optind != argc || opt.conns < 1 || opt.conns > MAX_CONNS ||
        opt.duration_s <= 0 || opt.duration_s > 3600 || opt.timeout_s <= 0 ||
        strlen(opt.path) > 200 || (opt.tunnel && strlen(opt.tunnel) > 200))
        usage();
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(opt.duration_s + opt.timeout_s) + 10);

    ep = epoll_create1(EPOLL_CLOEXEC);
    slots = calloc((size_t)opt.conns, sizeof *slots);
    if (ep < 0 || !slots) {
        perror("connect-load");
        return 2;
    }
    uint64_t t0 = now_ns(), tend = t0 + (uint64_t)(opt.duration_s * 1e9);
    uint64_t timeout_ns = (uint64_t)(opt.timeout_s * 1e9), last_scan = t0;
    for (int i = 0; i < opt.conns; i++) {
        slots[i].fd = -1;
        slot_start(&slots[i], t0);
    }
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= tend)
            break;
        int ms = (int)((tend - now) / 1000000) + 1;
        if (ms > 50)
            ms = 50;
        int n = epoll_wait(ep, evs, 256, ms);
        if (n < 0 && errno != EINTR) {
            perror("connect-load: epoll_wait");
            return 2;
        }
        for (int i = 0; i < n; i++) {
            struct slot *s = &slots[evs[i].data.u64 & 0xffffffffu];
            if (s->fd < 0 || s->gen != (uint32_t)(evs[i].data.u64 >> 32))
                continue; /* an event of a connection closed since */
            slot_run(s, evs[i].events);
        }
        now = now_ns();
        if (now - last_scan >= 100000000u) { /* 100 ms: timeouts, idle slots */
            last_scan = now;
            for (int i = 0; i < opt.conns; i++) {
                struct slot *s = &slots[i];
                if (s->phase == P_IDLE) {
                    if (now - s->t_progress >= 100000000u)
                        slot_start(s, now);
                } else if (now - s->t_progress >= timeout_ns) {
                    slot_fail(s, &st.err_timeout, now);
                }
            }
        }
    }
    running = 0;
    uint64_t dur_us = (now_ns() - t0) / 1000;
    for (int i = 0; i < opt.conns; i++)
        slot_close(&slots[i]);
    printf("BENCH requests=%llu duration_us=%llu bytes=%llu err_connect=%llu err_read=%llu "
           "err_write=%llu err_status=%llu err_timeout=%llu p50_us=%llu p90_us=%llu "
           "p99_us=%llu p999_us=%llu max_us=%llu mean_us=%.1f body_bytes=%llu tunnels=%llu "
           "tunnel_p50_us=%llu tunnel_p99_us=%llu reconnects=%llu\n",
           (unsigned long long)st.requests, (unsigned long long)dur_us,
           (unsigned long long)st.bytes, (unsigned long long)st.err_connect,
           (unsigned long long)st.err_read, (unsigned long long)st.err_write,
           (unsigned long long)st.err_status, (unsigned long long)st.err_timeout,
           (unsigned long long)h_pct(&lat, 50), (unsigned long long)h_pct(&lat, 90),
           (unsigned long long)h_pct(&lat, 99), (unsigned long long)h_pct(&lat, 99.9),
           (unsigned long long)lat.max, lat.count ? (double)lat.sum / (double)lat.count : 0.0,
           (unsigned long long)st.body_bytes, (unsigned long long)st.tunnels,
           (unsigned long long)h_pct(&tun, 50), (unsigned long long)h_pct(&tun, 99),
           (unsigned long long)st.reconnects);
    return 0;
}
