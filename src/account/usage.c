#include "account/usage.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/decoded.h"
#include "core/jsoncheck.h"
#include "core/jsonscan.h"
#include "core/text.h"

#define MAX_TOKENS 1000000000000000LL   /* 1e15: anything above is nonsense, and sums stay far from overflow */
#define MAX_MODEL_LEN 256
#define MAX_ID_LEN 256        /* longer response and conversation ids are not remembered */
#define MAX_STOP_LEN 64
#define MAX_TOOL_LEN 256
#define MAX_JOINED_LEN 1024 /* names joined at one index (chat_object): longer, no longer followed (as
                               long as the longest tool name a policy matches, guard/tools.c) */
#define ARR_MAX_DEPTH 512

/* Where the JSON-array splitter is between elements. */
enum arr_mode {
    ARR_START,                  /* before '[' */
    ARR_NEXT,                   /* after '[' or ',': an element or ']' */
    ARR_AFTER,                  /* after an element: ',' or ']' */
    ARR_ELEM,                   /* inside an element */
    ARR_RESYNC,                 /* after a syntax error: waiting for "," ws "{" */
};

/* What the grammar expects next inside an element. */
enum arr_expect {
    EX_VALUE,
    EX_VALUE_OR_CLOSE,          /* after '[' */
    EX_KEY_OR_CLOSE,            /* after '{' */
    EX_KEY,                     /* after ',' in an object */
    EX_COLON,
    EX_COMMA_OR_CLOSE,
};

/* An incremental splitter for a top-level JSON array of objects. It checks
 * the grammar token by token (not number or literal spelling: cJSON does
 * that), so a broken element is noticed where it breaks and cannot swallow
 * the elements after it. */
struct arr_split {
    enum arr_mode mode;
    enum arr_expect expect;
    bool in_str, str_is_key, esc, in_lit;
    bool skipping;              /* element over KL_USAGE_MAX_ELEMENT: not kept */
    bool resync_comma;          /* RESYNC saw a ',' (and only white space since) */
    unsigned depth;
    unsigned char stack[ARR_MAX_DEPTH / 8];     /* 1 bit per level: object? */
    char *buf;                  /* the element so far (arena) */
    size_t len, cap;
};

struct kl_usage_parser {
    kl_arena *a;
    enum kl_usage_kind kind;
    struct kl_usage u;
    /* Anthropic: the latest non-null value of each field (-1 = none yet) */
    int64_t an_in, an_cr, an_cw, an_cw1h, an_out;
    /* OpenAI chat streams: tool call slots already named, (choice << 32) | index, a set; and
     * in strict mode each slot's name as joined by index (a Python SDK's reading) */
    uint64_t *seen;
    const char **seen_names;
    size_t nseen, capseen;
    /* the answer (choice, candidate) tool calls are met in, and each one's count so far */
    uint32_t choice;
    int *choice_calls;
    size_t nchoice_calls;
    int model_tries;            /* chat chunks parsed only to learn the model */
    void (*on_tool)(void *, const char *, const char *);   /* told of each tool call met (ns, name) */
    void (*on_joined)(void *, const char *);    /* told of names a Python SDK would join (chat_object) */
    void *on_tool_arg;
    bool strict;                /* a tool policy reads this answer: every event in full */
    bool bedrock;               /* Bedrock InvokeModel: kl_usage_bedrock */
    const char *ambiguous;      /* why the caller could read the answer differently, or NULL */
    int64_t text_bytes;         /* text, reasoning and tool input the answer carried so far (decoded, about):
                                   a stream's deltas, Gemini's parts */
    bool thinking;              /* the answer reasons, and bills more of it than it shows (kl_usage_settle) */
    bool ended;                 /* the stream's own end went by: OpenAI's [DONE], Anthropic's message_stop */
    /* Gemini: the answers (candidates, by index; 63 and up share a bit) a
     * stream has shown, and those that have said why they stopped: one that
     * stops says nothing of the others still going (candidateCount > 1) */
    uint64_t cands_seen, cands_done;
    uint64_t cands_calling;     /* ... and those whose function call goes on in the next chunks (willContinue) */
    struct arr_split arr;
};

/* ---- small helpers ---- */

static int64_t clamp_tokens(double d)
{
    if (!(d > 0))               /* also NaN */
        return 0;
    if (d >= (double)MAX_TOKENS)
        return MAX_TOKENS;
    return (int64_t)d;
}

/* A token count member: false when absent, null or not a number. */
static bool count_opt(const cJSON *o, const char *key, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        return false;
    *out = clamp_tokens(v->valuedouble);
    return true;
}

static int64_t count(const cJSON *o, const char *key)
{
    int64_t v = 0;
    count_opt(o, key, &v);
    return v;
}

static int64_t sub0(int64_t a, int64_t b)
{
    return a > b ? a - b : 0;
}

static const cJSON *member(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* A non-empty string member of o, or o itself when key is NULL. */
static const char *str_member(const cJSON *o, const char *key)
{
    const cJSON *v = key ? member(o, key) : o;
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0] ? v->valuestring : NULL;
}

static const char *dup_capped(kl_usage_parser *p, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    return kl_arena_strndup(p->a, s, n);
}

static void set_model(kl_usage_parser *p, const char *m)
{
    if (m && !(p->u.model_served && !strncmp(p->u.model_served, m, MAX_MODEL_LEN)))
        p->u.model_served = dup_capped(p, m, MAX_MODEL_LEN);
}

static void set_stop(kl_usage_parser *p, const char *s)
{
    if (s)
        p->u.stop_reason = dup_capped(p, s, MAX_STOP_LEN);
}

/* A tool call met for the first time; ns: the namespace its function is
 * declared in (Responses), or NULL. */
/* The most answers counted apart: n and candidateCount are far below it;
 * a higher index shares the last count (counted more, never less). */
#define KL_USAGE_MAX_CHOICES 256

static void add_tool_in(kl_usage_parser *p, const char *ns, const char *name)
{
    if (p->on_tool)
        p->on_tool(p->on_tool_arg, ns, name);
    if (p->u.tool_calls < 1000000000)
        p->u.tool_calls++;
    size_t c = p->choice < KL_USAGE_MAX_CHOICES ? p->choice : KL_USAGE_MAX_CHOICES - 1;
    if (c >= p->nchoice_calls) {
        size_t n = p->nchoice_calls ? p->nchoice_calls : 4;
        while (n <= c)
            n *= 2;
        int *v = kl_arena_alloc(p->a, n * sizeof(*v));
        memset(v, 0, n * sizeof(*v));
        if (p->nchoice_calls)
            memcpy(v, p->choice_calls, p->nchoice_calls * sizeof(*v));
        p->choice_calls = v;
        p->nchoice_calls = n;
    }
    if (p->choice_calls[c] < 1000000000 && ++p->choice_calls[c] > p->u.tool_calls_one_answer)
        p->u.tool_calls_one_answer = p->choice_calls[c];
    if (!name || p->u.ntool_names >= KL_USAGE_MAX_TOOL_NAMES)
        return;
    if (!p->u.tool_names)
        p->u.tool_names = kl_arena_alloc(p->a, KL_USAGE_MAX_TOOL_NAMES * sizeof(char *));
    p->u.tool_names[p->u.ntool_names++] = dup_capped(p, name, MAX_TOOL_LEN);
}

static void add_tool(kl_usage_parser *p, const char *name)
{
    add_tool_in(p, NULL, name);
}

/* A tool name met again (a later delta, an item done): only checked. */
static void tool_named(kl_usage_parser *p, const char *ns, const char *name)
{
    if (p->on_tool)
        p->on_tool(p->on_tool_arg, ns, name);
}

static void ambiguous(kl_usage_parser *p, const char *why)
{
    if (!p->ambiguous)
        p->ambiguous = why;
}

/* Strict mode: the tree of d, if the caller's SDK can read it only the way
 * cJSON does; else NULL and why. Not JSON, a duplicate key (cJSON keeps
 * the first, most parsers the last) or a \u0000 escape (which ends a cJSON
 * string early) could hide a tool call from the policy. */
static cJSON *strict_parse(kl_usage_parser *p, const char *d, size_t n)
{
    /* half a surrogate pair (split across events): read as JavaScript reads it */
    char *whole = memchr(d, '\\', n) ? kl_json_lone_surrogates_replaced(d, n) : NULL;
    cJSON *j = cJSON_ParseWithLength(whole ? whole : d, n);
    free(whole);
    const char *why = NULL;
    if (!cJSON_IsObject(j))
        why = "an event or body that is not a JSON object";
    else if (kl_json_has_duplicate_keys(j))
        why = "a duplicate key";
    else if (memchr(d, '\\', n) && kl_json_has_nul_escape(d, n))
        why = "a \\u0000 escape";
    if (!why)
        return j;
    cJSON_Delete(j);
    ambiguous(p, why);
    return NULL;
}

static bool has(const char *d, size_t n, const char *lit)
{
    return memmem(d, n, lit, strlen(lit)) != NULL;
}

/* Does d hold "tool_calls" or "function_call", quotes included? One pass
 * from underscore to underscore (memchr; a JSON answer holds a few dozen)
 * for the "_call" the two share: a memmem for each name had been two
 * passes over every answer and every chat chunk (~1,600 instructions for
 * a 600-byte answer; a memmem for "_call" alone, with its short skips,
 * cost more than both). */
static bool has_call_name(const char *d, size_t n)
{
    const char *end = d + n;
    for (const char *q = d; (q = memchr(q, '_', (size_t)(end - q))) != NULL; q++) {
        size_t at = (size_t)(q - d);
        if (n - at < 5 || memcmp(q + 1, "call", 4) != 0)
            continue;
        if (at >= 5 && n - at >= 7 && memcmp(q - 5, "\"tool", 5) == 0 && memcmp(q + 5, "s\"", 2) == 0)
            return true;
        if (at >= 9 && n - at >= 6 && memcmp(q - 9, "\"function", 9) == 0 && q[5] == '"')
            return true;
    }
    return false;
}

/* Is every member name in d written without escapes? (A string followed
 * by ':' is a name; escapes in values, common in text, do not matter.) */
static bool names_plain(const char *d, size_t n)
{
    if (!memchr(d, '\\', n))
        return true;
    for (size_t i = 0; i < n; i++) {
        if (d[i] != '"')
            continue;
        bool esc = false;
        for (i++; i < n && d[i] != '"'; i++)
            if (d[i] == '\\') {
                esc = true;
                i++;
            }
        if (!esc)
            continue;
        size_t j = i + 1;
        while (j < n && (unsigned char)d[j] <= 0x20)
            j++;
        if (j < n && d[j] == ':')
            return false;
    }
    return true;
}

/* Strict mode's one shortcut: a chat chunk whose names are all written
 * plainly and none of which is tool_calls or function_call cannot carry a
 * call however a client reads it (a duplicate of another member changes no
 * call), so it is read as outside strict mode. Nearly every chunk is one. */
static bool chat_chunk_without_calls(const char *d, size_t n)
{
    return !has_call_name(d, n) && names_plain(d, n);
}

static void reset_tools(kl_usage_parser *p)
{
    p->u.tool_calls = 0;
    p->u.tool_calls_one_answer = 0;
    p->u.ntool_names = 0;
    if (p->nchoice_calls)
        memset(p->choice_calls, 0, p->nchoice_calls * sizeof(*p->choice_calls));
}


static bool name_is(const char *ev, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(ev, lit, n) == 0;
}

/* The bytes of the JSON string starting at v (its opening quote), roughly
 * as decoded: an escape is the one byte it stands for, \uXXXX two. *after
 * (when given) is set past its closing quote. */
static size_t string_bytes(const char *v, const char *end, const char **after)
{
    size_t len = 0;
    for (v++; v < end && *v != '"'; v++, len++) {
        if (*v != '\\' || v + 1 == end)
            continue;
        if (v[1] == 'u' && end - v >= 6) {
            v += 5;
            len++;
        } else {
            v++;
        }
    }
    if (after)
        *after = v < end ? v + 1 : end;
    return len;
}

static const char *skip_ws_to(const char *c, const char *end)
{
    while (c < end && (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r'))
        c++;
    return c;
}

/* Does d hold a "type" member whose value is the string lit (or, prefix,
 * begins with it), with any white space around its colon? Python's
 * json.dumps, which LiteLLM and vLLM serve their events with, writes
 * "type": "error"; a filter on the bytes "type":"error" alone let such an
 * error event pass unread. */
static bool type_is(const char *d, size_t n, const char *lit, bool prefix)
{
    const char *end = d + n, *c = d;
    size_t ln = strlen(lit);
    while (c < end && (c = memmem(c, (size_t)(end - c), "\"type\"", 6)) != NULL) {
        c += 6;
        const char *v = skip_ws_to(c, end);
        if (v >= end || *v != ':')
            continue;
        v = skip_ws_to(v + 1, end);
        if ((size_t)(end - v) >= ln + 1 + !prefix && v[0] == '"' && !memcmp(v + 1, lit, ln) &&
            (prefix || v[ln + 1] == '"'))
            return true;
    }
    return false;
}

static bool has_type(const char *d, size_t n, const char *lit)
{
    return type_is(d, n, lit, false);
}

/* Past the JSON object starting at v (its opening brace), or end. */
static const char *object_end(const char *v, const char *end)
{
    int depth = 0;
    while (v < end) {
        if (*v == '"') {
            string_bytes(v, end, &v);
            continue;
        }
        if (*v == '{')
            depth++;
        else if (*v == '}' && --depth == 0)
            return v + 1;
        v++;
    }
    return end;
}

/* Past the JSON string starting at v (its opening quote): after its
 * closing quote, or end. memchr to each quote, the backslashes before it
 * counted: most of a chunk is strings, walked this way at memchr's speed. */
static const char *string_end(const char *v, const char *end)
{
    for (const char *q = v + 1; q < end && (q = memchr(q, '"', (size_t)(end - q))); q++) {
        const char *b = q;
        while (b > v + 1 && b[-1] == '\\')
            b--;
        if ((q - b) % 2 == 0)
            return q + 1;
    }
    return end;
}

/* The bytes of the values of the members named in keys, anywhere in the
 * JSON text s: a string's as decoded (string_bytes), an object's as
 * written. What a stream chunk carried of text, reasoning and tool input,
 * from which a stream cut short before its count is estimated
 * (kl_usage_settle). Bit k of *met (when given) is set when keys[k] was
 * met with such a value. Strings are stepped over whole, so a text that
 * spells a key is not taken for one. Run on every event of a stream. */
static size_t member_bytes(const char *s, size_t n, const char *const *keys, size_t nkeys, unsigned *met)
{
    size_t klen[8];
    for (size_t k = 0; k < nkeys && k < 8; k++)
        klen[k] = strlen(keys[k]);
    const char *end = s + n, *v = s;
    size_t bytes = 0;
    while (v < end && (v = memchr(v, '"', (size_t)(end - v)))) {
        const char *after = string_end(v, end);
        size_t raw = after > v + 1 ? (size_t)(after - v) - 2 : 0;
        const char *c = skip_ws_to(after, end);
        for (size_t k = 0; c < end && *c == ':' && k < nkeys && k < 8; k++) {
            if (klen[k] != raw || memcmp(v + 1, keys[k], raw) != 0)
                continue;
            c = skip_ws_to(c + 1, end);
            if (c < end && *c == '"') {
                bytes += string_bytes(c, end, &after);
            } else if (c < end && *c == '{') {
                after = object_end(c, end);
                bytes += (size_t)(after - c);
            } else {
                break;
            }
            if (met)
                *met |= 1u << k;
            break;
        }
        v = after;
    }
    return bytes;
}

/* ---- OpenAI chat completions ---- */

/* Does a chat chunk carry some of an answer: a non-empty string under a
 * member that holds one (a delta's content, a tool call's arguments, the
 * text of a content part, as Mistral streams its content and magistral
 * its thinking ...)? Run on every chunk until one does (usually the
 * first or second). */
static bool chat_answers(const char *d, size_t n)
{
    static const char *const keys[] = {"content\"", "arguments\"", "refusal\"", "reasoning\"", "reasoning_content\"",
                                       "input\"", "transcript\"", "name\"", "text\""};
    const char *end = d + n;
    for (const char *q = d; (q = memchr(q, '"', (size_t)(end - q))) && q + 1 < end; q++) {
        if (!strchr("carintu", q[1]))
            continue;
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            size_t kl = strlen(keys[k]);
            if ((size_t)(end - q - 1) < kl || memcmp(q + 1, keys[k], kl) != 0)
                continue;
            const char *v = q + 1 + kl;
            while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r' || *v == ':'))
                v++;
            if (v + 1 < end && *v == '"' && v[1] != '"')
                return true;
        }
    }
    return false;
}

static void chat_usage(kl_usage_parser *p, const cJSON *us)
{
    const cJSON *pd = member(us, "prompt_tokens_details");
    const cJSON *cd = member(us, "completion_tokens_details");
    int64_t cached = count(pd, "cached_tokens"), written = count(pd, "cache_write_tokens");
    p->u.input = sub0(sub0(count(us, "prompt_tokens"), cached), written);
    p->u.cache_read = cached;
    p->u.cache_write = written;
    p->u.output = count(us, "completion_tokens");
    p->u.reasoning = count(cd, "reasoning_tokens");
    p->u.known = true;
}

/* Where a slot key starts its probe: splitmix64's finalizer over the key
 * and a seed the upstream cannot know (the parser's address), so indexes
 * cannot be chosen to collide. */
static size_t slot_home(const kl_usage_parser *p, uint64_t key, size_t cap)
{
    uint64_t x = key ^ (uint64_t)(uintptr_t)p;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return (size_t)(x ^ (x >> 31)) & (cap - 1);
}

/* Has this (choice << 32 | index) slot been named before? A set with open
 * addressing (keys stored + 1, 0 = empty), so a stream of many calls stays
 * linear: a linear search made 100k indexes a quadratic stall. *id is the
 * slot's call id as last noted (a hash, 0 = none), for the caller to read
 * and update. */
static bool seen_slot(kl_usage_parser *p, uint64_t key, uint64_t **id, const char ***name)
{
    if (2 * (p->nseen + 1) > p->capseen) {
        size_t cap = p->capseen ? p->capseen * 2 : 16;
        uint64_t *v = kl_arena_alloc(p->a, 2 * cap * sizeof(*v)); /* keys, then ids; zeroed; the old table stays */
        const char **names = kl_arena_alloc(p->a, cap * sizeof(*names));
        memset(names, 0, cap * sizeof(*names));
        for (size_t i = 0; i < p->capseen; i++) {
            if (!p->seen[i])
                continue;
            size_t j = slot_home(p, p->seen[i] - 1, cap);
            while (v[j])
                j = (j + 1) & (cap - 1);
            v[j] = p->seen[i];
            v[cap + j] = p->seen[p->capseen + i];
            names[j] = p->seen_names[i];
        }
        p->seen = v;
        p->seen_names = names;
        p->capseen = cap;
    }
    size_t j = slot_home(p, key, p->capseen);
    for (; p->seen[j]; j = (j + 1) & (p->capseen - 1))
        if (p->seen[j] == key + 1)
            break;
    bool seen = p->seen[j] != 0;
    if (!seen) {
        p->seen[j] = key + 1;
        p->nseen++;
    }
    *id = &p->seen[p->capseen + j];
    if (name)
        *name = &p->seen_names[j];
    return seen;
}

/* A call id as seen_slot keeps it: FNV-1a, never 0. */
static uint64_t id_hash(const char *id)
{
    return id ? kl_fnv64(KL_FNV64_START, id, strlen(id)) | 1 : 0;
}

static uint32_t index_of(const cJSON *o, uint32_t dflt)
{
    const cJSON *v = member(o, "index");
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 4e9)
        return dflt;
    return (uint32_t)v->valuedouble;
}

/* One chat.completion (stream = false) or chat.completion.chunk. A stream
 * names each tool call once, in the first delta of its index; a whole body
 * lists every call once. */
static void chat_object(kl_usage_parser *p, const cJSON *root, bool stream)
{
    set_model(p, str_member(root, "model"));
    const cJSON *us = member(root, "usage");
    if (cJSON_IsObject(us))
        chat_usage(p, us);
    if (cJSON_IsObject(member(root, "error")))
        set_stop(p, "error");
    const cJSON *choices = member(root, "choices");
    if (!cJSON_IsArray(choices))
        return;
    uint32_t ci = 0;
    for (const cJSON *c = choices->child; c; c = c->next, ci++) {
        uint64_t choice = index_of(c, ci);
        p->choice = (uint32_t)choice;
        const cJSON *msg = member(c, stream ? "delta" : "message");
        const cJSON *tcs = member(msg, "tool_calls");
        uint32_t ti = 0;
        for (const cJSON *tc = cJSON_IsArray(tcs) ? tcs->child : NULL; tc; tc = tc->next, ti++) {
            /* a function's name, or a GPT-5 custom (free-form) tool's; a
             * call with both is read by its type by some clients, by the
             * function by others: each name is checked, and two that differ
             * are ambiguous */
            const char *name = str_member(member(tc, "function"), "name");
            const char *custom = str_member(member(tc, "custom"), "name");
            if (name && custom) {
                tool_named(p, NULL, custom);
                if (p->strict && strcmp(name, custom) != 0)
                    ambiguous(p, "a tool call named both as a function and as a custom tool");
            }
            if (!name)
                name = custom;
            if (!stream) {
                add_tool(p, name);
                continue;
            }
            if (!name)
                continue;
            uint64_t *slot_id, id = id_hash(str_member(tc, "id"));
            const char **joined;
            if (!seen_slot(p, choice << 32 | index_of(tc, ti), &slot_id, &joined)) {
                add_tool(p, name);
                if (p->strict)
                    *joined = kl_arena_strdup(p->a, name);
            } else if (id && *slot_id && id != *slot_id) {
                /* a new call with its own id in a used slot: Gemini's
                 * OpenAI-compatible streams send no index, Ollama's send
                 * every parallel call at index 0. A Python SDK joins the
                 * names at one index whatever their ids: that name is
                 * checked too ("Ba" then "sh" is a call to Bash there) */
                add_tool(p, name);
                if (p->strict && *joined && strlen(*joined) + strlen(name) <= MAX_JOINED_LEN) {
                    *joined = kl_arena_concat(p->a, *joined, name, NULL);
                    if (p->on_joined) /* no call of a tool that exists: only a refused name matters */
                        p->on_joined(p->on_tool_arg, *joined);
                }
            } else if (p->strict) {
                /* a second name for the same call (its id repeated, or
                 * none): SDKs join the pieces by index (Python) or keep the
                 * last (Node), and neither name was checked */
                ambiguous(p, "a tool call's name in pieces");
            }
            *slot_id = id;
        }
        /* the deprecated single function_call: one per choice, its name
         * once (a later one is a name in pieces, as above) */
        const char *fname = str_member(member(msg, "function_call"), "name");
        uint64_t *unused;
        if (fname && (!stream || !seen_slot(p, choice << 32 | 0xffffffffu, &unused, NULL)))
            add_tool(p, fname);
        else if (fname && p->strict)
            ambiguous(p, "a tool call's name in pieces");
        set_stop(p, str_member(c, "finish_reason"));
    }
    p->choice = 0;
}

/* Can this chunk hold usage, a tool name, a finish reason or an error?
 * Nearly every chunk is a text delta that holds none, and one pass over
 * its quotes is much cheaper than building its tree. A false positive only
 * costs a parse. The same pass adds the text, reasoning and arguments the
 * chunk carries to p->text_bytes: OpenAI reports a stream's usage only in
 * its last chunk, so one cut short is estimated from them
 * (kl_usage_assume_prompt). A key is a quote, its name, a quote and ':':
 * inside a string every quote is escaped, so text cannot pass for one. */
static bool chat_event_wanted(kl_usage_parser *p, const char *d, size_t n)
{
    /* every chunk names the model: the first few are enough to learn it */
    bool wanted = !p->u.model_served && p->model_tries < 3;
    if (wanted)
        p->model_tries++;
#define KEY(s, v, t) {s "\"", sizeof(s), v, t}
    static const struct {
        const char *key;        /* closing quote included */
        size_t len;
        char value;             /* required first byte of the value, 0 = any; '"' for text */
        bool text;              /* its value is counted, not wanted */
    } keys[] = {KEY("usage", '{', false), KEY("finish_reason", '"', false), KEY("name", 0, false),
                KEY("function_call", 0, false), KEY("error", '{', false), KEY("content", '"', true),
                KEY("arguments", '"', true), KEY("refusal", '"', true), KEY("reasoning_content", '"', true),
                KEY("reasoning", '"', true)};
#undef KEY
    const char *end = d + n;
    for (const char *q = d; (q = memchr(q, '"', (size_t)(end - q))) && q + 1 < end; q++) {
        int first, last;
        switch (q[1]) {         /* the keys' first letters */
        case 'u': first = last = 0; break;
        case 'f': first = last = q + 2 < end && q[2] == 'i' ? 1 : 3; break;
        case 'n': first = last = 2; break;
        case 'e': first = last = 4; break;
        case 'c': first = last = 5; break;
        case 'a': first = last = 6; break;
        case 'r': first = 7; last = 9; break;
        default: continue;
        }
        const char *key = q + 1;
        for (int k = first; k <= last; k++) {
            if ((size_t)(end - key) < keys[k].len || memcmp(key, keys[k].key, keys[k].len))
                continue;
            if (keys[k].text) {
                const char *c = skip_ws_to(key + keys[k].len, end);
                if (c < end && *c == ':' && (c = skip_ws_to(c + 1, end)) < end && *c == '"') {
                    const char *after;
                    p->text_bytes += (int64_t)string_bytes(c, end, &after);
                    q = after - 1; /* past the value: its escaped quotes need no look */
                }
            } else if (!wanted) {
                char v = kl_json_value_after_key(key + keys[k].len, end);
                wanted = v && (!keys[k].value || v == keys[k].value);
            }
            break;
        }
    }
    return wanted;
}

/* ---- OpenAI Responses ---- */

static void responses_usage(kl_usage_parser *p, const cJSON *us)
{
    const cJSON *id = member(us, "input_tokens_details");
    const cJSON *od = member(us, "output_tokens_details");
    int64_t cached = count(id, "cached_tokens"), written = count(id, "cache_write_tokens");
    p->u.input = sub0(sub0(count(us, "input_tokens"), cached), written);
    p->u.cache_read = cached;
    p->u.cache_write = written;
    p->u.output = count(us, "output_tokens");
    p->u.reasoning = count(od, "reasoning_tokens");
    p->u.known = true;
    p->u.final = true; /* only the closing events carry it */
}

/* An output item the caller must execute, and the name its tool was
 * declared by: a function or custom tool call by its name; the built-in
 * tools the caller runs (shell, local shell, apply_patch, computer use) by
 * their type. NULL for any other item. */
static const char *call_item_name(const cJSON *it, bool *is_call)
{
    const char *t = str_member(it, "type");
    *is_call = true;
    if (t && (!strcmp(t, "function_call") || !strcmp(t, "custom_tool_call")))
        return str_member(it, "name");
    if (t && !strcmp(t, "local_shell_call"))
        return "local_shell";
    if (t && !strcmp(t, "shell_call"))
        return "shell";
    if (t && !strcmp(t, "apply_patch_call"))
        return "apply_patch";
    if (t && !strcmp(t, "computer_call"))
        return "computer"; /* declared as computer or computer_use_preview: policies say computer */
    *is_call = false;
    return NULL;
}

/* A response object: the whole body, or the one in response.completed /
 * .incomplete / .failed. Its output list is authoritative for tool calls
 * when it has any (a stream already counted them from output_item.added). */
static void responses_object(kl_usage_parser *p, const cJSON *r)
{
    set_model(p, str_member(r, "model"));
    const char *id = str_member(r, "id"), *conv = str_member(member(r, "conversation"), "id");
    if (id && strlen(id) <= MAX_ID_LEN)
        p->u.response_id = kl_arena_strdup(p->a, id);
    if (conv && strlen(conv) <= MAX_ID_LEN)
        p->u.conversation_id = kl_arena_strdup(p->a, conv);
    const cJSON *us = member(r, "usage");
    if (cJSON_IsObject(us))
        responses_usage(p, us);
    const cJSON *out = member(r, "output");
    bool first = true;
    for (const cJSON *it = cJSON_IsArray(out) ? out->child : NULL; it; it = it->next) {
        bool call;
        const char *name = call_item_name(it, &call);
        if (!call)
            continue;
        if (first)
            reset_tools(p);
        first = false;
        add_tool_in(p, str_member(it, "namespace"), name);
    }
    const char *reason = str_member(member(r, "incomplete_details"), "reason");
    set_stop(p, reason ? reason : str_member(r, "status"));
}

/* A Responses call item's key in seen_slot: its output_index, else a hash
 * of its id or call_id (bit 62 set: never an index). False when it has
 * none of them, and each of its events is counted then (over, not under). */
static bool responses_call_key(const cJSON *root, const cJSON *it, uint64_t *key)
{
    const cJSON *oi = member(root, "output_index");
    if (cJSON_IsNumber(oi) && oi->valuedouble >= 0 && oi->valuedouble <= 4e9) {
        *key = (uint64_t)oi->valuedouble;
        return true;
    }
    const char *id = str_member(it, "id");
    if (!id)
        id = str_member(it, "call_id");
    *key = (id_hash(id) >> 2) | (UINT64_C(1) << 62);
    return id != NULL;
}

static void responses_event(kl_usage_parser *p, const cJSON *root, const char *type)
{
    if (!strcmp(type, "response.completed") || !strcmp(type, "response.incomplete") ||
        !strcmp(type, "response.failed")) {
        const cJSON *r = member(root, "response");
        if (cJSON_IsObject(r))
            responses_object(p, r);
    } else if (!strcmp(type, "response.output_item.added") || !strcmp(type, "response.output_item.done")) {
        /* counted once, at whichever of the two comes first (a stream of
         * .done events alone is where clients such as Codex take calls
         * from); checked each time */
        const cJSON *it = member(root, "item");
        bool call;
        const char *name = call_item_name(it, &call);
        const char *item_id = str_member(it, "id");
        uint64_t key, *slot_id, id = id_hash(item_id ? item_id : str_member(it, "call_id"));
        if (!call)
            return;
        if (!responses_call_key(root, it, &key)) {
            add_tool_in(p, str_member(it, "namespace"), name);
        } else if (!seen_slot(p, key, &slot_id, NULL) || (id && *slot_id && id != *slot_id)) {
            /* a new item, or another item at the same output_index with
             * its own id: the SDKs keep each item added as its own */
            add_tool_in(p, str_member(it, "namespace"), name);
            *slot_id = id;
        } else {
            tool_named(p, str_member(it, "namespace"), name);
        }
    } else if (!strcmp(type, "response.created") || !strcmp(type, "response.in_progress")) {
        set_model(p, str_member(member(root, "response"), "model"));
    } else if (!strcmp(type, "error")) {
        set_stop(p, "error");
    }
}

/* The same for a Responses event: the text of a ".delta" event (output
 * text, call arguments, a reasoning summary ...; not audio, which is
 * base64). An answer that reasons is noted as its reasoning item starts:
 * it bills its reasoning whether or not it shows a summary of it. */
static size_t responses_delta_bytes(kl_usage_parser *p, const char *ev, size_t evl, const char *d, size_t n)
{
    static const char *const keys[] = {"delta"};
    bool delta;
    if (evl) {
        if (memmem(ev, evl, "reasoning", 9) ||
            (name_is(ev, evl, "response.output_item.added") && has_type(d, n, "reasoning")))
            p->thinking = true;
        delta = evl > 6 && !memcmp(ev + evl - 6, ".delta", 6) &&
                !(evl >= 11 && !memcmp(ev + evl - 11, "audio.delta", 11));
    } else {
        if (type_is(d, n, "response.reasoning", true) || has_type(d, n, "reasoning"))
            p->thinking = true;
        delta = has(d, n, ".delta\"") && !has(d, n, "audio.delta\"");
    }
    return delta ? member_bytes(d, n, keys, 1, NULL) : 0;
}

static bool responses_event_wanted(const kl_usage_parser *p, const char *ev, size_t evl,
                                   const char *d, size_t n)
{
    if (evl) {
        if (name_is(ev, evl, "response.completed") || name_is(ev, evl, "response.incomplete") ||
            name_is(ev, evl, "response.failed") || name_is(ev, evl, "error"))
            return true;
        if (name_is(ev, evl, "response.output_item.added") || name_is(ev, evl, "response.output_item.done"))
            return has(d, n, "_call\"");
        if (name_is(ev, evl, "response.created") || name_is(ev, evl, "response.in_progress"))
            return !p->u.model_served;
        return false;
    }
    return has(d, n, "\"response.completed\"") || has(d, n, "\"response.incomplete\"") ||
           has(d, n, "\"response.failed\"") || has_type(d, n, "error") ||
           ((has(d, n, "\"response.output_item.added\"") || has(d, n, "\"response.output_item.done\"")) &&
            has(d, n, "_call\"")) ||
           (!p->u.model_served && has(d, n, "\"response.created\""));
}

/* Bedrock's four counts (input without the cached tokens, output, cache
 * read, cache write), named one way in Converse's usage and another in
 * InvokeModel's invocationMetrics. */
static void bedrock_counts(kl_usage_parser *p, const cJSON *o, const char *const keys[4])
{
    if (!cJSON_IsObject(o))
        return;
    p->u.input = count(o, keys[0]);
    p->u.output = count(o, keys[1]);
    p->u.cache_read = count(o, keys[2]);
    p->u.cache_write = count(o, keys[3]);
    p->u.known = true;
    p->u.final = true; /* Converse's metadata event, InvokeModel's last chunk: both end the stream */
}

/* Bedrock's own counts for any model family: the last chunk of an
 * InvokeModel stream carries them. Anthropic's usage, when the chunks had
 * it, is the same and finer (the 1-hour cache writes). */
static void bedrock_metrics(kl_usage_parser *p, const cJSON *m)
{
    static const char *const keys[] = {"inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount",
                                       "cacheWriteInputTokenCount"};
    if (!p->u.known)
        bedrock_counts(p, m, keys);
}

/* Chat, Anthropic and Gemini streams report usage as they go (vLLM's chat
 * chunks, Anthropic's message_start, every Gemini chunk): the counts are
 * the last word once the answer has said why it stopped, unless that was
 * an error. */
static bool stopped_by_error(const kl_usage_parser *p)
{
    return p->u.stop_reason && strcmp(p->u.stop_reason, "error") == 0;
}

static void note_final(kl_usage_parser *p)
{
    if (p->u.known && p->u.stop_reason && !stopped_by_error(p) && (p->cands_done & p->cands_seen) == p->cands_seen)
        p->u.final = true;
}

/* ---- Anthropic Messages ---- */

/* The bytes of text, thinking or tool input one content_block_delta
 * carries: what a stream cut short before its message_delta is estimated
 * from (kl_usage_settle). A thinking block (plain or redacted) is noted
 * as it starts: what it streams is a summary of what it bills. */
static size_t anthropic_delta_bytes(kl_usage_parser *p, const char *ev, size_t evl, const char *d, size_t n)
{
    static const char *const keys[] = {"text", "partial_json", "thinking"};
    if (evl ? !name_is(ev, evl, "content_block_delta") : !has(d, n, "\"content_block_delta\"")) {
        if ((evl ? name_is(ev, evl, "content_block_start") : has(d, n, "\"content_block_start\"")) &&
            (has(d, n, "\"thinking\"") || has(d, n, "\"redacted_thinking\"")))
            p->thinking = true; /* from its start: the summary's first delta may be long in coming */
        return 0;
    }
    unsigned met = 0;
    size_t bytes = member_bytes(d, n, keys, 3, &met);
    if (met & 4)
        p->thinking = true;
    return bytes;
}

/* A count a message_delta repeats: the larger of it and the one before.
 * Anthropic's message_delta says the input again (more of it after a
 * server tool's turns), but Anthropic-compatible servers (sglang) send 0
 * there, which must not wipe out the count message_start gave. */
static bool count_max(const cJSON *o, const char *key, int64_t *out)
{
    int64_t v = -1;
    if (!count_opt(o, key, &v))
        return false;
    if (v > *out)
        *out = v;
    return true;
}

/* Stream fields arrive in pieces (message_start, then message_delta which
 * may repeat them): the output keeps its latest non-null value (a running
 * total); the input side, in a delta, the largest. */
static void anthropic_usage(kl_usage_parser *p, const cJSON *us, bool delta)
{
    bool (*in)(const cJSON *, const char *, int64_t *) = delta ? count_max : count_opt;
    bool any = in(us, "input_tokens", &p->an_in);
    any |= in(us, "cache_read_input_tokens", &p->an_cr);
    any |= in(us, "cache_creation_input_tokens", &p->an_cw);
    const cJSON *cc = member(us, "cache_creation");
    if (cJSON_IsObject(cc))
        in(cc, "ephemeral_1h_input_tokens", &p->an_cw1h);
    any |= count_opt(us, "output_tokens", &p->an_out);
    if (!any && !p->u.known && p->bedrock)
        return; /* a "usage" of another shape (Nova's on Bedrock): Bedrock's own counts stand in */
    p->u.input = p->an_in > 0 ? p->an_in : 0;
    p->u.cache_read = p->an_cr > 0 ? p->an_cr : 0;
    p->u.cache_write = p->an_cw > 0 ? p->an_cw : 0;
    p->u.cache_write_1h = p->an_cw1h > 0 ? (p->an_cw1h < p->u.cache_write ? p->an_cw1h : p->u.cache_write) : 0;
    p->u.output = p->an_out > 0 ? p->an_out : 0;
    p->u.known = true;
}

static void anthropic_message(kl_usage_parser *p, const cJSON *m)
{
    set_model(p, str_member(m, "model"));
    const cJSON *us = member(m, "usage");
    if (cJSON_IsObject(us))
        anthropic_usage(p, us, false);
    const cJSON *content = member(m, "content");
    for (const cJSON *b = cJSON_IsArray(content) ? content->child : NULL; b; b = b->next) {
        const char *t = str_member(b, "type");
        if (t && !strcmp(t, "tool_use"))
            add_tool(p, str_member(b, "name"));
    }
    set_stop(p, str_member(m, "stop_reason"));
}

static void anthropic_event(kl_usage_parser *p, const cJSON *root, const char *type)
{
    if (!strcmp(type, "message_start")) {
        const cJSON *m = member(root, "message");
        if (cJSON_IsObject(m))
            anthropic_message(p, m);
    } else if (!strcmp(type, "message_delta")) {
        const cJSON *us = member(root, "usage");
        if (cJSON_IsObject(us))
            anthropic_usage(p, us, true);
        set_stop(p, str_member(member(root, "delta"), "stop_reason"));
    } else if (!strcmp(type, "content_block_start")) {
        const cJSON *b = member(root, "content_block");
        const char *t = str_member(b, "type");
        if (t && !strcmp(t, "tool_use"))
            add_tool(p, str_member(b, "name"));
    } else if (!strcmp(type, "error")) {
        set_stop(p, "error");
    }
}

static bool anthropic_event_wanted(const char *ev, size_t evl, const char *d, size_t n)
{
    if (evl) {
        if (name_is(ev, evl, "message_start") || name_is(ev, evl, "message_delta") ||
            name_is(ev, evl, "error"))
            return true;
        return name_is(ev, evl, "content_block_start") && has(d, n, "\"tool_use\"");
    }
    return has(d, n, "\"message_start\"") || has(d, n, "\"message_delta\"") ||
           has_type(d, n, "error") || has(d, n, "\"amazon-bedrock-invocationMetrics\"") ||
           (has(d, n, "\"content_block_start\"") && has(d, n, "\"tool_use\""));
}

void kl_usage_counts(kl_usage_parser *p, int64_t input, int64_t output, int64_t cache_read, int64_t cache_write)
{
    if (p->u.known || p->kind == KL_USAGE_COUNT_ONLY)
        return;
    p->u.input = clamp_tokens((double)input);
    p->u.output = clamp_tokens((double)output);
    p->u.cache_read = clamp_tokens((double)cache_read);
    p->u.cache_write = clamp_tokens((double)cache_write);
    p->u.known = true;
    p->u.final = true;
}

void kl_usage_bedrock(kl_usage_parser *p)
{
    p->bedrock = true;
}

void kl_usage_unreadable(kl_usage_parser *p, const char *what)
{
    if (p->strict)
        ambiguous(p, what);
}

/* ---- Bedrock Converse ---- */

static void converse_usage(kl_usage_parser *p, const cJSON *us)
{
    static const char *const keys[] = {"inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"};
    bedrock_counts(p, us, keys);
    /* the cache writes made for an hour (priced at cache_write_1h):
     * cacheDetails [{"ttl": "1h", "inputTokens": n}, ...] */
    const cJSON *d = member(us, "cacheDetails");
    int64_t h = 0;
    for (const cJSON *e = cJSON_IsArray(d) ? d->child : NULL; e; e = e->next) {
        const char *ttl = str_member(e, "ttl");
        if (ttl && !strcmp(ttl, "1h"))
            h += count(e, "inputTokens");
    }
    p->u.cache_write_1h = h < p->u.cache_write ? h : p->u.cache_write;
}

static void converse_object(kl_usage_parser *p, const cJSON *root)
{
    converse_usage(p, member(root, "usage"));
    const cJSON *content = member(member(member(root, "output"), "message"), "content");
    for (const cJSON *b = cJSON_IsArray(content) ? content->child : NULL; b; b = b->next) {
        const cJSON *tu = member(b, "toolUse");
        if (cJSON_IsObject(tu))
            add_tool(p, str_member(tu, "name"));
    }
    set_stop(p, str_member(root, "stopReason"));
}

/* One ConverseStream event, named by its :event-type (or its exception's
 * :exception-type). */
static void converse_event(kl_usage_parser *p, const char *name, size_t n, const cJSON *root)
{
    if (name_is(name, n, "contentBlockStart")) {
        const cJSON *tu = member(member(root, "start"), "toolUse");
        if (cJSON_IsObject(tu))
            add_tool(p, str_member(tu, "name"));
    } else if (name_is(name, n, "messageStop")) {
        set_stop(p, str_member(root, "stopReason"));
    } else if (name_is(name, n, "metadata")) {
        converse_usage(p, member(root, "usage"));
    } else if (n > 9 && !memcmp(name + n - 9, "Exception", 9)) {
        set_stop(p, "error");
    }
}

/* The same for a ConverseStream event: a contentBlockDelta's text and
 * tool input; its reasoning is taken at the cap, as Anthropic's thinking
 * is (Claude 4 on Bedrock streams a summary of it). */
static size_t converse_delta_bytes(kl_usage_parser *p, const char *ev, size_t evl, const char *d, size_t n)
{
    static const char *const keys[] = {"text", "input"};
    if (!name_is(ev, evl, "contentBlockDelta"))
        return 0;
    if (has(d, n, "\"reasoningContent\""))
        p->thinking = true;
    return member_bytes(d, n, keys, 2, NULL);
}

static bool converse_event_wanted(const char *ev, size_t evl, const char *d, size_t n)
{
    return name_is(ev, evl, "messageStop") || name_is(ev, evl, "metadata") ||
           (evl > 9 && !memcmp(ev + evl - 9, "Exception", 9)) ||
           (name_is(ev, evl, "contentBlockStart") && has(d, n, "\"toolUse\""));
}

/* ---- Gemini ---- */

/* Each function call an answer's parts make. Vertex streams one call's
 * arguments in pieces when asked (streamFunctionCallArguments): its name
 * with willContinue, then parts with only partialArgs, the last an empty
 * functionCall; the SDKs join those into the call, which is one. */
static void gemini_candidates(kl_usage_parser *p, const cJSON *cands)
{
    uint32_t ci = 0;
    for (const cJSON *c = cJSON_IsArray(cands) ? cands->child : NULL; c; c = c->next, ci++) {
        p->choice = index_of(c, ci);
        uint64_t bit = (uint64_t)1 << (p->choice < 63 ? p->choice : 63);
        const cJSON *parts = member(member(c, "content"), "parts");
        for (const cJSON *pt = cJSON_IsArray(parts) ? parts->child : NULL; pt; pt = pt->next) {
            const cJSON *fc = member(pt, "functionCall");
            if (!fc)
                fc = member(pt, "function_call"); /* proto JSON accepts either spelling */
            if (!cJSON_IsObject(fc))
                continue;
            const char *name = str_member(fc, "name");
            const cJSON *more = member(fc, "willContinue");
            if (!more)
                more = member(fc, "will_continue");
            if (!name && (p->cands_calling & bit)) { /* a piece of the call begun before */
                if (!cJSON_IsTrue(more))
                    p->cands_calling &= ~bit;
                continue;
            }
            add_tool(p, name);
            if (cJSON_IsTrue(more))
                p->cands_calling |= bit;
            else
                p->cands_calling &= ~bit;
        }
        set_stop(p, str_member(c, "finishReason"));
    }
    p->choice = 0;
}

static cJSON *parse_span(const char *s, const struct kl_json_want *w)
{
    return w->end ? cJSON_ParseWithLength(s + w->start, w->end - w->start) : NULL;
}

/* A token count written as a JSON number; false for anything else. */
static bool span_count(const char *s, const struct kl_json_want *w, int64_t *out)
{
    if (!w->end)
        return false;
    const char *v = s + w->start;
    size_t n = w->end - w->start;
    int64_t x = 0;
    size_t i = 0;
    for (; i < n && v[i] >= '0' && v[i] <= '9'; i++)
        x = x < MAX_TOKENS ? x * 10 + (v[i] - '0') : MAX_TOKENS;
    if (i == n && n > 0) {
        *out = x < MAX_TOKENS ? x : MAX_TOKENS;
        return true;
    }
    /* rare spellings (-3, 1.5e3): let strtod judge */
    char buf[40];
    if (n >= sizeof(buf) || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')))
        return false;
    memcpy(buf, v, n);
    buf[n] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (*end)
        return false;
    *out = clamp_tokens(d);
    return true;
}

/* What a Gemini chunk's candidates carried: the text of its parts
 * (thoughts included), as decoded, and the arguments of its function
 * calls, as written. Gemini reports its output only in a stream's last
 * chunk: a stream cut before that is charged at least this
 * (kl_usage_settle), as Anthropic's is charged its deltas. */
static size_t gemini_text_bytes(const char *s, size_t n)
{
    static const char *const keys[] = {"text", "args"};
    return member_bytes(s, n, keys, 2, NULL);
}

/* Which candidates a chunk shows, and which of them stop there (by the
 * scanner: most chunks are text, whose tree is not built). */
static void gemini_candidates_seen(kl_usage_parser *p, const char *cs, size_t cn)
{
    size_t pos = 0, vs, ve;
    struct kl_json_want w[] = {{.key = "index"}, {.key = "finishReason"}};
    while (cn && kl_json_array_next(cs, cn, &pos, &vs, &ve, w, 2)) {
        int64_t index = 0; /* proto3 JSON may leave out an index of 0 */
        struct kl_json_want at = {.start = vs + w[0].start, .end = w[0].end ? vs + w[0].end : 0};
        span_count(cs, &at, &index);
        uint64_t bit = (uint64_t)1 << (index < 63 ? index : 63);
        p->cands_seen |= bit;
        if (w[1].end && cs[vs + w[1].start] == '"')
            p->cands_done |= bit;
    }
}

/* usageMetadata holds cumulative counts and omits zero fields (proto3):
 * each one replaces the previous as a whole. Read by scanning, not with
 * cJSON: it comes with every stream chunk, and its detail arrays make a
 * tree costlier than the rest of the work for that chunk. */
static void gemini_usage(kl_usage_parser *p, const char *s, const struct kl_json_want *um)
{
    struct kl_json_want f[] = {{.key = "promptTokenCount"}, {.key = "cachedContentTokenCount"},
                       {.key = "toolUsePromptTokenCount"}, {.key = "candidatesTokenCount"},
                       {.key = "thoughtsTokenCount"}};
    const char *o = s + um->start;
    kl_json_scan_members(o, um->end - um->start, f, sizeof(f) / sizeof(f[0]));
    int64_t v[5] = {0};
    bool any = false;
    for (size_t i = 0; i < 5; i++)
        any |= span_count(o, &f[i], &v[i]);
    /* one with no count at all (Vertex may send {"trafficType": ...} alone
     * in a stream's chunks) says nothing of what was used so far */
    if (!any)
        return;
    p->u.input = sub0(v[0], v[1]) + v[2];
    p->u.tool_prompt = v[2];
    p->u.cache_read = v[1];
    p->u.cache_write = 0;
    p->u.output = v[3] + v[4];
    p->u.reasoning = v[4];
    p->u.known = true;
}

/* One GenerateContentResponse (a whole body, an SSE event or an array
 * element), with its tree when strict mode parsed it already. Every stream chunk carries usage, so rather than building the
 * tree of a chunk that is mostly text, only the members that matter are
 * looked at, and candidates are parsed only when they hold a function call
 * or a finish reason. */
static void gemini_object(kl_usage_parser *p, const char *s, size_t len, const cJSON *tree)
{
    struct kl_json_want w[] = {{.key = "usageMetadata"}, {.key = "modelVersion"}, {.key = "candidates"},
                       {.key = "promptFeedback"}, {.key = "error"}};
    kl_json_scan_members(s, len, w, sizeof(w) / sizeof(w[0]));
    if (!p->u.answered && w[2].end && has(s + w[2].start, w[2].end - w[2].start, "\"parts\""))
        p->u.answered = true;
    if (w[2].end)
        p->text_bytes += (int64_t)gemini_text_bytes(s + w[2].start, w[2].end - w[2].start);

    if (w[0].end && s[w[0].start] == '{')
        gemini_usage(p, s, &w[0]);
    cJSON *j;
    if (!p->u.model_served && w[1].end) {
        j = parse_span(s, &w[1]);
        if (cJSON_IsString(j) && j->valuestring[0])
            set_model(p, j->valuestring);
        cJSON_Delete(j);
    }
    const char *cs = s + w[2].start;
    size_t cn = w[2].end - w[2].start;
    gemini_candidates_seen(p, cs, w[2].end ? cn : 0);
    if (tree) {
        /* strict: the calls from the tree, which decoded any escaped key */
        gemini_candidates(p, member(tree, "candidates"));
    } else if (w[2].end && (has(cs, cn, "\"functionCall\"") || has(cs, cn, "\"finishReason\"") ||
                            kl_decode_word_escaped(cs, cn))) {
        j = parse_span(s, &w[2]);
        gemini_candidates(p, j);
        cJSON_Delete(j);
    }
    if (w[3].end && !p->u.stop_reason) {
        j = parse_span(s, &w[3]);
        set_stop(p, str_member(j, "blockReason"));
        cJSON_Delete(j);
    }
    if (w[4].end && s[w[4].start] == '{')
        set_stop(p, "error");
    note_final(p);
}

/* The text of the JSON string the scanner found at w, in buf (at most
 * cap - 1 bytes, as the callers cap it anyway): a string without escapes,
 * the usual case, is its own bytes; one with escapes is decoded by cJSON.
 * NULL when w is not a non-empty string. */
static const char *span_text(const char *s, const struct kl_json_want *w, char *buf, size_t cap)
{
    if (!w->end || s[w->start] != '"' || w->end - w->start < 3)
        return NULL;
    const char *v = s + w->start + 1, *t = v;
    size_t n = w->end - w->start - 2;
    cJSON *j = NULL;
    if (memchr(v, '\\', n)) {
        j = parse_span(s, w);
        t = str_member(j, NULL);
        n = t ? strlen(t) : 0;
    }
    if (n >= cap)
        n = cap - 1;
    if (t)
        memcpy(buf, t, n);
    buf[n] = '\0';
    cJSON_Delete(j);
    return t && n ? buf : NULL;
}

/* Chat usage from the object the scanner found at w, as chat_usage reads
 * it from a tree. */
static void chat_usage_scan(kl_usage_parser *p, const char *s, const struct kl_json_want *w)
{
    struct kl_json_want f[] = {{.key = "prompt_tokens"}, {.key = "completion_tokens"},
                               {.key = "prompt_tokens_details"}, {.key = "completion_tokens_details"}};
    struct kl_json_want pd[] = {{.key = "cached_tokens"}, {.key = "cache_write_tokens"}};
    struct kl_json_want cd = {.key = "reasoning_tokens"};
    const char *o = s + w->start;
    kl_json_scan_members(o, w->end - w->start, f, sizeof(f) / sizeof(f[0]));
    if (f[2].end && o[f[2].start] == '{')
        kl_json_scan_members(o + f[2].start, f[2].end - f[2].start, pd, 2);
    if (f[3].end && o[f[3].start] == '{')
        kl_json_scan_members(o + f[3].start, f[3].end - f[3].start, &cd, 1);
    int64_t prompt = 0, cached = 0, written = 0, reasoning = 0;
    span_count(o, &f[0], &prompt);
    span_count(o + f[2].start, &pd[0], &cached);
    span_count(o + f[2].start, &pd[1], &written);
    span_count(o + f[3].start, &cd, &reasoning);
    p->u.output = 0;
    span_count(o, &f[1], &p->u.output);
    p->u.input = sub0(sub0(prompt, cached), written);
    p->u.cache_read = cached;
    p->u.cache_write = written;
    p->u.reasoning = reasoning;
    p->u.known = true;
}

/* A whole chat.completion without tool calls (most answers), or a stream's
 * chunk without them: the model, usage and finish reasons are found with
 * the byte scanner, without a cJSON tree (cJSON only decodes a string that
 * holds escapes). */
static void chat_whole_scan(kl_usage_parser *p, const char *s, size_t len)
{
    struct kl_json_want w[] = {{.key = "model"}, {.key = "usage"}, {.key = "error"}, {.key = "choices"}};
    if (kl_json_scan_members(s, len, w, sizeof(w) / sizeof(w[0])) < 0)
        return;
    char text[MAX_MODEL_LEN + 1];
    set_model(p, span_text(s, &w[0], text, sizeof(text)));
    if (w[1].end && s[w[1].start] == '{')
        chat_usage_scan(p, s, &w[1]);
    if (w[2].end && s[w[2].start] == '{')
        set_stop(p, "error");
    const char *cs = s + w[3].start;
    size_t cn = w[3].end - w[3].start, pos = 0, vs, ve;
    struct kl_json_want fr = {.key = "finish_reason"};
    while (w[3].end && kl_json_array_next(cs, cn, &pos, &vs, &ve, &fr, 1)) {
        if (!fr.end)
            continue;
        struct kl_json_want at = {.start = vs + fr.start, .end = vs + fr.end};
        set_stop(p, span_text(cs, &at, text, sizeof(text)));
    }
}

/* An embeddings answer: megabytes of vectors around two members that
 * matter, read by the scanner (a cJSON tree of a batch's vectors cost tens
 * of milliseconds). */
static void embeddings_scan(kl_usage_parser *p, const char *s, size_t len)
{
    struct kl_json_want w[] = {{.key = "model"}, {.key = "usage"}};
    if (kl_json_scan_members(s, len, w, 2) < 0)
        return;
    char text[MAX_MODEL_LEN + 1];
    set_model(p, span_text(s, &w[0], text, sizeof(text)));
    if (!w[1].end || s[w[1].start] != '{')
        return;
    struct kl_json_want pt = {.key = "prompt_tokens"};
    const char *us = s + w[1].start;
    kl_json_scan_members(us, w[1].end - w[1].start, &pt, 1);
    int64_t input = 0;
    span_count(us, &pt, &input);
    p->u.input = input;
    p->u.known = true;
}

/* ---- dispatch ---- */

static void whole_object(kl_usage_parser *p, const char *body, size_t len)
{
    if (p->kind == KL_USAGE_COUNT_ONLY)
        return;
    cJSON *tree = NULL; /* strict: parsed once, here */
    if (p->strict && !(tree = strict_parse(p, body, len)))
        return;
    if (p->kind == KL_USAGE_GEMINI) {
        gemini_object(p, body, len, tree);
        cJSON_Delete(tree);
        return;
    }
    if (p->kind == KL_USAGE_OPENAI_CHAT && !p->strict && !has_call_name(body, len) &&
        !kl_decode_word_escaped(body, len)) {
        chat_whole_scan(p, body, len);
        return;
    }
    if (p->kind == KL_USAGE_OPENAI_EMBEDDINGS) {
        cJSON_Delete(tree);
        embeddings_scan(p, body, len);
        return;
    }
    cJSON *root = tree ? tree : cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    switch (p->kind) {
    case KL_USAGE_OPENAI_CHAT:
        chat_object(p, root, false);
        break;
    case KL_USAGE_OPENAI_RESPONSES:
        responses_object(p, root);
        break;
    case KL_USAGE_ANTHROPIC:
        anthropic_message(p, root);
        break;
    case KL_USAGE_BEDROCK_CONVERSE:
        converse_object(p, root);
        break;
    default:
        break;
    }
    cJSON_Delete(root);
}

kl_usage_parser *kl_usage_parser_new(kl_arena *a, enum kl_usage_kind kind)
{
    kl_usage_parser *p = kl_arena_alloc(a, sizeof(*p));
    p->a = a;
    p->kind = kind;
    p->an_in = p->an_cr = p->an_cw = p->an_cw1h = p->an_out = -1;
    p->u.known = p->u.final = kind == KL_USAGE_COUNT_ONLY;
    return p;
}

void kl_usage_on_tool(kl_usage_parser *p, void (*fn)(void *, const char *, const char *), void *arg)
{
    p->on_tool = fn;
    p->on_tool_arg = arg;
    p->strict = true;
}

void kl_usage_on_joined_name(kl_usage_parser *p, void (*fn)(void *, const char *))
{
    p->on_joined = fn;
}

const char *kl_usage_ambiguity(const kl_usage_parser *p)
{
    return p->ambiguous;
}

int kl_usage_kind_for(enum kl_endpoint ep)
{
    switch (ep) {
    case KL_EP_CHAT:
        return KL_USAGE_OPENAI_CHAT;
    case KL_EP_RESPONSES:
        return KL_USAGE_OPENAI_RESPONSES;
    case KL_EP_EMBEDDINGS:
        return KL_USAGE_OPENAI_EMBEDDINGS;
    case KL_EP_MESSAGES:
    case KL_EP_BEDROCK_INVOKE:
    case KL_EP_BEDROCK_INVOKE_STREAM:
        return KL_USAGE_ANTHROPIC;
    case KL_EP_BEDROCK_CONVERSE:
    case KL_EP_BEDROCK_CONVERSE_STREAM:
        return KL_USAGE_BEDROCK_CONVERSE;
    case KL_EP_GEMINI_GENERATE:
    case KL_EP_GEMINI_STREAM:
        return KL_USAGE_GEMINI;
    case KL_EP_COUNT_TOKENS:
    case KL_EP_GEMINI_COUNT:
    case KL_EP_BEDROCK_COUNT:
        return KL_USAGE_COUNT_ONLY;
    default:
        return -1;
    }
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (unsigned char)s[i] <= 0x20)
        i++;
    return i;
}

void kl_usage_whole(kl_usage_parser *p, const char *body, size_t len)
{
    if (!body)
        return;
    size_t i = skip_ws(body, len, 0);
    if (p->kind == KL_USAGE_GEMINI && i < len && body[i] == '[') {
        memset(&p->arr, 0, sizeof(p->arr));
        kl_usage_array_bytes(p, body, len);
    } else {
        whole_object(p, body, len);
    }
    p->u.final = p->u.known; /* a whole answer's usage is its last word */
    /* one that ended in an error (a Responses answer "failed", a chat
     * body with an error member) still served what it says it generated */
    if (p->u.known && p->u.output > 0)
        p->u.answered = true;
}

/* Does this event carry some of the answer (kl_usage.answered)? By its
 * name where the dialect names its events, else by its bytes. */
static bool event_answers(enum kl_usage_kind kind, const char *ev, size_t evl, const char *d, size_t n)
{
    switch (kind) {
    case KL_USAGE_OPENAI_CHAT:
        return chat_answers(d, n);
    case KL_USAGE_OPENAI_RESPONSES:
        if (evl)
            return name_is(ev, evl, "response.output_item.added") ||
                   (evl > 6 && memcmp(ev + evl - 6, ".delta", 6) == 0);
        return has(d, n, "\"response.output_item.added\"") || has(d, n, ".delta\"");
    case KL_USAGE_ANTHROPIC:
        if (evl)
            return name_is(ev, evl, "content_block_start") || name_is(ev, evl, "content_block_delta");
        return has(d, n, "\"content_block_start\"") || has(d, n, "\"content_block_delta\"");
    case KL_USAGE_BEDROCK_CONVERSE:
        return name_is(ev, evl, "contentBlockStart") || name_is(ev, evl, "contentBlockDelta");
    default:
        return false; /* Gemini's: gemini_object, which SSE events and array elements both reach */
    }
}

/* Is ev a name this dialect gives its events? A gateway may name every
 * event alike ("event: message", SSE's default), or write a blank after
 * the name, and the SDKs read the data's own "type" all the same: such a
 * name says nothing of the event, which is judged by its data, as one
 * without a name is. */
static bool dialect_event_name(enum kl_usage_kind kind, const char *ev, size_t n)
{
    static const char *const anthropic[] = {"message_start", "message_delta", "message_stop", "content_block_start",
                                            "content_block_delta", "content_block_stop", "ping", "error"};
    if (kind == KL_USAGE_OPENAI_RESPONSES)
        return (n > 9 && !memcmp(ev, "response.", 9) && !memchr(ev, ' ', n) && !memchr(ev, '\t', n)) ||
               name_is(ev, n, "error");
    if (kind != KL_USAGE_ANTHROPIC)
        return true;
    for (size_t i = 0; i < sizeof(anthropic) / sizeof(anthropic[0]); i++)
        if (name_is(ev, n, anthropic[i]))
            return true;
    return false;
}

static void read_event(kl_usage_parser *p, const char *event, size_t event_len, const char *data,
                       size_t data_len)
{
    if (!data || p->kind == KL_USAGE_COUNT_ONLY)
        return;
    if (!event || !dialect_event_name(p->kind, event, event_len))
        event_len = 0;
    size_t i = skip_ws(data, data_len, 0);
    if (data_len - i >= 6 && memcmp(data + i, "[DONE]", 6) == 0)
        p->ended = true;
    if (i >= data_len || data[i] != '{')        /* [DONE], keep-alives, junk */
        return;
    const char *d = data + i;
    size_t n = data_len - i;
    if (!p->u.answered)
        p->u.answered = event_answers(p->kind, event, event_len, d, n);
    bool full = p->strict && !(p->kind == KL_USAGE_OPENAI_CHAT && chat_chunk_without_calls(d, n));
    cJSON *tree = NULL; /* full: parsed once, here */
    if (full && !(tree = strict_parse(p, d, n)))
        return;
    /* Outside strict mode too, an event whose words may be escaped is read
     * whole (with cJSON, below) rather than filtered by its bytes. */
    if (!full && !p->strict && kl_decode_word_escaped(d, n))
        full = true;

    /* full: no event is skipped for looking uninteresting */
    switch (p->kind) {
    case KL_USAGE_GEMINI:
        gemini_object(p, d, n, tree);
        cJSON_Delete(tree);
        return;
    case KL_USAGE_OPENAI_CHAT:
        /* run in full too: it counts the chunk's text */
        if (!chat_event_wanted(p, d, n) && !full)
            return;
        if (!full && chat_chunk_without_calls(d, n)) {
            chat_whole_scan(p, d, n); /* what chat_object would read of it, without a tree */
            return;
        }
        break;
    case KL_USAGE_OPENAI_RESPONSES:
        p->text_bytes += (int64_t)responses_delta_bytes(p, event, event_len, d, n);
        if (!full && !responses_event_wanted(p, event, event_len, d, n))
            return;
        break;
    case KL_USAGE_ANTHROPIC:
        p->text_bytes += (int64_t)anthropic_delta_bytes(p, event, event_len, d, n);
        if (event_len ? name_is(event, event_len, "message_stop") : has(d, n, "\"message_stop\""))
            p->ended = true;
        if (!full && !anthropic_event_wanted(event, event_len, d, n))
            return;
        break;
    case KL_USAGE_BEDROCK_CONVERSE:
        p->text_bytes += (int64_t)converse_delta_bytes(p, event, event_len, d, n);
        if (!full && !converse_event_wanted(event, event_len, d, n))
            return;
        break;
    default:
        cJSON_Delete(tree);
        whole_object(p, d, n);
        return;
    }

    cJSON *root = tree ? tree : cJSON_ParseWithLength(d, n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    if (p->kind == KL_USAGE_OPENAI_CHAT) {
        chat_object(p, root, true);
    } else if (p->kind == KL_USAGE_BEDROCK_CONVERSE) {
        converse_event(p, event ? event : "", event_len, root);
    } else {
        /* the data's own "type" names the event; the SSE name is the fallback */
        const char *type = str_member(root, "type");
        char name[64];
        if (!type && event_len && event_len < sizeof(name)) {
            memcpy(name, event, event_len);
            name[event_len] = '\0';
            type = name;
        }
        if (type && p->kind == KL_USAGE_OPENAI_RESPONSES)
            responses_event(p, root, type);
        else if (type)
            anthropic_event(p, root, type);
        /* an InvokeModel stream's last chunk, whatever the model family
         * (Llama's, Mistral's chunks have no "type") */
        if (p->bedrock)
            bedrock_metrics(p, member(root, "amazon-bedrock-invocationMetrics"));
    }
    cJSON_Delete(root);
}

void kl_usage_event(kl_usage_parser *p, const char *event, size_t event_len, const char *data, size_t data_len)
{
    read_event(p, event, event_len, data, data_len);
    note_final(p);
}

/* ---- the JSON-array splitter ---- */

static bool top_is_object(const struct arr_split *s)
{
    unsigned d = s->depth - 1;
    return s->stack[d / 8] >> (d % 8) & 1;
}

static bool push(struct arr_split *s, bool object)
{
    if (s->depth >= ARR_MAX_DEPTH)
        return false;
    unsigned d = s->depth++;
    if (object)
        s->stack[d / 8] |= (unsigned char)(1u << (d % 8));
    else
        s->stack[d / 8] &= (unsigned char)~(1u << (d % 8));
    return true;
}

static void elem_begin(struct arr_split *s)
{
    s->mode = ARR_ELEM;
    s->depth = 0;
    push(s, true);
    s->expect = EX_KEY_OR_CLOSE;
    s->in_str = s->esc = s->in_lit = false;
    s->skipping = false;
    s->len = 0;
}

static void keep(kl_usage_parser *p, const char *d, size_t n)
{
    struct arr_split *s = &p->arr;
    if (s->skipping || n == 0)
        return;
    if (n > KL_USAGE_MAX_ELEMENT - s->len) {
        s->skipping = true;
        s->len = 0;
        if (p->strict)
            ambiguous(p, "an array element larger than 16 MiB");
        return;
    }
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        while (cap < s->len + n)
            cap *= 2;
        char *b = kl_arena_alloc(p->a, cap);
        if (s->len)
            memcpy(b, s->buf, s->len);
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, d, n);
    s->len += n;
}

static bool is_lit_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '.' || c == '+' || c == '-';
}

/* One byte inside an element. Returns 1 when the element just closed, 0 to
 * go on, -1 on a syntax error. Strings are handled by the caller's fast
 * path; this sees their opening quote only. */
static int elem_byte(struct arr_split *s, char c)
{
    if (s->in_lit) {
        if (is_lit_char(c))
            return 0;
        s->in_lit = false;
        s->expect = EX_COMMA_OR_CLOSE;
    }
    if ((unsigned char)c <= 0x20)
        return 0;
    switch (s->expect) {
    case EX_VALUE:
    case EX_VALUE_OR_CLOSE:
        if (c == '{') {
            s->expect = EX_KEY_OR_CLOSE;
            return push(s, true) ? 0 : -1;
        }
        if (c == '[') {
            s->expect = EX_VALUE_OR_CLOSE;
            return push(s, false) ? 0 : -1;
        }
        if (c == '"') {
            s->in_str = true;
            s->str_is_key = false;
            return 0;
        }
        if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
            s->in_lit = true;
            return 0;
        }
        if (c == ']' && s->expect == EX_VALUE_OR_CLOSE)
            break;              /* close below */
        return -1;
    case EX_KEY_OR_CLOSE:
    case EX_KEY:
        if (c == '"') {
            s->in_str = true;
            s->str_is_key = true;
            return 0;
        }
        if (c == '}' && s->expect == EX_KEY_OR_CLOSE)
            break;
        return -1;
    case EX_COLON:
        if (c != ':')
            return -1;
        s->expect = EX_VALUE;
        return 0;
    case EX_COMMA_OR_CLOSE:
        if (c == ',') {
            s->expect = top_is_object(s) ? EX_KEY : EX_VALUE;
            return 0;
        }
        if ((c == '}' && top_is_object(s)) || (c == ']' && !top_is_object(s)))
            break;
        return -1;
    }
    /* c closes the innermost container */
    if ((c == '}') != top_is_object(s))
        return -1;
    s->depth--;
    s->expect = EX_COMMA_OR_CLOSE;
    return s->depth == 0 ? 1 : 0;
}

void kl_usage_array_bytes(kl_usage_parser *p, const char *data, size_t len)
{
    struct arr_split *s = &p->arr;
    size_t run = 0;             /* where this call's part of the current element starts */
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        switch (s->mode) {
        case ARR_START:
            if ((unsigned char)c <= 0x20)
                continue;
            if (c == '[') {
                s->mode = ARR_NEXT;
            } else if (c == '{') {      /* a bare object: read it as one element */
                elem_begin(s);
                run = i;
            } else {
                s->mode = ARR_RESYNC;
                s->resync_comma = false;
            }
            continue;
        case ARR_NEXT:
        case ARR_AFTER:
            if ((unsigned char)c <= 0x20)
                continue;
            if (c == '{' && s->mode == ARR_NEXT) {
                elem_begin(s);
                run = i;
            } else if (c == ',' && s->mode == ARR_AFTER) {
                s->mode = ARR_NEXT;
            } else if (c == ']') {
                s->mode = ARR_START;    /* the end; a following '[' starts over */
            } else {
                s->mode = ARR_RESYNC;
                s->resync_comma = c == ',';
            }
            continue;
        case ARR_RESYNC:
            if (p->strict) /* what was skipped could be read by the caller */
                ambiguous(p, "a stream array that is not JSON");
            if (c == ',') {
                s->resync_comma = true;
            } else if (c == '{' && s->resync_comma) {
                elem_begin(s);
                run = i;
            } else if ((unsigned char)c > 0x20) {
                s->resync_comma = false;
            }
            continue;
        case ARR_ELEM:
            break;
        }

        if (s->in_str) {
            /* fast path through string bytes */
            for (; i < len; i++) {
                c = data[i];
                if (s->esc) {
                    s->esc = false;
                } else if (c == '\\') {
                    s->esc = true;
                } else if (c == '"') {
                    s->in_str = false;
                    s->expect = s->str_is_key ? EX_COLON : EX_COMMA_OR_CLOSE;
                    break;
                } else if ((unsigned char)c < 0x20) {
                    break;      /* raw control byte: invalid, handled below */
                }
            }
            if (i >= len)
                break;
            if (!s->in_str)
                continue;
            s->mode = ARR_RESYNC;
            s->resync_comma = false;
            continue;
        }
        int r = elem_byte(s, c);
        if (r == 0)
            continue;
        if (r < 0) {
            s->mode = ARR_RESYNC;
            s->resync_comma = c == ',';
            continue;
        }
        /* the element closed at i */
        if (!s->skipping) {
            if (s->len == 0) {
                whole_object(p, data + run, i + 1 - run);
            } else {
                keep(p, data + run, i + 1 - run);
                if (!s->skipping)
                    whole_object(p, s->buf, s->len);
            }
        }
        s->len = 0;
        s->mode = ARR_AFTER;
    }
    if (s->mode == ARR_ELEM)
        keep(p, data + run, len - run);
}

size_t kl_usage_array_pending(const kl_usage_parser *p)
{
    return p->arr.mode == ARR_ELEM ? p->arr.len : 0;
}

void kl_usage_settle(kl_usage_parser *p, int64_t bytes_per_token, int64_t max_output, bool complete)
{
    if (!p->u.known)
        return;
    /* a stop reason made it final already (note_final); without one,
     * what a stream that ended as it should reported is its last word
     * (some send none), if its own end marker went by (a body that ends
     * when the connection closes looks whole to the transport however it
     * ended) and it was no error event (a provider sends one in a 200
     * stream that then ends cleanly) */
    if (complete && p->ended && !stopped_by_error(p))
        p->u.final = true;
    if (p->u.final)
        return;
    p->u.partial = true;
    int64_t bpt = bytes_per_token > 0 ? bytes_per_token : 1;
    int64_t carried = (p->text_bytes + bpt - 1) / bpt;
    /* Claude 4 models stream a summary of their thinking and bill all of
     * it: nothing in the stream bounds that but the cap */
    if (p->thinking && max_output > 0)
        carried = max_output;
    if (max_output > 0 && carried > max_output)
        carried = max_output; /* the provider was held to it: no more can have been made */
    if (carried > p->u.output)
        p->u.output = carried;
}

void kl_usage_assume_prompt(kl_usage_parser *p, int64_t prompt_tokens, bool reasons)
{
    if (p->u.known || !(p->kind == KL_USAGE_OPENAI_CHAT || p->kind == KL_USAGE_OPENAI_RESPONSES ||
                        p->kind == KL_USAGE_BEDROCK_CONVERSE))
        return;
    p->u.input = prompt_tokens > 0 ? prompt_tokens : 0;
    p->u.known = true;
    if (reasons)
        p->thinking = true;
}

const struct kl_usage *kl_usage_result(const kl_usage_parser *p)
{
    return &p->u;
}

int64_t kl_usage_prompt_tokens(const struct kl_usage *u)
{
    int64_t t = 0;
    int64_t parts[3] = {u->input, u->cache_read, u->cache_write};
    for (int i = 0; i < 3; i++)
        if (parts[i] > 0)
            t = parts[i] > INT64_MAX - t ? INT64_MAX : t + parts[i];
    return u->tool_prompt > 0 && u->tool_prompt <= t ? t - u->tool_prompt : t;
}
