#include "core/jsonscan.h"

#include <string.h>

/* cJSON skips every byte up to 0x20 as white space; the scanner must agree
 * with it exactly, or a splice could land somewhere cJSON did not look. */
static size_t ws(const char *s, size_t len, size_t i)
{
    while (i < len && (unsigned char)s[i] <= 0x20)
        i++;
    return i;
}

static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return (size_t)-1;
}

size_t kl_json_skip_value(const char *s, size_t len, size_t i)
{
    i = ws(s, len, i);
    if (i >= len)
        return (size_t)-1;
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < len; i++) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, len, i);
                if (i == (size_t)-1)
                    return i;
                i--;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return (size_t)-1;
    }
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && (unsigned char)s[i] > 0x20)
        i++;
    return i;
}

size_t kl_json_object_open(const char *s, size_t len)
{
    size_t i = ws(s, len, 0);
    return (i < len && s[i] == '{') ? i + 1 : (size_t)-1;
}

int kl_json_find_member(const char *s, size_t len, const char *key,
                        size_t *vstart, size_t *vend)
{
    size_t klen = strlen(key);
    size_t i = kl_json_object_open(s, len);
    if (i == (size_t)-1)
        return -1;
    for (;;) {
        i = ws(s, len, i);
        if (i >= len || s[i] != '"')
            return -1;
        size_t kstart = i + 1;
        size_t kend = skip_string(s, len, i);
        if (kend == (size_t)-1)
            return -1;
        int match = (kend - 1 - kstart == klen) && memcmp(s + kstart, key, klen) == 0;
        i = ws(s, len, kend);
        if (i >= len || s[i] != ':')
            return -1;
        size_t v = ws(s, len, i + 1);
        size_t e = kl_json_skip_value(s, len, v);
        if (e == (size_t)-1)
            return -1;
        if (match) {
            *vstart = v;
            *vend = e;
            return 0;
        }
        i = ws(s, len, e);
        if (i >= len || s[i] != ',')
            return -1;
        i++;
    }
}
