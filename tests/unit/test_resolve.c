/*
 * test_resolve.c - the c-ares resolver on a real loop, against a tiny DNS
 * server in the same loop: a uv_udp_t on 127.0.0.1 at an ephemeral port
 * that answers "ttl.test" A with 127.0.2.1 (TTL 60) and AAAA with no
 * records, stays silent for "slow.test" and answers NXDOMAIN for anything
 * else, counting the queries for each name. A hosts file written into a
 * temporary directory covers the "fb" lookup order.
 *
 * Each test ends with every handle closed and uv_loop_close() == 0. All
 * waits are bounded by loop time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "resolve.h"

static uv_loop_t loop;
static uv_udp_t dns;
static uv_timer_t guard; /* wakes the loop so that RUN_UNTIL's bound holds */
static char dns_addr[64];
static char tmpdir[64];
static char hosts_path[128];
static int q_ttl, q_nope, q_slow, q_other; /* queries the server received */

/* --- the DNS server ----------------------------------------------------- */

static void dns_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char space[1500];

    buf->base = space;
    buf->len = sizeof(space);
}

/* Reads the question's name as "a.b" and its type; returns the offset past
 * the question or 0. */
static size_t dns_question(const uint8_t *p, size_t n, char *name, size_t cap, unsigned *qtype)
{
    size_t off = 12, o = 0;

    if (n < 12)
        return 0;
    while (off < n && p[off]) {
        size_t l = p[off++];
        if (l > 63 || off + l > n || o + l + 2 > cap)
            return 0;
        if (o)
            name[o++] = '.';
        for (size_t i = 0; i < l; i++)
            name[o++] = (char)p[off + i];
        off += l;
    }
    name[o] = '\0';
    if (off + 5 > n)
        return 0;
    off++;
    *qtype = (unsigned)p[off] << 8 | p[off + 1];
    return off + 4;
}

static void dns_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags)
{
    const uint8_t *p = (const uint8_t *)buf->base;
    uint8_t out[512];
    char name[256];
    unsigned qtype = 0, an = 0, rcode = 0;
    size_t qend, len;
    uv_buf_t ob;

    if (nread <= 0 || !from)
        return;
    qend = dns_question(p, (size_t)nread, name, sizeof(name), &qtype);
    if (!qend || qend > 300)
        return;
    if (strcmp(name, "ttl.test") == 0) {
        q_ttl++;
        an = qtype == 1; /* A: one record; AAAA: none (NOERROR, no data) */
    } else if (strcmp(name, "slow.test") == 0) {
        q_slow++;
        return; /* never answers */
    } else {
        if (strcmp(name, "nope.test") == 0)
            q_nope++;
        else
            q_other++;
        rcode = 3; /* NXDOMAIN */
    }
    memcpy(out, p, qend); /* id and question; counts rewritten below */
    out[2] = 0x81;        /* QR, RD */
    out[3] = (uint8_t)(0x80 | rcode);
    out[4] = 0, out[5] = 1;
    out[6] = 0, out[7] = (uint8_t)an;
    memset(out + 8, 0, 4);
    len = qend;
    if (an) {
        static const uint8_t rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 2, 1};
        memcpy(out + len, rr, sizeof(rr));
        len += sizeof(rr);
    }
    ob = uv_buf_init((char *)out, (unsigned)len);
    assert_int_equal(uv_udp_try_send(h, &ob, 1, from), (int)len);
}

static int setup(void **state)
{
    struct sockaddr_in sin;
    int len = sizeof(sin);
    FILE *f;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_udp_init(&loop, &dns), 0);
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
    assert_int_equal(uv_udp_bind(&dns, (const struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_udp_getsockname(&dns, (struct sockaddr *)&sin, &len), 0);
    assert_int_equal(uv_udp_recv_start(&dns, dns_alloc, dns_recv), 0);
    assert_int_equal(uv_timer_init(&loop, &guard), 0);
    snprintf(dns_addr, sizeof(dns_addr), "127.0.0.1:%d", ntohs(sin.sin_port));
    q_ttl = q_nope = q_slow = q_other = 0;

    strcpy(tmpdir, "/tmp/test_resolve.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    snprintf(hosts_path, sizeof(hosts_path), "%s/hosts", tmpdir);
    f = fopen(hosts_path, "w");
    assert_non_null(f);
    fputs("127.0.1.5 fn.test\n::1 v6.test\n", f);
    assert_int_equal(fclose(f), 0);
    return 0;
}

static int teardown(void **state)
{
    uv_close((uv_handle_t *)&dns, NULL);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* no handle left behind */
    unlink(hosts_path);
    rmdir(tmpdir);
    return 0;
}

static void on_guard(uv_timer_t *t)
{
}

/* Runs the loop until cond holds (bounded: 5 s of loop time). libuv 1.44's
 * UV_RUN_ONCE runs the due timers and then still waits for I/O, and the
 * server's socket keeps the loop alive: without a repeating guard timer an
 * answer delivered from the resolver's zero timer would leave the loop
 * blocked in epoll, never back at the condition. */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uint64_t end_ = uv_now(&loop) + 5000;                                                      \
        uv_timer_start(&guard, on_guard, 100, 100);                                                \
        while (!(cond) && uv_now(&loop) < end_)                                                    \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        uv_timer_stop(&guard);                                                                     \
        assert_true(cond);                                                                         \
    } while (0)

static void on_wait(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop for ms of loop time. */
static void run_for(uint64_t ms)
{
    uv_timer_t t;
    int fired = 0;

    uv_timer_init(&loop, &t);
    t.data = &fired;
    uv_timer_start(&t, on_wait, ms, 0);
    RUN_UNTIL(fired);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* --- the test's caller -------------------------------------------------- */

struct caller {
    struct resolve_req req;
    int calls, status;
    struct resolve_addrs addrs;
    uint64_t at_ms; /* loop time of the callback */
};

static bool in_start; /* set around resolve_start: a callback must never see it */

static void on_resolved(struct resolve_req *q, int status, const struct resolve_addrs *a)
{
    struct caller *c = (struct caller *)((char *)q - offsetof(struct caller, req));

    assert_false(in_start);
    c->calls++;
    c->status = status;
    c->at_ms = uv_now(&loop);
    if (status == 0) {
        assert_non_null(a);
        c->addrs = *a;
    } else {
        assert_null(a);
    }
}

static void start(struct resolver *r, struct caller *c, const char *name, uint16_t port)
{
    memset(c, 0, sizeof(*c));
    in_start = true;
    assert_int_equal(resolve_start(r, &c->req, name, port, on_resolved), 0);
    in_start = false;
    assert_int_equal(c->calls, 0);
}

static int closed;

static void on_closed(struct resolver *r)
{
    closed++;
}

static void close_resolver(struct resolver *r)
{
    closed = 0;
    resolve_close(r, on_closed);
    RUN_UNTIL(closed == 1);
}

static void init_cache(struct resolver *r, uint32_t timeout_ms, uint32_t min_ttl_s,
                       uint32_t max_ttl_s, unsigned entries)
{
    struct resolve_opts o = {
        .timeout_ms = timeout_ms,
        .servers = dns_addr,
        .hosts_file = hosts_path,
        .cache_min_ttl_s = min_ttl_s,
        .cache_max_ttl_s = max_ttl_s,
        .cache_max_entries = entries,
    };

    assert_int_equal(resolve_init(r, &loop, &o), 0);
}

static void init_resolver(struct resolver *r, uint32_t timeout_ms, uint32_t max_ttl_s)
{
    init_cache(r, timeout_ms, 0, max_ttl_s, 4);
}

static void assert_v4(const struct resolve_addr *a, const char *text)
{
    uint8_t want[4];

    assert_int_equal(a->family, AF_INET);
    assert_int_equal(inet_pton(AF_INET, text, want), 1);
    assert_memory_equal(a->addr, want, 4);
}

/* --- tests -------------------------------------------------------------- */

/* The hosts file answers first ("fb"): no DNS query is sent. */
static void test_hosts_file(void **state)
{
    struct resolver r;
    struct caller c4, c6;
    uint8_t v6[16];
    uint64_t t0;

    init_resolver(&r, 2000, 60);
    uv_update_time(&loop);
    t0 = uv_now(&loop);
    start(&r, &c4, "fn.test", 443);
    start(&r, &c6, "V6.test.", 80);
    RUN_UNTIL(c4.calls && c6.calls);
    assert_true(c6.at_ms - t0 < 50); /* the next iteration, not RUN_UNTIL's guard */
    assert_int_equal(c4.calls, 1);
    assert_int_equal(c4.status, 0);
    assert_int_equal(c4.addrs.n, 1);
    assert_int_equal(c4.addrs.port, 443);
    assert_v4(&c4.addrs.a[0], "127.0.1.5");

    assert_int_equal(c6.calls, 1);
    assert_int_equal(c6.status, 0);
    assert_int_equal(c6.addrs.n, 1);
    assert_int_equal(c6.addrs.port, 80);
    assert_int_equal(c6.addrs.a[0].family, AF_INET6);
    assert_int_equal(inet_pton(AF_INET6, "::1", v6), 1);
    assert_memory_equal(c6.addrs.a[0].addr, v6, 16);

    assert_int_equal(q_ttl + q_nope + q_slow + q_other, 0);
    close_resolver(&r);
    assert_int_equal(c4.calls + c6.calls, 2);
}

/* DNS answers, NXDOMAIN, and the cache: a hit asks nothing, an entry past
 * its TTL (cut to 1 s by cache_max_ttl_s) is asked again. */
static void test_dns_and_cache(void **state)
{
    struct resolver r;
    struct caller c;
    int asked;

    init_resolver(&r, 2000, 1);
    start(&r, &c, "ttl.test", 8080);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, 0);
    assert_int_equal(c.addrs.n, 1);
    assert_int_equal(c.addrs.port, 8080);
    assert_v4(&c.addrs.a[0], "127.0.2.1");
    assert_int_equal(c.addrs.a[0].ttl, 60);
    asked = q_ttl;
    assert_true(asked >= 1);

    /* From the cache: answered on a later iteration, not inside start. */
    start(&r, &c, "TTL.test", 9090);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.status, 0);
    assert_int_equal(c.addrs.port, 9090);
    assert_v4(&c.addrs.a[0], "127.0.2.1");
    assert_int_equal(q_ttl, asked);

    /* Expired: asked again. */
    run_for(1100);
    start(&r, &c, "ttl.test", 8080);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.status, 0);
    assert_v4(&c.addrs.a[0], "127.0.2.1");
    assert_true(q_ttl > asked);

    /* No such name, twice: negative answers are not cached. */
    start(&r, &c, "nope.test", 80);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, UV_EAI_NONAME);
    asked = q_nope;
    assert_true(asked >= 1);
    start(&r, &c, "nope.test", 80);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.status, UV_EAI_NONAME);
    assert_true(q_nope > asked);

    assert_int_equal(q_other, 0); /* no search domain was appended */
    close_resolver(&r);
}

/* A full cache evicts its oldest entry; min_ttl keeps hosts-file answers
 * (TTL 0), which are otherwise not cached. */
static void test_cache_evict(void **state)
{
    struct resolver r;
    struct caller c;
    int asked;

    init_cache(&r, 2000, 60, 60, 1);
    start(&r, &c, "ttl.test", 80);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.status, 0);
    asked = q_ttl;
    start(&r, &c, "ttl.test", 80); /* cached */
    RUN_UNTIL(c.calls);
    assert_int_equal(q_ttl, asked);
    start(&r, &c, "fn.test", 80); /* cached too, evicting ttl.test */
    RUN_UNTIL(c.calls);
    assert_int_equal(c.status, 0);
    assert_v4(&c.addrs.a[0], "127.0.1.5");
    start(&r, &c, "ttl.test", 80);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.status, 0);
    assert_true(q_ttl > asked);
    close_resolver(&r);
}

/* A server that never answers: UV_ETIMEDOUT after about timeout_ms. */
static void test_timeout(void **state)
{
    struct resolver r;
    struct caller c;
    uint64_t t0;

    init_resolver(&r, 300, 60);
    t0 = uv_now(&loop);
    start(&r, &c, "slow.test", 80);
    RUN_UNTIL(c.calls);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, UV_ETIMEDOUT);
    assert_true(q_slow >= 1);
    assert_true(c.at_ms - t0 >= 200);
    assert_true(c.at_ms - t0 < 1500);
    close_resolver(&r);
    assert_int_equal(c.calls, 1);
}

/* Cancelled requests are never called back, whether the resolver closes
 * or the answer comes later; a request pending at close gets UV_ECANCELED
 * exactly once. */
static void test_cancel(void **state)
{
    struct resolver r;
    struct caller c, d, h;

    /* Cancelled, then the resolver closes under it. */
    init_resolver(&r, 2000, 60);
    start(&r, &c, "slow.test", 80);
    RUN_UNTIL(q_slow >= 1);
    resolve_cancel(&c.req);
    close_resolver(&r);
    assert_int_equal(c.calls, 0);

    /* Cancelled, then the server answers: dropped. A cancelled cache or
     * hosts-file answer, parked for the next iteration, too. */
    init_resolver(&r, 2000, 60);
    start(&r, &c, "nope.test", 80);
    start(&r, &h, "fn.test", 80);
    resolve_cancel(&c.req);
    resolve_cancel(&h.req);
    start(&r, &d, "ttl.test", 80); /* answered after nope.test's */
    RUN_UNTIL(d.calls);
    assert_true(q_nope >= 1);
    run_for(50);
    assert_int_equal(c.calls, 0);
    assert_int_equal(h.calls, 0);

    /* Pending at close: UV_ECANCELED once, before done. */
    start(&r, &c, "slow.test", 80);
    start(&r, &h, "fn.test", 80); /* parked, not delivered yet */
    closed = 0;
    resolve_close(&r, on_closed);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, UV_ECANCELED);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.status, UV_ECANCELED);
    RUN_UNTIL(closed == 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(h.calls, 1);
    assert_int_equal(d.calls, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hosts_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dns_and_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_evict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
