/* The AWS event stream codec: messages split in any pieces, checked by
 * their CRCs; headers read; base64 chunks decoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dialect/evstream.h"

struct seen {
    int ok, bad;
    size_t bytes;
    char payloads[256];
};

static void collect(void *arg, const char *raw, size_t len, bool ok)
{
    struct seen *s = arg;
    s->bytes += len;
    if (!ok) {
        s->bad++;
        return;
    }
    s->ok++;
    struct kl_evs_msg m;
    assert_int_equal(kl_evs_decode(raw, len, &m), 0);
    strncat(s->payloads, m.payload, m.payload_len);
}

/* Three messages fed in every split into two pieces, and byte by byte. */
static void splits_anywhere(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *names[] = {":message-type", ":event-type", ":content-type"};
    const char *values[] = {"event", "chunk", "application/json"};
    char stream[512];
    size_t n = 0;
    const char *payloads[] = {"{\"a\":1}", "{\"b\":2}", ""};
    for (int i = 0; i < 3; i++) {
        size_t l;
        char *m = kl_evs_encode(&a, names, values, 3, payloads[i], strlen(payloads[i]), &l);
        memcpy(stream + n, m, l);
        n += l;
    }
    for (size_t cut = 0; cut <= n; cut++) {
        struct seen s = {0};
        kl_evs e = {0};
        kl_evs_feed(&e, stream, cut, collect, &s);
        kl_evs_feed(&e, stream + cut, n - cut, collect, &s);
        kl_evs_flush(&e, collect, &s);
        assert_int_equal(s.ok, 3);
        assert_int_equal(s.bad, 0);
        assert_string_equal(s.payloads, "{\"a\":1}{\"b\":2}");
        kl_evs_free(&e);
    }
    struct seen s = {0};
    kl_evs e = {0};
    for (size_t i = 0; i < n; i++)
        kl_evs_feed(&e, stream + i, 1, collect, &s);
    assert_int_equal(s.ok, 3);
    assert_int_equal(s.bytes, n);
    kl_evs_free(&e);
    kl_arena_free(&a);
}

/* A wrong message CRC spoils that message only; a wrong prelude CRC
 * breaks the stream, and the rest goes out unframed (nothing lost). */
static void checks_crcs(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    const char *names[] = {":message-type"};
    const char *values[] = {"event"};
    size_t l;
    char *m = kl_evs_encode(&a, names, values, 1, "{}", 2, &l);
    char stream[256];
    memcpy(stream, m, l);
    memcpy(stream + l, m, l);
    memcpy(stream + 2 * l, m, l);
    stream[l + l - 1] ^= 1; /* the second message's CRC */
    struct seen s = {0};
    kl_evs e = {0};
    kl_evs_feed(&e, stream, 3 * l, collect, &s);
    assert_int_equal(s.ok, 2);
    assert_int_equal(s.bad, 1);
    kl_evs_free(&e);

    memcpy(stream + l, m, l);
    stream[l + 9] ^= 1; /* the second message's prelude CRC */
    memset(&s, 0, sizeof(s));
    memset(&e, 0, sizeof(e));
    kl_evs_feed(&e, stream, 3 * l, collect, &s);
    kl_evs_feed(&e, "tail", 4, collect, &s);
    assert_int_equal(s.ok, 1);
    assert_int_equal(s.bad, 2);
    assert_int_equal(s.bytes, 3 * l + 4);
    kl_evs_free(&e);

    /* a length beyond the limit is a broken prelude, not a 4 GiB wait */
    char huge[16] = {0x7f, 0, 0, 0};
    memset(&s, 0, sizeof(s));
    memset(&e, 0, sizeof(e));
    kl_evs_feed(&e, huge, sizeof(huge), collect, &s);
    assert_int_equal(s.bad, 1);
    kl_evs_free(&e);
    /* an incomplete message at the end goes out as it is */
    memset(&s, 0, sizeof(s));
    memset(&e, 0, sizeof(e));
    kl_evs_feed(&e, m, l - 1, collect, &s);
    assert_int_equal(s.ok + s.bad, 0);
    kl_evs_flush(&e, collect, &s);
    assert_int_equal(s.bad, 1);
    assert_int_equal(s.bytes, l - 1);
    kl_evs_free(&e);
    kl_arena_free(&a);
}

/* Headers of every value type are stepped over; a length past their end is
 * refused. */
static void reads_headers(void **state)
{
    (void)state;
    /* :flag (bool true), :n (int32), :event-type (string "chunk") */
    unsigned char h[] = {5, ':', 'f', 'l', 'a', 'g', 0,
                         2, ':', 'n', 4, 0, 0, 0, 7,
                         11, ':', 'e', 'v', 'e', 'n', 't', '-', 't', 'y', 'p', 'e', 7, 0, 5, 'c', 'h', 'u', 'n', 'k'};
    char msg[128] = {0};
    size_t total = 12 + sizeof(h) + 2 + 4;
    msg[3] = (char)total;
    msg[7] = (char)sizeof(h);
    memcpy(msg + 12, h, sizeof(h));
    memcpy(msg + 12 + sizeof(h), "{}", 2);
    struct kl_evs_msg m;
    assert_int_equal(kl_evs_decode(msg, total, &m), 0);
    assert_int_equal(m.event_type_len, 5);
    assert_memory_equal(m.event_type, "chunk", 5);
    assert_int_equal(m.payload_len, 2);
    assert_null(m.message_type);
    msg[12 + sizeof(h) - 6] = 9; /* the string's length runs past the headers */
    assert_int_equal(kl_evs_decode(msg, total, &m), -1);
    msg[12 + sizeof(h) - 6] = 5;
    msg[12 + 7 + 3] = 12; /* an unknown value type */
    assert_int_equal(kl_evs_decode(msg, total, &m), -1);
}

static void decodes_base64(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    size_t n;
    assert_string_equal(kl_base64_decode(&a, "eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=", 32, &n), "{\"type\":\"message_stop\"}");
    assert_int_equal(n, 23);
    assert_string_equal(kl_base64_decode(&a, "YWI=", 4, &n), "ab");
    assert_string_equal(kl_base64_decode(&a, "YQ==", 4, &n), "a");
    assert_int_equal(n, 1);
    assert_string_equal(kl_base64_decode(&a, "", 0, &n), "");
    assert_null(kl_base64_decode(&a, "YWJ", 3, &n));
    assert_null(kl_base64_decode(&a, "Y*==", 4, &n));
    assert_null(kl_base64_decode(&a, "Y=Jj", 4, &n)); /* padding only at the end */
    assert_null(kl_base64_decode(&a, "YW=j", 4, &n));
    assert_null(kl_base64_decode(&a, "YWJjYQ=a", 8, &n));
    /* one buffer, reused and grown, for a stream's chunks */
    char *buf = NULL;
    size_t cap = 0;
    assert_string_equal(kl_base64_decode_buf("YQ==", 4, &buf, &cap, &n), "a");
    assert_string_equal(kl_base64_decode_buf("eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=", 32, &buf, &cap, &n),
                        "{\"type\":\"message_stop\"}");
    assert_int_equal(n, 23);
    assert_null(kl_base64_decode_buf("Y=Jj", 4, &buf, &cap, &n));
    free(buf);
    kl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(splits_anywhere),
        cmocka_unit_test(checks_crcs),
        cmocka_unit_test(reads_headers),
        cmocka_unit_test(decodes_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
