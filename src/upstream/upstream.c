#include "upstream/upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "core/buf.h"
#include "core/log.h"
#include "listen/conn.h"
#include "route/failover.h"
#include "upstream/fetch.h"
#include "upstream/h1client.h"
#include "upstream/h1parse.h"
#include "upstream/pool.h"

struct sock_watch {
    curl_socket_t fd;
    struct event *ev;
    struct kl_upstream_pool *pool;
};

struct kl_upstream_xfer {
    struct kl_curl_job job;             /* first: CURLOPT_PRIVATE points here */
    kl_exchange *ex;
    struct kl_upstream_pool *pool;
    struct kl_upstream_xfer *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    struct event *timer;                /* first byte, then idle between bytes */
    struct kl_buf head;                 /* filtered response headers */
    struct kl_buf conn;                 /* its Connection lines, whose names are dropped at its end */
    size_t head_bytes;                  /* of the head being read, its status line included */
    int status;
    int64_t content_length;
    bool decoded;                       /* curl removed a Content-Encoding */
    bool chunked;                       /* curl removed a Transfer-Encoding: the Content-Length is no length */
    const char *bad;                    /* why the response head was refused, or NULL */
    bool event_stream;
    bool head_done;
    bool paused;
    bool timed_out;
    int local_err;                      /* errno of a socket this machine could not open (EMFILE, ...) */
    bool opened;                        /* a socket was opened: a connect failure may be the provider's */
};


/* Proxy settings from the environment, read once: libcurl would otherwise
 * getenv() several variables on every transfer. Written before the workers
 * start and only read afterwards. */
static const char *env_proxy_http, *env_proxy_https, *env_no_proxy;

/* Whether an easy handle may serve another transfer after curl_easy_reset:
 * before libcurl 8.1.0 the reset left a pointer to the last transfer's
 * freed header data in the handle (curl issue #11101), and a provider's
 * folded header line in the next response made libcurl free it twice.
 * Debian 12 has 7.88.1: there each transfer gets a new handle (connections
 * and TLS sessions are the multi handle's, kept either way). Set with the
 * proxy settings, before the workers start. */
static bool reuse_easy;

static const char *env_either(const char *lower, const char *upper)
{
    const char *v = getenv(lower);
    return v && *v ? v : (v = getenv(upper)) && *v ? v : NULL;
}

int kl_upstream_global_init(void)
{
    /* all_proxy stands for either one that is not set, as in libcurl */
    const char *all = env_either("all_proxy", "ALL_PROXY");
    env_proxy_http = env_either("http_proxy", "HTTP_PROXY");
    env_proxy_https = env_either("https_proxy", "HTTPS_PROXY");
    if (!env_proxy_http)
        env_proxy_http = all;
    if (!env_proxy_https)
        env_proxy_https = all;
    env_no_proxy = env_either("no_proxy", "NO_PROXY");
    reuse_easy = curl_version_info(CURLVERSION_NOW)->version_num >= 0x080100;
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void kl_upstream_global_cleanup(void)
{
    curl_global_cleanup();
}

uint32_t kl_upstream_idle_ms(const kl_exchange *ex)
{
    return ex->failover_to ? KL_FAILOVER_DRAIN_MS : ex->cfg->listen.timeouts.upstream_idle;
}

/* ---- libcurl <-> libevent glue ---- */

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct kl_upstream_pool *p = arg;
    int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(p->multi, fd, action, &running);
    kl_upstream_check_done(p);
}

static void on_multi_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_upstream_pool *p = arg;
    int running;
    curl_multi_socket_action(p->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    kl_upstream_check_done(p);
}

static int multi_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
    (void)multi;
    struct kl_upstream_pool *p = arg;
    if (timeout_ms < 0) {
        evtimer_del(p->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
    return 0;
}

static int multi_socket_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    (void)easy;
    struct kl_upstream_pool *p = arg;
    struct sock_watch *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            event_free(s->ev);
            free(s);
            curl_multi_assign(p->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            abort();
        s->fd = fd;
        s->pool = p;
        curl_multi_assign(p->multi, fd, s);
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    /* Re-arm the same event rather than free and allocate one per change;
     * with the base's changelist a del+add in one loop costs no syscall. */
    if (s->ev) {
        event_del(s->ev);
        event_assign(s->ev, p->w->base, fd, kind, on_socket_event, p);
    } else {
        s->ev = event_new(p->w->base, fd, kind, on_socket_event, p);
    }
    event_add(s->ev, NULL);
    return 0;
}

int kl_upstream_pool_init(kl_worker *w)
{
    struct kl_upstream_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->w = w;
    p->multi = curl_multi_init();
    if (!p->multi) {
        free(p);
        return -1;
    }
    p->timer = evtimer_new(w->base, on_multi_timer, p);
    curl_multi_setopt(p->multi, CURLMOPT_SOCKETFUNCTION, multi_socket_cb);
    curl_multi_setopt(p->multi, CURLMOPT_SOCKETDATA, p);
    curl_multi_setopt(p->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
    curl_multi_setopt(p->multi, CURLMOPT_TIMERDATA, p);
    /* Connections kept idle for reuse hold descriptors no request is using:
     * at most this worker's share of what the limit leaves for provider
     * connections (kl_server.fd_conns, as many as for callers), or
     * requests would find none left while hundreds sit idle (the native
     * client also sheds them when a socket cannot be had: h1pool.c). */
    size_t idle = (w->server->fd_conns + (size_t)w->server->nworkers - 1) / (size_t)w->server->nworkers;
    if (idle > 1024)
        idle = 1024;
    if (idle < 4)
        idle = 4;
    curl_multi_setopt(p->multi, CURLMOPT_MAXCONNECTS, (long)idle);
    p->h1 = kl_h1_pool_new(w->base);
    if (!p->h1) {
        event_free(p->timer);
        curl_multi_cleanup(p->multi);
        free(p);
        return -1;
    }
    p->h1->max_idle = idle;
    w->upstream = p;
    return 0;
}

void kl_upstream_pool_free(kl_worker *w)
{
    struct kl_upstream_pool *p = w->upstream;
    if (!p)
        return;
    while (p->fetches)
        kl_fetch_cancel(p->fetches);
    while (p->nidle)
        curl_easy_cleanup(p->idle[--p->nidle]);
    kl_h1_pool_free(p->h1);
    curl_multi_cleanup(p->multi);
    event_free(p->timer);
    free(p);
    w->upstream = NULL;
}

CURL *kl_upstream_easy_get(struct kl_upstream_pool *p)
{
    return p->nidle ? p->idle[--p->nidle] : curl_easy_init();
}

void kl_upstream_easy_put(struct kl_upstream_pool *p, CURL *e)
{
    if (reuse_easy && p->nidle < sizeof(p->idle) / sizeof(p->idle[0])) {
        curl_easy_reset(e);
        p->idle[p->nidle++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

/* ---- one transfer ---- */

/* Whether the whole request went out, from the bytes sent (the connect
 * time is 0 on a reused connection too, every HTTP/2 request's case). */
static bool whole_request_sent(struct kl_upstream_xfer *x)
{
    long head_bytes = 0;
    curl_off_t uploaded = 0;
    return curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &head_bytes) == CURLE_OK && head_bytes > 0 &&
           curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded) == CURLE_OK &&
           uploaded >= (curl_off_t)x->ex->up_body_len;
}

static void xfer_free(struct kl_upstream_xfer *x)
{
    struct kl_upstream_pool *p = x->pool;
    if (x->head_done || whole_request_sent(x))
        x->ex->upstream_sent = true;
    curl_multi_remove_handle(p->multi, x->easy);
    kl_upstream_easy_put(p, x->easy);
    curl_slist_free_all(x->headers);
    if (x->timer)
        event_free(x->timer);
    free(x->head.p);
    free(x->conn.p);
    if (x->prev)
        x->prev->next = x->next;
    else
        p->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    p->nxfers--;
    x->ex->xfer = NULL;
    free(x);
}

/* A deadline ms from now; 0 is none, which ends the one running (the
 * first byte's, when upstream_idle is "0"). */
static void arm_timer(struct kl_upstream_xfer *x, uint32_t ms)
{
    if (!ms) {
        evtimer_del(x->timer);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(x->timer, &tv);
}

/* Response headers we never pass to the client: hop-by-hop ones, framing we
 * redo ourselves, cookies the provider sets on the gateway, and the
 * Content-Encoding curl has removed from the body. */
static bool drop_response_header(const char *name, size_t n)
{
    return kl_h1_drop_response_header(name, n) ||
           (n == 16 && strncasecmp(name, "content-encoding", 16) == 0);
}

static void deliver_head(struct kl_upstream_xfer *x)
{
    x->head_done = true;
    /* From here on the deadline is the gap between bytes, not the first. */
    arm_timer(x, kl_upstream_idle_ms(x->ex));
    /* A decoded body no longer matches the provider's Content-Length, nor
     * does a chunked one (Transfer-Encoding wins, RFC 9112 section 6.3). */
    int64_t len = x->decoded || x->chunked ? -1 : x->content_length;
    /* the headers its Connection lines name are hop-by-hop too (RFC 9110
     * section 7.6.1); a line may come after those it names */
    if (x->conn.len && x->head.len) {
        struct kl_h1_names listed;
        kl_h1_connection_names(x->conn.p, x->conn.len, &listed);
        x->head.len = kl_h1_drop_named(x->head.p, x->head.len, &listed);
        free(listed.v);
    }
    kl_pipeline_response_head(x->ex, x->status, x->head.p ? x->head.p : "", len, x->event_stream);
    if (x->ex->failover_to)
        arm_timer(x, kl_upstream_idle_ms(x->ex)); /* a failed answer: its short drain */
}

/* A status line as curl hands it on, "HTTP/1.1 200 OK" or "HTTP/2 200":
 * its three-digit status, or -1 for anything else (libcurl lets through a
 * version such as "HTTP/.1" and a status such as "1"). */
static int status_line(const char *l, size_t n)
{
    while (n > 0 && (l[n - 1] == '\n' || l[n - 1] == '\r'))
        n--;
    const char *sp = memchr(l, ' ', n);
    size_t vl = sp ? (size_t)(sp - l) : 0;
    bool version = (vl == 8 && (!strncmp(l, "HTTP/1.0", 8) || !strncmp(l, "HTTP/1.1", 8))) ||
                   (vl == 6 && (!strncmp(l, "HTTP/2", 6) || !strncmp(l, "HTTP/3", 6)));
    if (!version || n < vl + 4 || (n > vl + 4 && l[vl + 4] != ' '))
        return -1;
    int status = 0;
    for (size_t i = vl + 1; i < vl + 4; i++) {
        if (l[i] < '0' || l[i] > '9')
            return -1;
        status = status * 10 + (l[i] - '0');
    }
    return status >= 100 && status <= 599 ? status : -1;
}

/* Refuse the response: curl ends the transfer, and finish() answers 502. */
static size_t refuse_head(struct kl_upstream_xfer *x, const char *why)
{
    x->bad = why;
    return 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *arg)
{
    struct kl_upstream_xfer *x = arg;
    size_t n = size * nitems;
    if (x->head_done)
        return n; /* a chunked body's trailer: nothing the caller gets, and the answer is whole */
    bool status_line_next = n >= 5 && strncmp(buf, "HTTP/", 5) == 0;
    /* libcurl takes far larger heads, every line of them relayed (a caller's
     * HTTP client may well refuse them): a head the native client refuses
     * is refused here too */
    x->head_bytes = (status_line_next ? 0 : x->head_bytes) + n;
    if (x->head_bytes > KL_H1_MAX_HEAD)
        return refuse_head(x, "response head too large");
    if (status_line_next) {
        /* A new status line (after a 1xx): start over. */
        if ((x->status = status_line(buf, n)) < 0)
            return refuse_head(x, "malformed status line");
        x->head.len = x->conn.len = 0;
        if (x->head.p)
            x->head.p[0] = '\0';
        x->content_length = -1;
        x->decoded = x->chunked = false;
        x->event_stream = false;
        return n;
    }
    size_t len = n;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len == 0) {
        if (x->status == 101)
            return refuse_head(x, "unexpected protocol switch");
        if (x->status >= 200 && !x->head_done)
            deliver_head(x);
        return n;
    }
    /* relayed to the caller as they are: checked as the native client
     * checks them (a bare CR could end a header line for the caller) */
    const char *why;
    if (!kl_h1_field_ok(buf, len, &why))
        return refuse_head(x, why);
    const char *colon = memchr(buf, ':', len);
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1;
    while (v < buf + len && (*v == ' ' || *v == '\t'))
        v++;
    const char *ve = buf + len;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    size_t vl = (size_t)(ve - v);
    int64_t cl;
    if (nl == 14 && strncasecmp(buf, "content-length", 14) == 0) {
        if (!kl_h1_parse_length(v, vl, &cl) || (x->content_length >= 0 && x->content_length != cl))
            return refuse_head(x, "invalid Content-Length in the response");
        x->content_length = cl;
    } else if (nl == 17 && strncasecmp(buf, "transfer-encoding", 17) == 0)
        x->chunked = true;
    else if (nl == 16 && strncasecmp(buf, "content-encoding", 16) == 0)
        x->decoded = !(vl == 8 && strncasecmp(v, "identity", 8) == 0);
    else if (nl == 12 && strncasecmp(buf, "content-type", 12) == 0)
        x->event_stream = vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    if (nl == 10 && strncasecmp(buf, "connection", 10) == 0) {
        kl_buf_put(&x->conn, buf, len);
        kl_buf_put(&x->conn, "\r\n", 2);
    }
    if (drop_response_header(buf, nl))
        return n;
    kl_buf_put(&x->head, buf, len);
    kl_buf_put(&x->head, "\r\n", 2);
    return n;
}

static void on_client_drained(kl_exchange *ex)
{
    struct kl_upstream_xfer *x = ex->xfer;
    if (!x || !x->paused)
        return;
    x->paused = false;
    arm_timer(x, kl_upstream_idle_ms(ex));
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
}

static size_t on_body(char *buf, size_t size, size_t nitems, void *arg)
{
    struct kl_upstream_xfer *x = arg;
    kl_exchange *ex = x->ex;
    size_t n = size * nitems;
    if (!x->head_done && x->status < 200)
        return refuse_head(x, "a body with no final status"); /* an interim 1xx, or none at all */
    if (!x->head_done)
        deliver_head(x);
    if (ex->conn && kl_conn_pending(ex) > KL_UPSTREAM_HIGH_WATER) {
        /* curl keeps this block and hands it to us again on unpause. */
        x->paused = true;
        evtimer_del(x->timer);
        kl_conn_on_drain(ex, on_client_drained);
        return CURL_WRITEFUNC_PAUSE;
    }
    arm_timer(x, kl_upstream_idle_ms(ex));
    if (!kl_pipeline_response_data(ex, buf, n))
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    if (ex->failover_to) /* decided on these bytes (a stream's first event): its short drain */
        arm_timer(x, kl_upstream_idle_ms(ex));
    return n;
}

static void on_xfer_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kl_upstream_xfer *x = arg;
    kl_exchange *ex = x->ex;
    bool started = x->head_done;
    /* a provider that stopped reading the request cannot have served it:
     * failover may, as on the native client (h1client.c's fail) */
    if (!started && !whole_request_sent(x))
        ex->upstream_unsent = true;
    xfer_free(x);
    kl_pipeline_upstream_failed(ex, KL_ERR_TIMEOUT, KL_EC_UPSTREAM_TIMEOUT,
                                started ? "the provider stopped sending before the response was complete"
                                        : "the provider did not answer in time");
}

/* libcurl's own socket(), remembering why it failed: libcurl reports a
 * descriptor limit as "Couldn't connect to server", which would blame the
 * provider (and fail over, and cool it down) for the gateway's overload. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    struct kl_upstream_xfer *x = clientp;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd == CURL_SOCKET_BAD)
        x->local_err = errno;
    else
        x->opened = true;
    return fd;
}

static void finish(struct kl_curl_job *job, CURLcode rc)
{
    struct kl_upstream_xfer *x = (struct kl_upstream_xfer *)job;
    kl_exchange *ex = x->ex;
    bool started = x->head_done;
    bool local = rc == CURLE_COULDNT_CONNECT && !x->opened && kl_h1_errno_local(x->local_err);
    int local_err = x->local_err;
    if (rc == CURLE_OK && !started && x->status >= 200)
        deliver_head(x), started = true;
    if (rc != CURLE_OK && !started && !whole_request_sent(x))
        ex->upstream_unsent = true; /* the provider cannot have served it: failover may */
    const char *bad = rc == CURLE_OK && !started ? "no final status" : x->bad;
    xfer_free(x);
    if (bad) {
        kl_pipeline_upstream_failed(ex, KL_ERR_BAD_GATEWAY, KL_EC_UPSTREAM_RESET,
                                    kl_arena_printf(&ex->arena, "provider %s sent a malformed response: %s",
                                                    ex->provider->id, bad));
        return;
    }
    if (rc == CURLE_OK) {
        kl_pipeline_response_end(ex);
        return;
    }
    if (ex->cut_off) {
        kl_pipeline_upstream_failed(ex, ex->cut_kind, ex->cut_class, ex->error_message);
        return;
    }
    if (local) { /* as on the native client (h1client.c's fail_local) */
        kl_pipeline_upstream_failed(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                                    kl_arena_printf(&ex->arena,
                                                    "the gateway cannot open a connection to provider %s now: %s",
                                                    ex->provider->id, strerror(local_err)));
        return;
    }
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        kl_pipeline_upstream_failed(ex, KL_ERR_BAD_GATEWAY, KL_EC_UPSTREAM_UNREACHABLE,
                                    kl_arena_printf(&ex->arena, "provider %s is unreachable: %s",
                                                    ex->provider->id, curl_easy_strerror(rc)));
        return;
    case CURLE_OPERATION_TIMEDOUT:
        kl_pipeline_upstream_failed(ex, KL_ERR_TIMEOUT, KL_EC_UPSTREAM_TIMEOUT,
                                    kl_arena_printf(&ex->arena, "provider %s timed out: %s",
                                                    ex->provider->id, curl_easy_strerror(rc)));
        return;
    default:
        kl_pipeline_upstream_failed(ex, KL_ERR_BAD_GATEWAY,
                                    started ? KL_EC_STREAM_INTERRUPTED : KL_EC_UPSTREAM_RESET,
                                    kl_arena_printf(&ex->arena, "connection to provider %s failed: %s",
                                                    ex->provider->id, curl_easy_strerror(rc)));
        return;
    }
}

void kl_upstream_check_done(struct kl_upstream_pool *p)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(p->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct kl_curl_job *job = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
        CURLcode rc = msg->data.result;
        if (job)
            job->done(job, rc);
    }
}

/* Plain http:// to a host no proxy applies to: keyless's own client.
 * Everything else (TLS, HTTP/2, proxies, exotic URLs) stays with libcurl. */
static bool native_client_for(const kl_exchange *ex, struct kl_h1_url *u)
{
    if (kl_h1_parse_url(ex->upstream_url, u) < 0)
        return false;
    if (!env_proxy_http)
        return true;
    return env_no_proxy && kl_h1_no_proxy_match(env_no_proxy, u->host, u->host_len);
}

enum kl_step kl_upstream_run(kl_exchange *ex)
{
    struct kl_upstream_pool *p = ex->worker->upstream;
    struct kl_h1_url u;
    if (native_client_for(ex, &u))
        return kl_h1_run(p->h1, ex, &u);
    struct kl_upstream_xfer *x = calloc(1, sizeof(*x));
    if (!x)
        abort();
    x->job.done = finish;
    x->ex = ex;
    x->pool = p;
    x->content_length = -1;
    x->easy = kl_upstream_easy_get(p);
    if (!x->easy) {
        free(x);
        return kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "cannot start the upstream request");
    }
    ex->xfer = x;
    x->next = p->xfers;
    if (p->xfers)
        p->xfers->prev = x;
    p->xfers = x;
    p->nxfers++;

    bool has_ctype = false;
    for (size_t i = 0; i < ex->n_up_headers; i++) {
        x->headers = curl_slist_append(x->headers, ex->up_headers[i]);
        if (strncasecmp(ex->up_headers[i], "content-type:", 13) == 0)
            has_ctype = true;
    }
    /* No "Expect: 100-continue" round trip; no form-encoding default. */
    x->headers = curl_slist_append(x->headers, "Expect:");
    if (!has_ctype)
        x->headers = curl_slist_append(x->headers, "Content-Type: application/json");

    const struct kl_timeouts *t = &ex->cfg->listen.timeouts;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, ex->upstream_url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &x->job);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    const char *proxy = strncmp(ex->upstream_url, "https:", 6) == 0 ? env_proxy_https : env_proxy_http;
    curl_easy_setopt(e, CURLOPT_PROXY, proxy ? proxy : "");
    /* an https:// provider behind a proxy is reached through a CONNECT
     * tunnel, whose "200 Connection established" libcurl would otherwise
     * hand to on_header as the first answer: relayed as the provider's
     * head, with the provider's own status and headers then taken for a
     * trailer */
    curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (proxy && env_no_proxy)
        curl_easy_setopt(e, CURLOPT_NOPROXY, env_no_proxy);
    /* 8 KiB instead of 16: a stream's events are small, and ten thousand
     * open streams save 80 MB */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 8192L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    /* libcurl looks for a reusable connection by walking every connection
     * to the host, busy ones included: with thousands of HTTP/1.1 streams
     * open that walk is O(n) per new request and stalls the loop. Past
     * this many transfers an idle one is unlikely anyway: connect fresh.
     * (HTTP/2 upstreams multiplex on few connections and never get here.) */
    if (p->nxfers > 512 && strncmp(ex->upstream_url, "http:", 5) == 0)
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    if (t->upstream_connect)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)t->upstream_connect);
    if (strcmp(ex->req.method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, ex->up_body ? ex->up_body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)ex->up_body_len);
    }
    x->timer = evtimer_new(ex->worker->base, on_xfer_timeout, x);
    arm_timer(x, t->upstream_first_byte);
    if (curl_multi_add_handle(p->multi, e) != CURLM_OK) {
        xfer_free(x);
        return kl_fail(ex, KL_ERR_INTERNAL, KL_EC_INTERNAL, "cannot start the upstream request");
    }
    return KL_WAIT;
}

void kl_upstream_cancel(kl_exchange *ex)
{
    if (ex->xfer)
        xfer_free(ex->xfer);
    kl_h1_cancel(ex);
}

void kl_upstream_cancel_all(kl_worker *w)
{
    struct kl_upstream_pool *p = w->upstream;
    while (p && p->xfers) {
        struct kl_upstream_xfer *x = p->xfers;
        kl_exchange *ex = x->ex;
        xfer_free(x);
        kl_pipeline_upstream_failed(ex, KL_ERR_UNAVAILABLE, KL_EC_SHUTDOWN, "the gateway is shutting down");
    }
    if (p)
        kl_h1_cancel_all(p->h1);
    /* exchanges waiting on the gateway's own requests (a guardrail hook,
     * WhoIs) end with 503 too, not as if their client had left */
    kl_fetch_fail_all(w, "the gateway is shutting down");
}
