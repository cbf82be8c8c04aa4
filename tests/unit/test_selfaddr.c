/* Is a peer this host (identity/selfaddr.c)? When the host's addresses
 * cannot be read, as in a sandbox that forbids netlink sockets (systemd's
 * RestrictAddressFamilies=), any peer may be this host: taken for one, so
 * WhoIs never names a local account as tailscaled's own node. This file
 * stands in for getifaddrs(3): the test decides what it answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/exchange.h"
#include "core/worker.h"
#include "identity/identity.h"

static int fail_with;               /* errno getifaddrs fails with, or 0 */
static struct sockaddr_in own = {.sin_family = AF_INET};
static struct ifaddrs one = {.ifa_name = "eth0", .ifa_addr = (struct sockaddr *)&own};

int getifaddrs(struct ifaddrs **list)
{
    if (fail_with) {
        errno = fail_with;
        return -1;
    }
    *list = &one;
    return 0;
}

void freeifaddrs(struct ifaddrs *list)
{
    (void)list;
}

static struct sockaddr_in peer(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    return sa;
}

static void own_address_is_self_others_are_not(void **state)
{
    (void)state;
    kl_worker w;
    memset(&w, 0, sizeof(w));
    fail_with = 0;
    inet_pton(AF_INET, "192.0.2.2", &own.sin_addr);
    struct sockaddr_in self = peer("192.0.2.2"), other = peer("100.101.102.103");
    assert_true(kl_self_address(&w, (struct sockaddr *)&self));
    assert_false(kl_self_address(&w, (struct sockaddr *)&other));
    assert_int_equal(kl_self_addrs_error(&w), 0);
    kl_self_addrs_free(&w);
}

static void unreadable_addresses_make_every_peer_possibly_self(void **state)
{
    (void)state;
    kl_worker w;
    memset(&w, 0, sizeof(w));
    fail_with = EAFNOSUPPORT;
    struct sockaddr_in other = peer("100.101.102.103");
    assert_true(kl_self_address(&w, (struct sockaddr *)&other));
    assert_int_equal(kl_self_addrs_error(&w), EAFNOSUPPORT);
    kl_self_addrs_free(&w);
    fail_with = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_address_is_self_others_are_not),
        cmocka_unit_test(unreadable_addresses_make_every_peer_possibly_self),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
