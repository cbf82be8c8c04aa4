/* Quota balances survive restarts: the writer thread saves the balances
 * that changed, about once a second and at shutdown; at start-up they are
 * read back and applied when each bucket is first used again (refilled for
 * the time the gateway was down, up to the capacity it was saved with, then
 * clamped to a capacity lowered meanwhile).
 * A balance is saved less what requests in flight have reserved, so after
 * kill -9 they count as having spent it all; only the charges of requests
 * that began within the last second are lost. */
#include "admit/persist.h"

#include <stdio.h>
#include <stdlib.h>

#include "admit/buckets.h"
#include "admit/lease.h"
#include "core/exchange.h"
#include "core/log.h"

void kl_admit_save(struct kl_store *s, void *arg, bool last)
{
    struct kl_buckets *t = arg;
    if (kl_store_driver(s) == KL_STORE_POSTGRES) {
        kl_lease_return(s, t, last); /* at shutdown every lease goes back */
        return;
    }
    char err[256];
    /* The rows of buckets forgotten full go, before the balances that
     * changed are saved: a bucket of the same name made again since is
     * among those (a new bucket is saved), so its row comes back. A delete
     * that fails leaves a row that says full: harmless. */
    char **gone;
    size_t ngone = kl_buckets_forgotten(t, &gone);
    for (size_t i = 0; i < ngone; i++) {
        if (kl_store_exec(s, "DELETE FROM quota_buckets WHERE name = ?", (const char *[]){gone[i]}, 1, NULL, err,
                          sizeof(err)) < 0) {
            kl_warn("forgetting quota balance %s: %s", gone[i], err);
            break;
        }
    }
    free(gone);
    struct kl_bucket_level *v;
    size_t n = kl_buckets_dirty(t, &v);
    for (size_t i = 0; i < n; i++) {
        char level[32], at[32], capacity[32];
        snprintf(level, sizeof(level), "%lld", (long long)v[i].level);
        snprintf(at, sizeof(at), "%lld", (long long)v[i].at_ms);
        snprintf(capacity, sizeof(capacity), "%lld", (long long)v[i].capacity);
        const char *params[] = {v[i].name, level, at, capacity};
        if (kl_store_exec(s,
                          "INSERT INTO quota_buckets (name, level, updated_at, capacity) "
                          "VALUES (?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT)) "
                          "ON CONFLICT (name) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at, "
                          "capacity = excluded.capacity",
                          params, 4, NULL, err, sizeof(err)) < 0) {
            kl_warn("saving quota balance %s: %s", v[i].name, err);
            /* the store failed: these are saved at the next tick, not
             * forgotten until they change again */
            kl_buckets_mark_dirty(t, v + i, n - i);
            break;
        }
    }
    free(v);
}

int kl_admit_load(struct kl_store *s, struct kl_buckets *t, char *err, size_t errlen)
{
    cJSON *rows = NULL;
    if (kl_store_exec(s, "SELECT name, level, updated_at, capacity FROM quota_buckets", NULL, 0, &rows, err,
                      errlen) < 0)
        return -1;
    int64_t now = kl_wall_ms();
    const cJSON *r;
    cJSON_ArrayForEach(r, rows) {
        const cJSON *name = cJSON_GetObjectItem(r, "name");
        const cJSON *capacity = cJSON_GetObjectItem(r, "capacity"); /* null: saved before migration 8 */
        if (cJSON_IsString(name))
            kl_buckets_preload(t, name->valuestring, (int64_t)cJSON_GetObjectItem(r, "level")->valuedouble,
                               (int64_t)cJSON_GetObjectItem(r, "updated_at")->valuedouble,
                               cJSON_IsNumber(capacity) ? (int64_t)capacity->valuedouble : -1, now);
    }
    cJSON_Delete(rows);
    return 0;
}
