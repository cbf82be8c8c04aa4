#include "listen/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/evp.h>

#include "core/exchange.h"
#include "core/log.h"
#include "core/lossymap.h"
#include "core/mailbox.h"
#include "listen/conn.h"
#include "listen/reload.h"
#include "guard/scan.h"
#include "admit/admit.h"
#include "authorize/chained.h"
#include "identity/identity.h"
#include "identity/oidc.h"
#include "record/metrics.h"
#include "record/record.h"
#include "route/health.h"
#include "upstream/awscreds.h"
#include "upstream/gcp.h"
#include "upstream/upstream.h"

/* Split "host:port" ("[v6]:port" too) and bind a listening socket with
 * SO_REUSEPORT so every worker can own one and the kernel spreads accepts. */
static int open_listener(const char *address, int port_override, char *bound, size_t boundlen,
                         const char **err)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    size_t hl = (size_t)(colon - address);
    if (hl >= sizeof(host)) {
        *err = "address too long";
        return -1;
    }
    memcpy(host, address, hl);
    host[hl] = '\0';
    char *h = host;
    if (h[0] == '[' && hl > 1 && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    char port[16];
    snprintf(port, sizeof(port), "%d", port_override >= 0 ? port_override : atoi(colon + 1));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    if (getaddrinfo(*h ? h : NULL, port, &hints, &res) != 0) {
        *err = "cannot resolve listen address";
        return -1;
    }
    int one = 1;
    if (port_override < 0 && atoi(colon + 1) != 0) {
        /* With SO_REUSEPORT a second gateway (or anything else of this
         * user) binds the address too, and the kernel splits connections
         * between them. That is how a restart overlaps the old process, so
         * it is allowed; anything else is a mistake worth a loud warning.
         * A plain bind first finds out whether the address is taken. */
        int probe = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(probe, res->ai_addr, res->ai_addrlen) < 0 && errno == EADDRINUSE)
                kl_warn("another process already listens on %s: the kernel will split connections between it and "
                        "this gateway (fine while one replaces the other; otherwise stop one)", address);
            close(probe);
        }
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        *err = strerror(errno);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        *err = strerror(errno);
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char ip[INET6_ADDRSTRLEN] = "";
    int p = 0;
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
        p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(bound, boundlen, "%s:%d", ip, p);
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
        p = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(bound, boundlen, "[%s]:%d", ip, p);
    }
    return fd;
}

/* What a listener hands each accepted connection. */
struct listener_arg {
    kl_worker *w;
    bool tls;                   /* the mTLS listener (its context comes from the worker's snapshot) */
};

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)l;
    struct listener_arg *la = arg;
    kl_conn_accept(la->w, fd, sa, (socklen_t)salen, la->tls);
}

static struct listener_arg *largs_of(kl_worker *w)
{
    return w->listen_args;
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kl_worker *w = arg;
    for (size_t i = 0; !w->draining && !w->full && i < w->nlisteners; i++)
        if (w->listeners[i])
            evconnlistener_enable(w->listeners[i]);
}

void kl_server_accepting(kl_worker *w, bool on)
{
    w->full = !on;
    if (!on) {
        for (size_t i = 0; i < w->nlisteners; i++)
            if (w->listeners[i])
                evconnlistener_disable(w->listeners[i]);
    } else if (!w->accept_timer || !evtimer_pending(w->accept_timer, NULL)) {
        on_accept_resume(-1, 0, w); /* else the accept-failure pause ends first */
    }
}

/* EMFILE and friends: keep serving the connections we have. The
 * connection waiting to be accepted is still there, so a listener left on
 * would call this again at once, for ever (a core spinning, a log line
 * each time): the listeners pause for 100 ms at a time instead, and the
 * failure is logged at most every 10 s. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    kl_worker *w = ((struct listener_arg *)arg)->w;
    int err = errno;
    w->accept_failures++;
    int64_t now = kl_wall_ms();
    if (now - w->accept_warned_ms >= 10000) {
        kl_warn("worker %d: accept failed: %s (%llu time%s since the last warning); not accepting for 100 ms at a "
                "time until it can", w->index, strerror(err), (unsigned long long)w->accept_failures,
                w->accept_failures == 1 ? "" : "s");
        w->accept_warned_ms = now;
        w->accept_failures = 0;
    }
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i])
            evconnlistener_disable(w->listeners[i]);
    if (!w->accept_timer)
        w->accept_timer = evtimer_new(w->base, on_accept_resume, w);
    struct timeval tv = {0, 100000};
    if (w->accept_timer)
        evtimer_add(w->accept_timer, &tv);
}

static void stop_listening(kl_worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i]) {
            evconnlistener_free(w->listeners[i]);
            w->listeners[i] = NULL;
        }
    }
}

/* A stopping worker is done when no exchange runs, every last response
 * has been flushed (closing connections free themselves once their output
 * is written) and every hook told about an exchange has answered. */
static bool worker_idle(const kl_worker *w)
{
    return w->inflight == 0 && w->nconns == 0 && w->hooks_told == 0;
}

void kl_server_maybe_stopped(kl_worker *w)
{
    if (w->draining && worker_idle(w))
        event_base_loopexit(w->base, NULL);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kl_worker *w = arg;
    kl_warn("worker %d: %llu exchanges still running after the shutdown grace period; stopping them",
            w->index, (unsigned long long)w->inflight);
    kl_upstream_cancel_all(w);
    event_base_loopexit(w->base, NULL);
}

/* Posted by the main thread when server state changed (stop requested). */
static void on_wake(void *arg)
{
    kl_worker *w = arg;
    if (atomic_load(&w->server->stopping) && !w->draining) {
        w->draining = true;
        stop_listening(w);
        kl_conn_close_idle(w);
        if (worker_idle(w)) {
            event_base_loopexit(w->base, NULL);
            return;
        }
        uint32_t ms = w->cfg->listen.timeouts.shutdown;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
        evtimer_add(w->drain_timer, &tv);
    }
}

static void on_log_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kl_worker *w = arg;
    kl_log_flush(&w->log);
}

/* Access log lines wait in the worker's buffer for at most this long (or
 * until it is full, or the worker stops), so a busy worker writes one block
 * of lines instead of one write(2) per request. */
#define KL_ACCESS_LOG_DELAY_MS 100

void kl_server_access_log(kl_worker *w, const struct kl_log_line *l)
{
    if (kl_log_buffered(&w->log, KL_LOG_INFO, l) && w->log_timer) {
        struct timeval tv = {KL_ACCESS_LOG_DELAY_MS / 1000, KL_ACCESS_LOG_DELAY_MS % 1000 * 1000};
        evtimer_add(w->log_timer, &tv);
    }
}

static void *worker_main(void *arg)
{
    kl_worker *w = arg;
    event_base_dispatch(w->base);
    kl_log_flush(&w->log);
    return NULL;
}

struct signal_ctx {
    kl_server *srv;
    struct event_base *base;
};

/* Off the workers: re-read OIDC key sets that changed on disk. */
static void on_housekeeping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kl_server *srv = arg;
    kl_config *cfg = kl_config_holder_get(&srv->config);
    if (cfg->identity)
        kl_oidc_refresh(cfg->identity->oidc);
    kl_config_unref(cfg);
    /* Give memory freed after a burst (ten thousand streams) back to the
     * system; glibc keeps it in its arenas otherwise. */
    malloc_trim(0);
}

static void on_prefill(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* libevent keeps one small entry per descriptor number it has seen, for the
 * life of the event base. Met first during a burst (ten thousand streams),
 * they end up scattered among the burst's buffers, and each keeps a page of
 * freed memory from going back to the system. Creating them all when the
 * worker starts (from the main thread, so in its malloc arena) keeps them
 * out of the way: an add and a delete per number, which the changelist
 * cancels without a system call. */
static void prefill_fd_map(struct event_base *base, int nfd)
{
    struct event *ev = event_new(base, -1, EV_READ, on_prefill, NULL);
    if (!ev)
        return;
    for (int fd = 0; fd < nfd; fd++) {
        event_assign(ev, base, fd, EV_READ, on_prefill, NULL);
        if (event_add(ev, NULL) == 0)
            event_del(ev);
    }
    event_free(ev);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct signal_ctx *sc = arg;
    if (sig == SIGHUP) {
        kl_server_reload(sc->srv);
        return;
    }
    if (atomic_exchange(&sc->srv->stopping, true))
        return;
    kl_info("received %s: no longer accepting; waiting for in-flight requests",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    for (int i = 0; i < sc->srv->nworkers; i++)
        kl_mailbox_post(&sc->srv->workers[i], on_wake, &sc->srv->workers[i]);
    event_base_loopexit(sc->base, NULL);
}

/* The descriptor limit, raised to its hard limit: returns what it is. */
static size_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)1 << 30 ? (size_t)1 << 30 : (size_t)rl.rlim_cur;
}

bool kl_server_watch_accounts(kl_server *srv, const kl_config *cfg)
{
    const struct kl_gcp_cred **creds = calloc(cfg->nproviders + 1, sizeof(*creds));
    if (!creds)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < cfg->nproviders; i++)
        if (cfg->providers[i].gcp_cred)
            creds[n++] = cfg->providers[i].gcp_cred;
    kl_gcp_tokens_keep(srv->gcp, creds, n);
    free(creds);
    /* AWS credentials from the environment (a provider's aws without an
     * access key): one keeper for all, started when first needed, its
     * first credentials waited for as Google's first tokens are */
    bool started = false;
    for (size_t i = 0; i < cfg->nproviders && !srv->aws; i++) {
        const struct kl_sigv4_cred *k = cfg->providers[i].aws;
        if (k && !k->access_key_id && !cfg->providers[i].key_problem) {
            atomic_store_explicit(&srv->aws, kl_aws_keeper_start(k->region), memory_order_release);
            started = true;
        }
    }
    return n > 0 || started;
}

void kl_server_wait_accounts(kl_server *srv, int ms)
{
    int64_t t0 = kl_now_ns();
    kl_gcp_tokens_wait(srv->gcp, ms);
    int64_t spent_ms = (kl_now_ns() - t0) / 1000000;
    if (srv->aws && spent_ms < ms)
        kl_aws_keeper_wait(srv->aws, ms - (int)spent_ms);
}

/* The memory the gateway may use: the machine's, or less under a cgroup
 * v2 memory limit (a container's, systemd's MemoryMax=) on its cgroup or
 * any above it, which would kill it before the machine ran out. */
static size_t memory_size(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t mem = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)4 << 30;
    char line[512], dir[600];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return mem;
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strncmp(line, "0::", 3) == 0; /* the unified hierarchy's line */
    fclose(f);
    if (!found)
        return mem;
    line[strcspn(line, "\n")] = '\0';
    snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", strcmp(line + 3, "/") == 0 ? "" : line + 3);
    for (;;) {
        char path[640];
        snprintf(path, sizeof(path), "%s/memory.max", dir);
        unsigned long long limit;
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%llu", &limit) == 1 && limit > 0 && limit < mem) /* "max" reads as no number */
                mem = (size_t)limit;
            fclose(f);
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash - dir < (long)strlen("/sys/fs/cgroup"))
            break;
        *slash = '\0';
    }
    return mem;
}

int kl_server_run(kl_config *cfg)
{
    kl_server srv;
    memset(&srv, 0, sizeof(srv));
    kl_config_holder_init(&srv.config, cfg);
    atomic_store(&srv.config_loaded_ms, kl_wall_ms());
    evthread_use_pthreads();
    signal(SIGPIPE, SIG_IGN);
    /* a file size limit (ulimit -f, systemd's LimitFSIZE=) reached by the
     * store is a write that fails with EFBIG, retried as a full disk is,
     * not the end of the process */
    signal(SIGXFSZ, SIG_IGN);
    size_t nofile = raise_fd_limit();
    /* HAProxy's rule: a client's descriptor and its provider's, and a
     * reserve for listeners, the store, logs and tailscaled's socket */
    srv.fd_conns = nofile > 512 ? (nofile - 256) / 2 : nofile / 4 + 1;
    srv.body_memory = memory_size() / 2;
    if (kl_upstream_global_init() < 0) {
        kl_error("cannot initialise libcurl");
        return 1;
    }

    /* Signals are handled before the "listening" line is printed, so a
     * supervisor (or a test) that signals right after it is heard. */
    struct event_base *mb = event_base_new();
    struct signal_ctx sc = {&srv, mb};
    struct event *sigs[3];
    int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sigs[i] = evsignal_new(mb, signums[i], on_signal, &sc);
        evsignal_add(sigs[i], NULL);
    }
    kl_identity_server_init(&srv);
    kl_admit_server_init(&srv);
    srv.answer_owners = kl_lossy_map_new(KL_ANSWER_OWNERS_SLOTS);
    kl_health_server_init(&srv);
    char serr[512];
    if (kl_record_server_start(&srv, cfg, serr, sizeof(serr)) < 0) {
        kl_error("record store: %s", serr);
        for (int i = 0; i < 3; i++)
            event_free(sigs[i]);
        event_base_free(mb);
        kl_admit_server_free(&srv);
        kl_lossy_map_free(srv.answer_owners);
        kl_health_server_free(&srv);
        kl_identity_server_free(&srv);
        kl_config_holder_destroy(&srv.config);
        kl_upstream_global_cleanup();
        return 1;
    }
    /* Vertex AI's credentials and AWS's from the environment: their first
     * tokens are asked for now, so the first requests do not find none (a
     * dead token endpoint delays the start by at most 5 s, and its
     * requests answer 503 saying why) */
    srv.gcp = kl_gcp_tokens_start();
    if (kl_server_watch_accounts(&srv, cfg))
        kl_server_wait_accounts(&srv, 5000);
    int nw = cfg->listen.workers;
    if (nw <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nw = n > 0 ? (int)n : 1;
    }
    srv.nworkers = nw;
    srv.workers = calloc((size_t)nw, sizeof(kl_worker));
    /* Plain listeners, then the mTLS ones. */
    const struct kl_identity_cfg *ic = cfg->identity;
    size_t na = cfg->listen.naddresses + ic->nmtls;
    struct { const char *address; bool tls; } *specs = calloc(na + 1, sizeof(*specs));
    for (size_t a = 0; a < cfg->listen.naddresses; a++)
        specs[a].address = cfg->listen.addresses[a];
    for (size_t a = 0; a < ic->nmtls; a++) {
        specs[cfg->listen.naddresses + a].address = ic->mtls_addresses[a];
        specs[cfg->listen.naddresses + a].tls = true;
    }
    int status = 1;

    /* Bind every socket before any thread starts, so a port in use is a
     * start-up error and port 0 resolves to one port for all workers. */
    for (int i = 0; i < nw; i++) {
        kl_worker *w = &srv.workers[i];
        w->index = i;
        w->server = &srv;
        w->cfg = kl_config_ref(cfg);
        w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 20) ^ (uint64_t)i ^
                 (uint64_t)kl_wall_ms();
        w->nlisteners = na;
        w->listen_fds = calloc(na, sizeof(int));
        w->listeners = calloc(na, sizeof(*w->listeners));
        struct listener_arg *largs = calloc(na, sizeof(*largs));
        w->listen_args = largs;
        for (size_t a = 0; a < na; a++)
            largs[a] = (struct listener_arg){w, specs[a].tls};
        for (size_t a = 0; a < na; a++)
            w->listen_fds[a] = -1;
        for (size_t a = 0; a < na; a++) {
            int port = -1;
            if (i > 0) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                getsockname(srv.workers[0].listen_fds[a], (struct sockaddr *)&ss, &sl);
                port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                               : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            }
            char bound[80];
            const char *err = NULL;
            int fd = open_listener(specs[a].address, port, bound, sizeof(bound), &err);
            if (fd < 0) {
                kl_error("cannot listen on %s: %s", specs[a].address, err);
                goto out;
            }
            w->listen_fds[a] = fd;
            if (i == 0)
                printf("keyless listening on %s://%s\n", specs[a].tls ? "https" : "http", bound);
        }
    }
    fflush(stdout);

    for (int i = 0; i < nw; i++) {
        kl_worker *w = &srv.workers[i];
        /* changelist: curl re-arms its sockets per transfer; a del+add within
         * one loop pass then costs no epoll_ctl. No lock: only this worker's
         * thread touches its base (others post to its mailbox). */
        struct event_config *ec = event_config_new();
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
        if (!w->base || kl_upstream_pool_init(w) < 0 || kl_mailbox_init(w) < 0) {
            kl_error("worker %d: cannot create event loop", i);
            goto out;
        }
        for (size_t a = 0; a < na; a++) {
            w->listeners[a] = evconnlistener_new(w->base, on_accept, &largs_of(w)[a],
                                                 LEV_OPT_CLOSE_ON_FREE, -1, w->listen_fds[a]);
            if (!w->listeners[a]) {
                kl_error("worker %d: cannot watch listener", i);
                goto out;
            }
            w->listen_fds[a] = -1; /* owned by the listener now */
            evconnlistener_set_error_cb(w->listeners[a], on_accept_error);
        }
        /* ~55 bytes a number: 65,536 numbers in all (3.6 MB), shared by the
         * workers, at least 8,192 each; beyond that entries come as before */
        int fill = 65536 / nw > 8192 ? 65536 / nw : 8192;
        prefill_fd_map(w->base, nofile < (size_t)fill ? (int)nofile : fill);
        w->log_timer = evtimer_new(w->base, on_log_timer, w);
        w->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        w->metrics = kl_metrics_new();
    }
    kl_info("keyless started: %d worker%s, %zu provider%s", nw, nw == 1 ? "" : "s",
            cfg->nproviders, cfg->nproviders == 1 ? "" : "s");

    for (int i = 0; i < nw; i++) {
        if (pthread_create(&srv.workers[i].thread, NULL, worker_main, &srv.workers[i]) != 0)
            abort(); /* out of threads at start-up: like an allocation failure */
        char name[16];
        snprintf(name, sizeof(name), "kl-worker-%u", (unsigned)i % 10000u); /* 15 chars at most */
        pthread_setname_np(srv.workers[i].thread, name);
    }

    struct event *house = event_new(mb, -1, EV_PERSIST, on_housekeeping, &srv);
    struct timeval every = {2, 0};
    event_add(house, &every);
    event_base_dispatch(mb);
    for (int i = 0; i < nw; i++)
        pthread_join(srv.workers[i].thread, NULL);
    kl_record_server_stop_queries(&srv);
    event_free(house);
    kl_info("keyless stopped");
    status = 0;

out:
    for (int i = 0; i < 3; i++)
        event_free(sigs[i]);
    /* freeing them put back the default actions: a reload asked for while
     * the records are still being written is no reason to die (SIGHUP's
     * default) and lose them */
    signal(SIGHUP, SIG_IGN);
    event_base_free(mb);
    for (int i = 0; i < nw; i++) {
        kl_worker *w = &srv.workers[i];
        if (w->base) {
            stop_listening(w);
            kl_conn_close_all(w);
            kl_identity_worker_free(w);
            kl_self_addrs_free(w);
            kl_upstream_pool_free(w);
            kl_mailbox_free(w);
            if (w->drain_timer)
                event_free(w->drain_timer);
            if (w->accept_timer)
                event_free(w->accept_timer);
            if (w->log_timer)
                event_free(w->log_timer);
            w->log_timer = NULL;
            kl_record_worker_free(w);
            EVP_MD_free(w->sha256);
            w->sha256 = NULL;
            kl_scan_scratch_free(w->scan);
            w->scan = NULL;
            kl_metrics_free(w->metrics);
            w->metrics = NULL;
            event_base_free(w->base);
        }
        kl_log_flush(&w->log); /* lines of exchanges closed just above */
        for (size_t a = 0; a < w->nlisteners; a++)
            if (w->listen_fds && w->listen_fds[a] >= 0)
                close(w->listen_fds[a]);
        free(w->listen_fds);
        free(w->listeners);
        free(w->listen_args);
        if (w->cfg)
            kl_config_unref(w->cfg);
    }
    free(srv.workers);
    free(specs);
    kl_record_server_stop(&srv);
    kl_gcp_tokens_stop(srv.gcp);
    kl_aws_keeper_stop(srv.aws);
    kl_admit_server_free(&srv);
    kl_lossy_map_free(srv.answer_owners);
    kl_health_server_free(&srv);
    kl_identity_server_free(&srv);
    kl_config_holder_destroy(&srv.config);
    kl_upstream_global_cleanup();
    return status;
}
