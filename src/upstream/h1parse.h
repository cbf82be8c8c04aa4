/* The parsing half of keyless's own HTTP/1.1 client (h1client.c): split a
 * plain http:// URL, read a response head, and find where a response body
 * ends (Content-Length, chunked, or connection close). Pure functions over
 * byte ranges, so they can be unit-tested and fuzzed without sockets. */
#ifndef KL_UPSTREAM_H1PARSE_H
#define KL_UPSTREAM_H1PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/coding.h"
#include "listen/http.h"

/* Longest response head accepted (status line and headers), on the native
 * client and libcurl alike. */
#define KL_H1_MAX_HEAD (64u * 1024)

/* A plain http:// URL, split; every pointer points into the URL. */
struct kl_h1_url {
    const char *host;           /* without the brackets of an IPv6 literal */
    size_t host_len;
    uint16_t port;
    const char *authority;      /* host[:port] as written: the Host header */
    size_t authority_len;
    const char *target;         /* path and query ("" when the URL has none) */
    bool target_needs_slash;    /* target is "" or starts with '?' */
};

/* 0 when url is an http:// URL the native client can send to; -1 for
 * anything else (https, user info, a fragment, a bad port), which then goes
 * through libcurl. */
int kl_h1_parse_url(const char *url, struct kl_h1_url *u);

/* What the client needs to know about a response head. */
struct kl_h1_response {
    int status;
    int minor;                  /* HTTP/1.minor */
    int64_t content_length;     /* -1 when absent */
    bool chunked;               /* Transfer-Encoding: chunked */
    bool conn_close;            /* Connection: close */
    bool conn_keep_alive;       /* Connection: keep-alive (matters for HTTP/1.0) */
    bool event_stream;          /* Content-Type: text/event-stream */
    enum kl_coding coding;      /* its Content-Encoding, read for what the gateway undoes (core/coding.h) */
    char coding_name[32];       /* ... as sent, cut short, for an error that names one it cannot undo */
    bool length_ignored;        /* both Transfer-Encoding and Content-Length */
    size_t filtered_len;        /* length of the filtered header block */
};

/* Parse the response head at the start of buf[0..len).
 *
 * Returns the head's length (status line to blank line, inclusive) when it is
 * complete, 0 when more bytes are needed, -1 when it is malformed or longer
 * than max_head (*why says which). When filtered is not NULL it must hold
 * 2 * min(len, max_head) + 1 bytes (a line normalized to "Name: value\r\n"
 * can be longer than it arrived): it receives the headers to relay to the
 * client, NUL-terminated (hop-by-hop headers, framing, cookies and
 * Content-Encoding, which the gateway undoes, are left out). */
long kl_h1_parse_response(const char *buf, size_t len, size_t max_head, struct kl_h1_response *r,
                          char *filtered, const char **why);

/* Response headers that are never relayed: hop-by-hop ones, framing the
 * gateway redoes itself, and cookies the provider sets on the gateway.
 * (Content-Encoding is left to the caller: the native client undoes it.) */
bool kl_h1_drop_response_header(const char *name, size_t n);

/* A response header line p[0..n) (no CRLF) as RFC 9112 allows it: no
 * obsolete folding, a token for its name, no control character but HTAB in
 * its value. False, with why, otherwise. */
bool kl_h1_field_ok(const char *p, size_t n, const char **why);

/* The names a head's Connection lines list (RFC 9110 section 7.6.1): the
 * headers they name are hop-by-hop too, and not relayed. Any number of
 * lines and names of any length, sorted, so a head of thousands of headers
 * and names costs no more than a sort. head[0..len) is "Name: value" lines;
 * the names point into it. Free v with free(). */
struct kl_h1_name {
    const char *p;
    size_t n;
};
struct kl_h1_names {
    struct kl_h1_name *v;       /* NULL when none */
    size_t n;
};
void kl_h1_connection_names(const char *head, size_t len, struct kl_h1_names *out);
bool kl_h1_names_has(const struct kl_h1_names *names, const char *name, size_t n);
/* Take out of a "Name: value\r\n" block, in place, the lines whose names
 * are listed; its new length. */
size_t kl_h1_drop_named(char *head, size_t len, const struct kl_h1_names *names);

/* A Content-Length value: digits only, no sign, no overflow. */
bool kl_h1_parse_length(const char *v, size_t n, int64_t *out);

/* Where a response body ends. */
enum kl_h1_body_mode {
    KL_H1_BODY_NONE,            /* no body (1xx, 204, 304) */
    KL_H1_BODY_LENGTH,          /* Content-Length bytes */
    KL_H1_BODY_CHUNKED,
    KL_H1_BODY_CLOSE,           /* until the server closes the connection */
};

typedef struct kl_h1_body {
    enum kl_h1_body_mode mode;
    uint64_t remaining;         /* LENGTH: bytes still to come */
    kl_chunked chunked;
} kl_h1_body;

enum kl_h1_body_result { KL_H1_BODY_MORE, KL_H1_BODY_DONE, KL_H1_BODY_ERROR };

void kl_h1_body_init(kl_h1_body *b, const struct kl_h1_response *r);

/* Consume body bytes from in[0..len); the payload is handed to emit() in
 * place (no copy), *used says how many input bytes were consumed. DONE
 * leaves any bytes past the body unconsumed. A CLOSE body is never DONE:
 * the connection's end is. */
enum kl_h1_body_result kl_h1_body_feed(kl_h1_body *b, const char *in, size_t len, size_t *used,
                                       void (*emit)(void *arg, const char *p, size_t n), void *arg);

/* True when a no_proxy list (curl's syntax: comma-separated host names or
 * domain suffixes, "*" for all) certainly exempts host. Entries this does
 * not understand (CIDR blocks) never match, which only means libcurl, which
 * understands them, handles the request. */
bool kl_h1_no_proxy_match(const char *no_proxy, const char *host, size_t host_len);

#endif
