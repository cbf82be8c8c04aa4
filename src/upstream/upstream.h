/* Stage 7, upstream: the provider request, on the worker's event loop.
 * Plain http:// upstreams go through keyless's own HTTP/1.1 client
 * (h1client.c, with a per-worker keep-alive pool); https://, proxied URLs
 * and anything else through the worker's libcurl multi handle (curl's
 * "hiperfifo" pattern). The answer streams back through the pipeline as it
 * arrives; a client that cannot keep up pauses the transfer instead of
 * growing our buffers. */
#ifndef KL_UPSTREAM_H
#define KL_UPSTREAM_H

#include "core/exchange.h"
#include "pipeline.h"

/* Pause the provider once this much output waits for a slow client. */
#define KL_UPSTREAM_HIGH_WATER (256u * 1024)

int  kl_upstream_global_init(void);
void kl_upstream_global_cleanup(void);
int  kl_upstream_pool_init(kl_worker *w);
void kl_upstream_pool_free(kl_worker *w);

/* The longest silence allowed inside the provider's answer now: the
 * configured upstream_idle, or a failed answer's short drain before a
 * failover (route/failover.h). */
uint32_t kl_upstream_idle_ms(const kl_exchange *ex);

/* Start the transfer described by ex (upstream_url, up_headers, up_body). */
enum kl_step kl_upstream_run(kl_exchange *ex);
/* Stop ex's transfer now (client gone, policy cut-off). Safe if none. */
void kl_upstream_cancel(kl_exchange *ex);
/* End every transfer of w as failed (shutdown grace period over). */
void kl_upstream_cancel_all(kl_worker *w);

#endif
