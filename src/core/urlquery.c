#include "core/urlquery.h"

#include "core/text.h"

#include <string.h>

char *kl_query_decode(kl_arena *a, const char *s, size_t n)
{
    char *out = kl_arena_alloc(a, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && kl_hex_digit(s[i + 1]) >= 0 && kl_hex_digit(s[i + 2]) >= 0 &&
                   (s[i + 1] != '0' || s[i + 2] != '0')) {
            out[o++] = (char)(kl_hex_digit(s[i + 1]) * 16 + kl_hex_digit(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

const char *kl_query_param_next(kl_arena *a, const char **query, const char *name)
{
    if (!*query)
        return NULL;
    size_t nl = strlen(name);
    const char *p = *query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *v = NULL;
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=')
            v = kl_query_decode(a, p + nl + 1, len - nl - 1);
        else if (len == nl && strncmp(p, name, nl) == 0)
            v = "";
        p += len;
        if (*p == '&')
            p++;
        if (v) {
            *query = p;
            return v;
        }
    }
    *query = p;
    return NULL;
}

const char *kl_query_param(kl_arena *a, const char *query, const char *name)
{
    return kl_query_param_next(a, &query, name);
}

const char *kl_query_repeated(const char *query, const char *const *names, size_t n)
{
    for (size_t k = 0; query && k < n; k++) {
        size_t nl = strlen(names[k]), seen = 0;
        for (const char *p = query; *p;) {
            size_t len = strcspn(p, "&");
            if (len >= nl && strncmp(p, names[k], nl) == 0 && (len == nl || p[nl] == '=') && ++seen == 2)
                return names[k];
            p += len;
            if (*p == '&')
                p++;
        }
    }
    return NULL;
}

char *kl_path_segment_decode(kl_arena *a, const char *s, size_t n)
{
    char *out = kl_arena_alloc(a, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || kl_hex_digit(s[i + 1]) < 0 || kl_hex_digit(s[i + 2]) < 0)
                return NULL;
            c = (unsigned char)(kl_hex_digit(s[i + 1]) * 16 + kl_hex_digit(s[i + 2]));
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return NULL;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

char *kl_path_segment_encode(kl_arena *a, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = kl_arena_alloc(a, 3 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}
