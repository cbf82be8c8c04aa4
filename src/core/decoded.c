#include "core/decoded.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

bool kl_decode_needed(const char *s, size_t len)
{
    return memmem(s, len, "\\u", 2) || memmem(s, len, "\\/", 2);
}

bool kl_decode_word_escaped(const char *s, size_t len)
{
    const char *end = s + len;
    if (memmem(s, len, "\\/", 2))
        return true;
    for (const char *q = s; (q = memmem(q, (size_t)(end - q), "\\u00", 4)) && end - q >= 6; q += 4) {
        int hi = kl_hex_digit(q[4]), lo = kl_hex_digit(q[5]);
        if (hi < 0 || lo < 0)
            continue;
        int c = hi << 4 | lo;
        if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '.' ||
            c == '-')
            return true;
    }
    return false;
}

/* The four hex digits at s, or -1. */
static long hex4(const char *s)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = kl_hex_digit(s[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static void mark(struct kl_decoded *d, size_t *cap, size_t at, size_t len, size_t raw, size_t raw_len)
{
    if (d->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        d->marks = realloc(d->marks, *cap * sizeof(*d->marks));
        if (!d->marks)
            abort();
    }
    d->marks[d->n++] = (struct kl_decoded_mark){at, len, raw, raw_len};
}

void kl_decode(const char *s, size_t len, struct kl_decoded *d)
{
    memset(d, 0, sizeof(*d));
    d->text = malloc(len + 1);
    if (!d->text)
        abort();
    size_t cap = 0, o = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] != '\\' || i + 1 == len) {
            d->text[o++] = s[i++];
            continue;
        }
        long cp = s[i + 1] == '/' ? '/' : s[i + 1] == 'u' && len - i >= 6 ? hex4(s + i + 2) : -1;
        if (cp < 0) {
            /* an escape kept as written, both bytes: "\\u0041" is a
             * backslash and text, not an escape of A */
            d->text[o++] = s[i++];
            d->text[o++] = s[i++];
            continue;
        }
        size_t raw_len = s[i + 1] == '/' ? 2 : 6;
        if (cp >= 0xd800 && cp < 0xdc00 && len - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u') {
            long lo = hex4(s + i + 8);
            if (lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                raw_len = 12;
            }
        }
        if (cp >= 0xd800 && cp < 0xe000)
            cp = 0xfffd; /* a lone surrogate: what a lenient reader makes of it */
        if (cp < 0x20 || cp == '"' || cp == '\\') {
            /* kept as written, as \n and \" are: the text stays a JSON
             * text's shape, its strings where they were */
            memcpy(d->text + o, s + i, raw_len);
            o += raw_len;
            i += raw_len;
            continue;
        }
        size_t n = put_utf8(d->text + o, (unsigned long)cp);
        mark(d, &cap, o, n, i, raw_len);
        o += n;
        i += raw_len;
    }
    d->text[o] = '\0';
    d->len = o;
}

/* The last mark at or before decoded offset x, or NULL. */
static const struct kl_decoded_mark *mark_at(const struct kl_decoded *d, size_t x)
{
    size_t lo = 0, hi = d->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->marks[mid].at <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? &d->marks[lo - 1] : NULL;
}

size_t kl_decoded_raw(const struct kl_decoded *d, size_t x, bool end)
{
    if (end) {
        if (x == 0)
            return 0;
        x--;
    }
    const struct kl_decoded_mark *m = mark_at(d, x);
    size_t raw;
    if (!m)
        raw = x;
    else if (x < m->at + m->len)
        return end ? m->raw + m->raw_len : m->raw;
    else
        raw = m->raw + m->raw_len + (x - m->at - m->len);
    return end ? raw + 1 : raw;
}

void kl_decoded_free(struct kl_decoded *d)
{
    free(d->text);
    free(d->marks);
    memset(d, 0, sizeof(*d));
}
