/* Stage 4, guard: first the built-in guardrails (guard/scan.c: secrets and
 * personal data in the body, blocked, redacted or logged), then the
 * pre_request hooks that apply to this caller and model
 * (their grants' send_hooks), asked one after another, highest preference
 * first (ties by name). Each sees the request as the previous one left it:
 * allow passes it on, modify replaces the body, block ends the exchange with
 * the hook's status and message in the caller's dialect. A hook that fails
 * (no answer, a non-2xx status, an answer that is not a verdict, a timeout)
 * is skipped when its fail_policy is fail_open (logged) and refuses the
 * request with 503 when it is fail_closed. */
#include "guard/guard.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account/session.h"
#include "admit/admit.h"
#include "authorize/grants.h"
#include "core/log.h"
#include "core/text.h"
#include "dialect/dialect.h"
#include "core/jsoncheck.h"
#include "core/jsonscan.h"
#include "guard/hookcall.h"
#include "guard/hooks.h"
#include "guard/notes.h"
#include "guard/scan.h"
#include "guard/signed.h"
#include "identity/identity.h"
#include "listen/http.h"
#include "upstream/fetch.h"

struct kl_guard_run {
    kl_exchange *ex;
    struct kl_hook_ref refs[KL_MAX_HOOKS];
    size_t n, next;
    bool modified;              /* a hook rewrote the body: the guardrails look again at the end */
    bool wants_message;         /* some hook is sent user_message */
    const char *message;        /* the body's last user turn (arena), NULL when it has none */
    struct kl_fetch *fetch;
};

static int by_preference(const void *a, const void *b)
{
    const struct kl_hook *x = ((const struct kl_hook_ref *)a)->hook, *y = ((const struct kl_hook_ref *)b)->hook;
    if (x->preference != y->preference)
        return x->preference > y->preference ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void run_free(struct kl_guard_run *r)
{
    if (!r)
        return;
    kl_fetch_cancel(r->fetch);
    r->fetch = NULL;
    r->ex->guard = NULL;
}

static void cancel(kl_exchange *ex)
{
    run_free(ex->guard);
}

/* Read r->message from the current body, once per body (a modify brings
 * another). The tree would hide from a hook what follows a \u0000 or a
 * key's second value, while the provider sees them: -1 for such a body. */
static int read_message(struct kl_guard_run *r)
{
    r->message = NULL;
    return r->wants_message ? kl_hook_user_message(r->ex, &r->message) : 0;
}

/* The JSON the hook is POSTed: metadata always, the rest as its grant's
 * "send" lists. */
static cJSON *payload(struct kl_guard_run *r, const struct kl_hook_ref *ref)
{
    cJSON *p = kl_hook_payload(r->ex, ref->send, r->message);
    cJSON *md = cJSON_GetObjectItemCaseSensitive(p, "metadata");
    if (ref->send & KL_SEND_QUOTAS) /* their balances before this request reserves anything */
        cJSON_AddItemToObject(md, "quotas", kl_admit_quota_states(r->ex));
    cJSON *cost = ref->send & KL_SEND_ESTIMATED_COST ? kl_admit_cost_estimate(r->ex) : NULL;
    if (cost) /* the most it can cost, as quotas will reserve it */
        cJSON_AddItemToObject(md, "estimated_cost", cost);
    return p;
}

static enum kl_step ask(struct kl_guard_run *r);

/* The hook at r->next could not give a verdict. */
static enum kl_step failed(struct kl_guard_run *r, const char *why)
{
    kl_exchange *ex = r->ex;
    const struct kl_hook *h = r->refs[r->next].hook;
    kl_guard_note(ex, "request", h->name, h->fail_closed ? "failed_closed" : "failed_open", NULL, 0, why);
    if (h->fail_closed) {
        run_free(r);
        return kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "guardrail hook %s failed: %s", h->name, why);
    }
    kl_warn("%s: guardrail hook %s failed (fail_open, request let through): %s", ex->id, h->name, why);
    r->next++;
    return ask(r);
}

/* The error kind whose envelope fits a hook's status code. */
static enum kl_err_kind kind_for(int status)
{
    switch (status) {
    case 400: return KL_ERR_INVALID;
    case 401: return KL_ERR_UNAUTHENTICATED;
    case 404: return KL_ERR_NOT_FOUND;
    case 413: return KL_ERR_TOO_LARGE;
    case 429: return KL_ERR_RATE_LIMIT;
    case 500: return KL_ERR_INTERNAL;
    case 502: return KL_ERR_BAD_GATEWAY;
    case 503: return KL_ERR_UNAVAILABLE;
    case 504: return KL_ERR_TIMEOUT;
    case 403: case 451: return KL_ERR_FORBIDDEN;
    /* another status keeps its class: a 422 is no permission error */
    default: return status >= 500 ? KL_ERR_INTERNAL : KL_ERR_INVALID;
    }
}

const char *kl_guard_replace_body(kl_exchange *ex, const char *text, size_t len)
{
    struct kl_request_facts f;
    const char *why = NULL;
    if (len > ex->cfg->listen.max_body_size)
        return "the new body is larger than listen.max_body_size";
    if (kl_dialect_request_facts(ex->ep, text, len, &ex->arena, &f, &why) < 0)
        return kl_arena_printf(&ex->arena, "the new body is not a valid request: %s", why);
    if (!ex->ep->model_in_path &&
        (!f.model || !ex->model_requested || strcmp(f.model, ex->model_requested) != 0))
        return "the new body asks for another model";
    if (f.stream != ex->stream)
        return "the new body changes whether the answer streams";
    /* two member names redacted alike ({"a@x.com": 1, "b@x.com": 2}) are
     * one name twice, which readers take apart differently */
    cJSON *tree = cJSON_ParseWithLength(text, len);
    bool twice = kl_json_has_duplicate_keys(tree);
    cJSON_Delete(tree);
    if (twice)
        return "it would name one member twice";
    free(ex->body);
    ex->body = malloc(len + 1);
    if (!ex->body)
        abort();
    kl_exchange_charge(ex, &ex->body_charged, len + 1, 0); /* a hook's body, in place of one let in */
    memcpy(ex->body, text, len);
    ex->body[len] = '\0';
    ex->body_len = len;
    kl_exchange_take_facts(ex, &f);
    return NULL;
}

/* "modify": the hook's request_body, whole, as the hook wrote it (its
 * bytes from the reply: a number keeps every digit, which a re-print by
 * cJSON would round). The reply was refused already for a duplicate key or
 * a \u0000 escape, so those bytes read the same to every reader. */
static const char *apply_modify(kl_exchange *ex, const char *reply, size_t len, const cJSON *body)
{
    if (!cJSON_IsObject(body))
        return "modify without a request_body object";
    struct kl_json_want w = {.key = "request_body"};
    if (kl_json_scan_members(reply, len, &w, 1) < 0 || !w.end)
        return "modify without a request_body object";
    const char *why = kl_guard_replace_body(ex, reply + w.start, w.end - w.start);
    return why ? kl_arena_printf(&ex->arena, "its modify: %s (a hook may not change the model or streaming)", why)
               : NULL;
}

/* Is a member's value one that asks for nothing (absent, null, false, 0)?
 * One written twice asks (readers differ on which is read). */
static bool unset(const char *s, const struct kl_json_want *w)
{
    if (!w->end)
        return true;
    if (w->count != 1)
        return false;
    size_t n = w->end - w->start;
    const char *v = s + w->start;
    return (n == 4 && !memcmp(v, "null", 4)) || (n == 5 && !memcmp(v, "false", 5)) || (n == 1 && v[0] == '0');
}

/* Token log probabilities (OpenAI chat's logprobs, a Responses answer's
 * include of message.output_text.logprobs, Gemini's responseLogprobs)
 * spell the answer's text a second time, token by token, beside it: a
 * finding redacted from the text reaches the caller there, each token alone
 * no finding. The member asking for them, or NULL. */
static const char *asks_logprobs(const char *body, size_t len)
{
    enum { LOGPROBS, TOP, INCLUDE, GEN, GEN_SNAKE, NW };
    struct kl_json_want w[NW] = {{.key = "logprobs"}, {.key = "top_logprobs"}, {.key = "include"},
                                 {.key = "generationConfig"}, {.key = "generation_config"}};
    if (kl_json_scan_members(body, len, w, NW) < 0)
        return NULL; /* no object: refused as a request elsewhere */
    if (!unset(body, &w[LOGPROBS]))
        return "logprobs";
    if (!unset(body, &w[TOP]))
        return "top_logprobs";
    if (w[INCLUDE].end) {
        cJSON *inc = cJSON_ParseWithLength(body + w[INCLUDE].start, w[INCLUDE].end - w[INCLUDE].start);
        const cJSON *e, *list = cJSON_IsArray(inc) ? inc : NULL;
        bool asks = w[INCLUDE].count != 1 || (cJSON_IsString(inc) && strstr(inc->valuestring, "logprobs"));
        cJSON_ArrayForEach(e, list)
            asks |= cJSON_IsString(e) && strstr(e->valuestring, "logprobs") != NULL;
        cJSON_Delete(inc);
        if (asks)
            return "include";
    }
    for (int k = GEN; k <= GEN_SNAKE; k++) {
        if (!w[k].end)
            continue;
        const char *g = body + w[k].start;
        size_t gl = w[k].end - w[k].start;
        struct kl_json_want gw[3] = {{.key = "responseLogprobs"}, {.key = "response_logprobs"}, {.key = "logprobs"}};
        if (kl_json_scan_members(g, gl, gw, 3) < 0)
            continue;
        for (int i = 0; i < 3; i++)
            if (!unset(g, &gw[i]))
                return gw[i].key; /* a literal: static */
    }
    return NULL;
}

/* The built-in guardrails over the caller's body: block, redact, log. The
 * provider's signed reasoning in it is left as it came (guard/signed.h). */
static enum kl_step scan_body(kl_exchange *ex)
{
    struct kl_scan_result res;
    const char *why = NULL;
    struct kl_scan_span *skip = NULL;
    size_t nskip = 0;
    if (ex->dialect == KL_DIALECT_ANTHROPIC || ex->dialect == KL_DIALECT_BEDROCK)
        nskip = kl_guard_signed_spans(ex->body, ex->body_len, &ex->arena, &skip);
    if (kl_scan(ex->cfg->guardrails, &ex->worker->scan, ex->body, ex->body_len, skip, nskip, &ex->arena, &res,
                &why) < 0)
        return kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "guardrails: %s", why);
    switch (res.action) {
    case KL_SCAN_OFF:
        return KL_NEXT;
    case KL_SCAN_LOG:
        kl_guard_note(ex, "request", NULL, "log", res.kinds, 0, NULL);
        kl_warn("%s: guardrails found %s (logged only)", ex->id, res.kinds);
        return KL_NEXT;
    case KL_SCAN_REDACT:
        why = kl_guard_replace_body(ex, res.body, res.body_len);
        if (why) {
            kl_guard_note(ex, "request", NULL, "block", res.kinds, 0, NULL);
            ex->body_withheld = true;
            return kl_fail(ex, KL_ERR_BLOCKED, KL_EC_BLOCKED,
                           "request blocked by guardrails: it contains %s, and redacting it would not leave a valid "
                           "request (%s)", res.kinds, why);
        }
        kl_guard_note(ex, "request", NULL, "redact", res.kinds, res.redacted, NULL);
        kl_info("%s: guardrails redacted %zu span%s (%s)%s", ex->id, res.redacted, res.redacted == 1 ? "" : "s",
                res.kinds, res.files ? kl_arena_printf(&ex->arena, ", in %zu base64 file%s too", res.files,
                                                       res.files == 1 ? "" : "s") : "");
        return KL_NEXT;
    case KL_SCAN_BLOCK:
        kl_guard_note(ex, "request", NULL, "block", res.overflow ? res.kinds : res.block_kinds, 0,
                      res.overflow ? res.block_kinds : NULL);
        kl_info("%s: blocked by guardrails (%s)", ex->id, res.block_kinds);
        ex->body_withheld = true; /* a secret refused here is not kept in a capture either */
        return kl_fail(ex, KL_ERR_BLOCKED, KL_EC_BLOCKED, "request blocked by guardrails: it contains %s",
                       res.block_kinds);
    }
    return KL_NEXT;
}

static void on_reply(void *arg, int status, const char *body, size_t len, const char *error)
{
    struct kl_guard_run *r = arg;
    kl_exchange *ex = r->ex;
    r->fetch = NULL;
    const struct kl_hook *h = r->refs[r->next].hook;
    char why[160];
    cJSON *reply = NULL;
    const cJSON *action = NULL;
    enum kl_step step;
    if (!status && atomic_load(&ex->worker->server->stopping)) {
        /* shutdown cut the call short: neither the hook's verdict nor its
         * fail_policy; the request is not forwarded */
        run_free(r);
        kl_pipeline_continue(ex, kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_SHUTDOWN, "the gateway is shutting down"));
        return;
    }
    if (!status) {
        snprintf(why, sizeof(why), "%s", error ? error : "no answer");
    } else if (status / 100 != 2) {
        snprintf(why, sizeof(why), "it answered HTTP %d", status);
    } else if (kl_json_validate(body, len, NULL) < 0 || !(reply = cJSON_ParseWithLength(body, len)) ||
               !cJSON_IsString(action = cJSON_GetObjectItemCaseSensitive(reply, "action"))) {
        /* one JSON value and nothing after it: {"action":"allow"}{"action":"block"} is no verdict */
        snprintf(why, sizeof(why), "its answer is not {\"action\": \"allow\"|\"block\"|\"modify\", ...}");
    } else if (kl_json_has_duplicate_keys(reply) || kl_json_has_nul_escape(body, len)) {
        /* cJSON reads a duplicate's first value, Aperture's Go reader the
         * last; a \u0000 ends a cJSON string early */
        snprintf(why, sizeof(why), "%s", "its answer has a duplicate key or a \\u0000 escape, which readers read "
                                         "differently");
    } else {
        why[0] = '\0';
    }
    const char *a = why[0] ? "" : action->valuestring;
    if (strcmp(a, "allow") == 0) {
        kl_guard_note(ex, "request", h->name, "allow", NULL, 0, NULL);
        r->next++;
        step = ask(r);
    } else if (strcmp(a, "block") == 0) {
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(reply, "status_code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(reply, "message");
        int code = cJSON_IsNumber(sc) && sc->valuedouble >= 400 && sc->valuedouble <= 599 ? (int)sc->valuedouble : 403;
        const char *m = cJSON_IsString(msg) && msg->valuestring[0] ? msg->valuestring : "request blocked by guardrail";
        kl_guard_note(ex, "request", h->name, "block", NULL, 0, m);
        kl_info("%s: blocked by guardrail hook %s (%d)", ex->id, h->name, code);
        run_free(r);
        ex->fail_status = code;
        ex->body_withheld = true; /* as for the built-in rules: what a guardrail refused is not captured */
        step = kl_fail(ex, kind_for(code), KL_EC_BLOCKED, "%s", m);
    } else if (strcmp(a, "modify") == 0) {
        const char *bad = apply_modify(ex, body, len, cJSON_GetObjectItemCaseSensitive(reply, "request_body"));
        if (bad) {
            snprintf(why, sizeof(why), "%s", bad);
            step = failed(r, why);
        } else {
            /* the reply had no \u0000 and no duplicate key, so this reads
             * the new body as the provider will */
            kl_guard_note(ex, "request", h->name, "modify", NULL, 0, NULL);
            read_message(r);
            r->modified = true;
            /* not read by the guardrails until every hook has answered: a
             * request that ends before (a later hook blocks or fails, the
             * caller leaves) keeps no capture of it */
            ex->body_scanned = false;
            r->next++;
            step = ask(r);
        }
    } else {
        if (!why[0])
            snprintf(why, sizeof(why), "unknown action \"%.40s\"", a);
        step = failed(r, why);
    }
    cJSON_Delete(reply);
    if (step != KL_WAIT)
        kl_pipeline_continue(ex, step);
}

/* Ask the hook at r->next, or finish when none is left. */
static enum kl_step ask(struct kl_guard_run *r)
{
    kl_exchange *ex = r->ex;
    if (r->next == r->n) {
        bool rescan = r->modified && ex->cfg->guardrails;
        run_free(r);
        /* what a hook wrote goes through the same guardrails as what the
         * caller wrote */
        if (!rescan)
            return KL_NEXT;
        enum kl_step st = scan_body(ex);
        ex->body_scanned = st == KL_NEXT;
        return st;
    }
    const struct kl_hook_ref *ref = &r->refs[r->next];
    const struct kl_hook *h = ref->hook;
    if (h->key_problem)
        return failed(r, h->key_problem);
    cJSON *body = payload(r, ref);
    r->fetch = kl_hook_call(ex->worker, h, body, ex->cfg->listen.max_body_size * 2 + (1u << 20), on_reply, r);
    cJSON_Delete(body);
    if (!r->fetch)
        return failed(r, "the request to it could not be started");
    ex->cancel = cancel;
    return KL_WAIT;
}

static int by_start(const void *a, const void *b)
{
    const struct kl_scan_hit *x = a, *y = b;
    if (x->from != y->from)
        return x->from < y->from ? -1 : 1;
    return x->to > y->to ? -1 : x->to < y->to ? 1 : 0;
}

/* The session id goes on record and to hooks. It is what the caller wrote
 * in a header or its body (Claude Code's metadata.user_id), so a finding
 * there would be kept where the body's was redacted or refused: each one a
 * rule would block or redact is replaced by its mark, so the same session
 * still groups its requests. */
static void scrub_session(kl_exchange *ex)
{
    const char *sid = ex->session_id;
    struct kl_scan_hit *hits;
    size_t n;
    const char *why;
    if (kl_scan_text(ex->cfg->guardrails, &ex->worker->scan, sid, strlen(sid), &hits, &n, &why) < 0) {
        ex->session_id = NULL; /* more findings than are kept track of: none kept */
        return;
    }
    if (n == 0)
        return; /* nothing found (hits is NULL) */
    size_t cap = strlen(sid) + 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(hits[i].kind) + 12;
    char *out = kl_arena_alloc(&ex->arena, cap);
    size_t o = 0, pos = 0;
    bool changed = false;
    /* a finding is reported at each length it matches ("a@example.co",
     * "a@example.com"): overlapping ones are one mark, the longest span */
    for (size_t i = 0; i < n; i++)
        kl_scan_whole_chars(sid, strlen(sid), &hits[i].from, &hits[i].to);
    qsort(hits, n, sizeof(*hits), by_start);
    for (size_t i = 0; i < n; i++) {
        if (hits[i].action < KL_SCAN_REDACT)
            continue;
        if (hits[i].from < pos) {
            if (changed && hits[i].to > pos)
                pos = hits[i].to;
            continue;
        }
        memcpy(out + o, sid + pos, hits[i].from - pos);
        o += hits[i].from - pos;
        o += (size_t)sprintf(out + o, "[REDACTED:%s]", hits[i].kind);
        pos = hits[i].to;
        changed = true;
    }
    free(hits);
    if (!changed)
        return;
    strcpy(out + o, sid + pos);
    ex->session_id = out;
}

/* the session as the caller's own body has it, before anything rewrites it */
static void keep_session(kl_exchange *ex)
{
    if (ex->session_id)
        return;
    ex->session_id = kl_session_id(&ex->arena, ex->req.headers, ex->req.nheaders, ex->body, &ex->body_map,
                                   ex->ident ? ex->ident->login : NULL, ex->worker->sha256);
    if (ex->session_id && ex->cfg->guardrails)
        scrub_session(ex);
}

enum kl_step kl_guard_run(kl_exchange *ex)
{
    const struct kl_grant_set *s = ex->grant_set;
    if (!ex->ep->inference || !s || !ex->provider)
        return KL_NEXT;
    if (ex->cfg->guardrails) {
        const char *lp = kl_guardrails_redacts_answers(ex->cfg->guardrails)
                             ? asks_logprobs(ex->body, ex->body_len) : NULL;
        if (lp) {
            ex->body_withheld = true; /* not read by the guardrails */
            return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST,
                           "guardrails redact answers, and this request asks for token log probabilities (%s), "
                           "which would spell what they take out of the text again, token by token", lp);
        }
        keep_session(ex);
        enum kl_step st = scan_body(ex);
        if (st != KL_NEXT)
            return st;
        ex->body_scanned = true;
    }
    size_t i = 0;
    while (i < s->ncaps && !s->caps[i].cap->send_hooks)
        i++;
    if (i == s->ncaps)
        return KL_NEXT; /* no hooks for this caller: the common case, decided without building a name */
    char qualified[512];
    if (!kl_join2(qualified, sizeof(qualified), ex->provider->id, '/', ex->model))
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "model name too long");
    struct kl_hook_ref all[KL_MAX_HOOKS];
    size_t nall = 0;
    for (; i < s->ncaps; i++) {
        const struct kl_cap *cap = s->caps[i].cap;
        if (!cap->send_hooks || !kl_cap_applies(cap, qualified))
            continue;
        const char *why;
        const cJSON *at;
        /* fail closed: a guardrail that cannot be read is not skipped */
        if (kl_send_hooks_read(cap->raw, ex->cfg->hooks, &ex->arena, all, KL_MAX_HOOKS, &nall, &why, &at) < 0)
            return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "access denied: a grant's send_hooks: %s", why);
    }
    if (!nall)
        return KL_NEXT;
    struct kl_guard_run *r = kl_arena_alloc(&ex->arena, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->ex = ex;
    struct kl_hook_ref *after = NULL;
    size_t nafter = 0;
    for (size_t k = 0; k < nall; k++) {
        r->wants_message |= (all[k].send & KL_SEND_USER_MESSAGE) != 0;
        if (all[k].events & KL_EVENT_PRE_REQUEST)
            r->refs[r->n++] = all[k];
        if (all[k].events & (KL_EVENT_ENTIRE_REQUEST | KL_EVENT_TOOL_CALL)) {
            if (!after)
                after = kl_arena_alloc(&ex->arena, nall * sizeof(*after));
            after[nafter++] = all[k];
            ex->keep_answer |= (all[k].send & KL_SEND_ANSWER) != 0;
        }
    }
    qsort(r->refs, r->n, sizeof(r->refs[0]), by_preference);
    if (read_message(r) < 0) /* refused rather than misread */
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST,
                       "a guardrail hook reads this request's messages, and it holds a \\u0000 escape or a "
                       "duplicate key, which the hook could not see as the provider would");
    keep_session(ex);
    ex->after_hooks = after;
    ex->n_after_hooks = nafter;
    if (!r->n)
        return KL_NEXT;
    /* a caller over a rate limit costs no hook call (with the body) */
    enum kl_step st = kl_admit_rate_check(ex);
    if (st != KL_NEXT)
        return st;
    ex->guard = r;
    ex->pre_hooks_asked = true;
    return ask(r);
}
