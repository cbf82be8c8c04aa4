/* The query thread: answers /api/ reads from its own store connection so
 * workers never wait on the database. A worker submits a job; run() happens
 * on the query thread; done() is posted back to the worker's mailbox, and
 * runs even when the worker's loop has ended meanwhile (at shutdown, after
 * its exchanges were closed: done() then finds its exchange gone). */
#ifndef KL_QUERY_H
#define KL_QUERY_H

#include <stdatomic.h>
#include <stdbool.h>

#include "core/worker.h"
#include "record/store.h"

struct kl_query;
struct kl_exchange;

struct kl_query_job {
    struct kl_query_job *next;
    kl_worker *w;
    struct kl_exchange *ex;     /* the exchange waiting on it; NULL once it has gone (worker thread) */
    atomic_bool gone;           /* the same, for the query thread: run() is then skipped, */
    bool always;                /* unless a change was asked for (an admin's refill) */
    void (*run)(struct kl_store *s, struct kl_query_job *job);  /* query thread */
    void (*done)(struct kl_query_job *job);                      /* worker thread */
};

/* name: the thread's (at most 15 bytes) */
struct kl_query *kl_query_start(struct kl_store *store, const char *name);
void kl_query_stop(struct kl_query *q);

/* Submit job (its run and done set) for ex, whose stage then returns
 * KL_WAIT. If the client goes first, ex->cancel forgets the job, and the
 * query thread skips its run() (but not one marked always): a caller that
 * left wants no answer, and a report over millions of rows, or a look at
 * the quota pool on the session every lease waits on, would hold up every
 * query queued behind it. done() runs either way, to free the job. */
void kl_query_wait(struct kl_query *q, struct kl_query_job *job, struct kl_exchange *ex);

/* For done(): the exchange still waiting on the job (it can no longer be
 * cancelled through it), or NULL when it has gone. */
struct kl_exchange *kl_query_waiter(struct kl_query_job *job);

#endif
