/* Buckets shared by several gateways through PostgreSQL (see docs/design.md,
 * "Several gateways, one truth"). The pool row holds the bucket's balance;
 * a gateway leases slices of it and spends them locally, so most requests
 * need no database round trip, and returns what it has not used once the
 * bucket has been idle for a while. The pool can only hand out what it has,
 * so the gateways together can never spend more than capacity plus refill. */
#ifndef KL_LEASE_H
#define KL_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/exchange.h"
#include "record/store.h"

struct kl_bucket_spec;

/* What one request needs leased: the local shortfall of each pooled bucket. */
struct kl_lease_need {
    const struct kl_bucket_spec *spec;
    int64_t need;               /* at least this (the shortfall) */
};

/* Lease asynchronously on the query thread, then call back on ex's worker:
 * done(ex, ok, retry_after_s) with ok false when the pool could not cover a
 * need (retry_after_s: until refill could; -1 never) or could not be asked
 * (KL_LEASE_UNAVAILABLE: the database failed). */
#define KL_LEASE_UNAVAILABLE (-2)
void kl_lease_start(kl_exchange *ex, const struct kl_lease_need *needs, size_t n,
                    void (*done)(kl_exchange *ex, bool ok, int64_t retry_after_s));

/* What the pool holds of each bucket named, or of every one when n is 0:
 * rows [{"name", "lvl"}], its balance with refill applied, not counting
 * what gateways hold in leases. Run on the leases' thread (/api/quotas);
 * -1 with err when the database fails. */
int kl_lease_pool_levels(struct kl_store *s, const char *const *names, size_t n, cJSON **rows, char *err,
                         size_t errlen);

/* An admin's refill of a pooled bucket: amount credited to the pool (its
 * refill applied first, the whole clamped to the capacity), where every
 * gateway sees it. Rows [{"name", "lvl"}] with its new balance, or none
 * when no gateway has used the bucket (nothing in the pool to credit: it is
 * full); -1 with err when the database fails. */
int kl_lease_pool_credit(struct kl_store *s, const char *name, int64_t amount, cJSON **rows, char *err,
                         size_t errlen);

/* Writer-thread tick (PostgreSQL): give idle leases back to the pool; at
 * shutdown (last) give all of them back. */
void kl_lease_return(struct kl_store *s, struct kl_buckets *t, bool last);

#endif
