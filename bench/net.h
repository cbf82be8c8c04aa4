/* What bench/sseload.c and bench/relay.c share: both are single-file
 * programs lib.sh compiles with plain cc, so these are static functions in a
 * header rather than a library. IPv4 only: the benchmarks run on loopback. */
#ifndef KL_BENCH_NET_H
#define KL_BENCH_NET_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Thousands of streams need thousands of descriptors: up to the hard limit. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* "127.0.0.1:8080" into sa: 0, or -1 when it is not an IPv4 HOST:PORT. */
static int parse_hostport(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

#endif
