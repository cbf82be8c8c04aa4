#include "upstream/h1client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "core/text.h"
#include "listen/conn.h"
#include "core/coding.h"
#include "upstream/upstream.h"

enum xstate {
    X_RESOLVE,      /* waiting for the name lookup */
    X_CONNECT,      /* TCP connect in progress (request already queued) */
    X_HEAD,         /* request sent or being sent; reading the response head */
    X_BODY,         /* head relayed; relaying the body */
};

/* One provider request. Lives in the exchange's arena (the exchange always
 * outlives it); xfer_free only detaches it. */
struct kl_h1_xfer {
    kl_exchange *ex;
    struct kl_h1_pool *pool;
    struct kl_h1_origin *origin;
    struct kl_h1_xfer *prev, *next;     /* pool's live list */
    struct kl_h1_conn *conn;            /* owned while attached */
    struct kl_h1_lookup *lookup;
    struct event timer;                 /* first byte, then idle between bytes */
    struct event ctimer;                /* connect, name lookup included */
    struct kl_h1_url url;
    enum xstate state;
    size_t next_addr;                   /* next address of the origin to try */
    int last_err;                       /* errno of the last failed connect */
    bool reached_out;                   /* a connect left this machine (its failure may be the provider's) */
    int read_err;                       /* errno read_more met (the socket says EOF after it) */
    struct kl_h1_response resp;
    kl_h1_body body;
    struct kl_decoder *dec;          /* a body the server compressed anyway: undone (owned) */
    bool reused;                        /* the connection came from the pool */
    bool retried;                       /* already retried on a fresh connection */
    bool sent_before;                   /* the try before the retry had written the whole request */
    bool got_bytes;                     /* a response byte arrived on this connection */
    bool sent;                          /* the whole request was written to the socket */
    bool paused;                        /* reading stopped for a slow client */
    bool stop;                          /* account refused more of the answer */
    bool undecodable;                   /* the compressed body did not inflate */
};

/* Compressed bytes inflated between two looks at the client's backlog:
 * at most ~512 KiB of plain text past the high-water mark. */
#define KL_H1_INFLATE_STEP 512

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void start(struct kl_h1_xfer *x);

/* A deadline ms from now; 0 is none, which ends the one running (the
 * first byte's, when upstream_idle is "0"). */
static void arm(struct kl_h1_xfer *x, struct event *ev, uint32_t ms)
{
    if (ms)
        evtimer_add(ev, kl_h1_timeout(x->pool, ms));
    else
        evtimer_del(ev);
}

/* A coding's name as an error may quote it: a registered one; anything else
 * is the provider's text, which may be its key echoed (a debugging proxy). */
static const char *coding_label(const char *name)
{
    static const char *const known[] = {"br", "zstd", "compress", "x-compress", "exi", "pack200-gzip", "aes128gcm",
                                        "dcb", "dcz"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcasecmp(name, known[i]) == 0)
            return name;
    return "one not registered";
}

static const struct kl_timeouts *timeouts(const struct kl_h1_xfer *x)
{
    return &x->ex->cfg->listen.timeouts;
}

/* Detach x from everything: timers, lookup, connection (back to the pool
 * only when keep_conn), the live list. */
static void xfer_free(struct kl_h1_xfer *x, bool keep_conn)
{
    struct kl_h1_pool *p = x->pool;
    if (x->sent || x->sent_before)
        x->ex->upstream_sent = true;
    event_del(&x->timer);
    event_del(&x->ctimer);
    if (x->dec) {
        kl_decoder_end(x->dec);
        free(x->dec);
        x->dec = NULL;
    }
    if (x->lookup)
        kl_h1_resolve_cancel(x->lookup);
    x->lookup = NULL;
    if (x->conn) {
        if (keep_conn)
            kl_h1_conn_put(x->conn);
        else
            kl_h1_conn_close(x->conn);
        x->conn = NULL;
    }
    if (x->prev)
        x->prev->next = x->next;
    else
        p->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    p->nxfers--;
    x->ex->h1 = NULL;
}

static void fail(struct kl_h1_xfer *x, enum kl_err_kind kind, enum kl_error_class ec, const char *msg)
{
    kl_exchange *ex = x->ex;
    if (!x->sent && !x->sent_before)
        ex->upstream_unsent = true; /* the provider cannot have served it: failover may */
    xfer_free(x, false);
    if (ex->cut_off) {
        kl_pipeline_upstream_failed(ex, ex->cut_kind, ex->cut_class, ex->error_message);
        return;
    }
    kl_pipeline_upstream_failed(ex, kind, ec, msg);
}

static void fail_unreachable(struct kl_h1_xfer *x, const char *why)
{
    kl_exchange *ex = x->ex;
    if (x->sent_before) { /* the provider was reached, and may be serving the request: no failover */
        fail(x, KL_ERR_BAD_GATEWAY, KL_EC_UPSTREAM_RESET,
             kl_arena_printf(&ex->arena, "connection to provider %s broke after it took the whole request, and a "
                             "fresh connection could not reach it: %s", ex->provider->id, why));
        return;
    }
    fail(x, KL_ERR_BAD_GATEWAY, KL_EC_UPSTREAM_UNREACHABLE,
         kl_arena_printf(&ex->arena, "provider %s is unreachable: %s", ex->provider->id, why));
}

/* No connection could be opened for a reason of this machine's own (out of
 * descriptors, buffers, memory): the gateway is overloaded, the
 * provider did nothing wrong. A 503 of the gateway's, which neither fails
 * over (the next provider would need a socket too) nor counts against the
 * provider's health. */
static void fail_local(struct kl_h1_xfer *x, const char *why)
{
    kl_exchange *ex = x->ex;
    fail(x, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
         kl_arena_printf(&ex->arena, "the gateway cannot open a connection to provider %s now: %s", ex->provider->id,
                         why));
}

/* The connection broke or carried something that is not HTTP/1.1. */
static void fail_broken(struct kl_h1_xfer *x, const char *fmt, const char *why)
{
    kl_exchange *ex = x->ex;
    bool started = x->state == X_BODY;
    fail(x, KL_ERR_BAD_GATEWAY, started ? KL_EC_STREAM_INTERRUPTED : KL_EC_UPSTREAM_RESET,
         kl_arena_printf(&ex->arena, fmt, ex->provider->id, why));
}

static void complete(struct kl_h1_xfer *x)
{
    if (x->dec && !kl_decoder_complete(x->dec)) {
        /* framed as whole, yet its compressed data stops midway (a
         * close-delimited body cut short looks whole to the transport) */
        fail_broken(x, "provider %s sent a malformed response: %s", "its compressed body ends before its end");
        return;
    }
    struct bufferevent *bev = x->conn->bev;
    /* Pooled only after a whole response that allows another, with nothing
     * unread or unsent: anything else leaves the connection in an unknown
     * state. So does a 204 or 304 that announced a body it may not have:
     * one sent anyway would be read as the next caller's answer. */
    bool bodiless_framed = x->body.mode == KL_H1_BODY_NONE && (x->resp.content_length > 0 || x->resp.chunked);
    bool reuse = x->body.mode != KL_H1_BODY_CLOSE && !x->resp.conn_close && !bodiless_framed &&
                 (x->resp.minor >= 1 || x->resp.conn_keep_alive) && !x->resp.length_ignored &&
                 evbuffer_get_length(bufferevent_get_input(bev)) == 0 &&
                 evbuffer_get_length(bufferevent_get_output(bev)) == 0;
    kl_exchange *ex = x->ex;
    xfer_free(x, reuse);
    kl_pipeline_response_end(ex);
}

/* ---- sending ---- */

static bool header_is(const char *h, const char *lower_colon)
{
    return strncasecmp(h, lower_colon, strlen(lower_colon)) == 0;
}

/* Headers the client sets itself, or that would change the framing. */
static bool skip_header(const char *h)
{
    switch (h[0] | 0x20) {
    case 'a': return header_is(h, "accept-encoding:");
    case 'c': return header_is(h, "content-length:") || header_is(h, "connection:");
    case 'e': return header_is(h, "expect:");
    case 'k': return header_is(h, "keep-alive:");
    case 't': return header_is(h, "transfer-encoding:") || header_is(h, "te:");
    case 'u': return header_is(h, "upgrade:");
    default: return false;
    }
}

/* The request head is put together here and added to the evbuffer in one
 * piece (or a few, for a head over 2 KiB), not one per header: sixteen
 * evbuffer_add calls were ~1,700 instructions of every request. */
struct head_buf {
    struct evbuffer *out;
    size_t len;
    char text[2048];
};

static void head_flush(struct head_buf *b)
{
    if (b->len)
        evbuffer_add(b->out, b->text, b->len);
    b->len = 0;
}

static void add(struct head_buf *b, const char *s, size_t n)
{
    if (n > sizeof(b->text) - b->len) {
        head_flush(b);
        if (n > sizeof(b->text)) {
            evbuffer_add(b->out, s, n);
            return;
        }
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
}

#define ADD_LIT(out, lit) add((out), (lit), sizeof(lit) - 1)

/* Queue the request on x's connection: head, then the body by reference
 * (it stays in the exchange, which outlives the connection's hold on it:
 * kl_h1_conn_close drops the reference). On a connection that is already
 * open, write at once instead of waiting a loop pass for writability. */
static void send_request(struct kl_h1_xfer *x)
{
    kl_exchange *ex = x->ex;
    struct bufferevent *bev = x->conn->bev;
    struct head_buf head_text, *head = &head_text;
    head->out = x->pool->reqbuf;
    head->len = 0;
    struct evbuffer *out = head->out;
    bool post = strcmp(ex->req.method, "POST") == 0;
    bool has_host = false, has_accept = false, has_ctype = false;
    for (size_t i = 0; i < ex->n_up_headers; i++) {
        const char *h = ex->up_headers[i];
        has_host |= header_is(h, "host:");
        has_accept |= header_is(h, "accept:");
        has_ctype |= header_is(h, "content-type:");
    }
    if (post)
        ADD_LIT(head, "POST ");
    else
        ADD_LIT(head, "GET ");
    if (x->url.target_needs_slash)
        ADD_LIT(head, "/");
    add(head, x->url.target, strlen(x->url.target));
    ADD_LIT(head, " HTTP/1.1\r\n");
    if (!has_host) {
        ADD_LIT(head, "Host: ");
        add(head, x->url.authority, x->url.authority_len);
        ADD_LIT(head, "\r\n");
    }
    for (size_t i = 0; i < ex->n_up_headers; i++) {
        const char *h = ex->up_headers[i];
        if (skip_header(h))
            continue;
        add(head, h, strlen(h));
        ADD_LIT(head, "\r\n");
    }
    if (!has_accept)
        ADD_LIT(head, "Accept: */*\r\n");
    if (!has_ctype)
        ADD_LIT(head, "Content-Type: application/json\r\n");
    /* Usage is read from the body as it passes: it must be plain text. */
    ADD_LIT(head, "Accept-Encoding: identity\r\n");
    if (post) {
        char cl[48] = "Content-Length: ";
        size_t n = strlen(cl);
        n += kl_fmt_u64(cl + n, ex->up_body_len);
        memcpy(cl + n, "\r\n\r\n", 4);
        add(head, cl, n + 4);
        head_flush(head);
        if (ex->up_body_len)
            evbuffer_add_reference(out, ex->up_body, ex->up_body_len, NULL, NULL);
    } else {
        ADD_LIT(head, "\r\n");
        head_flush(head);
    }
    /* The request is composed in the pool's scratch buffer so it can be
     * written before the bufferevent sees it (the front of a bufferevent's
     * output is frozen to its owner). Connecting: libevent writes it once
     * connected. Whatever is left (a large body, EAGAIN, or an error that
     * on_event then reports) moves to the bufferevent without a copy. */
    if (x->state == X_HEAD)
        (void)evbuffer_write(out, bufferevent_getfd(bev));
    x->sent = x->state == X_HEAD && evbuffer_get_length(out) == 0;
    if (evbuffer_get_length(out) > 0) {
        evbuffer_add_buffer(bufferevent_get_output(bev), out);
        bufferevent_enable(bev, EV_WRITE);
    }
}

static void attach(struct kl_h1_xfer *x, struct kl_h1_conn *c)
{
    x->conn = c;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, x);
    bufferevent_enable(c->bev, EV_READ);
}

/* Try the origin's addresses in turn until one accepts a connect. */
static void connect_next(struct kl_h1_xfer *x)
{
    struct kl_h1_origin *o = x->origin;
    while (x->next_addr < o->naddrs) {
        int err = 0;
        struct kl_h1_conn *c = kl_h1_conn_open(o, &o->addrs[x->next_addr++], &err);
        if (c) {
            x->state = X_CONNECT;
            attach(x, c);
            send_request(x);
            return;
        }
        x->last_err = err;
        x->reached_out |= !kl_h1_errno_local(err);
    }
    if (x->last_err && !x->reached_out && !x->sent_before)
        fail_local(x, strerror(x->last_err));
    else
        fail_unreachable(x, strerror(x->last_err ? x->last_err : ECONNREFUSED));
}

static void on_resolved(void *arg, const char *error)
{
    struct kl_h1_xfer *x = arg;
    x->lookup = NULL;
    if (error) {
        fail_unreachable(x, error);
        return;
    }
    x->next_addr = 0;
    x->last_err = 0;
    x->reached_out = false;
    connect_next(x);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_h1_xfer *x = arg;
    kl_exchange *ex = x->ex;
    fail(x, KL_ERR_TIMEOUT, KL_EC_UPSTREAM_TIMEOUT,
         kl_arena_printf(&ex->arena, "provider %s timed out: no connection after %u ms", ex->provider->id,
                         (unsigned)timeouts(x)->upstream_connect));
}

/* A pooled connection if there is one (not on the retry), else a new one. */
static void start(struct kl_h1_xfer *x)
{
    x->got_bytes = false;
    x->sent = false;
    x->state = X_HEAD;
    struct kl_h1_conn *c = x->retried ? NULL : kl_h1_conn_take(x->origin);
    if (c) {
        x->reused = true;
        attach(x, c);
        send_request(x);
        return;
    }
    x->reused = false;
    arm(x, &x->ctimer, timeouts(x)->upstream_connect);
    const char *why = NULL;
    int r = kl_h1_resolve(x->origin, on_resolved, x, &x->lookup, &why);
    if (r == -2 && !x->sent_before) {
        fail_local(x, why);
        return;
    }
    if (r < 0) {
        fail_unreachable(x, why);
        return;
    }
    if (r == 0) {
        x->state = X_RESOLVE;
        return;
    }
    x->next_addr = 0;
    x->last_err = 0;
    x->reached_out = false;
    connect_next(x);
}

/* ---- receiving ---- */

static void emit_plain(void *arg, const char *p, size_t n)
{
    struct kl_h1_xfer *x = arg;
    if (!x->stop && !kl_pipeline_response_data(x->ex, p, n))
        x->stop = true;
}

static void emit(void *arg, const char *p, size_t n)
{
    struct kl_h1_xfer *x = arg;
    if (!x->dec)
        emit_plain(x, p, n);
    else if (!x->stop && !x->undecodable && kl_decoder_feed(x->dec, p, n, emit_plain, x) < 0)
        x->undecodable = true;
}

static void on_client_drained(kl_exchange *ex)
{
    struct kl_h1_xfer *x = ex->h1;
    if (!x || !x->paused)
        return;
    x->paused = false;
    arm(x, &x->timer, kl_upstream_idle_ms(x->ex));
    bufferevent_enable(x->conn->bev, EV_READ);
    /* What was read before the pause is still in the input: handle it from
     * the loop, not from inside the client connection's callback. */
    bufferevent_trigger(x->conn->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Relay body bytes until the input is empty, the body ends, or the client
 * has more than the high-water mark waiting (then stop reading the socket:
 * the kernel's buffers and TCP flow control hold the provider back). */
static void relay_body(struct kl_h1_xfer *x)
{
    kl_exchange *ex = x->ex;
    struct bufferevent *bev = x->conn->bev;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (x->body.mode == KL_H1_BODY_NONE ||
        (x->body.mode == KL_H1_BODY_LENGTH && x->body.remaining == 0)) {
        complete(x);
        return;
    }
    while (evbuffer_get_length(in) > 0) {
        if (kl_conn_pending(ex) > KL_UPSTREAM_HIGH_WATER) {
            x->paused = true;
            bufferevent_disable(bev, EV_READ);
            event_del(&x->timer);
            kl_conn_on_drain(ex, on_client_drained);
            return;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        /* a compressed body is inflated a little at a time: one piece of
         * 64 KiB could become 64 MiB (deflate's ratio is ~1000:1) before
         * the check above is made again */
        size_t take = x->dec && v.iov_len > KL_H1_INFLATE_STEP ? KL_H1_INFLATE_STEP : v.iov_len;
        size_t used = 0;
        enum kl_h1_body_result r = kl_h1_body_feed(&x->body, v.iov_base, take, &used, emit, x);
        evbuffer_drain(in, used);
        if (x->stop) {
            fail(x, KL_ERR_QUOTA, KL_EC_QUOTA, ex->error_message);
            return;
        }
        if (r == KL_H1_BODY_ERROR || x->undecodable) {
            fail_broken(x, "provider %s sent a malformed response: %s",
                        x->undecodable ? "its compressed body does not inflate" : "bad chunked encoding");
            return;
        }
        if (r == KL_H1_BODY_DONE) {
            complete(x);
            return;
        }
    }
    arm(x, &x->timer, kl_upstream_idle_ms(x->ex));
}

/* libevent 2.1 reads at most 4 KiB per call (EVBUFFER_MAX_READ). When the
 * input holds nearly that much, more is likely waiting: a large answer (a
 * batch of embeddings, a long completion) is then read up to 64 KiB at a
 * time, one wake-up instead of sixteen; a small answer or event costs no
 * extra call. The end of the stream is left for the bufferevent's next read;
 * an error is kept, since after it the socket reports only EOF, which would
 * end a close-delimited body as if it were complete (see on_event). */
static void read_more(struct kl_h1_xfer *x)
{
    struct bufferevent *bev = x->conn->bev;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_get_length(in) < 3072)
        return;
    /* the bufferevent keeps its input's end frozen to everyone else */
    evbuffer_unfreeze(in, 0);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(in, 65536, &v, 1) == 1) {
        ssize_t r = read(bufferevent_getfd(bev), v.iov_base, v.iov_len);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            x->read_err = errno;
        v.iov_len = r > 0 ? (size_t)r : 0;
        evbuffer_commit_space(in, &v, r > 0 ? 1 : 0);
    }
    evbuffer_freeze(in, 0);
}

/* Parse the head once it is complete (skipping interim 1xx answers), relay
 * it, and go on with the body. */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct kl_h1_xfer *x = arg;
    kl_exchange *ex = x->ex;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (x->paused)
        return;
    while (x->state == X_HEAD || x->state == X_CONNECT) {
        size_t have = evbuffer_get_length(in);
        if (!have)
            return;
        x->got_bytes = true;
        struct kl_h1_pool *p = x->pool;
        if (!p->scratch && !(p->scratch = malloc(2 * KL_H1_MAX_HEAD + 1)))
            abort();
        size_t look = have < KL_H1_MAX_HEAD + 1 ? have : KL_H1_MAX_HEAD + 1;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        struct kl_h1_response r;
        const char *why = NULL;
        long n = kl_h1_parse_response(buf, look, KL_H1_MAX_HEAD, &r, p->scratch, &why);
        if (n == 0)
            return;
        if (n < 0) {
            fail_broken(x, "provider %s sent a malformed response: %s", why);
            return;
        }
        evbuffer_drain(in, (size_t)n);
        if (r.status < 200) {
            if (r.status == 101) {
                fail_broken(x, "provider %s sent a malformed response: %s", "unexpected protocol switch");
                return;
            }
            continue; /* 100 Continue, 103 Early Hints: the real answer follows */
        }
        if (r.coding == KL_CODING_OTHER) {
            /* nothing after this stage could read it: not its usage, its
             * calls, nor a key it echoes; libcurl refuses it alike */
            ex->upstream_status = r.status;
            fail(x, KL_ERR_BAD_GATEWAY, KL_EC_UPSTREAM_ERROR,
                 kl_arena_printf(&ex->arena, "provider %s answered %d in a content coding keyless cannot read (%s), "
                                 "although it asked for none", ex->provider->id, r.status,
                                 coding_label(r.coding_name)));
            return;
        }
        x->resp = r;
        x->state = X_BODY;
        kl_h1_body_init(&x->body, &r);
        if (r.coding != KL_CODING_IDENTITY) {
            if (!(x->dec = malloc(sizeof(*x->dec))))
                abort();
            kl_decoder_init(x->dec, r.coding);
        }
        const char *headers = kl_arena_strndup(&ex->arena, p->scratch, r.filtered_len);
        /* From here on the deadline is the gap between bytes, not the first. */
        arm(x, &x->timer, kl_upstream_idle_ms(x->ex));
        /* an inflated body is longer than the provider's Content-Length */
        kl_pipeline_response_head(ex, r.status, headers, x->dec ? -1 : r.content_length, r.event_stream);
    }
    if (x->state == X_BODY) {
        read_more(x);
        relay_body(x);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct kl_h1_xfer *x = arg;
    /* Sent: stop watching writability until the next request. */
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        x->sent = true;
        bufferevent_disable(bev, EV_WRITE);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct kl_h1_xfer *x = arg;
    if (what & BEV_EVENT_CONNECTED) {
        event_del(&x->ctimer);
        /* libevent may run the read callback first, in the same pass: an
         * answer already under way keeps its state */
        if (x->state == X_CONNECT)
            x->state = X_HEAD;
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    if ((what & BEV_EVENT_EOF) && x->read_err) {
        what = BEV_EVENT_READING | BEV_EVENT_ERROR;     /* read_more saw the error first */
        err = x->read_err;
    }
    if (x->state == X_CONNECT) {
        x->last_err = err ? err : ECONNREFUSED;
        x->reached_out = true;
        kl_h1_conn_close(x->conn);
        x->conn = NULL;
        connect_next(x);
        return;
    }
    if ((what & BEV_EVENT_EOF) && x->state == X_BODY && x->body.mode == KL_H1_BODY_CLOSE) {
        complete(x); /* the close is the end of this body; never pooled */
        return;
    }
    if (x->state == X_HEAD && x->reused && !x->got_bytes && !x->retried) {
        /* The server closed the pooled connection as we reused it (one it
         * closed while idle is noticed before reuse: kl_h1_conn_take): the
         * request was not answered, so send it once more on a fresh
         * connection, as libcurl does. The server may have read it all the
         * same, so if the retry fails too, the request counts as sent: it
         * is not failed over, which could serve it twice. */
        kl_h1_conn_close(x->conn);
        x->conn = NULL;
        x->retried = true;
        x->sent_before = x->sent;
        start(x);
        return;
    }
    const char *why = (what & BEV_EVENT_EOF) ? "the connection was closed before the response was complete"
                                             : strerror(err ? err : ECONNRESET);
    fail_broken(x, "connection to provider %s failed: %s", why);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_h1_xfer *x = arg;
    bool started = x->state == X_BODY;
    fail(x, KL_ERR_TIMEOUT, KL_EC_UPSTREAM_TIMEOUT,
         started ? "the provider stopped sending before the response was complete"
                 : "the provider did not answer in time");
}

enum kl_step kl_h1_run(struct kl_h1_pool *p, kl_exchange *ex, const struct kl_h1_url *u)
{
    struct kl_h1_origin *o = kl_h1_origin_get(p, u->host, u->host_len, u->port);
    if (!o)
        return kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "cannot start the upstream request");
    struct kl_h1_xfer *x = kl_arena_alloc(&ex->arena, sizeof(*x));
    x->ex = ex;
    x->pool = p;
    x->origin = o;
    x->url = *u;
    event_assign(&x->timer, p->base, -1, 0, on_timer, x);
    event_assign(&x->ctimer, p->base, -1, 0, on_connect_timeout, x);
    x->next = p->xfers;
    if (p->xfers)
        p->xfers->prev = x;
    p->xfers = x;
    p->nxfers++;
    ex->h1 = x;
    arm(x, &x->timer, timeouts(x)->upstream_first_byte);
    /* Failures from here on are reported through the pipeline (which may
     * finish the exchange before this returns): nothing touches ex after. */
    start(x);
    return KL_WAIT;
}

void kl_h1_cancel(kl_exchange *ex)
{
    if (ex->h1)
        xfer_free(ex->h1, false);
}

void kl_h1_cancel_all(struct kl_h1_pool *p)
{
    while (p && p->xfers) {
        struct kl_h1_xfer *x = p->xfers;
        kl_exchange *ex = x->ex;
        xfer_free(x, false);
        kl_pipeline_upstream_failed(ex, KL_ERR_UNAVAILABLE, KL_EC_SHUTDOWN, "the gateway is shutting down");
    }
}
