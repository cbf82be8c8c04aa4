/* sseload: many concurrent SSE streams, for keyless's benchmarks.
 *
 *   sseload upstream [--listen HOST:PORT] [--events N] [--interval-ms MS] [--close]
 *       An OpenAI-shaped streaming provider whose text events carry the
 *       CLOCK_MONOTONIC time at which they were written ("t=<ns>"). The first
 *       event goes out with the response head, event k (k >= 1) is due at
 *       head + k * interval (absolute schedule, precise timerfd), then a finish
 *       chunk, a usage chunk and [DONE]. Keep-alive is honoured, unless --close:
 *       then every answer says "Connection: close" and the connection is
 *       closed after it (so a proxy keeps no idle connections afterwards).
 *
 *   sseload client --connect HOST:PORT [--path P] [--streams N] [--rate R]
 *                  [--body-file F] [--header 'Name: value']... [--mode stamp|mock]
 *                  [--interval-ms MS] [--timeout-s S]
 *       Opens N streaming POSTs (R new connections per second), reads every
 *       event and prints one JSON line with what it measured:
 *       - mode stamp (against `sseload upstream`, directly or through a proxy):
 *         per event, arrival time minus the time the upstream wrote it. The
 *         clock is shared, so this is the one-way delivery time of the event.
 *       - mode mock (against mockllm with x-mock delay_events_ms): per event
 *         k >= 1, arrival - request written - k * interval ("lateness"; it
 *         includes the request's way in once). mockllm chains libevent timers
 *         of millisecond precision, so this is good to about a millisecond
 *         only; the stamp mode is the precise one.
 *       - head: request written -> response head arrived (setup per stream).
 *       - steady: the event delays of events that arrived between --steady
 *         FROM:TO seconds after the client started (e.g. when every stream is
 *         open and none is starting or ending).
 *
 * Arrival times are taken once per read() (events in the same read share it).
 * Both modes raise RLIMIT_NOFILE to the hard limit. Linux only (epoll,
 * timerfd). No third-party code. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "net.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- a growable byte buffer ---- */

struct buf {
    char *p;
    size_t len, off, cap;   /* bytes [off, len) are live */
};

static void buf_add(struct buf *b, const void *d, size_t n)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n + 1 > b->cap) {
        if (b->off) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n + 1 > b->cap) {
            size_t cap = b->cap ? b->cap : 512;
            while (cap < b->len + n + 1)
                cap *= 2;
            b->p = realloc(b->p, cap);
            if (!b->p)
                abort();
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static size_t buf_live(const struct buf *b)
{
    return b->len - b->off;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- samples and percentiles ---- */

struct samples {
    int64_t *v;
    size_t n, cap;
};

static void sample_add(struct samples *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            abort();
    }
    s->v[s->n++] = x;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const struct samples *s, double p)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1000.0;
}

static void print_dist(const char *name, struct samples *s)
{
    qsort(s->v, s->n, sizeof(*s->v), cmp64);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += (double)s->v[i];
    printf("\"%s\":{\"n\":%zu,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"max_us\":%.1f}",
           name, s->n, s->n ? sum / (double)s->n / 1000.0 : 0, pct(s, 50), pct(s, 90), pct(s, 99),
           pct(s, 99.9), s->n ? (double)s->v[s->n - 1] / 1000.0 : 0);
}

/* =====================================================================
 * upstream
 * ===================================================================== */

struct up_conn {
    int fd;
    unsigned gen;               /* bumps on free: stale heap entries are skipped */
    struct buf in, out;
    int streaming;
    int sent;                   /* text events written */
    int want_usage;
    int64_t t_head;
    int want_out;               /* EPOLLOUT armed */
    int close_after;            /* --close: close once the stream is written */
};

struct heap_ent {
    int64_t due;
    struct up_conn *c;
    unsigned gen;
};

static struct heap_ent *heap;
static size_t heap_n, heap_cap;

static void heap_push(int64_t due, struct up_conn *c)
{
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof(*heap));
        if (!heap)
            abort();
    }
    size_t i = heap_n++;
    heap[i] = (struct heap_ent){due, c, c->gen};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p].due <= heap[i].due)
            break;
        struct heap_ent t = heap[p];
        heap[p] = heap[i];
        heap[i] = t;
        i = p;
    }
}

static struct heap_ent heap_pop(void)
{
    struct heap_ent top = heap[0];
    heap[0] = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_n && heap[l].due < heap[m].due)
            m = l;
        if (r < heap_n && heap[r].due < heap[m].due)
            m = r;
        if (m == i)
            break;
        struct heap_ent t = heap[m];
        heap[m] = heap[i];
        heap[i] = t;
        i = m;
    }
    return top;
}

static int up_epfd, up_tfd;
static int up_events = 20;
static int up_close_each;           /* --close */
static int64_t up_interval_ns = 1000000000;
static int64_t armed_due = -1;

static void up_arm_timer(void)
{
    /* Skip entries of closed connections at the top. */
    while (heap_n && (heap[0].c->fd < 0 || heap[0].gen != heap[0].c->gen))
        heap_pop();
    int64_t due = heap_n ? heap[0].due : 0;
    if (due == armed_due)
        return;
    armed_due = due;
    struct itimerspec its = {0};
    if (due) {
        its.it_value.tv_sec = due / 1000000000;
        its.it_value.tv_nsec = due % 1000000000;
    }
    timerfd_settime(up_tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void up_release(struct up_conn *c);

static void up_close(struct up_conn *c)
{
    epoll_ctl(up_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->gen++;
    buf_free(&c->in);
    buf_free(&c->out);
    /* Heap entries may still point here: they hold the old gen, and the conn
     * goes to a free list rather than back to malloc. */
    up_release(c);
}

static struct up_conn **free_conns;    /* closed conns, reused (heap entries may point at them) */
static size_t n_free, cap_free;

static void up_release(struct up_conn *c)
{
    if (n_free == cap_free) {
        cap_free = cap_free ? cap_free * 2 : 1024;
        free_conns = realloc(free_conns, cap_free * sizeof(*free_conns));
        if (!free_conns)
            abort();
    }
    free_conns[n_free++] = c;
}

static struct up_conn *up_new(int fd)
{
    struct up_conn *c;
    if (n_free) {
        c = free_conns[--n_free];
        unsigned g = c->gen;
        memset(c, 0, sizeof(*c));
        c->gen = g;
    } else {
        c = calloc(1, sizeof(*c));
        if (!c)
            abort();
    }
    c->fd = fd;
    return c;
}

static void up_flush(struct up_conn *c)
{
    while (buf_live(&c->out)) {
        ssize_t n = write(c->fd, c->out.p + c->out.off, buf_live(&c->out));
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->want_out) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(up_epfd, EPOLL_CTL_MOD, c->fd, &ev);
                    c->want_out = 1;
                }
                return;
            }
            up_close(c);
            return;
        }
        c->out.off += (size_t)n;
    }
    if (c->close_after) {
        up_close(c);
        return;
    }
    if (c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(up_epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 0;
    }
}

static void up_chunk(struct up_conn *c, const char *data, size_t n)
{
    char h[32];
    int hl = snprintf(h, sizeof(h), "%zx\r\n", n);
    buf_add(&c->out, h, (size_t)hl);
    buf_add(&c->out, data, n);
    buf_add(&c->out, "\r\n", 2);
}

static void up_text_event(struct up_conn *c)
{
    char ev[512];
    int n = snprintf(ev, sizeof(ev),
                     "data: {\"id\":\"chatcmpl-sseload\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                     "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t=%lld \"},"
                     "\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                     (long long)now_ns());
    up_chunk(c, ev, (size_t)n);
    c->sent++;
}

static void up_finish(struct up_conn *c)
{
    static const char fin[] =
        "data: {\"id\":\"chatcmpl-sseload\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n";
    up_chunk(c, fin, sizeof(fin) - 1);
    if (c->want_usage) {
        char u[256];
        int n = snprintf(u, sizeof(u),
                         "data: {\"id\":\"chatcmpl-sseload\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                         "\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,"
                         "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                         c->sent, 100 + c->sent);
        up_chunk(c, u, (size_t)n);
    }
    static const char done[] = "data: [DONE]\n\n";
    up_chunk(c, done, sizeof(done) - 1);
    buf_add(&c->out, "0\r\n\r\n", 5);
    c->streaming = 0;
    c->close_after = up_close_each;
}

/* A whole request is in c->in: start its stream. Returns bytes consumed, 0 if
 * the request is not complete yet. */
static size_t up_try_request(struct up_conn *c)
{
    char *start = c->in.p + c->in.off;
    char *end = strstr(start, "\r\n\r\n");
    if (!end)
        return 0;
    size_t head = (size_t)(end - start) + 4;
    long long clen = 0;
    for (char *l = strstr(start, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "content-length:", 15) == 0)
            clen = atoll(l + 2 + 15);
    }
    if (buf_live(&c->in) < head + (size_t)clen)
        return 0;
    c->want_usage = memmem(start + head, (size_t)clen, "include_usage", 13) != NULL;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n";
    buf_add(&c->out, resp, sizeof(resp) - 1);
    if (up_close_each)
        buf_add(&c->out, "Connection: close\r\n", 19);
    buf_add(&c->out, "\r\n", 2);
    c->streaming = 1;
    c->sent = 0;
    c->t_head = now_ns();
    up_text_event(c);
    if (c->sent >= up_events)
        up_finish(c);
    else
        heap_push(c->t_head + up_interval_ns, c);
    return head + (size_t)clen;
}

static void up_read(struct up_conn *c)
{
    char tmp[65536];
    for (;;) {
        ssize_t n = read(c->fd, tmp, sizeof(tmp));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            up_close(c);
            return;
        }
        if (n < 0)
            break;
        buf_add(&c->in, tmp, (size_t)n);
    }
    while (!c->streaming && buf_live(&c->in)) {
        size_t used = up_try_request(c);
        if (!used)
            break;
        c->in.off += used;
    }
    up_flush(c);
}

static int run_upstream(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:0";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_at = argv[++i];
        else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
            up_events = atoi(argv[++i]);
        else if (strcmp(argv[i], "--interval-ms") == 0 && i + 1 < argc)
            up_interval_ns = (int64_t)atoll(argv[++i]) * 1000000;
        else if (strcmp(argv[i], "--close") == 0)
            up_close_each = 1;
        else {
            fprintf(stderr, "sseload upstream: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (up_events < 1)
        up_events = 1;
    struct sockaddr_in sa;
    if (parse_hostport(listen_at, &sa) < 0) {
        fprintf(stderr, "sseload upstream: bad --listen %s\n", listen_at);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0)
        die("sseload upstream: bind/listen");
    socklen_t sl = sizeof(sa);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    up_epfd = epoll_create1(EPOLL_CLOEXEC);
    up_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(up_epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &up_tfd;
    epoll_ctl(up_epfd, EPOLL_CTL_ADD, up_tfd, &ev);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
    printf("sseload upstream listening on %s:%d\n", ip, ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(up_epfd, evs, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    set_nodelay(fd);
                    struct up_conn *c = up_new(fd);
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(up_epfd, EPOLL_CTL_ADD, fd, &e2);
                }
            } else if (p == &up_tfd) {
                uint64_t exp;
                if (read(up_tfd, &exp, sizeof(exp)) < 0) {
                    /* spurious */
                }
                armed_due = -1;
                int64_t t = now_ns();
                while (heap_n && heap[0].due <= t) {
                    struct heap_ent e = heap_pop();
                    struct up_conn *c = e.c;
                    if (c->fd < 0 || e.gen != c->gen || !c->streaming)
                        continue;
                    up_text_event(c);
                    if (c->sent >= up_events)
                        up_finish(c);
                    else
                        heap_push(e.due + up_interval_ns, c);
                    up_flush(c);
                    if (c->fd >= 0 && !c->streaming && buf_live(&c->in))
                        up_read(c);     /* a pipelined next request */
                }
            } else {
                struct up_conn *c = p;
                if (c->fd < 0)
                    continue;
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    up_read(c);
                if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                    up_flush(c);
            }
        }
        up_arm_timer();
    }
}

/* =====================================================================
 * client
 * ===================================================================== */

enum cl_state { CL_CONNECTING, CL_HEAD, CL_CHUNK_SIZE, CL_CHUNK_DATA, CL_CHUNK_CRLF, CL_BODY, CL_DONE };

struct cl_conn {
    int fd;
    enum cl_state st;
    size_t wrote;
    int64_t t_sent, t_head;
    int events;                 /* SSE events seen */
    int64_t chunk_left;
    int chunked;
    struct buf in;              /* raw bytes not yet parsed */
    struct buf sse;             /* body bytes not yet split into events */
};

static const char *cl_mode = "stamp";
static int64_t cl_interval_ns = 1000000000;
static struct samples s_event, s_head, s_steady;
static int64_t cl_t0, cl_steady_from = -1, cl_steady_to = -1;
static long cl_completed, cl_failed, cl_connected, cl_events, cl_bad_status;
static long fail_connect, fail_eof, fail_parse;
static char *cl_request;
static size_t cl_request_len;
static int cl_epfd;
static long cl_open;

static void cl_end(struct cl_conn *c, int ok)
{
    epoll_ctl(cl_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->st = CL_DONE;
    buf_free(&c->in);
    buf_free(&c->sse);
    cl_open--;
    if (ok)
        cl_completed++;
    else
        cl_failed++;
}

static void cl_sample(int64_t t, int64_t v)
{
    sample_add(&s_event, v);
    if (cl_steady_from >= 0 && t - cl_t0 >= cl_steady_from && t - cl_t0 < cl_steady_to)
        sample_add(&s_steady, v);
}

static void cl_event(struct cl_conn *c, const char *ev, size_t n, int64_t t)
{
    c->events++;
    cl_events++;
    if (strcmp(cl_mode, "stamp") == 0) {
        const char *p = memmem(ev, n, "\"t=", 3);
        if (p) {
            long long stamp = atoll(p + 3);
            cl_sample(t, t - stamp);
        }
    } else {
        /* mockllm: piece 0 goes out with the head, piece k is due k intervals
         * after the request reached it. Lateness is measured from the moment
         * the request was written, so it includes the request's way in. */
        int k = c->events - 1;
        if (k >= 1 && !(n >= 12 && memcmp(ev, "data: [DONE]", 12) == 0))
            cl_sample(t, t - c->t_sent - (int64_t)k * cl_interval_ns);
    }
}

/* Body bytes (after de-chunking) of the stream. */
static void cl_body(struct cl_conn *c, const char *p, size_t n, int64_t t)
{
    buf_add(&c->sse, p, n);
    for (;;) {
        char *s = c->sse.p + c->sse.off;
        char *e = strstr(s, "\n\n");
        size_t sep = 2;
        char *e2 = strstr(s, "\r\n\r\n");
        if (e2 && (!e || e2 < e)) {
            e = e2;
            sep = 4;
        }
        if (!e)
            break;
        cl_event(c, s, (size_t)(e - s), t);
        c->sse.off += (size_t)(e - s) + sep;
    }
}

/* Parse what is in c->in. Returns -1 on a protocol error, 1 when the stream
 * ended, 0 to wait for more. */
static int cl_parse(struct cl_conn *c, int64_t t)
{
    for (;;) {
        char *s = c->in.p + c->in.off;
        size_t live = buf_live(&c->in);
        switch (c->st) {
        case CL_HEAD: {
            char *e = strstr(s, "\r\n\r\n");
            if (!e)
                return 0;
            c->t_head = t;
            sample_add(&s_head, t - c->t_sent);
            if (strncmp(s, "HTTP/1.1 200", 12) != 0) {
                cl_bad_status++;
                if (cl_bad_status <= 3)
                    fprintf(stderr, "sseload: non-200 answer: %.*s\n", (int)(strchr(s, '\r') - s), s);
                return -1;
            }
            c->chunked = 0;
            for (char *l = strstr(s, "\r\n"); l && l < e; l = strstr(l + 2, "\r\n"))
                if (strncasecmp(l + 2, "transfer-encoding:", 18) == 0 && strstr(l, "chunked") &&
                    strstr(l, "chunked") < e)
                    c->chunked = 1;
            c->in.off += (size_t)(e - s) + 4;
            c->st = c->chunked ? CL_CHUNK_SIZE : CL_BODY;
            break;
        }
        case CL_CHUNK_SIZE: {
            char *e = strstr(s, "\r\n");
            if (!e)
                return 0;
            char *end;
            long long sz = strtoll(s, &end, 16);
            if (end == s || sz < 0)
                return -1;
            c->in.off += (size_t)(e - s) + 2;
            if (sz == 0)
                return 1;
            c->chunk_left = sz;
            c->st = CL_CHUNK_DATA;
            break;
        }
        case CL_CHUNK_DATA: {
            if (!live)
                return 0;
            size_t take = live < (size_t)c->chunk_left ? live : (size_t)c->chunk_left;
            cl_body(c, s, take, t);
            c->in.off += take;
            c->chunk_left -= (int64_t)take;
            if (c->chunk_left == 0)
                c->st = CL_CHUNK_CRLF;
            break;
        }
        case CL_CHUNK_CRLF:
            if (live < 2)
                return 0;
            c->in.off += 2;
            c->st = CL_CHUNK_SIZE;
            break;
        case CL_BODY:
            if (!live)
                return 0;
            cl_body(c, s, live, t);
            c->in.off += live;
            return 0;
        default:
            return -1;
        }
    }
}

static void cl_write(struct cl_conn *c)
{
    while (c->wrote < cl_request_len) {
        ssize_t n = write(c->fd, cl_request + c->wrote, cl_request_len - c->wrote);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            fail_connect++;
            cl_end(c, 0);
            return;
        }
        c->wrote += (size_t)n;
    }
    c->t_sent = now_ns();
    c->st = CL_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(cl_epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void cl_read(struct cl_conn *c)
{
    char tmp[65536];
    for (;;) {
        ssize_t n = read(c->fd, tmp, sizeof(tmp));
        int64_t t = now_ns();
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (c->st == CL_BODY) {     /* close-delimited body */
                cl_end(c, 1);
            } else {
                fail_eof++;
                cl_end(c, 0);
            }
            return;
        }
        buf_add(&c->in, tmp, (size_t)n);
        int r = cl_parse(c, t);
        if (r < 0) {
            fail_parse++;
            cl_end(c, 0);
            return;
        }
        if (r > 0) {
            cl_end(c, 1);
            return;
        }
    }
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n)
        die(path);
    fclose(f);
    p[n] = '\0';
    *len = (size_t)n;
    return p;
}

static int run_client(int argc, char **argv)
{
    const char *target = NULL, *path = "/v1/chat/completions", *body_file = NULL;
    long streams = 100, rate = 1000, timeout_s = 120;
    struct buf hdrs = {0};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "sseload client: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--connect") == 0)
            target = v;
        else if (strcmp(a, "--path") == 0)
            path = v;
        else if (strcmp(a, "--streams") == 0)
            streams = atol(v);
        else if (strcmp(a, "--rate") == 0)
            rate = atol(v);
        else if (strcmp(a, "--body-file") == 0)
            body_file = v;
        else if (strcmp(a, "--header") == 0) {
            buf_add(&hdrs, v, strlen(v));
            buf_add(&hdrs, "\r\n", 2);
        } else if (strcmp(a, "--mode") == 0)
            cl_mode = v;
        else if (strcmp(a, "--interval-ms") == 0)
            cl_interval_ns = (int64_t)atoll(v) * 1000000;
        else if (strcmp(a, "--timeout-s") == 0)
            timeout_s = atol(v);
        else if (strcmp(a, "--steady") == 0) {
            double from, to;
            if (sscanf(v, "%lf:%lf", &from, &to) != 2 || from < 0 || to <= from) {
                fprintf(stderr, "sseload client: --steady FROM:TO (seconds after start)\n");
                return 2;
            }
            cl_steady_from = (int64_t)(from * 1e9);
            cl_steady_to = (int64_t)(to * 1e9);
        } else {
            fprintf(stderr, "sseload client: unknown option %s\n", a);
            return 2;
        }
    }
    struct sockaddr_in sa;
    if (!target || parse_hostport(target, &sa) < 0) {
        fprintf(stderr, "sseload client: --connect HOST:PORT is required\n");
        return 2;
    }
    if (rate < 1)
        rate = 1;
    size_t blen = 0;
    char *body = body_file ? read_file(body_file, &blen)
                           : strdup("{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    if (!body_file)
        blen = strlen(body);
    struct buf req = {0};
    char line[512];
    int n = snprintf(line, sizeof(line),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Authorization: Bearer sk-placeholder-not-a-key\r\nAccept: text/event-stream\r\n"
                     "Content-Length: %zu\r\n",
                     path, target, blen);
    buf_add(&req, line, (size_t)n);
    if (hdrs.len)
        buf_add(&req, hdrs.p, hdrs.len);
    buf_add(&req, "\r\n", 2);
    buf_add(&req, body, blen);
    cl_request = req.p;
    cl_request_len = req.len;

    struct cl_conn *conns = calloc((size_t)streams, sizeof(*conns));
    if (!conns)
        abort();
    cl_epfd = epoll_create1(EPOLL_CLOEXEC);
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)timeout_s * 1000000000;
    cl_t0 = t0;
    long opened = 0;
    struct epoll_event evs[512];
    while ((opened < streams || cl_open > 0) && now_ns() < deadline) {
        int64_t t = now_ns();
        long due = (long)((double)(t - t0) / 1e9 * (double)rate) + 1;
        if (due > streams)
            due = streams;
        while (opened < due) {
            struct cl_conn *c = &conns[opened++];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0) {
                fail_connect++;
                cl_failed++;
                c->st = CL_DONE;
                if (fail_connect == 1)
                    perror("sseload: socket");
                continue;
            }
            set_nodelay(c->fd);
            cl_open++;
            c->st = CL_CONNECTING;
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
                fail_connect++;
                cl_end(c, 0);
                continue;
            }
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(cl_epfd, EPOLL_CTL_ADD, c->fd, &ev);
        }
        int wait_ms = opened < streams ? 1 : 100;
        int k = epoll_wait(cl_epfd, evs, 512, wait_ms);
        for (int i = 0; i < k; i++) {
            struct cl_conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (c->st == CL_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                    fail_connect++;
                    cl_end(c, 0);
                    continue;
                }
                cl_connected++;
                cl_write(c);
            } else {
                cl_read(c);
            }
        }
    }
    long timed_out = cl_open;
    printf("{\"mode\":\"%s\",\"streams\":%ld,\"connected\":%ld,\"completed\":%ld,\"failed\":%ld,"
           "\"timed_out\":%ld,\"bad_status\":%ld,\"fail_connect\":%ld,\"fail_eof\":%ld,\"fail_parse\":%ld,"
           "\"events\":%ld,\"seconds\":%.1f,",
           cl_mode, streams, cl_connected, cl_completed, cl_failed, timed_out, cl_bad_status,
           fail_connect, fail_eof, fail_parse, cl_events, (double)(now_ns() - t0) / 1e9);
    print_dist("event", &s_event);
    putchar(',');
    print_dist("head", &s_head);
    putchar(',');
    print_dist("steady", &s_steady);
    printf("}\n");
    return (cl_failed || timed_out) ? 1 : 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "upstream") == 0)
        return run_upstream(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "client") == 0)
        return run_client(argc, argv);
    fprintf(stderr, "usage: sseload upstream [--listen HOST:PORT] [--events N] [--interval-ms MS] [--close]\n"
                    "       sseload client --connect HOST:PORT [--path P] [--streams N] [--rate R]\n"
                    "                      [--body-file F] [--header 'Name: value']... [--mode stamp|mock]\n"
                    "                      [--interval-ms MS] [--timeout-s S] [--steady FROM:TO]\n");
    return 2;
}
