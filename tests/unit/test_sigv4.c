/* AWS Signature Version 4: AWS's own published examples (the SigV4 test
 * suite's get-vanilla and get-vanilla-query-order-key-case, whose
 * signatures are AWS's), a session token's header, a Bedrock path whose
 * escapes are escaped once more, and the region read from endpoint hosts.
 * The integration tests check keyless's signatures against the AWS SDK's
 * own signer as well. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "upstream/sigv4.h"

static const struct kl_sigv4_cred example = {
    .access_key_id = "AKIDEXAMPLE",
    .secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "service",
};

#define SUITE_TIME 1440938160 /* 20150830T123600Z */

static void aws_test_suite(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *h[3];
    assert_int_equal(kl_sigv4_headers(&a, &example, "GET", "https://example.amazonaws.com/", NULL, 0, SUITE_TIME, h), 2);
    assert_string_equal(h[0], "X-Amz-Date: 20150830T123600Z");
    assert_string_equal(h[1], "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                              "aws4_request, SignedHeaders=host;x-amz-date, "
                              "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    /* parameters are signed sorted, whatever their order in the URL */
    kl_sigv4_headers(&a, &example, "GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", NULL, 0,
                     SUITE_TIME, h);
    assert_non_null(strstr(h[1], "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"));
    kl_arena_free(&a);
}

/* Temporary credentials: the session token is sent and signed. A Bedrock
 * model id's ':' is sent as %3A and signed as %253A, so the signature
 * differs from that of the same path with a plain ':'. */
static void session_token_and_bedrock_path(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_sigv4_cred c = example;
    c.session_token = "IQoJb3JpZ2luX2VjEXAMPLE";
    c.service = "bedrock";
    const char *h[3], *g[3];
    const char *body = "{\"messages\":[]}";
    assert_int_equal(kl_sigv4_headers(&a, &c, "POST",
                                      "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                                      "us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke",
                                      body, strlen(body), SUITE_TIME, h), 3);
    assert_string_equal(h[1], "X-Amz-Security-Token: IQoJb3JpZ2luX2VjEXAMPLE");
    assert_non_null(strstr(h[2], "Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
                                 "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="));
    kl_sigv4_headers(&a, &c, "POST",
                     "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/"
                     "invoke",
                     body, strlen(body), SUITE_TIME, g);
    assert_string_not_equal(h[2], g[2]);
    /* the body is signed */
    kl_sigv4_headers(&a, &c, "POST",
                     "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                     "us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke",
                     "{}", 2, SUITE_TIME, g);
    assert_string_not_equal(h[2], g[2]);
    kl_arena_free(&a);
}

static void region_from_host(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    assert_string_equal(kl_sigv4_region_of(&a, "https://bedrock-runtime.us-east-1.amazonaws.com"), "us-east-1");
    assert_string_equal(kl_sigv4_region_of(&a, "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com:443/x"),
                        "us-gov-west-1");
    assert_string_equal(kl_sigv4_region_of(&a, "https://vpce-0a1b-c2d3.bedrock-runtime.eu-central-1.vpce.amazonaws.com"),
                        "eu-central-1");
    assert_string_equal(kl_sigv4_region_of(&a, "https://bedrock-runtime.cn-north-1.amazonaws.com.cn"), "cn-north-1");
    assert_null(kl_sigv4_region_of(&a, "http://127.0.0.1:8080"));
    assert_null(kl_sigv4_region_of(&a, "https://amazonaws.com"));
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aws_test_suite),
        cmocka_unit_test(session_token_and_bedrock_path),
        cmocka_unit_test(region_from_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
