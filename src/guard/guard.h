/* Stage 4, guard: the built-in guardrails (secrets and personal data in the
 * body) and Aperture's pre_request hooks, before anything is forwarded. */
#ifndef KL_GUARD_H
#define KL_GUARD_H

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_guard_run(kl_exchange *ex);

#endif
