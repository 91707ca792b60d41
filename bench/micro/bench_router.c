/*
 * bench_router.c - what a routing decision costs: router_match() over the
 * gateway example (policy/examples/gateway.yaml, several functions, hosts,
 * wildcards and methods), for requests that hit an exact host, a wildcard,
 * a host-less route, and none. Prints ns per decision; asserts nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "micro.h"
#include "router.h"

#define ROUNDS 2000000

struct req {
    const char *what, *host, *path, *method;
};

int main(int argc, char **argv)
{
    static const struct req reqs[] = {
        {"exact host + path + method", "thumb.example.com", "/resize/a.png", "POST"},
        {"exact host, port, case", "API.example.com:8080", "/v1/orders/42", "GET"},
        {"wildcard host", "acme.thumbs.example.com", "/t/x", "GET"},
        {"no route", "nobody.invalid", "/", "GET"},
    };
    const char *path = argc > 1 ? argv[1] : "policy/examples/gateway.yaml";
    char err[CFG_ERR_MAX];
    struct config *c;
    struct route_match m;
    unsigned hits = 0;

    if (config_load(path, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct router *r = router_new(c);
    if (r == NULL) {
        config_free(c);
        return 1;
    }
    printf("router_match over %s (%zu functions)\n", path, c->n_functions);
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        const struct req *q = &reqs[i];
        uint64_t t0 = now_ns();
        for (int k = 0; k < ROUNDS; k++)
            hits += router_match(r, 0, q->host, strlen(q->host), q->path, strlen(q->path),
                                 q->method, strlen(q->method), &m) == 0;
        uint64_t t1 = now_ns();
        printf("  %-28s %6.1f ns/decision\n", q->what, (double)(t1 - t0) / ROUNDS);
    }
    printf("(%u matches)\n", hits);
    router_free(r);
    config_free(c);
    return 0;
}
