/* libFuzzer: the tool policy's edit of a request. The first byte picks the
 * dialect and one of a few policies; the rest is the request body. Whatever
 * the body holds, the edit must not crash, leak or misuse memory, and what
 * it leaves must pass the policy: editing it again changes nothing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "account/usage.h"
#include "core/jsoncheck.h"
#include "guard/tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const int kinds[] = {KL_USAGE_OPENAI_CHAT, KL_USAGE_OPENAI_RESPONSES, KL_USAGE_ANTHROPIC, KL_USAGE_GEMINI,
                                KL_USAGE_BEDROCK_CONVERSE};
    static const char *const policies[] = {"{\"deny\":[\"Bash\",\"web_*\"]}", "{\"allow\":[\"Read\",\"g*\"]}",
                                           "{\"max_calls\":0}", "{\"deny\":\"*\",\"allow\":\"R*\"}"};
    int kind = kinds[data[0] % 5];
    kl_arena a;
    kl_arena_init(&a);
    cJSON *pj = cJSON_Parse(policies[data[0] / 5 % 4]);
    struct kl_tool_policy p;
    const char *why = NULL;
    if (kl_tool_policy_read(pj, &a, &p, &why) < 0)
        abort();
    const struct kl_tool_policy *v[] = {&p};
    struct kl_tool_rules r = {v, 1, p.max_calls};
    /* the stage refuses bodies whose tree would not say what the provider reads */
    cJSON *body = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    if (body && !kl_json_has_duplicate_keys(body)) {
        const char *removed = NULL;
        int rc = kl_tools_edit(&r, kind, body, &a, &removed, &why);
        if (rc >= 0) {
            char *text = cJSON_PrintUnformatted(body);
            if (!text)
                abort();
            cJSON_free(text);
            if (kl_tools_edit(&r, kind, body, &a, &removed, &why) != 0)
                abort(); /* something refused was left in */
        }
    }
    cJSON_Delete(body);
    cJSON_Delete(pj);
    kl_arena_free(&a);
    return 0;
}
