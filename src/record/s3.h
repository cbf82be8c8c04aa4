/* One object PUT to an S3-compatible bucket, signed with AWS Signature
 * Version 4 (libcurl's CURLOPT_AWS_SIGV4; the payload's SHA-256 is sent as
 * x-amz-content-sha256, which S3 requires and signs). Blocking: it runs on
 * the exporter's thread, never on a worker. */
#ifndef KL_S3_H
#define KL_S3_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct kl_export_cfg;

/* The object's URL: path-style under `endpoint` when one is set (MinIO,
 * Google Cloud Storage, ...), else AWS's virtual-hosted
 * https://BUCKET.s3.REGION.amazonaws.com/KEY. malloc'd. */
char *kl_s3_url(const struct kl_export_cfg *e, const char *key);

/* 0 when the bucket answered 2xx; -1 with err (S3's own error code and
 * message when it sent one; never a credential). The transfer gives up
 * when *stop becomes true. */
int kl_s3_put(const struct kl_export_cfg *e, const char *key, const void *data, size_t len,
              const atomic_bool *stop, char *err, size_t errlen);

#endif
