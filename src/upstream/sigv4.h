/* AWS Signature Version 4 for provider requests: Amazon Bedrock with IAM
 * credentials (an access key and its secret, and a session token for
 * temporary ones) instead of a Bedrock API key. */
#ifndef KL_SIGV4_H
#define KL_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "core/arena.h"

struct kl_sigv4_cred {
    const char *access_key_id;
    const char *secret;
    const char *session_token;  /* temporary credentials, or NULL */
    const char *region;         /* "us-east-1" */
    const char *service;        /* the signing name: "bedrock" */
};

/* The headers that sign a request to url (as it will be sent) with body,
 * each "Name: value" in a, written to out: X-Amz-Date, X-Amz-Security-Token
 * when there is a session token, and Authorization. The signature covers
 * the method, path, query, host, those headers and the body. Returns how
 * many (2 or 3). */
size_t kl_sigv4_headers(kl_arena *a, const struct kl_sigv4_cred *c, const char *method, const char *url,
                        const char *body, size_t len, time_t now, const char *out[3]);
/* The same, with one more header the signature covers, "name:value" (the
 * name in lower case and after "x-amz-security-token" in order, such as
 * Google's x-goog-cloud-target-resource), which the caller sends itself. */
size_t kl_sigv4_headers_with(kl_arena *a, const struct kl_sigv4_cred *c, const char *method, const char *url,
                             const char *body, size_t len, time_t now, const char *extra, const char *out[3]);

/* The region of an AWS endpoint host ("bedrock-runtime.us-east-1.amazonaws.com",
 * a FIPS or VPC endpoint's too), copied into a; NULL when url names none. */
const char *kl_sigv4_region_of(kl_arena *a, const char *url);

#endif
