/* GET /api/usage, /api/requests and /api/requests/{id}: the records, read
 * on the query thread (never on a worker) and answered when they arrive.
 * Admins see everyone; users see only their own records. */
#include "admin/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authorize/authorize.h"
#include "core/urlquery.h"
#include "identity/identity.h"
#include "listen/conn.h"
#include "record/query.h"
#include "record/report.h"

enum api_kind { API_USAGE, API_LIST, API_ONE };

struct api_job {
    struct kl_query_job job;    /* first: the query thread's view */
    kl_exchange *ex;            /* NULL once the client has gone */
    enum api_kind kind;
    struct kl_report_filter f;
    char group_by[128];
    char id[64];
    char user[256];
    char model[256], provider[128], session[256], error_class[64], before[64];
    cJSON *result;
    int status;                 /* 0 ok, else HTTP error */
    char err[256];
};

static void run(struct kl_store *s, struct kl_query_job *job)
{
    struct api_job *j = (struct api_job *)job;
    int rc = 0;
    switch (j->kind) {
    case API_USAGE:
        rc = kl_report_usage(s, j->group_by, &j->f, &j->result, j->err, sizeof(j->err));
        if (rc < 0 && strstr(j->err, "cannot group by"))
            j->status = 400;
        break;
    case API_LIST:
        rc = kl_report_requests(s, &j->f, false, &j->result, j->err, sizeof(j->err));
        break;
    case API_ONE: {
        const char *params[] = {j->id, j->user};
        cJSON *rows = NULL;
        rc = kl_store_exec(s, j->user[0] ? "SELECT * FROM requests WHERE id = ? AND login = ?"
                                         : "SELECT * FROM requests WHERE id = ?",
                           params, j->user[0] ? 2 : 1, &rows, j->err, sizeof(j->err));
        if (rc == 0 && cJSON_GetArraySize(rows) == 1)
            j->result = cJSON_DetachItemFromArray(rows, 0);
        else if (rc == 0)
            j->status = 404;
        cJSON_Delete(rows);
        break;
    }
    }
    if (rc < 0 && !j->status)
        j->status = 500;
}

static void done(struct kl_query_job *job)
{
    struct api_job *j = (struct api_job *)job;
    kl_exchange *ex = j->ex;
    if (ex) {
        ex->cancel = NULL;
        enum kl_step step = KL_DONE;
        if (j->status == 404) {
            kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no record %s", j->id);
        } else if (j->status == 400) {
            kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "%s", j->err);
        } else if (j->status) {
            kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "the record store failed: %s", j->err);
        } else {
            cJSON *root = cJSON_CreateObject();
            if (j->kind == API_USAGE) {
                cJSON *g = cJSON_AddArrayToObject(root, "group_by");
                char list[128];
                snprintf(list, sizeof(list), "%s", j->group_by);
                for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
                    cJSON_AddItemToArray(g, cJSON_CreateString(t));
                if (j->f.since_ms)
                    cJSON_AddNumberToObject(root, "since", (double)j->f.since_ms);
                if (j->f.until_ms)
                    cJSON_AddNumberToObject(root, "until", (double)j->f.until_ms);
                cJSON_AddItemToObject(root, "rows", j->result);
            } else if (j->kind == API_LIST) {
                int n = cJSON_GetArraySize(j->result);
                cJSON *last = n ? cJSON_GetArrayItem(j->result, n - 1) : NULL;
                int limit = j->f.limit > 0 ? j->f.limit : 50;
                cJSON_AddItemToObject(root, "requests", j->result);
                if (last && n >= limit)
                    cJSON_AddStringToObject(root, "next_before", cJSON_GetObjectItem(last, "id")->valuestring);
                else
                    cJSON_AddNullToObject(root, "next_before");
            } else {
                cJSON_Delete(root);
                root = j->result;
            }
            j->result = NULL;
            char *out = cJSON_PrintUnformatted(root);
            cJSON_Delete(root);
            kl_respond(ex, 200, "application/json", NULL, out, strlen(out));
            cJSON_free(out);
        }
        kl_pipeline_continue(ex, step);
    }
    cJSON_Delete(j->result);
    free(j);
}

static void cancel(kl_exchange *ex)
{
    struct api_job *j = ex->api_job;
    if (j)
        j->ex = NULL;
    ex->api_job = NULL;
}

static void copy(char *dst, size_t n, const char *src)
{
    if (src)
        snprintf(dst, n, "%s", src);
}

enum kl_step kl_admin_records(kl_exchange *ex)
{
    struct kl_query *q = ex->worker->server->query;
    if (!q)
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                       "no records are kept (database.retention.duration is \"0\")");
    if (ex->role == KL_ROLE_NONE)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "access denied: no role granted");
    if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
        return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use GET on %s", ex->req.path);
    struct api_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    const char *path = ex->req.path, *qs = ex->req.query;
    kl_arena *a = &ex->arena;
    int64_t now = kl_wall_ms();
    const char *since = kl_query_param(a, qs, "since"), *until = kl_query_param(a, qs, "until");
    if ((since && kl_parse_time(since, now, &j->f.since_ms) < 0) ||
        (until && kl_parse_time(until, now, &j->f.until_ms) < 0)) {
        free(j);
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST,
                       "since/until take \"24h\", \"7d\", \"2026-11-01\", \"2026-11-01T12:00:00Z\" or Unix ms");
    }
    /* Users see their own records, whatever they ask for. */
    const char *user = ex->role == KL_ROLE_ADMIN ? kl_query_param(a, qs, "user") : ex->ident->login;
    copy(j->user, sizeof(j->user), user);
    copy(j->model, sizeof(j->model), kl_query_param(a, qs, "model"));
    copy(j->provider, sizeof(j->provider), kl_query_param(a, qs, "provider"));
    copy(j->session, sizeof(j->session), kl_query_param(a, qs, "session"));
    copy(j->error_class, sizeof(j->error_class), kl_query_param(a, qs, "error_class"));
    copy(j->before, sizeof(j->before), kl_query_param(a, qs, "before"));
    j->f.user = j->user[0] ? j->user : NULL;
    j->f.model = j->model[0] ? j->model : NULL;
    j->f.provider = j->provider[0] ? j->provider : NULL;
    j->f.session = j->session[0] ? j->session : NULL;
    j->f.error_class = j->error_class[0] ? j->error_class : NULL;
    j->f.before_id = j->before[0] ? j->before : NULL;
    const char *status = kl_query_param(a, qs, "status");
    j->f.status = status ? atoi(status) : 0;
    const char *limit = kl_query_param(a, qs, "limit");
    j->f.limit = limit ? atoi(limit) : 0;
    if (strcmp(path, "/api/usage") == 0) {
        j->kind = API_USAGE;
        const char *g = kl_query_param(a, qs, "group_by");
        copy(j->group_by, sizeof(j->group_by), g ? g : "user,model");
    } else if (strcmp(path, "/api/requests") == 0) {
        j->kind = API_LIST;
    } else if (strncmp(path, "/api/requests/", 14) == 0 && path[14] && strlen(path + 14) < sizeof(j->id)) {
        j->kind = API_ONE;
        copy(j->id, sizeof(j->id), path + 14);
    } else {
        free(j);
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no such endpoint: %s", path);
    }
    j->ex = ex;
    j->job.w = ex->worker;
    j->job.run = run;
    j->job.done = done;
    ex->api_job = j;
    ex->cancel = cancel;
    kl_query_submit(q, &j->job);
    return KL_WAIT;
}
