#include "listen/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "core/log.h"
#include "core/text.h"
#include "identity/identity.h"
#include "identity/mtls.h"
#include "listen/body.h"
#include "listen/http.h"
#include "listen/server.h"
#include "pipeline.h"

enum conn_state {
    ST_HEAD,        /* waiting for (the rest of) a request head */
    ST_BODY,        /* reading a request body (the pipeline waits in its body stage) */
    ST_EXCHANGE,    /* the pipeline owns the request; a body not yet asked for stays unread */
    ST_DRAINING,    /* answered, but more than KL_PIPELINED_OUT waits to be written: the next request waits too */
    ST_CLOSING,     /* flushing the last response, then close */
    ST_LINGER,      /* response sent, writing side shut: reading what the client still sends, then close */
};

/* Stop reading pipelined requests past this much unprocessed input. */
#define KL_MAX_PIPELINED (1u << 20)
/* ... and do not serve the next one while this much of the answers before
 * it is unwritten: a client that sends requests and reads no answer would
 * have them pile up in memory (100 MiB of pipelined GETs took 292 MB). */
#define KL_PIPELINED_OUT (256u << 10)

/* A connection closed with a request it did not read to the end lingers
 * this long, or until it has read and dropped this much (see linger). */
#define KL_LINGER_MS 5000
#define KL_LINGER_BYTES (64u << 20)

struct kl_conn {
    kl_worker *w;
    struct kl_conn *prev, *next;    /* worker's list */
    struct bufferevent *bev;
    struct event *timer;            /* idle / head deadline */
    enum conn_state state;
    char peer_ip[INET6_ADDRSTRLEN];
    int peer_port;
    bool peer_self;             /* one of this host's addresses other than loopback (identity/selfaddr.c) */

    kl_exchange *ex;                /* the request being read or served */
    size_t body_cap;
    int64_t body_expected;          /* Content-Length, or -1 when chunked */
    kl_chunked chunked;
    bool body_overflow;
    bool body_no_room;          /* its worker's share of listen.max_body_memory was taken (chunked) */
    bool body_unread;               /* the request has a body the pipeline has not asked for yet */
    bool linger;                    /* the close may leave the client's bytes unread (see linger) */
    size_t lingered;                /* bytes dropped while lingering */

    bool keep_alive;                /* for the current request */
    bool retired;                   /* TLS set up under an older snapshot: no request after those sent already */
    bool head_request;              /* HEAD: no response body */
    bool resp_chunked;              /* current response uses chunked framing */
    bool resp_close_delimited;      /* HTTP/1.0 stream: body ends at close */
    int64_t resp_left;              /* body bytes the head announced and not yet written; -1: not counted */
    bool waiting_head_start;        /* timer measures the head deadline */
    bool served;                    /* a request head has been read on this connection */
    int64_t idle_since_ns;          /* when it last began waiting for a request (kl_now_ns) */
    bool tls;
    kl_config *tls_cfg;             /* the snapshot whose TLS context this connection uses (it
                                       outlives a reload while the handshake may still run) */
    bool direct;                    /* output written by conn_flush (plain TCP) */
    bool flush_queued;
    bool no_read_timeout;           /* timeouts set, with none for reading (set_read_timeout) */
    struct event *flush;            /* runs conn_flush at the end of this loop pass */
    void (*drain_cb)(kl_exchange *);
    struct event *apart;            /* kl_respond_last_apart's wait, with what it writes */
    const char *apart_data;         /* the exchange's arena */
    size_t apart_len;
    int apart_waits;
    void (*apart_done)(kl_exchange *);
    void *kept;                     /* kl_conn_keep's, freed with kept_free */
    void (*kept_free)(void *);
};

static void conn_free(struct kl_conn *c);
static struct kl_conn *live(const kl_exchange *ex);
static void conn_process(struct kl_conn *c);
static void output_added(struct kl_conn *c);
static void after_answer(struct kl_conn *c);
static void linger_read(struct kl_conn *c);
static void close_between_requests(struct kl_conn *c);

/* Was this TLS connection's client certificate verified under settings cfg
 * no longer has (a CA or trust domain taken out)? Then it serves no request
 * after those already sent (kl_conn_retire_tls). */
static bool tls_outdated(const struct kl_conn *c, const kl_config *cfg)
{
    return c->tls_cfg && c->tls_cfg != cfg && !kl_mtls_same_trust(c->tls_cfg->identity, cfg->identity);
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Site Overloaded";
    default: return "Status";
    }
}

static const struct kl_timeouts *timeouts(struct kl_conn *c)
{
    return &c->w->cfg->listen.timeouts;
}

/* "30 s", or "1500 ms": a timeout as a message names it. */
static const char *duration(kl_arena *a, uint32_t ms)
{
    return ms % 1000 ? kl_arena_printf(a, "%u ms", ms) : kl_arena_printf(a, "%u s", ms / 1000);
}

static void arm_timer(struct kl_conn *c, uint32_t ms)
{
    if (!ms) {
        evtimer_del(c->timer);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* Setting timeouts re-adds the socket's events to libevent's timer queues.
 * A request clears the read timeout twice (its exchange starts, its
 * connection waits for the next head): only the first does anything. */
static void set_read_timeout(struct kl_conn *c, uint32_t ms)
{
    if (ms == 0 && c->no_read_timeout)
        return;
    c->no_read_timeout = ms == 0;
    struct timeval rtv = {ms / 1000, (ms % 1000) * 1000};
    uint32_t sms = timeouts(c)->send;
    struct timeval wtv = {sms / 1000, (sms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, ms ? &rtv : NULL, sms ? &wtv : NULL);
}

/* Wait for the next request: the idle timer runs until its first byte. A
 * fresh connection waits no longer than a head may take (timeouts.header,
 * nginx's client_header_timeout): it is not a keep-alive client yet. */
static void enter_head_state(struct kl_conn *c)
{
    c->state = ST_HEAD;
    c->waiting_head_start = false;
    c->idle_since_ns = kl_now_ns();
    if (c->w->full) /* the next caller can have this one's place */
        kl_server_accepting(c->w, true);
    set_read_timeout(c, 0);
    bufferevent_enable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        c->waiting_head_start = true;
        arm_timer(c, timeouts(c)->header);
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    } else {
        uint32_t ms = timeouts(c)->idle, head = timeouts(c)->header;
        arm_timer(c, !c->served && head && (!ms || head < ms) ? head : ms);
    }
}

/* The SDK a request came from, as its headers tell (kl_dialect_classify). */
static enum kl_client client_of(const kl_http_request *req)
{
    if (kl_http_header(req, "anthropic-version"))
        return KL_CLIENT_ANTHROPIC;
    if (kl_http_header(req, "x-goog-api-key") || kl_http_header(req, "x-goog-api-client"))
        return KL_CLIENT_GOOGLE;
    return KL_CLIENT_ANY;
}

/* A head we cannot serve (malformed, too large, a framing we refuse) is
 * still a request: it gets a record and an access-log line, and its error
 * in the dialect its path names when the request line was read (else
 * OpenAI's shape, the most common); then the connection closes. */
static void refuse_head(struct kl_conn *c, kl_exchange *ex, int status, const char *why)
{
    ex->peer_ip = c->peer_ip;
    ex->peer_self = c->peer_self;
    ex->peer_port = c->peer_port;
    ex->dialect = KL_DIALECT_OPENAI;
    if (ex->req.method && ex->req.path) {
        struct kl_route_match m;
        enum kl_client client = client_of(&ex->req);
        kl_dialect_classify(&ex->arena, ex->req.method, ex->req.path, client, &m);
        ex->ep = m.ep;
        ex->dialect = m.ep->id == KL_EP_UNKNOWN ? kl_dialect_guess(ex->req.path, client == KL_CLIENT_ANTHROPIC)
                                                : m.ep->dialect;
    }
    ex->bytes_in = evbuffer_get_length(bufferevent_get_input(c->bev));
    /* answered as any refusal is (its request id, Bedrock's error type,
     * the bytes it took on record), and the connection closes after it:
     * what follows the head (its body, more requests) is not read */
    ex->conn = c;
    c->ex = ex;
    c->keep_alive = false;
    c->linger = true;
    c->head_request = ex->req.method && strcmp(ex->req.method, "HEAD") == 0;
    c->resp_chunked = c->resp_close_delimited = false;
    c->state = ST_EXCHANGE;
    evtimer_del(c->timer);
    /* the body's code (Gemini's) is the status the head says */
    enum kl_err_kind kind = status == 431 ? KL_ERR_HEAD_TOO_LARGE : status == 414 ? KL_ERR_URI_TOO_LONG
                          : status == 501 ? KL_ERR_NOT_IMPLEMENTED : status == 505 ? KL_ERR_VERSION
                          : status == 408 ? KL_ERR_CLIENT_TIMEOUT : KL_ERR_INVALID;
    kl_pipeline_reject(ex, kind, status == 431 || status == 414 ? KL_EC_TOO_LARGE
                                 : status == 408 ? KL_EC_CLIENT_TIMEOUT : KL_EC_BAD_REQUEST, why);
}

/* Room in the body's buffer for n more bytes. It grows as bytes come, by
 * doubling, up to what Content-Length announced: a head alone must not
 * reserve max_body_size (forty 80-byte heads took 1.3 GB). False when the
 * worker's bodies already take its share of listen.max_body_memory: the
 * request is refused rather than the gateway running out of memory (and
 * being killed with every request in flight). */
static bool body_room(struct kl_conn *c, size_t n)
{
    kl_exchange *ex = c->ex;
    if (ex->body && ex->body_len + n <= c->body_cap)
        return true;
    size_t cap = c->body_cap ? c->body_cap * 2 : 16384;
    while (cap < ex->body_len + n)
        cap *= 2;
    /* never past what Content-Length announced, or past the most a chunked
     * body may hold (body_append refuses more) */
    size_t most = c->body_expected >= 0 ? (size_t)c->body_expected : ex->cfg->listen.max_body_size;
    if (cap > most)
        cap = most;
    if (!kl_exchange_charge(ex, &ex->body_charged, cap + 1, kl_body_memory(c->w)))
        return false;
    ex->body = realloc(ex->body, cap + 1);
    if (!ex->body)
        abort();
    c->body_cap = cap;
    return true;
}

static void body_append(void *arg, const char *p, size_t n)
{
    struct kl_conn *c = arg;
    kl_exchange *ex = c->ex;
    size_t max = ex->cfg->listen.max_body_size;
    if (c->body_overflow || c->body_no_room)
        return;
    if (ex->body_len + n > max) {
        c->body_overflow = true;
        return;
    }
    if (!body_room(c, n)) {
        c->body_no_room = true;
        return;
    }
    memcpy(ex->body + ex->body_len, p, n);
    ex->body_len += n;
}

/* No room for the body in this worker's share of listen.max_body_memory:
 * 503 in the caller's dialect (Anthropic's overloaded_error), with
 * Retry-After, which every SDK and agent waits for and tries again; the
 * connection closes, since the rest of the body will not be read. */
static enum kl_step no_room(struct kl_conn *c)
{
    kl_exchange *ex = c->ex;
    kl_worker *w = c->w;
    c->keep_alive = false;
    c->linger = true;
    c->state = ST_EXCHANGE;
    evtimer_del(c->timer);
    kl_body_memory_full(w);
    ex->fail_retry = 1;
    return kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE, "the gateway holds as many request bodies as it has "
                   "memory for (listen.max_body_memory); try again shortly");
}

/* The whole body has arrived: the pipeline goes on with it. A compressed
 * body is read plain by everything after (listen/body.h). KL_NEXT, or
 * KL_DONE with the refusal answered (kl_fail). */
static enum kl_step body_complete(struct kl_conn *c)
{
    kl_exchange *ex = c->ex;
    c->state = ST_EXCHANGE;
    evtimer_del(c->timer);
    set_read_timeout(c, 0);
    if (ex->body)
        ex->body[ex->body_len] = '\0';
    ex->bytes_in += ex->body_len;
    const char *coding = kl_http_header(&ex->req, "content-encoding");
    if (coding && *coding && strcasecmp(coding, "identity") != 0) {
        char *plain, msg[256];
        size_t plain_len;
        enum kl_err_kind kind;
        if (kl_body_decode(coding, ex->body ? ex->body : "", ex->body_len, ex->cfg->listen.max_body_size, &plain,
                           &plain_len, &kind, msg, sizeof(msg)) < 0)
            return kl_fail(ex, kind, kind == KL_ERR_TOO_LARGE ? KL_EC_TOO_LARGE : KL_EC_BAD_REQUEST, "%s", msg);
        free(ex->body);
        ex->body = plain;
        ex->body_len = plain_len;
        c->body_cap = 0; /* the buffer is the decoder's now */
        if (!kl_exchange_charge(ex, &ex->body_charged, plain_len + 1, kl_body_memory(c->w)))
            return no_room(c);
    }
    return KL_NEXT;
}

/* The request body grew past the limit: answer 413 in the caller's dialect
 * and close, since the rest of the body will not be read. */
static void refuse_too_large(struct kl_conn *c)
{
    kl_exchange *ex = c->ex;
    c->keep_alive = false;
    c->linger = true;
    c->state = ST_EXCHANGE;
    evtimer_del(c->timer);
    char msg[128];
    snprintf(msg, sizeof(msg), "request body is larger than the limit of %zu bytes",
             ex->cfg->listen.max_body_size);
    kl_pipeline_reject(ex, KL_ERR_TOO_LARGE, KL_EC_TOO_LARGE, msg);
}

/* What read_body did: the body is not all here yet, it is, or it was
 * refused (the exchange answered and ended). */
enum body_read { BODY_MORE, BODY_DONE, BODY_REFUSED };

static enum body_read read_body(struct kl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    kl_exchange *ex = c->ex;
    if (c->body_expected >= 0) {
        size_t want = (size_t)c->body_expected - ex->body_len;
        size_t have = evbuffer_get_length(in);
        size_t n = have < want ? have : want;
        if (n) {
            if (!body_room(c, n)) {
                kl_pipeline_continue(ex, no_room(c));
                return BODY_REFUSED;
            }
            evbuffer_remove(in, ex->body + ex->body_len, n);
            ex->body_len += n;
        }
        /* libevent 2.1 reads at most 4 KiB per call (EVBUFFER_MAX_READ):
         * the rest of what the socket holds goes straight into the body's
         * buffer, up to 256 KiB a read. The end of the stream, or the EOF
         * the socket reports after an error, is left for the bufferevent's
         * next read: either way the client went away mid-body (499). */
        if (n == have && n < want && !c->tls) {
            size_t chunk = want - n < 262144 ? want - n : 262144;
            if (!body_room(c, chunk)) {
                kl_pipeline_continue(ex, no_room(c));
                return BODY_REFUSED;
            }
            ssize_t r = read(bufferevent_getfd(c->bev), ex->body + ex->body_len, chunk);
            if (r > 0)
                ex->body_len += (size_t)r;
        }
        return ex->body_len == (size_t)c->body_expected ? BODY_DONE : BODY_MORE;
    }
    /* Chunked: decode contiguous pieces of the input as they arrive. */
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t used = 0;
        enum kl_chunked_result r = kl_chunked_feed(&c->chunked, v.iov_base, v.iov_len, &used,
                                                   body_append, c);
        evbuffer_drain(in, used);
        if (r == KL_CHUNKED_ERROR) {
            c->keep_alive = false;
            c->linger = true; /* the client may still be sending: let it read the answer */
            c->state = ST_EXCHANGE;
            kl_pipeline_reject(ex, KL_ERR_INVALID, KL_EC_BAD_REQUEST, "malformed chunked request body");
            return BODY_REFUSED;
        }
        if (c->body_overflow) {
            refuse_too_large(c);
            return BODY_REFUSED;
        }
        if (c->body_no_room) {
            kl_pipeline_continue(ex, no_room(c));
            return BODY_REFUSED;
        }
        if (r == KL_CHUNKED_DONE)
            return BODY_DONE;
    }
    return BODY_MORE;
}

static void read_head(struct kl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t have = evbuffer_get_length(in);
    if (have == 0)
        return;
    if (!c->waiting_head_start) {
        c->waiting_head_start = true;
        arm_timer(c, timeouts(c)->header);
    }
    size_t max_head = c->w->cfg->listen.max_header_size;
    size_t look = have < max_head + 4 ? have : max_head + 4;
    const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)look);
    /* empty lines before a request (RFC 9112 section 2.2), which some
     * clients send after a body, are no part of its head: dropped as they
     * come, so they neither count toward max_header_size nor pile up */
    size_t blank = 0;
    while (blank < look && (buf[blank] == '\n' || (buf[blank] == '\r' && blank + 1 < look && buf[blank + 1] == '\n')))
        blank += buf[blank] == '\r' ? 2 : 1;
    if (blank) {
        evbuffer_drain(in, blank);
        if ((have -= blank) == 0)
            return;
        look = have < max_head + 4 ? have : max_head + 4;
        buf = (const char *)evbuffer_pullup(in, (ssize_t)look);
    }

    kl_exchange *ex = kl_exchange_new(c->w);
    const char *why = NULL;
    int r = kl_http_parse_head(buf, look, max_head, &ex->arena, &ex->req, &why);
    if (r == KL_HTTP_INCOMPLETE && have > KL_MAX_PIPELINED) {
        refuse_head(c, ex, 431, "request head too large");
        return;
    }
    if (r == KL_HTTP_INCOMPLETE) {
        kl_exchange_free(ex);
        return;
    }
    if (r < 0) {
        refuse_head(c, ex, -r, why);
        return;
    }
    evbuffer_drain(in, (size_t)r);
    c->served = true;
    ex->bytes_in = (uint64_t)r;
    ex->conn = c;
    ex->peer_ip = c->peer_ip;
    ex->peer_self = c->peer_self;
    ex->peer_port = c->peer_port;
    c->ex = ex;
    /* a TLS connection made under an older snapshot serves no more
     * requests after this one (see kl_conn_retire_tls) */
    c->keep_alive = ex->req.keep_alive && !c->w->draining && !tls_outdated(c, c->w->cfg);
    c->head_request = strcmp(ex->req.method, "HEAD") == 0;
    c->resp_chunked = c->resp_close_delimited = false;
    c->resp_left = -1;
    c->drain_cb = NULL;
    c->body_cap = 0;
    c->body_overflow = c->body_no_room = false;
    memset(&c->chunked, 0, sizeof(c->chunked));

    /* Classify now: an oversized body must be refused in the caller's dialect. */
    struct kl_route_match m;
    enum kl_client client = client_of(&ex->req);
    kl_dialect_classify(&ex->arena, ex->req.method, ex->req.path, client, &m);
    ex->ep = m.ep;
    ex->dialect = m.ep->id == KL_EP_UNKNOWN ? kl_dialect_guess(ex->req.path, client == KL_CLIENT_ANTHROPIC)
                                            : m.ep->dialect;
    ex->model_requested = m.path_model;

    size_t max_body = ex->cfg->listen.max_body_size;
    if (ex->req.content_length > 0 && (uint64_t)ex->req.content_length > max_body) {
        refuse_too_large(c);
        return;
    }
    /* the body waits until the pipeline asks for it (kl_conn_body), after
     * the caller is known: one nobody let in uploads nothing */
    c->body_unread = ex->req.content_length > 0 || ex->req.chunked;
    c->body_expected = ex->req.chunked ? -1 : ex->req.content_length;
    c->state = ST_EXCHANGE;
    evtimer_del(c->timer);
    kl_pipeline_start(ex);
}

enum kl_step kl_conn_body(kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    if (!c)
        return KL_NEXT;
    if (!c->body_unread)
        return body_complete(c);
    c->body_unread = false;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    /* a body announced larger than the room left is refused before the
     * client is told to send it (100 Continue) or sends it for nothing */
    if (ex->req.content_length > 0 &&
        c->w->body_bytes + (uint64_t)ex->req.content_length + 1 > kl_body_memory(c->w))
        return no_room(c);
    if (ex->req.expect_continue) {
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        output_added(c);
    }
    c->state = ST_BODY;
    bufferevent_enable(c->bev, EV_READ); /* stopped past KL_MAX_PIPELINED while the caller was being identified */
    /* a body that came with its head (most do) needs no timeout */
    if (ex->req.chunked || evbuffer_get_length(in) < (size_t)ex->req.content_length)
        set_read_timeout(c, timeouts(c)->body);
    /* the body that came with the head (most do) in one allocation; a
     * chunked one's input holds framing, and perhaps requests behind it */
    if (!ex->req.chunked && !body_room(c, evbuffer_get_length(in)))
        return no_room(c);
    enum body_read r = read_body(c);
    return r == BODY_DONE ? body_complete(c) : KL_WAIT; /* refused: answered and ended already */
}

static void conn_process(struct kl_conn *c)
{
    if (c->state == ST_LINGER)
        linger_read(c);
    else if (c->state == ST_HEAD)
        read_head(c);
    else if (c->state == ST_BODY && read_body(c) == BODY_DONE)
        kl_pipeline_continue(c->ex, body_complete(c));
    else if (c->state == ST_EXCHANGE &&
             evbuffer_get_length(bufferevent_get_input(c->bev)) > KL_MAX_PIPELINED)
        bufferevent_disable(c->bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_process(arg);
}

/* Drop what a lingering client sends; enough of it closes the connection. */
static void linger_read(struct kl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);
    evbuffer_drain(in, n);
    c->lingered += n;
    if (c->lingered > KL_LINGER_BYTES)
        conn_free(c);
}

/* A response sent before the request was read to its end (a 413, a head
 * refused): closing at once, with the client's bytes unread in the socket,
 * makes the kernel answer them with a reset, and a client still sending
 * (Node's HTTP client uploading the rest of a large body) then loses the
 * response it had not read yet and reports a connection error instead.
 * So the writing side is shut (the client sees the end of the response)
 * and what still comes is read and dropped until the client closes, for at
 * most KL_LINGER_MS and KL_LINGER_BYTES: nginx's lingering close. */
static void linger(struct kl_conn *c)
{
    c->state = ST_LINGER;
    if (!c->tls)
        shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    set_read_timeout(c, 0);
    arm_timer(c, KL_LINGER_MS);
    bufferevent_enable(c->bev, EV_READ);
    linger_read(c);
}

/* Everything written: close a closing connection, or resume a provider
 * transfer that paused for this client. */
static void output_drained(struct kl_conn *c)
{
    if (c->state == ST_CLOSING && c->linger && !c->w->draining) {
        linger(c);
        return;
    }
    if (c->state == ST_CLOSING) {
        conn_free(c);
        return;
    }
    if (c->state == ST_DRAINING) {
        after_answer(c);
        return;
    }
    if (c->drain_cb && c->ex) {
        void (*cb)(kl_exchange *) = c->drain_cb;
        c->drain_cb = NULL;
        cb(c->ex);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct kl_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    if (c->direct)
        bufferevent_disable(bev, EV_WRITE);     /* back to conn_flush */
    output_drained(c);
}

/* On plain TCP the output is written straight to the socket at the end of
 * the loop pass that produced it (one writev for a head and its body)
 * instead of arming EPOLLOUT and writing a pass later: no epoll_ctl and no
 * extra wake-up per response or per streamed event. libevent's write event
 * is enabled only while a slow client leaves bytes behind, and then also
 * reports errors and write timeouts as before. */
static void conn_flush(struct kl_conn *c)
{
    c->flush_queued = false;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (bufferevent_get_enabled(c->bev) & EV_WRITE)
        return;                                 /* libevent is writing */
    if (evbuffer_get_length(out) > 0) {
        /* the bufferevent keeps its output's front frozen except while it
         * writes; do as its own write callback does */
        evbuffer_unfreeze(out, 1);
        evbuffer_write(out, bufferevent_getfd(c->bev));
        evbuffer_freeze(out, 1);
    }
    if (evbuffer_get_length(out) > 0) {
        bufferevent_enable(c->bev, EV_WRITE);   /* the rest, or the error */
        return;
    }
    output_drained(c);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_flush(arg);
}

static void output_added(struct kl_conn *c)
{
    if (c->direct && !c->flush_queued) {
        c->flush_queued = true;
        event_active(c->flush, EV_WRITE, 0);
    }
}

/* The client closed, reset, or stopped reading for too long. */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct kl_conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        return; /* the TLS handshake finished */
    if (c->ex && c->state == ST_BODY && (what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
        !(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
        /* a body that stalled: the client may still be reading, so it is
         * told why (408 in its dialect), and the connection closes after */
        c->keep_alive = false;
        c->linger = true;
        c->state = ST_EXCHANGE;
        evtimer_del(c->timer);
        char msg[96];
        snprintf(msg, sizeof(msg), "request body timed out: no byte for %s (timeouts.body)",
                 duration(&c->ex->arena, timeouts(c)->body));
        kl_pipeline_reject(c->ex, KL_ERR_CLIENT_TIMEOUT, KL_EC_CLIENT_TIMEOUT, msg);
        return;
    }
    if (c->ex) {
        kl_exchange *ex = c->ex;
        enum kl_error_class why = KL_EC_CLIENT_CLOSED;
        if (c->state == ST_BODY) {
            ex->status = 499;
            ex->error_message = "client closed while sending the body";
        } else if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING)) {
            /* the gateway dropped it: not a client that left. With a reset,
             * the kernel does not go on holding what such a client never
             * reads (a plain close leaves it to be delivered first) */
            struct linger lg = {1, 0};
            setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            why = KL_EC_CLIENT_TIMEOUT;
            if (!ex->error_message)
                ex->error_message = kl_arena_printf(&ex->arena, "the client read nothing for %s (timeouts.send)",
                                                    duration(&ex->arena, timeouts(c)->send));
        }
        c->ex = NULL;
        ex->conn = NULL;
        kl_pipeline_client_gone(ex, why);
    }
    conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t look = evbuffer_get_length(in);
    if (look > c->w->cfg->listen.max_header_size)
        look = c->w->cfg->listen.max_header_size;
    const char *begun = c->state == ST_HEAD && c->waiting_head_start && look
                        ? (const char *)evbuffer_pullup(in, (ssize_t)look) : NULL;
    /* the empty lines some clients send after a body are no request */
    size_t blank = 0;
    while (begun && blank < look && (begun[blank] == '\r' || begun[blank] == '\n'))
        blank++;
    if (blank == look)
        begun = NULL;
    if (begun) {
        /* a head begun and never finished (slowloris) is a request too:
         * answered 408 in its path's dialect, and on record */
        kl_exchange *ex = kl_exchange_new(c->w);
        kl_exchange_backdate(ex, timeouts(c)->header); /* it began with its first byte */
        kl_http_request_line_of(begun, look, c->w->cfg->listen.max_header_size, &ex->arena, &ex->req);
        refuse_head(c, ex, 408, kl_arena_printf(&ex->arena, "request head timed out: incomplete after %s "
                                                "(timeouts.header)", duration(&ex->arena, timeouts(c)->header)));
    } else if (c->state == ST_HEAD || c->state == ST_LINGER) {
        conn_free(c); /* idle keep-alive, a fresh connection that sent nothing, or lingered long enough */
    }
}

/* This worker's share of listen.max_connections, or of what the
 * descriptor limit leaves room for (kl_server.fd_conns). */
static size_t conn_limit(const kl_worker *w)
{
    size_t total = w->cfg->listen.max_connections ? w->cfg->listen.max_connections : w->server->fd_conns;
    size_t n = (total + (size_t)w->server->nworkers - 1) / (size_t)w->server->nworkers;
    return n ? n : 1;
}

/* A connection that holds nothing: between requests, or fresh with no
 * byte sent yet; one whose last answer is still being written closes
 * after it (close_between_requests). */
static bool idle(const struct kl_conn *c)
{
    return c->state == ST_HEAD && !c->waiting_head_start &&
           evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
}

/* The worker has reached its share of connections. Past it, the one idle
 * longest closes to make room, as nginx reuses a keep-alive connection
 * when it runs short (its client may reopen it; idle ones held by someone
 * who opened thousands would shut everyone else out). With none idle, it
 * stops accepting until one closes or falls idle, and new callers wait in
 * the kernel's backlog. A scan of every connection, made only at the
 * limit. */
static void make_room(kl_worker *w, struct kl_conn *fresh)
{
    struct kl_conn *c = NULL;
    for (struct kl_conn *k = w->conns; k; k = k->next)
        if (k != fresh && idle(k) && (!c || k->idle_since_ns <= c->idle_since_ns))
            c = k;
    if (c && w->nconns <= conn_limit(w))
        return; /* at the limit, with room to make when the next one comes */
    int64_t now = kl_wall_ms();
    if (now - w->full_warned_ms[!c] >= 10000) {
        kl_warn("worker %d: %llu connections, its share of listen.max_connections (%zu): %s", w->index,
                (unsigned long long)w->nconns, conn_limit(w),
                c ? "closing those idle longest to accept more" : "none idle; not accepting until one closes");
        w->full_warned_ms[!c] = now;
    }
    if (c)
        close_between_requests(c);
    else
        kl_server_accepting(w, false);
}

void kl_conn_accept(kl_worker *w, int fd, const struct sockaddr *sa, socklen_t salen, bool tls)
{
    (void)salen;
    int one = 1;
    /* evhttp-style servers leave Nagle on; small SSE events would then wait
     * for the client's delayed ACK (~40 ms). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct kl_conn *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->w = w;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, c->peer_ip, sizeof(c->peer_ip));
        c->peer_port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], c->peer_ip, sizeof(c->peer_ip));
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_ip, sizeof(c->peer_ip));
        c->peer_port = ntohs(in6->sin6_port);
    } else {
        strcpy(c->peer_ip, "unix");
    }
    c->peer_self = !kl_ip_is_loopback(c->peer_ip) && kl_self_address(w, sa);
    if (tls) {
        /* the current snapshot's context: certificates and CA bundles
         * reloaded with SIGHUP apply to connections accepted from then on */
        c->tls_cfg = kl_config_ref(w->cfg);
        SSL *ssl = SSL_new(c->tls_cfg->identity->mtls_ctx);
        c->bev = ssl ? bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (c->bev)
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        else if (ssl)
            SSL_free(ssl);
        c->tls = true;
    } else {
        c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        close(fd);
        if (c->tls_cfg)
            kl_config_unref(c->tls_cfg);
        free(c);
        return;
    }
    /* libevent reads at most 16 KiB per callback by default: a 1 MB prompt
     * would take 64 trips through the loop. It reads only what the socket
     * holds, so a larger cap costs small requests nothing. */
    bufferevent_set_max_single_read(c->bev, 256 * 1024);
    c->timer = evtimer_new(w->base, on_timer, c);
    c->flush = event_new(w->base, -1, 0, on_flush, c);
    c->direct = !c->tls;
    if (c->direct)
        bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    kl_owner_add(&w->nconns, 1);
    enter_head_state(c);
    if (w->nconns >= conn_limit(w))
        make_room(w, c);
}

static void conn_free(struct kl_conn *c)
{
    kl_worker *w = c->w;
    if (c->ex) {
        /* An exchange still reading its body, or any exchange at shutdown. */
        kl_exchange *ex = c->ex;
        c->ex = NULL;
        ex->conn = NULL;
        kl_pipeline_client_gone(ex, KL_EC_CLIENT_CLOSED);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    kl_owner_add(&w->nconns, (uint64_t)-1);
    if (w->full && w->nconns < conn_limit(w))
        kl_server_accepting(w, true);
    if (c->apart)
        event_free(c->apart);
    event_free(c->timer);
    event_free(c->flush);
    bufferevent_free(c->bev);
    if (c->kept_free)
        c->kept_free(c->kept);
    if (c->tls_cfg)
        kl_config_unref(c->tls_cfg);
    free(c);
    kl_server_maybe_stopped(w);
}

/* A connection between requests closes; one still writing its last
 * response finishes that first (output_drained frees it). */
static void close_between_requests(struct kl_conn *c)
{
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_free(c);
        return;
    }
    c->state = ST_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    evtimer_del(c->timer);
}

void kl_conn_close_idle(kl_worker *w)
{
    struct kl_conn *c = w->conns;
    while (c) {
        struct kl_conn *next = c->next;
        /* a head begun (bytes of it read, not yet whole) is a request the
         * client sent before the stop, as a pipelined one is: it is read
         * to its end (timeouts.header, within timeouts.shutdown), served
         * and recorded, and the connection closes after it */
        if (c->state == ST_HEAD && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
            close_between_requests(c);
        else if (c->state == ST_LINGER)
            conn_free(c);
        /* one serving a request closes after it (its head says so if not
         * sent yet), or after one the client had already sent behind it
         * (kl_conn_exchange_done) */
        c = next;
    }
}

void kl_conn_retire_tls(kl_worker *w)
{
    struct kl_conn *c = w->conns;
    while (c) {
        struct kl_conn *next = c->next;
        if (tls_outdated(c, w->cfg)) {
            if (c->state == ST_HEAD && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
                close_between_requests(c);
            else /* a request the client had sent behind this one is served too (after_answer) */
                c->retired = true;
        }
        c = next;
    }
}

bool kl_conn_tls_current(const kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    return !c || !tls_outdated(c, ex->cfg);
}

void kl_conn_close_all(kl_worker *w)
{
    while (w->conns) {
        struct kl_conn *c = w->conns;
        if (c->ex) {
            /* the gateway ends it (its shutdown grace is over): not a
             * client that left */
            kl_exchange *ex = c->ex;
            c->ex = NULL;
            ex->conn = NULL;
            if (!ex->error_message)
                ex->error_message = "the gateway shut down before the request was served (timeouts.shutdown)";
            if (!ex->head_sent)
                ex->status = 503;
            kl_pipeline_client_gone(ex, KL_EC_SHUTDOWN);
        }
        conn_free(c);
    }
}

/* ---- responses ---- */

static struct kl_conn *live(const kl_exchange *ex)
{
    struct kl_conn *c = ex->conn;
    return (c && c->ex == ex) ? c : NULL;
}

bool kl_conn_keep(kl_exchange *ex, void *data, void (*free_fn)(void *))
{
    struct kl_conn *c = live(ex);
    if (!c) {
        free_fn(data);
        return false;
    }
    if (c->kept_free)
        c->kept_free(c->kept);
    c->kept = data;
    c->kept_free = free_fn;
    return true;
}

void *kl_conn_kept(const kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    return c ? c->kept : NULL;
}

bool kl_conn_is_tls(const kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    return c && c->tls;
}

struct x509_st *kl_conn_peer_certificate(const kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    SSL *ssl = c && c->tls ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    return SSL_get1_peer_certificate(ssl);
}

/* The strings p[0..n) added to out in one piece; their length. Each
 * evbuffer_add to a bufferevent's output runs its callbacks: eleven adds
 * for a response head were ~2,000 instructions of every request. */
static size_t add_pieces(struct evbuffer *out, const char *const *p, size_t n)
{
    size_t len[16], total = 0;
    if (n > sizeof(len) / sizeof(len[0]))
        abort(); /* a caller's list grew: make len larger */
    for (size_t i = 0; i < n; i++)
        total += len[i] = strlen(p[i]);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)total, &v, 1) != 1 || v.iov_len < total) {
        for (size_t i = 0; i < n; i++)
            evbuffer_add(out, p[i], len[i]);
        return total;
    }
    char *o = v.iov_base;
    for (size_t i = 0; i < n; i++) {
        memcpy(o, p[i], len[i]);
        o += len[i];
    }
    v.iov_len = total;
    evbuffer_commit_space(out, &v, 1);
    return total;
}

void kl_respond_start(kl_exchange *ex, int status, const char *headers, int64_t content_length)
{
    struct kl_conn *c = live(ex);
    ex->status = status;
    ex->head_sent = true;
    if (!c)
        return;
    if (c->body_unread) { /* answered before its body was read (a caller refused): the rest is not a request */
        c->keep_alive = false;
        c->linger = true;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const char *framing = "";
    char clen[48] = "Content-Length: ";
    c->resp_left = -1;
    if (status == 204 || status == 304) {
        /* no body, so no framing: a 204 must not carry Content-Length
         * (RFC 9110 section 8.6), even when a provider's did */
        c->resp_left = 0;
    } else if (content_length >= 0) {
        size_t n = strlen(clen);
        n += kl_fmt_u64(clen + n, (uint64_t)content_length);
        memcpy(clen + n, "\r\n", 3);
        framing = clen;
        c->resp_left = content_length;
    } else if (ex->req.minor == 0) {
        c->resp_close_delimited = true;
        c->keep_alive = false;
    } else if (!c->head_request) {
        c->resp_chunked = true;
        framing = "Transfer-Encoding: chunked\r\n";
    }
    const char *connection = "";
    if (!c->keep_alive || c->w->draining || c->retired)
        connection = "Connection: close\r\n";
    else if (ex->req.minor == 0)
        connection = "Connection: keep-alive\r\n";
    /* the head in pieces (printf showed in per-request profiles), added
     * as one */
    char code[24];
    size_t ncode = kl_fmt_u64(code, status > 0 ? (uint64_t)status : 0);
    code[ncode] = '\0';
    const char *const parts[] = {"HTTP/1.1 ", code, " ", reason(status), "\r\n", headers ? headers : "", framing,
                                 connection, "x-keyless-request-id: ", ex->id, "\r\n\r\n"};
    ex->bytes_out += add_pieces(out, parts, sizeof(parts) / sizeof(parts[0]));
    output_added(c);
    if (!ex->t_first_byte_ns)
        ex->t_first_byte_ns = kl_now_ns();
}

/* A buffer given to a client's output (kl_respond_give): freed, and its
 * count with the request bodies given back, once written or once the
 * connection is gone, on its worker's thread either way. */
struct given {
    kl_worker *w;
    char *buf;
    size_t charged;
};

static void given_free(const void *data, size_t len, void *arg)
{
    struct given *g = arg;
    (void)data;
    (void)len;
    kl_body_memory_return(g->w, g->charged);
    free(g->buf);
    free(g);
}

/* kl_respond_data, or with g kl_respond_give: the bytes are then added to
 * the output by reference, not copied. */
static void respond_bytes(kl_exchange *ex, const char *data, size_t len, struct given *g)
{
    struct kl_conn *c = live(ex);
    if (!c || len == 0 || c->head_request) {
        if (g)
            given_free(data, len, g);
        return;
    }
    if (c->resp_left >= 0 && (uint64_t)len > (uint64_t)c->resp_left) {
        /* more than the head announced (a provider whose Content-Length
         * lied): the rest would be read as the next response on this
         * connection, so it is not written, and the connection closes */
        if (c->keep_alive || c->resp_left)
            kl_warn("%s: the answer is longer than its head announced; the rest was dropped and the connection "
                    "closed", ex->id);
        len = (size_t)c->resp_left;
        c->keep_alive = false;
        if (!len) {
            if (g)
                given_free(data, len, g);
            return;
        }
    }
    if (c->resp_left >= 0)
        c->resp_left -= (int64_t)len;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->resp_chunked) {
        /* the chunk-size line, written by hand: printf for every streamed
         * event showed in profiles */
        char line[20];
        size_t n = sizeof(line);
        line[--n] = '\n';
        line[--n] = '\r';
        for (size_t v = len; v || n == sizeof(line) - 2; v >>= 4)
            line[--n] = "0123456789abcdef"[v & 15];
        evbuffer_add(out, line + n, sizeof(line) - n);
    }
    if (!g)
        evbuffer_add(out, data, len);
    else if (evbuffer_add_reference(out, data, len, given_free, g) < 0)
        abort();
    if (c->resp_chunked)
        evbuffer_add(out, "\r\n", 2);
    output_added(c);
    ex->bytes_out += len;
}

void kl_respond_data(kl_exchange *ex, const char *data, size_t len)
{
    respond_bytes(ex, data, len, NULL);
}

void kl_respond_give(kl_exchange *ex, char *data, size_t len, size_t charged)
{
    struct given *g = malloc(sizeof(*g));
    if (!g)
        abort();
    *g = (struct given){.w = ex->worker, .buf = data, .charged = charged};
    respond_bytes(ex, data, len, g);
}

void kl_respond_end(kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    if (!c)
        return;
    if (c->resp_chunked && !c->head_request) {
        evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
        output_added(c);
    }
    if (c->resp_left > 0 && !c->head_request)
        c->keep_alive = false; /* shorter than announced: the client sees it cut off, not a next response */
    c->resp_chunked = false;
    c->resp_left = -1;
}

void kl_respond_abort(kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    if (!c)
        return;
    /* Leaving the chunked body unterminated and closing tells the client the
     * body is incomplete. */
    c->resp_chunked = false;
    c->keep_alive = false;
    if (c->resp_close_delimited) {
        /* an HTTP/1.0 caller's body ends where the connection does: a plain
         * close would be the whole answer to it (and to a proxy speaking
         * HTTP/1.0 to keyless, nginx's default, which would end its own
         * client's answer cleanly); a reset is not */
        struct linger lg = {1, 0};
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
}

void kl_respond(kl_exchange *ex, int status, const char *content_type,
                const char *headers, const char *body, size_t len)
{
    const char *h = content_type
        ? kl_arena_printf(&ex->arena, "Content-Type: %s\r\n%s", content_type, headers ? headers : "")
        : headers;
    kl_respond_start(ex, status, h, (int64_t)len);
    kl_respond_data(ex, body, len);
}

/* The gap before bytes written apart, and how many gaps they wait at most
 * for the client to take what was queued before them. */
#define KL_APART_GAP_MS 100
#define KL_APART_WAITS 50

static void write_apart(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0 && ++c->apart_waits < KL_APART_WAITS) {
        struct timeval tv = {0, KL_APART_GAP_MS * 1000};
        evtimer_add(c->apart, &tv);
        return;
    }
    event_free(c->apart);
    c->apart = NULL;
    kl_exchange *ex = c->ex;
    kl_respond_data(ex, c->apart_data, c->apart_len);
    kl_respond_end(ex);
    c->apart_done(ex);
}

bool kl_respond_last_apart(kl_exchange *ex, const char *data, size_t len, void (*done)(kl_exchange *))
{
    struct kl_conn *c = live(ex);
    if (!c)
        return false;
    c->apart = evtimer_new(c->w->base, write_apart, c);
    if (!c->apart)
        abort();
    c->apart_data = data;
    c->apart_len = len;
    c->apart_waits = 0;
    c->apart_done = done;
    struct timeval tv = {0, KL_APART_GAP_MS * 1000};
    evtimer_add(c->apart, &tv);
    return true;
}

size_t kl_conn_pending(const kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    return c ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

void kl_conn_on_drain(kl_exchange *ex, void (*cb)(kl_exchange *))
{
    struct kl_conn *c = live(ex);
    if (c)
        c->drain_cb = cb;
}

/* Has the client sent more (read already, or still in the socket, where it
 * waits while an exchange runs)? A TLS socket's bytes may be only its
 * close_notify: not looked at. */
static bool input_waiting(struct kl_conn *c)
{
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return true;
    char b;
    return !c->tls && recv(bufferevent_getfd(c->bev), &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void kl_conn_exchange_done(kl_exchange *ex)
{
    struct kl_conn *c = live(ex);
    if (!c)
        return;
    c->ex = NULL;
    ex->conn = NULL;
    c->drain_cb = NULL;
    if (c->apart) { /* not expected: the exchange ended before its last bytes */
        event_free(c->apart);
        c->apart = NULL;
    }
    after_answer(c);
}

/* An answer is over (or, for ST_DRAINING, written at last): close, wait
 * for the answers to be written, or read the next request. Decided anew
 * after the wait, since a reload or a shutdown may have come meanwhile. */
static void after_answer(struct kl_conn *c)
{
    /* stopping, or a TLS connection retired by a reload: a request the
     * client sent before this response ended (pipelined) is served too,
     * the last one (its keep_alive is off), rather than left without an
     * answer or a record (looked for only then: the peek is a system call
     * a request) */
    if (!c->keep_alive || ((c->w->draining || c->retired) && !input_waiting(c))) {
        c->state = ST_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
        evtimer_del(c->timer);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            output_drained(c); /* closes, or lingers */
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > KL_PIPELINED_OUT) {
        c->state = ST_DRAINING; /* output_drained goes on; timeouts.send bounds the wait */
        bufferevent_disable(c->bev, EV_READ);
        evtimer_del(c->timer);
        return;
    }
    enter_head_state(c);
}
