/* Stage 2, identity: who is calling. Sources (Tailscale WhoIs, serve
 * headers, OIDC tokens, mTLS/SPIFFE, a static CIDR map) arrive with the
 * identity work; until then every caller is anonymous and the stage passes
 * the exchange on. */
#ifndef KL_IDENTITY_H
#define KL_IDENTITY_H

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_identity_run(kl_exchange *ex);

#endif
