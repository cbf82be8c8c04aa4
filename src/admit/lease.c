#include "admit/lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admit/buckets.h"
#include "core/buf.h"
#include "core/log.h"
#include "record/query.h"

#define KL_LEASE_MAX 16
/* A lease is a slice of the bucket (or the request's need, if larger), so a
 * busy gateway asks the database about once per slice, and a crashed one
 * strands at most one slice per bucket. */
#define KL_LEASE_SLICES 8
/* Unused leases go back after this long without activity. */
#define KL_LEASE_IDLE_MS 2000

struct lease_item {
    struct kl_bucket_spec spec;
    char name[KL_BUCKET_NAME_MAX + 1];
    int64_t need, want, granted, pool_level;
};

struct lease_job {
    struct kl_query_job job;    /* first */
    struct lease_item item[KL_LEASE_MAX];
    size_t n;
    bool ok;
    int64_t retry_after_s;
    void (*done)(kl_exchange *ex, bool ok, int64_t retry_after_s);
    char err[256];
};

static void num(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%lld", (long long)v);
}

/* One atomic statement: create the pool row full if it is new, apply the
 * refill since it was last touched (in numeric, clamped to the capacity
 * before it is a BIGINT again: no overflow after a long idle), and take between
 * need and want if the balance allows. No row back = not enough. */
static int take(struct kl_store *s, struct lease_item *it, int64_t now, char *err, size_t errlen)
{
    char cap[24], rate[24], period[24], nowb[24], need[24], want[24];
    num(cap, sizeof(cap), it->spec.capacity);
    num(rate, sizeof(rate), it->spec.rate_amount);
    num(period, sizeof(period), it->spec.rate_period_ms);
    num(nowb, sizeof(nowb), now);
    num(need, sizeof(need), it->need);
    num(want, sizeof(want), it->want);
    if (kl_store_exec(s,
                      "INSERT INTO quota_pool (name, level, capacity, rate_amount, rate_period_ms, updated_at) "
                      "VALUES (?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), "
                      "CAST(? AS BIGINT)) ON CONFLICT (name) DO NOTHING",
                      (const char *[]){it->name, cap, cap, rate, period, nowb}, 6, NULL, err, errlen) < 0)
        return -1;
    cJSON *rows = NULL;
    if (kl_store_exec(s,
                      "WITH cur AS (SELECT name, CAST(LEAST(CAST(? AS numeric), level + CASE WHEN rate_period_ms > 0 THEN "
                      "  ((CAST(? AS BIGINT) - updated_at)::numeric * rate_amount) / rate_period_ms "
                      "  ELSE 0 END) AS BIGINT) AS lvl, CAST(? AS BIGINT) AS r, CAST(? AS BIGINT) AS p "
                      "  FROM quota_pool WHERE name = ? FOR UPDATE) "
                      "UPDATE quota_pool q SET level = cur.lvl - LEAST(cur.lvl, CAST(? AS BIGINT)), "
                      "  updated_at = CAST(? AS BIGINT), "
                      "  capacity = CAST(? AS BIGINT), rate_amount = cur.r, rate_period_ms = cur.p "
                      "FROM cur WHERE q.name = cur.name AND cur.lvl >= CAST(? AS BIGINT) "
                      "RETURNING LEAST(cur.lvl, CAST(? AS BIGINT)) AS granted",
                      (const char *[]){cap, nowb, rate, period, it->name, want, nowb, cap, need, want}, 10,
                      &rows, err, errlen) < 0)
        return -1;
    if (cJSON_GetArraySize(rows) == 1)
        it->granted = (int64_t)cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "granted")->valuedouble;
    cJSON_Delete(rows);
    if (!it->granted) {
        /* how long until it could: read the balance with refill applied */
        rows = NULL;
        if (kl_store_exec(s,
                          "SELECT CAST(LEAST(capacity, level + CASE WHEN rate_period_ms > 0 THEN "
                          "((CAST(? AS BIGINT) - updated_at)::numeric * rate_amount) / rate_period_ms "
                          "ELSE 0 END) AS BIGINT) AS lvl FROM quota_pool WHERE name = ?",
                          (const char *[]){nowb, it->name}, 2, &rows, err, errlen) == 0 &&
            cJSON_GetArraySize(rows) == 1)
            it->pool_level = (int64_t)cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "lvl")->valuedouble;
        cJSON_Delete(rows);
    }
    return 0;
}

static void run(struct kl_store *s, struct kl_query_job *job)
{
    struct lease_job *j = (struct lease_job *)job;
    int64_t now = kl_wall_ms();
    j->ok = true;
    j->retry_after_s = 0;
    for (size_t i = 0; i < j->n; i++) {
        struct lease_item *it = &j->item[i];
        if (take(s, it, now, j->err, sizeof(j->err)) < 0) {
            kl_warn("quota pool: %s", j->err);
            j->ok = false;
            j->retry_after_s = KL_LEASE_UNAVAILABLE;
            return;
        }
        if (it->granted)
            continue;
        j->ok = false;
        if (it->need > it->spec.capacity) {
            j->retry_after_s = -1;
        } else if (j->retry_after_s >= 0) { /* the longest wait of all short buckets */
            /* without refill, what the gateways hold in leases and
             * reservations may still come back: the pool's level alone
             * cannot tell that it never will */
            int64_t secs = 1;
            if (it->spec.rate_period_ms > 0 && it->spec.rate_amount > 0) {
                __int128 deficit = it->need - it->pool_level;
                secs = (int64_t)((deficit * it->spec.rate_period_ms / it->spec.rate_amount + 999) / 1000);
            }
            if (secs < 1)
                secs = 1;
            if (secs > j->retry_after_s)
                j->retry_after_s = secs;
        }
    }
}

static void done(struct kl_query_job *job)
{
    struct lease_job *j = (struct lease_job *)job;
    kl_exchange *ex = kl_query_waiter(job);
    /* Credit what was granted even if the request has gone: it is this
     * gateway's lease now, and goes back to the pool when idle. */
    kl_worker *w = job->w;
    int64_t now = kl_wall_ms();
    for (size_t i = 0; i < j->n; i++) {
        if (j->item[i].granted)
            kl_buckets_credit(w->server->buckets, &j->item[i].spec, j->item[i].granted, now);
        kl_buckets_lease_asked(w->server->buckets, &j->item[i].spec, now); /* after the credit, found then */
    }
    if (ex)
        j->done(ex, j->ok, j->retry_after_s);
    free(j);
}

void kl_lease_start(kl_exchange *ex, const struct kl_lease_need *needs, size_t n,
                    void (*cb)(kl_exchange *ex, bool ok, int64_t retry_after_s))
{
    struct lease_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    for (size_t i = 0; i < n && i < KL_LEASE_MAX; i++) {
        struct lease_item *it = &j->item[j->n++];
        it->spec = *needs[i].spec;
        snprintf(it->name, sizeof(it->name), "%s", needs[i].spec->name);
        it->spec.name = it->name;
        it->need = needs[i].need;
        it->want = kl_buckets_lease_ask(ex->worker->server->buckets, &it->spec, it->need,
                                        it->spec.capacity / KL_LEASE_SLICES, kl_wall_ms());
    }
    j->done = cb;
    j->job.run = run;
    j->job.done = done;
    kl_server *srv = ex->worker->server;
    kl_query_wait(srv->leases ? srv->leases : srv->query, &j->job, ex);
}

int kl_lease_pool_levels(struct kl_store *s, const char *const *names, size_t n, cJSON **rows, char *err,
                         size_t errlen)
{
    char nowb[24];
    num(nowb, sizeof(nowb), kl_wall_ms());
    struct kl_buf sql = {0};
    kl_buf_str(&sql, "SELECT name, CAST(LEAST(capacity, level + CASE WHEN rate_period_ms > 0 THEN "
                      "((CAST(? AS BIGINT) - updated_at)::numeric * rate_amount) / rate_period_ms "
                      "ELSE 0 END) AS BIGINT) AS lvl FROM quota_pool");
    const char **params = calloc(n + 1, sizeof(char *));
    if (!params)
        abort();
    params[0] = nowb;
    for (size_t i = 0; i < n; i++) {
        kl_buf_str(&sql, i ? ", ?" : " WHERE name IN (?");
        params[i + 1] = names[i];
    }
    if (n)
        kl_buf_str(&sql, ")");
    int rc = kl_store_exec(s, sql.p, params, n + 1, rows, err, errlen);
    free(params);
    free(sql.p);
    return rc;
}

int kl_lease_pool_credit(struct kl_store *s, const char *name, int64_t amount, cJSON **rows, char *err,
                         size_t errlen)
{
    char nowb[24], amt[24];
    num(nowb, sizeof(nowb), kl_wall_ms());
    num(amt, sizeof(amt), amount);
    return kl_store_exec(s,
                         "WITH cur AS (SELECT name, LEAST(capacity::numeric, level + CASE WHEN rate_period_ms > 0 "
                         "  THEN ((CAST(? AS BIGINT) - updated_at)::numeric * rate_amount) / rate_period_ms "
                         "  ELSE 0 END) AS lvl FROM quota_pool WHERE name = ? FOR UPDATE) "
                         "UPDATE quota_pool q SET "
                         "  level = CAST(LEAST(q.capacity::numeric, cur.lvl + CAST(? AS numeric)) AS BIGINT), "
                         "  updated_at = CAST(? AS BIGINT) "
                         "FROM cur WHERE q.name = cur.name RETURNING q.name AS name, q.level AS lvl",
                         (const char *[]){nowb, name, amt, nowb}, 4, rows, err, errlen);
}

void kl_lease_return(struct kl_store *s, struct kl_buckets *t, bool last)
{
    struct kl_bucket_lease *v;
    size_t n = kl_buckets_take_idle(t, last ? 0 : kl_wall_ms() - KL_LEASE_IDLE_MS, &v);
    char err[256];
    for (size_t i = 0; i < n; i++) {
        char amount[24];
        num(amount, sizeof(amount), v[i].amount);
        if (kl_store_exec(s, "UPDATE quota_pool SET level = LEAST(capacity, level + CAST(? AS BIGINT)) WHERE name = ?",
                          (const char *[]){amount, v[i].name}, 2, NULL, err, sizeof(err)) < 0)
            kl_warn("quota pool: returning %lld to %s: %s (it stays stranded until refill)",
                    (long long)v[i].amount, v[i].name, err);
    }
    free(v);
}
