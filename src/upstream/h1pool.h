/* Internal to src/upstream: the per-worker side of keyless's own HTTP/1.1
 * client. Origins (host, port) with their resolved addresses and a free list
 * of idle keep-alive connections; connection set-up; name resolution through
 * the worker's evdns base, so nothing blocks the loop.
 *
 * Ownership: an idle connection belongs to its origin's free list; a busy
 * one to the transfer (h1client.c) that took it, which either puts it back
 * (kl_h1_conn_put) or closes it (kl_h1_conn_close). Origins live as long as
 * the pool. Everything here runs on the worker's thread. */
#ifndef KL_UPSTREAM_H1POOL_H
#define KL_UPSTREAM_H1POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct event;
struct evdns_base;
struct bufferevent;
struct evbuffer;
struct timeval;
struct kl_h1_xfer;
struct kl_h1_lookup;

#define KL_H1_MAX_ADDRS 8

struct kl_h1_addr {
    struct sockaddr_storage sa;
    socklen_t len;
};

struct kl_h1_conn;

struct kl_h1_origin {
    struct kl_h1_origin *next;          /* hash chain */
    struct kl_h1_pool *pool;
    char *host;                         /* malloc'd */
    uint16_t port;
    struct kl_h1_conn *idle_head;       /* newest first: reuse the warmest */
    struct kl_h1_conn *idle_tail;       /* oldest: the sweep closes from here */
    size_t nidle;
    struct kl_h1_addr addrs[KL_H1_MAX_ADDRS];
    size_t naddrs;
    int64_t addrs_expire_ms;            /* 0 with a numeric host: never */
    bool numeric;
};

struct kl_h1_conn {
    struct kl_h1_origin *origin;
    struct kl_h1_conn *prev, *next;     /* the origin's idle list */
    struct bufferevent *bev;
    int64_t idle_since_ms;
    bool idle;
};

struct kl_h1_pool {
    struct event_base *base;
    struct evdns_base *dns;             /* made on the first name to resolve (until it can be) */
    size_t max_idle;                    /* idle connections kept, every origin's together (0: no such cap) */
    struct kl_h1_origin *buckets[64];
    struct event *sweep;                /* closes connections idle too long */
    size_t nidle;
    struct kl_h1_lookup *lookups;       /* name lookups in flight */
    struct kl_h1_xfer *xfers;           /* live transfers (h1client.c) */
    size_t nxfers;
    char *scratch;                      /* response heads are filtered here (h1client.c) */
    struct evbuffer *reqbuf;            /* requests are composed here (h1client.c) */
    struct {                            /* libevent common timeouts, by length */
        uint32_t ms;
        const struct timeval *tv;
    } tvs[8];
};

struct kl_h1_pool *kl_h1_pool_new(struct event_base *base);
/* Closes every idle connection; no transfer may be live. */
void kl_h1_pool_free(struct kl_h1_pool *p);

/* The origin for (host, port), made on first use. NULL: out of memory. */
struct kl_h1_origin *kl_h1_origin_get(struct kl_h1_pool *p, const char *host, size_t host_len,
                                      uint16_t port);

/* An idle connection to o, taken off its free list, or NULL. */
struct kl_h1_conn *kl_h1_conn_take(struct kl_h1_origin *o);
/* Back on o's free list, to be reused; closed instead past the cap. Its
 * buffers must be empty (a whole response read, the whole request sent). */
void kl_h1_conn_put(struct kl_h1_conn *c);
/* Close and free c (busy or idle). */
void kl_h1_conn_close(struct kl_h1_conn *c);
/* Is err a failure of this machine rather than of the host it connects to:
 * out of descriptors, buffers or memory? Failover does not
 * act on it nor blame the provider (its next provider would fail alike). */
bool kl_h1_errno_local(int err);
/* A new connection to a, connecting without blocking. NULL: *err is why. */
struct kl_h1_conn *kl_h1_conn_open(struct kl_h1_origin *o, const struct kl_h1_addr *a, int *err);

/* o->addrs for a connection. Returns 1 when they are ready now, 0 when a
 * lookup started (*out; done(arg, NULL) or done(arg, error) follows), -1 on
 * failure (*error says why), -2 when the failure is this machine's (no
 * resolver could be set up now: out of descriptors or memory). */
typedef void (*kl_h1_resolved)(void *arg, const char *error);
int kl_h1_resolve(struct kl_h1_origin *o, kl_h1_resolved done, void *arg,
                  struct kl_h1_lookup **out, const char **error);
/* done() will not be called. */
void kl_h1_resolve_cancel(struct kl_h1_lookup *l);

/* A timeval for libevent's O(1) common-timeout queue of this length. */
const struct timeval *kl_h1_timeout(struct kl_h1_pool *p, uint32_t ms);

#endif
