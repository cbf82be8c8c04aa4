/* Stage 10, after: Aperture's post-response hooks. Once a forwarded
 * request has ended, each `entire_request` hook that applied to it is sent
 * what happened, and each `tool_call_entire_request` hook too when the
 * answer called tools; fire and forget (a hook that fails is logged, and the
 * exchange is not held for it). */
#ifndef KL_AFTER_H
#define KL_AFTER_H

#include "core/exchange.h"

void kl_hooks_after(kl_exchange *ex);

/* A payload p (len bytes as sent) cut to room bytes, its "keyless" a copy
 * of outcome with "cut" saying what was taken out: the text to send
 * (cJSON_free it, its length in *out_len); when even the rest does not fit,
 * the rest, every part that grows with the exchange cut. p is changed. */
char *kl_hook_cut_to_fit(cJSON *p, const cJSON *outcome, size_t len, size_t room, size_t *out_len);

#endif
