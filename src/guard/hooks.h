/* Aperture's hooks (PROTOCOLS.md, "hooks"): services the gateway asks
 * before forwarding a request, which answer allow, block or modify. The
 * `hooks` section defines them; a grant's `send_hooks` capability says which
 * run for whom, on which events, with which parts of the request. */
#ifndef KL_HOOKS_H
#define KL_HOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/config.h"

struct kl_hook {
    const char *name;
    const char *url;
    const char *apikey;         /* NULL: no credential sent */
    const char *key_problem;    /* why an apikey given could not be read: the hook then fails */
    enum kl_auth_style auth;
    uint32_t timeout_ms;        /* 0 = none */
    bool disabled;
    bool fail_closed;           /* a failed hook refuses the request (503) instead of letting it through */
    int64_t preference;         /* higher runs first; ties by name */
};

struct kl_hooks {
    struct kl_hook *v;
    size_t n;
};

/* What a hook is sent (`send` in a grant's send_hooks entry). */
enum {
    KL_SEND_REQUEST_BODY = 1,
    KL_SEND_USER_MESSAGE = 2,
    KL_SEND_RESPONSE_BODY = 4,  /* asynchronous events only, not sent yet */
    KL_SEND_TOOL_CALLS = 8,     /* asynchronous events only, not sent yet */
};

/* The most hooks one request is sent to (all grants together). */
#define KL_MAX_HOOKS 32

/* One send_hooks entry that runs before a request is forwarded. */
struct kl_hook_ref {
    const struct kl_hook *hook;
    unsigned send;
};

void kl_hooks_read_config(kl_cfg_ctx *c, const cJSON *v);
const struct kl_hook *kl_hook_find(const struct kl_hooks *h, const char *name);

/* A capability object's "send_hooks" (absent: nothing). Adds each
 * pre_request entry of an enabled hook to out (up to max, merging one hook's
 * entries), and counts in *later the entries for events that are not sent
 * yet (entire_request, tool_call_entire_request). -1 with why (an arena
 * string) and at (the offending JSON) on a malformed entry or a hook that is
 * not defined; KL_HOOKS_TOO_MANY (with why and at too) when out is full. */
#define KL_HOOKS_TOO_MANY (-2)
int kl_send_hooks_read(const cJSON *cap, const struct kl_hooks *hooks, kl_arena *a, struct kl_hook_ref *out,
                       size_t max, size_t *n, size_t *later, const char **why, const cJSON **at);

/* Configuration check: every send_hooks of the configured grants. */
void kl_hooks_check_grants(kl_cfg_ctx *c);

#endif
