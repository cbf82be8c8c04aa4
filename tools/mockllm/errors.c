/* Error envelopes, in each provider's own shape and vocabulary. */
#include <stdio.h>

#include "mockllm.h"

typedef struct err_names {
    int status;
    const char *openai_type;
    const char *openai_code;    /* NULL = JSON null */
    const char *anthropic_type;
    const char *gemini_status;
} err_names;

/* What each provider calls an HTTP status. OpenAI has no single vocabulary;
 * these are the values its API is seen to send. */
static const err_names names[] = {
    { 400, "invalid_request_error", NULL, "invalid_request_error", "INVALID_ARGUMENT" },
    { 401, "invalid_request_error", "invalid_api_key", "authentication_error", "UNAUTHENTICATED" },
    { 402, "invalid_request_error", "billing_error", "billing_error", "FAILED_PRECONDITION" },
    { 403, "permission_error", "permission_denied", "permission_error", "PERMISSION_DENIED" },
    { 404, "invalid_request_error", NULL, "not_found_error", "NOT_FOUND" },
    { 408, "timeout_error", NULL, "timeout_error", "DEADLINE_EXCEEDED" },
    { 409, "invalid_request_error", "conflict", "invalid_request_error", "ABORTED" },
    { 413, "invalid_request_error", "request_too_large", "request_too_large", "INVALID_ARGUMENT" },
    { 422, "invalid_request_error", NULL, "invalid_request_error", "INVALID_ARGUMENT" },
    { 429, "requests", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED" },
    { 500, "server_error", NULL, "api_error", "INTERNAL" },
    { 502, "server_error", NULL, "api_error", "UNAVAILABLE" },
    { 503, "server_error", "service_unavailable", "overloaded_error", "UNAVAILABLE" },
    { 504, "timeout_error", NULL, "timeout_error", "DEADLINE_EXCEEDED" },
    { 529, "server_error", "overloaded", "overloaded_error", "UNAVAILABLE" },
};

static const err_names *lookup(int status)
{
    static const err_names other4 = { 0, "invalid_request_error", NULL,
                                      "invalid_request_error", "FAILED_PRECONDITION" };
    static const err_names other5 = { 0, "server_error", NULL, "api_error", "INTERNAL" };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].status == status)
            return &names[i];
    return status < 500 ? &other4 : &other5;
}

const char *ml_error_default_message(enum ml_dialect dl, int status)
{
    switch (status) {
    case 400: return "Invalid request.";
    case 401:
        return dl == ML_GEMINI ? "API key not valid. Please pass a valid API key."
               : dl == ML_ANTHROPIC ? "invalid x-api-key"
               : "Incorrect API key provided.";
    case 403: return "You do not have permission to perform this request.";
    case 404: return "The requested model or resource was not found.";
    case 408: return "Request timed out.";
    case 413: return "Request exceeds the maximum allowed number of bytes.";
    case 429:
        return dl == ML_GEMINI ? "Resource has been exhausted (e.g. check quota)."
                               : "Rate limit reached for requests. Please try again later.";
    case 500:
        return dl == ML_OPENAI ? "The server had an error while processing your request. Sorry about that!"
                               : "Internal server error";
    case 503: return dl == ML_GEMINI ? "The model is overloaded. Please try again later." : "Overloaded";
    case 529: return "Overloaded";
    default: return status < 500 ? "Request failed." : "Internal server error";
    }
}

cJSON *ml_error_body(enum ml_dialect dl, int status, const char *message, const char *request_id)
{
    const err_names *n = lookup(status);
    cJSON *root = cJSON_CreateObject(), *e;

    if (!message)
        message = ml_error_default_message(dl, status);
    switch (dl) {
    case ML_ANTHROPIC:
        ml_obj_add_str(root, "type", "error");
        e = ml_obj_add_obj(root, "error");
        ml_obj_add_str(e, "type", n->anthropic_type);
        ml_obj_add_str(e, "message", message);
        ml_obj_add_str(root, "request_id", request_id);
        break;
    case ML_GEMINI:
        e = ml_obj_add_obj(root, "error");
        ml_obj_add_num(e, "code", status);
        ml_obj_add_str(e, "message", message);
        ml_obj_add_str(e, "status", n->gemini_status);
        break;
    case ML_OPENAI:
    default:
        e = ml_obj_add_obj(root, "error");
        ml_obj_add_str(e, "message", message);
        ml_obj_add_str(e, "type", n->openai_type);
        ml_obj_add_null(e, "param");
        ml_obj_add_str(e, "code", n->openai_code);
        break;
    }
    return root;
}
