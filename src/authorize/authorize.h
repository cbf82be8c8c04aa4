/* Stage 3, authorize: which models the caller may use (Aperture grants).
 * Until grants are enforced every configured model is reachable, and
 * `keyless check` says so. */
#ifndef KL_AUTHORIZE_H
#define KL_AUTHORIZE_H

#include <stdbool.h>

#include "core/exchange.h"
#include "pipeline.h"

enum kl_step kl_authorize_run(kl_exchange *ex);
/* May the caller of ex use provider/model? (model lists filter with this) */
bool kl_authorize_model(const kl_exchange *ex, const struct kl_provider *p, const char *model);

#endif
