/* GET /api/usage, /api/requests and /api/requests/{id}: the records, read
 * on the query thread (never on a worker) and answered when they arrive.
 * Admins see everyone; users see only their own records. */
#include "admin/admin.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authorize/authorize.h"
#include "core/log.h"
#include "core/text.h"
#include "core/urlquery.h"
#include "identity/identity.h"
#include "listen/conn.h"
#include "record/query.h"
#include "record/record.h"
#include "record/report.h"

enum api_kind { API_USAGE, API_LIST, API_ONE };

/* The most rows one /api/usage answer holds: a report grouped by session
 * over months could otherwise be millions of rows, gigabytes built in
 * memory at once for one caller (keyless usage, the CLI, has no limit). */
#define KL_API_MAX_GROUPS 10000

struct api_job {
    struct kl_query_job job;    /* first: the query thread's view */
    enum api_kind kind;
    kl_arena arena;             /* the job's own copies of its parameters */
    struct kl_report_filter f;
    bool own_only;              /* a user, not an admin: f.user is the caller's login, always applied */
    bool truncated;             /* usage: more groups than KL_API_MAX_GROUPS */
    const char *group_by, *id;
    cJSON *result;
    int status;                 /* 0 ok, else HTTP error */
    char err[256];
};

/* A row's failover attempts and guardrail notes are stored as JSON text;
 * the API gives them as the arrays they are. */
static void decode_json_columns(cJSON *row)
{
    static const char *const names[] = {"attempts", "guardrails"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        cJSON *a = cJSON_GetObjectItemCaseSensitive(row, names[i]);
        cJSON *v = cJSON_IsString(a) ? cJSON_Parse(a->valuestring) : NULL;
        if (v)
            cJSON_ReplaceItemInObjectCaseSensitive(row, names[i], v);
    }
}

static void run(struct kl_store *s, struct kl_query_job *job)
{
    struct api_job *j = (struct api_job *)job;
    int rc = 0;
    switch (j->kind) {
    case API_USAGE:
        rc = kl_report_usage(s, j->group_by, &j->f, KL_API_MAX_GROUPS, &j->result, &j->truncated, j->err,
                             sizeof(j->err));
        if (rc < 0 && strstr(j->err, "cannot group by"))
            j->status = 400;
        break;
    case API_LIST:
        rc = kl_report_requests(s, &j->f, false, &j->result, j->err, sizeof(j->err));
        break;
    case API_ONE: {
        const char *params[] = {j->id, j->f.user};
        cJSON *rows = NULL;
        rc = kl_store_exec(s, j->own_only ? "SELECT * FROM requests WHERE id = ? AND login = ?"
                                          : "SELECT * FROM requests WHERE id = ?",
                           params, j->own_only ? 2 : 1, &rows, j->err, sizeof(j->err));
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
    if (j->kind == API_ONE && j->result) {
        decode_json_columns(j->result);
    } else if (j->kind == API_LIST && j->result) {
        cJSON *row;
        cJSON_ArrayForEach(row, j->result)
            decode_json_columns(row);
    }
}

static void job_free(struct api_job *j)
{
    cJSON_Delete(j->result);
    kl_arena_free(&j->arena);
    free(j);
}

/* Answers up to this size go out uncounted, as any small answer does: a
 * page of a few records is still served while bodies fill the memory (to
 * see which requests were refused for it). */
#define KL_API_UNCOUNTED (64u << 10)

/* An answer (up to ~10 MB for 1,000 rows) waits in its connection's output
 * until the client reads it, for up to timeouts.send: many connections
 * that ask and never read would hold a page each. So a large one is
 * counted with the request bodies and held answers (listen.max_body_memory)
 * until it is written, and refused with 503 when this worker's share has
 * no room for it. One record is the exception when it is larger than the
 * whole share (its captures, each up to store.capture_max, with JSON's
 * escapes up to six times their bytes): it could never be read, and a
 * caller could make its own record so, so it goes out when the worker
 * holds nothing else, one at a time (503 with Retry-After otherwise).
 * out (cJSON's, i.e. malloc's) is taken. */
static void send_page(kl_exchange *ex, char *out, enum api_kind kind)
{
    size_t len = strlen(out), charged = 0, share = kl_body_memory(ex->worker);
    /* a HEAD's answer is its head alone: the page is freed here, never held */
    if (len <= KL_API_UNCOUNTED || strcmp(ex->req.method, "HEAD") == 0) {
        kl_respond(ex, 200, "application/json", NULL, out, len);
        cJSON_free(out);
        return;
    }
    /* body_bytes is written on this thread only: nothing comes between
     * the look and the charge */
    bool alone = kind == API_ONE && len > share &&
                 atomic_load_explicit(&ex->worker->body_bytes, memory_order_relaxed) == 0;
    if (!kl_exchange_charge(ex, &charged, len, alone ? 0 : share)) {
        cJSON_free(out);
        if (len > share && kind != API_ONE) {
            ex->fail_retry = -1; /* it will not fit later either */
            kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "the answer (%zu bytes) is larger than this worker's "
                    "share of listen.max_body_memory (%zu bytes)%s", len, share,
                    kind == API_LIST ? "; ask for fewer records (limit)"
                                     : "; narrow the range (since, until), the filters or the grouping (group_by)");
            return;
        }
        kl_body_memory_full(ex->worker);
        ex->fail_retry = 1;
        kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "the gateway holds as many request bodies and answers as "
                "it has memory for (listen.max_body_memory); try again shortly");
        return;
    }
    kl_respond_start(ex, 200, "Content-Type: application/json\r\n", (int64_t)len);
    kl_respond_give(ex, out, len, charged);
}

static void done(struct kl_query_job *job)
{
    struct api_job *j = (struct api_job *)job;
    kl_exchange *ex = kl_query_waiter(job);
    if (ex) {
        enum kl_step step = KL_DONE;
        if (j->status == 404) {
            kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no record %s", j->id);
        } else if (j->status == 400) {
            kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "%s", j->err);
        } else if (j->status) {
            /* the store's own message (SQL, server names) goes to the log, not the caller */
            kl_error("%s: record store query failed: %s", ex->id, j->err);
            kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "the record store failed (request %s in the gateway log)", ex->id);
        } else {
            cJSON *root = cJSON_CreateObject();
            if (j->kind == API_USAGE) {
                cJSON *g = cJSON_AddArrayToObject(root, "group_by");
                char *list = kl_arena_strdup(&j->arena, j->group_by);
                for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
                    cJSON_AddItemToArray(g, cJSON_CreateString(t));
                /* null for an open end, so a reader finds both keys */
                if (j->f.has_since)
                    cJSON_AddNumberToObject(root, "since", (double)j->f.since_ms);
                else
                    cJSON_AddNullToObject(root, "since");
                if (j->f.has_until)
                    cJSON_AddNumberToObject(root, "until", (double)j->f.until_ms);
                else
                    cJSON_AddNullToObject(root, "until");
                cJSON_AddItemToObject(root, "rows", j->result);
                cJSON_AddBoolToObject(root, "truncated", j->truncated);
            } else if (j->kind == API_LIST) {
                int n = cJSON_GetArraySize(j->result);
                cJSON *last = n ? cJSON_GetArrayItem(j->result, n - 1) : NULL;
                cJSON_AddItemToObject(root, "requests", j->result);
                if (last && n >= j->f.limit)
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
            send_page(ex, out, j->kind);
        }
        kl_pipeline_continue(ex, step);
    }
    job_free(j);
}

/* A query parameter, copied for the job (the exchange may go before the
 * job is done); NULL when absent or empty. */
static const char *param(struct api_job *j, kl_arena *a, const char *qs, const char *name)
{
    const char *v = kl_query_param(a, qs, name);
    return v && *v ? kl_arena_strdup(&j->arena, v) : NULL;
}

/* Records hold UTF-8 only (kl_rec_pack); PostgreSQL refuses to compare
 * with anything else. */
static bool utf8(const char *s)
{
    return !s || kl_utf8_clean_len(s) == strlen(s);
}

/* A whole decimal number in [min, max], digits only (no sign, no
 * blank): 0, with *out set, or -1. */
static int parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return -1;
    long v = strtol(s, &end, 10);
    if (errno || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* The filters of a request, or a message saying which one is wrong. */
static const char *read_filters(struct api_job *j, kl_exchange *ex)
{
    const char *qs = ex->req.query;
    kl_arena *a = &ex->arena;
    int64_t now = kl_wall_ms();
    static const char *const names[] = {"since", "until", "user", "model", "provider", "session", "error_class",
                                        "before", "status", "limit", "group_by"};
    const char *twice = kl_query_repeated(qs, names, sizeof(names) / sizeof(names[0]));
    if (twice)
        return kl_arena_printf(a, "%s is given twice", twice);
    const char *since = kl_query_param(a, qs, "since"), *until = kl_query_param(a, qs, "until");
    if ((since && kl_parse_time(since, now, &j->f.since_ms) < 0) ||
        (until && kl_parse_time(until, now, &j->f.until_ms) < 0))
        return "since/until take \"24h\", \"7d\", \"2026-11-01\", \"2026-11-01T12:00:00Z\" or Unix ms";
    j->f.has_since = since != NULL;
    j->f.has_until = until != NULL;
    if (since && until && j->f.since_ms >= j->f.until_ms)
        return "since must be before until";
    /* Users see their own records, whatever they ask for. */
    j->own_only = ex->role != KL_ROLE_ADMIN;
    j->f.user = j->own_only ? kl_arena_strdup(&j->arena, ex->ident->login) : param(j, a, qs, "user");
    j->f.model = param(j, a, qs, "model");
    j->f.provider = param(j, a, qs, "provider");
    j->f.session = param(j, a, qs, "session");
    j->f.error_class = param(j, a, qs, "error_class");
    j->f.before_id = param(j, a, qs, "before");
    if (!utf8(j->f.user) || !utf8(j->f.model) || !utf8(j->f.provider) || !utf8(j->f.session) ||
        !utf8(j->f.error_class))
        return "filters must be UTF-8 text";
    if (j->f.before_id && (strlen(j->f.before_id) > 36 || strspn(j->f.before_id, "0123456789abcdef-") !=
                                                             strlen(j->f.before_id)))
        return "before takes a request id (next_before of the previous page)";
    const char *status = kl_query_param(a, qs, "status"), *limit = kl_query_param(a, qs, "limit");
    long v = 0;
    if (status && parse_int(status, 100, 599, &v) < 0)
        return "status takes an HTTP status, 100 to 599";
    j->f.status = (int)v;
    v = 50;
    if (limit && parse_int(limit, 1, 1000000, &v) < 0)
        return "limit takes a positive whole number (at most 1000 are returned)";
    j->f.limit = v > 1000 ? 1000 : (int)v;
    return NULL;
}

enum kl_step kl_admin_records(kl_exchange *ex)
{
    struct kl_query *q = ex->worker->server->query;
    if (!q || ex->cfg->store->zero_retention)
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                       "no records are kept (database.retention.duration is \"0\")");
    if (ex->role == KL_ROLE_NONE)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "access denied: no role granted");
    if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
        return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use GET on %s", ex->req.path);
    const char *path = ex->req.path;
    enum api_kind kind;
    if (strcmp(path, "/api/usage") == 0)
        kind = API_USAGE;
    else if (strcmp(path, "/api/requests") == 0)
        kind = API_LIST;
    else if (strncmp(path, "/api/requests/", 14) == 0 && path[14] && strlen(path + 14) <= 64)
        kind = API_ONE;
    else
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no such endpoint: %s", path);
    struct api_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    kl_arena_init(&j->arena);
    j->kind = kind;
    const char *bad = read_filters(j, ex);
    if (!bad && kind == API_USAGE) {
        j->f.before_id = NULL; /* pages are /api/requests' (docs/api.md) */
        const char *g = kl_query_param(&ex->arena, ex->req.query, "group_by");
        j->group_by = kl_arena_strdup(&j->arena, g ? g : "user,model");
        if (!utf8(j->group_by))
            bad = "group_by must be UTF-8 text";
        else if (kl_report_check_group_by(j->group_by, j->err, sizeof(j->err)) < 0)
            bad = j->err;
    }
    if (bad) {
        enum kl_step step = kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "%s", bad);
        job_free(j);
        return step;
    }
    if (kind == API_ONE && !utf8(path + 14)) {
        enum kl_step step = kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no such record");
        job_free(j);
        return step;
    }
    if (kind == API_ONE)
        j->id = kl_arena_strdup(&j->arena, path + 14);
    j->job.run = run;
    j->job.done = done;
    kl_query_wait(q, &j->job, ex);
    return KL_WAIT;
}
