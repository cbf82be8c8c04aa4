#include "core/decoded.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

/* Both run on every event of a stream: one pass from backslash to
 * backslash (memchr), each judged by what follows it, where two memmem
 * calls cost several times more. An escaped backslash counts as the start
 * of one too (as a byte match would): JSON text inside a string, such as a
 * tool call's arguments, spells an escape so, and whoever parses it reads
 * one. */
bool kl_decode_needed(const char *s, size_t len)
{
    const char *end = s + len;
    for (const char *q = s; (q = memchr(q, '\\', (size_t)(end - q))) && q + 1 < end; q++)
        if (q[1] == 'u' || q[1] == '/')
            return true;
    return false;
}

bool kl_decode_word_escaped(const char *s, size_t len)
{
    const char *end = s + len;
    for (const char *q = s; (q = memchr(q, '\\', (size_t)(end - q))) && q + 1 < end; q++) {
        if (q[1] == '/')
            return true;
        if (q[1] != 'u' || end - q < 6 || q[2] != '0' || q[3] != '0')
            continue;
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

/* A \u escape at s[i] ("\u0041", or with its backslash escaped,
 * "\\u0041"): the code unit, and in *n the bytes it takes; -1 when none. */
static long u_escape(const char *s, size_t len, size_t i, bool nested, size_t *n)
{
    size_t b = nested && i + 1 < len && s[i + 1] == '\\' ? 2 : 1; /* backslashes before the u */
    if (i + b + 5 > len || s[i + b] != 'u')
        return -1;
    *n = b + 5;
    return hex4(s + i + b + 1);
}

/* The unit of s that starts at i, a backslash: how many bytes it takes
 * (*raw_len) and the character it decodes to (*cp), or -1 in *cp for an
 * escape kept as written (\n, \", \\, a \u escape of a control character,
 * a quote or a backslash, anything malformed). With nested (for a scan), a
 * JSON text inside a JSON string (a tool call's arguments, which every SDK
 * parses) is read too: it spells its escapes with the backslash escaped,
 * "\\u0041" an A there, read as one (in other text it is a backslash and
 * "u0041": found rather than missed). Never for reading member names: a
 * "messag\\u0065s" is no "messages" to the provider. */
static void unit(const char *s, size_t len, size_t i, bool nested, size_t *raw_len, long *cp)
{
    *raw_len = i + 1 < len ? 2 : 1;
    *cp = -1;
    if (i + 1 >= len)
        return;
    if (s[i + 1] == '/') {
        *cp = '/';
        return;
    }
    size_t rl = 0, rl2 = 0;
    long c = u_escape(s, len, i, nested, &rl);
    if (c < 0)
        return;
    long lo = c >= 0xd800 && c < 0xdc00 && i + rl < len && s[i + rl] == '\\' ? u_escape(s, len, i + rl, nested, &rl2) : -1;
    if (lo >= 0xdc00 && lo < 0xe000 && rl2 == rl) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        rl += rl2;
    }
    if (c >= 0xd800 && c < 0xe000)
        c = 0xfffd; /* a lone surrogate: what a lenient reader makes of it */
    *raw_len = rl;
    /* kept as written, as \n and \" are: the text stays a JSON text's
     * shape, its strings where they were */
    *cp = c < 0x20 || c == '"' || c == '\\' ? -1 : c;
}

/* The bytes the unit decodes to: its character's UTF-8, or itself. */
static size_t unit_len(size_t raw_len, long cp)
{
    return cp < 0 ? raw_len : cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

void kl_decode(const char *s, size_t len, bool nested, struct kl_decoded *d)
{
    memset(d, 0, sizeof(*d));
    d->nested = nested;
    d->src = s;
    d->src_len = len;
    d->text = malloc(len + 1);
    if (!d->text)
        abort();
    size_t cap = 0, o = 0, escapes = 0;
    for (size_t i = 0; i < len;) {
        const char *bs = memchr(s + i, '\\', len - i);
        size_t plain = bs ? (size_t)(bs - (s + i)) : len - i;
        memcpy(d->text + o, s + i, plain);
        o += plain;
        i += plain;
        if (i == len)
            break;
        size_t rl;
        long cp;
        unit(s, len, i, nested, &rl, &cp);
        if (cp >= 0 && escapes++ % KL_DECODED_STRIDE == 0) {
            if (d->n == cap) {
                cap = cap ? cap * 2 : 16;
                d->marks = realloc(d->marks, cap * sizeof(*d->marks));
                if (!d->marks)
                    abort();
            }
            d->marks[d->n++] = (struct kl_decoded_mark){o, i};
        }
        if (cp >= 0)
            o += put_utf8(d->text + o, (unsigned long)cp);
        else
            memcpy(d->text + o, s + i, rl), o += rl;
        i += rl;
    }
    d->text[o] = '\0';
    d->len = o;
}

/* The last checkpoint at or before decoded offset x, or NULL. */
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
    size_t at = m ? m->at : 0, raw = m ? m->raw : 0;
    const char *s = d->src;
    while (raw < d->src_len) {
        const char *bs = memchr(s + raw, '\\', d->src_len - raw);
        size_t plain = bs ? (size_t)(bs - (s + raw)) : d->src_len - raw;
        if (x < at + plain)
            return raw + (x - at) + (end ? 1 : 0);
        at += plain;
        raw += plain;
        if (raw == d->src_len)
            break;
        size_t rl;
        long cp;
        unit(s, d->src_len, raw, d->nested, &rl, &cp);
        size_t dl = unit_len(rl, cp);
        if (x < at + dl)
            /* inside a decoded character (or a kept escape, byte for byte) */
            return cp < 0 ? raw + (x - at) + (end ? 1 : 0) : end ? raw + rl : raw;
        at += dl;
        raw += rl;
    }
    return d->src_len;
}

void kl_decoded_free(struct kl_decoded *d)
{
    free(d->text);
    free(d->marks);
    memset(d, 0, sizeof(*d));
}
