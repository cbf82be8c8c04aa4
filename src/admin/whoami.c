/* GET /api/whoami: who the gateway thinks the caller is, where that came
 * from, and what the grants let them do — the first question of a confused
 * user or administrator. Answered even to callers with no role. */
#include "admin/admin.h"

#include <stdlib.h>
#include <string.h>

#include "authorize/authorize.h"
#include "authorize/grants.h"
#include "identity/identity.h"
#include "listen/conn.h"

static cJSON *strings(const char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static void add_opt(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

/* The selectors of a grant that the caller matches: why it applies to
 * them. The rest of its src (other users' logins) is for admins to see. */
static cJSON *matched(const kl_exchange *ex, const struct kl_grant *gr)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < gr->nsrc; i++)
        if (kl_selector_matches(ex->ident, gr->src[i]))
            cJSON_AddItemToArray(a, cJSON_CreateString(gr->src[i]));
    return a;
}

enum kl_step kl_admin_whoami(kl_exchange *ex)
{
    const struct kl_identity *id = ex->ident;
    cJSON *root = cJSON_CreateObject();
    add_opt(root, "login", id->login);
    add_opt(root, "display_name", id->display_name);
    add_opt(root, "node", id->node);
    add_opt(root, "stable_node_id", id->stable_node_id);
    cJSON_AddItemToObject(root, "tags", strings(id->tags, id->ntags));
    cJSON_AddItemToObject(root, "groups", strings(id->groups, id->ngroups));
    cJSON_AddStringToObject(root, "source", id->source);
    add_opt(root, "issuer", id->issuer);
    cJSON_AddStringToObject(root, "peer", kl_arena_printf(&ex->arena, "%s:%d", ex->peer_ip, ex->peer_port));
    cJSON_AddBoolToObject(root, "loopback", ex->peer_loopback);
    cJSON_AddStringToObject(root, "role", kl_role_name(ex->role));

    /* Each capability that applies, with where it came from. */
    cJSON *grants = cJSON_AddArrayToObject(root, "grants");
    const struct kl_grant_set *s = ex->grant_set;
    for (size_t i = 0; s && i < s->ncaps; i++) {
        cJSON *g = cJSON_CreateObject();
        int gi = s->caps[i].grant;
        if (gi >= 0) {
            const struct kl_grant *gr = &ex->cfg->grants->v[gi];
            cJSON_AddStringToObject(g, "from", kl_arena_printf(&ex->arena, "config grants[%d]", gi));
            cJSON_AddItemToObject(g, "src", ex->role == KL_ROLE_ADMIN ? strings(gr->src, gr->nsrc) : matched(ex, gr));
        } else {
            cJSON_AddStringToObject(g, "from", "tailnet policy (CapMap)");
        }
        cJSON_AddItemToObject(g, "capability", cJSON_Duplicate(s->caps[i].cap->raw, 1));
        cJSON_AddItemToArray(grants, g);
    }

    /* The tailnet capabilities that could not be read: one with a limit
     * refuses every request (the grants above would otherwise look usable),
     * one without grants nothing. */
    cJSON *bad = cJSON_AddArrayToObject(root, "capability_errors");
    for (size_t i = 0; s && i < s->nerrors; i++) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "from", "tailnet policy (CapMap)");
        cJSON_AddItemToObject(b, "capability", cJSON_Duplicate(s->errors[i].raw, 1));
        cJSON_AddStringToObject(b, "error", s->errors[i].why);
        cJSON_AddStringToObject(b, "effect", s->errors[i].refuses ? "every request is refused" : "grants nothing");
        cJSON_AddItemToArray(bad, b);
    }

    /* The models this caller can reach, as provider/model: none while a
     * capability refuses every request. */
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (size_t i = 0; i < ex->cfg->nproviders; i++) {
        const struct kl_provider *p = &ex->cfg->providers[i];
        if (p->disabled || ex->role == KL_ROLE_NONE || (s && s->refusal))
            continue;
        for (size_t k = 0; k < p->nmodels; k++)
            if (kl_authorize_model(ex, p, p->models[k]))
                cJSON_AddItemToArray(models, cJSON_CreateString(
                    kl_arena_printf(&ex->arena, "%s/%s", p->id, p->models[k])));
    }
    if (id->caps)
        cJSON_AddItemToObject(root, "capabilities", cJSON_Duplicate(id->caps, 1));
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!out)
        abort();
    kl_respond(ex, 200, "application/json", NULL, out, strlen(out));
    cJSON_free(out);
    return KL_DONE;
}
