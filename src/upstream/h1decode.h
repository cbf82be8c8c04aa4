/* Undoing a response body's content coding on the native HTTP/1.1 path.
 *
 * Keyless asks providers for identity, since it reads usage, tool calls and
 * an echoed key from the plain body. A server that compresses anyway with
 * gzip or deflate has its body inflated here, as it arrives, and the plain
 * bytes go on to the caller (as libcurl does on the https:// path), so
 * everything after this stage sees only plain bodies. A gzip body may be
 * several members (RFC 1952); "deflate" is a zlib stream (RFC 9110), or
 * the raw deflate some servers send under that name, told apart by its
 * first two bytes.
 *
 * The decoder lives in its owner's memory and owns zlib's state: free it
 * with kl_h1_decoder_end. */
#ifndef KL_H1DECODE_H
#define KL_H1DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include <zlib.h>

#include "upstream/h1parse.h"

struct kl_h1_decoder {
    z_stream z;
    enum kl_h1_coding coding;
    bool started;               /* zlib's state is set up */
    bool mid;                   /* input came since the last member ended: the body may not end here */
    bool ended;                 /* deflate's one stream ended: what follows is not read */
    unsigned char first;        /* deflate: its first byte, until the second tells zlib's from raw */
    bool have_first;
};

/* coding: gzip or deflate. */
void kl_h1_decoder_init(struct kl_h1_decoder *d, enum kl_h1_coding coding);

/* Inflate in[0..n) and hand each plain piece to out(arg, piece, len).
 * -1 when the bytes do not inflate. */
int kl_h1_decoder_feed(struct kl_h1_decoder *d, const char *in, size_t n,
                       void (*out)(void *, const char *, size_t), void *arg);

/* At the body's end: did it end where a member (or the stream) ends? */
bool kl_h1_decoder_complete(const struct kl_h1_decoder *d);

void kl_h1_decoder_end(struct kl_h1_decoder *d);

#endif
