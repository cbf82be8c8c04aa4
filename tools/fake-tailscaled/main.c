/* fake-tailscaled: a test double for tailscaled's LocalAPI WhoIs endpoint,
 * served on a unix socket with tailscaled's exact answers and Go net/http's
 * exact framing. See README.md next to this file. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "server.h"

static void usage(FILE *f)
{
    fputs("usage: fake-tailscaled --socket PATH --table FILE [--delay-ms N]\n"
          "                       [--chunked auto|always|never] [--chunk-size N]\n"
          "                       [--no-unmap]\n"
          "\n"
          "  --socket PATH     unix socket to serve on (mode 0666; a stale one is removed)\n"
          "  --table FILE      JSON object {\"IP\": \"file.json\" | \"!directive\"}\n"
          "  --delay-ms N      wait N ms before every whois answer (default 0)\n"
          "  --chunked MODE    auto: Content-Length up to 2048 bytes, chunked above\n"
          "                    (Go net/http); always; never (default auto)\n"
          "  --chunk-size N    split chunked bodies into N-byte chunks (default 0:\n"
          "                    one chunk per body, as Go writes a single Write)\n"
          "  --no-unmap        do not unmap ::ffff:a.b.c.d before the lookup\n"
          "                    (tailscaled before 1.102)\n",
          f);
}

/* Parses a non-negative decimal; -1 if s is not one. */
static long parse_count(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < 0)
        return -1;
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"table", required_argument, NULL, 't'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"chunked", required_argument, NULL, 'c'},
        {"chunk-size", required_argument, NULL, 'k'},
        {"no-unmap", no_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct fts_config cfg = {0};
    struct fts_server srv;
    char err[1024];
    long v;
    int opt, rc;

    cfg.chunk_mode = FTS_CHUNK_AUTO;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            cfg.socket_path = optarg;
            break;
        case 't':
            cfg.table_path = optarg;
            break;
        case 'd':
            if ((v = parse_count(optarg)) < 0) {
                fprintf(stderr, "fake-tailscaled: --delay-ms wants a number of ms, got \"%s\"\n",
                        optarg);
                return 2;
            }
            cfg.delay_ms = v;
            break;
        case 'c':
            if (strcmp(optarg, "auto") == 0) {
                cfg.chunk_mode = FTS_CHUNK_AUTO;
            } else if (strcmp(optarg, "always") == 0) {
                cfg.chunk_mode = FTS_CHUNK_ALWAYS;
            } else if (strcmp(optarg, "never") == 0) {
                cfg.chunk_mode = FTS_CHUNK_NEVER;
            } else {
                fprintf(stderr, "fake-tailscaled: --chunked wants auto, always or never\n");
                return 2;
            }
            break;
        case 'k':
            if ((v = parse_count(optarg)) < 0) {
                fprintf(stderr, "fake-tailscaled: --chunk-size wants a byte count\n");
                return 2;
            }
            cfg.chunk_size = (size_t)v;
            break;
        case 'u':
            cfg.no_unmap = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || cfg.socket_path == NULL || cfg.table_path == NULL) {
        usage(stderr);
        return 2;
    }

    if (fts_server_init(&srv, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fake-tailscaled: %s\n", err);
        fts_server_free(&srv);
        libevent_global_shutdown();
        return 1;
    }
    printf("fake-tailscaled listening on %s\n", cfg.socket_path);
    fflush(stdout);

    rc = fts_server_run(&srv);
    fts_server_free(&srv);
    libevent_global_shutdown();
    return rc == 0 ? 0 : 1;
}
