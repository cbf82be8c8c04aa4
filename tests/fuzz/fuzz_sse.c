/* libFuzzer: SSE splitting and field parsing, fed in uneven pieces. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "account/sse.h"

static void on_event(void *arg, const char *raw, size_t len)
{
    (void)arg;
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kl_sse s = {0};
    size_t off = 0, step = 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        kl_sse_feed(&s, (const char *)data + off, n, on_event, NULL);
        off += n;
        step = step * 3 % 17 + 1;
    }
    kl_sse_flush(&s, on_event, NULL);
    kl_sse_free(&s);
    return 0;
}
