/*
 * fuzz_config.c - libFuzzer target for the config parser and the router it
 * feeds: any bytes as a YAML file; a config that passes validation is
 * compiled and routed against. Leaks count as findings (LeakSanitizer).
 * `make fuzz`.
 */
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CFG_ERR_MAX];
    struct config *c = NULL;
    struct route_match m;

    if (config_parse("fuzz.yaml", (const char *)data, size, &c, err, sizeof(err)) != 0)
        return 0;
    struct router *r = router_new(c);
    if (r != NULL) {
        for (size_t l = 0; l < c->n_listeners; l++)
            router_match(r, l, "Thumb.Example.com.:8080", 23, "/resize/x", 9, "POST", 4, &m);
        router_free(r);
    }
    config_free(c);
    return 0;
}
