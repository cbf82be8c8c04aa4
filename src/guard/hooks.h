/* Aperture's hooks (PROTOCOLS.md, "hooks"): services the gateway asks
 * before forwarding a request (pre_request: allow, block or modify), and
 * tells after the answer (entire_request, tool_call_entire_request). The
 * `hooks` section defines them; a grant's `send_hooks` capability says which
 * run for whom, on which events, with which parts of the exchange. */
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

/* When a hook is called (`events` in a grant's send_hooks entry). */
enum {
    KL_EVENT_PRE_REQUEST = 1,           /* before forwarding; its verdict counts */
    KL_EVENT_ENTIRE_REQUEST = 2,        /* after every forwarded request; fire and forget */
    KL_EVENT_TOOL_CALL = 4,             /* tool_call_entire_request: after an answer with tool calls */
};

/* What a hook is sent (`send`, Aperture's values). */
enum {
    KL_SEND_REQUEST_BODY = 1,
    KL_SEND_USER_MESSAGE = 2,
    KL_SEND_RESPONSE_BODY = 4,          /* after the answer only, as the next two */
    KL_SEND_RAW_RESPONSES = 8,
    KL_SEND_TOOLS = 16,                 /* the field is "tool_calls" */
    KL_SEND_GRANTS = 32,                /* metadata.grants: the caller's other capabilities */
    KL_SEND_ESTIMATED_COST = 64,        /* metadata.estimated_cost, after the answer */
    KL_SEND_QUOTAS = 128,               /* metadata.quotas, after the answer */
};
#define KL_SEND_ANSWER (KL_SEND_RESPONSE_BODY | KL_SEND_RAW_RESPONSES | KL_SEND_TOOLS)

/* The most hooks one request is sent to (all grants together). */
#define KL_MAX_HOOKS 32

/* One hook as it applies to a request: every send_hooks entry naming it,
 * merged (events and send are unions; it is called once per event). */
struct kl_hook_ref {
    const struct kl_hook *hook;
    unsigned events;
    unsigned send;
};

void kl_hooks_read_config(kl_cfg_ctx *c, const cJSON *v);
const struct kl_hook *kl_hook_find(const struct kl_hooks *h, const char *name);

/* A capability object's "send_hooks" (absent: nothing). Merges each entry
 * of an enabled hook into out (up to max). -1 with why (an arena string) and
 * at (the offending JSON) on a malformed entry or a hook that is not
 * defined; KL_HOOKS_TOO_MANY (with why and at too) when out is full. */
#define KL_HOOKS_TOO_MANY (-2)
int kl_send_hooks_read(const cJSON *cap, const struct kl_hooks *hooks, kl_arena *a, struct kl_hook_ref *out,
                       size_t max, size_t *n, const char **why, const cJSON **at);

/* Configuration check: every send_hooks of the configured grants. */
void kl_hooks_check_grants(kl_cfg_ctx *c);

#endif
