/* libFuzzer: the skeleton of a whole answer (account/skeleton.h). The first
 * byte picks how much a string and a number array keep (small, so cuts
 * happen everywhere); the rest is fed whole and in uneven pieces, which
 * must give the same bytes. A document cJSON takes gives a skeleton cJSON
 * takes (unless it has a \u escape cJSON reads leniently, "\u12g4", which
 * the skeleton refuses), and one cJSON refuses gives one cJSON refuses. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "account/skeleton.h"

static bool cjson_takes(const char *s, size_t n)
{
    char *z = malloc(n + 1);
    if (!z)
        abort();
    memcpy(z, s, n);
    z[n] = 0;
    cJSON *j = cJSON_ParseWithLengthOpts(z, n + 1, NULL, true);
    cJSON_Delete(j);
    free(z);
    return j != NULL;
}

static bool hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A "\u" not followed by four hex digits, which cJSON reads as U+0000. */
static bool lenient_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u')
            for (size_t k = i + 2; k < i + 6; k++)
                if (k >= n || !hex(s[k]))
                    return true;
        i++;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t skeep = 1 + (data[0] & 15), nkeep = 1 + (data[0] >> 4 & 7);
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    struct kl_skeleton whole = {.string_keep = skeep, .numbers_keep = nkeep};
    kl_skeleton_feed(&whole, in, n);
    struct kl_skeleton parts = {.string_keep = skeep, .numbers_keep = nkeep};
    size_t off = 0, step = 1 + (data[0] & 3);
    while (off < n) {
        size_t k = n - off < step ? n - off : step;
        kl_skeleton_feed(&parts, in + off, k);
        off += k;
        step = step * 5 % 13 + 1;
    }
    if (parts.out.len != whole.out.len || (whole.out.len && memcmp(parts.out.p, whole.out.p, whole.out.len) != 0))
        abort();
    const char *out = whole.out.p ? whole.out.p : "";
    bool in_ok = cjson_takes(in, n), out_ok = cjson_takes(out, whole.out.len);
    if (in_ok && !out_ok && !lenient_escape(in, n))
        abort();
    if (!in_ok && out_ok)
        abort();
    kl_skeleton_free(&whole);
    kl_skeleton_free(&parts);
    return 0;
}
