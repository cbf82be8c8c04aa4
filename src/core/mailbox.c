#include "core/mailbox.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

struct kl_mail {
    struct kl_mail *next;
    void (*fn)(void *);
    void *arg;
    bool always;                /* runs even after the worker's loop ended (kl_mailbox_free) */
};

/* The worker's event base has no locks (EVENT_BASE_FLAG_NOLOCK: libevent
 * would otherwise take and release a mutex around every event it adds,
 * deletes or runs), so no other thread may touch it, not even with
 * event_active. A post rings an eventfd instead; the worker's loop watches
 * it like any socket. */
struct kl_mailbox {
    pthread_mutex_t lock;
    struct kl_mail *head, *tail;
    int efd;
    struct event *ev;
};

/* On the worker: run everything posted so far, in order. The eventfd is
 * read before the list is taken: a post that finds the list empty rings it
 * again after that, so none is left waiting without a ring. */
static void deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct kl_mailbox *mb = arg;
    uint64_t rings;
    if (read(fd, &rings, sizeof(rings)) < 0) {
        /* EAGAIN: rung and read already; the list says what is there */
    }
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
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->efd < 0) {
        free(mb);
        return -1;
    }
    pthread_mutex_init(&mb->lock, NULL);
    mb->ev = event_new(w->base, mb->efd, EV_READ | EV_PERSIST, deliver, mb);
    if (!mb->ev || event_add(mb->ev, NULL) < 0) {
        if (mb->ev)
            event_free(mb->ev);
        close(mb->efd);
        pthread_mutex_destroy(&mb->lock);
        free(mb);
        return -1;
    }
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
        if (m->always)
            m->fn(m->arg);
        free(m);
        m = next;
    }
    event_free(mb->ev);
    close(mb->efd);
    pthread_mutex_destroy(&mb->lock);
    free(mb);
    w->mailbox = NULL;
}

static void post(kl_worker *w, void (*fn)(void *), void *arg, bool always)
{
    struct kl_mailbox *mb = w->mailbox;
    struct kl_mail *m = malloc(sizeof(*m));
    if (!m)
        abort();
    m->next = NULL;
    m->fn = fn;
    m->arg = arg;
    m->always = always;
    pthread_mutex_lock(&mb->lock);
    bool ring = !mb->head; /* else an earlier post rang and its delivery takes this too */
    if (mb->tail)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    pthread_mutex_unlock(&mb->lock);
    uint64_t one = 1;
    if (ring && write(mb->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the worker has a ring pending */
    }
}

void kl_mailbox_post(kl_worker *w, void (*fn)(void *), void *arg)
{
    post(w, fn, arg, false);
}

void kl_mailbox_post_always(kl_worker *w, void (*fn)(void *), void *arg)
{
    post(w, fn, arg, true);
}
