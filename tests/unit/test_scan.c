/* Built-in guardrails: each kind found in a real request body, numbers
 * only when their checksum holds, redaction that leaves valid JSON, the
 * strongest action winning, and configuration mistakes reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "core/config.h"
#include "guard/scan.h"

static kl_config *load(const char *text)
{
    kl_diags d = {0};
    kl_config *c = kl_config_parse(text, strlen(text), "t.hujson", &d);
    if (!c)
        fail_msg("config refused: %s", d.n ? d.v[0].msg : "?");
    kl_diags_free(&d);
    return c;
}

static bool diag(const char *text, const char *needle)
{
    kl_diags d = {0};
    kl_config *c = kl_config_parse(text, strlen(text), "t.hujson", &d);
    bool found = false;
    for (size_t i = 0; i < d.n; i++)
        found |= strstr(d.v[i].msg, needle) != NULL;
    kl_diags_free(&d);
    kl_config_unref(c);
    return found;
}

/* body: a chat request whose one user message is text (JSON-escaped by cJSON). */
static char *chat(const char *text)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", "gpt-4o");
    cJSON *msgs = cJSON_AddArrayToObject(root, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", text);
    cJSON_AddItemToArray(msgs, m);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

struct fx {
    kl_config *cfg;
    struct kl_scan_scratch *scratch;
    kl_arena arena;
};

static struct kl_scan_result scan(struct fx *f, const char *text)
{
    char *body = chat(text);
    struct kl_scan_result r;
    const char *why = NULL;
    assert_int_equal(kl_scan(f->cfg->guardrails, &f->scratch, body, strlen(body), &f->arena, &r, &why), 0);
    if (r.body) {
        cJSON *j = cJSON_ParseWithLength(r.body, r.body_len);
        assert_non_null(j); /* a redacted JSON body is still JSON */
        cJSON_Delete(j);
    }
    cJSON_free(body);
    return r;
}

/* The content of the redacted body's message. */
static char *content(const struct kl_scan_result *r, char *buf, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0), "content");
    snprintf(buf, n, "%s", c->valuestring);
    cJSON_Delete(j);
    return buf;
}

static int setup(void **state)
{
    static struct fx f;
    f.cfg = load("{\"guardrails\": {\"secrets\": \"block\", \"pii\": \"redact\","
                 " \"patterns\": [{\"name\": \"ticket\", \"regex\": \"TICKET-[0-9]{6}\", \"action\": \"log\"}]}}");
    f.scratch = NULL;
    kl_arena_init(&f.arena);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    kl_scan_scratch_free(f->scratch);
    kl_arena_free(&f->arena);
    kl_config_unref(f->cfg);
    return 0;
}

static void secrets_block(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *text, *kind;
    } cases[] = {
        {"my key is AKIAIOSFODNN7EXAMPLE ok", "aws_access_key"},
        {"token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here", "github_token"},
        {"sk-ant-api03-abcdefghijklmnopqrstuvwxyzABCDEFGH_0123456789-xyz", "anthropic_key"},
        {"OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "openai_key"},
        {"AIzaSyA1234567890abcdefghijklmnopqrstuv", "google_api_key"},
        {"xoxb-1234567890-abcdefghij", "slack_token"},
        {"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "private_key"},
        {"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz", "jwt"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kl_scan_result r = scan(f, cases[i].text);
        if (r.action != KL_SCAN_BLOCK || !r.block_kinds || strcmp(r.block_kinds, cases[i].kind) != 0)
            fail_msg("%s: action %d, kinds %s", cases[i].text, r.action, r.block_kinds ? r.block_kinds : "-");
    }
    /* an Anthropic key is not also an OpenAI one */
    struct kl_scan_result r = scan(f, "sk-ant-api03-abcdefghijklmnopqrstuvwxyzABCDEFGH_0123456789-xyz");
    assert_string_equal(r.kinds, "anthropic_key");
}

static void pii_redacted_with_checks(void **state)
{
    struct fx *f = *state;
    char buf[512];
    struct kl_scan_result r = scan(f, "write to jane.doe+work@example.co.uk or call");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_string_equal(content(&r, buf, sizeof(buf)), "write to [REDACTED:email] or call");
    /* a card number that passes Luhn, spaced; one that does not is left */
    r = scan(f, "card 4111 1111 1111 1111, not 4111 1111 1111 1112");
    assert_string_equal(content(&r, buf, sizeof(buf)), "card [REDACTED:credit_card], not 4111 1111 1111 1112");
    assert_int_equal(r.redacted, 1);
    /* social security numbers that can be issued; 666 and 000 cannot */
    r = scan(f, "ssn 123-45-6789 vs 666-12-3456 and 000-12-3456");
    assert_string_equal(content(&r, buf, sizeof(buf)), "ssn [REDACTED:us_ssn] vs 666-12-3456 and 000-12-3456");
    r = scan(f, "IBAN GB82 WEST 1234 5698 7654 32 please; GB82 WEST 1234 5698 7654 33 is wrong");
    assert_string_equal(content(&r, buf, sizeof(buf)), "IBAN [REDACTED:iban] please; GB82 WEST 1234 5698 7654 33 is wrong");
    /* digits inside a longer number are not a card */
    r = scan(f, "order 941111111111111111119 shipped");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* nothing found: nothing changed */
    r = scan(f, "a plain question about C");
    assert_int_equal(r.action, KL_SCAN_OFF);
    assert_null(r.body);
    assert_null(r.kinds);
}

static void strongest_action_wins(void **state)
{
    struct fx *f = *state;
    struct kl_scan_result r = scan(f, "TICKET-123456 only");
    assert_int_equal(r.action, KL_SCAN_LOG);
    assert_string_equal(r.kinds, "ticket");
    assert_null(r.body);
    r = scan(f, "TICKET-123456 for jane@example.com");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_string_equal(r.kinds, "email,ticket");
    char buf[256];
    assert_string_equal(content(&r, buf, sizeof(buf)), "TICKET-123456 for [REDACTED:email]");
    r = scan(f, "jane@example.com AKIAIOSFODNN7EXAMPLE");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "aws_access_key");
    assert_null(r.body);
}

static void private_key_redacted_whole(void **state)
{
    (void)state;
    kl_config *cfg = load("{\"guardrails\": {\"secrets\": {\"action\": \"redact\", \"kinds\": [\"private_key\"]}}}");
    struct fx f = {cfg, NULL, {0}};
    kl_arena_init(&f.arena);
    char buf[256];
    struct kl_scan_result r = scan(&f, "key:\n-----BEGIN PRIVATE KEY-----\nMIIE\"quoted\"\n-----END PRIVATE KEY-----\nthanks");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_string_equal(content(&r, buf, sizeof(buf)), "key:\n[REDACTED:private_key]\nthanks");
    /* only the kinds listed: an AWS key is not looked for */
    r = scan(&f, "AKIAIOSFODNN7EXAMPLE");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* the same scratch for a larger database (what a reload brings): resized, not misused */
    kl_config *big = load("{\"guardrails\": {\"secrets\": \"block\", \"pii\": \"redact\"}}");
    f.cfg = big;
    r = scan(&f, "AKIAIOSFODNN7EXAMPLE and jane@example.com");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.kinds, "aws_access_key,email");
    kl_config_unref(big);
    kl_scan_scratch_free(f.scratch);
    kl_arena_free(&f.arena);
    kl_config_unref(cfg);
}

static void configuration_mistakes(void **state)
{
    (void)state;
    assert_true(diag("{\"guardrails\": {\"secrets\": \"maybe\"}}", "the action must be"));
    assert_true(diag("{\"guardrails\": {\"pii\": {\"action\": \"redact\", \"kinds\": [\"aws_access_key\"]}}}",
                     "guardrails.pii.kinds: unknown kind"));
    assert_true(diag("{\"guardrails\": {\"patterns\": [{\"name\": \"x\", \"regex\": \"(unclosed\", \"action\": \"log\"}]}}",
                     "guardrails: cannot compile x"));
    assert_true(diag("{\"guardrails\": {\"patterns\": [{\"name\": \"bad name\", \"regex\": \"a\", \"action\": \"log\"}]}}",
                     "a guardrails pattern is"));
    assert_true(diag("{\"guardrails\": {\"secret\": \"block\"}}", "unknown key \"secret\" in guardrails"));
    /* all off: no database at all */
    kl_config *c = load("{\"guardrails\": {\"secrets\": \"off\", \"pii\": \"off\"}}");
    assert_null(c->guardrails);
    kl_config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(secrets_block, setup, teardown),
        cmocka_unit_test_setup_teardown(pii_redacted_with_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(strongest_action_wins, setup, teardown),
        cmocka_unit_test(private_key_redacted_whole),
        cmocka_unit_test(configuration_mistakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
