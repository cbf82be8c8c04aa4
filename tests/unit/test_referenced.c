/* The inputs a request points its provider at (admit/referenced.h): each
 * dialect's stored state, files and URLs, and tools the provider runs, found
 * however the body is written, and not where they are only text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "admit/referenced.h"
#include "core/arena.h"
#include "dialect/dialect.h"

static int64_t refs(const char *method_path, const char *body)
{
    kl_arena a;
    kl_arena_init(&a);
    struct kl_route_match m;
    kl_dialect_classify(&a, "POST", method_path, KL_CLIENT_ANY, &m);
    struct kl_request_facts f;
    const char *why = NULL;
    if (kl_dialect_request_facts(m.ep, body, strlen(body), &a, &f, &why) < 0)
        fail_msg("%s: %s", body, why);
    int64_t n = kl_referenced_inputs(m.ep, body, strlen(body), &f.map);
    kl_arena_free(&a);
    return n;
}

static void openai(void **state)
{
    (void)state;
    const char *chat = "/v1/chat/completions", *resp = "/v1/responses";
    assert_int_equal(refs(chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"see https://x.org\"}]}"), 0);
    assert_int_equal(refs(chat, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                                "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.org/a.png\"}},"
                                "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}},"
                                "{\"type\":\"file\",\"file\":{\"file_id\":\"f1\"}}]}]}"),
                     2);
    /* a tool schema's "url" property is no URL */
    assert_int_equal(refs(chat, "{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\","
                                "\"function\":{\"name\":\"get\",\"parameters\":{\"properties\":"
                                "{\"url\":{\"type\":\"string\"}}}}}]}"), 0);
    assert_int_equal(refs(chat, "{\"model\":\"m\",\"messages\":[],\"web_search_options\":{}}"), 1);
    /* "messag\\u0065s" is a member no provider reads as "messages": it does
     * not stand in for the real one */
    assert_int_equal(refs(chat, "{\"messag\\\\u0065s\":[],\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                                "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.org/a.png\"}}]}]}"), 1);
    assert_int_equal(refs(resp, "{\"model\":\"m\",\"input\":\"hi\",\"previous_response_id\":\"resp_1\"}"), 1);
    assert_int_equal(refs(resp, "{\"model\":\"m\",\"input\":\"hi\",\"previous_response_id\":null,\"conversation\":null}"), 0);
    assert_int_equal(refs(resp, "{\"model\":\"m\",\"conversation\":{\"id\":\"conv_1\"},\"prompt\":{\"id\":\"pmpt_1\"},"
                                "\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"},{\"role\":\"user\",\"content\":["
                                "{\"type\":\"input_image\",\"image_url\":\"https://x.org/a.png\"},{\"type\":\"input_file\","
                                "\"file_id\":\"file_1\"},{\"type\":\"input_file\",\"file_url\":\"https://x.org/a.pdf\"}]}]}"),
                     6);
    /* the provider's tools count where they are offered; a past search in
     * the input is only its record */
    assert_int_equal(refs(resp, "{\"model\":\"m\",\"input\":[{\"type\":\"web_search_call\",\"id\":\"ws_1\"}],\"tools\":["
                                "{\"type\":\"web_search\"},{\"type\":\"function\",\"name\":\"f\"},{\"type\":\"mcp\","
                                "\"server_url\":\"https://mcp\"},{\"type\":\"file_search\"}]}"), 3);
}

static void anthropic_gemini_bedrock(void **state)
{
    (void)state;
    assert_int_equal(refs("/v1/messages", "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":["
                                          "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x/a.png\"}},"
                                          "{\"type\":\"document\",\"source\":{\"type\":\"file\",\"file_id\":\"f\"}},"
                                          "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"data\":\"AA\"}}]}],"
                                          "\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"},"
                                          "{\"name\":\"Bash\",\"input_schema\":{}},{\"type\":\"bash_20250124\",\"name\":\"bash\"}],"
                                          "\"mcp_servers\":[{\"type\":\"url\",\"url\":\"https://mcp.example\",\"name\":\"m\"}]}"),
                     4);
    const char *gem = "/v1beta/models/gemini-2.5-pro:generateContent";
    assert_int_equal(refs(gem, "{\"contents\":[{\"parts\":[{\"text\":\"fileData\"},{\"fileData\":{\"fileUri\":\"gs://b/v.mp4\"}},"
                               "{\"file_data\":{\"file_uri\":\"https://x\"}}]}],\"cachedContent\":\"cachedContents/1\","
                               "\"tools\":[{\"googleSearch\":{}},{\"functionDeclarations\":[]},{\"url_context\":{}}]}"),
                     5);
    assert_int_equal(refs("/model/m/converse", "{\"messages\":[{\"role\":\"user\",\"content\":[{\"document\":{\"format\":"
                                               "\"pdf\",\"name\":\"d\",\"source\":{\"s3Location\":{\"uri\":\"s3://b/d.pdf\"}}}}]}]}"),
                     1);
}

/* A name or a value spelt with escapes is read as the provider reads it. */
static void escaped(void **state)
{
    (void)state;
    assert_int_equal(refs("/v1/responses", "{\"model\":\"m\",\"input\":\"hi\",\"previous_respons\\u0065_id\":\"r\"}"), 1);
    assert_int_equal(refs("/v1/messages", "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":["
                                          "{\"type\":\"image\",\"source\":{\"type\":\"\\u0075rl\",\"url\":\"https:\\/\\/x\"}}]}]}"),
                     1);
}

/* The id of a stored response or conversation, as the provider reads it. */
static const char *id_of(kl_arena *a, const char *body, bool conversation)
{
    struct kl_route_match m;
    kl_dialect_classify(a, "POST", "/v1/responses", KL_CLIENT_ANY, &m);
    struct kl_request_facts f;
    const char *why = NULL;
    if (kl_dialect_request_facts(m.ep, body, strlen(body), a, &f, &why) < 0)
        fail_msg("%s: %s", body, why);
    size_t len = 0;
    const char *id = kl_referenced_id(a, body, conversation ? f.map.conversation : f.map.previous_response_id, &len);
    return id ? kl_arena_strndup(a, id, len) : NULL;
}

static void ids(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    assert_string_equal(id_of(&a, "{\"model\":\"m\",\"previous_response_id\" : \"resp_1\"}", false), "resp_1");
    assert_string_equal(id_of(&a, "{\"model\":\"m\",\"conversation\":\"conv_1\"}", true), "conv_1");
    assert_string_equal(id_of(&a, "{\"model\":\"m\",\"conversation\":{ \"id\" :\"conv_2\"}}", true), "conv_2");
    /* escapes decoded, as the provider reads them */
    assert_string_equal(id_of(&a, "{\"model\":\"m\",\"previous_response_id\":\"resp\\u005f1\"}", false), "resp_1");
    assert_string_equal(id_of(&a, "{\"model\":\"m\",\"conversation\":{\"id\":\"c\\\"2\"}}", true), "c\"2");
    /* none, null, not a string: no id (the knob's share applies) */
    assert_null(id_of(&a, "{\"model\":\"m\"}", false));
    assert_null(id_of(&a, "{\"model\":\"m\",\"previous_response_id\":null}", false));
    assert_null(id_of(&a, "{\"model\":\"m\",\"previous_response_id\":7}", false));
    assert_null(id_of(&a, "{\"model\":\"m\",\"conversation\":{\"idx\":\"conv_3\"}}", true));
    assert_null(id_of(&a, "{\"model\":\"m\",\"conversation\":{}}", true));
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai),
        cmocka_unit_test(anthropic_gemini_bedrock),
        cmocka_unit_test(escaped),
        cmocka_unit_test(ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
