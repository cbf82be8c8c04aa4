/* Stage 10, after: Aperture's post-response hooks. Once a forwarded
 * request has ended, each `entire_request` hook that applied to it is sent
 * what happened, and each `tool_call_entire_request` hook too when the
 * answer called tools; fire and forget (a hook that fails is logged, and the
 * exchange is not held for it). */
#ifndef KL_AFTER_H
#define KL_AFTER_H

#include "core/exchange.h"

void kl_hooks_after(kl_exchange *ex);

#endif
