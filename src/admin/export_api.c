/* GET /api/export (admins): is the archive being written? The S3
 * exporter's counters, its last success and its last error. */
#include "admin/admin.h"

#include <string.h>

#include "authorize/authorize.h"
#include "listen/conn.h"
#include "record/export.h"
#include "record/record.h"

static void add_time(cJSON *o, const char *name, int64_t ms)
{
    if (ms)
        cJSON_AddNumberToObject(o, name, (double)ms);
    else
        cJSON_AddNullToObject(o, name);
}

enum kl_step kl_admin_export(kl_exchange *ex)
{
    if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
        return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use GET on /api/export");
    if (ex->role != KL_ROLE_ADMIN)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "the export status needs the admin role");
    const struct kl_export_cfg *e = ex->cfg->store->exporter;
    struct kl_exporter *x = ex->worker->server->exporter;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddBoolToObject(root, "configured", e != NULL && x != NULL);
    if (e && x) {
        struct kl_export_stats st;
        kl_exporter_stats(x, &st);
        cJSON_AddStringToObject(root, "bucket", e->bucket);
        if (e->endpoint)
            cJSON_AddStringToObject(root, "endpoint", e->endpoint);
        cJSON_AddStringToObject(root, "prefix", e->prefix);
        cJSON_AddNumberToObject(root, "every_ms", (double)e->every_ms);
        cJSON_AddNumberToObject(root, "records_exported", (double)st.records);
        cJSON_AddNumberToObject(root, "records_lost", (double)st.lost);
        if (st.queued >= 0)
            cJSON_AddNumberToObject(root, "queued", (double)st.queued);
        else
            cJSON_AddNullToObject(root, "queued");
        add_time(root, "last_success_at", st.last_ok_ms);
        add_time(root, "last_error_at", st.last_error_ms);
        if (st.last_error[0])
            cJSON_AddStringToObject(root, "last_error", st.last_error);
        else
            cJSON_AddNullToObject(root, "last_error");
        cJSON_AddNumberToObject(root, "failing_rounds", st.failing);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    kl_respond(ex, 200, "application/json", NULL, s, strlen(s));
    cJSON_free(s);
    return KL_DONE;
}
