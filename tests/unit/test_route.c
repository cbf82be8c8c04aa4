/* Model routing and the headers that may (not) reach a provider. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "route/route.h"

static const char *cfg_text =
    "{\"providers\": {"
    " \"openai\": {\"baseurl\": \"http://a\", \"models\": [\"gpt-4o\", \"shared\"], \"compatibility\": {\"openai_chat\": true, \"openai_responses\": true}},"
    " \"backup\": {\"baseurl\": \"http://b\", \"models\": [\"gpt-4o\", \"shared\"], \"preference\": 10},"
    " \"anthropic\": {\"baseurl\": \"http://c\", \"models\": [\"claude\", \"shared\"], \"compatibility\": {\"anthropic_messages\": true}, \"preference\": 99},"
    " \"off\": {\"baseurl\": \"http://d\", \"models\": [\"dead\"], \"disabled\": true},"
    " \"self\": {\"baseurl\": \"http://e\", \"models\": [\"meta-llama/Llama-3\"]}"
    "}}";

static kl_config *load(void)
{
    kl_diags d = {0};
    kl_config *c = kl_config_parse(cfg_text, strlen(cfg_text), "t", &d);
    assert_non_null(c);
    kl_diags_free(&d);
    return c;
}

static void highest_preference_with_the_flag_wins(void **state)
{
    (void)state;
    kl_config *c = load();
    const char *bare;
    size_t bl;
    const struct kl_provider *p = kl_route_resolve(c, "gpt-4o", KL_COMPAT_OPENAI_CHAT, &bare, &bl);
    assert_string_equal(p->id, "backup");
    /* only openai speaks the Responses API */
    p = kl_route_resolve(c, "gpt-4o", KL_COMPAT_OPENAI_RESPONSES, &bare, &bl);
    assert_string_equal(p->id, "openai");
    /* anthropic has a higher preference but not the chat flag */
    p = kl_route_resolve(c, "shared", KL_COMPAT_OPENAI_CHAT, &bare, &bl);
    assert_string_equal(p->id, "backup");
    p = kl_route_resolve(c, "shared", KL_COMPAT_ANTHROPIC_MESSAGES, &bare, &bl);
    assert_string_equal(p->id, "anthropic");
    kl_config_unref(c);
}

static void qualified_names_pick_the_provider(void **state)
{
    (void)state;
    kl_config *c = load();
    const char *bare;
    size_t bl;
    const struct kl_provider *p = kl_route_resolve(c, "openai/gpt-4o", KL_COMPAT_OPENAI_CHAT, &bare, &bl);
    assert_string_equal(p->id, "openai");
    assert_string_equal(bare, "gpt-4o");
    assert_null(kl_route_resolve(c, "anthropic/gpt-4o", 0, &bare, &bl));
    /* a slash that is part of the model id */
    p = kl_route_resolve(c, "meta-llama/Llama-3", KL_COMPAT_OPENAI_CHAT, &bare, &bl);
    assert_string_equal(p->id, "self");
    assert_string_equal(bare, "meta-llama/Llama-3");
    p = kl_route_resolve(c, "self/meta-llama/Llama-3", KL_COMPAT_OPENAI_CHAT, &bare, &bl);
    assert_string_equal(p->id, "self");
    assert_string_equal(bare, "meta-llama/Llama-3");
    kl_config_unref(c);
}

static void disabled_and_unknown(void **state)
{
    (void)state;
    kl_config *c = load();
    const char *bare;
    size_t bl;
    assert_null(kl_route_resolve(c, "dead", 0, &bare, &bl));
    assert_null(kl_route_resolve(c, "nope", 0, &bare, &bl));
    assert_null(kl_route_resolve(c, "gpt-4", 0, &bare, &bl)); /* no prefix matching */
    kl_config_unref(c);
}

static void caller_credentials_never_forwarded(void **state)
{
    (void)state;
    const char *drop[] = {"Authorization", "x-api-key", "X-Goog-Api-Key", "api-key", "Cookie",
                          "Proxy-Authorization", "Connection", "Keep-Alive", "Transfer-Encoding",
                          "Host", "Content-Length", "TE", "Upgrade", "Expect",
                          "TRAILER", "Proxy-Connection", "Accept-Encoding",
                          "Tailscale-User-Login", "tailscale-user-name", "X_Api_Key", "content_length",
                          "Tailscale_User_Login", "x-goog-fieldmask", "X-Amz-Security-Token"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        assert_true(kl_route_drop_request_header(drop[i]));
    const char *keep[] = {"anthropic-beta", "anthropic-version", "OpenAI-Beta", "User-Agent",
                          "x-claude-code-session-id", "session-id", "Content-Type", "Accept",
                          "tailscale", "hosts", "x-api-keys", "authorizatio", "t"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        assert_false(kl_route_drop_request_header(keep[i]));
}

static void key_query_parameter_removed(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    assert_string_equal(kl_route_strip_key_param(&a, "alt=sse&key=AIza123", true), "alt=sse");
    assert_string_equal(kl_route_strip_key_param(&a, "key=AIza&alt=sse&x=1", true), "alt=sse&x=1");
    assert_null(kl_route_strip_key_param(&a, "key=AIza", true));
    assert_string_equal(kl_route_strip_key_param(&a, "beta=true", true), "beta=true");
    assert_string_equal(kl_route_strip_key_param(&a, "keys=1&monkey=2", true), "keys=1&monkey=2");
    /* the name as the provider reads it: any case, percent-encoded */
    assert_string_equal(kl_route_strip_key_param(&a, "Key=a&KEY=b&%6Bey=c&k%65Y=d&alt=sse", true), "alt=sse");
    assert_string_equal(kl_route_strip_key_param(&a, "%6Beys=1&ke%79%3D=2", true), "%6Beys=1&ke%79%3D=2");
    /* a presigned AWS request's parameters, all of them: keyless signs instead */
    assert_string_equal(kl_route_strip_key_param(&a, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F1&"
                                                     "X-Amz-Date=20261128T000000Z&X-Amz-Expires=60&"
                                                     "X-Amz-SignedHeaders=host&X-Amz-Signature=ab&"
                                                     "x-amz-security-token=t&X%2dAmz-User-Agent=u&a=1", true),
                        "a=1");
    assert_string_equal(kl_route_strip_key_param(&a, "x-amzn-trace=1&amz-date=2", true), "x-amzn-trace=1&amz-date=2");
    /* Google's system parameters: credentials, who pays, the field mask */
    assert_string_equal(kl_route_strip_key_param(&a, "alt=sse&%24key=K&$key=K&access_token=ya29&oauth_token=o&"
                                                     "userProject=p&%24userProject=q&fields=candidates&"
                                                     "$fields=x&prettyPrint=false", true),
                        "alt=sse&prettyPrint=false");
    assert_string_equal(kl_route_strip_key_param(&a, "fieldset=1&access=2&project=3", true), "fieldset=1&access=2&project=3");
    assert_null(kl_route_strip_key_param(&a, NULL, true));
    /* a passthrough provider keeps the caller's credentials and billing, never a field mask */
    assert_string_equal(kl_route_strip_key_param(&a, "key=K&userProject=p&fields=candidates&%24fields=x&alt=sse", false),
                        "key=K&userProject=p&alt=sse");
    kl_arena_free(&a);
}

/* A key the provider echoes in its answer is masked however the answer is
 * split: every split of a body holding it twice (and a near miss) gives the
 * same relayed bytes, the same length, without the key. */
static void echoed_key_masked_in_any_split(void **state)
{
    (void)state;
    kl_arena ka;
    kl_arena_init(&ka);
    /* as it is, with its '/' escaped (PHP's JSON encoder), percent-encoded (a URL; Python's quote() keeps '/') */
    const char *const *key = kl_route_key_spellings(&ka, "sk-live/0123+456789=");
    const char *body = "{\"error\":\"bad key sk-live/0123+456789=, sk-live\\/0123+456789=; at "
                       "?k=sk-live%2F0123%2B456789%3D or sk-live%2f0123%2b456789%3d or sk-live/0123%2B456789%3D; "
                       "not sk-live/01234\"}";
    const char *want = "{\"error\":\"bad key ********************, *********************; at "
                       "?k=************************** or ************************** or ************************; "
                       "not sk-live/01234\"}";
    size_t n = strlen(body);
    for (size_t cut1 = 0; cut1 <= n; cut1++)
        for (size_t cut2 = cut1; cut2 <= n; cut2 += 7) {
            kl_arena a;
            kl_arena_init(&a);
            char out[256];
            size_t o = 0, got;
            char *carry = NULL;
            size_t carry_len = 0;
            bool masked = false;
            size_t cuts[] = {0, cut1, cut2, n};
            for (int k = 0; k < 3; k++) {
                const char *r = kl_route_mask_key(&a, key, &carry, &carry_len, body + cuts[k], cuts[k + 1] - cuts[k],
                                                  &got, &masked);
                memcpy(out + o, r, got);
                o += got;
            }
            const char *r = kl_route_mask_key(&a, key, &carry, &carry_len, NULL, 0, &got, &masked);
            if (got) /* the end gives what waited: NULL when nothing did */
                memcpy(out + o, r, got);
            o += got;
            out[o] = '\0';
            if (strcmp(out, want) != 0 || !masked)
                fail_msg("split at %zu and %zu: %s", cut1, cut2, out);
            kl_arena_free(&a);
        }
    /* nothing to find: the piece itself, nothing kept back; an event's end never waits */
    kl_arena a;
    kl_arena_init(&a);
    char *carry = NULL;
    size_t carry_len = 0, got;
    bool masked = false;
    const char *ev = "data: {\"x\":1}\n\n";
    assert_ptr_equal(kl_route_mask_key(&a, key, &carry, &carry_len, ev, strlen(ev), &got, &masked), ev);
    assert_int_equal(got, strlen(ev));
    assert_int_equal(carry_len, 0);
    assert_false(masked);
    assert_ptr_equal(kl_route_mask_key(&a, NULL, &carry, &carry_len, ev, strlen(ev), &got, &masked), ev);
    /* a placeholder "key" of a few characters is left alone: it would mask every "k" */
    assert_null(kl_route_key_spellings(&a, "k"));
    /* a key of letters, digits and '-' has one spelling */
    const char *const *plain = kl_route_key_spellings(&a, "sk-proj-abcdef123");
    assert_string_equal(plain[0], "sk-proj-abcdef123");
    assert_null(plain[1]);
    kl_arena_free(&a);
    kl_arena_free(&ka);
}

/* The names dropped before forwarding are whole names, compared by
 * length first: every case and '_' spelling of each is dropped, and a name
 * one byte longer or shorter, or with a byte outside ASCII, is not. */
static void dropped_names_are_whole_names(void **state)
{
    (void)state;
    static const char *const creds[] = {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key",
                                        "api-key", "cookie", "x-amz-security-token"};
    static const char *const drop[] = {"x-amz-date", "x-amz-content-sha256", "connection", "keep-alive",
                                       "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
                                       "content-length", "expect", "accept-encoding", "content-encoding",
                                       "x-goog-fieldmask"};
    static const char *const billing[] = {"openai-organization", "openai-project", "x-goog-user-project"};
    char b[64];
    for (size_t k = 0; k < 3; k++) {
        const char *const *list = k == 0 ? creds : k == 1 ? drop : billing;
        size_t n = k == 0 ? 7 : k == 1 ? 15 : 3;
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(list[i]);
            for (unsigned m = 0; m < 4; m++) { /* upper case, '_' twins */
                for (size_t j = 0; j <= l; j++)
                    b[j] = (char)((m & 1) && list[i][j] >= 'a' && list[i][j] <= 'z' ? list[i][j] - 32
                                  : (m & 2) && list[i][j] == '-'                    ? '_'
                                                                                      : list[i][j]);
                assert_true(k == 2 ? kl_route_billing_header(b) : kl_route_drop_request_header(b));
                if (k == 0)
                    assert_true(kl_route_credential_header(b));
                b[l] = '2'; /* authorization2 */
                b[l + 1] = '\0';
                assert_false(k == 2 ? kl_route_billing_header(b) : kl_route_drop_request_header(b));
                assert_false(kl_route_credential_header(b));
                b[l] = '\0';
                b[l - 1] = '\0'; /* authorizatio */
                assert_false(k == 2 ? kl_route_billing_header(b) : kl_route_drop_request_header(b));
                assert_false(kl_route_credential_header(b));
            }
        }
    }
    static const char *const keep[] = {"x-api-key-extra", "xauthorization", "authorization\xc2", "\xe1uthorization",
                                       "authorization ", "x-api-key\t", "-api-key", "tailscale", "tailscalex-user"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        assert_false(kl_route_drop_request_header(keep[i]));
        assert_false(kl_route_credential_header(keep[i]));
    }
    assert_true(kl_route_drop_request_header("TAILSCALE_x"));
    assert_true(kl_route_drop_request_header("tailscale-"));
}

/* A provider's header named x-keyless-* (any case, any line) is never
 * passed on as keyless's own; a value that merely mentions it is. */
static void provider_x_keyless_headers_dropped(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *const keys[] = {"sk-provider-secret-1234", NULL};
    bool had;
    const char *plain = "Content-Type: application/json\r\nx-note: see x-keyless-request-id\r\n";
    assert_string_equal(kl_route_response_headers(&a, plain, keys, &had), plain);
    assert_false(had);
    assert_string_equal(kl_route_response_headers(&a, "X-Keyless-Request-Id: forged\r\nA: 1\r\n", keys, &had),
                        "A: 1\r\n");
    assert_string_equal(kl_route_response_headers(&a, "A: 1\r\nx-KEYLESS-cost: 0\r\nB: 2\r\n", keys, &had),
                        "A: 1\r\nB: 2\r\n");
    assert_string_equal(kl_route_response_headers(&a, "A: 1\r\nx-keyless-", keys, &had), "A: 1\r\n");
    assert_string_equal(kl_route_response_headers(&a, "A: 1\r\nx-keyles: 3\r\n", keys, &had),
                        "A: 1\r\nx-keyles: 3\r\n");
    assert_string_equal(kl_route_response_headers(&a, "A: sk-provider-secret-1234\r\nB: 2\r\n", keys, &had),
                        "B: 2\r\n");
    assert_true(had);
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(highest_preference_with_the_flag_wins),
        cmocka_unit_test(qualified_names_pick_the_provider),
        cmocka_unit_test(disabled_and_unknown),
        cmocka_unit_test(caller_credentials_never_forwarded),
        cmocka_unit_test(dropped_names_are_whole_names),
        cmocka_unit_test(provider_x_keyless_headers_dropped),
        cmocka_unit_test(key_query_parameter_removed),
        cmocka_unit_test(echoed_key_masked_in_any_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
