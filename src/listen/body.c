#include "listen/body.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zstd.h>

#include "core/coding.h"

/* A growing output buffer, refused past max (a small body may inflate to
 * gigabytes: a decompression bomb stops at the limit). */
struct grow {
    char *p;
    size_t len, cap, max;
    bool over;
};

static void put(void *arg, const char *s, size_t n)
{
    struct grow *g = arg;
    if (g->over)
        return;
    if (g->len + n > g->max) {
        g->over = true;
        return;
    }
    if (g->len + n + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 16384;
        while (cap < g->len + n + 1)
            cap *= 2;
        if (!(g->p = realloc(g->p, cap)))
            abort();
        g->cap = cap;
    }
    memcpy(g->p + g->len, s, n);
    g->len += n;
}

static int zstd_decode(const char *body, size_t len, struct grow *g)
{
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d)
        abort();
    ZSTD_initDStream(d);
    char buf[65536];
    ZSTD_inBuffer in = {body, len, 0};
    size_t rc = 0;
    while (!g->over) {
        ZSTD_outBuffer out = {buf, sizeof(buf), 0};
        rc = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(rc))
            break;
        put(g, buf, out.pos);
        /* done when the input is used and nothing more is pending; a
         * frame not ended (rc > 0) with no input left is cut short */
        if (in.pos == in.size && out.pos < out.size)
            break;
    }
    ZSTD_freeDStream(d);
    return ZSTD_isError(rc) || (rc != 0 && !g->over) ? -1 : 0;
}

int kl_body_decode(const char *coding, const char *body, size_t len, size_t max, char **out, size_t *out_len,
                   enum kl_err_kind *kind, char *msg, size_t msglen)
{
    struct grow g = {.max = max};
    int rc = 0;
    enum kl_coding c = kl_coding_named(coding, strlen(coding));
    if (len == 0) {
        /* nothing to decode */
    } else if (c == KL_CODING_GZIP || c == KL_CODING_DEFLATE) {
        struct kl_decoder d;
        kl_decoder_init(&d, c);
        /* in pieces, so that a bomb stops at the limit rather than being
         * inflated to its end on the worker's loop (at most ~16 MiB past) */
        for (size_t off = 0; off < len && rc == 0 && !g.over; off += 16384)
            rc = kl_decoder_feed(&d, body + off, len - off < 16384 ? len - off : 16384, put, &g);
        if (rc == 0 && !g.over && !kl_decoder_complete(&d))
            rc = -1;
        kl_decoder_end(&d);
    } else if (!strcasecmp(coding, "zstd")) {
        rc = zstd_decode(body, len, &g);
    } else {
        *kind = KL_ERR_INVALID;
        snprintf(msg, msglen, "the request body's Content-Encoding is %.40s: keyless reads gzip, deflate and zstd "
                 "(one of them); send it so or uncompressed", coding);
        return -1;
    }
    if (g.over) {
        free(g.p);
        *kind = KL_ERR_TOO_LARGE;
        snprintf(msg, msglen, "request body is larger than the limit of %zu bytes once decompressed (%.40s)", max,
                 coding);
        return -1;
    }
    if (rc < 0) {
        free(g.p);
        *kind = KL_ERR_INVALID;
        snprintf(msg, msglen, "the request body does not decompress as its Content-Encoding (%.40s) says", coding);
        return -1;
    }
    put(&g, "", 0); /* room for the NUL, even when empty */
    g.p[g.len] = '\0';
    *out = g.p;
    *out_len = g.len;
    return 0;
}
