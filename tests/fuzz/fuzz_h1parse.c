/* libFuzzer: what a provider can send to the native upstream client: a
 * response head (parsed and filtered), then a body framed by it, fed in
 * uneven pieces and inflated when the head names gzip or deflate; plus the
 * URL splitter on the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/coding.h"
#include "upstream/h1parse.h"

static void sink(void *arg, const char *p, size_t n)
{
    size_t *total = arg;
    *total += n;
    if (n)
        (void)p[n - 1];
}

struct coded {
    struct kl_decoder d;
    bool broken;
    size_t total;
};

static void inflate_sink(void *arg, const char *p, size_t n)
{
    struct coded *c = arg;
    if (!c->broken && kl_decoder_feed(&c->d, p, n, sink, &c->total) < 0)
        c->broken = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char *filtered = malloc(2 * size + 1);
    if (!filtered)
        return 0;
    size_t off = 0;
    struct kl_h1_response r;
    const char *why = NULL;
    long n;
    /* Interim answers first, as the client skips them. */
    while ((n = kl_h1_parse_response(in + off, size - off, 4096, &r, filtered, &why)) > 0) {
        if (r.filtered_len > 2 * (size_t)n || filtered[r.filtered_len] != '\0')
            abort();
        off += (size_t)n;
        if (r.status >= 200)
            break;
    }
    if (n > 0) {
        kl_h1_body b;
        kl_h1_body_init(&b, &r);
        size_t total = 0, used;
        struct coded c = {.broken = false};
        bool coded = r.coding == KL_CODING_GZIP || r.coding == KL_CODING_DEFLATE;
        if (coded)
            kl_decoder_init(&c.d, r.coding);
        while (off < size) {
            size_t step = (size - off) > 5 ? 5 : size - off;
            enum kl_h1_body_result res = coded ? kl_h1_body_feed(&b, in + off, step, &used, inflate_sink, &c)
                                               : kl_h1_body_feed(&b, in + off, step, &used, sink, &total);
            if (used > step)
                abort();
            off += used;
            if (res != KL_H1_BODY_MORE)
                break;
        }
        if (coded) {
            (void)kl_decoder_complete(&c.d);
            kl_decoder_end(&c.d);
        }
    }
    free(filtered);

    /* The same bytes as a URL (NUL-terminated copy). */
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    struct kl_h1_url u;
    if (kl_h1_parse_url(url, &u) == 0) {
        if (u.host_len == 0 || u.host + u.host_len > url + size || u.authority_len == 0)
            abort();
        (void)strlen(u.target);
    }
    (void)kl_h1_no_proxy_match(url, "example.internal", 16);
    free(url);
    return 0;
}
