/* Behaviour mirrored from tailscaled v1.102.3 (tailscale/tailscale):
 * ipn/ipnserver/server.go  Server.serveHTTP   - CONNECT, /server-status,
 *                                               X-Tailscale-Reason, "/"
 * ipn/localapi/localapi.go Handler.ServeHTTP  - Referer/Origin/Host gate,
 *                                               security headers, 404s
 *                          serveWhoIsWithBackend - addr, nodekey, svc_name,
 *                                               dst_ip and the error texts
 * ipn/ipnlocal/local.go    LocalBackend.WhoIs - IPv4-mapped addresses are
 *                                               unmapped before the lookup
 * Note that serveWhoIs does not look at the method: POST works like GET. */
#include "localapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "netip.h"
#include "server.h"
#include "stats.h"
#include "table.h"
#include "urlenc.h"

#define WHOIS_PATH     "/localapi/v0/whois"
#define LOCALAPI_HOST  "local-tailscaled.sock"     /* apitype.LocalAPIHost */

/* Values tailscaled v1.102.3 sends (version.Long, CurrentCapabilityVersion). */
#define TS_VERSION     "1.102.3-t53a0d659a"
#define TS_CAP         "142"
#define TS_CSP         "default-src 'none'; frame-ancestors 'none'; script-src 'none'; " \
                       "script-src-elem 'none'; script-src-attr 'none'"

#define ROOT_PAGE      "<html><title>Tailscale</title><body><h1>Tailscale</h1>" \
                       "This is the local Tailscale daemon.\n"

/* "!garbage" and "!truncated" bodies. */
#define GARBAGE_BODY   "fake-tailscaled: this WhoIs answer is deliberately not JSON\n"
#define TRUNCATED_BODY "{\n\t\"Node\": {\n\t\t\"ID\": 6841327709265412,\n\t\t\"StableID\": " \
                       "\"nQ7vWkz5Xn11CNTRL\",\n\t\t\"Name\": \"alice-mbp.tail8c2a1"

static int path_is(const struct fts_request *req, const char *p)
{
    size_t n = strlen(p);
    return req->path_len == n && memcmp(req->path, p, n) == 0;
}

static int path_has_prefix(const struct fts_request *req, const char *p)
{
    size_t n = strlen(p);
    return req->path_len >= n && memcmp(req->path, p, n) == 0;
}

static int method_is(const struct fts_request *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}

/* Whether Go's ParseForm would read the body: POST, PUT or PATCH with an
 * application/x-www-form-urlencoded media type. */
static int has_form_body(const struct fts_request *req)
{
    const char *ct = fts_request_get(req, "Content-Type");
    static const char form[] = "application/x-www-form-urlencoded";
    size_t n;

    if (!method_is(req, "POST") && !method_is(req, "PUT") && !method_is(req, "PATCH"))
        return 0;
    if (ct == NULL)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n == sizeof(form) - 1 && strncasecmp(ct, form, n) == 0;
}

/* r.FormValue: body fields of a form POST first, then the query string. */
static int form_value(const struct fts_request *req, const char *key, char **val, size_t *vlen)
{
    if (has_form_body(req) && req->body &&
        fts_form_lookup(req->body, req->body_len, key, val, vlen))
        return 1;
    return fts_form_lookup(req->raw_query, req->raw_query_len, key, val, vlen);
}

/* base64.StdEncoding.DecodeString succeeds: CR and LF are skipped, the rest
 * is whole 4-byte quanta with '=' padding only at the end. */
static int valid_std_base64(const char *s)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0, len = strlen(s);
    char *t = fts_malloc(len + 1);
    int ok = 1;

    for (size_t i = 0; i < len; i++)
        if (s[i] != '\r' && s[i] != '\n')
            t[n++] = s[i];
    if (n % 4 != 0)
        ok = 0;
    for (size_t q = 0; ok && q < n; q += 4) {
        for (size_t j = 0; j < 4; j++) {
            char c = t[q + j];
            if (c == '=') {
                if (q + 4 != n || j < 2 || (j == 2 && t[q + 3] != '='))
                    ok = 0;
                break;
            }
            if (c == '\0' || strchr(alphabet, c) == NULL) {
                ok = 0;
                break;
            }
        }
    }
    free(t);
    return ok;
}

/* localapi.Handler.ServeHTTP's first check: no Referer, no Origin, and a
 * Host that is empty (HTTP/1.0 without Host) or "local-tailscaled.sock". */
static int localapi_gate_ok(const struct fts_request *req)
{
    const char *referer = fts_request_get(req, "Referer");
    const char *origin = fts_request_get(req, "Origin");

    if ((referer && referer[0]) || (origin && origin[0]))
        return 0;
    return req->host[0] == '\0' || strcmp(req->host, LOCALAPI_HOST) == 0;
}

static int reason_ok(const struct fts_request *req)
{
    const char *reason = fts_request_get(req, "X-Tailscale-Reason");
    return reason == NULL || valid_std_base64(reason);
}

int fts_localapi_reads_body(const struct fts_request *req)
{
    return path_is(req, WHOIS_PATH) && !method_is(req, "CONNECT") && reason_ok(req) &&
           localapi_gate_ok(req) && has_form_body(req);
}

static void set_localapi_headers(struct fts_response *r)
{
    fts_response_set_header(r, "Tailscale-Version", TS_VERSION);
    fts_response_set_header(r, "Tailscale-Cap", TS_CAP);
    fts_response_set_header(r, "Content-Security-Policy", TS_CSP);
    fts_response_set_header(r, "X-Frame-Options", "DENY");
    fts_response_set_header(r, "X-Content-Type-Options", "nosniff");
}

static void set_json(struct fts_response *r, int status, char *body, size_t len)
{
    r->status = status;
    fts_response_set_header(r, "Content-Type", "application/json");
    fts_response_take_body(r, body, len);
}

/* The by_addr key for a whois request (see stats.c). */
static char *stats_key(const char *addr, size_t alen, size_t *klen)
{
    struct fts_ip ip;
    unsigned port;
    char buf[FTS_IP_STRMAX];

    if (!(alen >= 8 && memcmp(addr, "nodekey:", 8) == 0) &&
        (fts_ip_parse(addr, alen, &ip) == 0 || fts_ipport_parse(addr, alen, &ip, &port) == 0)) {
        fts_ip_format(&ip, buf, sizeof(buf));
        *klen = strlen(buf);
        return fts_strdup(buf);
    }
    *klen = alen;
    return fts_memdup(addr, alen);
}

/* dnsname.ValidLabel: 1-63 of [A-Za-z0-9-], not starting or ending in '-'. */
static int valid_dns_label(const char *s, size_t n)
{
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (c != '-' || i == 0 || i == n - 1))
            return 0;
    }
    return 1;
}

/* serveWhoIsWithBackend validates svc_name and dst_ip only after a match,
 * and only when the node has addresses; they change CapMap, which a
 * fixture file states verbatim, so only the 400s are reproduced. */
static const char *check_cap_params(const struct fts_request *req, const char *doc, size_t len)
{
    char *svc = NULL, *dst = NULL;
    size_t svc_len = 0, dst_len = 0;
    const char *problem = NULL;

    form_value(req, "svc_name", &svc, &svc_len);
    form_value(req, "dst_ip", &dst, &dst_len);
    if ((svc && svc_len) || (dst && dst_len)) {
        cJSON *root = cJSON_ParseWithLength(doc, len);
        cJSON *node = cJSON_GetObjectItemCaseSensitive(root, "Node");
        cJSON *addrs = cJSON_GetObjectItemCaseSensitive(node, "Addresses");
        int has_addrs = cJSON_IsArray(addrs) && cJSON_GetArraySize(addrs) > 0;
        cJSON_Delete(root);
        struct fts_ip ip;
        if (has_addrs && svc && svc_len) {
            int ok = svc_len > 4 && memcmp(svc, "svc:", 4) == 0 &&
                     valid_dns_label(svc + 4, svc_len - 4);
            if (!ok)
                problem = "invalid svc_name";
        } else if (has_addrs && fts_ip_parse(dst, dst_len, &ip) != 0) {
            problem = "invalid dst_ip";
        }
    }
    free(svc);
    free(dst);
    return problem;
}

static void serve_whois(struct fts_server *s, const struct fts_request *req,
                        const char *addr, size_t alen, struct fts_outcome *out)
{
    struct fts_response *r = &out->resp;
    const struct fts_entry *e;
    struct fts_ip ip;
    unsigned port;

    if (addr == NULL || alen == 0) {
        fts_response_error(r, 400, "missing 'addr' parameter");
        return;
    }
    if (alen >= 8 && memcmp(addr, "nodekey:", 8) == 0) {
        unsigned char key[32];
        if (fts_nodekey_decode(addr, alen, key) != 0) {
            fts_response_error(r, 400, "invalid nodekey in 'addr' parameter");
            return;
        }
        e = fts_table_lookup_nodekey(&s->table, key);
    } else {
        port = 0;
        if (fts_ip_parse(addr, alen, &ip) != 0 && fts_ipport_parse(addr, alen, &ip, &port) != 0) {
            fts_response_error(r, 400, "invalid 'addr' parameter");
            return;
        }
        if (!s->cfg.no_unmap)
            fts_ip_unmap(&ip);
        e = fts_table_lookup(&s->table, &ip, port);
    }
    if (e == NULL) {
        fts_response_error(r, 404, "no match for IP:port");
        return;
    }

    switch (e->kind) {
    case FTS_ENTRY_FILE: {
        char *doc, err[512];
        size_t len;
        if (fts_table_read(e, &doc, &len, err, sizeof(err)) != 0) {
            char msg[600];
            snprintf(msg, sizeof(msg), "fake-tailscaled: %s", err);
            fts_log("%s (table entry \"%s\")", err, e->key);
            fts_response_error(r, 500, msg);
            return;
        }
        const char *problem = check_cap_params(req, doc, len);
        if (problem) {
            free(doc);
            fts_response_error(r, 400, problem);
            return;
        }
        set_json(r, 200, doc, len);
        return;
    }
    case FTS_ENTRY_GARBAGE:
        set_json(r, 200, fts_strdup(GARBAGE_BODY), sizeof(GARBAGE_BODY) - 1);
        return;
    case FTS_ENTRY_TRUNCATED:
        set_json(r, 200, fts_strdup(TRUNCATED_BODY), sizeof(TRUNCATED_BODY) - 1);
        return;
    case FTS_ENTRY_STATUS:
        fts_response_error(r, e->status, e->message);
        return;
    case FTS_ENTRY_HANG:
        out->action = FTS_ACT_HANG;
        return;
    case FTS_ENTRY_CLOSE:
        out->action = FTS_ACT_CLOSE;
        return;
    }
}

/* GET /fake/stats and POST /fake/reset, behind the same gate as LocalAPI. */
static void serve_fake(struct fts_server *s, const struct fts_request *req,
                       struct fts_outcome *out)
{
    struct fts_response *r = &out->resp;
    char *body;
    size_t len;

    if (!localapi_gate_ok(req)) {
        fts_response_error(r, 403, "invalid localapi request");
        return;
    }
    if (path_is(req, "/fake/stats")) {
        if (!method_is(req, "GET")) {
            fts_response_error(r, 405, "GET required");
            return;
        }
        body = fts_stats_json(&s->stats, s->table.loads, &len);
        set_json(r, 200, body, len);
        return;
    }
    if (path_is(req, "/fake/reset")) {
        if (!method_is(req, "POST")) {
            fts_response_error(r, 405, "POST required");
            return;
        }
        fts_stats_reset(&s->stats);
        body = fts_stats_json(&s->stats, s->table.loads, &len);
        set_json(r, 200, body, len);
        return;
    }
    fts_response_error(r, 404, "404 page not found");
}

void fts_localapi_serve(struct fts_server *s, const struct fts_request *req,
                        struct fts_outcome *out)
{
    struct fts_response *r = &out->resp;
    char *addr = NULL;
    size_t alen = 0;
    int is_whois = path_is(req, WHOIS_PATH);

    memset(out, 0, sizeof(*out));
    fts_response_init(r, 200);
    out->action = FTS_ACT_RESPOND;

    /* Every request for the whois path is counted and delayed, whatever
     * its fate. */
    if (is_whois) {
        char *key = NULL;
        size_t klen = 0;
        if (form_value(req, "addr", &addr, &alen) && alen > 0)
            key = stats_key(addr, alen, &klen);
        fts_stats_count(&s->stats, key, klen);
        free(key);
        out->delayed = 1;
    }

    if (method_is(req, "CONNECT")) {
        fts_response_error(r, 405, "bad method for platform");
    } else if (method_is(req, "GET") && path_is(req, "/server-status")) {
        set_json(r, 200, fts_strdup("{}\n"), 3);
    } else if (path_has_prefix(req, "/fake/")) {
        serve_fake(s, req, out);
    } else if (path_has_prefix(req, "/localapi/")) {
        if (!reason_ok(req)) {
            fts_response_error(r, 400, "invalid reason header");
        } else if (!localapi_gate_ok(req)) {
            fts_response_error(r, 403, "invalid localapi request");
        } else {
            set_localapi_headers(r);
            if (is_whois)
                serve_whois(s, req, addr, alen, out);
            else
                fts_response_error(r, 404, "404 page not found");
        }
    } else if (path_is(req, "/")) {
        r->sniffed_type = "text/html; charset=utf-8";
        fts_response_set_body(r, ROOT_PAGE, sizeof(ROOT_PAGE) - 1);
    } else {
        fts_response_error(r, 404, "404 page not found");
    }
    free(addr);
}
