/* A worker thread: one event loop that owns its listeners, its client
 * connections, its upstream transfers and every exchange it accepted.
 * Nothing on a worker blocks. Workers share only the server struct below. */
#ifndef KL_WORKER_H
#define KL_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/log.h"

struct event_base;
struct event;
struct evconnlistener;
struct kl_conn;
struct kl_upstream_pool;
struct kl_whois_cache;
struct kl_writer;
struct kl_query;
struct kl_exporter;
struct kl_buckets;
struct kl_identity_worker;
struct kl_self_addrs;
struct kl_mailbox;
struct kl_metrics;
struct kl_health;
struct kl_gcp_tokens;
struct kl_aws_keeper;
struct kl_chains;
struct kl_lossy_map;
struct evp_md_st;

struct kl_listen_socket {
    const char *address;        /* as configured */
    char bound[80];             /* "host:port" actually bound */
};

typedef struct kl_server {
    kl_config_holder config;
    int nworkers;
    struct kl_worker *workers;
    /* client connections the descriptor limit leaves room for: half of it,
     * less a reserve, since each one served needs a provider's connection
     * too (listen.max_connections when that is 0) */
    size_t fd_conns;
    /* memory request bodies may take at once: half of what the machine,
     * or the cgroup the gateway runs in, has (listen.max_body_memory when
     * that is 0) */
    size_t body_memory;
    atomic_bool stopping;
    atomic_int adopted;                     /* snapshots taken by workers after reloads (listen/reload.c) */
    /* the last SIGHUP's outcome, for /metrics: a reload that kept the
     * running configuration (errors, a setting only a restart applies) is
     * otherwise only a log line, and `systemctl reload` succeeds anyway */
    atomic_bool reload_failed;
    _Atomic int64_t config_loaded_ms;       /* when the running configuration was loaded */
    _Atomic uint64_t reload_failures;

    struct kl_whois_cache *whois_cache;     /* shared by every worker */
    struct kl_writer *writer;               /* the record store's writer thread */
    struct kl_query *query;                 /* the record store's reader thread */
    struct kl_query *leases;                /* PostgreSQL: quota leases' own thread and connection, or NULL */
    struct kl_query *answers;               /* whose a stored Responses answer is: its own thread and connection */
    struct kl_exporter *exporter;           /* exporters.s3's thread, or NULL */
    struct kl_buckets *buckets;             /* quota and rate-limit balances */
    struct kl_chains *chains;               /* sizes of stored Responses context (admit/chains.h) */
    struct kl_lossy_map *answer_owners;     /* whose recent stored Responses answers are (authorize/chained.h) */
    struct kl_health *health;               /* providers cooling down after failures (route/health.h) */
    struct kl_gcp_tokens *gcp;              /* Google service accounts' access tokens (upstream/gcp.h) */
    /* AWS credentials from the environment, or NULL (upstream/awscreds.h): set on the main thread by
     * the first configuration that needs it, a reload's included, while workers answer /metrics */
    _Atomic(struct kl_aws_keeper *) aws;
    /* warnings any request could say, said at most every 10 s by any
     * worker (core/log.h): a failed WhoIs lookup, serve identity headers
     * from a peer that is not loopback */
    struct kl_log_every warn_whois_failed;
    struct kl_log_every warn_serve_headers;
} kl_server;

/* A counter only its worker writes and other threads read (/metrics): a
 * relaxed load and store, so no locked instruction, and a reader always
 * sees a whole value. n may be (uint64_t)-1 to count down. */
static inline void kl_owner_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

typedef struct kl_worker {
    int index;
    pthread_t thread;
    kl_server *server;
    struct event_base *base;
    kl_config *cfg;             /* this worker's reference to the current snapshot */
    struct kl_upstream_pool *upstream;
    struct kl_identity_worker *identity;    /* WhoIs lookups in flight */
    struct kl_self_addrs *self_addrs;       /* this host's addresses (identity/selfaddr.c) */
    int64_t self_warned_ms;                 /* when a caller from one of them was last logged */
    struct kl_mailbox *mailbox;             /* work posted from other threads */
    struct evconnlistener **listeners;
    int *listen_fds;
    void *listen_args;          /* per listener: what accepted connections get */
    size_t nlisteners;
    struct event *drain_timer;  /* bounded wait for in-flight exchanges on shutdown */
    struct event *accept_timer; /* listeners paused after accept() failed (no descriptors): resumes them */
    int64_t accept_warned_ms;   /* when that was last logged */
    uint64_t accept_failures;   /* since */
    struct kl_conn *conns;      /* every open client connection (doubly linked) */
    bool full;                  /* listeners paused at this worker's share of listen.max_connections */
    int64_t full_warned_ms[2];  /* when closing idle ones [0], and pausing [1], was last logged */
    /* written by this worker only (kl_owner_add); atomic so /metrics may
     * read them from another worker */
    _Atomic uint64_t nconns;
    _Atomic uint64_t inflight;  /* exchanges between request and record */
    _Atomic uint64_t body_bytes;    /* request bodies held by its exchanges (kl_exchange_charge) */
    int64_t body_full_warned_ms;    /* when a body refused for want of room was last logged */
    /* entire_request hook calls not answered yet (a stop waits for them),
     * the bytes of their payloads (counted in body_bytes too), and the
     * calls skipped (too many in flight) or cut for want of room (guard/after.c) */
    _Atomic uint64_t hooks_told;
    size_t hooks_told_bytes;
    _Atomic uint64_t hooks_skipped;
    struct kl_log_every hooks_skipped_warn; /* said at most every 10 s */
    _Atomic uint64_t hooks_cut;             /* made with the request and answer cut to the room */
    struct kl_log_every hooks_cut_warn;
    bool draining;
    uint64_t seq;               /* per-worker counter, part of request ids */
    uint64_t rng;               /* xorshift state for request ids */
    struct kl_log_buf log;      /* access log lines not yet written */
    struct event *log_timer;    /* writes them out shortly after the first */
    struct evp_md_st *sha256;   /* fetched once: OpenSSL's implicit fetch per digest costs more than the hash */
    struct kl_scan_scratch *scan;   /* guardrails' scan space (this thread's) */
    struct kl_metrics *metrics;     /* its counters for /metrics (record/metrics.h) */
    /* exchanges forwarded but not yet due for their in-progress record,
     * oldest first, and the timer that writes them (record.c) */
    struct kl_exchange *rec_due_head, *rec_due_tail;
    struct event *rec_timer;
} kl_worker;

#endif
