/* The query thread: answers /api/ reads from its own store connection so
 * workers never wait on the database. A worker submits a job; run() happens
 * on the query thread; done() is posted back to the worker's mailbox, and
 * runs even when the worker's loop has ended meanwhile (at shutdown, after
 * its exchanges were closed: done() then finds its exchange gone). */
#ifndef KL_QUERY_H
#define KL_QUERY_H

#include <stdbool.h>

#include "core/worker.h"
#include "record/store.h"

struct kl_query;

struct kl_query_job {
    struct kl_query_job *next;
    kl_worker *w;
    void (*run)(struct kl_store *s, struct kl_query_job *job);  /* query thread */
    void (*done)(struct kl_query_job *job);                      /* worker thread */
};

/* name: the thread's (at most 15 bytes) */
struct kl_query *kl_query_start(struct kl_store *store, const char *name);
void kl_query_stop(struct kl_query *q);
void kl_query_submit(struct kl_query *q, struct kl_query_job *job);

#endif
