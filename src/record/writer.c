#include "record/writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/exchange.h"
#include "core/log.h"

struct kl_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct kl_rec **ring;
    size_t cap, head, count;    /* queued records */
    size_t reserved;            /* slots promised but not yet pushed */
    size_t held;                /* in-progress records held at the front (see coalesce_into) */
    int64_t held_until;         /* when the oldest of them is due */
    bool stop;
    struct kl_store *store;
    struct kl_writer_opts o;
    uint64_t written, failures, refused;
    int64_t last_purge_ms, last_tick_ms;
};

/* Retention (Aperture's database.retention): drop old rows, or only their
 * captures — once a minute, or every half retention period when that is
 * shorter, so nothing outlives its retention by more than half again. */
static void purge(struct kl_writer *w)
{
    int64_t now = kl_wall_ms();
    int64_t every = w->o.retention_ms / 2 < 60000 ? w->o.retention_ms / 2 : 60000;
    if (every < 500)
        every = 500;
    if (!w->o.retention_ms || now - w->last_purge_ms < every)
        return;
    w->last_purge_ms = now;
    char before[32], first_id[14], err[256];
    snprintf(before, sizeof(before), "%lld", (long long)(now - w->o.retention_ms));
    kl_store_id_floor(first_id, now - w->o.retention_ms); /* the range on the primary key */
    const char *params[] = {first_id, before};
    const char *sql = w->o.purge_captures_only
        ? "UPDATE requests SET request_headers = NULL, response_headers = NULL, request_body = NULL, "
          "response_body = NULL WHERE id < ? AND started_at < ? AND state <> 'in_progress' AND "
          "(request_body IS NOT NULL OR request_headers IS NOT NULL)"
        : "DELETE FROM requests WHERE id < ? AND started_at < ? AND state <> 'in_progress'";
    if (kl_store_exec(w->store, sql, params, 2, NULL, err, sizeof(err)) < 0)
        kl_warn("record retention: %s", err);
}

static void tick(struct kl_writer *w, bool last)
{
    int64_t now = kl_wall_ms();
    if (!w->o.tick || (!last && now - w->last_tick_ms < 1000))
        return;
    w->last_tick_ms = now;
    w->o.tick(w->store, w->o.tick_arg, last);
}

/* An exchange's "in progress" record is only a safety net for a crash (and
 * shows what is running now). When its final record arrives within
 * KL_HOLD_MS, the final one alone is written: one row write per request
 * instead of two. Until then it is held at the front of the queue, and a
 * kill -9 loses the marker of requests younger than that; every other
 * record is written at once. Real model calls mostly take longer and still
 * get their in-progress row after KL_HOLD_MS; quick ones (errors, token
 * counts, embeddings, cached answers) cost one row. */
#define KL_HOLD_MS 100

static uint32_t id_hash(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

/* Sort a batch into the records to write (out) and the in-progress ones to
 * hold (held, at most maxheld, in queue order). An in-progress record whose
 * final record is in the batch is neither: the final one is inserted whole. */
struct sorted {
    size_t nout, nheld;
    int64_t held_until;
};

static struct sorted coalesce_into(struct kl_rec **batch, size_t n, struct kl_rec **slots, size_t nslots,
                                   struct kl_rec **out, struct kl_rec **held, size_t maxheld, int64_t now)
{
    /* slots: an open-addressing set of the batch's final records, by id */
    memset(slots, 0, nslots * sizeof(*slots));
    for (size_t i = 0; i < n; i++) {
        if (batch[i]->state == KL_REC_IN_PROGRESS)
            continue;
        size_t h = id_hash(batch[i]->id) & (nslots - 1);
        while (slots[h])
            h = (h + 1) & (nslots - 1);
        slots[h] = batch[i];
    }
    struct sorted r = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (batch[i]->state == KL_REC_IN_PROGRESS) {
            struct kl_rec *final = NULL;
            for (size_t h = id_hash(batch[i]->id) & (nslots - 1); slots[h] && !final; h = (h + 1) & (nslots - 1))
                if (strcmp(slots[h]->id, batch[i]->id) == 0)
                    final = slots[h];
            if (final) {
                final->begun = false; /* no row to update: the final one is inserted whole */
                continue;
            }
            int64_t age = now - batch[i]->started_ms;
            if (age >= 0 && age < KL_HOLD_MS && r.nheld < maxheld) {
                int64_t due = batch[i]->started_ms + KL_HOLD_MS;
                if (!r.nheld || due < r.held_until)
                    r.held_until = due;
                held[r.nheld++] = batch[i];
                continue;
            }
        }
        out[r.nout++] = batch[i];
    }
    return r;
}

/* A batch the store refused as a whole: each record alone, so one it can
 * never take (the store says so: KL_STORE_REFUSED) does not hold back the
 * rest for ever. Those are logged and dropped. 0 when every record was
 * written or refused; -1 when the store stopped working (try the batch
 * again later: writes are upserts, so records written meanwhile are only
 * written twice). */
static int write_alone(struct kl_writer *w, struct kl_rec **v, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = kl_store_write(w->store, &v[i], 1, err, errlen);
        if (rc == KL_STORE_REFUSED) {
            kl_error("record %s refused by the record store, not kept: %s", v[i]->id, err);
            pthread_mutex_lock(&w->lock);
            w->refused++;
            pthread_mutex_unlock(&w->lock);
        } else if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static void *writer_main(void *arg)
{
    struct kl_writer *w = arg;
    struct kl_rec **batch = calloc(w->o.batch, sizeof(*batch));
    struct kl_rec **out = calloc(w->o.batch, sizeof(*out));
    struct kl_rec **held = calloc(w->o.batch, sizeof(*held));
    size_t nslots = 16;
    while (nslots < 2 * w->o.batch)
        nslots *= 2;
    struct kl_rec **slots = calloc(nslots, sizeof(*slots));
    if (!batch || !out || !held || !slots)
        abort();
    pthread_mutex_lock(&w->lock);
    for (;;) {
        /* nothing new: wait for records, for held ones to fall due (a due
         * time further off than the hold means the clock went back: go on),
         * or a second. The wait itself is on the monotonic clock (see
         * kl_writer_start), so a clock step cannot stretch it. */
        for (;;) {
            int64_t now = kl_wall_ms();
            bool held_not_due = w->count == w->held && now < w->held_until && w->held_until - now <= KL_HOLD_MS;
            if (w->stop || (w->count && !held_not_due))
                break;
            int64_t wait_ms = w->count ? w->held_until - now : 1000;
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += wait_ms / 1000;
            until.tv_nsec += (wait_ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&w->cond, &w->lock, &until);
            if (w->count == w->held && !w->stop) {
                pthread_mutex_unlock(&w->lock);
                purge(w);
                tick(w, false);
                pthread_mutex_lock(&w->lock);
            }
        }
        if (w->count == 0 && w->stop)
            break;
        if (w->count - w->held < w->o.batch / 2 && !w->stop) {
            /* Group commit: let a few more records arrive so one transaction
             * carries them (and a request's in-progress row meets its final
             * row), instead of one transaction per record. */
            pthread_mutex_unlock(&w->lock);
            struct timespec gather = {0, 2 * 1000000};
            nanosleep(&gather, NULL);
            pthread_mutex_lock(&w->lock);
        }
        size_t n = w->count < w->o.batch ? w->count : w->o.batch;
        for (size_t i = 0; i < n; i++)
            batch[i] = w->ring[(w->head + i) % w->cap];
        bool stopping = w->stop;
        pthread_mutex_unlock(&w->lock);

        char err[512];
        /* at most a quarter of a batch held, so new records always get in */
        struct sorted st = coalesce_into(batch, n, slots, nslots, out, held, stopping ? 0 : w->o.batch / 4,
                                         kl_wall_ms());
        int rc = st.nout ? kl_store_write(w->store, out, st.nout, err, sizeof(err)) : 0;
        if (rc == KL_STORE_REFUSED)
            rc = write_alone(w, out, st.nout, err, sizeof(err));
        if (rc < 0) {
            /* Keep the records and try again; meanwhile the queue fills and
             * new requests are refused rather than records dropped. */
            w->failures++;
            if (w->failures == 1 || w->failures % 60 == 0)
                kl_error("record store write failed (%llu times; %zu records waiting): %s",
                         (unsigned long long)w->failures, n, err);
            struct timespec pause = {0, 500 * 1000000};
            nanosleep(&pause, NULL);
            pthread_mutex_lock(&w->lock);
            if (w->stop && w->failures > 20)
                break; /* the store is gone; give up at shutdown */
            continue;
        }
        for (size_t i = 0, h = 0; i < n; i++) {
            if (h < st.nheld && batch[i] == held[h])
                h++;
            else
                kl_rec_free(batch[i]);
        }
        purge(w);
        tick(w, false);
        pthread_mutex_lock(&w->lock);
        /* the held records go back to the front of the queue, in order */
        size_t done = n - st.nheld;
        for (size_t h = 0; h < st.nheld; h++)
            w->ring[(w->head + done + h) % w->cap] = held[h];
        w->head = (w->head + done) % w->cap;
        w->count -= done;
        w->written += done;
        w->held = st.nheld;
        w->held_until = st.held_until;
    }
    pthread_mutex_unlock(&w->lock);
    tick(w, true);
    free(batch);
    free(out);
    free(held);
    free(slots);
    return NULL;
}

struct kl_writer *kl_writer_start(struct kl_store *store, const struct kl_writer_opts *o)
{
    struct kl_writer *w = calloc(1, sizeof(*w));
    if (!w)
        abort();
    w->o = *o;
    if (!w->o.queue)
        w->o.queue = 65536;
    if (!w->o.batch)
        w->o.batch = 512;
    w->cap = w->o.queue;
    w->ring = calloc(w->cap, sizeof(*w->ring));
    if (!w->ring)
        abort();
    w->store = store;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_create(&w->thread, NULL, writer_main, w);
    pthread_setname_np(w->thread, "kl-writer"); /* for top -H, ps -L, perf */
    return w;
}

void kl_writer_stop(struct kl_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    if (w->count)
        kl_error("record store: %zu records could not be written at shutdown", w->count);
    for (size_t i = 0; i < w->count; i++)
        kl_rec_free(w->ring[(w->head + i) % w->cap]);
    kl_store_close(w->store);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->ring);
    free(w);
}

bool kl_writer_reserve(struct kl_writer *w, size_t n)
{
    pthread_mutex_lock(&w->lock);
    bool ok = w->count + w->reserved + n <= w->cap;
    if (ok)
        w->reserved += n;
    pthread_mutex_unlock(&w->lock);
    return ok;
}

void kl_writer_unreserve(struct kl_writer *w, size_t n)
{
    pthread_mutex_lock(&w->lock);
    w->reserved -= n;
    pthread_mutex_unlock(&w->lock);
}

void kl_writer_push(struct kl_writer *w, struct kl_rec *r)
{
    pthread_mutex_lock(&w->lock);
    w->reserved--;
    w->ring[(w->head + w->count) % w->cap] = r;
    w->count++;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

void kl_writer_stats(struct kl_writer *w, struct kl_writer_stats *out)
{
    pthread_mutex_lock(&w->lock);
    out->written = w->written;
    out->queued = w->count;
    out->failures = w->failures;
    out->refused = w->refused;
    pthread_mutex_unlock(&w->lock);
}
