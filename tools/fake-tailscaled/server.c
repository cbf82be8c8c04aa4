#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "alloc.h"
#include "localapi.h"
#include "request.h"

/* Input buffered before reading pauses: room for the largest head Go
 * accepts plus a bit, so an oversized head is seen and answered 431. */
#define READ_HIGH_WATERMARK (FTS_MAX_HEAD_BYTES + 65536)

/* A chunked body whose encoding is this large with less than 256 KiB of
 * data in it (tiny chunks) is treated as too big, to bound buffering. */
#define MAX_CHUNKED_WIRE (2 * FTS_MAX_UNREAD_BODY + 4096)

enum conn_state {
    ST_HEAD,                      /* reading the next request head */
    ST_BODY,                      /* reading the current request's body */
    ST_WAIT,                      /* answer computed, --delay-ms running */
    ST_HANG,                      /* "!hang": never answer */
    ST_CLOSING                    /* flushing the last answer, then close */
};

struct fts_conn {
    struct fts_server *srv;
    struct bufferevent *bev;
    struct event *timer;
    struct fts_conn *prev, *next;
    enum conn_state state;
    size_t scan_from;             /* head-scan progress over the input */
    int crlf_budget;              /* leading CR/LF Go skips after a POST */
    int peer_eof;
    struct fts_request req;
    struct fts_wire wire;
    struct fts_outcome pending;
    int have_pending;
};

void fts_log(const char *fmt, ...)
{
    va_list ap;

    fputs("fake-tailscaled: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void refresh_table(struct fts_server *s, int force)
{
    char err[1024];
    int rc = fts_table_refresh(&s->table, force, err, sizeof(err));

    if (rc == 1)
        fts_log("table %s loaded: %zu entries (load #%lu)", s->table.path, s->table.n,
                s->table.loads);
    else if (rc < 0)
        fts_log("table reload failed, still serving the previous version: %s", err);
}

static void conn_reset_request(struct fts_conn *c)
{
    fts_request_free(&c->req);
    if (c->have_pending)
        fts_response_free(&c->pending.resp);
    c->have_pending = 0;
    memset(&c->wire, 0, sizeof(c->wire));
}

static void conn_free(struct fts_conn *c)
{
    struct fts_server *s = c->srv;

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    conn_reset_request(c);
    if (c->timer)
        event_free(c->timer);
    bufferevent_free(c->bev);
    free(c);
}

/* Stops reading and closes once everything queued has been written.
 * Returns 1 if c was freed right away. */
static int conn_close_when_flushed(struct fts_conn *c)
{
    c->state = ST_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_free(c);
        return 1;
    }
    return 0;
}

static int conn_reject(struct fts_conn *c, enum fts_reject kind, const char *reason)
{
    struct fts_req_error err = {kind, reason};

    fts_response_write_reject(&err, bufferevent_get_output(c->bev));
    return conn_close_when_flushed(c);
}

/* Writes the pending answer. Returns 1 if c was freed. */
static int conn_answer(struct fts_conn *c)
{
    if (c->pending.action == FTS_ACT_CLOSE) {
        conn_reset_request(c);
        return conn_close_when_flushed(c);
    }
    int close = fts_response_write(&c->pending.resp, &c->wire, bufferevent_get_output(c->bev));
    conn_reset_request(c);
    if (close)
        return conn_close_when_flushed(c);
    c->state = ST_HEAD;
    return 0;
}

/* Computes the answer for the current request and either writes it, or
 * parks the connection (delay, hang). Returns 1 if c was freed. */
static int conn_dispatch(struct fts_conn *c)
{
    struct fts_server *s = c->srv;

    refresh_table(s, 0);
    fts_localapi_serve(s, &c->req, &c->pending);
    c->have_pending = 1;

    if (c->pending.action == FTS_ACT_HANG) {
        c->state = ST_HANG;
        return 0;
    }
    if (c->pending.delayed && s->cfg.delay_ms > 0) {
        struct timeval tv = {s->cfg.delay_ms / 1000, (s->cfg.delay_ms % 1000) * 1000};
        c->state = ST_WAIT;
        evtimer_add(c->timer, &tv);
        return 0;
    }
    return conn_answer(c);
}

/* The head has been parsed: decide how the body is read (Go's Expect
 * handling and its 256 KiB unread-body allowance). Returns 1 if c was
 * freed. */
static int conn_begin_body(struct fts_conn *c)
{
    struct fts_request *r = &c->req;
    int is11 = r->major > 1 || (r->major == 1 && r->minor >= 1);

    if (r->expect_other) {
        /* Go's sendExpectationFailed: 417 with Connection: close, and the
         * connection ends. */
        fts_response_init(&c->pending.resp, 417);
        fts_response_set_header(&c->pending.resp, "Connection", "close");
        c->pending.action = FTS_ACT_RESPOND;
        c->pending.delayed = 0;
        c->have_pending = 1;
        c->wire.close_after = 1;
        return conn_answer(c);
    }
    if (r->body_kind == FTS_BODY_NONE)
        return conn_dispatch(c);

    if (r->expect_continue && is11) {
        if (!fts_localapi_reads_body(r)) {
            c->wire.close_after = 1;    /* body never requested */
            return conn_dispatch(c);
        }
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    if (r->body_kind == FTS_BODY_LENGTH && r->content_length > FTS_MAX_UNREAD_BODY) {
        c->wire.too_big = 1;
        return conn_dispatch(c);
    }
    c->state = ST_BODY;
    return 0;
}

/* Tries to complete the body. Returns 1 if c was freed; leaves state
 * ST_BODY when more bytes are needed. */
static int conn_read_body(struct fts_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    struct fts_request *r = &c->req;

    if (r->body_kind == FTS_BODY_LENGTH) {
        size_t want = (size_t)r->content_length;
        if (len < want) {
            if (!c->peer_eof)
                return 0;
            c->wire.close_after = 1;    /* truncated body */
            return conn_dispatch(c);
        }
        r->body = fts_malloc(want + 1);
        evbuffer_remove(in, r->body, want);
        r->body[want] = '\0';
        r->body_len = want;
        return conn_dispatch(c);
    }

    const char *data = (const char *)evbuffer_pullup(in, -1);
    size_t used = 0;
    int rc = fts_chunked_decode(data, len, FTS_MAX_UNREAD_BODY, &r->body, &r->body_len, &used);
    if (rc == 1) {
        evbuffer_drain(in, used);
        return conn_dispatch(c);
    }
    if (rc == 0 && len > MAX_CHUNKED_WIRE)
        rc = -2;
    if (rc == 0) {
        if (!c->peer_eof)
            return 0;
        rc = -1;
    }
    if (rc == -2)
        c->wire.too_big = 1;
    else
        c->wire.close_after = 1;        /* malformed or truncated */
    return conn_dispatch(c);
}

/* Runs requests off the input buffer until one has to wait. Returns 1 if
 * c was freed. Requests on one connection are answered in order, one at a
 * time, like Go's server (no pipelined parallelism). */
static int conn_process(struct fts_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    for (;;) {
        if (c->state == ST_BODY) {
            if (conn_read_body(c))
                return 1;
            if (c->state == ST_BODY)
                return 0;
            continue;
        }
        if (c->state != ST_HEAD)
            return 0;

        /* RFC 7230 tolerance Go applies after a POST: up to 4 stray CR/LF. */
        while (c->crlf_budget > 0 && evbuffer_get_length(in) > 0) {
            unsigned char ch;
            evbuffer_copyout(in, &ch, 1);
            if (ch != '\r' && ch != '\n') {
                c->crlf_budget = 0;
                break;
            }
            evbuffer_drain(in, 1);
            c->crlf_budget--;
        }

        size_t len = evbuffer_get_length(in);
        if (len == 0) {
            if (c->peer_eof)
                return conn_close_when_flushed(c);
            return 0;
        }
        size_t look = len < FTS_MAX_HEAD_BYTES ? len : FTS_MAX_HEAD_BYTES;
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        size_t end = fts_head_end(data, look, &c->scan_from);
        if (end == 0) {
            if (len >= FTS_MAX_HEAD_BYTES)
                return conn_reject(c, FTS_REJECT_431, NULL);
            if (c->peer_eof)
                return conn_reject(c, FTS_REJECT_400, NULL);
            return 0;
        }

        struct fts_req_error err;
        c->crlf_budget = 0;
        if (fts_request_parse(data, end, &c->req, &err) != 0) {
            fts_request_free(&c->req);
            return conn_reject(c, err.kind, err.reason);
        }
        evbuffer_drain(in, end);
        c->scan_from = 0;
        if (strcmp(c->req.method, "POST") == 0)
            c->crlf_budget = 4;

        c->wire.is_head = strcmp(c->req.method, "HEAD") == 0;
        c->wire.major = c->req.major;
        c->wire.minor = c->req.minor;
        c->wire.wants10ka = c->req.wants10ka;
        c->wire.wants_close = c->req.wants_close;
        c->wire.chunk_mode = c->srv->cfg.chunk_mode;
        c->wire.chunk_size = c->srv->cfg.chunk_size;

        if (conn_begin_body(c))
            return 1;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn_process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct fts_conn *c = arg;

    if (c->state == ST_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct fts_conn *c = arg;

    if (what & BEV_EVENT_ERROR) {
        conn_free(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->peer_eof = 1;
        switch (c->state) {
        case ST_HEAD:
        case ST_BODY:
            conn_process(c);
            break;
        case ST_HANG:
            conn_free(c);
            break;
        case ST_WAIT:
        case ST_CLOSING:
            break;                      /* answer / flush, then close */
        }
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct fts_conn *c = arg;

    if (c->state != ST_WAIT)
        return;
    if (conn_answer(c))
        return;
    if (c->state == ST_HEAD)
        conn_process(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    struct fts_server *s = arg;
    struct fts_conn *c = fts_calloc(1, sizeof(*c));

    c->srv = s;
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(s->base, on_timer, c);
    if (c->bev == NULL || c->timer == NULL) {
        fts_log("cannot set up a connection");
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        if (c->timer)
            event_free(c->timer);
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;

    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, READ_HIGH_WATERMARK);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct fts_server *s = arg;

    if (sig == SIGHUP) {
        refresh_table(s, 1);
        return;
    }
    event_base_loopbreak(s->base);
}

/* Creates the listening socket at path with mode 0666, first removing a
 * stale socket file (one nobody accepts on) but never a live socket or a
 * file of another type. Returns the descriptor or -1. */
static int bind_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "%s: socket path longer than %zu bytes", path,
                 sizeof(sa.sun_path) - 1);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);

    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket; not removing it", path);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(probe);
            snprintf(err, errlen, "%s: another server is listening on this socket", path);
            return -1;
        }
        if (probe >= 0)
            close(probe);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove stale socket %s: %s", path, strerror(errno));
            return -1;
        }
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(path, 0666) != 0 || listen(fd, 128) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int fts_server_init(struct fts_server *s, const struct fts_config *cfg, char *err,
                    size_t errlen)
{
    int fd;

    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;

    if (fts_table_open(&s->table, cfg->table_path, err, errlen) != 0)
        return -1;

    /* A client that disconnects mid-answer must not kill the fixture. */
    signal(SIGPIPE, SIG_IGN);

    s->base = event_base_new();
    if (s->base == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        return -1;
    }
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    s->sig_hup = evsignal_new(s->base, SIGHUP, on_signal, s);
    if (!s->sig_term || !s->sig_int || !s->sig_hup || evsignal_add(s->sig_term, NULL) ||
        evsignal_add(s->sig_int, NULL) || evsignal_add(s->sig_hup, NULL)) {
        snprintf(err, errlen, "cannot install signal handlers");
        return -1;
    }

    fd = bind_unix(cfg->socket_path, err, errlen);
    if (fd < 0)
        return -1;
    s->socket_bound = 1;
    s->listener = evconnlistener_new(s->base, on_accept, s, LEV_OPT_CLOSE_ON_FREE, 0, fd);
    if (s->listener == NULL) {
        close(fd);
        snprintf(err, errlen, "cannot listen on %s", cfg->socket_path);
        return -1;
    }
    return 0;
}

int fts_server_run(struct fts_server *s)
{
    return event_base_dispatch(s->base) < 0 ? -1 : 0;
}

void fts_server_free(struct fts_server *s)
{
    while (s->conns)
        conn_free(s->conns);
    if (s->listener)
        evconnlistener_free(s->listener);
    if (s->socket_bound)
        unlink(s->cfg.socket_path);
    if (s->sig_term)
        event_free(s->sig_term);
    if (s->sig_int)
        event_free(s->sig_int);
    if (s->sig_hup)
        event_free(s->sig_hup);
    if (s->base)
        event_base_free(s->base);
    fts_table_close(&s->table);
    fts_stats_free(&s->stats);
    memset(s, 0, sizeof(*s));
}
