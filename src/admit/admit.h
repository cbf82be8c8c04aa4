/* Stage 5, admit: spend quotas and rate limits, reserved before forwarding.
 * A pass-through until quotas are built. */
#ifndef KL_ADMIT_H
#define KL_ADMIT_H

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_admit_run(kl_exchange *ex);

#endif
