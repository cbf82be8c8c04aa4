/* What a request makes its provider read that its body does not hold. */
#ifndef KL_REFERENCED_H
#define KL_REFERENCED_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "dialect/dialect.h"

/* How many things in body (an inference request of endpoint ep, mapped
 * into m) put text into the prompt that the body's size cannot show: a
 * stored conversation or prompt (previous_response_id, conversation,
 * prompt, item_reference, Gemini's cachedContent), a file or a remote URL
 * (file ids and URLs, image and document URLs, Gemini's fileData, Bedrock's
 * S3 locations), and a tool the provider runs itself (web search and fetch,
 * file search, code execution, MCP servers). Each is one, however large. */
int64_t kl_referenced_inputs(const struct kl_endpoint_info *ep, const char *body, size_t len,
                             const struct kl_body_map *m);

/* The id a member's value names (sp: its span in body), a string or an
 * object's "id" (conversation: {"id": ...}), as the provider will read it:
 * its escapes decoded (into a when there are any, else it points into
 * body), *len bytes long; NULL when there is none. */
const char *kl_referenced_id(kl_arena *a, const char *body, struct kl_body_span sp, size_t *len);

#endif
