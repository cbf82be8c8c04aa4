/* The `hooks` section and the `send_hooks` capability that refers to it. */
#include "guard/hooks.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "authorize/grants.h"

static void read_hook(kl_cfg_ctx *c, const cJSON *v, struct kl_hook *h)
{
    kl_arena *a = &c->cfg->arena;
    h->name = kl_arena_strdup(a, v->string);
    h->timeout_ms = 5000;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        const char *k = m->string;
        if (strcmp(k, "url") == 0) {
            if (!cJSON_IsString(m) ||
                (strncmp(m->valuestring, "http://", 7) != 0 && strncmp(m->valuestring, "https://", 8) != 0))
                kl_cfg_report(c, KL_SEV_ERROR, m, "hook %s: url must be an http:// or https:// URL", h->name);
            else
                h->url = kl_arena_strdup(a, m->valuestring);
        } else if (strcmp(k, "apikey") == 0) {
            const char *owner = kl_arena_printf(a, "hook %s", h->name);
            h->apikey = kl_cfg_secret(c, m, owner, &h->key_problem);
            if (h->key_problem)
                kl_cfg_report(c, KL_SEV_WARNING, m, "%s; it will count as failed", h->key_problem);
        } else if (strcmp(k, "authorization") == 0) {
            kl_cfg_auth_style(c, m, true, &h->auth);
        } else if (strcmp(k, "timeout") == 0) {
            uint64_t ms;
            if (kl_cfg_duration_value(m, &ms) < 0 || ms > UINT32_MAX)
                kl_cfg_report(c, KL_SEV_ERROR, m, "hook %s: timeout must be a duration such as \"5s\" (\"0\": none)",
                              h->name);
            else
                h->timeout_ms = (uint32_t)ms;
        } else if (strcmp(k, "disabled") == 0) {
            if (!cJSON_IsBool(m))
                kl_cfg_report(c, KL_SEV_ERROR, m, "hook %s: disabled must be true or false", h->name);
            h->disabled = cJSON_IsTrue(m);
        } else if (strcmp(k, "fail_policy") == 0) {
            const char *s = cJSON_IsString(m) ? m->valuestring : "";
            if (strcmp(s, "fail_closed") == 0)
                h->fail_closed = true;
            else if (strcmp(s, "fail_open") != 0)
                kl_cfg_report(c, KL_SEV_ERROR, m, "hook %s: fail_policy must be \"fail_open\" or \"fail_closed\"",
                              h->name);
        } else if (strcmp(k, "preference") == 0) {
            if (!cJSON_IsNumber(m) || m->valuedouble != floor(m->valuedouble) || fabs(m->valuedouble) > 1e15)
                kl_cfg_report(c, KL_SEV_ERROR, m, "hook %s: preference must be a whole number", h->name);
            else
                h->preference = (int64_t)m->valuedouble;
        } else {
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in hook %s (ignored)", k, h->name);
        }
    }
    if (!h->url)
        kl_cfg_report(c, KL_SEV_ERROR, v, "hook %s needs a \"url\"", h->name);
}

void kl_hooks_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "hooks must be an object of named hooks");
        return;
    }
    struct kl_hooks *hs = kl_arena_alloc(&c->cfg->arena, sizeof(*hs));
    hs->v = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(*hs->v));
    const cJSON *h;
    cJSON_ArrayForEach(h, v) {
        if (!cJSON_IsObject(h)) {
            kl_cfg_report(c, KL_SEV_ERROR, h, "hook %s must be an object with a \"url\"", h->string);
            continue;
        }
        read_hook(c, h, &hs->v[hs->n++]);
    }
    c->cfg->hooks = hs;
}

const struct kl_hook *kl_hook_find(const struct kl_hooks *h, const char *name)
{
    for (size_t i = 0; h && i < h->n; i++)
        if (strcmp(h->v[i].name, name) == 0)
            return &h->v[i];
    return NULL;
}

static int bad(const char **why, const cJSON **at, kl_arena *a, const cJSON *where, const char *msg)
{
    *why = kl_arena_strdup(a, msg);
    *at = where;
    return -1;
}

/* The names in a string-array member; -1 when it is not one. */
static int names_of(const cJSON *arr, const char *const *known, size_t nknown, unsigned *bits, const cJSON **badv)
{
    *bits = 0;
    if (!cJSON_IsArray(arr))
        return -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        size_t i = 0;
        while (cJSON_IsString(e) && i < nknown && strcmp(e->valuestring, known[i]) != 0)
            i++;
        if (!cJSON_IsString(e) || i == nknown) {
            *badv = e;
            return -1;
        }
        *bits |= 1u << i;
    }
    return 0;
}

int kl_send_hooks_read(const cJSON *cap, const struct kl_hooks *hooks, kl_arena *a, struct kl_hook_ref *out,
                       size_t max, size_t *n, const char **why, const cJSON **at)
{
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(cap, "send_hooks");
    if (!sh)
        return 0;
    if (!cJSON_IsArray(sh))
        return bad(why, at, a, sh, "\"send_hooks\" must be an array of {\"name\", \"events\", \"send\"}");
    static const char *const events[] = {"pre_request", "entire_request", "tool_call_entire_request"};
    /* Aperture's send values, in the order of the KL_SEND_ bits; "tool_calls"
     * (the field's name, which keyless took before) means "tools" */
    static const char *const sends[] = {"request_body", "user_message", "response_body", "raw_responses",
                                        "tools", "grants", "estimated_cost", "quotas", "tool_calls"};
    const cJSON *e;
    cJSON_ArrayForEach(e, sh) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(e, "events");
        const cJSON *send = cJSON_GetObjectItemCaseSensitive(e, "send");
        if (!cJSON_IsObject(e) || !cJSON_IsString(name))
            return bad(why, at, a, e, "a send_hooks entry needs \"name\" (a hook), \"events\" and \"send\"");
        const struct kl_hook *h = kl_hook_find(hooks, name->valuestring);
        if (!h)
            return bad(why, at, a, name,
                       kl_arena_printf(a, "send_hooks names hook \"%s\", which hooks does not define", name->valuestring));
        unsigned evbits = 0, sendbits = 0;
        const cJSON *badv = ev;
        if (names_of(ev, events, 3, &evbits, &badv) < 0 || !evbits)
            return bad(why, at, a, badv ? badv : e,
                       "send_hooks events must be a non-empty array of \"pre_request\", \"entire_request\", "
                       "\"tool_call_entire_request\"");
        badv = send;
        if (send && names_of(send, sends, 9, &sendbits, &badv) < 0)
            return bad(why, at, a, badv ? badv : e,
                       "send_hooks send must be an array of \"request_body\", \"user_message\", "
                       "\"response_body\", \"raw_responses\", \"tools\", \"grants\", \"estimated_cost\", "
                       "\"quotas\"");
        const unsigned tool_calls_alias = 1u << 8; /* "tool_calls", the last name in sends */
        if (sendbits & tool_calls_alias)
            sendbits = (sendbits & ~tool_calls_alias) | KL_SEND_TOOLS;
        if (h->disabled)
            continue;
        size_t i = 0;
        while (i < *n && out[i].hook != h)
            i++;
        if (i == *n) {
            if (*n == max) {
                bad(why, at, a, e, "too many hooks apply to one request");
                return KL_HOOKS_TOO_MANY;
            }
            out[(*n)++] = (struct kl_hook_ref){h, 0, 0};
        }
        out[i].events |= evbits;
        out[i].send |= sendbits;
    }
    return 0;
}

void kl_hooks_check_grants(kl_cfg_ctx *c)
{
    const struct kl_grants *g = c->cfg->grants;
    /* every hook any grant names, merged as for a caller all grants apply
     * to: more than one request can be sent to is an error here, not a 403
     * on every request */
    struct kl_hook_ref all[KL_MAX_HOOKS];
    size_t nall = 0;
    bool too_many = false;
    for (size_t i = 0; g && i < g->n; i++) {
        for (size_t k = 0; k < g->v[i].ncaps; k++) {
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(g->v[i].caps[k].raw, "send_hooks");
            for (const cJSON *e = cJSON_IsArray(sh) ? sh->child : NULL; e; e = e->next) {
                for (const cJSON *m = cJSON_IsObject(e) ? e->child : NULL; m; m = m->next)
                    if (strcmp(m->string, "name") && strcmp(m->string, "events") && strcmp(m->string, "send"))
                        kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in a send_hooks entry (ignored)",
                                      m->string);
            }
            const char *why;
            const cJSON *at;
            int rc = kl_send_hooks_read(g->v[i].caps[k].raw, c->cfg->hooks, &c->cfg->arena, all, KL_MAX_HOOKS, &nall,
                                        &why, &at);
            if (rc == KL_HOOKS_TOO_MANY)
                too_many = true;
            else if (rc < 0)
                kl_cfg_report(c, KL_SEV_ERROR, at, "%s", why);
        }
    }
    if (too_many)
        kl_cfg_report(c, KL_SEV_ERROR, NULL, "the grants name more than %d hooks; a request can be sent to at "
                      "most %d", KL_MAX_HOOKS, KL_MAX_HOOKS);
}
