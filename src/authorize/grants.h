/* Aperture grants: who may use which models, and with which role.
 *
 * A grant pairs `src` selectors (`*`, a login, `group:x`, `tag:x`,
 * `(loopback)`) with capability objects under `tailscale.com/cap/aperture`:
 * `{"role": "admin"|"user"}`, `{"models": "glob" | ["glob", ...]}` and
 * operational fields (quotas, hooks) read by later stages. Grants come from
 * the configuration and from the caller's tailnet CapMap; they only add
 * access (deny by default). Globs run over "provider/model": `*` is one
 * path segment, `**` any number. */
#ifndef KL_GRANTS_H
#define KL_GRANTS_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/config.h"

struct kl_tool_policy;

#define KL_APERTURE_CAP "tailscale.com/cap/aperture"

enum kl_role { KL_ROLE_NONE, KL_ROLE_USER, KL_ROLE_ADMIN };

struct kl_cap {
    enum kl_role role;          /* KL_ROLE_NONE when the object grants no role */
    const char **models;        /* globs; NULL when the object has no "models" */
    size_t nmodels;
    bool send_hooks;            /* has "send_hooks" (read by the guard stage) */
    const struct kl_tool_policy *tools;     /* its "tools" (guard/tools.h), or NULL */
    const cJSON *raw;           /* the capability object itself */
};

struct kl_grant {
    const char **src;
    size_t nsrc;
    struct kl_cap *caps;
    size_t ncaps;
    const cJSON *app;           /* every capability, for hooks */
};

struct kl_grants {
    struct kl_grant *v;
    size_t n;
};

/* What applies to one caller: the capabilities of every matching grant. */
struct kl_cap_ref {
    const struct kl_cap *cap;
    int grant;                  /* index in the config's grants, or -1 for the tailnet CapMap */
};

/* A tailnet capability that could not be read, for /api/whoami to show. */
struct kl_cap_error {
    const cJSON *raw;           /* as the CapMap holds it (the identity's) */
    const char *why;
    bool refuses;               /* it carries a limit: every request is refused */
};

struct kl_grant_set {
    enum kl_role role;
    struct kl_cap_ref *caps;
    size_t ncaps;
    const char *refusal;        /* a tailnet capability that restricts (tools) could not be read: why */
    struct kl_cap_error *errors;
    size_t nerrors;
};

void kl_grants_read_config(kl_cfg_ctx *c, const cJSON *v);

/* Read one capability object (also used for CapMap values). 0 or -1 with why. */
int kl_cap_read(const cJSON *obj, kl_arena *a, struct kl_cap *cap, const char **why);

struct kl_identity;
/* Does a grant `src` selector name this caller? `*` anyone identified;
 * `group:x` and `tag:x` by membership; `(loopback)` only a caller that the
 * loopback source identified; anything else is a login (case-insensitive),
 * which a tagged device never has. */
bool kl_selector_matches(const struct kl_identity *id, const char *sel);

/* The capability that applies to provider/model: among those whose models
 * match, the one with the most specific pattern (NULL when none match). */
/* Does a capability object apply to provider/model? (One without "models"
 * applies to every model.) */
bool kl_cap_applies(const struct kl_cap *cap, const char *qualified);

const struct kl_cap_ref *kl_grant_set_best(const struct kl_grant_set *s, const char *qualified);
bool kl_grant_set_allows(const struct kl_grant_set *s, const char *qualified);

#endif
