/* Responses serialized the way Go's net/http server writes them, since
 * tailscaled is a Go program and clients see Go's framing: handler headers
 * sorted by name, then Date, Content-Length, a sniffed Content-Type,
 * Connection and Transfer-Encoding; Content-Length when the whole body fit
 * the 2048-byte pre-chunking buffer, chunked otherwise (HTTP/1.1), and
 * close-delimited for HTTP/1.0. */
#ifndef FTS_RESPONSE_H
#define FTS_RESPONSE_H

#include <stddef.h>

#include "request.h"

struct evbuffer;

#define FTS_MAX_RESP_HEADERS        12
#define FTS_BUFFER_BEFORE_CHUNKING  2048      /* net/http bufferBeforeChunkingSize */

enum fts_chunk_mode { FTS_CHUNK_AUTO, FTS_CHUNK_ALWAYS, FTS_CHUNK_NEVER };

struct fts_response {
    int status;
    size_t nheaders;
    struct {
        const char *name;         /* canonical, static storage */
        char *value;
    } headers[FTS_MAX_RESP_HEADERS];
    const char *sniffed_type;     /* Content-Type Go would sniff, or NULL */
    char *body;
    size_t body_len;
};

/* Facts about the request being answered and the framing options. */
struct fts_wire {
    int is_head;
    int major, minor;
    int wants10ka, wants_close;
    int close_after;              /* request body left in an unknown state */
    int too_big;                  /* more than 256 KiB of body left unread */
    enum fts_chunk_mode chunk_mode;
    size_t chunk_size;            /* 0: the whole body in one chunk, as Go */
};

void fts_response_init(struct fts_response *r, int status);
void fts_response_set_header(struct fts_response *r, const char *name, const char *value);
void fts_response_set_body(struct fts_response *r, const void *data, size_t len);
void fts_response_take_body(struct fts_response *r, char *data, size_t len);
void fts_response_free(struct fts_response *r);

/* Go http.Error: text/plain; charset=utf-8, nosniff, msg + "\n". */
void fts_response_error(struct fts_response *r, int status, const char *msg);

/* Appends the response to out. Returns 1 if the connection must be closed
 * once it is written, 0 if it stays open for the next request. */
int fts_response_write(const struct fts_response *r, const struct fts_wire *w,
                       struct evbuffer *out);

/* The fixed answers Go's conn.serve writes when reading a request fails;
 * the connection is closed after them. */
void fts_response_write_reject(const struct fts_req_error *err, struct evbuffer *out);

/* Go net/http StatusText, or NULL for an unknown code. */
const char *fts_status_text(int code);

#endif
