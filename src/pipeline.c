/* The request pipeline, top to bottom.
 *
 *   1 listen     src/listen/     accept, parse HTTP/1.1 heads, limits, endpoint   -> kl_pipeline_start
 *     endpoint   (here)          404/405
 *   2 identity   src/identity/   who is calling
 *   3 grants     src/authorize/  the caller's grants: any role at all? (and a model
 *                                named in the path: may they use it?)
 *     body       src/listen/     the request body, read only now: a caller refused
 *                                above uploads nothing (100 Continue goes out here)
 *     facts      (here)          what the body asks for: model, stream (400)
 *     authorize  src/authorize/  may they use this model?
 *     chained    src/authorize/  a stored answer carried on (previous_response_id)
 *                                is the caller's own
 *     local      src/admin/      model lists and /api/ answered by keyless itself
 *     health     src/route/      a provider cooling down after failures is passed over
 *   4 guard      src/guard/      PII/secret scanning, hooks (a caller over a rate limit
 *                                is refused before they are asked: admit.h)
 *     tools      src/guard/      tool policy: refused tools taken out of the request
 *   5 admit      src/admit/      quotas and rate limits: reserve before forwarding
 *   6 route      src/route/      provider, URL, headers with the provider key, body;
 *                                failover to the next provider when one fails unanswered
 *     begin      src/record/     the "in progress" record, for requests still running after 100 ms
 *   7 upstream   src/upstream/   own HTTP/1.1 client or libcurl, streamed back with backpressure
 *   8 account    src/account/    usage and cost read from the answer as it passes; quotas
 *                                and the tool policy can end it
 *     answer     src/guard/      guardrails over the answer: a whole one before it is
 *                                relayed, a stream once it has ended
 *   9 record     src/record/     the audit record, once the exchange ends
 *  10 after      src/guard/      entire_request / tool_call_entire_request hooks
 *
 * Stages 2-7 run in order from the table below; a stage passes the exchange
 * on (KL_NEXT), answers it (KL_DONE), or goes asynchronous (KL_WAIT) and
 * calls kl_pipeline_resume later. Stages 8 and 9 run as the response flows
 * and when it ends (kl_pipeline_response_* and kl_pipeline_finish); 10
 * runs at the end too, and the hooks it tells are not waited for. */
#include "pipeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "account/account.h"
#include "admin/admin.h"
#include "admit/admit.h"
#include "authorize/authorize.h"
#include "authorize/chained.h"
#include "guard/after.h"
#include "guard/guard.h"
#include "guard/tools.h"
#include "identity/identity.h"
#include "listen/http.h"
#include "listen/conn.h"
#include "listen/server.h"
#include "record/record.h"
#include "route/failover.h"
#include "route/route.h"
#include "upstream/upstream.h"

static enum kl_step endpoint_run(kl_exchange *ex);
static enum kl_step facts_run(kl_exchange *ex);
static enum kl_step local_run(kl_exchange *ex);
static enum kl_step begin_run(kl_exchange *ex);

static const struct kl_stage {
    const char *name;
    enum kl_step (*run)(kl_exchange *ex);
} stages[] = {
    {"endpoint", endpoint_run},
    {"identity", kl_identity_run},
    {"grants", kl_authorize_caller_run},
    {"body", kl_conn_body},
    {"facts", facts_run},
    {"authorize", kl_authorize_run},
    {"chained", kl_chained_run},
    {"local", local_run},
    {"health", kl_failover_health_run},
    {"guard", kl_guard_run},
    {"tools", kl_tools_run},
    {"admit", kl_admit_run},
    {"route", kl_route_run},
    {"begin", begin_run},
    {"upstream", kl_upstream_run},
};

#define NSTAGES ((int)(sizeof(stages) / sizeof(stages[0])))

static void run_from(kl_exchange *ex, int i)
{
    for (; i < NSTAGES; i++) {
        ex->stage = i;
        enum kl_step s = stages[i].run(ex);
        if (s == KL_WAIT)
            return;
        if (s == KL_DONE) {
            kl_pipeline_finish(ex);
            return;
        }
    }
}

static int stage_index(const char *name)
{
    int i = 0;
    while (i < NSTAGES - 1 && strcmp(stages[i].name, name) != 0)
        i++;
    return i;
}

/* The provider failed before the caller got anything, and p serves the
 * same request under the same policy (route/failover.h): build the request
 * for p and send it. */
static void fail_over(kl_exchange *ex, const struct kl_provider *p)
{
    kl_failover_switch(ex, p);
    kl_failover_health_run(ex); /* p may be cooling down too */
    run_from(ex, stage_index("route"));
}

void kl_pipeline_start(kl_exchange *ex)
{
    if (!kl_record_admit(ex)) {
        ex->fail_retry = 1; /* the writer drains the queue within a batch or two */
        kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                "the gateway cannot record more requests right now (record queue full); retry shortly");
        kl_pipeline_finish(ex);
        return;
    }
    run_from(ex, 0);
}

void kl_pipeline_resume(kl_exchange *ex)
{
    ex->cancel = NULL;
    run_from(ex, ex->stage + 1);
}

void kl_pipeline_continue(kl_exchange *ex, enum kl_step step)
{
    if (step == KL_NEXT)
        kl_pipeline_resume(ex);
    else if (step == KL_DONE)
        kl_pipeline_finish(ex);
}

/* ---- endpoint: what is being asked, read from method and path ---- */

static enum kl_step endpoint_run(kl_exchange *ex)
{
    const struct kl_endpoint_info *ep = ex->ep;
    if (ep->id == KL_EP_UNKNOWN)
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no such endpoint: %s %s",
                       ex->req.method, ex->req.path);
    if (ep->id != KL_EP_ADMIN && !ep->method) {
        if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
            return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "method %s is not allowed on %s; use GET",
                           ex->req.method, ex->req.path);
    } else if (ep->method && strcmp(ep->method, "*") != 0 && strcmp(ex->req.method, ep->method) != 0) {
        return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "method %s is not allowed on %s; use %s",
                       ex->req.method, ex->req.path, ep->method);
    }
    if (ep->id == KL_EP_ROOT)
        return kl_admin_root(ex);
    return KL_NEXT;
}

/* ---- facts: what an inference request asks for, read from its body ---- */

static enum kl_step facts_run(kl_exchange *ex)
{
    const struct kl_endpoint_info *ep = ex->ep;
    if (!ep->inference)
        return KL_NEXT;
    struct kl_request_facts f;
    const char *why = NULL;
    if (kl_dialect_request_facts(ep, ex->body, ex->body_len, &ex->arena, &f, &why) < 0) {
        /* a body refused for a later field ("stream": "true", "n": "1_0")
         * was read as far as its model: the record says which it named */
        if (!ep->model_in_path && f.model)
            ex->model_requested = f.model;
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "%s", why);
    }
    if (!ep->model_in_path)
        ex->model_requested = f.model;
    kl_exchange_take_facts(ex, &f);
    return KL_NEXT;
}

static enum kl_step local_run(kl_exchange *ex)
{
    return ex->ep->inference ? KL_NEXT : kl_admin_run(ex);
}

/* The "in progress" record, so a request cut short by a crash is still on
 * record after a restart: written if the request still runs 100 ms from
 * now (record.c). */
static enum kl_step begin_run(kl_exchange *ex)
{
    if (!ex->forwarded) { /* once, not again for a failover */
        ex->forwarded = true;
        kl_record_begin(ex);
    }
    return KL_NEXT;
}

/* ---- answers ---- */

/* The longest wait an error asks SDKs to sleep on. The OpenAI and Anthropic
 * SDKs sleep for whatever Retry-After says, hours included, before each of
 * their two retries (a refusal until a daily quota refills left a script
 * hanging for two days); Gemini CLI takes a wait over 300 s as final
 * itself. A longer one is still said, but with x-should-retry: false and in
 * the message, so the caller is told at once. */
#define KL_RETRY_SLEEP_MAX 300

/* keyless's own errors carry its request id also where each dialect's SDKs
 * read theirs (the OpenAI SDK's requestID, the Anthropic SDK's, the AWS
 * SDKs' $metadata.requestId), so an error an SDK or agent shows names the
 * record. Not over a provider's own id, kept from an error keyless retold. */
static const char *request_id_header(kl_exchange *ex, const char *extra)
{
    static const char *const names[] = {[KL_DIALECT_OPENAI] = "x-request-id", [KL_DIALECT_ANTHROPIC] = "request-id",
                                        [KL_DIALECT_GEMINI] = NULL, [KL_DIALECT_BEDROCK] = "x-amzn-RequestId"};
    const char *name = names[ex->dialect];
    size_t n;
    if (!name || (extra && kl_http_head_value(extra, name, &n)))
        return extra;
    return kl_arena_printf(&ex->arena, "%s%s: %s\r\n", extra ? extra : "", name, ex->id);
}

enum kl_step kl_fail(kl_exchange *ex, enum kl_err_kind kind, enum kl_error_class ec,
                     const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bool long_wait = ex->fail_retry > KL_RETRY_SLEEP_MAX;
    if (long_wait && n >= 0 && (size_t)n < sizeof(msg)) {
        long long m = (ex->fail_retry + 59) / 60;
        snprintf(msg + n, sizeof(msg) - (size_t)n, ": try again in %lldh%02lldm", m / 60, m % 60);
    }
    ex->error_class = ec;
    ex->error_message = kl_arena_strdup(&ex->arena, msg);
    char *body = kl_dialect_error_body_retry(&ex->arena, ex->dialect, kind, msg, ex->fail_retry);
    const char *extra = ex->fail_headers;
    /* when to try again: the header every SDK reads; never, or not worth
     * sleeping on, in the header the OpenAI and Anthropic SDKs and Claude
     * Code read (a 429 they would otherwise retry for minutes, or the SDKs
     * sleep on for hours); Gemini's is in the body (RetryInfo) */
    if (ex->fail_retry > 0)
        extra = kl_arena_printf(&ex->arena, "%sRetry-After: %lld\r\n", extra ? extra : "", (long long)ex->fail_retry);
    if (ex->fail_retry < 0 || long_wait)
        extra = kl_arena_printf(&ex->arena, "%sx-should-retry: false\r\n", extra ? extra : "");
    if (kind == KL_ERR_METHOD)
        extra = kl_arena_printf(&ex->arena, "Allow: %s\r\n", ex->ep->method && strcmp(ex->ep->method, "*")
                                                              ? ex->ep->method : kl_admin_allow(ex));
    if (ex->dialect == KL_DIALECT_BEDROCK) /* where the AWS SDKs read which exception to raise */
        extra = kl_arena_printf(&ex->arena, "%sx-amzn-ErrorType: %s\r\n", extra ? extra : "",
                                kl_dialect_bedrock_error_type(kind));
    extra = request_id_header(ex, extra);
    kl_respond(ex, ex->fail_status ? ex->fail_status : kl_err_status(kind), "application/json", extra, body,
               strlen(body));
    return KL_DONE;
}

void kl_pipeline_reject(kl_exchange *ex, enum kl_err_kind kind, enum kl_error_class ec,
                        const char *message)
{
    kl_fail(ex, kind, ec, "%s", message);
    kl_pipeline_finish(ex);
}

/* Whether a response head says its body is JSON. */
static bool json_body(const char *headers)
{
    size_t n;
    const char *ct = kl_http_head_value(headers, "content-type", &n);
    return ct && n >= 16 && strncasecmp(ct, "application/json", 16) == 0;
}

void kl_pipeline_response_head(kl_exchange *ex, int status, const char *headers,
                               int64_t content_length, bool event_stream)
{
    if (status / 100 != 2) /* a 2xx is judged below: a stream's may wait for its first event */
        kl_failover_observe(ex, status, KL_EC_NONE);
    if (status >= 400 && kl_failover_wanted(ex, status, KL_EC_NONE)) {
        /* read this answer to its end (the connection stays reusable),
         * then send the request to the next provider */
        ex->failover_to = kl_failover_next(ex, status, KL_EC_UPSTREAM_ERROR,
                                           kl_arena_printf(&ex->arena, "provider %s answered %d", ex->provider->id,
                                                           status));
        if (ex->failover_to) {
            ex->failover_at_ns = kl_now_ns();
            return;
        }
    }
    /* A streamed answer is events whatever its Content-Type says: some
     * self-hosted servers send none, or text/plain (not Gemini's JSON
     * array, Bedrock's event stream, nor a JSON error); one labelled
     * text/html is held until its first bytes tell events from a page
     * (kl_account_begin) */
    if (!event_stream && ex->stream && status / 100 == 2 && ex->ep->id != KL_EP_GEMINI_STREAM &&
        ex->ep->dialect != KL_DIALECT_BEDROCK && !json_body(headers))
        event_stream = true;
    ex->upstream_status = status;
    /* a redirect is no answer either: keyless does not follow it, and the
     * caller is not told where it led (kl_h1_drop_response_header) */
    if (status >= 400 || (status / 100 == 3 && status != 304))
        ex->error_class = KL_EC_UPSTREAM_ERROR;
    kl_account_begin(ex, status, event_stream, headers);
    if (status / 100 == 2 && !kl_account_head_held(ex))
        kl_failover_observe(ex, status, KL_EC_NONE);
    if (event_stream || kl_account_is_event_stream(ex))
        content_length = -1; /* we may drop a chunk, or end it with an error event (quota, upstream failure) */
    bool had_key;
    headers = kl_route_response_headers(&ex->arena, headers, ex->sent_keys, &had_key);
    if (had_key)
        kl_warn("%s: provider %s echoed its key in a response header; the header was dropped", ex->id,
                ex->provider->id);
    kl_record_response_headers(ex, headers);
    kl_account_respond_start(ex, status, headers, content_length);
}

/* A stream whose head waited for its first event (kl_account_begin) has
 * had it, or has ended: an error there is the provider's failure as the
 * status it would have had before the stream, and the caller has had
 * nothing yet, so the request may fail over (true: ex->failover_to is
 * set). Otherwise the head goes on. Health counts the outcome either way;
 * a stream that ended with no event at all counts as its 200. */
static bool first_event_fails_over(kl_exchange *ex, bool ended)
{
    const char *error = NULL;
    int status = kl_account_first_event(ex, &error);
    if (!status && !(ended && kl_account_head_held(ex)))
        return false;
    if (!status)
        status = ex->upstream_status;
    kl_failover_observe(ex, status, KL_EC_NONE);
    if (status >= 400 && kl_failover_wanted(ex, status, KL_EC_NONE) &&
        (ex->failover_to = kl_failover_next(ex, status, KL_EC_UPSTREAM_ERROR,
                                            kl_arena_printf(&ex->arena, "provider %s's stream began with %s",
                                                            ex->provider->id, error ? error : "an error")))) {
        kl_account_free(ex); /* the next provider's answer is read afresh */
        ex->failover_at_ns = kl_now_ns();
        return true;
    }
    kl_account_release_head(ex);
    return false;
}

/* The answer as the caller may have it: a provider that echoes its key in
 * a body (an echo server, a debugging proxy) must not hand it on, in the
 * answer, its capture or a hook's payload (data NULL: what waited). */
static const char *mask_key(kl_exchange *ex, const char *data, size_t len, size_t *out_len)
{
    bool masked = false;
    const char *out = kl_route_mask_key(&ex->arena, ex->sent_keys, &ex->key_carry, &ex->key_carry_len, data, len,
                                        out_len, &masked);
    if (masked && !ex->key_masked)
        kl_warn("%s: provider %s echoed its key in its answer; it was masked", ex->id, ex->provider->id);
    ex->key_masked |= masked;
    return out;
}

bool kl_pipeline_response_data(kl_exchange *ex, const char *data, size_t len)
{
    if (ex->failover_to) {
        /* the failed answer, not the caller's: read to its end so the
         * connection can be reused, unless it is long (then the transfer
         * is ended here, and kl_pipeline_upstream_failed fails over) */
        ex->failover_drained += len;
        return ex->failover_drained <= KL_FAILOVER_DRAIN_BYTES &&
               kl_now_ns() - ex->failover_at_ns <= (int64_t)KL_FAILOVER_DRAIN_MS * 1000000;
    }
    data = mask_key(ex, data, len, &len);
    bool more = !len || kl_account_data(ex, data, len);
    if (first_event_fails_over(ex, false))
        return true; /* the rest is read to its end (the connection stays reusable) */
    return more;
}

/* A stream the caller already has a 2xx head for ends with an error event
 * its SDK raises (the stream's own framing: SSE, or an AWS event stream),
 * and the exchange is finished. A Gemini stream's bare JSON tail follows
 * once the client has read the rest: an SDK that raises it only as a read
 * of its own (errors.c) would miss it if it came in the same moment as the
 * events before it, and retry. */
static void end_stream_with_error(kl_exchange *ex, enum kl_err_kind kind, const char *message)
{
    size_t evl, tl = 0, cl;
    /* a limit that refills: when, in the words the agents read in a stream
     * (Google's "Please retry in", which Gemini CLI waits for; OpenAI's
     * "Please try again in", which Codex does), instead of retrying at once
     * into the same stop, each time a billed request */
    if (ex->fail_retry > 0 && (kind == KL_ERR_RATE_LIMIT || kind == KL_ERR_QUOTA))
        message = kl_arena_printf(&ex->arena, "%s. Please %s in %llds.", message,
                                  ex->dialect == KL_DIALECT_GEMINI ? "retry" : "try again", (long long)ex->fail_retry);
    /* a stop by a rule, which a retry meets again; a provider's failure
     * the client may well retry */
    bool rule = ex->error_class == KL_EC_BLOCKED || ex->error_class == KL_EC_QUOTA ||
                ex->error_class == KL_EC_RATE_LIMITED;
    const char *closing = rule ? kl_account_close_blocks(ex, message, &cl) : NULL;
    if (closing)
        kl_respond_data(ex, closing, cl);
    char *ev = kl_dialect_error_event(&ex->arena, ex->dialect, ex->ep->id, kind, message, &evl);
    kl_respond_data(ex, ev, evl);
    const char *tail = kl_dialect_error_tail(&ex->arena, ex->dialect, ex->ep->id, kind, message, &tl);
    if (tail && kl_respond_last_apart(ex, tail, tl, kl_pipeline_finish)) {
        ex->ending_apart = true;
        return;
    }
    kl_respond_end(ex);
    kl_pipeline_finish(ex);
}

void kl_pipeline_response_end(kl_exchange *ex)
{
    if (ex->failover_to) {
        fail_over(ex, ex->failover_to);
        return;
    }
    bool was_cut = ex->cut_off;
    size_t rest;
    const char *tail = mask_key(ex, NULL, 0, &rest);
    if (rest)
        kl_account_data(ex, tail, rest);
    kl_account_end(ex);
    if (first_event_fails_over(ex, true)) { /* the failed answer has ended: on to the next provider */
        fail_over(ex, ex->failover_to);
        return;
    }
    kl_account_note_error_end(ex);
    if (!was_cut && ex->cut_off && ex->head_sent && kl_account_is_event_stream(ex)) {
        /* the stream's tail, read only now that it ended, broke a rule
         * (a tool, a quota, an unreadable message): it was not relayed */
        ex->error_class = ex->cut_class;
        kl_info("%s: %s", ex->id, ex->error_message);
        end_stream_with_error(ex, ex->cut_kind, ex->error_message);
        return;
    }
    kl_respond_end(ex);
    kl_pipeline_finish(ex);
}

void kl_pipeline_upstream_failed(kl_exchange *ex, enum kl_err_kind kind,
                                 enum kl_error_class ec, const char *message)
{
    if (!ex->failover_to)
        kl_failover_observe(ex, 0, ec); /* a failover decided on the answer's status has told it already */
    if (ex->failover_to && ec != KL_EC_SHUTDOWN && ex->conn) {
        fail_over(ex, ex->failover_to); /* the failed answer broke off: the decision stands */
        return;
    }
    kl_failover_abandon(ex);
    const struct kl_provider *next;
    if (kl_failover_wanted(ex, 0, ec) && (next = kl_failover_next(ex, 0, ec, message))) {
        fail_over(ex, next);
        return;
    }
    if (!ex->head_sent) {
        kl_fail(ex, kind, ec, "%s", message);
    } else {
        /* The caller already has a 2xx head. A stream gets a final error
         * event its SDK understands; any other body is cut off so the
         * client sees it incomplete rather than silently short. */
        ex->error_class = ec;
        ex->error_message = kl_arena_strdup(&ex->arena, message);
        kl_account_drop_partial(ex);
        kl_account_end(ex);
        if (kl_account_is_event_stream(ex) && ex->upstream_status < 400) {
            end_stream_with_error(ex, kind, message);
            return;
        }
        kl_respond_abort(ex);
    }
    kl_pipeline_finish(ex);
}

/* ---- the end of every exchange ---- */

void kl_pipeline_client_gone(kl_exchange *ex, enum kl_error_class why)
{
    kl_failover_abandon(ex);
    if (ex->cancel)
        ex->cancel(ex);
    kl_upstream_cancel(ex);
    /* one that left while its stream's tail waited had had its answer's end */
    if (!ex->ending_apart && (!ex->error_class || ex->error_class == KL_EC_UPSTREAM_ERROR))
        ex->error_class = why;
    if (!ex->status || ex->head_sent)
        ex->status = ex->head_sent ? ex->status : 499;
    kl_pipeline_finish(ex);
}

void kl_pipeline_finish(kl_exchange *ex)
{
    kl_worker *w = ex->worker;
    ex->t_end_ns = kl_now_ns();
    kl_account_finish(ex);
    kl_account_scan_relayed(ex);
    kl_admit_settle(ex);
    kl_chained_note(ex);
    kl_failover_end(ex);
    kl_record_exchange(ex);
    kl_hooks_after(ex);
    kl_identity_release(ex);
    kl_account_free(ex);
    kl_conn_exchange_done(ex);
    kl_exchange_free(ex);
    kl_server_maybe_stopped(w);
}
