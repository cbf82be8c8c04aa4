#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fts_oom(size_t size)
{
    fprintf(stderr, "fake-tailscaled: out of memory allocating %zu bytes\n", size);
    abort();
}

void *fts_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        fts_oom(size);
    return p;
}

void *fts_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        fts_oom(n * size);
    return p;
}

void *fts_realloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL)
        fts_oom(size);
    return q;
}

char *fts_memdup(const void *p, size_t n)
{
    char *s = fts_malloc(n + 1);
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

char *fts_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    return fts_memdup(s, len);
}

char *fts_strdup(const char *s)
{
    return fts_memdup(s, strlen(s));
}
