/* Address ranges: the static identity map and the loopback test. */
#include "identity/identity.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_ip(const char *s, int *family, unsigned char addr[16])
{
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, s, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, addr) == 1) {
        *family = AF_INET6;
        return 0;
    }
    return -1;
}

int kl_cidr_parse(const char *s, int *family, unsigned char addr[16], int *prefix)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(ip))
        return -1;
    memcpy(ip, s, n);
    ip[n] = '\0';
    if (parse_ip(ip, family, addr) < 0)
        return -1;
    int max = *family == AF_INET ? 32 : 128;
    if (!slash) {
        *prefix = max;
        return 0;
    }
    char *end;
    long p = strtol(slash + 1, &end, 10);
    if (*end || end == slash + 1 || p < 0 || p > max)
        return -1;
    *prefix = (int)p;
    return 0;
}

bool kl_cidr_contains(int family, const unsigned char net[16], int prefix, const char *ip)
{
    int f;
    unsigned char a[16];
    if (parse_ip(ip, &f, a) < 0 || f != family)
        return false;
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, (size_t)full) != 0)
        return false;
    if (rest) {
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        if ((a[full] & mask) != (net[full] & mask))
            return false;
    }
    return true;
}

bool kl_ip_is_loopback(const char *ip)
{
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0;
}
