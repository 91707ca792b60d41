/*
 * dashboard.c - serves dashboard.html with the no-script table filled in
 * (dashboard.h). Runs on the admin's thread on each GET /dashboard.
 */
#include "dashboard.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Text for HTML: names are configured ([A-Za-z0-9_.-]), escaped anyway. */
static void put_html(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        case '\'':
            fputs("&#39;", out);
            break;
        default:
            putc(*s, out);
        }
    }
}

/* metrics_route_fn: one row. The columns are those the page's script
 * writes too (renderTable in dashboard.html). */
static void table_row(const struct route_stats *sum, void *arg)
{
    FILE *out = arg;
    uint64_t requests = 0, ok = 0, denials = 0;

    for (int c = 100; c < 600; c++) {
        requests += sum->codes[c];
        if (c < 500 && c != 499) /* history.h's success */
            ok += sum->codes[c];
    }
    for (int k = 0; k < DENY__N; k++)
        denials += sum->denials[k];
    fprintf(out, "<tr data-series=\"%s/", metrics_direction_name(sum->direction));
    put_html(out, sum->function);
    putc('/', out);
    put_html(out, sum->route);
    fprintf(out, "\"><td>%s</td><td>", metrics_direction_name(sum->direction));
    put_html(out, sum->function);
    fputs("</td><td>", out);
    put_html(out, sum->route);
    fprintf(out, "</td><td>%llu</td><td>", (unsigned long long)requests);
    if (requests == 0)
        fputs("-", out);
    else
        fprintf(out, "%.2f%%", 100.0 * (double)ok / (double)requests);
    fputs("</td><td>", out);
    metrics_json_ms(out, histogram_percentile(&sum->duration, 500));
    fputs("</td><td>", out);
    metrics_json_ms(out, histogram_percentile(&sum->duration, 990));
    fprintf(out, "</td><td>%llu</td><td>%llu</td></tr>\n", (unsigned long long)denials,
            (unsigned long long)sum->retries);
}

void dashboard_render(FILE *out, struct metrics *const *shards, size_t n)
{
    const char *mark = memmem(dashboard_html, dashboard_html_len, DASHBOARD_TABLE_MARK,
                              sizeof(DASHBOARD_TABLE_MARK) - 1);
    size_t head = mark != NULL ? (size_t)(mark - dashboard_html) : dashboard_html_len;
    struct route_stats *scratch;

    fwrite(dashboard_html, 1, head, out);
    if (mark == NULL)
        return;
    scratch = malloc(sizeof(*scratch));
    if (scratch != NULL) {
        metrics_each_route(shards, n, scratch, table_row, out);
        free(scratch);
    }
    head += sizeof(DASHBOARD_TABLE_MARK) - 1;
    fwrite(dashboard_html + head, 1, dashboard_html_len - head, out);
}
