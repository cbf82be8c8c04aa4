/* Stage 7, upstream: the provider request, run by the worker's libcurl multi
 * handle on the worker's event loop (curl's "hiperfifo" pattern). The answer
 * streams back through the pipeline as it arrives; a client that cannot keep
 * up pauses the transfer instead of growing our buffers. */
#ifndef KL_UPSTREAM_H
#define KL_UPSTREAM_H

#include "core/exchange.h"
#include "pipeline.h"

int  kl_upstream_global_init(void);
void kl_upstream_global_cleanup(void);
int  kl_upstream_pool_init(kl_worker *w);
void kl_upstream_pool_free(kl_worker *w);

/* Start the transfer described by ex (upstream_url, up_headers, up_body). */
enum kl_step kl_upstream_run(kl_exchange *ex);
/* Stop ex's transfer now (client gone, policy cut-off). Safe if none. */
void kl_upstream_cancel(kl_exchange *ex);
/* End every transfer of w as failed (shutdown grace period over). */
void kl_upstream_cancel_all(kl_worker *w);

#endif
