/* libFuzzer: SSE splitting and field parsing. The input is fed once whole
 * and once in uneven pieces: both must give the same events (up to where
 * a "\r\n" split between pieces ends one), and the events (with what the
 * flush hands out) must add up to the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account/sse.h"

struct seen {
    char *bytes;        /* the events' bytes, one after another */
    size_t len;
    size_t *ends;       /* where each event ends in bytes */
    size_t n;
};

static void on_event(void *arg, const char *raw, size_t len)
{
    struct seen *s = arg;
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(raw, len, &ev, &evl, &data, &dl);
    free(data);
    s->bytes = realloc(s->bytes, s->len + len + 1);
    s->ends = realloc(s->ends, (s->n + 1) * sizeof(*s->ends));
    if (!s->bytes || !s->ends)
        abort();
    memcpy(s->bytes + s->len, raw, len);
    s->len += len;
    s->ends[s->n++] = s->len;
}

static void split(const uint8_t *data, size_t size, size_t first_step, struct seen *out)
{
    kl_sse s = {0};
    size_t off = 0, step = first_step;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        kl_sse_feed(&s, (const char *)data + off, n, on_event, out);
        off += n;
        step = step * 3 % 17 + 1;
    }
    kl_sse_flush(&s, on_event, out);
    kl_sse_free(&s);
}

/* An event may end at the '\r' of a "\r\n" when the bytes stopped there
 * (the '\n' then leads the next event, or is handed out alone at the end):
 * count that boundary as after the '\n', once. */
static void normalize(struct seen *s, const uint8_t *data, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t p = s->ends[i];
        if (p > 0 && p < size && data[p - 1] == '\r' && data[p] == '\n')
            p++;
        if (n == 0 || s->ends[n - 1] != p)
            s->ends[n++] = p;
    }
    s->n = n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct seen whole = {0}, pieces = {0};
    split(data, size, size ? size : 1, &whole);
    split(data, size, 1, &pieces);
    if (whole.len != size || (size && memcmp(whole.bytes, data, size)) || pieces.len != size ||
        (size && memcmp(pieces.bytes, data, size)))
        abort();    /* bytes lost, duplicated or reordered */
    /* and the same event boundaries, however the bytes arrived */
    normalize(&whole, data, size);
    normalize(&pieces, data, size);
    if (whole.n != pieces.n || (whole.n && memcmp(whole.ends, pieces.ends, whole.n * sizeof(size_t))))
        abort();
    free(whole.bytes);
    free(whole.ends);
    free(pieces.bytes);
    free(pieces.ends);
    return 0;
}
