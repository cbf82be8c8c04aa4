#include "core/coding.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

enum kl_coding kl_coding_named(const char *v, size_t n)
{
    if (n == 0 || (n == 8 && strncasecmp(v, "identity", 8) == 0))
        return KL_CODING_IDENTITY; /* an empty value names no coding */
    if ((n == 4 && strncasecmp(v, "gzip", 4) == 0) || (n == 6 && strncasecmp(v, "x-gzip", 6) == 0))
        return KL_CODING_GZIP;
    if (n == 7 && strncasecmp(v, "deflate", 7) == 0)
        return KL_CODING_DEFLATE;
    return KL_CODING_OTHER;
}

void kl_decoder_init(struct kl_decoder *d, enum kl_coding coding)
{
    memset(d, 0, sizeof(*d));
    d->coding = coding;
}

/* zlib's header (RFC 1950): deflate with a window it allows, and a check
 * that makes the two bytes a multiple of 31. */
static bool zlib_header(unsigned char b0, unsigned char b1)
{
    return (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((unsigned)b0 * 256 + b1) % 31 == 0;
}

static int start(struct kl_decoder *d, int window_bits)
{
    if (inflateInit2(&d->z, window_bits) != Z_OK)
        return -1;
    d->started = true;
    return 0;
}

static int inflate_some(struct kl_decoder *d, const unsigned char *in, size_t n,
                        void (*out)(void *, const char *, size_t), void *arg)
{
    char buf[16384];
    while (n > 0 && !d->ended) {
        /* zlib counts in uInt: feed a huge piece in parts */
        uInt part = n > UINT32_MAX ? UINT32_MAX : (uInt)n;
        d->z.next_in = (Bytef *)(uintptr_t)in;
        d->z.avail_in = part;
        d->mid = true;
        int rc;
        do {
            d->z.next_out = (Bytef *)buf;
            d->z.avail_out = sizeof(buf);
            rc = inflate(&d->z, Z_NO_FLUSH);
            size_t got = sizeof(buf) - d->z.avail_out;
            if (got)
                out(arg, buf, got);
            if (rc == Z_STREAM_END) {
                d->mid = false;
                if (d->coding != KL_CODING_GZIP) {
                    d->ended = true; /* one stream: a server's padding after it is no answer */
                    return 0;
                }
                if (inflateReset(&d->z) != Z_OK)
                    return -1;
                if (d->z.avail_in > 0)
                    d->mid = true; /* the next member */
                rc = Z_OK;
            } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && d->z.avail_in == 0)) {
                return -1;
            }
        } while (d->z.avail_in > 0 || d->z.avail_out == 0);
        in += part;
        n -= part;
    }
    return 0;
}

int kl_decoder_feed(struct kl_decoder *d, const char *in, size_t n,
                       void (*out)(void *, const char *, size_t), void *arg)
{
    const unsigned char *u = (const unsigned char *)in;
    if (!n || d->ended)
        return 0;
    if (!d->started && d->coding == KL_CODING_GZIP && start(d, 15 + 16) < 0)
        return -1;
    if (!d->started) { /* deflate: which kind, from its first two bytes */
        if (!d->have_first) {
            d->first = u[0];
            d->have_first = true;
            d->mid = true;
            u++;
            n--;
            if (!n)
                return 0;
        }
        if (start(d, zlib_header(d->first, u[0]) ? 15 : -15) < 0)
            return -1;
        if (inflate_some(d, &d->first, 1, out, arg) < 0)
            return -1;
    }
    return inflate_some(d, u, n, out, arg);
}

bool kl_decoder_complete(const struct kl_decoder *d)
{
    return !d->mid;
}

void kl_decoder_end(struct kl_decoder *d)
{
    if (d->started)
        inflateEnd(&d->z);
    d->started = false;
}
