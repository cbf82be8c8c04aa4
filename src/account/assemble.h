/* A streamed answer put back together as the provider would have sent it
 * unstreamed (for hooks sent Aperture's `response_body`: "the complete
 * response body assembled from the provider's streamed response"), and the
 * tool calls of a whole answer (`tool_calls`: [{"name", "params"}]). */
#ifndef KL_ASSEMBLE_H
#define KL_ASSEMBLE_H

#include <cjson/cJSON.h>

#include "account/usage.h"

/* A whole server-sent event stream's events, each one's data parsed as
 * JSON, in order (data that is not JSON, such as "[DONE]", is left out): a
 * new array. */
cJSON *kl_sse_parse_events(const char *body, size_t len);

/* events: the parsed data of each event (or Gemini array element), in
 * order. A new object (cJSON_Delete it), or NULL when the events hold no
 * answer of this kind. OpenAI chat: one chat.completion (content, refusal,
 * reasoning and each tool call's arguments joined from their deltas, usage
 * from the usage chunk); Responses: the response of the final event (or the
 * last one seen, with the output items done so far); Anthropic: the
 * message_start message with its content blocks filled in (text, thinking,
 * tool_use input parsed from its JSON deltas) and message_delta's stop
 * reason and usage; Gemini: one GenerateContentResponse, each candidate's
 * parts joined (adjacent text parts merged), the last usageMetadata. */
cJSON *kl_assemble_stream(enum kl_usage_kind kind, const cJSON *events);

/* The tool calls a whole answer asks the caller to run, as a new array of
 * {"name", "params"} (params: the arguments object; a custom tool's text as
 * {"input": text}; arguments that are not a JSON object as
 * {"arguments": text}). Empty when there are none. */
cJSON *kl_answer_tool_calls(enum kl_usage_kind kind, const cJSON *answer);

#endif
