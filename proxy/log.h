/*
 * log.h - the operational log: one line per event on stderr, with a UTC
 * timestamp and the thread that wrote it. Per-request access logs are a
 * separate module (DESIGN.md: access_log).
 */
#ifndef FNPROXY_LOG_H
#define FNPROXY_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Names the calling thread in its log lines, e.g. "worker 1". */
void log_set_thread(const char *name);

/* True at most once per interval_ms for the given state: for errors that can
 * repeat thousands of times a second (accept failures). */
bool log_ratelimit(uint64_t *last_ms, uint64_t interval_ms);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_threshold >= LOG_DEBUG)                                                            \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)

#endif
