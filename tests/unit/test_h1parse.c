/* The native upstream client's parsing: URLs, response heads, body framing
 * (Content-Length, chunked, close-delimited), no_proxy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "upstream/h1parse.h"

static long parse(const char *s, struct kl_h1_response *r, char *filtered, const char **why)
{
    return kl_h1_parse_response(s, strlen(s), 65536, r, filtered, why);
}

static void splits_urls(void **state)
{
    (void)state;
    struct kl_h1_url u;
    assert_int_equal(kl_h1_parse_url("http://127.0.0.1:8090/v1/chat/completions?x=1", &u), 0);
    assert_int_equal(u.host_len, 9);
    assert_memory_equal(u.host, "127.0.0.1", 9);
    assert_int_equal(u.port, 8090);
    assert_int_equal(u.authority_len, 14);
    assert_string_equal(u.target, "/v1/chat/completions?x=1");
    assert_false(u.target_needs_slash);

    assert_int_equal(kl_h1_parse_url("HTTP://LocalHost", &u), 0);
    assert_int_equal(u.port, 80);
    assert_memory_equal(u.host, "LocalHost", 9);
    assert_string_equal(u.target, "");
    assert_true(u.target_needs_slash);

    assert_int_equal(kl_h1_parse_url("http://[::1]:9000?q", &u), 0);
    assert_int_equal(u.host_len, 3);
    assert_memory_equal(u.host, "::1", 3);
    assert_int_equal(u.port, 9000);
    assert_memory_equal(u.authority, "[::1]:9000", 10);
    assert_true(u.target_needs_slash);

    /* libcurl's business */
    assert_int_equal(kl_h1_parse_url("https://api.openai.com/v1", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://user:pw@host/", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://host/a#frag", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://host:0/", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://host:65536/", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://host:/", &u), -1);
    assert_int_equal(kl_h1_parse_url("http:///path", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://[fe80::1%25eth0]/", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://host/a b", &u), -1);
    assert_int_equal(kl_h1_parse_url("http://ho st/", &u), -1);
}

static void parses_a_response_head_and_filters_it(void **state)
{
    (void)state;
    const char *s = "HTTP/1.1 200 OK\r\n"
                    "Content-Type: application/json\r\n"
                    "Content-Length:  42 \r\n"
                    "Connection: keep-alive\r\n"
                    "Set-Cookie: a=b\r\n"
                    "Access-Control-Allow-Origin: https://evil.example\r\n"
                    "access-control-allow-credentials: true\r\n"
                    "x-request-id: req_1\r\n"
                    "Location: https://elsewhere.example/v1/chat/completions\r\n"
                    "Strict-Transport-Security: max-age=63072000\r\n"
                    "Keep-Alive: timeout=5\r\n"
                    "Content-Encoding: identity\r\n"
                    "\r\n{\"body\":1}";
    struct kl_h1_response r;
    char filtered[512];
    const char *why = NULL;
    long n = parse(s, &r, filtered, &why);
    assert_int_equal(n, (long)(strstr(s, "{") - s));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.content_length, 42);
    assert_false(r.chunked);
    assert_false(r.conn_close);
    assert_true(r.conn_keep_alive);
    assert_false(r.event_stream);
    assert_int_equal(r.coding, KL_CODING_IDENTITY);
    assert_string_equal(filtered, "Content-Type: application/json\r\nx-request-id: req_1\r\n");
    assert_int_equal(r.filtered_len, strlen(filtered));
}

static void sse_chunked_close_and_encoding(void **state)
{
    (void)state;
    struct kl_h1_response r;
    char f[512];
    const char *why = NULL;
    assert_true(parse("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                      "transfer-encoding: chunked\r\nconnection: Close\r\n\r\n", &r, f, &why) > 0);
    assert_true(r.event_stream);
    assert_true(r.chunked);
    assert_true(r.conn_close);
    assert_int_equal(r.content_length, -1);
    assert_string_equal(f, "content-type: text/event-stream; charset=utf-8\r\n");

    /* A server that encodes anyway: the client undoes gzip and deflate, so
     * the header goes; anything else (another coding, a list, two fields)
     * is named for the error that refuses it. */
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n", &r, f, &why) > 0);
    assert_int_equal(r.coding, KL_CODING_GZIP);
    assert_string_equal(f, "");
    assert_true(parse("HTTP/1.1 200 OK\r\ncontent-encoding:  X-Gzip \r\n\r\n", &r, f, &why) > 0);
    assert_int_equal(r.coding, KL_CODING_GZIP);
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Encoding: Deflate\r\n\r\n", &r, f, &why) > 0);
    assert_int_equal(r.coding, KL_CODING_DEFLATE);
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n", &r, f, &why) > 0);
    assert_int_equal(r.coding, KL_CODING_OTHER);
    assert_string_equal(r.coding_name, "br");
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\n\r\n", &r, f, &why) > 0);
    assert_int_equal(r.coding, KL_CODING_OTHER);
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Encoding: deflate\r\n\r\n", &r, f,
                      &why) > 0);
    assert_int_equal(r.coding, KL_CODING_OTHER);
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n\r\n", &r, f, &why) > 0);
    assert_int_equal(r.coding, KL_CODING_GZIP);
    assert_string_equal(f, "");

    /* Both framings: chunked wins and the connection is not trusted again. */
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", &r, f, &why) > 0);
    assert_true(r.chunked);
    assert_true(r.length_ignored);
    assert_int_equal(r.content_length, -1);

    /* HTTP/1.0, bare LF line ends, no reason phrase. */
    assert_true(parse("HTTP/1.0 503\nRetry-After: 7\n\n", &r, f, &why) > 0);
    assert_int_equal(r.minor, 0);
    assert_int_equal(r.status, 503);
    assert_false(r.conn_keep_alive);
    assert_string_equal(f, "Retry-After: 7\r\n");

    /* An interim answer parses as its own head. */
    long n = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", &r, f, &why);
    assert_int_equal(n, 25);
    assert_int_equal(r.status, 100);
}

static void incomplete_and_malformed(void **state)
{
    (void)state;
    struct kl_h1_response r;
    char f[512];
    const char *why = NULL;
    assert_int_equal(parse("", &r, f, &why), 0);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Len", &r, f, &why), 0);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\n\r", &r, f, &why), 0);
    const char *bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 600 Nope\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\x01z\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(parse(bad[i], &r, f, &why), -1);
        assert_non_null(why);
    }
    /* Equal repeated lengths are fine. */
    assert_true(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", &r, f, &why) > 0);
    /* Too large, complete or not. */
    char big[300];
    memset(big, 'a', sizeof(big));
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(kl_h1_parse_response(big, strlen(big), 100, &r, NULL, &why), -1);
    assert_int_equal(kl_h1_parse_response(big, strlen(big), 1000, &r, NULL, &why), 0);
}

struct sink {
    char buf[256];
    size_t len;
    int calls;
};

static void emit(void *arg, const char *p, size_t n)
{
    struct sink *s = arg;
    assert_true(s->len + n <= sizeof(s->buf));
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->calls++;
}

static kl_h1_body body_for(const char *head)
{
    struct kl_h1_response r;
    const char *why = NULL;
    assert_true(kl_h1_parse_response(head, strlen(head), 4096, &r, NULL, &why) > 0);
    kl_h1_body b;
    kl_h1_body_init(&b, &r);
    return b;
}

static void body_by_length(void **state)
{
    (void)state;
    kl_h1_body b = body_for("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_LENGTH);
    struct sink s = {.len = 0};
    size_t used;
    assert_int_equal(kl_h1_body_feed(&b, "hello ", 6, &used, emit, &s), KL_H1_BODY_MORE);
    assert_int_equal(used, 6);
    /* Bytes past the body are left alone (they would make the connection unusable). */
    assert_int_equal(kl_h1_body_feed(&b, "worldEXTRA", 10, &used, emit, &s), KL_H1_BODY_DONE);
    assert_int_equal(used, 5);
    assert_int_equal(s.len, 11);
    assert_memory_equal(s.buf, "hello world", 11);

    b = body_for("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_LENGTH);
    assert_int_equal(b.remaining, 0);
    assert_int_equal(kl_h1_body_feed(&b, "", 0, &used, emit, &s), KL_H1_BODY_DONE);

    b = body_for("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_NONE);
    b = body_for("HTTP/1.1 304 Not Modified\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_NONE);
}

static void body_chunked_byte_by_byte(void **state)
{
    (void)state;
    const char *wire = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    kl_h1_body b = body_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_CHUNKED);
    struct sink s = {.len = 0};
    size_t i = 0, used;
    enum kl_h1_body_result r = KL_H1_BODY_MORE;
    while (r == KL_H1_BODY_MORE) {
        r = kl_h1_body_feed(&b, wire + i, 1, &used, emit, &s);
        i += used;
    }
    assert_int_equal(r, KL_H1_BODY_DONE);
    assert_int_equal(s.len, 11);
    assert_memory_equal(s.buf, "hello world", 11);
    assert_string_equal(wire + i, "NEXT");

    /* Whole at once: data handed over in place, one call per chunk. */
    b = body_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    struct sink t = {.len = 0};
    assert_int_equal(kl_h1_body_feed(&b, wire, strlen(wire), &used, emit, &t), KL_H1_BODY_DONE);
    assert_int_equal(t.calls, 2);
    assert_int_equal(used, strlen(wire) - 4);

    b = body_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(kl_h1_body_feed(&b, "3\r\nabcX", 7, &used, emit, &t), KL_H1_BODY_ERROR);
    b = body_for("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(kl_h1_body_feed(&b, "g\r\n", 3, &used, emit, &t), KL_H1_BODY_ERROR);
}

static void body_until_close(void **state)
{
    (void)state;
    kl_h1_body b = body_for("HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_CLOSE);
    struct sink s = {.len = 0};
    size_t used;
    assert_int_equal(kl_h1_body_feed(&b, "data: 1\n\n", 9, &used, emit, &s), KL_H1_BODY_MORE);
    assert_int_equal(used, 9);
    assert_int_equal(kl_h1_body_feed(&b, "data: 2\n\n", 9, &used, emit, &s), KL_H1_BODY_MORE);
    assert_int_equal(s.len, 18);
    /* HTTP/1.1 without any framing is close-delimited too. */
    b = body_for("HTTP/1.1 200 OK\r\n\r\n");
    assert_int_equal(b.mode, KL_H1_BODY_CLOSE);
}

static void no_proxy(void **state)
{
    (void)state;
    assert_true(kl_h1_no_proxy_match("*", "anything", 8));
    assert_true(kl_h1_no_proxy_match("localhost,127.0.0.1", "127.0.0.1", 9));
    assert_true(kl_h1_no_proxy_match("localhost, .internal", "vllm.internal", 13));
    assert_true(kl_h1_no_proxy_match("internal", "a.b.INTERNAL", 12));
    assert_true(kl_h1_no_proxy_match("Internal", "internal", 8));
    assert_false(kl_h1_no_proxy_match("internal", "notinternal", 11));
    assert_false(kl_h1_no_proxy_match("10.0.0.0/8", "10.1.2.3", 8));
    assert_false(kl_h1_no_proxy_match("", "host", 4));
    assert_false(kl_h1_no_proxy_match(",,", "host", 4));
    assert_false(kl_h1_no_proxy_match("ost", "host", 4));
}

/* The provider's headers keyless never passes on, in any case, and only
 * whole names. */
static void drops_response_headers_by_whole_name(void **state)
{
    (void)state;
    static const char *const drop[] = {
        "Connection", "keep-alive", "Proxy-Connection", "proxy-authenticate", "TE", "Trailer",
        "Transfer-Encoding", "upgrade", "Content-Length", "Set-Cookie", "set-cookie2", "Alt-Svc",
        "Strict-Transport-Security", "NEL", "Report-To", "Location", "Content-Location", "Refresh",
        "Access-Control-Allow-Origin", "access-control-expose-headers",
    };
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        assert_true(kl_h1_drop_response_header(drop[i], strlen(drop[i])));
    static const char *const keep[] = {
        "Content-Type", "x-request-id", "content-len", "Set-Cookie3", "t", "", "access-control-",
        "openai-processing-ms", "Connections", "nels",
    };
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        assert_false(kl_h1_drop_response_header(keep[i], strlen(keep[i])));
    /* n bounds the name: a prefix of a longer text */
    assert_true(kl_h1_drop_response_header("te: trailers", 2));
    assert_false(kl_h1_drop_response_header("Content-Length", 7));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(splits_urls),
        cmocka_unit_test(parses_a_response_head_and_filters_it),
        cmocka_unit_test(sse_chunked_close_and_encoding),
        cmocka_unit_test(incomplete_and_malformed),
        cmocka_unit_test(body_by_length),
        cmocka_unit_test(body_chunked_byte_by_byte),
        cmocka_unit_test(body_until_close),
        cmocka_unit_test(no_proxy),
        cmocka_unit_test(drops_response_headers_by_whole_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
