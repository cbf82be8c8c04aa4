#include "dialect/evstream.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#define PRELUDE 12 /* total length, headers length, prelude CRC */

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void put_be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t crc(const char *p, size_t n)
{
    return (uint32_t)crc32(0L, (const Bytef *)p, (uInt)n);
}

/* Hand out the complete messages at the start of p[0..n); returns how many
 * bytes were used. A prelude that cannot be right breaks the stream: there
 * is no way to find the next boundary, so the rest goes out unframed. */
static size_t split(kl_evs *s, const char *p, size_t n, kl_evs_fn fn, void *arg)
{
    size_t pos = 0;
    while (n - pos >= PRELUDE) {
        const char *m = p + pos;
        uint32_t total = be32(m), hlen = be32(m + 4);
        if (crc(m, 8) != be32(m + 8) || total < PRELUDE + 4 || total > KL_EVS_MAX_MESSAGE ||
            hlen > total - PRELUDE - 4) {
            s->broken = true;
            fn(arg, m, n - pos, false);
            return n;
        }
        if (n - pos < total)
            break;
        fn(arg, m, total, crc(m, total - 4) == be32(m + total - 4));
        pos += total;
    }
    return pos;
}

void kl_evs_feed(kl_evs *s, const char *data, size_t len, kl_evs_fn fn, void *arg)
{
    if (len == 0)
        return;
    if (s->broken) {
        fn(arg, data, len, false);
        return;
    }
    if (s->len == 0) { /* whole messages go out from the caller's bytes, uncopied */
        size_t used = split(s, data, len, fn, arg);
        data += used;
        len -= used;
        if (len == 0)
            return;
    }
    if (s->len + len > s->cap) {
        size_t c = s->cap ? s->cap : 4096;
        while (c < s->len + len)
            c *= 2;
        char *b = realloc(s->buf, c);
        if (!b)
            abort();
        s->buf = b;
        s->cap = c;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    if (s->len == len && s->len < PRELUDE)
        return; /* just carried over from the caller's bytes: nothing complete */
    size_t used = split(s, s->buf, s->len, fn, arg);
    memmove(s->buf, s->buf + used, s->len - used);
    s->len -= used;
}

void kl_evs_flush(kl_evs *s, kl_evs_fn fn, void *arg)
{
    if (s->len)
        fn(arg, s->buf, s->len, false);
    s->len = 0;
}

void kl_evs_discard(kl_evs *s)
{
    s->len = 0;
}

void kl_evs_free(kl_evs *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

static bool name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(name, want, n) == 0;
}

int kl_evs_decode(const char *raw, size_t len, struct kl_evs_msg *m)
{
    memset(m, 0, sizeof(*m));
    if (len < PRELUDE + 4)
        return -1;
    uint32_t hlen = be32(raw + 4);
    if (hlen > len - PRELUDE - 4)
        return -1;
    size_t pos = PRELUDE, end = PRELUDE + hlen;
    while (pos < end) {
        size_t nlen = (unsigned char)raw[pos];
        if (nlen == 0 || pos + 1 + nlen + 1 > end)
            return -1;
        const char *name = raw + pos + 1;
        unsigned type = (unsigned char)raw[pos + 1 + nlen];
        pos += 1 + nlen + 1;
        static const signed char fixed[] = {0, 0, 1, 2, 4, 8, -1, -1, 8, 16}; /* -1: 2-byte length first */
        if (type >= sizeof(fixed))
            return -1;
        size_t vlen;
        const char *value;
        if (fixed[type] >= 0) {
            vlen = (size_t)fixed[type];
            value = raw + pos;
        } else {
            if (pos + 2 > end)
                return -1;
            vlen = (size_t)((unsigned char)raw[pos] << 8 | (unsigned char)raw[pos + 1]);
            pos += 2;
            value = raw + pos;
        }
        if (vlen > end - pos)
            return -1;
        pos += vlen;
        if (type != 7) /* string */
            continue;
        if (name_is(name, nlen, ":message-type")) {
            m->message_type = value;
            m->message_type_len = vlen;
        } else if (name_is(name, nlen, ":event-type")) {
            m->event_type = value;
            m->event_type_len = vlen;
        } else if (name_is(name, nlen, ":exception-type")) {
            m->exception_type = value;
            m->exception_type_len = vlen;
        } else if (name_is(name, nlen, ":error-code")) {
            m->error_code = value;
            m->error_code_len = vlen;
        } else if (name_is(name, nlen, ":content-type")) {
            m->content_type = value;
            m->content_type_len = vlen;
        }
    }
    m->payload = raw + end;
    m->payload_len = len - end - 4;
    return 0;
}

char *kl_evs_encode(kl_arena *a, const char *const *names, const char *const *values, size_t n,
                    const char *payload, size_t payload_len, size_t *out_len)
{
    size_t hlen = 0;
    for (size_t i = 0; i < n; i++)
        hlen += 1 + strlen(names[i]) + 1 + 2 + strlen(values[i]);
    size_t total = PRELUDE + hlen + payload_len + 4;
    char *m = kl_arena_alloc_raw(a, total);
    put_be32(m, (uint32_t)total);
    put_be32(m + 4, (uint32_t)hlen);
    put_be32(m + 8, crc(m, 8));
    size_t pos = PRELUDE;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        m[pos++] = (char)nl; /* names and values here are keyless's own, short */
        memcpy(m + pos, names[i], nl);
        pos += nl;
        m[pos++] = 7;
        m[pos++] = (char)(vl >> 8);
        m[pos++] = (char)vl;
        memcpy(m + pos, values[i], vl);
        pos += vl;
    }
    memcpy(m + pos, payload, payload_len);
    pos += payload_len;
    put_be32(m + pos, crc(m, pos));
    *out_len = total;
    return m;
}

/* Decode into out (len / 4 * 3 + 1 bytes): the length, or -1. */
static long decode64(const char *s, size_t len, char *out)
{
    if (len % 4 || len > INT32_MAX)
        return -1;
    /* padding only at the end (EVP_DecodeBlock would take "a=bc") */
    const char *eq = memchr(s, '=', len);
    if (eq && (size_t)(eq - s) < len - 2)
        return -1;
    if (eq && (size_t)(eq - s) == len - 2 && s[len - 1] != '=')
        return -1;
    int n = len ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len) : 0;
    if (n < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes */
    for (size_t i = len; i > 0 && s[i - 1] == '=' && n > 0; i--)
        n--;
    out[n] = '\0';
    return n;
}

char *kl_base64_decode(kl_arena *a, const char *s, size_t len, size_t *out_len)
{
    char *out = kl_arena_alloc_raw(a, len / 4 * 3 + 1);
    long n = decode64(s, len, out);
    if (n < 0)
        return NULL;
    *out_len = (size_t)n;
    return out;
}

char *kl_base64_decode_buf(const char *s, size_t len, char **buf, size_t *cap, size_t *out_len)
{
    if (len / 4 * 3 + 1 > *cap) {
        char *b = realloc(*buf, len / 4 * 3 + 1);
        if (!b)
            abort();
        *buf = b;
        *cap = len / 4 * 3 + 1;
    }
    long n = decode64(s, len, *buf);
    if (n < 0)
        return NULL;
    *out_len = (size_t)n;
    return *buf;
}
