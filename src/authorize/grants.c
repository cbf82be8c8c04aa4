#include "authorize/grants.h"

#include <string.h>
#include <strings.h>

#include "core/glob.h"
#include "core/jsoncheck.h"
#include "guard/tools.h"
#include "identity/identity.h"

static const char **read_models(const cJSON *v, kl_arena *a, size_t *n, const char **why)
{
    *n = 0;
    if (cJSON_IsString(v)) {
        const char **m = kl_arena_alloc(a, sizeof(char *));
        m[0] = kl_arena_strdup(a, v->valuestring);
        *n = 1;
        return m;
    }
    if (!cJSON_IsArray(v)) {
        *why = "\"models\" must be a glob string or an array of them";
        return NULL;
    }
    const char **m = kl_arena_alloc(a, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e)) {
            *why = "\"models\" must contain strings";
            return NULL;
        }
        m[(*n)++] = kl_arena_strdup(a, e->valuestring);
    }
    return m;
}

/* The members a capability of tailscale.com/cap/aperture may have. */
static const char *const cap_keys[] = {"role", "models", "quotas", "rate_limit", "send_hooks", "tools", "metrics"};

int kl_cap_read(const cJSON *obj, kl_arena *a, struct kl_cap *cap, const char **why)
{
    memset(cap, 0, sizeof(*cap));
    cap->raw = obj;
    if (!cJSON_IsObject(obj)) {
        *why = "a capability must be a JSON object";
        return -1;
    }
    if (kl_json_has_duplicate_keys(obj)) { /* which one counts? Go's reader takes the last, cJSON the first */
        *why = "a capability names one member twice";
        return -1;
    }
    /* Go's reader (Aperture's) matches member names in any case: "Quotas"
     * is its quotas, which left unread here would meter nothing */
    for (const cJSON *m = obj->child; m; m = m->next)
        for (size_t i = 0; i < sizeof(cap_keys) / sizeof(cap_keys[0]); i++)
            if (strcasecmp(m->string, cap_keys[i]) == 0 && strcmp(m->string, cap_keys[i]) != 0) {
                *why = kl_arena_printf(a, "a capability names \"%s\", which Aperture reads as \"%s\": write "
                                          "\"%s\"", m->string, cap_keys[i], cap_keys[i]);
                return -1;
            }
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(obj, "role");
    if (role) {
        if (cJSON_IsString(role) && strcmp(role->valuestring, "admin") == 0)
            cap->role = KL_ROLE_ADMIN;
        else if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0)
            cap->role = KL_ROLE_USER;
        else {
            *why = "\"role\" must be \"admin\" or \"user\"";
            return -1;
        }
    }
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(obj, "models");
    if (models) {
        *why = NULL;
        cap->models = read_models(models, a, &cap->nmodels, why);
        if (*why)
            return -1;
    }
    cap->send_hooks = cJSON_GetObjectItemCaseSensitive(obj, "send_hooks") != NULL;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(obj, "tools");
    if (tools) {
        struct kl_tool_policy *tp = kl_arena_alloc(a, sizeof(*tp));
        if (kl_tool_policy_read(tools, a, tp, why) < 0)
            return -1;
        cap->tools = tp;
    }
    return 0;
}

/* Patterns are over provider/model, so one without a '/' and without a
 * "**" (which crosses it: "openai**" matches openai/gpt-4o) can match no
 * model: "gpt-4o" written for "*\/gpt-4o" would grant nothing (and limits
 * scoped by it would limit nothing) in silence. */
static void warn_unmatchable(kl_cfg_ctx *c, const struct kl_cap *cap, const cJSON *at)
{
    for (size_t i = 0; i < cap->nmodels; i++) {
        const char *p = cap->models[i];
        if (!strchr(p, '/') && !strstr(p, "**"))
            kl_cfg_report(c, KL_SEV_WARNING, at, "model pattern \"%s\" matches no model: patterns are over "
                          "provider/model (\"*/%s\" for any provider's)", p, p);
    }
}

static void read_grant(kl_cfg_ctx *c, const cJSON *g, struct kl_grant *out)
{
    kl_arena *a = &c->cfg->arena;
    if (!cJSON_IsObject(g)) {
        kl_cfg_report(c, KL_SEV_ERROR, g, "a grant must be an object with \"src\" and \"app\"");
        return;
    }
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(g, "src");
    const cJSON *app = cJSON_GetObjectItemCaseSensitive(g, "app");
    if (!cJSON_IsArray(src) || cJSON_GetArraySize(src) == 0) {
        kl_cfg_report(c, KL_SEV_ERROR, src ? src : g, "grant \"src\" must be a non-empty array of selectors");
        return;
    }
    out->src = kl_arena_alloc(a, ((size_t)cJSON_GetArraySize(src) + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, src) {
        if (!cJSON_IsString(e) || !e->valuestring[0]) {
            kl_cfg_report(c, KL_SEV_ERROR, e, "grant selectors must be strings");
            continue;
        }
        if (strcmp(e->valuestring, "tagged-devices") == 0)
            kl_cfg_report(c, KL_SEV_WARNING, e,
                          "\"tagged-devices\" is Tailscale's shared pseudo-user and never matches; use the device's tags");
        else if (strncmp(e->valuestring, "autogroup:", 10) == 0)
            kl_cfg_report(c, KL_SEV_WARNING, e, "selector %s is not supported and never matches", e->valuestring);
        else if (strspn(e->valuestring, "0123456789.:/abcdefABCDEF") == strlen(e->valuestring) &&
                 strpbrk(e->valuestring, ".:") && !strchr(e->valuestring, '@'))
            kl_cfg_report(c, KL_SEV_WARNING, e,
                          "selector %s looks like an address: grants match identities (logins, group:, tag:); "
                          "map addresses to identities in identity.cidr", e->valuestring);
        out->src[out->nsrc++] = kl_arena_strdup(a, e->valuestring);
    }
    if (!cJSON_IsObject(app)) {
        kl_cfg_report(c, KL_SEV_ERROR, app ? app : g, "grant \"app\" must be an object of capabilities");
        return;
    }
    out->app = app;
    const cJSON *dst = cJSON_GetObjectItemCaseSensitive(g, "dst");
    if (dst)
        kl_cfg_report(c, KL_SEV_WARNING, dst,
                      "\"dst\" belongs to tailnet policy grants; in keyless the destination is the gateway (ignored)");
    for (const cJSON *m = g->child; m; m = m->next) {
        const char *k = m->string;
        if (!strcmp(k, "src") || !strcmp(k, "app") || !strcmp(k, "dst"))
            continue;
        /* conditions that narrow a tailnet grant to some devices: skipped,
         * the grant would hold for every device src names */
        if (!strcasecmp(k, "srcPosture") || !strcasecmp(k, "via"))
            kl_cfg_report(c, KL_SEV_ERROR, m, "grant \"%s\" narrows who the grant applies to, and keyless cannot "
                          "check it (device posture, routes): without it the grant would apply to every device its "
                          "src names", k);
        else if (!strcasecmp(k, "src") || !strcasecmp(k, "app") || !strcasecmp(k, "dst"))
            kl_cfg_report(c, KL_SEV_ERROR, m, "grant key \"%s\" must be written in lower case", k);
        else
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in a grant (ignored)", k);
    }
    const cJSON *caps = cJSON_GetObjectItemCaseSensitive(app, KL_APERTURE_CAP);
    if (!caps)
        return;
    if (!cJSON_IsArray(caps)) {
        kl_cfg_report(c, KL_SEV_ERROR, caps, "\"%s\" must be an array of capability objects", KL_APERTURE_CAP);
        return;
    }
    out->caps = kl_arena_alloc(a, ((size_t)cJSON_GetArraySize(caps) + 1) * sizeof(struct kl_cap));
    cJSON_ArrayForEach(e, caps) {
        const char *why = NULL;
        if (kl_cap_read(e, a, &out->caps[out->ncaps], &why) < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, e, "%s", why);
            continue;
        }
        warn_unmatchable(c, &out->caps[out->ncaps], cJSON_GetObjectItemCaseSensitive(e, "models"));
        /* a misspelt key ("quota", "model") would silently grant more */
        const cJSON *m;
        cJSON_ArrayForEach(m, e) {
            size_t i = 0;
            while (i < sizeof(cap_keys) / sizeof(cap_keys[0]) && strcmp(m->string, cap_keys[i]) != 0)
                i++;
            if (i == sizeof(cap_keys) / sizeof(cap_keys[0]))
                kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in a %s capability (ignored)", m->string,
                              KL_APERTURE_CAP);
        }
        out->ncaps++;
    }
}

void kl_grants_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    struct kl_grants *g = kl_arena_alloc(&c->cfg->arena, sizeof(*g));
    c->cfg->grants = g;
    if (!v) {
        kl_cfg_report(c, KL_SEV_WARNING, NULL,
                      "no grants: every request will be refused (access is denied by default)");
        return;
    }
    if (!cJSON_IsArray(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "grants must be an array");
        return;
    }
    g->v = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(struct kl_grant));
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
        read_grant(c, e, &g->v[g->n++]);
}

const struct kl_cap_ref *kl_grant_set_best(const struct kl_grant_set *s, const char *qualified)
{
    const struct kl_cap_ref *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < s->ncaps; i++) {
        const struct kl_cap *cap = s->caps[i].cap;
        for (size_t k = 0; k < cap->nmodels; k++) {
            if (!kl_glob_match(cap->models[k], qualified))
                continue;
            int score = kl_glob_specificity(cap->models[k]);
            if (score > best_score) {
                best = &s->caps[i];
                best_score = score;
            }
        }
    }
    return best;
}

bool kl_grant_set_allows(const struct kl_grant_set *s, const char *qualified)
{
    return kl_grant_set_best(s, qualified) != NULL;
}

static bool in_list(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

bool kl_selector_matches(const struct kl_identity *id, const char *sel)
{
    if (strcmp(sel, "*") == 0)
        return true;
    /* Behind `tailscale serve` every request comes from 127.0.0.1; those
     * callers keep their own identity and must not gain loopback grants. */
    if (strcmp(sel, "(loopback)") == 0)
        return strcmp(id->source, "loopback") == 0;
    if (strncmp(sel, "group:", 6) == 0)
        return in_list(id->groups, id->ngroups, sel);
    if (strncmp(sel, "tag:", 4) == 0)
        return in_list(id->tags, id->ntags, sel);
    /* a SCIM group named by its e-mail, as Aperture's grants allow
     * ("engineering@example.com" for group:engineering@example.com) */
    for (size_t i = 0; strchr(sel, '@') && i < id->ngroups; i++)
        if (strncmp(id->groups[i], "group:", 6) == 0 && strcasecmp(id->groups[i] + 6, sel) == 0)
            return true;
    if (id->tagged || !id->login)
        return false;
    /* Tailnet logins are e-mail addresses, matched in any case as the
     * tailnet does; workload logins come from token claims and SPIFFE ids,
     * which are case-sensitive (refs/heads/MAIN is not refs/heads/main, and
     * each case variant would be a user of its own with fresh <user>
     * quotas): those match exactly. */
    bool exact = id->source && (strcmp(id->source, "oidc") == 0 || strcmp(id->source, "mtls") == 0);
    return exact ? strcmp(sel, id->login) == 0 : strcasecmp(sel, id->login) == 0;
}

bool kl_cap_applies(const struct kl_cap *cap, const char *qualified)
{
    if (!cap->models)
        return true;
    for (size_t i = 0; i < cap->nmodels; i++)
        if (kl_glob_match(cap->models[i], qualified))
            return true;
    return false;
}
