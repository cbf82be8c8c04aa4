#include "record/query.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/exchange.h"
#include "core/log.h"
#include "core/mailbox.h"

struct kl_query {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct kl_query_job *head, *tail;
    bool stop;
    struct kl_store *store;
    char name[16];
};

static void deliver(void *arg)
{
    struct kl_query_job *job = arg;
    job->done(job);
}

static void *query_main(void *arg)
{
    struct kl_query *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cond, &q->lock);
        if (!q->head)
            break;
        struct kl_query_job *job = q->head;
        q->head = job->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->lock);
        if (atomic_load(&job->gone) && !job->always)
            kl_debug("%s: a query whose caller has left is not run", q->name);
        else
            job->run(q->store, job);
        kl_mailbox_post_always(job->w, deliver, job); /* its memory, or a lease's grant, is not lost at exit */
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

struct kl_query *kl_query_start(struct kl_store *store, const char *name)
{
    struct kl_query *q = calloc(1, sizeof(*q));
    if (!q)
        abort();
    q->store = store;
    snprintf(q->name, sizeof(q->name), "%s", name);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    pthread_create(&q->thread, NULL, query_main, q);
    pthread_setname_np(q->thread, name);
    return q;
}

void kl_query_stop(struct kl_query *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    kl_store_close(q->store);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

static void submit(struct kl_query *q, struct kl_query_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->tail)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

/* ex->cancel while it waits: the client has gone */
static void forget(kl_exchange *ex)
{
    struct kl_query_job *job = ex->query_job;
    if (job) {
        job->ex = NULL;
        atomic_store(&job->gone, true);
    }
    ex->query_job = NULL;
}

void kl_query_wait(struct kl_query *q, struct kl_query_job *job, kl_exchange *ex)
{
    job->w = ex->worker;
    job->ex = ex;
    atomic_store(&job->gone, false);
    ex->query_job = job;
    ex->cancel = forget;
    submit(q, job);
}

kl_exchange *kl_query_waiter(struct kl_query_job *job)
{
    kl_exchange *ex = job->ex;
    if (ex) {
        ex->cancel = NULL;
        ex->query_job = NULL;
    }
    return ex;
}
