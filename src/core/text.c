#include "core/text.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

char *kl_json_print_arena(kl_arena *a, cJSON *j, const char *prefix, const char *suffix)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s)
        abort();
    char *out = kl_arena_concat(a, prefix, s, suffix, NULL);
    cJSON_free(s);
    return out;
}

void kl_json_wipe_strings(cJSON *o)
{
    for (; o; o = o->next) {
        if (cJSON_IsString(o) && o->valuestring)
            OPENSSL_cleanse(o->valuestring, strlen(o->valuestring));
        kl_json_wipe_strings(o->child);
    }
}

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

uint64_t kl_fnv64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
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

size_t kl_utf8_seq(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0; /* also stops at the terminating NUL */
    return n;
}

/* The index of the first byte of s[0..n) at or above 0x80, or n: eight
 * bytes at a time, since every record's text passes here and nearly all of
 * it is ASCII. */
static size_t ascii_prefix(const char *s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull)
            break;
    }
    while (i < n && (unsigned char)s[i] < 0x80)
        i++;
    return i;
}

size_t kl_utf8_clean_len(const char *s)
{
    return kl_utf8_clean_len_n(s, strlen(s));
}

size_t kl_utf8_clean_len_n(const char *s, size_t len)
{
    size_t ascii = ascii_prefix(s, len);
    if (ascii == len)
        return len;
    size_t n = ascii;
    for (const unsigned char *p = (const unsigned char *)s + ascii; *p;) {
        size_t k = kl_utf8_seq((const char *)p);
        n += k ? k : 3;
        p += k ? k : 1;
    }
    return n;
}

size_t kl_utf8_clean(char *out, const char *s)
{
    size_t len = strlen(s), ascii = ascii_prefix(s, len);
    memcpy(out, s, ascii);
    char *o = out + ascii;
    for (const unsigned char *p = (const unsigned char *)s + ascii; *p;) {
        size_t k = kl_utf8_seq((const char *)p);
        if (k) {
            memcpy(o, p, k);
            o += k;
            p += k;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
            o += 3;
            p++;
        }
    }
    *o = '\0';
    return (size_t)(o - out);
}

static bool two_digits(const char *p)
{
    return p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9';
}

int64_t kl_iso8601_ms(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &n) != 6)
        return 0;
    const char *z = s + n;
    while (*z == '.' || (*z >= '0' && *z <= '9'))
        z++; /* a fraction of a second: not needed at this precision */
    /* an offset from UTC ("+05:00", "-0800"); "Z", "UTC" or nothing is UTC */
    int64_t offset_s = 0;
    if (*z == '+' || *z == '-') {
        if (!two_digits(z + 1))
            return 0;
        const char *m = z[3] == ':' ? z + 4 : z + 3;
        bool minutes = two_digits(m);
        if ((z[3] == ':' && !minutes) || (!minutes && m[0] >= '0' && m[0] <= '9') || (minutes && m[2] >= '0' &&
                                                                                      m[2] <= '9'))
            return 0; /* "+05:", "+053", "+05300" */
        int hh = (z[1] - '0') * 10 + (z[2] - '0'), mm = minutes ? (m[0] - '0') * 10 + (m[1] - '0') : 0;
        if (hh > 23 || mm > 59)
            return 0;
        offset_s = (int64_t)(hh * 3600 + mm * 60) * (*z == '-' ? -1 : 1);
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    int64_t v = (int64_t)t - offset_s;
    return t > 0 && v > 0 ? v * 1000 : 0;
}

size_t kl_xml_field(const char *doc, const char *tag, char *out, size_t outlen)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    out[0] = '\0';
    const char *a = doc ? strstr(doc, open) : NULL;
    const char *b = a ? strstr(a, close) : NULL;
    if (!a || !b)
        return 0;
    a += strlen(open);
    size_t n = (size_t)(b - a) < outlen - 1 ? (size_t)(b - a) : outlen - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)a[i] < 0x20 ? '?' : a[i];
    out[n] = '\0';
    return (size_t)(b - a);
}

const char *kl_text_prefix(kl_arena *a, const char *s, size_t max)
{
    if (!s || strnlen(s, max + 1) <= max)
        return s;
    size_t n = max;
    /* s[n] continuing a character: cut before its lead byte */
    for (int i = 0; i < 3 && n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; i++)
        n--;
    return kl_arena_strndup(a, s, n);
}

size_t kl_text_gist(const char *s, size_t n, char *out, size_t cap)
{
    if (cap < 4) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    size_t o = 0;
    bool space = false, tag = false, cut = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (tag) {
            tag = c != '>';
            space |= !tag;
            continue;
        }
        if (c == '<' && i + 1 < n && (s[i + 1] == '/' || s[i + 1] == '!' || isalpha((unsigned char)s[i + 1]))) {
            tag = true;
            continue;
        }
        if (c <= 0x20 || c == 0x7f) {
            space = true;
            continue;
        }
        size_t need = (space && o ? 1 : 0) + 1;
        if (o + need > cap - 4) {
            cut = true;
            break;
        }
        if (space && o)
            out[o++] = ' ';
        space = false;
        out[o++] = (char)c;
    }
    if (cut) {
        /* a character the cut split goes whole */
        size_t lead = o;
        while (lead > 0 && ((unsigned char)out[lead - 1] & 0xc0) == 0x80)
            lead--;
        if (lead > 0 && (unsigned char)out[lead - 1] >= 0xc0) {
            unsigned char c = (unsigned char)out[lead - 1];
            size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (o - (lead - 1) < want)
                o = lead - 1;
        }
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return o;
}
