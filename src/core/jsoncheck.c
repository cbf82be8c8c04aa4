#include "core/jsoncheck.h"

#include <stdlib.h>
#include <string.h>

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
