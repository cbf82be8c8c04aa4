/* Stage 10: the hooks told what happened once a forwarded request ended
 * (Aperture's entire_request and tool_call_entire_request). Each is sent the
 * metadata and what its grants' `send` lists, once per request however many
 * of its events apply; its answer is not read (a failure is logged; these
 * hooks always fail open). A stopping gateway waits for the calls in flight
 * until the shutdown grace period ends. */
#include "guard/after.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account/account.h"
#include "account/usage.h"
#include "admit/admit.h"
#include "core/log.h"
#include "core/text.h"
#include "guard/hookcall.h"
#include "guard/hooks.h"
#include "listen/server.h"

/* The most calls told after the answer one worker keeps in flight. Each
 * holds a connection (a descriptor of the half the providers' connections
 * use) and its payload (the request body, the answer and its events: tens
 * of MB at most) until the hook answers or its timeout ends (none with
 * "0"), while the requests that made them are long done: a hook that is
 * slow under load would otherwise take memory and descriptors without
 * bound. Per worker, as everything a call holds is its worker's. */
#define KL_HOOKS_TOLD_MAX 256

/* One call in flight; outlives the exchange. */
struct told {
    kl_worker *w;
    size_t charged;             /* its payload's bytes, in w->body_bytes */
    char id[40];
    char hook[];
};

static void on_told(void *arg, int status, const char *body, size_t len, const char *error)
{
    struct told *t = arg;
    if (!status)
        kl_warn("%s: hook %s was not told of the request: %s", t->id, t->hook, error ? error : "no answer");
    else if (status / 100 != 2)
        kl_warn("%s: hook %s answered HTTP %d to being told of the request", t->id, t->hook, status);
    kl_worker *w = t->w;
    kl_body_memory_return(w, t->charged);
    w->hooks_told_bytes -= t->charged;
    free(t);
    kl_owner_add(&w->hooks_told, (uint64_t)-1);
    kl_server_maybe_stopped(w);
}

/* What a call cut to its metadata may take even when the share has no
 * room left: its metadata and the note of what was cut are about 1 KB, so
 * the hook hears of every request while at most KL_HOOKS_TOLD_MAX of them,
 * 1 MiB, are past a worker's share. Metadata larger than this (a caller's
 * User-Agent of 1 KiB is 3 KiB once its bytes that are not UTF-8 are
 * U+FFFD, besides the grants and quotas a hook is sent) goes too: its size
 * is the configuration's and at most the caller's first 1 KiB of each
 * text, not the request's (kl_hook_cut_to_fit). */
#define KL_HOOK_CUT_ROOM 4096

/* The bytes one more call's payload may take on w: the calls' payloads
 * stay within half the worker's share of listen.max_body_memory (the other
 * half stays for requests, which a slow hook must not starve), and the
 * worker's bodies within the share; KL_HOOK_CUT_ROOM at least. */
static size_t room_on(kl_worker *w)
{
    size_t share = kl_body_memory(w), body = w->body_bytes;
    size_t calls = w->hooks_told_bytes < share / 2 ? share / 2 - w->hooks_told_bytes : 0;
    size_t all = body < share ? share - body : 0;
    size_t room = calls < all ? calls : all;
    return room > KL_HOOK_CUT_ROOM ? room : KL_HOOK_CUT_ROOM;
}

/* The parts of a payload that grow with the exchange, in the order their
 * heads are kept when a call is cut: what was asked first. */
static const char *const cuttable[] = {"request_body", "user_message", "response_body", "tool_calls",
                                       "raw_responses"};
#define KL_NCUT (sizeof(cuttable) / sizeof(cuttable[0]))

/* The string item of s's first n bytes (less a UTF-8 character the cut
 * would split), and the bytes it takes in a payload's text (quotes,
 * escapes, U+FFFD for bytes that are not UTF-8) in *printed. */
static cJSON *head_of(char *s, size_t n, size_t *printed)
{
    size_t len = strlen(s);
    if (n < len)
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    else
        n = len;
    char keep = s[n];
    s[n] = '\0';
    cJSON *j = cJSON_CreateString(s);
    s[n] = keep;
    if (!j)
        abort();
    char *t = kl_hook_text(j, printed);
    cJSON_free(t);
    return j;
}

/* A call whose payload (len bytes) has no room, cut to room bytes so that
 * the hook still hears of the request (an audit hook a caller could
 * otherwise stay out of by padding its request): the largest of the parts
 * that grow with the exchange are taken out until the rest fits, and
 * keyless.cut says which, {"<field>": {"bytes": the size of its JSON text
 * (user_message: of its text), "head": as much of that text's start as
 * fits, a string}}; user_message keeps its own first bytes instead of a
 * head. Aperture's fields keep their types: one cut is absent (as its
 * omitempty leaves an empty one) or, user_message, shorter. p's "keyless"
 * is replaced by a copy of outcome with "cut". When not even the rest fits,
 * the rest is sent: skipping the call would let a caller whose metadata is
 * large (its User-Agent) stay out of an audit hook once the room is taken,
 * as padding its other requests takes it. */
char *kl_hook_cut_to_fit(cJSON *p, const cJSON *outcome, size_t len, size_t room, size_t *out_len)
{
    cJSON *k = cJSON_Duplicate(outcome, true);
    cJSON_ReplaceItemInObjectCaseSensitive(p, "keyless", k);
    cJSON *cut = cJSON_AddObjectToObject(k, "cut");
    char *text[KL_NCUT] = {0}, *out = NULL;
    size_t size[KL_NCUT] = {0}, cost[KL_NCUT] = {0};
    bool gone[KL_NCUT] = {0};
    for (size_t i = 0; i < KL_NCUT; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(p, cuttable[i]);
        if (!v)
            continue;
        if (cJSON_IsString(v)) {
            size_t n = strlen(v->valuestring);
            if ((text[i] = cJSON_malloc(n + 1)))
                memcpy(text[i], v->valuestring, n + 1);
            cJSON_Delete(head_of(v->valuestring, SIZE_MAX, &cost[i]));
        } else {
            text[i] = cJSON_PrintUnformatted(v);
        }
        if (!text[i])
            abort();
        size[i] = strlen(text[i]);
        if (!cost[i])
            cost[i] = size[i];
    }
    /* the largest first, while what stays is too much (a part takes its
     * text, its name and punctuation; its note in "cut" about 40 bytes),
     * measured again whenever the estimate says it fits */
    size_t now = len, rest = len;
    for (;;) {
        size_t big = KL_NCUT;
        for (size_t i = 0; i < KL_NCUT; i++)
            if (text[i] && !gone[i] && (big == KL_NCUT || cost[i] > cost[big]))
                big = i;
        if (now <= room || big == KL_NCUT) {
            char *t = kl_hook_text(p, &rest);
            cJSON_free(t);
            if (rest <= room)
                break;
            if (big == KL_NCUT) {
                room = rest; /* not even the rest fits: it goes, with no heads */
                break;
            }
            now = rest;
        }
        gone[big] = true;
        cJSON_DeleteItemFromObjectCaseSensitive(p, cuttable[big]);
        cJSON *note = cJSON_AddObjectToObject(cut, cuttable[big]);
        cJSON_AddNumberToObject(note, "bytes", (double)size[big]);
        size_t part = cost[big] + strlen(cuttable[big]) + 4;
        now = (now > part ? now - part : 0) + strlen(cuttable[big]) + 40;
    }
    /* the heads, in cuttable's order, each measured as it will be sent */
    size_t spare = room - rest;
    for (size_t i = 0; i < KL_NCUT; i++) {
        bool msg = strcmp(cuttable[i], "user_message") == 0;
        size_t over = msg ? strlen(cuttable[i]) + 4 : sizeof("\"head\":,");
        if (!gone[i] || spare <= over + 2)
            continue;
        size_t want = spare - over - 2, used = 0;
        cJSON *head = NULL;
        for (int tries = 0; tries < 8 && want; tries++) {
            head = head_of(text[i], want, &used);
            if (used <= spare - over)
                break;
            cJSON_Delete(head);
            head = NULL;
            want = want * (spare - over) / used; /* what fits at the rate this one took */
            want -= want / 16;
        }
        if (!head)
            continue;
        if (used <= 2) { /* "" */
            cJSON_Delete(head);
            continue;
        }
        if (msg)
            cJSON_AddItemToObject(p, "user_message", head);
        else
            cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(cut, cuttable[i]), "head", head);
        spare -= used + over;
    }
    out = kl_hook_text(p, out_len);
    for (size_t i = 0; i < KL_NCUT; i++)
        cJSON_free(text[i]);
    return out;
}

/* A call skipped, KL_HOOKS_TOLD_MAX in flight on w: counted
 * (keyless_hook_calls_skipped_total) and logged at most every 10 s, with
 * how many since the last line. */
static void skipped(kl_worker *w, const char *id, const char *hook)
{
    kl_owner_add(&w->hooks_skipped, 1);
    uint64_t held;
    if (!kl_log_every_due(&w->hooks_skipped_warn, 10000, kl_now_ns() / 1000000, &held))
        return;
    unsigned long long since = (unsigned long long)held + 1; /* this one too */
    kl_warn("%s: hook %s was not told of the request: worker %d has %llu such calls in flight, holding %zu "
            "bytes (at most %d, and half its share of listen.max_body_memory); %llu calls skipped since the "
            "last such line", id, hook, w->index, (unsigned long long)w->hooks_told, w->hooks_told_bytes,
            KL_HOOKS_TOLD_MAX, since);
}

/* A call made cut (kl_hook_cut_to_fit): counted
 * (keyless_hook_calls_cut_total) and logged at most every 10 s, as skipped
 * ones are. */
static void was_cut(kl_worker *w, const char *id, const char *hook, size_t whole, size_t len)
{
    kl_owner_add(&w->hooks_cut, 1);
    uint64_t held;
    if (!kl_log_every_due(&w->hooks_cut_warn, 10000, kl_now_ns() / 1000000, &held))
        return;
    size_t share = kl_body_memory(w);
    kl_warn("%s: hook %s was told of the request with its payload of %zu bytes cut to %zu (keyless.cut says what "
            "was taken out): %s; %llu calls cut since the last such line", id, hook, whole, len,
            whole > share / 2 ? "the whole is more than half the worker's share of listen.max_body_memory"
                              : "the worker's share of listen.max_body_memory had no room for the whole",
            (unsigned long long)held + 1);
}

/* metadata.estimated_cost: Aperture's CostEstimate, from the usage the
 * answer reported (NULL when it reported none). */
static cJSON *estimated_cost(kl_exchange *ex, const struct kl_usage *u)
{
    if (!u || !u->known)
        return NULL;
    cJSON *c = cJSON_CreateObject();
    if (ex->cost_known)
        cJSON_AddNumberToObject(c, "dollars", (double)ex->cost_nd / 1e9);
    const char *model = u->model_served ? u->model_served : ex->model;
    if (ex->provider && model)
        cJSON_AddItemToObject(c, "cost_basis", cJSON_CreateString(kl_arena_concat(
            &ex->arena, ex->provider->cost_basis ? ex->provider->cost_basis : ex->provider->id, "/",
            model, NULL)));
    cJSON *usage = cJSON_AddObjectToObject(c, "usage");
    /* only the counts there are, as Aperture's omitempty */
    const struct { const char *k; int64_t v; } counts[] = {
        {"input_tokens", u->input}, {"output_tokens", u->output}, {"cached_tokens", u->cache_read},
        {"cache_creation_input_tokens", u->cache_write}, {"reasoning_tokens", u->reasoning},
    };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        if (counts[i].v > 0)
            cJSON_AddNumberToObject(usage, counts[i].k, (double)counts[i].v);
    return c;
}

/* How the exchange ended, which Aperture's payload has no field for (its
 * HookCallData admits others): {"status", "upstream_status", "error_class",
 * "duration_ms"}. */
static cJSON *how_it_ended(const kl_exchange *ex)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "status", ex->status);
    if (ex->upstream_status)
        cJSON_AddNumberToObject(o, "upstream_status", ex->upstream_status);
    if (ex->error_class)
        cJSON_AddStringToObject(o, "error_class", kl_error_class_name(ex->error_class));
    cJSON_AddNumberToObject(o, "duration_ms", (double)((ex->t_end_ns - ex->t_start_ns) / 1000000));
    return o;
}

static void add_ref(cJSON *o, const char *k, cJSON *v)
{
    if (v)
        cJSON_AddItemReferenceToObject(o, k, v);
}

void kl_hooks_after(kl_exchange *ex)
{
    if (!ex->n_after_hooks || !ex->forwarded)
        return;
    const struct kl_usage *u = kl_account_usage(ex);
    bool tools_called = u && u->tool_calls > 0;
    unsigned need = 0;
    size_t nfire = 0;
    bool fire[KL_MAX_HOOKS];
    for (size_t i = 0; i < ex->n_after_hooks; i++) {
        const struct kl_hook_ref *r = &ex->after_hooks[i];
        fire[i] = (r->events & KL_EVENT_ENTIRE_REQUEST) || ((r->events & KL_EVENT_TOOL_CALL) && tools_called);
        if (fire[i]) {
            need |= r->send;
            nfire++;
        }
    }
    if (!nfire)
        return;
    kl_account_session_id(ex);
    const char *message = NULL;
    if (need & KL_SEND_USER_MESSAGE)
        kl_hook_user_message(ex, &message); /* a body it could misread was refused by the guard stage */
    cJSON *events = NULL;
    cJSON *answer = need & KL_SEND_ANSWER ? kl_account_answer(ex, &events) : NULL;
    cJSON *tools = need & KL_SEND_TOOLS && answer ? kl_account_tool_calls(ex, answer) : NULL;
    cJSON *cost = need & KL_SEND_ESTIMATED_COST ? estimated_cost(ex, u) : NULL;
    cJSON *quotas = need & KL_SEND_QUOTAS ? kl_admit_quota_states(ex) : NULL;
    cJSON *outcome = how_it_ended(ex);
    for (size_t i = 0; i < ex->n_after_hooks; i++) {
        if (!fire[i])
            continue;
        const struct kl_hook_ref *r = &ex->after_hooks[i];
        const struct kl_hook *h = r->hook;
        if (h->key_problem) {
            kl_warn("%s: hook %s was not told of the request: %s", ex->id, h->name, h->key_problem);
            continue;
        }
        kl_worker *w = ex->worker;
        /* a call more is not queued: a hook that cannot keep up would only
         * lose them later, after holding their payloads longer */
        if (w->hooks_told >= KL_HOOKS_TOLD_MAX) { /* before building what would not be sent */
            skipped(w, ex->id, h->name);
            continue;
        }
        cJSON *p = kl_hook_payload(ex, r->send, message);
        cJSON *md = cJSON_GetObjectItemCaseSensitive(p, "metadata");
        if (r->send & KL_SEND_ESTIMATED_COST)
            add_ref(md, "estimated_cost", cost);
        if (r->send & KL_SEND_QUOTAS)
            add_ref(md, "quotas", quotas);
        if (r->send & KL_SEND_RESPONSE_BODY)
            add_ref(p, "response_body", answer);
        if (r->send & KL_SEND_RAW_RESPONSES)
            add_ref(p, "raw_responses", events);
        if (r->send & KL_SEND_TOOLS)
            add_ref(p, "tool_calls", tools);
        add_ref(p, "keyless", outcome);
        size_t len;
        char *text = kl_hook_text(p, &len);
        size_t room = room_on(w);
        if (len > room) {
            cJSON_free(text);
            size_t whole = len;
            text = kl_hook_cut_to_fit(p, outcome, whole, room, &len);
            was_cut(w, ex->id, h->name, whole, len);
        }
        cJSON_Delete(p);
        size_t nlen = strlen(h->name);
        struct told *t = malloc(sizeof(*t) + nlen + 1);
        if (!t)
            abort();
        t->w = w;
        t->charged = len; /* the copy the call holds */
        memcpy(t->id, ex->id, sizeof(t->id));
        memcpy(t->hook, h->name, nlen + 1);
        kl_owner_add(&w->hooks_told, 1);
        kl_owner_add(&w->body_bytes, len);
        w->hooks_told_bytes += len;
        /* the answer is drained and ignored: only its status is looked at */
        struct kl_fetch *f = kl_hook_post(w, h, text, len, 0, on_told, t);
        cJSON_free(text);
        if (!f) {
            kl_owner_add(&w->hooks_told, (uint64_t)-1);
            kl_body_memory_return(w, len);
            w->hooks_told_bytes -= len;
            kl_warn("%s: hook %s was not told of the request: the call could not start", ex->id, h->name);
            free(t);
        }
    }
    cJSON_Delete(events);
    cJSON_Delete(answer);
    cJSON_Delete(tools);
    cJSON_Delete(cost);
    cJSON_Delete(quotas);
    cJSON_Delete(outcome);
}
