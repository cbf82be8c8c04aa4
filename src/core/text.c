#include "core/text.h"

#include <string.h>

int kl_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

const char *kl_join(kl_arena *a, const char *const *v, size_t n, char sep)
{
    if (!n)
        return NULL;
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        total += strlen(v[i]) + 1;
    char *s = kl_arena_alloc(a, total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[o++] = sep;
        size_t l = strlen(v[i]);
        memcpy(s + o, v[i], l);
        o += l;
    }
    s[o] = '\0';
    return s;
}
