/* Stage 4, guard: PII and secret scanning, tool policy, pre-request hooks.
 * A pass-through until guardrails are built. */
#ifndef KL_GUARD_H
#define KL_GUARD_H

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_guard_run(kl_exchange *ex);

#endif
