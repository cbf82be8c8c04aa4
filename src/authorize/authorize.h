/* Stage 3, authorize: the caller's role and models, from grants in the
 * configuration and the caller's tailnet CapMap (see grants.h). Deny by
 * default: no role -> 403 "access denied: no role granted", decided on the
 * head (kl_authorize_caller_run, before the body is read); a model the
 * caller may not use answers 404, as if it did not exist. This stage also
 * picks the provider among those the caller may use, so a grant on
 * "openai/gpt-4o" routes to openai even when another provider lists the
 * same model with a higher preference. */
#ifndef KL_AUTHORIZE_H
#define KL_AUTHORIZE_H

#include <stdbool.h>

#include "authorize/grants.h"
#include "core/exchange.h"
#include "pipeline.h"

/* The caller's grants, and whether they give it a role at all; and, when
 * the path names the model, whether it may use that one. */
enum kl_step kl_authorize_caller_run(kl_exchange *ex);
/* The model the request asks for (after the body's facts). */
enum kl_step kl_authorize_run(kl_exchange *ex);
/* May the caller of ex use provider/model? (model lists filter with this) */
bool kl_authorize_model(const kl_exchange *ex, const struct kl_provider *p, const char *model);
const char *kl_role_name(enum kl_role r);

#endif
