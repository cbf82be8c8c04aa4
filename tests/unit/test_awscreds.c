/* The AWS credential chain's pure parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "upstream/awscreds_int.h"

/* A role is assumed at STS of its own partition, whatever provider's
 * region the keeper was started with. */
static void sts_region_follows_the_role(void **state)
{
    (void)state;
    const char *cn = "arn:aws-cn:iam::123456789012:role/r", *gov = "arn:aws-us-gov:iam::123456789012:role/r",
               *com = "arn:aws:iam::123456789012:role/r";
    assert_string_equal(kl_aws_role_sts_region("eu-west-1", com), "eu-west-1");
    assert_string_equal(kl_aws_role_sts_region(NULL, com), "us-east-1");
    assert_string_equal(kl_aws_role_sts_region("us-east-1", cn), "cn-north-1");
    assert_string_equal(kl_aws_role_sts_region("cn-northwest-1", cn), "cn-northwest-1");
    assert_string_equal(kl_aws_role_sts_region("us-east-1", gov), "us-gov-west-1");
    assert_string_equal(kl_aws_role_sts_region("us-gov-east-1", gov), "us-gov-east-1");
    assert_string_equal(kl_aws_role_sts_region("cn-north-1", com), "us-east-1");
    assert_string_equal(kl_aws_role_sts_region("us-gov-west-1", com), "us-east-1");
    /* a partition keyless does not know, or no ARN: the region as given */
    assert_string_equal(kl_aws_role_sts_region("us-iso-east-1", "arn:aws-iso:iam::1:role/r"), "us-iso-east-1");
    assert_string_equal(kl_aws_role_sts_region("eu-west-1", "not-an-arn"), "eu-west-1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sts_region_follows_the_role),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
