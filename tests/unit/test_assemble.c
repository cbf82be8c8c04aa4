/* Streams put back together into one answer, and tool calls read from it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "account/assemble.h"

/* Assemble a JSON array of events and compare with the expected JSON. */
static void expect(enum kl_usage_kind kind, const char *events, const char *want)
{
    cJSON *ev = cJSON_Parse(events);
    assert_non_null(ev);
    cJSON *got = kl_assemble_stream(kind, ev);
    cJSON *w = want ? cJSON_Parse(want) : NULL;
    if (!want) {
        assert_null(got);
    } else {
        char *g = cJSON_PrintUnformatted(got);
        if (!cJSON_Compare(got, w, 1))
            fail_msg("assembled %s\nwanted    %s", g, want);
        cJSON_free(g);
    }
    cJSON_Delete(ev);
    cJSON_Delete(got);
    cJSON_Delete(w);
}

static void expect_tools(enum kl_usage_kind kind, const char *answer, const char *want)
{
    cJSON *a = cJSON_Parse(answer), *w = cJSON_Parse(want);
    assert_non_null(a);
    cJSON *got = kl_answer_tool_calls(kind, a);
    char *g = cJSON_PrintUnformatted(got);
    if (!cJSON_Compare(got, w, 1))
        fail_msg("tool calls %s\nwanted     %s", g, want);
    cJSON_free(g);
    cJSON_Delete(a);
    cJSON_Delete(w);
    cJSON_Delete(got);
}

/* Two tool calls whose argument deltas interleave, text in pieces, and the
 * usage chunk with no choices. */
static void openai_chat(void **state)
{
    (void)state;
    expect(KL_USAGE_OPENAI_CHAT,
           "[{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt-4o\","
           "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]},"
           "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let \"}}]},"
           "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"me.\",\"tool_calls\":["
           "{\"index\":0,\"id\":\"t0\",\"type\":\"function\",\"function\":{\"name\":\"read\",\"arguments\":\"{\\\"pa\"}},"
           "{\"index\":1,\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"grep\",\"arguments\":\"\"}}]}}]},"
           "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
           "{\"index\":1,\"function\":{\"arguments\":\"{}\"}},{\"index\":0,\"function\":{\"arguments\":\"th\\\":1}\"}}]}}]},"
           "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]},"
           "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}]",
           "{\"id\":\"c1\",\"object\":\"chat.completion\",\"created\":5,\"model\":\"gpt-4o\","
           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Let me.\",\"tool_calls\":["
           "{\"id\":\"t0\",\"type\":\"function\",\"function\":{\"name\":\"read\",\"arguments\":\"{\\\"path\\\":1}\"}},"
           "{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"grep\",\"arguments\":\"{}\"}}]},"
           "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}");
    /* nothing but [DONE] (skipped before it gets here): no answer */
    expect(KL_USAGE_OPENAI_CHAT, "[]", NULL);
}

/* Text, thinking with its signature, and a tool_use whose input JSON is cut
 * mid-token across deltas; message_delta's stop reason and usage. */
static void anthropic(void **state)
{
    (void)state;
    expect(KL_USAGE_ANTHROPIC,
           "[{\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\","
           "\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}},"
           "{\"type\":\"ping\"},"
           "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}},"
           "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}},"
           "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}},"
           "{\"type\":\"content_block_stop\",\"index\":0},"
           "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}},"
           "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Look\"}},"
           "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"ing.\"}},"
           "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu\","
           "\"name\":\"read\",\"input\":{}}},"
           "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}},"
           "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pa\"}},"
           "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"th\\\":\\\"a\\\"}\"}},"
           "{\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tv\","
           "\"name\":\"ls\",\"input\":{}}},"
           "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},"
           "\"usage\":{\"output_tokens\":12}},"
           "{\"type\":\"message_stop\"}]",
           "{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":["
           "{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"sig\"},"
           "{\"type\":\"text\",\"text\":\"Looking.\"},"
           "{\"type\":\"tool_use\",\"id\":\"tu\",\"name\":\"read\",\"input\":{\"path\":\"a\"}},"
           "{\"type\":\"tool_use\",\"id\":\"tv\",\"name\":\"ls\",\"input\":{}}],"
           "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":12}}");
    /* no message_start: nothing to build on */
    expect(KL_USAGE_ANTHROPIC, "[{\"type\":\"message_stop\"}]", NULL);
}

/* Adjacent text parts merge (a thought does not merge with an answer), a
 * function call stays a part of its own, the last chunk's usage wins. */
static void gemini(void **state)
{
    (void)state;
    expect(KL_USAGE_GEMINI,
           "[{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"pon\",\"thought\":true}]},"
           "\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3},\"modelVersion\":\"g\"},"
           "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"der\",\"thought\":true},"
           "{\"text\":\"Sear\"}]},\"index\":0}]},"
           "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"ching.\"}]},\"index\":0}]},"
           "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"grep\","
           "\"args\":{\"q\":\"x\"}}}]},\"finishReason\":\"STOP\",\"index\":0}],"
           "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":9},\"modelVersion\":\"g\"}]",
           "{\"candidates\":[{\"index\":0,\"content\":{\"parts\":[{\"text\":\"ponder\",\"thought\":true},"
           "{\"text\":\"Searching.\"},{\"functionCall\":{\"name\":\"grep\",\"args\":{\"q\":\"x\"}}}],\"role\":\"model\"},"
           "\"finishReason\":\"STOP\"}],"
           "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":9},\"modelVersion\":\"g\"}");
}

/* The final event's response; a stream cut before it: the last response
 * seen with the items finished so far. */
static void responses(void **state)
{
    (void)state;
    expect(KL_USAGE_OPENAI_RESPONSES,
           "[{\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"output\":[]}},"
           "{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"message\",\"id\":\"i\"}},"
           "{\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\","
           "\"output\":[{\"type\":\"message\",\"id\":\"i\"}]}}]",
           "{\"id\":\"r\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"id\":\"i\"}]}");
    expect(KL_USAGE_OPENAI_RESPONSES,
           "[{\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"output\":[]}},"
           "{\"type\":\"response.output_item.done\",\"item\":{\"type\":\"function_call\",\"name\":\"f\"}}]",
           "{\"id\":\"r\",\"status\":\"in_progress\",\"output\":[{\"type\":\"function_call\",\"name\":\"f\"}]}");
}

/* A chunk of the service's own first (Azure's prompt filter results, with
 * an empty id), and the deprecated single function_call. */
static void openai_chat_leading_chunk_and_function_call(void **state)
{
    (void)state;
    expect(KL_USAGE_OPENAI_CHAT,
           "[{\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[],"
           "\"prompt_filter_results\":[]},"
           "{\"id\":\"c2\",\"created\":7,\"model\":\"gpt-4\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
           "\"function_call\":{\"name\":\"f\",\"arguments\":\"{\\\"a\"}}}]},"
           "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"arguments\":\"\\\":2}\"}},"
           "\"finish_reason\":\"function_call\"}]}]",
           "{\"object\":\"chat.completion\",\"id\":\"c2\",\"created\":0,\"model\":\"gpt-4\",\"choices\":[{\"index\":0,"
           "\"message\":{\"role\":\"assistant\",\"content\":null,\"function_call\":{\"name\":\"f\","
           "\"arguments\":\"{\\\"a\\\":2}\"}},\"finish_reason\":\"function_call\"}]}");
    expect_tools(KL_USAGE_OPENAI_CHAT,
                 "{\"choices\":[{\"message\":{\"function_call\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":2}\"}}}]}",
                 "[{\"name\":\"f\",\"params\":{\"a\":2}}]");
}

/* Thousands of tool calls whose argument deltas take turns, and thousands
 * of content blocks: every piece lands on its own item. */
static void many_items(void **state)
{
    (void)state;
    enum { N = 3000 };
    cJSON *ev = cJSON_CreateArray();
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            char buf[200];
            if (round == 0)
                snprintf(buf, sizeof(buf), "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,"
                         "\"id\":\"t%d\",\"function\":{\"name\":\"n%d\",\"arguments\":\"{\\\"i\\\":\"}}]}}]}", i, i, i);
            else
                snprintf(buf, sizeof(buf), "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,"
                         "\"function\":{\"arguments\":\"%d}\"}}]}}]}", i, i);
            cJSON_AddItemToArray(ev, cJSON_Parse(buf));
        }
    cJSON *got = kl_assemble_stream(KL_USAGE_OPENAI_CHAT, ev);
    cJSON *calls = kl_answer_tool_calls(KL_USAGE_OPENAI_CHAT, got);
    assert_int_equal(cJSON_GetArraySize(calls), N);
    int i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i);
        assert_string_equal(cJSON_GetObjectItem(c, "name")->valuestring, name);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "params"), "i")->valueint, i);
        i++;
    }
    cJSON_Delete(calls);
    cJSON_Delete(got);
    cJSON_Delete(ev);
}

static void tool_calls(void **state)
{
    (void)state;
    /* arguments that are not a JSON object stay text; a custom tool's text is its input */
    expect_tools(KL_USAGE_OPENAI_CHAT,
                 "{\"choices\":[{\"message\":{\"tool_calls\":["
                 "{\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"{\\\"x\\\":1}\"}},"
                 "{\"type\":\"function\",\"function\":{\"name\":\"b\",\"arguments\":\"{\\\"x\\\":\"}},"
                 "{\"type\":\"custom\",\"custom\":{\"name\":\"c\",\"input\":\"{}\"}}]}}]}",
                 "[{\"name\":\"a\",\"params\":{\"x\":1}},{\"name\":\"b\",\"params\":{\"arguments\":\"{\\\"x\\\":\"}},"
                 "{\"name\":\"c\",\"params\":{\"input\":\"{}\"}}]");
    expect_tools(KL_USAGE_OPENAI_RESPONSES,
                 "{\"output\":[{\"type\":\"message\"},{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"},"
                 "{\"type\":\"custom_tool_call\",\"name\":\"g\",\"input\":\"patch\"}]}",
                 "[{\"name\":\"f\",\"params\":{}},{\"name\":\"g\",\"params\":{\"input\":\"patch\"}}]");
    expect_tools(KL_USAGE_ANTHROPIC,
                 "{\"content\":[{\"type\":\"text\",\"text\":\"x\"},{\"type\":\"tool_use\",\"name\":\"r\",\"input\":{\"p\":2}}]}",
                 "[{\"name\":\"r\",\"params\":{\"p\":2}}]");
    expect_tools(KL_USAGE_GEMINI,
                 "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"},{\"functionCall\":{\"name\":\"g\"}}]}}]}",
                 "[{\"name\":\"g\",\"params\":{}}]");
    expect_tools(KL_USAGE_OPENAI_EMBEDDINGS, "{\"data\":[]}", "[]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_chat),
        cmocka_unit_test(anthropic),
        cmocka_unit_test(gemini),
        cmocka_unit_test(responses),
        cmocka_unit_test(openai_chat_leading_chunk_and_function_call),
        cmocka_unit_test(many_items),
        cmocka_unit_test(tool_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
