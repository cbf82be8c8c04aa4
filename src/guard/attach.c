/* Base64 text in a request, where the guardrails' scan found a string that
 * may be one (guard/scan.c): judged text by its first 3 KiB decoded, then
 * decoded whole. */
#include "guard/attach.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/text.h"
#include "dialect/evstream.h"

#define MIN_CHARS 16            /* 12 bytes: no shorter text holds a finding worth a decode */
#define HEAD_CHARS 4096         /* characters decoded to judge whether the whole is text */

static bool b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
           c == '-' || c == '_';
}

/* Is b[0..n) text? No NUL byte, and at most one byte in 16 a control
 * character other than white space and ESC (a terminal's colours). Not a
 * check of UTF-8: a Latin-1 file is text too. Images, audio and archives
 * hold NULs within their first bytes; a PDF may not, and is no text either:
 * a redaction would move the byte offsets its cross-reference table gives. */
static bool is_text(const unsigned char *b, size_t n)
{
    if (n >= 5 && memcmp(b, "%PDF-", 5) == 0)
        return false;
    size_t controls = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if (c == 0)
            return false;
        controls += (c < 0x20 && !(c >= 0x09 && c <= 0x0d) && c != 0x1b) || c == 0x7f;
    }
    return controls * 16 <= n;
}

/* What walk() read of a base64 string. */
struct b64_read {
    char *std;                  /* its characters as standard base64 (malloc), padding added */
    size_t chars;               /* base64 characters, '=' excluded */
    const char *end;            /* the closing quote, or NULL when walk() stopped before it */
    bool url_safe, padded;
};

/* Read the base64 string that starts at s (just inside its quote), at most
 * max characters of it, as a JSON reader decodes it (\/ and \u00XX are
 * their characters): the line breaks and spaces encoders wrap lines with
 * are skipped, as the providers' decoders skip them. false when a
 * character is no base64 or padding is out of place. */
static bool walk(const char *s, const char *end, size_t max, struct b64_read *r)
{
    size_t cap = 4096, n = 0, pad = 0;
    r->std = malloc(cap);
    if (!r->std)
        abort();
    r->end = NULL;
    r->url_safe = false;
    const char *p = s;
    for (; p < end && n < max; p++) {
        char c = *p;
        if (c == '"') {
            r->end = p;
            break;
        }
        if (c == '\\' && p + 1 < end) {
            /* the string as every JSON reader has it: an escaped line
             * break or '/' (PHP writes "\/"), or any ASCII character as
             * \u00XX, is that character to the provider's decoder */
            if (p[1] == 'n' || p[1] == 'r' || p[1] == 't') {
                p++;
                continue;
            }
            if (p[1] == '/') {
                c = '/';
                p++;
            } else if (p[1] == 'u' && end - p >= 6 && p[2] == '0' && p[3] == '0' && kl_hex_digit(p[4]) >= 0 &&
                       kl_hex_digit(p[4]) < 8 && kl_hex_digit(p[5]) >= 0) {
                c = (char)(kl_hex_digit(p[4]) * 16 + kl_hex_digit(p[5]));
                p += 5;
                if (c == '\n' || c == '\r' || c == '\t')
                    continue;
            }
        }
        if (c == ' ')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad || !b64((unsigned char)c)) {
            free(r->std);
            return false; /* padding only at the end */
        }
        if (c == '-' || c == '_') {
            r->url_safe = true;
            c = c == '-' ? '+' : '/';
        }
        if (n + 4 >= cap) {
            cap *= 2;
            r->std = realloc(r->std, cap);
            if (!r->std)
                abort();
        }
        r->std[n++] = c;
    }
    if (!r->end && p < end && *p == '"')
        r->end = p; /* max reached right at the end */
    if (pad > 2 || n % 4 == 1 || (pad && (n + pad) % 4)) {
        free(r->std);
        return false;
    }
    r->chars = n;
    /* an encoder pads, or does not; with nothing to pad it cannot be told,
     * and padding is what strict decoders ask for */
    r->padded = pad > 0 || n % 4 == 0;
    while (n % 4)
        r->std[n++] = '=';
    r->std[n] = '\0';
    return true;
}

/* r decoded into *buf: its length, or -1. */
static long decode(const struct b64_read *r, char **buf, size_t *cap)
{
    size_t dlen;
    return kl_base64_decode_buf(r->std, strlen(r->std), buf, cap, &dlen) ? (long)dlen : -1;
}

/* Where the base64 of a data: URL starts, p just after "data:": past the
 * comma of a media type ending in ";base64" (its parameters may run long,
 * so this is not left to the scan's expression). NULL when it is no such
 * URL. */
static const char *data_url_payload(const char *p, const char *end)
{
    size_t room = (size_t)(end - p) < 4096 ? (size_t)(end - p) : 4096;
    const char *comma = memchr(p, ',', room), *quote = memchr(p, '"', room);
    if (!comma || (quote && quote < comma) || comma - p < 7 || memcmp(comma - 7, ";base64", 7) != 0)
        return NULL;
    return comma + 1;
}

size_t kl_attachments_at(const char *body, size_t len, const size_t *at, size_t n, struct kl_attachment **out)
{
    size_t found = 0, cap = 0, bcap = 0;
    char *buf = NULL;
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t pos = at[i] >> 1;
        const char *s = body + pos, *end = body + len;
        if (pos >= len || ((at[i] & 1) && !(s = data_url_payload(s, end))))
            continue;
        /* judged by its head before its end is looked for: a megabyte
         * image is left after 3 KiB of it */
        struct b64_read r;
        long d;
        if (!walk(s, end, HEAD_CHARS, &r))
            continue;
        bool whole = r.end != NULL;
        if (r.chars < MIN_CHARS || (d = decode(&r, &buf, &bcap)) < 0 ||
            !is_text((const unsigned char *)buf, (size_t)d)) {
            free(r.std);
            continue;
        }
        if (!whole) {
            free(r.std);
            if (!walk(s, end, SIZE_MAX, &r))
                continue;
            if (!r.end || (d = decode(&r, &buf, &bcap)) < 0) {
                free(r.std);
                continue;
            }
        }
        free(r.std);
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
        (*out)[found++] = (struct kl_attachment){(size_t)(s - body), (size_t)(r.end - body), text, (size_t)d,
                                                 r.url_safe, r.padded};
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
