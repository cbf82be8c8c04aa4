/* libFuzzer: the AWS event stream codec. The input is split whole and in
 * uneven pieces: both must hand out every byte once, in order, and the same
 * verified messages; every verified message's headers are read (within its
 * bounds). The same bytes are also base64-decoded, and sent through the
 * encoder and back. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dialect/evstream.h"

struct seen {
    char *bytes;        /* everything handed out, in order */
    size_t len;
    size_t *ends;       /* where each verified message ends in bytes */
    size_t n;
};

static void on_message(void *arg, const char *raw, size_t len, bool ok)
{
    struct seen *s = arg;
    if (ok) {
        struct kl_evs_msg m;
        if (kl_evs_decode(raw, len, &m) == 0 &&
            (m.payload < raw || m.payload + m.payload_len > raw + len ||
             (m.event_type && (m.event_type < raw || m.event_type + m.event_type_len > raw + len))))
            abort(); /* a field outside its message */
    }
    s->bytes = realloc(s->bytes, s->len + len + 1);
    s->ends = realloc(s->ends, (s->n + 1) * sizeof(*s->ends));
    if (!s->bytes || !s->ends)
        abort();
    memcpy(s->bytes + s->len, raw, len);
    s->len += len;
    if (ok)
        s->ends[s->n++] = s->len;
}

static void split(const uint8_t *data, size_t size, size_t first_step, struct seen *out)
{
    kl_evs e = {0};
    size_t off = 0, step = first_step;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        kl_evs_feed(&e, (const char *)data + off, n, on_message, out);
        off += n;
        step = step * 5 % 23 + 1;
    }
    kl_evs_flush(&e, on_message, out);
    kl_evs_free(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct seen whole = {0}, pieces = {0};
    split(data, size, size ? size : 1, &whole);
    split(data, size, 1, &pieces);
    if (whole.len != size || (size && memcmp(whole.bytes, data, size)) || pieces.len != size ||
        (size && memcmp(pieces.bytes, data, size)))
        abort(); /* bytes lost, duplicated or reordered */
    if (whole.n != pieces.n || (whole.n && memcmp(whole.ends, pieces.ends, whole.n * sizeof(size_t))))
        abort(); /* messages depend on how the bytes arrived */
    free(whole.bytes);
    free(whole.ends);
    free(pieces.bytes);
    free(pieces.ends);

    kl_arena a;
    kl_arena_init(&a);
    size_t n;
    char *dec = kl_base64_decode(&a, (const char *)data, size, &n);
    if (dec && (n > size || dec[n] != '\0'))
        abort();
    /* encode: header value = the input up to its first NUL, payload = all */
    size_t vl = strnlen((const char *)data, size < 200 ? size : 200);
    char *value = kl_arena_strndup(&a, (const char *)data, vl);
    const char *names[] = {":event-type"};
    const char *values[] = {value};
    size_t ml;
    char *msg = kl_evs_encode(&a, names, values, 1, (const char *)data, size, &ml);
    struct kl_evs_msg m;
    struct seen one = {0};
    kl_evs e = {0};
    kl_evs_feed(&e, msg, ml, on_message, &one);
    kl_evs_free(&e);
    if (size + 16 + 14 + vl <= KL_EVS_MAX_MESSAGE &&
        (one.n != 1 || kl_evs_decode(msg, ml, &m) != 0 || m.event_type_len != vl ||
         memcmp(m.event_type, value, vl) || m.payload_len != size || memcmp(m.payload, data, size)))
        abort(); /* what was encoded does not read back */
    free(one.bytes);
    free(one.ends);
    kl_arena_free(&a);
    return 0;
}
