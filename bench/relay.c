/* relay: the cheapest proxy a process can be, as the benchmarks' floor.
 *
 *   relay --listen HOST:PORT --to HOST:PORT
 *
 * Accepts connections and copies bytes both ways between each one and a
 * fresh connection to --to: no HTTP parsing, no headers added, no pooling
 * (a client's keep-alive connection keeps its upstream connection, so the
 * upstream is reached over a warm connection as a proxy's keep-alive pool
 * would). One thread, epoll, level-triggered, TCP_NODELAY on both sides, a
 * 16 KiB buffer each way; reading a side stops while its buffer waits for
 * the other side to drain.
 *
 * What it measures: the cost of one more process between a client and its
 * upstream on this machine (system calls, loopback delivery, the cross-core
 * wake-ups). A real proxy cannot add less latency than this; the difference
 * between keyless (or nginx) and the relay is what the proxy's own work
 * adds. Prints "relay listening on HOST:PORT" once ready. Linux only. No
 * third-party code. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

#define RELAY_BUF 16384

/* One direction of a pair: bytes read from `from`, not yet written to `to`. */
struct side {
    char buf[RELAY_BUF];
    size_t off, len;
};

/* A client connection and its upstream connection. Each fd's epoll data
 * points at its end, so one event finds the pair and the direction. */
struct pair;
struct end {
    struct pair *p;
    int fd;
    int idx; /* 0 client, 1 upstream */
};
struct pair {
    struct end e[2];
    struct side s[2]; /* s[i]: read from e[i], to be written to e[1 - i] */
    int connecting;   /* upstream connect() still in progress */
    int closed;       /* both fds closed; freed once the event batch is done */
    struct pair *next_closed;
};

struct relay {
    int ep;
    struct sockaddr_in to;
    /* Pairs closed while an epoll batch is served: the batch may still hold
     * an event for the other end, so they are freed after it. */
    struct pair *closed;
};

/* What end i should wait for: input while its own buffer is empty (and the
 * upstream is connected), output while the other end's buffer has bytes
 * for it or its connect is in progress. */
static void watch(int ep, struct pair *p, int i, int op)
{
    struct epoll_event ev = {0};
    if (i == 1 && p->connecting) {
        ev.events = EPOLLOUT;
    } else {
        if (p->s[i].len == 0 && !p->connecting)
            ev.events |= EPOLLIN;
        if (p->s[1 - i].len)
            ev.events |= EPOLLOUT;
    }
    ev.data.ptr = &p->e[i];
    epoll_ctl(ep, op, p->e[i].fd, &ev);
}

static void close_pair(struct relay *r, struct pair *p)
{
    close(p->e[0].fd);
    close(p->e[1].fd);
    p->closed = 1;
    p->next_closed = r->closed;
    r->closed = p;
}

/* Write what s holds to fd; 0 when all of it went, 1 when some is left,
 * -1 on error. */
static int flush_side(struct side *s, int fd)
{
    while (s->len) {
        ssize_t n = write(fd, s->buf + s->off, s->len);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        s->off += (size_t)n;
        s->len -= (size_t)n;
    }
    s->off = 0;
    return 0;
}

static void accept_one(struct relay *r, int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return;
    int u = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct pair *p = calloc(1, sizeof(*p));
    if (u < 0 || !p) {
        close(c);
        if (u >= 0)
            close(u);
        free(p);
        return;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    p->e[0] = (struct end){p, c, 0};
    p->e[1] = (struct end){p, u, 1};
    if (connect(u, (const struct sockaddr *)&r->to, sizeof(r->to)) < 0 && errno != EINPROGRESS) {
        close(c);
        close(u);
        free(p);
        return;
    }
    p->connecting = 1;
    watch(r->ep, p, 0, EPOLL_CTL_ADD);
    watch(r->ep, p, 1, EPOLL_CTL_ADD);
}

/* An event on end i: finish a connect, read into i's buffer and pass it on
 * at once, write what the other end left for i. */
static void serve(struct relay *r, struct end *e, uint32_t events)
{
    int ep = r->ep;
    struct pair *p = e->p;
    int i = e->idx, o = 1 - i;
    if (p->closed)
        return;
    if (i == 1 && p->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            close_pair(r, p);
            return;
        }
        p->connecting = 0;
        watch(ep, p, 0, EPOLL_CTL_MOD);
        watch(ep, p, 1, EPOLL_CTL_MOD);
        return;
    }
    if (events & EPOLLOUT) {
        int left = flush_side(&p->s[o], e->fd);
        if (left < 0) {
            close_pair(r, p);
            return;
        }
        if (left == 0) { /* drained: read the other end again, stop waiting for output */
            watch(ep, p, o, EPOLL_CTL_MOD);
            watch(ep, p, i, EPOLL_CTL_MOD);
        }
    }
    /* (not while i's bytes still wait for o: an event of the batch may
     * predate the watch that stopped reading i) */
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && p->s[i].len == 0) {
        struct side *s = &p->s[i];
        ssize_t n = read(e->fd, s->buf, sizeof(s->buf));
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            close_pair(r, p);
            return;
        }
        if (n < 0)
            return;
        s->off = 0;
        s->len = (size_t)n;
        int left = flush_side(s, p->e[o].fd);
        if (left < 0) {
            close_pair(r, p);
            return;
        }
        if (left == 1) { /* the other end is full: stop reading i, wait for o */
            watch(ep, p, i, EPOLL_CTL_MOD);
            watch(ep, p, o, EPOLL_CTL_MOD);
        }
    }
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:0", *to_s = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            listen_at = argv[i + 1];
        else if (!strcmp(argv[i], "--to"))
            to_s = argv[i + 1];
    }
    struct relay r = {0};
    struct sockaddr_in la;
    if (!to_s || parse_hostport(listen_at, &la) < 0 || parse_hostport(to_s, &r.to) < 0) {
        fprintf(stderr, "usage: relay --listen HOST:PORT --to HOST:PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(lfd, 4096) < 0)
        die("relay: listen");
    socklen_t sl = sizeof(la);
    getsockname(lfd, (struct sockaddr *)&la, &sl);
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (r.ep < 0 || epoll_ctl(r.ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("relay: epoll");
    char ab[INET_ADDRSTRLEN];
    printf("relay listening on %s:%u\n", inet_ntop(AF_INET, &la.sin_addr, ab, sizeof(ab)), ntohs(la.sin_port));
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(r.ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("relay: epoll_wait");
        for (int k = 0; k < n; k++) {
            if (!evs[k].data.ptr)
                accept_one(&r, lfd);
            else
                serve(&r, evs[k].data.ptr, evs[k].events);
        }
        while (r.closed) {
            struct pair *p = r.closed;
            r.closed = p->next_closed;
            free(p);
        }
    }
}
