/*
 * trace.c - W3C Trace Context values (trace.h): a strict parser for a
 * received traceparent and hand-written hex for the one fnproxy sends, so
 * the per-attempt cost is two random draws' worth of formatting, no printf.
 */
#include "trace.h"

#include <string.h>

static const char hex_digits[] = "0123456789abcdef";

/* Lower-case hex only: the spec's HEXDIGLC. */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* n lower-case hex digits, not all zero when nonzero is set. */
static bool hex_field(const char *p, size_t n, bool nonzero)
{
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        int d = hexval(p[i]);
        if (d < 0)
            return false;
        any |= d != 0;
    }
    return any || !nonzero;
}

bool trace_parse(struct trace_ctx *t, const char *v, size_t len)
{
    /* version "-" trace-id "-" parent-id "-" trace-flags: dashes at 2, 35, 52. */
    if (len < TRACE_PARENT_LEN)
        return false;
    if (!hex_field(v, 2, false) || (v[0] == 'f' && v[1] == 'f'))
        return false;
    bool v00 = v[0] == '0' && v[1] == '0';
    /* 00 is exactly 55 characters; a later version may add fields, each
     * after a dash (versioning rules: parse what 00 defines, ignore the rest). */
    if (v00 ? len != TRACE_PARENT_LEN : len > TRACE_PARENT_LEN && v[TRACE_PARENT_LEN] != '-')
        return false;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return false;
    if (!hex_field(v + 3, TRACE_ID_HEX, true) || !hex_field(v + 36, TRACE_SPAN_HEX, true) ||
        !hex_field(v + 53, 2, false))
        return false;
    memcpy(t->trace_id, v + 3, TRACE_ID_HEX);
    t->trace_id[TRACE_ID_HEX] = '\0';
    t->flags = (uint8_t)(hexval(v[54]) & TRACE_F_SAMPLED);
    t->kept = true;
    return true;
}

static void put_hex64(char *out, uint64_t v)
{
    for (int i = 15; i >= 0; i--) {
        out[i] = hex_digits[v & 0xf];
        v >>= 4;
    }
}

uint64_t trace_span_id(trace_rand_fn *rnd, void *ctx)
{
    uint64_t v;

    do
        v = rnd(ctx);
    while (v == 0);
    return v;
}

void trace_start(struct trace_ctx *t, uint8_t flags, trace_rand_fn *rnd, void *ctx)
{
    uint64_t hi, lo;

    do {
        hi = rnd(ctx);
        lo = rnd(ctx);
    } while (hi == 0 && lo == 0);
    put_hex64(t->trace_id, hi);
    put_hex64(t->trace_id + 16, lo);
    t->trace_id[TRACE_ID_HEX] = '\0';
    t->flags = flags & TRACE_F_SAMPLED;
    t->kept = false;
}

size_t trace_write_line(char *out, const struct trace_ctx *t, uint64_t span)
{
    static const char name[] = "traceparent: 00-";
    char *p = out;

    memcpy(p, name, sizeof(name) - 1);
    p += sizeof(name) - 1;
    memcpy(p, t->trace_id, TRACE_ID_HEX);
    p += TRACE_ID_HEX;
    *p++ = '-';
    put_hex64(p, span);
    p += TRACE_SPAN_HEX;
    *p++ = '-';
    *p++ = hex_digits[t->flags >> 4 & 0xf];
    *p++ = hex_digits[t->flags & 0xf];
    *p++ = '\r';
    *p++ = '\n';
    return (size_t)(p - out);
}
