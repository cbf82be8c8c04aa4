/* GET /api/quotas (the caller's buckets; admins: all) and
 * POST /api/quotas/refill {"bucket": "...", "amount": "$5.00"} (admins). */
#include "admin/admin.h"

#include <stdlib.h>
#include <string.h>

#include "admit/admit.h"
#include "admit/buckets.h"
#include "admit/lease.h"
#include "admit/quotas.h"
#include "authorize/authorize.h"
#include "identity/identity.h"
#include "listen/conn.h"
#include "record/query.h"

struct names {
    const char **v;
    size_t n, cap;
    kl_arena *arena;
};

static bool listed(void *arg, const char *name)
{
    const struct names *ns = arg;
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], name) == 0)
            return true;
    return false;
}

static void add_name(void *arg, const char *name)
{
    struct names *ns = arg;
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 8;
        const char **v = kl_arena_alloc(ns->arena, ns->cap * sizeof(char *));
        if (ns->n)
            memcpy(v, ns->v, ns->n * sizeof(char *));
        ns->v = v;
    }
    ns->v[ns->n++] = name;
}

/* The expanded names of the quota buckets the caller's grants name (made to
 * exist, so an unused, full bucket is shown too). */
static struct names callers_buckets(kl_exchange *ex)
{
    struct names ns = {.arena = &ex->arena};
    kl_admit_each_dollar_bucket(ex, NULL, add_name, &ns);
    return ns;
}

/* A pooled dollar bucket as the gateways share it: "pool" is what the
 * pool holds (its capacity when no gateway has leased from it yet),
 * "leased" what this gateway holds of it, and "current" the two together.
 * Other gateways' leases are not seen; they go back to the pool once idle. */
static void add_pool(kl_exchange *ex, cJSON *list, const cJSON *pool)
{
    cJSON *b;
    cJSON_ArrayForEach(b, list) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(b, "bucket"));
        if (!name || !kl_quota_for_bucket(ex->cfg->quotas, name))
            continue; /* a rate limit: each gateway's own */
        double capacity = cJSON_GetNumberValue(cJSON_GetObjectItem(b, "capacity"));
        double leased = cJSON_GetNumberValue(cJSON_GetObjectItem(b, "current"));
        double reserved = cJSON_GetNumberValue(cJSON_GetObjectItem(b, "reserved"));
        double in_pool = capacity;
        const cJSON *row;
        cJSON_ArrayForEach(row, pool) {
            const char *n = cJSON_GetStringValue(cJSON_GetObjectItem(row, "name"));
            if (n && strcmp(n, name) == 0)
                in_pool = cJSON_GetNumberValue(cJSON_GetObjectItem(row, "lvl"));
        }
        /* the two never pass the capacity, but are read at two moments */
        double current = in_pool + leased < capacity ? in_pool + leased : capacity;
        cJSON_ReplaceItemInObject(b, "current", cJSON_CreateNumber(current));
        cJSON_ReplaceItemInObject(b, "available", cJSON_CreateNumber(current - reserved));
        cJSON_AddNumberToObject(b, "pool", in_pool);
        cJSON_AddNumberToObject(b, "leased", leased);
    }
}

/* For an admin's list: a balance saved before a restart is shown as the
 * quota its name fits would have it (kl_buckets_report), not made live. */
static bool saved_spec(void *arg, const char *name, struct kl_bucket_spec *out)
{
    kl_exchange *ex = arg;
    const struct kl_quota *q = kl_quota_for_bucket(ex->cfg->quotas, name);
    if (q)
        kl_admit_quota_spec(ex, q, name, out);
    return q != NULL;
}

static enum kl_step send_buckets(kl_exchange *ex, const struct names *only, const cJSON *pool)
{
    cJSON *root = cJSON_CreateObject();
    struct kl_buckets *t = ex->worker->server->buckets;
    cJSON *list = only ? kl_buckets_report(t, listed, NULL, (void *)only, kl_wall_ms())
                       : kl_buckets_report(t, NULL, ex->role == KL_ROLE_ADMIN ? saved_spec : NULL, ex, kl_wall_ms());
    if (pool)
        add_pool(ex, list, pool);
    cJSON_AddItemToObject(root, "buckets", list);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    kl_respond(ex, 200, "application/json", NULL, s, strlen(s));
    cJSON_free(s);
    return KL_DONE;
}

/* A read of the PostgreSQL pool for /api/quotas: the names it asks for
 * are its own copies, since the exchange may go before the query runs. */
struct quota_job {
    struct kl_query_job job;    /* first */
    kl_arena arena;
    struct names only;          /* the buckets shown; all when all */
    bool all;
    int64_t credit;             /* > 0: a refill of the one bucket in only, credited to the pool */
    cJSON *rows;
    char err[256];
};

static void pool_run(struct kl_store *s, struct kl_query_job *job)
{
    struct quota_job *j = (struct quota_job *)job;
    int rc = j->credit > 0 ? kl_lease_pool_credit(s, j->only.v[0], j->credit, &j->rows, j->err, sizeof(j->err))
                           : kl_lease_pool_levels(s, j->all ? NULL : j->only.v, j->all ? 0 : j->only.n, &j->rows,
                                                  j->err, sizeof(j->err));
    if (rc < 0) {
        cJSON_Delete(j->rows);
        j->rows = NULL;
    }
}

static void pool_done(struct kl_query_job *job)
{
    struct quota_job *j = (struct quota_job *)job;
    kl_exchange *ex = kl_query_waiter(job);
    if (ex) {
        enum kl_step step;
        if (!j->rows) {
            /* the database's own message goes to the log, not the caller */
            kl_error("%s: reading the quota pool failed: %s", ex->id, j->err);
            step = kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                           "the quota pool in PostgreSQL could not be read (request %s in the gateway log)", ex->id);
        } else if (j->credit > 0 && cJSON_GetArraySize(j->rows) == 0) {
            step = kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no gateway has used a bucket named %s (one "
                           "nobody has used is full)", j->only.v[0]);
        } else {
            if (j->all || j->credit > 0) { /* buckets other gateways use, which this one has not seen */
                const cJSON *row;
                cJSON_ArrayForEach(row, j->rows) {
                    const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(row, "name"));
                    const struct kl_quota *q = name ? kl_quota_for_bucket(ex->cfg->quotas, name) : NULL;
                    if (q)
                        kl_admit_quota_bucket(ex, q, name);
                }
            }
            step = send_buckets(ex, j->all ? NULL : &j->only, j->rows);
        }
        kl_pipeline_continue(ex, step);
    }
    cJSON_Delete(j->rows);
    kl_arena_free(&j->arena);
    free(j);
}

/* The buckets named in only (all of them when it is NULL) as the caller's
 * answer. With quotas shared through PostgreSQL, a dollar bucket's level
 * here is only this gateway's lease: the pool is read first, on the
 * leases' thread, for what is left of it; a refill (credit) is made there
 * too, where every gateway sees it. */
static enum kl_step report(kl_exchange *ex, const struct names *only, int64_t credit)
{
    if (!kl_quota_pooled(ex->cfg) || (only && only->n == 0))
        return send_buckets(ex, only, NULL);
    struct quota_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    kl_arena_init(&j->arena);
    j->all = !only;
    j->credit = credit;
    j->only.arena = &j->arena;
    for (size_t i = 0; only && i < only->n; i++)
        add_name(&j->only, kl_arena_strdup(&j->arena, only->v[i]));
    j->job.run = pool_run;
    j->job.done = pool_done;
    j->job.always = credit > 0; /* a refill asked for is made, whether or not its caller waits */
    kl_server *srv = ex->worker->server;
    kl_query_wait(srv->leases ? srv->leases : srv->query, &j->job, ex);
    return KL_WAIT;
}

static enum kl_step refill(kl_exchange *ex)
{
    if (ex->role != KL_ROLE_ADMIN)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "refilling quotas needs the admin role");
    cJSON *body = ex->body ? cJSON_ParseWithLength(ex->body, ex->body_len) : NULL;
    const cJSON *bucket = cJSON_GetObjectItemCaseSensitive(body, "bucket");
    int64_t amount = 0;
    if (!cJSON_IsString(bucket) || kl_parse_dollars(cJSON_GetObjectItemCaseSensitive(body, "amount"), &amount) < 0 ||
        amount <= 0) {
        cJSON_Delete(body);
        return kl_fail(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST,
                       "body must be {\"bucket\": \"name\", \"amount\": \"$5.00\"}");
    }
    /* as the tables name it, in the arena: the body goes before the answer */
    const char *given = kl_arena_strdup(&ex->arena, bucket->valuestring);
    const char *name = kl_admit_fit_name(ex, given);
    const struct kl_quota *q = kl_quota_for_bucket(ex->cfg->quotas, given);
    cJSON_Delete(body);
    /* a rate limit's bucket (requests, tokens, calls) is no dollar quota */
    if (!q)
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no quota defines a bucket named %s", given);
    struct names one = {.v = (const char *[]){name}, .n = 1};
    /* a shared dollar bucket is credited in the pool, where every gateway
     * sees it (and a name no gateway has used is no bucket to credit) */
    if (kl_quota_pooled(ex->cfg))
        return report(ex, &one, amount);
    struct kl_buckets *t = ex->worker->server->buckets;
    int rc = kl_buckets_refill(t, name, amount, kl_wall_ms());
    /* not used since the gateway started: one spent before (its balance
     * saved) is made from its quota and refilled; any other is full, and a
     * name nobody uses (a typo) is no bucket to credit */
    if (rc < 0 && kl_buckets_saved(t, name)) {
        kl_admit_quota_bucket(ex, q, name);
        rc = kl_buckets_refill(t, name, amount, kl_wall_ms());
    }
    if (rc < 0)
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                       "no bucket named %s is in use or saved (one nobody has used lately is full)", given);
    return report(ex, &one, 0);
}

const char *kl_admin_allow(const kl_exchange *ex)
{
    return ex->ep->id == KL_EP_ADMIN && strcmp(ex->req.path, "/api/quotas/refill") == 0 ? "POST" : "GET, HEAD";
}

enum kl_step kl_admin_quotas(kl_exchange *ex)
{
    if (strcmp(ex->req.path, "/api/quotas/refill") == 0) {
        if (strcmp(ex->req.method, "POST") != 0)
            return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use POST on /api/quotas/refill");
        return refill(ex);
    }
    if (strcmp(ex->req.method, "GET") != 0 && strcmp(ex->req.method, "HEAD") != 0)
        return kl_fail(ex, KL_ERR_METHOD, KL_EC_METHOD, "use GET on /api/quotas");
    if (ex->role == KL_ROLE_NONE)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "access denied: no role granted");
    struct names mine = callers_buckets(ex);
    return report(ex, ex->role == KL_ROLE_ADMIN ? NULL : &mine, 0);
}
