/* OpenAI dialect: chat completions, Responses, embeddings, model list. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "mockllm.h"

#define SYSTEM_FINGERPRINT "fp_7c3a1e9b52"
#define SALT_CALL 0x1000
#define SALT_ITEM 0x2000
#define SSE_MALFORMED "data: {not json\n\n"

void ml_openai_request_id(ml_worker *w, char *out, size_t cap)
{
    ml_make_id(ml_rand(w), out, cap, "req_", ml_hex, 32);
}

static const char *str_field(cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *last_item(cJSON *j, const char *k)
{
    cJSON *a = cJSON_GetObjectItemCaseSensitive(j, k);
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;

    return n > 0 ? cJSON_GetArrayItem(a, n - 1) : NULL;
}

static void call_id(const ml_reply *r, int t, char *out, size_t cap)
{
    ml_make_id(r->seed + SALT_CALL + (uint64_t)t, out, cap, "call_", ml_alnum, 24);
}

/* ---- chat completions -------------------------------------------------- */

static cJSON *chat_usage(const ml_reply *r)
{
    const ml_directives *d = &r->d;
    cJSON *u = cJSON_CreateObject(), *p, *c;

    ml_obj_add_num(u, "prompt_tokens", (double)d->in);
    ml_obj_add_num(u, "completion_tokens", (double)d->out);
    ml_obj_add_num(u, "total_tokens", (double)(d->in + d->out));
    p = ml_obj_add_obj(u, "prompt_tokens_details");
    ml_obj_add_num(p, "cached_tokens", (double)d->cache_read);
    ml_obj_add_num(p, "audio_tokens", 0);
    c = ml_obj_add_obj(u, "completion_tokens_details");
    ml_obj_add_num(c, "reasoning_tokens", (double)d->reasoning);
    ml_obj_add_num(c, "audio_tokens", 0);
    ml_obj_add_num(c, "accepted_prediction_tokens", 0);
    ml_obj_add_num(c, "rejected_prediction_tokens", 0);
    return u;
}

static cJSON *chat_tool_call(const ml_reply *r, int t)
{
    char id[48];
    cJSON *tc = cJSON_CreateObject(), *f;

    call_id(r, t, id, sizeof(id));
    ml_obj_add_str(tc, "id", id);
    ml_obj_add_str(tc, "type", "function");
    f = ml_obj_add_obj(tc, "function");
    ml_obj_add_str(f, "name", r->d.tool[t]);
    ml_obj_add_str(f, "arguments", ML_TOOL_ARGS);
    return tc;
}

static cJSON *chat_body(const ml_reply *r)
{
    cJSON *root = cJSON_CreateObject(), *choices, *ch, *msg;
    int t;

    ml_obj_add_str(root, "id", r->id);
    ml_obj_add_str(root, "object", "chat.completion");
    ml_obj_add_num(root, "created", (double)r->created);
    ml_obj_add_str(root, "model", r->model);
    choices = ml_obj_add_arr(root, "choices");
    ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    ml_obj_add_num(ch, "index", 0);
    msg = ml_obj_add_obj(ch, "message");
    ml_obj_add_str(msg, "role", "assistant");
    ml_obj_add_str(msg, "content", r->has_text ? r->text : NULL);
    ml_obj_add_null(msg, "refusal");
    ml_obj_add_arr(msg, "annotations");
    if (r->d.ntools > 0) {
        cJSON *calls = ml_obj_add_arr(msg, "tool_calls");
        for (t = 0; t < r->d.ntools; t++)
            cJSON_AddItemToArray(calls, chat_tool_call(r, t));
    }
    ml_obj_add_null(ch, "logprobs");
    ml_obj_add_str(ch, "finish_reason", r->d.ntools > 0 ? "tool_calls" : "stop");
    cJSON_AddItemToObjectCS(root, "usage", chat_usage(r));
    ml_obj_add_str(root, "service_tier", "default");
    ml_obj_add_str(root, "system_fingerprint", SYSTEM_FINGERPRINT);
    return root;
}

/* The fields every chunk shares; *choices receives the choices array. */
static cJSON *chunk_base(const ml_reply *r, cJSON **choices)
{
    cJSON *root = cJSON_CreateObject();

    ml_obj_add_str(root, "id", r->id);
    ml_obj_add_str(root, "object", "chat.completion.chunk");
    ml_obj_add_num(root, "created", (double)r->created);
    ml_obj_add_str(root, "model", r->model);
    ml_obj_add_str(root, "service_tier", "default");
    ml_obj_add_str(root, "system_fingerprint", SYSTEM_FINGERPRINT);
    *choices = ml_obj_add_arr(root, "choices");
    return root;
}

/* Chunk with one choice; returns the (empty) delta to fill in. */
static cJSON *chunk_choice(cJSON *choices, const char *finish, cJSON **delta)
{
    cJSON *ch = cJSON_CreateObject();

    cJSON_AddItemToArray(choices, ch);
    ml_obj_add_num(ch, "index", 0);
    *delta = ml_obj_add_obj(ch, "delta");
    ml_obj_add_null(ch, "logprobs");
    ml_obj_add_str(ch, "finish_reason", finish);
    return ch;
}

static long chat_tool_span(void)
{
    return 1 + ML_TOOL_ARG_PIECES;
}

static long chat_npieces(const ml_reply *r)
{
    return 1 + (r->has_text ? r->text_pieces : 0) + r->d.ntools * chat_tool_span() + 1 +
           (r->include_usage ? 1 : 0) + 1;
}

/* Piece i of a chat stream: role chunk, text deltas, tool-call deltas,
 * finish chunk, optional usage chunk, [DONE]. */
static void chat_piece(ml_reply *r, long i, struct evbuffer *out)
{
    cJSON *root, *choices, *delta;
    long k = i, span = chat_tool_span();

    if (k == 1 + (r->has_text ? r->text_pieces : 0) + r->d.ntools * span + 1 +
                 (r->include_usage ? 1 : 0)) {
        evbuffer_add(out, "data: [DONE]\n\n", 14);
        return;
    }
    root = chunk_base(r, &choices);
    if (k == 0) {
        chunk_choice(choices, NULL, &delta);
        ml_obj_add_str(delta, "role", "assistant");
        ml_obj_add_str(delta, "content", r->has_text ? "" : NULL);
        ml_obj_add_null(delta, "refusal");
        goto emit;
    }
    k -= 1;
    if (r->has_text) {
        if (k < r->text_pieces) {
            size_t s, n;
            ml_piece(r->text, r->text_len, k, r->text_pieces, &s, &n);
            chunk_choice(choices, NULL, &delta);
            ml_obj_add_strn(delta, "content", r->text + s, n);
            goto emit;
        }
        k -= r->text_pieces;
    }
    if (k < r->d.ntools * span) {
        int t = (int)(k / span);
        long sub = k % span;
        cJSON *calls, *tc, *f;

        chunk_choice(choices, NULL, &delta);
        calls = ml_obj_add_arr(delta, "tool_calls");
        tc = cJSON_CreateObject();
        cJSON_AddItemToArray(calls, tc);
        ml_obj_add_num(tc, "index", t);
        if (sub == 0) {
            char id[48];
            call_id(r, t, id, sizeof(id));
            ml_obj_add_str(tc, "id", id);
            ml_obj_add_str(tc, "type", "function");
            f = ml_obj_add_obj(tc, "function");
            ml_obj_add_str(f, "name", r->d.tool[t]);
            ml_obj_add_str(f, "arguments", "");
        } else {
            size_t s, n;
            ml_piece(ML_TOOL_ARGS, strlen(ML_TOOL_ARGS), sub - 1, ML_TOOL_ARG_PIECES, &s, &n);
            f = ml_obj_add_obj(tc, "function");
            ml_obj_add_strn(f, "arguments", ML_TOOL_ARGS + s, n);
        }
        goto emit;
    }
    k -= r->d.ntools * span;
    if (k == 0) {
        chunk_choice(choices, r->d.ntools > 0 ? "tool_calls" : "stop", &delta);
        goto emit;
    }
    /* the usage chunk: no choices, usage filled in */
    cJSON_AddItemToObjectCS(root, "usage", chat_usage(r));
    ml_add_sse(out, NULL, root, "\n\n");
    cJSON_Delete(root);
    return;
emit:
    if (r->include_usage)
        ml_obj_add_null(root, "usage");
    ml_add_sse(out, NULL, root, "\n\n");
    cJSON_Delete(root);
}

void ml_openai_chat(ml_call *c)
{
    cJSON *j = ml_parse_body(c, ML_OPENAI), *last, *so;
    const char *role;
    ml_reply *r;
    int stream;

    if (!j)
        return;
    stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    last = last_item(j, "messages");
    role = last ? str_field(last, "role") : NULL;
    ml_drop_tools_after_result(&c->d, role && strcmp(role, "tool") == 0);
    r = ml_begin(c, ML_OPENAI, str_field(j, "model"));
    if (!r) {
        cJSON_Delete(j);
        return;
    }
    so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    cJSON_Delete(j);
    ml_make_id(r->seed, r->id, sizeof(r->id), "chatcmpl-", ml_alnum, 29);
    if (stream)
        ml_reply_stream(r, "text/event-stream", chat_npieces(r), chat_piece, SSE_MALFORMED);
    else
        ml_reply_json(r, 200, chat_body(r));
    ml_reply_start(r);
}

/* ---- Responses --------------------------------------------------------- */

static void fc_ids(const ml_reply *r, int t, char *fc, size_t fcap, char *call, size_t ccap)
{
    ml_make_id(r->seed + SALT_ITEM + (uint64_t)t, fc, fcap, "fc_", ml_hex, 48);
    call_id(r, t, call, ccap);
}

static cJSON *responses_usage(const ml_reply *r)
{
    const ml_directives *d = &r->d;
    cJSON *u = cJSON_CreateObject(), *x;

    ml_obj_add_num(u, "input_tokens", (double)d->in);
    x = ml_obj_add_obj(u, "input_tokens_details");
    ml_obj_add_num(x, "cached_tokens", (double)d->cache_read);
    ml_obj_add_num(u, "output_tokens", (double)d->out);
    x = ml_obj_add_obj(u, "output_tokens_details");
    ml_obj_add_num(x, "reasoning_tokens", (double)d->reasoning);
    ml_obj_add_num(u, "total_tokens", (double)(d->in + d->out));
    return u;
}

static cJSON *text_part(const char *text, size_t len)
{
    cJSON *p = cJSON_CreateObject();

    ml_obj_add_str(p, "type", "output_text");
    ml_obj_add_arr(p, "annotations");
    ml_obj_add_arr(p, "logprobs");
    ml_obj_add_strn(p, "text", text, len);
    return p;
}

static cJSON *message_item(const ml_reply *r, int done)
{
    cJSON *it = cJSON_CreateObject(), *content;

    ml_obj_add_str(it, "id", r->item_id);
    ml_obj_add_str(it, "type", "message");
    ml_obj_add_str(it, "status", done ? "completed" : "in_progress");
    content = ml_obj_add_arr(it, "content");
    if (done)
        cJSON_AddItemToArray(content, text_part(r->text, r->text_len));
    ml_obj_add_str(it, "role", "assistant");
    return it;
}

static cJSON *function_item(const ml_reply *r, int t, int done)
{
    char fc[64], call[48];
    cJSON *it = cJSON_CreateObject();

    fc_ids(r, t, fc, sizeof(fc), call, sizeof(call));
    ml_obj_add_str(it, "id", fc);
    ml_obj_add_str(it, "type", "function_call");
    ml_obj_add_str(it, "status", done ? "completed" : "in_progress");
    ml_obj_add_str(it, "arguments", done ? ML_TOOL_ARGS : "");
    ml_obj_add_str(it, "call_id", call);
    ml_obj_add_str(it, "name", r->d.tool[t]);
    return it;
}

/* The response object; `done` selects the final state (output + usage). */
static cJSON *response_object(const ml_reply *r, int done)
{
    cJSON *o = cJSON_CreateObject(), *out, *x;
    int t;

    ml_obj_add_str(o, "id", r->id);
    ml_obj_add_str(o, "object", "response");
    ml_obj_add_num(o, "created_at", (double)r->created);
    ml_obj_add_str(o, "status", done ? "completed" : "in_progress");
    ml_obj_add_bool(o, "background", 0);
    ml_obj_add_null(o, "error");
    ml_obj_add_null(o, "incomplete_details");
    ml_obj_add_null(o, "instructions");
    ml_obj_add_null(o, "max_output_tokens");
    ml_obj_add_null(o, "max_tool_calls");
    ml_obj_add_str(o, "model", r->model);
    out = ml_obj_add_arr(o, "output");
    if (done) {
        if (r->has_text)
            cJSON_AddItemToArray(out, message_item(r, 1));
        for (t = 0; t < r->d.ntools; t++)
            cJSON_AddItemToArray(out, function_item(r, t, 1));
    }
    ml_obj_add_bool(o, "parallel_tool_calls", 1);
    if (r->previous_response_id[0])
        ml_obj_add_str(o, "previous_response_id", r->previous_response_id);
    else
        ml_obj_add_null(o, "previous_response_id");
    if (r->conversation[0])
        ml_obj_add_str(ml_obj_add_obj(o, "conversation"), "id", r->conversation);
    ml_obj_add_null(o, "prompt_cache_key");
    x = ml_obj_add_obj(o, "reasoning");
    ml_obj_add_null(x, "effort");
    ml_obj_add_null(x, "summary");
    ml_obj_add_null(o, "safety_identifier");
    ml_obj_add_str(o, "service_tier", "default");
    ml_obj_add_bool(o, "store", 1);
    ml_obj_add_num(o, "temperature", 1.0);
    x = ml_obj_add_obj(o, "text");
    ml_obj_add_str(ml_obj_add_obj(x, "format"), "type", "text");
    ml_obj_add_str(x, "verbosity", "medium");
    ml_obj_add_str(o, "tool_choice", "auto");
    ml_obj_add_arr(o, "tools");
    ml_obj_add_num(o, "top_logprobs", 0);
    ml_obj_add_num(o, "top_p", 1.0);
    ml_obj_add_str(o, "truncation", "disabled");
    if (done)
        cJSON_AddItemToObjectCS(o, "usage", responses_usage(r));
    else
        ml_obj_add_null(o, "usage");
    ml_obj_add_null(o, "user");
    ml_obj_add_obj(o, "metadata");
    return o;
}

static long text_span(const ml_reply *r)
{
    return r->has_text ? 5 + r->text_pieces : 0;
}

static long fn_span(void)
{
    return 3 + ML_TOOL_ARG_PIECES;
}

static long responses_npieces(const ml_reply *r)
{
    return 2 + text_span(r) + r->d.ntools * fn_span() + 1;
}

static cJSON *event(const char *type, long seq)
{
    cJSON *e = cJSON_CreateObject();

    ml_obj_add_str(e, "type", type);
    ml_obj_add_num(e, "sequence_number", (double)seq);
    return e;
}

/* Events of the message item: added, part added, deltas, text done, part
 * done, item done. */
static cJSON *text_event(ml_reply *r, long k, long seq, const char **name)
{
    long n = r->text_pieces;
    cJSON *e;

    if (k == 0) {
        e = event(*name = "response.output_item.added", seq);
        ml_obj_add_num(e, "output_index", 0);
        cJSON_AddItemToObjectCS(e, "item", message_item(r, 0));
        return e;
    }
    if (k == n + 4) {
        e = event(*name = "response.output_item.done", seq);
        ml_obj_add_num(e, "output_index", 0);
        cJSON_AddItemToObjectCS(e, "item", message_item(r, 1));
        return e;
    }
    *name = k == 1 ? "response.content_part.added"
            : k <= n + 1 ? "response.output_text.delta"
            : k == n + 2 ? "response.output_text.done"
                         : "response.content_part.done";
    e = event(*name, seq);
    ml_obj_add_str(e, "item_id", r->item_id);
    ml_obj_add_num(e, "output_index", 0);
    ml_obj_add_num(e, "content_index", 0);
    if (k == 1) {
        cJSON_AddItemToObjectCS(e, "part", text_part("", 0));
    } else if (k <= n + 1) {
        size_t s, len;
        ml_piece(r->text, r->text_len, k - 2, n, &s, &len);
        ml_obj_add_strn(e, "delta", r->text + s, len);
        ml_obj_add_arr(e, "logprobs");
    } else if (k == n + 2) {
        ml_obj_add_str(e, "text", r->text);
        ml_obj_add_arr(e, "logprobs");
    } else {
        cJSON_AddItemToObjectCS(e, "part", text_part(r->text, r->text_len));
    }
    return e;
}

/* Events of function-call item t: added, argument deltas, arguments done,
 * item done. */
static cJSON *fn_event(ml_reply *r, int t, long k, long seq, const char **name)
{
    long oi = (r->has_text ? 1 : 0) + t;
    char fc[64], call[48];
    cJSON *e;

    if (k == 0 || k == ML_TOOL_ARG_PIECES + 2) {
        e = event(*name = k == 0 ? "response.output_item.added" : "response.output_item.done", seq);
        ml_obj_add_num(e, "output_index", (double)oi);
        cJSON_AddItemToObjectCS(e, "item", function_item(r, t, k != 0));
        return e;
    }
    fc_ids(r, t, fc, sizeof(fc), call, sizeof(call));
    if (k <= ML_TOOL_ARG_PIECES) {
        size_t s, len;
        e = event(*name = "response.function_call_arguments.delta", seq);
        ml_obj_add_str(e, "item_id", fc);
        ml_obj_add_num(e, "output_index", (double)oi);
        ml_piece(ML_TOOL_ARGS, strlen(ML_TOOL_ARGS), k - 1, ML_TOOL_ARG_PIECES, &s, &len);
        ml_obj_add_strn(e, "delta", ML_TOOL_ARGS + s, len);
        return e;
    }
    e = event(*name = "response.function_call_arguments.done", seq);
    ml_obj_add_str(e, "item_id", fc);
    ml_obj_add_num(e, "output_index", (double)oi);
    ml_obj_add_str(e, "name", r->d.tool[t]);
    ml_obj_add_str(e, "arguments", ML_TOOL_ARGS);
    return e;
}

static void responses_piece(ml_reply *r, long i, struct evbuffer *out)
{
    const char *name = NULL;
    cJSON *e;
    long k = i;

    if (k < 2 || k == responses_npieces(r) - 1) {
        name = k == 0 ? "response.created" : k == 1 ? "response.in_progress" : "response.completed";
        e = event(name, i);
        cJSON_AddItemToObjectCS(e, "response", response_object(r, k > 1));
    } else if ((k -= 2) < text_span(r)) {
        e = text_event(r, k, i, &name);
    } else {
        k -= text_span(r);
        e = fn_event(r, (int)(k / fn_span()), k % fn_span(), i, &name);
    }
    ml_add_sse(out, name, e, "\n\n");
    cJSON_Delete(e);
}

void ml_openai_responses(ml_call *c)
{
    cJSON *j = ml_parse_body(c, ML_OPENAI), *last;
    const char *type;
    ml_reply *r;
    int stream;

    if (!j)
        return;
    stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    last = last_item(j, "input");
    type = last ? str_field(last, "type") : NULL;
    ml_drop_tools_after_result(&c->d, type && strcmp(type, "function_call_output") == 0);
    r = ml_begin(c, ML_OPENAI, str_field(j, "model"));
    if (r) {
        /* echoed as OpenAI does: the conversation as {"id": ...}, however the request named it */
        cJSON *conv = cJSON_GetObjectItemCaseSensitive(j, "conversation");
        const char *prev = str_field(j, "previous_response_id");
        const char *cid = cJSON_IsString(conv) ? conv->valuestring : str_field(conv, "id");
        snprintf(r->previous_response_id, sizeof(r->previous_response_id), "%s", prev ? prev : "");
        snprintf(r->conversation, sizeof(r->conversation), "%s", cid ? cid : "");
    }
    cJSON_Delete(j);
    if (!r)
        return;
    ml_make_id(r->seed, r->id, sizeof(r->id), "resp_", ml_hex, 48);
    ml_make_id(r->seed + 1, r->item_id, sizeof(r->item_id), "msg_", ml_hex, 48);
    if (stream)
        ml_reply_stream(r, "text/event-stream", responses_npieces(r), responses_piece,
                        SSE_MALFORMED);
    else
        ml_reply_json(r, 200, response_object(r, 1));
    ml_reply_start(r);
}

/* ---- embeddings -------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* A deterministic unit vector for one input, rounded to 6 decimals. */
static void embed(uint64_t seed, double *v, int dims)
{
    double norm = 0;
    int i;

    for (i = 0; i < dims; i++) {
        double x = (double)(ml_mix(seed + (uint64_t)i) >> 11) / 9007199254740992.0;
        v[i] = x * 2.0 - 1.0;
        norm += v[i] * v[i];
    }
    norm = sqrt(norm);
    for (i = 0; i < dims; i++)
        v[i] = norm > 0 ? round(v[i] / norm * 1e6) / 1e6 : 0.0;
}

/* A JSON array of numbers, or with encoding_format=base64 (the openai SDKs'
 * default) the little-endian float32 bytes in base64. */
static cJSON *embedding_value(const double *v, int dims, int b64)
{
    cJSON *a;
    int i;

    if (b64) {
        size_t raw = (size_t)dims * sizeof(float);
        float *f = malloc(raw);
        unsigned char *enc = malloc(4 * ((raw + 2) / 3) + 1);
        cJSON *s = NULL;

        if (f && enc) {
            for (i = 0; i < dims; i++)
                f[i] = (float)v[i];
            EVP_EncodeBlock(enc, (const unsigned char *)f, (int)raw);
            s = cJSON_CreateString((const char *)enc);
        }
        free(f);
        free(enc);
        return s ? s : cJSON_CreateNull();
    }
    a = cJSON_CreateArray();
    for (i = 0; i < dims; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static uint64_t input_seed(cJSON *item)
{
    char *s;
    uint64_t h;

    if (cJSON_IsString(item))
        return fnv1a(item->valuestring, strlen(item->valuestring));
    s = cJSON_PrintUnformatted(item);
    h = s ? fnv1a(s, strlen(s)) : 0;
    cJSON_free(s);
    return h;
}

void ml_openai_embeddings(ml_call *c)
{
    cJSON *j = ml_parse_body(c, ML_OPENAI), *input, *dim, *root, *data, *u, *item;
    const char *fmt;
    int dims = 8, b64, count, i, tokens = 1;
    double *v;
    ml_reply *r;

    if (!j)
        return;
    input = cJSON_GetObjectItemCaseSensitive(j, "input");
    if (!cJSON_IsString(input) && !cJSON_IsArray(input)) {
        cJSON_Delete(j);
        ml_send_error(c, ML_OPENAI, 400, "'input' is a required property");
        return;
    }
    dim = cJSON_GetObjectItemCaseSensitive(j, "dimensions");
    if (cJSON_IsNumber(dim) && dim->valuedouble >= 1 && dim->valuedouble <= 4096)
        dims = (int)dim->valuedouble;
    fmt = str_field(j, "encoding_format");
    b64 = fmt && strcmp(fmt, "base64") == 0;
    r = ml_begin(c, ML_OPENAI, str_field(j, "model"));
    if (!r) {
        cJSON_Delete(j);
        return;
    }
    /* an array of token ids is one input; an array of strings is many */
    if (cJSON_IsArray(input)) {
        cJSON *first = cJSON_GetArrayItem(input, 0);
        tokens = first == NULL || cJSON_IsNumber(first);
    }
    count = cJSON_IsString(input) || tokens ? 1 : cJSON_GetArraySize(input);
    v = malloc(sizeof(double) * (size_t)dims);
    root = cJSON_CreateObject();
    ml_obj_add_str(root, "object", "list");
    data = ml_obj_add_arr(root, "data");
    for (i = 0; i < count && v; i++) {
        cJSON *e = cJSON_CreateObject();
        item = cJSON_IsArray(input) && !tokens ? cJSON_GetArrayItem(input, i) : input;
        embed(input_seed(item), v, dims);
        ml_obj_add_str(e, "object", "embedding");
        ml_obj_add_num(e, "index", i);
        cJSON_AddItemToObjectCS(e, "embedding", embedding_value(v, dims, b64));
        cJSON_AddItemToArray(data, e);
    }
    free(v);
    ml_obj_add_str(root, "model", r->model);
    u = ml_obj_add_obj(root, "usage");
    ml_obj_add_num(u, "prompt_tokens", (double)r->d.in);
    ml_obj_add_num(u, "total_tokens", (double)r->d.in);
    cJSON_Delete(j);
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}

/* ---- models ------------------------------------------------------------ */

static cJSON *model_entry(const char *id)
{
    cJSON *m = cJSON_CreateObject();

    ml_obj_add_str(m, "id", id);
    ml_obj_add_str(m, "object", "model");
    ml_obj_add_num(m, "created", 1715367049);
    ml_obj_add_str(m, "owned_by", "system");
    return m;
}

void ml_openai_models(ml_call *c, const char *one)
{
    ml_shared *sh = c->w->sh;
    cJSON *root = NULL, *data;
    ml_reply *r;
    int i;

    if (one) {
        for (i = 0; i < sh->nmodels && !root; i++)
            if (strcmp(sh->models[i], one) == 0)
                root = model_entry(one);
        if (!root) {
            ml_send_error(c, ML_OPENAI, 404, "The model does not exist or you do not have access to it.");
            return;
        }
    } else {
        root = cJSON_CreateObject();
        ml_obj_add_str(root, "object", "list");
        data = ml_obj_add_arr(root, "data");
        for (i = 0; i < sh->nmodels; i++)
            cJSON_AddItemToArray(data, model_entry(sh->models[i]));
    }
    r = ml_begin(c, ML_OPENAI, NULL);
    if (!r) {
        cJSON_Delete(root);
        return;
    }
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}
