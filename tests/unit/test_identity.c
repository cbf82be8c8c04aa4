/* Identity pieces: WhoIs bodies (every shape), serve header decoding,
 * address ranges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "identity/identity.h"
#include "identity/spiffe.h"
#include "identity/whois.h"

static char *slurp(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/fixtures/whois/%s", name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[65536];
    *len = fread(buf, 1, sizeof(buf) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void user_node(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    size_t len;
    char *body = slurp("whois-user.json", &len);
    struct kl_identity id;
    cJSON *caps;
    const char *why;
    assert_int_equal(kl_whois_parse(body, len, &a, &id, &caps, &why), 1);
    assert_string_equal(id.login, "alice@example.com");
    assert_string_equal(id.display_name, "Alice Krūmiņa");
    assert_string_equal(id.node, "alice-mbp.tail8c2a1.ts.net");
    assert_string_equal(id.stable_node_id, "nQ7vWkz5Xn11CNTRL");
    assert_int_equal(id.ngroups, 1);
    assert_false(id.tagged);
    assert_non_null(cJSON_GetObjectItem(caps, "tailscale.com/cap/aperture"));
    cJSON_Delete(caps);
    kl_arena_free(&a);
}

static void tagged_nodes_are_their_sorted_tags(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    size_t len;
    struct kl_identity id;
    cJSON *caps;
    const char *why;
    char *body = slurp("tagged-prod-api.json", &len);
    assert_int_equal(kl_whois_parse(body, len, &a, &id, &caps, &why), 1);
    assert_string_equal(id.login, "tag:api,tag:prod");
    assert_true(id.tagged);
    assert_string_equal(id.tags[0], "tag:api");
    cJSON_Delete(caps);
    body = slurp("whois-tagged-legacy-v1.80.json", &len);
    assert_int_equal(kl_whois_parse(body, len, &a, &id, &caps, &why), 1);
    assert_string_equal(id.login, "tag:ci");
    assert_null(caps); /* CapMap: null */
    kl_arena_free(&a);
}

/* Both names of the capability (the old https:// one sorts first) are one:
 * the values of both, in order, under the plain name. */
static void capmap_names_merged(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    struct kl_identity id;
    cJSON *caps;
    const char *why;
    const char *body = "{\"Node\":{\"Name\":\"bob-laptop.example.ts.net.\"},"
                       "\"UserProfile\":{\"LoginName\":\"bob@example.com\"},"
                       "\"CapMap\":{\"https://tailscale.com/cap/aperture\":[{\"role\":\"user\"},{\"models\":\"**\"}],"
                       "\"tailscale.com/cap/aperture\":[{\"tools\":{\"deny\":[\"Bash\"]}},"
                       "{\"quotas\":[{\"bucket\":\"tiny\"}]}],"
                       "\"example.com/cap/x\":[1]}}";
    assert_int_equal(kl_whois_parse(body, strlen(body), &a, &id, &caps, &why), 1);
    assert_int_equal(cJSON_GetArraySize(caps), 2);
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(caps, "tailscale.com/cap/aperture");
    assert_int_equal(cJSON_GetArraySize(ap), 4);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ap, 0), "role"));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ap, 3), "quotas"));
    cJSON_Delete(caps);
    /* a copy granted with no values (null), sorted first, hides nothing */
    body = "{\"Node\":{\"Name\":\"bob-laptop.example.ts.net.\"},"
           "\"UserProfile\":{\"LoginName\":\"bob@example.com\"},"
           "\"CapMap\":{\"https://tailscale.com/cap/aperture\":null,"
           "\"tailscale.com/cap/aperture\":[{\"tools\":{\"deny\":[\"Bash\"]}}],\"example.com/cap/y\":null}}";
    assert_int_equal(kl_whois_parse(body, strlen(body), &a, &id, &caps, &why), 1);
    assert_int_equal(cJSON_GetArraySize(caps), 2);
    ap = cJSON_GetObjectItemCaseSensitive(caps, "tailscale.com/cap/aperture");
    assert_int_equal(cJSON_GetArraySize(ap), 1);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ap, 0), "tools"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(caps, "example.com/cap/y")));
    cJSON_Delete(caps);
    kl_arena_free(&a);
}

static void owners_and_garbage(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    size_t len;
    struct kl_identity id;
    cJSON *caps;
    const char *why;
    char *body = slurp("nobody.json", &len);
    assert_int_equal(kl_whois_parse(body, len, &a, &id, &caps, &why), 0);
    assert_int_equal(kl_whois_parse("{\"Node\":", 8, &a, &id, &caps, &why), -1);
    assert_int_equal(kl_whois_parse("[]", 2, &a, &id, &caps, &why), -1);
    /* the pseudo-user without tags is nobody */
    const char *pseudo = "{\"Node\":{\"Name\":\"x.\"},\"UserProfile\":{\"LoginName\":\"tagged-devices\"}}";
    assert_int_equal(kl_whois_parse(pseudo, strlen(pseudo), &a, &id, &caps, &why), 0);
    /* an old https:// capability name is normalised */
    body = slurp("dave.json", &len);
    assert_int_equal(kl_whois_parse(body, len, &a, &id, &caps, &why), 1);
    assert_non_null(cJSON_GetObjectItem(caps, "tailscale.com/cap/aperture"));
    cJSON_Delete(caps);
    kl_arena_free(&a);
}

static void rfc2047(void **state)
{
    (void)state;
    kl_arena a;
    kl_arena_init(&a);
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?Kr=C5=ABmi=C5=86a?="), "Krūmiņa");
    assert_string_equal(kl_rfc2047_decode(&a, "Plain Name"), "Plain Name");
    assert_string_equal(kl_rfc2047_decode(&a, "=?UTF-8?Q?Ana_Mar=C3=ADa?="), "Ana María");
    /* control bytes spelled by an encoded word: refused, not passed on */
    assert_null(kl_rfc2047_decode(&a, "=?utf-8?q?boss@example.com=00.evil?="));
    assert_null(kl_rfc2047_decode(&a, "=?utf-8?q?a=0Ab?="));
    assert_null(kl_rfc2047_decode(&a, "=?utf-8?b?YQpi?=")); /* "a\nb" */
    /* a long value is several words joined by spaces */
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?Kr=C5=AB?= =?utf-8?q?mi=C5=86a?="), "Krūmiņa");
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?b?S3LFq21p?="), "Krūmi");
    assert_string_equal(kl_rfc2047_decode(&a, "=?koi8-r?q?x?="), "=?koi8-r?q?x?=");
    /* tailscaled never encodes printable ASCII: a value that decodes to it,
     * or that is not encoded words alone, is itself (an e-mail address may
     * hold '=' and '?') */
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?boss@example.com?="), "=?utf-8?q?boss@example.com?=");
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?A?= =?utf-8?q?B?="), "=?utf-8?q?A?= =?utf-8?q?B?=");
    assert_string_equal(kl_rfc2047_decode(&a, "x=?utf-8?q?=C3=AD?="), "x=?utf-8?q?=C3=AD?=");
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?=C3=AD?=x"), "=?utf-8?q?=C3=AD?=x");
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?=C3=AD?= x"), "=?utf-8?q?=C3=AD?= x");
    assert_string_equal(kl_rfc2047_decode(&a, "=?utf-8?q?=C3=AD?= "), "=?utf-8?q?=C3=AD?= ");
    kl_arena_free(&a);
}

static void cidr(void **state)
{
    (void)state;
    int fam, prefix;
    unsigned char addr[16];
    assert_int_equal(kl_cidr_parse("10.8.0.0/24", &fam, addr, &prefix), 0);
    assert_int_equal(fam, AF_INET);
    assert_true(kl_cidr_contains(fam, addr, prefix, "10.8.0.77"));
    assert_false(kl_cidr_contains(fam, addr, prefix, "10.8.1.1"));
    assert_false(kl_cidr_contains(fam, addr, prefix, "fd00::1"));
    assert_int_equal(kl_cidr_parse("fd7a:115c:a1e0::/48", &fam, addr, &prefix), 0);
    assert_true(kl_cidr_contains(fam, addr, prefix, "fd7a:115c:a1e0::8c01:6667"));
    assert_int_equal(kl_cidr_parse("10.0.0.0/33", &fam, addr, &prefix), -1);
    assert_int_equal(kl_cidr_parse("nonsense", &fam, addr, &prefix), -1);
    assert_int_equal(kl_cidr_parse("10.1.2.3", &fam, addr, &prefix), 0);
    assert_int_equal(prefix, 32);
    assert_true(kl_ip_is_loopback("127.0.0.9"));
    assert_true(kl_ip_is_loopback("::1"));
    assert_false(kl_ip_is_loopback("100.64.0.1"));
}

/* A WhoIs answer is shared by a tailnet address (one node), else held for
 * its connection's address and port: userspace networking brings every
 * caller from 127.0.0.1, told apart by the port alone. */
static void whois_answers_are_kept_per_node_or_per_connection(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        int port;
        const char *addr, *key;
    } cases[] = {
        {"100.101.102.103", 41000, "100.101.102.103:41000", "100.101.102.103"},
        {"100.64.0.1", 5, "100.64.0.1:5", "100.64.0.1"},
        {"100.127.255.254", 5, "100.127.255.254:5", "100.127.255.254"},
        {"fd7a:115c:a1e0::8c01:6667", 443, "[fd7a:115c:a1e0::8c01:6667]:443", "fd7a:115c:a1e0::8c01:6667"},
        {"FD7A:115C:A1E0::1", 443, "[FD7A:115C:A1E0::1]:443", "FD7A:115C:A1E0::1"},
        {"127.0.0.1", 45311, "127.0.0.1:45311", "127.0.0.1:45311"},
        {"::1", 45311, "[::1]:45311", "[::1]:45311"},
        {"100.128.0.1", 7, "100.128.0.1:7", "100.128.0.1:7"},   /* outside 100.64.0.0/10 */
        {"100.63.0.1", 7, "100.63.0.1:7", "100.63.0.1:7"},
        {"172.18.0.2", 7, "172.18.0.2:7", "172.18.0.2:7"},      /* tailscaled's container */
        {"100.64.0.1.5", 7, "100.64.0.1.5:7", "100.64.0.1.5:7"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char addr[96], key[96];
        kl_whois_key(cases[i].ip, cases[i].port, addr, sizeof(addr), key, sizeof(key));
        assert_string_equal(addr, cases[i].addr);
        assert_string_equal(key, cases[i].key);
    }
    /* built by hand now: the same text as snprintf, cut the same way */
    static const char *const ips[] = {"127.0.0.1", "::1", "100.64.0.1", "fd7a:115c:a1e0::1"};
    static const int ports[] = {0, 9, 65535, -1};
    for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]); i++)
        for (size_t j = 0; j < sizeof(ports) / sizeof(ports[0]); j++)
            for (size_t len = 1; len <= 32; len++) {
                char addr[32], key[32], want[64], wkey[32];
                snprintf(want, sizeof(want), strchr(ips[i], ':') ? "[%s]:%d" : "%s:%d", ips[i], ports[j]);
                bool tailnet = i >= 2; /* the last two */
                const char *ws = tailnet ? ips[i] : want;
                size_t wl = strlen(ws) < len - 1 ? strlen(ws) : len - 1;
                memcpy(wkey, ws, wl);
                wkey[wl] = '\0';
                want[len - 1 < strlen(want) ? len - 1 : strlen(want)] = '\0';
                kl_whois_key(ips[i], ports[j], addr, len, key, len);
                assert_string_equal(addr, want);
                assert_string_equal(key, wkey);
            }
}

/* The key built by hand is snprintf's text for any address: an IPv6 one
 * with a zone, one of every length up to and past the hand-built buffer
 * (the snprintf fallback), cut at every buffer size. */
static void whois_key_matches_snprintf_for_any_address(void **state)
{
    (void)state;
    static const char *const fixed[] = {
        "fe80::1%eth0", "fe80::1ff:fe23:4567:890a%enp0s31f6veryl", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        "FD7A:115C:A1E0:ab12:4843:cd96:6258:b240", "fd7a:115c:a1e0::1%tailscale0", "100.64.0.1%x", "",
    };
    static const int ports[] = {0, 65535, 2147483647, -1, -2147483647 - 1};
    char long_ip[160];
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]) + 140; i++) {
        const char *ip = fixed[i < sizeof(fixed) / sizeof(fixed[0]) ? i : 0];
        if (i >= sizeof(fixed) / sizeof(fixed[0])) {
            size_t n = i - sizeof(fixed) / sizeof(fixed[0]) + 1; /* 1 .. 140 */
            memset(long_ip, i % 2 ? 'a' : '1', n);
            if (i % 2)
                long_ip[n / 2] = ':';
            long_ip[n] = '\0';
            ip = long_ip;
        }
        bool tailnet = strncasecmp(ip, "fd7a:115c:a1e0:", 15) == 0;
        for (size_t j = 0; j < sizeof(ports) / sizeof(ports[0]); j++)
            for (size_t len = 1; len <= 130; len += len < 20 ? 1 : 11) {
                char addr[130], key[130], want[200], wkey[200];
                snprintf(want, sizeof(want), strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip, ports[j]);
                want[len - 1 < strlen(want) ? len - 1 : strlen(want)] = '\0';
                snprintf(wkey, sizeof(wkey), "%s", tailnet ? ip : want);
                wkey[len - 1 < strlen(wkey) ? len - 1 : strlen(wkey)] = '\0';
                kl_whois_key(ip, ports[j], addr, len, key, len);
                assert_string_equal(addr, want);
                assert_string_equal(key, wkey);
            }
    }
}

static int spiffe_ok(const char *id)
{
    const char *why = NULL;
    return kl_spiffe_id_check(id, strlen(id), &why);
}

/* SPIFFE-ID: a trust domain of at most 255 bytes, lower case, then clean
 * path segments. */
static void spiffe_ids(void **state)
{
    (void)state;
    assert_int_equal(spiffe_ok("spiffe://example.org/ns/ci/sa/runner"), 0);
    char id[400] = "spiffe://";
    memset(id + 9, 'a', 255);
    strcpy(id + 9 + 255, "/x");
    assert_int_equal(spiffe_ok(id), 0);
    memset(id + 9, 'a', 256);
    strcpy(id + 9 + 256, "/x");
    assert_int_equal(spiffe_ok(id), -1);
    assert_int_equal(spiffe_ok("spiffe://Example.org/x"), -1);
    assert_int_equal(spiffe_ok("spiffe://example.org/a//b"), -1);
    assert_int_equal(spiffe_ok("spiffe://example.org/a/../b"), -1);
    assert_int_equal(spiffe_ok("spiffe:///x"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(user_node),
        cmocka_unit_test(tagged_nodes_are_their_sorted_tags),
        cmocka_unit_test(owners_and_garbage),
        cmocka_unit_test(capmap_names_merged),
        cmocka_unit_test(rfc2047),
        cmocka_unit_test(cidr),
        cmocka_unit_test(spiffe_ids),
        cmocka_unit_test(whois_answers_are_kept_per_node_or_per_connection),
        cmocka_unit_test(whois_key_matches_snprintf_for_any_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
