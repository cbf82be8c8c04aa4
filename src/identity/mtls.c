/* The mTLS listener's identity: its TLS context (built once per
 * configuration) and the SPIFFE ID of each verified client certificate. */
#include "identity/mtls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "identity/spiffe.h"
#include "listen/conn.h"

static void ctx_free(void *arg)
{
    SSL_CTX_free(arg);
}

static const char *ssl_error(void)
{
    static _Thread_local char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

bool kl_mtls_read_config(kl_cfg_ctx *c, const cJSON *v, struct kl_identity_cfg *ic)
{
    const cJSON *listen = cJSON_GetObjectItemCaseSensitive(v, "listen");
    const cJSON *cert = cJSON_GetObjectItemCaseSensitive(v, "cert");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(v, "key");
    const cJSON *ca = cJSON_GetObjectItemCaseSensitive(v, "client_ca");
    if (!cJSON_IsObject(v) || !cJSON_IsArray(listen) || !cJSON_IsString(cert) || !cJSON_IsString(key) ||
        !cJSON_IsString(ca)) {
        kl_cfg_report(c, KL_SEV_ERROR, v,
                      "identity.mtls needs \"listen\": [\"host:port\"], \"cert\", \"key\" and \"client_ca\" (PEM files)");
        return false;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (strcmp(m->string, "listen") && strcmp(m->string, "cert") && strcmp(m->string, "key") &&
            strcmp(m->string, "client_ca"))
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
    else if (SSL_CTX_load_verify_locations(ctx, ca->valuestring, NULL) != 1)
        bad = ca;
    if (bad) {
        kl_cfg_report(c, KL_SEV_ERROR, bad, "identity.mtls: cannot use %s: %s", bad->valuestring, ssl_error());
        SSL_CTX_free(ctx);
        return false;
    }
    /* Ask for a certificate and refuse one that does not chain to the
     * bundle; a missing one is answered with a 401 in the caller's dialect
     * rather than a bare handshake failure. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_verify_depth(ctx, 8);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"keyless", 7);
    ic->mtls_ctx = ctx;
    kl_config_on_free(c->cfg, ctx_free, ctx);
    return true;
}

int kl_mtls_identify(kl_exchange *ex)
{
    if (!kl_conn_is_tls(ex))
        return 0;
    X509 *leaf = kl_conn_peer_certificate(ex);
    if (!leaf) {
        kl_fail(ex, KL_ERR_UNAUTHENTICATED, KL_EC_UNAUTHENTICATED,
                "a client certificate with a SPIFFE ID is required on this listener");
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
