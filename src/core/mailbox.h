/* Handing work to a worker from another thread: the only way anything
 * crosses into a worker's event loop. post() may be called from any thread;
 * the function then runs on the worker's thread. */
#ifndef KL_MAILBOX_H
#define KL_MAILBOX_H

#include "core/worker.h"

struct kl_mail;

int  kl_mailbox_init(kl_worker *w);
void kl_mailbox_free(kl_worker *w);
void kl_mailbox_post(kl_worker *w, void (*fn)(void *arg), void *arg);

#endif
