/* libFuzzer: request facts from a body, for every inference endpoint, the
 * inputs it points at (admit/referenced.h), and the byte scanner used to
 * splice bodies. */
#include <stddef.h>
#include <stdint.h>

#include "admit/referenced.h"
#include "core/jsonscan.h"
#include "dialect/dialect.h"

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *paths[] = {"/v1/chat/completions", "/v1/responses", "/v1/messages",
                                  "/v1beta/models/g:streamGenerateContent", "/model/m/converse"};
    kl_arena a;
    kl_arena_init(&a);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct kl_route_match m;
        kl_dialect_classify(&a, "POST", paths[i], KL_CLIENT_ANY, &m);
        struct kl_request_facts f;
        const char *why;
        if (kl_dialect_request_facts(m.ep, (const char *)data, size, &a, &f, &why) == 0) {
            /* every reference holds at least a name and a value */
            if (kl_referenced_inputs(m.ep, (const char *)data, size, &f.map) * 4 > (int64_t)size)
                __builtin_trap();
            /* the scanner must agree with cJSON on valid input */
            struct kl_json_want m = {.key = "model"};
            kl_json_scan_members((const char *)data, size, &m, 1);
            if (f.model && m.end > m.start + 1 && ((const char *)data)[m.start] != '"')
                __builtin_trap();
        }
    }
    /* the validator is never more lenient than cJSON, and notes the same
     * members the scanner finds */
    struct kl_json_want v[] = {{.key = "model"}, {.key = "messages"}, {.key = "a"}};
    struct kl_json_want w[] = {{.key = "model"}, {.key = "messages"}, {.key = "a"}};
    if (kl_json_validate_members((const char *)data, size, NULL, v, 3) == 0) {
        kl_json_scan_members((const char *)data, size, w, 3);
        for (size_t i = 0; i < 3; i++)
            if (v[i].start != w[i].start || v[i].end != w[i].end || v[i].count != w[i].count)
                __builtin_trap();
        cJSON *j = cJSON_ParseWithLength((const char *)data, size);
        if (!j)
            __builtin_trap();
        cJSON_Delete(j);
    }
    kl_arena_free(&a);
    return 0;
}
