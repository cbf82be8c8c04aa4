/* Stage 4, guard: the built-in guardrails (secrets and personal data in the
 * body) and Aperture's pre_request hooks, before anything is forwarded. */
#ifndef KL_GUARD_H
#define KL_GUARD_H

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_guard_run(kl_exchange *ex);

/* A rewritten body (a hook's modify, a redaction, the tool policy's edit)
 * becomes the request, if it is one the endpoint accepts and asks for the
 * same model (grants, quotas and routing were decided for it). NULL, or why
 * not. */
const char *kl_guard_replace_body(kl_exchange *ex, const char *text, size_t len);

#endif
