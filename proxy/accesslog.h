/*
 * accesslog.h - JSON access log: one object per line, one line per request.
 *
 *   {"ts":"2024-05-01T12:34:56.789Z","request_id":"...",
 *    "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","client":"10.0.0.7",
 *    "listener":"public","method":"GET","path":"/resize","status":200,
 *    "function":"thumbnail","route":"resize","upstream":"127.0.0.1:9001",
 *    "bytes_in":412,"bytes_out":5120,"duration_ms":1.234,"upstream_ms":0.981}
 *
 * (on one line, keys always in this order). Strings are escaped so that a
 * line is always valid JSON and pure ASCII, whatever bytes a request had:
 * `"` and `\` are backslash-escaped, and every byte below 0x20, 0x7f and
 * every byte from 0x80 up is written as \u00XX. A byte >= 0x80 therefore
 * reads back as the code point of the same value: mapping each code point
 * of the decoded string to one byte gives back the bytes received exactly.
 * path is the request target up to the first '?' (the query is never
 * logged), cut to ACCESSLOG_PATH_MAX bytes; other request-supplied strings
 * (method, request_id) are cut to their limits below too.
 *
 * Two objects:
 *
 * - struct accesslog, one per process: where lines go (stdout or a file
 *   opened O_APPEND) and the mutex that keeps lines from different workers
 *   whole. accesslog_reopen() (SIGUSR1, after logrotate renamed the file)
 *   opens the path again and dup3()s it onto the same descriptor, so a
 *   worker never writes to a closed or reused fd.
 *
 * - struct accesslog_buf, one per worker: entries are formatted into it by
 *   hand (no printf, no malloc: about 90 ns for a typical entry, see
 *   bench/micro/bench_accesslog.c) and written with one write(2) per flush
 *   under the mutex (more only after a short write, still under it). It flushes by itself when less
 *   than ACCESSLOG_ENTRY_MAX bytes are left; the worker flushes it from a
 *   timer (every 100 ms) and before it exits.
 *
 * A flush on a blocking descriptor that cannot take more (a pipe nobody
 * reads) blocks that worker, as nginx's unbuffered log does; on a write
 * error the batch is dropped and counted in accesslog_buf.dropped.
 */
#ifndef FNPROXY_ACCESSLOG_H
#define FNPROXY_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACCESSLOG_BUF_SIZE (64 * 1024) /* per worker */
#define ACCESSLOG_PATH_MAX 2048        /* path bytes logged; the rest is cut */
#define ACCESSLOG_METHOD_MAX 32
#define ACCESSLOG_ID_MAX 128      /* request_id */
#define ACCESSLOG_TRACE_ID_MAX 32 /* trace_id: hex, but bounded as any string */
#define ACCESSLOG_NAME_MAX 128    /* client, listener, function, route, upstream (twice), verdict */
#define ACCESSLOG_HOST_MAX 253    /* egress host */
/* The longest line an entry can make: every byte escaped as \u00XX (6 bytes),
 * the numbers at 20 digits, the keys and punctuation. */
#define ACCESSLOG_ENTRY_MAX                                                                        \
    (6 * (ACCESSLOG_PATH_MAX + ACCESSLOG_METHOD_MAX + ACCESSLOG_ID_MAX + ACCESSLOG_TRACE_ID_MAX +  \
          7 * ACCESSLOG_NAME_MAX + ACCESSLOG_HOST_MAX) +                                           \
     ACCESSLOG_FIXED_MAX)
/* Keys, punctuation and numbers of the longest (egress) line: 434 bytes
 * today; test_worst_case_line (test_accesslog.c) checks a line of every
 * field at its maximum against both bounds. */
#define ACCESSLOG_FIXED_MAX 768

struct accesslog;

/* One request, as conn.c knows it when the exchange ends. Strings are
 * NUL-terminated unless they come with a length; NULL is logged as "". */
struct accesslog_entry {
    uint64_t ts_ms;         /* wall clock, ms since the epoch, when the request head was
                               parsed; 0 = now (see accesslog_now_ms) */
    const char *request_id; /* x-request-id, kept or generated */
    const char *trace_id;   /* W3C trace id, 32 hex digits, or "" (trace.h) */
    const char *client;     /* client IP address */
    const char *listener;   /* listener name */
    const char *method;     /* as received */
    uint32_t method_len;
    const char *target; /* the request target as received; cut at '?' here */
    uint32_t target_len;
    int status;           /* sent to the client; 0 if none was */
    const char *function; /* "" before routing */
    const char *route;
    const char *upstream; /* the endpoint's text ("127.0.0.1:9001", "unix:/x"), "" if none */
    uint64_t bytes_in;    /* request head bytes and body bytes (without chunk framing) */
    uint64_t bytes_out;   /* response bytes written to the client: head and body */
    uint64_t duration_us; /* as fnproxy_request_duration_seconds (metrics.h) */
    uint64_t upstream_us; /* as the upstream phase (metrics.h); 0 without an upstream */
    unsigned attempts;    /* attempts made (retries + 1; 0 when none was) */
    uint64_t queue_us;    /* waiting for admission (max_concurrency, readiness) */
    /* An egress request (a function's outbound call) also has: */
    bool egress;
    const char *verdict; /* "allow", "deny", "would_deny"; "" when refused before a decision */
    const char *host;    /* the canonical destination host ("" when the target was bad) */
    uint16_t port;
};

/* Per worker. Only its worker touches it. */
struct accesslog_buf {
    struct accesslog *log; /* NULL or disabled: records are dropped at once */
    char *buf;             /* ACCESSLOG_BUF_SIZE bytes; NULL when disabled */
    size_t len;            /* formatted bytes not yet written */
    uint64_t lines;        /* entries in buf */
    uint64_t written;      /* lines written since init */
    uint64_t dropped;      /* lines lost to write errors */
    uint64_t ts_sec;       /* the second ts_text holds */
    char ts_text[20];      /* "YYYY-MM-DDTHH:MM:SS" of ts_sec */
};

/* Opens the log for target: "stdout", "off" or a file path (created 0644,
 * appended to). NULL and "off" give a valid disabled log: buffers attached
 * to it drop every entry without formatting it. Returns NULL only on
 * failure, with a message in err. */
struct accesslog *accesslog_open(const char *target, char *err, size_t errlen);

/* True when entries are written somewhere. */
bool accesslog_enabled(const struct accesslog *log);

/* Opens the path again and puts it in place of the old file (dup2 onto the
 * same descriptor, under the mutex: a flush goes wholly to the old file or
 * wholly to the new). 0, or a negative errno with the old file kept. A no-op
 * for stdout and for a disabled log. Thread-safe. */
int accesslog_reopen(struct accesslog *log);

/* Closes the file and frees log. Every buffer attached to it must have been
 * released first. NULL is fine. */
void accesslog_close(struct accesslog *log);

/* Attaches b to log (which may be NULL: disabled). 0 or -ENOMEM. */
int accesslog_buf_init(struct accesslog_buf *b, struct accesslog *log);

/* Flushes what is left and frees the buffer. */
void accesslog_buf_release(struct accesslog_buf *b);

/* Formats one entry into b; flushes first if b might not hold it. */
void accesslog_record(struct accesslog_buf *b, const struct accesslog_entry *e);

/* Writes b's whole lines with one write(2) under the log's mutex. Returns 0
 * or a negative errno (the lines are then dropped and counted). */
int accesslog_flush(struct accesslog_buf *b);

/* Wall clock in ms since the epoch, for accesslog_entry.ts_ms. */
uint64_t accesslog_now_ms(void);

/* Formats e as one line (with its '\n') into out, which must hold
 * ACCESSLOG_ENTRY_MAX bytes; returns the length. For tests and benchmarks;
 * the timestamp cache is b's. */
size_t accesslog_format(struct accesslog_buf *b, char *out, const struct accesslog_entry *e);

#endif
