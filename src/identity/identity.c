#include "identity/identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/jsoncheck.h"
#include "core/log.h"
#include "core/text.h"
#include "identity/mtls.h"
#include "identity/oidc.h"
#include "identity/whois.h"
#include "listen/http.h"

/* The longest login accepted: a SPIFFE ID's limit. Records are indexed by
 * login, and PostgreSQL refuses an index entry over 2,704 bytes; a longer
 * login would be a record no store keeps. */
#define KL_LOGIN_MAX 2048

/* What one source concluded about the caller. */
enum outcome { IDENTIFIED, NOT_MINE, REFUSED };

static const char *names[KL_SRC_COUNT] = {
    [KL_SRC_OIDC] = "oidc", [KL_SRC_MTLS] = "mtls", [KL_SRC_TAILSCALE] = "tailscale",
    [KL_SRC_SERVE] = "serve", [KL_SRC_CIDR] = "cidr", [KL_SRC_LOOPBACK] = "loopback",
};

const char *kl_id_source_name(enum kl_id_source s)
{
    return names[s];
}

static enum outcome from_whois(kl_exchange *ex, struct kl_whois_entry *e)
{
    switch (e->state) {
    case KL_WHOIS_IDENTIFIED:
        ex->whois = e;
        ex->ident = &e->ident;
        return IDENTIFIED;
    case KL_WHOIS_NO_OWNER: {
        /* the record of the refusal says which device it was */
        struct kl_identity *seen = kl_arena_alloc(&ex->arena, sizeof(*seen));
        seen->source = "tailscale";
        seen->node = e->ident.node ? kl_arena_strdup(&ex->arena, e->ident.node) : NULL;
        seen->stable_node_id = e->ident.stable_node_id ? kl_arena_strdup(&ex->arena, e->ident.stable_node_id) : NULL;
        ex->refused_ident = seen;
        kl_whois_entry_unref(e);
        kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                "access denied: this tailnet device has neither a user nor tags");
        return REFUSED;
    }
    default:
        kl_whois_entry_unref(e);
        return NOT_MINE;
    }
}

/* Does an object name a member twice? (Within a capability, reading it
 * decides: kl_cap_read.) */
static bool names_twice(const cJSON *obj)
{
    for (const cJSON *m = obj ? obj->child : NULL; m; m = m->next)
        for (const cJSON *n = m->next; n; n = n->next)
            if (strcmp(m->string, n->string) == 0)
                return true;
    return false;
}

static enum outcome from_serve_headers(kl_exchange *ex)
{
    const char *login = kl_http_header(&ex->req, "tailscale-user-login");
    if (!login || !*login)
        return NOT_MINE;
    if (!ex->peer_loopback) {
        /* any peer may send them with every request: said at most every 10 s */
        uint64_t held;
        if (kl_log_every_due(&ex->worker->server->warn_serve_headers, 10000, kl_now_ns() / 1000000, &held))
            kl_warn("%s: ignoring tailscale serve identity headers (Tailscale-User-Login: %.64s) from "
                    "non-loopback peer %s%s", ex->id, login, ex->peer_ip,
                    held ? kl_arena_printf(&ex->arena, " (and %llu more such request%s since the last such warning, "
                                           "said at most every 10 s)", (unsigned long long)held, held == 1 ? "" : "s")
                         : "");
        return NOT_MINE;
    }
    struct kl_identity *id = kl_arena_alloc(&ex->arena, sizeof(*id));
    id->source = "serve";
    id->login = kl_rfc2047_decode(&ex->arena, login);
    if (!id->login) {
        kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                "the Tailscale-User-Login header decodes to control characters");
        return REFUSED;
    }
    /* the name is only shown (records, /api/whoami): cut as long as a
     * login may be, not refused; a login is a key and is refused instead
     * (identified()) */
    const char *name = kl_http_header(&ex->req, "tailscale-user-name");
    id->display_name = name ? kl_text_prefix(&ex->arena, kl_rfc2047_decode(&ex->arena, name), KL_LOGIN_MAX)
                            : NULL; /* NULL: none */
    /* tailscaled encodes the capabilities as it does the names. Left
     * unread, they would lift whatever they restrict (quotas, rate and
     * tool limits, hooks). */
    const char *caps = kl_http_header(&ex->req, "tailscale-app-capabilities");
    if (caps) {
        const char *text = kl_rfc2047_decode(&ex->arena, caps);
        cJSON *c = text ? cJSON_ParseWithOpts(text, NULL, true) : NULL;
        if (!cJSON_IsObject(c) || names_twice(c) || kl_json_has_nul_escape(text, strlen(text))) {
            cJSON_Delete(c);
            /* the record says whose request it was; a login no source
             * accepts (identified()) would have PostgreSQL refuse the
             * record of the refusal whole */
            if (strlen(id->login) <= KL_LOGIN_MAX)
                ex->refused_ident = id;
            kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                    "access denied: the Tailscale-App-Capabilities header is not one JSON object of capabilities");
            return REFUSED;
        }
        ex->id_caps = c;
        id->caps = c;
    }
    ex->ident = id;
    return IDENTIFIED;
}

/* A process on this host that connects from one of the host's own
 * addresses (its tailnet one above all) is no tailnet or CIDR caller:
 * WhoIs would answer for tailscaled's own node (its owner, or its tags),
 * and a CIDR rule covering the host would name every local account. Nor
 * is it loopback, which is 127.0.0.1 and ::1 only (serve headers, the
 * (loopback) identity): local callers, and `tailscale serve`, connect
 * there. Logged at most once every 10 s. When the host's addresses could
 * not be read, no peer can be told from the host itself: refused (503),
 * as a WhoIs that cannot answer is, rather than passed to the next source. */
static enum outcome self_peer(kl_exchange *ex)
{
    kl_worker *w = ex->worker;
    int err = kl_self_addrs_error(w);
    int64_t now = kl_wall_ms();
    if (now - w->self_warned_ms >= 10000) {
        w->self_warned_ms = now;
        if (err)
            kl_error("%s: cannot read this host's addresses (getifaddrs: %s), so a caller at %s may be this host: "
                     "tailnet and CIDR callers are refused until they can be read (a sandbox must allow AF_NETLINK "
                     "sockets; systemd: RestrictAddressFamilies=)", ex->id, strerror(err), ex->peer_ip);
        else
            kl_warn("%s: a caller on this host connected from its own address %s: neither tailnet nor CIDR rules "
                    "identify it; local callers (and tailscale serve) connect to 127.0.0.1 or ::1", ex->id,
                    ex->peer_ip);
    }
    if (!err)
        return NOT_MINE;
    kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
            "cannot identify the caller: the gateway cannot read its own host's addresses");
    return REFUSED;
}

/* The header that shows a loopback connection carries someone else's
 * request, or NULL: tailscale serve, Funnel (a caller from the internet) or
 * another reverse proxy on this machine. Such a caller is not whoever runs
 * on this machine, and is not (loopback) (the example configuration makes
 * (loopback) an admin). */
static const char *proxied(const kl_exchange *ex)
{
    static const char *const marks[] = {"Tailscale-Funnel-Request", "X-Forwarded-For", "Forwarded", "X-Real-IP"};
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        if (kl_http_header(&ex->req, marks[i]))
            return marks[i];
    for (size_t i = 0; i < ex->req.nheaders; i++)
        if (strncasecmp(ex->req.headers[i].name, "Tailscale-", 10) == 0)
            return ex->req.headers[i].name; /* serve headers not taken (off, or refused above) */
    return NULL;
}

static enum outcome from_cidr(kl_exchange *ex, const struct kl_identity_cfg *cfg)
{
    if (ex->peer_self)
        return self_peer(ex);
    for (size_t i = 0; i < cfg->ncidr; i++) {
        const struct kl_cidr_rule *r = &cfg->cidr[i];
        if (!kl_cidr_contains(r->family, r->addr, r->prefix, ex->peer_ip))
            continue;
        /* A rule covering 127.0.0.0/8 or ::1 names whoever runs on this
         * machine, as (loopback) does; a request a proxy here relayed
         * (Funnel, a tagged device through tailscale serve) is not theirs. */
        const char *via = ex->peer_loopback ? proxied(ex) : NULL;
        if (via) {
            kl_info("%s: a loopback caller whose request carries %s came through a proxy: not %s (identity.cidr)",
                    ex->id, via, r->ident.login);
            return NOT_MINE;
        }
        ex->ident = &r->ident;
        return IDENTIFIED;
    }
    return NOT_MINE;
}

static const struct kl_identity loopback_identity = {
    .login = "(loopback)", .display_name = "loopback", .source = "loopback",
};

static enum kl_step unidentified(kl_exchange *ex, const struct kl_identity_cfg *cfg)
{
    char tried[128] = "";
    for (size_t i = 0; i < cfg->norder; i++) {
        if (i)
            strcat(tried, ", ");
        strcat(tried, names[cfg->order[i]]);
    }
    return kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                   "could not identify the caller at %s (identity sources tried: %s)", ex->peer_ip,
                   tried[0] ? tried : "none");
}

/* Records, grants, quotas and who may read which record are all keyed by
 * login: a source that yields an empty one has not identified anybody. */
static enum kl_step identified(kl_exchange *ex)
{
    size_t len = ex->ident && ex->ident->login ? strlen(ex->ident->login) : 0;
    if (len && len <= KL_LOGIN_MAX) {
        /* a source before oidc in identity.order identified the caller: a
         * workload token it sent as well is still keyless's, and forwarded
         * to a passthrough provider as the caller's own credential, the
         * provider could replay it here */
        const struct kl_oidc_cfg *oidc = ex->cfg->identity->oidc;
        if (!ex->workload_token && oidc && kl_oidc_token_present(ex, oidc))
            ex->workload_token = true;
        return KL_NEXT;
    }
    const char *source = ex->ident && ex->ident->source ? ex->ident->source : "unknown";
    ex->ident = NULL;
    if (len)
        return kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                       "the caller's identity (source %s) has a login of %zu bytes; at most %d are accepted",
                       source, len, KL_LOGIN_MAX);
    return kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                   "the caller's identity (source %s) has an empty login", source);
}

static void identity_cancel(kl_exchange *ex)
{
    kl_whois_forget(ex);
}

/* Try sources from ex->id_next on; may go asynchronous for WhoIs. */
static enum kl_step try_sources(kl_exchange *ex)
{
    const struct kl_identity_cfg *cfg = ex->cfg->identity;
    while ((size_t)ex->id_next < cfg->norder) {
        enum kl_id_source src = cfg->order[ex->id_next++];
        enum outcome o = NOT_MINE;
        switch (src) {
        case KL_SRC_OIDC:
            o = kl_oidc_identify(ex, cfg->oidc) == 0 ? IDENTIFIED
                : ex->status ? REFUSED : NOT_MINE;
            break;
        case KL_SRC_MTLS: {
            int r = kl_mtls_identify(ex);
            o = r > 0 ? IDENTIFIED : r < 0 ? REFUSED : NOT_MINE;
            break;
        }
        case KL_SRC_TAILSCALE: {
            if (ex->peer_self) {
                o = self_peer(ex); /* WhoIs would answer with tailscaled's own node */
                break;
            }
            struct kl_whois_entry *e = kl_whois_cached(ex);
            if (e) {
                o = from_whois(ex, e);
                break;
            }
            if (kl_whois_lookup(ex, cfg) < 0)
                return kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                               "cannot ask tailscaled who is calling");
            ex->cancel = identity_cancel;
            return KL_WAIT;
        }
        case KL_SRC_SERVE:
            o = from_serve_headers(ex);
            break;
        case KL_SRC_CIDR:
            o = from_cidr(ex, cfg);
            break;
        case KL_SRC_LOOPBACK: {
            const char *via = ex->peer_loopback ? proxied(ex) : NULL;
            if (ex->peer_loopback && !via) {
                ex->ident = &loopback_identity;
                o = IDENTIFIED;
            } else if (via) {
                kl_info("%s: a loopback caller whose request carries %s came through a proxy: not (loopback)",
                        ex->id, via);
            }
            break;
        }
        default:
            break;
        }
        if (o == IDENTIFIED)
            return identified(ex);
        if (o == REFUSED)
            return KL_DONE;
    }
    return unidentified(ex, cfg);
}

void kl_whois_resume(kl_exchange *ex, struct kl_whois_entry *e, const char *err)
{
    ex->cancel = NULL;
    enum kl_step step;
    if (!e) {
        step = kl_fail(ex, KL_ERR_UNAVAILABLE, KL_EC_UNAVAILABLE,
                       "cannot identify the caller: %s", err);
    } else {
        enum outcome o = from_whois(ex, e);
        step = o == IDENTIFIED ? identified(ex) : o == REFUSED ? KL_DONE : try_sources(ex);
    }
    kl_pipeline_continue(ex, step);
}

/* Is origin one no web page has: a scheme other than http, https and file
 * (a page's Origin is one of those, or "null")? Desktop apps and browser
 * extensions send their own (Tauri's HTTP client "tauri://localhost", an
 * extension "chrome-extension://..."), which no page can make a browser
 * send: they are programs the user runs, not a page of another site. */
static bool app_origin(const char *origin)
{
    const char *end = strstr(origin, "://");
    if (!end || end == origin)
        return false;
    for (const char *p = origin; p < end; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (p > origin && ((*p >= '0' && *p <= '9') ||
                                                                                      *p == '+' || *p == '-' || *p == '.'))))
            return false;
    size_t n = (size_t)(end - origin);
    return !((n == 4 && strncasecmp(origin, "http", 4) == 0) || (n == 5 && strncasecmp(origin, "https", 5) == 0) ||
             (n == 4 && strncasecmp(origin, "file", 4) == 0));
}

/* Why a request is a browser's, sent for a page of another site, or NULL.
 * keyless knows callers by their address and certificate, which a browser
 * brings along to any request a page makes, as it does cookies: a page a
 * tailnet user opens could spend that user's budget with a "simple" POST
 * (text/plain needs no preflight). No legitimate caller is a page of
 * another site: keyless grants no CORS, so such a page could not read an
 * answer anyway. Browsers say where a request comes from in Sec-Fetch-Site
 * (same-origin, same-site, cross-site, none: typed by the user) and, on
 * POSTs and cross-origin requests, in Origin ("null" from sandboxed pages
 * and files); one without Sec-Fetch-Site is judged by its Origin's host
 * against the Host it asks for. */
static const char *cross_site(const kl_exchange *ex)
{
    const char *origin = kl_http_header(&ex->req, "Origin");
    if (origin && app_origin(origin))
        return NULL;
    const char *site = kl_http_header(&ex->req, "Sec-Fetch-Site");
    if (site)
        return strcasecmp(site, "same-origin") == 0 || strcasecmp(site, "none") == 0 ? NULL : "Sec-Fetch-Site";
    if (!origin)
        return NULL;
    const char *host = kl_http_header(&ex->req, "Host"), *authority = strstr(origin, "://");
    if (!host || !authority || strcasecmp(authority + 3, host) != 0)
        return "Origin";
    return NULL;
}

enum kl_step kl_identity_run(kl_exchange *ex)
{
    ex->peer_loopback = kl_ip_is_loopback(ex->peer_ip);
    const char *by = cross_site(ex);
    if (by)
        return kl_fail(ex, KL_ERR_FORBIDDEN, KL_EC_FORBIDDEN,
                       "a web page of another site may not call keyless as the person whose browser opened it (%s: "
                       "%s); call keyless from a program, or from a page keyless itself serves",
                       by, kl_http_header(&ex->req, by));
    ex->id_next = 0;
    return try_sources(ex);
}

void kl_identity_release(kl_exchange *ex)
{
    kl_whois_entry_unref(ex->whois);
    ex->whois = NULL;
    cJSON_Delete(ex->id_caps);
    ex->id_caps = NULL;
    ex->ident = NULL;
}

int kl_identity_server_init(kl_server *srv)
{
    srv->whois_cache = kl_whois_cache_new();
    return 0;
}

void kl_identity_server_free(kl_server *srv)
{
    kl_whois_cache_free(srv->whois_cache);
    srv->whois_cache = NULL;
}
