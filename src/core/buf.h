/* A growing byte buffer, malloc'd, always NUL-terminated after its bytes:
 * for output built piece by piece off the worker's arena (an export object,
 * a spliced request body, SQL text). The caller owns p and frees it. */
#ifndef KL_BUF_H
#define KL_BUF_H

#include <stddef.h>

struct kl_buf {
    char *p;
    size_t len, cap;
};

/* Room for n more bytes (and the NUL after them) at p + len. */
void kl_buf_reserve(struct kl_buf *b, size_t n);
void kl_buf_put(struct kl_buf *b, const void *data, size_t n);
void kl_buf_str(struct kl_buf *b, const char *s);

#endif
