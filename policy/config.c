/*
 * config.c - the YAML configuration read into struct config, with errors
 * that say exactly where and what: "file:line:col: key.path: message".
 *
 * Reading takes two steps. libyaml's event parser first builds a small tree
 * of our own (struct ynode) in an arena. We do not use libyaml's document
 * API because it resolves aliases silently: an alias would make one node
 * appear in several places (and a few of them can multiply the work of a
 * walk exponentially), while with events we see the alias and can refuse it
 * at its own position. The tree keeps every node's 1-based line and column.
 *
 * Then the tree is walked against the schema, building struct config out of
 * malloc'd pieces that config_free() releases, and keeping the key path
 * ("functions[0].ingress.routes[2].timeout") alongside so that each error
 * names where it is. The arena holds only the tree, so one release on every
 * path, error or not, frees it; the config is freed by config_free() on
 * every error path, which is why every array is zeroed before it is filled.
 *
 * The walk stops at the first error: one precise message beats a list whose
 * later entries are mostly consequences of the first. Cross checks that need
 * the whole of a list (duplicate names, clashing addresses, routes that can
 * never match) run once that list is read, and sort rather than compare all
 * pairs so that a large file cannot make validation quadratic.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include "egress_addr.h"
#include "egress_rules.h"

#define CONFIG_FILE_MAX (4u << 20) /* larger files are refused unread */
#define CONFIG_DEPTH_MAX 64        /* our schema nests 7 deep; this only stops abuse */
#define NAME_LEN_MAX 64
#define HOST_LEN_MAX 253
/* Durations are capped at one day: nothing in fnproxy waits longer, and a
 * bound keeps deadline arithmetic (now + timeout) far from overflowing. */
#define DURATION_MAX_MS (24ull * 60 * 60 * 1000)
#define ARENA_BLOCK (64u << 10)

#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* ---- arena: the YAML tree lives here and is released at once ---- */

struct arena_block {
    struct arena_block *next;
    size_t used, cap; /* bytes of data[] */
    _Alignas(max_align_t) char data[];
};

struct arena {
    struct arena_block *head;
};

static void *arena_alloc(struct arena *a, size_t size)
{
    const size_t align = _Alignof(max_align_t);
    struct arena_block *b = a->head;
    void *p;

    size = (size + align - 1) & ~(align - 1);
    if (!b || b->cap - b->used < size) {
        size_t cap = size > ARENA_BLOCK ? size : ARENA_BLOCK;

        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    p = b->data + b->used;
    b->used += size;
    return p;
}

static void arena_release(struct arena *a)
{
    while (a->head) {
        struct arena_block *next = a->head->next;

        free(a->head);
        a->head = next;
    }
}

/* ---- the YAML tree ---- */

enum ynode_type { YN_SCALAR = 0, YN_MAP, YN_SEQ };

struct ynode {
    enum ynode_type type;
    int line, col;   /* 1-based, where the node starts */
    bool plain;      /* an unquoted scalar: only those can be null */
    const char *str; /* scalar value, NUL-terminated (may hold NULs too) */
    size_t len;
    struct ynode *first, *last; /* children; a map alternates key, value */
    struct ynode *next;         /* next sibling */
    size_t n;                   /* number of children */
};

struct egress_listen;

/* Parser state: where errors go, the key path so far, the config being built. */
struct pctx {
    const char *name; /* file name for messages */
    char *err;
    size_t errlen;
    bool failed;    /* the first error wins; later ones are consequences */
    char path[256]; /* "functions[0].ingress.routes[2]" */
    size_t plen;
    struct arena arena;
    struct config *c;
    const struct ynode **listen_nodes;   /* listeners[i].listen, for clash messages */
    const struct ynode **listener_names; /* top-level listeners[i].name */
    struct egress_listen *egress_listen; /* functions[i].egress.listen, until appended */
    const struct ynode *admin_listen;    /* admin.listen value */
};

static int vfail_at(struct pctx *x, int line, int col, const char *fmt, va_list ap)
{
    char msg[CFG_ERR_MAX];

    if (x->failed)
        return -EINVAL;
    x->failed = true;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (!x->err || !x->errlen)
        return -EINVAL;
    if (x->plen)
        snprintf(x->err, x->errlen, "%s:%d:%d: %s: %s", x->name, line, col, x->path, msg);
    else
        snprintf(x->err, x->errlen, "%s:%d:%d: %s", x->name, line, col, msg);
    return -EINVAL;
}

static int fail_at(struct pctx *x, int line, int col, const char *fmt, ...) PRINTF_LIKE(4, 5);
static int fail_at(struct pctx *x, int line, int col, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vfail_at(x, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

/* Reports an error at node n under the current key path. */
static int fail(struct pctx *x, const struct ynode *n, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int fail(struct pctx *x, const struct ynode *n, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vfail_at(x, n->line, n->col, fmt, ap);
    va_end(ap);
    return rc;
}

static int fail_oom(struct pctx *x)
{
    if (!x->failed && x->err && x->errlen)
        snprintf(x->err, x->errlen, "%s: out of memory", x->name);
    x->failed = true;
    return -ENOMEM;
}

/* ---- key path ---- */

static size_t path_push(struct pctx *x, const char *fmt, ...) PRINTF_LIKE(2, 3);
static size_t path_push(struct pctx *x, const char *fmt, ...)
{
    size_t mark = x->plen;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(x->path + x->plen, sizeof(x->path) - x->plen, fmt, ap);
    va_end(ap);
    if (n > 0) {
        x->plen += (size_t)n;
        if (x->plen > sizeof(x->path) - 1)
            x->plen = sizeof(x->path) - 1;
    }
    return mark;
}

static size_t path_key(struct pctx *x, const char *key)
{
    return x->plen ? path_push(x, ".%s", key) : path_push(x, "%s", key);
}

static size_t path_index(struct pctx *x, size_t i)
{
    return path_push(x, "[%zu]", i);
}

static void path_pop(struct pctx *x, size_t mark)
{
    x->plen = mark;
    x->path[mark] = '\0';
}

/* ---- building the tree from libyaml events ---- */

struct tree_builder {
    struct ynode *stack[CONFIG_DEPTH_MAX]; /* open maps and lists */
    size_t depth;
    struct ynode *root;
    int docs;
    bool done;
};

static void offset_to_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
    size_t i, start = 0;

    *line = 1;
    for (i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            start = i + 1;
        }
    }
    *col = (int)(i - start) + 1;
}

static int fail_yaml(struct pctx *x, const yaml_parser_t *p, const char *buf, size_t len)
{
    const char *problem = p->problem ? p->problem : "syntax error";
    int line, col;

    if (p->error == YAML_MEMORY_ERROR)
        return fail_oom(x);
    /* The reader (encoding, control characters) reports a byte offset only. */
    if (p->error == YAML_READER_ERROR) {
        offset_to_pos(buf, len, p->problem_offset, &line, &col);
    } else {
        line = (int)p->problem_mark.line + 1;
        col = (int)p->problem_mark.column + 1;
    }
    if (p->context)
        return fail_at(x, line, col, "invalid YAML: %s (%s at %d:%d)", problem, p->context,
                       (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return fail_at(x, line, col, "invalid YAML: %s", problem);
}

static int tree_event(struct pctx *x, struct tree_builder *b, const yaml_event_t *ev)
{
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    enum ynode_type type;
    struct ynode *n;

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        b->done = true;
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (b->docs++ > 0)
            return fail_at(x, line, col, "expected one YAML document, found a second");
        return 0;
    case YAML_ALIAS_EVENT:
        return fail_at(x, line, col, "YAML aliases are not supported");
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        b->depth--;
        return 0;
    case YAML_SCALAR_EVENT:
        type = YN_SCALAR;
        break;
    case YAML_SEQUENCE_START_EVENT:
        type = YN_SEQ;
        break;
    case YAML_MAPPING_START_EVENT:
        type = YN_MAP;
        break;
    default:
        return 0;
    }

    n = arena_alloc(&x->arena, sizeof(*n));
    if (!n)
        return fail_oom(x);
    memset(n, 0, sizeof(*n));
    n->type = type;
    n->line = line;
    n->col = col;
    if (type == YN_SCALAR) {
        char *s = arena_alloc(&x->arena, ev->data.scalar.length + 1);

        if (!s)
            return fail_oom(x);
        memcpy(s, ev->data.scalar.value, ev->data.scalar.length);
        s[ev->data.scalar.length] = '\0';
        n->str = s;
        n->len = ev->data.scalar.length;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    }

    if (b->depth) {
        struct ynode *parent = b->stack[b->depth - 1];

        if (parent->last)
            parent->last->next = n;
        else
            parent->first = n;
        parent->last = n;
        parent->n++;
    } else {
        b->root = n;
    }
    if (type != YN_SCALAR) {
        if (b->depth == CONFIG_DEPTH_MAX)
            return fail_at(x, line, col, "nested deeper than %d levels", CONFIG_DEPTH_MAX);
        b->stack[b->depth++] = n;
    }
    return 0;
}

static int tree_build(struct pctx *x, const char *buf, size_t len, struct ynode **root)
{
    struct tree_builder b = {0};
    yaml_parser_t p;
    yaml_event_t ev;
    int rc = 0;

    *root = NULL;
    if (!yaml_parser_initialize(&p))
        return fail_oom(x);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    while (!b.done && rc == 0) {
        if (!yaml_parser_parse(&p, &ev)) {
            rc = fail_yaml(x, &p, buf, len);
            break;
        }
        rc = tree_event(x, &b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc == 0)
        *root = b.root;
    return rc;
}

/* ---- scalars ---- */

static bool node_is_null(const struct ynode *n)
{
    if (n->type != YN_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

/* A scalar with a value: where one is expected, null is as wrong as a map. */
static bool node_is_value(const struct ynode *n)
{
    return n->type == YN_SCALAR && !node_is_null(n);
}

static bool node_eq(const struct ynode *n, const char *s)
{
    size_t len = strlen(s);

    return n->type == YN_SCALAR && n->len == len && memcmp(n->str, s, len) == 0;
}

/* A copy of a scalar fit to quote in a message: short, printable. */
static const char *node_shown(const struct ynode *n, char *buf, size_t size)
{
    size_t i, max = size - 4;

    if (n->type != YN_SCALAR)
        return n->type == YN_MAP ? "{...}" : "[...]";
    for (i = 0; i < n->len && i < max; i++) {
        unsigned char ch = (unsigned char)n->str[i];

        buf[i] = ch >= 0x20 && ch < 0x7f && ch != '"' ? (char)ch : '?';
    }
    if (i < n->len) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static char *dup_node(struct pctx *x, const char *s, size_t len)
{
    char *p = malloc(len + 1);

    if (!p) {
        fail_oom(x);
        return NULL;
    }
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Reads leading decimal digits into *v; *big is set if they overflow. */
static size_t scan_uint(const char *s, size_t len, uint64_t *v, bool *big)
{
    size_t i;

    *v = 0;
    *big = false;
    for (i = 0; i < len && is_digit(s[i]); i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (*v > (UINT64_MAX - d) / 10)
            *big = true;
        else
            *v = *v * 10 + d;
    }
    return i;
}

/* "250ms", "10s", "2m": digits and a unit, nothing else. Returns 0,
 * -EINVAL when malformed, -ERANGE when too long. */
static int duration_parse(const char *s, size_t len, uint64_t *ms)
{
    uint64_t v, mult;
    bool big;
    size_t i = scan_uint(s, len, &v, &big);
    const char *unit = s + i;
    size_t ulen = len - i;

    if (i == 0)
        return -EINVAL;
    if (ulen == 2 && memcmp(unit, "ms", 2) == 0)
        mult = 1;
    else if (ulen == 1 && unit[0] == 's')
        mult = 1000;
    else if (ulen == 1 && unit[0] == 'm')
        mult = 60 * 1000;
    else
        return -EINVAL;
    if (big || v > DURATION_MAX_MS / mult)
        return -ERANGE;
    *ms = v * mult;
    return 0;
}

/* "512", "512B", "16KiB", "8MiB", "1GiB". Decimal units (KB) are refused
 * rather than guessed at. */
static int size_parse(const char *s, size_t len, uint64_t *bytes)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1}, {"B", 1}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}};
    uint64_t v;
    bool big;
    size_t i = scan_uint(s, len, &v, &big), u;

    if (i == 0)
        return -EINVAL;
    for (u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        if (strlen(units[u].unit) == len - i && memcmp(s + i, units[u].unit, len - i) == 0)
            break;
    }
    if (u == sizeof(units) / sizeof(units[0]))
        return -EINVAL;
    if (big || v > UINT64_MAX / units[u].mult)
        return -ERANGE;
    *bytes = v * units[u].mult;
    return 0;
}

static int get_duration(struct pctx *x, const struct ynode *v, uint64_t *ms)
{
    int rc;

    if (!node_is_value(v))
        return fail(x, v, "expected a duration like 10s");
    rc = duration_parse(v->str, v->len, ms);
    if (rc == -ERANGE)
        return fail(x, v, "duration too large: at most 1440m");
    if (rc < 0)
        return fail(x, v, "expected a duration like 10s");
    return 0;
}

/* Timeouts: a zero would fire at once, which is never what was meant. */
static int get_timeout(struct pctx *x, const struct ynode *v, uint64_t *ms)
{
    int rc = get_duration(x, v, ms);

    if (rc == 0 && *ms == 0)
        return fail(x, v, "must be greater than zero");
    return rc;
}

static int get_size(struct pctx *x, const struct ynode *v, uint64_t *bytes)
{
    int rc;

    if (!node_is_value(v))
        return fail(x, v, "expected a size like 16KiB");
    rc = size_parse(v->str, v->len, bytes);
    if (rc == -ERANGE)
        return fail(x, v, "size too large");
    if (rc < 0)
        return fail(x, v, "expected a size like 16KiB");
    return 0;
}

static bool name_valid(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > NAME_LEN_MAX)
        return false;
    for (i = 0; i < len; i++) {
        char ch = s[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || is_digit(ch) || ch == '_' ||
              ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

static int get_name(struct pctx *x, const struct ynode *v, char **out)
{
    if (!node_is_value(v) || !name_valid(v->str, v->len))
        return fail(x, v, "expected a name: 1 to 64 characters from A-Z a-z 0-9 _ . -");
    *out = dup_node(x, v->str, v->len);
    return *out ? 0 : -ENOMEM;
}

/* ---- addresses ---- */

static bool port_parse(const char *s, size_t len, uint16_t *port)
{
    uint64_t v;
    bool big;

    if (len == 0 || len > 5 || scan_uint(s, len, &v, &big) != len || v == 0 || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* "127.0.0.1:8080", "[::1]:8080", "localhost:8080", and for endpoints
 * "unix:/abs/path". Names other than localhost are refused: resolving them
 * here would tie the config's meaning to DNS at load time. */
static int get_addr(struct pctx *x, const struct ynode *v, bool allow_unix, struct cfg_addr *a)
{
    const char *what = allow_unix ? "expected IP:port or unix:/path" : "expected IP:port";
    const char *s = v->str, *colon;
    char host[INET6_ADDRSTRLEN + 1];
    size_t len = v->len, hlen;
    uint16_t port;

    memset(a, 0, sizeof(*a));
    if (!node_is_value(v) || len >= sizeof(a->text) || memchr(s, '\0', len))
        return fail(x, v, "%s", what);
    memcpy(a->text, s, len);
    a->text[len] = '\0';

    if (len >= 5 && memcmp(s, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&a->sa;
        size_t plen = len - 5;

        if (!allow_unix)
            return fail(x, v, "expected IP:port; unix sockets are only for endpoints");
        if (plen == 0 || s[5] != '/')
            return fail(x, v, "expected unix:/absolute/path");
        if (plen >= sizeof(sun->sun_path))
            return fail(x, v, "unix socket path too long: at most %zu bytes",
                        sizeof(sun->sun_path) - 1);
        a->kind = CFG_ADDR_UNIX;
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, s + 5, plen);
        a->sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
        return 0;
    }

    a->kind = CFG_ADDR_INET;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);

        if (!close || close + 1 == s + len || close[1] != ':')
            return fail(x, v, "%s", what);
        colon = close + 1;
        hlen = (size_t)(close - s - 1);
        if (hlen >= sizeof(host))
            return fail(x, v, "%s", what);
        memcpy(host, s + 1, hlen);
    } else {
        colon = memchr(s, ':', len);
        if (!colon || memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)))
            return fail(x, v, "%s", what);
        hlen = (size_t)(colon - s);
        if (hlen >= sizeof(host))
            return fail(x, v, "%s", what);
        memcpy(host, s, hlen);
    }
    host[hlen] = '\0';
    if (!port_parse(colon + 1, len - (size_t)(colon + 1 - s), &port))
        return fail(x, v, "port must be from 1 to 65535");

    if (s[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return fail(x, v, "%s", what);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        a->sa_len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;

        if (strcmp(host, "localhost") == 0)
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return fail(x, v, "%s", what);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        a->sa_len = sizeof(*sin);
    }
    return 0;
}

/* ---- route match values ---- */

static bool host_label_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || is_digit(ch) || ch == '-' || ch == '_';
}

static bool host_name_valid(const char *s, size_t len)
{
    size_t i, label = 0;

    if (len == 0 || len > HOST_LEN_MAX)
        return false;
    for (i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (host_label_char(s[i]) && ++label <= 63) {
            continue;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* Stores the host as the router compares it: lower case, no trailing dot,
 * IPv6 literals without brackets. */
static int get_host(struct pctx *x, const struct ynode *v, char **out)
{
    static const char what[] = "expected a host like api.example.com or *.example.com";
    char buf[HOST_LEN_MAX + 3], *h = buf;
    struct in6_addr a6;
    size_t i, n = v->len;
    const char *colon;

    if (!node_is_value(v) || n == 0 || n >= sizeof(buf) || memchr(v->str, '\0', n))
        return fail(x, v, "%s", what);
    for (i = 0; i < n; i++) {
        char ch = v->str[i];

        buf[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    buf[n] = '\0';

    if (h[0] == '[') {
        if (h[n - 1] != ']' && strstr(h, "]:"))
            return fail(x, v, "expected a host without a port");
        if (h[n - 1] != ']')
            return fail(x, v, "%s", what);
        h[n - 1] = '\0';
        h++;
        n -= 2;
        if (inet_pton(AF_INET6, h, &a6) != 1)
            return fail(x, v, "%s", what);
    } else if ((colon = memchr(h, ':', n)) != NULL) {
        if (inet_pton(AF_INET6, h, &a6) != 1) {
            bool one_colon = !memchr(colon + 1, ':', n - (size_t)(colon + 1 - h));
            uint16_t port;

            if (one_colon && port_parse(colon + 1, n - (size_t)(colon + 1 - h), &port))
                return fail(x, v, "expected a host without a port");
            return fail(x, v, "%s", what);
        }
    } else {
        bool wild;

        if (h[n - 1] == '.')
            h[--n] = '\0';
        wild = n >= 2 && h[0] == '*' && h[1] == '.';
        if (!host_name_valid(h + (wild ? 2 : 0), n - (wild ? 2 : 0))) {
            if (memchr(h, '*', n))
                return fail(x, v,
                            "the * wildcard must be the whole first label, like *.example.com");
            return fail(x, v, "%s", what);
        }
    }
    *out = dup_node(x, h, n);
    return *out ? 0 : -ENOMEM;
}

static int get_path_prefix(struct pctx *x, const struct ynode *v, char **out)
{
    size_t i;

    if (!node_is_value(v) || v->len == 0 || v->str[0] != '/')
        goto out_bad;
    /* Request targets are ASCII: anything else here could never match. */
    for (i = 0; i < v->len; i++) {
        unsigned char ch = (unsigned char)v->str[i];

        if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
            goto out_bad;
    }
    *out = dup_node(x, v->str, v->len);
    return *out ? 0 : -ENOMEM;

out_bad:
    return fail(x, v, "expected a path like /api: ASCII, starting with /, without spaces, ? or #");
}

static const struct {
    const char *name;
    unsigned bit;
} methods[] = {
    {"GET", CFG_M_GET},         {"HEAD", CFG_M_HEAD},     {"POST", CFG_M_POST},
    {"PUT", CFG_M_PUT},         {"DELETE", CFG_M_DELETE}, {"PATCH", CFG_M_PATCH},
    {"OPTIONS", CFG_M_OPTIONS}, {"TRACE", CFG_M_TRACE},
};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

unsigned cfg_method_bit(const char *name, size_t len)
{
    size_t i;

    if (!name)
        return 0;
    for (i = 0; i < N_METHODS; i++) {
        if (strlen(methods[i].name) == len && memcmp(methods[i].name, name, len) == 0)
            return methods[i].bit;
    }
    return 0;
}

static int method_index(unsigned bit)
{
    int i = 0;

    while (!(bit & 1u)) {
        bit >>= 1;
        i++;
    }
    return i;
}

static int get_methods(struct pctx *x, const struct ynode *v, unsigned *out)
{
    const struct ynode *first[N_METHODS] = {0};
    const struct ynode *it;
    size_t i = 0, mark;
    char shown[48];
    unsigned bits = 0;

    if (v->type != YN_SEQ || v->n == 0)
        return fail(x, v, "expected a non-empty list of methods, like [GET, POST]");
    for (it = v->first; it; it = it->next, i++) {
        unsigned bit = node_is_value(it) ? cfg_method_bit(it->str, it->len) : 0;
        int rc = 0;

        mark = path_index(x, i);
        if (!bit)
            rc = fail(x, it,
                      "unknown method \"%s\": expected GET, HEAD, POST, PUT, DELETE, PATCH, "
                      "OPTIONS or TRACE",
                      node_shown(it, shown, sizeof(shown)));
        else if (bits & bit)
            rc = fail(x, it, "duplicate method %s (first at %s:%d:%d)", it->str, x->name,
                      first[method_index(bit)]->line, first[method_index(bit)]->col);
        if (rc < 0)
            return rc;
        first[method_index(bit)] = it;
        bits |= bit;
        path_pop(x, mark);
    }
    *out = bits;
    return 0;
}

/* ---- maps ---- */

/* Checks one key of a map against the keys it may have: a scalar, known,
 * seen once. Returns its index in known[]; or reports the error (the path
 * then names the key) and returns a negative code. */
static int map_key(struct pctx *x, const struct ynode *k, const char *const *known,
                   const struct ynode **seen)
{
    char shown[48];
    int i;

    if (k->type != YN_SCALAR)
        return fail(x, k, "expected a key name, found a %s", k->type == YN_MAP ? "map" : "list");
    for (i = 0; known[i]; i++) {
        if (!node_eq(k, known[i]))
            continue;
        if (seen[i]) {
            path_key(x, known[i]);
            return fail(x, k, "duplicate key \"%s\" (first at %s:%d:%d)", known[i], x->name,
                        seen[i]->line, seen[i]->col);
        }
        seen[i] = k;
        return i;
    }
    node_shown(k, shown, sizeof(shown));
    path_key(x, shown);
    return fail(x, k, "unknown key \"%s\"", shown);
}

/* Takes the value of one key of a map, by the key's index in known[]. */
typedef int map_value_fn(struct pctx *x, int key, const struct ynode *v, void *obj);

/* Checks each key of map n (map_key) and hands its value to take, with the
 * key on the error path. seen[] then holds the known keys found. */
static int map_walk(struct pctx *x, const struct ynode *n, const char *const *known,
                    const struct ynode **seen, map_value_fn *take, void *obj)
{
    const struct ynode *k, *v;

    for (k = n->first; k != NULL && (v = k->next) != NULL; k = v->next) {
        int i = map_key(x, k, known, seen), rc;
        size_t mark;

        if (i < 0)
            return i;
        mark = path_key(x, known[i]);
        rc = take(x, i, v, obj);
        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    return 0;
}

/* The key node of key in map n (already walked, so there is at most one);
 * NULL if absent or n is no map. For checks made once a whole map is read
 * that must point at one key inside it. */
static const struct ynode *map_get(const struct ynode *n, const char *key)
{
    const struct ynode *k;

    if (n == NULL || n->type != YN_MAP)
        return NULL;
    for (k = n->first; k != NULL && k->next != NULL; k = k->next->next)
        if (node_eq(k, key))
            return k;
    return NULL;
}

/* ---- duplicate detection ---- */

struct dup_item {
    const char *key;
    size_t idx;
};

static int dup_cmp(const void *a, const void *b)
{
    const struct dup_item *p = a, *q = b;
    int r = strcmp(p->key, q->key);

    if (r)
        return r;
    return p->idx < q->idx ? -1 : p->idx > q->idx;
}

/* Finds the first item, in list order, whose name an earlier item already
 * has. The name is the char * at offset off in items of the given stride.
 * Returns 1 and sets *dup and *first; 0 if names are unique; -ENOMEM. */
static int find_dup(struct pctx *x, const void *base, size_t n, size_t stride, size_t off,
                    size_t *dup, size_t *first)
{
    struct dup_item *v;
    size_t i, head = 0;
    int found = 0;

    if (n < 2)
        return 0;
    v = arena_alloc(&x->arena, n * sizeof(*v));
    if (!v)
        return fail_oom(x);
    for (i = 0; i < n; i++) {
        v[i].key = *(char *const *)((const char *)base + i * stride + off);
        v[i].idx = i;
    }
    qsort(v, n, sizeof(*v), dup_cmp);
    for (i = 1; i < n; i++) {
        if (strcmp(v[i].key, v[head].key) != 0) {
            head = i;
            continue;
        }
        if (!found || v[i].idx < *dup) {
            *dup = v[i].idx;
            *first = v[head].idx;
            found = 1;
        }
    }
    return found;
}

/* ---- listeners ---- */

struct addr_key {
    uint16_t port;
    uint8_t addr[17]; /* family byte, then the address */
    bool any;         /* 0.0.0.0 or [::]: takes the port on every address */
    size_t idx;
};

static void addr_key_of(const struct cfg_addr *a, struct addr_key *k)
{
    memset(k->addr, 0, sizeof(k->addr));
    k->any = false;
    if (a->kind == CFG_ADDR_UNIX) {
        /* Port 0, which no inet listener has, and the path's FNV-1a hash
         * as the address: the same path is the same key. */
        const char *path = ((const struct sockaddr_un *)&a->sa)->sun_path;
        uint64_t h = 0xcbf29ce484222325ULL;

        k->port = 0;
        k->addr[0] = 'u';
        for (const char *p = path; *p != '\0'; p++)
            h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
        memcpy(k->addr + 1, &h, sizeof(h));
        return;
    }
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;

        k->port = ntohs(sin->sin_port);
        k->addr[0] = 4;
        memcpy(k->addr + 1, &sin->sin_addr, 4);
        k->any = sin->sin_addr.s_addr == htonl(INADDR_ANY);
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->sa;

        k->port = ntohs(sin6->sin6_port);
        k->addr[0] = 6;
        memcpy(k->addr + 1, &sin6->sin6_addr, 16);
        k->any = IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
    }
}

/* Two listen addresses clash when the port is the same and either the
 * addresses are, or one is a wildcard (with Linux's default dual-stack
 * sockets, [::] takes the IPv4 port as well). */
static bool addr_clash(const struct addr_key *a, const struct addr_key *b)
{
    return a->port == b->port &&
           (a->any || b->any || memcmp(a->addr, b->addr, sizeof(a->addr)) == 0);
}

static int addr_key_cmp(const void *a, const void *b)
{
    const struct addr_key *p = a, *q = b;
    int r;

    if (p->port != q->port)
        return p->port < q->port ? -1 : 1;
    r = memcmp(p->addr, q->addr, sizeof(p->addr));
    if (r)
        return r;
    return p->idx < q->idx ? -1 : p->idx > q->idx;
}

/* Finds the first listener, in list order, whose address clashes with an
 * earlier one's. Sorted by port then address, clashes stay within a run of
 * one port: either the same address (adjacent) or a wildcard in the run. */
static int find_addr_clash(struct pctx *x, size_t *dup, size_t *first)
{
    const struct config *c = x->c;
    size_t n = c->n_listeners, i, j, run;
    struct addr_key *k;
    int found = 0;

    if (n < 2)
        return 0;
    k = arena_alloc(&x->arena, n * sizeof(*k));
    if (!k)
        return fail_oom(x);
    for (i = 0; i < n; i++) {
        addr_key_of(&c->listeners[i].listen, &k[i]);
        k[i].idx = i;
    }
    qsort(k, n, sizeof(*k), addr_key_cmp);
    for (run = 0; run < n; run = j) {
        size_t lo = SIZE_MAX, lo_any = SIZE_MAX, same = run;

        for (j = run; j < n && k[j].port == k[run].port; j++) {
            lo = k[j].idx < lo ? k[j].idx : lo;
            if (k[j].any && k[j].idx < lo_any)
                lo_any = k[j].idx;
        }
        for (i = run; i < j; i++) {
            size_t earliest = SIZE_MAX;

            if (i > run && memcmp(k[i].addr, k[i - 1].addr, sizeof(k[i].addr)) == 0)
                earliest = k[same].idx;
            else
                same = i;
            if (lo_any < k[i].idx && lo_any < earliest)
                earliest = lo_any;
            if (k[i].any && lo < k[i].idx && lo < earliest)
                earliest = lo;
            if (earliest != SIZE_MAX && (!found || k[i].idx < *dup)) {
                *dup = k[i].idx;
                *first = earliest;
                found = 1;
            }
        }
    }
    return found;
}

/* A file path, or any printable string such as an identity: non-empty, no
 * control characters. */
static int get_text(struct pctx *x, const struct ynode *v, const char *what, char **out)
{
    if (!node_is_value(v) || v->len == 0)
        return fail(x, v, "expected %s", what);
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->str[i] < 0x20 || v->str[i] == 0x7f)
            return fail(x, v, "expected %s", what);
    *out = dup_node(x, v->str, v->len);
    return *out ? 0 : -ENOMEM;
}

static int get_bool(struct pctx *x, const struct ynode *v, bool *out)
{
    if (node_is_value(v) && node_eq(v, "true"))
        *out = true;
    else if (node_is_value(v) && node_eq(v, "false"))
        *out = false;
    else
        return fail(x, v, "expected true or false");
    return 0;
}

enum { CERT_K_CERT, CERT_K_KEY, CERT_K_N };

static int cert_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_cert *c = obj;

    return get_text(x, v, "a file path", key == CERT_K_CERT ? &c->cert : &c->key);
}

static int parse_cert(struct pctx *x, const struct ynode *n, struct cfg_cert *c)
{
    static const char *const known[] = {"cert", "key", NULL};
    const struct ynode *seen[CERT_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { cert: server.crt, key: server.key }");
    rc = map_walk(x, n, known, seen, cert_value, c);
    if (rc < 0)
        return rc;
    if (!seen[CERT_K_CERT])
        return fail(x, n, "missing required key \"cert\"");
    if (!seen[CERT_K_KEY])
        return fail(x, n, "missing required key \"key\"");
    return 0;
}

enum {
    LTLS_K_CERTS,
    LTLS_K_CLIENT_CA,
    LTLS_K_MIN_VERSION,
    LTLS_K_SNI_STRICT,
    LTLS_K_HANDSHAKE,
    LTLS_K_N
};

static int listener_tls_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_listener_tls *t = obj;
    const struct ynode *it;
    size_t j = 0;
    int rc;

    switch (key) {
    case LTLS_K_CERTS:
        if (v->type != YN_SEQ || v->n == 0)
            return fail(x, v, "expected a non-empty list of { cert, key }");
        t->certificates = calloc(v->n, sizeof(*t->certificates));
        if (t->certificates == NULL)
            return fail_oom(x);
        t->n_certificates = v->n;
        for (it = v->first; it; it = it->next, j++) {
            size_t m = path_index(x, j);
            if ((rc = parse_cert(x, it, &t->certificates[j])) < 0)
                return rc;
            path_pop(x, m);
        }
        return 0;
    case LTLS_K_CLIENT_CA:
        return get_text(x, v, "a file path", &t->client_ca);
    case LTLS_K_MIN_VERSION:
        if (node_is_value(v) && node_eq(v, "1.2"))
            t->min_version = 12;
        else if (node_is_value(v) && node_eq(v, "1.3"))
            t->min_version = 13;
        else
            return fail(x, v, "expected \"1.2\" or \"1.3\"");
        return 0;
    case LTLS_K_SNI_STRICT:
        return get_bool(x, v, &t->sni_strict);
    default:
        return get_timeout(x, v, &t->handshake_timeout_ms);
    }
}

static int parse_listener_tls(struct pctx *x, const struct ynode *n, struct cfg_listener_tls **out)
{
    static const char *const known[] = {"certificates", "client_ca",         "min_version",
                                        "sni_strict",   "handshake_timeout", NULL};
    const struct ynode *seen[LTLS_K_N] = {0};
    struct cfg_listener_tls *t;
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map with certificates");
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return fail_oom(x);
    *out = t;
    t->min_version = 12;
    t->handshake_timeout_ms = 10 * 1000;
    rc = map_walk(x, n, known, seen, listener_tls_value, t);
    if (rc < 0)
        return rc;
    if (!seen[LTLS_K_CERTS])
        return fail(x, n, "missing required key \"certificates\"");
    return 0;
}

static int upstream_tls_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_upstream_tls *t = obj;

    return key == 0 ? get_text(x, v, "a file path", &t->ca) : get_host(x, v, &t->server_name);
}

static int parse_upstream_tls(struct pctx *x, const struct ynode *n, struct cfg_upstream_tls **out)
{
    static const char *const known[] = {"ca", "server_name", NULL};
    const struct ynode *seen[2] = {0};
    struct cfg_upstream_tls *t;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { ca: ca.crt, server_name: fn.internal }");
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return fail_oom(x);
    *out = t;
    return map_walk(x, n, known, seen, upstream_tls_value, t);
}

static int parse_allowed_clients(struct pctx *x, const struct ynode *v, struct cfg_function *f)
{
    const struct ynode *it;
    size_t i = 0;

    if (v->type != YN_SEQ || v->n == 0)
        return fail(x, v, "expected a non-empty list of client identities");
    f->allowed_clients = calloc(v->n, sizeof(*f->allowed_clients));
    if (f->allowed_clients == NULL)
        return fail_oom(x);
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);
        int rc = get_text(x, it, "a client identity such as spiffe://example.org/fn/frontend",
                          &f->allowed_clients[i]);
        if (rc < 0)
            return rc;
        f->n_allowed_clients = i + 1;
        for (size_t j = 0; j < it->len; j++)
            if (it->str[j] == ' ')
                return fail(x, it, "a client identity has no spaces");
        path_pop(x, mark);
    }
    return 0;
}

enum {
    LIS_K_NAME,
    LIS_K_LISTEN,
    LIS_K_HEADER_TIMEOUT,
    LIS_K_KEEPALIVE,
    LIS_K_MAX_HEADER,
    LIS_K_TLS,
    LIS_K_MIN_RATE,
    LIS_K_N
};

static int listener_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_listener *l = obj;
    uint64_t bytes;
    int rc;

    switch (key) {
    case LIS_K_NAME:
        return get_name(x, v, &l->name);
    case LIS_K_LISTEN:
        return get_addr(x, v, false, &l->listen);
    case LIS_K_HEADER_TIMEOUT:
        return get_timeout(x, v, &l->header_timeout_ms);
    case LIS_K_KEEPALIVE:
        return get_timeout(x, v, &l->keepalive_timeout_ms);
    case LIS_K_MAX_HEADER:
        rc = get_size(x, v, &bytes);
        if (rc == 0 && (bytes < (1u << 10) || bytes > (1u << 20)))
            rc = fail(x, v, "must be from 1KiB to 1MiB");
        l->max_header_bytes = (size_t)bytes;
        return rc;
    case LIS_K_MIN_RATE:
        rc = get_size(x, v, &bytes);
        if (rc == 0 && bytes > (1u << 30))
            rc = fail(x, v, "at most 1GiB (a second)");
        l->min_client_rate = bytes;
        return rc;
    default:
        return parse_listener_tls(x, v, &l->tls);
    }
}

static int parse_listener(struct pctx *x, const struct ynode *n, struct cfg_listener *l,
                          const struct ynode **name_node)
{
    static const char *const known[] = {"name",
                                        "listen",
                                        "header_timeout",
                                        "keepalive_timeout",
                                        "max_header_bytes",
                                        "tls",
                                        "min_client_rate",
                                        NULL};
    const struct ynode *seen[LIS_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map with the listener's name and listen address");
    l->line = n->line;
    l->col = n->col;
    l->header_timeout_ms = 10 * 1000;
    l->keepalive_timeout_ms = 60 * 1000;
    l->max_header_bytes = 16 << 10;
    l->min_client_rate = CFG_MIN_CLIENT_RATE;
    rc = map_walk(x, n, known, seen, listener_value, l);
    if (rc < 0)
        return rc;
    if (!seen[LIS_K_NAME])
        return fail(x, n, "missing required key \"name\"");
    if (!seen[LIS_K_LISTEN])
        return fail(x, n, "missing required key \"listen\"");
    *name_node = seen[LIS_K_NAME]->next;
    x->listen_nodes[l - x->c->listeners] = seen[LIS_K_LISTEN]->next;
    return 0;
}

static int parse_listeners(struct pctx *x, const struct ynode *v)
{
    struct config *c = x->c;
    const struct ynode **name_nodes, *it;
    size_t i = 0, dup, first;
    int rc;

    if (v->type != YN_SEQ)
        return fail(x, v, "expected a list of listeners");
    if (v->n == 0)
        return 0;
    if (v->n > CFG_MAX_LISTENERS)
        return fail(x, v, "at most %d listeners", CFG_MAX_LISTENERS);
    c->listeners = calloc(v->n, sizeof(*c->listeners));
    name_nodes = arena_alloc(&x->arena, v->n * sizeof(*name_nodes));
    x->listen_nodes = arena_alloc(&x->arena, v->n * sizeof(*x->listen_nodes));
    x->listener_names = name_nodes;
    if (!c->listeners || !name_nodes || !x->listen_nodes)
        return fail_oom(x);
    c->n_listeners = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);

        rc = parse_listener(x, it, &c->listeners[i], &name_nodes[i]);
        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }

    rc = find_dup(x, c->listeners, c->n_listeners, sizeof(*c->listeners),
                  offsetof(struct cfg_listener, name), &dup, &first);
    if (rc < 0)
        return rc;
    if (rc) {
        path_push(x, "[%zu].name", dup);
        return fail(x, name_nodes[dup], "duplicate listener name \"%s\" (first at %s:%d:%d)",
                    c->listeners[dup].name, x->name, name_nodes[first]->line,
                    name_nodes[first]->col);
    }
    rc = find_addr_clash(x, &dup, &first);
    if (rc < 0)
        return rc;
    if (rc) {
        path_push(x, "[%zu].listen", dup);
        return fail(x, x->listen_nodes[dup], "address already used by listeners[%zu] (%s:%d:%d)",
                    first, x->name, x->listen_nodes[first]->line, x->listen_nodes[first]->col);
    }
    return 0;
}

static int admin_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    (void)key;
    (void)obj;
    return get_addr(x, v, false, &x->c->admin_listen);
}

static int parse_admin(struct pctx *x, const struct ynode *n)
{
    static const char *const known[] = {"listen", NULL};
    const struct ynode *seen[1] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { listen: 127.0.0.1:9901 }");
    rc = map_walk(x, n, known, seen, admin_value, NULL);
    if (rc < 0)
        return rc;
    if (!seen[0])
        return fail(x, n, "missing required key \"listen\"");
    x->admin_listen = seen[0]->next;
    x->c->has_admin = true;
    return 0;
}

static int check_admin_clash(struct pctx *x)
{
    const struct config *c = x->c;
    struct addr_key a, l;
    size_t i;

    if (!c->has_admin)
        return 0;
    addr_key_of(&c->admin_listen, &a);
    for (i = 0; i < c->n_listeners; i++) {
        addr_key_of(&c->listeners[i].listen, &l);
        if (addr_clash(&a, &l)) {
            path_key(x, "admin.listen");
            return fail(x, x->admin_listen, "address already used by listeners[%zu] (%s:%d:%d)", i,
                        x->name, x->listen_nodes[i]->line, x->listen_nodes[i]->col);
        }
    }
    return 0;
}

/* access_log: stdout, off, or a file path. The file is not opened here
 * (this module does no I/O): fnproxy opens it at start and says so if it
 * cannot. Paths are taken as written; a relative one is relative to the
 * directory fnproxy runs in. */
static int get_access_log(struct pctx *x, const struct ynode *v, char **out)
{
    size_t i;

    if (!node_is_value(v) || v->len == 0)
        goto out_bad;
    /* A control character in a path is almost certainly a mistake (and a
     * NUL would cut it short). */
    for (i = 0; i < v->len; i++)
        if ((unsigned char)v->str[i] < 0x20 || v->str[i] == 0x7f)
            goto out_bad;
    if (node_eq(v, "off"))
        return 0;
    *out = dup_node(x, v->str, v->len);
    return *out ? 0 : -ENOMEM;

out_bad:
    return fail(x, v, "expected stdout, off or a file path");
}

/* metrics: on (the default) or off. Off, workers count nothing per
 * request: /metrics still answers, with no request series. */
static int get_metrics(struct pctx *x, const struct ynode *v, bool *off)
{
    if (node_is_value(v) && node_eq(v, "on"))
        *off = false;
    else if (node_is_value(v) && node_eq(v, "off"))
        *off = true;
    else
        return fail(x, v, "expected on or off");
    return 0;
}

static int get_workers(struct pctx *x, const struct ynode *v, unsigned *out)
{
    uint64_t n;
    bool big;

    if (node_eq(v, "auto")) {
        *out = 0;
        return 0;
    }
    if (!node_is_value(v) || scan_uint(v->str, v->len, &n, &big) != v->len || big || n < 1 ||
        n > CFG_MAX_WORKERS)
        return fail(x, v, "expected auto or a number from 1 to %d", CFG_MAX_WORKERS);
    *out = (unsigned)n;
    return 0;
}

/* ---- dns ---- */

#define DNS_SERVERS_MAX 16
#define DNS_TIMEOUT_MAX_MS (60u * 1000)
#define DNS_CACHE_ENTRIES_MAX 1000000u

/* One DNS server: an IP literal with an optional port (default 53), read by
 * egress_target_parse so that the spellings it refuses (unbracketed IPv6,
 * "127.1", a port with a leading zero) are refused here too. Written out
 * canonical with its port, "127.0.0.1:53" or "[::1]:53", as c-ares takes
 * it (resolve.h). */
static int get_dns_server(struct pctx *x, const struct ynode *v, char *out, size_t size)
{
    struct egress_target t;
    char ip[INET6_ADDRSTRLEN];

    if (!node_is_value(v) || egress_target_parse(v->str, v->len, 53, &t) != EGRESS_T_OK ||
        !t.is_ip || !inet_ntop(t.family, t.addr, ip, sizeof(ip)))
        return fail(x, v,
                    "expected an IP address with an optional port, like 127.0.0.1:53 or "
                    "[::1]:53");
    snprintf(out, size, t.family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)t.port);
    return 0;
}

static int parse_dns_servers(struct pctx *x, const struct ynode *v, char **out)
{
    char one[INET6_ADDRSTRLEN + 8], *s;
    const struct ynode *it;
    size_t i = 0, len = 0, cap;

    if (v->type != YN_SEQ || v->n == 0)
        return fail(x, v, "expected a non-empty list of DNS servers, like [127.0.0.1:53]");
    if (v->n > DNS_SERVERS_MAX)
        return fail(x, v, "at most %d DNS servers", DNS_SERVERS_MAX);
    cap = v->n * sizeof(one);
    s = calloc(1, cap);
    if (!s)
        return fail_oom(x);
    *out = s;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);
        int rc = get_dns_server(x, it, one, sizeof(one));

        if (rc < 0)
            return rc;
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", one);
        path_pop(x, mark);
    }
    return 0;
}

/* A TTL bound: a duration in whole seconds (an answer's TTL has no finer
 * grain, and rounding would change what was written). */
static int get_ttl(struct pctx *x, const struct ynode *v, uint32_t *s)
{
    uint64_t ms;
    int rc = get_duration(x, v, &ms);

    if (rc < 0)
        return rc;
    if (ms % 1000)
        return fail(x, v, "expected whole seconds, like 30s");
    *s = (uint32_t)(ms / 1000);
    return 0;
}

enum { CACHE_K_MIN_TTL, CACHE_K_MAX_TTL, CACHE_K_ENTRIES, CACHE_K_N };

static int dns_cache_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_dns *d = obj;
    uint64_t n;
    bool big;

    switch (key) {
    case CACHE_K_MIN_TTL:
        return get_ttl(x, v, &d->cache_min_ttl_s);
    case CACHE_K_MAX_TTL:
        return get_ttl(x, v, &d->cache_max_ttl_s);
    default:
        if (!node_is_value(v) || scan_uint(v->str, v->len, &n, &big) != v->len || big ||
            n > DNS_CACHE_ENTRIES_MAX)
            return fail(x, v, "expected a number from 0 to %u", DNS_CACHE_ENTRIES_MAX);
        d->cache_entries = (uint32_t)n;
        return 0;
    }
}

static int parse_dns_cache(struct pctx *x, const struct ynode *n, struct cfg_dns *d)
{
    static const char *const known[] = {"min_ttl", "max_ttl", "entries", NULL};
    const struct ynode *seen[CACHE_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { min_ttl: 0s, max_ttl: 300s, entries: 1024 }");
    rc = map_walk(x, n, known, seen, dns_cache_value, d);
    if (rc < 0)
        return rc;
    if (d->cache_min_ttl_s > d->cache_max_ttl_s) {
        path_key(x, seen[CACHE_K_MIN_TTL] ? "min_ttl" : "max_ttl");
        return fail(x,
                    (seen[CACHE_K_MIN_TTL] ? seen[CACHE_K_MIN_TTL] : seen[CACHE_K_MAX_TTL])->next,
                    "min_ttl (%us) is greater than max_ttl (%us)", (unsigned)d->cache_min_ttl_s,
                    (unsigned)d->cache_max_ttl_s);
    }
    return 0;
}

enum { DNS_K_SERVERS, DNS_K_TIMEOUT, DNS_K_CACHE, DNS_K_N };

static int dns_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_dns *d = obj;
    int rc;

    switch (key) {
    case DNS_K_SERVERS:
        return parse_dns_servers(x, v, &d->servers);
    case DNS_K_TIMEOUT:
        rc = get_timeout(x, v, &d->timeout_ms);
        if (rc == 0 && d->timeout_ms > DNS_TIMEOUT_MAX_MS)
            rc = fail(x, v, "must be at most 60s");
        return rc;
    default:
        return parse_dns_cache(x, v, d);
    }
}

/* dns: how egress names are resolved. The defaults are set by parse_root,
 * so that a config without the key has them too. */
static int parse_dns(struct pctx *x, const struct ynode *n)
{
    static const char *const known[] = {"servers", "timeout", "cache", NULL};
    const struct ynode *seen[DNS_K_N] = {0};

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { servers: [127.0.0.1:53], timeout: 5s }");
    return map_walk(x, n, known, seen, dns_value, &x->c->dns);
}

/* ---- timeouts and retries: of routes and egress rules alike ---- */

#define RETRY_MAX_MAX 10
#define REPLAY_MAX_MAX (16u << 20)

static void timeouts_default(struct cfg_timeouts *t, uint64_t connect_ms)
{
    t->timeout_ms = 15 * 1000;
    t->per_try_timeout_ms = 0;
    t->idle_timeout_ms = 0; /* set to timeout_ms once the map is read (timeouts_done) */
    t->connect_timeout_ms = connect_ms;
}

static void timeouts_done(struct cfg_timeouts *t)
{
    if (t->idle_timeout_ms == 0)
        t->idle_timeout_ms = t->timeout_ms;
}

static void retries_default(struct retry_policy *p)
{
    *p = (struct retry_policy){
        .max = 2,
        .on = RETRY_ON_CONNECT_FAILURE,
        .backoff_base_ms = 25,
        .backoff_max_ms = 250,
        .budget_permille = 200,
        .budget_min_per_s = 5,
        .replay_max = 64 << 10,
    };
}

static int get_uint_max(struct pctx *x, const struct ynode *v, uint64_t max, uint64_t *out)
{
    bool big;

    if (!node_is_value(v) || v->len == 0 || scan_uint(v->str, v->len, out, &big) != v->len || big ||
        *out > max)
        return fail(x, v, "expected a number from 0 to %llu", (unsigned long long)max);
    return 0;
}

/* A decimal with at most three decimals ("0.2", "12.5", "100") from 0 to
 * max, in thousandths; -1 if it is not one. */
static int thousandths_parse(const char *s, size_t len, uint64_t max, uint32_t *out)
{
    uint64_t whole, frac = 0;
    size_t i, n, scale = 1000;
    bool big;

    i = scan_uint(s, len, &whole, &big);
    if (i == 0 || big || whole > max)
        return -1;
    if (i < len) {
        if (s[i] != '.' || i + 1 == len || len - i - 1 > 3)
            return -1;
        n = scan_uint(s + i + 1, len - i - 1, &frac, &big);
        if (n != len - i - 1)
            return -1;
        for (size_t d = 0; d < n; d++)
            scale /= 10;
        frac *= scale;
    }
    if (whole * 1000 + frac > max * 1000)
        return -1;
    *out = (uint32_t)(whole * 1000 + frac);
    return 0;
}

/* A ratio from 0 to 1, in permille. */
static int get_ratio(struct pctx *x, const struct ynode *v, uint32_t *permille)
{
    if (!node_is_value(v) || thousandths_parse(v->str, v->len, 1, permille) < 0)
        return fail(x, v, "expected a ratio from 0 to 1, like 0.2");
    return 0;
}

/* A percentage from 0 to 100, in thousandths of a percent. */
static int get_percent(struct pctx *x, const struct ynode *v, uint32_t *share)
{
    if (!node_is_value(v) || thousandths_parse(v->str, v->len, 100, share) < 0)
        return fail(x, v, "expected a percentage from 0 to 100, like 10 or 0.5");
    return 0;
}

static int get_retry_on(struct pctx *x, const struct ynode *v, struct retry_policy *p)
{
    const struct ynode *it;
    size_t i = 0;

    if (v->type != YN_SEQ || v->n == 0)
        return fail(x, v, "expected a list like [connect-failure, reset, 503]");
    p->on = 0;
    p->n_statuses = 0;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);
        unsigned bit = node_is_value(it) ? retry_on_bit(it->str, it->len) : 0;
        uint64_t code;
        bool big;

        if (bit != 0) {
            p->on |= bit;
        } else if (node_is_value(it) && it->len == 3 &&
                   scan_uint(it->str, it->len, &code, &big) == 3 && code >= 100 && code <= 599) {
            if (p->n_statuses == RETRY_MAX_STATUSES)
                return fail(x, it, "at most %d status codes", RETRY_MAX_STATUSES);
            p->statuses[p->n_statuses++] = (uint16_t)code;
        } else {
            return fail(x, it,
                        "expected connect-failure, refused, reset, gateway-error, 5xx, "
                        "retriable-4xx, per-try-timeout or a status code like 503");
        }
        path_pop(x, mark);
    }
    return 0;
}

enum { BACKOFF_K_BASE, BACKOFF_K_MAX };

static int backoff_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct retry_policy *p = obj;

    return get_timeout(x, v, key == BACKOFF_K_BASE ? &p->backoff_base_ms : &p->backoff_max_ms);
}

enum { BUDGET_K_RATIO, BUDGET_K_MIN };

static int budget_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct retry_policy *p = obj;
    uint64_t n;
    int rc;

    if (key == BUDGET_K_RATIO)
        return get_ratio(x, v, &p->budget_permille);
    rc = get_uint_max(x, v, 10000, &n);
    p->budget_min_per_s = (uint32_t)n;
    return rc;
}

enum {
    RETRIES_K_MAX,
    RETRIES_K_ON,
    RETRIES_K_BACKOFF,
    RETRIES_K_BUDGET,
    RETRIES_K_REPLAY,
    RETRIES_K_N
};

static int retries_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    static const char *const backoff_keys[] = {"base", "max", NULL};
    static const char *const budget_keys[] = {"ratio", "min_per_s", NULL};
    struct retry_policy *p = obj;
    const struct ynode *seen[2] = {0}; /* BACKOFF_K_N, BUDGET_K_N */
    uint64_t n;
    int rc;

    switch (key) {
    case RETRIES_K_MAX:
        rc = get_uint_max(x, v, RETRY_MAX_MAX, &n);
        p->max = (unsigned)n;
        return rc;
    case RETRIES_K_ON:
        return get_retry_on(x, v, p);
    case RETRIES_K_BACKOFF:
        if (v->type != YN_MAP)
            return fail(x, v, "expected a map like { base: 25ms, max: 250ms }");
        rc = map_walk(x, v, backoff_keys, seen, backoff_value, p);
        if (rc == 0 && p->backoff_base_ms > p->backoff_max_ms)
            rc =
                fail(x, v, "base (%llums) is greater than max (%llums)",
                     (unsigned long long)p->backoff_base_ms, (unsigned long long)p->backoff_max_ms);
        return rc;
    case RETRIES_K_BUDGET:
        if (v->type != YN_MAP)
            return fail(x, v, "expected a map like { ratio: 0.2, min_per_s: 5 }");
        return map_walk(x, v, budget_keys, seen, budget_value, p);
    default:
        rc = get_size(x, v, &n);
        if (rc == 0 && n > REPLAY_MAX_MAX)
            rc = fail(x, v, "at most 16MiB");
        p->replay_max = n;
        return rc;
    }
}

enum { DELAY_K_PERCENT, DELAY_K_DURATION };
enum { ABORT_K_PERCENT, ABORT_K_STATUS };

static int delay_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_fault *f = obj;

    if (key == DELAY_K_PERCENT)
        return get_percent(x, v, &f->delay_share);
    return get_timeout(x, v, &f->delay_ms);
}

static int abort_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_fault *f = obj;
    uint64_t n;
    int rc;

    if (key == ABORT_K_PERCENT)
        return get_percent(x, v, &f->abort_share);
    rc = get_uint_max(x, v, 599, &n);
    if (rc == 0 && n < 200)
        rc = fail(x, v, "expected a status from 200 to 599");
    f->abort_status = (int)n;
    return rc;
}

enum { FAULT_K_DELAY, FAULT_K_ABORT, FAULT_K_N };

static int fault_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    static const char *const delay_keys[] = {"percent", "duration", NULL};
    static const char *const abort_keys[] = {"percent", "status", NULL};
    const struct ynode *seen[2] = {0};
    struct cfg_fault *f = obj;
    int rc;

    if (v->type != YN_MAP)
        return fail(x, v,
                    key == FAULT_K_DELAY ? "expected a map like { percent: 10, duration: 100ms }"
                                         : "expected a map like { percent: 10, status: 503 }");
    if (key == FAULT_K_DELAY) {
        rc = map_walk(x, v, delay_keys, seen, delay_value, f);
        if (rc == 0 && !seen[DELAY_K_DURATION])
            rc = fail(x, v, "missing required key \"duration\"");
    } else {
        rc = map_walk(x, v, abort_keys, seen, abort_value, f);
        if (rc == 0 && !seen[ABORT_K_STATUS])
            rc = fail(x, v, "missing required key \"status\"");
    }
    return rc;
}

/* fault: { delay: { percent, duration }, abort: { percent, status } } */
static int parse_fault(struct pctx *x, const struct ynode *n, struct cfg_fault *f)
{
    static const char *const known[] = {"delay", "abort", NULL};
    const struct ynode *seen[FAULT_K_N] = {0};

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { abort: { percent: 10, status: 503 } }");
    return map_walk(x, n, known, seen, fault_value, f);
}

/* retries: { max, on, backoff: { base, max }, budget: { ratio, min_per_s },
 * replay_buffer }; what is left out keeps its default. */
static int parse_retries(struct pctx *x, const struct ynode *n, struct retry_policy *p)
{
    static const char *const known[] = {"max", "on", "backoff", "budget", "replay_buffer", NULL};
    const struct ynode *seen[RETRIES_K_N] = {0};

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { max: 2, on: [connect-failure, reset] }");
    return map_walk(x, n, known, seen, retries_value, p);
}

/* ---- functions and routes ---- */

/* match.listener left out: fine when there is exactly one listener. The path
 * is at the route (no match at all) or at its match map. Only top-level
 * listeners are in the list yet: egress ones join once the functions are
 * read (add_egress_listeners). */
static int default_listener(struct pctx *x, const struct ynode *at, const char *key,
                            struct cfg_route *r)
{
    if (x->c->n_listeners == 1) {
        r->listener = 0;
        return 0;
    }
    path_key(x, key);
    if (x->c->n_listeners == 0)
        return fail(x, at, "no listeners are configured");
    return fail(x, at, "required when there are several listeners");
}

static int get_listener_ref(struct pctx *x, const struct ynode *v, size_t *out)
{
    const struct config *c = x->c;
    char shown[48];
    size_t i;

    if (!node_is_value(v) || !name_valid(v->str, v->len))
        return fail(x, v, "expected a listener name");
    /* Routes are read before the egress listeners join the list, and a
     * route could not use one anyway: those are forward proxies. */
    for (i = 0; i < c->n_listeners; i++) {
        if (c->listeners[i].kind == CFG_LISTENER_INGRESS &&
            strcmp(c->listeners[i].name, v->str) == 0) {
            *out = i;
            return 0;
        }
    }
    return fail(x, v, "no listener named \"%s\"", node_shown(v, shown, sizeof(shown)));
}

enum { MATCH_K_LISTENER, MATCH_K_HOST, MATCH_K_PATH_PREFIX, MATCH_K_METHODS, MATCH_K_N };

static int match_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_route *r = obj;

    switch (key) {
    case MATCH_K_LISTENER:
        return get_listener_ref(x, v, &r->listener);
    case MATCH_K_HOST:
        return get_host(x, v, &r->host);
    case MATCH_K_PATH_PREFIX:
        return get_path_prefix(x, v, &r->path_prefix);
    default:
        return get_methods(x, v, &r->methods);
    }
}

static int parse_match(struct pctx *x, const struct ynode *n, struct cfg_route *r)
{
    static const char *const known[] = {"listener", "host", "path_prefix", "methods", NULL};
    const struct ynode *seen[MATCH_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { path_prefix: /api, methods: [GET] }");
    rc = map_walk(x, n, known, seen, match_value, r);
    if (rc < 0)
        return rc;
    if (!seen[MATCH_K_LISTENER])
        return default_listener(x, n, "listener", r);
    return 0;
}

enum {
    ROUTE_K_NAME,
    ROUTE_K_MATCH,
    ROUTE_K_TIMEOUT,
    ROUTE_K_CONNECT_TIMEOUT,
    ROUTE_K_PER_TRY_TIMEOUT,
    ROUTE_K_IDLE_TIMEOUT,
    ROUTE_K_RETRIES,
    ROUTE_K_FAULT,
    ROUTE_K_N
};

static int route_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_route *r = obj;

    switch (key) {
    case ROUTE_K_NAME:
        return get_name(x, v, &r->name);
    case ROUTE_K_MATCH:
        return parse_match(x, v, r);
    case ROUTE_K_TIMEOUT:
        return get_timeout(x, v, &r->t.timeout_ms);
    case ROUTE_K_CONNECT_TIMEOUT:
        return get_timeout(x, v, &r->t.connect_timeout_ms);
    case ROUTE_K_PER_TRY_TIMEOUT:
        return get_timeout(x, v, &r->t.per_try_timeout_ms);
    case ROUTE_K_IDLE_TIMEOUT:
        return get_timeout(x, v, &r->t.idle_timeout_ms);
    case ROUTE_K_RETRIES:
        return parse_retries(x, v, &r->retries);
    default:
        return parse_fault(x, v, &r->fault);
    }
}

static int parse_route(struct pctx *x, const struct ynode *n, struct cfg_route *r,
                       const struct ynode **name_node)
{
    static const char *const known[] = {
        "name",    "match", "timeout", "connect_timeout", "per_try_timeout", "idle_timeout",
        "retries", "fault", NULL};
    const struct ynode *seen[ROUTE_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map with the route's name and match");
    r->line = n->line;
    r->col = n->col;
    timeouts_default(&r->t, 1000);
    retries_default(&r->retries);
    rc = map_walk(x, n, known, seen, route_value, r);
    if (rc < 0)
        return rc;
    timeouts_done(&r->t);
    if (!seen[ROUTE_K_NAME])
        return fail(x, n, "missing required key \"name\"");
    *name_node = seen[ROUTE_K_NAME]->next;
    if (!seen[ROUTE_K_MATCH]) {
        rc = default_listener(x, n, "match.listener", r);
        if (rc < 0)
            return rc;
    }
    if (!r->path_prefix) {
        r->path_prefix = dup_node(x, "/", 1);
        if (!r->path_prefix)
            return -ENOMEM;
    }
    return 0;
}

static int parse_routes(struct pctx *x, const struct ynode *v, struct cfg_function *f)
{
    const struct ynode **name_nodes, *it;
    size_t i = 0, dup, first;
    int rc;

    if (v->type != YN_SEQ)
        return fail(x, v, "expected a list of routes");
    if (v->n == 0)
        return 0;
    f->routes = calloc(v->n, sizeof(*f->routes));
    name_nodes = arena_alloc(&x->arena, v->n * sizeof(*name_nodes));
    if (!f->routes || !name_nodes)
        return fail_oom(x);
    f->n_routes = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);

        rc = parse_route(x, it, &f->routes[i], &name_nodes[i]);
        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    rc = find_dup(x, f->routes, f->n_routes, sizeof(*f->routes), offsetof(struct cfg_route, name),
                  &dup, &first);
    if (rc < 0)
        return rc;
    if (rc) {
        path_push(x, "[%zu].name", dup);
        return fail(x, name_nodes[dup], "duplicate route name \"%s\" (first at %s:%d:%d)",
                    f->routes[dup].name, x->name, name_nodes[first]->line, name_nodes[first]->col);
    }
    return 0;
}

/* Admission bounds: beyond them a config is more likely a typo than a plan,
 * and they keep the counters and token arithmetic far from overflowing. */
#define ADMIT_MAX 1000000      /* max_concurrency, rate_limit.burst */
#define QUEUE_DEPTH_MAX 100000 /* queue.depth */
#define QUEUE_TIMEOUT_MAX_MS (60 * 60 * 1000)
#define RATE_MAX 1000000 /* rate_limit.rps */

enum { QUEUE_K_DEPTH, QUEUE_K_TIMEOUT, QUEUE_K_N };

static int queue_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_admission *a = obj;
    uint64_t n;
    int rc;

    if (key == QUEUE_K_DEPTH) {
        rc = get_uint_max(x, v, QUEUE_DEPTH_MAX, &n);
        a->queue_depth = (unsigned)n;
        return rc;
    }
    rc = get_timeout(x, v, &a->queue_timeout_ms);
    if (rc == 0 && a->queue_timeout_ms > QUEUE_TIMEOUT_MAX_MS)
        rc = fail(x, v, "at most 60m");
    return rc;
}

/* queue: { depth, timeout }; what is left out keeps its default (set with
 * the function's). depth 0: over the limit is answered at once. */
static int parse_queue(struct pctx *x, const struct ynode *n, struct cfg_admission *a)
{
    static const char *const known[] = {"depth", "timeout", NULL};
    const struct ynode *seen[QUEUE_K_N] = {0};

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { depth: 100, timeout: 5s }");
    return map_walk(x, n, known, seen, queue_value, a);
}

enum { RATE_K_RPS, RATE_K_BURST, RATE_K_PER, RATE_K_N };

static int rate_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_admission *a = obj;
    uint32_t milli = 0;
    uint64_t n;
    int rc;

    switch (key) {
    case RATE_K_RPS:
        if (!node_is_value(v) || thousandths_parse(v->str, v->len, RATE_MAX, &milli) < 0 ||
            milli == 0)
            return fail(x, v, "expected requests a second from 0.001 to %u, like 500 or 0.5",
                        RATE_MAX);
        a->rate_milli = milli;
        return 0;
    case RATE_K_BURST:
        rc = get_uint_max(x, v, ADMIT_MAX, &n);
        if (rc == 0 && n == 0)
            rc = fail(x, v, "must be greater than zero");
        a->burst = (unsigned)n;
        return rc;
    default:
        if (node_is_value(v) && node_eq(v, "client_id"))
            a->per = CFG_RATE_CLIENT_ID;
        else if (node_is_value(v) && node_eq(v, "client_ip"))
            a->per = CFG_RATE_CLIENT_IP;
        else
            return fail(x, v, "expected client_id or client_ip");
        return 0;
    }
}

/* rate_limit: { rps, burst, per }: rps is required; burst defaults to rps
 * rounded up (a second's worth), at least 1. */
static int parse_rate_limit(struct pctx *x, const struct ynode *n, struct cfg_admission *a)
{
    static const char *const known[] = {"rps", "burst", "per", NULL};
    const struct ynode *seen[RATE_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { rps: 500, burst: 100 }");
    rc = map_walk(x, n, known, seen, rate_value, a);
    if (rc < 0)
        return rc;
    if (!seen[RATE_K_RPS])
        return fail(x, n, "missing required key \"rps\"");
    if (!seen[RATE_K_BURST])
        a->burst = (unsigned)((a->rate_milli + 999) / 1000);
    return 0;
}

enum {
    INGRESS_K_MAX_BODY,
    INGRESS_K_ROUTES,
    INGRESS_K_ALLOWED,
    INGRESS_K_MAX_CONCURRENCY,
    INGRESS_K_QUEUE,
    INGRESS_K_RATE_LIMIT,
    INGRESS_K_N
};

static int ingress_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_function *f = obj;
    uint64_t n;
    int rc;

    switch (key) {
    case INGRESS_K_MAX_BODY:
        return get_size(x, v, &f->max_body);
    case INGRESS_K_ALLOWED:
        return parse_allowed_clients(x, v, f);
    case INGRESS_K_MAX_CONCURRENCY:
        rc = get_uint_max(x, v, ADMIT_MAX, &n);
        if (rc == 0 && n == 0)
            rc = fail(x, v, "must be greater than zero (leave it out for no limit)");
        f->admission.max_concurrency = (unsigned)n;
        return rc;
    case INGRESS_K_QUEUE:
        return parse_queue(x, v, &f->admission);
    case INGRESS_K_RATE_LIMIT:
        return parse_rate_limit(x, v, &f->admission);
    default:
        return parse_routes(x, v, f);
    }
}

static int parse_ingress(struct pctx *x, const struct ynode *n, struct cfg_function *f)
{
    static const char *const known[] = {
        "max_body", "routes", "allowed_clients", "max_concurrency", "queue", "rate_limit", NULL};
    const struct ynode *seen[INGRESS_K_N] = {0};

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map with max_body and routes");
    return map_walk(x, n, known, seen, ingress_value, f);
}

static int parse_endpoints(struct pctx *x, const struct ynode *v, struct cfg_function *f)
{
    const struct ynode *it;
    size_t i = 0;

    if (v->type != YN_SEQ || v->n == 0)
        return fail(x, v, "expected a non-empty list of endpoints, like [127.0.0.1:9001]");
    if (v->n > CFG_MAX_ENDPOINTS)
        return fail(x, v, "at most %d endpoints per function", CFG_MAX_ENDPOINTS);
    f->endpoints = calloc(v->n, sizeof(*f->endpoints));
    if (!f->endpoints)
        return fail_oom(x);
    f->n_endpoints = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);
        int rc = get_addr(x, it, true, &f->endpoints[i]);

        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    return 0;
}

/* ---- egress ---- */

#define EGRESS_RULES_MAX 10000

/* Where a function's egress listener was written: kept while the functions
 * are read, turned into a listener once all of them are (egress listeners
 * come after the top-level ones, whose indexes routes hold). */
struct egress_listen {
    struct cfg_addr addr;
    const struct ynode *node;   /* the egress.listen value */
    struct cfg_addr capture;    /* egress.capture ... */
    const struct ynode *cnode;  /* ... its address's value; NULL: none */
    bool capture_map;           /* ... written as a map (capture.listen) */
    uint64_t first_bytes_ms;    /* ... capture.first_bytes_timeout */
    const struct ynode *egress; /* the egress map */
};

static bool addr_is_loopback(const struct cfg_addr *a)
{
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;

        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
}

/* The egress listener is how fnproxy knows which function is calling out:
 * whoever connects to it gets that function's policy. Anything off this host
 * that could reach it would borrow the function's identity. */
static int get_egress_listen(struct pctx *x, const struct ynode *v, struct cfg_addr *a)
{
    int rc;

    rc = get_addr(x, v, true, a);
    if (rc == 0 && a->kind == CFG_ADDR_INET && !addr_is_loopback(a))
        rc = fail(x, v,
                  "must be a loopback address (127.0.0.0/8 or [::1]): the egress listener is the "
                  "function's identity, so nothing off this host may reach it");
    return rc;
}

/* egress.capture: whatever nftables redirects there is taken as the
 * function's traffic, so, like egress.listen, nothing off this host may
 * reach it; a unix socket cannot be a redirect target. */
static int get_capture_listen(struct pctx *x, const struct ynode *v, struct cfg_addr *a)
{
    int rc = get_addr(x, v, false, a);

    if (rc == 0 && !addr_is_loopback(a))
        rc = fail(x, v,
                  "must be a loopback address (127.0.0.0/8 or [::1]): nftables redirects the "
                  "function's connections there, and nothing off this host may reach it");
    return rc;
}

enum { CAPTURE_K_LISTEN, CAPTURE_K_FIRST_BYTES, CAPTURE_K_N };

static int capture_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct egress_listen *l = obj;

    if (key == CAPTURE_K_FIRST_BYTES)
        return get_timeout(x, v, &l->first_bytes_ms);
    l->cnode = v;
    return get_capture_listen(x, v, &l->capture);
}

/* egress.capture: "IP:port", or { listen: IP:port, first_bytes_timeout }. */
static int parse_capture(struct pctx *x, const struct ynode *v, struct egress_listen *l)
{
    static const char *const known[] = {"listen", "first_bytes_timeout", NULL};
    const struct ynode *seen[CAPTURE_K_N] = {0};
    int rc;

    /* 1s: a client that speaks first (TLS, HTTP) sends its first flight
     * right after the handshake, so only a server-speaks-first protocol
     * waits this long, and its clients wait far longer for a greeting. */
    l->first_bytes_ms = 1000;
    if (v->type != YN_MAP) {
        l->cnode = v;
        return get_capture_listen(x, v, &l->capture);
    }
    l->capture_map = true;
    rc = map_walk(x, v, known, seen, capture_value, l);
    if (rc == 0 && !seen[CAPTURE_K_LISTEN])
        rc = fail(x, v, "missing required key \"listen\"");
    return rc;
}

/* What each egress_target_parse error means in a rule's host. */
static const char *const host_why[EGRESS_T__N] = {
    [EGRESS_T_EMPTY] = "no host",
    [EGRESS_T_TOO_LONG] = "longer than 253 bytes, or a label longer than 63",
    [EGRESS_T_BAD_CHAR] = "a host name takes letters, digits, - _ and . (IDNs as xn--...)",
    [EGRESS_T_BAD_LABEL] = "an empty label, or one that starts or ends with -",
    [EGRESS_T_NUMERIC] = "looks like a number but is not a dotted-quad IPv4 address",
    [EGRESS_T_BAD_PORT] = "expected a host without a port",
    [EGRESS_T_BAD_IPV6] = "not an IPv6 address",
};

/* allow[].host: a name, "*." and a name, or an IP literal. The name is
 * canonicalised by egress_target_parse, the very function that reads the
 * requests it will be compared with, so a spelling that it refuses in a
 * request ("127.1", "0x7f.1", "2130706433") cannot hide in a rule either.
 * Stored lower case, without the trailing dot; an IP literal in inet_ntop
 * form (IPv6 without brackets), which is how the target of a request
 * written with that literal reads. */
static int get_egress_host(struct pctx *x, const struct ynode *v, char **out)
{
    static const char what[] = "expected a host like api.example.com, *.example.com or an IP";
    char buf[HOST_LEN_MAX + 3], shown[48];
    const char *name;
    size_t nlen, colons = 0, i;
    struct egress_target t;
    bool wild;
    int e;

    if (!node_is_value(v) || v->len == 0)
        return fail(x, v, "%s", what);
    wild = v->len >= 2 && v->str[0] == '*' && v->str[1] == '.';
    name = wild ? v->str + 2 : v->str;
    nlen = wild ? v->len - 2 : v->len;
    if (memchr(name, '*', nlen))
        return fail(x, v, "the * wildcard must be the whole first label, like *.example.com");
    for (i = 0; i < nlen; i++)
        colons += name[i] == ':';
    /* "host:443" and "[::1]:443": the ports are the rule's ports key. */
    if ((name[0] != '[' && colons == 1) || (name[0] == '[' && name[nlen - 1] != ']' && colons))
        return fail(x, v, "expected a host without a port");
    /* An IPv6 literal may be written without brackets here, as in a route's
     * host: there is no port to tell apart. */
    if (name[0] != '[' && colons >= 2) {
        if (nlen + 2 >= sizeof(buf))
            return fail(x, v, "bad_ipv6: %s", host_why[EGRESS_T_BAD_IPV6]);
        buf[0] = '[';
        memcpy(buf + 1, name, nlen);
        buf[nlen + 1] = ']';
        name = buf;
        nlen += 2;
    }
    e = egress_target_parse(name, nlen, 80, &t);
    if (e == EGRESS_T_EMPTY && wild)
        return fail(x, v, "expected a domain after *., like *.example.com");
    if (e == EGRESS_T_NUMERIC)
        return fail(x, v, "%s: \"%s\" %s", egress_target_error_name(e),
                    node_shown(v, shown, sizeof(shown)), host_why[e]);
    if (e != EGRESS_T_OK)
        return fail(x, v, "%s: %s", egress_target_error_name(e),
                    e > 0 && e < EGRESS_T__N && host_why[e] ? host_why[e] : what);
    if (wild && t.is_ip)
        return fail(x, v, "a * wildcard takes a domain name, not an IP address");
    *out = malloc(t.host_len + 3);
    if (!*out)
        return fail_oom(x);
    snprintf(*out, t.host_len + 3, "%s%.*s", wild ? "*." : "", (int)t.host_len, t.host);
    return 0;
}

static int get_ports(struct pctx *x, const struct ynode *v, struct cfg_egress_rule *r)
{
    uint8_t taken[65536 / 8] = {0};
    const struct ynode *it, *prev;
    size_t i = 0;

    if (v->type != YN_SEQ)
        return fail(x, v, "expected a list of ports");
    if (v->n == 0)
        return fail(x, v, "expected at least one port, like [443]");
    r->ports = calloc(v->n, sizeof(*r->ports));
    if (!r->ports)
        return fail_oom(x);
    r->n_ports = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);
        uint16_t port;

        if (!node_is_value(it) || !port_parse(it->str, it->len, &port))
            return fail(x, it, "expected a port from 1 to 65535");
        if (taken[port / 8] & (1u << (port % 8))) {
            uint16_t p = 0;

            /* Once, on the error path: find where it was first. */
            for (prev = v->first; prev != it; prev = prev->next)
                if (port_parse(prev->str, prev->len, &p) && p == port)
                    break;
            return fail(x, it, "duplicate port %u (first at %s:%d:%d)", (unsigned)port, x->name,
                        prev->line, prev->col);
        }
        taken[port / 8] |= (uint8_t)(1u << (port % 8));
        r->ports[i] = port;
        path_pop(x, mark);
    }
    return 0;
}

static int get_paths(struct pctx *x, const struct ynode *v, struct cfg_egress_rule *r)
{
    const struct ynode *it;
    size_t i = 0;

    if (v->type != YN_SEQ || v->n == 0)
        return fail(x, v, "expected a non-empty list of path prefixes, like [/v1/]");
    r->paths = calloc(v->n, sizeof(*r->paths));
    if (!r->paths)
        return fail_oom(x);
    r->n_paths = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);
        int rc = get_path_prefix(x, it, &r->paths[i]);

        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    return 0;
}

enum {
    ALLOW_K_NAME,
    ALLOW_K_HOST,
    ALLOW_K_CIDR,
    ALLOW_K_PORTS,
    ALLOW_K_METHODS,
    ALLOW_K_PATHS,
    ALLOW_K_TLS,
    ALLOW_K_CA,
    ALLOW_K_TIMEOUT,
    ALLOW_K_CONNECT_TIMEOUT,
    ALLOW_K_PER_TRY_TIMEOUT,
    ALLOW_K_IDLE_TIMEOUT,
    ALLOW_K_RETRIES,
    ALLOW_K_FAULT,
    ALLOW_K_N
};

static int allow_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_egress_rule *r = obj;

    switch (key) {
    case ALLOW_K_NAME:
        return get_name(x, v, &r->name);
    case ALLOW_K_HOST:
        return get_egress_host(x, v, &r->host);
    case ALLOW_K_CIDR:
        /* Checked when the rules are compiled (egress_rules_compile). */
        return get_text(x, v, "a CIDR like 10.1.0.0/16", &r->cidr);
    case ALLOW_K_PORTS:
        return get_ports(x, v, r);
    case ALLOW_K_METHODS:
        return get_methods(x, v, &r->methods);
    case ALLOW_K_PATHS:
        return get_paths(x, v, r);
    case ALLOW_K_TLS:
        if (!node_is_value(v) || !node_eq(v, "originate"))
            return fail(x, v, "expected originate (the only TLS mode of an allow rule)");
        r->tls_originate = true;
        return 0;
    case ALLOW_K_CA:
        return get_text(x, v, "a file path", &r->ca);
    case ALLOW_K_TIMEOUT:
        return get_timeout(x, v, &r->t.timeout_ms);
    case ALLOW_K_CONNECT_TIMEOUT:
        return get_timeout(x, v, &r->t.connect_timeout_ms);
    case ALLOW_K_PER_TRY_TIMEOUT:
        return get_timeout(x, v, &r->t.per_try_timeout_ms);
    case ALLOW_K_IDLE_TIMEOUT:
        return get_timeout(x, v, &r->t.idle_timeout_ms);
    case ALLOW_K_RETRIES:
        return parse_retries(x, v, &r->retries);
    default:
        return parse_fault(x, v, &r->fault);
    }
}

static int parse_allow_rule(struct pctx *x, const struct ynode *n, struct cfg_egress_rule *r,
                            const struct ynode **name_node)
{
    static const char *const known[] = {
        "name",    "host",  "cidr",    "ports",           "methods",         "paths",
        "tls",     "ca",    "timeout", "connect_timeout", "per_try_timeout", "idle_timeout",
        "retries", "fault", NULL};
    const struct ynode *seen[ALLOW_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { name: api, host: api.example.com, ports: [443] }");
    r->line = n->line;
    r->col = n->col;
    timeouts_default(&r->t, 5 * 1000);
    retries_default(&r->retries);
    rc = map_walk(x, n, known, seen, allow_value, r);
    if (rc < 0)
        return rc;
    timeouts_done(&r->t);
    if (!seen[ALLOW_K_NAME])
        return fail(x, n, "missing required key \"name\"");
    *name_node = seen[ALLOW_K_NAME]->next;
    if (seen[ALLOW_K_HOST] && seen[ALLOW_K_CIDR])
        return fail(x, n, "expected host or cidr, not both");
    if (!seen[ALLOW_K_HOST] && !seen[ALLOW_K_CIDR])
        return fail(x, n, "missing required key \"host\" or \"cidr\"");
    if (!seen[ALLOW_K_PORTS])
        return fail(x, n, "missing required key \"ports\"");
    if (r->ca && !r->tls_originate) {
        path_key(x, "ca");
        return fail(x, seen[ALLOW_K_CA]->next, "only allowed with tls: originate");
    }
    return 0;
}

static int parse_allow(struct pctx *x, const struct ynode *v, struct cfg_egress *e)
{
    const struct ynode **name_nodes, *it;
    size_t i = 0, dup, first;
    int rc;

    if (v->type != YN_SEQ)
        return fail(x, v, "expected a list of allow rules");
    if (v->n > EGRESS_RULES_MAX)
        return fail(x, v, "at most %d allow rules", EGRESS_RULES_MAX);
    if (v->n == 0)
        return 0;
    e->allow = calloc(v->n, sizeof(*e->allow));
    name_nodes = arena_alloc(&x->arena, v->n * sizeof(*name_nodes));
    if (!e->allow || !name_nodes)
        return fail_oom(x);
    e->n_allow = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);

        rc = parse_allow_rule(x, it, &e->allow[i], &name_nodes[i]);
        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    rc = find_dup(x, e->allow, e->n_allow, sizeof(*e->allow),
                  offsetof(struct cfg_egress_rule, name), &dup, &first);
    if (rc < 0)
        return rc;
    if (rc) {
        path_push(x, "[%zu].name", dup);
        return fail(x, name_nodes[dup], "duplicate rule name \"%s\" (first at %s:%d:%d)",
                    e->allow[dup].name, x->name, name_nodes[first]->line, name_nodes[first]->col);
    }
    return 0;
}

/* The allow list compiled for the data plane. What the parser has not
 * checked itself (a CIDR's address and prefix) is refused here, at the rule
 * the compiler names: its message starts "rule K (name): ", which the key
 * path says already. */
static int compile_allow(struct pctx *x, struct cfg_egress *e)
{
    struct egress_rule_spec *specs = NULL;
    char why[CFG_ERR_MAX];
    const char *msg;
    size_t k;

    if (e->n_allow) {
        specs = arena_alloc(&x->arena, e->n_allow * sizeof(*specs));
        if (!specs)
            return fail_oom(x);
    }
    for (k = 0; k < e->n_allow; k++) {
        const struct cfg_egress_rule *r = &e->allow[k];

        specs[k] = (struct egress_rule_spec){
            .name = r->name,
            .host = r->host,
            .cidr = r->cidr,
            .ports = r->ports,
            .n_ports = r->n_ports,
            .methods = r->methods,
            .paths = (const char *const *)r->paths,
            .n_paths = r->n_paths,
        };
    }
    e->rules = egress_rules_compile(specs, e->n_allow, why, sizeof(why));
    if (e->rules)
        return 0;
    if (strcmp(why, "out of memory") == 0)
        return fail_oom(x);
    if (sscanf(why, "rule %zu", &k) == 1 && k < e->n_allow) {
        msg = strstr(why, ": ");
        path_key(x, "allow");
        path_index(x, k);
        return fail_at(x, e->allow[k].line, e->allow[k].col, "%s", msg ? msg + 2 : why);
    }
    return fail_at(x, e->line, e->col, "%s", why);
}

enum {
    EGRESS_K_LISTEN,
    EGRESS_K_MODE,
    EGRESS_K_DENY_PRIVATE,
    EGRESS_K_TUNNEL_IDLE,
    EGRESS_K_ALLOW,
    EGRESS_K_CAPTURE,
    EGRESS_K_N
};

struct egress_parse {
    struct cfg_egress *e;
    struct egress_listen *l;
};

static int egress_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct egress_parse *p = obj;

    switch (key) {
    case EGRESS_K_LISTEN:
        return get_egress_listen(x, v, &p->l->addr);
    case EGRESS_K_MODE:
        if (node_is_value(v) && node_eq(v, "enforce"))
            p->e->mode = CFG_EGRESS_ENFORCE;
        else if (node_is_value(v) && node_eq(v, "report"))
            p->e->mode = CFG_EGRESS_REPORT;
        else
            return fail(x, v, "expected enforce or report");
        return 0;
    case EGRESS_K_DENY_PRIVATE:
        return get_bool(x, v, &p->e->deny_private);
    case EGRESS_K_TUNNEL_IDLE:
        return get_timeout(x, v, &p->e->tunnel_idle_timeout_ms);
    case EGRESS_K_CAPTURE:
        return parse_capture(x, v, p->l);
    default:
        return parse_allow(x, v, p->e);
    }
}

/* functions[].egress. An absent or empty allow list denies everything. */
static int parse_egress(struct pctx *x, const struct ynode *n, struct cfg_function *f)
{
    static const char *const known[] = {
        "listen", "mode", "deny_private", "tunnel_idle_timeout", "allow", "capture", NULL};
    const struct ynode *seen[EGRESS_K_N] = {0};
    struct egress_parse p;
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map with listen and allow");
    p.e = calloc(1, sizeof(*p.e));
    if (!p.e)
        return fail_oom(x);
    f->egress = p.e;
    p.l = &x->egress_listen[f - x->c->functions];
    p.e->line = n->line;
    p.e->col = n->col;
    p.e->mode = CFG_EGRESS_ENFORCE;
    p.e->deny_private = true;
    p.e->tunnel_idle_timeout_ms = 5 * 60 * 1000;
    rc = map_walk(x, n, known, seen, egress_value, &p);
    if (rc < 0)
        return rc;
    if (!seen[EGRESS_K_LISTEN])
        return fail(x, n, "missing required key \"listen\"");
    p.l->node = seen[EGRESS_K_LISTEN]->next;
    p.l->egress = n;
    return compile_allow(x, p.e);
}

/* The listeners a function's egress adds: pass 0 its egress.listen, pass 1
 * its egress.capture. */
static const char *const added_suffix[2] = {".egress", ".capture"};

/* The key under functions[].egress that gave listener l its address. */
static const char *added_key(const struct pctx *x, const struct cfg_listener *l)
{
    if (l->kind != CFG_LISTENER_CAPTURE)
        return "listen";
    return x->egress_listen[l->function].capture_map ? "capture.listen" : "capture";
}

/* Where listener i was written, for clash messages: a top-level listener,
 * or a function's egress.listen. */
static const struct ynode *listener_where(struct pctx *x, size_t i, char *buf, size_t size)
{
    const struct cfg_listener *l = &x->c->listeners[i];

    if (l->kind == CFG_LISTENER_EGRESS) {
        snprintf(buf, size, "functions[%zu].egress.listen", l->function);
        return x->egress_listen[l->function].node;
    }
    if (l->kind == CFG_LISTENER_CAPTURE) {
        snprintf(buf, size, "functions[%zu].egress.%s", l->function, added_key(x, l));
        return x->egress_listen[l->function].cnode;
    }
    snprintf(buf, size, "listeners[%zu]", i);
    return x->listen_nodes[i];
}

static bool added_has(const struct pctx *x, size_t f, int pass)
{
    return x->c->functions[f].egress != NULL && (pass == 0 || x->egress_listen[f].cnode != NULL);
}

/* Each function's egress listener joins config.listeners after the
 * top-level ones (whose indexes routes hold), under the name
 * "<function>.egress", with the listener defaults; then each capture
 * listener, "<function>.capture". Errors are reported under "functions",
 * where this runs. */
static int add_egress_listeners(struct pctx *x)
{
    struct config *c = x->c;
    size_t top = c->n_listeners, n = top, i, j, dup, first;
    const struct ynode **nodes, *at;
    struct cfg_listener *ls;
    struct addr_key a, k;
    char where[64];
    int rc, pass;

    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < c->n_functions; i++) {
            const struct ynode *en = x->egress_listen[i].egress;
            char name[NAME_LEN_MAX + sizeof(".capture")];

            if (!added_has(x, i, pass))
                continue;
            if (++n > CFG_MAX_LISTENERS) {
                path_push(x, "[%zu].egress", i);
                return fail(x, en, "at most %d listeners, egress and capture listeners included",
                            CFG_MAX_LISTENERS);
            }
            snprintf(name, sizeof(name), "%s%s", c->functions[i].name, added_suffix[pass]);
            for (j = 0; j < top; j++) {
                if (strcmp(c->listeners[j].name, name) == 0) {
                    path_push(x, "[%zu].egress", i);
                    return fail(x, en,
                                "its listener would be named \"%s\", the name of listeners[%zu] "
                                "(%s:%d:%d)",
                                name, j, x->name, x->listener_names[j]->line,
                                x->listener_names[j]->col);
                }
            }
        }
    }
    if (n == top)
        return 0;

    ls = realloc(c->listeners, n * sizeof(*ls));
    nodes = arena_alloc(&x->arena, n * sizeof(*nodes));
    if (!ls || !nodes) {
        if (ls)
            c->listeners = ls;
        return fail_oom(x);
    }
    c->listeners = ls;
    memset(ls + top, 0, (n - top) * sizeof(*ls));
    if (top)
        memcpy(nodes, x->listen_nodes, top * sizeof(*nodes));
    x->listen_nodes = nodes;
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < c->n_functions; i++) {
            const struct egress_listen *el = &x->egress_listen[i];
            struct cfg_listener *l = &ls[c->n_listeners];
            const struct ynode *node = pass == 0 ? el->node : el->cnode;
            size_t len = strlen(c->functions[i].name) + strlen(added_suffix[pass]) + 1;

            if (!added_has(x, i, pass))
                continue;
            l->name = malloc(len);
            if (!l->name)
                return fail_oom(x);
            snprintf(l->name, len, "%s%s", c->functions[i].name, added_suffix[pass]);
            l->kind = pass == 0 ? CFG_LISTENER_EGRESS : CFG_LISTENER_CAPTURE;
            l->function = i;
            l->listen = pass == 0 ? el->addr : el->capture;
            l->header_timeout_ms = 10 * 1000;
            l->keepalive_timeout_ms = 60 * 1000;
            l->max_header_bytes = 16 << 10;
            l->min_client_rate = CFG_MIN_CLIENT_RATE;
            l->first_bytes_timeout_ms = pass == 0 ? 0 : el->first_bytes_ms;
            l->line = node->line;
            l->col = node->col;
            nodes[c->n_listeners] = node;
            if (pass == 0) {
                c->functions[i].egress->listener = c->n_listeners;
            } else {
                c->functions[i].egress->has_capture = true;
                c->functions[i].egress->capture_listener = c->n_listeners;
            }
            c->n_listeners++;
        }
    }

    /* The top-level listeners were checked among themselves, so a clash
     * found now is at an egress or capture listener. */
    rc = find_addr_clash(x, &dup, &first);
    if (rc < 0)
        return rc;
    if (rc) {
        at = listener_where(x, first, where, sizeof(where));
        path_push(x, "[%zu].egress.%s", ls[dup].function, added_key(x, &ls[dup]));
        return fail(x, x->listen_nodes[dup], "address already used by %s (%s:%d:%d)", where,
                    x->name, at->line, at->col);
    }
    if (!c->has_admin)
        return 0;
    addr_key_of(&c->admin_listen, &a);
    for (i = top; i < n; i++) {
        addr_key_of(&ls[i].listen, &k);
        if (addr_clash(&a, &k)) {
            path_push(x, "[%zu].egress.%s", ls[i].function, added_key(x, &ls[i]));
            return fail(x, x->listen_nodes[i], "address already used by admin.listen (%s:%d:%d)",
                        x->name, x->admin_listen->line, x->admin_listen->col);
        }
    }
    return 0;
}

enum {
    OUT_K_CONSECUTIVE,
    OUT_K_BASE,
    OUT_K_MAX,
    OUT_K_PERCENT,
    OUT_K_FAILURE_PERCENT,
    OUT_K_FAILURE_WINDOW,
    OUT_K_N
};

static int outlier_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct outlier_policy *o = obj;
    uint64_t n;
    int rc;

    switch (key) {
    case OUT_K_CONSECUTIVE:
        rc = get_uint_max(x, v, 1000, &n);
        o->consecutive_failures = (unsigned)n;
        return rc;
    case OUT_K_BASE:
        return get_timeout(x, v, &o->base_ejection_ms);
    case OUT_K_MAX:
        return get_timeout(x, v, &o->max_ejection_ms);
    case OUT_K_PERCENT:
        rc = get_uint_max(x, v, 100, &n);
        o->max_ejected_percent = (unsigned)n;
        return rc;
    case OUT_K_FAILURE_PERCENT:
        rc = get_uint_max(x, v, 100, &n);
        o->failure_percent = (unsigned)n;
        return rc;
    default:
        rc = get_uint_max(x, v, 100000, &n);
        if (rc == 0 && n == 0)
            rc = fail(x, v, "must be greater than zero");
        o->failure_window = (unsigned)n;
        return rc;
    }
}

/* outlier: { consecutive_failures, base_ejection_time, max_ejection_time,
 * max_ejected_percent } */
static int parse_outlier(struct pctx *x, const struct ynode *n, struct outlier_policy *o)
{
    static const char *const known[] = {"consecutive_failures",
                                        "base_ejection_time",
                                        "max_ejection_time",
                                        "max_ejected_percent",
                                        "failure_percent",
                                        "failure_window",
                                        NULL};
    const struct ynode *seen[OUT_K_N] = {0};
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n,
                    "expected a map like { consecutive_failures: 5, base_ejection_time: 10s }");
    rc = map_walk(x, n, known, seen, outlier_value, o);
    if (rc == 0 && o->base_ejection_ms > o->max_ejection_ms)
        rc = fail(x, n, "base_ejection_time is greater than max_ejection_time");
    return rc;
}

enum { CB_K_ACTIVE, CB_K_PENDING, CB_K_N };

static int breaker_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_circuit_breaker *b = obj;
    uint64_t n;
    int rc = get_uint_max(x, v, 1000000, &n);

    if (key == CB_K_ACTIVE)
        b->max_active = (unsigned)n;
    else
        b->max_pending = (unsigned)n;
    return rc;
}

static int parse_breaker(struct pctx *x, const struct ynode *n, struct cfg_circuit_breaker *b)
{
    static const char *const known[] = {"max_active", "max_pending", NULL};
    const struct ynode *seen[CB_K_N] = {0};

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { max_active: 1024, max_pending: 1024 }");
    return map_walk(x, n, known, seen, breaker_value, b);
}

#define READY_PATH_MAX 1024
#define READY_TIME_MAX_MS (60 * 1000)

/* The probe's request target goes on the wire as written: visible ASCII
 * only (no spaces, no control bytes), and no fragment, which is never sent.
 * A query is allowed: some health checks take one. */
static int get_probe_path(struct pctx *x, const struct ynode *v, char **out)
{
    if (!node_is_value(v) || v->len == 0 || v->str[0] != '/')
        return fail(x, v, "expected a path like /healthz, starting with /");
    if (v->len > READY_PATH_MAX)
        return fail(x, v, "path too long: at most %d bytes", READY_PATH_MAX);
    for (size_t i = 0; i < v->len; i++) {
        unsigned char ch = (unsigned char)v->str[i];

        if (ch < 0x21 || ch > 0x7e || ch == '#')
            return fail(x, v, "expected a path of visible ASCII characters, without spaces or #");
    }
    *out = dup_node(x, v->str, v->len);
    return *out ? 0 : -ENOMEM;
}

enum { READY_K_PATH, READY_K_INTERVAL, READY_K_TIMEOUT, READY_K_N };

static int readiness_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_readiness *r = obj;
    uint64_t *ms;
    int rc;

    if (key == READY_K_PATH)
        return get_probe_path(x, v, &r->path);
    ms = key == READY_K_INTERVAL ? &r->interval_ms : &r->timeout_ms;
    rc = get_timeout(x, v, ms);
    if (rc == 0 && *ms > READY_TIME_MAX_MS)
        rc = fail(x, v, "at most 1m");
    return rc;
}

/* readiness: { path, interval, timeout }; without a path the probe is a TCP
 * connect, so readiness: {} is a whole configuration. */
static int parse_readiness(struct pctx *x, const struct ynode *n, struct cfg_readiness **out)
{
    static const char *const known[] = {"path", "interval", "timeout", NULL};
    const struct ynode *seen[READY_K_N] = {0};
    struct cfg_readiness *r;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map like { path: /healthz, interval: 50ms, timeout: 1s }");
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return fail_oom(x);
    *out = r;
    r->interval_ms = 50;
    r->timeout_ms = 1000;
    return map_walk(x, n, known, seen, readiness_value, r);
}

enum {
    FN_K_NAME,
    FN_K_ENDPOINTS,
    FN_K_INGRESS,
    FN_K_UPSTREAM_TLS,
    FN_K_EGRESS,
    FN_K_OUTLIER,
    FN_K_BREAKER,
    FN_K_READINESS,
    FN_K_N
};

static int function_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    struct cfg_function *f = obj;

    switch (key) {
    case FN_K_NAME:
        return get_name(x, v, &f->name);
    case FN_K_ENDPOINTS:
        return parse_endpoints(x, v, f);
    case FN_K_INGRESS:
        return parse_ingress(x, v, f);
    case FN_K_UPSTREAM_TLS:
        return parse_upstream_tls(x, v, &f->upstream_tls);
    case FN_K_EGRESS:
        return parse_egress(x, v, f);
    case FN_K_OUTLIER:
        return parse_outlier(x, v, &f->outlier);
    case FN_K_BREAKER:
        return parse_breaker(x, v, &f->circuit_breaker);
    default:
        return parse_readiness(x, v, &f->readiness);
    }
}

/* The first of f's routes whose listener asks for no client certificate;
 * NULL if every one does (or f has no routes). */
static const struct cfg_route *route_without_client_ca(struct pctx *x, const struct cfg_function *f)
{
    for (size_t r = 0; r < f->n_routes; r++) {
        const struct cfg_listener *l = &x->c->listeners[f->routes[r].listener];

        if (l->tls == NULL || l->tls->client_ca == NULL)
            return &f->routes[r];
    }
    return NULL;
}

/* What only the whole function tells: readiness is read beside ingress, and
 * routes may follow rate_limit. ingress is the ingress map; r is
 * route_without_client_ca(). The path is the function's when called. */
static int check_admission(struct pctx *x, const struct cfg_function *f,
                           const struct ynode *ingress, const struct cfg_route *r)
{
    const struct ynode *k;

    /* per: client_id keys on the verified identity: as for allowed_clients. */
    if (f->admission.per == CFG_RATE_CLIENT_ID && r != NULL) {
        k = map_get(map_get(ingress, "rate_limit")->next, "per");
        path_key(x, "ingress.rate_limit.per");
        return fail(x, k->next, "client_id needs tls.client_ca on listener \"%s\" (route %s)",
                    x->c->listeners[r->listener].name, r->name);
    }
    /* A queue holds requests over max_concurrency or while no endpoint is
     * ready: with neither, it would never hold one. */
    k = map_get(ingress, "queue");
    if (k != NULL && f->admission.max_concurrency == 0 && f->readiness == NULL) {
        path_key(x, "ingress.queue");
        return fail(x, k, "a queue needs max_concurrency or readiness on this function");
    }
    return 0;
}

static int parse_function(struct pctx *x, const struct ynode *n, struct cfg_function *f,
                          const struct ynode **name_node)
{
    static const char *const known[] = {"name",   "endpoints", "ingress",         "upstream_tls",
                                        "egress", "outlier",   "circuit_breaker", "readiness",
                                        NULL};
    const struct ynode *seen[FN_K_N] = {0};
    const struct cfg_route *r;
    int rc;

    if (n->type != YN_MAP)
        return fail(x, n, "expected a map with the function's name and endpoints");
    f->line = n->line;
    f->col = n->col;
    f->outlier = (struct outlier_policy){
        .consecutive_failures = 5,
        .base_ejection_ms = 10 * 1000,
        .max_ejection_ms = 300 * 1000,
        .max_ejected_percent = 50,
        .failure_window = 20,
    };
    f->circuit_breaker = (struct cfg_circuit_breaker){.max_active = 1024, .max_pending = 1024};
    f->admission = (struct cfg_admission){.queue_depth = 100, .queue_timeout_ms = 5 * 1000};
    rc = map_walk(x, n, known, seen, function_value, f);
    if (rc < 0)
        return rc;
    if (!seen[FN_K_NAME])
        return fail(x, n, "missing required key \"name\"");
    *name_node = seen[FN_K_NAME]->next;
    if (!seen[FN_K_ENDPOINTS])
        return fail(x, n, "missing required key \"endpoints\"");
    if (f->upstream_tls != NULL)
        for (size_t e = 0; e < f->n_endpoints; e++)
            if (f->endpoints[e].kind == CFG_ADDR_UNIX && f->upstream_tls->server_name == NULL)
                return fail(x, seen[FN_K_UPSTREAM_TLS],
                            "server_name is required with unix endpoints");
    /* An identity can only be checked where client certificates are. */
    r = route_without_client_ca(x, f);
    if (f->n_allowed_clients > 0 && r != NULL)
        return fail(x, seen[FN_K_INGRESS],
                    "ingress.allowed_clients needs tls.client_ca on listener \"%s\" (route %s)",
                    x->c->listeners[r->listener].name, r->name);
    if (seen[FN_K_INGRESS] != NULL)
        return check_admission(x, f, seen[FN_K_INGRESS]->next, r);
    return 0;
}

static int parse_functions(struct pctx *x, const struct ynode *v)
{
    struct config *c = x->c;
    const struct ynode **name_nodes, *it;
    size_t i = 0, dup, first;
    int rc;

    if (v->type != YN_SEQ)
        return fail(x, v, "expected a list of functions");
    if (v->n == 0)
        return 0;
    c->functions = calloc(v->n, sizeof(*c->functions));
    name_nodes = arena_alloc(&x->arena, v->n * sizeof(*name_nodes));
    x->egress_listen = arena_alloc(&x->arena, v->n * sizeof(*x->egress_listen));
    if (!c->functions || !name_nodes || !x->egress_listen)
        return fail_oom(x);
    memset(x->egress_listen, 0, v->n * sizeof(*x->egress_listen));
    c->n_functions = v->n;
    for (it = v->first; it; it = it->next, i++) {
        size_t mark = path_index(x, i);

        rc = parse_function(x, it, &c->functions[i], &name_nodes[i]);
        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    rc = find_dup(x, c->functions, c->n_functions, sizeof(*c->functions),
                  offsetof(struct cfg_function, name), &dup, &first);
    if (rc < 0)
        return rc;
    if (rc) {
        path_push(x, "[%zu].name", dup);
        return fail(x, name_nodes[dup], "duplicate function name \"%s\" (first at %s:%d:%d)",
                    c->functions[dup].name, x->name, name_nodes[first]->line,
                    name_nodes[first]->col);
    }
    return add_egress_listeners(x);
}

/* ---- routes that can never match ---- */

struct route_ref {
    const struct cfg_route *r;
    size_t fn, idx; /* file order: functions, then their routes */
};

static int route_ref_cmp(const void *a, const void *b)
{
    const struct route_ref *p = a, *q = b;
    int r;

    if (p->r->listener != q->r->listener)
        return p->r->listener < q->r->listener ? -1 : 1;
    if (!p->r->host != !q->r->host)
        return p->r->host ? 1 : -1;
    if (p->r->host && (r = strcmp(p->r->host, q->r->host)) != 0)
        return r;
    if ((r = strcmp(p->r->path_prefix, q->r->path_prefix)) != 0)
        return r;
    if (p->fn != q->fn)
        return p->fn < q->fn ? -1 : 1;
    return p->idx < q->idx ? -1 : p->idx > q->idx;
}

static bool same_key(const struct route_ref *a, const struct route_ref *b)
{
    return a->r->listener == b->r->listener && !a->r->host == !b->r->host &&
           (!a->r->host || strcmp(a->r->host, b->r->host) == 0) &&
           strcmp(a->r->path_prefix, b->r->path_prefix) == 0;
}

static bool ref_before(const struct route_ref *a, const struct route_ref *b)
{
    return a->fn < b->fn || (a->fn == b->fn && a->idx < b->idx);
}

static int ref_where(struct pctx *x, const struct route_ref *e, char *buf, size_t size)
{
    return snprintf(buf, size, "functions[%zu].ingress.routes[%zu] (%s:%d:%d)", e->fn, e->idx,
                    x->name, e->r->line, e->r->col);
}

/* A route loses to another only when both have the same listener, host and
 * path_prefix (any other difference makes one strictly more specific, and
 * the router then picks it). Among those ties, one route without methods
 * and routes with disjoint method sets can coexist: a route with methods
 * wins for its methods. Anything else can never match, wholly or for some
 * method, and is reported at the later route. */
static int check_shadowing(struct pctx *x)
{
    const struct config *c = x->c;
    const struct route_ref *bad = NULL, *owner[N_METHODS], *none;
    const struct route_ref *bad_owner[N_METHODS];
    struct route_ref *v;
    size_t n = 0, i, j, g;
    unsigned bad_overlap = 0, taken;
    char msg[CFG_ERR_MAX];
    int off;

    for (i = 0; i < c->n_functions; i++)
        n += c->functions[i].n_routes;
    if (n < 2)
        return 0;
    v = arena_alloc(&x->arena, n * sizeof(*v));
    if (!v)
        return fail_oom(x);
    for (i = 0, n = 0; i < c->n_functions; i++) {
        for (j = 0; j < c->functions[i].n_routes; j++, n++) {
            v[n].r = &c->functions[i].routes[j];
            v[n].fn = i;
            v[n].idx = j;
        }
    }
    qsort(v, n, sizeof(*v), route_ref_cmp);

    for (g = 0; g < n; g = i) {
        taken = 0;
        none = NULL;
        memset(owner, 0, sizeof(owner));
        for (i = g; i < n && same_key(&v[g], &v[i]); i++) {
            const struct route_ref *e = &v[i];
            unsigned m = e->r->methods, overlap = m & taken;

            if (m == 0 && none && (!bad || ref_before(e, bad))) {
                bad = e;
                bad_overlap = 0;
                bad_owner[0] = none;
            } else if (overlap && (!bad || ref_before(e, bad))) {
                bad = e;
                bad_overlap = overlap;
                memcpy(bad_owner, owner, sizeof(owner));
            }
            if (m == 0 && !none)
                none = e;
            for (j = 0; j < N_METHODS; j++) {
                if ((m & ~taken) & (1u << j))
                    owner[j] = e;
            }
            taken |= m;
        }
    }
    if (!bad)
        return 0;

    path_push(x, "functions[%zu].ingress.routes[%zu]", bad->fn, bad->idx);
    if (bad_overlap == 0) {
        ref_where(x, bad_owner[0], msg, sizeof(msg));
        return fail_at(x, bad->r->line, bad->r->col, "never matches: shadowed by %s", msg);
    }
    if (bad_overlap != bad->r->methods) {
        j = (size_t)method_index(bad_overlap);
        ref_where(x, bad_owner[j], msg, sizeof(msg));
        return fail_at(x, bad->r->line, bad->r->col, "never matches for %s: taken by %s",
                       methods[j].name, msg);
    }
    /* Shadowed as a whole: name each route that takes one of its methods. */
    off = 0;
    for (j = 0; j < N_METHODS; j++) {
        size_t k;
        bool named = false;

        if (!(bad_overlap & (1u << j)))
            continue;
        for (k = 0; k < j; k++)
            named |= (bad_overlap & (1u << k)) && bad_owner[k] == bad_owner[j];
        if (named || off >= (int)sizeof(msg))
            continue;
        if (off)
            off += snprintf(msg + off, sizeof(msg) - (size_t)off, " and ");
        if (off < (int)sizeof(msg))
            off += ref_where(x, bad_owner[j], msg + off, sizeof(msg) - (size_t)off);
    }
    return fail_at(x, bad->r->line, bad->r->col, "never matches: shadowed by %s", msg);
}

/* ---- top level ---- */

enum {
    ROOT_K_WORKERS,
    ROOT_K_ADMIN,
    ROOT_K_DRAIN,
    ROOT_K_LISTENERS,
    ROOT_K_FUNCTIONS,
    ROOT_K_ACCESS_LOG,
    ROOT_K_DNS,
    ROOT_K_METRICS,
    ROOT_K_WATCH,
    ROOT_K_N
};

static int root_value(struct pctx *x, int key, const struct ynode *v, void *obj)
{
    (void)obj;
    switch (key) {
    case ROOT_K_WORKERS:
        return get_workers(x, v, &x->c->workers);
    case ROOT_K_ADMIN:
        return parse_admin(x, v);
    case ROOT_K_DRAIN:
        return get_timeout(x, v, &x->c->drain_timeout_ms);
    case ROOT_K_LISTENERS:
        return parse_listeners(x, v);
    case ROOT_K_FUNCTIONS:
        return 0; /* read last: routes refer to listeners, which may come later */
    case ROOT_K_ACCESS_LOG:
        return get_access_log(x, v, &x->c->access_log);
    case ROOT_K_METRICS:
        return get_metrics(x, v, &x->c->metrics_off);
    case ROOT_K_WATCH:
        return get_metrics(x, v, &x->c->watch_off); /* the same on | off */
    default:
        return parse_dns(x, v);
    }
}

static int parse_root(struct pctx *x, const struct ynode *root)
{
    static const char *const known[] = {"workers",   "admin",      "drain_timeout", "listeners",
                                        "functions", "access_log", "dns",           "metrics",
                                        "watch",     NULL};
    const struct ynode *seen[ROOT_K_N] = {0};
    size_t mark;
    int rc;

    if (root->type != YN_MAP)
        return fail(x, root, "expected a map of settings at the top level");
    x->c->drain_timeout_ms = 10 * 1000;
    x->c->dns.timeout_ms = 5 * 1000;
    x->c->dns.cache_min_ttl_s = 0;
    x->c->dns.cache_max_ttl_s = 300;
    x->c->dns.cache_entries = 1024;
    rc = map_walk(x, root, known, seen, root_value, NULL);
    if (rc < 0)
        return rc;
    rc = check_admin_clash(x);
    if (rc < 0)
        return rc;
    if (seen[ROOT_K_FUNCTIONS]) {
        mark = path_key(x, "functions");
        rc = parse_functions(x, seen[ROOT_K_FUNCTIONS]->next);
        if (rc < 0)
            return rc;
        path_pop(x, mark);
    }
    return check_shadowing(x);
}

int config_parse(const char *name, const char *buf, size_t len, struct config **out, char *err,
                 size_t errlen)
{
    struct pctx x = {0};
    struct ynode *root;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    x.name = name ? name : "config";
    x.err = err;
    x.errlen = errlen;
    if (len > CONFIG_FILE_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "%s: larger than 4 MiB", x.name);
        return -EFBIG;
    }
    x.c = calloc(1, sizeof(*x.c));
    if (!x.c)
        return fail_oom(&x);
    x.c->path = strdup(x.name);
    if (!x.c->path) {
        rc = fail_oom(&x);
        goto out_free_config;
    }

    rc = tree_build(&x, buf ? buf : "", buf ? len : 0, &root);
    if (rc < 0)
        goto out_free_config;
    if (!root) {
        rc = fail_at(&x, 1, 1, "expected a map of settings at the top level; the file is empty");
        goto out_free_config;
    }
    rc = parse_root(&x, root);
    if (rc < 0)
        goto out_free_config;
    *out = x.c;
    x.c = NULL;

out_free_config:
    config_free(x.c);
    arena_release(&x.arena);
    return rc;
}

int config_read(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
    size_t len = 0, cap = 64 << 10;
    char *buf, *bigger;
    int fd, rc;
    ssize_t n;

    *out = NULL;
    *out_len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out_report;
    }
    buf = malloc(cap);
    if (!buf) {
        rc = -ENOMEM;
        goto out_close;
    }
    /* Read to EOF rather than trust st_size: the path may be a pipe. One
     * byte past the limit is enough to know the file is too large. */
    for (;;) {
        if (len == cap) {
            if (cap > CONFIG_FILE_MAX) {
                rc = -EFBIG;
                goto out_free_buf;
            }
            cap = cap * 2 > CONFIG_FILE_MAX + 1 ? CONFIG_FILE_MAX + 1 : cap * 2;
            bigger = realloc(buf, cap);
            if (!bigger) {
                rc = -ENOMEM;
                goto out_free_buf;
            }
            buf = bigger;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out_free_buf;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_len = len;
    return 0;

out_free_buf:
    free(buf);
out_close:
    close(fd);
out_report:
    if (err && errlen) {
        if (rc == -EFBIG)
            snprintf(err, errlen, "cannot read %s: larger than 4 MiB", path);
        else
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(-rc));
    }
    return rc;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    char *buf;
    size_t len;
    int rc;

    *out = NULL;
    rc = config_read(path, &buf, &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = config_parse(path, buf, len, out, err, errlen);
    free(buf);
    return rc;
}

void config_free(struct config *c)
{
    size_t i, j;

    if (!c)
        return;
    for (i = 0; i < c->n_listeners; i++) {
        struct cfg_listener_tls *t = c->listeners[i].tls;
        free(c->listeners[i].name);
        if (t != NULL) {
            for (size_t ci = 0; ci < t->n_certificates; ci++) {
                free(t->certificates[ci].cert);
                free(t->certificates[ci].key);
            }
            free(t->certificates);
            free(t->client_ca);
            free(t);
        }
    }
    free(c->listeners);
    for (i = 0; i < c->n_functions; i++) {
        struct cfg_function *f = &c->functions[i];

        free(f->name);
        free(f->endpoints);
        for (size_t ai = 0; ai < f->n_allowed_clients; ai++)
            free(f->allowed_clients[ai]);
        free(f->allowed_clients);
        if (f->upstream_tls != NULL) {
            free(f->upstream_tls->ca);
            free(f->upstream_tls->server_name);
            free(f->upstream_tls);
        }
        if (f->readiness != NULL) {
            free(f->readiness->path);
            free(f->readiness);
        }
        for (j = 0; j < f->n_routes; j++) {
            free(f->routes[j].name);
            free(f->routes[j].host);
            free(f->routes[j].path_prefix);
        }
        free(f->routes);
        if (f->egress != NULL) {
            for (j = 0; j < f->egress->n_allow; j++) {
                struct cfg_egress_rule *r = &f->egress->allow[j];

                free(r->name);
                free(r->host);
                free(r->cidr);
                free(r->ports);
                for (size_t pi = 0; pi < r->n_paths; pi++)
                    free(r->paths[pi]);
                free(r->paths);
                free(r->ca);
            }
            free(f->egress->allow);
            egress_rules_free(f->egress->rules);
            free(f->egress);
        }
    }
    free(c->functions);
    free(c->access_log);
    free(c->dns.servers);
    free(c->path);
    free(c);
}
