/* What awscreds.c (the chain and its keeper thread) and awsprofile.c (the
 * shared config and credentials files) share; not for other modules. */
#ifndef KL_AWSCREDS_INT_H
#define KL_AWSCREDS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream/sigv4.h"

/* Credentials as one source gives them. */
struct kl_aws_found {
    char key_id[128], secret[256], token[8192];
    const char *source;         /* a static string: "environment", "profile", ... */
    int64_t expires_ms;         /* wall clock; 0: they do not expire */
    int64_t recheck_ms;         /* credentials that do not expire: read again after this (a file's), 0: never */
};

struct cJSON;

/* o's string member k, or NULL (cJSON's lookups, one name). */
const char *kl_aws_json_str(const struct cJSON *o, const char *k);
/* getenv(name), with an empty value taken for unset. */
const char *kl_aws_env(const char *name);
/* s into dst: false when absent, too long, or holding a control byte
 * (a credential goes into a header line). */
bool kl_aws_copy(char *dst, size_t cap, const char *s);
/* The region STS is asked in: AWS_REGION, AWS_DEFAULT_REGION, else
 * fallback (which may be NULL: us-east-1). */
const char *kl_aws_sts_region(const char *fallback);
/* The region STS is asked in to assume role: region (NULL: us-east-1),
 * unless role's ARN is of another partition (China's, GovCloud's or the
 * commercial one), whose roles STS of region's partition cannot assume:
 * then that partition's first region. One identity serves one partition,
 * and region may be the first Bedrock provider's, of another one. */
const char *kl_aws_role_sts_region(const char *region, const char *role);

/* The sources, each 1 with *f filled, 0 when it is not configured, or -1
 * with err (see awscreds.h for the chain). */
int kl_aws_from_env(struct kl_aws_found *f, char *err, size_t errlen);
int kl_aws_from_container(const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen);
int kl_aws_from_imds(const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen);
/* STS's AssumeRoleWithWebIdentity for role with the token in file: 1, or
 * -1 with err. */
int kl_aws_web_identity(const char *region, const char *file, const char *role, const char *session,
                        const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen);
/* STS's AssumeRole for role, signed with the source's credentials: 1, or
 * -1 with err. external_id may be NULL; duration_s 0 is STS's default. */
int kl_aws_assume_role(const char *region, const struct kl_aws_found *source, const char *role, const char *session,
                       const char *external_id, long duration_s, const atomic_bool *stop, struct kl_aws_found *f,
                       char *err, size_t errlen);

/* The profile (AWS_PROFILE, else "default") of the shared config and
 * credentials files (awsprofile.c); region: the fallback for STS. 0 when
 * neither file has it, or it names no credentials (a profile with only a
 * region is common where the instance's role is meant). */
int kl_aws_from_profile(const char *region, const atomic_bool *stop, struct kl_aws_found *f, char *err, size_t errlen);

#endif
