#include "listen/http.h"

#include "core/text.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Find the end of a line starting at i: returns index of '\n', or -1. */
static long find_lf(const char *buf, size_t len, size_t i)
{
    const char *p = memchr(buf + i, '\n', len - i);
    return p ? (long)(p - buf) : -1;
}

static bool parse_content_length(const char *v, int64_t *out)
{
    if (!*v)
        return false;
    int64_t n = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || n > (INT64_MAX - 9) / 10)
            return false;
        n = n * 10 + (*p - '0');
    }
    *out = n;
    return true;
}

/* The next item of a comma-separated list at *p, without the blanks around
 * it, its length in *n (0 at the list's end, or for an empty item); *p is
 * moved past it. */
static const char *list_item(const char **p, size_t *n)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t' || *s == ',')
        s++;
    const char *e = s;
    while (*e && *e != ',')
        e++;
    *p = e;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *n = (size_t)(e - s);
    return s;
}

bool kl_http_list_has(const char *value, const char *token)
{
    size_t tl = strlen(token), n;
    for (const char *p = value; *p;) {
        const char *item = list_item(&p, &n);
        if (n == tl && strncasecmp(item, token, tl) == 0)
            return true;
    }
    return false;
}

const char *kl_http_head_value(const char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = head; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncasecmp(p, name, nl) != 0 || p[nl] != ':')
            continue;
        const char *v = p + nl + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t n = strcspn(v, "\r\n");
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        *len = n;
        return v;
    }
    return NULL;
}

/* Is name Connection, in any case? The first byte (| 0x20 folds an ASCII
 * letter's case) turns most names away before strcasecmp. */
static bool is_connection(const char *name)
{
    return (name[0] | 0x20) == 'c' && strcasecmp(name, "connection") == 0;
}

bool kl_http_connection_has(const kl_http_request *req, const char *token)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (is_connection(req->headers[i].name) && kl_http_list_has(req->headers[i].value, token))
            return true;
    return false;
}

static int name_cmp(const void *x, const void *y)
{
    const struct kl_http_name *a = x, *b = y;
    int c = strncasecmp(a->p, b->p, a->n < b->n ? a->n : b->n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

void kl_http_connection_names(const kl_http_request *req, kl_arena *a, kl_http_names *out)
{
    out->v = NULL;
    out->n = 0;
    size_t most = 0; /* one name per comma, and one more per header */
    for (size_t i = 0; i < req->nheaders; i++)
        if (is_connection(req->headers[i].name)) {
            most++;
            for (const char *p = req->headers[i].value; (p = strchr(p, ',')); p++)
                most++;
        }
    if (!most)
        return;
    out->v = kl_arena_alloc(a, most * sizeof(*out->v));
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!is_connection(req->headers[i].name))
            continue;
        size_t n;
        for (const char *p = req->headers[i].value; *p;) {
            const char *item = list_item(&p, &n);
            if (n)
                out->v[out->n++] = (struct kl_http_name){item, n};
        }
    }
    qsort(out->v, out->n, sizeof(*out->v), name_cmp);
}

bool kl_http_names_has(const kl_http_names *names, const char *name)
{
    if (!names->n)
        return false;
    struct kl_http_name key = {name, strlen(name)};
    return bsearch(&key, names->v, names->n, sizeof(*names->v), name_cmp) != NULL;
}

/* An absolute-form target (RFC 9112 section 3.2.2, "http://host/path", as
 * sent to proxies) is served as its path: a server must accept it. NULL
 * when target is not one. */
static char *absolute_form_path(char *target)
{
    size_t skip = strncasecmp(target, "http://", 7) == 0 ? 7 : strncasecmp(target, "https://", 8) == 0 ? 8 : 0;
    if (!skip || !target[skip] || target[skip] == '/')
        return NULL;
    char *path = target + skip + strcspn(target + skip, "/?");
    if (*path == '/')
        return path;
    if (*path == '\0') /* "http://host": the root */
        return "/";
    /* "http://host?x": the root with a query; the byte before is the
     * authority's last or the scheme's slash */
    path[-1] = '/';
    return path - 1;
}

/* The request line (line[0..ll), NUL-terminated there, parsed in place:
 * method SP target SP HTTP/1.x. The method, target and path are set before
 * the version is judged, so a 505 still names what was asked for (its
 * record, and the dialect of its error). */
static int request_line(char *line, size_t ll, kl_arena *a, kl_http_request *req, const char **why)
{
    char *sp1 = memchr(line, ' ', ll);
    if (!sp1 || sp1 == line) {
        *why = "malformed request line";
        return -400;
    }
    for (char *p = line; p < sp1; p++)
        if (!is_tchar((unsigned char)*p)) {
            *why = "malformed method";
            return -400;
        }
    char *sp2 = memchr(sp1 + 1, ' ', ll - (size_t)(sp1 + 1 - line));
    if (!sp2 || sp2 == sp1 + 1) {
        *why = "malformed request line";
        return -400;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    char *target = sp1 + 1;
    /* a request target has no fragment (RFC 9112 section 3.2): a '#' is
     * no part of one, and sent on it would change the upstream's URL */
    for (const char *p = target; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '#') {
            *why = "malformed request target";
            return -400;
        }
    char *abs = target[0] == '/' ? NULL : absolute_form_path(target);
    if (abs)
        target = abs;
    else if (target[0] != '/' && strcmp(target, "*") != 0) {
        *why = "request target must be a path";
        return -400;
    }
    req->method = line;
    req->target = target;
    char *q = strchr(target, '?');
    if (q) {
        req->path = kl_arena_strndup(a, target, (size_t)(q - target));
        req->query = q + 1;
    } else {
        req->path = target;
    }
    const char *version = sp2 + 1;
    /* HTTP-name "/" DIGIT "." DIGIT (RFC 9112 section 2.3): another major
     * version is 505, anything else a malformed line */
    bool well_formed = strncmp(version, "HTTP/", 5) == 0 && version[5] >= '0' && version[5] <= '9' &&
                       version[6] == '.' && version[7] >= '0' && version[7] <= '9' && version[8] == '\0';
    if (!well_formed || version[5] != '1') {
        *why = well_formed ? "unsupported HTTP version" : "malformed HTTP version";
        return well_formed ? -505 : -400;
    }
    /* a later minor version of 1 is read as 1.1, the highest we implement
     * (RFC 9112 section 2.3) */
    req->minor = version[7] == '0' ? 0 : 1;
    return 0;
}

/* A head refused before it is parsed (too large, a NUL byte) still names
 * what it asked for when its request line came whole: its record and the
 * dialect of its error say so. */
static int refuse_head(const char *buf, size_t len, size_t max_head, kl_arena *a, kl_http_request *req, int status)
{
    memset(req, 0, sizeof(*req));
    req->content_length = -1;
    long lf = find_lf(buf, len < max_head ? len : max_head, 0);
    if (lf > 0) {
        size_t ll = (size_t)lf;
        if (buf[ll - 1] == '\r')
            ll--;
        const char *ignored;
        if (!memchr(buf, '\0', ll) && request_line(kl_arena_strndup(a, buf, ll), ll, a, req, &ignored) == -400)
            memset(req, 0, sizeof(*req));
    }
    req->content_length = -1;
    return status;
}

/* A request line longer than the whole head may be (a query string of
 * thousands of parameters) is 414, not 431: the line never came whole, so
 * its method and the path before its query, when the window holds them,
 * are what its record and the dialect of its error go by. */
static int refuse_long_line(const char *buf, size_t len, size_t max_head, kl_arena *a, kl_http_request *req,
                            const char **why)
{
    memset(req, 0, sizeof(*req));
    req->content_length = -1;
    *why = "request line too long";
    size_t win = len < max_head ? len : max_head;
    const char *sp = memchr(buf, ' ', win);
    if (!sp || sp == buf || sp + 1 == buf + win || sp[1] != '/')
        return -414;
    for (const char *p = buf; p < sp; p++)
        if (!is_tchar((unsigned char)*p))
            return -414;
    const char *target = sp + 1;
    const char *q = memchr(target, '?', win - (size_t)(target - buf));
    if (!q)
        return -414;
    for (const char *p = target; p < q; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '#')
            return -414;
    req->method = kl_arena_strndup(a, buf, (size_t)(sp - buf));
    req->path = kl_arena_strndup(a, target, (size_t)(q - target));
    req->target = req->path;
    return -414;
}

/* The head in buf[0..len) is larger than max_head: 414 when its request
 * line alone is, else 431. */
static int refuse_too_large(const char *buf, size_t len, size_t max_head, kl_arena *a, kl_http_request *req,
                            const char **why)
{
    if (find_lf(buf, len < max_head ? len : max_head, 0) < 0)
        return refuse_long_line(buf, len, max_head, a, req, why);
    *why = "request head too large";
    return refuse_head(buf, len, max_head, a, req, -431);
}

void kl_http_request_line_of(const char *buf, size_t len, size_t max_head, kl_arena *a, kl_http_request *req)
{
    size_t i = 0;
    while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
        i++;
    refuse_head(buf + i, len - i, max_head, a, req, 0);
}

int kl_http_parse_head(const char *buf, size_t len, size_t max_head,
                       kl_arena *a, kl_http_request *req, const char **why)
{
    /* Tolerate empty lines before a request (RFC 9112 section 2.2). */
    size_t i = 0;
    while (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
        i += 2;
    while (i < len && buf[i] == '\n')
        i++;

    /* Locate the blank line that ends the head. */
    size_t scan = i, end = 0;
    for (;;) {
        long lf = find_lf(buf, len, scan);
        if (lf < 0) {
            if (len - i > max_head)
                return refuse_too_large(buf + i, len - i, max_head, a, req, why);
            return KL_HTTP_INCOMPLETE;
        }
        size_t line_start = scan;
        scan = (size_t)lf + 1;
        if ((size_t)lf == line_start || ((size_t)lf == line_start + 1 && buf[line_start] == '\r')) {
            if (line_start == i)
                continue; /* cannot happen after the skip above, but be safe */
            end = scan;
            break;
        }
        if (scan - i > max_head)
            return refuse_too_large(buf + i, len - i, max_head, a, req, why);
    }
    if (end - i > max_head)
        return refuse_too_large(buf + i, len - i, max_head, a, req, why);

    if (memchr(buf + i, '\0', end - i)) {
        *why = "NUL byte in the request head";
        return refuse_head(buf + i, end - i, max_head, a, req, -400);
    }
    memset(req, 0, sizeof(*req));
    req->content_length = -1;
    char *head = kl_arena_strndup(a, buf + i, end - i);
    size_t hlen = end - i;

    char *line_end = memchr(head, '\n', hlen);
    size_t ll = (size_t)(line_end - head);
    if (ll > 0 && head[ll - 1] == '\r')
        ll--;
    head[ll] = '\0';
    int r = request_line(head, ll, a, req, why);
    if (r < 0)
        return r;

    /* Header fields. Count lines first to size the array. */
    size_t nlines = 0;
    for (const char *q = head + ll + 1; (q = memchr(q, '\n', (size_t)(head + hlen - q))); q++)
        nlines++;
    req->headers = kl_arena_alloc(a, (nlines + 1) * sizeof(struct kl_header));
    char *p = line_end + 1;
    char *stop = head + hlen;
    bool saw_host = false, saw_te = false;
    while (p < stop) {
        char *nl = memchr(p, '\n', (size_t)(stop - p));
        char *le = nl;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == p)
            break; /* blank line */
        *le = '\0';
        if (*p == ' ' || *p == '\t') {
            *why = "obsolete line folding is not accepted";
            return -400;
        }
        char *colon = strchr(p, ':');
        if (!colon || colon == p) {
            *why = "malformed header field";
            return -400;
        }
        for (char *c = p; c < colon; c++)
            if (!is_tchar((unsigned char)*c)) {
                *why = "malformed header name";
                return -400;
            }
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = le;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        for (char *c = v; c < ve; c++)
            if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) {
                *why = "control character in header value";
                return -400;
            }
        struct kl_header *h = &req->headers[req->nheaders++];
        h->name = p;
        h->value = v;

        /* the first byte (| 0x20 folds an ASCII letter's case) turns most
         * names away before strcasecmp */
        if ((*p | 0x20) == 'c' && strcasecmp(p, "content-length") == 0) {
            int64_t n;
            if (!parse_content_length(v, &n) || (req->content_length >= 0 && req->content_length != n)) {
                *why = "invalid Content-Length";
                return -400;
            }
            req->content_length = n;
        } else if ((*p | 0x20) == 't' && strcasecmp(p, "transfer-encoding") == 0) {
            if (saw_te || strcasecmp(v, "chunked") != 0) {
                *why = "unsupported Transfer-Encoding (only chunked)";
                return -501;
            }
            saw_te = true;
            req->chunked = true;
        } else if ((*p | 0x20) == 'h' && strcasecmp(p, "host") == 0) {
            if (saw_host) {
                *why = "more than one Host header";
                return -400;
            }
            saw_host = true;
        } else if ((*p | 0x20) == 'e' && strcasecmp(p, "expect") == 0) {
            /* an HTTP/1.0 client gets no 1xx (RFC 9110 section 10.1.1) */
            if (strcasecmp(v, "100-continue") == 0 && req->minor == 1)
                req->expect_continue = true;
        }
        p = nl + 1;
    }
    if (req->chunked && req->content_length >= 0) {
        /* Both framings at once is the classic smuggling vector. */
        *why = "both Transfer-Encoding and Content-Length";
        return -400;
    }
    if (req->minor == 1 && !saw_host) {
        *why = "missing Host header";
        return -400;
    }
    if (req->minor == 1)
        req->keep_alive = !kl_http_connection_has(req, "close");
    else /* Transfer-Encoding from HTTP/1.0: framing faulty, close after (RFC 9112 section 6.1) */
        req->keep_alive = kl_http_connection_has(req, "keep-alive") && !kl_http_connection_has(req, "close") &&
                          !req->chunked;
    return (int)end;
}

const char *kl_http_header(const kl_http_request *req, const char *name)
{
    /* first bytes compared case-folded before strcasecmp (see
     * kl_route_drop_request_header) */
    for (size_t i = 0; i < req->nheaders; i++)
        if ((req->headers[i].name[0] | 0x20) == (name[0] | 0x20) && strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

enum { CH_SIZE, CH_SIZE_WS, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF, CH_DONE };

/* The framing's lines end in CRLF, as RFC 9112 section 7.1 writes them: a
 * bare LF, which one parser takes for a line's end and another for a byte
 * of it (or, after a chunk's data, one of two bytes skipped unread), would
 * let a proxy in front read another body, and another request after it,
 * than keyless does ("funky chunks" smuggling). Trailer fields are fields:
 * a bare LF ends one, as in a head (section 2.2). */
enum kl_chunked_result kl_chunked_feed(kl_chunked *c, const char *in, size_t len, size_t *used,
                                       void (*emit)(void *arg, const char *p, size_t n), void *arg)
{
    size_t i = 0;
    while (i < len) {
        char ch = in[i];
        switch (c->state) {
        case CH_SIZE: {
            int h = kl_hex_digit(ch);
            if (h >= 0) {
                /* more than 2^60 bytes, or a size line of leading zeros without end */
                if (c->remaining >> 56 || c->line_len >= 64)
                    goto bad;
                c->remaining = c->remaining * 16 + (uint64_t)h;
                c->line_len++;
                i++;
            } else if (c->line_len == 0) {
                goto bad;
            } else if (ch == ';') {
                c->state = CH_EXT;
                i++;
            } else if (ch == ' ' || ch == '\t') {
                c->state = CH_SIZE_WS;
                i++;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
                i++;
            } else {
                goto bad;
            }
            break;
        }
        case CH_SIZE_WS:
            /* blanks after the size only before an extension (RFC 9112's
             * BWS) or the line's end: "3e x" is no size a proxy in front
             * could be trusted to read as 0x3e too */
            if (++c->line_len > 4096)
                goto bad;
            if (ch == ';')
                c->state = CH_EXT;
            else if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch != ' ' && ch != '\t')
                goto bad;
            i++;
            break;
        case CH_EXT:
            /* Chunk extensions are allowed and ignored; bound their length.
             * A bare LF is no end of their line (above). */
            if (++c->line_len > 4096 || ++c->ext_len > KL_CHUNKED_MAX_EXT || ch == '\n')
                goto bad;
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                goto bad;
            i++;
            c->line_len = 0;
            c->state = c->remaining ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            emit(arg, in + i, n);
            i += n;
            c->remaining -= n;
            if (!c->remaining)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                goto bad;
            c->state = CH_DATA_LF;
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                goto bad;
            c->state = CH_SIZE;
            i++;
            break;
        case CH_TRAILER:
            /* Trailer fields are read and dropped; an empty line ends them. */
            if (++c->trailer_len > KL_CHUNKED_MAX_TRAILER)
                goto bad;
            if (ch == '\r') {
                c->state = CH_TRAILER_LF;
            } else if (ch == '\n') {
                if (c->line_len == 0) {
                    c->state = CH_DONE;
                    *used = i + 1;
                    return KL_CHUNKED_DONE;
                }
                c->line_len = 0;
            } else if (++c->line_len > 8192) {
                goto bad;
            }
            i++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                goto bad;
            i++;
            if (c->line_len == 0) {
                c->state = CH_DONE;
                *used = i;
                return KL_CHUNKED_DONE;
            }
            c->line_len = 0;
            c->state = CH_TRAILER;
            break;
        default:
            goto bad;
        }
    }
    *used = i;
    return KL_CHUNKED_MORE;
bad:
    *used = i;
    return KL_CHUNKED_ERROR;
}
