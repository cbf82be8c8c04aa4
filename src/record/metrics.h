/* Prometheus metrics (GET /metrics): the records summed in memory as the
 * exchanges end, so a scrape reads no database.
 *
 * Each worker keeps its own counters and writes them alone: a counter is a
 * relaxed atomic updated by load + store (one writer, so no locked
 * instruction on the request path), read by whichever worker answers the
 * scrape and summed over all. A worker's series list grows under its own
 * mutex, which the scrape takes to walk it. Label values come from the
 * configuration (provider ids, the model ids providers list), the endpoint
 * table, status codes and error classes, never from free text a caller
 * sent, so the number of series stays bounded. */
#ifndef KL_METRICS_H
#define KL_METRICS_H

#include "core/buf.h"
#include "core/exchange.h"
#include "core/worker.h"

struct kl_metrics;

struct kl_metrics *kl_metrics_new(void);
void kl_metrics_free(struct kl_metrics *m);

/* Count an exchange as it ends (its record says the same). */
void kl_metrics_exchange(const kl_exchange *ex);
/* A request failed over from this provider (route/failover.c). */
void kl_metrics_failover(kl_worker *w, const char *provider);

/* Every worker's counters summed, with the writer's and the exporter's, in
 * the Prometheus text format (version 0.0.4), appended to out. */
void kl_metrics_write(kl_server *srv, struct kl_buf *out);

#endif
