/*
 * accesslog.c - the JSON access log: per-worker buffers of formatted lines,
 * written in batches to one process-wide descriptor.
 *
 * Formatting is by hand because it runs once per request on the worker's
 * loop: snprintf would parse a format string and walk locale machinery for
 * each of the fourteen fields. Every field has a length cap, so an entry
 * has a known worst-case size (ACCESSLOG_ENTRY_MAX) and the formatter never
 * checks bounds byte by byte: the buffer is flushed beforehand whenever
 * less than that is left.
 *
 * The mutex is held only around write(2) and the reopen's dup3(): workers
 * contend only when two flush at once, at most every 100 ms each or every
 * ~47 KiB of lines.
 */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

_Static_assert(ACCESSLOG_ENTRY_MAX < ACCESSLOG_BUF_SIZE / 2, "a buffer holds several entries");

struct accesslog {
    uv_mutex_t lock; /* one batch of lines at a time; reopen */
    int fd;          /* -1: disabled */
    bool owns_fd;    /* a file we opened, not stdout */
    char *path;      /* for reopen; NULL unless owns_fd */
};

static int open_path(const char *path)
{
    int fd;

    do
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

struct accesslog *accesslog_open(const char *target, char *err, size_t errlen)
{
    struct accesslog *log = calloc(1, sizeof(*log));
    int fd;

    if (log == NULL) {
        snprintf(err, errlen, "access_log: out of memory");
        return NULL;
    }
    log->fd = -1;
    if (target == NULL || strcmp(target, "off") == 0) {
        /* Disabled: no mutex to destroy either. */
        return log;
    }
    if (strcmp(target, "stdout") == 0) {
        log->fd = STDOUT_FILENO;
    } else {
        if (target[0] == '\0') {
            snprintf(err, errlen, "access_log: empty path");
            goto out_free_log;
        }
        log->path = strdup(target);
        if (log->path == NULL) {
            snprintf(err, errlen, "access_log: out of memory");
            goto out_free_log;
        }
        fd = open_path(target);
        if (fd < 0) {
            snprintf(err, errlen, "access_log: cannot open %s: %s", target, strerror(-fd));
            goto out_free_path;
        }
        log->fd = fd;
        log->owns_fd = true;
    }
    if (uv_mutex_init(&log->lock) != 0) {
        snprintf(err, errlen, "access_log: cannot make a mutex");
        goto out_close;
    }
    return log;

out_close:
    if (log->owns_fd)
        close(log->fd);
out_free_path:
    free(log->path);
out_free_log:
    free(log);
    return NULL;
}

bool accesslog_enabled(const struct accesslog *log)
{
    return log != NULL && log->fd >= 0;
}

int accesslog_reopen(struct accesslog *log)
{
    int fd, rc = 0;

    if (log == NULL || !log->owns_fd)
        return 0;
    fd = open_path(log->path);
    if (fd < 0)
        return fd;
    /* dup3 replaces the file behind log->fd atomically: a concurrent
     * write(2) lands wholly in the old file or wholly in the new. The lock
     * only keeps a flush's several writes (after a short write) together.
     * dup3 rather than dup2 so that the descriptor stays close-on-exec. */
    uv_mutex_lock(&log->lock);
    while (dup3(fd, log->fd, O_CLOEXEC) < 0) {
        if (errno != EINTR && errno != EBUSY) {
            rc = -errno;
            break;
        }
    }
    uv_mutex_unlock(&log->lock);
    close(fd);
    return rc;
}

void accesslog_close(struct accesslog *log)
{
    if (log == NULL)
        return;
    if (log->fd >= 0)
        uv_mutex_destroy(&log->lock);
    if (log->owns_fd)
        close(log->fd);
    free(log->path);
    free(log);
}

int accesslog_buf_init(struct accesslog_buf *b, struct accesslog *log)
{
    memset(b, 0, sizeof(*b));
    if (!accesslog_enabled(log))
        return 0;
    b->buf = malloc(ACCESSLOG_BUF_SIZE);
    if (b->buf == NULL)
        return -ENOMEM;
    b->log = log;
    return 0;
}

void accesslog_buf_release(struct accesslog_buf *b)
{
    accesslog_flush(b);
    free(b->buf);
    b->buf = NULL;
    b->log = NULL;
}

int accesslog_flush(struct accesslog_buf *b)
{
    struct accesslog *log = b->log;
    size_t off = 0;
    int rc = 0;

    if (b->len == 0)
        return 0;
    uv_mutex_lock(&log->lock);
    while (off < b->len) {
        ssize_t n = write(log->fd, b->buf + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)n;
    }
    uv_mutex_unlock(&log->lock);
    if (rc < 0)
        b->dropped += b->lines; /* a line cut by a short write is lost too */
    else
        b->written += b->lines;
    b->len = 0;
    b->lines = 0;
    return rc;
}

uint64_t accesslog_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- formatting ---- */

/* Bytes that go into a JSON string as they are: printable ASCII but '"'
 * and '\'. Everything else is escaped. */
static const uint8_t json_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, /* 0x70: DEL */
    /* 0x80-0xff: zero */
};

#define PUT_LIT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

static char *put_escaped(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (json_plain[ch]) {
            *p++ = (char)ch;
        } else if (ch == '"' || ch == '\\') {
            p[0] = '\\';
            p[1] = (char)ch;
            p += 2;
        } else {
            memcpy(p, "\\u00", 4);
            p[4] = hex[ch >> 4];
            p[5] = hex[ch & 15];
            p += 6;
        }
    }
    return p;
}

/* A NUL-terminated string (NULL: empty), cut at max bytes. */
static char *put_cstr(char *p, const char *s, size_t max)
{
    if (s == NULL)
        return p;
    return put_escaped(p, s, strnlen(s, max));
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* Microseconds as milliseconds with three decimals: "12.034". */
static char *put_ms(char *p, uint64_t us)
{
    unsigned frac = (unsigned)(us % 1000);

    p = put_u64(p, us / 1000);
    p[0] = '.';
    p[1] = (char)('0' + frac / 100);
    p[2] = (char)('0' + frac / 10 % 10);
    p[3] = (char)('0' + frac % 10);
    return p + 4;
}

static void put_2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS" of a second since the epoch, UTC. The civil date
 * is Howard Hinnant's days_from_civil inverse; no gmtime_r, which takes
 * glibc's timezone lock even for UTC. Done once a second per worker. */
static void format_second(char out[20], uint64_t sec)
{
    uint64_t days = sec / 86400, rem = sec % 86400;
    uint64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    uint64_t mp = (5 * doy + 2) / 153;
    unsigned d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    unsigned m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    uint64_t y = yoe + era * 400 + (m <= 2);

    y %= 10000;
    put_2(out, (unsigned)(y / 100));
    put_2(out + 2, (unsigned)(y % 100));
    out[4] = '-';
    put_2(out + 5, m);
    out[7] = '-';
    put_2(out + 8, d);
    out[10] = 'T';
    put_2(out + 11, (unsigned)(rem / 3600));
    out[13] = ':';
    put_2(out + 14, (unsigned)(rem / 60 % 60));
    out[16] = ':';
    put_2(out + 17, (unsigned)(rem % 60));
    out[19] = '\0';
}

size_t accesslog_format(struct accesslog_buf *b, char *out, const struct accesslog_entry *e)
{
    uint64_t ts = e->ts_ms != 0 ? e->ts_ms : accesslog_now_ms();
    uint64_t sec = ts / 1000;
    unsigned ms = (unsigned)(ts % 1000);
    size_t path_len = e->target != NULL ? e->target_len : 0;
    size_t method_len = e->method != NULL ? e->method_len : 0;
    const char *q;
    char *p = out;

    if (sec != b->ts_sec || b->ts_text[0] == '\0') {
        format_second(b->ts_text, sec);
        b->ts_sec = sec;
    }
    if (path_len > 0 && (q = memchr(e->target, '?', path_len)) != NULL)
        path_len = (size_t)(q - e->target);
    if (path_len > ACCESSLOG_PATH_MAX)
        path_len = ACCESSLOG_PATH_MAX;
    if (method_len > ACCESSLOG_METHOD_MAX)
        method_len = ACCESSLOG_METHOD_MAX;

    p = PUT_LIT(p, "{\"ts\":\"");
    memcpy(p, b->ts_text, 19);
    p += 19;
    p[0] = '.';
    p[1] = (char)('0' + ms / 100);
    p[2] = (char)('0' + ms / 10 % 10);
    p[3] = (char)('0' + ms % 10);
    p += 4;
    p = PUT_LIT(p, "Z\",\"request_id\":\"");
    p = put_cstr(p, e->request_id, ACCESSLOG_ID_MAX);
    p = PUT_LIT(p, "\",\"trace_id\":\"");
    p = put_cstr(p, e->trace_id, ACCESSLOG_TRACE_ID_MAX);
    p = PUT_LIT(p, "\",\"client\":\"");
    p = put_cstr(p, e->client, ACCESSLOG_NAME_MAX);
    p = PUT_LIT(p, "\",\"listener\":\"");
    p = put_cstr(p, e->listener, ACCESSLOG_NAME_MAX);
    p = PUT_LIT(p, "\",\"method\":\"");
    p = put_escaped(p, e->method, method_len);
    p = PUT_LIT(p, "\",\"path\":\"");
    p = put_escaped(p, e->target, path_len);
    p = PUT_LIT(p, "\",\"status\":");
    p = put_u64(p, e->status > 0 ? (uint64_t)e->status : 0);
    p = PUT_LIT(p, ",\"function\":\"");
    p = put_cstr(p, e->function, ACCESSLOG_NAME_MAX);
    p = PUT_LIT(p, "\",\"route\":\"");
    p = put_cstr(p, e->route, ACCESSLOG_NAME_MAX);
    p = PUT_LIT(p, "\",\"upstream\":\"");
    p = put_cstr(p, e->upstream, ACCESSLOG_NAME_MAX);
    p = PUT_LIT(p, "\",\"bytes_in\":");
    p = put_u64(p, e->bytes_in);
    p = PUT_LIT(p, ",\"bytes_out\":");
    p = put_u64(p, e->bytes_out);
    p = PUT_LIT(p, ",\"duration_ms\":");
    p = put_ms(p, e->duration_us);
    p = PUT_LIT(p, ",\"upstream_ms\":");
    p = put_ms(p, e->upstream_us);
    p = PUT_LIT(p, ",\"attempts\":");
    p = put_u64(p, e->attempts);
    p = PUT_LIT(p, ",\"queue_ms\":");
    p = put_ms(p, e->queue_us);
    if (e->egress) {
        /* The address dialled is "upstream"; "resolved" says so for egress. */
        p = PUT_LIT(p, ",\"direction\":\"egress\",\"verdict\":\"");
        p = put_cstr(p, e->verdict, ACCESSLOG_NAME_MAX);
        p = PUT_LIT(p, "\",\"host\":\"");
        p = put_cstr(p, e->host, ACCESSLOG_HOST_MAX);
        p = PUT_LIT(p, "\",\"port\":");
        p = put_u64(p, e->port);
        p = PUT_LIT(p, ",\"resolved\":\"");
        p = put_cstr(p, e->upstream, ACCESSLOG_NAME_MAX);
        p = PUT_LIT(p, "\"");
    } else {
        p = PUT_LIT(p, ",\"direction\":\"ingress\"");
    }
    p = PUT_LIT(p, "}\n");
    return (size_t)(p - out);
}

void accesslog_record(struct accesslog_buf *b, const struct accesslog_entry *e)
{
    if (b->buf == NULL)
        return;
    if (ACCESSLOG_BUF_SIZE - b->len < ACCESSLOG_ENTRY_MAX)
        accesslog_flush(b);
    b->len += accesslog_format(b, b->buf + b->len, e);
    b->lines++;
}
