/* Anthropic dialect: Messages (whole and streamed; also under Vertex AI's
 * rawPredict / streamRawPredict paths), count_tokens, models. */
#include <stdio.h>
#include <string.h>

#include "mockllm.h"

#define SALT_TOOL 0x3000
#define SSE_MALFORMED "data: {not json\n\n"

void ml_anthropic_request_id(ml_worker *w, char *out, size_t cap)
{
    ml_make_id(ml_rand(w), out, cap, "req_011C", ml_alnum, 20);
}

static const char *str_field(cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* True when the newest message is a user turn carrying a tool_result. */
int ml_anthropic_after_tool_result(cJSON *j)
{
    cJSON *b;

    cJSON_ArrayForEach(b, ml_last_message_content(j)) {
        const char *t = str_field(b, "type");
        if (t && strcmp(t, "tool_result") == 0)
            return 1;
    }
    return 0;
}

/* Claude's ids name the platform that served it: msg_01... first-party,
 * msg_bdrk_01... on Bedrock, msg_vrtx_01... on Vertex AI (tool ids alike). */
void ml_anthropic_ids(ml_reply *r, const char *platform)
{
    char prefix[32];

    r->platform = platform;
    snprintf(prefix, sizeof(prefix), "msg_%s01", platform);
    ml_make_id(r->seed, r->id, sizeof(r->id), prefix, ml_alnum, 22);
}

static void tool_id(const ml_reply *r, int t, char *out, size_t cap)
{
    char prefix[32];

    snprintf(prefix, sizeof(prefix), "toolu_%s01", r->platform ? r->platform : "");
    ml_make_id(r->seed + SALT_TOOL + (uint64_t)t, out, cap, prefix, ml_alnum, 22);
}

static cJSON *usage(const ml_reply *r, long output_tokens)
{
    const ml_directives *d = &r->d;
    cJSON *u = cJSON_CreateObject(), *cc;

    ml_obj_add_num(u, "input_tokens", (double)d->in);
    ml_obj_add_num(u, "cache_creation_input_tokens", (double)d->cache_write);
    ml_obj_add_num(u, "cache_read_input_tokens", (double)d->cache_read);
    cc = ml_obj_add_obj(u, "cache_creation");
    ml_obj_add_num(cc, "ephemeral_5m_input_tokens", (double)d->cache_write);
    ml_obj_add_num(cc, "ephemeral_1h_input_tokens", 0);
    ml_obj_add_num(u, "output_tokens", (double)output_tokens);
    ml_obj_add_str(u, "service_tier", "standard");
    return u;
}

static const char *stop_reason(const ml_reply *r)
{
    return r->d.ntools > 0 ? "tool_use" : "end_turn";
}

static cJSON *tool_block(const ml_reply *r, int t, int with_input)
{
    char id[48];
    cJSON *b = cJSON_CreateObject(), *in;

    tool_id(r, t, id, sizeof(id));
    ml_obj_add_str(b, "type", "tool_use");
    ml_obj_add_str(b, "id", id);
    ml_obj_add_str(b, "name", r->d.tool[t]);
    in = ml_obj_add_obj(b, "input");
    if (with_input)
        ml_obj_add_str(in, "path", "README.md");
    return b;
}

/* The message object; `done` adds content, stop reason and final usage. */
cJSON *ml_anthropic_message(const ml_reply *r, int done)
{
    cJSON *m = cJSON_CreateObject(), *content;
    int t;

    ml_obj_add_str(m, "id", r->id);
    ml_obj_add_str(m, "type", "message");
    ml_obj_add_str(m, "role", "assistant");
    ml_obj_add_str(m, "model", r->model);
    content = ml_obj_add_arr(m, "content");
    if (done) {
        if (r->has_text) {
            cJSON *b = cJSON_CreateObject();
            ml_obj_add_str(b, "type", "text");
            ml_obj_add_str(b, "text", r->text);
            cJSON_AddItemToArray(content, b);
        }
        for (t = 0; t < r->d.ntools; t++)
            cJSON_AddItemToArray(content, tool_block(r, t, 1));
    }
    ml_obj_add_str(m, "stop_reason", done ? stop_reason(r) : NULL);
    ml_obj_add_null(m, "stop_sequence");
    cJSON_AddItemToObjectCS(m, "usage", usage(r, done ? r->d.out : (r->d.out < 1 ? r->d.out : 1)));
    return m;
}

static int nblocks(const ml_reply *r)
{
    return (r->has_text ? 1 : 0) + r->d.ntools;
}

/* Block b is text when the reply has text and b == 0; the rest are tools. */
static long block_pieces(const ml_reply *r, int b)
{
    return r->has_text && b == 0 ? r->text_pieces : ML_TOOL_ARG_PIECES;
}

/* start, a ping after the first block's start (as the API does), the
 * deltas, stop. */
static long block_span(const ml_reply *r, int b)
{
    return 2 + block_pieces(r, b) + (b == 0 ? 1 : 0);
}

long ml_anthropic_npieces(const ml_reply *r)
{
    long n = 1 + 2;
    int b;

    for (b = 0; b < nblocks(r); b++)
        n += block_span(r, b);
    return n;
}

static cJSON *typed(const char *type)
{
    cJSON *e = cJSON_CreateObject();

    ml_obj_add_str(e, "type", type);
    return e;
}

static cJSON *block_event(ml_reply *r, int b, long k, const char **name)
{
    int is_text = r->has_text && b == 0;
    int t = b - (r->has_text ? 1 : 0);
    long n = block_pieces(r, b);
    cJSON *e, *x;

    if (k == 0) {
        e = typed(*name = "content_block_start");
        ml_obj_add_num(e, "index", b);
        if (is_text) {
            x = ml_obj_add_obj(e, "content_block");
            ml_obj_add_str(x, "type", "text");
            ml_obj_add_str(x, "text", "");
        } else {
            cJSON_AddItemToObjectCS(e, "content_block", tool_block(r, t, 0));
        }
        return e;
    }
    if (b == 0) {
        if (k == 1)
            return typed(*name = "ping");
        k--;
    }
    if (k > n) {
        e = typed(*name = "content_block_stop");
        ml_obj_add_num(e, "index", b);
        return e;
    }
    e = typed(*name = "content_block_delta");
    ml_obj_add_num(e, "index", b);
    x = ml_obj_add_obj(e, "delta");
    if (is_text) {
        size_t s, len;
        ml_piece(r->text, r->text_len, k - 1, n, &s, &len);
        ml_obj_add_str(x, "type", "text_delta");
        ml_obj_add_strn(x, "text", r->text + s, len);
    } else {
        size_t s, len;
        ml_piece(ML_TOOL_ARGS, strlen(ML_TOOL_ARGS), k - 1, n, &s, &len);
        ml_obj_add_str(x, "type", "input_json_delta");
        ml_obj_add_strn(x, "partial_json", ML_TOOL_ARGS + s, len);
    }
    return e;
}

/* Stream event i and its name, whatever the framing (SSE here, AWS event
 * stream messages on Bedrock). */
cJSON *ml_anthropic_event(ml_reply *r, long i, const char **name)
{
    long total = ml_anthropic_npieces(r), k = i - 1;
    cJSON *e, *x;
    int b;

    if (i == 0) {
        e = typed(*name = "message_start");
        cJSON_AddItemToObjectCS(e, "message", ml_anthropic_message(r, 0));
    } else if (i == total - 1) {
        e = typed(*name = "message_stop");
    } else if (i == total - 2) {
        const ml_directives *d = &r->d;
        e = typed(*name = "message_delta");
        x = ml_obj_add_obj(e, "delta");
        ml_obj_add_str(x, "stop_reason", stop_reason(r));
        ml_obj_add_null(x, "stop_sequence");
        x = ml_obj_add_obj(e, "usage");
        ml_obj_add_num(x, "input_tokens", (double)d->in);
        ml_obj_add_num(x, "cache_creation_input_tokens", (double)d->cache_write);
        ml_obj_add_num(x, "cache_read_input_tokens", (double)d->cache_read);
        ml_obj_add_num(x, "output_tokens", (double)d->out);
    } else {
        for (b = 0; k >= block_span(r, b); b++)
            k -= block_span(r, b);
        e = block_event(r, b, k, name);
    }
    return e;
}

static void stream_piece(ml_reply *r, long i, struct evbuffer *out)
{
    const char *name = NULL;
    cJSON *e = ml_anthropic_event(r, i, &name);

    ml_add_sse(out, name, e, "\n\n");
    cJSON_Delete(e);
}

/* stream_error: `event: error` with the error object, and the stream ends. */
static void error_piece(ml_reply *r, long i, struct evbuffer *out)
{
    cJSON *e = ml_error_body(ML_ANTHROPIC, r->d.stream_error, NULL, NULL);

    (void)i;
    cJSON_DeleteItemFromObjectCaseSensitive(e, "request_id");
    ml_add_sse(out, "error", e, "\n\n");
    cJSON_Delete(e);
}

/* A Messages answer. `model` NULL: the body's (first-party); Vertex AI
 * names it in the path. stream < 0: as the body's "stream" says. */
static void messages(ml_call *c, const char *model, int stream, const char *platform)
{
    cJSON *j = ml_parse_body(c, ML_ANTHROPIC);
    ml_reply *r;

    if (!j)
        return;
    if (stream < 0)
        stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    ml_drop_tools_after_result(&c->d, ml_anthropic_after_tool_result(j));
    r = ml_begin(c, ML_ANTHROPIC, model ? model : str_field(j, "model"));
    cJSON_Delete(j);
    if (!r)
        return;
    ml_anthropic_ids(r, platform);
    if (stream) {
        ml_reply_stream(r, "text/event-stream", ml_anthropic_npieces(r), stream_piece,
                        SSE_MALFORMED);
        ml_reply_stream_hooks(r, NULL, error_piece);
    } else
        ml_reply_json(r, 200, ml_anthropic_message(r, 1));
    ml_reply_start(r);
}

void ml_anthropic_messages(ml_call *c)
{
    messages(c, NULL, -1, "");
}

/* Vertex AI's rawPredict (streamed only if the body asks) and
 * streamRawPredict (always streamed), for the model in the path. Vertex
 * answers with Anthropic's name for it: claude-sonnet-4-5@20250929 ->
 * claude-sonnet-4-5-20250929. */
void ml_anthropic_vertex(ml_call *c, int stream)
{
    char model[sizeof(c->path_model)], *at;

    memcpy(model, c->path_model, sizeof(model));
    if ((at = strrchr(model, '@')) != NULL)
        *at = '-';
    messages(c, model, stream ? 1 : -1, "vrtx_");
}

void ml_anthropic_count_tokens(ml_call *c)
{
    cJSON *j = ml_parse_body(c, ML_ANTHROPIC), *root;
    ml_reply *r;

    if (!j)
        return;
    r = ml_begin(c, ML_ANTHROPIC, str_field(j, "model"));
    cJSON_Delete(j);
    if (!r)
        return;
    root = cJSON_CreateObject();
    ml_obj_add_num(root, "input_tokens", (double)r->d.in);
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}

static cJSON *model_entry(const char *id)
{
    char name[128];
    cJSON *m = cJSON_CreateObject();

    ml_display_name(id, name, sizeof(name));
    ml_obj_add_str(m, "type", "model");
    ml_obj_add_str(m, "id", id);
    ml_obj_add_str(m, "display_name", name);
    ml_obj_add_str(m, "created_at", "2025-09-29T00:00:00Z");
    return m;
}

void ml_anthropic_models(ml_call *c, const char *one)
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
            ml_send_error(c, ML_ANTHROPIC, 404, "model not found");
            return;
        }
    } else {
        root = cJSON_CreateObject();
        data = ml_obj_add_arr(root, "data");
        for (i = 0; i < sh->nmodels; i++)
            cJSON_AddItemToArray(data, model_entry(sh->models[i]));
        ml_obj_add_bool(root, "has_more", 0);
        ml_obj_add_str(root, "first_id", sh->nmodels ? sh->models[0] : NULL);
        ml_obj_add_str(root, "last_id", sh->nmodels ? sh->models[sh->nmodels - 1] : NULL);
    }
    r = ml_begin(c, ML_ANTHROPIC, NULL);
    if (!r) {
        cJSON_Delete(root);
        return;
    }
    ml_reply_json(r, 200, root);
    ml_reply_start(r);
}
