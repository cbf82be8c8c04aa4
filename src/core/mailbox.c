#include "core/mailbox.h"

#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>

struct kl_mail {
    struct kl_mail *next;
    void (*fn)(void *);
    void *arg;
};

struct kl_mailbox {
    pthread_mutex_t lock;
    struct kl_mail *head, *tail;
    struct event *ev;
};

/* On the worker: run everything posted so far, in order. */
static void deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_mailbox *mb = arg;
    pthread_mutex_lock(&mb->lock);
    struct kl_mail *m = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->lock);
    while (m) {
        struct kl_mail *next = m->next;
        m->fn(m->arg);
        free(m);
        m = next;
    }
}

int kl_mailbox_init(kl_worker *w)
{
    struct kl_mailbox *mb = calloc(1, sizeof(*mb));
    if (!mb)
        return -1;
    pthread_mutex_init(&mb->lock, NULL);
    mb->ev = event_new(w->base, -1, 0, deliver, mb);
    w->mailbox = mb;
    return 0;
}

void kl_mailbox_free(kl_worker *w)
{
    struct kl_mailbox *mb = w->mailbox;
    if (!mb)
        return;
    for (struct kl_mail *m = mb->head; m;) {
        struct kl_mail *next = m->next;
        free(m);
        m = next;
    }
    event_free(mb->ev);
    pthread_mutex_destroy(&mb->lock);
    free(mb);
    w->mailbox = NULL;
}

void kl_mailbox_post(kl_worker *w, void (*fn)(void *), void *arg)
{
    struct kl_mailbox *mb = w->mailbox;
    struct kl_mail *m = malloc(sizeof(*m));
    if (!m)
        abort();
    m->next = NULL;
    m->fn = fn;
    m->arg = arg;
    pthread_mutex_lock(&mb->lock);
    if (mb->tail)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    pthread_mutex_unlock(&mb->lock);
    event_active(mb->ev, EV_READ, 0); /* thread-safe with evthread_use_pthreads */
}
