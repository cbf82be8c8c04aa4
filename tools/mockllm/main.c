/* mockllm: command line, listening sockets, worker threads, shutdown. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/thread.h>

#include "mockllm.h"

#define DEFAULT_MODELS "gpt-4o,gpt-4o-mini,claude-sonnet-4-5,claude-haiku-4-5," \
                       "gemini-2.5-flash,gemini-2.5-pro,text-embedding-3-small"
#define MAX_THREADS 256
#define IDLE_TIMEOUT_S 3600

typedef struct options {
    const char *listen;
    int threads;
    int no_log;
    const char *models;
} options;

static void usage(FILE *f)
{
    fputs("usage: mockllm [--listen HOST:PORT] [--threads N] [--no-log] [--models a,b,c]\n", f);
}

/* Returns 0, or -1 after writing why into err. */
static int parse_args(int argc, char **argv, options *o, char *err, size_t cap)
{
    int i;

    o->listen = "127.0.0.1:0";
    o->threads = 1;
    o->no_log = 0;
    o->models = DEFAULT_MODELS;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);

        if (strncmp(a, "--no-log", klen) == 0 && klen == 8) {
            o->no_log = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (!(klen == 8 && strncmp(a, "--listen", 8) == 0) &&
            !(klen == 9 && strncmp(a, "--threads", 9) == 0) &&
            !(klen == 8 && strncmp(a, "--models", 8) == 0)) {
            snprintf(err, cap, "unknown option %.*s", (int)klen, a);
            return -1;
        }
        if (eq)
            v = eq + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        if (!v) {
            snprintf(err, cap, "missing value for %s", a);
            return -1;
        }
        if (klen == 8 && strncmp(a, "--listen", 8) == 0) {
            o->listen = v;
        } else if (klen == 9 && strncmp(a, "--threads", 9) == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > MAX_THREADS) {
                snprintf(err, cap, "--threads must be 1..%d", MAX_THREADS);
                return -1;
            }
            o->threads = (int)n;
        } else {
            o->models = v;
        }
    }
    return 0;
}

static int split_models(const char *list, ml_shared *sh)
{
    char *copy = strdup(list), *p, *save = NULL;
    int cap = 8;

    if (!copy)
        return -1;
    sh->models = malloc(sizeof(char *) * (size_t)cap);
    sh->nmodels = 0;
    for (p = strtok_r(copy, ",", &save); p && sh->models; p = strtok_r(NULL, ",", &save)) {
        if (sh->nmodels == cap) {
            char **grown = realloc(sh->models, sizeof(char *) * (size_t)(cap *= 2));
            if (!grown)
                break;
            sh->models = grown;
        }
        sh->models[sh->nmodels++] = strdup(p);
    }
    free(copy);
    return sh->models ? 0 : -1;
}

/* "127.0.0.1:8080", "[::1]:0", "localhost:9000" -> host and port strings. */
static int split_hostport(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon;
    size_t hl;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        hl = (size_t)(close - s - 1);
        colon = close + 1;
        s++;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl >= hcap || strlen(colon + 1) >= pcap || !colon[1])
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

/* Opens a listening socket with SO_REUSEPORT so every worker can bind the
 * same port. TCP_NODELAY on the listener is inherited by accepted sockets
 * on Linux; without it small SSE events wait for Nagle. */
static int open_listener(const char *host, const char *port, char *err, size_t cap)
{
    struct addrinfo hints, *res = NULL;
    int fd, one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, cap, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
    if (fd < 0) {
        snprintf(err, cap, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        snprintf(err, cap, "cannot listen on %s:%s: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The address actually bound, as "HOST:PORT" ("[v6]:PORT" for IPv6). */
static int bound_address(int fd, char *out, size_t cap, char *port, size_t pcap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST];

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, (socklen_t)pcap,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    snprintf(out, cap, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int worker_init(ml_worker *w, ml_shared *sh, int fd, int idx)
{
    memset(w, 0, sizeof(*w));
    w->sh = sh;
    w->fd = fd;
    w->rng = ml_mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^ (uint64_t)idx) | 1;
    w->base = event_base_new();
    w->scratch = evbuffer_new();
    if (!w->base || !w->scratch)
        return -1;
    w->http = evhttp_new(w->base);
    if (!w->http)
        return -1;
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    /* Long streams and stalls must not be cut by evhttp's 50 s default. */
    evhttp_set_timeout(w->http, IDLE_TIMEOUT_S);
    evhttp_set_gencb(w->http, ml_on_request, w);
    if (!evhttp_accept_socket_with_handle(w->http, fd))
        return -1;
    w->fd = -1;     /* owned by evhttp now */
    return 0;
}

static void worker_free(ml_worker *w)
{
    /* evhttp_free closes every connection; replies still in flight are
     * released by their close callbacks. */
    if (w->http)
        evhttp_free(w->http);
    if (w->fd >= 0)
        close(w->fd);
    if (w->scratch)
        evbuffer_free(w->scratch);
    if (w->base)
        event_base_free(w->base);
}

static void *worker_main(void *arg)
{
    ml_worker *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

int main(int argc, char **argv)
{
    char err[512], host[256], port[32], addr[320];
    ml_worker *workers;
    ml_shared sh;
    options o;
    sigset_t sigs;
    int i, sig, started = 0, running = 0, rc = 0;

    if (parse_args(argc, argv, &o, err, sizeof(err)) < 0) {
        fprintf(stderr, "mockllm: %s\n", err);
        usage(stderr);
        return 2;
    }
    if (split_hostport(o.listen, host, sizeof(host), port, sizeof(port)) < 0) {
        fprintf(stderr, "mockllm: bad --listen %s (want HOST:PORT)\n", o.listen);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (evthread_use_pthreads() < 0) {
        fprintf(stderr, "mockllm: libevent threading unavailable\n");
        return 1;
    }

    memset(&sh, 0, sizeof(sh));
    if (split_models(o.models, &sh) < 0 || (!o.no_log && !(sh.log = ml_log_new()))) {
        fprintf(stderr, "mockllm: out of memory\n");
        return 1;
    }
    workers = calloc((size_t)o.threads, sizeof(*workers));
    if (!workers) {
        fprintf(stderr, "mockllm: out of memory\n");
        return 1;
    }
    for (i = 0; i < o.threads; i++) {
        /* bind the first, learn its port, bind the rest to that port */
        int fd = open_listener(host, port, err, sizeof(err));
        if (fd < 0) {
            fprintf(stderr, "mockllm: %s\n", err);
            rc = 1;
            break;
        }
        if (i == 0 && bound_address(fd, addr, sizeof(addr), port, sizeof(port)) < 0) {
            fprintf(stderr, "mockllm: getsockname: %s\n", strerror(errno));
            close(fd);
            rc = 1;
            break;
        }
        if (worker_init(&workers[i], &sh, fd, i) < 0) {
            fprintf(stderr, "mockllm: cannot start worker %d\n", i);
            worker_free(&workers[i]);
            rc = 1;
            break;
        }
        started = i + 1;
    }

    if (rc == 0) {
        /* Signals go to this thread only (sigwait); workers never see them. */
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);
        for (i = 0; i < started; i++) {
            if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
                fprintf(stderr, "mockllm: cannot create thread\n");
                rc = 1;
                break;
            }
            running = i + 1;
        }
        if (rc == 0) {
            printf("mockllm listening on %s\n", addr);
            fflush(stdout);
            sigwait(&sigs, &sig);
        }
        for (i = 0; i < running; i++)
            event_base_loopbreak(workers[i].base);
        for (i = 0; i < running; i++)
            pthread_join(workers[i].thread, NULL);
    }
    for (i = 0; i < started; i++)
        worker_free(&workers[i]);
    free(workers);
    for (i = 0; i < sh.nmodels; i++)
        free(sh.models[i]);
    free(sh.models);
    ml_log_free(sh.log);
    libevent_global_shutdown();
    return rc;
}
