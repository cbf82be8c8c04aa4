/* Guardrails over a streamed answer as it passes (guard/stream.h): the
 * text deltas put together per channel and scanned there, events held
 * until enough text has followed them, and rewritten when a finding is
 * redacted. */
#include "guard/stream.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "account/sse.h"
#include "account/usage.h"
#include "core/decoded.h"
#include "core/jsoncheck.h"
#include "core/log.h"
#include "dialect/evstream.h"
#include "guard/notes.h"
#include "guard/scan.h"

#define KL_STREAM_PIECES 64             /* text deltas read in one event; more are scanned with the rest of it */
#define KL_STREAM_KINDS 32              /* kinds kept track of for the record */
#define KL_STREAM_COMPACT (16u << 20)   /* a channel's text is kept whole up to this (for the last look,
                                         * kl_guard_stream_end), then what is no longer needed is dropped
                                         * in steps this large */
#define KL_STREAM_HELD_MAX (64u << 20)  /* held events, or one channel's text kept for a finding still growing */
#define KL_STREAM_CHANS 4096            /* channels one answer may have (a block or item each) */
#define KL_STREAM_JWT_MAX (16u << 10)   /* longest run of a token's letters held back as a JWT not yet whole */

/* Where a JSON text stands: inside a string, inside an escape (-1 just
 * after the backslash, then the \u escape's hex digits still to come). */
struct jlex {
    bool in;
    int esc;
};

struct span {
    size_t from, to;
    const char *kind;
};

/* One run of text the answer spells across events: a choice's content, a
 * tool call's arguments, a content block. Offsets count from the
 * channel's first byte; text holds them from base on. */
struct chan {
    char key[96];
    bool json;                  /* the text is JSON (a tool call's arguments) */
    char *text;
    size_t base, len, cap;
    size_t released;            /* the caller has had the text before this */
    size_t open;                /* a finding reached the end at the last scan: where it began (SIZE_MAX: none) */
    size_t pending;             /* a JWT may be under way from here: nothing after it goes on (SIZE_MAX: none) */
    bool closed;                /* its block, choice or item has ended: what it holds needs no more after it */
    struct jlex lex;            /* json: where the text stands at base */
    struct jlex lex_at;         /* ... and at lex_pos, the last place inside_string looked from (findings */
    size_t lex_pos;             /* come in order: each is lexed from there, not from base again) */
    struct span *spans;         /* to redact, in order, apart from one another */
    size_t nspans, capspans;
    /* parts an SDK joins into one text (a Responses answer's output_text
     * parts and messages): the one being written, and where each after the
     * first began */
    char part[96];
    size_t *parts;
    size_t nparts, capparts;
};

/* An event's text delta: its bytes in its channel, and which of the
 * event's pieces it is. */
struct place {
    size_t chan, piece;
    size_t from, to;
};

struct held {
    char *raw;                  /* as it came (malloc) */
    size_t len;
    int mark;                   /* the caller's, given back when it is relayed */
    char *ev;                   /* its event name or type (malloc), or NULL */
    cJSON *json;                /* its data, the text of its places taken out; NULL when it has none to rewrite */
    struct place *places;       /* malloc */
    size_t nplaces;
    bool rewrite;               /* something outside its places was redacted */
    bool bare;                  /* Gemini's bare JSON error, no SSE field (kl_dialect_error_tail): written so again */
    size_t rest_spans;          /* how many marks that put there */
    const char *rest_kinds;     /* of which kinds (arena) */
};

struct kind_set {
    const char *v[KL_STREAM_KINDS];
    size_t n;
};

struct kl_guard_stream {
    int kind;                   /* enum kl_usage_kind */
    enum kl_guard_framing framing;
    size_t hold;
    kl_guard_relay_fn relay;
    struct chan *chans;
    size_t nchans, capchans;
    struct held *q;             /* q[head..n) wait, oldest first */
    size_t head, n, cap;
    size_t held_bytes;
    struct kind_set redacted, logged;
    size_t spans;               /* marks relayed */
    bool jwt;                   /* a rule blocks or redacts JWTs: one not yet whole is held back */
    bool told;                  /* the record has the redact and log notes */
    bool stopped;               /* blocked or failed: nothing more goes on */
    bool ended;                 /* kl_guard_stream_end has told the record */
};

/* ---- the text deltas of each dialect's events ---- */

struct piece {
    cJSON *node;                /* a string */
    char key[96];
    bool json;
    char part[96];              /* which of the parts sharing its channel it is ("": its channel has one) */
};

struct pieces {
    struct piece v[KL_STREAM_PIECES];
    size_t n;
    bool overflow;              /* more than KL_STREAM_PIECES */
};

static cJSON *member(const cJSON *o, const char *name)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
}

static int index_of(const cJSON *o, const char *name, int dflt)
{
    const cJSON *v = member(o, name);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e6 ? v->valueint : dflt;
}

static void add(struct pieces *p, cJSON *node, bool json, const char *fmt, ...)
{
    if (!cJSON_IsString(node) || !node->valuestring)
        return;
    if (p->n == KL_STREAM_PIECES) {
        p->overflow = true;
        return;
    }
    struct piece *x = &p->v[p->n++];
    x->node = node;
    x->json = json;
    x->part[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->key, sizeof(x->key), fmt, ap);
    va_end(ap);
}

static void openai_chat(cJSON *j, struct pieces *p)
{
    cJSON *c, *tc;
    int ci = 0;
    cJSON_ArrayForEach(c, member(j, "choices")) {
        int i = index_of(c, "index", ci++);
        cJSON *d = member(c, "delta");
        add(p, member(d, "content"), false, "c%d", i);
        add(p, member(d, "refusal"), false, "c%d.refusal", i);
        add(p, member(d, "reasoning_content"), false, "c%d.reasoning_content", i);
        add(p, member(d, "reasoning"), false, "c%d.reasoning", i);
        add(p, member(member(d, "audio"), "transcript"), false, "c%d.audio", i);
        /* OpenRouter's reasoning_details: the text of "reasoning" again,
         * in pieces its clients join by index (as the Python SDK's stream
         * helper joins every string member) */
        cJSON *rd;
        int ri = 0;
        cJSON_ArrayForEach(rd, member(d, "reasoning_details")) {
            int k = index_of(rd, "index", ri++);
            add(p, member(rd, "text"), false, "c%d.rd%d", i, k);
            add(p, member(rd, "summary"), false, "c%d.rd%d.summary", i, k);
        }
        /* the legacy single call: its arguments come in pieces too */
        add(p, member(member(d, "function_call"), "arguments"), true, "c%d.f", i);
        int ti = 0;
        cJSON_ArrayForEach(tc, member(d, "tool_calls")) {
            int t = index_of(tc, "index", ti++);
            add(p, member(member(tc, "function"), "arguments"), true, "c%d.t%d", i, t);
            add(p, member(member(tc, "custom"), "input"), false, "c%d.t%d.custom", i, t);
        }
    }
}

static void openai_responses(cJSON *j, struct pieces *p)
{
    const char *type = cJSON_GetStringValue(member(j, "type"));
    size_t tl = type ? strlen(type) : 0;
    if (tl <= 6 || strcmp(type + tl - 6, ".delta") != 0)
        return;
    /* the answer's text: one channel across its parts and messages, as the
     * SDKs join it (output_text), so a finding split between two is seen;
     * it ends with the response */
    const char *item = cJSON_GetStringValue(member(j, "item_id"));
    if (strcmp(type, "response.output_text.delta") == 0) {
        size_t n = p->n;
        add(p, member(j, "delta"), false, "output_text");
        if (p->n > n) /* each part's text is repeated alone when it ends: see crosses_part */
            snprintf(p->v[n].part, sizeof(p->v[n].part), "%.40s/%d/%d", item ? item : "",
                     index_of(j, "output_index", 0), index_of(j, "content_index", 0));
        return;
    }
    int part = index_of(j, "content_index", index_of(j, "summary_index", 0));
    add(p, member(j, "delta"), strstr(type, "arguments") != NULL, "%.40s/%d/%d/%.40s", item ? item : "",
        index_of(j, "output_index", 0), part, type);
}

static void anthropic(cJSON *j, struct pieces *p)
{
    const char *type = cJSON_GetStringValue(member(j, "type"));
    bool start = type && strcmp(type, "content_block_start") == 0;
    if (!type || (!start && strcmp(type, "content_block_delta") != 0))
        return;
    int i = index_of(j, "index", 0);
    cJSON *d = member(j, start ? "content_block" : "delta");
    add(p, member(d, "text"), false, "b%d", i);
    add(p, member(d, "partial_json"), true, "b%d.json", i);
    add(p, member(d, "thinking"), false, "b%d.thinking", i);
}

static void gemini(cJSON *j, struct pieces *p)
{
    cJSON *c, *part;
    int ci = 0;
    cJSON_ArrayForEach(c, member(j, "candidates")) {
        int i = index_of(c, "index", ci++);
        cJSON_ArrayForEach(part, member(member(c, "content"), "parts")) {
            if (cJSON_IsTrue(member(part, "thought")))
                add(p, member(part, "text"), false, "c%d.thought", i);
            else
                add(p, member(part, "text"), false, "c%d", i);
            /* Vertex's streamed function call arguments: each string
             * argument's value in pieces, joined by its jsonPath */
            cJSON *fc = member(part, "functionCall"), *arg, *args;
            if (!fc)
                fc = member(part, "function_call");
            if (!(args = member(fc, "partialArgs")))
                args = member(fc, "partial_args");
            cJSON_ArrayForEach(arg, args) {
                const char *path = cJSON_GetStringValue(member(arg, "jsonPath"));
                cJSON *v = member(arg, "stringValue");
                if (!path)
                    path = cJSON_GetStringValue(member(arg, "json_path"));
                if (!v)
                    v = member(arg, "string_value");
                add(p, v, false, "c%d.args%.60s", i, path ? path : "");
            }
        }
    }
}

static void bedrock_converse(const char *ev, cJSON *j, struct pieces *p)
{
    if (!ev || strcmp(ev, "contentBlockDelta") != 0)
        return;
    int i = index_of(j, "contentBlockIndex", 0);
    cJSON *d = member(j, "delta");
    add(p, member(d, "text"), false, "b%d", i);
    add(p, member(member(d, "toolUse"), "input"), true, "b%d.json", i);
    add(p, member(member(d, "reasoningContent"), "text"), false, "b%d.reasoning", i);
}

/* The text deltas an event carries, in a fixed order (found again in the
 * same tree when it is rewritten). */
static void find_pieces(const kl_guard_stream *s, const char *ev, cJSON *j, struct pieces *p)
{
    p->n = 0;
    p->overflow = false;
    switch (s->kind) {
    case KL_USAGE_OPENAI_CHAT:
        openai_chat(j, p);
        break;
    case KL_USAGE_OPENAI_RESPONSES:
        openai_responses(j, p);
        break;
    case KL_USAGE_ANTHROPIC:
        anthropic(j, p);
        break;
    case KL_USAGE_GEMINI:
        gemini(j, p);
        break;
    case KL_USAGE_BEDROCK_CONVERSE:
        bedrock_converse(ev, j, p);
        break;
    default:
        break;
    }
}

/* ---- where a channel ends ---- */

/* A finish reason that says the choice has ended: some servers send "" or
 * "null" on every chunk, which must not end anything. */
static bool finished(const cJSON *v)
{
    const char *r = cJSON_GetStringValue(v);
    return r && *r && strcmp(r, "null") != 0 && strcmp(r, "FINISH_REASON_UNSPECIFIED") != 0;
}

/* The channels whose key is prefix, or begins with it and a '.' or '/'. */
static void close_prefix(kl_guard_stream *s, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < s->nchans; i++) {
        const char *k = s->chans[i].key;
        if (strncmp(k, prefix, n) == 0 && (k[n] == '\0' || k[n] == '.' || k[n] == '/'))
            s->chans[i].closed = true;
    }
}

static void close_all(kl_guard_stream *s)
{
    for (size_t i = 0; i < s->nchans; i++)
        s->chans[i].closed = true;
}

/* The channels of each choice (OpenAI) or candidate (Gemini) of list
 * whose reason member says it has finished: "c<index>", and those after
 * it ("c0.refusal", "c0.t1", "c0.thought"). */
static void close_finished(kl_guard_stream *s, const cJSON *list, const char *reason)
{
    const cJSON *c;
    int ci = 0;
    char key[32];
    cJSON_ArrayForEach(c, list) {
        int i = index_of(c, "index", ci++);
        if (finished(member(c, reason))) {
            snprintf(key, sizeof(key), "c%d", i);
            close_prefix(s, key);
        }
    }
}

/* The end of a block, choice or item an event says, each dialect its own
 * way: its channels' last text needs nothing after it to go on (it would
 * otherwise wait for the end of the stream). Text that comes after all
 * opens the channel again. */
static void find_closes(kl_guard_stream *s, const char *ev, const cJSON *j)
{
    char key[64];
    const char *type = cJSON_GetStringValue(member(j, "type"));
    size_t tl = type ? strlen(type) : 0;
    switch (s->kind) {
    case KL_USAGE_OPENAI_CHAT:
        close_finished(s, member(j, "choices"), "finish_reason");
        break;
    case KL_USAGE_OPENAI_RESPONSES:
        if (type && (!strcmp(type, "response.completed") || !strcmp(type, "response.failed") ||
                     !strcmp(type, "response.incomplete"))) {
            close_all(s);
        } else if (tl > 5 && !strcmp(type + tl - 5, ".done")) {
            const char *item = cJSON_GetStringValue(member(j, "item_id"));
            if (!item)
                item = cJSON_GetStringValue(member(member(j, "item"), "id"));
            if (item) {
                snprintf(key, sizeof(key), "%.40s", item);
                close_prefix(s, key);
            }
        }
        break;
    case KL_USAGE_ANTHROPIC:
        if (type && !strcmp(type, "content_block_stop")) {
            snprintf(key, sizeof(key), "b%d", index_of(j, "index", 0));
            close_prefix(s, key);
        } else if (type && !strcmp(type, "message_stop")) {
            close_all(s);
        }
        break;
    case KL_USAGE_GEMINI:
        close_finished(s, member(j, "candidates"), "finishReason");
        break;
    case KL_USAGE_BEDROCK_CONVERSE:
        if (ev && !strcmp(ev, "contentBlockStop")) {
            snprintf(key, sizeof(key), "b%d", index_of(j, "contentBlockIndex", 0));
            close_prefix(s, key);
        } else if (ev && !strcmp(ev, "messageStop")) {
            close_all(s);
        }
        break;
    default:
        break;
    }
}

/* ---- what the record is told ---- */

static void kinds_add(kl_exchange *ex, struct kind_set *set, const char *list)
{
    while (list && *list) {
        size_t n = strcspn(list, ",");
        bool have = false;
        for (size_t i = 0; i < set->n && !have; i++)
            have = strlen(set->v[i]) == n && memcmp(set->v[i], list, n) == 0;
        if (!have && set->n < KL_STREAM_KINDS)
            set->v[set->n++] = kl_arena_strndup(&ex->arena, list, n);
        list += n + (list[n] == ',');
    }
}

static const char *kinds_join(kl_exchange *ex, const struct kind_set *set)
{
    const char *out = NULL;
    for (size_t i = 0; i < set->n; i++)
        out = out ? kl_arena_printf(&ex->arena, "%s,%s", out, set->v[i]) : set->v[i];
    return out;
}

/* The redactions that went on and the kinds logged, once: before a
 * block's note (they came first), or when the stream ends. */
static void tell(kl_guard_stream *s, kl_exchange *ex)
{
    if (s->told)
        return;
    s->told = true;
    if (s->redacted.n && s->spans) {
        const char *k = kinds_join(ex, &s->redacted);
        kl_guard_note(ex, "answer", NULL, "redact", k, s->spans, NULL);
        kl_info("%s: guardrails redacted %zu span%s of the streamed answer (%s)", ex->id, s->spans,
                s->spans == 1 ? "" : "s", k);
    }
    if (s->logged.n) {
        const char *k = kinds_join(ex, &s->logged);
        kl_guard_note(ex, "answer", NULL, "log", k, 0, NULL);
        kl_warn("%s: guardrails found %s in the streamed answer (logged only)", ex->id, k);
    }
}

/* ---- held events ---- */

static void held_free(struct held *h)
{
    free(h->raw);
    free(h->ev);
    cJSON_Delete(h->json);
    free(h->places);
}

static void drop_held(kl_guard_stream *s)
{
    for (size_t i = s->head; i < s->n; i++)
        held_free(&s->q[i]);
    s->head = s->n = 0;
    s->held_bytes = 0;
}

/* Nothing more of the answer goes on. */
static void stop(kl_guard_stream *s, kl_exchange *ex, enum kl_err_kind kind, enum kl_error_class ec,
                 const char *message)
{
    s->stopped = true;
    ex->cut_off = true;
    ex->cut_kind = kind;
    ex->cut_class = ec;
    ex->error_message = message;
    drop_held(s);
}

static void block(kl_guard_stream *s, kl_exchange *ex, const char *kinds, const char *why)
{
    tell(s, ex);
    kl_guard_note(ex, "answer", NULL, "block", kinds, 0, why);
    stop(s, ex, KL_ERR_BLOCKED, KL_EC_BLOCKED,
         kl_arena_printf(&ex->arena, "the rest of the answer was withheld by guardrails: it contains %s", kinds));
}

/* What cannot be checked does not go on. */
static void fail(kl_guard_stream *s, kl_exchange *ex, const char *why)
{
    tell(s, ex);
    kl_guard_note(ex, "answer", NULL, "unscanned", NULL, 0, why);
    stop(s, ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
         kl_arena_printf(&ex->arena, "guardrails could not check the answer: %s", why));
}

/* ---- channels ---- */

static struct chan *chan_for(kl_guard_stream *s, const char *key, bool json, size_t *index)
{
    for (size_t i = s->nchans; i-- > 0;) /* the newest first: the one being written */
        if (strcmp(s->chans[i].key, key) == 0) {
            *index = i;
            return &s->chans[i];
        }
    if (s->nchans == KL_STREAM_CHANS)
        return NULL;
    if (s->nchans == s->capchans) {
        s->capchans = s->capchans ? s->capchans * 2 : 4;
        s->chans = realloc(s->chans, s->capchans * sizeof(*s->chans));
        if (!s->chans)
            abort();
    }
    struct chan *c = &s->chans[s->nchans];
    memset(c, 0, sizeof(*c));
    snprintf(c->key, sizeof(c->key), "%s", key);
    c->json = json;
    c->open = SIZE_MAX;
    c->pending = SIZE_MAX;
    *index = s->nchans++;
    return c;
}

static void chan_append(struct chan *c, const char *t, size_t n)
{
    size_t kept = c->len - c->base;
    if (kept + n > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        while (cap < kept + n)
            cap *= 2;
        c->text = realloc(c->text, cap);
        if (!c->text)
            abort();
        c->cap = cap;
    }
    memcpy(c->text + kept, t, n);
    c->len += n;
    c->closed = false;
}

/* One byte further through a JSON text. */
static void lex(struct jlex *l, char ch, bool *closed)
{
    *closed = false;
    if (!l->in)
        l->in = ch == '"';
    else if (l->esc == -1)
        l->esc = ch == 'u' ? 4 : 0;
    else if (l->esc > 0)
        l->esc--;
    else if (ch == '\\')
        l->esc = -1;
    else if (ch == '"') {
        l->in = false;
        *closed = true;
    }
}

/* Does [from, to) of a JSON channel lie inside one string, whole escapes
 * only? Only then can [REDACTED:kind] take its place. */
static bool inside_string(struct chan *c, size_t from, size_t to)
{
    struct jlex l = c->lex;
    size_t i = c->base;
    if (c->lex_pos >= c->base && c->lex_pos <= from) {
        l = c->lex_at;
        i = c->lex_pos;
    }
    bool closed;
    for (; i < from; i++)
        lex(&l, c->text[i - c->base], &closed);
    c->lex_at = l;
    c->lex_pos = from;
    if (from < to && (!l.in || l.esc))
        return false;
    for (; i < to; i++) {
        lex(&l, c->text[i - c->base], &closed);
        if (closed)
            return false;
    }
    return l.in && !l.esc;
}

/* The first span of c that ends after from (spans are in order and apart). */
static size_t first_span_after(const struct chan *c, size_t from)
{
    size_t lo = 0, hi = c->nspans;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->spans[mid].to <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Does [from, to) run from one part of c into the next? A Responses
 * stream repeats each part's text alone when it ends (output_text.done,
 * output_item.done, response.completed), where each half of such a finding
 * is no finding and would go on as it came, and the SDK joins them again:
 * it cannot be redacted, as in a whole answer (guard/answer.c). */
static bool crosses_part(const struct chan *c, size_t from, size_t to)
{
    size_t lo = 0, hi = c->nparts; /* the first part that began after from */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->parts[mid] <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nparts && c->parts[lo] < to;
}

/* A piece of part `part` is to be appended to c: a new part's start noted. */
static void note_part(struct chan *c, const char *part)
{
    if (!*part || strcmp(c->part, part) == 0)
        return;
    if (c->len > 0) {
        if (c->nparts == c->capparts) {
            c->capparts = c->capparts ? c->capparts * 2 : 4;
            c->parts = realloc(c->parts, c->capparts * sizeof(*c->parts));
            if (!c->parts)
                abort();
        }
        c->parts[c->nparts++] = c->len;
    }
    snprintf(c->part, sizeof(c->part), "%s", part);
}

/* A redact finding at [from, to): joined with the spans it meets. */
static void redact_span(kl_guard_stream *s, kl_exchange *ex, struct chan *c, size_t from, size_t to,
                        const char *kind)
{
    size_t f = from - c->base, t = to - c->base;
    kl_scan_whole_chars(c->text, c->len - c->base, &f, &t);
    from = c->base + f;
    to = c->base + t;
    if (from < c->released) {
        /* a finding followed from a span already redacted (what went on
         * of anything else is found by the scan once the stream has ended,
         * kl_guard_answer_relayed) */
        from = c->released;
        if (from >= to)
            return;
    }
    size_t i = 0, hi = c->nspans; /* the first span that ends at from or after */
    while (i < hi) {
        size_t mid = i + (hi - i) / 2;
        if (c->spans[mid].to < from)
            i = mid + 1;
        else
            hi = mid;
    }
    if (i < c->nspans && c->spans[i].from <= to) { /* it meets spans i..j-1: one span now */
        size_t j = i;
        while (j < c->nspans && c->spans[j].from <= to)
            j++;
        struct span *x = &c->spans[i];
        if (from < x->from) {
            x->from = from;
            x->kind = kind;
        }
        if (c->spans[j - 1].to > to)
            to = c->spans[j - 1].to;
        if (to > x->to)
            x->to = to;
        memmove(&c->spans[i + 1], &c->spans[j], (c->nspans - j) * sizeof(*c->spans));
        c->nspans -= j - i - 1;
        return;
    }
    if (c->nspans == c->capspans) {
        c->capspans = c->capspans ? c->capspans * 2 : 4;
        c->spans = realloc(c->spans, c->capspans * sizeof(*c->spans));
        if (!c->spans)
            abort();
    }
    memmove(&c->spans[i + 1], &c->spans[i], (c->nspans - i) * sizeof(*c->spans));
    c->spans[i] = (struct span){from, to, kind};
    c->nspans++;
}

/* A finding that reaches the end of a JSON channel's text may end inside
 * an escape whose rest has not come yet (a private key's "\n"): the span
 * stops before that escape, and the next scan, from where the finding
 * began, takes the rest. */
static bool json_backoff(struct chan *c, size_t from, size_t *to)
{
    for (size_t back = 1; back <= 6 && *to - back > from; back++)
        if (inside_string(c, from, *to - back)) {
            *to -= back;
            return true;
        }
    return false;
}

static bool jwt_letter(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-' || ch == '.';
}

/* A JWT is recognised only once its signature has begun, after a header
 * and a payload that may be hundreds of bytes: when the text ends in a
 * run of a token's letters holding "eyJ", what follows that "eyJ" is held
 * back until the run ends (up to KL_STREAM_JWT_MAX; a longer run is no
 * JWT). */
static void find_pending(kl_guard_stream *s, struct chan *c)
{
    c->pending = SIZE_MAX;
    if (!s->jwt || c->closed)
        return;
    size_t end = c->len, lim = end - c->base > KL_STREAM_JWT_MAX ? end - KL_STREAM_JWT_MAX : c->base, r = end;
    while (r > lim && jwt_letter(c->text[r - 1 - c->base]))
        r--;
    if (r == lim && lim > c->base && jwt_letter(c->text[lim - 1 - c->base]))
        return;
    const char *t = c->text + (r - c->base);
    const char *e = memmem(t, end - r, "eyJ", 3);
    if (e)
        c->pending = r + (size_t)(e - t);
}

/* The findings in a channel's text from *start to end, at its offsets. A tool
 * call's arguments are a JSON text, whose escapes the SDKs decode when they
 * parse it: read decoded ("\u0041KIA..." is a key), from before any escape
 * *start would cut (moved back to it). */
static int scan_window(kl_exchange *ex, const struct chan *c, size_t *start, size_t end, struct kl_scan_hit **hits,
                       size_t *n, const char **why)
{
    const struct kl_guardrails *g = ex->cfg->guardrails;
    /* an escape is at most 14 bytes ("\\ud83d\\ude00" counts as two): one
     * that began up to that far before *start is read whole (a window, not
     * the whole text so far, is looked at: each event pays for its own) */
    size_t from = *start;
    for (size_t k = *start; c->json && k > c->base && *start - k < 14; k--)
        if (c->text[k - 1 - c->base] == '\\')
            from = k - 1;
    if (!c->json || !kl_decode_needed(c->text + (from - c->base), end - from))
        return kl_scan_text(g, &ex->worker->scan, c->text + (*start - c->base), end - *start, hits, n, why);
    *start = from;
    const char *t = c->text + (*start - c->base);
    struct kl_decoded d;
    kl_decode(t, end - *start, true, &d);
    int rc = kl_scan_text(g, &ex->worker->scan, d.text, d.len, hits, n, why);
    for (size_t i = 0; rc == 0 && i < *n; i++) {
        (*hits)[i].from = kl_decoded_raw(&d, (*hits)[i].from, false);
        (*hits)[i].to = kl_decoded_raw(&d, (*hits)[i].to, true);
    }
    kl_decoded_free(&d);
    return rc;
}

/* The channel's text grew from grew_from: scanned from stream_hold bytes
 * before that (or from where a finding still growing began), so a finding
 * is seen whole while its first bytes are still held. */
static bool scan_chan(kl_guard_stream *s, kl_exchange *ex, struct chan *c, size_t grew_from)
{
    size_t start = grew_from > s->hold ? grew_from - s->hold : 0;
    if (c->open < start)
        start = c->open;
    if (c->pending < start)
        start = c->pending;
    if (start < c->base)
        start = c->base;
    struct kl_scan_hit *hits;
    size_t n;
    const char *why;
    if (scan_window(ex, c, &start, c->len, &hits, &n, &why) < 0) {
        fail(s, ex, why);
        return false;
    }
    c->open = SIZE_MAX;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        size_t from = start + hits[i].from, to = start + hits[i].to;
        if (to == c->len && from < c->open)
            c->open = from;
        if (to <= grew_from)
            continue; /* an earlier scan saw all of it */
        switch (hits[i].action) {
        case KL_SCAN_OFF:
            break;
        case KL_SCAN_LOG:
            kinds_add(ex, &s->logged, hits[i].kind);
            break;
        case KL_SCAN_REDACT:
            if (c->json && !inside_string(c, from, to) && !(to == c->len && json_backoff(c, from, &to))) {
                block(s, ex, hits[i].kind, "it could not be taken out of a tool call's arguments");
                ok = false;
            } else if (crosses_part(c, from, to)) {
                block(s, ex, hits[i].kind, "split across parts the caller's SDK joins");
                ok = false;
            } else {
                redact_span(s, ex, c, from, to, hits[i].kind);
            }
            break;
        case KL_SCAN_BLOCK:
            block(s, ex, hits[i].kind, NULL);
            ok = false;
            break;
        }
    }
    free(hits);
    if (ok)
        find_pending(s, c);
    return ok;
}

/* Text no longer needed, for scans or for events still held, is let go
 * (the lexer's place moved over it). */
static void compact(kl_guard_stream *s, struct chan *c)
{
    size_t keep = c->released > s->hold ? c->released - s->hold : 0;
    if (c->open < keep)
        keep = c->open;
    if (c->pending < keep)
        keep = c->pending;
    if (keep < c->base + KL_STREAM_COMPACT)
        return;
    size_t i = 0;
    while (i < c->nspans && c->spans[i].to < c->released && c->spans[i].to <= keep)
        i++;
    if (i) {
        memmove(c->spans, c->spans + i, (c->nspans - i) * sizeof(*c->spans));
        c->nspans -= i;
    }
    bool closed;
    if (c->json)
        for (size_t k = c->base; k < keep; k++)
            lex(&c->lex, c->text[k - c->base], &closed);
    memmove(c->text, c->text + (keep - c->base), c->len - keep);
    c->base = keep;
}

/* ---- relaying ---- */

/* [from, to) of a channel as the caller gets it: each span that begins
 * there replaced by its mark, the rest of a span left out. */
static char *redacted_text(kl_guard_stream *s, kl_exchange *ex, const struct chan *c, size_t from, size_t to)
{
    size_t cap = to - from + 1;
    for (size_t i = first_span_after(c, from); i < c->nspans && c->spans[i].from < to; i++)
        cap += strlen(c->spans[i].kind) + 12;
    char *o = malloc(cap);
    if (!o)
        abort();
    size_t n = 0, pos = from;
    for (size_t i = first_span_after(c, from); i < c->nspans && c->spans[i].from < to; i++) {
        const struct span *x = &c->spans[i];
        if (x->from > pos) {
            memcpy(o + n, c->text + (pos - c->base), x->from - pos);
            n += x->from - pos;
        }
        if (x->from >= from) {
            n += (size_t)sprintf(o + n, "[REDACTED:%s]", x->kind);
            s->spans++;
            kinds_add(ex, &s->redacted, x->kind);
        }
        if (x->to > pos)
            pos = x->to < to ? x->to : to;
    }
    if (to > pos) {
        memcpy(o + n, c->text + (pos - c->base), to - pos);
        n += to - pos;
    }
    o[n] = '\0';
    return o;
}

static bool touched(const kl_guard_stream *s, const struct held *h)
{
    if (h->rewrite)
        return true;
    for (size_t i = 0; i < h->nplaces; i++) {
        const struct chan *c = &s->chans[h->places[i].chan];
        size_t k = first_span_after(c, h->places[i].from);
        if (k < c->nspans && c->spans[k].from < h->places[i].to)
            return true;
    }
    return false;
}

/* An event rewritten: its data framed as it came, an SSE event, an AWS
 * event stream message (an InvokeModel chunk's event base64 in "bytes"), or
 * an array element. */
static void relay_rewritten(kl_guard_stream *s, kl_exchange *ex, const struct held *h, const char *data)
{
    size_t dl = strlen(data);
    if (s->framing == KL_GUARD_ARRAY) {
        s->relay(ex, data, dl, h->mark);
        return;
    }
    if (s->framing == KL_GUARD_SSE && h->bare) {
        char *ev = kl_arena_printf(&ex->arena, "%s\n", data);
        s->relay(ex, ev, strlen(ev), h->mark);
        return;
    }
    if (s->framing == KL_GUARD_SSE) {
        char *ev = kl_arena_printf(&ex->arena, "%s%s%sdata: %s\n\n", h->ev ? "event: " : "", h->ev ? h->ev : "",
                                   h->ev ? "\n" : "", data);
        s->relay(ex, ev, strlen(ev), h->mark);
        return;
    }
    const char *names[3] = {":event-type", ":content-type", ":message-type"};
    const char *values[3] = {h->ev ? h->ev : "chunk", "application/json", "event"};
    const char *payload = data;
    size_t pl = dl;
    if (s->kind != KL_USAGE_BEDROCK_CONVERSE) {
        char *b64 = kl_arena_alloc(&ex->arena, 4 * ((dl + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)data, (int)dl);
        payload = kl_arena_printf(&ex->arena, "{\"bytes\":\"%s\"}", b64);
        pl = strlen(payload);
    }
    size_t fl;
    char *f = kl_evs_encode(&ex->arena, names, values, 3, payload, pl, &fl);
    s->relay(ex, f, fl, h->mark);
}

static void send_held(kl_guard_stream *s, kl_exchange *ex, struct held *h)
{
    if (!touched(s, h)) {
        s->relay(ex, h->raw, h->len, h->mark);
        return;
    }
    struct pieces p;
    find_pieces(s, h->ev, h->json, &p);
    for (size_t i = 0; i < h->nplaces; i++) {
        const struct place *x = &h->places[i];
        if (x->piece >= p.n)
            abort(); /* the tree it was found in: found again alike */
        char *t = redacted_text(s, ex, &s->chans[x->chan], x->from, x->to);
        cJSON_SetValuestring(p.v[x->piece].node, t);
        free(t);
    }
    char *data = cJSON_PrintUnformatted(h->json);
    if (!data)
        abort();
    s->spans += h->rest_spans;
    kinds_add(ex, &s->redacted, h->rest_kinds);
    relay_rewritten(s, ex, h, data);
    cJSON_free(data);
}

/* May the event go on: has stream_hold more text followed each of its
 * deltas in its channel? */
static bool ready(const kl_guard_stream *s, const struct held *h, bool ended)
{
    if (ended)
        return true;
    for (size_t i = 0; i < h->nplaces; i++) {
        const struct chan *c = &s->chans[h->places[i].chan];
        if (!c->closed && (c->len - h->places[i].to < s->hold || h->places[i].to > c->pending))
            return false;
    }
    return true;
}

static void release(kl_guard_stream *s, kl_exchange *ex, bool ended)
{
    while (s->head < s->n && ready(s, &s->q[s->head], ended)) {
        struct held *h = &s->q[s->head++];
        send_held(s, ex, h);
        for (size_t i = 0; i < h->nplaces; i++) {
            struct chan *c = &s->chans[h->places[i].chan];
            if (h->places[i].to > c->released)
                c->released = h->places[i].to;
        }
        s->held_bytes -= h->len;
        held_free(h);
    }
    if (s->head == s->n) {
        s->head = s->n = 0;
    } else if (s->head >= 64 && s->head * 2 >= s->n) {
        memmove(s->q, s->q + s->head, (s->n - s->head) * sizeof(*s->q));
        s->n -= s->head;
        s->head = 0;
    }
    for (size_t i = 0; i < s->nchans; i++)
        compact(s, &s->chans[i]);
}

/* ---- one event ---- */

/* The event without its text deltas, scanned alone: what it holds
 * elsewhere (the whole text a Responses stream repeats when it ends, a
 * Gemini function call's arguments, a tool's name). */
static bool scan_rest(kl_guard_stream *s, kl_exchange *ex, struct held *h, cJSON **j, size_t npieces,
                      const char *data, size_t dl)
{
    char *printed = NULL;
    struct kl_scan_hit *hits;
    size_t nhits;
    const char *why;
    if (*j && npieces) {
        /* most events hold nothing at all: then neither has their rest
         * (but read as it is written, an escaped finding would not show) */
        if (!kl_decode_needed(data, dl)) {
            if (kl_scan_text(ex->cfg->guardrails, &ex->worker->scan, data, dl, &hits, &nhits, &why) < 0) {
                fail(s, ex, why);
                return false;
            }
            free(hits);
            if (!nhits)
                return true;
        }
        printed = cJSON_PrintUnformatted(*j);
        if (!printed)
            abort();
        data = printed;
        dl = strlen(printed);
    }
    struct kl_scan_result r;
    int rc = kl_scan(ex->cfg->guardrails, &ex->worker->scan, data, dl, NULL, 0, &ex->arena, &r, &why);
    cJSON_free(printed);
    if (rc < 0) {
        fail(s, ex, why);
        return false;
    }
    switch (r.action) {
    case KL_SCAN_OFF:
        return true;
    case KL_SCAN_LOG:
        kinds_add(ex, &s->logged, r.kinds);
        return true;
    case KL_SCAN_REDACT:
        break;
    case KL_SCAN_BLOCK:
        block(s, ex, r.block_kinds, NULL);
        return false;
    }
    cJSON *redacted = cJSON_ParseWithLength(r.body, r.body_len);
    struct pieces p;
    if (redacted)
        find_pieces(s, h->ev, redacted, &p);
    if (!redacted || (*j && p.n != npieces)) { /* not as it was: it cannot be rewritten */
        cJSON_Delete(redacted);
        block(s, ex, r.kinds, "it could not be taken out of the event");
        return false;
    }
    h->rest_kinds = r.kinds;
    cJSON_Delete(*j);
    *j = redacted;
    h->rewrite = true;
    h->rest_spans = r.redacted;
    return true;
}

/* cJSON ends a string at a NUL it spells (\u0000), where the caller's
 * JSON reader goes on: a copy of data with each such escape spelling a
 * space instead (the text then reads as the caller's, a rewritten event
 * carries a space there), or NULL when it has none. */
static char *without_nul(const char *data, size_t dl)
{
    char *copy = NULL;
    const char *q = data, *end = data + dl;
    while ((q = memmem(q, (size_t)(end - q), "\\u0000", 6))) {
        size_t slashes = 0;
        while (q - (ptrdiff_t)slashes > data && q[-(ptrdiff_t)slashes - 1] == '\\')
            slashes++;
        if (slashes % 2 == 0) { /* an escape, not an escaped backslash before "u0000" */
            if (!copy) {
                copy = malloc(dl);
                if (!copy)
                    abort();
                memcpy(copy, data, dl);
            }
            memcpy(copy + (q - data) + 4, "20", 2);
        }
        q += 6;
    }
    return copy;
}

kl_guard_stream *kl_guard_stream_new(kl_exchange *ex, int kind, enum kl_guard_framing framing,
                                     kl_guard_relay_fn relay)
{
    kl_guard_stream *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    s->kind = kind;
    s->framing = framing;
    s->hold = kl_guardrails_stream_hold(ex->cfg->guardrails);
    s->jwt = kl_guardrails_stops(ex->cfg->guardrails, "jwt");
    s->relay = relay;
    return s;
}

/* Data that is not JSON, in a dialect whose events all are: only
 * OpenAI's "[DONE]", an empty data field, and the bytes between Gemini
 * array elements. Anything else could be read by the caller as text the
 * scan never joined to its channel. */
static bool not_json_ok(const kl_guard_stream *s, const char *data, size_t dl)
{
    while (dl && (unsigned char)data[dl - 1] <= ' ')
        dl--;
    while (dl && (unsigned char)*data <= ' ') {
        data++;
        dl--;
    }
    if (!dl || (dl == 6 && !memcmp(data, "[DONE]", 6)))
        return true;
    if (s->framing != KL_GUARD_ARRAY)
        return false;
    for (size_t i = 0; i < dl; i++) /* (data is not NUL-terminated) */
        if (!memchr("[],\r\n\t ", data[i], 7))
            return false;
    return true;
}

void kl_guard_stream_event(kl_guard_stream *s, kl_exchange *ex, const char *raw, size_t len, const char *ev,
                           size_t evl, const char *data, size_t dl, int mark)
{
    if (s->stopped)
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->q = realloc(s->q, s->cap * sizeof(*s->q));
        if (!s->q)
            abort();
    }
    struct held *h = &s->q[s->n++];
    memset(h, 0, sizeof(*h));
    h->raw = malloc(len ? len : 1);
    if (!h->raw)
        abort();
    memcpy(h->raw, raw, len);
    h->len = len;
    h->mark = mark;
    h->bare = s->framing == KL_GUARD_SSE && s->kind == KL_USAGE_GEMINI && data && kl_sse_bare_json(raw, len) < len;
    s->held_bytes += len;
    if (ev) {
        h->ev = strndup(ev, evl);
        if (!h->ev)
            abort();
    }
    /* read as the caller's JSON reader reads it (kl_json_lone_surrogates_replaced;
     * an event rewritten for a redaction then carries U+FFFD for such a half) */
    char *whole = data ? kl_json_lone_surrogates_replaced(data, dl) : NULL;
    char *nonul = data ? without_nul(whole ? whole : data, dl) : NULL;
    const char *text = nonul ? nonul : whole ? whole : data;
    const char *after = NULL;
    cJSON *j = data ? cJSON_ParseWithLengthOpts(text, dl, &after, false) : NULL;
    if (j) { /* cJSON stops after the value: anything but white space after it is not one JSON value */
        size_t at = (size_t)(after - text);
        while (at < dl && (data[at] == ' ' || data[at] == '\t' || data[at] == '\r' || data[at] == '\n'))
            at++;
        /* nor is a string holding a raw control byte, which cJSON reads
         * and a strict reader refuses: its text would not be the caller's */
        if (at < dl || kl_json_has_raw_control(data, dl)) {
            cJSON_Delete(j);
            j = NULL;
        }
    }
    free(nonul);
    free(whole);
    /* read strictly: what cJSON would read otherwise than the caller's
     * JSON reader (a repeated member: cJSON takes the first, JavaScript the
     * last) is not let through */
    const char *unread = data && !j && !not_json_ok(s, data, dl) ? "an event that is not JSON"
                         : j && kl_json_has_duplicate_keys(j)   ? "an event with a repeated member"
                                                                : NULL;
    struct pieces p = {.n = 0};
    if (j && !unread) {
        find_pieces(s, h->ev, j, &p);
        if (p.overflow)
            unread = "an event with more text parts than keyless follows";
    }
    size_t grew[KL_STREAM_PIECES];
    if (p.n && !unread) {
        h->places = malloc(p.n * sizeof(*h->places));
        if (!h->places)
            abort();
    }
    for (size_t i = 0; i < p.n && !unread; i++) {
        const char *t = p.v[i].node->valuestring;
        if (!*t)
            continue;
        size_t ci;
        struct chan *c = chan_for(s, p.v[i].key, p.v[i].json, &ci);
        if (!c) {
            unread = "an answer with more text channels than keyless follows";
            break;
        }
        note_part(c, p.v[i].part);
        grew[h->nplaces] = c->len;
        chan_append(c, t, strlen(t));
        h->places[h->nplaces] = (struct place){ci, i, grew[h->nplaces], c->len};
        h->nplaces++;
        cJSON_SetValuestring(p.v[i].node, ""); /* the rest is scanned without it; put back when rewritten */
    }
    if (unread) {
        cJSON_Delete(j);
        fail(s, ex, unread);
        return;
    }
    bool ok = data ? scan_rest(s, ex, h, &j, p.n, data, dl) : true;
    if (ok && j)
        find_closes(s, h->ev, j);
    else if (ok && data && dl >= 6 && !memcmp(data, "[DONE]", 6))
        close_all(s);
    if (ok && (h->nplaces || h->rewrite))
        h->json = j; /* to be rewritten, should a redaction touch it */
    else
        cJSON_Delete(j); /* not needed, or h went with the held events */
    for (size_t i = 0; ok && i < h->nplaces; i++) {
        size_t ci = h->places[i].chan;
        bool first = true; /* each channel scanned once, from where this event began adding to it */
        for (size_t k = 0; k < i && first; k++)
            first = h->places[k].chan != ci;
        struct chan *c = &s->chans[ci];
        if (first)
            ok = scan_chan(s, ex, c, grew[i]);
        if (ok && c->len - c->base > KL_STREAM_HELD_MAX) {
            fail(s, ex, "a finding in the answer goes on for longer than keyless keeps to follow it");
            ok = false;
        }
    }
    if (ok && s->held_bytes > KL_STREAM_HELD_MAX) {
        fail(s, ex, "more of the answer waits than keyless holds");
        ok = false;
    }
    if (ok)
        release(s, ex, false);
}

void kl_guard_stream_unreadable(kl_guard_stream *s, kl_exchange *ex, const char *why)
{
    if (!s->stopped)
        fail(s, ex, why);
}

/* Once the stream has ended, each channel's text is scanned whole (while
 * none of it was let go), all of it or, when the stream was broken off,
 * what went on: a finding no redaction covers went on, one that matched
 * only once it was longer than the hold. */
static bool last_look(kl_guard_stream *s, kl_exchange *ex, bool all)
{
    struct kind_set found = {.n = 0};
    for (size_t i = 0; i < s->nchans; i++) {
        const struct chan *c = &s->chans[i];
        struct kl_scan_hit *hits;
        size_t n;
        const char *why;
        size_t len = all ? c->len : c->released; /* broken off: what went on */
        size_t start = 0;
        if (c->base || scan_window(ex, c, &start, len, &hits, &n, &why) < 0)
            continue; /* what was scanned as it passed stands */
        for (size_t k = 0; k < n; k++) {
            /* covered only by a span over all of it: one that began
             * before the text that had gone on (a channel that ended and
             * began again) was redacted from there on, its start relayed */
            size_t x = first_span_after(c, hits[k].from);
            bool covered = x < c->nspans && c->spans[x].from <= hits[k].from && c->spans[x].to >= hits[k].to;
            if (hits[k].action >= KL_SCAN_REDACT && !covered)
                kinds_add(ex, &found, hits[k].kind);
        }
        free(hits);
    }
    if (!found.n)
        return false;
    const char *k = kinds_join(ex, &found);
    kl_guard_note(ex, "answer", NULL, "found", k, 0,
                  "recognised only once its first bytes had gone on: longer than guardrails.stream_hold when it "
                  "first matched, or its block or choice ended and began again");
    kl_warn("%s: guardrails found %s in the streamed answer only once it had been relayed", ex->id, k);
    return true;
}

void kl_guard_stream_flush(kl_guard_stream *s, kl_exchange *ex)
{
    if (!s->stopped && !s->ended)
        release(s, ex, true);
}

bool kl_guard_stream_end(kl_guard_stream *s, kl_exchange *ex)
{
    if (s->ended)
        return false;
    s->ended = true;
    /* only a stream that ended as it should lets its held tail go: one
     * broken off (by the provider, the caller, a rule) may end inside a
     * finding not yet whole */
    bool clean = !s->stopped && !ex->cut_off && ex->error_class == KL_EC_NONE;
    if (clean)
        release(s, ex, true);
    else
        drop_held(s);
    s->stopped = true;
    tell(s, ex);
    return last_look(s, ex, clean);
}

void kl_guard_stream_free(kl_guard_stream *s)
{
    if (!s)
        return;
    drop_held(s);
    free(s->q);
    for (size_t i = 0; i < s->nchans; i++) {
        free(s->chans[i].text);
        free(s->chans[i].spans);
        free(s->chans[i].parts);
    }
    free(s->chans);
    free(s);
}
