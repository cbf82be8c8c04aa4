/* Internal to src/upstream: the per-worker libcurl multi handle shared by
 * provider transfers (upstream.c) and the gateway's own small requests
 * (fetch.c: WhoIs, hooks). Every easy handle's CURLOPT_PRIVATE points to a
 * kl_curl_job whose done() runs once the transfer ends. */
#ifndef KL_UPSTREAM_POOL_H
#define KL_UPSTREAM_POOL_H

#include <curl/curl.h>

#include "core/worker.h"

struct event;
struct kl_upstream_xfer;
struct kl_fetch;
struct kl_h1_pool;

struct kl_curl_job {
    void (*done)(struct kl_curl_job *job, CURLcode rc);
};

struct kl_upstream_pool {
    kl_worker *w;
    CURLM *multi;
    struct event *timer;
    struct kl_upstream_xfer *xfers;     /* live provider transfers (for cancel_all) */
    size_t nxfers;
    struct kl_fetch *fetches;           /* live internal requests, newest first */
    uint64_t fetch_seq;                 /* numbers them as they start */
    CURL *idle[64];                     /* easy handles kept for reuse */
    size_t nidle;
    struct kl_h1_pool *h1;              /* keyless's own HTTP/1.1 client (h1pool.h) */
};

/* An easy handle from the worker's pool (reset), or a new one. */
CURL *kl_upstream_easy_get(struct kl_upstream_pool *p);
/* Back to the pool (removed from the multi handle already). */
void kl_upstream_easy_put(struct kl_upstream_pool *p, CURL *e);

/* Run done() for every finished transfer. Called after each socket action. */
void kl_upstream_check_done(struct kl_upstream_pool *p);

#endif
