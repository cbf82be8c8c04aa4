#include "dialect/dialect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/jsoncheck.h"
#include "core/jsonscan.h"

/* The keys of kl_body_map, in its order. */
static const char *const map_keys[] = {
    "model", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "max_output_tokens", "generationConfig", "metadata", "messages", "input", "contents", "inferenceConfig", "n",
    "generation_config", "previous_response_id", "conversation", "prompt", "cachedContent", "cached_content", "tools",
    "mcp_servers", "web_search_options", "background", "reasoning", "reasoning_effort", "service_tier",
    "serviceTier", "speed", "performanceConfig", "n_predict",
};
#define NKEYS (sizeof(map_keys) / sizeof(map_keys[0]))
_Static_assert(sizeof(struct kl_body_map) == NKEYS * sizeof(struct kl_body_span),
               "one key per member of kl_body_map");

static void want_init(struct kl_json_want *w)
{
    for (size_t i = 0; i < NKEYS; i++)
        w[i] = (struct kl_json_want){.key = map_keys[i]};
}

/* Copy the scan's result into m; -1 with *dup on a repeated key, -2 on a
 * key written in another case of letters. */
static int map_from(const struct kl_json_want *w, struct kl_body_map *m, const char **dup)
{
    struct kl_body_span *out = &m->model;
    for (size_t i = 0; i < NKEYS; i++) {
        out[i] = (struct kl_body_span){w[i].start, w[i].end};
        if (w[i].count > 1 || w[i].folded) {
            *dup = w[i].key;
            return w[i].count > 1 ? -1 : -2;
        }
    }
    return 0;
}

int kl_dialect_body_map(const char *body, size_t len, struct kl_body_map *m, size_t *err_at,
                        const char **dup)
{
    struct kl_json_want w[NKEYS];
    want_init(w);
    memset(m, 0, sizeof(*m));
    if (kl_json_validate_members(body, len, err_at, w, NKEYS) < 0)
        return -1;
    int r = map_from(w, m, dup);
    return r == -1 ? -2 : r == -2 ? -3 : 0;
}

/* The member's value decoded by cJSON: it is small (a model name, a number,
 * a few options) even when the body around it is megabytes. */
static cJSON *span_json(const char *body, struct kl_body_span s)
{
    return s.end ? cJSON_ParseWithLength(body + s.start, s.end - s.start) : NULL;
}

/* A count: a number, or with strings a number written as a string, as
 * Google's JSON reads an integer field ("candidateCount": "4"). -1 when it
 * is neither, or out of range. */
static int64_t count_of(const char *body, struct kl_body_span s, bool strings)
{
    /* A plain integer, as nearly every count is written (max_tokens, n), is
     * read here: a cJSON tree of it cost ~600 instructions. Up to 15
     * digits is below 9e15; a leading zero, a sign, a fraction or an
     * exponent go to cJSON as before. */
    size_t n = s.end - s.start;
    if (s.end && n >= 1 && n <= 15 && (body[s.start] != '0' || n == 1)) {
        int64_t v = 0;
        size_t i = 0;
        for (; i < n && body[s.start + i] >= '0' && body[s.start + i] <= '9'; i++)
            v = v * 10 + (body[s.start + i] - '0');
        if (i == n)
            return v;
    }
    cJSON *v = span_json(body, s);
    double d = -1;
    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
    } else if (strings && cJSON_IsString(v) && v->valuestring[0]) {
        char *end;
        d = strtod(v->valuestring, &end); /* white space around it, as pydantic and Go's parsers allow */
        while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
            end++;
        if (*end || !(d >= 0 && d < 9e15) || d != (double)(int64_t)d)
            d = -1;
    }
    cJSON_Delete(v);
    return d >= 0 && d < 9e15 ? (int64_t)d : -1;
}

static int64_t span_count(const char *body, struct kl_body_span s)
{
    return count_of(body, s, false);
}

/* A count written as a number with a fraction (12.5): OpenAI, Anthropic
 * and Google refuse it 400, pydantic servers too; count_of had read it as
 * 12, reserving for a cap no server reads. NULL, or why it is refused. */
static const char *fraction_problem(const char *body, struct kl_body_span s, const char *name, kl_arena *a)
{
    size_t n = s.end - s.start;
    if (!s.end || (!memchr(body + s.start, '.', n) && !memchr(body + s.start, 'e', n) &&
                   !memchr(body + s.start, 'E', n)))
        return NULL;
    cJSON *v = span_json(body, s);
    bool fraction = cJSON_IsNumber(v) && v->valuedouble > -9e15 && v->valuedouble < 9e15 &&
                    v->valuedouble != (double)(int64_t)v->valuedouble;
    cJSON_Delete(v);
    return fraction ? kl_arena_printf(a, "\"%s\" must be an integer, not %.*s%s", name, (int)(n > 24 ? 24 : n),
                                      body + s.start, n > 24 ? "..." : "")
                    : NULL;
}

/* Absent, or written as null. */
static bool span_null(const char *body, struct kl_body_span s)
{
    return !s.end || (s.end - s.start == 4 && memcmp(body + s.start, "null", 4) == 0);
}

static bool span_true(const char *body, struct kl_body_span s)
{
    return s.end - s.start == 4 && memcmp(body + s.start, "true", 4) == 0;
}

/* A switch that changes what comes back (stream, background) must be
 * true, false or null, as OpenAI requires (400 otherwise): servers that
 * validate with pydantic (vLLM, LiteLLM) read "true", 1 or "yes" as true,
 * so an answer keyless took for a whole body would come back as a stream,
 * its usage not asked for (stream_options) and so unknown. NULL when it is
 * one of those, else why not. */
static const char *flag_problem(const char *body, struct kl_body_span s, const char *name, kl_arena *a)
{
    size_t n = s.end - s.start;
    if (span_null(body, s) || span_true(body, s) || (n == 5 && memcmp(body + s.start, "false", 5) == 0))
        return NULL;
    return kl_arena_printf(a, "\"%s\" must be a boolean (true or false), not %.*s%s", name, (int)(n > 16 ? 16 : n),
                           body + s.start, n > 16 ? "..." : "");
}

static const char *read_model(const char *body, struct kl_body_span s, kl_arena *a,
                              const char **why)
{
    if (!s.end) {
        *why = "missing required field \"model\"";
        return NULL;
    }
    cJSON *m = span_json(body, s);
    const char *r = NULL;
    if (memmem(body + s.start, s.end - s.start, "\\u0000", 6)) {
        /* decoded, the name would end at the NUL: the name granted would
         * not be the one the provider reads from the body */
        *why = "\"model\" contains a control character";
    } else if (!cJSON_IsString(m) || m->valuestring[0] == '\0') {
        *why = "\"model\" must be a non-empty string";
    } else if (strlen(m->valuestring) > 256) {
        *why = "\"model\" is longer than 256 characters";
    } else {
        r = kl_arena_strdup(a, m->valuestring);
        for (const unsigned char *c = (const unsigned char *)r; *c; c++)
            if (*c < 0x20 || *c == 0x7f) {
                *why = "\"model\" contains a control character";
                r = NULL;
                break;
            }
    }
    cJSON_Delete(m);
    return r;
}

/* A count one level down (generationConfig.maxOutputTokens), under either
 * of its names: Google's JSON reads a field by its proto name
 * (max_output_tokens) as well as its JSON name, so both spell the same
 * field, and a body holding both is refused as a duplicate key is (which
 * one the provider takes is not ours to guess). *out stays -1 when absent;
 * -1 with *why for a duplicate. */
static int nested_count(const char *body, struct kl_body_span s, const char *outer, const char *key,
                        const char *proto_name, kl_arena *a, int64_t *out, const char **why)
{
    if (!s.end)
        return 0;
    struct kl_json_want w[2] = {{.key = key}, {.key = proto_name ? proto_name : key}};
    kl_json_scan_members(body + s.start, s.end - s.start, w, proto_name ? 2 : 1);
    if (w[0].count > 1 || w[1].count > 1 || (proto_name && w[0].count && w[1].count)) {
        *why = w[0].count && w[1].count && proto_name
                   ? kl_arena_printf(a, "both \"%s\" and \"%s\" in %s", key, proto_name, outer)
                   : kl_arena_printf(a, "duplicate \"%s\" key in %s", w[0].count > 1 ? key : proto_name, outer);
        return -1;
    }
    const struct kl_json_want *v = w[0].count || !proto_name ? &w[0] : &w[1];
    struct kl_body_span at = {s.start + v->start, s.start + v->end};
    if (v->end && (*why = fraction_problem(body, at, kl_arena_printf(a, "%s.%s", outer, v->key), a)))
        return -1;
    if (v->end) /* a field with a proto name is Google's, whose JSON reads a number in a string too */
        *out = count_of(body, at, proto_name != NULL);
    return 0;
}

/* An object one level down (generationConfig.thinkingConfig), under either
 * of its names, as nested_count reads a count: *out stays empty when it is
 * absent or no object. */
static int nested_object(const char *body, struct kl_body_span s, const char *outer, const char *key,
                         const char *proto_name, kl_arena *a, struct kl_body_span *out, const char **why)
{
    *out = (struct kl_body_span){0, 0};
    if (!s.end)
        return 0;
    struct kl_json_want w[2] = {{.key = key}, {.key = proto_name}};
    kl_json_scan_members(body + s.start, s.end - s.start, w, 2);
    if (w[0].count > 1 || w[1].count > 1 || (w[0].count && w[1].count)) {
        *why = kl_arena_printf(a, "%s \"%s\" in %s", w[0].count && w[1].count ? "both spellings of" : "duplicate",
                               key, outer);
        return -1;
    }
    const struct kl_json_want *v = w[0].count ? &w[0] : &w[1];
    if (v->end && body[s.start + v->start] == '{')
        *out = (struct kl_body_span){s.start + v->start, s.start + v->end};
    return 0;
}

/* Thinking a Gemini request asks for without a budget: thinkingBudget -1
 * (dynamic) or a thinkingLevel (Gemini 3's; Gemini CLI sends "HIGH") other
 * than minimal. Those thoughts count against maxOutputTokens too, so a cap
 * keyless adds makes the reasoning room for them (admit.c), as for an
 * OpenAI request's effort: the plain default left a hard task's thinking
 * too little for the answer. A budget of 0, or minimal, declines. */
static int gemini_thinking(const char *body, struct kl_body_span thinking, kl_arena *a,
                           struct kl_request_facts *f, const char **why)
{
    if (!thinking.end || f->thinking_budget > 0)
        return 0;
    struct kl_json_want w[4] = {{.key = "thinkingLevel"}, {.key = "thinking_level"},
                                {.key = "thinkingBudget"}, {.key = "thinking_budget"}};
    kl_json_scan_members(body + thinking.start, thinking.end - thinking.start, w, 4);
    if (w[0].count > 1 || w[1].count > 1 || (w[0].count && w[1].count)) {
        *why = kl_arena_printf(a, "%s \"thinkingLevel\" in thinkingConfig",
                               w[0].count && w[1].count ? "both spellings of" : "duplicate");
        return -1;
    }
    const struct kl_json_want *lw = w[0].count ? &w[0] : &w[1], *bw = w[2].count ? &w[2] : &w[3];
    cJSON *level = lw->end ? span_json(body, (struct kl_body_span){thinking.start + lw->start, thinking.start + lw->end})
                           : NULL;
    cJSON *budget = bw->end ? span_json(body, (struct kl_body_span){thinking.start + bw->start, thinking.start + bw->end})
                            : NULL;
    /* Google's JSON reads an integer written as a string too */
    double b = cJSON_IsNumber(budget) ? budget->valuedouble
               : cJSON_IsString(budget) ? strtod(budget->valuestring, NULL) : 1;
    if (b == 0 || (cJSON_IsString(level) && strcasecmp(level->valuestring, "minimal") == 0))
        f->reasoning_declined = true;
    else if (b == -1 || cJSON_IsString(level))
        f->reasons = true;
    cJSON_Delete(level);
    cJSON_Delete(budget);
    return 0;
}

/* Gemini's request facts: generationConfig (or generation_config, its
 * proto name; the map then points at whichever the body has) with its
 * output cap and candidate count. */
static int gemini_facts(const char *body, kl_arena *a, struct kl_request_facts *f, const char **why)
{
    struct kl_body_map *m = &f->map;
    if (m->generation_config.end && m->generation_config_snake.end) {
        *why = "both \"generationConfig\" and \"generation_config\" in request body";
        return -1;
    }
    if (m->generation_config_snake.end)
        m->generation_config = m->generation_config_snake;
    int64_t candidates = -1;
    if (nested_count(body, m->generation_config, "generationConfig", "maxOutputTokens", "max_output_tokens", a,
                     &f->max_output_tokens, why) < 0 ||
        nested_count(body, m->generation_config, "generationConfig", "candidateCount", "candidate_count", a,
                     &candidates, why) < 0)
        return -1;
    if (candidates > 1)
        f->choices = candidates;
    /* thoughts count against maxOutputTokens: a cap keyless adds leaves the
     * answer room beyond the budget the caller gave them (admit.c) */
    struct kl_body_span thinking;
    if (nested_object(body, m->generation_config, "generationConfig", "thinkingConfig", "thinking_config", a,
                      &thinking, why) < 0 ||
        nested_count(body, thinking, "thinkingConfig", "thinkingBudget", "thinking_budget", a, &f->thinking_budget,
                     why) < 0)
        return -1;
    return gemini_thinking(body, thinking, a, f, why);
}

/* Does an OpenAI request ask for reasoning? Responses' "reasoning" object
 * (its effort, or the model's default when it names none), chat's
 * "reasoning_effort"; "none" and "minimal" ask for (next to) none. The
 * hidden reasoning counts against the output cap, so a cap keyless adds
 * makes room for it (admit.c). */
static bool effort_asks(const cJSON *level)
{
    return cJSON_IsString(level) && strcmp(level->valuestring, "none") != 0 &&
           strcmp(level->valuestring, "minimal") != 0;
}

/* *declined: an effort was given, and none or minimal (a model that
 * reasons by default then does not, or hardly). */
static bool asks_reasoning(const char *body, struct kl_body_span reasoning, struct kl_body_span effort,
                           bool *declined)
{
    cJSON *r = span_json(body, reasoning), *e = span_json(body, effort);
    bool asks = effort_asks(e), named = cJSON_IsString(e);
    if (cJSON_IsObject(r)) {
        /* no effort (or null): the model's default; an "effort" written
         * twice, which parsers read differently, counts if either asks */
        const cJSON *m;
        bool in_object = false;
        cJSON_ArrayForEach(m, r) {
            if (strcmp(m->string, "effort") == 0 && !cJSON_IsNull(m)) {
                in_object = true;
                asks |= effort_asks(m);
            }
        }
        asks |= !in_object;
        named |= in_object;
    }
    cJSON_Delete(r);
    cJSON_Delete(e);
    *declined = named && !asks;
    return asks;
}

int kl_dialect_request_facts(const struct kl_endpoint_info *ep, const char *body, size_t len,
                             kl_arena *a, struct kl_request_facts *f, const char **why)
{
    memset(f, 0, sizeof(*f));
    f->max_output_tokens = -1;
    f->thinking_budget = -1;
    f->choices = 1;
    if (len == 0) {
        *why = "request body is empty; a JSON object is required";
        return -1;
    }
    size_t at = 0;
    const char *dup = NULL;
    int r = kl_dialect_body_map(body, len, &f->map, &at, &dup);
    if (r == -1) {
        *why = at >= len ? kl_arena_printf(a, "malformed JSON in request body: it ends early (%zu bytes)", len)
                         : kl_arena_printf(a, "malformed JSON in request body at byte %zu", at);
        return -1;
    }
    if (kl_json_object_open(body, len) == (size_t)-1) {
        *why = "request body must be a JSON object";
        return -1;
    }
    if (r == -2) {
        *why = kl_arena_printf(a, "duplicate \"%s\" key in request body", dup);
        return -1;
    }
    if (r == -3) {
        /* Go's JSON reader (Ollama's) takes "Model" for "model", the last
         * of them winning: one keyless does not read would slip past grants
         * and caps */
        *why = kl_arena_printf(a, "a key that differs from \"%s\" only in the case of its letters in request body "
                                  "(some servers read it as \"%s\")", dup, dup);
        return -1;
    }
    const struct kl_body_map *m = &f->map;

    if (!ep->model_in_path && !(f->model = read_model(body, m->model, a, why)))
        return -1;
    /* Gemini's request message has a "model" field, which the path fills
     * in: the body may name it too, and which one Google's transcoding
     * takes is not ours to guess; keyless authorizes, prices and caps the
     * path's (countTokens' only counts) */
    if (ep->dialect == KL_DIALECT_GEMINI && ep->id != KL_EP_GEMINI_COUNT && !span_null(body, m->model)) {
        *why = "\"model\" in the request body: the model is named in the path";
        return -1;
    }

    if ((ep->id == KL_EP_CHAT || ep->id == KL_EP_RESPONSES || ep->id == KL_EP_MESSAGES) &&
        (*why = flag_problem(body, m->stream, "stream", a)))
        return -1;
    if (ep->id == KL_EP_RESPONSES && (*why = flag_problem(body, m->background, "background", a)))
        return -1;

    /* the top-level counts read below, each where it is read */
    bool chat = ep->id == KL_EP_CHAT;
    bool max_tokens = chat || ep->id == KL_EP_MESSAGES || ep->id == KL_EP_BEDROCK_INVOKE ||
                      ep->id == KL_EP_BEDROCK_INVOKE_STREAM;
    const struct {
        bool read;
        struct kl_body_span s;
        const char *name;
    } counts[] = {{max_tokens, m->max_tokens, "max_tokens"},
                  {chat, m->max_completion_tokens, "max_completion_tokens"},
                  {ep->id == KL_EP_RESPONSES, m->max_output_tokens, "max_output_tokens"},
                  {chat, m->n_predict, "n_predict"},
                  {chat, m->n, "n"}};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        if (counts[i].read && (*why = fraction_problem(body, counts[i].s, counts[i].name, a)))
            return -1;

    switch (ep->id) {
    case KL_EP_CHAT: {
        f->stream = span_true(body, m->stream);
        /* Servers differ on the output cap they read: OpenAI and vLLM
         * max_completion_tokens, Ollama only max_tokens, llama.cpp n_predict
         * before max_tokens. With several, the answer may run to any of
         * them: the largest is the cap. One keyless cannot read ("100000",
         * which pydantic servers read as 100000) makes none: replaced by
         * keyless's own alone, refused beside another (admit.c) */
        const struct kl_body_span caps[] = {m->max_completion_tokens, m->max_tokens, m->n_predict};
        bool unread = false;
        f->max_output_tokens = -1;
        for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
            if (span_null(body, caps[i]))
                continue;
            int64_t v = span_count(body, caps[i]);
            unread = unread || v < 0;
            f->max_output_tokens = v > f->max_output_tokens ? v : f->max_output_tokens;
        }
        if (unread)
            f->max_output_tokens = -1;
        /* include_usage as OpenAI takes it (400 otherwise): "true" or 1,
         * which pydantic servers read as true, had been taken for absent,
         * keyless's own then asked for and the caller's usage chunk
         * stripped; a repeated member, read first by cJSON and last by
         * Python, could leave the answer without its usage */
        cJSON *so = span_json(body, m->stream_options);
        const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        const char *bad = cJSON_IsObject(so) && kl_json_has_duplicate_keys(so)
                              ? "duplicate key in \"stream_options\""
                          : iu && !cJSON_IsBool(iu) && !cJSON_IsNull(iu)
                              ? "\"stream_options.include_usage\" must be a boolean (true or false)"
                              : NULL;
        f->has_include_usage = cJSON_IsTrue(iu);
        cJSON_Delete(so);
        if (bad) {
            *why = bad;
            return -1;
        }
        /* n answers, each up to the cap: n times the output; "3" too, which
         * servers that validate with pydantic (vLLM, LiteLLM) read as 3. One
         * keyless cannot read is refused, not taken for 1: pydantic reads
         * "1_0" as 10, as Python's int() does */
        int64_t n = count_of(body, m->n, true);
        if (n < 0 && !span_null(body, m->n)) {
            *why = "\"n\" must be a whole number";
            return -1;
        }
        if (n > 1)
            f->choices = n;
        f->reasons = asks_reasoning(body, (struct kl_body_span){0, 0}, m->reasoning_effort, &f->reasoning_declined);
        break;
    }
    case KL_EP_RESPONSES:
        /* its answer is fetched later, by GET /v1/responses/{id}, which
         * keyless does not relay: paid for, it could be neither read nor
         * metered */
        if (span_true(body, m->background)) {
            *why = "\"background\": true is not supported through keyless: a background response is read later with "
                   "GET /v1/responses/{id}, which keyless does not relay, so it could be neither fetched nor metered "
                   "(stream the response instead)";
            return -1;
        }
        f->stream = span_true(body, m->stream);
        f->max_output_tokens = span_count(body, m->max_output_tokens);
        f->reasons = asks_reasoning(body, m->reasoning, (struct kl_body_span){0, 0}, &f->reasoning_declined);
        break;
    case KL_EP_MESSAGES:
        f->stream = span_true(body, m->stream);
        f->max_output_tokens = span_count(body, m->max_tokens);
        break;
    case KL_EP_GEMINI_STREAM:
        f->stream = true;
        /* fall through */
    case KL_EP_GEMINI_GENERATE:
        if (gemini_facts(body, a, f, why) < 0)
            return -1;
        break;
    case KL_EP_BEDROCK_INVOKE_STREAM:
        f->stream = true;
        /* fall through */
    case KL_EP_BEDROCK_INVOKE: /* Claude's body: Anthropic Messages without model and stream */
        f->max_output_tokens = span_count(body, m->max_tokens);
        break;
    case KL_EP_BEDROCK_CONVERSE_STREAM:
        f->stream = true;
        /* fall through */
    case KL_EP_BEDROCK_CONVERSE:
        if (nested_count(body, m->inference_config, "inferenceConfig", "maxTokens", NULL, a, &f->max_output_tokens,
                         why) < 0)
            return -1;
        break;
    default:
        break;
    }
    return 0;
}
