/*
 * test_pool.c - endpoints and the upstream pool on a real loop, against a
 * listener in the same loop playing the function. The owner here is the
 * test itself, not an exchange: the pool serves whoever passes it a
 * pool_owner_ops.
 *
 * Each test ends with every handle closed and uv_loop_close() == 0, every
 * endpoint freed and every pooled buffer given back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "pool.h"

#define BUF_SIZE (32 * 1024)
#define MAX_PEERS 8

static uv_loop_t loop;
static struct xprt_loop xlp;
static struct pool pool;
static char *scratch;
static int bufs_out; /* taken and not given back */

static uv_tcp_t listener;
static uv_tcp_t peers[MAX_PEERS]; /* the function's side of each connection */
static int n_peers;
static struct cfg_addr fn_addr;

static void *buf_get(void *ctx)
{
    (void)ctx;
    bufs_out++;
    return malloc(BUF_SIZE);
}

static void buf_put(void *ctx, void *buf)
{
    (void)ctx;
    bufs_out--;
    free(buf);
}

static void on_peer(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    assert_true(n_peers < MAX_PEERS);
    assert_int_equal(uv_tcp_init(&loop, &peers[n_peers]), 0);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&peers[n_peers]), 0);
    n_peers++;
}

static int setup(void **state)
{
    struct sockaddr_in sin;
    int len = sizeof(struct sockaddr_in);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(xprt_loop_init(&xlp, &loop), 0);
    xlp.buf_get = buf_get;
    xlp.buf_put = buf_put;
    xlp.buf_size = BUF_SIZE;
    scratch = malloc(BUF_SIZE);
    assert_non_null(scratch);
    pool_init(&pool, &loop, &xlp, scratch);
    bufs_out = n_peers = 0;

    assert_int_equal(uv_tcp_init(&loop, &listener), 0);
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &sin), 0);
    assert_int_equal(uv_tcp_bind(&listener, (const struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&listener, 16, on_peer), 0);
    assert_int_equal(uv_tcp_getsockname(&listener, (struct sockaddr *)&sin, &len), 0);
    memset(&fn_addr, 0, sizeof(fn_addr));
    memcpy(&fn_addr.sa, &sin, sizeof(sin));
    fn_addr.sa_len = sizeof(sin);
    fn_addr.kind = CFG_ADDR_INET;
    snprintf(fn_addr.text, sizeof(fn_addr.text), "127.0.0.1:%d", ntohs(sin.sin_port));
    return 0;
}

static int teardown(void **state)
{
    uv_close((uv_handle_t *)&listener, NULL);
    for (int i = 0; i < n_peers; i++)
        if (!uv_is_closing((uv_handle_t *)&peers[i]))
            uv_close((uv_handle_t *)&peers[i], NULL);
    pool_sweep(&pool, 0);
    xprt_loop_close(&xlp);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* no handle left behind */
    assert_int_equal(pool.n_conns, 0);
    assert_int_equal(pool.n_endpoints, 0);
    assert_int_equal(bufs_out, 0);
    free(scratch);
    return 0;
}

/* Runs the loop until cond holds (bounded: 5 s of loop time). */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uint64_t end_ = uv_now(&loop) + 5000;                                                      \
        while (!(cond) && uv_now(&loop) < end_)                                                    \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        assert_true(cond);                                                                         \
    } while (0)

/* The test's owner: what the pool told it. */
struct owner {
    int connected, status, data, written;
};

static void owner_connected(void *o, int status)
{
    ((struct owner *)o)->connected++;
    ((struct owner *)o)->status = status;
}

static void owner_data(void *o, ssize_t nread)
{
    (void)nread;
    ((struct owner *)o)->data++;
}

static void owner_written(void *o, int status)
{
    (void)status;
    ((struct owner *)o)->written++;
}

static const struct pool_owner_ops owner_ops = {owner_connected, owner_data, owner_written};

static void test_endpoint_lifetime(void **state)
{
    struct cfg_addr other = fn_addr;
    struct endpoint *a, *b, *c, *d;

    a = endpoint_get(&pool, &fn_addr, NULL, NULL);
    b = endpoint_get(&pool, &fn_addr, NULL, NULL);
    assert_non_null(a);
    assert_ptr_equal(a, b); /* one key, one endpoint, two references */
    assert_int_equal(a->refs, 2);
    c = endpoint_get(&pool, &fn_addr, "fn.internal", "ca.crt");
    assert_ptr_not_equal(c, a); /* the TLS name and CA are part of the key */
    ((struct sockaddr_in *)&other.sa)->sin_port ^= 1;
    d = endpoint_get(&pool, &other, NULL, NULL);
    assert_ptr_not_equal(d, a);
    assert_int_equal(pool.n_endpoints, 3);
    endpoint_put(b);
    assert_int_equal(pool.n_endpoints, 3);
    endpoint_put(a); /* the last reference: evicted */
    endpoint_put(c);
    endpoint_put(d);
    assert_int_equal(pool.n_endpoints, 0);
}

static void test_get_put_reuse_fresh(void **state)
{
    struct owner o = {0};
    struct endpoint *ep = endpoint_get(&pool, &fn_addr, NULL, NULL);
    struct upconn *u, *u2, *u3;
    int err = 0;

    u = pool_get(&pool, ep, NULL, false, &owner_ops, &o, &err);
    assert_non_null(u);
    assert_false(u->flags & UP_F_CONNECTED);
    RUN_UNTIL(o.connected == 1 && n_peers == 1);
    assert_int_equal(o.status, 0);
    assert_true(u->flags & UP_F_CONNECTED);
    assert_false(u->flags & UP_F_REUSED);

    pool_put(u, true);
    assert_int_equal(ep->n_idle, 1);
    /* The config's reference goes: the pooled connection keeps the endpoint. */
    endpoint_put(ep);
    assert_int_equal(pool.n_endpoints, 1);

    /* Taken again: the same connection, ready, no callback. */
    u2 = pool_get(&pool, ep, NULL, false, &owner_ops, &o, &err);
    assert_ptr_equal(u2, u);
    assert_true(u2->flags & UP_F_REUSED);
    assert_int_equal(ep->n_idle, 0);
    assert_int_equal(o.connected, 1);

    /* fresh: a new connection even though one could be pooled. */
    pool_put(u2, true);
    u3 = pool_get(&pool, ep, NULL, true, &owner_ops, &o, &err);
    assert_non_null(u3);
    assert_ptr_not_equal(u3, u);
    RUN_UNTIL(o.connected == 2 && n_peers == 2);
    assert_int_equal(ep->n_idle, 1);

    /* Not reusable: closed, not pooled. */
    pool_put(u3, false);
    assert_int_equal(ep->n_idle, 1);
    RUN_UNTIL(pool.n_conns == 1);

    /* Draining: nothing is pooled any more. */
    u = pool_get(&pool, ep, NULL, false, &owner_ops, &o, &err);
    pool.draining = true;
    pool_put(u, true);
    assert_int_equal(ep->n_idle, 0);
    RUN_UNTIL(pool.n_conns == 0 && pool.n_endpoints == 0); /* and the endpoint with it */
}

static void test_sweep_and_peer_close(void **state)
{
    struct owner o = {0};
    struct endpoint *ep = endpoint_get(&pool, &fn_addr, NULL, NULL);
    struct upconn *u[3];
    int err = 0;

    for (int i = 0; i < 3; i++) {
        u[i] = pool_get(&pool, ep, NULL, true, &owner_ops, &o, &err);
        assert_non_null(u[i]);
    }
    RUN_UNTIL(o.connected == 3 && n_peers == 3);
    for (int i = 0; i < 3; i++)
        pool_put(u[i], true);
    assert_int_equal(ep->n_idle, 3);

    /* The sweep closes what has been idle long enough, and only that. */
    pool_sweep(&pool, 60 * 1000);
    assert_int_equal(ep->n_idle, 3);
    u[0]->idle_since_ms -= 5000;
    pool_sweep(&pool, 4000);
    assert_int_equal(ep->n_idle, 2);
    RUN_UNTIL(pool.n_conns == 2);

    /* A pooled connection the function closes is noticed and dropped
     * before anyone is handed it. */
    for (int i = 0; i < n_peers; i++)
        uv_close((uv_handle_t *)&peers[i], NULL);
    RUN_UNTIL(ep->n_idle == 0 && pool.n_conns == 0);
    assert_int_equal(o.data, 0); /* the owner had let go: it hears nothing */
    endpoint_put(ep);
    assert_int_equal(pool.n_endpoints, 0);
}

/* Idle connections are capped by the most in use at once recently: a
 * fresh connection made while one was idle does not pile up. */
static void test_idle_cap(void **state)
{
    struct owner o = {0};
    struct endpoint *ep = endpoint_get(&pool, &fn_addr, NULL, NULL);
    struct upconn *u[2], *fresh;
    int err = 0;

    for (int i = 0; i < 2; i++)
        u[i] = pool_get(&pool, ep, NULL, true, &owner_ops, &o, &err);
    RUN_UNTIL(o.connected == 2 && n_peers == 2);
    pool_put(u[0], true);
    pool_put(u[1], true);
    assert_int_equal(ep->n_idle, 2); /* two were in use at once */

    /* One taken and a fresh one beside it: three connections, two needed. */
    u[0] = pool_get(&pool, ep, NULL, false, &owner_ops, &o, &err);
    fresh = pool_get(&pool, ep, NULL, true, &owner_ops, &o, &err);
    RUN_UNTIL(o.connected == 3 && n_peers == 3);
    pool_put(fresh, true);
    pool_put(u[0], true);
    assert_int_equal(ep->n_idle, 2);
    RUN_UNTIL(pool.n_conns == 2);

    /* Two sweeps with nothing in use: the peak is gone, and a connection
     * back from one owner is closed while others sit idle. */
    pool_sweep(&pool, 60 * 1000);
    pool_sweep(&pool, 60 * 1000);
    u[0] = pool_get(&pool, ep, NULL, false, &owner_ops, &o, &err);
    assert_true(u[0]->flags & UP_F_REUSED);
    pool_put(u[0], true);
    assert_int_equal(ep->n_idle, 1);
    RUN_UNTIL(pool.n_conns == 1);
    assert_int_equal(ep->n_busy, 0);
    endpoint_put(ep);
}

static void test_connect_refused_reaches_the_owner(void **state)
{
    struct owner o = {0};
    struct cfg_addr dead = fn_addr;
    struct endpoint *ep;
    struct upconn *u;
    int err = 0;

    /* Port 1 on loopback: nothing listens there. */
    ((struct sockaddr_in *)&dead.sa)->sin_port = htons(1);
    ep = endpoint_get(&pool, &dead, NULL, NULL);
    u = pool_get(&pool, ep, NULL, false, &owner_ops, &o, &err);
    assert_non_null(u);
    RUN_UNTIL(o.connected == 1);
    assert_int_equal(o.status, UV_ECONNREFUSED);
    pool_put(u, true); /* never connected: closed, not pooled */
    assert_int_equal(ep->n_idle, 0);
    endpoint_put(ep);
    RUN_UNTIL(pool.n_conns == 0 && pool.n_endpoints == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_endpoint_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_put_reuse_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_and_peer_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused_reaches_the_owner, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
