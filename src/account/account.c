#include "account/account.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "account/assemble.h"
#include "account/prices.h"
#include "account/session.h"
#include "account/skeleton.h"
#include "account/sse.h"
#include "account/usage.h"
#include "admit/admit.h"
#include "core/jsoncheck.h"
#include "core/urlquery.h"
#include "core/jsonscan.h"
#include "core/text.h"
#include "dialect/dialect.h"
#include "dialect/evstream.h"
#include "guard/answer.h"
#include "guard/notes.h"
#include "guard/scan.h"
#include "guard/stream.h"
#include "guard/tools.h"
#include "route/failover.h"
#include "route/route.h"
#include "identity/identity.h"
#include "listen/conn.h"
#include "listen/http.h"
#include "record/rec.h"
#include "record/record.h"
#include "pipeline.h"

/* Largest whole (non-stream) answer kept to read its usage: as it came up
 * to KL_WHOLE_PLAIN, then its skeleton (account/skeleton.h), which reaches
 * this size only for an answer of millions of small members. */
#define KL_WHOLE_MAX (64u << 20)
#define KL_WHOLE_PLAIN (1u << 20)
/* The longest stream event held while it completes (a Gemini image or an
 * OpenAI partial image is a few MB): one that never ends would be held
 * without end, as the provider kept sending. */
#define KL_EVENT_MAX (16u << 20)

enum body_mode {
    BODY_NONE,          /* nothing to read (errors, endpoints without usage) */
    BODY_WHOLE,         /* one JSON document, read at the end */
    BODY_EVENTS,        /* server-sent events, read one by one */
    BODY_ARRAY,         /* Gemini's JSON-array stream (no alt=sse) */
    BODY_FRAMES,        /* an AWS event stream (Bedrock), read message by message */
};

struct kl_account {
    enum body_mode mode;
    bool split_events;          /* the SSE body is forwarded event by event */
    bool strip_usage_chunk;     /* drop the usage-only chunk we asked for */
    kl_sse sse;
    kl_evs evs;
    char *chunk;                /* an InvokeModel chunk's event, decoded (malloc, reused) */
    size_t chunk_cap;
    kl_usage_parser *usage;
    char *whole;                /* BODY_WHOLE: the answer so far (malloc), up to KL_WHOLE_PLAIN */
    size_t whole_len, whole_cap;
    bool whole_overflow;
    bool skeletal;              /* past KL_WHOLE_PLAIN: its skeleton is kept instead */
    struct kl_skeleton skel;
    char *capture;              /* captures=full: the first capture_max bytes */
    size_t capture_len, capture_max;
    int kind;                   /* enum kl_usage_kind, -1 when the endpoint has none */
    bool keeping;               /* ex->keep_answer or scan_relayed: the decoded answer is kept, up to KL_KEEP_MAX */
    bool keep_overflow;
    char *keep;
    size_t keep_len, keep_cap;
    /* a tool policy or a tool-call limit applies to a whole answer, or
     * guardrails scan it: it is held (head and body) until it has been
     * read, and then relayed or refused */
    bool hold;
    bool scan_held;             /* the held answer goes through guardrails (guard/answer.h) */
    bool wrap_error;            /* a provider's error not labelled JSON: held, and said in the caller's dialect
                                   unless it is JSON after all (release_error) */
    bool page;                  /* a 2xx labelled text/html: held as wrap_error is */
    bool no_answer;             /* ... and read whole, no JSON: a 502, charged nothing (kl_account_unbilled) */
    bool page_checked;          /* a stream labelled text/html: its first bytes were looked at (forward) */
    bool scan_relayed;          /* a stream kept for guardrails once it has been relayed */
    kl_guard_stream *live;      /* a stream scanned as it passes (guard/stream.h): its events go through it */
    int held_status;
    const char *held_headers;   /* arena */
    int64_t held_expect;        /* the Content-Length its head announced; 0 or less: none */
    char *held;                 /* counted with the request bodies: ex->answer_charged (held_room) */
    size_t held_len, held_cap;
    /* the held answer had no room, or was larger than can be held: let go,
     * read on for its usage only, and refused at its end (drop_held) */
    bool held_dropped;
    bool dropped_never;         /* ... larger than could ever be held: 502, not 503 */
    /* a stream's head waits for its first event (kl_account_first_event),
     * which may be the provider's error: the request can then still fail
     * over, the caller having had nothing; held and held_status/_headers
     * keep what waits */
    bool hold_head;
    int first_status;           /* 0 until the first event: then 200, or the status its error stands for */
    const char *first_error;    /* that error, for the log and the record (arena) */
    bool first_told;            /* kl_account_first_event said it */
    bool frame_broken;          /* an AWS event stream message did not check out: the caller's SDK refused it */
    const char *tool_refusal;   /* the first call to a refused tool, said for the caller (arena) */
    bool bare_errors;           /* a Gemini SSE stream: an event that is a bare JSON error is the provider's */
    bool strict_lines;          /* ... read for tool limits or guardrails: an event with other lines is refused */
    /* the content blocks of an Anthropic stream relayed so far: how many
     * began, whether the last one has content, and whether one with
     * content has ended (kl_account_close_blocks) */
    int blocks;
    bool block_filled, block_done;
    bool header_counts;         /* Bedrock's token count headers: input, output, cache read, cache write */
    int64_t counts[4];
    /* tool limits on a Gemini array stream: the bytes of an element not yet
     * complete wait here, so no piece of a call goes on before it is read */
    bool array_hold;
    char *pend;
    size_t pend_len, pend_cap;
    /* under a live scan: how far into the element at pend's start the
     * search for its end has gone, and where it stands (live_array) */
    size_t arr_seen;
    int arr_depth;
    bool arr_str, arr_esc;
};

/* Largest answer kept for the hooks told after it, or for guardrails to
 * scan once it has been relayed. */
#define KL_KEEP_MAX (16u << 20)


static void append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap * 2 : 16384;
        while (c < *len + n)
            c *= 2;
        *buf = realloc(*buf, c);
        if (!*buf)
            abort();
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

/* Is a response with this head to this endpoint an AWS event stream
 * (Bedrock's streamed answers)? */
static bool framed(enum kl_endpoint ep, const char *headers)
{
    size_t n;
    const char *ct = kl_http_head_value(headers, "content-type", &n);
    return (ep == KL_EP_BEDROCK_INVOKE_STREAM || ep == KL_EP_BEDROCK_CONVERSE_STREAM) && ct && n >= 31 &&
           strncasecmp(ct, "application/vnd.amazon.eventstream", 31) == 0;
}

/* Bedrock's InvokeModel counts tokens in headers for every model family;
 * the body's own usage (Claude's) wins when it has one. */
static void bedrock_counts(struct kl_account *a, const char *headers)
{
    static const char *const names[] = {"x-amzn-bedrock-input-token-count", "x-amzn-bedrock-output-token-count",
                                        "x-amzn-bedrock-cache-read-input-token-count",
                                        "x-amzn-bedrock-cache-write-input-token-count"};
    int64_t v[4] = {0};
    bool any = false;
    for (size_t i = 0; i < 4; i++) {
        size_t n;
        const char *s = kl_http_head_value(headers, names[i], &n);
        if (!s || n == 0 || n > 15 || strspn(s, "0123456789") < n)
            continue;
        for (size_t j = 0; j < n; j++)
            v[i] = v[i] * 10 + (s[j] - '0');
        any = true;
    }
    a->header_counts = any;
    memcpy(a->counts, v, sizeof(v));
}

static void relay_live(kl_exchange *ex, const char *data, size_t len, int calls);

/* The tool calls the answer has made so far (0 when it is not read). */
static int tool_calls(const struct kl_account *a)
{
    return a->usage ? kl_usage_result(a->usage)->tool_calls : 0;
}

/* Each tool call the answer makes, as the usage parser meets it. */
static void on_tool(void *arg, const char *ns, const char *name)
{
    kl_exchange *ex = arg;
    struct kl_account *a = ex->acct;
    if (ex->tool_rules && !a->tool_refusal && !kl_tools_permitted_in(ex->tool_rules, ns, name))
        a->tool_refusal = kl_arena_printf(&ex->arena,
            "the answer calls the tool '%.200s', which the tool policy does not allow: stopped by the gateway",
            name ? name : "");
}

/* A name a Python SDK would join from the names of calls at one index
 * (kl_usage_on_joined_name): stopped when a deny list refuses it. */
static void on_joined(void *arg, const char *name)
{
    kl_exchange *ex = arg;
    struct kl_account *a = ex->acct;
    if (ex->tool_rules && !a->tool_refusal && kl_tools_denied(ex->tool_rules, name))
        a->tool_refusal = kl_arena_printf(&ex->arena,
            "the answer calls the tool '%.200s' (its name in pieces, as an SDK joins them), which the tool policy "
            "does not allow: stopped by the gateway", name);
}

/* An answer that cannot be read before it would be relayed: its head held,
 * a whole one read to its end for its usage only (not kept: forward), and
 * refused with 502 at its end; scanned: it was for the guardrails, so
 * nothing of it is captured. */
static void refuse_unread(kl_exchange *ex, bool scanned, const char *why)
{
    ex->acct->hold = true;
    ex->acct->scan_held = scanned;
    ex->cut_off = true;
    ex->cut_kind = KL_ERR_BAD_GATEWAY;
    ex->cut_class = KL_EC_BLOCKED;
    ex->error_message = why;
}

/* Whether a Gemini stream was asked for as events (alt=sse, or $alt, its
 * other spelling) rather than as one JSON array. */
static bool gemini_sse(kl_exchange *ex)
{
    const char *alt = kl_query_param(&ex->arena, ex->req.query, "alt");
    if (!alt)
        alt = kl_query_param(&ex->arena, ex->req.query, "$alt");
    return alt && strcmp(alt, "sse") == 0;
}

/* Is a body labelled HTML? A 2xx one where keyless reads an answer is no
 * answer: a captive portal's or a web server's page (a baseurl that is
 * not the API's). */
static bool html_label(const char *headers)
{
    size_t n;
    const char *ct = kl_http_head_value(headers, "content-type", &n);
    return ct && n >= 9 && strncasecmp(ct, "text/html", 9) == 0;
}

/* Is a body labelled JSON (application/json, problem+json, AWS's
 * x-amz-json-1.1 ...)? */
static bool json_label(const char *headers)
{
    size_t n;
    const char *ct = kl_http_head_value(headers, "content-type", &n);
    for (size_t i = 0; ct && i + 4 <= n; i++)
        if (strncasecmp(ct + i, "json", 4) == 0)
            return true;
    return false;
}

void kl_account_begin(kl_exchange *ex, int status, bool event_stream, const char *headers)
{
    struct kl_account *a = kl_arena_alloc(&ex->arena, sizeof(*a));
    ex->acct = a;
    a->kind = kl_usage_kind_for(ex->ep->id);
    /* Tool limits read every call: the answer is parsed strictly and a
     * whole one is held until read. (A body the provider compressed anyway
     * arrives inflated: core/coding.h; libcurl on https://.) */
    bool tool_kind = a->kind == KL_USAGE_OPENAI_CHAT || a->kind == KL_USAGE_OPENAI_RESPONSES ||
                     a->kind == KL_USAGE_ANTHROPIC || a->kind == KL_USAGE_GEMINI ||
                     a->kind == KL_USAGE_BEDROCK_CONVERSE;
    bool tool_limits = tool_kind && (ex->tool_rules || kl_admit_counts_tool_calls(ex));
    /* guardrails read a 2xx answer too; one whose rules would block or
     * redact cannot be let through unread: a whole one is held, a stream
     * read as it passes (guard/stream.h); with only rules that log, a
     * stream is read once it has been relayed (guard/answer.h) */
    bool scan = tool_kind && status >= 200 && status < 300 && kl_guardrails_answers(ex->cfg->guardrails);
    bool strong = scan && kl_guardrails_strongest(ex->cfg->guardrails) >= KL_SCAN_REDACT;
    bool scan_first = strong && !ex->stream;
    bool scan_live = strong && ex->stream; /* read as it passes, or refused when it cannot be */
    bool events_unasked = event_stream && !ex->stream;
    /* framed as the request asked: a whole answer sent as events would
     * reach a caller that reads it whole without its calls being read */
    if (tool_limits && event_stream && !ex->stream)
        event_stream = false;
    if (status >= 200 && status < 300 && a->kind >= 0) {
        a->usage = kl_usage_parser_new(&ex->arena, (enum kl_usage_kind)a->kind);
        if (ex->ep->id == KL_EP_BEDROCK_INVOKE || ex->ep->id == KL_EP_BEDROCK_INVOKE_STREAM)
            kl_usage_bedrock(a->usage);
        if (ex->ep->id == KL_EP_GEMINI_STREAM)
            a->mode = event_stream ? BODY_EVENTS : BODY_ARRAY;
        else if (event_stream)
            a->mode = BODY_EVENTS;
        else if (framed(ex->ep->id, headers))
            a->mode = BODY_FRAMES;
        else
            a->mode = BODY_WHOLE;
        if (ex->ep->dialect == KL_DIALECT_BEDROCK && a->mode == BODY_WHOLE)
            bedrock_counts(a, headers);
    }
    a->strip_usage_chunk = ex->added_include_usage && event_stream && status == 200;
    a->split_events = a->mode == BODY_EVENTS;
    a->bare_errors = a->mode == BODY_EVENTS && ex->ep->id == KL_EP_GEMINI_STREAM;
    a->strict_lines = a->bare_errors && (tool_limits || strong);
    a->keeping = ex->keep_answer && (a->kind >= 0 || status >= 300);
    /* A Gemini stream framed otherwise than asked (an array labelled as
     * events, events to a request without alt=sse; or a query the provider
     * read differently): read as one framing, it could be the other for
     * the caller, and a call in it pass unread */
    bool gemini_misframed = ex->ep->id == KL_EP_GEMINI_STREAM && status >= 200 && status < 300 && a->kind >= 0 &&
                            event_stream != gemini_sse(ex);
    if ((tool_limits || strong) && gemini_misframed) {
        refuse_unread(ex, strong, kl_arena_printf(&ex->arena, "the provider framed its stream as %s although the "
                                                  "request asked for %s, and the %s every answer as the caller reads "
                                                  "it: stopped by the gateway",
                                                  event_stream ? "events" : "a JSON array",
                                                  event_stream ? "a JSON array (no alt=sse)" : "events (alt=sse)",
                                                  tool_limits ? "tool limits read" : "guardrails read"));
    } else if ((tool_limits || strong) && ex->stream && status >= 200 && status < 300 && a->kind >= 0 &&
               a->mode == BODY_WHOLE) {
        /* labelled application/json (pipeline.c reads any other label of a
         * stream as events): the SDKs read a stream's body as events
         * whatever its label, so read whole it could be something else for
         * the caller, a finding or a call split across its events unseen */
        refuse_unread(ex, strong, kl_arena_printf(&ex->arena, "the provider answered a stream request with a body "
                                                  "labelled application/json, which the caller may read as events, "
                                                  "and the %s every answer as the caller reads it: stopped by the "
                                                  "gateway", tool_limits ? "tool limits read" : "guardrails read"));
    } else if (scan_first && events_unasked && !tool_limits) {
        /* read only once relayed, a stream would let a secret through */
        refuse_unread(ex, true, "the provider answered with an event stream although the request asked for none, "
                                "and the guardrails read every answer before it is relayed: stopped by the gateway");
    } else if (scan_live && status >= 200 && status < 300 && !kl_dialect_reads_body(ex->ep, ex->model)) {
        /* InvokeModel streams other models' events in their own shapes:
         * their text cannot be followed across events */
        refuse_unread(ex, true, "the guardrails read a streamed answer as it passes only from Claude on InvokeModel, "
                                "and read every answer before it is relayed: stopped by the gateway");
    } else {
        if (tool_limits && a->usage) {
            kl_usage_on_tool(a->usage, on_tool, ex);
            kl_usage_on_joined_name(a->usage, on_joined);
            a->hold = a->mode == BODY_WHOLE;
            a->array_hold = a->mode == BODY_ARRAY;
        }
        if (scan && a->usage && a->mode == BODY_WHOLE) {
            a->hold = a->scan_held = true;
        } else if (scan_live && a->usage) {
            a->live = kl_guard_stream_new(ex, a->kind, a->mode == BODY_FRAMES ? KL_GUARD_FRAMES
                                                       : a->mode == BODY_ARRAY ? KL_GUARD_ARRAY
                                                                               : KL_GUARD_SSE, relay_live);
        } else if (scan) {
            /* a stream with only rules that log */
            a->scan_relayed = true;
            a->keeping = true;
        }
    }
    /* Anthropic (and Claude on Vertex), Bedrock and Gemini may answer a
     * stream they cannot serve (overloaded, throttled) with a 200 and an
     * error as its first event. Its head waits for that event when failover
     * could act on it: there is another provider to go to. */
    a->hold_head = a->usage && !a->hold &&
                   ((a->mode == BODY_EVENTS && a->kind == KL_USAGE_ANTHROPIC) || a->bare_errors ||
                    a->mode == BODY_FRAMES) &&
                   kl_failover_possible(ex);
    /* An error body the caller's SDK cannot read as an error (a proxy's
     * HTML page, plain text) is said again in the caller's dialect. */
    if (status >= 400 && !event_stream && !json_label(headers))
        a->hold = a->wrap_error = true;
    /* A 2xx HTML page is said as the provider's failure too, unless it is
     * JSON after all (release_error; then read as any held answer is), or
     * a stream's events (page_events) */
    if (status >= 200 && status < 300 && a->usage && (a->mode == BODY_WHOLE || (a->mode == BODY_EVENTS && ex->stream)) &&
        html_label(headers))
        a->hold = a->wrap_error = a->page = true;
    const struct kl_store_cfg *sc = ex->cfg->store;
    if (sc->captures == KL_CAPTURE_FULL)
        a->capture_max = sc->capture_max;
}

/* The chunk an OpenAI chat stream sends when include_usage is on:
 * {"choices":[], "usage":{...}} — the caller did not ask for it. With
 * include_usage every chunk has a "usage" member, null until the last, so
 * this runs for every event: only a "usage" followed by an object is worth
 * a scan of the chunk's members (that scan was an eighth of keyless's CPU
 * in bench scenario 3a). */
static bool is_usage_only_chunk(const char *data, size_t len)
{
    if (!data)
        return false;
    const char *end = data + len, *q = data;
    bool object = false;
    while (!object && (q = memmem(q, (size_t)(end - q), "\"usage\"", 7))) {
        q += 7;
        object = kl_json_value_after_key(q, end) == '{';
    }
    if (!object)
        return false;
    struct kl_json_want w[] = {{.key = "choices"}, {.key = "usage"}};
    if (kl_json_scan_members(data, len, w, 2) < 0 || !w[0].end || !w[1].end || data[w[0].start] != '[' ||
        data[w[1].start] != '{')
        return false;
    size_t pos = 0, vs, ve;
    return !kl_json_array_next(data + w[0].start, w[0].end - w[0].start, &pos, &vs, &ve, NULL, 0);
}

/* captures = full: the first capture_max bytes of the answer */
static void capture(struct kl_account *a, const char *data, size_t len)
{
    if (a->capture_max && a->capture_len < a->capture_max) {
        size_t n = len < a->capture_max - a->capture_len ? len : a->capture_max - a->capture_len;
        if (!a->capture) {
            a->capture = malloc(a->capture_max);
            if (!a->capture)
                abort();
        }
        memcpy(a->capture + a->capture_len, data, n);
        a->capture_len += n;
    }
}

static void withhold_capture(struct kl_account *a)
{
    free(a->capture);
    a->capture = NULL;
    a->capture_len = 0;
}

static void drop_kept(struct kl_account *a)
{
    free(a->keep);
    a->keep = NULL;
    a->keep_len = a->keep_cap = 0;
}

/* An Anthropic stream's event on its way to the caller: its blocks counted. */
static void note_block(struct kl_account *a, const char *raw, size_t len)
{
    size_t n;
    const char *ev;
    kl_sse_fields(raw, len, &ev, &n, NULL, NULL);
    if (n == 19 && !memcmp(ev, "content_block_start", 19)) {
        a->blocks++;
        a->block_filled = memmem(raw, len, "\"tool_use\"", 10) != NULL;
    } else if (n == 19 && !memcmp(ev, "content_block_delta", 19)) {
        a->block_filled = true;
    } else if (n == 18 && !memcmp(ev, "content_block_stop", 18)) {
        a->block_done |= a->block_filled;
    }
}

static void keep_whole(struct kl_account *a, const char *data, size_t len);

/* The held answer's buffer let go, and its count with it. */
static void free_held(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    free(a->held);
    a->held = NULL;
    a->held_len = a->held_cap = 0;
    kl_exchange_charge(ex, &ex->answer_charged, 0, 0);
}

/* The most of a whole answer keyless holds before relaying it: 64 MiB, or
 * what the worker's share of listen.max_body_memory leaves beside the
 * request's own body when that is less (all it could have, were no other
 * request holding any). */
static size_t held_most(const kl_exchange *ex)
{
    size_t share = kl_body_memory(ex->worker), own = ex->body_charged + ex->up_body_charged;
    size_t room = share > own ? share - own : 0;
    return room < KL_WHOLE_MAX ? room : KL_WHOLE_MAX;
}

/* Can the held answer, with n more bytes, never be held whole: larger than
 * held_most, or announced so by its head's Content-Length? */
static bool never_held(const kl_exchange *ex, size_t n)
{
    const struct kl_account *a = ex->acct;
    uint64_t need = (uint64_t)a->held_len + n;
    if (a->held_expect > 0 && (uint64_t)a->held_expect > need)
        need = (uint64_t)a->held_expect;
    return need > held_most(ex);
}

/* Is the held answer one a policy holds to check it (tool limits,
 * guardrails), which may be refused for want of room? Not a provider's
 * error held to be said in the caller's dialect (wrap_error): that one
 * is the provider's answer (its 429 and Retry-After), not the gateway's
 * 503, and is bounded by KL_WHOLE_MAX as a stream's waiting head is. */
static bool policy_held(const struct kl_account *a)
{
    return a->hold && !a->wrap_error;
}

/* Room in the held answer's buffer for n more bytes. It grows by doubling,
 * never past the Content-Length its head announced nor held_most, and is
 * counted with the request bodies (kl_exchange_charge): answers held at
 * once take no more than the worker's share of listen.max_body_memory, as
 * bodies do. False when there is no room: a whole answer is refused then
 * (drop_held); a stream's head waiting for its first event, or a
 * provider's error, is counted but never refused (one event, bounded by
 * KL_EVENT_MAX; an error, by KL_WHOLE_MAX). */
static bool held_room(kl_exchange *ex, size_t n)
{
    struct kl_account *a = ex->acct;
    if (a->held_len + n <= a->held_cap)
        return true;
    size_t need = a->held_len + n, most = policy_held(a) ? held_most(ex) : KL_WHOLE_MAX;
    size_t c = a->held_cap ? a->held_cap * 2 : 16384;
    while (c < need)
        c *= 2;
    if (a->held_expect > 0 && (uint64_t)a->held_expect >= need && (uint64_t)a->held_expect < c)
        c = (size_t)a->held_expect;
    if (c > most && need <= most)
        c = most;
    if (!kl_exchange_charge(ex, &ex->answer_charged, c, policy_held(a) ? kl_body_memory(ex->worker) : 0))
        return false;
    a->held = realloc(a->held, c);
    if (!a->held)
        abort();
    a->held_cap = c;
    return true;
}

/* A whole answer that cannot be held (no room left in the worker's share
 * of listen.max_body_memory, or larger than held_most): what was held is let
 * go now, and the answer refused at its end (release), since what cannot be
 * read cannot be checked. It is still read to its end as an answer no
 * policy holds (its skeleton), so its usage, which the provider bills, is
 * recorded and charged. */
static void drop_held(kl_exchange *ex, const char *data, size_t len, bool never)
{
    struct kl_account *a = ex->acct;
    a->held_dropped = true;
    a->dropped_never = never;
    if (a->mode == BODY_WHOLE && a->usage) { /* read_body kept none of it while it was held */
        if (a->held_len)
            keep_whole(a, a->held, a->held_len);
        if (len)
            keep_whole(a, data, len);
    }
    free_held(ex);
    if (!never)
        kl_body_memory_full(ex->worker);
}

/* A dropped answer's refusal, at its end: 503 with Retry-After, the
 * answer a request body without room gets, when room may come (other
 * requests hold it); 502 when it never could. */
static void refuse_dropped(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    ex->cut_off = true;
    if (a->dropped_never) {
        size_t most = held_most(ex);
        ex->cut_kind = KL_ERR_BAD_GATEWAY;
        ex->cut_class = KL_EC_BLOCKED;
        ex->error_message = most == KL_WHOLE_MAX
            ? "the answer is larger than the 64 MiB keyless can check before relaying it (tool limits, guardrails): "
              "stopped by the gateway"
            : kl_arena_printf(&ex->arena, "the answer is larger than the %zu bytes keyless can check before relaying "
                              "it (tool limits, guardrails; this worker's share of listen.max_body_memory, less the "
                              "request's body): stopped by the gateway", most);
        return;
    }
    ex->cut_kind = KL_ERR_UNAVAILABLE;
    ex->cut_class = KL_EC_UNAVAILABLE;
    ex->fail_retry = 1;
    ex->error_message = "the gateway holds as many request bodies and answers as it has memory for "
                        "(listen.max_body_memory), and this answer must be held to be checked before it is relayed "
                        "(tool limits, guardrails); try again shortly";
}

/* A stream request's answer labelled text/html (pipeline.c reads it as
 * events, as the SDKs read any stream) is held as a page until its first
 * bytes: events from a server that left its framework's default label
 * (Flask's text/html) go on as the stream they are, head and all; a page
 * ('<') stays held, and is a 502 (release_error). */
static void page_events(kl_exchange *ex, const char *data, size_t len)
{
    struct kl_account *a = ex->acct;
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == len)
        return; /* nothing to tell by yet */
    a->page_checked = true;
    if (data[i] == '<')
        return;
    a->hold = a->wrap_error = a->page = false;
    if (a->hold_head)
        return; /* the head waits for the first event still (kl_account_release_head) */
    kl_respond_start(ex, a->held_status, a->held_headers, -1);
    if (a->held_len)
        kl_respond_data(ex, a->held, a->held_len);
    free_held(ex);
}

static void forward(kl_exchange *ex, const char *data, size_t len)
{
    struct kl_account *a = ex->acct;
    if (a->page && a->mode == BODY_EVENTS && !a->page_checked)
        page_events(ex, data, len);
    if (a->kind == KL_USAGE_ANTHROPIC && a->mode == BODY_EVENTS)
        note_block(a, data, len);
    if (!a->scan_held) /* that one is captured as relayed, if it is (release) */
        capture(a, data, len);
    if (!a->hold && !a->hold_head) {
        kl_respond_data(ex, data, len);
    } else if (a->held_dropped || (a->hold && ex->cut_off)) {
        /* read for its usage only (read_body): let go for want of room, or
         * refused before it came (refuse_unread), when holding it is for
         * nothing */
    } else if (policy_held(a) && !ex->cut_off && never_held(ex, len)) {
        drop_held(ex, data, len, true);
    } else if (a->held_len + len <= KL_WHOLE_MAX && held_room(ex, len)) {
        memcpy(a->held + a->held_len, data, len);
        a->held_len += len;
    } else if (policy_held(a) && !ex->cut_off) {
        drop_held(ex, data, len, false);
    } else if (!ex->cut_off) {
        ex->cut_off = true; /* what cannot be read cannot be checked: not relayed */
        ex->cut_kind = KL_ERR_BAD_GATEWAY;
        ex->cut_class = KL_EC_BLOCKED;
        ex->error_message = a->wrap_error
            ? "the provider's error is larger than the 64 MiB keyless reads to say it in the caller's API dialect: "
              "stopped by the gateway"
            : a->hold ? "the answer is larger than the 64 MiB keyless can check before relaying it (tool limits, "
                        "guardrails): stopped by the gateway"
                      : "the answer's first event is larger than the 64 MiB keyless holds before relaying it: "
                        "stopped by the gateway";
    }
}

/* What a stream scanned as it passes lets go on: kept for the hooks after
 * the answer as the caller gets it, then relayed; calls: the tool calls
 * counted once the event had been read (they have now reached the caller). */
static void relay_live(kl_exchange *ex, const char *data, size_t len, int calls)
{
    struct kl_account *a = ex->acct;
    if (a->keeping && !a->keep_overflow) {
        if (a->keep_len + len <= KL_KEEP_MAX) {
            append(&a->keep, &a->keep_len, &a->keep_cap, data, len);
        } else {
            a->keep_overflow = true;
            drop_kept(a);
        }
    }
    forward(ex, data, len);
    ex->tool_calls_relayed = calls;
}

/* Has the answer so far called a tool the policy refuses, or made more
 * calls than it allows? Then ex says why. */
static bool tools_breached(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    const struct kl_tool_rules *r = ex->tool_rules;
    if (!a->usage)
        return false;
    const char *why = a->tool_refusal;
    enum kl_err_kind kind = KL_ERR_BLOCKED;
    const char *odd = kl_usage_ambiguity(a->usage); /* set only while tool limits apply */
    if (!why && odd) {
        why = kl_arena_printf(&ex->arena, "the provider's answer holds %s, which the tool limits cannot read as "
                              "the caller would: stopped by the gateway", odd);
        kind = KL_ERR_BAD_GATEWAY;
    }
    if (!why && r && r->max_calls >= 0 && kl_usage_result(a->usage)->tool_calls_one_answer > r->max_calls)
        why = kl_arena_printf(&ex->arena, "the answer makes more than %lld tool call%s, the most the tool policy "
                              "allows: stopped by the gateway", (long long)r->max_calls, r->max_calls == 1 ? "" : "s");
    if (!why)
        return false;
    ex->error_message = why;
    ex->cut_kind = kind;
    ex->cut_class = KL_EC_BLOCKED;
    return true;
}

/* The answer so far breaks the tool policy, or its usage grew past what
 * the quotas reserved and they cannot cover more: nothing further reaches
 * the caller. */
static bool stopped(kl_exchange *ex)
{
    if (ex->cut_off)
        return true;
    if (tools_breached(ex)) {
        /* the text before a call is whole: what the guardrails held of it
         * (and of calls allowed before the refused one) goes on, as at a
         * stream's end; not before an event that could not be read, nor
         * when other answers (n > 1) run beside the one that called */
        if (ex->acct->live && ex->cut_kind == KL_ERR_BLOCKED && ex->choices <= 1)
            kl_guard_stream_flush(ex->acct->live, ex);
        ex->cut_off = true;
        return true;
    }
    if (kl_admit_stream_ok(ex))
        return false;
    ex->cut_off = true;
    return true;
}

/* A held stream's first event: an error ("event: error", Anthropic's
 * {"type": "error", "error": {"type", "message"}}, or that data under no
 * name, as Python-served Anthropic-compatible servers send it; Gemini's
 * error object, {"error": {"code", "message", "status"}}) stands for the
 * status its type or code has before a stream; anything else for 200. */
static void first_event(kl_exchange *ex, bool named_error, const char *data, size_t dl)
{
    struct kl_account *a = ex->acct;
    a->first_status = 200;
    bool typed = !named_error && data && a->kind == KL_USAGE_ANTHROPIC;
    if (!named_error && !(a->bare_errors && data) && !typed)
        return;
    cJSON *j = data ? cJSON_ParseWithLength(data, dl) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *t = typed ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type")) : NULL;
    if (typed)
        named_error = t && strcmp(t, "error") == 0;
    if (named_error || (!typed && cJSON_IsObject(e))) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "type"));
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message"));
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
        a->first_status = kl_dialect_stream_error_status(type, type ? strlen(type) : 0);
        if (!type && cJSON_IsNumber(code) && code->valuedouble >= 400 && code->valuedouble < 600) {
            a->first_status = (int)code->valuedouble;
            type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "status"));
        }
        a->first_error = kl_arena_printf(&ex->arena, "%.60s%s%.200s", type ? type : "an error event",
                                         msg ? ": " : "", msg ? msg : "");
    }
    cJSON_Delete(j);
}

/* An event of a Gemini SSE stream with no field at all that is Google's
 * error object as bare JSON (kl_dialect_error_tail), which the SDKs raise:
 * its data, as if it had come as a data field; NULL for anything else (a
 * bare object that is no error they ignore, and so does keyless). */
static char *bare_error(const char *raw, size_t len, size_t *dl)
{
    size_t i = kl_sse_bare_json(raw, len);
    if (i == len)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(raw + i, len - i);
    bool error = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "error")) && !kl_json_has_duplicate_keys(j);
    cJSON_Delete(j);
    if (!error)
        return NULL;
    char *d = strndup(raw + i, len - i);
    if (!d)
        abort();
    *dl = len - i;
    return d;
}

static void on_event(void *arg, const char *raw, size_t len)
{
    kl_exchange *ex = arg;
    struct kl_account *a = ex->acct;
    if (ex->cut_off)
        return;
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    bool bare = !data && !ev && a->bare_errors && (data = bare_error(raw, len, &dl)) != NULL;
    if (a->strict_lines && !bare && kl_sse_unknown_field(raw, len)) {
        ex->cut_off = true;
        ex->cut_kind = KL_ERR_BAD_GATEWAY;
        ex->cut_class = KL_EC_BLOCKED;
        ex->error_message = "the provider's stream holds a line that is no SSE field, which the Gemini SDKs may read "
                            "as data although keyless does not, and the tool limits or guardrails read every answer "
                            "as the caller reads it: stopped by the gateway";
    }
    if (data && a->usage)
        kl_usage_event(a->usage, ev, evl, data, dl);
    if (a->hold_head && !a->first_status && (ev || data)) /* a comment (keep-alive) decides nothing */
        first_event(ex, ev && evl == 5 && !memcmp(ev, "error", 5), data, dl);
    bool drop = a->strip_usage_chunk && is_usage_only_chunk(data, dl);
    if (stopped(ex)) {
        free(data);
        return;
    }
    if (!drop && a->live)
        kl_guard_stream_event(a->live, ex, raw, len, ev, evl, data, dl, tool_calls(a));
    else if (!drop)
        forward(ex, raw, len);
    free(data);
    if (a->usage && !a->live)
        ex->tool_calls_relayed = kl_usage_result(a->usage)->tool_calls;
}

/* The JSON an InvokeModel stream's chunk carries: the model's own event,
 * base64 in the chunk's "bytes" (in a->chunk, until the next one); NULL
 * when it has none, or when the chunk could be read otherwise (a second
 * "bytes": cJSON takes the first, JavaScript the last). */
static const char *chunk_json(struct kl_account *a, const char *payload, size_t n, size_t *len)
{
    cJSON *c = cJSON_ParseWithLength(payload, n);
    const char *b = kl_json_has_duplicate_keys(c) ? NULL
                                                  : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "bytes"));
    const char *json = b ? kl_base64_decode_buf(b, strlen(b), &a->chunk, &a->chunk_cap, len) : NULL;
    cJSON_Delete(c);
    return json;
}

/* A message of an AWS event stream, through the live scan: an event with
 * its JSON (a ConverseStream event's payload, an InvokeModel chunk's
 * decoded event), anything else held in its turn unread. */
static void live_frame(kl_exchange *ex, const char *raw, size_t len, bool ok)
{
    struct kl_account *a = ex->acct;
    struct kl_evs_msg m;
    const char *json = NULL;
    size_t jl = 0;
    if (!ok || kl_evs_decode(raw, len, &m) < 0) {
        kl_guard_stream_unreadable(a->live, ex, "an event stream message that does not check out");
        return;
    }
    bool event = m.message_type_len == 5 && !memcmp(m.message_type, "event", 5);
    if (event && a->kind == KL_USAGE_BEDROCK_CONVERSE) {
        kl_guard_stream_event(a->live, ex, raw, len, m.event_type, m.event_type_len, m.payload, m.payload_len,
                              tool_calls(a));
        return;
    }
    if (event && !(json = chunk_json(a, m.payload, m.payload_len, &jl))) {
        kl_guard_stream_unreadable(a->live, ex, "an event stream chunk without one base64 \"bytes\"");
        return;
    }
    /* an exception or error message carries no answer: held in its turn */
    kl_guard_stream_event(a->live, ex, raw, len, NULL, 0, json, jl, tool_calls(a));
}

/* One message of an AWS event stream: read (an InvokeModel chunk's event,
 * a ConverseStream event, an exception), then relayed as it came. */
static void on_frame(void *arg, const char *raw, size_t len, bool ok)
{
    kl_exchange *ex = arg;
    struct kl_account *a = ex->acct;
    if (ex->cut_off)
        return;
    struct kl_evs_msg m;
    if (!ok || kl_evs_decode(raw, len, &m) < 0) {
        kl_usage_unreadable(a->usage, "an event stream message that does not check out (its length or CRC)");
        a->frame_broken = true; /* kl_account_note_error_end */
    } else if (m.message_type_len == 5 && !memcmp(m.message_type, "event", 5)) {
        size_t jl;
        const char *json;
        if (a->kind == KL_USAGE_BEDROCK_CONVERSE)
            kl_usage_event(a->usage, m.event_type, m.event_type_len, m.payload, m.payload_len);
        else if ((json = chunk_json(a, m.payload, m.payload_len, &jl)))
            kl_usage_event(a->usage, NULL, 0, json, jl);
        else
            kl_usage_unreadable(a->usage, "an event stream chunk without one base64 \"bytes\"");
    } else if (m.message_type_len == 9 && !memcmp(m.message_type, "exception", 9)) {
        if (a->kind == KL_USAGE_BEDROCK_CONVERSE && m.exception_type_len)
            kl_usage_event(a->usage, m.exception_type, m.exception_type_len, m.payload, m.payload_len);
        else if (a->kind == KL_USAGE_BEDROCK_CONVERSE) /* no :exception-type: still an error */
            kl_usage_event(a->usage, "StreamErrorException", 20, "{}", 2);
        else
            kl_usage_event(a->usage, NULL, 0, "{\"type\":\"error\"}", 16);
        if (a->hold_head && !a->first_status) {
            cJSON *j = cJSON_ParseWithLength(m.payload, m.payload_len);
            const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "message"));
            a->first_status = kl_dialect_stream_error_status(m.exception_type, m.exception_type_len);
            a->first_error = kl_arena_printf(&ex->arena, "%.*s%s%.200s", (int)m.exception_type_len,
                                             m.exception_type, msg ? ": " : "", msg ? msg : "");
            cJSON_Delete(j);
        }
    } else if (m.message_type_len == 5 && !memcmp(m.message_type, "error", 5)) {
        /* the event stream's own error message (:error-code, :error-message):
         * the answer's end, as an exception message is (usage.c reads an
         * "...Exception" event as the provider's error) */
        if (a->kind == KL_USAGE_BEDROCK_CONVERSE)
            kl_usage_event(a->usage, "StreamErrorException", 20, "{}", 2);
        else
            kl_usage_event(a->usage, NULL, 0, "{\"type\":\"error\"}", 16);
        if (a->hold_head && !a->first_status) {
            a->first_status = kl_dialect_stream_error_status(m.error_code, m.error_code_len);
            a->first_error = kl_arena_printf(&ex->arena, "an event stream error %.*s", (int)m.error_code_len,
                                             m.error_code ? m.error_code : "");
        }
    }
    if (a->hold_head && !a->first_status)
        a->first_status = 200;
    if (stopped(ex))
        return;
    if (a->live) {
        live_frame(ex, raw, len, ok);
        return;
    }
    forward(ex, raw, len);
    ex->tool_calls_relayed = kl_usage_result(a->usage)->tool_calls;
}

/* A Gemini array stream under a live scan: its bytes wait in a->pend until
 * an element is whole (found here, the scan's place kept between reads),
 * then the element, and the bytes between elements, are read for their
 * usage and go through the live scan one by one, each with the tool calls
 * counted up to it. */
static void live_array(kl_exchange *ex, const char *data, size_t len)
{
    struct kl_account *a = ex->acct;
    append(&a->pend, &a->pend_len, &a->pend_cap, data, len);
    size_t i = 0;
    while (i < a->pend_len && !ex->cut_off) {
        const char *p = a->pend;
        size_t n = a->pend_len, j;
        if (p[i] == '{') {
            bool whole = false;
            for (j = i + a->arr_seen; j < n && !whole; j++) {
                char c = p[j];
                if (a->arr_str) {
                    if (a->arr_esc)
                        a->arr_esc = false;
                    else if (c == '\\')
                        a->arr_esc = true;
                    else if (c == '"')
                        a->arr_str = false;
                } else if (c == '"') {
                    a->arr_str = true;
                } else if (c == '{' || c == '[') {
                    a->arr_depth++;
                } else if (c == '}' || c == ']') {
                    whole = --a->arr_depth == 0;
                }
            }
            if (!whole) {
                a->arr_seen = j - i;
                if (a->arr_seen > KL_WHOLE_MAX)
                    kl_guard_stream_unreadable(a->live, ex, "an array element larger than 64 MiB");
                break;
            }
            a->arr_seen = 0;
            a->arr_depth = 0;
        } else {
            for (j = i; j < n && p[j] != '{'; j++)
                ;
        }
        kl_usage_array_bytes(a->usage, p + i, j - i);
        if (stopped(ex)) /* a refused tool, or a quota: it does not go on */
            break;
        kl_guard_stream_event(a->live, ex, p + i, j - i, NULL, 0, p + i, j - i, tool_calls(a));
        i = j;
    }
    memmove(a->pend, a->pend + i, a->pend_len - i);
    a->pend_len -= i;
}

/* Keeps a whole answer's next bytes for its usage: as they come while the
 * answer is small, its skeleton once it is not (the bytes kept so far are
 * made skeleton then, once). */
static void keep_whole(struct kl_account *a, const char *data, size_t len)
{
    if (a->whole_overflow)
        return;
    if (!a->skeletal && a->whole_len + len <= KL_WHOLE_PLAIN) {
        append(&a->whole, &a->whole_len, &a->whole_cap, data, len);
        return;
    }
    if (!a->skeletal) {
        a->skeletal = true;
        kl_skeleton_feed(&a->skel, a->whole ? a->whole : "", a->whole_len);
        free(a->whole);
        a->whole = NULL;
        a->whole_len = a->whole_cap = 0;
    }
    kl_skeleton_feed(&a->skel, data, len);
    if (a->skel.out.len > KL_WHOLE_MAX) {
        a->whole_overflow = true;
        kl_skeleton_free(&a->skel);
    }
}

/* Body bytes read for their usage. Events are relayed one by one as they
 * complete (on_event); other bodies are relayed by the caller. */
static void read_body(kl_exchange *ex, const char *data, size_t len)
{
    struct kl_account *a = ex->acct;
    if (a->keeping && !a->keep_overflow && !a->live) { /* a live scan keeps what it relays */
        if (a->keep_len + len <= KL_KEEP_MAX) {
            append(&a->keep, &a->keep_len, &a->keep_cap, data, len);
        } else {
            a->keep_overflow = true; /* not sent: nothing more to keep */
            free(a->keep);
            a->keep = NULL;
        }
    }
    switch (a->mode) {
    case BODY_EVENTS:
        kl_sse_feed(&a->sse, data, len, on_event, ex);
        if (a->sse.len > KL_EVENT_MAX && !ex->cut_off) {
            kl_sse_free(&a->sse); /* its memory back now, not when the exchange ends */
            ex->cut_off = true;
            ex->cut_kind = KL_ERR_BAD_GATEWAY;
            ex->cut_class = KL_EC_UPSTREAM_ERROR;
            ex->error_message = "the provider sent a stream event longer than 16 MiB: stopped by the gateway";
            kl_warn("%s: provider %s sent a stream event longer than 16 MiB; the answer was stopped", ex->id,
                    ex->provider ? ex->provider->id : "?");
        }
        break;
    case BODY_ARRAY:
        if (!a->live) /* a live scan reads it element by element (live_array) */
            kl_usage_array_bytes(a->usage, data, len);
        break;
    case BODY_FRAMES:
        kl_evs_feed(&a->evs, data, len, on_frame, ex);
        break;
    case BODY_WHOLE:
        if (a->hold && !a->held_dropped && !ex->cut_off)
            break; /* forward() keeps the held copy, read at the end */
        keep_whole(a, data, len);
        break;
    case BODY_NONE:
        break;
    }
}

bool kl_account_data(kl_exchange *ex, const char *data, size_t len)
{
    struct kl_account *a = ex->acct;
    if (!a) {
        kl_respond_data(ex, data, len);
        return true;
    }
    read_body(ex, data, len);
    if (a->mode == BODY_EVENTS || a->mode == BODY_FRAMES) /* relayed event by event */
        return !ex->cut_off;
    if (a->live && a->mode == BODY_ARRAY) {
        live_array(ex, data, len);
        return !ex->cut_off;
    }
    if (a->mode == BODY_ARRAY && stopped(ex))
        return false;
    if (a->array_hold) {
        append(&a->pend, &a->pend_len, &a->pend_cap, data, len);
        size_t wait = kl_usage_array_pending(a->usage);
        if (wait > a->pend_len)
            wait = a->pend_len;
        forward(ex, a->pend, a->pend_len - wait);
        memmove(a->pend, a->pend + a->pend_len - wait, wait);
        a->pend_len = wait;
        ex->tool_calls_relayed = kl_usage_result(a->usage)->tool_calls; /* counted once complete */
        return true;
    }
    forward(ex, data, len);
    /* a whole answer refused before it came (refuse_unread) is read on to
     * its end all the same, for its usage, which the provider bills */
    return !ex->cut_off || (a->hold && a->mode == BODY_WHOLE);
}

void kl_account_respond_start(kl_exchange *ex, int status, const char *headers, int64_t content_length)
{
    struct kl_account *a = ex->acct;
    if (a && (a->hold || a->hold_head)) {
        a->held_status = status;
        a->held_headers = kl_arena_strdup(&ex->arena, headers ? headers : ""); /* libcurl frees its copy first */
        a->held_expect = content_length;
        return;
    }
    kl_respond_start(ex, status, headers, content_length);
}

/* Where an HTML page's title is, if it has one: what it says in a few
 * words (nginx's and most proxies' error pages, Cloudflare's). */
static const char *html_title(const char *body, size_t len, size_t *n)
{
    const char *end = body + len, *t = NULL;
    for (const char *p = body; p + 7 <= end && (p = memchr(p, '<', (size_t)(end - p))) && p + 7 <= end; p++)
        if (strncasecmp(p, "<title>", 7) == 0) {
            t = p + 7;
            break;
        }
    if (!t)
        return NULL;
    const char *e = memchr(t, '<', (size_t)(end - t));
    *n = (size_t)((e ? e : end) - t);
    return t;
}

/* The provider's headers of an answer said again in the caller's dialect
 * (a "Name: value\r\n" block, as relayed), without those that described
 * the provider's body or that kl_fail writes itself: its request id, rate
 * limit headers and the like still reach the caller. */
static const char *kept_headers(kl_arena *arena, const char *headers)
{
    static const char *const own[] = {"content-type", "content-length", "content-encoding", "retry-after",
                                      "x-amzn-errortype"};
    size_t n = strlen(headers), o = 0;
    char *out = kl_arena_alloc(arena, n + 1);
    for (const char *p = headers; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        const char *colon = memchr(p, ':', len);
        bool drop = !colon;
        for (size_t i = 0; !drop && i < sizeof(own) / sizeof(own[0]); i++)
            drop = (size_t)(colon - p) == strlen(own[i]) && strncasecmp(p, own[i], strlen(own[i])) == 0;
        if (!drop) {
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
    }
    out[o] = '\0';
    return o ? out : NULL;
}

/* A provider's error held because it was not labelled JSON, or a 2xx
 * labelled HTML: one that is JSON all the same goes on as it came
 * (false); anything else is said in the caller's dialect with the
 * provider's status where it has one (502 for a 2xx), what
 * the body says (its title, or its text without markup), and its other
 * headers. */
static bool release_error(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    cJSON *j = a->held_len ? cJSON_ParseWithLength(a->held, a->held_len) : NULL;
    bool json = cJSON_IsObject(j);
    cJSON_Delete(j);
    if (json)
        return false;
    a->hold = false;
    a->no_answer = a->page;
    size_t tn = 0, cn = 0;
    const char *title = a->held ? html_title(a->held, a->held_len, &tn) : NULL;
    char gist[201];
    kl_text_gist(title ? title : a->held ? a->held : "", title ? tn : a->held_len, gist, sizeof(gist));
    const char *ct = kl_http_head_value(a->held_headers, "content-type", &cn);
    const char *semi = ct ? memchr(ct, ';', cn) : NULL;
    if (semi)
        cn = (size_t)(semi - ct);
    while (cn && ct[cn - 1] == ' ')
        cn--;
    kl_info("%s: provider %s answered %d with a body that is not JSON: said in the caller's API dialect", ex->id,
            ex->provider ? ex->provider->id : "?", a->held_status);
    /* its status and when to try again, as the provider said them */
    ex->fail_status = a->page ? 0 : a->held_status; /* a 2xx page: 502 */
    ex->fail_headers = kept_headers(&ex->arena, a->held_headers ? a->held_headers : "");
    size_t rn;
    const char *ra = kl_http_head_value(a->held_headers, "retry-after", &rn);
    int64_t secs = 0;
    bool digits = ra && rn > 0 && rn < 10; /* delta-seconds; an HTTP date is left out */
    for (size_t i = 0; digits && i < rn; i++) {
        digits = ra[i] >= '0' && ra[i] <= '9';
        secs = secs * 10 + (ra[i] - '0');
    }
    if (digits && secs > 0)
        ex->fail_retry = secs;
    const char *label = ct ? kl_arena_printf(&ex->arena, "a %.*s body", (int)(cn < 60 ? cn : 60), ct)
                        : a->held_len ? "a body without a Content-Type" : "no body";
    kl_fail(ex, a->page ? KL_ERR_BAD_GATEWAY : kl_err_kind_for_status(a->held_status), KL_EC_UPSTREAM_ERROR,
            "provider %s answered %d with %s%s%s%s", ex->provider ? ex->provider->id : "?", a->held_status, label,
            a->page ? ", not an answer (is its baseurl the API's?)" : "", gist[0] ? ": " : "", gist);
    free_held(ex);
    return true;
}

/* A held answer has been read: relayed whole, or refused in its place. */
static void release(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    if (a->held_dropped)
        refuse_dropped(ex);
    if (a->wrap_error && !ex->cut_off && release_error(ex))
        return;
    a->hold = false;
    const char *body = a->held;
    size_t len = a->held_len;
    enum kl_answer_verdict v = KL_ANSWER_PASS;
    bool refused = ex->cut_off || tools_breached(ex) || !kl_admit_tool_calls_ok(ex);
    if (!refused && a->scan_held)
        refused = (v = kl_guard_answer_whole(ex, a->held ? a->held : "", a->held_len, &body, &len)) ==
                  KL_ANSWER_WITHHELD;
    if (refused) {
        ex->cut_off = true;
        if (a->scan_held)
            drop_kept(a); /* refused unread or for what it holds: not told to the hooks after it */
        kl_info("%s: %s", ex->id, ex->error_message);
        kl_fail(ex, ex->cut_kind, ex->cut_class, "%s", ex->error_message);
        return;
    }
    if (a->scan_held)
        capture(a, body, len); /* what the caller got */
    if (v == KL_ANSWER_REDACTED && a->keep) {
        /* the hooks after the answer are told what the caller got too */
        drop_kept(a);
        append(&a->keep, &a->keep_len, &a->keep_cap, body, len);
    }
    kl_respond_start(ex, a->held_status, a->held_headers, (int64_t)len);
    if (body != a->held && len > a->held_cap && a->held) {
        /* a redaction made it longer: the buffer grows to it, counted as
         * the answer it comes from was (let in already: never refused), so
         * that it too stays counted until the client has read it */
        kl_exchange_charge(ex, &ex->answer_charged, len, 0);
        a->held = realloc(a->held, len);
        if (!a->held)
            abort();
        a->held_cap = len;
    }
    if (body != a->held && len && len <= a->held_cap) {
        memcpy(a->held, body, len); /* a redacted copy (arena) fits the buffer counted for the answer */
        body = a->held;
    }
    if (body == a->held && len) {
        /* given to the client's output, still counted until written: what
         * it takes, not the room it grew by doubling into (an answer
         * without a Content-Length, or inflated, had up to twice) */
        if (len < a->held_cap) {
            a->held = realloc(a->held, len);
            if (!a->held)
                abort();
            a->held_cap = len;
            kl_exchange_charge(ex, &ex->answer_charged, len, 0);
        }
        size_t charged = ex->answer_charged;
        ex->answer_charged = 0;
        kl_respond_give(ex, a->held, len, charged);
        a->held = NULL;
        a->held_len = a->held_cap = 0;
    } else {
        kl_respond_data(ex, body, len);
    }
    if (a->usage)
        ex->tool_calls_relayed = kl_usage_result(a->usage)->tool_calls;
    free_held(ex);
}

bool kl_account_head_held(const kl_exchange *ex)
{
    return ex->acct && ex->acct->hold_head;
}

int kl_account_first_event(kl_exchange *ex, const char **error)
{
    struct kl_account *a = ex->acct;
    if (!a || !a->hold_head || !a->first_status || a->first_told)
        return 0;
    a->first_told = true;
    *error = a->first_error;
    return a->first_status;
}

void kl_account_release_head(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    if (!a || !a->hold_head)
        return;
    a->hold_head = false;
    kl_respond_start(ex, a->held_status, a->held_headers, -1);
    if (a->held_len)
        kl_respond_data(ex, a->held, a->held_len);
    free_held(ex);
}

bool kl_account_is_event_stream(const kl_exchange *ex)
{
    return ex->acct && (ex->acct->mode == BODY_EVENTS || ex->acct->mode == BODY_FRAMES);
}

void kl_account_drop_partial(kl_exchange *ex)
{
    if (ex->acct) {
        kl_sse_discard(&ex->acct->sse);
        kl_evs_discard(&ex->acct->evs);
    }
}

void kl_account_end(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    if (!a)
        return;
    if (a->split_events && !ex->cut_off)
        kl_sse_flush(&a->sse, on_event, ex);
    if (a->mode == BODY_FRAMES && !ex->cut_off)
        kl_evs_flush(&a->evs, on_frame, ex);
    if (a->live && kl_guard_stream_end(a->live, ex)) {
        /* a finding went on after all: not kept a second time */
        withhold_capture(a);
        drop_kept(a);
        a->keep_overflow = true; /* nor kept from what may still come (an error event) */
    }
    if (a->hold && !a->held_dropped && !ex->cut_off && a->mode == BODY_WHOLE) {
        kl_usage_whole(a->usage, a->held ? a->held : "", a->held_len);
    } else if (a->mode == BODY_WHOLE && a->skeletal && !a->whole_overflow) {
        kl_usage_whole(a->usage, a->skel.out.p, a->skel.out.len);
        kl_skeleton_free(&a->skel);
    } else if (a->mode == BODY_WHOLE && a->whole && !a->whole_overflow) {
        kl_usage_whole(a->usage, a->whole, a->whole_len);
        free(a->whole);
        a->whole = NULL;
    }
    if (a->header_counts && a->usage)
        kl_usage_counts(a->usage, a->counts[0], a->counts[1], a->counts[2], a->counts[3]);
    if (a->hold)
        release(ex);
}

void kl_account_free(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    if (!a)
        return;
    kl_sse_free(&a->sse);
    kl_evs_free(&a->evs);
    kl_guard_stream_free(a->live);
    free(a->chunk);
    free(a->whole);
    kl_skeleton_free(&a->skel);
    free(a->capture);
    free(a->keep);
    free_held(ex); /* so the next provider's answer (failover) is counted afresh */
    free(a->pend); /* an element the stream never finished: not relayed */
    ex->acct = NULL;
}

/* Might the answer have reasoned, unseen and billed? When the request
 * asked, yes; when it said none or minimal, no; otherwise, unless the price
 * table says the model reasons only when asked ("reasoning": false), yes:
 * OpenAI's reasoning models reason by default, and a new model is taken
 * for one until the table says otherwise. */
static bool may_reason(const kl_exchange *ex)
{
    if (ex->reasons || ex->reasoning_declined)
        return ex->reasons;
    const struct kl_usage *u = kl_account_usage(ex);
    const char *model = u && u->model_served ? u->model_served : ex->model;
    const kl_prices *prices = ex->cfg->prices;
    const struct kl_price *p = prices && model ? kl_prices_find(prices, ex->provider ? ex->provider->cost_basis : NULL,
                                                               model) : NULL;
    return !(p && p->no_reasoning);
}

/* Whether the provider itself ended its answer with an error (an error
 * event, a Responses "failed"), as the usage read from it says. */
static bool ended_in_error(const kl_exchange *ex, const struct kl_usage *u)
{
    return u && u->stop_reason &&
           (strcmp(u->stop_reason, "error") == 0 ||
            (ex->ep && ex->ep->id == KL_EP_RESPONSES && strcmp(u->stop_reason, "failed") == 0));
}

void kl_account_finish(kl_exchange *ex)
{
    /* ended however it ended: a stream cut short keeps partial counts
     * (usage.h), which the cost, the quotas and the record then use */
    bool complete = !ex->error_class && !ex->cut_off;
    if (ex->acct && ex->acct->usage) {
        /* a stream the provider answered bills its prompt, however it ended
         * (not one that failed before any of its answer: kl_account_unbilled) */
        if (!complete && ex->stream && ex->upstream_status / 100 == 2 && !kl_account_unbilled(ex))
            kl_usage_assume_prompt(ex->acct->usage, kl_admit_prompt_reserved(ex), may_reason(ex));
        kl_usage_settle(ex->acct->usage, kl_admit_bytes_per_token(ex),
                        kl_admit_output_bound(ex, ex->max_output_tokens > 0 ? ex->max_output_tokens
                                                                            : ex->inject_max_output_tokens),
                        complete);
    }
    const struct kl_usage *u = kl_account_usage(ex);
    int64_t nd;
    if (u && u->known && kl_account_cost(ex, u, &nd) == 0) {
        ex->cost_known = true;
        ex->cost_nd = kl_account_unbilled(ex) ? 0 : nd; /* as the quotas charge it (kl_admit_settle) */
    } else if (ex->upstream_status / 100 == 2 && kl_account_unbilled(ex)) {
        /* a 2xx stream that was only the provider's error (no count at all
         * before it) costs 0, as the quotas charge it and as one that sent
         * message_start's opening count first: not an answered request of
         * unknown cost in the record and keyless_unpriced_requests_total.
         * Not another 2xx keyless failed on (an answer in a coding it cannot
         * read, a stream event over 16 MiB, a broken event-stream frame):
         * the provider served and billed that one, at a cost unknown */
        ex->cost_known = true;
        ex->cost_nd = 0;
    }
}

/* An error status, a redirect (keyless follows none: nothing was
 * generated), a 2xx HTML page (no_answer: no provider's API bills one),
 * or only the provider's own error (ended_in_error), whether
 * the stream then ended or the caller left on that error before it did
 * (its SDK raises at the error event): a 2xx answer keyless failed on with
 * nothing of it read (a content coding it cannot read, a stream event over
 * 16 MiB, a broken event-stream frame) was served, and billed, by the
 * provider, so the quotas keep what they reserved for it. */
bool kl_account_unbilled(const kl_exchange *ex)
{
    const struct kl_usage *u = kl_account_usage(ex);
    return ex->upstream_status >= 300 || (ex->acct && ex->acct->no_answer) ||
           ((ex->error_class == KL_EC_UPSTREAM_ERROR || ex->error_class == KL_EC_CLIENT_CLOSED) &&
            !(u && u->answered) && ended_in_error(ex, u));
}

void kl_account_note_error_end(kl_exchange *ex)
{
    const struct kl_usage *u = kl_account_usage(ex);
    if (!ex->error_class && ex->acct && ex->acct->frame_broken) {
        /* the caller's SDK refused the stream at that message (it checks
         * each CRC): an answer that ended in an error, its prompt billed
         * (kl_account_finish), however the rest of it went */
        ex->error_class = KL_EC_UPSTREAM_ERROR;
        if (!ex->error_message)
            ex->error_message = kl_arena_printf(&ex->arena, "provider %s's event stream had a message that does not "
                                                "check out (its length or CRC)", ex->provider->id);
        return;
    }
    if (ex->error_class || !ended_in_error(ex, u))
        return;
    ex->error_class = KL_EC_UPSTREAM_ERROR;
    if (!ex->error_message)
        ex->error_message = kl_arena_printf(&ex->arena, "provider %s ended its answer with an error%s",
                                            ex->provider->id, u->answered ? "" : ", before any of the answer");
}

int kl_account_cost(const kl_exchange *ex, const struct kl_usage *u, int64_t *nd)
{
    const struct kl_provider *p = ex->provider;
    const kl_prices *prices = ex->cfg->prices;
    if (!p || !prices)
        return -1;
    /* A model_cost_map rule is written for the provider's own model ids,
     * the one asked for (a Bedrock id, an inference profile's ARN): when one
     * matches, it prices the request, as it priced its reservation. */
    for (size_t i = 0; ex->model && p->cost_map && i < p->cost_map->n; i++)
        if (kl_cost_glob(p->cost_map->rules[i].match, ex->model)) {
            if (kl_cost(prices, p->cost_basis, p->cost_map, ex->model, u, nd) == 0)
                return 0;
            break; /* a rule without a priced model: as if none matched */
        }
    /* Otherwise what the provider says it served (a dated snapshot), else
     * what was asked. */
    const char *model = u->model_served ? u->model_served : ex->model;
    if (model && kl_cost(prices, p->cost_basis, p->cost_map, model, u, nd) == 0)
        return 0;
    return model != ex->model && ex->model ? kl_cost(prices, p->cost_basis, p->cost_map, ex->model, u, nd) : -1;
}

const struct kl_usage *kl_account_usage(const kl_exchange *ex)
{
    return ex->acct && ex->acct->usage ? kl_usage_result(ex->acct->usage) : NULL;
}

const char *kl_account_session_id(kl_exchange *ex)
{
    if (!ex->session_id && ex->ep && ex->ep->inference)
        ex->session_id = kl_session_id(&ex->arena, ex->req.headers, ex->req.nheaders, ex->body, &ex->body_map,
                                       ex->ident ? ex->ident->login : NULL, ex->worker->sha256);
    return ex->session_id;
}

void kl_account_fill_record(kl_exchange *ex, struct kl_rec *r)
{
    struct kl_account *a = ex->acct;
    r->session_id = kl_account_session_id(ex);
    if (a && a->capture) {
        r->response_body = a->capture;
        r->response_body_len = a->capture_len;
    }
    /* the cost as kl_account_finish settled it (and /metrics counts it) */
    r->cost_known = ex->cost_known;
    r->cost_nanodollars = ex->cost_nd;
    const struct kl_usage *u = kl_account_usage(ex);
    if (!u)
        return;
    /* a stream cut short may end before its usage: its calls, the model
     * that served it and how it stopped are still known */
    r->tool_calls = u->tool_calls;
    r->tool_names = kl_join(&ex->arena, u->tool_names, u->ntool_names, ',');
    r->model_served = u->model_served;
    r->stop_reason = u->stop_reason;
    r->response_id = u->response_id;
    if (!u->known)
        return;
    r->usage_known = u->partial ? 2 : 1;
    r->input_tokens = u->input;
    r->output_tokens = u->output;
    r->cache_read_tokens = u->cache_read;
    r->cache_write_tokens = u->cache_write;
    r->reasoning_tokens = u->reasoning;
}

struct frame_list {
    kl_exchange *ex;
    cJSON *list;
};

/* Each event message of a kept event stream, parsed: an InvokeModel
 * chunk's own event, or a ConverseStream event as the AWS SDKs give it,
 * {"contentBlockDelta": {...}} (without Bedrock's "p" padding). */
static void collect_frame(void *arg, const char *raw, size_t len, bool ok)
{
    struct frame_list *f = arg;
    struct kl_evs_msg m;
    if (!ok || kl_evs_decode(raw, len, &m) < 0 || m.message_type_len != 5 || memcmp(m.message_type, "event", 5))
        return;
    cJSON *v = NULL;
    if (f->ex->acct->kind == KL_USAGE_BEDROCK_CONVERSE) {
        cJSON *p = cJSON_ParseWithLength(m.payload, m.payload_len);
        if (cJSON_IsObject(p) && m.event_type_len) {
            cJSON_DeleteItemFromObjectCaseSensitive(p, "p");
            v = cJSON_CreateObject();
            cJSON_AddItemToObject(v, kl_arena_strndup(&f->ex->arena, m.event_type, m.event_type_len), p);
        } else {
            cJSON_Delete(p);
        }
    } else {
        size_t jl;
        const char *json = chunk_json(f->ex->acct, m.payload, m.payload_len, &jl);
        v = json ? cJSON_ParseWithLength(json, jl) : NULL;
    }
    if (v)
        cJSON_AddItemToArray(f->list, v);
}

cJSON *kl_account_answer(kl_exchange *ex, cJSON **events)
{
    struct kl_account *a = ex->acct;
    *events = NULL;
    if (!a || !a->keeping || a->keep_overflow || !a->keep)
        return NULL;
    if (a->mode == BODY_EVENTS) {
        *events = kl_sse_parse_events(a->keep, a->keep_len);
        return kl_assemble_stream((enum kl_usage_kind)a->kind, *events);
    }
    if (a->mode == BODY_FRAMES) {
        struct frame_list f = {ex, cJSON_CreateArray()};
        kl_evs s = {0};
        kl_evs_feed(&s, a->keep, a->keep_len, collect_frame, &f);
        kl_evs_free(&s);
        *events = f.list;
        return kl_assemble_stream((enum kl_usage_kind)a->kind, *events);
    }
    cJSON *whole = cJSON_ParseWithLength(a->keep, a->keep_len);
    if (a->mode == BODY_ARRAY && cJSON_IsArray(whole)) {
        *events = whole;
        return kl_assemble_stream((enum kl_usage_kind)a->kind, whole);
    }
    return whole;
}

void kl_account_scan_relayed(kl_exchange *ex)
{
    struct kl_account *a = ex->acct;
    if (a && a->live && kl_guard_stream_end(a->live, ex)) { /* the caller left: kl_account_end never ran */
        withhold_capture(a);
        drop_kept(a);
    }
    if (a && a->hold && a->scan_held)
        drop_kept(a); /* held for the guardrails, never read through (broken off, the caller gone): unchecked */
    if (!a || !a->scan_relayed)
        return;
    a->scan_relayed = false;
    if (!a->keep_overflow && !a->keep)
        return; /* an empty answer */
    cJSON *events = NULL;
    cJSON *answer = kl_account_answer(ex, &events);
    const char *why = a->keep_overflow ? "the answer is larger than the 16 MiB kept to scan it"
                                       : "the answer could not be read";
    if (kl_guard_answer_relayed(ex, answer, why)) {
        /* a secret the caller has had is neither kept a second time nor
         * told to the hooks after the answer */
        withhold_capture(a);
        drop_kept(a);
    }
    cJSON_Delete(answer);
    cJSON_Delete(events);
}

cJSON *kl_account_tool_calls(const kl_exchange *ex, const cJSON *answer)
{
    return ex->acct && ex->acct->kind >= 0 ? kl_answer_tool_calls((enum kl_usage_kind)ex->acct->kind, answer) : NULL;
}

/* Claude Code sends a stream request again without streaming (billed in
 * full, then refused, then shown as a failed login) when the stream errs
 * before any content block with content has ended; a block it has ends the
 * request with the error instead. So an Anthropic stream the gateway stops
 * gets, before its error event, a text block saying why, when none with
 * content has ended yet (at the next index: the SDKs place blocks by it). */
const char *kl_account_close_blocks(kl_exchange *ex, const char *message, size_t *len)
{
    struct kl_account *a = ex->acct;
    *len = 0;
    if (!a || a->kind != KL_USAGE_ANTHROPIC || a->mode != BODY_EVENTS || a->block_done || !message)
        return NULL;
    cJSON *start = cJSON_CreateObject(), *delta = cJSON_CreateObject(), *stop = cJSON_CreateObject();
    cJSON_AddStringToObject(start, "type", "content_block_start");
    cJSON_AddNumberToObject(start, "index", a->blocks);
    cJSON *block = cJSON_AddObjectToObject(start, "content_block");
    cJSON_AddStringToObject(block, "type", "text");
    cJSON_AddStringToObject(block, "text", "");
    cJSON_AddStringToObject(delta, "type", "content_block_delta");
    cJSON_AddNumberToObject(delta, "index", a->blocks);
    cJSON *d = cJSON_AddObjectToObject(delta, "delta");
    cJSON_AddStringToObject(d, "type", "text_delta");
    cJSON_AddStringToObject(d, "text", message);
    cJSON_AddStringToObject(stop, "type", "content_block_stop");
    cJSON_AddNumberToObject(stop, "index", a->blocks);
    const char *out = kl_arena_concat(&ex->arena, kl_json_print_arena(&ex->arena, start,
                                                                      "event: content_block_start\ndata: ", "\n\n"),
                                      kl_json_print_arena(&ex->arena, delta, "event: content_block_delta\ndata: ",
                                                          "\n\n"),
                                      kl_json_print_arena(&ex->arena, stop, "event: content_block_stop\ndata: ", "\n\n"),
                                      NULL);
    *len = strlen(out);
    return out;
}
