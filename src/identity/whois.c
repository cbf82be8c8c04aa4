/* Tailscale WhoIs: asynchronous lookups over the LocalAPI unix socket. An
 * answer for a tailnet address goes in a process-wide cache, so a busy node
 * costs one lookup per TTL, not one per request; an answer for an address
 * and port holds for that one connection and is kept on it (kl_conn_keep),
 * never where the next connection from that port would find it. Lookups for
 * the same peer on one worker share a single request. Errors are never
 * cached: when tailscaled comes back, the next request succeeds. What "the
 * same peer" is: see kl_whois_key. */
#include "identity/whois.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/text.h"
#include "listen/conn.h"
#include "upstream/fetch.h"

#define NBUCKETS 1024
#define MAX_ENTRIES 65536

struct kl_whois_cache {
    pthread_mutex_t lock;
    struct kl_whois_entry *buckets[NBUCKETS];
    size_t n;
};

struct pending {
    struct pending *next;
    kl_worker *w;
    char ip[96];                /* kl_whois_key's */
    bool shared;                /* the answer is for a tailnet address: cached for all */
    bool closed;                /* per-connection lookup whose connection has gone: nobody joins it */
    struct kl_fetch *fetch;
    kl_exchange **waiters;
    size_t n, cap;
    uint32_t ttl_ms, negative_ttl_ms;
};

struct kl_identity_worker {
    struct pending *pending;
};

static unsigned hash_ip(const char *ip)
{
    return (unsigned)(kl_fnv64(KL_FNV64_START, ip, strlen(ip)) % NBUCKETS);
}

struct kl_whois_cache *kl_whois_cache_new(void)
{
    struct kl_whois_cache *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void kl_whois_entry_unref(struct kl_whois_entry *e)
{
    if (!e || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    cJSON_Delete(e->caps);
    kl_arena_free(&e->arena);
    free(e);
}

void kl_whois_cache_free(struct kl_whois_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct kl_whois_entry *e = c->buckets[i];
        while (e) {
            struct kl_whois_entry *next = e->next;
            kl_whois_entry_unref(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Returns a new reference, or NULL when absent or expired. */
static struct kl_whois_entry *cache_get(struct kl_whois_cache *c, const char *ip, int64_t now_ms)
{
    unsigned b = hash_ip(ip);
    pthread_mutex_lock(&c->lock);
    struct kl_whois_entry **pp = &c->buckets[b], *e;
    while ((e = *pp)) {
        if (strcmp(e->ip, ip) == 0) {
            if (e->expires_ms <= now_ms) {
                *pp = e->next;
                c->n--;
                kl_whois_entry_unref(e);
                e = NULL;
            } else {
                atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
            }
            break;
        }
        pp = &e->next;
    }
    pthread_mutex_unlock(&c->lock);
    return e;
}

static void cache_put(struct kl_whois_cache *c, struct kl_whois_entry *e, int64_t now_ms)
{
    unsigned b = hash_ip(e->ip);
    pthread_mutex_lock(&c->lock);
    if (c->n >= MAX_ENTRIES) {
        /* Drop expired entries; if the table is still full, start over. */
        for (size_t i = 0; i < NBUCKETS; i++) {
            struct kl_whois_entry **pp = &c->buckets[i], *x;
            while ((x = *pp)) {
                if (x->expires_ms <= now_ms || c->n >= MAX_ENTRIES) {
                    *pp = x->next;
                    c->n--;
                    kl_whois_entry_unref(x);
                } else {
                    pp = &x->next;
                }
            }
        }
    }
    struct kl_whois_entry **pp = &c->buckets[b], *x;
    while ((x = *pp)) {
        if (strcmp(x->ip, e->ip) == 0) {
            *pp = x->next;
            c->n--;
            kl_whois_entry_unref(x);
            break;
        }
        pp = &x->next;
    }
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed); /* the cache's */
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->n++;
    pthread_mutex_unlock(&c->lock);
}

static int64_t now_ms(void)
{
    return kl_now_ns() / 1000000;
}

/* Is ip one of Tailscale's own addresses (100.64.0.0/10, fd7a:115c:a1e0::/48)?
 * ip is inet_ntop's text. (inet_pton, not sscanf: this runs twice a
 * request, and sscanf cost ~2,400 instructions a call.) */
static bool tailnet_address(const char *ip)
{
    if (strncasecmp(ip, "fd7a:115c:a1e0:", 15) == 0)
        return true;
    struct in_addr in;
    if (inet_pton(AF_INET, ip, &in) != 1)
        return false;
    const unsigned char *b = (const unsigned char *)&in.s_addr;
    return b[0] == 100 && b[1] >= 64 && b[1] < 128;
}

/* s[0..n) into out as snprintf("%s") would put it: cut to outlen - 1. */
static void put_cut(char *out, size_t outlen, const char *s, size_t n)
{
    if (!outlen)
        return;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* kl_whois_key, and whether ip is a tailnet address. Built by hand: the two
 * snprintf calls it made were ~1,700 instructions of every request (half of
 * identity's cost on the worker). */
static bool whois_key(const char *ip, int port, char *addr, size_t addrlen, char *key, size_t keylen)
{
    char buf[128];
    size_t n = strlen(ip), o = 0;
    bool v6 = memchr(ip, ':', n) != NULL;
    if (port < 0 || n + 24 > sizeof(buf)) {
        snprintf(addr, addrlen, v6 ? "[%s]:%d" : "%s:%d", ip, port);
    } else {
        if (v6)
            buf[o++] = '[';
        memcpy(buf + o, ip, n);
        o += n;
        if (v6)
            buf[o++] = ']';
        buf[o++] = ':';
        o += kl_fmt_u64(buf + o, (uint64_t)port);
        put_cut(addr, addrlen, buf, o);
    }
    bool tailnet = tailnet_address(ip);
    if (tailnet)
        put_cut(key, keylen, ip, n);
    else
        put_cut(key, keylen, addr, strlen(addr));
    return tailnet;
}

void kl_whois_key(const char *ip, int port, char *addr, size_t addrlen, char *key, size_t keylen)
{
    whois_key(ip, port, addr, addrlen, key, keylen);
}

struct kl_whois_entry *kl_whois_cached(kl_exchange *ex)
{
    char addr[96], key[96];
    if (whois_key(ex->peer_ip, ex->peer_port, addr, sizeof(addr), key, sizeof(key)))
        return cache_get(ex->worker->server->whois_cache, key, now_ms());
    struct kl_whois_entry *e = kl_conn_kept(ex);
    if (!e || strcmp(e->ip, key) != 0 || e->expires_ms <= now_ms())
        return NULL;
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    return e;
}

static void entry_unref(void *e)
{
    kl_whois_entry_unref(e);
}

/* tailscaled's answer for a peer it does not know (Go's http.Error adds the
 * line feed). Any other 404 (an older tailscaled, or something else on the
 * socket) says nothing about the peer: taken for "not a tailnet caller", it
 * would pass the caller on to the next source, loopback included. */
static bool no_match(const char *body, size_t len)
{
    static const char text[] = "no match for IP:port";
    return body && len >= sizeof(text) - 1 && memcmp(body, text, sizeof(text) - 1) == 0;
}

/* The start of an error body, printable ASCII only, for a message. */
static const char *first_line(const char *body, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; body && i < len && o + 1 < outlen && body[i] != '\n'; i++)
        out[o++] = body[i] >= 0x20 && body[i] < 0x7f ? body[i] : '?';
    out[o] = '\0';
    return o ? out : "no body";
}

/* Build the cache entry for a finished lookup; NULL (with *err) on failure. */
static struct kl_whois_entry *entry_from(const char *ip, int status, const char *body, size_t len,
                                         const char *error, const struct pending *p,
                                         char *err, size_t errlen)
{
    if (status == 404 && no_match(body, len)) {
        struct kl_whois_entry *e = calloc(1, sizeof(*e));
        if (!e)
            abort();
        atomic_init(&e->refs, 1);
        snprintf(e->ip, sizeof(e->ip), "%s", ip);
        e->state = KL_WHOIS_NOT_TAILNET;
        e->expires_ms = now_ms() + p->negative_ttl_ms;
        return e;
    }
    if (status != 200) {
        if (status == 0) {
            snprintf(err, errlen, "tailscaled is unavailable (%s)", error ? error : "no answer");
        } else {
            char line[81];
            snprintf(err, errlen, "tailscaled answered WhoIs with HTTP %d (%s)", status,
                     first_line(body, len, line, sizeof(line)));
        }
        return NULL;
    }
    struct kl_whois_entry *e = calloc(1, sizeof(*e));
    if (!e)
        abort();
    atomic_init(&e->refs, 1);
    kl_arena_init_blocks(&e->arena, 512); /* a login, a node, a few tags */
    snprintf(e->ip, sizeof(e->ip), "%s", ip);
    const char *why = NULL;
    int r = kl_whois_parse(body, len, &e->arena, &e->ident, &e->caps, &why);
    if (r < 0) {
        snprintf(err, errlen, "%s", why);
        kl_whois_entry_unref(e);
        return NULL;
    }
    e->ident.caps = e->caps;
    e->state = r == 1 ? KL_WHOIS_IDENTIFIED : KL_WHOIS_NO_OWNER;
    e->expires_ms = now_ms() + p->ttl_ms;
    return e;
}

/* The lookup a new waiter for ip may join, or NULL. */
static struct pending *find_pending(struct kl_identity_worker *iw, const char *ip)
{
    struct pending *p = iw->pending;
    while (p && (p->closed || strcmp(p->ip, ip) != 0))
        p = p->next;
    return p;
}

/* With tailscaled down every request's lookup fails: a warning each would
 * be a line per request (and, from peers that keep connecting, as many as
 * they like), so it is said at most every 10 s with how many went unsaid. */
static void warn_failed(kl_server *srv, const char *ip, const char *err)
{
    uint64_t held;
    if (!kl_log_every_due(&srv->warn_whois_failed, 10000, now_ms(), &held))
        return;
    if (held)
        kl_warn("WhoIs for %s failed: %s (and %llu other WhoIs failure%s since the last such warning, said at most "
                "every 10 s)", ip, err, (unsigned long long)held, held == 1 ? "" : "s");
    else
        kl_warn("WhoIs for %s failed: %s", ip, err);
}

static void on_whois(void *arg, int status, const char *body, size_t len, const char *error)
{
    struct pending *p = arg;
    kl_worker *w = p->w;
    struct kl_identity_worker *iw = w->identity;
    struct pending **pp = &iw->pending;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    char err[256] = "";
    struct kl_whois_entry *e = entry_from(p->ip, status, body, len, error, p, err, sizeof(err));
    if (e && p->shared)
        cache_put(w->server->whois_cache, e, now_ms());
    else if (!e)
        warn_failed(w->server, p->ip, err);
    for (size_t i = 0; i < p->n; i++) {
        if (e && !p->shared) {
            atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
            kl_conn_keep(p->waiters[i], e, entry_unref);
        }
        if (e)
            atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        kl_whois_resume(p->waiters[i], e, err);
    }
    kl_whois_entry_unref(e);
    free(p->waiters);
    free(p);
}

static void url_escape(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s && o + 4 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
            c == '-' || c == '_')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outlen - o, "%%%02X", c);
    }
    out[o] = '\0';
}

int kl_whois_lookup(kl_exchange *ex, const struct kl_identity_cfg *cfg)
{
    kl_worker *w = ex->worker;
    if (!w->identity) {
        w->identity = calloc(1, sizeof(*w->identity));
        if (!w->identity)
            abort();
    }
    char addr[96], key[96];
    bool shared = whois_key(ex->peer_ip, ex->peer_port, addr, sizeof(addr), key, sizeof(key));
    struct pending *p = find_pending(w->identity, key);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            abort();
        p->w = w;
        snprintf(p->ip, sizeof(p->ip), "%s", key);
        p->shared = shared;
        p->ttl_ms = cfg->ts_ttl_ms;
        p->negative_ttl_ms = cfg->ts_negative_ttl_ms;
        char esc[300], url[400];
        url_escape(esc, sizeof(esc), addr);
        snprintf(url, sizeof(url), "http://local-tailscaled.sock/localapi/v0/whois?addr=%s", esc);
        struct kl_fetch_opts o = {
            .url = url, .unix_socket = cfg->ts_socket, .timeout_ms = cfg->ts_timeout_ms,
            .max_body = 1u << 20,
        };
        p->fetch = kl_fetch_start(w, &o, on_whois, p);
        if (!p->fetch) {
            free(p);
            return -1;
        }
        p->next = w->identity->pending;
        w->identity->pending = p;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 4;
        p->waiters = realloc(p->waiters, p->cap * sizeof(*p->waiters));
        if (!p->waiters)
            abort();
    }
    p->waiters[p->n++] = ex;
    return 0;
}

void kl_whois_forget(kl_exchange *ex)
{
    struct kl_identity_worker *iw = ex->worker->identity;
    if (!iw)
        return;
    for (struct pending *p = iw->pending; p; p = p->next) {
        for (size_t i = 0; i < p->n; i++) {
            if (p->waiters[i] == ex) {
                p->waiters[i] = p->waiters[--p->n];
                /* the next connection from this address and port is
                 * somebody else: it asks afresh */
                if (!p->shared && p->n == 0)
                    p->closed = true;
                return;
            }
        }
    }
}

void kl_identity_worker_free(kl_worker *w)
{
    struct kl_identity_worker *iw = w->identity;
    if (!iw)
        return;
    /* The fetches themselves are freed with the worker's curl pool. */
    while (iw->pending) {
        struct pending *p = iw->pending;
        iw->pending = p->next;
        free(p->waiters);
        free(p);
    }
    free(iw);
    w->identity = NULL;
}
