/* Putting a streamed answer back together. It runs on the worker's event
 * loop, so its cost stays linear in the answer whatever the provider sends:
 * deltas of one text field are gathered in a buffer per (object, key) and
 * written once at the end (re-creating the JSON string at every delta would
 * copy a long answer once per token), and the buffers and the items a delta
 * names by "index" (choices, tool calls, content blocks, candidates) are
 * found through a hash table, not by walking their arrays. */
#include "account/assemble.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account/sse.h"
#include "core/buf.h"

/* ---- (owner, tag) -> value, open addressing ---- */

struct slot {
    const void *owner;          /* NULL: empty */
    uint64_t tag;
    void *val;
};

struct map {
    struct slot *v;
    size_t cap, n;              /* cap: a power of two */
};

/* splitmix64's finalizer: every input bit reaches the low bits the table
 * uses (an index's double has its bits at the top) */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9u;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

static size_t slot_at(const struct map *m, const void *owner, uint64_t tag)
{
    size_t i = (size_t)mix(mix((uint64_t)(uintptr_t)owner) ^ tag) & (m->cap - 1);
    while (m->v[i].owner && (m->v[i].owner != owner || m->v[i].tag != tag))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void *map_get(const struct map *m, const void *owner, uint64_t tag)
{
    return m->cap ? m->v[slot_at(m, owner, tag)].val : NULL;
}

static void map_put(struct map *m, const void *owner, uint64_t tag, void *val)
{
    if (2 * (m->n + 1) > m->cap) {
        struct map bigger = {calloc(m->cap ? m->cap * 2 : 64, sizeof(struct slot)), m->cap ? m->cap * 2 : 64, 0};
        if (!bigger.v)
            abort();
        for (size_t i = 0; i < m->cap; i++)
            if (m->v[i].owner)
                bigger.v[slot_at(&bigger, m->v[i].owner, m->v[i].tag)] = m->v[i];
        bigger.n = m->n;
        free(m->v);
        *m = bigger;
    }
    size_t i = slot_at(m, owner, tag);
    if (!m->v[i].owner)
        m->n++;
    m->v[i] = (struct slot){owner, tag, val};
}

static uint64_t key_tag(const char *key)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211u;
    return h;
}

static uint64_t index_tag(double idx)
{
    uint64_t t;
    memcpy(&t, &idx, sizeof(t));
    return t;
}

/* ---- text gathered from deltas ---- */

struct acc_ent {
    cJSON *obj;
    const char *key;            /* a string literal */
    bool json;                  /* the text is JSON (tool_use input): parsed at the end */
    struct kl_buf text;
};

struct acc {
    struct acc_ent *v;
    size_t n, cap;
    size_t last;                /* the entry last appended to: deltas come in runs */
    struct map entries;         /* (obj, key) -> entry number + 1 */
    struct map items;           /* (array, index) -> the item a delta names by index */
};

/* Append text to obj[key]; an entry starts from the string already there. */
static void acc_append(struct acc *a, cJSON *obj, const char *key, bool json, const char *text)
{
    struct acc_ent *e = NULL;
    if (a->last < a->n && a->v[a->last].obj == obj && !strcmp(a->v[a->last].key, key)) {
        e = &a->v[a->last];
    } else {
        size_t i = (size_t)(uintptr_t)map_get(&a->entries, obj, key_tag(key));
        if (i && !strcmp(a->v[i - 1].key, key)) {
            e = &a->v[i - 1];
            a->last = i - 1;
        }
    }
    if (!e) {
        if (a->n == a->cap) {
            a->cap = a->cap ? a->cap * 2 : 16;
            a->v = realloc(a->v, a->cap * sizeof(*a->v));
            if (!a->v)
                abort();
        }
        e = &a->v[a->n];
        *e = (struct acc_ent){.obj = obj, .key = key, .json = json};
        a->last = a->n++;
        map_put(&a->entries, obj, key_tag(key), (void *)(uintptr_t)a->n);
        const cJSON *have = cJSON_GetObjectItemCaseSensitive(obj, key);
        if (!json && cJSON_IsString(have))
            kl_buf_str(&e->text, have->valuestring);
    }
    kl_buf_str(&e->text, text);
}

static void set_item(cJSON *obj, const char *key, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static void acc_finish(struct acc *a)
{
    for (size_t i = 0; i < a->n; i++) {
        struct acc_ent *e = &a->v[i];
        const char *text = e->text.p ? e->text.p : "";
        cJSON *v = NULL;
        if (e->json)
            v = e->text.len ? cJSON_Parse(text) : cJSON_CreateObject();
        set_item(e->obj, e->key, v ? v : cJSON_CreateString(text));
        free(e->text.p);
    }
    free(a->v);
    free(a->entries.v);
    free(a->items.v);
}

/* The item of arr a delta named by index idx, or NULL. */
static cJSON *item_get(const struct acc *a, const cJSON *arr, double idx)
{
    return map_get(&a->items, arr, index_tag(idx));
}

/* Add item to arr as the one index idx names. */
static void item_add(struct acc *a, cJSON *arr, double idx, cJSON *item)
{
    cJSON_AddItemToArray(arr, item);
    map_put(&a->items, arr, index_tag(idx), item);
}

/* ---- small helpers ---- */

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Does o have k, other than as null or ""? */
static bool has_value(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]);
}

static void copy_member(cJSON *to, const cJSON *from, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, k);
    if (v && !cJSON_IsNull(v))
        set_item(to, k, cJSON_Duplicate(v, true));
}

static double index_of(const cJSON *o, double dflt)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, "index");
    return cJSON_IsNumber(i) ? i->valuedouble : dflt;
}

/* ---- OpenAI chat completions ---- */

static void chat_tool_delta(struct acc *a, cJSON *msg, const cJSON *tc, double pos)
{
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    if (!calls)
        calls = cJSON_AddArrayToObject(msg, "tool_calls");
    double idx = index_of(tc, pos);
    cJSON *item = item_get(a, calls, idx);
    if (!item) {
        item = cJSON_CreateObject();
        item_add(a, calls, idx, item);
    }
    copy_member(item, tc, "id");
    copy_member(item, tc, "type");
    const char *kind = cJSON_GetObjectItemCaseSensitive(tc, "custom") ? "custom" : "function";
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, kind);
    if (!cJSON_IsObject(f))
        return;
    cJSON *to = cJSON_GetObjectItemCaseSensitive(item, kind);
    if (!to)
        to = cJSON_AddObjectToObject(item, kind);
    if (str(f, "name") && str(f, "name")[0]) /* whole, in the call's first delta */
        set_item(to, "name", cJSON_CreateString(str(f, "name")));
    const char *argk = strcmp(kind, "custom") == 0 ? "input" : "arguments";
    if (str(f, argk))
        acc_append(a, to, argk, false, str(f, argk));
}

static cJSON *assemble_chat(const cJSON *events)
{
    cJSON *out = NULL, *choices = NULL;
    struct acc a = {0};
    const cJSON *ev;
    cJSON_ArrayForEach(ev, events) {
        if (!cJSON_IsObject(ev))
            continue;
        if (!out) {
            out = cJSON_CreateObject();
            cJSON_AddStringToObject(out, "object", "chat.completion");
            choices = cJSON_AddArrayToObject(out, "choices");
        }
        /* from the first chunk that has them: some services lead with a
         * chunk of their own (Azure's prompt_filter_results, with id "") */
        static const char *const head[] = {"id", "created", "model", "system_fingerprint", "service_tier"};
        for (size_t k = 0; k < sizeof(head) / sizeof(head[0]); k++)
            if (!has_value(out, head[k]))
                copy_member(out, ev, head[k]);
        copy_member(out, ev, "usage");
        const cJSON *ch;
        cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(ev, "choices")) {
            double idx = index_of(ch, 0);
            cJSON *c = item_get(&a, choices, idx);
            if (!c) {
                c = cJSON_CreateObject();
                cJSON_AddNumberToObject(c, "index", idx);
                cJSON *m = cJSON_AddObjectToObject(c, "message");
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON_AddNullToObject(m, "content");
                cJSON_AddNullToObject(c, "finish_reason");
                item_add(&a, choices, idx, c);
            }
            cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
            copy_member(msg, d, "role");
            static const char *const texts[] = {"content", "refusal", "reasoning_content", "reasoning"};
            for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++)
                if (str(d, texts[k]))
                    acc_append(&a, msg, texts[k], false, str(d, texts[k]));
            const cJSON *tc;
            double pos = 0;
            cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(d, "tool_calls"))
                chat_tool_delta(&a, msg, tc, pos++);
            /* the deprecated single function call */
            const cJSON *fc = cJSON_GetObjectItemCaseSensitive(d, "function_call");
            if (cJSON_IsObject(fc)) {
                cJSON *to = cJSON_GetObjectItemCaseSensitive(msg, "function_call");
                if (!to)
                    to = cJSON_AddObjectToObject(msg, "function_call");
                if (str(fc, "name") && str(fc, "name")[0])
                    set_item(to, "name", cJSON_CreateString(str(fc, "name")));
                if (str(fc, "arguments"))
                    acc_append(&a, to, "arguments", false, str(fc, "arguments"));
            }
            copy_member(c, ch, "finish_reason");
        }
    }
    acc_finish(&a);
    return out;
}

/* ---- OpenAI Responses ---- */

static cJSON *assemble_responses(const cJSON *events)
{
    const cJSON *last = NULL, *ev;
    bool final = false;
    cJSON_ArrayForEach(ev, events) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(ev, "response");
        const char *t = str(ev, "type");
        if (cJSON_IsObject(r) && !final) {
            last = r;
            final = t && (!strcmp(t, "response.completed") || !strcmp(t, "response.incomplete") ||
                          !strcmp(t, "response.failed"));
        }
    }
    if (!last)
        return NULL;
    cJSON *out = cJSON_Duplicate(last, true);
    cJSON *output = cJSON_GetObjectItemCaseSensitive(out, "output");
    if (final || (cJSON_IsArray(output) && cJSON_GetArraySize(output) > 0))
        return out;
    /* cut short: the items finished before it ended */
    if (!cJSON_IsArray(output)) {
        cJSON_DeleteItemFromObjectCaseSensitive(out, "output");
        output = cJSON_AddArrayToObject(out, "output");
    }
    cJSON_ArrayForEach(ev, events) {
        const char *t = str(ev, "type");
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(ev, "item");
        if (t && !strcmp(t, "response.output_item.done") && cJSON_IsObject(item))
            cJSON_AddItemToArray(output, cJSON_Duplicate(item, true));
    }
    return out;
}

/* ---- Anthropic Messages ---- */

static cJSON *assemble_anthropic(const cJSON *events)
{
    cJSON *out = NULL, *content = NULL;
    struct acc a = {0};
    double nblocks = 0;
    const cJSON *ev;
    cJSON_ArrayForEach(ev, events) {
        const char *t = str(ev, "type");
        if (!t)
            continue;
        if (!strcmp(t, "message_start") && !out) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(ev, "message");
            out = cJSON_IsObject(m) ? cJSON_Duplicate(m, true) : cJSON_CreateObject();
            content = cJSON_GetObjectItemCaseSensitive(out, "content");
            if (!cJSON_IsArray(content)) {
                cJSON_DeleteItemFromObjectCaseSensitive(out, "content");
                content = cJSON_AddArrayToObject(out, "content");
            }
            continue;
        }
        if (!out)
            continue;
        if (!strcmp(t, "content_block_start")) {
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(ev, "content_block");
            cJSON *blk = cJSON_IsObject(b) ? cJSON_Duplicate(b, true) : cJSON_CreateObject();
            item_add(&a, content, index_of(ev, nblocks++), blk);
        } else if (!strcmp(t, "content_block_delta")) {
            cJSON *blk = item_get(&a, content, index_of(ev, -1));
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "delta");
            const char *dt = str(d, "type");
            if (!blk || !dt)
                continue;
            if (!strcmp(dt, "text_delta") && str(d, "text"))
                acc_append(&a, blk, "text", false, str(d, "text"));
            else if (!strcmp(dt, "input_json_delta") && str(d, "partial_json"))
                acc_append(&a, blk, "input", true, str(d, "partial_json"));
            else if (!strcmp(dt, "thinking_delta") && str(d, "thinking"))
                acc_append(&a, blk, "thinking", false, str(d, "thinking"));
            else if (!strcmp(dt, "signature_delta") && str(d, "signature"))
                acc_append(&a, blk, "signature", false, str(d, "signature"));
            else if (!strcmp(dt, "citations_delta") && cJSON_GetObjectItemCaseSensitive(d, "citation")) {
                cJSON *cits = cJSON_GetObjectItemCaseSensitive(blk, "citations");
                if (!cJSON_IsArray(cits)) {
                    cJSON_DeleteItemFromObjectCaseSensitive(blk, "citations");
                    cits = cJSON_AddArrayToObject(blk, "citations");
                }
                cJSON_AddItemToArray(cits, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(d, "citation"), true));
            }
        } else if (!strcmp(t, "message_delta")) {
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "delta"), *m;
            const cJSON *fields = cJSON_IsObject(d) ? d : NULL;
            cJSON_ArrayForEach(m, fields) /* stop_reason, stop_sequence; never the content being filled in */
                if (strcmp(m->string, "content") != 0)
                    set_item(out, m->string, cJSON_Duplicate(m, true));
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(ev, "usage");
            cJSON *to = cJSON_GetObjectItemCaseSensitive(out, "usage");
            if (cJSON_IsObject(u) && !cJSON_IsObject(to)) {
                cJSON_DeleteItemFromObjectCaseSensitive(out, "usage");
                to = cJSON_AddObjectToObject(out, "usage");
            }
            const cJSON *from = cJSON_IsObject(u) ? u : NULL;
            cJSON_ArrayForEach(m, from)
                if (!cJSON_IsNull(m))
                    set_item(to, m->string, cJSON_Duplicate(m, true));
        }
    }
    acc_finish(&a);
    return out;
}

/* ---- Gemini ---- */

static bool is_thought(const cJSON *part)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(part, "thought"));
}

/* A text part with nothing else but "thought": one that may absorb the next. */
static bool plain_text(const cJSON *part)
{
    const cJSON *m;
    bool text = false;
    if (!cJSON_IsObject(part))
        return false;
    cJSON_ArrayForEach(m, part) {
        if (!strcmp(m->string, "text") && cJSON_IsString(m))
            text = true;
        else if (strcmp(m->string, "thought") != 0)
            return false;
    }
    return text;
}

static cJSON *assemble_gemini(const cJSON *events)
{
    cJSON *out = NULL, *cands = NULL;
    struct acc a = {0};
    const cJSON *ev;
    cJSON_ArrayForEach(ev, events) {
        if (!cJSON_IsObject(ev))
            continue;
        if (!out) {
            out = cJSON_CreateObject();
            cands = cJSON_AddArrayToObject(out, "candidates");
        }
        const cJSON *m;
        cJSON_ArrayForEach(m, ev)
            if (strcmp(m->string, "candidates") != 0)
                set_item(out, m->string, cJSON_Duplicate(m, true));
        const cJSON *c;
        double pos = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(ev, "candidates")) {
            double idx = index_of(c, pos++);
            if (!cJSON_IsObject(c))
                continue;
            cJSON *to = item_get(&a, cands, idx);
            if (!to) {
                to = cJSON_CreateObject();
                cJSON_AddNumberToObject(to, "index", idx);
                cJSON *content = cJSON_AddObjectToObject(to, "content");
                cJSON_AddArrayToObject(content, "parts");
                cJSON_AddStringToObject(content, "role", "model");
                item_add(&a, cands, idx, to);
            }
            cJSON_ArrayForEach(m, c)
                if (strcmp(m->string, "content") != 0 && strcmp(m->string, "index") != 0)
                    set_item(to, m->string, cJSON_Duplicate(m, true));
            cJSON *parts = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(to, "content"), "parts");
            const cJSON *p;
            cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "content"),
                                                                   "parts")) {
                cJSON *prev = parts->child ? parts->child->prev : NULL; /* cJSON keeps the last item there */
                if (prev && plain_text(p) && plain_text(prev) && is_thought(p) == is_thought(prev))
                    acc_append(&a, prev, "text", false, str(p, "text"));
                else
                    cJSON_AddItemToArray(parts, cJSON_Duplicate(p, true));
            }
        }
    }
    acc_finish(&a);
    return out;
}

/* ---- Bedrock ConverseStream ---- */

/* The object a delta fills in: blk[key], made when missing. */
static cJSON *sub_object(cJSON *blk, const char *key)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(blk, key);
    if (!cJSON_IsObject(o)) {
        cJSON_DeleteItemFromObjectCaseSensitive(blk, key);
        o = cJSON_AddObjectToObject(blk, key);
    }
    return o;
}

/* events: {"messageStart": {...}}, {"contentBlockDelta": {...}}, ... (as
 * the AWS SDKs give them). Converse's answer: {"output": {"message":
 * {"role", "content"}}, "stopReason", "usage", "metrics"}. */
static cJSON *assemble_converse(const cJSON *events)
{
    cJSON *out = NULL, *msg = NULL, *content = NULL;
    struct acc a = {0};
    const cJSON *ev;
    cJSON_ArrayForEach(ev, events) {
        const cJSON *e = cJSON_IsObject(ev) ? ev->child : NULL;
        if (!cJSON_IsObject(e))
            continue;
        const char *t = e->string;
        if (!out) {
            out = cJSON_CreateObject();
            msg = cJSON_AddObjectToObject(cJSON_AddObjectToObject(out, "output"), "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            content = cJSON_AddArrayToObject(msg, "content");
        }
        double idx = index_of(e, -1);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "contentBlockIndex");
        if (cJSON_IsNumber(v))
            idx = v->valuedouble;
        if (!strcmp(t, "messageStart") && str(e, "role")) {
            set_item(msg, "role", cJSON_CreateString(str(e, "role")));
        } else if (!strcmp(t, "contentBlockStart")) {
            const cJSON *start = cJSON_GetObjectItemCaseSensitive(e, "start");
            cJSON *blk = cJSON_IsObject(start) ? cJSON_Duplicate(start, true) : cJSON_CreateObject();
            item_add(&a, content, idx, blk);
        } else if (!strcmp(t, "contentBlockDelta")) {
            cJSON *blk = item_get(&a, content, idx);
            if (!blk) {
                blk = cJSON_CreateObject();
                item_add(&a, content, idx, blk);
            }
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "delta");
            const cJSON *tu = cJSON_GetObjectItemCaseSensitive(d, "toolUse");
            const cJSON *rc = cJSON_GetObjectItemCaseSensitive(d, "reasoningContent");
            if (str(d, "text"))
                acc_append(&a, blk, "text", false, str(d, "text"));
            else if (str(tu, "input"))
                acc_append(&a, sub_object(blk, "toolUse"), "input", true, str(tu, "input"));
            else if (str(rc, "text"))
                acc_append(&a, sub_object(sub_object(blk, "reasoningContent"), "reasoningText"), "text", false,
                           str(rc, "text"));
        } else if (!strcmp(t, "messageStop")) {
            copy_member(out, e, "stopReason");
            copy_member(out, e, "additionalModelResponseFields");
        } else if (!strcmp(t, "metadata")) {
            copy_member(out, e, "usage");
            copy_member(out, e, "metrics");
        }
    }
    acc_finish(&a);
    return out;
}

static void collect_event(void *arg, const char *raw, size_t len)
{
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    cJSON *v = data ? cJSON_ParseWithLength(data, dl) : NULL;
    if (v)
        cJSON_AddItemToArray(arg, v);
    free(data);
}

cJSON *kl_sse_parse_events(const char *body, size_t len)
{
    cJSON *list = cJSON_CreateArray();
    kl_sse s = {0};
    kl_sse_feed(&s, body, len, collect_event, list);
    kl_sse_flush(&s, collect_event, list);
    kl_sse_free(&s);
    return list;
}

cJSON *kl_assemble_stream(enum kl_usage_kind kind, const cJSON *events)
{
    switch (kind) {
    case KL_USAGE_OPENAI_CHAT: return assemble_chat(events);
    case KL_USAGE_OPENAI_RESPONSES: return assemble_responses(events);
    case KL_USAGE_ANTHROPIC: return assemble_anthropic(events);
    case KL_USAGE_GEMINI: return assemble_gemini(events);
    case KL_USAGE_BEDROCK_CONVERSE: return assemble_converse(events);
    default: return NULL;
    }
}

/* ---- tool calls of a whole answer ---- */

static void add_call(cJSON *out, const char *name, const cJSON *args, const char *text_key)
{
    if (!name)
        return;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "name", name);
    cJSON *params = NULL;
    if (cJSON_IsObject(args)) {
        params = cJSON_Duplicate(args, true);
    } else if (cJSON_IsString(args)) {
        cJSON *p = cJSON_Parse(args->valuestring);
        if (cJSON_IsObject(p) && strcmp(text_key, "input") != 0) {
            params = p;
        } else {
            cJSON_Delete(p);
            params = cJSON_CreateObject();
            cJSON_AddStringToObject(params, text_key, args->valuestring);
        }
    } else {
        params = cJSON_CreateObject();
    }
    cJSON_AddItemToObject(c, "params", params);
    cJSON_AddItemToArray(out, c);
}

cJSON *kl_answer_tool_calls(enum kl_usage_kind kind, const cJSON *answer)
{
    cJSON *out = cJSON_CreateArray();
    const cJSON *it, *sub;
    switch (kind) {
    case KL_USAGE_OPENAI_CHAT:
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(answer, "choices")) {
            const cJSON *msg = cJSON_GetObjectItemCaseSensitive(it, "message");
            const cJSON *fc = cJSON_GetObjectItemCaseSensitive(msg, "function_call"); /* deprecated, single */
            if (cJSON_IsObject(fc))
                add_call(out, str(fc, "name"), cJSON_GetObjectItemCaseSensitive(fc, "arguments"), "arguments");
            cJSON_ArrayForEach(sub, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls")) {
                const cJSON *f = cJSON_GetObjectItemCaseSensitive(sub, "function");
                const cJSON *cu = cJSON_GetObjectItemCaseSensitive(sub, "custom");
                if (cJSON_IsObject(f))
                    add_call(out, str(f, "name"), cJSON_GetObjectItemCaseSensitive(f, "arguments"), "arguments");
                else if (cJSON_IsObject(cu))
                    add_call(out, str(cu, "name"), cJSON_GetObjectItemCaseSensitive(cu, "input"), "input");
            }
        }
        break;
    case KL_USAGE_OPENAI_RESPONSES:
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(answer, "output")) {
            const char *t = str(it, "type");
            if (t && !strcmp(t, "function_call"))
                add_call(out, str(it, "name"), cJSON_GetObjectItemCaseSensitive(it, "arguments"), "arguments");
            else if (t && !strcmp(t, "custom_tool_call"))
                add_call(out, str(it, "name"), cJSON_GetObjectItemCaseSensitive(it, "input"), "input");
        }
        break;
    case KL_USAGE_ANTHROPIC:
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(answer, "content")) {
            const char *t = str(it, "type");
            if (t && !strcmp(t, "tool_use"))
                add_call(out, str(it, "name"), cJSON_GetObjectItemCaseSensitive(it, "input"), "arguments");
        }
        break;
    case KL_USAGE_BEDROCK_CONVERSE:
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(
                                   cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(answer, "output"),
                                                                    "message"), "content")) {
            const cJSON *tu = cJSON_GetObjectItemCaseSensitive(it, "toolUse");
            if (cJSON_IsObject(tu))
                add_call(out, str(tu, "name"), cJSON_GetObjectItemCaseSensitive(tu, "input"), "arguments");
        }
        break;
    case KL_USAGE_GEMINI:
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(answer, "candidates")) {
            const cJSON *parts = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "content"),
                                                                  "parts");
            cJSON_ArrayForEach(sub, parts) {
                const cJSON *fc = cJSON_GetObjectItemCaseSensitive(sub, "functionCall");
                if (cJSON_IsObject(fc))
                    add_call(out, str(fc, "name"), cJSON_GetObjectItemCaseSensitive(fc, "args"), "arguments");
            }
        }
        break;
    default:
        break;
    }
    return out;
}
