/* libFuzzer: text a caller chooses outside the body. The first byte picks
 * the field width; the rest is a query string (the credential parameters
 * stripped and read as a workload token is looked for in them, percent-
 * decoding) and, up to its first NUL, an access line's path and word
 * fields: nothing of it may pass for another field or a control on the
 * line (no space, '"', control, U+2028 or bidi override, only UTF-8), and
 * the field decodes to the start of what was received. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/text.h"
#include "core/urlquery.h"
#include "route/route.h"

/* s[0..n) with each %XX read as its byte; a '%' that starts none stays */
static size_t decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && kl_hex_digit(s[i + 1]) >= 0 && kl_hex_digit(s[i + 2]) >= 0) {
            out[o++] = (char)(kl_hex_digit(s[i + 1]) * 16 + kl_hex_digit(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

static void field(const char *s, size_t max, bool path)
{
    struct kl_log_line l = {0};
    if (path)
        kl_log_line_path(&l, s, max);
    else
        kl_log_line_word(&l, s, max);
    if (l.len > max)
        abort();
    for (size_t i = 0; i < l.len; i++) {
        unsigned char c = (unsigned char)l.text[i];
        if (c <= 0x20 || c == 0x7f || c == '"')
            abort();
        if (c == 0xc2 && i + 1 < l.len && (unsigned char)l.text[i + 1] >= 0x80 &&
            (unsigned char)l.text[i + 1] <= 0x9f)
            abort();
        if (c == 0xe2 && i + 2 < l.len &&
            (((unsigned char)l.text[i + 1] == 0x80 && (unsigned char)l.text[i + 2] >= 0xa8 &&
              (unsigned char)l.text[i + 2] <= 0xae) ||
             ((unsigned char)l.text[i + 1] == 0x81 && (unsigned char)l.text[i + 2] >= 0xa6 &&
              (unsigned char)l.text[i + 2] <= 0xa9)))
            abort();
    }
    char *t = malloc(l.len + 1);
    memcpy(t, l.text, l.len);
    t[l.len] = '\0';
    if (kl_utf8_clean_len_n(t, l.len) != l.len)
        abort();
    /* a word escapes every '%', so it decodes to the bytes received; a
     * path keeps its own escapes, so it decodes as they do */
    size_t n = strlen(s);
    char *want = malloc(n + 1), *got = malloc(l.len + 1);
    size_t wl = path ? decode(s, n, want) : n;
    if (!path)
        memcpy(want, s, n);
    size_t gl = decode(t, l.len, got);
    if (gl > wl || memcmp(got, want, gl) != 0)
        abort();
    free(got);
    free(want);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max = 1 + data[0] * 9u;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    kl_arena a;
    kl_arena_init(&a);

    /* a query's credentials, as one is looked for and as one is stripped */
    const char **v = kl_route_query_credentials(&a, s);
    bool any = kl_route_query_credential(s);
    if (v[0] && !any)
        abort();
    for (size_t i = 0; v[i]; i++)
        if (strlen(v[i]) > strlen(s))
            abort();
    const char *kept = kl_route_strip_key_param(&a, s, true);
    if (kept && (kl_route_query_credential(kept) || kl_route_query_credentials(&a, kept)[0]))
        abort();
    (void)kl_route_strip_key_param(&a, s, false);
    const char *rest = s;
    while (kl_query_param_next(&a, &rest, "key"))
        ;
    static const char *const names[] = {"key", "alt", "$key"};
    (void)kl_query_repeated(s, names, 3);

    /* a path segment survives its encoding */
    size_t n = strlen(s);
    const char *enc = kl_path_segment_encode(&a, s);
    const char *dec = kl_path_segment_decode(&a, enc, strlen(enc));
    bool ctl = false;
    for (size_t i = 0; i < n; i++)
        ctl |= (unsigned char)s[i] < 0x20 || s[i] == 0x7f;
    if (!ctl && (!dec || strcmp(dec, s) != 0))
        abort();

    /* the access line's fields */
    field(s, max, true);
    field(s, max, false);
    kl_arena_free(&a);
    free(s);
    return 0;
}
