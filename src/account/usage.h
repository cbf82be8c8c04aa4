/* Token usage read from a provider's answer, normalized across dialects.
 *
 * One parser per exchange, fed whatever the response is made of: one whole
 * JSON body, SSE events one at a time, or the raw bytes of Gemini's
 * JSON-array stream in any split. kl_usage_result() gives the running
 * totals at any moment (for in-stream spend limits) and the final ones at
 * the end. Malformed input is skipped; it never loses what was counted
 * before it.
 *
 * Normalized counts (all >= 0):
 *   input        prompt tokens billed at the input rate: neither served from
 *                the cache nor written to it
 *   cache_read   prompt tokens served from the provider's cache
 *   cache_write  prompt tokens written to the cache
 *   cache_write_1h  of those, the ones written for an hour (Anthropic's
 *                1-hour TTL, priced at cache_write_1h)
 *   output       every token billed at the output rate, reasoning included
 *   reasoning    the reasoning/thinking part of output (informational)
 *
 * Per dialect (missing fields count 0, negative differences clamp to 0):
 *   OpenAI chat   input = prompt_tokens - prompt_tokens_details.cached_tokens
 *                         - prompt_tokens_details.cache_write_tokens
 *                 cache_read = cached_tokens, cache_write = cache_write_tokens,
 *                 output = completion_tokens,
 *                 reasoning = completion_tokens_details.reasoning_tokens
 *   Responses     the same over input_tokens / input_tokens_details /
 *                 output_tokens / output_tokens_details
 *   embeddings    input = usage.prompt_tokens
 *   Anthropic     input = input_tokens, cache_read = cache_read_input_tokens,
 *                 cache_write = cache_creation_input_tokens,
 *                 cache_write_1h = cache_creation.ephemeral_1h_input_tokens
 *                 (at most cache_write),
 *                 output = output_tokens; in a stream every field takes its
 *                 latest non-null value (message_delta's output_tokens is
 *                 cumulative: never summed)
 *   Gemini        input = promptTokenCount - cachedContentTokenCount
 *                         + toolUsePromptTokenCount,
 *                 cache_read = cachedContentTokenCount,
 *                 output = candidatesTokenCount + thoughtsTokenCount,
 *                 reasoning = thoughtsTokenCount; in a stream the latest
 *                 usageMetadata replaces the previous one (cumulative)
 *   Bedrock InvokeModel  Anthropic's (Claude's body, and its stream's
 *                 events decoded from the event stream's chunks); for other
 *                 model families, Bedrock's own counts
 *                 (amazon-bedrock-invocationMetrics in the last chunk,
 *                 X-Amzn-Bedrock-*-Token-Count headers: kl_usage_counts)
 *   Bedrock Converse  input = usage.inputTokens, cache_read =
 *                 cacheReadInputTokens, cache_write = cacheWriteInputTokens,
 *                 output = outputTokens (a stream's metadata event)
 *   count_tokens  known, all zero: counting consumes nothing
 *
 * The parser and every string it returns live in the arena given to
 * kl_usage_parser_new; there is nothing to free. Parsers share no state, so
 * any number of threads may each run their own. */
#ifndef KL_USAGE_H
#define KL_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "dialect/dialect.h"

enum kl_usage_kind {
    KL_USAGE_OPENAI_CHAT,
    KL_USAGE_OPENAI_RESPONSES,
    KL_USAGE_OPENAI_EMBEDDINGS,
    KL_USAGE_ANTHROPIC,
    KL_USAGE_GEMINI,
    KL_USAGE_BEDROCK_CONVERSE,  /* Bedrock's Converse and ConverseStream */
    KL_USAGE_COUNT_ONLY,        /* /v1/messages/count_tokens, :countTokens, Bedrock's count-tokens */
};

#define KL_USAGE_MAX_TOOL_NAMES 64          /* names kept; tool_calls counts all */
#define KL_USAGE_MAX_ELEMENT (16u << 20)    /* larger Gemini array elements are skipped */

struct kl_usage {
    int64_t input, cache_read, cache_write, output, reasoning;
    int64_t cache_write_1h;     /* part of cache_write */
    int64_t tool_prompt;        /* Gemini's toolUsePromptTokenCount: part of input, billed as input, but not
                                   of the prompt size a price tier looks at (promptTokenCount) */
    bool known;                 /* the response carried usage */
    bool final;                 /* ... and its last word on it: a whole answer's, a stream's once it reported
                                   its stop reason or ended as it should (one cut short has running counts) */
    bool partial;               /* known but not final, estimated at the end (kl_usage_settle) */
    bool answered;              /* a stream carried some of an answer (text, reasoning, a tool call's
                                   start or input), not only its opening and an error: an error event
                                   before any of it was a failure the provider did not bill; a whole
                                   answer reported output tokens */
    const char *model_served;   /* what the provider says it served, or NULL */
    const char *response_id;    /* Responses: the response object's id, and the id of the conversation */
    const char *conversation_id;    /* it joined (kl_admit_remember_chain), or NULL */
    const char *stop_reason;    /* finish_reason / stop_reason / status, or NULL */
    int tool_calls;             /* every tool/function call in the answer */
    int tool_calls_one_answer;  /* the most of them any one answer made (a choice with n > 1, a Gemini
                                   candidate): max_calls is per answer */
    const char **tool_names;    /* the first KL_USAGE_MAX_TOOL_NAMES, in order */
    size_t ntool_names;
};

typedef struct kl_usage_parser kl_usage_parser;

kl_usage_parser *kl_usage_parser_new(kl_arena *a, enum kl_usage_kind kind);

/* fn(arg, ns, name) for each tool call as the parser meets it (name NULL
 * when the call has none; ns the namespace a Responses call names, else
 * NULL; a call may be met more than once: a Responses call
 * again when its item is done and in the final response object). It also
 * makes the parser strict, as a tool policy needs: every event is parsed in
 * full (none skipped for looking uninteresting), and one the caller could
 * read otherwise (see kl_usage_ambiguity) is not read. */
void kl_usage_on_tool(kl_usage_parser *p, void (*fn)(void *, const char *, const char *), void *arg);
/* fn(arg, name) (arg as given to kl_usage_on_tool) for each name a Python
 * SDK would make by joining the names of calls at one index of a chat
 * stream that sent them under new ids (Ollama, Gemini's OpenAI-compatible
 * streams): no tool a caller declared, so only a refused one matters. */
void kl_usage_on_joined_name(kl_usage_parser *p, void (*fn)(void *, const char *));
/* Strict mode: why the caller could read the answer differently from the
 * parser (not JSON, a duplicate key, a \u0000 escape, a tool name sent in
 * pieces, an array element too large to read), or NULL. */
const char *kl_usage_ambiguity(const kl_usage_parser *p);

/* The parser kind for an endpoint; -1 when the endpoint has no usage. */
int kl_usage_kind_for(enum kl_endpoint ep);

/* One whole (non-stream) response body. A Gemini body that is a JSON array
 * (a buffered streamGenerateContent answer) is read element by element. */
void kl_usage_whole(kl_usage_parser *p, const char *body, size_t len);

/* One SSE event: its name (may be NULL or empty; one the dialect does not
 * give its events, such as "message", is disregarded) and its data lines
 * joined with '\n'. */
void kl_usage_event(kl_usage_parser *p, const char *event, size_t event_len,
                    const char *data, size_t data_len);

/* Raw bytes of a JSON-array stream (Gemini without alt=sse), split anywhere.
 * Elements are read as they complete; a malformed element is skipped and
 * reading resumes at the next "," + "{" boundary. */
void kl_usage_array_bytes(kl_usage_parser *p, const char *data, size_t len);

/* Of the bytes fed to kl_usage_array_bytes so far, how many at the end
 * belong to an element not yet complete (0 between elements). */
size_t kl_usage_array_pending(const kl_usage_parser *p);

/* Counts the provider gave beside the body (Bedrock's token count headers):
 * taken only when the body itself reported no usage. */
void kl_usage_counts(kl_usage_parser *p, int64_t input, int64_t output, int64_t cache_read, int64_t cache_write);

/* The answer is Bedrock InvokeModel's: a "usage" without Anthropic's keys
 * (another model family's) leaves usage to Bedrock's own counts, which the
 * last chunk's amazon-bedrock-invocationMetrics and kl_usage_counts give. */
void kl_usage_bedrock(kl_usage_parser *p);

/* Strict mode: part of the answer could not be read at all (a framing
 * error); it makes the answer ambiguous. */
void kl_usage_unreadable(kl_usage_parser *p, const char *what);

/* At the end of the answer. complete: it ended as it should (no error,
 * nothing cut), so whatever usage it reported is final, unless its last
 * word was an error event. Otherwise a stream cut short (by the caller,
 * the provider, or keyless) before its final usage keeps the running
 * counts it had, marked partial, and its output is raised to what the
 * text, thinking and tool input it carried come to at bytes_per_token
 * (quotas'), never past max_output (the cap the provider was held to; 0:
 * none), where those counts say less (Anthropic's first event reports one
 * output token, its last the real count); an answer that reasons more than
 * it shows (Claude 4's thinking summary, OpenAI's hidden reasoning) is
 * taken at max_output. */
void kl_usage_settle(kl_usage_parser *p, int64_t bytes_per_token, int64_t max_output, bool complete);

/* Before kl_usage_settle, for a stream cut short in a dialect that reports
 * usage only at its end (OpenAI's chat and Responses, ConverseStream): the
 * provider bills its whole prompt and what it generated, so the input is
 * taken as prompt_tokens (the prompt quotas reserved, an estimate that
 * leans high) and the output as kl_usage_settle raises it, at the cap for
 * a request that asked for reasoning (reasons), which these streams bill
 * and do not show. Nothing once the stream reported usage, nor for other
 * dialects. */
void kl_usage_assume_prompt(kl_usage_parser *p, int64_t prompt_tokens, bool reasons);

/* Running totals: valid mid-stream and at the end. Never NULL. */
const struct kl_usage *kl_usage_result(const kl_usage_parser *p);

/* input + cache_read + cache_write, less tool_prompt: the prompt size price
 * tiers look at (docs/prices.md). */
int64_t kl_usage_prompt_tokens(const struct kl_usage *u);

#endif
