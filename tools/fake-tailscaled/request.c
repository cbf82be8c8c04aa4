#include "request.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "urlenc.h"

/* RFC 7230 tchar, which Go uses for method names and field names. */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* httpguts.ValidHostHeader: unreserved, sub-delims, ':', '[', ']', '%'. */
static int is_host_byte(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!$%&'()*+,-.:;=[]_~", c) != NULL;
}

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

size_t fts_head_end(const char *buf, size_t len, size_t *scan_from)
{
    size_t p = *scan_from;

    while (p < len) {
        const char *nl = memchr(buf + p, '\n', len - p);
        if (nl == NULL)
            break;
        size_t line_len = (size_t)(nl - (buf + p));
        if (line_len > 0 && buf[p + line_len - 1] == '\r')
            line_len--;
        size_t next = (size_t)(nl - buf) + 1;
        if (line_len == 0)
            return next;            /* blank line ends the head */
        p = next;
    }
    *scan_from = p;
    return 0;
}

/* One line of the head without its "\n" or "\r\n". */
struct line {
    const char *s;
    size_t n;
};

static size_t split_lines(const char *head, size_t len, struct line **out)
{
    size_t cap = 16, n = 0, p = 0;
    struct line *lines = fts_malloc(cap * sizeof(*lines));

    while (p < len) {
        const char *nl = memchr(head + p, '\n', len - p);
        size_t l = nl ? (size_t)(nl - (head + p)) : len - p;
        size_t next = p + l + (nl ? 1 : 0);
        if (l > 0 && head[p + l - 1] == '\r')
            l--;
        if (l == 0)
            break;                  /* the terminating blank line */
        if (n == cap) {
            cap *= 2;
            lines = fts_realloc(lines, cap * sizeof(*lines));
        }
        lines[n].s = head + p;
        lines[n].n = l;
        n++;
        p = next;
    }
    *out = lines;
    return n;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Go ParseHTTPVersion: "HTTP/1.0", "HTTP/1.1", or "HTTP/d.d". */
static int parse_version(const char *v, size_t n, int *major, int *minor)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.')
        return -1;
    if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return -1;
    *major = v[5] - '0';
    *minor = v[7] - '0';
    return 0;
}

/* The parts of Go's url.ParseRequestURI that decide acceptance, Host and
 * Path: control bytes are rejected, "*" is a path, "scheme://host/path"
 * sets the host, anything else must start with '/', and the path is
 * %-decoded (a bad escape rejects the request). */
static int parse_target(struct fts_request *req, int connect_authority)
{
    const char *t = req->target;
    size_t n = req->target_len, i;
    const char *rest;
    size_t rn;
    int has_scheme = 0;

    for (i = 0; i < n; i++)
        if (is_ctl((unsigned char)t[i]))
            return -1;
    if (n == 0)
        return -1;

    if (connect_authority) {
        req->host = fts_strdup(t);
        req->path = fts_strdup("");
        req->raw_query = fts_strdup("");
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        req->path = fts_strdup("*");
        req->path_len = 1;
        req->raw_query = fts_strdup("");
        return 0;
    }

    rest = t;
    rn = n;
    if ((t[0] >= 'a' && t[0] <= 'z') || (t[0] >= 'A' && t[0] <= 'Z')) {
        for (i = 1; i < n; i++) {
            char c = t[i];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.')
                continue;
            if (c == ':') {
                has_scheme = 1;
                rest = t + i + 1;
                rn = n - i - 1;
            }
            break;
        }
    } else if (t[0] == ':') {
        return -1;                              /* missing protocol scheme */
    }

    /* Query: a lone trailing '?' is an empty query. */
    const char *q = memchr(rest, '?', rn);
    if (q) {
        req->raw_query = fts_memdup(q + 1, rn - (size_t)(q - rest) - 1);
        req->raw_query_len = rn - (size_t)(q - rest) - 1;
        rn = (size_t)(q - rest);
    } else {
        req->raw_query = fts_strdup("");
    }

    if (rn == 0 || rest[0] != '/') {
        if (!has_scheme)
            return -1;                          /* invalid URI for request */
        req->path = fts_strdup("");             /* opaque URL: no path */
        return 0;
    }

    if (has_scheme && rn >= 2 && rest[1] == '/') {
        const char *auth = rest + 2;
        size_t an = rn - 2;
        const char *slash = memchr(auth, '/', an);
        size_t alen = slash ? (size_t)(slash - auth) : an;
        const char *at = NULL;
        for (i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i;
        if (at)
            req->host = fts_memdup(at + 1, alen - (size_t)(at + 1 - auth));
        else
            req->host = fts_memdup(auth, alen);
        rest = auth + alen;
        rn = an - alen;
    }

    return fts_unescape(rest, rn, 0, &req->path, &req->path_len);
}

static void add_field(struct fts_request *req, size_t *cap, const char *name, size_t nn,
                      const char *value, size_t vn)
{
    if (req->nfields == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        req->fields = fts_realloc(req->fields, *cap * sizeof(*req->fields));
    }
    req->fields[req->nfields].name = fts_memdup(name, nn);
    req->fields[req->nfields].value = fts_memdup(value, vn);
    req->fields[req->nfields].value_len = vn;
    req->nfields++;
}

/* obs-fold: a line starting with SP/HT continues the previous field. */
static void fold_into_last(struct fts_request *req, const char *s, size_t n)
{
    struct fts_hfield *f = &req->fields[req->nfields - 1];
    size_t old = f->value_len;
    f->value = fts_realloc(f->value, old + 1 + n + 1);
    f->value[old] = ' ';
    memcpy(f->value + old + 1, s, n);
    f->value[old + 1 + n] = '\0';
    f->value_len = old + 1 + n;
}

static size_t count_field(const struct fts_request *req, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < req->nfields; i++)
        if (strcasecmp(req->fields[i].name, name) == 0)
            c++;
    return c;
}

const char *fts_request_get(const struct fts_request *req, const char *name)
{
    for (size_t i = 0; i < req->nfields; i++)
        if (strcasecmp(req->fields[i].name, name) == 0)
            return req->fields[i].value;
    return NULL;
}

int fts_has_token(const char *v, const char *token)
{
    size_t tn = strlen(token);

    if (v == NULL || tn == 0)
        return 0;
    for (const char *p = v; (p = strcasestr(p, token)) != NULL; p++) {
        char before = p == v ? ' ' : p[-1];
        char after = p[tn];
        int left_ok = before == ' ' || before == ',' || before == '\t';
        int right_ok = after == '\0' || after == ' ' || after == ',' || after == '\t';
        if (left_ok && right_ok)
            return 1;
    }
    return 0;
}

/* Any Connection field (not just the first) carrying token. */
static int connection_has(const struct fts_request *req, const char *token)
{
    for (size_t i = 0; i < req->nfields; i++)
        if (strcasecmp(req->fields[i].name, "Connection") == 0 &&
            fts_has_token(req->fields[i].value, token))
            return 1;
    return 0;
}

/* Go readTransfer for requests: Transfer-Encoding only counts from
 * HTTP/1.1 on and must be exactly one "chunked"; repeated Content-Length
 * fields must agree; the length is a decimal up to 2^63-1. */
static int parse_framing(struct fts_request *req, struct fts_req_error *err)
{
    const char *cl = NULL;
    size_t ncl = 0, nte = 0;
    const char *te = NULL;

    for (size_t i = 0; i < req->nfields; i++) {
        struct fts_hfield *f = &req->fields[i];
        if (strcasecmp(f->name, "Content-Length") == 0) {
            if (ncl++ == 0)
                cl = f->value;
            else if (strcmp(cl, f->value) != 0)
                goto bad;
        } else if (strcasecmp(f->name, "Transfer-Encoding") == 0) {
            if (nte++ == 0)
                te = f->value;
        }
    }

    if (nte > 0 && (req->major > 1 || (req->major == 1 && req->minor >= 1))) {
        if (nte != 1 || strcasecmp(te, "chunked") != 0) {
            err->kind = FTS_REJECT_501;
            err->reason = NULL;
            return -1;
        }
        req->body_kind = FTS_BODY_CHUNKED;
        return 0;
    }

    if (cl != NULL && cl[0] != '\0') {
        unsigned long long v = 0;
        for (const char *p = cl; *p; p++) {
            if (*p < '0' || *p > '9')
                goto bad;
            if (v > (0x7fffffffffffffffULL - 9) / 10)
                goto bad;
            v = v * 10 + (unsigned)(*p - '0');
        }
        req->content_length = v;
        req->body_kind = v > 0 ? FTS_BODY_LENGTH : FTS_BODY_NONE;
    }
    return 0;

bad:
    err->kind = FTS_REJECT_400;
    err->reason = NULL;
    return -1;
}

int fts_request_parse(const char *head, size_t len, struct fts_request *req,
                      struct fts_req_error *err)
{
    struct line *lines = NULL;
    size_t nlines = split_lines(head, len, &lines), cap = 0;
    int rc = -1;

    memset(req, 0, sizeof(*req));
    err->kind = FTS_REJECT_400;
    err->reason = NULL;

    if (nlines == 0)
        goto out;                               /* malformed HTTP request */

    /* Request line: method SP target SP proto, split on the first two
     * spaces; whatever follows the second space is the version. */
    const char *rl = lines[0].s;
    size_t rn = lines[0].n;
    const char *sp1 = memchr(rl, ' ', rn);
    if (sp1 == NULL)
        goto out;
    const char *sp2 = memchr(sp1 + 1, ' ', rn - (size_t)(sp1 + 1 - rl));
    if (sp2 == NULL)
        goto out;
    req->method = fts_memdup(rl, (size_t)(sp1 - rl));
    req->target_len = (size_t)(sp2 - sp1 - 1);
    req->target = fts_memdup(sp1 + 1, req->target_len);
    if (req->method[0] == '\0')
        goto out;
    for (const char *p = req->method; *p; p++)
        if (!is_tchar((unsigned char)*p))
            goto out;                           /* invalid method */
    if (parse_version(sp2 + 1, rn - (size_t)(sp2 + 1 - rl), &req->major, &req->minor) != 0)
        goto out;                               /* malformed HTTP version */

    int connect_auth = strcmp(req->method, "CONNECT") == 0 && req->target[0] != '/';
    if (parse_target(req, connect_auth) != 0)
        goto out;

    for (size_t i = 1; i < nlines; i++) {
        const char *s = lines[i].s;
        size_t n = lines[i].n;
        if (s[0] == ' ' || s[0] == '\t') {
            if (req->nfields == 0)
                goto out;                       /* malformed initial line */
            trim(&s, &n);
            fold_into_last(req, s, n);
            continue;
        }
        const char *colon = memchr(s, ':', n);
        if (colon == NULL || colon == s)
            goto out;                           /* malformed MIME header */
        for (const char *p = s; p < colon; p++)
            if (!is_tchar((unsigned char)*p))
                goto out;
        const char *v = colon + 1;
        size_t vn = n - (size_t)(v - s);
        trim(&v, &vn);
        add_field(req, &cap, s, (size_t)(colon - s), v, vn);
    }

    size_t nhost = count_field(req, "Host");
    if (nhost > 1)
        goto out;                               /* too many Host headers */
    if (req->host == NULL || req->host[0] == '\0') {
        const char *h = fts_request_get(req, "Host");
        free(req->host);
        req->host = fts_strdup(h ? h : "");
    }

    if (parse_framing(req, err) != 0)
        goto out;

    /* The server-level checks of conn.readRequest, in Go's order. */
    int is_pri = req->major == 2 && req->minor == 0 &&
                 strcmp(req->method, "PRI") == 0 && strcmp(req->target, "*") == 0;
    if (req->major != 1 && !is_pri) {
        err->reason = "unsupported protocol version";
        goto out;
    }
    int at_least_11 = req->major > 1 || req->minor >= 1;
    if (at_least_11 && nhost == 0 && !is_pri && strcmp(req->method, "CONNECT") != 0) {
        err->reason = "missing required Host header";
        goto out;
    }
    for (size_t i = 0; nhost == 1 && i < req->nfields; i++) {
        const struct fts_hfield *f = &req->fields[i];
        if (strcasecmp(f->name, "Host") != 0)
            continue;
        for (size_t k = 0; k < f->value_len; k++) {
            if (!is_host_byte((unsigned char)f->value[k])) {
                err->reason = "malformed Host header";
                goto out;
            }
        }
    }
    for (size_t i = 0; i < req->nfields; i++) {
        const struct fts_hfield *f = &req->fields[i];
        for (size_t k = 0; k < f->value_len; k++) {
            if (is_ctl((unsigned char)f->value[k]) && f->value[k] != '\t') {
                err->reason = "invalid header value";
                goto out;
            }
        }
    }

    int close_token = connection_has(req, "close");
    if (req->major == 1 && req->minor == 0)
        req->wants_close = close_token || !connection_has(req, "keep-alive");
    else
        req->wants_close = close_token;
    req->wants10ka = req->major == 1 && req->minor == 0 &&
                     fts_has_token(fts_request_get(req, "Connection"), "keep-alive");

    const char *expect = fts_request_get(req, "Expect");
    if (fts_has_token(expect, "100-continue"))
        req->expect_continue = 1;
    else if (expect != NULL && expect[0] != '\0')
        req->expect_other = 1;

    rc = 0;
out:
    free(lines);
    return rc;
}

static int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int fts_chunked_decode(const char *buf, size_t len, size_t limit,
                       char **out, size_t *outlen, size_t *used)
{
    size_t p = 0, olen = 0, ocap = 0;
    char *o = NULL;
    int rc;

    for (;;) {
        /* chunk-size [; ext] CRLF, the line at most 4 KiB as in Go. */
        const char *nl = memchr(buf + p, '\n', len - p);
        if (nl == NULL) {
            rc = len - p >= 4096 ? -1 : 0;
            goto fail;
        }
        size_t ln = (size_t)(nl - (buf + p));
        if (ln >= 4096) {
            rc = -1;
            goto fail;
        }
        const char *line = buf + p;
        while (ln > 0 && strchr(" \t\r", line[ln - 1]))
            ln--;
        const char *semi = memchr(line, ';', ln);
        if (semi)
            ln = (size_t)(semi - line);
        while (ln > 0 && (line[ln - 1] == ' ' || line[ln - 1] == '\t'))
            ln--;
        if (ln == 0 || ln > 16) {
            rc = -1;
            goto fail;
        }
        unsigned long long size = 0;
        for (size_t i = 0; i < ln; i++) {
            int h = hexdig(line[i]);
            if (h < 0) {
                rc = -1;
                goto fail;
            }
            size = size << 4 | (unsigned)h;
        }
        p = (size_t)(nl - buf) + 1;

        if (size == 0) {
            /* Trailer fields, then the final blank line. */
            size_t tscan = 0;
            size_t end = fts_head_end(buf + p, len - p, &tscan);
            if (end == 0) {
                rc = 0;
                goto fail;
            }
            p += end;
            break;
        }
        if (size > limit || olen + size > limit) {
            rc = -2;
            goto fail;
        }
        if (len - p < size + 2) {
            rc = 0;
            goto fail;
        }
        if (buf[p + size] != '\r' || buf[p + size + 1] != '\n') {
            rc = -1;
            goto fail;
        }
        if (olen + size + 1 > ocap) {
            ocap = (olen + size + 1) * 2;
            o = fts_realloc(o, ocap);
        }
        memcpy(o + olen, buf + p, size);
        olen += size;
        p += size + 2;
    }

    if (o == NULL)
        o = fts_malloc(1);
    o[olen] = '\0';
    *out = o;
    *outlen = olen;
    *used = p;
    return 1;

fail:
    free(o);
    return rc;
}

void fts_request_free(struct fts_request *req)
{
    free(req->method);
    free(req->target);
    for (size_t i = 0; i < req->nfields; i++) {
        free(req->fields[i].name);
        free(req->fields[i].value);
    }
    free(req->fields);
    free(req->path);
    free(req->raw_query);
    free(req->host);
    free(req->body);
    memset(req, 0, sizeof(*req));
}
