#include "guard/signed.h"

#include <stdbool.h>
#include <string.h>

#include "core/jsonscan.h"

struct spans {
    struct kl_scan_span *v;
    size_t n, cap;
    kl_arena *a;
};

static void add(struct spans *s, size_t from, size_t to)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct kl_scan_span *v = kl_arena_alloc(s->a, cap * sizeof(*v));
        if (s->n)
            memcpy(v, s->v, s->n * sizeof(*v));
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (struct kl_scan_span){from, to};
}

/* A member found once, whose value is a string: the name it is read by
 * whatever parser the provider runs (a repeated one might not be). */
static bool one_string(const char *s, const struct kl_json_want *w)
{
    return w->end && w->count == 1 && s[w->start] == '"';
}

static bool string_is(const char *s, const struct kl_json_want *w, const char *text)
{
    size_t n = strlen(text);
    return one_string(s, w) && w->end - w->start == n + 2 && memcmp(s + w->start + 1, text, n) == 0;
}

/* Converse's {"reasoningContent": {"reasoningText": {"text", "signature"}}
 * or {"redactedContent": base64}}, at s[0..len) (base: its offset in the
 * body). */
static void converse_reasoning(const char *s, size_t len, size_t base, struct spans *out)
{
    struct kl_json_want w[] = {{.key = "reasoningText"}, {.key = "redactedContent"}};
    if (kl_json_scan_members(s, len, w, 2) < 0)
        return;
    bool redacted = one_string(s, &w[1]);
    if (redacted && (!w[0].end || w[1].start < w[0].start)) /* the spans in order */
        add(out, base + w[1].start, base + w[1].end);
    if (w[0].end && w[0].count == 1 && s[w[0].start] == '{') {
        const char *t = s + w[0].start;
        size_t tl = w[0].end - w[0].start;
        struct kl_json_want r[] = {{.key = "text"}, {.key = "signature"}};
        if (kl_json_scan_members(t, tl, r, 2) == 0 && one_string(t, &r[0]) && one_string(t, &r[1]) &&
            r[1].end - r[1].start > 2)
            add(out, base + w[0].start + r[0].start, base + w[0].start + r[0].end);
    }
    if (redacted && w[0].end && w[1].start > w[0].start)
        add(out, base + w[1].start, base + w[1].end);
}

/* The blocks of one message's content array, at s[0..len). */
static void content(const char *s, size_t len, size_t base, struct spans *out)
{
    enum { TYPE, THINKING, SIGNATURE, DATA, REASONING, NW };
    struct kl_json_want w[NW] = {[TYPE] = {.key = "type"}, [THINKING] = {.key = "thinking"},
                                 [SIGNATURE] = {.key = "signature"}, [DATA] = {.key = "data"},
                                 [REASONING] = {.key = "reasoningContent"}};
    size_t pos = 0, vs, ve;
    while (kl_json_array_next(s, len, &pos, &vs, &ve, w, NW)) {
        const char *b = s + vs;
        size_t at = base + vs;
        if (string_is(b, &w[TYPE], "thinking") && one_string(b, &w[THINKING]) && one_string(b, &w[SIGNATURE]) &&
            w[SIGNATURE].end - w[SIGNATURE].start > 2)
            add(out, at + w[THINKING].start, at + w[THINKING].end);
        else if (string_is(b, &w[TYPE], "redacted_thinking") && one_string(b, &w[DATA]))
            add(out, at + w[DATA].start, at + w[DATA].end);
        else if (!w[TYPE].end && w[REASONING].end && w[REASONING].count == 1 && b[w[REASONING].start] == '{')
            converse_reasoning(b + w[REASONING].start, w[REASONING].end - w[REASONING].start,
                               at + w[REASONING].start, out);
    }
}

size_t kl_guard_signed_spans(const char *body, size_t len, kl_arena *a, struct kl_scan_span **out)
{
    struct spans s = {.a = a};
    struct kl_json_want m = {.key = "messages"};
    *out = NULL;
    if (kl_json_scan_members(body, len, &m, 1) < 0 || !m.end || m.count != 1 || body[m.start] != '[')
        return 0;
    const char *arr = body + m.start;
    size_t alen = m.end - m.start, pos = 0, vs, ve;
    struct kl_json_want c = {.key = "content"};
    while (kl_json_array_next(arr, alen, &pos, &vs, &ve, &c, 1))
        if (c.end && c.count == 1 && arr[vs + c.start] == '[')
            content(arr + vs + c.start, c.end - c.start, m.start + vs + c.start, &s);
    *out = s.v;
    return s.n;
}
