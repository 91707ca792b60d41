/*
 * trace.h - W3C Trace Context, level 1 (https://www.w3.org/TR/trace-context/):
 * parsing a received traceparent value, starting a trace, and writing the
 * traceparent line fnproxy sends with each attempt.
 *
 * The model: fnproxy is one hop of the trace. Each attempt to a function is
 * a span of fnproxy's, with a new random span id; the function receives
 *
 *   traceparent: 00-<trace id>-<fnproxy's span id for this attempt>-<flags>
 *
 * so fnproxy's attempt is the parent of the function's own span. The trace
 * id is the one received (a valid traceparent) or a new random one; the
 * flags are the received sampled bit (the other bits are cleared: level 1
 * says vendors MUST set them to zero), or 00 for a trace fnproxy starts
 * (the spec's default for a component that does not record traces itself).
 *
 * Pure: no I/O, no allocation; randomness comes from the caller.
 */
#ifndef FNPROXY_TRACE_H
#define FNPROXY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_HEX 32     /* trace-id: 16 bytes as lower-case hex */
#define TRACE_SPAN_HEX 16   /* parent-id / span id: 8 bytes */
#define TRACE_PARENT_LEN 55 /* a version 00 value: 2+1+32+1+16+1+2 */
#define TRACE_F_SAMPLED 0x01
/* "traceparent: " value "\r\n" */
#define TRACE_LINE_LEN (sizeof("traceparent: ") - 1 + TRACE_PARENT_LEN + 2)

/* The trace a request belongs to. All zero (trace_id "") before one is
 * known: nothing is sent, "" is logged. */
struct trace_ctx {
    char trace_id[TRACE_ID_HEX + 1]; /* lower-case hex, NUL-terminated */
    uint8_t flags;                   /* trace-flags sent on */
    bool kept;                       /* from a valid traceparent received */
};

/* A random 64-bit value (the worker's generator). */
typedef uint64_t trace_rand_fn(void *ctx);

/* Parses a traceparent value (its whitespace already trimmed). On success
 * fills t (trace id, sampled flag) and returns true; false for anything the
 * spec says to ignore: wrong length, a character that is not lower-case
 * hex, a missing '-', an all-zero trace or parent id, version ff. Versions
 * above 00 are parsed as the spec's versioning rules say: the first 55
 * characters as for 00, more only after a '-'. */
bool trace_parse(struct trace_ctx *t, const char *v, size_t len);

/* Starts a new trace: a random trace id, never all zero, and flags. */
void trace_start(struct trace_ctx *t, uint8_t flags, trace_rand_fn *rnd, void *ctx);

/* A random span id, never zero. */
uint64_t trace_span_id(trace_rand_fn *rnd, void *ctx);

/* Writes "traceparent: 00-<trace id>-<span>-<flags>\r\n" (TRACE_LINE_LEN
 * bytes, no NUL) into out; t must hold a trace and span must not be 0.
 * Returns TRACE_LINE_LEN. */
size_t trace_write_line(char *out, const struct trace_ctx *t, uint64_t span);

/* True when t holds a trace. */
static inline bool trace_known(const struct trace_ctx *t)
{
    return t->trace_id[0] != '\0';
}

#endif
