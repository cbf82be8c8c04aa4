/* AWS's shared config files as the AWS SDKs read them: profiles in both
 * spellings, comments, sub-properties, blanks and CRLF, merged repeats,
 * and malformed lines that are skipped without taking their neighbours. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "upstream/awsini.h"

static const char *get(const struct kl_aws_ini *ini, const char *section, const char *key)
{
    return kl_aws_ini_get(ini, section, key);
}

static void parse(kl_arena *a, const char *text, struct kl_aws_ini *out)
{
    kl_aws_ini_parse(a, text, strlen(text), out);
}

static void config_file(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_aws_ini ini;
    parse(&a,
          "# written by aws configure\n"
          "[default]\n"
          "region = us-east-1\n"
          "output=json\n"
          "\n"
          "[profile   dev ]   # the team's\n"
          "role_arn = arn:aws:iam::123456789012:role/dev\r\n"
          "source_profile = default\r\n"
          "s3 =\n"
          "  max_concurrent_requests = 20\n"
          "  role_arn = not-this-one\n"
          "external_id=a#b;c\n"
          "region = eu-west-1 ; where the team is\n"
          "output = json\t# the CLI's\n"
          "[profile \" q \"]\n"
          "region = us-west-2\n"
          "; a comment\n"
          "[sso-session corp]\n"
          "sso_region = eu-west-1\n"
          "sso_start_url = https://corp.awsapps.com/start\n",
          &ini);
    assert_string_equal(get(&ini, "default", "region"), "us-east-1");
    assert_string_equal(get(&ini, "default", "output"), "json");
    assert_string_equal(get(&ini, "profile dev", "role_arn"), "arn:aws:iam::123456789012:role/dev");
    assert_string_equal(get(&ini, "profile dev", "source_profile"), "default");
    /* a sub-property is not the profile's own setting; an empty value is none */
    assert_null(get(&ini, "profile dev", "s3"));
    assert_null(get(&ini, "profile dev", "max_concurrent_requests"));
    /* a value keeps '#' and ';' not after a blank, and ends at one after a blank */
    assert_string_equal(get(&ini, "profile dev", "external_id"), "a#b;c");
    assert_string_equal(get(&ini, "profile dev", "region"), "eu-west-1");
    assert_string_equal(get(&ini, "profile dev", "output"), "json");
    /* a quoted name */
    assert_string_equal(get(&ini, "profile q", "region"), "us-west-2");
    assert_string_equal(get(&ini, "sso-session corp", "sso_region"), "eu-west-1");
    assert_true(kl_aws_ini_has(&ini, "sso-session corp"));
    assert_false(kl_aws_ini_has(&ini, "dev"));
    assert_null(get(&ini, "default", "role_arn"));
    kl_arena_free(&a);
}

static void repeats_and_malformed_lines(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_aws_ini ini;
    static const char text[] =
          "orphan = before any section\n"
          "[default]\n"
          "aws_access_key_id = AKIAFIRST\n"
          "aws_session_token = kept\n"
          "not a property\n"
          "   aws_secret_access_key  =  spaced out  \n"
          "= no key\n"
          "[broken\n"
          "aws_access_key_id = AKIABROKEN\n"
          "[also] broken\n"
          "aws_access_key_id = AKIAALSOBROKEN\n"
          "[default]\n"
          "aws_access_key_id = AKIALATER\n"
          "aws_session_token = \n"
          "[]\n"
          "x = y\n"
          "[other]\n"
          "aws_access_key_id = AKIAOTHER\0hidden = yes\n"
          "last = no newline at the end";
    kl_aws_ini_parse(&a, text, sizeof(text) - 1, &ini);
    /* the later section's key wins; the earlier one's other keys stay, and
     * so does a value a later empty one would have hidden */
    assert_string_equal(get(&ini, "default", "aws_access_key_id"), "AKIALATER");
    assert_string_equal(get(&ini, "default", "aws_session_token"), "kept");
    assert_string_equal(get(&ini, "default", "aws_secret_access_key"), "spaced out");
    assert_null(get(&ini, "default", "orphan"));
    assert_false(kl_aws_ini_has(&ini, "broken"));
    assert_false(kl_aws_ini_has(&ini, "also"));
    assert_false(kl_aws_ini_has(&ini, ""));
    assert_null(get(&ini, "default", "x"));
    /* a NUL ends its line */
    assert_string_equal(get(&ini, "other", "aws_access_key_id"), "AKIAOTHER");
    assert_null(get(&ini, "other", "hidden"));
    assert_string_equal(get(&ini, "other", "last"), "no newline at the end");
    kl_arena_free(&a);
}

static void byte_order_mark(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_aws_ini ini;
    parse(&a, "\xef\xbb\xbf[default]\r\nregion = us-east-1\r\n", &ini);
    assert_string_equal(get(&ini, "default", "region"), "us-east-1");
    kl_arena_free(&a);
}

static void empty(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_aws_ini ini;
    kl_aws_ini_parse(&a, "", 0, &ini);
    assert_int_equal(ini.nsections, 0);
    assert_null(get(&ini, "default", "region"));
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_file),
        cmocka_unit_test(repeats_and_malformed_lines),
        cmocka_unit_test(byte_order_mark),
        cmocka_unit_test(empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
