/* Dialects: endpoint table, request facts, error envelopes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/config.h"
#include "dialect/dialect.h"
#include "dialect/evstream.h"

static void classifies_paths(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_route_match m;
    kl_dialect_classify(&a, "POST", "/v1/chat/completions", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_CHAT);
    assert_true(m.method_ok);
    kl_dialect_classify(&a, "GET", "/v1/chat/completions", KL_CLIENT_ANY, &m);
    assert_false(m.method_ok);
    kl_dialect_classify(&a, "POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_GEMINI_STREAM);
    assert_int_equal(m.ep->dialect, KL_DIALECT_GEMINI);
    assert_string_equal(m.path_model, "gemini-2.5-pro");
    kl_dialect_classify(&a, "POST", "/v1/models/gemini-2.5-flash:countTokens", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_GEMINI_COUNT);
    kl_dialect_classify(&a, "POST", "/v1alpha/models/gemini-2.5-flash:generateContent", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_GEMINI_GENERATE);
    assert_string_equal(m.path_model, "gemini-2.5-flash");
    kl_dialect_classify(&a, "GET", "/v1/models", KL_CLIENT_ANTHROPIC, &m);
    assert_int_equal(m.ep->id, KL_EP_MODELS);
    assert_int_equal(m.ep->dialect, KL_DIALECT_ANTHROPIC);
    kl_dialect_classify(&a, "GET", "/v1/models", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->dialect, KL_DIALECT_OPENAI);
    /* @google/genai with apiVersion v1 lists and looks up on the same paths */
    kl_dialect_classify(&a, "GET", "/v1/models", KL_CLIENT_GOOGLE, &m);
    assert_int_equal(m.ep->id, KL_EP_GEMINI_MODELS);
    kl_dialect_classify(&a, "GET", "/v1/models/gemini-2.5-flash", KL_CLIENT_GOOGLE, &m);
    assert_int_equal(m.ep->id, KL_EP_GEMINI_MODEL_GET);
    assert_string_equal(m.path_model, "gemini-2.5-flash");
    kl_dialect_classify(&a, "GET", "/v1/models/gpt-4o", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_MODEL_GET);
    assert_string_equal(m.path_model, "gpt-4o");
    /* ids with ':' that are no Gemini action, qualified ids, percent-encoded ones */
    kl_dialect_classify(&a, "GET", "/v1/models/llama3.1:8b", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_MODEL_GET);
    assert_string_equal(m.path_model, "llama3.1:8b");
    kl_dialect_classify(&a, "GET", "/v1/models/ft%3Agpt-4o-mini%3Aacme%3A%3AAbC123", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_MODEL_GET);
    assert_string_equal(m.path_model, "ft:gpt-4o-mini:acme::AbC123");
    kl_dialect_classify(&a, "GET", "/v1/models/openai/gpt-4o", KL_CLIENT_ANTHROPIC, &m);
    assert_int_equal(m.ep->id, KL_EP_MODEL_GET);
    assert_int_equal(m.ep->dialect, KL_DIALECT_ANTHROPIC);
    assert_string_equal(m.path_model, "openai/gpt-4o");
    kl_dialect_classify(&a, "GET", "/v1/models/openai%2Fgpt-4o", KL_CLIENT_ANY, &m);
    assert_string_equal(m.path_model, "openai/gpt-4o");
    kl_dialect_classify(&a, "GET", "/v1/models/a//b", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "POST", "/v1/messages/count_tokens", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_COUNT_TOKENS);
    kl_dialect_classify(&a, "POST", "/v1beta/models/x:deleteEverything", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "POST", "/v2/chat", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    /* Bedrock: the model id percent-decoded from its segment */
    kl_dialect_classify(&a, "POST", "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_BEDROCK_INVOKE);
    assert_int_equal(m.ep->dialect, KL_DIALECT_BEDROCK);
    assert_string_equal(m.path_model, "us.anthropic.claude-haiku-4-5-20251001-v1:0");
    kl_dialect_classify(&a, "POST", "/model/bedrock/us.anthropic.claude-sonnet-4-6/invoke-with-response-stream",
                        KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_BEDROCK_INVOKE_STREAM);
    assert_string_equal(m.path_model, "bedrock/us.anthropic.claude-sonnet-4-6");
    kl_dialect_classify(&a, "POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse",
                        KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_BEDROCK_CONVERSE);
    assert_string_equal(m.path_model, "arn:aws:bedrock:us-east-1:1:inference-profile/x");
    kl_dialect_classify(&a, "POST", "/model/m/converse-stream", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_BEDROCK_CONVERSE_STREAM);
    kl_dialect_classify(&a, "POST", "/model/m/count-tokens", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_BEDROCK_COUNT);
    kl_dialect_classify(&a, "POST", "/model/m%00x/invoke", KL_CLIENT_ANY, &m); /* a NUL cannot be a model id */
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "POST", "/model/m%2/invoke", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "POST", "/model//invoke", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "POST", "/model/m/delete", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    assert_int_equal(kl_dialect_guess("/model/m/delete", false), KL_DIALECT_BEDROCK);
    /* Vertex AI: Anthropic's Messages API with the model in the path, and Gemini's API */
    kl_dialect_classify(&a, "POST", "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/"
                        "claude-sonnet-4-5%4020250929:streamRawPredict", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_MESSAGES);
    assert_int_equal(m.ep->dialect, KL_DIALECT_ANTHROPIC);
    assert_true(m.ep->model_in_path);
    assert_int_equal(m.ep->compat, KL_COMPAT_GOOGLE_RAW_PREDICT);
    assert_string_equal(m.ep->name, "vertex.anthropic.messages");
    assert_string_equal(m.path_model, "claude-sonnet-4-5@20250929");
    /* its own metrics slot, under its own name */
    assert_true(kl_endpoint_slot(m.ep) > KL_EP_UNKNOWN);
    assert_ptr_equal(kl_endpoint_by_slot(kl_endpoint_slot(m.ep)), m.ep);
    assert_int_equal(kl_endpoint_slot(kl_endpoint_by_slot(KL_EP_MESSAGES)), KL_EP_MESSAGES);
    for (size_t s = 0; s < KL_ENDPOINT_SLOTS; s++)
        for (size_t t = s + 1; t < KL_ENDPOINT_SLOTS; t++)
            assert_string_not_equal(kl_endpoint_by_slot(s)->name, kl_endpoint_by_slot(t)->name);
    kl_dialect_classify(&a, "POST", "/v1/projects/p1/locations/global/publishers/anthropic/models/count-tokens:rawPredict",
                        KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_COUNT_TOKENS);
    assert_false(m.ep->model_in_path);
    assert_null(m.path_model);
    kl_dialect_classify(&a, "POST", "/v1beta1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro:"
                        "streamGenerateContent", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_GEMINI_STREAM);
    assert_int_equal(m.ep->compat, KL_COMPAT_GOOGLE_GENERATE);
    assert_string_equal(m.path_model, "gemini-2.5-pro");
    kl_dialect_classify(&a, "POST", "/v1/projects/p/locations/l/publishers/anthropic/models/c:predict", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "POST", "/v1/projects/p/locations/l/publishers/meta/models/llama:rawPredict", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    kl_dialect_classify(&a, "GET", "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro", KL_CLIENT_ANY, &m);
    assert_int_equal(m.ep->id, KL_EP_UNKNOWN);
    assert_int_equal(kl_dialect_guess("/v1beta/foo", false), KL_DIALECT_GEMINI);
    assert_int_equal(kl_dialect_guess("/v1alpha/cachedContents", false), KL_DIALECT_GEMINI);
    assert_int_equal(kl_dialect_guess("/upload/v1beta/files", false), KL_DIALECT_GEMINI);
    assert_int_equal(kl_dialect_guess("/v1/foo", true), KL_DIALECT_ANTHROPIC);
    /* Claude on Vertex AI, whose SDK sends no anthropic-version: an unknown
     * method or a bad model is answered in Anthropic's shape */
    assert_int_equal(kl_dialect_guess("/v1/projects/p/locations/l/publishers/anthropic/models/c:predict", false),
                     KL_DIALECT_ANTHROPIC);
    kl_arena_free(&a);
}

/* Strings in f live in this arena until the test ends. */
static kl_arena facts_arena;

static int facts(enum kl_endpoint id, const char *body, struct kl_request_facts *f, const char **why)
{
    kl_arena *ap = &facts_arena;
    struct kl_route_match m;
    const char *paths[] = {
        [KL_EP_CHAT] = "/v1/chat/completions", [KL_EP_RESPONSES] = "/v1/responses",
        [KL_EP_MESSAGES] = "/v1/messages", [KL_EP_GEMINI_STREAM] = "/v1beta/models/g:streamGenerateContent",
        [KL_EP_GEMINI_GENERATE] = "/v1beta/models/g:generateContent",
        [KL_EP_BEDROCK_INVOKE] = "/model/m/invoke", [KL_EP_BEDROCK_CONVERSE_STREAM] = "/model/m/converse-stream",
    };
    kl_dialect_classify(ap, "POST", paths[id], KL_CLIENT_ANY, &m);
    return kl_dialect_request_facts(m.ep, body, strlen(body), ap, f, why);
}

static void reads_request_facts(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"gpt-4o\",\"stream\":true,\"max_tokens\":50,"
                                       "\"stream_options\":{\"include_usage\":true}}", &f, &why), 0);
    assert_string_equal(f.model, "gpt-4o");
    assert_true(f.stream);
    assert_int_equal(f.max_output_tokens, 50);
    assert_true(f.has_include_usage);
    /* several caps: the largest, which a server may be the one to read */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_completion_tokens\":7,\"max_tokens\":50}", &f, &why), 0);
    assert_int_equal(f.max_output_tokens, 50);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_completion_tokens\":70,\"n_predict\":5}", &f, &why), 0);
    assert_int_equal(f.max_output_tokens, 70);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_completion_tokens\":\"7\",\"max_tokens\":50}", &f, &why), 0);
    assert_int_equal(f.max_output_tokens, -1);
    /* counts as numbers: plain integers and the rest read alike */
    static const struct {
        const char *v;
        int64_t want;
    } counts[] = {
        {"0", 0}, {"7", 7}, {"123456789012345", 123456789012345}, {"1234567890123456", 1234567890123456},
        {"9000000000000000", -1}, {"99999999999999999999", -1}, {"1e3", 1000}, {"50.0", 50}, {"-5", -1},
        {"\"12\"", -1}, {"null", -1}, {"true", -1},
    };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"model\":\"m\",\"max_tokens\":%s}", counts[i].v);
        assert_int_equal(facts(KL_EP_CHAT, body, &f, &why), 0);
        assert_int_equal(f.max_output_tokens, counts[i].want);
    }
    /* one with a fraction is refused, as the providers refuse it (it had
     * been read as its whole part) */
    static const char *const fractions[] = {"0.5", "12.5", "1.25e1", "-2.5"};
    for (size_t i = 0; i < sizeof(fractions) / sizeof(fractions[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"model\":\"m\",\"max_tokens\":%s}", fractions[i]);
        assert_int_equal(facts(KL_EP_CHAT, body, &f, &why), -1);
        assert_non_null(strstr(why, "\"max_tokens\" must be an integer"));
        snprintf(body, sizeof(body), "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[],\"n\":%s}", fractions[i]);
        assert_int_equal(facts(KL_EP_CHAT, body, &f, &why), -1);
    }
    /* the plain-integer fast path's edges: white space around a count,
     * exponents, -0, 15 and 16 digits, a count in a string (n only) */
    static const struct {
        const char *body;
        int64_t max, n;
    } edges[] = {
        {"{\"model\":\"m\",\"max_tokens\": 12 ,\"n\":\t2\n}", 12, 2},
        {"{\"model\":\"m\",\"max_tokens\":1E2,\"n\":\"3\"}", 100, 3},
        {"{\"model\":\"m\",\"max_tokens\":-0,\"n\":\" 4 \"}", 0, 4},
        {"{\"model\":\"m\",\"max_tokens\":999999999999999,\"n\":1.0}", 999999999999999, 1},
        {"{\"model\":\"m\",\"max_tokens\":9999999999999999999999,\"n\":2e0}", -1, 2},
        {"{\"model\":\"m\",\"max_tokens\":\"12\",\"n\":1}", -1, 1},
    };
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        assert_int_equal(facts(KL_EP_CHAT, edges[i].body, &f, &why), 0);
        assert_int_equal(f.max_output_tokens, edges[i].max);
        assert_int_equal(f.choices, edges[i].n);
    }
    assert_false(f.stream);
    assert_int_equal(facts(KL_EP_RESPONSES, "{\"model\":\"m\",\"max_output_tokens\":9,\"stream\":true}", &f, &why), 0);
    assert_int_equal(f.max_output_tokens, 9);
    assert_int_equal(facts(KL_EP_MESSAGES, "{\"model\":\"c\",\"max_tokens\":1024}", &f, &why), 0);
    assert_int_equal(f.max_output_tokens, 1024);
    assert_int_equal(facts(KL_EP_GEMINI_STREAM, "{\"generationConfig\":{\"maxOutputTokens\":33}}", &f, &why), 0);
    assert_true(f.stream);
    assert_null(f.model);
    assert_int_equal(f.max_output_tokens, 33);
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE, "{\"contents\":[]}", &f, &why), 0);
    assert_false(f.stream);
    /* Bedrock: the model is in the path; a "model" member is not read */
    assert_int_equal(facts(KL_EP_BEDROCK_INVOKE, "{\"anthropic_version\":\"bedrock-2023-05-31\",\"max_tokens\":64,"
                                                 "\"model\":\"other\"}", &f, &why), 0);
    assert_null(f.model);
    assert_false(f.stream);
    assert_int_equal(f.max_output_tokens, 64);
    assert_int_equal(facts(KL_EP_BEDROCK_CONVERSE_STREAM, "{\"inferenceConfig\":{\"maxTokens\":12}}", &f, &why), 0);
    assert_true(f.stream);
    assert_int_equal(f.max_output_tokens, 12);
    assert_int_equal(facts(KL_EP_BEDROCK_CONVERSE_STREAM, "{\"inferenceConfig\":{\"maxTokens\":1,\"maxTokens\":9}}",
                           &f, &why), -1);
    assert_non_null(strstr(why, "duplicate \"maxTokens\" key in inferenceConfig"));
}

/* stream (and Responses' background) is true, false or null: anything else
 * is refused, as OpenAI does, since pydantic-validated servers read "true",
 * 1 or "yes" as true and would stream an answer keyless took for a whole
 * body, its usage never asked for. */
static void refuses_a_stream_that_is_no_boolean(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    const enum kl_endpoint eps[] = {KL_EP_CHAT, KL_EP_RESPONSES, KL_EP_MESSAGES};
    for (size_t i = 0; i < sizeof(eps) / sizeof(eps[0]); i++) {
        const char *body = eps[i] == KL_EP_RESPONSES ? "{\"model\":\"m\",\"input\":\"hi\",\"stream\":%s}"
                                                     : "{\"model\":\"m\",\"messages\":[],\"stream\":%s}";
        const char *ok[] = {"true", "false", "null", " true "};
        const bool want[] = {true, false, false, true};
        for (size_t k = 0; k < 4; k++) {
            char b[128];
            snprintf(b, sizeof(b), body, ok[k]);
            assert_int_equal(facts(eps[i], b, &f, &why), 0);
            assert_int_equal(f.stream, want[k]);
        }
        const char *bad[] = {"1", "0", "\"true\"", "\"false\"", "\"yes\"", "[]", "{}", "1.0"};
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            char b[128];
            snprintf(b, sizeof(b), body, bad[k]);
            assert_int_equal(facts(eps[i], b, &f, &why), -1);
            assert_non_null(strstr(why, "\"stream\" must be a boolean (true or false), not "));
            assert_non_null(strstr(why, bad[k]));
        }
    }
    assert_int_equal(facts(KL_EP_RESPONSES, "{\"model\":\"m\",\"background\":\"true\"}", &f, &why), -1);
    assert_non_null(strstr(why, "\"background\" must be a boolean"));
    assert_int_equal(facts(KL_EP_RESPONSES, "{\"model\":\"m\",\"background\":1}", &f, &why), -1);
    assert_int_equal(facts(KL_EP_RESPONSES, "{\"model\":\"m\",\"background\":false}", &f, &why), 0);
    /* a long one is cut in the message */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"stream\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", &f, &why),
                     -1);
    assert_non_null(strstr(why, "not \"aaaaaaaaaaaaaaa..."));
}

/* Each answer a request asks for is billed: n (chat) and candidateCount
 * (Gemini) multiply the output a quota must cover. */
static void reads_answers_asked_for(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_tokens\":50}", &f, &why), 0);
    assert_int_equal(f.choices, 1);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":8}", &f, &why), 0);
    assert_int_equal(f.choices, 8);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"\\u006e\":3}", &f, &why), 0);
    assert_int_equal(f.choices, 3);  /* an escaped key is the same key */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":1,\"n\":9}", &f, &why), -1);
    assert_non_null(strstr(why, "duplicate \"n\""));
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":null}", &f, &why), 0);
    assert_int_equal(f.choices, 1);
    /* a number written as a string, which pydantic-validated servers read */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":\"3\"}", &f, &why), 0);
    assert_int_equal(f.choices, 3);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":\" 3 \"}", &f, &why), 0);
    assert_int_equal(f.choices, 3);
    /* one out of range, or one keyless cannot read, is refused (read without
     * a cast UBSan would report): pydantic reads "1_0" as 10 */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":\"1e300\"}", &f, &why), -1);
    assert_non_null(strstr(why, "\"n\" must be a whole number"));
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":\"1_0\"}", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"n\":-1}", &f, &why), -1);
    /* a key that differs from one keyless reads only in case ("Model"): refused */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"Model\":\"x\"}", &f, &why), -1);
    assert_non_null(strstr(why, "only in the case of its letters"));
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"\\u004dax_tokens\":5}", &f, &why), -1);
    /* Go folds the Kelvin sign (U+212A) to k and the long s (U+017F) to s,
     * written raw or escaped */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_tokens\":5,\"max_to\\u212aens\":9}", &f, &why), -1);
    assert_non_null(strstr(why, "only in the case of its letters"));
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_to\xe2\x84\xaa" "en\xc5\xbf" "\":9}", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"\xc5\xbf" "tream\":true}", &f, &why), -1);
    /* another letter that is no ASCII one is another key */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_to\\u212bens\":9}", &f, &why), 0);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"m\",\"max_tokens\\u212a\":9}", &f, &why), 0);
    /* n is a chat parameter: a Responses body's "n" is not read */
    assert_int_equal(facts(KL_EP_RESPONSES, "{\"model\":\"m\",\"n\":4}", &f, &why), 0);
    assert_int_equal(f.choices, 1);
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE, "{\"generationConfig\":{\"candidateCount\":4,"
                                                  "\"maxOutputTokens\":10}}", &f, &why), 0);
    assert_int_equal(f.choices, 4);
    assert_int_equal(f.max_output_tokens, 10);
    /* Google's JSON reads an integer written as a string too */
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE, "{\"generationConfig\":{\"candidateCount\":\"4\","
                                                  "\"maxOutputTokens\":\"10\"}}", &f, &why), 0);
    assert_int_equal(f.choices, 4);
    assert_int_equal(f.max_output_tokens, 10);
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE, "{\"generationConfig\":{\"candidateCount\":\"four\"}}", &f, &why), 0);
    assert_int_equal(f.choices, 1);
}

/* Thinking asked for without a budget (dynamic, or Gemini 3's level, as
 * Gemini CLI sends "HIGH") is reasoning the output cap must make room for;
 * a budget of 0 or the minimal level declines it. */
static void reads_gemini_thinking_without_budget(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    static const struct { const char *body; bool reasons, declined; } cases[] = {
        {"{\"generationConfig\":{\"thinkingConfig\":{\"includeThoughts\":true,\"thinkingLevel\":\"HIGH\"}}}", true, false},
        {"{\"generation_config\":{\"thinking_config\":{\"thinking_level\":\"low\"}}}", true, false},
        {"{\"generationConfig\":{\"thinkingConfig\":{\"thinkingBudget\":-1}}}", true, false},
        {"{\"generationConfig\":{\"thinkingConfig\":{\"thinkingBudget\":\"-1\"}}}", true, false},
        {"{\"generationConfig\":{\"thinkingConfig\":{\"thinkingLevel\":\"MINIMAL\"}}}", false, true},
        {"{\"generationConfig\":{\"thinkingConfig\":{\"thinkingBudget\":0}}}", false, true},
        {"{\"generationConfig\":{\"thinkingConfig\":{\"thinkingBudget\":8192}}}", false, false}, /* its own room */
        {"{\"generationConfig\":{\"thinkingConfig\":{\"includeThoughts\":true}}}", false, false},
        {"{\"generationConfig\":{\"maxOutputTokens\":100}}", false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(facts(KL_EP_GEMINI_STREAM, cases[i].body, &f, &why), 0);
        assert_int_equal(f.reasons, cases[i].reasons);
        assert_int_equal(f.reasoning_declined, cases[i].declined);
    }
    assert_int_equal(facts(KL_EP_GEMINI_STREAM, "{\"generationConfig\":{\"thinkingConfig\":{\"thinkingLevel\":\"LOW\","
                                                "\"thinking_level\":\"HIGH\"}}}", &f, &why), -1);
    assert_non_null(strstr(why, "both spellings of \"thinkingLevel\""));
}

/* Google reads a field by its proto name too (generation_config,
 * max_output_tokens): keyless reads either, and refuses a body holding both
 * names of one field, whose value the provider would pick. */
static void reads_gemini_proto_names(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    const char *b = "{\"contents\":[],\"generation_config\":{\"max_output_tokens\":21,\"candidate_count\":2}}";
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE, b, &f, &why), 0);
    assert_int_equal(f.max_output_tokens, 21);
    assert_int_equal(f.choices, 2);
    assert_memory_equal(b + f.map.generation_config.start, "{\"max_output_tokens\"", 20);
    assert_int_equal(facts(KL_EP_GEMINI_STREAM, "{\"generationConfig\":{\"max_output_tokens\":5}}", &f, &why), 0);
    assert_int_equal(f.max_output_tokens, 5);
    assert_int_equal(f.thinking_budget, -1);
    /* the thinking budget, as Gemini CLI sends it, or by its proto names */
    assert_int_equal(facts(KL_EP_GEMINI_STREAM, "{\"generationConfig\":{\"thinkingConfig\":{\"includeThoughts\":true,"
                                                "\"thinkingBudget\":8192}}}", &f, &why), 0);
    assert_int_equal(f.thinking_budget, 8192);
    assert_int_equal(facts(KL_EP_GEMINI_STREAM,
                           "{\"generation_config\":{\"thinking_config\":{\"thinking_budget\":\"512\"}}}", &f, &why), 0);
    assert_int_equal(f.thinking_budget, 512);
    assert_int_equal(facts(KL_EP_GEMINI_STREAM, "{\"generationConfig\":{\"thinkingConfig\":{},\"thinking_config\":{}}}",
                           &f, &why), -1);
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE, "{\"generationConfig\":{},\"generation_config\":{}}", &f, &why),
                     -1);
    assert_non_null(strstr(why, "both \"generationConfig\" and \"generation_config\""));
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE,
                           "{\"generationConfig\":{\"maxOutputTokens\":5,\"max_output_tokens\":90000}}", &f, &why),
                     -1);
    assert_non_null(strstr(why, "both \"maxOutputTokens\" and \"max_output_tokens\" in generationConfig"));
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE,
                           "{\"generation_config\":{\"candidate_count\":2,\"candidateCount\":1}}", &f, &why), -1);
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE,
                           "{\"generation_config\":{\"max_output_tokens\":2,\"max_output_tokens\":3}}", &f, &why),
                     -1);
    assert_non_null(strstr(why, "duplicate \"max_output_tokens\""));
}

/* OpenAI's reasoning counts against the output cap: a request that asks
 * for it (Codex's Responses requests do) gets room for it in a cap keyless
 * adds; "none" and "minimal" ask for (next to) none. */
static void reads_openai_reasoning(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    static const struct {
        enum kl_endpoint ep;
        const char *body;
        bool reasons;
    } cases[] = {
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":{\"effort\":\"medium\",\"summary\":\"auto\"}}", true},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":{\"summary\":\"auto\"}}", true},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":{\"effort\":null}}", true},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":{\"effort\":\"minimal\"}}", false},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":{\"effort\":\"none\",\"effort\":\"high\"}}", true},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":{\"effort\":\"none\"}}", false},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning\":null}", false},
        {KL_EP_RESPONSES, "{\"model\":\"m\",\"reasoning_effort\":\"high\"}", false}, /* chat's name */
        {KL_EP_RESPONSES, "{\"model\":\"m\"}", false},
        {KL_EP_CHAT, "{\"model\":\"m\",\"reasoning_effort\":\"high\"}", true},
        {KL_EP_CHAT, "{\"model\":\"m\",\"reasoning_effort\":\"minimal\"}", false},
        {KL_EP_CHAT, "{\"model\":\"m\",\"reasoning\":{\"effort\":\"high\"}}", false}, /* Responses' name */
        {KL_EP_MESSAGES, "{\"model\":\"m\",\"reasoning_effort\":\"high\"}", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(facts(cases[i].ep, cases[i].body, &f, &why), 0);
        if (f.reasons != cases[i].reasons)
            fail_msg("%s: reasons %d", cases[i].body, f.reasons);
    }
}

static void refuses_bad_bodies(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":", &f, &why), -1);
    assert_non_null(strstr(why, "malformed JSON"));
    assert_int_equal(facts(KL_EP_CHAT, "{\"messages\":[]}", &f, &why), -1);
    assert_non_null(strstr(why, "missing required field \"model\""));
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":3}", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "[1,2]", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"a\"} x", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"a\",\"model\":\"b\"}", &f, &why), -1);
    assert_non_null(strstr(why, "duplicate"));
    /* an escaped key is the same key */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"a\",\"mod\\u0065l\":\"b\"}", &f, &why), -1);
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"a\\nb\"}", &f, &why), -1);
    /* every member keyless reads or rewrites is refused twice, or a second
     * max_tokens could slip past the quota's reservation */
    assert_int_equal(facts(KL_EP_MESSAGES, "{\"model\":\"c\",\"max_tokens\":1,\"max_tokens\":9000}", &f, &why), -1);
    assert_non_null(strstr(why, "duplicate \"max_tokens\""));
    assert_int_equal(facts(KL_EP_GEMINI_GENERATE,
                           "{\"generationConfig\":{\"maxOutputTokens\":1,\"maxOutputTokens\":9}}", &f, &why), -1);
    assert_non_null(strstr(why, "maxOutputTokens"));
    /* the error names the byte where the JSON goes wrong */
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"a\",\"messages\":[1,]}", &f, &why), -1);
    assert_string_equal(why, "malformed JSON in request body at byte 27");
    assert_int_equal(facts(KL_EP_CHAT, "{\"model\":\"a\",\"messages\":[", &f, &why), -1);
    assert_non_null(strstr(why, "ends early"));
}

/* Where the members are, for route's splice and the session fingerprint. */
static void maps_body_members(void **state)
{
    (void)state;
    struct kl_request_facts f;
    const char *why;
    const char *b = "{ \"messages\":[{\"role\":\"user\",\"content\":\"model\"}], \"model\" : \"gpt-4o\","
                    "\"stream_options\":{\"include_usage\":false},\"stream\":true}";
    assert_int_equal(facts(KL_EP_CHAT, b, &f, &why), 0);
    assert_string_equal(f.model, "gpt-4o");
    assert_true(f.stream);
    assert_false(f.has_include_usage);
    assert_memory_equal(b + f.map.model.start, "\"gpt-4o\"", f.map.model.end - f.map.model.start);
    assert_memory_equal(b + f.map.stream_options.start, "{\"include_usage\":false}",
                        f.map.stream_options.end - f.map.stream_options.start);
    assert_int_equal(b[f.map.messages.start], '[');
    assert_int_equal(f.map.input.end, 0);
    assert_int_equal(f.map.max_tokens.end, 0);
}

static void error_envelopes(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    char *o = kl_dialect_error_body(&a, KL_DIALECT_OPENAI, KL_ERR_QUOTA, "out of \"money\"");
    cJSON *j = cJSON_Parse(o);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring, "insufficient_quota");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message")->valuestring, "out of \"money\"");
    cJSON_Delete(j);
    char *an = kl_dialect_error_body(&a, KL_DIALECT_ANTHROPIC, KL_ERR_NOT_FOUND, "nope");
    j = cJSON_Parse(an);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "error");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "type")->valuestring, "not_found_error");
    cJSON_Delete(j);
    char *g = kl_dialect_error_body(&a, KL_DIALECT_GEMINI, KL_ERR_RATE_LIMIT, "slow down");
    j = cJSON_Parse(g);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_int_equal(cJSON_GetObjectItem(e, "code")->valueint, 429);
    assert_string_equal(cJSON_GetObjectItem(e, "status")->valuestring, "RESOURCE_EXHAUSTED");
    cJSON_Delete(j);
    /* a limit waiting will not lift: a 400 Google's clients do not retry */
    j = cJSON_Parse(kl_dialect_error_body(&a, KL_DIALECT_GEMINI, KL_ERR_LIMIT_FINAL, "never"));
    e = cJSON_GetObjectItem(j, "error");
    assert_int_equal(cJSON_GetObjectItem(e, "code")->valueint, 400);
    assert_string_equal(cJSON_GetObjectItem(e, "status")->valuestring, "FAILED_PRECONDITION");
    cJSON_Delete(j);
    assert_int_equal(kl_err_status(KL_ERR_LIMIT_FINAL), 400);
    assert_string_equal(kl_dialect_bedrock_error_type(KL_ERR_LIMIT_FINAL), "ServiceQuotaExceededException");
    /* a message quoting the caller's bytes (a path, a model) is made UTF-8:
     * JSON readers refuse anything else */
    char *u = kl_dialect_error_body(&a, KL_DIALECT_OPENAI, KL_ERR_NOT_FOUND, "no such endpoint: POST /v1/x\xff\xfe");
    assert_null(strchr(u, '\xff'));
    j = cJSON_Parse(u);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message")->valuestring,
                        "no such endpoint: POST /v1/x\xef\xbf\xbd\xef\xbf\xbd");
    cJSON_Delete(j);
    size_t evl;
    char *ev = kl_dialect_error_event(&a, KL_DIALECT_OPENAI, KL_EP_RESPONSES, KL_ERR_BAD_GATEWAY, "m\xc3", &evl);
    assert_null(strstr(ev, "m\xc3\""));
    assert_non_null(strstr(ev, "m\xef\xbf\xbd"));
    ev = kl_dialect_error_event(&a, KL_DIALECT_ANTHROPIC, KL_EP_MESSAGES, KL_ERR_BAD_GATEWAY, "reset", &evl);
    assert_true(strncmp(ev, "event: error\ndata: {", 20) == 0);
    assert_true(strstr(ev, "\n\n") == ev + strlen(ev) - 2);
    assert_int_equal(evl, strlen(ev));
    /* Bedrock: {"message"} (the type goes in x-amzn-ErrorType); in a stream,
     * an exception message of the event stream */
    char *bd = kl_dialect_error_body(&a, KL_DIALECT_BEDROCK, KL_ERR_QUOTA, "spent");
    j = cJSON_Parse(bd);
    assert_string_equal(cJSON_GetObjectItem(j, "message")->valuestring, "spent");
    assert_int_equal(cJSON_GetArraySize(j), 1);
    cJSON_Delete(j);
    assert_string_equal(kl_dialect_bedrock_error_type(KL_ERR_RATE_LIMIT), "ThrottlingException");
    ev = kl_dialect_error_event(&a, KL_DIALECT_BEDROCK, KL_EP_BEDROCK_INVOKE_STREAM, KL_ERR_QUOTA, "spent", &evl);
    struct kl_evs_msg msg;
    assert_int_equal(kl_evs_decode(ev, evl, &msg), 0);
    assert_memory_equal(msg.message_type, "exception", 9);
    assert_int_equal(msg.exception_type_len, strlen("throttlingException"));
    assert_memory_equal(msg.exception_type, "throttlingException", msg.exception_type_len);
    j = cJSON_ParseWithLength(msg.payload, msg.payload_len);
    assert_string_equal(cJSON_GetObjectItem(j, "message")->valuestring, "spent");
    cJSON_Delete(j);
    /* Responses: response.failed, its response carrying the error */
    ev = kl_dialect_error_event(&a, KL_DIALECT_OPENAI, KL_EP_RESPONSES, KL_ERR_QUOTA, "spent", &evl);
    assert_true(strncmp(ev, "event: response.failed\ndata: {", 30) == 0);
    j = cJSON_Parse(ev + 29);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "response.failed");
    cJSON *re = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "response"), "error");
    assert_string_equal(cJSON_GetObjectItem(re, "code")->valuestring, "insufficient_quota");
    assert_string_equal(cJSON_GetObjectItem(re, "message")->valuestring, "spent");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message")->valuestring, "spent");
    cJSON_Delete(j);
    /* a refusal is final to Codex ("invalid_prompt"); an overload it retries */
    ev = kl_dialect_error_event(&a, KL_DIALECT_OPENAI, KL_EP_RESPONSES, KL_ERR_FORBIDDEN, "no", &evl);
    j = cJSON_Parse(ev + 29);
    re = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "response"), "error");
    assert_string_equal(cJSON_GetObjectItem(re, "code")->valuestring, "invalid_prompt");
    cJSON_Delete(j);
    ev = kl_dialect_error_event(&a, KL_DIALECT_OPENAI, KL_EP_RESPONSES, KL_ERR_UNAVAILABLE, "busy", &evl);
    j = cJSON_Parse(ev + 29);
    re = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "response"), "error");
    assert_string_equal(cJSON_GetObjectItem(re, "code")->valuestring, "service_unavailable");
    cJSON_Delete(j);
    /* Gemini: a data: event, then (as a tail) Google's error object as bare
     * JSON over several lines, no SSE field (what the SDK Gemini CLI bundles
     * raises); other streams have no tail */
    ev = kl_dialect_error_event(&a, KL_DIALECT_GEMINI, KL_EP_GEMINI_STREAM, KL_ERR_FORBIDDEN, "no", &evl);
    assert_true(strncmp(ev, "data: {\"error\":{\"code\":403,", strlen("data: {\"error\":{\"code\":403,")) == 0);
    assert_null(kl_dialect_error_tail(&a, KL_DIALECT_ANTHROPIC, KL_EP_MESSAGES, KL_ERR_FORBIDDEN, "no", &evl));
    ev = kl_dialect_error_tail(&a, KL_DIALECT_GEMINI, KL_EP_GEMINI_STREAM, KL_ERR_FORBIDDEN, "no \"tool\"", &evl);
    assert_true(strncmp(ev, "{\n  \"error\": {\n", 15) == 0);
    assert_null(strstr(ev, "data:"));
    assert_null(strstr(ev, "\n\n"));
    assert_int_equal(evl, strlen(ev));
    j = cJSON_Parse(ev);
    cJSON *ge = cJSON_GetObjectItem(j, "error");
    assert_int_equal(cJSON_GetObjectItem(ge, "code")->valueint, 403);
    assert_string_equal(cJSON_GetObjectItem(ge, "message")->valuestring, "no \"tool\"");
    assert_string_equal(cJSON_GetObjectItem(ge, "status")->valuestring, "PERMISSION_DENIED");
    cJSON_Delete(j);
    assert_int_equal(kl_err_status(KL_ERR_TOO_LARGE), 413);
    assert_int_equal(kl_err_status(KL_ERR_TIMEOUT), 504);
    kl_arena_free(&a);
}

static int setup(void **state)
{
    (void)state;
    kl_arena_init(&facts_arena);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kl_arena_free(&facts_arena);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classifies_paths),
        cmocka_unit_test_setup_teardown(reads_request_facts, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_answers_asked_for, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_a_stream_that_is_no_boolean, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_gemini_proto_names, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_gemini_thinking_without_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_openai_reasoning, setup, teardown),
        cmocka_unit_test_setup_teardown(maps_body_members, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_bad_bodies, setup, teardown),
        cmocka_unit_test(error_envelopes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
