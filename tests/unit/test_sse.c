/* SSE splitting: events come out whole, however the bytes are cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "account/sse.h"

struct events {
    char raw[16][128];
    int n;
};

static void collect(void *arg, const char *raw, size_t len)
{
    struct events *e = arg;
    memcpy(e->raw[e->n], raw, len);
    e->raw[e->n][len] = '\0';
    e->n++;
}

static const char *stream =
    "event: message_start\ndata: {\"a\":1}\n\n"
    ": comment\r\ndata: x\r\ndata: y\r\n\r\n"
    "data: [DONE]\r\r"
    "data: tail";

static void split_at_every_position(void **state)
{
    (void)state;
    size_t len = strlen(stream);
    for (size_t cut = 0; cut <= len; cut++) {
        kl_sse s = {0};
        struct events e = {.n = 0};
        kl_sse_feed(&s, stream, cut, collect, &e);
        kl_sse_feed(&s, stream + cut, len - cut, collect, &e);
        assert_int_equal(e.n, 3);
        assert_string_equal(e.raw[0], "event: message_start\ndata: {\"a\":1}\n\n");
        assert_string_equal(e.raw[1], ": comment\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_string_equal(e.raw[2], "data: [DONE]\r\r");
        kl_sse_flush(&s, collect, &e);
        assert_int_equal(e.n, 4);
        assert_string_equal(e.raw[3], "data: tail");
        kl_sse_free(&s);
    }
}

static void byte_by_byte(void **state)
{
    (void)state;
    kl_sse s = {0};
    struct events e = {.n = 0};
    for (size_t i = 0; i < strlen(stream); i++)
        kl_sse_feed(&s, stream + i, 1, collect, &e);
    assert_int_equal(e.n, 3);
    kl_sse_free(&s);
}

static void fields(void **state)
{
    (void)state;
    const char *ev;
    size_t evl, dl;
    char *data;
    const char *raw = "event: response.completed\r\ndata: {\"x\":\r\ndata:1}\r\nid: 5\r\n\r\n";
    kl_sse_fields(raw, strlen(raw), &ev, &evl, &data, &dl);
    assert_int_equal(evl, strlen("response.completed"));
    assert_memory_equal(ev, "response.completed", evl);
    assert_string_equal(data, "{\"x\":\n1}");
    assert_int_equal(dl, 8);
    free(data);
    kl_sse_fields(": only a comment\n\n", 18, &ev, &evl, &data, &dl);
    assert_null(data);
    assert_int_equal(evl, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(split_at_every_position),
        cmocka_unit_test(byte_by_byte),
        cmocka_unit_test(fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
