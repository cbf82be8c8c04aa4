/* Content codings (Content-Encoding) keyless undoes: gzip and deflate,
 * with zlib, as the bytes arrive.
 *
 * Keyless asks providers for identity, since it reads usage, tool calls and
 * an echoed key from the plain body. A server that compresses anyway has
 * its body inflated by the native HTTP/1.1 client, and the plain bytes go
 * on to the caller (as libcurl does on the https:// path), so everything
 * after sees only plain bodies; a request body a caller compressed is
 * inflated the same way (listen/body.h). A gzip body may be
 * several members (RFC 1952); "deflate" is a zlib stream (RFC 9110), or
 * the raw deflate some servers send under that name, told apart by its
 * first two bytes.
 *
 * The decoder lives in its owner's memory and owns zlib's state: free it
 * with kl_decoder_end. */
#ifndef KL_CODING_H
#define KL_CODING_H

#include <stdbool.h>
#include <stddef.h>

#include <zlib.h>

/* A body's content coding, as its Content-Encoding names it. */
enum kl_coding {
    KL_CODING_IDENTITY,
    KL_CODING_GZIP,             /* gzip, x-gzip */
    KL_CODING_DEFLATE,
    KL_CODING_OTHER,            /* br, zstd, compress, a list of codings ... */
};

/* The coding a Content-Encoding value v[0..n) (trimmed) names. */
enum kl_coding kl_coding_named(const char *v, size_t n);

struct kl_decoder {
    z_stream z;
    enum kl_coding coding;
    bool started;               /* zlib's state is set up */
    bool mid;                   /* input came since the last member ended: the body may not end here */
    bool ended;                 /* deflate's one stream ended: what follows is not read */
    unsigned char first;        /* deflate: its first byte, until the second tells zlib's from raw */
    bool have_first;
};

/* coding: gzip or deflate. */
void kl_decoder_init(struct kl_decoder *d, enum kl_coding coding);

/* Inflate in[0..n) and hand each plain piece to out(arg, piece, len).
 * -1 when the bytes do not inflate. */
int kl_decoder_feed(struct kl_decoder *d, const char *in, size_t n,
                       void (*out)(void *, const char *, size_t), void *arg);

/* At the body's end: did it end where a member (or the stream) ends? */
bool kl_decoder_complete(const struct kl_decoder *d);

void kl_decoder_end(struct kl_decoder *d);

#endif
