#include "admit/chains.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

#define NSLOTS 65536

struct slot {
    uint64_t key;               /* 0: empty */
    int64_t tokens;
};

struct kl_chains {
    pthread_mutex_t lock;
    struct slot slots[NSLOTS];
};

/* FNV-1a over provider, a separator no provider id holds, and the id. */
static uint64_t key_of(const char *provider, const char *id, size_t len)
{
    uint64_t h = kl_fnv64(kl_fnv64(KL_FNV64_START, provider, strlen(provider)), "\xff", 1);
    h = kl_fnv64(h, id, len);
    return h ? h : 1;
}

struct kl_chains *kl_chains_new(void)
{
    struct kl_chains *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void kl_chains_free(struct kl_chains *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void kl_chains_put(struct kl_chains *t, const char *provider, const char *id, size_t len, int64_t tokens)
{
    if (!len || tokens < 0)
        return;
    uint64_t k = key_of(provider, id, len);
    pthread_mutex_lock(&t->lock);
    t->slots[k % NSLOTS] = (struct slot){k, tokens};
    pthread_mutex_unlock(&t->lock);
}

int64_t kl_chains_get(struct kl_chains *t, const char *provider, const char *id, size_t len)
{
    if (!len)
        return -1;
    uint64_t k = key_of(provider, id, len);
    pthread_mutex_lock(&t->lock);
    struct slot s = t->slots[k % NSLOTS];
    pthread_mutex_unlock(&t->lock);
    return s.key == k ? s.tokens : -1;
}
