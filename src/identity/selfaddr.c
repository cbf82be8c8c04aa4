/* Is a peer this host? A process on the gateway's machine that connects to
 * one of the machine's own addresses (its tailnet address above all) comes
 * from that address, not from 127.0.0.1. Taken for a remote peer, it would
 * be asked about by WhoIs, which answers for tailscaled's own node (the
 * node's owner, or its tags), or matched by a CIDR rule covering the host:
 * any local account would pass as the gateway's owner, and `tailscale
 * serve` pointed at the tailnet address would make every one of its
 * callers, Funnel's included, that owner. identity.c lets neither source
 * name such a peer (self_peer).
 *
 * The machine's addresses come from getifaddrs(3), read again when a
 * worker's copy is older than KL_SELF_TTL_MS: adding an address takes
 * CAP_NET_ADMIN, and one new for less than that is not yet known. When
 * they cannot be read (glibc asks a netlink socket, which a sandbox such as
 * systemd's RestrictAddressFamilies= may forbid), any peer may be this host:
 * every one other than loopback is taken for one, and identity.c refuses
 * it from those sources (503) instead of letting WhoIs name it. */
#include "identity/identity.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/worker.h"

#define KL_SELF_TTL_MS 2000
#define KL_SELF_MAX 64

struct kl_self_addrs {
    int64_t read_ms;            /* kl_now_ns clock; 0: never */
    int error;                  /* errno of getifaddrs when it failed at the last read, else 0 */
    size_t n;
    struct {
        int family;
        unsigned char addr[16];
    } a[KL_SELF_MAX];
};

static void read_addrs(struct kl_self_addrs *s)
{
    s->n = 0;
    s->error = 0;
    struct ifaddrs *list;
    if (getifaddrs(&list) < 0) {
        s->error = errno ? errno : EIO;
        return;
    }
    for (struct ifaddrs *i = list; i && s->n < KL_SELF_MAX; i = i->ifa_next) {
        const struct sockaddr *sa = i->ifa_addr;
        if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
            continue;
        s->a[s->n].family = sa->sa_family;
        if (sa->sa_family == AF_INET)
            memcpy(s->a[s->n].addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        else
            memcpy(s->a[s->n].addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        s->n++;
    }
    freeifaddrs(list);
}

bool kl_self_address(kl_worker *w, const struct sockaddr *sa)
{
    int family;
    unsigned char addr[16];
    if (sa->sa_family == AF_INET) {
        family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        family = IN6_IS_ADDR_V4MAPPED(in6) ? AF_INET : AF_INET6;
        memcpy(addr, family == AF_INET ? in6->s6_addr + 12 : in6->s6_addr, family == AF_INET ? 4 : 16);
    } else {
        return false;
    }
    if (!w->self_addrs) {
        w->self_addrs = calloc(1, sizeof(*w->self_addrs));
        if (!w->self_addrs)
            abort();
    }
    struct kl_self_addrs *s = w->self_addrs;
    int64_t now = kl_now_ns() / 1000000;
    if (!s->read_ms || now - s->read_ms >= KL_SELF_TTL_MS) {
        read_addrs(s);
        s->read_ms = now;
    }
    if (s->error)
        return true;
    for (size_t i = 0; i < s->n; i++)
        if (s->a[i].family == family && memcmp(s->a[i].addr, addr, family == AF_INET ? 4 : 16) == 0)
            return true;
    return false;
}

int kl_self_addrs_error(const kl_worker *w)
{
    return w->self_addrs ? w->self_addrs->error : 0;
}

void kl_self_addrs_free(kl_worker *w)
{
    free(w->self_addrs);
    w->self_addrs = NULL;
}
