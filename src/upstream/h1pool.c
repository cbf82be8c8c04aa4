#include "upstream/h1pool.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "core/exchange.h"

/* An idle connection older than this is closed: long enough to carry a
 * burst of traffic, short enough not to hoard sockets. A server that closes
 * sooner is noticed at once (the idle connection stays readable-watched). */
#define KL_H1_IDLE_MS 60000
/* Idle connections kept per origin (libcurl's cache held 1024 per worker). */
#define KL_H1_MAX_IDLE 1024
/* How long a resolved name is reused (libcurl's DNS cache default). */
#define KL_H1_DNS_TTL_MS 60000

struct kl_h1_lookup {
    struct kl_h1_pool *pool;
    struct kl_h1_lookup *prev, *next;
    struct kl_h1_origin *origin;
    struct evdns_getaddrinfo_request *req;
    kl_h1_resolved done;                /* NULL once cancelled */
    void *arg;
    bool starting;                      /* inside evdns_getaddrinfo() */
    bool finished;                      /* answered while starting */
    const char *error;
};

static int64_t now_ms(void)
{
    return kl_now_ns() / 1000000;
}

/* Every 1 s while connections are idle: close those idle too long, oldest
 * first, so the walk stops at the first young one. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_h1_pool *p = arg;
    int64_t now = now_ms();
    for (size_t b = 0; b < sizeof(p->buckets) / sizeof(p->buckets[0]); b++)
        for (struct kl_h1_origin *o = p->buckets[b]; o; o = o->next)
            while (o->idle_tail && now - o->idle_tail->idle_since_ms >= KL_H1_IDLE_MS)
                kl_h1_conn_close(o->idle_tail);
    if (p->nidle) {
        struct timeval tv = {1, 0};
        evtimer_add(p->sweep, &tv);
    }
}

struct kl_h1_pool *kl_h1_pool_new(struct event_base *base)
{
    struct kl_h1_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->base = base;
    p->sweep = evtimer_new(base, on_sweep, p);
    p->reqbuf = evbuffer_new();
    if (!p->sweep || !p->reqbuf) {
        if (p->sweep)
            event_free(p->sweep);
        if (p->reqbuf)
            evbuffer_free(p->reqbuf);
        free(p);
        return NULL;
    }
    return p;
}

void kl_h1_pool_free(struct kl_h1_pool *p)
{
    if (!p)
        return;
    for (size_t b = 0; b < sizeof(p->buckets) / sizeof(p->buckets[0]); b++) {
        struct kl_h1_origin *o = p->buckets[b];
        while (o) {
            struct kl_h1_origin *next = o->next;
            while (o->idle_head)
                kl_h1_conn_close(o->idle_head);
            free(o->host);
            free(o);
            o = next;
        }
    }
    /* The loop has stopped: cancelled lookups will not be called back. */
    while (p->lookups) {
        struct kl_h1_lookup *l = p->lookups;
        p->lookups = l->next;
        free(l);
    }
    if (p->dns)
        evdns_base_free(p->dns, 0);
    free(p->scratch);
    evbuffer_free(p->reqbuf);
    event_free(p->sweep);
    free(p);
}

static size_t bucket_of(const char *host, size_t n, uint16_t port)
{
    uint32_t h = 2166136261u ^ port;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)host[i];
        h = (h ^ (c | 0x20u)) * 16777619u;
    }
    return h % 64;
}

struct kl_h1_origin *kl_h1_origin_get(struct kl_h1_pool *p, const char *host, size_t host_len,
                                      uint16_t port)
{
    size_t b = bucket_of(host, host_len, port);
    for (struct kl_h1_origin *o = p->buckets[b]; o; o = o->next)
        if (o->port == port && strlen(o->host) == host_len && strncasecmp(o->host, host, host_len) == 0)
            return o;
    struct kl_h1_origin *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->host = strndup(host, host_len);
    if (!o->host) {
        free(o);
        return NULL;
    }
    o->pool = p;
    o->port = port;
    /* Numeric hosts need no lookup at all. */
    struct sockaddr_in *in4 = (struct sockaddr_in *)&o->addrs[0].sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&o->addrs[0].sa;
    if (evutil_inet_pton(AF_INET, o->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        o->addrs[0].len = sizeof(*in4);
        o->naddrs = 1;
        o->numeric = true;
    } else if (evutil_inet_pton(AF_INET6, o->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        o->addrs[0].len = sizeof(*in6);
        o->naddrs = 1;
        o->numeric = true;
    }
    o->next = p->buckets[b];
    p->buckets[b] = o;
    return o;
}

/* ---- idle connections ---- */

static void unlink_idle(struct kl_h1_conn *c)
{
    struct kl_h1_origin *o = c->origin;
    if (c->prev)
        c->prev->next = c->next;
    else
        o->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        o->idle_tail = c->prev;
    c->prev = c->next = NULL;
    c->idle = false;
    o->nidle--;
    o->pool->nidle--;
}

/* An idle connection has nothing to say: bytes, EOF or an error from it
 * mean the server closed it (or broke the protocol). Drop it now, so it is
 * never handed to a request. */
static void on_idle_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    kl_h1_conn_close(arg);
}

static void on_idle_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    kl_h1_conn_close(arg);
}

/* Has the server closed an idle connection, or sent on it unasked, since
 * the loop last looked (the idle watch sees it only on the next pass)? One
 * recv that peeks: a connection with bytes waiting carries no answer to a
 * request not yet sent, so it is of no use either. */
static bool still_quiet(struct kl_h1_conn *c)
{
    char b;
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return false;
    ssize_t r = recv(bufferevent_getfd(c->bev), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

struct kl_h1_conn *kl_h1_conn_take(struct kl_h1_origin *o)
{
    struct kl_h1_conn *c;
    while ((c = o->idle_head)) {
        if (now_ms() - c->idle_since_ms >= KL_H1_IDLE_MS) {
            /* The newest is too old: so are all the others. */
            while (o->idle_head)
                kl_h1_conn_close(o->idle_head);
            return NULL;
        }
        if (still_quiet(c)) {
            unlink_idle(c);
            return c;
        }
        kl_h1_conn_close(c);
    }
    return NULL;
}

/* Close the pool's connection idle longest, whatever its origin; false
 * when none is idle. A scan of every origin, made only past the pool's
 * share or when out of descriptors. */
static bool shed_oldest(struct kl_h1_pool *p)
{
    struct kl_h1_conn *c = NULL;
    for (size_t b = 0; b < sizeof(p->buckets) / sizeof(p->buckets[0]); b++)
        for (struct kl_h1_origin *o = p->buckets[b]; o; o = o->next)
            if (o->idle_tail && (!c || o->idle_tail->idle_since_ms < c->idle_since_ms))
                c = o->idle_tail;
    if (!c)
        return false;
    /* its descriptor free now, for the socket() about to be tried again:
     * bufferevent_free leaves the close to a finalizer the loop runs later */
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    bufferevent_setfd(c->bev, -1);
    if (fd >= 0)
        evutil_closesocket(fd);
    kl_h1_conn_close(c);
    return true;
}

void kl_h1_conn_put(struct kl_h1_conn *c)
{
    struct kl_h1_origin *o = c->origin;
    struct kl_h1_pool *p = o->pool;
    if (o->nidle >= KL_H1_MAX_IDLE) {
        kl_h1_conn_close(c);
        return;
    }
    /* past the pool's share of the descriptors, the coldest makes way */
    if (p->max_idle && p->nidle >= p->max_idle)
        shed_oldest(p);
    bufferevent_setcb(c->bev, on_idle_read, NULL, on_idle_event, c);
    c->idle = true;
    c->idle_since_ms = now_ms();
    c->prev = NULL;
    c->next = o->idle_head;
    if (o->idle_head)
        o->idle_head->prev = c;
    else
        o->idle_tail = c;
    o->idle_head = c;
    o->nidle++;
    if (p->nidle++ == 0) {
        struct timeval tv = {1, 0};
        evtimer_add(p->sweep, &tv);
    }
}

void kl_h1_conn_close(struct kl_h1_conn *c)
{
    if (c->idle)
        unlink_idle(c);
    /* The output may still reference the request body, which belongs to the
     * exchange: let go of it now, not whenever libevent frees the buffer
     * (its front is frozen to the bufferevent, which is going away). */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, evbuffer_get_length(out));
    bufferevent_free(c->bev);
    free(c);
}

bool kl_h1_errno_local(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

struct kl_h1_conn *kl_h1_conn_open(struct kl_h1_origin *o, const struct kl_h1_addr *a, int *err)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    /* Out of descriptors while idle connections (to this provider or
     * others, kept for reuse) hold some: one of those is worth less than
     * the request that waits for a socket now. */
    while (fd < 0 && (errno == EMFILE || errno == ENFILE) && shed_oldest(o->pool))
        fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    int one = 1;
    /* Small SSE events and request heads must not wait for Nagle. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    struct kl_h1_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev = c ? bufferevent_socket_new(o->pool->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        close(fd);
        free(c);
        *err = ENOMEM;
        return NULL;
    }
    if (bufferevent_socket_connect(bev, (const struct sockaddr *)&a->sa, (int)a->len) < 0) {
        *err = EVUTIL_SOCKET_ERROR();
        if (!*err)
            *err = ECONNREFUSED;
        bufferevent_free(bev);
        free(c);
        return NULL;
    }
    c->origin = o;
    c->bev = bev;
    return c;
}

/* ---- names ---- */

static void lookup_unlink(struct kl_h1_lookup *l)
{
    struct kl_h1_pool *p = l->pool;
    if (l->prev)
        l->prev->next = l->next;
    else
        p->lookups = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

static void on_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    struct kl_h1_lookup *l = arg;
    const char *error = NULL;
    if (err == 0 && l->done) {
        struct kl_h1_origin *o = l->origin;
        size_t n = 0;
        for (struct evutil_addrinfo *ai = res; ai && n < KL_H1_MAX_ADDRS; ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_addrlen > sizeof(o->addrs[n].sa))
                continue;
            memcpy(&o->addrs[n].sa, ai->ai_addr, ai->ai_addrlen);
            o->addrs[n].len = (socklen_t)ai->ai_addrlen;
            n++;
        }
        if (n) {
            o->naddrs = n;
            o->addrs_expire_ms = now_ms() + KL_H1_DNS_TTL_MS;
        } else {
            error = "no address for the host";
        }
    } else if (err) {
        error = evutil_gai_strerror(err);
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (l->starting) {
        l->finished = true;
        l->error = error;
        return;
    }
    lookup_unlink(l);
    kl_h1_resolved done = l->done;
    void *darg = l->arg;
    free(l);
    if (done && err != EVUTIL_EAI_CANCEL)
        done(darg, error);
}

/* The worker's resolver, from /etc/resolv.conf and /etc/hosts. One made
 * while the descriptors run out would have no nameserver (its socket), or
 * libevent's defaults in place of a resolv.conf it could not open: kept, it
 * would fail every lookup until a restart. It is dropped instead (NULL),
 * and a later lookup makes it again. */
static struct evdns_base *dns_new(struct event_base *base)
{
    static const char conf[] = "/etc/resolv.conf";
    struct evdns_base *dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns)
        return NULL;
    int r = evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL, conf);
    bool unread = (r == 1 && access(conf, F_OK) == 0) || (r >= 2 && r <= 5);
    if (unread || evdns_base_count_nameservers(dns) == 0) {
        evdns_base_free(dns, 0);
        return NULL;
    }
    return dns;
}

int kl_h1_resolve(struct kl_h1_origin *o, kl_h1_resolved done, void *arg,
                  struct kl_h1_lookup **out, const char **error)
{
    struct kl_h1_pool *p = o->pool;
    *out = NULL;
    if (o->naddrs && (o->numeric || now_ms() < o->addrs_expire_ms))
        return 1;
    if (!p->dns)
        p->dns = dns_new(p->base);
    if (!p->dns) {
        *error = "no name resolver could be set up (out of descriptors or memory)";
        return -2;
    }
    struct kl_h1_lookup *l = calloc(1, sizeof(*l));
    if (!l) {
        *error = "out of memory";
        return -2;
    }
    l->pool = p;
    l->origin = o;
    l->done = done;
    l->arg = arg;
    l->starting = true;
    l->next = p->lookups;
    if (p->lookups)
        p->lookups->prev = l;
    p->lookups = l;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)o->port);
    /* Answers from /etc/hosts (localhost) arrive before this returns. */
    l->req = evdns_getaddrinfo(p->dns, o->host, port, &hints, on_resolved, l);
    l->starting = false;
    if (l->finished || !l->req) {
        int rc = l->finished && !l->error ? 1 : -1;
        *error = l->finished ? l->error : "name lookup failed";
        lookup_unlink(l);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void kl_h1_resolve_cancel(struct kl_h1_lookup *l)
{
    /* libevent calls on_resolved once more (EVUTIL_EAI_CANCEL), which frees l. */
    l->done = NULL;
    evdns_getaddrinfo_cancel(l->req);
}

const struct timeval *kl_h1_timeout(struct kl_h1_pool *p, uint32_t ms)
{
    size_t n = sizeof(p->tvs) / sizeof(p->tvs[0]);
    for (size_t i = 0; i < n; i++) {
        if (p->tvs[i].tv && p->tvs[i].ms == ms)
            return p->tvs[i].tv;
        if (!p->tvs[i].tv) {
            struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
            const struct timeval *c = event_base_init_common_timeout(p->base, &tv);
            if (!c)
                break;
            p->tvs[i].ms = ms;
            p->tvs[i].tv = c;
            return c;
        }
    }
    /* More distinct lengths than slots (never with one configuration): the
     * slowest slot is overwritten; libevent copies the value when adding. */
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    const struct timeval *c = event_base_init_common_timeout(p->base, &tv);
    p->tvs[n - 1].ms = ms;
    p->tvs[n - 1].tv = c;
    return c;
}
