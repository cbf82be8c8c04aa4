/* Token buckets shared by every worker: dollar quotas (nanodollars),
 * requests per minute, tokens per minute and concurrency slots all use the
 * same three operations, under one lock, so a reservation across several
 * buckets is atomic:
 *
 *   reserve  before forwarding: take the estimate from every bucket, or
 *            from none (refused, with the wait until refill covers it)
 *   extend   mid-stream: take more when real usage outgrows the estimate
 *   settle   at the end: charge the real amount, give back the rest
 *
 * A bucket's level never goes below zero through reserve/extend, so with
 * any number of concurrent requests the total charged cannot exceed
 * capacity plus refill (settle may go below only by what a provider used
 * beyond the reservation, which extend exists to prevent).
 *
 * A bucket is held from a successful reserve (or kl_buckets_hold) until its
 * settle: only then may the pointer go. A bucket nobody holds, unused for
 * ten minutes, that a new one of its name would equal (full, or a pooled one
 * with no lease) is forgotten (kl_buckets_sweep), a little at each reserve:
 * callers who come and go (a login per CI run) do not pile up. */
#ifndef KL_BUCKETS_H
#define KL_BUCKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/arena.h"

struct kl_bucket;
struct kl_buckets;

struct kl_bucket_spec {
    const char *name;           /* expanded: "daily:alice@example.com" */
    int64_t capacity;
    int64_t rate_amount;        /* refill rate_amount every rate_period_ms */
    int64_t rate_period_ms;     /* 0 = no refill */
    bool persistent;            /* dollar quotas survive restarts */
    bool pooled;                /* shared by several gateways: the level here is
                                   only what this gateway leased from the pool */
    bool slots;                 /* concurrency slots: capacity is how many, those in use are
                                   reserved, so the level is the capacity, whatever it was */
};

struct kl_buckets *kl_buckets_new(void);
void kl_buckets_free(struct kl_buckets *t);

/* Reserve amounts[i] in bucket specs[i] for every i, all or nothing. On
 * success fills out[], each held until settled once, and returns 0 (out[]
 * is not to be used after a refusal). On refusal returns -1, *failed is the
 * index of a bucket that could not cover it (one that never can, when any)
 * and *retry_after_s the seconds
 * until every refused bucket could (-1 when it never can: the amount is
 * above capacity, or above the level of a bucket that does not refill). */
int kl_buckets_reserve(struct kl_buckets *t, const struct kl_bucket_spec *specs, const int64_t *amounts,
                       size_t n, int64_t now_ms, struct kl_bucket **out, size_t *failed,
                       int64_t *retry_after_s);
/* Whether kl_buckets_reserve would take these amounts now (0), without
 * taking them; -1 with *failed and *retry_after_s as it would say. */
int kl_buckets_check(struct kl_buckets *t, const struct kl_bucket_spec *specs, const int64_t *amounts, size_t n,
                     int64_t now_ms, size_t *failed, int64_t *retry_after_s);
/* A bucket held without reserving anything (a log-only quota in deficit,
 * charged at the end); settled as a reserved one is. */
struct kl_bucket *kl_buckets_hold(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t now_ms);
/* Make a bucket live (a saved balance applied), holding nothing. */
void kl_buckets_touch(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t now_ms);
/* Take delta more from a reserved bucket; false when it cannot. */
bool kl_buckets_extend(struct kl_buckets *t, struct kl_bucket *b, int64_t delta, int64_t now_ms);
/* Release `reserved` and charge `actual`; the hold ends. */
void kl_buckets_settle(struct kl_buckets *t, struct kl_bucket *b, int64_t reserved, int64_t actual,
                       int64_t now_ms);
/* Give back amount of a held bucket's reservation, still held (a cheaper
 * provider on failover). */
void kl_buckets_give_back(struct kl_buckets *t, struct kl_bucket *b, int64_t amount, int64_t now_ms);
/* Forget every bucket that can be (see above), now; how many went. Each
 * reserve does this for a few slots. */
size_t kl_buckets_sweep(struct kl_buckets *t, int64_t now_ms);
/* A balance saved before a restart whose bucket nobody has used since is
 * forgotten as a bucket is: unused for ten minutes after it was read, and
 * full by now as each quota its name could have come from would restore it
 * (spec_for(arg, name, k, out): the k-th, false after the last; none: it
 * stays). A few at a time, a reservation's share; how many went.
 * Else a login seen last before a restart (a CI run) stayed for ever. */
size_t kl_buckets_sweep_saved(struct kl_buckets *t, int64_t now_ms,
                              bool (*spec_for)(void *arg, const char *name, size_t k, struct kl_bucket_spec *out),
                              void *arg);
/* How many buckets are live. */
size_t kl_buckets_count(struct kl_buckets *t);
/* Add amount (admin refill), clamped to capacity. -1 when unknown. */
int kl_buckets_refill(struct kl_buckets *t, const char *name, int64_t amount, int64_t now_ms);

/* Pooled buckets (several gateways, one PostgreSQL): how much more this
 * gateway must lease to cover amount; add a lease; and take back what idle
 * buckets hold, to return it to the pool. */
int64_t kl_buckets_shortfall(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t amount,
                             int64_t now_ms);
void kl_buckets_credit(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t amount, int64_t now_ms);
/* What to ask the pool for, to cover need: a slice of the capacity (or
 * need, when larger), but need alone while another lease of the bucket is
 * on its way. Requests arriving at once had each asked for a slice, eight
 * of them the whole pool: the caller was refused on every other gateway
 * while this one used it, and a crash stranded it all. Each ask ends with
 * kl_buckets_lease_asked, after its grant is credited. */
int64_t kl_buckets_lease_ask(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t need, int64_t slice,
                             int64_t now_ms);
void kl_buckets_lease_asked(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t now_ms);
/* The longest bucket name (a byte less than the arrays below): longer
 * ones are shortened by kl_admit (admit.c, fit_name) before they get here. */
#define KL_BUCKET_NAME_MAX 255

struct kl_bucket_lease {
    char name[KL_BUCKET_NAME_MAX + 1];
    int64_t amount;
};
/* Leases of pooled buckets with nothing reserved and unused since
 * idle_before_ms (all of them when idle_before_ms is 0): their level is
 * moved out (set to zero) into *out. */
size_t kl_buckets_take_idle(struct kl_buckets *t, int64_t idle_before_ms, struct kl_bucket_lease **out);

/* Persistence: balances of persistent buckets. */
struct kl_bucket_level {
    char name[KL_BUCKET_NAME_MAX + 1];
    int64_t level;
    int64_t at_ms;
    int64_t capacity;
};
/* Copy out the persistent buckets changed since the last call, each level
 * less what requests in flight have reserved: a gateway killed mid-stream
 * comes back having spent the whole reservation, never having given it back
 * (those requests are settled only in memory). At a clean shutdown nothing
 * is reserved any more. */
size_t kl_buckets_dirty(struct kl_buckets *t, struct kl_bucket_level **out);
/* The names of persistent buckets forgotten since the last call (their
 * saved rows say full, as a new bucket starts: to be deleted), in one
 * block for free(); how many. */
size_t kl_buckets_forgotten(struct kl_buckets *t, char ***out);
/* Those of v[0..n) not saved after all: to be copied out again. */
void kl_buckets_mark_dirty(struct kl_buckets *t, const struct kl_bucket_level *v, size_t n);
/* A balance saved before a restart, read at loaded_ms: applied when the
 * bucket is first used. Refill since at_ms is added, up to the capacity it
 * was saved with (capacity; < 0 when not known) until loaded_ms, and up to
 * the configured one after, as if the restart were a live reload; a capacity
 * lowered since then clamps it. */
void kl_buckets_preload(struct kl_buckets *t, const char *name, int64_t level, int64_t at_ms, int64_t capacity,
                        int64_t loaded_ms);
/* Whether a balance was saved for name before a restart and its bucket has
 * not been used since. */
bool kl_buckets_saved(struct kl_buckets *t, const char *name);

/* One bucket, looked up by name: false when it has not been used. */
struct kl_bucket_state {
    int64_t level, capacity, rate_amount, rate_period_ms;
    int64_t reserved;           /* of level, promised to requests in flight */
};
bool kl_buckets_state(struct kl_buckets *t, const char *name, int64_t now_ms, struct kl_bucket_state *out);

/* Every bucket whose name passes keep() (or all), as JSON objects; with
 * spec_for, also each balance saved before a restart whose bucket is not in
 * use yet, as spec_for's spec would have it now (not made live). */
cJSON *kl_buckets_report(struct kl_buckets *t, bool (*keep)(void *arg, const char *name),
                         bool (*spec_for)(void *arg, const char *name, struct kl_bucket_spec *out), void *arg,
                         int64_t now_ms);

#endif
