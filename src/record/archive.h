/* An export object: records as one CBOR document, zstd-compressed, the
 * format Aperture's S3 exporter also writes (CBOR in zstd). The document:
 *
 *   {"format": "keyless.records", "version": 1, "instance": "gw-1",
 *    "exported_at": <Unix ms>, "records": [{<column>: <value>, ...}, ...]}
 *
 * with one map per record, keyed by the requests table's column names (the
 * names /api/requests uses): integers as CBOR integers, text as text
 * strings, captured bodies as text (as the records API shows them), NULL as
 * null. */
#ifndef KL_ARCHIVE_H
#define KL_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* The CBOR document for rows (a JSON array of objects, as kl_store_exec
 * returns them). malloc'd; *len set. */
unsigned char *kl_archive_cbor(const cJSON *rows, const char *instance, int64_t exported_at, size_t *len);

/* data compressed as one zstd frame; malloc'd, NULL on failure. */
unsigned char *kl_archive_zstd(const unsigned char *data, size_t len, size_t *out_len);

#endif
