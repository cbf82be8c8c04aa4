/* Handing work to a worker from another thread: the only way anything
 * crosses into a worker's event loop. post() may be called from any thread;
 * the function then runs on the worker's thread. */
#ifndef KL_MAILBOX_H
#define KL_MAILBOX_H

#include "core/worker.h"

struct kl_mail;

int  kl_mailbox_init(kl_worker *w);
/* After the worker's loop has ended: mail posted with
 * kl_mailbox_post_always runs now, on the caller's thread; other mail is
 * dropped. */
void kl_mailbox_free(kl_worker *w);
void kl_mailbox_post(kl_worker *w, void (*fn)(void *arg), void *arg);
/* As kl_mailbox_post, for mail that owns something that must not be lost
 * (a query's answer, a pooled quota's lease): if the worker's loop ends
 * before it runs, it runs when the mailbox is freed. */
void kl_mailbox_post_always(kl_worker *w, void (*fn)(void *arg), void *arg);

#endif
