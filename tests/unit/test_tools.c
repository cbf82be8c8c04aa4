/* The tool policy: reading it, which names it permits, and what it takes
 * out of a request in each dialect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "account/usage.h"
#include "guard/tools.h"

static struct kl_tool_policy read_ok(kl_arena *a, const char *json)
{
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    struct kl_tool_policy p;
    const char *why = NULL;
    if (kl_tool_policy_read(j, a, &p, &why) < 0)
        fail_msg("%s: %s", json, why);
    cJSON_Delete(j);
    return p;
}

static void read_bad(const char *json, const char *want)
{
    kl_arena a;
    kl_arena_init(&a);
    cJSON *j = cJSON_Parse(json);
    struct kl_tool_policy p;
    const char *why = NULL;
    assert_int_equal(kl_tool_policy_read(j, &a, &p, &why), -1);
    if (!strstr(why, want))
        fail_msg("%s: said \"%s\", wanted \"%s\"", json, why, want);
    cJSON_Delete(j);
    kl_arena_free(&a);
}

static void reading(void **state)
{
    (void)state;
    read_bad("[]", "must be an object");
    read_bad("{\"deny\": 3}", "a tool name glob or an array");
    read_bad("{\"allow\": [\"a\", 1]}", "must contain strings");
    read_bad("{\"max_calls\": -1}", "whole number");
    read_bad("{\"max_calls\": 1.5}", "whole number");
    read_bad("{\"denny\": []}", "unknown key \"denny\"");
    kl_arena a;
    kl_arena_init(&a);
    struct kl_tool_policy p = read_ok(&a, "{\"deny\": \"Bash\", \"allow\": [\"*\"], \"max_calls\": 0}");
    assert_int_equal(p.ndeny, 1);
    assert_int_equal(p.nallow, 1);
    assert_int_equal(p.max_calls, 0);
    p = read_ok(&a, "{}");
    assert_null(p.allow);
    assert_int_equal(p.max_calls, -1);
    kl_arena_free(&a);
}

static void permitting(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_tool_policy deny = read_ok(&a, "{\"deny\": [\"Bash\", \"mcp__prod__*\"]}");
    struct kl_tool_policy allow = read_ok(&a, "{\"allow\": [\"Read\", \"mcp__*\", \"Bash\"]}");
    const struct kl_tool_policy *both[] = {&deny, &allow};
    struct kl_tool_rules one = {both, 1, -1}, two = {both, 2, -1};
    assert_true(kl_tools_permitted(&one, "Write"));
    assert_false(kl_tools_permitted(&one, "Bash"));
    assert_false(kl_tools_permitted(&one, "mcp__prod__drop"));
    assert_true(kl_tools_permitted(&one, "mcp__dev__drop"));
    assert_true(kl_tools_permitted(&one, NULL));
    /* every policy that applies: allowed by each, denied by none */
    assert_false(kl_tools_permitted(&two, "Write"));
    assert_false(kl_tools_permitted(&two, "Bash"));
    assert_true(kl_tools_permitted(&two, "Read"));
    assert_true(kl_tools_permitted(&two, "mcp__dev__x"));
    assert_false(kl_tools_permitted(&two, NULL));
    /* a function in a namespace: allowed by either name, refused by either */
    assert_true(kl_tools_permitted_in(&two, "Read", "anything"));
    assert_false(kl_tools_permitted_in(&two, "Bash", "Read"));
    assert_false(kl_tools_permitted_in(&two, "other", "Write"));
    kl_arena_free(&a);
}

/* Edit body under a policy; compare with want (NULL: refused, and why
 * contains refusal). */
static void expect_edit(const char *policy, int kind, const char *body, int want_rc, const char *want,
                        const char *want_removed)
{
    kl_arena a;
    kl_arena_init(&a);
    struct kl_tool_policy p = read_ok(&a, policy);
    const struct kl_tool_policy *v[] = {&p};
    struct kl_tool_rules r = {v, 1, p.max_calls};
    cJSON *b = cJSON_Parse(body);
    assert_non_null(b);
    const char *removed = NULL, *why = NULL;
    int rc = kl_tools_edit(&r, kind, b, &a, &removed, &why);
    if (rc != want_rc)
        fail_msg("%s: rc %d, wanted %d (%s)", body, rc, want_rc, why ? why : "");
    if (rc < 0) {
        if (!strstr(why, want))
            fail_msg("%s: said \"%s\", wanted \"%s\"", body, why, want);
    } else {
        cJSON *w = cJSON_Parse(want);
        char *got = cJSON_PrintUnformatted(b);
        if (!cJSON_Compare(b, w, 1))
            fail_msg("edited %s\nwanted %s", got, want);
        cJSON_free(got);
        cJSON_Delete(w);
        if (want_removed)
            assert_string_equal(removed, want_removed);
    }
    cJSON_Delete(b);
    kl_arena_free(&a);
}

#define DENY_BASH "{\"deny\": \"Bash\"}"

static void openai_chat(void **state)
{
    (void)state;
    const int k = KL_USAGE_OPENAI_CHAT;
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Bash\"}},"
                "{\"type\":\"function\",\"function\":{\"name\":\"Read\"}},{\"type\":\"custom\",\"custom\":{\"name\":\"Bash\"}}],"
                "\"tool_choice\":\"auto\"}",
                1, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Read\"}}],\"tool_choice\":\"auto\"}",
                "Bash,Bash");
    /* nothing to take out: unchanged */
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Read\"}}]}", 0,
                "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Read\"}}]}", NULL);
    /* emptied: tools, tool_choice and parallel_tool_calls go */
    expect_edit(DENY_BASH, k, "{\"m\":1,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Bash\"}}],"
                "\"tool_choice\":\"auto\",\"parallel_tool_calls\":true}", 1, "{\"m\":1}", "Bash");
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Bash\"}}],"
                "\"tool_choice\":\"required\"}", -1, "requires a tool call", NULL);
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"function\":{\"name\":\"Read\"}}],"
                "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"Bash\"}}}", -1,
                "tool_choice forces the tool 'Bash'", NULL);
    /* allowed_tools keeps what is permitted; none left refuses */
    expect_edit(DENY_BASH, k, "{\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"auto\","
                "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Bash\"}},"
                "{\"type\":\"function\",\"function\":{\"name\":\"Read\"}}]}}}", 1,
                "{\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":\"auto\","
                "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Read\"}}]}}}", "Bash");
    expect_edit(DENY_BASH, k, "{\"tool_choice\":{\"type\":\"allowed_tools\",\"allowed_tools\":{"
                "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Bash\"}}]}}}", -1,
                "allows only tools the policy refuses", NULL);
    /* the deprecated functions / function_call */
    expect_edit(DENY_BASH, k, "{\"functions\":[{\"name\":\"Bash\"}],\"function_call\":\"auto\"}", 1, "{}", "Bash");
    expect_edit(DENY_BASH, k, "{\"functions\":[{\"name\":\"Bash\"},{\"name\":\"x\"}],\"function_call\":{\"name\":\"Bash\"}}",
                -1, "function_call forces the function 'Bash'", NULL);
    /* max_calls 0: no tool at all */
    expect_edit("{\"max_calls\":0}", k, "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"Read\"}}]}", 1,
                "{}", "Read");
}

static void openai_responses(void **state)
{
    (void)state;
    const int k = KL_USAGE_OPENAI_RESPONSES;
    expect_edit("{\"deny\": [\"Bash\", \"web_search\"]}", k,
                "{\"tools\":[{\"type\":\"function\",\"name\":\"Bash\"},{\"type\":\"web_search\"},"
                "{\"type\":\"custom\",\"name\":\"apply_patch\"}],\"parallel_tool_calls\":false}",
                1, "{\"tools\":[{\"type\":\"custom\",\"name\":\"apply_patch\"}],\"parallel_tool_calls\":false}",
                "Bash,web_search");
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"type\":\"function\",\"name\":\"Read\"}],"
                "\"tool_choice\":{\"type\":\"function\",\"name\":\"Bash\"}}", -1, "forces the tool 'Bash'", NULL);
    expect_edit("{\"deny\": \"file_search\"}", k, "{\"tool_choice\":{\"type\":\"file_search\"}}", -1,
                "forces the tool 'file_search'", NULL);
    expect_edit("{\"deny\": \"mcp\"}", k, "{\"tools\":[{\"type\":\"mcp\",\"server_label\":\"gh\"},{\"type\":\"function\","
                "\"name\":\"f\"}],\"tool_choice\":{\"type\":\"mcp\",\"server_label\":\"gh\",\"name\":\"issue\"}}", -1,
                "forces the tool 'mcp'", NULL);
    /* a namespace by its name, or by the functions in it */
    expect_edit("{\"deny\": [\"close_agent\", \"spawn_*\"]}", k,
                "{\"tools\":[{\"type\":\"namespace\",\"name\":\"agents\",\"tools\":[{\"type\":\"function\",\"name\":\"close_agent\"},"
                "{\"type\":\"function\",\"name\":\"send_input\"}]},{\"type\":\"namespace\",\"name\":\"more\",\"tools\":["
                "{\"type\":\"function\",\"name\":\"spawn_agent\"}]}]}",
                1, "{\"tools\":[{\"type\":\"namespace\",\"name\":\"agents\",\"tools\":[{\"type\":\"function\",\"name\":\"send_input\"}]}]}",
                "close_agent,spawn_agent,more");
    expect_edit("{\"deny\": \"agents\"}", k, "{\"tools\":[{\"type\":\"namespace\",\"name\":\"agents\",\"tools\":[{\"type\":"
                "\"function\",\"name\":\"x\"}]},{\"type\":\"function\",\"name\":\"y\"}]}", 1,
                "{\"tools\":[{\"type\":\"function\",\"name\":\"y\"}]}", "x,agents");
    /* allowed by its name, a namespace keeps its functions */
    expect_edit("{\"allow\": [\"agents\", \"y\"]}", k, "{\"tools\":[{\"type\":\"namespace\",\"name\":\"agents\",\"tools\":["
                "{\"type\":\"function\",\"name\":\"x\"}]},{\"type\":\"function\",\"name\":\"y\"},{\"type\":\"function\",\"name\":\"z\"}]}",
                1, "{\"tools\":[{\"type\":\"namespace\",\"name\":\"agents\",\"tools\":[{\"type\":\"function\",\"name\":\"x\"}]},"
                "{\"type\":\"function\",\"name\":\"y\"}]}", "z");
    /* the computer tool goes by one name, preview or not */
    expect_edit("{\"deny\": \"computer\"}", k, "{\"tools\":[{\"type\":\"computer_use_preview\"},{\"type\":\"computer\"}]}", 1, "{}",
                "computer,computer");
    /* web search goes by one name, preview or dated */
    expect_edit("{\"deny\": \"web_search\"}", k, "{\"tools\":[{\"type\":\"web_search_preview\"},{\"type\":"
                "\"web_search_2025_08_26\"},{\"type\":\"web_search\"},{\"type\":\"function\",\"name\":\"y\"}]}", 1,
                "{\"tools\":[{\"type\":\"function\",\"name\":\"y\"}]}", "web_search,web_search,web_search");
    /* Responses' allowed_tools is not nested */
    expect_edit(DENY_BASH, k, "{\"tool_choice\":{\"type\":\"allowed_tools\",\"mode\":\"auto\","
                "\"tools\":[{\"type\":\"function\",\"name\":\"Bash\"},{\"type\":\"function\",\"name\":\"R\"}]}}", 1,
                "{\"tool_choice\":{\"type\":\"allowed_tools\",\"mode\":\"auto\","
                "\"tools\":[{\"type\":\"function\",\"name\":\"R\"}]}}", "Bash");
}

static void anthropic(void **state)
{
    (void)state;
    const int k = KL_USAGE_ANTHROPIC;
    expect_edit("{\"allow\": [\"Read\", \"mcp__*\"]}", k,
                "{\"tools\":[{\"name\":\"Bash\"},{\"name\":\"Read\"},{\"name\":\"mcp__gh__issue\"},"
                "{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],\"tool_choice\":{\"type\":\"auto\"}}",
                1, "{\"tools\":[{\"name\":\"Read\"},{\"name\":\"mcp__gh__issue\"}],\"tool_choice\":{\"type\":\"auto\"}}",
                "Bash,web_search");
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"name\":\"Bash\"}],\"tool_choice\":{\"type\":\"auto\"}}", 1, "{}", "Bash");
    /* remote MCP servers go by "mcp" */
    expect_edit("{\"deny\": \"mcp\"}", k, "{\"mcp_servers\":[{\"type\":\"url\",\"name\":\"gh\"}],\"tools\":[{\"name\":\"R\"}]}",
                1, "{\"tools\":[{\"name\":\"R\"}]}", "mcp");
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"name\":\"Bash\"}],\"tool_choice\":{\"type\":\"any\"}}", -1,
                "requires a tool call", NULL);
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"name\":\"Bash\"},{\"name\":\"R\"}],\"tool_choice\":{\"type\":\"tool\","
                "\"name\":\"Bash\"}}", -1, "forces the tool 'Bash'", NULL);
}

static void gemini(void **state)
{
    (void)state;
    const int k = KL_USAGE_GEMINI;
    expect_edit("{\"deny\": [\"Bash\", \"codeExecution\"]}", k,
                "{\"tools\":[{\"functionDeclarations\":[{\"name\":\"Bash\"},{\"name\":\"grep\"}]},"
                "{\"function_declarations\":[{\"name\":\"Bash\"}]},{\"codeExecution\":{}},{\"googleSearch\":{}}],"
                "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\",\"allowedFunctionNames\":[\"Bash\",\"grep\"]}}}",
                1, "{\"tools\":[{\"functionDeclarations\":[{\"name\":\"grep\"}]},{\"googleSearch\":{}}],"
                "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\",\"allowedFunctionNames\":[\"grep\"]}}}",
                "Bash,Bash,codeExecution");
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"functionDeclarations\":[{\"name\":\"Bash\"}]}],"
                "\"tool_config\":{\"function_calling_config\":{\"mode\":\"AUTO\"}}}", 1, "{}", "Bash");
    expect_edit(DENY_BASH, k, "{\"tools\":[{\"functionDeclarations\":[{\"name\":\"Bash\"}]}],"
                "\"toolConfig\":{\"functionCallingConfig\":{\"mode\":\"ANY\"}}}", -1, "requires a function call", NULL);
    expect_edit(DENY_BASH, k, "{\"toolConfig\":{\"functionCallingConfig\":{\"allowedFunctionNames\":[\"Bash\"]}}}", -1,
                "allows only functions the policy refuses, such as 'Bash'", NULL);
    /* built-in tools by their camelCase key, however the body spells it */
    expect_edit("{\"deny\": \"codeExecution\"}", k, "{\"tools\":[{\"code_execution\":{}},{\"googleSearch\":{}}]}", 1,
                "{\"tools\":[{\"googleSearch\":{}}]}", "codeExecution");
    /* endpoints without tools are left alone */
    expect_edit(DENY_BASH, KL_USAGE_OPENAI_EMBEDDINGS, "{\"tools\":[{\"name\":\"Bash\"}]}", 0,
                "{\"tools\":[{\"name\":\"Bash\"}]}", NULL);
}

/* Many refused names: the list said in the log is cut short, not overrun. */
static void many_removed(void **state)
{
    (void)state;
    char body[40000] = "{\"tools\":[";
    for (int i = 0; i < 600; i++)
        snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s{\"name\":\"Bash\"}", i ? "," : "");
    strcat(body, "]}");
    kl_arena a;
    kl_arena_init(&a);
    struct kl_tool_policy p = read_ok(&a, DENY_BASH);
    const struct kl_tool_policy *v[] = {&p};
    struct kl_tool_rules r = {v, 1, -1};
    cJSON *b = cJSON_Parse(body);
    const char *removed = NULL, *why = NULL;
    assert_int_equal(kl_tools_edit(&r, KL_USAGE_ANTHROPIC, b, &a, &removed, &why), 1);
    assert_true(strlen(removed) < 512);
    assert_non_null(strstr(removed, "..."));
    assert_null(cJSON_GetObjectItem(b, "tools"));
    cJSON_Delete(b);
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reading),
        cmocka_unit_test(permitting),
        cmocka_unit_test(openai_chat),
        cmocka_unit_test(openai_responses),
        cmocka_unit_test(anthropic),
        cmocka_unit_test(gemini),
        cmocka_unit_test(many_removed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
