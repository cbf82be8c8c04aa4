/* Internal to src/upstream: one provider request over keyless's own
 * HTTP/1.1 client, for plain http:// upstreams (self-hosted models, local
 * simulators). libcurl keeps https://, proxies and the gateway's own small
 * requests (upstream.c decides).
 *
 * The request head is written straight to the socket and the body is added
 * by reference; the response head is parsed by h1parse.c, the body relayed
 * as it arrives. A client with more than KL_UPSTREAM_HIGH_WATER waiting
 * stops the reading of the upstream socket until it has drained. A reused
 * connection that the server closed before answering is retried once on a
 * fresh one; a connection goes back to the pool only after a whole response
 * that allows it. */
#ifndef KL_UPSTREAM_H1CLIENT_H
#define KL_UPSTREAM_H1CLIENT_H

#include "core/exchange.h"
#include "pipeline.h"
#include "upstream/h1parse.h"
#include "upstream/h1pool.h"

/* Start ex's request to the URL u (parsed from ex->upstream_url). */
enum kl_step kl_h1_run(struct kl_h1_pool *p, kl_exchange *ex, const struct kl_h1_url *u);
/* Stop ex's request now; its connection is closed, never pooled. */
void kl_h1_cancel(kl_exchange *ex);
/* End every live request of p as failed (shutdown grace period over). */
void kl_h1_cancel_all(struct kl_h1_pool *p);

#endif
