/* HTTP/1.1 request heads and chunked bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "listen/http.h"

static int parse(const char *s, kl_arena *a, kl_http_request *r, const char **why)
{
    return kl_http_parse_head(s, strlen(s), 65536, a, r, why);
}

static void parses_a_request(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why = NULL;
    const char *s = "POST /v1/messages?beta=true HTTP/1.1\r\nHost: gw\r\nContent-Length: 12\r\n"
                    "x-api-key:  secret  \r\nAnthropic-Version: 2023-06-01\r\n\r\n{\"a\":1}";
    int n = parse(s, &a, &r, &why);
    assert_int_equal(n, (int)(strstr(s, "{") - s));
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.path, "/v1/messages");
    assert_string_equal(r.query, "beta=true");
    assert_string_equal(r.target, "/v1/messages?beta=true");
    assert_int_equal(r.content_length, 12);
    assert_true(r.keep_alive);
    assert_string_equal(kl_http_header(&r, "X-API-KEY"), "secret");
    assert_string_equal(kl_http_header(&r, "anthropic-version"), "2023-06-01");
    assert_null(kl_http_header(&r, "cookie"));
    kl_arena_free(&a);
}

static void incomplete_and_limits(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n", &a, &r, &why), KL_HTTP_INCOMPLETE);
    char big[200];
    memset(big, 'a', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    char buf[400];
    strcpy(buf, "GET / HTTP/1.1\r\nX: ");
    strcat(buf, big);
    assert_int_equal(kl_http_parse_head(buf, strlen(buf), 64, &a, &r, &why), -431);
    /* a request line longer than the whole head may be is 414, and names
     * the method and the path before its query */
    strcpy(buf, "POST /v1/messages?q=");
    strcat(buf, big);
    assert_int_equal(kl_http_parse_head(buf, strlen(buf), 64, &a, &r, &why), -414);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.path, "/v1/messages");
    strcat(buf, " HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(kl_http_parse_head(buf, strlen(buf), 64, &a, &r, &why), -414);
    /* without a query in the window, nothing is named */
    strcpy(buf, "GET /");
    strcat(buf, big);
    assert_int_equal(kl_http_parse_head(buf, strlen(buf), 64, &a, &r, &why), -414);
    assert_null(r.path);
    /* a window that ends on the method's space is read no further (an
     * exactly-sized buffer, for the sanitizers to see) */
    const char tight[] = "\r\n\r\nGETXXXXXXXXXXXX ";
    char *exact = malloc(sizeof(tight) - 1);
    memcpy(exact, tight, sizeof(tight) - 1);
    assert_int_equal(kl_http_parse_head(exact, sizeof(tight) - 1, 16, &a, &r, &why), KL_HTTP_INCOMPLETE);
    assert_int_equal(kl_http_parse_head(exact, sizeof(tight) - 1, 15, &a, &r, &why), -414);
    free(exact);
    /* empty lines before the request are no part of its head */
    char blanks[700];
    for (size_t i = 0; i < 600; i += 2)
        memcpy(blanks + i, "\r\n", 2);
    strcpy(blanks + 600, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(kl_http_parse_head(blanks, strlen(blanks), 64, &a, &r, &why) > 0);
    assert_string_equal(r.path, "/v1/models");
    kl_arena_free(&a);
}

static void refuses_smuggling_and_garbage(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why;
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", &a, &r, &why), -501);
    assert_int_equal(parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n", &a, &r, &why), -505);
    assert_int_equal(parse("GET / HTTP/0.9\r\nHost: x\r\n\r\n", &a, &r, &why), -505);
    /* a version that is not DIGIT "." DIGIT is no version: malformed */
    assert_int_equal(parse("GET / HTTP/1.\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("GET / HTTP/1.10\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("GET / HTTP/2\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("GET / FOO\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("GET / HTTP/1.1\r\n\r\n", &a, &r, &why), -400); /* no Host */
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    /* no fragment in a request target: sent on, it would change the upstream URL */
    assert_int_equal(parse("POST /v1/chat/completions?a=b#c HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    assert_string_equal(why, "malformed request target");
    kl_arena_free(&a);
}

/* A valid head whose length happens to equal an error status. */
static void head_length_is_not_a_status(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why;
    char buf[600];
    const char *start = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    size_t n = strlen(start);
    memcpy(buf, start, n);
    while (n < 400 - 4)
        buf[n++] = 'p';
    memcpy(buf + n, "\r\n\r\n", 5);
    assert_int_equal(kl_http_parse_head(buf, 400, 65536, &a, &r, &why), 400);
    assert_string_equal(r.method, "GET");
    kl_arena_free(&a);
}

static void http10_and_connection_close(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why;
    assert_true(parse("GET / HTTP/1.0\r\n\r\n", &a, &r, &why) > 0);
    assert_false(r.keep_alive);
    assert_int_equal(r.minor, 0);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &a, &r, &why) > 0);
    assert_true(r.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n", &a, &r, &why) > 0);
    assert_false(r.keep_alive);
    assert_true(parse("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", &a, &r, &why) > 0);
    assert_true(r.expect_continue);
    assert_true(r.chunked);
    /* bare LF line endings are tolerated */
    assert_true(parse("GET /x HTTP/1.1\nHost: y\n\n", &a, &r, &why) > 0);
    assert_string_equal(r.path, "/x");
    kl_arena_free(&a);
}


/* Found by attacking the front door: a NUL in the request line, DEL in a
 * value, Connection split over several lines, 1xx and Transfer-Encoding
 * from HTTP/1.0; and the absolute form a server must accept. */
static void hostile_heads(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    kl_http_request r;
    const char *why;
    static const char nul_line[] = "POST /v1/chat/completions\0junk HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(kl_http_parse_head(nul_line, sizeof(nul_line) - 1, 65536, &a, &r, &why), -400);
    static const char nul_version[] = "GET / HTTP/1.1\0junk\r\nHost: x\r\n\r\n";
    assert_int_equal(kl_http_parse_head(nul_version, sizeof(nul_version) - 1, 65536, &a, &r, &why), -400);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f" "b\r\n\r\n", &a, &r, &why), -400);
    assert_true(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", &a, &r, &why) > 0);
    assert_false(r.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: X-Hop2\r\nX-Hop2: h\r\n\r\n", &a, &r,
                      &why) > 0);
    assert_true(kl_http_connection_has(&r, "x-hop2"));
    assert_false(kl_http_connection_has(&r, "x-hop3"));
    assert_true(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: , x-b ,X-A,,\r\nConnection:\r\nConnection: x-c, x-a\r\n\r\n", &a,
                      &r, &why) > 0);
    kl_http_names names;
    kl_http_connection_names(&r, &a, &names);
    assert_int_equal(names.n, 4);
    assert_true(kl_http_names_has(&names, "x-a"));
    assert_true(kl_http_names_has(&names, "X-B"));
    assert_true(kl_http_names_has(&names, "x-C"));
    assert_false(kl_http_names_has(&names, "x-"));
    assert_false(kl_http_names_has(&names, "x-ab"));
    assert_false(kl_http_names_has(&names, "connection-x"));
    assert_true(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why) > 0);
    kl_http_connection_names(&r, &a, &names);
    assert_false(kl_http_names_has(&names, "host"));
    assert_true(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", &a, &r, &why) > 0);
    assert_false(r.expect_continue);
    assert_true(parse("POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", &a, &r, &why) > 0);
    assert_false(r.keep_alive);
    assert_true(parse("GET http://gw.example/v1/models?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why) > 0);
    assert_string_equal(r.path, "/v1/models");
    assert_string_equal(r.query, "x=1");
    assert_true(parse("GET HTTPS://gw.example HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why) > 0);
    assert_string_equal(r.path, "/");
    assert_true(parse("GET http://gw.example?y=2 HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why) > 0);
    assert_string_equal(r.path, "/");
    assert_string_equal(r.query, "y=2");
    assert_int_equal(parse("GET http:// HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    assert_int_equal(parse("GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", &a, &r, &why), -400);
    kl_arena_free(&a);
}


/* A relayed head's header value: by name in any case, blanks trimmed, the
 * whole name only. */
static void head_value_lookup(void **state)
{
    (void)state;
    const char *head = "Content-Typeish: no\r\ncontent-type:  application/json ; charset=utf-8 \r\nX-A: 1\r\n";
    size_t n;
    const char *v = kl_http_head_value(head, "Content-Type", &n);
    assert_non_null(v);
    assert_int_equal(n, strlen("application/json ; charset=utf-8"));
    assert_memory_equal(v, "application/json ; charset=utf-8", n);
    v = kl_http_head_value(head, "x-a", &n);
    assert_non_null(v);
    assert_int_equal(n, 1);
    assert_null(kl_http_head_value(head, "content-encoding", &n));
    assert_null(kl_http_head_value("", "x-a", &n));
}

struct sink {
    char buf[256];
    size_t len;
};

static void emit(void *arg, const char *p, size_t n)
{
    struct sink *s = arg;
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void chunked_body_byte_by_byte(void **state)
{
    (void)state;
    const char *body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    kl_chunked c = {0};
    struct sink s = {.len = 0};
    size_t total = strlen(body), i = 0;
    enum kl_chunked_result r = KL_CHUNKED_MORE;
    while (i < total && r == KL_CHUNKED_MORE) {
        size_t used;
        r = kl_chunked_feed(&c, body + i, 1, &used, emit, &s);
        i += used;
    }
    assert_int_equal(r, KL_CHUNKED_DONE);
    assert_int_equal(s.len, 11);
    assert_memory_equal(s.buf, "hello world", 11);
    assert_string_equal(body + i, "NEXT");
}

static void chunked_errors(void **state)
{
    (void)state;
    size_t used;
    struct sink s = {.len = 0};
    kl_chunked c = {0};
    assert_int_equal(kl_chunked_feed(&c, "zz\r\n", 4, &used, emit, &s), KL_CHUNKED_ERROR);
    memset(&c, 0, sizeof(c));
    assert_int_equal(kl_chunked_feed(&c, "2\r\nabX", 6, &used, emit, &s), KL_CHUNKED_ERROR);
    memset(&c, 0, sizeof(c));
    assert_int_equal(kl_chunked_feed(&c, "ffffffffffffffffff\r\n", 20, &used, emit, &s), KL_CHUNKED_ERROR);
    /* blanks after a size: before an extension or the line's end, nothing else */
    memset(&c, 0, sizeof(c));
    assert_int_equal(kl_chunked_feed(&c, "3 x\r\n", 6, &used, emit, &s), KL_CHUNKED_ERROR);
    memset(&c, 0, sizeof(c));
    assert_int_equal(kl_chunked_feed(&c, "3\t0\r\n", 6, &used, emit, &s), KL_CHUNKED_ERROR);
    s.len = 0;
    memset(&c, 0, sizeof(c));
    static const char blanks[] = "3 \t; a=b\r\nabc\r\n2 \r\nde\r\n0\r\n\r\n";
    assert_int_equal(kl_chunked_feed(&c, blanks, sizeof(blanks) - 1, &used, emit, &s), KL_CHUNKED_DONE);
    assert_int_equal(used, sizeof(blanks) - 1);
    assert_int_equal(s.len, 5);
    /* trailer lines of a legal length, without end: an error once the
     * section passes its limit, not bytes read for ever */
    memset(&c, 0, sizeof(c));
    assert_int_equal(kl_chunked_feed(&c, "0\r\n", 3, &used, emit, &s), KL_CHUNKED_MORE);
    char line[8002];
    memset(line, 'a', 8000);
    memcpy(line + 8000, "\r\n", 2);
    enum kl_chunked_result r = KL_CHUNKED_MORE;
    size_t fed = 0;
    while (r == KL_CHUNKED_MORE && fed < (1u << 20)) {
        r = kl_chunked_feed(&c, line, sizeof(line), &used, emit, &s);
        fed += used;
    }
    assert_int_equal(r, KL_CHUNKED_ERROR);
    assert_true(fed <= KL_CHUNKED_MAX_TRAILER + sizeof(line));
    /* extensions: each line's may be long, all of them together may not */
    memset(&c, 0, sizeof(c));
    char ext[4010] = "1;";
    memset(ext + 2, 'e', 4000);
    memcpy(ext + 4002, "\r\nX\r\n", 5);
    r = KL_CHUNKED_MORE;
    size_t chunks = 0;
    while (r == KL_CHUNKED_MORE && chunks < 1000) {
        r = kl_chunked_feed(&c, ext, 4007, &used, emit, &s);
        chunks++;
    }
    assert_int_equal(r, KL_CHUNKED_ERROR);
    assert_true(chunks <= KL_CHUNKED_MAX_EXT / 4000 + 1);
    /* a size with many leading zeros is still its size */
    memset(&c, 0, sizeof(c));
    s.len = 0;
    assert_int_equal(kl_chunked_feed(&c, "0000000000000000001\r\nZ\r\n0\r\n\r\n", 29, &used, emit, &s),
                     KL_CHUNKED_DONE);
    assert_int_equal(s.len, 1);
}

/* The framing's lines end in CRLF only: a bare LF after a size, in an
 * extension or after a chunk's data is an error (a proxy in front may read
 * it otherwise); in the trailer fields it ends a line, as in a head. */
static void chunked_bare_lf(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "5\nhello\r\n0\r\n\r\n", "5 \nhello\r\n0\r\n\r\n", "5;a=b\nhello\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n", "5\r\nhello\r\n0\n\r\n",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        kl_chunked c = {0};
        struct sink s = {.len = 0};
        size_t used;
        assert_int_equal(kl_chunked_feed(&c, bad[k], strlen(bad[k]), &used, emit, &s), KL_CHUNKED_ERROR);
    }
    kl_chunked c = {0};
    struct sink s = {.len = 0};
    size_t used;
    const char *ok = "5\r\nhello\r\n0\r\nX: y\n\nNEXT";
    assert_int_equal(kl_chunked_feed(&c, ok, strlen(ok), &used, emit, &s), KL_CHUNKED_DONE);
    assert_string_equal(ok + used, "NEXT");
    assert_int_equal(s.len, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_request),
        cmocka_unit_test(incomplete_and_limits),
        cmocka_unit_test(refuses_smuggling_and_garbage),
        cmocka_unit_test(head_length_is_not_a_status),
        cmocka_unit_test(http10_and_connection_close),
        cmocka_unit_test(hostile_heads),
        cmocka_unit_test(head_value_lookup),
        cmocka_unit_test(chunked_body_byte_by_byte),
        cmocka_unit_test(chunked_errors),
        cmocka_unit_test(chunked_bare_lf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
