#include "admit/buckets.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

#define NBUCKETS 4096
/* Forgetting idle buckets (kl_buckets_sweep): how long one must go unused,
 * and how many slots, and buckets, one reservation's share of the sweep
 * looks at (a whole pass every 256 reservations). */
#define KL_BUCKET_IDLE_MS (10 * 60 * 1000)
#define SWEEP_SLOTS 16
#define SWEEP_BUCKETS 64
#define SWEEP_SAVED 8 /* saved balances (kl_buckets_sweep_saved) */

struct kl_bucket {
    struct kl_bucket *next;
    char *name;
    int64_t capacity, rate_amount, rate_period_ms;
    int64_t level;              /* available, before reservations */
    int64_t reserved;           /* promised to requests in flight */
    int64_t last_ms;            /* refill has been applied up to here */
    int64_t frac;               /* refill earned but not yet a whole unit */
    int64_t used_ms;            /* last reserve or settle (pooled: lease idle time) */
    int64_t seen_ms;            /* last looked up, reserved or settled: forgotten only long after */
    uint32_t holds;             /* exchanges holding a pointer to it: reserved (or held) and not settled */
    uint32_t asking;            /* pooled: leases of it on their way from the pool (kl_buckets_lease_ask) */
    bool persistent, dirty, pooled;
};

/* A saved balance waiting for its bucket to be used again. */
struct saved {
    struct saved *next;
    char *name;
    int64_t level, at_ms, capacity, loaded_ms;
};

/* The name of a saved bucket forgotten since the writer last looked. */
struct gone {
    struct gone *next;
    char name[];
};

struct kl_buckets {
    pthread_mutex_t lock;
    struct kl_bucket *slots[NBUCKETS];
    struct saved *saved[NBUCKETS];
    size_t count;               /* live buckets */
    size_t cursor;              /* the slot the sweep looks at next */
    size_t saved_cursor;        /* the same, of saved */
    atomic_size_t nsaved;       /* balances in saved (changed under the lock) */
    struct gone *gone;          /* saved buckets forgotten, their rows to delete (kl_buckets_forgotten) */
};

static unsigned hash(const char *s)
{
    return (unsigned)(kl_fnv64(KL_FNV64_START, s, strlen(s)) % NBUCKETS);
}

struct kl_buckets *kl_buckets_new(void)
{
    struct kl_buckets *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void kl_buckets_free(struct kl_buckets *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct kl_bucket *b = t->slots[i]; b;) {
            struct kl_bucket *next = b->next;
            free(b->name);
            free(b);
            b = next;
        }
        for (struct saved *sv = t->saved[i]; sv;) {
            struct saved *next = sv->next;
            free(sv->name);
            free(sv);
            sv = next;
        }
    }
    for (struct gone *g = t->gone; g;) {
        struct gone *next = g->next;
        free(g);
        g = next;
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* The lowest a level goes: dollar amounts, capacities and refills are at
 * most INT64_MAX / 4 (kl_parse_dollars), so level - reserved stays in range. */
#define KL_LEVEL_FLOOR (-(INT64_MAX / 4))

/* Credit whole units for the time passed. The part of a unit not yet
 * earned is carried in `frac` (units x period), so refill is exact however
 * often it is polled: it never credits early and never loses time. */
static void refill(struct kl_bucket *b, int64_t now_ms)
{
    if (now_ms <= b->last_ms)
        return;
    if (b->rate_period_ms <= 0 || b->rate_amount <= 0 || b->level >= b->capacity) {
        b->last_ms = now_ms;
        b->frac = 0;
        return;
    }
    __int128 acc = (__int128)(now_ms - b->last_ms) * b->rate_amount + b->frac;
    __int128 add = acc / b->rate_period_ms;
    b->frac = (int64_t)(acc - add * b->rate_period_ms);
    b->last_ms = now_ms;
    if (add <= 0)
        return;
    if ((__int128)b->level + add >= b->capacity) {
        b->level = b->capacity;
        b->frac = 0;
    } else {
        b->level += (int64_t)add;
    }
    b->dirty = b->persistent;
}

/* A saved balance into b, as spec s has it now: the refill since it was
 * saved is added, up to the capacity it had until the restart. */
static void restore(struct kl_bucket *b, const struct saved *sv, const struct kl_bucket_spec *s, int64_t now_ms)
{
    b->level = sv->level;
    b->last_ms = sv->at_ms < now_ms ? sv->at_ms : now_ms;
    b->rate_amount = s->rate_amount;
    b->rate_period_ms = s->rate_period_ms;
    if (sv->capacity >= 0 && sv->capacity < s->capacity) {
        /* raised by the restart: until then it refilled up to the
         * capacity it had (a full bucket earns nothing) */
        b->capacity = sv->capacity;
        refill(b, sv->loaded_ms < now_ms ? sv->loaded_ms : now_ms);
    }
    b->capacity = s->capacity;
    if (b->level > b->capacity)
        b->level = b->capacity; /* capacity lowered since: clamp */
}

/* Find or create; a spec with another capacity (config changed) updates the
 * bucket and clamps its level. */
static struct kl_bucket *get(struct kl_buckets *t, const struct kl_bucket_spec *s, int64_t now_ms)
{
    unsigned h = hash(s->name);
    struct kl_bucket *b;
    for (b = t->slots[h]; b; b = b->next)
        if (strcmp(b->name, s->name) == 0)
            break;
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b)
            abort();
        b->name = strdup(s->name);
        if (!b->name)
            abort();
        /* a new bucket starts full; a pooled one holds nothing until leased */
        b->level = s->pooled ? 0 : s->capacity;
        b->last_ms = now_ms;
        b->next = t->slots[h];
        t->slots[h] = b;
        t->count++;
        b->dirty = s->persistent && !s->pooled; /* a pooled one is saved in the pool */
        /* unless it was saved before a restart */
        for (struct saved **pp = &t->saved[h]; *pp; pp = &(*pp)->next) {
            struct saved *sv = *pp;
            if (strcmp(sv->name, s->name) == 0) {
                restore(b, sv, s, now_ms);
                *pp = sv->next;
                free(sv->name);
                free(sv);
                atomic_fetch_sub_explicit(&t->nsaved, 1, memory_order_relaxed);
                break;
            }
        }
    }
    b->persistent = s->persistent && !s->pooled;
    b->pooled = s->pooled;
    b->seen_ms = now_ms;
    if (s->slots) {
        /* a reload that raises the limit adds slots (a balance it would
         * not: money is refilled, not conjured by a larger capacity) */
        b->capacity = b->level = s->capacity;
        b->rate_amount = b->rate_period_ms = 0;
        return b;
    }
    if (s->pooled) {
        /* refill and capacity live in the pool, not here */
        b->capacity = s->capacity;
        b->rate_amount = 0;
        b->rate_period_ms = 0;
        return b;
    }
    if (b->capacity != s->capacity || b->rate_amount != s->rate_amount ||
        b->rate_period_ms != s->rate_period_ms) {
        refill(b, now_ms);
        b->capacity = s->capacity;
        b->rate_amount = s->rate_amount;
        b->rate_period_ms = s->rate_period_ms;
        if (b->level > b->capacity) {
            b->level = b->capacity;
            b->dirty = b->persistent;
        }
    }
    refill(b, now_ms);
    return b;
}

/* Whether forgetting b loses nothing: no exchange holds it, nothing is
 * reserved or waiting to be saved, it has gone unused for a while, and a new
 * bucket of its name would start as it is: full (after refill), or, pooled,
 * holding no lease. One below full must stay, or its caller's spend would
 * be forgotten; a pooled one below zero is spend the pool is still owed. */
static bool forgettable(struct kl_bucket *b, int64_t now_ms)
{
    if (b->holds || b->reserved || b->asking || now_ms - b->seen_ms < KL_BUCKET_IDLE_MS)
        return false;
    if (b->pooled)
        return b->level == 0;
    /* refilled on a copy first: one still short of full is left as it was,
     * not made dirty, to be saved again by the writer, at every pass over
     * it (the refill since is applied when it is used or read back anyway) */
    struct kl_bucket c = *b;
    refill(&c, now_ms);
    if (c.level < c.capacity)
        return false;
    refill(b, now_ms);
    /* a balance not saved yet is saved first: the row left behind must say full */
    return !b->dirty;
}

/* name's saved row is to be deleted (kl_buckets_forgotten). Under the lock. */
static void add_gone(struct kl_buckets *t, const char *name)
{
    size_t n = strlen(name) + 1;
    struct gone *g = malloc(sizeof(*g) + n);
    if (!g)
        abort();
    memcpy(g->name, name, n);
    g->next = t->gone;
    t->gone = g;
}

/* Look at the next nslots slots (stopping after one that brings the
 * buckets looked at to nbuckets) and free the buckets there that can be
 * forgotten. Under the lock. */
static size_t sweep(struct kl_buckets *t, int64_t now_ms, size_t nslots, size_t nbuckets)
{
    size_t freed = 0, looked = 0;
    for (size_t k = 0; k < nslots && looked < nbuckets; k++) {
        struct kl_bucket **pp = &t->slots[t->cursor];
        t->cursor = (t->cursor + 1) % NBUCKETS;
        while (*pp) {
            struct kl_bucket *b = *pp;
            looked++;
            if (!forgettable(b, now_ms)) {
                pp = &b->next;
                continue;
            }
            *pp = b->next;
            if (b->persistent)
                /* its row says full, as a new bucket would be: deleted, so
                 * a restart does not read it back (kl_admit_save) */
                add_gone(t, b->name);
            free(b->name);
            free(b);
            t->count--;
            freed++;
        }
    }
    return freed;
}

size_t kl_buckets_sweep(struct kl_buckets *t, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    size_t freed = sweep(t, now_ms, NBUCKETS, SIZE_MAX);
    pthread_mutex_unlock(&t->lock);
    return freed;
}

/* Whether sv, made live now, would be full whichever quota its name came
 * from (and some quota it could have come from is configured). */
static bool saved_full(const struct saved *sv, int64_t now_ms,
                       bool (*spec_for)(void *arg, const char *name, size_t k, struct kl_bucket_spec *out), void *arg)
{
    struct kl_bucket_spec s;
    size_t k = 0;
    for (; spec_for(arg, sv->name, k, &s); k++) {
        struct kl_bucket b = {.name = sv->name};
        restore(&b, sv, &s, now_ms);
        refill(&b, now_ms);
        if (s.pooled || b.level < b.capacity)
            return false;
    }
    return k > 0;
}

size_t kl_buckets_sweep_saved(struct kl_buckets *t, int64_t now_ms,
                              bool (*spec_for)(void *arg, const char *name, size_t k, struct kl_bucket_spec *out),
                              void *arg)
{
    if (!atomic_load_explicit(&t->nsaved, memory_order_relaxed))
        return 0; /* nearly always: nothing is left from the last start */
    size_t freed = 0;
    pthread_mutex_lock(&t->lock);
    /* as many slots as kl_buckets_reserve's share, stopping after one that
     * brings the balances looked at to 8: each is matched against the
     * quotas, and one that never comes back to full (a spent budget that
     * does not refill) is looked at again at every pass */
    for (size_t k = 0, looked = 0; k < SWEEP_SLOTS && looked < SWEEP_SAVED; k++) {
        struct saved **pp = &t->saved[t->saved_cursor];
        t->saved_cursor = (t->saved_cursor + 1) % NBUCKETS;
        while (*pp) {
            struct saved *sv = *pp;
            looked++;
            if (now_ms - sv->loaded_ms < KL_BUCKET_IDLE_MS || !saved_full(sv, now_ms, spec_for, arg)) {
                pp = &sv->next;
                continue;
            }
            *pp = sv->next;
            add_gone(t, sv->name);
            free(sv->name);
            free(sv);
            atomic_fetch_sub_explicit(&t->nsaved, 1, memory_order_relaxed);
            freed++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return freed;
}

static struct kl_bucket *find(struct kl_buckets *t, const char *name)
{
    struct kl_bucket *b = t->slots[hash(name)];
    while (b && strcmp(b->name, name) != 0)
        b = b->next;
    return b;
}

/* A name made live again since it was forgotten is left out: its new
 * bucket is saved (new, so dirty), maybe already, by a tick that ran
 * between the forgetting and this one (forgotten in the middle of a tick,
 * made again before its save): deleting the row then would lose a balance
 * its caller has spent since, until it changes again. */
size_t kl_buckets_forgotten(struct kl_buckets *t, char ***out)
{
    pthread_mutex_lock(&t->lock);
    struct gone *list = t->gone;
    t->gone = NULL;
    for (struct gone **pp = &list; *pp;) {
        struct gone *g = *pp;
        if (find(t, g->name)) {
            *pp = g->next;
            free(g);
        } else {
            pp = &g->next;
        }
    }
    pthread_mutex_unlock(&t->lock);
    size_t n = 0;
    for (struct gone *g = list; g; g = g->next)
        n++;
    *out = NULL;
    if (!n)
        return 0;
    /* one block: the pointers, then the names */
    size_t bytes = n * sizeof(char *);
    for (struct gone *g = list; g; g = g->next)
        bytes += strlen(g->name) + 1;
    char **v = malloc(bytes);
    if (!v)
        abort();
    char *p = (char *)(v + n);
    size_t i = n;
    for (struct gone *g = list; g;) { /* oldest first */
        struct gone *next = g->next;
        size_t len = strlen(g->name) + 1;
        v[--i] = memcpy(p, g->name, len);
        p += len;
        free(g);
        g = next;
    }
    *out = v;
    return n;
}

size_t kl_buckets_count(struct kl_buckets *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* Seconds until level - reserved >= need, or -1 when never. Without refill
 * only reservations coming back can help (slots freed, estimates settled
 * below what they held): a spent budget can never cover more than its level,
 * except a pooled one, whose level is only what this gateway leased. */
static int64_t wait_for(const struct kl_bucket *b, int64_t need)
{
    int64_t avail = b->level - b->reserved;
    if (need > b->capacity)
        return -1;
    if (b->rate_period_ms <= 0 || b->rate_amount <= 0)
        return need > b->level && !b->pooled ? -1 : 1;
    __int128 deficit = need - avail;
    if (deficit <= 0)
        return 0;
    __int128 ms = (deficit * b->rate_period_ms + b->rate_amount - 1) / b->rate_amount;
    return (int64_t)((ms + 999) / 1000);
}

/* Whether every bucket could cover its amount now (t locked): out[] the
 * buckets (unless out is NULL), and on false *failed and *retry_after_s as
 * for a refusal. */
static bool cover(struct kl_buckets *t, const struct kl_bucket_spec *specs, const int64_t *amounts, size_t n,
                  int64_t now_ms, struct kl_bucket **out, size_t *failed, int64_t *retry_after_s)
{
    bool ok = true, never = false;
    int64_t wait = 0;
    for (size_t i = 0; i < n; i++) {
        struct kl_bucket *b = get(t, &specs[i], now_ms);
        if (out)
            out[i] = b;
        if (b->level - b->reserved >= amounts[i])
            continue;
        int64_t w = wait_for(b, amounts[i]);
        /* the bucket named is the first that never can, else the first short */
        if (!never && (w < 0 || ok))
            *failed = i;
        if (w < 0)
            never = true;
        else if (w > wait)
            wait = w;
        ok = false;
    }
    *retry_after_s = ok ? 0 : never ? -1 : wait;
    return ok;
}

int kl_buckets_check(struct kl_buckets *t, const struct kl_bucket_spec *specs, const int64_t *amounts, size_t n,
                     int64_t now_ms, size_t *failed, int64_t *retry_after_s)
{
    pthread_mutex_lock(&t->lock);
    bool ok = cover(t, specs, amounts, n, now_ms, NULL, failed, retry_after_s);
    pthread_mutex_unlock(&t->lock);
    return ok ? 0 : -1;
}

int kl_buckets_reserve(struct kl_buckets *t, const struct kl_bucket_spec *specs, const int64_t *amounts,
                       size_t n, int64_t now_ms, struct kl_bucket **out, size_t *failed,
                       int64_t *retry_after_s)
{
    pthread_mutex_lock(&t->lock);
    bool ok = cover(t, specs, amounts, n, now_ms, out, failed, retry_after_s);
    if (ok)
        for (size_t i = 0; i < n; i++) {
            out[i]->reserved += amounts[i];
            out[i]->holds++;
            out[i]->dirty = out[i]->persistent;
            /* a look at its balance (/api/quotas, a hook's quota metadata:
             * a reservation of nothing) is no use: it does not keep a
             * pooled lease from going back */
            if (amounts[i])
                out[i]->used_ms = now_ms;
        }
    /* this reservation's share of forgetting idle buckets: none of out[]
     * goes (each was seen just now) */
    sweep(t, now_ms, SWEEP_SLOTS, SWEEP_BUCKETS);
    pthread_mutex_unlock(&t->lock);
    return ok ? 0 : -1;
}

struct kl_bucket *kl_buckets_hold(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b = get(t, spec, now_ms);
    b->holds++;
    pthread_mutex_unlock(&t->lock);
    return b;
}

void kl_buckets_touch(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    get(t, spec, now_ms);
    pthread_mutex_unlock(&t->lock);
}

bool kl_buckets_extend(struct kl_buckets *t, struct kl_bucket *b, int64_t delta, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    refill(b, now_ms);
    bool ok = b->level - b->reserved >= delta;
    if (ok) {
        b->reserved += delta;
        b->dirty = b->persistent;
    }
    pthread_mutex_unlock(&t->lock);
    return ok;
}

void kl_buckets_settle(struct kl_buckets *t, struct kl_bucket *b, int64_t reserved, int64_t actual,
                       int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    refill(b, now_ms);
    b->used_ms = b->seen_ms = now_ms;
    b->reserved -= reserved;
    if (b->holds) /* the exchange lets go: it may be forgotten once idle */
        b->holds--;
    /* a provider's absurd counts (costs saturate at INT64_MAX) must not
     * wrap the level around to a huge balance: it stops at a floor deep
     * enough that nothing refills it soon, and level - reserved (each at
     * most INT64_MAX / 4 from zero: dollar amounts are held to that) never
     * overflows */
    __int128 level = (__int128)b->level - actual;
    b->level = level < KL_LEVEL_FLOOR ? KL_LEVEL_FLOOR : (int64_t)level;
    if (actual != reserved)
        b->dirty = b->persistent;
    pthread_mutex_unlock(&t->lock);
}

void kl_buckets_give_back(struct kl_buckets *t, struct kl_bucket *b, int64_t amount, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    refill(b, now_ms);
    b->used_ms = b->seen_ms = now_ms;
    b->reserved -= amount;
    if (amount)
        b->dirty = b->persistent;
    pthread_mutex_unlock(&t->lock);
}

int kl_buckets_refill(struct kl_buckets *t, const char *name, int64_t amount, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b;
    for (b = t->slots[hash(name)]; b; b = b->next)
        if (strcmp(b->name, name) == 0)
            break;
    if (b) {
        refill(b, now_ms);
        b->level = b->level + amount > b->capacity ? b->capacity : b->level + amount;
        b->dirty = b->persistent;
    }
    pthread_mutex_unlock(&t->lock);
    return b ? 0 : -1;
}

int64_t kl_buckets_shortfall(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t amount,
                             int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b = get(t, spec, now_ms);
    __int128 short_by = (__int128)amount - (b->level - b->reserved);
    pthread_mutex_unlock(&t->lock);
    return short_by <= 0 ? 0 : short_by > INT64_MAX ? INT64_MAX : (int64_t)short_by;
}

void kl_buckets_credit(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t amount, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b = get(t, spec, now_ms);
    b->level += amount;
    b->used_ms = now_ms; /* a lease just taken is for a request about to reserve */
    pthread_mutex_unlock(&t->lock);
}

int64_t kl_buckets_lease_ask(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t need, int64_t slice,
                             int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b = get(t, spec, now_ms);
    int64_t want = b->asking || need > slice ? need : slice;
    b->asking++;
    pthread_mutex_unlock(&t->lock);
    return want;
}

void kl_buckets_lease_asked(struct kl_buckets *t, const struct kl_bucket_spec *spec, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b = get(t, spec, now_ms);
    if (b->asking)
        b->asking--;
    pthread_mutex_unlock(&t->lock);
}

size_t kl_buckets_take_idle(struct kl_buckets *t, int64_t idle_before_ms, struct kl_bucket_lease **out)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct kl_bucket *b = t->slots[i]; b; b = b->next) {
            if (!b->pooled || b->reserved || b->level <= 0 || (idle_before_ms && b->used_ms > idle_before_ms))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = realloc(*out, cap * sizeof(**out));
                if (!*out)
                    abort();
            }
            snprintf((*out)[n].name, sizeof((*out)[n].name), "%s", b->name);
            (*out)[n].amount = b->level;
            b->level = 0;
            n++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

size_t kl_buckets_dirty(struct kl_buckets *t, struct kl_bucket_level **out)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct kl_bucket *b = t->slots[i]; b; b = b->next) {
            if (!b->dirty)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = realloc(*out, cap * sizeof(**out));
                if (!*out)
                    abort();
            }
            snprintf((*out)[n].name, sizeof((*out)[n].name), "%s", b->name);
            (*out)[n].level = b->level - b->reserved;
            (*out)[n].at_ms = b->last_ms;
            (*out)[n].capacity = b->capacity;
            n++;
            b->dirty = false;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

void kl_buckets_mark_dirty(struct kl_buckets *t, const struct kl_bucket_level *v, size_t n)
{
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < n; i++)
        for (struct kl_bucket *b = t->slots[hash(v[i].name)]; b; b = b->next)
            if (strcmp(b->name, v[i].name) == 0)
                b->dirty = b->persistent;
    pthread_mutex_unlock(&t->lock);
}

void kl_buckets_preload(struct kl_buckets *t, const char *name, int64_t level, int64_t at_ms, int64_t capacity,
                        int64_t loaded_ms)
{
    struct saved *sv = calloc(1, sizeof(*sv));
    if (!sv)
        abort();
    sv->name = strdup(name);
    if (!sv->name)
        abort();
    sv->level = level;
    sv->at_ms = at_ms;
    sv->capacity = capacity;
    sv->loaded_ms = loaded_ms;
    unsigned h = hash(name);
    pthread_mutex_lock(&t->lock);
    sv->next = t->saved[h];
    t->saved[h] = sv;
    atomic_fetch_add_explicit(&t->nsaved, 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->lock);
}

bool kl_buckets_saved(struct kl_buckets *t, const char *name)
{
    pthread_mutex_lock(&t->lock);
    struct saved *sv = t->saved[hash(name)];
    while (sv && strcmp(sv->name, name) != 0)
        sv = sv->next;
    pthread_mutex_unlock(&t->lock);
    return sv != NULL;
}

bool kl_buckets_state(struct kl_buckets *t, const char *name, int64_t now_ms, struct kl_bucket_state *out)
{
    pthread_mutex_lock(&t->lock);
    struct kl_bucket *b = t->slots[hash(name)];
    while (b && strcmp(b->name, name) != 0)
        b = b->next;
    if (b) {
        refill(b, now_ms);
        *out = (struct kl_bucket_state){b->level, b->capacity, b->rate_amount, b->rate_period_ms, b->reserved};
    }
    pthread_mutex_unlock(&t->lock);
    return b != NULL;
}

static cJSON *entry(const struct kl_bucket *b)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "bucket", b->name);
    cJSON_AddNumberToObject(o, "current", (double)b->level);
    cJSON_AddNumberToObject(o, "reserved", (double)b->reserved);
    cJSON_AddNumberToObject(o, "available", (double)(b->level - b->reserved));
    cJSON_AddNumberToObject(o, "capacity", (double)b->capacity);
    cJSON_AddNumberToObject(o, "rate_amount", (double)b->rate_amount);
    cJSON_AddNumberToObject(o, "rate_period_ms", (double)b->rate_period_ms);
    return o;
}

cJSON *kl_buckets_report(struct kl_buckets *t, bool (*keep)(void *arg, const char *name),
                         bool (*spec_for)(void *arg, const char *name, struct kl_bucket_spec *out), void *arg,
                         int64_t now_ms)
{
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (struct kl_bucket *b = t->slots[i]; b; b = b->next) {
            if (keep && !keep(arg, b->name))
                continue;
            refill(b, now_ms);
            cJSON_AddItemToArray(arr, entry(b));
        }
        /* a saved balance as its bucket would be now, left as it is: the
         * quota the caller guesses for a name may not be the one that
         * made it, so nothing is made live from the guess */
        for (struct saved *sv = spec_for ? t->saved[i] : NULL; sv; sv = sv->next) {
            struct kl_bucket_spec s;
            if ((keep && !keep(arg, sv->name)) || !spec_for(arg, sv->name, &s))
                continue;
            struct kl_bucket b = {.name = sv->name};
            restore(&b, sv, &s, now_ms);
            refill(&b, now_ms);
            cJSON_AddItemToArray(arr, entry(&b));
        }
    }
    pthread_mutex_unlock(&t->lock);
    return arr;
}
