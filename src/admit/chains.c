#include "admit/chains.h"

#include <stdlib.h>
#include <string.h>

#include "core/lossymap.h"
#include "core/text.h"

#define NSLOTS 65536

struct kl_chains {
    struct kl_lossy_map *sizes; /* key_of(provider, id) -> tokens */
};

/* FNV-1a over provider, a separator no provider id holds, and the id. */
static uint64_t key_of(const char *provider, const char *id, size_t len)
{
    uint64_t h = kl_fnv64(kl_fnv64(KL_FNV64_START, provider, strlen(provider)), "\xff", 1);
    return kl_lossy_key(h, id, len);
}

struct kl_chains *kl_chains_new(void)
{
    struct kl_chains *t = malloc(sizeof(*t));
    if (!t)
        abort();
    t->sizes = kl_lossy_map_new(NSLOTS);
    return t;
}

void kl_chains_free(struct kl_chains *t)
{
    if (!t)
        return;
    kl_lossy_map_free(t->sizes);
    free(t);
}

void kl_chains_put(struct kl_chains *t, const char *provider, const char *id, size_t len, int64_t tokens)
{
    if (!len || tokens < 0)
        return;
    kl_lossy_map_put(t->sizes, key_of(provider, id, len), (uint64_t)tokens);
}

int64_t kl_chains_get(struct kl_chains *t, const char *provider, const char *id, size_t len)
{
    uint64_t tokens;
    if (!len || !kl_lossy_map_get(t->sizes, key_of(provider, id, len), &tokens))
        return -1;
    return (int64_t)tokens;
}
