/* Base64 text in a request, where the guardrails' scan found a string that
 * may be one (guard/scan.c): judged text by its first 3 KiB decoded, then
 * decoded whole. */
#include "guard/attach.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "dialect/evstream.h"

#define MIN_CHARS 16            /* 12 bytes: no shorter text holds a finding worth a decode */
#define HEAD_CHARS 4096         /* decoded to judge whether the whole is text */

static bool b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
           c == '-' || c == '_';
}

/* Is b[0..n) text: UTF-8 without control characters but white space? A
 * sequence cut by the end of a head (cut) does not count against it. */
static bool is_text(const unsigned char *b, size_t n, bool cut)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = b[i];
        if (c < 0x80) {
            if ((c < 0x20 && !(c >= 0x09 && c <= 0x0d)) || c == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t k = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
        if (!k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if (i + j == n)
                return cut;
            if ((b[i + j] & 0xc0) != 0x80)
                return false;
        }
        i += k + 1;
    }
    return true;
}

/* The base64 string that starts at s (just inside its quote), up to its
 * closing quote: its end, or NULL when a byte in it is no base64. */
static const char *b64_end(const char *s, const char *end)
{
    size_t n = 0, pad = 0;
    for (const char *p = s; p < end; p++, n++) {
        if (*p == '"')
            return n - pad >= MIN_CHARS && n % 4 != 1 && pad <= 2 ? p : NULL;
        if (*p == '=')
            pad++;
        else if (pad || !b64((unsigned char)*p))
            return NULL; /* padding only at the end */
    }
    return NULL;
}

/* s[0..n) as standard padded base64 (malloc): base64url's alphabet mapped,
 * padding added. */
static char *standard(const char *s, size_t n, bool *url_safe)
{
    size_t cap = (n + 3) / 4 * 4;
    char *o = malloc(cap + 1), *w = o;
    if (!o)
        abort();
    *url_safe = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-' || c == '_') {
            *url_safe = true;
            c = c == '-' ? '+' : '/';
        }
        *w++ = c;
    }
    while ((size_t)(w - o) < cap)
        *w++ = '=';
    *w = '\0';
    return o;
}

/* s[0..n) decoded (standard(), then into *buf): its length, or -1. */
static long decode(const char *s, size_t n, char **buf, size_t *cap, bool *url_safe)
{
    char *std = standard(s, n, url_safe);
    size_t dlen;
    char *ok = kl_base64_decode_buf(std, strlen(std), buf, cap, &dlen);
    free(std);
    return ok ? (long)dlen : -1;
}

size_t kl_attachments_at(const char *body, size_t len, const size_t *at, size_t n, struct kl_attachment **out)
{
    size_t found = 0, cap = 0, bcap = 0;
    char *buf = NULL;
    bool url_safe;
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *s = body + at[i], *end = body + len;
        if (at[i] >= len)
            continue;
        /* judged by its head before its end is looked for: a megabyte
         * image is left after 3 KiB of it */
        size_t k = 0;
        while (k < HEAD_CHARS && s + k < end && b64((unsigned char)s[k]))
            k++;
        long d;
        if (k == HEAD_CHARS &&
            ((d = decode(s, k, &buf, &bcap, &url_safe)) < 0 || !is_text((const unsigned char *)buf, (size_t)d, true)))
            continue;
        const char *e = b64_end(s, end);
        if (!e || (d = decode(s, (size_t)(e - s), &buf, &bcap, &url_safe)) < 0 ||
            (k < HEAD_CHARS && !is_text((const unsigned char *)buf, (size_t)d, false)))
            continue;
        if (found == cap) {
            cap = cap ? cap * 2 : 4;
            *out = realloc(*out, cap * sizeof(**out));
            if (!*out)
                abort();
        }
        char *text = malloc((size_t)d + 1);
        if (!text)
            abort();
        memcpy(text, buf, (size_t)d + 1);
        (*out)[found++] = (struct kl_attachment){at[i], (size_t)(e - body), text, (size_t)d, url_safe, e[-1] == '='};
    }
    free(buf);
    return found;
}

char *kl_attachment_encode(const struct kl_attachment *a, const char *text, size_t len, size_t *out_len)
{
    char *o = malloc((len + 2) / 3 * 4 + 1);
    if (!o)
        abort();
    size_t n = len ? (size_t)EVP_EncodeBlock((unsigned char *)o, (const unsigned char *)text, (int)len) : 0;
    o[n] = '\0';
    for (size_t i = 0; a->url_safe && i < n; i++)
        o[i] = o[i] == '+' ? '-' : o[i] == '/' ? '_' : o[i];
    while (!a->padded && n && o[n - 1] == '=')
        o[--n] = '\0';
    *out_len = n;
    return o;
}

void kl_attachments_free(struct kl_attachment *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].text);
    free(v);
}
