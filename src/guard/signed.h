/* The provider's own signed reasoning in a request's history: Anthropic's
 * `thinking` blocks (with their `signature`) and `redacted_thinking`, and
 * Bedrock Converse's `reasoningContent`. A client sends them back as they
 * came, and the API refuses the request when one was altered, so the
 * guardrails leave them as they are (guard/scan.h, kl_scan's skip). */
#ifndef KL_GUARD_SIGNED_H
#define KL_GUARD_SIGNED_H

#include <stddef.h>

#include "core/arena.h"
#include "guard/scan.h"

/* The byte ranges of those blocks' text (a JSON string's value, quotes
 * included) in the JSON body, in order, in the arena; how many. The body
 * is one kl_json_validate accepted. */
size_t kl_guard_signed_spans(const char *body, size_t len, kl_arena *a, struct kl_scan_span **out);

#endif
