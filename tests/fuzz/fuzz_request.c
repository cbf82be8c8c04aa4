/* libFuzzer: request facts from a body, for every inference endpoint, and
 * the byte scanner used to splice bodies. */
#include <stddef.h>
#include <stdint.h>

#include "core/jsonscan.h"
#include "dialect/dialect.h"

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *paths[] = {"/v1/chat/completions", "/v1/responses", "/v1/messages",
                                  "/v1beta/models/g:streamGenerateContent"};
    kl_arena a;
    kl_arena_init(&a);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct kl_route_match m;
        kl_dialect_classify(&a, "POST", paths[i], false, &m);
        struct kl_request_facts f;
        const char *why;
        if (kl_dialect_request_facts(m.ep, (const char *)data, size, &a, &f, &why) == 0) {
            size_t s, e;
            /* the scanner must agree with cJSON on valid input */
            if (f.model && kl_json_find_member((const char *)data, size, "model", &s, &e) == 0 &&
                e > s + 1 && ((const char *)data)[s] != '"')
                __builtin_trap();
        }
    }
    /* the validator is never more lenient than cJSON */
    if (kl_json_validate((const char *)data, size, NULL) == 0) {
        cJSON *j = cJSON_ParseWithLength((const char *)data, size);
        if (!j)
            __builtin_trap();
        cJSON_Delete(j);
    }
    kl_arena_free(&a);
    return 0;
}
