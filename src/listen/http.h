/* HTTP/1.1 request heads and chunked bodies (RFC 9112), parsed strictly.
 *
 * We parse requests ourselves rather than through evhttp because a gateway
 * must answer protocol-level problems (a body over the limit, a malformed
 * head) in the caller's API dialect, stream bodies without buffering twice,
 * and control every byte of the response; evhttp 2.1 answers those cases
 * itself with HTML pages. See docs/design.md. */
#ifndef KL_HTTP_H
#define KL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

struct kl_header {
    const char *name;           /* NUL-terminated, as received */
    const char *value;          /* NUL-terminated, surrounding white space trimmed */
};

typedef struct kl_http_request {
    const char *method;
    const char *target;         /* path plus query, as received */
    const char *path;           /* path only */
    const char *query;          /* after '?', or NULL */
    int minor;                  /* HTTP/1.minor */
    struct kl_header *headers;
    size_t nheaders;
    int64_t content_length;     /* -1 when absent */
    bool chunked;
    bool keep_alive;
    bool expect_continue;
} kl_http_request;

enum { KL_HTTP_INCOMPLETE = 0 };

/* Parse the head in buf[0..len). Returns the head's length (including the
 * blank line) on success, KL_HTTP_INCOMPLETE when more bytes are needed, or
 * minus an HTTP status (-400, -414, -431, -501, -505) for a head that must be
 * refused; *why then says what is wrong. Strings are copied into the arena. */
int kl_http_parse_head(const char *buf, size_t len, size_t max_head,
                       kl_arena *a, kl_http_request *req, const char **why);

/* What the request line of a head that will not be parsed (one that
 * never completed) says, for its record: req's method, target and path,
 * or none of them when there is no whole, well-formed line. */
void kl_http_request_line_of(const char *buf, size_t len, size_t max_head, kl_arena *a, kl_http_request *req);

/* Case-insensitive lookup; the first match, or NULL. */
const char *kl_http_header(const kl_http_request *req, const char *name);

/* In a head written as "Name: value\r\n" lines (a relayed response head):
 * the value of the first line called name (any case), without surrounding
 * blanks, its length in *len; NULL when there is none. */
const char *kl_http_head_value(const char *head, const char *name, size_t *len);

/* True when a comma-separated header value lists token (case-insensitive). */
bool kl_http_list_has(const char *value, const char *token);

/* True when any Connection header of the request lists token: a request
 * may split the list over several Connection lines. */
bool kl_http_connection_has(const kl_http_request *req, const char *token);

/* The names all Connection headers of a request list, sorted without case:
 * a gateway drops the headers they name, and one head can list thousands
 * of names beside thousands of headers, so each header is looked up in
 * log time rather than against every list. */
struct kl_http_name {
    const char *p;
    size_t n;
};
typedef struct kl_http_names {
    struct kl_http_name *v;     /* in the arena given, NULL when none */
    size_t n;
} kl_http_names;

void kl_http_connection_names(const kl_http_request *req, kl_arena *a, kl_http_names *out);
bool kl_http_names_has(const kl_http_names *names, const char *name);

/* Incremental decoder for a chunked request body. */
typedef struct kl_chunked {
    int state;
    uint64_t remaining;         /* bytes left in the current chunk */
    size_t line_len;            /* length of the size/trailer line so far */
    size_t trailer_len;         /* bytes of the trailer section so far (KL_CHUNKED_MAX_TRAILER) */
    size_t ext_len;             /* bytes of chunk extensions so far (KL_CHUNKED_MAX_EXT) */
} kl_chunked;

/* Chunk extensions are ignored, and bounded over the whole body too: 4 KiB
 * on each of many one-byte chunks would make a 32 MiB body 130 GB on the
 * wire. */
#define KL_CHUNKED_MAX_EXT (64u << 10)

/* Trailer fields are dropped unread, but not without end: a section longer
 * than this is an error, as a head past its limit is. */
#define KL_CHUNKED_MAX_TRAILER (64u << 10)

enum kl_chunked_result { KL_CHUNKED_MORE, KL_CHUNKED_DONE, KL_CHUNKED_ERROR };

/* Consume bytes from in[0..len): decoded data is appended through emit().
 * *used says how many input bytes were consumed. */
enum kl_chunked_result kl_chunked_feed(kl_chunked *c, const char *in, size_t len, size_t *used,
                                       void (*emit)(void *arg, const char *p, size_t n), void *arg);

#endif
