#include "response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "alloc.h"

const char *fts_status_text(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Request Entity Too Large";
    case 414: return "Request URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Requested Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default:  return NULL;
    }
}

void fts_response_init(struct fts_response *r, int status)
{
    memset(r, 0, sizeof(*r));
    r->status = status;
}

void fts_response_set_header(struct fts_response *r, const char *name, const char *value)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, name) == 0) {
            free(r->headers[i].value);
            r->headers[i].value = fts_strdup(value);
            return;
        }
    }
    if (r->nheaders == FTS_MAX_RESP_HEADERS)
        abort();                    /* a programming error, not input */
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = fts_strdup(value);
    r->nheaders++;
}

void fts_response_take_body(struct fts_response *r, char *data, size_t len)
{
    free(r->body);
    r->body = data;
    r->body_len = len;
}

void fts_response_set_body(struct fts_response *r, const void *data, size_t len)
{
    fts_response_take_body(r, fts_memdup(data, len), len);
}

void fts_response_error(struct fts_response *r, int status, const char *msg)
{
    size_t n = strlen(msg);
    char *body = fts_malloc(n + 2);

    memcpy(body, msg, n);
    body[n] = '\n';
    body[n + 1] = '\0';
    r->status = status;
    fts_response_set_header(r, "Content-Type", "text/plain; charset=utf-8");
    fts_response_set_header(r, "X-Content-Type-Options", "nosniff");
    fts_response_take_body(r, body, n + 1);
}

void fts_response_free(struct fts_response *r)
{
    for (size_t i = 0; i < r->nheaders; i++)
        free(r->headers[i].value);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static const char *header_value(const struct fts_response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static int cmp_header_index(const void *a, const void *b, void *arg)
{
    const struct fts_response *r = arg;
    return strcmp(r->headers[*(const size_t *)a].name, r->headers[*(const size_t *)b].name);
}

/* RFC 7231 IMF-fixdate, as Go's http.TimeFormat. */
static void http_date(char *buf, size_t cap)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    snprintf(buf, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}

/* Go's chunkWriter.writeHeader decision table, restated. The handlers here
 * always write their whole body in one Write call and then return, so "the
 * handler finished before the 2048-byte buffer filled" is exactly
 * "body_len <= 2048"; a larger single Write goes to the wire as one chunk. */
int fts_response_write(const struct fts_response *r, const struct fts_wire *w,
                       struct evbuffer *out)
{
    int status = r->status;
    int body_allowed = status >= 200 && status != 204 && status != 304;
    int is11 = w->major > 1 || (w->major == 1 && w->minor >= 1);
    const char *handler_conn = header_value(r, "Connection");
    int drop_handler_conn = 0;
    const char *extra_conn = NULL;
    int close = 0, has_cl = 0, chunking = 0;
    int small;

    switch (w->chunk_mode) {
    case FTS_CHUNK_NEVER:  small = 1; break;
    case FTS_CHUNK_ALWAYS: small = 0; break;
    default:               small = r->body_len <= FTS_BUFFER_BEFORE_CHUNKING; break;
    }

    if (body_allowed && small && !(w->is_head && r->body_len == 0))
        has_cl = 1;

    if (w->wants10ka && (w->is_head || has_cl || !body_allowed)) {
        if (handler_conn == NULL)
            extra_conn = "keep-alive";
    } else if (!is11 || w->wants_close) {
        close = 1;
    }
    if (handler_conn && strcmp(handler_conn, "close") == 0)
        close = 1;
    if (w->close_after)
        close = 1;
    if (w->too_big && !close) {
        close = 1;
        drop_handler_conn = 1;
        extra_conn = "close";
    }

    if (w->is_head || !body_allowed) {
        /* no framing */
    } else if (has_cl) {
        /* Content-Length */
    } else if (is11) {
        chunking = 1;
    } else {
        close = 1;                  /* HTTP/1.0: the close ends the body */
    }

    if (close && !(handler_conn && fts_has_token(handler_conn, "close"))) {
        drop_handler_conn = 1;
        if (is11)
            extra_conn = "close";
    }

    /* Status line. */
    const char *text = fts_status_text(status);
    if (text)
        evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\n", is11 ? 1 : 0, status, text);
    else
        evbuffer_add_printf(out, "HTTP/1.%d %03d status code %d\r\n", is11 ? 1 : 0,
                            status, status);

    /* Handler headers, sorted by name. */
    size_t order[FTS_MAX_RESP_HEADERS];
    for (size_t i = 0; i < r->nheaders; i++)
        order[i] = i;
    qsort_r(order, r->nheaders, sizeof(order[0]), cmp_header_index, (void *)r);
    for (size_t k = 0; k < r->nheaders; k++) {
        const char *name = r->headers[order[k]].name;
        if (drop_handler_conn && strcmp(name, "Connection") == 0)
            continue;
        if (!body_allowed && (strcmp(name, "Content-Length") == 0 ||
                              strcmp(name, "Transfer-Encoding") == 0 ||
                              (status == 304 && strcmp(name, "Content-Type") == 0)))
            continue;
        evbuffer_add_printf(out, "%s: %s\r\n", name, r->headers[order[k]].value);
    }

    /* Server-generated headers, in net/http's extraHeader order. */
    char date[64];
    http_date(date, sizeof(date));
    evbuffer_add_printf(out, "Date: %s\r\n", date);
    if (has_cl)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", r->body_len);
    if (body_allowed && r->sniffed_type && r->body_len > 0 &&
        header_value(r, "Content-Type") == NULL)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", r->sniffed_type);
    if (extra_conn)
        evbuffer_add_printf(out, "Connection: %s\r\n", extra_conn);
    if (chunking)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    evbuffer_add(out, "\r\n", 2);

    if (w->is_head || !body_allowed)
        return close;

    if (!chunking) {
        evbuffer_add(out, r->body, r->body_len);
        return close;
    }
    size_t step = w->chunk_size ? w->chunk_size : r->body_len;
    for (size_t off = 0; off < r->body_len; off += step) {
        size_t n = r->body_len - off < step ? r->body_len - off : step;
        evbuffer_add_printf(out, "%zx\r\n", n);
        evbuffer_add(out, r->body + off, n);
        evbuffer_add(out, "\r\n", 2);
    }
    evbuffer_add(out, "0\r\n\r\n", 5);
    return close;
}

void fts_response_write_reject(const struct fts_req_error *err, struct evbuffer *out)
{
    static const char hdrs[] =
        "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n";

    switch (err->kind) {
    case FTS_REJECT_431:
        evbuffer_add_printf(out, "HTTP/1.1 431 Request Header Fields Too Large%s"
                                 "431 Request Header Fields Too Large", hdrs);
        break;
    case FTS_REJECT_501:
        evbuffer_add_printf(out, "HTTP/1.1 501 Not Implemented%sUnsupported transfer encoding",
                            hdrs);
        break;
    default:
        if (err->reason)
            evbuffer_add_printf(out, "HTTP/1.1 400 Bad Request: %s%s400 Bad Request: %s",
                                err->reason, hdrs, err->reason);
        else
            evbuffer_add_printf(out, "HTTP/1.1 400 Bad Request%s400 Bad Request", hdrs);
        break;
    }
}
