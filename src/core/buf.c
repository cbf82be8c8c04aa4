#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

void kl_buf_reserve(struct kl_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p)
        abort();
    b->cap = cap;
}

void kl_buf_put(struct kl_buf *b, const void *data, size_t n)
{
    kl_buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void kl_buf_str(struct kl_buf *b, const char *s)
{
    kl_buf_put(b, s, strlen(s));
}
