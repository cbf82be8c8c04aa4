/* SSE splitting: events come out whole, however the bytes are cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
    const char *second = ": comment\r\ndata: x\r\ndata: y\r\n\r\n";
    size_t second_cr = strlen("event: message_start\ndata: {\"a\":1}\n\n") + strlen(second) - 1;
    for (size_t cut = 0; cut <= len; cut++) {
        kl_sse s = {0};
        struct events e = {.n = 0};
        kl_sse_feed(&s, stream, cut, collect, &e);
        kl_sse_feed(&s, stream + cut, len - cut, collect, &e);
        assert_int_equal(e.n, 3);
        assert_string_equal(e.raw[0], "event: message_start\ndata: {\"a\":1}\n\n");
        if (cut == second_cr) {
            /* the bytes stop between the last "\r" and "\n": the event is
             * complete at the "\r", and the "\n" leads the next one */
            assert_string_equal(e.raw[1], ": comment\r\ndata: x\r\ndata: y\r\n\r");
            assert_string_equal(e.raw[2], "\ndata: [DONE]\r\r");
        } else {
            assert_string_equal(e.raw[1], second);
            assert_string_equal(e.raw[2], "data: [DONE]\r\r");
        }
        kl_sse_flush(&s, collect, &e);
        assert_int_equal(e.n, 4);
        assert_string_equal(e.raw[3], "data: tail");
        kl_sse_free(&s);
    }
}

static void feed(kl_sse *s, const char *text, struct events *e)
{
    kl_sse_feed(s, text, strlen(text), collect, e);
}

/* An event whose blank line ends in "\r" comes out when that "\r" arrives,
 * not when the next byte does (a CR-only stream would otherwise hold every
 * event until the provider's next one); a "\n" after it, whenever it comes,
 * is not taken for an empty event. */
static void carriage_return_ends_an_event_at_once(void **state)
{
    (void)state;
    kl_sse s = {0};
    struct events e = {.n = 0};
    feed(&s, "data: 1\r\r", &e);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.raw[0], "data: 1\r\r");
    feed(&s, "data: 2\r\n\r", &e);
    assert_int_equal(e.n, 2);
    feed(&s, "\n", &e);
    assert_int_equal(e.n, 2);
    feed(&s, "data: 3\r\n\r\n", &e);
    assert_int_equal(e.n, 3);
    assert_string_equal(e.raw[2], "\ndata: 3\r\n\r\n");
    const char *ev;
    size_t evl, dl;
    char *data;
    kl_sse_fields(e.raw[2], strlen(e.raw[2]), &ev, &evl, &data, &dl);
    assert_string_equal(data, "3");
    free(data);
    /* a "\n" that does not follow such an event is an empty line as ever */
    feed(&s, "\ndata: 4\n\n", &e);
    assert_int_equal(e.n, 5);
    assert_string_equal(e.raw[3], "\n");
    kl_sse_free(&s);
}

/* Three pieces, cut at every pair of places: scanning goes on from inside a
 * line (one of megabytes is scanned once), a '\r' at a piece's end waits
 * for what follows it, and the same events come out. */
static void split_at_every_pair_of_positions(void **state)
{
    (void)state;
    size_t len = strlen(stream);
    for (size_t a = 0; a <= len; a++)
        for (size_t b = a; b <= len; b++) {
            kl_sse s = {0};
            struct events e = {.n = 0};
            kl_sse_feed(&s, stream, a, collect, &e);
            kl_sse_feed(&s, stream + a, b - a, collect, &e);
            kl_sse_feed(&s, stream + b, len - b, collect, &e);
            assert_int_equal(e.n, 3);
            assert_string_equal(e.raw[0], "event: message_start\ndata: {\"a\":1}\n\n");
            assert_true(strncmp(e.raw[1], ": comment\r\ndata: x\r\ndata: y\r\n\r", 30) == 0);
            assert_true(strncmp(e.raw[2], "data: [DONE]\r\r", 14) == 0 || strncmp(e.raw[2], "\ndata: [DONE]\r\r", 15) == 0);
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


struct sizes {
    size_t len[8];
    int n;
};

static void collect_size(void *arg, const char *raw, size_t len)
{
    (void)raw;
    struct sizes *z = arg;
    z->len[z->n++] = len;
}

/* A large event fed in pieces of every size comes out once and whole (the
 * splitter resumes where it stopped instead of rescanning the event), and
 * the events around it too. */
static void large_event_in_pieces(void **state)
{
    (void)state;
    size_t big = 200000;
    char *s = malloc(big + 64);
    size_t n = 0;
    n += (size_t)sprintf(s + n, "data: a\r\n\r\ndata: ");
    memset(s + n, 'x', big);
    n += big;
    n += (size_t)sprintf(s + n, "\r\n\r\ndata: z\n\n");
    for (size_t piece = 1; piece <= 8192; piece = piece * 3 + 1) {
        kl_sse sse = {0};
        struct sizes z = {.n = 0};
        for (size_t off = 0; off < n; off += piece)
            kl_sse_feed(&sse, s + off, off + piece <= n ? piece : n - off, collect_size, &z);
        assert_int_equal(z.n, 3);
        /* each event ends after its "\r\n\r\n", or at its last "\r" when
         * a piece ends there (the "\n" then leads the next event) */
        size_t end0 = z.len[0], end1 = end0 + z.len[1];
        assert_true(end0 == 11 || (end0 == 10 && 10 % piece == 0));
        assert_true(end1 == 11 + 6 + big + 4 || (end1 == 10 + 6 + big + 4 && end1 % piece == 0));
        assert_int_equal(end1 + z.len[2], n);
        kl_sse_free(&sse);
    }
    free(s);
}

/* A broken stream's incomplete event is forgotten, not handed over. */
static void discard_forgets_the_partial_event(void **state)
{
    (void)state;
    kl_sse s = {0};
    struct events e = {.n = 0};
    kl_sse_feed(&s, "data: 1\n\ndata: {\"ty", 19, collect, &e);
    assert_int_equal(e.n, 1);
    kl_sse_discard(&s);
    kl_sse_flush(&s, collect, &e);
    assert_int_equal(e.n, 1);
    kl_sse_feed(&s, "data: 2\n\n", 9, collect, &e);
    assert_int_equal(e.n, 2);
    assert_string_equal(e.raw[1], "data: 2\n\n");
    kl_sse_free(&s);
}

/* A byte order mark before the first event does not hide its field name. */
/* Lines the standard names, comments and blank lines are known; anything
 * else (a line of bare JSON, " data:" with a leading space, "datax:") is
 * not, whatever the line ends are. */
static void unknown_fields(void **state)
{
    (void)state;
    const char *known[] = {"data: {}\n\n", "event: x\r\ndata: 1\r\n\r\n", ": ping\n\n", "id\nretry: 5\rdata\n\n",
                           "\xef\xbb\xbf" "data: {}\n\n", ""};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        assert_false(kl_sse_unknown_field(known[i], strlen(known[i])));
    const char *odd[] = {"{\"error\":{}}\n\n", " data: {}\n\n", "datax: 1\n\n", "data: 1\r\nDATA: 2\r\n\r\n",
                         "data: 1\neventx"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        assert_true(kl_sse_unknown_field(odd[i], strlen(odd[i])));
    /* Google's bare JSON error: where its object starts; len for anything else */
    assert_int_equal(kl_sse_bare_json("\r\n {\"error\":{}}\n", 16), 3);
    assert_int_equal(kl_sse_bare_json("data: {}\n", 9), 9);
    assert_int_equal(kl_sse_bare_json(" \n", 2), 2);
}

static void byte_order_mark(void **state)
{
    (void)state;
    const char *ev;
    size_t evl, dl;
    char *data;
    const char *raw = "\xef\xbb\xbf" "event: message_start\ndata: 1\n\n";
    kl_sse_fields(raw, strlen(raw), &ev, &evl, &data, &dl);
    assert_int_equal(evl, strlen("message_start"));
    assert_string_equal(data, "1");
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(split_at_every_position),
        cmocka_unit_test(byte_by_byte),
        cmocka_unit_test(split_at_every_pair_of_positions),
        cmocka_unit_test(carriage_return_ends_an_event_at_once),
        cmocka_unit_test(fields),
        cmocka_unit_test(large_event_in_pieces),
        cmocka_unit_test(discard_forgets_the_partial_event),
        cmocka_unit_test(byte_order_mark),
        cmocka_unit_test(unknown_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
