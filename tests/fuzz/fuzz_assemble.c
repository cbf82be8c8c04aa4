/* libFuzzer: a provider's stream put back together for the hooks told
 * after the answer. The first byte picks the dialect; the rest is an SSE
 * stream, split into events and parsed by the function the account stage
 * uses. Whatever the events hold, assembling them and reading their tool
 * calls must not crash, leak or misuse memory, and the answer must print as
 * JSON. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "account/assemble.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const enum kl_usage_kind kinds[] = {KL_USAGE_OPENAI_CHAT, KL_USAGE_OPENAI_RESPONSES, KL_USAGE_ANTHROPIC,
                                               KL_USAGE_GEMINI, KL_USAGE_BEDROCK_CONVERSE};
    enum kl_usage_kind kind = kinds[data[0] % 5];
    cJSON *events = kl_sse_parse_events((const char *)data + 1, size - 1);
    cJSON *answer = kl_assemble_stream(kind, events);
    if (answer) {
        char *text = cJSON_PrintUnformatted(answer);
        if (!text)
            abort();
        cJSON_free(text);
    }
    cJSON_Delete(kl_answer_tool_calls(kind, answer));
    cJSON_Delete(answer);
    cJSON_Delete(events);
    return 0;
}
