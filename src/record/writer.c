#include "record/writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/exchange.h"
#include "core/log.h"

/* The longest a request waits for a batch (kl_writer_admit) before the
 * store is taken to be stuck rather than busy, unless the options say. */
#define KL_WRITER_WAIT_MS 100
/* How long the writer lets records gather before a transaction with fewer
 * than half a batch. Every commit rewrites the index pages it touched, so at
 * a few thousand requests a second small batches cost the writer several
 * times the CPU per record, on the core the workers need (BENCHMARKS.md). */
#define KL_WRITER_GATHER_MS 10

struct kl_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* the writer waits on it for records */
    pthread_cond_t written_cond;        /* workers wait on it for a batch (kl_writer_admit) */
    struct kl_rec **ring;
    size_t cap, head, count;    /* queued records */
    size_t reserved;            /* slots promised but not yet pushed */
    size_t bytes;               /* the queued records' memory (kl_rec.packed_size) */
    bool stop;
    bool failing;               /* the last write failed */
    bool stalled;               /* a request waited o.wait_ms for a batch in vain */
    uint64_t batches;           /* batches written */
    struct kl_store *store;
    struct kl_writer_opts o;
    uint64_t written, failures, refused, waits;
    int64_t last_purge_ms, last_tick_ms;
};

/* Retention (Aperture's database.retention): drop old rows, or only their
 * captures — once a minute, or every half retention period when that is
 * shorter, so nothing outlives its retention by more than half again; and
 * again at once (after the next batch, or a second when idle) while a pass
 * finds a whole step's worth, so a gateway serving more than a step a
 * minute does not fall behind. With
 * require_export, only rows older than the oldest record still on the
 * export queue: one read of the queue per purge (its two subqueries do not
 * depend on the row), where a per-row "is it queued" test needed an index
 * the writer would pay for on every row, or a scan of the queue per row. */
#define KL_PURGE_STEP 50000
#define KL_PURGE_STEP_SQL "50000"

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
    /* at most KL_PURGE_STEP rows a pass: a first purge of a large backlog
     * is done in steps, each well within a store's statement time limit,
     * not one that never finishes, with batches written between them */
    const char *sql = w->o.purge_captures_only
        ? (w->o.spare_queued
               ? "UPDATE requests SET request_headers = NULL, response_headers = NULL, request_body = NULL, "
                 "response_body = NULL WHERE id IN (SELECT id FROM requests WHERE id < ? AND started_at < ? AND "
                 "state <> 'in_progress' AND (request_body IS NOT NULL OR request_headers IS NOT NULL) AND "
                 "(NOT EXISTS (SELECT 1 FROM export_queue) OR id < (SELECT min(id) FROM export_queue)) "
                 "LIMIT " KL_PURGE_STEP_SQL ")"
               : "UPDATE requests SET request_headers = NULL, response_headers = NULL, request_body = NULL, "
                 "response_body = NULL WHERE id IN (SELECT id FROM requests WHERE id < ? AND started_at < ? AND "
                 "state <> 'in_progress' AND (request_body IS NOT NULL OR request_headers IS NOT NULL) "
                 "LIMIT " KL_PURGE_STEP_SQL ")")
        : (w->o.spare_queued
               ? "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE id < ? AND started_at < ? AND "
                 "state <> 'in_progress' AND "
                 "(NOT EXISTS (SELECT 1 FROM export_queue) OR id < (SELECT min(id) FROM export_queue)) "
                 "LIMIT " KL_PURGE_STEP_SQL ")"
               : "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE id < ? AND started_at < ? AND "
                 "state <> 'in_progress' LIMIT " KL_PURGE_STEP_SQL ")");
    if (kl_store_exec(w->store, sql, params, 2, NULL, err, sizeof(err)) < 0)
        kl_warn("record retention: %s", err);
    else if (kl_store_changed(w->store) >= KL_PURGE_STEP)
        w->last_purge_ms = 0; /* more may be left: the next pass without waiting */
}

static void tick(struct kl_writer *w, bool last)
{
    int64_t now = kl_wall_ms();
    if (!w->o.tick || (!last && now - w->last_tick_ms < 1000))
        return;
    w->last_tick_ms = now;
    w->o.tick(w->store, w->o.tick_arg, last);
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
    if (!batch)
        abort();
    uint64_t failing = 0; /* failed writes in a row */
    int64_t failing_since = 0; /* kl_now_ns of the first of them */
    pthread_mutex_lock(&w->lock);
    for (;;) {
        /* nothing new: wait for records, or a second (on the monotonic
         * clock, see kl_writer_start, so a clock step cannot stretch it) */
        while (!w->stop && !w->count) {
            struct timespec until = kl_mono_deadline(1000);
            pthread_cond_timedwait(&w->cond, &w->lock, &until);
            if (!w->count && !w->stop) {
                pthread_mutex_unlock(&w->lock);
                kl_store_keep(w->store);
                purge(w);
                tick(w, false);
                pthread_mutex_lock(&w->lock);
            }
        }
        if (w->count == 0 && w->stop)
            break;
        if (w->count < w->o.batch / 2 && !w->stop) {
            /* Group commit: let more records arrive so one transaction
             * carries them, until half a batch is queued (kl_writer_push
             * says when) or KL_WRITER_GATHER_MS have passed. */
            struct timespec until = kl_mono_deadline(KL_WRITER_GATHER_MS);
            while (w->count < w->o.batch / 2 && !w->stop &&
                   pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
                ;
        }
        size_t n = w->count < w->o.batch ? w->count : w->o.batch;
        for (size_t i = 0; i < n; i++)
            batch[i] = w->ring[(w->head + i) % w->cap];
        pthread_mutex_unlock(&w->lock);

        char err[512];
        int rc = kl_store_write(w->store, batch, n, err, sizeof(err));
        if (rc == KL_STORE_REFUSED)
            rc = write_alone(w, batch, n, err, sizeof(err));
        if (rc < 0) {
            /* Keep the records and try again; meanwhile the queue fills and
             * new requests are refused rather than records dropped. */
            pthread_mutex_lock(&w->lock);
            uint64_t failures = ++w->failures;
            w->failing = true;
            pthread_cond_broadcast(&w->written_cond);
            pthread_mutex_unlock(&w->lock);
            if (failing++ == 0)
                failing_since = kl_now_ns();
            if (failing == 1 || failing % 60 == 0)
                kl_error("record store write failed (%llu times in a row, %llu in all; %zu records waiting): %s",
                         (unsigned long long)failing, (unsigned long long)failures, n, err);
            struct timespec pause = {0, 500 * 1000000};
            nanosleep(&pause, NULL);
            pthread_mutex_lock(&w->lock);
            /* the store is gone (ten seconds of failures in a row; a try may
             * itself wait out a locked database's busy timeout, so counted in
             * time, not tries): give up at shutdown */
            if (w->stop && kl_now_ns() - failing_since >= 10 * (int64_t)1000000000)
                break;
            continue;
        }
        failing = 0;
        /* the slots are free as soon as the batch is written: requests
         * waiting for it (kl_writer_admit) go on before retention and the
         * quota save, which may take a while, run */
        pthread_mutex_lock(&w->lock);
        w->head = (w->head + n) % w->cap;
        w->count -= n;
        for (size_t i = 0; i < n; i++)
            w->bytes -= batch[i]->packed_size;
        w->written += n;
        w->batches++;
        w->failing = w->stalled = false;
        pthread_cond_broadcast(&w->written_cond);
        pthread_mutex_unlock(&w->lock);
        for (size_t i = 0; i < n; i++)
            kl_rec_free(batch[i]);
        purge(w);
        tick(w, false);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    tick(w, true);
    free(batch);
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
    if (!w->o.wait_ms)
        w->o.wait_ms = KL_WRITER_WAIT_MS;
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
    pthread_cond_init(&w->written_cond, &ca);
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
    pthread_cond_broadcast(&w->written_cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    if (w->count)
        kl_error("record store: %zu records could not be written at shutdown", w->count);
    for (size_t i = 0; i < w->count; i++)
        kl_rec_free(w->ring[(w->head + i) % w->cap]);
    kl_store_close(w->store);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->written_cond);
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

/* Queued records above which a new request waits for the writer: two
 * batches, or half the queue when that is less. */
static size_t high_water(const struct kl_writer *w)
{
    size_t hw = 2 * w->o.batch;
    return hw < w->cap / 2 ? hw : w->cap / 2;
}

/* A writer that falls behind because it does not get the CPU (it shares a
 * core with a worker that takes requests faster than their records are
 * written) would fill the queue, and then requests get 503 although the
 * store works. So a request that arrives with more than high_water()
 * records queued waits, in its worker, for the batch being written: the
 * worker sleeps, the writer runs, and the callers wait a little longer
 * instead of being refused. A store that fails, or writes no batch within
 * wait_ms, is not waited for again until it writes one: then the
 * queue fills and requests are refused as before, rather than every one
 * waiting. */
bool kl_writer_admit(struct kl_writer *w)
{
    pthread_mutex_lock(&w->lock);
    if (w->count > high_water(w) && !w->stop && !w->failing && !w->stalled) {
        uint64_t b0 = w->batches;
        w->waits++;
        struct timespec until = kl_mono_deadline(w->o.wait_ms);
        int rc = 0;
        while (w->batches == b0 && !w->stop && !w->failing && rc == 0)
            rc = pthread_cond_timedwait(&w->written_cond, &w->lock, &until);
        if (w->batches == b0 && rc != 0)
            w->stalled = true;
    }
    /* a store that cannot be written keeps every record in memory: captures
     * of up to two bodies each would take gigabytes before the count
     * bound; past queue_bytes new requests are refused as when it is full
     * (those admitted already still queue theirs, so it is overrun by at
     * most what they carry) */
    bool ok = w->count + w->reserved + 1 <= w->cap && !(w->o.queue_bytes && w->bytes >= w->o.queue_bytes);
    if (ok)
        w->reserved++;
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
    w->bytes += r->packed_size;
    /* the writer waits for a first record, then for half a batch: a wake-up
     * for every record would cost a system call each */
    if (w->count == 1 || w->count == w->o.batch / 2)
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
    out->waits = w->waits;
    pthread_mutex_unlock(&w->lock);
}
