/*
 * test_watch.c - the config hash (cfghash.h) and the file watcher
 * (watch.h): which files a config names, that the hash follows every byte
 * of them and stays defined when one cannot be read, which directory
 * entries a watched path cares about (a Kubernetes mount's `..data`), and
 * a real loop seeing a `..data` swap and an editor's rename, then closing
 * with no handle left.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cfghash.h"
#include "config.h"
#include "watch.h"

static char tmp[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/test_watch.XXXXXX");
    return mkdtemp(tmp) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *at(const char *name)
{
    static char p[4][256];
    static int i;

    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", tmp, name);
    return p[i];
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static struct config *parse(const char *yaml)
{
    char err[CFG_ERR_MAX];
    struct config *c;

    if (config_parse("t.yaml", yaml, strlen(yaml), &c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    return c;
}

/* Every certificate, key and CA a config names, once each, config order. */
static void test_files(void **state)
{
    struct config *c = parse("listeners:\n"
                             "  - name: a\n    listen: 127.0.0.1:1\n"
                             "    tls: { certificates: [{ cert: a.crt, key: a.key },"
                             " { cert: b.crt, key: a.key }], client_ca: ca.crt }\n"
                             "functions:\n"
                             "  - name: f\n    endpoints: [127.0.0.1:2]\n"
                             "    upstream_tls: { ca: ca.crt }\n"
                             "    egress:\n      listen: 127.0.0.1:3\n"
                             "      allow: [{ name: x, host: x.test, ports: [80],"
                             " tls: originate, ca: up.crt }]\n");
    const char **v;
    size_t n;

    (void)state;
    assert_int_equal(cfghash_files(c, &v, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(v[0], "a.crt");
    assert_string_equal(v[1], "a.key");
    assert_string_equal(v[2], "b.crt");
    assert_string_equal(v[3], "ca.crt");
    assert_string_equal(v[4], "up.crt");
    free(v);
    config_free(c);
    c = parse("workers: 1\n");
    assert_int_equal(cfghash_files(c, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);
    config_free(c);
}

static struct cfghash hash_of(const char *yaml, int want_rc, char *err)
{
    struct config *c = parse(yaml);
    struct cfghash h;

    err[0] = '\0';
    assert_int_equal(cfghash_compute(yaml, strlen(yaml), c, &h, err, CFG_ERR_MAX), want_rc);
    config_free(c);
    return h;
}

/* The hash follows the config's bytes and a named file's; a file that
 * cannot be read is an error with its name, and the hash stays defined. */
static void test_hash(void **state)
{
    char yaml[512], err[CFG_ERR_MAX], hex[CFGHASH_HEX + 1];
    struct cfghash h1, h2, h3, h4, h5, h6;

    (void)state;
    snprintf(yaml, sizeof(yaml),
             "functions:\n  - name: f\n    endpoints: [127.0.0.1:2]\n"
             "    upstream_tls: { ca: %s }\n",
             at("ca.pem"));
    put(at("ca.pem"), "one");
    h1 = hash_of(yaml, 0, err);
    h2 = hash_of(yaml, 0, err);
    assert_true(cfghash_eq(&h1, &h2));
    put(at("ca.pem"), "two");
    h3 = hash_of(yaml, 0, err);
    assert_false(cfghash_eq(&h1, &h3));
    assert_int_equal(unlink(at("ca.pem")), 0);
    h4 = hash_of(yaml, -ENOENT, err);
    assert_non_null(strstr(err, "cannot read "));
    assert_non_null(strstr(err, "ca.pem: No such file or directory"));
    assert_false(cfghash_eq(&h4, &h3));
    /* The config's bytes alone (a file that does not parse). */
    assert_int_equal(cfghash_compute("a", 1, NULL, &h5, err, sizeof(err)), 0);
    assert_int_equal(cfghash_compute("b", 1, NULL, &h6, err, sizeof(err)), 0);
    assert_false(cfghash_eq(&h5, &h6));
    /* SHA-256 of the framing "\0" + 8-byte length 0 + "": a known value. */
    assert_int_equal(cfghash_compute("", 0, NULL, &h5, err, sizeof(err)), 0);
    cfghash_hex(&h5, hex);
    assert_int_equal(strlen(hex), CFGHASH_HEX);
    assert_string_equal(hex, "3e7077fd2f66d689"); /* python3 hashlib */
}

/* Which entries of its directory a path cares about: its own name, and
 * for a relative symlink the first component of the target. */
static void test_names(void **state)
{
    char names[2][256];

    (void)state;
    put(at("plain.yaml"), "x");
    assert_int_equal(watch_names(at("plain.yaml"), names), 1);
    assert_string_equal(names[0], "plain.yaml");
    assert_int_equal(symlink("..data/fn.yaml", at("fn.yaml")), 0);
    assert_int_equal(watch_names(at("fn.yaml"), names), 2);
    assert_string_equal(names[0], "fn.yaml");
    assert_string_equal(names[1], "..data");
    assert_int_equal(symlink("/etc/hostname", at("abs.yaml")), 0);
    assert_int_equal(watch_names(at("abs.yaml"), names), 1);
    assert_int_equal(watch_names("bare.yaml", names), 1);
    assert_string_equal(names[0], "bare.yaml");
}

struct seen {
    int calls;
    char dir[256];
    uv_timer_t guard; /* ends a loop that would wait forever: a failure, not a timing */
    bool timed_out;
};

static void on_change(const char *dir, void *arg)
{
    struct seen *s = arg;

    s->calls++;
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    uv_stop(s->guard.loop);
}

static void on_guard(uv_timer_t *t)
{
    struct seen *s = t->data;

    s->timed_out = true;
    uv_stop(t->loop);
}

static void wait_change(uv_loop_t *loop, struct seen *s)
{
    int before = s->calls;

    assert_int_equal(uv_timer_start(&s->guard, on_guard, 20000, 0), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_false(s->timed_out);
    assert_int_equal(s->calls, before + 1);
    uv_timer_stop(&s->guard);
}

/* A Kubernetes ..data swap, then an editor's write and rename of a plain
 * file in another directory; the loop closes clean. */
static void test_loop(void **state)
{
    uv_loop_t loop;
    struct seen s = {0};
    char err[CFG_ERR_MAX];
    char cm[256], crt[256], nowhere[256];
    const char *paths[2] = {cm, crt};
    struct watch *w;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &s.guard), 0);
    s.guard.data = &s;
    assert_int_equal(mkdir(at("cm"), 0700), 0);
    assert_int_equal(mkdir(at("cm/..v1"), 0700), 0);
    put(at("cm/..v1/fn.yaml"), "v1");
    assert_int_equal(symlink("..v1", at("cm/..data")), 0);
    assert_int_equal(symlink("..data/fn.yaml", at("cm/fn.yaml")), 0);
    assert_int_equal(mkdir(at("etc"), 0700), 0);
    put(at("etc/tls.crt"), "c1");
    snprintf(cm, sizeof(cm), "%s", at("cm/fn.yaml")); /* at()'s buffers are reused */
    snprintf(crt, sizeof(crt), "%s", at("etc/tls.crt"));
    w = watch_new(&loop, 10, on_change, &s);
    assert_non_null(w);
    assert_int_equal(watch_set(w, paths, 2, err, sizeof(err)), 0);

    assert_int_equal(mkdir(at("cm/..v2"), 0700), 0);
    put(at("cm/..v2/fn.yaml"), "v2");
    assert_int_equal(symlink("..v2", at("cm/..data_tmp")), 0);
    assert_int_equal(rename(at("cm/..data_tmp"), at("cm/..data")), 0);
    wait_change(&loop, &s);
    assert_string_equal(s.dir, at("cm"));

    put(at("etc/.tls.crt.swp"), "c2");
    assert_int_equal(rename(at("etc/.tls.crt.swp"), at("etc/tls.crt")), 0);
    wait_change(&loop, &s);
    assert_string_equal(s.dir, at("etc"));

    /* A directory that cannot be watched is an error naming it; the rest
     * are still watched. */
    snprintf(nowhere, sizeof(nowhere), "%s", at("nowhere/x.crt"));
    paths[1] = nowhere;
    assert_int_equal(watch_set(w, paths, 2, err, sizeof(err)), UV_ENOENT);
    assert_non_null(strstr(err, "cannot watch "));
    assert_non_null(strstr(err, "nowhere: no such file or directory"));
    put(at("cm/..v2/fn.yaml"), "v3");
    assert_int_equal(symlink("..v2", at("cm/..data_tmp")), 0);
    assert_int_equal(rename(at("cm/..data_tmp"), at("cm/..data")), 0);
    wait_change(&loop, &s);

    watch_close(w);
    uv_close((uv_handle_t *)&s.guard, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_loop),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
