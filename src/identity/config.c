/* The `identity` configuration section. */
#include "identity/identity.h"

#include "core/text.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "identity/mtls.h"
#include "identity/oidc.h"

#define DEFAULT_TS_SOCKET "/var/run/tailscale/tailscaled.sock"

static bool read_bool(kl_cfg_ctx *c, const cJSON *v, const char *what)
{
    if (!cJSON_IsBool(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be true or false", what);
        return false;
    }
    return cJSON_IsTrue(v);
}

static void read_duration(kl_cfg_ctx *c, const cJSON *v, const char *what, uint32_t *out)
{
    uint64_t ms;
    if (kl_cfg_duration_value(v, &ms) < 0 || ms > UINT32_MAX) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be a duration such as \"30s\"", what);
        return;
    }
    *out = (uint32_t)ms;
}

/* Returns true when tailscale is enabled. */
static bool read_tailscale(kl_cfg_ctx *c, const cJSON *v, struct kl_identity_cfg *ic)
{
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    if (!cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "identity.tailscale must be an object or true/false");
        return false;
    }
    bool enabled = true;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "socket") == 0) {
            if (cJSON_IsString(m) && m->valuestring[0])
                ic->ts_socket = kl_arena_strdup(&c->cfg->arena, m->valuestring);
            else
                kl_cfg_report(c, KL_SEV_ERROR, m, "identity.tailscale.socket must be a path");
        } else if (strcmp(m->string, "timeout") == 0) {
            read_duration(c, m, "identity.tailscale.timeout", &ic->ts_timeout_ms);
            /* 0 is no time limit to libcurl: a hung tailscaled would hold
             * every caller it is asked about, and all who join the lookup */
            if (ic->ts_timeout_ms == 0)
                kl_cfg_report(c, KL_SEV_ERROR, m, "identity.tailscale.timeout must be at least \"1ms\"");
        } else if (strcmp(m->string, "cache_ttl") == 0) {
            read_duration(c, m, "identity.tailscale.cache_ttl", &ic->ts_ttl_ms);
        } else if (strcmp(m->string, "negative_cache_ttl") == 0) {
            read_duration(c, m, "identity.tailscale.negative_cache_ttl", &ic->ts_negative_ttl_ms);
        } else if (strcmp(m->string, "enabled") == 0) {
            enabled = read_bool(c, m, "identity.tailscale.enabled");
        } else {
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in identity.tailscale (ignored)", m->string);
        }
    }
    return enabled;
}

static const char **read_strings(kl_cfg_ctx *c, const cJSON *v, const char *what, size_t *n)
{
    *n = 0;
    if (!cJSON_IsArray(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "%s must be an array of strings", what);
        return NULL;
    }
    const char **out = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (cJSON_IsString(e))
            out[(*n)++] = kl_arena_strdup(&c->cfg->arena, e->valuestring);
        else
            kl_cfg_report(c, KL_SEV_ERROR, e, "%s must contain strings", what);
    }
    return out;
}

static void read_cidr(kl_cfg_ctx *c, const cJSON *v, struct kl_identity_cfg *ic)
{
    if (!cJSON_IsArray(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "identity.cidr must be an array of {\"range\", \"login\", ...}");
        return;
    }
    ic->cidr = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(v) + 1) * sizeof(*ic->cidr));
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        struct kl_cidr_rule *r = &ic->cidr[ic->ncidr];
        const cJSON *range = cJSON_GetObjectItemCaseSensitive(e, "range");
        if (!cJSON_IsString(range) || kl_cidr_parse(range->valuestring, &r->family, r->addr, &r->prefix) < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, range ? range : e, "identity.cidr entries need a \"range\" like \"10.8.0.0/24\"");
            continue;
        }
        r->ident.source = "cidr";
        const cJSON *m;
        cJSON_ArrayForEach(m, e) {
            if (strcmp(m->string, "range") == 0)
                continue;
            if (strcmp(m->string, "login") == 0 && cJSON_IsString(m) && *m->valuestring)
                r->ident.login = kl_arena_strdup(&c->cfg->arena, m->valuestring);
            else if (strcmp(m->string, "login") == 0)
                kl_cfg_report(c, KL_SEV_ERROR, m, "identity.cidr entry %s: \"login\" must be a non-empty string",
                              range->valuestring);
            else if (strcmp(m->string, "display_name") == 0 && cJSON_IsString(m))
                r->ident.display_name = kl_arena_strdup(&c->cfg->arena, m->valuestring);
            else if (strcmp(m->string, "tags") == 0)
                r->ident.tags = read_strings(c, m, "identity.cidr[].tags", &r->ident.ntags);
            else if (strcmp(m->string, "groups") == 0)
                r->ident.groups = read_strings(c, m, "identity.cidr[].groups", &r->ident.ngroups);
            else
                kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in identity.cidr entry (ignored)", m->string);
        }
        if (!r->ident.login && r->ident.ntags == 0) {
            kl_cfg_report(c, KL_SEV_ERROR, e, "identity.cidr entry %s needs a \"login\" or \"tags\"", range->valuestring);
            continue;
        }
        if (!r->ident.login) {
            /* like a tagged tailnet node: the identity is its tags */
            r->ident.login = kl_join(&c->cfg->arena, r->ident.tags, r->ident.ntags, ',');
            r->ident.tagged = true;
        }
        ic->ncidr++;
    }
}

static int source_by_name(const char *s)
{
    for (int i = 0; i < KL_SRC_COUNT; i++)
        if (strcmp(s, kl_id_source_name((enum kl_id_source)i)) == 0)
            return i;
    return -1;
}

/* tailscale serve's identity headers are believed from any loopback peer.
 * With tailscaled in userspace networking (the official container image's
 * default) a tailnet peer that reaches keyless's port directly also comes
 * from loopback, with headers of its own making: WhoIs knows that peer, so
 * it must be asked first, and without it nothing tells the two apart. */
static void warn_serve_order(kl_cfg_ctx *c, const cJSON *at, const struct kl_identity_cfg *ic)
{
    int serve = -1, tailscale = -1;
    for (size_t i = 0; i < ic->norder; i++) {
        if (ic->order[i] == KL_SRC_SERVE)
            serve = (int)i;
        else if (ic->order[i] == KL_SRC_TAILSCALE)
            tailscale = (int)i;
    }
    if (serve < 0)
        return;
    if (tailscale < 0)
        kl_cfg_report(c, KL_SEV_WARNING, at,
                      "serve_headers without tailscale: any local process, and with tailscaled in userspace "
                      "networking any tailnet peer reaching keyless's port directly, can claim any login in "
                      "Tailscale-User-Login; enable tailscale (WhoIs identifies direct peers first)");
    else if (serve < tailscale)
        kl_cfg_report(c, KL_SEV_WARNING, at,
                      "identity.order puts serve before tailscale: with tailscaled in userspace networking a tailnet "
                      "peer reaching keyless's port directly comes from loopback, and its own Tailscale-User-Login "
                      "would be believed; put tailscale first");
}

/* tailscaled's LocalAPI socket missing when the configuration is read: a
 * note, not an error (tailscaled may start after keyless, and check may run
 * on another machine), but said now rather than as the first tailnet
 * caller's 503. */
static void note_tailscale_socket(kl_cfg_ctx *c, const cJSON *at, const struct kl_identity_cfg *ic)
{
    bool used = false;
    for (size_t i = 0; i < ic->norder; i++)
        used |= ic->order[i] == KL_SRC_TAILSCALE;
    if (!used)
        return;
    struct stat st;
    if (stat(ic->ts_socket, &st) < 0)
        kl_cfg_report(c, KL_SEV_NOTE, at,
                      "on this machine, identity.tailscale.socket %s cannot be reached: %s; tailnet callers get 503 "
                      "until tailscaled listens there",
                      ic->ts_socket, strerror(errno));
    else if (!S_ISSOCK(st.st_mode))
        kl_cfg_report(c, KL_SEV_NOTE, at,
                      "on this machine, identity.tailscale.socket %s is not a socket; tailnet callers get 503 until "
                      "tailscaled listens there",
                      ic->ts_socket);
}

void kl_identity_read_config(kl_cfg_ctx *c, const cJSON *v)
{
    struct kl_identity_cfg *ic = kl_arena_alloc(&c->cfg->arena, sizeof(*ic));
    c->cfg->identity = ic;
    ic->ts_socket = DEFAULT_TS_SOCKET;
    ic->ts_timeout_ms = 3000;
    ic->ts_ttl_ms = 60000;
    ic->ts_negative_ttl_ms = 10000;
    bool enabled[KL_SRC_COUNT] = {false};
    enabled[KL_SRC_LOOPBACK] = true;
    const cJSON *order = NULL, *tailscale = NULL;
    if (v && !cJSON_IsObject(v)) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "identity must be an object");
        v = NULL;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "order") == 0)
            order = m;
        else if (strcmp(m->string, "tailscale") == 0) {
            enabled[KL_SRC_TAILSCALE] = read_tailscale(c, m, ic);
            tailscale = m;
        }
        else if (strcmp(m->string, "serve_headers") == 0)
            enabled[KL_SRC_SERVE] = read_bool(c, m, "identity.serve_headers");
        else if (strcmp(m->string, "loopback") == 0)
            enabled[KL_SRC_LOOPBACK] = read_bool(c, m, "identity.loopback");
        else if (strcmp(m->string, "cidr") == 0)
            read_cidr(c, m, ic), enabled[KL_SRC_CIDR] = ic->ncidr > 0;
        else if (strcmp(m->string, "mtls") == 0)
            enabled[KL_SRC_MTLS] = kl_mtls_read_config(c, m, ic);
        else if (strcmp(m->string, "oidc") == 0)
            ic->oidc = kl_oidc_read_config(c, m), enabled[KL_SRC_OIDC] = ic->oidc != NULL;
        else
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in identity (ignored)", m->string);
    }
    if (order) {
        if (!cJSON_IsArray(order)) {
            kl_cfg_report(c, KL_SEV_ERROR, order, "identity.order must be an array of source names");
            return;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, order) {
            int s = cJSON_IsString(e) ? source_by_name(e->valuestring) : -1;
            if (s < 0) {
                kl_cfg_report(c, KL_SEV_ERROR, e,
                              "identity.order entries are \"oidc\", \"mtls\", \"tailscale\", \"serve\", \"cidr\", \"loopback\"");
                continue;
            }
            if (!enabled[s]) {
                kl_cfg_report(c, KL_SEV_ERROR, e, "identity source \"%s\" is in identity.order but not configured",
                              e->valuestring);
                continue;
            }
            bool twice = false;
            for (size_t i = 0; i < ic->norder; i++)
                twice |= ic->order[i] == (enum kl_id_source)s;
            if (twice) {
                kl_cfg_report(c, KL_SEV_ERROR, e, "identity source \"%s\" is in identity.order twice", e->valuestring);
                continue;
            }
            ic->order[ic->norder++] = (enum kl_id_source)s; /* each once: at most KL_SRC_COUNT */
        }
        /* configured and left out: it identifies no one (an mTLS listener
         * still opens, and its certificates are ignored) */
        for (int s = 0; s < KL_SRC_COUNT; s++) {
            bool listed = false;
            for (size_t i = 0; i < ic->norder && !listed; i++)
                listed = ic->order[i] == (enum kl_id_source)s;
            if (enabled[s] && !listed && s != KL_SRC_LOOPBACK)
                kl_cfg_report(c, KL_SEV_WARNING, order,
                              "identity source \"%s\" is configured but not in identity.order: it identifies no one",
                              kl_id_source_name((enum kl_id_source)s));
        }
    } else {
        for (int s = 0; s < KL_SRC_COUNT; s++)
            if (enabled[s])
                ic->order[ic->norder++] = (enum kl_id_source)s;
    }
    warn_serve_order(c, order ? order : v, ic);
    if (tailscale) {
        const cJSON *sock = cJSON_IsObject(tailscale) ? cJSON_GetObjectItemCaseSensitive(tailscale, "socket") : NULL;
        note_tailscale_socket(c, sock ? sock : tailscale, ic);
    }
    if (!v)
        kl_cfg_report(c, KL_SEV_NOTE, NULL,
                      "no identity section: only loopback callers are identified (add \"identity\": {\"tailscale\": {}} for tailnet peers)");
}
