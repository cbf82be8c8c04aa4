/* `tailscale serve` identity headers. tailscaled deletes caller-sent
 * Tailscale-* headers and sets its own, but anyone who reaches our port
 * directly can forge them, so they count only from a loopback peer. */
#include "identity/identity.h"

#include "core/text.h"

#include <string.h>
#include <strings.h>

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decode one "=?charset?enc?text?=" word at p into out; returns the length
 * consumed, or 0 when p is not an encoded word we understand. */
static size_t decode_word(const char *p, char *out, size_t *olen)
{
    if (p[0] != '=' || p[1] != '?')
        return 0;
    const char *q1 = strchr(p + 2, '?');
    if (!q1 || !q1[1] || q1[2] != '?')
        return 0;
    size_t cl = (size_t)(q1 - (p + 2));
    if (!((cl == 5 && strncasecmp(p + 2, "utf-8", 5) == 0) ||
          (cl == 8 && strncasecmp(p + 2, "us-ascii", 8) == 0)))
        return 0;
    char enc = q1[1];
    const char *text = q1 + 3;
    const char *end = strstr(text, "?=");
    if (!end)
        return 0;
    size_t o = *olen;
    if (enc == 'q' || enc == 'Q') {
        for (const char *c = text; c < end; c++) {
            if (*c == '_') {
                out[o++] = ' ';
            } else if (*c == '=' && c + 2 < end && kl_hex_digit(c[1]) >= 0 && kl_hex_digit(c[2]) >= 0) {
                out[o++] = (char)(kl_hex_digit(c[1]) * 16 + kl_hex_digit(c[2]));
                c += 2;
            } else {
                out[o++] = *c;
            }
        }
    } else if (enc == 'b' || enc == 'B') {
        unsigned acc = 0;
        int bits = 0;
        for (const char *c = text; c < end && *c != '='; c++) {
            int v = b64val(*c);
            if (v < 0)
                return 0;
            acc = (acc << 6) | (unsigned)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[o++] = (char)((acc >> bits) & 0xff);
            }
        }
    } else {
        return 0;
    }
    *olen = o;
    return (size_t)(end + 2 - p);
}

/* Would Go's mime.QEncoding.Encode, which tailscaled uses, have encoded
 * these bytes? Only when one is outside printable ASCII (tab aside). */
static bool needs_encoding(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if ((c < 0x20 && c != '\t') || c > 0x7e)
            return true;
    }
    return false;
}

/* tailscaled passes a value that is printable ASCII as it is and encodes
 * any other whole, as encoded words joined by spaces. So a value is decoded
 * only when it is encoded words alone and decodes to something the encoder
 * would have had to encode; anything else is the value itself. A login
 * "=?utf-8?q?boss@example.com?=" (an e-mail address may hold '=' and '?')
 * is that login, not boss@example.com. */
const char *kl_rfc2047_decode(kl_arena *a, const char *v)
{
    size_t n = strlen(v);
    char *out = kl_arena_alloc(a, n + 1);
    size_t o = 0;
    const char *p = v;
    bool words = p[0] == '=' && p[1] == '?';
    while (words && *p) {
        size_t used = decode_word(p, out, &o);
        if (!used) {
            words = false;
            break;
        }
        p += used;
        if (*p == ' ' || *p == '\t') {
            while (*p == ' ' || *p == '\t')
                p++;
            words = *p != '\0';
        }
    }
    if (!words || !needs_encoding(out, o)) {
        memcpy(out, v, n + 1);
        return out;
    }
    out[o] = '\0';
    /* an encoded word can spell any byte: a NUL would cut a login short
     * (boss@example.com=00.evil), a line feed forge a log line */
    for (size_t k = 0; k < o; k++)
        if ((unsigned char)out[k] < 0x20 || out[k] == 0x7f)
            return NULL;
    return out;
}
