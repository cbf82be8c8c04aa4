/* Allocation helpers for fake-tailscaled.
 *
 * A test fixture has no useful way to degrade when memory runs out, so, as
 * Redis does with zmalloc, these abort instead of returning NULL. That keeps
 * every caller free of out-of-memory branches that would never be tested. */
#ifndef FTS_ALLOC_H
#define FTS_ALLOC_H

#include <stddef.h>

void *fts_malloc(size_t size);
void *fts_calloc(size_t n, size_t size);
void *fts_realloc(void *p, size_t size);
char *fts_strdup(const char *s);
char *fts_strndup(const char *s, size_t n);     /* always NUL-terminated */
char *fts_memdup(const void *p, size_t n);      /* n bytes plus a NUL */

#endif
