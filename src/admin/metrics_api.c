/* GET /metrics: Prometheus's text format, for admins and for callers whose
 * grants hold the keyless capability {"metrics": true} (a scraper needs no
 * role, so it cannot read records or use models). Counters only: no login,
 * node or bucket names (record/metrics.h). */
#include "admin/admin.h"

#include <stdlib.h>
#include <string.h>

#include "authorize/authorize.h"
#include "core/buf.h"
#include "listen/conn.h"
#include "record/metrics.h"

static bool may_scrape(const kl_exchange *ex)
{
    if (ex->role == KL_ROLE_ADMIN)
        return true;
    const struct kl_grant_set *s = ex->grant_set;
    for (size_t i = 0; s && i < s->ncaps; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s->caps[i].cap->raw, "metrics")))
            return true;
    return false;
}

enum kl_step kl_admin_metrics(kl_exchange *ex)
{
    if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
        return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use GET on /metrics");
    if (!may_scrape(ex))
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                       "/metrics needs the admin role or the capability {\"metrics\": true}");
    struct kl_buf out = {0};
    kl_metrics_write(ex->worker->server, &out);
    kl_respond(ex, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, out.p ? out.p : "", out.len);
    free(out.p);
    return KL_DONE;
}
