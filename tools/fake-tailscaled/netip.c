#include "netip.h"

#include <stdio.h>
#include <string.h>

/* Dotted quad exactly as Go's parseIPv4: four decimal fields, no leading
 * zeros ("01" is rejected, "0" is fine), each at most 255. */
static int parse_ipv4(const char *s, size_t n, unsigned char out[4])
{
    int val = 0, pos = 0, digits = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (digits == 1 && val == 0)
                return -1;                      /* leading zero */
            val = val * 10 + (c - '0');
            digits++;
            if (val > 255)
                return -1;
        } else if (c == '.') {
            if (i == 0 || i == n - 1 || s[i - 1] == '.')
                return -1;                      /* empty field */
            if (pos == 3)
                return -1;                      /* too long */
            out[pos++] = (unsigned char)val;
            val = 0;
            digits = 0;
        } else {
            return -1;
        }
    }
    if (pos < 3)
        return -1;                              /* too short */
    out[3] = (unsigned char)val;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Go's parseIPv6: hex fields of any number of digits as long as the value
 * fits 16 bits, one "::", an optional trailing dotted quad in the last 32
 * bits, and an optional non-empty "%zone" split off first. */
static int parse_ipv6(const char *s, size_t n, struct fts_ip *out)
{
    unsigned char ip[16] = {0};
    int ellipsis = -1, i = 0;
    const char *pct = memchr(s, '%', n);

    memset(out, 0, sizeof(*out));
    if (pct) {
        size_t zlen = n - (size_t)(pct - s) - 1;
        if (zlen == 0 || zlen >= FTS_ZONE_MAX || memchr(pct + 1, '\0', zlen))
            return -1;
        memcpy(out->zone, pct + 1, zlen);
        n = (size_t)(pct - s);
    }

    if (n >= 2 && s[0] == ':' && s[1] == ':') {
        ellipsis = 0;
        s += 2;
        n -= 2;
        if (n == 0)
            goto done;
    }

    while (i < 16) {
        size_t off = 0;
        unsigned acc = 0;
        for (; off < n; off++) {
            int h = hexval(s[off]);
            if (h < 0)
                break;
            acc = (acc << 4) + (unsigned)h;
            if (acc > 0xffff)
                return -1;
        }
        if (off == 0)
            return -1;                          /* field without digits */

        if (off < n && s[off] == '.') {
            unsigned char v4[4];
            if (ellipsis < 0 && i != 12)
                return -1;                      /* v4 not in last 32 bits */
            if (i + 4 > 16)
                return -1;
            if (parse_ipv4(s, n, v4) != 0)
                return -1;
            memcpy(ip + i, v4, 4);
            i += 4;
            n = 0;
            break;
        }

        ip[i] = (unsigned char)(acc >> 8);
        ip[i + 1] = (unsigned char)acc;
        i += 2;

        s += off;
        n -= off;
        if (n == 0)
            break;
        if (s[0] != ':' || n == 1)
            return -1;
        s++;
        n--;
        if (s[0] == ':') {
            if (ellipsis >= 0)
                return -1;                      /* second "::" */
            ellipsis = i;
            s++;
            n--;
            if (n == 0)
                break;
        }
    }
    if (n != 0)
        return -1;                              /* trailing garbage */

    if (i < 16) {
        if (ellipsis < 0)
            return -1;                          /* too short */
        int gap = 16 - i;
        for (int j = i - 1; j >= ellipsis; j--)
            ip[j + gap] = ip[j];
        for (int j = ellipsis + gap - 1; j >= ellipsis; j--)
            ip[j] = 0;
    } else if (ellipsis >= 0) {
        return -1;                              /* "::" standing for nothing */
    }

done:
    out->family = 6;
    memcpy(out->b, ip, 16);
    return 0;
}

int fts_ip_parse(const char *s, size_t n, struct fts_ip *out)
{
    /* Go dispatches on the first '.', ':' or '%' it meets. */
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            memset(out, 0, sizeof(*out));
            if (parse_ipv4(s, n, out->b) != 0)
                return -1;
            out->family = 4;
            return 0;
        }
        if (s[i] == ':')
            return parse_ipv6(s, n, out);
        if (s[i] == '%')
            return -1;                          /* zone without address */
    }
    return -1;
}

int fts_ipport_parse(const char *s, size_t n, struct fts_ip *ip, unsigned *port)
{
    size_t colon = n;
    int v6 = 0;
    unsigned long p = 0;

    for (size_t i = n; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = i - 1;
            break;
        }
    }
    if (colon == n)
        return -1;                              /* not an ip:port */

    const char *h = s, *ps = s + colon + 1;
    size_t hn = colon, pn = n - colon - 1;
    if (hn == 0 || pn == 0)
        return -1;                              /* no IP / no port */
    if (h[0] == '[') {
        if (hn < 2 || h[hn - 1] != ']')
            return -1;                          /* missing ] */
        h++;
        hn -= 2;
        v6 = 1;
    }

    /* strconv.ParseUint(port, 10, 16): decimal digits only, <= 65535. */
    for (size_t i = 0; i < pn; i++) {
        if (ps[i] < '0' || ps[i] > '9')
            return -1;
        p = p * 10 + (unsigned long)(ps[i] - '0');
        if (p > 65535)
            return -1;
    }

    if (fts_ip_parse(h, hn, ip) != 0)
        return -1;
    if (v6 && ip->family == 4)
        return -1;                              /* brackets only for IPv6 */
    if (!v6 && ip->family == 6)
        return -1;                              /* IPv6 needs brackets */
    *port = (unsigned)p;
    return 0;
}

int fts_ip_is4in6(const struct fts_ip *ip)
{
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return ip->family == 6 && memcmp(ip->b, prefix, 12) == 0;
}

void fts_ip_unmap(struct fts_ip *ip)
{
    if (!fts_ip_is4in6(ip))
        return;
    unsigned char v4[4];
    memcpy(v4, ip->b + 12, 4);
    memset(ip, 0, sizeof(*ip));
    memcpy(ip->b, v4, 4);
    ip->family = 4;
}

int fts_ip_equal(const struct fts_ip *a, const struct fts_ip *b)
{
    if (a->family != b->family)
        return 0;
    if (a->family == 4)
        return memcmp(a->b, b->b, 4) == 0;
    return memcmp(a->b, b->b, 16) == 0 && strcmp(a->zone, b->zone) == 0;
}

/* Appends s at buf[len], truncating at cap; returns the new length. */
static size_t append(char *buf, size_t cap, size_t len, const char *s)
{
    size_t n = strlen(s);
    if (len + 1 >= cap)
        return len;
    if (n > cap - len - 1)
        n = cap - len - 1;
    memcpy(buf + len, s, n);
    buf[len + n] = '\0';
    return len + n;
}

void fts_ip_format(const struct fts_ip *ip, char *buf, size_t cap)
{
    size_t len = 0;

    if (cap == 0)
        return;
    buf[0] = '\0';
    if (ip->family == 4) {
        snprintf(buf, cap, "%u.%u.%u.%u", ip->b[0], ip->b[1], ip->b[2], ip->b[3]);
        return;
    }
    if (ip->family != 6)
        return;

    if (fts_ip_is4in6(ip)) {
        len = (size_t)snprintf(buf, cap, "::ffff:%u.%u.%u.%u",
                               ip->b[12], ip->b[13], ip->b[14], ip->b[15]);
        if (len >= cap)
            len = cap - 1;
    } else {
        /* Longest run of two or more zero fields becomes "::"; on a tie
         * the first run wins, as in Go's appendTo6. */
        unsigned w[8];
        int zstart = -1, zlen = 0;
        for (int i = 0; i < 8; i++)
            w[i] = (unsigned)ip->b[2 * i] << 8 | ip->b[2 * i + 1];
        for (int i = 0; i < 8; i++) {
            int j = i;
            while (j < 8 && w[j] == 0)
                j++;
            if (j - i >= 2 && j - i > zlen) {
                zstart = i;
                zlen = j - i;
            }
        }
        for (int i = 0; i < 8; i++) {
            if (i == zstart) {
                len = append(buf, cap, len, "::");
                i = zstart + zlen;
                if (i >= 8)
                    break;
            } else if (i > 0) {
                len = append(buf, cap, len, ":");
            }
            char hex[8];
            snprintf(hex, sizeof(hex), "%x", w[i]);
            len = append(buf, cap, len, hex);
        }
    }
    if (ip->zone[0]) {
        len = append(buf, cap, len, "%");
        append(buf, cap, len, ip->zone);
    }
}
