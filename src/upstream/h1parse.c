#include "upstream/h1parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int kl_h1_parse_url(const char *url, struct kl_h1_url *u)
{
    memset(u, 0, sizeof(*u));
    if (strncasecmp(url, "http://", 7) != 0)
        return -1;
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || memchr(a, '@', alen) || strchr(a + alen, '#'))
        return -1;
    u->authority = a;
    u->authority_len = alen;
    u->target = a + alen;
    u->target_needs_slash = u->target[0] != '/';
    for (const char *p = u->target; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -1;

    const char *port = NULL;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close || close == a + 1)
            return -1;
        u->host = a + 1;
        u->host_len = (size_t)(close - a - 1);
        for (size_t i = 0; i < u->host_len; i++) {
            char c = u->host[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                  c == ':' || c == '.'))
                return -1; /* zone ids and the like: libcurl's business */
        }
        if (close + 1 < a + alen) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        u->host = a;
        u->host_len = colon ? (size_t)(colon - a) : alen;
        port = colon ? colon + 1 : NULL;
        if (u->host_len == 0)
            return -1;
        for (size_t i = 0; i < u->host_len; i++) {
            char c = a[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_'))
                return -1;
        }
    }
    u->port = 80;
    if (port) {
        unsigned v = 0;
        const char *end = a + alen;
        if (port == end)
            return -1;
        for (const char *p = port; p < end; p++) {
            if (*p < '0' || *p > '9' || (v = v * 10 + (unsigned)(*p - '0')) > 65535)
                return -1;
        }
        if (v == 0)
            return -1;
        u->port = (uint16_t)v;
    }
    return 0;
}

/* Hop-by-hop headers, framing redone here, and what a provider's answer
 * would decide for the gateway's own origin: its cookies, its alternative
 * services, its transport and reporting policies, and CORS. The provider
 * grants a web page the reading of its answers by the page's Origin, which
 * keyless forwards: relayed, the grant would let any page a tailnet user
 * opens post a plain-text request that keyless knows as that user, and read
 * the answer. Nor where to go next: keyless follows no redirect, and a
 * caller that followed one (the SDKs' fetch does) would send the prompt,
 * and its own token, to wherever the provider pointed. */
/* Every response header passes here: the names' lengths are known at
 * compile time, and the length and then the first byte (| 0x20 folds ASCII
 * case; every name is lowercase) turn most away before strncasecmp. */
bool kl_h1_drop_response_header(const char *name, size_t n)
{
#define DROP(s) {s, sizeof(s) - 1}
    static const struct {
        const char *s;
        size_t len;
    } drop[] = {
        DROP("connection"), DROP("keep-alive"), DROP("proxy-connection"), DROP("proxy-authenticate"),
        DROP("te"), DROP("trailer"), DROP("transfer-encoding"), DROP("upgrade"), DROP("content-length"),
        DROP("set-cookie"), DROP("set-cookie2"), DROP("alt-svc"), DROP("strict-transport-security"),
        DROP("nel"), DROP("report-to"), DROP("location"), DROP("content-location"), DROP("refresh"),
    };
#undef DROP
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (drop[i].len == n && (name[0] | 0x20) == drop[i].s[0] && strncasecmp(name, drop[i].s, n) == 0)
            return true;
    return n > 15 && strncasecmp(name, "access-control-", 15) == 0;
}

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool name_is(const char *p, size_t n, const char *lower)
{
    return strlen(lower) == n && strncasecmp(p, lower, n) == 0;
}

/* True when the comma-separated list v[0..n) holds token (any case). */
static bool list_has(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return true;
    }
    return false;
}

bool kl_h1_parse_length(const char *v, size_t n, int64_t *out)
{
    if (n == 0)
        return false;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (INT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return true;
}

static int name_cmp(const void *a, const void *b)
{
    const struct kl_h1_name *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = strncasecmp(x->p, y->p, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* The next name of a Connection list in v[0..e), or false at its end.
 * "close" and "keep-alive" are left out: they name no header that is not
 * dropped anyway, and almost every answer lists one. */
static bool next_listed(const char **v, const char *e, struct kl_h1_name *out)
{
    while (*v < e) {
        while (*v < e && (**v == ' ' || **v == '\t' || **v == ','))
            (*v)++;
        const char *s0 = *v;
        while (*v < e && **v != ',')
            (*v)++;
        const char *s1 = *v;
        while (s1 > s0 && (s1[-1] == ' ' || s1[-1] == '\t' || s1[-1] == '\r'))
            s1--;
        size_t n = (size_t)(s1 - s0);
        bool usual = (n == 5 && strncasecmp(s0, "close", 5) == 0) || (n == 10 && strncasecmp(s0, "keep-alive", 10) == 0);
        if (n && !usual) {
            *out = (struct kl_h1_name){s0, n};
            return true;
        }
    }
    return false;
}

void kl_h1_connection_names(const char *head, size_t len, struct kl_h1_names *out)
{
    out->v = NULL;
    out->n = 0;
    const char *stop = head + len;
    size_t most = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (const char *p = head; p < stop;) {
            const char *nl = memchr(p, '\n', (size_t)(stop - p));
            const char *e = nl ? nl : stop;
            struct kl_h1_name name;
            if ((size_t)(e - p) > 11 && strncasecmp(p, "connection:", 11) == 0)
                for (const char *v = p + 11; next_listed(&v, e, &name);) {
                    if (pass == 0)
                        most++;
                    else
                        out->v[out->n++] = name;
                }
            p = nl ? nl + 1 : stop;
        }
        if (pass == 0) {
            if (!most)
                return;
            out->v = malloc(most * sizeof(*out->v));
            if (!out->v)
                abort();
        }
    }
    qsort(out->v, out->n, sizeof(*out->v), name_cmp);
}

bool kl_h1_names_has(const struct kl_h1_names *names, const char *name, size_t n)
{
    if (!names->n)
        return false;
    struct kl_h1_name key = {name, n};
    return bsearch(&key, names->v, names->n, sizeof(*names->v), name_cmp) != NULL;
}

size_t kl_h1_drop_named(char *head, size_t len, const struct kl_h1_names *names)
{
    if (!names->n)
        return len;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(head + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (head + i)) + 1 : len - i;
        const char *colon = memchr(head + i, ':', n);
        if (!(colon && kl_h1_names_has(names, head + i, (size_t)(colon - (head + i))))) {
            memmove(head + o, head + i, n);
            o += n;
        }
        i += n;
    }
    if (o < len)
        head[o] = '\0';
    return o;
}

bool kl_h1_field_ok(const char *p, size_t n, const char **why)
{
    if (n && (p[0] == ' ' || p[0] == '\t')) {
        *why = "obsolete line folding in the response head";
        return false;
    }
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p) {
        *why = "malformed response header";
        return false;
    }
    for (const char *c = p; c < colon; c++)
        if (!is_tchar((unsigned char)*c)) {
            *why = "malformed response header name";
            return false;
        }
    for (const char *c = colon + 1; c < p + n; c++)
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) {
            *why = "control character in a response header";
            return false;
        }
    return true;
}

/* One header field: record what framing needs, copy it to the relayed
 * block unless it is dropped. Returns false when the field is malformed. */
static bool header_field(const char *p, size_t n, struct kl_h1_response *r, char *filtered,
                         const struct kl_h1_names *listed, const char **why)
{
    if (!kl_h1_field_ok(p, n, why))
        return false;
    const char *colon = memchr(p, ':', n);
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1, *ve = p + n;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    size_t vl = (size_t)(ve - v);
    bool drop = kl_h1_drop_response_header(p, nl) || kl_h1_names_has(listed, p, nl);
    if (name_is(p, nl, "content-length")) {
        int64_t len;
        if (!kl_h1_parse_length(v, vl, &len) || (r->content_length >= 0 && r->content_length != len)) {
            *why = "invalid Content-Length in the response";
            return false;
        }
        r->content_length = len;
    } else if (name_is(p, nl, "transfer-encoding")) {
        /* We send no TE header, so chunked is the only coding allowed. */
        if (r->chunked || !(vl == 7 && strncasecmp(v, "chunked", 7) == 0)) {
            *why = "unsupported Transfer-Encoding in the response";
            return false;
        }
        r->chunked = true;
    } else if (name_is(p, nl, "connection")) {
        r->conn_close |= list_has(v, vl, "close");
        r->conn_keep_alive |= list_has(v, vl, "keep-alive");
    } else if (name_is(p, nl, "content-type")) {
        r->event_stream = vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    } else if (name_is(p, nl, "content-encoding")) {
        /* Asked for identity; a server that encodes anyway has its coding
         * undone by the client (core/coding.h). Only one coding, in one
         * field, can be: anything else is refused. */
        enum kl_coding c = kl_coding_named(v, vl);
        if (c != KL_CODING_IDENTITY) {
            r->coding = r->coding == KL_CODING_IDENTITY ? c : KL_CODING_OTHER;
            size_t cn = vl < sizeof(r->coding_name) - 1 ? vl : sizeof(r->coding_name) - 1;
            memcpy(r->coding_name, v, cn);
            r->coding_name[cn] = '\0';
        }
        drop = true;
    }
    if (!drop && filtered) {
        char *o = filtered + r->filtered_len;
        memcpy(o, p, nl);
        o += nl;
        memcpy(o, ": ", 2);
        o += 2;
        memcpy(o, v, vl);
        o += vl;
        memcpy(o, "\r\n", 2);
        r->filtered_len += nl + 2 + vl + 2;
    }
    return true;
}

long kl_h1_parse_response(const char *buf, size_t len, size_t max_head, struct kl_h1_response *r,
                          char *filtered, const char **why)
{
    /* Find the blank line that ends the head (CRLF or a bare LF). */
    size_t end = 0, i = 0;
    for (;;) {
        const char *lf = memchr(buf + i, '\n', len - i);
        if (!lf)
            break;
        size_t at = (size_t)(lf - buf);
        if (at == i || (at == i + 1 && buf[i] == '\r')) {
            end = at + 1;
            break;
        }
        i = at + 1;
    }
    if (!end) {
        if (len > max_head) {
            *why = "response head too large";
            return -1;
        }
        return 0;
    }
    if (end > max_head) {
        *why = "response head too large";
        return -1;
    }
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    if (filtered)
        filtered[0] = '\0';

    /* Status line: HTTP/1.x SP 3DIGIT [SP reason] */
    const char *line = buf;
    const char *lf = memchr(line, '\n', end);
    size_t ll = (size_t)(lf - line);
    if (ll > 0 && line[ll - 1] == '\r')
        ll--;
    if (ll < 12 || strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') ||
        line[8] != ' ' || line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9' ||
        line[11] < '0' || line[11] > '9' || (ll > 12 && line[12] != ' ')) {
        *why = "malformed status line from the provider";
        return -1;
    }
    r->minor = line[7] - '0';
    r->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    for (size_t k = 12; k < ll; k++)
        if ((unsigned char)line[k] < 0x20 && line[k] != '\t') {
            *why = "malformed status line from the provider";
            return -1;
        }

    const char *p = lf + 1, *stop = buf + end;
    struct kl_h1_names listed;
    kl_h1_connection_names(p, (size_t)(stop - p), &listed);
    bool ok = true;
    while (ok && p < stop) {
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        size_t n = (size_t)(nl - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        ok = header_field(p, n, r, filtered, &listed, why);
        p = nl + 1;
    }
    free(listed.v);
    if (!ok)
        return -1;
    if (filtered)
        filtered[r->filtered_len] = '\0';
    if (r->chunked && r->content_length >= 0) {
        /* Transfer-Encoding wins (RFC 9112 section 6.3); the connection is
         * not trusted with another request afterwards. */
        r->length_ignored = true;
        r->content_length = -1;
    }
    if (r->chunked && r->minor == 0) {
        *why = "chunked response in HTTP/1.0";
        return -1;
    }
    return (long)end;
}

void kl_h1_body_init(kl_h1_body *b, const struct kl_h1_response *r)
{
    memset(b, 0, sizeof(*b));
    if (r->status < 200 || r->status == 204 || r->status == 304)
        b->mode = KL_H1_BODY_NONE;
    else if (r->chunked)
        b->mode = KL_H1_BODY_CHUNKED;
    else if (r->content_length >= 0)
        b->mode = KL_H1_BODY_LENGTH, b->remaining = (uint64_t)r->content_length;
    else
        b->mode = KL_H1_BODY_CLOSE;
}

enum kl_h1_body_result kl_h1_body_feed(kl_h1_body *b, const char *in, size_t len, size_t *used,
                                       void (*emit)(void *arg, const char *p, size_t n), void *arg)
{
    *used = 0;
    switch (b->mode) {
    case KL_H1_BODY_NONE:
        return KL_H1_BODY_DONE;
    case KL_H1_BODY_LENGTH: {
        size_t n = len < b->remaining ? len : (size_t)b->remaining;
        if (n)
            emit(arg, in, n);
        b->remaining -= n;
        *used = n;
        return b->remaining ? KL_H1_BODY_MORE : KL_H1_BODY_DONE;
    }
    case KL_H1_BODY_CHUNKED:
        switch (kl_chunked_feed(&b->chunked, in, len, used, emit, arg)) {
        case KL_CHUNKED_DONE:
            return KL_H1_BODY_DONE;
        case KL_CHUNKED_ERROR:
            return KL_H1_BODY_ERROR;
        default:
            return KL_H1_BODY_MORE;
        }
    case KL_H1_BODY_CLOSE:
        if (len)
            emit(arg, in, len);
        *used = len;
        return KL_H1_BODY_MORE;
    }
    return KL_H1_BODY_ERROR;
}

bool kl_h1_no_proxy_match(const char *no_proxy, const char *host, size_t host_len)
{
    const char *p = no_proxy;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t n = (size_t)(p - s);
        if (n == 1 && s[0] == '*')
            return true;
        if (n && s[0] == '.')
            s++, n--;
        if (n == 0 || memchr(s, '/', n))
            continue;
        if (n == host_len && strncasecmp(s, host, n) == 0)
            return true;
        if (host_len > n && host[host_len - n - 1] == '.' &&
            strncasecmp(host + host_len - n, s, n) == 0)
            return true;
    }
    return false;
}
