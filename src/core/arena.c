#include "core/arena.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KL_ARENA_BLOCK 4096

struct kl_arena_block {
    struct kl_arena_block *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

void kl_arena_init(kl_arena *a)
{
    kl_arena_init_blocks(a, 0);
}

void kl_arena_init_blocks(kl_arena *a, size_t block)
{
    a->head = NULL;
    a->total = 0;
    a->block = block ? (block + 15) & ~(size_t)15 : KL_ARENA_BLOCK;
}

static size_t block_size(const kl_arena *a)
{
    return a->block ? a->block : KL_ARENA_BLOCK; /* 0 in an arena zeroed, not initialised */
}

static struct kl_arena_block *arena_grow(kl_arena *a, size_t need)
{
    size_t size = need > block_size(a) ? need : block_size(a);
    struct kl_arena_block *b = malloc(sizeof(*b) + size);
    if (!b)
        abort(); /* allocation failure is not recoverable mid-exchange */
    b->next = a->head;
    b->used = 0;
    b->size = size;
    a->head = b;
    a->total += size;
    return b;
}

/* Room for size bytes, zeroed only when asked: strings are written over at
 * once, and a megabyte request body copied into the arena need not be
 * cleared first. */
static void *arena_take(kl_arena *a, size_t size, bool zero)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    struct kl_arena_block *b = a->head;
    if (!b || b->size - b->used < size) {
        /* A large request gets its own block so it does not waste the
         * remainder of the current one. */
        if (b && size > block_size(a) / 2) {
            struct kl_arena_block *big = malloc(sizeof(*big) + size);
            if (!big)
                abort();
            big->size = big->used = size;
            big->next = b->next;
            b->next = big;
            a->total += size;
            if (zero)
                memset(big->data, 0, size);
            return big->data;
        }
        b = arena_grow(a, size);
    }
    void *p = b->data + b->used;
    b->used += size;
    if (zero)
        memset(p, 0, size);
    return p;
}

void *kl_arena_alloc(kl_arena *a, size_t size)
{
    return arena_take(a, size, true);
}

void *kl_arena_alloc_raw(kl_arena *a, size_t size)
{
    return arena_take(a, size, false);
}

char *kl_arena_strndup(kl_arena *a, const char *s, size_t n)
{
    char *p = arena_take(a, n + 1, false);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *kl_arena_strdup(kl_arena *a, const char *s)
{
    return kl_arena_strndup(a, s, strlen(s));
}

/* For the strings built on every request (upstream URL and headers, the
 * record's source address): printf's format walk showed in profiles, and
 * these only join strings. */
char *kl_arena_concat(kl_arena *a, ...)
{
    va_list ap;
    size_t total = 1;
    va_start(ap, a);
    for (const char *s; (s = va_arg(ap, const char *));)
        total += strlen(s);
    va_end(ap);
    char *out = arena_take(a, total, false), *o = out;
    va_start(ap, a);
    for (const char *s; (s = va_arg(ap, const char *));) {
        size_t n = strlen(s);
        memcpy(o, s, n);
        o += n;
    }
    va_end(ap);
    *o = '\0';
    return out;
}

/* Formats straight into the current block when the text fits (it nearly
 * always does), so the format string is walked once, not twice. */
char *kl_arena_printf(kl_arena *a, const char *fmt, ...)
{
    struct kl_arena_block *b = a->head;
    size_t room = b ? b->size - b->used : 0;
    char *dst = room ? (char *)b->data + b->used : NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return kl_arena_strdup(a, "");
    if ((size_t)n < room) {
        /* block sizes and offsets are multiples of 16, so this fits */
        b->used += ((size_t)n + 1 + 15) & ~(size_t)15;
        return dst;
    }
    char *p = arena_take(a, (size_t)n + 1, false);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void kl_arena_free(kl_arena *a)
{
    struct kl_arena_block *b = a->head;
    while (b) {
        struct kl_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}
