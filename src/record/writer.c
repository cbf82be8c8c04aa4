#include "record/writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

struct kl_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct kl_rec **ring;
    size_t cap, head, count;    /* queued records */
    size_t reserved;            /* slots promised but not yet pushed */
    bool stop;
    struct kl_store *store;
    struct kl_writer_opts o;
    uint64_t written, failures;
    int64_t last_purge_ms, last_tick_ms;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Retention (Aperture's database.retention): drop old rows, or only their
 * captures — once a minute, or every half retention period when that is
 * shorter, so nothing outlives its retention by more than half again. */
static void purge(struct kl_writer *w)
{
    int64_t now = wall_ms();
    int64_t every = w->o.retention_ms / 2 < 60000 ? w->o.retention_ms / 2 : 60000;
    if (every < 500)
        every = 500;
    if (!w->o.retention_ms || now - w->last_purge_ms < every)
        return;
    w->last_purge_ms = now;
    char before[32], err[256];
    snprintf(before, sizeof(before), "%lld", (long long)(now - w->o.retention_ms));
    const char *params[] = {before};
    const char *sql = w->o.purge_captures_only
        ? "UPDATE requests SET request_headers = NULL, response_headers = NULL, request_body = NULL, "
          "response_body = NULL WHERE started_at < ? AND state <> 'in_progress' AND "
          "(request_body IS NOT NULL OR request_headers IS NOT NULL)"
        : "DELETE FROM requests WHERE started_at < ? AND state <> 'in_progress'";
    if (kl_store_exec(w->store, sql, params, 1, NULL, err, sizeof(err)) < 0)
        kl_warn("record retention: %s", err);
}

static void tick(struct kl_writer *w, bool last)
{
    int64_t now = wall_ms();
    if (!w->o.tick || (!last && now - w->last_tick_ms < 1000))
        return;
    w->last_tick_ms = now;
    w->o.tick(w->store, w->o.tick_arg);
}

/* An exchange's "in progress" record is only a safety net for a crash. When
 * its final record is in the same batch, the final one alone is written:
 * under load most requests then cost one row write, not two. */
static uint32_t id_hash(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

static size_t coalesce_into(struct kl_rec **batch, size_t n, struct kl_rec **slots, size_t nslots,
                            struct kl_rec **out)
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
    size_t m = 0;
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
        }
        out[m++] = batch[i];
    }
    return m;
}

static void *writer_main(void *arg)
{
    struct kl_writer *w = arg;
    struct kl_rec **batch = calloc(w->o.batch, sizeof(*batch));
    struct kl_rec **out = calloc(w->o.batch, sizeof(*out));
    size_t nslots = 16;
    while (nslots < 2 * w->o.batch)
        nslots *= 2;
    struct kl_rec **slots = calloc(nslots, sizeof(*slots));
    if (!batch || !out || !slots)
        abort();
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->count == 0 && !w->stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&w->cond, &w->lock, &until);
            if (w->count == 0 && !w->stop) {
                pthread_mutex_unlock(&w->lock);
                purge(w);
                tick(w, false);
                pthread_mutex_lock(&w->lock);
            }
        }
        if (w->count == 0 && w->stop)
            break;
        if (w->count < w->o.batch / 2 && !w->stop) {
            /* Group commit: let a few more records arrive so one transaction
             * carries them (and a request's in-progress row meets its final
             * row), instead of one fsync'ed transaction per record. */
            pthread_mutex_unlock(&w->lock);
            struct timespec gather = {0, 2 * 1000000};
            nanosleep(&gather, NULL);
            pthread_mutex_lock(&w->lock);
        }
        size_t n = w->count < w->o.batch ? w->count : w->o.batch;
        for (size_t i = 0; i < n; i++)
            batch[i] = w->ring[(w->head + i) % w->cap];
        pthread_mutex_unlock(&w->lock);

        char err[512];
        size_t nw = coalesce_into(batch, n, slots, nslots, out);
        if (kl_store_write(w->store, out, nw, err, sizeof(err)) < 0) {
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
        for (size_t i = 0; i < n; i++)
            kl_rec_free(batch[i]);
        purge(w);
        tick(w, false);
        pthread_mutex_lock(&w->lock);
        w->head = (w->head + n) % w->cap;
        w->count -= n;
        w->written += n;
    }
    pthread_mutex_unlock(&w->lock);
    tick(w, true);
    free(batch);
    free(out);
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
    pthread_cond_init(&w->cond, NULL);
    pthread_create(&w->thread, NULL, writer_main, w);
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
    pthread_mutex_unlock(&w->lock);
}
