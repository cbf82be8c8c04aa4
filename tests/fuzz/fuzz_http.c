/* libFuzzer: request heads and chunked bodies. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "listen/http.h"

static void sink(void *arg, const char *p, size_t n)
{
    size_t *total = arg;
    *total += n;
    if (n)
        (void)p[n - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why;
    int n = kl_http_parse_head((const char *)data, size, 4096, &a, &r, &why);
    if (n > 0) {
        for (size_t i = 0; i < r.nheaders; i++)
            (void)strlen(r.headers[i].name);
        (void)kl_http_header(&r, "host");
    }
    kl_arena_free(&a);
    kl_chunked c = {0};
    size_t used, total = 0, off = 0;
    while (off < size) {
        size_t step = (size - off) > 7 ? 7 : size - off;
        enum kl_chunked_result res = kl_chunked_feed(&c, (const char *)data + off, step, &used, sink, &total);
        off += used;
        if (res != KL_CHUNKED_MORE)
            break;
    }
    return 0;
}
