#include "core/jsoncheck.h"

#include <stdlib.h>
#include <string.h>

#include "core/text.h"

bool kl_json_has_nul_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++) {
        if (s[i] != '\\' || s[i + 1] != 'u' || memcmp(s + i + 2, "0000", 4) != 0)
            continue;
        size_t bs = 0; /* backslashes ending at i: odd means an escape */
        for (size_t k = i + 1; k-- > 0 && s[k] == '\\';)
            bs++;
        if (bs % 2 == 1)
            return true;
    }
    return false;
}

bool kl_json_has_raw_control(const char *s, size_t n)
{
    bool in = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in && c < 0x20)
            return true;
        if (esc)
            esc = false;
        else if (in && c == '\\')
            esc = true;
        else if (c == '"')
            in = !in;
    }
    return false;
}

/* The code unit of the \u escape at s[i] (s[i] the backslash of an
 * escape), or -1. */
static long unit_at(const char *s, size_t n, size_t i)
{
    if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u')
        return -1;
    long v = 0;
    for (size_t k = i + 2; k < i + 6; k++) {
        int d = kl_hex_digit(s[k]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

char *kl_json_lone_surrogates_replaced(const char *s, size_t n)
{
    char *copy = NULL;
    bool paired = false; /* the escape before this one was a high half with its low one here */
    for (size_t i = 0; i + 6 <= n; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] != 'u') {
            i++; /* \\, \" ...: the next byte is not an escape's start */
            paired = false;
            continue;
        }
        long v = unit_at(s, n, i);
        bool lone = false;
        if (v >= 0xd800 && v < 0xdc00) {
            long lo = unit_at(s, n, i + 6);
            paired = lo >= 0xdc00 && lo < 0xe000;
            lone = !paired;
        } else {
            lone = v >= 0xdc00 && v < 0xe000 && !paired;
            paired = false;
        }
        if (lone) {
            if (!copy) {
                copy = malloc(n ? n : 1);
                if (!copy)
                    abort();
                memcpy(copy, s, n);
            }
            memcpy(copy + i + 2, "fffd", 4);
        }
        i += 5;
    }
    return copy;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

bool kl_json_has_duplicate_keys(const cJSON *j)
{
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
        return false;
    size_t n = 0;
    for (const cJSON *c = j->child; c; c = c->next) {
        if (kl_json_has_duplicate_keys(c))
            return true;
        n++;
    }
    if (!cJSON_IsObject(j) || n < 2)
        return false;
    if (n <= 16) { /* most objects: compared pairwise, nothing allocated (a stream's events, bench/'s 3a) */
        for (const cJSON *c = j->child; c; c = c->next)
            for (const cJSON *d = c->next; d; d = d->next)
                if (strcmp(c->string ? c->string : "", d->string ? d->string : "") == 0)
                    return true;
        return false;
    }
    const char **names = malloc(n * sizeof(*names));
    if (!names)
        return true; /* fail closed */
    size_t i = 0;
    for (const cJSON *c = j->child; c; c = c->next)
        names[i++] = c->string ? c->string : "";
    qsort(names, n, sizeof(*names), cmp_names);
    bool dup = false;
    for (i = 1; i < n && !dup; i++)
        dup = strcmp(names[i - 1], names[i]) == 0;
    free(names);
    return dup;
}
