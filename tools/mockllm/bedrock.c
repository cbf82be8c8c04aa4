/* Amazon Bedrock Runtime: InvokeModel with Anthropic Messages bodies (whole,
 * and streamed as AWS event stream messages wrapping the Anthropic events),
 * Converse, ConverseStream and CountTokens.
 *
 * An event stream message is binary, big-endian: total length, headers
 * length, CRC32 of those 8 bytes; the headers; the payload; CRC32 of all
 * that precedes it. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "mockllm.h"

#define SALT_TOOL 0x5000
#define SALT_PAD 0x5100
#define EVENTSTREAM "application/vnd.amazon.eventstream"
#define PAD_LETTERS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
#define HDR_STRING 7

typedef struct es_header {
    const char *name, *value;
} es_header;

/* X-Amzn-RequestId is a version 4 UUID. */
void ml_bedrock_request_id(ml_worker *w, char *out, size_t cap)
{
    uint64_t a = ml_rand(w), b = ml_rand(w);

    snprintf(out, cap, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffffu, (unsigned)a & 0xfffu,
             ((unsigned)(b >> 48) & 0x3fffu) | 0x8000u,
             (unsigned long long)(b & 0xffffffffffffULL));
}

/* "us.anthropic.claude-haiku-4-5-20251001-v1:0", or an ARN ending in such
 * an id, -> "claude-haiku-4-5-20251001": the name Bedrock's Anthropic
 * bodies give the model. */
static void anthropic_name(const char *id, char *out, size_t cap)
{
    const char *p = strrchr(id, '/'), *a, *v, *q;
    size_t n;

    p = p ? p + 1 : id;
    if ((a = strstr(p, "anthropic.")) != NULL)
        p = a + strlen("anthropic.");
    n = strlen(p);
    v = strrchr(p, '-');
    if (v && v[1] == 'v' && isdigit((unsigned char)v[2])) {
        for (q = v + 2; isdigit((unsigned char)*q) || *q == ':'; q++)
            ;
        if (*q == '\0')
            n = (size_t)(v - p);
    }
    snprintf(out, cap, "%.*s", (int)n, p);
}

static void header_num(ml_reply *r, const char *name, long long v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%lld", v);
    ml_reply_header(r, name, buf);
}

/* Milliseconds since the reply was made; at least 1, as no model answers
 * in no time. */
static long long since_start(const ml_reply *r, long long until)
{
    return until - r->t0_ms > 0 ? until - r->t0_ms : 1;
}

/* A whole answer is sent after delay_headers_ms: count that in. */
static long long whole_latency(const ml_reply *r)
{
    return r->d.delay_headers_ms + since_start(r, ml_now_ms());
}

/* ---- event stream framing ----------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Appends one message; every header value is a string (type 7). Header
 * names and values are our own short literals, so hdr cannot overflow. */
static void es_message(struct evbuffer *out, const es_header *h, int nh, const char *payload,
                       size_t plen)
{
    unsigned char hdr[512], pre[12], tail[4];
    size_t hl = 0, nl, vl;
    uLong crc;
    int i;

    for (i = 0; i < nh; i++) {
        nl = strlen(h[i].name);
        vl = strlen(h[i].value);
        hdr[hl++] = (unsigned char)nl;
        memcpy(hdr + hl, h[i].name, nl);
        hl += nl;
        hdr[hl++] = HDR_STRING;
        hdr[hl++] = (unsigned char)(vl >> 8);
        hdr[hl++] = (unsigned char)vl;
        memcpy(hdr + hl, h[i].value, vl);
        hl += vl;
    }
    put32(pre, (uint32_t)(sizeof(pre) + hl + plen + sizeof(tail)));
    put32(pre + 4, (uint32_t)hl);
    put32(pre + 8, (uint32_t)crc32(0, pre, 8));
    crc = crc32(0, pre, sizeof(pre));
    crc = crc32(crc, hdr, (uInt)hl);
    crc = crc32_z(crc, (const unsigned char *)payload, plen);
    put32(tail, (uint32_t)crc);
    evbuffer_add(out, pre, sizeof(pre));
    evbuffer_add(out, hdr, hl);
    evbuffer_add(out, payload, plen);
    evbuffer_add(out, tail, sizeof(tail));
}

/* An `event` message whose payload is j plus the "p" member Bedrock pads
 * every event with (letters of varying length, hiding the payload's size).
 * Takes j. */
static void event_message(ml_reply *r, long i, struct evbuffer *out, const char *type, cJSON *j)
{
    es_header h[3] = { { ":event-type", type },
                       { ":content-type", "application/json" },
                       { ":message-type", "event" } };
    size_t padn = 1 + ml_mix(r->seed + SALT_PAD + (uint64_t)i) % (sizeof(PAD_LETTERS) - 1);
    char *s;

    ml_obj_add_strn(j, "p", PAD_LETTERS, padn);
    s = cJSON_PrintUnformatted(j);
    if (s)
        es_message(out, h, 3, s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(j);
}

/* stream_error: an `exception` message, and the stream ends. */
static void exception_piece(ml_reply *r, long i, struct evbuffer *out)
{
    int st = r->d.stream_error;
    es_header h[3] = { { ":exception-type", ml_bedrock_exception_type(st) },
                       { ":content-type", "application/json" },
                       { ":message-type", "exception" } };
    cJSON *e = ml_error_body(ML_BEDROCK, st, NULL, NULL);
    char *s = cJSON_PrintUnformatted(e);

    (void)i;
    if (s)
        es_message(out, h, 3, s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(e);
}

/* malformed=1: the message due next, with its message CRC spoilt (the
 * decoder's check of the whole message fails; the prelude is intact). */
static void spoil(ml_reply *r, long i, struct evbuffer *out, ml_piece_fn fn)
{
    struct evbuffer *tmp = evbuffer_new();
    unsigned char crc[4];
    size_t n;

    if (!tmp)
        return;
    fn(r, i, tmp);
    n = evbuffer_get_length(tmp);
    if (n >= sizeof(crc)) {
        evbuffer_remove_buffer(tmp, out, n - sizeof(crc));
        evbuffer_remove(tmp, crc, sizeof(crc));
        crc[3] ^= 0xff;
        evbuffer_add(out, crc, sizeof(crc));
    }
    evbuffer_free(tmp);
}

static void note_first_byte(ml_reply *r, long i)
{
    if (i == 0 && r->first_ms == 0)
        r->first_ms = ml_now_ms();
}

/* ---- InvokeModel: Anthropic Messages bodies ------------------------------- */

static cJSON *invocation_metrics(const ml_reply *r)
{
    const ml_directives *d = &r->d;
    cJSON *m = cJSON_CreateObject();
    long long now = ml_now_ms();

    ml_obj_add_num(m, "inputTokenCount", (double)d->in);
    ml_obj_add_num(m, "outputTokenCount", (double)d->out);
    ml_obj_add_num(m, "invocationLatency", (double)since_start(r, now));
    ml_obj_add_num(m, "firstByteLatency", (double)since_start(r, r->first_ms ? r->first_ms : now));
    if (d->cache_read)
        ml_obj_add_num(m, "cacheReadInputTokenCount", (double)d->cache_read);
    if (d->cache_write)
        ml_obj_add_num(m, "cacheWriteInputTokenCount", (double)d->cache_write);
    return m;
}

/* A `chunk` event carrying one Anthropic stream event, base64-encoded. */
static void invoke_piece(ml_reply *r, long i, struct evbuffer *out)
{
    const char *name = NULL;
    cJSON *e, *p;
    char *json;
    unsigned char *b64;
    size_t n;

    note_first_byte(r, i);
    e = ml_anthropic_event(r, i, &name);
    if (name && strcmp(name, "message_stop") == 0)
        cJSON_AddItemToObjectCS(e, "amazon-bedrock-invocationMetrics", invocation_metrics(r));
    json = cJSON_PrintUnformatted(e);
    cJSON_Delete(e);
    if (!json)
        return;
    n = strlen(json);
    b64 = malloc(4 * ((n + 2) / 3) + 1);
    if (b64) {
        EVP_EncodeBlock(b64, (const unsigned char *)json, (int)n);
        p = cJSON_CreateObject();
        ml_obj_add_str(p, "bytes", (const char *)b64);
        event_message(r, i, out, "chunk", p);
        free(b64);
    }
    cJSON_free(json);
}

static void invoke_malformed(ml_reply *r, long i, struct evbuffer *out)
{
    spoil(r, i, out, invoke_piece);
}

void ml_bedrock_invoke(ml_call *c, int stream)
{
    cJSON *j = ml_parse_body(c, ML_BEDROCK);
    char model[256];
    ml_reply *r;

    if (!j)
        return;
    ml_drop_tools_after_result(&c->d, ml_anthropic_after_tool_result(j));
    cJSON_Delete(j);
    anthropic_name(c->path_model, model, sizeof(model));
    r = ml_begin(c, ML_BEDROCK, model);
    if (!r)
        return;
    ml_anthropic_ids(r, "bdrk_");
    if (stream) {
        ml_reply_header(r, "X-Amzn-Bedrock-Content-Type", "application/json");
        ml_reply_stream(r, EVENTSTREAM, ml_anthropic_npieces(r), invoke_piece, NULL);
        ml_reply_stream_hooks(r, invoke_malformed, exception_piece);
    } else {
        header_num(r, "X-Amzn-Bedrock-Input-Token-Count", r->d.in);
        header_num(r, "X-Amzn-Bedrock-Output-Token-Count", r->d.out);
        header_num(r, "X-Amzn-Bedrock-Invocation-Latency", whole_latency(r));
        if (r->d.cache_read)
            header_num(r, "X-Amzn-Bedrock-Cache-Read-Input-Token-Count", r->d.cache_read);
        if (r->d.cache_write)
            header_num(r, "X-Amzn-Bedrock-Cache-Write-Input-Token-Count", r->d.cache_write);
        ml_reply_json(r, 200, ml_anthropic_message(r, 1));
    }
    ml_reply_start(r);
}

/* ---- Converse ------------------------------------------------------------ */

/* True when the newest message carries a toolResult content block. */
static int converse_after_tool_result(cJSON *j)
{
    cJSON *content = ml_last_message_content(j), *b;

    cJSON_ArrayForEach(b, content)
        if (cJSON_GetObjectItemCaseSensitive(b, "toolResult"))
            return 1;
    return 0;
}

static void tool_use_id(const ml_reply *r, int t, char *out, size_t cap)
{
    ml_make_id(r->seed + SALT_TOOL + (uint64_t)t, out, cap, "tooluse_", ml_alnum, 22);
}

static const char *stop_reason(const ml_reply *r)
{
    return r->d.ntools > 0 ? "tool_use" : "end_turn";
}

/* inputTokens leaves the cache out; totalTokens counts everything. */
static cJSON *converse_usage(const ml_directives *d)
{
    cJSON *u = cJSON_CreateObject();

    ml_obj_add_num(u, "inputTokens", (double)d->in);
    ml_obj_add_num(u, "outputTokens", (double)d->out);
    ml_obj_add_num(u, "totalTokens", (double)(d->in + d->out + d->cache_read + d->cache_write));
    if (d->cache_read)
        ml_obj_add_num(u, "cacheReadInputTokens", (double)d->cache_read);
    if (d->cache_write)
        ml_obj_add_num(u, "cacheWriteInputTokens", (double)d->cache_write);
    return u;
}

static cJSON *converse_metrics(long long latency)
{
    cJSON *m = cJSON_CreateObject();

    ml_obj_add_num(m, "latencyMs", (double)latency);
    return m;
}

static cJSON *converse_whole(const ml_reply *r)
{
    cJSON *root = cJSON_CreateObject(), *msg, *content, *b, *tu;
    char id[48];
    int t;

    msg = ml_obj_add_obj(ml_obj_add_obj(root, "output"), "message");
    ml_obj_add_str(msg, "role", "assistant");
    content = ml_obj_add_arr(msg, "content");
    if (r->has_text) {
        b = cJSON_CreateObject();
        ml_obj_add_str(b, "text", r->text);
        cJSON_AddItemToArray(content, b);
    }
    for (t = 0; t < r->d.ntools; t++) {
        b = cJSON_CreateObject();
        tu = ml_obj_add_obj(b, "toolUse");
        tool_use_id(r, t, id, sizeof(id));
        ml_obj_add_str(tu, "toolUseId", id);
        ml_obj_add_str(tu, "name", r->d.tool[t]);
        ml_obj_add_str(ml_obj_add_obj(tu, "input"), "path", "README.md");
        cJSON_AddItemToArray(content, b);
    }
    ml_obj_add_str(root, "stopReason", stop_reason(r));
    cJSON_AddItemToObjectCS(root, "usage", converse_usage(&r->d));
    cJSON_AddItemToObjectCS(root, "metrics", converse_metrics(whole_latency(r)));
    return root;
}

/* Stream layout: messageStart; the text block (text_pieces deltas, stop; a
 * text block has no contentBlockStart); per tool start, 3 deltas, stop;
 * messageStop; metadata. */
static long converse_span(const ml_reply *r, int b)
{
    return r->has_text && b == 0 ? r->text_pieces + 1 : ML_TOOL_ARG_PIECES + 2;
}

static long converse_npieces(const ml_reply *r)
{
    long n = 1 + 2;
    int b;

    for (b = 0; b < (r->has_text ? 1 : 0) + r->d.ntools; b++)
        n += converse_span(r, b);
    return n;
}

static cJSON *block_event(const ml_reply *r, int b, long k, const char **type)
{
    int is_text = r->has_text && b == 0;
    int t = b - (r->has_text ? 1 : 0);
    long last = converse_span(r, b) - 1;
    cJSON *e = cJSON_CreateObject(), *x;
    size_t s, len;
    char id[48];

    ml_obj_add_num(e, "contentBlockIndex", b);
    if (k == last) {
        *type = "contentBlockStop";
    } else if (!is_text && k == 0) {
        *type = "contentBlockStart";
        x = ml_obj_add_obj(ml_obj_add_obj(e, "start"), "toolUse");
        tool_use_id(r, t, id, sizeof(id));
        ml_obj_add_str(x, "toolUseId", id);
        ml_obj_add_str(x, "name", r->d.tool[t]);
    } else if (is_text) {
        *type = "contentBlockDelta";
        ml_piece(r->text, r->text_len, k, r->text_pieces, &s, &len);
        ml_obj_add_strn(ml_obj_add_obj(e, "delta"), "text", r->text + s, len);
    } else {
        *type = "contentBlockDelta";
        ml_piece(ML_TOOL_ARGS, strlen(ML_TOOL_ARGS), k - 1, ML_TOOL_ARG_PIECES, &s, &len);
        x = ml_obj_add_obj(ml_obj_add_obj(e, "delta"), "toolUse");
        ml_obj_add_strn(x, "input", ML_TOOL_ARGS + s, len);
    }
    return e;
}

static void converse_piece(ml_reply *r, long i, struct evbuffer *out)
{
    long total = converse_npieces(r), k = i - 1;
    const char *type;
    cJSON *e;
    int b;

    note_first_byte(r, i);
    if (i == 0) {
        e = cJSON_CreateObject();
        ml_obj_add_str(e, "role", "assistant");
        type = "messageStart";
    } else if (i == total - 2) {
        e = cJSON_CreateObject();
        ml_obj_add_str(e, "stopReason", stop_reason(r));
        type = "messageStop";
    } else if (i == total - 1) {
        e = cJSON_CreateObject();
        cJSON_AddItemToObjectCS(e, "usage", converse_usage(&r->d));
        cJSON_AddItemToObjectCS(e, "metrics", converse_metrics(since_start(r, ml_now_ms())));
        type = "metadata";
    } else {
        for (b = 0; k >= converse_span(r, b); b++)
            k -= converse_span(r, b);
        e = block_event(r, b, k, &type);
    }
    event_message(r, i, out, type, e);
}

static void converse_malformed(ml_reply *r, long i, struct evbuffer *out)
{
    spoil(r, i, out, converse_piece);
}

void ml_bedrock_converse(ml_call *c, int stream)
{
    cJSON *j = ml_parse_body(c, ML_BEDROCK);
    ml_reply *r;

    if (!j)
        return;
    ml_drop_tools_after_result(&c->d, converse_after_tool_result(j));
    cJSON_Delete(j);
    r = ml_begin(c, ML_BEDROCK, c->path_model);
    if (!r)
        return;
    if (stream) {
        ml_reply_stream(r, EVENTSTREAM, converse_npieces(r), converse_piece, NULL);
        ml_reply_stream_hooks(r, converse_malformed, exception_piece);
    } else {
        ml_reply_json(r, 200, converse_whole(r));
    }
    ml_reply_start(r);
}

/* ---- CountTokens --------------------------------------------------------- */

/* CountTokens wraps an InvokeModel body as a base64 blob
 * ({"input":{"invokeModel":{"body":"..."}}}), where the raw-body scan cannot
 * see a [[mock ...]] marker; scan the decoded body too. (A Converse input,
 * {"input":{"converse":{...}}}, is plain JSON and already scanned.) */
void ml_bedrock_scan_count_body(ml_directives *d, const char *body, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(body, len), *blob;
    unsigned char *raw;
    size_t n;
    int got;

    blob = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "input"),
                                         "invokeModel"),
        "body");
    if (cJSON_IsString(blob) && (n = strlen(blob->valuestring)) > 0 && n < (size_t)1 << 30 &&
        (raw = malloc(n / 4 * 3 + 3)) != NULL) {
        got = EVP_DecodeBlock(raw, (const unsigned char *)blob->valuestring, (int)n);
        if (got > 0)
            ml_directives_scan_body(d, (const char *)raw, (size_t)got);
        free(raw);
    }
    cJSON_Delete(j);
}

void ml_bedrock_count_tokens(ml_call *c)
{
    cJSON *j = ml_parse_body(c, ML_BEDROCK), *root;
    ml_reply *r;

    if (!j)
        return;
    cJSON_Delete(j);
    r = ml_begin(c, ML_BEDROCK, c->path_model);
    if (!r)
        return;
    root = cJSON_CreateObject();
    ml_obj_add_num(root, "inputTokens", (double)r->d.in);
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}
