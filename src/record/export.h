/* The record exporter (Aperture's `exporters.s3`): a thread that sends the
 * records not exported yet to an S3-compatible bucket every `every`, as
 * zstd-compressed CBOR objects (archive.h), and takes them off the export
 * queue once the bucket has them. With `database.retention.require_export`
 * retention never removes a record still queued; with zero retention a
 * record is removed as soon as it is exported (the bucket is the archive).
 *
 * Objects are named PREFIX + "keyless/" + INSTANCE + "/YYYY/MM/DD/" +
 * FIRST-LAST-EXPORTED ".cbor.zst", the day that of the first record's start
 * (UTC), FIRST, LAST the queue positions it holds (zero-padded) and EXPORTED
 * the export time in Unix ms: no two objects share a name, even from a new
 * or restored store. Delivery is at least once:
 * a gateway stopped between the upload and the dequeue sends those records
 * again (their ids tell the copies apart). On PostgreSQL the gateways
 * sharing the store take turns (an advisory lock), so each record is sent
 * by one of them. */
#ifndef KL_EXPORT_H
#define KL_EXPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "record/store.h"

struct kl_export_cfg {
    const char *endpoint;       /* "https://storage.googleapis.com" (path-style), or NULL for AWS */
    const char *bucket, *region, *access_key_id, *access_secret;
    const char *prefix;         /* object name prefix, "" by default */
    int64_t every_ms;           /* how often queued records are sent (default 60 s) */
    size_t max_records;         /* records per object (default 1,000) */
};

/* The `exporters` section. */
void kl_export_read_config(kl_cfg_ctx *c, const cJSON *v);
/* Whether two snapshots' exporters differ (a restart applies them). */
bool kl_export_cfg_differs(const struct kl_export_cfg *a, const struct kl_export_cfg *b);

struct kl_exporter;
struct kl_store_cfg;
/* Starts the thread for sc->exporter. Takes ownership of store (a
 * connection of its own). With zero retention, records are removed from
 * the store once they are in the bucket. */
struct kl_exporter *kl_exporter_start(struct kl_store *store, const struct kl_store_cfg *sc);
/* A reload's credentials (a rotated secret applies without a restart). */
void kl_exporter_set_credentials(struct kl_exporter *x, const struct kl_export_cfg *cfg);
/* Stops the thread (an upload under way is abandoned: its records stay
 * queued for the next start) and closes its store. */
void kl_exporter_stop(struct kl_exporter *x);

/* What an operator asks of the exporter (GET /api/export). */
struct kl_export_stats {
    uint64_t records;                   /* sent since start */
    uint64_t lost;                      /* removed by retention before they could be sent */
    int64_t last_ok_ms, last_error_ms;  /* the last round that worked, that failed; 0: none yet */
    unsigned failing;                   /* rounds failed in a row */
    long queued;                        /* records waiting after the last round, -1: unknown */
    char last_error[512];
};
void kl_exporter_stats(struct kl_exporter *x, struct kl_export_stats *out);

struct kl_export_counts {
    long sent;                          /* records in the bucket now */
    long lost;                          /* queued, but their rows were gone (retention) */
};
/* One round: send what is queued (objects of max_records) until the queue is
 * empty. 0, or -1 with err (what was sent before the failure stays sent and
 * is counted). */
int kl_export_round(struct kl_store *store, const struct kl_export_cfg *cfg, const char *instance,
                    bool delete_exported, const atomic_bool *stop, struct kl_export_counts *counts, char *err,
                    size_t errlen);

#endif
