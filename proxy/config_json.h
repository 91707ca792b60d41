/*
 * config_json.h - the effective configuration as JSON, for the admin's
 * GET /config: every section of struct config with its defaults filled in,
 * under the same keys as the YAML file, durations in milliseconds and sizes
 * in bytes, plus what only the running process knows (generation, load
 * time, the effective worker count).
 *
 * Secrets are never written: a certificate's key path shows as
 * "(redacted)". Nothing here opens a file; only what the config says is
 * rendered, never a file's content.
 */
#ifndef FNPROXY_CONFIG_JSON_H
#define FNPROXY_CONFIG_JSON_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define CONFIG_JSON_REDACTED "(redacted)"

/* What the running process adds to the config. */
struct config_json_meta {
    unsigned generation;  /* the snapshot's; 0: none (not shown) */
    const char *hash;     /* its cfghash.h hex digest; NULL: not shown */
    int64_t loaded_at_ms; /* Unix time in ms the config was loaded; 0: not shown */
    unsigned workers;     /* the effective worker count; 0: not shown */
};

/* Writes c as one JSON object and a newline. Returns 0, or -1 if out has
 * an error (it is left to the caller to discard the output). */
int config_json_render(FILE *out, const struct config *c, const struct config_json_meta *m);

#endif
