/* AWS credentials from keyless's environment, found the way the AWS SDKs'
 * default chain finds them, for a provider whose "aws" names no access key:
 *
 *   1. the profile AWS_PROFILE names, of the shared config and
 *      credentials files (awsprofile.c);
 *   2. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN);
 *   3. a web identity: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, the
 *      token exchanged at STS (AssumeRoleWithWebIdentity): EKS's IRSA;
 *   4. without AWS_PROFILE, the default profile, if it names credentials
 *      (one that fails lets the chain go on);
 *   5. the container endpoint: AWS_CONTAINER_CREDENTIALS_FULL_URI or
 *      _RELATIVE_URI, with AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE): ECS
 *      task roles and EKS Pod Identity;
 *   6. the EC2 instance metadata service (IMDSv2): an instance profile,
 *      unless AWS_EC2_METADATA_DISABLED is true.
 *
 * Temporary credentials are fetched by a thread of their own and renewed
 * with a quarter of their life left, so no request waits for AWS; a
 * request copies the current ones under a lock. */
#ifndef KL_AWSCREDS_H
#define KL_AWSCREDS_H

#include <stdbool.h>

#include "core/arena.h"
#include "upstream/sigv4.h"

typedef struct kl_aws_keeper kl_aws_keeper;

/* Starts the thread; region is where STS is asked (AWS_REGION, else the
 * provider's). */
kl_aws_keeper *kl_aws_keeper_start(const char *region);
/* Wait up to ms for the first try to end. */
void kl_aws_keeper_wait(kl_aws_keeper *k, int ms);
/* The current credentials into out's key fields (copied into a); false
 * with *problem (in a) when there are none yet or they expired. */
bool kl_aws_current(kl_aws_keeper *k, kl_arena *a, struct kl_sigv4_cred *out, const char **problem);
/* Where the credentials come from ("environment", "web identity", ...),
 * and the seconds they are still used for (-1: no expiry; 0: none). */
void kl_aws_status(kl_aws_keeper *k, const char **source, long *seconds_left, int *failures);
void kl_aws_keeper_stop(kl_aws_keeper *k);

#endif
