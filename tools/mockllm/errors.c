/* Error envelopes, in each provider's own shape and vocabulary. */
#include <stdio.h>

#include "mockllm.h"

typedef struct err_names {
    int status;
    const char *openai_type;
    const char *openai_code;    /* NULL = JSON null */
    const char *anthropic_type;
    const char *gemini_status;
    const char *bedrock_type;       /* x-amzn-ErrorType */
    const char *bedrock_exception;  /* :exception-type of an event stream */
} err_names;

/* What each provider calls an HTTP status. OpenAI has no single vocabulary;
 * these are the values its API is seen to send. */
static const err_names names[] = {
    { 400, "invalid_request_error", NULL, "invalid_request_error", "INVALID_ARGUMENT",
      "ValidationException", "validationException" },
    { 401, "invalid_request_error", "invalid_api_key", "authentication_error", "UNAUTHENTICATED",
      "ValidationException", "validationException" },
    { 402, "invalid_request_error", "billing_error", "billing_error", "FAILED_PRECONDITION",
      "ValidationException", "validationException" },
    { 403, "permission_error", "permission_denied", "permission_error", "PERMISSION_DENIED",
      "AccessDeniedException", "validationException" },
    { 404, "invalid_request_error", NULL, "not_found_error", "NOT_FOUND",
      "ResourceNotFoundException", "validationException" },
    { 408, "timeout_error", NULL, "timeout_error", "DEADLINE_EXCEEDED",
      "ModelTimeoutException", "modelTimeoutException" },
    { 409, "invalid_request_error", "conflict", "invalid_request_error", "ABORTED",
      "ValidationException", "validationException" },
    { 413, "invalid_request_error", "request_too_large", "request_too_large", "INVALID_ARGUMENT",
      "ValidationException", "validationException" },
    { 422, "invalid_request_error", NULL, "invalid_request_error", "INVALID_ARGUMENT",
      "ValidationException", "validationException" },
    { 424, "invalid_request_error", NULL, "invalid_request_error", "FAILED_PRECONDITION",
      "ModelErrorException", "modelStreamErrorException" },
    { 429, "requests", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED",
      "ThrottlingException", "throttlingException" },
    { 500, "server_error", NULL, "api_error", "INTERNAL",
      "InternalServerException", "internalServerException" },
    { 502, "server_error", NULL, "api_error", "UNAVAILABLE",
      "InternalServerException", "internalServerException" },
    { 503, "server_error", "service_unavailable", "overloaded_error", "UNAVAILABLE",
      "ServiceUnavailableException", "serviceUnavailableException" },
    { 504, "timeout_error", NULL, "timeout_error", "DEADLINE_EXCEEDED",
      "InternalServerException", "internalServerException" },
    { 529, "server_error", "overloaded", "overloaded_error", "UNAVAILABLE",
      "InternalServerException", "internalServerException" },
};

static const err_names *lookup(int status)
{
    static const err_names other4 = { 0, "invalid_request_error", NULL,
                                      "invalid_request_error", "FAILED_PRECONDITION",
                                      "ValidationException", "validationException" };
    static const err_names other5 = { 0, "server_error", NULL, "api_error", "INTERNAL",
                                      "InternalServerException", "internalServerException" };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].status == status)
            return &names[i];
    return status < 500 ? &other4 : &other5;
}

/* Bedrock's own sentences for the statuses it answers with. */
static const char *bedrock_message(int status)
{
    switch (status) {
    case 403: return "You don't have access to the model with the specified model ID.";
    case 404: return "The provided model identifier is invalid.";
    case 408: return "Model has timed out in processing the request. Try your request again.";
    case 424: return "Received error from the model. Try your request again.";
    case 429: return "Too many requests, please wait before trying again.";
    case 503: return "Bedrock is unable to process your request.";
    default:
        return status < 500 ? "Invalid request."
                            : "The system encountered an unexpected error during processing. "
                              "Try your request again.";
    }
}

const char *ml_bedrock_error_type(int status)
{
    return lookup(status)->bedrock_type;
}

const char *ml_bedrock_exception_type(int status)
{
    return lookup(status)->bedrock_exception;
}

const char *ml_error_default_message(enum ml_dialect dl, int status)
{
    if (dl == ML_BEDROCK)
        return bedrock_message(status);
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
    case ML_BEDROCK:
        ml_obj_add_str(root, "message", message);
        break;
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
