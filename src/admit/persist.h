/* Saving and restoring quota balances through the record store. */
#ifndef KL_PERSIST_H
#define KL_PERSIST_H

#include <stddef.h>

#include "record/store.h"

struct kl_buckets;

/* The writer thread's tick: save the balances that changed. */
void kl_admit_save(struct kl_store *s, void *buckets, bool last);
/* At start-up: read saved balances into t. */
int kl_admit_load(struct kl_store *s, struct kl_buckets *t, char *err, size_t errlen);

#endif
