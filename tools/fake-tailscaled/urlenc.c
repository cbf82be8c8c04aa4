#include "urlenc.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int fts_unescape(const char *s, size_t n, int plus_is_space, char **out, size_t *outlen)
{
    char *buf = fts_malloc(n + 1);
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi, lo;
            if (i + 2 >= n) {
                free(buf);
                return -1;
            }
            hi = unhex(s[i + 1]);
            lo = unhex(s[i + 2]);
            if (hi < 0 || lo < 0) {
                free(buf);
                return -1;
            }
            buf[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (s[i] == '+' && plus_is_space) {
            buf[o++] = ' ';
        } else {
            buf[o++] = s[i];
        }
    }
    buf[o] = '\0';
    *out = buf;
    *outlen = o;
    return 0;
}

int fts_form_lookup(const char *q, size_t n, const char *key, char **val, size_t *vlen)
{
    size_t klen = strlen(key);
    size_t pos = 0;

    while (pos < n) {
        const char *pair = q + pos;
        const char *amp = memchr(pair, '&', n - pos);
        size_t plen = amp ? (size_t)(amp - pair) : n - pos;
        pos += plen + (amp ? 1 : 0);

        if (plen == 0 || memchr(pair, ';', plen))
            continue;

        const char *eq = memchr(pair, '=', plen);
        size_t kraw = eq ? (size_t)(eq - pair) : plen;
        char *k, *v;
        size_t kn, vn;
        if (fts_unescape(pair, kraw, 1, &k, &kn) != 0)
            continue;
        if (eq == NULL) {
            v = fts_strdup("");
            vn = 0;
        } else if (fts_unescape(eq + 1, plen - kraw - 1, 1, &v, &vn) != 0) {
            free(k);
            continue;
        }
        int match = kn == klen && memcmp(k, key, klen) == 0;
        free(k);
        if (match) {
            *val = v;
            *vlen = vn;
            return 1;
        }
        free(v);
    }
    return 0;
}
