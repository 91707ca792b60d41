/*
 * dashboard.h - GET /dashboard: one HTML page, embedded in the binary, that
 * charts the stats history (history.h) per route and direction by polling
 * /stats?history=1 every second. The page source is proxy/dashboard.html;
 * the build turns it into a C array (build/gen/dashboard_html.c, see the
 * Makefile), so the page has no asset outside the binary and works on an
 * isolated network.
 *
 * Without JavaScript the page still shows the current figures: the server
 * writes a table of them where the page has the marker DASHBOARD_TABLE_MARK,
 * and the script then keeps that table up to date and draws the charts.
 */
#ifndef FNPROXY_DASHBOARD_H
#define FNPROXY_DASHBOARD_H

#include <stddef.h>
#include <stdio.h>

#include "metrics.h"

#define DASHBOARD_TABLE_MARK "<!--FNPROXY-TABLE-->"

/* proxy/dashboard.html, byte for byte (generated). */
extern const char dashboard_html[];
extern const size_t dashboard_html_len;

/* The page with the table of the series in shards, summed as /stats sums
 * them, in place of the marker. */
void dashboard_render(FILE *out, struct metrics *const *shards, size_t n);

#endif
