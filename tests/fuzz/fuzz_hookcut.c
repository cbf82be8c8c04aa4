/* libFuzzer: a hook payload cut to the room a worker has for it
 * (kl_hook_cut_to_fit). The first two bytes pick the room; the rest is
 * the payload when it is a JSON object, or else goes into one as its
 * request body, user message and answer. What is sent is a JSON object,
 * UTF-8 throughout, saying in keyless.cut what went, no longer than the
 * room, or, when even its metadata is longer, with every part that grows
 * cut. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "guard/after.h"
#include "guard/hookcall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t room = (size_t)(data[0] | data[1] << 8) * 4;
    char *s = malloc(size - 1);
    memcpy(s, data + 2, size - 2);
    s[size - 2] = '\0';
    cJSON *p = cJSON_Parse(s);
    if (!cJSON_IsObject(p)) {
        cJSON *j = p;
        p = cJSON_CreateObject();
        cJSON_AddItemToObject(cJSON_AddObjectToObject(p, "metadata"), "id", cJSON_CreateString("r1"));
        cJSON_AddItemToObject(p, "request_body", j ? j : cJSON_CreateString(s));
        cJSON_AddItemToObject(p, "user_message", cJSON_CreateString(s + strlen(s) / 2));
        cJSON_AddItemToObject(p, "response_body", cJSON_CreateString(s + strlen(s) / 3));
        cJSON_AddItemToObject(p, "raw_responses", cJSON_CreateStringArray((const char *const[]){s, "x"}, 2));
    }
    cJSON_DeleteItemFromObjectCaseSensitive(p, "keyless");
    cJSON *outcome = cJSON_CreateObject();
    cJSON_AddNumberToObject(outcome, "status", 200);
    cJSON_AddItemReferenceToObject(p, "keyless", outcome);
    size_t len, out_len = 0;
    char *whole = kl_hook_text(p, &len);
    cJSON_free(whole);
    if (len > room) {
        static const char *const grows[] = {"request_body", "user_message", "response_body", "tool_calls",
                                            "raw_responses"};
        char *out = kl_hook_cut_to_fit(p, outcome, len, room, &out_len);
        if (!out || strlen(out) != out_len || kl_utf8_clean_len_n(out, out_len) != out_len)
            abort();
        cJSON *j = cJSON_Parse(out);
        if (!cJSON_IsObject(j) ||
            !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "keyless"), "cut")))
            abort();
        for (size_t i = 0; out_len > room && i < sizeof(grows) / sizeof(grows[0]); i++)
            if (cJSON_GetObjectItemCaseSensitive(j, grows[i]))
                abort();
        cJSON_Delete(j);
        cJSON_free(out);
    }
    cJSON_Delete(p);
    cJSON_Delete(outcome);
    free(s);
    return 0;
}
