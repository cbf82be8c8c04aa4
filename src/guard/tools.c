/* The tool policy's request half: reading the "tools" capability, deciding
 * which tool names are permitted, and taking refused tools out of a request
 * in each dialect (the answer half is in account/account.c). */
#include "guard/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account/account.h"
#include "account/usage.h"
#include "authorize/grants.h"
#include "core/buf.h"
#include "core/glob.h"
#include "core/jsonscan.h"
#include "core/jsoncheck.h"
#include "core/log.h"
#include "core/text.h"
#include "guard/guard.h"

/* ---- the capability ---- */

static int read_globs(const cJSON *v, kl_arena *a, const char ***out, size_t *n, const char **why)
{
    if (cJSON_IsString(v)) {
        *out = kl_arena_alloc(a, sizeof(char *));
        (*out)[0] = kl_arena_strdup(a, v->valuestring);
        *n = 1;
        return 0;
    }
    if (!cJSON_IsArray(v)) {
        *why = "\"tools\": \"allow\" and \"deny\" must be a tool name glob or an array of them";
        return -1;
    }
    *out = kl_arena_alloc(a, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(char *));
    *n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e)) {
            *why = "\"tools\": \"allow\" and \"deny\" must contain strings";
            return -1;
        }
        (*out)[(*n)++] = kl_arena_strdup(a, e->valuestring);
    }
    return 0;
}

int kl_tool_policy_read(const cJSON *v, kl_arena *a, struct kl_tool_policy *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    out->max_calls = -1;
    if (!cJSON_IsObject(v)) {
        *why = "\"tools\" must be an object: {\"allow\": [...], \"deny\": [...], \"max_calls\": N}";
        return -1;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (!strcmp(m->string, "allow")) {
            if (read_globs(m, a, &out->allow, &out->nallow, why) < 0)
                return -1;
        } else if (!strcmp(m->string, "deny")) {
            if (read_globs(m, a, &out->deny, &out->ndeny, why) < 0)
                return -1;
        } else if (!strcmp(m->string, "max_calls")) {
            if (!cJSON_IsNumber(m) || m->valuedouble < 0 || m->valuedouble > 1e6 ||
                m->valuedouble != (double)(int64_t)m->valuedouble) {
                *why = "\"tools\": \"max_calls\" must be a whole number from 0 to 1000000";
                return -1;
            }
            out->max_calls = (int64_t)m->valuedouble;
        } else {
            *why = kl_arena_printf(a, "\"tools\": unknown key \"%s\" (allow, deny, max_calls)", m->string);
            return -1;
        }
    }
    return 0;
}

static bool any_match(const char *const *globs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (kl_glob_match(globs[i], name))
            return true;
    return false;
}

/* No provider takes a tool name near this long (OpenAI 64 bytes, Anthropic
 * 128): a longer one, matched against every glob, would cost a worker
 * seconds per megabyte, and is refused without being matched. */
#define KL_TOOL_NAME_MAX 1024

bool kl_tools_permitted_in(const struct kl_tool_rules *r, const char *ns, const char *name)
{
    if (!name)
        name = "";
    if (r->n && (strlen(name) > KL_TOOL_NAME_MAX || (ns && strlen(ns) > KL_TOOL_NAME_MAX)))
        return false;
    for (size_t i = 0; i < r->n; i++) {
        const struct kl_tool_policy *p = r->v[i];
        if (p->allow && !any_match(p->allow, p->nallow, name) && !(ns && any_match(p->allow, p->nallow, ns)))
            return false;
        if (any_match(p->deny, p->ndeny, name) || (ns && any_match(p->deny, p->ndeny, ns)))
            return false;
    }
    return true;
}

bool kl_tools_denied(const struct kl_tool_rules *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (any_match(r->v[i]->deny, r->v[i]->ndeny, name))
            return true;
    return false;
}

bool kl_tools_permitted(const struct kl_tool_rules *r, const char *name)
{
    return kl_tools_permitted_in(r, NULL, name);
}

/* ---- the request ---- */

struct edit {
    const struct kl_tool_rules *r;
    kl_arena *a;
    char removed[512];          /* names taken out, comma-separated (cut short when long) */
    size_t nremoved;
    bool changed;
};

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *obj(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsObject(v) ? v : NULL;
}

/* A declaration goes when its name is refused, or when no call may be
 * made at all (max_calls 0). */
static bool refused_in(struct edit *e, const char *ns, const char *name)
{
    return e->r->max_calls == 0 || !kl_tools_permitted_in(e->r, ns, name);
}

static bool refused(struct edit *e, const char *name)
{
    return refused_in(e, NULL, name);
}

static void note_removed(struct edit *e, const char *name)
{
    e->changed = true;
    size_t len = strlen(e->removed);
    if (len + 5 >= sizeof(e->removed))
        return;
    snprintf(e->removed + len, sizeof(e->removed) - len, "%s%s", e->nremoved++ ? "," : "", name ? name : "?");
    if (strlen(e->removed) + 5 >= sizeof(e->removed))
        strcpy(e->removed + sizeof(e->removed) - 5, "...");
}

/* The name a declared (or chosen) tool goes by: its function's name, or for
 * a provider's built-in tool (web search, code execution, ...) its type.
 * OpenAI chat nests the name one level down ({"type": "function",
 * "function": {"name": ...}}); everyone else has it at the top. */
static const char *decl_name(bool chat, const cJSON *t)
{
    const char *type = str(t, "type");
    if (chat) {
        if (!type || !strcmp(type, "function"))
            return str(obj(t, "function"), "name");
        if (!strcmp(type, "custom"))
            return str(obj(t, "custom"), "name");
        return type;
    }
    if (type && !strcmp(type, "mcp"))
        return type; /* a remote MCP server (Responses), whatever its label */
    if (type && !strcmp(type, "computer_use_preview"))
        return "computer"; /* one name for the preview and the released tool, as calls carry neither */
    if (type && !strncmp(type, "web_search_", 11) && !str(t, "name"))
        return "web_search"; /* Responses' web_search_preview, web_search_2025_08_26, ...: one tool */
    const char *name = str(t, "name");
    return name ? name : type;
}

static void delete_member(cJSON *o, const char *key)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
}

/* The top-level members the edits below may change or remove (keep in step
 * with them); the body sent on keeps every other member byte for byte. The
 * last is edited only in Converse's bodies. */
static const char *const edited_members[] = {
    "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "mcp_servers", "toolConfig",
    "tool_config", "additionalModelRequestFields",
};
#define NEDITED (sizeof(edited_members) / sizeof(edited_members[0]))

static bool edited_in(int kind, size_t i)
{
    return i != NEDITED - 1 || kind == KL_USAGE_BEDROCK_CONVERSE;
}

/* 1 + its index in edited_members, or 0 (also for one this kind's edit
 * never touches). */
static size_t edited_member(int kind, const char *name, size_t n)
{
    for (size_t i = 0; i < NEDITED; i++)
        if (strlen(edited_members[i]) == n && memcmp(edited_members[i], name, n) == 0)
            return edited_in(kind, i) ? i + 1 : 0;
    return 0;
}

/* Filter an array of declarations in place; the names kept are counted.
 * A Responses "namespace" (Codex groups its sub-agent functions in one)
 * holds functions judged by their own name and the namespace's (allowed
 * when either is, refused when either is denied); emptied, it goes too.
 * ns: the namespace arr is inside, or NULL. */
static size_t filter_decls_in(struct edit *e, bool chat, cJSON *arr, const char *ns)
{
    size_t kept = 0;
    cJSON *t = arr->child;
    while (t) {
        cJSON *next = t->next;
        const char *name = decl_name(chat, t);
        const char *type = str(t, "type");
        cJSON *inner = type && !strcmp(type, "namespace") ? cJSON_GetObjectItemCaseSensitive(t, "tools") : NULL;
        bool gone;
        if (cJSON_IsArray(inner) && cJSON_GetArraySize(inner) > 0)
            gone = e->r->max_calls == 0 || filter_decls_in(e, chat, inner, name ? name : "") == 0;
        else
            gone = refused_in(e, ns, name);
        if (gone) {
            note_removed(e, name);
            cJSON_Delete(cJSON_DetachItemViaPointer(arr, t));
        } else {
            kept++;
        }
        t = next;
    }
    return kept;
}

static size_t filter_decls(struct edit *e, bool chat, cJSON *arr)
{
    return filter_decls_in(e, chat, arr, NULL);
}

static int refuse(struct edit *e, const char **why, const char *what, const char *name)
{
    *why = kl_arena_printf(e->a, "%s '%s', which the tool policy does not allow", what, name ? name : "");
    return -1;
}

/* OpenAI chat and Responses: tools[], tool_choice, and chat's deprecated
 * functions[] / function_call. */
static int edit_openai(struct edit *e, int k, cJSON *body, const char **why)
{
    bool chat = k == KL_USAGE_OPENAI_CHAT;
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(body, "tools");
    cJSON *choice = cJSON_GetObjectItemCaseSensitive(body, "tool_choice");
    if (cJSON_IsObject(choice)) {
        const char *type = str(choice, "type");
        if (type && !strcmp(type, "allowed_tools")) {
            /* chat nests the list one level down; Responses does not */
            cJSON *holder = chat ? cJSON_GetObjectItemCaseSensitive(choice, "allowed_tools") : choice;
            cJSON *list = cJSON_GetObjectItemCaseSensitive(holder, "tools");
            if (cJSON_IsArray(list) && cJSON_GetArraySize(list) > 0 && filter_decls(e, chat, list) == 0)
                return refuse(e, why, "tool_choice allows only tools the policy refuses, such as", e->removed);
        } else if (type && strcmp(type, "auto") && strcmp(type, "none") && strcmp(type, "required")) {
            /* a remote MCP server goes by its type, as its declaration does */
            const char *name = !strcmp(type, "mcp") ? type : decl_name(chat, choice);
            if (refused(e, name))
                return refuse(e, why, "tool_choice forces the tool", name);
        }
    }
    const char *fc = str(obj(body, "function_call"), "name");
    if (fc && refused(e, fc))
        return refuse(e, why, "function_call forces the function", fc);
    bool required = cJSON_IsString(choice) && !strcmp(choice->valuestring, "required");
    if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0 && filter_decls(e, chat, tools) == 0) {
        if (required)
            return refuse(e, why, "tool_choice requires a tool call, and the policy refuses every tool, such as",
                          e->removed);
        delete_member(body, "tools");
        delete_member(body, "tool_choice");
        delete_member(body, "parallel_tool_calls");
    }
    /* chat's deprecated functions[]: {"name": ...} each */
    cJSON *fns = cJSON_GetObjectItemCaseSensitive(body, "functions");
    if (chat && cJSON_IsArray(fns) && cJSON_GetArraySize(fns) > 0 && filter_decls(e, false, fns) == 0) {
        delete_member(body, "functions");
        delete_member(body, "function_call");
    }
    return 0;
}

static int edit_anthropic(struct edit *e, cJSON *body, const char **why)
{
    /* remote MCP servers (the MCP connector) go by "mcp", as in Responses */
    cJSON *servers = cJSON_GetObjectItemCaseSensitive(body, "mcp_servers");
    if (cJSON_IsArray(servers) && cJSON_GetArraySize(servers) > 0 && refused(e, "mcp")) {
        note_removed(e, "mcp");
        delete_member(body, "mcp_servers");
    }
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(body, "tools");
    const cJSON *choice = obj(body, "tool_choice");
    const char *type = str(choice, "type");
    if (type && !strcmp(type, "tool") && refused(e, str(choice, "name")))
        return refuse(e, why, "tool_choice forces the tool", str(choice, "name"));
    if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0 && filter_decls(e, false, tools) == 0) {
        if (type && !strcmp(type, "any"))
            return refuse(e, why, "tool_choice requires a tool call, and the policy refuses every tool, such as",
                          e->removed);
        delete_member(body, "tools");
        delete_member(body, "tool_choice");
    }
    return 0;
}

/* A Gemini built-in tool's key in camelCase, the spelling policies use:
 * the API accepts code_execution for codeExecution. */
static const char *camel(struct edit *e, const char *key)
{
    if (!strchr(key, '_'))
        return key;
    size_t n = strlen(key);
    char *out = kl_arena_alloc_raw(e->a, n + 1), *o = out;
    for (const char *k = key; *k; k++) {
        if (*k == '_' && k[1]) {
            k++;
            *o++ = (char)(*k >= 'a' && *k <= 'z' ? *k - 'a' + 'A' : *k);
        } else {
            *o++ = *k;
        }
    }
    *o = '\0';
    return out;
}

/* Gemini's members come in camelCase or snake_case (both are accepted). */
static cJSON *either(cJSON *o, const char *camel, const char *snake)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, camel);
    return v ? v : cJSON_GetObjectItemCaseSensitive(o, snake);
}

/* Gemini: tools[] holds objects of functionDeclarations[] and built-in
 * tools named by their key ({"googleSearch": {}}); toolConfig's
 * functionCallingConfig may name the functions allowed. */
static int edit_gemini(struct edit *e, cJSON *body, const char **why)
{
    cJSON *config = either(body, "toolConfig", "tool_config");
    cJSON *fcc = either(config, "functionCallingConfig", "function_calling_config");
    cJSON *names = either(fcc, "allowedFunctionNames", "allowed_function_names");
    const char *mode = str(fcc, "mode");
    bool any = mode && !strcmp(mode, "ANY");
    if (cJSON_IsArray(names) && cJSON_GetArraySize(names) > 0) {
        size_t kept = 0;
        const char *first = NULL;
        cJSON *n = names->child;
        while (n) {
            cJSON *next = n->next;
            if (!cJSON_IsString(n) || refused(e, n->valuestring)) {
                if (!first)
                    first = kl_arena_strdup(e->a, cJSON_IsString(n) ? n->valuestring : "");
                cJSON_Delete(cJSON_DetachItemViaPointer(names, n));
                e->changed = true;
            } else {
                kept++;
            }
            n = next;
        }
        if (!kept)
            return refuse(e, why, "toolConfig allows only functions the policy refuses, such as", first);
    }
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(body, "tools");
    if (!cJSON_IsArray(tools) || cJSON_GetArraySize(tools) == 0)
        return 0;
    size_t left = 0;
    cJSON *t = tools->child;
    while (t) {
        cJSON *next = t->next;
        cJSON *m = cJSON_IsObject(t) ? t->child : NULL;
        while (m) {
            cJSON *mnext = m->next;
            bool decls = !strcmp(m->string, "functionDeclarations") || !strcmp(m->string, "function_declarations");
            if (decls && cJSON_IsArray(m)) {
                if (filter_decls(e, false, m) == 0)
                    cJSON_Delete(cJSON_DetachItemViaPointer(t, m));
            } else if (refused(e, camel(e, m->string))) {
                note_removed(e, camel(e, m->string));
                cJSON_Delete(cJSON_DetachItemViaPointer(t, m));
            }
            m = mnext;
        }
        if (cJSON_IsObject(t) && !t->child)
            cJSON_Delete(cJSON_DetachItemViaPointer(tools, t));
        else
            left++;
        t = next;
    }
    if (!left) {
        if (any)
            return refuse(e, why, "toolConfig requires a function call, and the policy refuses every tool, such as",
                          e->removed);
        delete_member(body, "tools");
        if (config)
            cJSON_Delete(cJSON_DetachItemViaPointer(body, config));
    }
    return 0;
}

/* Bedrock Converse: additionalModelRequestFields is filtered as Claude's
 * body; toolConfig.tools[] holds {"toolSpec": {"name", ...}},
 * {"systemTool": {"name"}} and cache points; toolConfig.toolChoice
 * {"tool": {"name"}} forces one, {"any": {}} requires a call. A toolConfig
 * left with no tool goes whole (Bedrock refuses an empty list). */
static int edit_converse(struct edit *e, cJSON *body, const char **why)
{
    /* fields passed to the model as they are: Claude's own tool
     * declarations (computer use, text editor) may come this way */
    cJSON *extra = cJSON_GetObjectItemCaseSensitive(body, "additionalModelRequestFields");
    if (cJSON_IsObject(extra) && edit_anthropic(e, extra, why) < 0)
        return -1;
    cJSON *config = cJSON_GetObjectItemCaseSensitive(body, "toolConfig");
    if (!cJSON_IsObject(config))
        return 0;
    const cJSON *choice = obj(config, "toolChoice");
    const char *forced = str(obj(choice, "tool"), "name");
    if (forced && refused(e, forced))
        return refuse(e, why, "toolChoice forces the tool", forced);
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(config, "tools");
    if (!cJSON_IsArray(tools))
        return 0;
    size_t kept = 0;
    cJSON *t = tools->child;
    while (t) {
        cJSON *next = t->next;
        const cJSON *spec = obj(t, "toolSpec");
        if (!spec)
            spec = obj(t, "systemTool");
        const char *name = str(spec, "name");
        if (spec && refused(e, name)) {
            note_removed(e, name);
            cJSON_Delete(cJSON_DetachItemViaPointer(tools, t));
        } else if (spec) {
            kept++;
        }
        t = next;
    }
    if (!kept && e->changed) {
        if (obj(choice, "any"))
            return refuse(e, why, "toolChoice requires a tool call, and the policy refuses every tool, such as",
                          e->removed);
        delete_member(body, "toolConfig");
    }
    return 0;
}

int kl_tools_edit(const struct kl_tool_rules *r, int k, cJSON *body, kl_arena *a, const char **removed,
                  const char **why)
{
    struct edit e = {.r = r, .a = a};
    *removed = NULL;
    int rc = 0;
    if (!cJSON_IsObject(body))
        return 0;
    switch (k) {
    case KL_USAGE_OPENAI_CHAT:
    case KL_USAGE_OPENAI_RESPONSES:
        rc = edit_openai(&e, k, body, why);
        break;
    case KL_USAGE_ANTHROPIC:
        rc = edit_anthropic(&e, body, why);
        break;
    case KL_USAGE_GEMINI:
        rc = edit_gemini(&e, body, why);
        break;
    case KL_USAGE_BEDROCK_CONVERSE:
        rc = edit_converse(&e, body, why);
        break;
    default:
        return 0;               /* embeddings and token counts: no answer calls anything */
    }
    if (rc < 0)
        return -1;
    if (!e.changed)
        return 0;
    *removed = kl_arena_strdup(a, e.removed);
    return 1;
}

/* ---- the stage ---- */

static struct kl_tool_rules *rules_for(kl_exchange *ex, const char *qualified)
{
    const struct kl_grant_set *s = ex->grant_set;
    struct kl_tool_rules *r = NULL;
    for (size_t i = 0; i < s->ncaps; i++) {
        const struct kl_cap *cap = s->caps[i].cap;
        if (!cap->tools || !kl_cap_applies(cap, qualified))
            continue;
        if (!r) {
            r = kl_arena_alloc(&ex->arena, sizeof(*r));
            r->v = kl_arena_alloc(&ex->arena, s->ncaps * sizeof(*r->v));
            r->n = 0;
            r->max_calls = -1;
        }
        r->v[r->n++] = cap->tools;
        if (cap->tools->max_calls >= 0 && (r->max_calls < 0 || cap->tools->max_calls < r->max_calls))
            r->max_calls = cap->tools->max_calls;
    }
    return r;
}

static void put_member(struct kl_buf *o, const char *name, const cJSON *v)
{
    char *text = cJSON_PrintUnformatted(v);
    if (!text)
        abort();
    if (o->len > 1)
        kl_buf_put(o, ",", 1);
    kl_buf_put(o, "\"", 1);
    kl_buf_put(o, name, strlen(name));
    kl_buf_put(o, "\":", 2);
    kl_buf_put(o, text, strlen(text));
    cJSON_free(text);
}

/* The edited body: the caller's bytes, member by member, except the members
 * the edit may touch (edited_members), which come from the edited tree or
 * go. So a prompt's numbers beyond 2^53, escapes and spacing reach the
 * provider as written (cJSON would print the whole body its own way). The
 * body is an object without duplicate keys (checked before the edit). */
static char *splice(int kind, const char *s, size_t len, const cJSON *tree, size_t *out_len)
{
    struct kl_buf o = {0};
    kl_buf_put(&o, "{", 1);
    bool seen[NEDITED] = {false};
    size_t pos = 0, vstart;
    const char *key;
    size_t klen;
    while (kl_json_member_next(s, len, &pos, &key, &klen, &vstart)) {
        size_t vend = kl_json_skip_value(s, len, vstart);
        /* a key written with escapes is compared as a parser reads it */
        char *decoded = NULL;
        const char *name = key;
        size_t nlen = klen;
        if (memchr(key, '\\', klen)) {
            cJSON *k = cJSON_ParseWithLength(key - 1, klen + 2);
            decoded = cJSON_IsString(k) ? strdup(k->valuestring) : NULL;
            cJSON_Delete(k);
            if (!decoded)
                abort(); /* the body parsed whole a moment ago: only memory can fail here */
            name = decoded;
            nlen = strlen(name);
        }
        size_t which = edited_member(kind, name, nlen);
        if (!which) {
            if (o.len > 1)
                kl_buf_put(&o, ",", 1);
            kl_buf_put(&o, key - 1, vend - (size_t)(key - 1 - s));
        } else {
            seen[which - 1] = true;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(tree, edited_members[which - 1]);
            if (v)
                put_member(&o, edited_members[which - 1], v);
        }
        free(decoded);
    }
    /* members an edit added */
    for (size_t i = 0; i < NEDITED; i++) {
        const cJSON *v = seen[i] || !edited_in(kind, i) ? NULL : cJSON_GetObjectItemCaseSensitive(tree, edited_members[i]);
        if (v)
            put_member(&o, edited_members[i], v);
    }
    kl_buf_put(&o, "}", 1);
    *out_len = o.len;
    return o.p;
}

enum kl_step kl_tools_run(kl_exchange *ex)
{
    const struct kl_grant_set *s = ex->grant_set;
    if (!ex->ep->inference || !s || !ex->provider)
        return KL_NEXT;
    size_t i = 0;
    while (i < s->ncaps && !s->caps[i].cap->tools)
        i++;
    if (i == s->ncaps)
        return KL_NEXT; /* no tool policy for this caller: the common case */
    char qualified[512];
    if (!kl_join2(qualified, sizeof(qualified), ex->provider->id, '/', ex->model))
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "model name too long");
    struct kl_tool_rules *r = rules_for(ex, qualified);
    if (!r)
        return KL_NEXT;
    int k = kl_usage_kind_for(ex->ep->id);
    /* Anthropic's token count takes a Messages request's tools: they are
     * edited as the request they count will be (Claude Code counts its
     * context with its whole tool list), or the count would include tools
     * the provider never sees. Nothing is called in its answer. */
    bool count = ex->ep->id == KL_EP_COUNT_TOKENS;
    if (count)
        k = KL_USAGE_ANTHROPIC;
    if (k != KL_USAGE_OPENAI_CHAT && k != KL_USAGE_OPENAI_RESPONSES && k != KL_USAGE_ANTHROPIC &&
        k != KL_USAGE_GEMINI && k != KL_USAGE_BEDROCK_CONVERSE)
        return KL_NEXT; /* embeddings and other token counts: nothing is called */
    if (!kl_dialect_reads_body(ex->ep, ex->model))
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_BLOCKED,
                       "a tool policy applies to this request, and keyless reads InvokeModel bodies and answers only "
                       "for Claude: call %s through Converse (/model/{id}/converse)", ex->model);
    if (!count)
        ex->tool_rules = r;
    /* every member that declares or chooses tools has a name starting
     * with "tool", "function" or "mcp", unless it is written with escapes:
     * a body with none of them after a quote and no backslash has nothing
     * to take out (the usual prompt mentions "the function", not "function) */
    if (ex->body && !memmem(ex->body, ex->body_len, "\"tool", 5) && !memmem(ex->body, ex->body_len, "\"function", 9) &&
        !memmem(ex->body, ex->body_len, "\"mcp", 4) && !memchr(ex->body, '\\', ex->body_len))
        return KL_NEXT;
    /* the tree must say what the provider will read, or a second "tools"
     * key or a name cut at \u0000 would slip past */
    cJSON *body = ex->body ? cJSON_ParseWithLength(ex->body, ex->body_len) : NULL;
    if (!body || kl_json_has_nul_escape(ex->body, ex->body_len) || kl_json_has_duplicate_keys(body)) {
        cJSON_Delete(body);
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST,
                       "a tool policy applies to this request, and its body holds a \\u0000 escape or a duplicate "
                       "key, which the policy could not read as the provider would");
    }
    const char *removed = NULL, *why = NULL;
    int rc = kl_tools_edit(r, k, body, &ex->arena, &removed, &why);
    if (rc < 0) {
        cJSON_Delete(body);
        kl_info("%s: refused by the tool policy: %s", ex->id, why);
        return kl_fail(ex, KL_ERR_BLOCKED, KL_EC_BLOCKED, "request blocked: %s", why);
    }
    if (rc == 1) {
        kl_account_session_id(ex); /* from the caller's own body */
        size_t len;
        char *text = splice(k, ex->body, ex->body_len, body, &len);
        const char *bad = kl_guard_replace_body(ex, text, len);
        free(text);
        if (bad) {
            cJSON_Delete(body);
            return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "the tool policy's edit of this request: %s", bad);
        }
        kl_info("%s: tool policy removed %s from the request", ex->id, removed[0] ? removed : "refused names");
    }
    cJSON_Delete(body);
    return KL_NEXT;
}
