/* GET /api/quotas (the caller's buckets; admins: all) and
 * POST /api/quotas/refill {"bucket": "...", "amount": "$5.00"} (admins). */
#include "admin/admin.h"

#include <stdlib.h>
#include <string.h>

#include "admit/admit.h"
#include "admit/buckets.h"
#include "admit/quotas.h"
#include "authorize/authorize.h"
#include "identity/identity.h"
#include "listen/conn.h"

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

static enum kl_step send_buckets(kl_exchange *ex, cJSON *root)
{
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    kl_respond(ex, 200, "application/json", NULL, s, strlen(s));
    cJSON_free(s);
    return KL_DONE;
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
    struct kl_buckets *t = ex->worker->server->buckets;
    const char *name = kl_admit_fit_name(ex, bucket->valuestring); /* as the tables name it */
    int rc = kl_buckets_refill(t, name, amount, kl_wall_ms());
    const struct kl_quota *q = rc < 0 ? kl_quota_for_bucket(ex->cfg->quotas, bucket->valuestring) : NULL;
    /* not used since the gateway started: one spent before (its balance
     * saved), or on PostgreSQL one the pool holds, is made from its quota
     * and refilled; any other is full, and a name nobody uses (a typo) is
     * no bucket to credit */
    if (q && (kl_quota_pooled(ex->cfg) || kl_buckets_saved(t, name))) {
        kl_admit_quota_bucket(ex, q, name);
        rc = kl_buckets_refill(t, name, amount, kl_wall_ms());
    }
    if (rc < 0) {
        enum kl_step st = q ? kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                                      "no bucket named %s is in use or saved (one nobody has used is full)",
                                      bucket->valuestring)
                            : kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND, "no quota defines a bucket named %s",
                                      bucket->valuestring);
        cJSON_Delete(body);
        return st;
    }
    struct names one = {.v = (const char *[]){name}, .n = 1};
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "buckets", kl_buckets_report(ex->worker->server->buckets, listed, &one, kl_wall_ms()));
    cJSON_Delete(body);
    return send_buckets(ex, root);
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
    if (ex->role == KL_ROLE_ADMIN) {
        /* balances saved before a restart, of buckets not used since: made
         * live from their quota, so that the list holds every balance */
        const char **saved;
        size_t n = kl_buckets_saved_names(ex->worker->server->buckets, &ex->arena, &saved);
        for (size_t i = 0; i < n; i++) {
            const struct kl_quota *q = kl_quota_for_bucket(ex->cfg->quotas, saved[i]);
            if (q)
                kl_admit_quota_bucket(ex, q, saved[i]);
        }
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "buckets",
                          kl_buckets_report(ex->worker->server->buckets,
                                            ex->role == KL_ROLE_ADMIN ? NULL : listed, &mine, kl_wall_ms()));
    return send_buckets(ex, root);
}
