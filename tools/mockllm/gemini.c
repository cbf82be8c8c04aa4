/* Gemini dialect: generateContent, streamGenerateContent (SSE with alt=sse,
 * otherwise one JSON array sent piece by piece), countTokens, models. */
#include <stdio.h>
#include <string.h>

#include "mockllm.h"

#define SSE_SEP "\r\n\r\n"
#define SSE_MALFORMED "data: {not json\r\n\r\n"
#define ARRAY_MALFORMED ",\r\n{not json\n"

/* True when the newest content carries a functionResponse part. */
static int last_is_function_response(cJSON *j)
{
    cJSON *contents = cJSON_GetObjectItemCaseSensitive(j, "contents"), *last, *parts, *p;
    int n = cJSON_IsArray(contents) ? cJSON_GetArraySize(contents) : 0;

    if (n == 0)
        return 0;
    last = cJSON_GetArrayItem(contents, n - 1);
    parts = cJSON_GetObjectItemCaseSensitive(last, "parts");
    if (!cJSON_IsArray(parts))
        return 0;
    cJSON_ArrayForEach(p, parts)
        if (cJSON_GetObjectItemCaseSensitive(p, "functionResponse"))
            return 1;
    return 0;
}

/* Text chunks, then one chunk holding every function call. */
static long nchunks(const ml_reply *r)
{
    return (r->has_text ? r->text_pieces : 0) + (r->d.ntools > 0 ? 1 : 0);
}

static void add_modality(cJSON *o, const char *k, long tokens)
{
    cJSON *a = ml_obj_add_arr(o, k), *m = cJSON_CreateObject();

    ml_obj_add_str(m, "modality", "TEXT");
    ml_obj_add_num(m, "tokenCount", (double)tokens);
    cJSON_AddItemToArray(a, m);
}

/* usageMetadata. Zero counts are left out, as the API (proto3 JSON) does.
 * As the API streams: the prompt's counts in every chunk, the output's
 * (candidates, thoughts) only in the last (final = 1), so a stream cut
 * short has said nothing of its output. */
static cJSON *usage(const ml_reply *r, int final)
{
    const ml_directives *d = &r->d;
    cJSON *u = cJSON_CreateObject();
    long out = final ? d->out : 0, thoughts = final ? d->reasoning : 0;

    ml_obj_add_num(u, "promptTokenCount", (double)d->in);
    if (out > 0)
        ml_obj_add_num(u, "candidatesTokenCount", (double)out);
    ml_obj_add_num(u, "totalTokenCount", (double)(d->in + out + thoughts));
    if (d->cache_read > 0)
        ml_obj_add_num(u, "cachedContentTokenCount", (double)d->cache_read);
    add_modality(u, "promptTokensDetails", d->in);
    if (d->cache_read > 0)
        add_modality(u, "cacheTokensDetails", d->cache_read);
    if (thoughts > 0)
        ml_obj_add_num(u, "thoughtsTokenCount", (double)thoughts);
    return u;
}

static void add_function_calls(const ml_reply *r, cJSON *parts)
{
    int t;

    for (t = 0; t < r->d.ntools; t++) {
        cJSON *p = cJSON_CreateObject(), *fc = ml_obj_add_obj(p, "functionCall");
        ml_obj_add_str(fc, "name", r->d.tool[t]);
        ml_obj_add_str(ml_obj_add_obj(fc, "args"), "path", "README.md");
        cJSON_AddItemToArray(parts, p);
    }
}

/* A GenerateContentResponse: chunk c of a stream, or the whole answer when
 * c < 0. Usage is cumulative; the last chunk carries the final numbers. */
static cJSON *response(const ml_reply *r, long c)
{
    long n = nchunks(r), tp = r->has_text ? r->text_pieces : 0;
    int last = c < 0 || c == n - 1;
    cJSON *root = cJSON_CreateObject(), *cands, *cand, *content, *parts, *p;

    cands = ml_obj_add_arr(root, "candidates");
    cand = cJSON_CreateObject();
    cJSON_AddItemToArray(cands, cand);
    content = ml_obj_add_obj(cand, "content");
    parts = ml_obj_add_arr(content, "parts");
    if (c < 0) {
        if (r->has_text) {
            p = cJSON_CreateObject();
            ml_obj_add_str(p, "text", r->text);
            cJSON_AddItemToArray(parts, p);
        }
        add_function_calls(r, parts);
    } else if (c < tp) {
        size_t s, len;
        ml_piece(r->text, r->text_len, c, tp, &s, &len);
        p = cJSON_CreateObject();
        ml_obj_add_strn(p, "text", r->text + s, len);
        cJSON_AddItemToArray(parts, p);
    } else {
        add_function_calls(r, parts);
    }
    ml_obj_add_str(content, "role", "model");
    if (last)
        ml_obj_add_str(cand, "finishReason", "STOP");
    ml_obj_add_num(cand, "index", 0);
    cJSON_AddItemToObjectCS(root, "usageMetadata", usage(r, last));
    ml_obj_add_str(root, "modelVersion", r->model);
    ml_obj_add_str(root, "responseId", r->id);
    return root;
}

static void sse_piece(ml_reply *r, long i, struct evbuffer *out)
{
    cJSON *j = response(r, i);

    ml_add_sse(out, NULL, j, SSE_SEP);
    cJSON_Delete(j);
}

/* stream_error: Gemini breaks a stream off with its error as bare JSON,
 * pretty-printed with two spaces, outside the SSE framing, and the stream
 * ends. */
static void sse_error_piece(ml_reply *r, long i, struct evbuffer *out)
{
    cJSON *e = ml_error_body(ML_GEMINI, r->d.stream_error, NULL, NULL);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
    char *msg = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(err, "message"));

    (void)i;
    evbuffer_add_printf(out, "{\n  \"error\": {\n    \"code\": %d,\n    \"message\": %s,\n"
                        "    \"status\": \"%s\"\n  }\n}\n", r->d.stream_error, msg,
                        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "status")));
    cJSON_free(msg);
    cJSON_Delete(e);
}

/* Without alt=sse the stream is one JSON array: "[{...}\n", ",\r\n{...}\n",
 * ..., "]", each piece written as it is produced. */
static void array_piece(ml_reply *r, long i, struct evbuffer *out)
{
    cJSON *j;

    if (i == nchunks(r)) {
        evbuffer_add(out, "]", 1);
        return;
    }
    evbuffer_add(out, i == 0 ? "[" : ",\r\n", i == 0 ? 1 : 3);
    j = response(r, i);
    ml_add_json(out, j);
    cJSON_Delete(j);
    evbuffer_add(out, "\n", 1);
}

void ml_gemini_generate(ml_call *c, int stream)
{
    cJSON *j = ml_parse_body(c, ML_GEMINI);
    ml_reply *r;

    if (!j)
        return;
    ml_drop_tools_after_result(&c->d, last_is_function_response(j));
    cJSON_Delete(j);
    r = ml_begin(c, ML_GEMINI, c->path_model);
    if (!r)
        return;
    ml_make_id(r->seed, r->id, sizeof(r->id), "", ml_alnum, 23);
    r->sse = c->alt_sse;
    if (!stream)
        ml_reply_json(r, 200, response(r, -1));
    else if (r->sse) {
        ml_reply_stream(r, "text/event-stream", nchunks(r), sse_piece, SSE_MALFORMED);
        ml_reply_stream_hooks(r, NULL, sse_error_piece);
    } else
        ml_reply_stream(r, "application/json", nchunks(r) + 1, array_piece, ARRAY_MALFORMED);
    ml_reply_start(r);
}

void ml_gemini_count_tokens(ml_call *c)
{
    cJSON *j = ml_parse_body(c, ML_GEMINI), *root;
    ml_reply *r;

    if (!j)
        return;
    cJSON_Delete(j);
    r = ml_begin(c, ML_GEMINI, c->path_model);
    if (!r)
        return;
    root = cJSON_CreateObject();
    ml_obj_add_num(root, "totalTokens", (double)r->d.in);
    add_modality(root, "promptTokensDetails", r->d.in);
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}

static cJSON *model_entry(const char *id)
{
    char name[300], display[128];
    cJSON *m = cJSON_CreateObject(), *methods;

    snprintf(name, sizeof(name), "models/%s", id);
    ml_display_name(id, display, sizeof(display));
    ml_obj_add_str(m, "name", name);
    ml_obj_add_str(m, "version", "001");
    ml_obj_add_str(m, "displayName", display);
    ml_obj_add_str(m, "description", "Served by mockllm.");
    ml_obj_add_num(m, "inputTokenLimit", 1048576);
    ml_obj_add_num(m, "outputTokenLimit", 65536);
    methods = ml_obj_add_arr(m, "supportedGenerationMethods");
    cJSON_AddItemToArray(methods, cJSON_CreateString("generateContent"));
    cJSON_AddItemToArray(methods, cJSON_CreateString("countTokens"));
    cJSON_AddItemToArray(methods, cJSON_CreateString("streamGenerateContent"));
    ml_obj_add_num(m, "temperature", 1);
    ml_obj_add_num(m, "topP", 0.95);
    ml_obj_add_num(m, "topK", 64);
    ml_obj_add_num(m, "maxTemperature", 2);
    ml_obj_add_bool(m, "thinking", 1);
    return m;
}

void ml_gemini_models(ml_call *c, const char *one)
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
            char msg[400];
            snprintf(msg, sizeof(msg), "models/%.200s is not found for API version v1beta.", one);
            ml_send_error(c, ML_GEMINI, 404, msg);
            return;
        }
    } else {
        root = cJSON_CreateObject();
        data = ml_obj_add_arr(root, "models");
        for (i = 0; i < sh->nmodels; i++)
            cJSON_AddItemToArray(data, model_entry(sh->models[i]));
    }
    r = ml_begin(c, ML_GEMINI, NULL);
    if (!r) {
        cJSON_Delete(root);
        return;
    }
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}
