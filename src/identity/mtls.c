/* The mTLS listener's identity: its TLS context (built once per
 * configuration) and the SPIFFE ID of each verified client certificate. */
#include "identity/mtls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "core/log.h"
#include "identity/spiffe.h"
#include "listen/conn.h"

/* identity.mtls.trust_domains: each SPIFFE trust domain with its own CA
 * bundle. The SSL_CTX's app data while the configuration lives. */
struct trust_domain {
    const char *name;
    STACK_OF(X509) *cas;
};

struct domains {
    struct trust_domain *v;
    size_t n;
};

static void ctx_free(void *arg)
{
    SSL_CTX *ctx = arg;
    struct domains *d = SSL_CTX_get_app_data(ctx);
    for (size_t i = 0; d && i < d->n; i++)
        sk_X509_pop_free(d->v[i].cas, X509_free);
    SSL_CTX_free(ctx);
}

static const char *ssl_error(void)
{
    static _Thread_local char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

/* Every certificate of a PEM bundle; NULL when it holds none. */
static STACK_OF(X509) *read_bundle(const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    if (!b)
        return NULL;
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while (sk && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
        sk_X509_push(sk, x);
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(b);
    if (sk && sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        sk = NULL;
    }
    return sk;
}

/* Does a CA of the chain (past the leaf) appear in the bundle? */
static bool chain_meets(STACK_OF(X509) *chain, STACK_OF(X509) *cas)
{
    for (int i = 1; i < sk_X509_num(chain); i++)
        for (int k = 0; k < sk_X509_num(cas); k++)
            if (X509_cmp(sk_X509_value(chain, i), sk_X509_value(cas, k)) == 0)
                return true;
    return false;
}

/* With trust_domains, the bundles together verify a chain, and this check
 * then ties the leaf's SPIFFE ID to its own domain's CAs, so a partner's CA
 * cannot issue IDs in ours. It runs once the whole chain has verified
 * (OpenSSL calls depth 0 last), at the handshake, so a resumed session was
 * checked when it was made. A leaf without a usable SPIFFE ID passes here
 * and gets its 401 with the reason from kl_mtls_identify. */
static int verify_domain(int ok, X509_STORE_CTX *xs)
{
    if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct domains *d = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(xs);
    if (!d || !chain || sk_X509_num(chain) < 1)
        return ok;
    kl_arena a;
    kl_arena_init(&a);
    const char *td = NULL, *why = NULL;
    const char *id = kl_spiffe_from_cert(sk_X509_value(chain, 0), &a, &td, &why);
    const struct trust_domain *t = NULL;
    for (size_t i = 0; id && i < d->n && !t; i++)
        if (strcmp(d->v[i].name, td) == 0)
            t = &d->v[i];
    if (id && (!t || !chain_meets(chain, t->cas))) {
        kl_info("mTLS: refused the client certificate for %s: %s", id,
                t ? "its chain does not lead to a CA of that trust domain" : "that trust domain is not accepted here");
        X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
        ok = 0;
    }
    kl_arena_free(&a);
    return ok;
}

/* "trust_domains": {"example.org": "example-bundle.pem", ...}: the domains
 * (their names as in SPIFFE IDs) and each bundle added to the context's
 * store. NULL after reporting a problem. */
static struct domains *read_domains(kl_cfg_ctx *c, const cJSON *v, SSL_CTX *ctx)
{
    if (!cJSON_IsObject(v) || !v->child) {
        kl_cfg_report(c, KL_SEV_ERROR, v,
                      "identity.mtls.trust_domains must map each trust domain to its CA bundle, e.g. "
                      "{\"example.org\": \"example-bundle.pem\"}");
        return NULL;
    }
    struct domains *d = kl_arena_alloc(&c->cfg->arena, sizeof(*d));
    d->v = kl_arena_alloc(&c->cfg->arena, (size_t)cJSON_GetArraySize(v) * sizeof(*d->v));
    SSL_CTX_set_app_data(ctx, d); /* from here ctx_free releases the bundles read */
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        char id[300];
        const char *why = NULL;
        snprintf(id, sizeof(id), "spiffe://%s", m->string);
        if (strlen(m->string) > 255 || kl_spiffe_id_check(id, strlen(id), &why) < 0) {
            kl_cfg_report(c, KL_SEV_ERROR, m, "identity.mtls.trust_domains: \"%s\" is not a trust domain name%s%s",
                          m->string, why ? ": " : "", why ? why : "");
            return NULL;
        }
        STACK_OF(X509) *cas = cJSON_IsString(m) ? read_bundle(m->valuestring) : NULL;
        if (!cas || SSL_CTX_load_verify_locations(ctx, m->valuestring, NULL) != 1) {
            sk_X509_pop_free(cas, X509_free);
            kl_cfg_report(c, KL_SEV_ERROR, m, "identity.mtls.trust_domains.%s: %s", m->string,
                          cJSON_IsString(m) ? "cannot read certificates from the bundle" : "must be a PEM bundle file");
            ERR_clear_error();
            return NULL;
        }
        d->v[d->n].name = kl_arena_strdup(&c->cfg->arena, m->string);
        d->v[d->n++].cas = cas;
    }
    return d;
}

/* Certificates' SHA-256 digests, sorted: a bundle's order is no part of
 * what it trusts. */
static int digest_cmp(const void *a, const void *b)
{
    return memcmp(a, b, SHA256_DIGEST_LENGTH);
}

static bool add_certs(EVP_MD_CTX *md, STACK_OF(X509) *certs)
{
    int n = sk_X509_num(certs);
    unsigned char(*d)[SHA256_DIGEST_LENGTH] = calloc(n > 0 ? (size_t)n : 1, sizeof(*d));
    if (!d)
        return false;
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
        ok = X509_digest(sk_X509_value(certs, i), EVP_sha256(), d[i], NULL) == 1;
    qsort(d, (size_t)n, sizeof(*d), digest_cmp);
    for (int i = 0; i < n && ok; i++)
        ok = EVP_DigestUpdate(md, d[i], sizeof(d[i])) == 1;
    free(d);
    return ok;
}

static int domain_cmp(const void *a, const void *b)
{
    return strcmp(((const struct trust_domain *)a)->name, ((const struct trust_domain *)b)->name);
}

/* The digest of everything that decides whether a client certificate is
 * accepted: the CAs of the context's store and, with trust domains, which
 * CAs each domain's IDs must chain to. A reload that leaves it the same
 * keeps TLS connections verified before (kl_mtls_same_trust). */
static bool trust_digest(SSL_CTX *ctx, unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    STACK_OF(X509) *all = X509_STORE_get1_all_certs(SSL_CTX_get_cert_store(ctx));
    bool ok = md && all && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && add_certs(md, all);
    struct domains *d = SSL_CTX_get_app_data(ctx);
    if (ok && d) {
        struct trust_domain *sorted = calloc(d->n ? d->n : 1, sizeof(*sorted));
        ok = sorted != NULL;
        if (ok) {
            memcpy(sorted, d->v, d->n * sizeof(*sorted));
            qsort(sorted, d->n, sizeof(*sorted), domain_cmp);
        }
        for (size_t i = 0; ok && i < d->n; i++)
            ok = EVP_DigestUpdate(md, sorted[i].name, strlen(sorted[i].name) + 1) == 1 && add_certs(md, sorted[i].cas);
        free(sorted);
    }
    ok = ok && EVP_DigestFinal_ex(md, out, NULL) == 1;
    sk_X509_pop_free(all, X509_free);
    EVP_MD_CTX_free(md);
    return ok;
}

bool kl_mtls_same_trust(const struct kl_identity_cfg *a, const struct kl_identity_cfg *b)
{
    static const unsigned char none[32];
    return a && b && a->mtls_ctx && b->mtls_ctx && memcmp(a->mtls_trust, none, sizeof(none)) != 0 &&
           memcmp(a->mtls_trust, b->mtls_trust, sizeof(a->mtls_trust)) == 0;
}

bool kl_mtls_read_config(kl_cfg_ctx *c, const cJSON *v, struct kl_identity_cfg *ic)
{
    const cJSON *listen = cJSON_GetObjectItemCaseSensitive(v, "listen");
    const cJSON *cert = cJSON_GetObjectItemCaseSensitive(v, "cert");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(v, "key");
    const cJSON *ca = cJSON_GetObjectItemCaseSensitive(v, "client_ca");
    const cJSON *domains = cJSON_GetObjectItemCaseSensitive(v, "trust_domains");
    if (!cJSON_IsObject(v) || !cJSON_IsArray(listen) || !cJSON_IsString(cert) || !cJSON_IsString(key) ||
        !(ca ? cJSON_IsString(ca) && !domains : !!domains)) {
        kl_cfg_report(c, KL_SEV_ERROR, v,
                      "identity.mtls needs \"listen\": [\"host:port\"], \"cert\", \"key\" (PEM files) and either "
                      "\"client_ca\" (one PEM bundle; any trust domain it signs) or \"trust_domains\" (each trust "
                      "domain's own bundle)");
        return false;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "listen") && strcmp(m->string, "cert") && strcmp(m->string, "key") &&
            strcmp(m->string, "client_ca") && strcmp(m->string, "trust_domains"))
            kl_cfg_report(c, KL_SEV_WARNING, m, "unknown key \"%s\" in identity.mtls (ignored)", m->string);
    }
    ic->mtls_addresses = kl_arena_alloc(&c->cfg->arena, ((size_t)cJSON_GetArraySize(listen) + 1) * sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, listen) {
        if (!cJSON_IsString(e) || !strrchr(e->valuestring, ':')) {
            kl_cfg_report(c, KL_SEV_ERROR, e, "identity.mtls.listen entries must be host:port");
            return false;
        }
        ic->mtls_addresses[ic->nmtls++] = kl_arena_strdup(&c->cfg->arena, e->valuestring);
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        kl_cfg_report(c, KL_SEV_ERROR, v, "cannot create a TLS context: %s", ssl_error());
        return false;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    const cJSON *bad = NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert->valuestring) != 1)
        bad = cert;
    else if (SSL_CTX_use_PrivateKey_file(ctx, key->valuestring, SSL_FILETYPE_PEM) != 1 ||
             SSL_CTX_check_private_key(ctx) != 1)
        bad = key;
    else if (ca && SSL_CTX_load_verify_locations(ctx, ca->valuestring, NULL) != 1)
        bad = ca;
    if (bad) {
        kl_cfg_report(c, KL_SEV_ERROR, bad, "identity.mtls: cannot use %s: %s", bad->valuestring, ssl_error());
        SSL_CTX_free(ctx);
        return false;
    }
    if (domains && !read_domains(c, domains, ctx)) {
        ctx_free(ctx);
        return false;
    }
    /* Ask for a certificate and refuse one that does not chain to the
     * bundle (or, with trust domains, to its own domain's bundle); a missing
     * one is answered with a 401 in the caller's dialect rather than a bare
     * handshake failure. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, domains ? verify_domain : NULL);
    SSL_CTX_set_verify_depth(ctx, 8);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"keyless", 7);
    if (!trust_digest(ctx, ic->mtls_trust))
        memset(ic->mtls_trust, 0, sizeof(ic->mtls_trust)); /* then every reload retires connections */
    ic->mtls_ctx = ctx;
    kl_config_on_free(c->cfg, ctx_free, ctx);
    return true;
}

int kl_mtls_identify(kl_exchange *ex)
{
    if (!kl_conn_is_tls(ex))
        return 0;
    if (!kl_conn_tls_current(ex)) {
        kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                "the gateway's TLS settings were reloaded since this connection was made, with other client CAs or "
                "trust domains; connect again");
        return -1;
    }
    X509 *leaf = kl_conn_peer_certificate(ex);
    if (!leaf) {
        kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                "a client certificate with a SPIFFE ID is required on this listener");
        return -1;
    }
    /* A resumed session (a TLS 1.3 ticket, renewed with each resumption) or
     * a kept-alive connection is not verified again: without this an SVID,
     * whose short life is SPIFFE's revocation, would name its caller for as
     * long as the client kept resuming. */
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0 || X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
        X509_free(leaf);
        kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                "the client certificate this TLS session was made with is not valid now (expired); connect again "
                "with a current one");
        return -1;
    }
    const char *why = NULL, *td = NULL;
    const char *id = kl_spiffe_from_cert(leaf, &ex->arena, &td, &why);
    X509_free(leaf);
    if (!id) {
        kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED, "client certificate refused: %s", why);
        return -1;
    }
    struct kl_identity *ident = kl_arena_alloc(&ex->arena, sizeof(*ident));
    ident->login = id;
    ident->source = "mtls";
    ident->issuer = td;
    ex->ident = ident;
    return 1;
}
