/* Answers keyless gives itself, without a provider: the liveness probe,
 * model lists in the three shapes, and the /api/ endpoints. */
#ifndef KL_ADMIN_H
#define KL_ADMIN_H

#include "core/exchange.h"
#include "pipeline.h"

/* GET/HEAD / — Claude Code probes it before its first request. */
enum kl_step kl_admin_root(kl_exchange *ex);
/* Every non-inference endpoint after identity and authorize. */
enum kl_step kl_admin_run(kl_exchange *ex);
/* The methods an /api/ path or /metrics takes, for a 405's Allow header. */
const char *kl_admin_allow(const kl_exchange *ex);
/* GET /api/whoami */
enum kl_step kl_admin_whoami(kl_exchange *ex);
/* GET /api/quotas, POST /api/quotas/refill */
enum kl_step kl_admin_quotas(kl_exchange *ex);
/* GET /api/export: the S3 exporter's status (admins) */
enum kl_step kl_admin_export(kl_exchange *ex);
/* GET /metrics (admins, or {"metrics": true}) */
enum kl_step kl_admin_metrics(kl_exchange *ex);
/* GET /api/usage, /api/requests, /api/requests/{id} (asynchronous) */
enum kl_step kl_admin_records(kl_exchange *ex);

#endif
