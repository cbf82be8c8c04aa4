#include "guard/notes.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "core/text.h"

void kl_guard_note(kl_exchange *ex, const char *stage, const char *hook, const char *action, const char *kinds,
                   size_t spans, const char *why)
{
    struct kl_guard_note *n = kl_arena_alloc(&ex->arena, sizeof(*n));
    *n = (struct kl_guard_note){
        .stage = stage,
        .hook = hook ? kl_arena_strdup(&ex->arena, hook) : NULL,
        .action = action,
        .kinds = kinds ? kl_arena_strdup(&ex->arena, kinds) : NULL,
        .spans = spans,
        /* a hook's message may echo the caller's words: a few hundred bytes
         * say enough (the record makes it UTF-8 again if this cuts one) */
        .why = why ? kl_arena_strndup(&ex->arena, why, strnlen(why, 300)) : NULL,
    };
    struct kl_guard_note **at = &ex->guard_notes;
    while (*at)
        at = &(*at)->next;
    *at = n;
}

/* "a,b" as ["a", "b"] */
static cJSON *kind_list(const char *kinds)
{
    cJSON *arr = cJSON_CreateArray();
    for (const char *p = kinds; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[128]; /* kinds and pattern names are at most 64 bytes (scan.c) */
        if (len < sizeof(name)) {
            memcpy(name, p, len);
            name[len] = '\0';
            cJSON_AddItemToArray(arr, cJSON_CreateString(name));
        }
        p += len + (comma != NULL);
    }
    return arr;
}

const char *kl_guard_notes_json(kl_exchange *ex)
{
    if (!ex->guard_notes)
        return NULL;
    cJSON *arr = cJSON_CreateArray();
    for (const struct kl_guard_note *n = ex->guard_notes; n; n = n->next) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "stage", n->stage);
        cJSON_AddStringToObject(o, "by", n->hook ? "hook" : "guardrails");
        if (n->hook)
            cJSON_AddStringToObject(o, "hook", n->hook);
        cJSON_AddStringToObject(o, "action", n->action);
        if (n->kinds)
            cJSON_AddItemToObject(o, "kinds", kind_list(n->kinds));
        if (n->spans)
            cJSON_AddNumberToObject(o, "spans", (double)n->spans);
        if (n->why)
            cJSON_AddStringToObject(o, "why", n->why);
        cJSON_AddItemToArray(arr, o);
    }
    return kl_json_print_arena(&ex->arena, arr, "", "");
}
