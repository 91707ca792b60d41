/*
 * test_accesslog.c - the JSON access log: exact bytes of a typical line,
 * lines that stay valid JSON (and one line) whatever bytes the request
 * had, timestamps, reopening after a rename, and the order and integrity
 * of lines when several workers flush into one pipe.
 *
 * Lines are read back with a small strict JSON reader (objects of strings
 * and numbers, which is all the log writes) that also decodes the strings,
 * so a test compares the bytes a request had with the bytes the log says
 * it had.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"

/* ---- a strict reader for one log line ---- */

#define JF_MAX 26 /* 22 keys in an egress line, and room to see extras */
#define JV_MAX (ACCESSLOG_PATH_MAX + 64)

struct jfield {
    char key[32];
    bool is_str;
    char val[JV_MAX]; /* decoded string, or the number's text */
    size_t len;
};

struct jline {
    struct jfield f[JF_MAX];
    size_t n;
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A JSON string at *p; decodes \u00XX to the byte XX (the log never writes
 * other code points). False on anything JSON does not allow. */
static bool jstring(const char **p, const char *end, char *out, size_t cap, size_t *len)
{
    const char *s = *p;

    *len = 0;
    if (s >= end || *s++ != '"')
        return false;
    while (s < end && *s != '"') {
        unsigned char ch = (unsigned char)*s++;
        char b;
        if (ch < 0x20 || ch >= 0x7f)
            return false; /* raw control or non-ASCII byte */
        if (ch != '\\') {
            b = (char)ch;
        } else {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *e = s < end && *s != '\0' ? strchr(from, *s) : NULL;

            if (s >= end)
                return false;
            if (*s == 'u') {
                int v = 0;
                s++;
                if (end - s < 4)
                    return false;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(s[i]);
                    if (h < 0)
                        return false;
                    v = v * 16 + h;
                }
                s += 4;
                if (v > 0xff)
                    return false;
                b = (char)v;
            } else if (e != NULL) {
                b = to[e - from];
                s++;
            } else {
                return false;
            }
        }
        if (*len >= cap)
            return false;
        out[(*len)++] = b;
    }
    if (s >= end)
        return false;
    *p = s + 1;
    return true;
}

static bool jnumber(const char **p, const char *end, char *out, size_t cap, size_t *len)
{
    const char *s = *p, *start = s;

    if (s < end && *s == '-')
        s++;
    if (s >= end || *s < '0' || *s > '9')
        return false;
    if (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9')
        return false; /* no leading zeros */
    while (s < end && *s >= '0' && *s <= '9')
        s++;
    if (s < end && *s == '.') {
        s++;
        if (s >= end || *s < '0' || *s > '9')
            return false;
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    *len = (size_t)(s - start);
    if (*len >= cap)
        return false;
    memcpy(out, start, *len);
    out[*len] = '\0';
    *p = s;
    return true;
}

/* One line: "{...}\n" and nothing else. */
static bool jparse(const char *line, size_t len, struct jline *j)
{
    const char *p = line, *end = line + len;

    j->n = 0;
    if (len < 3 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL)
        return false;
    end--;
    if (*p++ != '{')
        return false;
    for (;;) {
        struct jfield *f;
        size_t klen;
        if (j->n == JF_MAX)
            return false;
        f = &j->f[j->n++];
        if (!jstring(&p, end, f->key, sizeof(f->key) - 1, &klen))
            return false;
        f->key[klen] = '\0';
        if (p >= end || *p++ != ':')
            return false;
        if (p < end && *p == '"') {
            f->is_str = true;
            if (!jstring(&p, end, f->val, sizeof(f->val) - 1, &f->len))
                return false;
            f->val[f->len] = '\0';
        } else {
            f->is_str = false;
            if (!jnumber(&p, end, f->val, sizeof(f->val), &f->len))
                return false;
        }
        if (p >= end)
            return false;
        if (*p == '}') {
            p++;
            break;
        }
        if (*p++ != ',')
            return false;
    }
    return p == end;
}

static const struct jfield *jget(const struct jline *j, const char *key)
{
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->f[i].key, key) == 0)
            return &j->f[i];
    return NULL;
}

/* Every line has the first N_INGRESS_KEYS; an egress line all of them. */
static const char *const keys[] = {
    "ts",        "request_id",  "trace_id",    "client",   "listener", "method",
    "path",      "status",      "function",    "route",    "upstream", "bytes_in",
    "bytes_out", "duration_ms", "upstream_ms", "attempts", "queue_ms", "direction",
    "verdict",   "host",        "port",        "resolved"};
#define N_INGRESS_KEYS 18

/* Parses a line and checks it has every key, in order, with the right type. */
static void check_line(const char *line, size_t len, struct jline *j)
{
    if (!jparse(line, len, j)) {
        print_message("not a valid log line: %.*s\n", (int)len, line);
        fail();
    }
    const struct jfield *dir = j->n >= N_INGRESS_KEYS ? &j->f[N_INGRESS_KEYS - 1] : NULL;
    bool egress = dir != NULL && strcmp(dir->val, "egress") == 0;
    assert_int_equal(j->n, egress ? sizeof(keys) / sizeof(keys[0]) : N_INGRESS_KEYS);
    for (size_t i = 0; i < j->n; i++) {
        bool num = strcmp(keys[i], "status") == 0 || strcmp(keys[i], "port") == 0 ||
                   strcmp(keys[i], "attempts") == 0 || strncmp(keys[i], "bytes", 5) == 0 ||
                   strstr(keys[i], "_ms") != NULL;
        assert_string_equal(j->f[i].key, keys[i]);
        assert_true(j->f[i].is_str == !num);
    }
}

/* ---- fixtures ---- */

static struct accesslog_entry typical(void)
{
    static const char target[] = "/resize/img.png?w=100&secret=1";

    return (struct accesslog_entry){
        .ts_ms = 1714566896789ull,
        .request_id = "4bf92f3577b34da6",
        .trace_id = "0af7651916cd43dd8448eb211c80319c",
        .client = "10.0.0.7",
        .listener = "public",
        .method = "POST",
        .method_len = 4,
        .target = target,
        .target_len = sizeof(target) - 1,
        .status = 200,
        .function = "thumbnail",
        .route = "resize",
        .upstream = "127.0.0.1:9001",
        .bytes_in = 412,
        .bytes_out = 5120,
        .duration_us = 1234,
        .upstream_us = 981,
        .attempts = 2,
        .queue_us = 12500,
    };
}

static char *format(const struct accesslog_entry *e, size_t *len)
{
    static char out[ACCESSLOG_ENTRY_MAX];
    struct accesslog_buf b = {0};

    *len = accesslog_format(&b, out, e);
    assert_true(*len <= sizeof(out));
    return out;
}

static void test_typical_line(void **state)
{
    struct accesslog_entry e = typical();
    size_t len;
    char *line = format(&e, &len);
    static const char want[] =
        "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"request_id\":\"4bf92f3577b34da6\","
        "\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\","
        "\"client\":\"10.0.0.7\",\"listener\":\"public\",\"method\":\"POST\","
        "\"path\":\"/resize/img.png\",\"status\":200,\"function\":\"thumbnail\","
        "\"route\":\"resize\",\"upstream\":\"127.0.0.1:9001\",\"bytes_in\":412,"
        "\"bytes_out\":5120,\"duration_ms\":1.234,\"upstream_ms\":0.981,\"attempts\":2,"
        "\"queue_ms\":12.500,\"direction\":\"ingress\"}\n";
    struct jline j;

    assert_int_equal(len, sizeof(want) - 1);
    assert_memory_equal(line, want, len);
    check_line(line, len, &j);

    /* A local answer before routing: empty names, no upstream, NULLs. */
    e = (struct accesslog_entry){.ts_ms = 1000, .status = 404, .duration_us = 7};
    line = format(&e, &len);
    static const char want2[] =
        "{\"ts\":\"1970-01-01T00:00:01.000Z\",\"request_id\":\"\",\"trace_id\":\"\","
        "\"client\":\"\","
        "\"listener\":\"\",\"method\":\"\",\"path\":\"\",\"status\":404,\"function\":\"\","
        "\"route\":\"\",\"upstream\":\"\",\"bytes_in\":0,\"bytes_out\":0,"
        "\"duration_ms\":0.007,\"upstream_ms\":0.000,\"attempts\":0,\"queue_ms\":0.000,"
        "\"direction\":\"ingress\"}\n";
    assert_int_equal(len, sizeof(want2) - 1);
    assert_memory_equal(line, want2, len);
    check_line(line, len, &j);

    /* An egress request: its verdict and the address dialled. */
    static const char url[] = "http://api.test:8080/v1/x?k=1";
    e = typical();
    e.listener = "app.egress";
    e.target = url;
    e.target_len = sizeof(url) - 1;
    e.route = "api";
    e.upstream = "127.0.1.1:8080";
    e.egress = true;
    e.verdict = "would_deny";
    e.host = "api.test";
    e.port = 8080;
    line = format(&e, &len);
    check_line(line, len, &j);
    assert_string_equal(jget(&j, "path")->val, "http://api.test:8080/v1/x");
    assert_string_equal(jget(&j, "direction")->val, "egress");
    assert_string_equal(jget(&j, "verdict")->val, "would_deny");
    assert_string_equal(jget(&j, "host")->val, "api.test");
    assert_string_equal(jget(&j, "port")->val, "8080");
    assert_string_equal(jget(&j, "resolved")->val, "127.0.1.1:8080");

    /* Large numbers: no overflow, no scientific notation. */
    e.bytes_in = UINT64_MAX;
    e.duration_us = 86400000000ull + 5; /* one day */
    e.status = -1;
    line = format(&e, &len);
    check_line(line, len, &j);
    assert_string_equal(jget(&j, "bytes_in")->val, "18446744073709551615");
    assert_string_equal(jget(&j, "duration_ms")->val, "86400000.005");
    assert_string_equal(jget(&j, "status")->val, "0");
}

/* Decoded path == the target's bytes up to '?', cut at ACCESSLOG_PATH_MAX. */
static void check_path(const char *target, size_t tlen)
{
    struct accesslog_entry e = typical();
    const char *q = memchr(target, '?', tlen);
    size_t want = q != NULL ? (size_t)(q - target) : tlen;
    struct jline j;
    size_t len;
    char *line;

    if (want > ACCESSLOG_PATH_MAX)
        want = ACCESSLOG_PATH_MAX;
    e.target = target;
    e.target_len = (uint32_t)tlen;
    e.method = target; /* request bytes in other fields too */
    e.method_len = (uint32_t)tlen;
    e.request_id = target[0] != '\0' ? target : "x";
    line = format(&e, &len);
    check_line(line, len, &j);
    assert_int_equal(jget(&j, "path")->len, want);
    assert_memory_equal(jget(&j, "path")->val, target, want);
    assert_int_equal(jget(&j, "method")->len,
                     tlen < ACCESSLOG_METHOD_MAX ? tlen : ACCESSLOG_METHOD_MAX);
}

static void test_nasty_paths(void **state)
{
    static const char *const cases[] = {
        "/a\"b",
        "/a\\b",
        "/a\nb",
        "/a\r\nHTTP/1.1 200 OK\r\n",
        "\"}\n{\"status\":200",
        "/\x7f\x1b[31m",
        "/caf\xc3\xa9",
        "/\xff\xfe\x80",
        "/%00%0a",
        "/q?x=\"\n",
        "?",
        "",
        "/\\u0041",
        "/</script>",
    };
    char buf[ACCESSLOG_PATH_MAX + 100];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_path(cases[i], strlen(cases[i]));
    /* Every byte value, NUL included, alone and all together. */
    for (int b = 0; b < 256; b++) {
        buf[0] = '/';
        buf[1] = (char)b;
        check_path(buf, 2);
    }
    for (int b = 0; b < 256; b++)
        buf[b] = (char)(b == '?' ? '!' : b);
    check_path(buf, 256);
    /* Longer than the cap, all of it escaped: the worst case size. */
    memset(buf, '\x01', sizeof(buf));
    check_path(buf, sizeof(buf));
    /* Random bytes. */
    srand(7);
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(rand() % 64);
        for (size_t k = 0; k < n; k++)
            buf[k] = (char)(rand() & 0xff);
        check_path(buf, n);
    }
}

/* Every field at its cap and escaped, every number at its widest, an
 * egress line (the longest): within ACCESSLOG_ENTRY_MAX, and the part that
 * is not request bytes within ACCESSLOG_FIXED_MAX. */
static void test_worst_case_line(void **state)
{
    static char big[ACCESSLOG_PATH_MAX + 64];
    struct jline j;
    size_t len;

    memset(big, '\x01', sizeof(big) - 1);
    struct accesslog_entry e = {
        .ts_ms = 253402300799999ull,
        .request_id = big,
        .trace_id = big,
        .client = big,
        .listener = big,
        .method = big,
        .method_len = sizeof(big) - 1,
        .target = big,
        .target_len = sizeof(big) - 1,
        .status = 2147483647,
        .function = big,
        .route = big,
        .upstream = big,
        .bytes_in = UINT64_MAX,
        .bytes_out = UINT64_MAX,
        .duration_us = UINT64_MAX,
        .upstream_us = UINT64_MAX,
        .attempts = UINT32_MAX,
        .queue_us = UINT64_MAX,
        .egress = true,
        .verdict = big,
        .host = big,
        .port = 65535,
    };
    char *line = format(&e, &len);
    size_t escaped = 6 * (ACCESSLOG_PATH_MAX + ACCESSLOG_METHOD_MAX + ACCESSLOG_ID_MAX +
                          ACCESSLOG_TRACE_ID_MAX + 7 * ACCESSLOG_NAME_MAX + ACCESSLOG_HOST_MAX);

    check_line(line, len, &j);
    assert_int_equal(jget(&j, "trace_id")->len, ACCESSLOG_TRACE_ID_MAX);
    assert_true(len > escaped);
    assert_true(len - escaped <= ACCESSLOG_FIXED_MAX);
    assert_true(len <= ACCESSLOG_ENTRY_MAX);
    print_message("worst case: %zu bytes, %zu of them keys and numbers\n", len, len - escaped);
}

static void test_timestamps(void **state)
{
    static const struct {
        uint64_t ms;
        const char *want;
    } cases[] = {
        {1, "1970-01-01T00:00:00.001Z"},
        {951782400123ull, "2000-02-29T00:00:00.123Z"},
        {1709251199999ull, "2024-02-29T23:59:59.999Z"},
        {4102444800000ull, "2100-01-01T00:00:00.000Z"},
        {253402300799999ull, "9999-12-31T23:59:59.999Z"},
    };
    struct accesslog_entry e = typical();
    struct jline j;
    size_t len;
    char *line;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        e.ts_ms = cases[i].ms;
        line = format(&e, &len);
        check_line(line, len, &j);
        assert_string_equal(jget(&j, "ts")->val, cases[i].want);
    }
    /* Against gmtime_r, with the cached second reused and then replaced. */
    struct accesslog_buf b = {0};
    static char out[ACCESSLOG_ENTRY_MAX];
    srand(11);
    for (int i = 0; i < 20000; i++) {
        uint64_t ms = ((uint64_t)rand() << 20 ^ (uint64_t)rand()) % 4102444800000ull;
        time_t sec = (time_t)(ms / 1000);
        struct tm tm;
        char want[32];

        if (i % 2 == 1)
            ms += 1; /* same second, usually: the cache path */
        gmtime_r(&sec, &tm);
        strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(want + 19, sizeof(want) - 19, ".%03uZ", (unsigned)(ms % 1000));
        e.ts_ms = ms;
        len = accesslog_format(&b, out, &e);
        check_line(out, len, &j);
        if ((uint64_t)sec == ms / 1000)
            assert_string_equal(jget(&j, "ts")->val, want);
    }
    /* 0 means now. */
    e.ts_ms = 0;
    uint64_t before = accesslog_now_ms();
    line = format(&e, &len);
    check_line(line, len, &j);
    assert_true(before > 1700000000000ull);
}

/* ---- files ---- */

static char tmpdir[64];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fnproxy-alog.XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The whole file, NUL-terminated; *len its size. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    data[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return data;
}

/* The request ids of the lines of a file, each line checked. */
static size_t ids_of(const char *data, size_t len, char ids[][32], size_t max)
{
    size_t n = 0;
    struct jline *j = malloc(sizeof(*j));

    assert_non_null(j);
    for (const char *p = data; p < data + len;) {
        const char *nl = memchr(p, '\n', (size_t)(data + len - p));
        assert_non_null(nl);
        check_line(p, (size_t)(nl - p + 1), j);
        assert_true(n < max);
        assert_true(jget(j, "request_id")->len < 32);
        memcpy(ids[n++], jget(j, "request_id")->val, jget(j, "request_id")->len + 1);
        p = nl + 1;
    }
    free(j);
    return n;
}

static void record_id(struct accesslog_buf *b, const char *id)
{
    struct accesslog_entry e = typical();

    e.request_id = id;
    accesslog_record(b, &e);
}

static void test_disabled(void **state)
{
    char err[256] = "";
    struct accesslog *off = accesslog_open("off", err, sizeof(err));
    struct accesslog *none = accesslog_open(NULL, err, sizeof(err));
    struct accesslog_buf b;

    assert_non_null(off);
    assert_non_null(none);
    assert_false(accesslog_enabled(off));
    assert_false(accesslog_enabled(NULL));
    assert_int_equal(accesslog_buf_init(&b, off), 0);
    record_id(&b, "x");
    assert_int_equal(b.len, 0);
    assert_int_equal(accesslog_flush(&b), 0);
    assert_int_equal(accesslog_reopen(off), 0);
    accesslog_buf_release(&b);
    assert_int_equal(accesslog_buf_init(&b, NULL), 0);
    record_id(&b, "x");
    accesslog_buf_release(&b);
    accesslog_close(off);
    accesslog_close(none);
    accesslog_close(NULL);

    assert_null(accesslog_open("/nonexistent-dir/x/access.log", err, sizeof(err)));
    assert_string_equal(err,
                        "access_log: cannot open /nonexistent-dir/x/access.log: No such file or "
                        "directory");
    assert_null(accesslog_open("", err, sizeof(err)));
    assert_string_equal(err, "access_log: empty path");
}

static void test_reopen_after_rename(void **state)
{
    char dir[96], path[128], rotated[128], err[256];
    char ids[16][32];
    struct accesslog *log;
    struct accesslog_buf b;
    size_t len;
    char *data;

    snprintf(dir, sizeof(dir), "%s/logs", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", dir);
    log = accesslog_open(path, err, sizeof(err));
    assert_non_null(log);
    assert_true(accesslog_enabled(log));
    assert_int_equal(accesslog_buf_init(&b, log), 0);

    record_id(&b, "a");
    assert_int_equal(accesslog_flush(&b), 0);
    assert_int_equal(rename(path, rotated), 0);
    /* Until the reopen, lines follow the renamed file (as logrotate expects). */
    record_id(&b, "b");
    assert_int_equal(accesslog_flush(&b), 0);
    assert_int_equal(accesslog_reopen(log), 0);
    record_id(&b, "c");
    record_id(&b, "d");
    assert_int_equal(accesslog_flush(&b), 0);
    assert_int_equal(b.written, 4);
    assert_int_equal(b.dropped, 0);

    data = slurp(rotated, &len);
    assert_int_equal(ids_of(data, len, ids, 16), 2);
    assert_string_equal(ids[0], "a");
    assert_string_equal(ids[1], "b");
    free(data);
    data = slurp(path, &len);
    assert_int_equal(ids_of(data, len, ids, 16), 2);
    assert_string_equal(ids[0], "c");
    assert_string_equal(ids[1], "d");
    free(data);

    /* A reopen that cannot open the path fails and keeps the old file. */
    assert_int_equal(unlink(rotated), 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(accesslog_reopen(log), -ENOENT);
    record_id(&b, "e");
    assert_int_equal(accesslog_flush(&b), 0);
    assert_int_equal(b.dropped, 0);
    accesslog_buf_release(&b);
    accesslog_close(log);
}

/* Lines leave in the order recorded, the buffer flushes by itself before it
 * could overflow, and release writes the rest. */
static void test_flush_order(void **state)
{
    enum { N = 3000 };
    char path[128], err[256], id[32];
    char(*ids)[32] = malloc(N * sizeof(*ids));
    struct accesslog *log;
    struct accesslog_buf b;
    size_t len, n, flushed_at = 0;
    char *data;

    assert_non_null(ids);
    snprintf(path, sizeof(path), "%s/order.log", tmpdir);
    log = accesslog_open(path, err, sizeof(err));
    assert_non_null(log);
    assert_int_equal(accesslog_buf_init(&b, log), 0);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        record_id(&b, id);
        assert_true(b.len <= ACCESSLOG_BUF_SIZE);
        if (b.written > 0 && flushed_at == 0)
            flushed_at = (size_t)i;
        if (i == N / 2) {
            /* Part of it written by a timer flush, as the worker does. */
            assert_int_equal(accesslog_flush(&b), 0);
            assert_int_equal(b.len, 0);
        }
    }
    assert_true(flushed_at > 0 && flushed_at < N / 2); /* flushed when nearly full */
    accesslog_buf_release(&b);
    accesslog_close(log);

    data = slurp(path, &len);
    n = ids_of(data, len, ids, N);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        assert_string_equal(ids[i], id);
    }
    free(data);
    free(ids);
    unlink(path);
}

/* ---- several workers into one pipe ---- */

enum { WRITERS = 4, PER_WRITER = 4000 };

struct writer {
    pthread_t thread;
    struct accesslog *log;
    int idx;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct accesslog_buf b;
    char id[32];
    /* Long paths make batches much larger than PIPE_BUF. */
    char target[600];

    memset(target, 'p', sizeof(target));
    target[0] = '/';
    if (accesslog_buf_init(&b, w->log) != 0)
        return NULL;
    for (int i = 0; i < PER_WRITER; i++) {
        struct accesslog_entry e = typical();
        snprintf(id, sizeof(id), "w%d-%d", w->idx, i);
        e.request_id = id;
        e.target = target;
        e.target_len = (uint32_t)(i % 7 == 0 ? sizeof(target) : 10);
        accesslog_record(&b, &e);
        if (i % 500 == 0)
            accesslog_flush(&b);
    }
    accesslog_buf_release(&b);
    return NULL;
}

struct reader {
    pthread_t thread;
    char path[128];
    char *data;
    size_t len, cap;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    int fd = open(r->path, O_RDONLY);
    ssize_t n;

    if (fd < 0)
        return NULL;
    for (;;) {
        if (r->len == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 1 << 20;
            r->data = realloc(r->data, r->cap);
            if (r->data == NULL)
                break;
        }
        n = read(fd, r->data + r->len, r->cap - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    close(fd);
    return NULL;
}

static void test_workers_share_a_pipe(void **state)
{
    struct reader r = {0};
    struct writer w[WRITERS];
    char err[256];
    struct accesslog *log;
    int next[WRITERS] = {0};
    struct jline *j = malloc(sizeof(*j));
    size_t lines = 0;

    assert_non_null(j);
    snprintf(r.path, sizeof(r.path), "%s/fifo", tmpdir);
    assert_int_equal(mkfifo(r.path, 0600), 0);
    assert_int_equal(pthread_create(&r.thread, NULL, reader_main, &r), 0);
    log = accesslog_open(r.path, err, sizeof(err)); /* blocks until the reader opens */
    assert_non_null(log);
    for (int i = 0; i < WRITERS; i++) {
        w[i].log = log;
        w[i].idx = i;
        assert_int_equal(pthread_create(&w[i].thread, NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i].thread, NULL);
    accesslog_close(log); /* the reader sees EOF */
    pthread_join(r.thread, NULL);
    assert_non_null(r.data);

    /* Every line whole, and each writer's lines in its own order. */
    for (const char *p = r.data; p < r.data + r.len;) {
        const char *nl = memchr(p, '\n', (size_t)(r.data + r.len - p));
        int wi, seq;
        assert_non_null(nl);
        check_line(p, (size_t)(nl - p + 1), j);
        assert_int_equal(sscanf(jget(j, "request_id")->val, "w%d-%d", &wi, &seq), 2);
        assert_true(wi >= 0 && wi < WRITERS);
        assert_int_equal(seq, next[wi]);
        next[wi]++;
        lines++;
        p = nl + 1;
    }
    assert_int_equal(lines, WRITERS * PER_WRITER);
    free(r.data);
    free(j);
    unlink(r.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typical_line),         cmocka_unit_test(test_nasty_paths),
        cmocka_unit_test(test_timestamps),           cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_reopen_after_rename),  cmocka_unit_test(test_flush_order),
        cmocka_unit_test(test_workers_share_a_pipe), cmocka_unit_test(test_worst_case_line),
    };

    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
