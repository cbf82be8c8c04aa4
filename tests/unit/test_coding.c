/* The native client's content decoding: gzip (one member or several),
 * deflate as zlib's stream or raw, fed whole and split at every byte; a
 * body cut short is not complete; bytes that do not inflate are refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/coding.h"

static const char TEXT[] = "data: {\"choices\":[{\"delta\":{\"content\":\"Hello there, hello there\"}}]}\n\n"
                           "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";

/* text compressed with windowBits wb (31: gzip, 15: zlib, -15: raw) */
static size_t squeeze(const char *text, size_t n, int wb, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, wb, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)text;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    return got;
}

struct sink {
    char buf[4096];
    size_t len;
};

static void collect(void *arg, const char *p, size_t n)
{
    struct sink *s = arg;
    assert_true(s->len + n <= sizeof(s->buf));
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

/* Feed in pieces of at most step bytes; the result of the last feed. */
static int run(enum kl_coding c, const unsigned char *in, size_t n, size_t step, struct sink *s, bool *complete)
{
    struct kl_decoder d;
    kl_decoder_init(&d, c);
    s->len = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += step)
        rc = kl_decoder_feed(&d, (const char *)in + i, n - i < step ? n - i : step, collect, s);
    *complete = kl_decoder_complete(&d);
    kl_decoder_end(&d);
    return rc;
}

static void every_coding_every_split(void **state)
{
    (void)state;
    unsigned char z[1024];
    const struct { enum kl_coding c; int wb; } kinds[] = {
        {KL_CODING_GZIP, 31}, {KL_CODING_DEFLATE, 15}, {KL_CODING_DEFLATE, -15}};
    for (size_t k = 0; k < 3; k++) {
        size_t n = squeeze(TEXT, strlen(TEXT), kinds[k].wb, z, sizeof(z));
        for (size_t step = 1; step <= n; step++) {
            struct sink s;
            bool complete;
            assert_int_equal(run(kinds[k].c, z, n, step, &s, &complete), 0);
            assert_true(complete);
            assert_int_equal(s.len, strlen(TEXT));
            assert_memory_equal(s.buf, TEXT, s.len);
        }
    }
}

static void gzip_members_follow_one_another(void **state)
{
    (void)state;
    unsigned char z[2048];
    size_t half = strlen(TEXT) / 2;
    size_t n = squeeze(TEXT, half, 31, z, sizeof(z));
    n += squeeze(TEXT + half, strlen(TEXT) - half, 31, z + n, sizeof(z) - n);
    for (size_t step = 1; step <= n; step++) {
        struct sink s;
        bool complete;
        assert_int_equal(run(KL_CODING_GZIP, z, n, step, &s, &complete), 0);
        assert_true(complete);
        assert_int_equal(s.len, strlen(TEXT));
        assert_memory_equal(s.buf, TEXT, s.len);
    }
}

static void cut_short_and_corrupt(void **state)
{
    (void)state;
    unsigned char z[1024];
    struct sink s;
    bool complete;
    /* cut anywhere before its end: what came is given, the body is not complete */
    size_t n = squeeze(TEXT, strlen(TEXT), 31, z, sizeof(z));
    for (size_t cut = 1; cut < n; cut++) {
        assert_int_equal(run(KL_CODING_GZIP, z, cut, cut, &s, &complete), 0);
        assert_false(complete);
        assert_true(s.len <= strlen(TEXT));
        assert_memory_equal(s.buf, TEXT, s.len);
    }
    /* nothing at all: complete (an empty body) */
    assert_int_equal(run(KL_CODING_GZIP, z, 0, 1, &s, &complete), 0);
    assert_true(complete);
    /* not gzip */
    assert_int_equal(run(KL_CODING_GZIP, (const unsigned char *)TEXT, 40, 40, &s, &complete), -1);
    /* a gzip member followed by bytes that are not one */
    memcpy(z + n, "garbage!", 8);
    assert_int_equal(run(KL_CODING_GZIP, z, n + 8, n + 8, &s, &complete), -1);
    /* deflate's one stream: a server's padding after it is not read */
    n = squeeze(TEXT, strlen(TEXT), 15, z, sizeof(z));
    memset(z + n, 0, 4);
    assert_int_equal(run(KL_CODING_DEFLATE, z, n + 4, n + 4, &s, &complete), 0);
    assert_true(complete);
    assert_int_equal(s.len, strlen(TEXT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_coding_every_split),
        cmocka_unit_test(gzip_members_follow_one_another),
        cmocka_unit_test(cut_short_and_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
