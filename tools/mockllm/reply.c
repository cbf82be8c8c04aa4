/* Sending an answer: the response head, whole bodies, stream pieces, and the
 * fault modes (delays, stalls, malformed events, TCP resets).
 *
 * Every wait is an event timer on the worker's base, never a sleep, so one
 * thread can hold thousands of slow streams. A reply that outlives its
 * request callback watches its connection's close callback: that is how a
 * client that goes away mid-stream is noticed, counted, and cleaned up. */
#include <errno.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>

#include "mockllm.h"

enum { PH_NEW, PH_WAIT_HEAD, PH_STREAMING, PH_STALLED, PH_RESETTING };
enum outcome { OUT_NONE, OUT_COMPLETED, OUT_ABORTED, OUT_RESET };

/* With no delay between events, write this many pieces (or this many bytes)
 * before waiting for the socket to drain, so a huge stream to a slow reader
 * does not pile up in memory. */
#define BATCH_PIECES 32
#define BATCH_BYTES (256u * 1024u)
#define RESET_POLL_MAX 2000

static void pump(ml_reply *r);
static void reset_poll(ml_reply *r);

const char *ml_status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 424: return "Failed Dependency";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Site Overloaded";
    default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

long long ml_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ml_reply *ml_reply_new(ml_worker *w, struct evhttp_request *req, ml_directives *d)
{
    ml_reply *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->w = w;
    r->req = req;
    r->d = *d;
    memset(d, 0, sizeof(*d));   /* ownership of the strings moved to r */
    ml_directives_init(d);
    if (ml_directives_expand(&r->d) < 0) {
        ml_directives_free(&r->d);
        free(r);
        return NULL;
    }
    r->status = 200;
    r->seed = ml_rand(w);
    r->created = (long)time(NULL);
    r->t0_ms = ml_now_ms();
    r->text = ml_directives_text(&r->d);
    r->text_len = strlen(r->text);
    r->text_pieces = r->d.events;
    r->has_text = r->d.ntools == 0 || r->d.text != NULL;
    return r;
}

void ml_reply_set_model(ml_reply *r, const char *requested)
{
    const char *m = r->d.model ? r->d.model : requested && *requested ? requested : "unknown";

    free(r->model);
    r->model = strdup(m);
}

void ml_reply_header(ml_reply *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

void ml_reply_json(ml_reply *r, int status, cJSON *json)
{
    r->status = status;
    if (!r->body)
        r->body = evbuffer_new();
    if (r->body && json)
        ml_add_json(r->body, json);
    cJSON_Delete(json);
    ml_reply_header(r, "Content-Type", "application/json");
}

void ml_reply_stream(ml_reply *r, const char *content_type, long npieces, ml_piece_fn fn,
                     const char *malformed_piece)
{
    r->is_stream = 1;
    r->npieces = npieces;
    r->piece = fn;
    r->malformed_piece = malformed_piece;
    r->malformed_at = npieces >= 2 ? npieces / 2 : npieces;
    atomic_fetch_add(&r->w->sh->active_streams, 1);
    ml_reply_header(r, "Content-Type", content_type);
    ml_reply_header(r, "Cache-Control", "no-cache");
}

/* A binary framing cannot spell its malformed piece as a string, and only
 * dialects with an in-stream error event can honour stream_error. */
void ml_reply_stream_hooks(ml_reply *r, ml_piece_fn malformed, ml_piece_fn error)
{
    r->malformed_fn = malformed;
    r->error_fn = error;
}

static void free_reply(ml_reply *r, enum outcome how)
{
    ml_shared *sh = r->w->sh;

    if (r->timer)
        event_free(r->timer);
    if (r->is_stream) {
        atomic_fetch_sub(&sh->active_streams, 1);
        if (how == OUT_COMPLETED)
            atomic_fetch_add(&sh->streams_completed, 1);
        else if (how == OUT_ABORTED)
            atomic_fetch_add(&sh->streams_aborted, 1);
    }
    ml_directives_free(&r->d);
    free(r->model);
    if (r->body)
        evbuffer_free(r->body);
    free(r);
}

/* The connection went away (client closed, timeout, or server shutdown)
 * while we still held the request. If evhttp detached the request from the
 * connection, nobody else will free it, so we do. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    ml_reply *r = arg;

    if (r->req && evhttp_request_get_connection(r->req) == NULL)
        evhttp_request_free(r->req);
    r->req = NULL;
    r->evcon = NULL;
    free_reply(r, OUT_ABORTED);
}

static void watch(ml_reply *r)
{
    if (!r->evcon)
        r->evcon = evhttp_request_get_connection(r->req);
    if (r->evcon)
        evhttp_connection_set_closecb(r->evcon, on_close, r);
}

static void unwatch(ml_reply *r)
{
    if (r->evcon)
        evhttp_connection_set_closecb(r->evcon, NULL, NULL);
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static void arm(ml_reply *r, long ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    if (!r->timer)
        r->timer = evtimer_new(r->w->base, on_timer, r);
    if (r->timer)
        evtimer_add(r->timer, &tv);
}

static void on_drained(struct evhttp_connection *evcon, void *arg)
{
    ml_reply *r = arg;

    if (r->phase == PH_STREAMING && !(r->timer && evtimer_pending(r->timer, NULL)))
        pump(r);
}

/* Sends what is in b as one chunk. Returns 1 if on_drained will run once the
 * socket has taken it (evhttp skips empty chunks and then never calls back). */
static int send_chunk(ml_reply *r, struct evbuffer *b, int want_cb)
{
    int queued = evbuffer_get_length(b) > 0;

    if (want_cb)
        evhttp_send_reply_chunk_with_cb(r->req, b, on_drained, r);
    else
        evhttp_send_reply_chunk(r->req, b);
    evbuffer_drain(b, evbuffer_get_length(b));
    return want_cb && queued;
}

static size_t pending_output(ml_reply *r)
{
    struct bufferevent *bev = r->evcon ? evhttp_connection_get_bufferevent(r->evcon) : NULL;

    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static int stream_done(const ml_reply *r)
{
    return r->next >= r->npieces && (!r->d.malformed || r->malformed_done);
}

static void finish_stream(ml_reply *r)
{
    unwatch(r);
    evhttp_send_reply_end(r->req);
    free_reply(r, OUT_COMPLETED);
}

static void begin_reset(ml_reply *r)
{
    r->phase = PH_RESETTING;
    r->polls = 0;
    reset_poll(r);
}

/* Writes stream pieces until the stream ends, a fault fires, a delay is due,
 * or a batch is written (then on_drained resumes). */
static void pump(ml_reply *r)
{
    struct evbuffer *b = r->w->scratch;
    long delay = r->d.delay_events_ms;
    int batch = 0;

    for (;;) {
        int waiting;

        if (r->d.reset_after >= 0 && r->sent >= r->d.reset_after) {
            begin_reset(r);
            return;
        }
        if (stream_done(r)) {
            finish_stream(r);
            return;
        }
        if (r->d.malformed && !r->malformed_done && r->next >= r->malformed_at) {
            if (r->malformed_fn)
                r->malformed_fn(r, r->next, b);
            else
                evbuffer_add(b, r->malformed_piece, strlen(r->malformed_piece));
            r->malformed_done = 1;
        } else if (r->d.stream_error && r->error_fn &&
                   r->next >= (r->d.stream_error_at >= 0 ? r->d.stream_error_at : r->malformed_at)) {
            /* the error replaces the rest of the stream, as providers do */
            r->error_fn(r, r->next, b);
            r->next = r->npieces;
        } else {
            r->piece(r, r->next++, b);
        }
        r->sent++;
        waiting = send_chunk(r, b, delay == 0 && !r->d.stall);

        if (r->d.reset_after >= 0 && r->sent >= r->d.reset_after) {
            begin_reset(r);
            return;
        }
        if (stream_done(r)) {
            finish_stream(r);
            return;
        }
        if (r->d.stall) {
            r->phase = PH_STALLED;
            return;
        }
        if (delay > 0) {
            arm(r, delay);
            return;
        }
        if (waiting && (++batch >= BATCH_PIECES || pending_output(r) >= BATCH_BYTES))
            return;
    }
}

/* Non-streams with reset_after or stall: send the head with the full
 * Content-Length but only the first half of the body. */
static void send_partial(ml_reply *r)
{
    struct evbuffer *b = r->w->scratch;
    size_t len = r->body ? evbuffer_get_length(r->body) : 0;
    char cl[32];

    snprintf(cl, sizeof(cl), "%zu", len);
    ml_reply_header(r, "Content-Length", cl);
    evhttp_send_reply_start(r->req, r->status, ml_status_reason(r->status));
    if (len / 2 > 0) {
        evbuffer_remove_buffer(r->body, b, len / 2);
        send_chunk(r, b, 0);
    }
    r->sent = 1;
    if (r->d.reset_after >= 0)
        begin_reset(r);
    else
        r->phase = PH_STALLED;
}

static void send_head(ml_reply *r)
{
    if (r->d.reset_after == 0) {
        /* reset before answering: not even the head goes out */
        watch(r);
        begin_reset(r);
        return;
    }
    if (!r->is_stream && r->d.reset_after < 0 && !r->d.stall) {
        unwatch(r);
        evhttp_send_reply(r->req, r->status, ml_status_reason(r->status), r->body);
        free_reply(r, OUT_NONE);
        return;
    }
    watch(r);
    if (!r->is_stream) {
        send_partial(r);
        return;
    }
    evhttp_send_reply_start(r->req, r->status, ml_status_reason(r->status));
    r->phase = PH_STREAMING;
    pump(r);
}

void ml_reply_start(ml_reply *r)
{
    if (r->d.retry_after >= 0) {
        char v[24];
        snprintf(v, sizeof(v), "%ld", r->d.retry_after);
        ml_reply_header(r, "Retry-After", v);
    }
    if (r->d.delay_headers_ms > 0) {
        watch(r);
        r->phase = PH_WAIT_HEAD;
        arm(r, r->d.delay_headers_ms);
        return;
    }
    send_head(r);
}

/* Closes the socket so the kernel sends RST instead of FIN. evhttp would
 * shutdown(SHUT_WR) first (a FIN), so we close the real socket ourselves
 * with SO_LINGER 0 by dup2()ing a spare socket over its descriptor; evhttp
 * then frees the connection and closes the harmless spare. */
static void do_reset(ml_reply *r, int fd)
{
    struct evhttp_connection *evcon = r->evcon;
    struct linger lg = { 1, 0 };

    unwatch(r);
    if (fd >= 0) {
        int spare;
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        spare = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (spare >= 0) {
            dup2(spare, fd);
            close(spare);
        }
    }
    r->req = NULL;      /* freed with the connection */
    free_reply(r, OUT_RESET);
    if (evcon)
        evhttp_connection_free(evcon);
}

/* A reset must not destroy data the client has not received yet: wait until
 * evhttp's buffer is empty and the kernel reports nothing unacknowledged. */
static void reset_poll(ml_reply *r)
{
    struct bufferevent *bev = r->evcon ? evhttp_connection_get_bufferevent(r->evcon) : NULL;
    int fd = bev ? bufferevent_getfd(bev) : -1;
    int unacked = 0;

    if (fd >= 0 && ioctl(fd, SIOCOUTQ, &unacked) < 0)
        unacked = 0;
    if ((pending_output(r) > 0 || unacked > 0) && r->polls++ < RESET_POLL_MAX) {
        arm(r, 1);
        return;
    }
    do_reset(r, fd);
}

/* evhttp does not read the socket while the request is ours, so a client
 * that left during delay_headers_ms is only noticed here, by peeking. */
static int peer_gone(ml_reply *r)
{
    struct bufferevent *bev = r->evcon ? evhttp_connection_get_bufferevent(r->evcon) : NULL;
    int fd = bev ? bufferevent_getfd(bev) : -1;
    char c;
    ssize_t n;

    if (fd < 0)
        return 0;
    n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    ml_reply *r = arg;

    switch (r->phase) {
    case PH_WAIT_HEAD:
        if (peer_gone(r)) {
            /* on_close (we still watch) counts the abort and frees r */
            evhttp_connection_free(r->evcon);
            break;
        }
        send_head(r);
        break;
    case PH_STREAMING:
        pump(r);
        break;
    case PH_RESETTING:
        reset_poll(r);
        break;
    default:
        break;
    }
}
