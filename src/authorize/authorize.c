#include "authorize/authorize.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/text.h"
#include "identity/identity.h"
#include "route/route.h"

const char *kl_role_name(enum kl_role r)
{
    return r == KL_ROLE_ADMIN ? "admin" : r == KL_ROLE_USER ? "user" : "none";
}

static void add_cap(kl_exchange *ex, struct kl_grant_set *s, size_t *cap, const struct kl_cap *c, int grant)
{
    if (s->ncaps == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct kl_cap_ref *v = kl_arena_alloc(&ex->arena, ncap * sizeof(*v));
        if (s->ncaps)
            memcpy(v, s->caps, s->ncaps * sizeof(*v));
        s->caps = v;
        *cap = ncap;
    }
    s->caps[s->ncaps++] = (struct kl_cap_ref){c, grant};
    if (c->role > s->role)
        s->role = c->role;
}

/* Does a capability carry a limit (not only a grant)? Such a one that cannot
 * be read refuses the caller: skipped, it would lift that limit. */
static bool restricts(const cJSON *cap)
{
    static const char *const limits[] = {"tools", "quotas", "rate_limit", "send_hooks"};
    /* in any case: Aperture's (Go's) reader takes "Quotas" for quotas */
    for (const cJSON *m = cJSON_IsObject(cap) ? cap->child : NULL; m; m = m->next)
        for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
            if (strcasecmp(m->string, limits[i]) == 0)
                return true;
    return false;
}

/* Everything that applies to this caller, from both origins. */
static struct kl_grant_set *collect(kl_exchange *ex)
{
    struct kl_grant_set *s = kl_arena_alloc(&ex->arena, sizeof(*s));
    size_t cap = 0;
    const struct kl_grants *g = ex->cfg->grants;
    for (size_t i = 0; g && i < g->n; i++) {
        const struct kl_grant *gr = &g->v[i];
        bool match = false;
        for (size_t k = 0; k < gr->nsrc && !match; k++)
            match = kl_selector_matches(ex->ident, gr->src[k]);
        for (size_t k = 0; match && k < gr->ncaps; k++)
            add_cap(ex, s, &cap, &gr->caps[k], (int)i);
    }
    const cJSON *capmap = cJSON_GetObjectItemCaseSensitive(ex->ident->caps, KL_APERTURE_CAP);
    const cJSON *e;
    size_t nbad = 0;
    cJSON_ArrayForEach(e, capmap) {
        struct kl_cap *c = kl_arena_alloc(&ex->arena, sizeof(*c));
        const char *why;
        if (kl_cap_read(e, &ex->arena, c, &why) == 0) {
            add_cap(ex, s, &cap, c, -1);
            continue;
        }
        bool refuses = restricts(e);
        if (refuses && !s->refusal)
            s->refusal = why; /* skipping it would lift a restriction */
        else if (!refuses)
            kl_warn("%s: a %s capability of %s from the tailnet policy cannot be read and grants nothing: %s",
                    ex->id, KL_APERTURE_CAP, ex->ident->login, why);
        if (!s->errors) /* at most one per member of the CapMap's array */
            s->errors = kl_arena_alloc(&ex->arena, (size_t)cJSON_GetArraySize(capmap) * sizeof(*s->errors));
        s->errors[nbad++] = (struct kl_cap_error){e, why, refuses};
    }
    s->nerrors = nbad;
    return s;
}

bool kl_authorize_model(const kl_exchange *ex, const struct kl_provider *p, const char *model)
{
    if (!ex->grant_set)
        return false;
    char q[512];
    return kl_join2(q, sizeof(q), p->id, '/', model) && kl_grant_set_allows(ex->grant_set, q);
}

static bool allowed(void *arg, const struct kl_provider *p, const char *model)
{
    return kl_authorize_model(arg, p, model);
}

enum kl_step kl_authorize_caller_run(kl_exchange *ex)
{
    struct kl_grant_set *s = collect(ex);
    ex->grant_set = s;
    ex->role = s->role;
    if (ex->ep->id == KL_EP_ADMIN)
        return KL_NEXT; /* each /api/ endpoint checks its own rights */
    if (s->role == KL_ROLE_NONE)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN, "access denied: no role granted");
    if (s->refusal)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                       "access denied: a capability from the tailnet policy cannot be read: %s", s->refusal);
    /* a model named in the path (Gemini, Bedrock) is known already: one
     * the caller may not use is refused before its body comes too */
    return ex->ep->inference && ex->ep->model_in_path ? kl_authorize_run(ex) : KL_NEXT;
}

enum kl_step kl_authorize_run(kl_exchange *ex)
{
    if (!ex->ep->inference || ex->provider) /* decided on the head (kl_authorize_caller_run) */
        return KL_NEXT;
    const char *bare;
    size_t bl;
    const struct kl_provider *p = kl_route_resolve_filtered(ex->cfg, ex->model_requested, ex->ep->compat,
                                                            allowed, ex, &bare, &bl);
    if (!p) {
        /* Not granted looks exactly like not existing. */
        const struct kl_provider *other = kl_route_resolve_filtered(ex->cfg, ex->model_requested, 0,
                                                                    allowed, ex, &bare, &bl);
        if (other)
            return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                           "model '%s' is not served on %s (provider %s does not speak this API)",
                           ex->model_requested, ex->req.path, other->id);
        return kl_fail(ex, KL_ERR_NOT_FOUND, KL_EC_NOT_FOUND,
                       "model '%s' does not exist or you do not have access to it", ex->model_requested);
    }
    ex->provider = p;
    ex->model = bare;
    return KL_NEXT;
}
