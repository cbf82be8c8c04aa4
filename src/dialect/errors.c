#include "dialect/dialect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/text.h"
#include "dialect/evstream.h"

static const struct {
    int status;
    const char *openai_type, *openai_code;
    const char *anthropic_type;
    const char *google_status;
    /* Bedrock: the error's type (x-amzn-ErrorType), and the exception a
     * stream ends with (only the members its event union has) */
    const char *aws_type, *aws_stream;
} kinds[] = {
    [KL_ERR_INVALID] = {400, "invalid_request_error", "invalid_request", "invalid_request_error", "INVALID_ARGUMENT",
                        "ValidationException", "validationException"},
    [KL_ERR_UNAUTHENTICATED] = {401, "authentication_error", "unauthenticated", "authentication_error", "UNAUTHENTICATED",
                                "AccessDeniedException", "validationException"},
    [KL_ERR_FORBIDDEN] = {403, "permission_error", "access_denied", "permission_error", "PERMISSION_DENIED",
                          "AccessDeniedException", "validationException"},
    [KL_ERR_NOT_FOUND] = {404, "invalid_request_error", "not_found", "not_found_error", "NOT_FOUND",
                          "ResourceNotFoundException", "validationException"},
    [KL_ERR_METHOD] = {405, "invalid_request_error", "method_not_allowed", "invalid_request_error", "INVALID_ARGUMENT",
                       "ValidationException", "validationException"},
    [KL_ERR_TOO_LARGE] = {413, "invalid_request_error", "request_too_large", "request_too_large", "INVALID_ARGUMENT",
                          "ValidationException", "validationException"},
    [KL_ERR_RATE_LIMIT] = {429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED",
                           "ThrottlingException", "throttlingException"},
    [KL_ERR_QUOTA] = {429, "insufficient_quota", "insufficient_quota", "rate_limit_error", "RESOURCE_EXHAUSTED",
                      "ServiceQuotaExceededException", "throttlingException"},
    [KL_ERR_INTERNAL] = {500, "server_error", "internal_error", "api_error", "INTERNAL",
                         "InternalServerException", "internalServerException"},
    [KL_ERR_BAD_GATEWAY] = {502, "server_error", "bad_gateway", "api_error", "UNAVAILABLE",
                            "InternalServerException", "modelStreamErrorException"},
    [KL_ERR_UNAVAILABLE] = {503, "server_error", "service_unavailable", "overloaded_error", "UNAVAILABLE",
                            "ServiceUnavailableException", "serviceUnavailableException"},
    [KL_ERR_TIMEOUT] = {504, "server_error", "upstream_timeout", "timeout_error", "DEADLINE_EXCEEDED",
                        "ModelTimeoutException", "modelTimeoutException"},
    [KL_ERR_CLIENT_TIMEOUT] = {408, "invalid_request_error", "request_timeout", "invalid_request_error",
                               "DEADLINE_EXCEEDED", "ValidationException", "validationException"},
    [KL_ERR_HEAD_TOO_LARGE] = {431, "invalid_request_error", "request_header_fields_too_large", "request_too_large",
                               "INVALID_ARGUMENT", "ValidationException", "validationException"},
    [KL_ERR_URI_TOO_LONG] = {414, "invalid_request_error", "uri_too_long", "invalid_request_error",
                             "INVALID_ARGUMENT", "ValidationException", "validationException"},
    [KL_ERR_NOT_IMPLEMENTED] = {501, "invalid_request_error", "not_implemented", "invalid_request_error",
                                "UNIMPLEMENTED", "ValidationException", "validationException"},
    [KL_ERR_VERSION] = {505, "invalid_request_error", "http_version_not_supported", "invalid_request_error",
                        "INVALID_ARGUMENT", "ValidationException", "validationException"},
    /* gRPC's "do not retry until the system's state is fixed", and the
     * exception Bedrock itself sends for a request above an account quota:
     * 400s that Gemini CLI, Google's SDK and the AWS SDKs do not send again */
    [KL_ERR_LIMIT_FINAL] = {400, "invalid_request_error", "limit_exceeded", "invalid_request_error",
                            "FAILED_PRECONDITION", "ServiceQuotaExceededException", "validationException"},
    /* a policy's refusal is the caller's request, as Anthropic's "Output
     * blocked by content filtering policy" and OpenAI's
     * content_policy_violation are: 400, never 403, which Claude Code
     * shows as a failed login ("Please run /login") */
    [KL_ERR_BLOCKED] = {400, "invalid_request_error", "blocked_by_policy", "invalid_request_error", "INVALID_ARGUMENT",
                        "ValidationException", "validationException"},
};

const char *kl_dialect_bedrock_error_type(enum kl_err_kind kind)
{
    return kinds[kind].aws_type;
}

int kl_dialect_stream_error_status(const char *type, size_t len)
{
    static const struct {
        const char *type;
        int status;
    } t[] = {
        {"invalid_request_error", 400}, {"authentication_error", 401}, {"billing_error", 402},
        {"permission_error", 403},      {"not_found_error", 404},      {"request_too_large", 413},
        {"rate_limit_error", 429},      {"api_error", 500},            {"timeout_error", 504},
        {"overloaded_error", 529},      {"validationException", 400},  {"accessDeniedException", 403},
        {"modelTimeoutException", 408}, {"modelStreamErrorException", 424}, {"throttlingException", 429},
        {"modelNotReadyException", 429}, {"internalServerException", 500}, {"serviceUnavailableException", 503},
    };
    /* Bedrock names an exception member "throttlingException" and the
     * same error's code "ThrottlingException" */
    for (size_t i = 0; type && i < sizeof(t) / sizeof(t[0]); i++)
        if (strlen(t[i].type) == len && strncasecmp(t[i].type, type, len) == 0)
            return t[i].status;
    return 500;
}

int kl_err_status(enum kl_err_kind kind)
{
    return kinds[kind].status;
}

enum kl_err_kind kl_err_kind_for_status(int status)
{
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        if (kinds[k].status == status)
            return (enum kl_err_kind)k;
    return status >= 500 ? KL_ERR_BAD_GATEWAY : KL_ERR_INVALID;
}

/* The message as UTF-8: it may quote what the caller sent (a path, a
 * model name) byte for byte, and JSON readers refuse other bytes. */
static const char *utf8_message(kl_arena *a, const char *message)
{
    if (!message)
        return "";
    size_t n = kl_utf8_clean_len(message);
    if (n == strlen(message))
        return message;
    char *clean = kl_arena_alloc(a, n + 1);
    kl_utf8_clean(clean, message);
    return clean;
}

/* lasting: keyless says not to retry (x-should-retry: false). Anthropic's
 * type for a 503 is then api_error, not overloaded_error: Claude Code retries
 * an overloaded_error whatever the header says, for minutes (a provider key
 * not set: 9 tries over 2 minutes), where api_error it shows at once. */
static cJSON *error_json(enum kl_dialect d, enum kl_err_kind kind, const char *message, bool lasting)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_CreateObject();
    switch (d) {
    case KL_DIALECT_OPENAI:
        cJSON_AddStringToObject(err, "message", message);
        cJSON_AddStringToObject(err, "type", kinds[kind].openai_type);
        cJSON_AddNullToObject(err, "param");
        cJSON_AddStringToObject(err, "code", kinds[kind].openai_code);
        cJSON_AddItemToObject(root, "error", err);
        break;
    case KL_DIALECT_ANTHROPIC:
        cJSON_AddStringToObject(root, "type", "error");
        cJSON_AddStringToObject(err, "type", lasting && kind == KL_ERR_UNAVAILABLE ? "api_error"
                                                                                  : kinds[kind].anthropic_type);
        cJSON_AddStringToObject(err, "message", message);
        cJSON_AddItemToObject(root, "error", err);
        break;
    case KL_DIALECT_GEMINI:
        cJSON_AddNumberToObject(err, "code", kinds[kind].status);
        cJSON_AddStringToObject(err, "message", message);
        cJSON_AddStringToObject(err, "status", kinds[kind].google_status);
        cJSON_AddItemToObject(root, "error", err);
        break;
    case KL_DIALECT_BEDROCK: /* the type is in x-amzn-ErrorType (kl_fail) */
        cJSON_Delete(err);
        cJSON_AddStringToObject(root, "message", message);
        break;
    }
    return root;
}

char *kl_dialect_error_body(kl_arena *a, enum kl_dialect d, enum kl_err_kind kind,
                            const char *message)
{
    return kl_dialect_error_body_retry(a, d, kind, message, 0);
}

char *kl_dialect_error_body_retry(kl_arena *a, enum kl_dialect d, enum kl_err_kind kind, const char *message,
                                  int64_t retry)
{
    cJSON *root = error_json(d, kind, utf8_message(a, message), retry < 0);
    if (d == KL_DIALECT_GEMINI && retry > 0 && kinds[kind].status == 429) {
        cJSON *details = cJSON_AddArrayToObject(cJSON_GetObjectItemCaseSensitive(root, "error"), "details");
        cJSON *info = cJSON_CreateObject();
        cJSON_AddStringToObject(info, "@type", "type.googleapis.com/google.rpc.RetryInfo");
        char delay[32];
        snprintf(delay, sizeof(delay), "%llds", (long long)retry);
        cJSON_AddStringToObject(info, "retryDelay", delay);
        cJSON_AddItemToArray(details, info);
    }
    return kl_json_print_arena(a, root, "", "\n");
}

char *kl_dialect_error_event(kl_arena *a, enum kl_dialect d, enum kl_endpoint ep, enum kl_err_kind kind,
                             const char *message, size_t *len)
{
    message = utf8_message(a, message);
    char *ev;
    if (d == KL_DIALECT_BEDROCK) {
        /* what the AWS SDKs raise as the modeled exception */
        const char *names[] = {":message-type", ":exception-type", ":content-type"};
        /* ConverseStream's union has no modelTimeoutException */
        const char *type = kind == KL_ERR_TIMEOUT && ep == KL_EP_BEDROCK_CONVERSE_STREAM ? "modelStreamErrorException"
                                                                                        : kinds[kind].aws_stream;
        const char *values[] = {"exception", type, "application/json"};
        char *body = kl_dialect_error_body(a, d, kind, message);
        return kl_evs_encode(a, names, values, 3, body, strlen(body), len);
    }
    if (ep == KL_EP_RESPONSES) {
        /* A Responses stream fails with response.failed, its response's
         * error read by clients such as Codex; the same error at the top
         * level is what the OpenAI SDKs raise from any event */
        cJSON *root = error_json(KL_DIALECT_OPENAI, kind, message, false);
        cJSON_AddStringToObject(root, "type", "response.failed");
        cJSON *resp = cJSON_AddObjectToObject(root, "response");
        cJSON_AddStringToObject(resp, "object", "response");
        cJSON_AddStringToObject(resp, "status", "failed");
        cJSON *err = cJSON_AddObjectToObject(resp, "error");
        /* Codex sends a failed response again (up to 5 times, each billed)
         * unless its code says that cannot help; a refusal (a policy, a
         * guardrail) is "invalid_prompt" to it, which it shows and ends on */
        int st = kinds[kind].status;
        bool final = st >= 400 && st < 500 && st != 408 && st != 429 && kind != KL_ERR_QUOTA;
        cJSON_AddStringToObject(err, "code", final ? "invalid_prompt" : kinds[kind].openai_code);
        cJSON_AddStringToObject(err, "message", message);
        ev = kl_json_print_arena(a, root, "event: response.failed\ndata: ", "\n\n");
    } else {
        const char *prefix = d == KL_DIALECT_ANTHROPIC ? "event: error\ndata: " : "data: ";
        ev = kl_json_print_arena(a, error_json(d, kind, message, false), prefix, "\n\n");
    }
    *len = strlen(ev);
    return ev;
}

/* Gemini breaks a stream off with its error as bare JSON, pretty-printed,
 * outside the SSE framing, and some SDKs look for it only there: the one
 * Gemini CLI bundles raises a read chunk that parses as such JSON, and
 * takes a `data:` event holding the error for an answer without candidates
 * (the CLI retried, then exited 0 "without a finish reason"); google-genai
 * joins the lines of one. @google/genai raises the `data:` event. */
char *kl_dialect_error_tail(kl_arena *a, enum kl_dialect d, enum kl_endpoint ep, enum kl_err_kind kind,
                            const char *message, size_t *len)
{
    if (d != KL_DIALECT_GEMINI || ep != KL_EP_GEMINI_STREAM)
        return NULL;
    char *quoted = kl_json_print_arena(a, cJSON_CreateString(utf8_message(a, message)), "", "");
    char *t = kl_arena_printf(a, "{\n  \"error\": {\n    \"code\": %d,\n    \"message\": %s,\n"
                              "    \"status\": \"%s\"\n  }\n}\n",
                              kinds[kind].status, quoted, kinds[kind].google_status);
    *len = strlen(t);
    return t;
}
