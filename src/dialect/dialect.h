/* API dialects: for each family (OpenAI, Anthropic, Gemini) where the model
 * is, whether a request streams, and how a gateway-made error looks. The
 * endpoint table here is the single list of paths keyless serves. */
#ifndef KL_DIALECT_H
#define KL_DIALECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/arena.h"

enum kl_dialect { KL_DIALECT_OPENAI, KL_DIALECT_ANTHROPIC, KL_DIALECT_GEMINI, KL_DIALECT_BEDROCK };

enum kl_endpoint {
    KL_EP_ROOT,                 /* GET/HEAD /: liveness probe */
    KL_EP_CHAT,
    KL_EP_RESPONSES,
    KL_EP_EMBEDDINGS,
    KL_EP_MESSAGES,
    KL_EP_COUNT_TOKENS,
    KL_EP_GEMINI_GENERATE,
    KL_EP_GEMINI_STREAM,
    KL_EP_GEMINI_COUNT,
    KL_EP_BEDROCK_INVOKE,       /* POST /model/{id}/invoke: the model's own body (Claude: Anthropic Messages) */
    KL_EP_BEDROCK_INVOKE_STREAM,/* .../invoke-with-response-stream: the same, as an AWS event stream */
    KL_EP_BEDROCK_CONVERSE,     /* .../converse: Bedrock's own message format */
    KL_EP_BEDROCK_CONVERSE_STREAM,
    KL_EP_BEDROCK_COUNT,        /* .../count-tokens */
    KL_EP_MODELS,               /* GET /v1/models (OpenAI or Anthropic shape) */
    KL_EP_MODEL_GET,            /* GET /v1/models/{id} */
    KL_EP_GEMINI_MODELS,        /* GET /v1beta/models */
    KL_EP_GEMINI_MODEL_GET,     /* GET /v1beta/models/{id} */
    KL_EP_ADMIN,                /* /api/... and /metrics */
    KL_EP_UNKNOWN,
};

struct kl_endpoint_info {
    enum kl_endpoint id;
    enum kl_dialect dialect;
    const char *name;           /* stable name used in records */
    const char *method;         /* the one method allowed; NULL = GET or HEAD */
    unsigned compat;            /* provider compatibility bit that serves it */
    bool inference;             /* forwarded to a provider */
    bool model_in_path;         /* the path names the model (Gemini, Bedrock, Vertex), not the body */
};

/* The result of looking at method + path + headers. */
struct kl_route_match {
    const struct kl_endpoint_info *ep;
    bool method_ok;
    const char *path_model;     /* Gemini or Bedrock model from the path (arena, decoded), or NULL */
};

/* Which SDK sent a request, as its headers tell: the few paths two APIs
 * share (GET /v1/models, GET /v1/models/{id}) are answered in its shape. */
enum kl_client {
    KL_CLIENT_ANY,
    KL_CLIENT_ANTHROPIC,        /* an anthropic-version header */
    KL_CLIENT_GOOGLE,           /* x-goog-api-key or x-goog-api-client (@google/genai with apiVersion v1) */
};

void kl_dialect_classify(kl_arena *a, const char *method, const char *path, enum kl_client client,
                         struct kl_route_match *m);

/* Whether keyless reads this request's body and its answer in full (the
 * output cap, the tools declared and called): every endpoint but Bedrock's
 * InvokeModel for a model family other than Claude, whose bodies are each
 * family's own. model: the provider's id for it. */
bool kl_dialect_reads_body(const struct kl_endpoint_info *ep, const char *model);

/* A Vertex AI path's parts (pointers into it, not terminated): "/{version}/
 * projects/{project}/locations/{location}/publishers/{publisher}/models/
 * {model}:{method}"; project and location absent (NULL) in Express mode's
 * "/{version}/publishers/...". Project and location hold only letters,
 * digits, '-', '_' and '.' (not "." or ".."). 0, or -1 for another path. */
struct kl_vertex_path {
    const char *version;        /* "v1" or "v1beta1" (terminated) */
    const char *project, *location, *publisher, *model, *method;
    size_t project_len, location_len, publisher_len, model_len;
};
int kl_dialect_vertex_path(const char *path, struct kl_vertex_path *v);

/* The dialect a request to an unknown path most likely speaks. */
enum kl_dialect kl_dialect_guess(const char *path, bool anthropic_version);

/* Where the top-level members keyless reads or rewrites sit in a request
 * body (byte offsets; end == 0: absent). Noted in the one pass over the body
 * the endpoint stage makes, so later stages (route's splice, the session
 * fingerprint) never scan megabytes of prompt again. */
struct kl_body_span {
    size_t start, end;
};

struct kl_body_map {
    struct kl_body_span model, stream, stream_options, max_tokens, max_completion_tokens,
        max_output_tokens, generation_config, metadata, messages, input, contents, inference_config, n,
        generation_config_snake,
        /* what points the provider at input the body does not hold (admit/referenced.c) */
        previous_response_id, conversation, prompt, cached_content, cached_content_snake, tools, mcp_servers,
        web_search_options,
        background,             /* Responses: refused (kl_dialect_request_facts) */
        reasoning, reasoning_effort, /* OpenAI: Responses' reasoning options, chat's effort */
        service_tier, service_tier_camel, /* the processing tier, which sets the rates billed (admit.c):
                                             OpenAI's, Gemini's (also serviceTier), Converse's serviceTier */
        speed,                  /* Anthropic: "fast" mode, billed at a multiple of the rates (admit.c) */
        performance_config,     /* Converse: {"latency": "optimized"}, billed above the rates (admit.c) */
        n_predict;              /* chat: llama.cpp's output cap, read before max_tokens (admit.c) */
};

/* Validate body[0..len) as JSON and, in the same pass, find the members of
 * kl_body_map when it is an object (all absent otherwise). Returns 0; -1 for
 * malformed JSON (*err_at: the first wrong byte, len when it ends early); -2
 * (*dup: the key) when a member appears twice: parsers disagree on which
 * copy counts (cJSON reads the first, many providers the last), so a second
 * "model" or "max_tokens" could slip past grants and quotas; -3 (*dup: the
 * key) when a top-level key differs from one of them only in the case of
 * its letters ("Model"), which Go's JSON reader takes for it. */
int kl_dialect_body_map(const char *body, size_t len, struct kl_body_map *m, size_t *err_at,
                        const char **dup);

/* Facts read from an inference request body. Returns 0, or -1 with *why
 * set (a 400 for the caller). The body is validated as JSON in full but
 * never turned into a tree. */
struct kl_request_facts {
    const char *model;          /* NULL when absent */
    bool stream;
    int64_t max_output_tokens;  /* -1 when absent */
    int64_t thinking_budget;    /* Gemini's thinkingConfig.thinkingBudget; -1 when absent (or dynamic) */
    bool reasons;               /* OpenAI: asks for reasoning (an effort other than none or minimal); Gemini:
                                   thinking without a budget (-1, or a thinkingLevel other than minimal) */
    bool reasoning_declined;    /* OpenAI: an effort given, none or minimal; Gemini: budget 0 or minimal */
    bool has_include_usage;     /* OpenAI chat: stream_options.include_usage is true */
    int64_t choices;            /* answers asked for (chat's n, Gemini's candidateCount): 1 unless more */
    struct kl_body_map map;     /* generation_config: Gemini's, however it is spelt */
};

/* Endpoints by name: the table's, then the twins that share an id with one
 * of them under another name (Vertex's), each with its own slot, for
 * per-endpoint arrays (metrics). */
enum { KL_ENDPOINT_SLOTS = KL_EP_UNKNOWN + 1 + 5 };
size_t kl_endpoint_slot(const struct kl_endpoint_info *ep);
const struct kl_endpoint_info *kl_endpoint_by_slot(size_t slot);

int kl_dialect_request_facts(const struct kl_endpoint_info *ep, const char *body, size_t len,
                             kl_arena *a, struct kl_request_facts *f, const char **why);

/* Error classes keyless itself can answer with. */
enum kl_err_kind {
    KL_ERR_INVALID,             /* 400 */
    KL_ERR_UNAUTHENTICATED,     /* 401 */
    KL_ERR_FORBIDDEN,           /* 403 */
    KL_ERR_NOT_FOUND,           /* 404 */
    KL_ERR_METHOD,              /* 405 */
    KL_ERR_TOO_LARGE,           /* 413 */
    KL_ERR_RATE_LIMIT,          /* 429 requests/tokens per minute, concurrency */
    KL_ERR_QUOTA,               /* 429 spend quota */
    KL_ERR_INTERNAL,            /* 500 */
    KL_ERR_BAD_GATEWAY,         /* 502 */
    KL_ERR_UNAVAILABLE,         /* 503 */
    KL_ERR_TIMEOUT,             /* 504 */
    KL_ERR_CLIENT_TIMEOUT,      /* 408: the request body stalled */
    KL_ERR_HEAD_TOO_LARGE,      /* 431 */
    KL_ERR_URI_TOO_LONG,        /* 414: a request line longer than a whole head may be */
    KL_ERR_NOT_IMPLEMENTED,     /* 501: a transfer coding we do not take */
    KL_ERR_VERSION,             /* 505 */
    KL_ERR_LIMIT_FINAL,         /* 400: a quota or rate limit waiting will not lift, to Gemini and Bedrock
                                   callers (the others get 429 with x-should-retry: false) */
    KL_ERR_BLOCKED,             /* 400: guardrails or the tool policy refused the request or its answer */
};

int kl_err_status(enum kl_err_kind kind);
/* The kind whose status is status (the first: 429 is a rate limit), else
 * 502 for a server's error and 400 for a client's: a provider's error said
 * again in the caller's dialect keeps its status where it can. */
enum kl_err_kind kl_err_kind_for_status(int status);

/* JSON error body in the dialect's own envelope (arena string). */
char *kl_dialect_error_body(kl_arena *a, enum kl_dialect d, enum kl_err_kind kind,
                            const char *message);
/* The same for a 429 that says when to try again (retry seconds, -1 never,
 * 0 unknown): Google's carries it in its details (RetryInfo), which Gemini
 * CLI reads instead of Retry-After. */
char *kl_dialect_error_body_retry(kl_arena *a, enum kl_dialect d, enum kl_err_kind kind, const char *message,
                                  int64_t retry);

/* The same error as one stream event, for failures after a stream began:
 * "event: error\ndata: {...}\n\n" for Anthropic, "event: response.failed"
 * with the error in its response for OpenAI's Responses endpoint (ep), an
 * exception message of the AWS event stream for Bedrock, "data: {...}\n\n"
 * otherwise. *len: its length (a Bedrock message holds NUL bytes). */
char *kl_dialect_error_event(kl_arena *a, enum kl_dialect d, enum kl_endpoint ep, enum kl_err_kind kind,
                             const char *message, size_t *len);
/* What a Gemini SSE stream ends with after that event, once the client has
 * read it on its own (Google's bare JSON error); NULL for other streams. */
char *kl_dialect_error_tail(kl_arena *a, enum kl_dialect d, enum kl_endpoint ep, enum kl_err_kind kind,
                            const char *message, size_t *len);

/* Bedrock's name for the error (x-amzn-ErrorType, "ThrottlingException"). */
const char *kl_dialect_bedrock_error_type(enum kl_err_kind kind);
/* The HTTP status a provider's in-stream error stands for, as its API
 * answers the same error before a stream: an Anthropic error type
 * ("overloaded_error": 529) or a Bedrock stream exception or error code
 * ("throttlingException", "ThrottlingException": 429); 500 for a type it
 * does not list. */
int kl_dialect_stream_error_status(const char *type, size_t len);

#endif
