/* AWS's shared config and credentials files (~/.aws/config,
 * ~/.aws/credentials), read the way the AWS SDKs read them:
 *
 *   [default]                      a section; in the config file a profile
 *   region = us-east-1             is "[profile NAME]" (and "[default]"),
 *   [profile dev]                  in the credentials file "[NAME]"
 *   role_arn = arn:aws:iam::...
 *   s3 =                           a property with no value opens
 *     max_concurrent_requests = 9  indented sub-properties (skipped)
 *   # a comment, ; another
 *
 * Keys and values are trimmed; a value ends at a '#' or ';' after a blank
 * (a comment). A line that is neither a section, a property nor a comment
 * is skipped, as is every property under a malformed section line (the
 * stricter reading: the JS SDK lends them to the section before). A name
 * repeated (section or key) is merged: the later non-empty value wins.
 * [profile  "dev" ] is named "profile dev"; a leading byte order mark
 * is skipped. */
#ifndef KL_AWSINI_H
#define KL_AWSINI_H

#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"

struct kl_aws_ini_prop {
    const char *key, *value;
};

struct kl_aws_ini_section {
    const char *name;
    size_t first, n;            /* its properties: props[first .. first + n) */
};

struct kl_aws_ini {
    struct kl_aws_ini_section *sections;
    size_t nsections;
    struct kl_aws_ini_prop *props;
    size_t nprops;
};

/* text (len bytes; a NUL inside ends a line) into out, everything in a. */
void kl_aws_ini_parse(kl_arena *a, const char *text, size_t len, struct kl_aws_ini *out);
/* Whether a section of that name is there. */
bool kl_aws_ini_has(const struct kl_aws_ini *ini, const char *section);
/* key's value in the sections named section (the last non-empty one), or
 * NULL. */
const char *kl_aws_ini_get(const struct kl_aws_ini *ini, const char *section, const char *key);

#endif
