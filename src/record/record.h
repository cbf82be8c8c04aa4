/* Stage 9, record: one record per request that reached the gateway —
 * answered, refused, failed, cancelled or interrupted — written by the
 * writer thread to SQLite or PostgreSQL (see writer.h, store.h).
 *
 * Configuration: the keyless `store` section (driver, path/url, captures,
 * queue) and Aperture's `database.retention`. */
#ifndef KL_RECORD_H
#define KL_RECORD_H

#include <stdbool.h>

#include "core/exchange.h"
#include "record/store.h"

enum kl_capture { KL_CAPTURE_NONE, KL_CAPTURE_METADATA, KL_CAPTURE_FULL };

struct kl_store_cfg {
    enum kl_store_driver driver;
    const char *target;         /* SQLite path or PostgreSQL connection URL */
    const char *instance;       /* this gateway's name in shared stores */
    enum kl_capture captures;
    size_t capture_max;         /* bytes of each body kept */
    size_t queue, batch;
    size_t queue_bytes;         /* the queued records' memory, at most (0: no bound) */
    int64_t retention_ms;       /* 0 = forever */
    bool zero_retention;        /* nothing is kept (with an exporter: kept until exported) */
    bool purge_captures_only;
    bool require_export;        /* retention spares records not exported yet */
    const struct kl_export_cfg *exporter;   /* exporters.s3, or NULL */
};

void kl_record_read_store(kl_cfg_ctx *c, const cJSON *v);
/* The first store or retention setting that differs between two snapshots
 * and only a restart applies (the store and its writer are opened once),
 * or NULL. */
const char *kl_record_restart_only(const kl_config *a, const kl_config *b);
void kl_record_read_database(kl_cfg_ctx *c, const cJSON *v);
/* Checks across store, database and exporters, after every section is read. */
void kl_record_check_config(kl_cfg_ctx *c);
/* keyless check: would serve open the store here? Notes go to d. */
void kl_record_probe_store(const struct kl_store_cfg *s, kl_diags *d);

/* Open the store, mark this instance's unfinished records interrupted, and
 * start the writer. -1 with err when the store cannot be used. */
int  kl_record_server_start(kl_server *srv, kl_config *cfg, char *err, size_t errlen);
void kl_record_server_stop(kl_server *srv);
/* After a reload was adopted: what the running threads take from it (the
 * exporter's credentials). */
void kl_record_server_reloaded(kl_server *srv, const kl_config *cfg);
/* Stop the query thread (before workers' mailboxes go away). */
void kl_record_server_stop_queries(kl_server *srv);

/* At arrival: reserve the slot for ex's final record. False: the queue is
 * full, refuse with 503. */
bool kl_record_admit(kl_exchange *ex);
/* Before forwarding: the "in progress" record, written if the exchange is
 * still running 100 ms after it was forwarded. */
void kl_record_begin(kl_exchange *ex);
/* At worker shutdown, after its exchanges are closed. */
void kl_record_worker_free(kl_worker *w);
/* The provider's response headers as relayed ("Name: value" lines), kept
 * for captures. */
void kl_record_response_headers(kl_exchange *ex, const char *headers);
/* At the end: the final record (and the access log line). */
void kl_record_exchange(kl_exchange *ex);

#endif
