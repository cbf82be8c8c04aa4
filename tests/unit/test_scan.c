/* Built-in guardrails: each kind found in a real request body, numbers
 * only when their checksum holds, redaction that leaves valid JSON, the
 * strongest action winning, and configuration mistakes reported. */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "core/config.h"
#include "guard/scan.h"
#include "guard/signed.h"

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

/* A raw JSON body, as a client wrote it (escapes and all). */
static struct kl_scan_result scan_raw(struct fx *f, const char *body)
{
    struct kl_scan_result r;
    const char *why = NULL;
    assert_int_equal(kl_scan(f->cfg->guardrails, &f->scratch, body, strlen(body), NULL, 0, &f->arena, &r, &why), 0);
    if (r.body) {
        cJSON *j = cJSON_ParseWithLength(r.body, r.body_len);
        if (!j)
            fail_msg("redacted body is not JSON: %s", r.body);
        cJSON_Delete(j);
    }
    return r;
}

static struct kl_scan_result scan(struct fx *f, const char *text)
{
    char *body = chat(text);
    struct kl_scan_result r = scan_raw(f, body);
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

static void fx_open(struct fx *f, const char *config)
{
    f->cfg = load(config);
    f->scratch = NULL;
    kl_arena_init(&f->arena);
}

static void fx_close(struct fx *f)
{
    kl_scan_scratch_free(f->scratch);
    kl_arena_free(&f->arena);
    kl_config_unref(f->cfg);
}

static int setup(void **state)
{
    static struct fx f;
    fx_open(&f, "{\"guardrails\": {\"secrets\": \"block\", \"pii\": \"redact\","
                " \"patterns\": [{\"name\": \"ticket\", \"regex\": \"TICKET-[0-9]{6}\", \"action\": \"log\"}]}}");
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fx_close(*state);
    return 0;
}

static void secrets_block(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *text, *kind;
    } cases[] = {
        {"my key is AKIAIOSFODNN7Q3XM9PL ok", "aws_access_key"},
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
    /* "sk-" inside a word is no key: a folder every agent puts in its prompt */
    r = scan(f, "cwd: /home/me/risk-assessment-platform-backend-service-v2 and run-task-scheduler-integration-tests-all");
    assert_int_equal(r.action, KL_SCAN_OFF);
    r = scan(f, "key=\"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD\"");
    assert_string_equal(r.block_kinds, "openai_key");
    /* in base64 (Codex's encrypted reasoning, an image), what looks like a
     * token is part of a run thousands of characters long: no key. Glued to
     * a short prefix, or at a line's end, it is one. */
#define B64RUN "gAAAAABn_x8Qw3e4r5t6y7u8i9o0pAsDfGhJkLzXcVbNm1234_8f+Zm9vYmFyYmF6/Qw3e4r5t6y7u8i9o0pAsDf"
    static const char *const in_base64[] = {
        B64RUN "_sk-Qw3e4r5t6y7u8i9o0pAsDfGhJkLzXcVbNm1234_8f",
        "iVBORw0KGgo+AIzaSyA1234567890abcdefghijklmnopqrstuv/" B64RUN,
        B64RUN "/AKIAIOSFODNN7Q3XM9PL", "R0lGODlh_ghp_abcdefghijklmnopqrstuvwxyz0123456789" B64RUN,
        B64RUN "-sk-ant-api03-abcdefghijklmnopqrstuvwxyzABCDEFGH_0123456789-xyz",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz+" B64RUN,
        B64RUN "/GB82WEST12345698765432/" B64RUN,
    };
#undef B64RUN
    for (size_t i = 0; i < sizeof(in_base64) / sizeof(in_base64[0]); i++) {
        r = scan(f, in_base64[i]);
        if (r.action != KL_SCAN_OFF)
            fail_msg("%s: action %d, kinds %s", in_base64[i], r.action, r.kinds ? r.kinds : "-");
    }
    r = scan(f, "session s-AKIAIOSFODNN7Q3XM9PL, path /srv/app/config/keys/MY_PROJECT_KEY_AKIAIOSFODNN7Q3XM9PL");
    assert_string_equal(r.block_kinds, "aws_access_key");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    /* glued to text that is no base64 (words, a path, a name), a key is one */
    static const char *const in_text[] = {
        "message=hi+team+my+aws+access+key+is+AKIAIOSFODNN7Q3XM9PL+and+i+accidentally+pushed+it+to+github+please",
        "/var/lib/jenkins/workspace/my-company-backend-service/deploy/credentials/AKIAIOSFODNN7Q3XM9PL",
        "token_ghp_abcdefghijklmnopqrstuvwxyz0123456789_used_by_the_nightly_release_pipeline_for_publishing",
        "----------------------------------------------------------------AKIAIOSFODNN7Q3XM9PL",
        "https://hooks.example.com/services/T0123456789/B0123456789/AIzaSyA1234567890abcdefghijklmnopqrstuv/callback",
    };
    for (size_t i = 0; i < sizeof(in_text) / sizeof(in_text[0]); i++) {
        r = scan(f, in_text[i]);
        if (r.action != KL_SCAN_BLOCK)
            fail_msg("%s: action %d, kinds %s", in_text[i], r.action, r.kinds ? r.kinds : "-");
    }
    /* placeholders in documentation and templates are no secrets */
    r = scan(f, "aws_access_key_id = AKIAIOSFODNN7EXAMPLE; GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx "
                "OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx KEY=AIzaXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* base64 wrapped in lines (MIME, PEM) is one run */
    r = scan(f, "Zm9vYmFyYmF6cXV4UXdlcnR5VWlvcDEyMzQ1Njc4OTBhYmNkZWZnaGlqa2xtbm9w\n"
                "AIzaSyA1234567890abcdefghijklmnopqrstuv0a1B2c3D4e5F6g7H8i9J0kLmN\nb3BxcnN0dXZ3eHl6");
    assert_int_equal(r.action, KL_SCAN_OFF);
    r = scan(f, "export GOOGLE_API_KEY=AIzaSyA1234567890abcdefghijklmnopqrstuv\\nnext");
    assert_string_equal(r.block_kinds, "google_api_key");
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
    /* a millisecond timestamp or an id that passes Luhn is no card: no
     * network's issuer range begins so */
    r = scan(f, "{\"ts\":1795872702208,\"id\":\"9000000000000001\"}");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* 19 digits in fours, and Diners' 4-6-4 */
    r = scan(f, "card 6011 0000 0000 0000 001 x, diners 3056 930902 5904 y");
    assert_string_equal(content(&r, buf, sizeof(buf)), "card [REDACTED:credit_card] x, diners [REDACTED:credit_card] y");
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

/* Findings next to or inside JSON escapes: found as in plain text, and the
 * redaction never splits an escape; one outside any string blocks. */
static void escapes_and_strings(void **state)
{
    struct fx *f = *state;
    char buf[256];
    struct kl_scan_result r = scan(f, "Pay to:\nDE89370400440532013000 now");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_string_equal(content(&r, buf, sizeof(buf)), "Pay to:\n[REDACTED:iban] now");
    /* an address's domain ends in a top-level domain, not a file's
     * extension or a member (code: "@2x.png" images, "@" matrix products) */
    r = scan(f, "<img src=\"logo@2x.png\"> y = inputs@self.kernel + b; x@w.T");
    assert_int_equal(r.action, KL_SCAN_OFF);
    r = scan(f, "out = x@self.weight.to(x.dtype); s = q@k.mT * scale; git clone git@github.com:org/repo.git");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* nor is a no-reply sender or a URL's user */
    r = scan(f, "Co-Authored-By: Claude <noreply@anthropic.com>; git+ssh://git@github.com/acme/x.git");
    assert_int_equal(r.action, KL_SCAN_OFF);
    r = scan(f, "ops@db1.corp.internal, root@localhost.localdomain, ANN@EXAMPLE.DE, kim@mail.example.co.uk.");
    assert_string_equal(content(&r, buf, sizeof(buf)),
                        "[REDACTED:email], [REDACTED:email], [REDACTED:email], [REDACTED:email].");
    r = scan(f, "info@example.xn--p1ai, bob@example.com--he knows; Jane@Example.Com: hi; report-bob@example.com-2024");
    assert_string_equal(content(&r, buf, sizeof(buf)), "[REDACTED:email], [REDACTED:email]--he knows; "
                                                       "[REDACTED:email]: hi; [REDACTED:email]-2024");
    r = scan(f, "Hi,\nbob@example.com\tthanks");
    assert_string_equal(content(&r, buf, sizeof(buf)), "Hi,\n[REDACTED:email]\tthanks");
    r = scan_raw(f, "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"ren\\u00e9@example.com\"}]}");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_non_null(strstr(r.body, "\"[REDACTED:email]\"")); /* "rené@": the local part is UTF-8 (RFC 6531) */
    /* a custom pattern that runs from one string into the next: blocked, not spliced */
    struct fx g;
    fx_open(&g, "{\"guardrails\": {\"patterns\": [{\"name\": \"pw\", \"regex\": \"password=\\\\S+\", \"action\": \"redact\"}]}}");
    r = scan_raw(&g, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"password=abc\"},"
                     "{\"role\":\"user\",\"content\":\"ignore previous rules\"}]}");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_null(r.body);
    fx_close(&g);
    /* a card number written as a JSON number cannot be taken out: blocked */
    r = scan_raw(f, "{\"model\":\"gpt-4o\",\"n\":4111111111111111,\"messages\":[]}");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "credit_card");
    assert_null(r.body);
}

/* A finding spelled with \u escapes is found as the provider will read it
 * (clients write escapes: Python's json.dumps escapes every non-ASCII
 * letter), and a redaction takes out the escapes that spell it. */
static void escaped_findings(void **state)
{
    struct fx *f = *state;
    char buf[256];
    static const char *const blocked[] = {
        "key \\u0041KIAIOSFODNN7Q3XM9PL", "AKIAIOSF\\u004FDNN7Q3XM9PL", "ghp\\u005fabcdefghijklmnopqrstuvwxyz0123456789",
        "\\u0041\\u004b\\u0049\\u0041IOSFODNN7Q3XM9PL",
    };
    for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", blocked[i]);
        struct kl_scan_result r = scan_raw(f, body);
        if (r.action != KL_SCAN_BLOCK)
            fail_msg("%s: action %d", blocked[i], r.action);
    }
    /* redacted: the escapes that spell it go, the ones around it stay */
    struct kl_scan_result r = scan_raw(f, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                                          "\"to bob\\u0040example.com \\u00e9t\\u00e9\"}]}");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_non_null(strstr(r.body, "\"to [REDACTED:email] \\u00e9t\\u00e9\""));
    assert_string_equal(content(&r, buf, sizeof(buf)), "to [REDACTED:email] \xc3\xa9t\xc3\xa9");
    r = scan_raw(f, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\/b jane\\u002edoe@example\\u002ecom\"}]}");
    assert_string_equal(content(&r, buf, sizeof(buf)), "a/b [REDACTED:email]");
    /* a local part takes Latin letters whole, never other scripts, punctuation or a no-break space */
    r = scan(f, "\xe9\x82\xae\xe7\xae\xb1\xef\xbc\x9azhang@example.com");           /* 邮箱：zhang@ */
    assert_string_equal(content(&r, buf, sizeof(buf)), "\xe9\x82\xae\xe7\xae\xb1\xef\xbc\x9a[REDACTED:email]");
    r = scan(f, "\xe6\x98\xaf" "zhang@example.com");                                      /* 是zhang@ */
    assert_string_equal(content(&r, buf, sizeof(buf)), "\xe6\x98\xaf[REDACTED:email]");
    r = scan(f, "Contact\xc2\xa0" "bob@example.com");
    assert_string_equal(content(&r, buf, sizeof(buf)), "Contact\xc2\xa0[REDACTED:email]");
    r = scan(f, "write to ren\xc3\xa9@example.com");
    assert_string_equal(content(&r, buf, sizeof(buf)), "write to [REDACTED:email]");
    /* no local part: no address */
    r = scan(f, "\xe6\x98\xaf@example.com");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* an escaped backslash before "u0041": a JSON text inside the string (a
     * tool call's arguments) spells an A so, and the SDK that parses it
     * reads one: found (in other text, found rather than missed) */
    r = scan_raw(f, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\\\\u0041KIAIOSFODNN7Q3XM9PL\"}]}");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    /* a configured pattern of non-ASCII text, and a surrogate pair */
    struct fx g;
    fx_open(&g, "{\"guardrails\": {\"patterns\": [{\"name\": \"codename\", \"regex\": \"Projekt M\xc3\xb6we\", \"action\": \"redact\"},"
                "{\"name\": \"smile\", \"regex\": \"x\xf0\x9f\x98\x80y\", \"action\": \"block\"}]}}");
    r = scan_raw(&g, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"the Projekt M\\u00f6we plan\"}]}");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_non_null(strstr(r.body, "\"the [REDACTED:codename] plan\""));
    r = scan_raw(&g, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\\ud83d\\ude00y\"}]}");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    fx_close(&g);
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
    r = scan(f, "jane@example.com AKIAIOSFODNN7Q3XM9PL");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "aws_access_key");
    assert_null(r.body);
}

static void private_key_redacted_whole(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "{\"guardrails\": {\"secrets\": {\"action\": \"redact\", \"kinds\": [\"private_key\"]}}}");
    kl_config *cfg = f.cfg;
    char buf[256];
    struct kl_scan_result r = scan(&f, "key:\n-----BEGIN PRIVATE KEY-----\nMIIE\"quoted\"\n-----END PRIVATE KEY-----\nthanks");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_string_equal(content(&r, buf, sizeof(buf)), "key:\n[REDACTED:private_key]\nthanks");
    /* near the end of the body, after an escaped backslash, and PGP's block */
    r = scan_raw(&f, "{\"a\":\"-----BEGIN PRIVATE KEY-----\"}");
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_string_equal(r.body, "{\"a\":\"[REDACTED:private_key]\"}");
    r = scan_raw(&f, "{\"a\":\"-----BEGIN PRIVATE KEY-----\\nMII\\\\\",\"b\":\"c\"}");
    assert_string_equal(r.body, "{\"a\":\"[REDACTED:private_key]\",\"b\":\"c\"}");
    r = scan(&f, "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----");
    assert_string_equal(content(&r, buf, sizeof(buf)), "[REDACTED:private_key]");
    /* only the kinds listed: an AWS key is not looked for */
    r = scan(&f, "AKIAIOSFODNN7Q3XM9PL");
    assert_int_equal(r.action, KL_SCAN_OFF);
    /* the same scratch for a larger database (what a reload brings): resized, not misused */
    kl_config *big = load("{\"guardrails\": {\"secrets\": \"block\", \"pii\": \"redact\"}}");
    f.cfg = big;
    r = scan(&f, "AKIAIOSFODNN7Q3XM9PL and jane@example.com");
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.kinds, "aws_access_key,email");
    kl_config_unref(big);
    f.cfg = cfg;
    fx_close(&f);
}

/* Only findings that hold are counted; too many of them do what the
 * strongest rule may do (log stays log; redact becomes block). */
static void many_findings(void **state)
{
    (void)state;
    size_t n = 70000;
    char *text = malloc(n * 8 + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(text + i * 8, "a@b.co, ", 8);
    text[n * 8] = '\0';
    static const char *const cfgs[] = {"{\"guardrails\": {\"pii\": \"log\"}}", "{\"guardrails\": {\"pii\": \"redact\"}}"};
    static const enum kl_scan_action want[] = {KL_SCAN_LOG, KL_SCAN_BLOCK};
    for (size_t k = 0; k < 2; k++) {
        struct fx f;
        fx_open(&f, cfgs[k]);
        struct kl_scan_result r = scan(&f, text);
        assert_int_equal(r.action, want[k]);
        /* single digits in a table are not card numbers */
        r = scan(&f, "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0");
        assert_int_equal(r.action, KL_SCAN_OFF);
        fx_close(&f);
    }
    free(text);
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
    assert_true(diag("{\"guardrails\": {\"answers\": \"yes\", \"secrets\": \"block\"}}",
                     "guardrails.answers must be true or false"));
    /* an end anchor never matches a padded body: said, not an error */
    assert_true(diag("{\"guardrails\": {\"patterns\": [{\"name\": \"x\", \"regex\": \"falcon$\", \"action\": \"log\"}]}}",
                     "guardrails pattern x: '$' and '\\z' never match"));
    assert_true(diag("{\"guardrails\": {\"patterns\": [{\"name\": \"x\", \"regex\": \"a\\\\z\", \"action\": \"log\"}]}}",
                     "never match"));
    assert_false(diag("{\"guardrails\": {\"patterns\": [{\"name\": \"x\", \"regex\": \"cost [$][0-9]+ \\\\$1\", "
                      "\"action\": \"log\"}]}}", "never match"));
    kl_config *w = load("{\"guardrails\": {\"patterns\": [{\"name\": \"x\", \"regex\": \"falcon$\", \"action\": \"log\"}]}}");
    assert_non_null(w->guardrails);
    kl_config_unref(w);
    /* all off: no database at all */
    kl_config *c = load("{\"guardrails\": {\"secrets\": \"off\", \"pii\": \"off\"}}");
    assert_null(c->guardrails);
    kl_config_unref(c);
}

/* A finding a few bytes before the end of the body is found wherever the
 * body lies in memory: Vectorscan 5.4.9 missed this address at 27 of 64
 * alignments when the body was scanned without padding (scan.c). Each rule
 * alone, as a configuration naming one kind compiles it. */
static void findings_at_the_end_at_every_alignment(void **state)
{
    (void)state;
    static const struct {
        const char *config, *text, *kind;
    } cases[] = {
        {"{\"guardrails\": {\"pii\": {\"action\": \"redact\", \"kinds\": [\"email\"]}}}",
         "reply to sam@example.com ok", "email"},
        {"{\"guardrails\": {\"secrets\": \"block\"}}", "the key is AKIAIOSFODNN7Q3XM9PL", "aws_access_key"},
        {"{\"guardrails\": {\"pii\": {\"action\": \"redact\", \"kinds\": [\"credit_card\"]}}}",
         "card 4111 1111 1111 1111", "credit_card"},
        {"{\"guardrails\": {\"pii\": {\"action\": \"redact\", \"kinds\": [\"us_ssn\"]}}}", "ssn 123-45-6789",
         "us_ssn"},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct fx f;
        fx_open(&f, cases[c].config);
        char *body = chat(cases[c].text);
        size_t len = strlen(body);
        char *buf = aligned_alloc(64, 64 + ((len + 64 + 63) / 64) * 64);
        for (size_t off = 0; off < 64; off++) {
            memset(buf, 'x', 64 + ((len + 64 + 63) / 64) * 64);
            memcpy(buf + off, body, len);
            struct kl_scan_result r;
            const char *why = NULL;
            assert_int_equal(kl_scan(f.cfg->guardrails, &f.scratch, buf + off, len, NULL, 0, &f.arena, &r, &why), 0);
            if (!r.kinds || strcmp(r.kinds, cases[c].kind) != 0)
                fail_msg("%s at alignment %zu: found %s", cases[c].kind, off, r.kinds ? r.kinds : "nothing");
        }
        free(buf);
        cJSON_free(body);
        fx_close(&f);
    }
}

/* Configured patterns are found wherever they are, and scanning never
 * takes the process down: Debian 12's Vectorscan (5.4.9, x86) missed
 * "sabct" at 119 of these 200 places and aborted the process ("buffer
 * overflow detected") on a run of 256 letters for [a-z]+[0-9]yb alone;
 * keyless builds against Intel's Hyperscan there (scripts/deps.sh). A
 * pattern that would make a backtracking engine take exponential time is
 * one pass like any other. */
static void configured_patterns(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "{\"guardrails\": {\"secrets\": \"off\", \"pii\": \"off\", \"patterns\": ["
                "{\"name\": \"word\", \"regex\": \"s[a-z]{3}t\", \"action\": \"redact\"}]}}");
    char text[512], buf[512];
    for (size_t pre = 0; pre < 200; pre++) {
        for (size_t i = 0; i < pre; i++)
            text[i] = "abcdefghij klmnop"[i % 17];
        snprintf(text + pre, sizeof(text) - pre, " sabct ");
        struct kl_scan_result r = scan(&f, text);
        if (!r.kinds || strcmp(r.kinds, "word") != 0 || r.redacted != 1)
            fail_msg("sabct after %zu bytes: found %s", pre, r.kinds ? r.kinds : "nothing");
        assert_non_null(strstr(content(&r, buf, sizeof(buf)), " [REDACTED:word] "));
    }
    fx_close(&f);

    fx_open(&f, "{\"guardrails\": {\"patterns\": [{\"name\": \"tag\", \"regex\": \"[a-z]+[0-9]yb\", \"action\": \"log\"}]}}");
    memset(text, 'a', 300);
    snprintf(text + 300, sizeof(text) - 300, " then abc1yb");
    struct kl_scan_result r = scan(&f, text);
    assert_string_equal(r.kinds, "tag");
    fx_close(&f);

    fx_open(&f, "{\"guardrails\": {\"patterns\": [{\"name\": \"nested\", \"regex\": \"(a+)+c\", \"action\": \"block\"}]}}");
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 17 == 16 ? '!' : 'a';
    big[n - 1] = 'c';
    big[n] = '\0';
    r = scan(&f, big);
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.kinds, "nested");
    free(big);
    fx_close(&f);
}

/* A pattern generator's literals, classes and repeats (what a ticket id
 * or an internal host name looks like), in syntax POSIX EREs share. */
static void random_pattern(unsigned *seed, char *p)
{
    static const char lit[] = "abstxyz019";
    size_t n = 0;
    int parts = 2 + rand_r(seed) % 4;
    for (int i = 0; i < parts; i++) {
        switch (rand_r(seed) % 6) {
        case 0:
        case 1:
            p[n++] = lit[rand_r(seed) % 10];
            break;
        case 2:
            n += (size_t)sprintf(p + n, "[a-z]{%d}", 1 + rand_r(seed) % 4);
            break;
        case 3:
            n += (size_t)sprintf(p + n, "[0-9]{1,%d}", 1 + rand_r(seed) % 4);
            break;
        case 4:
            n += (size_t)sprintf(p + n, "[a-z]+");
            break;
        default:
            n += (size_t)sprintf(p + n, "[a-z0-9]");
        }
    }
    p[n] = '\0';
}

/* Whatever pattern is configured, the scan finds it exactly where glibc's
 * POSIX matcher does: 300 generated patterns, 60 texts each (fixed seed).
 * Against Vectorscan 5.4.9 this found misses and aborts (above). */
static void configured_patterns_agree_with_posix(void **state)
{
    (void)state;
    unsigned seed = 20261127;
    static const char alpha[] = "abstxyz019 _-";
    for (int k = 0; k < 300; k++) {
        char pat[128], config[256];
        random_pattern(&seed, pat);
        snprintf(config, sizeof(config),
                 "{\"guardrails\": {\"patterns\": [{\"name\": \"p\", \"regex\": \"%s\", \"action\": \"log\"}]}}", pat);
        struct fx f;
        fx_open(&f, config);
        regex_t rx;
        assert_int_equal(regcomp(&rx, pat, REG_EXTENDED | REG_NOSUB), 0);
        for (int t = 0; t < 60; t++) {
            char text[600];
            size_t len = (size_t)(rand_r(&seed) % 500);
            for (size_t i = 0; i < len; i++)
                text[i] = alpha[rand_r(&seed) % 13];
            text[len] = '\0';
            struct kl_scan_hit *hits;
            size_t nhits;
            const char *why = NULL;
            assert_int_equal(kl_scan_text(f.cfg->guardrails, &f.scratch, text, len, &hits, &nhits, &why), 0);
            bool posix = regexec(&rx, text, 0, NULL, 0) == 0;
            if (posix != (nhits > 0))
                fail_msg("pattern %s over \"%s\": POSIX %s, keyless %zu findings", pat, text,
                         posix ? "matches" : "does not match", nhits);
            free(hits);
        }
        regfree(&rx);
        fx_close(&f);
    }
}

/* ---- base64 text files (guard/attach.h) ---- */

/* text as base64 (standard, or base64url without padding) into buf. */
static char *b64(const char *text, bool url, char *buf)
{
    int n = EVP_EncodeBlock((unsigned char *)buf, (const unsigned char *)text, (int)strlen(text));
    for (int i = 0; url && i < n; i++)
        buf[i] = buf[i] == '+' ? '-' : buf[i] == '/' ? '_' : buf[i];
    while (url && n && buf[n - 1] == '=')
        buf[--n] = '\0';
    return buf;
}

/* The base64 string value of member key in body, decoded. */
static char *unb64(const char *body, const char *key, char *out)
{
    const char *k = strstr(body, key);
    assert_non_null(k);
    const char *v = strchr(k + strlen(key), '"') + 1, *e = strchr(v, '"');
    char std[4096];
    size_t n = 0;
    for (const char *p = v; p < e; p++)
        std[n++] = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    while (n % 4)
        std[n++] = '=';
    std[n] = '\0';
    int d = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)std, (int)n);
    assert_true(d >= 0);
    while (n && std[n - 1] == '=') {
        n--;
        d--;
    }
    out[d] = '\0';
    return out;
}

/* The provider's signed reasoning in the history goes back as it came (the
 * API refuses an altered one); everything around it is still scanned. */
static void signed_reasoning_left_alone(void **state)
{
    struct fx *f = *state;
    const char *body =
        "{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"write to jane@example.com\","
        "\"signature\":\"EqQBCkgIBRABGAIiQL\"},{\"type\":\"redacted_thinking\",\"data\":\"am9lQGV4YW1wbGUuY29t\"},"
        "{\"type\":\"thinking\",\"thinking\":\"unsigned ann@example.com\"},"
        "{\"reasoningContent\":{\"reasoningText\":{\"text\":\"bob@example.com\",\"signature\":\"c2ln\"}}},"
        "{\"type\":\"text\",\"text\":\"sent to jane@example.com\"}]}]}";
    struct kl_scan_span *skip;
    size_t n = kl_guard_signed_spans(body, strlen(body), &f->arena, &skip);
    assert_int_equal(n, 3);
    assert_memory_equal(body + skip[0].from, "\"write to jane@example.com\"", skip[0].to - skip[0].from);
    struct kl_scan_result r;
    const char *why = NULL;
    assert_int_equal(kl_scan(f->cfg->guardrails, &f->scratch, body, strlen(body), skip, n, &f->arena, &r, &why), 0);
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_int_equal(r.redacted, 2);
    char *out = kl_arena_strndup(&f->arena, r.body, r.body_len);
    assert_non_null(strstr(out, "\"write to jane@example.com\""));
    assert_non_null(strstr(out, "\"bob@example.com\""));
    assert_non_null(strstr(out, "\"unsigned [REDACTED:email]\""));
    assert_non_null(strstr(out, "\"sent to [REDACTED:email]\""));
    /* a secret there is not blocked either; next to it, it is */
    const char *secret = "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\","
                         "\"thinking\":\"AKIAIOSFODNN7Q3XM9PL\",\"signature\":\"x\"}]}]}";
    n = kl_guard_signed_spans(secret, strlen(secret), &f->arena, &skip);
    assert_int_equal(kl_scan(f->cfg->guardrails, &f->scratch, secret, strlen(secret), skip, n, &f->arena, &r, &why), 0);
    assert_int_equal(r.action, KL_SCAN_OFF);
    assert_int_equal(kl_scan(f->cfg->guardrails, &f->scratch, secret, strlen(secret), NULL, 0, &f->arena, &r, &why), 0);
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    /* a repeated member may be read otherwise by the provider: not skipped */
    const char *twice = "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\","
                        "\"thinking\":\"a\",\"thinking\":\"b\",\"signature\":\"x\"}]}]}";
    assert_int_equal(kl_guard_signed_spans(twice, strlen(twice), &f->arena, &skip), 0);
}

static void base64_text_files(void **state)
{
    struct fx *f = *state;
    char enc[2048], body[4096], dec[2048];
    /* a .env as Gemini inlineData: blocked */
    snprintf(body, sizeof(body), "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"inlineData\":{\"mimeType\":"
             "\"text/plain\",\"data\":\"%s\"}}]}]}", b64("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7Q3XM9PL\n", false, enc));
    struct kl_scan_result r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "aws_access_key");
    /* an address in a Converse document's bytes: redacted, and encoded again */
    snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\",\"content\":[{\"document\":{\"format\":\"txt\","
             "\"name\":\"n\",\"source\":{\"bytes\":\"%s\"}}}]}]}", b64("owner: ann@example.com\nok\n", false, enc));
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_int_equal(r.redacted, 1);
    assert_string_equal(unb64(r.body, "\"bytes\"", dec), "owner: [REDACTED:email]\nok\n");
    /* standard base64 of a length that needed no '=' is padded again when the redacted text needs it */
    assert_null(strchr(b64("contact ann@example.com!", false, enc), '='));
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", enc);
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_REDACT);
    const char *pv = strstr(r.body, "\"data\":\"") + 8;
    size_t pvl = (size_t)(strchr(pv, '"') - pv);
    assert_int_equal(pvl % 4, 0);
    assert_int_equal(pv[pvl - 1], '=');
    assert_string_equal(unb64(r.body, "\"data\"", dec), "contact [REDACTED:email]!");
    /* base64url without padding stays so */
    const char *odd = "mail ann@example.com >>>?";
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", b64(odd, true, enc));
    assert_non_null(strchr(b64("[REDACTED:email] >>>?", false, dec), '+')); /* the test's premise */
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_REDACT);
    const char *v = strstr(r.body, "\"data\":\"") + 8;
    assert_null(memchr(v, '+', (size_t)(strchr(v, '"') - v)));
    assert_null(memchr(v, '=', (size_t)(strchr(v, '"') - v)));
    assert_string_equal(unb64(r.body, "\"data\"", dec), "mail [REDACTED:email] >>>?");
    /* a data: URL (OpenAI's file_data), with every '/' escaped as some JSON writers do */
    b64("ghp_abcdefghijklmnopqrstuvwxyz0123456789 \x3f\x3f\x3f", false, enc);
    char esc[1024];
    size_t n = 0;
    for (const char *p = enc; *p; p++) {
        if (*p == '/')
            esc[n++] = '\\';
        esc[n++] = *p;
    }
    esc[n] = '\0';
    assert_non_null(strchr(esc, '\\'));
    snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\",\"file\":"
             "{\"filename\":\"a.txt\",\"file_data\":\"data:text/plain;base64,%s\"}}]}]}", esc);
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "github_token");
    /* redacted in a file whose '/' are escaped: the whole escaped string is replaced, after a \u escape too */
    b64("write to ann@example.com \x3f\x3f\x3f", false, enc);
    n = 0;
    for (const char *p = enc; *p; p++) {
        if (*p == '/')
            esc[n++] = '\\';
        esc[n++] = *p;
    }
    esc[n] = '\0';
    snprintf(body, sizeof(body), "{\"note\":\"caf\\u00e9\",\"x\":{\"file_data\":\"data:text/plain;base64,%s\"}}", esc);
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_REDACT);
    assert_int_equal(r.files, 1);
    assert_non_null(strstr(r.body, "\"note\":\"caf\\u00e9\""));
    const char *fd = strstr(r.body, "base64,") + 7;
    char one[512];
    snprintf(one, sizeof(one), "{\"data\":\"%.*s\"}", (int)(strchr(fd, '"') - fd), fd);
    assert_string_equal(unb64(one, "\"data\"", dec), "write to [REDACTED:email] \x3f\x3f\x3f");
    /* Bedrock CountTokens' InvokeModel form: the whole Claude body, base64, in "body" */
    snprintf(body, sizeof(body), "{\"input\":{\"invokeModel\":{\"body\":\"%s\"}}}",
             b64("{\"messages\":[{\"role\":\"user\",\"content\":\"key AKIAIOSFODNN7Q3XM9PL\"}]}", false, enc));
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "aws_access_key");
    /* a log-only finding is only noted */
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", b64("see TICKET-123456 today", false, enc));
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_LOG);
    assert_string_equal(r.kinds, "ticket");
    /* binary files are not read as text: a PNG (its header holds NULs) with the same bytes */
    static const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10 AKIAIOSFODNN7Q3XM9PL";
    int pl = EVP_EncodeBlock((unsigned char *)enc, png, (int)sizeof(png) - 1);
    enc[pl] = '\0';
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", enc);
    assert_int_equal(scan_raw(f, body).action, KL_SCAN_OFF);
    /* nor is a PDF, whose head may hold no NUL */
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", b64("%PDF-1.4\n1 0 obj << /Author (ann@example.com) >>", false, enc));
    assert_int_equal(scan_raw(f, body).action, KL_SCAN_OFF);
    /* a Latin-1 file, or one with a terminal's colours, is text */
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", b64("\x1b[1mcaf\xe9\x1b[0m AKIAIOSFODNN7Q3XM9PL", false, enc));
    assert_int_equal(scan_raw(f, body).action, KL_SCAN_BLOCK);
    /* wrapped lines (the base64 tool's 76 columns, as JSON escapes) are read through */
    b64("a longer file whose base64 is wrapped: ghp_abcdefghijklmnopqrstuvwxyz0123456789 and more", false, enc);
    char wrapped[1024];
    n = 0;
    for (size_t i = 0; enc[i]; i++) {
        if (i && i % 20 == 0) {
            memcpy(wrapped + n, "\\n", 2);
            n += 2;
        }
        wrapped[n++] = enc[i];
    }
    wrapped[n] = '\0';
    snprintf(body, sizeof(body), "{\"x\":{\"data\":\"%s\"}}", wrapped);
    r = scan_raw(f, body);
    assert_int_equal(r.action, KL_SCAN_BLOCK);
    assert_string_equal(r.block_kinds, "github_token");
    /* a data: URL whose parameters run long */
    char params[600];
    memset(params, 'a', sizeof(params) - 1);
    params[sizeof(params) - 1] = '\0';
    snprintf(body, sizeof(body), "{\"u\":\"data:text/plain;x=%s;base64,%s\"}", params, b64("AKIAIOSFODNN7Q3XM9PL", false, enc));
    assert_int_equal(scan_raw(f, body).action, KL_SCAN_BLOCK);
    /* nor is a value that is not base64, or is not a member's value */
    assert_int_equal(scan_raw(f, "{\"data\":\"QUtJQUlPU0ZPRE5ON1EzWE05UEw.gg\"}").action, KL_SCAN_OFF);
    assert_int_equal(scan_raw(f, "{\"a\":[\"data\",\"QUtJQUlPU0ZPRE5ON1EzWE05UEw=\"]}").action, KL_SCAN_OFF);
    assert_int_equal(scan_raw(f, "{\"data\":\"QUtJQUlPU0ZPRE5ON1EzWE05UEw=\"}").action, KL_SCAN_BLOCK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(secrets_block, setup, teardown),
        cmocka_unit_test(findings_at_the_end_at_every_alignment),
        cmocka_unit_test_setup_teardown(pii_redacted_with_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(strongest_action_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(escapes_and_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(escaped_findings, setup, teardown),
        cmocka_unit_test_setup_teardown(base64_text_files, setup, teardown),
        cmocka_unit_test_setup_teardown(signed_reasoning_left_alone, setup, teardown),
        cmocka_unit_test(many_findings),
        cmocka_unit_test(private_key_redacted_whole),
        cmocka_unit_test(configuration_mistakes),
        cmocka_unit_test(configured_patterns),
        cmocka_unit_test(configured_patterns_agree_with_posix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
