#include "route/route.h"

#include <string.h>
#include <strings.h>

bool kl_route_drop_request_header(const char *name)
{
    static const char *drop[] = {
        /* the caller's credentials: the gateway holds the keys */
        "authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie",
        /* hop-by-hop (RFC 9110 section 7.6.1) and framing curl sets itself */
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "host", "content-length", "expect", "accept-encoding",
    };
    /* every request header meets every name here: the first byte (| 0x20
     * folds ASCII case, and maps equal bytes to equal bytes) turns most
     * away before strcasecmp; so every name above is written lowercase */
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if ((name[0] | 0x20) == drop[i][0] && strcasecmp(name, drop[i]) == 0)
            return true;
    /* tailscale serve identity headers are for the gateway, not providers */
    return strncasecmp(name, "tailscale-", 10) == 0;
}

const char *kl_route_strip_key_param(kl_arena *a, const char *query)
{
    if (!query || !*query)
        return NULL;
    size_t n = strlen(query);
    char *out = kl_arena_alloc(a, n + 1);
    size_t o = 0;
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        bool is_key = (len >= 4 && strncmp(p, "key=", 4) == 0) || (len == 3 && strncmp(p, "key", 3) == 0);
        if (!is_key && len > 0) {
            if (o)
                out[o++] = '&';
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    out[o] = '\0';
    return o ? out : NULL;
}
