/* Per-exchange bump allocator: everything an exchange allocates while it
 * flows through the pipeline comes from here and is freed in one call when
 * the exchange ends, so no stage has to track individual frees. */
#ifndef KL_ARENA_H
#define KL_ARENA_H

#include <stddef.h>

struct kl_arena_block;

typedef struct kl_arena {
    struct kl_arena_block *head;
    size_t total;               /* bytes obtained from malloc, for metrics */
    size_t block;               /* block size; 0: 4 KiB */
} kl_arena;

void  kl_arena_init(kl_arena *a);
/* An arena of smaller blocks, for a few strings kept long and many times
 * over (a WhoIs answer kept on each connection): a 4 KiB block each cost
 * 10,000 streams 40 MB. */
void  kl_arena_init_blocks(kl_arena *a, size_t block);
void *kl_arena_alloc(kl_arena *a, size_t size);          /* zeroed, 16-aligned */
void *kl_arena_alloc_raw(kl_arena *a, size_t size);      /* not zeroed, 16-aligned */
char *kl_arena_strndup(kl_arena *a, const char *s, size_t n);
char *kl_arena_strdup(kl_arena *a, const char *s);
char *kl_arena_printf(kl_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The strings before the NULL, joined, in the arena. */
char *kl_arena_concat(kl_arena *a, ...) __attribute__((sentinel));
void  kl_arena_free(kl_arena *a);

#endif
