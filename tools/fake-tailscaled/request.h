/* HTTP/1.x request heads and bodies, parsed the way Go's net/http server
 * parses them (tailscaled is a Go program), so that malformed input gets the
 * same 400/431/501 answers and well-formed input the same Host, URL.Path and
 * keep-alive decisions. */
#ifndef FTS_REQUEST_H
#define FTS_REQUEST_H

#include <stddef.h>

#define FTS_MAX_HEAD_BYTES  ((1u << 20) + 4096)  /* DefaultMaxHeaderBytes + slop */
#define FTS_MAX_UNREAD_BODY (256u << 10)         /* maxPostHandlerReadBytes */

struct fts_hfield {
    char *name;
    char *value;
    size_t value_len;             /* values may hold NULs; Go rejects those */
};

enum fts_body_kind { FTS_BODY_NONE, FTS_BODY_LENGTH, FTS_BODY_CHUNKED };

struct fts_request {
    char *method, *target;
    size_t target_len;
    int major, minor;
    struct fts_hfield *fields;
    size_t nfields;

    char *path;                   /* URL.Path, %-decoded (may hold NULs) */
    size_t path_len;
    char *raw_query;              /* URL.RawQuery, still encoded */
    size_t raw_query_len;
    char *host;                   /* Request.Host: URL host, else Host header */

    enum fts_body_kind body_kind;
    unsigned long long content_length;
    char *body;                   /* decoded body once read, else NULL */
    size_t body_len;

    int wants_close;              /* Go Request.wantsClose() */
    int wants10ka;                /* Go Request.wantsHttp10KeepAlive() */
    int expect_continue;          /* Expect: 100-continue */
    int expect_other;             /* another Expect value: answer 417 */
};

/* What Go's conn.serve writes on its own when reading the request fails. */
enum fts_reject { FTS_REJECT_400, FTS_REJECT_431, FTS_REJECT_501 };

struct fts_req_error {
    enum fts_reject kind;
    const char *reason;           /* "missing required Host header" or NULL */
};

/* Length of a complete head (request line, fields, blank line) at the
 * start of buf, or 0 if more bytes are needed. *scan_from carries progress
 * between calls on a growing buffer; start it at 0. */
size_t fts_head_end(const char *buf, size_t len, size_t *scan_from);

/* Parses a complete head. Returns 0, or -1 with *err set. req must be
 * released with fts_request_free either way. */
int fts_request_parse(const char *head, size_t len, struct fts_request *req,
                      struct fts_req_error *err);

/* Decodes a chunked body at the start of buf. Returns 1 when complete
 * (*used bytes consumed, *out and *outlen the data), 0 if more bytes are
 * needed, -1 if malformed, -2 if the data exceeds limit. */
int fts_chunked_decode(const char *buf, size_t len, size_t limit,
                       char **out, size_t *outlen, size_t *used);

/* First value of a field (case-insensitive name), or NULL. */
const char *fts_request_get(const struct fts_request *req, const char *name);

/* Go hasToken: token appears in v, case-insensitively, at comma/space
 * boundaries. */
int fts_has_token(const char *v, const char *token);

void fts_request_free(struct fts_request *req);

#endif
