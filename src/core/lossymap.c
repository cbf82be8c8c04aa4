#include "core/lossymap.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/text.h"

struct slot {
    uint64_t key;               /* 0: empty */
    uint64_t value;
};

struct kl_lossy_map {
    pthread_mutex_t lock;
    size_t n;
    struct slot slots[];
};

struct kl_lossy_map *kl_lossy_map_new(size_t slots)
{
    struct kl_lossy_map *m = calloc(1, sizeof(*m) + slots * sizeof(struct slot));
    if (!m)
        abort();
    pthread_mutex_init(&m->lock, NULL);
    m->n = slots;
    return m;
}

void kl_lossy_map_free(struct kl_lossy_map *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void kl_lossy_map_put(struct kl_lossy_map *m, uint64_t key, uint64_t value)
{
    pthread_mutex_lock(&m->lock);
    m->slots[key % m->n] = (struct slot){key, value};
    pthread_mutex_unlock(&m->lock);
}

bool kl_lossy_map_get(struct kl_lossy_map *m, uint64_t key, uint64_t *value)
{
    pthread_mutex_lock(&m->lock);
    struct slot s = m->slots[key % m->n];
    pthread_mutex_unlock(&m->lock);
    if (s.key != key)
        return false;
    *value = s.value;
    return true;
}

uint64_t kl_lossy_key(uint64_t h, const void *s, size_t n)
{
    h = kl_fnv64(h, s, n);
    return h ? h : 1;
}
