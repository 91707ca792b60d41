/*
 * log.c - operational log lines on stderr. Each line is formatted into one
 * buffer and written with a single write(2), so lines from several threads
 * never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static _Thread_local char thread_name[24] = "main";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_thread(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    size_t n;

    if (level > log_threshold)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n,
                          ".%03ldZ fnproxy[%s] %s: ", ts.tv_nsec / 1000000, thread_name,
                          level_names[level]);
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* Nothing useful can be done when stderr is gone. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

bool log_ratelimit(uint64_t *last_ms, uint64_t interval_ms)
{
    struct timespec ts;
    uint64_t now;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (*last_ms != 0 && now - *last_ms < interval_ms)
        return false;
    *last_ms = now;
    return true;
}
