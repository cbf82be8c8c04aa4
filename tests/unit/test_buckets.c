/* Buckets: all-or-nothing reservations, exact refill, Retry-After,
 * settle, clamping, saved balances, pooled leases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "admit/buckets.h"
#include "admit/quotas.h"

static void all_or_nothing(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec s[2] = {{"a", 100, 0, 0, false, false, false}, {"b", 10, 0, 0, false, false, false}};
    struct kl_bucket *got[2];
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){60, 6}, 2, 0, got, &failed, &retry), 0);
    /* b cannot take 6 more: neither is touched */
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){10, 6}, 2, 0, got, &failed, &retry), -1);
    assert_int_equal(failed, 1);
    assert_int_equal(retry, 1); /* no refill: a slot frees when a request ends */
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){40, 4}, 2, 0, got, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){1, 0}, 2, 0, got, &failed, &retry), -1);
    /* settle for less gives the rest back */
    kl_buckets_settle(t, got[0], 40, 10, 0);
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){30, 0}, 2, 0, got, &failed, &retry), 0);
    /* more than capacity: never */
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){101, 0}, 2, 0, got, &failed, &retry), -1);
    assert_int_equal(retry, -1);
    kl_buckets_free(t);
}

/* A check says what a reservation would, and takes nothing. */
static void check_takes_nothing(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec s[2] = {{"a", 2, 2, 60000, false, false, false}, {"b", 10, 0, 0, false, false, false}};
    struct kl_bucket *got[2];
    size_t failed = 9;
    int64_t retry = 9;
    for (int i = 0; i < 5; i++)
        assert_int_equal(kl_buckets_check(t, s, (int64_t[]){1, 1}, 2, 0, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){2, 1}, 2, 0, got, &failed, &retry), 0);
    assert_int_equal(kl_buckets_check(t, s, (int64_t[]){1, 1}, 2, 0, &failed, &retry), -1);
    assert_int_equal(failed, 0);
    assert_int_equal(retry, 30); /* one of 2 a minute */
    assert_int_equal(kl_buckets_check(t, s, (int64_t[]){0, 11}, 2, 0, &failed, &retry), -1);
    assert_int_equal(failed, 1);
    assert_int_equal(retry, -1);
    kl_buckets_settle(t, got[0], 2, 0, 0);
    assert_int_equal(kl_buckets_check(t, s, (int64_t[]){2, 9}, 2, 0, &failed, &retry), 0);
    kl_buckets_settle(t, got[1], 1, 1, 0);
    kl_buckets_free(t);
}

/* Without refill a spent budget never covers more than what is left; only
 * a pooled one may lease more, and slots come back. */
static void spent_without_refill(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec spend = {"spend", 10, 0, 0, true, false, false};
    struct kl_bucket_spec pooled = {"pooled", 10, 0, 0, true, true, false};
    struct kl_bucket *b;
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, &spend, (int64_t[]){8}, 1, 0, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &spend, (int64_t[]){3}, 1, 0, &b, &failed, &retry), -1);
    assert_int_equal(retry, 1); /* the reservation may settle for less */
    kl_buckets_settle(t, b, 8, 8, 0);
    assert_int_equal(kl_buckets_reserve(t, &spend, (int64_t[]){3}, 1, 0, &b, &failed, &retry), -1);
    assert_int_equal(retry, -1);
    assert_int_equal(kl_buckets_reserve(t, &spend, (int64_t[]){2}, 1, 0, &b, &failed, &retry), 0);
    /* refused by a refilling bucket and a spent one: the spent one is named */
    struct kl_bucket_spec both[2] = {{"rpm", 1, 1, 60000, false, false, false}, spend};
    struct kl_bucket *got[2];
    assert_int_equal(kl_buckets_reserve(t, both, (int64_t[]){1, 0}, 2, 0, got, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, both, (int64_t[]){1, 3}, 2, 0, got, &failed, &retry), -1);
    assert_int_equal(failed, 1);
    assert_int_equal(retry, -1);
    kl_buckets_credit(t, &pooled, 2, 0);
    assert_int_equal(kl_buckets_reserve(t, &pooled, (int64_t[]){3}, 1, 0, &b, &failed, &retry), -1);
    assert_int_equal(retry, 1);
    /* a provider's absurd counts, settled again and again, leave the
     * balance spent: it never wraps around to a huge one */
    struct kl_bucket_spec absurd = {"absurd", 1000, 1000, 60000, true, false, false};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kl_buckets_reserve(t, &absurd, (int64_t[]){1}, 1, 0, &b, &failed, &retry), i == 0 ? 0 : -1);
        if (i == 0)
            kl_buckets_settle(t, b, 1, INT64_MAX, 0);
        else
            kl_buckets_settle(t, b, 0, INT64_MAX, 0);
    }
    assert_int_equal(kl_buckets_reserve(t, &absurd, (int64_t[]){1}, 1, 0, &b, &failed, &retry), -1);
    assert_true(retry > 1000000); /* refilling 1000 a minute, for ages */
    assert_int_equal(kl_buckets_shortfall(t, &absurd, INT64_MAX, 0), INT64_MAX);
    kl_buckets_free(t);
}

static void refill_is_exact(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    /* 7 units every 1000 ms, starting empty after one spend of 100 */
    struct kl_bucket_spec s = {"r", 100, 7, 1000, false, false, false};
    struct kl_bucket *b;
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){100}, 1, 0, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 100, 100, 0);
    /* refill polled every ms must add exactly what one poll at the end adds */
    for (int64_t ms = 1; ms <= 10000; ms++)
        kl_buckets_reserve(t, &s, (int64_t[]){0}, 1, ms, &b, &failed, &retry);
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){70}, 1, 10000, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){1}, 1, 10000, &b, &failed, &retry), -1);
    /* 1 unit needs 1000/7 ms -> 1 s */
    assert_int_equal(retry, 1);
    /* 50 units: 50*1000/7 = 7143 ms -> 8 s */
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){50}, 1, 10000, &b, &failed, &retry), -1);
    assert_int_equal(retry, 8);
    kl_buckets_free(t);
}

static void extend_and_capacity_changes(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec s = {"x", 100, 0, 0, true, false, false};
    struct kl_bucket *b;
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){50}, 1, 0, &b, &failed, &retry), 0);
    assert_true(kl_buckets_extend(t, b, 40, 0));
    assert_false(kl_buckets_extend(t, b, 11, 0));
    kl_buckets_settle(t, b, 90, 90, 0);
    /* a lower capacity clamps, a higher one does not add money */
    struct kl_bucket_spec low = {"x", 5, 0, 0, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &low, (int64_t[]){5}, 1, 0, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 5, 0, 0);
    struct kl_bucket_spec high = {"x", 1000, 0, 0, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &high, (int64_t[]){6}, 1, 0, &b, &failed, &retry), -1);
    /* the change is saved */
    struct kl_bucket_level *v;
    size_t n = kl_buckets_dirty(t, &v);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, "x");
    assert_int_equal(v[0].level, 5);
    free(v);
    assert_int_equal(kl_buckets_dirty(t, &v), 0);
    free(v);
    kl_buckets_free(t);
}

/* What requests in flight reserved is saved as spent: after kill -9 nothing
 * settles them. A settle that charges what was reserved changes nothing. */
static void reservations_saved_as_spent(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec s = {"x", 100, 0, 0, true, false, false};
    struct kl_bucket *b;
    struct kl_bucket_level *v;
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){30}, 1, 0, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_dirty(t, &v), 1);
    assert_int_equal(v[0].level, 70);
    free(v);
    assert_true(kl_buckets_extend(t, b, 10, 0));
    assert_int_equal(kl_buckets_dirty(t, &v), 1);
    assert_int_equal(v[0].level, 60);
    free(v);
    kl_buckets_settle(t, b, 20, 20, 0);
    assert_int_equal(kl_buckets_dirty(t, &v), 0);
    free(v);
    kl_buckets_settle(t, b, 20, 5, 0);
    assert_int_equal(kl_buckets_dirty(t, &v), 1);
    assert_int_equal(v[0].level, 75);
    free(v);
    kl_buckets_free(t);
}

/* Concurrency slots: a reload that raises the limit adds slots at once, one
 * that lowers it takes them as requests end. */
static void slots_follow_the_limit(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec two = {"c", 2, 0, 0, false, false, true}, five = {"c", 5, 0, 0, false, false, true},
                          one = {"c", 1, 0, 0, false, false, true};
    struct kl_bucket *b[8];
    size_t failed;
    int64_t retry;
    for (int i = 0; i < 2; i++)
        assert_int_equal(kl_buckets_reserve(t, &two, (int64_t[]){1}, 1, 0, &b[i], &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &two, (int64_t[]){1}, 1, 0, &b[2], &failed, &retry), -1);
    for (int i = 2; i < 5; i++)
        assert_int_equal(kl_buckets_reserve(t, &five, (int64_t[]){1}, 1, 0, &b[i], &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &five, (int64_t[]){1}, 1, 0, &b[5], &failed, &retry), -1);
    /* lowered to one: the five running keep their slots, a new one waits until four have ended */
    assert_int_equal(kl_buckets_reserve(t, &one, (int64_t[]){1}, 1, 0, &b[5], &failed, &retry), -1);
    for (int i = 0; i < 4; i++)
        kl_buckets_settle(t, b[i], 1, 0, 0);
    assert_int_equal(kl_buckets_reserve(t, &one, (int64_t[]){1}, 1, 0, &b[5], &failed, &retry), -1);
    kl_buckets_settle(t, b[4], 1, 0, 0);
    assert_int_equal(kl_buckets_reserve(t, &one, (int64_t[]){1}, 1, 0, &b[5], &failed, &retry), 0);
    kl_buckets_free(t);
}

/* A save that failed leaves the balances to be saved again. */
static void failed_save_is_retried(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec a = {"a", 100, 0, 0, true, false, false}, b = {"b", 100, 0, 0, true, false, false};
    struct kl_bucket *got;
    struct kl_bucket_level *v;
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, &a, (int64_t[]){10}, 1, 0, &got, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &b, (int64_t[]){20}, 1, 0, &got, &failed, &retry), 0);
    assert_int_equal(kl_buckets_dirty(t, &v), 2);
    kl_buckets_mark_dirty(t, v, 2);
    free(v);
    assert_int_equal(kl_buckets_dirty(t, &v), 2);
    free(v);
    assert_int_equal(kl_buckets_dirty(t, &v), 0);
    free(v);
    kl_buckets_free(t);
}

/* An admin names a bucket; the quota it was made from is found by its
 * template, in time linear in the name whatever the template. */
static void quota_of_a_bucket(void **state)
{
    (void)state;
    struct kl_quota v[] = {{.name = "daily:<user>"}, {.name = "n:<node>:<user>"}, {.name = "fixed"},
                           {.name = "<user><node><user><node>x"}};
    struct kl_quotas q = {.v = v, .n = 4};
    assert_ptr_equal(kl_quota_for_bucket(&q, "daily:alice@example.com"), &v[0]);
    assert_null(kl_quota_for_bucket(&q, "daily:"));
    assert_ptr_equal(kl_quota_for_bucket(&q, "n:laptop:bob"), &v[1]);
    assert_ptr_equal(kl_quota_for_bucket(&q, "n:a:b:c"), &v[1]);
    assert_null(kl_quota_for_bucket(&q, "n:laptop:"));
    assert_ptr_equal(kl_quota_for_bucket(&q, "fixed"), &v[2]);
    assert_null(kl_quota_for_bucket(&q, "fixedy"));
    assert_ptr_equal(kl_quota_for_bucket(&q, "fixedx"), &v[3]); /* four placeholders, then x */
    /* a quota named exactly so, listed after a template it also fits */
    struct kl_quota w[] = {{.name = "team-<user>"}, {.name = "team-eng"}};
    struct kl_quotas qw = {.v = w, .n = 2};
    assert_ptr_equal(kl_quota_for_bucket(&qw, "team-eng"), &w[1]);
    assert_ptr_equal(kl_quota_for_bucket(&qw, "team-ops"), &w[0]);
    char name[256];
    memset(name, 'a', 255);
    name[255] = '\0';
    assert_null(kl_quota_for_bucket(&q, name)); /* four placeholders, no 'x' at the end: no blow-up */
    name[254] = 'x';
    assert_ptr_equal(kl_quota_for_bucket(&q, name), &v[3]);
}

static void saved_balances(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    kl_buckets_preload(t, "p", 30, 0, 45, 500);
    /* 10 a second for 2 s since it was saved: 50, clamped by capacity 45 */
    struct kl_bucket_spec s = {"p", 45, 10, 1000, true, false, false};
    struct kl_bucket *b;
    size_t failed;
    int64_t retry;
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){45}, 1, 2000, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){1}, 1, 2000, &b, &failed, &retry), -1);
    /* saved full (40 of 40) at 0, read at 1000 by a gateway whose capacity
     * is 100: full until the restart, then 10 a second for 1 s */
    kl_buckets_preload(t, "q", 40, 0, 40, 1000);
    struct kl_bucket_spec q = {"q", 100, 10, 1000, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &q, (int64_t[]){50}, 1, 2000, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &q, (int64_t[]){1}, 1, 2000, &b, &failed, &retry), -1);
    /* saved at 20 of 40: it refills past 40 no sooner than a live reload
     * would let it (40 by 2000, then on at the new capacity) */
    kl_buckets_preload(t, "r", 20, 0, 40, 3000);
    struct kl_bucket_spec r = {"r", 100, 10, 1000, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &r, (int64_t[]){50}, 1, 4000, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_reserve(t, &r, (int64_t[]){1}, 1, 4000, &b, &failed, &retry), -1);
    /* saved before the capacity was kept: refilled up to the configured one */
    kl_buckets_preload(t, "u", 40, 0, -1, 1000);
    struct kl_bucket_spec u = {"u", 100, 10, 1000, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &u, (int64_t[]){60}, 1, 2000, &b, &failed, &retry), 0);
    kl_buckets_free(t);
}

static void pooled(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec s = {"pool", 1000, 10, 1000, true, true, false};
    struct kl_bucket *b;
    size_t failed;
    int64_t retry;
    /* nothing until leased */
    assert_int_equal(kl_buckets_shortfall(t, &s, 100, 0), 100);
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){100}, 1, 0, &b, &failed, &retry), -1);
    kl_buckets_credit(t, &s, 125, 0);
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){100}, 1, 0, &b, &failed, &retry), 0);
    assert_int_equal(kl_buckets_shortfall(t, &s, 100, 0), 75);
    /* no local refill for pooled buckets: the pool refills */
    assert_int_equal(kl_buckets_shortfall(t, &s, 100, 100000), 75);
    struct kl_bucket_lease *v;
    assert_int_equal(kl_buckets_take_idle(t, 0, &v), 0); /* reserved: not idle */
    free(v);
    kl_buckets_settle(t, b, 100, 60, 500);
    assert_int_equal(kl_buckets_take_idle(t, 400, &v), 0); /* used after 400 */
    free(v);
    assert_int_equal(kl_buckets_take_idle(t, 600, &v), 1);
    assert_int_equal(v[0].amount, 65);
    free(v);
    assert_int_equal(kl_buckets_shortfall(t, &s, 1, 1000), 1);
    kl_buckets_free(t);
}

#define MIN_MS 60000LL
#define IDLE_MS (10 * MIN_MS) /* KL_BUCKET_IDLE_MS */

static int64_t level_of(struct kl_buckets *t, const char *name, int64_t now)
{
    struct kl_bucket_state st;
    assert_true(kl_buckets_state(t, name, now, &st));
    return st.level;
}

/* Callers who come and go (a login per CI run) leave buckets behind: one
 * nobody holds, idle for ten minutes and full again (a new one would be the
 * same) is forgotten; one held by a request in flight, or still short of
 * full, is kept with its balance. */
static void idle_buckets_are_forgotten(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    size_t failed;
    int64_t retry;
    char names[1000][2][32];
    for (int i = 0; i < 1000; i++) {
        /* a per-user dollar quota ($ refilling in a minute) and a per-user rpm limit */
        snprintf(names[i][0], sizeof(names[i][0]), "daily:run-%d", i);
        snprintf(names[i][1], sizeof(names[i][1]), "rpm:run-%d#1a2b", i);
        struct kl_bucket_spec s[2] = {{names[i][0], 1000, 1000, MIN_MS, true, false, false},
                                      {names[i][1], 10, 10, MIN_MS, false, false, false}};
        struct kl_bucket *got[2];
        assert_int_equal(kl_buckets_reserve(t, s, (int64_t[]){200, 1}, 2, 0, got, &failed, &retry), 0);
        kl_buckets_settle(t, got[0], 200, 150, 1000);
        kl_buckets_settle(t, got[1], 1, 1, 1000);
    }
    /* kept: a request still in flight (long past its bucket's refill) */
    struct kl_bucket_spec held = {"daily:held", 1000, 1000, MIN_MS, false, false, false};
    struct kl_bucket *hb;
    assert_int_equal(kl_buckets_reserve(t, &held, (int64_t[]){300}, 1, 0, &hb, &failed, &retry), 0);
    /* kept: spent and never refilling, or refilling too slowly to be full yet */
    struct kl_bucket_spec spent = {"total:spent", 1000, 0, 0, false, false, false};
    struct kl_bucket_spec slow = {"monthly:slow", 1000, 1, 30 * 24 * 60 * MIN_MS, false, false, false};
    struct kl_bucket *b;
    assert_int_equal(kl_buckets_reserve(t, &spent, (int64_t[]){400}, 1, 0, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 400, 400, 0);
    assert_int_equal(kl_buckets_reserve(t, &slow, (int64_t[]){400}, 1, 0, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 400, 400, 0);
    /* kept while held: a log-only quota held with nothing reserved, and a
     * reservation partly given back (a cheaper provider on failover) */
    struct kl_bucket_spec logged = {"daily:logged", 1000, 1000, MIN_MS, false, false, false};
    struct kl_bucket *lb = kl_buckets_hold(t, &logged, 0);
    struct kl_bucket_spec gave = {"daily:gave", 1000, 1000, MIN_MS, false, false, false};
    struct kl_bucket *gb;
    assert_int_equal(kl_buckets_reserve(t, &gave, (int64_t[]){100}, 1, 0, &gb, &failed, &retry), 0);
    kl_buckets_give_back(t, gb, 100, 0);
    /* pooled: one still holding a lease stays; one whose lease went back goes */
    struct kl_bucket_spec leased = {"daily:leased", 1000, 0, 0, true, true, false};
    struct kl_bucket_spec returned = {"daily:returned", 1000, 0, 0, true, true, false};
    kl_buckets_credit(t, &leased, 125, 0);
    kl_buckets_credit(t, &returned, 125, 0);
    assert_int_equal(kl_buckets_reserve(t, &returned, (int64_t[]){100}, 1, 0, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 100, 100, 0);
    struct kl_bucket_lease *lv;
    assert_int_equal(kl_buckets_take_idle(t, 1, &lv), 2); /* both go back to the pool... */
    free(lv);
    kl_buckets_credit(t, &leased, 125, 0); /* ...and one is leased again */
    const size_t others = 7;
    assert_int_equal(kl_buckets_count(t), 2000 + others);

    /* full within the minute, but used a minute ago: nothing goes yet */
    assert_int_equal(kl_buckets_sweep(t, MIN_MS + 1000), 0);
    assert_int_equal(kl_buckets_count(t), 2000 + others);

    /* ten minutes on: the rate limits and the returned pool bucket go; the
     * dollar quotas have just refilled (a balance to save first) */
    int64_t later = IDLE_MS + 2000;
    assert_int_equal(kl_buckets_sweep(t, later), 1000 + 1);
    struct kl_bucket_level *v;
    assert_int_equal(kl_buckets_dirty(t, &v), 1000); /* the writer's tick saves them, full */
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(v[i].level, 1000);
    free(v);
    assert_int_equal(kl_buckets_sweep(t, later), 1000);
    assert_int_equal(kl_buckets_count(t), others - 1);
    /* the saved ones' rows are to go too (a new bucket starts as full) */
    char **gone;
    assert_int_equal(kl_buckets_forgotten(t, &gone), 1000);
    int found = 0;
    for (size_t i = 0; i < 1000; i++)
        found += strcmp(gone[i], names[7][0]) == 0;
    assert_int_equal(found, 1);
    free(gone);
    assert_int_equal(kl_buckets_forgotten(t, &gone), 0);
    assert_null(gone);
    struct kl_bucket_state st;
    assert_false(kl_buckets_state(t, names[7][0], later, &st));
    assert_false(kl_buckets_state(t, names[7][1], later, &st));
    assert_false(kl_buckets_state(t, "daily:returned", later, &st));

    /* what stays keeps its balance */
    assert_true(kl_buckets_state(t, "daily:held", later, &st));
    assert_int_equal(st.reserved, 300);
    assert_int_equal(level_of(t, "total:spent", later), 600);
    assert_int_equal(level_of(t, "monthly:slow", later), 600);
    assert_int_equal(level_of(t, "daily:leased", later), 125);
    assert_true(kl_buckets_state(t, "daily:logged", later, &st));
    assert_true(kl_buckets_state(t, "daily:gave", later, &st));
    /* and is still enforced: the spent bucket still cannot cover 601 */
    assert_int_equal(kl_buckets_reserve(t, &spent, (int64_t[]){601}, 1, later, &b, &failed, &retry), -1);
    assert_int_equal(retry, -1);

    /* once settled and idle again, the held ones go too */
    kl_buckets_settle(t, hb, 300, 300, later);
    kl_buckets_settle(t, lb, 0, 50, later);
    kl_buckets_settle(t, gb, 0, 0, later);
    assert_int_equal(kl_buckets_sweep(t, later + IDLE_MS - 1), 0);
    assert_int_equal(kl_buckets_sweep(t, later + IDLE_MS), 3);
    assert_int_equal(kl_buckets_count(t), 3); /* spent, slow, leased */

    /* a forgotten caller who comes back starts full, as a new one does */
    struct kl_bucket_spec again = {names[7][0], 1000, 1000, MIN_MS, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &again, (int64_t[]){1000}, 1, later + IDLE_MS, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 1000, 0, later + IDLE_MS);
    kl_buckets_free(t);
}

/* The writer's tick lists the forgotten rows to delete, then saves the
 * balances that changed. A bucket forgotten after the list was taken, and
 * made again and spent before the save, has its new balance saved by that
 * tick: the next one must not delete that row. */
static void forgotten_and_back_within_a_tick(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    size_t failed;
    int64_t retry;
    struct kl_bucket *b;
    struct kl_bucket_level *v;
    char **gone;
    struct kl_bucket_spec s = {"daily:ci-run", 1000, 1000, 24 * 60 * MIN_MS, true, false, false};
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){100}, 1, 0, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 100, 0, 0);
    assert_int_equal(kl_buckets_dirty(t, &v), 1); /* saved full */
    free(v);
    /* a tick begins: nothing forgotten yet */
    assert_int_equal(kl_buckets_forgotten(t, &gone), 0);
    /* meanwhile the bucket is forgotten, and its caller comes back and spends */
    assert_int_equal(kl_buckets_sweep(t, IDLE_MS), 1);
    assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){400}, 1, IDLE_MS, &b, &failed, &retry), 0);
    kl_buckets_settle(t, b, 400, 400, IDLE_MS);
    /* the same tick saves the spent balance */
    assert_int_equal(kl_buckets_dirty(t, &v), 1);
    assert_int_equal(v[0].level, 600);
    free(v);
    /* the next tick: that row stays (nothing changed since, nothing to save) */
    assert_int_equal(kl_buckets_forgotten(t, &gone), 0);
    assert_null(gone);
    assert_int_equal(kl_buckets_dirty(t, &v), 0);
    free(v);
    kl_buckets_free(t);
}

/* An idle balance still short of full is not saved again at every pass of
 * the sweep (its refill is applied when it is used, or read back, anyway):
 * with thousands of spent logins the writer rewrote them all each second. */
static void sweep_saves_only_the_full(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    size_t failed;
    int64_t retry;
    struct kl_bucket *b;
    struct kl_bucket_level *v;
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "daily:run-%d", i);
        struct kl_bucket_spec s = {name, 1000, 1000, 24 * 60 * MIN_MS, true, false, false};
        assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){500}, 1, 0, &b, &failed, &retry), 0);
        kl_buckets_settle(t, b, 500, 500, 0);
    }
    assert_int_equal(kl_buckets_dirty(t, &v), 100);
    free(v);
    for (int pass = 1; pass <= 3; pass++) {
        assert_int_equal(kl_buckets_sweep(t, IDLE_MS * pass), 0);
        assert_int_equal(kl_buckets_dirty(t, &v), 0);
        free(v);
    }
    /* a day on they are full: saved so once, then forgotten */
    assert_int_equal(kl_buckets_sweep(t, 24 * 60 * MIN_MS), 0);
    assert_int_equal(kl_buckets_dirty(t, &v), 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(v[i].level, 1000);
    free(v);
    assert_int_equal(kl_buckets_sweep(t, 24 * 60 * MIN_MS), 100);
    kl_buckets_free(t);
}

/* A name shortened to fit the tables (its start, '~', a hash of the whole)
 * fits each template whose names may start as it does: a saved balance is
 * forgotten only once every quota it may have come from says full. */
static void shortened_names_fit_by_their_start(void **state)
{
    (void)state;
    struct kl_quota total = {.name = "ci:<user>:total"}, ci = {.name = "ci:<user>"}, other = {.name = "cd:<user>"};
    char name[256];
    memcpy(name, "ci:", 3);
    memset(name + 3, 'x', 235);
    memcpy(name + 238, "~0123456789abcdef", 18);
    assert_true(kl_quota_fits(&ci, name));
    assert_true(kl_quota_fits(&total, name));
    assert_false(kl_quota_fits(&other, name));
    /* a name not shortened fits as written */
    assert_true(kl_quota_fits(&ci, "ci:ann:total"));
    assert_true(kl_quota_fits(&total, "ci:ann:total"));
    assert_false(kl_quota_fits(&total, "ci:ann"));
    assert_false(kl_quota_fits(&total, "ci:ann~0123456789abcdeg"));
}

/* Quotas for saved_full_by_now: "ci:<user>" refills in a minute, and
 * "daily:<user>" in a day, as does "daily:<node>" (a name fitting both may
 * come from either); "total:<user>" never refills. */
static bool quota_of(void *arg, const char *name, size_t k, struct kl_bucket_spec *out)
{
    (void)arg;
    static const struct {
        const char *prefix;
        int64_t period;
    } q[] = {{"ci:", MIN_MS}, {"daily:", 24 * 60 * MIN_MS}, {"daily:", MIN_MS}, {"total:", 0}};
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        if (strncmp(name, q[i].prefix, strlen(q[i].prefix)) != 0 || k-- > 0)
            continue;
        *out = (struct kl_bucket_spec){name, 1000, q[i].period ? 1000 : 0, q[i].period, true, false, false};
        return true;
    }
    return false;
}

/* A balance saved before a restart whose caller never comes back (a CI
 * run's login) is forgotten once it would be full, as a live bucket is:
 * else every login live at some restart stayed in memory, and its row in
 * the store, for ever. */
static void saved_full_by_now(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    kl_buckets_preload(t, "ci:run-1", 0, 0, 1000, 0);
    kl_buckets_preload(t, "total:run-1", 500, 0, 1000, 0);   /* never refills */
    kl_buckets_preload(t, "daily:run-1", 0, 0, 1000, 0);     /* full in a minute or a day */
    kl_buckets_preload(t, "gone:run-1", 0, 0, 1000, 0);      /* no quota makes it now */
    assert_int_equal(kl_buckets_sweep_saved(t, 0, quota_of, NULL), 0);
    size_t freed = 0;
    for (int i = 0; i < 4096 / 16; i++) /* a whole pass, ten minutes after the start */
        freed += kl_buckets_sweep_saved(t, IDLE_MS - 1, quota_of, NULL);
    assert_int_equal(freed, 0);
    for (int i = 0; i < 4096 / 16; i++)
        freed += kl_buckets_sweep_saved(t, IDLE_MS, quota_of, NULL);
    assert_int_equal(freed, 1);
    assert_false(kl_buckets_saved(t, "ci:run-1"));
    assert_true(kl_buckets_saved(t, "daily:run-1"));
    char **gone;
    assert_int_equal(kl_buckets_forgotten(t, &gone), 1);
    assert_string_equal(gone[0], "ci:run-1");
    free(gone);
    for (int i = 0; i < 4096 / 16; i++) /* a day on: the daily one is full whichever quota made it */
        freed += kl_buckets_sweep_saved(t, 24 * 60 * MIN_MS, quota_of, NULL);
    assert_int_equal(freed, 2);
    assert_false(kl_buckets_saved(t, "daily:run-1"));
    assert_true(kl_buckets_saved(t, "total:run-1"));
    assert_true(kl_buckets_saved(t, "gone:run-1"));
    kl_buckets_free(t);
}

/* Nobody runs the sweep: every reserve forgets a few slots' worth, so a
 * whole pass takes a few hundred reservations. */
static void reservations_sweep_as_they_go(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    size_t failed;
    int64_t retry;
    struct kl_bucket *b;
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "rpm:ci-run-%d", i);
        struct kl_bucket_spec s = {name, 60, 60, MIN_MS, false, false, false};
        assert_int_equal(kl_buckets_reserve(t, &s, (int64_t[]){1}, 1, 0, &b, &failed, &retry), 0);
        kl_buckets_settle(t, b, 1, 1, 0);
    }
    assert_int_equal(kl_buckets_count(t), 5000);
    struct kl_bucket_spec busy = {"rpm:busy", 100000, 100000, MIN_MS, false, false, false};
    for (int i = 0; i < 4096 / 16; i++) {
        assert_int_equal(kl_buckets_reserve(t, &busy, (int64_t[]){1}, 1, IDLE_MS + i, &b, &failed, &retry), 0);
        kl_buckets_settle(t, b, 1, 1, IDLE_MS + i);
    }
    assert_int_equal(kl_buckets_count(t), 1);
    kl_buckets_free(t);
}

static void money_and_rates(void **state)
{
    (void)state;
    int64_t nd, amount, period;
    cJSON *v = cJSON_CreateString("$10.00");
    assert_int_equal(kl_parse_dollars(v, &nd), 0);
    assert_int_equal(nd, 10000000000LL);
    cJSON_Delete(v);
    v = cJSON_CreateString("0.000000001");
    assert_int_equal(kl_parse_dollars(v, &nd), 0);
    assert_int_equal(nd, 1);
    cJSON_Delete(v);
    assert_int_equal(kl_parse_rate("$5.00/day", &amount, &period), 0);
    assert_int_equal(amount, 5000000000LL);
    assert_int_equal(period, 86400000);
    assert_int_equal(kl_parse_rate("$1/month", &amount, &period), 0);
    assert_int_equal(period, 30LL * 86400000);
    assert_int_equal(kl_parse_rate("$1/fortnight", &amount, &period), -1);
    assert_int_equal(kl_parse_rate("$1", &amount, &period), -1);
}

/* Leases asked for at once: the first asks for a slice, the others for
 * their own need only, until every ask has ended. */
static void leases_asked_at_once(void **state)
{
    (void)state;
    struct kl_buckets *t = kl_buckets_new();
    struct kl_bucket_spec pool = {"pool", 800, 0, 0, false, true, false};
    assert_int_equal(kl_buckets_lease_ask(t, &pool, 3, 100, 0), 100);
    assert_int_equal(kl_buckets_lease_ask(t, &pool, 3, 100, 0), 3);
    assert_int_equal(kl_buckets_lease_ask(t, &pool, 300, 100, 0), 300); /* more than a slice: its own need */
    kl_buckets_credit(t, &pool, 100, 0);
    for (int i = 0; i < 3; i++)
        kl_buckets_lease_asked(t, &pool, 0);
    assert_int_equal(kl_buckets_lease_ask(t, &pool, 3, 100, 0), 100);
    kl_buckets_lease_asked(t, &pool, 0);
    kl_buckets_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(all_or_nothing),
        cmocka_unit_test(check_takes_nothing),
        cmocka_unit_test(spent_without_refill),
        cmocka_unit_test(refill_is_exact),
        cmocka_unit_test(extend_and_capacity_changes),
        cmocka_unit_test(reservations_saved_as_spent),
        cmocka_unit_test(slots_follow_the_limit),
        cmocka_unit_test(failed_save_is_retried),
        cmocka_unit_test(quota_of_a_bucket),
        cmocka_unit_test(saved_balances),
        cmocka_unit_test(pooled),
        cmocka_unit_test(idle_buckets_are_forgotten),
        cmocka_unit_test(forgotten_and_back_within_a_tick),
        cmocka_unit_test(saved_full_by_now),
        cmocka_unit_test(shortened_names_fit_by_their_start),
        cmocka_unit_test(sweep_saves_only_the_full),
        cmocka_unit_test(leases_asked_at_once),
        cmocka_unit_test(reservations_sweep_as_they_go),
        cmocka_unit_test(money_and_rates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
