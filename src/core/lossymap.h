/* A map of 64-bit keys to 64-bit values that forgets: a fixed table shared
 * by every worker, under one lock, direct-mapped (a newer key takes an
 * older one's slot). For facts something else still knows once forgotten:
 * the sizes of stored Responses context (admit/chains.h), whose a stored
 * answer is (authorize/chained.h). Keys are hashes; 0 is never a key. */
#ifndef KL_LOSSYMAP_H
#define KL_LOSSYMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kl_lossy_map;

struct kl_lossy_map *kl_lossy_map_new(size_t slots);
void kl_lossy_map_free(struct kl_lossy_map *m);

/* key must not be 0 (kl_lossy_key makes one from bytes). */
void kl_lossy_map_put(struct kl_lossy_map *m, uint64_t key, uint64_t value);
/* The value remembered for key: true and *value, or false. */
bool kl_lossy_map_get(struct kl_lossy_map *m, uint64_t key, uint64_t *value);

/* FNV-1a of s[0..n) continuing from h (KL_FNV64_START to begin), never 0. */
uint64_t kl_lossy_key(uint64_t h, const void *s, size_t n);

#endif
