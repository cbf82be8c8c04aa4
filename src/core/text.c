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

size_t kl_fmt_u64(char *out, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = d[n - 1 - i];
    return n;
}

void kl_fmt_hex(char *out, uint64_t v, size_t n)
{
    while (n--) {
        out[n] = "0123456789abcdef"[v & 15];
        v >>= 4;
    }
}

bool kl_join2(char *out, size_t cap, const char *a, char sep, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (cap == 0 || na + 1 + nb >= cap) {
        if (cap)
            out[0] = '\0';
        return false;
    }
    memcpy(out, a, na);
    out[na] = sep;
    memcpy(out + na + 1, b, nb + 1);
    return true;
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
