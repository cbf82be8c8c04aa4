/* IP address parsing with the exact acceptance rules of Go's net/netip,
 * because tailscaled decides "invalid 'addr' parameter" with
 * netip.ParseAddr / netip.ParseAddrPort and the fixture must agree with it
 * byte for byte: inet_pton accepts and rejects different spellings (leading
 * zeros, zones, over-long hex fields). */
#ifndef FTS_NETIP_H
#define FTS_NETIP_H

#include <stddef.h>

#define FTS_ZONE_MAX   64          /* longest IPv6 zone we keep, incl. NUL */
#define FTS_IP_STRMAX  (46 + FTS_ZONE_MAX)

struct fts_ip {
    int family;                    /* 4 or 6 */
    unsigned char b[16];           /* network order; IPv4 uses b[0..3] */
    char zone[FTS_ZONE_MAX];       /* IPv6 scope zone without '%'; "" = none */
};

/* Go netip.ParseAddr: "1.2.3.4", "fd7a::1", "fe80::1%eth0". 0 or -1. */
int fts_ip_parse(const char *s, size_t n, struct fts_ip *out);

/* Go netip.ParseAddrPort: "1.2.3.4:80", "[fd7a::1]:80". 0 or -1. */
int fts_ipport_parse(const char *s, size_t n, struct fts_ip *ip, unsigned *port);

/* Go Addr.Is4In6 and Addr.Unmap (::ffff:a.b.c.d -> a.b.c.d, zone dropped). */
int  fts_ip_is4in6(const struct fts_ip *ip);
void fts_ip_unmap(struct fts_ip *ip);

/* Same family, bytes and zone (Go's == on netip.Addr). */
int fts_ip_equal(const struct fts_ip *a, const struct fts_ip *b);

/* Go Addr.String (RFC 5952 for IPv6, "::ffff:a.b.c.d" for mapped). */
void fts_ip_format(const struct fts_ip *ip, char *buf, size_t cap);

#endif
